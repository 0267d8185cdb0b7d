//! A fake PagerDuty Events API: records every request in order, answers from a script, and
//! feeds every alert event it accepts to `pagerhook::pagerduty_model` (the model of PagerDuty's
//! incidents that `pagerhook test`'s scenarios use too), so a test can ask what is open.

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use pagerhook::pagerduty_model::Incidents;
use serde_json::Value;
use std::collections::VecDeque;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// One request PagerDuty received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub body: Value,
    pub at: Instant,
    /// Which of the fake's listeners took it: 0, or what [`FakePagerDuty::another_listener`] said.
    pub via: usize,
}

impl Received {
    pub fn action(&self) -> Option<&str> {
        self.body["event_action"].as_str()
    }
    pub fn dedup_key(&self) -> Option<&str> {
        self.body["dedup_key"].as_str()
    }
    pub fn summary(&self) -> Option<&str> {
        self.body["payload"]["summary"].as_str()
    }
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<u64>,
    pub body: Value,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        let body = if status == 202 {
            serde_json::json!({"status": "success", "message": "Event processed"})
        } else {
            serde_json::json!({"status": "invalid event", "message": "Event object is invalid", "errors": ["scripted failure"]})
        };
        Reply { status, retry_after: None, body }
    }
}

#[derive(Default)]
struct State {
    received: Mutex<Vec<Received>>,
    /// Scripted replies per path; an empty script answers 202.
    script: Mutex<std::collections::HashMap<String, VecDeque<Reply>>>,
    changed: Notify,
    /// How long each answer is held back, so that two senders of one dedup_key would overlap.
    delay: Mutex<Duration>,
    /// Requests being answered, per dedup_key.
    in_flight: Mutex<std::collections::HashMap<String, usize>>,
    /// dedup_keys that had two requests in flight at once.
    overlaps: Mutex<Vec<String>>,
    /// Requests being answered, per listener.
    busy: Mutex<std::collections::HashMap<usize, usize>>,
    listeners: Mutex<usize>,
    /// Listeners whose answers are held back a further [`HOLD`].
    held: Mutex<std::collections::HashSet<usize>>,
    /// PagerDuty is away ([`FakePagerDuty::go_away`]): every request is answered 503 and
    /// not recorded, as if it never reached PagerDuty.
    away: std::sync::atomic::AtomicBool,
    /// What PagerDuty would hold after the alert events answered 202.
    incidents: Mutex<Incidents>,
}

/// How long [`FakePagerDuty::hold`] holds answers back: bounded, so that a handler whose
/// sender died is done long before anyone could send its event again.
const HOLD: Duration = Duration::from_secs(1);

/// Counts a request in flight for its dedup_key until dropped, which also happens when the
/// sender's connection dies and actix drops the handler.
struct InFlight {
    state: Arc<State>,
    key: String,
    via: usize,
}

impl InFlight {
    fn enter(state: &Arc<State>, key: String, via: usize) -> InFlight {
        *state.busy.lock().unwrap().entry(via).or_default() += 1;
        let mut in_flight = state.in_flight.lock().unwrap();
        let n = in_flight.entry(key.clone()).or_default();
        *n += 1;
        if *n > 1 {
            state.overlaps.lock().unwrap().push(key.clone());
        }
        InFlight { state: state.clone(), key, via }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(n) = self.state.in_flight.lock().unwrap().get_mut(&self.key) {
            *n -= 1;
        }
        if let Some(n) = self.state.busy.lock().unwrap().get_mut(&self.via) {
            *n -= 1;
        }
    }
}

/// Handle to the running fake.
#[derive(Clone)]
pub struct FakePagerDuty {
    state: Arc<State>,
    pub url: String,
}

async fn enqueue(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<Arc<State>>,
    via: web::Data<usize>,
) -> HttpResponse {
    let via = **via;
    if state.away.load(std::sync::atomic::Ordering::SeqCst) {
        return HttpResponse::ServiceUnavailable().finish();
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let key = body["dedup_key"].as_str().map(str::to_string);
    let key_for_answer = key.clone();
    let reply = state
        .script
        .lock()
        .unwrap()
        .get_mut(req.path())
        .and_then(VecDeque::pop_front)
        .unwrap_or_else(|| Reply::status(202));
    if reply.status == 202 && req.path() == "/v2/enqueue" {
        let routing_key = body["routing_key"].as_str().unwrap_or_default().to_string();
        state.incidents.lock().unwrap().apply(&routing_key, &body);
    }
    state.received.lock().unwrap().push(Received { path: req.path().to_string(), body, at: Instant::now(), via });
    state.changed.notify_waiters();
    let delay = *state.delay.lock().unwrap();
    if !delay.is_zero() {
        let _in_flight = key.map(|k| InFlight::enter(&state, k, via));
        tokio::time::sleep(delay).await;
        if state.held.lock().unwrap().contains(&via) {
            tokio::time::sleep(HOLD).await;
        }
    }
    let mut r = HttpResponse::build(actix_web::http::StatusCode::from_u16(reply.status).unwrap());
    if let Some(s) = reply.retry_after {
        r.insert_header(("Retry-After", s.to_string()));
    }
    let mut answer = reply.body;
    // Like PagerDuty, a 202 to an alert event names the dedup_key it was filed under.
    if reply.status == 202 && req.path() == "/v2/enqueue" && answer.get("dedup_key").is_none() {
        if let Some(k) = key_for_answer {
            answer["dedup_key"] = k.into();
        }
    }
    r.json(answer)
}

/// Serves the fake on a new loopback port, its requests marked `via`; returns its URL.
fn listen(state: &Arc<State>, via: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (data, via) = (web::Data::new(state.clone()), web::Data::new(via));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(via.clone())
            .route("/v2/enqueue", web::post().to(enqueue))
            .route("/v2/change/enqueue", web::post().to(enqueue))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    url
}

impl FakePagerDuty {
    /// Starts on a random loopback port.
    pub async fn start() -> FakePagerDuty {
        let state = Arc::new(State::default());
        let url = listen(&state, 0);
        FakePagerDuty { state, url }
    }

    /// Another address of the same fake, so that a test can tell senders apart (`via`).
    pub fn another_listener(&self) -> (usize, String) {
        let via = {
            let mut n = self.state.listeners.lock().unwrap();
            *n += 1;
            *n
        };
        (via, listen(&self.state, via))
    }

    /// Holds the answers of listener `via` back a further second (with delayed answers): a
    /// sender killed meanwhile never gets those in flight now.
    pub fn hold(&self, via: usize) {
        self.state.held.lock().unwrap().insert(via);
    }

    /// Undoes [`Self::hold`].
    pub fn release(&self, via: usize) {
        self.state.held.lock().unwrap().remove(&via);
    }

    /// Requests that listener `via` is answering right now (while answers are delayed).
    pub fn busy(&self, via: usize) -> usize {
        self.state.busy.lock().unwrap().get(&via).copied().unwrap_or(0)
    }

    /// From now on every request is answered 503 and not recorded (an outage upstream).
    pub fn go_away(&self) {
        self.state.away.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Undoes [`Self::go_away`].
    pub fn come_back(&self) {
        self.state.away.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Answers the next requests to `path` (e.g. `/v2/enqueue`) with these, then 202.
    pub fn script(&self, path: &str, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().unwrap().entry(path.to_string()).or_default().extend(replies);
    }

    /// Holds every answer back this long (after recording the request), and from then on
    /// records dedup_keys that two requests were sending at once ([`Self::overlaps`]).
    pub fn delay_answers(&self, delay: Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    /// dedup_keys that had two requests in flight at once, while answers were delayed.
    pub fn overlaps(&self) -> Vec<String> {
        self.state.overlaps.lock().unwrap().clone()
    }

    /// The incidents PagerDuty would hold now, by the model scenarios use.
    pub fn incidents(&self) -> Incidents {
        self.state.incidents.lock().unwrap().clone()
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// The most requests received within any `window`, by the time each arrived here: what
    /// PagerDuty's rate limit counts.
    pub fn busiest(&self, window: Duration) -> usize {
        let mut at: Vec<Instant> = self.received().iter().map(|r| r.at).collect();
        at.sort_unstable();
        (0..at.len()).map(|i| at[i..].partition_point(|t| *t < at[i] + window)).max().unwrap_or(0)
    }

    /// Waits until at least `n` requests arrived, or panics after `deadline`.
    pub async fn wait_for(&self, n: usize, deadline: Duration) -> Vec<Received> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let notified = self.state.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                panic!("fake PagerDuty got {} requests, expected {n} within {deadline:?}: {got:#?}", got.len());
            }
        }
    }
}
