use super::*;
use serde_json::json;

const RK: &str = "R0UTINGKEY0000000000000000000001";

fn trigger(key: &str, summary: &str, severity: &str) -> Value {
    json!({"event_action": "trigger", "dedup_key": key, "payload": {"summary": summary, "severity": severity, "source": "s"}})
}

fn act(action: &str, key: &str) -> Value {
    json!({"event_action": action, "dedup_key": key})
}

#[test]
fn an_incident_keeps_its_first_triggers_title_and_severity() {
    let mut pd = Incidents::new();
    assert_eq!(pd.apply(RK, &trigger("k", "disk 80% full", "warning")), Effect::Opened);
    assert_eq!(pd.apply(RK, &trigger("k", "disk 99% full", "critical")), Effect::Deduplicated);
    assert_eq!(pd.open().len(), 1);
    assert_eq!((pd.open()[0].title.as_str(), pd.open()[0].severity.as_str()), ("disk 80% full", "warning"));
    assert_eq!(pd.pages(), 1);
}

#[test]
fn a_trigger_after_a_resolve_opens_a_new_incident_and_pages_again() {
    let mut pd = Incidents::new();
    pd.apply(RK, &trigger("k", "first", "error"));
    assert_eq!(pd.apply(RK, &act("resolve", "k")), Effect::Resolved);
    assert!(pd.open().is_empty());
    assert_eq!(pd.apply(RK, &trigger("k", "second", "critical")), Effect::Opened);
    assert_eq!(pd.pages(), 2);
    assert_eq!(pd.open()[0].title, "second");
}

#[test]
fn an_acknowledge_or_resolve_for_a_closed_or_unknown_incident_is_dropped() {
    let mut pd = Incidents::new();
    assert_eq!(pd.apply(RK, &act("resolve", "never")), Effect::Dropped);
    assert_eq!(pd.apply(RK, &act("acknowledge", "never")), Effect::Dropped);
    pd.apply(RK, &trigger("k", "t", "error"));
    pd.apply(RK, &act("resolve", "k"));
    assert_eq!(pd.apply(RK, &act("resolve", "k")), Effect::Dropped);
    assert_eq!(pd.apply(RK, &act("acknowledge", "k")), Effect::Dropped);
    assert!(pd.open().is_empty());
    assert_eq!(pd.pages(), 1);
}

#[test]
fn a_trigger_on_an_acknowledged_incident_leaves_it_acknowledged() {
    let mut pd = Incidents::new();
    pd.apply(RK, &trigger("k", "t", "error"));
    assert_eq!(pd.apply(RK, &act("acknowledge", "k")), Effect::Acknowledged);
    assert_eq!(pd.apply(RK, &trigger("k", "again", "critical")), Effect::Deduplicated);
    assert_eq!(pd.open()[0].status, Status::Acknowledged);
    assert_eq!(pd.pages(), 1);
}

#[test]
fn the_same_dedup_key_on_two_routing_keys_is_two_incidents() {
    let mut pd = Incidents::new();
    let other = "R0UTINGKEY0000000000000000000002";
    pd.apply(RK, &trigger("k", "a", "error"));
    assert_eq!(pd.apply(other, &trigger("k", "b", "error")), Effect::Opened);
    pd.apply(RK, &act("resolve", "k"));
    assert_eq!(pd.open().len(), 1);
    assert_eq!(pd.open()[0].routing_key, other);
    assert_eq!(pd.pages(), 2);
}

#[test]
fn triggers_without_a_dedup_key_each_page_and_change_events_are_not_alerts() {
    let mut pd = Incidents::new();
    let keyless = json!({"event_action": "trigger", "payload": {"summary": "x", "severity": "info", "source": "s"}});
    assert_eq!(pd.apply(RK, &keyless), Effect::Opened);
    assert_eq!(pd.apply(RK, &keyless), Effect::Opened);
    assert_eq!(pd.pages(), 2);
    assert_eq!(pd.apply(RK, &json!({"payload": {"summary": "deployed"}})), Effect::NotAnAlert);
    assert_eq!(pd.open().len(), 2);
}
