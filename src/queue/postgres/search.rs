//! The PostgreSQL search index ([`super::super::search`]): pg_trgm GIN indexes over the
//! events' dedup_key and summary, a B-tree over the payloads' source, and the delivery list's
//! queries over them.
//!
//! PostgreSQL keeps these indexes itself, in the accept's own transaction: nothing is left
//! for an indexer to catch up on, so no watermark is needed (one would be unsound here:
//! concurrent accepts commit out of id order). The price is paid by each insert instead
//! (bench/README.md, "Search").
//!
//! pg_trgm is an extension: installed once per database, into one schema. The migration
//! installs it, into the schema pagerhook's tables are in, when it is missing and the role
//! may (it is a trusted extension since PostgreSQL 13: CREATE on the database suffices).
//! When it may not, one warning says what an administrator runs, and a search scans as
//! before: slower, never different. The indexes name its operator class by the schema the
//! catalog says it is in, so they resolve whatever the search_path (the test suite's
//! schemas share one pg_trgm in `public`).

use super::super::search::{self, Plan};
use super::super::{EventQuery, EventRow, QueueError};
use super::{Get, EVENT_ROW};
use const_format::formatcp;
use deadpool_postgres::Transaction;

/// A database-wide advisory lock (the one-key space, apart from `Lock`'s two-key one, and
/// not offset by the schema): two schemas migrating at once (separate deployments, the test
/// suite) would both find pg_trgm missing, and the second `CREATE EXTENSION` would fail on
/// the catalog's unique key. "pagertrm" in ASCII; tests/it/helpers/pg_schema.rs takes it too.
pub(super) const EXTENSION_LOCK: i64 = 0x7061_6765_7274_726d;

/// The search indexes, named once: the tests look them up.
pub(in crate::queue) const INDEXES: [&str; 2] = ["events_search_dedup_key", "events_search_summary"];

/// The list's filters besides the search: before id `$2`, source `$4`, state `$5`, created
/// since `$6`.
const FILTERS: &str = "($2::bigint IS NULL OR e.id < $2::bigint) AND ($4::text IS NULL OR i.source = $4::text)
     AND ($5::text IS NULL OR e.state = $5::text) AND ($6::bigint IS NULL OR e.created_at >= $6::bigint)";

/// What a search (`$1`, as the ILIKE pattern `$7`: [`like_pattern`]) matches: a dedup_key or
/// summary containing it in any case (ILIKE lowers both sides, as `lower` does), or a source
/// or state equal to it; with the filters.
const MATCHES: &str = formatcp!(
    "($1::text IS NULL OR e.dedup_key ILIKE $7::text OR e.summary ILIKE $7::text
         OR i.source = $1::text OR e.state = $1::text) AND {FILTERS}"
);

/// Every event that matches, newest first, at most `$3`.
const SCAN: &str = formatcp!("{EVENT_ROW} WHERE {MATCHES} ORDER BY e.id DESC LIMIT $3");

/// The same rows as [`SCAN`] when `$1` names no state ([`search::plan`]), written as one
/// arm per index so the planner can take each: the dedup_key and summary by their trigram
/// indexes, the source by `inbound_source`. A text that is rare is then found by index; one
/// that is common (the planner's statistics say so) still by reading newest first, stopping
/// after a page. The source arm first asks whether any payload has that source (a one-time
/// filter, by index): with statistics that do not know the text, the planner would otherwise
/// walk every event looking for the source's.
pub(in crate::queue) const INDEXED: &str = formatcp!(
    "SELECT * FROM (
        ({EVENT_ROW} WHERE (e.dedup_key ILIKE $7::text OR e.summary ILIKE $7::text) AND {FILTERS}
         ORDER BY e.id DESC LIMIT $3)
        UNION
        ({EVENT_ROW} WHERE i.source = $1::text AND {FILTERS}
            AND EXISTS (SELECT 1 FROM inbound s WHERE s.source = $1::text) ORDER BY e.id DESC LIMIT $3)
     ) found ORDER BY id DESC LIMIT $3"
);

/// The delivery list: events matching `q`, newest first.
pub(super) async fn events(c: &tokio_postgres::Client, q: &EventQuery) -> Result<Vec<EventRow>, QueueError> {
    let sql = match search::plan(q.search.as_deref()) {
        Plan::Scan => SCAN,
        Plan::Indexed(_) => INDEXED,
    };
    let pattern = q.search.as_deref().map(like_pattern);
    let rows =
        c.query(sql, &[&q.search, &q.before, &(q.limit as i64), &q.source, &q.state, &q.since, &pattern]).await?;
    rows.iter().map(EventRow::read).collect()
}

/// The LIKE pattern of the rows containing `text`: `text` between `%`s, its own `%`, `_` and
/// `\` escaped, so none of its characters is a wildcard.
pub(in crate::queue) fn like_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// Why pg_trgm could not be had: the server's words, and where an administrator installs it.
#[derive(Debug)]
pub(super) struct Refused {
    pub error: QueueError,
    pub database: String,
    pub role: String,
}

impl Refused {
    /// The warning: what is lost, why, and what an administrator runs to get it back.
    pub(super) fn advice(&self) -> String {
        let Refused { error, database, role } = self;
        format!(
            "the search index is off, so a search reads every event (slow at millions): pg_trgm could not be \
             installed ({error}); an administrator can run `CREATE EXTENSION pg_trgm;` in database {database} \
             (or `GRANT CREATE ON DATABASE {database} TO {role};`, so pagerhook installs it), then restart \
             pagerhook: it builds the index at startup"
        )
    }
}

/// Builds the search indexes if they are missing, installing pg_trgm first when it is
/// missing and may be. Runs in the migration's transaction, under its lock, at every start:
/// an index refused once (no pg_trgm then) is built at the first start after an
/// administrator installed it. A refusal is logged, not returned: search works without.
pub(super) async fn ensure(tx: &mut Transaction<'_>) -> Result<(), QueueError> {
    // Asked of the catalog first: `CREATE INDEX IF NOT EXISTS` would lock the events table
    // against accepts before finding the index there, at every replica's start.
    if built(tx).await? {
        return Ok(());
    }
    let schema = match installed_in(tx).await? {
        Some(schema) => schema,
        None => match install(tx).await? {
            Ok(schema) => schema,
            Err(refused) => {
                tracing::warn!("{}", refused.advice());
                return Ok(());
            }
        },
    };
    let build = tx.savepoint("search_index").await?;
    let mut failed = None;
    for (index, column) in INDEXES.iter().zip(["dedup_key", "summary"]) {
        let sql = format!("CREATE INDEX IF NOT EXISTS {index} ON events USING gin ({column} {schema}.gin_trgm_ops)");
        if let Err(e) = build.batch_execute(&sql).await {
            failed = Some(e);
            break;
        }
    }
    match failed {
        None => build.commit().await?,
        Some(e) if e.code().is_some() => {
            drop(build);
            tracing::warn!(error = %QueueError::from(e), "the search index could not be built: a search reads every event");
        }
        Some(e) => return Err(e.into()),
    }
    Ok(())
}

/// Whether both search indexes are in the store's schema.
async fn built(tx: &Transaction<'_>) -> Result<bool, QueueError> {
    let sql = "SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema() AND indexname = ANY($1)";
    let n: i64 = tx.query_one(sql, &[&INDEXES.as_slice()]).await?.get_as(0)?;
    Ok(n == INDEXES.len() as i64)
}

/// The schema pg_trgm is installed in, quoted for SQL, if it is.
async fn installed_in(tx: &Transaction<'_>) -> Result<Option<String>, QueueError> {
    let sql = "SELECT quote_ident(n.nspname) FROM pg_extension x JOIN pg_namespace n ON n.oid = x.extnamespace
         WHERE x.extname = 'pg_trgm'";
    tx.query_opt(sql, &[]).await?.map(|r| r.get_as(0)).transpose()
}

/// Installs pg_trgm into the current schema, or says why the server refused (no privilege,
/// not shipped with the server); a lost connection is an error.
async fn install(tx: &mut Transaction<'_>) -> Result<Result<String, Refused>, QueueError> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&EXTENSION_LOCK]).await?;
    // Another schema's migration may have installed it while this one waited.
    if let Some(schema) = installed_in(tx).await? {
        return Ok(Ok(schema));
    }
    let attempt = tx.savepoint("pg_trgm").await?;
    match attempt.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_trgm").await {
        Ok(()) => attempt.commit().await?,
        Err(e) if e.code().is_some() => {
            drop(attempt);
            let who = tx.query_one("SELECT current_database()::text, current_user::text", &[]).await?;
            return Ok(Err(Refused { error: e.into(), database: who.get_as(0)?, role: who.get_as(1)? }));
        }
        Err(e) => return Err(e.into()),
    }
    let schema = installed_in(tx).await?;
    schema.map(Ok).ok_or_else(|| QueueError::Database("pg_trgm was installed but is not in pg_extension".into()))
}

#[cfg(test)]
mod tests;
