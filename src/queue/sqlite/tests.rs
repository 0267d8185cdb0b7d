use super::*;
use crate::event::RoutingKey;
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

fn inbound_at(id: &str, received_at: Millis, body: &'static [u8], status: InboundStatus) -> NewInbound {
    NewInbound { id: id.into(), ..NewInbound::new("gh", received_at, bytes::Bytes::from_static(body), status) }
}

fn trigger() -> Event {
    let key = RoutingKey::parse(crate::secret::Secret::new("0123456789abcdef0123456789abcdef")).unwrap();
    let draft = crate::event::AlertDraft {
        action: "trigger".into(),
        dedup_key: Some("d".into()),
        summary: Some("s".into()),
        source: Some("src".into()),
        ..Default::default()
    };
    Event::alert(key, draft).unwrap()
}

/// `(body, body_segment)` of inbound `id`, read behind the queue's back.
fn stored(path: &Path, id: &str) -> Option<(Vec<u8>, Option<String>)> {
    let c = Connection::open(path).unwrap();
    c.query_row("SELECT body, body_segment FROM inbound WHERE id = ?1", [id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .unwrap()
}

#[tokio::test]
async fn a_mapped_body_is_written_to_the_payload_log_and_a_dead_letter_s_stays_in_its_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let q = SqliteQueue::open(&path, Durability::Fsync, Role::Deliverer).unwrap();
    let now = super::super::now_millis();
    q.accept(inbound_at("mapped", now, b"{\"pr\":1}", InboundStatus::Mapped), vec![trigger()]).await.unwrap();
    let failed = InboundStatus::MappingFailed("no rule".into());
    q.accept(inbound_at("failed", now, b"{\"pr\":2}", failed), Vec::new()).await.unwrap();

    let (body, segment) = stored(&path, "mapped").unwrap();
    assert!(body.is_empty(), "the body is not in the database");
    let segment = segment.expect("the row says where it is");
    assert!(dir.path().join("q.db-payloads").join(&segment).is_file());
    let event_id: i64 = Connection::open(&path).unwrap().query_row("SELECT id FROM events", [], |r| r.get(0)).unwrap();
    let detail = q.event(event_id).await.unwrap().unwrap();
    assert_eq!(detail.payload, "{\"pr\":1}", "read back from the log");

    assert_eq!(stored(&path, "failed").unwrap(), (b"{\"pr\":2}".to_vec(), None), "a dead letter keeps its body");
    assert_eq!(q.inbound("failed".into()).await.unwrap().unwrap().body.as_ref(), b"{\"pr\":2}");
}

/// Pruning deletes a finished segment, but first moves into their rows the bodies still
/// needed: here an event never delivered keeps its webhook past the retention.
#[tokio::test]
async fn pruning_keeps_the_bodies_still_needed_and_deletes_finished_segments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let q = SqliteQueue::open(&path, Durability::Fsync, Role::Deliverer).unwrap();
    let long_ago = 1_700_000_000_000;
    q.accept(inbound_at("pending", long_ago, b"{\"pending\":1}", InboundStatus::Mapped), vec![trigger()])
        .await
        .unwrap();
    q.accept(inbound_at("done", long_ago, b"{\"done\":1}", InboundStatus::Mapped), Vec::new()).await.unwrap();
    let segments = dir.path().join("q.db-payloads");
    assert_eq!(std::fs::read_dir(&segments).unwrap().count(), 1);

    q.prune(long_ago + 2 * payloads::ROTATE_AFTER).await.unwrap();
    assert_eq!(std::fs::read_dir(&segments).unwrap().count(), 0, "the finished segment is deleted");
    assert_eq!(stored(&path, "done"), None, "a webhook past retention with nothing left to send is pruned");
    assert_eq!(stored(&path, "pending").unwrap(), (b"{\"pending\":1}".to_vec(), None));
}

/// A batch runs without savepoints; when one write fails, the whole transaction is undone
/// and the batch runs again write by write, so the failure sinks only itself.
#[tokio::test]
async fn a_batch_with_a_failing_write_is_undone_whole_then_run_write_by_write() {
    let dir = tempfile::tempdir().unwrap();
    let q = SqliteQueue::open(&dir.path().join("q.db"), Durability::Fsync, Role::Deliverer).unwrap();
    q.accept(inbound_at("taken", 1, b"{}", InboundStatus::Mapped), Vec::new()).await.unwrap();
    let held = q
        .run(|c| {
            let write = |id: &str| {
                let accept = Prepared::new(inbound_at(id, 1, b"{}", InboundStatus::Mapped), Vec::new());
                Write::Accept(Box::new(accept), oneshot::channel().0)
            };
            let batch = [write("fresh"), write("taken")];
            let count = |c: &Connection| -> i64 {
                c.query_row("SELECT COUNT(*) FROM inbound WHERE id = 'fresh'", [], |r| r.get(0)).unwrap()
            };
            assert!(all_or_nothing(c, &batch).is_none(), "the taken id fails the plain run");
            assert_eq!(count(c), 0, "which left nothing behind");
            let (outcomes, committed) = one_by_one(c, &batch);
            committed.unwrap();
            assert_eq!(count(c), 1);
            Ok(outcomes.iter().map(Outcome::holds).collect::<Vec<_>>())
        })
        .await
        .unwrap();
    assert_eq!(held, [true, false]);
}

/// Under `fsync` an accept is answered by the syncer once the disk has it; when the sync
/// fails, the accept is answered with the error (503 to its sender), never as committed.
#[test]
fn an_accept_whose_sync_failed_is_answered_with_the_error() {
    let answered = |wal: std::path::PathBuf| {
        let (to_sync, committed) = mpsc::channel();
        std::thread::spawn(move || sync_then_answer(WalFile { path: wal, file: None }, committed));
        let (reply, answer) = oneshot::channel();
        let accept = Box::new(Prepared::new(inbound_at("a", 1, b"{}", InboundStatus::Mapped), Vec::new()));
        let done = Ok(Accepted::Committed { id: "a".into(), events: 0 });
        to_sync.send(Committed(vec![Answer::Accept(reply, done, accept)])).unwrap();
        answer.blocking_recv().unwrap().0
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("q.db-wal"), b"frames").unwrap();
    assert_eq!(answered(dir.path().join("q.db-wal")).unwrap(), Accepted::Committed { id: "a".into(), events: 0 });
    let unsyncable = dir.path().join("q.db-wal").join("not-a-directory");
    let e = answered(unsyncable).unwrap_err();
    assert!(matches!(&e, QueueError::Io(m) if m.contains("cannot sync")), "{e}");
}

/// A body that cannot be written (here the log's directory is a file) fails its accept with
/// an I/O error, which the sender is answered 503 and retries; nothing is stored. A dead
/// letter, whose body stays in its row, is still accepted.
#[tokio::test]
async fn an_accept_whose_body_cannot_be_written_fails_as_a_storage_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let q = SqliteQueue::open(&path, Durability::Fsync, Role::Deliverer).unwrap();
    std::fs::write(dir.path().join("q.db-payloads"), b"not a directory").unwrap();
    let e = q.accept(inbound_at("a", 1, b"{}", InboundStatus::Mapped), vec![trigger()]).await.unwrap_err();
    assert!(matches!(&e, QueueError::Io(m) if m.contains("payload segment")), "{e}");
    assert_eq!(stored(&path, "a"), None);
    let failed = InboundStatus::MappingFailed("no rule".into());
    q.accept(inbound_at("b", 1, b"{}", failed), Vec::new()).await.unwrap();
}
