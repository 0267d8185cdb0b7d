//! Hostile input for every verifier and parser of unverified bytes: arbitrary bodies and
//! headers, and requests signed correctly but with the wrong key. Never a panic; never an
//! accept without the right key; always an accept with it.
//!
//! Each property runs a thousand cases on small inputs (tens of thousands of checks), so the whole
//! file stays within a few seconds even unoptimised.

use super::github::{self, Github};
use super::verify::Verifier;
use super::{Headers, SourceError};
use crate::config::{HmacAlgorithm, Secret, SignatureEncoding, VerifyScheme};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use proptest::prelude::*;
use sha2::Sha256;
use std::time::Duration;

const NOW: i64 = 1_700_000_000;
const TOLERANCE: Duration = Duration::from_secs(300);
const CASES: u32 = 1000;

/// The scheme names [`scheme`] builds, one per verifier branch (hmac twice: hex and base64).
const SCHEMES: &[&str] =
    &["hmac-hex", "hmac-base64", "standard-webhooks", "stripe", "slack", "gitlab", "bearer", "basic"];

/// A scheme whose one secret is `secret` (for basic: `user:<secret>`).
fn scheme(name: &str, secret: &str) -> VerifyScheme {
    let secrets = vec![Secret::new(if name == "basic" { format!("user:{secret}") } else { secret.to_string() })];
    let tolerance = TOLERANCE;
    match name {
        "hmac-hex" => VerifyScheme::Hmac {
            header: "X-Signature".into(),
            algorithm: HmacAlgorithm::Sha256,
            encoding: SignatureEncoding::Hex,
            prefix: Some("sha256=".into()),
            secrets,
        },
        "hmac-base64" => VerifyScheme::Hmac {
            header: "X-Signature".into(),
            algorithm: HmacAlgorithm::Sha256,
            encoding: SignatureEncoding::Base64,
            prefix: None,
            secrets,
        },
        "standard-webhooks" => VerifyScheme::StandardWebhooks { secrets, tolerance },
        "stripe" => VerifyScheme::Stripe { secrets, tolerance },
        "slack" => VerifyScheme::Slack { secrets, tolerance },
        "gitlab" => VerifyScheme::Gitlab { secrets },
        "bearer" => VerifyScheme::Bearer { secrets },
        "basic" => VerifyScheme::Basic { secrets },
        other => panic!("no such scheme in SCHEMES: {other}"),
    }
}

fn mac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

/// The headers a genuine sender of `name` holding `secret` would send with `body` at `ts`.
fn signed(name: &str, secret: &str, body: &[u8], ts: i64, id: &str) -> Vec<(String, String)> {
    let t = ts.to_string();
    let h = |pairs: &[(&str, String)]| pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    match name {
        "hmac-hex" => h(&[("X-Signature", format!("sha256={}", hex::encode(mac(secret.as_bytes(), &[body]))))]),
        "hmac-base64" => h(&[("X-Signature", B64.encode(mac(secret.as_bytes(), &[body])))]),
        "standard-webhooks" => {
            let sig = mac(secret.as_bytes(), &[id.as_bytes(), b".", t.as_bytes(), b".", body]);
            h(&[
                ("webhook-id", id.into()),
                ("webhook-timestamp", t.clone()),
                ("webhook-signature", format!("v1,{}", B64.encode(sig))),
            ])
        }
        "stripe" => {
            let sig = hex::encode(mac(secret.as_bytes(), &[t.as_bytes(), b".", body]));
            h(&[("Stripe-Signature", format!("t={t},v1={sig}"))])
        }
        "slack" => {
            let sig = hex::encode(mac(secret.as_bytes(), &[b"v0:", t.as_bytes(), b":", body]));
            h(&[("X-Slack-Request-Timestamp", t.clone()), ("X-Slack-Signature", format!("v0={sig}"))])
        }
        "gitlab" => h(&[("X-Gitlab-Token", secret.into())]),
        "bearer" => h(&[("Authorization", format!("Bearer {secret}"))]),
        "basic" => h(&[("Authorization", format!("Basic {}", B64.encode(format!("user:{secret}"))))]),
        other => panic!("no such scheme in SCHEMES: {other}"),
    }
}

/// Header names any verifier reads, in assorted cases, and a few it does not.
fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "X-Signature",
            "x-signature",
            "webhook-id",
            "webhook-timestamp",
            "webhook-signature",
            "svix-id",
            "svix-timestamp",
            "svix-signature",
            "Stripe-Signature",
            "X-Slack-Signature",
            "X-Slack-Request-Timestamp",
            "X-Gitlab-Token",
            "Authorization",
            "X-Hub-Signature-256",
            "X-GitHub-Event",
            "Content-Type",
            "X-GitHub-Delivery",
        ])
        .prop_map(str::to_string),
        "[a-zA-Z-]{1,12}",
    ]
}

/// Values shaped like signatures (right prefixes, right lengths, random digits) half the time,
/// so that checks get past parsing to the comparison; any text otherwise.
fn header_value() -> impl Strategy<Value = String> {
    let bytes32 = prop::collection::vec(any::<u8>(), 32);
    prop_oneof![
        "\\PC{0,80}",
        bytes32.clone().prop_map(|b| format!("sha256={}", hex::encode(b))),
        bytes32.clone().prop_map(|b| B64.encode(b)),
        (bytes32.clone(), 1usize..4).prop_map(|(b, n)| vec![format!("v1,{}", B64.encode(&b)); n].join(" ")),
        (bytes32.clone(), NOW - 400..NOW + 400).prop_map(|(b, t)| format!("t={t},v1={}", hex::encode(b))),
        bytes32.prop_map(|b| format!("v0={}", hex::encode(b))),
        (NOW - 400..NOW + 400).prop_map(|t| t.to_string()),
        "(Bearer|Basic|bearer) [ -~]{0,40}",
        prop::collection::vec(any::<u8>(), 0..40).prop_map(|b| format!("Basic {}", B64.encode(b))),
        prop_oneof![Just("application/json"), Just("application/x-www-form-urlencoded"), Just("text/plain")]
            .prop_map(str::to_string),
    ]
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((header_name(), header_value()), 0..8)
}

/// Bodies: arbitrary bytes, JSON-ish text, and form bodies with a payload field.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        "\\{\"[a-z]{0,5}\":[ -~]{0,40}\\}".prop_map(String::into_bytes),
        "payload=[ -~%+&=]{0,60}".prop_map(String::into_bytes),
    ]
}

const KEY: &str = "the right key, which no generator produces";

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    /// Arbitrary headers and bodies: every verifier refuses (no request carries the key), and
    /// none panics.
    #[test]
    fn no_verifier_accepts_or_panics_on_arbitrary_headers(headers in headers(), body in body()) {
        let h = Headers::from_pairs(headers);
        for name in SCHEMES {
            let v = Verifier::new(&scheme(name, KEY)).unwrap();
            prop_assert!(v.check(&h, &body, NOW).is_err(), "{} accepted {:?}", name, h);
            let _ = v.delivery_id(&h);
        }
    }

    /// A request signed exactly as the sender would, but with another key, is refused; with
    /// the right key and any body, id and in-tolerance time, it passes.
    #[test]
    fn only_the_right_key_passes(
        wrong in "[ -~]{1,40}",
        body in body(),
        skew in -299i64..=299,
        id in "[a-zA-Z0-9_]{1,20}",
    ) {
        prop_assume!(wrong != KEY);
        for name in SCHEMES {
            let v = Verifier::new(&scheme(name, KEY)).unwrap();
            let right = Headers::from_pairs(signed(name, KEY, &body, NOW + skew, &id));
            prop_assert!(v.check(&right, &body, NOW).is_ok(), "{}: the right key was refused", name);
            let forged = Headers::from_pairs(signed(name, &wrong, &body, NOW + skew, &id));
            prop_assert!(v.check(&forged, &body, NOW).is_err(), "{}: {:?} passed for the key", name, wrong);
        }
    }

    /// GitHub, end to end: verification, the JSON or form envelope and its `payload=` field.
    /// Never a panic; a refusal for anything not signed with the secret; and a signed body is
    /// never refused for its signature, whatever it contains.
    #[test]
    fn github_never_panics_and_needs_the_secret(headers in headers(), body in body(), form in any::<bool>()) {
        let g = Github::new(vec![Secret::new(KEY)]);
        let incoming = |h: Vec<(String, String)>| super::Incoming {
            headers: Headers::from_pairs(h),
            query: String::new(),
            body: Bytes::from(body.clone()),
        };
        prop_assert!(g.verify("gh", incoming(headers.clone())).is_err());
        let sig = format!("sha256={}", hex::encode(mac(KEY.as_bytes(), &[&body])));
        let mut signed = headers;
        signed.retain(|(k, _)| !k.eq_ignore_ascii_case("X-Hub-Signature-256") && !k.eq_ignore_ascii_case("content-type"));
        signed.push(("X-Hub-Signature-256".into(), sig));
        if form {
            signed.push(("Content-Type".into(), "application/x-www-form-urlencoded".into()));
        }
        let r = g.verify("gh", incoming(signed));
        prop_assert!(!matches!(r, Err(SourceError::Unauthorized { .. })), "{:?}", r);
    }

    /// The parser of verified GitHub bytes (also run on stored payloads), JSON and form.
    #[test]
    fn the_github_parser_and_form_decoder_never_panic(headers in headers(), body in body()) {
        let _ = github::parse("gh", Headers::from_pairs(headers), "a=1&b", Bytes::from(body));
    }
}
