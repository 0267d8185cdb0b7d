use super::*;

const T0: Millis = 1_800_000_000_000;

fn log() -> (PayloadLog, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (PayloadLog::beside(&dir.path().join("q.db")), dir)
}

#[test]
fn appended_bodies_are_read_back_from_where_they_were_written() {
    let (log, _dir) = log();
    let a = log.append(b"{\"first\":1}", T0).unwrap();
    let b = log.append(b"{\"second\":2}", T0).unwrap();
    assert_eq!(a.segment_name(), b.segment_name(), "one segment takes both");
    assert_eq!((a.offset, b.offset), (0, a.len));
    assert_eq!(log.read(a.segment_name(), a.offset, a.len, a.crc).unwrap(), b"{\"first\":1}");
    assert_eq!(log.read(b.segment_name(), b.offset, b.len, b.crc).unwrap(), b"{\"second\":2}");
}

#[test]
fn bytes_that_changed_on_disk_are_refused_not_returned() {
    let (log, _dir) = log();
    let a = log.append(b"{\"alarm\":\"ALARM\"}", T0).unwrap();
    std::fs::write(log.dir.join(a.segment_name()), b"{\"alarm\":\"OK!!!\"}").unwrap();
    let e = log.read(a.segment_name(), a.offset, a.len, a.crc).unwrap_err();
    assert!(matches!(&e, QueueError::BadRow(m) if m.contains("checksum")), "{e}");
    let short = log.read(a.segment_name(), a.offset, a.len + 1, a.crc).unwrap_err();
    assert!(matches!(short, QueueError::Io(_)), "a body past the end of its segment: {short}");
}

#[test]
fn a_segment_name_the_log_did_not_make_is_refused() {
    let (log, _dir) = log();
    for name in ["../../etc/passwd", "", "1800000000000-../x", "180000000000-0123456789abcdef0123456789abcdef"] {
        let e = log.read(name, 0, 1, 0).unwrap_err();
        assert!(matches!(&e, QueueError::BadRow(m) if m.contains("not a payload segment")), "{name}: {e}");
    }
}

#[test]
fn segments_rotate_by_age_and_only_finished_ones_are_listed_for_deletion() {
    let (log, _dir) = log();
    let old = log.append(b"old", T0).unwrap();
    let new = log.append(b"new", T0 + ROTATE_AFTER).unwrap();
    assert_ne!(old.segment_name(), new.segment_name(), "an hour-old segment takes no more");
    assert!(log.finished_before(T0 + ROTATE_AFTER + GRACE).unwrap().is_empty(), "a late append may still be running");
    let finished = log.finished_before(T0 + ROTATE_AFTER + GRACE + 1).unwrap();
    assert_eq!(finished, [old.segment_name()]);
    log.remove(&finished[0]).unwrap();
    assert!(log.read(old.segment_name(), 0, 3, old.crc).is_err());
    assert_eq!(log.read(new.segment_name(), 0, 3, new.crc).unwrap(), b"new");
}

#[test]
fn a_full_segment_is_followed_by_a_new_one() {
    let (log, _dir) = log();
    let first = log.append(b"x", T0).unwrap();
    log.current.lock().unwrap().as_mut().unwrap().taken = ROTATE_AT_BYTES;
    let next = log.append(b"y", T0).unwrap();
    assert_ne!(first.segment_name(), next.segment_name());
    assert_eq!(next.offset, 0);
}
