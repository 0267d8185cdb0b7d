use super::*;
use const_format::formatcp;

/// Every statement of this module, by name.
const ALL: &[(&str, &str)] = &[
    ("ROW_COLUMNS", ROW_COLUMNS),
    ("NEXT_IN_LANE", NEXT_IN_LANE),
    ("COLLAPSE", COLLAPSE),
    ("LEASE", LEASE),
    ("INSERT_EVENT", INSERT_EVENT),
    ("INSERT_FINISHED", INSERT_FINISHED),
    ("DELAYED_RESOLVE", DELAYED_RESOLVE),
    ("DAMP", DAMP),
    ("LANE_SEQUENCE", LANE_SEQUENCE),
    ("APPLY_SEQUENCE", APPLY_SEQUENCE),
    ("RECORD_ROUTE", RECORD_ROUTE),
    ("RECORD_ATTEMPT", RECORD_ATTEMPT),
    ("FINISH", FINISH),
    ("RENEW", RENEW),
    ("DEPTH", DEPTH),
    ("PRUNE[0]", PRUNE[0]),
    ("PRUNE[1]", PRUNE[1]),
    ("PRUNE[2]", PRUNE[2]),
    ("PRUNE[3]", PRUNE[3]),
    ("PRUNE[4]", PRUNE[4]),
    ("PRUNE[5]", PRUNE[5]),
    ("PRUNE[6]", PRUNE[6]),
    ("PRUNE[7]", PRUNE[7]),
    ("DELETE_DEAD_EVENT[0]", DELETE_DEAD_EVENT[0]),
    ("DELETE_DEAD_EVENT[1]", DELETE_DEAD_EVENT[1]),
    ("DELETE_DEAD_INBOUND", DELETE_DEAD_INBOUND),
    ("DEAD_LETTERS", DEAD_LETTERS),
    ("LIST_DEAD_LETTERS", LIST_DEAD_LETTERS),
    ("ONE_DEAD_LETTER", ONE_DEAD_LETTER),
    ("Seen::Body.record()", Seen::Body.record()),
    ("Seen::Body.first()", Seen::Body.first()),
    ("Seen::Delivery.record()", Seen::Delivery.record()),
    ("Seen::Delivery.first()", Seen::Delivery.first()),
    ("FORGET_SEEN_BODY", FORGET_SEEN_BODY),
    ("STORED_BODY", STORED_BODY),
    ("DUE_KEYS", DUE_KEYS),
    ("CANDIDATES", formatcp!("{CANDIDATES} {CANDIDATES_ORDER}")),
    ("SERVED", SERVED),
    ("NEXT_RESOLVE", NEXT_RESOLVE),
    ("LANE_MAY_BE_OPEN", LANE_MAY_BE_OPEN),
    ("SUPERSEDE", SUPERSEDE),
    ("PRUNE_PACE[0]", PRUNE_PACE[0]),
    ("PRUNE_PACE[1]", PRUNE_PACE[1]),
];

/// The numbers of `sql`'s `$n` parameters, in the order they are written.
fn parameters(sql: &str) -> Vec<usize> {
    sql.split('$').skip(1).filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()).collect()
}

/// SQLite numbers `$n` by first appearance: were `$2` written before `$1`, SQLite would bind
/// the first value to it, and PostgreSQL the second.
#[test]
fn each_statement_writes_its_parameters_first_in_ascending_order() {
    for (name, sql) in ALL {
        let mut first = Vec::new();
        for n in parameters(sql) {
            if !first.contains(&n) {
                first.push(n);
            }
        }
        assert_eq!(first, (1..=first.len()).collect::<Vec<_>>(), "{name}: {sql}");
    }
}

#[test]
fn the_parameter_check_sees_an_out_of_order_statement() {
    assert_eq!(parameters("UPDATE t SET a = $2 WHERE b = $1 AND c = $10"), [2, 1, 10]);
    assert_eq!(parameters("SELECT '$' || $1"), [1]);
}

#[test]
fn event_states_are_built_into_the_statements() {
    assert!(RENEW.ends_with("state = 'pending'"), "{RENEW}");
    assert!(
        PRUNE[1]
            .contains("state IN ('delivered', 'dry_run', 'collapsed', 'replayed', 'damped', 'stale', 'superseded')"),
        "{}",
        PRUNE[1]
    );
    assert!(DEAD_LETTERS.contains("e.state = 'dead'"), "{DEAD_LETTERS}");
}

/// `DEAD_INBOUND` lists exactly the stored statuses of the kept payloads that are dead letters,
/// so a status added later is listed, deleted, replayed and pruned with the others.
#[test]
fn the_dead_inbound_list_is_every_dead_letter_status() {
    use super::super::rows::status_columns;
    use super::super::InboundStatus;
    let every = [
        InboundStatus::Mapped,
        InboundStatus::Ignored,
        InboundStatus::MappingFailed(String::new()),
        InboundStatus::TooManyEvents(String::new()),
        InboundStatus::Unmatched,
        InboundStatus::ItemsFailed { error: String::new(), items: Vec::new() },
        InboundStatus::Own,
    ];
    // Exhaustive: a new status fails to compile here until it is added to `every`.
    for status in every {
        match &status {
            InboundStatus::Mapped
            | InboundStatus::Ignored
            | InboundStatus::MappingFailed(_)
            | InboundStatus::TooManyEvents(_)
            | InboundStatus::Unmatched
            | InboundStatus::ItemsFailed { .. }
            | InboundStatus::Own => {}
        }
        let listed = DEAD_INBOUND.split(", ").any(|s| s == format!("'{}'", status_columns(&status).0));
        assert_eq!(listed, status.is_dead_letter(), "{status:?}");
    }
}
