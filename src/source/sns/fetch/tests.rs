use super::*;

fn response(status: u16, body: &'static str) -> reqwest::Response {
    http::Response::builder().status(status).body(body).unwrap().into()
}

#[tokio::test]
async fn only_a_small_2xx_answer_is_read() {
    assert_eq!(read_limited(response(200, "pem"), 3).await.unwrap(), "pem");
    let failed = |s: &str| FetchError::Failed(s.to_string());
    assert_eq!(read_limited(response(200, "pem!"), 3).await.unwrap_err(), failed("answer larger than 3 bytes"));
    // Redirects are not followed, so a 301 arrives here and is refused like any non-2xx.
    assert_eq!(read_limited(response(301, ""), 3).await.unwrap_err(), failed("answered 301 Moved Permanently"));
    // AWS failing or throttling is worth a retry; AWS saying "no such file" is not.
    assert_eq!(read_limited(response(503, ""), 3).await.unwrap_err(), failed("answered 503 Service Unavailable"));
    assert_eq!(read_limited(response(429, ""), 3).await.unwrap_err(), failed("answered 429 Too Many Requests"));
    let refused = read_limited(response(404, ""), 3).await.unwrap_err();
    assert_eq!(refused, FetchError::Refused("answered 404 Not Found".into()));
}
