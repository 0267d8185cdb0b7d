//! Behaviour of the queue, written against the trait.

use super::*;
use crate::config::{Durability, Secret};
use crate::event::{AlertDraft, ChangeDraft, RoutingKey};
use std::sync::Arc;

fn key() -> RoutingKey {
    RoutingKey::parse(Secret::new("0123456789abcdef0123456789abcdef")).unwrap()
}

fn alert(action: &str, dedup: &str) -> Event {
    Event::alert(
        key(),
        AlertDraft {
            action: action.into(),
            dedup_key: Some(dedup.into()),
            summary: Some("s".into()),
            source: Some("src".into()),
            ..AlertDraft::default()
        },
    )
    .unwrap()
}

fn change() -> Event {
    Event::change(key(), ChangeDraft { summary: Some("c".into()), ..ChangeDraft::default() }).unwrap()
}

fn inbound(dedupe: Option<&str>) -> NewInbound {
    NewInbound {
        id: uuid::Uuid::now_v7().to_string(),
        source: "gh".into(),
        received_at: now_millis(),
        dedupe_id: dedupe.map(str::to_string),
        headers: serde_json::json!({}),
        query: String::new(),
        body: bytes::Bytes::from_static(b"{}"),
        status: InboundStatus::Mapped,
    }
}

fn open() -> (Arc<dyn Queue>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let q = SqliteQueue::open(&dir.path().join("q.db"), Durability::Fsync).unwrap();
    (Arc::new(q), dir)
}

const LEASE: std::time::Duration = std::time::Duration::from_secs(60);

#[tokio::test]
async fn a_repeated_delivery_id_is_reported_not_stored() {
    let (q, _d) = open();
    let first = q.accept(inbound(Some("d1")), vec![alert("trigger", "k")]).await.unwrap();
    let Accepted::Committed { id, events: 1 } = first else { panic!("{first:?}") };
    let again = q.accept(inbound(Some("d1")), vec![alert("trigger", "k")]).await.unwrap();
    assert_eq!(again, Accepted::Duplicate { id });
    assert_eq!(q.depth().await.unwrap().0, 1);
}

#[tokio::test]
async fn only_the_head_of_a_lane_is_claimed() {
    let (q, _d) = open();
    q.accept(inbound(None), vec![alert("trigger", "k"), alert("resolve", "k"), alert("trigger", "other"), change()])
        .await
        .unwrap();
    let now = now_millis();
    let c = q.claim(now, 10, LEASE).await.unwrap();
    let actions: Vec<_> =
        c.iter().map(|c| (c.event.action().map(|a| a.as_str()), c.event.dedup_key().map(|k| k.to_string()))).collect();
    assert_eq!(
        actions,
        vec![(Some("trigger"), Some("k".into())), (Some("trigger"), Some("other".into())), (None, None)]
    );
    // Claimed events are leased: a second claim gets nothing.
    assert!(q.claim(now, 10, LEASE).await.unwrap().is_empty());
    // While the trigger retries, the resolve waits.
    let trigger = c[0].id;
    q.finish(trigger, Attempt { at: now, status: Some(500), detail: None }, Finish::RetryAt(now + 1000)).await.unwrap();
    assert!(q.claim(now, 10, LEASE).await.unwrap().is_empty());
    assert_eq!(q.next_due().await.unwrap(), Some(now + 1000));
    let retried = q.claim(now + 1000, 10, LEASE).await.unwrap();
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0].id, trigger);
    assert_eq!(retried[0].attempts, 1);
    q.finish(trigger, Attempt { at: now, status: Some(202), detail: None }, Finish::Delivered).await.unwrap();
    let next = q.claim(now + 1000, 10, LEASE).await.unwrap();
    assert_eq!(next[0].event.action(), Some(crate::event::Action::Resolve));
}

#[tokio::test]
async fn a_dead_event_no_longer_blocks_its_lane() {
    let (q, _d) = open();
    q.accept(inbound(None), vec![alert("trigger", "k"), alert("resolve", "k")]).await.unwrap();
    let now = now_millis();
    let c = q.claim(now, 10, LEASE).await.unwrap();
    q.finish(
        c[0].id,
        Attempt { at: now, status: Some(400), detail: Some("bad".into()) },
        Finish::Dead("400: bad".into()),
    )
    .await
    .unwrap();
    let next = q.claim(now, 10, LEASE).await.unwrap();
    assert_eq!(next.len(), 1);
    let recent = q.recent(10).await.unwrap();
    let dead = recent.iter().find(|e| e.state == "dead").unwrap();
    assert_eq!(dead.last_error.as_deref(), Some("400: bad"));
}

#[tokio::test]
async fn leases_are_released_when_the_store_is_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    {
        let q = SqliteQueue::open(&path, Durability::Process).unwrap();
        q.accept(inbound(None), vec![alert("trigger", "k")]).await.unwrap();
        assert_eq!(q.claim(now_millis(), 10, LEASE).await.unwrap().len(), 1);
    }
    let q = SqliteQueue::open(&path, Durability::Process).unwrap();
    assert_eq!(
        q.claim(now_millis(), 10, LEASE).await.unwrap().len(),
        1,
        "a claim by a dead process does not strand the event"
    );
}

#[tokio::test]
async fn concurrent_accepts_are_all_committed() {
    let (q, _d) = open();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..200 {
        let q = q.clone();
        set.spawn(
            async move { q.accept(inbound(Some(&format!("d{i}"))), vec![alert("trigger", &format!("k{i}"))]).await },
        );
    }
    while let Some(r) = set.join_next().await {
        assert!(matches!(r.unwrap().unwrap(), Accepted::Committed { .. }));
    }
    assert_eq!(q.depth().await.unwrap().0, 200);
}

#[tokio::test]
async fn pruning_keeps_pending_and_dead_events_and_failed_payloads() {
    let (q, _d) = open();
    q.accept(inbound(Some("a")), vec![alert("trigger", "delivered")]).await.unwrap();
    q.accept(inbound(Some("b")), vec![alert("trigger", "dead")]).await.unwrap();
    q.accept(inbound(Some("c")), vec![alert("trigger", "pending")]).await.unwrap();
    let mut failed = inbound(Some("d"));
    failed.status = InboundStatus::MappingFailed("boom".into());
    q.accept(failed, vec![]).await.unwrap();
    let now = now_millis();
    let c = q.claim(now, 2, LEASE).await.unwrap();
    q.finish(c[0].id, Attempt { at: now, status: Some(202), detail: None }, Finish::Delivered).await.unwrap();
    q.finish(c[1].id, Attempt { at: now, status: Some(400), detail: None }, Finish::Dead("400".into())).await.unwrap();
    assert!(q.prune(now + 1).await.unwrap() > 0);
    let states: Vec<_> = q.recent(10).await.unwrap().into_iter().map(|e| e.state).collect();
    assert_eq!(states, vec!["pending", "dead"]);
    // The delivery ids are forgotten with them: a redelivery after retention is new.
    assert!(matches!(q.accept(inbound(Some("a")), vec![]).await.unwrap(), Accepted::Committed { .. }));
}
