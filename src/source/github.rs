//! GitHub webhooks: `X-Hub-Signature-256`, JSON or form-encoded bodies, `ping`, delivery ids.

use super::{parse_query, Disposition, Headers, Incoming, SourceError, Verified};
use crate::config::Secret;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Verifies GitHub's HMAC-SHA256 signature against any of the configured secrets.
pub struct Github {
    secrets: Vec<Secret>,
}

impl std::fmt::Debug for Github {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Github({} secrets)", self.secrets.len())
    }
}

impl Github {
    /// A verifier for these secrets (several during a rotation).
    pub fn new(secrets: Vec<Secret>) -> Github {
        Github { secrets }
    }

    /// Checks the signature on the raw bytes, then parses.
    pub fn verify(&self, name: &str, req: Incoming) -> Result<Verified, SourceError> {
        let unauthorized = |reason: String| SourceError::Unauthorized { source_name: name.to_string(), reason };
        let header = req
            .headers
            .get("x-hub-signature-256")
            .ok_or_else(|| unauthorized("missing X-Hub-Signature-256 header (is the webhook's secret set?)".into()))?;
        let sig = header
            .trim()
            .strip_prefix("sha256=")
            .and_then(|h| hex::decode(h).ok())
            .filter(|s| s.len() == 32)
            .ok_or_else(|| {
                unauthorized("malformed X-Hub-Signature-256 header (expected sha256=<64 hex digits>)".into())
            })?;
        let ok = self.secrets.iter().any(|secret| {
            let mut mac =
                Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()).expect("HMAC takes keys of any length");
            mac.update(&req.body);
            // verify_slice compares in constant time.
            mac.verify_slice(&sig).is_ok()
        });
        if !ok {
            return Err(unauthorized(format!(
                "signature mismatch (tried {} secret{})",
                self.secrets.len(),
                if self.secrets.len() == 1 { "" } else { "s" }
            )));
        }
        parse(name, req.headers, &req.query, req.body)
    }
}

/// Parses a request whose origin is already established.
pub(super) fn parse(name: &str, headers: Headers, query: &str, raw: Bytes) -> Result<Verified, SourceError> {
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
    let body = serde_json::from_slice(&json_bytes).map_err(|e| bad(format!("malformed JSON body: {e}")))?;
    let disposition = if event == "ping" { Disposition::Ignore("ping") } else { Disposition::Map };
    Ok(Verified {
        source: name.to_string(),
        delivery_id: headers.get("x-github-delivery").map(str::to_string),
        query: parse_query(query),
        headers,
        body,
        raw,
        disposition,
    })
}
