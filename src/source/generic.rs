//! `kind = "generic"`: any JSON webhook, checked by its configured `verify` scheme.

use super::keep::{Keep, EVERYTHING};
use super::verify::{unix_now, BadSecret, Verifier};
use super::{parse_query, Disposition, Headers, Incoming, SourceError, Verified};
use crate::config::VerifyScheme;
use bytes::Bytes;

/// Verifies with one scheme, then parses the body as JSON.
#[derive(Debug)]
pub struct Generic {
    verifier: Verifier,
}

impl Generic {
    /// A verifier for this scheme; fails only on a secret config validation would refuse.
    pub fn new(scheme: &VerifyScheme) -> Result<Generic, BadSecret> {
        Ok(Generic { verifier: Verifier::new(scheme)? })
    }

    /// The headers holding this source's credentials ([`Verifier::credential_headers`]).
    pub fn credential_headers(&self) -> Vec<String> {
        self.verifier.credential_headers()
    }

    /// Checks the request on its raw bytes against the system clock, then parses what `keep`
    /// keeps of the body.
    pub fn verify(&self, name: &str, req: Incoming, keep: &Keep) -> Result<Verified, SourceError> {
        self.verify_at(name, req, unix_now(), keep)
    }

    /// [`Generic::verify`] at `now` (unix seconds), for timestamp checks.
    pub(super) fn verify_at(&self, name: &str, req: Incoming, now: i64, keep: &Keep) -> Result<Verified, SourceError> {
        self.verifier
            .check(&req.headers, &req.body, now)
            .map_err(|e| SourceError::Unauthorized { source_name: name.to_string(), reason: e.into() })?;
        self.parse_keeping(name, req.headers, &req.query, req.body, keep)
    }

    /// Parses a request whose origin is already established.
    pub(super) fn parse(&self, name: &str, headers: Headers, query: &str, raw: Bytes) -> Result<Verified, SourceError> {
        self.parse_keeping(name, headers, query, raw, &EVERYTHING)
    }

    /// [`Generic::parse`], building only what `keep` keeps of the body (the rest is still
    /// checked).
    fn parse_keeping(
        &self,
        name: &str,
        headers: Headers,
        query: &str,
        raw: Bytes,
        keep: &Keep,
    ) -> Result<Verified, SourceError> {
        let content_type = headers.get("content-type").unwrap_or("application/json").to_ascii_lowercase();
        let mime = content_type.split(';').next().unwrap_or_default().trim();
        if !matches!(mime, "application/json" | "") {
            return Err(SourceError::UnsupportedMediaType {
                source_name: name.to_string(),
                content_type: mime.to_string(),
                expected: "application/json",
            });
        }
        let body = keep.parse(&raw).map_err(|e| SourceError::BadRequest {
            source_name: name.to_string(),
            reason: format!("malformed JSON body: {e}"),
        })?;
        Ok(Verified {
            source: name.to_string(),
            delivery_id: self.verifier.delivery_id(&headers),
            query: parse_query(query),
            headers,
            body,
            raw,
            disposition: Disposition::Map,
            sns: None,
            body_sha256: None,
        })
    }
}

#[cfg(test)]
mod tests;
