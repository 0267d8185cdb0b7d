//! pagerhook's own pages in the store, written once for both backends: queued in the
//! transaction that makes a dead letter ([`page`], [`page_dead_trigger`]) and resolved in the
//! one that removes the last of its source and reason ([`settle`]). Each backend supplies the
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
    let waiting = s.waiting(source, page.reason).await?;
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
    for (source, reason, key) in s.open_incidents().await? {
        let Some(reason) = Reason::parse(&reason) else {
            return Err(QueueError::BadRow(format!("own page of source {source:?} has reason {reason:?}")));
        };
        if s.waiting(&source, reason).await? > 0 {
            continue;
        }
        let key = RoutingKey::parse(Secret::new(key))
            .map_err(|e| QueueError::BadRow(format!("own page of source {source:?}: {e}")))?;
        match own::resolve(key, &source, reason) {
            Ok(event) => s.queue_own(&source, reason, &event, now).await?,
            Err(e) => {
                tracing::error!(source, reason = reason.as_str(), error = %e, "cannot build pagerhook's own resolve")
            }
        }
    }
    Ok(())
}
