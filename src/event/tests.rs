use super::*;
use proptest::prelude::*;

/// The PagerDuty body built as a `Value` (the body plus its routing key): the reference
/// `Event::wire_json`'s bytes must equal.
fn wire_body(e: &Event) -> Value {
    let mut b = e.body().clone();
    b.as_object_mut().expect("event body is an object").insert("routing_key".into(), e.routing_key.expose().into());
    b
}

fn key() -> RoutingKey {
    RoutingKey::parse(Secret::new("0123456789abcdef0123456789abcdef")).unwrap()
}

fn trigger() -> AlertDraft {
    AlertDraft {
        action: "trigger".into(),
        dedup_key: Some("k".into()),
        summary: Some("disk full".into()),
        source: Some("db-1".into()),
        ..AlertDraft::default()
    }
}

#[test]
fn routing_keys_must_have_pagerduty_s_form_and_never_print() {
    assert!(RoutingKey::parse(Secret::new("short")).is_err());
    assert!(RoutingKey::parse(Secret::new("0123456789abcdef0123456789abcde!")).is_err());
    let k = key();
    assert_eq!(format!("{k:?}"), "RoutingKey(***)");
    assert!(!k.is_ruleset());
    assert!(RoutingKey::parse(Secret::new("R0123456789abcdef0123456789abcde")).unwrap().is_ruleset());
}

#[test]
fn a_trigger_needs_summary_and_source() {
    let mut d = trigger();
    d.source = Some("  ".into());
    assert_eq!(Event::alert(key(), d).unwrap_err(), EventError::Required("source"));
    let mut d = trigger();
    d.summary = None;
    assert_eq!(Event::alert(key(), d).unwrap_err(), EventError::Required("summary"));
}

#[test]
fn a_resolve_needs_only_its_dedup_key() {
    let d = AlertDraft { action: "resolve".into(), dedup_key: Some("k".into()), ..AlertDraft::default() };
    let e = Event::alert(key(), d).unwrap();
    assert_eq!(e.body(), &serde_json::json!({"event_action": "resolve", "dedup_key": "k"}));
    let d = AlertDraft { action: "resolve".into(), ..AlertDraft::default() };
    assert_eq!(Event::alert(key(), d).unwrap_err(), EventError::Required("dedup_key"));
}

#[test]
fn severity_and_action_are_checked() {
    let mut d = trigger();
    d.severity = Some("sev1".into());
    assert_eq!(Event::alert(key(), d).unwrap_err(), EventError::Severity("sev1".into()));
    let mut d = trigger();
    d.action = "page".into();
    assert_eq!(Event::alert(key(), d).unwrap_err(), EventError::Action("page".into()));
    let mut d = trigger();
    d.severity = Some(" Warning ".into());
    assert_eq!(Event::alert(key(), d).unwrap().body()["payload"]["severity"], "warning");
}

#[test]
fn long_summaries_are_truncated_with_a_marker() {
    let mut d = trigger();
    d.summary = Some("é".repeat(2000));
    let e = Event::alert(key(), d).unwrap();
    let s = e.body()["payload"]["summary"].as_str().unwrap();
    assert_eq!(s.chars().count(), SUMMARY_MAX_CHARS);
    assert!(s.ends_with(TRUNCATION_MARKER));
    assert_eq!(e.notes().len(), 1);
}

#[test]
fn long_dedup_keys_stay_distinct_and_stable() {
    let a = DedupKey::new(&"a".repeat(300)).unwrap();
    let b = DedupKey::new(&format!("{}b", "a".repeat(299))).unwrap();
    assert_eq!(a.as_str().chars().count(), DEDUP_KEY_MAX_CHARS);
    assert_ne!(a, b);
    assert_eq!(a, DedupKey::new(&"a".repeat(300)).unwrap());
}

/// PagerDuty documents 255 characters but does not say which: a key of multi-byte text within
/// 255 characters is over 255 bytes (and UTF-16 units, for text outside the BMP). Counting
/// bytes fits every reading.
#[test]
fn multi_byte_dedup_keys_are_hashed_to_fit_in_255_bytes() {
    let accented = DedupKey::new(&format!("grafana/{}", "é".repeat(200))).unwrap();
    assert!(accented.as_str().len() <= DEDUP_KEY_MAX_CHARS, "{} bytes", accented.as_str().len());
    let emoji = DedupKey::new(&"🔥".repeat(100)).unwrap();
    assert!(emoji.as_str().len() <= DEDUP_KEY_MAX_CHARS, "{} bytes", emoji.as_str().len());
    assert!(emoji.as_str().starts_with("🔥"), "the start stays readable: {}", emoji.as_str());
    assert_ne!(DedupKey::new(&"🔥".repeat(101)).unwrap(), emoji);
    let short = "grafana/é-ü";
    assert_eq!(DedupKey::new(short).unwrap().as_str(), short, "a key that fits is kept as it is");
}

#[test]
fn non_https_images_are_dropped() {
    let mut d = trigger();
    d.images = vec![
        Image { src: "http://example.com/a.png".into(), href: None, alt: None },
        Image { src: "https://example.com/b.png".into(), href: None, alt: Some("b".into()) },
    ];
    let e = Event::alert(key(), d).unwrap();
    assert_eq!(e.body()["images"], serde_json::json!([{"src": "https://example.com/b.png", "alt": "b"}]));
    assert_eq!(e.notes().len(), 1);
}

#[test]
fn oversized_custom_details_are_shrunk_not_refused() {
    let mut d = trigger();
    d.custom_details = Some(serde_json::json!({ "log": "x".repeat(600 * 1024) }));
    let e = Event::alert(key(), d).unwrap();
    assert!(serde_json::to_vec(&wire_body(&e)).unwrap().len() <= EVENT_MAX_BYTES);
    assert!(e.body()["payload"]["custom_details"]["pagerhook_truncated"].is_string());
}

#[test]
fn timestamps_are_normalised_or_dropped() {
    let mut d = trigger();
    d.timestamp = Some("2021-03-16T17:03:27.154+0000".into());
    let e = Event::alert(key(), d).unwrap();
    assert_eq!(e.body()["payload"]["timestamp"], "2021-03-16T17:03:27.154Z");
    let mut d = trigger();
    d.timestamp = Some("yesterday".into());
    let e = Event::alert(key(), d).unwrap();
    assert!(e.body()["payload"].get("timestamp").is_none());
    assert_eq!(e.notes().len(), 1);
}

#[test]
fn the_wire_body_alone_carries_the_routing_key() {
    let e = Event::alert(key(), trigger()).unwrap();
    assert!(e.body().get("routing_key").is_none());
    assert_eq!(wire_body(&e)["routing_key"], "0123456789abcdef0123456789abcdef");
    let c = Event::change(key(), ChangeDraft { summary: Some("deployed".into()), ..ChangeDraft::default() }).unwrap();
    assert_eq!(c.kind().path(), "/v2/change/enqueue");
    assert!(c.order_key().is_none(), "change events are not ordered");
    assert!(e.order_key().is_some());
}

#[test]
fn the_wire_json_is_the_wire_body_byte_for_byte() {
    let same = |e: &Event| {
        assert_eq!(e.wire_json(), serde_json::to_vec(&wire_body(e)).unwrap());
        // Read back from the queue's text, the event sends the same bytes without building
        // its body.
        let stored = Event::from_stored(e.kind(), e.routing_key().clone(), e.text().to_string()).unwrap();
        assert_eq!((stored.action(), stored.dedup_key()), (e.action(), e.dedup_key()));
        assert_eq!(stored.wire_json(), e.wire_json());
        assert!(stored.body.get().is_none(), "delivery's path parses no body");
        assert_eq!(stored.body(), e.body());
    };
    let full = AlertDraft {
        client: Some("ci".into()),
        client_url: Some("https://ci.example.com".into()),
        links: vec![Link { href: "https://example.com".into(), text: Some("run".into()) }],
        images: vec![Image { src: "https://example.com/a.png".into(), href: None, alt: None }],
        custom_details: Some(serde_json::json!({ "z": 1, "routing_key": "not the key", "a": [true] })),
        ..trigger()
    };
    same(&Event::alert(key(), full).unwrap());
    same(&Event::alert(key(), trigger()).unwrap());
    // Only `dedup_key` and `event_action`: the routing key comes last.
    same(
        &Event::alert(
            key(),
            AlertDraft { action: "resolve".into(), dedup_key: Some("k".into()), ..AlertDraft::default() },
        )
        .unwrap(),
    );
    // A change event: `links` and `payload`.
    let links = vec![Link { href: "https://example.com".into(), text: None }];
    same(
        &Event::change(key(), ChangeDraft { summary: Some("deployed".into()), links, ..ChangeDraft::default() })
            .unwrap(),
    );
}

#[test]
fn a_stored_body_that_is_not_an_event_object_is_refused_not_sent() {
    for text in ["", "[]", "\"x\"", "{\"event_action\": 1}", "{\"dedup_key\": [\"k\"]}", "{\"payload\": {}"] {
        assert!(Event::from_stored(EventKind::Alert, key(), text.into()).is_err(), "{text}");
    }
    // A body read back skips what it does not need unchecked: one a `Value` cannot hold is
    // sent as stored, and reads as null rather than panicking.
    let odd = Event::from_stored(EventKind::Alert, key(), r#"{"event_action":"trigger","x":"\ud800"}"#.into()).unwrap();
    assert_eq!(odd.action(), Some(Action::Trigger));
    assert!(String::from_utf8(odd.wire_json()).unwrap().starts_with(r#"{"event_action":"trigger","x":"\ud800","#));
    assert_eq!(odd.body(), &Value::Null);
    // Any object is framed correctly, the empty one included.
    let e = Event::from_stored(EventKind::Change, key(), "{ }".into()).unwrap();
    let wire: Value = serde_json::from_slice(&e.wire_json()).unwrap();
    assert_eq!(wire, serde_json::json!({ "routing_key": "0123456789abcdef0123456789abcdef" }));
}

/// A trigger whose request body, routing key included, is exactly `size` bytes.
fn trigger_of_wire_size(size: usize) -> AlertDraft {
    let mut d = trigger();
    d.custom_details = Some(serde_json::json!({ "log": "" }));
    let base = serde_json::to_vec(&wire_body(&Event::alert(key(), d.clone()).unwrap())).unwrap().len();
    d.custom_details = Some(serde_json::json!({ "log": "x".repeat(size - base) }));
    d
}

#[test]
fn the_size_limit_counts_the_routing_key_and_is_512_000_bytes() {
    let wire = |e: &Event| serde_json::to_vec(&wire_body(e)).unwrap().len();
    let e = Event::alert(key(), trigger_of_wire_size(512_000)).unwrap();
    assert_eq!(wire(&e), 512_000, "an event of exactly the limit is sent as it is");
    assert!(e.notes().is_empty());
    // One byte over (and anything up to the old 512 KiB reading) is shrunk.
    for size in [512_001, 520_000, 524_288] {
        let e = Event::alert(key(), trigger_of_wire_size(size)).unwrap();
        assert!(wire(&e) <= 512_000, "{size}: {}", wire(&e));
        assert!(e.body()["payload"]["custom_details"]["pagerhook_truncated"].is_string(), "{size}");
    }
}

proptest! {
    // Each case serialises about a megabyte several times.
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn no_event_is_ever_sent_over_the_limit(extra in 0usize..20_000, wide in any::<bool>()) {
        let mut d = trigger();
        // Multi-byte and escaped characters make bytes and characters differ.
        let unit = if wide { "é\"\u{1}" } else { "x" };
        d.custom_details = Some(serde_json::json!({ "log": unit.repeat((500_000 + extra * 4) / unit.len()) }));
        let e = Event::alert(key(), d).unwrap();
        prop_assert!(serde_json::to_vec(&wire_body(&e)).unwrap().len() <= EVENT_MAX_BYTES);
    }
}

proptest! {

    #[test]
    fn truncation_stays_within_limits_on_char_boundaries(s in "\\PC{0,3000}", max in 30usize..2000) {
        let (out, cut) = truncate_chars(&s, max);
        prop_assert!(out.chars().count() <= max.max(s.chars().count().min(max)));
        prop_assert_eq!(cut, s.chars().count() > max);
        if !cut { prop_assert_eq!(out, s); }
    }

    #[test]
    fn any_dedup_key_fits(s in "\\PC{1,600}") {
        if let Ok(k) = DedupKey::new(&s) {
            prop_assert!(k.as_str().len() <= DEDUP_KEY_MAX_CHARS);
        }
    }
}

#[test]
fn an_escalated_trigger_says_so_links_its_first_incident_and_keeps_what_travels_beside_it() {
    let from = DedupKey::new("k").unwrap();
    let to = escalation_key(&from, Severity::Critical);
    let critical = |details: Option<Value>| {
        let d = AlertDraft { severity: Some("critical".into()), custom_details: details, ..trigger() };
        Event::alert(key(), d).unwrap().with_rule("firing").with_sequence("7").with_escalate()
    };
    let link = json!({ "dedup_key": "k", "severity": "warning" });
    let up =
        critical(Some(json!({ "host": "db-1" }))).escalated(to.clone(), &from, Severity::Warning).unwrap().unwrap();
    assert_eq!((up.dedup_key(), up.severity()), (Some(&to), Some(Severity::Critical)));
    assert_eq!(up.body()["dedup_key"], "k~escalated-critical");
    assert_eq!(up.summary(), Some("[escalated from warning] disk full"));
    assert_eq!(up.body()["payload"]["custom_details"], json!({ "host": "db-1", "escalated_from": link }));
    assert_eq!((up.rule(), up.sequence(), up.escalates()), (Some("firing"), Some(Sequence::Number(7)), true));
    assert_eq!(up.order_key(), Some(lane(&key(), &to)));
    let bare = critical(None).escalated(to.clone(), &from, Severity::Warning).unwrap().unwrap();
    assert_eq!(bare.body()["payload"]["custom_details"], json!({ "escalated_from": link }));
    let text = critical(Some(json!("plain"))).escalated(to.clone(), &from, Severity::Warning).unwrap().unwrap();
    assert_eq!(text.body()["payload"]["custom_details"], json!({ "details": "plain", "escalated_from": link }));
    // Still within PagerDuty's limits: a summary at its limit is cut again, with a note.
    let long = AlertDraft { summary: Some("x".repeat(SUMMARY_MAX_CHARS)), ..trigger() };
    let long = Event::alert(key(), long).unwrap().escalated(to.clone(), &from, Severity::Warning).unwrap().unwrap();
    assert_eq!(long.summary().unwrap().chars().count(), SUMMARY_MAX_CHARS);
    assert!(long.notes().iter().any(|n| n.contains("summary truncated")), "{:?}", long.notes());
    let resolve = Event::alert(key(), AlertDraft { action: "resolve".into(), ..trigger() }).unwrap();
    assert!(resolve.escalated(to.clone(), &from, Severity::Warning).is_none(), "only a trigger escalates");
    let closes = resolve.refiled(to.clone()).unwrap();
    assert_eq!((closes.action(), closes.dedup_key()), (Some(Action::Resolve), Some(&to)));
    assert_eq!(closes.body(), &json!({ "event_action": "resolve", "dedup_key": "k~escalated-critical" }));
}
