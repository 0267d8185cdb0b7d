use super::*;
use proptest::prelude::*;

/// A key's sender as the claim runs it: an event goes at `now` if the key is free, and is
/// counted then.
fn try_send(l: &Limits, k: &mut PaceState, now: Millis) -> Result<(), Millis> {
    let at = l.free_at(k, now);
    if at > now {
        return Err(at);
    }
    l.spend(k, now);
    Ok(())
}

#[test]
fn a_burst_goes_at_once_then_one_event_per_interval() {
    // 60 a minute (one every 62 s / 60), burst 3.
    let l = Limits::new(60, 3);
    let mut k = PaceState::default();
    let t = 1_000_000;
    for _ in 0..3 {
        assert_eq!(try_send(&l, &mut k, t), Ok(()));
    }
    assert_eq!(try_send(&l, &mut k, t), Err(t + 1034), "the steady interval is (60 s + margin) / 60");
    assert_eq!(try_send(&l, &mut k, t + 1034), Ok(()));
    // Another key has its own state.
    assert_eq!(try_send(&l, &mut PaceState::default(), t), Ok(()));
    // Refilled after a quiet spell, but never above the burst.
    let later = t + 120_000;
    for _ in 0..3 {
        assert_eq!(try_send(&l, &mut k, later), Ok(()));
    }
    assert!(try_send(&l, &mut k, later).is_err());
}

#[test]
fn unlimited_rate_only_honours_429s() {
    let l = Limits::new(0, 60);
    let mut k = PaceState::default();
    for _ in 0..10_000 {
        assert_eq!(try_send(&l, &mut k, 5), Ok(()));
    }
    l.close(&mut k, 2005);
    assert_eq!(try_send(&l, &mut k, 5), Err(2005));
    assert_eq!(try_send(&l, &mut k, 2005), Ok(()));
}

#[test]
fn a_429_closes_the_key_until_retry_after_and_empties_the_burst() {
    let l = Limits::new(120, 60);
    let mut k = PaceState::default();
    let t = 10_000;
    assert_eq!(try_send(&l, &mut k, t), Ok(()));
    l.close(&mut k, t + 2000);
    assert_eq!(try_send(&l, &mut k, t + 10), Err(t + 2000));
    assert_eq!(try_send(&l, &mut k, t + 2000), Ok(()));
    assert!(try_send(&l, &mut k, t + 2000).is_err(), "no burst right after a 429");
}

#[test]
fn the_window_rule_waits_a_full_window_and_the_margin_after_the_send_rate_back() {
    // Before: a slot a window after the send `rate` back, taken at its slot time though sent
    // later, let 121 events land in one minute at the receiver.
    let l = Limits::new(120, 120);
    let mut k = PaceState::default();
    let t = 1_000_000;
    for _ in 0..120 {
        assert_eq!(try_send(&l, &mut k, t), Ok(()));
    }
    assert_eq!(l.free_at(&k, t + 1), t + WINDOW + MARGIN);
}

/// Sends `arrivals` as the claim would (an event the key cannot take now comes back when it
/// is free; `throttled` ones get a 429 with `hold`) and returns the send times.
fn run(l: &Limits, arrivals: &[(Millis, bool)], hold: Millis) -> Vec<Millis> {
    let mut k = PaceState::default();
    let mut pending: Vec<(Millis, bool)> = arrivals.to_vec();
    pending.sort_by_key(|(t, _)| *t);
    let mut sent = Vec::new();
    while !pending.is_empty() {
        let (t, throttled) = pending.remove(0);
        match try_send(l, &mut k, t) {
            Ok(()) => {
                sent.push(t);
                if throttled {
                    l.close(&mut k, t + hold);
                }
            }
            Err(at) => {
                assert!(at > t, "a key that is not free now is free later");
                let pos = pending.partition_point(|(x, _)| *x <= at);
                pending.insert(pos, (at, throttled));
            }
        }
    }
    sent
}

/// The most of `times` (any order) in any window of `WINDOW` ms.
fn busiest_window(times: &[Millis]) -> usize {
    let mut times = times.to_vec();
    times.sort_unstable();
    (0..times.len()).map(|i| times[i..].partition_point(|t| *t < times[i] + WINDOW)).max().unwrap_or(0)
}

#[test]
fn a_storm_of_200_triggers_never_puts_more_than_120_in_any_minute() {
    let l = Limits::new(120, 60);
    let storm: Vec<(Millis, bool)> = (0..200).map(|i| (1_000_000 + i, false)).collect();
    let sent = run(&l, &storm, 0);
    assert_eq!(sent.len(), 200, "every event goes in the end");
    assert!(busiest_window(&sent) <= 120);
    let at_once = sent.iter().filter(|t| **t < 1_000_000 + 200).count();
    assert!(at_once <= 60, "the burst is at most 60: {at_once}");
    assert!(*sent.last().unwrap() - 1_000_000 < 2 * WINDOW, "and the storm is not held longer than needed");
}

proptest! {
    /// However events arrive, whatever 429s come, and however late each send reaches the
    /// receiver (up to the margin), no 60-second window *at the receiver* holds more than the
    /// rate, at most `burst` are sent at one instant, and every event goes in the end.
    #[test]
    fn no_window_at_the_receiver_ever_holds_more_than_the_rate(
        arrivals in proptest::collection::vec((0i64..180_000, proptest::bool::weighted(0.02)), 1..400),
        per_minute in 1u32..300,
        burst in 1u32..300,
        hold in 1i64..60_000,
        delays in proptest::collection::vec(0i64..MARGIN, 400),
    ) {
        let l = Limits::new(per_minute, burst);
        let sent = run(&l, &arrivals, hold);
        prop_assert_eq!(sent.len(), arrivals.len());
        let received: Vec<Millis> = sent.iter().zip(&delays).map(|(t, d)| t + d).collect();
        prop_assert!(busiest_window(&received) <= per_minute as usize, "{} in one window", busiest_window(&received));
        let at_once = (0..sent.len()).map(|i| sent[i..].partition_point(|t| *t == sent[i])).max().unwrap_or(0);
        prop_assert!(at_once <= burst.min(per_minute) as usize, "{} at once", at_once);
    }
}
