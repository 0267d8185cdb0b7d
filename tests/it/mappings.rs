//! Every shipped mapping against every fixture: snapshots of exactly what would be sent.
//!
//! `fixtures/<source>/events.toml` lists each fixture with its headers and how many events it
//! must produce; the snapshots (reviewed by hand, `cargo insta review`) hold the events.

use crate::helpers::{base_config, config_from, root, shipped_generic_source, ALERTMANAGER_VERIFY};
use pagerhook::source::{Headers, Sources};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    file: String,
    /// GitHub's X-GitHub-Event.
    event: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    expect_events: usize,
}

fn render_cases(source: &str, config: &str) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_from(config, dir.path());
    let (sources, warnings) = Sources::build(&cfg).unwrap_or_else(|e| panic!("{e:#?}"));
    assert!(warnings.is_empty(), "{warnings:#?}");
    let src = sources.get(source).unwrap();
    let fixtures = root().join("fixtures").join(source);
    let cases: BTreeMap<String, Case> =
        toml::from_str(&std::fs::read_to_string(fixtures.join("events.toml")).unwrap()).unwrap();
    assert!(!cases.is_empty());
    for (name, case) in cases {
        let mut headers: Vec<(String, String)> = case.headers.into_iter().collect();
        headers.push(("content-type".into(), "application/json".into()));
        if let Some(e) = &case.event {
            headers.push(("x-github-event".into(), e.clone()));
        }
        let body = std::fs::read(fixtures.join(&case.file)).unwrap();
        let verified =
            src.trusted(Headers::from_pairs(headers), "", body.into()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let rendered = match verified.disposition() {
            pagerhook::source::Disposition::Map => {
                src.mapping().apply(&verified).unwrap_or_else(|e| panic!("{name}: {e}"))
            }
            pagerhook::source::Disposition::Ignore(_) => Vec::new(),
        };
        assert_eq!(rendered.len(), case.expect_events, "{name}: {rendered:#?}");
        let snapshot: Vec<_> = rendered
            .iter()
            .map(|r| {
                assert!(r.event.notes().is_empty(), "{name}: {:?}", r.event.notes());
                serde_json::json!({ "rule": r.rule, "endpoint": r.event.kind().path(), "event": r.event.body() })
            })
            .collect();
        insta::assert_json_snapshot!(format!("{source}__{name}"), snapshot);
    }
}

#[test]
fn github_fixtures_render_as_expected() {
    let dir = tempfile::tempdir().unwrap();
    render_cases("github", &base_config(dir.path(), "http://127.0.0.1:9"));
}

/// Renders the fixtures of a `kind = "generic"` source on its shipped mapping, configured with
/// the `verify` README.md gives for it (so a README example that stopped parsing fails here).
fn render_generic_cases(source: &str, verify: &str) {
    let dir = tempfile::tempdir().unwrap();
    render_cases(source, &(base_config(dir.path(), "http://127.0.0.1:9") + &shipped_generic_source(source, verify)));
}

#[test]
fn alertmanager_fixtures_render_as_expected() {
    render_generic_cases("alertmanager", ALERTMANAGER_VERIFY);
}

#[test]
fn grafana_fixtures_render_as_expected() {
    render_generic_cases("grafana", r#"{ scheme = "basic", secrets = ["env:GRAFANA_BASIC"] }"#);
}

#[test]
fn gitlab_fixtures_render_as_expected() {
    render_generic_cases("gitlab", r#"{ scheme = "gitlab", secrets = ["env:GITLAB_TOKEN"] }"#);
}

#[test]
fn sentry_fixtures_render_as_expected() {
    render_generic_cases(
        "sentry",
        r#"{ scheme = "hmac", header = "Sentry-Hook-Signature", algorithm = "sha256", encoding = "hex", secrets = ["env:SENTRY_SECRET"] }"#,
    );
}

#[test]
fn datadog_fixtures_render_as_expected() {
    render_generic_cases("datadog", r#"{ scheme = "bearer", secrets = ["env:DATADOG_TOKEN"] }"#);
}

#[test]
fn generic_example_fixtures_render_as_expected() {
    render_generic_cases("generic-example", r#"{ scheme = "bearer", secrets = ["env:EXAMPLE_TOKEN"] }"#);
}
