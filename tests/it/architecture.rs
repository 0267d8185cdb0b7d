//! ARCHITECTURE.md stays true to the code: every code symbol and file it names exists, and its
//! layer table is the tidy test's `LAYERS`. A renamed type or a moved file fails here, so the
//! document cannot quietly drift the way it did before these tests.

use crate::helpers::root;
use crate::tidy::LAYERS;
use std::collections::BTreeSet;
use std::path::Path;

/// Names ARCHITECTURE.md quotes that belong to other crates, SQL or HTTP rather than to ours,
/// and the made-up paths of its examples.
const FOREIGN: &[&str] = &[
    "web::Json",
    "set_var",
    "lock_not_available",
    "Cookie",
    "HttpResponse::build",
    "HttpResponse::Ok()",
    "src/foo.rs",
    "src/foo/tests.rs",
];

/// The Rust, JavaScript and shell files of the repository, with their text.
fn code_files() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for dir in ["src", "tests", "examples", "bench"] {
        walk(&root(), &root().join(dir), &mut out);
    }
    out
}

fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            if !p.ends_with("node_modules") {
                walk(base, &p, out);
            }
        } else if p.extension().is_some_and(|x| matches!(x.to_str(), Some("rs" | "mjs" | "js" | "sh" | "html" | "css")))
        {
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            out.push((rel, std::fs::read_to_string(&p).unwrap_or_default()));
        }
    }
}

/// Every `code span` of a markdown text.
fn spans(doc: &str) -> BTreeSet<String> {
    doc.lines().flat_map(|l| l.split('`').skip(1).step_by(2).map(str::to_owned)).filter(|s| !s.is_empty()).collect()
}

fn is_ident(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_') && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// `word` occurs in `text` with no identifier character on either side.
fn has_word(text: &str, word: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word).any(|(i, _)| {
        !text[..i].chars().next_back().is_some_and(ident) && !text[i + word.len()..].chars().next().is_some_and(ident)
    })
}

/// The file defines the type `ty`, or implements something for it.
fn defines_type(text: &str, ty: &str) -> bool {
    let item = ["struct ", "enum ", "trait ", "type ", "union "];
    text.lines().map(|l| l.trim_start().trim_start_matches("pub(crate) ").trim_start_matches("pub ")).any(|l| {
        let header = l.split(['{', '(', ';']).next().unwrap_or("");
        (l.starts_with("impl") && has_word(header, ty)) || item.iter().any(|kw| has_word(header, &format!("{kw}{ty}")))
    })
}

/// A file path the document names, relative to the root, `src/` or any folder below them.
fn file_exists(name: &str, files: &[(String, String)]) -> bool {
    let bare = name.trim_end_matches('/');
    root().join(bare).exists()
        || root().join("src").join(bare).exists()
        || files.iter().any(|(f, _)| f.ends_with(&format!("/{bare}")) || f.contains(&format!("/{bare}/")))
}

/// Why a span of the document names nothing in the code, or `None` when it is fine (or is not
/// a code symbol: prose, a config value, a URL, a shell command).
fn missing(span: &str, files: &[(String, String)]) -> Option<String> {
    if FOREIGN.contains(&span) {
        return None;
    }
    let path_like = |s: &str| !s.contains(|c: char| c.is_whitespace() || "<>*{}[]:=\"'".contains(c));
    let is_file = [".rs", ".mjs", ".sh", ".html", ".css", ".js"].iter().any(|e| span.ends_with(e))
        || (span.ends_with('/') && span.len() > 1);
    if is_file && path_like(span) {
        return (!file_exists(span, files)).then(|| format!("file `{span}`"));
    }
    let sym = span.strip_suffix("()").unwrap_or(span);
    let segs: Vec<&str> = sym.split("::").collect();
    if !segs.iter().all(|s| is_ident(s)) {
        return None;
    }
    let code = || files.iter().map(|(_, t)| t.as_str());
    let [.., owner, last] = segs[..] else {
        // A lone name is checked when it is a type or a constant, not a word of prose.
        let named = sym.starts_with(|c: char| c.is_ascii_uppercase()) || sym.contains('_');
        return (named && !code().any(|t| has_word(t, sym))).then(|| format!("name `{span}`"));
    };
    if owner.starts_with(|c: char| c.is_ascii_uppercase()) {
        let homes: Vec<&str> = code().filter(|t| defines_type(t, owner)).collect();
        if homes.is_empty() {
            return Some(format!("type `{owner}` (in `{span}`)"));
        }
        return (!homes.iter().any(|t| has_word(t, last))).then(|| format!("`{last}` of `{owner}` (in `{span}`)"));
    }
    let in_module: Vec<&str> = files
        .iter()
        .filter(|(f, _)| f.ends_with(&format!("/{owner}.rs")) || f.contains(&format!("/{owner}/")))
        .map(|(_, t)| t.as_str())
        .collect();
    if in_module.is_empty() {
        return Some(format!("module `{owner}` (in `{span}`)"));
    }
    (!in_module.iter().any(|t| has_word(t, last))).then(|| format!("`{last}` in module `{owner}` (in `{span}`)"))
}

#[test]
fn every_code_symbol_and_file_architecture_md_names_exists() {
    let doc = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let files = code_files();
    let gone: Vec<String> = spans(&doc).iter().filter_map(|s| missing(s, &files)).collect();
    assert!(gone.is_empty(), "ARCHITECTURE.md names what the code does not have:\n{}", gone.join("\n"));
}

#[test]
fn the_symbol_check_finds_a_planted_stale_name() {
    let files = code_files();
    assert_eq!(missing("Queue", &files), None);
    assert_eq!(missing("Event::wire_json", &files), None);
    assert_eq!(missing("ingest.rs", &files), None);
    // Built at run time: written out here, each name would exist in this very file.
    let planted = |s: &str| s.replace('~', "NoSuch");
    assert!(missing(&planted("Event::~method"), &files).is_some());
    assert!(missing(&planted("~Type"), &files).is_some());
    assert!(missing(&planted("queue::~Thing"), &files).is_some());
    assert!(missing(&planted("src/~file.rs"), &files).is_some());
    // Prose and configuration in backticks are not code symbols.
    assert_eq!(missing("POST /hooks/{source}", &files), None);
    assert_eq!(missing("pending", &files), None);
}

/// The layer table of ARCHITECTURE.md as (module, may import) rows; "nothing of the crate" is
/// an empty list.
fn documented_layers(doc: &str) -> Vec<(String, BTreeSet<String>)> {
    let table = doc.split("| module | may import |").nth(1).expect("ARCHITECTURE.md has the layer table");
    let mut rows = Vec::new();
    for line in table.lines().skip(2).take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // Module names only: a cell may also quote the one type an edge is for.
        let names = |cell: &str| {
            spans(cell).into_iter().filter(|s| s.starts_with(|c: char| c.is_ascii_lowercase())).collect::<BTreeSet<_>>()
        };
        for module in names(cells[1]) {
            rows.push((module, names(cells[2])));
        }
    }
    rows
}

#[test]
fn the_layer_table_of_architecture_md_is_the_tidy_test_s() {
    let doc = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let mut documented = documented_layers(&doc);
    documented.sort();
    let mut enforced: Vec<(String, BTreeSet<String>)> =
        LAYERS.iter().map(|(m, deps)| (m.to_string(), deps.iter().map(|d| d.to_string()).collect())).collect();
    enforced.sort();
    assert_eq!(documented, enforced, "ARCHITECTURE.md's layer table and tidy.rs's LAYERS disagree");
}

/// The error types the code defines: every `enum` or `struct` whose name ends in `Error` or
/// `Errors` in `src/` (tests excepted).
fn error_types(files: &[(String, String)]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (_, text) in files.iter().filter(|(f, _)| f.starts_with("src/") && !f.ends_with("tests.rs")) {
        for line in text.lines().map(str::trim_start) {
            let line = line.strip_prefix("pub(crate) ").or_else(|| line.strip_prefix("pub ")).unwrap_or(line);
            let Some(rest) = line.strip_prefix("enum ").or_else(|| line.strip_prefix("struct ")) else { continue };
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if name.ends_with("Error") || name.ends_with("Errors") {
                out.insert(name);
            }
        }
    }
    out
}

#[test]
fn the_errors_paragraph_names_every_error_type() {
    let doc = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let para = doc.split("**Errors.**").nth(1).and_then(|p| p.split("\n\n").next()).expect("an **Errors.** paragraph");
    let named = spans(para);
    let unnamed: Vec<String> = error_types(&code_files()).into_iter().filter(|e| !named.contains(e)).collect();
    assert!(unnamed.is_empty(), "ARCHITECTURE.md's **Errors.** paragraph does not name {unnamed:?}");
}
