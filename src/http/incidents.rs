//! The admin API of the incident ledger: `GET /admin/incidents` (what pagerhook believes is
//! open) and `POST /admin/incidents/resolve` (an operator's resolve), which the console's
//! Incidents page uses.

use super::admin::{authorized, stored, Answer};
use super::error::AdminError;
use super::AdminState;
use crate::queue::{now_millis, IncidentQuery};
use actix_web::{web, HttpRequest};

/// `?open=true&source=NAME&older_than=2h&limit=N` of the incident list.
#[derive(Debug, serde::Deserialize)]
pub struct IncidentsQuery {
    #[serde(default)]
    open: bool,
    source: Option<String>,
    older_than: Option<String>,
    limit: Option<usize>,
}

/// The most incidents one answer holds.
const MAX_INCIDENTS: usize = 1000;

/// `GET /admin/incidents`: the ledger's incidents, oldest first.
pub async fn incidents(req: HttpRequest, q: web::Query<IncidentsQuery>, state: web::Data<AdminState>) -> Answer {
    authorized(&req, &state)?;
    let q = q.into_inner();
    let opened_before = match q.older_than.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(d) => {
            let age = humantime::parse_duration(d)
                .map_err(|e| AdminError::BadIncidentQuery(format!("older_than {d:?}: {e}")))?;
            Some(now_millis() - age.as_millis().min(i64::MAX as u128) as i64)
        }
    };
    let source = q.source.filter(|s| !s.is_empty());
    let limit = q.limit.unwrap_or(MAX_INCIDENTS).clamp(1, MAX_INCIDENTS);
    stored(state.queue.incidents(IncidentQuery { open: q.open, source, opened_before, limit }).await)
}

/// The body of `POST /admin/incidents/resolve`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    dedup_keys: Vec<String>,
}

/// `POST /admin/incidents/resolve` with `{"dedup_keys": [...]}`: queues a resolve, recorded as
/// an operator's, for each key the ledger holds open; says which it did not.
pub async fn resolve(req: HttpRequest, body: web::Bytes, state: web::Data<AdminState>) -> Answer {
    authorized(&req, &state)?;
    let body: ResolveBody = serde_json::from_slice(&body).map_err(AdminError::BadBody)?;
    if body.dedup_keys.is_empty() {
        return Err(AdminError::BadIncidentQuery("dedup_keys is empty: name the incidents to resolve".into()));
    }
    let done = state.pipeline.resolve_incidents(body.dedup_keys).await;
    if let Ok(done) = &done {
        for d in done {
            tracing::info!(outcome = ?d, "operator resolve through the admin API");
        }
    }
    stored(done)
}
