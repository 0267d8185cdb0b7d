//! Crash safety with the real binary: SIGKILL at a random moment under load, restart, and
//! every request that got a 2xx must still reach PagerDuty (at least once).

use crate::helpers::fake_pagerduty::FakePagerDuty;
use crate::helpers::{base_config, bearer_source, binary, HOOK_TOKEN};
use rand::Rng;
use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KILLS: usize = 3;
const SENDERS: usize = 8;

/// Two distinct ports free right now (the binary binds them a moment later).
pub(crate) fn free_ports() -> (u16, u16) {
    let (a, b) = (TcpListener::bind("127.0.0.1:0").unwrap(), TcpListener::bind("127.0.0.1:0").unwrap());
    (a.local_addr().unwrap().port(), b.local_addr().unwrap().port())
}

/// The base config on fixed ports, unpaced, with a bearer source `load` on `mapping`.
pub(crate) fn load_config(dir: &Path, events_url: &str, mapping: &Path, port: u16, admin_port: u16) -> String {
    base_config(dir, events_url)
        .replace("\nlisten = \"127.0.0.1:0\"", &format!("\nlisten = \"127.0.0.1:{port}\""))
        .replace("admin_listen = \"127.0.0.1:0\"", &format!("admin_listen = \"127.0.0.1:{admin_port}\""))
        .replace("[delivery]\n", "[delivery]\nper_key_rate = 0\n")
        + &bearer_source("load", mapping)
}

/// Starts `pagerhook serve` and waits until `/readyz` answers 200.
pub(crate) async fn serve(dir: &Path, admin: &str, run: usize) -> Child {
    let mut child = binary(dir, &format!("serve-{run}.log")).arg("serve").spawn().unwrap();
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = http.get(format!("{admin}/readyz")).send().await {
            if r.status() == 200 {
                return child;
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "pagerhook exited with {status}: {}",
                std::fs::read_to_string(dir.join(format!("serve-{run}.log"))).unwrap()
            );
        }
        assert!(tokio::time::Instant::now() < deadline, "pagerhook did not become ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn every_accepted_request_is_delivered_despite_sigkill() {
    let fake = FakePagerDuty::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mapping = dir.path().join("crash.toml");
    std::fs::write(
        &mapping,
        "[[rule]]\nname = \"n\"\nemit = \"alert\"\naction = \"trigger\"\ndedup_key = \"n-{{body.n}}\"\nsummary = \"event {{body.n}}\"\nsource = \"crash-test\"\n",
    )
    .unwrap();
    let (port, admin_port) = free_ports();
    let text = load_config(dir.path(), &fake.url, &mapping, port, admin_port);
    std::fs::write(dir.path().join("pagerhook.toml"), text).unwrap();
    let hooks = format!("http://127.0.0.1:{port}/hooks/load");
    let admin = format!("http://127.0.0.1:{admin_port}");

    let accepted = Arc::new(Mutex::new(BTreeSet::new()));
    let next = Arc::new(AtomicU64::new(0));
    for run in 0..KILLS {
        let mut child = serve(dir.path(), &admin, run).await;
        let stop = Arc::new(AtomicBool::new(false));
        let mut senders = tokio::task::JoinSet::new();
        for _ in 0..SENDERS {
            let (accepted, next, stop, hooks) = (accepted.clone(), next.clone(), stop.clone(), hooks.clone());
            senders.spawn(async move {
                let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
                while !stop.load(Ordering::SeqCst) {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    let res = http
                        .post(&hooks)
                        .bearer_auth(HOOK_TOKEN)
                        .header("content-type", "application/json")
                        .body(format!(r#"{{"n": {n}}}"#))
                        .send()
                        .await;
                    if res.is_ok_and(|r| r.status() == 202) {
                        accepted.lock().unwrap().insert(n);
                    }
                }
            });
        }
        // Kill at a random point: after a random number of accepted requests.
        let before = accepted.lock().unwrap().len();
        let target = before + rand::thread_rng().gen_range(20..200);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while accepted.lock().unwrap().len() < target {
            assert!(
                tokio::time::Instant::now() < deadline,
                "load stalled at {} accepted",
                accepted.lock().unwrap().len()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        stop.store(true, Ordering::SeqCst);
        while senders.join_next().await.is_some() {}
    }

    // A last start with no load: it must deliver whatever the killed ones left queued.
    let mut child = serve(dir.path(), &admin, KILLS).await;
    let accepted = accepted.lock().unwrap().clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let missing = loop {
        let received: BTreeSet<u64> =
            fake.received().iter().filter_map(|r| r.dedup_key()?.strip_prefix("n-")?.parse().ok()).collect();
        let missing: Vec<_> = accepted.difference(&received).copied().collect();
        if missing.is_empty() || tokio::time::Instant::now() > deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let received = fake.received().len();
    let distinct: BTreeSet<_> = fake.received().iter().filter_map(|r| r.dedup_key().map(str::to_string)).collect();
    eprintln!(
        "crash test: {} accepted over {KILLS} SIGKILLs, {received} requests at PagerDuty, {} duplicate(s)",
        accepted.len(),
        received - distinct.len()
    );
    assert!(missing.is_empty(), "accepted with a 2xx but never delivered: {missing:?}");
    assert!(accepted.len() >= KILLS * 20);
}
