use super::*;

#[test]
fn deliveries_columns_fit_their_longest_value() {
    let row = |id: i64, source: &str, state: EventState, action: Option<&str>| EventSummary {
        id,
        inbound_id: String::new(),
        source: source.into(),
        kind: "alert".into(),
        action: action.map(str::to_string),
        dedup_key: Some(format!("key-{id}")),
        state,
        attempts: 1,
        created_at: 0,
        last_error: None,
        pagerduty_dedup_key: None,
    };
    let rows = [
        row(7, "a-rather-long-source-name", EventState::DryRun, Some("acknowledge")),
        row(123456789, "gh", EventState::Collapsed, None),
    ];
    let lines = table_lines(&rows);
    let at = |l: &String, needle: &str| l.find(needle).unwrap_or_else(|| panic!("{needle} in {l}"));
    let start = at(&lines[0], "DEDUP_KEY");
    assert_eq!(at(&lines[1], "key-7"), start, "{lines:#?}");
    assert_eq!(at(&lines[2], "key-123456789"), start, "{lines:#?}");
    assert_eq!(at(&lines[1], "dry_run"), at(&lines[2], "collapsed"), "{lines:#?}");
}
