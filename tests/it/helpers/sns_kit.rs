//! SNS test kit: an RSA key and certificate made once per test binary, messages signed the
//! way AWS signs them, and a fake AWS that records every request it gets.
//!
//! Shared by the unit tests in `src/source/sns/` (included by path) and the integration
//! tests; the including module provides `AwsFetch` and `AwsUrl` in scope.

use super::{AwsFetch, AwsUrl, FetchError};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::EncodePublicKey;
use rsa::RsaPrivateKey;
use serde_json::{json, Value};
use sha1::Sha1;
use sha2::Sha256;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::der::{pem::LineEnding, EncodePem};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::Validity;

/// Where the tests' certificate is pinned; shaped like AWS's, so the host rule holds.
pub const CERT_URL: &str =
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0123456789abcdef0123456789abcdef.pem";
/// The topic the tests' sources allow.
pub const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:alarms";

/// An RSA key and a self-signed certificate for it, valid for a day from creation.
pub struct TestSigner {
    key: RsaPrivateKey,
    /// The certificate, PEM.
    pub cert_pem: String,
}

impl TestSigner {
    fn generate() -> TestSigner {
        let key = RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("RSA key");
        let cert_pem = certificate(&key, "CN=sns.amazonaws.com");
        TestSigner { key, cert_pem }
    }

    /// Another certificate for the same key, issued to `subject` (e.g. `"CN=evil.example"`).
    pub fn cert_for(&self, subject: &str) -> String {
        certificate(&self.key, subject)
    }

    /// Sets `Signature` on `msg` as AWS would: RSA PKCS#1 v1.5 over its string to sign, SHA1
    /// for `SignatureVersion` "1", SHA256 otherwise.
    pub fn sign(&self, msg: &mut Value) {
        use rsa::signature::{SignatureEncoding, Signer};
        let text = string_to_sign(msg);
        let sig = if msg["SignatureVersion"] == "1" {
            SigningKey::<Sha1>::new(self.key.clone()).sign(text.as_bytes()).to_bytes()
        } else {
            SigningKey::<Sha256>::new(self.key.clone()).sign(text.as_bytes()).to_bytes()
        };
        msg["Signature"] = json!(B64.encode(sig));
    }
}

/// A self-signed certificate for `key` issued to `subject`, valid for a day from now, as PEM.
fn certificate(key: &RsaPrivateKey, subject: &str) -> String {
    let signer = SigningKey::<Sha256>::new(key.clone());
    let spki_der = key.to_public_key().to_public_key_der().expect("public key DER");
    let spki = SubjectPublicKeyInfoOwned::try_from(spki_der.as_bytes()).expect("SPKI");
    let cert = CertificateBuilder::new(
        Profile::Root,
        SerialNumber::from(1u32),
        Validity::from_now(Duration::from_secs(86_400)).expect("validity"),
        Name::from_str(subject).expect("name"),
        spki,
        &signer,
    )
    .expect("certificate builder")
    .build::<rsa::pkcs1v15::Signature>()
    .expect("certificate");
    cert.to_pem(LineEnding::LF).expect("PEM")
}

/// The key behind the pinned certificate.
pub fn signer() -> &'static TestSigner {
    static SIGNER: OnceLock<TestSigner> = OnceLock::new();
    SIGNER.get_or_init(TestSigner::generate)
}

/// Another key, for forgeries.
pub fn forger() -> &'static TestSigner {
    static FORGER: OnceLock<TestSigner> = OnceLock::new();
    FORGER.get_or_init(TestSigner::generate)
}

/// AWS's string to sign, written out independently of the code under test.
fn string_to_sign(msg: &Value) -> String {
    let keys: &[&str] = if msg["Type"] == "Notification" {
        &["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    } else {
        &["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    };
    keys.iter().filter_map(|k| msg[*k].as_str().map(|v| format!("{k}\n{v}\n"))).collect()
}

/// A Notification from [`TOPIC`] carrying `message`, signed with SignatureVersion `version`.
pub fn notification(message_id: &str, subject: Option<&str>, message: &str, version: &str) -> Value {
    let mut msg = json!({
        "Type": "Notification",
        "MessageId": message_id,
        "TopicArn": TOPIC,
        "Message": message,
        "Timestamp": timestamp(0),
        "SignatureVersion": version,
        "SigningCertURL": CERT_URL,
        "UnsubscribeURL": format!("https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={TOPIC}:2bcfbf39-05c3-41de-beaa-fcfcc21c8f55"),
    });
    if let Some(s) = subject {
        msg["Subject"] = json!(s);
    }
    signer().sign(&mut msg);
    msg
}

/// A signed SubscriptionConfirmation (or UnsubscribeConfirmation) for [`TOPIC`].
pub fn confirmation(kind: &str, message_id: &str) -> Value {
    let token = "2336412f37fb687f5d51e6e2425e90ccf856979066f04ab361498071a8a6bca4180c8d0fcd28fcd09ff6e32ea32e4238";
    let mut msg = json!({
        "Type": kind,
        "MessageId": message_id,
        "Token": token,
        "TopicArn": TOPIC,
        "Message": format!("You have chosen to subscribe to the topic {TOPIC}.\nTo confirm the subscription, visit the SubscribeURL included in this message."),
        "SubscribeURL": subscribe_url(token),
        "Timestamp": timestamp(0),
        "SignatureVersion": "1",
        "SigningCertURL": CERT_URL,
    });
    signer().sign(&mut msg);
    msg
}

/// A `Timestamp` as SNS writes it, `offset` seconds from now (messages must be recent).
pub fn timestamp(offset: i64) -> String {
    let t = time::OffsetDateTime::now_utc() + time::Duration::seconds(offset);
    let t = t.replace_nanosecond(t.millisecond() as u32 * 1_000_000).expect("millis");
    t.format(&time::format_description::well_known::Rfc3339).expect("RFC 3339")
}

/// The SubscribeURL SNS sends with [`confirmation`].
pub fn subscribe_url(token: &str) -> String {
    format!("https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token={token}")
}

/// A stand-in for AWS: answers GETs from a table (404 for anything else), records every one.
#[derive(Debug, Default)]
pub struct FakeAws {
    answers: Mutex<HashMap<String, Result<Bytes, FetchError>>>,
    requests: Mutex<Vec<String>>,
}

impl FakeAws {
    /// Answers `url` with `body`.
    pub fn answer(self, url: &str, body: impl Into<Bytes>) -> FakeAws {
        self.set(url, Ok(body.into()));
        self
    }

    /// Fails every GET of `url` this way (AWS down, a timeout, an answer too large, a 404).
    pub fn failing(self, url: &str, error: FetchError) -> FakeAws {
        self.set(url, Err(error));
        self
    }

    /// Changes how `url` is answered from now on.
    pub fn set(&self, url: &str, answer: Result<Bytes, FetchError>) {
        self.answers.lock().unwrap().insert(url.to_string(), answer);
    }

    /// Every URL requested so far, in order.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl AwsFetch for FakeAws {
    async fn get(&self, url: &AwsUrl) -> Result<Bytes, FetchError> {
        self.requests.lock().unwrap().push(url.as_str().to_string());
        // A real GET is never ready at once: let other requests run meanwhile.
        tokio::task::yield_now().await;
        let answer = self.answers.lock().unwrap().get(url.as_str()).cloned();
        answer.unwrap_or_else(|| Err(FetchError::Refused("answered 404 Not Found".into())))
    }
}
