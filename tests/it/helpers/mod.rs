//! `spawn_app()` and friends: the production wiring with test settings.

pub mod fake_pagerduty;
mod pg_schema;
pub mod sns_kit;

pub use pg_schema::PgSchema;

use fake_pagerduty::FakePagerDuty;
use hmac::{Hmac, Mac};
use pagerhook::app::{App, Options};
use pagerhook::config::Config;
use pagerhook::source::{AwsFetch, AwsUrl, FetchError};
use serde_json::Value;
use sha2::Sha256;
use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

pub const INTEGRATION_KEY: &str = "0123456789abcdef0123456789abcdef";
pub const GITHUB_SECRET: &str = "It's a Secret to Everybody";
pub const OLD_GITHUB_SECRET: &str = "the previous secret";
/// Secrets of the generic sources in `tests/it/generic.rs`.
pub const AM_SECRET: &str = "alertmanager shared secret";
pub const OLD_AM_SECRET: &str = "alertmanager previous secret";
pub const STANDARD_WEBHOOKS_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// Secrets of the sources that use the other shipped mappings (`tests/it/mappings.rs`).
pub const GRAFANA_BASIC: &str = "grafana:grafana basic password";
pub const GITLAB_TOKEN: &str = "gitlab secret token";
pub const SENTRY_SECRET: &str = "sentry client secret";
pub const DATADOG_TOKEN: &str = "datadog bearer token";
pub const EXAMPLE_TOKEN: &str = "backup job bearer token";

/// Repository root (for shipped mappings and fixtures).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shipped mapping files under `root`: the ones `mappings/test-sources.toml` names. A
/// user's own files in `mappings/` (as README's quick start suggests) are not among them, so
/// the project's tests never read them.
pub fn shipped_mappings(root: &Path) -> Vec<PathBuf> {
    let dir = root.join("mappings");
    let text = std::fs::read_to_string(dir.join("test-sources.toml")).unwrap();
    let config: toml::Value = toml::from_str(&text).unwrap();
    let named = config["source"].as_array().unwrap().iter().flat_map(|s| s["mappings"].as_array().unwrap().iter());
    named.map(|m| dir.join(m.as_str().unwrap())).collect()
}

/// A temp checkout whose `mappings/` holds `test-sources.toml`, the shipped mappings and the
/// test file next to each one, and nothing else, beside a link to the shipped `fixtures/`
/// (test files name payloads as `../fixtures/...`): `pagerhook test` there sees no user file.
pub fn copy_shipped_mappings(root: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (from, to) = (root.join("mappings"), dir.path().join("mappings"));
    std::fs::create_dir(&to).unwrap();
    std::os::unix::fs::symlink(root.join("fixtures"), dir.path().join("fixtures")).unwrap();
    std::fs::copy(from.join("test-sources.toml"), to.join("test-sources.toml")).unwrap();
    for mapping in shipped_mappings(root) {
        let test = mapping.with_extension("test.toml");
        for file in [mapping, test].iter().filter(|f| f.exists()) {
            std::fs::copy(file, to.join(file.file_name().unwrap())).unwrap();
        }
    }
    dir
}

/// A fixture's bytes.
pub fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(root().join("fixtures").join(path)).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

static TRACING: Once = Once::new();

/// Logs go to the test output only with `TEST_LOG=1`.
pub fn init_tracing() {
    TRACING.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt().with_env_filter("info").with_test_writer().try_init();
        }
    });
}

/// `X-Hub-Signature-256` value for a body.
pub fn github_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The base config the tests start from: shipped GitHub mapping, fake PagerDuty, temp db.
pub fn base_config(dir: &Path, events_url: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
max_body_bytes = 65536
admin_token = "env:ADMIN_TOKEN"

[storage]
path = "{db}"

[pagerduty]
events_url = "{events_url}"
routing_key = "env:PD_KEY"
timeout = "2s"

[delivery]
initial_backoff = "50ms"
max_backoff = "200ms"
# Tests count what reaches the fake PagerDuty: with supersede on (the default), a resolve
# that finds its trigger still queued takes both out, and whether it does is a race between
# the test's next request and the worker's claim. The store's contract suite covers it.
supersede = false

[[source]]
name = "github"
kind = "github"
secrets = ["env:GH_SECRET", "env:GH_OLD_SECRET"]
mappings = ["{mapping}"]
"#,
        db = dir.join("pagerhook.db").display(),
        mapping = root().join("mappings/github.toml").display(),
    )
}

/// A `kind = "generic"` `[[source]]` named `name` on the shipped `mappings/<name>.toml`, to
/// append to [`base_config`]; `verify` is the inline table as README.md documents it.
pub fn shipped_generic_source(name: &str, verify: &str) -> String {
    generic_source(name, verify, &root().join("mappings").join(format!("{name}.toml")))
}

/// A `kind = "generic"` `[[source]]` named `name`, verified by the inline table `verify`,
/// mapped by the file `mapping`.
pub fn generic_source(name: &str, verify: &str, mapping: &Path) -> String {
    format!(
        "\n[[source]]\nname = \"{name}\"\nkind = \"generic\"\nverify = {verify}\nmappings = [\"{}\"]\n",
        mapping.display()
    )
}

/// The `verify` of the Alertmanager source as README.md configures it.
pub const ALERTMANAGER_VERIFY: &str = r#"{ scheme = "bearer", secrets = ["env:AM_SECRET"] }"#;

/// A `[[source]]` named `aws` of kind sns: the shipped CloudWatch mapping, the test topic, and
/// the kit's certificate pinned at its SigningCertURL (written to `dir`). `extra` adds keys.
pub fn sns_source(dir: &Path, extra: &str) -> String {
    std::fs::write(dir.join("sns-test.pem"), &sns_kit::signer().cert_pem).unwrap();
    let (topic, url) = (sns_kit::TOPIC, sns_kit::CERT_URL);
    sns_source_with(&format!(
        "topics = [\"{topic}\"]\ntrusted_certs = {{ \"{url}\" = \"file:sns-test.pem\" }}\n{extra}"
    ))
}

/// A `[[source]]` named `aws` of kind sns with the shipped CloudWatch mapping and `keys`.
fn sns_source_with(keys: &str) -> String {
    let mapping = root().join("mappings/cloudwatch.toml");
    format!("\n[[source]]\nname = \"aws\"\nkind = \"sns\"\nmappings = [\"{}\"]\n{keys}\n", mapping.display())
}

/// The injected environment of every test app.
pub fn test_env() -> HashMap<String, String> {
    HashMap::from([
        ("PD_KEY".to_string(), INTEGRATION_KEY.to_string()),
        ("GH_SECRET".to_string(), GITHUB_SECRET.to_string()),
        ("GH_OLD_SECRET".to_string(), OLD_GITHUB_SECRET.to_string()),
        ("ADMIN_TOKEN".to_string(), "admin-token".to_string()),
        ("AM_SECRET".to_string(), AM_SECRET.to_string()),
        ("AM_OLD_SECRET".to_string(), OLD_AM_SECRET.to_string()),
        ("SW_SECRET".to_string(), STANDARD_WEBHOOKS_SECRET.to_string()),
        ("HOOK_TOKEN".to_string(), HOOK_TOKEN.to_string()),
        ("TEAM_A_KEY".to_string(), TEAM_A_KEY.to_string()),
        ("GRAFANA_BASIC".to_string(), GRAFANA_BASIC.to_string()),
        ("GITLAB_TOKEN".to_string(), GITLAB_TOKEN.to_string()),
        ("SENTRY_SECRET".to_string(), SENTRY_SECRET.to_string()),
        ("DATADOG_TOKEN".to_string(), DATADOG_TOKEN.to_string()),
        ("EXAMPLE_TOKEN".to_string(), EXAMPLE_TOKEN.to_string()),
    ])
}

/// A second integration key, named `team-a` where a test configures it.
pub const TEAM_A_KEY: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// Bearer token of the `[[source]]` that [`bearer_source`] adds.
pub const HOOK_TOKEN: &str = "hook-token";

/// A mapping for [`bearer_source`]s: `{"n": 1, "action": "trigger"}` → an alert on dedup_key `n-1`.
pub const NUMBERED: &str = r#"
[[rule]]
name = "numbered"
emit = "alert"
action = "{{body.action}}"
dedup_key = "n-{{body.n}}"
summary = "event {{body.n}}"
source = "pagerhook-tests"
"#;

/// A `kind = "generic"` source named `name` with bearer auth ([`HOOK_TOKEN`]) and one mapping file.
pub fn bearer_source(name: &str, mapping: &Path) -> String {
    generic_source(name, r#"{ scheme = "bearer", secrets = ["env:HOOK_TOKEN"] }"#, mapping)
}

/// Writes `text` as `<dir>/pagerhook.toml` with its listeners on two ports free right now
/// (the binary binds them a moment later); returns the webhook and admin base URLs.
pub fn write_binary_config(dir: &Path, text: &str) -> (String, String) {
    let (a, b) = (TcpListener::bind("127.0.0.1:0").unwrap(), TcpListener::bind("127.0.0.1:0").unwrap());
    let (port, admin) = (a.local_addr().unwrap().port(), b.local_addr().unwrap().port());
    let text = text
        .replace("\nlisten = \"127.0.0.1:0\"", &format!("\nlisten = \"127.0.0.1:{port}\""))
        .replace("admin_listen = \"127.0.0.1:0\"", &format!("admin_listen = \"127.0.0.1:{admin}\""));
    std::fs::write(dir.join("pagerhook.toml"), text).unwrap();
    (format!("http://127.0.0.1:{port}"), format!("http://127.0.0.1:{admin}"))
}

/// Starts `pagerhook serve` on `<dir>/pagerhook.toml`, logging to `<dir>/<log>`, and waits
/// until `admin`'s `/readyz` answers 200.
pub async fn serve_binary(dir: &Path, admin: &str, log: &str) -> std::process::Child {
    let mut child = binary(dir, log).arg("serve").spawn().unwrap();
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Ok(r) = http.get(format!("{admin}/readyz")).send().await {
            if r.status() == 200 {
                return child;
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("pagerhook exited with {status}: {}", std::fs::read_to_string(dir.join(log)).unwrap());
        }
        assert!(tokio::time::Instant::now() < deadline, "pagerhook did not become ready");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Sends `signal` (e.g. `HUP`, `TERM`) to a child process.
pub fn signal(child: &std::process::Child, signal: &str) {
    let ok = std::process::Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status();
    assert!(ok.unwrap().success(), "kill -{signal} failed");
}

/// The `pagerhook` binary with the test environment, its logs going to `dir/<log>`.
pub fn binary(dir: &Path, log: &str) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_pagerhook"));
    c.envs(test_env())
        .env_remove("PAGERHOOK_CONFIG")
        .env("RUST_LOG", "info")
        .arg("--config")
        .arg(dir.join("pagerhook.toml"))
        .arg("--log-format")
        .arg("json")
        .stdin(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join(log)).unwrap());
    c
}

/// A running app and its fake PagerDuty.
pub struct TestApp {
    pub app: Option<App>,
    pub fake: FakePagerDuty,
    pub base: String,
    pub admin: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
}

/// A response, read fully.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub json: Value,
}

/// Parses `text` as config for `dir` with the test environment.
pub fn config_from(text: &str, dir: &Path) -> Config {
    let env = test_env();
    Config::from_str(text, &dir.join("pagerhook.toml"), &move |k| env.get(k).cloned()).unwrap_or_else(|e| panic!("{e}"))
}

/// `text` with pagerhook's own pages off: for tests that count exactly the events of their
/// own webhooks while they make dead letters (`own_pages.rs` tests the pages themselves).
pub fn without_own_pages(text: String) -> String {
    text.replace("[pagerduty]\n", "[pagerduty]\nown_pages = false\n")
}

/// Starts the app on the base config.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|c| c).await
}

/// Starts the app on the base config after `edit` changed its text.
pub async fn spawn_app_with(edit: impl FnOnce(String) -> String) -> TestApp {
    spawn(|text, _| edit(text), None).await
}

/// Like [`spawn_app_with`], `edit` also getting the data directory (for mapping files); the
/// final config is written to `<dir>/pagerhook.toml` too, for the CLI ([`binary`]).
pub async fn spawn_app_in(edit: impl FnOnce(String, &Path) -> String) -> TestApp {
    spawn(edit, None).await
}

/// Starts the app with an sns source (see [`sns_source`]) whose calls to AWS go to `aws`.
pub async fn spawn_sns_app(extra: &str, aws: Arc<sns_kit::FakeAws>) -> TestApp {
    spawn(|text, dir| text + &sns_source(dir, extra), Some(aws)).await
}

/// Starts the app with an sns source named `aws` configured by `keys` alone, for AWS's own
/// sample messages: they are years old, so `storage.retention` (the oldest Timestamp
/// accepted) is set to decades.
pub async fn spawn_sns_app_with_keys(keys: &str, aws: Arc<sns_kit::FakeAws>) -> TestApp {
    let old_samples = |text: String| text.replace("[storage]\n", "[storage]\nretention = \"30years\"\n");
    spawn(|text, _| old_samples(text) + &sns_source_with(keys), Some(aws)).await
}

async fn spawn(edit: impl FnOnce(String, &Path) -> String, aws: Option<Arc<dyn AwsFetch>>) -> TestApp {
    init_tracing();
    let fake = FakePagerDuty::start().await;
    let dir = tempfile::tempdir().unwrap();
    let text = edit(base_config(dir.path(), &fake.url), dir.path());
    std::fs::write(dir.path().join("pagerhook.toml"), &text).unwrap();
    let cfg = config_from(&text, dir.path());
    start_with(cfg, fake, dir, aws).await
}

/// Options with the test environment, so that reloads see the same secrets.
pub fn test_options() -> Options {
    let env = test_env();
    Options { env: std::sync::Arc::new(move |k| env.get(k).cloned()), ..Options::default() }
}

/// Starts an app on a config (used again after a restart).
pub async fn start(cfg: Config, fake: FakePagerDuty, dir: tempfile::TempDir) -> TestApp {
    start_with(cfg, fake, dir, None).await
}

async fn start_with(
    cfg: Config,
    fake: FakePagerDuty,
    dir: tempfile::TempDir,
    aws: Option<Arc<dyn AwsFetch>>,
) -> TestApp {
    let hooks = TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").unwrap();
    let app = match aws {
        Some(aws) => App::start_with_aws(cfg, test_options(), hooks, admin, aws).await,
        None => App::start_on(cfg, test_options(), hooks, admin).await,
    }
    .expect("app starts");
    TestApp {
        base: format!("http://127.0.0.1:{}", app.port()),
        admin: format!("http://127.0.0.1:{}", app.admin_port()),
        app: Some(app),
        fake,
        http: reqwest::Client::new(),
        dir,
    }
}

/// The value of the sample named exactly `series` (name, and labels if it has any) in
/// `/metrics` text ([`TestApp::scrape`]), if present.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

impl TestApp {
    /// The `/metrics` text (which answers 200, token or not).
    pub async fn scrape(&self) -> String {
        let res = self.http.get(format!("{}/metrics", self.admin)).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 200);
        res.text().await.unwrap()
    }

    /// POSTs raw bytes with headers to `/hooks/{source}`.
    pub async fn post_hook(&self, source: &str, headers: &[(&str, &str)], body: impl Into<reqwest::Body>) -> Answer {
        let mut req = self.http.post(format!("{}/hooks/{source}", self.base)).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        Answer { status, json: serde_json::from_str(&text).unwrap_or(Value::String(text)) }
    }

    /// POSTs JSON to a [`bearer_source`].
    pub async fn post_bearer(&self, source: &str, body: &Value) -> Answer {
        let auth = format!("Bearer {HOOK_TOKEN}");
        self.post_hook(source, &[("content-type", "application/json"), ("authorization", &auth)], body.to_string())
            .await
    }

    /// GET or POST on the admin listener with the admin token; the JSON answer.
    pub async fn admin_call(&self, method: reqwest::Method, path: &str) -> Answer {
        let res = self
            .http
            .request(method, format!("{}{path}", self.admin))
            .bearer_auth("admin-token")
            .send()
            .await
            .expect("admin request sent");
        let status = res.status().as_u16();
        Answer { status, json: res.json().await.unwrap_or(Value::Null) }
    }

    /// Posts an SNS message the way SNS does: text/plain, with its type in a header.
    pub async fn sns(&self, msg: &Value) -> Answer {
        let kind = msg["Type"].as_str().unwrap_or_default();
        let headers = [("content-type", "text/plain; charset=UTF-8"), ("x-amz-sns-message-type", kind)];
        self.post_hook("aws", &headers, serde_json::to_vec(msg).unwrap()).await
    }

    /// Sends a correctly signed GitHub delivery.
    pub async fn github(&self, event: &str, delivery: &str, body: &[u8]) -> Answer {
        let sig = github_signature(GITHUB_SECRET, body);
        self.post_hook(
            "github",
            &[
                ("content-type", "application/json"),
                ("x-github-event", event),
                ("x-github-delivery", delivery),
                ("x-hub-signature-256", &sig),
            ],
            body.to_vec(),
        )
        .await
    }

    /// After a sentinel request that produced `n` events: proves those are the only events
    /// PagerDuty received and the queue holds, so every earlier request changed nothing.
    pub async fn assert_only_sentinel_events(&self, n: usize) {
        let got = self.fake.wait_for(n, std::time::Duration::from_secs(10)).await;
        assert_eq!(got.len(), n, "only the sentinel reached PagerDuty: {got:#?}");
        let recent = self.app.as_ref().unwrap().queue().recent(100).await.unwrap();
        assert_eq!(recent.len(), n, "only the sentinel's events are queued: {recent:#?}");
    }

    /// Stops the app gracefully, keeping the data directory and the fake.
    pub async fn stop(mut self) -> (FakePagerDuty, tempfile::TempDir) {
        if let Some(app) = self.app.take() {
            app.stop().await;
        }
        (self.fake, self.dir)
    }
}

/// Polls `check` until it yields a value, failing the test after 10 s. For state that has no
/// notification to wait on (rows in the queue); the fake PagerDuty has `wait_for` instead.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Runs one test of this binary alone in a child process, with the variable `var` set to the
/// value given (or removed for `None`) and `CI` as given: its exit status and output. For the
/// tests that must say SKIPPED without a service, and fail instead under `CI=true`.
pub fn run_test_with(test: &str, var: (&str, Option<&str>), ci: Option<&str>) -> (bool, String) {
    let mut c = std::process::Command::new(std::env::current_exe().unwrap());
    c.args([test, "--exact"]).env_remove("CI");
    for (name, value) in [var, ("CI", ci)] {
        match value {
            Some(v) => c.env(name, v),
            None => c.env_remove(name),
        };
    }
    let out = c.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}
