use super::*;
use crate::secret::Secret;

fn key() -> RoutingKey {
    RoutingKey::parse(Secret::new("0123456789abcdef0123456789abcdef")).unwrap()
}

#[test]
fn one_incident_per_source_and_reason_with_the_numbers_in_custom_details() {
    let page = Page { severity: Severity::Critical, ..Page::new(Reason::TooManyEvents, key()) }.with("events", 1500);
    let e = trigger(&page, "alertmanager", 3).unwrap();
    let body = e.body();
    assert_eq!(body["dedup_key"], "pagerhook/alertmanager/too_many_events");
    assert_eq!(body["payload"]["severity"], "critical");
    assert_eq!(body["payload"]["custom_details"]["dead_letters_waiting"], 3);
    assert_eq!(body["payload"]["custom_details"]["events"], 1500);
    // The title is the same whatever the numbers: PagerDuty keeps the first one.
    let again = trigger(&page.clone().with("events", 2), "alertmanager", 9).unwrap();
    assert_eq!(again.body()["payload"]["summary"], body["payload"]["summary"]);
    let r = resolve(key(), "alertmanager", Reason::TooManyEvents).unwrap();
    assert_eq!(r.body()["event_action"], "resolve");
    assert_eq!(r.order_key(), e.order_key(), "the resolve shares its trigger's lane");
}

#[test]
fn reasons_round_trip_and_severities_order() {
    for r in Reason::ALL {
        assert_eq!(Reason::parse(r.as_str()), Some(r));
    }
    assert_eq!(Reason::parse("storm"), None);
    assert_eq!(worse(Severity::Warning, Severity::Critical), Severity::Critical);
    assert_eq!(worse(Severity::Error, Severity::Info), Severity::Error);
    assert!(is_own_record(&dedup_key("gh", Reason::DeadTrigger)));
    assert!(!is_own_record("0190b5a0-0000-7000-8000-000000000000"));
}
