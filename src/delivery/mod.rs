//! The delivery worker: takes events from the queue, sends them, and records the outcome.
//!
//! The queue decides *what* may go and in which order (lane heads only, the best of a routing
//! key first, only while the key has a free slot by `pacing`'s rules); `policy` decides
//! *whether and when* to try again; this module only runs the loop. It
//! wakes on a new accept, a finished attempt or the next due time, and otherwise looks at the
//! store once every [`IDLE_RECHECK`] for events another process queued (`pagerhook dlq
//! replay`). Time, jitter and PagerDuty itself are [`inputs`], so tests step the worker
//! ([`Worker::drain`]) on paused tokio time.

pub mod conditions;
pub mod inputs;
pub mod pacing;
pub mod policy;

use crate::config::{DeliveryConfig, PagerDutyConfig};
use crate::event::{Action, Event, RoutingKey};
use crate::pagerduty::Response;
use crate::queue::{Attempt, Batch, Claimed, Deliveries, Finish, Millis, PaceRule, Pick};
use crate::telemetry::events::{
    AttemptAbandoned, AttemptMade, AttemptPanicked, EventsSuperseded, TriggerMinimised, TriggersCollapsed,
    UpstreamUnexpected,
};
use crate::telemetry::{attempt_span, InternalEvent, Metrics};
use inputs::{Clock, Jitter, RandomJitter, SystemClock, Upstream};
use pacing::Limits;
use policy::RetryAction;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

/// Longest idle sleep: events queued by another process are picked up this fast.
pub const IDLE_RECHECK: Duration = Duration::from_secs(1);

/// An attempt that ended, as the loop sees it.
struct Ended {
    outcome: Outcome,
    /// The event had a lane (an `order_key`): its end may let the next event of the lane go.
    in_lane: bool,
}

impl Ended {
    /// Whether the attempt's end can make something claimable besides its slot: the next event
    /// in its lane, or the event itself again (retried, deferred, or abandoned to another
    /// replica's lease). A delivered, dry-run or dead change event cannot. A panicked attempt
    /// is reported, and assumed to.
    fn frees(ended: Result<Ended, tokio::task::JoinError>, metrics: &Metrics) -> bool {
        match ended {
            Ok(Ended { outcome, in_lane }) => {
                in_lane
                    || match outcome {
                        Outcome::Delivered | Outcome::DryRun | Outcome::DeadLettered => false,
                        Outcome::Retried | Outcome::Abandoned => true,
                    }
            }
            Err(e) => {
                AttemptPanicked { how: &crate::supervise::died(e) }.emit(metrics);
                true
            }
        }
    }
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// `--dry-run`: logged, not sent.
    DryRun,
    Retried,
    DeadLettered,
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
            Outcome::Abandoned => "abandoned",
        }
    }
}

/// Sends queued events to PagerDuty.
#[derive(Clone)]
pub struct Worker {
    queue: Arc<dyn Deliveries>,
    upstream: Arc<dyn Upstream>,
    cfg: DeliveryConfig,
    wake: Arc<Notify>,
    /// Routing keys' pace (the store applies it at the claim).
    pace: Arc<Limits>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    jitter: Arc<dyn Jitter>,
    /// Whether a dead trigger pages (`pagerduty.own_pages`), and to which key: `None`, the
    /// dead trigger's own.
    own_pages: Option<Option<RoutingKey>>,
}

/// One of `concurrency` slots for a request in flight to PagerDuty (none in [`Worker::drain`],
/// which bounds its round itself). Giving it back wakes the loop to claim again.
struct Slot(Option<(OwnedSemaphorePermit, Arc<Notify>)>);

impl Slot {
    fn none() -> Slot {
        Slot(None)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((permit, freed)) = self.0.take() {
            drop(permit);
            freed.notify_one();
        }
    }
}

impl Worker {
    /// A worker over `queue` sending to `upstream` (PagerDuty's [`crate::pagerduty::Client`]),
    /// on the wall clock with random jitter; `wake` is notified by whoever enqueues. Routing
    /// keys are paced in the store, together with every other replica on it.
    pub fn new(
        queue: Arc<dyn Deliveries>,
        upstream: impl Upstream,
        cfg: DeliveryConfig,
        wake: Arc<Notify>,
        metrics: Arc<Metrics>,
    ) -> Worker {
        let pace = Arc::new(Limits::new(cfg.per_key_rate, cfg.per_key_burst));
        let (clock, jitter) = (Arc::new(SystemClock), Arc::new(RandomJitter));
        Worker { queue, upstream: Arc::new(upstream), cfg, wake, pace, metrics, clock, jitter, own_pages: None }
    }

    /// The same worker reading the time from `clock` (see [`inputs::TokioClock`]).
    pub fn with_clock(self, clock: impl Clock) -> Worker {
        Worker { clock: Arc::new(clock), ..self }
    }

    /// The same worker paging about the triggers it dead-letters as `pd` says (`own_pages`,
    /// `own_pages_routing_key`), in the transaction that records them dead.
    pub fn paging(self, pd: &PagerDutyConfig) -> Worker {
        Worker { own_pages: pd.own_pages.then(|| pd.own_pages_routing_key.clone()), ..self }
    }

    /// How a dead event is recorded: paged about, if pagerhook's own pages are on (the store
    /// pages only for a trigger that is not one of pagerhook's own).
    fn dead(&self, why: String) -> Finish {
        match &self.own_pages {
            Some(to) => Finish::DeadPaged(why, to.clone()),
            None => Finish::Dead(why),
        }
    }

    /// The same worker jittering its backoff by `jitter` (see [`inputs::FixedJitter`]).
    pub fn with_jitter(self, jitter: impl Jitter) -> Worker {
        Worker { jitter: Arc::new(jitter), ..self }
    }

    /// How a claim picks: paced (a dry run sends nothing, so PagerDuty's rate limit is no
    /// reason to hold it back), superseding as configured.
    fn pick(&self) -> Pick {
        let pace = (!self.upstream.is_dry_run()).then(|| Arc::clone(&self.pace) as Arc<dyn PaceRule>);
        Pick { pace, supersede: self.cfg.supersede }
    }

    /// PagerDuty answered 429 for `c`'s routing key: hold the key back until `until`, for
    /// every replica.
    async fn slow_down(&self, c: &Claimed, until: Millis) {
        let rule = Arc::clone(&self.pace) as Arc<dyn PaceRule>;
        if let Err(e) = self.queue.hold(&c.event.routing_key().sha256(), until, rule).await {
            tracing::error!(event_id = c.id, error = %e, "cannot hold back the routing key");
        }
    }

    /// Runs until `shutdown` turns true; in-flight attempts are finished before returning.
    ///
    /// `concurrency` bounds the requests in flight to PagerDuty: an attempt gives its slot
    /// back as soon as the answer is in, and records the outcome without it. Recording waits
    /// for the store's next commit (under accept load, once, its fsync too); holding the slot
    /// through it cut delivery to a fraction of what the upstream allowed. Its event stays
    /// leased until the outcome is stored, so nothing can claim it, or anything behind it in
    /// its lane, meanwhile. One claim is on its way at a time: it asks for every slot free
    /// when it leaves, and the slots freed (and accepts woken) while it is out are asked for
    /// when it is back. A claim per freed slot and per accept made eight claims per event at
    /// half the peak rate, each a query in the store's writer.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let slots = Arc::new(Semaphore::new(self.cfg.concurrency));
        let freed = Arc::new(Notify::new());
        // Attempts still recording hold no slot; this bounds them with the rest.
        let most = self.cfg.concurrency.saturating_mul(2);
        let mut inflight = JoinSet::new();
        let mut claims = JoinSet::new();
        // Set when a claim came back short: nothing more is due before this, a new accept or
        // an attempt ending.
        let mut idle_until: Option<tokio::time::Instant> = None;
        // Counts what can make more claimable (an accept, an attempt ending). A claim that
        // comes back short idles the loop only if nothing of the kind happened while it ran:
        // its answer may predate the outcome that frees a lane, and nothing would wake us.
        let mut changes: u64 = 0;
        loop {
            if *shutdown.borrow() {
                break;
            }
            // One claim out at a time (see above).
            let free = slots.available_permits().min(most.saturating_sub(inflight.len()));
            if claims.is_empty() && idle_until.is_none() && free > 0 {
                let reserved = Arc::clone(&slots).try_acquire_many_owned(free as u32).expect("the slots seen free");
                let w = self.clone();
                let seen = changes;
                claims.spawn(async move { (w.claim_due(free).await, reserved, seen) });
            }
            tokio::select! {
                _ = self.wake.notified() => {
                    changes += 1;
                    idle_until = None;
                }
                _ = freed.notified() => {}
                Some(ended) = inflight.join_next(), if !inflight.is_empty() => {
                    // Collect every attempt that ended meanwhile: one claim refills them all.
                    let mut frees = Ended::frees(ended, &self.metrics);
                    while let Some(ended) = inflight.try_join_next() {
                        frees |= Ended::frees(ended, &self.metrics);
                    }
                    // Idle, the worker was not short of slots: only a lane or a retry is news.
                    if frees || idle_until.is_none() {
                        changes += 1;
                        idle_until = None;
                    }
                }
                Some(done) = claims.join_next(), if !claims.is_empty() => {
                    let (batch, reserved, seen) = done.expect("a claim panicked");
                    let short = batch.claimed.len() < reserved.num_permits() && seen == changes;
                    let paced_until = batch.paced_until;
                    self.start(&mut inflight, batch.claimed, reserved, &freed);
                    idle_until = if short {
                        Some(tokio::time::Instant::now() + self.idle_for(paced_until).await)
                    } else {
                        None
                    };
                }
                _ = tokio::time::sleep_until(idle_until.unwrap_or_else(tokio::time::Instant::now)), if idle_until.is_some() => {
                    idle_until = None;
                }
                _ = shutdown.changed() => {}
            }
        }
        // What was claimed is attempted; whatever is left stays queued for the next start.
        while let Some(done) = claims.join_next().await {
            let (batch, reserved, _) = done.expect("a claim panicked");
            self.start(&mut inflight, batch.claimed, reserved, &freed);
        }
        while inflight.join_next().await.is_some() {}
    }

    /// Starts an attempt for each claimed event, each holding one of the `reserved` slots; the
    /// rest are given back.
    fn start(
        &self,
        inflight: &mut JoinSet<Ended>,
        batch: Vec<Claimed>,
        mut reserved: OwnedSemaphorePermit,
        freed: &Arc<Notify>,
    ) {
        for c in batch {
            let permit = reserved.split(1).expect("a slot reserved for every event claimed");
            let slot = Slot(Some((permit, Arc::clone(freed))));
            let w = self.clone();
            let in_lane = c.event.has_lane();
            inflight.spawn(async move { Ended { outcome: w.deliver(c, slot).await, in_lane } });
        }
    }

    /// One round of the loop, run to its end: claims what is due now (up to `concurrency`),
    /// delivers all of it, and says what became of each event (by id, in id order). Tests
    /// step the worker with it.
    pub async fn drain(&self) -> Vec<(i64, Outcome)> {
        self.drain_paced().await.0
    }

    /// [`Worker::drain`], and when the first routing key whose due events it held back (no
    /// free slot) has one: where tests step the time to.
    pub async fn drain_paced(&self) -> (Vec<(i64, Outcome)>, Option<Millis>) {
        let mut attempts = JoinSet::new();
        let batch = self.claim_due(self.cfg.concurrency).await;
        for c in batch.claimed {
            let w = self.clone();
            attempts.spawn(async move { (c.id, w.deliver_one(c).await) });
        }
        let mut outcomes = Vec::new();
        while let Some(done) = attempts.join_next().await {
            outcomes.push(done.expect("a delivery attempt panicked"));
        }
        outcomes.sort_by_key(|(id, _)| *id);
        (outcomes, batch.paced_until)
    }

    /// Claims up to `limit` events due now, as [`Worker::pick`] says: each spends a slot of
    /// its routing key. A claim that fails is logged and claims nothing: the loop tries again.
    async fn claim_due(&self, limit: usize) -> Batch {
        match self.queue.claim_with(self.clock.now(), limit, self.cfg.lease, &self.pick()).await {
            Ok(batch) => {
                EventsSuperseded { events: &batch.superseded }.emit(&self.metrics);
                batch
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot claim events");
                Batch::default()
            }
        }
    }

    /// How long to wait when nothing more is claimable: until the next due event or the next
    /// free slot of a key that held events back (`paced_until`), and at most [`IDLE_RECHECK`].
    async fn idle_for(&self, paced_until: Option<Millis>) -> Duration {
        let due = self.queue.next_due(self.clock.now()).await.unwrap_or_default();
        match due.into_iter().chain(paced_until).min() {
            Some(at) => Duration::from_millis((at - self.clock.now()).max(0) as u64).min(IDLE_RECHECK),
            None => IDLE_RECHECK,
        }
    }

    /// One claimed event: attempted and recorded.
    pub async fn deliver_one(&self, c: Claimed) -> Outcome {
        self.deliver(c, Slot::none()).await
    }

    /// [`Worker::deliver_one`], giving `slot` back once no request is in flight; in the
    /// attempt's span.
    async fn deliver(&self, c: Claimed, slot: Slot) -> Outcome {
        let span = attempt_span(c.id, &c.inbound_id, c.attempts + 1);
        async {
            TriggersCollapsed { by: c.id, collapsed: &c.collapsed }.emit(&self.metrics);
            self.attempt(&c, slot).await
        }
        .instrument(span)
        .await
    }

    /// Sends the event once, holding its lease, and records what PagerDuty's answer means.
    async fn attempt(&self, c: &Claimed, slot: Slot) -> Outcome {
        let started = std::time::Instant::now();
        let lease = AtomicI64::new(c.lease);
        let response = self.send_with_fallback(c, &lease).await;
        drop(slot);
        let response = match response {
            Ok(response) => response,
            Err(why) => {
                AttemptAbandoned { event_id: c.id, inbound_id: &c.inbound_id, why }.emit(&self.metrics);
                return Outcome::Abandoned;
            }
        };
        let upstream = started.elapsed();
        let now = self.clock.now();
        check_answer(c, &response);
        let (finish, outcome) = self.judge(c, &response, now).await;
        let attempt = attempt_record(now, response);
        AttemptMade {
            event_id: c.id,
            inbound_id: &c.inbound_id,
            attempt: c.attempts + 1,
            kind: c.event.kind().as_str(),
            action: c.event.action().map(|a| a.as_str()),
            dedup_key: c.event.dedup_key().map(|k| k.as_str()),
            status: attempt.status,
            detail: attempt.detail.as_deref(),
            outcome: outcome.as_str(),
            upstream,
            elapsed: started.elapsed(),
        }
        .emit(&self.metrics);
        self.record(c, lease.load(Ordering::SeqCst), attempt, finish).await;
        outcome
    }

    /// The policy on PagerDuty's answer at `now`: done, dead, or tried again later.
    async fn judge(&self, c: &Claimed, response: &Response, now: Millis) -> (Finish, Outcome) {
        match policy::classify(response) {
            RetryAction::Delivered if self.upstream.is_dry_run() => (Finish::DryRun, Outcome::DryRun),
            RetryAction::Delivered => (Finish::Delivered, Outcome::Delivered),
            RetryAction::Dead(reason) => (self.dead(reason), Outcome::DeadLettered),
            RetryAction::Retry { reason, after } => self.retry(c, response, now, reason, after).await,
            RetryAction::Unexpected { reason } => {
                if let Response::Status { code, message, .. } = response {
                    UpstreamUnexpected { event_id: c.id, status: *code, detail: message }.emit(&self.metrics);
                }
                self.retry(c, response, now, reason, None).await
            }
        }
    }

    /// A retry: after PagerDuty's `Retry-After` or our backoff; a 429 holds back the whole
    /// routing key; a trigger or change event whose next try would pass `max_age` is
    /// dead-lettered instead. An acknowledge or resolve never expires: sending one late is
    /// always safe, and giving it up leaves an incident open.
    async fn retry(
        &self,
        c: &Claimed,
        response: &Response,
        now: Millis,
        reason: String,
        after: Option<Duration>,
    ) -> (Finish, Outcome) {
        let attempt_no = c.attempts + 1;
        let next = now + self.retry_delay(attempt_no, after).as_millis() as Millis;
        if matches!(response, Response::Status { code: 429, .. }) {
            // PagerDuty throttles per routing key: hold back every event for it.
            self.slow_down(c, next).await;
        }
        let expires = !matches!(c.event.action(), Some(Action::Acknowledge | Action::Resolve));
        if expires && next - c.created_at > self.cfg.max_age.as_millis() as Millis {
            let why = format!("gave up after {attempt_no} attempts over max_age: {reason}");
            (self.dead(why), Outcome::DeadLettered)
        } else {
            (Finish::RetryAt(next), Outcome::Retried)
        }
    }

    /// How long before try `attempt_no + 1`: PagerDuty's word if it gave one, else backoff.
    fn retry_delay(&self, attempt_no: u32, after: Option<Duration>) -> Duration {
        match after {
            Some(after) => policy::retry_after(after),
            None => policy::backoff(attempt_no, self.cfg.initial_backoff, self.cfg.max_backoff, self.jitter.fraction()),
        }
    }

    /// Stores the attempt and the event's new state, if this claim (`lease`) still holds it.
    async fn record(&self, c: &Claimed, lease: Millis, attempt: Attempt, finish: Finish) {
        match self.queue.finish(c.id, lease, attempt, finish).await {
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
    }

    /// Sends `c`'s event holding its lease; a trigger PagerDuty refuses (400) is sent once more
    /// at once in its minimal form ([`Event::minimal`]), whose answer is the attempt's, with
    /// the first refusal in its message.
    async fn send_with_fallback(&self, c: &Claimed, lease: &AtomicI64) -> Result<Response, &'static str> {
        let response = self.send_holding_lease(c.id, &c.event, lease).await?;
        let Response::Status { code: 400, message: refused, .. } = &response else { return Ok(response) };
        let Some(minimal) = c.event.minimal(refused) else { return Ok(response) };
        TriggerMinimised { event_id: c.id, error: refused }.emit(&self.metrics);
        let both = |minimal: &str| format!("the full trigger was refused ({refused}); its minimal form: {minimal}");
        Ok(match self.send_holding_lease(c.id, &minimal, lease).await? {
            Response::Status { code, message, retry_after, status, dedup_key } => {
                Response::Status { code, message: both(&message), retry_after, status, dedup_key }
            }
            Response::Transport(e) => Response::Transport(both(&e)),
        })
    }

    /// Sends `event` (claimed as `id`) while keeping its lease (`lease` holds the current
    /// value); `Err(why)` when the attempt was abandoned because the lease was lost.
    async fn send_holding_lease(&self, id: i64, event: &Event, lease: &AtomicI64) -> Result<Response, &'static str> {
        tokio::select! {
            r = self.upstream.send(event) => Ok(r),
            // Dropping the request aborts it; it may still have reached PagerDuty, which the
            // next holder's attempt repeats: at least once, never silently lost.
            why = self.hold_lease(id, lease) => Err(why),
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
            tokio::time::sleep(Duration::from_millis((wake - self.clock.now()).max(0) as u64)).await;
            let held = lease.load(Ordering::SeqCst);
            let now = self.clock.now();
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

/// The attempt as stored: when, PagerDuty's status and message (or the transport error),
/// and the dedup_key its answer named.
fn attempt_record(at: Millis, response: Response) -> Attempt {
    match response {
        Response::Status { code, message, dedup_key, .. } => {
            Attempt { at, status: Some(code), detail: Some(message), dedup_key }
        }
        Response::Transport(e) => Attempt { at, status: None, detail: Some(e), dedup_key: None },
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
mod tests;
