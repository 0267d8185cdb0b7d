use super::*;

/// Stores hold these names: a rename would strand every event stored under the old one.
#[test]
fn the_stored_names_never_change() {
    let names: Vec<_> = EventState::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(
        names,
        ["pending", "delivered", "dry_run", "dead", "collapsed", "replayed", "damped", "stale", "superseded"]
    );
}

#[test]
fn every_state_reads_back_as_itself_and_an_unknown_name_as_none() {
    for state in EventState::ALL {
        assert_eq!(EventState::parse(state.as_str()), Some(state));
        assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        assert_eq!(state.to_string(), state.as_str());
        assert_eq!(format!("{state:>10}|"), format!("{:>10}|", state.as_str()), "padded like its name");
    }
    assert_eq!(EventState::parse("Pending"), None);
    assert_eq!(EventState::parse("dropped"), None);
}

#[test]
fn the_sql_list_of_prunable_states_is_the_prunable_states() {
    let listed: Vec<_> = EventState::ALL.iter().filter(|s| s.prunable()).map(|s| format!("'{s}'")).collect();
    assert_eq!(PRUNABLE, listed.join(", "));
}
