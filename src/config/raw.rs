//! The config file as written: serde structs that reject unknown keys.
//!
//! These are the reference documentation of `pagerhook.toml`; `super::validate` turns them
//! into a [`super::Config`] that cannot be wrong.

use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

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
    pub admin_token: Option<String>,
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
}

/// `[storage]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    /// SQLite database file, default `data/pagerhook.db` (relative to the config file).
    pub path: Option<String>,
    /// PostgreSQL URL instead of SQLite, a secret reference (it carries a password), e.g.
    /// `env:PAGERHOOK_DATABASE_URL`: replicas sharing it share one queue.
    pub url: Option<String>,
    /// SQLite only: `"fsync"` (default: every accepted webhook is on disk before the 2xx) or
    /// `"process"`. PostgreSQL's is the server's `synchronous_commit`.
    pub durability: Option<String>,
    /// How long delivered events and inbound payloads are kept, default `7d`.
    pub retention: Option<String>,
}

/// `[pagerduty]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPagerDuty {
    /// Events API base URL, default `https://events.pagerduty.com`.
    pub events_url: Option<String>,
    /// Default routing (integration) key, a secret reference.
    pub routing_key: Option<String>,
    /// Named routing keys that mapping rules may choose with `routing_key = "{{...}}"`.
    #[serde(default)]
    pub routing_keys: BTreeMap<String, String>,
    /// Timeout of one request to PagerDuty, default `10s`.
    pub timeout: Option<String>,
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
}

/// `[[source]]`: one endpoint, `POST /hooks/{name}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    /// URL segment and name in logs: `[a-z0-9_-]+`.
    pub name: String,
    /// `github`, `sns` or `generic`.
    pub kind: String,
    /// Shared secrets (secret references); several = rotation.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// How a `generic` source checks requests: `verify = { scheme = "hmac", header = "X-Signature" }`.
    pub verify: Option<RawVerify>,
    /// Mapping files, relative to the config file.
    #[serde(default)]
    pub mappings: Vec<String>,
    /// Routing key for this source's events (secret reference), else `[pagerduty] routing_key`.
    pub routing_key: Option<String>,
    /// Most events one request may produce (default 1000); more is refused with 413.
    pub max_events_per_request: Option<usize>,
    /// `sns`: the TopicArns whose messages are accepted and whose subscriptions are confirmed.
    pub topics: Option<Vec<String>>,
    /// `sns`: `true` accepts every topic; must be written out instead of `topics`.
    pub any_topic: Option<bool>,
    /// `sns`: confirm subscriptions by visiting their SubscribeURL (default `false`: the URL is
    /// logged for a human to open).
    pub auto_confirm: Option<bool>,
    /// `sns`: signing certificates pinned by SigningCertURL, `{ "<url>" = "file:cert.pem" }`;
    /// a pinned URL is never fetched.
    #[serde(default)]
    pub trusted_certs: BTreeMap<String, String>,
    /// `sns`: `true` lets templates read `sns.MessageAttributes` (default `false`). AWS does not
    /// sign them: anyone who can deliver a genuine message to this URL can change them.
    pub unsigned_message_attributes: Option<bool>,
}

/// `verify = { scheme = "...", ... }` of a `generic` source. Which options apply depends on
/// the scheme.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVerify {
    /// `hmac`, `standard-webhooks`, `stripe`, `slack`, `gitlab`, `bearer`, `basic` or `none`.
    pub scheme: String,
    /// `hmac`: the header carrying the signature (required), e.g. `X-Signature`.
    pub header: Option<String>,
    /// `hmac`: `sha1`, `sha256` (default) or `sha512`.
    pub algorithm: Option<String>,
    /// `hmac`: `hex` (default) or `base64`.
    pub encoding: Option<String>,
    /// `hmac`: text before the signature in the header, e.g. `sha256=`.
    pub prefix: Option<String>,
    /// `standard-webhooks`, `stripe`, `slack`: how far the signed timestamp may be from now,
    /// default `5m`.
    pub tolerance: Option<String>,
    /// The scheme's secrets (secret references; several = rotation). May be written here, as
    /// DESIGN.md shows, or as the source's `secrets`, but not both.
    #[serde(default)]
    pub secrets: Vec<String>,
}
