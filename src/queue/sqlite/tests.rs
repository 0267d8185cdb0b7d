use super::*;
use std::time::Instant;

#[test]
fn commits_wake_the_checkpointer_at_most_once_per_interval() {
    let mut pace = CheckpointPace { last: None };
    let t0 = Instant::now();
    assert!(pace.due(t0), "the first commit wakes it");
    assert!(!pace.due(t0 + CHECKPOINT_EVERY / 2), "a commit soon after does not");
    assert!(pace.due(t0 + CHECKPOINT_EVERY), "one an interval after the last wake-up does");
    assert!(!pace.due(t0 + CHECKPOINT_EVERY + CHECKPOINT_EVERY / 2));
}

#[tokio::test]
async fn the_writer_checkpoints_itself_only_at_the_ceiling() {
    let dir = tempfile::tempdir().unwrap();
    let q = SqliteQueue::open(&dir.path().join("q.db"), Durability::Fsync, Role::Deliverer).unwrap();
    let pages: i64 = q.run(|c| Ok(c.pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0))?)).await.unwrap();
    assert_eq!(pages, WAL_CEILING_PAGES);
}

/// A write that fails in a group commit leaves nothing behind: its savepoint is rolled back
/// (here the delivery id it had already recorded), and the writes beside it commit.
#[tokio::test]
async fn a_failed_write_is_rolled_back_alone() {
    let dir = tempfile::tempdir().unwrap();
    let q = SqliteQueue::open(&dir.path().join("q.db"), Durability::Fsync, Role::Deliverer).unwrap();
    let inbound = |id: &str, delivery: &str| NewInbound {
        id: id.into(),
        delivery_id: Some(delivery.into()),
        ..NewInbound::new("gh", 1, bytes::Bytes::from_static(b"{}"), InboundStatus::Mapped)
    };
    q.accept(inbound("a", "d1"), Vec::new()).await.unwrap();
    // Inbound id "a" is taken: this accept fails after recording delivery d2.
    let (taken, other) =
        tokio::join!(q.accept(inbound("a", "d2"), Vec::new()), q.accept(inbound("b", "d3"), Vec::new()));
    assert!(matches!(taken, Err(QueueError::Constraint(_))), "{taken:?}");
    assert_eq!(other.unwrap(), Accepted::Committed { id: "b".into(), events: 0 });
    let again = q.accept(inbound("c", "d2"), Vec::new()).await.unwrap();
    assert_eq!(again, Accepted::Committed { id: "c".into(), events: 0 }, "d2 was not left recorded");
}
