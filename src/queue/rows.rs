//! Reading stored rows, once for both backends: each backend only says how to read one
//! column of its row type ([`Columns`]); what the columns mean, and which stored values this
//! build refuses, is decided here.

use super::{
    Attempt, Claimed, DeadLetter, DeadLetterDetail, EventDetail, EventRow, EventState, EventSummary, InboundStatus,
    Millis, QueueError, StoredInbound,
};
use crate::event::{Event, EventKind, RoutingKey};
use crate::secret::Secret;
use serde_json::Value;

/// The version of the stored event body that this build writes and reads (the `format`
/// column): the JSON of `Event::body()`. A build that changes the body's shape adds a format
/// and keeps reading the old one.
pub(crate) const EVENT_FORMAT: i32 = 1;

/// A column type both backends read: what a stored row's columns are made of.
pub(crate) trait Stored: rusqlite::types::FromSql + for<'a> tokio_postgres::types::FromSql<'a> {}
impl<T: rusqlite::types::FromSql + for<'a> tokio_postgres::types::FromSql<'a>> Stored for T {}

/// A stored row, as the backend reads one column of it. Errors are [`QueueError::BadRow`]: a
/// column that is not what this build expects is a damaged or foreign store. `BIGINT` columns
/// (times, ids) read as `i64`, `INTEGER` ones (counts, statuses, formats) as `i32`.
pub(crate) trait Columns: Sized {
    fn col<T: Stored>(&self, i: usize) -> Result<T, QueueError>;

    /// The row's first columns, as a tuple of as many.
    fn cols<T: FromColumns>(&self) -> Result<T, QueueError> {
        T::from_columns(self)
    }
}

/// A tuple of [`Stored`] values, read from a row's first columns in order.
pub(crate) trait FromColumns: Sized {
    fn from_columns(r: &impl Columns) -> Result<Self, QueueError>;
}

macro_rules! from_columns {
    ($($t:ident $i:tt),+) => {
        impl<$($t: Stored),+> FromColumns for ($($t,)+) {
            fn from_columns(r: &impl Columns) -> Result<Self, QueueError> {
                Ok(($(r.col::<$t>($i)?,)+))
            }
        }
    };
}

from_columns!(A 0, B 1, C 2);
from_columns!(A 0, B 1, C 2, D 3);
from_columns!(A 0, B 1, C 2, D 3, E 4, F 5);
from_columns!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);
from_columns!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8);
from_columns!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10);
from_columns!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11);
from_columns!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11, M 12);

/// A count, which is never negative.
fn count(n: i32) -> u32 {
    n.max(0) as u32
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
        let (id, kind, order_key, routing_key, action, format, text, attempts, created_at, inbound_id, due) =
            r.cols()?;
        let body = StoredBody { format, text };
        Ok(StoredEvent {
            id,
            kind,
            order_key,
            routing_key,
            action,
            body,
            attempts: count(attempts),
            created_at,
            inbound_id,
            due,
        })
    }

    /// The event to hand out. Rows are written only by `accept`, so this fails only on a
    /// damaged store or one written by a newer build; that is said loudly, and the event is
    /// left leased for inspection rather than guessed at or skipped silently. One such row
    /// does not stop the others from being delivered.
    pub fn into_claimed(self, collapsed: Vec<i64>, lease: Millis) -> Option<Claimed> {
        let id = self.id;
        self.decode(collapsed, lease)
            .inspect_err(|e| tracing::error!(event_id = id, error = %e, "stored event is unreadable; left leased for inspection"))
            .ok()
    }

    fn decode(self, collapsed: Vec<i64>, lease: Millis) -> Result<Claimed, QueueError> {
        let kind = kind_from_str(self.id, &self.kind)?;
        let key = RoutingKey::parse(Secret::new(self.routing_key))
            .map_err(|e| QueueError::BadRow(format!("event {}: stored routing key: {e}", self.id)))?;
        let text = self.body.text(self.id)?;
        let event =
            Event::from_stored(kind, key, text).map_err(|e| QueueError::BadRow(format!("event {}: {e}", self.id)))?;
        Ok(Claimed {
            id: self.id,
            inbound_id: self.inbound_id,
            event,
            attempts: self.attempts,
            created_at: self.created_at,
            lease,
            collapsed,
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
        let (format, text) = (r.col(0)?, r.col(1)?);
        Ok(StoredBody { format, text })
    }

    /// The body of event `id`; a format this build does not know is refused, not guessed.
    pub fn decode(self, id: i64) -> Result<Value, QueueError> {
        let text = self.text(id)?;
        serde_json::from_str(&text).map_err(|e| QueueError::BadRow(format!("event {id}: stored body is not JSON: {e}")))
    }

    /// The body's text, once its format is one this build reads.
    pub fn text(self, id: i64) -> Result<String, QueueError> {
        if self.format != EVENT_FORMAT {
            return Err(QueueError::BadRow(format!(
                "event {id} is stored in format {}, which this build does not know (it reads format {EVENT_FORMAT}); \
                 run the pagerhook that wrote it, or a newer one",
                self.format
            )));
        }
        Ok(self.text)
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

/// The stored state of event `id`.
fn state_from_str(id: i64, s: String) -> Result<EventState, QueueError> {
    EventState::parse(&s).ok_or_else(|| {
        let known = EventState::ALL.map(EventState::as_str).join(", ");
        QueueError::BadRow(format!("event {id} has state {s:?}, which this build does not know ({known})"))
    })
}

/// The fingerprint of a stored routing key, as logs show it.
fn fingerprint_of(stored: String) -> String {
    RoutingKey::parse(Secret::new(stored)).map(|k| k.fingerprint()).unwrap_or_else(|_| "invalid".into())
}

/// The `error` column of an `unmatched` row: the reason `dlq list` shows.
const UNMATCHED_REASON: &str = "no rule matched";

/// The `status` and `error` columns of an inbound row.
pub(crate) fn status_columns(s: &InboundStatus) -> (&'static str, Option<&str>) {
    match s {
        InboundStatus::Mapped => ("mapped", None),
        InboundStatus::Ignored => ("ignored", None),
        InboundStatus::MappingFailed(e) => ("mapping_failed", Some(e.as_str())),
        InboundStatus::TooManyEvents(e) => ("too_many_events", Some(e.as_str())),
        InboundStatus::Unmatched => ("unmatched", Some(UNMATCHED_REASON)),
        InboundStatus::ItemsFailed { error, .. } => ("items_failed", Some(error.as_str())),
        InboundStatus::Own => ("own", None),
    }
}

/// The `failed_items` column of an inbound row: the items replay renders again (JSON).
pub(crate) fn failed_items_column(s: &InboundStatus) -> Option<String> {
    match s {
        InboundStatus::ItemsFailed { items, .. } => Some(serde_json::to_string(items).expect("items serialize")),
        _ => None,
    }
}

/// The status read back from the `status`, `error` and `failed_items` columns of inbound `id`.
pub(crate) fn status_from_columns(
    id: &str,
    status: &str,
    error: Option<String>,
    items: Option<String>,
) -> Result<InboundStatus, QueueError> {
    match status {
        "items_failed" => {
            let items = serde_json::from_str(items.as_deref().unwrap_or_default())
                .map_err(|e| QueueError::BadRow(format!("inbound {id}: failed_items: {e}")))?;
            Ok(InboundStatus::ItemsFailed { error: error.unwrap_or_default(), items })
        }
        "mapped" => Ok(InboundStatus::Mapped),
        "ignored" => Ok(InboundStatus::Ignored),
        "mapping_failed" => Ok(InboundStatus::MappingFailed(error.unwrap_or_default())),
        "too_many_events" => Ok(InboundStatus::TooManyEvents(error.unwrap_or_default())),
        "unmatched" => Ok(InboundStatus::Unmatched),
        "own" => Ok(InboundStatus::Own),
        other => Err(QueueError::BadRow(format!(
            "inbound {id} has status {other:?}, which this build does not know \
             (mapped, ignored, mapping_failed, too_many_events, unmatched, items_failed, own)"
        ))),
    }
}

impl StoredInbound {
    /// Reads `id, source, headers, query, body, status, error, received_at`, and
    /// `failed_items` at column `items_at`.
    pub(crate) fn read(r: &impl Columns, items_at: usize) -> Result<StoredInbound, QueueError> {
        let (id, source, headers, query, body, status, error, received_at): (
            String,
            _,
            String,
            _,
            Vec<u8>,
            String,
            _,
            _,
        ) = r.cols()?;
        let status = status_from_columns(&id, &status, error, r.col(items_at)?)?;
        let headers = serde_json::from_str(&headers).unwrap_or_default();
        Ok(StoredInbound { id, source, received_at, headers, query, body: body.into(), status })
    }
}

impl EventRow {
    /// Reads each backend's `EVENT_ROW`: `e.id, e.inbound_id, i.source, e.kind, e.action,
    /// e.dedup_key, e.state, e.attempts, e.created_at, e.last_error, e.routing_key, e.summary,
    /// <PagerDuty's latest dedup_key>`.
    /// The kind is shown as stored: a list must not hide every row behind one it cannot read
    /// (the event's detail and its claim refuse it). A state this build does not know is an
    /// error: what the queue does with an event rests on it.
    pub(crate) fn read(r: &impl Columns) -> Result<EventRow, QueueError> {
        let (
            id,
            inbound_id,
            source,
            kind,
            action,
            dedup_key,
            state,
            attempts,
            created_at,
            last_error,
            key,
            text,
            pd_key,
        ): (_, String, _, _, _, _, _, _, _, _, _, _, _) = r.cols()?;
        let routing_key = fingerprint_of(key);
        let attempts = count(attempts);
        let state = state_from_str(id, state)?;
        let summary = EventSummary {
            id,
            own: crate::event::own::is_own_record(&inbound_id),
            inbound_id,
            source,
            kind,
            action,
            dedup_key,
            state,
            attempts,
            created_at,
            last_error,
            summary: text,
            pagerduty_dedup_key: pd_key,
        };
        Ok(EventRow { summary, routing_key })
    }
}

impl DeadLetter {
    /// Reads each backend's `DEAD_LETTERS` relation.
    pub(crate) fn read(r: &impl Columns) -> Result<DeadLetter, QueueError> {
        let (id, kind, source, inbound_id, at, reason, action, dedup_key, attempts) = r.cols()?;
        Ok(DeadLetter { id, kind, source, inbound_id, at, reason, action, dedup_key, attempts: count(attempts) })
    }
}

impl Attempt {
    /// Reads `at, status, detail, dedup_key` of the `attempts` table.
    pub(crate) fn read(r: &impl Columns) -> Result<Attempt, QueueError> {
        let (at, status, detail, dedup_key): (_, Option<i32>, _, _) = r.cols()?;
        Ok(Attempt { at, status: status.and_then(|s| u16::try_from(s).ok()), detail, dedup_key })
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
        let (headers, query, payload) = r.cols()?;
        Ok(StoredRequest { headers, query, payload })
    }

    fn headers(&self) -> Value {
        serde_json::from_str(&self.headers).unwrap_or_default()
    }

    fn payload(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    /// The same request with the body the backend found elsewhere.
    pub(super) fn with_payload(self, payload: Vec<u8>) -> StoredRequest {
        StoredRequest { payload, ..self }
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
