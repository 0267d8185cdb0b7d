//! pagerhook's own pages in the store, written once for both backends: queued in the
//! transaction that makes a dead letter ([`page`], [`page_dead_trigger`]) and resolved in the
//! one that removes the last of its source and reason ([`settle`]); a condition's page
//! (`Reason::is_condition`) is raised and resolved by [`conditions`] instead, the one step
//! that turns "the condition holds / no longer holds" into a trigger or a resolve. Each backend supplies the
//! statements through [`OwnSteps`] (SQLite's never wait; see `sqlite::ready`).
//!
//! The events themselves are built by `event::own`; the store adds only what it alone knows
//! in the transaction: how many dead letters of the source and reason wait, and the key an
//! open incident went to (`own_pages`), so that its resolve reaches the same service whatever
//! the config says by then.

use super::{Millis, QueueError};
use crate::event::own::{self, Page, Reason};
use crate::event::{Event, RoutingKey};
use crate::secret::Secret;

/// The statements a backend runs for its own pages.
pub(super) trait OwnSteps {
    /// How many dead letters of `source` for `reason` the store holds now.
    async fn waiting(&mut self, source: &str, reason: Reason) -> Result<i64, QueueError>;

    /// The open incidents: source, reason and the routing key they went to.
    async fn open_incidents(&mut self) -> Result<Vec<(String, String, String)>, QueueError>;

    /// Queues `event`, pagerhook's own for `source` and `reason`, at `now` (its record made or
    /// touched), and records the incident open on the event's key (a trigger) or closed.
    async fn queue_own(&mut self, source: &str, reason: Reason, event: &Event, now: Millis) -> Result<(), QueueError>;

    /// The source and routing key of dead event `id`, if it is a trigger that is not one of
    /// pagerhook's own (a meta-event never causes another).
    async fn dead_trigger(&mut self, id: i64) -> Result<Option<(String, String)>, QueueError>;
}

/// Queues `page`'s trigger for `source`, with the number of its reason's dead letters now
/// waiting (the one just made included).
pub(super) async fn page(s: &mut impl OwnSteps, source: &str, page: &Page, now: Millis) -> Result<(), QueueError> {
    // A condition counts no dead letters: its numbers are in the page's details.
    let waiting = if page.reason.is_condition() { 0 } else { s.waiting(source, page.reason).await? };
    match own::trigger(page, source, waiting.max(0) as u64) {
        Ok(event) => s.queue_own(source, page.reason, &event, now).await,
        Err(e) => {
            // Cannot happen with a valid key and a configured source's name; never fail the
            // write that made the dead letter for it.
            tracing::error!(source, reason = page.reason.as_str(), error = %e, "cannot build pagerhook's own page");
            Ok(())
        }
    }
}

/// Pages about dead event `id` if it is a trigger (not one of pagerhook's own), to `to`, or to
/// the dead trigger's own key.
pub(super) async fn page_dead_trigger(
    s: &mut impl OwnSteps,
    id: i64,
    to: Option<&RoutingKey>,
    now: Millis,
) -> Result<(), QueueError> {
    let Some((source, stored_key)) = s.dead_trigger(id).await? else { return Ok(()) };
    let key = match to {
        Some(k) => k.clone(),
        None => match RoutingKey::parse(Secret::new(stored_key)) {
            Ok(k) => k,
            Err(_) => return Ok(()),
        },
    };
    let p = Page::new(Reason::DeadTrigger, key).with("event_id", id);
    page(s, &source, &p, now).await
}

/// Resolves every open incident whose source and reason have no dead letter left: run by
/// every transaction that removes dead letters (replay, delete, prune).
pub(super) async fn settle(s: &mut impl OwnSteps, now: Millis) -> Result<(), QueueError> {
    for (source, reason, key) in opened(s).await? {
        // A condition's page is no dead letter's: `conditions` resolves it.
        if reason.is_condition() || s.waiting(&source, reason).await? > 0 {
            continue;
        }
        close(s, &source, reason, key, now).await?;
    }
    Ok(())
}

/// The open incidents, their reasons read.
async fn opened(s: &mut impl OwnSteps) -> Result<Vec<(String, Reason, String)>, QueueError> {
    let mut out = Vec::new();
    for (source, reason, key) in s.open_incidents().await? {
        let Some(reason) = Reason::parse(&reason) else {
            return Err(QueueError::BadRow(format!("own page of source {source:?} has reason {reason:?}")));
        };
        out.push((source, reason, key));
    }
    Ok(out)
}

/// Queues the resolve of `source`'s incident for `reason`, to the key it went to.
async fn close(
    s: &mut impl OwnSteps,
    source: &str,
    reason: Reason,
    key: String,
    now: Millis,
) -> Result<(), QueueError> {
    let key = RoutingKey::parse(Secret::new(key))
        .map_err(|e| QueueError::BadRow(format!("own page of source {source:?}: {e}")))?;
    match own::resolve(key, source, reason) {
        Ok(event) => s.queue_own(source, reason, &event, now).await,
        Err(e) => {
            tracing::error!(source, reason = reason.as_str(), error = %e, "cannot build pagerhook's own resolve");
            Ok(())
        }
    }
}

/// A condition that holds now, as its judge says: its subject (the page's "source") and page.
#[derive(Debug, Clone)]
pub struct Held {
    pub subject: String,
    pub page: Page,
    /// Whether it is bad enough to page about; `false`: it still holds, but only keeps an
    /// open page open (hysteresis: a storm is paged at one drain estimate and resolved at a
    /// lower one, so a backlog hovering at the line does not page and resolve by turns).
    pub raise: bool,
}

/// The general "condition raised / cleared" step. `judged` are the condition reasons the
/// caller has judged now; `holding` the conditions of those reasons that hold. One that
/// should raise and has no open incident is triggered, ONCE: one already open is left alone
/// (its numbers at the start stand; PagerDuty keeps the first title anyway). An open incident
/// of a judged reason whose condition is not in `holding` is resolved. Reasons not judged are
/// not touched (a caller that cannot tell, e.g. the room not yet measured, resolves nothing).
/// What changed is returned.
pub(super) async fn conditions(
    s: &mut impl OwnSteps,
    judged: &[Reason],
    holding: &[Held],
    now: Millis,
) -> Result<Vec<Change>, QueueError> {
    let open = opened(s).await?;
    let is_open = |source: &str, reason: Reason| open.iter().any(|(s, r, _)| s == source && *r == reason);
    let mut changes = Vec::new();
    for h in holding.iter().filter(|h| h.raise && h.page.reason.is_condition() && judged.contains(&h.page.reason)) {
        if !is_open(&h.subject, h.page.reason) {
            page(s, &h.subject, &h.page, now).await?;
            changes.push(Change { subject: h.subject.clone(), reason: h.page.reason, raised: true });
        }
    }
    for (source, reason, key) in open.into_iter().filter(|(_, r, _)| r.is_condition() && judged.contains(r)) {
        if !holding.iter().any(|h| h.subject == source && h.page.reason == reason) {
            close(s, &source, reason, key, now).await?;
            changes.push(Change { subject: source, reason, raised: false });
        }
    }
    Ok(changes)
}

/// A condition page [`conditions`] raised (`raised`) or resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// What it is about: a routing key's subject (`own::key_subject`) or `own::STORE`.
    pub subject: String,
    pub reason: Reason,
    pub raised: bool,
}
