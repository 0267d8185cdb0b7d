use super::*;
use crate::secret::Secret;

fn key(c: char) -> RoutingKey {
    RoutingKey::parse(Secret::new(std::iter::repeat_n(c, 32).collect::<String>())).unwrap()
}

fn limits(per_key_rate: u32) -> Limits {
    Limits { per_key_rate, page_after: Duration::from_secs(600), paging: true, own_key: Some(key('o')) }
}

fn backlog(k: char, sources: &[(&str, u64)], oldest: Millis) -> KeyBacklog {
    KeyBacklog {
        routing_key: key(k),
        pending: sources.iter().map(|(_, n)| n).sum(),
        oldest,
        sources: sources.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
    }
}

#[test]
fn the_drain_estimate_is_the_backlog_at_the_keys_pace() {
    assert_eq!(drain_time(10_000, 120), Some(Duration::from_secs(5000)), "83 minutes and 20 seconds");
    assert_eq!(drain_time(1, 120), Some(Duration::from_millis(500)));
    assert_eq!(drain_time(0, 120), Some(Duration::ZERO));
    assert_eq!(drain_time(10_000, 0), None, "unlimited: no estimate");
}

#[test]
fn a_key_whose_backlog_outlasts_storm_page_after_raises_one_page_on_that_key() {
    let now = 1_000_000;
    let storm = backlog('a', &[("alertmanager", 1_150), ("github", 50)], now - 90_000);
    let calm = backlog('b', &[("github", 100)], now - 1_000);
    let (figures, holding) = judge(&[storm, calm], now, &limits(120));
    assert_eq!(figures.len(), 2);
    assert_eq!(figures[0].routing_key, key('a').fingerprint(), "labelled by fingerprint, never the key");
    assert_eq!((figures[0].pending, figures[0].drain_seconds), (1_200, Some(600.0)));
    assert_eq!(figures[0].oldest_pending_seconds, 90.0);
    assert_eq!(figures[1].drain_seconds, Some(50.0));
    // 1 200 events at 120/min are exactly 10 minutes: not longer, so no page yet; above a
    // minute, so an open page would stay open.
    assert_eq!(holding.len(), 1);
    assert!(!holding[0].raise, "exactly storm_page_after does not page");
    let longer = backlog('a', &[("alertmanager", 1_151), ("github", 50)], now - 90_000);
    let (_, holding) = judge(&[longer], now, &limits(120));
    let h = &holding[0];
    assert!(h.raise);
    assert_eq!(h.subject, format!("key-{}", key('a').fingerprint()));
    assert_eq!(h.page.reason, Reason::StormWaiting);
    assert_eq!(h.page.routing_key, key('a'), "paged on the key the storm delays");
    assert_eq!(h.page.details["events_waiting"], 1_201);
    assert_eq!(h.page.details["sources"], serde_json::json!({ "alertmanager": 1_151, "github": 50 }));
    assert_eq!(h.page.details["estimated_drain_seconds"], 601);
}

#[test]
fn a_storm_clears_once_a_minute_of_pace_sends_its_backlog_and_unlimited_keys_never_storm() {
    let (_, holding) = judge(&[backlog('a', &[("am", 121)], 0)], 0, &limits(120));
    assert_eq!(holding.len(), 1, "just over a minute: an open page stays open");
    let (_, holding) = judge(&[backlog('a', &[("am", 120)], 0)], 0, &limits(120));
    assert!(holding.is_empty(), "a minute's worth: cleared");
    let (figures, holding) = judge(&[backlog('a', &[("am", 1_000_000)], 0)], 0, &limits(0));
    assert!(holding.is_empty());
    assert_eq!(figures[0].drain_seconds, None);
}
