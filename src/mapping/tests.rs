use super::*;
use crate::config::Secret;
use crate::source::{Headers, Sources};

const KEY: &str = "0123456789abcdef0123456789abcdef";
const TEAM: &str = "abcdef0123456789abcdef0123456789";

fn keys() -> RoutingKeys {
    let k = |s: &str| RoutingKey::parse(Secret::new(s)).unwrap();
    RoutingKeys { default: Some(k(KEY)), named: BTreeMap::from([("team-a".to_string(), k(TEAM))]) }
}

fn load(text: &str) -> Result<Mapping, Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.toml");
    std::fs::write(&p, text).unwrap();
    Mapping::load(&[p], keys()).map(|(m, _)| m)
}

/// A verified request for `body`, built the way `render` builds one.
fn verified(body: serde_json::Value) -> Verified {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.toml"), "").unwrap();
    let cfg = crate::config::Config::from_str(
        &format!("[pagerduty]\nrouting_key = \"{KEY}\"\n[[source]]\nname = \"gh\"\nkind = \"github\"\nsecrets = [\"x\"]\nmappings = [\"m.toml\"]\n"),
        &dir.path().join("pagerhook.toml"),
        &|_| None,
    )
    .unwrap();
    let (sources, _) = Sources::build(&cfg).unwrap();
    let h = Headers::from_pairs([("x-github-event", "push"), ("content-type", "application/json")]);
    sources.get("gh").unwrap().trusted(h, "team=a", body.to_string().into()).unwrap()
}

fn apply(text: &str, body: serde_json::Value) -> Result<Vec<Rendered>, MappingError> {
    match load(text).unwrap_or_else(|e| panic!("{e:#?}")).apply(verified(body), 1000) {
        Ok(out) => Ok(out),
        Err(ApplyError::Rule(e)) => Err(e),
        Err(other) => panic!("{other}"),
    }
}

#[test]
fn a_missing_field_is_an_error_unless_defaulted() {
    let rule = "[[rule]]\nname = \"r\"\nemit = \"alert\"\nsource = \"s\"\nsummary = \"{{body.missing}}\"\n";
    let err = apply(rule, serde_json::json!({})).unwrap_err();
    assert_eq!(err.rule, "r");
    assert_eq!(err.field, "summary");
    assert!(err.message.contains("body.missing is missing"), "{}", err.message);
    let rule = rule.replace("{{body.missing}}", "{{default body.missing 'fallback'}}");
    let out = apply(&rule, serde_json::json!({})).unwrap();
    assert_eq!(out[0].event.body()["payload"]["summary"], "fallback");
}

#[test]
fn when_conditions_tolerate_other_payload_shapes() {
    let rule = "[[rule]]\nname = \"r\"\nwhen = '{{eq body.a.b \"x\"}}'\nemit = \"change\"\nsummary = \"s\"\n";
    assert!(apply(rule, serde_json::json!({"other": 1})).unwrap().is_empty());
    assert_eq!(apply(rule, serde_json::json!({"a": {"b": "x"}})).unwrap().len(), 1);
}

#[test]
fn headers_query_and_source_are_in_the_context() {
    let rule = "[[rule]]\nname = \"r\"\nemit = \"change\"\nsummary = \"{{headers.x-github-event}} {{query.team}} {{source}}\"\n";
    let out = apply(rule, serde_json::json!({})).unwrap();
    assert_eq!(out[0].event.body()["payload"]["summary"], "push a gh");
}

#[test]
fn exact_json_templates_stay_structured_and_nothing_is_escaped() {
    let rule = r#"[[rule]]
name = "r"
emit = "change"
summary = "{{body.t}}"
custom_details = { labels = "{{json body.l}}", text = "n={{json body.l}}", nested = { list = ["{{upper body.t}}", 3] } }
"#;
    let out = apply(rule, serde_json::json!({"t": "<a & \"b\">", "l": [{"n": 1}]})).unwrap();
    let b = out[0].event.body();
    assert_eq!(b["payload"]["summary"], "<a & \"b\">");
    assert_eq!(b["payload"]["custom_details"]["labels"], serde_json::json!([{"n": 1}]));
    assert_eq!(b["payload"]["custom_details"]["text"], "n=[{\"n\":1}]");
    assert_eq!(b["payload"]["custom_details"]["nested"]["list"], serde_json::json!(["<A & \"B\">", 3]));
}

/// The summary a one-rule change mapping renders from `summary` for `body`.
fn summary(summary: &str, body: serde_json::Value) -> serde_json::Value {
    let rule = format!("[[rule]]\nname = \"r\"\nemit = \"change\"\nsummary = '{summary}'\n");
    apply(&rule, body).unwrap()[0].event.body()["payload"]["summary"].clone()
}

#[test]
fn split_and_url_encode_take_arns_apart_and_make_links() {
    let body =
        serde_json::json!({"arn": "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:a b", "name": "CPU > 90% / web#1"});
    let out = summary(r#"{{lookup (split body.arn ":") 3}}|{{url_encode body.name}}"#, body);
    assert_eq!(out, "eu-west-1|CPU%20%3E%2090%25%20%2F%20web%231");
}

#[test]
fn helpers_do_what_their_names_say() {
    let template = r#"{{lower body.s}}|{{upper body.s}}|{{truncate body.s 4}}|{{truncate body.s 2 marker=""}}|{{first_line body.m}}|{{join body.a ", "}}|{{replace body.s "b" "x"}}|{{concat body.s "-" 1}}|{{#if (contains body.a "y")}}has{{/if}}"#;
    let out = summary(template, serde_json::json!({"s": "AbCdE", "a": ["x", "y"], "m": "subject\n\nbody"}));
    assert_eq!(out, "abcde|ABCDE|AbC…|Ab|subject|x, y|AxCdE|AbCdE-1|has");
}

#[test]
fn for_each_emits_one_event_per_element_with_the_parent_reachable() {
    let rule = r#"[[rule]]
name = "each"
for_each = "body.alerts"
emit = "alert"
action = '{{#if (eq item.status "resolved")}}resolve{{else}}trigger{{/if}}'
dedup_key = "{{item.id}}"
summary = "{{body.group}}: {{item.id}}"
source = "am"
"#;
    let body = serde_json::json!({"group": "g", "alerts": [{"id": "a", "status": "firing"}, {"id": "b", "status": "resolved"}]});
    let out = apply(rule, body).unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].event.body()["payload"]["summary"], "g: a");
    assert_eq!(out[1].event.action(), Some(crate::event::Action::Resolve));
}

#[test]
fn a_for_each_over_more_items_than_the_cap_is_refused_without_rendering_one() {
    // Rendering any item would fail: its summary reads a field no item has.
    let rule = r#"[[rule]]
name = "each"
for_each = "body.alerts"
emit = "alert"
summary = "{{item.missing}}"
source = "am"

[[rule]]
name = "one more"
emit = "change"
summary = "after"
"#;
    let mapping = load(rule).unwrap();
    let items = |n: usize| serde_json::json!({ "alerts": vec![serde_json::json!({"status": "x"}); n] });
    let r = mapping.apply(verified(items(4)), 3);
    assert_eq!(r.unwrap_err(), ApplyError::TooManyEvents { at_least: 4, max: 3 });
    // Within the cap the items are rendered (and here fail).
    assert!(matches!(mapping.apply(verified(items(3)), 3), Err(ApplyError::Rule(_))));
    // Events of plain rules count too: two items and the change event make three.
    let ok = rule.replace("{{item.missing}}", "{{item.status}}");
    let mapping = load(&ok).unwrap();
    assert_eq!(mapping.apply(verified(items(2)), 3).unwrap().len(), 3);
    assert_eq!(mapping.apply(verified(items(2)), 2).unwrap_err(), ApplyError::TooManyEvents { at_least: 3, max: 2 });
}

#[test]
fn for_each_items_do_not_leak_into_later_rules() {
    let rules = r#"[[rule]]
name = "each"
for_each = "body.alerts"
emit = "change"
summary = "{{item.id}}"

[[rule]]
name = "after"
when = "{{item}}"
emit = "change"
summary = "stale item"
"#;
    let out = apply(rules, serde_json::json!({"alerts": [{"id": "a"}, {"id": "b"}]})).unwrap();
    let summaries: Vec<_> = out.iter().map(|r| r.event.body()["payload"]["summary"].clone()).collect();
    assert_eq!(summaries, ["a", "b"]);
}

#[test]
fn an_empty_action_skips_the_event_and_final_stops_the_rules() {
    let rules = r#"[[rule]]
name = "skip"
emit = "alert"
action = "{{#if body.page}}trigger{{/if}}"
summary = "s"
source = "s"

[[rule]]
name = "first"
emit = "change"
summary = "one"
final = true

[[rule]]
name = "never"
emit = "change"
summary = "two"
"#;
    let out = apply(rules, serde_json::json!({"page": false})).unwrap();
    assert_eq!(out.iter().map(|r| r.rule.as_str()).collect::<Vec<_>>(), vec!["first"]);
}

#[test]
fn derived_dedup_keys_are_deterministic_per_payload() {
    let rule = "[[rule]]\nname = \"r\"\nemit = \"alert\"\nsummary = \"s\"\nsource = \"s\"\n";
    let a = apply(rule, serde_json::json!({"x": 1})).unwrap();
    let b = apply(rule, serde_json::json!({"x": 1})).unwrap();
    let c = apply(rule, serde_json::json!({"x": 2})).unwrap();
    assert_eq!(a[0].event.dedup_key(), b[0].event.dedup_key());
    assert_ne!(a[0].event.dedup_key(), c[0].event.dedup_key());
}

#[test]
fn routing_keys_are_chosen_by_name_from_config() {
    let rule = "[[rule]]\nname = \"r\"\nemit = \"change\"\nsummary = \"s\"\nrouting_key = \"{{body.team}}\"\n";
    let out = apply(rule, serde_json::json!({"team": "team-a"})).unwrap();
    assert_eq!(out[0].event.routing_key().expose(), TEAM);
    let err = apply(rule, serde_json::json!({"team": "team-z"})).unwrap_err();
    assert!(err.message.contains("\"team-z\" is not a name in [pagerduty.routing_keys]"), "{err}");
    let fixed = "[[rule]]\nname = \"r\"\nemit = \"change\"\nsummary = \"s\"\nrouting_key = \"nobody\"\n";
    let errs = load(fixed).unwrap_err();
    assert!(errs[0].contains("routing_key \"nobody\""), "{errs:?}");
}

#[test]
fn compile_errors_name_file_line_rule_and_field_and_all_are_reported() {
    let text = "[[rule]]\nname = \"a\"\nemit = \"alert\"\nsummary = \"{{#if}}\"\nsource = \"s\"\n\n[[rule]]\nname = \"b\"\nemit = \"change\"\nseverity = \"info\"\nsummary = \"s\"\n\n[[rule]]\nname = \"c\"\nemit = \"alert\"\nsummary = \"s\"\nbogus = 1\n";
    // An unknown key is a TOML error naming key and line; it stops parsing of that file.
    let all = load(text).unwrap_err().join("\n");
    assert!(all.contains("line 17") && all.contains("bogus"), "{all}");
    let text = "[[rule]]\nname = \"a\"\nemit = \"alert\"\nsummary = \"{{#if}}\"\nsource = \"s\"\n\n[[rule]]\nname = \"b\"\nemit = \"change\"\nseverity = \"info\"\nsummary = \"s\"\n";
    let all = load(text).unwrap_err().join("\n");
    assert!(all.contains("line 1: rule 'a': summary"), "{all}");
    assert!(all.contains("line 7: rule 'b': severity is not part of a change event"), "{all}");
}

#[test]
fn change_rules_aimed_at_a_ruleset_key_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.toml");
    std::fs::write(&p, "[[rule]]\nname = \"deploys\"\nemit = \"change\"\nsummary = \"s\"\n").unwrap();
    let ruleset = RoutingKey::parse(Secret::new("R0123456789abcdef0123456789abcde")).unwrap();
    let (_, warnings) =
        Mapping::load(std::slice::from_ref(&p), RoutingKeys { default: Some(ruleset), named: BTreeMap::new() })
            .unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("rule 'deploys'") && warnings[0].contains("ruleset key"), "{warnings:?}");
    let (_, warnings) = Mapping::load(&[p], keys()).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn a_link_whose_href_renders_empty_is_left_out_without_a_note() {
    let rule = r#"[[rule]]
name = "r"
emit = "alert"
source = "s"
summary = "s"
links = [{ href = '{{default body.runbook ""}}', text = "Runbook" }, { href = "{{body.url}}", text = "Page" }]
"#;
    let out = apply(rule, serde_json::json!({"url": "https://example.com/a"})).unwrap();
    assert_eq!(out[0].event.body()["links"], serde_json::json!([{ "href": "https://example.com/a", "text": "Page" }]));
    assert!(out[0].event.notes().is_empty(), "{:?}", out[0].event.notes());
    let out = apply(rule, serde_json::json!({"url": "https://example.com/a", "runbook": "https://rb/1"})).unwrap();
    assert_eq!(out[0].event.body()["links"].as_array().unwrap().len(), 2);
}
