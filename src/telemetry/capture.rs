//! For unit tests: the log as `serve` writes it off a terminal (JSON lines), captured in memory.

use serde_json::Value;
use std::sync::{Arc, Mutex};
use tracing_subscriber::fmt::MakeWriter;

/// Where the captured lines go.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Every line written so far, parsed.
    pub fn lines(&self) -> Vec<Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
    }

    /// The lines whose message is `message`.
    pub fn with(&self, message: &str) -> Vec<Value> {
        self.lines().into_iter().filter(|l| l["message"] == message).collect()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// A subscriber writing JSON lines at debug level into `out`.
fn subscriber(out: Captured) -> impl tracing::Subscriber + Send + Sync {
    tracing_subscriber::fmt().with_writer(out).with_max_level(tracing::Level::DEBUG).json().flatten_event(true).finish()
}

/// Captures this thread's log until the guard is dropped (a current-thread runtime's tasks
/// included).
pub fn capture() -> (tracing::subscriber::DefaultGuard, Captured) {
    let out = Captured::default();
    (tracing::subscriber::set_default(subscriber(out.clone())), out)
}

/// The lines `f` logs.
pub fn logged(f: impl FnOnce()) -> Vec<Value> {
    let out = Captured::default();
    tracing::subscriber::with_default(subscriber(out.clone()), f);
    out.lines()
}
