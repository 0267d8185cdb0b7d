//! Configuration: `raw` (what the file says) is validated into [`Config`] (what the program uses).
//!
//! Validation is pure apart from reading secret files: the environment is injected, so tests
//! never touch the process environment, and every problem is reported, not just the first.

mod parse;
pub mod raw;
mod sns;
mod verify;

// Re-exported: config hands out resolved secrets, and its users name them with the rest of it.
pub use crate::secret::{Secret, SecretDigest, SecretRef};
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
    #[error("{}", read_error(path, source))]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: invalid configuration:\n  - {}", .errors.join("\n  - "))]
    Invalid {
        path: PathBuf,
        errors: Vec<String>,
        /// What did validate, so `check` can still compile those sources' mappings.
        partial: Box<Partial>,
    },
}

/// The parts of an invalid config that validated.
#[derive(Debug, Default)]
pub struct Partial {
    /// Sources without a problem of their own.
    pub sources: Vec<SourceConfig>,
    /// Names in `[pagerduty.routing_keys]`.
    pub routing_key_names: Vec<String>,
}

/// A config file that cannot be read, with the path as tried and how to point elsewhere.
fn read_error(path: &Path, e: &std::io::Error) -> String {
    let tried = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match e.kind() {
        std::io::ErrorKind::NotFound => format!(
            "config file {} not found (looked for {}); run from the folder that holds it, or pass --config PATH or set PAGERHOOK_CONFIG",
            path.display(),
            tried.display()
        ),
        _ => format!("cannot read config file {}: {e}", tried.display()),
    }
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
    /// Secrets not resolved (loaded with [`Config::load_unresolved`]): why, by field. Their
    /// routing keys are placeholders, and other secrets are left out.
    pub unresolved: Vec<String>,
}

/// `[server]`, validated.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub max_body_bytes: usize,
    pub admin_token: Option<Secret>,
    /// Threads serving webhooks.
    pub workers: usize,
    /// Headers (of a connection's first request) and each body must arrive within this.
    pub request_timeout: Duration,
    /// Open webhook connections per worker.
    pub max_connections: usize,
    /// Idle time before a kept-alive connection is closed; zero: no keep-alive.
    pub keep_alive: Duration,
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
        /// Templates see `sns.MessageAttributes`, which AWS does not sign.
        unsigned_message_attributes: bool,
    },
}

/// The source kinds this build knows, for error messages.
pub const SOURCE_KINDS: &[&str] = &["github", "generic", "sns"];

impl Config {
    /// Reads and validates a config file, resolving `env:` references with `env`.
    pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        Config::load_with(path, env, false)
    }

    /// Like [`Config::load`], for commands that need no secret (`render`, `check`, `health`,
    /// `deliveries`, `dlq` on SQLite): a secret that does not resolve is listed in
    /// `unresolved` instead of being an error.
    pub fn load_unresolved(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        Config::load_with(path, env, true)
    }

    fn load_with(path: &Path, env: &dyn Fn(&str) -> Option<String>, defer: bool) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::from_str_with(&text, path, env, defer)
    }

    /// Validates config text as if read from `path`.
    pub fn from_str(text: &str, path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        Config::from_str_with(text, path, env, false)
    }

    /// [`Config::from_str`] without resolving secrets, as [`Config::load_unresolved`].
    pub fn from_str_unresolved(
        text: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        Config::from_str_with(text, path, env, true)
    }

    fn from_str_with(
        text: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        defer: bool,
    ) -> Result<Config, ConfigError> {
        let parsed = parse::parse(text).map_err(|message| ConfigError::Parse { path: path.to_path_buf(), message })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base };
        let lookup = Lookup { env, base: &base, defer, unresolved: Vec::new() };
        let Some(raw) = parsed.raw else {
            let partial = Box::default();
            return Err(ConfigError::Invalid { path: path.to_path_buf(), errors: parsed.errors, partial });
        };
        match validate(raw, &parsed.text, path, lookup) {
            Err(ConfigError::Invalid { path, mut errors, partial }) => {
                errors.splice(0..0, parsed.errors);
                Err(ConfigError::Invalid { path, errors, partial })
            }
            Ok(_) if !parsed.errors.is_empty() => {
                Err(ConfigError::Invalid { path: path.to_path_buf(), errors: parsed.errors, partial: Box::default() })
            }
            other => other,
        }
    }

    /// Fails, saying why, if a secret whose field starts with `prefix` was not resolved
    /// (`""`: any secret).
    pub fn require_resolved(&self, prefix: &str) -> Result<(), String> {
        let missing: Vec<_> = self.unresolved.iter().filter(|u| u.starts_with(prefix)).cloned().collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing.join("\n"))
        }
    }

    /// The process environment, for `load` outside tests.
    pub fn process_env(name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// Keys whose values are secrets (or, like `storage.url`, carry one).
const SECRET_KEYS: &[&str] = &["admin_token", "url", "routing_key", "secrets"];

/// A TOML syntax error with its line quoted, the way toml does, but with the values of
/// secret-bearing lines replaced by `***`: the line may hold a secret written literally.
fn parse_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    let Some(start) = e.span().map(|s| s.start.min(text.len())) else {
        return format!("TOML parse error: {message}");
    };
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let (line, column) = (line_of(text, start), text[line_start..start].chars().count() + 1);
    let quoted = text[line_start..line_end].trim_end_matches('\r');
    let in_secret_table = text[..line_start]
        .lines()
        .map(str::trim)
        .rfind(|l| l.starts_with('['))
        .is_some_and(|header| header.trim_matches(['[', ']', ' ']) == "pagerduty.routing_keys");
    let shown = if in_secret_table || names_a_secret(quoted) { redact_values(quoted) } else { quoted.to_string() };
    format!("TOML parse error at line {line}, column {column}: {message}\n  {line} | {shown}")
}

/// Whether a line sets a secret key, or has no key at all (the middle of a multi-line array
/// or string, which may belong to one).
fn names_a_secret(line: &str) -> bool {
    let mut keys = line.split('=').rev().skip(1).map(|before| {
        let key = before.rsplit(['{', ',', '[']).next().unwrap_or_default();
        key.trim().trim_matches(['"', '\'']).rsplit('.').next().unwrap_or_default().to_string()
    });
    let mut any = false;
    let secret = keys.any(|k| {
        any = true;
        SECRET_KEYS.contains(&k.as_str())
    });
    secret || !any
}

/// The line with everything after its first `=` (or all of it) replaced by `***`.
fn redact_values(line: &str) -> String {
    match line.split_once('=') {
        Some((key, _)) if !key.contains(['"', '\'']) || key.trim_start().starts_with('"') => {
            format!("{}= ***", key)
        }
        _ => "***".to_string(),
    }
}

/// 1-based line of a byte offset, for error messages.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

/// Resolves secret references; with `defer`, one that does not resolve is noted instead of
/// refused (commands that need no secret must work without them).
struct Lookup<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    base: &'a Path,
    defer: bool,
    unresolved: Vec<String>,
}

impl Lookup<'_> {
    /// `Ok(None)`: deferred (and noted).
    fn secret(&mut self, field: &str, r: &SecretRef) -> Result<Option<Secret>, String> {
        match r.resolve(self.env, self.base) {
            Ok(s) => Ok(Some(s)),
            Err(e) if self.defer && !r.is_literal() => {
                self.unresolved.push(format!("{field}: {e}"));
                Ok(None)
            }
            Err(e) => Err(format!("{field}: {e}")),
        }
    }
}

/// Stands in for a routing key not resolved, so mappings compile and `render` works.
pub fn placeholder_key() -> RoutingKey {
    RoutingKey::parse(Secret::new("0".repeat(32))).expect("32 characters")
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

fn routing_key(field: &str, r: &str, lookup: &mut Lookup, warnings: &mut Vec<String>) -> Result<RoutingKey, String> {
    let sref = SecretRef::parse(r);
    if sref.is_literal() {
        warnings.push(format!("{field} is written in the config file; prefer env: or file:"));
    }
    let Some(secret) = lookup.secret(field, &sref)? else { return Ok(placeholder_key()) };
    let v = secret.expose();
    let spaced = v.trim() != v && RoutingKey::parse(Secret::new(v.trim())).is_ok();
    RoutingKey::parse(secret.clone()).map_err(|e| match (&sref, spaced) {
        (SecretRef::Env(name), true) => format!(
            "{field}: {e}: the key in {name} has whitespace around it (a trailing newline from `echo` or a pasted line?); \
             environment values are used as they are: set {name} without it"
        ),
        (_, true) => format!("{field}: {e}: the value has whitespace around it: remove it"),
        _ => format!("{field}: {e}"),
    })
}

fn validate(raw: RawConfig, text: &str, path: &Path, mut lookup: Lookup) -> Result<Config, ConfigError> {
    let l = &mut lookup;
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
        p.take(l.secret("server.admin_token", &r)).flatten()
    });

    let workers = raw
        .server
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get).max(2));
    if workers == 0 {
        p.0.push("server.workers must be at least 1".into());
    }
    let request_timeout = p.take(duration("server.request_timeout", raw.server.request_timeout.as_deref(), "30s"));
    if request_timeout.is_some_and(|t| t.is_zero()) {
        p.0.push("server.request_timeout must be above zero (e.g. \"30s\")".into());
    }
    let max_connections = raw.server.max_connections.unwrap_or(1024);
    if max_connections == 0 {
        p.0.push("server.max_connections must be at least 1".into());
    }
    let keep_alive = p.take(duration("server.keep_alive", raw.server.keep_alive.as_deref(), "5s"));

    let durability = match raw.storage.durability.as_deref() {
        None | Some("fsync") => Some(Durability::Fsync),
        Some("process") => Some(Durability::Process),
        Some(other) => {
            p.0.push(format!("storage.durability = {other:?}: expected \"fsync\" or \"process\""));
            None
        }
    };
    let retention = p.take(duration("storage.retention", raw.storage.retention.as_deref(), "7d"));
    let backend = storage_backend(&raw.storage, l, &mut p, &mut warnings);

    let events_url = p
        .take(events_url(raw.pagerduty.events_url.as_deref().unwrap_or(DEFAULT_EVENTS_URL), &mut warnings))
        .unwrap_or_default();
    let default_key = raw
        .pagerduty
        .routing_key
        .as_deref()
        .and_then(|r| p.take(routing_key("pagerduty.routing_key", r, l, &mut warnings)));
    let mut named_keys = BTreeMap::new();
    for (name, r) in &raw.pagerduty.routing_keys {
        let field = format!("pagerduty.routing_keys.{name}");
        if let Some(k) = p.take(routing_key(&field, r, l, &mut warnings)) {
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
    let per_key_rate = d.per_key_rate.unwrap_or(120);
    // The burst is part of the rate (how many of a minute's events may go at once), not extra.
    let per_key_burst = d.per_key_burst.unwrap_or(if per_key_rate == 0 { 60 } else { per_key_rate.min(60) });
    if per_key_burst == 0 {
        p.0.push("delivery.per_key_burst must be at least 1".into());
    }
    if per_key_rate > 0 && per_key_burst > per_key_rate {
        p.0.push(format!(
            "delivery.per_key_burst ({per_key_burst}) must be at most delivery.per_key_rate ({per_key_rate}): \
             the burst is how many of a minute's events may go at once, not extra to them"
        ));
    }

    let mut names = HashSet::new();
    let mut sources = Vec::new();
    for spanned in raw.sources {
        let line = line_of(text, spanned.span().start);
        let s: RawSource = spanned.into_inner();
        let before = p.0.len();
        if let Some(src) = validate_source(s, line, l, &mut p, &mut warnings, &mut names) {
            if p.0.len() == before {
                sources.push(src);
            }
        }
    }
    if sources.is_empty() && p.0.is_empty() {
        warnings.push("no [[source]] is configured: every webhook will get 404".into());
    }
    // Whether a key is *written*, not whether it resolved: a key that failed is its own error.
    let any_key = raw.pagerduty.routing_key.is_some() || !raw.pagerduty.routing_keys.is_empty();
    for src in &sources {
        if src.routing_key.is_none() && !any_key {
            p.0.push(format!(
                "source '{}': no routing key: set [pagerduty] routing_key = \"env:PAGERDUTY_ROUTING_KEY\" or routing_key on the source",
                src.name
            ));
        }
    }

    if !lookup.defer {
        p.0.append(&mut lookup.unresolved);
    }
    if !p.0.is_empty() {
        let routing_key_names = raw.pagerduty.routing_keys.keys().cloned().collect();
        let partial = Box::new(Partial { sources, routing_key_names });
        return Err(ConfigError::Invalid { path: path.to_path_buf(), errors: p.0, partial });
    }
    Ok(Config {
        path: path.to_path_buf(),
        server: ServerConfig {
            listen: listen.unwrap(),
            admin_listen: admin_listen.unwrap(),
            max_body_bytes,
            admin_token,
            workers,
            request_timeout: request_timeout.unwrap(),
            max_connections,
            keep_alive: keep_alive.unwrap(),
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
            per_key_rate,
            per_key_burst,
            lease: lease.unwrap(),
        },
        sources,
        warnings,
        unresolved: lookup.unresolved,
    })
}

const DEFAULT_EVENTS_URL: &str = "https://events.pagerduty.com";

/// The Events API base URL. PagerDuty's documentation gives the full endpoints, so a pasted
/// `/v2/enqueue`, `/v2/change/enqueue` or `/v2` is cut back to the base (pagerhook appends the
/// path per event kind) with a note; any other path would only ever earn 404s, so it is refused.
fn events_url(value: &str, warnings: &mut Vec<String>) -> Result<String, String> {
    let example = "(e.g. \"https://events.pagerduty.com\" or \"https://events.eu.pagerduty.com\")";
    let mut url = url::Url::parse(value.trim())
        .ok()
        .filter(|u| matches!(u.scheme(), "https" | "http") && u.has_host())
        .ok_or_else(|| format!("pagerduty.events_url = {value:?}: expected an http(s) URL {example}"))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("pagerduty.events_url = {value:?}: remove the query and fragment {example}"));
    }
    let path = url.path().trim_end_matches('/').to_string();
    url.set_path("");
    let base = url.as_str().trim_end_matches('/').to_string();
    match path.as_str() {
        "" => Ok(base),
        "/v2" | "/v2/enqueue" | "/v2/change/enqueue" => {
            warnings.push(format!(
                "pagerduty.events_url = {value:?} is an endpoint; using its base {base:?} (pagerhook adds /v2/enqueue and /v2/change/enqueue itself)"
            ));
            Ok(base)
        }
        other => Err(format!(
            "pagerduty.events_url = {value:?}: path {other:?} is not an Events API v2 endpoint; give the base URL {example}"
        )),
    }
}

/// SQLite at `path` unless a PostgreSQL `url` is given; not both.
fn storage_backend(
    s: &raw::RawStorage,
    l: &mut Lookup,
    p: &mut Problems,
    warnings: &mut Vec<String>,
) -> Option<StorageBackend> {
    let base = l.base;
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
    let Some(url) = p.take(l.secret("storage.url", &r))? else {
        // Not resolved: only commands that never open the store get this far.
        return Some(StorageBackend::Postgres { url: Secret::new("postgres://unresolved") });
    };
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
    l: &mut Lookup,
    p: &mut Problems,
    warnings: &mut Vec<String>,
    names: &mut HashSet<String>,
) -> Option<SourceConfig> {
    let (base, env) = (l.base, l.env);
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
    let routing_key =
        s.routing_key.as_deref().and_then(|r| p.take(routing_key(&format!("{at}: routing_key"), r, l, warnings)));
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
        if let Some(v) = p.take(l.secret(&format!("{at}: secrets[{i}]"), &sref)).flatten() {
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
