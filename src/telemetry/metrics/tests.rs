use super::*;

#[test]
fn renders_every_family_with_its_labels() {
    let m = Metrics::new();
    m.request("github", 202);
    m.request("github", 202);
    m.rejected("github", "signature_mismatch");
    m.event("github", "alert", Some("trigger"));
    m.attempt("delivered", Some(Duration::from_millis(12)));
    m.collapsed(3);
    m.reload(false);
    m.attempt("dead_lettered", None);
    m.too_many_events("alertmanager");
    let text = m.render(5, Some(Duration::from_secs(90)));
    for line in [
        r#"pagerhook_webhook_requests_total{source="github",status="202"} 2"#,
        r#"pagerhook_webhook_rejected_total{source="github",reason="signature_mismatch"} 1"#,
        r#"pagerhook_events_queued_total{source="github",kind="alert",action="trigger"} 1"#,
        r#"pagerhook_delivery_attempts_total{outcome="delivered"} 1"#,
        "pagerhook_upstream_seconds_count 1",
        "pagerhook_triggers_collapsed_total 3",
        r#"pagerhook_config_reloads_total{outcome="error"} 1"#,
        "pagerhook_queue_depth 5",
        "pagerhook_queue_oldest_pending_seconds 90.0",
        r#"pagerhook_delivery_attempts_total{outcome="dead_lettered"} 1"#,
        r#"pagerhook_too_many_events_total{source="alertmanager",status="202"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
}

#[test]
fn the_last_hour_counts_outcomes_of_the_last_sixty_minutes_only() {
    let h = LastHour::default();
    h.add(100, "delivered");
    h.add(100, "delivered");
    h.add(130, "retried");
    h.add(159, "delivered");
    assert_eq!(h.totals(159), BTreeMap::from([("delivered", 3), ("retried", 1)]));
    assert_eq!(h.totals(160), BTreeMap::from([("delivered", 1), ("retried", 1)]), "minute 100 is out");
    h.add(230, "dead_lettered");
    assert_eq!(h.totals(230), BTreeMap::from([("dead_lettered", 1)]));
    assert_eq!(h.minutes.lock().unwrap().len(), 1, "old buckets are dropped");
}

#[test]
fn attempts_feed_the_counter_and_the_last_hour_alike() {
    let m = Metrics::new();
    m.attempt("delivered", None);
    m.attempt("retried", None);
    m.attempt("delivered", None);
    assert_eq!(m.attempts_last_hour(), BTreeMap::from([("delivered", 2), ("retried", 1)]));
    assert!(m.render(0, None).lines().any(|l| l == r#"pagerhook_delivery_attempts_total{outcome="delivered"} 2"#));
}
