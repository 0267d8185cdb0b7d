//! Crash safety with the real binary: SIGKILL at a random moment under load, restart, and
//! every request that got a 2xx must still reach PagerDuty (at least once).

use crate::helpers::fake_pagerduty::FakePagerDuty;
use crate::helpers::{base_config, bearer_source, serve_binary, write_binary_config, HOOK_TOKEN, NUMBERED};
use rand::Rng;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KILLS: usize = 3;
const SENDERS: usize = 8;

#[tokio::test]
async fn every_accepted_request_is_delivered_despite_sigkill() {
    let fake = FakePagerDuty::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mapping = dir.path().join("crash.toml");
    std::fs::write(&mapping, NUMBERED).unwrap();
    let text = base_config(dir.path(), &fake.url).replace("[delivery]\n", "[delivery]\nper_key_rate = 0\n")
        + &bearer_source("load", &mapping);
    let (base, admin) = write_binary_config(dir.path(), &text);
    let hooks = format!("{base}/hooks/load");

    let accepted = Arc::new(Mutex::new(BTreeSet::new()));
    let next = Arc::new(AtomicU64::new(0));
    for run in 0..KILLS {
        let mut child = serve_binary(dir.path(), &admin, &format!("serve-{run}.log")).await;
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
                        .body(format!(r#"{{"n": {n}, "action": "trigger"}}"#))
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
    let mut child = serve_binary(dir.path(), &admin, "serve-last.log").await;
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
