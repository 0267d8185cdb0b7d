use super::*;

const KEY: &str = "0123456789abcdef0123456789abcdef";
const TEAM: &str = "abcdef0123456789abcdef0123456789";

const MAPPING: &str = r#"
[[rule]]
name = "job"
emit = "alert"
action = '{{#if (eq body.status "failed")}}trigger{{else}}resolve{{/if}}'
dedup_key = "job/{{body.job}}{{#if body.typo}}-typo{{/if}}"
severity = '{{default body.severity "error"}}'
summary = "{{body.job}} {{body.status}}"
source = "{{body.host}}"
routing_key = '{{default query.team ""}}'
"#;

struct Fixture {
    dir: tempfile::TempDir,
    cfg: Config,
    sources: Sources,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.toml"), MAPPING).unwrap();
    let cfg = Config::from_str(
        &format!(
            "[pagerduty]\nrouting_key = \"{KEY}\"\n[pagerduty.routing_keys]\nteam-a = \"{TEAM}\"\n\
             [[source]]\nname = \"jobs\"\nkind = \"generic\"\nverify = {{ scheme = \"none\" }}\nmappings = [\"m.toml\"]\n"
        ),
        &dir.path().join("pagerhook.toml"),
        &|_| None,
    )
    .unwrap();
    let (sources, _) = Sources::build(&cfg).unwrap();
    Fixture { dir, cfg, sources }
}

impl Fixture {
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn run(&self, text: &str) -> Vec<CaseReport> {
        let tf = TestFile::load(&self.write("t.test.toml", text)).unwrap_or_else(|e| panic!("{e:#?}"));
        run(&tf, &self.cfg, &self.sources)
    }

    /// [`Fixture::run`] with the native renderer's events changed by `tamper`: a native
    /// renderer that disagrees with handlebars.
    fn run_disagreeing(&self, text: &str, tamper: impl Fn(Vec<(String, Event)>) -> Produced) -> Vec<CaseReport> {
        let tf = TestFile::load(&self.write("t.test.toml", text)).unwrap_or_else(|e| panic!("{e:#?}"));
        let accepted = std::time::SystemTime::now();
        let produce = |case: &Case, renderer| {
            let out = produce(case, &self.cfg, &self.sources, renderer, accepted);
            match renderer {
                Renderer::Native => out.and_then(&tamper),
                Renderer::Handlebars => out,
            }
        };
        run_with(&tf, &self.cfg, &produce)
    }

    fn load_errors(&self, text: &str) -> Vec<String> {
        TestFile::load(&self.write("t.test.toml", text)).unwrap_err().iter().map(ToString::to_string).collect()
    }
}

const FAILED: &str = r#"body = '{"job": "backup", "status": "failed", "host": "db-1"}'"#;
const OK: &str = r#"body = '{"job": "backup", "status": "ok", "host": "db-1"}'"#;

#[test]
fn listed_fields_are_compared_and_unlisted_ones_are_not() {
    let f = fixture();
    let reports = f.run(&format!(
        "[[case]]\nname = \"fails\"\nsource = \"jobs\"\n{FAILED}\n[[case.expect]]\nevent_action = \"trigger\"\n\
         dedup_key = \"job/backup\"\npayload.severity = \"error\"\n\"payload.summary\" = \"backup failed\"\n\
         routing_key = \"default\"\nrule = \"job\"\n"
    ));
    assert_eq!(reports.len(), 1);
    assert!(reports[0].passed, "{reports:#?}");
}

#[test]
fn a_wrong_field_fails_with_expected_and_actual() {
    let f = fixture();
    let reports = f.run(&format!(
        "[[case]]\nname = \"fails\"\nsource = \"jobs\"\nquery = \"team=team-a\"\n{FAILED}\n[[case.expect]]\n\
         payload.severity = \"critical\"\nrouting_key = \"default\"\npayload.component = \"x\"\n"
    ));
    let r = &reports[0];
    assert!(!r.passed);
    assert_eq!(
        r.failures,
        vec![
            Failure::field(1, "payload.component", json!("x"), Value::Null),
            Failure::field(1, "payload.severity", json!("critical"), json!("error")),
            Failure::field(1, "routing_key", json!("default"), json!(["team-a"])),
        ]
    );
    let text = text_report(&reports);
    assert!(text.contains("FAIL") && text.contains("t.test.toml: fails"), "{text}");
    assert!(
        text.contains("event 1: payload.severity\n        expected: \"critical\"\n        actual:   \"error\""),
        "{text}"
    );
    assert!(text.ends_with("0 passed, 1 failed\n"), "{text}");
}

#[test]
fn the_number_of_events_is_checked() {
    let f = fixture();
    let reports = f.run(&format!("[[case]]\nname = \"two\"\nsource = \"jobs\"\n{FAILED}\nexpect_events = 2\n"));
    assert_eq!(reports[0].failures.len(), 1);
    assert_eq!(reports[0].failures[0].field, "events");
    assert_eq!((&reports[0].failures[0].expected, &reports[0].failures[0].actual), (&json!(2), &json!(1)));
}

#[test]
fn a_pair_passes_when_the_resolve_closes_the_trigger_and_fails_when_it_cannot() {
    let f = fixture();
    let cases = format!(
        "[[case]]\nname = \"fails\"\nsource = \"jobs\"\n{FAILED}\nexpect_events = 1\n\n\
         [[case]]\nname = \"recovers\"\nsource = \"jobs\"\n{OK}\nexpect_events = 1\npair = \"fails\"\n"
    );
    assert!(f.run(&cases).iter().all(|r| r.passed));
    let broken = cases.replace(r#""status": "ok","#, r#""status": "ok", "typo": 1,"#);
    let reports = f.run(&broken);
    assert!(reports[0].passed);
    assert_eq!(
        reports[1].failures,
        vec![Failure::field(1, "dedup_key (pair \"fails\")", json!("job/backup"), json!("job/backup-typo"))]
    );
    // A pair whose case sends no resolve at all is the same mistake.
    let reports = f.run(&cases.replace(OK, FAILED));
    assert!(reports[1].failures[0].message.as_deref().unwrap().contains("no acknowledge or resolve"), "{reports:#?}");
}

#[test]
fn a_mapping_failure_or_an_unknown_source_fails_the_case_with_the_reason() {
    let f = fixture();
    let reports = f.run("[[case]]\nname = \"nohost\"\nsource = \"jobs\"\nbody = '{\"job\": \"x\", \"status\": \"failed\"}'\nexpect_events = 1\n[[case]]\nname = \"other\"\nsource = \"nope\"\nbody = '{}'\nexpect_events = 0\n");
    assert!(reports[0].failures[0].message.as_deref().unwrap().contains("body.host is missing"), "{reports:#?}");
    assert!(reports[1].failures[0].message.as_deref().unwrap().contains("no source named 'nope'"), "{reports:#?}");
}

#[test]
fn a_case_that_cannot_run_is_refused_naming_file_and_case() {
    let f = fixture();
    let errors = f.load_errors(
        "[[case]]\nname = \"a\"\nsource = \"jobs\"\nexpect_events = 0\n\
         [[case]]\nname = \"b\"\nsource = \"jobs\"\nbody = '{}'\n\
         [[case]]\nname = \"c\"\nsource = \"jobs\"\nbody = '{}'\nexpect_events = 0\npair = \"zz\"\n\
         [[case]]\nname = \"d\"\nsource = \"jobs\"\nfile = \"missing.json\"\nexpect_events = 0\n\
         [[case]]\nname = \"e\"\nsource = \"jobs\"\nbody = '{}'\nexpect_events = 2\n[[case.expect]]\nrule = \"job\"\n",
    );
    let joined = errors.join("\n");
    for want in [
        "t.test.toml: case 'a': give the payload as either file",
        "case 'b': say what it must produce",
        "case 'c': pair = \"zz\" names no case",
        "case 'd': cannot read payload file",
        "case 'e': expect_events = 2 but 1 [[case.expect]]",
    ] {
        assert!(joined.contains(want), "{want}\n{joined}");
    }
    let unknown = f.load_errors("[[case]]\nname = \"a\"\nsource = \"jobs\"\nbody = '{}'\nexpect_event = 0\n");
    assert!(unknown[0].contains("t.test.toml") && unknown[0].contains("expect_event"), "{unknown:?}");
}

#[test]
fn discover_finds_test_files_in_subfolders_but_not_in_hidden_ones_or_target() {
    let f = fixture();
    for d in ["mappings", ".git", "target"] {
        std::fs::create_dir(f.dir.path().join(d)).unwrap();
        f.write(&format!("{d}/x.test.toml"), "");
    }
    f.write("top.test.toml", "");
    let found = discover(f.dir.path()).unwrap();
    let rel: Vec<_> = found.iter().map(|p| p.strip_prefix(f.dir.path()).unwrap().to_path_buf()).collect();
    assert_eq!(rel, vec![PathBuf::from("mappings/x.test.toml"), PathBuf::from("top.test.toml")]);
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(discover(empty.path()), Err(TestFileError::NoFiles { .. })));
}

#[test]
fn an_sns_message_is_wrapped_in_a_notification() {
    let wrapped: Value = serde_json::from_slice(&sns_notification(br#"{"AlarmName": "x"}"#).unwrap()).unwrap();
    assert_eq!(wrapped["Type"], "Notification");
    assert_eq!(wrapped["Message"], r#"{"AlarmName": "x"}"#);
}

/// `event` with `payload.summary` made `summary`.
fn with_summary(event: &Event, summary: &str) -> Event {
    let mut body = event.body().clone();
    body["payload"]["summary"] = json!(summary);
    Event::from_stored(event.kind(), event.routing_key().clone(), body.to_string()).unwrap()
}

const FAILS: &str = "[[case]]\nname = \"fails\"\nsource = \"jobs\"\n";

#[test]
fn every_case_is_rendered_both_ways_and_any_difference_fails_it() {
    let f = fixture();
    let case = format!("{FAILS}{FAILED}\n[[case.expect]]\npayload.severity = \"error\"\n");
    // The two renderers agree on the real mapping: the case passes.
    assert!(f.run_disagreeing(&case, Ok)[0].passed);
    let reports = f.run_disagreeing(&case, |events| {
        Ok(events.into_iter().map(|(rule, e)| (rule, with_summary(&e, "backup FAILED"))).collect())
    });
    let r = &reports[0];
    assert!(!r.passed);
    assert_eq!(
        r.failures,
        vec![Failure::native_differs(Some(1), "payload.summary", json!("backup failed"), json!("backup FAILED"))]
    );
    let text = text_report(&reports);
    assert!(text.contains("FAIL  ") && text.contains("t.test.toml: fails\n"), "{text}");
    assert!(
        text.contains(
            "      event 1: payload.summary: the native renderer and handlebars differ\n\
             \x20       handlebars: \"backup failed\"\n\
             \x20       native:     \"backup FAILED\"\n\
             \x20       (set [mapping] native = false"
        ),
        "{text}"
    );
    let json = serde_json::to_value(&r.failures[0]).unwrap();
    assert_eq!(
        (&json["native_differs"], &json["expected"], &json["actual"]),
        (&json!(true), &json!("backup failed"), &json!("backup FAILED"))
    );
    // Other failures do not carry the mark.
    assert!(serde_json::to_value(Failure::field(1, "x", json!(1), json!(2))).unwrap().get("native_differs").is_none());
}

#[test]
fn a_difference_in_outcome_rule_or_routing_key_fails_the_case_too() {
    let f = fixture();
    let case = format!("{FAILS}{FAILED}\nexpect_events = 1\n");
    let missing = f.run_disagreeing(&case, |_| Ok(Vec::new()));
    assert_eq!(
        missing[0].failures,
        vec![Failure::native_differs(None, "mapping", json!("1 event(s)"), json!("0 event(s)"))]
    );
    let failed = f.run_disagreeing(&case, |_| Err(Box::new(Failure::message("mapping", "rule 'job': boom".into()))));
    assert_eq!(
        failed[0].failures,
        vec![Failure::native_differs(None, "mapping", json!("1 event(s)"), json!("rule 'job': boom"))]
    );
    let team = f.cfg.pagerduty.routing_keys["team-a"].clone();
    let elsewhere = f.run_disagreeing(&case, |events| {
        Ok(events.into_iter().map(|(_, e)| ("other".to_string(), e.rerouted(team.clone()))).collect())
    });
    assert_eq!(
        elsewhere[0].failures,
        vec![
            Failure::native_differs(Some(1), "rule", json!("job"), json!("other")),
            Failure::native_differs(Some(1), "routing_key", json!(["default"]), json!(["team-a"])),
        ]
    );
    // The same failure both ways is the mapping's, reported once, not a difference.
    let both = f.run("[[case]]\nname = \"nohost\"\nsource = \"jobs\"\nbody = '{\"job\": \"x\", \"status\": \"failed\"}'\nexpect_events = 1\n");
    assert_eq!(both[0].failures.len(), 1, "{both:#?}");
    assert!(!both[0].failures[0].native_differs);
}

/// A scenario of the fixture's `jobs` source: `steps` are `[[scenario.step]]` bodies.
fn scenario(end: &str, steps: &[&str]) -> String {
    let mut s = format!("[[scenario]]\nname = \"backup\"\nsource = \"jobs\"\n{end}\n");
    for st in steps {
        s.push_str(&format!("[[scenario.step]]\n{st}\n"));
    }
    s
}

const WARN: &str = r#"body = '{"job": "backup", "status": "failed", "host": "db-1", "severity": "warning"}'"#;
const CRIT: &str = r#"body = '{"job": "backup", "status": "failed", "host": "db-1", "severity": "critical"}'"#;

#[test]
fn a_scenario_shows_the_first_triggers_severity_where_a_case_cannot() {
    let f = fixture();
    let end = "expect_pages = 1\nexpect_open = [{ title = \"backup failed\", severity = \"critical\", status = \"triggered\" }]";
    let reports = f.run(&scenario(end, &[WARN, CRIT]));
    assert_eq!((reports[0].case.as_str(), reports[0].kind), ("scenario backup", "scenario"));
    assert_eq!(reports[0].failures, vec![Failure::field(1, "open severity", json!("critical"), json!("warning"))]);
    let reports = f.run(&scenario(&end.replace("critical", "warning"), &[WARN, CRIT]));
    assert!(reports[0].passed, "{reports:#?}");
}

#[test]
fn a_scenario_counts_pages_and_what_stays_open() {
    let f = fixture();
    // Resolved, then failing again: a second page and one incident open at the end.
    let reports =
        f.run(&scenario("expect_pages = 2\nexpect_open = [{ dedup_key = \"job/backup\" }]", &[FAILED, OK, FAILED]));
    assert!(reports[0].passed, "{reports:#?}");
    // A resolve that arrives first is dropped: the trigger after it stays open.
    let reports = f.run(&scenario("expect_pages = 1\nexpect_open = []", &[OK, FAILED]));
    let failure = &reports[0].failures[0];
    assert_eq!((failure.field.as_str(), &failure.expected, &failure.actual), ("open incidents", &json!(0), &json!(1)));
    assert!(failure.message.as_deref().unwrap().contains("\"routing_key\":[\"default\"]"), "{failure:?}");
    // A resolve whose key differs from the trigger's leaves the incident open.
    let typo = OK.replace(r#""status": "ok","#, r#""status": "ok", "typo": 1,"#);
    let reports = f.run(&scenario("expect_open = []", &[FAILED, &typo]));
    assert_eq!(reports[0].failures[0].field, "open incidents");
}

#[test]
fn each_steps_events_are_checked_and_named_by_step() {
    let f = fixture();
    let step = format!("{OK}\nat = \"5m\"\n[[scenario.step.expect]]\nevent_action = \"trigger\"");
    let reports = f.run(&scenario("expect_pages = 1", &[FAILED, &step]));
    assert_eq!(
        reports[0].failures,
        vec![Failure::field(1, "step 2: event_action", json!("trigger"), json!("resolve"))]
    );
}

#[test]
fn a_trigger_followed_in_its_lane_by_another_of_the_same_webhook_is_collapsed() {
    let key = RoutingKey::parse(crate::secret::Secret::new(KEY)).unwrap();
    let alert = |action: &str, summary: &str| {
        let d = crate::event::AlertDraft {
            action: action.into(),
            dedup_key: Some("k".into()),
            summary: Some(summary.into()),
            source: Some("s".into()),
            ..Default::default()
        };
        ("r".to_string(), Event::alert(key.clone(), d).unwrap())
    };
    let summaries = |events: &[(String, Event)]| -> Vec<Value> {
        scenario::delivered(events).iter().map(|e| e.body()["payload"]["summary"].clone()).collect()
    };
    let events = [alert("trigger", "warn"), alert("trigger", "crit")];
    assert_eq!(summaries(&events), vec![json!("crit")]);
    // A trigger never collapses into an acknowledge or resolve.
    let events = [alert("trigger", "warn"), alert("resolve", ""), alert("trigger", "crit")];
    assert_eq!(summaries(&events), vec![json!("warn"), Value::Null, json!("crit")]);
}

#[test]
fn a_broken_scenario_is_reported_with_file_and_scenario() {
    let f = fixture();
    let errors = f.load_errors(&scenario("", &[FAILED]));
    assert!(errors[0].contains("t.test.toml: scenario 'backup': say what PagerDuty must end with"), "{errors:?}");
    let errors = f.load_errors(&scenario("expect_pages = 1", &[&format!("{FAILED}\nat = \"soon\"")]));
    assert!(errors[0].contains("scenario 'backup': step 1: at = \"soon\""), "{errors:?}");
    let errors = f.load_errors(&scenario("expect_pages = 1", &[&format!("{FAILED}\nwhen = 1")]));
    assert!(errors[0].contains("unknown field `when`"), "{errors:?}");
    let errors = f.load_errors(&scenario("expect_pages = 1", &["query = \"\""]));
    assert!(errors[0].contains("scenario 'backup': step 1: give the payload as either file"), "{errors:?}");
    let errors = f.load_errors("[[scenario]]\nname = \"x\"\nsource = \"jobs\"\nexpect_pages = 0\n");
    assert!(errors[0].contains("no [[scenario.step]]"), "{errors:?}");
}

#[test]
fn strict_fails_a_test_whose_event_was_changed_to_fit() {
    let f = fixture();
    let long = format!(r#"body = '{{"job": "{}", "status": "failed", "host": "db-1"}}'"#, "b".repeat(1100));
    let mut reports = f.run(&format!("[[case]]\nname = \"long\"\nsource = \"jobs\"\n{long}\nexpect_events = 1\n"));
    assert!(reports[0].passed, "{reports:#?}");
    assert_eq!(reports[0].notes, vec!["summary truncated to 1024 characters".to_string()]);
    reports[0].strict();
    assert!(!reports[0].passed);
    assert!(text_report(&reports).contains("notes: --strict: summary truncated"), "{}", text_report(&reports));
}

#[test]
fn the_report_counts_cases_and_scenarios_per_source() {
    let f = fixture();
    let text = format!(
        "[[case]]\nname = \"fails\"\nsource = \"jobs\"\n{FAILED}\nexpect_events = 1\n\n{}",
        scenario("expect_pages = 1", &[FAILED])
    );
    let report = text_report(&f.run(&text));
    assert!(report.ends_with("source 'jobs': 1 case(s), 1 scenario(s)\n2 passed, 0 failed\n"), "{report}");
}
