use super::*;
use proptest::prelude::*;

#[test]
fn a_burst_goes_at_once_then_one_event_per_interval() {
    // 60 a minute = one a second, burst 3.
    let mut p = Pacer::new(60, 3);
    let t = 1_000_000;
    for lane in ["a", "b", "c"] {
        assert_eq!(p.admit("k", lane, t), Ok(()));
    }
    assert_eq!(p.admit("k", "d", t), Err(t + 1000));
    assert_eq!(p.admit("k", "e", t), Err(t + 2000), "reservations queue up, they do not share a slot");
    // Another key has its own bucket.
    assert_eq!(p.admit("other", "x", t), Ok(()));
    // A reserved lane is admitted at its time, without paying twice.
    assert_eq!(p.admit("k", "d", t + 999), Err(t + 1000));
    assert_eq!(p.admit("k", "d", t + 1000), Ok(()));
    assert_eq!(p.admit("k", "e", t + 2000), Ok(()));
    // Refilled after a quiet spell, but never above the burst.
    let later = t + 60_000;
    for lane in ["f", "g", "h"] {
        assert_eq!(p.admit("k", lane, later), Ok(()));
    }
    assert!(p.admit("k", "i", later).is_err());
}

#[test]
fn unlimited_rate_only_honours_429s() {
    let mut p = Pacer::new(0, 60);
    for i in 0..10_000 {
        assert_eq!(p.admit("k", &i.to_string(), 5), Ok(()));
    }
    p.slow_down("k", 5, 2005);
    assert_eq!(p.admit("k", "x", 5), Err(2005));
    assert_eq!(p.admit("k", "x", 2005), Ok(()));
}

#[test]
fn a_429_closes_the_key_until_retry_after_and_empties_the_burst() {
    let mut p = Pacer::new(120, 60);
    let t = 10_000;
    assert_eq!(p.admit("k", "a", t), Ok(()));
    p.slow_down("k", t, t + 2000);
    assert_eq!(p.admit("k", "b", t + 10), Err(t + 2000));
    assert_eq!(p.admit("k", "b", t + 2000), Ok(()), "the reservation made while closed is honoured");
    assert!(p.admit("k", "c", t + 2000).is_err(), "no burst right after a 429");
    assert_eq!(p.admit("other", "a", t + 10), Ok(()), "other keys are not slowed");
}

/// Replays arrivals the way the worker does (a deferred event comes back at the time it
/// was given; `throttled` arrivals get a 429 with `hold` when sent) and returns send times.
fn run(p: &mut Pacer, arrivals: &[(Millis, bool)], hold: Millis) -> Vec<Millis> {
    let mut pending: Vec<(Millis, String, bool)> =
        arrivals.iter().enumerate().map(|(i, (t, throttled))| (*t, i.to_string(), *throttled)).collect();
    pending.sort_by_key(|(t, _, _)| *t);
    let mut sent = Vec::new();
    while !pending.is_empty() {
        let (t, lane, throttled) = pending.remove(0);
        match p.admit("k", &lane, t) {
            Ok(()) => {
                sent.push(t);
                if throttled {
                    p.slow_down("k", t, t + hold);
                }
            }
            Err(at) => {
                assert!(at > t, "a deferral is to a later time");
                let pos = pending.partition_point(|(x, _, _)| *x <= at);
                pending.insert(pos, (at, lane, throttled));
            }
        }
    }
    sent
}

/// The most sends in any window of `WINDOW` ms (sends are sorted).
fn busiest_window(sent: &[Millis]) -> usize {
    (0..sent.len()).map(|i| sent[i..].partition_point(|t| *t < sent[i] + WINDOW)).max().unwrap_or(0)
}

#[test]
fn a_storm_of_200_triggers_never_puts_more_than_120_in_any_minute() {
    // The defaults: 120 a minute, 60 at once. The old bucket let 179 through in the first minute.
    let mut p = Pacer::new(120, 60);
    let storm: Vec<(Millis, bool)> = (0..200).map(|i| (1_000_000 + i, false)).collect();
    let sent = run(&mut p, &storm, 0);
    assert_eq!(sent.len(), 200, "every event goes in the end");
    assert_eq!(busiest_window(&sent), 120);
    let at_once = sent.iter().filter(|t| **t < 1_000_000 + 200).count();
    assert!(at_once <= 60, "the burst is at most 60: {at_once}");
    assert!(*sent.last().unwrap() - 1_000_000 < 2 * WINDOW, "and the storm is not held longer than needed");
}

#[test]
fn after_a_429_the_key_waits_and_its_reservations_move_with_it() {
    let mut p = Pacer::new(120, 60);
    let t = 1_000_000;
    for i in 0..100 {
        let _ = p.admit("k", &i.to_string(), t);
    }
    // Lanes 60..99 hold slots every 500 ms from t + 500.
    p.slow_down("k", t, t + 30_000);
    assert_eq!(p.admit("k", "60", t + 500), Err(t + 30_500), "a promised slot moves with the hold");
    assert_eq!(p.admit("k", "99", t + 20_000), Err(t + 50_000), "and keeps its spacing");
    assert_eq!(p.admit("k", "60", t + 30_500), Ok(()));
    assert_eq!(p.admit("k", "new", t + 30_500), Err(t + 50_500), "new events queue behind them");
}

proptest! {
    /// However events arrive and whatever 429s come, no 60-second window holds more than
    /// the rate, at most `burst` go at one instant, and every event goes in the end.
    #[test]
    fn no_window_ever_holds_more_than_the_rate(
        arrivals in proptest::collection::vec((0i64..180_000, proptest::bool::weighted(0.02)), 1..400),
        per_minute in 1u32..300,
        burst in 1u32..300,
        hold in 1i64..60_000,
    ) {
        let mut p = Pacer::new(per_minute, burst);
        let sent = run(&mut p, &arrivals, hold);
        prop_assert_eq!(sent.len(), arrivals.len());
        prop_assert!(busiest_window(&sent) <= per_minute as usize, "{} in one window", busiest_window(&sent));
        let at_once = (0..sent.len()).map(|i| sent[i..].partition_point(|t| *t == sent[i])).max().unwrap_or(0);
        prop_assert!(at_once <= burst.min(per_minute) as usize, "{} at once", at_once);
    }
}
