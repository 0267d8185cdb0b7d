//! Room to write: the headroom the store keeps so that delivery can always record what it does.
//!
//! A full disk used to stop everything: accepts were refused (good), but recording an attempt
//! needs pages too, so the backlog never drained and nothing freed the disk (issue 35). The
//! store now stops *accepting* before the disk is full, while there is still room below the
//! line for what delivery writes (claims, attempts, finishes, pruning), and delivery frees room
//! as it goes ([`super::Capacity::make_room`]).
//!
//! The accept path reads one atomic ([`Gate::check`]); the measurement behind it (a `statvfs`
//! and three pragmas on SQLite) runs on the store's writer thread at most about once a second
//! and whenever [`super::Capacity::room`] asks (the room watcher every second, `/metrics`).

use super::QueueError;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// How much room the store keeps (SQLite): accepts stop below the floor or above the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headroom {
    /// Free bytes that must stay on the store's filesystem (its free pages count as free).
    pub min_free_bytes: u64,
    /// Most bytes the store may use: the database's used pages plus the payload log's segments.
    pub max_bytes: Option<u64>,
}

impl Headroom {
    /// No line: accepts stop only when a write fails for lack of space (tests, tools,
    /// PostgreSQL). `serve` takes `[storage]`'s (`config::DEFAULT_MIN_FREE_BYTES` by default).
    pub const NONE: Headroom = Headroom { min_free_bytes: 0, max_bytes: None };
}

/// Accepts resume once the store is this share of its line back inside it (an eighth), so a
/// store at its line does not flap between refusing and accepting on every webhook.
const RESUME_MARGIN_DIVISOR: u64 = 8;

impl Headroom {
    /// Whether a store using `used` bytes with `free` bytes left is short of room. `was_short`:
    /// it refused accepts at the last reading, and resumes only past the margin.
    pub fn judge(&self, used: u64, free: u64, was_short: bool) -> Option<Short> {
        let floor = self.min_free_bytes;
        let resume_floor = floor.saturating_add(floor / RESUME_MARGIN_DIVISOR);
        if free < floor || (was_short && free < resume_floor) {
            return Some(Short::BelowFloor { free, floor });
        }
        let cap = self.max_bytes?;
        let resume_cap = cap - cap / RESUME_MARGIN_DIVISOR;
        (used > cap || (was_short && used > resume_cap)).then_some(Short::OverCap { used, cap })
    }
}

/// Why the store refuses accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Short {
    /// Less free space on the store's filesystem than `storage.min_free_bytes`.
    BelowFloor { free: u64, floor: u64 },
    /// The store uses more than `storage.max_bytes`.
    OverCap { used: u64, cap: u64 },
    /// A write failed for lack of space (SQLite's `SQLITE_FULL`, `ENOSPC` on a payload segment,
    /// PostgreSQL's SQLSTATE 53100 `disk_full`).
    DiskFull,
}

impl Short {
    /// A label for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Short::BelowFloor { .. } => "below_floor",
            Short::OverCap { .. } => "over_cap",
            Short::DiskFull => "disk_full",
        }
    }
}

impl fmt::Display for Short {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |b: &u64| *b as f64 / (1024.0 * 1024.0);
        match self {
            Short::BelowFloor { free, floor } => write!(
                f,
                "{:.1} MiB free on the store's filesystem, below storage.min_free_bytes ({:.1} MiB)",
                mib(free),
                mib(floor)
            ),
            Short::OverCap { used, cap } => {
                write!(f, "the store uses {:.1} MiB, over storage.max_bytes ({:.1} MiB)", mib(used), mib(cap))
            }
            Short::DiskFull => f.write_str("the store's disk is full"),
        }
    }
}

/// The store's room as last measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomReading {
    /// Bytes the store uses (SQLite: used pages and payload segments; PostgreSQL: the
    /// database's size); `None` if it cannot be read.
    pub used_bytes: Option<u64>,
    /// Bytes left to write into (SQLite: the filesystem's free space plus the database's free
    /// pages); `None` where the store cannot see its disk (PostgreSQL).
    pub free_bytes: Option<u64>,
    /// Why accepts are refused; `None` while they are taken.
    pub short: Option<Short>,
}

/// What [`super::Capacity::make_room`] freed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Freed {
    /// Delivered (or otherwise finished) events, their attempts and payload rows deleted.
    pub rows: u64,
    /// Payload segments deleted, and their bytes.
    pub segments: u64,
    pub segment_bytes: u64,
}

/// The accept path's gate: one uncontended lock per accept, no system call. Each measurement
/// sets what the store uses and has left; between two, every accept adds its bytes to that
/// estimate, so a storm that fills the disk faster than the measurements come is refused at
/// the line all the same (the 24 MiB filled in under half a second).
#[derive(Debug)]
pub(crate) struct Gate {
    headroom: Headroom,
    short: AtomicBool,
    state: Mutex<Estimate>,
}

/// The room as last measured, less what accepts wrote since.
#[derive(Debug)]
struct Estimate {
    why: Option<Short>,
    used: u64,
    free: u64,
}

impl Default for Gate {
    /// A gate that only a failed write shuts (PostgreSQL: its disk is the server's).
    fn default() -> Gate {
        Gate::new(Headroom::NONE)
    }
}

impl Gate {
    pub fn new(headroom: Headroom) -> Gate {
        let state = Mutex::new(Estimate { why: None, used: 0, free: u64::MAX });
        Gate { headroom, short: AtomicBool::new(false), state }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Estimate> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Ok` while accepts are taken; else why not, as the error an accept answers.
    pub fn check(&self) -> Result<(), QueueError> {
        if !self.short.load(Ordering::Relaxed) {
            return Ok(());
        }
        match self.current() {
            Some(why) => Err(QueueError::OutOfRoom(why.to_string())),
            None => Ok(()),
        }
    }

    /// An accept about to write about `bytes`: counted against the room left, and refused if
    /// they would take the store past its line.
    pub fn spend(&self, bytes: u64) -> Result<(), QueueError> {
        let mut e = self.lock();
        if e.why.is_none() {
            let (used, free) = (e.used.saturating_add(bytes), e.free.saturating_sub(bytes));
            if let Some(why) = self.headroom.judge(used, free, false) {
                // Shut until the next measurement says otherwise.
                self.short.store(true, Ordering::Relaxed);
                e.why = Some(why.clone());
                return Err(QueueError::OutOfRoom(why.to_string()));
            }
            (e.used, e.free) = (used, free);
        }
        drop(e);
        self.check()
    }

    /// A measurement: judges it (resuming only past the margin) and starts a new estimate.
    pub fn measured(&self, used: u64, free: u64) -> Option<Short> {
        let mut e = self.lock();
        let was_short = self.short.load(Ordering::Relaxed);
        let why = self.headroom.judge(used, free, was_short);
        *e = Estimate { why: why.clone(), used, free };
        self.short.store(why.is_some(), Ordering::Relaxed);
        why
    }

    /// Opens the gate (a probe write found room) or shuts it with `short`.
    pub fn set(&self, short: Option<Short>) {
        let mut e = self.lock();
        self.short.store(short.is_some(), Ordering::Relaxed);
        e.why = short;
    }

    /// A write failed for lack of space: refuse accepts until a measurement finds room again.
    pub fn disk_full(&self) {
        let mut e = self.lock();
        if e.why.is_none() {
            e.why = Some(Short::DiskFull);
            self.short.store(true, Ordering::Relaxed);
        }
    }

    pub fn current(&self) -> Option<Short> {
        self.lock().why.clone()
    }

    /// Records `r`'s failure for lack of space, if it is one, and hands `r` back.
    pub fn noting<T>(&self, r: Result<T, QueueError>) -> Result<T, QueueError> {
        if let Err(QueueError::OutOfRoom(_)) = &r {
            self.disk_full();
        }
        r
    }
}

#[cfg(test)]
mod tests;
