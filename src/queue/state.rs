//! Where an event stands, and the one place its stored name is written: every query takes it
//! from here ([`EventState::as_str`], built into the SQL text at compile time) and every row
//! read parses it back ([`EventState::parse`]).

use serde::{Serialize, Serializer};
use std::fmt;

/// An event's state: `pending` until it is delivered, logged (`serve --dry-run`), dead, or
/// collapsed into a newer trigger of its lane; a dead one becomes `replayed` once a copy is
/// queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventState {
    /// Waiting for a claim, claimed, or retrying: it still holds its lane.
    Pending,
    /// PagerDuty accepted it.
    Delivered,
    /// `serve --dry-run` logged it instead of sending it.
    DryRun,
    /// PagerDuty refused it, or it ran out of retries: a dead letter.
    Dead,
    /// A newer trigger of its lane was sent in its place.
    Collapsed,
    /// A dead event queued again as a new one (kept as history).
    Replayed,
    /// Flap damping: a resolve held for its source's `resolve_delay`, and the trigger of its
    /// lane that arrived meanwhile; neither is sent (the incident stays open, one page).
    Damped,
    /// Older than the `sequence` its lane already applied (an out-of-order delivery): never
    /// sent.
    Stale,
    /// Supersede: a trigger that waited, never sent, until its lane's resolve arrived, and
    /// that resolve (with any acknowledge between); none is sent, since PagerDuty never heard
    /// of the incident (`delivery.supersede`).
    Superseded,
}

impl EventState {
    /// Every state, in the order of their life.
    pub const ALL: [EventState; 9] = [
        EventState::Pending,
        EventState::Delivered,
        EventState::DryRun,
        EventState::Dead,
        EventState::Collapsed,
        EventState::Replayed,
        EventState::Damped,
        EventState::Stale,
        EventState::Superseded,
    ];

    /// The name stored in `events.state` (and shown). Stores hold these: never rename one.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventState::Pending => "pending",
            EventState::Delivered => "delivered",
            EventState::DryRun => "dry_run",
            EventState::Dead => "dead",
            EventState::Collapsed => "collapsed",
            EventState::Replayed => "replayed",
            EventState::Damped => "damped",
            EventState::Stale => "stale",
            EventState::Superseded => "superseded",
        }
    }

    /// Whether retention may delete it once old: dead events stay until replayed or deleted;
    /// what replaced them is history.
    pub const fn prunable(self) -> bool {
        match self {
            EventState::Delivered
            | EventState::DryRun
            | EventState::Collapsed
            | EventState::Replayed
            | EventState::Damped
            | EventState::Stale => true,
            EventState::Superseded => true,
            EventState::Pending | EventState::Dead => false,
        }
    }

    /// The state stored as `s`; `None` for a name this build does not know.
    pub fn parse(s: &str) -> Option<EventState> {
        EventState::ALL.into_iter().find(|state| state.as_str() == s)
    }
}

/// Its stored name, padded as asked (`deliveries list` aligns its columns).
impl fmt::Display for EventState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Shown as its stored name, as the console and `--json` always showed it.
impl Serialize for EventState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The stored names, for the SQL text (`'{PENDING}'` in `formatcp!`).
pub(super) const PENDING: &str = EventState::Pending.as_str();
pub(super) const DELIVERED: &str = EventState::Delivered.as_str();
pub(super) const DRY_RUN: &str = EventState::DryRun.as_str();
pub(super) const DEAD: &str = EventState::Dead.as_str();
pub(super) const COLLAPSED: &str = EventState::Collapsed.as_str();
pub(super) const REPLAYED: &str = EventState::Replayed.as_str();
pub(super) const DAMPED: &str = EventState::Damped.as_str();
pub(super) const STALE: &str = EventState::Stale.as_str();
pub(super) const SUPERSEDED: &str = EventState::Superseded.as_str();

/// The [`EventState::prunable`] states, as SQL: `state IN ({PRUNABLE})`.
pub(super) const PRUNABLE: &str = const_format::formatcp!(
    "'{DELIVERED}', '{DRY_RUN}', '{COLLAPSED}', '{REPLAYED}', '{DAMPED}', '{STALE}', '{SUPERSEDED}'"
);

#[cfg(test)]
mod tests;
