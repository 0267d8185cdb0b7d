use super::*;
use crate::config::Secret;
use hmac::{Hmac, Mac};
use proptest::prelude::*;
use sha2::Sha256;

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn incoming(sig: Option<&str>, body: &[u8]) -> Incoming {
    let mut h = vec![("X-GitHub-Event".to_string(), "push".to_string())];
    if let Some(s) = sig {
        h.push(("X-Hub-Signature-256".to_string(), s.to_string()));
    }
    Incoming { headers: Headers::from_pairs(h), query: String::new(), body: Bytes::copy_from_slice(body) }
}

fn github(secrets: &[&str]) -> github::Github {
    github::Github::new(secrets.iter().map(|s| Secret::new(*s)).collect())
}

/// GitHub's published test vector (docs: "Testing the webhook payload validation").
#[test]
fn github_s_own_test_vector_verifies() {
    let secret = "It's a Secret to Everybody";
    let body = b"Hello, World!";
    let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    assert_eq!(sign(secret, body), expected);
    // The vector's body is not JSON, so verification passes and parsing then refuses it.
    let err = github(&[secret]).verify("gh", incoming(Some(expected), body)).unwrap_err();
    assert!(matches!(err, SourceError::BadRequest { .. }), "{err}");
    let err = github(&["other"]).verify("gh", incoming(Some(expected), body)).unwrap_err();
    assert!(matches!(err, SourceError::Unauthorized { .. }), "{err}");
}

#[test]
fn every_configured_secret_is_tried() {
    let body = br#"{"ref":"refs/heads/main"}"#;
    let v = github(&["new", "old"]).verify("gh", incoming(Some(&sign("old", body)), body)).unwrap();
    assert_eq!(v.source(), "gh");
    let err = github(&["a", "b"]).verify("gh", incoming(Some(&sign("c", body)), body)).unwrap_err();
    assert_eq!(err.to_string(), "source 'gh': signature mismatch (tried 2 secrets)");
}

#[test]
fn headers_are_case_insensitive_and_joined() {
    let h = Headers::from_pairs([("X-A", "1"), ("x-a", "2"), ("Authorization", "Bearer t")]);
    assert_eq!(h.get("X-a"), Some("1, 2"));
    assert!(h.to_stored().get("authorization").is_none(), "credentials are not stored");
}

proptest! {
    #[test]
    fn sign_then_verify_passes_and_any_flipped_byte_fails(
        body in proptest::collection::vec(any::<u8>(), 1..512),
        idx in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let g = github(&["s3cret"]);
        let sig = sign("s3cret", &body);
        // Signature holds (parsing may then fail: arbitrary bytes are rarely JSON).
        let ok = g.verify("gh", incoming(Some(&sig), &body));
        let refused = matches!(ok, Err(SourceError::Unauthorized { .. }));
        prop_assert!(!refused, "signed body refused");
        let mut tampered = body.clone();
        tampered[idx.index(body.len())] ^= 1 << bit;
        let bad = g.verify("gh", incoming(Some(&sig), &tampered));
        let refused = matches!(bad, Err(SourceError::Unauthorized { .. }));
        prop_assert!(refused, "tampered body passed");
    }

    #[test]
    fn arbitrary_signature_headers_never_panic(sig in "\\PC{0,200}", body in proptest::collection::vec(any::<u8>(), 0..64)) {
        let r = github(&["k"]).verify("gh", incoming(Some(&sig), &body));
        prop_assert!(r.is_err());
    }
}

#[test]
fn a_refusal_s_metric_label_comes_from_its_variant_not_its_words() {
    // The words are chosen to mislead a text search: the label must not follow them.
    let text = || "missing malformed mismatch tolerance SignatureVersion SigningCertURL".to_string();
    let cases = [
        (Refusal::MissingCredentials(text()), "missing_credentials"),
        (Refusal::MalformedCredentials(text()), "malformed_credentials"),
        (Refusal::SignatureMismatch(text()), "signature_mismatch"),
        (Refusal::StaleTimestamp(text()), "stale_timestamp"),
        (Refusal::SignatureVersion(text()), "signature_version"),
        (Refusal::SigningCertificate(text()), "signing_certificate"),
        (Refusal::Unreadable(text()), "unauthorized"),
    ];
    for (reason, label) in cases {
        let err = SourceError::Unauthorized { source_name: "s".into(), reason };
        assert_eq!(err.reason_class(), label, "{err:?}");
        assert_eq!(err.to_string(), format!("source 's': {}", text()), "the message is the detail as written");
    }
}

#[test]
fn a_github_refusal_is_labelled_by_what_failed() {
    let body = br#"{"ref":"refs/heads/main"}"#;
    let g = github(&["s3cret"]);
    let label = |sig: Option<&str>| g.verify("gh", incoming(sig, body)).unwrap_err().reason_class();
    assert_eq!(label(None), "missing_credentials");
    assert_eq!(label(Some("sha256=zz")), "malformed_credentials");
    assert_eq!(label(Some(&sign("other", body))), "signature_mismatch");
}
