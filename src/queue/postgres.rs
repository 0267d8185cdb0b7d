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
//! - **claim** (`Lock::Claim`): a claim takes `pg_try_advisory_xact_lock` on the lane of each
//!   candidate head and then checks the head again in a fresh snapshot (READ COMMITTED takes one
//!   per statement), so of two concurrent claims only one examines a lane, and it sees what
//!   the other committed. Candidates are also row-locked `FOR UPDATE SKIP LOCKED`, which is what
//!   protects change events (they have no lane).
//!
//! A head is handed out only if no other pending event of its lane is earlier or leased.
//! Leases expire: a dead replica's events become claimable again; nothing releases them early.

use super::tls;
use super::{
    applied_migrations, status_columns, status_from_columns, sticky, sticky_key, Accepted, Attempt, AttemptRecord,
    Claimed, DeadId, DeadLetter, DeadLetterDetail, EventDetail, EventQuery, EventRow, EventSummary, Finish,
    InboundStatus, Millis, NewInbound, PaceRule, PaceState, Queue, QueueError, Route, SharedPace, SlotAsk, StoredEvent,
    StoredInbound,
};
use crate::config::Secret;
use crate::event::Event;
use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Transaction};
use std::collections::HashMap;
use std::time::Duration;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

/// Schema changes in order: `MIGRATIONS[n]` takes a schema from version `n` to `n + 1`, in the
/// transaction that records the new version.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
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
"#,
    // The dedup_key PagerDuty's 202 answered with, per attempt.
    r#"
ALTER TABLE attempts ADD COLUMN dedup_key TEXT;
"#,
    // Sticky routes per source: one source's resolve must never follow another's trigger.
    // Existing routes keep the source of a trigger still stored; the rest are dropped (their
    // resolves go to their own key, as before sticky routing).
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
DROP TABLE routes;
ALTER TABLE routes_by_source RENAME TO routes;
"#,
    // Payloads kept as `too_many_events` dead letters, listed like mapping failures.
    r#"
CREATE INDEX inbound_too_many ON inbound (received_at) WHERE status = 'too_many_events';
"#,
    // `next_due` by index: every replica's worker asks after every round.
    r#"
CREATE INDEX events_due ON events ((GREATEST(next_at, lease_until))) WHERE state = 'pending';
"#,
    // Pacing shared by replicas: one row per routing key (named by its SHA-256, never the key),
    // and the slots promised to lanes whose events were deferred till then.
    r#"
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
"#,
];

/// Advisory lock classes. Advisory locks are per database, so the first key of
/// `pg_advisory_xact_lock(int, int)` is the class offset by a hash of the schema: deployments
/// (or test runs) in separate schemas of one database do not hold each other up.
#[derive(Debug, Clone, Copy)]
pub(super) enum Lock {
    Migrate = 0,
    Insert = 1,
    Claim = 2,
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
const LANE_FREE: &str = "(e.order_key IS NULL OR NOT EXISTS (SELECT 1 FROM events p WHERE p.state = 'pending' \
     AND p.order_key = e.order_key AND p.id <> e.id AND (p.id < e.id OR p.lease_until > $1)))";

const ROW_COLUMNS: &str = "e.id, e.kind, e.order_key, e.routing_key, e.action, e.body, e.attempts, e.created_at, \
     e.inbound_id, e.next_at <= $1 AND e.lease_until <= $1";

/// The earliest future time a pending event becomes due or its lease runs out (`$1`: now).
pub(super) const NEXT_DUE: &str = "SELECT MIN(GREATEST(next_at, lease_until)) FROM events
     WHERE state = 'pending' AND GREATEST(next_at, lease_until) > $1";

const INSERT_EVENT: &str =
    "INSERT INTO events (inbound_id, kind, order_key, routing_key, action, dedup_key, body, format, created_at, next_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $8)";

/// The PostgreSQL queue. Cheap to share: a handle on a connection pool.
#[derive(Clone)]
pub struct PostgresQueue {
    pool: Pool,
    /// `hashtext(current_schema())`, for the advisory lock keys.
    schema: i32,
}

/// A storage error with its causes: tokio-postgres puts the server's message (or the
/// connection's failure) in the error's source, not in its text.
fn storage(e: impl std::error::Error) -> QueueError {
    QueueError::Storage(with_causes(&e))
}

/// For `?` on a row's `try_get`: a column of an unexpected type is an error, never a panic.
impl From<tokio_postgres::Error> for QueueError {
    fn from(e: tokio_postgres::Error) -> QueueError {
        storage(e)
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
        let (url, tls) = tls::split(url.expose()).map_err(QueueError::Storage)?;
        let mut pg: tokio_postgres::Config = url.parse().map_err(|e| {
            // The parse error names the option, never the value; the URL itself is not echoed.
            QueueError::Storage(format!("storage.url is not a valid PostgreSQL URL: {}", with_causes(&e)))
        })?;
        pg.ssl_mode(tls.mode.for_postgres());
        let connector = tls::connector(&tls).map_err(QueueError::Storage)?;
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
            .map_err(storage)?;
        let mut q = PostgresQueue { pool, schema: 0 };
        q.schema = q.migrate().await?;
        Ok(q)
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, QueueError> {
        self.pool.get().await.map_err(|e| {
            let text = with_causes(&e);
            let hint = if text.contains("invalid peer certificate") {
                " (sslrootcert must hold the authority that signed the server's certificate; with \
                     sslmode=verify-full the host in storage.url must also be a name in it)"
            } else {
                ""
            };
            QueueError::Storage(format!("cannot reach PostgreSQL (storage.url): {text}{hint}"))
        })
    }

    /// Brings the schema to the newest version this build knows (refusing a newer one) and
    /// returns the schema's lock hash.
    async fn migrate(&self) -> Result<i32, QueueError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(storage)?;
        let schema: Option<i32> =
            tx.query_one("SELECT hashtext(current_schema())", &[]).await.map_err(storage)?.try_get(0)?;
        let schema = schema.ok_or_else(|| {
            QueueError::Storage(
                "no schema of storage.url's search_path exists: create it, or fix the search_path option".into(),
            )
        })?;
        tx.execute("SELECT pg_advisory_xact_lock($1, 0)", &[&Lock::Migrate.key(schema)]).await.map_err(storage)?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            .await
            .map_err(storage)?;
        let version: Option<String> = tx
            .query_opt("SELECT value FROM meta WHERE key = 'schema_version'", &[])
            .await
            .map_err(storage)?
            .map(|r| r.try_get(0))
            .transpose()?;
        let version = applied_migrations(version.as_deref(), MIGRATIONS.len()).map_err(QueueError::Storage)?;
        for m in &MIGRATIONS[version..] {
            tx.batch_execute(m).await.map_err(storage)?;
        }
        if version < MIGRATIONS.len() {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', $1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&MIGRATIONS.len().to_string()],
            )
            .await
            .map_err(storage)?;
        }
        tx.commit().await.map_err(storage)?;
        Ok(schema)
    }
}

/// Queues `events` for `inbound_id` with sticky routing within `source` (as in SQLite), holding the insert
/// locks of their lanes so that ids follow commit order within each lane.
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
    at: Millis,
) -> Result<(), tokio_postgres::Error> {
    let mut routed = Vec::with_capacity(events.len());
    let mut routes = Vec::new();
    for e in events {
        routed.push(match Route::of(e) {
            Route::Record(dk) => {
                routes.push((dk, e.routing_key().expose()));
                e.clone()
            }
            Route::Lookup(dk) => {
                let stmt = tx
                    .prepare_cached(
                        "SELECT routing_key, bool_or(routing_key = $3) OVER () FROM routes
                         WHERE source = $1 AND dedup_key = $2 ORDER BY at DESC, seq DESC LIMIT 1",
                    )
                    .await?;
                let found = match tx.query_opt(&stmt, &[&source, &dk, &e.routing_key().expose()]).await? {
                    Some(r) => Some((r.try_get(0)?, r.try_get(1)?)),
                    None => None,
                };
                sticky(e, sticky_key(found))
            }
            Route::AsIs => e.clone(),
        });
    }
    let lanes: Vec<String> = routed.iter().filter_map(Event::order_key).collect();
    lock_lanes(tx, schema, lanes.iter().map(String::as_str)).await?;
    routes.sort_unstable();
    routes.dedup();
    let record = tx
        .prepare_cached(
            "INSERT INTO routes (source, dedup_key, routing_key, at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (source, dedup_key, routing_key) DO UPDATE SET at = excluded.at",
        )
        .await?;
    for (dk, key) in routes {
        tx.execute(&record, &[&source, &dk, &key, &at]).await?;
    }
    let insert = tx.prepare_cached(INSERT_EVENT).await?;
    for e in &routed {
        tx.execute(
            &insert,
            &[
                &inbound_id,
                &e.kind().as_str(),
                &e.order_key(),
                &e.routing_key().expose(),
                &e.action().map(|a| a.as_str()),
                &e.dedup_key().map(|k| k.as_str()),
                &e.body().to_string(),
                &at,
            ],
        )
        .await?;
    }
    Ok(())
}

/// Takes the insert locks of these lanes, in ascending key order so that two transactions
/// locking overlapping lanes cannot deadlock.
async fn lock_lanes<'a>(
    tx: &Transaction<'_>,
    schema: i32,
    lanes: impl Iterator<Item = &'a str>,
) -> Result<(), tokio_postgres::Error> {
    let mut keys: Vec<i32> = lanes.map(lane_lock).collect();
    keys.sort_unstable();
    keys.dedup();
    for k in keys {
        tx.execute("SELECT pg_advisory_xact_lock($1, $2)", &[&Lock::Insert.key(schema), &k]).await?;
    }
    Ok(())
}

fn stored_event(r: &Row) -> Result<StoredEvent, tokio_postgres::Error> {
    Ok(StoredEvent {
        id: r.try_get(0)?,
        kind: r.try_get(1)?,
        order_key: r.try_get(2)?,
        routing_key: r.try_get(3)?,
        action: r.try_get(4)?,
        body: r.try_get(5)?,
        attempts: r.try_get::<_, i32>(6)?.max(0) as u32,
        created_at: r.try_get(7)?,
        inbound_id: r.try_get(8)?,
        due: r.try_get(9)?,
    })
}

/// Leases up to `limit` lane heads, collapsing consecutive due triggers as SQLite does.
async fn claim_in(
    tx: &Transaction<'_>,
    schema: i32,
    now: Millis,
    limit: usize,
    until: Millis,
) -> Result<Vec<Claimed>, tokio_postgres::Error> {
    let candidates = tx
        .query(
            &format!(
                "SELECT {ROW_COLUMNS} FROM events e
                 WHERE e.state = 'pending' AND e.next_at <= $1 AND e.lease_until <= $1 AND {LANE_FREE}
                 ORDER BY e.id LIMIT $2 FOR UPDATE OF e SKIP LOCKED"
            ),
            &[&now, &(limit as i64)],
        )
        .await?;
    let recheck = tx
        .prepare_cached(&format!(
            "SELECT {ROW_COLUMNS} FROM events e
             WHERE e.id = $2 AND e.state = 'pending' AND e.next_at <= $1 AND e.lease_until <= $1 AND {LANE_FREE}"
        ))
        .await?;
    let next_in_lane = tx
        .prepare_cached(&format!(
            "SELECT {ROW_COLUMNS} FROM events e WHERE e.state = 'pending' AND e.order_key = $2 AND e.id > $3
             ORDER BY e.id LIMIT 1"
        ))
        .await?;
    let collapse = tx
        .prepare_cached(
            "UPDATE events SET state = 'collapsed', lease_until = 0, done_at = $2, last_error = $3 WHERE id = $1",
        )
        .await?;
    let lease = tx.prepare_cached("UPDATE events SET lease_until = $2 WHERE id = $1").await?;
    let mut out = Vec::with_capacity(candidates.len());
    for candidate in candidates {
        let mut head = stored_event(&candidate)?;
        if let Some(lane) = head.order_key.clone() {
            let keys = [Lock::Claim.key(schema), lane_lock(&lane)];
            let locked: bool =
                tx.query_one("SELECT pg_try_advisory_xact_lock($1, $2)", &[&keys[0], &keys[1]]).await?.try_get(0)?;
            if !locked {
                continue; // another replica is claiming in this lane right now
            }
            // The candidate list's snapshot predates the lock: look again.
            let Some(row) = tx.query_opt(&recheck, &[&now, &head.id]).await? else { continue };
            head = stored_event(&row)?;
        }
        let mut superseded = Vec::new();
        while let (Some(lane), Some("trigger")) = (head.order_key.clone(), head.action.as_deref()) {
            let Some(next) = tx.query_opt(&next_in_lane, &[&now, &lane, &head.id]).await? else { break };
            let next = stored_event(&next)?;
            if !head.collapses_into(&next) {
                break;
            }
            tx.execute(&collapse, &[&head.id, &now, &format!("collapsed into event {}", next.id)]).await?;
            superseded.push(head.id);
            head = next;
        }
        tx.execute(&lease, &[&head.id, &until]).await?;
        out.extend(head.into_claimed(superseded, until));
    }
    Ok(out)
}

/// Both kinds of dead letter as one relation; `$1` filters by source (NULL: all).
const DEAD_LETTERS: &str = "
    SELECT CAST(e.id AS TEXT) AS id, 'event' AS kind, i.source, e.inbound_id, e.done_at AS at,
           COALESCE(e.last_error, '') AS reason, e.action, e.dedup_key, e.attempts
    FROM events e JOIN inbound i ON i.id = e.inbound_id
    WHERE e.state = 'dead' AND ($1::text IS NULL OR i.source = $1)
    UNION ALL
    SELECT i.id, 'mapping_failed', i.source, i.id, i.received_at, COALESCE(i.error, ''), NULL, NULL, 0
    FROM inbound i
    WHERE i.status = 'mapping_failed' AND ($1::text IS NULL OR i.source = $1)
    UNION ALL
    SELECT i.id, 'too_many_events', i.source, i.id, i.received_at, COALESCE(i.error, ''), NULL, NULL, 0
    FROM inbound i
    WHERE i.status = 'too_many_events' AND ($1::text IS NULL OR i.source = $1)";

fn dead_letter_row(r: &Row) -> Result<DeadLetter, tokio_postgres::Error> {
    Ok(DeadLetter {
        id: r.try_get(0)?,
        kind: r.try_get(1)?,
        source: r.try_get(2)?,
        inbound_id: r.try_get(3)?,
        at: r.try_get(4)?,
        reason: r.try_get(5)?,
        action: r.try_get(6)?,
        dedup_key: r.try_get(7)?,
        attempts: r.try_get::<_, i32>(8)?.max(0) as u32,
    })
}

#[async_trait]
impl Queue for PostgresQueue {
    async fn accept(&self, i: NewInbound, events: Vec<Event>) -> Result<Accepted, QueueError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(storage)?;
        if let Some(d) = &i.dedupe_id {
            // The primary key makes the check hold across replicas: of two concurrent inserts
            // one waits for the other's commit, then finds the row.
            let n = tx
                .execute(
                    "INSERT INTO seen (source, dedupe_id, inbound_id, seen_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT DO NOTHING",
                    &[&i.source, d, &i.id, &i.received_at],
                )
                .await
                .map_err(storage)?;
            if n == 0 {
                let id: String = tx
                    .query_one("SELECT inbound_id FROM seen WHERE source = $1 AND dedupe_id = $2", &[&i.source, d])
                    .await
                    .map_err(storage)?
                    .try_get(0)?;
                return Ok(Accepted::Duplicate { id });
            }
        }
        let (status, error) = status_columns(&i.status);
        tx.execute(
            "INSERT INTO inbound (id, source, received_at, dedupe_id, headers, query, body, status, error)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &i.id,
                &i.source,
                &i.received_at,
                &i.dedupe_id,
                &i.headers.to_string(),
                &i.query,
                &i.body.as_ref(),
                &status,
                &error,
            ],
        )
        .await
        .map_err(storage)?;
        insert_events(&tx, self.schema, (&i.id, &i.source), &events, i.received_at).await.map_err(storage)?;
        tx.commit().await.map_err(storage)?;
        Ok(Accepted::Committed { id: i.id, events: events.len() })
    }

    async fn claim(&self, now: Millis, limit: usize, lease: Duration) -> Result<Vec<Claimed>, QueueError> {
        let until = now + lease.as_millis() as Millis;
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(storage)?;
        let claimed = claim_in(&tx, self.schema, now, limit, until).await.map_err(storage)?;
        tx.commit().await.map_err(storage)?;
        Ok(claimed)
    }

    async fn finish(&self, id: i64, lease: Millis, attempt: Attempt, finish: Finish) -> Result<bool, QueueError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(storage)?;
        let status = attempt.status.map(i32::from);
        tx.execute(
            "INSERT INTO attempts (event_id, at, status, detail, dedup_key) VALUES ($1, $2, $3, $4, $5)",
            &[&id, &attempt.at, &status, &attempt.detail, &attempt.dedup_key],
        )
        .await
        .map_err(storage)?;
        let (sql, params): (&str, Vec<&(dyn tokio_postgres::types::ToSql + Sync)>) = match &finish {
            Finish::Delivered => (
                "UPDATE events SET state = 'delivered', attempts = attempts + 1, lease_until = 0, done_at = $3
                 WHERE id = $1 AND lease_until = $2",
                vec![&id, &lease, &attempt.at],
            ),
            Finish::DryRun => (
                "UPDATE events SET state = 'dry_run', attempts = attempts + 1, lease_until = 0, done_at = $3
                 WHERE id = $1 AND lease_until = $2",
                vec![&id, &lease, &attempt.at],
            ),
            Finish::RetryAt(at) => (
                "UPDATE events SET attempts = attempts + 1, lease_until = 0, next_at = $3, last_error = $4
                 WHERE id = $1 AND lease_until = $2",
                vec![&id, &lease, at, &attempt.detail],
            ),
            Finish::Dead(reason) => (
                "UPDATE events SET state = 'dead', attempts = attempts + 1, lease_until = 0, done_at = $3, last_error = $4
                 WHERE id = $1 AND lease_until = $2",
                vec![&id, &lease, &attempt.at, reason],
            ),
        };
        let n = tx.execute(sql, &params).await.map_err(storage)?;
        tx.commit().await.map_err(storage)?;
        Ok(n == 1)
    }

    async fn renew(&self, id: i64, lease: Millis, until: Millis) -> Result<bool, QueueError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE events SET lease_until = $3 WHERE id = $1 AND lease_until = $2 AND state = 'pending'",
                &[&id, &lease, &until],
            )
            .await
            .map_err(storage)?;
        Ok(n == 1)
    }

    async fn next_due(&self, now: Millis) -> Result<Option<Millis>, QueueError> {
        // Future times only (see the trait); a lease another replica holds counts, so its
        // expiry wakes this one.
        let c = self.client().await?;
        Ok(c.query_one(NEXT_DUE, &[&now]).await.map_err(storage)?.try_get(0)?)
    }

    async fn prune(&self, before: Millis) -> Result<u64, QueueError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(storage)?;
        // Dead events stay until replayed or deleted; what replaced them is history.
        const DONE: &str = "state IN ('delivered', 'dry_run', 'collapsed', 'replayed') AND done_at < $1";
        let statements = [
            format!("DELETE FROM attempts WHERE event_id IN (SELECT id FROM events WHERE {DONE})"),
            format!("DELETE FROM events WHERE {DONE}"),
            "DELETE FROM inbound WHERE received_at < $1 AND status NOT IN ('mapping_failed', 'too_many_events')
             AND NOT EXISTS (SELECT 1 FROM events e WHERE e.inbound_id = inbound.id)"
                .to_string(),
            "DELETE FROM seen WHERE seen_at < $1".to_string(),
            "DELETE FROM routes WHERE at < $1".to_string(),
            "DELETE FROM pace_lanes WHERE slot < $1".to_string(),
            "DELETE FROM pace WHERE at < $1 AND closed_until < $1".to_string(),
        ];
        let mut n = 0;
        for sql in &statements {
            n += tx.execute(sql, &[&before]).await.map_err(storage)?;
        }
        tx.commit().await.map_err(storage)?;
        Ok(n)
    }

    async fn depth(&self) -> Result<(u64, Option<Millis>), QueueError> {
        let c = self.client().await?;
        let r = c
            .query_one("SELECT COUNT(*), MIN(created_at) FROM events WHERE state = 'pending'", &[])
            .await
            .map_err(storage)?;
        Ok((r.try_get::<_, i64>(0)? as u64, r.try_get(1)?))
    }

    async fn defer(&self, id: i64, lease: Millis, until: Millis) -> Result<(), QueueError> {
        let c = self.client().await?;
        c.execute(
            "UPDATE events SET lease_until = 0, next_at = GREATEST(next_at, $2)
             WHERE id = $1 AND state = 'pending' AND lease_until = $3",
            &[&id, &until, &lease],
        )
        .await
        .map_err(storage)?;
        Ok(())
    }

    async fn dead_letters(&self, source: Option<String>, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let c = self.client().await?;
        let rows = c
            .query(&format!("SELECT * FROM ({DEAD_LETTERS}) d ORDER BY at DESC LIMIT $2"), &[&source, &(limit as i64)])
            .await
            .map_err(storage)?;
        Ok(rows.iter().map(dead_letter_row).collect::<Result<_, _>>()?)
    }

    async fn dead_letter(&self, id: DeadId) -> Result<Option<DeadLetterDetail>, QueueError> {
        let c = self.client().await?;
        let letter = c
            .query_opt(&format!("SELECT * FROM ({DEAD_LETTERS}) d WHERE id = $2"), &[&None::<String>, &id.to_string()])
            .await
            .map_err(storage)?;
        let Some(letter) = letter.as_ref().map(dead_letter_row).transpose()? else { return Ok(None) };
        let (event, attempt_log) = match id {
            DeadId::Event(n) => {
                let body: String =
                    c.query_one("SELECT body FROM events WHERE id = $1", &[&n]).await.map_err(storage)?.try_get(0)?;
                let log = attempt_log(&c, n).await?;
                (serde_json::from_str(&body).ok(), log)
            }
            DeadId::Inbound(_) => (None, Vec::new()),
        };
        let r = c
            .query_one("SELECT headers, body FROM inbound WHERE id = $1", &[&letter.inbound_id])
            .await
            .map_err(storage)?;
        let (headers, payload): (String, Vec<u8>) = (r.try_get(0)?, r.try_get(1)?);
        Ok(Some(DeadLetterDetail {
            letter,
            event,
            attempt_log,
            headers: serde_json::from_str(&headers).unwrap_or_default(),
            payload: String::from_utf8_lossy(&payload).into_owned(),
        }))
    }

    async fn requeue_dead(&self, id: i64, now: Millis) -> Result<Option<i64>, QueueError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(storage)?;
        // Marking it first takes the row lock: of two replays of one event, the second finds
        // it no longer dead and copies nothing.
        let Some(dead) = tx
            .query_opt(
                "UPDATE events SET state = 'replayed', done_at = $2 WHERE id = $1 AND state = 'dead' RETURNING order_key",
                &[&id, &now],
            )
            .await
            .map_err(storage)?
        else {
            return Ok(None);
        };
        let lane: Option<String> = dead.try_get(0)?;
        lock_lanes(&tx, self.schema, lane.iter().map(String::as_str)).await.map_err(storage)?;
        let new_id: i64 = tx
            .query_one(
                "INSERT INTO events (inbound_id, kind, order_key, routing_key, action, dedup_key, body, format, created_at, next_at)
                 SELECT inbound_id, kind, order_key, routing_key, action, dedup_key, body, format, $2, $2
                 FROM events WHERE id = $1 RETURNING id",
                &[&id, &now],
            )
            .await
            .map_err(storage)?
            .try_get(0)?;
        tx.execute(
            "UPDATE events SET last_error = last_error || $2 WHERE id = $1",
            &[&id, &format!(" (replayed as event {new_id})")],
        )
        .await
        .map_err(storage)?;
        tx.commit().await.map_err(storage)?;
        Ok(Some(new_id))
    }

    async fn inbound(&self, id: String) -> Result<Option<StoredInbound>, QueueError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT id, source, headers, query, body, status, error, received_at FROM inbound WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(storage)?;
        let Some(r) = row else { return Ok(None) };
        let headers: String = r.try_get(2)?;
        let body: Vec<u8> = r.try_get(4)?;
        let status: String = r.try_get(5)?;
        Ok(Some(StoredInbound {
            id: r.try_get(0)?,
            source: r.try_get(1)?,
            received_at: r.try_get(7)?,
            headers: serde_json::from_str(&headers).unwrap_or_default(),
            query: r.try_get(3)?,
            body: body.into(),
            status: status_from_columns(&status, r.try_get(6)?),
        }))
    }

    async fn remap(
        &self,
        id: String,
        status: InboundStatus,
        events: Vec<Event>,
        now: Millis,
    ) -> Result<Option<usize>, QueueError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(storage)?;
        let (status, error) = status_columns(&status);
        // The row lock makes a concurrent remap of the same payload wait, then find it mapped.
        let Some(row) = tx
            .query_opt(
                "UPDATE inbound SET status = $2, error = $3 WHERE id = $1 AND status IN ('mapping_failed', 'too_many_events') RETURNING source",
                &[&id, &status, &error],
            )
            .await
            .map_err(storage)?
        else {
            return Ok(None);
        };
        let source: String = row.try_get(0)?;
        insert_events(&tx, self.schema, (&id, &source), &events, now).await.map_err(storage)?;
        tx.commit().await.map_err(storage)?;
        Ok(Some(events.len()))
    }

    async fn delete_dead(&self, id: DeadId) -> Result<bool, QueueError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(storage)?;
        let n = match &id {
            DeadId::Event(n) => {
                tx.execute(
                    "DELETE FROM attempts WHERE event_id = $1 AND EXISTS (SELECT 1 FROM events WHERE id = $1 AND state = 'dead')",
                    &[n],
                )
                .await
                .map_err(storage)?;
                tx.execute("DELETE FROM events WHERE id = $1 AND state = 'dead'", &[n]).await.map_err(storage)?
            }
            DeadId::Inbound(s) => tx
                .execute("DELETE FROM inbound WHERE id = $1 AND status IN ('mapping_failed', 'too_many_events')", &[s])
                .await
                .map_err(storage)?,
        };
        tx.commit().await.map_err(storage)?;
        Ok(n > 0)
    }

    async fn events(&self, q: EventQuery) -> Result<Vec<EventRow>, QueueError> {
        let c = self.client().await?;
        let sql = format!(
            "{EVENT_ROW} WHERE ($1::text IS NULL OR strpos(lower(e.dedup_key), lower($1::text)) > 0 OR i.source = $1::text
             OR e.state = $1::text) AND ($2::bigint IS NULL OR e.id < $2::bigint) ORDER BY e.id DESC LIMIT $3"
        );
        let rows = c.query(&sql, &[&q.search, &q.before, &(q.limit as i64)]).await.map_err(storage)?;
        Ok(rows.iter().map(event_row).collect::<Result<_, _>>()?)
    }

    async fn event(&self, id: i64) -> Result<Option<EventDetail>, QueueError> {
        let c = self.client().await?;
        let Some(r) = c.query_opt(&format!("{EVENT_ROW} WHERE e.id = $1"), &[&id]).await.map_err(storage)? else {
            return Ok(None);
        };
        let row = event_row(&r)?;
        let body: String =
            c.query_one("SELECT body FROM events WHERE id = $1", &[&id]).await.map_err(storage)?.try_get(0)?;
        let attempt_log = attempt_log(&c, id).await?;
        let r = c
            .query_one("SELECT headers, query, body FROM inbound WHERE id = $1", &[&row.summary.inbound_id])
            .await
            .map_err(storage)?;
        let (headers, query, payload): (String, String, Vec<u8>) = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
        Ok(Some(EventDetail {
            row,
            event: serde_json::from_str(&body).ok(),
            attempt_log,
            headers: serde_json::from_str(&headers).unwrap_or_default(),
            query,
            payload: String::from_utf8_lossy(&payload).into_owned(),
        }))
    }
}

/// Locks the pace rows of `keys` (created when missing) in key order, so replicas pacing the
/// same keys queue up rather than deadlock, and reads them. The no-op update is what makes
/// `RETURNING` hand back an existing row, locked.
const LOCK_PACE: &str = "INSERT INTO pace (key_sha256, tat, closed_until, log, at)
     SELECT k, 0, 0, '{}', $2 FROM unnest($1::text[]) AS k ORDER BY k
     ON CONFLICT (key_sha256) DO UPDATE SET at = excluded.at
     RETURNING key_sha256, tat, closed_until, log";

fn pace_row(r: &Row) -> Result<(String, PaceState), tokio_postgres::Error> {
    let log: Vec<i64> = r.try_get(3)?;
    Ok((r.try_get(0)?, PaceState { tat: r.try_get(1)?, closed_until: r.try_get(2)?, log: log.into() }))
}

async fn store_pace(tx: &Transaction<'_>, key: &str, k: &PaceState) -> Result<(), tokio_postgres::Error> {
    let log: Vec<i64> = k.log.iter().copied().collect();
    let stmt = tx.prepare_cached("UPDATE pace SET tat = $2, closed_until = $3, log = $4 WHERE key_sha256 = $1").await?;
    tx.execute(&stmt, &[&key, &k.tat, &k.closed_until, &log]).await?;
    Ok(())
}

/// Pacing across replicas: every slot of a key is taken under its row lock, from one log, so
/// the window and burst rules hold for the replicas together. One transaction per claimed
/// batch, whatever its size.
#[async_trait]
impl SharedPace for PostgresQueue {
    async fn slots(&self, now: Millis, asks: &[SlotAsk], rule: &dyn PaceRule) -> Result<Vec<Millis>, QueueError> {
        if asks.is_empty() {
            return Ok(Vec::new());
        }
        let mut keys: Vec<&str> = asks.iter().map(|a| a.key.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        let lanes: Vec<&str> = asks.iter().map(|a| a.lane.as_str()).collect();
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(storage)?;
        // Both in one round trip (tokio-postgres pipelines queries sent together).
        let (lock_params, held_params): ([&(dyn ToSql + Sync); 2], [&(dyn ToSql + Sync); 1]) =
            ([&keys, &now], [&lanes]);
        let (rows, held) = tokio::try_join!(
            tx.query(LOCK_PACE, &lock_params),
            tx.query("SELECT lane, slot FROM pace_lanes WHERE lane = ANY($1)", &held_params)
        )
        .map_err(storage)?;
        let mut states: HashMap<String, PaceState> = rows.iter().map(pace_row).collect::<Result<_, _>>()?;
        let mut held: HashMap<String, Millis> =
            held.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect::<Result<_, tokio_postgres::Error>>()?;
        let had_held = !held.is_empty();
        let (mut out, mut promised) = (Vec::with_capacity(asks.len()), (Vec::new(), Vec::new(), Vec::new()));
        for a in asks {
            let state = states.get_mut(&a.key).ok_or_else(|| QueueError::Storage("pace row missing".into()))?;
            let slot = rule.slot(state, held.remove(&a.lane), now);
            if slot > now {
                promised.0.push(a.lane.as_str());
                promised.1.push(a.key.as_str());
                promised.2.push(slot);
            }
            out.push(slot);
        }
        if had_held {
            tx.execute("DELETE FROM pace_lanes WHERE lane = ANY($1)", &[&lanes]).await.map_err(storage)?;
        }
        if !promised.0.is_empty() {
            tx.execute(
                "INSERT INTO pace_lanes (lane, key_sha256, slot) SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
                 ON CONFLICT (lane) DO UPDATE SET key_sha256 = excluded.key_sha256, slot = excluded.slot",
                &[&promised.0, &promised.1, &promised.2],
            )
            .await
            .map_err(storage)?;
        }
        for (key, state) in &states {
            store_pace(&tx, key, state).await.map_err(storage)?;
        }
        tx.commit().await.map_err(storage)?;
        Ok(out)
    }

    async fn closed_until(&self, keys: &[String]) -> Result<Vec<Millis>, QueueError> {
        let c = self.client().await?;
        let rows = c
            .query("SELECT key_sha256, closed_until FROM pace WHERE key_sha256 = ANY($1)", &[&keys])
            .await
            .map_err(storage)?;
        let closed: HashMap<String, Millis> =
            rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect::<Result<_, tokio_postgres::Error>>()?;
        Ok(keys.iter().map(|k| closed.get(k).copied().unwrap_or(0)).collect())
    }

    async fn hold(&self, key: &str, now: Millis, until: Millis, rule: &dyn PaceRule) -> Result<(), QueueError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(storage)?;
        let keys = vec![key];
        let row = tx.query_one(LOCK_PACE, &[&keys, &now]).await.map_err(storage)?;
        let (_, mut state) = pace_row(&row)?;
        let shift = rule.hold(&mut state, now, until);
        store_pace(&tx, key, &state).await.map_err(storage)?;
        if shift > 0 {
            tx.execute(
                "UPDATE pace_lanes SET slot = slot + $2 WHERE key_sha256 = $1 AND slot > $3",
                &[&key, &shift, &now],
            )
            .await
            .map_err(storage)?;
        }
        tx.commit().await.map_err(storage)?;
        Ok(())
    }
}

/// The columns of an [`EventRow`], for `events` and `event` to filter.
const EVENT_ROW: &str = "SELECT e.id, e.inbound_id, i.source, e.kind, e.action, e.dedup_key, e.state, e.attempts,
    e.created_at, e.last_error, e.routing_key,
    (SELECT a.dedup_key FROM attempts a WHERE a.event_id = e.id AND a.dedup_key IS NOT NULL ORDER BY a.id DESC LIMIT 1)
    FROM events e JOIN inbound i ON i.id = e.inbound_id";

fn event_row(r: &Row) -> Result<EventRow, tokio_postgres::Error> {
    let key: String = r.try_get(10)?;
    Ok(EventRow {
        summary: EventSummary {
            id: r.try_get(0)?,
            inbound_id: r.try_get(1)?,
            source: r.try_get(2)?,
            kind: r.try_get(3)?,
            action: r.try_get(4)?,
            dedup_key: r.try_get(5)?,
            state: r.try_get(6)?,
            attempts: r.try_get::<_, i32>(7)?.max(0) as u32,
            created_at: r.try_get(8)?,
            last_error: r.try_get(9)?,
            pagerduty_dedup_key: r.try_get(11)?,
        },
        routing_key: super::fingerprint_of(&key),
    })
}

/// Every attempt at event `id`, oldest first.
async fn attempt_log(c: &tokio_postgres::Client, id: i64) -> Result<Vec<AttemptRecord>, QueueError> {
    let rows = c
        .query("SELECT at, status, detail, dedup_key FROM attempts WHERE event_id = $1 ORDER BY id", &[&id])
        .await
        .map_err(storage)?;
    let log = rows.iter().map(|r| {
        Ok(AttemptRecord {
            at: r.try_get(0)?,
            status: r.try_get::<_, Option<i32>>(1)?.and_then(|s| u16::try_from(s).ok()),
            detail: r.try_get(2)?,
            pagerduty_dedup_key: r.try_get(3)?,
        })
    });
    Ok(log.collect::<Result<_, tokio_postgres::Error>>()?)
}
