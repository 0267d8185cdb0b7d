//! `[[scenario]]`: an ordered list of webhooks run through a source's real mappings and
//! pagerhook's collapse into [`Incidents`], the model of PagerDuty's incidents, and what
//! PagerDuty ends with compared with `expect_open` and `expect_pages`. A single payload's
//! fields cannot show what a sequence does: that a warning which turns critical stays a
//! warning (an incident keeps its first title and severity), that a resolve with another key
//! leaves the incident open, that a re-trigger after a resolve pages again.
//!
//! Each step is delivered before the next one arrives (a step's `at` only moves the time it is
//! accepted at). An event older than the `sequence` its lane applied is stale and never
//! reaches PagerDuty, as in the queue. Within one step, the events of one webhook are queued together, so a trigger
//! directly followed in its lane by another trigger is collapsed into it, as the queue's claim
//! does (`queue::lanes::lease_head`), and never reaches PagerDuty.

use super::{native_differences, notes, Case, CaseReport, Config, Failure, Produce, RawCase};
use crate::event::{Action, Event, Sequence, Verdict};
use crate::mapping::Renderer;
use crate::pagerduty_model::{Incident, Incidents};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One `[[scenario]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScenario {
    /// Shown in the report; unique among the file's scenarios.
    pub name: String,
    /// A `[[source]]` name from the config: every step goes through it.
    source: String,
    /// The webhooks, in the order they arrive.
    #[serde(default, rename = "step")]
    steps: Vec<RawStep>,
    /// How many incidents were opened: how many times someone was paged.
    expect_pages: Option<usize>,
    /// Every incident open at the end, oldest first (`[]`: none).
    expect_open: Option<Vec<RawOpen>>,
}

/// One `[[scenario.step]]`: a webhook, as a `[[case]]` gives it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    /// Payload file, relative to the test file.
    file: Option<PathBuf>,
    /// Payload inline.
    body: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    query: String,
    #[serde(default)]
    sns_message: bool,
    /// When it is accepted, after the scenario starts (`"5m"`): the events' default timestamp.
    at: Option<String>,
    /// How many events it must produce (collapsed ones included).
    expect_events: Option<usize>,
    /// One table per event it produces, in order: the fields that must match.
    #[serde(default)]
    expect: Vec<toml::Table>,
}

/// One incident `expect_open` lists: the fields given must match.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOpen {
    /// What PagerDuty shows as the incident's title: its first trigger's summary.
    title: Option<String>,
    severity: Option<String>,
    dedup_key: Option<String>,
    /// `triggered` or `acknowledged`.
    status: Option<String>,
    /// `default` or a `[pagerduty.routing_keys]` name.
    routing_key: Option<String>,
}

/// A scenario ready to run.
#[derive(Debug)]
pub struct Scenario {
    pub name: String,
    pub(super) source: String,
    steps: Vec<Case>,
    expect_pages: Option<usize>,
    expect_open: Option<Vec<RawOpen>>,
}

impl Scenario {
    pub(super) fn build(rs: RawScenario, base: &Path) -> Result<Scenario, (String, String)> {
        let fail = |m: String| (rs.name.clone(), m);
        if rs.steps.is_empty() {
            return Err(fail("no [[scenario.step]]: list the webhooks in the order they arrive".into()));
        }
        if rs.expect_pages.is_none() && rs.expect_open.is_none() {
            return Err(fail("say what PagerDuty must end with: expect_pages = N and/or expect_open = [...]".into()));
        }
        for open in rs.expect_open.iter().flatten() {
            if let Some(s) = open.status.as_deref().filter(|s| !["triggered", "acknowledged"].contains(s)) {
                return Err(fail(format!("expect_open: status {s:?} is neither \"triggered\" nor \"acknowledged\"")));
            }
        }
        let mut steps = Vec::new();
        for (i, st) in rs.steps.into_iter().enumerate() {
            let n = i + 1;
            let offset = match st.at.as_deref() {
                None => std::time::Duration::ZERO,
                Some(at) => humantime::parse_duration(at).map_err(|e| fail(format!("step {n}: at = {at:?}: {e}")))?,
            };
            let raw = RawCase {
                name: format!("step {n}"),
                source: rs.source.clone(),
                file: st.file,
                body: st.body,
                headers: st.headers,
                query: st.query,
                sns_message: st.sns_message,
                expect_events: st.expect_events,
                expect: st.expect,
                pair: None,
            };
            let mut case = Case::build(raw, base, false).map_err(|(c, m)| fail(format!("{c}: {m}")))?;
            case.offset = offset;
            steps.push(case);
        }
        Ok(Scenario {
            name: rs.name,
            source: rs.source,
            steps,
            expect_pages: rs.expect_pages,
            expect_open: rs.expect_open,
        })
    }

    /// Runs the steps in order into a fresh model of PagerDuty, then compares what it ends with.
    pub(super) fn run(&self, file: &str, cfg: &Config, produce: &Produce<'_>) -> CaseReport {
        let mut pd = Incidents::new();
        let mut applied = BTreeMap::new();
        let mut failures = Vec::new();
        let mut all_notes = Vec::new();
        for step in &self.steps {
            let out = produce(step, Renderer::Handlebars);
            let native = produce(step, Renderer::Native);
            let at = |mut f: Failure| {
                f.field = format!("{}: {}", step.name, f.field);
                f
            };
            failures.extend(native_differences(&out, &native, cfg, &self.source).into_iter().map(at));
            all_notes.extend(notes(&out).into_iter().filter(|n| !all_notes.contains(n)).collect::<Vec<_>>());
            let events = match out {
                Ok(events) => events,
                Err(f) => {
                    failures.push(at(*f));
                    continue;
                }
            };
            failures.extend(super::compare(step, &events, cfg).into_iter().map(at));
            let fresh: Vec<_> = events.into_iter().filter(|(_, e)| !stale(&mut applied, e)).collect();
            for e in delivered(&fresh) {
                pd.apply(e.routing_key().expose(), e.body());
            }
        }
        failures.extend(self.compare_end(&pd, cfg));
        CaseReport {
            file: file.to_string(),
            case: format!("scenario {}", self.name),
            kind: "scenario",
            source: self.source.clone(),
            passed: failures.is_empty(),
            failures,
            notes: all_notes,
        }
    }

    fn compare_end(&self, pd: &Incidents, cfg: &Config) -> Vec<Failure> {
        let mut failures = Vec::new();
        if let Some(want) = self.expect_pages.filter(|n| *n != pd.pages()) {
            failures.push(Failure {
                event: None,
                field: "pages".into(),
                expected: json!(want),
                actual: json!(pd.pages()),
                message: None,
                native_differs: false,
            });
        }
        let Some(expect) = &self.expect_open else { return failures };
        let shown: Vec<Value> = pd.open().iter().map(|i| self.shown(i, cfg)).collect();
        if expect.len() != shown.len() {
            let message = Some(format!("open at the end: {}", Value::Array(shown.clone())));
            failures.push(Failure {
                event: None,
                field: "open incidents".into(),
                expected: json!(expect.len()),
                actual: json!(shown.len()),
                message,
                native_differs: false,
            });
        }
        for (n, (want, got)) in expect.iter().zip(&shown).enumerate() {
            let fields = [
                ("title", &want.title),
                ("severity", &want.severity),
                ("dedup_key", &want.dedup_key),
                ("status", &want.status),
            ];
            for (field, want) in fields {
                if let Some(w) = want.as_ref().filter(|w| got[field] != json!(w)) {
                    failures.push(Failure::field(n + 1, &format!("open {field}"), json!(w), got[field].clone()));
                }
            }
            if let Some(w) = &want.routing_key {
                if !got["routing_key"].as_array().is_some_and(|names| names.contains(&json!(w))) {
                    let actual = got["routing_key"].clone();
                    failures.push(Failure::field(n + 1, "open routing_key", json!(w), actual));
                }
            }
        }
        failures
    }

    /// An incident as the report shows it: the routing key by its config names, never the key.
    fn shown(&self, i: &Incident, cfg: &Config) -> Value {
        let default = cfg.sources.iter().find(|s| s.name == self.source).and_then(|s| s.routing_key.as_ref());
        let default = default.or(cfg.pagerduty.routing_key.as_ref()).filter(|k| k.expose() == i.routing_key);
        let named = cfg.pagerduty.routing_keys.iter().filter(|(_, k)| k.expose() == i.routing_key);
        let names: Vec<&str> = default.map(|_| "default").into_iter().chain(named.map(|(n, _)| n.as_str())).collect();
        json!({
            "title": i.title,
            "severity": i.severity,
            "dedup_key": i.dedup_key,
            "status": i.status.as_str(),
            "routing_key": names,
        })
    }
}

/// Whether `e` is stale in its lane, as the queue judges it at the accept (`queue::lanes`):
/// older than the `sequence` its lane applied. A fresh one's value applies.
fn stale(applied: &mut BTreeMap<(String, String), Sequence>, e: &Event) -> bool {
    let (Some(sequence), Some(dk)) = (e.sequence(), e.dedup_key()) else { return false };
    let lane = (e.routing_key().expose().to_string(), dk.as_str().to_string());
    match sequence.verdict(applied.get(&lane).copied()) {
        Verdict::Stale => true,
        Verdict::Fresh | Verdict::OtherType => {
            applied.insert(lane, sequence);
            false
        }
    }
}

/// The events of one webhook that reach PagerDuty: a trigger directly followed in its lane by
/// another trigger of the same webhook is collapsed into it, as the queue does at the claim.
pub(super) fn delivered(events: &[(String, Event)]) -> Vec<&Event> {
    let lane = |e: &Event| e.dedup_key().map(|k| (e.routing_key().expose().to_string(), k.as_str().to_string()));
    let mut out = Vec::new();
    for (i, (_, e)) in events.iter().enumerate() {
        let next_in_lane = lane(e).and_then(|l| events[i + 1..].iter().find(|(_, n)| lane(n).as_ref() == Some(&l)));
        let collapsed = e.action() == Some(Action::Trigger)
            && next_in_lane.is_some_and(|(_, n)| n.action() == Some(Action::Trigger));
        if !collapsed {
            out.push(e);
        }
    }
    out
}
