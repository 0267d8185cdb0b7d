//! `kind = "sns"` settings: which topics, whether to confirm subscriptions, pinned certificates.

use super::raw::RawSns;
use super::{Problems, SecretRef, SourceKindConfig};
use std::path::Path;

/// Which SNS topics a source accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicFilter {
    /// Only these TopicArns.
    Only(Vec<String>),
    /// Every topic: only when `any_topic = true` is written.
    Any,
}

impl TopicFilter {
    /// Whether messages from `topic_arn` are accepted.
    pub fn allows(&self, topic_arn: &str) -> bool {
        match self {
            TopicFilter::Only(topics) => topics.iter().any(|t| t == topic_arn),
            TopicFilter::Any => true,
        }
    }
}

/// Which SNS `SignatureVersion`s a source accepts (`signature_versions`; both by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignatureVersions {
    /// `1`: RSA over SHA1.
    pub sha1: bool,
    /// `2`: RSA over SHA256.
    pub sha256: bool,
}

/// `signature_versions`: a non-empty list of 1 and 2.
fn signature_versions(at: &str, written: Option<&[u8]>, p: &mut Problems) -> SignatureVersions {
    let Some(written) = written else { return SignatureVersions { sha1: true, sha256: true } };
    if written.is_empty() || written.iter().any(|v| !matches!(v, 1 | 2)) {
        p.0.push(format!("{at}: signature_versions takes 1 and/or 2 (e.g. signature_versions = [2])"));
    }
    SignatureVersions { sha1: written.contains(&1), sha256: written.contains(&2) }
}

/// `arn:<partition>:sns:<region>:<account>:<name>`, the shape SNS puts in `TopicArn`.
fn is_topic_arn(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6 && parts[0] == "arn" && parts[2] == "sns" && parts.iter().all(|p| !p.is_empty())
}

/// Validates the sns keys of a source; `None` when the kind cannot be built at all.
pub(super) fn validate_sns(
    at: &str,
    s: &mut RawSns,
    env: &dyn Fn(&str) -> Option<String>,
    base: &Path,
    p: &mut Problems,
    warnings: &mut Vec<String>,
) -> Option<SourceKindConfig> {
    let topics = match (s.topics.take(), s.any_topic) {
        (Some(_), Some(true)) => {
            p.0.push(format!("{at}: write either topics = [...] or any_topic = true, not both"));
            return None;
        }
        (Some(topics), _) if !topics.is_empty() => {
            for t in topics.iter().filter(|t| !is_topic_arn(t)) {
                p.0.push(format!(
                    "{at}: topics: {t:?} is not a topic ARN (e.g. \"arn:aws:sns:us-east-1:123456789012:alarms\")"
                ));
            }
            TopicFilter::Only(topics)
        }
        (_, Some(true)) => {
            // Any AWS account can create a topic, subscribe this URL and publish genuinely signed
            // messages: the signature proves AWS sent it, not that it is your topic.
            warnings.push(format!(
                "{at}: any_topic = true accepts messages from every AWS account's topics; prefer topics = [...]"
            ));
            TopicFilter::Any
        }
        _ => {
            p.0.push(format!(
                "{at}: kind \"sns\" needs topics = [\"arn:aws:sns:<region>:<account>:<topic>\"] (or any_topic = true to accept every topic)"
            ));
            return None;
        }
    };
    let mut trusted_certs = std::collections::BTreeMap::new();
    for (url, r) in std::mem::take(&mut s.trusted_certs) {
        // Certificates are public: a literal PEM in the file is fine, so no warning as for secrets.
        let resolved =
            SecretRef::parse(&r).resolve(env, base).map_err(|e| format!("{at}: trusted_certs[{url:?}]: {e}"));
        if let Some(pem) = p.take(resolved) {
            trusted_certs.insert(url, pem.expose().to_string());
        }
    }
    Some(SourceKindConfig::Sns {
        topics,
        auto_confirm: s.auto_confirm.unwrap_or(false),
        trusted_certs,
        unsigned_message_attributes: s.unsigned_message_attributes.unwrap_or(false),
        signature_versions: signature_versions(at, s.signature_versions.as_deref(), p),
    })
}
