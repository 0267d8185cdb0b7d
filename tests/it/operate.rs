//! Running it in production: metrics, hot reload, logs and graceful shutdown.

use crate::helpers::fake_pagerduty::FakePagerDuty;
use crate::helpers::{
    base_config, bearer_source, eventually, fixture, sample, serve_binary, signal, spawn_app, spawn_app_in,
    write_binary_config, TestApp, GITHUB_SECRET, HOOK_TOKEN, INTEGRATION_KEY, NUMBERED,
};
use pagerhook::reload::ReloadError;
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// A GitHub request with a malformed signature (401) and one to an unknown source (404).
async fn refused_twice(app: &TestApp) {
    let forged = app
        .post_hook(
            "github",
            &[("content-type", "application/json"), ("x-github-event", "push"), ("x-hub-signature-256", "sha256=00")],
            "{}",
        )
        .await;
    assert_eq!(forged.status, 401);
    assert_eq!(app.post_hook("no-such-source", &[], "{}").await.status, 404);
}

#[tokio::test]
async fn metrics_count_requests_refusals_events_and_attempts() {
    let app = spawn_app().await;
    assert_eq!(app.github("workflow_run", "m-1", &fixture("github/workflow_run_failure.json")).await.status, 202);
    refused_twice(&app).await;
    app.fake.wait_for(1, WAIT).await;
    // The attempt is counted as it ends, the queue's depth read from the store once the
    // attempt's outcome is committed, a moment later: wait for both.
    let text = eventually("the delivery is counted and the queue is empty", || async {
        let t = app.scrape().await;
        let delivered = sample(&t, r#"pagerhook_delivery_attempts_total{outcome="delivered"}"#).is_some();
        (delivered && sample(&t, "pagerhook_queue_depth") == Some(0.0)).then_some(t)
    })
    .await;
    for (series, value) in [
        (r#"pagerhook_webhook_requests_total{source="github",status="202"}"#, 1.0),
        (r#"pagerhook_webhook_requests_total{source="github",status="401"}"#, 1.0),
        (r#"pagerhook_webhook_requests_total{source="unknown",status="404"}"#, 1.0),
        (r#"pagerhook_webhook_rejected_total{source="github",reason="malformed_credentials"}"#, 1.0),
        (r#"pagerhook_events_queued_total{source="github",kind="alert",action="trigger"}"#, 1.0),
        (r#"pagerhook_delivery_attempts_total{outcome="delivered"}"#, 1.0),
        ("pagerhook_upstream_seconds_count", 1.0),
        ("pagerhook_queue_depth", 0.0),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    }
    assert!(!text.contains("no-such-source"), "request paths never become label values");
}

/// Every answer to a webhook is counted by source and outcome, so an alert can tell a payload
/// no rule matched (`unmatched`) from a `ping` (`ignored`) and a repeat (`duplicate`).
#[tokio::test]
async fn webhooks_are_counted_by_source_and_outcome() {
    let app = spawn_app().await;
    let run = fixture("github/workflow_run_failure.json");
    assert_eq!(app.github("workflow_run", "o-1", &run).await.status, 202);
    assert_eq!(app.github("workflow_run", "o-1", &run).await.status, 200, "a repeat");
    assert_eq!(app.github("ping", "o-2", br#"{"zen": "Keep it logically awesome.", "hook_id": 1}"#).await.status, 200);
    assert_eq!(app.github("star", "o-3", br#"{"action": "created"}"#).await.status, 200);
    refused_twice(&app).await;
    let text = app.scrape().await;
    for (outcome, value) in [
        ("accepted", 1.0),
        ("duplicate", 1.0),
        ("ignored", 1.0),
        ("unmatched", 1.0),
        ("refused", 1.0),
        ("mapping_failed", 0.0),
        ("too_many_events", 0.0),
        ("partial", 0.0),
    ] {
        let series = format!(r#"pagerhook_webhook_outcomes_total{{source="github",outcome="{outcome}"}}"#);
        assert_eq!(sample(&text, &series), Some(value), "{series} in\n{text}");
    }
    let unknown = r#"pagerhook_webhook_outcomes_total{source="unknown",outcome="refused"}"#;
    assert_eq!(sample(&text, unknown), Some(1.0), "{text}");
}

/// An app with a bearer source `load` on [`NUMBERED`], written to `numbered.toml` for tests to change.
async fn spawn_numbered() -> TestApp {
    spawn_app_in(|text, dir| {
        let path = dir.join("numbered.toml");
        std::fs::write(&path, NUMBERED).unwrap();
        format!("{text}{}", bearer_source("load", &path))
    })
    .await
}

#[tokio::test]
async fn a_changed_mapping_is_reloaded_and_a_broken_one_is_refused() {
    let app = spawn_numbered().await;
    let mapping = app.dir.path().join("numbered.toml");
    let reloads = |outcome: &'static str| {
        let app = &app;
        async move { sample(&app.scrape().await, &format!(r#"pagerhook_config_reloads_total{{outcome="{outcome}"}}"#)) }
    };

    // Edited on disk: the watcher reloads it without a signal.
    std::fs::write(&mapping, NUMBERED.replace("event {{body.n}}", "v2 event {{body.n}}")).unwrap();
    eventually("the edited mapping is reloaded", || async { reloads("ok").await.filter(|n| *n >= 1.0) }).await;
    assert_eq!(app.post_bearer("load", &json!({"n": 1, "action": "trigger"})).await.status, 202);
    assert_eq!(app.fake.wait_for(1, WAIT).await[0].summary(), Some("v2 event 1"));

    // A mapping that does not compile is refused; the running one stays.
    std::fs::write(&mapping, "[[rule]]\nname = \"broken\"\nemit = \"alert\"\nsummary = \"{{#if}}\"\n").unwrap();
    eventually("the broken mapping is refused", || async { reloads("error").await.filter(|n| *n >= 1.0) }).await;
    assert!(app.app.as_ref().unwrap().reload().await.is_err());
    assert_eq!(app.post_bearer("load", &json!({"n": 2, "action": "trigger"})).await.status, 202);
    assert_eq!(app.fake.wait_for(2, WAIT).await[1].summary(), Some("v2 event 2"));

    // One that compiles but calls a helper that does not exist would make every webhook
    // mapping_failed: refused at load like the rest.
    std::fs::write(&mapping, NUMBERED.replace("event {{body.n}}", "{{upcase body.n}}")).unwrap();
    let err = app.app.as_ref().unwrap().reload().await.unwrap_err();
    assert!(matches!(err, ReloadError::Sources(_)), "{err:?}");
    assert!(err.to_string().contains("unknown helper `upcase`"), "{err}");
    assert_eq!(app.post_bearer("load", &json!({"n": 3, "action": "trigger"})).await.status, 202);
    assert_eq!(app.fake.wait_for(3, WAIT).await[2].summary(), Some("v2 event 3"));
}

/// The binary, on a config with a bearer source and the fake PagerDuty at `events_url`.
async fn serve(dir: &std::path::Path, events_url: &str, log: &str) -> (std::process::Child, String, String) {
    let mapping = dir.join("numbered.toml");
    std::fs::write(&mapping, NUMBERED).unwrap();
    let (base, admin) = write_binary_config(dir, &(base_config(dir, events_url) + &bearer_source("load", &mapping)));
    let child = serve_binary(dir, &admin, log).await;
    (child, base, admin)
}

/// Waits (with a deadline) for a child to exit on its own.
async fn exit_status(child: &mut std::process::Child) -> std::process::ExitStatus {
    let child = std::sync::Mutex::new(child);
    eventually("pagerhook exits", || {
        let status = child.lock().unwrap().try_wait().unwrap();
        async move { status }
    })
    .await
}

#[tokio::test]
async fn sighup_reloads_the_config() {
    let fake = FakePagerDuty::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _, admin) = serve(dir.path(), &fake.url, "serve.log").await;
    signal(&child, "HUP");
    let http = reqwest::Client::new();
    eventually("SIGHUP reloads", || async {
        let text = http.get(format!("{admin}/metrics")).send().await.ok()?.text().await.ok()?;
        sample(&text, r#"pagerhook_config_reloads_total{outcome="ok"}"#).filter(|n| *n == 1.0)
    })
    .await;
    signal(&child, "TERM");
    assert!(exit_status(&mut child).await.success());
}

#[tokio::test]
async fn logs_are_json_lines_tied_by_ids_and_never_carry_secrets_or_refused_bodies() {
    let fake = FakePagerDuty::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base, _) = serve(dir.path(), &fake.url, "serve.log").await;
    let http = reqwest::Client::new();
    let accepted: Value = http
        .post(format!("{base}/hooks/load"))
        .bearer_auth(HOOK_TOKEN)
        .json(&json!({"n": 1, "action": "trigger"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let inbound_id = accepted["id"].as_str().unwrap().to_string();
    let refused = http
        .post(format!("{base}/hooks/github"))
        .header("x-github-event", "push")
        .header("x-hub-signature-256", "sha256=0000000000000000000000000000000000000000000000000000000000000000")
        .header("content-type", "application/json")
        .body(r#"{"marker": "REFUSED-BODY-MARKER"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    fake.wait_for(1, WAIT).await;
    signal(&child, "TERM");
    assert!(exit_status(&mut child).await.success());

    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    let lines: Vec<Value> =
        log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    let with = |message: &str| lines.iter().filter(move |l| l["message"] == message).collect::<Vec<_>>();
    let request = with("webhook").into_iter().find(|l| l["inbound_id"] == inbound_id.as_str()).expect("request line");
    assert_eq!(request["status"], 202);
    let attempt = with("delivery attempt").into_iter().find(|l| l["inbound_id"] == inbound_id.as_str());
    assert!(attempt.is_some_and(|a| a["outcome"] == "delivered"), "one line per attempt, tied to the request:\n{log}");
    assert!(with("webhook refused").iter().any(|l| l["status"] == 401), "{log}");
    for secret in [INTEGRATION_KEY, HOOK_TOKEN, GITHUB_SECRET, "REFUSED-BODY-MARKER"] {
        assert!(!log.contains(secret), "the log holds {secret:?}");
    }
}

#[tokio::test]
async fn sigterm_finishes_and_leaves_undelivered_events_queued() {
    // PagerDuty unreachable: the accepted event cannot be delivered before the stop.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base, admin) = serve(dir.path(), &dead_url, "serve.log").await;
    let http = reqwest::Client::new();
    let res = http
        .post(format!("{base}/hooks/load"))
        .bearer_auth(HOOK_TOKEN)
        .json(&json!({"n": 1, "action": "trigger"}))
        .send()
        .await;
    assert_eq!(res.unwrap().status().as_u16(), 202);
    let pid_file = dir.path().join("pagerhook.pid");
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap().trim(), child.id().to_string());
    signal(&child, "TERM");
    assert!(exit_status(&mut child).await.success(), "a clean exit on SIGTERM");
    assert!(http.get(format!("{admin}/healthz")).send().await.is_err(), "listeners are closed");
    assert!(!pid_file.exists(), "a clean exit removes its pid file");
    // The ready line names the store it opened (here the SQLite file).
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    let ready = log.lines().find(|l| l.contains("pagerhook ready")).expect("a ready line");
    let ready: Value = serde_json::from_str(ready).unwrap();
    assert_eq!(ready["store"], format!("SQLite {}", dir.path().join("pagerhook.db").display()), "{ready}");

    // The next start finds the event and delivers it.
    let fake = FakePagerDuty::start().await;
    let text = std::fs::read_to_string(dir.path().join("pagerhook.toml")).unwrap().replace(&dead_url, &fake.url);
    std::fs::write(dir.path().join("pagerhook.toml"), text).unwrap();
    let mut child = serve_binary(dir.path(), &admin, "serve-2.log").await;
    assert_eq!(fake.wait_for(1, WAIT).await[0].dedup_key(), Some("n-1"));
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn a_reload_refuses_a_resolve_rule_without_dedup_key() {
    let app = spawn_numbered().await;
    let resolve =
        "[[rule]]\nname = \"all clear\"\nemit = \"alert\"\naction = \"resolve\"\nsummary = \"s\"\nsource = \"x\"\n";
    std::fs::write(app.dir.path().join("numbered.toml"), format!("{NUMBERED}\n{resolve}")).unwrap();
    let err = app.app.as_ref().unwrap().reload().await.unwrap_err().to_string();
    assert!(
        err.contains("numbered.toml") && err.contains("rule 'all clear'") && err.contains("needs dedup_key"),
        "{err}"
    );
    assert_eq!(
        app.post_bearer("load", &json!({"n": 1, "action": "trigger"})).await.status,
        202,
        "the old mapping runs on"
    );
}
