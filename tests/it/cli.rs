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

#[test]
fn check_accepts_the_shipped_config() {
    let out = pagerhook().arg("check").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("source 'github'"), "{stdout}");
    assert!(stdout.contains("OK"), "{stdout}");
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
    let out = pagerhook().arg("--config").arg(dir.path().join("pagerhook.toml")).arg("check").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("line 1: rule 'one': summary"), "{stderr}");
    assert!(stderr.contains("line 7: rule 'two': emit = \"page\""), "{stderr}");
}

#[test]
fn check_names_an_unknown_key_and_its_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pagerhook.toml"), "[server]\nlisten = \"0.0.0.0:1\"\nlisen = \"typo\"\n").unwrap();
    let out = pagerhook().arg("--config").arg(dir.path().join("pagerhook.toml")).arg("check").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("line 3") && stderr.contains("lisen"), "{stderr}");
}

#[test]
fn render_prints_the_events_a_fixture_produces() {
    let out = pagerhook()
        .args([
            "render",
            "--source",
            "github",
            "-H",
            "X-GitHub-Event: pull_request",
            "fixtures/github/pull_request_merged.json",
        ])
        .output()
        .unwrap();
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
    let out = pagerhook().arg("--config").arg(dir.path().join("pagerhook.toml")).arg("check").output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

const TRIGGER: &str = "[[rule]]\nname = \"t\"\nemit = \"alert\"\ndedup_key = \"k\"\nsummary = \"s\"\nsource = \"x\"\n";

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
