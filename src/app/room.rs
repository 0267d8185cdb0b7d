//! The room watcher: measures the store's room every second, says when it runs out and when it
//! is back (log, metric, `/readyz`), and makes room while it is short.
//!
//! The store's gate refuses accepts by the latest measurement on its own (the accept path never
//! waits for this task); this task is what tells the world, and what frees the room that lets
//! the gate open again without an operator.

use crate::queue::{Queue, RoomReading};
use crate::supervise::Health;
use crate::telemetry::events::{RoomMade, StoreOutOfRoom, StoreRoomBack};
use crate::telemetry::{InternalEvent, Metrics};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often the room is measured: the readiness a load balancer reads follows within this.
const EVERY: Duration = Duration::from_secs(1);

/// Finished events deleted per round under pressure, at most: a bounded transaction, so the
/// writer (and delivery's writes behind it) is never held for long.
const MAKE_ROOM_ROWS: usize = 10_000;

#[derive(Clone)]
pub(super) struct RoomWatch {
    pub queue: Arc<dyn Queue>,
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    /// Where the condition watcher hears whether the store is out of room (and why): it pages
    /// about it, and resolves that page when room is back (`delivery::conditions`).
    pub said: Arc<watch::Sender<crate::delivery::conditions::RoomState>>,
}

impl RoomWatch {
    /// Measures every [`EVERY`] until stopped.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut short_since = None;
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let reading = match self.queue.room().await {
                Ok(reading) => reading,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot measure the store's room");
                    continue;
                }
            };
            self.observe(&reading, &mut short_since);
            if reading.short.is_some() {
                self.make_room().await;
            }
        }
    }

    /// The one place where "the store is out of room" starts and clears (`short_since` is when
    /// it started): readiness, the log line and the metric change here, and the condition
    /// watcher (`delivery::conditions`) hears of it (it pages, or resolves the page) as soon as it
    /// starts or clears.
    ///
    /// The page is queued when the room gate closes, not when the disk is full: the gate
    /// closes at `storage.min_free_bytes` (or `storage.max_bytes`), and the room below that
    /// line is kept for delivery's writes, this page's few hundred bytes among them. If even
    /// that insert fails (the disk filled by something else), the watcher logs it and tries
    /// again every round, so the page is queued by the first round after `make_room` frees
    /// space; once queued, sending it needs no free disk beyond recording its attempt.
    fn observe(&self, reading: &RoomReading, short_since: &mut Option<Instant>) {
        let short = Some(reading.short.as_ref().map(|s| s.to_string()));
        // Wakes the condition watcher only when the store turns short or back, not for a new
        // figure in the reason.
        self.said.send_if_modified(|said| {
            let changed = said.as_ref().map(Option::is_some) != short.as_ref().map(Option::is_some);
            if changed {
                *said = short;
            }
            changed
        });
        match (&reading.short, *short_since) {
            (Some(short), since) => {
                self.health.out_of_room(Some(short.to_string()));
                if since.is_none() {
                    *short_since = Some(Instant::now());
                    StoreOutOfRoom { kind: short.as_str(), why: short }.emit(&self.metrics);
                }
            }
            (None, Some(since)) => {
                *short_since = None;
                self.health.out_of_room(None);
                let (used_bytes, free_bytes) = (reading.used_bytes, reading.free_bytes);
                StoreRoomBack { used_bytes, free_bytes, after: since.elapsed() }.emit(&self.metrics);
            }
            // A restarted watcher does not know what the last one said: clear it all the same.
            (None, None) => self.health.out_of_room(None),
        }
    }

    /// Deletes finished events and unneeded payload segments, oldest first, and logs it.
    async fn make_room(&self) {
        match self.queue.make_room(MAKE_ROOM_ROWS).await {
            Ok(freed) if freed.rows == 0 && freed.segments == 0 => {}
            Ok(freed) => {
                let (rows, segments, segment_bytes) = (freed.rows, freed.segments, freed.segment_bytes);
                RoomMade { rows, segments, segment_bytes }.emit(&self.metrics);
            }
            Err(e) => tracing::warn!(error = %e, "making room failed"),
        }
    }
}
