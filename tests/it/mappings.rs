//! Every shipped mapping against every fixture: snapshots of exactly what would be sent.
//!
//! `fixtures/<source>/events.toml` lists each fixture with its headers and how many events it
//! must produce; the snapshots (reviewed by hand, `cargo insta review`) hold the events.

use crate::helpers::sns_kit::notification;
use crate::helpers::{
    base_config, config_from, generic_source, github_signature, root, shipped_generic_source, shipped_mappings,
    sns_source, ALERTMANAGER_VERIFY, GITHUB_SECRET,
};
use pagerhook::registry::Sources;
use pagerhook::source::{Headers, Incoming, Keep, Offline};
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

/// What applying a source's mapping to a request makes: each event (rule, endpoint, body), or
/// the refusal or mapping error, as text.
fn outcome(hook: &pagerhook::registry::Hook, req: Incoming, keep: &Keep) -> Result<Vec<serde_json::Value>, String> {
    let verified = match hook.source().verify_offline(req, keep) {
        Offline::Checked(v) => v.map_err(|e| format!("refused: {e}"))?,
        Offline::NeedsNetwork(_) => panic!("{}: only GitHub and generic sources are checked here", hook.name()),
    };
    if verified.disposition() != &pagerhook::source::Disposition::Map {
        return Ok(Vec::new());
    }
    let rendered = hook.mapping().apply(verified, accepted_at(), hook.max_events_per_request());
    let rendered = rendered.map_err(|e| format!("apply: {e}"))?;
    Ok(rendered
        .iter()
        .map(|r| serde_json::json!({ "rule": r.rule, "endpoint": r.event.kind().path(), "event": r.event.body() }))
        .collect())
}

/// One fixture file with the headers and query it is sent with.
struct Fixture {
    name: String,
    headers: Vec<(String, String)>,
    query: String,
    body: Vec<u8>,
}

/// Every fixture of every source.
fn every_fixture() -> Vec<Fixture> {
    let mut all = Vec::new();
    for dir in std::fs::read_dir(root().join("fixtures")).unwrap() {
        let folder = dir.unwrap().path();
        let cases: BTreeMap<String, Case> =
            toml::from_str(&std::fs::read_to_string(folder.join("events.toml")).unwrap()).unwrap();
        for (name, case) in cases {
            let mut headers: Vec<(String, String)> = case.headers.into_iter().collect();
            headers.push(("content-type".into(), "application/json".into()));
            if let Some(e) = &case.event {
                headers.push(("x-github-event".into(), e.clone()));
            }
            let body = std::fs::read(folder.join(&case.file)).unwrap();
            all.push(Fixture { name: format!("{}/{name}", folder.display()), headers, query: case.query, body });
        }
    }
    all
}

/// The accept path parses only the body paths a source's mapping can read: for every shipped
/// mapping and every fixture, that gives exactly the events (or errors) the full parse gives.
#[test]
fn every_shipped_mapping_makes_the_same_events_of_every_fixture_from_the_pruned_parse() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = base_config(dir.path(), "http://127.0.0.1:9");
    let mut names = vec!["github".to_string()];
    for path in shipped_mappings(&root()) {
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        config += &generic_source(&format!("as-{stem}"), r#"{ scheme = "none" }"#, &path);
        names.push(format!("as-{stem}"));
    }
    let (sources, _) = Sources::build(&config_from(&config, dir.path())).unwrap_or_else(|e| panic!("{e:#?}"));
    let (mut pruned_somewhere, mut events) = (false, 0);
    for name in &names {
        let hook = sources.get(name).unwrap();
        pruned_somewhere |= !hook.body_paths().is_everything();
        for Fixture { name: fixture, mut headers, query, body } in every_fixture() {
            headers.push(("X-Hub-Signature-256".into(), github_signature(GITHUB_SECRET, &body)));
            let req = Incoming { headers: Headers::from_pairs(headers), query, body: body.into() };
            let full = outcome(hook, req.clone(), &Keep::everything());
            let pruned = outcome(hook, req, hook.body_paths());
            assert_eq!(pruned, full, "source {name}, fixture {fixture}");
            events += full.map(|e| e.len()).unwrap_or(0);
        }
    }
    assert!(pruned_somewhere, "no shipped mapping reads less than the whole body");
    assert!(events > 50, "only {events} events: the comparison is nearly empty");
}

/// Each shipped mapping's header recommends what to do with a payload none of its rules
/// matches, and the commented sources in pagerhook.toml follow it.
#[test]
fn every_shipped_mapping_recommends_an_unmatched_choice_that_pagerhook_toml_follows() {
    let config = std::fs::read_to_string(root().join("pagerhook.toml")).unwrap();
    for path in crate::helpers::shipped_mappings(&root()) {
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let choice = text
            .lines()
            .take_while(|l| l.starts_with('#'))
            .find_map(|l| l.strip_prefix("# Recommended source setting: unmatched = "))
            .and_then(|rest| rest.split('"').nth(1))
            .unwrap_or_else(|| panic!("{name}: no recommended unmatched in its header"));
        assert!(["ignore", "keep"].contains(&choice), "{name}: {choice}");
        let Some(at) = config.find(&format!("mappings/{name}\"]")) else { continue };
        let block = &config[at..];
        let block = &block[..block.find("[[source]]").unwrap_or(block.len())];
        assert!(block.contains(&format!("unmatched = \"{choice}\"")), "pagerhook.toml's {name} source: {block}");
    }
}

/// pagerhook.toml's suggested Alertmanager source pages per group, at most as often as
/// Alertmanager's own PagerDuty receiver (bench/oncall.sh measures it), and its Alertmanager and
/// Grafana sources damp flaps with a delay of group_interval + group_wait (README.md).
#[test]
fn pagerhook_toml_suggests_the_grouped_alertmanager_mapping_and_flap_damping() {
    let config = std::fs::read_to_string(root().join("pagerhook.toml")).unwrap();
    let block = |name: &str| {
        let at = config.find(&format!("# name = \"{name}\"")).unwrap_or_else(|| panic!("no {name} source"));
        let rest = &config[at..];
        rest[..rest.find("# [[source]]").unwrap_or(rest.len())].to_string()
    };
    let alertmanager = block("alertmanager");
    assert!(alertmanager.contains("# mappings = [\"mappings/alertmanager-grouped.toml\"]"), "{alertmanager}");
    for source in [alertmanager, block("grafana")] {
        assert!(source.contains("# resolve_delay = \"6m\""), "{source}");
    }
}
