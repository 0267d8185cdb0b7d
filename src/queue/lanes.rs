//! The lane state machine: what happens to a lane's events, written once for both backends:
//! sticky routing and "only the opener closes" on the way in ([`route`]), escalation on the way
//! in ([`escalate`]), flap damping on the
//! way in ([`fate`]), at the claim the order of a routing key's events and their pace
//! ([`claim`]), supersede and collapse ([`lease_head`]), and what a finished attempt writes
//! ([`Outcome`]). ARCHITECTURE.md has the one table of its transitions. Each backend supplies only the statements these steps run, through
//! [`Routes`] and [`Claims`] (SQLite's never wait; see `sqlite::ready`), with the statements
//! of [`super::sql`].

use super::ledger::Origin;
use super::rows::StoredEvent;
use super::{Attempt, Batch, EventState, Finish, Millis, PaceState, Pick, QueueError};
use crate::event::{escalation_key, Action, DedupKey, Event, RoutingKey, Sequence, Severity, Verdict};
use crate::secret::Secret;
use std::borrow::Cow;

/// What sticky routing must do for one event before it is stored.
enum Route<'a> {
    /// A trigger: remember that `dedup_key` went to the event's routing key.
    Record(&'a str),
    /// An acknowledge or resolve: look up where `dedup_key` was triggered.
    Lookup(&'a str),
    /// Change events and alerts without a dedup_key: stored as they are.
    AsIs,
}

impl<'a> Route<'a> {
    fn of(e: &'a Event) -> Route<'a> {
        match (e.action(), e.dedup_key()) {
            (Some(Action::Trigger), Some(dk)) => Route::Record(dk.as_str()),
            (Some(Action::Acknowledge | Action::Resolve), Some(dk)) => Route::Lookup(dk.as_str()),
            (_, None) | (None, _) => Route::AsIs,
        }
    }
}

/// What the accept checks before an acknowledge or resolve may close an incident: a source's
/// webhook "only the opener closes", with the sources its config lets it close after
/// (`may_close`); pagerhook's resolve of a silent incident that it is still silent; an
/// operator's action (a replayed payload, an operator's resolve) and pagerhook's own pages
/// nothing.
#[derive(Debug, Clone, Copy)]
pub(super) enum Closing<'a> {
    Checked {
        may_close: &'a [String],
    },
    /// `resolve_when_silent`: the incident was judged silent since `before`.
    Silence {
        before: Millis,
    },
    Bypass,
}

impl<'a> Closing<'a> {
    /// The check an accept of `inbound`'s events makes: none for an operator's or pagerhook's,
    /// but the silence check for pagerhook's resolve of a silent incident (`silent_before`).
    pub(super) fn of(source: &str, may_close: &'a [String], silent_before: Option<Millis>) -> Closing<'a> {
        match (Origin::of(source), silent_before) {
            (Origin::Source(_), _) => Closing::Checked { may_close },
            (Origin::Pagerhook, Some(before)) => Closing::Silence { before },
            (Origin::Operator, _) | (Origin::Pagerhook, None) => Closing::Bypass,
        }
    }
}

/// The routes already stored, as a backend looks them up.
pub(super) trait Routes {
    /// The routing key of `source`'s latest stored trigger of `dedup_key`, and whether it ever
    /// triggered it on `own`; `None` if it never triggered it.
    async fn latest_route(
        &mut self,
        source: &str,
        dedup_key: &str,
        own: &str,
    ) -> Result<Option<(String, bool)>, QueueError>;

    /// The source that opened the incident the ledger holds unresolved on this lane, if any
    /// (`ledger::OPENER`).
    async fn opener(&mut self, routing_key: &str, dedup_key: &str) -> Result<Option<String>, QueueError>;

    /// Whether the ledger holds the incident of `routing_key` and `dedup_key` unresolved and
    /// not re-triggered since `before` (`ledger::STILL_SILENT`).
    async fn still_silent(&mut self, routing_key: &str, dedup_key: &str, before: Millis) -> Result<bool, QueueError>;

    /// Whether `lane` has an event waiting to be sent (`sql::LANE_WAITING`).
    async fn lane_waiting(&mut self, lane: &str) -> Result<bool, QueueError>;

    /// The resolve of `lane` still held back by flap damping at `at` (`sql::DELAYED_RESOLVE`).
    async fn delayed_resolve(&mut self, lane: &str, at: Millis) -> Result<Option<i64>, QueueError>;

    /// Damps pending event `id` at `at` for `why` (`sql::DAMP`).
    async fn damp(&mut self, id: i64, at: Millis, why: &str) -> Result<(), QueueError>;

    /// The highest `sequence` `lane` applied, as stored: kind and value (`sql::LANE_SEQUENCE`).
    async fn sequence(&mut self, lane: &str) -> Result<Option<(String, i64)>, QueueError>;

    /// Records that `lane` applied `sequence` at `at` (`sql::APPLY_SEQUENCE`).
    async fn apply_sequence(&mut self, lane: &str, sequence: Sequence, at: Millis) -> Result<(), QueueError>;

    /// The members of an incident family on `routing_key` open in the ledger or pending
    /// (`ledger::FAMILY`): `keys` a dedup_key and its escalation keys, `lanes` the escalation
    /// keys' lanes. Each as `(dedup_key, severity the ledger holds)`; a pending one's is `None`.
    async fn family(
        &mut self,
        routing_key: &str,
        keys: [&str; 4],
        lanes: [&str; 3],
    ) -> Result<Vec<(String, Option<String>)>, QueueError>;
}

/// How one routed event is stored.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Fate {
    /// Pending, due at `next_at`.
    Queue { next_at: Millis },
    /// Finished as it arrives, in `state`, for `why` (never sent).
    Done { state: EventState, why: String },
}

/// The fate of `e`, accepted at `at` from a source whose resolves wait `resolve_delay` (0:
/// no flap damping), `refused` or not by "only the opener closes". An event older than the
/// `sequence` its lane applied is stale ([`stale`]). Flap damping: such a
/// resolve is due only after the delay; a trigger arriving while a resolve of its lane still
/// waits damps both when the ledger holds the lane's incident open (it stays open: one page,
/// not two). When it holds none (the lane was never paged, or its trigger is still queued),
/// only the resolve is damped: it would close nothing, and the trigger must still page (or
/// collapse into the queued one). Runs under the lane's lock (PostgreSQL's insert lock;
/// SQLite's one writer).
pub(super) async fn fate(
    stored: &mut impl Routes,
    e: &Event,
    (refused, closing): (Option<&String>, Closing<'_>),
    at: Millis,
    resolve_delay: Millis,
) -> Result<Fate, QueueError> {
    if let Some(why) = refused {
        return Ok(Fate::Done { state: EventState::Dead, why: why.clone() });
    }
    let lane = e.order_key();
    if let (Closing::Silence { before }, Some(lane)) = (closing, lane.as_deref()) {
        if let Some(why) = heard_from(stored, e, lane, before).await? {
            return Ok(Fate::Done { state: EventState::Stale, why });
        }
    }
    if let (Some(sequence), Some(lane)) = (e.sequence(), lane.as_deref()) {
        if let Some(why) = stale(stored, e, lane, sequence, at).await? {
            return Ok(Fate::Done { state: EventState::Stale, why });
        }
    }
    match (e.action(), lane) {
        (Some(Action::Resolve), Some(_)) if resolve_delay > 0 => Ok(Fate::Queue { next_at: at + resolve_delay }),
        (Some(Action::Trigger), Some(lane)) if resolve_delay > 0 => {
            let Some(resolve) = stored.delayed_resolve(&lane, at).await? else {
                return Ok(Fate::Queue { next_at: at });
            };
            let dedup_key = e.dedup_key().map_or("", |k| k.as_str());
            if stored.opener(e.routing_key().expose(), dedup_key).await?.is_none() {
                let why = "flap damped: a trigger of its lane followed within resolve_delay, and no incident was open for it to close";
                stored.damp(resolve, at, why).await?;
                tracing::info!(resolve, dedup_key, "flap damped: the held resolve closes nothing, the trigger is sent");
                return Ok(Fate::Queue { next_at: at });
            }
            let why = format!(
                "flap damped: a trigger of its lane arrived within resolve_delay (event {resolve} and this one)"
            );
            stored.damp(resolve, at, &why).await?;
            tracing::info!(
                resolve,
                dedup_key = e.dedup_key().map(|k| k.as_str()),
                "flap damped: the incident stays open"
            );
            Ok(Fate::Done { state: EventState::Damped, why })
        }
        _ => Ok(Fate::Queue { next_at: at }),
    }
}

/// Why pagerhook's resolve `e` of an incident judged silent since `before` must not be sent:
/// between the judgement and this accept the sender spoke (a trigger sent or waiting in the
/// lane) or the incident was closed. Runs under the lane's lock, as [`fate`], so a trigger
/// accepted meanwhile is seen.
async fn heard_from(
    stored: &mut impl Routes,
    e: &Event,
    lane: &str,
    before: Millis,
) -> Result<Option<String>, QueueError> {
    let dedup_key = e.dedup_key().map_or("", |k| k.as_str());
    if stored.still_silent(e.routing_key().expose(), dedup_key, before).await? && !stored.lane_waiting(lane).await? {
        return Ok(None);
    }
    tracing::info!(dedup_key, "not resolved for silence: its source spoke, or it closed, since it was judged silent");
    Ok(Some("stale: its incident was re-triggered or closed after it was judged silent (resolve_when_silent)".into()))
}

/// Why `e`, whose rule gave it `sequence`, is stale in `lane`: the lane applied a higher
/// value of the same type. Otherwise the lane applies it (an equal value is fresh: a repeated
/// notification, a re-run of the latest run), and values of another type replace the stored
/// one without comparing (a rule edited: `check` warns where it can tell). Runs under the
/// lane's lock, as [`fate`].
async fn stale(
    stored: &mut impl Routes,
    e: &Event,
    lane: &str,
    sequence: Sequence,
    at: Millis,
) -> Result<Option<String>, QueueError> {
    let applied = stored.sequence(lane).await?.and_then(|(kind, value)| Sequence::from_stored(&kind, value));
    let dedup_key = e.dedup_key().map(|k| k.as_str());
    match (sequence.verdict(applied), applied) {
        (Verdict::Stale, Some(applied)) => {
            tracing::info!(dedup_key, %sequence, %applied, "stale: older than an event its incident already took; not sent");
            return Ok(Some(format!(
                "stale: sequence {sequence} is older than {applied}, which its lane already applied"
            )));
        }
        (Verdict::OtherType, Some(applied)) => tracing::warn!(
            dedup_key,
            %sequence,
            %applied,
            "sequence changed type (a number and a time): not compared, the new one applies"
        ),
        (Verdict::Stale | Verdict::OtherType, None) | (Verdict::Fresh, _) => {}
    }
    stored.apply_sequence(lane, sequence, at).await?;
    Ok(None)
}

/// A webhook's events as they must be stored.
pub(super) struct Routed<'e> {
    /// Each event, moved to the routing key its trigger went to where sticky routing says.
    pub events: Vec<Cow<'e, Event>>,
    /// `(dedup_key, routing_key)` of every trigger, in event order: the routes to record.
    pub routes: Vec<(&'e str, &'e str)>,
    /// For each event, why it is refused ("only the opener closes"): stored as a dead letter
    /// with that reason instead of being queued.
    pub refused: Vec<Option<String>>,
}

/// Applies sticky routing within `source` to `events`: a trigger records where its dedup_key
/// went; an acknowledge or resolve of a dedup_key this source triggered, but never on the
/// event's own routing key, goes to the key of the source's latest trigger instead. A trigger
/// earlier in the same webhook counts, as the latest. Routes of other sources are never read.
///
/// Then "only the opener closes": an acknowledge or resolve of a lane whose unresolved
/// incident the ledger says another source opened is refused (kept as a dead letter naming
/// both), unless `closing` lets this source close after that one. Lanes the ledger does not
/// know pass.
pub(super) async fn route<'e>(
    stored: &mut impl Routes,
    source: &str,
    events: &'e [Event],
    closing: Closing<'_>,
) -> Result<Routed<'e>, QueueError> {
    let mut routed = Routed {
        events: Vec::with_capacity(events.len()),
        routes: Vec::new(),
        refused: Vec::with_capacity(events.len()),
    };
    for e in events {
        let event = match Route::of(e) {
            Route::Record(dk) => {
                routed.routes.push((dk, e.routing_key().expose()));
                Cow::Borrowed(e)
            }
            Route::Lookup(dk) => {
                let own = e.routing_key().expose();
                let latest = routed.latest(dk, own, stored.latest_route(source, dk, own).await?);
                match sticky_key(latest) {
                    Some(key) => Cow::Owned(rerouted(e, key)),
                    None => Cow::Borrowed(e),
                }
            }
            Route::AsIs => Cow::Borrowed(e),
        };
        routed.refused.push(refusal(stored, source, &event, closing).await?);
        routed.events.push(event);
    }
    Ok(routed)
}

/// The severities an incident may be escalated to, most urgent first, each filed under its
/// own key (`event::escalation_key`): nothing is more urgent than critical, and info escalates
/// nothing.
const ESCALATIONS: [Severity; 3] = [Severity::Critical, Severity::Error, Severity::Warning];

/// What the ledger and the queue hold of an incident family: a dedup_key on a routing key
/// and the incidents escalated from it.
#[derive(Debug, Default)]
struct Family {
    /// The severity PagerDuty holds the incident itself at, when the ledger holds it open.
    held: Option<Severity>,
    /// The escalations open in the ledger or pending in their lanes, by severity.
    escalations: Vec<(Severity, DedupKey)>,
}

impl Family {
    /// The most urgent severity open (or pending) in the family.
    fn top(&self) -> Option<Severity> {
        self.held.into_iter().chain(self.escalations.iter().map(|(s, _)| *s)).max_by_key(|s| s.urgency())
    }

    /// Where a trigger of `severity` whose rule escalates goes: to the escalation of its
    /// severity when it is more urgent than everything open (a new incident), or as urgent as
    /// an escalation open at it (kept fresh). `None`: its own dedup_key, as without
    /// `escalate` (nothing open to escalate from; or less urgent, and PagerDuty dedups it).
    fn target(&self, severity: Severity) -> Option<Severity> {
        let top = self.top()?;
        let open_at = self.escalations.iter().any(|(s, _)| *s == severity);
        (severity.urgency() > top.urgency() || severity == top && open_at).then_some(severity)
    }
}

/// Reads the family of `dedup_key` on `key` (one statement, `Routes::family`).
async fn family(stored: &mut impl Routes, key: &RoutingKey, dedup_key: &DedupKey) -> Result<Family, QueueError> {
    let escalations = ESCALATIONS.map(|s| (s, escalation_key(dedup_key, s)));
    let lanes = escalations.each_ref().map(|(_, k)| crate::event::lane(key, k));
    let [c, e, w] = escalations.each_ref().map(|(_, k)| k.as_str());
    let rows = stored.family(key.expose(), [dedup_key.as_str(), c, e, w], lanes.each_ref().map(String::as_str)).await?;
    let mut family = Family::default();
    for (member, severity) in rows {
        if member == dedup_key.as_str() {
            // PagerDuty's default when a trigger names none.
            family.held = Some(severity.and_then(|s| Severity::parse(&s).ok()).unwrap_or(Severity::Error));
        } else if let Some((s, k)) = escalations.iter().find(|(_, k)| k.as_str() == member) {
            if !family.escalations.iter().any(|(held, _)| held == s) {
                family.escalations.push((*s, k.clone()));
            }
        }
    }
    Ok(family)
}

/// Escalation, after sticky routing (so on the routing key each event takes) and, on
/// PostgreSQL, with the webhook's lanes held, so that an accept of the same incident waits
/// for this one's escalations to be stored. A trigger whose rule sets `escalate` and is more
/// urgent than what its incident holds open becomes a trigger of the escalation key of its
/// severity ([`Family::target`], [`Event::escalated`]): a new incident, linked to the first.
/// An acknowledge or resolve of a dedup_key (any rule's, an operator's) is followed by the
/// same action for each escalation of it the ledger holds open or whose trigger is still
/// pending (this webhook's included), each checked by "only the opener closes" on its own
/// lane. Costs one indexed statement per escalating trigger and per acknowledge or resolve;
/// other triggers and change events none.
pub(super) async fn escalate(
    stored: &mut impl Routes,
    source: &str,
    routed: &mut Routed<'_>,
    closing: Closing<'_>,
) -> Result<(), QueueError> {
    let events = std::mem::take(&mut routed.events);
    let refused = std::mem::take(&mut routed.refused);
    // This webhook's escalations, as (the lane escalated from, the escalation's key).
    let mut filed: Vec<(String, DedupKey)> = Vec::new();
    for (e, why) in events.into_iter().zip(refused) {
        let dk = e.dedup_key().cloned();
        match (e.action(), dk) {
            (Some(Action::Trigger), Some(dk)) if e.escalates() => {
                let event = match escalated(stored, &e, &dk).await? {
                    Some(up) => {
                        filed.extend(e.order_key().zip(up.dedup_key().cloned()));
                        Cow::Owned(up)
                    }
                    None => e,
                };
                routed.events.push(event);
                routed.refused.push(why);
            }
            (Some(Action::Acknowledge | Action::Resolve), Some(dk)) => {
                let also = fanned_out(stored, &e, &dk, &filed).await?;
                routed.events.push(e);
                routed.refused.push(why);
                for f in also {
                    routed.refused.push(refusal(stored, source, &f, closing).await?);
                    routed.events.push(Cow::Owned(f));
                }
            }
            (Some(Action::Trigger | Action::Acknowledge | Action::Resolve) | None, _) => {
                routed.events.push(e);
                routed.refused.push(why);
            }
        }
    }
    Ok(())
}

/// Trigger `e` of `dedup_key`, escalated if its family says so; `None`: sent as it is.
async fn escalated(stored: &mut impl Routes, e: &Event, dedup_key: &DedupKey) -> Result<Option<Event>, QueueError> {
    let Some(severity) = e.severity() else { return Ok(None) };
    let family = family(stored, e.routing_key(), dedup_key).await?;
    let (Some(target), Some(top)) = (family.target(severity), family.top()) else { return Ok(None) };
    let held = family.held.unwrap_or(top);
    match e.escalated(escalation_key(dedup_key, target), dedup_key, held) {
        Some(Ok(up)) => {
            let to = up.dedup_key().map(|k| k.as_str());
            tracing::info!(
                dedup_key = dedup_key.as_str(),
                held = held.as_str(),
                to,
                "escalated: a new incident at the trigger's severity"
            );
            Ok(Some(up))
        }
        // A page is never lost to its escalation: it goes as it came.
        Some(Err(err)) => {
            tracing::warn!(dedup_key = dedup_key.as_str(), error = %err, "could not escalate: the trigger is sent as it came");
            Ok(None)
        }
        None => Ok(None),
    }
}

/// The acknowledges or resolves that follow `e`, one of `dedup_key`, to the escalations of
/// its incident: open in the ledger, pending, or `filed` earlier in this webhook.
async fn fanned_out(
    stored: &mut impl Routes,
    e: &Event,
    dedup_key: &DedupKey,
    filed: &[(String, DedupKey)],
) -> Result<Vec<Event>, QueueError> {
    let family = family(stored, e.routing_key(), dedup_key).await?;
    let lane = e.order_key();
    let mut keys: Vec<DedupKey> = family.escalations.into_iter().map(|(_, k)| k).collect();
    keys.extend(filed.iter().filter(|(from, _)| Some(from) == lane.as_ref()).map(|(_, k)| k.clone()));
    keys.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
    keys.dedup();
    let action = e.action().map_or("", |a| a.as_str());
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        match e.refiled(key) {
            Ok(f) => {
                tracing::info!(
                    dedup_key = dedup_key.as_str(),
                    to = f.dedup_key().map(|k| k.as_str()),
                    action,
                    "escalation: the same action for the escalated incident"
                );
                out.push(f);
            }
            Err(err) => {
                tracing::error!(dedup_key = dedup_key.as_str(), error = %err, "escalation: could not refile; the escalated incident stays open")
            }
        }
    }
    Ok(out)
}

/// Why `e`, an event of `source`, may not be sent: an acknowledge or resolve of an incident
/// another source opened, which `closing` does not let it close. `None`: it may.
async fn refusal(
    stored: &mut impl Routes,
    source: &str,
    e: &Event,
    closing: Closing<'_>,
) -> Result<Option<String>, QueueError> {
    let Closing::Checked { may_close } = closing else { return Ok(None) };
    let (Route::Lookup(dk), Some(action)) = (Route::of(e), e.action()) else { return Ok(None) };
    let Some(opener) = stored.opener(e.routing_key().expose(), dk).await? else { return Ok(None) };
    if opener == source || may_close.contains(&opener) {
        return Ok(None);
    }
    tracing::warn!(source, opener = %opener, dedup_key = dk, action = action.as_str(), "refused: only the opener closes");
    Ok(Some(format!(
        "source '{source}' may not {} the incident source '{opener}' opened (only the opener closes); \
         if it should, add may_close = [\"{opener}\"] to source '{source}', then replay this dead letter",
        action.as_str()
    )))
}

impl Routed<'_> {
    /// The latest trigger's key of `dedup_key` and whether it was ever triggered on `own`,
    /// counting this webhook's triggers so far (later than any stored) with the `stored` ones.
    fn latest(&self, dedup_key: &str, own: &str, stored: Option<(String, bool)>) -> Option<(String, bool)> {
        let Some((_, latest)) = self.routes.iter().rev().find(|(dk, _)| *dk == dedup_key) else { return stored };
        let on_own = self.routes.iter().any(|(dk, key)| *dk == dedup_key && *key == own);
        Some((latest.to_string(), on_own || stored.is_some_and(|(_, on_own)| on_own)))
    }
}

/// The routing key to use instead of the event's own, given its dedup_key's latest trigger's
/// key and whether it was ever triggered on the own key.
fn sticky_key(latest: Option<(String, bool)>) -> Option<RoutingKey> {
    match latest {
        Some((latest, false)) => RoutingKey::parse(Secret::new(latest)).ok(),
        Some((_, true)) | None => None,
    }
}

/// `e` sent to `key`, the routing key its dedup_key was triggered on.
fn rerouted(e: &Event, key: RoutingKey) -> Event {
    tracing::info!(
        dedup_key = e.dedup_key().map(|k| k.as_str()),
        from = %e.routing_key().fingerprint(),
        to = %key.fingerprint(),
        "sticky routing: sent where its trigger went"
    );
    e.clone().rerouted(key)
}

/// A due lane head of a routing key, as a claim picks it, with the source of its webhook.
pub(super) struct Candidate {
    pub event: StoredEvent,
    pub source: String,
}

/// A claim's statements, as a backend runs them (`sql::NEXT_IN_LANE`, `COLLAPSE`, `LEASE`, …).
pub(super) trait Claims {
    async fn next_in_lane(&mut self, now: Millis, lane: &str, after: i64) -> Result<Option<StoredEvent>, QueueError>;
    async fn collapse(&mut self, id: i64, now: Millis, reason: &str) -> Result<(), QueueError>;
    async fn lease(&mut self, id: i64, until: Millis) -> Result<(), QueueError>;
    /// The routing keys (as stored) with events due and unleased at `now` (`sql::DUE_KEYS`).
    async fn due_keys(&mut self, now: Millis) -> Result<Vec<String>, QueueError>;
    /// Holds the pace of the key named `sha` for this claim and reads it (a new key: a fresh
    /// state). `None`: another claim holds it right now (PostgreSQL's other replicas), and
    /// claims that key's events meanwhile.
    async fn take_pace(&mut self, sha: &str, now: Millis) -> Result<Option<PaceState>, QueueError>;
    async fn store_pace(&mut self, sha: &str, pace: &PaceState) -> Result<(), QueueError>;
    /// Up to `n` due lane heads of routing key `key` (SHA-256 `sha`), best first: by priority,
    /// then each source's turn, the least recently served source first, then age.
    async fn candidates(&mut self, now: Millis, key: &str, sha: &str, n: usize) -> Result<Vec<Candidate>, QueueError>;
    /// `source` was served on key `sha` at `now` (`sql::SERVED`): fair share's memory.
    async fn served(&mut self, sha: &str, source: &str, now: Millis) -> Result<(), QueueError>;
    /// The first pending resolve of `lane` after event `after` (`sql::NEXT_RESOLVE`).
    async fn waiting_resolve(&mut self, lane: &str, after: i64) -> Result<Option<i64>, QueueError>;
    /// Whether PagerDuty may hold an incident of `head`'s lane: an event of the lane up to
    /// `head` was attempted since the lane's last delivered resolve, or the ledger holds it
    /// open (`sql::LANE_MAY_BE_OPEN`).
    async fn may_be_open(&mut self, lane: &str, head: i64) -> Result<bool, QueueError>;
    /// Supersedes the pending events of `lane` from `from` to `to` at `now` for `why`; their ids.
    async fn supersede(
        &mut self,
        lane: &str,
        range: (i64, i64),
        now: Millis,
        why: &str,
    ) -> Result<Vec<i64>, QueueError>;
}

/// What one claim leased: each head with the triggers collapsed into it, the events it
/// superseded, and when the first routing key it held back (no free slot) is free again.
#[derive(Default)]
pub(super) struct Claim {
    pub leased: Vec<(StoredEvent, Vec<i64>)>,
    pub superseded: Vec<i64>,
    pub paced_until: Option<Millis>,
}

impl Claim {
    /// The claim as handed out, its events leased until `lease`.
    pub(super) fn into_batch(self, lease: Millis) -> Batch {
        let claimed = self.leased.into_iter().filter_map(|(head, collapsed)| head.into_claimed(collapsed, lease));
        Batch { claimed: claimed.collect(), superseded: self.superseded, paced_until: self.paced_until }
    }
}

/// Claims up to `limit` events due at `now`, leased until `until`, routing key by routing key
/// (in the order of their SHA-256, the order every replica takes their pace in). Within a key,
/// only while `pick.pace` finds the key free, each event spending a slot, and the best first
/// (`Claims::candidates`): priority (`Event::priority`), then fair share between the sources
/// sharing the key. Nothing is reserved ahead, so a page that arrives during a storm takes the
/// key's next slot. A lane's own order never changes: only lane heads are candidates.
pub(super) async fn claim(
    steps: &mut impl Claims,
    now: Millis,
    limit: usize,
    until: Millis,
    pick: &Pick,
) -> Result<Claim, QueueError> {
    let mut out = Claim::default();
    let mut keys: Vec<(String, String)> =
        steps.due_keys(now).await?.into_iter().map(|k| (crate::event::key_sha256(&k), k)).collect();
    keys.sort_unstable();
    for (sha, key) in keys {
        if out.leased.len() >= limit {
            break;
        }
        let Some(mut pace) = steps.take_pace(&sha, now).await? else { continue };
        claim_key(steps, (&key, &sha), &mut pace, (now, until), limit, pick, &mut out).await?;
        steps.store_pace(&sha, &pace).await?;
    }
    Ok(out)
}

/// [`claim`] for one routing key, whose pace this claim holds.
async fn claim_key(
    steps: &mut impl Claims,
    (key, sha): (&str, &str),
    pace: &mut PaceState,
    (now, until): (Millis, Millis),
    limit: usize,
    pick: &Pick,
    out: &mut Claim,
) -> Result<(), QueueError> {
    // Whether the key may send now; if not, when it may (kept as the claim's `paced_until`).
    let free_now = |pace: &PaceState, out: &mut Claim| {
        let Some(rule) = &pick.pace else { return true };
        let free = rule.free_at(pace, now);
        if free > now {
            out.paced_until = Some(out.paced_until.map_or(free, |t| t.min(free)));
        }
        free <= now
    };
    loop {
        // Checked before the candidates are read: a key held back costs no scan of its backlog.
        if !free_now(pace, out) {
            return Ok(());
        }
        let wanted = limit - out.leased.len();
        let candidates = steps.candidates(now, key, sha, wanted).await?;
        let exhausted = candidates.len() < wanted;
        for c in candidates {
            if !free_now(pace, out) {
                return Ok(());
            }
            let Some(leased) = lease_head(steps, c.event, (now, until), pick.supersede, &mut out.superseded).await?
            else {
                continue;
            };
            if let Some(rule) = &pick.pace {
                rule.spend(pace, now);
            }
            steps.served(sha, &c.source, now).await?;
            out.leased.push(leased);
        }
        // Heads superseded whole leave room: the next candidates take it.
        if exhausted || out.leased.len() >= limit {
            return Ok(());
        }
    }
}

/// Leases `head`, a lane head a claim at `now` picked, until `until`: the event to hand out,
/// and the earlier triggers it collapsed. `None`: the lane had nothing left to send.
///
/// Supersede (with `supersede`): a head that is a trigger, followed in its lane by a resolve,
/// in a lane PagerDuty cannot hold open ([`Claims::may_be_open`]), is superseded with
/// everything up to that resolve; the lane's next event, if due, is the head then.
/// Collapse: a head that is a trigger directly followed in its lane by another due trigger is
/// collapsed into it first (repeatedly): PagerDuty would only deduplicate the older ones, and
/// skipping them shortens a backlog. A trigger never collapses into an acknowledge or resolve.
pub(super) async fn lease_head(
    claims: &mut impl Claims,
    mut head: StoredEvent,
    (now, until): (Millis, Millis),
    supersede: bool,
    superseded: &mut Vec<i64>,
) -> Result<Option<(StoredEvent, Vec<i64>)>, QueueError> {
    let mut collapsed = Vec::new();
    while let Some(lane) = head.order_key.clone().filter(|_| is_trigger(&head)) {
        if supersede {
            if let Some(resolve) = supersedable(claims, &lane, &head).await? {
                let why = format!("superseded: its lane's resolve (event {resolve}) came before it was sent");
                let gone = claims.supersede(&lane, (head.id, resolve), now, &why).await?;
                tracing::info!(events = ?gone, "superseded: a trigger resolved before it was sent; neither is sent");
                superseded.extend(gone);
                match claims.next_in_lane(now, &lane, resolve).await? {
                    Some(next) if next.due => {
                        head = next;
                        continue;
                    }
                    _ => return Ok(None),
                }
            }
        }
        let Some(next) = claims.next_in_lane(now, &lane, head.id).await? else { break };
        if !(is_trigger(&next) && next.due) {
            break;
        }
        claims.collapse(head.id, now, &format!("collapsed into event {}", next.id)).await?;
        collapsed.push(head.id);
        head = next;
    }
    claims.lease(head.id, until).await?;
    Ok(Some((head, collapsed)))
}

/// The resolve that supersedes trigger `head` of `lane`, if one waits behind it and the lane
/// cannot be open at PagerDuty (an attempt that timed out or got a 5xx may have reached it).
async fn supersedable(claims: &mut impl Claims, lane: &str, head: &StoredEvent) -> Result<Option<i64>, QueueError> {
    let Some(resolve) = claims.waiting_resolve(lane, head.id).await? else { return Ok(None) };
    if claims.may_be_open(lane, head.id).await? {
        return Ok(None);
    }
    Ok(Some(resolve))
}

fn is_trigger(e: &StoredEvent) -> bool {
    e.action.as_deref() == Some(Action::Trigger.as_str())
}

/// What a finished attempt writes (`sql::FINISH`).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Outcome<'a> {
    pub state: EventState,
    /// When it stopped being pending; `None` while it is.
    pub done_at: Option<Millis>,
    /// When it is due again; `None`: unchanged.
    pub next_at: Option<Millis>,
    /// The new `last_error` (which may be none); `None`: unchanged.
    pub last_error: Option<Option<&'a str>>,
}

impl<'a> Outcome<'a> {
    pub fn of(attempt: &'a Attempt, finish: &'a Finish) -> Outcome<'a> {
        let done = |state, last_error| Outcome { state, done_at: Some(attempt.at), next_at: None, last_error };
        match finish {
            Finish::Delivered => done(EventState::Delivered, None),
            Finish::DryRun => done(EventState::DryRun, None),
            Finish::Dead(reason) | Finish::DeadPaged(reason, _) => done(EventState::Dead, Some(Some(reason.as_str()))),
            Finish::RetryAt(at) => Outcome {
                state: EventState::Pending,
                done_at: None,
                next_at: Some(*at),
                last_error: Some(attempt.detail.as_deref()),
            },
        }
    }

    /// `sql::FINISH`'s `$4` and `$5`: whether `last_error` changes, and to what.
    pub fn last_error(&self) -> (bool, Option<&'a str>) {
        (self.last_error.is_some(), self.last_error.flatten())
    }
}

#[cfg(test)]
mod tests;
