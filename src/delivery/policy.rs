//! Whether and when to try again: pure functions of PagerDuty's answer, the attempt number
//! and the config. The worker applies them; tests step them without a clock.

use crate::pagerduty::Response;
use std::time::Duration;

/// What to do after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryAction {
    /// PagerDuty took it.
    Delivered,
    /// Try again; `after` overrides the backoff (PagerDuty's `Retry-After`).
    Retry { reason: String, after: Option<Duration> },
    /// An answer PagerDuty does not document for the Events API (a 3xx, a 4xx but 400, 408
    /// and 429): likely a proxy or a wrong `events_url`. Retried with backoff, and reported
    /// loudly, so that a misconfiguration does not dead-letter every page.
    Unexpected { reason: String },
    /// Never going to work as it is: dead-letter it with this reason.
    Dead(String),
}

/// How long a routing key is held back after a 429 that says nothing (no `Retry-After`).
/// PagerDuty's guidance is to back off for tens of seconds to minutes; retrying after our
/// usual one-second backoff would only earn more 429s.
pub const THROTTLED_HOLD: Duration = Duration::from_secs(30);

/// Classifies PagerDuty's answer: 2xx done; 400, the only answer PagerDuty documents as final,
/// dead with its message; 408, 429, 5xx and transport errors retried; any other status
/// unexpected (retried too). A 429 always says when: its `Retry-After`, else [`THROTTLED_HOLD`].
pub fn classify(r: &Response) -> RetryAction {
    match r {
        Response::Status { code, .. } if (200..300).contains(code) => RetryAction::Delivered,
        Response::Status { code: 429, message, retry_after, .. } => RetryAction::Retry {
            reason: format!("429 throttled: {message}"),
            after: Some(retry_after.unwrap_or(THROTTLED_HOLD)),
        },
        Response::Status { code, message, .. } if *code == 408 || *code >= 500 => {
            RetryAction::Retry { reason: format!("{code}: {message}"), after: None }
        }
        Response::Status { code: 400, message, .. } => RetryAction::Dead(format!("400: {message}")),
        Response::Status { code, message, .. } => RetryAction::Unexpected { reason: format!("{code}: {message}") },
        Response::Transport(e) => RetryAction::Retry { reason: e.clone(), after: None },
    }
}

/// Delay before retry number `attempt` (1 = first retry): `initial * 2^(attempt-1)`, capped at
/// `max`, then jittered into `[d/2, d]` by `jitter` in `[0, 1]` so a burst of failures does not
/// retry in lockstep.
pub fn backoff(attempt: u32, initial: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(32);
    let d = initial.saturating_mul(1u32 << exp.min(31)).min(max);
    let jitter = jitter.clamp(0.0, 1.0);
    d.mul_f64(0.5 + 0.5 * jitter)
}

/// A `Retry-After` is honoured even beyond `max_backoff` (which bounds *our* guesses, not
/// PagerDuty's instructions), kept within reason: at least 1 s, at most an hour.
pub fn retry_after(after: Duration) -> Duration {
    after.clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

#[cfg(test)]
mod tests;
