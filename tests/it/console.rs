//! The web console in a real browser: Debian's chromium driven by Playwright
//! (`tests/browser/console.mjs`, npm `playwright-core`, no browser download). Where chromium,
//! node or the npm package is missing the test says SKIPPED and passes, except under
//! `CI=true` (`.ci/run` installs them), where it fails.

use crate::helpers::fake_pagerduty::Reply;
use crate::helpers::{bearer_source, eventually, fixture, root, spawn_app_in, GITHUB_SECRET, INTEGRATION_KEY};
use pagerhook::queue::EventState;
use std::path::PathBuf;
use std::time::Duration;

/// What the browser test needs, or why it cannot run here.
fn browser_kit() -> Result<(PathBuf, PathBuf), String> {
    let chromium = PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    if !chromium.exists() {
        return Err(format!("no chromium at {} (apt-get install chromium)", chromium.display()));
    }
    let node = std::process::Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return Err("no node on PATH".into());
    }
    let browser = root().join("tests/browser");
    if !browser.join("node_modules/playwright-core").exists() {
        return Err("tests/browser/node_modules missing (npm ci --prefix tests/browser)".into());
    }
    Ok((chromium, browser))
}

/// The kit, or `None` after saying SKIPPED (a failure under CI=true).
fn browser_or_skip(test: &str) -> Option<(PathBuf, PathBuf)> {
    match browser_kit() {
        Ok(kit) => Some(kit),
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but the browser test cannot run: {why}")
        }
        Err(why) => {
            let note = format!("SKIPPED browser test {test}: {why}\n");
            let _ = std::io::Write::write_all(&mut std::io::stderr(), note.as_bytes());
            None
        }
    }
}

/// `serve --dry-run` with one webhook recorded as a dry run.
async fn dry_run_app() -> (tempfile::TempDir, pagerhook::app::App) {
    let dir = tempfile::tempdir().unwrap();
    let fake = crate::helpers::fake_pagerduty::FakePagerDuty::start().await;
    let cfg = crate::helpers::config_from(&crate::helpers::base_config(dir.path(), &fake.url), dir.path());
    let (hooks, admin) =
        (std::net::TcpListener::bind("127.0.0.1:0").unwrap(), std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    let options = pagerhook::app::Options { dry_run: true, ..crate::helpers::test_options() };
    let app = pagerhook::app::App::start_on(cfg, options, hooks, admin).await.unwrap();
    let status = crate::delivery::post_github(app.port(), "pull_request", "github/pull_request_merged.json").await;
    assert_eq!(status, 202);
    eventually("the webhook is recorded as a dry run", || async {
        app.queue().recent(1).await.unwrap().into_iter().find(|e| e.state == EventState::DryRun)
    })
    .await;
    (dir, app)
}

const DEAD_KEY: &str = "github/acme/payments-api/deployment/production";
const SEARCH: &str = "workflow/48213377";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_signs_in_searches_replays_and_renders_in_chromium() {
    let Some((chromium, browser)) = browser_or_skip("the_console_signs_in_searches_replays_and_renders_in_chromium")
    else {
        return;
    };
    // Beside GitHub, a source `each` making one alert per item of `body.alerts`.
    let app = spawn_app_in(|text, dir| {
        std::fs::write(dir.join("each.toml"), EACH).unwrap();
        text + &bearer_source("each", &dir.join("each.toml"))
    })
    .await;
    // The first alert PagerDuty sees is refused, and so is its minimal form: it becomes the
    // dead letter to replay.
    app.fake.script("/v2/enqueue", [Reply::status(400), Reply::status(400)]);
    assert_eq!(
        app.github("deployment_status", "c-1", &fixture("github/deployment_status_failure.json")).await.status,
        202
    );
    app.fake.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(app.github("workflow_run", "c-2", &fixture("github/workflow_run_failure.json")).await.status, 202);
    assert_eq!(app.github("pull_request", "c-3", &fixture("github/pull_request_merged.json")).await.status, 202);
    app.fake.wait_for(4, Duration::from_secs(10)).await;
    // A payload the workflow rule fails on (no repository name): kept as a mapping failure.
    let broken = br#"{"action": "completed", "workflow_run": {"conclusion": "failure", "head_branch": "main"}, "repository": {"default_branch": "main"}}"#;
    assert_eq!(app.github("workflow_run", "c-4", broken).await.json["status"], "mapping_failed");
    // One item of three has no name: kept alone as `items_failed`, the other two delivered.
    let items =
        serde_json::json!({"alerts": [{"id": 1, "name": "disk full"}, {"id": 2}, {"id": 3, "name": "cpu hot"}]});
    assert_eq!(app.post_bearer("each", &items).await.json["status"], "partial");
    // The failed deployment succeeds since: its resolve goes out, after its trigger died.
    let success = fixture("github/deployment_status_success.json");
    assert_eq!(app.github("deployment_status", "c-5", &success).await.status, 202);
    let queue = app.app.as_ref().unwrap().queue();
    // Each dead letter paged (pagerhook's own pages, delivered like the rest).
    eventually("three dead letters, nothing pending, and their own pages delivered", || async {
        let dead = queue.dead_letters(None, 10).await.unwrap();
        let recent = queue.recent(20).await.unwrap();
        let own = recent.iter().filter(|e| e.own && e.state == EventState::Delivered).count();
        (dead.len() == 3 && queue.depth().await.unwrap().0 == 0 && own == 3).then_some(())
    })
    .await;

    // A dry run, whose console counts its dry runs.
    let (_dry_dir, dry) = dry_run_app().await;
    // A server without an admin token, for the "console is off" page.
    let off = crate::helpers::spawn_app_with(|c| c.replace("admin_token = \"env:ADMIN_TOKEN\"\n", "")).await;
    // A storm: five alerts on the default key at one a minute, four of them waiting.
    let storm = spawn_app_in(|text, dir| {
        std::fs::write(dir.join("each.toml"), EACH).unwrap();
        let text = text.replace("[delivery]\n", "[delivery]\nper_key_rate = 1\nper_key_burst = 1\n");
        text + &bearer_source("each", &dir.join("each.toml"))
    })
    .await;
    let five =
        serde_json::json!({"alerts": (1..=5).map(|i| serde_json::json!({"id": i, "name": "hot"})).collect::<Vec<_>>()});
    assert_eq!(storm.post_bearer("each", &five).await.status, 202);
    let storm_key =
        pagerhook::event::RoutingKey::parse(pagerhook::secret::Secret::new(INTEGRATION_KEY)).unwrap().fingerprint();
    let out = root().join("target/console-screenshots");
    let (admin, hooks, off_admin) = (app.admin.clone(), app.base.clone(), off.admin.clone());
    let dry_admin = format!("http://127.0.0.1:{}", dry.admin_port());
    let storm_admin = storm.admin.clone();
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(browser.join("console.mjs"))
            .env("ADMIN", admin)
            .env("OFF_ADMIN", off_admin)
            .env("DRY_ADMIN", dry_admin)
            .env("STORM_ADMIN", storm_admin)
            .env("STORM_KEY", storm_key)
            .env("STORM_SECRET_KEY", INTEGRATION_KEY)
            .env("HOOKS", hooks)
            .env("TOKEN", "admin-token")
            .env("GH_SECRET", GITHUB_SECRET)
            .env("SEARCH", SEARCH)
            .env("SUMMARY", "idempotency keys")
            .env("DEAD_KEY", DEAD_KEY)
            .env("FIXTURES", root().join("fixtures/github"))
            .env("OUT", &out)
            .env("CHROMIUM", chromium)
            .output()
            .expect("node runs")
    })
    .await
    .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "browser test failed:\n{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();
    assert_eq!(report["foreign"], serde_json::json!([]), "no request left the admin origin");
    assert!(report["requests"].as_u64().unwrap() > 10, "{report}");
    eprintln!("console: {report}");

    // The replay clicked in the browser reached PagerDuty: the refused trigger went again.
    // The replay clicked in the browser ("Replay anyway": its incident was resolved since)
    // reached PagerDuty, and so did the Resolve clicked on the Incidents page.
    eventually("the dead trigger (then its minimal form) sent again, and the incident's resolve", || async {
        let got = app.fake.received();
        let sent = got.iter().filter(|r| r.dedup_key() == Some(DEAD_KEY) && r.action() == Some("trigger")).count();
        let resolved = got
            .iter()
            .filter(|r| r.action() == Some("resolve") && r.dedup_key().is_some_and(|k| k.contains(SEARCH)))
            .count();
        (sent == 3 && resolved == 1).then_some(())
    })
    .await;
    dry.stop().await;
}

/// One alert per item of `body.alerts`, whose summary is the item's strict `name`.
const EACH: &str = r#"
[[rule]]
name = "each"
emit = "alert"
for_each = "body.alerts"
dedup_key = "item-{{item.id}}"
summary = "{{item.name}}"
source = "tests"
"#;
