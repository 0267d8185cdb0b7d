//! The JSON envelope SNS posts, and the string AWS signs for each message type.
//!
//! The envelope is parsed before its signature is checked, because the signature is inside
//! it; nothing of it is logged, stored or mapped until that check passed.

use serde::Deserialize;
use serde_json::{json, Value};

/// `Type` of an SNS message (and its `x-amz-sns-message-type` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Notification,
    SubscriptionConfirmation,
    UnsubscribeConfirmation,
}

impl MessageType {
    /// The name SNS uses.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Notification => "Notification",
            MessageType::SubscriptionConfirmation => "SubscriptionConfirmation",
            MessageType::UnsubscribeConfirmation => "UnsubscribeConfirmation",
        }
    }
}

/// `SignatureVersion`: which hash the RSA signature is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureVersion {
    /// RSA with SHA1.
    V1,
    /// RSA with SHA256.
    V2,
}

impl SignatureVersion {
    /// `"1"` or `"2"`; anything else is refused.
    pub fn parse(s: &str) -> Result<SignatureVersion, EnvelopeError> {
        match s {
            "1" => Ok(SignatureVersion::V1),
            "2" => Ok(SignatureVersion::V2),
            _ => Err(EnvelopeError::SignatureVersion),
        }
    }
}

/// What is wrong with an SNS message, named by field; never quoting it, since it is unverified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("malformed SNS message: {what} (line {line} column {column})")]
    Malformed { what: &'static str, line: usize, column: usize },
    #[error("SNS message has no {0}")]
    Missing(&'static str),
    #[error("SNS message has an unknown Type")]
    UnknownType,
    #[error("SNS field {0} contains a line break, which AWS never signs")]
    LineBreak(&'static str),
    #[error("unsupported SignatureVersion (expected 1 or 2)")]
    SignatureVersion,
    #[error("SNS Timestamp is not an ISO 8601 time")]
    Timestamp,
}

/// The envelope's fields as sent. Lambda-shaped records spell `SigningCertUrl`; both are taken.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawEnvelope {
    r#type: Option<String>,
    message: Option<String>,
    message_id: Option<String>,
    subject: Option<String>,
    timestamp: Option<String>,
    topic_arn: Option<String>,
    token: Option<String>,
    #[serde(rename = "SubscribeURL")]
    subscribe_url: Option<String>,
    signature_version: Option<String>,
    signature: Option<String>,
    #[serde(rename = "SigningCertURL", alias = "SigningCertUrl")]
    signing_cert_url: Option<String>,
    message_attributes: Option<Value>,
}

/// A well-formed SNS message, not yet verified.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub kind: MessageType,
    pub message: String,
    pub message_id: String,
    pub subject: Option<String>,
    pub timestamp: String,
    pub topic_arn: String,
    /// Confirmations only.
    pub token: Option<String>,
    /// Confirmations only.
    pub subscribe_url: Option<String>,
    pub signature_version: String,
    pub signature: String,
    pub signing_cert_url: String,
    pub message_attributes: Value,
}

impl Envelope {
    /// Parses the body; the error says which field is missing or wrong.
    pub fn parse(body: &[u8]) -> Result<Envelope, EnvelopeError> {
        // Where, not what: the body is unverified, and serde's message can quote it.
        let raw: RawEnvelope = serde_json::from_slice(body).map_err(|e| {
            let what = if e.is_data() { "a field is repeated or not a string" } else { "not JSON" };
            EnvelopeError::Malformed { what, line: e.line(), column: e.column() }
        })?;
        let need = |v: Option<String>, field: &'static str| v.ok_or(EnvelopeError::Missing(field));
        let kind = match need(raw.r#type, "Type")?.as_str() {
            "Notification" => MessageType::Notification,
            "SubscriptionConfirmation" => MessageType::SubscriptionConfirmation,
            "UnsubscribeConfirmation" => MessageType::UnsubscribeConfirmation,
            _ => return Err(EnvelopeError::UnknownType),
        };
        let confirmation = kind != MessageType::Notification;
        let (token, subscribe_url) = if confirmation {
            (Some(need(raw.token, "Token")?), Some(need(raw.subscribe_url, "SubscribeURL")?))
        } else {
            (None, None)
        };
        let envelope = Envelope {
            kind,
            message: need(raw.message, "Message")?,
            message_id: need(raw.message_id, "MessageId")?,
            // Only notifications sign a Subject; Lambda records send `"Subject": null` for none.
            subject: raw.subject.filter(|_| !confirmation),
            timestamp: need(raw.timestamp, "Timestamp")?,
            topic_arn: need(raw.topic_arn, "TopicArn")?,
            token,
            subscribe_url,
            signature_version: need(raw.signature_version, "SignatureVersion")?,
            signature: need(raw.signature, "Signature")?,
            signing_cert_url: need(raw.signing_cert_url, "SigningCertURL")?,
            message_attributes: raw.message_attributes.unwrap_or_else(|| json!({})),
        };
        envelope.refuse_newlines()?;
        Ok(envelope)
    }

    /// AWS signs `Name\nvalue\n` pairs, so a newline inside a value could pass one field off as
    /// another (`"MessageId": "m-1\nSubject\nS"` signs like a Subject). AWS never puts one in
    /// any signed field but `Message`, the first field signed, whose value is followed only by
    /// `MessageId\n`: none is accepted elsewhere.
    fn refuse_newlines(&self) -> Result<(), EnvelopeError> {
        let fields = [
            ("MessageId", Some(&self.message_id)),
            ("Subject", self.subject.as_ref()),
            ("SubscribeURL", self.subscribe_url.as_ref()),
            ("Timestamp", Some(&self.timestamp)),
            ("Token", self.token.as_ref()),
            ("TopicArn", Some(&self.topic_arn)),
        ];
        match fields.iter().find(|(_, v)| v.is_some_and(|v| v.contains(['\n', '\r']))) {
            Some((name, _)) => Err(EnvelopeError::LineBreak(name)),
            None => Ok(()),
        }
    }

    /// `Timestamp` (ISO 8601, as SNS writes it) in unix seconds.
    pub fn timestamp_unix(&self) -> Result<i64, EnvelopeError> {
        let t = time::OffsetDateTime::parse(&self.timestamp, &time::format_description::well_known::Rfc3339)
            .map_err(|_| EnvelopeError::Timestamp)?;
        Ok(t.unix_timestamp())
    }

    /// The string AWS signs: `Name\nvalue\n` for each signed field of this type, in byte order
    /// of the names. MessageAttributes are not signed.
    pub fn string_to_sign(&self) -> String {
        let mut fields: Vec<(&str, &str)> = vec![("Message", &self.message), ("MessageId", &self.message_id)];
        if let Some(subject) = &self.subject {
            fields.push(("Subject", subject));
        }
        if let Some(url) = &self.subscribe_url {
            fields.push(("SubscribeURL", url));
        }
        fields.push(("Timestamp", &self.timestamp));
        if let Some(token) = &self.token {
            fields.push(("Token", token));
        }
        fields.extend([("TopicArn", self.topic_arn.as_str()), ("Type", self.kind.as_str())]);
        fields.iter().map(|(k, v)| format!("{k}\n{v}\n")).collect()
    }

    /// What templates see as `sns`: the signed fields, and `MessageAttributes` only when the
    /// source opted in, since AWS does not sign them (anyone relaying the message may edit them).
    pub fn template_view(&self, unsigned_attributes: bool) -> Value {
        let mut view = json!({
            "Type": self.kind.as_str(),
            "TopicArn": self.topic_arn,
            "Subject": self.subject,
            "MessageId": self.message_id,
            "Timestamp": self.timestamp,
        });
        if unsigned_attributes {
            view["MessageAttributes"] = self.message_attributes.clone();
        }
        view
    }

    /// The inner `Message`: parsed when it is JSON, else the string itself.
    pub fn body(&self) -> Value {
        serde_json::from_str(&self.message).unwrap_or_else(|_| Value::String(self.message.clone()))
    }
}
