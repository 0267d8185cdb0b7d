use super::*;

#[test]
fn reserved_origins_are_no_source_s_name() {
    assert_eq!(Origin::of(OPERATOR), Origin::Operator);
    assert_eq!(Origin::of(PAGERHOOK), Origin::Pagerhook);
    assert_eq!(Origin::of("github"), Origin::Source("github"));
    assert_eq!(Origin::of("github").as_str(), "github");
}

#[test]
fn a_trigger_s_title_is_read_from_its_payload() {
    let body = r#"{"event_action":"trigger","payload":{"summary":"disk","severity":"warning","source":"x"}}"#;
    assert_eq!(title(body), (Some("warning".into()), Some("disk".into())));
    assert_eq!(title("{}"), (None, None));
}

/// As `sql`'s statements: SQLite numbers `$n` by first appearance, so each is first written in
/// ascending order, or the two backends would bind different values.
#[test]
fn each_statement_writes_its_parameters_first_in_ascending_order() {
    for sql in [LIST, OPEN_BY_SOURCE, OPEN_LANES, OPENER, LATER_IN_LANE, PRUNE, SENT, TRIGGER, ACKNOWLEDGE, RESOLVE] {
        let mut first = Vec::new();
        for n in
            sql.split('$').skip(1).filter_map(|r| r.split(|c: char| !c.is_ascii_digit()).next()?.parse::<usize>().ok())
        {
            if !first.contains(&n) {
                first.push(n);
            }
        }
        assert_eq!(first, (1..=first.len()).collect::<Vec<_>>(), "{sql}");
    }
}
