//! SNS signing certificates: pinned ones from config, fetched ones cached by URL.

use super::envelope::SignatureVersion;
use super::fetch::{AwsFetch, AwsUrl};
use rsa::pkcs8::DecodePublicKey;
use rsa::{Pkcs1v15Sign, RsaPublicKey};
use sha1::{Digest, Sha1};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use x509_cert::der::{DecodePem, Encode};
use x509_cert::Certificate;

/// Fetched certificates kept at once; AWS rotates through a handful of URLs.
const CACHE_CAP: usize = 32;

/// The public key of a signing certificate and the dates it is valid between (unix seconds).
#[derive(Debug)]
pub struct SigningCert {
    key: RsaPublicKey,
    not_before: u64,
    not_after: u64,
}

impl SigningCert {
    /// Reads a PEM certificate with an RSA key.
    pub fn from_pem(pem: &[u8]) -> Result<SigningCert, String> {
        let cert = Certificate::from_pem(pem).map_err(|e| format!("not a PEM certificate: {e}"))?;
        let tbs = &cert.tbs_certificate;
        let spki = tbs.subject_public_key_info.to_der().map_err(|e| format!("unreadable public key: {e}"))?;
        let key = RsaPublicKey::from_public_key_der(&spki).map_err(|e| format!("not an RSA key: {e}"))?;
        Ok(SigningCert {
            key,
            not_before: tbs.validity.not_before.to_unix_duration().as_secs(),
            not_after: tbs.validity.not_after.to_unix_duration().as_secs(),
        })
    }

    fn valid_at(&self, now: i64) -> bool {
        u64::try_from(now).is_ok_and(|now| self.not_before <= now && now <= self.not_after)
    }

    /// Checks an RSA PKCS#1 v1.5 signature over `signed`, hashed as `version` says.
    pub fn verify(&self, version: SignatureVersion, signed: &[u8], signature: &[u8]) -> Result<(), String> {
        let checked = match version {
            SignatureVersion::V1 => self.key.verify(Pkcs1v15Sign::new::<Sha1>(), &Sha1::digest(signed), signature),
            SignatureVersion::V2 => self.key.verify(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(signed), signature),
        };
        checked.map_err(|_| "signature mismatch".to_string())
    }
}

/// Where a source gets the certificate a message names.
#[derive(Debug)]
pub struct CertStore {
    pinned: HashMap<AwsUrl, Arc<SigningCert>>,
    fetched: Mutex<HashMap<AwsUrl, Arc<SigningCert>>>,
    fetch: Arc<dyn AwsFetch>,
}

impl CertStore {
    /// A store with `pinned` certificates (PEM by SigningCertURL); every problem is reported.
    pub fn new(
        pinned: &std::collections::BTreeMap<String, String>,
        fetch: Arc<dyn AwsFetch>,
    ) -> Result<CertStore, Vec<String>> {
        let mut certs = HashMap::new();
        let mut errors = Vec::new();
        for (url, pem) in pinned {
            let checked = AwsUrl::cert(url).map_err(|e| format!("trusted_certs: {url:?} {e}")).and_then(|u| {
                let cert = SigningCert::from_pem(pem.as_bytes()).map_err(|e| format!("trusted_certs[{url:?}]: {e}"))?;
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
            Ok(CertStore { pinned: certs, fetched: Mutex::new(HashMap::new()), fetch })
        } else {
            Err(errors)
        }
    }

    /// The certificate at `url`: pinned (trusted as configured, whatever its dates), else
    /// cached or fetched, and then only within its validity dates.
    pub async fn get(&self, url: &AwsUrl, now: i64) -> Result<Arc<SigningCert>, String> {
        if let Some(c) = self.pinned.get(url) {
            return Ok(c.clone());
        }
        let cached = self.fetched.lock().unwrap_or_else(|e| e.into_inner()).get(url).cloned();
        if let Some(c) = cached.filter(|c| c.valid_at(now)) {
            return Ok(c);
        }
        let pem = self.fetch.get(url).await.map_err(|e| format!("cannot fetch the signing certificate: {e}"))?;
        let cert = SigningCert::from_pem(&pem).map_err(|e| format!("SigningCertURL: {e}"))?;
        if !cert.valid_at(now) {
            return Err("signing certificate is outside its validity dates".into());
        }
        let cert = Arc::new(cert);
        let mut fetched = self.fetched.lock().unwrap_or_else(|e| e.into_inner());
        if fetched.len() >= CACHE_CAP {
            fetched.clear();
        }
        fetched.insert(url.clone(), cert.clone());
        Ok(cert)
    }
}
