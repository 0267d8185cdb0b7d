//! How a search is answered.

use super::*;

#[test]
fn short_texts_and_state_names_are_scanned_and_the_rest_indexed() {
    assert_eq!(plan(None), Plan::Scan);
    assert_eq!(plan(Some("db")), Plan::Scan, "no trigram in two characters");
    assert_eq!(plan(Some("été")), Plan::Indexed("été"), "characters, not bytes");
    assert_eq!(plan(Some("dead")), Plan::Scan, "a state is not indexed");
    assert_eq!(plan(Some("Dead")), Plan::Indexed("Dead"), "a state matches by its exact name only");
    assert_eq!(plan(Some("disk full")), Plan::Indexed("disk full"));
}

#[test]
fn a_phrase_quotes_the_text_and_doubles_its_quotes() {
    assert_eq!(fts5_phrase(r#"say "hi" OR x*"#), r#""say ""hi"" OR x*""#);
}
