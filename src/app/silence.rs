//! The silence watcher (`resolve_when_silent`): for sources whose senders repeat firing alerts
//! (Alertmanager's `repeat_interval`, Grafana's repeat), an incident the source opened and has
//! not re-triggered for that long is one whose resolve was lost, or whose rule was renamed
//! while firing: pagerhook resolves it, recorded as its own (`@pagerhook`) with the reason.
//!
//! The judging is the store's (`Incidents::resolve_silent`): it reads the ledger, skips lanes
//! with anything waiting, and checks again under the lane's lock, so a trigger that arrives
//! meanwhile wins. The sources and their settings are read anew every round: a reload applies.

use crate::queue::Queue;
use crate::registry::Sources;
use crate::reload::Live;
use crate::telemetry::events::SilenceResolved;
use crate::telemetry::{InternalEvent, Metrics};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often the ledger is read: silences are minutes to hours long, so a few seconds late is
/// nothing, and each round is one indexed query per source that sets the option.
const EVERY: Duration = Duration::from_secs(5);

/// Resolves queued per source and round, at most: a bounded transaction count, so a ledger
/// full of forgotten incidents (the option just turned on) drains over a few rounds instead of
/// holding the writer.
const BATCH: usize = 100;

#[derive(Clone)]
pub(super) struct SilenceWatch {
    pub queue: Arc<dyn Queue>,
    pub sources: Arc<Live<Sources>>,
    pub metrics: Arc<Metrics>,
}

impl SilenceWatch {
    /// Judges every [`EVERY`] until stopped.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            self.round(crate::queue::now_millis()).await;
        }
    }

    /// One round at `now`: each source that sets `resolve_when_silent`, in name order. A
    /// failure is logged and the next round tries again.
    async fn round(&self, now: crate::queue::Millis) {
        let sources = self.sources.load();
        let mut silent: Vec<(&str, Duration)> = sources
            .names()
            .filter_map(|name| Some((name, sources.get(name)?.resolve_when_silent())))
            .filter(|(_, d)| !d.is_zero())
            .collect();
        silent.sort_unstable();
        for (source, after) in silent {
            match self.queue.resolve_silent(source, after, now, BATCH).await {
                Ok(dedup_keys) if dedup_keys.is_empty() => {}
                Ok(dedup_keys) => {
                    SilenceResolved { source, silent: after, dedup_keys: &dedup_keys }.emit(&self.metrics)
                }
                Err(e) => tracing::error!(source, error = %e, "cannot resolve the incidents its source fell silent on"),
            }
        }
    }
}
