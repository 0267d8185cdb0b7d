//! What happens to a lane's events, written once for both backends: sticky routing on the way
//! in ([`route`]), collapse at the claim ([`lease_head`]), and what a finished attempt writes
//! ([`Outcome`]). Each backend supplies only the statements these steps run, through
//! [`Routes`] and [`Claims`] (SQLite's never wait; see `sqlite::ready`), with the statements
//! of [`super::sql`].

use super::rows::StoredEvent;
use super::{Attempt, EventState, Finish, Millis, QueueError};
use crate::event::{Action, Event, RoutingKey};
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
}

/// A webhook's events as they must be stored.
pub(super) struct Routed<'e> {
    /// Each event, moved to the routing key its trigger went to where sticky routing says.
    pub events: Vec<Cow<'e, Event>>,
    /// `(dedup_key, routing_key)` of every trigger, in event order: the routes to record.
    pub routes: Vec<(&'e str, &'e str)>,
}

/// Applies sticky routing within `source` to `events`: a trigger records where its dedup_key
/// went; an acknowledge or resolve of a dedup_key this source triggered, but never on the
/// event's own routing key, goes to the key of the source's latest trigger instead. A trigger
/// earlier in the same webhook counts, as the latest. Routes of other sources are never read.
pub(super) async fn route<'e>(
    stored: &mut impl Routes,
    source: &str,
    events: &'e [Event],
) -> Result<Routed<'e>, QueueError> {
    let mut routed = Routed { events: Vec::with_capacity(events.len()), routes: Vec::new() };
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
        routed.events.push(event);
    }
    Ok(routed)
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

/// A claim's statements, as a backend runs them (`sql::NEXT_IN_LANE`, `COLLAPSE`, `LEASE`).
pub(super) trait Claims {
    async fn next_in_lane(&mut self, now: Millis, lane: &str, after: i64) -> Result<Option<StoredEvent>, QueueError>;
    async fn collapse(&mut self, id: i64, now: Millis, reason: &str) -> Result<(), QueueError>;
    async fn lease(&mut self, id: i64, until: Millis) -> Result<(), QueueError>;
}

/// Leases `head`, a lane head a claim at `now` picked, until `until`: the event to hand out,
/// and the earlier triggers it superseded. A head that is a trigger directly followed in its
/// lane by another due trigger is collapsed into it first (repeatedly): PagerDuty would only
/// deduplicate the older ones, and skipping them shortens a backlog. A trigger never
/// collapses into an acknowledge or resolve.
pub(super) async fn lease_head(
    claims: &mut impl Claims,
    mut head: StoredEvent,
    now: Millis,
    until: Millis,
) -> Result<(StoredEvent, Vec<i64>), QueueError> {
    let mut superseded = Vec::new();
    while let Some(lane) = head.order_key.clone().filter(|_| is_trigger(&head)) {
        let Some(next) = claims.next_in_lane(now, &lane, head.id).await? else { break };
        if !(is_trigger(&next) && next.due) {
            break;
        }
        claims.collapse(head.id, now, &format!("collapsed into event {}", next.id)).await?;
        superseded.push(head.id);
        head = next;
    }
    claims.lease(head.id, until).await?;
    Ok((head, superseded))
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
