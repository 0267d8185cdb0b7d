//! The admin listener: health, readiness, the delivery log behind a bearer token.

use crate::helpers::{fixture, spawn_app};
use std::time::Duration;

#[tokio::test]
async fn health_readiness_and_the_delivery_log() {
    let app = spawn_app().await;
    let get = |path: &str| app.http.get(format!("{}{path}", app.admin));
    assert_eq!(get("/healthz").send().await.unwrap().status().as_u16(), 200);
    let ready = get("/readyz").send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);

    assert_eq!(app.github("pull_request", "a-1", &fixture("github/pull_request_merged.json")).await.status, 202);
    app.fake.wait_for(1, Duration::from_secs(10)).await;

    assert_eq!(get("/admin/deliveries").send().await.unwrap().status().as_u16(), 401);
    assert_eq!(get("/admin/deliveries").bearer_auth("wrong").send().await.unwrap().status().as_u16(), 401);
    let res = get("/admin/deliveries").bearer_auth("admin-token").send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let text = res.text().await.unwrap();
    let rows: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(rows[0]["source"], "github");
    assert_eq!(rows[0]["kind"], "change");
    assert!(!text.contains(crate::helpers::INTEGRATION_KEY), "no routing key in admin output");

    // The webhook listener does not serve admin routes.
    let res = app.http.get(format!("{}/admin/deliveries", app.base)).bearer_auth("admin-token").send().await.unwrap();
    assert_eq!(res.status().as_u16(), 404);
}

#[tokio::test]
async fn a_get_on_a_hook_is_405_and_the_admin_listener_404_speaks_of_its_own_routes() {
    let app = spawn_app().await;
    let res = app.http.get(format!("{}/hooks/github", app.base)).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 405);
    assert_eq!(res.headers()["allow"], "POST");
    let res = app.http.get(format!("{}/nothing", app.admin)).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 404);
    let text = res.text().await.unwrap();
    assert!(text.contains("/admin/deliveries") && !text.contains("webhooks"), "{text}");
}

#[tokio::test]
async fn failure_counters_are_exported_at_zero_for_every_configured_source() {
    let app = spawn_app().await;
    let text = app.http.get(format!("{}/metrics", app.admin)).send().await.unwrap().text().await.unwrap();
    for line in [
        r#"pagerhook_mapping_failures_total{source="github",status="202"} 0"#,
        r#"pagerhook_config_reloads_total{outcome="ok"} 0"#,
        r#"pagerhook_config_reloads_total{outcome="error"} 0"#,
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}
