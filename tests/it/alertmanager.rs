//! The shipped `mappings/alertmanager.toml` end to end: a group of alerts fires and resolves,
//! and each resolve closes the incident its trigger opened.

use crate::helpers::fake_pagerduty::Received;
use crate::helpers::{fixture, shipped_generic_source, spawn_app_with, TestApp, ALERTMANAGER_VERIFY, AM_SECRET};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// POSTs a fixture the way Alertmanager's webhook receiver does, with its bearer credentials.
async fn notify(app: &TestApp, file: &str) -> serde_json::Value {
    let auth = format!("Bearer {AM_SECRET}");
    let a = app
        .post_hook("alertmanager", &[("content-type", "application/json"), ("authorization", &auth)], fixture(file))
        .await;
    assert_eq!(a.status, 202, "{file}: {:?}", a.json);
    a.json
}

/// The sorted dedup_keys of the alert events with this action.
fn keys(got: &[Received], action: &str) -> Vec<String> {
    let mut k: Vec<String> = got
        .iter()
        .filter(|r| r.path == "/v2/enqueue" && r.action() == Some(action))
        .map(|r| r.dedup_key().expect("alert events have a dedup_key").to_string())
        .collect();
    k.sort();
    k
}

#[tokio::test]
async fn a_firing_group_triggers_each_alert_and_the_resolved_group_resolves_the_same_keys() {
    let app = spawn_app_with(|c| c + &shipped_generic_source("alertmanager", ALERTMANAGER_VERIFY)).await;

    // Without Alertmanager's credentials nothing gets in.
    let a = app
        .post_hook("alertmanager", &[("content-type", "application/json")], fixture("alertmanager/group_firing.json"))
        .await;
    assert_eq!(a.status, 401, "{:?}", a.json);

    assert_eq!(notify(&app, "alertmanager/group_firing.json").await["events"], 3);
    let fired = app.fake.wait_for(3, WAIT).await;
    assert_eq!(fired.len(), 3, "{fired:#?}");
    let triggers = keys(&fired, "trigger");
    assert_eq!(triggers.len(), 3, "three triggers: {fired:#?}");
    assert!(triggers.windows(2).all(|w| w[0] != w[1]), "one incident per alert: {triggers:?}");
    assert!(fired.iter().all(|r| r.summary().is_some_and(|s| s.starts_with("HighErrorRate on "))), "{fired:#?}");

    assert_eq!(notify(&app, "alertmanager/group_resolved.json").await["events"], 3);
    let all = app.fake.wait_for(6, WAIT).await;
    assert_eq!(all.len(), 6, "{all:#?}");
    assert_eq!(keys(&all, "trigger"), triggers, "no trigger beyond the first three");
    assert_eq!(keys(&all, "resolve"), triggers, "each resolve matches one trigger's dedup_key");
    // What PagerDuty makes of it: three pages, nothing left open.
    let pd = app.fake.incidents();
    assert_eq!((pd.pages(), pd.open()), (3, &[][..]), "{all:#?}");
}
