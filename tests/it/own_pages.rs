//! pagerhook's own pages, end to end through `/hooks/{source}` and the fake PagerDuty: what it
//! could not relay pages someone, once per source and reason, and is resolved when nothing of
//! it is left.

use crate::helpers::fake_pagerduty::{Received, Reply};
use crate::helpers::{
    fixture, generic_source, root, sample, shipped_generic_source, spawn_app_in, spawn_app_with, TestApp,
    ALERTMANAGER_VERIFY, AM_SECRET, DATADOG_TOKEN, INTEGRATION_KEY, TEAM_A_KEY,
};
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// POSTs `body` the way Alertmanager's webhook receiver does.
async fn notify(app: &TestApp, body: &Value) -> Value {
    let auth = format!("Bearer {AM_SECRET}");
    let a = app
        .post_hook("alertmanager", &[("content-type", "application/json"), ("authorization", &auth)], body.to_string())
        .await;
    assert_eq!(a.status, 202, "{:?}", a.json);
    a.json
}

/// An Alertmanager group of `n` firing alerts; alert `i` has the severity `severity(i)`.
fn group(n: usize, severity: impl Fn(usize) -> &'static str) -> Value {
    let alerts: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "status": "firing",
                "labels": {"alertname": "KubePodCrashLooping", "pod": format!("api-{i}"), "severity": severity(i)},
                "annotations": {"summary": format!("pod api-{i} is crash looping")},
                "startsAt": "2024-06-03T09:41:30.512Z",
                "fingerprint": format!("{i:016x}"),
            })
        })
        .collect();
    json!({
        "version": "4", "status": "firing", "receiver": "pagerhook", "groupKey": "{}:{alertname=\"KubePodCrashLooping\"}",
        "groupLabels": {"alertname": "KubePodCrashLooping"}, "commonLabels": {"alertname": "KubePodCrashLooping"},
        "commonAnnotations": {}, "externalURL": "https://alertmanager.example", "alerts": alerts,
    })
}

fn own(r: &Received, key: &str) -> bool {
    r.dedup_key() == Some(key)
}

/// The biggest outage, 1 500 crash-looping pods in one group, is over the default cap of 1 000
/// events: it is kept whole, and still pages once, saying which source, how many events, the
/// first summaries and the worst severity (the page's own), with a link to the console.
#[tokio::test]
async fn a_1500_alert_group_over_the_cap_still_pages_once_with_its_count_and_worst_severity() {
    let app = spawn_app_with(|c| {
        let c =
            c.replace("max_body_bytes = 65536", "max_body_bytes = 4194304\nadmin_url = \"https://pagerhook.example/\"");
        c + &shipped_generic_source("alertmanager", ALERTMANAGER_VERIFY)
    })
    .await;
    let body = group(1500, |i| if i == 1234 { "critical" } else { "warning" });
    let answer = notify(&app, &body).await;
    assert_eq!(answer["status"], "too_many_events", "{answer}");

    let got = app.fake.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1, "one page, not 1 500: {got:#?}");
    let page = &got[0];
    assert_eq!((page.dedup_key(), page.action()), (Some("pagerhook/alertmanager/too_many_events"), Some("trigger")));
    assert_eq!(page.body["routing_key"], INTEGRATION_KEY, "own pages default to pagerduty.routing_key");
    let payload = &page.body["payload"];
    assert_eq!(payload["severity"], "critical", "the worst among the 1 500: {payload}");
    let details = &payload["custom_details"];
    assert_eq!(details["source"], "alertmanager");
    assert_eq!(details["events"], 1500);
    assert_eq!(details["dead_letters_waiting"], 1);
    let summaries = details["first_summaries"].as_array().unwrap();
    assert_eq!(summaries.len(), 5, "{details}");
    assert!(summaries[0].as_str().unwrap().contains("KubePodCrashLooping"), "{summaries:?}");
    assert_eq!(page.body["links"][0]["href"], "https://pagerhook.example/#/dead");
    let dead = app.admin_call(reqwest::Method::GET, "/admin/dead").await.json;
    assert_eq!(dead.as_array().unwrap().len(), 1, "kept whole, replayable: {dead}");
}

/// The cap is on triggers: a 1 500-alert group over `max_events_per_request` whose alerts
/// have mostly resolved still sends every resolve (incidents opened before the storm close),
/// sends none of its triggers, and pages about the rest.
#[tokio::test]
async fn an_overflowing_group_still_sends_its_resolves_and_pages_about_its_triggers() {
    let app = spawn_app_with(|c| {
        // Unpaced: 1 200 resolves at PagerDuty's pace would take ten minutes.
        let c = c
            .replace("max_body_bytes = 65536", "max_body_bytes = 4194304")
            .replace("[delivery]\n", "[delivery]\nper_key_rate = 0\n");
        c + &shipped_generic_source("alertmanager", ALERTMANAGER_VERIFY)
    })
    .await;
    let mut body = group(1500, |_| "warning");
    // With a `cluster` label (Prometheus' external_labels), one resolve per alert; without one,
    // each also resolves the key before it named the Alertmanager (README.md, "Upgrading").
    for alert in body["alerts"].as_array_mut().unwrap() {
        alert["labels"]["cluster"] = "prod".into();
    }
    for alert in body["alerts"].as_array_mut().unwrap().iter_mut().take(1200) {
        alert["status"] = "resolved".into();
        alert["endsAt"] = "2024-06-03T09:51:30.512Z".into();
    }
    let answer = notify(&app, &body).await;
    assert_eq!(answer["status"], "too_many_events", "{answer}");

    let got = app.fake.wait_for(1201, WAIT).await;
    let resolves = got.iter().filter(|r| r.action() == Some("resolve")).count();
    let triggers: Vec<_> = got.iter().filter(|r| r.action() == Some("trigger")).collect();
    assert_eq!(resolves, 1200, "every resolve of the group went");
    assert_eq!(triggers.len(), 1, "no trigger of the group, one page about them: {triggers:#?}");
    assert!(own(triggers[0], "pagerhook/alertmanager/too_many_events"), "{:?}", triggers[0].body);
    let details = &triggers[0].body["payload"]["custom_details"];
    assert_eq!((details["events"].as_u64(), details["closing_events_sent"].as_u64()), (Some(1500), Some(1200)));
    let queued = r#"pagerhook_events_queued_total{source="alertmanager",kind="alert",action="resolve"}"#;
    let text = app.scrape().await;
    assert_eq!(crate::helpers::sample(&text, queued), Some(1200.0), "the resolves are counted as queued: {text}");
    let dead = app.admin_call(reqwest::Method::GET, "/admin/dead").await.json;
    assert_eq!(dead.as_array().unwrap().len(), 1, "the webhook is kept whole for replay: {dead}");
}

/// A dead letter of a source whose mapping failed pages (to `own_pages_routing_key`); a second
/// one re-triggers the same incident with the new count; once both are gone (one replayed
/// after the mapping was fixed, one deleted) pagerhook resolves it.
#[tokio::test]
async fn a_mapping_failure_pages_its_own_key_and_is_resolved_once_no_dead_letter_is_left() {
    let app = spawn_app_in(|c, dir| {
        std::fs::write(dir.join("strict.toml"), STRICT).unwrap();
        let c = c.replace("timeout = \"2s\"", "timeout = \"2s\"\nown_pages_routing_key = \"env:TEAM_A_KEY\"");
        c + &generic_source("hook", r#"{ scheme = "bearer", secrets = ["env:HOOK_TOKEN"] }"#, &dir.join("strict.toml"))
    })
    .await;
    for n in [1, 2] {
        let a = app.post_bearer("hook", &json!({"n": n})).await;
        assert_eq!(a.json["status"], "mapping_failed", "{:?}", a.json);
    }
    let got = app.fake.wait_for(1, WAIT).await;
    let key = "pagerhook/hook/mapping_failed";
    assert!(got.iter().all(|r| own(r, key) && r.body["routing_key"] == TEAM_A_KEY), "{got:#?}");
    // The two triggers of one incident may collapse into the newest: it counts both.
    let waiting = crate::helpers::eventually("the second failure paged", || {
        let got = app.fake.received();
        async move { got.last().filter(|r| r.body["payload"]["custom_details"]["dead_letters_waiting"] == 2).cloned() }
    })
    .await;
    assert!(waiting.body["payload"]["custom_details"]["error"].as_str().unwrap().contains("summary"), "{waiting:?}");

    std::fs::write(app.dir.path().join("strict.toml"), STRICT.replace("{{body.summary}}", "event {{body.n}}")).unwrap();
    let reloaded = app.app.as_ref().unwrap().reload().await;
    assert!(reloaded.is_ok(), "{reloaded:?}");
    let dead = app.admin_call(reqwest::Method::GET, "/admin/dead").await.json;
    let ids: Vec<String> = dead.as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids.len(), 2, "{dead}");
    let replayed = app.admin_call(reqwest::Method::POST, &format!("/admin/dead/{}/replay", ids[0])).await;
    assert_eq!(replayed.json["outcome"], "remapped", "{:?}", replayed.json);
    let sent = crate::helpers::eventually("the replayed payload's event sent", || {
        let got = app.fake.received();
        async move { got.iter().any(|r| r.summary().is_some_and(|s| s.starts_with("event "))).then_some(got) }
    })
    .await;
    assert!(!sent.iter().any(|r| own(r, key) && r.action() == Some("resolve")), "one is left: {sent:#?}");
    let deleted = app.admin_call(reqwest::Method::DELETE, &format!("/admin/dead/{}", ids[1])).await;
    assert_eq!(deleted.status, 200, "{:?}", deleted.json);
    let resolved = crate::helpers::eventually("the incident resolved", || {
        let got = app.fake.received();
        async move { got.into_iter().find(|r| own(r, key) && r.action() == Some("resolve")) }
    })
    .await;
    assert_eq!(resolved.body["routing_key"], TEAM_A_KEY, "where its trigger went");
}

/// A mapping whose summary is strict and missing from `{"n": 1}`.
const STRICT: &str = r#"
[[rule]]
name = "strict"
emit = "alert"
dedup_key = "n-{{body.n}}"
summary = "{{body.summary}}"
source = "pagerhook-tests"
"#;

/// `unmatched = "page"`: a Datadog event-stream payload (no rule of the shipped mapping matches it)
/// is kept as for `keep`, and pages; `keep` alone pages nobody.
#[tokio::test]
async fn unmatched_page_keeps_the_payload_and_pages_about_it() {
    let mapping = root().join("mappings/datadog.toml");
    let verify = r#"{ scheme = "bearer", secrets = ["env:DATADOG_TOKEN"] }"#;
    let app = spawn_app_in(|text, _| {
        let page = generic_source("datadog", verify, &mapping) + "unmatched = \"page\"\n";
        text + &page + &generic_source("datadog-keep", verify, &mapping) + "unmatched = \"keep\"\n"
    })
    .await;
    let auth = format!("Bearer {DATADOG_TOKEN}");
    let headers = [("content-type", "application/json"), ("authorization", auth.as_str())];
    let body = fixture("datadog/default_payload_event.json");
    let kept = app.post_hook("datadog-keep", &headers, body.clone()).await;
    assert_eq!(kept.json["status"], "unmatched", "{:?}", kept.json);
    let paged = app.post_hook("datadog", &headers, body).await;
    assert_eq!(paged.json["status"], "unmatched", "{:?}", paged.json);
    let got = app.fake.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!((got[0].dedup_key(), got[0].action()), (Some("pagerhook/datadog/unmatched"), Some("trigger")));
    let dead = app.admin_call(reqwest::Method::GET, "/admin/dead").await.json;
    assert_eq!(dead.as_array().unwrap().len(), 2, "both kept: {dead}");
}

/// PagerDuty refuses a trigger (400, and 400 again for its minimal form): it is dead, and
/// pagerhook pages about it; the page is refused too and dies, and pages about nothing.
#[tokio::test]
async fn a_dead_trigger_pages_about_itself_once_and_a_dead_page_pages_no_further() {
    let app = spawn_app_in(|c, dir| {
        std::fs::write(dir.join("numbered.toml"), crate::helpers::NUMBERED).unwrap();
        c + &crate::helpers::bearer_source("hook", &dir.join("numbered.toml"))
    })
    .await;
    app.fake.script("/v2/enqueue", std::iter::repeat_n(Reply::status(400), 4));
    let a = app.post_bearer("hook", &json!({"n": 1, "action": "trigger"})).await;
    assert_eq!(a.status, 202, "{:?}", a.json);
    let got = app.fake.wait_for(4, WAIT).await;
    let keys: Vec<Option<&str>> = got.iter().map(Received::dedup_key).collect();
    assert_eq!(
        keys,
        [Some("n-1"), Some("n-1"), Some("pagerhook/hook/dead_trigger"), Some("pagerhook/hook/dead_trigger")],
        "the trigger and its minimal form, then the page and its minimal form"
    );
    let events = crate::helpers::eventually("both dead", || async {
        let recent = app.app.as_ref().unwrap().queue().recent(10).await.unwrap();
        recent.iter().all(|e| e.state.as_str() == "dead").then_some(recent)
    })
    .await;
    assert_eq!(events.len(), 2, "no page about the page: {events:#?}");
}

/// One alert of an Alertmanager group fails to map (no `alertname`, which the shipped
/// mapping's summary reads strictly): the others are delivered, the bad one is kept alone as a
/// dead letter naming rule, item and error, and pages. Fixing the mapping and replaying sends
/// that alert only, and the page is resolved once no dead letter is left.
#[tokio::test]
async fn an_alertmanager_group_with_one_bad_alert_delivers_the_others_and_replays_the_bad_one_alone() {
    let shipped = std::fs::read_to_string(root().join("mappings/alertmanager.toml")).unwrap();
    let app = spawn_app_in(|c, dir| {
        std::fs::write(dir.join("alertmanager.toml"), &shipped).unwrap();
        c + &generic_source("alertmanager", ALERTMANAGER_VERIFY, &dir.join("alertmanager.toml"))
    })
    .await;
    let mut body = group(3, |_| "critical");
    body["alerts"][1]["labels"].as_object_mut().unwrap().remove("alertname");
    let answer = notify(&app, &body).await;
    assert_eq!(
        (answer["status"].as_str(), answer["events"].as_u64(), answer["failed_items"].as_u64()),
        (Some("partial"), Some(2), Some(1)),
        "{answer}"
    );
    let page_key = "pagerhook/alertmanager/mapping_failed";
    let got = app.fake.wait_for(3, WAIT).await;
    let mut delivered: Vec<&str> = got.iter().filter_map(Received::dedup_key).filter(|k| *k != page_key).collect();
    delivered.sort();
    // No `cluster` label: the key names the Alertmanager, by the SHA-256 of its externalURL.
    let expected = [
        format!("alertmanager/KubePodCrashLooping/{:016x}/am-bc3b6a1a", 0),
        format!("alertmanager/KubePodCrashLooping/{:016x}/am-bc3b6a1a", 2),
    ];
    assert_eq!(delivered, expected, "{got:#?}");
    let page = got.iter().find(|r| own(r, page_key)).expect("the failure pages");
    assert_eq!(page.body["payload"]["custom_details"]["failed_items"], 1, "{page:?}");
    let text = app.scrape().await;
    let partial = r#"pagerhook_webhook_outcomes_total{source="alertmanager",outcome="partial"}"#;
    assert_eq!(crate::helpers::sample(&text, partial), Some(1.0), "counted as partial: {text}");

    let dead = app.admin_call(reqwest::Method::GET, "/admin/dead").await.json;
    let dead = dead.as_array().unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!((dead[0]["kind"].as_str(), dead[0]["source"].as_str()), (Some("items_failed"), Some("alertmanager")));
    let reason = dead[0]["reason"].as_str().unwrap();
    assert!(reason.contains("item 1: rule '") && reason.contains("alertname"), "{reason}");

    // An alert without a name is named by its pod.
    let fixed = shipped.replace("{{item.labels.alertname}}", "{{default item.labels.alertname item.labels.pod}}");
    std::fs::write(app.dir.path().join("alertmanager.toml"), fixed).unwrap();
    app.app.as_ref().unwrap().reload().await.unwrap();
    let id = dead[0]["id"].as_str().unwrap();
    let replayed = app.admin_call(reqwest::Method::POST, &format!("/admin/dead/{id}/replay")).await;
    assert_eq!((replayed.json["outcome"].as_str(), replayed.json["events"].as_u64()), (Some("remapped"), Some(1)));
    let resolved = crate::helpers::eventually("the page resolved and the bad alert sent", || {
        let got = app.fake.received();
        let done = got.iter().any(|r| own(r, page_key) && r.action() == Some("resolve"))
            && got.iter().any(|r| r.dedup_key().is_some_and(|k| k.starts_with("alertmanager/api-1/")));
        async move { done.then_some(got) }
    })
    .await;
    let alerts: Vec<&str> =
        resolved.iter().filter_map(Received::dedup_key).filter(|k| k.starts_with("alertmanager/")).collect();
    assert_eq!(alerts.len(), 3, "the replay sent the bad alert only, not the others again: {alerts:?}");
    assert_eq!(app.admin_call(reqwest::Method::GET, "/admin/dead").await.json, json!([]));
}

/// A storm on one key (Alertmanager floods the default key, paced at one event a minute here
/// so that five are a storm): the key's backlog shows on `/metrics` and in the console by its
/// fingerprint, and once it would take longer than `storm_page_after` to drain, pagerhook
/// queues ONE page on that key, due at once, saying how many wait, from which source, and the
/// estimate. Its own page is not counted in the backlog it reports.
#[tokio::test]
async fn a_storm_on_a_key_is_measured_by_fingerprint_and_paged_once_on_that_key() {
    let app = spawn_app_with(|c| {
        let c = c.replace("[delivery]\n", "[delivery]\nper_key_rate = 1\nper_key_burst = 1\n");
        let c = c.replace("[pagerduty]\n", "[pagerduty]\nstorm_page_after = \"1m\"\n");
        c + &shipped_generic_source("alertmanager", ALERTMANAGER_VERIFY)
    })
    .await;
    notify(&app, &group(5, |_| "warning")).await;
    let first = app.fake.wait_for(1, WAIT).await;
    assert_eq!(first[0].action(), Some("trigger"), "the burst of one goes at once: {first:#?}");
    // The key's one slot goes to the first alert, or to the storm page if the condition watcher
    // queued it before the worker's first claim: pagerhook's own events go first on their key.
    let page_went_first = first[0].dedup_key().is_some_and(|k| k.starts_with("pagerhook/"));
    let waiting: u32 = if page_went_first { 5 } else { 4 };
    let key = pagerhook::event::RoutingKey::parse(pagerhook::secret::Secret::new(INTEGRATION_KEY)).unwrap();
    let fp = key.fingerprint();
    let scraped = crate::helpers::eventually("the rest wait on the key, on /metrics", || async {
        let text = app.scrape().await;
        let n = sample(&text, &format!("pagerhook_routing_key_backlog{{routing_key=\"{fp}\"}}"));
        (n == Some(f64::from(waiting))).then_some(text)
    })
    .await;
    let drain = sample(&scraped, &format!("pagerhook_routing_key_drain_seconds{{routing_key=\"{fp}\"}}"));
    assert_eq!(drain, Some(f64::from(waiting) * 60.0), "a minute each at one a minute");
    assert!(!scraped.contains(INTEGRATION_KEY), "the key itself is never exported");
    let stats = app.admin_call(reqwest::Method::GET, "/admin/stats").await.json;
    assert_eq!(stats["backlog"][0]["routing_key"], fp, "{stats}");
    assert_eq!(stats["backlog"][0]["sources"], json!([["alertmanager", waiting]]), "{stats}");

    let dedup = format!("pagerhook/key-{fp}/storm_waiting");
    let page = crate::helpers::eventually("the storm page is queued", || async {
        let rows = app.admin_call(reqwest::Method::GET, "/admin/deliveries?q=storm_waiting").await.json;
        rows.as_array().filter(|r| !r.is_empty()).cloned()
    })
    .await;
    assert_eq!(page.len(), 1, "one page: {page:#?}");
    assert_eq!((page[0]["dedup_key"].as_str(), page[0]["action"].as_str()), (Some(dedup.as_str()), Some("trigger")));
    assert_eq!(page[0]["routing_key"], fp, "on the key the storm delays");
    let detail = app.admin_call(reqwest::Method::GET, &format!("/admin/deliveries/{}", page[0]["id"])).await.json;
    let details = &detail["event"]["payload"]["custom_details"];
    // The figures of the round that raised it: the first event may still have been in flight.
    let counted = details["events_waiting"].as_u64().unwrap();
    assert!(counted == 4 || counted == 5, "{details}");
    assert_eq!(details["sources"], json!({ "alertmanager": counted }));
    assert_eq!(details["estimated_drain_seconds"], counted * 60, "a minute each at one a minute");
    assert_eq!(detail["event"]["payload"]["severity"], "critical");
    // Its own page does not count towards the storm it reports.
    let text = app.scrape().await;
    let backlog = sample(&text, &format!("pagerhook_routing_key_backlog{{routing_key=\"{fp}\"}}"));
    assert_eq!(backlog, Some(f64::from(waiting)), "{text}");
    app.stop().await;
}
