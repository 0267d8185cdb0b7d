//! Per-routing-key pacing: PagerDuty throttles each integration key (about 120 events a
//! minute, counted over the 60 seconds looking back) and answers 429 beyond it, so a storm
//! waits here, in order, instead of collecting 429s there.
//!
//! Two limits per routing key, both kept: a sliding-window log of send times (the last
//! `per_key_rate` of them), so no 60-second window ever holds more than `per_key_rate`
//! events; and a token bucket `per_key_burst` deep, refilled at the same rate (kept as a GCRA
//! theoretical arrival time), so at most `per_key_burst` of those go at once and the rest are
//! spread out. The burst is part of the
//! rate, never extra to it.
//!
//! An event that may not go yet gets a *reservation*, its slot in the log, and is deferred in
//! the queue until then. Reservations are kept per ordering lane (not per event), so a trigger
//! that collapses into a newer one hands its slot on. A 429 closes the key until PagerDuty's
//! `Retry-After` and moves the key's reservations later by as much, keeping their spacing, so
//! the reopening is paced like any other minute rather than releasing every waiting event.
//!
//! Pure and clock-free: callers pass `now`, tests step time by hand. The rules ([`Limits`])
//! act on a key's [`PaceState`]: [`Pacer`] keeps those in memory for a lone process, and
//! replicas on PostgreSQL share them through `queue::SharedPace`, which applies the same rules
//! under a row lock, so the budget is one for all replicas.

use crate::queue::{Millis, PaceRule, PaceState};
use std::collections::HashMap;

/// PagerDuty's window.
pub const WINDOW: Millis = 60_000;

/// Reservations older than this are forgotten (their event was delivered another way, e.g.
/// after a restart); keeps memory bounded.
const FORGET_AFTER: Millis = 3_600_000;

/// The two limits of a routing key, as rules on its [`PaceState`]: used by the in-memory
/// [`Pacer`] and, as a [`PaceRule`], by the store replicas share, so both pace alike.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Events per [`WINDOW`]; 0 = unlimited.
    per_window: usize,
    burst: f64,
}

impl Limits {
    /// At most `per_minute` events in any minute per key (0: unlimited), up to `burst` of them
    /// at once (`burst` is capped at `per_minute`).
    pub fn new(per_minute: u32, burst: u32) -> Limits {
        let burst = if per_minute == 0 { burst.max(1) } else { burst.clamp(1, per_minute) };
        Limits { per_window: per_minute as usize, burst: f64::from(burst) }
    }

    /// No rate: only 429s hold a key back.
    pub fn unlimited(&self) -> bool {
        self.per_window == 0
    }

    /// Milliseconds between events at the steady rate, and how far ahead of it a burst may go.
    fn interval_and_tolerance(&self) -> (f64, f64) {
        let interval = WINDOW as f64 / self.per_window as f64;
        (interval, (self.burst - 1.0) * interval)
    }

    /// Takes the earliest slot both limits allow and records it in the log (unlimited: now,
    /// or when a 429's hold ends).
    pub fn next_slot(&self, k: &mut PaceState, now: Millis) -> Millis {
        let per_window = self.per_window;
        if per_window == 0 {
            return now.max(k.closed_until);
        }
        let (interval, tolerance) = self.interval_and_tolerance();
        let mut at = now.max(k.closed_until).max((k.tat - tolerance).ceil() as Millis);
        if k.log.len() >= per_window {
            // The window rule: a full window after the send `rate` back.
            at = at.max(k.log[k.log.len() - per_window] + WINDOW);
        }
        // Slots are handed out in order, so the log stays sorted.
        at = at.max(k.log.back().copied().unwrap_or(at));
        k.tat = k.tat.max(at as f64) + interval;
        k.log.push_back(at);
        while k.log.len() > per_window {
            k.log.pop_front();
        }
        at
    }

    /// PagerDuty answered 429 at `now`: nothing more before `until`, then one event, then the
    /// steady rate (no burst: PagerDuty just said the key is over its limit). Slots already
    /// promised move later by the returned amount, so they keep their spacing (and the window
    /// rule) instead of all falling due at the reopening.
    pub fn close(&self, k: &mut PaceState, now: Millis, until: Millis) -> Millis {
        k.closed_until = k.closed_until.max(until);
        let shift = (k.closed_until - now).max(0);
        if self.per_window == 0 {
            return shift;
        }
        let (_, tolerance) = self.interval_and_tolerance();
        for t in k.log.iter_mut().filter(|t| **t > now) {
            *t += shift;
        }
        k.tat = (k.tat + shift as f64).max(k.closed_until as f64 + tolerance);
        shift
    }
}

impl PaceRule for Limits {
    fn slot(&self, k: &mut PaceState, held: Option<Millis>, now: Millis) -> Millis {
        match held {
            // A slot from before a 429 closed the key: its place in the log is no longer the
            // time it would go, so it takes a new one (the old one stays counted: safe side).
            Some(at) if at >= k.closed_until => at,
            _ => self.next_slot(k, now),
        }
    }

    fn hold(&self, k: &mut PaceState, now: Millis, until: Millis) -> Millis {
        self.close(k, now, until)
    }
}

/// Paces deliveries per routing key, in memory: one process (SQLite) sees every send.
#[derive(Debug)]
pub struct Pacer {
    limits: Limits,
    keys: HashMap<String, PaceState>,
    /// Lane → its routing key and the time its already-paid slot comes.
    reserved: HashMap<String, (String, Millis)>,
}

impl Pacer {
    /// See [`Limits::new`].
    pub fn new(per_minute: u32, burst: u32) -> Pacer {
        Pacer { limits: Limits::new(per_minute, burst), keys: HashMap::new(), reserved: HashMap::new() }
    }

    fn key(&mut self, key: &str) -> &mut PaceState {
        self.keys.entry(key.to_string()).or_default()
    }

    /// May an event of `lane` go to `key` now? `Err(at)`: not before `at`; defer it till then.
    pub fn admit(&mut self, key: &str, lane: &str, now: Millis) -> Result<(), Millis> {
        let held = self.reserved.remove(lane).map(|(_, at)| at);
        let limits = self.limits;
        let at = limits.slot(self.key(key), held, now);
        if at <= now {
            return Ok(());
        }
        if self.reserved.len() > 100_000 {
            self.reserved.retain(|_, (_, t)| *t > now - FORGET_AFTER);
        }
        self.reserved.insert(lane.to_string(), (key.to_string(), at));
        Err(at)
    }

    /// PagerDuty answered 429 for `key` at `now` (see [`Limits::close`]); the lanes holding
    /// slots of the key move with it.
    pub fn slow_down(&mut self, key: &str, now: Millis, until: Millis) {
        let limits = self.limits;
        let shift = limits.close(self.key(key), now, until);
        for (_, at) in self.reserved.values_mut().filter(|(k, at)| k == key && *at > now) {
            *at += shift;
        }
    }
}

#[cfg(test)]
mod tests {
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
}
