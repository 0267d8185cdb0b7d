//! Per-routing-key pacing: PagerDuty throttles each integration key (about 120 events a
//! minute, counted over the 60 seconds looking back, as it receives them) and answers 429
//! beyond it, so a storm waits in the queue instead of collecting 429s there.
//!
//! Two limits per routing key, both kept: a sliding-window log of send times (the last
//! `per_key_rate` of them), so no window of [`WINDOW`] plus [`MARGIN`] holds more than
//! `per_key_rate` sends; and a token bucket `per_key_burst` deep, refilled at the same rate
//! (kept as a GCRA theoretical arrival time), so at most `per_key_burst` of those go at once
//! and the rest are spread out. The burst is part of the rate, never extra to it.
//!
//! **The guarantee is the receiver's.** A send counts at the claim that hands its event out
//! (every attempt: a timeout or a 5xx may have reached PagerDuty and counts there), and the
//! window is [`MARGIN`] longer than PagerDuty's: an event reaches PagerDuty a little after
//! its claim (the claim's commit, the request's trip), by a different delay each time, so two
//! sends exactly a window apart could land inside one. As long as that delay varies by less
//! than the margin, no 60-second window *as PagerDuty receives them* holds more than
//! `per_key_rate` events of a key.
//!
//! Nothing is reserved ahead: a key's event is claimed only when the key has a free slot, and
//! the claim then picks the best of its due events (`queue::lanes::claim`), so a critical page
//! that arrives during a storm takes the next slot. A 429 closes the key until PagerDuty's
//! `Retry-After`, then lets one event go and the steady rate after it (no burst).
//!
//! Pure and clock-free: callers pass `now`, tests step time by hand. The rules ([`Limits`])
//! act on a key's [`PaceState`], which the store keeps (so a restart grants no fresh burst)
//! and shares between replicas, read and written under the claim's lock of the key.

use crate::queue::{Millis, PaceRule, PaceState};

/// PagerDuty's window.
pub const WINDOW: Millis = 60_000;

/// How much longer than [`WINDOW`] the window rule looks back: the most by which the delays
/// from a claim to PagerDuty's receipt may differ between two events, with the guarantee kept.
pub const MARGIN: Millis = 2_000;

/// The two limits of a routing key, as rules on its [`PaceState`]: the store applies them at
/// the claim, under the key's lock.
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
        let interval = (WINDOW + MARGIN) as f64 / self.per_window as f64;
        (interval, (self.burst - 1.0) * interval)
    }

    /// The earliest time at or after `now` both limits let the key send (unlimited: now, or
    /// when a 429's hold ends).
    pub fn free_at(&self, k: &PaceState, now: Millis) -> Millis {
        let per_window = self.per_window;
        let at = now.max(k.closed_until);
        if per_window == 0 {
            return at;
        }
        let (_, tolerance) = self.interval_and_tolerance();
        // Less a hair: `tat` sums intervals that are not whole milliseconds.
        let mut at = at.max((k.tat - tolerance - 1e-6).ceil() as Millis);
        if k.log.len() >= per_window {
            // The window rule: a full window (and the margin) after the send `rate` back.
            at = at.max(k.log[k.log.len() - per_window] + WINDOW + MARGIN);
        }
        at
    }

    /// Records a send at `now` (which [`Limits::free_at`] allowed).
    pub fn spend(&self, k: &mut PaceState, now: Millis) {
        if self.per_window == 0 {
            return;
        }
        let (interval, _) = self.interval_and_tolerance();
        k.tat = k.tat.max(now as f64) + interval;
        // Sends are recorded in claim order, so the log stays sorted.
        let at = now.max(k.log.back().copied().unwrap_or(now));
        k.log.push_back(at);
        while k.log.len() > self.per_window {
            k.log.pop_front();
        }
    }

    /// PagerDuty answered 429 at `now`: nothing more before `until`, then one event, then the
    /// steady rate (no burst: PagerDuty just said the key is over its limit).
    pub fn close(&self, k: &mut PaceState, until: Millis) {
        k.closed_until = k.closed_until.max(until);
        if self.per_window == 0 {
            return;
        }
        let (_, tolerance) = self.interval_and_tolerance();
        k.tat = k.tat.max(k.closed_until as f64 + tolerance);
    }
}

impl PaceRule for Limits {
    fn free_at(&self, k: &PaceState, now: Millis) -> Millis {
        Limits::free_at(self, k, now)
    }

    fn spend(&self, k: &mut PaceState, now: Millis) {
        Limits::spend(self, k, now)
    }

    fn hold(&self, k: &mut PaceState, until: Millis) {
        self.close(k, until)
    }
}

#[cfg(test)]
mod tests;
