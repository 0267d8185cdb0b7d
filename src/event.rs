//! PagerDuty Events API v2 events, built only through constructors that enforce its rules.
//!
//! Nothing here does I/O. An [`Event`] that exists is one PagerDuty will accept: severity in
//! its set, summary and dedup_key within their limits, https images, the whole body within
//! 512 000 bytes. Where a limit can be met without losing the page (truncating a summary, shrinking
//! `custom_details`), the constructor does so and leaves a note saying what it changed.

pub mod own;
mod sequence;

pub use sequence::{Sequence, SequenceError, Verdict};

use crate::secret::Secret;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::OnceLock;

/// Longest summary PagerDuty keeps, in characters.
pub const SUMMARY_MAX_CHARS: usize = 1024;
/// Longest dedup_key PagerDuty accepts, in characters; pagerhook counts it in bytes
/// ([`DedupKey::new`]).
pub const DEDUP_KEY_MAX_CHARS: usize = 255;
/// Largest event pagerhook sends, routing key included: PagerDuty documents "512 KB", and
/// 512 000 bytes is within that whichever way KB is read.
pub const EVENT_MAX_BYTES: usize = 512_000;
/// Appended where pagerhook shortened a value.
pub const TRUNCATION_MARKER: &str = " …[truncated by pagerhook]";

/// Why a rendered event cannot be sent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("severity {0:?} is not one of critical, error, warning, info")]
    Severity(String),
    #[error("action {0:?} is not one of trigger, acknowledge, resolve")]
    Action(String),
    #[error("{0} is empty but PagerDuty requires it")]
    Required(&'static str),
    #[error("routing key must be the 32-character integration key PagerDuty issues (got {0} characters)")]
    RoutingKey(usize),
    #[error("event is {0} bytes even without custom_details; PagerDuty accepts at most {EVENT_MAX_BYTES}")]
    TooLarge(usize),
    /// A body read back from the queue that no event of this build could have written.
    #[error("stored body is not a JSON object with string event_action/dedup_key: {0}")]
    Stored(String),
}

/// A PagerDuty integration (routing) key. Secret: `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RoutingKey(Secret);

impl RoutingKey {
    /// Accepts the 32-character alphanumeric form PagerDuty issues (integration or ruleset key).
    pub fn parse(s: Secret) -> Result<RoutingKey, EventError> {
        let v = s.expose();
        if v.len() != 32 || !v.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(EventError::RoutingKey(v.chars().count()));
        }
        Ok(RoutingKey(s))
    }

    /// Global and service ruleset keys start with `R`; PagerDuty takes no change events on them.
    pub fn is_ruleset(&self) -> bool {
        self.0.expose().starts_with('R')
    }

    /// The key itself, only for the request body sent to PagerDuty.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// A short, non-reversible label safe for logs and admin output.
    pub fn fingerprint(&self) -> String {
        hex::encode(&Sha256::digest(self.0.expose().as_bytes())[..4])
    }

    /// The key's full SHA-256 (hex): how shared pacing state names it, never storing the key.
    pub fn sha256(&self) -> String {
        key_sha256(self.0.expose())
    }
}

/// A routing key's SHA-256 (hex), from the key as stored: [`RoutingKey::sha256`].
pub fn key_sha256(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Alert severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    Error,
    Warning,
    Info,
}

impl Severity {
    /// Parses PagerDuty's four values (case-insensitive, surrounding space ignored).
    pub fn parse(s: &str) -> Result<Severity, EventError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "critical" => Ok(Severity::Critical),
            "error" => Ok(Severity::Error),
            "warning" => Ok(Severity::Warning),
            "info" => Ok(Severity::Info),
            _ => Err(EventError::Severity(s.to_string())),
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }

    /// How urgent it is: higher is more (info 1 … critical 4).
    pub fn urgency(self) -> u8 {
        match self {
            Severity::Critical => 4,
            Severity::Error => 3,
            Severity::Warning => 2,
            Severity::Info => 1,
        }
    }
}

/// What an alert event does to its incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Trigger,
    Acknowledge,
    Resolve,
}

impl Action {
    /// Parses `trigger`, `acknowledge` or `resolve` (case-insensitive).
    pub fn parse(s: &str) -> Result<Action, EventError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "trigger" => Ok(Action::Trigger),
            "acknowledge" => Ok(Action::Acknowledge),
            "resolve" => Ok(Action::Resolve),
            _ => Err(EventError::Action(s.to_string())),
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Trigger => "trigger",
            Action::Acknowledge => "acknowledge",
            Action::Resolve => "resolve",
        }
    }
}

/// Shortens `s` to at most `max` characters, ending with [`TRUNCATION_MARKER`]; never splits a character.
pub fn truncate_chars(s: &str, max: usize) -> (String, bool) {
    truncate_with(s, max, TRUNCATION_MARKER)
}

/// Shortens `s` to at most `max` characters including `marker`; never splits a character.
pub fn truncate_with(s: &str, max: usize, marker: &str) -> (String, bool) {
    if s.chars().count() <= max {
        return (s.to_string(), false);
    }
    let keep = max.saturating_sub(marker.chars().count());
    let mut out: String = s.chars().take(keep).collect();
    out.push_str(marker);
    (out, true)
}

/// A dedup_key within PagerDuty's limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DedupKey(String);

impl DedupKey {
    /// Builds a key; one over 255 bytes keeps its start and ends with a SHA-256 of the whole,
    /// so two long keys stay distinct and the same long key always maps the same way.
    ///
    /// Bytes, not characters: PagerDuty's "255 characters" does not say how it counts, and a
    /// key of multi-byte text (a label value in Japanese, an emoji) within 255 characters can
    /// be refused. 255 UTF-8 bytes are at most 255 characters and 255 UTF-16 units, so no
    /// reading of the limit refuses the key.
    pub fn new(s: &str) -> Result<DedupKey, EventError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(EventError::Required("dedup_key"));
        }
        if s.len() <= DEDUP_KEY_MAX_CHARS {
            return Ok(DedupKey(s.to_string()));
        }
        let digest = hex::encode(Sha256::digest(s.as_bytes()));
        let room = DEDUP_KEY_MAX_CHARS - digest.len() - 1;
        // The longest start of whole characters that fits the room left beside the digest.
        let cut = s.char_indices().map(|(i, c)| i + c.len_utf8()).take_while(|&end| end <= room).last().unwrap_or(0);
        Ok(DedupKey(format!("{}~{digest}", &s[..cut])))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DedupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A link attached to an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    pub href: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// An image attached to an alert event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Image {
    pub src: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub href: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alt: Option<String>,
}

/// Rendered, unchecked fields of an alert event: what a mapping rule produced.
#[derive(Debug, Clone, Default)]
pub struct AlertDraft {
    pub action: String,
    pub dedup_key: Option<String>,
    pub severity: Option<String>,
    pub summary: Option<String>,
    pub source: Option<String>,
    pub component: Option<String>,
    pub group: Option<String>,
    pub class: Option<String>,
    pub timestamp: Option<String>,
    pub client: Option<String>,
    pub client_url: Option<String>,
    pub links: Vec<Link>,
    pub images: Vec<Image>,
    pub custom_details: Option<Value>,
}

/// Rendered, unchecked fields of a change event.
#[derive(Debug, Clone, Default)]
pub struct ChangeDraft {
    pub summary: Option<String>,
    pub source: Option<String>,
    pub timestamp: Option<String>,
    pub links: Vec<Link>,
    pub custom_details: Option<Value>,
}

/// Which endpoint an event goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// `/v2/enqueue`
    Alert,
    /// `/v2/change/enqueue`
    Change,
}

impl EventKind {
    /// Path below `events_url`.
    pub fn path(self) -> &'static str {
        match self {
            EventKind::Alert => "/v2/enqueue",
            EventKind::Change => "/v2/change/enqueue",
        }
    }

    /// Name stored in the queue.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Alert => "alert",
            EventKind::Change => "change",
        }
    }
}

/// A valid event, ready to queue. Its body is the exact JSON PagerDuty will receive.
#[derive(Debug, Clone)]
pub struct Event {
    kind: EventKind,
    routing_key: RoutingKey,
    action: Option<Action>,
    dedup_key: Option<DedupKey>,
    /// The request body without `routing_key` (added only when sending), serialized once:
    /// what the queue stores and what, with the key, goes on the wire. Parsing a claimed
    /// event's body into a `Value` only to serialize it again was 16 % of delivery's CPU.
    text: String,
    /// The same body as a `Value`, built only when something reads it (a freshly built event
    /// has it already; one read back from the queue parses it on first use, which delivery
    /// never does).
    body: OnceLock<Value>,
    notes: Vec<String>,
    /// The mapping rule that made it, when known: the incident ledger names the rule that
    /// opened an incident. Not part of the body: PagerDuty never sees it.
    rule: Option<String>,
    /// Its rule's `sequence`, when it set one: an event older than one its lane applied is
    /// stale (`queue::lanes`). Not part of the body either.
    sequence: Option<Sequence>,
    /// Its rule's `escalate`: a trigger more severe than the incident PagerDuty holds opens
    /// another, linked to it (`queue::lanes::escalate`). Not part of the body either.
    escalate: bool,
}

/// What delivery needs of a stored body besides its text; the rest is skipped, not built.
#[derive(serde::Deserialize)]
struct Head {
    event_action: Option<String>,
    dedup_key: Option<String>,
}

/// `"routing_key":"` and `"` around the key, and the comma before it.
const WIRE_KEY_OVERHEAD: usize = r#","routing_key":"""#.len();

impl Event {
    /// Checks an alert draft against the Events API rules.
    pub fn alert(routing_key: RoutingKey, d: AlertDraft) -> Result<Event, EventError> {
        let action = Action::parse(&d.action)?;
        let dedup_key = DedupKey::new(d.dedup_key.as_deref().unwrap_or(""))?;
        let mut notes = Vec::new();
        let mut body = json!({ "event_action": action.as_str(), "dedup_key": dedup_key.as_str() });
        if action == Action::Trigger {
            let summary = summary(d.summary.as_deref(), &mut notes)?;
            let source = non_empty(d.source.as_deref()).ok_or(EventError::Required("source"))?;
            let severity = Severity::parse(d.severity.as_deref().unwrap_or("error"))?;
            let mut payload = json!({ "summary": summary, "source": source, "severity": severity });
            let p = payload.as_object_mut().expect("object literal");
            if let Some(ts) = d.timestamp.as_deref().and_then(|t| timestamp(t, &mut notes)) {
                p.insert("timestamp".into(), ts.into());
            }
            for (k, v) in [("component", &d.component), ("group", &d.group), ("class", &d.class)] {
                if let Some(v) = non_empty(v.as_deref()) {
                    p.insert(k.into(), v.into());
                }
            }
            if let Some(cd) = d.custom_details {
                p.insert("custom_details".into(), cd);
            }
            let b = body.as_object_mut().expect("object literal");
            b.insert("payload".into(), payload);
            if let Some(c) = non_empty(d.client.as_deref()) {
                b.insert("client".into(), c.into());
            }
            if let Some(c) = non_empty(d.client_url.as_deref()) {
                b.insert("client_url".into(), c.into());
            }
            let links = links(d.links, &mut notes);
            if !links.is_empty() {
                b.insert("links".into(), serde_json::to_value(links).expect("links serialize"));
            }
            let images: Vec<Image> = d
                .images
                .into_iter()
                .filter(|i| {
                    let ok = i.src.starts_with("https://");
                    if !ok {
                        notes.push(format!("image {:?} dropped: PagerDuty shows only https images", i.src));
                    }
                    ok
                })
                .collect();
            if !images.is_empty() {
                b.insert("images".into(), serde_json::to_value(images).expect("images serialize"));
            }
        }
        Event::checked(EventKind::Alert, routing_key, Some(action), Some(dedup_key), body, notes)
    }

    /// Checks a change draft against the Events API rules.
    pub fn change(routing_key: RoutingKey, d: ChangeDraft) -> Result<Event, EventError> {
        let mut notes = Vec::new();
        let summary = summary(d.summary.as_deref(), &mut notes)?;
        let mut payload = json!({ "summary": summary });
        let p = payload.as_object_mut().expect("object literal");
        if let Some(s) = non_empty(d.source.as_deref()) {
            p.insert("source".into(), s.into());
        }
        if let Some(ts) = d.timestamp.as_deref().and_then(|t| timestamp(t, &mut notes)) {
            p.insert("timestamp".into(), ts.into());
        }
        if let Some(cd) = d.custom_details {
            p.insert("custom_details".into(), cd);
        }
        // Moved in, not through `json!`, which would serialize a deep copy of the payload.
        let mut body = serde_json::Map::new();
        body.insert("payload".into(), payload);
        let links = links(d.links, &mut notes);
        if !links.is_empty() {
            body.insert("links".into(), serde_json::to_value(links).expect("links serialize"));
        }
        let body = Value::Object(body);
        Event::checked(EventKind::Change, routing_key, None, None, body, notes)
    }

    /// The event with its body serialized, once its size is within PagerDuty's limit.
    fn checked(
        kind: EventKind,
        routing_key: RoutingKey,
        action: Option<Action>,
        dedup_key: Option<DedupKey>,
        mut body: Value,
        mut notes: Vec<String>,
    ) -> Result<Event, EventError> {
        let text = fit_size(&mut body, routing_key.expose().len(), &mut notes)?;
        Ok(Event {
            kind,
            routing_key,
            action,
            dedup_key,
            text,
            body: OnceLock::from(body),
            notes,
            rule: None,
            sequence: None,
            escalate: false,
        })
    }

    /// Rebuilds an event read back from the queue (its rules were checked when it was built)
    /// from the body's text, which it keeps as it is: only its action and dedup_key are read.
    pub fn from_stored(kind: EventKind, routing_key: RoutingKey, text: String) -> Result<Event, EventError> {
        let head: Head = serde_json::from_str(&text).map_err(|e| EventError::Stored(e.to_string()))?;
        let action = head.event_action.as_deref().and_then(|a| Action::parse(a).ok());
        let dedup_key = head.dedup_key.map(DedupKey);
        Ok(Event {
            kind,
            routing_key,
            action,
            dedup_key,
            text,
            body: OnceLock::new(),
            notes: Vec::new(),
            rule: None,
            sequence: None,
            escalate: false,
        })
    }

    /// Alert or change.
    pub fn kind(&self) -> EventKind {
        self.kind
    }

    /// The action of an alert event.
    pub fn action(&self) -> Option<Action> {
        self.action
    }

    /// The dedup_key of an alert event.
    pub fn dedup_key(&self) -> Option<&DedupKey> {
        self.dedup_key.as_ref()
    }

    /// Where this event goes.
    pub fn routing_key(&self) -> &RoutingKey {
        &self.routing_key
    }

    /// The same event, marked as made by mapping rule `rule`.
    pub fn with_rule(self, rule: &str) -> Event {
        Event { rule: Some(rule.to_string()), ..self }
    }

    /// The mapping rule that made it, if it was marked ([`Event::with_rule`]).
    pub fn rule(&self) -> Option<&str> {
        self.rule.as_deref()
    }

    /// The same event with its rule's rendered `sequence`. One that is neither a number nor
    /// a time leaves the event unchecked, with a note saying so: a wrong template must not
    /// hold back a page.
    pub fn with_sequence(mut self, rendered: &str) -> Event {
        match Sequence::parse(rendered) {
            Ok(sequence) => self.sequence = sequence,
            Err(e) => self.notes.push(e.to_string()),
        }
        self
    }

    /// The same event, its rule's `sequence` not rendered for `why` (a field it reads is
    /// missing): sent unchecked, with a note saying so.
    pub fn unsequenced(mut self, why: &str) -> Event {
        self.notes.push(format!("sequence not checked for staleness: {why}"));
        self
    }

    /// Its place in its lane's order, if its rule set `sequence` ([`Event::with_sequence`]).
    pub fn sequence(&self) -> Option<Sequence> {
        self.sequence
    }

    /// The same event, from a rule that sets `escalate = true`.
    pub fn with_escalate(self) -> Event {
        Event { escalate: true, ..self }
    }

    /// Whether its rule set `escalate = true` ([`Event::with_escalate`]).
    pub fn escalates(&self) -> bool {
        self.escalate
    }

    /// A trigger's severity (`error`, PagerDuty's default, when its body names none or one
    /// this build does not know); `None` for any other event.
    pub fn severity(&self) -> Option<Severity> {
        if self.action != Some(Action::Trigger) {
            return None;
        }
        let named = self.body()["payload"]["severity"].as_str().and_then(|s| Severity::parse(s).ok());
        Some(named.unwrap_or(Severity::Error))
    }

    /// The same acknowledge or resolve for another dedup_key of its routing key: escalation's
    /// fan-out closes the incidents escalated from the one it names.
    pub fn refiled(&self, key: DedupKey) -> Result<Event, EventError> {
        let mut body = self.body().clone();
        body["dedup_key"] = key.as_str().into();
        self.rebuilt(key, body, self.notes.clone())
    }

    /// The same trigger filed under `key`, an escalation of incident `from`, which PagerDuty
    /// holds at `held`: its summary says so, and `custom_details.escalated_from` names that
    /// incident (a PagerDuty link needs a URL; this is the link responders can follow). Built
    /// through the same size check as any event. `None` for an event that is not a trigger.
    pub fn escalated(&self, key: DedupKey, from: &DedupKey, held: Severity) -> Option<Result<Event, EventError>> {
        let mut body = self.body().clone();
        body["dedup_key"] = key.as_str().into();
        let payload = body.get_mut("payload").and_then(Value::as_object_mut).filter(|_| self.severity().is_some())?;
        let mut notes = self.notes.clone();
        let title = payload.get("summary").and_then(Value::as_str).unwrap_or_default();
        let title = format!("[escalated from {}] {title}", held.as_str());
        match summary(Some(&title), &mut notes) {
            Ok(title) => payload.insert("summary".into(), title.into()),
            Err(e) => return Some(Err(e)),
        };
        let link = json!({ "dedup_key": from.as_str(), "severity": held });
        match payload.get_mut("custom_details") {
            Some(Value::Object(details)) => {
                details.insert("escalated_from".into(), link);
            }
            Some(other) => *other = json!({ "details": other.take(), "escalated_from": link }),
            None => {
                payload.insert("custom_details".into(), json!({ "escalated_from": link }));
            }
        }
        Some(self.rebuilt(key, body, notes))
    }

    /// This event with `body` (its own, changed) under `key`, checked again, keeping what
    /// travels beside the body.
    fn rebuilt(&self, key: DedupKey, body: Value, notes: Vec<String>) -> Result<Event, EventError> {
        let e = Event::checked(self.kind, self.routing_key.clone(), self.action, Some(key), body, notes)?;
        Ok(Event { rule: self.rule.clone(), sequence: self.sequence, escalate: self.escalate, ..e })
    }

    /// The same event sent to another routing key (sticky routing: an acknowledge or resolve
    /// must go where its trigger went).
    pub fn rerouted(self, routing_key: RoutingKey) -> Event {
        Event { routing_key, ..self }
    }

    /// The smallest valid form of a trigger (its summary, source, severity and dedup_key, with
    /// `error`, PagerDuty's refusal of the full event, in `custom_details`): sent once when
    /// PagerDuty answers 400 to the trigger, so that someone is paged all the same. `None` for
    /// any other event, or a stored body without those fields.
    pub fn minimal(&self, error: &str) -> Option<Event> {
        if self.action != Some(Action::Trigger) {
            return None;
        }
        let payload = self.body().get("payload")?;
        let field = |name: &str| payload.get(name).and_then(Value::as_str).map(str::to_string);
        let draft = AlertDraft {
            action: Action::Trigger.as_str().into(),
            dedup_key: self.dedup_key.as_ref().map(|k| k.as_str().to_string()),
            summary: field("summary"),
            source: field("source"),
            severity: field("severity"),
            custom_details: Some(json!({
                "pagerduty_error": error,
                "note": "PagerDuty refused the full event (400); pagerhook sent this minimal one instead",
            })),
            ..AlertDraft::default()
        };
        Event::alert(self.routing_key.clone(), draft).ok()
    }

    /// The body without the routing key: safe to store in plain view, print and snapshot.
    pub fn body(&self) -> &Value {
        // `text` is JSON: this build serialized it, or `from_stored` read it. Reading it skips
        // what it does not need without every check a `Value` makes (a lone surrogate in a
        // row edited by hand): such a body reads as null here, never a panic; delivery sends
        // the text as it is, and PagerDuty judges it.
        self.body.get_or_init(|| serde_json::from_str(&self.text).unwrap_or(Value::Null))
    }

    /// The summary PagerDuty shows: `payload.summary` of an alert, `summary` of a change.
    pub fn summary(&self) -> Option<&str> {
        let b = self.body();
        b["payload"]["summary"].as_str().or_else(|| b["summary"].as_str())
    }

    /// [`Event::body`] as stored: JSON text, without the routing key.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// What the constructor changed to make the event valid.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The exact request body for PagerDuty: the body's text with the routing key added as its
    /// last field. Every top-level field an event has (`client` … `payload`) sorts before
    /// `routing_key`, so these are the bytes serde_json gives for the body `Value` with the key
    /// inserted (the tests keep that as the reference).
    pub fn wire_json(&self) -> Vec<u8> {
        wire(&self.text, self.routing_key.expose())
    }

    /// Its rank among the due events of its routing key, lowest first (stored with it; the
    /// claim picks by it): acknowledges and resolves (0), then triggers by severity (critical
    /// 1, error 2, warning 3, info 4), then change events (5). An acknowledge or resolve closes
    /// what responders are already chasing, so it never waits behind a storm's new triggers.
    pub fn priority(&self) -> i32 {
        match (self.kind, self.action) {
            (_, Some(Action::Acknowledge | Action::Resolve)) => 0,
            (_, Some(Action::Trigger)) => {
                let severity = self.body()["payload"]["severity"].as_str().and_then(|s| Severity::parse(s).ok());
                match severity {
                    Some(Severity::Critical) => 1,
                    // PagerDuty's own default when a trigger names none.
                    Some(Severity::Error) | None => 2,
                    Some(Severity::Warning) => 3,
                    Some(Severity::Info) => 4,
                }
            }
            (EventKind::Alert | EventKind::Change, None) => 5,
        }
    }

    /// Whether the event has an ordering lane ([`Event::order_key`] is `Some`), without
    /// hashing one.
    pub fn has_lane(&self) -> bool {
        self.dedup_key.is_some()
    }

    /// Identifies the ordering lane: events sharing it are delivered in acceptance order.
    /// `None` for change events, which PagerDuty does not deduplicate.
    pub fn order_key(&self) -> Option<String> {
        Some(lane(&self.routing_key, self.dedup_key.as_ref()?))
    }
}

/// The ordering lane of `dedup_key` on `routing_key` ([`Event::order_key`]).
pub fn lane(routing_key: &RoutingKey, dedup_key: &DedupKey) -> String {
    let mut h = Sha256::new();
    h.update(routing_key.expose().as_bytes());
    h.update([0]);
    h.update(dedup_key.as_str().as_bytes());
    hex::encode(h.finalize())
}

/// The dedup_key of the incident a trigger of `severity` escalates the incident `dedup_key`
/// to: one per severity, the same every time (a long key ends in a hash, [`DedupKey::new`]).
pub fn escalation_key(dedup_key: &DedupKey, severity: Severity) -> DedupKey {
    DedupKey::new(&format!("{dedup_key}~escalated-{}", severity.as_str()))
        .expect("a dedup_key with a suffix is not empty")
}

/// `text` (a JSON object) with `"routing_key": key` as its last field. The key is the
/// 32-character alphanumeric form [`RoutingKey::parse`] admits: nothing in it needs escaping.
fn wire(text: &str, key: &str) -> Vec<u8> {
    let inner = text.trim_end().strip_suffix('}').expect("an event's body is a JSON object");
    let empty = inner.trim_end().ends_with('{');
    let mut out = Vec::with_capacity(text.len() + WIRE_KEY_OVERHEAD + key.len());
    out.extend_from_slice(inner.as_bytes());
    out.extend_from_slice(if empty { br#""routing_key":""# } else { br#","routing_key":""# });
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\"}");
    out
}

/// Serializes `body`, first shrinking its `custom_details` when the request (the body and a
/// routing key of `key_len` characters) would exceed PagerDuty's size limit.
fn fit_size(body: &mut Value, key_len: usize, notes: &mut Vec<String>) -> Result<String, EventError> {
    // The body's text and the size of the request it makes.
    let serialize = |body: &Value| {
        let text = serde_json::to_string(body).expect("a Value always serializes");
        let size = text.len() + WIRE_KEY_OVERHEAD + key_len;
        (text, size)
    };
    let (text, size) = serialize(body);
    if size <= EVENT_MAX_BYTES {
        return Ok(text);
    }
    let Some(cd) = body.get_mut("payload").and_then(|p| p.get_mut("custom_details")) else {
        return Err(EventError::TooLarge(size));
    };
    let details = cd.to_string();
    // Leave room for the rest of the event and the JSON escaping of the preview.
    let budget = EVENT_MAX_BYTES.saturating_sub(size - details.len()).saturating_sub(1024) / 2;
    let (preview, _) = truncate_chars(&details, budget / 4);
    *cd = json!({
        "pagerhook_truncated": format!("custom_details was {} bytes; the event exceeded PagerDuty's {} byte limit", details.len(), EVENT_MAX_BYTES),
        "preview": preview,
    });
    notes.push(format!("custom_details shrunk from {} bytes to fit the {EVENT_MAX_BYTES} byte limit", details.len()));
    let (text, size) = serialize(body);
    if size > EVENT_MAX_BYTES {
        return Err(EventError::TooLarge(size));
    }
    Ok(text)
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

fn summary(s: Option<&str>, notes: &mut Vec<String>) -> Result<String, EventError> {
    let s = non_empty(s).ok_or(EventError::Required("summary"))?;
    let (out, cut) = truncate_chars(s, SUMMARY_MAX_CHARS);
    if cut {
        notes.push(format!("summary truncated to {SUMMARY_MAX_CHARS} characters"));
    }
    Ok(out)
}

fn links(links: Vec<Link>, notes: &mut Vec<String>) -> Vec<Link> {
    links
        .into_iter()
        .filter(|l| {
            let ok = !l.href.trim().is_empty();
            if !ok {
                notes.push("link with an empty href dropped".into());
            }
            ok
        })
        .collect()
}

/// Normalises a timestamp to RFC 3339, also accepting CloudWatch's `+0000` offsets; an
/// unreadable one is dropped (PagerDuty then uses the time it received the event).
fn timestamp(t: &str, notes: &mut Vec<String>) -> Option<String> {
    use time::format_description::well_known::{Iso8601, Rfc3339};
    let t = t.trim();
    if t.is_empty() {
        return None;
    }
    let parsed =
        time::OffsetDateTime::parse(t, &Rfc3339).or_else(|_| time::OffsetDateTime::parse(t, &Iso8601::DEFAULT));
    match parsed {
        Ok(dt) => dt.format(&Rfc3339).ok(),
        Err(_) => {
            notes.push(format!("timestamp {t:?} is not ISO 8601 and was left out"));
            None
        }
    }
}

#[cfg(test)]
mod tests;
