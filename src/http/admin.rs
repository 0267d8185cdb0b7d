//! The admin listener: health, readiness, the delivery log, dead letters, the mapping
//! playground's render, and the web console (static files embedded in the binary) that uses them.

use super::error::{replay_error_message, AdminError};
use super::AdminState;
use crate::queue::{DeadId, EventQuery};
use crate::supervise::NotReady;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::ResponseError;
use actix_web::{web, HttpRequest, HttpResponse};

/// A handler's answer: success picked here, a refusal's status by `error.rs`.
pub(super) type Answer = Result<HttpResponse, AdminError>;

/// Refuses a request whose `Host` is not one of the listener's names: IP literals,
/// `localhost`, and `server.admin_hosts`. A page on another site whose name an attacker points
/// at this address (DNS rebinding) is same-origin with its own name, and could otherwise read
/// `/metrics` or drive the console's API from a browser behind the firewall. No `Host` (HTTP/1.0
/// tools) is no browser, and is let through.
pub async fn only_own_names(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let host = req.headers().get("host").map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let names = req.app_data::<web::Data<super::AdminHosts>>().map(|h| h.0.as_slice()).unwrap_or_default();
    match host {
        Some(host) if !is_own_name(&host, names) => {
            tracing::warn!(host = %host, path = %req.path(), "admin request for another host refused");
            let refused = AdminError::ForeignHost(host).error_response();
            Ok(req.into_response(refused).map_into_right_body())
        }
        _ => next.call(req).await.map(ServiceResponse::map_into_left_body),
    }
}

/// Whether `host` (a `Host` header: a name or IP literal, perhaps with a port) names this
/// listener.
fn is_own_name(host: &str, names: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        // `[v6]:port`: an IP literal, whatever follows.
        Some(v6) => return v6.split_once(']').is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok()),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name.parse::<std::net::Ipv4Addr>().is_ok() || name == "localhost" || names.contains(&name)
}

/// `GET /healthz`: the process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// `GET /readyz`: config loaded, storage answering and taking webhooks (room left), every
/// background task up, not shutting down.
pub async fn readyz(state: web::Data<AdminState>) -> Answer {
    match state.health.not_ready() {
        None => {}
        Some(NotReady::Stopping) => return Err(AdminError::ShuttingDown),
        Some(NotReady::TaskDown(why)) => return Err(AdminError::TaskDown(why)),
        Some(NotReady::OutOfRoom(why)) => return Err(AdminError::OutOfRoom(why)),
    }
    let (pending, _) = state.queue.depth().await.map_err(|e| storage_unavailable("/readyz", &e))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "status": "ready", "pending": pending })))
}

/// 503 with a short reason; the store's own message (paths, SQL, hosts) goes to the log only.
fn storage_unavailable(what: &str, e: &crate::queue::QueueError) -> AdminError {
    tracing::error!(request = what, error = %e, "storage unavailable");
    AdminError::StorageUnavailable
}

/// `GET /metrics`: Prometheus (OpenMetrics text). Unauthenticated, like `/readyz`: it holds
/// counts, not payloads, and scrapers rarely carry tokens; keep the admin listener private.
pub async fn metrics(state: web::Data<AdminState>) -> Answer {
    let (depth, oldest) = state.queue.depth().await.map_err(|e| storage_unavailable("/metrics", &e))?;
    let age =
        |t: crate::queue::Millis| std::time::Duration::from_millis((crate::queue::now_millis() - t).max(0) as u64);
    // Measured for this scrape (a statvfs and three pragmas on SQLite): never a stale figure.
    let room = state.queue.room().await.map_err(|e| storage_unavailable("/metrics", &e))?;
    state.pipeline.metrics().store_room(room.used_bytes, room.free_bytes);
    let oldest = oldest.map(age);
    let open = state.queue.open_incidents().await.map_err(|e| storage_unavailable("/metrics", &e))?;
    let oldest_incident = open.iter().map(|o| o.oldest_opened_at).min().map(age);
    state.pipeline.metrics().incidents(&open_by_source(&state.pipeline, &open), oldest_incident);
    Ok(HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.pipeline.metrics().render(depth, oldest)))
}

/// Open incidents per configured source (0 for those with none), those of sources no longer
/// configured summed as `unknown`: label values stay a closed set.
fn open_by_source(pipeline: &crate::ingest::Pipeline, open: &[crate::queue::OpenIncidents]) -> Vec<(String, u64)> {
    let mut by: std::collections::BTreeMap<String, u64> = pipeline.source_names().into_iter().map(|s| (s, 0)).collect();
    for o in open {
        let source = if pipeline.is_configured(&o.source) { o.source.clone() } else { "unknown".to_string() };
        *by.entry(source).or_default() += o.open;
    }
    by.into_iter().collect()
}

/// Checks `Authorization: Bearer <admin_token>` in constant time; no token configured = no admin API.
pub(super) fn authorized(req: &HttpRequest, state: &AdminState) -> Result<(), AdminError> {
    let Some(token) = &state.admin_token else {
        return Err(AdminError::Disabled);
    };
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    // As SHA-256 digests: a byte compare of the tokens would take time in their length.
    if token.matches(given.as_bytes()) {
        Ok(())
    } else {
        Err(AdminError::Unauthorized)
    }
}

/// Answers from the store as JSON, or 503 when it cannot be read.
pub(super) fn stored<T: serde::Serialize>(r: Result<T, crate::queue::QueueError>) -> Answer {
    let v = r.map_err(|e| storage_unavailable("admin API", &e))?;
    Ok(HttpResponse::Ok().json(v))
}

/// Checks the token, then parses the `{id}` path segment as a dead-letter id.
fn dead_id(req: &HttpRequest, state: &AdminState) -> Result<DeadId, AdminError> {
    authorized(req, state)?;
    let raw = req.match_info().get("id").unwrap_or_default();
    DeadId::parse(raw).ok_or_else(|| AdminError::BadDeadId(raw.to_string()))
}

/// `?source=NAME&limit=N` of the dead-letter list (`&force=true` for a replay).
#[derive(Debug, serde::Deserialize)]
pub struct DeadQuery {
    source: Option<String>,
    limit: Option<usize>,
    /// Replay dead triggers whose incident was resolved after they died too.
    #[serde(default)]
    force: bool,
}

/// `?q=TEXT&before=ID&limit=N` of the delivery list.
#[derive(Debug, serde::Deserialize)]
pub struct DeliveriesQuery {
    q: Option<String>,
    before: Option<i64>,
    limit: Option<usize>,
}

/// The most rows one page of `/admin/deliveries` or `/admin/dead` holds.
const MAX_PAGE: usize = 500;

/// `GET /admin/deliveries`: events newest first, filtered by dedup_key (a part of it), source
/// or state, a page at a time (`before` = the last id of the previous page).
pub async fn deliveries(req: HttpRequest, q: web::Query<DeliveriesQuery>, state: web::Data<AdminState>) -> Answer {
    authorized(&req, &state)?;
    let q = q.into_inner();
    let search = q.q.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    stored(state.queue.events(EventQuery { search, before: q.before, limit, ..EventQuery::default() }).await)
}

/// `GET /admin/deliveries/{id}`: one event as sent, its attempts and the request it came from.
pub async fn delivery(req: HttpRequest, state: web::Data<AdminState>) -> Answer {
    authorized(&req, &state)?;
    let raw = req.match_info().get("id").unwrap_or_default();
    let id = raw.parse::<i64>().map_err(|_| AdminError::BadEventNumber(raw.to_string()))?;
    match state.queue.event(id).await {
        Ok(None) => Err(AdminError::NoEvent(id)),
        other => stored(other),
    }
}

/// `GET /admin/stats`: the queue gauges and delivery outcomes `/metrics` exports, the outcomes
/// counted over the last hour, each routing key's backlog (by fingerprint, as the condition
/// watcher last measured it), and whether this is a dry run (`serve --dry-run`).
pub async fn stats(req: HttpRequest, state: web::Data<AdminState>) -> Answer {
    authorized(&req, &state)?;
    let depth = state.queue.depth().await.map(|(n, oldest)| {
        let age = oldest.map(|t| ((crate::queue::now_millis() - t).max(0) as f64) / 1000.0);
        serde_json::json!({
            "queue_depth": n,
            "oldest_pending_seconds": age,
            "attempts_last_hour": state.pipeline.metrics().attempts_last_hour(),
            "backlog": state.pipeline.metrics().key_backlog(),
            "dry_run": state.dry_run,
        })
    });
    stored(depth)
}

/// `GET /admin/sources`: the configured sources' names, sorted.
pub async fn sources(req: HttpRequest, state: web::Data<AdminState>) -> Answer {
    authorized(&req, &state)?;
    Ok(HttpResponse::Ok().json(state.pipeline.source_names()))
}

/// The body of `POST /admin/render`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenderRequest {
    source: String,
    /// The payload as sent, as text.
    payload: String,
    /// `Name: value` lines.
    #[serde(default)]
    headers: String,
    #[serde(default)]
    query: String,
    /// A mapping file's text to render with instead of the source's mappings (empty: theirs).
    #[serde(default)]
    mapping: String,
}

/// `POST /admin/render`: what the current mappings would make of a payload; `pagerhook
/// render` over HTTP. Verifies, stores and sends nothing.
pub async fn render(
    req: HttpRequest,
    payload: web::Payload,
    limits: web::Data<super::BodyLimits>,
    state: web::Data<AdminState>,
) -> Answer {
    // The body is read only after the token is checked: a caller without it can make the
    // listener wait for nothing, and learns nothing of the format.
    authorized(&req, &state)?;
    let body = match super::read_body(payload, &limits).await {
        Ok(body) => body,
        Err(e) => return Ok(e.error_response()),
    };
    let body: RenderRequest = serde_json::from_slice(&body).map_err(AdminError::BadBody)?;
    let mut headers = Vec::new();
    for (n, line) in body.headers.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let Some((k, v)) = line.split_once(':') else {
            return Err(AdminError::BadHeaderLine { line: n + 1, text: line.to_string() });
        };
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let query = body.query.trim().trim_start_matches('?');
    let mapping = Some(body.mapping).filter(|m| !m.trim().is_empty());
    Ok(match state.pipeline.preview(&body.source, headers, query, body.payload.into(), mapping).await {
        Ok(p) => HttpResponse::Ok().json(p),
        Err(e) => e.error_response(),
    })
}

/// The console's files, compiled in: it works air-gapped and needs no build step.
const CONSOLE_HTML: &str = include_str!("console/index.html");
const DISABLED_HTML: &str = include_str!("console/disabled.html");
const CONSOLE_CSS: &str = include_str!("console/console.css");
const CONSOLE_JS: &str = include_str!("console/console.js");
const FAVICON: &str = include_str!("console/favicon.svg");

/// Every console response: nothing but this origin may be loaded, framed or posted to.
const CSP: &str = "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn console_file(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("content-security-policy", CSP))
        .insert_header(("x-content-type-options", "nosniff"))
        .insert_header(("referrer-policy", "no-referrer"))
        .insert_header(("cache-control", "no-cache"))
        .body(body)
}

/// `GET /`: the console; without `server.admin_token`, a page saying how to turn it on.
pub async fn console(state: web::Data<AdminState>) -> HttpResponse {
    match state.admin_token {
        Some(_) => console_file("text/html; charset=utf-8", CONSOLE_HTML),
        None => console_file("text/html; charset=utf-8", DISABLED_HTML),
    }
}

/// `GET /console/{file}`: the console's stylesheet, script and icon.
pub async fn console_asset(req: HttpRequest) -> Answer {
    Ok(match req.match_info().get("file").unwrap_or_default() {
        "console.css" => console_file("text/css; charset=utf-8", CONSOLE_CSS),
        "console.js" => console_file("text/javascript; charset=utf-8", CONSOLE_JS),
        "favicon.svg" => console_file("image/svg+xml", FAVICON),
        _ => return Err(AdminError::NoConsoleFile),
    })
}

/// `GET /admin/dead`: dead events and payloads whose mapping failed, newest first.
pub async fn dead_letters(req: HttpRequest, q: web::Query<DeadQuery>, state: web::Data<AdminState>) -> Answer {
    authorized(&req, &state)?;
    let q = q.into_inner();
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    stored(state.queue.dead_letters(q.source, limit).await)
}

/// `GET /admin/dead/{id}`: one dead letter with its attempts and stored request.
pub async fn dead_letter(req: HttpRequest, state: web::Data<AdminState>) -> Answer {
    let id = dead_id(&req, &state)?;
    match state.queue.dead_letter(id.clone()).await {
        Ok(None) => Err(AdminError::NoDeadLetter(id)),
        other => stored(other),
    }
}

/// `DELETE /admin/dead/{id}`: forget a dead letter.
pub async fn delete_dead_letter(req: HttpRequest, state: web::Data<AdminState>) -> Answer {
    let id = dead_id(&req, &state)?;
    match state.queue.delete_dead(id.clone()).await {
        Ok(false) => Err(AdminError::NoDeadLetter(id)),
        other => stored(other.map(|_| serde_json::json!({ "status": "deleted", "id": id.to_string() }))),
    }
}

/// `POST /admin/dead/{id}/replay[?force=true]`: queue a dead event again, or re-map a failed
/// payload with the current mappings; a dead trigger whose incident was resolved after it
/// died is skipped unless `force`.
pub async fn replay(req: HttpRequest, q: web::Query<DeadQuery>, state: web::Data<AdminState>) -> Answer {
    let id = dead_id(&req, &state)?;
    Ok(match state.pipeline.replay(&id, q.force).await {
        Ok(r) => HttpResponse::Ok().json(r),
        Err(e) => {
            tracing::warn!(dead_letter = %id, error = %e, "replay refused");
            e.error_response()
        }
    })
}

/// `POST /admin/dead/replay?source=NAME[&force=true]`: replay every dead letter (of one source).
pub async fn replay_all(req: HttpRequest, q: web::Query<DeadQuery>, state: web::Data<AdminState>) -> Answer {
    authorized(&req, &state)?;
    let results = state.pipeline.replay_all(q.source.as_deref(), q.force).await.map(|rs| {
        rs.into_iter()
            .map(|(id, r)| match r {
                Ok(r) => serde_json::json!({ "id": id, "result": r }),
                Err(e) => {
                    tracing::warn!(dead_letter = %id, error = %e, "replay refused");
                    serde_json::json!({ "id": id, "error": replay_error_message(&e) })
                }
            })
            .collect::<Vec<_>>()
    });
    stored(results)
}
