//! The long-lived tasks, watched: the delivery worker, the config watcher, the two pruners
//! (retention, dead letters), the room watcher, the search indexer and the two HTTP listeners. A task that dies (panics, or returns while nothing asked it to stop) is
//! logged and counted ([`TaskFailed`]) and restarted after a backoff; one that keeps dying, or
//! cannot be restarted (a listener, whose socket went with it), takes readiness down
//! ([`Health`]: `/readyz` answers 503 with the reason), so a load balancer stops sending
//! webhooks that nothing would deliver. A restarted task that then runs for
//! [`Restarts::healthy_after`] brings readiness back.
//!
//! Before this, a panic in a claim ended the delivery worker while `/readyz` stayed ready:
//! webhooks were accepted, nothing was sent, and nothing said so.

use crate::telemetry::events::{AttemptPanicked, TaskFailed, TaskRecovered};
use crate::telemetry::{InternalEvent, Metrics};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle, JoinSet};

/// The supervised tasks: a closed set, the `task` label of `pagerhook_task_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Task {
    DeliveryWorker,
    ConfigWatcher,
    Pruner,
    /// Drops dead letters past `storage.dead_letter_retention` or a source's size cap.
    DeadLetterPruner,
    /// Measures the store's room every second, and makes room while it is short.
    RoomWatcher,
    /// Measures each routing key's backlog and pages about conditions (a storm, the store out
    /// of room), resolving each page when its condition clears.
    ConditionWatcher,
    /// Adds new events to the search index (`queue::search`), off the accept path.
    SearchIndexer,
    /// Resolves the incidents a source stopped re-triggering (`resolve_when_silent`).
    SilenceWatcher,
    WebhookListener,
    AdminListener,
}

impl Task {
    pub const ALL: [Task; 10] = [
        Task::DeliveryWorker,
        Task::ConfigWatcher,
        Task::Pruner,
        Task::DeadLetterPruner,
        Task::RoomWatcher,
        Task::ConditionWatcher,
        Task::SearchIndexer,
        Task::SilenceWatcher,
        Task::WebhookListener,
        Task::AdminListener,
    ];

    /// The metric label and the name in logs and `/readyz`.
    pub fn as_str(self) -> &'static str {
        match self {
            Task::DeliveryWorker => "delivery_worker",
            Task::ConfigWatcher => "config_watcher",
            Task::Pruner => "pruner",
            Task::DeadLetterPruner => "dead_letter_pruner",
            Task::RoomWatcher => "room_watcher",
            Task::ConditionWatcher => "condition_watcher",
            Task::SearchIndexer => "search_indexer",
            Task::SilenceWatcher => "silence_watcher",
            Task::WebhookListener => "webhook_listener",
            Task::AdminListener => "admin_listener",
        }
    }
}

/// Why `/readyz` says no.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    /// Shutdown has begun.
    Stopping,
    /// A task keeps dying or cannot be restarted: what and how, never a panic's message
    /// (which may quote data; that goes to the log, behind the admin listener's operator).
    TaskDown(String),
    /// The store refuses accepts for lack of room (why, in the store's words).
    OutOfRoom(String),
}

/// Whether this process should be sent webhooks: not stopping, no task down, and room in the
/// store.
#[derive(Debug, Default)]
pub struct Health {
    stopping: AtomicBool,
    down: Mutex<BTreeMap<Task, String>>,
    out_of_room: Mutex<Option<String>>,
}

impl Health {
    /// Shutdown has begun: `/readyz` says so, and tasks that end now are not restarted.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// `None` when ready; else why not (stopping first, then the first task down).
    pub fn not_ready(&self) -> Option<NotReady> {
        if self.is_stopping() {
            return Some(NotReady::Stopping);
        }
        let down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(why) = down.values().next() {
            return Some(NotReady::TaskDown(why.clone()));
        }
        self.out_of_room.lock().unwrap_or_else(|e| e.into_inner()).clone().map(NotReady::OutOfRoom)
    }

    /// The store refuses accepts for lack of room (`Some(why)`), or takes them again (`None`):
    /// a load balancer sends webhooks to a replica that can take them.
    pub fn out_of_room(&self, why: Option<String>) {
        *self.out_of_room.lock().unwrap_or_else(|e| e.into_inner()) = why;
    }

    fn down(&self, task: Task, why: String) {
        self.down.lock().unwrap_or_else(|e| e.into_inner()).insert(task, why);
    }

    /// Marks `task` healthy; whether it was down.
    fn up(&self, task: Task) -> bool {
        self.down.lock().unwrap_or_else(|e| e.into_inner()).remove(&task).is_some()
    }
}

/// How dying tasks are restarted.
#[derive(Debug, Clone, Copy)]
pub struct Restarts {
    /// The wait before the first restart; it doubles with each death in a row.
    pub first: Duration,
    /// The longest wait between restarts.
    pub max: Duration,
    /// Deaths in a row after which readiness goes down (it stays down until a run lasts
    /// `healthy_after`).
    pub not_ready_after: u32,
    /// A run this long ends a series of deaths.
    pub healthy_after: Duration,
}

impl Default for Restarts {
    /// A task panicking at once every time is restarted after 0.5, 1, 2, 4 s and takes
    /// readiness down at its fifth death, about 8 s after the first.
    fn default() -> Restarts {
        Restarts {
            first: Duration::from_millis(500),
            max: Duration::from_secs(60),
            not_ready_after: 5,
            healthy_after: Duration::from_secs(60),
        }
    }
}

impl Restarts {
    /// The wait before restarting after the `in_a_row`th death in a row (from 1).
    pub fn delay(&self, in_a_row: u32) -> Duration {
        let doublings = in_a_row.saturating_sub(1).min(30);
        self.first.saturating_mul(1 << doublings).min(self.max)
    }
}

/// How a task's run ended, when it was not asked to.
struct Death {
    kind: DeathKind,
    /// With the panic's message or the error: for the log.
    detail: String,
}

/// What `/readyz` may say of a death.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeathKind {
    Panicked,
    /// Returned while nothing asked it to stop.
    Returned,
    /// Returned an error.
    Failed,
    /// Aborted from outside (nothing here aborts a task).
    Cancelled,
}

impl DeathKind {
    fn as_str(self) -> &'static str {
        match self {
            DeathKind::Panicked => "panicked",
            DeathKind::Returned => "returned",
            DeathKind::Failed => "failed",
            DeathKind::Cancelled => "was cancelled",
        }
    }
}

/// A task's run's output: whether it says it failed.
pub trait Ending: Send + 'static {
    fn failure(self) -> Option<String>;
}

impl Ending for () {
    fn failure(self) -> Option<String> {
        None
    }
}

impl<E: std::fmt::Display + Send + 'static> Ending for Result<(), E> {
    fn failure(self) -> Option<String> {
        self.err().map(|e| e.to_string())
    }
}

/// A task that ended (a panic's message included), as its log line says it.
pub fn died(e: JoinError) -> String {
    if !e.is_panic() {
        return "cancelled".to_string();
    }
    let payload = e.into_panic();
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string());
    format!("panicked: {message}")
}

fn death<T: Ending>(ended: Result<T, JoinError>) -> Death {
    match ended {
        Ok(output) => match output.failure() {
            Some(e) => Death { kind: DeathKind::Failed, detail: format!("failed: {e}") },
            None => Death { kind: DeathKind::Returned, detail: "returned".to_string() },
        },
        Err(e) if e.is_panic() => Death { kind: DeathKind::Panicked, detail: died(e) },
        Err(e) => Death { kind: DeathKind::Cancelled, detail: died(e) },
    }
}

/// Runs and watches the long-lived tasks. Each gets the stop signal; [`Health::stop`] says
/// that ends from now on are expected.
pub struct Supervisor {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
    restarts: Restarts,
    watchers: JoinSet<()>,
}

impl Supervisor {
    /// Tasks are told to stop through `stop`; `health` says whether they are up.
    pub fn new(health: Arc<Health>, metrics: Arc<Metrics>, stop: watch::Receiver<bool>) -> Supervisor {
        // The worker's attempts too: they are not restarted, but their deaths are counted.
        metrics.tasks(Task::ALL.map(Task::as_str).into_iter().chain([AttemptPanicked::TASK]));
        Supervisor { health, metrics, stop, restarts: Restarts::default(), watchers: JoinSet::new() }
    }

    /// The same supervisor restarting by `restarts` (tests shorten the waits).
    pub fn with_restarts(self, restarts: Restarts) -> Supervisor {
        Supervisor { restarts, ..self }
    }

    /// Runs `run(stop)` as `task`, and again after each death, until shutdown.
    pub fn restart<F, Fut>(&mut self, task: Task, mut run: F)
    where
        F: FnMut(watch::Receiver<bool>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let watcher = self.watcher(task);
        self.watchers.spawn(async move {
            let mut in_a_row = 0;
            while !watcher.health.is_stopping() {
                let ended = watcher.until_ended(tokio::spawn(run(watcher.stop.clone())), &mut in_a_row).await;
                let Some(death) = watcher.death(ended) else { return };
                in_a_row += 1;
                let delay = watcher.restarts.delay(in_a_row);
                let not_ready = in_a_row >= watcher.restarts.not_ready_after;
                if not_ready {
                    let why = format!(
                        "{} {} {in_a_row} times in a row; restarting every {}",
                        task.as_str(),
                        death.kind.as_str(),
                        humantime::format_duration(delay)
                    );
                    watcher.health.down(task, why);
                }
                let how = &death.detail;
                TaskFailed { task: task.as_str(), how, in_a_row, restart_in: Some(delay), not_ready }
                    .emit(&watcher.metrics);
                let mut stop = watcher.stop.clone();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        });
    }

    /// Watches `handle`, a task that cannot be restarted (a listener): its death takes
    /// readiness down for good.
    pub fn watch<T: Ending>(&mut self, task: Task, handle: JoinHandle<T>) {
        let watcher = self.watcher(task);
        self.watchers.spawn(async move {
            let Some(death) = watcher.death(handle.await) else { return };
            let why = format!("{} {} and cannot be restarted", task.as_str(), death.kind.as_str());
            watcher.health.down(task, why);
            let how = &death.detail;
            TaskFailed { task: task.as_str(), how, in_a_row: 1, restart_in: None, not_ready: true }
                .emit(&watcher.metrics);
        });
    }

    /// Waits until every task has ended: call after [`Health::stop`] and the stop signal.
    pub async fn join(mut self) {
        while self.watchers.join_next().await.is_some() {}
    }

    fn watcher(&self, task: Task) -> Watcher {
        Watcher {
            task,
            health: self.health.clone(),
            metrics: self.metrics.clone(),
            stop: self.stop.clone(),
            restarts: self.restarts,
        }
    }
}

/// What watching one task takes.
struct Watcher {
    task: Task,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
    restarts: Restarts,
}

impl Watcher {
    /// Awaits the run; once it has lasted `healthy_after`, the series of deaths is over and
    /// readiness, if this task took it down, is back.
    async fn until_ended(&self, run: JoinHandle<()>, in_a_row: &mut u32) -> Result<(), JoinError> {
        let healthy = tokio::time::sleep(self.restarts.healthy_after);
        tokio::pin!(healthy, run);
        let mut counted = false;
        loop {
            tokio::select! {
                ended = &mut run => return ended,
                _ = &mut healthy, if !counted => {
                    counted = true;
                    *in_a_row = 0;
                    if self.health.up(self.task) {
                        TaskRecovered { task: self.task.as_str() }.emit(&self.metrics);
                    }
                }
            }
        }
    }

    /// How the run died; `None` if its end was expected (shutdown had begun). A panic is
    /// reported even then.
    fn death<T: Ending>(&self, ended: Result<T, JoinError>) -> Option<Death> {
        let death = death(ended);
        if !self.health.is_stopping() {
            return Some(death);
        }
        if death.kind == DeathKind::Panicked {
            let how = &death.detail;
            TaskFailed { task: self.task.as_str(), how, in_a_row: 1, restart_in: None, not_ready: false }
                .emit(&self.metrics);
        }
        None
    }
}

#[cfg(test)]
mod tests;
