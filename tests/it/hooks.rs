//! `POST /hooks/{source}` end to end: what GitHub sends, what PagerDuty receives.

use crate::helpers::{
    fixture, generic_source, github_signature, root, spawn_app, spawn_app_in, Answer, TestApp, DATADOG_TOKEN,
    GITHUB_SECRET, INTEGRATION_KEY, OLD_GITHUB_SECRET,
};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// Proves that nothing was sent for earlier requests: a sentinel delivery must be the only
/// one PagerDuty has seen.
async fn assert_nothing_sent_before_sentinel(app: &TestApp) {
    let body = fixture("github/pull_request_merged.json");
    let a = app.github("pull_request", "sentinel", &body).await;
    assert_eq!(a.status, 202, "{:?}", a.json);
    app.assert_only_sentinel_events(1).await;
}

#[tokio::test]
async fn merged_pull_request_becomes_a_change_event() {
    let app = spawn_app().await;
    let body = fixture("github/pull_request_merged.json");
    let a = app.github("pull_request", "d-1", &body).await;
    assert_eq!(a.status, 202, "{:?}", a.json);
    assert_eq!(a.json["status"], "accepted");
    assert_eq!(a.json["events"], 1);
    let got = app.fake.wait_for(1, WAIT).await;
    assert_eq!(got[0].path, "/v2/change/enqueue");
    assert_eq!(got[0].body["routing_key"], INTEGRATION_KEY);
    let payload: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let title = payload["pull_request"]["title"].as_str().unwrap();
    assert!(got[0].summary().unwrap().contains(title), "{:?}", got[0].body);
    assert!(got[0].body.get("event_action").is_none(), "change events have no action");
}

/// Posts `body` to the github source signed with `secret`, without a delivery id.
async fn post_signed(app: &TestApp, secret: &str, content_type: &str, event: &str, body: Vec<u8>) -> Answer {
    let sig = github_signature(secret, &body);
    let headers = [("content-type", content_type), ("x-github-event", event), ("x-hub-signature-256", sig.as_str())];
    app.post_hook("github", &headers, body).await
}

#[tokio::test]
async fn a_rotated_secret_still_verifies() {
    let app = spawn_app().await;
    let body = fixture("github/release_published.json");
    let a = post_signed(&app, OLD_GITHUB_SECRET, "application/json", "release", body).await;
    assert_eq!(a.status, 202, "{:?}", a.json);
    assert_eq!(app.fake.wait_for(1, WAIT).await[0].path, "/v2/change/enqueue");
}

#[tokio::test]
async fn bad_signatures_are_refused_and_nothing_is_sent() {
    let app = spawn_app().await;
    let body = fixture("github/pull_request_merged.json");
    let good = github_signature(GITHUB_SECRET, &body);
    let mut tampered = body.clone();
    let last = tampered.len() - 2;
    tampered[last] ^= 0x01;
    let wrong = github_signature("not the secret", &body);
    // (case, extra headers, body, expected reason)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<u8>, &'a str);
    let cases: Vec<Case> = vec![
        ("missing", vec![], body.clone(), "missing X-Hub-Signature-256"),
        (
            "wrong secret",
            vec![("x-hub-signature-256", wrong.as_str())],
            body.clone(),
            "signature mismatch (tried 2 secrets)",
        ),
        ("altered body", vec![("x-hub-signature-256", good.as_str())], tampered, "signature mismatch"),
        ("sha1 only", vec![("x-hub-signature", "sha1=0000")], body.clone(), "missing X-Hub-Signature-256"),
        ("not hex", vec![("x-hub-signature-256", "sha256=zz")], body.clone(), "malformed X-Hub-Signature-256"),
        ("no prefix", vec![("x-hub-signature-256", &good[7..])], body.clone(), "malformed X-Hub-Signature-256"),
    ];
    for (name, extra, body, reason) in cases {
        let mut headers = vec![("content-type", "application/json"), ("x-github-event", "pull_request")];
        headers.extend(extra);
        let a = app.post_hook("github", &headers, body).await;
        assert_eq!(a.status, 401, "{name}: {:?}", a.json);
        let err = a.json["error"].as_str().unwrap();
        assert!(err.contains(reason), "{name}: {err}");
        assert!(!err.contains(GITHUB_SECRET) && !err.contains(&good[7..]), "{name}: leaks: {err}");
    }
    assert_nothing_sent_before_sentinel(&app).await;
}

#[tokio::test]
async fn ping_is_answered_and_emits_nothing() {
    let app = spawn_app().await;
    let a = app.github("ping", "p-1", &fixture("github/ping.json")).await;
    assert_eq!(a.status, 200, "{:?}", a.json);
    assert_eq!(a.json["status"], "ignored");
    assert_nothing_sent_before_sentinel(&app).await;
}

#[tokio::test]
async fn a_repeated_delivery_id_is_a_duplicate() {
    let app = spawn_app().await;
    let body = fixture("github/workflow_run_failure.json");
    let first = app.github("workflow_run", "same-id", &body).await;
    assert_eq!(first.status, 202, "{:?}", first.json);
    let again = app.github("workflow_run", "same-id", &body).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json["status"], "duplicate");
    assert_eq!(again.json["id"], first.json["id"]);
    // A different delivery of the same payload is new (GitHub's "redeliver" keeps the id).
    let got = app.fake.wait_for(1, WAIT).await;
    assert_eq!(got[0].action(), Some("trigger"));
    let recent = app.app.as_ref().unwrap().queue().recent(10).await.unwrap();
    assert_eq!(recent.len(), 1, "one event queued, not two: {recent:#?}");
}

#[tokio::test]
async fn bad_requests_get_their_status_and_change_nothing() {
    let app = spawn_app().await;
    let body = fixture("github/pull_request_merged.json");

    let a = app.post_hook("nope", &[], body.clone()).await;
    assert_eq!(a.status, 404, "{:?}", a.json);

    let big = vec![b' '; 70_000];
    let sig = github_signature(GITHUB_SECRET, &big);
    let a = app.post_hook("github", &[("x-github-event", "push"), ("x-hub-signature-256", &sig)], big).await;
    assert_eq!(a.status, 413, "{:?}", a.json);

    let junk = b"{\"not\": json".to_vec();
    let a = post_signed(&app, GITHUB_SECRET, "application/json", "push", junk).await;
    assert_eq!(a.status, 400, "{:?}", a.json);
    assert!(a.json["error"].as_str().unwrap().contains("malformed JSON"));

    let a = post_signed(&app, GITHUB_SECRET, "text/xml", "push", body.clone()).await;
    assert_eq!(a.status, 415, "{:?}", a.json);

    let a = app.http.get(format!("{}/hooks/github", app.base)).send().await.unwrap();
    assert_eq!(a.status().as_u16(), 405, "a hook takes POST only");

    assert_nothing_sent_before_sentinel(&app).await;
}

#[tokio::test]
async fn form_encoded_deliveries_are_accepted() {
    let app = spawn_app().await;
    let json = fixture("github/pull_request_merged.json");
    let form = serde_urlencoded::to_string([("payload", String::from_utf8(json).unwrap())]).unwrap();
    let a =
        post_signed(&app, GITHUB_SECRET, "application/x-www-form-urlencoded", "pull_request", form.into_bytes()).await;
    assert_eq!(a.status, 202, "{:?}", a.json);
    assert_eq!(app.fake.wait_for(1, WAIT).await[0].path, "/v2/change/enqueue");
}

#[tokio::test]
async fn a_failed_workflow_pages_and_the_next_success_resolves_it() {
    let app = spawn_app().await;
    let a = app.github("workflow_run", "w-1", &fixture("github/workflow_run_failure.json")).await;
    assert_eq!(a.status, 202, "{:?}", a.json);
    let b = app.github("workflow_run", "w-2", &fixture("github/workflow_run_success.json")).await;
    assert_eq!(b.status, 202, "{:?}", b.json);
    let got = app.fake.wait_for(3, WAIT).await;
    let alerts: Vec<_> = got.iter().filter(|r| r.path == "/v2/enqueue").collect();
    assert_eq!(alerts.len(), 2, "{got:#?}");
    assert_eq!(alerts[0].action(), Some("trigger"));
    assert_eq!(alerts[1].action(), Some("resolve"));
    assert_eq!(alerts[0].dedup_key(), alerts[1].dedup_key());
    assert!(alerts[0].at <= alerts[1].at);
    // A red CI workflow (not in error_workflows) pages at warning.
    assert_eq!(alerts[0].body["payload"]["severity"], "warning");
    assert!(got.iter().any(|r| r.path == "/v2/change/enqueue"), "the success is also a change event");
}

#[tokio::test]
async fn templates_do_not_html_escape() {
    let app = spawn_app().await;
    let mut v: serde_json::Value = serde_json::from_slice(&fixture("github/pull_request_merged.json")).unwrap();
    v["pull_request"]["title"] = "Fix <script> & \"quotes\" in 'names'".into();
    let body = serde_json::to_vec(&v).unwrap();
    assert_eq!(app.github("pull_request", "esc", &body).await.status, 202);
    let got = app.fake.wait_for(1, WAIT).await;
    assert!(got[0].summary().unwrap().contains("Fix <script> & \"quotes\" in 'names'"), "{:?}", got[0].summary());
}

/// The accept path builds only what the mapping reads, but still checks the whole body: a
/// fault in a part no rule reads gets the 400, with the words, the full parse gives.
#[tokio::test]
async fn a_malformed_part_no_rule_reads_is_refused_as_before() {
    let app = spawn_app().await;
    let good = String::from_utf8(fixture("github/pull_request_merged.json")).unwrap();
    let nested = format!("{}{}", "[".repeat(200), "]".repeat(200));
    for unread in [&b"1e400"[..], br#""\ud800""#, b"\"\xff\"", b"[1,]", nested.as_bytes()] {
        let body = [b"{\"unread\": ", unread, b", ", &good.as_bytes()[1..]].concat();
        let expected = serde_json::from_slice::<serde_json::Value>(&body).unwrap_err().to_string();
        let a = post_signed(&app, GITHUB_SECRET, "application/json", "pull_request", body).await;
        assert_eq!(a.status, 400, "{:?}", a.json);
        let error = a.json["error"].as_str().unwrap();
        assert!(error.ends_with(&format!("malformed JSON body: {expected}")), "{error}");
    }
    assert_nothing_sent_before_sentinel(&app).await;
}

/// Datadog's default payload for an event-stream event (not a monitor) matches no rule of the
/// shipped mapping. With
/// `unmatched = "keep"` (what the mapping recommends) it is kept as an `unmatched` dead letter
/// to inspect and replay once a rule is added, not answered `200 ignored` and forgotten.
#[tokio::test]
async fn a_datadog_payload_no_rule_matches_is_kept_as_an_unmatched_dead_letter() {
    let mapping = root().join("mappings/datadog.toml");
    let verify = r#"{ scheme = "bearer", secrets = ["env:DATADOG_TOKEN"] }"#;
    let app = spawn_app_in(|text, _| {
        let keep = generic_source("datadog", verify, &mapping) + "unmatched = \"keep\"\n";
        text + &keep + &generic_source("datadog-ignore", verify, &mapping)
    })
    .await;
    let auth = format!("Bearer {DATADOG_TOKEN}");
    let headers = [("content-type", "application/json"), ("authorization", auth.as_str())];
    let body = fixture("datadog/default_payload_event.json");

    let ignored = app.post_hook("datadog-ignore", &headers, body.clone()).await;
    assert_eq!((ignored.status, ignored.json["status"].as_str()), (200, Some("ignored")), "{:?}", ignored.json);

    let kept = app.post_hook("datadog", &headers, body).await;
    assert_eq!(kept.status, 202, "{:?}", kept.json);
    assert_eq!(kept.json["status"], "unmatched");
    let dead = app.admin_call(reqwest::Method::GET, "/admin/dead").await.json;
    let dead = dead.as_array().unwrap();
    assert_eq!(dead.len(), 1, "only the kept one: {dead:?}");
    assert_eq!((dead[0]["kind"].as_str(), dead[0]["source"].as_str()), (Some("unmatched"), Some("datadog")));
    assert_eq!(dead[0]["reason"], "no rule matched");
    // Replayed while still no rule matches: it stays a dead letter.
    let id = dead[0]["id"].as_str().unwrap();
    let replayed = app.admin_call(reqwest::Method::POST, &format!("/admin/dead/{id}/replay")).await;
    assert_eq!(replayed.json["outcome"], "still_failing", "{:?}", replayed.json);
    let dead = app.admin_call(reqwest::Method::GET, "/admin/dead").await.json;
    assert_eq!(dead.as_array().unwrap().len(), 1, "{dead:?}");
    assert!(app.fake.received().is_empty(), "nothing sent");
}
