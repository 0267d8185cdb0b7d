//! pagerhook's own pages: the events pagerhook originates about what it could not relay, built
//! here once so that the accept path, the store and the worker make them alike.
//!
//! One incident per source and [`Reason`], under a stable dedup_key
//! (`pagerhook/<source>/<reason>`). Two kinds of reason:
//! - a dead letter's ([`Reason::is_condition`] false): re-triggered (PagerDuty deduplicates
//!   it) while such dead letters keep coming, resolved by pagerhook once no dead letter of that
//!   source and reason is left (`queue::own_pages::settle`);
//! - a condition's (a routing key's backlog too long to drain, the store out of room):
//!   triggered once when the condition starts and resolved when it clears, by the one
//!   supervised task that judges conditions (`delivery::conditions`). Their "source" is what the
//!   condition is about: [`key_subject`] for a routing key, [`STORE`] for the store.
//!
//! PagerDuty keeps an incident's first title, so the summary is generic and the numbers (how
//! many dead letters or events wait, this webhook's count) go in `custom_details`.

use super::{AlertDraft, Event, EventError, Link, RoutingKey, Severity};
use serde_json::{json, Map, Value};

/// Why pagerhook pages about itself: a closed set, each its own incident per source. New
/// conditions (a silent source) are new variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// A webhook's mapping failed: its payload waits as a `mapping_failed` dead letter.
    MappingFailed,
    /// A webhook would make more events than the source's caps: kept whole, unsent.
    TooManyEvents,
    /// PagerDuty refused a trigger, or it ran out of retries: a dead event.
    DeadTrigger,
    /// No rule matched a payload of a source with `unmatched = "page"`.
    Unmatched,
    /// A routing key's backlog would take longer than `pagerduty.storm_page_after` to drain
    /// at its pace: a condition, on that key.
    StormWaiting,
    /// The store refuses webhooks for lack of room: a condition.
    StoreOutOfRoom,
}

impl Reason {
    /// Every reason, in the order [`Reason::as_str`] sorts them.
    pub const ALL: [Reason; 6] = [
        Reason::DeadTrigger,
        Reason::MappingFailed,
        Reason::StoreOutOfRoom,
        Reason::StormWaiting,
        Reason::TooManyEvents,
        Reason::Unmatched,
    ];

    /// Raised and cleared by a condition that holds or not (`delivery::conditions` judges it),
    /// rather than by dead letters arriving and going.
    pub fn is_condition(self) -> bool {
        match self {
            Reason::StormWaiting | Reason::StoreOutOfRoom => true,
            Reason::MappingFailed | Reason::TooManyEvents | Reason::DeadTrigger | Reason::Unmatched => false,
        }
    }

    /// The name in dedup_keys, `custom_details` and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MappingFailed => "mapping_failed",
            Reason::TooManyEvents => "too_many_events",
            Reason::DeadTrigger => "dead_trigger",
            Reason::Unmatched => "unmatched",
            Reason::StormWaiting => "storm_waiting",
            Reason::StoreOutOfRoom => "store_out_of_room",
        }
    }

    /// The reason [`Reason::as_str`] named.
    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// What the incident says happened, in words.
    fn headline(self) -> &'static str {
        match self {
            Reason::MappingFailed => "webhooks whose mapping failed",
            Reason::TooManyEvents => "webhooks over the events cap",
            Reason::DeadTrigger => "triggers PagerDuty did not take",
            Reason::Unmatched => "webhooks no rule matched",
            Reason::StormWaiting => "a backlog of events waits",
            Reason::StoreOutOfRoom => "the store is out of room",
        }
    }

    /// What the person paged does about it.
    fn remedy(self) -> &'static str {
        match self {
            Reason::MappingFailed => "fix the mapping, then `pagerhook dlq replay` (or the console's Replay)",
            Reason::TooManyEvents => {
                "look at the payload; raise max_events_per_request / max_event_bytes_per_request, then replay"
            }
            Reason::DeadTrigger => "read the attempts (`pagerhook dlq show`), fix the cause, then replay",
            Reason::Unmatched => "add a rule for this payload, then replay (or delete the dead letter)",
            Reason::StormWaiting => {
                "find the flooding source (custom_details.sources); its events go at the key's pace \
                 (delivery.per_key_rate), so silence or fix it; give it a routing key of its own"
            }
            Reason::StoreOutOfRoom => {
                "webhooks are refused (503): free disk or raise storage.max_bytes / lower \
                 storage.min_free_bytes; `pagerhook doctor` and /readyz say which"
            }
        }
    }
}

/// The subject of a store condition's page, in place of a source.
pub const STORE: &str = "store";

/// The subject of a routing key's condition page, in place of a source: its fingerprint,
/// never the key.
pub fn key_subject(key: &RoutingKey) -> String {
    format!("key-{}", key.fingerprint())
}

/// The prefix of every dedup_key pagerhook's own pages use.
pub const DEDUP_PREFIX: &str = "pagerhook/";

/// The incident of `source` for `reason`: `pagerhook/<source>/<reason>`. The store also names
/// the record its own events hang from by it.
pub fn dedup_key(source: &str, reason: Reason) -> String {
    format!("{DEDUP_PREFIX}{source}/{}", reason.as_str())
}

/// Whether an inbound id is the record pagerhook's own events of a source and reason hang
/// from (a webhook's is a UUID).
pub fn is_own_record(inbound_id: &str) -> bool {
    inbound_id.starts_with(DEDUP_PREFIX)
}

/// A page the caller asks for, beyond what the store counts when it queues it.
#[derive(Debug, Clone)]
pub struct Page {
    pub reason: Reason,
    /// Where it goes: the own-pages key (`pagerduty.own_pages_routing_key`, by default
    /// `pagerduty.routing_key`).
    pub routing_key: RoutingKey,
    pub severity: Severity,
    /// What the caller knows of this occurrence (the webhook's count of events, the first
    /// summaries): added to `custom_details`.
    pub details: Map<String, Value>,
    /// The console's dead letters (`server.admin_url`), linked from the incident.
    pub console: Option<String>,
}

impl Page {
    /// A page for `reason` at severity `error`, with no details yet.
    pub fn new(reason: Reason, routing_key: RoutingKey) -> Page {
        Page { reason, routing_key, severity: Severity::Error, details: Map::new(), console: None }
    }

    /// The same page with `key` set to `value` in its details.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Page {
        self.details.insert(key.to_string(), value.into());
        self
    }
}

/// The trigger of `page` for `source`, with `waiting` dead letters of its reason left in the
/// store (this one included).
pub fn trigger(page: &Page, source: &str, waiting: u64) -> Result<Event, EventError> {
    let mut details = Map::new();
    details.insert("source".into(), source.into());
    details.insert("reason".into(), page.reason.as_str().into());
    if !page.reason.is_condition() {
        details.insert("dead_letters_waiting".into(), waiting.into());
    }
    details.insert("what_to_do".into(), page.reason.remedy().into());
    details.extend(page.details.clone());
    let draft = AlertDraft {
        action: "trigger".into(),
        dedup_key: Some(dedup_key(source, page.reason)),
        severity: Some(severity_name(page.severity).into()),
        summary: Some(summary(page.reason, source)),
        source: Some("pagerhook".into()),
        component: Some(source.into()),
        class: Some(page.reason.as_str().into()),
        links: page
            .console
            .iter()
            .map(|href| Link { href: href.clone(), text: Some("pagerhook console: dead letters".into()) })
            .collect(),
        custom_details: Some(Value::Object(details)),
        ..AlertDraft::default()
    };
    Event::alert(page.routing_key.clone(), draft)
}

/// The incident's title: generic (PagerDuty keeps the first), naming what it is about.
fn summary(reason: Reason, source: &str) -> String {
    match reason {
        Reason::StormWaiting => {
            let key = source.strip_prefix("key-").unwrap_or(source);
            format!("pagerhook: {} on routing key {key}", reason.headline())
        }
        Reason::StoreOutOfRoom => format!("pagerhook: {}", reason.headline()),
        Reason::MappingFailed | Reason::TooManyEvents | Reason::DeadTrigger | Reason::Unmatched => {
            format!("pagerhook: {} from source '{source}'", reason.headline())
        }
    }
}

/// The resolve of `source`'s incident for `reason`: no dead letter of it is left, or its
/// condition cleared.
pub fn resolve(routing_key: RoutingKey, source: &str, reason: Reason) -> Result<Event, EventError> {
    let details = if reason.is_condition() {
        json!({ "source": source, "reason": reason.as_str(), "cleared": true })
    } else {
        json!({ "source": source, "reason": reason.as_str(), "dead_letters_waiting": 0 })
    };
    let draft = AlertDraft {
        action: "resolve".into(),
        dedup_key: Some(dedup_key(source, reason)),
        custom_details: Some(details),
        ..AlertDraft::default()
    };
    Event::alert(routing_key, draft)
}

/// PagerDuty's name of a severity.
pub fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "critical",
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Info => "info",
    }
}

/// The worse of two severities (critical is the worst).
pub fn worse(a: Severity, b: Severity) -> Severity {
    let rank = |s| match s {
        Severity::Critical => 3,
        Severity::Error => 2,
        Severity::Warning => 1,
        Severity::Info => 0,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

/// A trigger's severity as its body says, if it is a trigger.
pub fn severity_of(e: &Event) -> Option<Severity> {
    e.body().pointer("/payload/severity").and_then(Value::as_str).and_then(|s| Severity::parse(s).ok())
}

#[cfg(test)]
mod tests;
