//! Every verify scheme: a correctly signed request passes, each kind of forgery is refused
//! with a reason that names the check and shows no secret.

use super::*;
use crate::config::{HmacAlgorithm, Secret, SignatureEncoding};
use crate::source::keep::EVERYTHING;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use proptest::prelude::*;
use std::time::Duration;

/// "Now" in every test, unix seconds.
const NOW: i64 = 1_700_000_000;
const BODY: &[u8] = br#"{"alerts":[{"status":"firing","labels":{"alertname":"DiskFull"}}]}"#;
const FIVE_MINUTES: Duration = Duration::from_secs(300);

fn secrets(s: &[&str]) -> Vec<Secret> {
    s.iter().map(|s| Secret::new(*s)).collect()
}

fn generic(scheme: VerifyScheme) -> Generic {
    Generic::new(&scheme).unwrap()
}

fn mac(algorithm: HmacAlgorithm, key: &[u8], msg: &[u8]) -> Vec<u8> {
    fn run<M: Mac + KeyInit>(key: &[u8], msg: &[u8]) -> Vec<u8> {
        let mut m = <M as Mac>::new_from_slice(key).unwrap();
        m.update(msg);
        m.finalize().into_bytes().to_vec()
    }
    match algorithm {
        HmacAlgorithm::Sha1 => run::<Hmac<sha1::Sha1>>(key, msg),
        HmacAlgorithm::Sha256 => run::<Hmac<sha2::Sha256>>(key, msg),
        HmacAlgorithm::Sha512 => run::<Hmac<sha2::Sha512>>(key, msg),
    }
}

fn sha256_hex(key: &str, msg: &[u8]) -> String {
    hex::encode(mac(HmacAlgorithm::Sha256, key.as_bytes(), msg))
}

fn incoming(headers: &[(&str, &str)], body: &[u8]) -> Incoming {
    Incoming {
        headers: Headers::from_pairs(headers.iter().copied()),
        query: String::new(),
        body: Bytes::copy_from_slice(body),
    }
}

fn check(g: &Generic, headers: &[(&str, &str)], body: &[u8]) -> Result<Verified, SourceError> {
    g.verify_at("src", incoming(headers, body), NOW, &EVERYTHING)
}

/// The reason of a 401; fails the test on any other outcome or on a leaked secret.
fn refused(r: Result<Verified, SourceError>, secrets: &[&str]) -> String {
    match r {
        Err(SourceError::Unauthorized { reason, .. }) => {
            let reason = reason.to_string();
            for s in secrets {
                assert!(!reason.contains(s), "reason leaks a secret: {reason}");
            }
            reason
        }
        Err(other) => panic!("expected 401, got {other}"),
        Ok(v) => panic!("expected 401, got accepted: {:?}", v.template_context()),
    }
}

fn assert_refused(r: Result<Verified, SourceError>, secrets: &[&str], reason: &str) {
    let got = refused(r, secrets);
    assert!(got.contains(reason), "expected {reason:?} in {got:?}");
}

// ───────────────────────────────────────── hmac ─────────────────────────────────────────────

fn hmac_sha256(prefix: Option<&str>, s: &[&str]) -> Generic {
    generic(VerifyScheme::Hmac {
        header: "X-Signature".into(),
        algorithm: HmacAlgorithm::Sha256,
        encoding: SignatureEncoding::Hex,
        prefix: prefix.map(str::to_string),
        secrets: secrets(s),
    })
}

#[test]
fn hmac_accepts_signed_requests_with_any_secret_and_refuses_forgeries() {
    let keys = ["current-secret", "previous-secret"];
    let g = hmac_sha256(Some("sha256="), &keys);
    let good = format!("sha256={}", sha256_hex("current-secret", BODY));
    let v = check(&g, &[("X-Signature", &good)], BODY).unwrap();
    assert_eq!(v.template_context()["body"]["alerts"][0]["labels"]["alertname"], "DiskFull");
    assert_eq!(v.delivery_id(), None, "hmac defines no delivery id");

    let rotated = format!("sha256={}", sha256_hex("previous-secret", BODY));
    check(&g, &[("x-signature", &rotated)], BODY).expect("the second secret verifies");
    let upper = format!("SHA256={}", sha256_hex("current-secret", BODY).to_uppercase());
    check(&g, &[("x-signature", &upper)], BODY).expect("prefix and hex digits in any case");

    let wrong = format!("sha256={}", sha256_hex("not-the-secret", BODY));
    assert_eq!(refused(check(&g, &[("X-Signature", &wrong)], BODY), &keys), "signature mismatch (tried 2 secrets)");
    let mut altered = BODY.to_vec();
    altered[10] ^= 1;
    assert_refused(check(&g, &[("X-Signature", &good)], &altered), &keys, "signature mismatch");
    assert_eq!(refused(check(&g, &[], BODY), &keys), "missing X-Signature header");
    let b64 = format!("sha256={}", B64.encode(mac(HmacAlgorithm::Sha256, b"current-secret", BODY)));
    assert_eq!(
        refused(check(&g, &[("X-Signature", &b64)], BODY), &keys),
        "malformed X-Signature header (expected sha256=<64 hex digits>)"
    );
    assert_refused(check(&g, &[("X-Signature", &good[7..])], BODY), &keys, "malformed X-Signature header");
    assert_refused(check(&g, &[("X-Signature", &good[..40])], BODY), &keys, "malformed X-Signature header");
}

#[test]
fn hmac_supports_each_algorithm_and_encoding() {
    for algorithm in [HmacAlgorithm::Sha1, HmacAlgorithm::Sha256, HmacAlgorithm::Sha512] {
        for encoding in [SignatureEncoding::Hex, SignatureEncoding::Base64] {
            let g = generic(VerifyScheme::Hmac {
                header: "X-Hook-Signature".into(),
                algorithm,
                encoding,
                prefix: None,
                secrets: secrets(&["k3y-one"]),
            });
            let raw = mac(algorithm, b"k3y-one", BODY);
            let (right, wrong) = match encoding {
                SignatureEncoding::Hex => (hex::encode(&raw), B64.encode(&raw)),
                SignatureEncoding::Base64 => (B64.encode(&raw), hex::encode(&raw)),
            };
            let case = format!("{algorithm:?}/{encoding:?}");
            check(&g, &[("X-Hook-Signature", &right)], BODY).unwrap_or_else(|e| panic!("{case}: {e}"));
            let reason = refused(check(&g, &[("X-Hook-Signature", &wrong)], BODY), &["k3y-one"]);
            assert!(reason.starts_with("malformed X-Hook-Signature header"), "{case}: {reason}");
            let other = mac(algorithm, b"other", BODY);
            let other = match encoding {
                SignatureEncoding::Hex => hex::encode(other),
                SignatureEncoding::Base64 => B64.encode(other),
            };
            let reason = refused(check(&g, &[("X-Hook-Signature", &other)], BODY), &["k3y-one"]);
            assert_eq!(reason, "signature mismatch (tried 1 secret)", "{case}");
        }
    }
    // A signature of another algorithm has the wrong length.
    let g = hmac_sha256(None, &["k3y-one"]);
    let sha1 = hex::encode(mac(HmacAlgorithm::Sha1, b"k3y-one", BODY));
    assert_refused(check(&g, &[("X-Signature", &sha1)], BODY), &["k3y-one"], "malformed X-Signature header");
}

// ──────────────────────────────────── standard-webhooks ─────────────────────────────────────

/// 24 bytes, base64 with the whsec_ prefix.
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn standard(s: &[&str]) -> Generic {
    generic(VerifyScheme::StandardWebhooks { secrets: secrets(s), tolerance: FIVE_MINUTES })
}

fn sw_sign(key: &[u8], id: &str, ts: &str, body: &[u8]) -> String {
    let msg = [id.as_bytes(), b".", ts.as_bytes(), b".", body].concat();
    format!("v1,{}", B64.encode(mac(HmacAlgorithm::Sha256, key, &msg)))
}

/// The official test vector of the Standard Webhooks spec (`sign-test-vector.json`).
#[test]
fn standard_webhooks_official_test_vector_verifies() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    let timestamp: i64 = 1614265330;
    let payload = br#"{"test": 2432232314}"#;
    let signature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    let key = crate::config::standard_webhooks_key(&Secret::new(secret)).unwrap();
    assert_eq!(sw_sign(&key, id, &timestamp.to_string(), payload), signature, "the test's signer agrees");

    let g = standard(&[secret]);
    let ts = timestamp.to_string();
    let headers = [("webhook-id", id), ("webhook-timestamp", ts.as_str()), ("webhook-signature", signature)];
    let v = g.verify_at("sw", incoming(&headers, payload), timestamp, &EVERYTHING).unwrap();
    assert_eq!(v.delivery_id(), Some(id), "webhook-id makes repeats duplicates");
    assert_eq!(v.template_context()["body"]["test"], 2432232314u64);
    // Svix sends the same scheme under its own header names.
    let svix = [("svix-id", id), ("svix-timestamp", ts.as_str()), ("svix-signature", signature)];
    let v = g.verify_at("sw", incoming(&svix, payload), timestamp + 299, &EVERYTHING).unwrap();
    assert_eq!(v.delivery_id(), Some(id));
    // Ten minutes later the same request is a replay.
    let r = g.verify_at("sw", incoming(&headers, payload), timestamp + 600, &EVERYTHING);
    assert_eq!(refused(r, &[secret]), "timestamp outside tolerance of 5m");
}

#[test]
fn standard_webhooks_refuses_forgeries_and_accepts_rotation() {
    let keys = [WHSEC, "a raw secret without the prefix"];
    let g = standard(&keys);
    let key = crate::config::standard_webhooks_key(&Secret::new(WHSEC)).unwrap();
    let ts = NOW.to_string();
    let good = sw_sign(&key, "msg_1", &ts, BODY);
    fn h<'a>(sig: &'a str, ts: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![("webhook-id", "msg_1"), ("webhook-timestamp", ts), ("webhook-signature", sig)]
    }

    check(&g, &h(&good, &ts), BODY).unwrap();
    let rotated = sw_sign(keys[1].as_bytes(), "msg_1", &ts, BODY);
    check(&g, &h(&rotated, &ts), BODY).expect("a secret without whsec_ is used as raw bytes");
    let several = format!("v1a,AAAA v1,{} {good}", B64.encode([0u8; 32]));
    check(&g, &h(&several, &ts), BODY).expect("any of several signatures passes");

    let wrong = sw_sign(b"not the key", "msg_1", &ts, BODY);
    assert_eq!(refused(check(&g, &h(&wrong, &ts), BODY), &keys), "signature mismatch (tried 2 secrets)");
    let mut altered = BODY.to_vec();
    altered[3] ^= 0x20;
    assert_refused(check(&g, &h(&good, &ts), &altered), &keys, "signature mismatch");
    let other_id = [("webhook-id", "msg_2"), ("webhook-timestamp", ts.as_str()), ("webhook-signature", good.as_str())];
    assert_refused(check(&g, &other_id, BODY), &keys, "signature mismatch");
    for skew in [-301, 301, -100_000] {
        let t = (NOW + skew).to_string();
        let sig = sw_sign(&key, "msg_1", &t, BODY);
        assert_eq!(refused(check(&g, &h(&sig, &t), BODY), &keys), "timestamp outside tolerance of 5m", "skew {skew}");
    }
    let t = (NOW - 299).to_string();
    check(&g, &h(&sw_sign(&key, "msg_1", &t, BODY), &t), BODY).expect("inside the tolerance");

    assert_eq!(refused(check(&g, &[], BODY), &keys), "missing webhook-signature header");
    let no_id = [("webhook-timestamp", ts.as_str()), ("webhook-signature", good.as_str())];
    assert_eq!(refused(check(&g, &no_id, BODY), &keys), "missing webhook-id header");
    let no_ts = [("webhook-id", "msg_1"), ("webhook-signature", good.as_str())];
    assert_eq!(refused(check(&g, &no_ts, BODY), &keys), "missing webhook-timestamp header");
    assert_refused(check(&g, &h(&good, "yesterday"), BODY), &keys, "malformed webhook-timestamp header");
    let hex_sig = format!("v1,{}", hex::encode(mac(HmacAlgorithm::Sha256, &key, b"x")));
    assert_refused(check(&g, &h(&hex_sig, &ts), BODY), &keys, "malformed webhook-signature header");
    assert_refused(check(&g, &h(&good[3..], &ts), BODY), &keys, "malformed webhook-signature header");
}

// ───────────────────────────────────────── stripe ───────────────────────────────────────────

fn stripe_sig(secret: &str, t: i64, body: &[u8]) -> String {
    sha256_hex(secret, &[t.to_string().as_bytes(), b".", body].concat())
}

#[test]
fn stripe_accepts_signed_requests_and_refuses_forgeries() {
    // Stripe uses the whole whsec_ string as the key.
    let keys = ["whsec_current", "whsec_previous"];
    let g = generic(VerifyScheme::Stripe { secrets: secrets(&keys), tolerance: FIVE_MINUTES });
    let header = |t: i64, sigs: &[String]| {
        let mut h = format!("t={t}");
        for s in sigs {
            h.push_str(&format!(",v1={s}"));
        }
        h
    };
    let good = header(NOW, &[stripe_sig("whsec_current", NOW, BODY)]);
    let v = check(&g, &[("Stripe-Signature", &good)], BODY).unwrap();
    assert_eq!(v.delivery_id(), None);
    let rotated = header(NOW, &[stripe_sig("whsec_previous", NOW, BODY)]);
    check(&g, &[("Stripe-Signature", &rotated)], BODY).expect("second secret");
    let two = header(NOW, &["00".repeat(32), stripe_sig("whsec_current", NOW, BODY)]);
    check(&g, &[("Stripe-Signature", &format!("{two},v0=abc"))], BODY).expect("any v1 entry, v0 ignored");

    let wrong = header(NOW, &[stripe_sig("whsec_other", NOW, BODY)]);
    assert_eq!(
        refused(check(&g, &[("Stripe-Signature", &wrong)], BODY), &keys),
        "signature mismatch (tried 2 secrets)"
    );
    assert_refused(check(&g, &[("Stripe-Signature", &good)], b"{\"forged\":1}"), &keys, "signature mismatch");
    let moved = good.replacen(&format!("t={NOW}"), &format!("t={}", NOW - 1), 1);
    assert_refused(check(&g, &[("Stripe-Signature", &moved)], BODY), &keys, "signature mismatch");
    let stale = header(NOW - 600, &[stripe_sig("whsec_current", NOW - 600, BODY)]);
    assert_eq!(refused(check(&g, &[("Stripe-Signature", &stale)], BODY), &keys), "timestamp outside tolerance of 5m");
    assert_eq!(refused(check(&g, &[], BODY), &keys), "missing Stripe-Signature header");
    let b64 = format!("t={NOW},v1={}", B64.encode(mac(HmacAlgorithm::Sha256, b"whsec_current", BODY)));
    for bad in [b64.as_str(), "v1=abc", "t=x,v1=00", "garbage", "", &format!("t={NOW}")] {
        let reason = refused(check(&g, &[("Stripe-Signature", bad)], BODY), &keys);
        assert!(reason.starts_with("malformed Stripe-Signature header"), "{bad:?}: {reason}");
    }
}

// ───────────────────────────────── signature floods ─────────────────────────────────────────

/// MACs computed while `f` runs (on this thread, where verification runs).
fn macs_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = crate::source::verify::MACS_COMPUTED.with(|n| n.get());
    let out = f();
    (out, crate::source::verify::MACS_COMPUTED.with(|n| n.get()) - before)
}

#[test]
fn many_candidate_signatures_cost_one_mac_per_secret_and_more_than_ten_are_refused_unread() {
    let keys = [WHSEC, "second raw secret"];
    let sw = standard(&keys);
    let stripe = generic(VerifyScheme::Stripe { secrets: secrets(&keys), tolerance: FIVE_MINUTES });
    let ts = NOW.to_string();
    let forged = |i: usize| B64.encode([u8::try_from(i % 251).unwrap(); 32]);
    let sw_header = |n: usize| (0..n).map(|i| format!("v1,{}", forged(i))).collect::<Vec<_>>().join(" ");
    let stripe_header = |n: usize| {
        format!("t={NOW},")
            + &(0..n)
                .map(|i| format!("v1={}", "ab".repeat(31) + &format!("{:02x}", i % 256)))
                .collect::<Vec<_>>()
                .join(",")
    };

    // Ten forged candidates, two secrets: two MACs, not twenty.
    let sig = sw_header(10);
    let h = [("webhook-id", "msg_1"), ("webhook-timestamp", ts.as_str()), ("webhook-signature", sig.as_str())];
    let (r, macs) = macs_during(|| check(&sw, &h, BODY));
    assert_eq!(refused(r, &keys), "signature mismatch (tried 2 secrets)");
    assert_eq!(macs, 2, "standard-webhooks: one MAC per secret");
    let sig = stripe_header(10);
    let (r, macs) = macs_during(|| check(&stripe, &[("Stripe-Signature", &sig)], BODY));
    assert_eq!(refused(r, &keys), "signature mismatch (tried 2 secrets)");
    assert_eq!(macs, 2, "stripe: one MAC per secret");

    // A genuine signature among forged ones still verifies, wherever it stands.
    let key = crate::config::standard_webhooks_key(&Secret::new(WHSEC)).unwrap();
    let good = sw_sign(&key, "msg_1", &ts, BODY);
    let mixed = format!("{} {good}", sw_header(9));
    let h = [("webhook-id", "msg_1"), ("webhook-timestamp", ts.as_str()), ("webhook-signature", mixed.as_str())];
    check(&sw, &h, BODY).expect("the tenth candidate is the right one");

    // 1 MiB and 1500 candidates: refused before a single MAC, naming the limit.
    let big = [b"{\"a\":\"".as_slice(), &vec![b'x'; 1 << 20], b"\"}"].concat();
    let sig = sw_header(1500);
    let h = [("webhook-id", "msg_1"), ("webhook-timestamp", ts.as_str()), ("webhook-signature", sig.as_str())];
    let (r, macs) = macs_during(|| check(&sw, &h, &big));
    assert_eq!(
        refused(r, &keys),
        "malformed webhook-signature header: more than 10 signatures (the limit per request)"
    );
    assert_eq!(macs, 0);
    let sig = stripe_header(1500);
    let (r, macs) = macs_during(|| check(&stripe, &[("Stripe-Signature", &sig)], &big));
    assert_eq!(refused(r, &keys), "malformed Stripe-Signature header: more than 10 signatures (the limit per request)");
    assert_eq!(macs, 0);
    let sig = sw_header(11);
    let h = [("webhook-id", "msg_1"), ("webhook-timestamp", ts.as_str()), ("webhook-signature", sig.as_str())];
    assert_refused(check(&sw, &h, BODY), &keys, "more than 10 signatures");
}

// ───────────────────────────────────────── slack ────────────────────────────────────────────

fn slack_sig(secret: &str, ts: &str, body: &[u8]) -> String {
    format!("v0={}", sha256_hex(secret, &[b"v0:", ts.as_bytes(), b":", body].concat()))
}

#[test]
fn slack_accepts_signed_requests_and_refuses_forgeries() {
    let keys = ["8f742231b10e8888abcd99yyyzzz85a5", "0ld-slack-secret"];
    let g = generic(VerifyScheme::Slack { secrets: secrets(&keys), tolerance: FIVE_MINUTES });
    let ts = NOW.to_string();
    let h = |sig: &str, ts: &str| {
        vec![("X-Slack-Signature", sig.to_string()), ("X-Slack-Request-Timestamp", ts.to_string())]
    };
    let run = |h: Vec<(&str, String)>, body: &[u8]| {
        let pairs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        check(&g, &pairs, body)
    };
    run(h(&slack_sig(keys[0], &ts, BODY), &ts), BODY).unwrap();
    run(h(&slack_sig(keys[1], &ts, BODY), &ts), BODY).expect("second secret");

    let wrong = slack_sig("wrong", &ts, BODY);
    assert_eq!(refused(run(h(&wrong, &ts), BODY), &keys), "signature mismatch (tried 2 secrets)");
    assert_refused(run(h(&slack_sig(keys[0], &ts, BODY), &ts), b"{}"), &keys, "signature mismatch");
    let old = (NOW - 301).to_string();
    assert_eq!(
        refused(run(h(&slack_sig(keys[0], &old, BODY), &old), BODY), &keys),
        "timestamp outside tolerance of 5m"
    );
    assert_eq!(
        refused(check(&g, &[("X-Slack-Request-Timestamp", &ts)], BODY), &keys),
        "missing X-Slack-Signature header"
    );
    let sig = slack_sig(keys[0], &ts, BODY);
    assert_eq!(
        refused(check(&g, &[("X-Slack-Signature", &sig)], BODY), &keys),
        "missing X-Slack-Request-Timestamp header"
    );
    let b64 = format!("v0={}", B64.encode(mac(HmacAlgorithm::Sha256, keys[0].as_bytes(), BODY)));
    assert_eq!(
        refused(run(h(&b64, &ts), BODY), &keys),
        "malformed X-Slack-Signature header (expected v0=<64 hex digits>)"
    );
    assert_refused(run(h(&sig, "-5"), BODY), &keys, "malformed X-Slack-Request-Timestamp header");
}

// ─────────────────────────────────── gitlab, bearer, basic ──────────────────────────────────

#[test]
fn gitlab_compares_the_token_with_every_secret() {
    let keys = ["glpat-token-one", "token-two"];
    let g = generic(VerifyScheme::Gitlab { secrets: secrets(&keys) });
    check(&g, &[("X-Gitlab-Token", "glpat-token-one")], BODY).unwrap();
    check(&g, &[("x-gitlab-token", "token-two")], BODY).expect("second secret");
    assert_eq!(refused(check(&g, &[("X-Gitlab-Token", "guess")], BODY), &keys), "token mismatch (tried 2 secrets)");
    assert_refused(check(&g, &[("X-Gitlab-Token", "glpat-token-on")], BODY), &keys, "token mismatch");
    assert_refused(check(&g, &[("X-Gitlab-Token", "glpat-token-one2")], BODY), &keys, "token mismatch");
    assert_refused(check(&g, &[("X-Gitlab-Token", "")], BODY), &keys, "token mismatch");
    assert_eq!(
        refused(check(&g, &[("Authorization", "Bearer token-two")], BODY), &keys),
        "missing X-Gitlab-Token header"
    );
}

#[test]
fn bearer_compares_the_token_with_every_secret() {
    let keys = ["t0ken-a", "t0ken-b"];
    let g = generic(VerifyScheme::Bearer { secrets: secrets(&keys) });
    check(&g, &[("Authorization", "Bearer t0ken-a")], BODY).unwrap();
    check(&g, &[("authorization", "bearer t0ken-b")], BODY).expect("second secret, any-case scheme");
    assert_eq!(
        refused(check(&g, &[("Authorization", "Bearer t0ken-c")], BODY), &keys),
        "token mismatch (tried 2 secrets)"
    );
    assert_eq!(refused(check(&g, &[], BODY), &keys), "missing Authorization header");
    for bad in ["t0ken-a", "Basic dDBrZW4tYQ==", "Bearer", "Bearert0ken-a"] {
        assert_eq!(
            refused(check(&g, &[("Authorization", bad)], BODY), &keys),
            "malformed Authorization header (expected Bearer <token>)",
            "{bad:?}"
        );
    }
}

#[test]
fn basic_compares_user_and_password_with_every_secret() {
    let keys = ["alertmanager:pa55word", "old:credentials"];
    let g = generic(VerifyScheme::Basic { secrets: secrets(&keys) });
    let basic = |s: &str| format!("Basic {}", B64.encode(s));
    check(&g, &[("Authorization", &basic("alertmanager:pa55word"))], BODY).unwrap();
    check(&g, &[("Authorization", &basic("old:credentials"))], BODY).expect("second secret");
    assert_eq!(
        refused(check(&g, &[("Authorization", &basic("alertmanager:wrong"))], BODY), &keys),
        "credentials mismatch (tried 2 secrets)"
    );
    assert_refused(check(&g, &[("Authorization", &basic("alertmanager"))], BODY), &keys, "credentials mismatch");
    assert_eq!(refused(check(&g, &[], BODY), &keys), "missing Authorization header");
    let hex_creds = format!("Basic {}", hex::encode("alertmanager:pa55word"));
    for bad in ["Bearer alertmanager:pa55word", "Basic not base64!", hex_creds.as_str()] {
        let reason = refused(check(&g, &[("Authorization", bad)], BODY), &keys);
        assert!(
            reason == "malformed Authorization header (expected Basic <base64 of user:password>)"
                || reason.starts_with("credentials mismatch"),
            "{bad:?}: {reason}"
        );
    }
}

#[test]
fn none_accepts_unsigned_requests() {
    let g = generic(VerifyScheme::None);
    let v = check(&g, &[], BODY).unwrap();
    assert_eq!(v.delivery_id(), None);
}

// ───────────────────────────────────── parsing and context ──────────────────────────────────

#[test]
fn verification_comes_before_parsing_and_only_json_is_accepted() {
    let g = hmac_sha256(None, &["s1gn-key"]);
    let sign = |body: &[u8]| sha256_hex("s1gn-key", body);
    // An unsigned malformed body is a 401, not a 400: nothing reads it before the check.
    assert_refused(check(&g, &[("X-Signature", "00")], b"{not json"), &["s1gn-key"], "malformed X-Signature");
    let junk = b"{not json";
    let r = check(&g, &[("X-Signature", &sign(junk))], junk);
    assert!(
        matches!(r, Err(SourceError::BadRequest { ref reason, .. }) if reason.contains("malformed JSON body")),
        "{r:?}"
    );
    let sig = sign(BODY);
    for ct in ["application/json", "Application/JSON; charset=utf-8"] {
        check(&g, &[("X-Signature", &sig), ("Content-Type", ct)], BODY).unwrap_or_else(|e| panic!("{ct}: {e}"));
    }
    for ct in ["text/plain", "application/x-www-form-urlencoded"] {
        let r = check(&g, &[("X-Signature", &sig), ("Content-Type", ct)], BODY);
        assert!(matches!(r, Err(SourceError::UnsupportedMediaType { .. })), "{ct}: {r:?}");
    }
}

#[test]
fn templates_see_headers_and_query_but_no_credentials() {
    let g = generic(VerifyScheme::Bearer { secrets: secrets(&["tok"]) });
    let req = Incoming {
        headers: Headers::from_pairs([("Authorization", "Bearer tok"), ("X-Team", "db")]),
        query: "env=prod".into(),
        body: Bytes::from_static(BODY),
    };
    let v = g.verify_at("am", req, NOW, &EVERYTHING).unwrap();
    let ctx = v.template_context();
    assert_eq!(ctx["headers"]["x-team"], "db");
    assert_eq!(ctx["query"]["env"], "prod");
    assert_eq!(ctx["source"], "am");
    assert!(ctx["headers"].get("authorization").is_none(), "{ctx}");
}

#[tokio::test]
async fn trusted_requests_of_a_generic_source_parse_without_a_signature() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.toml"), "").unwrap();
    let text = "[pagerduty]\nrouting_key = \"0123456789abcdef0123456789abcdef\"\n[[source]]\nname = \"sw\"\nkind = \"generic\"\nsecrets = [\"env:S\"]\nverify = { scheme = \"standard-webhooks\" }\nmappings = [\"m.toml\"]\n";
    let cfg = crate::config::Config::from_str(text, &dir.path().join("pagerhook.toml"), &|k| {
        (k == "S").then(|| WHSEC.to_string())
    })
    .unwrap();
    let (sources, _) = crate::registry::Sources::build(&cfg).unwrap();
    let src = sources.get("sw").unwrap();
    let h = Headers::from_pairs([("webhook-id", "msg_9"), ("content-type", "application/json")]);
    let v = src.source().trusted(h, "", Bytes::from_static(BODY)).unwrap();
    assert_eq!(v.delivery_id(), Some("msg_9"));
    let err = src.source().verify(incoming(&[("webhook-id", "msg_9")], BODY)).await.unwrap_err();
    assert!(matches!(err, SourceError::Unauthorized { .. }), "{err}");
}

#[test]
fn debug_output_shows_no_key_material() {
    let g = standard(&[WHSEC, "raw-secret"]);
    let dbg = format!("{g:?}");
    assert!(!dbg.contains("raw-secret") && dbg.contains("***"), "{dbg}");
    let g = hmac_sha256(None, &["hmac-secret"]);
    let dbg = format!("{g:?}");
    assert!(!dbg.contains("hmac-secret") && !dbg.contains("104, 109"), "{dbg}");
}

// ──────────────────────────────────────── properties ────────────────────────────────────────

fn is_unauthorized(r: &Result<Verified, SourceError>) -> bool {
    matches!(r, Err(SourceError::Unauthorized { .. }))
}

proptest! {
    #[test]
    fn hmac_sign_then_verify_passes_and_any_flipped_byte_fails(
        body in proptest::collection::vec(any::<u8>(), 1..512),
        idx in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let g = hmac_sha256(Some("sha256="), &["s3cret"]);
        let sig = format!("sha256={}", sha256_hex("s3cret", &body));
        // The signature holds (parsing may then fail: arbitrary bytes are rarely JSON).
        prop_assert!(!is_unauthorized(&check(&g, &[("X-Signature", &sig)], &body)), "signed body refused");
        let mut tampered = body.clone();
        tampered[idx.index(body.len())] ^= 1 << bit;
        prop_assert!(is_unauthorized(&check(&g, &[("X-Signature", &sig)], &tampered)), "tampered body passed");
    }

    #[test]
    fn standard_webhooks_sign_then_verify_passes_and_any_flipped_byte_fails(
        body in proptest::collection::vec(any::<u8>(), 1..512),
        id in "[a-zA-Z0-9_]{1,32}",
        skew in -300i64..=300,
        idx in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let g = standard(&[WHSEC]);
        let key = crate::config::standard_webhooks_key(&Secret::new(WHSEC)).unwrap();
        let ts = (NOW + skew).to_string();
        let sig = sw_sign(&key, &id, &ts, &body);
        let headers = [("webhook-id", id.as_str()), ("webhook-timestamp", ts.as_str()), ("webhook-signature", sig.as_str())];
        prop_assert!(!is_unauthorized(&check(&g, &headers, &body)), "signed body refused");
        let mut tampered = body.clone();
        tampered[idx.index(body.len())] ^= 1 << bit;
        prop_assert!(is_unauthorized(&check(&g, &headers, &tampered)), "tampered body passed");
    }

    #[test]
    fn arbitrary_header_values_never_panic(
        a in "\\PC{0,120}",
        b in "\\PC{0,40}",
        c in "\\PC{0,120}",
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        // Secrets no generated string will equal.
        let k = "a secret the generator will not guess 0123456789abcdef";
        let schemes = vec![
            VerifyScheme::Hmac { header: "X-Signature".into(), algorithm: HmacAlgorithm::Sha512, encoding: SignatureEncoding::Base64, prefix: Some("sha512=".into()), secrets: secrets(&[k]) },
            VerifyScheme::Hmac { header: "X-Signature".into(), algorithm: HmacAlgorithm::Sha1, encoding: SignatureEncoding::Hex, prefix: Some("é".into()), secrets: secrets(&[k]) },
            VerifyScheme::StandardWebhooks { secrets: secrets(&[WHSEC]), tolerance: FIVE_MINUTES },
            VerifyScheme::Stripe { secrets: secrets(&[k]), tolerance: FIVE_MINUTES },
            VerifyScheme::Slack { secrets: secrets(&[k]), tolerance: FIVE_MINUTES },
            VerifyScheme::Gitlab { secrets: secrets(&[k]) },
            VerifyScheme::Bearer { secrets: secrets(&[k]) },
            VerifyScheme::Basic { secrets: secrets(&["user:a secret the generator will not guess"]) },
        ];
        for scheme in schemes {
            let name = scheme.name();
            let g = generic(scheme);
            let headers = [
                ("x-signature", a.as_str()),
                ("webhook-id", b.as_str()), ("webhook-timestamp", b.as_str()), ("webhook-signature", a.as_str()),
                ("svix-signature", c.as_str()),
                ("stripe-signature", a.as_str()),
                ("x-slack-signature", a.as_str()), ("x-slack-request-timestamp", b.as_str()),
                ("x-gitlab-token", c.as_str()),
                ("authorization", c.as_str()),
            ];
            prop_assert!(is_unauthorized(&check(&g, &headers, &body)), "{name} accepted arbitrary headers");
        }
    }
}

#[test]
fn a_refusal_keeps_which_check_failed() {
    use crate::source::verify::{Verifier, VerifyError};
    let hmac = VerifyScheme::Hmac {
        header: "X-Signature".into(),
        algorithm: HmacAlgorithm::Sha256,
        encoding: SignatureEncoding::Hex,
        prefix: None,
        secrets: secrets(&["k1", "k2"]),
    };
    let v = Verifier::new(&hmac).unwrap();
    let h = |pairs: &[(&str, &str)]| Headers::from_pairs(pairs.iter().copied());
    assert_eq!(v.check(&h(&[]), BODY, NOW), Err(VerifyError::MissingHeader("X-Signature".into())));
    assert!(matches!(v.check(&h(&[("X-Signature", "zz")]), BODY, NOW), Err(VerifyError::Malformed { .. })));
    let wrong = "00".repeat(32);
    assert_eq!(
        v.check(&h(&[("X-Signature", &wrong)]), BODY, NOW),
        Err(VerifyError::Mismatch { what: "signature", tried: 2 })
    );
    let stripe = Verifier::new(&VerifyScheme::Stripe { secrets: secrets(&["k1"]), tolerance: FIVE_MINUTES }).unwrap();
    let stale = format!("t={},v1={}", NOW - 301, "ab".repeat(32));
    assert_eq!(
        stripe.check(&h(&[("Stripe-Signature", &stale)]), BODY, NOW),
        Err(VerifyError::StaleTimestamp { tolerance: FIVE_MINUTES })
    );
    let many = format!("t={NOW},") + &vec![format!("v1={}", "ab".repeat(32)); 11].join(",");
    assert_eq!(
        stripe.check(&h(&[("Stripe-Signature", &many)]), BODY, NOW),
        Err(VerifyError::TooManyCandidates { header: "Stripe-Signature".into() })
    );
    let bad_whsec = VerifyScheme::StandardWebhooks { secrets: secrets(&["ok", "whsec_!!"]), tolerance: FIVE_MINUTES };
    let err = Verifier::new(&bad_whsec).unwrap_err();
    assert_eq!(err, crate::source::verify::BadSecret { index: 1, error: crate::config::WhsecError::NotBase64 });
    assert_eq!(
        err.to_string(),
        "secrets[1]: a whsec_ secret must be base64 after the prefix (copy it whole from the sender)"
    );
}
