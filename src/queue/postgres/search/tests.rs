//! The LIKE pattern of a search, and the warning when pg_trgm is refused.

use super::*;

#[test]
fn a_search_text_is_a_substring_pattern_whose_wildcards_are_literal() {
    assert_eq!(like_pattern("disk full"), "%disk full%");
    assert_eq!(like_pattern(r"50%_a\b"), r"%50\%\_a\\b%");
    assert_eq!(like_pattern("été"), "%été%");
}

#[test]
fn a_refused_extension_is_explained_with_what_an_administrator_runs() {
    let refused = Refused {
        error: QueueError::Database("permission denied to create extension \"pg_trgm\"".into()),
        database: "pagerhook".into(),
        role: "relay".into(),
    };
    let advice = refused.advice();
    for part in [
        "a search reads every event",
        "permission denied to create extension",
        "`CREATE EXTENSION pg_trgm;` in database pagerhook",
        "`GRANT CREATE ON DATABASE pagerhook TO relay;`",
        "restart",
    ] {
        assert!(advice.contains(part), "{part:?} missing from: {advice}");
    }
}
