use super::super::helpers::HELPERS;
use super::*;
use handlebars::{Context, Handlebars};
use proptest::prelude::*;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Keys of a rule that are not value templates.
const NOT_TEMPLATES: &[&str] = &["name", "when", "emit", "for_each", "final"];

/// Every rule of the shipped mappings, with its file's name.
fn shipped_rules() -> Vec<(String, toml::Value)> {
    let mut out = Vec::new();
    for path in crate::mapping::shipped_mapping_files(&root()) {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let file: toml::Value = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let rules = file.get("rule").and_then(toml::Value::as_array).cloned().unwrap_or_default();
        out.extend(rules.into_iter().map(|r| (name.clone(), r)));
    }
    out
}

/// Every value template of the shipped mappings, with its rule's `for_each` path.
fn shipped_templates() -> Vec<(String, Option<String>, String)> {
    fn strings(at: &str, v: &toml::Value, out: &mut Vec<(String, String)>) {
        match v {
            toml::Value::String(s) => out.push((at.to_string(), s.clone())),
            toml::Value::Array(a) => a.iter().enumerate().for_each(|(i, v)| strings(&format!("{at}[{i}]"), v, out)),
            toml::Value::Table(t) => t.iter().for_each(|(k, v)| strings(&format!("{at}.{k}"), v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (name, rule) in shipped_rules() {
        let for_each = rule.get("for_each").and_then(toml::Value::as_str).map(str::to_string);
        let mut found = Vec::new();
        for (k, v) in rule.as_table().unwrap().iter().filter(|(k, _)| !NOT_TEMPLATES.contains(&k.as_str())) {
            strings(k, v, &mut found);
        }
        let rule = rule["name"].as_str().unwrap();
        out.extend(found.into_iter().map(|(at, t)| (format!("{name}: {rule}: {at}"), for_each.clone(), t)));
    }
    assert!(out.len() > 300, "{}", out.len());
    out
}

/// Every `when` of the shipped mappings.
fn shipped_conditions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, rule) in shipped_rules() {
        if let Some(w) = rule.get("when").and_then(toml::Value::as_str) {
            out.push((format!("{name}: {}", rule["name"].as_str().unwrap()), w.to_string()));
        }
    }
    assert!(out.len() >= 25, "{out:#?}");
    out
}

/// The template context of every fixture payload, with each one's own headers.
fn fixture_contexts() -> Vec<Value> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(root().join("fixtures")).unwrap() {
        let dir = dir.unwrap().path();
        let Ok(text) = std::fs::read_to_string(dir.join("events.toml")) else { continue };
        let cases: toml::Table = toml::from_str(&text).unwrap();
        for case in cases.values() {
            let file = std::fs::read(dir.join(case["file"].as_str().unwrap())).unwrap();
            let Ok(body) = serde_json::from_slice::<Value>(&file) else { continue };
            let mut headers = serde_json::Map::new();
            for (k, v) in case.get("headers").and_then(toml::Value::as_table).into_iter().flatten() {
                headers.insert(k.to_ascii_lowercase(), Value::String(v.as_str().unwrap().to_string()));
            }
            if let Some(e) = case.get("event").and_then(toml::Value::as_str) {
                headers.insert("x-github-event".into(), Value::String(e.to_string()));
            }
            let query = case.get("query").and_then(toml::Value::as_str).unwrap_or_default();
            out.push(serde_json::json!({ "headers": headers, "query": query, "source": "s", "body": body }));
        }
    }
    assert!(out.len() > 40, "{}", out.len());
    out
}

/// A strict registry like the mapping's (values).
fn strict() -> Handlebars<'static> {
    super::super::registry(true)
}

/// A lenient registry like the mapping's (conditions).
fn lenient() -> Handlebars<'static> {
    super::super::registry(false)
}

/// What handlebars renders: `None` for a render error.
fn rendered(hb: &mut Handlebars<'static>, tpl: &str, data: &Value) -> Option<String> {
    hb.register_template_string("t", tpl).unwrap();
    hb.render_with_context("t", &Context::from(data.clone())).ok()
}

/// A value template's native form (strict), with the paths it reads.
fn compile(tpl: &str) -> Option<(Native, Paths)> {
    let mut paths = Paths::default();
    Native::compile(&Template::compile(tpl).unwrap(), true, &mut paths).map(|n| (n, paths))
}

/// What the native form renders on `data`: `None` where it is undecided.
fn native(n: &Native, paths: &Paths, data: &Value) -> Option<String> {
    n.render(&mut Lookups::new(paths, data)).ok()
}

/// The native form renders what handlebars does, and is undecided exactly where handlebars fails.
fn assert_same(hb: &mut Handlebars<'static>, tpl: &str, (n, paths): &(Native, Paths), data: &Value) {
    assert_eq!(native(n, paths, data), rendered(hb, tpl, data), "{tpl}\non {data:#}");
}

/// The proof for the shipped mappings: every value template (494 of the 515 are native) on every
/// fixture payload, each rule's `item` set as `for_each` sets it, where most rules meet payloads
/// they are not for.
#[test]
fn native_templates_agree_with_handlebars_on_every_fixture() {
    let (mut hb, contexts) = (strict(), fixture_contexts());
    let (mut native_forms, mut checked, mut decided) = (0, 0, 0);
    for (_, for_each, tpl) in shipped_templates() {
        let Some(n) = compile(&tpl) else { continue };
        native_forms += 1;
        for data in &contexts {
            let mut data = data.clone();
            if let Some(path) = &for_each {
                let segs: Vec<String> = path.trim_matches(['{', '}', ' ']).split('.').map(str::to_string).collect();
                if let Some(item) = resolve(&data, &segs).ok().flatten().and_then(|a| a.get(0)).cloned() {
                    data["item"] = item;
                }
            }
            assert_same(&mut hb, &tpl, &n, &data);
            decided += usize::from(native(&n.0, &n.1, &data).is_some());
            checked += 1;
        }
    }
    assert!(
        native_forms > 490 && checked > 30_000 && decided > 15_000,
        "{native_forms} native, {checked} checks, {decided} decided"
    );
}

/// The pull request rule the benchmark sends is native throughout (its labels are an `#each`).
#[test]
fn the_pull_request_rule_renders_natively() {
    let pr: Vec<_> = shipped_templates()
        .into_iter()
        .filter(|(at, _, _)| at.starts_with("github.toml: pull request merged:"))
        .collect();
    let slow: Vec<_> = pr.iter().filter(|(_, _, t)| compile(t).is_none()).map(|(at, _, _)| at.as_str()).collect();
    assert_eq!(slow, Vec::<&str>::new());
    assert!(pr.len() > 15);
}

#[test]
fn what_only_handlebars_can_do_stays_a_template() {
    for tpl in [
        "{{#each body.x}}{{#each this}}a{{/each}}{{/each}}",
        "{{#each body.x as |y|}}{{y}}{{/each}}",
        "{{#each body.x}}{{../body.y}}{{/each}}",
        "{{#each body.x}}{{@root.body.y}}{{/each}}",
        "{{#each body.x}}{{@../index}}{{/each}}",
        "{{#each body.x}}{{name}}{{/each}}",
        "{{#each (lookup body.x 0)}}a{{/each}}",
        "{{#each body.x \"y\"}}a{{/each}}",
        "{{@index}}",
        "{{this}}",
        "{{#with body.x}}{{y}}{{/with}}",
        "{{#if body.x includeZero=true}}yes{{/if}}",
        "{{#each body.x}}{{#if this}}{{#each this}}b{{/each}}{{/if}}{{/each}}",
        "{{#eq body.x 1}}a{{/eq}}",
        "{{x}}",
        "{{json}}",
        "{{@root.body.x}}",
        "{{../body.x}}",
        "{{lookup body.x 0}}",
        "{{join body.x \",\"}}",
        "{{eq body.x \"a\" strict=true}}",
        "{{truncate body.x 3 end=\"\"}}",
        "{{json body.x body.y}}",
        "{{eq body.x}}",
        "{{lower (lookup body.x 0)}}",
        "{{> partial}}",
    ] {
        assert_eq!(compile(tpl).map(|(n, _)| n), None, "{tpl}");
    }
}

/// Templates beyond the shipped ones: each helper, values of every JSON type at top level,
/// paths through arrays, whitespace control and comments.
const EXTRA: &[&str] = &[
    "",
    "plain text",
    "{{body.x}}",
    "a {{body.x}} b {{body.y}}",
    "{{{body.x}}}",
    "  {{~body.x~}}  ",
    "{{! a comment }}{{body.x}}",
    "{{body.list}}",
    "{{body.list.0}}",
    "{{body.list.name}}",
    "{{body.a.b}}",
    "{{json body.x}}",
    "{{json body.a}}",
    "{{json (default body.n null)}}",
    "{{default body.x}}",
    "{{default body.x body.y}}",
    "{{default body.missing body.also_missing}}",
    "{{default body.list.name \"a\"}}",
    "{{truncate body.x 3}}",
    "{{truncate body.x 3 marker=\"\"}}",
    "{{truncate body.x 3 marker=body.y}}",
    "{{truncate body.x body.n}}",
    "{{truncate (first_line body.x) 2}}",
    "{{lower body.x}}{{upper body.y}}",
    "{{replace body.x \"a\" \"b\"}}",
    "{{replace body.x body.y \"-\"}}",
    "{{concat body.x \"/\" body.missing}}",
    "{{url_encode body.x}}",
    "{{rfc3339 body.x}}",
    "{{len body.x}}",
    "{{eq body.x body.y}}",
    "{{ne body.x 0}}",
    "{{not body.x}}",
    "{{and body.x body.missing}}",
    "{{or body.missing body.y}}",
    "{{#if body.x}}yes{{/if}}",
    "{{#unless body.x}}no{{else}}{{body.y}}{{/unless}}",
    "{{#if body.missing}}{{body.missing}}{{else}}-{{/if}}",
    "{{#if (eq body.x \"a\")}}a{{else if body.y}}{{upper body.y}}{{else}}none{{/if}}",
    "{{#if (len body.list)}}{{len body.list}} {{#if (eq (len body.list) 1)}}item{{else}}items{{/if}}{{/if}}",
    "a\n{{#if body.x}}\n  b\n{{/if}}\nc",
    "{{this.body.x}}",
    "{{#if body.x}}{{this.body.y}}{{/if}}",
    "{{#if body.x}}a{{else}}{{#each body.list}}{{this.name}}{{/each}}{{/if}}",
    "{{#each body.list}}{{#unless @first}}, {{/unless}}{{this.name}}{{/each}}",
    "{{#each body.a}}{{@key}}={{this}} {{/each}}",
    "{{#each body.list}}{{@index}}/{{@last}}{{this.name}}{{else}}none{{/each}}",
    "{{#each body.x}}{{this}}{{else}}{{/each}}",
    "{{#each body.list}}{{#if @last}}{{json this}}{{/if}}{{/each}}",
    "{{#each body.missing}}a{{else}}{{body.y}}{{/each}}",
    "{{#each body.list}}{{default @key \"-\"}}{{/each}}",
    "{{#each body.list}}\n  - {{upper this.name}}\n{{/each}}",
];

/// Values that sit on the edges of handlebars' rendering, truthiness and each helper, with
/// strings from `texts`.
fn leaf(texts: &'static [&'static str]) -> impl Strategy<Value = Value> + Clone {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop::sample::select(vec![0i64, 1, -1, 2, 3, 1_715_679_067, 1_715_679_067_123]).prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        prop::sample::select(vec![0.0f64, -0.0, 0.5, 1.0, 1e21, 5e-324]).prop_map(Value::from),
        prop::sample::select(texts).prop_map(Value::from),
    ]
}

/// Strings on the edges of the value helpers.
const TEXTS: &[&str] = &[
    "",
    " ",
    "a",
    "abc",
    "Ab C",
    "a\nb",
    "\n\nx\r\ny",
    "ÄÖü ß ǅ",
    "éé€€",
    "a/b c?d=e",
    "<&\">",
    "2024-05-14T09:31:07Z",
    "2024-05-14 09:31:07 +0200",
    "1715679067",
    "https://x.example/y z",
    "{{body.x}}",
];

/// Bodies whose fields the templates' paths mostly reach: each one present most of the time,
/// a scalar usually, sometimes a nested value of any shape.
fn payload() -> impl Strategy<Value = Value> {
    let keys = prop::sample::select(vec!["x", "b", "name", "0"]);
    let scalar = || leaf(TEXTS);
    let any = scalar().prop_recursive(2, 12, 3, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map(keys.clone().prop_map(str::to_string), inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    let field = move || prop::option::weighted(0.85, prop_oneof![3 => scalar(), 1 => any.clone()]);
    let a = field().prop_map(|b| serde_json::json!({ "b": b }));
    let list =
        prop::collection::vec(scalar().prop_map(|n| serde_json::json!({ "name": n })), 0..3).prop_map(Value::Array);
    (
        field(),
        field(),
        field(),
        prop_oneof![a, field().prop_map(|v| v.unwrap_or_default())],
        prop_oneof![list, scalar()],
    )
        .prop_map(|(x, y, n, a, list)| {
            let mut body = serde_json::json!({ "a": a, "list": list });
            for (k, v) in [("x", x), ("y", y), ("n", n)] {
                if let Some(v) = v {
                    body[k] = v;
                }
            }
            body
        })
}

/// An argument: a path (often missing or through an array), a literal, or a helper call.
fn arg() -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        prop::sample::select(vec![
            "body.x",
            "body.y",
            "body.n",
            "body.a.b",
            "body.list",
            "body.list.0",
            "body.list.name",
            "body.missing",
            "headers.h",
        ])
        .prop_map(str::to_string),
        prop::sample::select(vec!["\"a\"", "\"\"", "\"-\"", "0", "1", "3", "-1", "1.5", "null", "true"])
            .prop_map(str::to_string),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| call(inner).prop_map(|c| format!("({c})"))).boxed()
}

/// A helper call with its arguments, natively rendered ones mostly, some that are not.
fn call(arg: BoxedStrategy<String>) -> impl Strategy<Value = String> {
    let hash = prop::option::of(prop::sample::select(vec!["\"\"", "\"..\"", "body.y"]));
    (prop::sample::select(calls()), prop::collection::vec(arg, 3), hash).prop_map(|((name, n, key), args, value)| {
        let hash = key.zip(value).map(|(k, v)| format!(" {k}={v}")).unwrap_or_default();
        format!("{name} {}{hash}", args[..n].join(" "))
    })
}

/// Every value helper of [`HELPERS`] with each argument count it takes up to three, and the
/// hash argument its native form reads; those with a native form three times as often, since
/// only they keep a template native.
fn calls() -> Vec<(&'static str, usize, Option<&'static str>)> {
    let mut out = Vec::new();
    for s in HELPERS {
        let Form::Value { native, hash } = s.form else { continue };
        for n in s.args.0..=s.args.1.min(3) {
            out.extend(std::iter::repeat_n((s.name, n, hash), if native.is_some() { 3 } else { 1 }));
        }
    }
    out
}

fn template() -> impl Strategy<Value = String> {
    let text = prop_oneof![
        prop::sample::select(vec!["", " ", "a ", "\n", "}"]).prop_map(str::to_string),
        prop::sample::select(vec!["body.x", "body.missing"]).prop_map(|p| format!("{{{{{p}}}}}")),
    ];
    let block = (prop::sample::select(vec!["if", "unless"]), arg(), text.clone(), prop::option::of(text.clone()))
        .prop_map(|(name, cond, then, otherwise)| match otherwise {
            Some(o) => format!("{{{{#{name} {cond}}}}}{then}{{{{else}}}}{o}{{{{/{name}}}}}"),
            None => format!("{{{{#{name} {cond}}}}}{then}{{{{/{name}}}}}"),
        });
    let each = (
        prop::sample::select(vec!["body.list", "body.a", "body.x", "body.missing", "body.list.0"]),
        prop::sample::select(vec![
            "{{this}}",
            "{{this.name}}",
            "{{this.b}}",
            "{{@index}}",
            "{{@key}}",
            "{{#unless @first}}, {{/unless}}{{this.name}}",
            "{{#if @last}}.{{/if}}",
            "{{default this.name \"-\"}}",
            "{{json this}}",
            "{{lower (concat @index this)}}",
        ]),
        prop::option::of(text.clone()),
    )
        .prop_map(|(list, body, otherwise)| match otherwise {
            Some(o) => format!("{{{{#each {list}}}}}{body}{{{{else}}}}{o}{{{{/each}}}}"),
            None => format!("{{{{#each {list}}}}}{body}{{{{/each}}}}"),
        });
    let part = prop_oneof![
        each,
        block,
        prop::sample::select(vec!["", " ", "a ", "\n", "}"]).prop_map(str::to_string),
        prop::sample::select(vec!["body.x", "body.y", "body.a.b", "body.list", "body.list.0", "body.missing"])
            .prop_map(|p| format!("{{{{{p}}}}}")),
        call(arg()).prop_map(|c| format!("{{{{{c}}}}}")),
    ];
    prop::collection::vec(part, 1..4).prop_map(|parts| parts.concat())
}

#[test]
fn extra_templates_compile_natively_and_agree_on_simple_payloads() {
    let mut hb = strict();
    let data = serde_json::json!({
        "headers": {}, "query": "", "source": "s",
        "body": { "x": "Ab\nc", "y": "a", "n": 2, "a": { "b": [1, "x", null] }, "list": [{ "name": "a" }] },
    });
    for tpl in EXTRA {
        let n = compile(tpl).unwrap_or_else(|| panic!("not native: {tpl}"));
        assert_same(&mut hb, tpl, &n, &data);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]
    /// Each generated template in both modes: strict as values render, lenient as conditions
    /// do (a missing path reads as null, and where strict mode fails lenient mode may not),
    /// where it is also read as a truth value.
    #[test]
    fn native_templates_agree_with_handlebars_on_any_payload(
        body in payload(),
        tpl in prop_oneof![prop::sample::select(EXTRA).prop_map(str::to_string), template()],
    ) {
        let data = serde_json::json!({ "headers": { "h": "v" }, "query": "", "source": "s", "body": body });
        // Some generated templates do not parse (`}` before `{{`); handlebars refuses those at load.
        let Ok(t) = Template::compile(&tpl) else { return Ok(()) };
        let mut paths = Paths::default();
        if let Some(n) = Native::compile(&t, true, &mut paths) {
            assert_same(&mut strict(), &tpl, &(n, paths), &data);
        }
        let mut paths = Paths::default();
        if let Some(n) = Native::compile(&t, false, &mut paths) {
            assert_same_conditions(&mut lenient(), &[(tpl.as_str(), n)], &paths, &data);
        }
    }
}

// Conditions (`when`): the same renderer in lenient mode, read as a truth value.

/// Conditions beyond the shipped ones: top-level values and helpers of each kind, numbers,
/// paths through arrays, and what only a template renderer (not a single expression) reads.
const CONDITIONS: &[&str] = &[
    "{{body.x}}",
    "  {{body.a.b}}\n",
    "{{body.x.0}}",
    "{{body.list.name}}",
    "{{concat body.x body.y}}",
    "{{not body.x}}",
    "{{or body.x (not body.y)}}",
    "{{and body.x}}",
    "{{eq body.x 0}}",
    "{{eq body.x body.y}}",
    "{{ne body.x \"a\"}}",
    "{{eq body.list.0.name \"a\"}}",
    "{{and (eq body.x \"a\") body.list.name}}",
    "{{starts_with body.x \"a\"}}",
    "{{eq (concat \"refs/\" body.x) body.y}}",
    "{{! why }}{{body.x}}",
    "{{#if body.x}}yes{{/if}}",
    "on {{body.x}}",
    "{{body.x}}{{body.y}}",
    "{{lower body.x}}",
    "{{this.x}}",
    "{{starts_with body.x body.y}}",
    "{{eq (lower body.x) \"a\"}}",
    "{{#each body.list}}{{this}}{{/each}}",
    "{{#unless body.missing}}{{body.missing}}{{/unless}}",
    "{{default body.missing body.x}}",
    "{{json body.missing}}",
    "{{len body.missing}}",
];

/// What handlebars makes of condition `when` on `data`: `None` for a render error.
fn held(hb: &mut Handlebars<'static>, when: &str, data: &Value) -> Option<bool> {
    rendered(hb, when, data).map(|s| super::super::truthy(&s))
}

fn condition(when: &str, paths: &mut Paths) -> Native {
    Native::compile(&Template::compile(when).unwrap(), false, paths).unwrap_or_else(|| panic!("not native: {when}"))
}

/// Conditions compiled together, as one mapping's are: they share their paths.
fn conditions<'w>(whens: impl IntoIterator<Item = &'w str>) -> (Vec<(&'w str, Native)>, Paths) {
    let mut paths = Paths::default();
    let all = whens.into_iter().map(|w| (w, condition(w, &mut paths))).collect();
    (all, paths)
}

/// Each native condition gives handlebars' answer (and renders handlebars' text), and is
/// undecided exactly where handlebars fails, evaluated in turn with the walks they share (as a
/// webhook's rules are); how many held.
fn assert_same_conditions(
    hb: &mut Handlebars<'static>,
    whens: &[(&str, Native)],
    paths: &Paths,
    data: &Value,
) -> usize {
    let mut lookups = Lookups::new(paths, data);
    let mut count = 0;
    for (when, n) in whens {
        let holds = n.holds(&mut lookups).ok();
        assert_eq!(holds, held(hb, when, data), "{when}\non {data:#}");
        assert_eq!(n.render(&mut lookups).ok(), rendered(hb, when, data), "{when}\non {data:#}");
        count += usize::from(holds == Some(true));
    }
    count
}

#[test]
fn every_shipped_condition_compiles_natively() {
    for (rule, when) in shipped_conditions() {
        let t = Template::compile(&when).unwrap();
        assert!(Native::compile(&t, false, &mut Paths::default()).is_some(), "{rule}: {when}");
    }
}

#[test]
fn what_only_handlebars_can_do_stays_a_template_in_conditions_too() {
    for when in [
        "{{x}}",
        "{{@root.body.x}}",
        "{{eq body.x \"a\" strict=true}}",
        "{{eq body.x}}",
        "{{#if body.x includeZero=true}}yes{{/if}}",
        "{{gt body.x 1}}",
        "{{#with body.x}}{{y}}{{/with}}",
    ] {
        assert_eq!(Native::compile(&Template::compile(when).unwrap(), false, &mut Paths::default()), None, "{when}");
    }
}

/// The proof for the shipped mappings: every condition on every fixture payload (each one's
/// own headers, so each rule meets the events it is for and all the others).
#[test]
fn native_predicates_agree_with_handlebars_on_every_fixture() {
    let mut hb = lenient();
    let shipped = shipped_conditions();
    let (whens, paths) = conditions(shipped.iter().map(|(_, w)| w.as_str()));
    let (mut checked, mut held) = (0, 0);
    for data in fixture_contexts() {
        held += assert_same_conditions(&mut hb, &whens, &paths, &data);
        checked += whens.len();
    }
    assert!(checked > 1000 && held > 30, "{checked} checks, {held} held");
}

/// One webhook walks each path its rules' conditions read once, however many rules read it:
/// the shipped GitHub rules read `headers.x-github-event` 12 times.
#[test]
fn a_webhook_walks_each_condition_path_once() {
    let github: Vec<String> =
        shipped_conditions().into_iter().filter(|(r, _)| r.starts_with("github.toml")).map(|(_, w)| w).collect();
    let (whens, paths) = conditions(github.iter().map(String::as_str));
    let read = github.iter().map(|w| w.matches("headers.").count() + w.matches("body.").count()).sum::<usize>();
    assert!(paths.list.len() * 2 < read, "{} paths for {read} reads", paths.list.len());
    let data = serde_json::json!({ "headers": { "x-github-event": "push" }, "body": { "ref": "refs/heads/main" } });
    let mut lookups = Lookups::new(&paths, &data);
    for (_, n) in &whens {
        n.holds(&mut lookups).unwrap();
    }
    assert_eq!(lookups.walked(), paths.list.len());
}

/// Strings the shipped conditions compare with, and the edges of truthiness.
const CONDITION_TEXTS: &[&str] = &[
    "",
    " ",
    "0",
    "false",
    "null",
    "a",
    "push",
    "closed",
    "main",
    "refs/heads/main",
    "completed",
    "pull_request",
    "pull_request_target",
    "success",
    "failure",
    "github-actions",
    "production",
];

/// Objects keyed by the names the conditions use, so paths often reach something.
fn condition_payload() -> impl Strategy<Value = Value> {
    let keys = prop::sample::select(vec![
        "x",
        "y",
        "a",
        "b",
        "list",
        "name",
        "action",
        "ref",
        "repository",
        "default_branch",
        "pull_request",
        "merged",
        "base",
        "deleted",
        "workflow_run",
        "event",
        "head_branch",
        "conclusion",
        "status",
        "job",
        "deployment",
        "transient_environment",
        "source",
        "detail-type",
        "alert_transition",
        "groupKey",
        "0",
    ]);
    leaf(CONDITION_TEXTS).prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map(keys.clone().prop_map(str::to_string), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn native_predicates_agree_with_handlebars_on_any_payload(
        body in condition_payload(),
        event in prop::sample::select(vec!["push", "pull_request", "workflow_run", "deployment_status", "Pipeline Hook"]),
    ) {
        let mut hb = lenient();
        let data = serde_json::json!({
            "headers": { "x-github-event": event, "x-gitlab-event": event },
            "query": "", "source": "s", "body": body,
        });
        let shipped = shipped_conditions();
        let (whens, paths) = conditions(shipped.iter().map(|(_, w)| w.as_str()).chain(CONDITIONS.iter().copied()));
        assert_same_conditions(&mut hb, &whens, &paths, &data);
    }
}
