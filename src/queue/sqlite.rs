//! The embedded SQLite queue (WAL), the default backend.
//!
//! rusqlite blocks, so one dedicated thread owns the connection and serves commands sent
//! over a channel. That thread also gives group commit for free: every `accept` waiting in
//! the channel when it wakes goes into the same transaction (one fsync for all of them), each
//! inside its own savepoint so one failure does not sink the others. Under `fsync`, a second
//! thread, the syncer, makes each committed group durable and answers its accepts while the
//! writer goes on with the next. Bodies of mapped and ignored webhooks are written once, to
//! the payload log beside the database ([`payloads`]), not into it.

mod payloads;
mod search;
mod space;

use super::lanes::{self, Candidate, Claims, Closing, Fate, Routes};
use super::ledger::{self, Entry};
use super::own_pages::{self, OwnSteps};
use super::room::{Freed, Headroom, RoomReading};
use super::rows::{
    failed_items_column, status_columns, Columns, Stored, StoredBody, StoredEvent, StoredRequest, EVENT_FORMAT,
};
use super::schema::{self, step_failed};
use super::state::{DEAD, PENDING, REPLAYED};
use super::{
    applied_migrations,
    sql::{self, Seen, DEAD_INBOUND},
    tally_dropped, Accepted, Attempt, Batch, Capacity, DeadDropped, DeadId, DeadLetter, DeadLetterDetail, DeadLetters,
    DeadToDrop, Deliveries, Durability, EventDetail, EventQuery, EventRow, EventState, Finish, InboundStatus, Incident,
    IncidentQuery, Incidents, Inspect, Intake, Millis, NewInbound, OpenIncidents, PaceRule, PaceState, Pick,
    QueueError, Retention, Role, StoredInbound,
};
use crate::event::own::{self, Reason};
use crate::event::{Action, Event, RoutingKey, Sequence};
use async_trait::async_trait;
use const_format::formatcp;
use payloads::{Logged, PayloadLog, Segment};
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Statement};
use space::Space;
use std::future::Future;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll, Waker};
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
    // The payload log: where a body written there is (`body` holds nothing then).
    &[r#"
ALTER TABLE inbound ADD COLUMN body_segment TEXT;
ALTER TABLE inbound ADD COLUMN body_offset INTEGER;
ALTER TABLE inbound ADD COLUMN body_len INTEGER;
ALTER TABLE inbound ADD COLUMN body_crc INTEGER;
CREATE INDEX inbound_segment ON inbound (body_segment) WHERE body_segment IS NOT NULL;
"#],
    &[schema::SEEN_BODIES],
    &[schema::INBOUND_UNMATCHED],
    &[schema::EVENTS_SUMMARY],
    // The incident ledger, and the rule of each event.
    &[schema::INCIDENTS],
    &[schema::OWN_PAGES, schema::INBOUND_ITEMS_FAILED],
    // The highest `sequence` applied per lane: stale events.
    &[schema::LANE_SEQUENCES],
    // Storms: priority and fair share at the claim, and each routing key's pace kept here, so
    // a restart grants no fresh burst (PostgreSQL has kept it since replicas share it).
    &[
        schema::STORMS,
        r#"
CREATE TABLE pace (
    key_sha256   TEXT PRIMARY KEY,
    tat          REAL NOT NULL,
    closed_until INTEGER NOT NULL,
    log          TEXT NOT NULL,
    at           INTEGER NOT NULL
);
"#,
    ],
    // The search index (`search`), filled off the accept path.
    &[search::MIGRATION],
];

/// A pending event is deliverable when it is due, unleased, and no earlier pending event
/// shares its lane.
const LANE_HEAD: &str = formatcp!(
    "(e.order_key IS NULL OR NOT EXISTS (SELECT 1 FROM events p WHERE p.state = '{PENDING}' AND p.order_key = e.order_key AND p.id < e.id))"
);

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
    Claim(Millis, usize, Millis, Box<Pick>, oneshot::Sender<Result<Leased, QueueError>>),
}

/// An accept made ready for the writer on the caller's thread: the JSON it stores is
/// serialized there (an event carries its body's text from the moment it is built), so the
/// one writer thread, which every accept waits for, only runs SQL.
struct Prepared {
    inbound: NewInbound,
    headers: String,
    events: Vec<Event>,
    /// Where the body went in the payload log; `None`: it is stored in the row.
    logged: Option<Logged>,
}

impl Prepared {
    /// An accept whose body is not (yet) in the payload log: [`log_bodies`] puts it there.
    fn new(inbound: NewInbound, events: Vec<Event>) -> Prepared {
        let headers = inbound.headers.to_string();
        Prepared { inbound, headers, events, logged: None }
    }

    /// About what it writes: its body (in the payload log or its row), headers and query, its
    /// events' bodies, and a page's worth of rows and index entries, for the room it takes.
    fn bytes(&self) -> u64 {
        const ROWS: usize = 4096;
        let events: usize = self.events.iter().map(|e| e.text().len() + ROWS / 4).sum();
        (self.inbound.body.len() + self.headers.len() + self.inbound.query.len() + events + ROWS) as u64
    }
}

/// What a claim leased (lane heads with the triggers collapsed into them), still as stored:
/// their bodies are read by the claimer (`Deliveries::claim_with`, action and dedup_key
/// only), off the writer thread.
type Leased = lanes::Claim;

/// The SQLite queue. Cheap to share; dropping the last handle stops its threads (the writer
/// ends when the channel closes, and the checkpointer when the writer's wake-ups end).
pub struct SqliteQueue {
    tx: mpsc::Sender<Cmd>,
    payloads: Arc<PayloadLog>,
    /// The headroom, and the gate accepts pass.
    space: Arc<Space>,
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
            ErrorCode::DiskFull => QueueError::OutOfRoom(detail),
            ErrorCode::SystemIoFailure
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
    /// Opens (creating or migrating if needed) the database and starts its thread, with no
    /// headroom (tests and tools; `serve` opens it with `[storage]`'s, through `queue::open`).
    pub fn open(path: &Path, durability: Durability, role: Role) -> Result<SqliteQueue, QueueError> {
        SqliteQueue::open_with(path, durability, role, Headroom::NONE)
    }

    /// [`SqliteQueue::open`], refusing accepts outside `headroom`.
    pub fn open_with(
        path: &Path,
        durability: Durability,
        role: Role,
        headroom: Headroom,
    ) -> Result<SqliteQueue, QueueError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            private_dir(dir).map_err(|e| io(format!("cannot create {}: {e}", dir.display())))?;
        }
        // Created empty for the owner alone, whatever the umask: it will hold routing keys, and
        // SQLite gives its WAL and shared-memory files the database file's mode.
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| io(format!("cannot create {}: {e}", path.display())))?;
        let mut conn =
            Connection::open(path).map_err(|e| classify(&e, format!("cannot open {}: {e}", path.display())))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        // Every statement the writer runs stays prepared (the default 16 is about as many as
        // an accept, a claim and a finish use together, before the console's).
        conn.set_prepared_statement_cache_capacity(64);
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // NORMAL (WAL, no fsync per commit): leases, attempts and delivery states may be lost
        // to a power cut, which only means an event is sent again (at-least-once). Accepts,
        // the promise behind a 2xx, are answered by the syncer once it synced the WAL.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "wal_autocheckpoint", WAL_CEILING_PAGES)?;
        migrate(&mut conn)?;
        if role == Role::Deliverer {
            conn.execute(
                formatcp!("UPDATE events SET lease_until = 0 WHERE state = '{PENDING}' AND lease_until > 0"),
                [],
            )?;
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
        let durable = match durability {
            Durability::Fsync => {
                let (to_sync, committed) = mpsc::channel();
                let mut wal = path.as_os_str().to_owned();
                wal.push("-wal");
                let wal = WalFile { path: wal.into(), file: None };
                std::thread::Builder::new()
                    .name("pagerhook-fsync".into())
                    .spawn(move || sync_then_answer(wal, committed))
                    .map_err(io)?;
                Some(to_sync)
            }
            Durability::Process => None,
        };
        let (tx, rx) = mpsc::channel();
        let payloads = Arc::new(PayloadLog::beside(path));
        let space = Arc::new(Space::new(path, headroom, Arc::clone(&payloads), role == Role::Deliverer));
        // Judged before the first accept: a store opened on a full disk refuses at once.
        if let Err(e) = space.measure(&conn) {
            tracing::warn!(error = %e, "cannot measure the store's room");
        }
        let (log, measured) = (Arc::clone(&payloads), Arc::clone(&space));
        std::thread::Builder::new()
            .name("pagerhook-sqlite".into())
            .spawn(move || serve(conn, rx, &log, durable, wake, &measured))
            .map_err(io)?;
        Ok(SqliteQueue { tx, payloads, space })
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
        self.space.noting(rx.await.map_err(|_| QueueError::Closed)?)
    }
}

/// Creates `dir` and its missing parents for the owner alone (0700); one that exists keeps its
/// mode: the operator chose it.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
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

/// The connection thread: runs jobs in order, batching consecutive writes into one
/// transaction: group commit. Under `fsync`, `durable` is the syncer, which answers accepts.
fn serve(
    mut conn: Connection,
    rx: mpsc::Receiver<Cmd>,
    log: &PayloadLog,
    durable: Option<mpsc::Sender<Committed>>,
    wake: mpsc::SyncSender<()>,
    space: &Space,
) {
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
        let batch = log_bodies(log, batch);
        commit_batch(&mut conn, batch, durable.as_ref());
        space.measure_if_due(&conn);
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
    Claim(oneshot::Sender<Result<Leased, QueueError>>, Result<Leased, QueueError>),
}

/// Appends the bodies of the batch's accepts to the payload log, here on the writer's thread
/// (a write can block; a request's thread must not). Dead letters keep their body in the row:
/// it lives until replayed or deleted. An accept whose body cannot be written is answered
/// with the error (503) and leaves the batch.
fn log_bodies(log: &PayloadLog, batch: Vec<Write>) -> Vec<Write> {
    let mut kept = Vec::with_capacity(batch.len());
    for write in batch {
        match write {
            Write::Accept(mut accept, reply) if !accept.inbound.status.is_dead_letter() => {
                match log.append(&accept.inbound.body, accept.inbound.received_at) {
                    Ok(logged) => {
                        accept.logged = Some(logged);
                        kept.push(Write::Accept(accept, reply));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot write a payload: the accept is answered 503");
                        let _ = reply.send((Err(e), accept));
                    }
                }
            }
            other => kept.push(other),
        }
    }
    kept
}

fn commit_batch(conn: &mut Connection, batch: Vec<Write>, durable: Option<&mpsc::Sender<Committed>>) {
    let (answers, outcome) = run_batch(conn, batch);
    let failed = || outcome.as_ref().err().map(|e| classify(e, format!("commit failed: {e}")));
    // Writes not yet answered when the transaction failed early are dropped with the batch:
    // their callers see `Closed` (an accept answers 503, never a 2xx).
    if let Err(e) = &outcome {
        tracing::error!(error = %e, "storage commit failed");
    }
    match durable {
        // Accepts carry a promise to a sender (the 2xx): they are answered once the WAL that
        // holds their commit is on disk, by the syncer, while this thread goes on writing.
        // Claims and finishes promise nothing to anyone and are answered now.
        Some(syncer) if outcome.is_ok() => {
            let (accepts, delivery): (Vec<Answer>, Vec<Answer>) =
                answers.into_iter().partition(|a| matches!(a, Answer::Accept(..)));
            answer_all(delivery, || None);
            if !accepts.is_empty() {
                if let Err(mpsc::SendError(c)) = syncer.send(Committed(accepts)) {
                    answer_all(c.0, || Some(QueueError::Closed));
                }
            }
        }
        _ => answer_all(answers, failed),
    }
}

/// A committed group's accepts, waiting for their payloads and the WAL to reach the disk.
struct Committed(Vec<Answer>);

/// Runs a batch in one transaction: the answers, and whether the transaction committed.
fn run_batch(conn: &mut Connection, batch: Vec<Write>) -> (Vec<Answer>, Result<(), rusqlite::Error>) {
    let (outcomes, committed) = match all_or_nothing(conn, &batch) {
        Some(done) => done,
        None => one_by_one(conn, &batch),
    };
    // Writes without an outcome (the transaction failed before them) are dropped with their
    // replies: their callers see `Closed`.
    (batch.into_iter().zip(outcomes).map(|(w, o)| o.answer(w)).collect(), committed)
}

/// The common case, cheaply: every write straight into the transaction. `None` when one
/// failed; the transaction is rolled back, for [`one_by_one`] to run again. Savepoints for
/// every write made SQLite copy each page a write touched first into a statement journal
/// (a third of the writer's time), to undo failures that almost never happen.
fn all_or_nothing(conn: &mut Connection, batch: &[Write]) -> Option<(Vec<Outcome>, Result<(), rusqlite::Error>)> {
    let tx = match conn.transaction() {
        Ok(tx) => tx,
        Err(e) => return Some((Vec::new(), Err(e))),
    };
    let mut outcomes = Vec::with_capacity(batch.len());
    for write in batch {
        let outcome = execute(&tx, write);
        if !outcome.holds() {
            return None;
        }
        outcomes.push(outcome);
    }
    Some((outcomes, tx.commit()))
}

/// Each write in its own savepoint, so one failure does not sink the others. The statements
/// are cached: `Transaction::savepoint` parsed two anew for every write.
///
/// A write whose failure rolled back the whole transaction (SQLite does that on a full disk,
/// whatever the savepoints) is answered with its error and left out of a new try of the
/// others: a claim or finish beside an accept refused for lack of space still commits.
fn one_by_one(conn: &mut Connection, batch: &[Write]) -> (Vec<Outcome>, Result<(), rusqlite::Error>) {
    let mut sunk: Vec<Option<Outcome>> = batch.iter().map(|_| None).collect();
    loop {
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut sank = None;
        let committed = (|| -> Result<(), rusqlite::Error> {
            let tx = conn.transaction()?;
            for (i, write) in batch.iter().enumerate().filter(|(i, _)| sunk[*i].is_none()) {
                tx.prepare_cached("SAVEPOINT write")?.execute([])?;
                let outcome = execute(&tx, write);
                if !outcome.holds() {
                    if tx.is_autocommit() {
                        sank = Some((i, outcome));
                        return Ok(());
                    }
                    tx.prepare_cached("ROLLBACK TO write")?.execute([])?;
                }
                tx.prepare_cached("RELEASE write")?.execute([])?;
                outcomes.push(outcome);
            }
            tx.commit()
        })();
        match sank {
            Some((i, outcome)) => sunk[i] = Some(outcome),
            None => {
                // Back in the batch's order: each sunk write where it stood.
                let mut ran = outcomes.into_iter();
                let all = sunk.into_iter().map_while(|s| s.or_else(|| ran.next())).collect();
                return (all, committed);
            }
        }
    }
}

/// Sends each answer, or `failed()`'s error in its place: only what is committed (and, for
/// accepts under `fsync`, on disk) may be reported as done.
fn answer_all(answers: Vec<Answer>, failed: impl Fn() -> Option<QueueError>) {
    for answer in answers {
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
}

/// The syncer thread: makes durable, once for every group committed since its last sync, the
/// payload segments their accepts wrote to and then the WAL, and answers those accepts. The
/// writer commits without waiting for the disk (`synchronous = NORMAL` writes each commit to
/// the WAL file in order), so one `fdatasync` of that file covers every commit written before
/// it, and the next group is written while this one syncs.
fn sync_then_answer(mut wal: WalFile, committed: mpsc::Receiver<Committed>) {
    while let Ok(first) = committed.recv() {
        let mut ready = vec![first];
        ready.extend(committed.try_iter());
        let synced = sync_segments(&ready).and_then(|()| wal.sync());
        if let Err(e) = &synced {
            tracing::error!(error = %e, "storage sync failed: accepts are answered 503");
        }
        for c in ready {
            answer_all(c.0, || synced.as_ref().err().map(|e| io(format!("cannot sync the payloads or the WAL: {e}"))));
        }
    }
}

/// Syncs each payload segment the accepts in `ready` wrote to, once.
fn sync_segments(ready: &[Committed]) -> std::io::Result<()> {
    let mut segments: Vec<&Arc<Segment>> = Vec::new();
    for answer in ready.iter().flat_map(|c| &c.0) {
        if let Answer::Accept(_, _, accept) = answer {
            if let Some(l) = &accept.logged {
                if !segments.iter().any(|s| Arc::ptr_eq(s, &l.segment)) {
                    segments.push(&l.segment);
                }
            }
        }
    }
    segments.into_iter().try_for_each(|s| s.sync())
}

/// The database's WAL file, opened by us to sync it. SQLite keeps the file while any of its
/// connections is open (restarting the WAL writes over it in place), so this handle names the
/// file SQLite writes. A replaced file is reopened (and its directory entry synced); a missing
/// one means SQLite checkpointed everything into the database file, and synced that, before
/// removing it.
struct WalFile {
    path: std::path::PathBuf,
    file: Option<std::fs::File>,
}

impl WalFile {
    fn sync(&mut self) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let current = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let file = match self.file.take() {
            Some(f) if f.metadata()?.ino() == current.ino() => f,
            _ => {
                let f = std::fs::File::open(&self.path)?;
                if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::File::open(dir)?.sync_all()?;
                }
                f
            }
        };
        let synced = file.sync_data();
        self.file = Some(file);
        synced
    }
}

/// What one write did, kept until its batch's commit is known.
enum Outcome {
    Accept(Result<Accepted, QueueError>),
    Finish(Result<bool, QueueError>),
    Claim(Result<Leased, QueueError>),
}

impl Outcome {
    /// Whether what the write did may stay: a failed write is undone. (A duplicate accept
    /// wrote nothing.)
    fn holds(&self) -> bool {
        match self {
            Outcome::Accept(r) => r.is_ok(),
            Outcome::Finish(r) => r.is_ok(),
            Outcome::Claim(r) => r.is_ok(),
        }
    }

    /// The answer to `write`, whose outcome this is.
    fn answer(self, write: Write) -> Answer {
        match (write, self) {
            (Write::Accept(accept, reply), Outcome::Accept(r)) => Answer::Accept(reply, r, accept),
            (Write::Finish(.., reply), Outcome::Finish(r)) => Answer::Finish(reply, r),
            (Write::Claim(.., reply), Outcome::Claim(r)) => Answer::Claim(reply, r),
            (Write::Accept(..) | Write::Finish(..) | Write::Claim(..), _) => {
                unreachable!("`execute` makes each write an outcome of its own kind")
            }
        }
    }
}

/// Runs one write.
fn execute(c: &Connection, write: &Write) -> Outcome {
    match write {
        Write::Accept(accept, _) => Outcome::Accept(insert_one(c, accept)),
        Write::Finish(id, lease, done, _) => Outcome::Finish(finish_one(c, *id, *lease, &done.0, &done.1)),
        Write::Claim(now, limit, until, pick, _) => Outcome::Claim(claim_in(c, (*now, *until), *limit, pick)),
    }
}

/// Records one delivery attempt and, if the event is still held under `lease`, its outcome.
fn finish_one(tx: &Connection, id: i64, lease: Millis, attempt: &Attempt, finish: &Finish) -> Result<bool, QueueError> {
    tx.prepare_cached(sql::RECORD_ATTEMPT)?.execute(params![
        id,
        attempt.at,
        attempt.status,
        attempt.detail,
        attempt.dedup_key
    ])?;
    let o = lanes::Outcome::of(attempt, finish);
    let (error_changes, error) = o.last_error();
    let n = tx.prepare_cached(sql::FINISH)?.execute(params![
        o.state.as_str(),
        o.done_at,
        o.next_at,
        error_changes,
        error,
        id,
        lease
    ])?;
    if n == 1 {
        record_in_ledger(tx, id, attempt, finish)?;
    }
    if let (1, Finish::DeadPaged(_, to)) = (n, finish) {
        ready(own_pages::page_dead_trigger(&mut OwnStore(tx), id, to.as_ref(), attempt.at))?;
    }
    Ok(n == 1)
}

/// Writes what PagerDuty accepted of event `id` to the incident ledger (`ledger::Entry`).
fn record_in_ledger(tx: &Connection, id: i64, attempt: &Attempt, finish: &Finish) -> Result<(), rusqlite::Error> {
    if !matches!(finish, Finish::Delivered) || attempt.dedup_key.is_none() {
        return Ok(());
    }
    let sent = tx.prepare_cached(ledger::SENT)?.query_row([id], |r| Ok(ledger::Sent::read(r))).optional()?;
    let Some(entry) = sent.and_then(|s| ledger::readable(id, s)).and_then(|s| Entry::of(s, attempt, finish)) else {
        return Ok(());
    };
    let mut stmt = tx.prepare_cached(entry.statement())?;
    match &entry {
        Entry::Trigger { routing_key, dedup_key, source, rule, at, severity, summary } => {
            stmt.execute(params![routing_key, dedup_key, source, rule, at, severity, summary])?
        }
        Entry::Close { routing_key, dedup_key, at, by, .. } => stmt.execute(params![at, by, routing_key, dedup_key])?,
    };
    Ok(())
}

fn insert_one(tx: &Connection, accept: &Prepared) -> Result<Accepted, QueueError> {
    let (i, events) = (&accept.inbound, &accept.events);
    // The body first: a sender's retry repeats body and delivery id, and is found there
    // without a row to undo.
    for (seen, key) in [(Seen::Body, &i.body_sha256), (Seen::Delivery, &i.delivery_id)] {
        let Some(key) = key else { continue };
        if let Some(id) = seen_before(tx, seen, i, key)? {
            // A new body under a used delivery id: the body just recorded belongs to nothing.
            tx.prepare_cached(sql::FORGET_SEEN_BODY)?.execute(params![i.source, i.id])?;
            return Ok(Accepted::Duplicate { id });
        }
    }
    let (status, error) = status_columns(&i.status);
    tx.prepare_cached(
        "INSERT INTO inbound (id, source, received_at, dedupe_id, headers, query, body, status, error,
                              body_segment, body_offset, body_len, body_crc, failed_items)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
        i.id,
        i.source,
        i.received_at,
        i.delivery_id,
        accept.headers,
        i.query,
        if accept.logged.is_some() { &[][..] } else { i.body.as_ref() },
        status,
        error,
        accept.logged.as_ref().map(Logged::segment_name),
        accept.logged.as_ref().map(|l| l.offset as i64),
        accept.logged.as_ref().map(|l| l.len as i64),
        accept.logged.as_ref().map(|l| l.crc),
        failed_items_column(&i.status),
    ])?;
    let closing = Closing::of(&i.source, &i.may_close, i.silent_before);
    let stale = insert_events(tx, (&i.id, &i.source), events, (i.received_at, i.resolve_delay), closing)?;
    if let Some(page) = &i.page {
        ready(own_pages::page(&mut OwnStore(tx), &i.source, page, i.received_at))?;
    }
    Ok(Accepted::Committed { id: i.id.clone(), events: events.len(), stale })
}

/// Records `key` (a body's SHA-256 or a delivery id) of `i`'s source for `i`; the inbound id
/// that recorded it first, if one did.
fn seen_before(tx: &Connection, seen: Seen, i: &NewInbound, key: &str) -> Result<Option<String>, rusqlite::Error> {
    // Cached statements: parsing them anew for every accept was ~3 % of the writer's time.
    if tx.prepare_cached(seen.record())?.execute(params![i.source, key, i.id, i.received_at])? == 1 {
        return Ok(None);
    }
    tx.prepare_cached(seen.first())?.query_row(params![i.source, key], |r| r.get(0)).map(Some)
}

/// Queues `events` for `inbound_id`, with sticky routing within `source` (`lanes::route`); an
/// event `closing` refuses is stored dead with its reason.
fn insert_events(
    tx: &Connection,
    (inbound_id, source): (&str, &str),
    events: &[Event],
    (at, resolve_delay): (Millis, Millis),
    closing: Closing<'_>,
) -> Result<usize, QueueError> {
    let mut routed = ready(lanes::route(&mut StoredRoutes(tx), source, events, closing))?;
    ready(lanes::escalate(&mut StoredRoutes(tx), source, &mut routed, closing))?;
    let mut record = tx.prepare_cached(sql::RECORD_ROUTE)?;
    for (dk, key) in &routed.routes {
        record.execute(params![source, dk, key, at])?;
    }
    let mut stale = 0;
    for (e, refused) in routed.events.iter().zip(&routed.refused) {
        let fate = ready(lanes::fate(&mut StoredRoutes(tx), e, (refused.as_ref(), closing), at, resolve_delay))?;
        let priority = e.priority();
        let columns = params![
            inbound_id,
            e.kind().as_str(),
            e.order_key(),
            e.routing_key().expose(),
            e.action().map(|a| a.as_str()),
            e.dedup_key().map(|k| k.as_str()),
            e.text(),
            EVENT_FORMAT,
            at,
            e.rule(),
            e.summary(),
        ];
        let mut all = columns.to_vec();
        match &fate {
            Fate::Queue { next_at } => {
                all.extend([next_at as &dyn rusqlite::ToSql, &priority]);
                tx.prepare_cached(sql::INSERT_EVENT)?.execute(all.as_slice())?
            }
            Fate::Done { state, why } => {
                let state = state.as_str();
                all.extend([&state as &dyn rusqlite::ToSql, why]);
                tx.prepare_cached(sql::INSERT_FINISHED)?.execute(all.as_slice())?
            }
        };
        stale += usize::from(matches!(fate, Fate::Done { state: EventState::Stale, .. }));
    }
    Ok(stale)
}

/// Runs one of the steps both backends share (`lanes`) here, on the writer thread. SQLite's
/// side of them blocks until each statement is done and never waits on anything else, so the
/// step is finished the first time it is polled.
fn ready<T>(step: impl Future<Output = Result<T, QueueError>>) -> Result<T, QueueError> {
    match std::pin::pin!(step).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(done) => done,
        Poll::Pending => Err(QueueError::Database("a storage step waited on the SQLite writer thread".into())),
    }
}

/// The sticky routes as stored.
struct StoredRoutes<'c>(&'c Connection);

impl Routes for StoredRoutes<'_> {
    async fn opener(&mut self, routing_key: &str, dedup_key: &str) -> Result<Option<String>, QueueError> {
        let mut stmt = self.0.prepare_cached(ledger::OPENER)?;
        Ok(stmt.query_row(params![routing_key, dedup_key], |r| r.get(0)).optional()?)
    }

    async fn still_silent(&mut self, routing_key: &str, dedup_key: &str, before: Millis) -> Result<bool, QueueError> {
        Ok(self.0.prepare_cached(ledger::STILL_SILENT)?.exists(params![routing_key, dedup_key, before])?)
    }

    async fn lane_waiting(&mut self, lane: &str) -> Result<bool, QueueError> {
        Ok(self.0.prepare_cached(sql::LANE_WAITING)?.exists([lane])?)
    }

    async fn delayed_resolve(&mut self, lane: &str, at: Millis) -> Result<Option<i64>, QueueError> {
        let mut stmt = self.0.prepare_cached(sql::DELAYED_RESOLVE)?;
        Ok(stmt.query_row(params![lane, at], |r| r.get(0)).optional()?)
    }

    async fn damp(&mut self, id: i64, at: Millis, why: &str) -> Result<(), QueueError> {
        self.0.prepare_cached(sql::DAMP)?.execute(params![at, why, id])?;
        Ok(())
    }

    async fn sequence(&mut self, lane: &str) -> Result<Option<(String, i64)>, QueueError> {
        let mut stmt = self.0.prepare_cached(sql::LANE_SEQUENCE)?;
        Ok(stmt.query_row([lane], |r| Ok((r.get(0)?, r.get(1)?))).optional()?)
    }

    async fn apply_sequence(&mut self, lane: &str, sequence: Sequence, at: Millis) -> Result<(), QueueError> {
        let (kind, value) = sequence.stored();
        self.0.prepare_cached(sql::APPLY_SEQUENCE)?.execute(params![lane, kind, value, at])?;
        Ok(())
    }

    async fn latest_route(&mut self, source: &str, dk: &str, own: &str) -> Result<Option<(String, bool)>, QueueError> {
        let mut stmt = self.0.prepare_cached(
            "SELECT routing_key, MAX(routing_key = ?3) OVER () FROM routes WHERE source = ?1 AND dedup_key = ?2
             ORDER BY at DESC, rowid DESC LIMIT 1",
        )?;
        Ok(stmt.query_row(params![source, dk, own], |r| Ok((r.get(0)?, r.get(1)?))).optional()?)
    }

    async fn family(
        &mut self,
        routing_key: &str,
        [dk, c, e, w]: [&str; 4],
        [lc, le, lw]: [&str; 3],
    ) -> Result<Vec<(String, Option<String>)>, QueueError> {
        let mut stmt = self.0.prepare_cached(ledger::FAMILY)?;
        all(&mut stmt, params![routing_key, dk, c, e, w, lc, le, lw], |r| Ok((r.col(0)?, r.col(1)?)))
    }
}

/// pagerhook's own pages, as this backend stores them.
struct OwnStore<'c>(&'c Connection);

impl OwnSteps for OwnStore<'_> {
    async fn waiting(&mut self, source: &str, reason: Reason) -> Result<i64, QueueError> {
        Ok(match reason {
            Reason::DeadTrigger => {
                self.0.prepare_cached(sql::OWN_WAITING_TRIGGERS)?.query_row([source], |r| r.get(0))?
            }
            other => self
                .0
                .prepare_cached(sql::OWN_WAITING_INBOUND)?
                .query_row(params![source, other.as_str()], |r| r.get(0))?,
        })
    }

    async fn open_incidents(&mut self) -> Result<Vec<(String, String, String)>, QueueError> {
        all(&mut *self.0.prepare_cached(sql::OWN_OPENED)?, [], |r| Ok((r.col(0)?, r.col(1)?, r.col(2)?)))
    }

    async fn queue_own(&mut self, source: &str, reason: Reason, event: &Event, now: Millis) -> Result<(), QueueError> {
        let record = own::dedup_key(source, reason);
        self.0.prepare_cached(sql::OWN_RECORD)?.execute(params![record, source, now, &[][..] as &[u8]])?;
        self.0.prepare_cached(sql::INSERT_EVENT)?.execute(params![
            record,
            event.kind().as_str(),
            event.order_key(),
            event.routing_key().expose(),
            event.action().map(|a| a.as_str()),
            event.dedup_key().map(|k| k.as_str()),
            event.text(),
            EVENT_FORMAT,
            now,
            super::PAGERHOOK,
            event.summary(),
            now,
            event.priority(),
        ])?;
        if event.action() == Some(Action::Trigger) {
            self.0.prepare_cached(sql::OWN_OPEN)?.execute(params![
                source,
                reason.as_str(),
                event.routing_key().expose(),
                now
            ])?;
        } else {
            self.0.prepare_cached(sql::OWN_CLOSE)?.execute(params![source, reason.as_str()])?;
        }
        Ok(())
    }

    async fn dead_trigger(&mut self, id: i64) -> Result<Option<(String, String)>, QueueError> {
        first(&mut *self.0.prepare_cached(sql::OWN_DEAD_TRIGGER)?, [id], |r| Ok((r.col(0)?, r.col(1)?)))
    }
}

/// A claim's statements, on the writer's connection (each prepared once and cached).
struct ClaimSteps<'c>(&'c Connection);

impl Claims for ClaimSteps<'_> {
    async fn next_in_lane(&mut self, now: Millis, lane: &str, after: i64) -> Result<Option<StoredEvent>, QueueError> {
        first(&mut *self.0.prepare_cached(sql::NEXT_IN_LANE)?, params![now, lane, after], |r| StoredEvent::read(r))
    }

    async fn collapse(&mut self, id: i64, now: Millis, reason: &str) -> Result<(), QueueError> {
        self.0.prepare_cached(sql::COLLAPSE)?.execute(params![now, reason, id])?;
        Ok(())
    }

    async fn lease(&mut self, id: i64, until: Millis) -> Result<(), QueueError> {
        self.0.prepare_cached(sql::LEASE)?.execute(params![until, id])?;
        Ok(())
    }

    async fn due_keys(&mut self, now: Millis) -> Result<Vec<String>, QueueError> {
        all(&mut *self.0.prepare_cached(sql::DUE_KEYS)?, [now], |r| r.col(0))
    }

    async fn take_pace(&mut self, sha: &str, now: Millis) -> Result<Option<PaceState>, QueueError> {
        // One writer: the pace is this claim's already.
        self.0.prepare_cached(TOUCH_PACE)?.execute(params![sha, now])?;
        Ok(Some(read_pace(self.0, sha)?))
    }

    async fn store_pace(&mut self, sha: &str, pace: &PaceState) -> Result<(), QueueError> {
        store_pace(self.0, sha, pace)
    }

    async fn candidates(&mut self, now: Millis, key: &str, sha: &str, n: usize) -> Result<Vec<Candidate>, QueueError> {
        all(&mut *self.0.prepare_cached(CANDIDATES)?, params![now, sha, key, n as i64], |r| {
            Ok(Candidate { event: StoredEvent::read(r)?, source: r.col(11)? })
        })
    }

    async fn served(&mut self, sha: &str, source: &str, now: Millis) -> Result<(), QueueError> {
        self.0.prepare_cached(sql::SERVED)?.execute(params![sha, source, now])?;
        Ok(())
    }

    async fn waiting_resolve(&mut self, lane: &str, after: i64) -> Result<Option<i64>, QueueError> {
        first(&mut *self.0.prepare_cached(sql::NEXT_RESOLVE)?, params![lane, after], |r| r.col(0))
    }

    async fn may_be_open(&mut self, lane: &str, head: i64) -> Result<bool, QueueError> {
        Ok(self.0.prepare_cached(sql::LANE_MAY_BE_OPEN)?.query_row(params![lane, head], |r| r.get(0))?)
    }

    async fn supersede(
        &mut self,
        lane: &str,
        (from, to): (i64, i64),
        now: Millis,
        why: &str,
    ) -> Result<Vec<i64>, QueueError> {
        all(&mut *self.0.prepare_cached(sql::SUPERSEDE)?, params![now, why, lane, from, to], |r| r.col(0))
    }
}

/// A claim's candidates of one routing key (`sql::CANDIDATES`): lane heads only.
const CANDIDATES: &str = formatcp!("{} AND {LANE_HEAD} {}", sql::CANDIDATES, sql::CANDIDATES_ORDER);

/// Makes the pace row of key `$1` if it has none, touched at `$2` (pruning forgets idle keys).
const TOUCH_PACE: &str = "INSERT INTO pace (key_sha256, tat, closed_until, log, at) VALUES ($1, 0, 0, '[]', $2)
     ON CONFLICT (key_sha256) DO UPDATE SET at = excluded.at";

/// The stored pace of the key of SHA-256 `sha` (its log as a JSON array).
fn read_pace(c: &Connection, sha: &str) -> Result<PaceState, QueueError> {
    let mut stmt = c.prepare_cached("SELECT tat, closed_until, log FROM pace WHERE key_sha256 = $1")?;
    let (tat, closed_until, log): (f64, Millis, String) =
        stmt.query_row([sha], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    let log: std::collections::VecDeque<Millis> =
        serde_json::from_str(&log).map_err(|e| QueueError::BadRow(format!("pace of key {sha}: log: {e}")))?;
    Ok(PaceState { tat, closed_until, log })
}

fn store_pace(c: &Connection, sha: &str, pace: &PaceState) -> Result<(), QueueError> {
    let log = serde_json::to_string(&pace.log).map_err(|e| QueueError::Database(e.to_string()))?;
    // SQLite numbers `$n` by first appearance: written in ascending order.
    let update = "UPDATE pace SET tat = $1, closed_until = $2, log = $3 WHERE key_sha256 = $4";
    c.prepare_cached(update)?.execute(params![pace.tat, pace.closed_until, log, sha])?;
    Ok(())
}

/// Leases up to `limit` events due at `now` until `until`, as `pick` says (`lanes::claim`).
fn claim_in(tx: &Connection, (now, until): (Millis, Millis), limit: usize, pick: &Pick) -> Result<Leased, QueueError> {
    ready(lanes::claim(&mut ClaimSteps(tx), now, limit, until, pick))
}

#[async_trait]
impl Intake for SqliteQueue {
    async fn accept(&self, inbound: NewInbound, events: Vec<Event>) -> Result<Accepted, QueueError> {
        // Out of room: refused before anything is written, so what room is left is delivery's.
        let accept = Box::new(Prepared::new(inbound, events));
        self.space.gate.spend(accept.bytes())?;
        let (reply, answer) = oneshot::channel();
        self.tx.send(Cmd::Write(Write::Accept(accept, reply))).map_err(|_| QueueError::Closed)?;
        let (accepted, _freed_here) = answer.await.map_err(|_| QueueError::Closed)?;
        self.space.noting(accepted)
    }
}

#[async_trait]
impl Deliveries for SqliteQueue {
    async fn claim_with(&self, now: Millis, limit: usize, lease: Duration, pick: &Pick) -> Result<Batch, QueueError> {
        let until = now + lease.as_millis() as Millis;
        let pick = Box::new(pick.clone());
        let leased = self.write(|reply| Write::Claim(now, limit, until, pick, reply)).await?;
        Ok(leased.into_batch(until))
    }

    async fn hold(&self, key_sha256: &str, until: Millis, rule: Arc<dyn PaceRule>) -> Result<(), QueueError> {
        let sha = key_sha256.to_string();
        self.run(move |c| {
            c.prepare_cached(TOUCH_PACE)?.execute(params![sha, super::now_millis()])?;
            let mut pace = read_pace(c, &sha)?;
            rule.hold(&mut pace, until);
            store_pace(c, &sha, &pace)
        })
        .await
    }

    async fn finish(&self, id: i64, lease: Millis, attempt: Attempt, finish: Finish) -> Result<bool, QueueError> {
        self.write(|reply| Write::Finish(id, lease, Box::new((attempt, finish)), reply)).await
    }

    async fn renew(&self, id: i64, lease: Millis, until: Millis) -> Result<bool, QueueError> {
        self.run(move |c| {
            let n = c.prepare_cached(sql::RENEW)?.execute(params![until, id, lease])?;
            Ok(n == 1)
        })
        .await
    }

    async fn defer(&self, id: i64, lease: Millis, until: Millis) -> Result<(), QueueError> {
        self.run(move |c| {
            c.execute(
                formatcp!(
                    "UPDATE events SET lease_until = 0, next_at = MAX(next_at, ?2)
                     WHERE id = ?1 AND state = '{PENDING}' AND lease_until = ?3"
                ),
                params![id, until, lease],
            )?;
            Ok(())
        })
        .await
    }

    async fn next_due(&self, now: Millis) -> Result<Option<Millis>, QueueError> {
        self.run(move |c| {
            let next = formatcp!("SELECT MIN(next_at) FROM events WHERE state = '{PENDING}' AND next_at > ?1");
            Ok(c.query_row(next, [now], |r| r.get(0))?)
        })
        .await
    }
}

#[async_trait]
impl DeadLetters for SqliteQueue {
    async fn dead_letters(&self, source: Option<String>, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        self.run(move |c| {
            let mut stmt = c.prepare_cached(sql::LIST_DEAD_LETTERS)?;
            all(&mut stmt, params![source, limit as i64], |r| DeadLetter::read(r))
        })
        .await
    }

    async fn dead_letter(&self, id: DeadId) -> Result<Option<DeadLetterDetail>, QueueError> {
        let log = Arc::clone(&self.payloads);
        self.run(move |c| {
            let mut stmt = c.prepare_cached(sql::ONE_DEAD_LETTER)?;
            let params = params![Option::<String>::None, id.to_string()];
            let Some(letter) = first(&mut stmt, params, |r| DeadLetter::read(r))? else { return Ok(None) };
            let (body, attempt_log) = match id {
                DeadId::Event(n) => (Some((n, stored_body(c, n)?)), attempt_log(c, n)?),
                DeadId::Inbound(_) => (None, Vec::new()),
            };
            let request = stored_request(c, &log, &letter.inbound_id)?;
            DeadLetterDetail::assemble(letter, body, attempt_log, request).map(Some)
        })
        .await
    }

    async fn resolved_since(&self, id: i64) -> Result<Option<Millis>, QueueError> {
        self.run(move |c| {
            let mut stmt = c.prepare_cached(ledger::LATER_IN_LANE)?;
            Ok(ledger::resolved(first(&mut stmt, [id], |r| Ok((r.col(0)?, r.col(1)?)))?))
        })
        .await
    }

    async fn requeue_dead(&self, id: i64, now: Millis) -> Result<Option<i64>, QueueError> {
        self.run(move |c| {
            let tx = c.transaction()?;
            let copied = tx.execute(
                formatcp!(
                    "INSERT INTO events (inbound_id, kind, order_key, routing_key, action, dedup_key, body, format, created_at, next_at, summary, rule, priority)
                     SELECT inbound_id, kind, order_key, routing_key, action, dedup_key, body, format, ?2, ?2, summary, rule, priority
                     FROM events WHERE id = ?1 AND state = '{DEAD}'"
                ),
                params![id, now],
            )?;
            if copied == 0 {
                return Ok(None);
            }
            let new_id = tx.last_insert_rowid();
            tx.execute(
                formatcp!("UPDATE events SET state = '{REPLAYED}', done_at = ?2, last_error = last_error || ?3 WHERE id = ?1"),
                params![id, now, format!(" (replayed as event {new_id})")],
            )?;
            ready(own_pages::settle(&mut OwnStore(&tx), now))?;
            tx.commit()?;
            Ok(Some(new_id))
        })
        .await
    }

    async fn inbound(&self, id: String) -> Result<Option<StoredInbound>, QueueError> {
        let log = Arc::clone(&self.payloads);
        self.run(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT id, source, headers, query, body, status, error, received_at, {BODY_REF}, failed_items
                 FROM inbound WHERE id = ?1"
            ))?;
            first(&mut stmt, [&id], |r| {
                let inbound = StoredInbound::read(r, 12)?;
                // A replay must map the body it was sent, or nothing: an unreadable one is an error.
                match logged_body(&log, r, 8)? {
                    Some(body) => Ok(StoredInbound { body: body.into(), ..inbound }),
                    None => Ok(inbound),
                }
            })
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
        self.run(move |c| {
            let tx = c.transaction()?;
            let items = failed_items_column(&status);
            let (status, error) = status_columns(&status);
            let source: Option<String> = tx
                .query_row(
                    formatcp!(
"UPDATE inbound SET status = ?2, error = ?3, failed_items = ?4 WHERE id = ?1 AND status IN ({DEAD_INBOUND}) RETURNING source"),
                    params![id, status, error, items],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(source) = source else {
                return Ok(None);
            };
            // A replay is an operator's action: "only the opener closes" does not apply.
            insert_events(&tx, (&id, &source), &events, (now, 0), Closing::Bypass)?;
            ready(own_pages::settle(&mut OwnStore(&tx), now))?;
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
                    let [attempts, event] = sql::DELETE_DEAD_EVENT;
                    tx.execute(attempts, [n])?;
                    tx.execute(event, [n])?
                }
                DeadId::Inbound(s) => tx.execute(sql::DELETE_DEAD_INBOUND, [s])?,
            };
            ready(own_pages::settle(&mut OwnStore(&tx), super::now_millis()))?;
            tx.commit()?;
            Ok(n > 0)
        })
        .await
    }
}

#[async_trait]
impl Inspect for SqliteQueue {
    async fn events(&self, q: EventQuery) -> Result<Vec<EventRow>, QueueError> {
        self.run(move |c| search::events(c, &q)).await
    }

    async fn event(&self, id: i64) -> Result<Option<EventDetail>, QueueError> {
        let log = Arc::clone(&self.payloads);
        self.run(move |c| {
            let mut stmt = c.prepare_cached(&format!("{EVENT_ROW} WHERE e.id = ?1"))?;
            let Some(row) = first(&mut stmt, [id], |r| EventRow::read(r))? else { return Ok(None) };
            let request = stored_request(c, &log, &row.summary.inbound_id)?;
            EventDetail::assemble(row, stored_body(c, id)?, attempt_log(c, id)?, request).map(Some)
        })
        .await
    }

    async fn depth(&self) -> Result<(u64, Option<Millis>), QueueError> {
        self.run(|c| Ok(c.query_row(sql::DEPTH, [], |r| Ok((r.get(0)?, r.get(1)?)))?)).await
    }

    async fn index_for_search(&self, batch: usize) -> Result<usize, QueueError> {
        self.run(move |c| search::index(c, batch)).await
    }
}

#[async_trait]
impl Incidents for SqliteQueue {
    async fn incidents(&self, q: IncidentQuery) -> Result<Vec<Incident>, QueueError> {
        self.run(move |c| {
            let mut stmt = c.prepare_cached(ledger::LIST)?;
            all(&mut stmt, params![q.open, q.source, q.opened_before, q.limit as i64], |r| Incident::read(r))
        })
        .await
    }

    async fn open_incidents(&self) -> Result<Vec<OpenIncidents>, QueueError> {
        self.run(|c| {
            let mut stmt = c.prepare_cached(ledger::OPEN_BY_SOURCE)?;
            all(&mut stmt, [], |r| ledger::read_open(r))
        })
        .await
    }

    async fn open_lanes(&self, dedup_key: String) -> Result<Vec<RoutingKey>, QueueError> {
        self.run(move |c| {
            let mut stmt = c.prepare_cached(ledger::OPEN_LANES)?;
            all(&mut stmt, [dedup_key], |r| ledger::routing_key(r.col(0)?))
        })
        .await
    }

    async fn silent_incidents(
        &self,
        source: String,
        before: Millis,
        limit: usize,
    ) -> Result<Vec<(RoutingKey, String)>, QueueError> {
        self.run(move |c| {
            let mut stmt = c.prepare_cached(ledger::SILENT)?;
            all(&mut stmt, params![source, before, limit as i64], |r| Ok((ledger::routing_key(r.col(0)?)?, r.col(1)?)))
        })
        .await
    }

    async fn lane_waiting(&self, lane: String) -> Result<bool, QueueError> {
        self.run(move |c| Ok(c.prepare_cached(sql::LANE_WAITING)?.exists([lane])?)).await
    }
}

#[async_trait]
impl Retention for SqliteQueue {
    async fn prune(&self, before: Millis) -> Result<u64, QueueError> {
        let log = Arc::clone(&self.payloads);
        self.run(move |c| {
            let tx = c.transaction()?;
            let mut n = 0;
            for statement in sql::PRUNE {
                n += tx.execute(statement, [before])?;
            }
            for statement in sql::PRUNE_PACE {
                tx.execute(statement, [before])?;
            }
            let finished = inline_finished_segments(&tx, &log, before)?;
            tx.commit()?;
            for name in finished {
                log.remove(&name)?;
            }
            Ok(n as u64)
        })
        .await
    }

    async fn prune_dead(&self, before: Millis, max_bytes: u64) -> Result<Vec<DeadDropped>, QueueError> {
        let max_bytes = i64::try_from(max_bytes).unwrap_or(i64::MAX);
        self.run(move |c| {
            let tx = c.transaction()?;
            let chosen = {
                let mut stmt = tx.prepare_cached(DEAD_TO_DROP)?;
                all(&mut stmt, params![before, max_bytes], |r| {
                    let id = DeadToDrop::id(&r.col::<String>(0)?, r.col(1)?)?;
                    Ok(DeadToDrop { id, source: r.col(2)?, bytes: r.col(3)?, expired: r.col(4)? })
                })?
            };
            for d in &chosen {
                match &d.id {
                    DeadId::Event(n) => {
                        for statement in sql::DELETE_DEAD_EVENT {
                            tx.prepare_cached(statement)?.execute([n])?;
                        }
                    }
                    DeadId::Inbound(s) => {
                        tx.prepare_cached(sql::DELETE_DEAD_INBOUND)?.execute([s])?;
                    }
                }
            }
            ready(own_pages::settle(&mut OwnStore(&tx), super::now_millis()))?;
            tx.commit()?;
            Ok(tally_dropped(&chosen))
        })
        .await
    }
}

#[async_trait]
impl Capacity for SqliteQueue {
    async fn room(&self) -> Result<RoomReading, QueueError> {
        let space = Arc::clone(&self.space);
        self.run(move |c| space.measure(c)).await
    }

    async fn make_room(&self, limit: usize) -> Result<Freed, QueueError> {
        let space = Arc::clone(&self.space);
        self.run(move |c| space.make_room(c, limit, super::now_millis())).await
    }
}

/// The dead letters to drop: older than `?1`, or beyond `?2` bytes of their source's dead
/// letters as new or newer, themselves included (the newest stay). Each with its kind (`event`
/// or `inbound`), id, source, body bytes, and whether it is older than `?1`.
const DEAD_TO_DROP: &str = formatcp!(
    "WITH dead AS (
        SELECT 'event' AS kind, CAST(e.id AS TEXT) AS id, i.source, e.done_at AS at, length(CAST(e.body AS BLOB)) AS bytes
        FROM events e JOIN inbound i ON i.id = e.inbound_id WHERE e.state = '{DEAD}'
        UNION ALL
        SELECT 'inbound', i.id, i.source, i.received_at, length(i.body)
        FROM inbound i WHERE i.status IN ({DEAD_INBOUND})
    ), ranked AS (
        SELECT kind, id, source, bytes, at,
               SUM(bytes) OVER (PARTITION BY source ORDER BY at DESC, id DESC ROWS UNBOUNDED PRECEDING) AS newer
        FROM dead
    )
    SELECT kind, id, source, bytes, at < ?1 FROM ranked WHERE at < ?1 OR newer > ?2"
);

/// The columns of an [`EventRow`] (events `e`, their inbound rows `i`).
const EVENT_COLUMNS: &str = "e.id, e.inbound_id, i.source, e.kind, e.action, e.dedup_key, e.state, e.attempts,
    e.created_at, e.last_error, e.routing_key, e.summary,
    (SELECT a.dedup_key FROM attempts a WHERE a.event_id = e.id AND a.dedup_key IS NOT NULL ORDER BY a.rowid DESC LIMIT 1)";

/// The rows of [`EventRow`]s, for `events` and `event` to filter.
const EVENT_ROW: &str = formatcp!("SELECT {EVENT_COLUMNS} FROM events e JOIN inbound i ON i.id = e.inbound_id");

/// Event `id`'s stored body.
fn stored_body(c: &Connection, id: i64) -> Result<StoredBody, QueueError> {
    let mut stmt = c.prepare_cached(sql::STORED_BODY)?;
    first(&mut stmt, [id], |r| StoredBody::read(r))?.ok_or_else(|| QueueError::BadRow(format!("event {id} vanished")))
}

/// The stored request of inbound `id`. A body the payload log cannot give back is shown as
/// why, in its place: the rest of the event is still worth seeing.
fn stored_request(c: &Connection, log: &PayloadLog, id: &str) -> Result<StoredRequest, QueueError> {
    let mut stmt = c.prepare_cached(&format!("SELECT headers, query, body, {BODY_REF} FROM inbound WHERE id = ?1"))?;
    first(&mut stmt, [id], |r| {
        let request = StoredRequest::read(r)?;
        Ok(match logged_body(log, r, 3) {
            Ok(None) => request,
            Ok(Some(payload)) => request.with_payload(payload),
            Err(e) => {
                tracing::warn!(inbound_id = id, error = %e, "stored payload unreadable");
                request.with_payload(format!("(payload unreadable: {e})").into_bytes())
            }
        })
    })?
    .ok_or_else(|| QueueError::BadRow(format!("inbound {id} is missing")))
}

/// The `inbound` columns that say where a body in the payload log is (`body_segment` is
/// NULL for a body in the row).
const BODY_REF: &str = "body_segment, body_offset, body_len, body_crc";

/// The body of row `r`, whose [`BODY_REF`] columns start at `at`, read from the payload log;
/// `None` when it is in the row (the `body` column) instead.
fn logged_body(log: &PayloadLog, r: &rusqlite::Row, at: usize) -> Result<Option<Vec<u8>>, QueueError> {
    let Some(segment) = r.col::<Option<String>>(at)? else { return Ok(None) };
    let (offset, len, crc): (i64, i64, i64) = (r.col(at + 1)?, r.col(at + 2)?, r.col(at + 3)?);
    let bad = || QueueError::BadRow(format!("payload reference out of range in segment {segment:?}"));
    let offset = u64::try_from(offset).map_err(|_| bad())?;
    let len = u64::try_from(len).map_err(|_| bad())?;
    let crc = u32::try_from(crc).map_err(|_| bad())?;
    log.read(&segment, offset, len, crc).map(Some)
}

/// Before finished payload segments are deleted, the bodies rows still need from them (an
/// event not done yet, a dead one) move into those rows. The segments' names, to delete once
/// this is committed.
fn inline_finished_segments(tx: &Connection, log: &PayloadLog, before: Millis) -> Result<Vec<String>, QueueError> {
    let finished = log.finished_before(before)?;
    for name in &finished {
        let mut stmt = tx.prepare_cached(&format!("SELECT id, {BODY_REF} FROM inbound WHERE body_segment = ?1"))?;
        let kept = all(&mut stmt, [name], |r| {
            let id: String = r.col(0)?;
            // Selected by `body_segment`, so never `None`.
            let body = logged_body(log, r, 1).map(Option::unwrap_or_default).unwrap_or_else(|e| {
                tracing::warn!(inbound_id = %id, error = %e, "payload unreadable while pruning its segment; dropped");
                Vec::new()
            });
            Ok((id, body))
        })?;
        for (id, body) in kept {
            tx.prepare_cached(
                "UPDATE inbound SET body = ?2, body_segment = NULL, body_offset = NULL, body_len = NULL, body_crc = NULL
                 WHERE id = ?1",
            )?
            .execute(params![id, body])?;
        }
    }
    Ok(finished)
}

/// Every attempt at event `id`, oldest first.
fn attempt_log(c: &Connection, id: i64) -> Result<Vec<Attempt>, QueueError> {
    let mut stmt =
        c.prepare_cached("SELECT at, status, detail, dedup_key FROM attempts WHERE event_id = ?1 ORDER BY rowid")?;
    all(&mut stmt, [id], |r| Attempt::read(r))
}

#[cfg(test)]
mod tests;

#[async_trait]
impl super::Conditions for SqliteQueue {
    async fn backlog(&self) -> Result<Vec<super::KeyBacklog>, QueueError> {
        let rows = self
            .run(|c| {
                all(&mut *c.prepare_cached(sql::BACKLOG)?, [], |r| Ok((r.col(0)?, r.col(1)?, r.col(2)?, r.col(3)?)))
            })
            .await?;
        Ok(super::fold_backlog(rows))
    }

    async fn hold_conditions(
        &self,
        judged: Vec<Reason>,
        holding: Vec<own_pages::Held>,
        now: Millis,
    ) -> Result<Vec<super::Change>, QueueError> {
        // Not through the room gate: a condition's page is what says the store is short, and
        // the gate's headroom (`storage.min_free_bytes`) is kept for writes like it.
        self.run(move |c| {
            let tx = c.transaction()?;
            let changes = ready(own_pages::conditions(&mut OwnStore(&tx), &judged, &holding, now))?;
            tx.commit()?;
            Ok(changes)
        })
        .await
    }
}
