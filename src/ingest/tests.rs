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

/// A small body costs less than the two thread hand-offs of the pool; a large one, where a
/// flood's cost lies, must still leave the event loop.
#[tokio::test]
async fn small_bodies_run_on_the_event_loop_and_large_ones_on_the_pool() {
    let cpu = Cpu::new(1);
    let here = std::thread::current().id();
    let small = cpu.run_for(Cpu::INLINE_MAX_BYTES, || std::thread::current().id()).await;
    assert_eq!(small, here);
    let large = cpu.run_for(Cpu::INLINE_MAX_BYTES + 1, || std::thread::current().id()).await;
    assert_ne!(large, here);
}
