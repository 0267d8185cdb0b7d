use super::*;

#[test]
fn numbers_and_times_parse_and_empty_is_none() {
    assert_eq!(Sequence::parse(" 42 "), Ok(Some(Sequence::Number(42))));
    assert_eq!(Sequence::parse(""), Ok(None));
    let t = Sequence::parse("2024-05-01T10:00:00.123456789Z").unwrap().unwrap();
    assert_eq!(t, Sequence::Time(1_714_557_600_123_456));
    assert_eq!(t.to_string(), "2024-05-01T10:00:00.123456Z");
    let offset = Sequence::parse("2024-05-01T12:00:00.123456+02:00").unwrap().unwrap();
    assert_eq!(offset, t, "the same instant in another offset");
    assert!(Sequence::parse("soon").unwrap_err().to_string().contains("\"soon\" is neither"));
    assert!(Sequence::parse("1.5").is_err(), "whole numbers only");
}

#[test]
fn only_values_of_one_type_compare() {
    let (one, two) = (Sequence::Number(1), Sequence::Number(2));
    assert_eq!(one.compare(two), Some(Ordering::Less));
    assert_eq!(one.compare(one), Some(Ordering::Equal));
    assert_eq!(Sequence::Time(5).compare(Sequence::Number(1)), None);
    for s in [one, Sequence::Time(7)] {
        let (kind, value) = s.stored();
        assert_eq!(Sequence::from_stored(kind, value), Some(s));
    }
    assert_eq!(Sequence::from_stored("colour", 1), None);
}

#[test]
fn older_is_stale_equal_is_fresh_and_another_type_is_not_compared() {
    let n = Sequence::Number;
    assert_eq!(n(4).verdict(Some(n(5))), Verdict::Stale);
    assert_eq!(n(5).verdict(Some(n(5))), Verdict::Fresh);
    assert_eq!(n(6).verdict(Some(n(5))), Verdict::Fresh);
    assert_eq!(n(6).verdict(None), Verdict::Fresh);
    assert_eq!(n(1).verdict(Some(Sequence::Time(9))), Verdict::OtherType);
}
