//! `POST /hooks/{source}`.

use super::{read_body, BodyLimits};
use crate::ingest::{IgnoreReason, IngestError, IngestOutcome, Pipeline};
use crate::source::{Headers, Incoming};
use crate::telemetry::events::{WebhookAccepted, WebhookOutcome, WebhookRefused};
use crate::telemetry::{webhook_span, InternalEvent};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde_json::json;
use tracing::Instrument;

/// Takes the raw bytes (never `web::Json`, which would parse before verification), in the
/// webhook's span.
pub async fn post_hook(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    limits: web::Data<BodyLimits>,
    pipeline: web::Data<Pipeline>,
) -> HttpResponse {
    let source = path.into_inner();
    let span = webhook_span(&source);
    handle(req, source, payload, limits, pipeline).instrument(span).await
}

async fn handle(
    req: HttpRequest,
    source: String,
    payload: web::Payload,
    limits: web::Data<BodyLimits>,
    pipeline: web::Data<Pipeline>,
) -> HttpResponse {
    let started = std::time::Instant::now();
    let body = match read_body(payload, &limits).await {
        Ok(b) => b,
        Err(e) => {
            WebhookRefused {
                source: &source,
                configured: pipeline.is_configured(&source),
                status: e.status_code().as_u16(),
                reason: None,
                error: &e,
                elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
                ours: false,
            }
            .emit(pipeline.metrics());
            return e.error_response();
        }
    };
    let headers = Headers::from_pairs(
        req.headers().iter().map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())),
    );
    let incoming = Incoming { headers, query: req.query_string().to_string(), body };
    let result = pipeline.ingest(&source, incoming).await;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(outcome) => answer_accepted(&pipeline, &source, &outcome, elapsed_ms),
        Err(e) => answer_refused(&pipeline, &source, &e, elapsed_ms),
    }
}

/// Success answers are picked here; every refusal's status is error.rs's.
fn answer_accepted(pipeline: &Pipeline, source: &str, outcome: &IngestOutcome, elapsed_ms: f64) -> HttpResponse {
    let (mut answer, body, counted) = match outcome {
        IngestOutcome::Accepted { id, events } => (
            HttpResponse::Accepted(),
            json!({ "status": "accepted", "events": events, "id": id }),
            WebhookOutcome::Accepted,
        ),
        IngestOutcome::Duplicate { id } => {
            (HttpResponse::Ok(), json!({ "status": "duplicate", "id": id }), WebhookOutcome::Duplicate)
        }
        IngestOutcome::Ignored { id, reason } => {
            let counted = match reason {
                IgnoreReason::BySource(_) => WebhookOutcome::Ignored,
                IgnoreReason::NoRuleMatched => WebhookOutcome::Unmatched,
            };
            (HttpResponse::Ok(), json!({ "status": "ignored", "reason": reason, "id": id }), counted)
        }
        // Stored for replay: the sender has done its part and must not retry. The detail
        // (rule, field, mapping file) is logged, not sent.
        IngestOutcome::MappingFailed { id, .. } => (
            HttpResponse::Accepted(),
            json!({ "status": "mapping_failed", "events": 0, "error": "a mapping rule failed on this payload; it is kept for replay", "id": id }),
            WebhookOutcome::MappingFailed,
        ),
        IngestOutcome::TooManyEvents { id, error } => (
            HttpResponse::Accepted(),
            json!({ "status": "too_many_events", "events": 0, "error": error, "id": id }),
            WebhookOutcome::TooManyEvents,
        ),
        // The events that mapped are queued; the items that failed are kept for replay.
        IngestOutcome::Partial { id, events, failed, .. } => (
            HttpResponse::Accepted(),
            json!({ "status": "partial", "events": events, "failed_items": failed, "error": "some items failed to map; they are kept for replay", "id": id }),
            WebhookOutcome::Partial,
        ),
        IngestOutcome::Unmatched { id } => (
            HttpResponse::Accepted(),
            json!({ "status": "unmatched", "events": 0, "error": "no rule matched this payload; it is kept for replay", "id": id }),
            WebhookOutcome::Unmatched,
        ),
    };
    let res = answer.json(&body);
    WebhookAccepted {
        source,
        status: res.status().as_u16(),
        outcome: counted,
        inbound_id: body["id"].as_str().unwrap_or_default(),
        elapsed_ms,
    }
    .emit(pipeline.metrics());
    res
}

fn answer_refused(pipeline: &Pipeline, source: &str, e: &IngestError, elapsed_ms: f64) -> HttpResponse {
    let (configured, reason, ours) = match e {
        // An unknown name comes from the request path: never a label value.
        IngestError::UnknownSource(_) => (false, None, false),
        IngestError::Source(refusal) => (true, Some(refusal.reason_class()), false),
        IngestError::Storage(_) => (true, None, true),
    };
    let status = e.status_code().as_u16();
    WebhookRefused { source, configured, status, reason, error: e, elapsed_ms, ours }.emit(pipeline.metrics());
    e.error_response()
}
