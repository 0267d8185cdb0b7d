use super::*;

#[test]
fn a_loaded_version_survives_a_swap() {
    let live = Live::new(1);
    let before = live.load();
    live.store(2);
    assert_eq!(*before, 1, "an in-flight reader keeps its version");
    assert_eq!(*live.load(), 2);
}
