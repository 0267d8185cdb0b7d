//! `verify = { scheme = ... }` of `kind = "generic"` sources, validated into [`VerifyScheme`].

use super::raw::RawVerify;
use super::{duration, Problems, Secret};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use std::time::Duration;

/// The verify schemes this build knows, for error messages.
pub const VERIFY_SCHEMES: &[&str] =
    &["hmac", "standard-webhooks", "stripe", "slack", "gitlab", "bearer", "basic", "none"];

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
        match self {
            VerifyScheme::Hmac { .. } => "hmac",
            VerifyScheme::StandardWebhooks { .. } => "standard-webhooks",
            VerifyScheme::Stripe { .. } => "stripe",
            VerifyScheme::Slack { .. } => "slack",
            VerifyScheme::Gitlab { .. } => "gitlab",
            VerifyScheme::Bearer { .. } => "bearer",
            VerifyScheme::Basic { .. } => "basic",
            VerifyScheme::None => "none",
        }
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

/// The HMAC key of a Standard Webhooks secret: `whsec_<base64>` is decoded, anything else
/// is used as it is.
pub fn standard_webhooks_key(secret: &Secret) -> Result<Vec<u8>, String> {
    match secret.expose().strip_prefix("whsec_") {
        Some(b64) => match BASE64.decode(b64.trim()) {
            Ok(k) if !k.is_empty() => Ok(k),
            Ok(_) => Err("the whsec_ secret is empty after the prefix".to_string()),
            Err(_) => {
                Err("a whsec_ secret must be base64 after the prefix (copy it whole from the sender)".to_string())
            }
        },
        None => Ok(secret.expose().as_bytes().to_vec()),
    }
}

/// One example per scheme, for error messages.
fn example(scheme: &str) -> &'static str {
    match scheme {
        "hmac" => r#"verify = { scheme = "hmac", header = "X-Signature", prefix = "sha256=" }"#,
        "standard-webhooks" => r#"verify = { scheme = "standard-webhooks", tolerance = "5m" }"#,
        "stripe" => r#"verify = { scheme = "stripe" }"#,
        "slack" => r#"verify = { scheme = "slack" }"#,
        "gitlab" => r#"verify = { scheme = "gitlab" }"#,
        "bearer" => r#"verify = { scheme = "bearer" }"#,
        "basic" => r#"verify = { scheme = "basic" }"#,
        _ => r#"verify = { scheme = "none" }"#,
    }
}

/// What a scheme's secrets are, for error messages.
fn secrets_hint(scheme: &str) -> &'static str {
    match scheme {
        "hmac" => "the shared signing secret",
        "standard-webhooks" => "the whsec_... signing secret",
        "stripe" => "the endpoint's whsec_... signing secret",
        "slack" => "the app's signing secret",
        "gitlab" => "the webhook's secret token",
        "bearer" => "the accepted bearer tokens",
        _ => "the accepted \"user:password\" pairs",
    }
}

/// The options each scheme takes besides `scheme`.
fn options(scheme: &str) -> &'static [&'static str] {
    match scheme {
        "hmac" => &["header", "algorithm", "encoding", "prefix"],
        "standard-webhooks" | "stripe" | "slack" => &["tolerance"],
        _ => &[],
    }
}

/// A header name as HTTP allows one (RFC 9110 token).
fn is_header_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Validates the `verify` of a generic source. `written_secrets` is how many secret references
/// the source lists; `secrets` are the ones that resolved. Pushes every problem to `p`;
/// `None` when the scheme cannot be built.
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
            VERIFY_SCHEMES.join(", "),
            example("hmac"),
        ));
        return None;
    };
    let scheme = v.scheme.as_str();
    if !VERIFY_SCHEMES.contains(&scheme) {
        p.0.push(format!("{at}: unknown verify scheme {scheme:?} (expected one of: {})", VERIFY_SCHEMES.join(", ")));
        return None;
    }
    let before = p.0.len();
    let allowed = options(scheme);
    for (option, set) in [
        ("header", v.header.is_some()),
        ("algorithm", v.algorithm.is_some()),
        ("encoding", v.encoding.is_some()),
        ("prefix", v.prefix.is_some()),
        ("tolerance", v.tolerance.is_some()),
    ] {
        if set && !allowed.contains(&option) {
            let takes = if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") };
            p.0.push(format!(
                "{at}: verify option {option} does not apply to scheme {scheme:?} (its options: {takes})"
            ));
        }
    }
    if scheme == "none" {
        if written_secrets > 0 {
            p.0.push(format!(
                "{at}: verify scheme \"none\" checks nothing, so secrets would be ignored: remove them or pick a scheme that uses them"
            ));
        }
        warnings.push(format!("{at}: verify scheme none accepts unsigned requests from anyone"));
        return (p.0.len() == before).then_some(VerifyScheme::None);
    }
    if written_secrets == 0 {
        p.0.push(format!(
            "{at}: verify scheme {scheme:?} needs secrets = [\"env:NAME\"] ({}), e.g. {}",
            secrets_hint(scheme),
            example(scheme)
        ));
    }
    let tolerance = if allowed.contains(&"tolerance") {
        let t = p.take(duration("verify.tolerance", v.tolerance.as_deref(), "5m").map_err(|e| format!("{at}: {e}")));
        if t.is_some_and(|t| t.is_zero()) {
            p.0.push(format!("{at}: verify.tolerance must be above zero (e.g. \"5m\")"));
        }
        t
    } else {
        None
    };
    let scheme = match scheme {
        "hmac" => {
            let header = match v.header {
                None => {
                    p.0.push(format!(
                        "{at}: verify scheme \"hmac\" needs header, the header carrying the signature, e.g. {}",
                        example("hmac")
                    ));
                    None
                }
                Some(h) if !is_header_name(h.trim()) => {
                    p.0.push(format!("{at}: verify.header = {h:?} is not a header name (e.g. \"X-Signature\")"));
                    None
                }
                Some(h) => Some(h.trim().to_string()),
            };
            let algorithm = match v.algorithm.as_deref() {
                None | Some("sha256") => Some(HmacAlgorithm::Sha256),
                Some("sha1") => Some(HmacAlgorithm::Sha1),
                Some("sha512") => Some(HmacAlgorithm::Sha512),
                Some(other) => {
                    p.0.push(format!(
                        "{at}: verify.algorithm = {other:?}: expected \"sha1\", \"sha256\" or \"sha512\""
                    ));
                    None
                }
            };
            let encoding = match v.encoding.as_deref() {
                None | Some("hex") => Some(SignatureEncoding::Hex),
                Some("base64") => Some(SignatureEncoding::Base64),
                Some(other) => {
                    p.0.push(format!("{at}: verify.encoding = {other:?}: expected \"hex\" or \"base64\""));
                    None
                }
            };
            let prefix = v.prefix.filter(|x| !x.is_empty());
            match (header, algorithm, encoding) {
                (Some(header), Some(algorithm), Some(encoding)) => {
                    VerifyScheme::Hmac { header, algorithm, encoding, prefix, secrets }
                }
                _ => return None,
            }
        }
        "standard-webhooks" => {
            for (i, s) in secrets.iter().enumerate() {
                if let Err(e) = standard_webhooks_key(s) {
                    p.0.push(format!("{at}: secrets[{i}]: {e}"));
                }
            }
            VerifyScheme::StandardWebhooks { secrets, tolerance: tolerance? }
        }
        "stripe" => VerifyScheme::Stripe { secrets, tolerance: tolerance? },
        "slack" => VerifyScheme::Slack { secrets, tolerance: tolerance? },
        "gitlab" => VerifyScheme::Gitlab { secrets },
        "bearer" => VerifyScheme::Bearer { secrets },
        _ => {
            for (i, s) in secrets.iter().enumerate() {
                if !s.expose().contains(':') {
                    p.0.push(format!("{at}: secrets[{i}]: scheme \"basic\" takes secrets written \"user:password\""));
                }
            }
            VerifyScheme::Basic { secrets }
        }
    };
    (p.0.len() == before).then_some(scheme)
}
