use super::*;
use crate::event::AlertDraft;
use crate::queue::{OPERATOR, PAGERHOOK};
use std::collections::HashMap;

fn key(c: char) -> String {
    c.to_string().repeat(32)
}

fn alert(action: &str, dedup: &str, on: char) -> Event {
    let draft = AlertDraft {
        action: action.into(),
        dedup_key: Some(dedup.into()),
        summary: Some("s".into()),
        source: Some("src".into()),
        ..AlertDraft::default()
    };
    Event::alert(RoutingKey::parse(Secret::new(key(on))).unwrap(), draft).unwrap()
}

/// What the lane steps read, as the tests set it: sticky routes (`(source, dedup_key)` →
/// every routing key it was triggered on, oldest first), the source the ledger says opened
/// every lane (none: no incident is open), and the sequences lanes applied. Nothing else is
/// stored: no held resolve, no silence, nothing pending, no incident family.
#[derive(Default)]
struct Stored {
    routes: HashMap<(String, String), Vec<String>>,
    opener: Option<String>,
    sequences: HashMap<String, (String, i64)>,
}

impl Routes for Stored {
    async fn latest_route(&mut self, source: &str, dk: &str, own: &str) -> Result<Option<(String, bool)>, QueueError> {
        let keys = self.routes.get(&(source.to_string(), dk.to_string()));
        Ok(keys.and_then(|k| Some((k.last()?.clone(), k.iter().any(|k| k == own)))))
    }

    async fn opener(&mut self, _: &str, _: &str) -> Result<Option<String>, QueueError> {
        Ok(self.opener.clone())
    }

    async fn still_silent(&mut self, _: &str, _: &str, _: Millis) -> Result<bool, QueueError> {
        Ok(false)
    }

    async fn lane_waiting(&mut self, _: &str) -> Result<bool, QueueError> {
        Ok(false)
    }

    async fn delayed_resolve(&mut self, _: &str, _: Millis) -> Result<Option<i64>, QueueError> {
        Ok(None)
    }

    async fn damp(&mut self, _: i64, _: Millis, _: &str) -> Result<(), QueueError> {
        Ok(())
    }

    async fn sequence(&mut self, lane: &str) -> Result<Option<(String, i64)>, QueueError> {
        Ok(self.sequences.get(lane).cloned())
    }

    async fn apply_sequence(&mut self, lane: &str, sequence: Sequence, _: Millis) -> Result<(), QueueError> {
        let (kind, value) = sequence.stored();
        self.sequences.insert(lane.to_string(), (kind.to_string(), value));
        Ok(())
    }

    async fn family(
        &mut self,
        _: &str,
        _: [&str; 4],
        _: [&str; 3],
    ) -> Result<Vec<(String, Option<String>)>, QueueError> {
        Ok(Vec::new())
    }
}

/// The ledger says source `b` opened every lane.
fn opened_by_b() -> Stored {
    Stored { opener: Some("b".into()), ..Stored::default() }
}

#[tokio::test]
async fn closing_another_source_s_incident_is_refused_unless_allowed_or_bypassed() {
    let events =
        [alert("trigger", "k", 'o'), alert("acknowledge", "k", 'o'), alert("resolve", "k", 'o'), change_event()];
    let refused = |r: Routed| r.refused.iter().map(Option::is_some).collect::<Vec<_>>();
    let checked = route(&mut opened_by_b(), "a", &events, Closing::Checked { may_close: &[] }).await.unwrap();
    assert_eq!(refused(checked), [false, true, true, false], "only acknowledges and resolves");
    let allowed = ["b".to_string()];
    let may = route(&mut opened_by_b(), "a", &events, Closing::Checked { may_close: &allowed }).await.unwrap();
    assert_eq!(refused(may), [false; 4]);
    let own = route(&mut opened_by_b(), "b", &events, Closing::Checked { may_close: &[] }).await.unwrap();
    assert_eq!(refused(own), [false; 4], "the opener itself");
    let operator = route(&mut opened_by_b(), OPERATOR, &events, Closing::of(OPERATOR, &[], None)).await.unwrap();
    assert_eq!(refused(operator), [false; 4]);
    assert!(matches!(Closing::of(PAGERHOOK, &[], None), Closing::Bypass));
    assert!(matches!(Closing::of("a", &[], None), Closing::Checked { .. }));
}

fn change_event() -> Event {
    let draft = crate::event::ChangeDraft { summary: Some("c".into()), ..Default::default() };
    Event::change(RoutingKey::parse(Secret::new(key('o'))).unwrap(), draft).unwrap()
}

/// The routing key each event is stored under, by its letter.
async fn routed(stored: &mut Stored, events: &[Event]) -> (Vec<char>, Vec<(String, char)>) {
    let r = route(stored, "a", events, Closing::Checked { may_close: &[] }).await.unwrap();
    let letter = |k: &str| k.chars().next().unwrap();
    let keys = r.events.iter().map(|e| letter(e.routing_key().expose())).collect();
    (keys, r.routes.iter().map(|(dk, k)| (dk.to_string(), letter(k))).collect())
}

#[tokio::test]
async fn a_resolve_goes_where_the_source_s_latest_stored_trigger_went() {
    let mut stored = Stored::default();
    stored.routes.insert(("a".into(), "db".into()), vec![key('x'), key('y')]);
    stored.routes.insert(("b".into(), "web".into()), vec![key('x')]);
    let events = [alert("resolve", "db", 'o'), alert("acknowledge", "web", 'o'), alert("trigger", "new", 'o')];
    let (keys, routes) = routed(&mut stored, &events).await;
    assert_eq!(keys, ['y', 'o', 'o'], "another source's trigger is not followed");
    assert_eq!(routes, [("new".to_string(), 'o')]);
}

#[tokio::test]
async fn a_resolve_follows_a_trigger_earlier_in_its_webhook_unless_its_own_key_was_triggered() {
    let mut stored = Stored::default();
    stored.routes.insert(("a".into(), "own".into()), vec![key('o')]);
    let events = [
        alert("trigger", "db", 'x'),
        alert("trigger", "db", 'y'),
        alert("resolve", "db", 'o'),
        alert("trigger", "own", 'x'),
        alert("resolve", "own", 'o'),
    ];
    let (keys, routes) = routed(&mut stored, &events).await;
    assert_eq!(keys, ['x', 'y', 'y', 'x', 'o'], "the latest trigger of the webhook; the stored own-key trigger holds");
    assert_eq!(routes.len(), 3);
}

#[test]
fn each_finish_writes_its_outcome() {
    let attempt = Attempt { at: 10, status: Some(500), detail: Some("boom".into()), dedup_key: None };
    let of = |finish: Finish| {
        let o = Outcome::of(&attempt, &finish);
        (o.state, o.done_at, o.next_at, o.last_error.map(|e| e.map(str::to_string)))
    };
    assert_eq!(of(Finish::Delivered), (EventState::Delivered, Some(10), None, None));
    assert_eq!(of(Finish::DryRun), (EventState::DryRun, Some(10), None, None));
    assert_eq!(of(Finish::RetryAt(99)), (EventState::Pending, None, Some(99), Some(Some("boom".into()))));
    assert_eq!(of(Finish::Dead("400".into())), (EventState::Dead, Some(10), None, Some(Some("400".into()))));
    let silent = Attempt { detail: None, ..attempt.clone() };
    let retry = Finish::RetryAt(99);
    assert_eq!(Outcome::of(&silent, &retry).last_error(), (true, None), "a retry without detail clears it");
    assert_eq!(Outcome::of(&attempt, &Finish::Delivered).last_error(), (false, None), "delivered keeps it");
}

#[tokio::test]
async fn an_event_older_than_its_lane_s_sequence_is_stale_an_equal_or_other_typed_one_is_not() {
    let mut lanes = Stored::default();
    let mut fate_of = async |action, sequence: &str| {
        let e = alert(action, "k", 'o').with_sequence(sequence);
        match fate(&mut lanes, &e, (None, Closing::Bypass), 1_000, 0).await.unwrap() {
            Fate::Queue { .. } => "queued".to_string(),
            Fate::Done { state, why } => format!("{state}: {why}"),
        }
    };
    assert_eq!(fate_of("trigger", "7").await, "queued");
    assert_eq!(
        fate_of("resolve", "6").await,
        "stale: stale: sequence 6 is older than 7, which its lane already applied"
    );
    assert_eq!(fate_of("trigger", "7").await, "queued", "a repeat notification, a re-run of the latest run");
    assert_eq!(fate_of("resolve", "8").await, "queued");
    assert_eq!(
        fate_of("trigger", "7").await,
        "stale: stale: sequence 7 is older than 8, which its lane already applied"
    );
    assert_eq!(fate_of("trigger", "2024-05-01T10:00:00Z").await, "queued", "another type is not compared");
    assert_eq!(fate_of("resolve", "2024-05-01T09:59:59Z").await.split(':').next(), Some("stale"));
    assert_eq!(fate_of("trigger", "").await, "queued", "no sequence: not checked");
    assert_eq!(fate_of("trigger", "yesterday").await, "queued", "not a sequence: not checked");
    let unreadable = alert("trigger", "k", 'o').with_sequence("yesterday");
    assert_eq!(unreadable.sequence(), None);
    assert!(unreadable.notes().iter().any(|n| n.contains("\"yesterday\" is neither")), "{:?}", unreadable.notes());
}

#[tokio::test]
async fn a_refused_or_stale_event_leaves_its_lane_s_sequence_as_it_was() {
    let mut lanes = Stored::default();
    let e = |action, sequence| alert(action, "k", 'o').with_sequence(sequence);
    fate(&mut lanes, &e("trigger", "5"), (None, Closing::Bypass), 1_000, 0).await.unwrap();
    let why = "refused".to_string();
    fate(&mut lanes, &e("resolve", "9"), (Some(&why), Closing::Bypass), 1_000, 0).await.unwrap();
    fate(&mut lanes, &e("resolve", "3"), (None, Closing::Bypass), 1_000, 0).await.unwrap();
    assert_eq!(lanes.sequences.values().collect::<Vec<_>>(), [&("number".to_string(), 5)]);
}

#[test]
fn an_escalating_trigger_opens_an_incident_only_above_everything_its_family_holds_open() {
    use crate::event::{escalation_key, DedupKey, Severity::*};
    let dk = DedupKey::new("db").unwrap();
    let family = |held, escalations: &[crate::event::Severity]| Family {
        held,
        escalations: escalations.iter().map(|s| (*s, escalation_key(&dk, *s))).collect(),
    };
    assert_eq!(family(None, &[]).target(Critical), None, "nothing open: as it came");
    assert_eq!(family(Some(Warning), &[]).target(Critical), Some(Critical));
    assert_eq!(family(Some(Warning), &[]).target(Warning), None, "as urgent as the first: its own key");
    assert_eq!(family(Some(Critical), &[]).target(Error), None, "less urgent: PagerDuty dedups it");
    assert_eq!(family(Some(Warning), &[Critical]).target(Critical), Some(Critical), "to the open escalation");
    assert_eq!(family(Some(Warning), &[Critical]).target(Error), None, "below the escalation");
    assert_eq!(family(Some(Info), &[Error]).target(Critical), Some(Critical), "above both");
    assert_eq!(family(None, &[Error]).target(Error), Some(Error), "the first closed, its escalation open");
    assert_eq!(escalation_key(&dk, Error).as_str(), "db~escalated-error");
    let long = DedupKey::new(&"x".repeat(255)).unwrap();
    let (c, e) = (escalation_key(&long, Critical), escalation_key(&long, Error));
    assert!(c.as_str().len() <= 255 && c != e && c == escalation_key(&long, Critical), "hashed, distinct, stable");
}
