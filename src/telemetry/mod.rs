//! What pagerhook says about itself: the log (`tracing`), the Prometheus metrics, and the
//! typed events that write both.
//!
//! Every outcome an operator counts or reads (a webhook refused, accepted, mapped or kept as a
//! dead letter; a delivery attempt; a task that died; a reload) is one struct in [`events`]
//! whose [`InternalEvent::emit`] writes its log line and updates its metric together, as
//! Vector's `internal_events` do. [`Metrics`]' counters can only be moved from here (their
//! methods are private to this module), so a log line and a metric cannot disagree. A
//! webhook and a delivery attempt each run in a span ([`webhook_span`], [`attempt_span`]),
//! so every line they log carries the source, or the event and its request.

#[cfg(test)]
pub mod capture;
pub mod events;
mod metrics;

pub use events::InternalEvent;
pub use metrics::Metrics;

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Text on a terminal, JSON when stderr is not a TTY.
    Auto,
    Text,
    Json,
}

/// Installs the global subscriber; `RUST_LOG` overrides the default: `info`, but the
/// PostgreSQL driver at `warn`, since it logs every server notice at INFO ("relation already
/// exists, skipping" as a command opens the store), which is neither ours nor actionable.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,tokio_postgres=warn"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    // Colour codes only on a terminal: `--log-format text 2>file` must stay plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = if json { builder.json().flatten_event(true).try_init() } else { builder.try_init() };
}

/// The span one webhook request runs in, from its first byte to its answer.
pub fn webhook_span(source: &str) -> tracing::Span {
    tracing::info_span!("webhook", source = %source)
}

/// The span one claimed event's attempt (or deferral) runs in; `attempt` counts from 1.
pub fn attempt_span(event_id: i64, inbound_id: &str, attempt: u32) -> tracing::Span {
    tracing::info_span!("attempt", event_id, inbound_id = %inbound_id, attempt)
}

#[cfg(test)]
mod tests;
