//! The only code that talks to PagerDuty.

use crate::event::Event;
use std::time::Duration;

/// Most bytes of a PagerDuty response kept for diagnostics.
const RESPONSE_KEEP: usize = 2048;

/// Most bytes of a PagerDuty response read at all: its answers are a few hundred bytes, and
/// whatever sits at `events_url` (a proxy, a misconfigured URL) must not make us buffer more.
const RESPONSE_LIMIT: usize = 64 * 1024;

/// PagerDuty's answer to one event, or why there was none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// PagerDuty answered; `retry_after` is `Retry-After` in seconds, when sent.
    Status { code: u16, message: String, retry_after: Option<Duration> },
    /// No answer: connection refused, timeout, TLS, DNS.
    Transport(String),
}

/// Sends events to the Events API v2, or, in dry-run, only logs them.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    events_url: String,
    dry_run: bool,
}

impl Client {
    /// A client for `events_url` (e.g. `https://events.pagerduty.com`) with a per-request timeout.
    pub fn new(events_url: &str, timeout: Duration, dry_run: bool) -> Result<Client, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            // The events URL is config, not payload, but a redirect off it is never expected.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("pagerhook/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build HTTP client: {e}"))?;
        Ok(Client { http, events_url: events_url.trim_end_matches('/').to_string(), dry_run })
    }

    /// Whether events are only logged.
    pub fn is_dry_run(&self) -> bool {
        self.dry_run
    }

    /// Sends one event and reports what PagerDuty said.
    pub async fn send(&self, event: &Event) -> Response {
        if self.dry_run {
            tracing::info!(
                kind = event.kind().as_str(),
                routing_key = %event.routing_key().fingerprint(),
                body = %event.body(),
                "dry run: would send event"
            );
            return Response::Status { code: 202, message: "dry run".into(), retry_after: None };
        }
        let url = format!("{}{}", self.events_url, event.kind().path());
        let res = match self.http.post(&url).json(&event.wire_body()).send().await {
            Ok(r) => r,
            Err(e) => return Response::Transport(transport_error(&e)),
        };
        let code = res.status().as_u16();
        let retry_after = res
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = match read_limited(res, RESPONSE_LIMIT).await {
            Ok(b) => b,
            Err(e) => return Response::Transport(transport_error(&e)),
        };
        Response::Status { code, message: message(&body), retry_after }
    }
}

/// The body's first `limit` bytes; the rest is never read (the connection is dropped).
async fn read_limited(mut res: reqwest::Response, limit: usize) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await? {
        let room = limit - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= limit {
            break;
        }
    }
    Ok(body)
}

/// PagerDuty's `message` and `errors`, or the start of the raw body.
fn message(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        let mut m = v.get("message").and_then(|m| m.as_str()).unwrap_or_default().to_string();
        if let Some(errs) = v.get("errors").and_then(|e| e.as_array()).filter(|e| !e.is_empty()) {
            let errs: Vec<String> =
                errs.iter().map(|e| e.as_str().map(str::to_string).unwrap_or_else(|| e.to_string())).collect();
            m = format!("{m}: {}", errs.join("; "));
        }
        if !m.is_empty() {
            return m;
        }
    }
    let s = String::from_utf8_lossy(&body[..body.len().min(RESPONSE_KEEP)]);
    s.trim().to_string()
}

fn transport_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    // Walk the source chain for the root cause, without the URL (which may carry nothing
    // secret today, but the body never reaches here anyway).
    let mut cause = std::error::Error::source(e);
    let mut last = None;
    while let Some(c) = cause {
        last = Some(c.to_string());
        cause = c.source();
    }
    match last {
        Some(c) => format!("{kind}: {c}"),
        None => kind.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers 400 and then streams body bytes until the client hangs up.
    async fn endless_answer() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            let _ = conn.read(&mut buf).await;
            let head = "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n";
            if conn.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let chunk = format!("{:x}\r\n{}\r\n", 16 * 1024, "x".repeat(16 * 1024));
            while conn.write_all(chunk.as_bytes()).await.is_ok() {}
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn an_endless_answer_is_read_up_to_the_limit_and_no_further() {
        let url = endless_answer().await;
        let client = Client::new(&url, Duration::from_secs(20), false).unwrap();
        let key =
            crate::event::RoutingKey::parse(crate::config::Secret::new("0123456789abcdef0123456789abcdef")).unwrap();
        let draft = crate::event::ChangeDraft {
            summary: Some("s".into()),
            source: None,
            timestamp: None,
            links: vec![],
            custom_details: None,
        };
        let event = Event::change(key, draft).unwrap();
        // Without a limit the read would go on until the 20 s timeout and end as a transport error.
        let res = tokio::time::timeout(Duration::from_secs(10), client.send(&event)).await.expect("answered");
        match res {
            Response::Status { code: 400, message, .. } => assert_eq!(message, "x".repeat(RESPONSE_KEEP)),
            other => panic!("expected PagerDuty's 400, got {other:?}"),
        }
    }
}
