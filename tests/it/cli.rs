//! The `pagerhook` binary: `check` and `render` on the shipped files.

use crate::helpers::root;
use std::process::Command;

fn pagerhook() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pagerhook"));
    c.current_dir(root())
        .env("PAGERDUTY_ROUTING_KEY", "0123456789abcdef0123456789abcdef")
        .env("GITHUB_WEBHOOK_SECRET", "test-secret")
        .env_remove("PAGERHOOK_CONFIG")
        .env("RUST_LOG", "warn");
    c
}

/// `pagerhook --config CFG check`: its exit code and stderr.
fn check(cfg: &std::path::Path) -> (Option<i32>, String) {
    let out = pagerhook().arg("--config").arg(cfg).arg("check").output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn check_accepts_the_shipped_config() {
    // Whatever sources a user enabled in it: the only errors allowed are their unset secrets.
    let out = pagerhook().arg("check").output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let errors: Vec<_> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert!(errors.iter().all(|e| e.contains("is not set")), "{stderr}");
    if errors.is_empty() {
        assert!(out.status.success() && stdout.contains("rule(s) compiled") && stdout.contains("OK"), "{stdout}");
    }
}

#[test]
fn check_reports_every_problem_with_its_line_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "[[rule]]\nname = \"one\"\nemit = \"alert\"\nsummary = \"{{#if}}\"\nsource = \"x\"\n\n[[rule]]\nname = \"two\"\nemit = \"page\"\nsummary = \"s\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("pagerhook.toml"),
        "[pagerduty]\nrouting_key = \"env:PAGERDUTY_ROUTING_KEY\"\n\n[[source]]\nname = \"github\"\nkind = \"github\"\nsecrets = [\"env:GITHUB_WEBHOOK_SECRET\"]\nmappings = [\"bad.toml\"]\n",
    )
    .unwrap();
    let (code, stderr) = check(&dir.path().join("pagerhook.toml"));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("line 1: rule 'one': summary"), "{stderr}");
    assert!(stderr.contains("line 7: rule 'two': emit = \"page\""), "{stderr}");
}

#[test]
fn check_names_an_unknown_key_and_its_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pagerhook.toml"), "[server]\nlisten = \"0.0.0.0:1\"\nlisen = \"typo\"\n").unwrap();
    let (code, stderr) = check(&dir.path().join("pagerhook.toml"));
    assert_eq!(code, Some(1));
    assert!(stderr.contains("line 3") && stderr.contains("lisen"), "{stderr}");
}

/// `render` of the merged pull request fixture.
const RENDER_MERGED_PR: [&str; 6] =
    ["render", "--source", "github", "-H", "X-GitHub-Event: pull_request", "fixtures/github/pull_request_merged.json"];

#[test]
fn render_prints_the_events_a_fixture_produces() {
    let out = pagerhook().args(RENDER_MERGED_PR).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{v:#}");
    assert_eq!(v[0]["endpoint"], "/v2/change/enqueue");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("0123456789abcdef0123456789abcdef"), "render never prints the routing key");
}

/// `check` on a config in a temporary folder with one GitHub source using `mapping`.
fn check_with(pagerduty_extra: &str, mapping: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.toml"), mapping).unwrap();
    std::fs::write(
        dir.path().join("pagerhook.toml"),
        format!("[pagerduty]\nrouting_key = \"env:PAGERDUTY_ROUTING_KEY\"\n{pagerduty_extra}\n[[source]]\nname = \"github\"\nkind = \"github\"\nsecrets = [\"env:GITHUB_WEBHOOK_SECRET\"]\nmappings = [\"m.toml\"]\n"),
    )
    .unwrap();
    check(&dir.path().join("pagerhook.toml"))
}

const TRIGGER: &str = "[[rule]]\nname = \"t\"\nemit = \"alert\"\ndedup_key = \"k\"\nsummary = \"s\"\nsource = \"x\"\n";

/// A literal severity is matched as a rendered one is (PagerDuty's four values, any case), so
/// `"Critical"` passes `check`; a value that is none of them is still refused, naming them.
#[test]
fn check_accepts_a_literal_severity_in_any_case_and_names_the_values_otherwise() {
    let (code, stderr) = check_with("", &format!("{TRIGGER}severity = \"Critical\"\n"));
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = check_with("", &format!("{TRIGGER}severity = \"Fatal\"\n"));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("severity = \"Fatal\": expected one of critical, error, warning, info (any case)"),
        "{stderr}"
    );
}

#[test]
fn check_notes_a_pasted_endpoint_and_refuses_another_path() {
    let (code, stderr) = check_with("events_url = \"https://events.pagerduty.com/v2/enqueue\"\n", TRIGGER);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("warning: pagerduty.events_url") && stderr.contains("\"https://events.pagerduty.com\""),
        "{stderr}"
    );
    let (code, stderr) = check_with("events_url = \"https://events.pagerduty.com/api/events\"\n", TRIGGER);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("pagerduty.events_url"), "{stderr}");
}

#[test]
fn check_refuses_a_resolve_rule_without_dedup_key_naming_file_and_rule() {
    let resolve =
        "[[rule]]\nname = \"all clear\"\nemit = \"alert\"\naction = \"resolve\"\nsummary = \"s\"\nsource = \"x\"\n";
    let (code, stderr) = check_with("", &format!("{TRIGGER}\n{resolve}"));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("m.toml line 8: rule 'all clear'") && stderr.contains("needs dedup_key"), "{stderr}");
}

/// A config in a temp dir naming the shipped mappings by absolute path; `extra` is appended.
fn temp_config(extra: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let m = root().join("mappings");
    let text = format!(
        "[storage]\npath = \"q.db\"\n[pagerduty]\nrouting_key = \"env:PAGERDUTY_ROUTING_KEY\"\n\n[[source]]\nname = \"github\"\nkind = \"github\"\nsecrets = [\"env:GITHUB_WEBHOOK_SECRET\"]\nmappings = [\"{}\"]\n{extra}",
        m.join("github.toml").display()
    );
    let path = dir.path().join("pagerhook.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn bare() -> Command {
    let mut c = pagerhook();
    c.env_remove("PAGERDUTY_ROUTING_KEY").env_remove("GITHUB_WEBHOOK_SECRET");
    c
}

#[test]
fn check_catches_an_unknown_helper_and_a_literal_severity_that_would_stop_paging() {
    let (dir, cfg) = temp_config("");
    std::fs::write(
        dir.path().join("bad.toml"),
        "[[rule]]\nname = \"r\"\nemit = \"alert\"\nsource = \"x\"\nseverity = \"high\"\nsummary = \"{{upcase body.a}}\"\n",
    )
    .unwrap();
    let text = std::fs::read_to_string(&cfg).unwrap().replace("github.toml\"]", "github.toml\", \"bad.toml\"]");
    std::fs::write(&cfg, text.replace("\"bad.toml\"", &format!("\"{}\"", dir.path().join("bad.toml").display())))
        .unwrap();
    let (code, stderr) = check(&cfg);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("unknown helper `upcase`"), "{stderr}");
    assert!(stderr.contains("severity = \"high\""), "{stderr}");
}

#[test]
fn check_reports_config_mapping_and_secret_problems_together() {
    let (dir, cfg) = temp_config("");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text =
        text.replace("[pagerduty]", "durability = \"sometimes\"\nretension = \"1d\"\n[pagerduty]\ntimout = \"1s\"");
    let missing = dir.path().join("missing.toml");
    let text = text.replace("[\"/", &format!("[\"{}\", \"/", missing.display()));
    std::fs::write(&cfg, text).unwrap();
    let out = bare().arg("--config").arg(&cfg).arg("check").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for needle in
        ["unknown field `retension`", "unknown field `timout`", "storage.durability", "cannot read mapping file"]
    {
        assert!(stderr.contains(needle), "missing {needle:?}:\n{stderr}");
    }
    // A config whose only problem is unset secrets: each is one problem, and mappings compile.
    let (_dir, cfg) = temp_config("");
    let out = bare().arg("--config").arg(&cfg).arg("check").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("PAGERDUTY_ROUTING_KEY is not set") && stderr.contains("GITHUB_WEBHOOK_SECRET is not set"),
        "{stderr}"
    );
    assert!(stderr.contains("2 error(s)") && !stderr.contains("no routing key"), "{stderr}");
}

#[test]
fn commands_that_need_no_secret_work_without_them() {
    let (_dir, cfg) = temp_config("");
    let out = bare()
        .arg("--config")
        .arg(&cfg)
        .args(["render", "--source", "github", "-H", "X-GitHub-Event: pull_request"])
        .arg(root().join("fixtures/github/pull_request_merged.json"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = bare().arg("--config").arg(&cfg).args(["deliveries", "list"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = bare().arg("--config").arg(&cfg).args(["dlq", "list"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn render_passes_a_query_string_and_explains_a_bare_cloudwatch_message() {
    let sns = format!(
        "\n[[source]]\nname = \"aws\"\nkind = \"sns\"\ntopics = [\"arn:aws:sns:us-east-1:123456789012:alarms\"]\nmappings = [\"{}\"]\n",
        root().join("mappings/cloudwatch.toml").display()
    );
    let (_dir, cfg) = temp_config(&sns);
    let render = |query: Option<&str>, file: &str| {
        let mut c = bare();
        c.arg("--config").arg(&cfg).args(["render", "--source", "aws"]);
        if let Some(q) = query {
            c.args(["--query", q]);
        }
        c.arg(root().join(file)).output().unwrap()
    };
    let plain = render(None, "fixtures/sns/notification_cloudwatch_alarm.json");
    assert!(plain.status.success(), "{}", String::from_utf8_lossy(&plain.stderr));
    let bare_msg = render(None, "fixtures/cloudwatch/metric_alarm_alarm.json");
    let stderr = String::from_utf8_lossy(&bare_msg.stderr);
    assert_eq!(bare_msg.status.code(), Some(1));
    assert!(stderr.contains("looks like a bare CloudWatch alarm message"), "{stderr}");
    // INSUFFICIENT_DATA maps to nothing unless the URL says so.
    let dir = tempfile::tempdir().unwrap();
    let env: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root().join("fixtures/sns/notification_cloudwatch_alarm.json")).unwrap())
            .unwrap();
    let inner =
        std::fs::read_to_string(root().join("fixtures/cloudwatch/metric_alarm_insufficient_data.json")).unwrap();
    let mut env = env;
    env["Message"] = serde_json::Value::String(inner);
    let f = dir.path().join("insufficient.json");
    std::fs::write(&f, env.to_string()).unwrap();
    let f = f.to_str().unwrap();
    let events = |out: std::process::Output| {
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap().as_array().unwrap().len()
    };
    assert_eq!(events(render(None, f)), 0);
    assert_eq!(events(render(Some("insufficient_data=trigger"), f)), 1);
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = pagerhook().args(RENDER_MERGED_PR).stdout(writer).stderr(std::process::Stdio::piped()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_missing_config_file_names_the_path_tried_and_the_ways_to_give_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = pagerhook().current_dir(dir.path()).arg("check").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains(&dir.path().join("pagerhook.toml").display().to_string()), "{stderr}");
    assert!(stderr.contains("--config") && stderr.contains("PAGERHOOK_CONFIG"), "{stderr}");
}

/// A child process killed when dropped, so a failing assertion leaves no server behind.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `serve` on a temp config with random ports, and its stderr lines as they come.
fn serve(cfg: &std::path::Path, format: &str) -> (Running, std::sync::mpsc::Receiver<String>) {
    let mut child = pagerhook()
        .env("RUST_LOG", "info")
        .arg("--config")
        .arg(cfg)
        .args(["--log-format", format, "serve", "--dry-run"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    (Running(child), rx)
}

/// Lines until one contains `needle` (generous deadline: a loaded 2-core machine).
fn lines_until(rx: &std::sync::mpsc::Receiver<String>, needle: &str) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) => {
                let done = l.contains(needle);
                seen.push(l);
                if done {
                    return seen;
                }
            }
            Err(_) => break,
        }
    }
    panic!("no line with {needle:?} in:\n{}", seen.join("\n"));
}

#[test]
fn a_second_serve_on_the_same_store_is_refused_and_text_logs_into_a_pipe_have_no_colour() {
    let (dir, cfg) = temp_config("");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{text}"))
        .unwrap();
    let (first, rx) = serve(&cfg, "text");
    let lines = lines_until(&rx, "pagerhook ready");
    assert!(!lines.iter().any(|l| l.contains('\u{1b}')), "no ANSI codes into a pipe: {lines:?}");
    let pid = std::fs::read_to_string(dir.path().join("q.pid")).unwrap();
    let first_pid = first.0.id();
    assert_eq!(pid.trim(), first_pid.to_string());
    let second = pagerhook().arg("--config").arg(&cfg).args(["serve", "--dry-run"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    drop(first);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("another pagerhook serve (pid {first_pid}) is already running")), "{stderr}");
    // The lock goes with the process: a new serve starts once the first is gone.
    let (_third, rx) = serve(&cfg, "json");
    lines_until(&rx, "pagerhook ready");
}

/// The PostgreSQL driver logs the server's notices (such as "relation already exists,
/// skipping" when a second command opens the store) at INFO: they are not the command's
/// output and must not be in it at the default level.
#[tokio::test]
async fn tools_on_a_postgresql_store_print_no_driver_notices() {
    let Some(db) = crate::helpers::PgSchema::create("tools_no_notices").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let (_template, cfg) = temp_config("");
    let text = std::fs::read_to_string(&cfg).unwrap().replace("path = \"q.db\"", &format!("url = \"{}\"", db.url));
    std::fs::write(dir.path().join("pagerhook.toml"), text).unwrap();
    for _ in 0..2 {
        let out = pagerhook()
            .env_remove("RUST_LOG")
            .arg("--config")
            .arg(dir.path().join("pagerhook.toml"))
            .args(["deliveries", "list"])
            .output()
            .unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{stdout}\n{stderr}");
        assert!(!stderr.contains("NOTICE") && !stderr.contains("tokio_postgres"), "{stderr}");
    }
    db.drop().await;
}

/// `check` is the deploy gate: an unset secret is an error naming its variable. `--no-secrets`
/// is for CI, where the secrets are not: it checks everything else and says what it skipped.
#[test]
fn check_reports_unset_secrets_unless_told_no_secrets() {
    let (_dir, cfg) = temp_config("");
    let out = bare().arg("--config").arg(&cfg).arg("check").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("PAGERDUTY_ROUTING_KEY") && stderr.contains("GITHUB_WEBHOOK_SECRET"), "{stderr}");
    let out = bare().arg("--config").arg(&cfg).args(["check", "--no-secrets"]).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("2 unset secret(s) not checked (--no-secrets)"), "{stderr}");
    assert!(stdout.contains("OK"), "{stdout}");
}
