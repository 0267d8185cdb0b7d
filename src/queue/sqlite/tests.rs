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
    assert_eq!(other.unwrap(), Accepted::Committed { id: "b".into(), events: 0, stale: 0 });
    let again = q.accept(inbound("c", "d2"), Vec::new()).await.unwrap();
    assert_eq!(again, Accepted::Committed { id: "c".into(), events: 0, stale: 0 }, "d2 was not left recorded");
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
        let done = Ok(Accepted::Committed { id: "a".into(), events: 0, stale: 0 });
        to_sync.send(Committed(vec![Answer::Accept(reply, done, accept)])).unwrap();
        answer.blocking_recv().unwrap().0
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("q.db-wal"), b"frames").unwrap();
    assert_eq!(
        answered(dir.path().join("q.db-wal")).unwrap(),
        Accepted::Committed { id: "a".into(), events: 0, stale: 0 }
    );
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

/// The database holds routing keys and payloads: whatever the umask, what the queue creates is
/// the owner's alone (folders 0700, files 0600).
#[tokio::test]
async fn the_store_s_files_and_folders_are_created_for_the_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data").join("q.db");
    let q = SqliteQueue::open(&db, Durability::Fsync, Role::Deliverer).unwrap();
    let mapped = inbound_at("a", super::super::now_millis(), b"{\"n\":1}", InboundStatus::Mapped);
    q.accept(mapped, vec![trigger()]).await.unwrap();
    let mode =
        |p: &Path| std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777;
    let payloads = dir.path().join("data").join("q.db-payloads");
    let mut checked = vec![(dir.path().join("data"), 0o700), (payloads.clone(), 0o700)];
    for file in ["q.db", "q.db-wal", "q.db-shm"] {
        checked.push((dir.path().join("data").join(file), 0o600));
    }
    for segment in std::fs::read_dir(&payloads).unwrap() {
        checked.push((segment.unwrap().path(), 0o600));
    }
    assert!(checked.len() > 5, "a payload segment was written: {checked:?}");
    for (path, want) in checked {
        assert_eq!(mode(&path), want, "{} is {:o}", path.display(), mode(&path));
    }
}

/// A trigger on dedup_key `dk`: its own lane.
fn trigger_on(dk: &str) -> Event {
    let key = RoutingKey::parse(crate::secret::Secret::new("0123456789abcdef0123456789abcdef")).unwrap();
    let draft = crate::event::AlertDraft {
        action: "trigger".into(),
        dedup_key: Some(dk.into()),
        summary: Some("s".into()),
        source: Some("src".into()),
        ..Default::default()
    };
    Event::alert(key, draft).unwrap()
}

fn delivered(at: Millis) -> Attempt {
    Attempt { at, status: Some(202), detail: None, dedup_key: None }
}

/// Claims every due event and records it delivered: what delivery writes.
async fn deliver_all(q: &SqliteQueue) -> usize {
    let claimed = q.claim(super::super::now_millis(), 1000, Duration::from_secs(30)).await.unwrap();
    for c in &claimed {
        let done = q.finish(c.id, c.lease, delivered(super::super::now_millis()), Finish::Delivered).await.unwrap();
        assert!(done, "event {} finished", c.id);
    }
    claimed.len()
}

/// Over `storage.max_bytes` (used pages plus payload segments) accepts are refused with the
/// reason, while claims and finishes go on; making room deletes the delivered events and the
/// payload segment their bodies were in, and accepts are taken again, nobody stepping in.
#[tokio::test]
async fn over_its_cap_the_store_refuses_accepts_delivers_and_makes_room_until_it_takes_them_again() {
    let empty = tempfile::tempdir().unwrap();
    let fresh = SqliteQueue::open(&empty.path().join("q.db"), Durability::Fsync, Role::Deliverer).unwrap();
    let empty_bytes = fresh.room().await.unwrap().used_bytes.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let headroom = Headroom { min_free_bytes: 0, max_bytes: Some(empty_bytes + 400 * 1024) };
    let q = SqliteQueue::open_with(&dir.path().join("q.db"), Durability::Fsync, Role::Deliverer, headroom).unwrap();
    let body = bytes::Bytes::from(vec![b'x'; 40 * 1024]);
    let webhook = || NewInbound::new("gh", super::super::now_millis(), body.clone(), InboundStatus::Mapped);
    let mut accepted = 0;
    let why = loop {
        match q.accept(webhook(), vec![trigger_on(&format!("k{accepted}"))]).await {
            Ok(_) => accepted += 1,
            Err(QueueError::OutOfRoom(why)) => break why,
            Err(e) => panic!("an accept over the cap fails as out of room, not {e:?}"),
        }
        // The writer measures at most once a second; the test asks after every accept.
        q.room().await.unwrap();
        assert!(accepted < 100, "the cap never refused an accept");
    };
    assert!(why.contains("over storage.max_bytes"), "{why}");
    assert!((9..=11).contains(&accepted), "the cap counts the payload log: {accepted} bodies of 40 KiB in 400 KiB");

    assert_eq!(deliver_all(&q).await, accepted, "claims and finishes go on while accepts are refused");
    assert!(q.room().await.unwrap().short.is_some(), "delivered rows still take their room until pruned");
    let freed = q.make_room(1000).await.unwrap();
    assert!(freed.rows >= 3 * accepted as u64, "events, attempts and payload rows: {freed:?}");
    assert_eq!((freed.segments, freed.segment_bytes), (1, 40 * 1024 * accepted as u64), "{freed:?}");
    let room = q.room().await.unwrap();
    assert_eq!(room.short, None, "{room:?}");
    q.accept(webhook(), vec![trigger_on("after")]).await.unwrap();
}

/// Making room goes oldest first, at most the number asked for, and never takes a pending
/// event or a dead letter, nor the segment a pending event's body is in.
#[tokio::test]
async fn making_room_deletes_the_oldest_finished_events_and_keeps_what_is_still_needed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let q = SqliteQueue::open_with(&path, Durability::Fsync, Role::Deliverer, Headroom::NONE).unwrap();
    for (id, dk) in [("a", "k1"), ("b", "k2"), ("c", "k3")] {
        q.accept(inbound_at(id, super::super::now_millis(), b"{}", InboundStatus::Mapped), vec![trigger_on(dk)])
            .await
            .unwrap();
        assert_eq!(deliver_all(&q).await, 1);
        // Finish times must differ to tell the oldest.
        std::thread::sleep(Duration::from_millis(2));
    }
    q.accept(inbound_at("pending", super::super::now_millis(), b"{}", InboundStatus::Mapped), vec![trigger_on("k4")])
        .await
        .unwrap();
    q.accept(inbound_at("dead", 1, b"{}", InboundStatus::MappingFailed("rule".into())), vec![]).await.unwrap();
    let freed = q.make_room(1).await.unwrap();
    assert_eq!(freed.segments, 0, "the segment holds the pending event's body: {freed:?}");
    assert_eq!(stored(&path, "a"), None, "the oldest delivered went");
    assert!(stored(&path, "b").is_some() && stored(&path, "c").is_some(), "only one was asked for");
    q.make_room(1000).await.unwrap();
    assert_eq!((stored(&path, "b"), stored(&path, "c")), (None, None));
    assert!(stored(&path, "pending").is_some() && stored(&path, "dead").is_some());
    assert_eq!(q.depth().await.unwrap().0, 1, "the pending event stays");
}

/// A write refused for lack of space (SQLite's disk full, injected with `max_page_count`) is
/// an accept answered "out of room", and shuts the gate: the next accept is refused without a
/// write, while delivery still claims and finishes. Once the store measures room, accepts are
/// taken again.
#[tokio::test]
async fn a_full_disk_shuts_accepts_until_the_store_measures_room_and_delivery_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let q = SqliteQueue::open_with(&path, Durability::Fsync, Role::Deliverer, Headroom::NONE).unwrap();
    q.accept(inbound_at("before", 1, b"{}", InboundStatus::Mapped), vec![trigger_on("k1")]).await.unwrap();
    q.run(|c| Ok(c.execute_batch("PRAGMA max_page_count = 1")?)).await.unwrap();
    let big: &'static [u8] = Box::leak(vec![b'x'; 64 * 1024].into_boxed_slice());
    let full = q.accept(inbound_at("big", 1, big, InboundStatus::MappingFailed("rule".into())), vec![]).await;
    assert!(matches!(&full, Err(QueueError::OutOfRoom(_))), "{full:?}");
    let gated = q.accept(inbound_at("small", 1, b"{}", InboundStatus::Mapped), vec![trigger_on("k2")]).await;
    assert!(matches!(&gated, Err(QueueError::OutOfRoom(why)) if why.contains("disk is full")), "{gated:?}");
    assert_eq!(deliver_all(&q).await, 1, "delivery needs no new page");
    q.run(|c| Ok(c.execute_batch("PRAGMA max_page_count = 1073741823")?)).await.unwrap();
    assert_eq!(q.room().await.unwrap().short, None);
    q.accept(inbound_at("small", 1, b"{}", InboundStatus::Mapped), vec![trigger_on("k2")]).await.unwrap();
    assert_eq!(stored(&path, "big"), None);
}

/// The deliverer keeps a reserve file beside the database (a quarter of the floor) and gives
/// it up the moment a write fails for lack of space, for delivery's writes; it is written
/// again once the store measures room. A tool beside it keeps none.
#[tokio::test]
async fn the_reserve_is_released_when_the_disk_is_full_and_written_again_once_there_is_room() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let reserve = dir.path().join("q.db-reserve");
    let headroom = Headroom { min_free_bytes: 4 << 20, max_bytes: None };
    let q = SqliteQueue::open_with(&path, Durability::Fsync, Role::Deliverer, headroom).unwrap();
    assert_eq!(std::fs::metadata(&reserve).unwrap().len(), 1 << 20);
    q.run(|c| Ok(c.execute_batch("PRAGMA max_page_count = 1")?)).await.unwrap();
    let big: &'static [u8] = Box::leak(vec![b'x'; 64 * 1024].into_boxed_slice());
    let full = q.accept(inbound_at("big", 1, big, InboundStatus::MappingFailed("rule".into())), vec![]).await;
    assert!(matches!(&full, Err(QueueError::OutOfRoom(_))), "{full:?}");
    assert!(!reserve.exists(), "released for delivery");
    q.run(|c| Ok(c.execute_batch("PRAGMA max_page_count = 1073741823")?)).await.unwrap();
    assert_eq!(q.room().await.unwrap().short, None);
    assert_eq!(std::fs::metadata(&reserve).unwrap().len(), 1 << 20, "held again");
    drop(q);

    let other = tempfile::tempdir().unwrap();
    let tool = other.path().join("q.db");
    let _t = SqliteQueue::open_with(&tool, Durability::Fsync, Role::Tool, headroom).unwrap();
    assert!(!other.path().join("q.db-reserve").exists());
}
