//! The one place that turns errors into HTTP answers.
//!
//! Each refusal gets a fixed JSON shape `{"status":"error","error":"..."}` whose message says
//! which check failed, never a secret or an expected value.

use crate::ingest::{IngestError, PreviewError, ReplayError};
use crate::queue::{DeadId, QueueError};
use crate::source::SourceError;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

impl ResponseError for IngestError {
    fn status_code(&self) -> StatusCode {
        match self {
            IngestError::UnknownSource(_) => StatusCode::NOT_FOUND,
            IngestError::Source(SourceError::Unauthorized { .. }) => StatusCode::UNAUTHORIZED,
            IngestError::Source(SourceError::Forbidden { .. }) => StatusCode::FORBIDDEN,
            IngestError::Source(SourceError::BadRequest { .. }) => StatusCode::BAD_REQUEST,
            IngestError::Source(SourceError::UnsupportedMediaType { .. }) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            // Not the sender's fault (AWS did not give us the certificate): SNS retries a 5xx.
            IngestError::Source(SourceError::Unavailable { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            // The sender must retry: nothing was committed.
            IngestError::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let message = match self {
            // The reason is about our disk, not the sender's request: said plainly, no paths.
            IngestError::Storage(QueueError::OutOfRoom(_)) => OUT_OF_ROOM.to_string(),
            // Storage details are for the log, not the sender.
            IngestError::Storage(_) => STORAGE_UNAVAILABLE.to_string(),
            other => other.to_string(),
        };
        json_error(self.status_code(), &message)
    }
}

/// A request body that could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the body did not arrive within server.request_timeout ({})", humantime::format_duration(*.0))]
    Timeout(std::time::Duration),
    #[error("body over server.max_body_bytes ({0} bytes)")]
    TooLarge(usize),
    #[error("the body could not be read: {0}")]
    Broken(String),
}

impl ResponseError for BodyError {
    fn status_code(&self) -> StatusCode {
        match self {
            BodyError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Broken(_) => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = json_error(self.status_code(), &self.to_string());
        // The rest of the body may still be coming; the connection cannot serve another request.
        res.head_mut().set_connection_type(actix_web::http::ConnectionType::Close);
        res
    }
}

impl ResponseError for ReplayError {
    fn status_code(&self) -> StatusCode {
        match self {
            ReplayError::NotFound(_) => StatusCode::NOT_FOUND,
            ReplayError::UnknownSource { .. } => StatusCode::CONFLICT,
            ReplayError::Unreadable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ReplayError::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        json_error(self.status_code(), &replay_error_message(self))
    }
}

/// What a client is told when the store fails; the detail is logged.
const STORAGE_UNAVAILABLE: &str = "storage unavailable, retry later";

/// What a sender is told while the store keeps its room for delivery; the measurement is
/// logged and on `/readyz`.
const OUT_OF_ROOM: &str = "the store is out of room and refuses new webhooks until delivery makes room, retry later";

/// A replay error as the admin API answers it: storage details stay in the log.
pub fn replay_error_message(e: &ReplayError) -> String {
    match e {
        ReplayError::Storage(_) => STORAGE_UNAVAILABLE.to_string(),
        ReplayError::NotFound(_) | ReplayError::UnknownSource { .. } | ReplayError::Unreadable { .. } => e.to_string(),
    }
}

impl ResponseError for PreviewError {
    fn status_code(&self) -> StatusCode {
        match self {
            PreviewError::UnknownSource(_) => StatusCode::NOT_FOUND,
            // The payload or the mapping is what needs fixing; the message names the rule and field.
            PreviewError::Source(_) | PreviewError::Mapping(_) | PreviewError::PastedMapping(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        json_error(self.status_code(), &self.to_string())
    }
}

/// Why the admin listener refuses a request (ingest, replay and render errors have their own).
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("shutting down")]
    ShuttingDown,
    /// A background task keeps dying or cannot be restarted (`supervise::NotReady`).
    #[error("not ready: {0}")]
    TaskDown(String),
    /// The store refuses webhooks for lack of room (`supervise::NotReady::OutOfRoom`).
    #[error("not ready: the store refuses webhooks, out of room: {0}")]
    OutOfRoom(String),
    /// The store failed; what failed is logged where it happened, not sent.
    #[error("{STORAGE_UNAVAILABLE}")]
    StorageUnavailable,
    #[error("admin API disabled: set server.admin_token")]
    Disabled,
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("{0:?} is neither an event number nor an inbound id")]
    BadDeadId(String),
    #[error("{0:?} is not an event number")]
    BadEventNumber(String),
    #[error("no event {0} (delivered events go after storage.retention)")]
    NoEvent(i64),
    #[error("no dead letter {0}")]
    NoDeadLetter(DeadId),
    #[error("request body: {0}")]
    BadBody(serde_json::Error),
    #[error("header line {line}: {text:?} is not 'Name: value'")]
    BadHeaderLine { line: usize, text: String },
    /// A query or body of the incident API that cannot be used (`older_than`, no keys).
    #[error("{0}")]
    BadIncidentQuery(String),
    #[error("no such console file")]
    NoConsoleFile,
    /// A `Host` that is not one of the listener's names.
    #[error("Host {0:?} is not a name of this listener: it answers IP addresses, localhost and the names in server.admin_hosts")]
    ForeignHost(String),
}

impl ResponseError for AdminError {
    fn status_code(&self) -> StatusCode {
        match self {
            AdminError::ShuttingDown
            | AdminError::TaskDown(_)
            | AdminError::OutOfRoom(_)
            | AdminError::StorageUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            AdminError::Disabled => StatusCode::FORBIDDEN,
            AdminError::Unauthorized => StatusCode::UNAUTHORIZED,
            AdminError::BadDeadId(_)
            | AdminError::BadEventNumber(_)
            | AdminError::BadBody(_)
            | AdminError::BadHeaderLine { .. }
            | AdminError::BadIncidentQuery(_) => StatusCode::BAD_REQUEST,
            AdminError::NoEvent(_) | AdminError::NoDeadLetter(_) | AdminError::NoConsoleFile => StatusCode::NOT_FOUND,
            // The request reached a server that does not serve that name.
            AdminError::ForeignHost(_) => StatusCode::MISDIRECTED_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        json_error(self.status_code(), &self.to_string())
    }
}

/// `{"status":"error","error":message}` with `status`.
fn json_error(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({ "status": "error", "error": message }))
}

/// Fallback for unknown paths and methods.
pub async fn not_found() -> HttpResponse {
    json_error(StatusCode::NOT_FOUND, "not found (webhooks go to POST /hooks/<source>)")
}

/// `/hooks/<source>` with another method than POST (a browser, a sender's URL check).
pub async fn method_not_allowed() -> HttpResponse {
    let mut r = json_error(StatusCode::METHOD_NOT_ALLOWED, "webhooks are sent with POST");
    r.headers_mut().insert(actix_web::http::header::ALLOW, actix_web::http::header::HeaderValue::from_static("POST"));
    r
}

/// Anything else on the admin listener.
pub async fn admin_not_found() -> HttpResponse {
    json_error(
        StatusCode::NOT_FOUND,
        "not found (the admin listener serves /healthz, /readyz, /metrics, /admin/deliveries and /admin/dead)",
    )
}
