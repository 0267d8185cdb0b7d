//! What pagerhook says about itself: the log (`tracing`), the Prometheus metrics, and the
//! typed events that write both.
//!
//! Every outcome an operator counts or reads (a webhook refused, accepted, mapped or kept as a
//! dead letter; a delivery attempt; a task that died; a reload) is one struct in [`events`]
//! whose [`InternalEvent::emit`] writes its log line and updates its metric together, as
//! Vector's `internal_events` do. [`Metrics`]' counters can only be moved from here (their
//! methods are private to this module), so a log line and a metric cannot disagree. A
//! webhook and a delivery attempt each run in a span ([`webhook_span`], [`attempt_span`]),
//! so every line they log carries the source, or the event and its request. Text logs escape
//! control characters ([`printable`]): a payload's line break must not forge a log line.

#[cfg(test)]
pub mod capture;
pub mod events;
mod metrics;

pub use events::InternalEvent;
pub use metrics::{KeyBacklogFigures, Metrics};

use std::borrow::Cow;
use std::fmt;
use std::io::IsTerminal;
use tracing::field::Field;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::{format, MakeWriter};
use tracing_subscriber::util::SubscriberInitExt;
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
    let _ = subscriber(json, filter, std::io::stderr, std::io::stderr().is_terminal()).try_init();
}

/// The subscriber [`init`] installs, writing to `writer`.
pub fn subscriber<W>(json: bool, filter: EnvFilter, writer: W, ansi: bool) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(ansi);
    if json {
        // JSON escapes every control character itself.
        Box::new(builder.json().flatten_event(true).finish())
    } else {
        Box::new(builder.fmt_fields(format::debug_fn(escaped_field).delimited(" ")).finish())
    }
}

/// One field of a text log line, as the default formatter writes it (`name=value`, the message
/// bare), with control characters escaped: a value may come from a payload (a source name in
/// a path, a dedup_key, an error quoting a field), and a line break in it would forge a log
/// line, an escape sequence drive the terminal of whoever reads the log.
fn escaped_field(w: &mut format::Writer<'_>, field: &Field, value: &dyn fmt::Debug) -> fmt::Result {
    let text = format!("{value:?}");
    match field.name() {
        "message" => write!(w, "{}", printable(&text)),
        name => write!(w, "{name}={}", printable(&text)),
    }
}

/// `s` with every control character and bidirectional override written as an escape (`\n`,
/// `\u{1b}`, `\u{202e}`), so that printed on a terminal or into a line-based log it shows
/// what it holds and cannot move the cursor, colour the screen, break the line or reorder it.
pub fn printable(s: &str) -> Cow<'_, str> {
    let escaped = |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !s.chars().any(escaped) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if escaped(c) => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
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
