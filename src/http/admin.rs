//! The admin listener: health, readiness, the delivery log and dead letters.

use super::error::{json_error, replay_error_message, STORAGE_UNAVAILABLE};
use super::AdminState;
use crate::queue::DeadId;
use actix_web::http::StatusCode;
use actix_web::ResponseError;
use actix_web::{web, HttpRequest, HttpResponse};
use std::sync::atomic::Ordering;

/// `GET /healthz`: the process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// `GET /readyz`: config loaded, storage answering, not shutting down.
pub async fn readyz(state: web::Data<AdminState>) -> HttpResponse {
    if !state.ready.load(Ordering::SeqCst) {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    match state.queue.depth().await {
        Ok((pending, _)) => HttpResponse::Ok().json(serde_json::json!({ "status": "ready", "pending": pending })),
        Err(e) => storage_unavailable("/readyz", &e),
    }
}

/// 503 with a short reason; the store's own message (paths, SQL, hosts) goes to the log only.
fn storage_unavailable(what: &str, e: &crate::queue::QueueError) -> HttpResponse {
    tracing::error!(request = what, error = %e, "storage unavailable");
    json_error(StatusCode::SERVICE_UNAVAILABLE, STORAGE_UNAVAILABLE)
}

/// `GET /metrics`: Prometheus (OpenMetrics text). Unauthenticated, like `/readyz`: it holds
/// counts, not payloads, and scrapers rarely carry tokens; keep the admin listener private.
pub async fn metrics(state: web::Data<AdminState>) -> HttpResponse {
    let (depth, oldest) = match state.queue.depth().await {
        Ok((n, oldest)) => {
            (n, oldest.map(|t| std::time::Duration::from_millis((crate::queue::now_millis() - t).max(0) as u64)))
        }
        Err(e) => return storage_unavailable("/metrics", &e),
    };
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.pipeline.metrics.render(depth, oldest))
}

/// Checks `Authorization: Bearer <admin_token>` in constant time; no token configured = no admin API.
fn authorized(req: &HttpRequest, state: &AdminState) -> Result<(), Box<HttpResponse>> {
    let Some(token) = &state.admin_token else {
        return Err(Box::new(json_error(StatusCode::FORBIDDEN, "admin API disabled: set server.admin_token")));
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
        Err(Box::new(json_error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token")))
    }
}

/// Answers from the store as JSON, or 503 when it cannot be read.
fn stored<T: serde::Serialize>(r: Result<T, crate::queue::QueueError>) -> HttpResponse {
    match r {
        Ok(v) => HttpResponse::Ok().json(v),
        Err(e) => storage_unavailable("admin API", &e),
    }
}

/// Checks the token, then parses the `{id}` path segment as a dead-letter id.
fn dead_id(req: &HttpRequest, state: &AdminState) -> Result<DeadId, Box<HttpResponse>> {
    authorized(req, state)?;
    let raw = req.match_info().get("id").unwrap_or_default();
    DeadId::parse(raw).ok_or_else(|| {
        Box::new(json_error(StatusCode::BAD_REQUEST, &format!("{raw:?} is neither an event number nor an inbound id")))
    })
}

/// `?source=NAME&limit=N` of the dead-letter list.
#[derive(Debug, serde::Deserialize)]
pub struct DeadQuery {
    source: Option<String>,
    limit: Option<usize>,
}

/// `GET /admin/deliveries`: recent events and their state.
pub async fn deliveries(req: HttpRequest, state: web::Data<AdminState>) -> HttpResponse {
    if let Err(r) = authorized(&req, &state) {
        return *r;
    }
    stored(state.queue.recent(100).await)
}

/// `GET /admin/dead`: dead events and payloads whose mapping failed, newest first.
pub async fn dead_letters(req: HttpRequest, q: web::Query<DeadQuery>, state: web::Data<AdminState>) -> HttpResponse {
    if let Err(r) = authorized(&req, &state) {
        return *r;
    }
    let q = q.into_inner();
    stored(state.queue.dead_letters(q.source, q.limit.unwrap_or(100)).await)
}

/// `GET /admin/dead/{id}`: one dead letter with its attempts and stored request.
pub async fn dead_letter(req: HttpRequest, state: web::Data<AdminState>) -> HttpResponse {
    let id = match dead_id(&req, &state) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    match state.queue.dead_letter(id.clone()).await {
        Ok(None) => json_error(StatusCode::NOT_FOUND, &format!("no dead letter {id}")),
        other => stored(other),
    }
}

/// `DELETE /admin/dead/{id}`: forget a dead letter.
pub async fn delete_dead_letter(req: HttpRequest, state: web::Data<AdminState>) -> HttpResponse {
    let id = match dead_id(&req, &state) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    match state.queue.delete_dead(id.clone()).await {
        Ok(false) => json_error(StatusCode::NOT_FOUND, &format!("no dead letter {id}")),
        other => stored(other.map(|_| serde_json::json!({ "status": "deleted", "id": id.to_string() }))),
    }
}

/// `POST /admin/dead/{id}/replay`: queue a dead event again, or re-map a failed payload
/// with the current mappings.
pub async fn replay(req: HttpRequest, state: web::Data<AdminState>) -> HttpResponse {
    let id = match dead_id(&req, &state) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    match state.pipeline.replay(&id).await {
        Ok(r) => HttpResponse::Ok().json(r),
        Err(e) => {
            tracing::warn!(dead_letter = %id, error = %e, "replay refused");
            e.error_response()
        }
    }
}

/// `POST /admin/dead/replay?source=NAME`: replay every dead letter (of one source).
pub async fn replay_all(req: HttpRequest, q: web::Query<DeadQuery>, state: web::Data<AdminState>) -> HttpResponse {
    if let Err(r) = authorized(&req, &state) {
        return *r;
    }
    let results = state.pipeline.replay_all(q.source.as_deref()).await.map(|rs| {
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
