//! The only code that talks to PagerDuty.

use crate::event::{Event, EventKind};
use std::time::Duration;

/// Most bytes of a PagerDuty response kept for diagnostics.
const RESPONSE_KEEP: usize = 2048;

/// Most bytes of a PagerDuty response read at all: its answers are a few hundred bytes, and
/// whatever sits at `events_url` (a proxy, a misconfigured URL) must not make us buffer more.
const RESPONSE_LIMIT: usize = 64 * 1024;

/// PagerDuty's answer to one event, or why there was none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// PagerDuty answered; `retry_after` is `Retry-After` as a delay, when sent; `status` and
    /// `dedup_key` are the fields of its JSON answer (a 202 says `"success"` and the dedup_key
    /// it filed the event under).
    Status {
        code: u16,
        message: String,
        retry_after: Option<Duration>,
        status: Option<String>,
        dedup_key: Option<String>,
    },
    /// No answer: connection refused, timeout, TLS, DNS.
    Transport(String),
}

/// Why there is no client to send with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The TLS backend or the system's configuration refused to build one.
    #[error("cannot build HTTP client: {0}")]
    Build(reqwest::Error),
    /// `events_url` with an endpoint's path is not a URL (config validation checks it first).
    #[error("pagerduty.events_url {url:?} is not a valid URL: {error}")]
    Url { url: String, error: String },
}

/// Sends events to the Events API v2, or, in dry-run, only logs them.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Each endpoint's URL, parsed once: parsing it for every request was 4 % of delivery.
    alert_url: reqwest::Url,
    change_url: reqwest::Url,
    dry_run: bool,
}

impl Client {
    /// A client for `events_url` (e.g. `https://events.pagerduty.com`) with a per-request timeout.
    pub fn new(events_url: &str, timeout: Duration, dry_run: bool) -> Result<Client, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            // The events URL is config, not payload, but a redirect off it is never expected.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("pagerhook/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ClientError::Build)?;
        let base = events_url.trim_end_matches('/');
        let endpoint = |kind: EventKind| {
            let url = format!("{base}{}", kind.path());
            reqwest::Url::parse(&url).map_err(|e| ClientError::Url { error: e.to_string(), url })
        };
        Ok(Client { http, alert_url: endpoint(EventKind::Alert)?, change_url: endpoint(EventKind::Change)?, dry_run })
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
                body = %event.text(),
                "dry run: would send event"
            );
            return Response::Status {
                code: 202,
                message: "dry run".into(),
                retry_after: None,
                status: None,
                // PagerDuty returned nothing: recording the key sent would show a "dedup_key
                // PagerDuty returned" that it never sent.
                dedup_key: None,
            };
        }
        let url = match event.kind() {
            EventKind::Alert => self.alert_url.clone(),
            EventKind::Change => self.change_url.clone(),
        };
        let body = event.wire_json();
        let request = self.http.post(url).header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
        let res = match request.send().await {
            Ok(r) => r,
            Err(e) => return Response::Transport(transport_error(&e)),
        };
        let code = res.status().as_u16();
        let retry_after = res
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, std::time::SystemTime::now()));
        let body = match read_limited(res, RESPONSE_LIMIT).await {
            Ok(b) => b,
            Err(e) => return Response::Transport(transport_error(&e)),
        };
        // Parsed once for all three fields (it was parsed once per field).
        let json = serde_json::from_slice::<serde_json::Value>(&body).ok();
        let field = |name: &str| {
            json.as_ref()
                .and_then(|v| v.get(name).and_then(|s| s.as_str()).map(|s| truncate(s.trim())))
                .filter(|s| !s.is_empty())
        };
        Response::Status {
            code,
            message: message(json.as_ref(), &body),
            retry_after,
            status: field("status"),
            dedup_key: field("dedup_key"),
        }
    }
}

/// `Retry-After` in either form RFC 9110 allows: delay-seconds, or an HTTP date (IMF-fixdate,
/// and the obsolete RFC 850 and asctime forms a recipient must accept), as a delay from `now`.
/// A date already past is no delay at all.
fn retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
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

/// PagerDuty's `message` and `errors` (from `json`, the body parsed), or the start of the raw body.
fn message(json: Option<&serde_json::Value>, body: &[u8]) -> String {
    if let Some(v) = json {
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

/// At most [`RESPONSE_KEEP`] bytes of `s`, on a character boundary.
fn truncate(s: &str) -> String {
    let mut end = s.len().min(RESPONSE_KEEP);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
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
mod tests;
