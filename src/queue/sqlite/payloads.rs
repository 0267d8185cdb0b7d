//! The payload log: the raw bodies of mapped and ignored webhooks, written once into segment
//! files beside the database (`<db>-payloads/`) instead of into it. In the database a body is
//! written twice, into the WAL and again when the checkpoint copies it into the file, and it
//! is most of what an accept writes (bench/README.md, "The payload log"). The row keeps where
//! its body is (segment, offset, length) and the body's CRC-32, checked on every read.
//!
//! Bodies kept as dead letters (mapping failed, too many events) stay in their rows: they live
//! until replayed or deleted, and would pin their segment's files for that long.
//!
//! Durability: an append is a `pwrite` into the page cache by the writer's thread, before the
//! transaction that records it; the syncer `fdatasync`s every segment its committed accepts
//! wrote to, with the WAL, before any of them is answered. A segment is written only in its first [`ROTATE_AFTER`]
//! (every process starts a segment of its own and rotates by age and size), so one older
//! than that, plus [`GRACE`], is finished: pruning copies the bodies still referenced from it
//! into their rows, then deletes it.

use super::super::{Millis, QueueError};
use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// How long a segment takes appends, from its creation.
pub(super) const ROTATE_AFTER: Millis = 60 * 60 * 1000;
/// How large a segment grows before the next one starts.
const ROTATE_AT_BYTES: u64 = 256 << 20;
/// Added to [`ROTATE_AFTER`] before a segment counts as finished: an append that checked the
/// age just before the limit, and clocks that disagree a little.
const GRACE: Millis = 10 * 60 * 1000;

/// One segment file being appended to. Shared by the appends that wrote to it until the
/// syncer has synced it.
pub(super) struct Segment {
    name: String,
    file: File,
    created: Millis,
}

impl Segment {
    pub(super) fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

/// Where an appended body is: what the row stores, and the segment to sync before answering.
pub(super) struct Logged {
    pub segment: Arc<Segment>,
    pub offset: u64,
    pub len: u64,
    pub crc: u32,
}

impl Logged {
    pub fn segment_name(&self) -> &str {
        &self.segment.name
    }
}

/// The segment being appended to and how much of it is taken.
struct Current {
    segment: Arc<Segment>,
    taken: u64,
}

pub(super) struct PayloadLog {
    dir: PathBuf,
    current: Mutex<Option<Current>>,
}

impl PayloadLog {
    /// The log of the database at `db` (nothing is created until the first append).
    pub fn beside(db: &Path) -> PayloadLog {
        let mut dir = db.as_os_str().to_owned();
        dir.push("-payloads");
        PayloadLog { dir: dir.into(), current: Mutex::new(None) }
    }

    /// Writes `body` at the end of the current segment (starting a new one when it is old or
    /// full). Only the writer's thread appends; the lock makes the log shareable with the
    /// queue's handles, and is held only to take the offset.
    pub fn append(&self, body: &[u8], now: Millis) -> Result<Logged, QueueError> {
        let len = body.len() as u64;
        let (segment, offset) = {
            let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
            let fresh = current.as_ref().is_some_and(|c| {
                now.saturating_sub(c.segment.created) < ROTATE_AFTER && c.taken + len <= ROTATE_AT_BYTES
            });
            if !fresh {
                *current = Some(Current { segment: Arc::new(self.create(now)?), taken: 0 });
            }
            let c = current.as_mut().expect("set above");
            let offset = c.taken;
            c.taken += len;
            (Arc::clone(&c.segment), offset)
        };
        segment.file.write_all_at(body, offset).map_err(|e| self.failed("write", &segment.name, e))?;
        Ok(Logged { segment, offset, len, crc: crc32fast::hash(body) })
    }

    /// A new segment, its name in the directory synced: a body synced into a file whose name
    /// a power cut could undo would be lost with it.
    fn create(&self, now: Millis) -> Result<Segment, QueueError> {
        super::private_dir(&self.dir).map_err(|e| self.failed("create", "", e))?;
        let name = format!("{now:013}-{}", uuid::Uuid::new_v4().simple());
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            // Bodies are the senders' payloads: the owner's alone, whatever the umask.
            .mode(0o600)
            .open(self.dir.join(&name))
            .map_err(|e| self.failed("create", &name, e))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| self.failed("sync", "", e))?;
        Ok(Segment { name, file, created: now })
    }

    /// The body stored at `offset`, `len` bytes of segment `name`, if its CRC matches.
    pub fn read(&self, name: &str, offset: u64, len: u64, crc: u32) -> Result<Vec<u8>, QueueError> {
        let path = self.segment_path(name)?;
        let file = File::open(&path).map_err(|e| self.failed("open", name, e))?;
        let mut body = vec![0; usize::try_from(len).map_err(|_| unreadable(name, "length out of range"))?];
        file.read_exact_at(&mut body, offset).map_err(|e| self.failed("read", name, e))?;
        if crc32fast::hash(&body) != crc {
            return Err(unreadable(name, "the stored bytes do not match their checksum"));
        }
        Ok(body)
    }

    /// Segments holding only bodies received before `before`, oldest first: no process
    /// appends to them any more.
    pub fn finished_before(&self, before: Millis) -> Result<Vec<String>, QueueError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.failed("list", "", e)),
        };
        let mut done = Vec::new();
        for entry in entries {
            let name = entry.map_err(|e| self.failed("list", "", e))?.file_name();
            let Some(name) = name.to_str() else { continue };
            if created(name).is_some_and(|at| at + ROTATE_AFTER + GRACE < before) {
                done.push(name.to_string());
            }
        }
        done.sort();
        Ok(done)
    }

    /// Deletes a finished segment (see [`PayloadLog::finished_before`]).
    pub fn remove(&self, name: &str) -> Result<(), QueueError> {
        match std::fs::remove_file(self.segment_path(name)?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.failed("delete", name, e)),
        }
    }

    /// The file of segment `name`; a name this log could not have made is refused, so a row
    /// cannot point a read outside the directory.
    fn segment_path(&self, name: &str) -> Result<PathBuf, QueueError> {
        match created(name) {
            Some(_) => Ok(self.dir.join(name)),
            None => Err(unreadable(name, "not a payload segment name")),
        }
    }

    fn failed(&self, what: &str, name: &str, e: std::io::Error) -> QueueError {
        let text = format!("cannot {what} payload segment {}: {e}", self.dir.join(name).display());
        // A full disk is the store being out of room (the accept is refused, delivery goes on),
        // not an I/O fault.
        match e.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => QueueError::OutOfRoom(text),
            _ => QueueError::Io(text),
        }
    }

    /// Every segment with its size, oldest first.
    pub fn segments(&self) -> Result<Vec<(String, u64)>, QueueError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.failed("list", "", e)),
        };
        let mut all = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| self.failed("list", "", e))?;
            let Some(name) = entry.file_name().to_str().filter(|n| created(n).is_some()).map(str::to_string) else {
                continue;
            };
            // Removed meanwhile (pruned): nothing to count.
            let Ok(meta) = entry.metadata() else { continue };
            all.push((name, meta.len()));
        }
        all.sort();
        Ok(all)
    }

    /// The segment appends go to now, if one is open.
    pub fn current(&self) -> Option<String> {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|c| c.segment.name.clone())
    }

    /// Closes the current segment: the next append starts a new one, and this one can be
    /// deleted once no row needs it (room is made a segment at a time).
    pub fn rotate(&self) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// When segment `name` was created, if it is a segment's name: 13 digits of milliseconds,
/// `-`, 32 hex digits.
fn created(name: &str) -> Option<Millis> {
    let (at, id) = name.split_once('-')?;
    let ok = at.len() == 13
        && at.bytes().all(|b| b.is_ascii_digit())
        && id.len() == 32
        && id.bytes().all(|b| b.is_ascii_hexdigit());
    ok.then(|| at.parse().ok()).flatten()
}

fn unreadable(name: &str, why: &str) -> QueueError {
    QueueError::BadRow(format!("payload in segment {name:?} is unreadable: {why}"))
}

#[cfg(test)]
mod tests;
