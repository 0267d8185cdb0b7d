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
        summary: None,
        pagerduty_dedup_key: None,
        own: false,
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

/// Text a payload chose (a dedup_key, an error quoting it), with a screen clear, a line break
/// that would forge a row, and a right-to-left override.
const HOSTILE: &str = "k\x1b[2J\r\nFAKE ROW\u{202e}tuo";

fn assert_printable(lines: &[String]) {
    for l in lines {
        assert!(!l.chars().any(|c| c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c)), "{l:?}");
    }
}

#[test]
fn the_deliveries_table_escapes_what_a_payload_wrote() {
    let row = EventSummary {
        id: 1,
        inbound_id: String::new(),
        source: "gh".into(),
        kind: "alert".into(),
        action: Some("trigger".into()),
        dedup_key: Some(HOSTILE.into()),
        state: crate::queue::EventState::Dead,
        attempts: 1,
        created_at: 0,
        last_error: Some(format!("PagerDuty refused {HOSTILE}")),
        summary: None,
        pagerduty_dedup_key: Some(HOSTILE.replace('k', "j")),
        own: false,
    };
    let lines = table_lines(&[row]);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert_printable(&lines);
    assert!(lines[1].contains(r"k\u{1b}[2J\r\nFAKE ROW\u{202e}tuo"), "{lines:#?}");
}

#[test]
fn the_dead_letter_list_escapes_what_a_payload_wrote() {
    let row = DeadLetter {
        id: "7".into(),
        kind: "event".into(),
        source: "gh".into(),
        inbound_id: String::new(),
        at: 0,
        reason: format!("summary: missing field in {HOSTILE}"),
        action: Some("trigger".into()),
        dedup_key: Some(HOSTILE.into()),
        attempts: 1,
    };
    let lines = dead_letter_lines(&[row]);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert_printable(&lines);
    assert!(lines[1].contains(r"FAKE ROW\u{202e}tuo"), "{lines:#?}");
}
