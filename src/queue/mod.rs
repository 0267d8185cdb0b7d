//! The durable queue: accepted webhooks and the events they produced.
//!
//! **Invariant:** [`Intake::accept`] returns only after the inbound record and all its events
//! are committed in one transaction, so a 2xx after it survives a crash.
//!
//! **Invariant:** [`Deliveries::claim`] hands out only the head of each ordering lane (events
//! sharing a `(routing_key, dedup_key)`), so a resolve never overtakes its trigger, whatever
//! the retries. The queue knows nothing of PagerDuty: it reads a stored body back only to
//! hand the event out (or show it), checking its `format`, and decides nothing on it.
//!
//! **Invariant:** an acknowledge or resolve is stored under the routing key that triggered its
//! dedup_key (sticky routing), so it lands in the same lane as its trigger and reaches the
//! PagerDuty service that holds the incident; only triggers of its own source count, so no
//! source can move its events onto another source's incident.

mod lanes;
mod ledger;
mod own_pages;
mod postgres;
mod room;
mod rows;
mod schema;
mod search;
mod settings;
mod sql;
mod sqlite;
mod state;
mod tls;

pub use ledger::{Incident, IncidentQuery, IncidentState, OpenIncidents, Origin, ResolveQueued, OPERATOR, PAGERHOOK};
pub use own_pages::{Change, Held};
pub use postgres::PostgresQueue;
pub use room::{Freed, Headroom, RoomReading, Short};
pub use search::BATCH as SEARCH_BATCH;
pub use settings::{open, Backend, Durability, Opened, Settings};
pub use sqlite::{private_dir, SqliteQueue};
pub use state::EventState;
pub use tls::TlsError;

use crate::event::{own, Event, RoutingKey};
use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use std::collections::VecDeque;
use std::time::Duration;

/// Milliseconds since the Unix epoch: the queue's clock unit.
pub type Millis = i64;

/// The current time in [`Millis`].
pub fn now_millis() -> Millis {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as Millis).unwrap_or(0)
}

/// Who opens the store: a process that delivers, or a tool beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `serve`. With SQLite it is the only deliverer, so it releases leases a previous
    /// (crashed) process left; with PostgreSQL other replicas may hold them, and expired
    /// leases are simply claimable.
    Deliverer,
    /// `dlq`, `deliveries`: the server may be running and holding leases; leave them.
    Tool,
}

/// Why the queue could not do what was asked. The variant is the kind of failure, so a caller
/// decides on it (retry, 503, refuse to start) without reading the text; the text is the
/// database's own detail, for the log.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Another writer held the store past the wait (SQLite busy or locked, PostgreSQL lock not
    /// available). Trying again later may succeed.
    #[error("storage is busy (another writer holds it): {0}")]
    Busy(String),
    /// The database aborted the transaction to break a deadlock or a serialization conflict.
    /// Trying again may succeed.
    #[error("storage transaction conflicted with another and was rolled back: {0}")]
    Conflict(String),
    /// A write broke a constraint of the schema (a key already taken, a value not allowed).
    #[error("storage refused a write that breaks a constraint: {0}")]
    Constraint(String),
    /// The store cannot be reached, opened, read or written (disk, network, connection pool).
    #[error("storage I/O failed: {0}")]
    Io(String),
    /// The store is out of room: under its headroom (`storage.min_free_bytes`,
    /// `storage.max_bytes`) or a write failed for lack of space (SQLite's disk full, PostgreSQL's
    /// SQLSTATE 53100). Accepts are refused until room is made; delivery goes on.
    #[error("the store is out of room: {0}")]
    OutOfRoom(String),
    /// A stored row holds what this build cannot read: a kind, status or format it does not
    /// know, or a column of an unexpected type. Nothing is guessed.
    #[error("stored row cannot be read: {0}")]
    BadRow(String),
    /// The store's schema was written by a newer pagerhook.
    #[error("database schema version {stored} is newer than the {known} this build knows; run a newer pagerhook")]
    SchemaTooNew { stored: String, known: usize },
    /// A schema migration failed; the transaction was rolled back, so the store is unchanged.
    #[error("database schema migration to version {to} failed (nothing was changed): {detail}")]
    Migration { to: usize, detail: String },
    /// `storage.url` cannot be used as written.
    #[error("storage.url is not a valid PostgreSQL URL: {0}")]
    Url(String),
    /// `storage.url`'s TLS options cannot be used.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// Anything else the database refused (a statement it could not run).
    #[error("storage: {0}")]
    Database(String),
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
    /// The payload would make more events than `max_events_per_request`; it is kept so it
    /// can be replayed once the cap is raised.
    TooManyEvents(String),
    /// No rule matched, and the source keeps such payloads (`unmatched = "keep"`), for replay
    /// once a rule is added.
    Unmatched,
    /// Some `for_each` items or rules failed (`items`), the others' events are queued: the
    /// payload is kept so that replay renders those items alone, once the mapping is fixed.
    ItemsFailed { error: String, items: Vec<FailedItem> },
    /// The record pagerhook's own events of one source and reason hang from (its id is their
    /// dedup_key, `event::own::dedup_key`): no webhook, never a dead letter.
    Own,
}

impl InboundStatus {
    /// A dead letter: kept for `dlq replay` instead of being pruned.
    pub fn is_dead_letter(&self) -> bool {
        match self {
            InboundStatus::MappingFailed(_)
            | InboundStatus::TooManyEvents(_)
            | InboundStatus::Unmatched
            | InboundStatus::ItemsFailed { .. } => true,
            InboundStatus::Mapped | InboundStatus::Ignored | InboundStatus::Own => false,
        }
    }
}

/// A `for_each` item (its index) or a whole rule (`item: None`) that failed to map, by the
/// rule's name: what replay renders again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FailedItem {
    pub rule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
}

/// A verified webhook to record.
#[derive(Debug, Clone)]
pub struct NewInbound {
    pub id: String,
    pub source: String,
    pub received_at: Millis,
    /// The sender's delivery id (GitHub `X-GitHub-Delivery`): a second one is a duplicate.
    /// Stored in the `dedupe_id` columns and the `seen` table (their SQL names).
    pub delivery_id: Option<String>,
    /// The body's SHA-256 (hex), where a repeated body is a replay (GitHub): a second one of
    /// the source within `storage.retention` is a duplicate, whatever its delivery id.
    pub body_sha256: Option<String>,
    pub headers: Value,
    pub query: String,
    pub body: Bytes,
    pub status: InboundStatus,
    /// The sources whose incidents this one may acknowledge and resolve besides its own (its
    /// config's `may_close`): "only the opener closes" refuses the others' at the accept.
    pub may_close: Vec<String>,
    /// How long its resolves wait before they are due (its config's `resolve_delay`, 0: not
    /// at all): flap damping.
    pub resolve_delay: Millis,
    /// For pagerhook's resolve of a silent incident (`resolve_when_silent`): the time its
    /// incident was judged silent since. The accept checks again, under the lane's lock, that
    /// the incident is still open, not re-triggered since and has nothing waiting in its lane;
    /// otherwise the resolve is stored stale, never sent (a trigger that came meanwhile wins).
    pub silent_before: Option<Millis>,
    /// pagerhook's own page about this webhook (its dead letter), queued in the same
    /// transaction, with the count of the source's dead letters of its reason. Boxed: a rare
    /// passenger on every accept.
    pub page: Option<Box<own::Page>>,
}

impl NewInbound {
    /// A webhook of `source` with a fresh id (UUIDv7, so ids sort by arrival), no delivery id,
    /// headers or query: what tools and tests that fill a store need.
    pub fn new(source: &str, received_at: Millis, body: Bytes, status: InboundStatus) -> NewInbound {
        NewInbound {
            id: uuid::Uuid::now_v7().to_string(),
            source: source.to_string(),
            received_at,
            delivery_id: None,
            body_sha256: None,
            headers: Value::Object(Default::default()),
            query: String::new(),
            body,
            status,
            may_close: Vec::new(),
            resolve_delay: 0,
            silent_before: None,
            page: None,
        }
    }
}

/// Outcome of [`Intake::accept`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Committed: `events` events are stored, `stale` of them stale (never sent: older than
    /// the `sequence` their lane applied).
    Committed { id: String, events: usize, stale: usize },
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
    /// The lease's expiry as this claim wrote it: the claim's fencing token. `renew`,
    /// `finish` and `defer` act only while the stored lease still has this value, so a
    /// claim whose lease ran out and was taken by another never touches the other's claim.
    /// Successive claims of one event write ever larger values (a claim needs the previous
    /// lease to have passed, and adds a positive lease to its `now`).
    pub lease: Millis,
    /// Earlier pending triggers of the same lane that this newer one replaced: sending them
    /// first would only have been deduplicated by PagerDuty.
    pub collapsed: Vec<i64>,
}

/// How one delivery attempt ended, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    Delivered,
    /// `serve --dry-run` logged it instead of sending it: state `dry_run`, never `delivered`.
    DryRun,
    RetryAt(Millis),
    Dead(String),
    /// Dead, and if the event is a trigger (not pagerhook's own), pagerhook pages about it
    /// in the same transaction: to this key, or when `None` to the dead trigger's own key.
    DeadPaged(String, Option<RoutingKey>),
}

/// A delivery attempt: recorded by `finish`, listed by `dlq show` and the console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    pub at: Millis,
    /// HTTP status, if PagerDuty answered.
    pub status: Option<u16>,
    /// What went wrong, or PagerDuty's message.
    pub detail: Option<String>,
    /// The dedup_key PagerDuty said it filed the event under (its 202 answer).
    #[serde(rename = "pagerduty_dedup_key")]
    pub dedup_key: Option<String>,
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
    pub state: EventState,
    pub attempts: u32,
    pub created_at: Millis,
    pub last_error: Option<String>,
    /// The event's summary (none for events queued before it was kept apart).
    pub summary: Option<String>,
    /// The dedup_key PagerDuty answered with, from the latest attempt that had one.
    pub pagerduty_dedup_key: Option<String>,
    /// One of pagerhook's own pages (`event::own`), not an event of a webhook.
    pub own: bool,
}

/// What the console's delivery list asks for: newest first, older than `before` (paging).
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Matches a dedup_key or summary containing it (any case), or a source or state equal to it.
    pub search: Option<String>,
    /// Only events with a smaller id: the last id of the previous page.
    pub before: Option<i64>,
    pub limit: usize,
    /// Only this source's events (`deliveries list --source`).
    pub source: Option<String>,
    /// Only events in this state (`deliveries list --state`).
    pub state: Option<String>,
    /// Only events created at or after this time (`deliveries list --since`).
    pub since: Option<Millis>,
}

/// An [`EventSummary`] with its routing key's fingerprint (never the key).
#[derive(Debug, Clone, Serialize)]
pub struct EventRow {
    #[serde(flatten)]
    pub summary: EventSummary,
    pub routing_key: String,
}

/// One event as the console shows it: as sent, every attempt, the request it came from.
#[derive(Debug, Clone, Serialize)]
pub struct EventDetail {
    #[serde(flatten)]
    pub row: EventRow,
    /// The body sent to PagerDuty, without the routing key.
    pub event: Option<Value>,
    pub attempt_log: Vec<Attempt>,
    /// The stored request (headers without credentials, raw body as text).
    pub headers: Value,
    pub query: String,
    pub payload: String,
}

/// Names a dead letter: a dead event (its number) or a payload kept unmapped (its inbound id,
/// a UUID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadId {
    Event(i64),
    Inbound(String),
}

impl DeadId {
    /// Parses what `dlq list` prints.
    pub fn parse(s: &str) -> Option<DeadId> {
        let s = s.trim();
        if let Ok(n) = s.parse::<i64>() {
            return Some(DeadId::Event(n));
        }
        uuid::Uuid::parse_str(s).ok().map(|u| DeadId::Inbound(u.to_string()))
    }
}

impl std::fmt::Display for DeadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeadId::Event(n) => write!(f, "{n}"),
            DeadId::Inbound(s) => f.write_str(s),
        }
    }
}

/// One row of `pagerhook dlq list`.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// What `dlq show` / `dlq replay` take: an event number or an inbound UUID.
    pub id: String,
    /// `event` (PagerDuty refused it or it ran out of retries), `mapping_failed`,
    /// `too_many_events` (more than `max_events_per_request`), or `unmatched` (no rule
    /// matched, kept by `unmatched = "keep"`).
    pub kind: String,
    pub source: String,
    pub inbound_id: String,
    /// When it died (event) or arrived (mapping failure).
    pub at: Millis,
    pub reason: String,
    pub action: Option<String>,
    pub dedup_key: Option<String>,
    pub attempts: u32,
}

/// Everything kept about one dead letter.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterDetail {
    #[serde(flatten)]
    pub letter: DeadLetter,
    /// The event as it would be sent (without its routing key), for a dead event.
    pub event: Option<Value>,
    pub attempt_log: Vec<Attempt>,
    /// The stored request (headers without credentials, raw body as text).
    pub headers: Value,
    pub payload: String,
}

/// Why dead letters were dropped by [`Retention::prune_dead`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadDropReason {
    /// Older than the dead-letter retention.
    Age,
    /// Beyond the source's size cap: the oldest went first.
    Size,
}

impl DeadDropReason {
    /// As metrics and logs name it.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadDropReason::Age => "age",
            DeadDropReason::Size => "size",
        }
    }
}

/// Dead letters of one source dropped for one reason by [`Retention::prune_dead`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadDropped {
    pub source: String,
    pub reason: DeadDropReason,
    pub letters: u64,
    /// Their stored bodies' bytes.
    pub bytes: u64,
}

/// One dead letter `prune_dead` chose to drop: an event number or an inbound id, its source,
/// its body's bytes and whether it is past the retention (else it is over the size cap).
pub(crate) struct DeadToDrop {
    pub id: DeadId,
    pub source: String,
    pub bytes: i64,
    pub expired: bool,
}

impl DeadToDrop {
    /// The dead letter a row of the stores' `DEAD_TO_DROP` names by its kind and id.
    pub(crate) fn id(kind: &str, id: String) -> Result<DeadId, QueueError> {
        match (kind, id.parse()) {
            ("event", Ok(n)) => Ok(DeadId::Event(n)),
            ("inbound", _) => Ok(DeadId::Inbound(id)),
            _ => Err(QueueError::BadRow(format!("dead letter {kind} {id:?}"))),
        }
    }
}

/// The dropped letters summed by source and reason, in that order.
pub(crate) fn tally_dropped(chosen: &[DeadToDrop]) -> Vec<DeadDropped> {
    let mut sums: std::collections::BTreeMap<(String, DeadDropReason), (u64, u64)> = Default::default();
    for d in chosen {
        let reason = if d.expired { DeadDropReason::Age } else { DeadDropReason::Size };
        let sum = sums.entry((d.source.clone(), reason)).or_default();
        *sum = (sum.0 + 1, sum.1 + d.bytes.max(0) as u64);
    }
    sums.into_iter()
        .map(|((source, reason), (letters, bytes))| DeadDropped { source, reason, letters, bytes })
        .collect()
}

/// A stored webhook, read back for replay.
#[derive(Debug, Clone)]
pub struct StoredInbound {
    pub id: String,
    pub source: String,
    pub received_at: Millis,
    pub headers: Value,
    pub query: String,
    pub body: Bytes,
    pub status: InboundStatus,
}

/// Taking webhooks in: `ingest`'s accept path.
#[async_trait]
pub trait Intake: Send + Sync + 'static {
    /// Records a verified webhook and its events in one transaction, or reports a duplicate.
    async fn accept(&self, inbound: NewInbound, events: Vec<Event>) -> Result<Accepted, QueueError>;
}

/// Handing events out and recording what became of them: the delivery worker.
#[async_trait]
pub trait Deliveries: Send + Sync + 'static {
    /// Leases up to `limit` deliverable events: due, unleased, and first in their lane; within
    /// a routing key the best first (`lanes::claim`), unpaced, nothing superseded.
    async fn claim(&self, now: Millis, limit: usize, lease: Duration) -> Result<Vec<Claimed>, QueueError> {
        Ok(self.claim_with(now, limit, lease, &Pick::default()).await?.claimed)
    }

    /// [`Deliveries::claim`] as `pick` says: each routing key's events only while it has a free
    /// slot (each event claimed spends one), and lanes superseded.
    async fn claim_with(&self, now: Millis, limit: usize, lease: Duration, pick: &Pick) -> Result<Batch, QueueError>;

    /// PagerDuty answered 429 for the key named by `key_sha256` at `now`: closes it until
    /// `until` for every claim (every replica) as `rule` says.
    async fn hold(&self, key_sha256: &str, until: Millis, rule: std::sync::Arc<dyn PaceRule>)
        -> Result<(), QueueError>;

    /// Records an attempt and, if the event is still held under `lease` (see
    /// [`Claimed::lease`]), its outcome, releasing the lease. `false` when the lease was lost:
    /// the attempt is recorded as history but the event is left to the claim that holds it.
    async fn finish(&self, id: i64, lease: Millis, attempt: Attempt, finish: Finish) -> Result<bool, QueueError>;

    /// Extends a claim's lease from `lease` to `until` (which must be larger), if the event is
    /// still held under `lease`: a running attempt keeps its event. `false` when it was lost.
    async fn renew(&self, id: i64, lease: Millis, until: Millis) -> Result<bool, QueueError>;

    /// Releases a claimed event without an attempt, to be claimed again at `until` (pacing),
    /// if it is still held under `lease`.
    async fn defer(&self, id: i64, lease: Millis, until: Millis) -> Result<(), QueueError>;

    /// The earliest *future* time a pending event becomes due (a retry, a paced event), if
    /// any. Events due now are `claim`'s business; one waiting behind its lane's head is
    /// released by that head's `finish`, which wakes the worker anyway. Must be cheap: the
    /// worker asks after every round. `now` is the worker's clock.
    async fn next_due(&self, now: Millis) -> Result<Option<Millis>, QueueError>;
}

/// Dead letters, listed, shown, replayed or forgotten: `dlq`, the console, `ingest`'s replay.
#[async_trait]
pub trait DeadLetters: Send + Sync + 'static {
    /// Dead events and payloads whose mapping failed, newest first.
    async fn dead_letters(&self, source: Option<String>, limit: usize) -> Result<Vec<DeadLetter>, QueueError>;

    /// One dead letter with its event, attempts and stored request.
    async fn dead_letter(&self, id: DeadId) -> Result<Option<DeadLetterDetail>, QueueError>;

    /// Queues a dead event again as a new event at the end of its lane (a fresh `max_age`);
    /// the dead one is kept, marked `replayed`. `None` if no such dead event.
    async fn requeue_dead(&self, id: i64, now: Millis) -> Result<Option<i64>, QueueError>;

    /// When the lane of dead trigger `id` was resolved after it died: the latest event
    /// PagerDuty accepted in its lane since is a resolve. Replaying it would open an incident
    /// nothing closes. `None` for any other event, or a lane not resolved since.
    async fn resolved_since(&self, id: i64) -> Result<Option<Millis>, QueueError>;

    /// A stored webhook, for replaying its mapping.
    async fn inbound(&self, id: String) -> Result<Option<StoredInbound>, QueueError>;

    /// Records a new mapping of a payload whose mapping had failed, with its events, in one
    /// transaction. `None` if it is no longer a mapping failure (replayed meanwhile).
    async fn remap(
        &self,
        id: String,
        status: InboundStatus,
        events: Vec<Event>,
        now: Millis,
    ) -> Result<Option<usize>, QueueError>;

    /// Forgets a dead letter. `false` if there was none.
    async fn delete_dead(&self, id: DeadId) -> Result<bool, QueueError>;
}

/// What operators read: the delivery list and one event (the console, `deliveries list`),
/// and the backlog (`/metrics`, `/readyz`).
#[async_trait]
pub trait Inspect: Send + Sync + 'static {
    /// Recent events, newest first: the first page of [`Inspect::events`], unfiltered.
    async fn recent(&self, limit: usize) -> Result<Vec<EventSummary>, QueueError> {
        let rows = self.events(EventQuery { limit, ..EventQuery::default() }).await?;
        Ok(rows.into_iter().map(|r| r.summary).collect())
    }

    /// Events matching `q`, newest first (the console's delivery list).
    async fn events(&self, q: EventQuery) -> Result<Vec<EventRow>, QueueError>;

    /// One event with its attempts and the request it came from.
    async fn event(&self, id: i64) -> Result<Option<EventDetail>, QueueError>;

    /// Pending events and the age of the oldest.
    async fn depth(&self) -> Result<(u64, Option<Millis>), QueueError>;

    /// Adds up to `batch` events the search index does not hold yet, oldest first, in a
    /// transaction of its own (never an accept's: [`search`] says why); how many it added, 0
    /// when it is caught up. The search indexer calls it until it is.
    async fn index_for_search(&self, batch: usize) -> Result<usize, QueueError>;
}

/// Forgetting what is done and old: `storage.retention`, and dead letters past
/// `storage.dead_letter_retention` or their source's `storage.dead_letter_max_bytes`.
#[async_trait]
pub trait Retention: Send + Sync + 'static {
    /// Deletes delivered events, finished inbound payloads and delivery ids older than
    /// `before`; pending and dead-lettered events and their payloads are kept.
    async fn prune(&self, before: Millis) -> Result<u64, QueueError>;

    /// Forgets the dead letters that died (or arrived, a kept payload) before `before`, and of
    /// each source those beyond `max_bytes` of stored bodies, oldest first (the newest stay);
    /// what went, by source and reason. A verified sender must not be able to fill the disk
    /// with payloads that fail their mapping.
    async fn prune_dead(&self, before: Millis, max_bytes: u64) -> Result<Vec<DeadDropped>, QueueError>;
}

/// Room to write ([`room`]): what the room watcher, `/metrics` and the pruner under pressure use.
#[async_trait]
pub trait Capacity: Send + Sync + 'static {
    /// Measures the store's room now and judges whether accepts are taken (the accept path
    /// reads that judgement until the next measurement).
    async fn room(&self) -> Result<RoomReading, QueueError>;

    /// Under pressure: deletes up to `limit` finished events (delivered, collapsed) with their
    /// attempts and the payloads no event or dead letter needs, oldest first whatever
    /// `storage.retention` says, and the payload segments no row refers to any more. Pending
    /// events and dead letters are kept.
    async fn make_room(&self, limit: usize) -> Result<Freed, QueueError>;
}

/// The incident ledger (`ledger.rs`): what pagerhook believes is open, from what it sent and
/// PagerDuty accepted, and an operator's way to close it: `incidents`, the admin API, the
/// console and `/metrics`.
#[async_trait]
pub trait Incidents: Intake {
    /// Incidents matching `q`, oldest first.
    async fn incidents(&self, q: IncidentQuery) -> Result<Vec<Incident>, QueueError>;

    /// Open (and acknowledged) incidents per source, with the oldest one's opening.
    async fn open_incidents(&self) -> Result<Vec<OpenIncidents>, QueueError>;

    /// The routing keys under which the ledger holds `dedup_key` open (one per lane).
    async fn open_lanes(&self, dedup_key: String) -> Result<Vec<RoutingKey>, QueueError>;

    /// Open (and acknowledged) incidents `source` opened and last triggered before `before`,
    /// silent longest first, at most `limit`: routing key and dedup_key.
    async fn silent_incidents(
        &self,
        source: String,
        before: Millis,
        limit: usize,
    ) -> Result<Vec<(RoutingKey, String)>, QueueError>;

    /// Whether `lane` has an event waiting to be sent.
    async fn lane_waiting(&self, lane: String) -> Result<bool, QueueError>;

    /// `resolve_when_silent`: queues pagerhook's resolve ([`PAGERHOOK`]) of each incident
    /// `source` opened that it has not re-triggered for `silent` at `now` and whose lane has
    /// nothing waiting (a trigger still queued is the sender speaking), at most `limit`. Each
    /// resolve's record says why. The dedup_keys whose resolve was queued.
    async fn resolve_silent(
        &self,
        source: &str,
        silent: Duration,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<String>, QueueError> {
        let before = now.saturating_sub(silent.as_millis() as Millis);
        let mut queued = Vec::new();
        for (key, dedup_key) in self.silent_incidents(source.to_string(), before, limit).await? {
            let Some((event, why)) = ledger::silence_resolve(key, &dedup_key, source, silent) else { continue };
            if let Some(lane) = event.order_key() {
                if self.lane_waiting(lane).await? {
                    continue;
                }
            }
            let mut inbound = NewInbound::new(PAGERHOOK, now, Bytes::from(why), InboundStatus::Mapped);
            inbound.silent_before = Some(before);
            if let Accepted::Committed { stale: 0, .. } = self.accept(inbound, vec![event]).await? {
                queued.push(dedup_key);
            }
        }
        Ok(queued)
    }

    /// Queues a resolve, recorded as an operator's ([`OPERATOR`]), for every open lane of each
    /// of `dedup_keys`; a key the ledger holds no open incident under is said so and skipped.
    /// The ledger changes when PagerDuty accepts the resolve, as for any other.
    async fn resolve_incidents(&self, dedup_keys: Vec<String>, now: Millis) -> Result<Vec<ResolveQueued>, QueueError> {
        let mut done = Vec::with_capacity(dedup_keys.len());
        for dedup_key in dedup_keys {
            let lanes = self.open_lanes(dedup_key.clone()).await?;
            if lanes.is_empty() {
                done.push(ResolveQueued::NotOpen { dedup_key });
                continue;
            }
            let events =
                lanes.into_iter().filter_map(|key| ledger::operator_resolve(key, &dedup_key)).collect::<Vec<_>>();
            let body = serde_json::json!({ "resolve": dedup_key, "by": "operator" }).to_string();
            let inbound = NewInbound::new(OPERATOR, now, Bytes::from(body), InboundStatus::Mapped);
            let queued = events.len();
            self.accept(inbound, events).await?;
            done.push(ResolveQueued::Queued { dedup_key, events: queued });
        }
        Ok(done)
    }
}

/// What waits for one routing key: the storm gauge's figures (`delivery::conditions`).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyBacklog {
    pub routing_key: RoutingKey,
    /// Pending events of the key, pagerhook's own excepted (a meta-event never causes another).
    pub pending: u64,
    /// When the oldest of them was queued.
    pub oldest: Millis,
    /// How many of them each source queued, by source name.
    pub sources: Vec<(String, u64)>,
}

/// Sums the store's rows (routing key, source, pending, oldest), sorted by key, into one
/// [`KeyBacklog`] per key. A stored key that does not parse is skipped: it cannot be paged on.
pub(crate) fn fold_backlog(rows: Vec<(String, String, i64, Millis)>) -> Vec<KeyBacklog> {
    let mut out: Vec<(String, KeyBacklog)> = Vec::new();
    for (key, source, n, oldest) in rows {
        let n = n.max(0) as u64;
        match out.last_mut() {
            Some((k, b)) if *k == key => {
                b.pending += n;
                b.oldest = b.oldest.min(oldest);
                b.sources.push((source, n));
            }
            _ => {
                let Ok(routing_key) = RoutingKey::parse(crate::secret::Secret::new(key.clone())) else { continue };
                out.push((key, KeyBacklog { routing_key, pending: n, oldest, sources: vec![(source, n)] }));
            }
        }
    }
    out.into_iter().map(|(_, b)| b).collect()
}

/// Conditions pagerhook pages about (`delivery::conditions`): what it reads to judge a storm, and
/// the one step that raises and clears a condition's own page (`own_pages::conditions`).
#[async_trait]
pub trait Conditions: Send + Sync + 'static {
    /// Each routing key's pending events (pagerhook's own excepted), by source.
    async fn backlog(&self) -> Result<Vec<KeyBacklog>, QueueError>;

    /// In one transaction: triggers the page of each `holding` condition not yet open, and
    /// resolves the open pages of the `judged` reasons whose condition no longer holds. Each
    /// page is queued due at `now`, with pagerhook's marker (`rule` `@pagerhook`, see
    /// `sql::OWN_FIRST`) that the claim prefers, so it takes its key's first slot.
    async fn hold_conditions(
        &self,
        judged: Vec<own::Reason>,
        holding: Vec<Held>,
        now: Millis,
    ) -> Result<Vec<Change>, QueueError>;
}

/// The whole store, behind which SQLite and PostgreSQL sit: for a caller that needs several
/// roles (`app`, which hands each part its own; the admin routes; the accept and replay
/// path). A caller that needs one role takes that trait, and so does its test double.
pub trait Queue: Intake + Deliveries + DeadLetters + Inspect + Retention + Capacity + Incidents + Conditions {}

impl<T: Intake + Deliveries + DeadLetters + Inspect + Retention + Capacity + Incidents + Conditions> Queue for T {}

/// One routing key's pace as stored: what `delivery::pacing`'s rules read and write, kept in
/// the store (so a restart grants no fresh burst) and shared by the replicas on PostgreSQL.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PaceState {
    /// The burst bucket as a GCRA theoretical arrival time.
    pub tat: f64,
    /// No event for the key before this (a 429's `Retry-After`).
    pub closed_until: Millis,
    /// Send times (claims), ascending; the last `per_key_rate`.
    pub log: VecDeque<Millis>,
}

/// The pacing rules, as the store applies them under a claim's lock of a key (implemented by
/// `delivery::pacing::Limits`; the queue only stores their state).
pub trait PaceRule: Send + Sync {
    /// The earliest time at or after `now` the key may send.
    fn free_at(&self, state: &PaceState, now: Millis) -> Millis;
    /// A send at `now`: an event of the key was claimed.
    fn spend(&self, state: &mut PaceState, now: Millis);
    /// A 429: the key is closed until `until`.
    fn hold(&self, state: &mut PaceState, until: Millis);
}

/// How a claim picks its events ([`Deliveries::claim_with`]).
#[derive(Clone, Default)]
pub struct Pick {
    /// The pace of every routing key: a key's events are claimed only while it has a free
    /// slot. `None`: unpaced (a dry run; tools and tests that step the queue).
    pub pace: Option<std::sync::Arc<dyn PaceRule>>,
    /// A lane whose waiting trigger is followed by its resolve, with nothing of the lane
    /// attempted since its last resolve, sends neither (`delivery.supersede`).
    pub supersede: bool,
}

/// What a claim handed out, and when the next routing key it had to hold back is free.
#[derive(Debug, Default)]
pub struct Batch {
    pub claimed: Vec<Claimed>,
    /// The events it superseded (`delivery.supersede`): finished, none of them sent.
    pub superseded: Vec<i64>,
    /// The earliest time a key with due events it did not claim (no free slot) has one.
    pub paced_until: Option<Millis>,
}

/// How many of `known` migrations a store at `stored` (its recorded schema version, `None` for
/// a new store) has already applied; a store newer than this build is refused.
pub(crate) fn applied_migrations(stored: Option<&str>, known: usize) -> Result<usize, QueueError> {
    match stored.map(str::parse::<usize>) {
        None => Ok(0),
        Some(Ok(v)) if v <= known => Ok(v),
        Some(_) => Err(QueueError::SchemaTooNew { stored: stored.unwrap_or_default().to_string(), known }),
    }
}

#[cfg(test)]
mod tests;
