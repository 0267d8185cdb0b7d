//! `pagerhook test`: mapping test files (`*.test.toml`), run offline like `promtool test rules`.
//!
//! Each `[[case]]` names a source, a payload and what it must produce. The payload goes
//! through the source's parser (`Source::trusted`, as `render` does: nothing is verified) and
//! its real mappings and event checks; nothing is sent or stored. Only the fields a case lists
//! are compared, so a test does not break when an unrelated field changes.
//!
//! Every case is rendered twice, through handlebars (the reference, which the expectations
//! are compared with) and by the native renderer (`[mapping] native`), and any difference
//! between the two in any field fails the case: an operator's own mappings are checked, not
//! only the shipped ones.

use crate::config::Config;
use crate::event::{Action, Event, RoutingKey};
use crate::mapping::Renderer;
use crate::registry::Sources;
use crate::source::{Disposition, Headers};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A test file could not be read, or a case in it is not a test that can run.
#[derive(Debug, thiserror::Error)]
pub enum TestFileError {
    #[error("cannot read {file}: {reason}")]
    Read { file: String, reason: std::io::Error },
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: case '{case}': {message}")]
    Case { file: String, case: String, message: String },
    #[error("{file}: scenario '{scenario}': {message}")]
    Scenario { file: String, scenario: String, message: String },
    #[error("no *.test.toml file under {dir}: name test files on the command line, or put them next to the config")]
    NoFiles { dir: String },
}

/// A test file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTestFile {
    #[serde(default, rename = "case")]
    cases: Vec<RawCase>,
    #[serde(default, rename = "scenario")]
    scenarios: Vec<scenario::RawScenario>,
}

/// One `[[case]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    /// Shown in the report; unique in its file (`pair` refers to it).
    name: String,
    /// A `[[source]]` name from the config: its kind parses the payload, its mappings map it.
    source: String,
    /// Payload file, relative to the test file.
    file: Option<PathBuf>,
    /// Payload inline.
    body: Option<String>,
    /// Request headers (e.g. `X-GitHub-Event`); content-type defaults to application/json.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// The endpoint's query string, e.g. `severity=warning`.
    #[serde(default)]
    query: String,
    /// The payload is an SNS Notification's `Message` (a CloudWatch alarm): wrap it in one.
    #[serde(default)]
    sns_message: bool,
    /// How many events the payload must produce.
    expect_events: Option<usize>,
    /// One table per event, in order: the fields that must match.
    #[serde(default)]
    expect: Vec<toml::Table>,
    /// The case whose trigger this case's acknowledge or resolve must close.
    pair: Option<String>,
}

/// A case ready to run.
#[derive(Debug)]
pub struct Case {
    pub name: String,
    source: String,
    headers: Vec<(String, String)>,
    query: String,
    body: Vec<u8>,
    /// When it is accepted, after the start of the test (a scenario's step `at`).
    offset: std::time::Duration,
    /// How many events it must produce; a scenario's step need not say.
    count: Option<usize>,
    /// Per event: (dotted field path, expected value).
    expect: Vec<Vec<(String, Value)>>,
    pair: Option<String>,
}

/// The cases of one file.
#[derive(Debug)]
pub struct TestFile {
    pub path: PathBuf,
    pub cases: Vec<Case>,
    pub scenarios: Vec<scenario::Scenario>,
}

/// One difference between what a case expected and what the mapping produced.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Failure {
    /// 1-based event number, when the failure is about one event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<usize>,
    pub field: String,
    pub expected: Value,
    /// `null` when the event has no such field.
    pub actual: Value,
    /// What went wrong when it is not a field's value (the mapping failed, no such source).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The native renderer made `actual` where handlebars made `expected`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub native_differs: bool,
}

impl Failure {
    fn field(event: usize, field: &str, expected: Value, actual: Value) -> Failure {
        Failure { event: Some(event), field: field.to_string(), expected, actual, message: None, native_differs: false }
    }

    fn message(field: &str, message: String) -> Failure {
        Failure {
            event: None,
            field: field.to_string(),
            expected: Value::Null,
            actual: Value::Null,
            message: Some(message),
            native_differs: false,
        }
    }

    /// The native renderer made `native` where handlebars made `handlebars`.
    fn native_differs(event: Option<usize>, field: &str, handlebars: Value, native: Value) -> Failure {
        Failure {
            event,
            field: field.to_string(),
            expected: handlebars,
            actual: native,
            message: Some(NATIVE_DIFFERS.to_string()),
            native_differs: true,
        }
    }
}

const NATIVE_DIFFERS: &str = "set [mapping] native = false to render through handlebars until this is fixed, \
and report it with this case: the native renderer must make what handlebars makes";

/// The outcome of one case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseReport {
    pub file: String,
    /// A case's name, or `scenario <name>`.
    pub case: String,
    /// `case` or `scenario`.
    pub kind: &'static str,
    /// The `[[source]]` it ran through.
    pub source: String,
    pub passed: bool,
    pub failures: Vec<Failure>,
    /// What the event checks changed to fit PagerDuty's limits (a summary cut, an image
    /// dropped): `--strict` fails a test that has any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl CaseReport {
    /// Under `--strict`, a note fails the test it came from.
    pub fn strict(&mut self) {
        if !self.notes.is_empty() && self.passed {
            self.passed = false;
            let notes = self.notes.join("; ");
            self.failures.push(Failure::message("notes", format!("--strict: {notes}")));
        }
    }
}

/// Every `*.test.toml` under `dir`, sorted; hidden folders and `target` are skipped, symlinked
/// folders are not followed (no cycles).
pub fn discover(dir: &Path) -> Result<Vec<PathBuf>, TestFileError> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let entries =
            std::fs::read_dir(&d).map_err(|e| TestFileError::Read { file: d.display().to_string(), reason: e })?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(kind) = entry.file_type() else { continue };
            if kind.is_dir() && !name.starts_with('.') && name != "target" {
                pending.push(entry.path());
            } else if kind.is_file() && name.ends_with(".test.toml") {
                out.push(entry.path());
            }
        }
    }
    if out.is_empty() {
        return Err(TestFileError::NoFiles { dir: dir.display().to_string() });
    }
    out.sort();
    Ok(out)
}

impl TestFile {
    /// Reads and checks a test file; every problem is reported, each naming file and case.
    pub fn load(path: &Path) -> Result<TestFile, Vec<TestFileError>> {
        let file = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|e| vec![TestFileError::Read { file: file.clone(), reason: e }])?;
        let raw: RawTestFile = toml::from_str(&text)
            .map_err(|e| vec![TestFileError::Parse { file: file.clone(), message: e.to_string().trim_end().into() }])?;
        if raw.cases.is_empty() && raw.scenarios.is_empty() {
            return Err(vec![TestFileError::Parse {
                file,
                message: "no [[case]] or [[scenario]] in this file".into(),
            }]);
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let mut cases = Vec::new();
        let mut errors = Vec::new();
        for rc in raw.cases {
            let err = |message: String| TestFileError::Case { file: file.clone(), case: rc.name.clone(), message };
            if cases.iter().any(|c: &Case| c.name == rc.name) {
                errors.push(err("another case has this name".into()));
                continue;
            }
            match Case::build(rc, base, true) {
                Ok(c) => cases.push(c),
                Err((case, message)) => errors.push(TestFileError::Case { file: file.clone(), case, message }),
            }
        }
        for c in &cases {
            if let Some(p) = &c.pair {
                if !cases.iter().any(|t| &t.name == p) {
                    errors.push(TestFileError::Case {
                        file: file.clone(),
                        case: c.name.clone(),
                        message: format!("pair = {p:?} names no case in this file"),
                    });
                }
            }
        }
        let mut scenarios = Vec::new();
        for rs in raw.scenarios {
            if scenarios.iter().any(|s: &scenario::Scenario| s.name == rs.name) {
                let message = "another scenario has this name".into();
                errors.push(TestFileError::Scenario { file: file.clone(), scenario: rs.name, message });
                continue;
            }
            match scenario::Scenario::build(rs, base) {
                Ok(s) => scenarios.push(s),
                Err((scenario, message)) => {
                    errors.push(TestFileError::Scenario { file: file.clone(), scenario, message })
                }
            }
        }
        if errors.is_empty() {
            Ok(TestFile { path: path.to_path_buf(), cases, scenarios })
        } else {
            Err(errors)
        }
    }
}

impl TestFile {
    /// The `[[source]]` names its cases and scenarios run through.
    pub fn sources(&self) -> impl Iterator<Item = &str> {
        self.cases.iter().map(|c| c.source.as_str()).chain(self.scenarios.iter().map(|s| s.source.as_str()))
    }
}

impl Case {
    /// The `[[source]]` the case runs through.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// `need_expect`: a case must say what it produces; a scenario's step may leave it to the
    /// scenario's own expectations.
    fn build(rc: RawCase, base: &Path, need_expect: bool) -> Result<Case, (String, String)> {
        let fail = |m: String| (rc.name.clone(), m);
        let body = match (&rc.file, &rc.body) {
            (Some(f), None) => {
                let p = base.join(f);
                std::fs::read(&p).map_err(|e| fail(format!("cannot read payload file {}: {e}", p.display())))?
            }
            (None, Some(b)) => b.clone().into_bytes(),
            _ => return Err(fail("give the payload as either file = \"path\" or body = '...'".into())),
        };
        let count = match (rc.expect_events, rc.expect.len()) {
            (None, 0) if need_expect => {
                return Err(fail("say what it must produce: expect_events = N or [[case.expect]] tables".into()))
            }
            (None, 0) => None,
            (Some(n), m) if m > 0 && n != m => {
                return Err(fail(format!("expect_events = {n} but {m} [[case.expect]] table(s)")))
            }
            (Some(n), _) => Some(n),
            (None, m) => Some(m),
        };
        let mut expect = Vec::new();
        for t in &rc.expect {
            let mut fields = Vec::new();
            flatten("", &toml::Value::Table(t.clone()), &mut fields);
            expect.push(fields);
        }
        let body = if rc.sns_message { sns_notification(&body).map_err(fail)? } else { body };
        let mut headers: Vec<_> = rc.headers.into_iter().collect();
        if rc.sns_message {
            headers.push(("x-amz-sns-message-type".into(), "Notification".into()));
        }
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
            headers.push(("content-type".into(), "application/json".into()));
        }
        let offset = std::time::Duration::ZERO;
        Ok(Case {
            name: rc.name,
            source: rc.source,
            headers,
            query: rc.query,
            body,
            offset,
            count,
            expect,
            pair: rc.pair,
        })
    }
}

/// `payload = { severity = "x" }` and `"payload.severity" = "x"` both become `payload.severity`.
fn flatten(prefix: &str, v: &toml::Value, out: &mut Vec<(String, Value)>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&path, v, out);
            }
        }
        other => out.push((prefix.to_string(), serde_json::to_value(other).unwrap_or(Value::Null))),
    }
}

/// An SNS Notification around `message`, as SNS posts it (unsigned: `test` verifies nothing).
fn sns_notification(message: &[u8]) -> Result<Vec<u8>, String> {
    let message = std::str::from_utf8(message).map_err(|_| "the payload is not UTF-8 text".to_string())?;
    let envelope = json!({
        "Type": "Notification",
        "MessageId": "00000000-0000-0000-0000-000000000000",
        "TopicArn": alarm_topic(message).unwrap_or_else(|| "arn:aws:sns:us-east-1:123456789012:pagerhook-test".into()),
        "Message": message,
        "Timestamp": "2024-01-01T00:00:00.000Z",
        "SignatureVersion": "1",
        "Signature": "",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-test.pem",
    });
    serde_json::to_vec(&envelope).map_err(|e| e.to_string())
}

/// The topic SNS posts a CloudWatch alarm's message from: the first SNS topic among the
/// actions of its new state (an alarm publishes only to those). A mapping that compares the
/// topic with the alarm's actions (CloudWatch's "will not resolve by itself") then sees what
/// it would in production.
fn alarm_topic(message: &str) -> Option<String> {
    let alarm: Value = serde_json::from_str(message).ok()?;
    let actions = match alarm.get("NewStateValue")?.as_str()? {
        "ALARM" => "AlarmActions",
        "OK" => "OKActions",
        "INSUFFICIENT_DATA" => "InsufficientDataActions",
        _ => return None,
    };
    let topics = alarm.get(actions)?.as_array()?.iter().filter_map(Value::as_str);
    topics.into_iter().find(|a| a.starts_with("arn:aws:sns:")).map(str::to_string)
}

/// What one case produced: each event with the name of the rule that made it.
type Produced = Result<Vec<(String, Event)>, Box<Failure>>;

/// Maps a case's payload with a renderer: the sources' mappings, or in tests one made to
/// disagree.
type Produce<'a> = dyn Fn(&Case, Renderer) -> Produced + 'a;

/// Runs every case of `file` against the sources of `cfg`, both ways, then checks each `pair`.
pub fn run(file: &TestFile, cfg: &Config, sources: &Sources) -> Vec<CaseReport> {
    // As `render` does: accepted now, the same instant for both renderings. A case compares a
    // timestamp only if it lists one.
    let accepted = std::time::SystemTime::now();
    let produce = |case: &Case, renderer| produce(case, cfg, sources, renderer, accepted + case.offset);
    let mut reports = run_with(file, cfg, &produce);
    let name = file.path.display().to_string();
    reports.extend(file.scenarios.iter().map(|s| s.run(&name, cfg, &produce)));
    reports
}

/// [`run`] with the cases mapped by `produce`.
fn run_with(file: &TestFile, cfg: &Config, produce: &Produce<'_>) -> Vec<CaseReport> {
    let both: Vec<(Produced, Produced)> =
        file.cases.iter().map(|c| (produce(c, Renderer::Handlebars), produce(c, Renderer::Native))).collect();
    file.cases
        .iter()
        .zip(&both)
        .map(|(case, (out, native))| {
            let mut failures = match out {
                Ok(events) => compare(case, events, cfg),
                Err(f) => vec![(**f).clone()],
            };
            failures.extend(native_differences(out, native, cfg, &case.source));
            if let (Some(p), Ok(events)) = (&case.pair, out) {
                let trigger = file.cases.iter().position(|c| &c.name == p).map(|i| &both[i].0);
                failures.extend(check_pair(p, events, trigger));
            }
            CaseReport {
                file: file.path.display().to_string(),
                case: case.name.clone(),
                kind: "case",
                source: case.source.clone(),
                passed: failures.is_empty(),
                failures,
                notes: notes(out),
            }
        })
        .collect()
}

fn produce(
    case: &Case,
    cfg: &Config,
    sources: &Sources,
    renderer: Renderer,
    accepted: std::time::SystemTime,
) -> Produced {
    let src = sources.get(&case.source).ok_or_else(|| {
        Box::new(Failure::message(
            "source",
            format!(
                "no source named '{}' in {}: add its [[source]], or name only the test files of the sources you run",
                case.source,
                cfg.path.display()
            ),
        ))
    })?;
    let verified = src
        .source()
        .trusted(Headers::from_pairs(case.headers.clone()), &case.query, case.body.clone().into())
        .map_err(|e| Box::new(Failure::message("payload", e.to_string())))?;
    match verified.disposition() {
        Disposition::Ignore(_) => Ok(Vec::new()),
        Disposition::Map => Ok(src
            .mapping()
            .apply_via(renderer, verified, accepted, src.max_events_per_request())
            .map_err(|e| Box::new(Failure::message("mapping", e.to_string())))?
            .into_iter()
            .map(|r| (r.rule, r.event))
            .collect()),
    }
}

/// Every note of the events a test produced, each once.
fn notes(out: &Produced) -> Vec<String> {
    let mut notes: Vec<String> = Vec::new();
    for n in out.iter().flatten().flat_map(|(_, e)| e.notes()) {
        if !notes.contains(n) {
            notes.push(n.clone());
        }
    }
    notes
}

fn compare(case: &Case, events: &[(String, Event)], cfg: &Config) -> Vec<Failure> {
    let mut failures = Vec::new();
    if case.count.is_some_and(|n| events.len() != n) {
        failures.push(Failure {
            event: None,
            field: "events".into(),
            expected: json!(case.count),
            actual: json!(events.len()),
            message: Some(format!("rules that matched: {:?}", events.iter().map(|(r, _)| r).collect::<Vec<_>>())),
            native_differs: false,
        });
    }
    for (i, (expect, (rule, event))) in case.expect.iter().zip(events).enumerate() {
        for (field, want) in expect {
            let got = match field.as_str() {
                "rule" => json!(rule),
                "endpoint" => json!(event.kind().path()),
                "routing_key" => json!(key_names(cfg, &case.source, event.routing_key())),
                path => path.split('.').try_fold(event.body(), |v, seg| v.get(seg)).cloned().unwrap_or(Value::Null),
            };
            let matches = match (&got, field.as_str()) {
                (Value::Array(names), "routing_key") => names.contains(want),
                _ => &got == want,
            };
            if !matches {
                failures.push(Failure::field(i + 1, field, want.clone(), got));
            }
        }
    }
    failures
}

/// Every difference between what handlebars (`out`) and the native renderer produced: the
/// outcome, the number of events, and each event's rule, routing key and body, leaf by leaf.
fn native_differences(out: &Produced, native: &Produced, cfg: &Config, source: &str) -> Vec<Failure> {
    let outcome = |p: &Produced| match p {
        Ok(events) => json!(format!("{} event(s)", events.len())),
        Err(f) => json!(f.message.clone().unwrap_or_else(|| f.field.clone())),
    };
    let (events, native_events) = match (out, native) {
        (Ok(a), Ok(b)) if a.len() == b.len() => (a, b),
        (Err(a), Err(b)) if a == b => return Vec::new(),
        _ => return vec![Failure::native_differs(None, "mapping", outcome(out), outcome(native))],
    };
    let mut failures = Vec::new();
    for (i, ((rule, e), (native_rule, n))) in events.iter().zip(native_events).enumerate() {
        let differs = |field: &str, a: Value, b: Value| Failure::native_differs(Some(i + 1), field, a, b);
        if rule != native_rule {
            failures.push(differs("rule", json!(rule), json!(native_rule)));
        }
        if e.routing_key() != n.routing_key() {
            let names = |e: &Event| json!(key_names(cfg, source, e.routing_key()));
            failures.push(differs("routing_key", names(e), names(n)));
        }
        let mut leaves = Vec::new();
        differing_leaves("", e.body(), n.body(), &mut leaves);
        failures.extend(leaves.into_iter().map(|(path, a, b)| differs(&path, a, b)));
    }
    failures
}

/// The dotted paths where `a` and `b` differ, with both values: objects key by key, anything
/// else (lists included) as a whole.
fn differing_leaves(at: &str, a: &Value, b: &Value, out: &mut Vec<(String, Value, Value)>) {
    let (Value::Object(x), Value::Object(y)) = (a, b) else {
        if a != b {
            out.push((at.to_string(), a.clone(), b.clone()));
        }
        return;
    };
    let only_in_y = y.keys().filter(|k| !x.contains_key(*k));
    for k in x.keys().chain(only_in_y) {
        let path = if at.is_empty() { k.clone() } else { format!("{at}.{k}") };
        differing_leaves(&path, x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null), out);
    }
}

/// The names an event's routing key goes by: `default` (the source's key, else
/// `[pagerduty] routing_key`) and every `[pagerduty.routing_keys]` name holding it.
fn key_names(cfg: &Config, source: &str, key: &RoutingKey) -> Vec<String> {
    let default = cfg.sources.iter().find(|s| s.name == source).and_then(|s| s.routing_key.as_ref());
    let default = default.or(cfg.pagerduty.routing_key.as_ref());
    let mut names: Vec<String> =
        cfg.pagerduty.routing_keys.iter().filter(|(_, k)| *k == key).map(|(n, _)| n.clone()).collect();
    if default == Some(key) {
        names.insert(0, "default".into());
    }
    names
}

/// Every acknowledge or resolve of a case must carry the dedup_key of a trigger of the case it
/// pairs with: otherwise PagerDuty never closes the incident.
fn check_pair(pair: &str, events: &[(String, Event)], trigger: Option<&Produced>) -> Vec<Failure> {
    let field = format!("pair {pair:?}");
    let Some(Ok(triggers)) = trigger else {
        return vec![Failure::message(&field, format!("case '{pair}' did not run: fix it first"))];
    };
    let keys: Vec<&str> = triggers
        .iter()
        .filter(|(_, e)| e.action() == Some(Action::Trigger))
        .filter_map(|(_, e)| e.dedup_key().map(|k| k.as_str()))
        .collect();
    if keys.is_empty() {
        return vec![Failure::message(&field, format!("case '{pair}' sends no trigger"))];
    }
    let closing: Vec<_> = events
        .iter()
        .enumerate()
        .filter(|(_, (_, e))| matches!(e.action(), Some(Action::Acknowledge | Action::Resolve)))
        .collect();
    if closing.is_empty() {
        return vec![Failure::message(&field, "this case sends no acknowledge or resolve".into())];
    }
    let expected = if keys.len() == 1 { json!(keys[0]) } else { json!(keys) };
    closing
        .into_iter()
        .filter_map(|(i, (_, e))| {
            let key = e.dedup_key().map(|k| k.as_str());
            (!key.is_some_and(|k| keys.contains(&k)))
                .then(|| Failure::field(i + 1, &format!("dedup_key (pair {pair:?})"), expected.clone(), json!(key)))
        })
        .collect()
}

/// The report for a terminal: each case passed or failed, failures field by field.
pub fn text_report(reports: &[CaseReport]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for r in reports {
        let _ = writeln!(out, "{}  {}: {}", if r.passed { "PASS" } else { "FAIL" }, r.file, r.case);
        for f in &r.failures {
            let at = f.event.map(|e| format!("event {e}: ")).unwrap_or_default();
            match &f.message {
                Some(m) if f.native_differs => {
                    let _ = writeln!(out, "      {at}{}: the native renderer and handlebars differ", f.field);
                    let _ = writeln!(out, "        handlebars: {}", f.expected);
                    let _ = writeln!(out, "        native:     {}", f.actual);
                    let _ = writeln!(out, "        ({m})");
                }
                Some(m) if f.expected.is_null() => {
                    let _ = writeln!(out, "      {at}{}: {m}", f.field);
                }
                m => {
                    let _ = writeln!(out, "      {at}{}", f.field);
                    let _ = writeln!(out, "        expected: {}", f.expected);
                    let _ = writeln!(out, "        actual:   {}", f.actual);
                    if let Some(m) = m {
                        let _ = writeln!(out, "        ({m})");
                    }
                }
            }
        }
    }
    for (source, (cases, scenarios)) in per_source(reports) {
        let _ = writeln!(out, "source '{source}': {cases} case(s), {scenarios} scenario(s)");
    }
    let failed = reports.iter().filter(|r| !r.passed).count();
    let _ = writeln!(out, "{} passed, {failed} failed", reports.len() - failed);
    out
}

/// Per source, how many cases and scenarios ran.
pub fn per_source(reports: &[CaseReport]) -> BTreeMap<&str, (usize, usize)> {
    let mut counts: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for r in reports {
        let c = counts.entry(r.source.as_str()).or_default();
        if r.kind == "scenario" {
            c.1 += 1;
        } else {
            c.0 += 1;
        }
    }
    counts
}

mod scenario;

#[cfg(test)]
mod tests;
