//! The incident ledger: per `(routing_key, dedup_key)` pagerhook triggered, what it sent and
//! what PagerDuty answered. Written once for both backends: [`Entry::of`] decides what a
//! finished attempt writes (only a 202, keyed on the dedup_key PagerDuty answered with), each
//! backend runs [`Entry::statement`] in the transaction of its `finish`; the statements that
//! read it are here too, the same text in both dialects (`$n` first written in ascending
//! order, as in [`super::sql`]).
//!
//! It is not PagerDuty's truth: people acknowledge and resolve in PagerDuty's UI, maintenance
//! windows and event orchestration drop events, Alert Grouping merges alerts. It says what
//! pagerhook believes, from what it sent.

use super::rows::{Columns, StoredBody};
use super::{Attempt, Finish, Millis, QueueError};
use crate::event::{Action, AlertDraft, Event, RoutingKey};
use crate::secret::Secret;
use serde::Serialize;

/// Who an event comes from: the inbound record's `source` column names a configured source,
/// or one of the reserved names below, which no source can take (source names are lowercase
/// letters, digits, `-` and `_`). The one place that tells an operator's or pagerhook's own
/// event from a source's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin<'a> {
    /// A configured source's webhook.
    Source(&'a str),
    /// An operator, through `pagerhook incidents resolve`, the admin API or the console.
    Operator,
    /// pagerhook itself (pages about its own state).
    Pagerhook,
}

/// The inbound `source` of an operator's events.
pub const OPERATOR: &str = "@operator";
/// The inbound `source` of the events pagerhook originates.
pub const PAGERHOOK: &str = "@pagerhook";

impl<'a> Origin<'a> {
    /// The origin of an event whose inbound record names `source`.
    pub fn of(source: &'a str) -> Origin<'a> {
        match source {
            OPERATOR => Origin::Operator,
            PAGERHOOK => Origin::Pagerhook,
            s => Origin::Source(s),
        }
    }

    /// As the inbound record stores it.
    pub fn as_str(self) -> &'a str {
        match self {
            Origin::Source(s) => s,
            Origin::Operator => OPERATOR,
            Origin::Pagerhook => PAGERHOOK,
        }
    }
}

/// Where an incident stands, as far as pagerhook knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    Open,
    Acknowledged,
    Resolved,
}

impl IncidentState {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentState::Open => "open",
            IncidentState::Acknowledged => "acknowledged",
            IncidentState::Resolved => "resolved",
        }
    }

    fn parse(s: &str) -> Result<IncidentState, QueueError> {
        match s {
            "open" => Ok(IncidentState::Open),
            "acknowledged" => Ok(IncidentState::Acknowledged),
            "resolved" => Ok(IncidentState::Resolved),
            other => Err(QueueError::BadRow(format!("incident state {other:?}, which this build does not know"))),
        }
    }
}

/// One incident of the ledger. The routing key is shown only by its fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Incident {
    /// The dedup_key PagerDuty filed the trigger under.
    pub dedup_key: String,
    /// The routing key's short SHA-256 fingerprint.
    pub routing_key: String,
    /// The source whose trigger opened it.
    pub source: String,
    /// The mapping rule that made that trigger, if known.
    pub rule: Option<String>,
    pub opened_at: Millis,
    pub last_trigger_at: Millis,
    /// As PagerDuty holds them: the opening trigger's (PagerDuty keeps the first title).
    pub severity: Option<String>,
    pub summary: Option<String>,
    /// The last action PagerDuty accepted for it, when, and from whom (a source, or
    /// `@operator`).
    pub last_action: String,
    pub last_action_at: Millis,
    pub last_by: String,
    pub state: IncidentState,
}

/// Which incidents to list.
#[derive(Debug, Clone, Default)]
pub struct IncidentQuery {
    /// Only open and acknowledged ones.
    pub open: bool,
    pub source: Option<String>,
    /// Only those opened before this time.
    pub opened_before: Option<Millis>,
    pub limit: usize,
}

/// Open (or acknowledged) incidents of one source: `/metrics`' gauges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpenIncidents {
    pub source: String,
    pub open: u64,
    pub oldest_opened_at: Millis,
}

/// What an operator's resolve of one dedup_key did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum ResolveQueued {
    /// A resolve is queued for each open lane of the key (one per routing key).
    Queued { dedup_key: String, events: usize },
    /// The ledger holds no open incident under that dedup_key.
    NotOpen { dedup_key: String },
}

/// The columns [`Incident::read`] reads.
const INCIDENT_COLUMNS: &str = "routing_key, dedup_key, source, rule, opened_at, last_trigger_at, severity, summary, \
     last_action, last_action_at, last_by, state";

/// The first nine columns of [`INCIDENT_COLUMNS`].
type Head = (String, String, String, Option<String>, Millis, Millis, Option<String>, Option<String>, String);

impl Incident {
    pub(super) fn read(r: &impl Columns) -> Result<Incident, QueueError> {
        let (routing_key, dedup_key, source, rule, opened_at, last_trigger_at, severity, summary, last_action): Head =
            r.cols()?;
        let (last_action_at, last_by, state): (Millis, String, String) = (r.col(9)?, r.col(10)?, r.col(11)?);
        Ok(Incident {
            routing_key: fingerprint(routing_key),
            dedup_key,
            source,
            rule,
            opened_at,
            last_trigger_at,
            severity,
            summary,
            last_action,
            last_action_at,
            last_by,
            state: IncidentState::parse(&state)?,
        })
    }
}

/// A stored routing key's fingerprint (a damaged one is shown as such, not refused: the list
/// must still show the rest).
fn fingerprint(key: String) -> String {
    RoutingKey::parse(Secret::new(key)).map(|k| k.fingerprint()).unwrap_or_else(|_| "unreadable".into())
}

/// Incidents by `$1` open only, `$2` source (NULL: all), `$3` opened before (NULL: any time),
/// oldest first, at most `$4`.
pub(super) const LIST: &str = const_format::formatcp!(
    "SELECT {INCIDENT_COLUMNS} FROM incidents
     WHERE (NOT $1 OR state <> 'resolved') AND (CAST($2 AS TEXT) IS NULL OR source = $2)
       AND (CAST($3 AS BIGINT) IS NULL OR opened_at < $3)
     ORDER BY opened_at, dedup_key LIMIT $4"
);

/// Open incidents per source, and the oldest one's opening.
pub(super) const OPEN_BY_SOURCE: &str = "SELECT source, COUNT(*), MIN(opened_at) FROM incidents
     WHERE state <> 'resolved' GROUP BY source ORDER BY source";

/// The routing keys of the incidents open under dedup_key `$1`.
pub(super) const OPEN_LANES: &str =
    "SELECT routing_key FROM incidents WHERE dedup_key = $1 AND state <> 'resolved' ORDER BY routing_key";

/// The source that opened the unresolved incident of lane `$1` (routing key), `$2` (dedup_key).
pub(super) const OPENER: &str =
    "SELECT source FROM incidents WHERE routing_key = $1 AND dedup_key = $2 AND state <> 'resolved'";

/// Open (or acknowledged) incidents of source `$1` not re-triggered since `$2`, those silent
/// longest first, at most `$3`: what `resolve_when_silent` closes (routing key, dedup_key).
pub(super) const SILENT: &str = "SELECT routing_key, dedup_key FROM incidents
     WHERE source = $1 AND state <> 'resolved' AND last_trigger_at < $2
     ORDER BY last_trigger_at, dedup_key LIMIT $3";

/// Whether the incident of lane `$1` (routing key), `$2` (dedup_key) is still unresolved and
/// silent since `$3`: checked again under the lane's lock before pagerhook's resolve is queued.
pub(super) const STILL_SILENT: &str = "SELECT 1 FROM incidents
     WHERE routing_key = $1 AND dedup_key = $2 AND state <> 'resolved' AND last_trigger_at < $3";

/// One incident family (escalation, `lanes::escalate`): of dedup_key `$2` on routing key `$1`
/// and its escalation keys `$3`, `$4`, `$5`, those the ledger holds unresolved, with the
/// severity each holds; then the escalation keys whose lanes `$6`, `$7`, `$8` hold a pending
/// event (an escalated trigger not yet sent), severity NULL. The incidents' primary key and
/// the events' pending-lane index answer it.
pub(super) const FAMILY: &str = "SELECT dedup_key, severity FROM incidents
     WHERE routing_key = $1 AND dedup_key IN ($2, $3, $4, $5) AND state <> 'resolved'
     UNION ALL
     SELECT DISTINCT dedup_key, CAST(NULL AS TEXT) FROM events WHERE order_key IN ($6, $7, $8) AND state = 'pending'";

/// The latest event PagerDuty accepted in the lane of trigger `$1` after it: its action and
/// when (`DeadLetters::resolved_since`). Later events of a lane have larger ids, and a
/// trigger holds its lane until it dies, so each was sent after it died.
pub(super) const LATER_IN_LANE: &str = "SELECT r.action, r.done_at FROM events e
     JOIN events r ON r.order_key = e.order_key AND r.id > e.id AND r.state = 'delivered'
     WHERE e.id = $1 AND e.action = 'trigger' ORDER BY r.id DESC LIMIT 1";

/// `resolved_since`'s answer from [`LATER_IN_LANE`]'s row.
pub(super) fn resolved(latest: Option<(Option<String>, Option<Millis>)>) -> Option<Millis> {
    match latest {
        Some((Some(action), at)) if action == Action::Resolve.as_str() => at,
        _ => None,
    }
}

/// What retention forgets: incidents resolved before `$1`.
pub(super) const PRUNE: &str = "DELETE FROM incidents WHERE state = 'resolved' AND last_action_at < $1";

/// What pagerhook sent, as `finish` reads it back: routing key, action, body, the rule and
/// the inbound source (`$1`: the event's id; alert events only).
pub(super) const SENT: &str = "SELECT e.routing_key, e.action, e.format, e.body, e.rule, i.source
     FROM events e JOIN inbound i ON i.id = e.inbound_id WHERE e.id = $1 AND e.kind = 'alert'";

/// An event as [`SENT`] reads it.
pub(super) struct Sent {
    routing_key: String,
    action: Option<String>,
    body: StoredBody,
    rule: Option<String>,
    source: String,
}

impl Sent {
    pub(super) fn read(r: &impl Columns) -> Result<Sent, QueueError> {
        let (routing_key, action, format, text, rule, source) = r.cols()?;
        Ok(Sent { routing_key, action, body: StoredBody { format, text }, rule, source })
    }
}

/// A [`SENT`] row of event `id`, or `None`, logged: the attempt is recorded whether or not the
/// ledger can read the event (a damaged row, a format this build does not know).
pub(super) fn readable(id: i64, sent: Result<Sent, QueueError>) -> Option<Sent> {
    sent.inspect_err(
        |e| tracing::error!(event_id = id, error = %e, "delivered event unreadable: not in the incident ledger"),
    )
    .ok()
}

/// What one accepted event writes to the ledger.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Entry {
    /// Opens the incident (or reopens a resolved one: PagerDuty opens a new incident and keeps
    /// its new title); on an open or acknowledged one only moves its last trigger.
    Trigger {
        routing_key: String,
        dedup_key: String,
        source: String,
        rule: Option<String>,
        at: Millis,
        severity: Option<String>,
        summary: Option<String>,
    },
    /// An acknowledge or resolve of an incident the ledger holds unresolved; nothing for an
    /// incident it does not hold (pagerhook never triggered it).
    Close { action: Action, routing_key: String, dedup_key: String, at: Millis, by: String },
}

/// The upsert of a trigger: `$1` routing key, `$2` dedup_key, `$3` source, `$4` rule, `$5`
/// time, `$6` severity, `$7` summary. A resolved incident starts over; an open or
/// acknowledged one keeps its opener, title and state (a trigger does not unacknowledge).
const TRIGGER: &str = "INSERT INTO incidents (routing_key, dedup_key, source, rule, opened_at, last_trigger_at,
         severity, summary, last_action, last_action_at, last_by, state)
     VALUES ($1, $2, $3, $4, $5, $5, $6, $7, 'trigger', $5, $3, 'open')
     ON CONFLICT (routing_key, dedup_key) DO UPDATE SET
         source = CASE WHEN incidents.state = 'resolved' THEN excluded.source ELSE incidents.source END,
         rule = CASE WHEN incidents.state = 'resolved' THEN excluded.rule ELSE incidents.rule END,
         opened_at = CASE WHEN incidents.state = 'resolved' THEN excluded.opened_at ELSE incidents.opened_at END,
         severity = CASE WHEN incidents.state = 'resolved' THEN excluded.severity ELSE incidents.severity END,
         summary = CASE WHEN incidents.state = 'resolved' THEN excluded.summary ELSE incidents.summary END,
         state = CASE WHEN incidents.state = 'resolved' THEN 'open' ELSE incidents.state END,
         last_trigger_at = excluded.last_trigger_at, last_action = 'trigger',
         last_action_at = excluded.last_action_at, last_by = excluded.last_by";

/// An acknowledge (`$1` time, `$2` by whom, `$3` routing key, `$4` dedup_key).
const ACKNOWLEDGE: &str = "UPDATE incidents SET state = 'acknowledged', last_action = 'acknowledge',
         last_action_at = $1, last_by = $2
     WHERE routing_key = $3 AND dedup_key = $4 AND state <> 'resolved'";

/// A resolve, with the parameters of [`ACKNOWLEDGE`].
const RESOLVE: &str =
    "UPDATE incidents SET state = 'resolved', last_action = 'resolve', last_action_at = $1, last_by = $2
     WHERE routing_key = $3 AND dedup_key = $4 AND state <> 'resolved'";

impl Entry {
    /// What a finished attempt writes: only an event PagerDuty accepted (`Delivered` with the
    /// dedup_key of its 202), keyed on that dedup_key. `None` for anything else, and for a
    /// stored body that cannot be read (the attempt is recorded all the same).
    pub(super) fn of(sent: Sent, attempt: &Attempt, finish: &Finish) -> Option<Entry> {
        let (Finish::Delivered, Some(dedup_key)) = (finish, attempt.dedup_key.clone()) else { return None };
        let Sent { routing_key, action, body, rule, source } = sent;
        let at = attempt.at;
        match Action::parse(action.as_deref()?).ok()? {
            Action::Trigger => {
                let text = body.text(0).ok()?;
                let (severity, summary) = title(&text);
                Some(Entry::Trigger { routing_key, dedup_key, source, rule, at, severity, summary })
            }
            action => Some(Entry::Close { action, routing_key, dedup_key, at, by: source }),
        }
    }

    /// The statement that writes it.
    pub(super) fn statement(&self) -> &'static str {
        match self {
            Entry::Trigger { .. } => TRIGGER,
            Entry::Close { action: Action::Acknowledge, .. } => ACKNOWLEDGE,
            Entry::Close { .. } => RESOLVE,
        }
    }
}

/// A trigger body's severity and summary.
fn title(text: &str) -> (Option<String>, Option<String>) {
    #[derive(serde::Deserialize)]
    struct Body {
        payload: Option<Payload>,
    }
    #[derive(serde::Deserialize)]
    struct Payload {
        severity: Option<String>,
        summary: Option<String>,
    }
    match serde_json::from_str::<Body>(text) {
        Ok(Body { payload: Some(p) }) => (p.severity, p.summary),
        _ => (None, None),
    }
}

/// An operator's resolve of `dedup_key` on `key` (`None` only for a dedup_key PagerDuty could
/// not take, which the ledger never holds: it holds what PagerDuty answered).
pub(super) fn operator_resolve(key: RoutingKey, dedup_key: &str) -> Option<Event> {
    let draft = AlertDraft {
        action: Action::Resolve.as_str().into(),
        dedup_key: Some(dedup_key.into()),
        ..AlertDraft::default()
    };
    Event::alert(key, draft).ok()
}

/// pagerhook's resolve of `dedup_key` on `key` for `source`, silent since `before`
/// (`resolve_when_silent`): the event, and the inbound record's body that says why (PagerDuty
/// keeps no text with a resolve, so the reason lives with pagerhook's record of it).
pub(super) fn silence_resolve(
    key: RoutingKey,
    dedup_key: &str,
    source: &str,
    silent: std::time::Duration,
) -> Option<(Event, String)> {
    let event = operator_resolve(key, dedup_key)?;
    let why = format!(
        "resolved by pagerhook: source '{source}' did not re-trigger it for {} (resolve_when_silent)",
        humantime::format_duration(silent)
    );
    let body = serde_json::json!({ "resolve": dedup_key, "by": "pagerhook", "source": source, "why": why });
    Some((event, body.to_string()))
}

/// A stored routing key, as [`super::Incidents::open_lanes`] hands it out.
pub(super) fn routing_key(stored: String) -> Result<RoutingKey, QueueError> {
    RoutingKey::parse(Secret::new(stored)).map_err(|e| QueueError::BadRow(format!("incident's routing key: {e}")))
}

/// Reads the `(source, open, oldest)` rows of [`OPEN_BY_SOURCE`].
pub(super) fn read_open(r: &impl Columns) -> Result<OpenIncidents, QueueError> {
    let (source, open, oldest): (String, i64, Millis) = r.cols()?;
    Ok(OpenIncidents { source, open: open.max(0) as u64, oldest_opened_at: oldest })
}

#[cfg(test)]
mod tests;
