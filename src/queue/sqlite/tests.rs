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
