//! What the worker takes from outside besides the queue: the time, the jitter of its backoff
//! and the PagerDuty it sends to. Passed in, so that tests run the worker's real policy on
//! paused tokio time with a scripted PagerDuty and get the same answer every run.

use crate::event::Event;
use crate::pagerduty::{Client, Response};
use crate::queue::{now_millis, Millis};
use async_trait::async_trait;

/// The worker's clock, in the queue's unit.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Millis;
}

/// The wall clock: leases and due times are compared across processes, so production
/// delivery runs on it.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        now_millis()
    }
}

/// A clock that moves with tokio's: under paused time (tests) it stands still until tokio
/// advances, so every sleep of the worker and every time it records agree exactly.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    base: Millis,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// Reads `base` now, and `base` plus tokio's elapsed time later.
    pub fn starting_at(base: Millis) -> TokioClock {
        TokioClock { base, start: tokio::time::Instant::now() }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Millis {
        self.base + self.start.elapsed().as_millis() as Millis
    }
}

/// Where the backoff's jitter comes from: a fraction in `[0, 1]` per retry.
pub trait Jitter: Send + Sync + 'static {
    fn fraction(&self) -> f64;
}

/// The same fraction every time: backoffs a test can predict.
#[derive(Debug, Clone, Copy)]
pub struct FixedJitter(pub f64);

impl Jitter for FixedJitter {
    fn fraction(&self) -> f64 {
        self.0
    }
}

/// Random jitter, so a burst of failures does not retry in lockstep.
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomJitter;

impl Jitter for RandomJitter {
    fn fraction(&self) -> f64 {
        rand::random()
    }
}

/// Where events are sent: PagerDuty's client, or a script in tests.
#[async_trait]
pub trait Upstream: Send + Sync + 'static {
    async fn send(&self, event: &Event) -> Response;
    /// `--dry-run`: a 2xx is recorded as `dry_run`, not `delivered`.
    fn is_dry_run(&self) -> bool;
}

#[async_trait]
impl Upstream for Client {
    async fn send(&self, event: &Event) -> Response {
        Client::send(self, event).await
    }

    fn is_dry_run(&self) -> bool {
        Client::is_dry_run(self)
    }
}
