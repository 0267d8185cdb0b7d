//! The schema SQL that is the same in both dialects: the version record, and the migration
//! steps both backends took alike. Dialect-specific steps (types, identity columns, `INSERT OR
//! IGNORE` against `DISTINCT ON`) stay in each backend's `MIGRATIONS`.

/// The table holding `schema_version`.
pub(super) const META: &str = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)";

/// The recorded schema version, if any.
pub(super) const READ_VERSION: &str = "SELECT value FROM meta WHERE key = 'schema_version'";

/// Records `$1` as the schema version (SQLite binds `$1` as the first parameter too).
pub(super) const WRITE_VERSION: &str = "INSERT INTO meta (key, value) VALUES ('schema_version', $1)
     ON CONFLICT (key) DO UPDATE SET value = excluded.value";

/// The dedup_key PagerDuty's 202 answered with, per attempt.
pub(super) const ATTEMPTS_DEDUP_KEY: &str = "ALTER TABLE attempts ADD COLUMN dedup_key TEXT;";

/// Payloads kept as `too_many_events` dead letters, listed like mapping failures.
pub(super) const INBOUND_TOO_MANY: &str =
    "CREATE INDEX inbound_too_many ON inbound (received_at) WHERE status = 'too_many_events';";

/// Payloads no rule matched, kept (`unmatched = "keep"`) as dead letters, listed like
/// mapping failures.
pub(super) const INBOUND_UNMATCHED: &str =
    "CREATE INDEX inbound_unmatched ON inbound (received_at) WHERE status = 'unmatched';";

/// Sticky routes per source: one source's resolve must never follow another's trigger.
/// Existing routes keep the source of a trigger still stored; the rest are dropped (their
/// resolves go to their own key, as before sticky routing). Each backend supplies the new
/// table (its types) and the copy (its way to keep one row per key); this swaps them in.
pub(super) const ROUTES_BY_SOURCE_SWAP: &str = "DROP TABLE routes;
ALTER TABLE routes_by_source RENAME TO routes;";

/// The SHA-256 of each GitHub body seen, per source: a captured delivery sent again under a
/// new `X-GitHub-Delivery` (which GitHub does not sign) is a duplicate. Kept, like `seen`, for
/// `storage.retention`.
pub(super) const SEEN_BODIES: &str = "CREATE TABLE seen_bodies (
    source      TEXT NOT NULL,
    body_sha256 TEXT NOT NULL,
    inbound_id  TEXT NOT NULL,
    seen_at     BIGINT NOT NULL,
    PRIMARY KEY (source, body_sha256)
);";

/// The incident ledger (`ledger.rs`): one row per `(routing_key, dedup_key)` pagerhook
/// triggered and PagerDuty accepted, kept until resolved plus `storage.retention`; and the
/// rule that made each event, which the ledger names as the opener's.
pub(super) const INCIDENTS: &str = "ALTER TABLE events ADD COLUMN rule TEXT;
CREATE TABLE incidents (
    routing_key     TEXT NOT NULL,
    dedup_key       TEXT NOT NULL,
    source          TEXT NOT NULL,
    rule            TEXT,
    opened_at       BIGINT NOT NULL,
    last_trigger_at BIGINT NOT NULL,
    severity        TEXT,
    summary         TEXT,
    last_action     TEXT NOT NULL,
    last_action_at  BIGINT NOT NULL,
    last_by         TEXT NOT NULL,
    state           TEXT NOT NULL,
    PRIMARY KEY (routing_key, dedup_key)
);
CREATE INDEX incidents_open ON incidents (opened_at) WHERE state <> 'resolved';
CREATE INDEX incidents_resolved ON incidents (last_action_at) WHERE state = 'resolved';
CREATE INDEX incidents_dedup_key ON incidents (dedup_key);";

/// pagerhook's own incidents that are open, one per source and reason (`event::own::Reason`),
/// with the routing key they went to: their resolve goes there.
pub(super) const OWN_PAGES: &str = "CREATE TABLE own_pages (
    source      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    at          BIGINT NOT NULL,
    PRIMARY KEY (source, reason)
);";

/// The items of a payload that failed to map on their own (`items_failed`, JSON), and an index
/// to list those payloads like the other dead letters.
pub(super) const INBOUND_ITEMS_FAILED: &str = "ALTER TABLE inbound ADD COLUMN failed_items TEXT;
CREATE INDEX inbound_items_failed ON inbound (received_at) WHERE status = 'items_failed';";

/// A migration step that failed, as the error that names it.
pub(super) fn step_failed(to: usize, e: super::QueueError) -> super::QueueError {
    super::QueueError::Migration { to, detail: e.to_string() }
}

/// The event's summary, as its own column: the delivery list shows it and searches it
/// (`deliveries list`, the console). Events queued before this migration have none.
pub(super) const EVENTS_SUMMARY: &str = "ALTER TABLE events ADD COLUMN summary TEXT;";

/// The highest `sequence` applied per lane (`lanes::fate`): an event older than it is stale.
/// Kept for `storage.retention` after the lane's last applied value.
pub(super) const LANE_SEQUENCES: &str = "CREATE TABLE lane_sequences (
    lane  TEXT PRIMARY KEY,
    kind  TEXT NOT NULL,
    value BIGINT NOT NULL,
    at    BIGINT NOT NULL
);
CREATE INDEX lane_sequences_at ON lane_sequences (at);";

/// Storms (both backends): each pending event's priority among its routing key's
/// (`Event::priority`; one already queued gets its action's, a trigger `error`'s, PagerDuty's
/// default, since its severity sits in its body), the index a claim picks a key's best by, the
/// lanes' history for supersede, and fair share's memory of the sources served per key.
pub(super) const STORMS: &str = "ALTER TABLE events ADD COLUMN priority INTEGER NOT NULL DEFAULT 2;
UPDATE events SET priority = CASE WHEN action IN ('acknowledge', 'resolve') THEN 0 WHEN kind = 'change' THEN 5 ELSE 2 END
    WHERE state = 'pending';
CREATE INDEX events_key_pending ON events (routing_key, priority, id) WHERE state = 'pending';
CREATE INDEX events_lane_history ON events (order_key, id);
CREATE TABLE pace_sources (
    key_sha256 TEXT NOT NULL,
    source     TEXT NOT NULL,
    served_at  BIGINT NOT NULL,
    PRIMARY KEY (key_sha256, source)
);";
