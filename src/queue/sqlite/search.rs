//! The SQLite search index ([`super::super::search`]): an FTS5 trigram table filled up to a
//! watermark by the indexer, off the accept path, and the delivery list's queries over it.

use super::super::search::{self, Plan, WATERMARK};
use super::super::{EventQuery, EventRow, QueueError};
use super::{all, EVENT_COLUMNS};
use const_format::formatcp;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

/// The index: an FTS5 trigram table keeping no copy of the text (the events table has it),
/// one row per event under the event's id; the indexer fills it, and an event's deletion
/// (retention, room made under pressure, a dead letter dropped or deleted) takes its row with
/// it, whatever path deletes it.
pub(super) const MIGRATION: &str =
    "CREATE VIRTUAL TABLE events_search USING fts5(doc, content = '', contentless_delete = 1, tokenize = 'trigram');
CREATE TRIGGER events_search_forget AFTER DELETE ON events BEGIN
    DELETE FROM events_search WHERE rowid = old.id;
END;";

/// What a search matches (`EventQuery::search`, `?1`), with the list's other filters: before
/// id `?2`, source `?4`, state `?5`, created since `?6`. Checked on every row whichever way it
/// was found, so the index never changes what matches.
const MATCHES: &str =
    "(?1 IS NULL OR instr(lower(e.dedup_key), lower(?1)) > 0 OR instr(lower(e.summary), lower(?1)) > 0
         OR i.source = ?1 OR e.state = ?1)
     AND (?2 IS NULL OR e.id < ?2) AND (?4 IS NULL OR i.source = ?4) AND (?5 IS NULL OR e.state = ?5)
     AND (?6 IS NULL OR e.created_at >= ?6)";

/// Every event after id `?7` that matches, newest first, at most `?3` (`?7` = 0: a scan).
const SCAN: &str = formatcp!(
    "SELECT {EVENT_COLUMNS} FROM events e JOIN inbound i ON i.id = e.inbound_id
     WHERE e.id > ?7 AND {MATCHES} ORDER BY e.id DESC LIMIT ?3"
);

/// The indexed events up to id `?8` whose text holds phrase `?7` and that match, newest first,
/// at most `?3`. The index is the outer loop (`CROSS JOIN`), read backwards from `?8`, so a
/// common text stops after a page.
const INDEXED: &str = formatcp!(
    "SELECT {EVENT_COLUMNS} FROM events_search s CROSS JOIN events e ON e.id = s.rowid
     JOIN inbound i ON i.id = e.inbound_id
     WHERE s.doc MATCH ?7 AND s.rowid <= ?8 AND {MATCHES} ORDER BY s.rowid DESC LIMIT ?3"
);

/// Indexes the (up to) `?2` events after id `?1`: dedup_key, summary and source, one per line.
const INDEX: &str = "INSERT INTO events_search (rowid, doc)
     SELECT e.id, COALESCE(e.dedup_key, '') || char(10) || COALESCE(e.summary, '') || char(10) || i.source
     FROM events e JOIN inbound i ON i.id = e.inbound_id WHERE e.id > ?1 ORDER BY e.id LIMIT ?2";

/// The id the indexer reaches taking (up to) `?2` events after id `?1`; NULL: none after it.
const INDEXED_TO: &str = "SELECT MAX(id) FROM (SELECT id FROM events WHERE id > ?1 ORDER BY id LIMIT ?2)";

/// The greatest event id the index holds every event up to (0: none yet).
pub(super) fn watermark(c: &Connection) -> Result<i64, QueueError> {
    let value: Option<String> =
        c.query_row("SELECT value FROM meta WHERE key = ?1", [WATERMARK], |r| r.get(0)).optional()?;
    value.map_or(Ok(0), |v| v.parse().map_err(|_| QueueError::BadRow(format!("{WATERMARK} is {v:?}, not an id"))))
}

/// Indexes up to `batch` events after the watermark and moves it past them, in one
/// transaction taken for writing at once (the CLI may write to the file too).
pub(super) fn index(c: &mut Connection, batch: usize) -> Result<usize, QueueError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let from = watermark(&tx)?;
    let batch = batch as i64;
    let Some(to) = tx.query_row(INDEXED_TO, params![from, batch], |r| r.get::<_, Option<i64>>(0))? else {
        return Ok(0);
    };
    let n = tx.prepare_cached(INDEX)?.execute(params![from, batch])?;
    tx.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![WATERMARK, to.to_string()],
    )?;
    tx.commit()?;
    Ok(n)
}

/// The delivery list: events matching `q`, newest first. An indexed search reads the events
/// after the watermark (not indexed yet, few) by scan, then the index up to it.
pub(super) fn events(c: &Connection, q: &EventQuery) -> Result<Vec<EventRow>, QueueError> {
    let text = match search::plan(q.search.as_deref()) {
        Plan::Scan => return scan_after(c, q, 0),
        Plan::Indexed(text) => text,
    };
    let indexed_to = watermark(c)?;
    let mut rows = scan_after(c, q, indexed_to)?;
    let below = q.before.map_or(indexed_to, |b| indexed_to.min(b - 1));
    if rows.len() < q.limit && below > 0 {
        let left = (q.limit - rows.len()) as i64;
        let mut stmt = c.prepare_cached(INDEXED)?;
        let phrase = search::fts5_phrase(text);
        rows.extend(all(
            &mut stmt,
            params![q.search, q.before, left, q.source, q.state, q.since, phrase, below],
            |r| EventRow::read(r),
        )?);
    }
    Ok(rows)
}

/// The events after id `after` matching `q`, newest first, by scan.
fn scan_after(c: &Connection, q: &EventQuery, after: i64) -> Result<Vec<EventRow>, QueueError> {
    let mut stmt = c.prepare_cached(SCAN)?;
    all(&mut stmt, params![q.search, q.before, q.limit as i64, q.source, q.state, q.since, after], |r| {
        EventRow::read(r)
    })
}
