//! The embedded SQLite queue (WAL), the default backend.
//!
//! rusqlite blocks, so one dedicated thread owns the connection and serves commands sent
//! over a channel. That thread also gives group commit for free: every `accept` waiting in
//! the channel when it wakes goes into the same transaction (one fsync for all of them), each
//! inside its own savepoint so one failure does not sink the others.

use super::rows::{status_columns, Columns, Stored, StoredBody, StoredEvent, StoredRequest, EVENT_FORMAT};
use super::schema::{self, step_failed};
use super::{
    applied_migrations, sticky, sticky_key, Accepted, Attempt, Claimed, DeadId, DeadLetter, DeadLetterDetail,
    EventDetail, EventQuery, EventRow, Finish, InboundStatus, Millis, NewInbound, Queue, QueueError, Role, Route,
    StoredInbound,
};
use crate::config::Durability;
use crate::event::{Event, RoutingKey};
use async_trait::async_trait;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Statement};
use std::path::Path;
use std::sync::{mpsc, LazyLock};
use std::time::Duration;
use tokio::sync::oneshot;

/// Schema changes in order: `MIGRATIONS[n]` takes a database from version `n` to `n + 1`, its
/// statements run in order. Each runs in the transaction that records the new version, so a
/// crash leaves either.
pub(super) const MIGRATIONS: &[&[&str]] = &[
    &[r#"
CREATE TABLE inbound (
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
CREATE TABLE seen (
    source     TEXT NOT NULL,
    dedupe_id  TEXT NOT NULL,
    inbound_id TEXT NOT NULL,
    seen_at    INTEGER NOT NULL,
    PRIMARY KEY (source, dedupe_id)
);
CREATE TABLE events (
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
CREATE INDEX events_pending ON events (id) WHERE state = 'pending';
CREATE INDEX events_lane ON events (order_key, id) WHERE state = 'pending';
CREATE TABLE attempts (
    event_id INTEGER NOT NULL,
    at       INTEGER NOT NULL,
    status   INTEGER,
    detail   TEXT
);
CREATE INDEX attempts_event ON attempts (event_id);
"#],
    // Sticky routing, and indexes for the dead-letter views and pruning.
    &[r#"
CREATE TABLE routes (
    dedup_key   TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    at          INTEGER NOT NULL,
    PRIMARY KEY (dedup_key, routing_key)
);
CREATE INDEX events_dead ON events (done_at) WHERE state = 'dead';
CREATE INDEX events_inbound ON events (inbound_id);
CREATE INDEX inbound_failed ON inbound (received_at) WHERE status = 'mapping_failed';
"#],
    // `next_due` by index: the worker asks after every round, even with a million pending.
    &["CREATE INDEX events_next ON events (next_at) WHERE state = 'pending';"],
    &[schema::ATTEMPTS_DEDUP_KEY],
    &[
        r#"
CREATE TABLE routes_by_source (
    source      TEXT NOT NULL,
    dedup_key   TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    at          INTEGER NOT NULL,
    PRIMARY KEY (source, dedup_key, routing_key)
);
INSERT OR IGNORE INTO routes_by_source (source, dedup_key, routing_key, at)
SELECT i.source, r.dedup_key, r.routing_key, r.at FROM routes r
JOIN events e ON e.dedup_key = r.dedup_key AND e.routing_key = r.routing_key AND e.action = 'trigger'
JOIN inbound i ON i.id = e.inbound_id
ORDER BY r.at, r.rowid;
"#,
        schema::ROUTES_BY_SOURCE_SWAP,
    ],
    &[schema::INBOUND_TOO_MANY],
];

/// A pending event is deliverable when it is due, unleased, and no earlier pending event
/// shares its lane.
const LANE_HEAD: &str =
    "(e.order_key IS NULL OR NOT EXISTS (SELECT 1 FROM events p WHERE p.state = 'pending' AND p.order_key = e.order_key AND p.id < e.id))";

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

enum Cmd {
    /// Joins the next group commit.
    Write(Write),
    /// Runs alone, in order.
    Run(Job),
}

/// A write that may share its transaction (and its commit) with others.
enum Write {
    Accept(Box<Prepared>, Reply),
    Finish(i64, Millis, Box<(Attempt, Finish)>, oneshot::Sender<Result<bool, QueueError>>),
    /// A claim (now, limit, lease until): it sees the outcomes queued before it, and its leases
    /// are committed with them instead of in a transaction of its own.
    Claim(Millis, usize, Millis, oneshot::Sender<Result<Vec<Leased>, QueueError>>),
}

/// An accept made ready for the writer on the caller's thread: the JSON it stores is
/// serialized there, so the one writer thread, which every accept waits for, only runs SQL.
struct Prepared {
    inbound: NewInbound,
    headers: String,
    events: Vec<PreparedEvent>,
}

impl Prepared {
    fn new(inbound: NewInbound, events: Vec<Event>) -> Prepared {
        let headers = inbound.headers.to_string();
        Prepared { inbound, headers, events: events.into_iter().map(PreparedEvent::new).collect() }
    }
}

/// An event and the text of its body, as stored.
struct PreparedEvent {
    event: Event,
    body: String,
}

impl PreparedEvent {
    fn new(event: Event) -> PreparedEvent {
        let body = event.body().to_string();
        PreparedEvent { event, body }
    }
}

/// A lane head a claim leased, with the triggers it superseded, still as stored: its body is
/// parsed by the claimer (`Queue::claim`), off the writer thread.
type Leased = (StoredEvent, Vec<i64>);

/// The SQLite queue. Cheap to share; dropping the last handle stops its threads (the writer
/// ends when the channel closes, and the checkpointer when the writer's wake-ups end).
pub struct SqliteQueue {
    tx: mpsc::Sender<Cmd>,
}

/// The WAL's size, in pages, at which the writer checkpoints it itself, and the point where
/// the WAL starts over (only a writer can restart it, and only once every frame is copied:
/// under a steady stream of writes the background copy never catches up alone). SQLite's
/// default, 1 000 pages of 4 KiB. Measured (bench/README.md, "The WAL ceiling"): a 10 000-page
/// ceiling saved about 3 % of the CPU per webhook at saturation, but each checkpoint at the
/// ceiling stalls the group commit long enough to double the accept p99 (30 ms against 14 at
/// saturation, 14 ms against 5.3-5.6 at 4 000 req/s); latency is the promise a sender sees.
const WAL_CEILING_PAGES: i64 = 1_000;

/// How often, at most, the writer wakes the background checkpointer: each wake copies what
/// the writes of about this long left in the WAL.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// How long the checkpointer waits without a wake-up before checkpointing anyway: other
/// processes (the CLI, a second server by mistake) write to the file too.
const CHECKPOINT_IDLE: Duration = Duration::from_secs(1);

/// When the writer wakes the checkpointer: after a commit, at most once per
/// [`CHECKPOINT_EVERY`].
struct CheckpointPace {
    last: Option<std::time::Instant>,
}

impl CheckpointPace {
    /// Whether a commit at `now` should wake the checkpointer (and, if so, counts it as woken).
    fn due(&mut self, now: std::time::Instant) -> bool {
        let due = self.last.is_none_or(|last| now.duration_since(last) >= CHECKPOINT_EVERY);
        if due {
            self.last = Some(now);
        }
        due
    }
}

/// The kind of failure an SQLite error is, with `detail` as its text.
fn classify(e: &rusqlite::Error, detail: String) -> QueueError {
    use rusqlite::Error as E;
    match e {
        E::SqliteFailure(f, _) => match f.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => QueueError::Busy(detail),
            ErrorCode::ConstraintViolation => QueueError::Constraint(detail),
            ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull
            | ErrorCode::CannotOpen
            | ErrorCode::ReadOnly
            | ErrorCode::PermissionDenied
            | ErrorCode::FileLockingProtocolFailed
            | ErrorCode::DatabaseCorrupt
            | ErrorCode::NotADatabase => QueueError::Io(detail),
            _ => QueueError::Database(detail),
        },
        E::FromSqlConversionFailure(..)
        | E::IntegralValueOutOfRange(..)
        | E::InvalidColumnType(..)
        | E::InvalidColumnIndex(_)
        | E::InvalidColumnName(_)
        | E::Utf8Error(_) => QueueError::BadRow(detail),
        _ => QueueError::Database(detail),
    }
}

impl From<rusqlite::Error> for QueueError {
    fn from(e: rusqlite::Error) -> QueueError {
        classify(&e, e.to_string())
    }
}

fn io(e: impl std::fmt::Display) -> QueueError {
    QueueError::Io(e.to_string())
}

impl Columns for rusqlite::Row<'_> {
    fn col<T: Stored>(&self, i: usize) -> Result<T, QueueError> {
        Ok(self.get(i)?)
    }
}

/// Every row `stmt` returns for `params`, each read by `read`.
fn all<T>(
    stmt: &mut Statement<'_>,
    params: impl rusqlite::Params,
    read: impl Fn(&rusqlite::Row) -> Result<T, QueueError>,
) -> Result<Vec<T>, QueueError> {
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(read(r)?);
    }
    Ok(out)
}

/// The first row `stmt` returns for `params`, if any, read by `read`.
fn first<T>(
    stmt: &mut Statement<'_>,
    params: impl rusqlite::Params,
    read: impl FnOnce(&rusqlite::Row) -> Result<T, QueueError>,
) -> Result<Option<T>, QueueError> {
    stmt.query(params)?.next()?.map(read).transpose()
}

impl SqliteQueue {
    /// Opens (creating or migrating if needed) the database and starts its thread.
    pub fn open(path: &Path, durability: Durability, role: Role) -> Result<SqliteQueue, QueueError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io(format!("cannot create {}: {e}", dir.display())))?;
        }
        let mut conn =
            Connection::open(path).map_err(|e| classify(&e, format!("cannot open {}: {e}", path.display())))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        // Every statement the writer runs stays prepared (the default 16 is about as many as
        // an accept, a claim and a finish use together, before the console's).
        conn.set_prepared_statement_cache_capacity(64);
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // NORMAL by default (WAL, no fsync per commit): leases, attempts and delivery states
        // may be lost to a power cut, which only means an event is sent again (at-least-once).
        // Accepts, the promise behind a 2xx, switch to FULL around their commit when asked.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "wal_autocheckpoint", WAL_CEILING_PAGES)?;
        migrate(&mut conn)?;
        if role == Role::Deliverer {
            conn.execute("UPDATE events SET lease_until = 0 WHERE state = 'pending' AND lease_until > 0", [])?;
        }
        // Checkpoints copy the WAL into the database file. A second connection does that in
        // the background, woken by the writer's commits, so the writer's own automatic
        // checkpoint (at the ceiling, where the WAL starts over) finds little left to copy
        // and no request's commit stalls on it. Measured: accept p99 at 3000 req/s went from
        // 128 ms (writer-side truncation) to 8 ms.
        let checkpointer = Connection::open(path)?;
        let (wake, woken) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("pagerhook-checkpoint".into())
            .spawn(move || checkpoint_when_written(checkpointer, woken))
            .map_err(io)?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("pagerhook-sqlite".into())
            .spawn(move || serve(conn, rx, durability, wake))
            .map_err(io)?;
        Ok(SqliteQueue { tx })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, QueueError> + Send + 'static,
    ) -> Result<T, QueueError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |c| {
            let _ = tx.send(f(c));
        });
        self.tx.send(Cmd::Run(job)).map_err(|_| QueueError::Closed)?;
        rx.await.map_err(|_| QueueError::Closed)?
    }

    /// Sends a write to the next group commit and waits for its answer.
    async fn write<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, QueueError>>) -> Write,
    ) -> Result<T, QueueError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Cmd::Write(make(tx))).map_err(|_| QueueError::Closed)?;
        rx.await.map_err(|_| QueueError::Closed)?
    }
}

/// Brings the schema to the newest version this build knows; refuses a newer one.
fn migrate(conn: &mut Connection) -> Result<(), QueueError> {
    conn.execute_batch(schema::META)?;
    // BEGIN IMMEDIATE: two processes opening a fresh file at once migrate one after the other.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: Option<String> = tx.query_row(schema::READ_VERSION, [], |r| r.get(0)).optional()?;
    let version = applied_migrations(version.as_deref(), MIGRATIONS.len())?;
    for (n, steps) in MIGRATIONS.iter().enumerate().skip(version) {
        for step in *steps {
            tx.execute_batch(step).map_err(|e| step_failed(n + 1, e.into()))?;
        }
    }
    if version < MIGRATIONS.len() {
        tx.execute(schema::WRITE_VERSION, [MIGRATIONS.len().to_string()])?;
    }
    Ok(tx.commit()?)
}

/// Copies what the WAL holds into the database file (PASSIVE: it never blocks the writer)
/// whenever the writer says it wrote, and at least every [`CHECKPOINT_IDLE`], taking most of
/// that work and its fsyncs off the writer's thread. Stops when the writer does (`woken`
/// disconnects).
fn checkpoint_when_written(conn: Connection, woken: mpsc::Receiver<()>) {
    let _ = conn.busy_timeout(Duration::from_millis(100));
    while let Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) = woken.recv_timeout(CHECKPOINT_IDLE) {
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::debug!(error = %e, "checkpoint skipped");
        }
    }
}

/// The connection thread: runs jobs in order, batching consecutive writes into transactions:
/// group commit. Delivery outcomes and claims in one, committed first; accepts in another.
fn serve(mut conn: Connection, rx: mpsc::Receiver<Cmd>, durability: Durability, wake: mpsc::SyncSender<()>) {
    const MAX_BATCH: usize = 512;
    let mut pace = CheckpointPace { last: None };
    while let Ok(first) = rx.recv() {
        let mut batch = Vec::new();
        let mut after = None;
        match first {
            Cmd::Run(job) => {
                job(&mut conn);
                continue;
            }
            Cmd::Write(w) => batch.push(w),
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Cmd::Run(job)) => {
                    after = Some(job);
                    break;
                }
                Ok(Cmd::Write(w)) => batch.push(w),
                Err(_) => break,
            }
        }
        // Delivery's writes go first, in a transaction of their own: they need no fsync, and a
        // claim that waited for the accepts' kept `concurrency` requests from being in flight.
        // Nothing orders them against accepts waiting beside them; among themselves the order
        // holds, so a claim still sees the finishes queued before it.
        let (delivery, accepts): (Vec<Write>, Vec<Write>) =
            batch.into_iter().partition(|w| !matches!(w, Write::Accept(..)));
        for batch in [delivery, accepts] {
            if !batch.is_empty() {
                commit_batch(&mut conn, batch, durability);
            }
        }
        if pace.due(std::time::Instant::now()) {
            // Full: a wake-up is already waiting, which is as good.
            let _ = wake.try_send(());
        }
        if let Some(job) = after {
            job(&mut conn);
        }
    }
}

/// An accept's answer, with the accept itself handed back: the caller's thread, which built
/// it, frees it (dropping its events' bodies was 1.4 % of the process on the writer thread).
type Reply = oneshot::Sender<(Result<Accepted, QueueError>, Box<Prepared>)>;

/// A write's answer, sent only once the batch's commit is known.
enum Answer {
    Accept(Reply, Result<Accepted, QueueError>, Box<Prepared>),
    Finish(oneshot::Sender<Result<bool, QueueError>>, Result<bool, QueueError>),
    Claim(oneshot::Sender<Result<Vec<Leased>, QueueError>>, Result<Vec<Leased>, QueueError>),
}

fn commit_batch(conn: &mut Connection, batch: Vec<Write>, durability: Durability) {
    // Only accepts carry a promise to a sender (the 2xx); they alone wait for the disk.
    let fsync = durability == Durability::Fsync && batch.iter().any(|w| matches!(w, Write::Accept(..)));
    if fsync {
        if let Err(e) = conn.pragma_update(None, "synchronous", "FULL") {
            // Without FULL the commit would not be on disk before the 2xx: refuse the batch.
            tracing::error!(error = %e, "cannot switch storage to synchronous = FULL");
            return;
        }
    }
    commit_batch_inner(conn, batch);
    if fsync {
        let _ = conn.pragma_update(None, "synchronous", "NORMAL");
    }
}

fn commit_batch_inner(conn: &mut Connection, batch: Vec<Write>) {
    let mut answers = Vec::with_capacity(batch.len());
    let outcome = (|| -> Result<(), rusqlite::Error> {
        let tx = conn.transaction()?;
        for write in batch {
            // Each write in its own savepoint, so one failure does not sink the others. The
            // statements are cached: `Transaction::savepoint` parsed two anew for every write.
            tx.prepare_cached("SAVEPOINT write")?.execute([])?;
            let (answer, keep) = apply(&tx, write);
            if !keep {
                tx.prepare_cached("ROLLBACK TO write")?.execute([])?;
            }
            tx.prepare_cached("RELEASE write")?.execute([])?;
            answers.push(answer);
        }
        tx.commit()
    })();
    for answer in answers {
        // Only a committed transaction may be reported as committed.
        let failed = || match &outcome {
            Ok(()) => None,
            Err(e) => Some(classify(e, format!("commit failed: {e}"))),
        };
        match answer {
            Answer::Accept(reply, r, accept) => {
                let _ = reply.send((failed().map_or(r, Err), accept));
            }
            Answer::Finish(reply, r) => {
                let _ = reply.send(failed().map_or(r, Err));
            }
            Answer::Claim(reply, r) => {
                let _ = reply.send(failed().map_or(r, Err));
            }
        }
    }
    // Writes not yet answered when the transaction failed early are dropped with the batch:
    // their callers see `Closed` (an accept answers 503, never a 2xx).
    if let Err(e) = outcome {
        tracing::error!(error = %e, "storage commit failed");
    }
}

/// Runs one write inside its savepoint: its answer, and whether to keep what it wrote.
fn apply(c: &Connection, write: Write) -> (Answer, bool) {
    match write {
        Write::Accept(accept, reply) => match insert_one(c, &accept) {
            Ok(a) => {
                let keep = matches!(a, Accepted::Committed { .. });
                (Answer::Accept(reply, Ok(a), accept), keep)
            }
            Err(e) => (Answer::Accept(reply, Err(e.into()), accept), false),
        },
        Write::Finish(id, lease, done, reply) => match finish_one(c, id, lease, &done.0, &done.1) {
            Ok(held) => (Answer::Finish(reply, Ok(held)), true),
            Err(e) => (Answer::Finish(reply, Err(e.into())), false),
        },
        Write::Claim(now, limit, until, reply) => match claim_in(c, now, limit, until) {
            Ok(claimed) => (Answer::Claim(reply, Ok(claimed)), true),
            Err(e) => (Answer::Claim(reply, Err(e)), false),
        },
    }
}

/// Records one delivery attempt and, if the event is still held under `lease`, its outcome.
fn finish_one(
    tx: &Connection,
    id: i64,
    lease: Millis,
    attempt: &Attempt,
    finish: &Finish,
) -> Result<bool, rusqlite::Error> {
    tx.prepare_cached("INSERT INTO attempts (event_id, at, status, detail, dedup_key) VALUES (?1, ?2, ?3, ?4, ?5)")?
        .execute(params![id, attempt.at, attempt.status, attempt.detail, attempt.dedup_key])?;
    let n = match finish {
        Finish::Delivered => tx
            .prepare_cached(
                "UPDATE events SET state = 'delivered', attempts = attempts + 1, lease_until = 0, done_at = ?2
                 WHERE id = ?1 AND lease_until = ?3",
            )?
            .execute(params![id, attempt.at, lease])?,
        Finish::DryRun => tx
            .prepare_cached(
                "UPDATE events SET state = 'dry_run', attempts = attempts + 1, lease_until = 0, done_at = ?2 WHERE id = ?1 AND lease_until = ?3",
            )?
            .execute(params![id, attempt.at, lease])?,
        Finish::RetryAt(at) => tx
            .prepare_cached(
                "UPDATE events SET attempts = attempts + 1, lease_until = 0, next_at = ?2, last_error = ?3
                 WHERE id = ?1 AND lease_until = ?4",
            )?
            .execute(params![id, at, attempt.detail, lease])?,
        Finish::Dead(reason) => tx
            .prepare_cached(
                "UPDATE events SET state = 'dead', attempts = attempts + 1, lease_until = 0, done_at = ?2, last_error = ?3
                 WHERE id = ?1 AND lease_until = ?4",
            )?
            .execute(params![id, attempt.at, reason, lease])?,
    };
    Ok(n == 1)
}

fn insert_one(tx: &Connection, accept: &Prepared) -> Result<Accepted, rusqlite::Error> {
    let (i, events) = (&accept.inbound, &accept.events);
    if let Some(d) = &i.delivery_id {
        // Cached statements: parsing them anew for every accept was ~3 % of the writer's time.
        let n = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO seen (source, dedupe_id, inbound_id, seen_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![i.source, d, i.id, i.received_at])?;
        if n == 0 {
            let id: String = tx.query_row(
                "SELECT inbound_id FROM seen WHERE source = ?1 AND dedupe_id = ?2",
                params![i.source, d],
                |r| r.get(0),
            )?;
            return Ok(Accepted::Duplicate { id });
        }
    }
    let (status, error) = status_columns(&i.status);
    tx.prepare_cached(
        "INSERT INTO inbound (id, source, received_at, dedupe_id, headers, query, body, status, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        i.id,
        i.source,
        i.received_at,
        i.delivery_id,
        accept.headers,
        i.query,
        i.body.as_ref(),
        status,
        error
    ])?;
    insert_events(tx, &i.id, &i.source, events, i.received_at)?;
    Ok(Accepted::Committed { id: i.id.clone(), events: events.len() })
}

/// Queues `events` for `inbound_id`, applying sticky routing within `source`: a trigger records
/// where its dedup_key went; an acknowledge or resolve for a dedup_key that this source never
/// triggered on its own routing key goes to the key of the source's latest trigger instead.
fn insert_events(
    tx: &Connection,
    inbound_id: &str,
    source: &str,
    events: &[PreparedEvent],
    at: Millis,
) -> Result<(), rusqlite::Error> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO events (inbound_id, kind, order_key, routing_key, action, dedup_key, body, format, created_at, next_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?9, ?8, ?8)",
    )?;
    for PreparedEvent { event: e, body } in events {
        // Only a rerouted event is copied (the body text is the same: it holds no routing key).
        let rerouted;
        let e = match Route::of(e) {
            Route::Record(dk) => {
                tx.prepare_cached(
                    "INSERT INTO routes (source, dedup_key, routing_key, at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (source, dedup_key, routing_key) DO UPDATE SET at = excluded.at",
                )?
                .execute(params![source, dk, e.routing_key().expose(), at])?;
                e
            }
            Route::Lookup(dk) => {
                rerouted = sticky(e, sticky_route(tx, source, dk, e.routing_key().expose())?);
                &rerouted
            }
            Route::AsIs => e,
        };
        insert.execute(params![
            inbound_id,
            e.kind().as_str(),
            e.order_key(),
            e.routing_key().expose(),
            e.action().map(|a| a.as_str()),
            e.dedup_key().map(|k| k.as_str()),
            body,
            at,
            EVENT_FORMAT,
        ])?;
    }
    Ok(())
}

/// The columns [`StoredEvent::read`] reads (`?1`: the claim's `now`).
const ROW_COLUMNS: &str =
    "e.id, e.kind, e.order_key, e.routing_key, e.action, e.format, e.body, e.attempts, e.created_at, \
     e.inbound_id, e.next_at <= ?1 AND e.lease_until <= ?1";

/// Leases up to `limit` lane heads. A head that is a trigger directly followed in its lane by
/// another due trigger is collapsed into it (repeatedly): PagerDuty would only deduplicate
/// the older ones, and skipping them shortens a backlog. A trigger never collapses into an
/// acknowledge or resolve.
fn claim_in(tx: &Connection, now: Millis, limit: usize, until: Millis) -> Result<Vec<Leased>, QueueError> {
    // Built once: formatting them for every claim showed in the writer's profile.
    static HEADS: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT {ROW_COLUMNS} FROM events e
             WHERE e.state = 'pending' AND e.next_at <= ?1 AND e.lease_until <= ?1 AND {LANE_HEAD}
             ORDER BY e.id LIMIT ?2"
        )
    });
    static NEXT_IN_LANE: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT {ROW_COLUMNS} FROM events e WHERE e.state = 'pending' AND e.order_key = ?2 AND e.id > ?3 ORDER BY e.id LIMIT 1"
        )
    });
    let heads = all(&mut *tx.prepare_cached(&HEADS)?, params![now, limit as i64], |r| StoredEvent::read(r))?;
    let mut next_in_lane = tx.prepare_cached(&NEXT_IN_LANE)?;
    let mut collapse = tx.prepare_cached(
        "UPDATE events SET state = 'collapsed', lease_until = 0, done_at = ?2, last_error = ?3 WHERE id = ?1",
    )?;
    let mut lease = tx.prepare_cached("UPDATE events SET lease_until = ?2 WHERE id = ?1")?;
    let mut out = Vec::with_capacity(heads.len());
    for mut head in heads {
        let mut superseded = Vec::new();
        while let (Some(lane), Some("trigger")) = (head.order_key.clone(), head.action.as_deref()) {
            let Some(next) = first(&mut next_in_lane, params![now, lane, head.id], |r| StoredEvent::read(r))? else {
                break;
            };
            if !head.collapses_into(&next) {
                break;
            }
            collapse.execute(params![head.id, now, format!("collapsed into event {}", next.id)])?;
            superseded.push(head.id);
            head = next;
        }
        lease.execute(params![head.id, until])?;
        out.push((head, superseded));
    }
    Ok(out)
}

/// The routing key an acknowledge/resolve of `source` must use instead of `key`, if any.
fn sticky_route(
    tx: &Connection,
    source: &str,
    dedup_key: &str,
    key: &str,
) -> Result<Option<RoutingKey>, rusqlite::Error> {
    let mut stmt = tx.prepare_cached(
        "SELECT routing_key, MAX(routing_key = ?3) OVER () FROM routes WHERE source = ?1 AND dedup_key = ?2
         ORDER BY at DESC, rowid DESC LIMIT 1",
    )?;
    let found: Option<(String, bool)> =
        stmt.query_row(params![source, dedup_key, key], |r| Ok((r.get(0)?, r.get(1)?))).optional()?;
    Ok(sticky_key(found))
}

#[async_trait]
impl Queue for SqliteQueue {
    async fn accept(&self, inbound: NewInbound, events: Vec<Event>) -> Result<Accepted, QueueError> {
        let accept = Box::new(Prepared::new(inbound, events));
        let (reply, answer) = oneshot::channel();
        self.tx.send(Cmd::Write(Write::Accept(accept, reply))).map_err(|_| QueueError::Closed)?;
        let (accepted, _freed_here) = answer.await.map_err(|_| QueueError::Closed)?;
        accepted
    }

    async fn claim(&self, now: Millis, limit: usize, lease: Duration) -> Result<Vec<Claimed>, QueueError> {
        let until = now + lease.as_millis() as Millis;
        let leased = self.write(|reply| Write::Claim(now, limit, until, reply)).await?;
        Ok(leased.into_iter().filter_map(|(head, superseded)| head.into_claimed(superseded, until)).collect())
    }

    async fn finish(&self, id: i64, lease: Millis, attempt: Attempt, finish: Finish) -> Result<bool, QueueError> {
        self.write(|reply| Write::Finish(id, lease, Box::new((attempt, finish)), reply)).await
    }

    async fn renew(&self, id: i64, lease: Millis, until: Millis) -> Result<bool, QueueError> {
        self.run(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE events SET lease_until = ?3 WHERE id = ?1 AND lease_until = ?2 AND state = 'pending'",
                )?
                .execute(params![id, lease, until])?;
            Ok(n == 1)
        })
        .await
    }

    async fn next_due(&self, now: Millis) -> Result<Option<Millis>, QueueError> {
        self.run(move |c| {
            Ok(c.query_row("SELECT MIN(next_at) FROM events WHERE state = 'pending' AND next_at > ?1", [now], |r| {
                r.get(0)
            })?)
        })
        .await
    }

    async fn prune(&self, before: Millis) -> Result<u64, QueueError> {
        self.run(move |c| {
            let tx = c.transaction()?;
            // Dead events stay until replayed or deleted; what replaced them is history.
            const DONE: &str = "state IN ('delivered', 'dry_run', 'collapsed', 'replayed') AND done_at < ?1";
            let mut n = tx.execute(
                &format!("DELETE FROM attempts WHERE event_id IN (SELECT id FROM events WHERE {DONE})"),
                [before],
            )?;
            n += tx.execute(&format!("DELETE FROM events WHERE {DONE}"), [before])?;
            n += tx.execute(
                "DELETE FROM inbound WHERE received_at < ?1 AND status NOT IN ('mapping_failed', 'too_many_events')
                 AND NOT EXISTS (SELECT 1 FROM events e WHERE e.inbound_id = inbound.id)",
                [before],
            )?;
            n += tx.execute("DELETE FROM seen WHERE seen_at < ?1", [before])?;
            n += tx.execute("DELETE FROM routes WHERE at < ?1", [before])?;
            tx.commit()?;
            Ok(n as u64)
        })
        .await
    }

    async fn depth(&self) -> Result<(u64, Option<Millis>), QueueError> {
        self.run(|c| {
            Ok(c.query_row("SELECT COUNT(*), MIN(created_at) FROM events WHERE state = 'pending'", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?)
        })
        .await
    }

    async fn defer(&self, id: i64, lease: Millis, until: Millis) -> Result<(), QueueError> {
        self.run(move |c| {
            c.execute(
                "UPDATE events SET lease_until = 0, next_at = MAX(next_at, ?2)
                 WHERE id = ?1 AND state = 'pending' AND lease_until = ?3",
                params![id, until, lease],
            )?;
            Ok(())
        })
        .await
    }

    async fn dead_letters(&self, source: Option<String>, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        self.run(move |c| {
            let mut stmt = c.prepare_cached(&format!("SELECT * FROM ({DEAD_LETTERS}) ORDER BY at DESC LIMIT ?2"))?;
            all(&mut stmt, params![source, limit as i64], |r| DeadLetter::read(r))
        })
        .await
    }

    async fn dead_letter(&self, id: DeadId) -> Result<Option<DeadLetterDetail>, QueueError> {
        self.run(move |c| {
            let mut stmt = c.prepare_cached(&format!("SELECT * FROM ({DEAD_LETTERS}) WHERE id = ?3"))?;
            let params = params![Option::<String>::None, 0, id.to_string()];
            let Some(letter) = first(&mut stmt, params, |r| DeadLetter::read(r))? else { return Ok(None) };
            let (body, attempt_log) = match id {
                DeadId::Event(n) => (Some((n, stored_body(c, n)?)), attempt_log(c, n)?),
                DeadId::Inbound(_) => (None, Vec::new()),
            };
            let request = stored_request(c, &letter.inbound_id)?;
            DeadLetterDetail::assemble(letter, body, attempt_log, request).map(Some)
        })
        .await
    }

    async fn requeue_dead(&self, id: i64, now: Millis) -> Result<Option<i64>, QueueError> {
        self.run(move |c| {
            let tx = c.transaction()?;
            let copied = tx.execute(
                "INSERT INTO events (inbound_id, kind, order_key, routing_key, action, dedup_key, body, format, created_at, next_at)
                 SELECT inbound_id, kind, order_key, routing_key, action, dedup_key, body, format, ?2, ?2
                 FROM events WHERE id = ?1 AND state = 'dead'",
                params![id, now],
            )?;
            if copied == 0 {
                return Ok(None);
            }
            let new_id = tx.last_insert_rowid();
            tx.execute(
                "UPDATE events SET state = 'replayed', done_at = ?2, last_error = last_error || ?3 WHERE id = ?1",
                params![id, now, format!(" (replayed as event {new_id})")],
            )?;
            tx.commit()?;
            Ok(Some(new_id))
        })
        .await
    }

    async fn inbound(&self, id: String) -> Result<Option<StoredInbound>, QueueError> {
        self.run(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, source, headers, query, body, status, error, received_at FROM inbound WHERE id = ?1",
            )?;
            first(&mut stmt, [&id], |r| StoredInbound::read(r))
        })
        .await
    }

    async fn remap(
        &self,
        id: String,
        status: InboundStatus,
        events: Vec<Event>,
        now: Millis,
    ) -> Result<Option<usize>, QueueError> {
        let events: Vec<PreparedEvent> = events.into_iter().map(PreparedEvent::new).collect();
        self.run(move |c| {
            let tx = c.transaction()?;
            let (status, error) = status_columns(&status);
            let source: Option<String> = tx
                .query_row(
                    "UPDATE inbound SET status = ?2, error = ?3 WHERE id = ?1 AND status IN ('mapping_failed', 'too_many_events') RETURNING source",
                    params![id, status, error],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(source) = source else {
                return Ok(None);
            };
            insert_events(&tx, &id, &source, &events, now)?;
            tx.commit()?;
            Ok(Some(events.len()))
        })
        .await
    }

    async fn delete_dead(&self, id: DeadId) -> Result<bool, QueueError> {
        self.run(move |c| {
            let tx = c.transaction()?;
            let n = match &id {
                DeadId::Event(n) => {
                    tx.execute("DELETE FROM attempts WHERE event_id = ?1 AND EXISTS (SELECT 1 FROM events WHERE id = ?1 AND state = 'dead')", [n])?;
                    tx.execute("DELETE FROM events WHERE id = ?1 AND state = 'dead'", [n])?
                }
                DeadId::Inbound(s) => tx.execute("DELETE FROM inbound WHERE id = ?1 AND status IN ('mapping_failed', 'too_many_events')", [s])?,
            };
            tx.commit()?;
            Ok(n > 0)
        })
        .await
    }

    async fn events(&self, q: EventQuery) -> Result<Vec<EventRow>, QueueError> {
        self.run(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "{EVENT_ROW} WHERE (?1 IS NULL OR instr(lower(e.dedup_key), lower(?1)) > 0 OR i.source = ?1 OR e.state = ?1)
                 AND (?2 IS NULL OR e.id < ?2) ORDER BY e.id DESC LIMIT ?3"
            ))?;
            all(&mut stmt, params![q.search, q.before, q.limit as i64], |r| EventRow::read(r))
        })
        .await
    }

    async fn event(&self, id: i64) -> Result<Option<EventDetail>, QueueError> {
        self.run(move |c| {
            let mut stmt = c.prepare_cached(&format!("{EVENT_ROW} WHERE e.id = ?1"))?;
            let Some(row) = first(&mut stmt, [id], |r| EventRow::read(r))? else { return Ok(None) };
            let request = stored_request(c, &row.summary.inbound_id)?;
            EventDetail::assemble(row, stored_body(c, id)?, attempt_log(c, id)?, request).map(Some)
        })
        .await
    }
}

/// Both kinds of dead letter as one relation; `?1` filters by source (NULL: all).
const DEAD_LETTERS: &str = "
    SELECT CAST(e.id AS TEXT) AS id, 'event' AS kind, i.source, e.inbound_id, e.done_at AS at,
           COALESCE(e.last_error, '') AS reason, e.action, e.dedup_key, e.attempts
    FROM events e JOIN inbound i ON i.id = e.inbound_id
    WHERE e.state = 'dead' AND (?1 IS NULL OR i.source = ?1)
    UNION ALL
    SELECT i.id, 'mapping_failed', i.source, i.id, i.received_at, COALESCE(i.error, ''), NULL, NULL, 0
    FROM inbound i
    WHERE i.status = 'mapping_failed' AND (?1 IS NULL OR i.source = ?1)
    UNION ALL
    SELECT i.id, 'too_many_events', i.source, i.id, i.received_at, COALESCE(i.error, ''), NULL, NULL, 0
    FROM inbound i
    WHERE i.status = 'too_many_events' AND (?1 IS NULL OR i.source = ?1)";

/// The columns of an [`EventRow`], for `events` and `event` to filter.
const EVENT_ROW: &str = "SELECT e.id, e.inbound_id, i.source, e.kind, e.action, e.dedup_key, e.state, e.attempts,
    e.created_at, e.last_error, e.routing_key,
    (SELECT a.dedup_key FROM attempts a WHERE a.event_id = e.id AND a.dedup_key IS NOT NULL ORDER BY a.rowid DESC LIMIT 1)
    FROM events e JOIN inbound i ON i.id = e.inbound_id";

/// Event `id`'s stored body.
fn stored_body(c: &Connection, id: i64) -> Result<StoredBody, QueueError> {
    let mut stmt = c.prepare_cached("SELECT format, body FROM events WHERE id = ?1")?;
    first(&mut stmt, [id], |r| StoredBody::read(r))?.ok_or_else(|| QueueError::BadRow(format!("event {id} vanished")))
}

/// The stored request of inbound `id`.
fn stored_request(c: &Connection, id: &str) -> Result<StoredRequest, QueueError> {
    let mut stmt = c.prepare_cached("SELECT headers, query, body FROM inbound WHERE id = ?1")?;
    first(&mut stmt, [id], |r| StoredRequest::read(r))?
        .ok_or_else(|| QueueError::BadRow(format!("inbound {id} is missing")))
}

/// Every attempt at event `id`, oldest first.
fn attempt_log(c: &Connection, id: i64) -> Result<Vec<Attempt>, QueueError> {
    let mut stmt =
        c.prepare_cached("SELECT at, status, detail, dedup_key FROM attempts WHERE event_id = ?1 ORDER BY rowid")?;
    all(&mut stmt, [id], |r| Attempt::read(r))
}

#[cfg(test)]
mod tests;
