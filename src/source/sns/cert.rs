//! SNS signing certificates: pinned ones from config, fetched ones cached by URL.

use super::envelope::SignatureVersion;
use super::fetch::{AwsFetch, AwsUrl, FetchError, UrlError};
use rsa::pkcs8::DecodePublicKey;
use rsa::{Pkcs1v15Sign, RsaPublicKey};
use sha1::{Digest, Sha1};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::der::{DecodePem, Encode};
use x509_cert::Certificate;

/// The `commonName` attribute (X.520) of a certificate's subject.
const COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");

/// Fetched certificates kept at once; AWS rotates through a handful of URLs.
pub(super) const CACHE_CAP: usize = 32;

/// The public key of a signing certificate, the dates it is valid between (unix seconds) and
/// the common names of its subject.
#[derive(Debug)]
pub struct SigningCert {
    key: RsaPublicKey,
    not_before: u64,
    not_after: u64,
    common_names: Vec<String>,
}

impl SigningCert {
    /// Reads a PEM certificate with an RSA key.
    pub fn from_pem(pem: &[u8]) -> Result<SigningCert, PemError> {
        let cert = Certificate::from_pem(pem).map_err(PemError::NotPem)?;
        let tbs = &cert.tbs_certificate;
        let spki = tbs.subject_public_key_info.to_der().map_err(PemError::UnreadableKey)?;
        let key = RsaPublicKey::from_public_key_der(&spki).map_err(PemError::NotRsa)?;
        let common_names = tbs
            .subject
            .0
            .iter()
            .flat_map(|rdn| rdn.0.iter())
            .filter(|atv| atv.oid == COMMON_NAME)
            // RFC 4514's form, `CN=<value>` escaped: a name with anything to escape is no SNS name.
            .filter_map(|atv| atv.to_string().strip_prefix("CN=").map(str::to_ascii_lowercase))
            .collect();
        Ok(SigningCert {
            key,
            not_before: tbs.validity.not_before.to_unix_duration().as_secs(),
            not_after: tbs.validity.not_after.to_unix_duration().as_secs(),
            common_names,
        })
    }

    /// Whether the subject's common name is one of `names` (SNS's, for the URL it came from).
    fn issued_to_one_of(&self, names: &[String]) -> bool {
        self.common_names.iter().any(|cn| names.contains(cn))
    }

    fn valid_at(&self, now: i64) -> bool {
        u64::try_from(now).is_ok_and(|now| self.not_before <= now && now <= self.not_after)
    }

    /// Checks an RSA PKCS#1 v1.5 signature over `signed`, hashed as `version` says.
    pub fn verify(&self, version: SignatureVersion, signed: &[u8], signature: &[u8]) -> Result<(), SignatureMismatch> {
        let checked = match version {
            SignatureVersion::V1 => self.key.verify(Pkcs1v15Sign::new::<Sha1>(), &Sha1::digest(signed), signature),
            SignatureVersion::V2 => self.key.verify(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(signed), signature),
        };
        checked.map_err(|_| SignatureMismatch)
    }
}

/// Why bytes are not a signing certificate pagerhook can use.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("not a PEM certificate: {0}")]
    NotPem(x509_cert::der::Error),
    #[error("unreadable public key: {0}")]
    UnreadableKey(x509_cert::der::Error),
    #[error("not an RSA key: {0}")]
    NotRsa(rsa::pkcs8::spki::Error),
}

/// The signature is not the certificate's key's over the signed string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("signature mismatch")]
pub struct SignatureMismatch;

/// Why a certificate pinned in `trusted_certs` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PinnedCertError {
    /// The URL (first) is not a SigningCertURL.
    #[error("trusted_certs: {0:?} {1}")]
    Url(String, UrlError),
    /// The PEM pinned for the URL (first) is not a usable certificate.
    #[error("trusted_certs[{0:?}]: {1}")]
    Pem(String, PemError),
}

/// Why a message has no certificate to be checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertError {
    /// The certificate could not be fetched now (network, AWS failing): the sender should
    /// retry, the message may well be genuine.
    Unavailable(String),
    /// There is a certificate, or an answer, and it is wrong: the message is refused.
    Invalid(String),
}

/// How long a failed URL is answered from memory instead of fetched again (unix seconds).
pub(super) const FAILED_FOR: i64 = 5;

/// Most certificates fetched in any 60 seconds, whatever their URLs. A request needs no
/// credentials to name a certificate URL: made-up ones on a genuine SNS host would each cost
/// a request to AWS. AWS signs with one certificate per region at a time, so a source needs a
/// handful of fetches a day.
pub(super) const FETCHES_PER_MINUTE: usize = 10;

/// Where a source gets the certificate a message names.
///
/// Fetched certificates are kept least-recently-used, at most [`CACHE_CAP`]; a URL whose fetch
/// failed is remembered for [`FAILED_FOR`] seconds (at most [`CACHE_CAP`] of them), so a flood
/// of messages naming it costs no request to AWS; one URL is fetched once at a time, the
/// other requests that need it waiting for that answer; and at most [`FETCHES_PER_MINUTE`]
/// fetches go out in any minute, whatever the URLs (then `Unavailable`: SNS retries).
#[derive(Debug)]
pub struct CertStore {
    pinned: HashMap<AwsUrl, Arc<SigningCert>>,
    cache: Mutex<Cache>,
    /// One lock per URL being fetched; removed when no request waits on it.
    inflight: Mutex<HashMap<AwsUrl, Arc<tokio::sync::Mutex<()>>>>,
    fetch: Arc<dyn AwsFetch>,
}

/// Fetched certificates with their last use, recent failures with their time, and the times
/// of the fetches of the last minute.
#[derive(Debug, Default)]
struct Cache {
    certs: HashMap<AwsUrl, (Arc<SigningCert>, u64)>,
    failed: HashMap<AwsUrl, (i64, CertError)>,
    clock: u64,
    fetched_at: std::collections::VecDeque<i64>,
}

impl Cache {
    /// What is known about `url` at `now`: a certificate (marked used) or a recent failure.
    fn lookup(&mut self, url: &AwsUrl, now: i64) -> Option<Result<Arc<SigningCert>, CertError>> {
        self.clock += 1;
        if let Some((cert, used)) = self.certs.get_mut(url) {
            *used = self.clock;
            return Some(Ok(cert.clone()));
        }
        // A clock that went back does not make a failure last longer.
        match self.failed.get(url) {
            Some((at, e)) if (*at..*at + FAILED_FOR).contains(&now) => Some(Err(e.clone())),
            _ => None,
        }
    }

    /// Takes one of the minute's [`FETCHES_PER_MINUTE`] at `now`, if one is free.
    fn fetch_allowed(&mut self, now: i64) -> bool {
        // A clock that went back frees nothing.
        while self.fetched_at.front().is_some_and(|at| *at + 60 <= now) {
            self.fetched_at.pop_front();
        }
        if self.fetched_at.len() >= FETCHES_PER_MINUTE {
            return false;
        }
        self.fetched_at.push_back(now);
        true
    }

    fn keep(&mut self, url: &AwsUrl, outcome: &Result<Arc<SigningCert>, CertError>, now: i64) {
        self.clock += 1;
        match outcome {
            Ok(cert) => {
                self.failed.remove(url);
                if self.certs.len() >= CACHE_CAP && !self.certs.contains_key(url) {
                    let lru = self.certs.iter().min_by_key(|(_, (_, used))| *used).map(|(u, _)| u.clone());
                    lru.map(|u| self.certs.remove(&u));
                }
                self.certs.insert(url.clone(), (cert.clone(), self.clock));
            }
            Err(e) => {
                self.failed.retain(|_, (at, _)| (*at..*at + FAILED_FOR).contains(&now));
                if self.failed.len() >= CACHE_CAP {
                    let oldest = self.failed.iter().min_by_key(|(_, (at, _))| *at).map(|(u, _)| u.clone());
                    oldest.map(|u| self.failed.remove(&u));
                }
                self.failed.insert(url.clone(), (now, e.clone()));
            }
        }
    }
}

impl CertStore {
    /// A store with `pinned` certificates (PEM by SigningCertURL); every problem is reported.
    pub fn new(
        pinned: &std::collections::BTreeMap<String, String>,
        fetch: Arc<dyn AwsFetch>,
    ) -> Result<CertStore, Vec<PinnedCertError>> {
        let mut certs = HashMap::new();
        let mut errors = Vec::new();
        for (url, pem) in pinned {
            let checked = AwsUrl::cert(url).map_err(|error| PinnedCertError::Url(url.clone(), error)).and_then(|u| {
                let cert =
                    SigningCert::from_pem(pem.as_bytes()).map_err(|error| PinnedCertError::Pem(url.clone(), error))?;
                Ok((u, Arc::new(cert)))
            });
            match checked {
                Ok((u, c)) => {
                    certs.insert(u, c);
                }
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(CertStore { pinned: certs, cache: Mutex::default(), inflight: Mutex::default(), fetch })
        } else {
            Err(errors)
        }
    }

    /// The certificate at `url`: pinned (trusted as configured, whatever its dates and
    /// names), else cached or fetched, and then only within its validity dates and issued to
    /// SNS in the URL's partition.
    pub async fn get(&self, url: &AwsUrl, now: i64) -> Result<Arc<SigningCert>, CertError> {
        if let Some(c) = self.pinned.get(url) {
            return Ok(c.clone());
        }
        if let Some(known) = self.lookup(url, now) {
            return known;
        }
        let gate = lock(&self.inflight).entry(url.clone()).or_default().clone();
        let waiting = Waiting { inflight: &self.inflight, url, gate };
        let _turn = waiting.gate.lock().await;
        // Whoever held the gate before may have fetched it meanwhile.
        if let Some(known) = self.lookup(url, now) {
            return known;
        }
        // Not remembered as a failure: the URL may be genuine, and SNS retries a 503.
        if !lock(&self.cache).fetch_allowed(now) {
            return Err(CertError::Unavailable(format!(
                "{FETCHES_PER_MINUTE} certificate fetches in the last minute, the most allowed"
            )));
        }
        let fetched = self.fetch_checked(url, now).await;
        lock(&self.cache).keep(url, &fetched, now);
        fetched
    }

    fn lookup(&self, url: &AwsUrl, now: i64) -> Option<Result<Arc<SigningCert>, CertError>> {
        let known = lock(&self.cache).lookup(url, now)?;
        match known {
            Ok(c) if !c.valid_at(now) => Some(Err(CertError::Invalid(EXPIRED.into()))),
            other => Some(other),
        }
    }

    async fn fetch_checked(&self, url: &AwsUrl, now: i64) -> Result<Arc<SigningCert>, CertError> {
        let pem = self.fetch.get(url).await.map_err(|e| match e {
            FetchError::Failed(e) => CertError::Unavailable(format!("cannot fetch the signing certificate: {e}")),
            FetchError::Refused(e) => CertError::Invalid(format!("SigningCertURL: AWS {e}")),
        })?;
        let cert = SigningCert::from_pem(&pem).map_err(|e| CertError::Invalid(format!("SigningCertURL: {e}")))?;
        if !cert.valid_at(now) {
            return Err(CertError::Invalid(EXPIRED.into()));
        }
        // An SNS host serves only SNS's certificates today; checking the name as AWS's own
        // validators do keeps it so if one ever serves another.
        if !cert.issued_to_one_of(&url.signing_names()) {
            return Err(CertError::Invalid(format!(
                "signing certificate is not issued to SNS (its subject's common name is none of {})",
                url.signing_names().join(", ")
            )));
        }
        Ok(Arc::new(cert))
    }
}

/// A request's claim on a URL's gate; the last one out (even a cancelled request) removes
/// the gate, so `inflight` holds only URLs being fetched or waited for.
struct Waiting<'a> {
    inflight: &'a Mutex<HashMap<AwsUrl, Arc<tokio::sync::Mutex<()>>>>,
    url: &'a AwsUrl,
    gate: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut inflight = lock(self.inflight);
        // Two references, the map's and ours: nobody else waits.
        if Arc::strong_count(&self.gate) <= 2 {
            inflight.remove(self.url);
        }
    }
}

const EXPIRED: &str = "signing certificate is outside its validity dates";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
