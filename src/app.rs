//! Startup: wires config, queue, sources, worker and HTTP together, the same way for
//! `serve` and for the integration tests (which bind port 0).

mod room;
mod silence;

use crate::config::{Config, Durability, StorageBackend, StorageConfig};
use crate::delivery::conditions::ConditionWatch;
use crate::delivery::Worker;
use crate::http::{self, AdminState, Servers};
use crate::ingest::Pipeline;
use crate::pagerduty;
use crate::queue::{self, DeadDropped, Queue, QueueError, Retention, Role};
use crate::registry::Sources;
use crate::reload::{self, Fingerprint, Live, ReloadError};
use crate::source::{AwsFetch, HttpsFetch};
use crate::supervise::{Health, Supervisor, Task};
use crate::telemetry::events::{ConfigReloadFailed, ConfigReloaded, DeadLettersDropped};
use crate::telemetry::{InternalEvent, Metrics};
use anyhow::Context as _;
use std::net::TcpListener;
use std::sync::Arc;
use tokio::sync::{watch, Notify};

/// Where secrets referenced as `env:NAME` are looked up.
pub type EnvFn = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// How to run.
#[derive(Clone)]
pub struct Options {
    /// Log events instead of sending them, and record them as delivered.
    pub dry_run: bool,
    /// The environment for `env:` secrets when the config is reloaded: the process's, or
    /// the one a test injected.
    pub env: EnvFn,
}

impl Default for Options {
    fn default() -> Options {
        Options { dry_run: false, env: Arc::new(Config::process_env) }
    }
}

/// A running pagerhook.
pub struct App {
    hooks_port: u16,
    admin_port: u16,
    servers: Servers,
    /// Runs the worker, the config watcher, the two pruners, and watches the listeners.
    tasks: Supervisor,
    stop_tasks: watch::Sender<bool>,
    health: Arc<Health>,
    queue: Arc<dyn Queue>,
    reloader: Reloader,
    dead_letters: DeadLetterPolicy,
}

/// Everything a reload needs, shared by SIGHUP, the file watcher and [`App::reload`].
#[derive(Clone)]
struct Reloader {
    path: std::path::PathBuf,
    env: EnvFn,
    aws: Arc<dyn AwsFetch>,
    sources: Arc<Live<Sources>>,
    metrics: Arc<Metrics>,
    /// Serialises reloads, and holds the files' state as of the last attempt.
    seen: Arc<tokio::sync::Mutex<Fingerprint>>,
}

impl Reloader {
    /// Loads, validates and compiles the config file, then swaps the sources in; on error
    /// the running config stays.
    async fn reload(&self) -> Result<(), ReloadError> {
        let mut seen = self.seen.lock().await;
        let (path, env, aws) = (self.path.clone(), self.env.clone(), self.aws.clone());
        let prepared =
            tokio::task::spawn_blocking(move || reload::prepare(&path, &*env, aws)).await.map_err(ReloadError::Task)?;
        match prepared {
            Ok((cfg, sources, warnings)) => {
                *seen = Fingerprint::of(&cfg);
                for w in warnings.iter().chain(&cfg.warnings) {
                    tracing::warn!("{w}");
                }
                self.sources.store(sources);
                self.metrics.configured(cfg.sources.iter().map(|s| s.name.as_str()));
                ConfigReloaded { config: &self.path.display(), sources: cfg.sources.len() }.emit(&self.metrics);
                Ok(())
            }
            Err(e) => {
                // Watch the broken files as they are now, so the error is logged once, not every poll.
                *seen = seen.refreshed();
                ConfigReloadFailed { config: &self.path.display(), error: &e }.emit(&self.metrics);
                Err(e)
            }
        }
    }

    /// Reloads whenever the config or a mapping file changes.
    async fn watch(self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(reload::POLL);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let changed = {
                let seen = self.seen.lock().await;
                *seen != seen.refreshed()
            };
            if changed {
                let _ = self.reload().await;
            }
        }
    }
}

/// The SQLite store's pid file (`data/pagerhook.db` → `data/pagerhook.pid`), locked by the
/// `serve` that owns the store for as long as it runs: a second `serve` on the same file would
/// release the first one's leases and send its events a second time. The lock goes with the
/// process (even on SIGKILL); the pid inside is for `kill -HUP $(cat data/pagerhook.pid)`.
/// `None` with PostgreSQL, where several replicas share the store by design.
pub fn lock_store(cfg: &Config) -> anyhow::Result<Option<StoreLock>> {
    let StorageBackend::Sqlite { path } = &cfg.storage.backend else { return Ok(None) };
    let pid_path = path.with_extension("pid");
    if let Some(dir) = pid_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // The store's folder, made here first: for the owner alone, as the store makes it.
        crate::queue::private_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A serve that stops removes the file while it holds the lock: one that opened the file
    // just before may then lock a file no longer at the path, and must open it again. Each
    // round means another serve stopped meanwhile, so a few are plenty.
    for _ in 0..8 {
        if let Some(file) = lock_pid_file(path, &pid_path)? {
            return Ok(Some(StoreLock { file, path: pid_path }));
        }
    }
    anyhow::bail!("{} keeps being replaced by other pagerhook serves: stop them first", pid_path.display())
}

/// The pid file at `pid_path`, opened (or created), locked and holding our pid; `None` if it
/// was removed from the path before we locked it.
fn lock_pid_file(store: &std::path::Path, pid_path: &std::path::Path) -> anyhow::Result<Option<std::fs::File>> {
    use std::io::{Read, Seek, Write};
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(pid_path)
        .with_context(|| format!("opening {}", pid_path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            anyhow::bail!(
                "another pagerhook serve (pid {}) is already running on {} (it holds {}): stop it first, or give this one its own [storage] path",
                pid.trim(),
                store.display(),
                pid_path.display()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", pid_path.display()));
        }
    }
    if !same_file(&file, pid_path) {
        return Ok(None);
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    Ok(Some(file))
}

#[cfg(unix)]
fn same_file(file: &std::fs::File, path: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_: &std::fs::File, path: &std::path::Path) -> bool {
    path.exists()
}

/// The locked pid file of a running `serve`; dropping it (a clean exit) removes the file, so
/// no stale pid is left for a `kill -HUP $(cat …)` to hit another process.
pub struct StoreLock {
    file: std::fs::File,
    path: std::path::PathBuf,
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        // Removed while still locked (see `lock_store`); the lock goes when `file` closes.
        if same_file(&self.file, &self.path) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Opens the configured store, as the deliverer (`serve`) or as a tool beside it.
pub async fn open_queue(cfg: &Config, role: Role) -> anyhow::Result<Arc<dyn Queue>> {
    let settings = store_settings(&cfg.storage);
    let opened = queue::open(&settings, role).await.with_context(|| format!("opening {}", settings.backend.name()))?;
    Ok(opened.store)
}

/// The store's settings, from `[storage]`.
fn store_settings(storage: &StorageConfig) -> queue::Settings {
    let backend = match &storage.backend {
        StorageBackend::Sqlite { path } => queue::Backend::Sqlite { path: path.clone() },
        StorageBackend::Postgres { url } => queue::Backend::Postgres { url: url.clone() },
    };
    let durability = match storage.durability {
        Durability::Fsync => queue::Durability::Fsync,
        Durability::Process => queue::Durability::Process,
    };
    let headroom = queue::Headroom { min_free_bytes: storage.min_free_bytes, max_bytes: storage.max_bytes };
    queue::Settings { backend, durability, headroom }
}

impl App {
    /// Binds the configured addresses and starts.
    pub async fn start(cfg: Config, opts: Options) -> anyhow::Result<App> {
        let hooks = bind(cfg.server.listen)?;
        let admin = bind(cfg.server.admin_listen)?;
        App::start_on(cfg, opts, hooks, admin).await
    }

    /// Starts on listeners the caller bound (tests bind `127.0.0.1:0`).
    pub async fn start_on(cfg: Config, opts: Options, hooks: TcpListener, admin: TcpListener) -> anyhow::Result<App> {
        App::start_with_aws(cfg, opts, hooks, admin, Arc::new(HttpsFetch::new())).await
    }

    /// Test seam: [`App::start_on`] with SNS sources fetching certificates and confirming
    /// subscriptions through `aws`, since no config can point them anywhere but AWS.
    pub async fn start_with_aws(
        cfg: Config,
        opts: Options,
        hooks: TcpListener,
        admin: TcpListener,
        aws: Arc<dyn AwsFetch>,
    ) -> anyhow::Result<App> {
        let (sources, warnings) = Sources::build_with(&cfg, aws.clone())?;
        let metrics = Arc::new(Metrics::new());
        metrics.configured(cfg.sources.iter().map(|s| s.name.as_str()));
        let sources = Arc::new(Live::new(sources));
        let reloader = Reloader {
            path: cfg.path.clone(),
            env: opts.env.clone(),
            aws,
            sources: sources.clone(),
            metrics: metrics.clone(),
            seen: Arc::new(tokio::sync::Mutex::new(Fingerprint::of(&cfg))),
        };
        for w in warnings.iter().chain(&cfg.warnings) {
            tracing::warn!("{w}");
        }
        let queue = open_queue(&cfg, Role::Deliverer).await?;
        let wake = Arc::new(Notify::new());
        let client = pagerduty::Client::new(&cfg.pagerduty.events_url, cfg.pagerduty.timeout, opts.dry_run)?;
        let (stop_tasks, stop_rx) = watch::channel(false);
        let health = Arc::new(Health::default());
        let mut tasks = Supervisor::new(health.clone(), metrics.clone(), stop_rx);
        let worker = Worker::new(queue.clone(), client, cfg.delivery.clone(), wake.clone(), metrics.clone())
            .paging(&cfg.pagerduty);
        tasks.restart(Task::DeliveryWorker, move |stop| worker.clone().run(stop));
        let watcher = reloader.clone();
        tasks.restart(Task::ConfigWatcher, move |stop| watcher.clone().watch(stop));
        let (pruned, retention) = (queue.clone(), cfg.storage.retention);
        tasks.restart(Task::Pruner, move |stop| prune_periodically(pruned.clone(), retention, stop));
        let dead_letters = DeadLetterPolicy {
            queue: queue.clone(),
            metrics: metrics.clone(),
            retention: cfg.storage.dead_letter_retention,
            max_bytes: cfg.storage.dead_letter_max_bytes,
        };
        let policy = dead_letters.clone();
        tasks.restart(Task::DeadLetterPruner, move |stop| policy.clone().apply_periodically(stop));
        let (room_said, room_heard) = watch::channel(None);
        let room = room::RoomWatch {
            queue: queue.clone(),
            health: health.clone(),
            metrics: metrics.clone(),
            said: Arc::new(room_said),
        };
        tasks.restart(Task::RoomWatcher, move |stop| room.clone().run(stop));
        let judge = ConditionWatch::new(queue.clone(), metrics.clone(), &cfg, room_heard);
        tasks.restart(Task::ConditionWatcher, move |stop| judge.clone().run(stop));
        let indexed = queue.clone();
        tasks.restart(Task::SearchIndexer, move |stop| index_for_search(indexed.clone(), stop));
        let silence =
            silence::SilenceWatch { queue: queue.clone(), sources: sources.clone(), metrics: metrics.clone() };
        tasks.restart(Task::SilenceWatcher, move |stop| silence.clone().run(stop));
        let hooks_port = hooks.local_addr()?.port();
        let admin_port = admin.local_addr()?.port();
        let cpu = crate::ingest::Cpu::new(cfg.server.workers);
        let pipeline = Pipeline::new(sources, metrics, queue.clone(), wake, cpu);
        let admin_state = AdminState {
            queue: queue.clone(),
            pipeline: pipeline.clone(),
            admin_token: cfg.server.admin_token.as_ref().map(crate::secret::SecretDigest::of),
            health: health.clone(),
            dry_run: opts.dry_run,
        };
        let (servers, running) = http::start(pipeline, &cfg.server, hooks, admin_state, admin)?;
        tasks.watch(Task::WebhookListener, running.hooks);
        tasks.watch(Task::AdminListener, running.admin);
        tracing::info!(
            listen = %cfg.server.listen.ip(), port = hooks_port, admin_port,
            sources = cfg.sources.len(), dry_run = opts.dry_run, events_url = %cfg.pagerduty.events_url,
            store = %store_settings(&cfg.storage).backend.describe(),
            "pagerhook ready"
        );
        Ok(App { hooks_port, admin_port, servers, tasks, stop_tasks, health, queue, reloader, dead_letters })
    }

    /// The webhook listener's port.
    pub fn port(&self) -> u16 {
        self.hooks_port
    }

    /// The admin listener's port.
    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// Reloads the config file now (what SIGHUP does); on error the running config stays.
    pub async fn reload(&self) -> Result<(), ReloadError> {
        self.reloader.reload().await
    }

    /// Drops the dead letters past `storage.dead_letter_retention` or over a source's
    /// `storage.dead_letter_max_bytes` now (what runs every minute), logging and counting them.
    pub async fn prune_dead_letters(&self) -> Result<Vec<DeadDropped>, QueueError> {
        self.dead_letters.apply().await
    }

    /// The queue (tests inspect it).
    pub fn queue(&self) -> &Arc<dyn Queue> {
        &self.queue
    }

    /// Graceful stop: refuse new requests, finish in-flight ones, let running delivery
    /// attempts end; whatever is still queued waits for the next start.
    pub async fn stop(self) {
        self.health.stop();
        self.servers.hooks.stop(true).await;
        self.servers.admin.stop(true).await;
        let _ = self.stop_tasks.send(true);
        self.tasks.join().await;
    }

    /// Runs until SIGINT or SIGTERM, then stops gracefully; SIGHUP reloads the config.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate())?;
            let mut hup = signal(SignalKind::hangup())?;
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => break,
                    _ = term.recv() => break,
                    _ = hup.recv() => {
                        tracing::info!("SIGHUP: reloading the config");
                        let _ = self.reload().await;
                    }
                }
            }
        }
        #[cfg(not(unix))]
        tokio::signal::ctrl_c().await?;
        tracing::info!("shutting down: finishing in-flight requests and deliveries");
        self.stop().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Binds with `SO_REUSEADDR`, so a restart right after a crash is not refused the port while
/// the dead process's connections sit in TIME_WAIT.
fn bind(addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() };
    let listener = socket
        .and_then(|s| {
            s.set_reuseaddr(true)?;
            s.bind(addr)?;
            s.listen(1024)
        })
        .with_context(|| format!("binding {addr}"))?;
    Ok(listener.into_std()?)
}

/// What is kept of dead letters: they are never delivered and never pruned with the retention,
/// so a verified sender whose payloads fail their mapping could otherwise fill the disk.
#[derive(Clone)]
struct DeadLetterPolicy {
    queue: Arc<dyn Retention>,
    metrics: Arc<Metrics>,
    retention: std::time::Duration,
    max_bytes: u64,
}

impl DeadLetterPolicy {
    /// Drops what is past the policy, logging and counting it per source and reason.
    async fn apply(&self) -> Result<Vec<DeadDropped>, QueueError> {
        let before = crate::queue::now_millis() - self.retention.as_millis() as i64;
        let dropped = self.queue.prune_dead(before, self.max_bytes).await?;
        for d in &dropped {
            let (source, reason, letters, bytes) = (&d.source, d.reason.as_str(), d.letters, d.bytes);
            DeadLettersDropped { source, reason, letters, bytes }.emit(&self.metrics);
        }
        Ok(dropped)
    }

    /// [`DeadLetterPolicy::apply`] at start and then every minute: a flood of dead letters is
    /// cut back within a minute, not an hour.
    async fn apply_periodically(self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            if let Err(e) = self.apply().await {
                tracing::warn!(error = %e, "dropping dead letters failed");
            }
        }
    }
}

/// How long the search indexer waits once caught up: a search scans what came since (the
/// events of about this long), so a short wait keeps that scan small; a round with nothing
/// to index is one indexed lookup.
const INDEX_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps the search index caught up (`queue::search`): batch after batch while events wait,
/// then every [`INDEX_EVERY`]. A failed round is logged and tried again on the next tick: a
/// search meanwhile scans the events not yet indexed, so nothing is missed, only slower.
async fn index_for_search(queue: Arc<dyn queue::Inspect>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(INDEX_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        loop {
            match queue.index_for_search(queue::SEARCH_BATCH).await {
                Ok(n) if n == queue::SEARCH_BATCH => tokio::task::yield_now().await,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "indexing events for search failed");
                    break;
                }
            }
        }
    }
}

/// Applies `storage.retention` once at start and then hourly.
async fn prune_periodically(
    queue: Arc<dyn Retention>,
    retention: std::time::Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let before = crate::queue::now_millis() - retention.as_millis() as i64;
        match queue.prune(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "pruned records older than storage.retention"),
            Err(e) => tracing::warn!(error = %e, "pruning failed"),
        }
    }
}
