//! A fake PagerDuty Events API: records every request in order, answers from a script.

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
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
}

/// Handle to the running fake.
#[derive(Clone)]
pub struct FakePagerDuty {
    state: Arc<State>,
    pub url: String,
}

async fn enqueue(req: HttpRequest, body: web::Bytes, state: web::Data<Arc<State>>) -> HttpResponse {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let reply = state
        .script
        .lock()
        .unwrap()
        .get_mut(req.path())
        .and_then(VecDeque::pop_front)
        .unwrap_or_else(|| Reply::status(202));
    state.received.lock().unwrap().push(Received { path: req.path().to_string(), body, at: Instant::now() });
    state.changed.notify_waiters();
    let mut r = HttpResponse::build(actix_web::http::StatusCode::from_u16(reply.status).unwrap());
    if let Some(s) = reply.retry_after {
        r.insert_header(("Retry-After", s.to_string()));
    }
    r.json(reply.body)
}

impl FakePagerDuty {
    /// Starts on a random loopback port.
    pub async fn start() -> FakePagerDuty {
        let state = Arc::new(State::default());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let data = web::Data::new(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/v2/enqueue", web::post().to(enqueue))
                .route("/v2/change/enqueue", web::post().to(enqueue))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        FakePagerDuty { state, url }
    }

    /// Answers the next requests to `path` (e.g. `/v2/enqueue`) with these, then 202.
    pub fn script(&self, path: &str, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().unwrap().entry(path.to_string()).or_default().extend(replies);
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
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
