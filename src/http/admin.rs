//! The admin listener: health, readiness, and the delivery log.

use super::error::json_error;
use super::AdminState;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use std::sync::atomic::Ordering;
use subtle::ConstantTimeEq;

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
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, &format!("storage: {e}")),
    }
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
    if bool::from(given.as_bytes().ct_eq(token.expose().as_bytes())) {
        Ok(())
    } else {
        Err(Box::new(json_error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token")))
    }
}

/// `GET /admin/deliveries`: recent events and their state.
pub async fn deliveries(req: HttpRequest, state: web::Data<AdminState>) -> HttpResponse {
    if let Err(r) = authorized(&req, &state) {
        return *r;
    }
    match state.queue.recent(100).await {
        Ok(rows) => HttpResponse::Ok().json(rows),
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, &format!("storage: {e}")),
    }
}
