use super::*;
use crate::config::Secret;
use crate::registry::Sources;
use crate::source::Headers;

const KEY: &str = "0123456789abcdef0123456789abcdef";
const TEAM: &str = "abcdef0123456789abcdef0123456789";

fn keys() -> RoutingKeys {
    let k = |s: &str| RoutingKey::parse(Secret::new(s)).unwrap();
    RoutingKeys { default: Some(k(KEY)), named: BTreeMap::from([("team-a".to_string(), k(TEAM))]) }
}

/// `text` loaded as the one mapping file `m.toml`: the mapping and its warnings.
fn load_with(text: &str, keys: RoutingKeys) -> Result<(Mapping, Vec<String>), Vec<LoadError>> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.toml");
    std::fs::write(&p, text).unwrap();
    Mapping::load(&[p], keys)
}

/// `text` loaded with the test routing keys; the errors as text. Also the path tests' loader.
pub(super) fn load(text: &str) -> Result<Mapping, Vec<String>> {
    load_with(text, keys()).map(|(m, _)| m).map_err(|e| e.iter().map(ToString::to_string).collect())
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
    sources.get("gh").unwrap().source().trusted(h, "team=a", body.to_string().into()).unwrap()
}

/// When the test payloads were accepted: 2026-01-02T03:04:05.678Z.
fn accepted() -> SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_767_323_045_678)
}

fn apply(text: &str, body: serde_json::Value) -> Result<Vec<Rendered>, MappingError> {
    match load(text).unwrap_or_else(|e| panic!("{e:#?}")).apply(verified(body), accepted(), 1000) {
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

/// The failing value's place is named from the nesting (built only when one fails).
#[test]
fn a_failing_custom_details_value_names_where_it_is() {
    let rule = r#"[[rule]]
name = "r"
emit = "change"
summary = "s"
custom_details = { ok = "{{body.t}}", nested = { list = [3, "{{upper body.missing}}"] } }
"#;
    let err = apply(rule, serde_json::json!({"t": "x"})).unwrap_err();
    assert_eq!(err.field, "custom_details.nested.list[1]");
    assert!(err.message.contains("upper"), "{}", err.message);
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
    let r = mapping.apply(verified(items(4)), accepted(), 3);
    assert_eq!(r.unwrap_err(), ApplyError::TooManyEvents { at_least: 4, max: 3 });
    // Within the cap the items are rendered (and here fail).
    assert!(matches!(mapping.apply(verified(items(3)), accepted(), 3), Err(ApplyError::Rule(_))));
    // Events of plain rules count too: two items and the change event make three.
    let ok = rule.replace("{{item.missing}}", "{{item.status}}");
    let mapping = load(&ok).unwrap();
    assert_eq!(mapping.apply(verified(items(2)), accepted(), 3).unwrap().len(), 3);
    assert_eq!(
        mapping.apply(verified(items(2)), accepted(), 2).unwrap_err(),
        ApplyError::TooManyEvents { at_least: 3, max: 2 }
    );
}

/// (`{{item}}` outside a `for_each` rule is refused at load: the later rule looks it up.)
#[test]
fn for_each_items_do_not_leak_into_later_rules() {
    let rules = r#"[[rule]]
name = "each"
for_each = "body.alerts"
emit = "change"
summary = "{{item.id}}"

[[rule]]
name = "after"
when = "{{lookup this 'item'}}"
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
fn change_rules_aimed_at_a_ruleset_key_are_refused() {
    let deploys = "[[rule]]\nname = \"deploys\"\nemit = \"change\"\nsummary = \"s\"\n";
    let ruleset = RoutingKey::parse(Secret::new("R0123456789abcdef0123456789abcde")).unwrap();
    let errors =
        load_with(deploys, RoutingKeys { default: Some(ruleset.clone()), named: BTreeMap::new() }).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let error = errors[0].to_string();
    assert!(error.contains("rule 'deploys'") && error.contains("ruleset key (R…)"), "{error}");
    let named = RoutingKeys { default: keys().default, named: BTreeMap::from([("rules".to_string(), ruleset)]) };
    let errors = load_with(&format!("{deploys}routing_key = \"rules\"\n"), named.clone()).unwrap_err();
    assert!(errors[0].to_string().contains("routing key \"rules\" is a ruleset key"), "{errors:?}");
    // Alerts may go there, and change events to a service's key.
    let alert = "[[rule]]\nname = \"a\"\nemit = \"alert\"\nsource = \"s\"\nsummary = \"s\"\nrouting_key = \"rules\"\n";
    assert!(load_with(alert, named).is_ok());
    let (_, warnings) = load_with(deploys, keys()).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn each_trigger_without_dedup_key_in_a_source_that_resolves_is_warned_about() {
    let text = "[[rule]]\nname = \"keyed\"\nemit = \"alert\"\ndedup_key = \"k\"\nsource = \"s\"\nsummary = \"s\"\n\n\
                [[rule]]\nname = \"unkeyed\"\nemit = \"alert\"\nsource = \"s\"\nsummary = \"s\"\n\n\
                [[rule]]\nname = \"also unkeyed\"\nemit = \"alert\"\naction = \"trigger\"\nsource = \"s\"\nsummary = \"s\"\n\n\
                [[rule]]\nname = \"ok\"\nemit = \"alert\"\naction = \"resolve\"\ndedup_key = \"k\"\nsource = \"s\"\nsummary = \"s\"\n";
    let (_, warnings) = load_with(text, keys()).unwrap();
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    assert!(warnings[0].contains("rule 'unkeyed' triggers without dedup_key"), "{warnings:#?}");
    assert!(warnings[1].contains("rule 'also unkeyed' triggers without dedup_key"), "{warnings:#?}");
    // Without a resolve there is no key to match, and never_resolves says what to do.
    let (_, warnings) = load_with(&text[..text.find("[[rule]]\nname = \"ok\"").unwrap()], keys()).unwrap();
    assert!(warnings.iter().all(|w| !w.contains("triggers without dedup_key")), "{warnings:#?}");
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

#[test]
fn an_acknowledge_or_resolve_rule_without_dedup_key_is_refused_at_load() {
    for action in ["resolve", "acknowledge", "{{#if body.ok}}resolve{{else}}trigger{{/if}}"] {
        let rule = format!(
            "[[rule]]\nname = \"all clear\"\nemit = \"alert\"\naction = '{action}'\nsource = \"s\"\nsummary = \"s\"\n"
        );
        let errors = load(&rule).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("m.toml line 1: rule 'all clear'"), "{errors:?}");
        assert!(errors[0].contains("needs dedup_key"), "{errors:?}");
        let with_key = rule.replace("summary", "dedup_key = \"k\"\nsummary");
        assert!(load(&with_key).is_ok(), "{action}");
    }
    // A trigger may leave it out: its key is derived from the payload.
    assert!(load("[[rule]]\nname = \"t\"\nemit = \"alert\"\naction = \"trigger\"\nsource = \"s\"\nsummary = \"s\"\n")
        .is_ok());
}

#[test]
fn a_resolve_read_from_the_payload_without_dedup_key_fails_when_rendered() {
    let rule =
        "[[rule]]\nname = \"r\"\nemit = \"alert\"\naction = \"{{body.what}}\"\nsource = \"s\"\nsummary = \"s\"\n";
    let err = apply(rule, serde_json::json!({"what": "resolve"})).unwrap_err();
    assert_eq!((err.rule.as_str(), err.field.as_str()), ("r", "dedup_key"));
    let out = apply(rule, serde_json::json!({"what": "trigger"})).unwrap();
    assert!(out[0].event.dedup_key().unwrap().as_str().starts_with("pagerhook-"));
}

#[test]
fn events_without_a_timestamp_carry_the_time_the_webhook_was_accepted() {
    let rules = r#"
[[rule]]
name = "a"
emit = "alert"
source = "s"
summary = "s"
[[rule]]
name = "c"
emit = "change"
summary = "s"
[[rule]]
name = "own"
emit = "change"
summary = "s"
timestamp = "{{body.at}}"
"#;
    let out = apply(rules, serde_json::json!({"at": "2021-03-16T17:03:27Z"})).unwrap();
    assert_eq!(out[0].event.body()["payload"]["timestamp"], "2026-01-02T03:04:05.678Z");
    assert_eq!(out[1].event.body()["payload"]["timestamp"], "2026-01-02T03:04:05.678Z");
    assert_eq!(out[2].event.body()["payload"]["timestamp"], "2021-03-16T17:03:27Z", "the mapping's own wins");
    // A resolve has no payload to carry one.
    let resolve = "[[rule]]\nname = \"r\"\nemit = \"alert\"\naction = \"resolve\"\ndedup_key = \"k\"\nsource = \"s\"\nsummary = \"s\"\n";
    assert!(apply(resolve, serde_json::json!({})).unwrap()[0].event.body().get("payload").is_none());
}

#[test]
fn a_mapping_that_triggers_but_never_resolves_is_warned_about() {
    let warnings = |text: &str| load_with(text, keys()).unwrap().1;
    let trigger = "[[rule]]\nname = \"t\"\nemit = \"alert\"\nsource = \"s\"\nsummary = \"s\"\ndedup_key = \"k\"\n";
    let w = warnings(trigger);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("m.toml") && w[0].contains("no rule acknowledges or resolves"), "{w:?}");
    let resolve = "[[rule]]\nname = \"r\"\nemit = \"alert\"\naction = \"resolve\"\nsource = \"s\"\nsummary = \"s\"\ndedup_key = \"k\"\n";
    assert!(warnings(&format!("{trigger}{resolve}")).is_empty());
    // One rule choosing the action from the payload can resolve; change events open nothing.
    let chosen = trigger
        .replace("emit = \"alert\"", "emit = \"alert\"\naction = '{{#if body.ok}}resolve{{else}}trigger{{/if}}'");
    assert!(warnings(&chosen).is_empty());
    let dynamic = trigger.replace("emit = \"alert\"", "emit = \"alert\"\naction = '{{body.action}}'");
    assert!(warnings(&dynamic).is_empty());
    assert!(warnings("[[rule]]\nname = \"d\"\nemit = \"change\"\nsummary = \"s\"\n").is_empty());
}

#[test]
fn rfc3339_reads_epoch_seconds_or_milliseconds_and_time_strings_with_any_offset() {
    use helpers::to_rfc3339;
    use serde_json::json as j;
    for (input, want) in [
        (j!(1715679067), "2024-05-14T09:31:07Z"),
        (j!(1715679067123u64), "2024-05-14T09:31:07.123Z"),
        (j!("1715679067000"), "2024-05-14T09:31:07Z"),
        (j!("2024-05-14 09:31:07 UTC"), "2024-05-14T09:31:07Z"),
        (j!("2024-05-14 11:31:07 +0200"), "2024-05-14T09:31:07Z"),
        (j!("2024-05-14T04:31:07-05:00"), "2024-05-14T09:31:07Z"),
        (j!("2024-05-14T09:31:08.201+0000"), "2024-05-14T09:31:08.201Z"),
        (j!("2024-05-14T09:31:07Z"), "2024-05-14T09:31:07Z"),
    ] {
        assert_eq!(to_rfc3339(&input).as_deref(), Some(want), "{input}");
    }
    for bad in [j!("yesterday"), j!(""), j!(null), j!({"a": 1})] {
        assert_eq!(to_rfc3339(&bad), None, "{bad}");
    }
}

#[test]
fn first_https_url_sha256_and_pluck() {
    use helpers::first_https_url_in;
    assert_eq!(
        first_https_url_in("CPU high. Runbook: https://wiki.example.com/rb/cpu?x=1. Also http://old"),
        Some("https://wiki.example.com/rb/cpu?x=1")
    );
    assert_eq!(first_https_url_in("see (https://a.example/b) now"), Some("https://a.example/b"));
    assert_eq!(first_https_url_in("http://only.plain.example"), None);
    let out = summary(
        r#"{{truncate (sha256 body.s) 8 marker=""}}|{{join (pluck body.m "a.b") ","}}|{{lookup (pluck body.m "a.b") 0}}"#,
        serde_json::json!({"s": "x", "m": [{"c": 1}, {"a": {"b": "one"}}, {"a": {"b": "two"}}]}),
    );
    assert_eq!(out, "2d711642|one,two|one");
}

#[test]
fn count_counts_the_elements_whose_field_equals_a_value() {
    let alerts = serde_json::json!({"a": [{"status": "firing"}, {"status": "resolved"}, {"status": "firing"}, {"x": 1}], "n": 3});
    let out = summary(
        r#"{{count body.a "status" "firing"}}|{{count body.a "status" "gone"}}|{{count body.n "status" "firing"}}"#,
        alerts,
    );
    assert_eq!(out, "2|0|0");
}

#[test]
fn where_keeps_the_elements_whose_field_equals_a_value() {
    let alerts = serde_json::json!({"a": [
        {"status": "firing", "labels": {"severity": "warning"}},
        {"status": "resolved", "labels": {"severity": "critical"}},
        {"status": "firing", "labels": {"severity": "error"}},
        {"x": 1}
    ], "n": 3});
    let out = summary(
        r#"{{join (pluck (where body.a "status" "firing") "labels.severity") ","}}|{{len (where body.a "status" "gone")}}|{{len (where body.n "status" "firing")}}"#,
        alerts,
    );
    assert_eq!(out, "warning,error|0|0");
}

fn load_errors(text: &str) -> Vec<String> {
    match load(text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e,
    }
}

const ALERT: &str = "[[rule]]\nname = \"r\"\nemit = \"alert\"\nsource = \"s\"\n";

#[test]
fn an_unknown_helper_is_a_load_error_with_its_position() {
    let errs = load_errors(&format!("{ALERT}summary = \"disk {{{{upcase body.host}}}}\"\n"));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].contains("rule 'r': summary: line 1, column 6 of the template: unknown helper `upcase`"),
        "{errs:#?}"
    );
    assert!(errs[0].contains("upper"), "lists the helpers that exist: {errs:#?}");
}

#[test]
fn unknown_helpers_are_found_in_blocks_subexpressions_and_when() {
    let text = format!(
        "{ALERT}when = '{{{{and (is_set body.x) true}}}}'\nsummary = \"{{{{#if body.a}}}}{{{{shout body.a}}}}{{{{/if}}}}\"\n"
    );
    let errs = load_errors(&text);
    assert!(errs.iter().any(|e| e.contains("when:") && e.contains("unknown helper `is_set`")), "{errs:#?}");
    assert!(errs.iter().any(|e| e.contains("summary:") && e.contains("unknown helper `shout`")), "{errs:#?}");
}

#[test]
fn a_helper_given_the_wrong_number_of_arguments_is_a_load_error() {
    let errs = load_errors(&format!("{ALERT}summary = \"{{{{truncate body.x}}}} {{{{replace body.y 'a'}}}}\"\n"));
    assert!(errs.iter().any(|e| e.contains("`truncate` takes 2 arguments but is given 1")), "{errs:#?}");
    assert!(errs.iter().any(|e| e.contains("`replace` takes 3 arguments but is given 2")), "{errs:#?}");
}

#[test]
fn every_shipped_helper_use_passes_the_lint() {
    let text = format!(
        "{ALERT}summary = \"{{{{default body.a 'x'}}}} {{{{truncate body.b 10 marker=''}}}} {{{{join (split body.c ',') '-'}}}} {{{{concat 'a' body.d}}}} {{{{len body.e}}}} {{{{first_line body.f}}}} {{{{#each body.g}}}}{{{{this}}}}{{{{/each}}}} {{{{lookup body.h 0}}}} {{{{#unless (or body.i body.j body.k)}}}}n{{{{else}}}}y{{{{/unless}}}}\"\n"
    );
    load(&text).unwrap_or_else(|e| panic!("{e:#?}"));
}

#[test]
fn literal_severity_and_action_are_checked_as_values() {
    let errs = load_errors(&format!("{ALERT}summary = \"s\"\nseverity = \"high\"\naction = \"close\"\n"));
    assert!(
        errs.iter().any(|e| e.contains("severity = \"high\": expected one of critical, error, warning, info")),
        "{errs:#?}"
    );
    assert!(
        errs.iter().any(|e| e.contains("action = \"close\": expected one of trigger, acknowledge, resolve")),
        "{errs:#?}"
    );
    load(&format!("{ALERT}summary = \"s\"\nseverity = \"{{{{default body.sev 'high'}}}}\"\naction = \"resolve\"\ndedup_key = \"k\"\n"))
        .unwrap();
}

#[test]
fn a_template_syntax_error_says_where_in_the_template_in_words() {
    let errs = load_errors(&format!("{ALERT}summary = \"ok\"\ncomponent = \"line one\\n  {{{{body.host\"\nclass = \"{{{{#if body.a}}}}x{{{{/each}}}}\"\n"));
    assert_eq!(errs.len(), 2, "{errs:#?}");
    let e = &errs[0];
    assert!(e.contains("m.toml line 1: rule 'r': component: template syntax error at line 2, column"), "{e}");
    assert!(e.contains("unclosed `{{`"), "{e}");
    assert!(!e.contains("trailing_tilde") && !e.contains("expected"), "no raw parser output: {e}");
    assert!(
        errs[1].contains("class: template syntax error") && errs[1].contains("close it with `{{/if}}`"),
        "{errs:#?}"
    );
}

#[test]
fn every_registered_helper_is_known_to_the_lint() {
    // Registration and the lint's arities must not drift: a helper registered but unknown to
    // the lint would be refused at load, and the reverse would pass `check` and fail every
    // webhook. Both read `helpers::HELPERS`; a call of each registered helper with the fewest
    // arguments it takes passes the lint (`helpers/tests.rs` checks that each is registered).
    let registered: Vec<_> = helpers::HELPERS.iter().filter(|s| matches!(s.handlebars, helpers::Def::Own(_))).collect();
    assert!(registered.len() >= 10, "{registered:?}");
    for s in registered {
        let call = format!("{{{{{} {}}}}}", s.name, vec!["body.x"; s.args.0].join(" "));
        let t = handlebars::template::Template::compile(&call).unwrap();
        assert_eq!(
            lint::template(&t),
            Vec::<String>::new(),
            "helper `{}` is registered but the lint refuses it",
            s.name
        );
    }
}

#[test]
fn load_errors_say_which_file_could_not_be_read_or_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let (missing, broken) = (dir.path().join("missing.toml"), dir.path().join("broken.toml"));
    std::fs::write(&broken, "[[rule]\n").unwrap();
    let errors = Mapping::load(&[missing.clone(), broken.clone()], keys()).unwrap_err();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(matches!(&errors[0], LoadError::Read { path, .. } if *path == missing.display().to_string()), "{errors:?}");
    assert!(
        matches!(&errors[1], LoadError::Syntax { path, .. } if *path == broken.display().to_string()),
        "{errors:?}"
    );
    assert!(errors[1].to_string().starts_with(&format!("{}: ", broken.display())), "{}", errors[1]);
}

/// Two rules whose native forms disagree with their handlebars templates on purpose, to show
/// which renderer ran: `r`'s summary natively reads `body.b` (handlebars `body.a`), and `w`'s
/// condition natively `body.stop` (handlebars `body.go`).
fn diverging() -> Mapping {
    let text = "[[rule]]\nname = \"r\"\nemit = \"change\"\nsummary = \"{{body.a}}\"\n\n\
                [[rule]]\nname = \"w\"\nemit = \"change\"\nwhen = \"{{body.go}}\"\nsummary = \"matched\"\n";
    let mut m = load(text).unwrap();
    let compile = |tpl: &str, strict, paths: &mut native::Paths| {
        native::Native::compile(&handlebars::template::Template::compile(tpl).unwrap(), strict, paths)
    };
    let summary = compile("{{body.b}}", true, &mut m.paths);
    m.rules[0].fields.get_mut("summary").unwrap().native = summary;
    m.rules[1].when.as_mut().unwrap().native = compile("{{body.stop}}", false, &mut m.paths);
    m
}

/// What each rule that matched made its summary.
fn summaries(out: Vec<Rendered>) -> Vec<(String, serde_json::Value)> {
    out.into_iter().map(|r| (r.rule, r.event.body()["payload"]["summary"].clone())).collect()
}

#[test]
fn the_handlebars_renderer_renders_every_template_through_handlebars() {
    let body = || verified(serde_json::json!({ "a": "hb", "b": "native", "go": true, "stop": false }));
    let m = diverging();
    assert_eq!(m.renderer(), Renderer::Native);
    let native = summaries(m.apply(body(), accepted(), 10).unwrap());
    assert_eq!(native, vec![("r".to_string(), serde_json::json!("native"))]);
    let by_handlebars =
        vec![("r".to_string(), serde_json::json!("hb")), ("w".to_string(), serde_json::json!("matched"))];
    assert_eq!(summaries(m.apply_via(Renderer::Handlebars, body(), accepted(), 10).unwrap()), by_handlebars);
    let m = m.rendered_by(Renderer::Handlebars);
    assert_eq!(summaries(m.apply(body(), accepted(), 10).unwrap()), by_handlebars);
    assert_eq!(summaries(m.apply_via(Renderer::Native, body(), accepted(), 10).unwrap()), native);
}

#[test]
fn mapping_native_false_in_the_config_renders_through_handlebars() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.toml"), "").unwrap();
    let renderer = |mapping: &str| {
        let text = format!("{mapping}[pagerduty]\nrouting_key = \"{KEY}\"\n[[source]]\nname = \"gh\"\nkind = \"github\"\nsecrets = [\"x\"]\nmappings = [\"m.toml\"]\n");
        let cfg = crate::config::Config::from_str(&text, &dir.path().join("pagerhook.toml"), &|_| None).unwrap();
        Sources::build(&cfg).unwrap().0.get("gh").unwrap().mapping().renderer()
    };
    assert_eq!(renderer(""), Renderer::Native);
    assert_eq!(renderer("[mapping]\nnative = true\n"), Renderer::Native);
    assert_eq!(renderer("[mapping]\nnative = false\n"), Renderer::Handlebars);
}

/// The tutorial mapping lists every helper (README's list is the table itself, checked by
/// `helpers::tests`) and says what README says of a missing timestamp: a newcomer copies the
/// example, not the README.
#[test]
fn the_example_mapping_and_readme_agree_on_helpers_and_timestamps() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(root.join("mappings/generic-example.toml")).unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let words = |text: &str| -> std::collections::BTreeSet<String> {
        text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map(str::to_string).collect()
    };
    let in_example = example.split_once("#   * Helpers:").unwrap().1.split("\n\n").next().unwrap().to_string();
    let missing: Vec<_> =
        helpers::HELPERS.iter().map(|h| h.name).filter(|h| !words(&in_example).contains(*h)).collect();
    assert!(missing.is_empty(), "mappings/generic-example.toml does not list the helpers {missing:?}");
    assert!(readme.contains("carries the time\n  pagerhook accepted the webhook"), "README changed: update this test");
    assert!(example.contains("the event carries the time\n# pagerhook accepted the webhook"), "{example}");
    assert!(example.contains("timestamp = \"{{rfc3339 "), "the example normalises its timestamp");
}

/// Two rules, the first over `body.alerts` (whose summary reads `item.name`), the second on
/// the body (reading `body.host`).
const ISOLATED: &str = r#"
[[rule]]
name = "each"
emit = "alert"
for_each = "body.alerts"
dedup_key = "a-{{item.id}}"
summary = "{{item.name}}"
source = "s"

[[rule]]
name = "whole"
emit = "alert"
dedup_key = "whole"
summary = "{{body.host}}"
source = "s"
"#;

#[test]
fn each_item_and_rule_maps_on_its_own_and_only_the_failed_ones_are_rendered_again() {
    let m = load(ISOLATED).unwrap();
    let body = serde_json::json!({"alerts": [{"id": 0, "name": "a"}, {"id": 1}, {"id": 2, "name": "c"}]});
    let applied = m.apply_isolated(verified(body.clone()), accepted(), 1000, None).unwrap();
    let keys: Vec<String> = applied.events.iter().map(|r| r.event.dedup_key().unwrap().as_str().to_string()).collect();
    assert_eq!(keys, ["a-0", "a-2"]);
    let failed: Vec<(&str, Option<usize>, &str)> =
        applied.failed.iter().map(|f| (f.at.rule.as_str(), f.at.item, f.error.field.as_str())).collect();
    assert_eq!(failed, [("each", Some(1), "summary"), ("whole", None, "summary")]);
    // `apply` (render, test) still fails on the first.
    let Err(ApplyError::Rule(e)) = m.apply(verified(body.clone()), accepted(), 1000) else { panic!() };
    assert_eq!((e.rule.as_str(), e.field.as_str()), ("each", "summary"));
    // The replay renders what failed, and nothing else.
    let only: Vec<ItemRef> = applied.failed.iter().map(|f| f.at.clone()).collect();
    let mut fixed = body;
    fixed["alerts"][1]["name"] = "b".into();
    fixed["host"] = "db-1".into();
    let again = m.apply_isolated(verified(fixed), accepted(), 1000, Some(&only)).unwrap();
    let keys: Vec<String> = again.events.iter().map(|r| r.event.dedup_key().unwrap().as_str().to_string()).collect();
    assert_eq!((keys, again.failed.len()), (vec!["a-1".to_string(), "whole".to_string()], 0));
}

#[test]
fn an_overview_counts_every_event_with_the_first_summaries_and_the_worst_severity() {
    let rule = "[[rule]]\nname = \"each\"\nemit = \"alert\"\nfor_each = \"body.alerts\"\ndedup_key = \"a-{{item.id}}\"\nsummary = \"alert {{item.id}}\"\nseverity = \"{{item.severity}}\"\nsource = \"s\"\n";
    let alerts: Vec<_> = (0..50)
        .map(|i| serde_json::json!({"id": i, "severity": if i == 40 { "critical" } else { "warning" }}))
        .collect();
    let o = load(rule).unwrap().overview(verified(serde_json::json!({ "alerts": alerts })), accepted()).unwrap();
    assert_eq!((o.events, o.worst), (50, Some(Severity::Critical)));
    assert_eq!(o.summaries, ["alert 0", "alert 1", "alert 2", "alert 3", "alert 4"]);
}

mod newcomer;

#[test]
fn a_rule_s_sequence_travels_with_its_event_and_only_alert_rules_take_one() {
    let rule = |sequence: &str| {
        format!("[[rule]]\nname = \"r\"\nemit = \"alert\"\nsource = \"s\"\nsummary = \"s\"\ndedup_key = \"k\"\nsequence = '{sequence}'\n")
    };
    let out = apply(&rule("{{body.run}}"), serde_json::json!({"run": 17})).unwrap();
    assert_eq!(out[0].event.sequence(), Some(crate::event::Sequence::Number(17)));
    let out = apply(&rule("{{body.at}}"), serde_json::json!({"at": "2024-05-01T10:00:00Z"})).unwrap();
    assert!(matches!(out[0].event.sequence(), Some(crate::event::Sequence::Time(_))));
    // Not a sequence: the event still goes, unchecked, with a note saying so.
    let out = apply(&rule("{{body.at}}"), serde_json::json!({"at": "later"})).unwrap();
    assert_eq!(out[0].event.sequence(), None);
    assert!(out[0].event.notes().iter().any(|n| n.contains("not checked for staleness")), "{:?}", out[0].event.notes());
    // A field the sequence reads missing (a resolved alert without endsAt) holds back
    // nothing either: the resolve goes, unchecked, with a note naming the field.
    let out = apply(&rule("{{body.endsAt}}"), serde_json::json!({"at": "later"})).unwrap();
    assert_eq!(out[0].event.sequence(), None);
    let notes = out[0].event.notes();
    assert!(notes.iter().any(|n| n.contains("sequence not checked") && n.contains("body.endsAt")), "{notes:?}");
    let change = "[[rule]]\nname = \"c\"\nemit = \"change\"\nsummary = \"s\"\nsequence = \"1\"\n";
    let err = load(change).unwrap_err().join("\n");
    assert!(err.contains("sequence is not part of a change event"), "{err}");
}

#[test]
fn rules_giving_one_dedup_key_sequences_of_mixed_types_are_warned_about() {
    let rule = |name: &str, action: &str, sequence: &str| {
        format!("[[rule]]\nname = \"{name}\"\nemit = \"alert\"\naction = \"{action}\"\nsource = \"s\"\nsummary = \"s\"\ndedup_key = \"k/{{{{body.id}}}}\"\nsequence = '{sequence}'\n")
    };
    let warnings = |text: &str| load_with(text, keys()).unwrap().1;
    let number = rule("failed", "trigger", "{{body.workflow_run.run_number}}");
    let time = rule("passed", "resolve", "{{rfc3339 body.workflow_run.updated_at}}");
    let w = warnings(&format!("{number}{time}"));
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("rule 'passed'") && w[0].contains("gives a time") && w[0].contains("rule 'failed'"), "{w:?}");
    let same = rule("passed", "resolve", "{{body.workflow_run.run_number}}");
    assert!(warnings(&format!("{number}{same}")).is_empty());
    // Where the text cannot tell, nothing is said.
    let unknown = rule("passed", "resolve", "{{body.workflow_run.whatever}}");
    assert!(warnings(&format!("{number}{unknown}")).is_empty());
}

#[test]
fn a_files_vars_are_read_as_vars_by_its_templates_in_both_renderers() {
    let text = "[vars]\nerror_workflows = [\"Deploy\", \"Release\"]\n\n[[rule]]\nname = \"r\"\nemit = \"alert\"\nsource = \"s\"\n\
                summary = \"s\"\nseverity = '{{#if (contains vars.error_workflows body.name)}}error{{else}}warning{{/if}}'\n";
    let mapping = load(text).unwrap_or_else(|e| panic!("{e:#?}"));
    for renderer in [Renderer::Native, Renderer::Handlebars] {
        let severity = |name: &str| {
            let out =
                mapping.apply_via(renderer, verified(serde_json::json!({ "name": name })), accepted(), 10).unwrap();
            out[0].event.body()["payload"]["severity"].clone()
        };
        assert_eq!(severity("Deploy"), "error", "{renderer:?}");
        assert_eq!(severity("Lint"), "warning", "{renderer:?}");
    }
}

#[test]
fn a_var_the_file_does_not_set_is_refused_at_load() {
    let text = "[vars]\nerror_workflows = []\n\n[[rule]]\nname = \"r\"\nemit = \"alert\"\nsource = \"s\"\n\
                summary = \"s\"\nwhen = '{{contains vars.error_workflow body.name}}'\n";
    let errors = load(text).unwrap_err();
    assert!(errors[0].contains("[vars] has no `error_workflow` (it has: error_workflows)"), "{errors:#?}");
}

#[test]
fn two_files_that_set_one_var_differently_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.toml"), dir.path().join("b.toml"));
    std::fs::write(&a, "[vars]\npage_levels = [\"fatal\"]\n").unwrap();
    std::fs::write(&b, "[vars]\npage_levels = [\"error\"]\n").unwrap();
    let errors = Mapping::load(&[a.clone(), a.clone()], keys()).map(|_| ()).map_err(|e| e.len());
    assert_eq!(errors, Ok(()), "the same value twice is one setting");
    let errors = Mapping::load(&[a, b], keys()).unwrap_err();
    assert!(errors[0].to_string().contains("[vars] page_levels"), "{errors:#?}");
}

#[test]
fn a_rule_s_escalate_travels_with_its_event_only_alert_rules_take_it_and_a_rule_that_never_triggers_is_warned() {
    let rule = |action: &str, escalate: &str| {
        format!("[[rule]]\nname = \"r\"\nemit = \"alert\"\nsource = \"s\"\nsummary = \"s\"\ndedup_key = \"k\"\naction = \"{action}\"\n{escalate}")
    };
    let out = apply(&rule("trigger", "escalate = true\n"), serde_json::json!({})).unwrap();
    assert!(out[0].event.escalates());
    let out = apply(&rule("trigger", ""), serde_json::json!({})).unwrap();
    assert!(!out[0].event.escalates(), "off by default");
    let warnings = |text: &str| load_with(text, keys()).unwrap().1;
    assert!(warnings(&rule("{{body.action}}", "escalate = true\n")).is_empty(), "may trigger");
    let w = warnings(&rule("resolve", "escalate = true\n"));
    assert!(w.iter().any(|w| w.contains("rule 'r' sets escalate = true but never triggers")), "{w:?}");
    let change = "[[rule]]\nname = \"c\"\nemit = \"change\"\nsummary = \"s\"\nescalate = true\n";
    let err = load(change).unwrap_err().join("\n");
    assert!(err.contains("escalate is not part of a change event"), "{err}");
    assert!(load(&rule("trigger", "escalate = \"yes\"\n")).is_err(), "a boolean");
}
