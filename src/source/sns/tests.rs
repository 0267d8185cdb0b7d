use super::*;
use proptest::prelude::*;
use serde_json::{json, Value};

#[path = "../../../tests/it/helpers/sns_kit.rs"]
mod kit;
use kit::{confirmation, notification, signer, FakeAws, CERT_URL, TOPIC};

fn sns(aws: Arc<FakeAws>, auto_confirm: bool) -> Sns {
    let pinned = BTreeMap::from([(CERT_URL.to_string(), signer().cert_pem.clone())]);
    Sns::new(TopicFilter::Only(vec![TOPIC.into()]), auto_confirm, &pinned, aws).unwrap()
}

fn incoming(msg: &Value) -> Incoming {
    let kind = msg["Type"].as_str().unwrap_or_default();
    Incoming {
        headers: Headers::from_pairs([("content-type", "text/plain; charset=UTF-8"), (TYPE_HEADER, kind)]),
        query: String::new(),
        body: serde_json::to_vec(msg).unwrap().into(),
    }
}

const NOW: i64 = 1_715_679_067;

fn refusal(r: Result<Verified, SourceError>) -> SourceError {
    r.expect_err("refused")
}

#[test]
fn only_https_sns_hosts_make_an_aws_url() {
    let pem = "/SimpleNotificationService-7ff5318490ec183fbaddaa2a969abfda.pem";
    for ok in [
        format!("https://sns.us-east-1.amazonaws.com{pem}"),
        format!("https://sns.cn-north-1.amazonaws.com.cn{pem}"),
        format!("https://SNS.EU-WEST-1.AMAZONAWS.COM{pem}"),
    ] {
        assert!(AwsUrl::cert(&ok).is_ok(), "{ok}");
    }
    for (bad, why) in [
        (format!("http://sns.us-east-1.amazonaws.com{pem}"), "is not https"),
        (format!("https://sns.us-east-1.amazonaws.com.evil.example{pem}"), "host not allowed"),
        (format!("https://evil.example/sns.us-east-1.amazonaws.com{pem}"), "host not allowed"),
        (format!("https://sns.amazonaws.com{pem}"), "host not allowed"),
        (format!("https://sqs.us-east-1.amazonaws.com{pem}"), "host not allowed"),
        (format!("https://sns.us-east-1.amazonaws.com.{pem}"), "host not allowed"),
        (format!("https://sns.us_east.amazonaws.com{pem}"), "host not allowed"),
        (format!("https://x@sns.us-east-1.amazonaws.com{pem}"), "carries user info"),
        (format!("https://sns.us-east-1.amazonaws.com:8443{pem}"), "names a port"),
        (format!("https://sns.us-east-1.amazonaws.com:443{pem}"), "names a port"),
        (format!("https://52.94.0.1{pem}"), "host not allowed"),
        ("https://sns.us-east-1.amazonaws.com/cert.txt".to_string(), "is not a .pem file"),
        (format!("https://sns.us-east-1.amazonaws.com{pem}?x=1"), "is not a .pem file"),
        ("not a url".to_string(), "is not a URL"),
    ] {
        assert_eq!(AwsUrl::cert(&bad).unwrap_err(), why, "{bad}");
    }
    assert!(AwsUrl::subscribe(&kit::subscribe_url("t")).is_ok());
    let other_action = "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=x";
    assert_eq!(AwsUrl::subscribe(other_action).unwrap_err(), "is not a ConfirmSubscription request");
    assert_eq!(AwsUrl::subscribe("https://127.0.0.1/?Action=ConfirmSubscription").unwrap_err(), "host not allowed");
}

#[test]
fn the_string_to_sign_follows_aws_s_field_lists() {
    let n = Envelope::parse(&serde_json::to_vec(&notification("m-1", Some("Hi"), "body", "1")).unwrap()).unwrap();
    let expected = format!("Message\nbody\nMessageId\nm-1\nSubject\nHi\nTimestamp\n2024-05-14T09:31:07.512Z\nTopicArn\n{TOPIC}\nType\nNotification\n");
    assert_eq!(n.string_to_sign(), expected);
    let n = Envelope::parse(&serde_json::to_vec(&notification("m-1", None, "body", "1")).unwrap()).unwrap();
    assert_eq!(n.string_to_sign(), expected.replace("Subject\nHi\n", ""));
    let c = confirmation("SubscriptionConfirmation", "c-1");
    let e = Envelope::parse(&serde_json::to_vec(&c).unwrap()).unwrap();
    let expected = format!(
        "Message\n{}\nMessageId\nc-1\nSubscribeURL\n{}\nTimestamp\n2024-05-14T09:12:44.101Z\nToken\n{}\nTopicArn\n{TOPIC}\nType\nSubscriptionConfirmation\n",
        c["Message"].as_str().unwrap(),
        c["SubscribeURL"].as_str().unwrap(),
        c["Token"].as_str().unwrap(),
    );
    assert_eq!(e.string_to_sign(), expected);
}

#[tokio::test]
async fn signed_notifications_of_both_versions_verify_and_expose_the_envelope() {
    let aws = Arc::new(FakeAws::default());
    let s = sns(aws.clone(), false);
    for version in ["1", "2"] {
        let msg =
            notification("m-1", Some("ALARM: \"cpu\""), r#"{"AlarmName":"cpu","NewStateValue":"ALARM"}"#, version);
        let v = s.verify_at("aws", incoming(&msg), NOW).await.unwrap_or_else(|e| panic!("v{version}: {e}"));
        assert_eq!(v.disposition(), &Disposition::Map);
        assert_eq!(v.delivery_id(), Some("m-1"));
        let ctx = v.template_context();
        assert_eq!(ctx["body"]["NewStateValue"], "ALARM");
        assert_eq!(ctx["sns"]["TopicArn"], TOPIC);
        assert_eq!(ctx["sns"]["Subject"], "ALARM: \"cpu\"");
        assert_eq!(ctx["sns"]["MessageAttributes"], json!({}));
    }
    let plain = notification("m-2", None, "disk almost full", "2");
    let v = s.verify_at("aws", incoming(&plain), NOW).await.unwrap();
    assert_eq!(v.template_context()["body"], "disk almost full");
    assert_eq!(aws.requests(), Vec::<String>::new(), "a pinned certificate is never fetched");
}

#[tokio::test]
async fn every_forgery_is_refused_before_any_request_it_does_not_need() {
    let aws = Arc::new(FakeAws::default());
    let s = sns(aws.clone(), true);
    let good = notification("m-1", None, "{}", "1");
    let with = |f: &dyn Fn(&mut Value)| {
        let mut m = good.clone();
        f(&mut m);
        m
    };
    let mut forged = good.clone();
    kit::forger().sign(&mut forged);
    let cases: Vec<(&str, Value, &str)> = vec![
        ("forged", forged, "signature mismatch"),
        ("tampered", with(&|m| m["Message"] = json!("{\"x\":1}")), "signature mismatch"),
        ("subject added", with(&|m| m["Subject"] = json!("hi")), "signature mismatch"),
        ("version 3", with(&|m| m["SignatureVersion"] = json!("3")), "unsupported SignatureVersion"),
        ("no base64", with(&|m| m["Signature"] = json!("!!")), "Signature is not base64"),
        (
            "foreign cert",
            with(&|m| m["SigningCertURL"] = json!("https://evil.example/c.pem")),
            "SigningCertURL host not allowed",
        ),
        (
            "http cert",
            with(&|m| m["SigningCertURL"] = json!(CERT_URL.replace("https", "http"))),
            "SigningCertURL is not https",
        ),
        (
            "wrong topic",
            with(&|m| m["TopicArn"] = json!("arn:aws:sns:us-east-1:123456789012:other")),
            "TopicArn is not in",
        ),
    ];
    for (name, msg, reason) in cases {
        let err = refusal(s.verify_at("aws", incoming(&msg), NOW).await);
        assert!(err.to_string().contains(reason), "{name}: {err}");
        let forbidden = matches!(err, SourceError::Forbidden { .. });
        assert_eq!(forbidden, name == "wrong topic", "{name}: {err:?}");
        assert!(forbidden || matches!(err, SourceError::Unauthorized { .. }), "{name}: {err:?}");
    }
    let mut mismatched = incoming(&good);
    mismatched.headers = Headers::from_pairs([(TYPE_HEADER, "SubscriptionConfirmation")]);
    assert!(matches!(refusal(s.verify_at("aws", mismatched, NOW).await), SourceError::BadRequest { .. }));
    let mut quoted = incoming(&good);
    quoted.body = Bytes::from_static(br#"{"Type": 12345678, "Message": "x"}"#);
    let err = refusal(s.verify_at("aws", quoted, NOW).await).to_string();
    assert!(
        err.ends_with("a field is repeated or not a string (line 1 column 17)") && !err.contains("12345678"),
        "{err}"
    );
    let mut json_typed = incoming(&good);
    json_typed.headers = Headers::from_pairs([(TYPE_HEADER, "Notification"), ("content-type", "application/json")]);
    assert!(s.verify_at("aws", json_typed, NOW).await.is_ok());
    assert_eq!(aws.requests(), Vec::<String>::new());
}

#[tokio::test]
async fn fetched_certificates_are_cached_and_must_be_in_date() {
    let url = CERT_URL.replace("us-east-1", "eu-west-1");
    let aws = Arc::new(FakeAws::default().answer(&url, signer().cert_pem.clone()));
    let s = Sns::new(TopicFilter::Any, false, &BTreeMap::new(), aws.clone()).unwrap();
    let msg = |id: &str| {
        let mut m = notification(id, None, "{}", "2");
        m["SigningCertURL"] = json!(url);
        signer().sign(&mut m);
        m
    };
    s.verify_at("aws", incoming(&msg("a")), unix_now()).await.unwrap();
    s.verify_at("aws", incoming(&msg("b")), unix_now()).await.unwrap();
    assert_eq!(aws.requests(), std::slice::from_ref(&url), "fetched once, then cached");
    let in_two_days = unix_now() + 2 * 86_400;
    let err = refusal(s.verify_at("aws", incoming(&msg("c")), in_two_days).await);
    assert!(err.to_string().contains("outside its validity dates"), "{err}");
    // Pinned, the same expired certificate is trusted: the operator chose it.
    let pinned = sns(Arc::new(FakeAws::default()), false);
    pinned.verify_at("aws", incoming(&notification("d", None, "{}", "2")), in_two_days).await.unwrap();
}

#[tokio::test]
async fn subscriptions_are_confirmed_only_when_asked_to() {
    let msg = confirmation("SubscriptionConfirmation", "c-1");
    let url = msg["SubscribeURL"].as_str().unwrap().to_string();
    let aws = Arc::new(FakeAws::default().answer(&url, "<ConfirmSubscriptionResponse/>"));
    let v = sns(aws.clone(), true).verify_at("aws", incoming(&msg), NOW).await.unwrap();
    assert_eq!(v.disposition(), &Disposition::Ignore("subscription confirmed"));
    assert_eq!(aws.requests(), std::slice::from_ref(&url));

    let manual = Arc::new(FakeAws::default());
    let v = sns(manual.clone(), false).verify_at("aws", incoming(&msg), NOW).await.unwrap();
    assert!(matches!(v.disposition(), Disposition::Ignore(r) if r.contains("logged")), "{:?}", v.disposition());
    assert_eq!(manual.requests(), Vec::<String>::new());

    let bye = confirmation("UnsubscribeConfirmation", "u-1");
    let v = sns(manual.clone(), true).verify_at("aws", incoming(&bye), NOW).await.unwrap();
    assert_eq!(v.disposition(), &Disposition::Ignore("unsubscribe confirmation"));
    assert_eq!(manual.requests(), Vec::<String>::new());
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_envelope_parser(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(e) = Envelope::parse(&body) {
            let _ = e.string_to_sign();
            let _ = e.body();
        }
    }

    #[test]
    fn arbitrary_json_envelopes_never_panic(fields in proptest::collection::btree_map(
        prop_oneof!["Type", "Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Token", "SubscribeURL", "SignatureVersion", "Signature", "SigningCertURL"],
        prop_oneof![".*".prop_map(Value::from), any::<i64>().prop_map(Value::from), Just(Value::Null)],
        0..11,
    )) {
        let body = serde_json::to_vec(&fields).unwrap();
        if let Ok(e) = Envelope::parse(&body) {
            let tail = format!("Type\n{}\n", e.kind.as_str());
            prop_assert!(e.string_to_sign().ends_with(&tail));
        }
    }

    #[test]
    fn an_accepted_url_is_always_https_on_an_sns_host(s in "(https?://)?[a-zA-Z0-9.:@/_%?#=-]{0,60}(\\.pem)?") {
        if let Ok(u) = AwsUrl::cert(&s) {
            let parsed = url::Url::parse(u.as_str()).unwrap();
            prop_assert_eq!(parsed.scheme(), "https");
            let host = parsed.host_str().unwrap();
            prop_assert!(host.starts_with("sns.") && (host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn")), "{}", host);
        }
    }
}

#[test]
fn pinned_certificates_must_be_sns_urls_and_certificates() {
    let pinned = BTreeMap::from([
        ("https://evil.example/a.pem".to_string(), signer().cert_pem.clone()),
        (CERT_URL.to_string(), "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_string()),
    ]);
    let errs = Sns::new(TopicFilter::Any, false, &pinned, Arc::new(FakeAws::default())).unwrap_err();
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs.iter().any(|e| e.contains("\"https://evil.example/a.pem\" host not allowed")), "{errs:?}");
    assert!(errs.iter().any(|e| e.contains("not a PEM certificate")), "{errs:?}");
}
