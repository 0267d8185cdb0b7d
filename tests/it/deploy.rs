//! The fleet kit under `deploy/` against the code: every metric that an alert rule or a
//! dashboard panel reads exists in a running pagerhook's `/metrics`; Prometheus itself
//! (Debian's `prometheus`) scrapes a running pagerhook and evaluates the rules; the Kubernetes
//! configs pass `pagerhook check`; the Dockerfile builds from the lockfile as non-root.
//! deploy/check.sh runs the other tools (promtool, kubernetes-validate, systemd-analyze).
//!
//! Without a `prometheus` binary the Prometheus test says SKIPPED and passes, except under
//! `CI=true` (`.ci/run` installs it), where it fails.

use crate::helpers::fake_pagerduty::Reply;
use crate::helpers::{
    bearer_source, binary, fixture, github_signature, root, run_test_with, spawn_app_in, test_env, TestApp,
};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

const RULES: &str = "deploy/prometheus/pagerhook.rules.yml";
const DASHBOARD: &str = "deploy/grafana/pagerhook.json";

/// Labels Prometheus adds to every scraped series; not in `/metrics`.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

/// One series selector of a PromQL expression: `name{label op "value", ...}`.
#[derive(Debug)]
struct Selector {
    name: String,
    matchers: Vec<(String, String, String)>,
}

/// What a PromQL expression reads: its selectors and the labels of its `by`/`without` clauses.
/// A lexer, not a parser: enough for the names and labels, which is all that can drift.
#[derive(Debug, Default)]
struct Reads {
    selectors: Vec<Selector>,
    grouping: Vec<String>,
}

fn reads(expr: &str) -> Reads {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Reads::default();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i);
        } else if c == '[' {
            i += chars[i..].iter().position(|&c| c == ']').expect("unclosed [ in PromQL") + 1;
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = skip_space(&chars, i);
            let opens = chars.get(next).copied();
            if (word == "by" || word == "without") && opens == Some('(') {
                let (labels, end) = list_until(&chars, next + 1, ')');
                out.grouping.extend(labels);
                i = end;
            } else if opens != Some('(') {
                let (matchers, end) = if opens == Some('{') { matchers(&chars, next + 1) } else { (vec![], i) };
                out.selectors.push(Selector { name: word, matchers });
                i = end;
            }
        } else {
            i += 1;
        }
    }
    out.selectors.retain(|s| s.name.starts_with("pagerhook_") || s.name == "up");
    out
}

fn skip_space(chars: &[char], mut i: usize) -> usize {
    while chars.get(i).is_some_and(|c| c.is_whitespace()) {
        i += 1;
    }
    i
}

/// The index after the string literal opening at `i`.
fn skip_string(chars: &[char], i: usize) -> usize {
    let quote = chars[i];
    let mut j = i + 1;
    while j < chars.len() && chars[j] != quote {
        j += if chars[j] == '\\' { 2 } else { 1 };
    }
    j + 1
}

/// Comma-separated identifiers up to `close`; the index after it.
fn list_until(chars: &[char], from: usize, close: char) -> (Vec<String>, usize) {
    let end = from + chars[from..].iter().position(|&c| c == close).expect("unclosed label list");
    let text: String = chars[from..end].iter().collect();
    (text.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(), end + 1)
}

/// `label op "value"` items up to `}`; the index after it.
fn matchers(chars: &[char], mut i: usize) -> (Vec<(String, String, String)>, usize) {
    let mut out = Vec::new();
    loop {
        i = skip_space(chars, i);
        match chars.get(i) {
            Some('}') => return (out, i + 1),
            Some(',') => i += 1,
            Some(_) => {
                let start = i;
                while chars[i].is_ascii_alphanumeric() || chars[i] == '_' {
                    i += 1;
                }
                let label: String = chars[start..i].iter().collect();
                let op_start = skip_space(chars, i);
                let value_start = op_start + chars[op_start..].iter().position(|&c| c == '"').expect("matcher value");
                let op: String = chars[op_start..value_start].iter().collect::<String>().trim().to_string();
                let end = skip_string(chars, value_start);
                let value: String = chars[value_start + 1..end - 1].iter().collect();
                out.push((label, op, value));
                i = end;
            }
            None => panic!("unclosed {{ in PromQL"),
        }
    }
}

/// The `expr:` of every rule in the rules file: inline, or a `|` block. Any other YAML shape
/// fails here rather than being skipped.
fn rule_exprs(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let Some(at) = line.find("expr: ") else { continue };
        let value = line[at + "expr: ".len()..].trim();
        if value != "|" {
            assert!(
                !value.is_empty() && !value.starts_with(['>', '"', '\'']),
                "{RULES}:{}: write expr inline or as |",
                n + 1
            );
            out.push(value.to_string());
            continue;
        }
        let block: Vec<&str> =
            lines[n + 1..].iter().take_while(|l| indent(l) > at || l.trim().is_empty()).copied().collect();
        out.push(block.join("\n"));
    }
    let alerts = text.lines().filter(|l| l.trim_start().starts_with("- alert: ")).count();
    assert_eq!(out.len(), alerts, "one expr per alert in {RULES}");
    out
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Every PromQL query in the dashboard: panel targets and template variable queries.
fn dashboard_exprs(dashboard: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push(target["expr"].as_str().expect("every target has an expr").to_string());
        }
    }
    for var in dashboard["templating"]["list"].as_array().expect("templating") {
        if let Some(q) = var["query"]["query"].as_str() {
            out.push(q.replace("label_values(", "").replace(", job)", ""));
        }
    }
    out
}

/// Every sample of an OpenMetrics text: name → label → values seen.
type Scraped = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn scraped(text: &str) -> Scraped {
    let mut out = Scraped::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let name_end = line.find(['{', ' ']).expect("a sample line");
        let labels = out.entry(line[..name_end].to_string()).or_default();
        if line[name_end..].starts_with('{') {
            let chars: Vec<char> = line[name_end + 1..].chars().collect();
            for (label, _, value) in matchers(&chars, 0).0 {
                labels.entry(label).or_default().insert(value);
            }
        }
    }
    out
}

/// String literals of the code outside its tests: where a label value lives before anything
/// has produced it (`"abandoned"`, `"certificate_unavailable"`).
fn code_literals() -> String {
    fn walk(dir: &Path, out: &mut String) {
        for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
            let path = entry.path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if path.is_dir() && name != "tests" {
                walk(&path, out);
            } else if name.ends_with(".rs") && name != "tests.rs" {
                out.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut out = String::new();
    walk(&root().join("src"), &mut out);
    out
}

/// Why `expr` reads something `/metrics` does not have, if it does.
fn drift(expr: &str, metrics: &Scraped, code: &str) -> Vec<String> {
    let reads = reads(expr);
    let mut problems = Vec::new();
    let mut known: BTreeSet<&str> = TARGET_LABELS.into();
    for s in reads.selectors.iter().filter(|s| s.name != "up") {
        let Some(labels) = metrics.get(&s.name) else {
            problems.push(format!("no metric {} in /metrics", s.name));
            continue;
        };
        known.extend(labels.keys().map(String::as_str));
        for (label, op, value) in &s.matchers {
            if TARGET_LABELS.contains(&label.as_str()) {
                continue;
            }
            let Some(seen) = labels.get(label) else {
                problems.push(format!("{} has no label {label}", s.name));
                continue;
            };
            let values: Vec<&str> = if op.contains('~') { value.split('|').collect() } else { vec![value] };
            for v in values {
                let real = seen.contains(v)
                    || code.contains(&format!("\"{v}\""))
                    || (label == "status" && v.parse::<u16>().is_ok_and(|s| (100..600).contains(&s)));
                if !real {
                    problems.push(format!("{}{{{label}}} is never {v:?}: not in /metrics nor in src/", s.name));
                }
            }
        }
    }
    for label in &reads.grouping {
        if !known.contains(label.as_str()) {
            problems.push(format!("grouped by {label}, which none of its metrics has"));
        }
    }
    problems
}

/// A for_each mapping for the `many` source, to exceed its `max_events_per_request`.
const EACH: &str = r#"
[[rule]]
name = "each"
for_each = "body.alerts"
emit = "alert"
dedup_key = "{{item.id}}"
summary = "alert {{item.id}}"
source = "tests"
"#;

/// An app with the github source and a `many` source capped at one event per request.
async fn app_with_capped_source() -> TestApp {
    spawn_app_in(|text, dir| {
        std::fs::write(dir.join("each.toml"), EACH).unwrap();
        // The scrape test counts the events of its own webhooks: no own pages among them.
        let text = crate::helpers::without_own_pages(text);
        format!("{text}{}max_events_per_request = 1\n", bearer_source("many", &dir.join("each.toml")))
    })
    .await
}

/// Makes every metric family appear: accepted, refused and oversized webhooks, a dead letter
/// (PagerDuty answers 400 to the trigger and to its minimal retry) and a delivered event.
async fn exercise(app: &TestApp) {
    app.fake.script("/v2/enqueue", [Reply::status(400), Reply::status(400)]);
    let failing = fixture("github/deployment_status_failure.json");
    assert_eq!(app.github("deployment_status", "d-1", &failing).await.status, 202);
    // Another delivery, not a replay: a body seen before is a duplicate whatever its id.
    let again = [failing.as_slice(), b"\n"].concat();
    assert_eq!(app.github("deployment_status", "d-2", &again).await.status, 202);
    let forged_signature = github_signature("not the secret", b"{}");
    let forged = app
        .post_hook(
            "github",
            &[
                ("content-type", "application/json"),
                ("x-github-event", "push"),
                ("x-hub-signature-256", &forged_signature),
            ],
            "{}",
        )
        .await;
    assert_eq!(forged.status, 401);
    let two = json!({"alerts": [{"id": "a"}, {"id": "b"}]});
    assert_eq!(app.post_bearer("many", &two).await.json["status"], "too_many_events");
    app.fake.wait_for(3, Duration::from_secs(10)).await;
    crate::helpers::eventually("the dead letter is recorded", || async {
        let dead = app.admin_call(Method::GET, "/admin/dead").await.json;
        (dead.as_array().map_or(0, Vec::len) == 2).then_some(())
    })
    .await;
}

#[tokio::test]
async fn every_metric_the_alert_rules_and_the_dashboard_read_is_in_a_running_pagerhooks_metrics() {
    let app = app_with_capped_source().await;
    exercise(&app).await;
    let text = app.scrape().await;
    let metrics = scraped(&text);
    let code = code_literals();
    let rules = std::fs::read_to_string(root().join(RULES)).unwrap();
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(root().join(DASHBOARD)).unwrap()).unwrap();
    let exprs: Vec<(&str, String)> = rule_exprs(&rules)
        .into_iter()
        .map(|e| (RULES, e))
        .chain(dashboard_exprs(&dashboard).into_iter().map(|e| (DASHBOARD, e)))
        .collect();
    let mut problems = Vec::new();
    for (file, expr) in &exprs {
        assert!(!reads(expr).selectors.is_empty(), "{file}: reads no metric: {expr}");
        problems.extend(drift(expr, &metrics, &code).into_iter().map(|p| format!("{file}: {p}\n  in {expr}")));
    }
    assert!(problems.is_empty(), "{}\n\n/metrics:\n{text}", problems.join("\n"));
    // Every metric pagerhook exports is on the dashboard: a new one is not forgotten there.
    let shown: BTreeSet<String> = exprs.iter().flat_map(|(_, e)| reads(e).selectors).map(|s| s.name).collect();
    let families: BTreeSet<String> = metrics.keys().map(|n| family(n).to_string()).collect();
    let missing: Vec<_> = families.iter().filter(|f| !shown.iter().any(|s| family(s) == f.as_str())).collect();
    assert!(missing.is_empty(), "metrics on no panel and in no rule: {missing:?}: add a panel to {DASHBOARD}");
}

/// A histogram's series name without its suffix.
fn family(name: &str) -> &str {
    ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name)
}

#[test]
fn the_drift_check_catches_a_renamed_metric_a_missing_label_and_an_unknown_value() {
    let metrics = scraped("pagerhook_delivery_attempts_total{outcome=\"delivered\"} 1\n# EOF\n");
    let code = code_literals();
    let ok = r#"sum by (job, outcome) (rate(pagerhook_delivery_attempts_total{job=~"$job", outcome=~"delivered|abandoned"}[5m]))"#;
    assert_eq!(drift(ok, &metrics, &code), Vec::<String>::new());
    for (bad, why) in [
        ("rate(pagerhook_delivery_attempt_total[5m])", "no metric pagerhook_delivery_attempt_total"),
        (r#"pagerhook_delivery_attempts_total{state="x"}"#, "has no label state"),
        (r#"pagerhook_delivery_attempts_total{outcome="sent"}"#, "is never \"sent\""),
        ("sum by (source) (pagerhook_delivery_attempts_total)", "grouped by source"),
    ] {
        let found = drift(bad, &metrics, &code);
        assert!(found.iter().any(|p| p.contains(why)), "{bad}: {found:?}");
    }
}

#[test]
fn every_runbook_url_points_at_a_section_of_deploy_readme() {
    let rules = std::fs::read_to_string(root().join(RULES)).unwrap();
    let readme = std::fs::read_to_string(root().join("deploy/README.md")).unwrap();
    let anchors: BTreeSet<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|h| h.trim_start_matches('#').trim().to_lowercase().replace(' ', "-"))
        .map(|h| h.chars().filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_').collect())
        .collect();
    let urls: Vec<&str> = rules.lines().filter_map(|l| l.trim().strip_prefix("runbook_url: ")).collect();
    assert_eq!(urls.len(), rule_exprs(&rules).len(), "one runbook_url per alert");
    for url in urls {
        let anchor =
            url.strip_prefix("deploy/README.md#").unwrap_or_else(|| panic!("{url}: not into deploy/README.md"));
        assert!(anchors.contains(anchor), "{url}: deploy/README.md has no such heading");
    }
}

/// The ConfigMap's files as the pod sees them (one flat folder) pass `pagerhook check`, and
/// the mapping copied for kustomize is the shipped one.
#[test]
fn both_kubernetes_overlays_configs_pass_pagerhook_check_with_the_shipped_mapping() {
    let base = root().join("deploy/kubernetes/base/config");
    let copy = std::fs::read(base.join("github.toml")).unwrap();
    let shipped = std::fs::read(root().join("mappings/github.toml")).unwrap();
    assert!(
        copy == shipped,
        "deploy/kubernetes/base/config/github.toml differs from mappings/github.toml: copy it again"
    );
    for overlay in ["replicas", "single"] {
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(&base).unwrap().map(Result::unwrap) {
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
        let config = root().join("deploy/kubernetes/overlays").join(overlay).join("pagerhook.toml");
        std::fs::copy(&config, dir.path().join("pagerhook.toml")).unwrap();
        let out = binary(dir.path(), "check.log")
            .env("PAGERDUTY_ROUTING_KEY", &test_env()["PD_KEY"])
            .env("GITHUB_WEBHOOK_SECRET", "a secret")
            .env("PAGERHOOK_DATABASE_URL", "postgres://pagerhook:pw@db.example.com:5432/pagerhook?sslmode=verify-full&sslrootcert=/etc/pagerhook-db/ca.crt")
            .arg("check")
            .output()
            .unwrap();
        let log = std::fs::read_to_string(dir.path().join("check.log")).unwrap();
        let said = format!("{}{log}", String::from_utf8_lossy(&out.stdout));
        assert!(out.status.success() && said.contains("pagerhook.toml: OK"), "{overlay}: {said}");
    }
}

/// Debian's `prometheus` (or `$PROMETHEUS`), or why it cannot run here.
fn prometheus_binary() -> Result<PathBuf, String> {
    let path = PathBuf::from(std::env::var("PROMETHEUS").unwrap_or_else(|_| "/usr/bin/prometheus".into()));
    let runs = std::process::Command::new(&path).arg("--version").output();
    match runs {
        Ok(o) if o.status.success() => Ok(path),
        _ => Err(format!("no prometheus at {} (apt-get install prometheus)", path.display())),
    }
}

/// The binary, or `None` after saying SKIPPED (a failure under CI=true).
fn prometheus_or_skip(test: &str) -> Option<PathBuf> {
    match prometheus_binary() {
        Ok(path) => Some(path),
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but the Prometheus test cannot run: {why}")
        }
        Err(why) => {
            let note = format!("SKIPPED Prometheus test {test}: {why}\n");
            let _ = std::io::Write::write_all(&mut std::io::stderr(), note.as_bytes());
            None
        }
    }
}

/// A Prometheus of the test's own (config, data and port), killed when dropped, even by a
/// failing assertion.
struct Prometheus {
    child: std::process::Child,
    url: String,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Scrapes `target` (host:port) as job "pagerhook" every second, with the shipped rules
    /// evaluated every second; returns once it answers /-/ready.
    async fn start(binary: &Path, target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: [\"{}\"]\nscrape_configs:\n  - job_name: pagerhook\n    static_configs: [{{targets: [\"{target}\"]}}]\n",
            root().join(RULES).display()
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new(binary)
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .unwrap();
        let p = Prometheus { child, url: format!("http://127.0.0.1:{port}"), dir, http: reqwest::Client::new() };
        p.until("Prometheus is ready", |p| async move {
            let r = p.http.get(format!("{}/-/ready", p.url)).send().await.ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
        p
    }

    /// Polls `check` every 100 ms until it yields, failing after 60 s with Prometheus's log.
    async fn until<'a, T, F, Fut>(&'a self, what: &str, check: F) -> T
    where
        F: Fn(&'a Prometheus) -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(v) = check(self).await {
                return v;
            }
            let log = || std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default();
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting until {what}; prometheus.log:\n{}",
                log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET /api/v1/<path>`'s `data`.
    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Option<Value> {
        let r = self.http.get(format!("{}/api/v1/{path}", self.url)).query(query).send().await.ok()?;
        let body: Value = r.json().await.ok()?;
        (body["status"] == "success").then(|| body["data"].clone())
    }

    /// The single value of an instant query, if it has one.
    async fn value(&self, query: &str) -> Option<f64> {
        let data = self.api("query", &[("query", query)]).await?;
        data["result"].as_array()?.first()?["value"][1].as_str()?.parse().ok()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_a_running_pagerhook_counts_its_webhooks_and_evaluates_the_rules() {
    let Some(binary) =
        prometheus_or_skip("prometheus_scrapes_a_running_pagerhook_counts_its_webhooks_and_evaluates_the_rules")
    else {
        return;
    };
    let app = app_with_capped_source().await;
    let target = app.admin.trim_start_matches("http://").to_string();
    let prometheus = Prometheus::start(&binary, &target).await;
    prometheus
        .until("the first scrape", |p| async move { (p.value(r#"up{job="pagerhook"}"#).await? == 1.0).then_some(()) })
        .await;

    exercise(&app).await;
    let counted = |query: &'static str, want: f64| {
        let p = &prometheus;
        async move { p.until(query, |p| async move { (p.value(query).await? == want).then_some(()) }).await }
    };
    counted(r#"sum(pagerhook_webhook_requests_total{job="pagerhook", source="github", status="202"})"#, 2.0).await;
    counted(r#"sum(pagerhook_webhook_rejected_total{job="pagerhook", reason="signature_mismatch"})"#, 1.0).await;
    counted(r#"sum(pagerhook_delivery_attempts_total{job="pagerhook", outcome="delivered"})"#, 1.0).await;
    counted(r#"sum(pagerhook_upstream_seconds_count{job="pagerhook"})"#, 2.0).await;

    // The rules as Prometheus runs them: every one evaluates without error, and the new dead
    // letter and the oversized webhook fire.
    prometheus
        .until("every rule evaluated without error", |p| async move {
            let groups = p.api("rules", &[]).await?;
            let rules: Vec<Value> = groups["groups"]
                .as_array()?
                .iter()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            let broken: Vec<_> = rules.iter().filter(|r| r["health"] == "err").collect();
            assert!(broken.is_empty(), "rules Prometheus cannot evaluate: {broken:#?}");
            (rules.len() == rule_exprs(&std::fs::read_to_string(root().join(RULES)).unwrap()).len()
                && rules.iter().all(|r| r["health"] == "ok"))
            .then_some(())
        })
        .await;
    for alert in ["PagerhookDeadLettersGrowing", "PagerhookTooManyEvents"] {
        prometheus
            .until(&format!("{alert} fires"), |p| async move {
                let alerts = p.api("alerts", &[]).await?;
                let firing = alerts["alerts"].as_array()?.iter().any(|a| {
                    a["labels"]["alertname"] == alert && a["state"] == "firing" && a["labels"]["job"] == "pagerhook"
                });
                firing.then_some(())
            })
            .await;
    }
}

const SCRAPE_TEST: &str = "deploy::prometheus_scrapes_a_running_pagerhook_counts_its_webhooks_and_evaluates_the_rules";

#[test]
fn without_prometheus_the_scrape_test_skips_visibly_but_fails_under_ci() {
    let (passed, out) = run_test_with(SCRAPE_TEST, ("PROMETHEUS", Some("/nonexistent/prometheus")), None);
    assert!(passed && out.contains("SKIPPED Prometheus test"), "{out}");
    let (passed, out) = run_test_with(SCRAPE_TEST, ("PROMETHEUS", Some("/nonexistent/prometheus")), Some("true"));
    assert!(!passed && out.contains("CI=true but the Prometheus test cannot run"), "{out}");
}

/// One Dockerfile instruction: its keyword (upper case) and arguments, continuations joined.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

/// The instructions of each build stage, in order.
fn dockerfile_stages(text: &str) -> Vec<Vec<Instruction>> {
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    let mut pending = String::new();
    for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#') && !l.is_empty()) {
        pending.push_str(line.trim_end_matches('\\'));
        pending.push(' ');
        if line.ends_with('\\') {
            continue;
        }
        let (keyword, args) = pending.trim().split_once(' ').unwrap_or((pending.trim(), ""));
        let i = Instruction { keyword: keyword.to_uppercase(), args: args.trim().to_string() };
        if i.keyword == "FROM" {
            stages.push(Vec::new());
        }
        stages.last_mut().expect("the Dockerfile starts with FROM").push(i);
        pending.clear();
    }
    stages
}

/// The port of a `host:port` listen address in the shipped pagerhook.toml's `[server]`.
fn shipped_port(key: &str) -> String {
    let config: toml::Value = std::fs::read_to_string(root().join("pagerhook.toml")).unwrap().parse().unwrap();
    config["server"][key].as_str().unwrap().rsplit_once(':').unwrap().1.to_string()
}

/// No Docker engine runs where the tests do, so the Dockerfile is read instead of built: the
/// release binary from the lockfile, a non-root user, both listeners exposed, a source label.
#[test]
fn the_dockerfile_builds_from_the_lockfile_runs_as_non_root_exposes_both_ports_and_names_its_source() {
    let stages = dockerfile_stages(&std::fs::read_to_string(root().join("Dockerfile")).unwrap());
    let (build, runtime) = (&stages[0], stages.last().unwrap());
    for stage in &stages {
        let from = &stage[0].args;
        assert!(from.contains(':') && !from.contains(":latest"), "FROM {from}: pin a tag");
    }
    let copies_lock = build.iter().position(|i| i.keyword == "COPY" && i.args.contains("Cargo.lock"));
    let builds = build.iter().position(|i| i.keyword == "RUN" && i.args.contains("cargo build --release --locked"));
    assert!(
        matches!((copies_lock, builds), (Some(c), Some(b)) if c < b),
        "the build stage copies Cargo.lock, then runs cargo build --release --locked"
    );
    assert!(
        runtime.iter().any(|i| i.keyword == "COPY"
            && i.args.contains("--from=build")
            && i.args.contains("target/release/pagerhook")),
        "the image runs the binary built from the lockfile"
    );
    let user = runtime.iter().rev().find(|i| i.keyword == "USER").expect("the runtime stage sets USER");
    let uid = user.args.split(':').next().unwrap();
    assert!(
        uid.parse::<u32>().is_ok_and(|n| n != 0),
        "USER {}: a non-root user by number (runAsNonRoot checks numbers)",
        user.args
    );
    let exposed: BTreeSet<&str> =
        runtime.iter().filter(|i| i.keyword == "EXPOSE").flat_map(|i| i.args.split_whitespace()).collect();
    for key in ["listen", "admin_listen"] {
        let port = shipped_port(key);
        assert!(exposed.contains(port.as_str()), "EXPOSE lacks server.{key}'s port {port}: {exposed:?}");
    }
    let labels: String = runtime.iter().filter(|i| i.keyword == "LABEL").map(|i| i.args.as_str()).collect();
    let source = labels.split_whitespace().find_map(|kv| kv.strip_prefix("org.opencontainers.image.source="));
    assert_eq!(source, Some("\"${SOURCE}\""), "a source label from the SOURCE build arg: {labels}");
    assert!(
        runtime.iter().any(|i| i.keyword == "ARG" && i.args.starts_with("SOURCE")),
        "ARG SOURCE in the runtime stage"
    );
    let readme = std::fs::read_to_string(root().join("deploy/README.md")).unwrap();
    assert!(readme.contains("--build-arg SOURCE="), "deploy/README.md's docker build passes SOURCE");
    let ignored = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    for kept_out in ["target", "data", ".git"] {
        assert!(
            ignored.lines().any(|l| l.trim() == kept_out),
            ".dockerignore keeps {kept_out} out of the build context"
        );
    }
}

/// Dependencies build in a layer of their own, before the sources are copied: a change to
/// `src/` must not rebuild every crate of the lockfile.
#[test]
fn the_dockerfile_builds_dependencies_before_it_copies_the_sources() {
    let stages = dockerfile_stages(&std::fs::read_to_string(root().join("Dockerfile")).unwrap());
    let build = &stages[0];
    let copies_src = build.iter().position(|i| i.keyword == "COPY" && i.args.split_whitespace().any(|a| a == "src"));
    let builds_deps =
        build.iter().position(|i| i.keyword == "RUN" && i.args.contains("cargo build --release --locked"));
    assert!(
        matches!((builds_deps, copies_src), (Some(d), Some(c)) if d < c),
        "a RUN cargo build --release --locked on placeholder sources comes before COPY src"
    );
}

/// README's `docker run` works as written for the shipped config: every `env:` secret of it
/// (the commented admin token included) has its `-e`, the admin port is published on the
/// host's loopback with the `admin_listen` that makes it reachable, and the volume's owner is
/// named.
#[test]
fn readme_docker_run_passes_every_secret_and_says_how_to_reach_the_admin_port() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let section = readme.split_once("## Run it in a container").unwrap().1.split("\n## ").next().unwrap();
    let run = section.split_once("docker run").unwrap().1.split("```").next().unwrap();
    let config = std::fs::read_to_string(root().join("pagerhook.toml")).unwrap();
    // The secrets of the lines in force, and of the admin token README says to uncomment.
    let in_force = config.lines().filter(|l| !l.trim_start().starts_with('#') || l.starts_with("# admin_token ="));
    let vars: BTreeSet<&str> =
        in_force.flat_map(|l| l.split("\"env:").skip(1).map(|rest| rest.split('"').next().unwrap())).collect();
    assert!(vars.contains("PAGERDUTY_ROUTING_KEY") && vars.contains("PAGERHOOK_ADMIN_TOKEN"), "{vars:?}");
    for var in vars {
        assert!(run.contains(&format!("-e {var}=")), "README's docker run lacks -e {var}=...:\n{run}");
    }
    assert!(run.contains("-p 127.0.0.1:8081:8081"), "{run}");
    assert!(section.contains("admin_listen = \"0.0.0.0:8081\""), "{section}");
    assert!(section.contains("65532:65532"), "README says how to give a host folder to the image's user");
}

/// What Grafana needs to import the dashboard as meant: unique panel ids, panels inside the
/// 24-column grid without overlapping, every query on the `datasource` variable.
#[test]
fn the_dashboards_panels_have_unique_ids_fit_the_grid_without_overlap_and_query_the_chosen_datasource() {
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(root().join(DASHBOARD)).unwrap()).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    let ids: BTreeSet<u64> = panels.iter().map(|p| p["id"].as_u64().expect("a numeric id")).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    let boxes: Vec<[u64; 4]> = panels
        .iter()
        .map(|p| ["x", "y", "w", "h"].map(|k| p["gridPos"][k].as_u64().expect("gridPos x, y, w, h")))
        .collect();
    for (i, [x, y, w, h]) in boxes.iter().enumerate() {
        assert!(x + w <= 24, "panel {i} is wider than the grid");
        for [x2, y2, w2, h2] in &boxes[i + 1..] {
            let apart = x + w <= *x2 || x2 + w2 <= *x || y + h <= *y2 || y2 + h2 <= *y;
            assert!(apart, "panel {i} overlaps another");
        }
    }
    let variable = json!({"type": "prometheus", "uid": "${datasource}"});
    for p in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(p["datasource"], variable, "{}", p["title"]);
        assert!(p["targets"]
            .as_array()
            .is_some_and(|t| !t.is_empty() && t.iter().all(|t| t["datasource"] == variable)));
    }
    let names: Vec<&str> =
        dashboard["templating"]["list"].as_array().unwrap().iter().filter_map(|v| v["name"].as_str()).collect();
    assert_eq!(names, ["datasource", "job"]);
}
