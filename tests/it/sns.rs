//! `kind = "sns"` end to end: a subscription is confirmed, a CloudWatch alarm opens an
//! incident and its OK resolves it, and nothing unsigned, mis-signed or unwanted gets through
//! or makes pagerhook call out.

use crate::helpers::sns_kit::{
    confirmation, forger, notification, signer, subscribe_url, timestamp, FakeAws, CERT_URL, TOPIC,
};
use crate::helpers::{fixture, spawn_sns_app, spawn_sns_app_with_keys};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// An SNS message from `fixtures/`, sent now and signed with the tests' key.
fn signed_fixture(path: &str) -> Value {
    let mut msg: Value = serde_json::from_slice(&fixture(path)).unwrap();
    msg["Timestamp"] = json!(timestamp(0));
    signer().sign(&mut msg);
    msg
}

/// A CloudWatch alarm fixture as SNS delivers it.
fn alarm(message_id: &str, path: &str) -> Value {
    let alarm = String::from_utf8(fixture(path)).unwrap();
    notification(message_id, Some("ALARM: \"payments-api-high-cpu\" in US East (N. Virginia)"), &alarm, "2")
}

#[tokio::test]
async fn a_confirmed_subscription_then_alarm_and_ok_open_and_resolve_one_incident() {
    let confirmation = signed_fixture("sns/subscription_confirmation.json");
    let confirm_url = confirmation["SubscribeURL"].as_str().unwrap().to_string();
    assert_eq!(confirm_url, subscribe_url(confirmation["Token"].as_str().unwrap()));
    let aws = Arc::new(FakeAws::default().answer(&confirm_url, "<ConfirmSubscriptionResponse/>"));
    let app = spawn_sns_app("auto_confirm = true", aws.clone()).await;

    let a = app.sns(&confirmation).await;
    assert_eq!((a.status, a.json["reason"].as_str()), (200, Some("subscription confirmed")), "{:?}", a.json);
    assert_eq!(aws.requests(), std::slice::from_ref(&confirm_url));

    let a = app.sns(&alarm("alarm-1", "cloudwatch/metric_alarm_alarm.json")).await;
    assert_eq!((a.status, &a.json["events"]), (202, &json!(1)), "{:?}", a.json);
    let a = app.sns(&alarm("ok-1", "cloudwatch/metric_alarm_ok.json")).await;
    assert_eq!((a.status, &a.json["events"]), (202, &json!(1)), "{:?}", a.json);

    let got = app.fake.wait_for(2, WAIT).await;
    let arn = "arn:aws:cloudwatch:us-east-1:123456789012:alarm:payments-api-high-cpu";
    assert_eq!((got[0].action(), got[0].dedup_key()), (Some("trigger"), Some(arn)));
    assert_eq!((got[1].action(), got[1].dedup_key()), (Some("resolve"), Some(arn)));
    assert!(got[0]
        .summary()
        .unwrap()
        .starts_with("payments-api-high-cpu is ALARM in US East (N. Virginia): Threshold Crossed"));

    // SNS retries a message it is unsure was delivered: same MessageId, nothing sent twice.
    let again = app.sns(&alarm("alarm-1", "cloudwatch/metric_alarm_alarm.json")).await;
    assert_eq!((again.status, again.json["status"].as_str()), (200, Some("duplicate")), "{:?}", again.json);
    let a = app.sns(&signed_fixture("sns/unsubscribe_confirmation.json")).await;
    assert_eq!((a.status, a.json["reason"].as_str()), (200, Some("unsubscribe confirmation")), "{:?}", a.json);
    app.assert_only_sentinel_events(2).await;
    assert_eq!(aws.requests(), [confirm_url], "the pinned certificate was never fetched");
}

#[tokio::test]
async fn a_certificate_from_an_sns_host_is_fetched_once_and_then_cached() {
    let url = CERT_URL.replace("us-east-1", "eu-west-1");
    let aws = Arc::new(FakeAws::default().answer(&url, signer().cert_pem.clone()));
    let app = spawn_sns_app("", aws.clone()).await;
    for id in ["a", "b"] {
        let mut msg = alarm(id, "cloudwatch/metric_alarm_alarm.json");
        msg["SigningCertURL"] = json!(url);
        signer().sign(&mut msg);
        let a = app.sns(&msg).await;
        assert!(a.status == 202, "{:?}", a.json);
    }
    assert_eq!(aws.requests(), [url]);
    assert_eq!(app.fake.wait_for(2, WAIT).await.len(), 2);
}

#[tokio::test]
async fn a_certificate_aws_could_not_serve_is_answered_503_so_sns_retries() {
    let url = CERT_URL.replace("us-east-1", "eu-west-1");
    let down = pagerhook::source::FetchError::Failed("answered 503 Service Unavailable".into());
    let aws = Arc::new(FakeAws::default().failing(&url, down));
    let app = spawn_sns_app("", aws.clone()).await;
    let mut msg = alarm("a", "cloudwatch/metric_alarm_alarm.json");
    msg["SigningCertURL"] = json!(url);
    signer().sign(&mut msg);
    let a = app.sns(&msg).await;
    assert_eq!(a.status, 503, "{:?}", a.json);
    assert!(a.json["error"].as_str().unwrap().contains("retry later"), "{:?}", a.json);
    // SNS retries; AWS is back (after the seconds a failure is remembered): accepted.
    aws.set(&url, Ok(signer().cert_pem.clone().into()));
    let retried = crate::helpers::eventually("the retry is accepted", || async {
        let a = app.sns(&msg).await;
        (a.status != 503).then_some(a)
    })
    .await;
    assert_eq!(retried.status, 202, "{:?}", retried.json);
    app.assert_only_sentinel_events(1).await;
}

#[tokio::test]
async fn forged_tampered_and_unwanted_messages_are_refused_without_any_outbound_request() {
    let aws = Arc::new(FakeAws::default());
    let app = spawn_sns_app("auto_confirm = true", aws.clone()).await;
    let good = alarm("m-good", "cloudwatch/metric_alarm_alarm.json");
    let edited = |f: &dyn Fn(&mut Value), resign: bool| {
        let mut m = good.clone();
        f(&mut m);
        if resign {
            signer().sign(&mut m);
        }
        m
    };
    let mut forged = good.clone();
    forger().sign(&mut forged);
    let other_topic = "arn:aws:sns:us-east-1:123456789012:someone-elses-topic";
    let mut foreign_confirmation = confirmation("SubscriptionConfirmation", "c-foreign");
    foreign_confirmation["TopicArn"] = json!(other_topic);
    signer().sign(&mut foreign_confirmation);
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        ("forged", forged, 401, "signature mismatch"),
        (
            "tampered",
            edited(&|m| m["Message"] = json!(m["Message"].as_str().unwrap().replace("ALARM", "OK")), false),
            401,
            "signature mismatch",
        ),
        ("signature removed", edited(&|m| m["Signature"] = json!(""), false), 401, "signature mismatch"),
        (
            "wrong topic",
            edited(&|m| m["TopicArn"] = json!(other_topic), true),
            403,
            "TopicArn is not in this source's topics",
        ),
        ("wrong topic confirmation", foreign_confirmation, 403, "TopicArn is not in this source's topics"),
        ("version 3", edited(&|m| m["SignatureVersion"] = json!("3"), true), 401, "unsupported SignatureVersion"),
        (
            "foreign cert",
            edited(&|m| m["SigningCertURL"] = json!("https://attacker.example/SimpleNotificationService-x.pem"), true),
            401,
            "source 'aws': SigningCertURL host not allowed",
        ),
        (
            "look-alike cert host",
            edited(
                &|m| m["SigningCertURL"] = json!("https://sns.us-east-1.amazonaws.com.attacker.example/c.pem"),
                true,
            ),
            401,
            "SigningCertURL host not allowed",
        ),
        (
            "cert on a port",
            edited(&|m| m["SigningCertURL"] = json!("https://sns.us-east-1.amazonaws.com:8443/c.pem"), true),
            401,
            "SigningCertURL names a port",
        ),
        (
            "cert with user info",
            edited(&|m| m["SigningCertURL"] = json!("https://u:p@sns.us-east-1.amazonaws.com/c.pem"), true),
            401,
            "SigningCertURL carries user info",
        ),
        ("missing field", edited(&|m| m["MessageId"] = Value::Null, false), 400, "SNS message has no MessageId"),
        (
            "subject folded into the MessageId",
            edited(
                &|m| {
                    m["MessageId"] = json!(format!("m-good\nSubject\n{}", m["Subject"].as_str().unwrap()));
                    m.as_object_mut().unwrap().remove("Subject");
                },
                false,
            ),
            400,
            "SNS field MessageId contains a line break",
        ),
        (
            "captured long ago",
            edited(&|m| m["Timestamp"] = json!(timestamp(-8 * 86_400)), true),
            401,
            "Timestamp outside tolerance: older than storage.retention (7days)",
        ),
    ];
    for (name, msg, status, reason) in cases {
        let a = app.sns(&msg).await;
        assert_eq!(a.status, status, "{name}: {:?}", a.json);
        assert!(a.json["error"].as_str().unwrap().contains(reason), "{name}: {:?}", a.json);
    }
    let body = serde_json::to_vec(&good).unwrap();
    let mismatched = [("content-type", "text/plain"), ("x-amz-sns-message-type", "SubscriptionConfirmation")];
    assert_eq!(app.post_hook("aws", &mismatched, body.clone()).await.status, 400);
    assert_eq!(app.post_hook("aws", &[("content-type", "text/plain")], body.clone()).await.status, 400);
    let form = [("content-type", "application/x-www-form-urlencoded"), ("x-amz-sns-message-type", "Notification")];
    assert_eq!(app.post_hook("aws", &form, body).await.status, 415);
    assert_eq!(app.post_hook("aws", &[("x-amz-sns-message-type", "Notification")], "{not json").await.status, 400);

    // Sentinel: the untouched message goes through, and is the only event there ever was.
    let a = app.sns(&good).await;
    assert_eq!(a.status, 202, "{:?}", a.json);
    app.assert_only_sentinel_events(1).await;
    assert_eq!(aws.requests(), Vec::<String>::new(), "no refusal made pagerhook call out");
    assert_eq!(TOPIC, "arn:aws:sns:us-east-1:123456789012:alarms");
}

/// Genuine AWS-signed messages and AWS's own (long expired) certificates, pinned, when
/// `PAGERHOOK_REAL_SAMPLES` names a folder of them laid out as `shared/real` is. They are not
/// in the repository; the generated-certificate tests above are the proof that always runs.
#[tokio::test]
async fn genuine_aws_messages_verify_with_pinned_aws_certificates() {
    let Some(root) = std::env::var_os("PAGERHOOK_REAL_SAMPLES") else {
        eprintln!("PAGERHOOK_REAL_SAMPLES is not set: genuine AWS samples not checked");
        return;
    };
    let root = std::path::Path::new(&root);
    let dirs = [
        "aws-php-sns-message-validator",
        "jonathanstowe-AWS-SNS-Notification",
        "ahonnecke-SnsPublisher",
        "unknown-repo-aws-cloudwatch-md",
        "amzn-rheoceros",
        "teamcity-aws-sns-trigger-plugin",
    ];
    let files: Vec<_> =
        dirs.iter().flat_map(|d| std::fs::read_dir(root.join(d)).unwrap()).map(|e| e.unwrap().path()).collect();
    let ext = |p: &std::path::PathBuf, x: &str| p.extension().is_some_and(|e| e == x);
    // AWS serves each certificate under its own file name from every regional host.
    let pems: std::collections::HashMap<String, std::path::PathBuf> = files
        .iter()
        .filter(|p| ext(p, "pem"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name[name.find("SimpleNotificationService").unwrap()..].to_string(), p.clone())
        })
        .collect();
    let messages: Vec<Value> = files
        .iter()
        .filter(|p| ext(p, "json"))
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect();
    let cert_url =
        |m: &Value| m.get("SigningCertURL").or(m.get("SigningCertUrl")).and_then(Value::as_str).unwrap().to_string();
    let pinned: std::collections::BTreeSet<String> = messages.iter().map(cert_url).collect();
    let pinned: Vec<String> = pinned
        .iter()
        .map(|url| format!("{url:?} = \"file:{}\"", pems[url.rsplit('/').next().unwrap()].display()))
        .collect();
    let aws = Arc::new(FakeAws::default());
    let app =
        spawn_sns_app_with_keys(&format!("any_topic = true\ntrusted_certs = {{ {} }}", pinned.join(", ")), aws.clone())
            .await;
    for msg in &messages {
        let a = app.sns(msg).await;
        assert!(matches!(a.status, 200 | 202), "{}: {:?}", msg["MessageId"], a.json);
        let mut tampered = msg.clone();
        tampered["MessageId"] = json!(format!("{}-replayed", msg["MessageId"].as_str().unwrap()));
        let a = app.sns(&tampered).await;
        assert_eq!(a.status, 401, "{}: {:?}", msg["MessageId"], a.json);
    }
    assert!(messages.len() >= 20, "only {} genuine messages under {}", messages.len(), root.display());
    assert_eq!(aws.requests(), Vec::<String>::new());
}
