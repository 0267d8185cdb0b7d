//! Delivery: retries, dead letters, ordering, restarts.

use crate::helpers::fake_pagerduty::{FakePagerDuty, Reply};
use crate::helpers::{config_from, eventually, fixture, spawn_app, start};
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
    assert_eq!(trigger.state, "delivered");
    assert_eq!(trigger.attempts, 3);
}

#[tokio::test]
async fn a_400_is_dead_lettered_with_pagerduty_s_message() {
    let app = spawn_app().await;
    app.fake.script("/v2/enqueue", [Reply::status(400)]);
    let a = app.github("workflow_run", "t", &fixture("github/workflow_run_failure.json")).await;
    assert_eq!(a.status, 202);
    app.fake.wait_for(1, WAIT).await;
    let queue = app.app.as_ref().unwrap().queue().clone();
    let dead = eventually("the event is dead-lettered", || async {
        queue.recent(10).await.unwrap().into_iter().next().filter(|e| e.state == "dead")
    })
    .await;
    assert_eq!(dead.attempts, 1, "a 400 is not retried");
    assert!(dead.last_error.as_deref().unwrap().contains("scripted failure"), "{dead:?}");
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
    let (fake, dir) = first.stop().await;
    assert!(fake.received().is_empty());

    // A new process on the same database, now with PagerDuty reachable, delivers it.
    let text = crate::helpers::base_config(dir.path(), &fake_url);
    let second = start(config_from(&text, dir.path()), fake, dir).await;
    let got = second.fake.wait_for(1, WAIT).await;
    assert_eq!(got[0].path, "/v2/change/enqueue");
}

#[tokio::test]
async fn dry_run_records_events_as_delivered_without_sending() {
    let dir = tempfile::tempdir().unwrap();
    let fake = crate::helpers::fake_pagerduty::FakePagerDuty::start().await;
    let cfg = config_from(&crate::helpers::base_config(dir.path(), &fake.url), dir.path());
    let hooks = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let app =
        pagerhook::app::App::start_on(cfg, pagerhook::app::Options { dry_run: true }, hooks, admin).await.unwrap();
    let body = fixture("github/pull_request_merged.json");
    let sig = crate::helpers::github_signature(crate::helpers::GITHUB_SECRET, &body);
    let res = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/hooks/github", app.port()))
        .header("x-github-event", "pull_request")
        .header("x-hub-signature-256", sig)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 202);
    eventually("the event is recorded as delivered", || async {
        app.queue().recent(10).await.unwrap().into_iter().next().filter(|e| e.state == "delivered")
    })
    .await;
    assert!(fake.received().is_empty(), "dry run sends nothing");
    app.stop().await;
}
