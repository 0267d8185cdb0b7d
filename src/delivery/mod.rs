//! The delivery worker: takes events from the queue, sends them, and records the outcome.
//!
//! The queue decides *what* may go (lane heads only); `pacing` decides *how fast* per routing
//! key; `policy` decides *whether and when* to try again; this module only runs the loop. It
//! wakes on a new accept, a finished attempt or the next due time, and otherwise looks at the
//! store once every [`IDLE_RECHECK`] for events another process queued (`pagerhook dlq
//! replay`).

pub mod pacing;
pub mod policy;

use crate::config::DeliveryConfig;
use crate::metrics::Metrics;
use crate::pagerduty::{Client, Response};
use crate::queue::{now_millis, Attempt, Claimed, Finish, Millis, Queue, SharedPace, SlotAsk};
use pacing::{Limits, Pacer};
use policy::RetryAction;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

/// Longest idle sleep: events queued by another process are picked up this fast.
pub const IDLE_RECHECK: Duration = Duration::from_secs(1);

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// `--dry-run`: logged, not sent.
    DryRun,
    Retried,
    DeadLettered,
    /// Not sent: its routing key's pace allows it only later.
    Deferred,
    /// Given up before an answer: its lease could not be renewed, so another replica may
    /// take (or has taken) the event; it is not recorded here.
    Abandoned,
}

impl Outcome {
    /// The metrics label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::DryRun => "dry_run",
            Outcome::Retried => "retried",
            Outcome::DeadLettered => "dead_lettered",
            Outcome::Deferred => "deferred",
            Outcome::Abandoned => "abandoned",
        }
    }
}

/// How long an event waits when its pace could not be read from the shared store.
const PACE_UNAVAILABLE: Millis = 1000;

/// Where routing keys' pace is kept: in memory when this process is the only deliverer
/// (SQLite), in the store the replicas share otherwise (PostgreSQL). Same rules either way.
#[derive(Clone)]
enum Pacing {
    Local(Arc<Mutex<Pacer>>),
    Shared(Arc<dyn SharedPace>, Limits),
}

/// Sends queued events to PagerDuty.
#[derive(Clone)]
pub struct Worker {
    queue: Arc<dyn Queue>,
    client: Client,
    cfg: DeliveryConfig,
    wake: Arc<Notify>,
    pacing: Pacing,
    metrics: Arc<Metrics>,
}

/// The lane an event is paced in: its ordering lane, or its own for a change event.
fn lane(c: &Claimed) -> String {
    c.event.order_key().unwrap_or_else(|| format!("#{}", c.id))
}

impl Worker {
    /// A worker over `queue`; `wake` is notified by whoever enqueues. With `shared`, routing
    /// keys are paced together with the other replicas on that store.
    pub fn new(
        queue: Arc<dyn Queue>,
        shared: Option<Arc<dyn SharedPace>>,
        client: Client,
        cfg: DeliveryConfig,
        wake: Arc<Notify>,
        metrics: Arc<Metrics>,
    ) -> Worker {
        let pacing = match shared {
            Some(store) => Pacing::Shared(store, Limits::new(cfg.per_key_rate, cfg.per_key_burst)),
            None => Pacing::Local(Arc::new(Mutex::new(Pacer::new(cfg.per_key_rate, cfg.per_key_burst)))),
        };
        Worker { queue, client, cfg, wake, pacing, metrics }
    }

    /// Whether each event of a claimed batch may go at `now` (`Err(at)`: not before `at`).
    /// Shared pacing costs one round trip per batch (none for a batch of nothing).
    async fn admit(&self, batch: &[Claimed], now: Millis) -> Vec<Result<(), Millis>> {
        let (store, limits) = match &self.pacing {
            Pacing::Local(p) => {
                let mut p = p.lock().expect("pacer lock");
                return batch.iter().map(|c| p.admit(c.event.routing_key().expose(), &lane(c), now)).collect();
            }
            Pacing::Shared(store, limits) => (store, limits),
        };
        if batch.is_empty() {
            return Vec::new();
        }
        let slots = if limits.unlimited() {
            store.closed_until(&batch.iter().map(|c| c.event.routing_key().sha256()).collect::<Vec<_>>()).await
        } else {
            let asks: Vec<SlotAsk> =
                batch.iter().map(|c| SlotAsk { key: c.event.routing_key().sha256(), lane: lane(c) }).collect();
            store.slots(now, &asks, limits).await
        };
        match slots {
            Ok(slots) => slots.into_iter().map(|at| if at <= now { Ok(()) } else { Err(at) }).collect(),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the shared pace of routing keys; events wait");
                vec![Err(now + PACE_UNAVAILABLE); batch.len()]
            }
        }
    }

    /// PagerDuty answered 429 for `c`'s routing key: hold the key back until `until`, for
    /// every replica when the pace is shared.
    async fn slow_down(&self, c: &Claimed, now: Millis, until: Millis) {
        match &self.pacing {
            Pacing::Local(p) => p.lock().expect("pacer lock").slow_down(c.event.routing_key().expose(), now, until),
            Pacing::Shared(store, limits) => {
                if let Err(e) = store.hold(&c.event.routing_key().sha256(), now, until, limits).await {
                    tracing::error!(event_id = c.id, error = %e, "cannot hold back the routing key for the other replicas");
                }
            }
        }
    }

    /// Runs until `shutdown` turns true; in-flight attempts are finished before returning.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut inflight = JoinSet::new();
        loop {
            if *shutdown.borrow() {
                break;
            }
            let free = self.cfg.concurrency.saturating_sub(inflight.len());
            let mut claimed = 0;
            if free > 0 {
                match self.queue.claim(now_millis(), free, self.cfg.lease).await {
                    Ok(batch) => {
                        claimed = batch.len();
                        let admitted = self.admit(&batch, now_millis()).await;
                        for (c, admitted) in batch.into_iter().zip(admitted) {
                            let w = self.clone();
                            inflight.spawn(async move { w.deliver(c, admitted).await });
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "cannot claim events"),
                }
            }
            // With every slot busy, only a finished attempt can change what is claimable.
            let sleep = if free == 0 || claimed == free {
                None
            } else {
                match self.queue.next_due().await {
                    Ok(Some(due)) => Some(Duration::from_millis((due - now_millis()).max(0) as u64).min(IDLE_RECHECK)),
                    Ok(None) | Err(_) => Some(IDLE_RECHECK),
                }
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                Some(_) = inflight.join_next(), if !inflight.is_empty() => {
                    // Collect every attempt that ended meanwhile: one claim refills them all.
                    while inflight.try_join_next().is_some() {}
                }
                _ = tokio::time::sleep(sleep.unwrap_or(Duration::from_secs(3600))), if sleep.is_some() => {}
                _ = shutdown.changed() => {}
            }
        }
        // Let running attempts end; whatever is left stays queued for the next start.
        while inflight.join_next().await.is_some() {}
    }

    /// One attempt at one event, recorded; or, when its routing key must wait (`admitted` is
    /// `Err(at)`), deferred.
    pub async fn deliver(&self, c: Claimed, admitted: Result<(), Millis>) -> Outcome {
        for old in &c.superseded {
            tracing::info!(event_id = old, by = c.id, "trigger collapsed into a newer one for the same dedup_key");
        }
        self.metrics.collapsed(c.superseded.len());
        if let Err(at) = admitted {
            if let Err(e) = self.queue.defer(c.id, c.lease, at).await {
                tracing::error!(event_id = c.id, error = %e, "cannot defer event; its lease will expire");
            }
            self.metrics.attempt(Outcome::Deferred.as_str(), None);
            return Outcome::Deferred;
        }
        let started = std::time::Instant::now();
        let lease = AtomicI64::new(c.lease);
        let Some(response) = self.send_holding_lease(&c, &lease).await else {
            self.metrics.attempt(Outcome::Abandoned.as_str(), None);
            return Outcome::Abandoned;
        };
        let upstream = started.elapsed();
        let now = now_millis();
        let (status, detail, returned_key) = match &response {
            Response::Status { code, message, dedup_key, .. } => {
                (Some(*code), Some(message.clone()), dedup_key.clone())
            }
            Response::Transport(e) => (None, Some(e.clone()), None),
        };
        check_answer(&c, &response);
        let attempt_no = c.attempts + 1;
        let (finish, outcome) = match policy::classify(&response) {
            RetryAction::Delivered if self.client.is_dry_run() => (Finish::DryRun, Outcome::DryRun),
            RetryAction::Delivered => (Finish::Delivered, Outcome::Delivered),
            RetryAction::Dead(reason) => (Finish::Dead(reason), Outcome::DeadLettered),
            RetryAction::Retry { reason, after } => {
                let delay = match after {
                    Some(a) => policy::retry_after(a),
                    None => policy::backoff(attempt_no, self.cfg.initial_backoff, self.cfg.max_backoff, rand::random()),
                };
                let next: Millis = now + delay.as_millis() as Millis;
                if matches!(response, Response::Status { code: 429, .. }) {
                    // PagerDuty throttles per routing key: hold back every event for it.
                    self.slow_down(&c, now, next).await;
                }
                if next - c.created_at > self.cfg.max_age.as_millis() as Millis {
                    (
                        Finish::Dead(format!("gave up after {attempt_no} attempts over max_age: {reason}")),
                        Outcome::DeadLettered,
                    )
                } else {
                    (Finish::RetryAt(next), Outcome::Retried)
                }
            }
        };
        tracing::info!(
            event_id = c.id,
            inbound_id = %c.inbound_id,
            attempt = attempt_no,
            kind = c.event.kind().as_str(),
            action = c.event.action().map(|a| a.as_str()),
            dedup_key = c.event.dedup_key().map(|k| k.as_str()),
            status,
            detail = detail.as_deref(),
            outcome = outcome.as_str(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "delivery attempt"
        );
        self.metrics.attempt(outcome.as_str(), Some(upstream));
        let attempt = Attempt { at: now, status, detail, dedup_key: returned_key };
        match self.queue.finish(c.id, lease.load(Ordering::SeqCst), attempt, finish).await {
            Ok(true) => {}
            // Another claim holds the event now (this one's lease ran out): its attempt, not
            // this one, decides the event's state.
            Ok(false) => {
                tracing::warn!(event_id = c.id, "lease lost before the outcome was recorded; left to its holder")
            }
            // The lease keeps the event from being sent twice at once; after it expires
            // (or on restart) the event is tried again: at-least-once.
            Err(e) => tracing::error!(event_id = c.id, error = %e, "cannot record delivery outcome"),
        }
        outcome
    }

    /// Sends `c` while keeping its lease (`lease` holds the current value); `None` when the
    /// attempt was abandoned because the lease was lost.
    async fn send_holding_lease(&self, c: &Claimed, lease: &AtomicI64) -> Option<Response> {
        tokio::select! {
            r = self.client.send(&c.event) => Some(r),
            why = self.hold_lease(c.id, lease) => {
                // Dropping the request aborts it; it may still have reached PagerDuty, which
                // the next holder's attempt repeats: at least once, never silently lost.
                tracing::warn!(event_id = c.id, inbound_id = %c.inbound_id, why, "delivery attempt abandoned");
                None
            }
        }
    }

    /// Keeps the lease of a running attempt: renews it a third of the way through, so it
    /// never runs out under a live attempt whatever `pagerduty.timeout` is. Returns (and so
    /// ends the attempt) only when the lease is lost: another claim holds it, or it could not
    /// be renewed and has a third of its length left, so that the attempt stops, by this
    /// replica's clock, before any other replica may take the event.
    async fn hold_lease(&self, id: i64, lease: &AtomicI64) -> &'static str {
        let length = self.cfg.lease.as_millis() as Millis;
        let mut wake = lease.load(Ordering::SeqCst) - length * 2 / 3;
        loop {
            tokio::time::sleep(Duration::from_millis((wake - now_millis()).max(0) as u64)).await;
            let held = lease.load(Ordering::SeqCst);
            let now = now_millis();
            let give_up = held - length / 3;
            if now >= give_up {
                return "its lease could not be renewed in time";
            }
            // Strictly larger than the held value: the lease stays a fencing token.
            let until = (now + length).max(held + 1);
            let renewal = self.queue.renew(id, held, until);
            match tokio::time::timeout(Duration::from_millis((give_up - now) as u64), renewal).await {
                Ok(Ok(true)) => {
                    lease.store(until, Ordering::SeqCst);
                    wake = until - length * 2 / 3;
                }
                Ok(Ok(false)) => return "another claim holds its event",
                Ok(Err(e)) => {
                    tracing::warn!(event_id = id, error = %e, "cannot renew a delivery lease; trying again");
                    wake = now + (length / 6).min(1000);
                }
                Err(_) => return "its lease could not be renewed in time",
            }
        }
    }
}

/// Reads PagerDuty's 202 the way its documentation describes it: `status` should be
/// `"success"`, and `dedup_key` the key the event was filed under. A different key means the
/// incident is not the one pagerhook's later acknowledge or resolve will name (PagerDuty
/// derives a key when none is sent, or an event rule rewrote it): say so loudly.
fn check_answer(c: &Claimed, response: &Response) {
    for problem in answer_problems(c.event.dedup_key().map(|k| k.as_str()), response) {
        tracing::warn!(event_id = c.id, inbound_id = %c.inbound_id, "{problem}");
    }
}

/// What is wrong with a 2xx answer to an event sent with `sent` as its dedup_key.
fn answer_problems(sent: Option<&str>, response: &Response) -> Vec<String> {
    let Response::Status { code: 200..=299, status, dedup_key, .. } = response else { return Vec::new() };
    let mut problems = Vec::new();
    if let Some(s) = status.as_deref().filter(|s| !s.eq_ignore_ascii_case("success")) {
        problems.push(format!("PagerDuty accepted the event with status {s:?} instead of \"success\""));
    }
    if let (Some(sent), Some(got)) = (sent, dedup_key.as_deref()) {
        if sent != got {
            problems.push(format!(
                "PagerDuty filed the event under dedup_key {got:?}, not the {sent:?} sent: \
                 a later acknowledge or resolve of {sent:?} will not reach that incident"
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(code: u16, status: &str, key: Option<&str>) -> Response {
        Response::Status {
            code,
            message: "m".into(),
            retry_after: None,
            status: Some(status.into()),
            dedup_key: key.map(Into::into),
        }
    }

    #[test]
    fn a_202_under_another_dedup_key_or_status_is_a_warning() {
        assert!(answer_problems(Some("k"), &answer(202, "success", Some("k"))).is_empty());
        assert!(answer_problems(None, &answer(202, "success", None)).is_empty(), "change events get no key");
        let p = answer_problems(Some("k"), &answer(202, "success", Some("other")));
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("\"other\", not the \"k\" sent"), "{p:?}");
        assert_eq!(answer_problems(Some("k"), &answer(202, "queued", Some("k"))).len(), 1);
        assert!(answer_problems(Some("k"), &answer(400, "invalid event", Some("x"))).is_empty(), "only 2xx are read");
    }
}
