//! Sources: one file per kind. Each turns raw bytes and headers into a [`Verified`] request,
//! or refuses them.
//!
//! **Invariant:** nothing parses, logs or stores a body before its signature is verified,
//! and verification runs on the exact bytes received. [`Verified`] has private fields and
//! only this module builds one, so `mapping` and `queue` cannot see an unverified body.

mod generic;
mod github;
mod keep;
mod sns;
mod verify;

pub use keep::Keep;
pub use sns::{AwsFetch, AwsUrl, FetchError, HttpsFetch, PinnedCertError};

use crate::config::{SourceConfig, SourceKindConfig};
use bytes::Bytes;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
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

    /// Every header but those that commonly carry credentials (`Authorization`, cookies, API
    /// keys and tokens), which neither storage nor templates get, whatever the source. A
    /// source also drops its own scheme's and its configured `drop_headers` ([`Source`]).
    fn without_credentials(&self) -> impl Iterator<Item = (&String, &String)> {
        const DROP: &[&str] = &[
            "authorization",
            "proxy-authorization",
            "cookie",
            "x-gitlab-token",
            "x-api-key",
            "api-key",
            "apikey",
            "x-auth-token",
            "x-access-token",
            "x-amz-security-token",
        ];
        self.0.iter().filter(|(k, _)| !DROP.contains(&k.as_str()))
    }

    /// Removes the headers named in `names` (lower case).
    fn drop_all(&mut self, names: &[String]) {
        self.0.retain(|k, _| !names.contains(k));
    }

    /// What templates see as `headers`: an object of the headers less credentials, built
    /// directly (collecting them into a map and converting that copied each one twice).
    fn as_template_value(&self) -> Value {
        Value::Object(self.without_credentials().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect())
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
    Unauthorized { source_name: String, reason: Refusal },
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

/// Why a request's credentials were refused (a 401). The variant is the class metrics count
/// by; the text is the detail a sender reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No signature or token where the scheme expects one.
    #[error("{0}")]
    MissingCredentials(String),
    /// A signature or token that cannot be read as the scheme writes it.
    #[error("{0}")]
    MalformedCredentials(String),
    /// Well-formed, but made with none of the configured secrets.
    #[error("{0}")]
    SignatureMismatch(String),
    /// A signed timestamp outside the scheme's tolerance.
    #[error("{0}")]
    StaleTimestamp(String),
    /// SNS: a `SignatureVersion` other than 1 or 2.
    #[error("{0}")]
    SignatureVersion(String),
    /// SNS: a signing certificate that may not be fetched, or is not valid.
    #[error("{0}")]
    SigningCertificate(String),
    /// SNS: a signed field that cannot be read (a signature not in base64, a `Timestamp` not
    /// in ISO 8601).
    #[error("{0}")]
    Unreadable(String),
}

impl SourceError {
    /// A closed-set name for the failed check, for metrics (messages carry details).
    pub fn reason_class(&self) -> &'static str {
        match self {
            SourceError::BadRequest { .. } => "bad_request",
            SourceError::UnsupportedMediaType { .. } => "unsupported_media_type",
            SourceError::Forbidden { .. } => "forbidden",
            SourceError::Unavailable { .. } => "certificate_unavailable",
            SourceError::Unauthorized { reason, .. } => reason.class(),
        }
    }
}

impl Refusal {
    /// The metric label of this kind of refusal.
    pub fn class(&self) -> &'static str {
        match self {
            Refusal::MissingCredentials(_) => "missing_credentials",
            Refusal::MalformedCredentials(_) => "malformed_credentials",
            Refusal::SignatureMismatch(_) => "signature_mismatch",
            Refusal::StaleTimestamp(_) => "stale_timestamp",
            Refusal::SignatureVersion(_) => "signature_version",
            Refusal::SigningCertificate(_) => "signing_certificate",
            Refusal::Unreadable(_) => "unauthorized",
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
    /// GitHub only: the SHA-256 of the body as verified, so a replay under a made-up
    /// delivery id is found.
    body_sha256: Option<String>,
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

    /// The SHA-256 (hex) of the body, for sources whose signature covers the body and no
    /// delivery id (GitHub): a body seen before is a replay.
    pub fn body_sha256(&self) -> Option<&str> {
        self.body_sha256.as_deref()
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
    /// SNS `sns`. Mapping takes the request whole, since a copy of a large payload costs as
    /// much as parsing it.
    pub fn into_template_context(self) -> Value {
        let mut context = Map::new();
        context.insert("headers".into(), self.headers.as_template_value());
        context.insert("query".into(), self.query.into_iter().map(|(k, v)| (k, Value::String(v))).collect());
        context.insert("source".into(), self.source.into());
        context.insert("body".into(), self.body);
        if let Some(sns) = self.sns {
            context.insert("sns".into(), sns);
        }
        Value::Object(context)
    }

    /// [`Verified::into_template_context`] of a copy, for a caller that keeps the request.
    pub fn template_context(&self) -> Value {
        self.clone().into_template_context()
    }
}

fn parse_query(q: &str) -> BTreeMap<String, String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(q).unwrap_or_default().into_iter().collect()
}

/// The result of [`Source::verify_offline`].
#[derive(Debug)]
pub enum Offline {
    /// Checked (and parsed) without I/O.
    Checked(Result<Verified, SourceError>),
    /// This source must reach the network to check it: call [`Source::verify`].
    NeedsNetwork(Incoming),
}

/// A configured source: how to verify and parse its requests. What a payload becomes is
/// `registry`'s business, not this module's.
#[derive(Debug)]
pub struct Source {
    name: String,
    kind: SourceKind,
    /// Headers dropped from every request it verifies or is trusted with: its scheme's
    /// credential headers and its `drop_headers` (lower case).
    dropped: Vec<String>,
}

/// The closed set of source kinds.
#[derive(Debug)]
enum SourceKind {
    Github(github::Github),
    Generic(generic::Generic),
    /// Boxed: its certificate caches make it several times the size of the others.
    Sns(Box<sns::Sns>),
}

/// Why a configured source cannot be set up (config validation catches most of this first).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A generic source's verify scheme does not compile (a malformed secret).
    #[error(transparent)]
    Verify(#[from] verify::BadSecret),
    /// An SNS source's pinned certificate is unusable.
    #[error(transparent)]
    PinnedCert(#[from] PinnedCertError),
}

impl Source {
    /// Sets up a source's verifier, reporting every problem. SNS sources fetch certificates
    /// through `aws` and refuse messages older than `retention`.
    pub fn build(
        cfg: &SourceConfig,
        aws: &Arc<dyn AwsFetch>,
        retention: std::time::Duration,
    ) -> Result<Source, Vec<SetupError>> {
        let kind = match &cfg.kind {
            SourceKindConfig::Github { secrets } => SourceKind::Github(github::Github::new(secrets.clone())),
            SourceKindConfig::Generic { verify } => {
                SourceKind::Generic(generic::Generic::new(verify).map_err(|e| vec![SetupError::from(e)])?)
            }
            SourceKindConfig::Sns {
                topics,
                auto_confirm,
                trusted_certs,
                unsigned_message_attributes,
                signature_versions,
            } => {
                let settings = sns::SnsSettings {
                    topics: topics.clone(),
                    auto_confirm: *auto_confirm,
                    unsigned_message_attributes: *unsigned_message_attributes,
                    max_age: retention,
                    signature_versions: *signature_versions,
                };
                let sns = sns::Sns::new(settings, trusted_certs, aws.clone())
                    .map_err(|errs| errs.into_iter().map(SetupError::from).collect::<Vec<_>>())?;
                SourceKind::Sns(Box::new(sns))
            }
        };
        let mut dropped = match &kind {
            SourceKind::Github(g) => g.credential_headers(),
            SourceKind::Generic(g) => g.credential_headers(),
            // The signature is inside the body; the headers carry none.
            SourceKind::Sns(_) => Vec::new(),
        };
        dropped.extend(cfg.drop_headers.iter().cloned());
        Ok(Source { name: cfg.name.clone(), kind, dropped })
    }

    /// `v` without the headers this source drops: verification has read them.
    fn dropping(&self, mut v: Verified) -> Verified {
        v.headers.drop_all(&self.dropped);
        v
    }

    /// The source's name (`/hooks/{name}`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks a request on its raw bytes, then parses it. Async because an SNS source may
    /// have to fetch AWS's signing certificate first.
    pub async fn verify(&self, req: Incoming) -> Result<Verified, SourceError> {
        let verified = match &self.kind {
            SourceKind::Github(g) => g.verify_keeping(&self.name, req, &keep::EVERYTHING),
            SourceKind::Generic(g) => g.verify(&self.name, req, &keep::EVERYTHING),
            SourceKind::Sns(s) => s.verify(&self.name, req).await,
        };
        verified.map(|v| self.dropping(v))
    }

    /// Checks a request if that needs no I/O: GitHub and generic signatures are CPU work
    /// alone, which the caller may run off its event loop. An SNS request is handed back, for
    /// [`Source::verify`]: its certificate may have to be fetched first.
    ///
    /// Only what `keep` keeps of a GitHub or generic body is built (the whole body is still
    /// checked as JSON): the accept path passes what its mapping can read.
    pub fn verify_offline(&self, req: Incoming, keep: &Keep) -> Offline {
        let checked = match &self.kind {
            SourceKind::Github(g) => g.verify_keeping(&self.name, req, keep),
            SourceKind::Generic(g) => g.verify(&self.name, req, keep),
            SourceKind::Sns(_) => return Offline::NeedsNetwork(req),
        };
        Offline::Checked(checked.map(|v| self.dropping(v)))
    }

    /// Rebuilds a request from the durable record of one this source verified before
    /// (replay), or from a file the operator gave `pagerhook render`: both are trusted by
    /// where they come from, not by a signature.
    pub fn trusted(&self, headers: Headers, query: &str, body: Bytes) -> Result<Verified, SourceError> {
        let parsed = match &self.kind {
            SourceKind::Github(_) => github::parse(&self.name, headers, query, body),
            SourceKind::Generic(g) => g.parse(&self.name, headers, query, body),
            SourceKind::Sns(s) => s.parse(&self.name, headers, query, body),
        };
        parsed.map(|v| self.dropping(v))
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
