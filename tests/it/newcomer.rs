//! A newcomer's second hour (issue 34), through the binary: `check` on a mistyped path, and
//! what `check` says about the test cases that render templates against payloads.

use std::process::Command;

/// `pagerhook --config DIR/pagerhook.toml check` on a config with one source whose mapping is
/// `mapping`, and `tests` as `m.test.toml` when given: exit code, stdout, stderr.
fn check(mapping: &str, tests: Option<&str>) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.toml"), mapping).unwrap();
    if let Some(t) = tests {
        std::fs::write(dir.path().join("m.test.toml"), t).unwrap();
    }
    std::fs::write(
        dir.path().join("pagerhook.toml"),
        "[pagerduty]\nrouting_key = \"0123456789abcdef0123456789abcdef\"\n[[source]]\nname = \"uptime\"\nkind = \"generic\"\nverify = { scheme = \"bearer\", secrets = [\"t\"] }\nmappings = [\"m.toml\"]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pagerhook"))
        .arg("--config")
        .arg(dir.path().join("pagerhook.toml"))
        .arg("check")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

const RULE: &str = "[[rule]]\nname = \"monitor down\"\nemit = \"alert\"\ndedup_key = \"uptime/{{body.monitor}}\"\nsource = \"uptime\"\nsummary = \"{{bdy.monitor}} is down\"\n";

#[test]
fn check_refuses_a_template_reading_an_unknown_root() {
    let (code, _, stderr) = check(RULE, None);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("m.toml line 1: rule 'monitor down': summary:"), "{stderr}");
    assert!(stderr.contains("unknown root in `bdy.monitor`") && stderr.contains("body, headers, query"), "{stderr}");
}

#[test]
fn check_says_that_pagerhook_test_renders_templates_against_payloads() {
    let fixed = RULE.replace("bdy.", "body.");
    let (code, stdout, stderr) = check(&fixed, None);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("`pagerhook test` checks them against payloads"), "{stderr}");
    let case = "[[case]]\nname = \"down\"\nsource = \"uptime\"\nbody = '{\"monitor\": \"db\"}'\nexpect_events = 1\n";
    let (code, stdout_with, stderr) = check(&fixed, Some(case));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stdout.contains("test case"), "{stdout}");
    assert!(
        stdout_with.contains("source 'uptime': 1 rule(s) compiled; 1 test case(s): `pagerhook test` renders them"),
        "{stdout_with}"
    );
}

/// `deliveries list --source --state --since` and `deliveries show ID` on a running app's
/// store, their JSON with RFC 3339 times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_filtered_shown_and_dated_in_rfc3339() {
    use crate::helpers::{base_config, eventually, fixture, spawn_app};
    let app = spawn_app().await;
    assert_eq!(app.github("pull_request", "n-1", &fixture("github/pull_request_merged.json")).await.status, 202);
    let queue = app.app.as_ref().unwrap().queue();
    eventually("the event is delivered", || async {
        queue.recent(10).await.unwrap().into_iter().find(|e| e.state == pagerhook::queue::EventState::Delivered)
    })
    .await;
    let cfg = app.dir.path().join("tool.toml");
    std::fs::write(&cfg, base_config(app.dir.path(), "http://127.0.0.1:9")).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_pagerhook")).arg("--config").arg(&cfg).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
    };
    let list = |args: &[&str]| {
        let (ok, stdout, stderr) = run(&[&["deliveries", "list", "--json"], args].concat());
        assert!(ok, "{stderr}");
        serde_json::from_str::<serde_json::Value>(&stdout).unwrap()
    };
    let rows = list(&["--source", "github", "--state", "delivered", "--since", "1h"]);
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows:#}");
    let created = rows[0]["created_at"].as_str().unwrap_or_else(|| panic!("{rows:#}"));
    assert!(time::OffsetDateTime::parse(created, &time::format_description::well_known::Rfc3339).is_ok(), "{created}");
    assert_eq!(list(&["--source", "aws"]), serde_json::json!([]));
    assert_eq!(list(&["--search", "IDEMPOTENCY keys"])[0]["id"], rows[0]["id"], "found by part of its summary");
    assert_eq!(list(&["--search", "no such summary"]), serde_json::json!([]));
    assert_eq!(list(&["--state", "dead"]), serde_json::json!([]));
    assert_eq!(list(&["--since", "2999-01-01T00:00:00Z"]), serde_json::json!([]));
    let (ok, _, stderr) = run(&["deliveries", "list", "--state", "sent"]);
    assert!(!ok && stderr.contains("expected one of pending, delivered"), "{stderr}");
    let id = rows[0]["id"].to_string();
    let (ok, stdout, stderr) = run(&["deliveries", "show", &id]);
    assert!(ok, "{stderr}");
    let shown: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(shown["event"]["payload"]["summary"].as_str().is_some_and(|s| s.contains("merged")), "{shown:#}");
    assert!(shown["created_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{shown:#}");
    assert!(shown["attempt_log"][0]["at"].as_str().is_some_and(|t| t.ends_with('Z')), "{shown:#}");
    let (ok, _, stderr) = run(&["deliveries", "show", "999999"]);
    assert!(!ok && stderr.contains("no event 999999"), "{stderr}");
}

/// The playground's pasted mapping, through `POST /admin/render`: rendered instead of the
/// source's mappings, nothing saved; one that does not compile is a 422 naming its problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_playground_renders_a_pasted_mapping_without_saving_it() {
    let app = crate::helpers::spawn_app().await;
    let render = |mapping: &str| {
        let body = serde_json::json!({
            "source": "github",
            "payload": r#"{"workflow_run": {"conclusion": "failure", "head_branch": "main"}}"#,
            "headers": "X-GitHub-Event: workflow_run",
            "mapping": mapping,
        });
        let req = app.http.post(format!("{}/admin/render", app.admin)).bearer_auth("admin-token").json(&body);
        async move {
            let res = req.send().await.unwrap();
            (res.status().as_u16(), res.json::<serde_json::Value>().await.unwrap())
        }
    };
    let pasted = "[[rule]]\nname = \"pasted\"\nemit = \"alert\"\ndedup_key = \"wf/{{body.workflow_run.head_branch}}\"\nsource = \"ci\"\nsummary = \"failed on {{body.workflow_run.head_branch}}\"\n";
    let (status, out) = render(pasted).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["events"][0]["rule"], "pasted", "{out}");
    assert_eq!(out["events"][0]["event"]["payload"]["summary"], "failed on main", "{out}");
    // Without one, the source's own mappings: the pasted rule was not kept.
    let (_, out) = render("").await;
    assert!(!out.to_string().contains("pasted"), "{out}");
    let (status, out) = render("[[rule]]\nname = \"typo\"\nemit = \"change\"\nsummary = \"{{bdy.x}}\"\n").await;
    assert_eq!(status, 422, "{out}");
    let error = out["error"].as_str().unwrap_or_else(|| panic!("{out}"));
    assert!(error.contains("pasted mapping") && error.contains("unknown root in `bdy.x`"), "{error}");
}
