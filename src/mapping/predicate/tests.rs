use super::*;
use handlebars::{Context, Handlebars};
use proptest::prelude::*;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `when` of the shipped mappings.
fn shipped_conditions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for path in crate::mapping::shipped_mapping_files(&root()) {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let file: toml::Value = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for rule in file.get("rule").and_then(toml::Value::as_array).into_iter().flatten() {
            if let Some(w) = rule.get("when").and_then(toml::Value::as_str) {
                out.push((format!("{name}: {}", rule["name"].as_str().unwrap()), w.to_string()));
            }
        }
    }
    assert!(out.len() >= 25, "{out:#?}");
    out
}

/// Conditions beyond the shipped ones: top-level values and helpers of each kind, numbers,
/// and paths through arrays.
const EXTRA: &[&str] = &[
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
];

/// A lenient registry like the mapping's.
fn lenient() -> Handlebars<'static> {
    super::super::registry(false)
}

/// What handlebars makes of condition `when` on `data`: `None` for a render error.
fn rendered(hb: &mut Handlebars<'static>, when: &str, data: &Value) -> Option<bool> {
    hb.register_template_string("when", when).unwrap();
    hb.render_with_context("when", &Context::from(data.clone())).ok().map(|s| super::super::truthy(&s))
}

fn compiled(when: &str, paths: &mut Paths) -> Predicate {
    Predicate::compile(&Template::compile(when).unwrap(), paths).unwrap_or_else(|| panic!("not compiled: {when}"))
}

/// Conditions compiled together, as one mapping's are: they share their paths.
fn compiled_all<'w>(whens: impl IntoIterator<Item = &'w str>) -> (Vec<(&'w str, Predicate)>, Paths) {
    let mut paths = Paths::default();
    let all = whens.into_iter().map(|w| (w, compiled(w, &mut paths))).collect();
    (all, paths)
}

/// Each native predicate gives handlebars' answer, and is undecided exactly where handlebars
/// fails, evaluated in turn with the walks they share (as a webhook's rules are); how many held.
fn assert_same(hb: &mut Handlebars<'static>, whens: &[(&str, Predicate)], paths: &Paths, data: &Value) -> usize {
    let mut lookups = Lookups::new(paths, data);
    let mut held = 0;
    for (when, p) in whens {
        let native = p.eval(&mut lookups).ok();
        assert_eq!(native, rendered(hb, when, data), "{when}\non {data:#}");
        held += usize::from(native == Some(true));
    }
    held
}

#[test]
fn every_shipped_condition_compiles_natively() {
    for (rule, when) in shipped_conditions() {
        let t = Template::compile(&when).unwrap();
        assert!(Predicate::compile(&t, &mut Paths::default()).is_some(), "{rule}: {when}");
    }
}

#[test]
fn what_only_handlebars_can_do_stays_a_template() {
    for when in [
        "{{#if body.x}}yes{{/if}}",
        "on {{body.x}}",
        "{{body.x}}{{body.y}}",
        "{{lower body.x}}",
        "{{x}}",
        "{{this.x}}",
        "{{@root.body.x}}",
        "{{eq body.x \"a\" strict=true}}",
        "{{starts_with body.x body.y}}",
        "{{eq body.x}}",
        "{{eq (lower body.x) \"a\"}}",
    ] {
        assert_eq!(Predicate::compile(&Template::compile(when).unwrap(), &mut Paths::default()), None, "{when}");
    }
}

/// The proof for the shipped mappings: every condition on every fixture payload (each one's
/// own headers, so each rule meets the events it is for and all the others).
#[test]
fn native_predicates_agree_with_handlebars_on_every_fixture() {
    let mut hb = lenient();
    let conditions = shipped_conditions();
    let (whens, paths) = compiled_all(conditions.iter().map(|(_, w)| w.as_str()));
    let (mut checked, mut held) = (0, 0);
    for dir in std::fs::read_dir(root().join("fixtures")).unwrap() {
        let dir = dir.unwrap().path();
        let Ok(text) = std::fs::read_to_string(dir.join("events.toml")) else { continue };
        let cases: toml::Table = toml::from_str(&text).unwrap();
        for case in cases.values() {
            let Ok(body) =
                serde_json::from_slice::<Value>(&std::fs::read(dir.join(case["file"].as_str().unwrap())).unwrap())
            else {
                continue;
            };
            let mut headers = serde_json::Map::new();
            for (k, v) in case.get("headers").and_then(toml::Value::as_table).into_iter().flatten() {
                headers.insert(k.to_ascii_lowercase(), Value::String(v.as_str().unwrap().to_string()));
            }
            if let Some(e) = case.get("event").and_then(toml::Value::as_str) {
                headers.insert("x-github-event".into(), Value::String(e.to_string()));
            }
            let query = case.get("query").and_then(toml::Value::as_str).unwrap_or_default();
            let data = serde_json::json!({ "headers": headers, "query": query, "source": "s", "body": body });
            held += assert_same(&mut hb, &whens, &paths, &data);
            checked += whens.len();
        }
    }
    assert!(checked > 1000 && held > 30, "{checked} checks, {held} held");
}

/// One webhook walks each path its rules' conditions read once, however many rules read it:
/// the shipped GitHub rules read `headers.x-github-event` 12 times.
#[test]
fn a_webhook_walks_each_condition_path_once() {
    let github: Vec<String> =
        shipped_conditions().into_iter().filter(|(r, _)| r.starts_with("github.toml")).map(|(_, w)| w).collect();
    let (whens, paths) = compiled_all(github.iter().map(String::as_str));
    let read = github.iter().map(|w| w.matches("headers.").count() + w.matches("body.").count()).sum::<usize>();
    assert!(paths.list.len() * 2 < read, "{} paths for {read} reads", paths.list.len());
    let data = serde_json::json!({ "headers": { "x-github-event": "push" }, "body": { "ref": "refs/heads/main" } });
    let mut lookups = Lookups::new(&paths, &data);
    for (_, p) in &whens {
        p.eval(&mut lookups).unwrap();
    }
    assert_eq!(lookups.walked(), paths.list.len());
}

/// Values that sit on the edges of handlebars' truthiness and rendering.
fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop::sample::select(vec![0i64, 1, -1, 2]).prop_map(Value::from),
        prop::sample::select(vec![0.0f64, -0.0, 0.5, 1.0, 5e-324]).prop_map(Value::from),
        prop::sample::select(vec![
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
        ])
        .prop_map(Value::from),
    ]
}

/// Objects keyed by the names the conditions use, so paths often reach something.
fn payload() -> impl Strategy<Value = Value> {
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
    leaf().prop_recursive(4, 48, 6, move |inner| {
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
        body in payload(),
        event in prop::sample::select(vec!["push", "pull_request", "workflow_run", "deployment_status", "Pipeline Hook"]),
    ) {
        let mut hb = lenient();
        let data = serde_json::json!({
            "headers": { "x-github-event": event, "x-gitlab-event": event },
            "query": "", "source": "s", "body": body,
        });
        let conditions = shipped_conditions();
        let (whens, paths) = compiled_all(conditions.iter().map(|(_, w)| w.as_str()).chain(EXTRA.iter().copied()));
        assert_same(&mut hb, &whens, &paths, &data);
    }
}
