use super::*;
use handlebars::RenderErrorReason;
use std::fmt::Write as _;

/// The README's helper table as [`HELPERS`] makes it.
fn readme_table() -> String {
    let mut out = String::from("| helper | gives |\n|---|---|\n");
    for s in HELPERS {
        let _ = writeln!(out, "| `{}` | {} |", s.usage, s.meaning);
    }
    out
}

const BEGIN: &str = "<!-- helpers: the table HELPERS in src/mapping/helpers.rs makes; a test compares them -->\n";
const END: &str = "<!-- end of helpers -->";

#[test]
fn the_readme_lists_the_helpers_the_table_holds() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme.find(BEGIN).map(|i| i + BEGIN.len()).expect("README.md has the helpers' markers");
    let end = start + readme[start..].find(END).expect("README.md has the end of helpers marker");
    let want = readme_table();
    assert!(
        readme[start..end] == want,
        "README.md's helper table is not the one HELPERS makes; put this between its markers:\n\n{want}"
    );
}

#[test]
fn each_helper_is_in_the_table_once() {
    let mut names: Vec<&str> = HELPERS.iter().map(|s| s.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), HELPERS.len());
    for s in HELPERS {
        assert!(s.args.0 <= s.args.1 && !s.meaning.is_empty(), "{s:?}");
        assert!(s.usage.trim_start_matches('#').starts_with(s.name), "{s:?}");
    }
}

/// Whether rendering a call of `s` in `hb` finds the helper.
fn found(hb: &mut Handlebars<'static>, s: &Spec) -> bool {
    let args = vec!["1"; s.args.0].join(" ");
    let call = match s.form {
        Form::Block(_) => format!("{{{{#{} {args}}}}}x{{{{/{}}}}}", s.name, s.name),
        Form::Value { .. } => format!("{{{{{} {args}}}}}", s.name),
    };
    hb.register_template_string("t", &call).unwrap();
    match hb.render("t", &serde_json::json!({})) {
        Ok(_) => true,
        Err(e) => !matches!(e.reason(), RenderErrorReason::HelperNotFound(_)),
    }
}

/// Registration and the lint read one table: every helper the lint lets through is one both
/// registries have (else `check` would pass a mapping that fails every webhook), handlebars'
/// own ones because handlebars has them.
#[test]
fn every_helper_in_the_table_is_registered() {
    let mut plain = Handlebars::new();
    plain.set_strict_mode(true);
    for s in HELPERS {
        assert_eq!(found(&mut plain, s), matches!(s.handlebars, Def::Builtin), "{s:?}");
        for strict in [true, false] {
            assert!(found(&mut super::super::registry(strict), s), "{s:?}");
        }
    }
}
