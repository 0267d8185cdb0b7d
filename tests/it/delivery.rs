//! Delivery: retries, dead letters, ordering, restarts.

use crate::helpers::fake_pagerduty::{FakePagerDuty, Received, Reply};
use crate::helpers::{
    bearer_source, binary, config_from, eventually, fixture, spawn_app, spawn_app_in, spawn_app_with, start,
    test_options, without_own_pages, TestApp, NUMBERED, TEAM_A_KEY,
};
use pagerhook::queue::EventState;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn server_errors_are_retried_and_the_resolve_waits_for_its_trigger() {
    let app = spawn_app().await;
    app.fake.script("/v2/enqueue", [Reply::status(500), Reply::status(500)]);
    let a = app.github("workflow_run", "t", &fixture("github/workflow_run_failure.json")).await;
    assert_eq!(a.status, 202);
    let b = app.github("workflow_run", "r", &fixture("github/workflow_run_success.json")).await;
    assert_eq!(b.status, 202);
    // trigger x3 (500, 500, 202), resolve x1, change x1
    let got = app.fake.wait_for(5, WAIT).await;
    let alerts: Vec<_> = got.iter().filter(|r| r.path == "/v2/enqueue").map(|r| r.action().unwrap()).collect();
    assert_eq!(alerts, vec!["trigger", "trigger", "trigger", "resolve"], "{got:#?}");
    let recent = app.app.as_ref().unwrap().queue().recent(10).await.unwrap();
    let trigger = recent.iter().find(|e| e.action.as_deref() == Some("trigger")).unwrap();
    assert_eq!(trigger.state, EventState::Delivered);
    assert_eq!(trigger.attempts, 3);
}

#[tokio::test]
async fn a_400_is_dead_lettered_with_pagerduty_s_message() {
    let app = spawn_app_with(without_own_pages).await;
    // The full trigger and then its minimal form are refused.
    app.fake.script("/v2/enqueue", [Reply::status(400), Reply::status(400)]);
    let a = app.github("workflow_run", "t", &fixture("github/workflow_run_failure.json")).await;
    assert_eq!(a.status, 202);
    app.fake.wait_for(2, WAIT).await;
    let queue = app.app.as_ref().unwrap().queue().clone();
    let dead = eventually("the event is dead-lettered", || async {
        queue.recent(10).await.unwrap().into_iter().next().filter(|e| e.state == EventState::Dead)
    })
    .await;
    assert_eq!(dead.attempts, 1, "a 400 is not retried");
    assert!(dead.last_error.as_deref().unwrap().contains("scripted failure"), "{dead:?}");
}

/// A failing workflow run's trigger, PagerDuty answering `first` and then 202: the two
/// requests it received, once the trigger is recorded as delivered.
async fn one_failing_run_answered(first: Reply) -> Vec<Received> {
    let app = spawn_app().await;
    app.fake.script("/v2/enqueue", [first]);
    let a = app.github("workflow_run", "t", &fixture("github/workflow_run_failure.json")).await;
    assert_eq!(a.status, 202);
    let got = app.fake.wait_for(2, WAIT).await;
    let queue = app.app.as_ref().unwrap().queue().clone();
    eventually("the trigger is delivered", || async {
        queue.recent(10).await.unwrap().into_iter().next().filter(|e| e.state == EventState::Delivered)
    })
    .await;
    got
}

/// A trigger PagerDuty refuses (400) still pages: its minimal form, with PagerDuty's error.
#[tokio::test]
async fn a_400_then_a_202_pages_with_the_minimal_event() {
    let got = one_failing_run_answered(Reply::status(400)).await;
    assert_eq!(got[1].dedup_key(), got[0].dedup_key());
    assert_eq!(got[1].summary(), got[0].summary());
    let details = &got[1].body["payload"]["custom_details"];
    assert!(details["pagerduty_error"].as_str().unwrap().contains("scripted failure"), "{details}");
}

/// An egress proxy's 403 is not PagerDuty's verdict: retried, then delivered.
#[tokio::test]
async fn a_403_then_a_202_is_delivered() {
    let got = one_failing_run_answered(Reply::status(403)).await;
    assert_eq!(got[1].body, got[0].body, "the same event again");
}

#[tokio::test]
async fn accepted_events_survive_a_restart() {
    // PagerDuty is unreachable (a port nobody listens on): the event stays queued, retrying.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let fake = FakePagerDuty::start().await;
    let fake_url = fake.url.clone();
    let dir = tempfile::tempdir().unwrap();
    let text = crate::helpers::base_config(dir.path(), &dead_url);
    let first = start(config_from(&text, dir.path()), fake, dir).await;
    let a = first.github("pull_request", "d", &fixture("github/pull_request_merged.json")).await;
    assert_eq!(a.status, 202, "{:?}", a.json);
    // Delivery was tried and failed on the dead URL: the event is still pending, with its error.
    let queue = first.app.as_ref().unwrap().queue().clone();
    let tried = eventually("a failed attempt on the dead URL", || async {
        queue.recent(10).await.unwrap().into_iter().next().filter(|e| e.attempts >= 1)
    })
    .await;
    assert_eq!(tried.state, EventState::Pending, "{tried:?}");
    assert!(tried.last_error.is_some(), "{tried:?}");
    let (fake, dir) = first.stop().await;

    // A new process on the same database, now with PagerDuty reachable, delivers it.
    let text = crate::helpers::base_config(dir.path(), &fake_url);
    let second = start(config_from(&text, dir.path()), fake, dir).await;
    let got = second.fake.wait_for(1, WAIT).await;
    assert_eq!(got[0].path, "/v2/change/enqueue");
}

/// Posts a signed GitHub fixture to the app listening on `port`; the status it answered.
pub(crate) async fn post_github(port: u16, event: &str, fixture_path: &str) -> u16 {
    let body = fixture(fixture_path);
    let sig = crate::helpers::github_signature(crate::helpers::GITHUB_SECRET, &body);
    let res = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/hooks/github"))
        .header("x-github-event", event)
        .header("x-hub-signature-256", sig)
        .body(body)
        .send()
        .await
        .unwrap();
    res.status().as_u16()
}

#[tokio::test]
async fn dry_run_records_events_as_dry_run_without_sending() {
    let dir = tempfile::tempdir().unwrap();
    let fake = crate::helpers::fake_pagerduty::FakePagerDuty::start().await;
    let cfg = config_from(&crate::helpers::base_config(dir.path(), &fake.url), dir.path());
    let hooks = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let app =
        pagerhook::app::App::start_on(cfg, pagerhook::app::Options { dry_run: true, ..test_options() }, hooks, admin)
            .await
            .unwrap();
    assert_eq!(post_github(app.port(), "pull_request", "github/pull_request_merged.json").await, 202);
    eventually("the event is recorded as dry_run", || async {
        app.queue().recent(10).await.unwrap().into_iter().next().filter(|e| e.state == EventState::DryRun)
    })
    .await;
    assert!(fake.received().is_empty(), "dry run sends nothing");
    let metrics =
        reqwest::get(format!("http://127.0.0.1:{}/metrics", app.admin_port())).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("pagerhook_delivery_attempts_total{outcome=\"dry_run\"} 1"), "{metrics}");
    assert!(!metrics.contains("outcome=\"delivered\"} 1"), "{metrics}");
    // The console's figures say so too: a dry run, and its count (not "0 delivered").
    let stats: serde_json::Value = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/admin/stats", app.admin_port()))
        .bearer_auth("admin-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["dry_run"], true, "{stats}");
    assert_eq!(stats["attempts_last_hour"]["dry_run"], 1, "{stats}");
    // An alert, which has a dedup_key: no "dedup_key PagerDuty returned" is recorded for a
    // request PagerDuty never saw.
    assert_eq!(post_github(app.port(), "workflow_run", "github/workflow_run_failure.json").await, 202);
    let alert = eventually("the alert is recorded as dry_run", || async {
        app.queue()
            .recent(10)
            .await
            .unwrap()
            .into_iter()
            .find(|e| e.dedup_key.is_some() && e.state == EventState::DryRun)
    })
    .await;
    assert_eq!(alert.pagerduty_dedup_key, None, "{alert:?}");
    app.stop().await;
}

/// The app with a `load` source mapped by `mapping` (written to `numbered.toml` in its dir)
/// and `delivery` lines added to `[delivery]`. Its dead letters page nobody: the tests count
/// the events of their own webhooks (`own_pages.rs` tests the pages).
async fn spawn_with_mapping(mapping: &str, delivery: &str) -> TestApp {
    spawn_app_in(|text, dir| {
        let text = without_own_pages(text);
        let path = dir.join("numbered.toml");
        std::fs::write(&path, mapping).unwrap();
        let text = text.replace(
            "[delivery]\n",
            &format!("[pagerduty.routing_keys]\nteam-a = \"env:TEAM_A_KEY\"\n\n[delivery]\n{delivery}"),
        );
        format!("{text}{}", bearer_source("load", &path))
    })
    .await
}

#[tokio::test]
async fn a_resolve_is_sent_to_the_routing_key_its_trigger_went_to() {
    // The sender names the team only when the alert fires; the resolve would go to the default key.
    let mapping = format!("{NUMBERED}routing_key = '{{{{default body.team \"\"}}}}'\n");
    let app = spawn_with_mapping(&mapping, "").await;
    let fire = app.post_bearer("load", &json!({"n": 1, "action": "trigger", "team": "team-a"})).await;
    assert_eq!(fire.status, 202, "{:?}", fire.json);
    assert_eq!(app.post_bearer("load", &json!({"n": 1, "action": "resolve"})).await.status, 202);
    assert_eq!(app.post_bearer("load", &json!({"n": 2, "action": "resolve"})).await.status, 202);
    let got = app.fake.wait_for(3, WAIT).await;
    let key_of = |n: &str, action: &str| {
        got.iter().find(|r| r.dedup_key() == Some(n) && r.action() == Some(action)).unwrap().body["routing_key"].clone()
    };
    assert_eq!(key_of("n-1", "trigger"), TEAM_A_KEY);
    assert_eq!(key_of("n-1", "resolve"), TEAM_A_KEY, "the resolve follows its trigger");
    assert_eq!(key_of("n-2", "resolve"), crate::helpers::INTEGRATION_KEY, "never triggered: its own key");
}

#[tokio::test]
async fn a_source_cannot_resolve_another_source_s_incident_through_sticky_routing() {
    // Team A's source pages team A's key; source "other" (default key) takes its dedup_key
    // from the payload, as SNS mappings do, so its sender can name team A's incident.
    let app = spawn_app_in(|text, dir| {
        let path = dir.join("numbered.toml");
        std::fs::write(&path, NUMBERED).unwrap();
        let text =
            text.replace("[delivery]\n", "[pagerduty.routing_keys]\nteam-a = \"env:TEAM_A_KEY\"\n\n[delivery]\n");
        let team_a = bearer_source("team-a", &path)
            .replace("kind = \"generic\"", "kind = \"generic\"\nrouting_key = \"env:TEAM_A_KEY\"");
        format!("{text}{team_a}{}", bearer_source("other", &path))
    })
    .await;
    assert_eq!(app.post_bearer("team-a", &json!({"n": 1, "action": "trigger"})).await.status, 202);
    app.fake.wait_for(1, WAIT).await;
    assert_eq!(app.post_bearer("other", &json!({"n": 1, "action": "resolve"})).await.status, 202);
    assert_eq!(app.post_bearer("team-a", &json!({"n": 1, "action": "acknowledge"})).await.status, 202);
    let got = app.fake.wait_for(3, WAIT).await;
    let key_of = |action: &str| {
        got.iter().find(|r| r.dedup_key() == Some("n-1") && r.action() == Some(action)).unwrap().body["routing_key"]
            .clone()
    };
    assert_eq!(key_of("trigger"), TEAM_A_KEY);
    assert_eq!(key_of("resolve"), crate::helpers::INTEGRATION_KEY, "the other source's resolve stays on its own key");
    assert_eq!(key_of("acknowledge"), TEAM_A_KEY);
}

#[tokio::test]
async fn a_request_is_refused_with_503_while_storage_cannot_commit() {
    let app = spawn_with_mapping(NUMBERED, "").await;
    // Another writer holds the database past the busy timeout: the accept cannot commit.
    let db = rusqlite::Connection::open(app.dir.path().join("pagerhook.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE; INSERT INTO meta (key, value) VALUES ('lock', 'held');").unwrap();
    let refused = app.post_bearer("load", &json!({"n": 1, "action": "trigger"})).await;
    assert_eq!(refused.status, 503, "{:?}", refused.json);
    assert_eq!(refused.json["error"], "storage unavailable, retry later");
    db.execute_batch("ROLLBACK").unwrap();
    // The sender's retry goes through, and only it reaches PagerDuty.
    assert_eq!(app.post_bearer("load", &json!({"n": 2, "action": "trigger"})).await.status, 202);
    let got = app.fake.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].dedup_key(), Some("n-2"));
    assert_eq!(app.app.as_ref().unwrap().queue().recent(10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_400_dead_letter_is_listed_and_delivered_when_replayed() {
    let app = spawn_with_mapping(NUMBERED, "").await;
    app.fake.script("/v2/enqueue", [Reply::status(400), Reply::status(400)]);
    assert_eq!(app.post_bearer("load", &json!({"n": 7, "action": "trigger"})).await.status, 202);
    app.fake.wait_for(2, WAIT).await;
    let list = eventually("the event is dead-lettered", || async {
        let a = app.admin_call(Method::GET, "/admin/dead").await;
        (a.json.as_array().is_some_and(|l| !l.is_empty())).then_some(a.json)
    })
    .await;
    assert_eq!(list[0]["kind"], "event");
    assert_eq!(list[0]["dedup_key"], "n-7");
    assert!(list[0]["reason"].as_str().unwrap().contains("scripted failure"), "{list:#}");
    let id = list[0]["id"].as_str().unwrap().to_string();
    let shown = app.admin_call(Method::GET, &format!("/admin/dead/{id}")).await;
    assert_eq!(shown.json["attempt_log"][0]["status"], 400);

    // PagerDuty now accepts it (the fake's script is used up).
    let replayed = app.admin_call(Method::POST, &format!("/admin/dead/{id}/replay")).await;
    assert_eq!(replayed.status, 200, "{:?}", replayed.json);
    assert_eq!(replayed.json["outcome"], "requeued");
    let got = app.fake.wait_for(3, WAIT).await;
    assert_eq!(got[2].dedup_key(), Some("n-7"));
    assert_eq!(app.admin_call(Method::GET, "/admin/dead").await.json, json!([]));
    let again = app.admin_call(Method::POST, &format!("/admin/dead/{id}/replay")).await;
    assert_eq!(again.status, 404, "a dead letter is replayed once");
    assert_eq!(app.admin_call(Method::POST, "/admin/dead/not-an-id/replay").await.status, 400);
}

#[tokio::test]
async fn a_payload_whose_mapping_failed_is_delivered_after_the_mapping_is_fixed_and_replayed() {
    // The rule reads a field this sender does not send.
    let broken = NUMBERED.replace("event {{body.n}}", "event {{body.n}} on {{body.host}}");
    let app = spawn_with_mapping(&broken, "").await;
    let a = app.post_bearer("load", &json!({"n": 3, "action": "trigger"})).await;
    assert_eq!(a.status, 202, "{:?}", a.json);
    assert_eq!(a.json["status"], "mapping_failed");
    let dir = app.dir.path().to_path_buf();

    // `pagerhook dlq list` (another process, beside the running server) shows it; reading the
    // store needs no secret at all.
    let no_secrets = |log: &str| {
        let mut c = binary(&dir, log);
        c.env_clear().env("RUST_LOG", "info");
        c
    };
    let out = no_secrets("dlq-list.log").args(["dlq", "list", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", std::fs::read_to_string(dir.join("dlq-list.log")).unwrap());
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["kind"], "mapping_failed");
    assert!(list[0]["reason"].as_str().unwrap().contains("host"), "{list:#}");
    let id = list[0]["id"].as_str().unwrap();

    // Fix the mapping on disk, replay with the CLI: the running server delivers the events.
    std::fs::write(dir.join("numbered.toml"), NUMBERED).unwrap();
    let out = no_secrets("dlq-show.log").args(["dlq", "show", id]).output().unwrap();
    assert!(out.status.success(), "{}", std::fs::read_to_string(dir.join("dlq-show.log")).unwrap());
    // Replaying maps into events bound for a routing key: that key, and no other secret (not
    // the admin token, not the sources' verification secrets), is needed.
    let out = no_secrets("dlq-replay.log")
        .env("PD_KEY", crate::helpers::INTEGRATION_KEY)
        .env("TEAM_A_KEY", crate::helpers::TEAM_A_KEY)
        .args(["dlq", "replay", id])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", std::fs::read_to_string(dir.join("dlq-replay.log")).unwrap());
    assert!(stdout.contains("mapped into 1 event"), "{stdout}");
    let got = app.fake.wait_for(1, WAIT).await;
    assert_eq!(got[0].summary(), Some("event 3"));
    assert_eq!(app.admin_call(Method::GET, "/admin/dead").await.json, json!([]));
}

#[tokio::test]
async fn everything_is_delivered_in_per_key_order_after_pagerduty_was_down() {
    let app = spawn_with_mapping(NUMBERED, "").await;
    const DOWN_FOR: usize = 8;
    app.fake.script("/v2/enqueue", (0..DOWN_FOR).map(|_| Reply::status(503)));
    for n in 0..4 {
        assert_eq!(app.post_bearer("load", &json!({"n": n, "action": "trigger"})).await.status, 202);
    }
    for n in 0..4 {
        assert_eq!(app.post_bearer("load", &json!({"n": n, "action": "resolve"})).await.status, 202);
    }
    let queue = app.app.as_ref().unwrap().queue().clone();
    eventually("every event is delivered", || async {
        queue.recent(100).await.unwrap().iter().all(|e| e.state == EventState::Delivered).then_some(())
    })
    .await;
    let got = app.fake.received();
    let delivered = &got[DOWN_FOR..];
    assert_eq!(delivered.len(), 8, "each event delivered once: {got:#?}");
    for n in 0..4 {
        let key = format!("n-{n}");
        // The i-th request got the i-th reply: the first DOWN_FOR were refused. No resolve
        // went out before its trigger had been answered 202.
        let of_key = |action: &'static str| {
            got.iter()
                .enumerate()
                .filter(|(_, r)| r.dedup_key() == Some(&key) && r.action() == Some(action))
                .map(|(i, _)| i)
        };
        let first_resolve = of_key("resolve").next().unwrap();
        let last_trigger = of_key("trigger").rfind(|i| *i < first_resolve).unwrap();
        assert!(last_trigger >= DOWN_FOR, "{key}: resolve sent at {first_resolve}, before its trigger got through");
        assert_eq!(of_key("resolve").count(), 1);
    }
}

#[tokio::test]
async fn an_event_without_a_timestamp_carries_the_time_its_webhook_was_accepted() {
    let app = spawn_with_mapping(NUMBERED, "").await;
    let before = time::OffsetDateTime::now_utc() - Duration::from_millis(1);
    assert_eq!(app.post_bearer("load", &json!({"n": 1, "action": "trigger"})).await.status, 202);
    let after = time::OffsetDateTime::now_utc();
    let got = app.fake.wait_for(1, WAIT).await;
    let stamp = got[0].body["payload"]["timestamp"].as_str().expect("a timestamp is sent");
    let at = time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339).unwrap();
    assert!(before <= at && at <= after, "{stamp} is not within the request ({before} .. {after})");
}

#[tokio::test]
async fn the_dedup_key_pagerduty_answers_with_is_recorded_and_shown() {
    let app = spawn_with_mapping(NUMBERED, "").await;
    let other = json!({"status": "success", "message": "Event processed", "dedup_key": "filed-elsewhere"});
    app.fake.script("/v2/enqueue", [Reply::status(202), Reply { body: other, ..Reply::status(202) }]);
    for n in [1, 2] {
        assert_eq!(app.post_bearer("load", &json!({"n": n, "action": "trigger"})).await.status, 202);
        app.fake.wait_for(n, WAIT).await;
    }
    let rows = eventually("both are delivered", || async {
        let a = app.admin_call(Method::GET, "/admin/deliveries").await;
        let rows = a.json.as_array().cloned().unwrap_or_default();
        (rows.len() == 2 && rows.iter().all(|r| r["state"] == "delivered")).then_some(rows)
    })
    .await;
    let returned = |key: &str| rows.iter().find(|r| r["dedup_key"] == key).unwrap()["pagerduty_dedup_key"].clone();
    assert_eq!(returned("n-1"), "n-1");
    assert_eq!(returned("n-2"), "filed-elsewhere", "what PagerDuty said, not what was sent");
}

/// A storm of 125 triggers for one routing key with the default pacing (120 a minute, 60 at
/// once), over a real minute on SQLite: the 121st reaches PagerDuty only once a full minute
/// (and the margin) has passed since the first, so no 60-second window *as the receiver saw
/// them* holds more than 120. Before: 121 did.
#[tokio::test]
async fn a_storm_never_puts_more_than_the_rate_in_any_minute_the_receiver_sees() {
    const STORM: usize = 125;
    let app = spawn_with_mapping(NUMBERED, "").await;
    for n in 0..STORM {
        assert_eq!(app.post_bearer("load", &json!({"n": n, "action": "trigger"})).await.status, 202);
    }
    let got = app.fake.wait_for(STORM, Duration::from_secs(120)).await;
    let busiest = app.fake.busiest(Duration::from_secs(60));
    assert!(busiest <= 120, "{busiest} events reached PagerDuty in one 60-second window");
    let first = got.iter().map(|r| r.at).min().unwrap();
    let last = got.iter().map(|r| r.at).max().unwrap();
    assert!(last - first >= Duration::from_secs(60), "the last five waited a minute: {:?}", last - first);
    assert!(last - first < Duration::from_secs(75), "and not much longer: {:?}", last - first);
}
