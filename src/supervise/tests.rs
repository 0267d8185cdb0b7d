//! Supervision on paused time: restarts at the backoff's times, readiness down and back, and
//! nothing reported for ends that shutdown asked for.

use super::*;
use crate::telemetry::capture::capture;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// One run of a test task.
type Run = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Waits for a run's start, at most a minute of (paused) time.
async fn next_run(started: &mut mpsc::UnboundedReceiver<(u32, Instant)>) -> (u32, Instant) {
    tokio::time::timeout(Duration::from_secs(60), started.recv()).await.expect("a run starts").expect("runs go on")
}

/// Waits until `check` holds, letting paused time run, for at most `limit` of it.
async fn eventually(what: &str, limit: Duration, check: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct Fixture {
    tasks: Supervisor,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
}

fn fixture(restarts: Restarts) -> Fixture {
    let (health, metrics) = (Arc::new(Health::default()), Arc::new(Metrics::new()));
    let (stop, stopped) = watch::channel(false);
    let tasks = Supervisor::new(health.clone(), metrics.clone(), stopped).with_restarts(restarts);
    Fixture { tasks, health, metrics, stop }
}

impl Fixture {
    fn failures(&self, task: &str) -> String {
        let text = self.metrics.render(0, None);
        let series = format!("pagerhook_task_failures_total{{task=\"{task}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&series)).unwrap_or("absent").to_string()
    }

    async fn shut_down(self) {
        self.health.stop();
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(60), self.tasks.join()).await.expect("every task ends");
    }
}

/// A task whose `n`th run (from 0) `dies(n)`: panics (`Some(true)`), returns (`Some(false)`),
/// or runs until stopped (`None`); each run's start is sent on the channel.
fn task(
    dies: impl Fn(u32) -> Option<bool> + Send + Sync + 'static,
) -> (impl FnMut(watch::Receiver<bool>) -> Run + Send + 'static, mpsc::UnboundedReceiver<(u32, Instant)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut n = 0;
    let run = move |mut stop: watch::Receiver<bool>| {
        let this = n;
        n += 1;
        tx.send((this, Instant::now())).unwrap();
        let death = dies(this);
        Box::pin(async move {
            match death {
                Some(true) => panic!("claim {this} failed"),
                Some(false) => {}
                None => {
                    let _ = stop.wait_for(|s| *s).await;
                }
            }
        }) as Run
    };
    (run, rx)
}

#[tokio::test(start_paused = true)]
async fn a_task_that_panics_is_restarted_after_its_backoff_logged_and_counted() {
    let (_guard, log) = capture();
    let mut f = fixture(Restarts::default());
    assert_eq!(f.failures("delivery_worker"), "0", "exported at zero before any death");
    assert_eq!(f.failures("delivery_attempt"), "0");
    let (run, mut started) = task(|n| (n < 2).then_some(true));
    f.tasks.restart(Task::DeliveryWorker, run);
    let (_, t0) = next_run(&mut started).await;
    let (_, t1) = next_run(&mut started).await;
    let (n, t2) = next_run(&mut started).await;
    assert_eq!((n, t1 - t0, t2 - t1), (2, Duration::from_millis(500), Duration::from_secs(1)), "backoff doubles");
    assert_eq!(f.failures("delivery_worker"), "2");
    assert_eq!(f.health.not_ready(), None, "two deaths in a row stay below not_ready_after");
    let died = log.with("background task died");
    assert_eq!(died.len(), 2, "{died:?}");
    assert_eq!(died[0]["level"], "ERROR");
    assert_eq!(died[0]["task"], "delivery_worker");
    assert_eq!(died[0]["how"], "panicked: claim 0 failed");
    assert_eq!(died[1]["restart_in_ms"], 1000);
    f.shut_down().await;
}

#[tokio::test(start_paused = true)]
async fn a_task_that_keeps_dying_takes_readiness_down_until_a_run_lasts() {
    let (_guard, log) = capture();
    let restarts = Restarts {
        first: Duration::from_secs(1),
        max: Duration::from_secs(4),
        not_ready_after: 3,
        healthy_after: Duration::from_secs(30),
    };
    let mut f = fixture(restarts);
    // Returns at once three times (a loop that ended by mistake), then runs.
    let (run, mut started) = task(|n| (n < 3).then_some(false));
    f.tasks.restart(Task::ConfigWatcher, run);
    for _ in 0..3 {
        next_run(&mut started).await;
    }
    eventually("readiness goes down", Duration::from_secs(10), || f.health.not_ready().is_some()).await;
    let why = "config_watcher returned 3 times in a row; restarting every 4s";
    assert_eq!(f.health.not_ready(), Some(NotReady::TaskDown(why.into())));
    let (n, _) = next_run(&mut started).await;
    assert_eq!(n, 3, "still restarted");
    assert_eq!(f.failures("config_watcher"), "3");
    let back = Instant::now();
    eventually("readiness is back", Duration::from_secs(60), || f.health.not_ready().is_none()).await;
    assert!(Instant::now() - back >= Duration::from_secs(30), "only once the run has lasted healthy_after");
    assert_eq!(log.with("background task running again; ready").len(), 1);
    assert_eq!(log.with("background task died").iter().filter(|l| l["not_ready"] == true).count(), 1);
    f.shut_down().await;
}

#[tokio::test(start_paused = true)]
async fn a_listener_that_ends_takes_readiness_down_for_good() {
    let mut f = fixture(Restarts::default());
    let listener = tokio::spawn(async { Err::<(), _>(std::io::Error::other("accept failed")) });
    f.tasks.watch(Task::WebhookListener, listener);
    eventually("readiness goes down", Duration::from_secs(10), || f.health.not_ready().is_some()).await;
    let why = "webhook_listener failed and cannot be restarted";
    assert_eq!(f.health.not_ready(), Some(NotReady::TaskDown(why.into())));
    assert_eq!(f.failures("webhook_listener"), "1");
    f.shut_down().await;
}

#[tokio::test(start_paused = true)]
async fn ends_that_shutdown_asked_for_are_neither_failures_nor_restarted() {
    let mut f = fixture(Restarts::default());
    let (run, mut started) = task(|_| None);
    f.tasks.restart(Task::Pruner, run);
    let listener = tokio::spawn(async { Ok::<(), std::io::Error>(()) });
    next_run(&mut started).await;
    f.health.stop();
    f.tasks.watch(Task::AdminListener, listener);
    let (health, metrics) = (f.health.clone(), f.metrics.clone());
    f.shut_down().await;
    assert_eq!(health.not_ready(), Some(NotReady::Stopping));
    assert!(started.try_recv().is_err(), "not restarted");
    assert!(metrics
        .render(0, None)
        .lines()
        .filter(|l| l.starts_with("pagerhook_task_failures_total"))
        .all(|l| l.ends_with(" 0")));
}

#[test]
fn the_backoff_doubles_up_to_its_cap() {
    let r = Restarts { first: Duration::from_millis(500), max: Duration::from_secs(60), ..Restarts::default() };
    let delays: Vec<u64> = (1..=10).map(|n| r.delay(n).as_millis() as u64).collect();
    assert_eq!(delays, [500, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]);
    assert_eq!(r.delay(u32::MAX), Duration::from_secs(60));
}

#[test]
fn a_store_out_of_room_takes_readiness_down_until_it_has_room_and_stopping_says_so_first() {
    let health = Health::default();
    assert_eq!(health.not_ready(), None);
    health.out_of_room(Some("3.0 MiB free".into()));
    assert_eq!(health.not_ready(), Some(NotReady::OutOfRoom("3.0 MiB free".into())));
    health.out_of_room(None);
    assert_eq!(health.not_ready(), None);
    health.out_of_room(Some("3.0 MiB free".into()));
    health.stop();
    assert_eq!(health.not_ready(), Some(NotReady::Stopping));
}
