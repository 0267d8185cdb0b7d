//! Statements that are the same text in both dialects, so they are written once. Parameters
//! are `$n`, each first written in ascending order: SQLite numbers a `$n` by where it first
//! appears, PostgreSQL by its number, and the two agree only then (`tests` checks it). Event
//! states come from [`EventState`](super::EventState), built in at compile time.

use super::state::{COLLAPSED, DAMPED, DEAD, DELIVERED, DRY_RUN, PENDING, PRUNABLE, SUPERSEDED};
use const_format::formatcp;

/// The columns `rows::StoredEvent::read` reads (`$1`: the claim's `now`).
pub(super) const ROW_COLUMNS: &str = "e.id, e.kind, e.order_key, e.routing_key, e.action, e.format, e.body, \
     e.attempts, e.created_at, e.inbound_id, e.next_at <= $1 AND e.lease_until <= $1";

/// The pending event after `$3` in lane `$2`, as a claim at `$1` reads it.
pub(super) const NEXT_IN_LANE: &str = formatcp!(
    "SELECT {ROW_COLUMNS} FROM events e WHERE e.state = '{PENDING}' AND e.order_key = $2 AND e.id > $3
     ORDER BY e.id LIMIT 1"
);

/// Whether lane `$1` has an event waiting (`events_lane`'s index answers it).
pub(super) const LANE_WAITING: &str =
    formatcp!("SELECT 1 FROM events WHERE order_key = $1 AND state = '{PENDING}' LIMIT 1");

/// Event `$3` is collapsed at `$1`, for reason `$2`.
pub(super) const COLLAPSE: &str =
    formatcp!("UPDATE events SET state = '{COLLAPSED}', lease_until = 0, done_at = $1, last_error = $2 WHERE id = $3");

/// Event `$2` is leased until `$1`.
pub(super) const LEASE: &str = "UPDATE events SET lease_until = $1 WHERE id = $2";

/// A new pending event: inbound id, kind, order key, routing key, action, dedup_key, body, its
/// format, the time it is queued, the rule that made it, its summary, when it is due (flap
/// damping holds a resolve), and its priority (`Event::priority`).
pub(super) const INSERT_EVENT: &str =
    "INSERT INTO events (inbound_id, kind, order_key, routing_key, action, dedup_key, body, format, created_at, rule, summary, next_at, priority)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";

/// The routing keys (as stored) with pending events due and unleased at `$1`: what a claim
/// looks at, key by key.
pub(super) const DUE_KEYS: &str = formatcp!(
    "SELECT DISTINCT routing_key FROM events WHERE state = '{PENDING}' AND next_at <= $1 AND lease_until <= $1"
);

/// A claim's candidates of one routing key (`lanes::Claims::candidates`), as
/// `{CANDIDATES} AND <the backend's lane condition> {CANDIDATES_ORDER}`: `$1` now, `$2` the
/// key's SHA-256, `$3` the key, `$4` how many.
pub(super) const CANDIDATES: &str = formatcp!(
    "SELECT {ROW_COLUMNS}, COALESCE(i.source, '') FROM events e LEFT JOIN inbound i ON i.id = e.inbound_id
     LEFT JOIN pace_sources s ON s.key_sha256 = $2 AND s.source = i.source
     WHERE e.state = '{PENDING}' AND e.routing_key = $3 AND e.next_at <= $1 AND e.lease_until <= $1"
);

/// Best first: pagerhook's own events ([`OWN_FIRST`]: a storm page must not wait behind the
/// storm it is about), then priority, then each source's turn within it (its 1st, 2nd… due
/// head), the source served longest ago first, then age. So a flood from one source delays
/// another's page of the same priority by one slot per source, not by the flood.
pub(super) const CANDIDATES_ORDER: &str = formatcp!(
    "ORDER BY CASE WHEN {OWN_FIRST} THEN 0 ELSE 1 END, e.priority,
     ROW_NUMBER() OVER (PARTITION BY e.priority, COALESCE(i.source, '') ORDER BY e.id), COALESCE(s.served_at, 0), e.id
     LIMIT $4"
);

/// Source `$2` was served on the routing key of SHA-256 `$1` at `$3`: fair share's memory.
/// Later than any source of the key was served before, by a millisecond if need be, so that
/// two sources served in one millisecond are still told apart.
pub(super) const SERVED: &str = "INSERT INTO pace_sources (key_sha256, source, served_at)
     SELECT $1, $2, CASE WHEN $3 > m THEN $3 ELSE m + 1 END
     FROM (SELECT COALESCE(MAX(served_at), 0) AS m FROM pace_sources WHERE key_sha256 = $1) latest WHERE true
     ON CONFLICT (key_sha256, source) DO UPDATE SET served_at = excluded.served_at";

/// The first pending resolve of lane `$1` after event `$2`: supersede's candidate.
pub(super) const NEXT_RESOLVE: &str = formatcp!(
    "SELECT id FROM events WHERE order_key = $1 AND state = '{PENDING}' AND id > $2 AND action = 'resolve'
     ORDER BY id LIMIT 1"
);

/// Whether PagerDuty may hold lane `$1` open, as of its head `$2`: an event of the lane up to
/// the head was attempted (an attempt that timed out or got a 5xx may have reached PagerDuty)
/// after the lane's last resolve PagerDuty accepted, or the ledger holds the lane unresolved.
pub(super) const LANE_MAY_BE_OPEN: &str = formatcp!(
    "SELECT EXISTS (
         SELECT 1 FROM events l WHERE l.order_key = $1 AND l.id <= $2
         AND EXISTS (SELECT 1 FROM attempts a WHERE a.event_id = l.id)
         AND l.id > COALESCE((SELECT MAX(r.id) FROM events r WHERE r.order_key = $1 AND r.id < $2
             AND r.action = 'resolve' AND r.state IN ('{DELIVERED}', '{DRY_RUN}')), 0)
     ) OR EXISTS (
         SELECT 1 FROM events h JOIN incidents n ON n.routing_key = h.routing_key AND n.dedup_key = h.dedup_key
         WHERE h.id = $2 AND n.state <> 'resolved'
     )"
);

/// Supersedes at `$1`, for reason `$2`, the pending events of lane `$3` from `$4` to `$5`.
pub(super) const SUPERSEDE: &str = formatcp!(
    "UPDATE events SET state = '{SUPERSEDED}', lease_until = 0, done_at = $1, last_error = $2
     WHERE order_key = $3 AND state = '{PENDING}' AND id >= $4 AND id <= $5 RETURNING id"
);

/// An event finished as it arrives (`lanes::Fate::Done`: refused by "only the opener
/// closes", or damped): the parameters of [`INSERT_EVENT`] up to the summary, then its state
/// `$12` and why `$13`.
pub(super) const INSERT_FINISHED: &str =
    "INSERT INTO events (inbound_id, kind, order_key, routing_key, action, dedup_key, body, format, created_at, rule, summary,
         state, last_error, next_at, done_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $9, $9)";

/// The latest resolve of lane `$1` still held back at `$2` (never attempted, not yet due):
/// flap damping's candidate.
pub(super) const DELAYED_RESOLVE: &str = formatcp!(
    "SELECT id FROM events WHERE order_key = $1 AND state = '{PENDING}' AND action = 'resolve' AND attempts = 0
         AND next_at > $2 ORDER BY id DESC LIMIT 1"
);

/// Pending event `$3` is damped at `$1`, for reason `$2`.
pub(super) const DAMP: &str = formatcp!(
    "UPDATE events SET state = '{DAMPED}', done_at = $1, last_error = $2 WHERE id = $3 AND state = '{PENDING}'"
);

/// The highest `sequence` lane `$1` applied: its kind and value.
pub(super) const LANE_SEQUENCE: &str = "SELECT kind, value FROM lane_sequences WHERE lane = $1";

/// Lane `$1` applied `sequence` `$2` (kind), `$3` (value) at `$4` (`lanes::fate` decided it
/// is not older than the one stored).
pub(super) const APPLY_SEQUENCE: &str = "INSERT INTO lane_sequences (lane, kind, value, at) VALUES ($1, $2, $3, $4)
     ON CONFLICT (lane) DO UPDATE SET kind = excluded.kind, value = excluded.value, at = excluded.at";

/// Source `$1` triggered dedup_key `$2` on routing key `$3` at `$4`.
pub(super) const RECORD_ROUTE: &str = "INSERT INTO routes (source, dedup_key, routing_key, at) VALUES ($1, $2, $3, $4)
     ON CONFLICT (source, dedup_key, routing_key) DO UPDATE SET at = excluded.at";

/// An attempt at event `$1`: its time, HTTP status, detail and the dedup_key PagerDuty answered.
pub(super) const RECORD_ATTEMPT: &str =
    "INSERT INTO attempts (event_id, at, status, detail, dedup_key) VALUES ($1, $2, $3, $4, $5)";

/// An attempt's `lanes::Outcome` for event `$6`, written only while the claim's lease `$7` holds.
pub(super) const FINISH: &str = "UPDATE events SET state = $1, attempts = attempts + 1, lease_until = 0,
     done_at = $2, next_at = COALESCE($3, next_at), last_error = CASE WHEN $4 THEN $5 ELSE last_error END
     WHERE id = $6 AND lease_until = $7";

/// Extends event `$3`'s lease from `$2` to `$1`, if it still holds it.
pub(super) const RENEW: &str =
    formatcp!("UPDATE events SET lease_until = $1 WHERE id = $2 AND lease_until = $3 AND state = '{PENDING}'");

/// Pending events and the oldest one's creation time.
pub(super) const DEPTH: &str = formatcp!("SELECT COUNT(*), MIN(created_at) FROM events WHERE state = '{PENDING}'");

/// The stored statuses of a kept payload that is a dead letter
/// ([`InboundStatus::is_dead_letter`](super::InboundStatus::is_dead_letter)), as an SQL list:
/// every statement that lists, deletes, replays or prunes dead payloads uses this one.
pub(super) const DEAD_INBOUND: &str = "'mapping_failed', 'too_many_events', 'unmatched', 'items_failed'";

/// What retention deletes from the tables both backends have, everything before `$1`: events
/// done (not dead ones: they stay until replayed or deleted) with their attempts, payloads no
/// event or dead letter needs, delivery ids, bodies seen (GitHub replays), sticky routes,
/// incidents resolved, the sequences of lanes not heard from since.
pub(super) const PRUNE: [&str; 8] = [
    formatcp!(
        "DELETE FROM attempts WHERE event_id IN (SELECT id FROM events WHERE state IN ({PRUNABLE}) AND done_at < $1)"
    ),
    formatcp!("DELETE FROM events WHERE state IN ({PRUNABLE}) AND done_at < $1"),
    formatcp!(
        "DELETE FROM inbound WHERE received_at < $1 AND status NOT IN ({DEAD_INBOUND})
         AND NOT EXISTS (SELECT 1 FROM events e WHERE e.inbound_id = inbound.id)"
    ),
    "DELETE FROM seen WHERE seen_at < $1",
    "DELETE FROM seen_bodies WHERE seen_at < $1",
    "DELETE FROM routes WHERE at < $1",
    super::ledger::PRUNE,
    "DELETE FROM lane_sequences WHERE at < $1",
];

/// What retention forgets of pacing, before `$1` (not counted as pruned rows): idle routing
/// keys' pace (once closed by no 429) and the sources no longer served.
pub(super) const PRUNE_PACE: [&str; 2] =
    ["DELETE FROM pace WHERE at < $1 AND closed_until < $1", "DELETE FROM pace_sources WHERE served_at < $1"];

/// What pruning under pressure deletes (`Capacity::make_room`): of [`PRUNE`], finished events
/// with their attempts and the payloads nothing needs, before `$1`. Delivery ids, bodies seen
/// and sticky routes stay: they are small, and they keep duplicates out and resolves on their
/// trigger's key.
pub(super) const PRUNE_FINISHED: [&str; 3] = [PRUNE[0], PRUNE[1], PRUNE[2]];

/// When the finished event after the `$1` oldest finished (no row: there are no more): pruning
/// up to it deletes the `$1 + 1` oldest (and any finished in the same millisecond).
pub(super) const PRUNE_CUTOFF: &str =
    formatcp!("SELECT done_at FROM events WHERE state IN ({PRUNABLE}) ORDER BY done_at LIMIT 1 OFFSET $1");

/// Forgets dead event `$1`: its attempts, then the event.
pub(super) const DELETE_DEAD_EVENT: [&str; 2] = [
    formatcp!(
        "DELETE FROM attempts WHERE event_id = $1 AND EXISTS (SELECT 1 FROM events WHERE id = $1 AND state = '{DEAD}')"
    ),
    formatcp!("DELETE FROM events WHERE id = $1 AND state = '{DEAD}'"),
];

/// Forgets payload `$1`, kept because its mapping failed.
pub(super) const DELETE_DEAD_INBOUND: &str =
    formatcp!("DELETE FROM inbound WHERE id = $1 AND status IN ({DEAD_INBOUND})");

/// Every kind of dead letter as one relation; `$1` filters by source (NULL: all).
pub(super) const DEAD_LETTERS: &str = formatcp!(
    "SELECT CAST(e.id AS TEXT) AS id, 'event' AS kind, i.source, e.inbound_id, e.done_at AS at,
            COALESCE(e.last_error, '') AS reason, e.action, e.dedup_key, e.attempts
     FROM events e JOIN inbound i ON i.id = e.inbound_id
     WHERE e.state = '{DEAD}' AND (CAST($1 AS TEXT) IS NULL OR i.source = $1)
     UNION ALL
     SELECT i.id, 'mapping_failed', i.source, i.id, i.received_at, COALESCE(i.error, ''), NULL, NULL, 0
     FROM inbound i
     WHERE i.status = 'mapping_failed' AND (CAST($1 AS TEXT) IS NULL OR i.source = $1)
     UNION ALL
     SELECT i.id, 'too_many_events', i.source, i.id, i.received_at, COALESCE(i.error, ''), NULL, NULL, 0
     FROM inbound i
     WHERE i.status = 'too_many_events' AND (CAST($1 AS TEXT) IS NULL OR i.source = $1)
     UNION ALL
     SELECT i.id, 'unmatched', i.source, i.id, i.received_at, COALESCE(i.error, ''), NULL, NULL, 0
     FROM inbound i
     WHERE i.status = 'unmatched' AND (CAST($1 AS TEXT) IS NULL OR i.source = $1)
     UNION ALL
     SELECT i.id, 'items_failed', i.source, i.id, i.received_at, COALESCE(i.error, ''), NULL, NULL, 0
     FROM inbound i
     WHERE i.status = 'items_failed' AND (CAST($1 AS TEXT) IS NULL OR i.source = $1)"
);

/// The dead letters of source `$1` (NULL: all), newest first, at most `$2`.
pub(super) const LIST_DEAD_LETTERS: &str = formatcp!("SELECT * FROM ({DEAD_LETTERS}) d ORDER BY at DESC LIMIT $2");

/// Dead letter `$2` (`$1` is NULL).
pub(super) const ONE_DEAD_LETTER: &str = formatcp!("SELECT * FROM ({DEAD_LETTERS}) d WHERE id = $2");

/// What makes an accept a duplicate: its body seen before (GitHub), or its delivery id.
#[derive(Debug, Clone, Copy)]
pub(super) enum Seen {
    Body,
    Delivery,
}

impl Seen {
    /// Records `$2` of source `$1` for inbound `$3` at `$4`; no row if it was there.
    pub(super) const fn record(self) -> &'static str {
        match self {
            Seen::Body => {
                "INSERT INTO seen_bodies (source, body_sha256, inbound_id, seen_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING"
            }
            Seen::Delivery => {
                "INSERT INTO seen (source, dedupe_id, inbound_id, seen_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING"
            }
        }
    }

    /// The inbound id that recorded `$2` of source `$1` first.
    pub(super) const fn first(self) -> &'static str {
        match self {
            Seen::Body => "SELECT inbound_id FROM seen_bodies WHERE source = $1 AND body_sha256 = $2",
            Seen::Delivery => "SELECT inbound_id FROM seen WHERE source = $1 AND dedupe_id = $2",
        }
    }
}

/// Forgets the body recorded for inbound `$2` of source `$1`: its accept turned out a
/// duplicate by its delivery id, so the body belongs to nothing.
pub(super) const FORGET_SEEN_BODY: &str = "DELETE FROM seen_bodies WHERE source = $1 AND inbound_id = $2";

/// Dead letters of source `$1` kept with inbound status `$2` (`own_pages`' reasons are named
/// as those statuses).
/// A payload some of whose items failed counts as a mapping failure.
pub(super) const OWN_WAITING_INBOUND: &str = "SELECT COUNT(*) FROM inbound WHERE source = $1
     AND (status = $2 OR ($2 = 'mapping_failed' AND status = 'items_failed'))";

/// Dead triggers of source `$1`, pagerhook's own excepted.
pub(super) const OWN_WAITING_TRIGGERS: &str = formatcp!(
    "SELECT COUNT(*) FROM events e JOIN inbound i ON i.id = e.inbound_id
     WHERE i.source = $1 AND e.state = '{DEAD}' AND e.action = 'trigger' AND i.status <> 'own'"
);

/// The record `$1` (an own page's dedup_key) of source `$2` that pagerhook's own events hang
/// from, made or touched at `$3`; `$4` is its (empty) body.
pub(super) const OWN_RECORD: &str = "INSERT INTO inbound (id, source, received_at, headers, query, body, status)
     VALUES ($1, $2, $3, '{}', '', $4, 'own') ON CONFLICT (id) DO UPDATE SET received_at = excluded.received_at";

/// Source `$1`'s incident for reason `$2` is open on routing key `$3` since `$4`.
pub(super) const OWN_OPEN: &str = "INSERT INTO own_pages (source, reason, routing_key, at) VALUES ($1, $2, $3, $4)
     ON CONFLICT (source, reason) DO UPDATE SET routing_key = excluded.routing_key, at = excluded.at";

/// Source `$1`'s incident for reason `$2` is resolved.
pub(super) const OWN_CLOSE: &str = "DELETE FROM own_pages WHERE source = $1 AND reason = $2";

/// Every open incident of pagerhook's own.
pub(super) const OWN_OPENED: &str = "SELECT source, reason, routing_key FROM own_pages ORDER BY source, reason";

/// The source and routing key of event `$1` if it is a dead trigger that is not pagerhook's own.
pub(super) const OWN_DEAD_TRIGGER: &str = formatcp!(
    "SELECT i.source, e.routing_key FROM events e JOIN inbound i ON i.id = e.inbound_id
     WHERE e.id = $1 AND e.state = '{DEAD}' AND e.action = 'trigger' AND i.status <> 'own'"
);

/// pagerhook's own events, as a condition on `events e`: the marker a claim prefers so that
/// an own page takes its routing key's first slot (a storm page must not wait behind the
/// storm it is about), and what the storm gauge leaves out (a meta-event never causes
/// another). Own events are few: one incident per subject and reason.
pub(super) const OWN_FIRST: &str = "COALESCE(e.rule, '') = '@pagerhook'";

/// Pending events per routing key and source, pagerhook's own excepted, with the oldest's
/// queueing time: the storm gauge (`Conditions::backlog`).
pub(super) const BACKLOG: &str = formatcp!(
    "SELECT e.routing_key, i.source, COUNT(*), MIN(e.created_at) FROM events e JOIN inbound i ON i.id = e.inbound_id
     WHERE e.state = '{PENDING}' AND NOT ({OWN_FIRST})
     GROUP BY e.routing_key, i.source ORDER BY e.routing_key, i.source"
);

/// Event `$1`'s stored body.
pub(super) const STORED_BODY: &str = "SELECT format, body FROM events WHERE id = $1";

#[cfg(test)]
mod tests;
