//! The condition watcher: every few seconds, measures each routing key's backlog (the storm
//! gauges on `/metrics` and the console) and judges the conditions pagerhook pages about
//! itself: a key whose backlog would take longer than `pagerduty.storm_page_after` to send at
//! its pace, and the store out of room (as the room watcher last measured it). The store then
//! raises a page for a condition that starts and resolves the page of one that cleared, in one
//! step for every condition (`Conditions::hold_conditions`).
//!
//! The judging is pure ([`judge`], [`drain_time`]): tests step it without a clock or a store.

use crate::config::{Config, DeliveryConfig, PagerDutyConfig};
use crate::event::own::{self, Page, Reason};
use crate::event::{RoutingKey, Severity};
use crate::queue::{Held, KeyBacklog, Millis, Queue};
use crate::telemetry::events::ConditionPaged;
use crate::telemetry::{InternalEvent, KeyBacklogFigures, Metrics};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often the backlog is measured: a `GROUP BY` over the pending events, so not every
/// second; a storm worth paging about lasts minutes.
const EVERY: Duration = Duration::from_secs(5);

/// A storm's page is resolved once its key's backlog would drain within this: what one minute
/// of the key's pace sends, about what a busy key always has waiting.
pub const CLEARED_WITHIN: Duration = Duration::from_secs(60);

/// What the room watcher last said: `None` not measured yet, `Some(None)` room enough,
/// `Some(Some(why))` out of room.
pub type RoomState = Option<Option<String>>;

/// The limits the judging reads, from `[delivery]` and `[pagerduty]`.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `delivery.per_key_rate` (0: unlimited, no storm can be judged).
    pub per_key_rate: u32,
    /// `pagerduty.storm_page_after`.
    pub page_after: Duration,
    /// Whether pagerhook pages about itself (`pagerduty.own_pages`).
    pub paging: bool,
    /// Where the store's page goes (`pagerduty.own_pages_routing_key`); `None`: nowhere.
    pub own_key: Option<RoutingKey>,
}

impl Limits {
    pub fn of(d: &DeliveryConfig, pd: &PagerDutyConfig) -> Limits {
        Limits {
            per_key_rate: d.per_key_rate,
            page_after: pd.storm_page_after,
            paging: pd.own_pages,
            own_key: pd.own_pages_routing_key.clone(),
        }
    }
}

/// The supervised task (`supervise::Task::ConditionWatcher`), started by `app`.
#[derive(Clone)]
pub struct ConditionWatch {
    queue: Arc<dyn Queue>,
    metrics: Arc<Metrics>,
    limits: Limits,
    room: watch::Receiver<RoomState>,
}

impl ConditionWatch {
    /// A watcher of `queue` judging by `cfg`, hearing of the store's room from `room` (the room
    /// watcher's); it also exports the backlog gauges at 0 for every key `cfg` names.
    pub fn new(queue: Arc<dyn Queue>, metrics: Arc<Metrics>, cfg: &Config, room: watch::Receiver<RoomState>) -> Self {
        metrics.routing_keys(configured_keys(cfg));
        ConditionWatch { queue, metrics, limits: Limits::of(&cfg.delivery, &cfg.pagerduty), room }
    }

    /// Judges every [`EVERY`], and at once when the room watcher's word changes, until stopped.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                Ok(()) = self.room.changed() => {}
                _ = stop.changed() => return,
            }
            let room = self.room.borrow_and_update().clone();
            self.round(room).await;
        }
    }

    /// One measurement and judgement. A failure is logged; the next round tries again (a page
    /// that could not be queued, e.g. the disk full, is queued by the first round that can).
    async fn round(&self, room: RoomState) {
        let now = crate::queue::now_millis();
        let backlog = match self.queue.backlog().await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "cannot measure the routing keys' backlog");
                return;
            }
        };
        let (figures, mut holding) = judge(&backlog, now, &self.limits);
        self.metrics.set_key_backlog(figures);
        if !self.limits.paging {
            return;
        }
        let mut judged = vec![Reason::StormWaiting];
        if let (Some(room), Some(key)) = (room, &self.limits.own_key) {
            judged.push(Reason::StoreOutOfRoom);
            holding.extend(room.map(|why| store_page(key, &why)));
        }
        match self.queue.hold_conditions(judged, holding, now).await {
            Ok(changes) => {
                for c in changes {
                    ConditionPaged { subject: &c.subject, reason: c.reason.as_str(), raised: c.raised }
                        .emit(&self.metrics);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot queue or resolve pagerhook's condition pages"),
        }
    }
}

/// The fingerprints of every routing key the config names (`[pagerduty]`'s, the named ones,
/// the sources' own), each once: the backlog gauges are exported at 0 for them.
pub fn configured_keys(cfg: &Config) -> Vec<String> {
    let pd = &cfg.pagerduty;
    let keys = pd.routing_key.iter().chain(pd.own_pages_routing_key.iter()).chain(pd.routing_keys.values());
    let keys = keys.chain(cfg.sources.iter().filter_map(|s| s.routing_key.as_ref()));
    let set: std::collections::BTreeSet<String> = keys.map(RoutingKey::fingerprint).collect();
    set.into_iter().collect()
}

/// How long `pending` events take at `per_minute` a minute; `None`: unlimited.
pub fn drain_time(pending: u64, per_minute: u32) -> Option<Duration> {
    (per_minute > 0).then(|| Duration::from_millis(pending.saturating_mul(60_000).div_ceil(u64::from(per_minute))))
}

/// The gauges' figures of each key at `now`, and the storms among them: a key whose backlog
/// takes longer than `page_after` to drain raises its page; one still above
/// [`CLEARED_WITHIN`] keeps an open page open.
pub fn judge(backlog: &[KeyBacklog], now: Millis, limits: &Limits) -> (Vec<KeyBacklogFigures>, Vec<Held>) {
    let mut figures = Vec::with_capacity(backlog.len());
    let mut holding = Vec::new();
    for b in backlog {
        let oldest = Duration::from_millis((now - b.oldest).max(0) as u64);
        let drain = drain_time(b.pending, limits.per_key_rate);
        figures.push(KeyBacklogFigures {
            routing_key: b.routing_key.fingerprint(),
            pending: b.pending,
            oldest_pending_seconds: oldest.as_secs_f64(),
            drain_seconds: drain.map(|d| d.as_secs_f64()),
            sources: b.sources.clone(),
        });
        let Some(drain) = drain.filter(|d| *d > CLEARED_WITHIN) else { continue };
        let raise = drain > limits.page_after;
        holding.push(Held {
            subject: own::key_subject(&b.routing_key),
            page: storm_page(b, oldest, drain, limits),
            raise,
        });
    }
    (figures, holding)
}

/// The page about `b`'s storm, on its own key (the service the storm delays): how many events
/// wait, from which sources, and the estimate.
fn storm_page(b: &KeyBacklog, oldest: Duration, drain: Duration, limits: &Limits) -> Page {
    let sources: serde_json::Map<_, _> = b.sources.iter().map(|(s, n)| (s.clone(), (*n).into())).collect();
    Page { severity: Severity::Critical, ..Page::new(Reason::StormWaiting, b.routing_key.clone()) }
        .with("routing_key", b.routing_key.fingerprint())
        .with("events_waiting", b.pending)
        .with("sources", sources)
        .with("oldest_pending_seconds", oldest.as_secs())
        .with("estimated_drain_seconds", (drain.as_millis() as u64).div_ceil(1000))
        .with("per_key_rate", limits.per_key_rate)
        .with("storm_page_after_seconds", limits.page_after.as_secs())
}

/// The page about the store out of room, on the own-pages key.
fn store_page(key: &RoutingKey, why: &str) -> Held {
    let page = Page { severity: Severity::Critical, ..Page::new(Reason::StoreOutOfRoom, key.clone()) }.with("why", why);
    Held { subject: own::STORE.to_string(), page, raise: true }
}

#[cfg(test)]
mod tests;
