//! Finding an event (`deliveries list --search`, the console's search box) without reading
//! every row: a trigram index over each event's dedup_key, summary and source.
//!
//! What a search matches is unchanged by the index: a dedup_key or summary containing the text
//! (any case), or a source or state equal to it. The index only narrows the rows that
//! predicate is checked on: every trigram of the text must be in the row's, so a text of fewer
//! than [`MIN_INDEXED_CHARS`] characters (no trigram) and a state's name (states are not
//! indexed: they change) are looked for by scanning, newest first, as before; both match many
//! rows, so the scan stops early.
//!
//! Each backend keeps its index where it costs the accept path least:
//! - **SQLite** has one writer, which every accept waits for: indexing in the accept
//!   transaction doubled the time of a `bench_fill` (bench/README.md, "Search"). An FTS5
//!   trigram table is filled by the search indexer ([`Inspect::index_for_search`], a
//!   supervised task) in batches of [`BATCH`], in transactions of its own, up to a watermark
//!   kept in `meta`. Event ids are given and committed in order there (one writer), so every
//!   event up to the watermark is indexed and a search is the index up to it plus a scan of
//!   the few events after it.
//! - **PostgreSQL** keeps its own indexes (`postgres/search.rs`): pg_trgm GIN indexes over
//!   dedup_key and summary and a B-tree over source, maintained in the accept's transaction
//!   (each insert pays for them: bench/README.md, "Search"), so nothing is left to index and
//!   `index_for_search` has nothing to do. A watermark would be unsound there: concurrent
//!   accepts commit out of id order (lanes are locked, not the table), so it would skip an
//!   event committed late under a smaller id. Without pg_trgm (the role may not install it)
//!   a search scans, as before.
//!
//! [`Inspect::index_for_search`]: super::Inspect::index_for_search

use super::EventState;

/// The shortest search the index can answer: one trigram.
pub(super) const MIN_INDEXED_CHARS: usize = 3;

/// How many events the indexer takes per transaction: long enough that FTS5 writes one segment
/// for many events, short enough that an accept waiting behind it on the one writer waits
/// little (2 000 held it 80 ms in a debug build, so a quarter of that: bench/README.md, "Search").
pub const BATCH: usize = 500;

/// The `meta` key of the SQLite index's watermark: the greatest event id indexed.
pub(super) const WATERMARK: &str = "search_indexed_to";

/// How a search is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Plan<'a> {
    /// Every row newest first, the predicate checked on each: no search, a text too short for
    /// a trigram, or a state's name.
    Scan,
    /// The rows the index holds every trigram of this text for, then the predicate.
    Indexed(&'a str),
}

/// How to answer a search for `text`.
pub(super) fn plan(text: Option<&str>) -> Plan<'_> {
    match text {
        None => Plan::Scan,
        Some(t) if t.chars().count() < MIN_INDEXED_CHARS || EventState::parse(t).is_some() => Plan::Scan,
        Some(t) => Plan::Indexed(t),
    }
}

/// `text` as one FTS5 phrase: quoted, its quotes doubled, so no character of it is query
/// syntax. With the trigram tokenizer a phrase matches where the text occurs, in any case.
pub(super) fn fts5_phrase(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

#[cfg(test)]
mod tests;
