//! `kind = "sns"`: AWS SNS HTTP(S) subscriptions, verified with AWS's certificate signature.
//!
//! Checks, cheapest and network-free first: the envelope parses and no signed field but
//! `Message` holds a line break (400), its `Type` agrees with `x-amz-sns-message-type` (400),
//! `SignatureVersion` is 1 or 2, `SigningCertURL` is an SNS host and `Timestamp` is neither
//! older than `storage.retention` nor ahead of the clock by more than [`FUTURE_SKEW`] (401),
//! the topic is allowed (403); only then is a certificate fetched, if it is neither pinned nor
//! cached, and the signature checked (401). A certificate that could not be fetched is a 503:
//! SNS retries that, and drops the message for good on a 4xx.

mod cert;
mod envelope;
mod fetch;

pub use cert::PinnedCertError;
pub use fetch::{AwsFetch, AwsUrl, FetchError, HttpsFetch};

use super::verify::unix_now;
use super::{parse_query, Disposition, Headers, Incoming, Refusal, SourceError, Verified};
use crate::config::{SignatureVersions, TopicFilter};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use cert::{CertError, CertStore};
use envelope::{Envelope, MessageType, SignatureVersion};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const TYPE_HEADER: &str = "x-amz-sns-message-type";

/// How far ahead of our clock a message's `Timestamp` may be (clocks disagree a little).
pub const FUTURE_SKEW: Duration = Duration::from_secs(15 * 60);

/// A configured SNS endpoint.
#[derive(Debug)]
pub struct Sns {
    settings: SnsSettings,
    certs: CertStore,
    fetch: Arc<dyn AwsFetch>,
}

/// What an SNS source is configured with, besides its pinned certificates.
#[derive(Debug, Clone)]
pub struct SnsSettings {
    pub topics: TopicFilter,
    pub auto_confirm: bool,
    /// Let templates see `MessageAttributes`, which AWS does not sign.
    pub unsigned_message_attributes: bool,
    /// Oldest `Timestamp` accepted: `storage.retention`, how long delivery ids are kept, so a
    /// captured message cannot come back once its id is forgotten.
    pub max_age: Duration,
    /// The `SignatureVersion`s accepted.
    pub signature_versions: SignatureVersions,
}

impl Sns {
    /// Reads the pinned certificates; fails on any that is not an SNS URL or a certificate.
    pub fn new(
        settings: SnsSettings,
        trusted_certs: &BTreeMap<String, String>,
        fetch: Arc<dyn AwsFetch>,
    ) -> Result<Sns, Vec<PinnedCertError>> {
        Ok(Sns { settings, certs: CertStore::new(trusted_certs, fetch.clone())?, fetch })
    }

    /// Verifies a message against the system clock (for fetched certificates' dates).
    pub async fn verify(&self, name: &str, req: Incoming) -> Result<Verified, SourceError> {
        self.verify_at(name, req, unix_now()).await
    }

    /// [`Sns::verify`] at `now` (unix seconds).
    pub(super) async fn verify_at(&self, name: &str, req: Incoming, now: i64) -> Result<Verified, SourceError> {
        let unauthorized = |reason: Refusal| SourceError::Unauthorized { source_name: name.to_string(), reason };
        let envelope = read_envelope(name, &req.headers, &req.body)?;
        let declared =
            req.headers.get(TYPE_HEADER).ok_or_else(|| bad(name, format!("missing {TYPE_HEADER} header")))?;
        if declared != envelope.kind.as_str() {
            return Err(bad(name, format!("{TYPE_HEADER} header does not match the message's Type")));
        }
        let version = SignatureVersion::parse(&envelope.signature_version)
            .map_err(|e| unauthorized(Refusal::SignatureVersion(e.to_string())))?;
        let allowed = match version {
            SignatureVersion::V1 => self.settings.signature_versions.sha1,
            SignatureVersion::V2 => self.settings.signature_versions.sha256,
        };
        if !allowed {
            return Err(unauthorized(Refusal::SignatureVersion(format!(
                "SignatureVersion {} is not in this source's signature_versions",
                envelope.signature_version
            ))));
        }
        let signature = B64
            .decode(envelope.signature.as_bytes())
            .map_err(|_| unauthorized(Refusal::Unreadable("Signature is not base64".into())))?;
        let cert_url = AwsUrl::cert(&envelope.signing_cert_url)
            .map_err(|e| unauthorized(Refusal::SigningCertificate(format!("SigningCertURL {e}"))))?;
        self.check_timestamp(&envelope, now).map_err(unauthorized)?;
        if !self.settings.topics.allows(&envelope.topic_arn) {
            return Err(SourceError::Forbidden {
                source_name: name.to_string(),
                reason: "TopicArn is not in this source's topics".into(),
            });
        }
        let cert = self.certs.get(&cert_url, now).await.map_err(|e| match e {
            CertError::Unavailable(reason) => SourceError::Unavailable { source_name: name.to_string(), reason },
            CertError::Invalid(reason) => unauthorized(Refusal::SigningCertificate(reason)),
        })?;
        cert.verify(version, envelope.string_to_sign().as_bytes(), &signature)
            .map_err(|e| unauthorized(Refusal::SignatureMismatch(e.to_string())))?;
        let disposition = match envelope.kind {
            MessageType::Notification => Disposition::Map,
            MessageType::SubscriptionConfirmation => Disposition::Ignore(self.confirm(name, &envelope).await),
            MessageType::UnsubscribeConfirmation => {
                tracing::info!(source = name, topic = %envelope.topic_arn, "SNS unsubscribe confirmation received");
                Disposition::Ignore(UNSUBSCRIBED)
            }
        };
        Ok(self.verified(name, req.headers, &req.query, req.body, envelope, disposition))
    }

    /// A message older than `max_age` may be a capture replayed after its MessageId was
    /// pruned; one far in the future would outlive it the same way.
    fn check_timestamp(&self, envelope: &Envelope, now: i64) -> Result<(), Refusal> {
        let at = envelope.timestamp_unix().map_err(|e| Refusal::Unreadable(e.to_string()))?;
        let max_age = i64::try_from(self.settings.max_age.as_secs()).unwrap_or(i64::MAX);
        if at < now.saturating_sub(max_age) {
            let retention = humantime::format_duration(self.settings.max_age);
            return Err(Refusal::StaleTimestamp(format!(
                "Timestamp outside tolerance: older than storage.retention ({retention})"
            )));
        }
        if at > now.saturating_add(FUTURE_SKEW.as_secs() as i64) {
            return Err(Refusal::StaleTimestamp(
                "Timestamp outside tolerance: more than 15m ahead of this server's clock".into(),
            ));
        }
        Ok(())
    }

    /// Confirms a verified subscription from an allowed topic, or logs how to.
    async fn confirm(&self, name: &str, envelope: &Envelope) -> &'static str {
        let topic = &envelope.topic_arn;
        let url = envelope.subscribe_url.as_deref().unwrap_or_default();
        if !self.settings.auto_confirm {
            tracing::warn!(source = name, topic = %topic, subscribe_url = url,
                "SNS subscription awaits confirmation: open subscribe_url (or set auto_confirm = true)");
            return "subscription confirmation: SubscribeURL logged for a human to open";
        }
        let confirmed = match AwsUrl::subscribe(url) {
            Ok(u) => self.fetch.get(&u).await,
            Err(e) => Err(FetchError::Refused(format!("SubscribeURL {e}"))),
        };
        match confirmed {
            Ok(_) => {
                tracing::info!(source = name, topic = %topic, subscribe_url = url, "SNS subscription confirmed");
                "subscription confirmed"
            }
            Err(e) => {
                tracing::warn!(source = name, topic = %topic, subscribe_url = url, error = %e,
                    "SNS subscription could not be confirmed: open subscribe_url by hand");
                "subscription confirmation failed: SubscribeURL logged for a human to open"
            }
        }
    }

    /// Parses a message whose origin is already established (replay, `render`).
    pub(super) fn parse(&self, name: &str, headers: Headers, query: &str, raw: Bytes) -> Result<Verified, SourceError> {
        let envelope = read_envelope(name, &headers, &raw)?;
        let disposition = match envelope.kind {
            MessageType::Notification => Disposition::Map,
            MessageType::SubscriptionConfirmation => Disposition::Ignore("subscription confirmation"),
            MessageType::UnsubscribeConfirmation => Disposition::Ignore(UNSUBSCRIBED),
        };
        Ok(self.verified(name, headers, query, raw, envelope, disposition))
    }

    fn verified(
        &self,
        name: &str,
        headers: Headers,
        query: &str,
        raw: Bytes,
        envelope: Envelope,
        disposition: Disposition,
    ) -> Verified {
        Verified {
            source: name.to_string(),
            // SNS retries keep the MessageId: repeats are duplicates.
            delivery_id: Some(envelope.message_id.clone()),
            query: parse_query(query),
            headers,
            body: envelope.body(),
            sns: Some(envelope.template_view(self.settings.unsigned_message_attributes)),
            raw,
            disposition,
            // The MessageId is signed: a replay is found by it.
            body_sha256: None,
        }
    }
}

const UNSUBSCRIBED: &str = "unsubscribe confirmation";

fn bad(name: &str, reason: String) -> SourceError {
    SourceError::BadRequest { source_name: name.to_string(), reason }
}

/// SNS posts `text/plain; charset=UTF-8`; JSON is accepted too, anything else is not SNS.
fn read_envelope(name: &str, headers: &Headers, body: &[u8]) -> Result<Envelope, SourceError> {
    let content_type = headers.get("content-type").unwrap_or("text/plain").to_ascii_lowercase();
    let mime = content_type.split(';').next().unwrap_or_default().trim();
    if !matches!(mime, "text/plain" | "application/json" | "") {
        return Err(SourceError::UnsupportedMediaType {
            source_name: name.to_string(),
            content_type: mime.to_string(),
            expected: "text/plain or application/json",
        });
    }
    Envelope::parse(body).map_err(|e| bad(name, e.to_string()))
}

#[cfg(test)]
mod tests;
