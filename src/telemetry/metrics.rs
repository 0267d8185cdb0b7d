//! Prometheus metrics, served on the admin listener at `GET /metrics` (OpenMetrics text).
//!
//! One registry per running app rather than a global one, so that the integration tests,
//! which run many apps in one process, each see their own counts. Label values come from
//! closed sets (status codes, reason classes, configured source names), never from request
//! data, so a sender cannot blow up the number of series.
//!
//! The counters move only through [`super::events`]: their methods are private to
//! `telemetry`, so every count has its log line.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    source: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabels {
    source: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookOutcomeLabels {
    source: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    source: String,
    kind: String,
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

/// A routing key, by its fingerprint (`RoutingKey::fingerprint`), never the key: keys come
/// from the config, so the set is closed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabels {
    routing_key: String,
}

/// One routing key's backlog as the condition watcher measured it: the storm gauges and the
/// console's table.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct KeyBacklogFigures {
    /// The key's fingerprint.
    pub routing_key: String,
    pub pending: u64,
    pub oldest_pending_seconds: f64,
    /// How long the backlog takes at the key's pace (`delivery.per_key_rate`); `None`:
    /// unlimited, no estimate.
    pub drain_seconds: Option<f64>,
    /// Pending events by source.
    pub sources: Vec<(String, u64)>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    task: String,
}

/// Every metric pagerhook exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    rejected: Family<RejectLabels, Counter>,
    outcomes: Family<WebhookOutcomeLabels, Counter>,
    events: Family<EventLabels, Counter>,
    mapping_failures: Family<RequestLabels, Counter>,
    too_many_events: Family<RequestLabels, Counter>,
    dead_letters_dropped: Family<RejectLabels, Counter>,
    attempts: Family<OutcomeLabels, Counter>,
    upstream: Histogram,
    unexpected: Family<StatusLabels, Counter>,
    collapsed: Counter,
    stale: Family<SourceLabels, Counter>,
    silence_resolved: Family<SourceLabels, Counter>,
    superseded: Counter,
    reloads: Family<OutcomeLabels, Counter>,
    task_failures: Family<TaskLabels, Counter>,
    depth: Gauge,
    oldest: Gauge<f64, AtomicU64>,
    store_used: Gauge<f64, AtomicU64>,
    store_free: Gauge<f64, AtomicU64>,
    out_of_room: Gauge,
    open_incidents: Family<SourceLabels, Gauge>,
    oldest_incident: Gauge<f64, AtomicU64>,
    key_pending: Family<KeyLabels, Gauge>,
    key_oldest: Family<KeyLabels, Gauge<f64, AtomicU64>>,
    key_drain: Family<KeyLabels, Gauge<f64, AtomicU64>>,
    /// The latest figures behind the three key gauges, for the console.
    backlog: Mutex<Vec<KeyBacklogFigures>>,
    /// The configured routing keys' fingerprints: exported at 0 when nothing waits for them.
    keys: Mutex<Vec<String>>,
    last_hour: LastHour,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// Registers `metric` and hands it back: the registry holds a clone that shares its counts.
fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Metrics {
    /// A fresh registry with every metric registered (at zero).
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("pagerhook");
        let r = &mut registry;
        // `registry` goes last: the fields before it borrow it to register.
        Metrics {
            requests: registered(
                r,
                "webhook_requests",
                "Webhook requests by source and HTTP status answered",
                Family::default(),
            ),
            rejected: registered(
                r,
                "webhook_rejected",
                "Webhooks refused before mapping, by source and reason (signature, timestamp, header, body, ...)",
                Family::default(),
            ),
            outcomes: registered(
                r,
                "webhook_outcomes",
                "Webhooks by source and outcome: accepted, ignored, unmatched, duplicate, refused, mapping_failed, too_many_events",
                Family::default(),
            ),
            events: registered(
                r,
                "events_queued",
                "Events accepted into the queue, by source, kind and action",
                Family::default(),
            ),
            mapping_failures: registered(
                r,
                "mapping_failures",
                "Webhooks whose mapping failed (kept for `pagerhook dlq replay`)",
                Family::default(),
            ),
            too_many_events: registered(
                r,
                "too_many_events",
                "Webhooks over max_events_per_request (kept for `pagerhook dlq replay` once the cap is raised)",
                Family::default(),
            ),
            dead_letters_dropped: registered(
                r,
                "dead_letters_dropped",
                "Dead letters dropped, by source and reason: age (storage.dead_letter_retention) or size (storage.dead_letter_max_bytes)",
                Family::default(),
            ),
            attempts: registered(
                r,
                "delivery_attempts",
                "Delivery attempts by outcome: delivered, retried, dead_lettered (a new dead letter), abandoned (lease lost)",
                Family::default(),
            ),
            upstream: registered(
                r,
                "upstream_seconds",
                "PagerDuty response time per request",
                Histogram::new(exponential_buckets(0.005, 2.0, 12)),
            ),
            unexpected: registered(
                r,
                "upstream_unexpected",
                "Answers from events_url that the Events API does not document (3xx, 4xx but 400/408/429), by status; retried",
                Family::default(),
            ),
            collapsed: registered(
                r,
                "triggers_collapsed",
                "Pending triggers replaced by a newer trigger of the same dedup_key before being sent",
                Counter::default(),
            ),
            stale: registered(
                r,
                "events_stale",
                "Events not sent because they were older than the sequence their incident already applied (out-of-order deliveries), by source",
                Family::default(),
            ),
            silence_resolved: registered(
                r,
                "incidents_silence_resolved",
                "Incidents pagerhook resolved because their source did not re-trigger them within its resolve_when_silent, by source",
                Family::default(),
            ),
            superseded: registered(
                r,
                "events_superseded",
                "Pending events not sent because their lane's resolve arrived before its trigger was sent (both counted)",
                Counter::default(),
            ),
            reloads: registered(r, "config_reloads", "Config reloads by result (ok, error)", Family::default()),
            task_failures: registered(
                r,
                "task_failures",
                "Background tasks that died (panicked, or returned while not stopping), by task; each is restarted",
                Family::default(),
            ),
            depth: registered(r, "queue_depth", "Events waiting to be delivered", Gauge::default()),
            oldest: registered(
                r,
                "queue_oldest_pending_seconds",
                "Age of the oldest event waiting to be delivered",
                Gauge::default(),
            ),
            store_used: registered(
                r,
                "store_used_bytes",
                "Bytes the store uses (SQLite: used database pages plus payload segments; PostgreSQL: the database's size), read at scrape time",
                Gauge::default(),
            ),
            store_free: registered(
                r,
                "store_free_bytes",
                "Bytes left to the SQLite store (its filesystem's free space plus its free pages), read at scrape time; NaN on PostgreSQL",
                Gauge::default(),
            ),
            out_of_room: registered(
                r,
                "store_out_of_room",
                "1 while the store refuses webhooks for lack of room (storage.min_free_bytes, storage.max_bytes, disk full)",
                Gauge::default(),
            ),
            open_incidents: registered(
                r,
                "open_incidents",
                "Incidents pagerhook triggered and believes open or acknowledged (its ledger, not PagerDuty's truth), by the source that opened them",
                Family::default(),
            ),
            oldest_incident: registered(
                r,
                "oldest_open_incident_seconds",
                "Age of the oldest incident pagerhook believes open (0: none)",
                Gauge::default(),
            ),
            key_pending: registered(
                r,
                "routing_key_backlog",
                "Events waiting for one routing key (by fingerprint), pagerhook's own excepted; measured every few seconds",
                Family::default(),
            ),
            key_oldest: registered(
                r,
                "routing_key_backlog_oldest_seconds",
                "Age of the oldest event waiting for one routing key (by fingerprint)",
                Family::default(),
            ),
            key_drain: registered(
                r,
                "routing_key_drain_seconds",
                "Estimated time to send one routing key's backlog at its pace (delivery.per_key_rate); NaN when unlimited",
                Family::default(),
            ),
            backlog: Mutex::new(Vec::new()),
            keys: Mutex::new(Vec::new()),
            last_hour: LastHour::default(),
            registry,
        }
    }

    /// Exports the counters someone alerts on at 0 for every configured source (and both
    /// reload outcomes), so `increase()` sees the first failure rather than a series appearing.
    pub fn configured<'a>(&self, sources: impl IntoIterator<Item = &'a str>) {
        for source in sources {
            let _ = self.mapping_failures.get_or_create(&RequestLabels { source: source.to_string(), status: 202 });
            // The reasons `queue::DeadDropReason` names.
            for reason in ["age", "size"] {
                let labels = RejectLabels { source: source.to_string(), reason: reason.to_string() };
                let _ = self.dead_letters_dropped.get_or_create(&labels);
            }
            let _ = self.stale.get_or_create(&SourceLabels { source: source.to_string() });
            let _ = self.silence_resolved.get_or_create(&SourceLabels { source: source.to_string() });
            for outcome in super::events::WebhookOutcome::ALL {
                let labels = WebhookOutcomeLabels { source: source.to_string(), outcome: outcome.as_str().to_string() };
                let _ = self.outcomes.get_or_create(&labels);
            }
        }
        for outcome in ["ok", "error"] {
            let _ = self.reloads.get_or_create(&OutcomeLabels { outcome: outcome.to_string() });
        }
    }

    /// Exports `task_failures_total` at 0 for each of `tasks`, so `increase()` sees the first.
    pub fn tasks<'a>(&self, tasks: impl IntoIterator<Item = &'a str>) {
        for task in tasks {
            let _ = self.task_failures.get_or_create(&TaskLabels { task: task.to_string() });
        }
    }

    /// A background task died.
    pub(super) fn task_failed(&self, task: &str) {
        self.task_failures.get_or_create(&TaskLabels { task: task.to_string() }).inc();
    }

    /// A webhook request answered with `status` (`source` only if configured).
    pub(super) fn request(&self, source: &str, status: u16) {
        self.requests.get_or_create(&RequestLabels { source: source.to_string(), status }).inc();
    }

    /// What became of one webhook, `outcome` from [`super::events::WebhookOutcome`].
    pub(super) fn webhook_outcome(&self, source: &str, outcome: &'static str) {
        let labels = WebhookOutcomeLabels { source: source.to_string(), outcome: outcome.to_string() };
        self.outcomes.get_or_create(&labels).inc();
    }

    /// A webhook refused before mapping, `reason` from a closed set.
    pub(super) fn rejected(&self, source: &str, reason: &'static str) {
        self.rejected.get_or_create(&RejectLabels { source: source.to_string(), reason: reason.to_string() }).inc();
    }

    /// An event committed to the queue.
    pub(super) fn event(&self, source: &str, kind: &str, action: Option<&str>) {
        let labels = EventLabels {
            source: source.to_string(),
            kind: kind.to_string(),
            action: action.unwrap_or("none").to_string(),
        };
        self.events.get_or_create(&labels).inc();
    }

    /// pagerhook queued the resolve of `n` incidents of `source` for silence.
    pub(super) fn silence_resolved(&self, source: &str, n: usize) {
        self.silence_resolved.get_or_create(&SourceLabels { source: source.to_string() }).inc_by(n as u64);
    }

    /// `n` events of `source` stored `stale`, never sent.
    pub(super) fn stale(&self, source: &str, n: usize) {
        self.stale.get_or_create(&SourceLabels { source: source.to_string() }).inc_by(n as u64);
    }

    /// A payload whose mapping failed, kept for replay.
    pub(super) fn mapping_failed(&self, source: &str) {
        self.mapping_failures.get_or_create(&RequestLabels { source: source.to_string(), status: 202 }).inc();
    }

    /// A payload over `max_events_per_request`, kept for replay.
    pub(super) fn too_many_events(&self, source: &str) {
        self.too_many_events.get_or_create(&RequestLabels { source: source.to_string(), status: 202 }).inc();
    }

    /// `n` dead letters of `source` dropped for `reason` (`age` or `size`).
    pub(super) fn dead_letters_dropped(&self, source: &str, reason: &'static str, n: u64) {
        self.dead_letters_dropped
            .get_or_create(&RejectLabels { source: source.to_string(), reason: reason.to_string() })
            .inc_by(n);
    }

    /// A delivery attempt's outcome, and PagerDuty's response time if it was asked.
    pub(super) fn attempt(&self, outcome: &'static str, upstream: Option<Duration>) {
        self.attempts.get_or_create(&OutcomeLabels { outcome: outcome.to_string() }).inc();
        self.last_hour.add(minute_now(), outcome);
        if let Some(d) = upstream {
            self.upstream.observe(d.as_secs_f64());
        }
    }

    /// `delivery_attempts_total` by outcome over the last hour (to the minute), for the console.
    pub fn attempts_last_hour(&self) -> BTreeMap<&'static str, u64> {
        self.last_hour.totals(minute_now())
    }

    /// An undocumented answer from `events_url`.
    pub(super) fn unexpected(&self, status: u16) {
        self.unexpected.get_or_create(&StatusLabels { status }).inc();
    }

    /// Triggers collapsed into a newer one.
    pub(super) fn collapsed(&self, n: usize) {
        self.collapsed.inc_by(n as u64);
    }

    /// Events superseded (`delivery.supersede`).
    pub(super) fn superseded(&self, n: usize) {
        self.superseded.inc_by(n as u64);
    }

    /// A config reload, successful or not.
    pub(super) fn reload(&self, ok: bool) {
        self.reloads.get_or_create(&OutcomeLabels { outcome: if ok { "ok" } else { "error" }.to_string() }).inc();
    }

    /// The store's room as measured for this scrape (`None`: unknown, exported as NaN).
    pub fn store_room(&self, used: Option<u64>, free: Option<u64>) {
        self.store_used.set(used.map_or(f64::NAN, |b| b as f64));
        self.store_free.set(free.map_or(f64::NAN, |b| b as f64));
    }

    /// Whether the store refuses webhooks for lack of room.
    pub(super) fn out_of_room(&self, short: bool) {
        self.out_of_room.set(i64::from(short));
    }

    /// Sets the incident gauges from the ledger's current figures, read when `/metrics` is
    /// scraped as the queue gauges are: open incidents per source (every configured source,
    /// at 0 when none; a source no longer configured as `unknown`) and the oldest one's age.
    pub fn incidents(&self, open: &[(String, u64)], oldest_age: Option<Duration>) {
        self.open_incidents.clear();
        for (source, n) in open {
            self.open_incidents.get_or_create(&SourceLabels { source: source.clone() }).inc_by(*n as i64);
        }
        self.oldest_incident.set(oldest_age.map(|d| d.as_secs_f64()).unwrap_or(0.0));
    }

    /// Exports the routing-key backlog gauges at 0 for each of `keys` (fingerprints of the
    /// configured keys), now and after every [`Metrics::set_key_backlog`]: a rule sees 0 rather
    /// than no series while nothing waits.
    pub fn routing_keys(&self, keys: Vec<String>) {
        *self.keys.lock().unwrap_or_else(|e| e.into_inner()) = keys;
        self.set_key_backlog(self.key_backlog());
    }

    /// Sets the routing-key backlog gauges to `figures` (a configured key with nothing waiting
    /// at 0, another not exported), and keeps them for the console ([`Metrics::key_backlog`]).
    pub fn set_key_backlog(&self, figures: Vec<KeyBacklogFigures>) {
        self.key_pending.clear();
        self.key_oldest.clear();
        self.key_drain.clear();
        for key in self.keys.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let labels = KeyLabels { routing_key: key.clone() };
            self.key_pending.get_or_create(&labels).set(0);
            self.key_oldest.get_or_create(&labels).set(0.0);
            self.key_drain.get_or_create(&labels).set(0.0);
        }
        for f in &figures {
            let labels = KeyLabels { routing_key: f.routing_key.clone() };
            self.key_pending.get_or_create(&labels).set(f.pending as i64);
            self.key_oldest.get_or_create(&labels).set(f.oldest_pending_seconds);
            self.key_drain.get_or_create(&labels).set(f.drain_seconds.unwrap_or(f64::NAN));
        }
        *self.backlog.lock().unwrap_or_else(|e| e.into_inner()) = figures;
    }

    /// The routing keys' backlog as last measured, for the console.
    pub fn key_backlog(&self) -> Vec<KeyBacklogFigures> {
        self.backlog.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The OpenMetrics text, with the queue gauges set from the store's current figures.
    pub fn render(&self, depth: u64, oldest_age: Option<Duration>) -> String {
        self.depth.set(depth as i64);
        self.oldest.set(oldest_age.map(|d| d.as_secs_f64()).unwrap_or(0.0));
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

fn minute_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() / 60).unwrap_or(0)
}

/// Delivery outcomes counted per minute, for the last 60 minutes: the same increments as the
/// `delivery_attempts` counter, so the console's "last hour" is a window over what /metrics
/// exports. At most 60 buckets.
#[derive(Default)]
struct LastHour {
    minutes: Mutex<VecDeque<(u64, BTreeMap<&'static str, u64>)>>,
}

impl LastHour {
    fn add(&self, minute: u64, outcome: &'static str) {
        let mut m = self.minutes.lock().unwrap_or_else(|e| e.into_inner());
        while m.front().is_some_and(|(t, _)| t + 60 <= minute) {
            m.pop_front();
        }
        if m.back().is_none_or(|(t, _)| *t != minute) {
            m.push_back((minute, BTreeMap::new()));
        }
        if let Some((_, counts)) = m.back_mut() {
            *counts.entry(outcome).or_default() += 1;
        }
    }

    fn totals(&self, minute: u64) -> BTreeMap<&'static str, u64> {
        let m = self.minutes.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = BTreeMap::new();
        for (_, counts) in m.iter().filter(|(t, _)| t + 60 > minute) {
            for (k, v) in counts {
                *out.entry(*k).or_default() += v;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
