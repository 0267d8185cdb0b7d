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
mod tests;
