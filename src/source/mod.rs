//! Sources: one file per kind. Each turns raw bytes and headers into a [`Verified`] request,
//! or refuses them.
//!
//! **Invariant:** nothing parses, logs or stores a body before its signature is verified,
//! and verification runs on the exact bytes received. [`Verified`] has private fields and
//! only this module builds one, so `mapping` and `queue` cannot see an unverified body.

mod generic;
mod github;
mod sns;
mod verify;

pub use sns::{AwsFetch, AwsUrl, FetchError, HttpsFetch};

use crate::config::{Config, SourceConfig, SourceKindConfig};
use crate::mapping::{Mapping, RoutingKeys};
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Request headers with lower-case names; repeated headers joined with ", ".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(BTreeMap<String, String>);

impl Headers {
    /// Builds from (name, value) pairs; names are lower-cased.
    pub fn from_pairs<I, K, V>(pairs: I) -> Headers
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut m: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in pairs {
            let k = k.as_ref().to_ascii_lowercase();
            m.entry(k)
                .and_modify(|e| {
                    e.push_str(", ");
                    e.push_str(v.as_ref());
                })
                .or_insert_with(|| v.as_ref().to_string());
        }
        Headers(m)
    }

    /// A header's value by (any-case) name.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(&name.to_ascii_lowercase()).map(String::as_str)
    }

    /// The headers worth keeping with a stored payload: not credentials.
    pub fn to_stored(&self) -> Value {
        Value::Object(self.without_credentials().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect())
    }

    /// Every header but those carrying credentials (`Authorization: Bearer`, `X-Gitlab-Token`,
    /// ...), which neither storage nor templates get.
    fn without_credentials(&self) -> impl Iterator<Item = (&String, &String)> {
        const DROP: &[&str] = &["authorization", "cookie", "x-gitlab-token", "proxy-authorization"];
        self.0.iter().filter(|(k, _)| !DROP.contains(&k.as_str()))
    }

    /// Rebuilds stored headers.
    pub fn from_stored(v: &Value) -> Headers {
        Headers::from_pairs(
            v.as_object().into_iter().flatten().map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default())),
        )
    }
}

/// What an incoming request carries, before anything is trusted.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub headers: Headers,
    /// The raw query string.
    pub query: String,
    /// The exact bytes received.
    pub body: Bytes,
}

/// Why a request was refused. Messages name the check, never a secret or expected value.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source '{source_name}': {reason}")]
    Unauthorized { source_name: String, reason: String },
    /// Genuine, perhaps, but not wanted here (an SNS topic not in `topics`).
    #[error("source '{source_name}': {reason}")]
    Forbidden { source_name: String, reason: String },
    #[error("source '{source_name}': {reason}")]
    BadRequest { source_name: String, reason: String },
    #[error("source '{source_name}': unsupported content type {content_type:?} (expected {expected})")]
    UnsupportedMediaType { source_name: String, content_type: String, expected: &'static str },
    /// Could not be checked now, for a reason on our side or AWS's (an SNS signing certificate
    /// that could not be fetched): the sender should retry.
    #[error("source '{source_name}': {reason}; retry later")]
    Unavailable { source_name: String, reason: String },
}

impl SourceError {
    /// A closed-set name for the failed check, for metrics (messages carry details).
    pub fn reason_class(&self) -> &'static str {
        match self {
            SourceError::BadRequest { .. } => "bad_request",
            SourceError::UnsupportedMediaType { .. } => "unsupported_media_type",
            SourceError::Forbidden { .. } => "forbidden",
            SourceError::Unavailable { .. } => "certificate_unavailable",
            SourceError::Unauthorized { reason, .. } => {
                let r = reason.as_str();
                if r.contains("SigningCertURL") || r.contains("signing certificate") {
                    "signing_certificate"
                } else if r.contains("SignatureVersion") {
                    "signature_version"
                } else if r.contains("mismatch") {
                    "signature_mismatch"
                } else if r.contains("tolerance") {
                    "stale_timestamp"
                } else if r.starts_with("missing") {
                    "missing_credentials"
                } else if r.starts_with("malformed") {
                    "malformed_credentials"
                } else {
                    "unauthorized"
                }
            }
        }
    }
}

/// What to do with a verified request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Run the mappings.
    Map,
    /// Answer 200 and emit nothing (e.g. GitHub's `ping`).
    Ignore(&'static str),
}

/// A request whose signature checked out and whose body parsed. Only `source` builds one.
#[derive(Debug, Clone)]
pub struct Verified {
    source: String,
    headers: Headers,
    query: BTreeMap<String, String>,
    body: Value,
    raw: Bytes,
    delivery_id: Option<String>,
    disposition: Disposition,
    /// SNS only: the envelope (TopicArn, Subject, ...), while `body` is its inner Message.
    sns: Option<Value>,
}

impl Verified {
    /// The source's name.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The sender's id for this delivery (GitHub `X-GitHub-Delivery`, Standard Webhooks
    /// `webhook-id`), used to drop repeats.
    pub fn delivery_id(&self) -> Option<&str> {
        self.delivery_id.as_deref()
    }

    /// Whether to map it or ignore it.
    pub fn disposition(&self) -> &Disposition {
        &self.disposition
    }

    /// The bytes as received, for the durable record of the delivery.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// Headers as received.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// What templates see: `body`, `headers` (less credentials), `query`, `source`, and for
    /// SNS `sns`.
    pub fn template_context(&self) -> Value {
        self.context_with(self.body.clone())
    }

    /// `template_context`, moving the parsed body into it instead of copying it (the copy and
    /// its drop were about 9 % of the accept path's CPU). Leaves `null` as the body: for the
    /// one place that maps a live request once and then keeps only its raw bytes.
    pub fn take_template_context(&mut self) -> Value {
        let body = std::mem::take(&mut self.body);
        self.context_with(body)
    }

    fn context_with(&self, body: Value) -> Value {
        let headers: BTreeMap<_, _> = self.headers.without_credentials().collect();
        let mut context = json!({
            "headers": headers,
            "query": self.query,
            "source": self.source,
        });
        context["body"] = body;
        if let Some(sns) = &self.sns {
            context["sns"] = sns.clone();
        }
        context
    }
}

fn parse_query(q: &str) -> BTreeMap<String, String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(q).unwrap_or_default().into_iter().collect()
}

/// A configured source: how to verify it and how to map it.
#[derive(Debug)]
pub struct Source {
    name: String,
    kind: SourceKind,
    mapping: Mapping,
    max_events_per_request: usize,
}

/// The closed set of source kinds.
#[derive(Debug)]
enum SourceKind {
    Github(github::Github),
    Generic(generic::Generic),
    /// Boxed: its certificate caches make it several times the size of the others.
    Sns(Box<sns::Sns>),
}

impl Source {
    fn build(
        cfg: &SourceConfig,
        keys: RoutingKeys,
        aws: &Arc<dyn AwsFetch>,
        retention: std::time::Duration,
    ) -> Result<(Source, Vec<String>), Vec<String>> {
        let (mapping, warnings) = Mapping::load(&cfg.mappings, keys)
            .map_err(|errs| errs.into_iter().map(|e| format!("source '{}': {e}", cfg.name)).collect::<Vec<_>>())?;
        let kind = match &cfg.kind {
            SourceKindConfig::Github { secrets } => SourceKind::Github(github::Github::new(secrets.clone())),
            SourceKindConfig::Generic { verify } => SourceKind::Generic(
                generic::Generic::new(verify).map_err(|e| vec![format!("source '{}': {e}", cfg.name)])?,
            ),
            SourceKindConfig::Sns { topics, auto_confirm, trusted_certs, unsigned_message_attributes } => {
                let settings = sns::SnsSettings {
                    topics: topics.clone(),
                    auto_confirm: *auto_confirm,
                    unsigned_message_attributes: *unsigned_message_attributes,
                    max_age: retention,
                };
                SourceKind::Sns(Box::new(sns::Sns::new(settings, trusted_certs, aws.clone()).map_err(|errs| {
                    errs.into_iter().map(|e| format!("source '{}': {e}", cfg.name)).collect::<Vec<_>>()
                })?))
            }
        };
        let warnings = warnings.into_iter().map(|w| format!("source '{}': {w}", cfg.name)).collect();
        Ok((
            Source { name: cfg.name.clone(), kind, mapping, max_events_per_request: cfg.max_events_per_request },
            warnings,
        ))
    }

    /// The source's name (`/hooks/{name}`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The compiled mapping rules.
    pub fn mapping(&self) -> &Mapping {
        &self.mapping
    }

    /// Most events one request may produce.
    pub fn max_events_per_request(&self) -> usize {
        self.max_events_per_request
    }

    /// Checks a request on its raw bytes, then parses it. Async because an SNS source may
    /// have to fetch AWS's signing certificate first.
    pub async fn verify(&self, req: Incoming) -> Result<Verified, SourceError> {
        match &self.kind {
            SourceKind::Github(g) => g.verify(&self.name, req),
            SourceKind::Generic(g) => g.verify(&self.name, req),
            SourceKind::Sns(s) => s.verify(&self.name, req).await,
        }
    }

    /// Rebuilds a request from the durable record of one this source verified before
    /// (replay), or from a file the operator gave `pagerhook render`: both are trusted by
    /// where they come from, not by a signature.
    pub fn trusted(&self, headers: Headers, query: &str, body: Bytes) -> Result<Verified, SourceError> {
        match &self.kind {
            SourceKind::Github(_) => github::parse(&self.name, headers, query, body),
            SourceKind::Generic(g) => g.parse(&self.name, headers, query, body),
            SourceKind::Sns(s) => s.parse(&self.name, headers, query, body),
        }
    }
}

/// Every configured source by name, compiled once per config load.
#[derive(Debug, Default)]
pub struct Sources {
    by_name: HashMap<String, Arc<Source>>,
}

impl Sources {
    /// Compiles every source's verifier and mappings; reports all problems. SNS sources reach
    /// AWS over HTTPS.
    pub fn build(cfg: &Config) -> Result<(Sources, Vec<String>), Vec<String>> {
        Sources::build_with(cfg, Arc::new(HttpsFetch::new()))
    }

    /// [`Sources::build`] with SNS sources reaching AWS through `aws` (tests inject a fake).
    pub fn build_with(cfg: &Config, aws: Arc<dyn AwsFetch>) -> Result<(Sources, Vec<String>), Vec<String>> {
        let mut by_name = HashMap::new();
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        for s in &cfg.sources {
            let keys = RoutingKeys {
                default: s.routing_key.clone().or_else(|| cfg.pagerduty.routing_key.clone()),
                named: cfg.pagerduty.routing_keys.clone(),
            };
            match Source::build(s, keys, &aws, cfg.storage.retention) {
                Ok((src, mut w)) => {
                    warnings.append(&mut w);
                    by_name.insert(s.name.clone(), Arc::new(src));
                }
                Err(mut e) => errors.append(&mut e),
            }
        }
        if errors.is_empty() {
            Ok((Sources { by_name }, warnings))
        } else {
            Err(errors)
        }
    }

    /// A source by name.
    pub fn get(&self, name: &str) -> Option<&Arc<Source>> {
        self.by_name.get(name)
    }

    /// Names of all sources.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
