//! The PostgreSQL queue: one store shared by any number of replicas.
//!
//! Each operation is one transaction on a pooled connection; PostgreSQL batches WAL flushes of
//! concurrent commits itself, so the group commit of the SQLite backend has no counterpart.
//!
//! Ordering across replicas rests on two per-lane advisory locks (a lane is an `order_key`):
//!
//! - **insert order** (`Lock::Insert`): every transaction that adds events takes its lanes'
//!   locks, in one global order, before the rows get their ids. Ids come from a sequence at
//!   insert time, so without it a transaction could take a smaller id and commit after a larger
//!   one of the same lane had been claimed: the later event would have overtaken it. With it,
//!   ids within a lane follow commit order, and a committed lane head is the real head.
//! - **claim**: a claim takes each routing key's pace row `FOR UPDATE SKIP LOCKED` before it
//!   reads that key's candidates (in a fresh snapshot: READ COMMITTED takes one per
//!   statement), so of two concurrent claims only one examines a key's lanes, and it sees what
//!   the other committed; the other skips the key. The same lock makes the key's pace one
//!   budget for all replicas.
//!
//! A head is handed out only if no other pending event of its lane is earlier or leased.
//! Leases expire: a dead replica's events become claimable again; nothing releases them early.

use super::lanes::{self, Candidate, Claims, Closing, Fate, Outcome, Routes};
use super::ledger::{self, Entry};
use super::own_pages::{self, OwnSteps};
use super::room::{Freed, Gate, RoomReading};
use super::rows::{
    failed_items_column, status_columns, Columns, Stored, StoredBody, StoredEvent, StoredRequest, EVENT_FORMAT,
};
use super::schema::{self, step_failed};
use super::sql::{self, Seen, DEAD_INBOUND};
use super::state::{DEAD, PENDING, REPLAYED};
use super::tls;
use super::{
    applied_migrations, tally_dropped, Accepted, Attempt, Batch, Capacity, DeadDropped, DeadId, DeadLetter,
    DeadLetterDetail, DeadLetters, DeadToDrop, Deliveries, EventDetail, EventQuery, EventRow, EventState, Finish,
    InboundStatus, Incident, IncidentQuery, Incidents, Inspect, Intake, Millis, NewInbound, OpenIncidents, PaceRule,
    PaceState, Pick, QueueError, Retention, StoredInbound,
};
use crate::event::own::{self, Reason};
use crate::event::{Action, Event, RoutingKey, Sequence};
use crate::secret::Secret;
use async_trait::async_trait;
use const_format::formatcp;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Transaction};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::{Row, Statement};

pub(super) mod search;

/// Schema changes in order: `MIGRATIONS[n]` takes a schema from version `n` to `n + 1`, its
/// statements run in order, in the transaction that records the new version.
pub(super) const MIGRATIONS: &[&[&str]] = &[
    &[r#"
CREATE TABLE inbound (
    id          TEXT PRIMARY KEY,
    source      TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    dedupe_id   TEXT,
    headers     TEXT NOT NULL,
    query       TEXT NOT NULL,
    body        BYTEA NOT NULL,
    status      TEXT NOT NULL,
    error       TEXT
);
CREATE INDEX inbound_failed ON inbound (received_at) WHERE status = 'mapping_failed';
CREATE TABLE seen (
    source     TEXT NOT NULL,
    dedupe_id  TEXT NOT NULL,
    inbound_id TEXT NOT NULL,
    seen_at    BIGINT NOT NULL,
    PRIMARY KEY (source, dedupe_id)
);
CREATE TABLE events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    inbound_id  TEXT NOT NULL,
    kind        TEXT NOT NULL,
    order_key   TEXT,
    routing_key TEXT NOT NULL,
    action      TEXT,
    dedup_key   TEXT,
    body        TEXT NOT NULL,
    format      INTEGER NOT NULL,
    state       TEXT NOT NULL DEFAULT 'pending',
    attempts    INTEGER NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL,
    next_at     BIGINT NOT NULL,
    lease_until BIGINT NOT NULL DEFAULT 0,
    last_error  TEXT,
    done_at     BIGINT
);
CREATE INDEX events_pending ON events (id) WHERE state = 'pending';
CREATE INDEX events_lane ON events (order_key, id) WHERE state = 'pending';
CREATE INDEX events_dead ON events (done_at) WHERE state = 'dead';
CREATE INDEX events_inbound ON events (inbound_id);
CREATE TABLE attempts (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id BIGINT NOT NULL,
    at       BIGINT NOT NULL,
    status   INTEGER,
    detail   TEXT
);
CREATE INDEX attempts_event ON attempts (event_id);
CREATE TABLE routes (
    dedup_key   TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    at          BIGINT NOT NULL,
    seq         BIGINT GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (dedup_key, routing_key)
);
"#],
    &[schema::ATTEMPTS_DEDUP_KEY],
    &[
        r#"
CREATE TABLE routes_by_source (
    source      TEXT NOT NULL,
    dedup_key   TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    at          BIGINT NOT NULL,
    seq         BIGINT GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (source, dedup_key, routing_key)
);
INSERT INTO routes_by_source (source, dedup_key, routing_key, at)
SELECT DISTINCT ON (i.source, r.dedup_key, r.routing_key) i.source, r.dedup_key, r.routing_key, r.at FROM routes r
JOIN events e ON e.dedup_key = r.dedup_key AND e.routing_key = r.routing_key AND e.action = 'trigger'
JOIN inbound i ON i.id = e.inbound_id
ORDER BY i.source, r.dedup_key, r.routing_key;
"#,
        schema::ROUTES_BY_SOURCE_SWAP,
    ],
    &[schema::INBOUND_TOO_MANY],
    // `next_due` by index: every replica's worker asks after every round.
    &["CREATE INDEX events_due ON events ((GREATEST(next_at, lease_until))) WHERE state = 'pending';"],
    // Pacing shared by replicas: one row per routing key (named by its SHA-256, never the key),
    // and the slots promised to lanes whose events were deferred till then.
    &[r#"
CREATE TABLE pace (
    key_sha256   TEXT PRIMARY KEY,
    tat          DOUBLE PRECISION NOT NULL,
    closed_until BIGINT NOT NULL,
    log          BIGINT[] NOT NULL,
    at           BIGINT NOT NULL
);
CREATE TABLE pace_lanes (
    lane       TEXT PRIMARY KEY,
    key_sha256 TEXT NOT NULL,
    slot       BIGINT NOT NULL
);
CREATE INDEX pace_lanes_key ON pace_lanes (key_sha256, slot);
"#],
    &[schema::SEEN_BODIES],
    &[schema::INBOUND_UNMATCHED],
    &[schema::EVENTS_SUMMARY],
    // The incident ledger, and the rule of each event.
    &[schema::INCIDENTS],
    &[schema::OWN_PAGES, schema::INBOUND_ITEMS_FAILED],
    // The highest `sequence` applied per lane: stale events.
    &[schema::LANE_SEQUENCES],
    // Storms: priority and fair share at the claim. Slots are no longer promised ahead (a
    // key's events are claimed only when it has a free slot), so lanes hold none.
    &[schema::STORMS, "DROP TABLE pace_lanes;"],
    // A search for a source's name finds its events by index (`search`); the trigram
    // indexes depend on pg_trgm, so `search::ensure` builds them at every start instead.
    &["CREATE INDEX inbound_source ON inbound (source);"],
];

/// Advisory lock classes. Advisory locks are per database, so the first key of
/// `pg_advisory_xact_lock(int, int)` is the class offset by a hash of the schema: deployments
/// (or test runs) in separate schemas of one database do not hold each other up.
#[derive(Debug, Clone, Copy)]
pub(super) enum Lock {
    Migrate = 0,
    Insert = 1,
}

impl Lock {
    /// The first lock key of this class in the schema hashed to `schema`.
    pub(super) fn key(self, schema: i32) -> i32 {
        schema.wrapping_add(self as i32)
    }
}

/// Connections per process: the worker's claims and finishes plus the webhooks being accepted.
const POOL_SIZE: usize = 16;

/// A pending event may go when no other pending event of its lane is earlier or leased
/// (`$1` is the claim's `now`).
const LANE_FREE: &str = formatcp!(
    "(e.order_key IS NULL OR NOT EXISTS (SELECT 1 FROM events p WHERE p.state = '{PENDING}' \
     AND p.order_key = e.order_key AND p.id <> e.id AND (p.id < e.id OR p.lease_until > $1)))"
);

/// The earliest future time a pending event becomes due or its lease runs out (`$1`: now).
pub(super) const NEXT_DUE: &str = formatcp!(
    "SELECT MIN(GREATEST(next_at, lease_until)) FROM events
     WHERE state = '{PENDING}' AND GREATEST(next_at, lease_until) > $1"
);

/// The PostgreSQL queue. Cheap to share: a handle on a connection pool.
#[derive(Clone)]
pub struct PostgresQueue {
    pool: Pool,
    /// `hashtext(current_schema())`, for the advisory lock keys.
    schema: i32,
    /// Shut after a write failed for lack of space (SQLSTATE 53100), opened again by
    /// [`Capacity::room`] once a probe write succeeds.
    gate: std::sync::Arc<Gate>,
}

/// The kind of failure a PostgreSQL error is, by its SQLSTATE (whose first two characters are
/// its class), or by its cause when the server said nothing. The text keeps the causes:
/// tokio-postgres puts the server's message (or the connection's failure) in the error's
/// source, not in its text.
impl From<tokio_postgres::Error> for QueueError {
    fn from(e: tokio_postgres::Error) -> QueueError {
        let text = with_causes(&e);
        let Some(code) = e.code() else {
            let io = e.is_closed() || causes(&e).any(|c| c.is::<std::io::Error>());
            return if io { QueueError::Io(text) } else { QueueError::Database(text) };
        };
        if *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED {
            return QueueError::Conflict(text);
        }
        if *code == SqlState::LOCK_NOT_AVAILABLE {
            return QueueError::Busy(text);
        }
        // Of class 53 (insufficient resources) only 53100 means the disk is full; out of
        // memory or connections is the server's trouble, not room to make.
        if *code == SqlState::DISK_FULL {
            return QueueError::OutOfRoom(text);
        }
        match &code.code()[..2] {
            "23" => QueueError::Constraint(text),
            // Connection exception, insufficient resources, operator intervention, system error.
            "08" | "53" | "57" | "58" => QueueError::Io(text),
            _ => QueueError::Database(text),
        }
    }
}

/// `e`'s causes, nearest first.
fn causes<'a>(e: &'a (dyn std::error::Error + 'static)) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(e.source(), |c| c.source())
}

/// Reads a column; a value of another type than this build expects is [`QueueError::BadRow`],
/// never a panic.
trait Get {
    fn get_as<'a, T: FromSql<'a>>(&'a self, i: usize) -> Result<T, QueueError>;
}

impl Get for Row {
    fn get_as<'a, T: FromSql<'a>>(&'a self, i: usize) -> Result<T, QueueError> {
        self.try_get(i).map_err(|e| QueueError::BadRow(with_causes(&e)))
    }
}

impl Columns for Row {
    fn col<T: Stored>(&self, i: usize) -> Result<T, QueueError> {
        self.get_as(i)
    }
}

fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        // Wrappers often repeat their source's text; say each thing once.
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = c.source();
    }
    text
}

/// The advisory lock key of a lane. FNV-1a, not `hashtext`, so that claims and inserts can sort
/// their locks client-side (no deadlock between transactions locking several lanes) and every
/// build of pagerhook agrees on it; a collision only makes two lanes wait for each other.
pub(super) fn lane_lock(order_key: &str) -> i32 {
    let h = order_key.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    h as i32
}

impl PostgresQueue {
    /// Connects to `url` and brings the schema to this build's version. Safe when several
    /// replicas start at once: migrations run one after the other under an advisory lock.
    pub async fn connect(url: &Secret) -> Result<PostgresQueue, QueueError> {
        let (url, tls) = tls::split(url.expose())?;
        // The parse error names the option, never the value; the URL itself is not echoed.
        let mut pg: tokio_postgres::Config = url.parse().map_err(|e| QueueError::Url(with_causes(&e)))?;
        pg.ssl_mode(tls.mode.for_postgres());
        let connector = tls::connector(&tls)?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(Duration::from_secs(5));
        }
        if pg.get_application_name().is_none() {
            pg.application_name("pagerhook");
        }
        let manager = Manager::from_config(pg, connector, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(10)))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| QueueError::Io(with_causes(&e)))?;
        let mut q = PostgresQueue { pool, schema: 0, gate: Default::default() };
        q.schema = q.migrate().await?;
        Ok(q)
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, QueueError> {
        self.pool.get().await.map_err(|e| {
            let hint = if certificate_refused(&e) {
                " (sslrootcert must hold the authority that signed the server's certificate; with \
                     sslmode=verify-full the host in storage.url must also be a name in it)"
            } else {
                ""
            };
            QueueError::Io(format!("cannot reach PostgreSQL (storage.url): {}{hint}", with_causes(&e)))
        })
    }

    /// Brings the schema to the newest version this build knows (refusing a newer one) and
    /// returns the schema's lock hash.
    async fn migrate(&self) -> Result<i32, QueueError> {
        let mut c = self.client().await?;
        let mut tx = c.transaction().await?;
        let schema: Option<i32> = tx.query_one("SELECT hashtext(current_schema())", &[]).await?.get_as(0)?;
        let schema = schema.ok_or_else(|| {
            QueueError::Url(
                "no schema of storage.url's search_path exists: create it, or fix the search_path option".into(),
            )
        })?;
        tx.execute("SELECT pg_advisory_xact_lock($1, 0)", &[&Lock::Migrate.key(schema)]).await?;
        tx.batch_execute(schema::META).await?;
        let version: Option<String> =
            tx.query_opt(schema::READ_VERSION, &[]).await?.map(|r| r.get_as(0)).transpose()?;
        let version = applied_migrations(version.as_deref(), MIGRATIONS.len())?;
        for (n, steps) in MIGRATIONS.iter().enumerate().skip(version) {
            for step in *steps {
                tx.batch_execute(step).await.map_err(|e| step_failed(n + 1, e.into()))?;
            }
        }
        if version < MIGRATIONS.len() {
            tx.execute(schema::WRITE_VERSION, &[&MIGRATIONS.len().to_string()]).await?;
        }
        search::ensure(&mut tx).await?;
        tx.commit().await?;
        Ok(schema)
    }
}

/// Whether the server's certificate was refused (rustls said so, somewhere in `e`'s causes):
/// then the hint about `sslrootcert` applies. rustls's error reaches us wrapped in an
/// `io::Error`, whose `source` skips the error it wraps, so each one is opened.
fn certificate_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::once(e).chain(causes(e)).any(|c| {
        let inner = c
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|i| i as &(dyn std::error::Error + 'static));
        [Some(c), inner]
            .into_iter()
            .flatten()
            .any(|c| matches!(c.downcast_ref::<rustls::Error>(), Some(rustls::Error::InvalidCertificate(_))))
    })
}

/// Queues `events` for `inbound_id` with sticky routing within `source` (`lanes::route`), holding
/// the insert locks of their lanes so that ids follow commit order within each lane.
///
/// Locks are taken in one global order, lanes (ascending) before route rows (ascending), so
/// two accepts naming the same dedup_keys in any order cannot deadlock: the route lookups
/// come first and lock nothing, and the routes of a trigger are written only once its lane is
/// held.
async fn insert_events(
    tx: &Transaction<'_>,
    schema: i32,
    (inbound_id, source): (&str, &str),
    events: &[Event],
    (at, resolve_delay): (Millis, Millis),
    closing: Closing<'_>,
) -> Result<usize, QueueError> {
    let mut routed = lanes::route(&mut StoredRoutes(tx), source, events, closing).await?;
    let lanes: Vec<String> = routed.events.iter().filter_map(|e| e.order_key()).collect();
    lock_lanes(tx, schema, lanes.iter().map(String::as_str)).await?;
    // Decided with the lanes held, so a resolve waits for an escalation being stored; the
    // escalations' lanes are then taken too (after the webhook's own: see ARCHITECTURE.md).
    lanes::escalate(&mut StoredRoutes(tx), source, &mut routed, closing).await?;
    // Only events `route` or `escalate` rewrote (owned) can have a lane not yet held.
    let rewritten = routed.events.iter().filter(|e| matches!(e, std::borrow::Cow::Owned(_)));
    let escalated: Vec<String> = rewritten.filter_map(|e| e.order_key()).filter(|l| !lanes.contains(l)).collect();
    lock_lanes(tx, schema, escalated.iter().map(String::as_str)).await?;
    let mut routes = routed.routes;
    routes.sort_unstable();
    routes.dedup();
    let record = tx.prepare_cached(sql::RECORD_ROUTE).await?;
    for (dk, key) in routes {
        tx.execute(&record, &[&source, &dk, &key, &at]).await?;
    }
    let mut stale = 0;
    for (e, refused) in routed.events.iter().zip(&routed.refused) {
        let fate = lanes::fate(&mut StoredRoutes(tx), e, (refused.as_ref(), closing), at, resolve_delay).await?;
        let (kind, routing_key) = (e.kind().as_str(), e.routing_key().expose());
        let (action, dedup_key) = (e.action().map(|a| a.as_str()), e.dedup_key().map(|k| k.as_str()));
        let (order_key, text, rule, summary) = (e.order_key(), e.text(), e.rule(), e.summary());
        let priority = e.priority();
        let mut columns: Vec<&(dyn ToSql + Sync)> = vec![
            &inbound_id,
            &kind,
            &order_key,
            &routing_key,
            &action,
            &dedup_key,
            &text,
            &EVENT_FORMAT,
            &at,
            &rule,
            &summary,
        ];
        let state = match &fate {
            Fate::Done { state, .. } => state.as_str(),
            Fate::Queue { .. } => "",
        };
        let statement = match &fate {
            Fate::Queue { next_at } => {
                columns.extend([next_at as &(dyn ToSql + Sync), &priority]);
                sql::INSERT_EVENT
            }
            Fate::Done { why, .. } => {
                columns.extend([&state as &(dyn ToSql + Sync), why]);
                sql::INSERT_FINISHED
            }
        };
        tx.execute(&tx.prepare_cached(statement).await?, &columns).await?;
        stale += usize::from(matches!(fate, Fate::Done { state: EventState::Stale, .. }));
    }
    Ok(stale)
}

/// The sticky routes as stored (a lookup locks nothing).
struct StoredRoutes<'t, 'c>(&'t Transaction<'c>);

impl Routes for StoredRoutes<'_, '_> {
    async fn opener(&mut self, routing_key: &str, dedup_key: &str) -> Result<Option<String>, QueueError> {
        let stmt = self.0.prepare_cached(ledger::OPENER).await?;
        self.0.query_opt(&stmt, &[&routing_key, &dedup_key]).await?.map(|r| r.get_as(0)).transpose()
    }

    async fn still_silent(&mut self, routing_key: &str, dedup_key: &str, before: Millis) -> Result<bool, QueueError> {
        let stmt = self.0.prepare_cached(ledger::STILL_SILENT).await?;
        Ok(self.0.query_opt(&stmt, &[&routing_key, &dedup_key, &before]).await?.is_some())
    }

    async fn lane_waiting(&mut self, lane: &str) -> Result<bool, QueueError> {
        let stmt = self.0.prepare_cached(sql::LANE_WAITING).await?;
        Ok(self.0.query_opt(&stmt, &[&lane]).await?.is_some())
    }

    async fn delayed_resolve(&mut self, lane: &str, at: Millis) -> Result<Option<i64>, QueueError> {
        let stmt = self.0.prepare_cached(sql::DELAYED_RESOLVE).await?;
        self.0.query_opt(&stmt, &[&lane, &at]).await?.map(|r| r.get_as(0)).transpose()
    }

    async fn damp(&mut self, id: i64, at: Millis, why: &str) -> Result<(), QueueError> {
        self.0.execute(sql::DAMP, &[&at, &why, &id]).await?;
        Ok(())
    }

    async fn sequence(&mut self, lane: &str) -> Result<Option<(String, i64)>, QueueError> {
        let stmt = self.0.prepare_cached(sql::LANE_SEQUENCE).await?;
        let row = self.0.query_opt(&stmt, &[&lane]).await?;
        row.map(|r| Ok((r.get_as(0)?, r.get_as(1)?))).transpose()
    }

    async fn apply_sequence(&mut self, lane: &str, sequence: Sequence, at: Millis) -> Result<(), QueueError> {
        let (kind, value) = sequence.stored();
        let stmt = self.0.prepare_cached(sql::APPLY_SEQUENCE).await?;
        self.0.execute(&stmt, &[&lane, &kind, &value, &at]).await?;
        Ok(())
    }

    async fn latest_route(&mut self, source: &str, dk: &str, own: &str) -> Result<Option<(String, bool)>, QueueError> {
        let stmt = self
            .0
            .prepare_cached(
                "SELECT routing_key, bool_or(routing_key = $3) OVER () FROM routes
                 WHERE source = $1 AND dedup_key = $2 ORDER BY at DESC, seq DESC LIMIT 1",
            )
            .await?;
        match self.0.query_opt(&stmt, &[&source, &dk, &own]).await? {
            Some(r) => Ok(Some((r.get_as(0)?, r.get_as(1)?))),
            None => Ok(None),
        }
    }

    async fn family(
        &mut self,
        routing_key: &str,
        [dk, c, e, w]: [&str; 4],
        [lc, le, lw]: [&str; 3],
    ) -> Result<Vec<(String, Option<String>)>, QueueError> {
        let stmt = self.0.prepare_cached(ledger::FAMILY).await?;
        let rows = self.0.query(&stmt, &[&routing_key, &dk, &c, &e, &w, &lc, &le, &lw]).await?;
        rows.iter().map(|r| Ok((r.get_as(0)?, r.get_as(1)?))).collect()
    }
}

/// Takes the insert locks of these lanes, in ascending key order so that two transactions
/// locking overlapping lanes cannot deadlock.
async fn lock_lanes<'a>(
    tx: &Transaction<'_>,
    schema: i32,
    lanes: impl Iterator<Item = &'a str>,
) -> Result<(), QueueError> {
    let mut keys: Vec<i32> = lanes.map(lane_lock).collect();
    keys.sort_unstable();
    keys.dedup();
    for k in keys {
        tx.execute("SELECT pg_advisory_xact_lock($1, $2)", &[&Lock::Insert.key(schema), &k]).await?;
    }
    Ok(())
}

/// pagerhook's own pages, as this backend stores them. An own event's lane is locked like any
/// other (its ids follow commit order), after the lanes and routes of the transaction's
/// webhook: own lanes are always taken last, so the global lock order holds.
struct OwnStore<'t, 'c>(&'t Transaction<'c>, i32);

impl OwnSteps for OwnStore<'_, '_> {
    async fn waiting(&mut self, source: &str, reason: Reason) -> Result<i64, QueueError> {
        let row = match reason {
            Reason::DeadTrigger => self.0.query_one(sql::OWN_WAITING_TRIGGERS, &[&source]).await?,
            other => self.0.query_one(sql::OWN_WAITING_INBOUND, &[&source, &other.as_str()]).await?,
        };
        row.get_as(0)
    }

    async fn open_incidents(&mut self) -> Result<Vec<(String, String, String)>, QueueError> {
        let rows = self.0.query(sql::OWN_OPENED, &[]).await?;
        rows.iter().map(|r| Ok((r.get_as(0)?, r.get_as(1)?, r.get_as(2)?))).collect()
    }

    async fn queue_own(&mut self, source: &str, reason: Reason, event: &Event, now: Millis) -> Result<(), QueueError> {
        let record = own::dedup_key(source, reason);
        lock_lanes(self.0, self.1, event.order_key().iter().map(String::as_str)).await?;
        self.0.execute(sql::OWN_RECORD, &[&record, &source, &now, &(&[][..] as &[u8])]).await?;
        self.0
            .execute(
                sql::INSERT_EVENT,
                &[
                    &record,
                    &event.kind().as_str(),
                    &event.order_key(),
                    &event.routing_key().expose(),
                    &event.action().map(|a| a.as_str()),
                    &event.dedup_key().map(|k| k.as_str()),
                    &event.text(),
                    &EVENT_FORMAT,
                    &now,
                    &super::PAGERHOOK,
                    &event.summary(),
                    &now,
                    &event.priority(),
                ],
            )
            .await?;
        if event.action() == Some(Action::Trigger) {
            let key = event.routing_key().expose();
            self.0.execute(sql::OWN_OPEN, &[&source, &reason.as_str(), &key, &now]).await?;
        } else {
            self.0.execute(sql::OWN_CLOSE, &[&source, &reason.as_str()]).await?;
        }
        Ok(())
    }

    async fn dead_trigger(&mut self, id: i64) -> Result<Option<(String, String)>, QueueError> {
        match self.0.query_opt(sql::OWN_DEAD_TRIGGER, &[&id]).await? {
            Some(r) => Ok(Some((r.get_as(0)?, r.get_as(1)?))),
            None => Ok(None),
        }
    }
}

/// A claim's statements, in its transaction (each prepared once per connection and cached).
struct ClaimSteps<'t, 'c>(&'t Transaction<'c>);

impl ClaimSteps<'_, '_> {
    async fn statement(&self, sql: &str) -> Result<Statement, QueueError> {
        Ok(self.0.prepare_cached(sql).await?)
    }
}

impl Claims for ClaimSteps<'_, '_> {
    async fn next_in_lane(&mut self, now: Millis, lane: &str, after: i64) -> Result<Option<StoredEvent>, QueueError> {
        let stmt = self.statement(sql::NEXT_IN_LANE).await?;
        self.0.query_opt(&stmt, &[&now, &lane, &after]).await?.as_ref().map(StoredEvent::read).transpose()
    }

    async fn collapse(&mut self, id: i64, now: Millis, reason: &str) -> Result<(), QueueError> {
        self.0.execute(&self.statement(sql::COLLAPSE).await?, &[&now, &reason, &id]).await?;
        Ok(())
    }

    async fn lease(&mut self, id: i64, until: Millis) -> Result<(), QueueError> {
        self.0.execute(&self.statement(sql::LEASE).await?, &[&until, &id]).await?;
        Ok(())
    }

    async fn due_keys(&mut self, now: Millis) -> Result<Vec<String>, QueueError> {
        let rows = self.0.query(&self.statement(sql::DUE_KEYS).await?, &[&now]).await?;
        rows.iter().map(|r| r.get_as(0)).collect()
    }

    /// The key's pace row, locked for this claim; `None` when another replica's claim holds it
    /// (it claims that key's events meanwhile): a claim of a key never waits for another.
    async fn take_pace(&mut self, sha: &str, now: Millis) -> Result<Option<PaceState>, QueueError> {
        self.0.execute(&self.statement(NEW_PACE).await?, &[&sha, &now]).await?;
        let row = self.0.query_opt(&self.statement(TAKE_PACE).await?, &[&sha]).await?;
        row.as_ref().map(|r| Ok(pace_row(r)?.1)).transpose()
    }

    async fn store_pace(&mut self, sha: &str, pace: &PaceState) -> Result<(), QueueError> {
        store_pace(self.0, sha, pace).await
    }

    async fn candidates(&mut self, now: Millis, key: &str, sha: &str, n: usize) -> Result<Vec<Candidate>, QueueError> {
        let rows = self.0.query(&self.statement(CANDIDATES).await?, &[&now, &sha, &key, &(n as i64)]).await?;
        rows.iter().map(|r| Ok(Candidate { event: StoredEvent::read(r)?, source: r.get_as(11)? })).collect()
    }

    async fn served(&mut self, sha: &str, source: &str, now: Millis) -> Result<(), QueueError> {
        self.0.execute(&self.statement(sql::SERVED).await?, &[&sha, &source, &now]).await?;
        Ok(())
    }

    async fn waiting_resolve(&mut self, lane: &str, after: i64) -> Result<Option<i64>, QueueError> {
        let row = self.0.query_opt(&self.statement(sql::NEXT_RESOLVE).await?, &[&lane, &after]).await?;
        row.map(|r| r.get_as(0)).transpose()
    }

    async fn may_be_open(&mut self, lane: &str, head: i64) -> Result<bool, QueueError> {
        self.0.query_one(&self.statement(sql::LANE_MAY_BE_OPEN).await?, &[&lane, &head]).await?.get_as(0)
    }

    async fn supersede(
        &mut self,
        lane: &str,
        (from, to): (i64, i64),
        now: Millis,
        why: &str,
    ) -> Result<Vec<i64>, QueueError> {
        let rows = self.0.query(&self.statement(sql::SUPERSEDE).await?, &[&now, &why, &lane, &from, &to]).await?;
        rows.iter().map(|r| r.get_as(0)).collect()
    }
}

/// A claim's candidates of one routing key (`sql::CANDIDATES`): no other pending event of
/// the lane earlier or leased.
const CANDIDATES: &str = formatcp!("{} AND {LANE_FREE} {}", sql::CANDIDATES, sql::CANDIDATES_ORDER);

/// Makes the pace row of key `$1` if it has none (touched at `$2`).
const NEW_PACE: &str = "INSERT INTO pace (key_sha256, tat, closed_until, log, at) VALUES ($1, 0, 0, '{}', $2)
     ON CONFLICT (key_sha256) DO NOTHING";

/// The pace row of key `$1`, locked for the claim; no row if another claim holds it. Every
/// claim of a key's events goes through this lock, so no two replicas examine one lane at once.
const TAKE_PACE: &str =
    "SELECT key_sha256, tat, closed_until, log FROM pace WHERE key_sha256 = $1 FOR UPDATE SKIP LOCKED";

/// The dead letters to drop: older than `$1`, or beyond `$2` bytes of their source's newer
/// ones (see the SQLite twin); kind, id, source, body bytes, whether older than `$1`.
const DEAD_TO_DROP: &str = formatcp!(
    "WITH dead AS (
        SELECT 'event' AS kind, e.id::text AS id, i.source, e.done_at AS at, octet_length(e.body)::bigint AS bytes
        FROM events e JOIN inbound i ON i.id = e.inbound_id WHERE e.state = '{DEAD}'
        UNION ALL
        SELECT 'inbound', i.id, i.source, i.received_at, octet_length(i.body)::bigint
        FROM inbound i WHERE i.status IN ({DEAD_INBOUND})
    ), ranked AS (
        SELECT kind, id, source, bytes, at,
               SUM(bytes) OVER (PARTITION BY source ORDER BY at DESC, id DESC ROWS UNBOUNDED PRECEDING) AS newer
        FROM dead
    )
    SELECT kind, id, source, bytes, at < $1 FROM ranked WHERE at < $1 OR newer > $2::bigint"
);

/// Forgets dead events `$1` (their attempts, then themselves), and payloads `$1` kept
/// unmapped: what `prune_dead` chose, in one statement each.
const DROP_DEAD_EVENTS: [&str; 2] = [
    formatcp!("DELETE FROM attempts WHERE event_id IN (SELECT id FROM events WHERE id = ANY($1) AND state = '{DEAD}')"),
    formatcp!("DELETE FROM events WHERE id = ANY($1) AND state = '{DEAD}'"),
];
const DROP_DEAD_INBOUND: &str = formatcp!("DELETE FROM inbound WHERE id = ANY($1) AND status IN ({DEAD_INBOUND})");

#[async_trait]
impl Intake for PostgresQueue {
    async fn accept(&self, i: NewInbound, events: Vec<Event>) -> Result<Accepted, QueueError> {
        // Out of room: refused without a round trip until a probe finds room again.
        self.gate.check()?;
        let accepted = self.accept_now(i, events).await;
        self.gate.noting(accepted)
    }
}

impl PostgresQueue {
    async fn accept_now(&self, i: NewInbound, events: Vec<Event>) -> Result<Accepted, QueueError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // Returning a duplicate drops `tx` uncommitted: nothing of this accept stays.
        for (seen, key) in [(Seen::Body, &i.body_sha256), (Seen::Delivery, &i.delivery_id)] {
            let Some(key) = key else { continue };
            // The primary key makes the check hold across replicas: of two concurrent inserts
            // one waits for the other's commit, then finds the row.
            if tx.execute(seen.record(), &[&i.source, key, &i.id, &i.received_at]).await? == 0 {
                let id: String = tx.query_one(seen.first(), &[&i.source, key]).await?.get_as(0)?;
                return Ok(Accepted::Duplicate { id });
            }
        }
        let (status, error) = status_columns(&i.status);
        tx.execute(
            "INSERT INTO inbound (id, source, received_at, dedupe_id, headers, query, body, status, error, failed_items)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            &[
                &i.id,
                &i.source,
                &i.received_at,
                &i.delivery_id,
                &i.headers.to_string(),
                &i.query,
                &i.body.as_ref(),
                &status,
                &error,
                &failed_items_column(&i.status),
            ],
        )
        .await?;
        let closing = Closing::of(&i.source, &i.may_close, i.silent_before);
        let stale =
            insert_events(&tx, self.schema, (&i.id, &i.source), &events, (i.received_at, i.resolve_delay), closing)
                .await?;
        if let Some(page) = &i.page {
            own_pages::page(&mut OwnStore(&tx, self.schema), &i.source, page, i.received_at).await?;
        }
        tx.commit().await?;
        Ok(Accepted::Committed { id: i.id, events: events.len(), stale })
    }
}

#[async_trait]
impl Deliveries for PostgresQueue {
    async fn claim_with(&self, now: Millis, limit: usize, lease: Duration, pick: &Pick) -> Result<Batch, QueueError> {
        let until = now + lease.as_millis() as Millis;
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let claim = lanes::claim(&mut ClaimSteps(&tx), now, limit, until, pick).await?;
        tx.commit().await?;
        Ok(claim.into_batch(until))
    }

    async fn hold(&self, key_sha256: &str, until: Millis, rule: Arc<dyn PaceRule>) -> Result<(), QueueError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let keys = vec![key_sha256];
        let row = tx.query_one(LOCK_PACE, &[&keys, &super::now_millis()]).await?;
        let (_, mut state) = pace_row(&row)?;
        rule.hold(&mut state, until);
        store_pace(&tx, key_sha256, &state).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn finish(&self, id: i64, lease: Millis, attempt: Attempt, finish: Finish) -> Result<bool, QueueError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let status = attempt.status.map(i32::from);
        let record = [&id as &(dyn ToSql + Sync), &attempt.at, &status, &attempt.detail, &attempt.dedup_key];
        tx.execute(sql::RECORD_ATTEMPT, &record).await?;
        let o = Outcome::of(&attempt, &finish);
        let (error_changes, error) = o.last_error();
        let n = tx
            .execute(sql::FINISH, &[&o.state.as_str(), &o.done_at, &o.next_at, &error_changes, &error, &id, &lease])
            .await?;
        if n == 1 {
            record_in_ledger(&tx, id, &attempt, &finish).await?;
        }
        if let (1, Finish::DeadPaged(_, to)) = (n, &finish) {
            own_pages::page_dead_trigger(&mut OwnStore(&tx, self.schema), id, to.as_ref(), attempt.at).await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn renew(&self, id: i64, lease: Millis, until: Millis) -> Result<bool, QueueError> {
        let c = self.client().await?;
        let n = c.execute(sql::RENEW, &[&until, &id, &lease]).await?;
        Ok(n == 1)
    }

    async fn defer(&self, id: i64, lease: Millis, until: Millis) -> Result<(), QueueError> {
        let c = self.client().await?;
        c.execute(
            formatcp!(
                "UPDATE events SET lease_until = 0, next_at = GREATEST(next_at, $2)
                 WHERE id = $1 AND state = '{PENDING}' AND lease_until = $3"
            ),
            &[&id, &until, &lease],
        )
        .await?;
        Ok(())
    }

    async fn next_due(&self, now: Millis) -> Result<Option<Millis>, QueueError> {
        // Future times only (see the trait); a lease another replica holds counts, so its
        // expiry wakes this one.
        let c = self.client().await?;
        Ok(c.query_one(NEXT_DUE, &[&now]).await?.get_as(0)?)
    }
}

/// Writes what PagerDuty accepted of event `id` to the incident ledger (`ledger::Entry`).
async fn record_in_ledger(tx: &Transaction<'_>, id: i64, attempt: &Attempt, finish: &Finish) -> Result<(), QueueError> {
    if !matches!(finish, Finish::Delivered) || attempt.dedup_key.is_none() {
        return Ok(());
    }
    let sent = tx.query_opt(ledger::SENT, &[&id]).await?.map(|r| ledger::Sent::read(&r));
    let Some(entry) = sent.and_then(|s| ledger::readable(id, s)).and_then(|s| Entry::of(s, attempt, finish)) else {
        return Ok(());
    };
    let params: Vec<&(dyn ToSql + Sync)> = match &entry {
        Entry::Trigger { routing_key, dedup_key, source, rule, at, severity, summary } => {
            vec![routing_key, dedup_key, source, rule, at, severity, summary]
        }
        Entry::Close { routing_key, dedup_key, at, by, .. } => vec![at, by, routing_key, dedup_key],
    };
    tx.execute(entry.statement(), &params).await?;
    Ok(())
}

#[async_trait]
impl DeadLetters for PostgresQueue {
    async fn dead_letters(&self, source: Option<String>, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let c = self.client().await?;
        let rows = c.query(sql::LIST_DEAD_LETTERS, &[&source, &(limit as i64)]).await?;
        Ok(rows.iter().map(DeadLetter::read).collect::<Result<_, _>>()?)
    }

    async fn dead_letter(&self, id: DeadId) -> Result<Option<DeadLetterDetail>, QueueError> {
        let c = self.client().await?;
        let letter = c.query_opt(sql::ONE_DEAD_LETTER, &[&None::<String>, &id.to_string()]).await?;
        let Some(letter) = letter.as_ref().map(DeadLetter::read).transpose()? else { return Ok(None) };
        let (body, attempt_log) = match id {
            DeadId::Event(n) => (Some((n, stored_body(&c, n).await?)), attempt_log(&c, n).await?),
            DeadId::Inbound(_) => (None, Vec::new()),
        };
        let request = stored_request(&c, &letter.inbound_id).await?;
        DeadLetterDetail::assemble(letter, body, attempt_log, request).map(Some)
    }

    async fn resolved_since(&self, id: i64) -> Result<Option<Millis>, QueueError> {
        let c = self.client().await?;
        let row = c.query_opt(ledger::LATER_IN_LANE, &[&id]).await?;
        Ok(ledger::resolved(row.map(|r| Ok::<_, QueueError>((r.get_as(0)?, r.get_as(1)?))).transpose()?))
    }

    async fn requeue_dead(&self, id: i64, now: Millis) -> Result<Option<i64>, QueueError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // Marking it first takes the row lock: of two replays of one event, the second finds
        // it no longer dead and copies nothing.
        let Some(dead) = tx
            .query_opt(
                formatcp!(
                    "UPDATE events SET state = '{REPLAYED}', done_at = $2 WHERE id = $1 AND state = '{DEAD}' RETURNING order_key"
                ),
                &[&id, &now],
            )
            .await
            ?
        else {
            return Ok(None);
        };
        let lane: Option<String> = dead.get_as(0)?;
        lock_lanes(&tx, self.schema, lane.iter().map(String::as_str)).await?;
        let new_id: i64 = tx
            .query_one(
                "INSERT INTO events (inbound_id, kind, order_key, routing_key, action, dedup_key, body, format, created_at, next_at, summary, rule, priority)
                 SELECT inbound_id, kind, order_key, routing_key, action, dedup_key, body, format, $2, $2, summary, rule, priority
                 FROM events WHERE id = $1 RETURNING id",
                &[&id, &now],
            )
            .await
            ?
            .get_as(0)?;
        tx.execute(
            "UPDATE events SET last_error = last_error || $2 WHERE id = $1",
            &[&id, &format!(" (replayed as event {new_id})")],
        )
        .await?;
        own_pages::settle(&mut OwnStore(&tx, self.schema), now).await?;
        tx.commit().await?;
        Ok(Some(new_id))
    }

    async fn inbound(&self, id: String) -> Result<Option<StoredInbound>, QueueError> {
        let c = self.client().await?;
        let sql =
            "SELECT id, source, headers, query, body, status, error, received_at, failed_items FROM inbound WHERE id = $1";
        c.query_opt(sql, &[&id]).await?.as_ref().map(|r| StoredInbound::read(r, 8)).transpose()
    }

    async fn remap(
        &self,
        id: String,
        status: InboundStatus,
        events: Vec<Event>,
        now: Millis,
    ) -> Result<Option<usize>, QueueError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let items = failed_items_column(&status);
        let (status, error) = status_columns(&status);
        // The row lock makes a concurrent remap of the same payload wait, then find it mapped.
        let Some(row) = tx
            .query_opt(
                formatcp!(
"UPDATE inbound SET status = $2, error = $3, failed_items = $4 WHERE id = $1 AND status IN ({DEAD_INBOUND}) RETURNING source"),
                &[&id, &status, &error, &items],
            )
            .await?
        else {
            return Ok(None);
        };
        let source: String = row.get_as(0)?;
        // A replay is an operator's action: "only the opener closes" does not apply.
        insert_events(&tx, self.schema, (&id, &source), &events, (now, 0), Closing::Bypass).await?;
        own_pages::settle(&mut OwnStore(&tx, self.schema), now).await?;
        tx.commit().await?;
        Ok(Some(events.len()))
    }

    async fn delete_dead(&self, id: DeadId) -> Result<bool, QueueError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let n = match &id {
            DeadId::Event(n) => {
                let [attempts, event] = sql::DELETE_DEAD_EVENT;
                tx.execute(attempts, &[n]).await?;
                tx.execute(event, &[n]).await?
            }
            DeadId::Inbound(s) => tx.execute(sql::DELETE_DEAD_INBOUND, &[s]).await?,
        };
        own_pages::settle(&mut OwnStore(&tx, self.schema), super::now_millis()).await?;
        tx.commit().await?;
        Ok(n > 0)
    }
}

#[async_trait]
impl Inspect for PostgresQueue {
    async fn events(&self, q: EventQuery) -> Result<Vec<EventRow>, QueueError> {
        search::events(&*self.client().await?, &q).await
    }

    async fn event(&self, id: i64) -> Result<Option<EventDetail>, QueueError> {
        let c = self.client().await?;
        let Some(r) = c.query_opt(&format!("{EVENT_ROW} WHERE e.id = $1"), &[&id]).await? else {
            return Ok(None);
        };
        let row = EventRow::read(&r)?;
        let request = stored_request(&c, &row.summary.inbound_id).await?;
        EventDetail::assemble(row, stored_body(&c, id).await?, attempt_log(&c, id).await?, request).map(Some)
    }

    async fn depth(&self) -> Result<(u64, Option<Millis>), QueueError> {
        let c = self.client().await?;
        let r = c.query_one(sql::DEPTH, &[]).await?;
        Ok((r.get_as::<i64>(0)? as u64, r.get_as(1)?))
    }

    /// PostgreSQL keeps its search index itself, in each accept's transaction (`search`):
    /// nothing is left to add.
    async fn index_for_search(&self, _batch: usize) -> Result<usize, QueueError> {
        Ok(0)
    }
}

/// The write that tells whether the database has room again: an inbound row, as an accept
/// writes, rolled back.
const ROOM_PROBE: &str = "INSERT INTO inbound (id, source, received_at, headers, query, body, status)
     VALUES ('room-probe', '', 0, '{}', '', '\\x', 'ignored')";

#[async_trait]
impl Capacity for PostgresQueue {
    async fn room(&self) -> Result<RoomReading, QueueError> {
        let mut c = self.client().await?;
        let used: i64 = c.query_one("SELECT pg_database_size(current_database())", &[]).await?.get_as(0)?;
        if self.gate.current().is_some() {
            let tx = c.transaction().await?;
            match tx.execute(ROOM_PROBE, &[]).await {
                Ok(_) => self.gate.set(None),
                Err(e) => tracing::debug!(error = %QueueError::from(e), "the store still has no room"),
            }
            // Dropped: rolled back.
        }
        Ok(RoomReading { used_bytes: Some(used.max(0) as u64), free_bytes: None, short: self.gate.current() })
    }

    async fn make_room(&self, limit: usize) -> Result<Freed, QueueError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let cutoff: Option<Millis> = match tx.query_opt(sql::PRUNE_CUTOFF, &[&(limit.max(1) as i64 - 1)]).await? {
            Some(r) => r.get_as(0)?,
            None => None,
        };
        // Ties at the cutoff go too: a batch that finished in one millisecond is not stuck.
        let before = cutoff.unwrap_or_else(super::now_millis) + 1;
        let mut rows = 0;
        for statement in sql::PRUNE_FINISHED {
            rows += tx.execute(statement, &[&before]).await?;
        }
        tx.commit().await?;
        Ok(Freed { rows, ..Freed::default() })
    }
}

#[async_trait]
impl Incidents for PostgresQueue {
    async fn incidents(&self, q: IncidentQuery) -> Result<Vec<Incident>, QueueError> {
        let c = self.client().await?;
        let rows = c.query(ledger::LIST, &[&q.open, &q.source, &q.opened_before, &(q.limit as i64)]).await?;
        rows.iter().map(Incident::read).collect()
    }

    async fn open_incidents(&self) -> Result<Vec<OpenIncidents>, QueueError> {
        let c = self.client().await?;
        c.query(ledger::OPEN_BY_SOURCE, &[]).await?.iter().map(ledger::read_open).collect()
    }

    async fn open_lanes(&self, dedup_key: String) -> Result<Vec<RoutingKey>, QueueError> {
        let c = self.client().await?;
        c.query(ledger::OPEN_LANES, &[&dedup_key]).await?.iter().map(|r| ledger::routing_key(r.get_as(0)?)).collect()
    }

    async fn silent_incidents(
        &self,
        source: String,
        before: Millis,
        limit: usize,
    ) -> Result<Vec<(RoutingKey, String)>, QueueError> {
        let c = self.client().await?;
        let rows = c.query(ledger::SILENT, &[&source, &before, &(limit as i64)]).await?;
        rows.iter().map(|r| Ok((ledger::routing_key(r.get_as(0)?)?, r.get_as(1)?))).collect()
    }

    async fn lane_waiting(&self, lane: String) -> Result<bool, QueueError> {
        let c = self.client().await?;
        Ok(c.query_opt(sql::LANE_WAITING, &[&lane]).await?.is_some())
    }
}

#[async_trait]
impl Retention for PostgresQueue {
    async fn prune(&self, before: Millis) -> Result<u64, QueueError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let mut n = 0;
        for statement in sql::PRUNE {
            n += tx.execute(statement, &[&before]).await?;
        }
        for statement in sql::PRUNE_PACE {
            tx.execute(statement, &[&before]).await?;
        }
        tx.commit().await?;
        Ok(n)
    }

    async fn prune_dead(&self, before: Millis, max_bytes: u64) -> Result<Vec<DeadDropped>, QueueError> {
        let max_bytes = i64::try_from(max_bytes).unwrap_or(i64::MAX);
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let rows = tx.query(DEAD_TO_DROP, &[&before, &max_bytes]).await?;
        let mut chosen = Vec::with_capacity(rows.len());
        for r in &rows {
            let id = DeadToDrop::id(&r.col::<String>(0)?, r.col(1)?)?;
            chosen.push(DeadToDrop { id, source: r.col(2)?, bytes: r.col(3)?, expired: r.col(4)? });
        }
        let events: Vec<i64> =
            chosen.iter().filter_map(|d| if let DeadId::Event(n) = d.id { Some(n) } else { None }).collect();
        let inbound: Vec<&str> = chosen
            .iter()
            .filter_map(|d| if let DeadId::Inbound(s) = &d.id { Some(s.as_str()) } else { None })
            .collect();
        for statement in DROP_DEAD_EVENTS {
            tx.execute(statement, &[&events]).await?;
        }
        tx.execute(DROP_DEAD_INBOUND, &[&inbound]).await?;
        own_pages::settle(&mut OwnStore(&tx, self.schema), super::now_millis()).await?;
        tx.commit().await?;
        Ok(tally_dropped(&chosen))
    }
}

/// Locks the pace rows of `keys` (created when missing) in key order, so replicas pacing the
/// same keys queue up rather than deadlock, and reads them. The no-op update is what makes
/// `RETURNING` hand back an existing row, locked.
const LOCK_PACE: &str = "INSERT INTO pace (key_sha256, tat, closed_until, log, at)
     SELECT k, 0, 0, '{}', $2 FROM unnest($1::text[]) AS k ORDER BY k
     ON CONFLICT (key_sha256) DO UPDATE SET at = excluded.at
     RETURNING key_sha256, tat, closed_until, log";

fn pace_row(r: &Row) -> Result<(String, PaceState), QueueError> {
    let log: Vec<i64> = r.get_as(3)?;
    Ok((r.get_as(0)?, PaceState { tat: r.get_as(1)?, closed_until: r.get_as(2)?, log: log.into() }))
}

/// Writes a key's pace back; its latest send is when it was last used (retention forgets idle keys).
async fn store_pace(tx: &Transaction<'_>, key: &str, k: &PaceState) -> Result<(), QueueError> {
    let log: Vec<i64> = k.log.iter().copied().collect();
    let last = k.log.back().copied();
    let stmt = tx
        .prepare_cached(
            "UPDATE pace SET tat = $2, closed_until = $3, log = $4, at = GREATEST(at, COALESCE($5, at)) WHERE key_sha256 = $1",
        )
        .await?;
    tx.execute(&stmt, &[&key, &k.tat, &k.closed_until, &log, &last]).await?;
    Ok(())
}

/// The columns of an [`EventRow`], for `events` and `event` to filter.
const EVENT_ROW: &str = "SELECT e.id, e.inbound_id, i.source, e.kind, e.action, e.dedup_key, e.state, e.attempts,
    e.created_at, e.last_error, e.routing_key, e.summary,
    (SELECT a.dedup_key FROM attempts a WHERE a.event_id = e.id AND a.dedup_key IS NOT NULL ORDER BY a.id DESC LIMIT 1)
    FROM events e JOIN inbound i ON i.id = e.inbound_id";

/// Event `id`'s stored body.
async fn stored_body(c: &tokio_postgres::Client, id: i64) -> Result<StoredBody, QueueError> {
    StoredBody::read(&c.query_one(sql::STORED_BODY, &[&id]).await?)
}

/// The stored request of inbound `id`.
async fn stored_request(c: &tokio_postgres::Client, id: &str) -> Result<StoredRequest, QueueError> {
    StoredRequest::read(&c.query_one("SELECT headers, query, body FROM inbound WHERE id = $1", &[&id]).await?)
}

/// Every attempt at event `id`, oldest first.
async fn attempt_log(c: &tokio_postgres::Client, id: i64) -> Result<Vec<Attempt>, QueueError> {
    let rows =
        c.query("SELECT at, status, detail, dedup_key FROM attempts WHERE event_id = $1 ORDER BY id", &[&id]).await?;
    rows.iter().map(Attempt::read).collect()
}

/// The pseudo-lane whose lock serialises [`super::Conditions::hold_conditions`] between
/// replicas: two that judge the same storm at once page about it once.
const CONDITIONS_LANE: &str = "pagerhook/conditions";

#[async_trait]
impl super::Conditions for PostgresQueue {
    async fn backlog(&self) -> Result<Vec<super::KeyBacklog>, QueueError> {
        let c = self.client().await?;
        let rows = c.query(sql::BACKLOG, &[]).await?;
        let rows = rows
            .iter()
            .map(|r| Ok((r.get_as(0)?, r.get_as(1)?, r.get_as(2)?, r.get_as(3)?)))
            .collect::<Result<Vec<_>, QueueError>>()?;
        Ok(super::fold_backlog(rows))
    }

    async fn hold_conditions(
        &self,
        judged: Vec<Reason>,
        holding: Vec<own_pages::Held>,
        now: Millis,
    ) -> Result<Vec<super::Change>, QueueError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        lock_lanes(&tx, self.schema, [CONDITIONS_LANE].into_iter()).await?;
        let changes = own_pages::conditions(&mut OwnStore(&tx, self.schema), &judged, &holding, now).await?;
        tx.commit().await?;
        Ok(changes)
    }
}
