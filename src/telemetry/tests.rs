use super::*;
use std::sync::{Arc, Mutex};

/// What a subscriber wrote.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'w> MakeWriter<'w> for Captured {
    type Writer = Captured;

    fn make_writer(&'w self) -> Captured {
        self.clone()
    }
}

/// What a payload may put in a logged value: a screen clear, a line break that would forge a
/// log line, a right-to-left override.
const HOSTILE: &str = "k\x1b[2J\r\n2024-01-01T00:00:00Z  INFO forged\u{202e}tuo";

/// One event logged with `HOSTILE` in its message and in fields of both kinds, as `json` or text.
fn logged(json: bool) -> String {
    let out = Captured::default();
    let subscriber = subscriber(json, EnvFilter::new("info"), out.clone(), false);
    tracing::subscriber::with_default(subscriber, || {
        tracing::warn!(source = %HOSTILE, dedup_key = ?HOSTILE, error = HOSTILE, "refused {HOSTILE}");
    });
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    text
}

#[test]
fn a_log_line_is_one_line_whatever_a_payload_wrote() {
    for json in [false, true] {
        let line = logged(json);
        let body = line.strip_suffix('\n').unwrap_or_else(|| panic!("one line, ended: {line:?}"));
        // JSON escapes control characters; text also escapes bidirectional overrides.
        let raw = body.chars().find(|c| c.is_control() || (!json && ('\u{202a}'..='\u{202e}').contains(c)));
        assert_eq!(raw, None, "json={json}: {line:?}");
        assert!(body.contains("forged"), "json={json}: {line:?}");
    }
    assert!(logged(false).contains(r"k\u{1b}[2J\r\n2024-01-01"), "{}", logged(false));
}
