//! The embedded SQLite queue (WAL), the default backend.
//!
//! rusqlite blocks, so one dedicated thread owns the connection and serves commands sent
//! over a channel. That thread also gives group commit for free: every `accept` waiting in
//! the channel when it wakes goes into the same transaction (one fsync for all of them), each
//! inside its own savepoint so one failure does not sink the others.

use super::{
    kind_from_str, Accepted, Attempt, Claimed, EventSummary, Finish, InboundStatus, Millis, NewInbound, Queue,
    QueueError,
};
use crate::config::{Durability, Secret};
use crate::event::{Event, RoutingKey};
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;
use tokio::sync::oneshot;

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS inbound (
    id          TEXT PRIMARY KEY,
    source      TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    dedupe_id   TEXT,
    headers     TEXT NOT NULL,
    query       TEXT NOT NULL,
    body        BLOB NOT NULL,
    status      TEXT NOT NULL,
    error       TEXT
);
CREATE TABLE IF NOT EXISTS seen (
    source     TEXT NOT NULL,
    dedupe_id  TEXT NOT NULL,
    inbound_id TEXT NOT NULL,
    seen_at    INTEGER NOT NULL,
    PRIMARY KEY (source, dedupe_id)
);
CREATE TABLE IF NOT EXISTS events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
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
    created_at  INTEGER NOT NULL,
    next_at     INTEGER NOT NULL,
    lease_until INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    done_at     INTEGER
);
CREATE INDEX IF NOT EXISTS events_pending ON events (id) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS events_lane ON events (order_key, id) WHERE state = 'pending';
CREATE TABLE IF NOT EXISTS attempts (
    event_id INTEGER NOT NULL,
    at       INTEGER NOT NULL,
    status   INTEGER,
    detail   TEXT
);
CREATE INDEX IF NOT EXISTS attempts_event ON attempts (event_id);
"#;

/// A pending event is deliverable when it is due, unleased, and no earlier pending event
/// shares its lane.
const LANE_HEAD: &str =
    "(e.order_key IS NULL OR NOT EXISTS (SELECT 1 FROM events p WHERE p.state = 'pending' AND p.order_key = e.order_key AND p.id < e.id))";

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

enum Cmd {
    Accept(Box<NewInbound>, Vec<Event>, oneshot::Sender<Result<Accepted, QueueError>>),
    Run(Job),
}

/// The SQLite queue. Cheap to share; dropping the last handle stops its thread.
pub struct SqliteQueue {
    tx: mpsc::Sender<Cmd>,
}

fn storage(e: impl std::fmt::Display) -> QueueError {
    QueueError::Storage(e.to_string())
}

impl SqliteQueue {
    /// Opens (creating if needed) the database and starts its thread. Leases left by a
    /// previous process are released: with SQLite this process is the only deliverer.
    pub fn open(path: &Path, durability: Durability) -> Result<SqliteQueue, QueueError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| storage(format!("cannot create {}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path).map_err(|e| storage(format!("cannot open {}: {e}", path.display())))?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(storage)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(storage)?;
        let sync = match durability {
            Durability::Fsync => "FULL",
            Durability::Process => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync).map_err(storage)?;
        conn.execute_batch(SCHEMA).map_err(storage)?;
        let version: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0))
            .optional()
            .map_err(storage)?;
        match version.as_deref().map(str::parse::<i64>) {
            None => {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)",
                    [SCHEMA_VERSION.to_string()],
                )
                .map_err(storage)?;
            }
            Some(Ok(v)) if v == SCHEMA_VERSION => {}
            Some(other) => {
                return Err(storage(format!(
                    "database schema version {other:?} is not the {SCHEMA_VERSION} this build knows"
                )))
            }
        }
        conn.execute("UPDATE events SET lease_until = 0 WHERE state = 'pending' AND lease_until > 0", [])
            .map_err(storage)?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new().name("pagerhook-sqlite".into()).spawn(move || serve(conn, rx)).map_err(storage)?;
        Ok(SqliteQueue { tx })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, QueueError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |c| {
            let _ = tx.send(f(c).map_err(storage));
        });
        self.tx.send(Cmd::Run(job)).map_err(|_| QueueError::Closed)?;
        rx.await.map_err(|_| QueueError::Closed)?
    }
}

/// The connection thread: runs jobs in order, batching consecutive accepts into one commit.
fn serve(mut conn: Connection, rx: mpsc::Receiver<Cmd>) {
    const MAX_BATCH: usize = 512;
    while let Ok(first) = rx.recv() {
        let mut batch = Vec::new();
        let mut after = None;
        match first {
            Cmd::Run(job) => {
                job(&mut conn);
                continue;
            }
            Cmd::Accept(i, e, r) => batch.push((i, e, r)),
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Cmd::Accept(i, e, r)) => batch.push((i, e, r)),
                Ok(Cmd::Run(job)) => {
                    after = Some(job);
                    break;
                }
                Err(_) => break,
            }
        }
        commit_batch(&mut conn, batch);
        if let Some(job) = after {
            job(&mut conn);
        }
    }
}

type Reply = oneshot::Sender<Result<Accepted, QueueError>>;

fn commit_batch(conn: &mut Connection, batch: Vec<(Box<NewInbound>, Vec<Event>, Reply)>) {
    let mut results = Vec::with_capacity(batch.len());
    let outcome = (|| -> Result<(), rusqlite::Error> {
        let mut tx = conn.transaction()?;
        for (inbound, events, reply) in batch {
            let mut sp = tx.savepoint()?;
            match insert_one(&sp, &inbound, &events) {
                Ok(a) => {
                    if matches!(a, Accepted::Committed { .. }) {
                        sp.commit()?;
                    }
                    results.push((reply, Ok(a)));
                }
                Err(e) => {
                    sp.rollback()?;
                    drop(sp);
                    results.push((reply, Err(storage(e))));
                }
            }
        }
        tx.commit()
    })();
    for (reply, r) in results {
        // Only a committed transaction may be reported as committed.
        let r = match (&outcome, r) {
            (Ok(()), r) => r,
            (Err(e), _) => Err(storage(format!("commit failed: {e}"))),
        };
        let _ = reply.send(r);
    }
    // Replies not yet collected when the transaction failed early are dropped with the
    // batch: their callers see `Closed` and answer 503, never a 2xx.
    if let Err(e) = outcome {
        tracing::error!(error = %e, "storage commit failed");
    }
}

fn insert_one(tx: &Connection, i: &NewInbound, events: &[Event]) -> Result<Accepted, rusqlite::Error> {
    if let Some(d) = &i.dedupe_id {
        let n = tx.execute(
            "INSERT OR IGNORE INTO seen (source, dedupe_id, inbound_id, seen_at) VALUES (?1, ?2, ?3, ?4)",
            params![i.source, d, i.id, i.received_at],
        )?;
        if n == 0 {
            let id: String = tx.query_row(
                "SELECT inbound_id FROM seen WHERE source = ?1 AND dedupe_id = ?2",
                params![i.source, d],
                |r| r.get(0),
            )?;
            return Ok(Accepted::Duplicate { id });
        }
    }
    let (status, error) = match &i.status {
        InboundStatus::Mapped => ("mapped", None),
        InboundStatus::Ignored => ("ignored", None),
        InboundStatus::MappingFailed(e) => ("mapping_failed", Some(e.as_str())),
    };
    tx.execute(
        "INSERT INTO inbound (id, source, received_at, dedupe_id, headers, query, body, status, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            i.id,
            i.source,
            i.received_at,
            i.dedupe_id,
            i.headers.to_string(),
            i.query,
            i.body.as_ref(),
            status,
            error
        ],
    )?;
    let mut stmt = tx.prepare_cached(
        "INSERT INTO events (inbound_id, kind, order_key, routing_key, action, dedup_key, body, format, created_at, next_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?8)",
    )?;
    for e in events {
        stmt.execute(params![
            i.id,
            e.kind().as_str(),
            e.order_key(),
            e.routing_key().expose(),
            e.action().map(|a| a.as_str()),
            e.dedup_key().map(|k| k.as_str()),
            e.body().to_string(),
            i.received_at,
        ])?;
    }
    Ok(Accepted::Committed { id: i.id.clone(), events: events.len() })
}

#[async_trait]
impl Queue for SqliteQueue {
    async fn accept(&self, inbound: NewInbound, events: Vec<Event>) -> Result<Accepted, QueueError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Cmd::Accept(Box::new(inbound), events, tx)).map_err(|_| QueueError::Closed)?;
        rx.await.map_err(|_| QueueError::Closed)?
    }

    async fn claim(&self, now: Millis, limit: usize, lease: Duration) -> Result<Vec<Claimed>, QueueError> {
        let until = now + lease.as_millis() as Millis;
        self.run(move |c| {
            let tx = c.transaction()?;
            let rows = {
                let mut stmt = tx.prepare_cached(&format!(
                    "SELECT e.id, e.kind, e.routing_key, e.body, e.attempts, e.created_at, e.inbound_id FROM events e
                     WHERE e.state = 'pending' AND e.next_at <= ?1 AND e.lease_until <= ?1 AND {LANE_HEAD}
                     ORDER BY e.id LIMIT ?2"
                ))?;
                let rows = stmt
                    .query_map(params![now, limit as i64], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, u32>(4)?,
                            r.get::<_, i64>(5)?,
                            r.get::<_, String>(6)?,
                        ))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                let mut lease = tx.prepare_cached("UPDATE events SET lease_until = ?2 WHERE id = ?1")?;
                for r in &rows {
                    lease.execute(params![r.0, until])?;
                }
                rows
            };
            tx.commit()?;
            Ok(rows
                .into_iter()
                .filter_map(|(id, kind, key, body, attempts, created_at, inbound_id)| {
                    // Rows are written only by `accept`, so this cannot fail short of a
                    // corrupted file; say so loudly rather than skip the event silently.
                    let (Ok(key), Ok(body)) = (RoutingKey::parse(Secret::new(key)), serde_json::from_str(&body)) else {
                        tracing::error!(event_id = id, "stored event is unreadable; left leased for inspection");
                        return None;
                    };
                    Some(Claimed {
                        id,
                        inbound_id,
                        event: Event::from_stored(kind_from_str(&kind), key, body),
                        attempts,
                        created_at,
                    })
                })
                .collect())
        })
        .await
    }

    async fn finish(&self, id: i64, attempt: Attempt, finish: Finish) -> Result<(), QueueError> {
        self.run(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO attempts (event_id, at, status, detail) VALUES (?1, ?2, ?3, ?4)",
                params![id, attempt.at, attempt.status, attempt.detail],
            )?;
            match &finish {
                Finish::Delivered => tx.execute(
                    "UPDATE events SET state = 'delivered', attempts = attempts + 1, lease_until = 0, done_at = ?2 WHERE id = ?1",
                    params![id, attempt.at],
                )?,
                Finish::RetryAt(at) => tx.execute(
                    "UPDATE events SET attempts = attempts + 1, lease_until = 0, next_at = ?2, last_error = ?3 WHERE id = ?1",
                    params![id, at, attempt.detail],
                )?,
                Finish::Dead(reason) => tx.execute(
                    "UPDATE events SET state = 'dead', attempts = attempts + 1, lease_until = 0, done_at = ?2, last_error = ?3 WHERE id = ?1",
                    params![id, attempt.at, reason],
                )?,
            };
            tx.commit()
        })
        .await
    }

    async fn next_due(&self) -> Result<Option<Millis>, QueueError> {
        self.run(|c| {
            c.query_row(
                &format!(
                    "SELECT MIN(MAX(e.next_at, e.lease_until)) FROM events e WHERE e.state = 'pending' AND {LANE_HEAD}"
                ),
                [],
                |r| r.get(0),
            )
        })
        .await
    }

    async fn recent(&self, limit: usize) -> Result<Vec<EventSummary>, QueueError> {
        self.run(move |c| {
            let mut stmt = c.prepare(
                "SELECT e.id, e.inbound_id, i.source, e.kind, e.action, e.dedup_key, e.state, e.attempts, e.created_at, e.last_error
                 FROM events e JOIN inbound i ON i.id = e.inbound_id ORDER BY e.id DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit as i64], |r| {
                Ok(EventSummary {
                    id: r.get(0)?,
                    inbound_id: r.get(1)?,
                    source: r.get(2)?,
                    kind: r.get(3)?,
                    action: r.get(4)?,
                    dedup_key: r.get(5)?,
                    state: r.get(6)?,
                    attempts: r.get(7)?,
                    created_at: r.get(8)?,
                    last_error: r.get(9)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn prune(&self, before: Millis) -> Result<u64, QueueError> {
        self.run(move |c| {
            let tx = c.transaction()?;
            let mut n = tx.execute("DELETE FROM attempts WHERE event_id IN (SELECT id FROM events WHERE state = 'delivered' AND done_at < ?1)", [before])?;
            n += tx.execute("DELETE FROM events WHERE state = 'delivered' AND done_at < ?1", [before])?;
            n += tx.execute(
                "DELETE FROM inbound WHERE received_at < ?1 AND status != 'mapping_failed'
                 AND NOT EXISTS (SELECT 1 FROM events e WHERE e.inbound_id = inbound.id)",
                [before],
            )?;
            n += tx.execute("DELETE FROM seen WHERE seen_at < ?1", [before])?;
            tx.commit()?;
            Ok(n as u64)
        })
        .await
    }

    async fn depth(&self) -> Result<(u64, Option<Millis>), QueueError> {
        self.run(|c| {
            c.query_row("SELECT COUNT(*), MIN(created_at) FROM events WHERE state = 'pending'", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
        })
        .await
    }
}
