//! The signature schemes of `kind = "generic"` sources, each checked on the raw bytes.
//!
//! Refusals are reasons naming the check that failed, never a secret or an expected value.
//! Signatures are compared with the MAC computed once per secret, and tokens as SHA-256
//! digests, both in constant time with `subtle`. Headers may offer at most
//! [`MAX_SIGNATURE_CANDIDATES`] signatures, so a forged header cannot multiply the work.

use super::{Headers, Refusal};
use crate::config::{standard_webhooks_key, HmacAlgorithm, Secret, SignatureEncoding, VerifyScheme, WhsecError};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};
use std::time::Duration;
use subtle::{Choice, ConstantTimeEq};

/// Standard base64 that does not insist on padding either way.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Key material or a token digest; `Debug` never shows it.
struct Key(Vec<u8>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Which header carries a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenKind {
    /// `X-Gitlab-Token: <token>`
    Gitlab,
    /// `Authorization: Bearer <token>`
    Bearer,
    /// `Authorization: Basic base64(user:password)`
    Basic,
}

/// A compiled [`VerifyScheme`].
#[derive(Debug)]
pub struct Verifier(Scheme);

#[derive(Debug)]
enum Scheme {
    Hmac {
        header: String,
        algorithm: HmacAlgorithm,
        encoding: SignatureEncoding,
        prefix: Option<String>,
        keys: Vec<Key>,
    },
    StandardWebhooks(Signing),
    Stripe(Signing),
    Slack(Signing),
    /// SHA-256 digests of the accepted tokens, so comparisons take the same time whatever
    /// their lengths.
    Token {
        kind: TokenKind,
        digests: Vec<Key>,
    },
    None,
}

/// The keys of a scheme that signs a timestamp, and how far that may be from now.
#[derive(Debug)]
struct Signing {
    keys: Vec<Key>,
    tolerance: Duration,
}

fn raw_keys(secrets: &[Secret]) -> Vec<Key> {
    secrets.iter().map(|s| Key(s.expose().as_bytes().to_vec())).collect()
}

fn digest(bytes: &[u8]) -> Key {
    Key(Sha256::digest(bytes).to_vec())
}

/// Why a verifier cannot be built, or why it refused a request (the reason for the 401).
/// Messages name the check, never a secret or an expected value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing {0} header")]
    MissingHeader(String),
    #[error("malformed {header} header (expected {expected})")]
    Malformed { header: String, expected: String },
    #[error("malformed {header} header: more than {MAX_SIGNATURE_CANDIDATES} signatures (the limit per request)")]
    TooManyCandidates { header: String },
    /// No secret matched: `what` is `signature`, `token` or `credentials`.
    #[error("{what} mismatch (tried {tried} secret{})", if *tried == 1 { "" } else { "s" })]
    Mismatch { what: &'static str, tried: usize },
    #[error("timestamp outside tolerance of {}", humantime::format_duration(*tolerance))]
    StaleTimestamp { tolerance: Duration },
}

/// A secret config validation would have refused: the one reason a verifier cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("secrets[{index}]: {error}")]
pub struct BadSecret {
    pub index: usize,
    pub error: WhsecError,
}

/// A refusal's class is the kind of check that failed; the text stays the sender's detail.
impl From<VerifyError> for Refusal {
    fn from(e: VerifyError) -> Refusal {
        let text = e.to_string();
        match e {
            VerifyError::MissingHeader(_) => Refusal::MissingCredentials(text),
            VerifyError::Malformed { .. } | VerifyError::TooManyCandidates { .. } => {
                Refusal::MalformedCredentials(text)
            }
            VerifyError::Mismatch { .. } => Refusal::SignatureMismatch(text),
            VerifyError::StaleTimestamp { .. } => Refusal::StaleTimestamp(text),
        }
    }
}

impl VerifyError {
    fn missing(header: impl Into<String>) -> VerifyError {
        VerifyError::MissingHeader(header.into())
    }

    fn malformed(header: impl Into<String>, expected: impl Into<String>) -> VerifyError {
        VerifyError::Malformed { header: header.into(), expected: expected.into() }
    }
}

impl Verifier {
    /// Compiles a scheme; fails only on a secret config validation would have refused.
    pub fn new(scheme: &VerifyScheme) -> Result<Verifier, BadSecret> {
        Ok(Verifier(match scheme {
            VerifyScheme::Hmac { header, algorithm, encoding, prefix, secrets } => Scheme::Hmac {
                header: header.clone(),
                algorithm: *algorithm,
                encoding: *encoding,
                prefix: prefix.clone(),
                keys: raw_keys(secrets),
            },
            VerifyScheme::StandardWebhooks { secrets, tolerance } => Scheme::StandardWebhooks(Signing {
                keys: secrets
                    .iter()
                    .enumerate()
                    .map(|(index, s)| standard_webhooks_key(s).map(Key).map_err(|error| BadSecret { index, error }))
                    .collect::<Result<_, _>>()?,
                tolerance: *tolerance,
            }),
            VerifyScheme::Stripe { secrets, tolerance } => {
                Scheme::Stripe(Signing { keys: raw_keys(secrets), tolerance: *tolerance })
            }
            VerifyScheme::Slack { secrets, tolerance } => {
                Scheme::Slack(Signing { keys: raw_keys(secrets), tolerance: *tolerance })
            }
            VerifyScheme::Gitlab { secrets } => Verifier::token(TokenKind::Gitlab, secrets),
            VerifyScheme::Bearer { secrets } => Verifier::token(TokenKind::Bearer, secrets),
            VerifyScheme::Basic { secrets } => Verifier::token(TokenKind::Basic, secrets),
            VerifyScheme::None => Scheme::None,
        }))
    }

    fn token(kind: TokenKind, secrets: &[Secret]) -> Scheme {
        Scheme::Token { kind, digests: secrets.iter().map(|s| digest(s.expose().as_bytes())).collect() }
    }

    /// Checks a request at `now` (unix seconds); `Err` is the reason for the 401.
    pub fn check(&self, headers: &Headers, body: &[u8], now: i64) -> Result<(), VerifyError> {
        match &self.0 {
            Scheme::Hmac { header, algorithm, encoding, prefix, keys } => {
                let sig = hmac_signature(headers, header, *algorithm, *encoding, prefix.as_deref())?;
                let ok = keys.iter().any(|k| mac_matches(*algorithm, &k.0, &[body], &sig));
                signature_matched(ok, keys.len())
            }
            Scheme::StandardWebhooks(s) => check_standard_webhooks(s, headers, body, now),
            Scheme::Stripe(s) => check_stripe(s, headers, body, now),
            Scheme::Slack(s) => check_slack(s, headers, body, now),
            Scheme::Token { kind, digests } => check_token(headers, *kind, digests),
            Scheme::None => Ok(()),
        }
    }

    /// The headers carrying the scheme's credential or signature (lower case): they are
    /// dropped from a verified request, so storage, templates and the console never hold
    /// what would let someone send as the sender (a token) or send a captured request again.
    pub fn credential_headers(&self) -> Vec<String> {
        let names: &[&str] = match &self.0 {
            Scheme::Hmac { header, .. } => return vec![header.to_ascii_lowercase()],
            Scheme::StandardWebhooks(_) => &["webhook-signature", "svix-signature"],
            Scheme::Stripe(_) => &["stripe-signature"],
            Scheme::Slack(_) => &["x-slack-signature"],
            Scheme::Token { kind: TokenKind::Gitlab, .. } => &["x-gitlab-token"],
            Scheme::Token { kind: TokenKind::Bearer | TokenKind::Basic, .. } => &["authorization"],
            Scheme::None => &[],
        };
        names.iter().map(|n| n.to_string()).collect()
    }

    /// The sender's id of this delivery, where the scheme defines one: `webhook-id` (or
    /// `svix-id`) for Standard Webhooks.
    pub fn delivery_id(&self, headers: &Headers) -> Option<String> {
        match &self.0 {
            Scheme::StandardWebhooks(_) => {
                headers.get(&format!("{}-id", standard_webhooks_family(headers))).map(str::to_string)
            }
            Scheme::Hmac { .. }
            | Scheme::Stripe { .. }
            | Scheme::Slack { .. }
            | Scheme::Token { .. }
            | Scheme::None => None,
        }
    }
}

/// `Ok` if a secret matched, else the mismatch naming how many were tried.
fn signature_matched(ok: bool, tried: usize) -> Result<(), VerifyError> {
    ok.then_some(()).ok_or(VerifyError::Mismatch { what: "signature", tried })
}

/// The decoded signature of an `hmac` header: after the prefix, of the algorithm's length.
fn hmac_signature(
    headers: &Headers,
    header: &str,
    algorithm: HmacAlgorithm,
    encoding: SignatureEncoding,
    prefix: Option<&str>,
) -> Result<Vec<u8>, VerifyError> {
    let value = headers.get(header).ok_or_else(|| VerifyError::missing(header))?;
    let malformed = || {
        let digits = match encoding {
            SignatureEncoding::Hex => format!("<{} hex digits>", algorithm.output_len() * 2),
            SignatureEncoding::Base64 => "<base64>".to_string(),
        };
        VerifyError::malformed(header, format!("{}{digits}", prefix.unwrap_or("")))
    };
    let value = value.trim();
    let sig = match prefix {
        Some(p) => strip_prefix_ignore_case(value, p).ok_or_else(malformed)?,
        None => value,
    };
    match encoding {
        SignatureEncoding::Hex => hex::decode(sig).ok(),
        SignatureEncoding::Base64 => BASE64.decode(sig).ok(),
    }
    .filter(|s| s.len() == algorithm.output_len())
    .ok_or_else(malformed)
}

/// Standard Webhooks: `HMAC(id.timestamp.body)` against any `v1,` signature offered.
fn check_standard_webhooks(s: &Signing, headers: &Headers, body: &[u8], now: i64) -> Result<(), VerifyError> {
    let Signing { keys, tolerance } = s;
    let family = standard_webhooks_family(headers);
    let header = |what: &str| {
        let name = format!("{family}-{what}");
        headers.get(&name).ok_or(VerifyError::MissingHeader(name))
    };
    let signature = header("signature")?;
    let id = header("id")?;
    let timestamp = header("timestamp")?;
    let ts = parse_timestamp(timestamp)
        .ok_or_else(|| VerifyError::malformed(format!("{family}-timestamp"), "unix seconds"))?;
    within_tolerance(ts, now, *tolerance)?;
    // Space-separated `v1,<base64>` entries; other versions (`v1a`) are skipped.
    // Repeated headers arrive joined with ", ", hence the trimmed commas.
    let candidates: Vec<&str> =
        signature.split_ascii_whitespace().filter_map(|e| e.trim_end_matches(',').strip_prefix("v1,")).collect();
    too_many_candidates(&format!("{family}-signature"), candidates.len())?;
    let sigs: Vec<Vec<u8>> =
        candidates.into_iter().filter_map(|b| BASE64.decode(b).ok()).filter(|s| s.len() == 32).collect();
    if sigs.is_empty() {
        let expected = "v1,<base64 HMAC-SHA256>, space-separated";
        return Err(VerifyError::malformed(format!("{family}-signature"), expected));
    }
    let parts: [&[u8]; 5] = [id.as_bytes(), b".", timestamp.as_bytes(), b".", body];
    signature_matched(any_candidate_matches(keys, &parts, &sigs), keys.len())
}

/// Stripe: `Stripe-Signature: t=<ts>,v1=<hex>[,v1=...]`, `HMAC(t.body)`.
fn check_stripe(s: &Signing, headers: &Headers, body: &[u8], now: i64) -> Result<(), VerifyError> {
    let Signing { keys, tolerance } = s;
    let value = headers.get("stripe-signature").ok_or_else(|| VerifyError::missing("Stripe-Signature"))?;
    let malformed = || VerifyError::malformed("Stripe-Signature", "t=<unix seconds>,v1=<64 hex digits>");
    let mut t = None;
    let mut sigs = Vec::new();
    let mut candidates = 0;
    for part in value.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else { return Err(malformed()) };
        match k {
            "t" if t.is_none() => t = Some(v),
            "t" => return Err(malformed()),
            "v1" => {
                candidates += 1;
                too_many_candidates("Stripe-Signature", candidates)?;
                sigs.extend(hex::decode(v).ok().filter(|s| s.len() == 32));
            }
            _ => {}
        }
    }
    let t = t.ok_or_else(malformed)?;
    let ts = parse_timestamp(t).ok_or_else(malformed)?;
    if sigs.is_empty() {
        return Err(malformed());
    }
    within_tolerance(ts, now, *tolerance)?;
    let parts: [&[u8]; 3] = [t.as_bytes(), b".", body];
    signature_matched(any_candidate_matches(keys, &parts, &sigs), keys.len())
}

/// Slack: `X-Slack-Signature: v0=<hex>` of `v0:<timestamp>:<body>`.
fn check_slack(s: &Signing, headers: &Headers, body: &[u8], now: i64) -> Result<(), VerifyError> {
    let Signing { keys, tolerance } = s;
    let value = headers.get("x-slack-signature").ok_or_else(|| VerifyError::missing("X-Slack-Signature"))?;
    let timestamp =
        headers.get("x-slack-request-timestamp").ok_or_else(|| VerifyError::missing("X-Slack-Request-Timestamp"))?;
    let ts = parse_timestamp(timestamp)
        .ok_or_else(|| VerifyError::malformed("X-Slack-Request-Timestamp", "unix seconds"))?;
    let sig = value
        .trim()
        .strip_prefix("v0=")
        .and_then(|h| hex::decode(h).ok())
        .filter(|s| s.len() == 32)
        .ok_or_else(|| VerifyError::malformed("X-Slack-Signature", "v0=<64 hex digits>"))?;
    within_tolerance(ts, now, *tolerance)?;
    let parts: [&[u8]; 4] = [b"v0:", timestamp.as_bytes(), b":", body];
    let ok = keys.iter().any(|k| mac_matches(HmacAlgorithm::Sha256, &k.0, &parts, &sig));
    signature_matched(ok, keys.len())
}

/// A token scheme: the presented token's digest against every accepted one.
fn check_token(headers: &Headers, kind: TokenKind, digests: &[Key]) -> Result<(), VerifyError> {
    let presented = digest(&presented_token(headers, kind)?);
    // Every digest is compared, so the time taken does not say which one matched.
    let ok = digests.iter().fold(Choice::from(0), |acc, d| acc | d.0.ct_eq(&presented.0));
    let what = match kind {
        TokenKind::Basic => "credentials",
        TokenKind::Gitlab | TokenKind::Bearer => "token",
    };
    bool::from(ok).then_some(()).ok_or(VerifyError::Mismatch { what, tried: digests.len() })
}

/// The token (or `user:password`) a request presents.
fn presented_token(headers: &Headers, kind: TokenKind) -> Result<Vec<u8>, VerifyError> {
    match kind {
        TokenKind::Gitlab => {
            Ok(headers.get("x-gitlab-token").ok_or_else(|| VerifyError::missing("X-Gitlab-Token"))?.as_bytes().to_vec())
        }
        TokenKind::Bearer => {
            let value = headers.get("authorization").ok_or_else(|| VerifyError::missing("Authorization"))?;
            strip_prefix_ignore_case(value.trim(), "Bearer ")
                .map(|t| t.trim().as_bytes().to_vec())
                .ok_or_else(|| VerifyError::malformed("Authorization", "Bearer <token>"))
        }
        TokenKind::Basic => {
            let value = headers.get("authorization").ok_or_else(|| VerifyError::missing("Authorization"))?;
            strip_prefix_ignore_case(value.trim(), "Basic ")
                .and_then(|b| BASE64.decode(b.trim()).ok())
                .ok_or_else(|| VerifyError::malformed("Authorization", "Basic <base64 of user:password>"))
        }
    }
}

/// `webhook` for the Standard Webhooks header names, `svix` for Svix's (the same scheme).
fn standard_webhooks_family(headers: &Headers) -> &'static str {
    if headers.get("webhook-signature").is_none() && headers.get("svix-signature").is_some() {
        "svix"
    } else {
        "webhook"
    }
}

/// Most signatures a `standard-webhooks` or `stripe` header may offer. Senders list one per
/// active secret (two during a rotation); more is a forgery trying to make us work.
pub const MAX_SIGNATURE_CANDIDATES: usize = 10;

fn too_many_candidates(header: &str, n: usize) -> Result<(), VerifyError> {
    if n > MAX_SIGNATURE_CANDIDATES {
        return Err(VerifyError::TooManyCandidates { header: header.to_string() });
    }
    Ok(())
}

/// Whether any candidate is the HMAC-SHA256 of `parts` under any key. Each key's MAC is
/// computed once, whatever the number of candidates, and every candidate is compared with
/// every MAC in constant time, so neither the work nor the timing depends on which matched.
fn any_candidate_matches(keys: &[Key], parts: &[&[u8]], candidates: &[Vec<u8>]) -> bool {
    let ok = keys.iter().fold(Choice::from(0), |acc, k| {
        let expected = compute_mac(HmacAlgorithm::Sha256, &k.0, parts);
        candidates.iter().fold(acc, |acc, c| acc | expected.ct_eq(c.as_slice()))
    });
    bool::from(ok)
}

/// Whether an HMAC of the concatenated `parts` under `key` is `sig`, in constant time.
fn mac_matches(algorithm: HmacAlgorithm, key: &[u8], parts: &[&[u8]], sig: &[u8]) -> bool {
    bool::from(compute_mac(algorithm, key, parts).ct_eq(sig))
}

#[cfg(test)]
thread_local! {
    /// MACs computed on this thread: tests check the work a request costs, not its time.
    pub(super) static MACS_COMPUTED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The HMAC of the concatenated `parts` under `key`.
fn compute_mac(algorithm: HmacAlgorithm, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    fn run<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        let mut mac = <M as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
        for p in parts {
            mac.update(p);
        }
        mac.finalize().into_bytes().to_vec()
    }
    #[cfg(test)]
    MACS_COMPUTED.with(|n| n.set(n.get() + 1));
    match algorithm {
        HmacAlgorithm::Sha1 => run::<Hmac<Sha1>>(key, parts),
        HmacAlgorithm::Sha256 => run::<Hmac<Sha256>>(key, parts),
        HmacAlgorithm::Sha512 => run::<Hmac<Sha512>>(key, parts),
    }
}

/// Unix seconds, digits only.
fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
}

fn within_tolerance(ts: i64, now: i64, tolerance: Duration) -> Result<(), VerifyError> {
    let skew = (i128::from(now) - i128::from(ts)).unsigned_abs();
    if skew > u128::from(tolerance.as_secs()) {
        return Err(VerifyError::StaleTimestamp { tolerance });
    }
    Ok(())
}

/// `s` without `prefix`, compared ignoring ASCII case.
fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

/// The system clock in unix seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
