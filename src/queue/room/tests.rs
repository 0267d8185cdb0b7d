use super::*;

const MIB: u64 = 1 << 20;

#[test]
fn below_the_floor_is_short_and_resumes_only_past_the_margin() {
    let room = Headroom { min_free_bytes: 8 * MIB, max_bytes: None };
    assert_eq!(room.judge(0, 9 * MIB, false), None);
    assert_eq!(room.judge(0, 7 * MIB, false), Some(Short::BelowFloor { free: 7 * MIB, floor: 8 * MIB }));
    // Back over the floor but within an eighth of it: still short, so it does not flap.
    assert!(room.judge(0, 8 * MIB + MIB / 2, true).is_some());
    assert_eq!(room.judge(0, 8 * MIB + MIB / 2, false), None);
    assert_eq!(room.judge(0, 9 * MIB + MIB / 2, true), None);
}

#[test]
fn over_the_cap_is_short_and_resumes_an_eighth_below_it() {
    let room = Headroom { min_free_bytes: 0, max_bytes: Some(80 * MIB) };
    assert_eq!(room.judge(80 * MIB, u64::MAX, false), None);
    assert_eq!(room.judge(81 * MIB, u64::MAX, false), Some(Short::OverCap { used: 81 * MIB, cap: 80 * MIB }));
    assert!(room.judge(75 * MIB, u64::MAX, true).is_some());
    assert_eq!(room.judge(69 * MIB, u64::MAX, true), None);
}

#[test]
fn the_gate_refuses_with_the_reason_and_a_full_disk_waits_for_a_measurement() {
    let gate = Gate::default();
    assert!(gate.check().is_ok());
    gate.set(Some(Short::BelowFloor { free: 3 * MIB, floor: 8 * MIB }));
    let refused = gate.check().unwrap_err();
    assert!(matches!(&refused, QueueError::OutOfRoom(why) if why.contains("storage.min_free_bytes")), "{refused}");
    // A measurement's reason is not replaced by a write's failure.
    gate.disk_full();
    assert_eq!(gate.current(), Some(Short::BelowFloor { free: 3 * MIB, floor: 8 * MIB }));
    gate.set(None);
    let failed: Result<(), QueueError> = gate.noting(Err(QueueError::OutOfRoom("disk full".into())));
    assert!(failed.is_err());
    assert_eq!(gate.current(), Some(Short::DiskFull));
    gate.set(None);
    assert!(gate.check().is_ok());
}
