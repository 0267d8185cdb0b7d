//! `kind = "generic"` end to end: an Alertmanager-like webhook signed with an HMAC, and a
//! Standard Webhooks sender whose repeats are duplicates.

use crate::helpers::{
    generic_source, github_signature, spawn_app_with, TestApp, AM_SECRET, OLD_AM_SECRET, STANDARD_WEBHOOKS_SECRET,
};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// One PagerDuty alert per Alertmanager alert: firing triggers, resolved resolves.
const MAPPING: &str = r#"
[[rule]]
name = "alertmanager alert"
for_each = "body.alerts"
emit = "alert"
action = '{{#if (eq item.status "resolved")}}resolve{{else}}trigger{{/if}}'
dedup_key = "alertmanager/{{item.fingerprint}}"
severity = "critical"
summary = "{{item.labels.alertname}} on {{item.labels.instance}}: {{item.annotations.summary}}"
source = "{{item.labels.instance}}"
"#;

const ALERTS: &str = r#"{
  "version": "4",
  "status": "firing",
  "receiver": "pagerhook",
  "groupLabels": {"alertname": "DiskFull"},
  "alerts": [
    {"status": "firing", "fingerprint": "a1", "labels": {"alertname": "DiskFull", "instance": "db-1"}, "annotations": {"summary": "disk 95% full"}},
    {"status": "resolved", "fingerprint": "b2", "labels": {"alertname": "DiskFull", "instance": "db-2"}, "annotations": {"summary": "disk 60% full"}}
  ]
}"#;

/// The app with two generic sources appended: `am` (hmac) and `sw` (standard-webhooks),
/// sharing a mapping file in a temp dir that lives as long as the returned handle.
async fn spawn() -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mapping = dir.path().join("alertmanager.toml");
    std::fs::write(&mapping, MAPPING).unwrap();
    let extra = generic_source(
        "am",
        r#"{ scheme = "hmac", header = "X-Signature", prefix = "sha256=", secrets = ["env:AM_SECRET", "env:AM_OLD_SECRET"] }"#,
        &mapping,
    ) + &generic_source("sw", r#"{ scheme = "standard-webhooks", secrets = ["env:SW_SECRET"] }"#, &mapping);
    (spawn_app_with(|c| c + &extra).await, dir)
}

/// `webhook-signature` for a Standard Webhooks delivery.
fn standard_signature(id: &str, timestamp: &str, body: &[u8]) -> String {
    let key = B64.decode(STANDARD_WEBHOOKS_SECRET.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test]
async fn a_signed_generic_webhook_becomes_one_event_per_alert() {
    let (app, _dir) = spawn().await;
    // The hmac scheme with prefix sha256= is GitHub's format, so its signer serves here.
    let sig = github_signature(AM_SECRET, ALERTS.as_bytes());
    let a = app.post_hook("am", &[("content-type", "application/json"), ("x-signature", &sig)], ALERTS).await;
    assert_eq!(a.status, 202, "{:?}", a.json);
    assert_eq!(a.json["events"], 2);
    let mut got = app.fake.wait_for(2, WAIT).await;
    got.sort_by(|a, b| a.dedup_key().cmp(&b.dedup_key()));
    assert_eq!(got[0].path, "/v2/enqueue");
    assert_eq!(got[0].action(), Some("trigger"));
    assert_eq!(got[0].dedup_key(), Some("alertmanager/a1"));
    assert_eq!(got[0].summary(), Some("DiskFull on db-1: disk 95% full"));
    assert_eq!(got[1].action(), Some("resolve"));
    assert_eq!(got[1].dedup_key(), Some("alertmanager/b2"));

    // A rotated secret still verifies.
    let sig = github_signature(OLD_AM_SECRET, ALERTS.as_bytes());
    let a = app.post_hook("am", &[("x-signature", &sig)], ALERTS).await;
    assert_eq!(a.status, 202, "{:?}", a.json);
    assert_eq!(app.fake.wait_for(4, WAIT).await.len(), 4);
}

#[tokio::test]
async fn forged_generic_requests_are_refused_and_nothing_is_sent() {
    let (app, _dir) = spawn().await;
    let good = github_signature(AM_SECRET, ALERTS.as_bytes());
    let wrong = github_signature("not the secret", ALERTS.as_bytes());
    let tampered = ALERTS.replace("db-1", "db-9");
    // (case, headers, body, expected reason)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, String, &'a str);
    let cases: Vec<Case> = vec![
        ("missing", vec![], ALERTS.into(), "missing X-Signature header"),
        ("wrong secret", vec![("x-signature", &wrong)], ALERTS.into(), "signature mismatch (tried 2 secrets)"),
        ("altered body", vec![("x-signature", &good)], tampered, "signature mismatch"),
        ("no prefix", vec![("x-signature", &good[7..])], ALERTS.into(), "malformed X-Signature header"),
    ];
    for (name, headers, body, reason) in cases {
        let a = app.post_hook("am", &headers, body).await;
        assert_eq!(a.status, 401, "{name}: {:?}", a.json);
        let err = a.json["error"].as_str().unwrap();
        assert!(err.contains(reason), "{name}: {err}");
        assert!(!err.contains(AM_SECRET) && !err.contains(&good[7..]), "{name}: leaks: {err}");
    }
    let stale = (unix_now() - 3600).to_string();
    let sig = standard_signature("msg_old", &stale, ALERTS.as_bytes());
    let a = app
        .post_hook(
            "sw",
            &[("webhook-id", "msg_old"), ("webhook-timestamp", &stale), ("webhook-signature", &sig)],
            ALERTS,
        )
        .await;
    assert_eq!(a.status, 401, "{:?}", a.json);
    assert!(a.json["error"].as_str().unwrap().contains("timestamp outside tolerance of 5m"), "{:?}", a.json);
    let a = app.post_hook("am", &[("x-signature", &good), ("content-type", "text/plain")], ALERTS).await;
    assert_eq!(a.status, 415, "{:?}", a.json);

    // Sentinel: only its two events were ever queued or sent.
    let a = app.post_hook("am", &[("x-signature", &good)], ALERTS).await;
    assert_eq!(a.status, 202, "{:?}", a.json);
    app.assert_only_sentinel_events(2).await;
}

#[tokio::test]
async fn a_repeated_standard_webhooks_message_is_a_duplicate() {
    let (app, _dir) = spawn().await;
    let ts = unix_now().to_string();
    let sig = standard_signature("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", &ts, ALERTS.as_bytes());
    let headers = [
        ("content-type", "application/json"),
        ("webhook-id", "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"),
        ("webhook-timestamp", ts.as_str()),
        ("webhook-signature", sig.as_str()),
    ];
    let first = app.post_hook("sw", &headers, ALERTS).await;
    assert_eq!(first.status, 202, "{:?}", first.json);
    let again = app.post_hook("sw", &headers, ALERTS).await;
    assert_eq!(again.status, 200, "{:?}", again.json);
    assert_eq!(again.json["status"], "duplicate");
    assert_eq!(again.json["id"], first.json["id"]);
    assert_eq!(app.fake.wait_for(2, WAIT).await.len(), 2);
    let recent = app.app.as_ref().unwrap().queue().recent(10).await.unwrap();
    assert_eq!(recent.len(), 2, "two events queued, not four: {recent:#?}");
}
