//! Every typed event writes its log line and moves its metric; spans tie lines to a webhook or
//! an attempt.

use super::capture::logged;
use super::events::*;
use super::*;
use serde_json::Value;
use std::time::Duration;

type Emit = Box<dyn Fn(&Metrics)>;

/// The line an event must write: level, message, and one field with its value.
type Line = (&'static str, &'static str, &'static str, Value);

/// Each event, the metric line it must move (as `/metrics` renders it) and the log line it
/// must write (level, message, one field and its value).
fn cases() -> Vec<(Emit, &'static str, Line)> {
    let refused = |source: &'static str, configured, status, reason, ours| -> Emit {
        Box::new(move |m| {
            let error = &"no";
            WebhookRefused { source, configured, status, reason, error, elapsed_ms: 1.0, ours }.emit(m)
        })
    };
    vec![
        (
            refused("github", true, 401, Some("signature_mismatch"), false),
            r#"pagerhook_webhook_rejected_total{source="github",reason="signature_mismatch"} 1"#,
            ("WARN", "webhook refused", "reason", "signature_mismatch".into()),
        ),
        (
            refused("nope", false, 404, None, false),
            r#"pagerhook_webhook_requests_total{source="unknown",status="404"} 1"#,
            ("WARN", "webhook refused", "source", "nope".into()),
        ),
        (
            refused("github", true, 503, None, true),
            r#"pagerhook_webhook_requests_total{source="github",status="503"} 1"#,
            ("ERROR", "webhook refused", "status", 503.into()),
        ),
        (
            Box::new(|m| {
                WebhookAccepted { source: "github", status: 202, outcome: WebhookOutcome::Accepted, inbound_id: "in-1", elapsed_ms: 2.0 }
                    .emit(m)
            }),
            r#"pagerhook_webhook_requests_total{source="github",status="202"} 1"#,
            ("INFO", "webhook", "inbound_id", "in-1".into()),
        ),
        (
            Box::new(|m| {
                let events = [("alert", Some("trigger")), ("change", None)];
                WebhookMapped { source: "github", inbound_id: "in-1", events: &events }.emit(m)
            }),
            r#"pagerhook_events_queued_total{source="github",kind="change",action="none"} 1"#,
            ("DEBUG", "events queued", "events", 2.into()),
        ),
        (
            Box::new(|m| {
                WebhookDeadLettered { source: "github", inbound_id: "in-2", why: Kept::MappingFailed, error: "rule x" }
                    .emit(m)
            }),
            r#"pagerhook_mapping_failures_total{source="github",status="202"} 1"#,
            ("WARN", "mapping failed; payload kept for replay", "inbound_id", "in-2".into()),
        ),
        (
            Box::new(|m| {
                WebhookDeadLettered { source: "am", inbound_id: "in-3", why: Kept::TooManyEvents, error: "over 100" }
                    .emit(m)
            }),
            r#"pagerhook_too_many_events_total{source="am",status="202"} 1"#,
            ("WARN", "too many events; payload kept for replay once the cap is raised", "error", "over 100".into()),
        ),
        (
            Box::new(|m| DeadLettersDropped { source: "github", reason: "size", letters: 3, bytes: 4096 }.emit(m)),
            r#"pagerhook_dead_letters_dropped_total{source="github",reason="size"} 3"#,
            ("WARN", "dead letters dropped (storage.dead_letter_retention, storage.dead_letter_max_bytes)", "bytes", 4096.into()),
        ),
        (
            Box::new(|m| {
                AttemptMade {
                    event_id: 7,
                    inbound_id: "in-1",
                    attempt: 2,
                    kind: "alert",
                    action: Some("trigger"),
                    dedup_key: Some("k"),
                    status: Some(400),
                    detail: Some("Invalid"),
                    outcome: "dead_lettered",
                    upstream: Duration::from_millis(20),
                    elapsed: Duration::from_millis(21),
                }
                .emit(m)
            }),
            r#"pagerhook_delivery_attempts_total{outcome="dead_lettered"} 1"#,
            ("INFO", "delivery attempt", "outcome", "dead_lettered".into()),
        ),
        (
            Box::new(|m| EventsSuperseded { events: &[7, 8] }.emit(m)),
            "pagerhook_events_superseded_total 2",
            ("INFO", "superseded: resolved before its trigger was sent; none of them is sent", "events", "[7, 8]".into()),
        ),
        (
            Box::new(|m| AttemptAbandoned { event_id: 9, inbound_id: "in-4", why: "lost" }.emit(m)),
            r#"pagerhook_delivery_attempts_total{outcome="abandoned"} 1"#,
            ("WARN", "delivery attempt abandoned", "why", "lost".into()),
        ),
        (
            Box::new(|m| TriggersCollapsed { by: 12, collapsed: &[10] }.emit(m)),
            "pagerhook_triggers_collapsed_total 1",
            ("INFO", "trigger collapsed into a newer one for the same dedup_key", "by", 12.into()),
        ),
        (
            Box::new(|m| ConfigReloaded { config: &"p.toml", sources: 3 }.emit(m)),
            r#"pagerhook_config_reloads_total{outcome="ok"} 1"#,
            ("INFO", "config reloaded: sources, mappings and routing keys; [server], [storage], [delivery] and the [pagerduty] events_url and timeout apply at the next start", "sources", 3.into()),
        ),
        (
            Box::new(|m| ConfigReloadFailed { config: &"p.toml", error: &"bad" }.emit(m)),
            r#"pagerhook_config_reloads_total{outcome="error"} 1"#,
            ("ERROR", "config reload failed; the running config stays", "error", "bad".into()),
        ),
        (
            Box::new(|m| {
                let restart_in = Some(Duration::from_secs(2));
                TaskFailed { task: "delivery_worker", how: "panicked: x", in_a_row: 2, restart_in, not_ready: false }
                    .emit(m)
            }),
            r#"pagerhook_task_failures_total{task="delivery_worker"} 1"#,
            ("ERROR", "background task died", "restart_in_ms", 2000.into()),
        ),
        (
            Box::new(|m| AttemptPanicked { how: "panicked: y" }.emit(m)),
            r#"pagerhook_task_failures_total{task="delivery_attempt"} 1"#,
            ("ERROR", "a delivery attempt panicked; its event is tried again once its lease ends", "how", "panicked: y".into()),
        ),
    ]
}

#[test]
fn every_event_moves_its_metric_and_writes_its_line() {
    for (emit, metric, (level, message, field, value)) in cases() {
        let metrics = Metrics::new();
        let before = metrics.render(0, None);
        assert!(!before.lines().any(|l| l == metric), "{metric} before the event");
        let lines = logged(|| emit(&metrics));
        let after = metrics.render(0, None);
        assert!(after.lines().any(|l| l == metric), "{message}: missing {metric:?} in\n{after}");
        let line = lines.iter().find(|l| l["message"] == message).unwrap_or_else(|| panic!("{message}: {lines:?}"));
        assert_eq!((line["level"].as_str(), &line[field]), (Some(level), &value), "{line}");
    }
}

#[test]
fn a_refusal_by_a_verifier_counts_the_request_and_its_reason_once() {
    let metrics = Metrics::new();
    let lines = logged(|| {
        let error = &"mismatch";
        let reason = Some("signature_mismatch");
        WebhookRefused { source: "github", configured: true, status: 401, reason, error, elapsed_ms: 1.0, ours: false }
            .emit(&metrics)
    });
    let text = metrics.render(0, None);
    assert!(text.lines().any(|l| l == r#"pagerhook_webhook_requests_total{source="github",status="401"} 1"#), "{text}");
    assert_eq!(lines.len(), 1, "one line: {lines:?}");
}

#[test]
fn an_unknown_source_is_never_a_label_even_with_a_reason() {
    let metrics = Metrics::new();
    let error = &"x";
    WebhookRefused {
        source: "made-up",
        configured: false,
        status: 401,
        reason: Some("r"),
        error,
        elapsed_ms: 0.0,
        ours: false,
    }
    .emit(&metrics);
    assert!(!metrics.render(0, None).contains("made-up"));
}

#[test]
fn lines_logged_in_a_webhook_or_an_attempt_carry_its_span() {
    let metrics = Metrics::new();
    let lines = logged(|| {
        webhook_span("github").in_scope(|| {
            WebhookAccepted {
                source: "github",
                status: 202,
                outcome: WebhookOutcome::Ignored,
                inbound_id: "in-9",
                elapsed_ms: 0.5,
            }
            .emit(&metrics)
        });
        attempt_span(41, "in-9", 3)
            .in_scope(|| AttemptAbandoned { event_id: 41, inbound_id: "in-9", why: "lost" }.emit(&metrics));
    });
    assert_eq!(lines[0]["span"], serde_json::json!({ "name": "webhook", "source": "github" }), "{lines:?}");
    let attempt = serde_json::json!({ "name": "attempt", "event_id": 41, "inbound_id": "in-9", "attempt": 3 });
    assert_eq!(lines[1]["span"], attempt, "{lines:?}");
}

/// What a payload may put in a logged value: a screen clear, a line break that would forge a
/// log line, a right-to-left override.
const HOSTILE: &str = "k\x1b[2J\r\n2024-01-01T00:00:00Z  INFO forged\u{202e}tuo";

/// One event logged with `HOSTILE` in its message and in fields of both kinds, as `json` or text,
/// by the subscriber `serve` installs.
fn logged_by_serve(json: bool) -> String {
    let out = super::capture::Captured::default();
    let subscriber = subscriber(json, EnvFilter::new("info"), out.clone(), false);
    tracing::subscriber::with_default(subscriber, || {
        tracing::warn!(source = %HOSTILE, dedup_key = ?HOSTILE, error = HOSTILE, "refused {HOSTILE}");
    });
    out.text()
}

#[test]
fn a_log_line_is_one_line_whatever_a_payload_wrote() {
    for json in [false, true] {
        let line = logged_by_serve(json);
        let body = line.strip_suffix('\n').unwrap_or_else(|| panic!("one line, ended: {line:?}"));
        // JSON escapes control characters; text also escapes bidirectional overrides.
        let raw = body.chars().find(|c| c.is_control() || (!json && ('\u{202a}'..='\u{202e}').contains(c)));
        assert_eq!(raw, None, "json={json}: {line:?}");
        assert!(body.contains("forged"), "json={json}: {line:?}");
    }
    assert!(logged_by_serve(false).contains(r"k\u{1b}[2J\r\n2024-01-01"), "{}", logged_by_serve(false));
}
