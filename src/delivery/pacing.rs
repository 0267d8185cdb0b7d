//! Per-routing-key pacing: PagerDuty throttles each integration key (about 120 events a
//! minute) and answers 429 beyond it, so a storm waits here, in order, instead of collecting
//! 429s there.
//!
//! A token bucket per routing key (`delivery.per_key_rate` a minute, `per_key_burst` deep)
//! that may go into debt: an event that finds no token gets a *reservation*, the time its
//! token will exist, and is deferred in the queue until then. Reservations are kept per
//! ordering lane (not per event), so a trigger that collapses into a newer one hands its slot
//! on. A 429 closes the key until PagerDuty's `Retry-After`.
//!
//! Pure and clock-free: callers pass `now`, tests step time by hand.

use crate::queue::Millis;
use std::collections::HashMap;

/// Reservations older than this are forgotten (their event was delivered another way, e.g.
/// after a restart); keeps memory bounded.
const FORGET_AFTER: Millis = 3_600_000;

#[derive(Debug, Clone)]
struct Bucket {
    /// May be negative: tokens already promised to reservations.
    tokens: f64,
    updated: Millis,
    /// No event for this key before this (a 429's `Retry-After`).
    closed_until: Millis,
}

/// Paces deliveries per routing key.
#[derive(Debug)]
pub struct Pacer {
    /// Tokens per millisecond; 0 = unlimited.
    rate: f64,
    burst: f64,
    buckets: HashMap<String, Bucket>,
    /// Lane → the time its already-paid token becomes usable.
    reserved: HashMap<String, Millis>,
}

impl Pacer {
    /// `per_minute` events a minute per key (0: unlimited), bursts of up to `burst`.
    pub fn new(per_minute: u32, burst: u32) -> Pacer {
        Pacer {
            rate: f64::from(per_minute) / 60_000.0,
            burst: f64::from(burst.max(1)),
            buckets: HashMap::new(),
            reserved: HashMap::new(),
        }
    }

    /// May an event of `lane` go to `key` now? `Err(at)`: not before `at`; defer it till then.
    pub fn admit(&mut self, key: &str, lane: &str, now: Millis) -> Result<(), Millis> {
        let (rate, burst) = (self.rate, self.burst);
        let b = self.buckets.entry(key.to_string()).or_insert(Bucket { tokens: burst, updated: now, closed_until: 0 });
        if let Some(&at) = self.reserved.get(lane) {
            let at = at.max(b.closed_until);
            if at > now {
                return Err(at);
            }
            self.reserved.remove(lane);
            return Ok(());
        }
        if rate == 0.0 {
            return if b.closed_until > now { Err(b.closed_until) } else { Ok(()) };
        }
        if now > b.updated {
            b.tokens = (b.tokens + (now - b.updated) as f64 * rate).min(burst);
            b.updated = now;
        }
        b.tokens -= 1.0;
        let debt = if b.tokens >= 0.0 { 0 } else { (-b.tokens / rate).ceil() as Millis };
        // While closed, `updated` is the reopening time: debt is paid from there.
        let at = (now.max(b.updated) + debt).max(b.closed_until);
        if at <= now {
            return Ok(());
        }
        if self.reserved.len() > 100_000 {
            self.reserved.retain(|_, t| *t > now - FORGET_AFTER);
        }
        self.reserved.insert(lane.to_string(), at);
        Err(at)
    }

    /// PagerDuty answered 429 for `key`: nothing more to it before `until`, then one event,
    /// then the steady rate (no burst: PagerDuty just said the key is over its limit).
    pub fn slow_down(&mut self, key: &str, until: Millis) {
        let burst = self.burst;
        let b =
            self.buckets.entry(key.to_string()).or_insert(Bucket { tokens: burst, updated: until, closed_until: 0 });
        b.closed_until = b.closed_until.max(until);
        b.updated = b.updated.max(until);
        b.tokens = b.tokens.min(1.0);
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
        p.slow_down("k", 2005);
        assert_eq!(p.admit("k", "x", 5), Err(2005));
        assert_eq!(p.admit("k", "x", 2005), Ok(()));
    }

    #[test]
    fn a_429_closes_the_key_until_retry_after_and_empties_the_burst() {
        let mut p = Pacer::new(120, 60);
        let t = 10_000;
        assert_eq!(p.admit("k", "a", t), Ok(()));
        p.slow_down("k", t + 2000);
        assert_eq!(p.admit("k", "b", t + 10), Err(t + 2000));
        assert_eq!(p.admit("k", "b", t + 2000), Ok(()), "the reservation made while closed is honoured");
        assert!(p.admit("k", "c", t + 2000).is_err(), "no burst right after a 429");
        assert_eq!(p.admit("other", "a", t + 10), Ok(()), "other keys are not slowed");
    }

    proptest! {
        /// However events arrive, no key gets more than burst + rate × elapsed admissions.
        #[test]
        fn never_exceeds_the_rate(arrivals in proptest::collection::vec(0i64..120_000, 1..400), per_minute in 1u32..600, burst in 1u32..100) {
            let mut p = Pacer::new(per_minute, burst);
            let mut arrivals = arrivals;
            arrivals.sort();
            let start = arrivals[0];
            let mut pending: Vec<(Millis, String)> = arrivals.iter().enumerate().map(|(i, t)| (*t, i.to_string())).collect();
            let mut sent = Vec::new();
            // Replay deferrals like the worker does: an event comes back at the time it was given.
            while let Some((t, lane)) = pending.first().cloned() {
                pending.remove(0);
                match p.admit("k", &lane, t) {
                    Ok(()) => sent.push(t),
                    Err(at) => {
                        prop_assert!(at > t);
                        let pos = pending.partition_point(|(x, _)| *x <= at);
                        pending.insert(pos, (at, lane));
                    }
                }
            }
            prop_assert_eq!(sent.len(), arrivals.len(), "every event is eventually admitted");
            for (i, t) in sent.iter().enumerate() {
                let allowed = f64::from(burst) + (t - start) as f64 * f64::from(per_minute) / 60_000.0;
                prop_assert!((i + 1) as f64 <= allowed + 1.0, "{} admitted by {} (allowed {})", i + 1, t, allowed);
            }
        }
    }
}
