//! Reading stored rows, once for both backends: each backend only says how to read one
//! column of its row type ([`Columns`]); what the columns mean, and which stored values this
//! build refuses, is decided here.

use super::{
    Attempt, Claimed, DeadLetter, DeadLetterDetail, EventDetail, EventRow, EventSummary, InboundStatus, Millis,
    QueueError, StoredInbound,
};
use crate::config::Secret;
use crate::event::{Event, EventKind, RoutingKey};
use serde_json::Value;

/// The version of the stored event body that this build writes and reads (the `format`
/// column): the JSON of `Event::body()`. A build that changes the body's shape adds a format
/// and keeps reading the old one.
pub(crate) const EVENT_FORMAT: i32 = 1;

/// One column of a stored row, as the backend reads it. Errors are [`QueueError::BadRow`]: a
/// column that is not what this build expects is a damaged or foreign store.
pub(crate) trait Columns {
    fn text(&self, i: usize) -> Result<String, QueueError>;
    fn opt_text(&self, i: usize) -> Result<Option<String>, QueueError>;
    /// A `BIGINT` (times, ids).
    fn int(&self, i: usize) -> Result<i64, QueueError>;
    /// An `INTEGER` (counts, HTTP statuses, formats).
    fn int4(&self, i: usize) -> Result<i32, QueueError>;
    fn opt_int4(&self, i: usize) -> Result<Option<i32>, QueueError>;
    fn flag(&self, i: usize) -> Result<bool, QueueError>;
    fn bytes(&self, i: usize) -> Result<Vec<u8>, QueueError>;

    /// A count, which is never negative.
    fn count(&self, i: usize) -> Result<u32, QueueError> {
        Ok(self.int4(i)?.max(0) as u32)
    }
}

/// A pending event as a claim reads it, whatever the backend.
pub(crate) struct StoredEvent {
    pub id: i64,
    pub kind: String,
    pub order_key: Option<String>,
    pub routing_key: String,
    pub action: Option<String>,
    pub body: StoredBody,
    pub attempts: u32,
    pub created_at: Millis,
    pub inbound_id: String,
    /// Due and unleased at the claim's `now`.
    pub due: bool,
}

impl StoredEvent {
    /// Reads `e.id, e.kind, e.order_key, e.routing_key, e.action, e.format, e.body, e.attempts,
    /// e.created_at, e.inbound_id, <due>` (each backend's `ROW_COLUMNS`).
    pub fn read(r: &impl Columns) -> Result<StoredEvent, QueueError> {
        Ok(StoredEvent {
            id: r.int(0)?,
            kind: r.text(1)?,
            order_key: r.opt_text(2)?,
            routing_key: r.text(3)?,
            action: r.opt_text(4)?,
            body: StoredBody { format: r.int4(5)?, text: r.text(6)? },
            attempts: r.count(7)?,
            created_at: r.int(8)?,
            inbound_id: r.text(9)?,
            due: r.flag(10)?,
        })
    }

    /// True when this head may collapse into `next`: both are triggers and `next` is due.
    pub fn collapses_into(&self, next: &StoredEvent) -> bool {
        self.action.as_deref() == Some("trigger") && next.action.as_deref() == Some("trigger") && next.due
    }

    /// The event to hand out. Rows are written only by `accept`, so this fails only on a
    /// damaged store or one written by a newer build; that is said loudly, and the event is
    /// left leased for inspection rather than guessed at or skipped silently. One such row
    /// does not stop the others from being delivered.
    pub fn into_claimed(self, superseded: Vec<i64>, lease: Millis) -> Option<Claimed> {
        let id = self.id;
        self.decode(superseded, lease)
            .inspect_err(|e| tracing::error!(event_id = id, error = %e, "stored event is unreadable; left leased for inspection"))
            .ok()
    }

    fn decode(self, superseded: Vec<i64>, lease: Millis) -> Result<Claimed, QueueError> {
        let kind = kind_from_str(self.id, &self.kind)?;
        let key = RoutingKey::parse(Secret::new(self.routing_key))
            .map_err(|e| QueueError::BadRow(format!("event {}: stored routing key: {e}", self.id)))?;
        let body = self.body.decode(self.id)?;
        Ok(Claimed {
            id: self.id,
            inbound_id: self.inbound_id,
            event: Event::from_stored(kind, key, body),
            attempts: self.attempts,
            created_at: self.created_at,
            lease,
            superseded,
        })
    }
}

/// An event's body as stored: its `format` and its text.
pub(crate) struct StoredBody {
    pub format: i32,
    pub text: String,
}

impl StoredBody {
    /// Reads `format, body`.
    pub fn read(r: &impl Columns) -> Result<StoredBody, QueueError> {
        Ok(StoredBody { format: r.int4(0)?, text: r.text(1)? })
    }

    /// The body of event `id`; a format this build does not know is refused, not guessed.
    pub fn decode(self, id: i64) -> Result<Value, QueueError> {
        if self.format != EVENT_FORMAT {
            return Err(QueueError::BadRow(format!(
                "event {id} is stored in format {}, which this build does not know (it reads format {EVENT_FORMAT}); \
                 run the pagerhook that wrote it, or a newer one",
                self.format
            )));
        }
        serde_json::from_str(&self.text)
            .map_err(|e| QueueError::BadRow(format!("event {id}: stored body is not JSON: {e}")))
    }
}

/// The stored kind of event `id`.
pub(crate) fn kind_from_str(id: i64, s: &str) -> Result<EventKind, QueueError> {
    match s {
        "alert" => Ok(EventKind::Alert),
        "change" => Ok(EventKind::Change),
        other => Err(QueueError::BadRow(format!(
            "event {id} has kind {other:?}, which this build does not know (alert, change)"
        ))),
    }
}

/// The `status` and `error` columns of an inbound row.
pub(crate) fn status_columns(s: &InboundStatus) -> (&'static str, Option<&str>) {
    match s {
        InboundStatus::Mapped => ("mapped", None),
        InboundStatus::Ignored => ("ignored", None),
        InboundStatus::MappingFailed(e) => ("mapping_failed", Some(e.as_str())),
        InboundStatus::TooManyEvents(e) => ("too_many_events", Some(e.as_str())),
    }
}

/// The status read back from the `status` and `error` columns of inbound `id`.
pub(crate) fn status_from_columns(id: &str, status: &str, error: Option<String>) -> Result<InboundStatus, QueueError> {
    match status {
        "mapped" => Ok(InboundStatus::Mapped),
        "ignored" => Ok(InboundStatus::Ignored),
        "mapping_failed" => Ok(InboundStatus::MappingFailed(error.unwrap_or_default())),
        "too_many_events" => Ok(InboundStatus::TooManyEvents(error.unwrap_or_default())),
        other => Err(QueueError::BadRow(format!(
            "inbound {id} has status {other:?}, which this build does not know \
             (mapped, ignored, mapping_failed, too_many_events)"
        ))),
    }
}

impl StoredInbound {
    /// Reads `id, source, headers, query, body, status, error, received_at`.
    pub(crate) fn read(r: &impl Columns) -> Result<StoredInbound, QueueError> {
        let id = r.text(0)?;
        let status = status_from_columns(&id, &r.text(5)?, r.opt_text(6)?)?;
        Ok(StoredInbound {
            source: r.text(1)?,
            received_at: r.int(7)?,
            headers: serde_json::from_str(&r.text(2)?).unwrap_or_default(),
            query: r.text(3)?,
            body: r.bytes(4)?.into(),
            status,
            id,
        })
    }
}

impl EventRow {
    /// Reads each backend's `EVENT_ROW`: `e.id, e.inbound_id, i.source, e.kind, e.action,
    /// e.dedup_key, e.state, e.attempts, e.created_at, e.last_error, e.routing_key,
    /// <PagerDuty's latest dedup_key>`.
    /// The kind is shown as stored: a list must not hide every row behind one it cannot read
    /// (the event's detail and its claim refuse it).
    pub(crate) fn read(r: &impl Columns) -> Result<EventRow, QueueError> {
        Ok(EventRow {
            summary: EventSummary {
                id: r.int(0)?,
                inbound_id: r.text(1)?,
                source: r.text(2)?,
                kind: r.text(3)?,
                action: r.opt_text(4)?,
                dedup_key: r.opt_text(5)?,
                state: r.text(6)?,
                attempts: r.count(7)?,
                created_at: r.int(8)?,
                last_error: r.opt_text(9)?,
                pagerduty_dedup_key: r.opt_text(11)?,
            },
            routing_key: super::fingerprint_of(&r.text(10)?),
        })
    }
}

impl DeadLetter {
    /// Reads each backend's `DEAD_LETTERS` relation.
    pub(crate) fn read(r: &impl Columns) -> Result<DeadLetter, QueueError> {
        Ok(DeadLetter {
            id: r.text(0)?,
            kind: r.text(1)?,
            source: r.text(2)?,
            inbound_id: r.text(3)?,
            at: r.int(4)?,
            reason: r.text(5)?,
            action: r.opt_text(6)?,
            dedup_key: r.opt_text(7)?,
            attempts: r.count(8)?,
        })
    }
}

impl Attempt {
    /// Reads `at, status, detail, dedup_key` of the `attempts` table.
    pub(crate) fn read(r: &impl Columns) -> Result<Attempt, QueueError> {
        Ok(Attempt {
            at: r.int(0)?,
            status: r.opt_int4(1)?.and_then(|s| u16::try_from(s).ok()),
            detail: r.opt_text(2)?,
            dedup_key: r.opt_text(3)?,
        })
    }
}

/// The request an event came from, as stored: `headers, query, body` of `inbound`.
pub(crate) struct StoredRequest {
    headers: String,
    query: String,
    payload: Vec<u8>,
}

impl StoredRequest {
    pub fn read(r: &impl Columns) -> Result<StoredRequest, QueueError> {
        Ok(StoredRequest { headers: r.text(0)?, query: r.text(1)?, payload: r.bytes(2)? })
    }

    fn headers(&self) -> Value {
        serde_json::from_str(&self.headers).unwrap_or_default()
    }

    fn payload(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

impl EventDetail {
    /// One event as the console shows it, from what the backend read; a kind or format this
    /// build does not know is an error.
    pub(crate) fn assemble(
        row: EventRow,
        body: StoredBody,
        attempt_log: Vec<Attempt>,
        request: StoredRequest,
    ) -> Result<EventDetail, QueueError> {
        kind_from_str(row.summary.id, &row.summary.kind)?;
        let event = Some(body.decode(row.summary.id)?);
        Ok(EventDetail {
            row,
            event,
            attempt_log,
            headers: request.headers(),
            payload: request.payload(),
            query: request.query,
        })
    }
}

impl DeadLetterDetail {
    /// One dead letter as `dlq show` prints it: `body` is the event's (none for a payload kept
    /// unmapped).
    pub(crate) fn assemble(
        letter: DeadLetter,
        body: Option<(i64, StoredBody)>,
        attempt_log: Vec<Attempt>,
        request: StoredRequest,
    ) -> Result<DeadLetterDetail, QueueError> {
        let event = body.map(|(id, b)| b.decode(id)).transpose()?;
        Ok(DeadLetterDetail { letter, event, attempt_log, headers: request.headers(), payload: request.payload() })
    }
}
