//! The admin listener: health, readiness, the delivery log behind a bearer token.

use crate::helpers::{eventually, fixture, spawn_app};
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
async fn deliveries_are_searched_paged_and_shown_one_by_one() {
    let app = spawn_app().await;
    assert_eq!(app.github("workflow_run", "s-1", &fixture("github/workflow_run_failure.json")).await.status, 202);
    assert_eq!(app.github("pull_request", "s-2", &fixture("github/pull_request_merged.json")).await.status, 202);
    assert_eq!(app.github("push", "s-3", &fixture("github/push_default_branch.json")).await.status, 202);
    app.fake.wait_for(3, Duration::from_secs(10)).await;
    let get = |path: &str| {
        let path = path.to_string();
        let app = &app;
        async move { app.admin_call(reqwest::Method::GET, &path).await }
    };

    let all = get("/admin/deliveries").await.json;
    assert_eq!(all.as_array().unwrap().len(), 3);
    assert!(all[0]["id"].as_i64() > all[1]["id"].as_i64(), "newest first");
    assert_eq!(all[0]["routing_key"].as_str().unwrap().len(), 8, "a fingerprint, not the key");

    let found = get("/admin/deliveries?q=48213377").await.json;
    assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
    assert_eq!(found[0]["dedup_key"], "github/acme/payments-api/workflow/48213377/main");
    assert_eq!(get("/admin/deliveries?q=github").await.json.as_array().unwrap().len(), 3, "by source");
    assert_eq!(get("/admin/deliveries?q=nowhere").await.json, serde_json::json!([]));

    let page1 = get("/admin/deliveries?limit=2").await.json;
    let before = page1[1]["id"].as_i64().unwrap();
    let page2 = get(&format!("/admin/deliveries?limit=2&before={before}")).await.json;
    assert_eq!(page2.as_array().unwrap().len(), 1);
    assert_eq!(page2[0]["id"], all[2]["id"]);

    let id = found[0]["id"].as_i64().unwrap();
    let detail = eventually("the attempt is recorded", || async {
        let d = get(&format!("/admin/deliveries/{id}")).await.json;
        (d["state"] == "delivered").then_some(d)
    })
    .await;
    assert_eq!(detail["attempt_log"][0]["status"], 202);
    assert_eq!(detail["attempt_log"][0]["detail"], "Event processed");
    assert_eq!(detail["event"]["dedup_key"], found[0]["dedup_key"]);
    assert_eq!(detail["headers"]["x-github-event"], "workflow_run");
    assert!(detail["payload"].as_str().unwrap().contains("\"workflow_run\""));
    let text = detail.to_string();
    assert!(!text.contains(crate::helpers::INTEGRATION_KEY), "no routing key in the detail");

    assert_eq!(get("/admin/deliveries/999999").await.status, 404);
    assert_eq!(get("/admin/deliveries/abc").await.status, 400);
    let res = app.http.get(format!("{}/admin/deliveries/{id}", app.admin)).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 401);
}

#[tokio::test]
async fn stats_count_the_outcomes_metrics_exports_and_sources_are_listed() {
    let app = spawn_app().await;
    assert_eq!(app.github("pull_request", "m-1", &fixture("github/pull_request_merged.json")).await.status, 202);
    app.fake.wait_for(1, Duration::from_secs(10)).await;
    // The attempt is counted as it ends and the queue row finishes just after: wait for both.
    let stats = eventually("the delivery is counted and finished", || async {
        let s = app.admin_call(reqwest::Method::GET, "/admin/stats").await.json;
        (s["attempts_last_hour"]["delivered"] == 1 && s["queue_depth"] == 0).then_some(s)
    })
    .await;
    assert_eq!(stats["oldest_pending_seconds"], serde_json::Value::Null);
    let metrics = app.scrape().await;
    assert!(metrics.contains(r#"pagerhook_delivery_attempts_total{outcome="delivered"} 1"#), "{metrics}");
    assert_eq!(app.admin_call(reqwest::Method::GET, "/admin/sources").await.json, serde_json::json!(["github"]));
}

/// POST /admin/render with the admin token.
async fn render(app: &crate::helpers::TestApp, body: serde_json::Value) -> (u16, serde_json::Value) {
    let res = app
        .http
        .post(format!("{}/admin/render", app.admin))
        .bearer_auth("admin-token")
        .json(&body)
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

#[tokio::test]
async fn render_shows_what_a_payload_would_send_and_stores_and_sends_nothing() {
    let app = spawn_app().await;
    let payload = String::from_utf8(fixture("github/pull_request_merged.json")).unwrap();
    let (status, out) = render(
        &app,
        serde_json::json!({ "source": "github", "payload": payload, "headers": "X-GitHub-Event: pull_request\n" }),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["events"].as_array().unwrap().len(), 1);
    assert_eq!(out["events"][0]["endpoint"], "/v2/change/enqueue");
    assert_eq!(out["events"][0]["rule"], "pull request merged");
    assert!(out["events"][0]["routing_key"].as_str().unwrap().starts_with("sha256:"));
    assert!(!out.to_string().contains(crate::helpers::INTEGRATION_KEY));

    // A rule that fails names itself and the field.
    let broken = r#"{"action": "completed", "workflow_run": {"conclusion": "failure", "head_branch": "main"}, "repository": {"default_branch": "main"}}"#;
    let (status, out) = render(
        &app,
        serde_json::json!({ "source": "github", "payload": broken, "headers": "X-GitHub-Event: workflow_run" }),
    )
    .await;
    assert_eq!(status, 422, "{out}");
    let error = out["error"].as_str().unwrap();
    assert!(error.contains("rule 'workflow failed on default branch'") && error.contains("html_url"), "{error}");

    let (status, out) =
        render(&app, serde_json::json!({ "source": "github", "payload": "{}", "headers": "X-GitHub-Event: ping" }))
            .await;
    assert_eq!((status, out["events"].as_array().unwrap().len()), (200, 0));
    assert!(out["ignored"].is_string(), "{out}");
    assert_eq!(render(&app, serde_json::json!({ "source": "nope", "payload": "{}" })).await.0, 404);
    let (status, out) =
        render(&app, serde_json::json!({ "source": "github", "payload": "{}", "headers": "no colon" })).await;
    assert_eq!(status, 400);
    assert!(out["error"].as_str().unwrap().contains("line 1"), "{out}");
    assert_eq!(render(&app, serde_json::json!({ "source": "github" })).await.0, 400, "payload is required");
    assert_eq!(
        render(
            &app,
            serde_json::json!({ "source": "github", "payload": "not json", "headers": "X-GitHub-Event: push" })
        )
        .await
        .0,
        422
    );
    let res = app.http.post(format!("{}/admin/render", app.admin)).json(&serde_json::json!({})).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 401);

    // Nothing stored, nothing sent.
    assert!(app.app.as_ref().unwrap().queue().recent(10).await.unwrap().is_empty());
    assert!(app.fake.received().is_empty());
}

#[tokio::test]
async fn the_console_is_served_from_the_binary_with_a_same_origin_policy() {
    let app = spawn_app().await;
    for (path, kind) in
        [("/", "text/html"), ("/console/console.js", "text/javascript"), ("/console/console.css", "text/css")]
    {
        let res = app.http.get(format!("{}{path}", app.admin)).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 200, "{path}");
        let csp = res.headers()["content-security-policy"].to_str().unwrap().to_string();
        assert!(csp.starts_with("default-src 'self'"), "{path}: {csp}");
        assert!(res.headers()["content-type"].to_str().unwrap().starts_with(kind), "{path}");
        let text = res.text().await.unwrap();
        assert!(!text.contains("http://") && !text.contains("https://"), "{path} names no other origin");
    }
    let page = app.http.get(format!("{}/", app.admin)).send().await.unwrap().text().await.unwrap();
    assert!(page.contains(r#"<label for="token">Admin token</label>"#));
    assert_eq!(app.http.get(format!("{}/console/nope.js", app.admin)).send().await.unwrap().status().as_u16(), 404);
    // Not on the webhook listener.
    assert_eq!(app.http.get(format!("{}/", app.base)).send().await.unwrap().status().as_u16(), 404);

    let off = crate::helpers::spawn_app_with(|c| c.replace("admin_token = \"env:ADMIN_TOKEN\"\n", "")).await;
    let res = off.http.get(format!("{}/", off.admin)).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert!(res.headers()["content-security-policy"].to_str().unwrap().starts_with("default-src 'self'"));
    let text = res.text().await.unwrap();
    assert!(text.contains("server.admin_token") && !text.contains("Admin token</label>"), "says how to turn it on");
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
    let text = app.scrape().await;
    for line in [
        r#"pagerhook_mapping_failures_total{source="github",status="202"} 0"#,
        r#"pagerhook_dead_letters_dropped_total{source="github",reason="age"} 0"#,
        r#"pagerhook_dead_letters_dropped_total{source="github",reason="size"} 0"#,
        r#"pagerhook_config_reloads_total{outcome="ok"} 0"#,
        r#"pagerhook_config_reloads_total{outcome="error"} 0"#,
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}
