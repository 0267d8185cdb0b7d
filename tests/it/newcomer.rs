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
    assert!(stdout_with.contains("source 'uptime': 1 rule(s) compiled; 1 test case(s): `pagerhook test` renders them"), "{stdout_with}");
}
