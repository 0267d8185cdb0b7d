//! The worker on paused time, with a scripted PagerDuty; and how it reads a 202.

use super::inputs::{FixedJitter, TokioClock};
use super::*;
use crate::event::{AlertDraft, ChangeDraft, Event, RoutingKey};
use crate::queue::{Durability, EventState, InboundStatus, NewInbound, Queue, QueueError, Role, SqliteQueue};
use crate::secret::Secret;
use async_trait::async_trait;
use std::collections::VecDeque;
use std::sync::Mutex;

/// Where the tests' clock starts: any fixed time, so that every run records the same times.
const T0: Millis = 1_700_000_000_000;

/// A PagerDuty that answers from a script (then 202) and notes what it was sent, and when by
/// the worker's clock.
struct Scripted {
    clock: TokioClock,
    replies: Mutex<VecDeque<Response>>,
    sent: Mutex<Vec<(Millis, String, String)>>,
    /// The body of every request, in order.
    bodies: Mutex<Vec<serde_json::Value>>,
    /// How long each answer takes, on tokio's time.
    slow: Mutex<Duration>,
    /// Whether this stands for `serve --dry-run`'s client.
    dry_run: std::sync::atomic::AtomicBool,
}

impl Scripted {
    /// `(time, dedup_key, action)` of every request, in order.
    fn sent(&self) -> Vec<(Millis, String, String)> {
        self.sent.lock().unwrap().clone()
    }
}

#[async_trait]
impl Upstream for Arc<Scripted> {
    async fn send(&self, event: &Event) -> Response {
        let key = event.dedup_key().map(|k| k.as_str().to_string()).unwrap_or_default();
        let action = event.action().map(|a| a.as_str().to_string()).unwrap_or_default();
        self.sent.lock().unwrap().push((self.clock.now(), key, action));
        self.bodies.lock().unwrap().push(serde_json::from_slice(&event.wire_json()).unwrap());
        let slow = *self.slow.lock().unwrap();
        tokio::time::sleep(slow).await;
        self.replies.lock().unwrap().pop_front().unwrap_or_else(|| status(202, None))
    }

    fn is_dry_run(&self) -> bool {
        self.dry_run.load(std::sync::atomic::Ordering::Relaxed)
    }
}

fn status(code: u16, retry_after: Option<Duration>) -> Response {
    Response::Status { code, message: "m".into(), retry_after, status: None, dedup_key: None }
}

/// The defaults of `[delivery]`, but for a 1 s first backoff, and supersede off: these tests
/// queue a trigger and its resolve together to see the order they go in.
fn defaults() -> DeliveryConfig {
    DeliveryConfig {
        concurrency: 32,
        initial_backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(300),
        max_age: Duration::from_secs(24 * 3600),
        per_key_rate: 120,
        per_key_burst: 60,
        lease: Duration::from_secs(15),
        supersede: false,
    }
}

/// A worker on a fresh SQLite queue, on tokio's (paused) time from [`T0`], with the jitter
/// fixed at its maximum, sending to a PagerDuty answering `script` and then 202.
struct Bench {
    queue: Arc<dyn Queue>,
    worker: Worker,
    pd: Arc<Scripted>,
    clock: TokioClock,
    metrics: Arc<Metrics>,
    dir: tempfile::TempDir,
}

impl Bench {
    fn new(cfg: DeliveryConfig, script: impl IntoIterator<Item = Response>) -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let queue: Arc<dyn Queue> =
            Arc::new(SqliteQueue::open(&dir.path().join("q.db"), Durability::Fsync, Role::Deliverer).unwrap());
        let clock = TokioClock::starting_at(T0);
        let pd = Arc::new(Scripted {
            clock,
            replies: Mutex::new(script.into_iter().collect()),
            sent: Mutex::new(Vec::new()),
            bodies: Mutex::new(Vec::new()),
            slow: Mutex::new(Duration::ZERO),
            dry_run: std::sync::atomic::AtomicBool::new(false),
        });
        let metrics = Arc::new(Metrics::new());
        let worker = Worker::new(queue.clone(), pd.clone(), cfg, Arc::new(Notify::new()), metrics.clone())
            .with_clock(clock)
            .with_jitter(FixedJitter(1.0));
        Bench { queue, worker, pd, clock, metrics, dir }
    }

    /// The stored lease of every pending event, read beside the queue as another process would.
    fn leases(&self) -> Vec<Millis> {
        let db = rusqlite::Connection::open(self.dir.path().join("q.db")).unwrap();
        let mut leases = db.prepare("SELECT lease_until FROM events WHERE state = 'pending' ORDER BY id").unwrap();
        leases.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
    }

    /// Accepts a webhook that produced `events`, now.
    async fn accept(&self, events: Vec<Event>) {
        let inbound =
            NewInbound::new("test", self.clock.now(), bytes::Bytes::from_static(b"{}"), InboundStatus::Mapped);
        self.queue.accept(inbound, events).await.unwrap();
    }

    /// Steps the worker the way its loop goes, tokio's time jumping to each next due event or
    /// free slot, until nothing is left to do; every outcome, in order.
    async fn settle(&self) -> Vec<(i64, Outcome)> {
        let mut outcomes = Vec::new();
        for _ in 0..1000 {
            let (round, paced_until) = self.worker.drain_paced().await;
            if !round.is_empty() {
                outcomes.extend(round);
                continue;
            }
            let now = self.clock.now();
            match self.queue.next_due(now).await.unwrap().into_iter().chain(paced_until).min() {
                Some(due) => tokio::time::advance(Duration::from_millis((due - now) as u64)).await,
                None => return outcomes,
            }
        }
        panic!("the worker did not settle in 1000 rounds: {outcomes:?}");
    }

    /// `(dedup_key, state)` of every event, oldest first.
    async fn states(&self) -> Vec<(String, String)> {
        let rows = self.queue.recent(100).await.unwrap();
        rows.into_iter().rev().map(|e| (e.dedup_key.unwrap_or_default(), e.state.to_string())).collect()
    }
}

fn trigger(n: u32) -> Event {
    alert("trigger", n)
}

fn alert(action: &str, n: u32) -> Event {
    let key = RoutingKey::parse(Secret::new("0123456789abcdef0123456789abcdef")).unwrap();
    let draft = AlertDraft {
        action: action.into(),
        dedup_key: Some(format!("n-{n}")),
        summary: Some(format!("event {n}")),
        source: Some("test".into()),
        ..AlertDraft::default()
    };
    Event::alert(key, draft).unwrap()
}

fn change(n: u32) -> Event {
    let key = RoutingKey::parse(Secret::new("0123456789abcdef0123456789abcdef")).unwrap();
    Event::change(key, ChangeDraft { summary: Some(format!("change {n}")), ..ChangeDraft::default() }).unwrap()
}

/// An idle worker (its last claim found less than it had room for) claims again when an
/// attempt ends only if that could make more claimable: an event with a lane may have a
/// successor waiting in it, a retried one is due again. A delivered change event frees only its
/// slot, which the idle worker was not short of: claiming then found nothing, every time, and
/// at moderate rates made that empty claim and its idle-time query a third of the writer's work.
#[tokio::test(start_paused = true)]
async fn an_idle_worker_does_not_claim_again_for_an_attempt_that_can_free_nothing() {
    let _stepped = stepped();
    let b = Bench::new(defaults(), []);
    b.accept(vec![change(1)]).await;
    // Room for two: the first claim, finding one event, is short and idles the worker.
    let (held, wake, stop, run) = held_worker(&b, 2, 10, None);
    until("the change event is delivered", || b.pd.sent().len() == 1 && b.leases().is_empty()).await;
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(held.claims.load(Ordering::SeqCst), 1, "no claim after a delivered change event");
    // A delivered alert can free its lane: once its attempt ends, the worker looks again.
    b.accept(vec![trigger(2)]).await;
    wake.notify_one();
    until("the alert is delivered", || b.pd.sent().len() == 2 && b.leases().is_empty()).await;
    until("the worker claims after the alert's attempt", || held.claims.load(Ordering::SeqCst) == 3).await;
    stop.send(true).unwrap();
    run.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_429_holds_back_every_event_for_that_routing_key_until_retry_after() {
    let b = Bench::new(defaults(), [status(429, Some(Duration::from_secs(2)))]);
    b.accept(vec![trigger(1)]).await;
    assert_eq!(b.worker.drain().await[0].1, Outcome::Retried);
    // Another incident on the same routing key, accepted while the key is throttled.
    b.accept(vec![trigger(2)]).await;
    assert!(b.worker.drain().await.is_empty(), "the key is closed: nothing is claimed");
    tokio::time::advance(Duration::from_millis(1999)).await;
    assert!(b.worker.drain().await.is_empty(), "nothing goes before Retry-After");
    b.settle().await;
    let sent = b.pd.sent();
    assert_eq!(sent[0], (T0, "n-1".into(), "trigger".into()));
    let mut after: Vec<_> = sent[1..].iter().map(|(at, key, _)| (*at - T0, key.as_str())).collect();
    after.sort();
    // The key reopens with one event (the older), then the steady rate ((60 s + margin) / 120
    // apart): no burst.
    assert_eq!(after, vec![(2000, "n-1"), (2517, "n-2")], "nothing goes before the 429's Retry-After ends");
}

#[tokio::test(start_paused = true)]
async fn a_storm_on_one_routing_key_is_paced_and_repeated_triggers_collapse() {
    // 60 a minute, burst 2: two at once, then one about every second.
    let b = Bench::new(DeliveryConfig { per_key_rate: 60, per_key_burst: 2, ..defaults() }, []);
    for n in 1..=4 {
        b.accept(vec![trigger(n)]).await;
    }
    let first = b.worker.drain().await;
    let outcomes: Vec<_> = first.iter().map(|(_, o)| o.clone()).collect();
    assert_eq!(outcomes, [Outcome::Delivered, Outcome::Delivered], "the others are not claimed before their slot");
    // While the key waits, the same alert firing again and again is one pending trigger.
    for _ in 0..5 {
        b.accept(vec![trigger(4)]).await;
    }
    b.settle().await;
    let sent: Vec<_> = b.pd.sent().into_iter().map(|(at, key, _)| (at - T0, key)).collect();
    // One every (60 s + margin) / 60 = 1033.3 ms.
    let expected = [(0, "n-1"), (0, "n-2"), (1034, "n-3"), (2067, "n-4")];
    assert_eq!(sent, expected.map(|(at, key)| (at, key.to_string())), "one request per incident, paced");
    let n4: Vec<_> = b.states().await.into_iter().filter(|(key, _)| key == "n-4").map(|(_, s)| s).collect();
    assert_eq!(n4.iter().filter(|s| *s == "delivered").count(), 1, "{n4:?}");
    assert_eq!(n4.iter().filter(|s| *s == "collapsed").count(), 5, "{n4:?}");
}

/// A dry run sends nothing to PagerDuty, so PagerDuty's rate limit is no reason to hold it:
/// the storm above goes at once, each event recorded as a dry run.
#[tokio::test(start_paused = true)]
async fn a_dry_run_is_not_paced() {
    let b = Bench::new(DeliveryConfig { per_key_rate: 60, per_key_burst: 2, ..defaults() }, []);
    b.pd.dry_run.store(true, std::sync::atomic::Ordering::Relaxed);
    for n in 1..=6 {
        b.accept(vec![trigger(n)]).await;
    }
    let outcomes: Vec<_> = b.worker.drain().await.into_iter().map(|(_, o)| o).collect();
    assert_eq!(outcomes, vec![Outcome::DryRun; 6]);
    assert!(b.pd.sent().iter().all(|(at, _, _)| *at == T0), "{:?}", b.pd.sent());
}

/// With `delivery.supersede` (the default), a trigger whose resolve arrived before it was sent
/// goes nowhere, and neither does the resolve: both are `superseded` and counted.
#[tokio::test(start_paused = true)]
async fn a_trigger_resolved_before_it_was_sent_is_not_sent_and_is_counted() {
    let b = Bench::new(DeliveryConfig { supersede: true, ..defaults() }, []);
    b.accept(vec![trigger(1), alert("resolve", 1), trigger(2)]).await;
    let outcomes = b.settle().await;
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    let sent: Vec<_> = b.pd.sent().into_iter().map(|(_, key, action)| (key, action)).collect();
    assert_eq!(sent, [("n-2".to_string(), "trigger".to_string())]);
    let states = b.states().await;
    assert_eq!(states[..2], [("n-1".into(), "superseded".into()), ("n-1".into(), "superseded".into())]);
    let metrics = b.metrics.render(0, None);
    assert!(metrics.contains("pagerhook_events_superseded_total 2"), "{metrics}");
}

#[tokio::test(start_paused = true)]
async fn server_errors_back_off_doubling_and_the_resolve_waits_for_its_trigger() {
    let b = Bench::new(defaults(), [status(500, None), status(503, None)]);
    b.accept(vec![trigger(1), alert("resolve", 1)]).await;
    let outcomes: Vec<_> = b.settle().await.into_iter().map(|(_, o)| o).collect();
    assert_eq!(outcomes, [Outcome::Retried, Outcome::Retried, Outcome::Delivered, Outcome::Delivered]);
    let sent: Vec<_> = b.pd.sent().into_iter().map(|(at, _, action)| (at - T0, action)).collect();
    // Jitter fixed at 1: the full 1 s, then 2 s.
    let expected = [(0, "trigger"), (1000, "trigger"), (3000, "trigger"), (3000, "resolve")];
    assert_eq!(sent, expected.map(|(at, action)| (at, action.to_string())));
}

#[tokio::test(start_paused = true)]
async fn an_event_whose_next_try_would_pass_max_age_is_dead_lettered() {
    let b =
        Bench::new(DeliveryConfig { max_age: Duration::from_secs(5), ..defaults() }, (0..9).map(|_| status(503, None)));
    b.accept(vec![trigger(1)]).await;
    let outcomes: Vec<_> = b.settle().await.into_iter().map(|(_, o)| o).collect();
    // Tries at 0, 1 s and 3 s; the next would be at 7 s.
    assert_eq!(outcomes, [Outcome::Retried, Outcome::Retried, Outcome::DeadLettered]);
    let dead = b.queue.recent(1).await.unwrap().remove(0);
    assert_eq!(dead.state, EventState::Dead);
    assert_eq!(dead.last_error.as_deref(), Some("gave up after 3 attempts over max_age: 503: m"));
}

/// PagerDuty's documented 400 names the fields it refused; a trigger that earned it is sent
/// again at once as the smallest valid event, so that someone is paged about it.
#[tokio::test(start_paused = true)]
async fn a_400_on_a_trigger_is_retried_once_as_a_minimal_event() {
    let refused = Response::Status {
        code: 400,
        message: "Event object is invalid: 'links' is invalid".into(),
        retry_after: None,
        status: Some("invalid event".into()),
        dedup_key: None,
    };
    let b = Bench::new(defaults(), [refused]);
    let mut draft = AlertDraft {
        action: "trigger".into(),
        dedup_key: Some("n-1".into()),
        summary: Some("disk full".into()),
        source: Some("db-1".into()),
        severity: Some("critical".into()),
        component: Some("postgres".into()),
        ..AlertDraft::default()
    };
    draft.custom_details = Some(serde_json::json!({"big": "x"}));
    let key = RoutingKey::parse(Secret::new("0123456789abcdef0123456789abcdef")).unwrap();
    b.accept(vec![Event::alert(key, draft).unwrap()]).await;
    assert_eq!(b.worker.drain().await[0].1, Outcome::Delivered);
    let bodies = b.pd.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2, "the original, then the minimal event: {bodies:?}");
    let minimal = &bodies[1];
    assert_eq!(minimal["dedup_key"], "n-1");
    assert_eq!(minimal["event_action"], "trigger");
    let payload = minimal["payload"].as_object().unwrap();
    let mut fields: Vec<_> = payload.keys().map(String::as_str).collect();
    fields.sort();
    assert_eq!(fields, ["custom_details", "severity", "source", "summary"]);
    assert_eq!(payload["summary"], "disk full");
    assert_eq!(payload["source"], "db-1");
    assert_eq!(payload["severity"], "critical");
    let error = payload["custom_details"]["pagerduty_error"].as_str().unwrap();
    assert!(error.contains("'links' is invalid"), "{error}");
    assert!(minimal.get("links").is_none());
    let stored = b.queue.recent(1).await.unwrap().remove(0);
    assert_eq!(stored.state, EventState::Delivered);
}

/// A 400 to the minimal event too: the trigger is dead, after exactly two requests.
#[tokio::test(start_paused = true)]
async fn a_trigger_whose_minimal_event_is_refused_too_is_dead_lettered() {
    let b = Bench::new(defaults(), [status(400, None), status(400, None)]);
    b.accept(vec![trigger(1)]).await;
    assert_eq!(b.settle().await, [(1, Outcome::DeadLettered)]);
    assert_eq!(b.pd.sent().len(), 2);
}

/// Only a 400 is final: a proxy's 403 (or a 301, a 404) is retried with backoff.
#[tokio::test(start_paused = true)]
async fn a_403_then_a_202_is_delivered() {
    let b = Bench::new(defaults(), [status(403, None)]);
    b.accept(vec![trigger(1)]).await;
    let outcomes: Vec<_> = b.settle().await.into_iter().map(|(_, o)| o).collect();
    assert_eq!(outcomes, [Outcome::Retried, Outcome::Delivered]);
    let sent: Vec<_> = b.pd.sent().into_iter().map(|(at, _, _)| at - T0).collect();
    assert_eq!(sent, [0, 1000], "retried after the backoff");
    assert!(b.metrics.render(0, None).contains("pagerhook_upstream_unexpected_total{status=\"403\"} 1"));
}

/// Sending an acknowledge or resolve late is always safe: it never expires at max_age.
#[tokio::test(start_paused = true)]
async fn a_resolve_past_max_age_is_still_sent() {
    let b =
        Bench::new(DeliveryConfig { max_age: Duration::from_secs(5), ..defaults() }, (0..5).map(|_| status(503, None)));
    b.accept(vec![alert("resolve", 1)]).await;
    let outcomes: Vec<_> = b.settle().await.into_iter().map(|(_, o)| o).collect();
    assert_eq!(outcomes.last(), Some(&Outcome::Delivered), "{outcomes:?}");
    assert!(!outcomes.contains(&Outcome::DeadLettered), "{outcomes:?}");
    let (last, _, action) = b.pd.sent().pop().unwrap();
    assert_eq!(action, "resolve");
    assert!(last - T0 > 5000, "sent past max_age: {last}");
}

fn answer(code: u16, status: &str, key: Option<&str>) -> Response {
    Response::Status {
        code,
        message: "m".into(),
        retry_after: None,
        status: Some(status.into()),
        dedup_key: key.map(Into::into),
    }
}

#[test]
fn a_202_under_another_dedup_key_or_status_is_a_warning() {
    assert!(answer_problems(Some("k"), &answer(202, "success", Some("k"))).is_empty());
    assert!(answer_problems(None, &answer(202, "success", None)).is_empty(), "change events get no key");
    let p = answer_problems(Some("k"), &answer(202, "success", Some("other")));
    assert_eq!(p.len(), 1);
    assert!(p[0].contains("\"other\", not the \"k\" sent"), "{p:?}");
    assert_eq!(answer_problems(Some("k"), &answer(202, "queued", Some("k"))).len(), 1);
    assert!(answer_problems(Some("k"), &answer(400, "invalid event", Some("x"))).is_empty(), "only 2xx are read");
}

/// Keeps tokio's paused clock from jumping to the next timer whenever the runtime waits (on
/// the queue's thread, say): only `tokio::time::advance` moves it while this lives. A running
/// `spawn_blocking` task is what tokio counts as a reason not to auto-advance.
struct Stepped(#[allow(dead_code)] std::sync::mpsc::Sender<()>);

fn stepped() -> Stepped {
    let (hold, held) = std::sync::mpsc::channel::<()>();
    tokio::task::spawn_blocking(move || held.recv().ok());
    Stepped(hold)
}

/// Waits, at most 10 s of real time, until `check` holds: for what the worker does on the
/// queue's thread, which paused time does not wait for.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::task::yield_now().await;
    }
}

/// A worker with a 3 s lease, on stepped time, whose one event is being sent to a PagerDuty
/// that answers in `slow`; the handle yields the attempt's outcome.
async fn slow_attempt(slow: Duration) -> (Stepped, Bench, tokio::task::JoinHandle<Vec<(i64, Outcome)>>) {
    let stepped = stepped();
    let b = Bench::new(DeliveryConfig { lease: Duration::from_secs(3), ..defaults() }, []);
    *b.pd.slow.lock().unwrap() = slow;
    b.accept(vec![trigger(1)]).await;
    let worker = b.worker.clone();
    let attempt = tokio::spawn(async move { worker.drain().await });
    until("the request is sent", || b.pd.sent().len() == 1).await;
    (stepped, b, attempt)
}

/// An attempt that outlasts its lease (PagerDuty answering in 4.5 s, a 3 s lease) keeps its
/// event: the lease is renewed every third of it while the attempt runs, so no claim (the
/// worker's next round or another replica's) takes the event, and the outcome is recorded.
#[tokio::test(start_paused = true)]
async fn a_slow_attempt_keeps_its_event_past_the_lease_and_is_sent_once() {
    let (_stepped, b, attempt) = slow_attempt(Duration::from_millis(4500)).await;
    assert_eq!(b.leases(), [T0 + 3000]);
    for renewal in [1000, 2000, 3000, 4000] {
        tokio::time::advance(Duration::from_millis(1000)).await;
        until("the lease is renewed", || b.leases() == [T0 + renewal + 3000]).await;
        let claimed = b.queue.claim(b.clock.now(), 10, Duration::from_secs(3)).await.unwrap();
        assert!(claimed.is_empty(), "claimed again at {renewal} ms: {claimed:?}");
    }
    tokio::time::advance(Duration::from_millis(500)).await;
    assert_eq!(attempt.await.unwrap()[0].1, Outcome::Delivered);
    let event = b.queue.recent(10).await.unwrap().remove(0);
    assert_eq!((event.state.as_str(), event.attempts), ("delivered", 1));
    assert_eq!(b.pd.sent().len(), 1, "sent once");
}

/// An attempt whose lease is lost while it runs (another writer moved the stored lease on, as
/// a replica that took the event over would) is abandoned at its next renewal rather than
/// finished: the outcome is left to the holder, and the event goes again once that lease ends.
#[tokio::test(start_paused = true)]
async fn an_attempt_that_loses_its_lease_is_abandoned_and_left_to_the_holder() {
    // Answered after the first renewal, a third of the lease in.
    let (_stepped, b, attempt) = slow_attempt(Duration::from_millis(1500)).await;
    let db = rusqlite::Connection::open(b.dir.path().join("q.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    let moved = db.execute("UPDATE events SET lease_until = lease_until + 1 WHERE state = 'pending'", []).unwrap();
    assert_eq!(moved, 1);
    tokio::time::advance(Duration::from_millis(1000)).await;
    assert_eq!(attempt.await.unwrap()[0].1, Outcome::Abandoned);
    let event = b.queue.recent(10).await.unwrap().remove(0);
    assert_eq!((event.state.as_str(), event.attempts), ("pending", 0), "the abandoned attempt is not recorded");
    // The holder's lease (to 3001 ms) ends; PagerDuty answers at once now.
    *b.pd.slow.lock().unwrap() = Duration::ZERO;
    tokio::time::advance(Duration::from_millis(2000)).await;
    assert!(b.worker.drain().await.is_empty(), "not before the holder's lease ends");
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(b.worker.drain().await[0].1, Outcome::Delivered);
    let event = b.queue.recent(10).await.unwrap().remove(0);
    assert_eq!((event.state.as_str(), event.attempts), ("delivered", 1));
    assert_eq!(b.pd.sent().len(), 2);
    let metrics = b.metrics.render(0, None);
    assert!(metrics.contains("pagerhook_delivery_attempts_total{outcome=\"abandoned\"} 1"), "{metrics}");
}

/// The delivery side of a [`Bench`]'s queue, whose `finish` waits for a permit of `gate`
/// before it reaches the store (as it waits for the accepts' fsync under load), and which
/// counts claims.
struct HeldFinish {
    inner: Arc<dyn Deliveries>,
    gate: tokio::sync::Semaphore,
    claims: std::sync::atomic::AtomicUsize,
    /// When set, the second claim waits for a permit of this after the store answered it
    /// and before the worker hears the answer.
    second_claim: Option<tokio::sync::Semaphore>,
}

#[async_trait]
impl Deliveries for HeldFinish {
    async fn claim_with(&self, now: Millis, limit: usize, lease: Duration, pick: &Pick) -> Result<Batch, QueueError> {
        let n = self.claims.fetch_add(1, Ordering::SeqCst);
        let claimed = self.inner.claim_with(now, limit, lease, pick).await;
        if let (1, Some(gate)) = (n, &self.second_claim) {
            gate.acquire().await.expect("gate open").forget();
        }
        claimed
    }
    async fn hold(&self, key: &str, until: Millis, rule: Arc<dyn PaceRule>) -> Result<(), QueueError> {
        self.inner.hold(key, until, rule).await
    }
    async fn finish(&self, id: i64, lease: Millis, attempt: Attempt, finish: Finish) -> Result<bool, QueueError> {
        self.gate.acquire().await.expect("gate open").forget();
        self.inner.finish(id, lease, attempt, finish).await
    }
    async fn renew(&self, id: i64, lease: Millis, until: Millis) -> Result<bool, QueueError> {
        self.inner.renew(id, lease, until).await
    }
    async fn defer(&self, id: i64, lease: Millis, until: Millis) -> Result<(), QueueError> {
        self.inner.defer(id, lease, until).await
    }
    async fn next_due(&self, now: Millis) -> Result<Option<Millis>, QueueError> {
        self.inner.next_due(now).await
    }
}

/// `worker.run` with one slot over `b`'s queue, whose outcomes are held until released.
fn one_slot_held(b: &Bench) -> (Arc<HeldFinish>, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    one_slot(b, None)
}

/// [`one_slot_held`] whose second claim's answer is also held, until `second_claim` has a permit.
fn one_slot(
    b: &Bench,
    second_claim: Option<tokio::sync::Semaphore>,
) -> (Arc<HeldFinish>, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (held, _, stop, run) = held_worker(b, 1, 0, second_claim);
    (held, stop, run)
}

/// A running worker with `concurrency` slots over `b`'s queue behind a [`HeldFinish`] whose
/// gate starts with `gate` permits; the `Notify` wakes it as an accept would.
fn held_worker(
    b: &Bench,
    concurrency: usize,
    gate: usize,
    second_claim: Option<tokio::sync::Semaphore>,
) -> (Arc<HeldFinish>, Arc<Notify>, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let held = Arc::new(HeldFinish {
        inner: b.queue.clone(),
        gate: tokio::sync::Semaphore::new(gate),
        claims: std::sync::atomic::AtomicUsize::new(0),
        second_claim,
    });
    let wake = Arc::new(Notify::new());
    let cfg = DeliveryConfig { concurrency, ..defaults() };
    let worker = Worker::new(held.clone(), b.pd.clone(), cfg, wake.clone(), b.metrics.clone())
        .with_clock(b.clock)
        .with_jitter(FixedJitter(1.0));
    let (stop, stopped) = watch::channel(false);
    (held, wake, stop, tokio::spawn(worker.run(stopped)))
}

/// A slot is given back when PagerDuty's answer is in, not when the outcome is stored: under
/// accept load storing waits for the accepts' fsync, and holding the slot through it cut
/// delivery to a third of what accepts ran at. With one slot and the first outcome not yet
/// stored, the next event of another lane is sent; the first stays leased until its outcome is.
#[tokio::test(start_paused = true)]
async fn a_slot_is_free_once_the_answer_is_in_before_the_outcome_is_stored() {
    let _stepped = stepped();
    let b = Bench::new(defaults(), []);
    b.accept(vec![trigger(1), trigger(2)]).await;
    let (held, stop, run) = one_slot_held(&b);
    until("both events are sent", || b.pd.sent().len() == 2).await;
    assert_eq!(b.leases().len(), 2, "both still pending, leased, while their outcomes wait");
    assert!(b.leases().iter().all(|l| *l > T0));
    held.gate.add_permits(2);
    until("both outcomes are stored", || b.leases().is_empty()).await;
    stop.send(true).unwrap();
    run.await.unwrap();
    assert_eq!(b.states().await, [("n-1".into(), "delivered".into()), ("n-2".into(), "delivered".into())]);
}

/// The ordering rule holds while an outcome waits to be stored: the slot is free, the worker
/// claims again, but the resolve behind a sent trigger goes only once the trigger's outcome
/// is stored.
#[tokio::test(start_paused = true)]
async fn a_resolve_waits_until_its_triggers_outcome_is_stored_not_only_answered() {
    let _stepped = stepped();
    let b = Bench::new(defaults(), []);
    b.accept(vec![trigger(1), alert("resolve", 1)]).await;
    let (held, stop, run) = one_slot_held(&b);
    until("the trigger is sent and the worker claims again", || {
        b.pd.sent().len() == 1 && held.claims.load(Ordering::SeqCst) >= 2
    })
    .await;
    let claimed_again = held.claims.load(Ordering::SeqCst);
    assert_eq!(b.pd.sent().len(), 1, "the resolve went before its trigger's outcome was stored");
    held.gate.add_permits(2);
    until("the resolve is sent", || b.pd.sent().len() == 2).await;
    assert!(held.claims.load(Ordering::SeqCst) > claimed_again);
    let sent: Vec<String> = b.pd.sent().into_iter().map(|(_, _, action)| action).collect();
    assert_eq!(sent, ["trigger", "resolve"]);
    until("both outcomes are stored", || b.leases().is_empty()).await;
    stop.send(true).unwrap();
    run.await.unwrap();
}

/// One claim is out at a time: the slots freed and the accepts woken while it is out are
/// claimed for by the next one, sent when it is back. (A claim for each made eight claims per
/// event at half the peak rate.)
#[tokio::test(start_paused = true)]
async fn one_claim_is_out_at_a_time_and_what_changed_meanwhile_is_claimed_for_when_it_is_back() {
    let _stepped = stepped();
    let b = Bench::new(defaults(), []);
    *b.pd.slow.lock().unwrap() = Duration::from_secs(1);
    b.accept(vec![trigger(1)]).await;
    let (held, wake, stop, run) = held_worker(&b, 2, 10, Some(tokio::sync::Semaphore::new(0)));
    until("the first event is on its way", || b.pd.sent().len() == 1).await;
    b.accept(vec![trigger(2)]).await;
    wake.notify_one();
    until("a second claim is out, for the other slot", || held.claims.load(Ordering::SeqCst) == 2).await;
    tokio::time::advance(Duration::from_secs(1)).await;
    until("the first outcome is stored, freeing its slot", || b.leases().len() == 1).await;
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(held.claims.load(Ordering::SeqCst), 2, "no claim was sent while one was out");
    held.second_claim.as_ref().expect("held").add_permits(1);
    until("the second event is sent", || b.pd.sent().len() == 2).await;
    until("the loop claims again for the slot freed meanwhile", || held.claims.load(Ordering::SeqCst) == 3).await;
    stop.send(true).unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    run.await.unwrap();
}

/// A claim answered before the outcome that frees its lane was stored finds nothing; if that
/// outcome's attempt ended while the claim was on its way, nothing else will wake the worker,
/// so the short answer must not send it idle (it did, and the resolve waited for the idle
/// recheck: this test hung on stepped time, where that recheck never comes).
#[tokio::test(start_paused = true)]
async fn a_claim_that_found_nothing_before_an_outcome_was_stored_does_not_idle_the_worker() {
    let _stepped = stepped();
    let b = Bench::new(defaults(), []);
    b.accept(vec![trigger(1), alert("resolve", 1)]).await;
    let (held, stop, run) = one_slot(&b, Some(tokio::sync::Semaphore::new(0)));
    until("the trigger is sent and the second claim answered", || {
        b.pd.sent().len() == 1 && held.claims.load(Ordering::SeqCst) == 2
    })
    .await;
    // The trigger's outcome is stored and its attempt ends while the second claim, which
    // found the lane blocked, is still on its way back.
    held.gate.add_permits(2);
    until("the trigger's outcome is stored", || b.leases().len() == 1).await;
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    held.second_claim.as_ref().expect("held").add_permits(1);
    until("the resolve is sent", || b.pd.sent().len() == 2).await;
    until("both outcomes are stored", || b.leases().is_empty()).await;
    stop.send(true).unwrap();
    run.await.unwrap();
}

/// A store whose first claim panics once the store has leased its events (as a claim did in
/// issue 33, reading the pace of its keys).
struct PanicsOnce {
    inner: Arc<dyn Deliveries>,
    claims: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl Deliveries for PanicsOnce {
    async fn claim_with(&self, now: Millis, limit: usize, lease: Duration, pick: &Pick) -> Result<Batch, QueueError> {
        let claimed = self.inner.claim_with(now, limit, lease, pick).await;
        let first = self.claims.fetch_add(1, Ordering::SeqCst) == 0;
        assert!(!first || claimed.as_ref().map_or(true, |b| b.claimed.is_empty()), "the claim failed after leasing");
        claimed
    }
    async fn hold(&self, key: &str, until: Millis, rule: Arc<dyn PaceRule>) -> Result<(), QueueError> {
        self.inner.hold(key, until, rule).await
    }
    async fn finish(&self, id: i64, lease: Millis, attempt: Attempt, finish: Finish) -> Result<bool, QueueError> {
        self.inner.finish(id, lease, attempt, finish).await
    }
    async fn renew(&self, id: i64, lease: Millis, until: Millis) -> Result<bool, QueueError> {
        self.inner.renew(id, lease, until).await
    }
    async fn defer(&self, id: i64, lease: Millis, until: Millis) -> Result<(), QueueError> {
        self.inner.defer(id, lease, until).await
    }
    async fn next_due(&self, now: Millis) -> Result<Option<Millis>, QueueError> {
        self.inner.next_due(now).await
    }
}

/// Issue 33: a panic in a claim ended the worker's loop, and nothing sent or said anything
/// after it. Supervised, the worker is restarted, the death is counted, and the event it had
/// claimed is delivered once its lease ends.
#[tokio::test(start_paused = true)]
async fn a_worker_whose_claim_panicked_is_restarted_and_delivers() {
    use crate::supervise::{Health, Supervisor, Task};
    let b = Bench::new(defaults(), []);
    let wake = Arc::new(Notify::new());
    let store = Arc::new(PanicsOnce { inner: b.queue.clone(), claims: Default::default() });
    let worker = Worker::new(store.clone(), b.pd.clone(), defaults(), wake.clone(), b.metrics.clone())
        .with_clock(b.clock)
        .with_jitter(FixedJitter(1.0));
    let health = Arc::new(Health::default());
    let (stop, stopped) = watch::channel(false);
    let mut tasks = Supervisor::new(health.clone(), b.metrics.clone(), stopped);
    tasks.restart(Task::DeliveryWorker, move |stop| worker.clone().run(stop));
    b.accept(vec![trigger(1)]).await;
    wake.notify_one();
    // Paused time must run (the restart's backoff and the dead claim's lease are timers), so
    // this waits on tokio's sleep, not `until`'s yield; the bound is real time, since the
    // store answers on its own thread, while tokio's clock jumps whenever the runtime idles.
    // It waits for the delivery to be recorded, not only sent: the send is seen before its
    // finish commits, and the worker is stopped below.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while b.states().await != [("n-1".into(), "delivered".into())] {
        assert!(std::time::Instant::now() < deadline, "the restarted worker delivers the event");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(store.claims.load(Ordering::SeqCst) >= 2, "the first claim panicked, a later one went through");
    assert!(b.pd.sent()[0].0 >= T0 + 15_000, "after the panicked claim's lease (15 s) ended");
    let metrics = b.metrics.render(0, None);
    assert!(metrics.contains(r#"pagerhook_task_failures_total{task="delivery_worker"} 1"#), "{metrics}");
    assert_eq!(health.not_ready(), None, "one death is a restart, not a task down");
    health.stop();
    stop.send(true).unwrap();
    tasks.join().await;
    assert_eq!(b.pd.sent().len(), 1, "sent once");
}
