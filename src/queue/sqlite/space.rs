//! The SQLite store's room ([`super::super::room`]): measured on the writer thread, and made
//! by deleting finished rows and the payload segments no row needs.
//!
//! Used is the database's used pages (`page_count - freelist_count`: a file does not shrink
//! when rows go, its free pages are reused first) plus the payload log's segments. Free is the
//! filesystem's space available to us plus those free pages. The WAL is not counted: it is
//! never truncated (SQLite's `journal_size_limit` is left at -1), so once it has grown its
//! room stays reserved for the writes that follow, delivery's included.

use super::super::room::{Freed, Gate, Headroom, RoomReading};
use super::super::sql;
use super::super::{Millis, QueueError};
use super::payloads::PayloadLog;
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the writer measures after its commits, at most: a `statvfs`, a directory listing
/// of the payload log and three pragmas, well under a millisecond, once a second.
const MEASURE_EVERY: Duration = Duration::from_secs(1);

/// The store's room: its lines, the gate accepts read, the reserve, and when it was last
/// measured.
pub(in crate::queue) struct Space {
    pub gate: Gate,
    reserve: Reserve,
    floor: u64,
    /// The database's directory: its filesystem is the one measured.
    dir: PathBuf,
    log: Arc<PayloadLog>,
    last: Mutex<Option<Instant>>,
}

impl Space {
    /// `reserve`: whether this process keeps the reserve (the deliverer; a tool beside it does not).
    pub fn new(db: &Path, headroom: Headroom, log: Arc<PayloadLog>, reserve: bool) -> Space {
        let dir = db.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
        let bytes = if reserve { (headroom.min_free_bytes / 4).min(MAX_RESERVE) } else { 0 };
        let reserve = Reserve::beside(db, bytes);
        reserve.hold();
        Space { gate: Gate::new(headroom), reserve, floor: headroom.min_free_bytes, dir, log, last: Mutex::new(None) }
    }

    /// A write failed for lack of space: accepts are refused, and the reserve is given to the
    /// writes that follow (delivery's).
    pub fn noting<T>(&self, r: Result<T, QueueError>) -> Result<T, QueueError> {
        if let Err(QueueError::OutOfRoom(_)) = &r {
            self.gate.disk_full();
            self.reserve.release("a write failed for lack of space");
        }
        r
    }

    /// Measures if the last measurement is older than [`MEASURE_EVERY`] (after a commit).
    pub fn measure_if_due(&self, c: &Connection) {
        let due = self.last.lock().unwrap_or_else(|e| e.into_inner()).is_none_or(|t| t.elapsed() >= MEASURE_EVERY);
        if due {
            if let Err(e) = self.measure(c) {
                tracing::warn!(error = %e, "cannot measure the store's room");
            }
        }
    }

    /// Measures now and sets the gate by the judgement.
    pub fn measure(&self, c: &Connection) -> Result<RoomReading, QueueError> {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        let pragma = |name: &str| -> Result<u64, QueueError> {
            let v: i64 = c.pragma_query_value(None, name, |r| r.get(0))?;
            Ok(v.max(0) as u64)
        };
        let page = pragma("page_size")?;
        let (pages, free_pages) = (pragma("page_count")?, pragma("freelist_count")?);
        let segments: u64 = self.log.segments()?.iter().map(|(_, len)| len).sum();
        let used = pages.saturating_sub(free_pages) * page + segments;
        let available = fs_available(&self.dir)
            .map_err(|e| QueueError::Io(format!("cannot read the free space of {}: {e}", self.dir.display())))?;
        let free = available.saturating_add(free_pages * page);
        // Something else is eating the floor: the disk may be full before a write fails.
        if available < self.floor / 2 {
            self.reserve.release("the filesystem is below half of storage.min_free_bytes");
        }
        let short = self.gate.measured(used, free);
        if short.is_none() && available >= self.floor.saturating_add(self.reserve.bytes) {
            self.reserve.hold();
        }
        Ok(RoomReading { used_bytes: Some(used), free_bytes: Some(free), short })
    }

    /// Deletes up to `limit` finished events oldest first (`Capacity::make_room`), then the
    /// segments no row needs; closes the current segment first, so that it too can go once
    /// its bodies are delivered.
    pub fn make_room(&self, c: &mut Connection, limit: usize, now: Millis) -> Result<Freed, QueueError> {
        self.log.rotate();
        let tx = c.transaction()?;
        // The `limit`-th oldest finished event's time: it and everything before it go.
        let cutoff: Option<Millis> = tx
            .prepare_cached(sql::PRUNE_CUTOFF)?
            .query_row([limit.max(1) as i64 - 1], |r| r.get(0))
            .or_else(|e| if e == rusqlite::Error::QueryReturnedNoRows { Ok(None) } else { Err(e) })?;
        // Ties at the cutoff go too: a batch that finished in one millisecond is not stuck.
        let before = cutoff.unwrap_or(now) + 1;
        let mut rows = 0;
        for statement in sql::PRUNE_FINISHED {
            rows += tx.prepare_cached(statement)?.execute([before])? as u64;
        }
        let current = self.log.current();
        let mut unused = Vec::new();
        for (name, len) in self.log.segments()? {
            let needed: bool = tx
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM inbound WHERE body_segment = ?1)")?
                .query_row([&name], |r| r.get(0))?;
            if !needed && current.as_deref() != Some(name.as_str()) {
                unused.push((name, len));
            }
        }
        tx.commit()?;
        let mut freed = Freed { rows, ..Freed::default() };
        for (name, len) in unused {
            self.log.remove(&name)?;
            freed.segments += 1;
            freed.segment_bytes += len;
        }
        Ok(freed)
    }
}

/// The largest reserve kept: enough for the WAL to restart and for thousands of claims and
/// finishes, little beside the 64 MiB floor it is a quarter of by default.
const MAX_RESERVE: u64 = 16 << 20;

/// Room set aside in a file beside the database (`<db>-reserve`, a quarter of
/// `storage.min_free_bytes`, at most [`MAX_RESERVE`]), written out at open and deleted the
/// moment a write fails for lack of space or the filesystem drops below half the floor: the
/// floor keeps room against pagerhook's own accepts, the reserve against another program that
/// fills the disk anyway. Written again once room is back.
struct Reserve {
    path: PathBuf,
    bytes: u64,
    held: AtomicBool,
}

impl Reserve {
    fn beside(db: &Path, bytes: u64) -> Reserve {
        let mut path = db.as_os_str().to_owned();
        path.push("-reserve");
        Reserve { path: path.into(), bytes, held: AtomicBool::new(false) }
    }

    /// Writes the reserve out (real blocks, not a sparse file) if it is not held.
    fn hold(&self) {
        if self.bytes == 0 || self.held.load(Ordering::Relaxed) {
            return;
        }
        if std::fs::metadata(&self.path).is_ok_and(|m| m.len() == self.bytes) {
            self.held.store(true, Ordering::Relaxed);
            return;
        }
        match write_zeros(&self.path, self.bytes) {
            Ok(()) => self.held.store(true, Ordering::Relaxed),
            Err(e) => {
                let _ = std::fs::remove_file(&self.path);
                tracing::debug!(error = %e, "cannot write the store's reserve yet");
            }
        }
    }

    /// Deletes the reserve, if held, for the writes that follow.
    fn release(&self, why: &str) {
        if self.held.swap(false, Ordering::Relaxed) {
            let _ = std::fs::remove_file(&self.path);
            tracing::warn!(bytes = self.bytes, why, "released the store's reserve for delivery");
        }
    }
}

/// A file of `bytes` zeros at `path`, for the owner alone.
fn write_zeros(path: &Path, bytes: u64) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    let chunk = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    // Not synced: the blocks are the filesystem's to give back, taken when written; after a
    // crash the file is written again at open.
    Ok(())
}

/// Bytes of the filesystem holding `dir` that an unprivileged writer may still use.
fn fs_available(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated and outlives the call; `st` is written by statvfs,
    // and read only when it reports success.
    let st = unsafe {
        if libc::statvfs(path.as_ptr(), st.as_mut_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        st.assume_init()
    };
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}
