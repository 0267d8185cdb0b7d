//! The config file as written: serde structs that reject unknown keys.
//!
//! These are the reference documentation of `pagerhook.toml`; `super::validate` turns them
//! into a [`super::Config`] that cannot be wrong.

use serde::Deserialize;
use std::collections::BTreeMap;
use tagged::{fields_of, Tagged};
use toml::Spanned;

mod tagged;

/// A secret as written: `env:NAME`, `file:PATH` or the secret itself. Its `Debug` shows a
/// reference but never a literal, so no raw struct can print a secret, whoever formats it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct RawSecret(String);

impl std::ops::Deref for RawSecret {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for RawSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.starts_with("env:") || self.0.starts_with("file:") {
            write!(f, "{:?}", self.0)
        } else {
            f.write_str("***")
        }
    }
}

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub storage: RawStorage,
    #[serde(default)]
    pub pagerduty: RawPagerDuty,
    #[serde(default)]
    pub delivery: RawDelivery,
    #[serde(default)]
    pub mapping: RawMapping,
    /// `[[source]]` tables: one per webhook endpoint.
    #[serde(default, rename = "source")]
    pub sources: Vec<Spanned<RawSource>>,
}

/// `[server]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Webhook listener, default `0.0.0.0:8080`.
    pub listen: Option<String>,
    /// Admin listener (`/healthz`, `/admin/*`), default `127.0.0.1:8081`.
    pub admin_listen: Option<String>,
    /// Largest accepted webhook body, default 1 MiB; larger ones get 413.
    pub max_body_bytes: Option<usize>,
    /// Bearer token for `/admin/*` (a secret reference).
    pub admin_token: Option<RawSecret>,
    /// Host names the admin listener answers to besides IP literals and `localhost`, e.g.
    /// `["pagerhook.internal"]`: any other `Host` is refused (DNS rebinding).
    pub admin_hosts: Option<Vec<String>>,
    /// Threads serving webhooks, default the number of CPUs (at least 2).
    pub workers: Option<usize>,
    /// How long a client may take to send a request, default `30s`: the headers of a
    /// connection's first request must arrive within it, and every body within it of its
    /// headers; else 408 and the connection is closed.
    pub request_timeout: Option<String>,
    /// Open webhook connections per worker, default 1024; further ones wait in the listen
    /// backlog until one closes.
    pub max_connections: Option<usize>,
    /// How long an idle connection is kept open for another request, default `5s`; `"0s"`
    /// closes each connection after its answer.
    pub keep_alive: Option<String>,
    /// The console's public address (`https://pagerhook.example.com`), if it has one:
    /// pagerhook's own pages link to it. No default: without it they carry no link.
    pub admin_url: Option<String>,
}

/// `[storage]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    /// SQLite database file, default `data/pagerhook.db` (relative to the config file).
    pub path: Option<String>,
    /// PostgreSQL URL instead of SQLite, a secret reference (it carries a password), e.g.
    /// `env:PAGERHOOK_DATABASE_URL`: replicas sharing it share one queue.
    pub url: Option<RawSecret>,
    /// SQLite only: `"fsync"` (default: every accepted webhook is on disk before the 2xx) or
    /// `"process"`. PostgreSQL's is the server's `synchronous_commit`.
    pub durability: Option<String>,
    /// How long delivered events and inbound payloads are kept, default `7d`.
    pub retention: Option<String>,
    /// How long dead letters are kept, default `30d`; then they are dropped, logged and counted.
    pub dead_letter_retention: Option<String>,
    /// Most bytes of dead letters (their stored bodies) kept per source, default 100 MiB; the
    /// oldest beyond it are dropped, logged and counted.
    pub dead_letter_max_bytes: Option<u64>,
    /// SQLite only: free bytes kept on the store's filesystem, default 64 MiB (67108864). Below
    /// it webhooks are answered 503 and `/readyz` says why, while delivery goes on in the room
    /// left; a quarter of it (at most 16 MiB) is held in `<db>-reserve` for delivery should the
    /// disk fill anyway; 0 waits for the disk to be full.
    pub min_free_bytes: Option<u64>,
    /// SQLite only: most bytes the store may use (the database's used pages and the payload
    /// log), default none. Over it webhooks are answered 503 until delivery and pruning make room.
    pub max_bytes: Option<u64>,
}

/// `[pagerduty]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPagerDuty {
    /// Events API base URL, default `https://events.pagerduty.com`.
    pub events_url: Option<String>,
    /// Default routing (integration) key, a secret reference.
    pub routing_key: Option<RawSecret>,
    /// Named routing keys that mapping rules may choose with `routing_key = "{{...}}"`.
    #[serde(default)]
    pub routing_keys: BTreeMap<String, RawSecret>,
    /// Timeout of one request to PagerDuty, default `10s`.
    pub timeout: Option<String>,
    /// pagerhook pages about what it could not relay (a dead letter: mapping failed, too many
    /// events, a dead trigger, an unmatched payload where the source says `page`), one
    /// incident per source and reason, resolved when none is left. Default `true`.
    pub own_pages: Option<bool>,
    /// Where those pages go, a secret reference; default `routing_key` (else the source's
    /// own). Best a key of its own: the failing key is often the source's.
    pub own_pages_routing_key: Option<RawSecret>,
    /// pagerhook pages on a routing key (once, resolved when the storm has drained) when its
    /// backlog would take longer than this to send at `delivery.per_key_rate`. Default `10m`,
    /// at least `1m`. Needs `own_pages`.
    pub storm_page_after: Option<String>,
}

/// `[delivery]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDelivery {
    /// Events in flight at once (different keys), default 32.
    pub concurrency: Option<usize>,
    /// First retry delay, default `1s`.
    pub initial_backoff: Option<String>,
    /// Longest retry delay, default `5m`.
    pub max_backoff: Option<String>,
    /// An event still undelivered after this long is dead-lettered, default `24h`.
    pub max_age: Option<String>,
    /// Events a minute per routing key, default 120, 0 = unlimited.
    pub per_key_rate: Option<u32>,
    /// Burst allowed per routing key, default 60.
    pub per_key_burst: Option<u32>,
    /// How long a claimed event is reserved for the replica sending it, default `15s`, at
    /// least `3s`. Renewed every third of it while the attempt runs (so it may be shorter
    /// than `pagerduty.timeout`); a replica that dies holds its events at most this long.
    pub lease: Option<String>,
    /// A trigger still waiting (never sent) when its lane's resolve arrives: neither is sent,
    /// both are recorded `superseded`. Default `true`; `false` sends every flap to PagerDuty.
    pub supersede: Option<bool>,
}

/// `[mapping]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMapping {
    /// Render templates with pagerhook's native renderer where it can (default `true`: the
    /// same output as handlebars, for less CPU); `false` renders every one through handlebars,
    /// the fallback for an operator who suspects the native renderer.
    pub native: Option<bool>,
}

/// `[[source]]`: one endpoint, `POST /hooks/{name}`. Its `kind` decides which other keys it
/// takes: a key of another kind is refused where it is written.
#[derive(Debug)]
pub struct RawSource {
    pub common: RawSourceCommon,
    /// `kind = "github"`, `"sns"` or `"generic"`, with that kind's own keys.
    pub kind: RawSourceKind,
}

/// The keys every kind of source takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSourceCommon {
    /// URL segment and name in logs: `[a-z0-9_-]+`.
    pub name: String,
    /// Mapping files, relative to the config file.
    #[serde(default)]
    pub mappings: Vec<String>,
    /// Routing key for this source's events (secret reference), else `[pagerduty] routing_key`.
    pub routing_key: Option<RawSecret>,
    /// Names in `[pagerduty.routing_keys]` this source's rules may choose (default: all).
    pub routing_keys: Option<Vec<String>>,
    /// Most events one request may produce (default 1000); more is kept as a dead letter.
    pub max_events_per_request: Option<usize>,
    /// Most bytes the events of one request may total (their JSON, default 16 MiB); more is
    /// kept as a dead letter, as too many events are.
    pub max_event_bytes_per_request: Option<usize>,
    /// Request headers never stored, shown or given to templates, besides those that carry
    /// credentials anyway (`Authorization`, `X-Api-Key`, ... and the source's signature header).
    #[serde(default)]
    pub drop_headers: Vec<String>,
    /// What to do with a payload no rule matched (default: ignore).
    pub unmatched: Option<Unmatched>,
    /// Other sources whose incidents this one may acknowledge and resolve. By default a
    /// source closes only the incidents it opened: an acknowledge or resolve of an incident
    /// another source opened is kept as a dead letter naming both.
    #[serde(default)]
    pub may_close: Vec<String>,
    /// Flap damping: how long this source's resolves wait before they are sent (e.g. "2m";
    /// default 0, off). A trigger of the same incident arriving meanwhile cancels both: the
    /// incident stays open and nobody is paged again.
    pub resolve_delay: Option<String>,
    /// For senders that repeat firing alerts (Alertmanager's `repeat_interval`, Grafana's
    /// repeat): an incident this source opened and has not re-triggered for this long (e.g.
    /// "5h") is resolved by pagerhook. Default 0, off.
    pub resolve_when_silent: Option<String>,
}

/// What becomes of a payload no rule of its source's mapping matched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unmatched {
    /// Answered `200 ignored` and recorded, not kept (GitHub: most events are not pages).
    #[default]
    Ignore,
    /// Kept as an `unmatched` dead letter, to inspect and replay once a rule is added.
    Keep,
    /// Kept as for `keep`, and pagerhook pages about it (`pagerduty.own_pages`).
    Page,
}

/// The kind of a source and the keys only it takes.
#[derive(Debug)]
pub enum RawSourceKind {
    /// `kind = "github"`: its shared secrets.
    Github(RawSecrets),
    Sns(RawSns),
    Generic(RawGeneric),
    /// A kind this build does not know, as written: validation reports it with the source's
    /// other problems.
    Unknown(String),
}

/// `kind = "generic"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGeneric {
    /// The scheme's secrets (secret references); several = rotation. May be written here or
    /// inside `verify`, but not both.
    #[serde(default)]
    pub secrets: Vec<RawSecret>,
    /// How requests are checked: `verify = { scheme = "hmac", header = "X-Signature" }`.
    pub verify: Option<RawVerify>,
}

/// `kind = "sns"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSns {
    /// The TopicArns whose messages are accepted and whose subscriptions are confirmed.
    pub topics: Option<Vec<String>>,
    /// `true` accepts every topic; must be written out instead of `topics`.
    pub any_topic: Option<bool>,
    /// Confirm subscriptions by visiting their SubscribeURL (default `false`: the URL is
    /// logged for a human to open).
    pub auto_confirm: Option<bool>,
    /// Signing certificates pinned by SigningCertURL, `{ "<url>" = "file:cert.pem" }`; a
    /// pinned URL is never fetched.
    #[serde(default)]
    pub trusted_certs: BTreeMap<String, String>,
    /// `true` lets templates read `sns.MessageAttributes` (default `false`). AWS does not
    /// sign them: anyone who can deliver a genuine message to this URL can change them.
    pub unsigned_message_attributes: Option<bool>,
    /// The `SignatureVersion`s accepted, `[1, 2]` by default; `[2]` refuses SHA1 signatures
    /// (set the topic's `SignatureVersion` attribute to 2 first).
    pub signature_versions: Option<Vec<u8>>,
}

/// The names `kind` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKindName {
    Github,
    Generic,
    Sns,
}

impl SourceKindName {
    pub const ALL: [SourceKindName; 3] = [SourceKindName::Github, SourceKindName::Generic, SourceKindName::Sns];

    /// As written in config.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKindName::Github => "github",
            SourceKindName::Generic => "generic",
            SourceKindName::Sns => "sns",
        }
    }

    fn keys(self) -> &'static [&'static str] {
        match self {
            SourceKindName::Github => fields_of::<RawSecrets>(),
            SourceKindName::Generic => fields_of::<RawGeneric>(),
            SourceKindName::Sns => fields_of::<RawSns>(),
        }
    }
}

impl Tagged for RawSource {
    const TAG: &'static str = "kind";
    type Name = SourceKindName;
    type Common = RawSourceCommon;
    type Kind = RawSourceKind;

    fn kind<'de, D: serde::Deserializer<'de>>(name: SourceKindName, d: D) -> Result<RawSourceKind, D::Error> {
        Ok(match name {
            SourceKindName::Github => RawSourceKind::Github(RawSecrets::deserialize(d)?),
            SourceKindName::Generic => RawSourceKind::Generic(RawGeneric::deserialize(d)?),
            SourceKindName::Sns => RawSourceKind::Sns(RawSns::deserialize(d)?),
        })
    }

    fn unknown(written: String) -> RawSourceKind {
        RawSourceKind::Unknown(written)
    }

    fn build(common: RawSourceCommon, kind: RawSourceKind) -> RawSource {
        RawSource { common, kind }
    }

    fn misplaced(name: SourceKindName, key: &str) -> Option<String> {
        match (name, key) {
            (SourceKindName::Github, "verify") => Some(
                "kind \"github\" checks X-Hub-Signature-256 itself: remove verify (it is for kind \"generic\")".into(),
            ),
            (SourceKindName::Sns, "secrets" | "verify") => {
                Some("kind \"sns\" checks AWS's certificate signature itself: remove secrets and verify".into())
            }
            _ => {
                let owners: Vec<_> =
                    SourceKindName::ALL.into_iter().filter(|k| k.keys().contains(&key)).map(|k| k.as_str()).collect();
                (!owners.is_empty()).then(|| format!("{key} is for kind \"{}\" only", owners.join("\" or \"")))
            }
        }
    }
}

impl<'de> Deserialize<'de> for RawSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        tagged::deserialize(d)
    }
}

/// `verify = { scheme = "...", ... }` of a `generic` source. Each scheme takes its own options.
#[derive(Debug)]
pub enum RawVerify {
    Hmac(RawHmac),
    StandardWebhooks(RawTimestamped),
    Stripe(RawTimestamped),
    Slack(RawTimestamped),
    Gitlab(RawSecrets),
    Bearer(RawSecrets),
    Basic(RawSecrets),
    None(RawNone),
    /// A scheme this build does not know, as written.
    Unknown(String),
}

/// `scheme = "hmac"`: an HMAC of the body in one header.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHmac {
    /// The header carrying the signature (required), e.g. `X-Signature`.
    pub header: Option<String>,
    /// `sha1`, `sha256` (default) or `sha512`.
    pub algorithm: Option<String>,
    /// `hex` (default) or `base64`.
    pub encoding: Option<String>,
    /// Text before the signature in the header, e.g. `sha256=`.
    pub prefix: Option<String>,
    /// The signing secrets (secret references), unless written as the source's `secrets`.
    #[serde(default)]
    pub secrets: Vec<RawSecret>,
}

/// `scheme = "standard-webhooks"`, `"stripe"` or `"slack"`: a signed timestamp.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimestamped {
    /// How far the signed timestamp may be from now, default `5m`.
    pub tolerance: Option<String>,
    /// The signing secrets (secret references), unless written as the source's `secrets`.
    #[serde(default)]
    pub secrets: Vec<RawSecret>,
}

/// Secrets alone: a `github` source's, or the tokens of `scheme = "gitlab"`, `"bearer"` or
/// `"basic"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecrets {
    /// Secret references; several = rotation. A scheme's may be written as the source's
    /// `secrets` instead.
    #[serde(default)]
    pub secrets: Vec<RawSecret>,
}

/// `scheme = "none"`: takes nothing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNone {}

/// The names `scheme` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SchemeName {
    Hmac,
    StandardWebhooks,
    Stripe,
    Slack,
    Gitlab,
    Bearer,
    Basic,
    None,
}

impl SchemeName {
    pub const ALL: [SchemeName; 8] = [
        SchemeName::Hmac,
        SchemeName::StandardWebhooks,
        SchemeName::Stripe,
        SchemeName::Slack,
        SchemeName::Gitlab,
        SchemeName::Bearer,
        SchemeName::Basic,
        SchemeName::None,
    ];

    /// As written in config.
    pub fn as_str(self) -> &'static str {
        match self {
            SchemeName::Hmac => "hmac",
            SchemeName::StandardWebhooks => "standard-webhooks",
            SchemeName::Stripe => "stripe",
            SchemeName::Slack => "slack",
            SchemeName::Gitlab => "gitlab",
            SchemeName::Bearer => "bearer",
            SchemeName::Basic => "basic",
            SchemeName::None => "none",
        }
    }

    /// The options the scheme takes besides `scheme` and `secrets`.
    pub fn options(self) -> Vec<&'static str> {
        let keys = match self {
            SchemeName::Hmac => fields_of::<RawHmac>(),
            SchemeName::StandardWebhooks | SchemeName::Stripe | SchemeName::Slack => fields_of::<RawTimestamped>(),
            SchemeName::Gitlab | SchemeName::Bearer | SchemeName::Basic => fields_of::<RawSecrets>(),
            SchemeName::None => fields_of::<RawNone>(),
        };
        keys.iter().copied().filter(|k| *k != "secrets").collect()
    }
}

/// No key is common to every scheme.
#[derive(Debug, Default, Deserialize)]
pub struct NoCommon {}

impl Tagged for RawVerify {
    const TAG: &'static str = "scheme";
    type Name = SchemeName;
    type Common = NoCommon;
    type Kind = RawVerify;

    fn kind<'de, D: serde::Deserializer<'de>>(name: SchemeName, d: D) -> Result<RawVerify, D::Error> {
        Ok(match name {
            SchemeName::Hmac => RawVerify::Hmac(RawHmac::deserialize(d)?),
            SchemeName::StandardWebhooks => RawVerify::StandardWebhooks(RawTimestamped::deserialize(d)?),
            SchemeName::Stripe => RawVerify::Stripe(RawTimestamped::deserialize(d)?),
            SchemeName::Slack => RawVerify::Slack(RawTimestamped::deserialize(d)?),
            SchemeName::Gitlab => RawVerify::Gitlab(RawSecrets::deserialize(d)?),
            SchemeName::Bearer => RawVerify::Bearer(RawSecrets::deserialize(d)?),
            SchemeName::Basic => RawVerify::Basic(RawSecrets::deserialize(d)?),
            SchemeName::None => RawVerify::None(RawNone::deserialize(d)?),
        })
    }

    fn unknown(written: String) -> RawVerify {
        RawVerify::Unknown(written)
    }

    fn build(_: NoCommon, kind: RawVerify) -> RawVerify {
        kind
    }

    fn misplaced(name: SchemeName, key: &str) -> Option<String> {
        if (name, key) == (SchemeName::None, "secrets") {
            return Some(
                "verify scheme \"none\" checks nothing, so secrets would be ignored: remove them or pick a scheme that uses them"
                    .into(),
            );
        }
        let elsewhere = SchemeName::ALL.into_iter().any(|s| s.options().contains(&key));
        elsewhere.then(|| {
            let options = name.options();
            let takes = if options.is_empty() { "none".to_string() } else { options.join(", ") };
            format!("verify option {key} does not apply to scheme \"{}\" (its options: {takes})", name.as_str())
        })
    }
}

impl<'de> Deserialize<'de> for RawVerify {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        tagged::deserialize(d)
    }
}
