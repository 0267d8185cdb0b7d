//! Configuration: `raw` (what the file says) is validated into [`Config`] (what the program uses).
//!
//! Validation is pure apart from reading secret files: the environment is injected, so tests
//! never touch the process environment, and every problem is reported, not just the first.

mod parse;
pub mod raw;
mod sns;
mod value;
mod verify;

// Re-exported: config hands out resolved secrets, and its users name them with the rest of it.
pub use crate::secret::{Secret, SecretDigest, SecretRef};
pub use raw::Unmatched;
pub use sns::{SignatureVersions, TopicFilter};
pub use value::ValueError;
use value::{duration, events_url, one_of, socket, Spacing, DEFAULT_EVENTS_URL};
pub use verify::{scheme_names, standard_webhooks_key, HmacAlgorithm, SignatureEncoding, VerifyScheme, WhsecError};

use crate::event::RoutingKey;
use raw::SourceKindName;
use raw::{
    RawConfig, RawDelivery, RawGeneric, RawMapping, RawPagerDuty, RawSecrets, RawServer, RawSource, RawSourceKind,
    RawStorage,
};
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
    pub mapping: MappingConfig,
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
    /// Names (lower case) the admin listener answers to besides IP literals and `localhost`.
    pub admin_hosts: Vec<String>,
    /// Threads serving webhooks.
    pub workers: usize,
    /// Headers (of a connection's first request) and each body must arrive within this.
    pub request_timeout: Duration,
    /// Open webhook connections per worker.
    pub max_connections: usize,
    /// Idle time before a kept-alive connection is closed; zero: no keep-alive.
    pub keep_alive: Duration,
    /// The console's public address, without a trailing `/`: pagerhook's own pages link to it.
    pub admin_url: Option<String>,
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
    /// Dead letters older than this are dropped.
    pub dead_letter_retention: Duration,
    /// Bytes of dead letters kept per source; the oldest beyond it are dropped.
    pub dead_letter_max_bytes: u64,
    /// Free bytes kept on the SQLite store's filesystem: below it, accepts are refused.
    pub min_free_bytes: u64,
    /// Most bytes the SQLite store may use before accepts are refused; `None`: no cap.
    pub max_bytes: Option<u64>,
}

/// `[pagerduty]`, validated.
#[derive(Debug, Clone)]
pub struct PagerDutyConfig {
    /// Base URL without trailing slash; `/v2/enqueue` is appended.
    pub events_url: String,
    pub routing_key: Option<RoutingKey>,
    pub routing_keys: BTreeMap<String, RoutingKey>,
    pub timeout: Duration,
    /// Whether pagerhook pages about what it could not relay (`own_pages`, default on).
    pub own_pages: bool,
    /// Where those pages go: `own_pages_routing_key`, else `routing_key`; `None`: each
    /// source's own key.
    pub own_pages_routing_key: Option<RoutingKey>,
    /// A routing key whose backlog would take longer than this to drain is paged on
    /// (`storm_page_after`, at least [`MIN_STORM_PAGE_AFTER`]).
    pub storm_page_after: Duration,
}

/// The shortest `pagerduty.storm_page_after`: the pace is counted per minute, so a shorter
/// estimate is noise (a burst the next minute sends).
pub const MIN_STORM_PAGE_AFTER: Duration = Duration::from_secs(60);

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
    /// Whether a trigger resolved before it was sent is superseded (neither sent).
    pub supersede: bool,
}

/// `[mapping]`, validated.
#[derive(Debug, Clone)]
pub struct MappingConfig {
    /// Templates render natively where they can; `false`: all through handlebars.
    pub native: bool,
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
    /// The names of `[pagerduty.routing_keys]` its rules may choose; `None`: all.
    pub routing_keys: Option<Vec<String>>,
    pub max_events_per_request: usize,
    /// Most bytes (of JSON) the events of one request may total.
    pub max_event_bytes_per_request: usize,
    /// Headers (lower case) dropped from its requests before anything keeps or shows them.
    pub drop_headers: Vec<String>,
    /// What becomes of a payload no rule matched.
    pub unmatched: Unmatched,
    /// The other sources whose incidents it may acknowledge and resolve (`may_close`).
    pub may_close: Vec<String>,
    /// How long its resolves wait for a trigger that cancels them (0: flap damping off).
    pub resolve_delay: Duration,
    /// After how long without a re-trigger pagerhook resolves an incident it opened (0: never).
    pub resolve_when_silent: Duration,
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
        signature_versions: SignatureVersions,
    },
}

/// The source kinds this build knows, for error messages.
fn source_kinds() -> String {
    SourceKindName::ALL.map(SourceKindName::as_str).join(", ")
}

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
    pub fn require_resolved(&self, prefix: &str) -> Result<(), Unresolved> {
        let missing: Vec<_> = self.unresolved.iter().filter(|u| u.starts_with(prefix)).cloned().collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Unresolved(missing))
        }
    }

    /// The process environment, for `load` outside tests.
    pub fn process_env(name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// Secrets a command needs that did not resolve, one line each (field and reason).
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct Unresolved(pub Vec<String>);

/// Keys whose values are secrets (or, like `storage.url`, carry one).
const SECRET_KEYS: &[&str] = &["admin_token", "url", "routing_key", "own_pages_routing_key", "secrets"];

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
    let shown = if may_hold_secret(text, start) { redact_values(quoted) } else { quoted.to_string() };
    format!("TOML parse error at line {line}, column {column}: {message}\n  {line} | {shown}")
}

/// Whether the line holding byte `at` may hold a secret: it sets a secret key, has no key at
/// all, or lies in `[pagerduty.routing_keys]`.
fn may_hold_secret(text: &str, at: usize) -> bool {
    let at = at.min(text.len());
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    let in_secret_table = text[..line_start]
        .lines()
        .map(str::trim)
        .rfind(|l| l.starts_with('['))
        .is_some_and(|header| header.trim_matches(['[', ']', ' ']) == "pagerduty.routing_keys");
    in_secret_table || names_a_secret(&text[line_start..line_end])
}

/// A serde message about a value at byte `at` of `text`, without the value when its line may
/// hold a secret: `invalid type: string "hunter2", expected a sequence` names the type, not the
/// string (serde quotes strings, and numbers in backquotes).
fn value_error(text: &str, at: usize, message: &str) -> String {
    if !may_hold_secret(text, at) {
        return message.to_string();
    }
    let Some((head, rest)) = message.split_once(": ").filter(|(h, _)| h.starts_with("invalid ")) else {
        return message.to_string();
    };
    let (unexpected, expected) = rest.rsplit_once(", expected ").unwrap_or((rest, ""));
    let kind = unexpected.split([' ', '"', '`']).next().unwrap_or_default();
    let shown = if kind == unexpected { kind.to_string() } else { format!("{kind} ***") };
    match expected {
        "" => format!("{head}: {shown}"),
        e => format!("{head}: {shown}, expected {e}"),
    }
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
    fn secret(&mut self, field: &str, r: &SecretRef) -> Result<Option<Secret>, ValueError> {
        match r.resolve(self.env, self.base) {
            Ok(s) => Ok(Some(s)),
            Err(e) if self.defer && !r.is_literal() => {
                self.unresolved.push(format!("{field}: {e}"));
                Ok(None)
            }
            Err(error) => Err(ValueError::Secret { field: field.to_string(), error }),
        }
    }
}

/// Stands in for a routing key not resolved, so mappings compile and `render` works.
pub fn placeholder_key() -> RoutingKey {
    RoutingKey::parse(Secret::new("0".repeat(32))).expect("32 characters")
}

/// Things that work but deserve a second look.
type Warnings = Vec<String>;

/// Collects every problem instead of stopping at the first.
struct Problems(Vec<String>);

impl Problems {
    fn take<T, E: std::fmt::Display>(&mut self, r: Result<T, E>) -> Option<T> {
        r.map_err(|e| self.0.push(e.to_string())).ok()
    }
}

fn routing_key(
    field: &str,
    r: &str,
    lookup: &mut Lookup,
    warnings: &mut Vec<String>,
) -> Result<RoutingKey, ValueError> {
    let sref = SecretRef::parse(r);
    if sref.is_literal() {
        warnings.push(format!("{field} is written in the config file; prefer env: or file:"));
    }
    let Some(secret) = lookup.secret(field, &sref)? else { return Ok(placeholder_key()) };
    let v = secret.expose();
    let spaced = v.trim() != v && RoutingKey::parse(Secret::new(v.trim())).is_ok();
    let spacing = match (&sref, spaced) {
        (_, false) => Spacing::None,
        (SecretRef::Env(name), true) => Spacing::InEnv(name.clone()),
        (_, true) => Spacing::InValue,
    };
    RoutingKey::parse(secret.clone()).map_err(|error| ValueError::RoutingKey {
        field: field.to_string(),
        error,
        spacing,
    })
}

fn validate(raw: RawConfig, text: &str, path: &Path, mut lookup: Lookup) -> Result<Config, ConfigError> {
    let mut p = Problems(Vec::new());
    let mut warnings = Vec::new();
    let l = &mut lookup;
    let server = validate_server(&raw.server, l, &mut p, &mut warnings);
    let storage = validate_storage(&raw.storage, l, &mut p, &mut warnings);
    let pagerduty = validate_pagerduty(&raw.pagerduty, l, &mut p, &mut warnings);
    let delivery = validate_delivery(&raw.delivery, &mut p);
    let mapping = validate_mapping(&raw.mapping);
    let sources = validate_sources(raw.sources, text, l, &mut p, &mut warnings);
    for src in &sources {
        let unknown = src.routing_keys.iter().flatten().filter(|n| !raw.pagerduty.routing_keys.contains_key(*n));
        for name in unknown {
            p.0.push(format!(
                "source '{}': routing_keys: {name:?} is not a name in [pagerduty.routing_keys]",
                src.name
            ));
        }
    }
    // Whether a key is *written*, not whether it resolved: a key that failed is its own error.
    let any_key = raw.pagerduty.routing_key.is_some() || !raw.pagerduty.routing_keys.is_empty();
    for src in sources.iter().filter(|s| s.routing_key.is_none() && !any_key) {
        p.0.push(format!(
            "source '{}': no routing key: set [pagerduty] routing_key = \"env:PAGERDUTY_ROUTING_KEY\" or routing_key on the source",
            src.name
        ));
    }
    if !lookup.defer {
        p.0.append(&mut lookup.unresolved);
    }
    let (true, Some(server), Some(storage), Some(pagerduty), Some(delivery)) =
        (p.0.is_empty(), server, storage, pagerduty, delivery)
    else {
        let routing_key_names = raw.pagerduty.routing_keys.keys().cloned().collect();
        let partial = Box::new(Partial { sources, routing_key_names });
        return Err(ConfigError::Invalid { path: path.to_path_buf(), errors: p.0, partial });
    };
    Ok(Config {
        path: path.to_path_buf(),
        server,
        storage,
        pagerduty,
        delivery,
        mapping,
        sources,
        warnings,
        unresolved: lookup.unresolved,
    })
}

/// `[server]`; `None` if a value is wrong (the problem is in `p`).
fn validate_server(s: &RawServer, l: &mut Lookup, p: &mut Problems, warnings: &mut Warnings) -> Option<ServerConfig> {
    let listen = p.take(socket("server.listen", s.listen.as_deref(), "0.0.0.0:8080"));
    let admin_listen = p.take(socket("server.admin_listen", s.admin_listen.as_deref(), "127.0.0.1:8081"));
    let max_body_bytes = at_least_one(p, "server.max_body_bytes", s.max_body_bytes.unwrap_or(1 << 20));
    let admin_token = s.admin_token.as_deref().and_then(|t| {
        let r = SecretRef::parse(t);
        if r.is_literal() {
            warnings.push("server.admin_token is written in the config file; prefer env: or file:".into());
        }
        p.take(l.secret("server.admin_token", &r)).flatten()
    });
    let admin_hosts = admin_hosts(s.admin_hosts.as_deref().unwrap_or_default(), p);
    let cpus = || std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get).max(2);
    let workers = at_least_one(p, "server.workers", s.workers.unwrap_or_else(cpus));
    let request_timeout = p.take(duration("server.request_timeout", s.request_timeout.as_deref(), "30s"));
    if request_timeout.is_some_and(|t| t.is_zero()) {
        p.0.push("server.request_timeout must be above zero (e.g. \"30s\")".into());
    }
    let max_connections = at_least_one(p, "server.max_connections", s.max_connections.unwrap_or(1024));
    let keep_alive = p.take(duration("server.keep_alive", s.keep_alive.as_deref(), "5s"));
    Some(ServerConfig {
        listen: listen?,
        admin_listen: admin_listen?,
        max_body_bytes,
        admin_token,
        admin_hosts,
        workers,
        request_timeout: request_timeout?,
        max_connections,
        keep_alive: keep_alive?,
        admin_url: admin_url(s.admin_url.as_deref(), p),
    })
}

/// `server.admin_url`: an `http(s)://` address, kept without its trailing `/`.
fn admin_url(written: Option<&str>, p: &mut Problems) -> Option<String> {
    let url = written?.trim();
    let ok = ["https://", "http://"].iter().any(|s| url.starts_with(s) && url.len() > s.len())
        && !url.contains(char::is_whitespace);
    if !ok {
        p.0.push(format!(
            "server.admin_url: {url:?} is not an http(s) address (e.g. \"https://pagerhook.example.com\")"
        ));
        return None;
    }
    Some(url.trim_end_matches('/').to_string())
}

/// `server.admin_hosts`: DNS names as a browser sends them in `Host`, without a port.
fn admin_hosts(written: &[String], p: &mut Problems) -> Vec<String> {
    let mut names = Vec::new();
    for name in written {
        let ok = !name.is_empty()
            && name.split('.').all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        if ok {
            names.push(name.to_ascii_lowercase());
        } else {
            p.0.push(format!(
                "server.admin_hosts: {name:?} is not a host name (write the name alone, e.g. \"pagerhook.internal\": no scheme, port or path)"
            ));
        }
    }
    names
}

/// `value`, with a problem noted if it is zero.
fn at_least_one<T: Default + PartialEq>(p: &mut Problems, field: &str, value: T) -> T {
    if value == T::default() {
        p.0.push(format!("{field} must be at least 1"));
    }
    value
}

/// `[storage]`; `None` if a value is wrong (the problem is in `p`).
fn validate_storage(
    s: &RawStorage,
    l: &mut Lookup,
    p: &mut Problems,
    warnings: &mut Warnings,
) -> Option<StorageConfig> {
    let options = [("fsync", Durability::Fsync), ("process", Durability::Process)];
    let durability = p.take(one_of("storage.durability", s.durability.as_deref().unwrap_or("fsync"), &options));
    let retention = p.take(duration("storage.retention", s.retention.as_deref(), "7d"));
    let dead_letter_retention =
        p.take(duration("storage.dead_letter_retention", s.dead_letter_retention.as_deref(), "30d"));
    let dead_letter_max_bytes =
        at_least_one(p, "storage.dead_letter_max_bytes", s.dead_letter_max_bytes.unwrap_or(100 << 20));
    let max_bytes = s.max_bytes.map(|cap| at_least_one(p, "storage.max_bytes", cap));
    let backend = storage_backend(s, l, p, warnings);
    if matches!(backend, Some(StorageBackend::Postgres { .. })) && (s.min_free_bytes.is_some() || max_bytes.is_some()) {
        warnings.push(
            "storage.min_free_bytes and storage.max_bytes apply to SQLite only; PostgreSQL's disk is the server's \
             (pagerhook refuses webhooks while it answers disk full, SQLSTATE 53100)"
                .into(),
        );
    }
    Some(StorageConfig {
        backend: backend?,
        durability: durability?,
        retention: retention?,
        dead_letter_retention: dead_letter_retention?,
        dead_letter_max_bytes,
        min_free_bytes: s.min_free_bytes.unwrap_or(DEFAULT_MIN_FREE_BYTES),
        max_bytes,
    })
}

/// `storage.min_free_bytes` by default: room for what delivery writes while accepts are
/// refused. The WAL grows to its 4 MiB ceiling (and past it while a checkpoint is held up),
/// and each retried event adds an attempt row (about 100 bytes) per try; 64 MiB holds the
/// WAL several times over and a backlog of thousands of events retried for hours, and is
/// little on any disk a store lives on.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 64 << 20;

/// `[pagerduty]`; `None` if a value is wrong (the problem is in `p`).
fn validate_pagerduty(
    pd: &RawPagerDuty,
    l: &mut Lookup,
    p: &mut Problems,
    warnings: &mut Warnings,
) -> Option<PagerDutyConfig> {
    let events_url = p.take(events_url(pd.events_url.as_deref().unwrap_or(DEFAULT_EVENTS_URL), warnings));
    let default_key =
        pd.routing_key.as_deref().and_then(|r| p.take(routing_key("pagerduty.routing_key", r, l, warnings)));
    let mut named_keys = BTreeMap::new();
    for (name, r) in &pd.routing_keys {
        let field = format!("pagerduty.routing_keys.{name}");
        if let Some(k) = p.take(routing_key(&field, r, l, warnings)) {
            named_keys.insert(name.clone(), k);
        }
    }
    let timeout = p.take(duration("pagerduty.timeout", pd.timeout.as_deref(), "10s"));
    let own_key = pd
        .own_pages_routing_key
        .as_deref()
        .and_then(|r| p.take(routing_key("pagerduty.own_pages_routing_key", r, l, warnings)));
    let storm_page_after = p.take(duration("pagerduty.storm_page_after", pd.storm_page_after.as_deref(), "10m"));
    if storm_page_after.is_some_and(|d| d < MIN_STORM_PAGE_AFTER) {
        p.0.push("pagerduty.storm_page_after must be at least 1m (the pace is counted per minute)".into());
    }
    Some(PagerDutyConfig {
        events_url: events_url?,
        own_pages: pd.own_pages.unwrap_or(true),
        own_pages_routing_key: own_key.or_else(|| default_key.clone()),
        routing_key: default_key,
        routing_keys: named_keys,
        timeout: timeout?,
        storm_page_after: storm_page_after?,
    })
}

/// Events in flight at once by default. 64, not 32: each slot waits for its claim and its
/// outcome to pass the single writer, whose group commits also carry the accepts' fsync, so
/// 32 slots delivered only about 9 000 events/s on the bench machine while accepts ran at
/// 10 000-11 000 (7 500-10 000 queued after 8 s); 64 delivered every event during the run
/// at the same accept rate (bench/README.md). PagerDuty's per-key limits are `per_key_rate`'s
/// job, not this bound's.
pub const DEFAULT_CONCURRENCY: usize = 64;

/// `[delivery]`; `None` if a value is wrong (the problem is in `p`).
fn validate_delivery(d: &RawDelivery, p: &mut Problems) -> Option<DeliveryConfig> {
    let concurrency = at_least_one(p, "delivery.concurrency", d.concurrency.unwrap_or(DEFAULT_CONCURRENCY));
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
    let default_burst = if per_key_rate == 0 { 60 } else { per_key_rate.min(60) };
    let per_key_burst = at_least_one(p, "delivery.per_key_burst", d.per_key_burst.unwrap_or(default_burst));
    if per_key_rate > 0 && per_key_burst > per_key_rate {
        p.0.push(format!(
            "delivery.per_key_burst ({per_key_burst}) must be at most delivery.per_key_rate ({per_key_rate}): \
             the burst is how many of a minute's events may go at once, not extra to them"
        ));
    }
    Some(DeliveryConfig {
        concurrency,
        initial_backoff: initial_backoff?,
        max_backoff: max_backoff?,
        max_age: max_age?,
        per_key_rate,
        per_key_burst,
        lease: lease?,
        supersede: d.supersede.unwrap_or(true),
    })
}

/// `[mapping]`: a bool, which serde has checked.
fn validate_mapping(m: &RawMapping) -> MappingConfig {
    MappingConfig { native: m.native.unwrap_or(true) }
}

/// Every `[[source]]` without a problem of its own (those with one put it in `p`).
fn validate_sources(
    raw: Vec<toml::Spanned<RawSource>>,
    text: &str,
    l: &mut Lookup,
    p: &mut Problems,
    warnings: &mut Vec<String>,
) -> Vec<SourceConfig> {
    let mut names = HashSet::new();
    let mut sources = Vec::new();
    for spanned in raw {
        let line = line_of(text, spanned.span().start);
        let before = p.0.len();
        if let Some(src) = validate_source(spanned.into_inner(), line, l, p, warnings, &mut names) {
            if p.0.len() == before {
                sources.push(src);
            }
        }
    }
    if sources.is_empty() && p.0.is_empty() {
        warnings.push("no [[source]] is configured: every webhook will get 404".into());
    }
    for s in &sources {
        for other in s.may_close.iter().filter(|o| !names.contains(*o)) {
            p.0.push(format!(
                "source '{}': may_close names {other:?}, which is not a configured source (one of: {})",
                s.name,
                sources.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
    }
    sources
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
    warnings.extend(unchecked_tls(url.expose()));
    Some(StorageBackend::Postgres { url })
}

/// A warning when a PostgreSQL URL reaches a host off this machine without checking its
/// certificate: libpq's `prefer` (the default), `require`, `allow` and `disable` check none
/// unless `sslrootcert` is given, so whoever can redirect the connection reads the password
/// and the queue. Names neither the host nor the URL (it carries the password).
fn unchecked_tls(url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    let param = |name: &str| url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned());
    let mode = param("sslmode").unwrap_or_else(|| "prefer".to_string());
    let checked = match mode.as_str() {
        "verify-ca" | "verify-full" => true,
        // As libpq does, a root certificate makes these check the chain (tls.rs).
        "prefer" | "require" => param("sslrootcert").is_some(),
        _ => false,
    };
    let host = param("host").unwrap_or_else(|| url.host_str().unwrap_or_default().to_string());
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let local = host.is_empty()
        || host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    (!checked && !local).then(|| {
        format!(
            "storage.url: sslmode={mode} does not check the database server's certificate (prefer and disable may not even encrypt), \
             and the host is not this machine: anyone who can redirect the connection reads the password and the queue; \
             use sslmode=verify-full&sslrootcert=<the server's CA file>"
        )
    })
}

fn validate_source(
    s: RawSource,
    line: usize,
    l: &mut Lookup,
    p: &mut Problems,
    warnings: &mut Vec<String>,
    names: &mut HashSet<String>,
) -> Option<SourceConfig> {
    let c = s.common;
    let at = format!("line {line}: source '{}'", c.name);
    let valid_name = !c.name.is_empty()
        && c.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !valid_name {
        p.0.push(format!("{at}: name must be lower-case letters, digits, '-' or '_' (e.g. \"github\")"));
    }
    if !names.insert(c.name.clone()) {
        p.0.push(format!("{at}: another source already has this name"));
    }
    if c.mappings.is_empty() {
        let kind = match &s.kind {
            RawSourceKind::Github(_) => "github",
            RawSourceKind::Sns(_) => "sns",
            RawSourceKind::Generic(_) => "generic",
            RawSourceKind::Unknown(written) => written.as_str(),
        };
        p.0.push(format!("{at}: no mappings (e.g. mappings = [\"mappings/{kind}.toml\"])"));
    }
    let mappings = c.mappings.iter().map(|m| l.base.join(m)).collect();
    for h in c.drop_headers.iter().filter(|h| !verify::is_header_name(h)) {
        p.0.push(format!("{at}: drop_headers: {h:?} is not a header name (e.g. \"X-Internal-Token\")"));
    }
    let drop_headers = c.drop_headers.iter().map(|h| h.to_ascii_lowercase()).collect();
    let routing_key =
        c.routing_key.as_deref().and_then(|r| p.take(routing_key(&format!("{at}: routing_key"), r, l, warnings)));
    let kind = match s.kind {
        RawSourceKind::Github(g) => github_source(&at, g, l, p, warnings),
        RawSourceKind::Generic(g) => generic_source(&at, g, l, p, warnings)?,
        RawSourceKind::Sns(mut raw) => sns::validate_sns(&at, &mut raw, l.env, l.base, p, warnings)?,
        RawSourceKind::Unknown(other) => {
            p.0.push(format!("{at}: unknown kind {other:?} (expected one of: {})", source_kinds()));
            return None;
        }
    };
    let resolve_when_silent =
        p.take(duration(&format!("{at}: resolve_when_silent"), c.resolve_when_silent.as_deref(), "0s"))?;
    if let (SourceKindConfig::Github { .. } | SourceKindConfig::Sns { .. }, false) =
        (&kind, resolve_when_silent.is_zero())
    {
        warnings.push(format!(
            "{at}: resolve_when_silent is set, but GitHub and CloudWatch (SNS) never repeat a firing alert: \
             every incident of this source will be resolved after that long, still failing or not"
        ));
    }
    Some(SourceConfig {
        name: c.name,
        kind,
        mappings,
        routing_key,
        routing_keys: c.routing_keys,
        max_events_per_request: c.max_events_per_request.unwrap_or(1000),
        max_event_bytes_per_request: at_least_one(
            p,
            &format!("{at}: max_event_bytes_per_request"),
            c.max_event_bytes_per_request.unwrap_or(16 << 20),
        ),
        drop_headers,
        unmatched: c.unmatched.unwrap_or_default(),
        may_close: c.may_close,
        resolve_delay: p.take(duration(&format!("{at}: resolve_delay"), c.resolve_delay.as_deref(), "0s"))?,
        resolve_when_silent,
    })
}

/// `kind = "github"`: its secrets.
fn github_source(
    at: &str,
    g: RawSecrets,
    l: &mut Lookup,
    p: &mut Problems,
    warnings: &mut Warnings,
) -> SourceKindConfig {
    if g.secrets.is_empty() {
        p.0.push(format!(
            "{at}: kind \"github\" needs secrets = [\"env:GITHUB_WEBHOOK_SECRET\"] (the webhook's secret)"
        ));
    }
    SourceKindConfig::Github { secrets: source_secrets(at, &g.secrets, l, p, warnings) }
}

/// `kind = "generic"`: its verify scheme, with the secrets written on the source or in verify.
fn generic_source(
    at: &str,
    mut g: RawGeneric,
    l: &mut Lookup,
    p: &mut Problems,
    warnings: &mut Warnings,
) -> Option<SourceKindConfig> {
    let in_verify = g.verify.as_mut().map(raw::RawVerify::take_secrets).unwrap_or_default();
    if !in_verify.is_empty() {
        if g.secrets.is_empty() {
            g.secrets = in_verify;
        } else {
            p.0.push(format!("{at}: secrets are written both on the source and in verify: keep one list"));
        }
    }
    let secrets = source_secrets(at, &g.secrets, l, p, warnings);
    let verify = verify::validate_verify(at, g.verify, g.secrets.len(), secrets, p, warnings)?;
    Some(SourceKindConfig::Generic { verify })
}

/// A source's secret references, resolved; a literal one is noted.
fn source_secrets(
    at: &str,
    written: &[raw::RawSecret],
    l: &mut Lookup,
    p: &mut Problems,
    warnings: &mut Warnings,
) -> Vec<Secret> {
    let mut secrets = Vec::new();
    for (i, r) in written.iter().enumerate() {
        let sref = SecretRef::parse(r);
        if sref.is_literal() {
            warnings.push(format!("{at}: secrets[{i}] is written in the config file; prefer env: or file:"));
        }
        if let Some(v) = p.take(l.secret(&format!("{at}: secrets[{i}]"), &sref)).flatten() {
            secrets.push(v);
        }
    }
    secrets
}

#[cfg(test)]
mod tests;
