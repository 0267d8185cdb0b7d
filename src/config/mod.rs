//! Configuration: `raw` (what the file says) is validated into [`Config`] (what the program uses).
//!
//! Validation is pure apart from reading secret files: the environment is injected, so tests
//! never touch the process environment, and every problem is reported, not just the first.

pub mod raw;
mod secret;
mod sns;
mod verify;

pub use secret::{Secret, SecretRef};
pub use sns::TopicFilter;
pub use verify::{standard_webhooks_key, HmacAlgorithm, SignatureEncoding, VerifyScheme, VERIFY_SCHEMES};

use crate::event::RoutingKey;
use raw::{RawConfig, RawSource};
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a config cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: invalid configuration:\n  - {}", .errors.join("\n  - "))]
    Invalid { path: PathBuf, errors: Vec<String> },
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from; relative paths in it resolve against its folder.
    pub path: PathBuf,
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub pagerduty: PagerDutyConfig,
    pub delivery: DeliveryConfig,
    pub sources: Vec<SourceConfig>,
    /// Things that work but deserve a second look (`pagerhook check` prints them).
    pub warnings: Vec<String>,
}

/// `[server]`, validated.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub max_body_bytes: usize,
    pub admin_token: Option<Secret>,
}

/// Where the queue lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageBackend {
    /// Embedded SQLite file (the default).
    Sqlite { path: PathBuf },
    /// A PostgreSQL database shared by several replicas; the URL carries a password.
    Postgres { url: Secret },
}

/// How hard a commit tries to reach the disk before the 2xx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync on every commit: survives power loss.
    Fsync,
    /// WAL without fsync per commit: survives a process crash, not a power loss.
    Process,
}

/// `[storage]`, validated.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub backend: StorageBackend,
    pub durability: Durability,
    pub retention: Duration,
}

/// `[pagerduty]`, validated.
#[derive(Debug, Clone)]
pub struct PagerDutyConfig {
    /// Base URL without trailing slash; `/v2/enqueue` is appended.
    pub events_url: String,
    pub routing_key: Option<RoutingKey>,
    pub routing_keys: BTreeMap<String, RoutingKey>,
    pub timeout: Duration,
}

/// `[delivery]`, validated.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub concurrency: usize,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub max_age: Duration,
    pub per_key_rate: u32,
    pub per_key_burst: u32,
    /// How long a claimed event stays reserved for the process sending it.
    pub lease: Duration,
}

/// One `[[source]]`, validated.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub name: String,
    pub kind: SourceKindConfig,
    /// Mapping files, resolved against the config file's folder.
    pub mappings: Vec<PathBuf>,
    /// This source's routing key, else the `[pagerduty]` default.
    pub routing_key: Option<RoutingKey>,
    pub max_events_per_request: usize,
}

/// Kind-specific settings of a source.
#[derive(Debug, Clone)]
pub enum SourceKindConfig {
    /// GitHub: `X-Hub-Signature-256` with any of these secrets.
    Github { secrets: Vec<Secret> },
    /// Any JSON webhook, checked by `verify` (which holds the secrets).
    Generic { verify: VerifyScheme },
    /// AWS SNS: messages signed by AWS, from allowed topics.
    Sns {
        topics: TopicFilter,
        auto_confirm: bool,
        /// PEM text of pinned signing certificates, by SigningCertURL as written.
        trusted_certs: BTreeMap<String, String>,
    },
}

/// The source kinds this build knows, for error messages.
pub const SOURCE_KINDS: &[&str] = &["github", "generic", "sns"];

impl Config {
    /// Reads and validates a config file, resolving `env:` references with `env`.
    pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::from_str(&text, path, env)
    }

    /// Validates config text as if read from `path`.
    pub fn from_str(text: &str, path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base };
        validate(raw, text, path, &base, env)
    }

    /// The process environment, for `load` outside tests.
    pub fn process_env(name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// 1-based line of a byte offset, for error messages.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

/// Collects every problem instead of stopping at the first.
struct Problems(Vec<String>);

impl Problems {
    fn take<T>(&mut self, r: Result<T, String>) -> Option<T> {
        r.map_err(|e| self.0.push(e)).ok()
    }
}

fn duration(field: &str, value: Option<&str>, default: &str) -> Result<Duration, String> {
    let v = value.unwrap_or(default);
    humantime::parse_duration(v).map_err(|e| format!("{field} = {v:?}: {e} (e.g. \"30s\", \"5m\", \"24h\")"))
}

fn socket(field: &str, value: Option<&str>, default: &str) -> Result<SocketAddr, String> {
    let v = value.unwrap_or(default);
    v.parse().map_err(|_| format!("{field} = {v:?} is not an address (e.g. \"0.0.0.0:8080\")"))
}

fn routing_key(
    field: &str,
    r: &str,
    env: &dyn Fn(&str) -> Option<String>,
    base: &Path,
    warnings: &mut Vec<String>,
) -> Result<RoutingKey, String> {
    let sref = SecretRef::parse(r);
    if sref.is_literal() {
        warnings.push(format!("{field} is written in the config file; prefer env: or file:"));
    }
    let secret = sref.resolve(env, base).map_err(|e| format!("{field}: {e}"))?;
    RoutingKey::parse(secret).map_err(|e| format!("{field}: {e}"))
}

fn validate(
    raw: RawConfig,
    text: &str,
    path: &Path,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let mut p = Problems(Vec::new());
    let mut warnings = Vec::new();

    let listen = p.take(socket("server.listen", raw.server.listen.as_deref(), "0.0.0.0:8080"));
    let admin_listen = p.take(socket("server.admin_listen", raw.server.admin_listen.as_deref(), "127.0.0.1:8081"));
    let max_body_bytes = raw.server.max_body_bytes.unwrap_or(1 << 20);
    if max_body_bytes == 0 {
        p.0.push("server.max_body_bytes must be at least 1".into());
    }
    let admin_token = raw.server.admin_token.as_deref().and_then(|t| {
        let r = SecretRef::parse(t);
        if r.is_literal() {
            warnings.push("server.admin_token is written in the config file; prefer env: or file:".into());
        }
        p.take(r.resolve(env, base).map_err(|e| format!("server.admin_token: {e}")))
    });

    let durability = match raw.storage.durability.as_deref() {
        None | Some("fsync") => Some(Durability::Fsync),
        Some("process") => Some(Durability::Process),
        Some(other) => {
            p.0.push(format!("storage.durability = {other:?}: expected \"fsync\" or \"process\""));
            None
        }
    };
    let retention = p.take(duration("storage.retention", raw.storage.retention.as_deref(), "7d"));
    let backend = storage_backend(&raw.storage, base, env, &mut p, &mut warnings);

    let events_url =
        raw.pagerduty.events_url.as_deref().unwrap_or("https://events.pagerduty.com").trim_end_matches('/').to_string();
    if !(events_url.starts_with("https://") || events_url.starts_with("http://")) {
        p.0.push(format!(
            "pagerduty.events_url = {events_url:?}: expected an http(s) URL (e.g. \"https://events.eu.pagerduty.com\")"
        ));
    }
    let default_key = raw
        .pagerduty
        .routing_key
        .as_deref()
        .and_then(|r| p.take(routing_key("pagerduty.routing_key", r, env, base, &mut warnings)));
    let mut named_keys = BTreeMap::new();
    for (name, r) in &raw.pagerduty.routing_keys {
        let field = format!("pagerduty.routing_keys.{name}");
        if let Some(k) = p.take(routing_key(&field, r, env, base, &mut warnings)) {
            named_keys.insert(name.clone(), k);
        }
    }
    let timeout = p.take(duration("pagerduty.timeout", raw.pagerduty.timeout.as_deref(), "10s"));

    let d = &raw.delivery;
    let concurrency = d.concurrency.unwrap_or(32);
    if concurrency == 0 {
        p.0.push("delivery.concurrency must be at least 1".into());
    }
    let initial_backoff = p.take(duration("delivery.initial_backoff", d.initial_backoff.as_deref(), "1s"));
    let max_backoff = p.take(duration("delivery.max_backoff", d.max_backoff.as_deref(), "5m"));
    let max_age = p.take(duration("delivery.max_age", d.max_age.as_deref(), "24h"));
    if let (Some(i), Some(m)) = (initial_backoff, max_backoff) {
        if i > m || i.is_zero() {
            p.0.push("delivery.initial_backoff must be above zero and at most delivery.max_backoff".into());
        }
    }
    let lease = p.take(duration("delivery.lease", d.lease.as_deref(), "15s"));
    // Renewed every third of its length while an attempt runs: below 3 s that is a write per
    // second per slow attempt, and too little room for a slow database round trip.
    if lease.is_some_and(|l| l < Duration::from_secs(3)) {
        p.0.push("delivery.lease must be at least 3s (it is renewed while an attempt runs)".into());
    }
    let per_key_burst = d.per_key_burst.unwrap_or(60);
    if per_key_burst == 0 {
        p.0.push("delivery.per_key_burst must be at least 1".into());
    }

    let mut names = HashSet::new();
    let mut sources = Vec::new();
    for spanned in raw.sources {
        let line = line_of(text, spanned.span().start);
        let s: RawSource = spanned.into_inner();
        let before = p.0.len();
        if let Some(src) = validate_source(s, line, base, env, &mut p, &mut warnings, &mut names) {
            if p.0.len() == before {
                sources.push(src);
            }
        }
    }
    if sources.is_empty() && p.0.is_empty() {
        warnings.push("no [[source]] is configured: every webhook will get 404".into());
    }
    for src in &sources {
        if src.routing_key.is_none() && default_key.is_none() && named_keys.is_empty() {
            p.0.push(format!(
                "source '{}': no routing key: set [pagerduty] routing_key = \"env:PAGERDUTY_ROUTING_KEY\" or routing_key on the source",
                src.name
            ));
        }
    }

    if !p.0.is_empty() {
        return Err(ConfigError::Invalid { path: path.to_path_buf(), errors: p.0 });
    }
    Ok(Config {
        path: path.to_path_buf(),
        server: ServerConfig {
            listen: listen.unwrap(),
            admin_listen: admin_listen.unwrap(),
            max_body_bytes,
            admin_token,
        },
        storage: StorageConfig {
            backend: backend.unwrap(),
            durability: durability.unwrap(),
            retention: retention.unwrap(),
        },
        pagerduty: PagerDutyConfig {
            events_url,
            routing_key: default_key,
            routing_keys: named_keys,
            timeout: timeout.unwrap(),
        },
        delivery: DeliveryConfig {
            concurrency,
            initial_backoff: initial_backoff.unwrap(),
            max_backoff: max_backoff.unwrap(),
            max_age: max_age.unwrap(),
            per_key_rate: d.per_key_rate.unwrap_or(120),
            per_key_burst,
            lease: lease.unwrap(),
        },
        sources,
        warnings,
    })
}

/// SQLite at `path` unless a PostgreSQL `url` is given; not both.
fn storage_backend(
    s: &raw::RawStorage,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    p: &mut Problems,
    warnings: &mut Vec<String>,
) -> Option<StorageBackend> {
    let Some(url) = s.url.as_deref() else {
        return Some(StorageBackend::Sqlite { path: base.join(s.path.as_deref().unwrap_or("data/pagerhook.db")) });
    };
    if s.path.is_some() {
        p.0.push("storage.path (SQLite) and storage.url (PostgreSQL) are both set: keep one".into());
    }
    if s.durability.is_some() {
        warnings.push(
            "storage.durability applies to SQLite only; with PostgreSQL the server's synchronous_commit decides".into(),
        );
    }
    let r = SecretRef::parse(url);
    if r.is_literal() {
        warnings.push("storage.url is written in the config file (with its password?); prefer env: or file:".into());
    }
    let url = p.take(r.resolve(env, base).map_err(|e| format!("storage.url: {e}")))?;
    let scheme_ok = ["postgres://", "postgresql://"].iter().any(|s| url.expose().starts_with(s));
    if !scheme_ok {
        // Never echo the value: it may hold a password.
        p.0.push("storage.url must be a PostgreSQL URL: postgres://user:password@host:5432/database".into());
        return None;
    }
    Some(StorageBackend::Postgres { url })
}

fn validate_source(
    mut s: RawSource,
    line: usize,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    p: &mut Problems,
    warnings: &mut Vec<String>,
    names: &mut HashSet<String>,
) -> Option<SourceConfig> {
    let at = format!("line {line}: source '{}'", s.name);
    let valid_name = !s.name.is_empty()
        && s.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !valid_name {
        p.0.push(format!("{at}: name must be lower-case letters, digits, '-' or '_' (e.g. \"github\")"));
    }
    if !names.insert(s.name.clone()) {
        p.0.push(format!("{at}: another source already has this name"));
    }
    if s.mappings.is_empty() {
        p.0.push(format!("{at}: no mappings (e.g. mappings = [\"mappings/{}.toml\"])", s.kind));
    }
    let mappings = s.mappings.iter().map(|m| base.join(m)).collect();
    let routing_key = s
        .routing_key
        .as_deref()
        .and_then(|r| p.take(routing_key(&format!("{at}: routing_key"), r, env, base, warnings)));
    if let Some(v) = s.verify.as_mut().filter(|v| !v.secrets.is_empty()) {
        if s.secrets.is_empty() {
            s.secrets = std::mem::take(&mut v.secrets);
        } else {
            p.0.push(format!("{at}: secrets are written both on the source and in verify: keep one list"));
        }
    }
    let mut secrets = Vec::new();
    for (i, r) in s.secrets.iter().enumerate() {
        let sref = SecretRef::parse(r);
        if sref.is_literal() {
            warnings.push(format!("{at}: secrets[{i}] is written in the config file; prefer env: or file:"));
        }
        if let Some(v) = p.take(sref.resolve(env, base).map_err(|e| format!("{at}: secrets[{i}]: {e}"))) {
            secrets.push(v);
        }
    }
    if s.kind != "sns" {
        sns::refuse_sns_keys(&at, &s, p);
    }
    let kind = match s.kind.as_str() {
        "github" => {
            if s.secrets.is_empty() {
                p.0.push(format!(
                    "{at}: kind \"github\" needs secrets = [\"env:GITHUB_WEBHOOK_SECRET\"] (the webhook's secret)"
                ));
            }
            if s.verify.is_some() {
                p.0.push(format!(
                    "{at}: kind \"github\" checks X-Hub-Signature-256 itself: remove verify (it is for kind \"generic\")"
                ));
            }
            SourceKindConfig::Github { secrets }
        }
        "generic" => {
            let verify = verify::validate_verify(&at, s.verify, s.secrets.len(), secrets, p, warnings)?;
            SourceKindConfig::Generic { verify }
        }
        "sns" => sns::validate_sns(&at, &mut s, env, base, p, warnings)?,
        other => {
            p.0.push(format!("{at}: unknown kind {other:?} (expected one of: {})", SOURCE_KINDS.join(", ")));
            return None;
        }
    };
    Some(SourceConfig {
        name: s.name,
        kind,
        mappings,
        routing_key,
        max_events_per_request: s.max_events_per_request.unwrap_or(1000),
    })
}

#[cfg(test)]
mod tests;
