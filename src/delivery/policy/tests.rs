use super::*;
use proptest::prelude::*;

fn status(code: u16) -> Response {
    Response::Status { code, message: "m".into(), retry_after: None, status: None, dedup_key: None }
}

#[test]
fn classifies_pagerduty_answers() {
    assert_eq!(classify(&status(202)), RetryAction::Delivered);
    assert_eq!(classify(&status(400)), RetryAction::Dead("400: m".into()));
    assert_eq!(
        classify(&status(429)),
        RetryAction::Retry { reason: "429 throttled: m".into(), after: Some(Duration::from_secs(30)) },
        "a 429 without Retry-After holds the key back for at least 30 s"
    );
    assert!(retry_after(THROTTLED_HOLD) >= Duration::from_secs(30));
    assert!(matches!(classify(&status(500)), RetryAction::Retry { .. }));
    // Only 400 is final in PagerDuty's documentation: a proxy's 403 or a redirect is not.
    for code in [301, 302, 401, 403, 404, 413] {
        assert_eq!(classify(&status(code)), RetryAction::Unexpected { reason: format!("{code}: m") }, "{code}");
    }
    assert!(matches!(classify(&status(503)), RetryAction::Retry { .. }));
    assert!(matches!(classify(&Response::Transport("refused".into())), RetryAction::Retry { .. }));
    let r = Response::Status {
        code: 429,
        message: "slow".into(),
        retry_after: Some(Duration::from_secs(2)),
        status: None,
        dedup_key: None,
    };
    assert_eq!(
        classify(&r),
        RetryAction::Retry { reason: "429 throttled: slow".into(), after: Some(Duration::from_secs(2)) }
    );
}

#[test]
fn retry_after_is_honoured_beyond_max_backoff_within_reason() {
    assert_eq!(retry_after(Duration::from_secs(2)), Duration::from_secs(2));
    assert_eq!(retry_after(Duration::from_secs(600)), Duration::from_secs(600));
    assert_eq!(retry_after(Duration::ZERO), Duration::from_secs(1));
    assert_eq!(retry_after(Duration::from_secs(86_400)), Duration::from_secs(3600));
}

#[test]
fn backoff_doubles_to_the_cap() {
    let (i, m) = (Duration::from_secs(1), Duration::from_secs(60));
    let seq: Vec<u64> = (1..=8).map(|a| backoff(a, i, m, 1.0).as_secs()).collect();
    assert_eq!(seq, vec![1, 2, 4, 8, 16, 32, 60, 60]);
    assert_eq!(backoff(1, i, m, 0.0), Duration::from_millis(500));
}

proptest! {
    #[test]
    fn backoff_stays_within_bounds(attempt in 0u32..10_000, j in 0.0f64..=1.0, init_ms in 1u64..10_000, max_s in 1u64..100_000) {
        let (i, m) = (Duration::from_millis(init_ms), Duration::from_secs(max_s).max(Duration::from_millis(init_ms)));
        let d = backoff(attempt, i, m, j);
        prop_assert!(d <= m);
        prop_assert!(d >= i.min(m) / 2);
    }

    #[test]
    fn backoff_never_decreases_without_jitter(attempt in 1u32..1000) {
        let (i, m) = (Duration::from_millis(100), Duration::from_secs(300));
        prop_assert!(backoff(attempt + 1, i, m, 1.0) >= backoff(attempt, i, m, 1.0));
    }
}
