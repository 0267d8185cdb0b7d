//! Every shipped mapping against every fixture: snapshots of exactly what would be sent.
//!
//! `fixtures/<source>/events.toml` lists each fixture with its headers and how many events it
//! must produce; the snapshots (reviewed by hand, `cargo insta review`) hold the events.

use crate::helpers::sns_kit::notification;
use crate::helpers::{base_config, config_from, root, shipped_generic_source, sns_source, ALERTMANAGER_VERIFY};
use pagerhook::registry::Sources;
use pagerhook::source::Headers;
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
    /// The endpoint's query string.
    #[serde(default)]
    query: String,
    expect_events: usize,
}

/// The time every fixture is accepted at, so that snapshots stay the same from run to run:
/// an event whose rule sets no timestamp carries it (2026-01-02T03:04:05.678Z).
fn accepted_at() -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_767_323_045_678)
}

/// Renders every case of `fixtures/<fixtures>/events.toml` through `source` of `config`
/// (parsed in `dir`), each file's bytes passed through `wrap` first.
fn render_cases(source: &str, fixtures: &str, config: &str, dir: &std::path::Path, wrap: impl Fn(Vec<u8>) -> Vec<u8>) {
    let cfg = config_from(config, dir);
    let (sources, warnings) = Sources::build(&cfg).unwrap_or_else(|e| panic!("{e:#?}"));
    assert!(warnings.is_empty(), "{warnings:#?}");
    let src = sources.get(source).unwrap();
    let folder = root().join("fixtures").join(fixtures);
    let cases: BTreeMap<String, Case> =
        toml::from_str(&std::fs::read_to_string(folder.join("events.toml")).unwrap()).unwrap();
    assert!(!cases.is_empty());
    for (name, case) in cases {
        let mut headers: Vec<(String, String)> = case.headers.into_iter().collect();
        headers.push(("content-type".into(), "application/json".into()));
        if let Some(e) = &case.event {
            headers.push(("x-github-event".into(), e.clone()));
        }
        let body = wrap(std::fs::read(folder.join(&case.file)).unwrap());
        let verified = src
            .source()
            .trusted(Headers::from_pairs(headers), &case.query, body.into())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let rendered = match verified.disposition() {
            pagerhook::source::Disposition::Map => src
                .mapping()
                .apply(verified, accepted_at(), src.max_events_per_request())
                .unwrap_or_else(|e| panic!("{name}: {e}")),
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
        insta::assert_json_snapshot!(format!("{fixtures}__{name}"), snapshot);
    }
}

#[test]
fn github_fixtures_render_as_expected() {
    let dir = tempfile::tempdir().unwrap();
    render_cases("github", "github", &base_config(dir.path(), "http://127.0.0.1:9"), dir.path(), |b| b);
}

#[test]
fn sns_messages_render_as_expected() {
    let dir = tempfile::tempdir().unwrap();
    let config = base_config(dir.path(), "http://127.0.0.1:9") + &sns_source(dir.path(), "");
    render_cases("aws", "sns", &config, dir.path(), |b| b);
}

#[test]
fn cloudwatch_alarms_render_as_expected() {
    let dir = tempfile::tempdir().unwrap();
    let config = base_config(dir.path(), "http://127.0.0.1:9") + &sns_source(dir.path(), "");
    // The fixtures are alarms as CloudWatch publishes them; SNS delivers each inside a Notification.
    let wrap = |alarm: Vec<u8>| {
        let msg = notification("cloudwatch-fixture", None, std::str::from_utf8(&alarm).unwrap(), "1");
        serde_json::to_vec(&msg).unwrap()
    };
    render_cases("aws", "cloudwatch", &config, dir.path(), wrap);
}

/// Renders the fixtures of a `kind = "generic"` source on its shipped mapping, configured with
/// the `verify` README.md gives for it (so a README example that stopped parsing fails here).
fn render_generic_cases(source: &str, verify: &str) {
    let dir = tempfile::tempdir().unwrap();
    let config = base_config(dir.path(), "http://127.0.0.1:9") + &shipped_generic_source(source, verify);
    render_cases(source, source, &config, dir.path(), |b| b);
}

#[test]
fn alertmanager_fixtures_render_as_expected() {
    render_generic_cases("alertmanager", ALERTMANAGER_VERIFY);
}

#[test]
fn alertmanager_grouped_fixtures_render_as_expected() {
    render_generic_cases("alertmanager-grouped", ALERTMANAGER_VERIFY);
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
