//! The accept path, free of HTTP: find the source, verify, map, commit; and its second
//! chance, replay of dead letters.
//!
//! `http` calls [`Pipeline::ingest`] and turns its result into a status code; `render` and
//! [`Pipeline::replay`] reuse the same source and mapping code.

use crate::event::own::{Page, Reason};
use crate::event::{Event, Severity};
use crate::mapping::{Applied, ApplyError, ItemFailure, ItemRef, Overview, Rendered};
use crate::queue::{
    now_millis, Accepted, DeadId, FailedItem, InboundStatus, Millis, NewInbound, Queue, QueueError, ResolveQueued,
};
use crate::registry::{Hook, Sources};
use crate::reload::Live;
use crate::source::{Disposition, Headers, Incoming, Offline, SourceError, Verified};
use crate::telemetry::events::{EventsStale, Kept, WebhookDeadLettered, WebhookMapped};
use crate::telemetry::{InternalEvent, Metrics};
use serde::Serialize;
use std::sync::Arc;
use tokio::sync::Notify;

/// What happened to an accepted request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Committed with this many events.
    Accepted { id: String, events: usize },
    /// Seen before (same delivery id); nothing new stored.
    Duplicate { id: String },
    /// Verified and recorded, but deliberately not mapped (e.g. `ping`), or no rule matched.
    Ignored { id: String, reason: IgnoreReason },
    /// A rule failed; the payload is stored for replay once the mapping is fixed.
    MappingFailed { id: String, error: String },
    /// More events than `max_events_per_request`: the payload is stored as a dead letter, for
    /// replay once the cap is raised. Senders that drop a 4xx (Alertmanager, SNS) lose nothing.
    TooManyEvents { id: String, error: String },
    /// No rule matched and the source keeps such payloads (`unmatched = "keep"`): stored as
    /// a dead letter, for replay once a rule is added.
    Unmatched { id: String },
    /// Some items (or rules) failed to map: the others' `events` are queued, the `failed` ones
    /// kept as a dead letter that replays them alone.
    Partial { id: String, events: usize, failed: usize, error: String },
}

/// Why a verified payload made no events. It is recorded as `ignored` (not a dead letter):
/// the same answer whether it arrived, was replayed or was rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IgnoreReason {
    /// The source says there is nothing to map (GitHub's `ping`, an SNS confirmation).
    BySource(&'static str),
    /// No rule of the source's mapping matched.
    NoRuleMatched,
}

/// What a payload no rule matched is answered, logged and replayed with.
const NO_RULE_MATCHED: &str = "no rule matched";

impl std::fmt::Display for IgnoreReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IgnoreReason::BySource(reason) => f.write_str(reason),
            IgnoreReason::NoRuleMatched => f.write_str(NO_RULE_MATCHED),
        }
    }
}

/// As its text: senders and the console read `"reason": "no rule matched"`.
impl Serialize for IgnoreReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Why a request was refused; `http` picks the status code.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("no source named '{0}' (configured sources answer at /hooks/<name>)")]
    UnknownSource(String),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("storage could not commit: {0}")]
    Storage(#[from] QueueError),
}

/// Everything the accept path needs. Its fields are private: `http` gets what it may use
/// through the methods below, so the layers it reaches are the ones it imports (the tidy test
/// refuses a public field whose type belongs to a module an importer may not import).
#[derive(Clone)]
pub struct Pipeline {
    /// Swapped whole on reload; each request uses the version it started with.
    sources: Arc<Live<Sources>>,
    metrics: Arc<Metrics>,
    queue: Arc<dyn Queue>,
    /// Notified after each commit so the delivery worker wakes at once.
    wake: Arc<Notify>,
    /// Where verification and mapping run.
    cpu: Cpu,
}

/// Runs CPU work (signatures, JSON parsing, templates) on tokio's blocking pool, a bounded
/// number of jobs at once. The event loops that read requests and write answers never run
/// it, so a costly request delays none of the others on its worker; the OS shares the cores
/// among the jobs, so it slows them in proportion rather than blocking them.
#[derive(Clone, Debug)]
pub struct Cpu {
    permits: Arc<tokio::sync::Semaphore>,
}

impl Cpu {
    /// Jobs allowed at once per HTTP worker: more than cores, so a few costly requests cannot
    /// hold every slot, few enough to bound the threads and the memory of payloads in work.
    pub const JOBS_PER_WORKER: usize = 8;

    /// A pool for `workers` HTTP workers.
    pub fn new(workers: usize) -> Cpu {
        Cpu { permits: Arc::new(tokio::sync::Semaphore::new(workers.max(1) * Cpu::JOBS_PER_WORKER)) }
    }

    /// Bodies up to this size are verified and mapped on the request's own event loop. Their
    /// cost is bounded by the body (verification is linear in body × secrets, mapping in body
    /// and `max_events_per_request`): a few milliseconds at worst, against the two thread
    /// hand-offs of the pool, which on a 2-core machine took about half the accept path's
    /// throughput (issue 16). Larger bodies, where a flood's cost lies, still go to the pool.
    pub const INLINE_MAX_BYTES: usize = 32 * 1024;

    /// Runs `job` for a body of `bytes` inline when it is small ([`Cpu::INLINE_MAX_BYTES`]),
    /// else on the blocking pool.
    pub async fn run_for<T: Send + 'static>(&self, bytes: usize, job: impl FnOnce() -> T + Send + 'static) -> T {
        if bytes <= Cpu::INLINE_MAX_BYTES {
            job()
        } else {
            self.run(job).await
        }
    }

    /// Runs `job` on the blocking pool once a slot is free. The slot is held by the job, not
    /// by this future: a client that hangs up does not free it while the job still runs.
    pub async fn run<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> T {
        let permit = self.permits.clone().acquire_owned().await.expect("the semaphore is never closed");
        // The job logs in the request's span (its webhook), on whichever thread it runs.
        let span = tracing::Span::current();
        let handle = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            span.in_scope(job)
        });
        match handle.await {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

impl Pipeline {
    /// The accept path over `sources` (the live version), committing to `queue` and waking
    /// the worker through `wake`, its CPU work on `cpu`, reporting to `metrics`.
    pub fn new(
        sources: Arc<Live<Sources>>,
        metrics: Arc<Metrics>,
        queue: Arc<dyn Queue>,
        wake: Arc<Notify>,
        cpu: Cpu,
    ) -> Pipeline {
        Pipeline { sources, metrics, queue, wake, cpu }
    }

    /// Where the outcomes of requests are reported, and `/metrics` read.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Whether `/hooks/{source}` names a configured source now.
    pub fn is_configured(&self, source: &str) -> bool {
        self.sources.load().get(source).is_some()
    }

    /// The configured sources' names, sorted.
    pub fn source_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.sources.load().names().map(str::to_string).collect();
        names.sort();
        names
    }

    /// [`preview`] with the current sources, on the CPU pool: a large payload takes its time,
    /// and the caller (the admin listener's one thread) keeps answering `/healthz` meanwhile.
    pub async fn preview(
        &self,
        source: &str,
        headers: Vec<(String, String)>,
        query: &str,
        body: bytes::Bytes,
        mapping: Option<String>,
    ) -> Result<Preview, PreviewError> {
        let (sources, source, query) = (self.sources.load(), source.to_string(), query.to_string());
        self.cpu.run(move || preview(&sources, &source, headers, &query, body, mapping.as_deref())).await
    }

    /// An operator's resolve of each of `dedup_keys` (`Incidents::resolve_incidents`), with
    /// the worker woken to send them.
    pub async fn resolve_incidents(&self, dedup_keys: Vec<String>) -> Result<Vec<ResolveQueued>, QueueError> {
        let done = self.queue.resolve_incidents(dedup_keys, now_millis()).await?;
        if done.iter().any(|d| matches!(d, ResolveQueued::Queued { .. })) {
            self.wake.notify_one();
        }
        Ok(done)
    }

    /// Verifies, maps and durably records one webhook.
    pub async fn ingest(&self, source: &str, req: Incoming) -> Result<IngestOutcome, IngestError> {
        let sources = self.sources.load();
        let src = sources.get(source).ok_or_else(|| IngestError::UnknownSource(source.to_string()))?.clone();
        let query = req.query.clone();
        let size = req.body.len();
        // One trip to the CPU pool: verified and mapped there, unless the source must fetch
        // something first (an SNS certificate), which happens here and the mapping after it.
        let first = {
            let (src, query) = (src.clone(), query.clone());
            self.cpu
                .run_for(size, move || match src.source().verify_offline(req, src.body_paths()) {
                    Offline::Checked(Ok(verified)) => FirstPass::Prepared(Box::new(prepare(&src, verified, &query))),
                    Offline::Checked(Err(e)) => FirstPass::Refused(e),
                    Offline::NeedsNetwork(req) => FirstPass::NeedsNetwork(req),
                })
                .await
        };
        let (mut inbound, mut decision) = match first {
            FirstPass::Prepared(prepared) => Ok(*prepared),
            FirstPass::Refused(e) => Err(e),
            FirstPass::NeedsNetwork(req) => match src.source().verify(req).await {
                Ok(verified) => Ok(self.cpu.run_for(size, move || prepare(&src, verified, &query)).await),
                Err(e) => Err(e),
            },
        }?;
        let (status, events) = decision.take_record();
        inbound.status = status;
        Ok(match self.queue.accept(inbound, events).await? {
            Accepted::Duplicate { id } => IngestOutcome::Duplicate { id },
            Accepted::Committed { id, events, stale } => {
                if events > 0 {
                    self.wake.notify_one();
                }
                if stale > 0 {
                    EventsStale { source, inbound_id: &id, events: stale }.emit(&self.metrics);
                }
                self.report(source, &id, &decision);
                match decision {
                    Decision::Map { .. } => IngestOutcome::Accepted { id, events },
                    Decision::Ignore(reason) => IngestOutcome::Ignored { id, reason },
                    Decision::Failed(error) => IngestOutcome::MappingFailed { id, error },
                    Decision::TooMany(error, ..) => IngestOutcome::TooManyEvents { id, error },
                    Decision::Unmatched => IngestOutcome::Unmatched { id },
                    Decision::Partial { tally, failed, .. } => IngestOutcome::Partial {
                        id,
                        events: tally.len(),
                        failed: failed.len(),
                        error: failed_text(&failed),
                    },
                }
            }
        })
    }
}

/// What one trip to the CPU pool made of a request.
enum FirstPass {
    /// Boxed: the record and decision are ten times the other variants, and one allocation
    /// per request is nothing beside its parse.
    Prepared(Box<(NewInbound, Decision)>),
    Refused(SourceError),
    NeedsNetwork(Incoming),
}

/// The inbound record of a verified request and what its mappings made of it (the record is
/// taken before mapping, which consumes the request; its status follows the decision).
fn prepare(src: &Hook, verified: Verified, query: &str) -> (NewInbound, Decision) {
    let received_at = now_millis();
    let mut inbound = record(&verified, query, InboundStatus::Mapped, received_at);
    inbound.may_close = src.may_close().to_vec();
    inbound.resolve_delay = src.resolve_delay().as_millis().min(i64::MAX as u128) as Millis;
    let mut decision = decide(src, verified, received_at, None);
    if let Decision::TooMany(error, overview, closing) = &mut decision {
        *overview = overview.take().or_else(|| overflow_overview(src, &inbound).map(Box::new));
        if let Some(o) = overview {
            keep_closing_within_bytes(src, error, o);
            *closing = tally(&o.closing);
        }
    }
    inbound.page = own_page(src, &inbound, &decision).map(Box::new);
    (inbound, decision)
}

/// An overflowing webhook's acknowledges and resolves are still sent (the cap is on triggers:
/// incidents opened before the overflow must close), unless together they are over the
/// source's `max_event_bytes_per_request` too; then they wait in the dead letter with the rest.
fn keep_closing_within_bytes(src: &Hook, error: &mut String, o: &mut Overview) {
    let total: usize = o.closing.iter().map(|r| r.event.text().len()).sum();
    if total > src.max_event_bytes_per_request() {
        tracing::warn!(
            source = src.name(),
            closing = o.closing.len(),
            bytes = total,
            "the acknowledges and resolves of an oversized webhook are over max_event_bytes_per_request too; kept for replay"
        );
        o.closing.clear();
    } else if !o.closing.is_empty() {
        error.push_str(&format!("; its {} acknowledges and resolves were queued all the same", o.closing.len()));
    }
}

/// pagerhook's own page about the dead letter `decision` makes of `inbound`, if it makes one
/// that pages and the source's own pages are on; queued with it (`Intake::accept`).
fn own_page(src: &Hook, inbound: &NewInbound, decision: &Decision) -> Option<Page> {
    let key = src.own_pages()?.clone();
    let page = match decision {
        Decision::Failed(error) => Page::new(Reason::MappingFailed, key).with("error", error.as_str()),
        Decision::Partial { tally, failed, .. } => Page::new(Reason::MappingFailed, key)
            .with("error", failed_text(failed))
            .with("failed_items", failed.len())
            .with("events_accepted", tally.len()),
        Decision::TooMany(error, overview, _) => {
            let page = Page::new(Reason::TooManyEvents, key).with("error", error.as_str());
            match overview.as_deref() {
                Some(o) => Page { severity: o.worst.unwrap_or(Severity::Error), ..page }
                    .with("events", o.events)
                    .with("closing_events_sent", o.closing.len())
                    .with("first_summaries", o.summaries.clone()),
                None => page,
            }
        }
        Decision::Unmatched if src.pages_unmatched() => {
            Page::new(Reason::Unmatched, key).with("error", NO_RULE_MATCHED)
        }
        Decision::Unmatched | Decision::Map { .. } | Decision::Ignore(_) => return None,
    };
    let console = src.admin_url().map(|url| format!("{url}/#/dead"));
    Some(Page { console, ..page.with("inbound_id", inbound.id.as_str()) })
}

/// What a webhook over `max_events_per_request` would have sent (its count was refused before
/// rendering): its stored request rendered again, counted, its acknowledges and resolves kept.
/// `None` if it cannot be.
fn overflow_overview(src: &Hook, inbound: &NewInbound) -> Option<Overview> {
    let headers = Headers::from_stored(&inbound.headers);
    let verified = src.source().trusted(headers, &inbound.query, inbound.body.clone()).ok()?;
    let accepted = std::time::UNIX_EPOCH + std::time::Duration::from_millis(inbound.received_at.max(0) as u64);
    match src.mapping().overview(verified, accepted) {
        Ok(o) => Some(o),
        Err(e) => {
            tracing::warn!(source = src.name(), error = %e, "cannot count the events of an oversized webhook");
            None
        }
    }
}

/// What the mappings made of a verified request.
enum Decision {
    /// The events to queue (taken by `take_record`) and the kind and action of each, which
    /// are counted once they are committed.
    Map {
        events: Vec<Event>,
        tally: Vec<(&'static str, Option<&'static str>)>,
    },
    Ignore(IgnoreReason),
    Failed(String),
    /// Over a cap; what it would have sent when that is known already (the byte cap), and
    /// the kind and action of each acknowledge and resolve it still queues (`prepare`).
    TooMany(String, Option<Box<Overview>>, Tally),
    /// No rule matched, and the source keeps such payloads.
    Unmatched,
    /// Some items or rules failed: the others' events are queued (as for `Map`), the failed
    /// ones kept for replay.
    Partial {
        events: Box<[Event]>,
        tally: Tally,
        failed: Box<[ItemFailure]>,
    },
}

/// The kind and action of each event a webhook queues, counted once they are committed.
type Tally = Box<[(&'static str, Option<&'static str>)]>;

fn tally(rendered: &[Rendered]) -> Tally {
    rendered.iter().map(|r| (r.event.kind().as_str(), r.event.action().map(|a| a.as_str()))).collect()
}

/// What a payload some of whose items failed is answered, logged and kept with: each failure
/// (source, rule, item index, error), the first few.
fn failed_text(failed: &[ItemFailure]) -> String {
    const SHOWN: usize = 5;
    let mut text: Vec<String> = failed
        .iter()
        .take(SHOWN)
        .map(|f| match f.at.item {
            // The error names the rule (and its file and field).
            Some(i) => format!("item {i}: {}", f.error),
            None => f.error.to_string(),
        })
        .collect();
    if failed.len() > SHOWN {
        text.push(format!("and {} more", failed.len() - SHOWN));
    }
    format!("{} failed, kept for replay: {}", plural(failed.len(), "item"), text.join("; "))
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

impl Decision {
    fn map(rendered: Vec<Rendered>) -> Decision {
        let tally = tally(&rendered).into_vec();
        Decision::Map { events: rendered.into_iter().map(|r| r.event.with_rule(&r.rule)).collect(), tally }
    }

    /// How the inbound record is stored, and the events to queue with it, moved out: copying
    /// each event's body for the queue was a measurable share of the accept path.
    fn take_record(&mut self) -> (InboundStatus, Vec<Event>) {
        match self {
            Decision::Map { events, .. } => (InboundStatus::Mapped, std::mem::take(events)),
            Decision::Ignore(_) => (InboundStatus::Ignored, Vec::new()),
            Decision::Failed(e) => (InboundStatus::MappingFailed(e.clone()), Vec::new()),
            Decision::TooMany(e, o, _) => {
                let closing = o.as_mut().map(|o| std::mem::take(&mut o.closing)).unwrap_or_default();
                (InboundStatus::TooManyEvents(e.clone()), closing.into_iter().map(|r| r.event).collect())
            }
            Decision::Unmatched => (InboundStatus::Unmatched, Vec::new()),
            Decision::Partial { events, failed, .. } => {
                let items = failed.iter().map(|f| FailedItem { rule: f.at.rule.clone(), item: f.at.item }).collect();
                (InboundStatus::ItemsFailed { error: failed_text(failed), items }, std::mem::take(events).into_vec())
            }
        }
    }
}

/// Runs the source's mappings on a payload accepted at `received_at` (the time events without
/// a timestamp of their own carry); a failing rule, or too many events, keeps the payload for
/// replay, and so does one no rule matched when its source says `unmatched = "keep"`. Each
/// `for_each` item and rule stands alone: one that fails is kept, the others' events go.
/// With `only` (the replay of such a payload), just those items are rendered.
fn decide(src: &Hook, verified: Verified, received_at: Millis, only: Option<&[ItemRef]>) -> Decision {
    let accepted = std::time::UNIX_EPOCH + std::time::Duration::from_millis(received_at.max(0) as u64);
    match verified.disposition() {
        Disposition::Ignore(reason) => Decision::Ignore(IgnoreReason::BySource(reason)),
        Disposition::Map => {
            match src.mapping().apply_isolated(verified, accepted, src.max_events_per_request(), only) {
                Ok(Applied { events, failed }) if failed.is_empty() => match events {
                    // A replay of some items that now map to nothing is done: kept as `unmatched`,
                    // its next replay would map the whole payload and send the others twice.
                    e if e.is_empty() && src.keeps_unmatched() && only.is_none() => Decision::Unmatched,
                    e if e.is_empty() => Decision::Ignore(IgnoreReason::NoRuleMatched),
                    e => within_bytes(src, e),
                },
                // Nothing mapped: the payload is kept whole, as before items stood alone. (Logged
                // with its count once committed, `Pipeline::report`.)
                Ok(Applied { events, failed }) if events.is_empty() && only.is_none() => {
                    Decision::Failed(failed.into_iter().next().map(|f| f.error.to_string()).unwrap_or_default())
                }
                Ok(Applied { events, failed }) => match within_bytes(src, events) {
                    Decision::Map { events, tally } => {
                        Decision::Partial { events: events.into(), tally: tally.into(), failed: failed.into() }
                    }
                    over => over,
                },
                Err(ApplyError::Rule(e)) => Decision::Failed(e.to_string()),
                Err(e @ ApplyError::TooManyEvents { .. }) => Decision::TooMany(e.to_string(), None, Tally::default()),
            }
        }
    }
}

/// The events to queue, or a dead letter when together they are over the source's
/// `max_event_bytes_per_request`: each may be up to PagerDuty's 512 KB, so the count alone
/// would let one request queue hundreds of megabytes.
fn within_bytes(src: &Hook, rendered: Vec<Rendered>) -> Decision {
    let (source, max) = (src.name(), src.max_event_bytes_per_request());
    let total: usize = rendered.iter().map(|r| r.event.text().len()).sum();
    if total > max {
        let e = format!(
            "the events of this request total {total} bytes, more than max_event_bytes_per_request = {max} (raise it, then replay)"
        );
        // Logged, like too many events, once committed (`Pipeline::report`).
        let mut overview = Overview::default();
        rendered.into_iter().for_each(|r| overview.add_closing(r));
        return Decision::TooMany(e, Some(Box::new(overview)), Tally::default());
    }
    log_notes(source, &rendered);
    Decision::map(rendered)
}

/// What replaying one dead letter did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Replayed {
    /// The dead event is queued again as this new event.
    Requeued { event_id: i64 },
    /// The payload mapped this time, into this many events.
    Remapped { events: usize },
    /// The payload still maps to nothing (no rule matches now); recorded as ignored.
    Ignored { reason: IgnoreReason },
    /// The mapping still fails, or still makes too many events; the payload stays a dead letter.
    StillFailing { error: String },
    /// Not replayed (a dead trigger whose incident was resolved after it died): `force` sends it.
    Skipped { reason: String },
    /// Some of the items mapped this time, into this many events; the others stay a dead letter.
    Partly { events: usize, error: String },
}

/// The log line of one replay.
fn log_replayed(id: &DeadId, replayed: &Replayed) {
    match replayed {
        Replayed::Requeued { event_id } => {
            tracing::info!(dead_letter = %id, outcome = "requeued", event_id, "dead letter replayed")
        }
        Replayed::Remapped { events } => {
            tracing::info!(dead_letter = %id, outcome = "remapped", events, "dead letter replayed")
        }
        Replayed::Ignored { reason } => {
            tracing::info!(dead_letter = %id, outcome = "ignored", reason = %reason, "dead letter replayed")
        }
        Replayed::StillFailing { error } => {
            tracing::info!(dead_letter = %id, outcome = "still_failing", error, "dead letter replayed")
        }
        Replayed::Partly { events, error } => {
            tracing::info!(dead_letter = %id, outcome = "partly", events, error, "dead letter replayed")
        }
        Replayed::Skipped { reason } => {
            tracing::info!(dead_letter = %id, outcome = "skipped", reason, "dead letter not replayed")
        }
    }
}

/// The items a payload kept as `items_failed` replays: those alone.
fn failed_items(status: &InboundStatus) -> Option<Vec<ItemRef>> {
    match status {
        InboundStatus::ItemsFailed { items, .. } => {
            Some(items.iter().map(|i| ItemRef { rule: i.rule.clone(), item: i.item }).collect())
        }
        _ => None,
    }
}

/// Why a dead letter could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("no dead letter {0} (see `pagerhook dlq list`)")]
    NotFound(String),
    #[error("dead letter {id} came from source '{source_name}', which is no longer configured")]
    UnknownSource { id: String, source_name: String },
    #[error("dead letter {id}: the stored payload no longer parses: {error}")]
    Unreadable { id: String, error: SourceError },
    #[error("storage: {0}")]
    Storage(#[from] QueueError),
}

impl Pipeline {
    /// Reports what was committed for inbound record `id`: its events, or its dead letter.
    fn report(&self, source: &str, inbound_id: &str, decision: &Decision) {
        let kept = |why, error| WebhookDeadLettered { source, inbound_id, why, error }.emit(&self.metrics);
        match decision {
            Decision::Map { tally, .. } => WebhookMapped { source, inbound_id, events: tally }.emit(&self.metrics),
            Decision::Failed(error) => kept(Kept::MappingFailed, error),
            Decision::TooMany(error, _, closing) => {
                // Its acknowledges and resolves were queued all the same: counted as any.
                if !closing.is_empty() {
                    WebhookMapped { source, inbound_id, events: closing }.emit(&self.metrics);
                }
                kept(Kept::TooManyEvents, error)
            }
            Decision::Unmatched => kept(Kept::Unmatched, NO_RULE_MATCHED),
            Decision::Partial { tally, failed, .. } => {
                if !tally.is_empty() {
                    WebhookMapped { source, inbound_id, events: tally }.emit(&self.metrics);
                }
                kept(Kept::MappingFailed, &failed_text(failed));
            }
            Decision::Ignore(_) => {}
        }
    }

    /// Replays one dead letter: a dead event is queued again as it was; a payload whose
    /// mapping failed goes through the *current* mappings, so fixing a mapping recovers it. A
    /// dead trigger whose incident was resolved after it died is skipped unless `force`: it
    /// would open an incident nothing closes.
    pub async fn replay(&self, id: &DeadId, force: bool) -> Result<Replayed, ReplayError> {
        let not_found = || ReplayError::NotFound(id.to_string());
        let replayed = match id {
            DeadId::Event(n) => match if force { None } else { self.queue.resolved_since(*n).await? } {
                Some(at) => Replayed::Skipped { reason: resolved_since(at) },
                None => {
                    let event_id = self.queue.requeue_dead(*n, now_millis()).await?.ok_or_else(not_found)?;
                    Replayed::Requeued { event_id }
                }
            },
            DeadId::Inbound(inbound_id) => {
                let stored = self.queue.inbound(inbound_id.clone()).await?.ok_or_else(not_found)?;
                if !stored.status.is_dead_letter() {
                    return Err(not_found());
                }
                let sources = self.sources.load();
                let src = sources.get(&stored.source).cloned().ok_or_else(|| ReplayError::UnknownSource {
                    id: id.to_string(),
                    source_name: stored.source.clone(),
                })?;
                let (headers, query, body) =
                    (Headers::from_stored(&stored.headers), stored.query.clone(), stored.body.clone());
                // Parsed and mapped as an accept is: a large one off the caller's event loop (the
                // admin listener's, whose /healthz must keep answering).
                let (received_at, size, status) = (stored.received_at, stored.body.len(), stored.status.clone());
                let mut decision = self
                    .cpu
                    .run_for(size, move || {
                        let verified = src.source().trusted(headers, &query, body)?;
                        // The payload was accepted when it first arrived, not now; of one whose
                        // items failed on their own, only those are mapped again.
                        let only = failed_items(&status);
                        Ok(decide(&src, verified, received_at, only.as_deref()))
                    })
                    .await
                    .map_err(|error| ReplayError::Unreadable { id: id.to_string(), error })?;
                let (status, events) = decision.take_record();
                self.queue.remap(inbound_id.clone(), status, events, now_millis()).await?.ok_or_else(not_found)?;
                self.report(&stored.source, inbound_id, &decision);
                match decision {
                    Decision::Map { tally, .. } => Replayed::Remapped { events: tally.len() },
                    Decision::Ignore(reason) => Replayed::Ignored { reason },
                    Decision::Failed(error) | Decision::TooMany(error, ..) => Replayed::StillFailing { error },
                    Decision::Unmatched => Replayed::StillFailing { error: NO_RULE_MATCHED.into() },
                    Decision::Partial { tally, failed, .. } if tally.is_empty() => {
                        Replayed::StillFailing { error: failed_text(&failed) }
                    }
                    Decision::Partial { tally, failed, .. } => {
                        Replayed::Partly { events: tally.len(), error: failed_text(&failed) }
                    }
                }
            }
        };
        log_replayed(id, &replayed);
        self.wake.notify_one();
        Ok(replayed)
    }

    /// Replays every dead letter (of one source), oldest first; one failure does not stop
    /// the rest.
    pub async fn replay_all(
        &self,
        source: Option<&str>,
        force: bool,
    ) -> Result<Vec<(String, Result<Replayed, ReplayError>)>, QueueError> {
        let mut letters = self.queue.dead_letters(source.map(str::to_string), usize::MAX >> 1).await?;
        letters.reverse();
        let mut out = Vec::with_capacity(letters.len());
        for l in letters {
            let result = match DeadId::parse(&l.id) {
                Some(id) => self.replay(&id, force).await,
                None => Err(ReplayError::NotFound(l.id.clone())),
            };
            out.push((l.id, result));
        }
        Ok(out)
    }
}

/// Why a dead trigger whose incident was resolved at `at` is not replayed.
fn resolved_since(at: Millis) -> String {
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_millis(at.max(0) as u64);
    format!(
        "its incident was resolved after it died (at {}): replaying this trigger would open an incident \
         nothing closes; replay with force to send it anyway",
        humantime::format_rfc3339_seconds(when)
    )
}

/// What `render` shows: the events a payload would produce. It verifies nothing, stores
/// nothing and sends nothing; `pagerhook render` and the console's playground share it.
#[derive(Debug, Clone, Serialize)]
pub struct Preview {
    /// Why nothing would be mapped (a `ping`, no rule matched), if so.
    pub ignored: Option<IgnoreReason>,
    pub events: Vec<PreviewEvent>,
}

/// One event of a [`Preview`]; the routing key only as its fingerprint.
#[derive(Debug, Clone, Serialize)]
pub struct PreviewEvent {
    pub rule: String,
    pub endpoint: &'static str,
    pub routing_key: String,
    pub event: serde_json::Value,
    /// Adjustments made to fit PagerDuty's limits (truncations, dropped images).
    pub notes: Vec<String>,
}

/// Why a payload could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("no source named '{0}'")]
    UnknownSource(String),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Mapping(#[from] ApplyError),
    /// A mapping pasted into the playground does not compile: every problem, one a line.
    #[error("the pasted mapping does not compile:\n{}", .0.join("\n"))]
    PastedMapping(Vec<String>),
}

/// Runs `body` with `headers` and `query` through source `source`'s current mappings as
/// trusted bytes (a JSON content type is assumed unless given), or through `mapping`, the
/// text of a mapping file, compiled for that source.
pub fn preview(
    sources: &Sources,
    source: &str,
    mut headers: Vec<(String, String)>,
    query: &str,
    body: bytes::Bytes,
    mapping: Option<&str>,
) -> Result<Preview, PreviewError> {
    let src = sources.get(source).ok_or_else(|| PreviewError::UnknownSource(source.to_string()))?;
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
        headers.push(("content-type".into(), "application/json".into()));
    }
    let verified = src.source().trusted(Headers::from_pairs(headers), query, body)?;
    let rendered = match verified.disposition() {
        Disposition::Ignore(reason) => {
            return Ok(Preview { ignored: Some(IgnoreReason::BySource(reason)), events: Vec::new() })
        }
        Disposition::Map => {
            let pasted = mapping
                .map(|text| src.mapping().pasted(text))
                .transpose()
                .map_err(|e| PreviewError::PastedMapping(e.iter().map(ToString::to_string).collect()))?;
            let mapping = pasted.as_ref().unwrap_or(src.mapping());
            mapping.apply(verified, std::time::SystemTime::now(), src.max_events_per_request())?
        }
    };
    let events = rendered
        .iter()
        .map(|r| PreviewEvent {
            rule: r.rule.clone(),
            endpoint: r.event.kind().path(),
            routing_key: format!("sha256:{}…", r.event.routing_key().fingerprint()),
            event: r.event.body().clone(),
            notes: r.event.notes().to_vec(),
        })
        .collect::<Vec<_>>();
    let ignored = events.is_empty().then_some(IgnoreReason::NoRuleMatched);
    Ok(Preview { ignored, events })
}

fn record(v: &Verified, query: &str, status: InboundStatus, received_at: Millis) -> NewInbound {
    NewInbound {
        id: uuid::Uuid::now_v7().to_string(),
        source: v.source().to_string(),
        received_at,
        delivery_id: v.delivery_id().map(str::to_string),
        body_sha256: v.body_sha256().map(str::to_string),
        headers: v.headers().to_stored(),
        query: query.to_string(),
        body: v.raw().clone(),
        status,
        may_close: Vec::new(),
        resolve_delay: 0,
        silent_before: None,
        page: None,
    }
}

fn log_notes(source: &str, rendered: &[Rendered]) {
    for r in rendered {
        for note in r.event.notes() {
            tracing::warn!(source, rule = %r.rule, note = %note, "event adjusted to fit PagerDuty's limits");
        }
    }
}

#[cfg(test)]
mod tests;
