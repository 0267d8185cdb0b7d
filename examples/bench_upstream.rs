//! Bench helper, not shipped: the ceiling (a bare actix-web handler that only checks the
//! body's GitHub HMAC-SHA256 signature against `$GH_SECRET` and answers 202, at `/ceiling`),
//! the relay floor (`/relay`: the same check, then one change event POSTed by reqwest to the
//! fake PagerDuty below and its answer awaited; nothing parsed, mapped or stored), and a fake
//! PagerDuty (`/v2/enqueue`, `/v2/change/enqueue`) that records how long each event took from
//! the webhook's send time (`custom_details.t`, unix µs) to here.
//! `GET /stats` prints the count and p50/p99 in ms; `POST /reset` clears them.
//! For the storm row, `POST /record` makes it also keep, per event received, its receive time
//! (unix µs), `event_action`, `dedup_key` and severity, in arrival order: `GET /log` lists
//! them (a full parse per event, so it is off for the throughput rows).
//!
//! Usage: cargo run --release --example bench_upstream -- PORT

use actix_web::{web, App, HttpResponse, HttpServer};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use std::sync::Mutex;

#[derive(Default)]
struct Stats {
    received: Mutex<(u64, Vec<u64>)>,
    /// `Some` once `/record` asked: what the storm row reads.
    log: Mutex<Option<Vec<Logged>>>,
}

/// (receive time µs, action, dedup_key, severity)
type Logged = (u64, String, String, String);

/// One received event as the storm row reads it: (receive time µs, action, dedup_key, severity).
fn logged(body: &[u8]) -> Logged {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let s = |p: &str| v.pointer(p).and_then(|x| x.as_str()).unwrap_or("").to_string();
    (now_us(), s("/event_action"), s("/dedup_key"), s("/payload/severity"))
}

fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// What pagerhook must do at the least for a GitHub webhook: verify the raw body's signature.
async fn ceiling(req: actix_web::HttpRequest, body: web::Bytes, secret: web::Data<Secret>) -> HttpResponse {
    if signed(&req, &body, &secret) {
        HttpResponse::Accepted().finish()
    } else {
        HttpResponse::Unauthorized().finish()
    }
}

/// The ceiling plus the other thing every webhook costs in the bench: one event sent to the
/// fake PagerDuty (on this process, as pagerhook's goes to this process). A floor for any
/// relay that delivers what it accepts, before durability, parsing and mapping.
async fn relay(
    req: actix_web::HttpRequest,
    body: web::Bytes,
    secret: web::Data<Secret>,
    up: web::Data<Up>,
) -> HttpResponse {
    if !signed(&req, &body, &secret) {
        return HttpResponse::Unauthorized().finish();
    }
    let event = r#"{"routing_key":"0123456789abcdef0123456789abcdef","payload":{"summary":"PR #1 merged into main","source":"github.com/octo/repo","timestamp":"2026-11-29T09:00:00Z","custom_details":{"pr":1}},"links":[{"href":"https://github.com/octo/repo/pull/1","text":"Pull request"}]}"#;
    let delivered = match up.client.post(&up.url).header("content-type", "application/json").body(event).send().await {
        Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
        _ => false,
    };
    if delivered {
        HttpResponse::Accepted().finish()
    } else {
        HttpResponse::BadGateway().finish()
    }
}

struct Up {
    client: reqwest::Client,
    url: String,
}

fn signed(req: &actix_web::HttpRequest, body: &[u8], secret: &Secret) -> bool {
    let sig = req
        .headers()
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("sha256="))
        .and_then(|v| hex::decode(v).ok());
    let mut mac = Hmac::<Sha256>::new_from_slice(&secret.0).expect("any key length");
    mac.update(body);
    sig.is_some_and(|sig| mac.verify_slice(&sig).is_ok())
}

struct Secret(Vec<u8>);

/// Only the send time of an event: the rest of the body is skipped, not built, so that the
/// fake costs little of the machine pagerhook is measured on (the real PagerDuty costs none).
#[derive(serde::Deserialize)]
struct Sent {
    payload: Option<SentPayload>,
}
#[derive(serde::Deserialize)]
struct SentPayload {
    custom_details: Option<SentDetails>,
}
#[derive(serde::Deserialize)]
struct SentDetails {
    t: Option<String>,
}

async fn enqueue(body: web::Bytes, stats: web::Data<Stats>) -> HttpResponse {
    let sent = serde_json::from_slice::<Sent>(&body)
        .ok()
        .and_then(|s| s.payload?.custom_details?.t)
        .and_then(|t| t.parse::<u64>().ok());
    if let Some(log) = stats.log.lock().unwrap().as_mut() {
        log.push(logged(&body));
    }
    let mut r = stats.received.lock().unwrap();
    r.0 += 1;
    if let Some(t) = sent {
        r.1.push(now_us().saturating_sub(t));
    }
    HttpResponse::Accepted()
        .content_type("application/json")
        .body(r#"{"status":"success","message":"Event processed"}"#)
}

async fn report(stats: web::Data<Stats>) -> HttpResponse {
    let (count, mut lat) = stats.received.lock().unwrap().clone();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).map(|us| *us as f64 / 1000.0)
    };
    HttpResponse::Ok().json(json!({"count": count, "timed": lat.len(), "p50_ms": pct(0.50), "p99_ms": pct(0.99)}))
}

async fn reset(stats: web::Data<Stats>) -> HttpResponse {
    *stats.received.lock().unwrap() = (0, Vec::new());
    HttpResponse::Ok().finish()
}

async fn record(stats: web::Data<Stats>) -> HttpResponse {
    *stats.log.lock().unwrap() = Some(Vec::new());
    HttpResponse::Ok().finish()
}

async fn log(stats: web::Data<Stats>) -> HttpResponse {
    HttpResponse::Ok().json(stats.log.lock().unwrap().clone().unwrap_or_default())
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(9900);
    let stats = web::Data::new(Stats::default());
    let secret = web::Data::new(Secret(std::env::var("GH_SECRET").unwrap_or_default().into_bytes()));
    let up = web::Data::new(Up {
        client: reqwest::Client::new(),
        url: format!("http://127.0.0.1:{port}/v2/change/enqueue"),
    });
    HttpServer::new(move || {
        App::new()
            .app_data(stats.clone())
            .app_data(up.clone())
            .app_data(secret.clone())
            .app_data(web::PayloadConfig::new(1 << 20))
            .route("/ceiling", web::post().to(ceiling))
            .route("/relay", web::post().to(relay))
            .route("/v2/enqueue", web::post().to(enqueue))
            .route("/v2/change/enqueue", web::post().to(enqueue))
            .route("/stats", web::get().to(report))
            .route("/reset", web::post().to(reset))
            .route("/record", web::post().to(record))
            .route("/log", web::get().to(log))
    })
    .bind(("127.0.0.1", port))?
    .run()
    .await
}
