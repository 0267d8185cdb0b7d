//! Behaviour of the queue, written against the trait.

use super::*;
use crate::event::{AlertDraft, ChangeDraft, RoutingKey};
use crate::secret::Secret;
use std::sync::Arc;

fn key() -> RoutingKey {
    RoutingKey::parse(Secret::new("0123456789abcdef0123456789abcdef")).unwrap()
}

fn other_key() -> RoutingKey {
    RoutingKey::parse(Secret::new("fedcba9876543210fedcba9876543210")).unwrap()
}

fn alert(action: &str, dedup: &str) -> Event {
    alert_on(key(), action, dedup)
}

fn alert_on(key: RoutingKey, action: &str, dedup: &str) -> Event {
    Event::alert(
        key,
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

fn inbound(delivery_id: Option<&str>) -> NewInbound {
    NewInbound { delivery_id: delivery_id.map(str::to_string), ..inbound_from("gh") }
}

/// A webhook of `source`, without a delivery id.
fn inbound_from(source: &str) -> NewInbound {
    NewInbound::new(source, now_millis(), bytes::Bytes::from_static(b"{}"), InboundStatus::Mapped)
}

/// A fresh SQLite queue; the directory lives as long as the guard.
pub(super) fn sqlite() -> (Arc<dyn Queue>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let q = SqliteQueue::open(&dir.path().join("q.db"), Durability::Fsync, Role::Deliverer).unwrap();
    (Arc::new(q), dir)
}

#[path = "../../tests/it/helpers/pg_schema.rs"]
mod pg_schema;
pub(super) use pg_schema::PgSchema;

/// A replica's handle on the schema (a new pool, as another process would have).
pub(super) async fn replica(schema: &PgSchema) -> Arc<dyn Queue> {
    Arc::new(PostgresQueue::connect(&Secret::new(schema.url.clone())).await.unwrap())
}

/// A plain connection whose tables are the schema's.
async fn connect_in(schema: &PgSchema) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(&schema.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    c
}

/// The contract every backend keeps, one group per role: each case runs on SQLite always and on
/// PostgreSQL when DATABASE_URL is set, each on a fresh store, as
/// `<role>::<backend>::<case>`. Each method of a role is called by at least two cases of its
/// group (`every_role_method_is_called_by_two_cases_of_its_role` checks this list).
macro_rules! on_every_backend {
    ($($role:ident: [$($test:ident),* $(,)?]),* $(,)?) => {
        $(
            mod $role {
                mod sqlite {
                    $(
                        #[tokio::test]
                        async fn $test() {
                            let (q, _dir) = crate::queue::tests::sqlite();
                            crate::queue::tests::$test(q).await;
                        }
                    )*
                }
                mod postgres {
                    use crate::queue::tests::{replica, PgSchema};
                    $(
                        #[tokio::test]
                        async fn $test() {
                            let Some(schema) = PgSchema::create(stringify!($test)).await else { return };
                            crate::queue::tests::$test(replica(&schema).await).await;
                            schema.drop().await;
                        }
                    )*
                }
            }
        )*
    };
}

on_every_backend! {
    intake: [
        a_repeated_delivery_id_is_reported_not_stored,
        concurrent_accepts_are_all_committed,
        a_resolve_goes_to_the_routing_key_its_trigger_went_to,
        a_resolve_stays_on_its_own_key_when_that_key_was_triggered_too,
        a_resolve_follows_only_its_own_source_s_triggers,
        a_resolve_follows_a_trigger_earlier_in_its_own_webhook,
        a_body_seen_before_is_a_duplicate_whatever_its_delivery_id,
        only_the_opener_closes_its_incident_unless_the_closer_may_close_it,
        a_resolve_waits_its_delay_and_a_trigger_meanwhile_damps_both,
        an_event_older_than_its_lane_s_sequence_is_stale_and_not_sent,
        a_trigger_after_a_held_resolve_of_a_lane_with_no_open_incident_is_sent,
        a_kept_payload_pages_once_per_source_and_reason_with_what_waits_counted,
    ],
    deliveries: [
        only_the_head_of_a_lane_is_claimed,
        a_dead_event_no_longer_blocks_its_lane,
        consecutive_pending_triggers_collapse_into_the_newest_but_never_into_a_resolve,
        a_deferred_event_is_claimed_again_only_when_due_and_without_an_attempt,
        the_dedup_key_pagerduty_answered_is_kept_with_its_attempt,
        a_claim_whose_lease_was_lost_cannot_renew_finish_or_defer_the_new_holders_claim,
        a_renewed_lease_keeps_its_event_past_the_first_expiry_and_a_finish_releases_it,
        a_dead_trigger_pages_unless_it_is_pagerhook_s_own_and_its_replay_resolves_the_page,
        a_key_s_due_events_go_acknowledges_and_resolves_first_then_triggers_by_severity_then_changes,
        pagerhook_s_own_page_takes_its_key_s_first_slot_ahead_of_resolves_and_critical_pages,
        sources_sharing_a_key_take_turns_within_a_priority,
        a_key_s_events_are_claimed_only_while_it_has_a_free_slot_and_the_best_takes_it,
        a_trigger_resolved_before_it_was_sent_is_superseded_with_its_resolve,
        a_429_closes_the_key_for_every_claim_until_its_hold_ends,
    ],
    dead_letters: [
        dead_letters_are_listed_shown_replayed_and_deleted,
        a_dead_trigger_knows_when_its_lane_was_resolved_after_it_died,
        only_dead_triggers_are_said_resolved_since,
        a_payload_over_the_event_cap_is_a_dead_letter_until_remapped_and_only_dead_events_are_requeued,
        the_own_page_is_resolved_with_the_removal_of_the_last_dead_letter_of_its_source_and_reason,
        a_payload_some_of_whose_items_failed_queues_the_others_and_keeps_its_items_for_replay,
    ],
    inspect: [
        events_are_searched_paged_and_shown_with_attempts_and_request,
        the_backlog_is_counted_from_its_oldest_pending_event,
        every_state_is_listed_and_an_event_shows_each_attempt_in_order,
        events_are_filtered_by_source_state_and_time,
        events_keep_their_summary_and_are_found_by_part_of_it,
        a_search_finds_a_summary_word_or_a_source_in_events_indexed_or_not_yet,
    ],
    retention: [
        pruning_keeps_pending_and_dead_events_and_failed_payloads,
        pruning_forgets_only_what_finished_before_the_cutoff_sticky_routes_included,
        dead_letters_past_their_retention_or_over_their_source_s_cap_are_dropped_oldest_first,
        a_dropped_dead_event_takes_its_attempts_and_leaves_live_events_and_replayed_ones,
        every_kind_of_kept_payload_is_dropped_past_the_dead_letter_retention,
        dropping_the_last_dead_letter_of_a_page_resolves_it,
    ],
    incidents: [
        the_ledger_keeps_what_pagerduty_accepted_under_the_key_it_answered,
        acknowledges_and_resolves_of_lanes_pagerhook_never_triggered_leave_no_incident,
        an_operator_resolve_is_queued_on_each_open_lane_and_recorded_as_the_operator_s,
        resolved_incidents_are_forgotten_after_the_retention_and_open_ones_kept,
        an_incident_its_source_fell_silent_on_is_resolved_as_pagerhook_s_and_a_live_one_is_not,
        a_silence_resolve_loses_to_a_trigger_that_came_after_the_judgement,
        an_escalating_trigger_goes_by_what_its_incident_holds_and_every_close_follows_its_escalations,
    ],
    conditions: [
        each_routing_key_s_backlog_is_counted_by_source_without_pagerhook_s_own,
        a_condition_pages_once_due_at_once_and_is_resolved_when_it_clears,
    ],
}

/// SQL run on a store behind the queue's back: how a damaged row, or one a newer build
/// wrote, is made.
enum Raw {
    Sqlite(std::path::PathBuf),
    Postgres(tokio_postgres::Client),
}

impl Raw {
    async fn exec(&self, sql: &str) {
        match self {
            Raw::Sqlite(path) => {
                let c = rusqlite::Connection::open(path).unwrap();
                c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
                c.execute_batch(sql).unwrap();
            }
            Raw::Postgres(c) => c.batch_execute(sql).await.unwrap(),
        }
    }
}

/// The SQLite search index is filled up to a watermark that survives a restart: the indexer
/// goes on after the events it indexed before, not from the first. Below the watermark a
/// search reads the index (with its rows removed behind the queue's back, an indexed text is
/// no longer found, while a two-letter search, which scans, still finds every event).
#[tokio::test]
async fn sqlite_search_index_resumes_at_its_watermark_and_is_what_a_search_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let q = SqliteQueue::open(&path, Durability::Fsync, Role::Deliverer).unwrap();
    let events = (1..=3).map(|n| titled(&format!("k/{n}"), "critical", &format!("Disk full on db-{n}"))).collect();
    q.accept(inbound(None), events).await.unwrap();
    assert_eq!(q.index_for_search(2).await.unwrap(), 2);
    drop(q);
    let q = SqliteQueue::open(&path, Durability::Fsync, Role::Deliverer).unwrap();
    assert_eq!(q.index_for_search(10).await.unwrap(), 1, "the third, after the two indexed before");
    assert_eq!(q.index_for_search(10).await.unwrap(), 0);
    let found = |search: &str| {
        let search = Some(search.to_string());
        let q = &q;
        async move { q.events(EventQuery { search, limit: 10, ..EventQuery::default() }).await.unwrap().len() }
    };
    assert_eq!(found("disk full").await, 3);
    Raw::Sqlite(path.clone()).exec("INSERT INTO events_search (events_search) VALUES ('delete-all')").await;
    assert_eq!(found("disk full").await, 0, "found through the index");
    assert_eq!(found("db").await, 3, "scanned");
}

/// Whatever deletes an event (retention, a dead letter deleted) deletes its row of the SQLite
/// search index: the index does not grow with what is forgotten.
#[tokio::test]
async fn sqlite_search_index_forgets_pruned_and_deleted_events() {
    let (q, dir) = sqlite();
    let indexed = |text: &'static str| {
        let path = dir.path().join("q.db");
        async move {
            let c = rusqlite::Connection::open(path).unwrap();
            let sql = "SELECT count(*) FROM events_search WHERE events_search MATCH ?1";
            c.query_row(sql, [format!("\"{text}\"")], |r| r.get::<_, i64>(0)).unwrap()
        }
    };
    let events = vec![titled("k/1", "critical", "Disk full on db-1"), titled("k/2", "critical", "Disk full on db-2")];
    q.accept(inbound(None), events).await.unwrap();
    index_everything(&q).await;
    assert_eq!(indexed("disk full").await, 2);
    let now = now_millis();
    for c in q.claim(now, 10, LEASE).await.unwrap() {
        let outcome =
            if c.event.dedup_key().unwrap().as_str() == "k/1" { Finish::Delivered } else { Finish::Dead("400".into()) };
        assert!(finish(&q, &c, answered(now, 400), outcome).await);
    }
    assert!(q.prune(now + 1).await.unwrap() >= 1);
    assert_eq!(indexed("db-1").await, 0, "the delivered event was pruned, and its index row with it");
    assert_eq!(indexed("db-2").await, 1, "a dead letter is kept, so is its row");
    let dead = q.dead_letters(None, 10).await.unwrap();
    assert!(q.delete_dead(DeadId::Event(dead[0].id.parse().unwrap())).await.unwrap());
    assert_eq!(indexed("disk full").await, 0);
}

#[tokio::test]
async fn sqlite_rows_this_build_does_not_know_are_errors_not_guesses() {
    let (q, dir) = sqlite();
    rows_this_build_does_not_know_are_errors_not_guesses(q, Raw::Sqlite(dir.path().join("q.db"))).await;
}

#[tokio::test]
async fn postgres_rows_this_build_does_not_know_are_errors_not_guesses() {
    let Some(schema) = PgSchema::create("rows_this_build_does_not_know_are_errors_not_guesses").await else { return };
    let q = replica(&schema).await;
    rows_this_build_does_not_know_are_errors_not_guesses(q, Raw::Postgres(connect_in(&schema).await)).await;
    schema.drop().await;
}

/// A kind, event state, inbound status or body format this build does not know is an error that names it,
/// on every path that reads it, never a default; a claim leaves such an event alone (leased,
/// logged) and still hands out the others.
async fn rows_this_build_does_not_know_are_errors_not_guesses(q: Arc<dyn Queue>, raw: Raw) {
    let mut failed = inbound(None);
    failed.status = InboundStatus::MappingFailed("rule 'x' failed".into());
    let failed_id = failed.id.clone();
    q.accept(failed, vec![]).await.unwrap();
    let lanes = ["odd-kind", "new-format", "dead-new-format", "odd-state", "fine"];
    q.accept(inbound(None), lanes.iter().map(|k| alert("trigger", k)).collect()).await.unwrap();
    let recent = q.recent(10).await.unwrap();
    let id = |k: &str| recent.iter().find(|e| e.dedup_key.as_deref() == Some(k)).unwrap().id;
    assert!(q.event(id("new-format")).await.unwrap().is_some(), "readable before the change");
    raw.exec(
        "UPDATE events SET kind = 'pigeon' WHERE dedup_key = 'odd-kind';
         UPDATE events SET format = 2 WHERE dedup_key = 'new-format';
         UPDATE events SET format = 3, state = 'dead', done_at = 1 WHERE dedup_key = 'dead-new-format';
         UPDATE events SET state = 'vanished', done_at = 1 WHERE dedup_key = 'odd-state';
         UPDATE inbound SET status = 'shelved' WHERE status = 'mapping_failed';",
    )
    .await;

    let err = q.event(id("odd-kind")).await.unwrap_err();
    assert!(matches!(&err, QueueError::BadRow(m) if m.contains("kind \"pigeon\"")), "{err:?}");
    let err = q.event(id("new-format")).await.unwrap_err();
    assert!(matches!(&err, QueueError::BadRow(m) if m.contains("format 2, which this build does not know")), "{err:?}");
    let err = q.event(id("odd-state")).await.unwrap_err();
    assert!(matches!(&err, QueueError::BadRow(m) if m.contains("state \"vanished\"")), "{err:?}");
    let err = q.dead_letter(DeadId::Event(id("dead-new-format"))).await.unwrap_err();
    assert!(matches!(&err, QueueError::BadRow(m) if m.contains("format 3")), "{err:?}");
    let err = q.inbound(failed_id).await.unwrap_err();
    assert!(matches!(&err, QueueError::BadRow(m) if m.contains("status \"shelved\"")), "{err:?}");
    assert!(err.to_string().starts_with("stored row cannot be read"), "{err}");

    let claimed = q.claim(now_millis(), 10, LEASE).await.unwrap();
    let keys: Vec<_> = claimed.iter().map(|c| c.event.dedup_key().unwrap().to_string()).collect();
    assert_eq!(keys, vec!["fine"], "unreadable events are not handed out as a guess");
}

/// Under `CI=true` a PostgreSQL test without DATABASE_URL fails instead of skipping: run one in
/// a child process of this test binary, both ways.
#[test]
fn without_database_url_postgres_tests_skip_visibly_but_fail_under_ci() {
    let run = |ci: Option<&str>| {
        let mut c = std::process::Command::new(std::env::current_exe().unwrap());
        c.args(["queue::tests::intake::postgres::a_repeated_delivery_id_is_reported_not_stored", "--exact"])
            .env_remove("DATABASE_URL")
            .env_remove("CI");
        if let Some(v) = ci {
            c.env("CI", v);
        }
        let out = c.output().unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let (passed, out) = run(None);
    assert!(passed && out.contains("SKIPPED on PostgreSQL"), "{out}");
    let (passed, out) = run(Some("true"));
    assert!(!passed && out.contains("CI=true but DATABASE_URL is unset"), "{out}");
}

/// An attempt PagerDuty answered with `status`, and nothing more.
fn answered(at: Millis, status: u16) -> Attempt {
    Attempt { at, status: Some(status), detail: None, dedup_key: None }
}

/// Records `attempt` and its outcome for claim `c`; whether the claim still held the event.
async fn finish(q: &Arc<dyn Queue>, c: &Claimed, attempt: Attempt, outcome: Finish) -> bool {
    q.finish(c.id, c.lease, attempt, outcome).await.unwrap()
}

const LEASE: std::time::Duration = std::time::Duration::from_secs(60);

async fn a_repeated_delivery_id_is_reported_not_stored(q: Arc<dyn Queue>) {
    let first = q.accept(inbound(Some("d1")), vec![alert("trigger", "k")]).await.unwrap();
    let Accepted::Committed { id, events: 1, .. } = first else { panic!("{first:?}") };
    let again = q.accept(inbound(Some("d1")), vec![alert("trigger", "k")]).await.unwrap();
    assert_eq!(again, Accepted::Duplicate { id });
    assert_eq!(q.depth().await.unwrap().0, 1);
}

async fn a_body_seen_before_is_a_duplicate_whatever_its_delivery_id(q: Arc<dyn Queue>) {
    let from = |source: &str, delivery: &str, sha: &str| NewInbound {
        delivery_id: Some(delivery.into()),
        body_sha256: Some(sha.into()),
        ..inbound_from(source)
    };
    let first = q.accept(from("gh", "d1", "aa"), vec![alert("resolve", "k")]).await.unwrap();
    let Accepted::Committed { id, events: 1, .. } = first else { panic!("{first:?}") };
    let replay = q.accept(from("gh", "d2", "aa"), vec![alert("resolve", "k")]).await.unwrap();
    assert_eq!(replay, Accepted::Duplicate { id: id.clone() });
    let elsewhere = q.accept(from("other", "d2", "aa"), vec![alert("trigger", "k")]).await.unwrap();
    assert!(matches!(elsewhere, Accepted::Committed { .. }), "another source's body is its own: {elsewhere:?}");
    // A used delivery id is a duplicate whatever its body, and leaves that body unrecorded.
    assert_eq!(q.accept(from("gh", "d1", "bb"), vec![]).await.unwrap(), Accepted::Duplicate { id });
    assert!(matches!(q.accept(from("gh", "d3", "bb"), vec![]).await.unwrap(), Accepted::Committed { .. }));
    assert_eq!(q.depth().await.unwrap().0, 2);
    // Forgotten with the retention, as delivery ids are.
    q.prune(now_millis() + 1).await.unwrap();
    assert!(matches!(q.accept(from("gh", "d4", "aa"), vec![]).await.unwrap(), Accepted::Committed { .. }));
}

async fn dead_letters_past_their_retention_or_over_their_source_s_cap_are_dropped_oldest_first(q: Arc<dyn Queue>) {
    let kept_payload = |source: &str, at: Millis| {
        let body = bytes::Bytes::from(vec![b'x'; 1000]);
        NewInbound::new(source, at, body, InboundStatus::MappingFailed("summary: missing".into()))
    };
    for (source, at) in [("a", 1000), ("a", 2000), ("a", 3000), ("b", 1000), ("b", 3000)] {
        q.accept(kept_payload(source, at), vec![]).await.unwrap();
    }
    // A dead event of `a` between them: a few hundred bytes of event body.
    q.accept(inbound_from("a"), vec![alert("trigger", "k")]).await.unwrap();
    let c = q.claim(now_millis(), 1, LEASE).await.unwrap();
    finish(&q, &c[0], answered(2500, 400), Finish::Dead("400".into())).await;

    // Retention up to 1500; 1500 bytes a source: a's newest payload and its dead event fit.
    let dropped = q.prune_dead(1500, 1500).await.unwrap();
    let dropped: Vec<_> = dropped.iter().map(|d| (d.source.as_str(), d.reason, d.letters, d.bytes)).collect();
    let (age, size) = (DeadDropReason::Age, DeadDropReason::Size);
    assert_eq!(dropped, vec![("a", age, 1, 1000), ("a", size, 1, 1000), ("b", age, 1, 1000)]);
    let mut left: Vec<_> =
        q.dead_letters(None, 10).await.unwrap().into_iter().map(|d| (d.source, d.kind, d.at)).collect();
    left.sort();
    let kept = |s: &str, kind: &str, at: Millis| (s.to_string(), kind.to_string(), at);
    assert_eq!(
        left,
        vec![kept("a", "event", 2500), kept("a", "mapping_failed", 3000), kept("b", "mapping_failed", 3000)]
    );
    assert_eq!(q.prune_dead(1500, 1500).await.unwrap(), vec![], "nothing more to drop");
}

/// Each status that makes a kept payload a dead letter (`InboundStatus::is_dead_letter`) is
/// pruned by the dead-letter retention: an `unmatched` one kept forever would fill the disk.
async fn every_kind_of_kept_payload_is_dropped_past_the_dead_letter_retention(q: Arc<dyn Queue>) {
    let statuses = [
        InboundStatus::MappingFailed("summary: missing".into()),
        InboundStatus::TooManyEvents("5 events, at most 2".into()),
        InboundStatus::Unmatched,
    ];
    for status in statuses {
        assert!(status.is_dead_letter(), "{status:?}");
        q.accept(NewInbound::new("a", 1000, bytes::Bytes::from_static(b"{}"), status), vec![]).await.unwrap();
    }
    assert_eq!(q.dead_letters(None, 10).await.unwrap().len(), 3);
    let dropped = q.prune_dead(2000, u64::MAX).await.unwrap();
    let letters: u64 = dropped.iter().map(|d| d.letters).sum();
    assert_eq!(letters, 3, "{dropped:?}");
    assert!(q.dead_letters(None, 10).await.unwrap().is_empty(), "none is left");
}

async fn a_dropped_dead_event_takes_its_attempts_and_leaves_live_events_and_replayed_ones(q: Arc<dyn Queue>) {
    q.accept(inbound_from("a"), vec![alert("trigger", "dead"), alert("trigger", "replayed"), alert("trigger", "live")])
        .await
        .unwrap();
    let claimed = q.claim(now_millis(), 3, LEASE).await.unwrap();
    let key = |c: &Claimed| c.event.dedup_key().map(|k| k.as_str().to_string());
    let (mut dead, mut replayed) = (None, None);
    for c in &claimed {
        match key(c).as_deref() {
            Some("dead") => dead = Some(c.id),
            Some("replayed") => replayed = Some(c.id),
            _ => continue,
        }
        finish(&q, c, answered(100, 400), Finish::Dead("400".into())).await;
    }
    let (dead, replayed) = (dead.unwrap(), replayed.unwrap());
    let requeued = q.requeue_dead(replayed, now_millis()).await.unwrap().unwrap();
    assert_eq!(q.event(dead).await.unwrap().unwrap().attempt_log.len(), 1);

    // Everything dead is past a retention that ends now; nothing is over an unbounded cap.
    let dropped = q.prune_dead(now_millis() + 1, u64::MAX).await.unwrap();
    let dropped: Vec<_> = dropped.iter().map(|d| (d.source.as_str(), d.reason, d.letters)).collect();
    assert_eq!(dropped, vec![("a", DeadDropReason::Age, 1)], "only the dead event: a replayed one is history");
    assert!(q.event(dead).await.unwrap().is_none(), "the dead event and its attempts are gone");
    assert!(q.dead_letters(None, 10).await.unwrap().is_empty());
    let replayed_state = q.event(replayed).await.unwrap().unwrap().row.summary.state;
    assert_eq!(replayed_state, EventState::Replayed);
    // The live event and the replay's copy still wait.
    assert_eq!(q.depth().await.unwrap().0, 2, "{requeued}");
    assert_eq!(q.prune_dead(now_millis() + 1, u64::MAX).await.unwrap(), vec![]);
}

async fn only_the_head_of_a_lane_is_claimed(q: Arc<dyn Queue>) {
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
    finish(&q, &c[0], answered(now, 500), Finish::RetryAt(now + 1000)).await;
    assert!(q.claim(now, 10, LEASE).await.unwrap().is_empty());
    assert_eq!(q.next_due(now).await.unwrap(), Some(now + 1000));
    let retried = q.claim(now + 1000, 10, LEASE).await.unwrap();
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0].id, trigger);
    assert_eq!(retried[0].attempts, 1);
    assert!(finish(&q, &retried[0], answered(now, 202), Finish::Delivered).await);
    let next = q.claim(now + 1000, 10, LEASE).await.unwrap();
    assert_eq!(next[0].event.action(), Some(crate::event::Action::Resolve));
}

async fn a_dead_event_no_longer_blocks_its_lane(q: Arc<dyn Queue>) {
    q.accept(inbound(None), vec![alert("trigger", "k"), alert("resolve", "k")]).await.unwrap();
    let now = now_millis();
    let c = q.claim(now, 10, LEASE).await.unwrap();
    q.finish(
        c[0].id,
        c[0].lease,
        Attempt { at: now, status: Some(400), detail: Some("bad".into()), dedup_key: None },
        Finish::Dead("400: bad".into()),
    )
    .await
    .unwrap();
    let next = q.claim(now, 10, LEASE).await.unwrap();
    assert_eq!(next.len(), 1);
    let recent = q.recent(10).await.unwrap();
    let dead = recent.iter().find(|e| e.state == EventState::Dead).unwrap();
    assert_eq!(dead.last_error.as_deref(), Some("400: bad"));
}

#[tokio::test]
async fn leases_are_released_when_the_store_is_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    {
        let q = SqliteQueue::open(&path, Durability::Process, Role::Deliverer).unwrap();
        q.accept(inbound(None), vec![alert("trigger", "k")]).await.unwrap();
        assert_eq!(q.claim(now_millis(), 10, LEASE).await.unwrap().len(), 1);
    }
    let q = SqliteQueue::open(&path, Durability::Process, Role::Deliverer).unwrap();
    assert_eq!(
        q.claim(now_millis(), 10, LEASE).await.unwrap().len(),
        1,
        "a claim by a dead process does not strand the event"
    );
}

/// SQLite: a claim joins the group commit of the delivery outcomes queued before it and sees
/// them: the lane a `finish` ahead of it freed is claimable at once. (The worker claims again
/// as soon as an answer is in, right behind that `finish`.)
#[tokio::test]
async fn sqlite_a_claim_sees_the_finishes_queued_ahead_of_it() {
    let (q, _dir) = sqlite();
    q.accept(inbound(None), vec![alert("trigger", "k"), alert("resolve", "k")]).await.unwrap();
    // Read after the accept: its events are due from the millisecond it was received.
    let now = now_millis();
    let claimed = q.claim(now, 10, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 1, "only the lane's head");
    assert_eq!(claimed[0].event.action(), Some(crate::event::Action::Trigger));
    let (finished, next) = tokio::join!(
        q.finish(claimed[0].id, claimed[0].lease, answered(now, 202), Finish::Delivered),
        q.claim(now, 10, LEASE)
    );
    assert!(finished.unwrap());
    let next = next.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].event.action(), Some(crate::event::Action::Resolve));
    assert!(q.claim(now, 10, LEASE).await.unwrap().is_empty(), "the claim's lease was committed");
}

async fn concurrent_accepts_are_all_committed(q: Arc<dyn Queue>) {
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

async fn pruning_keeps_pending_and_dead_events_and_failed_payloads(q: Arc<dyn Queue>) {
    q.accept(inbound(Some("a")), vec![alert("trigger", "delivered")]).await.unwrap();
    q.accept(inbound(Some("b")), vec![alert("trigger", "dead")]).await.unwrap();
    q.accept(inbound(Some("c")), vec![alert("trigger", "pending")]).await.unwrap();
    let mut failed = inbound(Some("d"));
    failed.status = InboundStatus::MappingFailed("boom".into());
    q.accept(failed, vec![]).await.unwrap();
    let now = now_millis();
    let c = q.claim(now, 2, LEASE).await.unwrap();
    finish(&q, &c[0], answered(now, 202), Finish::Delivered).await;
    finish(&q, &c[1], answered(now, 400), Finish::Dead("400".into())).await;
    assert!(q.prune(now + 1).await.unwrap() > 0);
    let states: Vec<_> = q.recent(10).await.unwrap().into_iter().map(|e| e.state.as_str()).collect();
    assert_eq!(states, vec!["pending", "dead"]);
    // The delivery ids are forgotten with them: a redelivery after retention is new.
    assert!(matches!(q.accept(inbound(Some("a")), vec![]).await.unwrap(), Accepted::Committed { .. }));
}

/// Claims everything claimable now and marks it delivered; returns (action, dedup_key, routing key) in claim order.
async fn deliver_all(q: &Arc<dyn Queue>, now: Millis) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    loop {
        let mut batch = q.claim(now, 100, LEASE).await.unwrap();
        if batch.is_empty() {
            return out;
        }
        // Lanes of one claim go in parallel: in acceptance order here, to compare.
        batch.sort_by_key(|c| c.id);
        for c in batch {
            out.push((
                c.event.action().unwrap().as_str().to_string(),
                c.event.dedup_key().unwrap().to_string(),
                c.event.routing_key().expose().to_string(),
            ));
            finish(q, &c, answered(now, 202), Finish::Delivered).await;
        }
    }
}

/// [`deliver_all`] now, each routing key named `own` ([`key`]) or `other` ([`other_key`]).
async fn deliver_all_by_key(q: &Arc<dyn Queue>) -> Vec<(String, String, &'static str)> {
    let name = |k: &str| if k == key().expose() { "own" } else { "other" };
    deliver_all(q, now_millis()).await.into_iter().map(|(action, dk, k)| (action, dk, name(&k))).collect()
}

/// `(action, dedup_key, key name)`, as [`deliver_all_by_key`] gives them.
fn sent(expected: &[(&str, &str, &'static str)]) -> Vec<(String, String, &'static str)> {
    expected.iter().map(|(action, dk, key)| (action.to_string(), dk.to_string(), *key)).collect()
}

async fn a_resolve_goes_to_the_routing_key_its_trigger_went_to(q: Arc<dyn Queue>) {
    q.accept(inbound(None), vec![alert_on(other_key(), "trigger", "db")]).await.unwrap();
    // The resolve's mapping picked the default key, but the incident lives on the other one.
    q.accept(inbound(None), vec![alert_on(key(), "acknowledge", "db"), alert_on(key(), "resolve", "db")])
        .await
        .unwrap();
    // A dedup_key never triggered anywhere keeps its own key.
    q.accept(inbound(None), vec![alert_on(key(), "resolve", "never")]).await.unwrap();
    assert_eq!(
        deliver_all_by_key(&q).await,
        sent(&[
            ("trigger", "db", "other"),
            ("resolve", "never", "own"),
            ("acknowledge", "db", "other"),
            ("resolve", "db", "other"),
        ]),
        "rerouted events share their trigger's lane, so they also wait for it"
    );
}

async fn a_resolve_stays_on_its_own_key_when_that_key_was_triggered_too(q: Arc<dyn Queue>) {
    q.accept(inbound(None), vec![alert_on(key(), "trigger", "db"), alert_on(other_key(), "trigger", "db")])
        .await
        .unwrap();
    q.accept(inbound(None), vec![alert_on(key(), "resolve", "db")]).await.unwrap();
    let sent = deliver_all(&q, now_millis()).await;
    assert_eq!(sent.last().unwrap(), &("resolve".into(), "db".into(), key().expose().to_string()));
}

/// Source "a" triggered `db` on the other key; source "b" (which may post any dedup_key)
/// resolving `db` on its own key must not reach "a"'s incident. "a"'s own resolve still does.
async fn a_resolve_follows_only_its_own_source_s_triggers(q: Arc<dyn Queue>) {
    q.accept(inbound_from("a"), vec![alert_on(other_key(), "trigger", "db")]).await.unwrap();
    q.accept(inbound_from("b"), vec![alert_on(key(), "acknowledge", "db"), alert_on(key(), "resolve", "db")])
        .await
        .unwrap();
    q.accept(inbound_from("a"), vec![alert_on(key(), "resolve", "db")]).await.unwrap();
    assert_eq!(
        deliver_all_by_key(&q).await,
        sent(&[
            ("trigger", "db", "other"),
            ("acknowledge", "db", "own"),
            ("resolve", "db", "own"),
            ("resolve", "db", "other")
        ]),
        "b's events stay on b's key; a's resolve goes where a's trigger went"
    );
}

async fn consecutive_pending_triggers_collapse_into_the_newest_but_never_into_a_resolve(q: Arc<dyn Queue>) {
    for a in ["trigger", "trigger", "trigger", "resolve", "trigger", "trigger"] {
        q.accept(inbound(None), vec![alert(a, "k")]).await.unwrap();
    }
    let now = now_millis();
    let first = q.claim(now, 10, LEASE).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].collapsed.len(), 2, "{first:?}");
    assert!(first[0].collapsed.iter().all(|id| *id < first[0].id));
    finish(&q, &first[0], answered(now, 202), Finish::Delivered).await;
    let resolve = q.claim(now, 10, LEASE).await.unwrap();
    assert_eq!(resolve[0].event.action(), Some(crate::event::Action::Resolve));
    assert!(resolve[0].collapsed.is_empty());
    finish(&q, &resolve[0], answered(now, 202), Finish::Delivered).await;
    let last = q.claim(now, 10, LEASE).await.unwrap();
    assert_eq!(last[0].collapsed.len(), 1);
    let states: Vec<_> = q.recent(10).await.unwrap().into_iter().rev().map(|e| e.state.as_str()).collect();
    assert_eq!(states, vec!["collapsed", "collapsed", "delivered", "delivered", "collapsed", "pending"]);
}

async fn a_deferred_event_is_claimed_again_only_when_due_and_without_an_attempt(q: Arc<dyn Queue>) {
    q.accept(inbound(None), vec![alert("trigger", "k")]).await.unwrap();
    // After the accept: an event is due from its arrival, which a `now` taken before could precede.
    let now = now_millis();
    let c = q.claim(now, 10, LEASE).await.unwrap();
    q.defer(c[0].id, c[0].lease, now + 5000).await.unwrap();
    assert!(q.claim(now + 4999, 10, LEASE).await.unwrap().is_empty());
    assert_eq!(q.next_due(now).await.unwrap(), Some(now + 5000));
    let again = q.claim(now + 5000, 10, LEASE).await.unwrap();
    assert_eq!(again[0].id, c[0].id);
    assert_eq!(again[0].attempts, 0);
}

/// A trigger of `severity` for lane `dedup` on the default key.
fn trigger_of(severity: &str, dedup: &str) -> Event {
    let draft = AlertDraft {
        action: "trigger".into(),
        dedup_key: Some(dedup.into()),
        summary: Some("s".into()),
        source: Some("src".into()),
        severity: Some(severity.into()),
        ..AlertDraft::default()
    };
    Event::alert(key(), draft).unwrap()
}

/// Claims one event at a time at `now` as `pick` says, delivering each, until none is left:
/// the dedup_keys (`change` for a change event) in the order they went.
async fn one_at_a_time(q: &Arc<dyn Queue>, now: Millis, pick: &Pick) -> Vec<String> {
    let mut order = Vec::new();
    loop {
        let batch = q.claim_with(now, 1, LEASE, pick).await.unwrap();
        let Some(c) = batch.claimed.first() else { return order };
        order.push(c.event.dedup_key().map_or("change".to_string(), |k| k.to_string()));
        assert!(finish(q, c, answered(now, 202), Finish::Delivered).await);
    }
}

async fn a_key_s_due_events_go_acknowledges_and_resolves_first_then_triggers_by_severity_then_changes(
    q: Arc<dyn Queue>,
) {
    let events = vec![
        change(),
        trigger_of("info", "info"),
        trigger_of("warning", "warning"),
        // A lane's own order never changes: its resolve waits for its (info) trigger.
        trigger_of("info", "lane"),
        alert("resolve", "lane"),
        trigger_of("critical", "critical"),
        trigger_of("error", "error"),
        alert("acknowledge", "acked"),
        alert("resolve", "resolved"),
    ];
    q.accept(inbound(None), events).await.unwrap();
    let order = one_at_a_time(&q, now_millis(), &Pick::default()).await;
    assert_eq!(
        order,
        ["acked", "resolved", "critical", "error", "warning", "info", "lane", "lane", "change"],
        "the lane's resolve goes right after its trigger, as the best due event then"
    );
}

async fn pagerhook_s_own_page_takes_its_key_s_first_slot_ahead_of_resolves_and_critical_pages(q: Arc<dyn Queue>) {
    let events = vec![alert("resolve", "resolved"), trigger_of("critical", "critical"), alert("acknowledge", "acked")];
    q.accept(inbound_from("gh"), events).await.unwrap();
    let now = now_millis();
    let raised = q.hold_conditions(vec![own::Reason::StormWaiting], vec![storm_held(key(), true)], now).await.unwrap();
    assert_eq!(raised.len(), 1);
    let storm = own::dedup_key(&own::key_subject(&key()), own::Reason::StormWaiting);
    let order = one_at_a_time(&q, now, &Pick::default()).await;
    assert_eq!(
        order,
        [storm.as_str(), "resolved", "acked", "critical"],
        "the storm page must not wait behind the storm"
    );
}

async fn sources_sharing_a_key_take_turns_within_a_priority(q: Arc<dyn Queue>) {
    let flood: Vec<Event> = (0..10).map(|i| trigger_of("critical", &format!("flood-{i}"))).collect();
    q.accept(inbound_from("flood"), flood).await.unwrap();
    q.accept(inbound_from("quiet"), vec![trigger_of("critical", "page")]).await.unwrap();
    q.accept(inbound_from("third"), vec![trigger_of("critical", "third-1"), trigger_of("critical", "third-2")])
        .await
        .unwrap();
    let now = now_millis();
    let order = one_at_a_time(&q, now, &Pick::default()).await;
    assert_eq!(&order[..6], ["flood-0", "page", "third-1", "flood-1", "third-2", "flood-2"], "{order:?}");
    // In one claim too: each source's first, then each one's second.
    let more: Vec<Event> = (10..13).map(|i| trigger_of("error", &format!("flood-{i}"))).collect();
    q.accept(inbound_from("flood"), more).await.unwrap();
    q.accept(inbound_from("quiet"), vec![trigger_of("error", "page-2")]).await.unwrap();
    let batch = q.claim_with(now_millis(), 3, LEASE, &Pick::default()).await.unwrap();
    let keys: Vec<String> = batch.claimed.iter().map(|c| c.event.dedup_key().unwrap().to_string()).collect();
    assert_eq!(keys, ["page-2", "flood-10", "flood-11"], "the source served longest ago first");
}

async fn a_key_s_events_are_claimed_only_while_it_has_a_free_slot_and_the_best_takes_it(q: Arc<dyn Queue>) {
    use crate::delivery::pacing::Limits;
    // One every (60 s + margin) / 60 = 1034 ms, two at once.
    let pick = Pick { pace: Some(Arc::new(Limits::new(60, 2))), supersede: false };
    let storm: Vec<Event> = (0..5).map(|i| trigger_of("warning", &format!("storm-{i}"))).collect();
    q.accept(inbound_from("flood"), storm).await.unwrap();
    q.accept(inbound(None), vec![alert_on(other_key(), "trigger", "elsewhere")]).await.unwrap();
    let now = now_millis();
    let first = q.claim_with(now, 10, LEASE, &pick).await.unwrap();
    assert_eq!(first.claimed.len(), 3, "the burst of the key and the other key's event: {first:?}");
    assert_eq!(first.paced_until, Some(now + 1034), "when the key has its next slot");
    assert!(q.claim_with(now + 1033, 10, LEASE, &pick).await.unwrap().claimed.is_empty());
    // Nothing was promised ahead: a critical page that arrives now takes the next slot.
    q.accept(inbound_from("quiet"), vec![trigger_of("critical", "page")]).await.unwrap();
    let next = q.claim_with(now + 1034, 10, LEASE, &pick).await.unwrap();
    let keys: Vec<String> = next.claimed.iter().map(|c| c.event.dedup_key().unwrap().to_string()).collect();
    assert_eq!(keys, ["page"]);
    // A 429 holds the key past its next slot.
    q.hold(&key().sha256(), now + 5_000, Arc::new(Limits::new(60, 2))).await.unwrap();
    let held = q.claim_with(now + 2068, 10, LEASE, &pick).await.unwrap();
    assert!(held.claimed.is_empty());
    assert_eq!(held.paced_until, Some(now + 5_000));
    // Unpaced (a dry run), the rest goes at once.
    assert_eq!(q.claim_with(now + 2068, 10, LEASE, &Pick::default()).await.unwrap().claimed.len(), 3);
}

#[tokio::test]
async fn a_restart_on_sqlite_grants_no_fresh_burst() {
    use crate::delivery::pacing::Limits;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let pick = Pick { pace: Some(Arc::new(Limits::new(60, 2))), supersede: false };
    let now = {
        let q = SqliteQueue::open(&path, Durability::Fsync, Role::Deliverer).unwrap();
        let storm: Vec<Event> = (0..5).map(|i| alert("trigger", &format!("storm-{i}"))).collect();
        q.accept(inbound(None), storm).await.unwrap();
        let now = now_millis();
        assert_eq!(q.claim_with(now, 10, LEASE, &pick).await.unwrap().claimed.len(), 2);
        now
    };
    let q = SqliteQueue::open(&path, Durability::Fsync, Role::Deliverer).unwrap();
    let after = q.claim_with(now + 10, 10, LEASE, &pick).await.unwrap();
    assert!(after.claimed.is_empty(), "the key's burst was spent before the restart");
    assert_eq!(after.paced_until, Some(now + 1034));
}

async fn a_trigger_resolved_before_it_was_sent_is_superseded_with_its_resolve(q: Arc<dyn Queue>) {
    let supersede = Pick { pace: None, supersede: true };
    // A lane resolved once before: what waits after that resolve can be superseded.
    q.accept(inbound(None), vec![alert("trigger", "again")]).await.unwrap();
    let now = now_millis();
    let c = q.claim_with(now_millis(), 10, LEASE, &supersede).await.unwrap().claimed;
    assert!(finish(&q, &c[0], answered(now, 202), Finish::Delivered).await);
    q.accept(inbound(None), vec![alert("resolve", "again")]).await.unwrap();
    let c = q.claim_with(now_millis(), 10, LEASE, &supersede).await.unwrap().claimed;
    assert!(finish(&q, &c[0], answered(now, 202), Finish::Delivered).await);
    // A lane whose trigger got a 500: it may have reached PagerDuty, so its resolve goes.
    q.accept(inbound(None), vec![alert("trigger", "tried")]).await.unwrap();
    let c = q.claim_with(now_millis(), 10, LEASE, &supersede).await.unwrap().claimed;
    assert!(finish(&q, &c[0], answered(now, 500), Finish::RetryAt(now)).await);
    let waiting = vec![
        alert("trigger", "flap"),
        alert("acknowledge", "flap"),
        alert("resolve", "flap"),
        alert("trigger", "flap"),
        alert("trigger", "again"),
        alert("resolve", "again"),
        alert("resolve", "tried"),
    ];
    q.accept(inbound(None), waiting).await.unwrap();
    let batch = q.claim_with(now_millis(), 10, LEASE, &supersede).await.unwrap();
    let claimed: Vec<(String, String)> = batch
        .claimed
        .iter()
        .map(|c| (c.event.action().unwrap().as_str().to_string(), c.event.dedup_key().unwrap().to_string()))
        .collect();
    assert_eq!(claimed.len(), 2, "{claimed:?}");
    assert!(claimed.contains(&("trigger".into(), "flap".into())), "the trigger after the resolve goes: {claimed:?}");
    assert!(claimed.contains(&("trigger".into(), "tried".into())), "{claimed:?}");
    assert_eq!(batch.superseded.len(), 5, "flap's three and again's two: {:?}", batch.superseded);
    let rows =
        q.events(EventQuery { state: Some("superseded".into()), limit: 10, ..EventQuery::default() }).await.unwrap();
    let mut superseded: Vec<(String, String)> =
        rows.iter().map(|r| (r.summary.action.clone().unwrap(), r.summary.dedup_key.clone().unwrap())).collect();
    superseded.sort();
    assert_eq!(
        superseded,
        [
            ("acknowledge".to_string(), "flap".to_string()),
            ("resolve".into(), "again".into()),
            ("resolve".into(), "flap".into()),
            ("trigger".into(), "again".into()),
            ("trigger".into(), "flap".into())
        ]
    );
    assert!(rows.iter().all(|r| r.summary.last_error.as_deref().is_some_and(|e| e.starts_with("superseded"))));
    // Kept off (`delivery.supersede = false`): both go, in order.
    q.accept(inbound(None), vec![alert("trigger", "kept"), alert("resolve", "kept")]).await.unwrap();
    let order = one_at_a_time(&q, now_millis(), &Pick::default()).await;
    let kept: Vec<&String> = order.iter().filter(|k| *k == "kept").collect();
    assert_eq!(kept.len(), 2, "{order:?}");
}

async fn a_429_closes_the_key_for_every_claim_until_its_hold_ends(q: Arc<dyn Queue>) {
    use crate::delivery::pacing::Limits;
    let limits = Arc::new(Limits::new(120, 60));
    let pick = Pick { pace: Some(limits.clone()), supersede: false };
    q.accept(inbound(None), vec![alert("trigger", "a"), alert_on(other_key(), "trigger", "b")]).await.unwrap();
    let now = now_millis();
    q.hold(&key().sha256(), now + 30_000, limits).await.unwrap();
    let batch = q.claim_with(now, 10, LEASE, &pick).await.unwrap();
    let keys: Vec<String> = batch.claimed.iter().map(|c| c.event.dedup_key().unwrap().to_string()).collect();
    assert_eq!(keys, ["b"], "another key is not held");
    assert_eq!(batch.paced_until, Some(now + 30_000));
    assert_eq!(q.claim_with(now + 30_000, 10, LEASE, &pick).await.unwrap().claimed.len(), 1);
}

async fn dead_letters_are_listed_shown_replayed_and_deleted(q: Arc<dyn Queue>) {
    q.accept(inbound(None), vec![alert("trigger", "k"), alert("trigger", "gone")]).await.unwrap();
    let mut failed = inbound(None);
    failed.status = InboundStatus::MappingFailed("rule 'x': missing field".into());
    let failed_id = failed.id.clone();
    q.accept(failed, vec![]).await.unwrap();
    let now = now_millis();
    for c in q.claim(now, 10, LEASE).await.unwrap() {
        q.finish(
            c.id,
            c.lease,
            Attempt { at: now, status: Some(400), detail: Some("Event object is invalid".into()), dedup_key: None },
            Finish::Dead("400: Event object is invalid".into()),
        )
        .await
        .unwrap();
    }
    let list = q.dead_letters(None, 10).await.unwrap();
    assert_eq!(list.len(), 3, "{list:#?}");
    let kinds: Vec<_> = list.iter().map(|d| d.kind.as_str()).collect();
    assert!(kinds.contains(&"mapping_failed") && kinds.contains(&"event"));
    assert!(q.dead_letters(Some("elsewhere".into()), 10).await.unwrap().is_empty());

    let dead = list.iter().find(|d| d.dedup_key.as_deref() == Some("k")).unwrap();
    let dead_id = DeadId::parse(&dead.id).unwrap();
    let detail = q.dead_letter(dead_id.clone()).await.unwrap().unwrap();
    assert_eq!(detail.attempt_log.len(), 1);
    assert_eq!(detail.attempt_log[0].status, Some(400));
    assert_eq!(detail.event.as_ref().unwrap()["dedup_key"], "k");
    let failed_detail = q.dead_letter(DeadId::Inbound(failed_id.clone())).await.unwrap().unwrap();
    assert_eq!(failed_detail.letter.reason, "rule 'x': missing field");
    assert_eq!(failed_detail.payload, "{}");

    // Replay: a new pending event, the dead one kept as history.
    let DeadId::Event(n) = dead_id else { panic!() };
    let new_id = q.requeue_dead(n, now + 1).await.unwrap().unwrap();
    assert!(new_id > n);
    assert_eq!(q.requeue_dead(n, now + 1).await.unwrap(), None, "replayed only once");
    let again = q.claim(now + 1, 10, LEASE).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, new_id);
    assert_eq!(again[0].attempts, 0);

    // A fixed mapping's events replace the failure, once.
    let remapped = q.remap(failed_id.clone(), InboundStatus::Mapped, vec![alert("trigger", "m")], now).await.unwrap();
    assert_eq!(remapped, Some(1));
    assert_eq!(q.remap(failed_id.clone(), InboundStatus::Mapped, vec![], now).await.unwrap(), None);
    assert_eq!(q.inbound(failed_id).await.unwrap().unwrap().status, InboundStatus::Mapped);

    let gone = list.iter().find(|d| d.dedup_key.as_deref() == Some("gone")).unwrap();
    assert!(q.delete_dead(DeadId::parse(&gone.id).unwrap()).await.unwrap());
    assert!(!q.delete_dead(DeadId::parse(&gone.id).unwrap()).await.unwrap());
    assert!(q.dead_letters(None, 10).await.unwrap().is_empty());
}

/// The lease a claim wrote is its fencing token: once it ran out and another claim took the
/// event, the first claim's renewal, outcome and deferral change nothing of the second's.
async fn a_claim_whose_lease_was_lost_cannot_renew_finish_or_defer_the_new_holders_claim(q: Arc<dyn Queue>) {
    q.accept(inbound(None), vec![alert("trigger", "k"), alert("resolve", "k")]).await.unwrap();
    let now = now_millis();
    let first = q.claim(now, 10, LEASE).await.unwrap().remove(0);
    let expired = first.lease;
    let second = q.claim(expired, 10, LEASE).await.unwrap().remove(0);
    assert_eq!(second.id, first.id);
    assert!(second.lease > first.lease, "successive claims write larger leases");
    let sent = Attempt { at: expired, status: Some(202), detail: None, dedup_key: None };
    assert!(!q.renew(first.id, first.lease, expired + 1_000_000).await.unwrap(), "a lost lease is not renewed");
    assert!(!q.finish(first.id, first.lease, sent.clone(), Finish::Delivered).await.unwrap());
    q.defer(first.id, first.lease, expired + 1_000_000).await.unwrap();
    assert_eq!(q.recent(10).await.unwrap().iter().filter(|e| e.state == EventState::Pending).count(), 2);
    assert!(q.claim(expired, 10, LEASE).await.unwrap().is_empty(), "still held by the second claim");
    // The holder renews and finishes; the resolve behind it follows.
    let renewed = second.lease + 1000;
    assert!(q.renew(second.id, second.lease, renewed).await.unwrap());
    assert!(q.claim(second.lease, 10, LEASE).await.unwrap().is_empty(), "the renewed lease holds past the first");
    assert!(!q.finish(second.id, second.lease, sent.clone(), Finish::Delivered).await.unwrap(), "renewed: new token");
    assert!(q.finish(second.id, renewed, sent, Finish::Delivered).await.unwrap());
    let next = q.claim(expired, 10, LEASE).await.unwrap();
    assert_eq!(next[0].event.action(), Some(crate::event::Action::Resolve));
}

#[test]
fn dead_letter_ids_are_event_numbers_or_inbound_uuids() {
    assert_eq!(DeadId::parse("42"), Some(DeadId::Event(42)));
    let u = uuid::Uuid::now_v7().to_string();
    assert_eq!(DeadId::parse(&u), Some(DeadId::Inbound(u.clone())));
    assert_eq!(DeadId::parse("../etc"), None);
    assert_eq!(DeadId::Event(7).to_string(), "7");
}

/// What an SQLite error was survives as the variant, for callers to decide on.
#[test]
fn sqlite_failures_keep_their_kind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let a = rusqlite::Connection::open(&path).unwrap();
    a.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (k TEXT PRIMARY KEY); INSERT INTO t VALUES ('x');")
        .unwrap();
    let dup = QueueError::from(a.execute("INSERT INTO t VALUES ('x')", []).unwrap_err());
    assert!(matches!(dup, QueueError::Constraint(_)), "{dup:?}");
    let bad = QueueError::from(a.query_row("SELECT k FROM t", [], |r| r.get::<_, i64>(0)).unwrap_err());
    assert!(matches!(bad, QueueError::BadRow(_)), "{bad:?}");
    a.execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES ('y');").unwrap();
    let b = rusqlite::Connection::open(&path).unwrap();
    b.busy_timeout(std::time::Duration::ZERO).unwrap();
    let busy = QueueError::from(b.execute("INSERT INTO t VALUES ('z')", []).unwrap_err());
    assert!(matches!(busy, QueueError::Busy(_)), "{busy:?}");
    let missing = SqliteQueue::open(&dir.path().join("t.db/not-a-dir/q.db"), Durability::Fsync, Role::Tool);
    assert!(matches!(missing, Err(QueueError::Io(_))), "{:?}", missing.err());
}

/// A migration that fails names the version it was going to and leaves the store as it was.
#[test]
fn a_failed_migration_says_which_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    rusqlite::Connection::open(&path).unwrap().execute_batch("CREATE TABLE events (foreign_column TEXT)").unwrap();
    let err = SqliteQueue::open(&path, Durability::Fsync, Role::Tool).err().unwrap();
    assert!(matches!(&err, QueueError::Migration { to: 1, detail } if detail.contains("events")), "{err:?}");
    let c = rusqlite::Connection::open(&path).unwrap();
    let version: Option<String> = rusqlite::OptionalExtension::optional(c.query_row(
        "SELECT value FROM meta WHERE key = 'schema_version'",
        [],
        |r| r.get(0),
    ))
    .unwrap();
    assert_eq!(version, None, "rolled back");
    let inbound: i64 =
        c.query_row("SELECT COUNT(*) FROM sqlite_master WHERE name = 'inbound'", [], |r| r.get(0)).unwrap();
    assert_eq!(inbound, 0, "no table of the failed migration is left");
}

#[tokio::test]
async fn a_version_1_database_is_migrated_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(&sqlite::MIGRATIONS[0].concat()).unwrap();
        c.execute_batch(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             INSERT INTO meta VALUES ('schema_version', '1');",
        )
        .unwrap();
    }
    let q = SqliteQueue::open(&path, Durability::Fsync, Role::Deliverer).unwrap();
    q.accept(inbound(None), vec![alert("trigger", "k")]).await.unwrap();
    drop(q);
    let c = rusqlite::Connection::open(&path).unwrap();
    let v: String = c.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0)).unwrap();
    assert_eq!(v, sqlite::MIGRATIONS.len().to_string());
    let routes: i64 = c.query_row("SELECT COUNT(*) FROM routes", [], |r| r.get(0)).unwrap();
    assert_eq!(routes, 1);
    // A database from a newer build is refused, not corrupted.
    c.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'", []).unwrap();
    drop(c);
    let err = SqliteQueue::open(&path, Durability::Fsync, Role::Tool).err().unwrap();
    assert!(matches!(&err, QueueError::SchemaTooNew { stored, .. } if stored == "99"), "{err:?}");
    assert!(err.to_string().contains("newer"), "{err}");
}

#[tokio::test]
async fn routes_of_a_version_3_database_keep_the_source_of_their_trigger() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        for m in sqlite::MIGRATIONS[..3].iter().flat_map(|m| m.iter()) {
            c.execute_batch(m).unwrap();
        }
        c.execute_batch(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             INSERT INTO meta VALUES ('schema_version', '3');
             INSERT INTO inbound VALUES ('i1', 'a', 1, NULL, '{}', '', x'', 'mapped', NULL);
             INSERT INTO events (inbound_id, kind, routing_key, action, dedup_key, body, format, created_at, next_at, state)
                 VALUES ('i1', 'alert', 'fedcba9876543210fedcba9876543210', 'trigger', 'db', '{}', 1, 1, 1, 'delivered');
             INSERT INTO routes VALUES ('db', 'fedcba9876543210fedcba9876543210', 1);
             INSERT INTO routes VALUES ('orphan', 'fedcba9876543210fedcba9876543210', 1);",
        )
        .unwrap();
    }
    let q: Arc<dyn Queue> = Arc::new(SqliteQueue::open(&path, Durability::Fsync, Role::Deliverer).unwrap());
    q.accept(inbound_from("b"), vec![alert_on(key(), "resolve", "db")]).await.unwrap();
    q.accept(inbound_from("a"), vec![alert_on(key(), "resolve", "db")]).await.unwrap();
    let sent = deliver_all(&q, now_millis()).await;
    let keys: Vec<_> = sent.into_iter().map(|(_, _, k)| k).collect();
    assert_eq!(keys, [key().expose(), other_key().expose()], "only a's resolve follows a's trigger");
    drop(q);
    let c = rusqlite::Connection::open(&path).unwrap();
    let sources: Vec<String> = c
        .prepare("SELECT source FROM routes")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(sources, ["a"], "a route whose trigger is gone cannot be attributed and is dropped");
}

/// Runs a PostgreSQL-only test on a fresh schema, or skips it visibly without DATABASE_URL.
macro_rules! on_postgres {
    ($($test:ident),* $(,)?) => {
        mod postgres_only {
            $(
                #[tokio::test]
                async fn $test() {
                    let Some(schema) = super::PgSchema::create(stringify!($test)).await else { return };
                    super::$test(&schema).await;
                    schema.drop().await;
                }
            )*
        }
    };
}

on_postgres!(
    replicas_never_deliver_one_lane_at_once_and_keep_its_order,
    an_expired_lease_passes_to_another_replica_but_a_starting_one_leaves_live_leases,
    replicas_share_delivery_ids,
    replicas_starting_at_once_migrate_once_and_a_newer_schema_is_refused,
    an_accept_waits_for_an_earlier_one_in_its_lane_so_ids_follow_commit_order,
    an_event_committed_late_into_a_leased_lane_waits_for_the_lease,
    a_resolve_waits_for_an_escalation_being_stored_and_closes_it,
    routes_of_a_version_1_schema_keep_the_source_of_their_trigger,
    accepts_naming_the_same_dedup_keys_in_opposite_orders_do_not_deadlock,
    a_column_of_an_unexpected_type_is_a_storage_error_not_a_panic,
    postgres_failures_keep_their_kind,
    the_next_due_scan_uses_an_index,
    a_search_for_a_rare_text_reads_the_trigram_and_source_indexes,
    without_pg_trgm_a_search_scans_and_the_index_is_built_at_the_first_start_allowed_to,
    with_sslmode_require_every_pooled_connection_is_encrypted,
    verify_ca_accepts_a_server_certificate_that_chains_to_sslrootcert,
    three_replicas_share_one_rate_budget_per_routing_key,
    a_429_seen_by_one_replica_holds_the_key_for_the_others,
);

/// One delivery round of a replica at `now`, as the worker does it: a paced claim, each
/// event "sent" (finished) at once. Returns the send times.
async fn pace_round(q: &Arc<dyn Queue>, pick: &Pick, now: Millis) -> Vec<Millis> {
    let batch = q.claim_with(now, 4, LEASE, pick).await.unwrap();
    for c in &batch.claimed {
        assert!(q.finish(c.id, c.lease, answered(now, 202), Finish::Delivered).await.unwrap());
    }
    vec![now; batch.claimed.len()]
}

/// Three replicas, each with a pool of its own, deliver a storm to one routing key on an
/// injected clock: no 60-second window holds more than the rate across all three, the burst
/// is shared too, and every event goes. Three in-memory pacers would have sent up to three
/// times the rate.
async fn three_replicas_share_one_rate_budget_per_routing_key(schema: &PgSchema) {
    use crate::delivery::pacing::{Limits, WINDOW};
    const RATE: u32 = 30;
    const BURST: u32 = 10;
    const STORM: usize = 100;
    let replicas = [replica(schema).await, replica(schema).await, replica(schema).await];
    let pick = Pick { pace: Some(Arc::new(Limits::new(RATE, BURST))), supersede: false };
    let storm: Vec<Event> = (0..STORM).map(|i| alert("trigger", &format!("storm-{i}"))).collect();
    replicas[0].accept(inbound(None), storm).await.unwrap();
    // Whole seconds from a start after every event's accept time.
    let t0 = (now_millis() / 1000 + 1) * 1000;
    let (mut now, mut sent, mut by_replica) = (t0, Vec::new(), [0usize; 3]);
    while sent.len() < STORM {
        assert!(now < t0 + 10 * WINDOW, "the storm was not delivered: {} of {STORM} sent", sent.len());
        let (a, b, c) = tokio::join!(
            pace_round(&replicas[0], &pick, now),
            pace_round(&replicas[1], &pick, now),
            pace_round(&replicas[2], &pick, now + 500)
        );
        for (n, s) in [a, b, c].into_iter().enumerate() {
            by_replica[n] += s.len();
            sent.extend(s);
        }
        now += 1000;
    }
    sent.sort_unstable();
    let busiest = (0..sent.len()).map(|i| sent[i..].partition_point(|t| *t < sent[i] + WINDOW)).max().unwrap();
    assert!(busiest <= RATE as usize, "{busiest} events in one window, over the rate of {RATE}");
    let at_once = sent.iter().filter(|t| **t == t0).count();
    assert!(at_once <= BURST as usize, "{at_once} at once, over the shared burst of {BURST}");
    assert!(by_replica.iter().filter(|n| **n > 0).count() >= 2, "the replicas shared the work: {by_replica:?}");
    assert!(*sent.last().unwrap() - t0 < 4 * WINDOW, "and the storm is not held longer than needed");
}

/// A 429 one replica got closes the key for the others too; another key is not held; keys
/// are stored only as their SHA-256.
async fn a_429_seen_by_one_replica_holds_the_key_for_the_others(schema: &PgSchema) {
    use crate::delivery::pacing::Limits;
    let limits = Arc::new(Limits::new(60, 1)); // no burst
    let pick = Pick { pace: Some(limits.clone()), supersede: false };
    let (a, b) = (replica(schema).await, replica(schema).await);
    let k = key().sha256();
    a.accept(inbound(None), vec![alert("trigger", "x"), alert("trigger", "y"), alert("trigger", "z")]).await.unwrap();
    b.accept(inbound(None), vec![alert_on(other_key(), "trigger", "w")]).await.unwrap();
    let now = now_millis();
    assert_eq!(a.claim_with(now, 1, LEASE, &pick).await.unwrap().claimed.len(), 1);
    let waits = b.claim_with(now, 1, LEASE, &pick).await.unwrap();
    assert_eq!(waits.claimed[0].event.dedup_key().unwrap().as_str(), "w", "b's next event of the key waits its turn");
    a.hold(&k, now + 30_000, limits.clone()).await.unwrap();
    let held = b.claim_with(now + 2000, 10, LEASE, &pick).await.unwrap();
    assert!(held.claimed.is_empty(), "b waits for a's hold");
    assert_eq!(held.paced_until, Some(now + 30_000));
    assert_eq!(b.claim_with(now + 30_000, 10, LEASE, &pick).await.unwrap().claimed.len(), 1);
    let stored: Vec<String> = connect_in(schema)
        .await
        .query("SELECT key_sha256 FROM pace ORDER BY key_sha256", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get(0).unwrap())
        .collect();
    let mut expected = vec![k, other_key().sha256()];
    expected.sort();
    assert_eq!(stored, expected, "keys are stored only as their SHA-256");
}

/// Three replicas with two workers each, claiming from one schema at once: a lane is never in
/// flight twice, and each lane is delivered in the order it was accepted.
async fn replicas_never_deliver_one_lane_at_once_and_keep_its_order(schema: &PgSchema) {
    use std::collections::HashMap;
    use std::sync::Mutex;
    const LANES: usize = 12;
    const ROUNDS: usize = 3;
    let replicas = [replica(schema).await, replica(schema).await, replica(schema).await];
    for round in 0..ROUNDS {
        for lane in 0..LANES {
            let via = &replicas[(lane + round) % replicas.len()];
            let dk = format!("k{lane}");
            via.accept(inbound(None), vec![alert("trigger", &dk)]).await.unwrap();
            via.accept(inbound(None), vec![alert("resolve", &dk)]).await.unwrap();
        }
    }
    let total = LANES * ROUNDS * 2;
    let in_flight = Arc::new(Mutex::new(HashMap::<String, i64>::new()));
    let delivered = Arc::new(Mutex::new(HashMap::<String, Vec<(i64, String)>>::new()));
    let overlaps = Arc::new(Mutex::new(Vec::new()));
    let mut workers = tokio::task::JoinSet::new();
    for (n, q) in replicas.iter().flat_map(|q| [q.clone(), q.clone()]).enumerate() {
        let (in_flight, delivered, overlaps) = (in_flight.clone(), delivered.clone(), overlaps.clone());
        workers.spawn(async move {
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
            while delivered.lock().unwrap().values().map(Vec::len).sum::<usize>() < total {
                assert!(tokio::time::Instant::now() < deadline, "worker {n}: not everything was delivered");
                for c in q.claim(now_millis(), 4, LEASE).await.unwrap() {
                    let dk = c.event.dedup_key().unwrap().to_string();
                    if let Some(other) = in_flight.lock().unwrap().insert(dk.clone(), c.id) {
                        overlaps.lock().unwrap().push((dk.clone(), other, c.id));
                    }
                    // Let the other workers run while this one "sends".
                    tokio::task::yield_now().await;
                    let action = c.event.action().unwrap().as_str().to_string();
                    delivered.lock().unwrap().entry(dk.clone()).or_default().push((c.id, action));
                    // Out of the in-flight set before the lease is released: the store forbids
                    // anyone else this lane until then.
                    in_flight.lock().unwrap().remove(&dk);
                    let at = now_millis();
                    q.finish(c.id, c.lease, answered(at, 202), Finish::Delivered).await.unwrap();
                }
                tokio::task::yield_now().await;
            }
        });
    }
    while let Some(r) = workers.join_next().await {
        r.unwrap();
    }
    assert!(overlaps.lock().unwrap().is_empty(), "one lane in flight twice: {:?}", overlaps.lock().unwrap());
    let delivered = delivered.lock().unwrap();
    assert_eq!(delivered.len(), LANES);
    for (dk, events) in delivered.iter() {
        let ids: Vec<_> = events.iter().map(|(id, _)| *id).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{dk} delivered out of order: {ids:?}");
        let actions: Vec<_> = events.iter().map(|(_, a)| a.as_str()).collect();
        assert_eq!(actions, ["trigger", "resolve"].repeat(ROUNDS), "{dk}");
    }
}

/// A replica that starts does not take events another holds (unlike SQLite's restart); once
/// the holder's lease runs out (it died), another replica takes the event, and the lane's
/// next event still waits for it.
async fn an_expired_lease_passes_to_another_replica_but_a_starting_one_leaves_live_leases(schema: &PgSchema) {
    let a = replica(schema).await;
    a.accept(inbound(None), vec![alert("trigger", "k"), alert("resolve", "k")]).await.unwrap();
    let now = now_millis();
    let held = a.claim(now, 10, LEASE).await.unwrap();
    assert_eq!(held.len(), 1);
    let b = replica(schema).await;
    assert!(b.claim(now, 10, LEASE).await.unwrap().is_empty(), "a live lease is respected");
    let expired = now + LEASE.as_millis() as Millis;
    let taken = b.claim(expired, 10, LEASE).await.unwrap();
    assert_eq!(taken.len(), 1, "{taken:?}");
    assert_eq!(taken[0].id, held[0].id, "the trigger, not the resolve behind it");
}

/// Two replicas receiving the same delivery at once: one stores it, the other reports it.
async fn replicas_share_delivery_ids(schema: &PgSchema) {
    let (a, b) = (replica(schema).await, replica(schema).await);
    let (x, y) = tokio::join!(
        a.accept(inbound(Some("same")), vec![alert("trigger", "k")]),
        b.accept(inbound(Some("same")), vec![alert("trigger", "k")])
    );
    let mut outcomes = [x.unwrap(), y.unwrap()];
    outcomes.sort_by_key(|o| matches!(o, Accepted::Duplicate { .. }));
    let [Accepted::Committed { id, events: 1, .. }, Accepted::Duplicate { id: dup }] = &outcomes else {
        panic!("{outcomes:?}")
    };
    assert_eq!(id, dup);
    assert_eq!(a.depth().await.unwrap().0, 1);
}

async fn replicas_starting_at_once_migrate_once_and_a_newer_schema_is_refused(schema: &PgSchema) {
    let url = Secret::new(schema.url.clone());
    let (a, b, c) =
        tokio::join!(PostgresQueue::connect(&url), PostgresQueue::connect(&url), PostgresQueue::connect(&url));
    for q in [a, b, c] {
        q.unwrap();
    }
    let meta = format!("{}.meta", schema.name);
    let version = schema
        .admin
        .query_one(&format!("SELECT value FROM {meta} WHERE key = 'schema_version'"), &[])
        .await
        .unwrap()
        .get::<_, String>(0);
    assert_eq!(version, postgres::MIGRATIONS.len().to_string());
    schema.admin.batch_execute(&format!("UPDATE {meta} SET value = '99' WHERE key = 'schema_version'")).await.unwrap();
    let err = PostgresQueue::connect(&url).await.err().unwrap();
    assert!(matches!(&err, QueueError::SchemaTooNew { stored, .. } if stored == "99"), "{err:?}");
    assert!(err.to_string().contains("newer"), "{err}");
}

/// The row a concurrent accept would write into lane `dk`, from another connection.
async fn insert_raw(c: &impl tokio_postgres::GenericClient, dk: &str, id: Option<i64>) -> i64 {
    let e = alert("trigger", dk);
    let (columns, id_value) = match id {
        Some(id) => ("id, ", format!("{id}, ")),
        None => ("", String::new()),
    };
    let overriding = if id.is_some() { "OVERRIDING SYSTEM VALUE" } else { "" };
    c.query_one(
        &format!(
            "INSERT INTO events ({columns}inbound_id, kind, order_key, routing_key, action, dedup_key, body, format, created_at, next_at)
             {overriding} VALUES ({id_value}'raw', 'alert', $1, $2, 'trigger', $3, $4, 1, 0, 0) RETURNING id"
        ),
        &[&e.order_key(), &e.routing_key().expose(), &dk, &e.body().to_string()],
    )
    .await
    .unwrap()
    .get(0)
}

/// Ids come from a sequence before commit, so without the lane's insert lock a later accept
/// could commit a smaller id than one already claimed. With it, an accept into a lane whose
/// earlier accept is still open waits, and gets the larger id.
async fn an_accept_waits_for_an_earlier_one_in_its_lane_so_ids_follow_commit_order(schema: &PgSchema) {
    let q = replica(schema).await;
    let (mut raw, conn) = tokio_postgres::connect(&schema.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let lane = alert("trigger", "k").order_key().unwrap();
    let earlier = raw.transaction().await.unwrap();
    let schema_hash: i32 = earlier.query_one("SELECT hashtext(current_schema())", &[]).await.unwrap().get(0);
    let keys = [postgres::Lock::Insert.key(schema_hash), postgres::lane_lock(&lane)];
    earlier.execute("SELECT pg_advisory_xact_lock($1, $2)", &[&keys[0], &keys[1]]).await.unwrap();
    let later = tokio::spawn({
        let q = q.clone();
        async move { q.accept(inbound(None), vec![alert("resolve", "k")]).await.unwrap() }
    });
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let waiting: i64 = schema
            .admin
            .query_one(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'
                 AND query = 'SELECT pg_advisory_xact_lock($1, $2)'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(!later.is_finished(), "the accept did not wait for the open one in its lane");
        assert!(tokio::time::Instant::now() < deadline, "the accept never waited on the lane's insert lock");
        tokio::task::yield_now().await;
    }
    let earlier_id = insert_raw(&earlier, "k", None).await;
    earlier.commit().await.unwrap();
    later.await.unwrap();
    let head = q.claim(now_millis(), 10, LEASE).await.unwrap();
    assert_eq!(head.len(), 1);
    assert_eq!(head[0].id, earlier_id, "the first to commit goes first");
    assert_eq!(q.recent(1).await.unwrap()[0].action.as_deref(), Some("resolve"));
    assert!(q.recent(1).await.unwrap()[0].id > earlier_id);
}

/// A resolve accepted while another accept holds its lane to store an escalation of its
/// incident (here a raw transaction, as that accept would) waits for it, then sees the
/// escalated trigger pending and closes its incident too, after it: escalation is decided
/// with the webhook's lanes held.
async fn a_resolve_waits_for_an_escalation_being_stored_and_closes_it(schema: &PgSchema) {
    let q = replica(schema).await;
    q.accept(inbound(None), vec![titled("k", "warning", "slow")]).await.unwrap();
    deliver_accepted(&q, 1_000).await;
    let (mut raw, conn) = tokio_postgres::connect(&schema.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let storing = raw.transaction().await.unwrap();
    let schema_hash: i32 = storing.query_one("SELECT hashtext(current_schema())", &[]).await.unwrap().get(0);
    let keys =
        [postgres::Lock::Insert.key(schema_hash), postgres::lane_lock(&alert("trigger", "k").order_key().unwrap())];
    storing.execute("SELECT pg_advisory_xact_lock($1, $2)", &[&keys[0], &keys[1]]).await.unwrap();
    insert_raw(&storing, "k~escalated-critical", None).await;
    let resolve = tokio::spawn({
        let q = q.clone();
        async move { q.accept(inbound(None), vec![alert("resolve", "k")]).await.unwrap() }
    });
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let waits = "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'";
    while schema.admin.query_one(waits, &[]).await.unwrap().get::<_, i64>(0) == 0 {
        assert!(!resolve.is_finished(), "the resolve did not wait for the accept holding its lane");
        assert!(tokio::time::Instant::now() < deadline, "the resolve never waited on its lane");
        tokio::task::yield_now().await;
    }
    storing.commit().await.unwrap();
    resolve.await.unwrap();
    let order = deliver_accepted(&q, 2_000).await;
    let at = |action: &str| order.iter().position(|(a, dk)| a == action && dk == "k~escalated-critical");
    assert!(at("trigger").unwrap() < at("resolve").expect("the escalation is resolved too"), "{order:?}");
}

/// Should an earlier event appear in a lane while a later one is leased (a writer that did not
/// take the insert lock), the lane still has one event in flight at a time.
async fn an_event_committed_late_into_a_leased_lane_waits_for_the_lease(schema: &PgSchema) {
    let q = replica(schema).await;
    q.accept(inbound(None), vec![alert("resolve", "k")]).await.unwrap();
    let now = now_millis();
    let held = q.claim(now, 10, LEASE).await.unwrap();
    assert_eq!(held.len(), 1);
    insert_raw(&connect_in(schema).await, "k", Some(-1)).await;
    assert!(q.claim(now, 10, LEASE).await.unwrap().is_empty(), "the lane is leased");
    finish(&q, &held[0], answered(now, 202), Finish::Delivered).await;
    assert_eq!(q.claim(now, 10, LEASE).await.unwrap()[0].id, -1);
}

/// Two webhooks whose triggers name the same dedup_keys in opposite orders, accepted at once
/// by two replicas: both commit. Their sticky-route upserts lock rows; taken in the events'
/// order they would cross, and PostgreSQL would break the deadlock by failing one (a 503).
async fn accepts_naming_the_same_dedup_keys_in_opposite_orders_do_not_deadlock(schema: &PgSchema) {
    let (a, b) = (replica(schema).await, replica(schema).await);
    for round in 0..3 {
        // Each pool's connection open, so that the two transactions start together.
        a.depth().await.unwrap();
        b.depth().await.unwrap();
        let forward: Vec<Event> = (0..200).map(|k| alert("trigger", &format!("r{round}-k{k}"))).collect();
        let backward: Vec<Event> = forward.iter().rev().cloned().collect();
        let (x, y) = tokio::join!(a.accept(inbound(None), forward), b.accept(inbound(None), backward));
        for r in [x, y] {
            assert!(matches!(r, Ok(Accepted::Committed { events: 200, .. })), "round {round}: {r:?}");
        }
    }
}

/// A store whose columns are not what this build expects (a hand-edited or foreign schema)
/// answers with a storage error naming the problem; it never panics the worker or a request.
async fn a_column_of_an_unexpected_type_is_a_storage_error_not_a_panic(schema: &PgSchema) {
    let q = replica(schema).await;
    q.accept(inbound(None), vec![alert("trigger", "k")]).await.unwrap();
    let events = format!("{}.events", schema.name);
    schema.admin.batch_execute(&format!("ALTER TABLE {events} ALTER COLUMN attempts TYPE BIGINT")).await.unwrap();
    let recent = q.recent(10).await.expect_err("a storage error");
    assert!(recent.to_string().contains("attempts") || recent.to_string().contains("int"), "{recent}");
    assert!(matches!(q.claim(now_millis(), 10, LEASE).await, Err(QueueError::BadRow(_))));
}

/// What a PostgreSQL error was survives as the variant (by SQLSTATE), for callers to decide on.
async fn postgres_failures_keep_their_kind(schema: &PgSchema) {
    let (a, b) = (connect_in(schema).await, connect_in(schema).await);
    a.batch_execute("CREATE TABLE t (k TEXT PRIMARY KEY); INSERT INTO t VALUES ('x'), ('y')").await.unwrap();
    let kind = |e: tokio_postgres::Error| QueueError::from(e);
    let dup = kind(a.execute("INSERT INTO t VALUES ('x')", &[]).await.unwrap_err());
    assert!(matches!(dup, QueueError::Constraint(_)), "{dup:?}");
    let other = kind(a.execute("SELECT 1 / 0", &[]).await.unwrap_err());
    assert!(matches!(other, QueueError::Database(_)), "{other:?}");
    a.batch_execute("BEGIN; SELECT * FROM t WHERE k = 'x' FOR UPDATE").await.unwrap();
    let busy = kind(b.execute("SELECT * FROM t WHERE k = 'x' FOR UPDATE NOWAIT", &[]).await.unwrap_err());
    assert!(matches!(busy, QueueError::Busy(_)), "{busy:?}");
    // Each holds one row and asks for the other's: PostgreSQL aborts one of them.
    b.batch_execute("BEGIN; SELECT * FROM t WHERE k = 'y' FOR UPDATE").await.unwrap();
    let (x, y) = tokio::join!(
        a.execute("SELECT * FROM t WHERE k = 'y' FOR UPDATE", &[]),
        b.execute("SELECT * FROM t WHERE k = 'x' FOR UPDATE", &[])
    );
    let aborted = [x, y].into_iter().filter_map(Result::err).map(kind).collect::<Vec<_>>();
    assert!(matches!(&aborted[..], [QueueError::Conflict(_)]), "{aborted:?}");
}

/// `next_due` runs after every worker round on every replica: it must not scan the backlog.
async fn the_next_due_scan_uses_an_index(schema: &PgSchema) {
    let _migrated = replica(schema).await;
    let c = connect_in(schema).await;
    c.batch_execute("SET enable_seqscan = off").await.unwrap();
    let plan: Vec<String> = c
        .query(&format!("EXPLAIN {}", postgres::NEXT_DUE), &[&now_millis()])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let plan = plan.join("\n");
    assert!(plan.contains("events_due"), "{plan}");
}

/// A search for a text few of many events hold reads the trigram indexes over dedup_key and
/// summary and the source's index, not every row: the plan the planner picks for the store's
/// query with the statistics of 20 000 events, nothing disabled. pg_trgm is in `public`, as
/// the test harness installs it (an administrator's `CREATE EXTENSION`), and this schema's
/// indexes name it there.
async fn a_search_for_a_rare_text_reads_the_trigram_and_source_indexes(schema: &PgSchema) {
    let q = replica(schema).await;
    q.accept(inbound_from("billing"), vec![titled("k/1", "critical", "Disk full on db-1")]).await.unwrap();
    let c = connect_in(schema).await;
    c.batch_execute(
        "INSERT INTO inbound (id, source, received_at, headers, query, body, status)
         SELECT 'filler-' || n, 'filler', 0, '{}', '', '\\x', 'mapped' FROM generate_series(1, 20000) AS n;
         INSERT INTO events (inbound_id, kind, routing_key, action, dedup_key, summary, body, format, created_at, next_at, state)
         SELECT 'filler-' || n, 'alert', 'k', 'trigger', 'filler-' || n, 'filler event ' || n, '{}', 1, 0, 0, 'delivered'
         FROM generate_series(1, 20000) AS n;",
    )
    .await
    .unwrap();
    // As autovacuum would: statistics, and the GIN pending list (fastupdate) merged into the
    // index, whose size the planner otherwise counts against it. One statement each: VACUUM
    // refuses a batch's transaction.
    for table in ["events", "inbound"] {
        c.batch_execute(&format!("VACUUM ANALYZE {table}")).await.unwrap();
    }
    let search = Some("DISK FULL".to_string());
    let none: (Option<i64>, Option<String>) = (None, None);
    let pattern = search.as_deref().map(postgres::search::like_pattern);
    let sql = format!("EXPLAIN {}", postgres::search::INDEXED);
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] =
        [&search, &none.0, &50_i64, &none.1, &none.1, &none.0, &pattern];
    let plan: Vec<String> = c.query(&sql, &params).await.unwrap().iter().map(|r| r.get(0)).collect();
    let plan = plan.join("\n");
    for index in postgres::search::INDEXES.iter().chain(&["inbound_source"]) {
        assert!(plan.contains(index), "{index} unused:\n{plan}");
    }
    assert!(!plan.contains("Seq Scan on events"), "{plan}");
    let found = q.events(EventQuery { search, limit: 50, ..EventQuery::default() }).await.unwrap();
    assert_eq!(found.iter().map(|r| r.summary.dedup_key.as_deref()).collect::<Vec<_>>(), [Some("k/1")]);
}

/// pg_trgm is per database, and installing it takes CREATE on the database. In a database
/// without it, a role that may not install it gets a store that works: one warning says what
/// an administrator runs, there is no trigram index, and a search finds what it found before.
/// Once the role may, its next start (an upgrade: the events are already stored) installs
/// pg_trgm in the role's schema and builds the index over them.
async fn without_pg_trgm_a_search_scans_and_the_index_is_built_at_the_first_start_allowed_to(schema: &PgSchema) {
    let name = format!("{}_db", schema.name);
    // Apart: CREATE DATABASE refuses to run in a batch's implicit transaction.
    for statement in [format!("CREATE ROLE {name} LOGIN PASSWORD 'pw'"), format!("CREATE DATABASE {name}")] {
        schema.admin.batch_execute(&statement).await.unwrap();
    }
    let base = std::env::var("DATABASE_URL").unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    let as_owner = format!("{base}{sep}dbname={name}");
    let (owner, conn) = tokio_postgres::connect(&as_owner, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    owner.batch_execute(&format!("CREATE SCHEMA app AUTHORIZATION {name}")).await.unwrap();
    let url = Secret::new(format!("{as_owner}&user={name}&password=pw&options=-c%20search_path%3Dapp"));
    let catalog = "SELECT (SELECT count(*) FROM pg_extension WHERE extname = 'pg_trgm'),
        (SELECT count(*) FROM pg_indexes WHERE schemaname = 'app' AND indexname LIKE 'events_search_%')";

    let (guard, log) = crate::telemetry::capture::capture();
    let q: Arc<dyn Queue> = Arc::new(PostgresQueue::connect(&url).await.unwrap());
    drop(guard);
    let warned = log
        .lines()
        .into_iter()
        .filter(|l| l["message"].as_str().is_some_and(|m| m.contains("CREATE EXTENSION pg_trgm")));
    assert_eq!(warned.count(), 1, "{}", log.text());
    let r = owner.query_one(catalog, &[]).await.unwrap();
    assert_eq!((r.get::<_, i64>(0), r.get::<_, i64>(1)), (0, 0), "refused: no extension, no index");
    q.accept(inbound_from("billing"), vec![titled("k/1", "critical", "Disk full on db-1")]).await.unwrap();
    q.accept(inbound_from("payments"), vec![titled("k/2", "critical", "CPU hot")]).await.unwrap();
    let keys = |q: Arc<dyn Queue>, search: &str| {
        let search = Some(search.to_string());
        async move {
            let rows = q.events(EventQuery { search, limit: 10, ..EventQuery::default() }).await.unwrap();
            rows.into_iter().map(|r| r.summary.dedup_key.unwrap()).collect::<Vec<_>>()
        }
    };
    assert_eq!(keys(q.clone(), "disk FULL").await, ["k/1"]);
    assert_eq!(keys(q.clone(), "payments").await, ["k/2"]);

    owner.batch_execute(&format!("GRANT CREATE ON DATABASE {name} TO {name}")).await.unwrap();
    let upgraded: Arc<dyn Queue> = Arc::new(PostgresQueue::connect(&url).await.unwrap());
    let r = owner.query_one(catalog, &[]).await.unwrap();
    assert_eq!((r.get::<_, i64>(0), r.get::<_, i64>(1)), (1, 2), "installed, and both indexes built");
    let home: String = owner
        .query_one("SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pg_trgm'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(home, "app", "in the schema pagerhook's tables are in");
    assert_eq!(keys(upgraded.clone(), "disk FULL").await, ["k/1"]);
    assert_eq!(keys(upgraded, "payments").await, ["k/2"]);

    drop((q, owner));
    for statement in [format!("DROP DATABASE {name} WITH (FORCE)"), format!("DROP ROLE {name}")] {
        schema.admin.batch_execute(&statement).await.unwrap();
    }
}

/// The pool's connections (`application_name` tells them apart), as `pg_stat_ssl` sees them:
/// how many, and how many are encrypted.
async fn pool_connections(schema: &PgSchema, app: &str) -> (i64, i64) {
    let r = schema
        .admin
        .query_one(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
             WHERE a.application_name = $1",
            &[&app],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

/// `sslmode=require` against a server with a self-signed certificate: encrypted without
/// checking the certificate (libpq's meaning), on every connection the pool opens. The same
/// count with `sslmode=disable` shows the check can tell.
async fn with_sslmode_require_every_pooled_connection_is_encrypted(schema: &PgSchema) {
    for (mode, encrypted) in [("require", true), ("disable", false)] {
        let app = format!("pagerhook-tls-{mode}-{}", &schema.name[15..]);
        let url = format!("{}&sslmode={mode}&application_name={app}", schema.url);
        let q: Arc<dyn Queue> = Arc::new(PostgresQueue::connect(&Secret::new(url)).await.unwrap());
        // Concurrent accepts make the pool open several connections.
        let mut set = tokio::task::JoinSet::new();
        for i in 0..16 {
            let q = q.clone();
            set.spawn(async move { q.accept(inbound(None), vec![alert("trigger", &format!("k{i}"))]).await });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap().unwrap();
        }
        let (all, tls) = pool_connections(schema, &app).await;
        assert!(all >= 2, "{mode}: the pool holds several connections ({all})");
        assert_eq!(tls, if encrypted { all } else { 0 }, "{mode}: {tls} of {all} connections encrypted");
    }
}

/// The server's own (self-signed) certificate as `sslrootcert`: `verify-ca` checks the chain
/// and connects, encrypted.
async fn verify_ca_accepts_a_server_certificate_that_chains_to_sslrootcert(schema: &PgSchema) {
    let pem: String =
        schema.admin.query_one("SELECT pg_read_file(current_setting('ssl_cert_file'))", &[]).await.unwrap().get(0);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root.crt");
    std::fs::write(&root, pem).unwrap();
    let app = format!("pagerhook-verify-ca-{}", &schema.name[15..]);
    let url = format!("{}&sslmode=verify-ca&sslrootcert={}&application_name={app}", schema.url, root.display());
    let q = PostgresQueue::connect(&Secret::new(url)).await.unwrap();
    q.depth().await.unwrap();
    let (all, tls) = pool_connections(schema, &app).await;
    assert!(all >= 1 && tls == all, "{tls} of {all} encrypted");
}

#[tokio::test]
async fn an_unreachable_or_unusable_postgres_url_is_explained_without_its_password() {
    // Port 1 on loopback: refused at once, no server needed.
    let connect = |url: &'static str| async move { PostgresQueue::connect(&Secret::new(url)).await.err().unwrap() };
    let refused = connect("postgres://u:hunter2@127.0.0.1:1/x").await;
    assert!(matches!(refused, QueueError::Io(_)), "{refused:?}");
    let refused = refused.to_string();
    assert!(refused.contains("cannot reach PostgreSQL") && refused.contains("refused"), "{refused}");
    let tls = connect("postgres://u:hunter2@127.0.0.1:1/x?sslmode=verify-full").await;
    assert!(matches!(tls, QueueError::Tls(TlsError::NoRoot(_))), "{tls:?}");
    let tls = tls.to_string();
    assert!(tls.contains("sslmode=verify-full needs sslrootcert"), "{tls}");
    let bad = connect("postgres://u:hunter2@127.0.0.1:1/x?port=abc").await;
    assert!(matches!(bad, QueueError::Url(_)), "{bad:?}");
    let bad = bad.to_string();
    assert!(bad.contains("not a valid PostgreSQL URL"), "{bad}");
    for e in [refused, tls, bad] {
        assert!(!e.contains("hunter2"), "{e}");
    }
}

async fn the_dedup_key_pagerduty_answered_is_kept_with_its_attempt(q: Arc<dyn Queue>) {
    q.accept(inbound(None), vec![alert("trigger", "k"), alert("trigger", "d")]).await.unwrap();
    let now = now_millis();
    let c = q.claim(now, 10, LEASE).await.unwrap();
    let (k, d) = (c[0].id, c[1].id);
    let (lk, ld) = (c[0].lease, c[1].lease);
    let attempt = |status, key: Option<&str>| Attempt {
        at: now,
        status: Some(status),
        detail: None,
        dedup_key: key.map(Into::into),
    };
    assert!(q.finish(k, lk, attempt(500, None), Finish::RetryAt(now)).await.unwrap());
    assert!(q.finish(d, ld, attempt(202, Some("pd-d")), Finish::Dead("refused after all".into())).await.unwrap());
    let again = q.claim(now, 10, LEASE).await.unwrap();
    assert_eq!(again.iter().map(|c| c.id).collect::<Vec<_>>(), vec![k]);
    assert!(q.finish(k, again[0].lease, attempt(202, Some("pd-k")), Finish::Delivered).await.unwrap());
    let recent = q.recent(10).await.unwrap();
    let of = |id| recent.iter().find(|e| e.id == id).unwrap().pagerduty_dedup_key.clone();
    assert_eq!(of(k).as_deref(), Some("pd-k"), "the 202's key, not the 500's absence of one");
    assert_eq!(of(d).as_deref(), Some("pd-d"));
    let shown = q.dead_letter(DeadId::Event(d)).await.unwrap().unwrap();
    assert_eq!(shown.attempt_log[0].dedup_key.as_deref(), Some("pd-d"));
    let json = serde_json::to_value(&shown).unwrap();
    assert_eq!(json["attempt_log"][0]["pagerduty_dedup_key"], "pd-d", "dlq show and the admin API print it");
}

/// The PostgreSQL twin of `routes_of_a_version_3_database_keep_the_source_of_their_trigger`.
async fn routes_of_a_version_1_schema_keep_the_source_of_their_trigger(schema: &PgSchema) {
    let c = connect_in(schema).await;
    c.batch_execute(&postgres::MIGRATIONS[0].concat()).await.unwrap();
    c.batch_execute(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         INSERT INTO meta VALUES ('schema_version', '1');
         INSERT INTO inbound VALUES ('i1', 'a', 1, NULL, '{}', '', '', 'mapped', NULL);
         INSERT INTO events (inbound_id, kind, routing_key, action, dedup_key, body, format, created_at, next_at, state)
             VALUES ('i1', 'alert', 'fedcba9876543210fedcba9876543210', 'trigger', 'db', '{}', 1, 1, 1, 'delivered');
         INSERT INTO routes (dedup_key, routing_key, at) VALUES ('db', 'fedcba9876543210fedcba9876543210', 1);
         INSERT INTO routes (dedup_key, routing_key, at) VALUES ('orphan', 'fedcba9876543210fedcba9876543210', 1);",
    )
    .await
    .unwrap();
    let q = replica(schema).await;
    q.accept(inbound_from("b"), vec![alert_on(key(), "resolve", "db")]).await.unwrap();
    q.accept(inbound_from("a"), vec![alert_on(key(), "resolve", "db")]).await.unwrap();
    let keys: Vec<_> = deliver_all(&q, now_millis()).await.into_iter().map(|(_, _, k)| k).collect();
    assert_eq!(keys, [key().expose(), other_key().expose()], "only a's resolve follows a's trigger");
    let sources: Vec<String> =
        c.query("SELECT source FROM routes", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(sources, ["a"], "a route whose trigger is gone cannot be attributed and is dropped");
}

async fn events_are_searched_paged_and_shown_with_attempts_and_request(q: Arc<dyn Queue>) {
    let mut first = inbound(None);
    first.headers = serde_json::json!({ "x-github-event": "push" });
    first.query = "env=prod".into();
    first.body = bytes::Bytes::from_static(br#"{"a":1}"#);
    let first_id = first.id.clone();
    q.accept(first, vec![alert("trigger", "Disk-Full/db1"), change()]).await.unwrap();
    let mut other = inbound(None);
    other.source = "aws".into();
    q.accept(other, vec![alert("trigger", "cpu/web1"), alert("trigger", "disk-full/db2")]).await.unwrap();
    let now = now_millis();
    let claimed = q.claim(now, 10, LEASE).await.unwrap();
    let cpu = claimed.iter().find(|c| c.event.dedup_key().map(|k| k.as_str()) == Some("cpu/web1")).unwrap();
    let (cpu, cpu_lease) = (cpu.id, cpu.lease);
    let attempt = Attempt { at: now, status: Some(202), detail: Some("Event processed".into()), dedup_key: None };
    assert!(q.finish(cpu, cpu_lease, attempt, Finish::Delivered).await.unwrap());

    let find = |search: Option<&str>, before: Option<i64>, limit: usize| {
        let q = q.clone();
        let search = search.map(str::to_string);
        async move {
            let rows = q.events(EventQuery { search, before, limit, ..EventQuery::default() }).await.unwrap();
            rows.into_iter().map(|r| (r.summary.id, r.summary.dedup_key, r.summary.source)).collect::<Vec<_>>()
        }
    };
    // The first webhook's events are indexed, the second's not yet (on SQLite): a search reads both.
    let first_indexed = q.index_for_search(2).await.unwrap();
    assert!(first_indexed == 2 || first_indexed == 0, "two on SQLite, none on PostgreSQL (no index): {first_indexed}");
    let all = find(None, None, 10).await;
    assert_eq!(all.len(), 4);
    assert!(all.windows(2).all(|w| w[0].0 > w[1].0), "newest first: {all:?}");
    // A dedup_key part, any case; a source; a state.
    let disk = find(Some("DISK-full"), None, 10).await;
    assert_eq!(disk.iter().map(|r| r.1.as_deref().unwrap()).collect::<Vec<_>>(), ["disk-full/db2", "Disk-Full/db1"]);
    assert!(find(Some("aws"), None, 10).await.iter().all(|r| r.2 == "aws"));
    assert_eq!(find(Some("aws"), None, 10).await.len(), 2);
    assert_eq!(find(Some("delivered"), None, 10).await.iter().map(|r| r.0).collect::<Vec<_>>(), [cpu]);
    assert!(find(Some("%"), None, 10).await.is_empty(), "no LIKE wildcards");
    // Pages: two, then the rest, below the last id seen.
    let page1 = find(None, None, 2).await;
    let page2 = find(None, Some(page1[1].0), 2).await;
    assert_eq!([page1, page2].concat(), all);

    let detail = q.event(cpu).await.unwrap().unwrap();
    assert_eq!(detail.row.summary.state, EventState::Delivered);
    assert_eq!(detail.row.routing_key, key().fingerprint());
    assert_eq!(detail.attempt_log.len(), 1);
    assert_eq!(detail.attempt_log[0].detail.as_deref(), Some("Event processed"));
    assert_eq!(detail.event.as_ref().unwrap()["dedup_key"], "cpu/web1");
    assert!(detail.event.as_ref().unwrap().get("routing_key").is_none(), "no routing key in the stored body");
    let first_event = all.iter().find(|r| r.1.as_deref() == Some("Disk-Full/db1")).unwrap().0;
    let detail = q.event(first_event).await.unwrap().unwrap();
    assert_eq!(detail.row.summary.inbound_id, first_id);
    assert_eq!(detail.headers["x-github-event"], "push");
    assert_eq!((detail.query.as_str(), detail.payload.as_str()), ("env=prod", r#"{"a":1}"#));
    assert!(q.event(first_event + 1000).await.unwrap().is_none());
}

/// A trigger and its resolve in one webhook, on different routing keys (a mapping that picks
/// the key per event): the resolve goes where the trigger went, and waits behind it.
async fn a_resolve_follows_a_trigger_earlier_in_its_own_webhook(q: Arc<dyn Queue>) {
    let events = vec![alert_on(other_key(), "trigger", "db"), alert_on(key(), "resolve", "db")];
    q.accept(inbound(None), events).await.unwrap();
    // A resolve before its trigger in the webhook has nothing to follow.
    q.accept(inbound(None), vec![alert_on(key(), "resolve", "web"), alert_on(other_key(), "trigger", "web")])
        .await
        .unwrap();
    assert_eq!(
        deliver_all_by_key(&q).await,
        sent(&[
            ("trigger", "db", "other"),
            ("resolve", "web", "own"),
            ("trigger", "web", "other"),
            ("resolve", "db", "other")
        ])
    );
}

/// A running attempt renews its lease: the event is not claimed again when the first lease
/// would have run out, and a second renewal extends the renewed one; `finish` under the last
/// token releases it, and a renewal after that finds nothing to renew.
async fn a_renewed_lease_keeps_its_event_past_the_first_expiry_and_a_finish_releases_it(q: Arc<dyn Queue>) {
    q.accept(inbound(None), vec![alert("trigger", "k"), alert("resolve", "k")]).await.unwrap();
    let now = now_millis();
    let held = q.claim(now, 10, LEASE).await.unwrap().remove(0);
    let (once, twice) = (held.lease + 1000, held.lease + 2000);
    assert!(q.renew(held.id, held.lease, once).await.unwrap());
    assert!(q.claim(held.lease, 10, LEASE).await.unwrap().is_empty(), "held past the first lease");
    assert!(q.renew(held.id, once, twice).await.unwrap());
    assert!(q.claim(once, 10, LEASE).await.unwrap().is_empty(), "held past the second");
    assert!(q.finish(held.id, twice, answered(now, 202), Finish::Delivered).await.unwrap());
    assert!(!q.renew(held.id, twice, twice + 1000).await.unwrap(), "a finished event has no lease to renew");
    let next = q.claim(now, 10, LEASE).await.unwrap();
    assert_eq!(next[0].event.action(), Some(crate::event::Action::Resolve));
    assert!(!q.renew(next[0].id, next[0].lease - 1, twice).await.unwrap(), "a token it does not hold renews nothing");
}

/// A payload that would make too many events is a dead letter of its own kind, shown with its
/// request, and kept for replay: a remap with the cap raised queues its events, once, and
/// removes it from the list. Only dead events are requeued; a deleted payload is gone.
async fn a_payload_over_the_event_cap_is_a_dead_letter_until_remapped_and_only_dead_events_are_requeued(
    q: Arc<dyn Queue>,
) {
    let mut big = inbound_from("aws");
    big.status = InboundStatus::TooManyEvents("5 events, at most 2".into());
    big.headers = serde_json::json!({ "x-amz-sns-message-type": "Notification" });
    big.query = "team=db".into();
    let big_id = big.id.clone();
    q.accept(big, vec![]).await.unwrap();
    let mut failed = inbound_from("gh");
    failed.status = InboundStatus::MappingFailed("no rule".into());
    let failed_id = failed.id.clone();
    q.accept(failed, vec![]).await.unwrap();
    q.accept(inbound(None), vec![alert("trigger", "live")]).await.unwrap();

    let aws = q.dead_letters(Some("aws".into()), 10).await.unwrap();
    assert_eq!(
        aws.iter().map(|d| (d.kind.as_str(), d.id.as_str())).collect::<Vec<_>>(),
        [("too_many_events", big_id.as_str())]
    );
    assert_eq!(q.dead_letters(None, 1).await.unwrap().len(), 1, "the limit holds");
    let shown = q.dead_letter(DeadId::Inbound(big_id.clone())).await.unwrap().unwrap();
    assert_eq!(shown.letter.reason, "5 events, at most 2");
    assert!(shown.event.is_none() && shown.attempt_log.is_empty());
    assert_eq!(shown.headers["x-amz-sns-message-type"], "Notification");
    let stored = q.inbound(big_id.clone()).await.unwrap().unwrap();
    assert_eq!((stored.source.as_str(), stored.query.as_str()), ("aws", "team=db"));
    assert_eq!(stored.status, InboundStatus::TooManyEvents("5 events, at most 2".into()));
    assert!(q.inbound(uuid::Uuid::now_v7().to_string()).await.unwrap().is_none());

    let now = now_millis();
    let live = q.recent(1).await.unwrap()[0].id;
    assert_eq!(q.requeue_dead(live, now).await.unwrap(), None, "a pending event is not dead");
    assert_eq!(q.requeue_dead(live + 1000, now).await.unwrap(), None);
    let events = vec![alert("trigger", "a"), alert("trigger", "b")];
    assert_eq!(q.remap(big_id.clone(), InboundStatus::Mapped, events, now).await.unwrap(), Some(2));
    assert_eq!(q.remap(big_id.clone(), InboundStatus::Mapped, vec![], now).await.unwrap(), None, "once");
    assert_eq!(q.depth().await.unwrap().0, 3);
    assert!(q.dead_letter(DeadId::Inbound(big_id)).await.unwrap().is_none(), "no longer a dead letter");
    assert!(!q.delete_dead(DeadId::Event(live)).await.unwrap(), "a pending event is not deleted");
    assert!(q.delete_dead(DeadId::Inbound(failed_id.clone())).await.unwrap());
    assert!(q.inbound(failed_id).await.unwrap().is_none());
    assert!(q.dead_letters(None, 10).await.unwrap().is_empty());
}

/// `depth` counts pending events (leased and retrying ones too) and reports the oldest one's
/// creation time; finished events leave it.
async fn the_backlog_is_counted_from_its_oldest_pending_event(q: Arc<dyn Queue>) {
    assert_eq!(q.depth().await.unwrap(), (0, None));
    let first = NewInbound::new("gh", 1_000, bytes::Bytes::from_static(b"{}"), InboundStatus::Mapped);
    q.accept(first, vec![alert("trigger", "old")]).await.unwrap();
    q.accept(inbound(None), vec![alert("trigger", "new"), change()]).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), (3, Some(1_000)));
    let now = now_millis();
    let claimed = q.claim(now, 10, LEASE).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), (3, Some(1_000)), "leased events are still pending");
    let old = claimed.iter().find(|c| c.event.dedup_key().map(|k| k.as_str()) == Some("old")).unwrap();
    finish(&q, old, answered(now, 202), Finish::Delivered).await;
    let (n, oldest) = q.depth().await.unwrap();
    assert_eq!(n, 2);
    assert!(oldest.unwrap() > 1_000, "the oldest is now the second webhook's");
    let recent = q.recent(10).await.unwrap();
    assert_eq!(recent.len(), 3);
    assert_eq!(recent.iter().filter(|e| e.state == EventState::Pending).count(), 2);
}

/// The list shows each event's summary, and a search finds part of it in any case.
async fn events_keep_their_summary_and_are_found_by_part_of_it(q: Arc<dyn Queue>) {
    let titled = |dedup: &str, summary: &str| {
        let draft = AlertDraft {
            action: "trigger".into(),
            dedup_key: Some(dedup.into()),
            summary: Some(summary.into()),
            source: Some("src".into()),
            ..AlertDraft::default()
        };
        Event::alert(key(), draft).unwrap()
    };
    let events = vec![titled("k/1", "Disk full on db-1"), titled("k/2", "CPU hot on web-3"), change()];
    q.accept(inbound(None), events).await.unwrap();
    let found = |search: &str| {
        let (q, search) = (q.clone(), Some(search.to_string()));
        async move {
            let rows = q.events(EventQuery { search, limit: 10, ..EventQuery::default() }).await.unwrap();
            rows.into_iter().map(|r| (r.summary.dedup_key, r.summary.summary)).collect::<Vec<_>>()
        }
    };
    assert_eq!(found("DISK FULL").await, [(Some("k/1".to_string()), Some("Disk full on db-1".to_string()))]);
    assert_eq!(found("web-3").await.len(), 1);
    let all = q.recent(10).await.unwrap();
    assert!(all.iter().all(|e| e.summary.is_some()), "a change event's summary too: {all:?}");
}

/// Every event the search index does not hold yet is added, batch after batch, then none.
async fn index_everything(q: &Arc<dyn Queue>) {
    for _ in 0..100 {
        if q.index_for_search(2).await.unwrap() == 0 {
            return;
        }
    }
    panic!("the index never caught up");
}

/// A search finds part of a summary (any case) and a source's name, in the events the search
/// index holds and in those it does not hold yet (SQLite's indexer runs behind the accepts;
/// PostgreSQL scans), newest first and page by page; a source is matched whole, as before the
/// index.
async fn a_search_finds_a_summary_word_or_a_source_in_events_indexed_or_not_yet(q: Arc<dyn Queue>) {
    let events = vec![titled("k/1", "critical", "Disk full on db-1"), titled("k/2", "critical", "CPU hot on web-3")];
    q.accept(inbound_from("billing"), events).await.unwrap();
    index_everything(&q).await;
    q.accept(inbound_from("payments"), vec![titled("k/3", "critical", "disk FULL on db-2")]).await.unwrap();
    let found = |search: &str, before: Option<i64>, limit: usize| {
        let (q, search) = (q.clone(), Some(search.to_string()));
        async move {
            let rows = q.events(EventQuery { search, before, limit, ..EventQuery::default() }).await.unwrap();
            rows.into_iter().map(|r| (r.summary.id, r.summary.dedup_key.unwrap())).collect::<Vec<_>>()
        }
    };
    let keys = |rows: Vec<(i64, String)>| rows.into_iter().map(|(_, k)| k).collect::<Vec<_>>();
    assert_eq!(keys(found("disk full", None, 10).await), ["k/3", "k/1"]);
    assert_eq!(keys(found("billing", None, 10).await), ["k/2", "k/1"]);
    assert_eq!(keys(found("payments", None, 10).await), ["k/3"]);
    assert!(found("ayment", None, 10).await.is_empty(), "a source is matched whole");
    assert_eq!(keys(found("WEB-3", None, 10).await), ["k/2"]);
    let page1 = found("disk full", None, 1).await;
    assert_eq!(keys(page1.clone()), ["k/3"]);
    assert_eq!(keys(found("disk full", Some(page1[0].0), 1).await), ["k/1"], "the next page, from the index");
    index_everything(&q).await;
    assert_eq!(keys(found("disk full", None, 10).await), ["k/3", "k/1"], "the same once all is indexed");
    assert_eq!(keys(found("payments", None, 10).await), ["k/3"]);
}

/// `deliveries list --source --state --since`: each filter alone and together, with paging.
async fn events_are_filtered_by_source_state_and_time(q: Arc<dyn Queue>) {
    let before = now_millis();
    q.accept(inbound(None), vec![alert("trigger", "gh/1"), alert("trigger", "gh/2")]).await.unwrap();
    let mut aws = inbound(None);
    aws.source = "aws".into();
    q.accept(aws, vec![alert("trigger", "aws/1")]).await.unwrap();
    let now = now_millis();
    for c in q.claim(now, 10, LEASE).await.unwrap() {
        if c.event.dedup_key().unwrap().as_str() == "gh/1" {
            assert!(finish(&q, &c, answered(now, 202), Finish::Delivered).await);
        }
    }
    let keys = |query: EventQuery| {
        let q = q.clone();
        async move {
            let rows = q.events(EventQuery { limit: 10, ..query }).await.unwrap();
            rows.into_iter().map(|r| r.summary.dedup_key.unwrap()).collect::<Vec<_>>()
        }
    };
    let source = |s: &str| Some(s.to_string());
    assert_eq!(keys(EventQuery { source: source("aws"), ..EventQuery::default() }).await, ["aws/1"]);
    assert_eq!(keys(EventQuery { state: source("delivered"), ..EventQuery::default() }).await, ["gh/1"]);
    let pending_here = EventQuery { state: source("pending"), source: source("gh"), ..EventQuery::default() };
    assert_eq!(keys(pending_here).await, ["gh/2"]);
    assert_eq!(keys(EventQuery { since: Some(before), ..EventQuery::default() }).await.len(), 3);
    assert!(keys(EventQuery { since: Some(now + 3_600_000), ..EventQuery::default() }).await.is_empty());
}

/// The list shows every state an event can reach and can be searched by each; an event's
/// detail lists its attempts oldest first; an unknown event is none.
async fn every_state_is_listed_and_an_event_shows_each_attempt_in_order(q: Arc<dyn Queue>) {
    // Dedup_keys that contain no state's name: the search matches those too.
    let lanes = ["ok", "dry", "gone", "again", "later"];
    let triggers = lanes.iter().map(|k| alert("trigger", k).with_sequence("2")).collect();
    q.accept(inbound(None), triggers).await.unwrap();
    q.accept(inbound(None), vec![alert("trigger", "pair"), alert("trigger", "pair")]).await.unwrap();
    let now = now_millis();
    let mut outcomes = std::collections::HashMap::from([
        ("ok", Finish::Delivered),
        ("dry", Finish::DryRun),
        ("gone", Finish::Dead("400".into())),
        ("again", Finish::Dead("400".into())),
        ("later", Finish::RetryAt(now + 60_000)),
        ("pair", Finish::Delivered),
    ]);
    for c in q.claim(now, 10, LEASE).await.unwrap() {
        let outcome = outcomes.remove(c.event.dedup_key().unwrap().as_str()).unwrap();
        assert!(finish(&q, &c, answered(now, 500), outcome).await);
    }
    assert!(outcomes.is_empty(), "{outcomes:?}");
    q.accept(inbound(None), vec![alert("trigger", "fleeting"), alert("resolve", "fleeting")]).await.unwrap();
    let supersede = Pick { pace: None, supersede: true };
    assert!(q.claim_with(now_millis(), 10, LEASE, &supersede).await.unwrap().claimed.is_empty());
    let again = q.recent(10).await.unwrap().into_iter().find(|e| e.dedup_key.as_deref() == Some("again")).unwrap();
    q.requeue_dead(again.id, now).await.unwrap().unwrap();
    let flap = |action| (NewInbound { resolve_delay: 60_000, ..inbound(None) }, vec![alert(action, "flap")]);
    for (inbound, events) in [flap("resolve"), flap("trigger")] {
        q.accept(inbound, events).await.unwrap();
    }
    q.accept(inbound(None), vec![alert("resolve", "ok").with_sequence("1")]).await.unwrap();
    for state in EventState::ALL {
        let rows =
            q.events(EventQuery { search: Some(state.to_string()), limit: 10, ..EventQuery::default() }).await.unwrap();
        assert!(!rows.is_empty() && rows.iter().all(|r| r.summary.state == state), "{state}: {rows:?}");
    }
    let retry = q.recent(10).await.unwrap().into_iter().find(|e| e.dedup_key.as_deref() == Some("later")).unwrap();
    let again = q.claim(now + 60_000, 10, LEASE).await.unwrap();
    let held = again.iter().find(|c| c.id == retry.id).unwrap();
    let second = Attempt { at: now + 60_000, status: Some(202), detail: Some("ok".into()), dedup_key: None };
    assert!(finish(&q, held, second, Finish::Delivered).await);
    let detail = q.event(retry.id).await.unwrap().unwrap();
    let log: Vec<_> = detail.attempt_log.iter().map(|a| (a.at, a.status)).collect();
    assert_eq!(log, [(now, Some(500)), (now + 60_000, Some(202))]);
    assert_eq!((detail.row.summary.state, detail.row.summary.attempts), (EventState::Delivered, 2));
    assert!(q.event(retry.id + 1000).await.unwrap().is_none());
    // The flap's trigger waits too: its lane was never paged, so only the held resolve was damped.
    let backlog = "the backlog: the replayed copy, still leased, and the flap's trigger";
    assert_eq!(q.depth().await.unwrap(), (2, Some(now)), "{backlog}");
}

/// Retention deletes only what finished before its cutoff: a delivered event after it stays,
/// and so does its delivery id; routes older than it are forgotten, so a resolve after that
/// stays on its own routing key.
async fn pruning_forgets_only_what_finished_before_the_cutoff_sticky_routes_included(q: Arc<dyn Queue>) {
    let body = bytes::Bytes::from_static(b"{}");
    let old =
        NewInbound { delivery_id: Some("old".into()), ..NewInbound::new("gh", 1_000, body, InboundStatus::Mapped) };
    q.accept(old, vec![alert_on(other_key(), "trigger", "db")]).await.unwrap();
    let new = inbound(Some("new"));
    let cutoff = new.received_at;
    q.accept(new, vec![alert("trigger", "web")]).await.unwrap();
    let now = now_millis();
    for c in q.claim(now, 10, LEASE).await.unwrap() {
        finish(&q, &c, answered(now, 202), Finish::Delivered).await;
    }
    assert_eq!(q.prune(cutoff).await.unwrap(), 2, "the first route and delivery id; no event finished before");
    assert_eq!(q.recent(10).await.unwrap().len(), 2);
    assert!(matches!(q.accept(inbound(Some("new")), vec![]).await.unwrap(), Accepted::Duplicate { .. }));
    assert!(matches!(q.accept(inbound(Some("old")), vec![]).await.unwrap(), Accepted::Committed { .. }));
    q.accept(inbound(None), vec![alert_on(key(), "resolve", "db")]).await.unwrap();
    let later = now_millis();
    let sent = deliver_all(&q, later).await;
    assert_eq!(sent, [("resolve".into(), "db".into(), key().expose().to_string())], "its trigger's route was pruned");
    assert!(q.prune(later + 1).await.unwrap() >= 6, "now the three delivered events go, with their attempts");
    assert!(q.recent(10).await.unwrap().is_empty());
}

/// A trigger with a title: what the ledger keeps of the first one.
fn titled(dedup: &str, severity: &str, summary: &str) -> Event {
    Event::alert(
        key(),
        AlertDraft {
            action: "trigger".into(),
            dedup_key: Some(dedup.into()),
            summary: Some(summary.into()),
            severity: Some(severity.into()),
            source: Some("src".into()),
            ..AlertDraft::default()
        },
    )
    .unwrap()
    .with_rule("firing")
}

/// Claims every deliverable event and finishes each as PagerDuty would: a 202 naming the
/// dedup_key it was sent with, at `at`. The events sent, as `(action, dedup_key)`.
async fn deliver_accepted(q: &Arc<dyn Queue>, at: Millis) -> Vec<(String, String)> {
    let mut sent = Vec::new();
    loop {
        let batch = q.claim(now_millis(), 100, LEASE).await.unwrap();
        if batch.is_empty() {
            return sent;
        }
        for c in batch {
            let dk = c.event.dedup_key().map(|k| k.to_string());
            let action = c.event.action().map_or("change", |a| a.as_str());
            sent.push((action.to_string(), dk.clone().unwrap_or_default()));
            let attempt = Attempt { at, status: Some(202), detail: None, dedup_key: dk };
            finish(q, &c, attempt, Finish::Delivered).await;
        }
    }
}

/// Every incident, resolved ones too.
async fn ledger(q: &Arc<dyn Queue>) -> Vec<Incident> {
    q.incidents(IncidentQuery { limit: 100, ..IncidentQuery::default() }).await.unwrap()
}

async fn the_ledger_keeps_what_pagerduty_accepted_under_the_key_it_answered(q: Arc<dyn Queue>) {
    q.accept(inbound_from("cw"), vec![titled("k", "warning", "disk at 80%")]).await.unwrap();
    // Refused and retried attempts write nothing: only what PagerDuty accepted counts.
    let c = q.claim(now_millis(), 10, LEASE).await.unwrap();
    finish(&q, &c[0], answered(1_000, 500), Finish::RetryAt(0)).await;
    assert!(ledger(&q).await.is_empty());
    let c = q.claim(now_millis(), 10, LEASE).await.unwrap();
    let pd = Attempt { at: 2_000, status: Some(202), detail: None, dedup_key: Some("pd-k".into()) };
    finish(&q, &c[0], pd, Finish::Delivered).await;
    let [i] = &ledger(&q).await[..] else { panic!("one incident") };
    assert_eq!((i.dedup_key.as_str(), i.source.as_str(), i.rule.as_deref()), ("pd-k", "cw", Some("firing")));
    assert_eq!((i.opened_at, i.last_trigger_at, i.state), (2_000, 2_000, IncidentState::Open));
    assert_eq!((i.severity.as_deref(), i.summary.as_deref()), (Some("warning"), Some("disk at 80%")));
    assert_eq!(i.routing_key, key().fingerprint(), "the key is shown by its fingerprint only");
    // A later trigger moves the last trigger; PagerDuty keeps the first title.
    q.accept(inbound_from("cw"), vec![titled("pd-k", "critical", "disk at 99%")]).await.unwrap();
    deliver_accepted(&q, 3_000).await;
    let [i] = &ledger(&q).await[..] else { panic!("still one") };
    assert_eq!((i.opened_at, i.last_trigger_at), (2_000, 3_000));
    assert_eq!((i.severity.as_deref(), i.summary.as_deref()), (Some("warning"), Some("disk at 80%")));
    // An acknowledged alert stays acknowledged when triggered again.
    q.accept(inbound_from("cw"), vec![alert("acknowledge", "pd-k")]).await.unwrap();
    deliver_accepted(&q, 4_000).await;
    q.accept(inbound_from("cw"), vec![titled("pd-k", "critical", "again")]).await.unwrap();
    deliver_accepted(&q, 5_000).await;
    let [i] = &ledger(&q).await[..] else { panic!("still one") };
    assert_eq!((i.state, i.last_action.as_str(), i.last_action_at), (IncidentState::Acknowledged, "trigger", 5_000));
    assert_eq!(
        q.open_incidents().await.unwrap(),
        [OpenIncidents { source: "cw".into(), open: 1, oldest_opened_at: 2_000 }]
    );
    assert_eq!(q.open_lanes("pd-k".into()).await.unwrap(), [key()]);
    // The resolve closes it; a trigger after it opens a new incident with its own title.
    q.accept(inbound_from("cw"), vec![alert("resolve", "pd-k")]).await.unwrap();
    deliver_accepted(&q, 6_000).await;
    let [i] = &ledger(&q).await[..] else { panic!("still one") };
    assert_eq!((i.state, i.last_by.as_str(), i.last_action_at), (IncidentState::Resolved, "cw", 6_000));
    assert!(q.open_incidents().await.unwrap().is_empty());
    assert!(q.open_lanes("pd-k".into()).await.unwrap().is_empty());
    q.accept(inbound_from("am"), vec![titled("pd-k", "critical", "disk at 99%")]).await.unwrap();
    deliver_accepted(&q, 7_000).await;
    let [i] = &ledger(&q).await[..] else { panic!("still one row") };
    assert_eq!((i.source.as_str(), i.opened_at, i.state), ("am", 7_000, IncidentState::Open));
    assert_eq!(i.severity.as_deref(), Some("critical"));
}

async fn acknowledges_and_resolves_of_lanes_pagerhook_never_triggered_leave_no_incident(q: Arc<dyn Queue>) {
    q.accept(inbound_from("cw"), vec![alert("acknowledge", "a"), alert("resolve", "b"), change()]).await.unwrap();
    deliver_accepted(&q, 1_000).await;
    // A trigger whose 202 came with a dead outcome (the worker gave up on it) is not open.
    q.accept(inbound_from("cw"), vec![alert("trigger", "c")]).await.unwrap();
    let c = q.claim(now_millis(), 10, LEASE).await.unwrap();
    let pd = Attempt { at: 2_000, status: Some(202), detail: None, dedup_key: Some("c".into()) };
    finish(&q, &c[0], pd, Finish::Dead("gave up".into())).await;
    assert!(ledger(&q).await.is_empty());
    assert!(q.open_incidents().await.unwrap().is_empty());
    assert!(q.open_lanes("a".into()).await.unwrap().is_empty());
    assert_eq!(
        q.resolve_incidents(vec!["a".into()], 3_000).await.unwrap(),
        [ResolveQueued::NotOpen { dedup_key: "a".into() }]
    );
    assert_eq!(q.depth().await.unwrap().0, 0, "nothing queued for a lane the ledger does not hold");
}

async fn an_operator_resolve_is_queued_on_each_open_lane_and_recorded_as_the_operator_s(q: Arc<dyn Queue>) {
    q.accept(inbound_from("cw"), vec![titled("k", "error", "one"), alert_on(other_key(), "trigger", "k")])
        .await
        .unwrap();
    q.accept(inbound_from("gh"), vec![titled("old", "error", "two")]).await.unwrap();
    deliver_accepted(&q, 1_000).await;
    let open = IncidentQuery { open: true, limit: 100, ..IncidentQuery::default() };
    assert_eq!(q.incidents(open.clone()).await.unwrap().len(), 3);
    let gh = IncidentQuery { source: Some("gh".into()), ..open.clone() };
    assert_eq!(q.incidents(gh).await.unwrap().iter().map(|i| i.dedup_key.as_str()).collect::<Vec<_>>(), ["old"]);
    assert!(q.incidents(IncidentQuery { opened_before: Some(1_000), ..open.clone() }).await.unwrap().is_empty());

    let done = q.resolve_incidents(vec!["k".into(), "nope".into()], 2_000).await.unwrap();
    assert_eq!(
        done,
        [
            ResolveQueued::Queued { dedup_key: "k".into(), events: 2 },
            ResolveQueued::NotOpen { dedup_key: "nope".into() }
        ]
    );
    let sent = deliver_all(&q, now_millis()).await;
    let mut keys: Vec<_> = sent.iter().map(|(a, dk, k)| (a.as_str(), dk.as_str(), k == key().expose())).collect();
    keys.sort();
    assert_eq!(keys, [("resolve", "k", false), ("resolve", "k", true)], "one resolve per routing key it is open on");
    // deliver_all's 202s name no dedup_key: the ledger waits for PagerDuty's answer.
    assert_eq!(q.incidents(open.clone()).await.unwrap().len(), 3);
    q.resolve_incidents(vec!["k".into()], 3_000).await.unwrap();
    deliver_accepted(&q, 4_000).await;
    let left = q.incidents(open).await.unwrap();
    assert_eq!(left.iter().map(|i| i.dedup_key.as_str()).collect::<Vec<_>>(), ["old"]);
    let closed: Vec<_> = ledger(&q).await.into_iter().filter(|i| i.dedup_key == "k").collect();
    assert!(closed.iter().all(|i| i.state == IncidentState::Resolved && i.last_by == OPERATOR), "{closed:?}");
    assert_eq!(q.recent(1).await.unwrap()[0].source, OPERATOR, "the event names its origin");
}

async fn resolved_incidents_are_forgotten_after_the_retention_and_open_ones_kept(q: Arc<dyn Queue>) {
    q.accept(inbound_from("cw"), vec![alert("trigger", "gone"), alert("trigger", "open")]).await.unwrap();
    deliver_accepted(&q, 1_000).await;
    q.accept(inbound_from("cw"), vec![alert("resolve", "gone")]).await.unwrap();
    deliver_accepted(&q, 2_000).await;
    q.prune(2_000).await.unwrap();
    assert_eq!(ledger(&q).await.len(), 2, "resolved at the cutoff: kept");
    q.prune(2_001).await.unwrap();
    let left = ledger(&q).await;
    assert_eq!(
        left.iter().map(|i| (i.dedup_key.as_str(), i.state)).collect::<Vec<_>>(),
        [("open", IncidentState::Open)]
    );
    assert_eq!(q.open_incidents().await.unwrap()[0].open, 1);
}

/// `alert(action, dedup)` whose rule gave it `sequence`.
fn sequenced(action: &str, dedup: &str, sequence: &str) -> Event {
    alert(action, dedup).with_sequence(sequence)
}

async fn an_event_older_than_its_lane_s_sequence_is_stale_and_not_sent(q: Arc<dyn Queue>) {
    // A resolve at 10:05, then its trigger of 10:00 retried late (SNS): the trigger is stale.
    let resolved = sequenced("resolve", "cw", "2024-05-01T10:05:00Z");
    let late = sequenced("trigger", "cw", "2024-05-01T10:00:00Z");
    let done = q.accept(inbound_from("sns"), vec![resolved]).await.unwrap();
    assert!(matches!(done, Accepted::Committed { events: 1, stale: 0, .. }), "{done:?}");
    let done = q.accept(inbound_from("sns"), vec![late]).await.unwrap();
    assert!(matches!(done, Accepted::Committed { events: 1, stale: 1, .. }), "{done:?}");
    assert_eq!(deliver_accepted(&q, 1_000).await, [("resolve".to_string(), "cw".to_string())]);
    let stale = q.events(EventQuery { state: Some("stale".into()), limit: 10, ..EventQuery::default() }).await.unwrap();
    let [row] = &stale[..] else { panic!("{stale:?}") };
    assert_eq!(row.summary.action.as_deref(), Some("trigger"));
    let why = row.summary.last_error.as_deref().unwrap_or_default();
    assert!(why.contains("2024-05-01T10:00:00Z is older than 2024-05-01T10:05:00Z"), "{why}");
    // An equal value is fresh (a repeat, a re-run of the latest run); a newer one too; within
    // one webhook the later event sees the earlier one's value.
    let run = |action, n| sequenced(action, "run", n);
    q.accept(inbound_from("gh"), vec![run("trigger", "41"), run("trigger", "41"), run("resolve", "40")]).await.unwrap();
    q.accept(inbound_from("gh"), vec![run("resolve", "42")]).await.unwrap();
    let sent = deliver_accepted(&q, 2_000).await;
    assert_eq!(sent.iter().map(|(a, _)| a.as_str()).collect::<Vec<_>>(), ["trigger", "resolve"], "{sent:?}");
    // Values of another type are not compared; events without one are not checked.
    q.accept(inbound_from("gh"), vec![run("trigger", "2024-05-01T10:00:00Z"), alert("resolve", "run")]).await.unwrap();
    assert_eq!(deliver_accepted(&q, 3_000).await.len(), 2);
}

/// `resolve_when_silent`'s judgement: at `now`, incidents `am` opened and has not re-triggered
/// for 3 s.
async fn silent_at(q: &Arc<dyn Queue>, now: Millis) -> Vec<String> {
    q.resolve_silent("am", std::time::Duration::from_secs(3), now, 100).await.unwrap()
}

/// An incident whose source stopped re-triggering it for `resolve_when_silent` is resolved by
/// pagerhook, its record saying why; one re-triggered since, one whose lane has a trigger
/// waiting, and another source's are left open. A restart between trigger and silence
/// changes nothing: the ledger's times are the store's.
async fn a_silent_incident_is_resolved_and_a_live_one_is_not<F, Fut>(q: Arc<dyn Queue>, reopen: F)
where
    F: FnOnce(Arc<dyn Queue>) -> Fut,
    Fut: std::future::Future<Output = Arc<dyn Queue>>,
{
    fire_three_of_am_and_one_of_cw(&q).await;
    let q = reopen(q).await;
    judge_am_silent_after_loud_spoke(&q).await;
}

/// am's quiet, loud and queued, and cw's other, triggered and sent at 1 s.
async fn fire_three_of_am_and_one_of_cw(q: &Arc<dyn Queue>) {
    let fired = [titled("quiet", "critical", "down"), titled("loud", "error", "up"), titled("queued", "error", "q")];
    q.accept(inbound_from("am"), fired.to_vec()).await.unwrap();
    q.accept(inbound_from("cw"), vec![titled("other", "error", "x")]).await.unwrap();
    deliver_accepted(q, 1_000).await;
}

/// loud re-triggered and sent at 5 s, queued re-triggered and waiting; only quiet is silent.
async fn judge_am_silent_after_loud_spoke(q: &Arc<dyn Queue>) {
    q.accept(inbound_from("am"), vec![titled("loud", "error", "up")]).await.unwrap();
    deliver_accepted(q, 5_000).await;
    q.accept(inbound_from("am"), vec![titled("queued", "error", "q")]).await.unwrap();
    let three = std::time::Duration::from_secs(3);
    let at_4s = q.resolve_silent("am", three, 4_000, 100).await.unwrap();
    assert!(at_4s.is_empty(), "silent for exactly 3 s is not longer than 3 s");
    let judged = q.silent_incidents("am".into(), 3_000, 10).await.unwrap();
    assert_eq!(judged.iter().map(|(_, k)| k.as_str()).collect::<Vec<_>>(), ["queued", "quiet"], "loud spoke at 5 s");
    assert!(q.lane_waiting(alert("resolve", "queued").order_key().unwrap()).await.unwrap(), "queued's trigger waits");
    assert_eq!(q.resolve_silent("am", three, 6_000, 100).await.unwrap(), ["quiet"]);
    assert!(silent_at(q, 6_000).await.is_empty(), "its resolve waits in the lane: not queued twice");
    let sent = deliver_accepted(q, 7_000).await;
    assert_eq!(sent, [("resolve".to_string(), "quiet".to_string()), ("trigger".to_string(), "queued".to_string())]);
    let quiet = ledger_row(q, "quiet").await;
    assert_eq!((quiet.state, quiet.last_by.as_str()), (IncidentState::Resolved, PAGERHOOK));
    for live in ["loud", "queued", "other"] {
        assert_eq!(ledger_row(q, live).await.state, IncidentState::Open, "{live}");
    }
    let resolve = q.recent(10).await.unwrap().into_iter().find(|e| e.source == PAGERHOOK).unwrap();
    let record = q.inbound(resolve.inbound_id).await.unwrap().unwrap();
    let why = String::from_utf8_lossy(&record.body).to_string();
    assert!(why.contains("source 'am' did not re-trigger it for 3s (resolve_when_silent)"), "{why}");
    assert!(silent_at(q, 60_000).await.iter().all(|k| k != "quiet"), "a resolved incident is not resolved again");
}

/// One ledger row by dedup_key.
async fn ledger_row(q: &Arc<dyn Queue>, dedup_key: &str) -> Incident {
    ledger(q).await.into_iter().find(|i| i.dedup_key == dedup_key).unwrap()
}

async fn an_incident_its_source_fell_silent_on_is_resolved_as_pagerhook_s_and_a_live_one_is_not(q: Arc<dyn Queue>) {
    fire_three_of_am_and_one_of_cw(&q).await;
    judge_am_silent_after_loud_spoke(&q).await;
}

#[tokio::test]
async fn sqlite_a_silent_incident_is_resolved_across_a_restart() {
    let (q, dir) = sqlite();
    let path = dir.path().join("q.db");
    a_silent_incident_is_resolved_and_a_live_one_is_not(q, |q| async move {
        drop(q);
        Arc::new(SqliteQueue::open(&path, Durability::Fsync, Role::Deliverer).unwrap()) as Arc<dyn Queue>
    })
    .await;
}

#[tokio::test]
async fn postgres_a_silent_incident_is_resolved_across_a_restart() {
    let Some(schema) = PgSchema::create("a_silent_incident_is_resolved_across_a_restart").await else { return };
    let q = replica(&schema).await;
    a_silent_incident_is_resolved_and_a_live_one_is_not(q, |q| async {
        drop(q);
        replica(&schema).await
    })
    .await;
    schema.drop().await;
}

/// The judgement and the resolve's accept are two steps: a trigger accepted between them (the
/// sender re-sent just in time) wins, checked again under the lane's lock, and the resolve is
/// stored stale, never sent; so is one whose incident closed meanwhile.
async fn a_silence_resolve_loses_to_a_trigger_that_came_after_the_judgement(q: Arc<dyn Queue>) {
    let fired = vec![titled("k", "error", "up"), titled("gone", "error", "g"), titled("w", "error", "w")];
    q.accept(inbound_from("am"), fired).await.unwrap();
    deliver_accepted(&q, 1_000).await;
    let judged = q.silent_incidents("am".into(), 1_500, 10).await.unwrap();
    assert_eq!(judged.iter().map(|(_, k)| k.as_str()).collect::<Vec<_>>(), ["gone", "k", "w"]);
    // Meanwhile: k re-triggered and sent, gone resolved by its source, w re-triggered and
    // still waiting in its lane.
    q.accept(inbound_from("am"), vec![titled("k", "error", "up"), alert("resolve", "gone")]).await.unwrap();
    deliver_accepted(&q, 2_000).await;
    let w = alert("resolve", "w").order_key().unwrap();
    assert!(!q.lane_waiting(w.clone()).await.unwrap());
    q.accept(inbound_from("am"), vec![titled("w", "error", "w")]).await.unwrap();
    assert!(q.lane_waiting(w).await.unwrap());
    for (routing_key, dedup_key) in judged {
        let mut late = inbound_from(PAGERHOOK);
        late.silent_before = Some(1_500);
        let done = q.accept(late, vec![alert_on(routing_key, "resolve", &dedup_key)]).await.unwrap();
        assert!(matches!(done, Accepted::Committed { stale: 1, .. }), "{dedup_key}: {done:?}");
    }
    assert_eq!(deliver_accepted(&q, 3_000).await, [("trigger".to_string(), "w".to_string())], "no resolve is sent");
    assert_eq!(
        (ledger_row(&q, "k").await.state, ledger_row(&q, "w").await.state),
        (IncidentState::Open, IncidentState::Open)
    );
    assert!(q.silent_incidents("am".into(), 1_500, 10).await.unwrap().is_empty());
    assert!(silent_at(&q, 4_999).await.is_empty(), "w was sent at 3 s");
}

/// The sequence a lane applied outlives a restart: an old resolve arriving after it is stale.
async fn a_lane_s_sequence_outlives_a_restart<F, Fut>(q: Arc<dyn Queue>, reopen: F)
where
    F: FnOnce(Arc<dyn Queue>) -> Fut,
    Fut: std::future::Future<Output = Arc<dyn Queue>>,
{
    q.accept(inbound_from("gl"), vec![sequenced("trigger", "pipeline", "1002")]).await.unwrap();
    deliver_accepted(&q, 1_000).await;
    let q = reopen(q).await;
    // Pipeline 1001 finished after 1002 failed: its resolve must not close 1002's incident.
    let done = q.accept(inbound_from("gl"), vec![sequenced("resolve", "pipeline", "1001")]).await.unwrap();
    assert!(matches!(done, Accepted::Committed { stale: 1, .. }), "{done:?}");
    assert!(deliver_accepted(&q, 2_000).await.is_empty());
    assert_eq!(ledger(&q).await[0].state, IncidentState::Open);
}

#[tokio::test]
async fn sqlite_a_lane_s_sequence_outlives_a_restart() {
    let (q, dir) = sqlite();
    let path = dir.path().join("q.db");
    a_lane_s_sequence_outlives_a_restart(q, |q| async move {
        drop(q);
        Arc::new(SqliteQueue::open(&path, Durability::Fsync, Role::Deliverer).unwrap()) as Arc<dyn Queue>
    })
    .await;
}

#[tokio::test]
async fn postgres_a_lane_s_sequence_outlives_a_restart() {
    let Some(schema) = PgSchema::create("a_lane_s_sequence_outlives_a_restart").await else { return };
    let q = replica(&schema).await;
    a_lane_s_sequence_outlives_a_restart(q, |q| async {
        drop(q);
        replica(&schema).await
    })
    .await;
    schema.drop().await;
}

/// A store closed and opened again between a trigger and its resolve (a restart): the ledger
/// still holds the incident, and the resolve closes it.
async fn the_ledger_outlives_a_restart_between_trigger_and_resolve<F, Fut>(q: Arc<dyn Queue>, reopen: F)
where
    F: FnOnce(Arc<dyn Queue>) -> Fut,
    Fut: std::future::Future<Output = Arc<dyn Queue>>,
{
    q.accept(inbound_from("cw"), vec![titled("k", "critical", "down")]).await.unwrap();
    deliver_accepted(&q, 1_000).await;
    let q = reopen(q).await;
    let [i] = &ledger(&q).await[..] else { panic!("one incident") };
    assert_eq!((i.state, i.summary.as_deref()), (IncidentState::Open, Some("down")));
    q.accept(inbound_from("cw"), vec![alert("resolve", "k")]).await.unwrap();
    deliver_accepted(&q, 2_000).await;
    assert_eq!(ledger(&q).await[0].state, IncidentState::Resolved);
}

#[tokio::test]
async fn sqlite_the_ledger_outlives_a_restart_between_trigger_and_resolve() {
    let (q, dir) = sqlite();
    let path = dir.path().join("q.db");
    the_ledger_outlives_a_restart_between_trigger_and_resolve(q, |q| async move {
        drop(q);
        let q = SqliteQueue::open(&path, Durability::Fsync, Role::Deliverer).unwrap();
        Arc::new(q) as Arc<dyn Queue>
    })
    .await;
}

#[tokio::test]
async fn postgres_the_ledger_outlives_a_restart_between_trigger_and_resolve() {
    let Some(schema) = PgSchema::create("the_ledger_outlives_a_restart_between_trigger_and_resolve").await else {
        return;
    };
    let q = replica(&schema).await;
    the_ledger_outlives_a_restart_between_trigger_and_resolve(q, |q| async {
        drop(q);
        replica(&schema).await
    })
    .await;
    schema.drop().await;
}

/// A trigger whose rule sets `escalate = true`.
fn escalating(dedup: &str, severity: &str, summary: &str) -> Event {
    titled(dedup, severity, summary).with_escalate()
}

/// `(action, dedup_key)` pairs, sorted: what [`deliver_accepted`] returns, in any order.
fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<_> = expected.iter().map(|(a, dk)| (a.to_string(), dk.to_string())).collect();
    out.sort();
    out
}

async fn delivered_sorted(q: &Arc<dyn Queue>, at: Millis) -> Vec<(String, String)> {
    let mut sent = deliver_accepted(q, at).await;
    sent.sort();
    sent
}

/// A warning paged, then a critical trigger whose rule escalates: a second incident, critical,
/// linked to the first. The store is closed and opened again (a restart); the first's resolve
/// then closes both.
async fn an_escalation_opens_a_linked_incident_and_the_first_s_resolve_closes_both<F, Fut>(q: Arc<dyn Queue>, reopen: F)
where
    F: FnOnce(Arc<dyn Queue>) -> Fut,
    Fut: std::future::Future<Output = Arc<dyn Queue>>,
{
    q.accept(inbound_from("cw"), vec![titled("disk", "warning", "disk at 80%")]).await.unwrap();
    assert_eq!(deliver_accepted(&q, 1_000).await, pairs(&[("trigger", "disk")]));
    q.accept(inbound_from("cw"), vec![escalating("disk", "critical", "disk at 99%")]).await.unwrap();
    let c = q.claim(now_millis(), 10, LEASE).await.unwrap();
    let [up] = &c[..] else { panic!("one event: {c:?}") };
    let body = up.event.body();
    assert_eq!(body["dedup_key"], "disk~escalated-critical");
    assert_eq!(body["payload"]["severity"], "critical");
    assert_eq!(body["payload"]["summary"], "[escalated from warning] disk at 99%");
    let link = serde_json::json!({ "dedup_key": "disk", "severity": "warning" });
    assert_eq!(body["payload"]["custom_details"]["escalated_from"], link);
    let pd = Attempt { at: 2_000, status: Some(202), detail: None, dedup_key: Some("disk~escalated-critical".into()) };
    finish(&q, up, pd, Finish::Delivered).await;

    let q = reopen(q).await;
    let held: Vec<_> = ledger(&q).await.into_iter().map(|i| (i.dedup_key, i.severity, i.state, i.rule)).collect();
    let open = |dk: &str, severity: &str| {
        (dk.to_string(), Some(severity.to_string()), IncidentState::Open, Some("firing".to_string()))
    };
    assert_eq!(held, [open("disk", "warning"), open("disk~escalated-critical", "critical")]);
    q.accept(inbound_from("cw"), vec![alert("resolve", "disk")]).await.unwrap();
    let sent = delivered_sorted(&q, 3_000).await;
    assert_eq!(sent, pairs(&[("resolve", "disk"), ("resolve", "disk~escalated-critical")]));
    let states: Vec<_> = ledger(&q).await.into_iter().map(|i| (i.dedup_key, i.state, i.last_by)).collect();
    let closed = |dk: &str| (dk.to_string(), IncidentState::Resolved, "cw".to_string());
    assert_eq!(states, [closed("disk"), closed("disk~escalated-critical")]);
}

#[tokio::test]
async fn sqlite_an_escalation_opens_a_linked_incident_and_the_first_s_resolve_closes_both() {
    let (q, dir) = sqlite();
    let path = dir.path().join("q.db");
    an_escalation_opens_a_linked_incident_and_the_first_s_resolve_closes_both(q, |q| async move {
        drop(q);
        let q = SqliteQueue::open(&path, Durability::Fsync, Role::Deliverer).unwrap();
        Arc::new(q) as Arc<dyn Queue>
    })
    .await;
}

#[tokio::test]
async fn postgres_an_escalation_opens_a_linked_incident_and_the_first_s_resolve_closes_both() {
    let name = "an_escalation_opens_a_linked_incident_and_the_first_s_resolve_closes_both";
    let Some(schema) = PgSchema::create(name).await else { return };
    let q = replica(&schema).await;
    an_escalation_opens_a_linked_incident_and_the_first_s_resolve_closes_both(q, |q| async {
        drop(q);
        replica(&schema).await
    })
    .await;
    schema.drop().await;
}

/// Where escalating triggers go, by what their incident holds (nothing open: as they came;
/// as urgent as an open escalation: to it; less urgent than it: the first incident's key);
/// without `escalate`, a more urgent trigger stays on its key. Every close of the first
/// (a source's, in the same webhook as the escalation, an operator's) follows its
/// escalations, after an escalated trigger still pending in their lane.
async fn an_escalating_trigger_goes_by_what_its_incident_holds_and_every_close_follows_its_escalations(
    q: Arc<dyn Queue>,
) {
    let step = async |events: Vec<Event>, at: Millis| {
        q.accept(inbound_from("cw"), events).await.unwrap();
        delivered_sorted(&q, at).await
    };
    assert_eq!(step(vec![titled("db", "warning", "slow")], 1_000).await, pairs(&[("trigger", "db")]));
    assert_eq!(step(vec![titled("db", "critical", "down")], 1_100).await, pairs(&[("trigger", "db")]), "no escalate");
    assert_eq!(
        step(vec![escalating("api", "critical", "down")], 1_200).await,
        pairs(&[("trigger", "api")]),
        "nothing open"
    );
    assert_eq!(
        step(vec![escalating("api", "critical", "down")], 1_300).await,
        pairs(&[("trigger", "api")]),
        "as urgent"
    );
    assert_eq!(step(vec![titled("web", "warning", "slow")], 2_000).await, pairs(&[("trigger", "web")]));
    let up = pairs(&[("trigger", "web~escalated-critical")]);
    assert_eq!(step(vec![escalating("web", "critical", "down")], 2_100).await, up);
    assert_eq!(step(vec![escalating("web", "critical", "still down")], 2_200).await, up, "kept fresh");
    assert_eq!(step(vec![escalating("web", "error", "errors")], 2_300).await, pairs(&[("trigger", "web")]));
    assert_eq!(ledger(&q).await.len(), 4, "db, api, web and web's escalation");

    // An escalated trigger still pending when the resolve comes: resolved after it.
    step(vec![titled("mem", "warning", "high")], 3_000).await;
    q.accept(inbound_from("cw"), vec![escalating("mem", "critical", "swapping")]).await.unwrap();
    q.accept(inbound_from("cw"), vec![alert("resolve", "mem")]).await.unwrap();
    let order = deliver_accepted(&q, 3_100).await;
    let at = |action: &str| order.iter().position(|(a, dk)| a == action && dk == "mem~escalated-critical").unwrap();
    assert!(at("trigger") < at("resolve"), "{order:?}");
    assert_eq!(order.len(), 3, "{order:?}");
    // The escalation and the resolve in one webhook.
    step(vec![titled("net", "warning", "loss")], 4_000).await;
    let both = step(vec![escalating("net", "error", "down"), alert("acknowledge", "net")], 4_100).await;
    let expected = [("acknowledge", "net"), ("acknowledge", "net~escalated-error"), ("trigger", "net~escalated-error")];
    assert_eq!(both, pairs(&expected));
    // An operator's resolve of the first incident closes its escalation too.
    assert_eq!(
        q.resolve_incidents(vec!["web".into()], 5_000).await.unwrap(),
        [ResolveQueued::Queued { dedup_key: "web".into(), events: 1 }]
    );
    assert_eq!(delivered_sorted(&q, 5_100).await, pairs(&[("resolve", "web"), ("resolve", "web~escalated-critical")]));
    let open: Vec<_> = ledger(&q).await.into_iter().filter(|i| i.state != IncidentState::Resolved).collect();
    let open: Vec<_> = open.iter().map(|i| i.dedup_key.as_str()).collect();
    assert_eq!(open, ["db", "api", "net", "net~escalated-error"]);
}

async fn only_the_opener_closes_its_incident_unless_the_closer_may_close_it(q: Arc<dyn Queue>) {
    q.accept(inbound_from("gh"), vec![alert("trigger", "deploy")]).await.unwrap();
    deliver_accepted(&q, 1_000).await;
    // Another source's acknowledge and resolve are dead letters naming both sources.
    q.accept(inbound_from("sns"), vec![alert("acknowledge", "deploy"), alert("resolve", "deploy")]).await.unwrap();
    assert_eq!(q.depth().await.unwrap().0, 0, "nothing of sns's is queued");
    let dead = q.dead_letters(None, 10).await.unwrap();
    assert_eq!(dead.len(), 2, "{dead:?}");
    for d in &dead {
        assert_eq!((d.kind.as_str(), d.source.as_str(), d.dedup_key.as_deref()), ("event", "sns", Some("deploy")));
        assert!(d.reason.contains("source 'sns' may not") && d.reason.contains("source 'gh' opened"), "{}", d.reason);
        assert!(d.reason.contains(r#"may_close = ["gh"]"#), "{}", d.reason);
    }
    // A lane the ledger does not know passes, whoever sends it.
    q.accept(inbound_from("sns"), vec![alert("resolve", "unknown")]).await.unwrap();
    // A source its config lets close after gh's, gh itself, and an operator may.
    let allowed = NewInbound { may_close: vec!["gh".into()], ..inbound_from("sns") };
    q.accept(allowed, vec![alert("acknowledge", "deploy")]).await.unwrap();
    q.accept(inbound_from("gh"), vec![alert("acknowledge", "deploy")]).await.unwrap();
    let sent = deliver_accepted(&q, 2_000).await;
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert_eq!(q.dead_letters(None, 10).await.unwrap().len(), 2, "no new dead letter");
    assert_eq!(q.resolve_incidents(vec!["deploy".into()], 3_000).await.unwrap().len(), 1);
    assert_eq!(deliver_accepted(&q, 3_000).await, [("resolve".to_string(), "deploy".to_string())]);
    let i = ledger(&q).await.into_iter().find(|i| i.dedup_key == "deploy").unwrap();
    assert_eq!((i.state, i.last_by.as_str()), (IncidentState::Resolved, OPERATOR));
    // Once resolved, the lane is no longer the opener's: another source's resolve passes.
    q.accept(inbound_from("sns"), vec![alert("resolve", "deploy")]).await.unwrap();
    assert_eq!(q.depth().await.unwrap().0, 1);
}

/// Claims the head of the lane and kills it as PagerDuty's 400 would; its id.
async fn kill_next(q: &Arc<dyn Queue>, at: Millis) -> i64 {
    let c = q.claim(now_millis(), 1, LEASE).await.unwrap();
    finish(q, &c[0], answered(at, 400), Finish::Dead("refused".into())).await;
    c[0].id
}

async fn a_dead_trigger_knows_when_its_lane_was_resolved_after_it_died(q: Arc<dyn Queue>) {
    q.accept(inbound_from("cw"), vec![alert("trigger", "k")]).await.unwrap();
    let dead = kill_next(&q, 1_000).await;
    assert_eq!(q.resolved_since(dead).await.unwrap(), None, "nothing since");
    q.accept(inbound_from("cw"), vec![alert("resolve", "k")]).await.unwrap();
    deliver_accepted(&q, 2_000).await;
    assert_eq!(q.resolved_since(dead).await.unwrap(), Some(2_000));
    // Triggered again since: replaying it only re-triggers an open incident.
    q.accept(inbound_from("cw"), vec![alert("trigger", "k")]).await.unwrap();
    deliver_accepted(&q, 3_000).await;
    assert_eq!(q.resolved_since(dead).await.unwrap(), None);
}

async fn only_dead_triggers_are_said_resolved_since(q: Arc<dyn Queue>) {
    q.accept(inbound_from("cw"), vec![alert("acknowledge", "k")]).await.unwrap();
    let dead_ack = kill_next(&q, 1_000).await;
    q.accept(inbound_from("cw"), vec![alert("trigger", "other")]).await.unwrap();
    let other = kill_next(&q, 1_000).await;
    q.accept(inbound_from("cw"), vec![alert("resolve", "k")]).await.unwrap();
    deliver_accepted(&q, 2_000).await;
    assert_eq!(q.resolved_since(dead_ack).await.unwrap(), None, "an acknowledge opens nothing");
    assert_eq!(q.resolved_since(other).await.unwrap(), None, "another lane's resolve");
    assert_eq!(q.resolved_since(12345).await.unwrap(), None, "no such event");
    assert_eq!(q.requeue_dead(other, 3_000).await.unwrap().map(|_| ()), Some(()));
}

/// A webhook of `source`, whose resolves wait `delay` ms (flap damping).
fn damping_from(source: &str, delay: Millis) -> NewInbound {
    NewInbound { resolve_delay: delay, ..inbound_from(source) }
}

async fn a_resolve_waits_its_delay_and_a_trigger_meanwhile_damps_both(q: Arc<dyn Queue>) {
    q.accept(damping_from("am", 60_000), vec![alert("trigger", "flap")]).await.unwrap();
    assert_eq!(deliver_accepted(&q, 1_000).await.len(), 1);
    // Resolved: held for the delay, not claimable before it.
    let resolved = damping_from("am", 60_000);
    let at = resolved.received_at;
    q.accept(resolved, vec![alert("resolve", "flap")]).await.unwrap();
    assert!(q.claim(at + 59_999, 10, LEASE).await.unwrap().is_empty(), "the resolve waits");
    assert_eq!(q.next_due(at).await.unwrap(), Some(at + 60_000));
    // Firing again meanwhile: neither goes out, the incident stays open.
    q.accept(damping_from("am", 60_000), vec![alert("trigger", "flap")]).await.unwrap();
    assert!(q.claim(at + 120_000, 10, LEASE).await.unwrap().is_empty(), "nothing to send: one page");
    let states: Vec<_> = q.recent(10).await.unwrap().iter().map(|e| (e.action.clone().unwrap(), e.state)).collect();
    let (resolve, trigger) = (("resolve".to_string(), EventState::Damped), ("trigger".to_string(), EventState::Damped));
    assert_eq!(states[..2], [trigger, resolve], "{states:?}");
    assert_eq!(ledger(&q).await[0].state, IncidentState::Open);
    // A resolve that waited out its delay goes; without a delay a resolve is due at once.
    q.accept(damping_from("am", 60_000), vec![alert("resolve", "flap")]).await.unwrap();
    assert_eq!(q.claim(now_millis() + 60_000, 10, LEASE).await.unwrap().len(), 1);
    q.accept(inbound_from("gh"), vec![alert("resolve", "other")]).await.unwrap();
    assert_eq!(q.claim(now_millis(), 10, LEASE).await.unwrap().len(), 1);
}

/// A held resolve of a lane the ledger holds no open incident for would close nothing: a
/// trigger of that lane meanwhile damps only the resolve, and is sent, since nothing else
/// pages (a grouped mapping resolves the group's key of the other urgency, which may never
/// have been paged, and a warning group turning critical triggers it).
async fn a_trigger_after_a_held_resolve_of_a_lane_with_no_open_incident_is_sent(q: Arc<dyn Queue>) {
    q.accept(damping_from("am", 60_000), vec![alert("resolve", "never-paged")]).await.unwrap();
    q.accept(damping_from("am", 60_000), vec![alert("trigger", "never-paged")]).await.unwrap();
    let sent = deliver_all(&q, now_millis()).await;
    assert_eq!(sent, [("trigger".into(), "never-paged".into(), key().expose().to_string())]);
    let states: Vec<_> = q.recent(10).await.unwrap().iter().map(|e| (e.action.clone().unwrap(), e.state)).collect();
    assert_eq!(states, [("trigger".into(), EventState::Delivered), ("resolve".into(), EventState::Damped)]);
    assert_eq!(q.claim(now_millis() + 120_000, 10, LEASE).await.unwrap().len(), 0, "the resolve stays damped");
}

/// The body of `fn name` in `src`, up to its closing brace at the start of a line.
fn fn_body<'a>(src: &'a str, name: &str) -> Option<&'a str> {
    let start = src.find(&format!("fn {name}("))?;
    let rest = &src[start..];
    Some(&rest[..rest.find("\n}\n")?])
}

/// Whether `body` calls method `m` on the store, itself or through a helper of this file
/// (`finish`, `deliver_all`, ...), `depth` helpers deep.
fn calls(src: &str, body: &str, m: &str, depth: usize) -> bool {
    body.contains(&format!(".{m}("))
        || depth > 0
            && helpers(src).any(|h| calls_fn(body, h) && fn_body(src, h).is_some_and(|b| calls(src, b, m, depth - 1)))
}

/// Whether `body` calls the free function `f` (not a method of that name).
fn calls_fn(body: &str, f: &str) -> bool {
    let call = format!("{f}(&");
    body.match_indices(&call)
        .any(|(at, _)| !body[..at].ends_with(|c: char| c == '.' || c == '_' || c.is_alphanumeric()))
}

/// The names of the non-test functions of `src` that take the store.
fn helpers(src: &str) -> impl Iterator<Item = &str> {
    src.split("\nasync fn ")
        .skip(1)
        .filter_map(|f| f.split_once('('))
        .filter(|(_, args)| args.starts_with("q: &"))
        .map(|(n, _)| n)
}

/// The contract suite is by role: every method of every role trait is called by at least two
/// cases of that role's group in `on_every_backend!`, so each runs more than once on each backend.
#[test]
fn every_role_method_is_called_by_two_cases_of_its_role() {
    let (traits, suite) = (include_str!("mod.rs"), include_str!("tests.rs"));
    let invocation = &suite[suite.find("\non_every_backend! {\n").unwrap() + 1..];
    let invocation = &invocation[..invocation.find("\n}\n").unwrap()];
    let mut groups: Vec<(String, Vec<&str>)> = Vec::new();
    for line in invocation.lines().skip(1) {
        match line.trim().strip_suffix(": [") {
            Some(role) => groups.push((role.split('_').map(|w| w[..1].to_uppercase() + &w[1..]).collect(), Vec::new())),
            None => groups.last_mut().unwrap().1.extend(line.trim().strip_suffix(',').filter(|c| !c.starts_with(']'))),
        }
    }
    let roles: Vec<&str> = groups.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(roles, ["Intake", "Deliveries", "DeadLetters", "Inspect", "Retention", "Incidents", "Conditions"]);
    let mut thin = Vec::new();
    for (role, cases) in &groups {
        let block = &traits[traits.find(&format!("pub trait {role}: ")).unwrap()..];
        let block = &block[..block.find("\n}\n").unwrap()];
        let methods: Vec<&str> = block.split("async fn ").skip(1).map(|m| m.split('(').next().unwrap()).collect();
        assert!(!methods.is_empty(), "{role}");
        for m in methods {
            let callers = cases.iter().filter(|c| calls(suite, fn_body(suite, c).unwrap(), m, 2)).count();
            if callers < 2 {
                thin.push(format!("{role}::{m}: {callers} case(s)"));
            }
        }
    }
    assert_eq!(thin, Vec::<String>::new());
}

/// The `ready` line names the store: the SQLite file, or PostgreSQL's host, port and database,
/// never the user or password the URL carries.
#[test]
fn a_store_is_described_without_credentials() {
    let sqlite = super::Backend::Sqlite { path: "data/pagerhook.db".into() };
    assert_eq!(sqlite.describe(), "SQLite data/pagerhook.db");
    let url = crate::secret::Secret::new("postgres://pagerhook:hunter2@db.internal:6432/alerts?sslmode=require");
    let described = super::Backend::Postgres { url }.describe();
    assert_eq!(described, "PostgreSQL db.internal:6432/alerts");
    assert!(!described.contains("hunter2") && !described.contains("pagerhook:"), "{described}");
}

/// PostgreSQL's disk full (SQLSTATE 53100, raised here by a trigger as the server raises it
/// when a table cannot grow) is an accept answered "out of room", and the gate stays shut (the
/// next accept is refused without a round trip) until a probe write finds room; delivery's
/// claims and finishes are not refused. Other errors of class 53 are not "out of room".
#[tokio::test]
async fn postgres_a_full_disk_shuts_accepts_until_a_probe_write_finds_room() {
    let Some(schema) = PgSchema::create("a_full_disk_shuts_accepts_until_a_probe_write_finds_room").await else {
        return;
    };
    let q = replica(&schema).await;
    let raw = Raw::Postgres(connect_in(&schema).await);
    q.accept(inbound(None), vec![alert("trigger", "before")]).await.unwrap();
    raw.exec(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
           RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = 'disk_full';
         END $$;
         CREATE TRIGGER disk_is_full BEFORE INSERT ON inbound FOR EACH ROW EXECUTE FUNCTION refuse();",
    )
    .await;
    let full = q.accept(inbound(None), vec![alert("trigger", "refused")]).await;
    assert!(matches!(&full, Err(QueueError::OutOfRoom(m)) if m.contains("No space left")), "{full:?}");
    assert_eq!(q.room().await.unwrap().short, Some(Short::DiskFull), "the probe is refused too");
    raw.exec("DROP TRIGGER disk_is_full ON inbound").await;
    let gated = q.accept(inbound(None), vec![alert("trigger", "gated")]).await;
    assert!(matches!(&gated, Err(QueueError::OutOfRoom(_))), "refused until a probe finds room: {gated:?}");
    let claimed = q.claim(now_millis(), 10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let attempt = Attempt { at: now_millis(), status: Some(202), detail: None, dedup_key: None };
    assert!(q.finish(claimed[0].id, claimed[0].lease, attempt, Finish::Delivered).await.unwrap());
    let room = q.room().await.unwrap();
    assert_eq!(room.short, None);
    assert!(room.used_bytes.is_some_and(|b| b > 0) && room.free_bytes.is_none(), "{room:?}");
    q.accept(inbound(None), vec![alert("trigger", "after")]).await.unwrap();
    assert_eq!(q.depth().await.unwrap().0, 1, "only the accept after the probe was stored");

    raw.exec(
        "CREATE FUNCTION busy() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
           RAISE EXCEPTION 'too many connections' USING ERRCODE = 'too_many_connections';
         END $$;
         CREATE TRIGGER busy BEFORE INSERT ON inbound FOR EACH ROW EXECUTE FUNCTION busy();",
    )
    .await;
    let other = q.accept(inbound(None), vec![]).await;
    assert!(matches!(&other, Err(QueueError::Io(_))), "{other:?}");
    assert_eq!(q.room().await.unwrap().short, None);
    schema.drop().await;
}

// ---- pagerhook's own pages ----------------------------------------------------------------

/// A kept payload of `source` that asks for `reason`'s page, to `key`.
fn paged(source: &str, status: InboundStatus, reason: own::Reason, to: RoutingKey) -> NewInbound {
    let page = own::Page::new(reason, to).with("inbound_id", "x");
    NewInbound {
        page: Some(Box::new(page)),
        ..NewInbound::new(source, now_millis(), bytes::Bytes::from_static(b"{}"), status)
    }
}

/// pagerhook's own events, oldest first: dedup_key, action, the dead letters the body says wait.
async fn own_events(q: &Arc<dyn Queue>) -> Vec<(String, String, Option<u64>)> {
    let rows =
        q.events(EventQuery { search: Some("pagerhook/".into()), limit: 100, ..EventQuery::default() }).await.unwrap();
    let mut out = Vec::new();
    for r in rows.into_iter().rev() {
        assert!(own::is_own_record(&r.summary.inbound_id), "{:?}", r.summary);
        let detail = q.event(r.summary.id).await.unwrap().unwrap();
        let waiting = detail.event.as_ref().and_then(|b| b.pointer("/payload/custom_details/dead_letters_waiting"));
        out.push((r.summary.dedup_key.unwrap(), r.summary.action.unwrap(), waiting.and_then(|w| w.as_u64())));
    }
    out
}

fn own_trigger(key: &str, waiting: u64) -> (String, String, Option<u64>) {
    (key.to_string(), "trigger".to_string(), Some(waiting))
}

fn own_resolve(key: &str) -> (String, String, Option<u64>) {
    (key.to_string(), "resolve".to_string(), None)
}

async fn a_kept_payload_pages_once_per_source_and_reason_with_what_waits_counted(q: Arc<dyn Queue>) {
    let failed = || InboundStatus::MappingFailed("summary: missing".into());
    q.accept(paged("am", failed(), own::Reason::MappingFailed, other_key()), vec![]).await.unwrap();
    q.accept(paged("am", failed(), own::Reason::MappingFailed, other_key()), vec![]).await.unwrap();
    let too_many = InboundStatus::TooManyEvents("1500 events".into());
    q.accept(paged("gh", too_many, own::Reason::TooManyEvents, other_key()), vec![]).await.unwrap();
    // A duplicate stores nothing, and so pages about nothing.
    let dup = || NewInbound {
        delivery_id: Some("d".into()),
        ..paged("am", failed(), own::Reason::MappingFailed, other_key())
    };
    q.accept(dup(), vec![]).await.unwrap();
    assert!(matches!(q.accept(dup(), vec![]).await.unwrap(), Accepted::Duplicate { .. }));
    assert_eq!(
        own_events(&q).await,
        [
            own_trigger("pagerhook/am/mapping_failed", 1),
            own_trigger("pagerhook/am/mapping_failed", 2),
            own_trigger("pagerhook/gh/too_many_events", 1),
            own_trigger("pagerhook/am/mapping_failed", 3),
        ]
    );
    let claimed = q.claim(now_millis(), 10, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 2, "one lane per incident, its triggers collapsed into the newest");
    assert!(claimed.iter().all(|c| c.event.routing_key() == &other_key() || c.event.routing_key() == &key()));
    assert_eq!(q.dead_letters(None, 10).await.unwrap().len(), 4, "the own pages' records are no dead letters");
}

async fn the_own_page_is_resolved_with_the_removal_of_the_last_dead_letter_of_its_source_and_reason(q: Arc<dyn Queue>) {
    let failed = || InboundStatus::MappingFailed("summary: missing".into());
    let first = paged("am", failed(), own::Reason::MappingFailed, other_key());
    let (first_id, second) = (first.id.clone(), paged("am", failed(), own::Reason::MappingFailed, other_key()));
    let second_id = second.id.clone();
    q.accept(first, vec![]).await.unwrap();
    q.accept(second, vec![]).await.unwrap();
    q.accept(paged("am", InboundStatus::Unmatched, own::Reason::Unmatched, other_key()), vec![]).await.unwrap();
    assert!(q.delete_dead(DeadId::Inbound(first_id)).await.unwrap());
    assert_eq!(own_events(&q).await.len(), 3, "one is left: the incident stays open");
    let remapped = q.remap(second_id, InboundStatus::Mapped, vec![alert("trigger", "fixed")], now_millis()).await;
    assert_eq!(remapped.unwrap(), Some(1));
    let events = own_events(&q).await;
    assert_eq!(events.last(), Some(&own_resolve("pagerhook/am/mapping_failed")), "{events:?}");
    assert_eq!(events.len(), 4, "the unmatched one still waits: its incident stays open");
    // The resolve went where the trigger went, and waits behind it in its lane.
    let claimed = q.claim(now_millis(), 10, LEASE).await.unwrap();
    let own_claimed: Vec<_> = claimed.iter().filter(|c| own::is_own_record(&c.inbound_id)).collect();
    assert_eq!(own_claimed.len(), 2, "the mapping_failed lane's head and the unmatched one's");
    assert!(own_claimed.iter().all(|c| c.event.routing_key() == &other_key()));
    // It happens again: a new incident.
    q.accept(paged("am", failed(), own::Reason::MappingFailed, other_key()), vec![]).await.unwrap();
    assert_eq!(own_events(&q).await.last(), Some(&own_trigger("pagerhook/am/mapping_failed", 1)));
}

async fn a_dead_trigger_pages_unless_it_is_pagerhook_s_own_and_its_replay_resolves_the_page(q: Arc<dyn Queue>) {
    q.accept(inbound_from("gh"), vec![alert("trigger", "k"), alert("resolve", "gone")]).await.unwrap();
    let now = now_millis();
    let claimed = q.claim(now, 10, LEASE).await.unwrap();
    let trigger = claimed.iter().find(|c| c.event.action() == Some(crate::event::Action::Trigger)).unwrap();
    let resolve = claimed.iter().find(|c| c.event.action() == Some(crate::event::Action::Resolve)).unwrap();
    finish(&q, resolve, answered(now, 400), Finish::DeadPaged("400".into(), Some(other_key()))).await;
    assert!(own_events(&q).await.is_empty(), "only a dead trigger pages");
    finish(&q, trigger, answered(now, 400), Finish::DeadPaged("400".into(), None)).await;
    assert_eq!(own_events(&q).await, [own_trigger("pagerhook/gh/dead_trigger", 1)]);
    // The page itself dies: it pages about nothing.
    let page = q.claim(now, 10, LEASE).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].event.routing_key(), &key(), "without an own key, to the dead trigger's key");
    finish(&q, &page[0], answered(now, 400), Finish::DeadPaged("400".into(), None)).await;
    assert_eq!(own_events(&q).await.len(), 1, "a meta-event never causes another");
    // The trigger is replayed: none of gh's dead triggers is left (the page's own is no
    // dead trigger of gh), so the incident is resolved.
    q.requeue_dead(trigger.id, now).await.unwrap().unwrap();
    assert_eq!(
        own_events(&q).await,
        [own_trigger("pagerhook/gh/dead_trigger", 1), own_resolve("pagerhook/gh/dead_trigger")]
    );
}

async fn dropping_the_last_dead_letter_of_a_page_resolves_it(q: Arc<dyn Queue>) {
    let old = NewInbound { received_at: 1000, ..paged("a", InboundStatus::Unmatched, own::Reason::Unmatched, key()) };
    q.accept(old, vec![]).await.unwrap();
    q.prune_dead(2000, u64::MAX).await.unwrap();
    let events = own_events(&q).await;
    assert_eq!(events, [own_trigger("pagerhook/a/unmatched", 1), own_resolve("pagerhook/a/unmatched")]);
}

async fn a_payload_some_of_whose_items_failed_queues_the_others_and_keeps_its_items_for_replay(q: Arc<dyn Queue>) {
    let items =
        vec![FailedItem { rule: "each".into(), item: Some(1) }, FailedItem { rule: "whole".into(), item: None }];
    let status = InboundStatus::ItemsFailed { error: "2 items failed".into(), items: items.clone() };
    let kept = NewInbound::new("am", now_millis(), bytes::Bytes::from_static(b"{\"alerts\":[]}"), status.clone());
    let id = kept.id.clone();
    let accepted = q.accept(kept, vec![alert("trigger", "a-0"), alert("trigger", "a-2")]).await.unwrap();
    assert_eq!(accepted, Accepted::Committed { id: id.clone(), events: 2, stale: 0 });
    assert_eq!(q.depth().await.unwrap().0, 2, "the items that mapped are queued");
    let dead = q.dead_letters(None, 10).await.unwrap();
    assert_eq!((dead.len(), dead[0].kind.as_str(), dead[0].reason.as_str()), (1, "items_failed", "2 items failed"));
    let stored = q.inbound(id.clone()).await.unwrap().unwrap();
    assert_eq!(stored.status, status);
    assert_eq!(&stored.body[..], b"{\"alerts\":[]}", "the body stays with the dead letter");
    // One item maps now, the other still fails: its event is queued, the rest stays kept.
    let still = InboundStatus::ItemsFailed { error: "1 item failed".into(), items: items[1..].to_vec() };
    assert_eq!(q.remap(id.clone(), still.clone(), vec![alert("trigger", "a-1")], now_millis()).await.unwrap(), Some(1));
    assert_eq!(q.inbound(id.clone()).await.unwrap().unwrap().status, still);
    assert_eq!(q.depth().await.unwrap().0, 3);
    assert_eq!(q.remap(id.clone(), InboundStatus::Mapped, vec![], now_millis()).await.unwrap(), Some(0));
    assert!(q.dead_letters(None, 10).await.unwrap().is_empty());
}

/// A storm condition on `k`, raising its page or only keeping it open.
fn storm_held(k: RoutingKey, raise: bool) -> Held {
    let page = own::Page::new(own::Reason::StormWaiting, k.clone()).with("events_waiting", 1_201);
    Held { subject: own::key_subject(&k), page, raise }
}

async fn each_routing_key_s_backlog_is_counted_by_source_without_pagerhook_s_own(q: Arc<dyn Queue>) {
    assert!(q.backlog().await.unwrap().is_empty());
    let gh = NewInbound { received_at: 1_000, ..inbound_from("gh") };
    q.accept(gh, vec![alert("trigger", "a"), alert("trigger", "b"), alert_on(other_key(), "trigger", "c")])
        .await
        .unwrap();
    q.accept(inbound_from("am"), vec![alert("trigger", "d")]).await.unwrap();
    // pagerhook's own pages wait on both keys: a dead letter's, and a storm's.
    let failed = InboundStatus::MappingFailed("summary: missing".into());
    q.accept(paged("am", failed, own::Reason::MappingFailed, other_key()), vec![]).await.unwrap();
    let changes = q.hold_conditions(vec![own::Reason::StormWaiting], vec![storm_held(key(), true)], 5_000).await;
    assert_eq!(changes.unwrap().len(), 1);
    let backlog = q.backlog().await.unwrap();
    let seen: Vec<_> = backlog.iter().map(|b| (b.routing_key.clone(), b.pending, b.sources.clone())).collect();
    assert_eq!(
        seen,
        [(key(), 3, vec![("am".to_string(), 1), ("gh".to_string(), 2)]), (other_key(), 1, vec![("gh".to_string(), 1)]),],
        "a meta-event never counts towards a storm"
    );
    assert_eq!(backlog[0].oldest, 1_000, "the oldest is queued when its webhook arrived");
    // Sent, an event no longer waits.
    let now = now_millis();
    for c in q.claim(now, 10, LEASE).await.unwrap() {
        finish(&q, &c, answered(now, 202), Finish::Delivered).await;
    }
    assert!(q.backlog().await.unwrap().iter().all(|b| b.routing_key != other_key()));
}

async fn a_condition_pages_once_due_at_once_and_is_resolved_when_it_clears(q: Arc<dyn Queue>) {
    let storm = own::Reason::StormWaiting;
    let subject = own::key_subject(&key());
    let dedup = own::dedup_key(&subject, storm);
    // A storm waits on the key: its events are paced far into the future.
    q.accept(inbound_from("gh"), vec![alert("trigger", "a"), alert("trigger", "b")]).await.unwrap();
    let now = now_millis();
    for c in q.claim(now, 10, LEASE).await.unwrap() {
        q.defer(c.id, c.lease, now + 3_600_000).await.unwrap();
    }
    let raised = q.hold_conditions(vec![storm], vec![storm_held(key(), true)], now).await.unwrap();
    assert_eq!(raised, [Change { subject: subject.clone(), reason: storm, raised: true }]);
    let backlog = q.backlog().await.unwrap();
    assert_eq!(backlog.iter().map(|b| b.pending).collect::<Vec<_>>(), [2], "the page is not part of the storm");
    // Once: the condition still holds, bad enough or not.
    assert!(q.hold_conditions(vec![storm], vec![storm_held(key(), true)], now).await.unwrap().is_empty());
    assert!(q.hold_conditions(vec![storm], vec![storm_held(key(), false)], now).await.unwrap().is_empty());
    // A caller that did not judge storms resolves none; nor does removing a dead letter
    // (`settle` is for dead letters' pages).
    assert!(q.hold_conditions(vec![own::Reason::StoreOutOfRoom], vec![], now).await.unwrap().is_empty());
    let mut failed = inbound_from("am");
    failed.status = InboundStatus::Unmatched;
    let failed_id = failed.id.clone();
    q.accept(failed, vec![]).await.unwrap();
    assert!(q.delete_dead(DeadId::Inbound(failed_id)).await.unwrap());
    let own_now = own_events(&q).await;
    assert_eq!(own_now, [(dedup.clone(), "trigger".to_string(), None)], "{own_now:?}");
    // Due at once, ahead of the storm it is about, and marked as pagerhook's own.
    let page = q.claim(now, 10, LEASE).await.unwrap();
    assert_eq!(page.len(), 1, "only the page is due");
    assert_eq!(page[0].inbound_id, dedup);
    assert_eq!(page[0].event.routing_key(), &key(), "on the key the storm delays");
    assert_eq!(page[0].event.body()["payload"]["custom_details"]["events_waiting"], 1_201);
    finish(&q, &page[0], answered(now, 202), Finish::Delivered).await;
    // Not bad enough to raise, but open: it stays open. Cleared: resolved, to the same key.
    assert!(q.hold_conditions(vec![storm], vec![storm_held(key(), false)], now).await.unwrap().is_empty());
    let cleared = q.hold_conditions(vec![storm], vec![], now).await.unwrap();
    assert_eq!(cleared, [Change { subject, reason: storm, raised: false }]);
    let own_now = own_events(&q).await;
    assert_eq!(own_now.last(), Some(&(dedup.clone(), "resolve".to_string(), None)), "{own_now:?}");
    let resolve = q.claim(now, 10, LEASE).await.unwrap();
    assert_eq!((resolve.len(), resolve[0].event.routing_key()), (1, &key()));
    // The store's condition, on the own-pages key, is its own incident.
    let room = own::Page::new(own::Reason::StoreOutOfRoom, other_key()).with("why", "disk full");
    let held = Held { subject: own::STORE.to_string(), page: room, raise: true };
    let changes = q.hold_conditions(vec![own::Reason::StoreOutOfRoom], vec![held], now).await.unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(own_events(&q).await.last().unwrap().0, "pagerhook/store/store_out_of_room");
}
