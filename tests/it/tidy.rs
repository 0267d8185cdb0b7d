//! Architecture rules, enforced: which modules may use which crates.

use crate::helpers::root;
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
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files
        .into_iter()
        .filter_map(|p| {
            let rel = p.strip_prefix(&src).unwrap().to_string_lossy().replace('\\', "/");
            let text = std::fs::read_to_string(&p).unwrap();
            (text.contains(needle) && !allowed(&rel)).then_some(rel)
        })
        .collect()
}

#[test]
fn only_http_knows_actix_web() {
    assert_eq!(offenders("actix_web", |f| f.starts_with("http/")), Vec::<String>::new());
}

#[test]
fn only_the_pagerduty_client_and_the_aws_fetcher_talk_upstream() {
    // The AWS fetcher takes only an `AwsUrl`, which cannot name anything but an SNS host.
    let allowed = |f: &str| f == "pagerduty.rs" || f == "source/sns/fetch.rs";
    assert_eq!(offenders("reqwest", allowed), Vec::<String>::new());
}

#[test]
fn the_queue_and_events_know_nothing_of_http_or_pagerduty_s_client() {
    let bad = |f: &str| f.starts_with("queue/") || f.starts_with("event");
    assert_eq!(offenders("crate::pagerduty", |f| !bad(f)), Vec::<String>::new());
    assert_eq!(offenders("crate::http", |f| !bad(f)), Vec::<String>::new());
}

#[test]
fn nothing_reads_the_process_environment_but_config_loading() {
    // Unit tests may: the PostgreSQL queue tests find their server in DATABASE_URL.
    let allowed = |f: &str| f == "config/mod.rs" || f.ends_with("/tests.rs");
    assert_eq!(offenders("std::env::var", allowed), Vec::<String>::new());
}
