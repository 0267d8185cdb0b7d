//! GitHub webhooks: `X-Hub-Signature-256`, JSON or form-encoded bodies, `ping`, delivery ids.

use super::keep::{Keep, EVERYTHING};
use super::verify::{unix_now, Verifier};
use super::{parse_query, Disposition, Headers, Incoming, Refusal, SourceError, Verified};
use crate::config::{HmacAlgorithm, Secret, SignatureEncoding, VerifyScheme};
use bytes::Bytes;
use sha2::Digest as _;

const SIGNATURE_HEADER: &str = "X-Hub-Signature-256";

/// Verifies GitHub's HMAC-SHA256 signature against any of the configured secrets.
///
/// GitHub's scheme is the generic `hmac` scheme with fixed parameters, so it shares that
/// verifier rather than keeping a second HMAC check.
#[derive(Debug)]
pub struct Github {
    verifier: Verifier,
}

impl Github {
    /// A verifier for these secrets (several during a rotation).
    pub fn new(secrets: Vec<Secret>) -> Github {
        let scheme = VerifyScheme::Hmac {
            header: SIGNATURE_HEADER.to_string(),
            algorithm: HmacAlgorithm::Sha256,
            encoding: SignatureEncoding::Hex,
            prefix: Some("sha256=".to_string()),
            secrets,
        };
        Github { verifier: Verifier::new(&scheme).expect("an hmac scheme takes any secret") }
    }

    /// The signature headers, SHA-256 and GitHub's older SHA-1 one: with the body they make a
    /// request anyone could send again.
    pub fn credential_headers(&self) -> Vec<String> {
        let mut names = self.verifier.credential_headers();
        names.push("x-hub-signature".to_string());
        names
    }

    /// Checks the signature on the raw bytes, then parses the whole body.
    #[cfg(test)]
    pub fn verify(&self, name: &str, req: Incoming) -> Result<Verified, SourceError> {
        self.verify_keeping(name, req, &EVERYTHING)
    }

    /// Checks the signature on the raw bytes, then parses what `keep` keeps of the body.
    pub fn verify_keeping(&self, name: &str, req: Incoming, keep: &Keep) -> Result<Verified, SourceError> {
        let unauthorized = |reason: Refusal| SourceError::Unauthorized { source_name: name.to_string(), reason };
        if req.headers.get(SIGNATURE_HEADER).is_none() {
            // The usual cause on GitHub's side: the webhook was created without a secret.
            return Err(unauthorized(Refusal::MissingCredentials(format!(
                "missing {SIGNATURE_HEADER} header (is the webhook's secret set?)"
            ))));
        }
        self.verifier.check(&req.headers, &req.body, unix_now()).map_err(|e| unauthorized(e.into()))?;
        // GitHub signs the body but not X-GitHub-Delivery: the body itself identifies a replay.
        let body_sha256 = hex::encode(sha2::Sha256::digest(&req.body));
        let verified = parse_keeping(name, req.headers, &req.query, req.body, keep)?;
        Ok(Verified { body_sha256: Some(body_sha256), ..verified })
    }
}

/// Parses a request whose origin is already established.
pub(super) fn parse(name: &str, headers: Headers, query: &str, raw: Bytes) -> Result<Verified, SourceError> {
    parse_keeping(name, headers, query, raw, &EVERYTHING)
}

/// [`parse`], building only what `keep` keeps of the body (the rest is still checked).
fn parse_keeping(name: &str, headers: Headers, query: &str, raw: Bytes, keep: &Keep) -> Result<Verified, SourceError> {
    let bad = |reason: String| SourceError::BadRequest { source_name: name.to_string(), reason };
    let event =
        headers.get("x-github-event").map(str::to_string).ok_or_else(|| bad("missing X-GitHub-Event header".into()))?;
    let content_type = headers.get("content-type").unwrap_or("application/json").to_ascii_lowercase();
    let mime = content_type.split(';').next().unwrap_or_default().trim();
    let json_bytes: std::borrow::Cow<[u8]> = match mime {
        "application/json" | "" => raw.as_ref().into(),
        "application/x-www-form-urlencoded" => {
            let fields: Vec<(String, String)> =
                serde_urlencoded::from_bytes(&raw).map_err(|e| bad(format!("malformed form body: {e}")))?;
            let payload = fields
                .into_iter()
                .find(|(k, _)| k == "payload")
                .ok_or_else(|| bad("form body has no payload= field".into()))?;
            payload.1.into_bytes().into()
        }
        _ => {
            return Err(SourceError::UnsupportedMediaType {
                source_name: name.to_string(),
                content_type: mime.to_string(),
                expected: "application/json or application/x-www-form-urlencoded",
            })
        }
    };
    let body = keep.parse(&json_bytes).map_err(|e| bad(format!("malformed JSON body: {e}")))?;
    let disposition = if event == "ping" { Disposition::Ignore("ping") } else { Disposition::Map };
    Ok(Verified {
        source: name.to_string(),
        delivery_id: headers.get("x-github-delivery").map(str::to_string),
        query: parse_query(query),
        headers,
        body,
        raw,
        disposition,
        sns: None,
        body_sha256: None,
    })
}
