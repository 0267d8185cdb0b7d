//! Logging with `tracing`: human-readable on a terminal, JSON otherwise.

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

/// Installs the global subscriber; `RUST_LOG` overrides the default `info` level.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
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

#[cfg(test)]
mod tests;
