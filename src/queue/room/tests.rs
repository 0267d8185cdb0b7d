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
fn the_gate_refuses_with_the_reason_and_counts_accepts_between_measurements() {
    let gate = Gate::new(Headroom { min_free_bytes: 8 * MIB, max_bytes: None });
    assert!(gate.check().is_ok());
    assert_eq!(gate.measured(MIB, 10 * MIB), None);
    // Two MiB of accepts before the next measurement take it to the floor: the next is refused.
    for _ in 0..2 {
        gate.spend(MIB - 1).unwrap();
    }
    let refused = gate.spend(MIB).unwrap_err();
    assert!(matches!(&refused, QueueError::OutOfRoom(why) if why.contains("storage.min_free_bytes")), "{refused}");
    assert!(gate.check().is_err(), "shut until measured again");
    // Measured back over the floor, but not past the margin: still shut.
    assert!(gate.measured(MIB, 8 * MIB + MIB / 2).is_some());
    assert_eq!(gate.measured(MIB, 10 * MIB), None);
    gate.spend(MIB).unwrap();
}

#[test]
fn a_write_refused_for_lack_of_space_shuts_the_gate_until_a_measurement_finds_room() {
    let gate = Gate::new(Headroom { min_free_bytes: 8 * MIB, max_bytes: None });
    gate.measured(0, 3 * MIB);
    // A measurement's reason is not replaced by a write's failure.
    gate.disk_full();
    assert_eq!(gate.current(), Some(Short::BelowFloor { free: 3 * MIB, floor: 8 * MIB }));
    gate.measured(0, 100 * MIB);
    let failed: Result<(), QueueError> = gate.noting(Err(QueueError::OutOfRoom("disk full".into())));
    assert!(failed.is_err());
    assert_eq!(gate.current(), Some(Short::DiskFull));
    assert!(matches!(gate.spend(1), Err(QueueError::OutOfRoom(why)) if why.contains("disk is full")));
    assert_eq!(gate.measured(0, 100 * MIB), None);
    assert!(gate.check().is_ok());
}
