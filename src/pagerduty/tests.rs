use super::*;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[test]
fn retry_after_is_read_as_seconds_or_as_an_http_date() {
    // 1994-11-06T08:49:37Z, RFC 9110's example.
    let now = UNIX_EPOCH + Duration::from_secs(784_111_777);
    assert_eq!(retry_after(" 120 ", now), Some(Duration::from_secs(120)));
    for date in ["Sun, 06 Nov 1994 08:50:22 GMT", "Sunday, 06-Nov-94 08:50:22 GMT", "Sun Nov  6 08:50:22 1994"] {
        assert_eq!(retry_after(date, now), Some(Duration::from_secs(45)), "{date}");
    }
    assert_eq!(retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now), Some(Duration::ZERO), "a past date");
    assert_eq!(retry_after("soon", now), None);
    assert_eq!(retry_after("-5", SystemTime::now()), None);
}

/// A server that answers 400 and then streams body bytes until the client hangs up.
async fn endless_answer() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let _ = conn.read(&mut buf).await;
        let head = "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n";
        if conn.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = format!("{:x}\r\n{}\r\n", 16 * 1024, "x".repeat(16 * 1024));
        while conn.write_all(chunk.as_bytes()).await.is_ok() {}
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn an_endless_answer_is_read_up_to_the_limit_and_no_further() {
    let url = endless_answer().await;
    let client = Client::new(&url, Duration::from_secs(20), false).unwrap();
    let key = crate::event::RoutingKey::parse(crate::secret::Secret::new("0123456789abcdef0123456789abcdef")).unwrap();
    let draft = crate::event::ChangeDraft {
        summary: Some("s".into()),
        source: None,
        timestamp: None,
        links: vec![],
        custom_details: None,
    };
    let event = Event::change(key, draft).unwrap();
    // Without a limit the read would go on until the 20 s timeout and end as a transport error.
    let res = tokio::time::timeout(Duration::from_secs(10), client.send(&event)).await.expect("answered");
    match res {
        Response::Status { code: 400, message, .. } => assert_eq!(message, "x".repeat(RESPONSE_KEEP)),
        other => panic!("expected PagerDuty's 400, got {other:?}"),
    }
}

#[test]
fn an_events_url_that_is_not_a_url_is_refused_when_the_client_is_built() {
    let e = Client::new("events.pagerduty.com", Duration::from_secs(1), false).err().expect("no scheme, no URL");
    assert!(matches!(&e, ClientError::Url { url, .. } if url == "events.pagerduty.com/v2/enqueue"), "{e}");
    assert!(Client::new("https://events.pagerduty.com/", Duration::from_secs(1), false).is_ok());
}
