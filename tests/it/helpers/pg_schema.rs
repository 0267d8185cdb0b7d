//! A fresh PostgreSQL schema per test, on the server `DATABASE_URL` names. Shared by the
//! integration tests and, through `#[path]`, by the queue's unit tests (`src/queue/tests.rs`).

/// A schema of one test's own; dropped by [`PgSchema::drop`] when the test passed, kept for
/// inspection when it failed.
pub struct PgSchema {
    /// A connection outside the schema: name its tables `<name>.<table>`.
    pub admin: tokio_postgres::Client,
    pub name: String,
    /// `DATABASE_URL` with the schema as `search_path`: its connections work in the schema.
    pub url: String,
}

impl PgSchema {
    /// `None`, with a note that the test harness does not swallow, when DATABASE_URL is unset
    /// (`.ci/run` sets it); a server that is named but unreachable fails the test, and so does
    /// a missing DATABASE_URL under `CI=true`: CI must not pass by skipping PostgreSQL.
    pub async fn create(test: &str) -> Option<PgSchema> {
        let Ok(base) = std::env::var("DATABASE_URL") else {
            assert!(
                !must_run(std::env::var("CI").ok().as_deref()),
                "{test}: CI=true but DATABASE_URL is unset: PostgreSQL tests must run in CI (set DATABASE_URL)"
            );
            // Straight to stderr, past the harness's capture: a skip must be seen.
            let note = format!("SKIPPED on PostgreSQL: {test} (set DATABASE_URL to run it; .ci/run does)\n");
            let _ = std::io::Write::write_all(&mut std::io::stderr(), note.as_bytes());
            return None;
        };
        let (mut admin, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("DATABASE_URL is set but PostgreSQL is unreachable: {e}"));
        tokio::spawn(conn);
        share_pg_trgm(&mut admin).await;
        let name = format!("pagerhook_test_{}", uuid::Uuid::new_v4().simple());
        admin.batch_execute(&format!("CREATE SCHEMA {name}")).await.unwrap();
        eprintln!("{test}: PostgreSQL schema {name}");
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{name}");
        Some(PgSchema { admin, name, url })
    }

    /// Drops the schema and everything in it.
    pub async fn drop(self) {
        self.admin.batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name)).await.unwrap();
    }
}

/// Installs pg_trgm (the search index's extension, per database) in `public`, as an
/// administrator would, under the lock pagerhook's migration takes to install it
/// (`EXTENSION_LOCK` in src/queue/postgres/search.rs). Otherwise the first test schema to
/// migrate would hold it, and dropping that schema would drop it with every other schema's
/// search index. A server without it still runs the tests (searches scan), but for those
/// that check the index.
async fn share_pg_trgm(admin: &mut tokio_postgres::Client) {
    let tx = admin.transaction().await.unwrap();
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&0x7061_6765_7274_726d_i64]).await.unwrap();
    if tx.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public").await.is_ok() {
        tx.commit().await.unwrap();
    }
}

/// Whether PostgreSQL tests must run rather than skip, given the `CI` variable.
pub fn must_run(ci: Option<&str>) -> bool {
    ci.is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}
