//! An in-process model of what PagerDuty does with the alert events it accepts: which
//! incidents are open, with the title and severity a responder sees, and how many times
//! someone was paged. Pure (no I/O, nothing of the crate): `pagerhook test`'s scenarios feed it
//! the events a sequence of webhooks produces, and the integration tests' fake PagerDuty feeds
//! it every event it accepts, so both read PagerDuty the same way.
//!
//! The rules, from PagerDuty's Events API v2 documentation:
//! - per `(routing_key, dedup_key)` at most one incident is open; it keeps its FIRST trigger's
//!   title and severity (later triggers are deduplicated into it and change neither);
//! - a trigger while no incident is open on the key opens a new one: a new page (so a trigger
//!   after a resolve pages again);
//! - an acknowledge or resolve for a key with no open incident is dropped;
//! - a trigger on an acknowledged incident leaves it acknowledged (nobody is paged again);
//! - a trigger without a dedup_key gets a key of its own: every such trigger pages.
//!
//! It models the documented behaviour only: people acknowledging and resolving in the UI,
//! maintenance windows, event orchestration and Alert Grouping are outside it.

use serde::Serialize;
use serde_json::Value;

/// Whether an open incident still pages its responders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Triggered,
    Acknowledged,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Triggered => "triggered",
            Status::Acknowledged => "acknowledged",
        }
    }
}

/// One open incident, as a responder sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Incident {
    pub routing_key: String,
    pub dedup_key: String,
    /// The first trigger's `payload.summary`.
    pub title: String,
    /// The first trigger's `payload.severity`.
    pub severity: String,
    pub status: Status,
}

/// What one accepted event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// A trigger opened an incident: someone was paged.
    Opened,
    /// A trigger on an open incident: merged into it, title and severity unchanged.
    Deduplicated,
    Acknowledged,
    Resolved,
    /// An acknowledge or resolve with no open incident on its key: PagerDuty drops it.
    Dropped,
    /// Not an alert event (a change event, or a body without `event_action`).
    NotAnAlert,
}

/// The incidents of every routing key, in the order they were opened.
#[derive(Debug, Clone, Default)]
pub struct Incidents {
    open: Vec<Incident>,
    pages: usize,
    /// Numbers the keys PagerDuty makes up for triggers sent without one.
    generated: usize,
}

impl Incidents {
    pub fn new() -> Incidents {
        Incidents::default()
    }

    /// Applies one event PagerDuty accepted on `routing_key`; `body` is the Events API v2
    /// request body (`event_action`, `dedup_key`, `payload`).
    pub fn apply(&mut self, routing_key: &str, body: &Value) -> Effect {
        let Some(action) = body.get("event_action").and_then(Value::as_str) else {
            return Effect::NotAnAlert;
        };
        let key = body.get("dedup_key").and_then(Value::as_str).filter(|k| !k.is_empty());
        let at = key.and_then(|k| self.open.iter().position(|i| i.routing_key == routing_key && i.dedup_key == k));
        match (action, at) {
            ("trigger", Some(_)) => Effect::Deduplicated,
            ("trigger", None) => {
                let dedup_key = key.map(str::to_string).unwrap_or_else(|| {
                    self.generated += 1;
                    format!("generated-{}", self.generated)
                });
                let text = |field: &str| body["payload"][field].as_str().unwrap_or_default().to_string();
                self.open.push(Incident {
                    routing_key: routing_key.to_string(),
                    dedup_key,
                    title: text("summary"),
                    severity: text("severity"),
                    status: Status::Triggered,
                });
                self.pages += 1;
                Effect::Opened
            }
            ("acknowledge", Some(i)) => {
                self.open[i].status = Status::Acknowledged;
                Effect::Acknowledged
            }
            ("resolve", Some(i)) => {
                self.open.remove(i);
                Effect::Resolved
            }
            ("acknowledge" | "resolve", None) => Effect::Dropped,
            _ => Effect::NotAnAlert,
        }
    }

    /// The incidents open now, oldest first.
    pub fn open(&self) -> &[Incident] {
        &self.open
    }

    /// How many incidents were opened: how many times someone was paged.
    pub fn pages(&self) -> usize {
        self.pages
    }
}

#[cfg(test)]
mod tests;
