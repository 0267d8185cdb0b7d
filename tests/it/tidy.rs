//! Architecture rules, enforced: which modules may use which crates, and which modules may
//! import which (the layering of ARCHITECTURE.md).

use crate::helpers::root;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn offenders(needle: &str, allowed: impl Fn(&str) -> bool) -> Vec<String> {
    source_files()
        .into_iter()
        .filter_map(|(rel, text)| (text.contains(needle) && !allowed(&rel)).then_some(rel))
        .collect()
}

#[test]
fn only_http_knows_actix_web() {
    assert_eq!(offenders("actix_web", |f| f.starts_with("http/")), Vec::<String>::new());
}

#[test]
fn only_the_pagerduty_client_and_the_aws_fetcher_talk_upstream() {
    // The AWS fetcher takes only an `AwsUrl`, which cannot name anything but an SNS host.
    let allowed = |f: &str| matches!(f, "pagerduty.rs" | "source/sns/fetch.rs" | "source/sns/fetch/tests.rs");
    assert_eq!(offenders("reqwest", allowed), Vec::<String>::new());
}

#[test]
fn the_queue_and_events_know_nothing_of_http_or_pagerduty_s_client() {
    let bad = |f: &str| f.starts_with("queue/") || f.starts_with("event");
    assert_eq!(offenders("crate::pagerduty", |f| !bad(f)), Vec::<String>::new());
    assert_eq!(offenders("crate::http", |f| !bad(f)), Vec::<String>::new());
}

/// The reason `.cargo/audit.toml` gives for ignoring rsa's timing advisory (RUSTSEC-2023-0071):
/// pagerhook holds no RSA private key, it only verifies SNS signatures with a public one.
#[test]
fn the_rsa_crate_only_verifies_signatures() {
    let private = ["RsaPrivateKey", "SigningKey", "DecryptingKey", "Pkcs1v15Encrypt", "Oaep"];
    for name in private {
        assert_eq!(offenders(name, |f| f.ends_with("/tests.rs")), Vec::<String>::new(), "{name}");
    }
    let audit = std::fs::read_to_string(root().join(".cargo/audit.toml")).unwrap();
    assert!(audit.contains("\"RUSTSEC-2023-0071\""), "{audit}");
}

#[test]
fn nothing_reads_the_process_environment_but_config_loading() {
    // Unit tests may: the PostgreSQL queue tests find their server in DATABASE_URL.
    let allowed = |f: &str| f == "config/mod.rs" || f.ends_with("/tests.rs");
    assert_eq!(offenders("std::env::var", allowed), Vec::<String>::new());
}

/// The layering, as ARCHITECTURE.md draws it: each top-level module of `src/` and the only
/// modules it may import (`use crate::…` or a `crate::x::` path in code). Read it bottom-up:
/// leaves import nothing of the crate; `event` holds PagerDuty's types; `source` verifies
/// and parses requests and knows nothing of what a payload becomes; `mapping` turns a
/// verified payload into events; `registry` binds each source to its mapping; `ingest` is
/// the accept path; `http` and the entry points sit on top. `queue`, `pagerduty` and
/// `delivery` are the store and the way out, below `ingest`. Unit tests (`tests.rs`,
/// `proptests.rs`) may wire real modules together and are not checked.
pub(crate) const LAYERS: &[(&str, &[&str])] = &[
    ("secret", &[]),
    ("telemetry", &[]),
    ("pagerduty_model", &[]),
    ("supervise", &["telemetry"]),
    ("event", &["secret"]),
    ("config", &["secret", "event"]),
    ("source", &["secret", "config"]),
    ("mapping", &["event", "source"]),
    ("registry", &["config", "event", "source", "mapping"]),
    ("queue", &["secret", "event"]),
    ("pagerduty", &["event"]),
    ("delivery", &["config", "event", "telemetry", "supervise", "pagerduty", "queue"]),
    ("reload", &["config", "source", "registry"]),
    ("ingest", &["event", "source", "mapping", "registry", "reload", "queue", "telemetry"]),
    ("testcases", &["config", "event", "source", "mapping", "registry", "pagerduty_model"]),
    ("http", &["secret", "config", "source", "ingest", "queue", "telemetry", "supervise"]),
    (
        "app",
        &[
            "secret",
            "config",
            "source",
            "registry",
            "reload",
            "queue",
            "pagerduty",
            "delivery",
            "ingest",
            "http",
            "telemetry",
            "supervise",
        ],
    ),
    ("cli", &["config", "event", "mapping", "registry", "reload", "queue", "ingest", "testcases", "app", "telemetry"]),
];

#[test]
fn modules_import_only_what_the_layering_allows() {
    let graph = import_graph(&source_files());
    assert_eq!(forbidden_edges(&graph, LAYERS), Vec::<String>::new(), "see LAYERS and ARCHITECTURE.md");
}

#[test]
fn no_two_top_level_modules_import_each_other_even_indirectly() {
    let graph = import_graph(&source_files());
    assert_eq!(find_cycle(&graph), None);
}

#[test]
fn every_module_has_a_place_in_the_layering() {
    let graph = import_graph(&source_files());
    let unplaced: Vec<&String> = graph.keys().filter(|m| !LAYERS.iter().any(|(l, _)| l == m)).collect();
    assert_eq!(unplaced, Vec::<&String>::new(), "add new modules to LAYERS");
}

/// The store takes its own settings (`queue::Settings`, built by `app` from `[storage]`): an
/// import of `config` in `queue` is an edge the layering refuses.
#[test]
fn the_queue_may_not_import_config() {
    let planted = vec![("queue/settings.rs".to_string(), "use crate::config::Durability;\n".to_string())];
    assert_eq!(forbidden_edges(&import_graph(&planted), LAYERS), vec!["queue → config".to_string()]);
}

/// The checker itself, on a planted example: a forbidden edge and a cycle must be found, in
/// `use` lines, grouped imports, `super::` paths that leave the module and paths in code.
#[test]
fn the_checker_finds_a_planted_edge_and_a_planted_cycle() {
    let files = |event_rs: &str| {
        vec![
            ("event.rs".to_string(), event_rs.to_string()),
            ("config/mod.rs".to_string(), "use crate::event::RoutingKey;\n".to_string()),
            ("config/tests.rs".to_string(), "use crate::http::Anything;\n".to_string()),
            ("secret.rs".to_string(), "// crate::config:: in a comment is no import\n".to_string()),
        ]
    };
    let clean = import_graph(&files("use crate::secret::Secret;\n"));
    assert_eq!(forbidden_edges(&clean, LAYERS), Vec::<String>::new());
    assert_eq!(find_cycle(&clean), None);
    for planted in [
        "use crate::config::Secret;\n",
        "use crate::{secret::Secret, config::Config};\n",
        "fn f() -> crate::config::Config { todo!() }\n",
    ] {
        let graph = import_graph(&files(planted));
        assert_eq!(forbidden_edges(&graph, LAYERS), vec!["event → config".to_string()], "{planted}");
        assert_eq!(find_cycle(&graph), Some(vec!["config".into(), "event".into(), "config".into()]), "{planted}");
    }
    // From src/config/raw.rs, `super::super::` is the crate root.
    let nested = vec![("config/raw.rs".to_string(), "use super::super::http::X;\n".to_string())];
    assert_eq!(forbidden_edges(&import_graph(&nested), LAYERS), vec!["config → http".to_string()]);
}

/// Every `.rs` file under `src/`, as (path relative to `src/`, text).
fn source_files() -> Vec<(String, String)> {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(&src).unwrap().to_string_lossy().replace('\\', "/");
            (rel, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

/// For each top-level module, the other top-level modules its (non-test) files name.
fn import_graph(files: &[(String, String)]) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, text) in files {
        let parts: Vec<&str> = rel.trim_end_matches(".rs").split('/').collect();
        if matches!(parts.as_slice(), ["lib"] | ["main"]) {
            continue;
        }
        let module = parts[0].to_string();
        let targets = graph.entry(module.clone()).or_default();
        if matches!(parts.last(), Some(&"tests" | &"proptests")) {
            continue;
        }
        // `super::` climbs one module per step; `mod.rs` is its folder's module.
        let depth = parts.len() - usize::from(parts.last() == Some(&"mod"));
        targets.extend(named_modules(text, depth).into_iter().filter(|t| *t != module));
    }
    graph
}

/// The top-level module names a file's code reaches through `crate::` or enough `super::`.
fn named_modules(text: &str, depth: usize) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find(['c', 's']) {
            let preceded_by_ident = rest[..at].chars().last().is_some_and(|c| c.is_alphanumeric() || c == '_');
            let tail = &rest[at..];
            let after_root = if preceded_by_ident {
                None
            } else if let Some(t) = tail.strip_prefix("crate::") {
                Some(t)
            } else {
                let mut t = tail;
                let mut ups = 0;
                while let Some(next) = t.strip_prefix("super::") {
                    t = next;
                    ups += 1;
                }
                (ups > 0 && ups >= depth).then_some(t)
            };
            if let Some(t) = after_root {
                found.extend(first_segments(t));
            }
            rest = &rest[at + 1..];
        }
    }
    found
}

/// `a::b` → `a`; `{a::b, c}` → `a`, `c` (one line's worth of a grouped import).
fn first_segments(path: &str) -> Vec<String> {
    let ident = |s: &str| s.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    match path.strip_prefix('{') {
        Some(group) => {
            let mut depth = 0;
            let mut out = vec![ident(group)];
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => out.push(ident(&group[i + 1..])),
                    _ => {}
                }
            }
            out.into_iter().filter(|s| !s.is_empty()).collect()
        }
        None => vec![ident(path)].into_iter().filter(|s| !s.is_empty()).collect(),
    }
}

/// Edges of `graph` that `layers` does not allow, as "from → to".
fn forbidden_edges(graph: &BTreeMap<String, BTreeSet<String>>, layers: &[(&str, &[&str])]) -> Vec<String> {
    let allowed = |from: &str, to: &str| layers.iter().any(|(m, ok)| *m == from && ok.contains(&to));
    graph
        .iter()
        .flat_map(|(from, tos)| tos.iter().filter(|to| !allowed(from, to)).map(move |to| format!("{from} → {to}")))
        .collect()
}

/// A cycle of `graph` as the modules along it (first = last), if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut cycle = path[at..].to_vec();
            cycle.push(m.to_string());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_string());
        for next in graph.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|m| visit(m, graph, &mut Vec::new(), &mut done))
}

#[test]
fn only_the_http_error_module_picks_a_status_code() {
    // Handlers answer success with the named constructors (`HttpResponse::Ok()`,
    // `Accepted()`); a status chosen by number or constant is a refusal, and those are
    // `http/error.rs`'s `ResponseError` impls.
    let in_http_but_error_rs = |f: &str| !f.starts_with("http/") || f == "http/error.rs";
    assert_eq!(offenders("StatusCode", in_http_but_error_rs), Vec::<String>::new());
    assert_eq!(offenders("HttpResponse::build", in_http_but_error_rs), Vec::<String>::new());
}

#[test]
fn unit_tests_live_in_sibling_files_never_inline() {
    // One convention (ARCHITECTURE.md, Testing): `#[cfg(test)] mod tests;` beside the code.
    assert_eq!(offenders("mod tests {", |_| false), Vec::<String>::new());
}

/// A public field is a door around the layering: `http` may import `ingest`, and through a
/// `pub metrics` field of `ingest::Pipeline` it reached `metrics` without importing it, which
/// the import check cannot see. So a `pub` or `pub(crate)` field of a struct in one module may
/// have a type only from modules that every module using the field may import itself. (Methods
/// are explicit doors: what they hand out is a decision of the module that owns the type.)
#[test]
fn no_public_field_hands_out_a_module_its_users_may_not_import() {
    assert_eq!(field_back_doors(&source_files(), LAYERS), Vec::<String>::new(), "see LAYERS and ARCHITECTURE.md");
}

/// The check itself, on today's `Pipeline` as main had it: `http` uses it, and its public
/// fields hand out `metrics`, `registry` and `reload`, none of which `http` may import.
#[test]
fn the_field_check_finds_main_s_pipeline_back_door() {
    let ingest = |vis: &str| {
        format!(
            "use crate::metrics::Metrics;\nuse crate::queue::{{Accepted, Queue}};\nuse crate::registry::{{Hook, Sources}};\n\
             use crate::reload::Live;\nuse std::sync::Arc;\n\n#[derive(Clone)]\npub struct Pipeline {{\n    \
             /// Swapped whole on reload.\n    {vis}sources: Arc<Live<Sources>>,\n    {vis}metrics: Arc<Metrics>,\n    \
             {vis}queue: Arc<dyn Queue>,\n    {vis}wake: Arc<tokio::sync::Notify>,\n}}\n"
        )
    };
    let hooks = "use crate::ingest::{IngestError, Pipeline};\n\nfn f(p: &Pipeline) {\n    \
                 p.metrics.request(\"x\", 200);\n    let names = p.sources.load().names();\n}\n";
    let layers: &[(&str, &[&str])] = &[
        ("metrics", &[]),
        ("registry", &[]),
        ("reload", &["registry"]),
        ("queue", &[]),
        ("ingest", &["metrics", "registry", "reload", "queue"]),
        ("http", &["ingest", "queue"]),
    ];
    let files =
        |vis: &str| vec![("ingest.rs".to_string(), ingest(vis)), ("http/hooks.rs".to_string(), hooks.to_string())];
    assert_eq!(
        field_back_doors(&files("pub "), layers),
        [
            "http → metrics through ingest::Pipeline.metrics",
            "http → registry through ingest::Pipeline.sources",
            "http → reload through ingest::Pipeline.sources",
        ]
    );
    assert_eq!(field_back_doors(&files(""), layers), Vec::<String>::new(), "private fields are no door");
    let unused = vec![
        ("ingest.rs".to_string(), ingest("pub ")),
        ("http/mod.rs".to_string(), "use crate::queue::Queue;\n".into()),
    ];
    assert_eq!(field_back_doors(&unused, layers), Vec::<String>::new(), "a module that never names the struct");
}

/// Each public field whose type names a module that a user of the field may not import, as
/// "user → module through owner::Struct.field". A user is a top-level module whose (non-test)
/// files import from the owner and name both the struct and the field (as words: a module that
/// passes the struct along without touching the field does not walk through that door).
fn field_back_doors(files: &[(String, String)], layers: &[(&str, &[&str])]) -> Vec<String> {
    let graph = import_graph(files);
    let allowed = |from: &str, to: &str| layers.iter().any(|(m, ok)| *m == from && ok.contains(&to));
    let mut doors = BTreeSet::new();
    for (rel, text) in files.iter().filter(|(rel, _)| !is_test_file(rel)) {
        let owner = rel.split('/').next().unwrap_or_default().trim_end_matches(".rs");
        let names = imported_names(text, module_depth(rel));
        for (strukt, field, ty) in public_fields(text) {
            let reached: BTreeSet<String> = words(&ty)
                .filter_map(|w| names.get(w).cloned())
                .chain(named_modules(&ty, usize::MAX))
                .filter(|m| m != owner)
                .collect();
            for (user, imports) in &graph {
                let uses = module_names(files, user, &strukt) && module_names(files, user, &field);
                if user == owner || !imports.contains(owner) || !uses {
                    continue;
                }
                for m in reached.iter().filter(|m| *m != user && !allowed(user, m)) {
                    doors.insert(format!("{user} → {m} through {owner}::{strukt}.{field}"));
                }
            }
        }
    }
    doors.into_iter().collect()
}

fn is_test_file(rel: &str) -> bool {
    rel.ends_with("/tests.rs") || rel.ends_with("/proptests.rs")
}

/// How many `super::` reach the crate root from `rel`'s code.
fn module_depth(rel: &str) -> usize {
    let parts: Vec<&str> = rel.trim_end_matches(".rs").split('/').collect();
    parts.len() - usize::from(parts.last() == Some(&"mod"))
}

fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|w| !w.is_empty())
}

/// Whether a non-test file of top-level module `module` has `word` as a word.
fn module_names(files: &[(String, String)], module: &str, word: &str) -> bool {
    files.iter().any(|(rel, text)| {
        rel.split('/').next().unwrap_or_default().trim_end_matches(".rs") == module
            && !is_test_file(rel)
            && words(text).any(|w| w == word)
    })
}

/// `(struct, field, type)` of every `pub` or `pub(crate)` field of a braced struct, as
/// rustfmt lays them out (one field per line, a long type continued on the next lines).
fn public_fields(text: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None; // (struct, its closing line)
    let mut field: Option<(String, String)> = None; // (name, type so far)
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let trimmed = code.trim();
        let Some((strukt, close)) = &current else {
            if let Some(rest) = trimmed.strip_prefix("pub struct ").filter(|_| trimmed.ends_with('{')) {
                let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                let indent = &code[..code.len() - code.trim_start().len()];
                current = Some((name, format!("{indent}}}")));
            }
            continue;
        };
        if code.trim_end() == close {
            current = None;
            continue;
        }
        if let Some((_, ty)) = &mut field {
            ty.push_str(trimmed);
        } else if let Some((name, ty)) =
            ["pub ", "pub(crate) "].iter().find_map(|p| trimmed.strip_prefix(p)).and_then(|f| f.split_once(':'))
        {
            field = Some((name.trim().to_string(), ty.trim().to_string()));
        }
        if trimmed.ends_with(',') {
            if let Some((name, ty)) = field.take() {
                out.push((strukt.clone(), name, ty.trim_end_matches(',').to_string()));
            }
        }
    }
    out
}

/// The names a file's `use` statements bring in from other top-level modules: name → module.
fn imported_names(text: &str, depth: usize) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    let mut statement = String::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default().trim();
        if statement.is_empty() && !(code.starts_with("use ") || code.starts_with("pub use ")) {
            continue;
        }
        statement.push_str(code);
        if !code.ends_with(';') {
            continue;
        }
        let path = statement.trim_start_matches("pub ").trim_start_matches("use ").trim_end_matches(';').to_string();
        statement.clear();
        let mut rest = path.as_str();
        let mut ups = 0;
        while let Some(next) = rest.strip_prefix("super::") {
            rest = next;
            ups += 1;
        }
        let from_root = match rest.strip_prefix("crate::") {
            Some(r) => r,
            None if ups > 0 && ups >= depth => rest,
            None => continue,
        };
        use_tree(from_root, None, &mut names);
    }
    names
}

/// Adds the leaves of the use tree `tree` (below the crate root, or below top-level module
/// `top`) to `names`.
fn use_tree(tree: &str, top: Option<&str>, names: &mut BTreeMap<String, String>) {
    let tree = tree.trim();
    if let Some(group) = tree.strip_prefix('{').and_then(|g| g.strip_suffix('}')) {
        let (mut depth, mut start) = (0, 0);
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    use_tree(&group[start..i], top, names);
                    start = i + 1;
                }
                _ => {}
            }
        }
        use_tree(&group[start..], top, names);
        return;
    }
    if tree.is_empty() {
        return;
    }
    match tree.split_once("::") {
        Some((first, rest)) => use_tree(rest, Some(top.unwrap_or(first)), names),
        None => {
            let (name, alias) = tree.split_once(" as ").map_or((tree, tree), |(n, a)| (n.trim(), a.trim()));
            let module = match (top, name) {
                (Some(top), _) => top,
                (None, "self") => return,
                (None, name) => name,
            };
            let name = if name == "self" && alias == "self" { module } else { alias };
            names.insert(name.to_string(), module.to_string());
        }
    }
}
