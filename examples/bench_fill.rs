//! Bench helper, not shipped: fills a store with N pending alert events (distinct incidents),
//! through the same `Intake::accept` the service uses, to time a start with a large backlog
//! and the accept path's cost.
//!
//! Usage: cargo run --release --example bench_fill -- DB_PATH|postgres://… N
//!
//! With `BENCH_INDEX=1` the search indexer runs meanwhile, as under `serve`, so the time is
//! that of accepts sharing the store with it (bench/README.md, "Search").

use pagerhook::config::Secret;
use pagerhook::event::{AlertDraft, Event, RoutingKey};
use pagerhook::queue::{
    now_millis, Durability, InboundStatus, Inspect, Intake, NewInbound, PostgresQueue, Role, SqliteQueue, SEARCH_BATCH,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The store both traits are used on.
trait Store: Intake + Inspect {}
impl<T: Intake + Inspect> Store for T {}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let target = args.next().expect("DB_PATH or postgres:// URL");
    let total: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1_000_000);
    let q: Arc<dyn Store> = if target.starts_with("postgres") {
        Arc::new(PostgresQueue::connect(&Secret::new(target)).await.unwrap())
    } else {
        Arc::new(SqliteQueue::open(std::path::Path::new(&target), Durability::Process, Role::Tool).unwrap())
    };
    let done = Arc::new(AtomicBool::new(false));
    let indexer = std::env::var("BENCH_INDEX").is_ok_and(|v| v == "1").then(|| {
        let (q, done) = (q.clone(), done.clone());
        tokio::spawn(async move {
            let mut indexed = 0;
            while !done.load(Ordering::Relaxed) {
                let n = q.index_for_search(SEARCH_BATCH).await.unwrap();
                indexed += n;
                if n < SEARCH_BATCH {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
            indexed
        })
    });
    let key = RoutingKey::parse(Secret::new("0123456789abcdef0123456789abcdef")).unwrap();
    const PER_REQUEST: usize = 1000;
    let started = std::time::Instant::now();
    for batch in 0..total.div_ceil(PER_REQUEST) {
        let events = (0..PER_REQUEST.min(total - batch * PER_REQUEST))
            .map(|i| {
                let n = batch * PER_REQUEST + i;
                Event::alert(
                    key.clone(),
                    AlertDraft {
                        action: "trigger".into(),
                        dedup_key: Some(format!("backlog-{n}")),
                        summary: Some(format!("backlog event {n}")),
                        source: Some("bench".into()),
                        ..AlertDraft::default()
                    },
                )
                .unwrap()
            })
            .collect();
        let inbound = NewInbound::new("bench", now_millis(), bytes::Bytes::from_static(b"{}"), InboundStatus::Mapped);
        q.accept(inbound, events).await.unwrap();
    }
    eprintln!("{total} events queued in {:.1}s", started.elapsed().as_secs_f64());
    done.store(true, Ordering::Relaxed);
    if let Some(indexer) = indexer {
        eprintln!("the indexer indexed {} of them meanwhile", indexer.await.unwrap());
    }
}
