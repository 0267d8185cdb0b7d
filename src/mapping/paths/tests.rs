use super::super::tests::load;
use crate::source::Keep;

/// The body paths of `rules` (a mapping file's text).
fn paths_of(rules: &str) -> Keep {
    load(rules).unwrap_or_else(|e| panic!("{e:#?}")).body_paths()
}

fn keep(paths: &[&str]) -> Keep {
    let mut k = Keep::nothing();
    for p in paths {
        k.insert(&p.split('.').collect::<Vec<_>>());
    }
    k
}

/// A change rule (no dedup_key to derive) with `extra` lines.
fn change(extra: &str) -> String {
    format!("[[rule]]\nname = \"r\"\nemit = \"change\"\nsummary = \"s\"\n{extra}\n")
}

#[test]
fn paths_come_from_conditions_values_helper_arguments_and_blocks() {
    let rules = change(
        r#"when = '{{and (eq headers.x-github-event "push") (eq body.ref (concat "refs/heads/" body.repository.default_branch))}}'
source = '{{default body.sender.login body.pusher.name}}{{truncate body.head.message 10 marker=body.marker}}'
[rule.custom_details]
commits = '{{#each body.commits}}{{this.id}} {{message}} {{@index}}{{else}}{{body.empty}}{{/each}}'
first = '{{#if body.head_commit}}{{body.head_commit.id}}{{else}}{{body.after}}{{/if}}'
x = '{{#with body.deep.obj as |o|}}{{o.a}}{{a.b.c}}{{/with}}'
n = '{{json (len body.list)}} {{query.team}} {{source}}'"#,
    );
    let expected = keep(&[
        "ref",
        "repository.default_branch",
        "sender.login",
        "pusher.name",
        "head.message",
        "marker",
        "commits",
        "empty",
        "head_commit",
        "after",
        "deep.obj",
        "list",
    ]);
    assert_eq!(paths_of(&rules), expected);
}

#[test]
fn a_for_each_keeps_its_array_whole_and_item_paths_add_nothing() {
    let rules = r#"[[rule]]
name = "r"
emit = "alert"
for_each = "body.alerts"
source = "{{item.labels.instance}}"
summary = "{{item.annotations.summary}} on {{body.externalURL}}"
"#;
    assert_eq!(paths_of(rules), keep(&["alerts", "externalURL"]));
}

#[test]
fn an_alert_whose_dedup_key_is_always_written_keeps_only_its_paths() {
    let rules = r#"[[rule]]
name = "r"
emit = "alert"
source = "s"
summary = "s"
dedup_key = "k/{{body.id}}"
"#;
    assert_eq!(paths_of(rules), keep(&["id"]));
}

/// A trigger without a dedup_key, or with one that can render blank, gets one derived from
/// the whole body.
#[test]
fn a_dedup_key_that_may_be_derived_from_the_whole_body_keeps_everything() {
    let alert =
        |extra: &str| format!("[[rule]]\nname = \"r\"\nemit = \"alert\"\nsource = \"s\"\nsummary = \"s\"\n{extra}\n");
    assert!(paths_of(&alert("")).is_everything());
    assert!(paths_of(&alert("dedup_key = \"{{body.id}}\"")).is_everything());
    assert!(paths_of(&alert("dedup_key = \"  {{body.id}}  \"")).is_everything());
}

/// What the walk cannot follow keeps the whole body: the accept path then parses it all.
#[test]
fn this_parents_root_and_the_whole_body_fall_back_to_the_full_parse() {
    for template in [
        "{{json this}}",
        "{{this}}",
        "{{json body}}",
        "{{body}}",
        "{{@root.body.x}}",
        "{{#each body.list}}{{../body.other}}{{/each}}",
        "{{#with body.a}}{{@root.body.b}}{{/with}}",
        "{{lookup this \"body\"}}",
        "{{#if body.a}}{{json this}}{{/if}}",
    ] {
        let rules = change(&format!("source = '{template}'"));
        assert!(paths_of(&rules).is_everything(), "{template}");
    }
    let rules = change("when = '{{json this}}'");
    assert!(paths_of(&rules).is_everything(), "a condition");
    let rules = "[[rule]]\nname = \"r\"\nemit = \"change\"\nsummary = \"s\"\nfor_each = \"body\"\n";
    assert!(paths_of(rules).is_everything(), "for_each over the body");
}

#[test]
fn paths_outside_the_body_keep_nothing_of_it() {
    let rules = change("when = '{{eq headers.x-event \"a\"}}'\nsource = '{{query.x}}{{source}}{{sns.TopicArn}}'");
    assert_eq!(paths_of(&rules), Keep::nothing());
}

#[test]
fn the_shipped_github_mapping_keeps_a_small_part_of_a_pull_request() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/mappings/github.toml")).unwrap();
    let k = paths_of(&text);
    assert!(!k.is_everything());
    let body: serde_json::Value = serde_json::from_slice(
        &std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/github/pull_request_merged.json")).unwrap(),
    )
    .unwrap();
    let pruned = k.parse(body.to_string().as_bytes()).unwrap();
    assert!(pruned.to_string().len() * 2 < body.to_string().len(), "{pruned}");
    assert_eq!(pruned["pull_request"]["merged"], body["pull_request"]["merged"]);
}
