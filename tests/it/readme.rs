//! README.md as a newcomer reads it: an introduction, a table of contents that links every
//! section in the order they come, that order going from what it is to the reference, and no
//! benchmark diary (bench/README.md keeps the figures).

use crate::helpers::root;

/// The `## ` headings outside code blocks, in order.
fn headings(text: &str) -> Vec<String> {
    let mut fenced = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        } else if let Some(h) = line.strip_prefix("## ").filter(|_| !fenced) {
            out.push(h.trim().to_string());
        }
    }
    out
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.
fn anchor(heading: &str) -> String {
    let kept: String =
        heading.to_lowercase().chars().filter(|c| c.is_alphanumeric() || *c == '-' || *c == ' ' || *c == '_').collect();
    kept.replace(' ', "-")
}

#[test]
fn readme_opens_with_contents_linking_every_section_in_reading_order() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let all = headings(&readme);
    assert_eq!(all.first().map(String::as_str), Some("Contents"), "{all:?}");
    let sections = &all[1..];
    let contents = readme.split_once("## Contents\n").unwrap().1.split("\n## ").next().unwrap();
    let mut at = 0;
    for h in sections {
        let link = format!("(#{})", anchor(h));
        let found =
            contents[at..].find(&link).unwrap_or_else(|| panic!("Contents lacks {link} for {h:?}, or not in order"));
        at += found + link.len();
    }
    let position = |h: &str| sections.iter().position(|s| s == h).unwrap_or_else(|| panic!("no section {h:?}"));
    let order = [
        "Quick start",
        "Point GitHub at it",
        "Write your own mapping",
        "Operating pagerhook",
        "Security",
        "Configuration",
    ];
    for pair in order.windows(2) {
        assert!(position(pair[0]) < position(pair[1]), "{:?} must come before {:?}: {sections:?}", pair[0], pair[1]);
    }
}

#[test]
fn benchmark_figures_live_in_bench_readme_not_in_readme() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let bench = std::fs::read_to_string(root().join("bench/README.md")).unwrap();
    assert!(!readme.contains("req/s ("), "README.md still holds benchmark figures");
    assert!(bench.contains("bare handler 76 321 req/s"), "bench/README.md lost the figures README had");
    assert!(readme.contains("[bench/README.md](bench/README.md)"), "README.md points to the figures");
}
