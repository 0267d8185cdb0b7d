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
