//! The incident ledger end to end: webhooks in, the fake PagerDuty's 202s, the admin API, the
//! CLI beside a stopped server, `/metrics`, and a restart between trigger and resolve.

use crate::helpers::{bearer_source, binary, config_from, sample, spawn_app_in, start, Answer, TestApp, NUMBERED};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// An app with a bearer source `load` on [`NUMBERED`] (`{"n": 1, "action": "trigger"}` → an
/// alert on dedup_key `n-1`).
async fn spawn_numbered() -> TestApp {
    spawn_app_in(|text, dir| {
        let path = dir.join("numbered.toml");
        std::fs::write(&path, NUMBERED).unwrap();
        // These tests count exactly the events of the webhooks they send: pagerhook's page
        // about a dead trigger (tests/it/own_pages.rs) would be one more.
        format!("{}{}", crate::helpers::without_own_pages(text), bearer_source("load", &path))
    })
    .await
}

/// `GET /admin/incidents?{query}`.
async fn incidents(app: &TestApp, query: &str) -> Value {
    let a = app.admin_call(Method::GET, &format!("/admin/incidents?{query}")).await;
    assert_eq!(a.status, 200, "{:?}", a.json);
    a.json
}

/// `POST /admin/incidents/resolve` with `body`.
async fn resolve(app: &TestApp, body: &str) -> Answer {
    let res = app
        .http
        .post(format!("{}/admin/incidents/resolve", app.admin))
        .bearer_auth("admin-token")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    Answer { status, json: res.json().await.unwrap_or(Value::Null) }
}

/// Waits until the ledger holds `dedup_key` in `state`; its row.
async fn until_state(app: &TestApp, dedup_key: &str, state: &str) -> Value {
    crate::helpers::eventually(&format!("{dedup_key} is {state} in the ledger"), || async {
        let all = incidents(app, "").await;
        all.as_array().unwrap().iter().find(|i| i["dedup_key"] == dedup_key && i["state"] == state).cloned()
    })
    .await
}

#[tokio::test]
async fn a_trigger_pagerduty_accepted_is_listed_counted_and_resolved_by_an_operator() {
    let app = spawn_numbered().await;
    for (n, action) in [(1, "trigger"), (2, "trigger"), (2, "resolve")] {
        assert_eq!(app.post_bearer("load", &json!({"n": n, "action": action})).await.status, 202);
    }
    app.fake.wait_for(3, WAIT).await;
    let open = until_state(&app, "n-1", "open").await;
    assert_eq!((open["source"].as_str(), open["rule"].as_str()), (Some("load"), Some("numbered")));
    assert_eq!((open["summary"].as_str(), open["severity"].as_str()), (Some("event 1"), Some("error")));
    until_state(&app, "n-2", "resolved").await;
    let listed = incidents(&app, "open=true&source=load").await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed:#}");
    assert_eq!(incidents(&app, "open=true&source=other").await, json!([]));
    assert_eq!(incidents(&app, "open=true&older_than=1h").await, json!([]), "opened seconds ago");
    let bad = app.admin_call(Method::GET, "/admin/incidents?older_than=soon").await;
    assert_eq!(bad.status, 400, "{:?}", bad.json);
    let text = app.scrape().await;
    assert_eq!(sample(&text, r#"pagerhook_open_incidents{source="load"}"#), Some(1.0), "{text}");
    assert!(sample(&text, "pagerhook_oldest_open_incident_seconds").is_some_and(|s| s >= 0.0), "{text}");

    assert_eq!(resolve(&app, r#"{"dedup_keys": []}"#).await.status, 400);
    assert_eq!(resolve(&app, "not json").await.status, 400);
    let done = resolve(&app, r#"{"dedup_keys": ["n-1", "n-9"]}"#).await;
    assert_eq!(done.status, 200, "{:?}", done.json);
    assert_eq!(done.json[0]["outcome"], "queued");
    assert_eq!(done.json[1]["outcome"], "not_open");
    let got = app.fake.wait_for(4, WAIT).await;
    assert_eq!((got[3].action(), got[3].dedup_key()), (Some("resolve"), Some("n-1")));
    let closed = until_state(&app, "n-1", "resolved").await;
    assert_eq!(closed["last_by"], "@operator");
    let text = app.scrape().await;
    assert_eq!(sample(&text, r#"pagerhook_open_incidents{source="load"}"#), Some(0.0), "{text}");
    assert_eq!(sample(&text, "pagerhook_oldest_open_incident_seconds"), Some(0.0), "{text}");
}

#[tokio::test]
async fn the_cli_lists_and_resolves_with_the_server_stopped_and_the_restarted_server_sends_it() {
    let app = spawn_numbered().await;
    assert_eq!(app.post_bearer("load", &json!({"n": 5, "action": "trigger"})).await.status, 202);
    app.fake.wait_for(1, WAIT).await;
    until_state(&app, "n-5", "open").await;
    let (fake, dir) = app.stop().await;

    let cli = |log: &str, args: &[&str]| {
        let mut c = binary(dir.path(), log);
        c.env_clear().env("RUST_LOG", "info").arg("incidents").args(args);
        let out = c.output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (ok, listed) = cli("list.log", &["--open", "--source", "load"]);
    assert!(ok, "{listed}");
    assert!(listed.lines().any(|l| l.starts_with("open") && l.contains("n-5 / event 5")), "{listed}");
    let (ok, json) = cli("json.log", &["--open", "--older-than", "1h", "--json"]);
    assert!(ok && serde_json::from_str::<Value>(&json).unwrap() == json!([]), "{json}");
    let (ok, out) = cli("resolve.log", &["resolve", "n-5", "n-6"]);
    assert!(!ok, "a key not open fails the command: {out}");
    assert!(out.contains("resolve queued for n-5") && out.contains("not open in the ledger: n-6"), "{out}");

    // Restarted between the trigger and its resolve: the resolve goes out, the ledger closes.
    let text = std::fs::read_to_string(dir.path().join("pagerhook.toml")).unwrap();
    let app = start(config_from(&text, dir.path()), fake, dir).await;
    let got = app.fake.wait_for(2, WAIT).await;
    assert_eq!((got[1].action(), got[1].dedup_key()), (Some("resolve"), Some("n-5")));
    let closed = until_state(&app, "n-5", "resolved").await;
    assert_eq!(closed["last_by"], "@operator");
}

#[tokio::test]
async fn another_source_s_resolve_is_a_dead_letter_and_pagerduty_never_sees_it() {
    let app = spawn_app_in(|text, dir| {
        let path = dir.join("numbered.toml");
        std::fs::write(&path, NUMBERED).unwrap();
        format!("{text}{}{}", bearer_source("load", &path), bearer_source("other", &path))
    })
    .await;
    assert_eq!(app.post_bearer("load", &json!({"n": 1, "action": "trigger"})).await.status, 202);
    app.fake.wait_for(1, WAIT).await;
    until_state(&app, "n-1", "open").await;
    let refused = app.post_bearer("other", &json!({"n": 1, "action": "resolve"})).await;
    assert_eq!(refused.status, 202, "the sender's request is kept, not failed: {:?}", refused.json);
    let dead = app.admin_call(Method::GET, "/admin/dead").await.json;
    assert_eq!((dead[0]["source"].as_str(), dead[0]["action"].as_str()), (Some("other"), Some("resolve")), "{dead:#}");
    let reason = dead[0]["reason"].as_str().unwrap();
    assert!(reason.contains("'other'") && reason.contains("'load'") && reason.contains("may_close"), "{reason}");
    // The opener's own resolve goes out; the refused one never did.
    assert_eq!(app.post_bearer("load", &json!({"n": 1, "action": "resolve"})).await.status, 202);
    assert_eq!(until_state(&app, "n-1", "resolved").await["last_by"], "load");
    // The refused resolve was ahead of it in the lane: had it gone out, PagerDuty got three.
    let got = app.fake.received();
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!((got[1].action(), got[1].dedup_key()), (Some("resolve"), Some("n-1")));
}

#[tokio::test]
async fn a_dead_trigger_whose_incident_was_resolved_since_is_not_replayed_unless_forced() {
    let app = spawn_numbered().await;
    // PagerDuty refuses the trigger and its minimal form: a dead letter. Then its resolve goes.
    app.fake.script("/v2/enqueue", (0..2).map(|_| crate::helpers::fake_pagerduty::Reply::status(400)));
    assert_eq!(app.post_bearer("load", &json!({"n": 4, "action": "trigger"})).await.status, 202);
    app.fake.wait_for(2, WAIT).await;
    assert_eq!(app.post_bearer("load", &json!({"n": 4, "action": "resolve"})).await.status, 202);
    app.fake.wait_for(3, WAIT).await;
    let queue = app.app.as_ref().unwrap().queue().clone();
    let id = crate::helpers::eventually("the resolve is recorded as delivered", || async {
        let dead = queue.dead_letters(None, 10).await.unwrap();
        let id: i64 = dead.first()?.id.parse().ok()?;
        queue.resolved_since(id).await.unwrap().map(|_| id)
    })
    .await;

    let one = app.admin_call(Method::POST, &format!("/admin/dead/{id}/replay")).await;
    assert_eq!((one.status, one.json["outcome"].as_str()), (200, Some("skipped")), "{:?}", one.json);
    assert!(one.json["reason"].as_str().unwrap().contains("resolved after it died"), "{:?}", one.json);
    let all = app.admin_call(Method::POST, "/admin/dead/replay").await;
    assert_eq!(all.json[0]["result"]["outcome"], "skipped", "{:?}", all.json);
    let dir = app.dir.path().to_path_buf();
    let out = binary(&dir, "replay.log").args(["dlq", "replay", &id.to_string()]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.contains("skipped") && said.contains("--force"), "{said}");
    assert_eq!(app.fake.received().len(), 3, "nothing was sent");
    assert_eq!(app.admin_call(Method::GET, "/admin/dead").await.json.as_array().unwrap().len(), 1, "still dead");

    let forced = app.admin_call(Method::POST, &format!("/admin/dead/{id}/replay?force=true")).await;
    assert_eq!(forced.json["outcome"], "requeued", "{:?}", forced.json);
    let got = app.fake.wait_for(4, WAIT).await;
    assert_eq!((got[3].action(), got[3].dedup_key()), (Some("trigger"), Some("n-4")));
}

#[tokio::test]
async fn a_flapping_alert_keeps_its_incident_open_and_pages_once() {
    let app = spawn_app_in(|text, dir| {
        let path = dir.join("numbered.toml");
        std::fs::write(&path, NUMBERED).unwrap();
        format!("{text}{}resolve_delay = \"1h\"\n", bearer_source("load", &path))
    })
    .await;
    assert_eq!(app.post_bearer("load", &json!({"n": 1, "action": "trigger"})).await.status, 202);
    app.fake.wait_for(1, WAIT).await;
    until_state(&app, "n-1", "open").await;
    for action in ["resolve", "trigger", "resolve", "trigger"] {
        assert_eq!(app.post_bearer("load", &json!({"n": 1, "action": action})).await.status, 202);
    }
    let queue = app.app.as_ref().unwrap().queue().clone();
    let recent = queue.recent(10).await.unwrap();
    let damped = recent.iter().filter(|e| e.state == pagerhook::queue::EventState::Damped).count();
    assert_eq!(damped, 4, "both flaps cancelled: {recent:#?}");
    assert_eq!(queue.depth().await.unwrap().0, 0, "nothing waits to be sent");
    assert_eq!(app.fake.received().len(), 1, "one page");
    assert_eq!(until_state(&app, "n-1", "open").await["last_action"], "trigger");
}

#[tokio::test]
async fn an_event_older_than_its_incident_s_sequence_is_stale_counted_and_never_sent() {
    let app = spawn_app_in(|text, dir| {
        let path = dir.join("sequenced.toml");
        std::fs::write(&path, format!("{NUMBERED}sequence = \"{{{{body.run}}}}\"\n")).unwrap();
        format!("{}{}", crate::helpers::without_own_pages(text), bearer_source("ci", &path))
    })
    .await;
    // Run 8 failed, run 9 passed, then run 8's failure is delivered again (a re-run).
    for (run, action) in [(8, "trigger"), (9, "resolve"), (8, "trigger")] {
        let answer = app.post_bearer("ci", &json!({"n": 1, "action": action, "run": run})).await;
        assert_eq!(answer.status, 202, "{:?}", answer.json);
    }
    app.fake.wait_for(2, WAIT).await;
    until_state(&app, "n-1", "resolved").await;
    let metrics = app.scrape().await;
    assert_eq!(sample(&metrics, r#"pagerhook_events_stale_total{source="ci"}"#), Some(1.0), "{metrics}");
    let queue = app.app.as_ref().unwrap().queue().clone();
    let recent = queue.recent(3).await.unwrap();
    assert_eq!(recent[0].state, pagerhook::queue::EventState::Stale, "{recent:#?}");
    assert_eq!(queue.depth().await.unwrap().0, 0, "nothing waits to be sent");
    let sent: Vec<_> = app.fake.received().iter().map(|e| e.action().map(str::to_string)).collect();
    assert_eq!(sent, [Some("trigger".to_string()), Some("resolve".to_string())], "the re-run paged nobody");
}

/// `resolve_when_silent` end to end: an incident whose sender stopped repeating it is resolved
/// by pagerhook (a resolve reaches PagerDuty, the ledger names `@pagerhook`, the counter
/// counts it), while one the sender keeps repeating, as Alertmanager repeats a firing alert,
/// stays open.
#[tokio::test]
async fn an_incident_its_sender_stopped_repeating_is_resolved_by_pagerhook_and_a_repeated_one_is_not() {
    let app = spawn_app_in(|text, dir| {
        let path = dir.join("numbered.toml");
        std::fs::write(&path, NUMBERED).unwrap();
        let source = bearer_source("load", &path);
        format!("{}{source}resolve_when_silent = \"2s\"\n", crate::helpers::without_own_pages(text))
    })
    .await;
    for n in [1, 2] {
        assert_eq!(app.post_bearer("load", &json!({"n": n, "action": "trigger"})).await.status, 202);
    }
    until_state(&app, "n-1", "open").await;
    // The sender repeats n-2 every 500 ms (its repeat interval) until n-1 is resolved.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut repeat = tokio::time::interval(Duration::from_millis(500));
    let resolved = loop {
        repeat.tick().await;
        assert!(tokio::time::Instant::now() < deadline, "n-1 was not resolved for silence within 30 s");
        assert_eq!(app.post_bearer("load", &json!({"n": 2, "action": "trigger"})).await.status, 202);
        let all = incidents(&app, "").await;
        if let Some(i) = all.as_array().unwrap().iter().find(|i| i["dedup_key"] == "n-1" && i["state"] == "resolved") {
            break i.clone();
        }
    };
    assert_eq!(resolved["last_by"], "@pagerhook", "{resolved}");
    assert_eq!(until_state(&app, "n-2", "open").await["source"], "load");
    let resolves: Vec<_> = app
        .fake
        .received()
        .iter()
        .filter(|e| e.action() == Some("resolve"))
        .map(|e| e.dedup_key().map(str::to_string))
        .collect();
    assert_eq!(resolves, [Some("n-1".to_string())], "only the silent incident is resolved");
    let metrics = app.scrape().await;
    let counted = sample(&metrics, r#"pagerhook_incidents_silence_resolved_total{source="load"}"#);
    assert_eq!(counted, Some(1.0), "{metrics}");
}

/// README's escalation example (the `toml` block of "Escalation reaches the responder").
fn readme_escalation_rule() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme.split_once("**Escalation reaches the responder**").unwrap().1;
    section.split_once("```toml\n").unwrap().1.split_once("```").unwrap().0.to_string()
}

/// README's example, end to end: a warning, the critical trigger that escalates it (what
/// PagerDuty receives is README's listing), a restart, then the resolve closing both.
#[tokio::test]
async fn an_escalation_pages_a_second_incident_and_the_first_s_resolve_closes_both_across_a_restart() {
    let app = spawn_app_in(|text, dir| {
        let path = dir.join("escalating.toml");
        std::fs::write(&path, readme_escalation_rule()).unwrap();
        format!("{}{}", crate::helpers::without_own_pages(text), bearer_source("load", &path))
    })
    .await;
    let post = async |app: &TestApp, action: &str, severity: &str, percent: u32| {
        let body = json!({"action": action, "host": "db-1", "severity": severity, "percent": percent});
        let answer = app.post_bearer("load", &body).await;
        assert_eq!(answer.status, 202, "{:?}", answer.json);
    };
    post(&app, "trigger", "warning", 80).await;
    app.fake.wait_for(1, WAIT).await;
    until_state(&app, "disk/db-1", "open").await;
    post(&app, "trigger", "critical", 96).await;
    let got = app.fake.wait_for(2, WAIT).await;
    assert_eq!(got[1].dedup_key(), Some("disk/db-1~escalated-critical"));
    assert_eq!(got[1].summary(), Some("[escalated from warning] disk at 96% on db-1"));
    assert_eq!(got[1].body["payload"]["severity"], "critical");
    let link = json!({"dedup_key": "disk/db-1", "severity": "warning"});
    assert_eq!(got[1].body["payload"]["custom_details"]["escalated_from"], link);
    let escalated = until_state(&app, "disk/db-1~escalated-critical", "open").await;
    assert_eq!(escalated["severity"], "critical");
    assert_eq!(app.fake.incidents().open().len(), 2, "PagerDuty holds two incidents");

    // Restarted between the escalation and the resolve.
    let (fake, dir) = app.stop().await;
    let text = std::fs::read_to_string(dir.path().join("pagerhook.toml")).unwrap();
    let app = start(config_from(&text, dir.path()), fake, dir).await;
    post(&app, "resolve", "warning", 40).await;
    let got = app.fake.wait_for(4, WAIT).await;
    let sent: Vec<_> = got.iter().map(|r| (r.action().unwrap(), r.dedup_key().unwrap())).collect();
    assert_eq!(sent[..2], [("trigger", "disk/db-1"), ("trigger", "disk/db-1~escalated-critical")]);
    let mut closes = sent[2..].to_vec();
    closes.sort();
    assert_eq!(closes, [("resolve", "disk/db-1"), ("resolve", "disk/db-1~escalated-critical")]);
    assert!(app.fake.incidents().open().is_empty(), "{:?}", app.fake.incidents());
    until_state(&app, "disk/db-1", "resolved").await;
    until_state(&app, "disk/db-1~escalated-critical", "resolved").await;
}
