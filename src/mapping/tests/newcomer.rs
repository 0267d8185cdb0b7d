//! What a newcomer's first mapping trips over (issue 34): a mistyped root, a hint that hides a
//! typo, an object where text is expected, a `when` on a body of another JSON shape.

use super::*;

const ALERT: &str = "[[rule]]\nname = \"r\"\nemit = \"alert\"\nsource = \"s\"\n";

#[test]
fn an_unknown_root_is_refused_at_load_naming_file_rule_field_and_the_roots() {
    let errs = load_errors(&format!(
        "{ALERT}when = '{{{{eq bdy.status \"down\"}}}}'\nsummary = \"{{{{bdy.monitor}}}} down\"\n"
    ));
    assert_eq!(errs.len(), 2, "{errs:#?}");
    for (field, path) in [("when", "bdy.status"), ("summary", "bdy.monitor")] {
        let e = errs.iter().find(|e| e.contains(&format!("rule 'r': {field}:"))).unwrap_or_else(|| panic!("{errs:#?}"));
        assert!(e.contains("m.toml line 1"), "{e}");
        assert!(e.contains(&format!("unknown root in `{path}`")), "{e}");
        assert!(e.contains("body, headers, query, source, sns"), "names the roots: {e}");
    }
    // `item` only where `for_each` sets it; inside `#each` paths are the item's.
    let errs = load_errors(&format!("{ALERT}summary = \"{{{{item.name}}}}\"\n"));
    assert!(errs[0].contains("`item` is set only in a rule with `for_each`"), "{errs:#?}");
    let ok = format!(
        "{ALERT}for_each = \"body.list\"\nsummary = \"{{{{item.name}}}} {{{{#each body.tags}}}}{{{{name}}}}{{{{/each}}}} {{{{headers.x-a}}}} {{{{query.q}}}} {{{{source}}}} {{{{this.body.a}}}}\"\n"
    );
    load(&ok).unwrap_or_else(|e| panic!("{e:#?}"));
}

/// The hint for a missing field pastes into a double-quoted TOML value, and is not given for
/// a name one letter away from a field the payload has: that is a typo, and `default` would
/// hide it.
#[test]
fn the_missing_field_hint_pastes_into_toml_and_does_not_suggest_a_typo() {
    let rule = format!("{ALERT}summary = \"{{{{body.note}}}}\"\n");
    let err = apply(&rule, serde_json::json!({ "monitor": "db" })).unwrap_err();
    let hint = err.message.split("write ").nth(1).unwrap_or_else(|| panic!("{}", err.message));
    let hint = hint.trim_end_matches(')').trim_end_matches(" if it is optional");
    let pasted = format!("{ALERT}summary = \"{hint}\"\n");
    let out = apply(&pasted, serde_json::json!({ "monitor": "db" })).unwrap_or_else(|e| panic!("{pasted}: {e}"));
    assert_eq!(out.len(), 1);
    let rule = format!("{ALERT}summary = \"{{{{body.monitr}}}}\"\n");
    let err = apply(&rule, serde_json::json!({ "monitor": "db" })).unwrap_err();
    assert!(err.message.contains("did you mean body.monitor?"), "{}", err.message);
    assert!(!err.message.contains("default"), "{}", err.message);
}

/// `{{body.monitor}}` on an object used to write `[object]`, so that two payloads shared the
/// dedup_key `uptime/[object]`: it is a mapping error naming the field, in both renderers.
#[test]
fn an_object_rendered_into_a_text_field_is_a_mapping_error_in_both_renderers() {
    let rule = format!("{ALERT}dedup_key = \"uptime/{{{{body.monitor}}}}\"\nsummary = \"s {{{{#if body.x}}}}{{{{body.x}}}}{{{{/if}}}}\"\n");
    let m = load(&rule).unwrap();
    for renderer in [Renderer::Native, Renderer::Handlebars] {
        let body = serde_json::json!({ "monitor": { "id": 1 } });
        let Err(ApplyError::Rule(e)) = m.apply_via(renderer, verified(body), accepted(), 10) else { panic!() };
        assert_eq!(e.field, "dedup_key", "{renderer:?}");
        assert!(
            e.message.contains("body.monitor is an object") && e.message.contains("{{json body.monitor}}"),
            "{}",
            e.message
        );
        let body = serde_json::json!({ "monitor": "m", "x": [{ "a": 1 }] });
        let Err(ApplyError::Rule(e)) = m.apply_via(renderer, verified(body), accepted(), 10) else { panic!() };
        assert_eq!(e.field, "summary", "{renderer:?}");
        assert!(e.message.contains("body.x is a list of objects"), "{}", e.message);
        // A list of texts still reads as one.
        let body = serde_json::json!({ "monitor": "m", "x": ["a", "b"] });
        let out = m.apply_via(renderer, verified(body), accepted(), 10).unwrap();
        assert_eq!(out[0].event.body()["payload"]["summary"], "s [a, b]");
    }
}

/// A `when` meets every payload of its source, whatever its JSON shape: a list body (or a
/// text, a number) makes it false, never an error with handlebars' name for the template.
#[test]
fn when_is_false_on_a_body_of_any_json_shape() {
    let rule =
        format!("{ALERT}when = '{{{{eq body.monitor.status \"down\"}}}}'\nsummary = \"{{{{body.monitor.name}}}}\"\n");
    let m = load(&rule).unwrap();
    for body in [
        serde_json::json!([{ "monitor": 1 }]),
        serde_json::json!("text"),
        serde_json::json!(3),
        serde_json::json!({ "monitor": [1] }),
    ] {
        for renderer in [Renderer::Native, Renderer::Handlebars] {
            let out = m.apply_via(renderer, verified(body.clone()), accepted(), 10);
            assert!(matches!(&out, Ok(v) if v.is_empty()), "{renderer:?} on {body}: {out:?}");
        }
    }
    // A value template on such a body fails in words, without the template's internal name.
    let rule = format!("{ALERT}summary = \"{{{{body.monitor.name}}}}\"\n");
    let err = apply(&rule, serde_json::json!([1])).unwrap_err();
    assert!(!err.message.contains('#'), "{}", err.message);
    assert!(err.message.contains("a list where the template expects an object"), "{}", err.message);
}
