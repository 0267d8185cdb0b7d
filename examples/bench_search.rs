//! Bench helper, not shipped: times the delivery list's searches on a store `bench_fill`
//! filled, first as they are before the search indexer ran (every event newer than the
//! watermark: a scan, as before the index), then after it indexed everything, timing the
//! indexer too (bench/README.md, "Search"). On PostgreSQL the index is built by the
//! migration at open, which is timed, and kept by each insert: both passes search it.
//!
//! Usage: cargo run --release --example bench_search -- DB_PATH|postgres://…

use pagerhook::config::Secret;
use pagerhook::queue::{Durability, EventQuery, Inspect, PostgresQueue, Role, SqliteQueue, SEARCH_BATCH};
use std::time::{Duration, Instant};

/// bench_fill's events are `backlog-N`, "backlog event N", source `bench`: a rare summary
/// text, a dedup_key part many share, a source every event has, and a text none has.
const SEARCHES: [&str; 5] = ["event 123456", "backlog-999", "bench", "no such text", "pending"];

#[tokio::main]
async fn main() {
    let target = std::env::args().nth(1).expect("DB_PATH or postgres:// URL");
    let opened = Instant::now();
    let q: Box<dyn Inspect> = if target.starts_with("postgres") {
        Box::new(PostgresQueue::connect(&Secret::new(target)).await.unwrap())
    } else {
        Box::new(SqliteQueue::open(std::path::Path::new(&target), Durability::Process, Role::Tool).unwrap())
    };
    // On PostgreSQL the migration builds the search index when it is missing (an upgrade).
    println!("opened (migrated) in {:.1} s", opened.elapsed().as_secs_f64());
    println!("before indexing:");
    searches(&*q).await;
    let started = Instant::now();
    let (mut total, mut longest) = (0, Duration::ZERO);
    loop {
        let batch = Instant::now();
        let n = q.index_for_search(SEARCH_BATCH).await.unwrap();
        longest = longest.max(batch.elapsed());
        total += n;
        if n == 0 {
            break;
        }
    }
    let took = started.elapsed().as_secs_f64();
    println!(
        "indexed {total} events in {took:.1} s ({:.1} µs each), longest batch {longest:?}",
        took * 1e6 / total.max(1) as f64
    );
    println!("after indexing:");
    searches(&*q).await;
}

/// Each search's median of five, a page of 50.
async fn searches(q: &dyn Inspect) {
    for text in SEARCHES {
        let mut times = Vec::new();
        let mut found = 0;
        for _ in 0..5 {
            let started = Instant::now();
            let query = EventQuery { search: Some(text.into()), limit: 50, ..EventQuery::default() };
            found = q.events(query).await.unwrap().len();
            times.push(started.elapsed());
        }
        times.sort();
        println!("  {text:>14}: {:>10.2?} median ({found} found)", times[2]);
    }
}
