//! Bench helper, not shipped: posts webhooks and reports throughput and latency.
//!
//! Closed loop (`--connections` senders as fast as answers come) or open loop (`--rate`
//! requests a second on a fixed schedule; latency counted from the scheduled time, so a
//! stalled server cannot hide its queueing).
//!
//! Usage: cargo run --release --example loadgen -- --url URL --kind github --secret S [--rate N]

use clap::Parser;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser, Debug, Clone)]
struct Args {
    #[arg(long)]
    url: String,
    /// What to send: `ceiling` (empty body), `github` (a signed, merged pull request, numbered
    /// in trailing whitespace so that no two are the same bytes; the same sequence for the bare
    /// handler, pagerhook and adnanh/webhook), `numbered` (bearer,
    /// `{"n","t"}`), `alertmanager` (bearer, a group of `--alerts` firing alerts).
    #[arg(long, default_value = "github")]
    kind: String,
    /// GitHub webhook secret or bearer token.
    #[arg(long, default_value = "")]
    secret: String,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Stop after this many requests instead of after `--seconds`.
    #[arg(long)]
    requests: Option<u64>,
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Requests a second (open loop); without it, closed loop.
    #[arg(long)]
    rate: Option<f64>,
    #[arg(long, default_value_t = 100)]
    alerts: usize,
}

fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

struct Sender {
    args: Args,
    http: reqwest::Client,
    github_body: Vec<u8>,
    next: AtomicU64,
}

impl Sender {
    /// Request `n`'s pull request and its signature. pagerhook answers a GitHub body it has
    /// seen before as a duplicate (a replayed delivery), so each request's bytes differ: the
    /// fixture followed by `n` written in 16 JSON whitespace characters (same size every time,
    /// same parse), signed anew. Every target gets the same bodies.
    fn github(&self, n: u64) -> (Vec<u8>, String) {
        let mut body = self.github_body.clone();
        body.extend((0..16).map(|d| b" \t\n\r"[((n >> (2 * d)) & 3) as usize]));
        let mut mac = Hmac::<Sha256>::new_from_slice(self.args.secret.as_bytes()).unwrap();
        mac.update(&body);
        (body, format!("sha256={}", hex::encode(mac.finalize().into_bytes())))
    }

    fn request(&self) -> reqwest::RequestBuilder {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let post = self.http.post(&self.args.url);
        match self.args.kind.as_str() {
            "ceiling" => post,
            "github" => {
                let (body, sig) = self.github(n);
                post.header("content-type", "application/json")
                    .header("x-github-event", "pull_request")
                    .header("x-hub-signature-256", sig)
                    .body(body)
            }
            "numbered" => post.bearer_auth(&self.args.secret).json(&json!({"n": n, "t": now_us().to_string()})),
            "alertmanager" => {
                let alerts: Vec<_> = (0..self.args.alerts)
                    .map(|i| {
                        json!({
                            "status": "firing",
                            "labels": {"alertname": "BenchStorm", "instance": format!("host-{n}-{i}:9100"), "severity": "critical", "job": "node"},
                            "annotations": {"summary": format!("storm alert {n}/{i}")},
                            "startsAt": "2026-11-25T10:00:00Z",
                            "endsAt": "0001-01-01T00:00:00Z",
                            "generatorURL": "http://prometheus.example/graph",
                            "fingerprint": format!("{n:08x}{i:08x}")
                        })
                    })
                    .collect();
                post.bearer_auth(&self.args.secret).json(&json!({
                    "version": "4", "groupKey": format!("{{}}:{{alertname=\"BenchStorm\",n=\"{n}\"}}"), "truncatedAlerts": 0,
                    "status": "firing", "receiver": "pagerhook", "groupLabels": {"alertname": "BenchStorm"},
                    "commonLabels": {"alertname": "BenchStorm"}, "commonAnnotations": {},
                    "externalURL": "http://alertmanager.example", "alerts": alerts
                }))
            }
            other => panic!("unknown --kind {other}"),
        }
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let github_body =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/github/pull_request_merged.json")).unwrap();

    let http = reqwest::Client::builder().pool_max_idle_per_host(args.connections).build().unwrap();
    let sender = Arc::new(Sender { args: args.clone(), http, github_body, next: AtomicU64::new(0) });
    let latencies = Arc::new(Mutex::new(Vec::<u64>::new()));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let limit = args.requests.unwrap_or(u64::MAX);
    let issued = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let record = |sender: Arc<Sender>, latencies: Arc<Mutex<Vec<u64>>>, errors: Arc<AtomicU64>, from: Instant| async move {
        match sender.request().send().await {
            Ok(r) if r.status().is_success() => latencies.lock().unwrap().push(from.elapsed().as_micros() as u64),
            _ => {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    match args.rate {
        Some(rate) => {
            let permits = Arc::new(tokio::sync::Semaphore::new(args.connections * 16));
            let mut i = 0u64;
            loop {
                let at = started + Duration::from_secs_f64(i as f64 / rate);
                if at >= deadline || i >= limit {
                    break;
                }
                tokio::time::sleep_until(at.into()).await;
                let permit = permits.clone().acquire_owned().await.unwrap();
                let f = record(sender.clone(), latencies.clone(), errors.clone(), at);
                tasks.spawn(async move {
                    f.await;
                    drop(permit);
                });
                i += 1;
            }
        }
        None => {
            for _ in 0..args.connections {
                let (sender, latencies, errors, issued) =
                    (sender.clone(), latencies.clone(), errors.clone(), issued.clone());
                tasks.spawn(async move {
                    while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < limit {
                        record(sender.clone(), latencies.clone(), errors.clone(), Instant::now()).await;
                    }
                });
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).map(|us| *us as f64 / 1000.0)
    };
    println!(
        "{}",
        json!({
            "ok": lat.len(),
            "errors": errors.load(Ordering::Relaxed),
            "seconds": elapsed,
            "rps": lat.len() as f64 / elapsed,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
        })
    );
}
