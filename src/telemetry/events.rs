//! One struct per outcome pagerhook reports: its `emit` writes the log line and moves the
//! metric in one place (Vector's `internal_events`). Fields are plain values (label values
//! from closed sets as `&'static str`), so this module imports nothing of the crate and every
//! layer can report through it. Log messages and field names are the ones operators and the
//! tests already read.

use super::Metrics;
use std::fmt::Display;
use std::time::Duration;

/// Something that happened, reported once: its log line and its metric together.
pub trait InternalEvent {
    fn emit(self, metrics: &Metrics);
}

/// What became of a webhook, as `pagerhook_webhook_outcomes_total` counts it: one per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// Its events were queued.
    Accepted,
    /// The source said there was nothing to map (GitHub's `ping`, an SNS confirmation).
    Ignored,
    /// No rule of the source's mapping matched.
    Unmatched,
    /// Seen before (same delivery id).
    Duplicate,
    /// Answered 4xx (or 503): not verified, not readable, or not stored.
    Refused,
    /// A rule failed; kept as a dead letter.
    MappingFailed,
    /// Over `max_events_per_request`; kept as a dead letter.
    TooManyEvents,
    /// Some items or rules failed to map (kept as a dead letter), the others' events queued.
    Partial,
}

impl WebhookOutcome {
    /// Every outcome, exported at 0 per configured source.
    pub const ALL: [WebhookOutcome; 8] = [
        WebhookOutcome::Accepted,
        WebhookOutcome::Ignored,
        WebhookOutcome::Unmatched,
        WebhookOutcome::Duplicate,
        WebhookOutcome::Refused,
        WebhookOutcome::MappingFailed,
        WebhookOutcome::TooManyEvents,
        WebhookOutcome::Partial,
    ];

    /// The label value (and the log line's `outcome`).
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookOutcome::Accepted => "accepted",
            WebhookOutcome::Ignored => "ignored",
            WebhookOutcome::Unmatched => "unmatched",
            WebhookOutcome::Duplicate => "duplicate",
            WebhookOutcome::Refused => "refused",
            WebhookOutcome::MappingFailed => "mapping_failed",
            WebhookOutcome::TooManyEvents => "too_many_events",
            WebhookOutcome::Partial => "partial",
        }
    }
}

/// A webhook answered with a refusal (4xx, or 503 when the fault is ours).
pub struct WebhookRefused<'a> {
    /// The source as the request named it (logged as asked).
    pub source: &'a str,
    /// Whether `source` is configured: an unknown name is never a label value.
    pub configured: bool,
    pub status: u16,
    /// A verifier's refusal class (`SourceError::reason_class`), counted by reason too.
    pub reason: Option<&'static str>,
    pub error: &'a dyn Display,
    pub elapsed_ms: f64,
    /// Our fault (the store), logged as an error.
    pub ours: bool,
}

impl InternalEvent for WebhookRefused<'_> {
    fn emit(self, metrics: &Metrics) {
        let WebhookRefused { source, configured, status, reason, error, elapsed_ms, ours } = self;
        let label = if configured { source } else { "unknown" };
        metrics.request(label, status);
        metrics.webhook_outcome(label, WebhookOutcome::Refused.as_str());
        if let (Some(reason), true) = (reason, configured) {
            metrics.rejected(source, reason);
        }
        if ours {
            tracing::error!(source = %source, status, reason, error = %error, elapsed_ms, "webhook refused");
        } else {
            tracing::warn!(source = %source, status, reason, error = %error, elapsed_ms, "webhook refused");
        }
    }
}

/// A webhook answered 2xx: accepted, duplicate, ignored, or kept as a dead letter.
pub struct WebhookAccepted<'a> {
    pub source: &'a str,
    pub status: u16,
    pub outcome: WebhookOutcome,
    pub inbound_id: &'a str,
    pub elapsed_ms: f64,
}

impl InternalEvent for WebhookAccepted<'_> {
    fn emit(self, metrics: &Metrics) {
        let WebhookAccepted { source, status, outcome, inbound_id, elapsed_ms } = self;
        metrics.request(source, status);
        let outcome = outcome.as_str();
        metrics.webhook_outcome(source, outcome);
        tracing::info!(source = %source, status, outcome, inbound_id = %inbound_id, elapsed_ms, "webhook");
    }
}

/// A webhook's events committed to the queue (on arrival or on replay).
pub struct WebhookMapped<'a> {
    pub source: &'a str,
    pub inbound_id: &'a str,
    /// Each event's kind and action.
    pub events: &'a [(&'static str, Option<&'static str>)],
}

impl InternalEvent for WebhookMapped<'_> {
    fn emit(self, metrics: &Metrics) {
        let WebhookMapped { source, inbound_id, events } = self;
        for (kind, action) in events {
            metrics.event(source, kind, *action);
        }
        tracing::debug!(source = %source, inbound_id = %inbound_id, events = events.len(), "events queued");
    }
}

/// Events of a webhook stored `stale`: older than the `sequence` their lane applied, so never
/// sent (each is logged by the queue with both values).
pub struct EventsStale<'a> {
    pub source: &'a str,
    pub inbound_id: &'a str,
    pub events: usize,
}

impl InternalEvent for EventsStale<'_> {
    fn emit(self, metrics: &Metrics) {
        let EventsStale { source, inbound_id, events } = self;
        metrics.stale(source, events);
        tracing::info!(source = %source, inbound_id = %inbound_id, events, "stale events not sent");
    }
}

/// pagerhook queued the resolve of incidents `source` opened and stopped re-triggering
/// (`resolve_when_silent`).
pub struct SilenceResolved<'a> {
    pub source: &'a str,
    pub silent: std::time::Duration,
    pub dedup_keys: &'a [String],
}

impl InternalEvent for SilenceResolved<'_> {
    fn emit(self, metrics: &Metrics) {
        let SilenceResolved { source, silent, dedup_keys } = self;
        metrics.silence_resolved(source, dedup_keys.len());
        for dedup_key in dedup_keys {
            tracing::info!(
                source,
                dedup_key = %dedup_key,
                silent_for = %humantime::format_duration(silent),
                "resolving an incident its source stopped re-triggering (resolve_when_silent)"
            );
        }
    }
}

/// Why a verified payload was kept as a dead letter instead of mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// A rule failed.
    MappingFailed,
    /// More events than `max_events_per_request`.
    TooManyEvents,
    /// No rule matched, and the source keeps such payloads (`unmatched = "keep"`).
    Unmatched,
}

/// A verified payload committed as a dead letter, for `pagerhook dlq replay`.
pub struct WebhookDeadLettered<'a> {
    pub source: &'a str,
    pub inbound_id: &'a str,
    pub why: Kept,
    pub error: &'a str,
}

impl InternalEvent for WebhookDeadLettered<'_> {
    fn emit(self, metrics: &Metrics) {
        let WebhookDeadLettered { source, inbound_id, why, error } = self;
        match why {
            Kept::MappingFailed => {
                metrics.mapping_failed(source);
                tracing::warn!(source, inbound_id, error, "mapping failed; payload kept for replay");
            }
            Kept::TooManyEvents => {
                metrics.too_many_events(source);
                tracing::warn!(
                    source,
                    inbound_id,
                    error,
                    "too many events; payload kept for replay once the cap is raised"
                );
            }
            Kept::Unmatched => {
                tracing::warn!(
                    source,
                    inbound_id,
                    error,
                    "no rule matched; payload kept for replay once a rule is added"
                )
            }
        }
    }
}

/// Dead letters of one source dropped by the dead-letter policy: past
/// `storage.dead_letter_retention` (`age`) or over the source's `storage.dead_letter_max_bytes`
/// (`size`, oldest first).
pub struct DeadLettersDropped<'a> {
    pub source: &'a str,
    /// `age` or `size`.
    pub reason: &'static str,
    pub letters: u64,
    /// Their stored bodies' bytes.
    pub bytes: u64,
}

impl InternalEvent for DeadLettersDropped<'_> {
    fn emit(self, metrics: &Metrics) {
        let DeadLettersDropped { source, reason, letters, bytes } = self;
        metrics.dead_letters_dropped(source, reason, letters);
        tracing::warn!(
            source = %source, reason, letters, bytes,
            "dead letters dropped (storage.dead_letter_retention, storage.dead_letter_max_bytes)"
        );
    }
}

/// A delivery attempt PagerDuty answered (or failed to): delivered, dry_run, retried, or
/// dead_lettered (a new dead letter).
pub struct AttemptMade<'a> {
    pub event_id: i64,
    pub inbound_id: &'a str,
    /// Counting from 1.
    pub attempt: u32,
    pub kind: &'static str,
    pub action: Option<&'static str>,
    pub dedup_key: Option<&'a str>,
    pub status: Option<u16>,
    pub detail: Option<&'a str>,
    pub outcome: &'static str,
    /// PagerDuty's response time.
    pub upstream: Duration,
    /// The attempt's whole time, recording excluded.
    pub elapsed: Duration,
}

impl InternalEvent for AttemptMade<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics.attempt(self.outcome, Some(self.upstream));
        tracing::info!(
            event_id = self.event_id,
            inbound_id = %self.inbound_id,
            attempt = self.attempt,
            kind = self.kind,
            action = self.action,
            dedup_key = self.dedup_key,
            status = self.status,
            detail = self.detail,
            outcome = self.outcome,
            elapsed_ms = self.elapsed.as_millis() as u64,
            "delivery attempt"
        );
    }
}

/// PagerDuty (or whatever sits at `events_url`) answered with a status its Events API does not
/// document: a proxy, a redirect, a wrong URL. Retried, but said loudly and counted.
pub struct UpstreamUnexpected<'a> {
    pub event_id: i64,
    pub status: u16,
    pub detail: &'a str,
}

impl InternalEvent for UpstreamUnexpected<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics.unexpected(self.status);
        tracing::error!(
            event_id = self.event_id,
            status = self.status,
            detail = self.detail,
            "PagerDuty's events_url answered with a status the Events API does not document \
             (a proxy or a wrong pagerduty.events_url?); retrying with backoff"
        );
    }
}

/// A trigger PagerDuty refused (400) sent again as its minimal form ([`crate`]'s
/// `Event::minimal`).
pub struct TriggerMinimised<'a> {
    pub event_id: i64,
    pub error: &'a str,
}

impl InternalEvent for TriggerMinimised<'_> {
    fn emit(self, _metrics: &Metrics) {
        tracing::warn!(
            event_id = self.event_id,
            error = self.error,
            "PagerDuty refused the trigger (400); sending its minimal form once"
        );
    }
}

/// Events a claim superseded: a trigger resolved before it was sent, its resolve (and any
/// acknowledge between); none is sent.
pub struct EventsSuperseded<'a> {
    pub events: &'a [i64],
}

impl InternalEvent for EventsSuperseded<'_> {
    fn emit(self, metrics: &Metrics) {
        if self.events.is_empty() {
            return;
        }
        metrics.superseded(self.events.len());
        tracing::info!(events = ?self.events, "superseded: resolved before its trigger was sent; none of them is sent");
    }
}

/// An attempt given up before PagerDuty answered, its lease lost; not recorded here.
pub struct AttemptAbandoned<'a> {
    pub event_id: i64,
    pub inbound_id: &'a str,
    pub why: &'static str,
}

impl InternalEvent for AttemptAbandoned<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics.attempt("abandoned", None);
        tracing::warn!(event_id = self.event_id, inbound_id = %self.inbound_id, why = self.why, "delivery attempt abandoned");
    }
}

/// Pending triggers replaced by a newer one of their lane (`by`) before they were sent.
pub struct TriggersCollapsed<'a> {
    pub by: i64,
    pub collapsed: &'a [i64],
}

impl InternalEvent for TriggersCollapsed<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics.collapsed(self.collapsed.len());
        for old in self.collapsed {
            tracing::info!(event_id = old, by = self.by, "trigger collapsed into a newer one for the same dedup_key");
        }
    }
}

/// A config file reloaded and swapped in.
pub struct ConfigReloaded<'a> {
    pub config: &'a dyn Display,
    pub sources: usize,
}

impl InternalEvent for ConfigReloaded<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics.reload(true);
        tracing::info!(
            config = %self.config,
            sources = self.sources,
            "config reloaded: sources, mappings and routing keys; [server], [storage], [delivery] and the [pagerduty] events_url and timeout apply at the next start"
        );
    }
}

/// A reload refused: the running config stays.
pub struct ConfigReloadFailed<'a> {
    pub config: &'a dyn Display,
    pub error: &'a dyn Display,
}

impl InternalEvent for ConfigReloadFailed<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics.reload(false);
        tracing::error!(config = %self.config, error = %self.error, "config reload failed; the running config stays");
    }
}

/// A background task died: it panicked, or returned while nothing asked it to stop.
pub struct TaskFailed<'a> {
    /// The task's name (a closed set: `supervise::Task`).
    pub task: &'static str,
    /// `panicked: <message>`, `returned`, or `failed: <error>`.
    pub how: &'a str,
    /// Deaths in a row without a healthy run between them.
    pub in_a_row: u32,
    /// When it starts again; `None`: it cannot be restarted.
    pub restart_in: Option<Duration>,
    /// Whether readiness is down because of it.
    pub not_ready: bool,
}

impl InternalEvent for TaskFailed<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics.task_failed(self.task);
        let restart_in_ms = self.restart_in.map(|d| d.as_millis() as u64);
        tracing::error!(
            task = self.task,
            how = %self.how,
            in_a_row = self.in_a_row,
            restart_in_ms,
            not_ready = self.not_ready,
            "background task died"
        );
    }
}

/// A restarted task that took readiness down has run long enough to count as healthy:
/// readiness is back.
pub struct TaskRecovered {
    pub task: &'static str,
}

impl InternalEvent for TaskRecovered {
    fn emit(self, _: &Metrics) {
        tracing::info!(task = self.task, "background task running again; ready");
    }
}

/// A claimed event's attempt panicked: its event stays leased and is tried again when the
/// lease ends (counted with the tasks, as [`AttemptPanicked::TASK`]).
pub struct AttemptPanicked<'a> {
    pub how: &'a str,
}

impl AttemptPanicked<'_> {
    /// Its `task` label.
    pub const TASK: &'static str = "delivery_attempt";
}

impl InternalEvent for AttemptPanicked<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics.task_failed(AttemptPanicked::TASK);
        tracing::error!(
            task = AttemptPanicked::TASK,
            how = %self.how,
            "a delivery attempt panicked; its event is tried again once its lease ends"
        );
    }
}

/// The store started refusing webhooks for lack of room: they are answered 503 and `/readyz`
/// is not ready, while delivery goes on in the room kept for it.
pub struct StoreOutOfRoom<'a> {
    /// Which line: `below_floor`, `over_cap` or `disk_full`.
    pub kind: &'static str,
    pub why: &'a dyn Display,
}

impl InternalEvent for StoreOutOfRoom<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics.out_of_room(true);
        tracing::error!(
            kind = self.kind,
            why = %self.why,
            "the store is out of room: webhooks are answered 503 and /readyz is not ready until delivery makes room"
        );
    }
}

/// The store has room again: webhooks are taken.
pub struct StoreRoomBack {
    pub used_bytes: Option<u64>,
    pub free_bytes: Option<u64>,
    /// How long it refused.
    pub after: Duration,
}

impl InternalEvent for StoreRoomBack {
    fn emit(self, metrics: &Metrics) {
        metrics.out_of_room(false);
        let refused_ms = self.after.as_millis() as u64;
        tracing::info!(
            used_bytes = self.used_bytes,
            free_bytes = self.free_bytes,
            refused_ms,
            "the store has room again: webhooks are taken"
        );
    }
}

/// Room made under pressure: finished events and payloads deleted oldest first, whatever
/// `storage.retention` says, and payload segments no row needed.
pub struct RoomMade {
    pub rows: u64,
    pub segments: u64,
    pub segment_bytes: u64,
}

impl InternalEvent for RoomMade {
    fn emit(self, _: &Metrics) {
        let RoomMade { rows, segments, segment_bytes } = self;
        tracing::warn!(
            rows,
            segments,
            segment_bytes,
            "made room under pressure: deleted finished events and payloads, oldest first, before storage.retention"
        );
    }
}

/// pagerhook paged about a condition (a routing key's storm, the store out of room), or
/// resolved that page because the condition cleared.
pub struct ConditionPaged<'a> {
    /// What it is about: `key-<fingerprint>` or `store`.
    pub subject: &'a str,
    pub reason: &'static str,
    pub raised: bool,
}

impl InternalEvent for ConditionPaged<'_> {
    fn emit(self, _metrics: &Metrics) {
        if self.raised {
            tracing::warn!(subject = self.subject, reason = self.reason, "paging about a condition of pagerhook's own");
        } else {
            tracing::info!(subject = self.subject, reason = self.reason, "a condition cleared: its page is resolved");
        }
    }
}
