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

/// A source `each` (`unmatched = "keep"`) making one alert per item of `body.alerts` whose
/// `page` is true (an action that renders empty skips the event), its summary the item's
/// strict `name`.
fn each_source(dir: &std::path::Path) -> Arc<Hook> {
    let mapping = "[[rule]]\nname = \"each\"\nemit = \"alert\"\nfor_each = \"body.alerts\"\naction = \"{{#if item.page}}trigger{{/if}}\"\ndedup_key = \"i-{{item.id}}\"\nsummary = \"{{item.name}}\"\nsource = \"s\"\n";
    std::fs::write(dir.join("each.toml"), mapping).unwrap();
    let text = "[pagerduty]\nrouting_key = \"0123456789abcdef0123456789abcdef\"\n[[source]]\nname = \"each\"\nkind = \"generic\"\nverify = { scheme = \"none\" }\nmappings = [\"each.toml\"]\nunmatched = \"keep\"\n";
    let cfg = crate::config::Config::from_str(text, &dir.join("pagerhook.toml"), &|_| None).unwrap();
    let (sources, _) = Sources::build(&cfg).unwrap();
    sources.get("each").unwrap().clone()
}

fn payload(hook: &Hook, body: serde_json::Value) -> Verified {
    let headers = Headers::from_pairs([("content-type", "application/json")]);
    hook.source().trusted(headers, "", body.to_string().into()).unwrap()
}

#[test]
fn a_failed_item_is_kept_alone_and_its_replay_never_maps_the_others_again() {
    let dir = tempfile::tempdir().unwrap();
    let hook = each_source(dir.path());
    let body = serde_json::json!({"alerts": [{"id": 0, "page": true, "name": "a"}, {"id": 1, "page": true}]});
    let Decision::Partial { tally, failed, .. } = decide(&hook, payload(&hook, body), 0, None) else { panic!() };
    assert_eq!((tally.len(), failed.len()), (1, 1));
    let text = failed_text(&failed);
    assert!(text.starts_with("1 item failed, kept for replay: item 1: rule 'each'"), "{text}");
    let only = [ItemRef { rule: "each".into(), item: Some(1) }];
    // Fixed by the sender's data: only item 1 is mapped.
    let fixed =
        serde_json::json!({"alerts": [{"id": 0, "page": true, "name": "a"}, {"id": 1, "page": true, "name": "b"}]});
    let Decision::Map { tally, .. } = decide(&hook, payload(&hook, fixed), 0, Some(&only)) else { panic!() };
    assert_eq!(tally.len(), 1, "item 1 alone");
    // It now maps to nothing: done (ignored), never an `unmatched` letter whose replay would
    // map the whole payload again.
    let quiet = serde_json::json!({"alerts": [{"id": 0, "page": true, "name": "a"}, {"id": 1, "page": false}]});
    let decision = decide(&hook, payload(&hook, quiet), 0, Some(&only));
    assert!(matches!(decision, Decision::Ignore(IgnoreReason::NoRuleMatched)), "replay of the item alone");
}
