//! `pagerhook test` through the built binary: the shipped test files pass, and a failing case
//! shows its diff, exits 1 and reads as JSON.

use crate::helpers::{copy_shipped_mappings, root, shipped_mappings};
use std::path::Path;
use std::process::{Command, Output};

fn pagerhook(config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pagerhook"));
    // No secret in the environment: `test` must not need one.
    c.current_dir(root()).env_clear().env("RUST_LOG", "warn").arg("--config").arg(config);
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The shipped test files, run on a copy holding only the shipped files: every shipped mapping
/// has a test file, and every case of them passes, by name.
fn shipped_test_files_pass(root: &Path) {
    let untested: Vec<_> = shipped_mappings(root)
        .into_iter()
        .filter(|m| !m.with_extension("test.toml").exists())
        .map(|m| m.display().to_string())
        .collect();
    assert_eq!(untested, Vec::<String>::new(), "shipped mappings without a test file");
    let copy = copy_shipped_mappings(root);
    let mut expected = Vec::new();
    for mapping in shipped_mappings(root) {
        let test = mapping.with_extension("test.toml");
        let file: toml::Value = toml::from_str(&std::fs::read_to_string(&test).unwrap()).unwrap();
        let name = test.file_name().unwrap().to_str().unwrap();
        for case in file["case"].as_array().unwrap() {
            expected.push(format!("{name}: {}", case["name"].as_str().unwrap()));
        }
        for scenario in file.get("scenario").and_then(|s| s.as_array()).into_iter().flatten() {
            expected.push(format!("{name}: scenario {}", scenario["name"].as_str().unwrap()));
        }
    }
    expected.sort();
    let out = pagerhook(&copy.path().join("mappings/test-sources.toml")).arg("test").output().unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let mut passed: Vec<_> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("PASS  "))
        .map(|l| l.strip_prefix(&format!("{}/mappings/", copy.path().display())).unwrap_or(l).to_string())
        .collect();
    passed.sort();
    assert_eq!(passed, expected, "the cases that passed (left) are not the cases of the shipped test files (right)");
    assert!(!stderr_has_untested(&out.stderr), "a shipped source has no test:\n{}", text(&out.stderr));
    let tally = format!("{} passed, 0 failed\n", expected.len());
    assert!(stdout.ends_with(&tally), "expected {tally:?} for the {} shipped cases:\n{stdout}", expected.len());
}

#[test]
fn every_shipped_mapping_has_a_test_file_and_all_of_them_pass() {
    shipped_test_files_pass(&root());
}

/// README tells a user to put their mapping and its test file in `mappings/`: a failing one
/// there (testing a shipped source, so `pagerhook test` would run it) and a mapping without a
/// test file change nothing in the project's own tests.
#[test]
fn a_users_own_files_in_mappings_do_not_change_the_shipped_tests() {
    let checkout = tempfile::tempdir().unwrap();
    std::fs::create_dir(checkout.path().join("mappings")).unwrap();
    std::os::unix::fs::symlink(root().join("fixtures"), checkout.path().join("fixtures")).unwrap();
    for e in std::fs::read_dir(root().join("mappings")).unwrap() {
        let path = e.unwrap().path();
        std::fs::copy(&path, checkout.path().join("mappings").join(path.file_name().unwrap())).unwrap();
    }
    let m = checkout.path().join("mappings");
    std::fs::write(m.join("mine.toml"), MAPPING).unwrap();
    std::fs::write(m.join("untested.toml"), MAPPING).unwrap();
    let failing = "[[case]]\nname = \"mine\"\nsource = \"github\"\nbody = '{}'\nexpect_events = 7\n";
    std::fs::write(m.join("mine.test.toml"), failing).unwrap();
    assert_eq!(
        shipped_mappings(checkout.path()),
        shipped_mappings(&root()).iter().map(|p| m.join(p.file_name().unwrap())).collect::<Vec<_>>()
    );
    shipped_test_files_pass(checkout.path());
}

const MAPPING: &str = r#"
[[rule]]
name = "job"
emit = "alert"
action = '{{#if (eq body.status "failed")}}trigger{{else}}resolve{{/if}}'
dedup_key = 'job/{{body.job}}{{#if (eq body.status "ok")}}/ok{{/if}}'
severity = "error"
summary = "{{body.job}} {{body.status}}"
source = "{{body.host}}"
"#;

/// A config with one generic source `jobs` on [`MAPPING`], and `tests` as `jobs.test.toml`.
fn project(tests: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jobs.toml"), MAPPING).unwrap();
    std::fs::write(
        dir.path().join("pagerhook.toml"),
        "[pagerduty]\nrouting_key = \"env:PAGERDUTY_ROUTING_KEY\"\n\n[[source]]\nname = \"jobs\"\nkind = \"generic\"\nverify = { scheme = \"bearer\", secrets = [\"env:JOBS_TOKEN\"] }\nmappings = [\"jobs.toml\"]\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("tests")).unwrap();
    std::fs::write(dir.path().join("tests/jobs.test.toml"), tests).unwrap();
    dir
}

fn run(dir: &Path, json: bool) -> Output {
    let mut c = pagerhook(&dir.join("pagerhook.toml"));
    c.arg("test");
    if json {
        c.arg("--json");
    }
    c.output().unwrap()
}

const CASES: &str = r#"
[[case]]
name = "backup fails"
source = "jobs"
body = '{"job": "backup", "status": "failed", "host": "db-1"}'
[[case.expect]]
event_action = "trigger"
payload.severity = "critical"
payload.source = "db-1"

[[case]]
name = "backup recovers"
source = "jobs"
body = '{"job": "backup", "status": "ok", "host": "db-1"}'
pair = "backup fails"
expect_events = 1
"#;

#[test]
fn a_failing_case_prints_its_diff_and_exits_1() {
    let dir = project(CASES);
    let out = run(dir.path(), false);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("FAIL  ") && stdout.contains("jobs.test.toml: backup fails"), "{stdout}");
    assert!(
        stdout.contains("event 1: payload.severity\n        expected: \"critical\"\n        actual:   \"error\""),
        "{stdout}"
    );
    // The resolve's key is not its trigger's: the incident would never close.
    assert!(stdout.contains("event 1: dedup_key (pair \"backup fails\")"), "{stdout}");
    assert!(stdout.contains("actual:   \"job/backup/ok\""), "{stdout}");
    assert!(stdout.ends_with("0 passed, 2 failed\n"), "{stdout}");

    let fixed = project(&CASES.replace("\"critical\"", "\"error\""));
    std::fs::write(fixed.path().join("jobs.toml"), MAPPING.replace(r#"{{#if (eq body.status "ok")}}/ok{{/if}}"#, ""))
        .unwrap();
    let out = run(fixed.path(), false);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(text(&out.stdout).ends_with("2 passed, 0 failed\n"));
}

#[test]
fn json_output_lists_every_case_and_failure_for_machines() {
    let dir = project(CASES);
    let out = run(dir.path(), true);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["passed"].as_u64(), v["failed"].as_u64()), (Some(0), Some(2)), "{v:#}");
    let first = &v["cases"][0];
    assert_eq!(first["case"], "backup fails");
    assert_eq!(first["passed"], false);
    assert_eq!(
        first["failures"][0],
        serde_json::json!({"event": 1, "field": "payload.severity", "expected": "critical", "actual": "error"})
    );
    assert_eq!(v["cases"][1]["failures"][0]["field"], "dedup_key (pair \"backup fails\")");
}

#[test]
fn a_broken_test_file_names_file_and_case_and_exits_1() {
    let dir = project("[[case]]\nname = \"no payload\"\nsource = \"jobs\"\nexpect_events = 0\n");
    let out = run(dir.path(), false);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("jobs.test.toml: case 'no payload': give the payload as either file"), "{stderr}");
}

#[test]
fn check_warns_about_a_mapping_that_never_resolves() {
    let dir = project(CASES);
    std::fs::write(dir.path().join("jobs.toml"), MAPPING.replace("{{else}}resolve", "")).unwrap();
    let out = pagerhook(&dir.path().join("pagerhook.toml"))
        .env("PAGERDUTY_ROUTING_KEY", "0123456789abcdef0123456789abcdef")
        .env("JOBS_TOKEN", "t")
        .arg("check")
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: source 'jobs'") && stderr.contains("no rule acknowledges or resolves"),
        "{stderr}"
    );
}

#[test]
fn a_found_test_file_for_sources_not_configured_is_skipped_but_a_named_one_fails() {
    let dir = project(&CASES.replace("\"critical\"", "\"error\"").replace("/ok", ""));
    std::fs::write(dir.path().join("jobs.toml"), MAPPING.replace(r#"{{#if (eq body.status "ok")}}/ok{{/if}}"#, ""))
        .unwrap();
    let other = "[[case]]\nname = \"x\"\nsource = \"sentry\"\nbody = '{}'\nexpect_events = 0\n";
    std::fs::write(dir.path().join("tests/sentry.test.toml"), other).unwrap();
    let out = run(dir.path(), false);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("skipped ") && stderr.contains("sentry.test.toml: none of its sources is in"), "{stderr}");
    assert!(stdout.ends_with("2 passed, 0 failed\n"), "{stdout}");

    let out = pagerhook(&dir.path().join("pagerhook.toml"))
        .arg("test")
        .arg(dir.path().join("tests/sentry.test.toml"))
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("source: no source named 'sentry'"), "{stdout}");
}

#[test]
fn the_shipped_config_tests_its_own_sources_and_skips_the_rest() {
    // A copy of the shipped github source and two shipped test files, not the working checkout
    // (whose pagerhook.toml and mappings/ the user edits). A config path without a folder: the
    // test files are found from the working directory.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("mappings")).unwrap();
    std::os::unix::fs::symlink(root().join("fixtures"), dir.path().join("fixtures")).unwrap();
    for f in ["github.toml", "github.test.toml", "sentry.test.toml"] {
        std::fs::copy(root().join("mappings").join(f), dir.path().join("mappings").join(f)).unwrap();
    }
    let config = "[pagerduty]\nrouting_key = \"env:PAGERDUTY_ROUTING_KEY\"\n\n[[source]]\nname = \"github\"\nkind = \"github\"\nsecrets = [\"env:GITHUB_WEBHOOK_SECRET\"]\nmappings = [\"mappings/github.toml\"]\n";
    std::fs::write(dir.path().join("pagerhook.toml"), config).unwrap();
    let out = pagerhook(Path::new("pagerhook.toml")).current_dir(dir.path()).arg("test").output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("mappings/github.test.toml: push_default_branch"), "{stdout}");
    assert!(stderr.contains("skipped ./mappings/sentry.test.toml"), "{stderr}");
}

fn stderr_has_untested(stderr: &[u8]) -> bool {
    text(stderr).contains("has no test")
}

/// Every shipped mapping is proved by at least one scenario: a trigger and what closes it.
#[test]
fn every_shipped_mapping_has_a_scenario() {
    let without: Vec<_> = shipped_mappings(&root())
        .into_iter()
        .map(|m| m.with_extension("test.toml"))
        .filter(|t| !std::fs::read_to_string(t).unwrap().contains("[[scenario]]"))
        .map(|t| t.display().to_string())
        .collect();
    assert_eq!(without, Vec::<String>::new());
}

const SCENARIO: &str = r#"
[[scenario]]
name = "backup fails twice, then recovers"
source = "jobs"
expect_pages = 1
expect_open = []
[[scenario.step]]
body = '{"job": "backup", "status": "failed", "host": "db-1"}'
[[scenario.step]]
body = '{"job": "backup", "status": "failed", "host": "db-2"}'
at = "10m"
[[scenario.step]]
body = '{"job": "backup", "status": "ok", "host": "db-1"}'
"#;

#[test]
fn a_scenario_runs_through_the_binary_and_is_counted_per_source() {
    // MAPPING resolves `job/backup/ok`, not the trigger's key: the incident stays open.
    let dir = project(SCENARIO);
    let out = run(dir.path(), false);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL  ") && stdout.contains("jobs.test.toml: scenario backup fails twice, then recovers"),
        "{stdout}"
    );
    assert!(stdout.contains("open incidents\n        expected: 0\n        actual:   1"), "{stdout}");
    assert!(stdout.contains("\"title\":\"backup failed\""), "{stdout}");
    std::fs::write(dir.path().join("jobs.toml"), MAPPING.replace(r#"{{#if (eq body.status "ok")}}/ok{{/if}}"#, ""))
        .unwrap();
    let out = run(dir.path(), false);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.ends_with("source 'jobs': 0 case(s), 1 scenario(s)\n1 passed, 0 failed\n"), "{stdout}");
}

#[test]
fn a_run_that_tests_nothing_fails_and_names_the_untested_source() {
    let dir = project("[[case]]\nname = \"x\"\nsource = \"sentry\"\nbody = '{}'\nexpect_events = 0\n");
    let out = run(dir.path(), false);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error: no case or scenario ran"), "{stderr}");
    assert!(stderr.contains("warning: source 'jobs' has no test"), "{stderr}");
}

#[test]
fn strict_fails_a_case_whose_summary_was_cut() {
    let long = format!(
        "[[case]]\nname = \"long\"\nsource = \"jobs\"\nbody = '{{\"job\": \"{}\", \"status\": \"failed\", \"host\": \"db-1\"}}'\nexpect_events = 1\n",
        "b".repeat(1100)
    );
    let dir = project(&long);
    assert!(run(dir.path(), false).status.success());
    let out = pagerhook(&dir.path().join("pagerhook.toml")).args(["test", "--strict"]).output().unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("notes: --strict: summary truncated to 1024 characters"), "{stdout}");
}
