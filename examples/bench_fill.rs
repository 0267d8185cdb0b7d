//! Bench helper, not shipped: fills a store with N pending alert events (distinct incidents),
//! through the same `Intake::accept` the service uses, to time a start with a large backlog.
//!
//! Usage: cargo run --release --example bench_fill -- DB_PATH N

use pagerhook::config::Secret;
use pagerhook::event::{AlertDraft, Event, RoutingKey};
use pagerhook::queue::{now_millis, Durability, InboundStatus, Intake, NewInbound, Role, SqliteQueue};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let path = std::path::PathBuf::from(args.next().expect("DB_PATH"));
    let total: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1_000_000);
    let q = SqliteQueue::open(&path, Durability::Process, Role::Tool).unwrap();
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
}
