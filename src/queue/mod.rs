//! The durable queue: accepted webhooks and the events they produced.
//!
//! **Invariant:** [`Queue::accept`] returns only after the inbound record and all its events
//! are committed in one transaction, so a 2xx after it survives a crash.
//!
//! **Invariant:** [`Queue::claim`] hands out only the head of each ordering lane (events
//! sharing a `(routing_key, dedup_key)`), so a resolve never overtakes its trigger, whatever
//! the retries. The queue knows nothing of PagerDuty: it stores bodies it does not read.

mod sqlite;

pub use sqlite::SqliteQueue;

use crate::event::{Event, EventKind};
use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use std::time::Duration;

/// Milliseconds since the Unix epoch: the queue's clock unit.
pub type Millis = i64;

/// The current time in [`Millis`].
pub fn now_millis() -> Millis {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as Millis).unwrap_or(0)
}

/// Why the queue could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("storage: {0}")]
    Storage(String),
    #[error("storage is shut down")]
    Closed,
}

/// What became of a webhook after verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "error")]
pub enum InboundStatus {
    /// Rules produced events (possibly none).
    Mapped,
    /// Verified but deliberately not mapped (e.g. a GitHub ping).
    Ignored,
    /// A rule failed; the payload is kept so it can be replayed once the mapping is fixed.
    MappingFailed(String),
}

/// A verified webhook to record.
#[derive(Debug, Clone)]
pub struct NewInbound {
    pub id: String,
    pub source: String,
    pub received_at: Millis,
    /// The sender's delivery id (GitHub `X-GitHub-Delivery`): a second one is a duplicate.
    pub dedupe_id: Option<String>,
    pub headers: Value,
    pub query: String,
    pub body: Bytes,
    pub status: InboundStatus,
}

/// Outcome of [`Queue::accept`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Committed: `events` events are queued.
    Committed { id: String, events: usize },
    /// The sender already delivered this id; nothing was stored.
    Duplicate { id: String },
}

/// An event handed to the delivery worker.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    /// The webhook that produced it (ties delivery logs to the request's log line).
    pub inbound_id: String,
    pub event: Event,
    /// Attempts made before this one.
    pub attempts: u32,
    pub created_at: Millis,
}

/// How one delivery attempt ended, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    Delivered,
    RetryAt(Millis),
    Dead(String),
}

/// A recorded attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub at: Millis,
    /// HTTP status, if PagerDuty answered.
    pub status: Option<u16>,
    /// What went wrong, or PagerDuty's message.
    pub detail: Option<String>,
}

/// One row of `pagerhook deliveries list`: an event and where it stands.
#[derive(Debug, Clone, Serialize)]
pub struct EventSummary {
    pub id: i64,
    pub inbound_id: String,
    pub source: String,
    pub kind: String,
    pub action: Option<String>,
    pub dedup_key: Option<String>,
    pub state: String,
    pub attempts: u32,
    pub created_at: Millis,
    pub last_error: Option<String>,
}

/// The durable queue, behind which SQLite (and later PostgreSQL) sit.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Records a verified webhook and its events in one transaction, or reports a duplicate.
    async fn accept(&self, inbound: NewInbound, events: Vec<Event>) -> Result<Accepted, QueueError>;

    /// Leases up to `limit` deliverable events: due, unleased, and first in their lane.
    async fn claim(&self, now: Millis, limit: usize, lease: Duration) -> Result<Vec<Claimed>, QueueError>;

    /// Records an attempt and its outcome, releasing the lease.
    async fn finish(&self, id: i64, attempt: Attempt, finish: Finish) -> Result<(), QueueError>;

    /// When the next pending event becomes due, if any.
    async fn next_due(&self) -> Result<Option<Millis>, QueueError>;

    /// Recent events, newest first.
    async fn recent(&self, limit: usize) -> Result<Vec<EventSummary>, QueueError>;

    /// Deletes delivered events, finished inbound payloads and delivery ids older than
    /// `before`; pending and dead-lettered events and their payloads are kept.
    async fn prune(&self, before: Millis) -> Result<u64, QueueError>;

    /// Pending events and the age of the oldest.
    async fn depth(&self) -> Result<(u64, Option<Millis>), QueueError>;
}

/// Stable text for an event kind, as stored.
pub(crate) fn kind_from_str(s: &str) -> EventKind {
    if s == "change" {
        EventKind::Change
    } else {
        EventKind::Alert
    }
}

#[cfg(test)]
mod tests;
