//! The accept path, free of HTTP: find the source, verify, map, commit.
//!
//! `http` calls [`Pipeline::ingest`] and turns its result into a status code; `render` and
//! replay reuse the same source and mapping code.

use crate::mapping::Rendered;
use crate::queue::{now_millis, Accepted, InboundStatus, NewInbound, Queue, QueueError};
use crate::source::{Disposition, Incoming, SourceError, Sources, Verified};
use std::sync::Arc;
use tokio::sync::Notify;

/// What happened to an accepted request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Committed with this many events.
    Accepted { id: String, events: usize },
    /// Seen before (same delivery id); nothing new stored.
    Duplicate { id: String },
    /// Verified and recorded, but deliberately not mapped (e.g. `ping`), or no rule matched.
    Ignored { id: String, reason: String },
    /// A rule failed; the payload is stored for replay once the mapping is fixed.
    MappingFailed { id: String, error: String },
}

/// Why a request was refused; `http` picks the status code.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("no source named '{0}' (configured sources answer at /hooks/<name>)")]
    UnknownSource(String),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(
        "source '{source_name}': this request would produce {events} events, more than max_events_per_request = {max}"
    )]
    TooManyEvents { source_name: String, events: usize, max: usize },
    #[error("storage could not commit: {0}")]
    Storage(#[from] QueueError),
}

/// Everything the accept path needs.
#[derive(Clone)]
pub struct Pipeline {
    pub sources: Arc<Sources>,
    pub queue: Arc<dyn Queue>,
    /// Notified after each commit so the delivery worker wakes at once.
    pub wake: Arc<Notify>,
}

impl Pipeline {
    /// Verifies, maps and durably records one webhook.
    pub async fn ingest(&self, source: &str, req: Incoming) -> Result<IngestOutcome, IngestError> {
        let src = self.sources.get(source).ok_or_else(|| IngestError::UnknownSource(source.to_string()))?;
        let query = req.query.clone();
        let verified = src.verify(req).await?;
        let decision = match verified.disposition() {
            Disposition::Ignore(reason) => Decision::Ignore(reason.to_string()),
            Disposition::Map => match src.mapping().apply(&verified) {
                Ok(rendered) if rendered.len() > src.max_events_per_request() => {
                    return Err(IngestError::TooManyEvents {
                        source_name: source.to_string(),
                        events: rendered.len(),
                        max: src.max_events_per_request(),
                    })
                }
                Ok(rendered) if rendered.is_empty() => Decision::Ignore("no rule matched".to_string()),
                Ok(rendered) => {
                    log_notes(source, &rendered);
                    Decision::Map(rendered)
                }
                Err(e) => {
                    tracing::warn!(source, error = %e, "mapping failed; payload kept for replay");
                    Decision::Failed(e.to_string())
                }
            },
        };
        let (status, events) = match &decision {
            Decision::Map(r) => (InboundStatus::Mapped, r.iter().map(|r| r.event.clone()).collect()),
            Decision::Ignore(_) => (InboundStatus::Ignored, Vec::new()),
            Decision::Failed(e) => (InboundStatus::MappingFailed(e.clone()), Vec::new()),
        };
        let inbound = record(&verified, &query, status);
        Ok(match self.queue.accept(inbound, events).await? {
            Accepted::Duplicate { id } => IngestOutcome::Duplicate { id },
            Accepted::Committed { id, events } => {
                if events > 0 {
                    self.wake.notify_one();
                }
                match decision {
                    Decision::Map(_) => IngestOutcome::Accepted { id, events },
                    Decision::Ignore(reason) => IngestOutcome::Ignored { id, reason },
                    Decision::Failed(error) => IngestOutcome::MappingFailed { id, error },
                }
            }
        })
    }
}

/// What the mappings made of a verified request.
enum Decision {
    Map(Vec<Rendered>),
    Ignore(String),
    Failed(String),
}

fn record(v: &Verified, query: &str, status: InboundStatus) -> NewInbound {
    NewInbound {
        id: uuid::Uuid::now_v7().to_string(),
        source: v.source().to_string(),
        received_at: now_millis(),
        dedupe_id: v.delivery_id().map(str::to_string),
        headers: v.headers().to_stored(),
        query: query.to_string(),
        body: v.raw().clone(),
        status,
    }
}

fn log_notes(source: &str, rendered: &[Rendered]) {
    for r in rendered {
        for note in r.event.notes() {
            tracing::warn!(source, rule = %r.rule, note = %note, "event adjusted to fit PagerDuty's limits");
        }
    }
}
