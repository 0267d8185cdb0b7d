use super::*;

#[test]
fn an_ignore_reason_reads_and_serialises_as_the_text_senders_saw_before() {
    assert_eq!(IgnoreReason::NoRuleMatched.to_string(), "no rule matched");
    assert_eq!(IgnoreReason::BySource("ping").to_string(), "ping");
    let replayed = serde_json::to_value(Replayed::Ignored { reason: IgnoreReason::NoRuleMatched }).unwrap();
    assert_eq!(replayed, serde_json::json!({ "outcome": "ignored", "reason": "no rule matched" }));
    let preview = Preview { ignored: Some(IgnoreReason::BySource("subscription confirmation")), events: Vec::new() };
    let preview = serde_json::to_value(preview).unwrap();
    assert_eq!(preview, serde_json::json!({ "ignored": "subscription confirmation", "events": [] }));
}
