//! `verify = { scheme = ... }` of `kind = "generic"` sources, validated into [`VerifyScheme`].

use super::raw::{RawHmac, RawTimestamped, RawVerify, SchemeName};
use super::{duration, one_of, Problems, Secret};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use std::time::Duration;

/// How a generic source checks that a request comes from its sender.
#[derive(Debug, Clone)]
pub enum VerifyScheme {
    /// An HMAC of the raw body in one header, optionally after a prefix such as `sha256=`.
    Hmac {
        header: String,
        algorithm: HmacAlgorithm,
        encoding: SignatureEncoding,
        prefix: Option<String>,
        secrets: Vec<Secret>,
    },
    /// Standard Webhooks (and Svix): `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    StandardWebhooks { secrets: Vec<Secret>, tolerance: Duration },
    /// Stripe: `Stripe-Signature: t=...,v1=...`.
    Stripe { secrets: Vec<Secret>, tolerance: Duration },
    /// Slack: `X-Slack-Signature: v0=...` with `X-Slack-Request-Timestamp`.
    Slack { secrets: Vec<Secret>, tolerance: Duration },
    /// GitLab: `X-Gitlab-Token` equals a secret.
    Gitlab { secrets: Vec<Secret> },
    /// `Authorization: Bearer <token>` with a secret as the token.
    Bearer { secrets: Vec<Secret> },
    /// `Authorization: Basic ...` with a secret as `user:password`.
    Basic { secrets: Vec<Secret> },
    /// No check at all: only when written explicitly.
    None,
}

impl VerifyScheme {
    /// The scheme's name as written in config.
    pub fn name(&self) -> &'static str {
        let scheme = match self {
            VerifyScheme::Hmac { .. } => SchemeName::Hmac,
            VerifyScheme::StandardWebhooks { .. } => SchemeName::StandardWebhooks,
            VerifyScheme::Stripe { .. } => SchemeName::Stripe,
            VerifyScheme::Slack { .. } => SchemeName::Slack,
            VerifyScheme::Gitlab { .. } => SchemeName::Gitlab,
            VerifyScheme::Bearer { .. } => SchemeName::Bearer,
            VerifyScheme::Basic { .. } => SchemeName::Basic,
            VerifyScheme::None => SchemeName::None,
        };
        scheme.as_str()
    }
}

/// The hash under an `hmac` scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HmacAlgorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl HmacAlgorithm {
    /// Bytes in a signature.
    pub fn output_len(self) -> usize {
        match self {
            HmacAlgorithm::Sha1 => 20,
            HmacAlgorithm::Sha256 => 32,
            HmacAlgorithm::Sha512 => 64,
        }
    }
}

/// How an `hmac` signature is written in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureEncoding {
    Hex,
    Base64,
}

/// Standard base64 that does not insist on padding either way.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a `whsec_` secret cannot be used. Never shows the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WhsecError {
    #[error("the whsec_ secret is empty after the prefix")]
    Empty,
    #[error("a whsec_ secret must be base64 after the prefix (copy it whole from the sender)")]
    NotBase64,
}

/// The HMAC key of a Standard Webhooks secret: `whsec_<base64>` is decoded, anything else
/// is used as it is.
pub fn standard_webhooks_key(secret: &Secret) -> Result<Vec<u8>, WhsecError> {
    match secret.expose().strip_prefix("whsec_") {
        Some(b64) => match BASE64.decode(b64.trim()) {
            Ok(k) if !k.is_empty() => Ok(k),
            Ok(_) => Err(WhsecError::Empty),
            Err(_) => Err(WhsecError::NotBase64),
        },
        None => Ok(secret.expose().as_bytes().to_vec()),
    }
}

/// The verify schemes this build knows, for error messages.
pub fn scheme_names() -> String {
    SchemeName::ALL.map(SchemeName::as_str).join(", ")
}

/// One example per scheme, for error messages.
fn example(scheme: SchemeName) -> &'static str {
    match scheme {
        SchemeName::Hmac => r#"verify = { scheme = "hmac", header = "X-Signature", prefix = "sha256=" }"#,
        SchemeName::StandardWebhooks => r#"verify = { scheme = "standard-webhooks", tolerance = "5m" }"#,
        SchemeName::Stripe => r#"verify = { scheme = "stripe" }"#,
        SchemeName::Slack => r#"verify = { scheme = "slack" }"#,
        SchemeName::Gitlab => r#"verify = { scheme = "gitlab" }"#,
        SchemeName::Bearer => r#"verify = { scheme = "bearer" }"#,
        SchemeName::Basic => r#"verify = { scheme = "basic" }"#,
        SchemeName::None => r#"verify = { scheme = "none" }"#,
    }
}

/// What a scheme's secrets are, for error messages.
fn secrets_hint(scheme: SchemeName) -> &'static str {
    match scheme {
        SchemeName::Hmac => "the shared signing secret",
        SchemeName::StandardWebhooks => "the whsec_... signing secret",
        SchemeName::Stripe => "the endpoint's whsec_... signing secret",
        SchemeName::Slack => "the app's signing secret",
        SchemeName::Gitlab => "the webhook's secret token",
        SchemeName::Bearer => "the accepted bearer tokens",
        SchemeName::Basic => "the accepted \"user:password\" pairs",
        SchemeName::None => "none: it checks nothing",
    }
}

/// The scheme written, or what was written instead of a known one.
fn scheme_of(v: &RawVerify) -> Result<SchemeName, &str> {
    Ok(match v {
        RawVerify::Hmac(_) => SchemeName::Hmac,
        RawVerify::StandardWebhooks(_) => SchemeName::StandardWebhooks,
        RawVerify::Stripe(_) => SchemeName::Stripe,
        RawVerify::Slack(_) => SchemeName::Slack,
        RawVerify::Gitlab(_) => SchemeName::Gitlab,
        RawVerify::Bearer(_) => SchemeName::Bearer,
        RawVerify::Basic(_) => SchemeName::Basic,
        RawVerify::None(_) => SchemeName::None,
        RawVerify::Unknown(written) => return Err(written),
    })
}

impl RawVerify {
    /// The secrets written inside `verify`, leaving none there.
    pub(super) fn take_secrets(&mut self) -> Vec<super::raw::RawSecret> {
        match self {
            RawVerify::Hmac(RawHmac { secrets, .. })
            | RawVerify::StandardWebhooks(RawTimestamped { secrets, .. })
            | RawVerify::Stripe(RawTimestamped { secrets, .. })
            | RawVerify::Slack(RawTimestamped { secrets, .. })
            | RawVerify::Gitlab(super::raw::RawSecrets { secrets })
            | RawVerify::Bearer(super::raw::RawSecrets { secrets })
            | RawVerify::Basic(super::raw::RawSecrets { secrets }) => std::mem::take(secrets),
            RawVerify::None(_) | RawVerify::Unknown(_) => Vec::new(),
        }
    }
}

/// A header name as HTTP allows one (RFC 9110 token).
pub(super) fn is_header_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Validates the `verify` of a generic source. `written_secrets` is how many secret references
/// the source lists; `secrets` are the ones that resolved. Pushes every problem to `p`;
/// `None` when the scheme cannot be built. Which options a scheme takes was settled when the
/// file was read (`raw::RawVerify`).
pub(super) fn validate_verify(
    at: &str,
    raw: Option<RawVerify>,
    written_secrets: usize,
    secrets: Vec<Secret>,
    p: &mut Problems,
    warnings: &mut Vec<String>,
) -> Option<VerifyScheme> {
    let Some(v) = raw else {
        p.0.push(format!(
            "{at}: kind \"generic\" needs verify (one of: {}), e.g. {}; write verify = {{ scheme = \"none\" }} to accept unsigned requests",
            scheme_names(),
            example(SchemeName::Hmac),
        ));
        return None;
    };
    let scheme = match scheme_of(&v) {
        Ok(scheme) => scheme,
        Err(written) => {
            p.0.push(format!("{at}: unknown verify scheme {written:?} (expected one of: {})", scheme_names()));
            return None;
        }
    };
    if scheme == SchemeName::None {
        return verify_none(at, written_secrets, p, warnings);
    }
    let before = p.0.len();
    if written_secrets == 0 {
        p.0.push(format!(
            "{at}: verify scheme {:?} needs secrets = [\"env:NAME\"] ({}), e.g. {}",
            scheme.as_str(),
            secrets_hint(scheme),
            example(scheme)
        ));
    }
    let built = build_scheme(at, v, secrets, p);
    (p.0.len() == before).then_some(built?)
}

/// `scheme = "none"`: accepted, with a warning, only without secrets.
fn verify_none(at: &str, written_secrets: usize, p: &mut Problems, warnings: &mut Vec<String>) -> Option<VerifyScheme> {
    warnings.push(format!("{at}: verify scheme none accepts unsigned requests from anyone"));
    if written_secrets > 0 {
        p.0.push(format!(
            "{at}: verify scheme \"none\" checks nothing, so secrets would be ignored: remove them or pick a scheme that uses them"
        ));
        return None;
    }
    Some(VerifyScheme::None)
}

/// The scheme with its options checked; problems go to `p`.
fn build_scheme(at: &str, v: RawVerify, secrets: Vec<Secret>, p: &mut Problems) -> Option<VerifyScheme> {
    Some(match v {
        RawVerify::Hmac(h) => hmac(at, h, secrets, p)?,
        RawVerify::StandardWebhooks(t) => {
            for (i, s) in secrets.iter().enumerate() {
                if let Err(e) = standard_webhooks_key(s) {
                    p.0.push(format!("{at}: secrets[{i}]: {e}"));
                }
            }
            VerifyScheme::StandardWebhooks { secrets, tolerance: tolerance(at, &t, p)? }
        }
        RawVerify::Stripe(t) => VerifyScheme::Stripe { secrets, tolerance: tolerance(at, &t, p)? },
        RawVerify::Slack(t) => VerifyScheme::Slack { secrets, tolerance: tolerance(at, &t, p)? },
        RawVerify::Gitlab(_) => VerifyScheme::Gitlab { secrets },
        RawVerify::Bearer(_) => VerifyScheme::Bearer { secrets },
        RawVerify::Basic(_) => {
            for (i, s) in secrets.iter().enumerate() {
                if !s.expose().contains(':') {
                    p.0.push(format!("{at}: secrets[{i}]: scheme \"basic\" takes secrets written \"user:password\""));
                }
            }
            VerifyScheme::Basic { secrets }
        }
        RawVerify::None(_) => VerifyScheme::None,
        RawVerify::Unknown(_) => return None,
    })
}

/// `tolerance` of a timestamped scheme: a duration above zero, default five minutes.
fn tolerance(at: &str, t: &RawTimestamped, p: &mut Problems) -> Option<Duration> {
    let tolerance =
        p.take(duration("verify.tolerance", t.tolerance.as_deref(), "5m").map_err(|e| format!("{at}: {e}")));
    if tolerance.is_some_and(|t| t.is_zero()) {
        p.0.push(format!("{at}: verify.tolerance must be above zero (e.g. \"5m\")"));
        return None;
    }
    tolerance
}

/// `scheme = "hmac"`: a header name, and known algorithm and encoding.
fn hmac(at: &str, h: RawHmac, secrets: Vec<Secret>, p: &mut Problems) -> Option<VerifyScheme> {
    let header = match h.header {
        None => {
            p.0.push(format!(
                "{at}: verify scheme \"hmac\" needs header, the header carrying the signature, e.g. {}",
                example(SchemeName::Hmac)
            ));
            None
        }
        Some(h) if !is_header_name(h.trim()) => {
            p.0.push(format!("{at}: verify.header = {h:?} is not a header name (e.g. \"X-Signature\")"));
            None
        }
        Some(h) => Some(h.trim().to_string()),
    };
    let algorithms =
        [("sha1", HmacAlgorithm::Sha1), ("sha256", HmacAlgorithm::Sha256), ("sha512", HmacAlgorithm::Sha512)];
    let algorithm =
        p.take(one_of(&format!("{at}: verify.algorithm"), h.algorithm.as_deref().unwrap_or("sha256"), &algorithms));
    let encodings = [("hex", SignatureEncoding::Hex), ("base64", SignatureEncoding::Base64)];
    let encoding =
        p.take(one_of(&format!("{at}: verify.encoding"), h.encoding.as_deref().unwrap_or("hex"), &encodings));
    let prefix = h.prefix.filter(|x| !x.is_empty());
    Some(VerifyScheme::Hmac { header: header?, algorithm: algorithm?, encoding: encoding?, prefix, secrets })
}
