//! Hostile senders and slow clients: floods are cheap to refuse, nothing one request does
//! stalls the others, slow clients are cut off, and what a sender is told stays short.

use crate::helpers::sns_kit::{notification, signer, FakeAws, CERT_URL, TOPIC};
use crate::helpers::{
    bearer_source, binary, generic_source, shipped_generic_source, spawn_app_in, spawn_sns_app,
    spawn_sns_app_with_keys, without_own_pages, TestApp, ALERTMANAGER_VERIFY, AM_SECRET, HOOK_TOKEN, NUMBERED,
};
use pagerhook::queue::{InboundStatus, NewInbound};
use reqwest::Method;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(10);

/// An app with the shipped Alertmanager source, a Stripe-signed source, the `load` bearer
/// source on [`NUMBERED`], 2 MiB bodies, two workers and short client timeouts; its floods'
/// dead letters page nobody (the tests count the events of their own webhooks).
async fn spawn_hostile() -> TestApp {
    spawn_app_in(|text, dir| {
        let text = without_own_pages(text);
        let numbered = dir.join("numbered.toml");
        std::fs::write(&numbered, NUMBERED).unwrap();
        let text = text.replace(
            "max_body_bytes = 65536",
            "max_body_bytes = 2097152\nworkers = 2\nrequest_timeout = \"1s\"\nkeep_alive = \"1s\"",
        );
        let stripe = r#"{ scheme = "stripe", secrets = ["env:AM_SECRET"] }"#;
        format!(
            "{text}{}{}{}",
            shipped_generic_source("alertmanager", ALERTMANAGER_VERIFY),
            generic_source("stripe", stripe, &numbered),
            bearer_source("load", &numbered)
        )
    })
    .await
}

/// An app whose bearer source `load` makes an alert of each item of `body.alerts` (its
/// dedup_key the item's `id`, its summary the template `summary`), with `keys` added to the
/// source and `edit` applied to the rest of the config. Its dead letters page nobody: the
/// tests count the events of their own webhooks.
async fn spawn_each(summary: &str, keys: &str, edit: impl FnOnce(String) -> String) -> TestApp {
    let mapping = format!(
        "[[rule]]\nname = \"each\"\nfor_each = \"body.alerts\"\nemit = \"alert\"\ndedup_key = \"{{{{item.id}}}}\"\nsummary = \"{summary}\"\nsource = \"tests\"\n"
    );
    spawn_app_in(move |text, dir| {
        std::fs::write(dir.join("each.toml"), &mapping).unwrap();
        format!("{}{}{keys}\n", edit(without_own_pages(text)), bearer_source("load", &dir.join("each.toml")))
    })
    .await
}

/// `{"alerts":[{"status":"x"}, ...]}`: 60 000 alerts that emit nothing, about 1 MiB.
fn alert_flood() -> Vec<u8> {
    let alerts = vec![r#"{"status":"x"}"#; 60_000].join(",");
    format!(r#"{{"alerts":[{alerts}]}}"#).into_bytes()
}

async fn post_alert_flood(app: &TestApp, body: Vec<u8>) -> crate::helpers::Answer {
    let auth = format!("Bearer {AM_SECRET}");
    app.post_hook("alertmanager", &[("content-type", "application/json"), ("authorization", &auth)], body).await
}

/// 1 MiB signed by nobody, with 1 500 forged Stripe signatures.
async fn post_signature_flood(app: &TestApp) -> crate::helpers::Answer {
    let body = [b"{\"a\":\"".as_slice(), &vec![b'x'; 1 << 20], b"\"}"].concat();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let sigs: Vec<String> = (0..1500).map(|i| format!("v1={:064x}", i)).collect();
    let header = format!("t={now},{}", sigs.join(","));
    app.post_hook("stripe", &[("content-type", "application/json"), ("stripe-signature", &header)], body).await
}

#[tokio::test]
async fn floods_are_refused_quickly_and_ordinary_webhooks_are_answered_meanwhile() {
    let app = std::sync::Arc::new(spawn_hostile().await);

    // Within 1 s in a release build; a debug build on a loaded machine gets more room. On the
    // old code (a copy of the body per item) it took over a minute.
    let started = Instant::now();
    let a = post_alert_flood(&app, alert_flood()).await;
    assert!(started.elapsed() < Duration::from_secs(3), "for_each flood took {:?}", started.elapsed());
    assert_eq!((a.status, a.json["status"].as_str()), (202, Some("too_many_events")), "{:?}", a.json);

    let a = post_signature_flood(&app).await;
    assert_eq!(a.status, 401, "{:?}", a.json);
    assert!(a.json["error"].as_str().unwrap().contains("more than 10 signatures"), "{:?}", a.json);

    // Both floods again and again, while five ordinary webhooks must each be answered in 1 s.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut floods = Vec::new();
    for signature in [false, true] {
        let (app, stop) = (app.clone(), stop.clone());
        floods.push(tokio::spawn(async move {
            let body = alert_flood();
            let mut sent = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let status = if signature {
                    post_signature_flood(&app).await.status
                } else {
                    post_alert_flood(&app, body.clone()).await.status
                };
                assert!(status == 401 || status == 202, "flood answered {status}");
                sent += 1;
            }
            sent
        }));
    }
    for n in 0..5 {
        let started = Instant::now();
        let a = app.post_bearer("load", &json!({"n": n, "action": "trigger"})).await;
        assert_eq!(a.status, 202, "{:?}", a.json);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "webhook {n} took {:?} during the floods",
            started.elapsed()
        );
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for f in floods {
        assert!(f.await.unwrap() >= 1, "each flood ran while the webhooks were sent");
    }
    assert_eq!(app.fake.wait_for(5, WAIT).await.len(), 5);
}

#[tokio::test]
async fn too_many_events_are_kept_as_a_dead_letter_and_replayed_once_the_cap_is_raised() {
    let app = spawn_each("alert {{item.id}}", "max_events_per_request = 2", |text| text).await;
    let body = json!({"alerts": [{"id": "a"}, {"id": "b"}, {"id": "c"}]});
    let a = app.post_bearer("load", &body).await;
    assert_eq!(a.status, 202, "the sender must not retry, nor drop it: {:?}", a.json);
    assert_eq!(a.json["status"], "too_many_events");
    assert!(a.json["error"].as_str().unwrap().contains("max_events_per_request = 2"), "{:?}", a.json);

    let dead = app.admin_call(Method::GET, "/admin/dead").await.json;
    assert_eq!(dead[0]["kind"], "too_many_events", "{dead:#}");
    assert_eq!(dead[0]["id"], a.json["id"]);
    let metrics = app.scrape().await;
    assert!(metrics.contains(r#"pagerhook_too_many_events_total{source="load",status="202"} 1"#), "{metrics}");

    let dir = app.dir.path().to_path_buf();
    let out = binary(&dir, "dlq-list.log").args(["dlq", "list", "--json"]).output().unwrap();
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["kind"], "too_many_events", "{list:#}");
    let id = list[0]["id"].as_str().unwrap();

    // Still over the cap: replay keeps it.
    let out = binary(&dir, "dlq-replay.log").args(["dlq", "replay", id]).output().unwrap();
    assert!(!out.status.success());
    assert_eq!(app.admin_call(Method::GET, "/admin/dead").await.json.as_array().unwrap().len(), 1);

    // Raise the cap on disk, replay with the CLI: the running server delivers all three.
    let config = std::fs::read_to_string(dir.join("pagerhook.toml")).unwrap();
    std::fs::write(
        dir.join("pagerhook.toml"),
        config.replace("max_events_per_request = 2", "max_events_per_request = 3"),
    )
    .unwrap();
    let out = binary(&dir, "dlq-replay.log").args(["dlq", "replay", id]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", std::fs::read_to_string(dir.join("dlq-replay.log")).unwrap());
    assert!(stdout.contains("mapped into 3 event"), "{stdout}");
    assert_eq!(app.fake.wait_for(3, WAIT).await.len(), 3);
    assert_eq!(app.admin_call(Method::GET, "/admin/dead").await.json, json!([]));
}

#[tokio::test]
async fn storage_and_mapping_errors_answer_a_short_reason() {
    let broken = NUMBERED.replace("event {{body.n}}", "event {{body.n}} on {{body.host}}");
    let app = spawn_app_in(|text, dir| {
        std::fs::write(dir.join("numbered.toml"), &broken).unwrap();
        format!("{text}{}", bearer_source("load", &dir.join("numbered.toml")))
    })
    .await;
    let dir = app.dir.path().display().to_string();
    let a = app.post_bearer("load", &json!({"n": 1, "action": "trigger"})).await;
    assert_eq!(a.json["status"], "mapping_failed");
    let error = a.json["error"].as_str().unwrap();
    assert!(!error.contains(&dir) && !error.contains("numbered.toml"), "the sender sees no path: {error}");

    // Break the store under the running app.
    let db = rusqlite::Connection::open(app.dir.path().join("pagerhook.db")).unwrap();
    db.execute_batch("DROP TABLE events").unwrap();
    for path in ["/readyz", "/metrics", "/admin/deliveries", "/admin/dead"] {
        let res = app.http.get(format!("{}{path}", app.admin)).bearer_auth("admin-token").send().await.unwrap();
        assert_eq!(res.status().as_u16(), 503, "{path}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "storage unavailable, retry later", "{path}: {body}");
    }
}

/// Connects to the webhook listener.
async fn connect(app: &TestApp) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(app.base.trim_start_matches("http://")).await.unwrap()
}

/// Reads until the server closes the connection; fails after `WAIT`.
async fn read_to_close(conn: &mut tokio::net::TcpStream) -> String {
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, conn.read_to_end(&mut got)).await.expect("the server closed the connection").ok();
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn a_client_trickling_its_request_gets_408_and_is_disconnected() {
    let app = spawn_hostile().await;
    // A body: one byte every 200 ms of the 100 announced.
    let mut conn = connect(&app).await;
    let head = format!(
        "POST /hooks/load HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nauthorization: Bearer {HOOK_TOKEN}\r\ncontent-length: 100\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let (mut read, mut write) = conn.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            if write.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, read.read_to_end(&mut got)).await.expect("the server closed the connection").ok();
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("request_timeout"), "{got}");
    trickle.abort();

    // Headers that never end.
    let mut conn = connect(&app).await;
    conn.write_all(b"POST /hooks/load HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    let got = read_to_close(&mut conn).await;
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert_eq!(app.fake.received().len(), 0);
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_keep_alive() {
    let app = spawn_hostile().await;
    let mut conn = connect(&app).await;
    let body = json!({"n": 1, "action": "trigger"}).to_string();
    let req = format!(
        "POST /hooks/load HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nauthorization: Bearer {HOOK_TOKEN}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    // keep_alive = "1s"; actix's default would hold the idle connection for 5 s.
    let started = Instant::now();
    let got = read_to_close(&mut conn).await;
    assert!(got.starts_with("HTTP/1.1 202"), "{got}");
    assert!(started.elapsed() < Duration::from_secs(4), "closed after {:?}", started.elapsed());
}

/// Sends one request to `load` on `conn` and reads its answer's status line, keeping the
/// connection open.
async fn one_request(conn: &mut tokio::net::TcpStream, n: u32) -> String {
    let body = json!({"n": n, "action": "trigger"}).to_string();
    let req = format!(
        "POST /hooks/load HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nauthorization: Bearer {HOOK_TOKEN}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = conn.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn connections_beyond_max_connections_wait_until_one_closes() {
    let app = spawn_app_in(|text, dir| {
        std::fs::write(dir.join("numbered.toml"), NUMBERED).unwrap();
        let text = text.replace("max_body_bytes = 65536", "workers = 2\nmax_connections = 1\nkeep_alive = \"30s\"");
        format!("{text}{}", bearer_source("load", &dir.join("numbered.toml")))
    })
    .await;
    // Two kept-alive connections, one per worker, each served once so it is surely counted.
    let mut a = connect(&app).await;
    assert!(one_request(&mut a, 1).await.starts_with("HTTP/1.1 202"));
    let mut b = connect(&app).await;
    assert!(one_request(&mut b, 2).await.starts_with("HTTP/1.1 202"));
    // A third is not served while they stay open...
    let mut c = connect(&app).await;
    let mut third = tokio::spawn(async move { one_request(&mut c, 3).await });
    let early = tokio::time::timeout(Duration::from_millis(500), &mut third).await;
    assert!(early.is_err(), "the third connection was served beyond max_connections: {early:?}");
    // ...and is as soon as one closes.
    drop(a);
    let status = tokio::time::timeout(WAIT, third).await.expect("served once a connection closed").unwrap();
    assert!(status.starts_with("HTTP/1.1 202"), "{status}");
    drop(b);
}

#[tokio::test]
async fn an_sns_certificate_on_an_s3_host_or_issued_to_another_name_is_refused() {
    // A bucket named `sns` on S3 would serve whatever certificate its owner put there.
    let s3 = "https://sns.s3.amazonaws.com/SimpleNotificationService-0123456789abcdef0123456789abcdef.pem";
    let elsewhere = CERT_URL.replace("us-east-1", "eu-west-1");
    let aws = Arc::new(
        FakeAws::default()
            .answer(s3, signer().cert_pem.clone())
            .answer(&elsewhere, signer().cert_for("CN=evil.example")),
    );
    let app = spawn_sns_app_with_keys(&format!("topics = [\"{TOPIC}\"]"), aws.clone()).await;
    for (i, url) in [s3, elsewhere.as_str()].into_iter().enumerate() {
        let mut msg = notification(&format!("m-{i}"), None, "{}", "2");
        msg["SigningCertURL"] = json!(url);
        signer().sign(&mut msg);
        let a = app.sns(&msg).await;
        assert_eq!(a.status, 401, "{url}: {:?}", a.json);
    }
    assert_eq!(aws.requests(), vec![elsewhere], "an S3 host is never asked");
    let metrics = app.scrape().await;
    assert!(metrics.contains(r#"reason="signing_certificate"} 2"#), "{metrics}");
    app.assert_only_sentinel_events(0).await;
}

#[tokio::test]
async fn the_dead_letter_list_is_clamped_like_the_delivery_list() {
    let app = spawn_app_in(|text, _| text).await;
    let queue = app.app.as_ref().unwrap().queue().clone();
    let mut accepts = tokio::task::JoinSet::new();
    // Recent: dead letters older than storage.dead_letter_retention are dropped.
    let now = pagerhook::queue::now_millis();
    for n in 0..501 {
        let queue = queue.clone();
        let failed = InboundStatus::MappingFailed("summary: missing".into());
        let inbound = NewInbound::new("github", now - n, bytes::Bytes::from_static(b"{}"), failed);
        accepts.spawn(async move { queue.accept(inbound, Vec::new()).await.unwrap() });
    }
    while let Some(done) = accepts.join_next().await {
        done.unwrap();
    }
    for (asked, got) in [("100000", 500), ("0", 1), ("3", 3)] {
        let page = app.admin_call(Method::GET, &format!("/admin/dead?limit={asked}")).await;
        assert_eq!(page.json.as_array().map(Vec::len), Some(got), "limit={asked}");
    }
}

#[tokio::test]
async fn the_admin_token_is_checked_before_a_body_is_read() {
    let app = spawn_app_in(|text, _| text).await;
    let mut conn = tokio::net::TcpStream::connect(app.admin.trim_start_matches("http://")).await.unwrap();
    // A body announced and never sent: without the token, nothing waits for it.
    let head = "POST /admin/render HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n";
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut got = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(3), conn.read(&mut got)).await.expect("answered without the body");
    let got = String::from_utf8_lossy(&got[..n.unwrap()]).into_owned();
    assert!(got.starts_with("HTTP/1.1 401"), "{got}");
}

#[tokio::test]
async fn healthz_answers_while_a_heavy_render_runs() {
    let big_bodies = |text: String| text.replace("max_body_bytes = 65536", "max_body_bytes = 2097152");
    let app =
        spawn_each("alert {{item.id}} of {{len body.alerts}}", "max_events_per_request = 100000", big_bodies).await;
    let alerts: Vec<Value> = (0..40_000).map(|i| json!({ "id": format!("a{i}") })).collect();
    let body = json!({ "source": "load", "payload": json!({ "alerts": alerts }).to_string() });
    let render = app.http.post(format!("{}/admin/render", app.admin)).bearer_auth("admin-token").json(&body);
    let started = Instant::now();
    let render = tokio::spawn(async move { render.send().await.map(|r| r.status().as_u16()) });
    let mut slowest = Duration::ZERO;
    while !render.is_finished() {
        let asked = Instant::now();
        let res = app.http.get(format!("{}/healthz", app.admin)).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 200);
        slowest = slowest.max(asked.elapsed());
    }
    let took = started.elapsed();
    assert_eq!(render.await.unwrap().unwrap(), 200);
    assert!(took > Duration::from_millis(300), "the render must be heavy for this test to tell: {took:?}");
    assert!(slowest * 3 < took, "/healthz took {slowest:?} during a render of {took:?}");
}

/// GET `path` on the admin listener with `Host: host`.
async fn admin_with_host(app: &TestApp, path: &str, host: &str) -> reqwest::Response {
    app.http.get(format!("{}{path}", app.admin)).header("host", host).bearer_auth("admin-token").send().await.unwrap()
}

#[tokio::test]
async fn the_admin_listener_answers_only_its_own_names() {
    let app = spawn_app_in(|text, _| {
        text.replace(
            "admin_token = \"env:ADMIN_TOKEN\"",
            "admin_token = \"env:ADMIN_TOKEN\"\nadmin_hosts = [\"pagerhook.internal\"]",
        )
    })
    .await;
    let port = app.admin.rsplit(':').next().unwrap().to_string();
    for host in ["127.0.0.1", "localhost", "[::1]", "10.1.2.3", "pagerhook.internal", "PAGERHOOK.internal"] {
        for path in ["/healthz", "/metrics", "/admin/deliveries"] {
            let res = admin_with_host(&app, path, &format!("{host}:{port}")).await;
            assert_eq!(res.status().as_u16(), 200, "{host} {path}");
        }
    }
    // A page on another site whose name resolves to this host (DNS rebinding) sends its own name.
    for host in ["evil.example", "pagerhook.internal.evil.example", "localhost.evil.example", "evil.example:8081"] {
        for path in ["/healthz", "/metrics", "/admin/deliveries", "/"] {
            let res = admin_with_host(&app, path, host).await;
            assert_eq!(res.status().as_u16(), 421, "{host} {path}");
            let text = res.text().await.unwrap();
            assert!(text.contains("server.admin_hosts"), "{host} {path}: {text}");
        }
    }
}

#[tokio::test]
async fn admin_json_answers_are_neither_sniffed_nor_stored() {
    let app = spawn_app_in(|text, _| text).await;
    for (path, token) in [
        ("/admin/deliveries", true),
        ("/admin/deliveries", false),
        ("/admin/dead", true),
        ("/healthz", false),
        ("/readyz", false),
        ("/nowhere", false),
    ] {
        let mut req = app.http.get(format!("{}{path}", app.admin));
        if token {
            req = req.bearer_auth("admin-token");
        }
        let res = req.send().await.unwrap();
        let header = |name: &str| res.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        assert_eq!(header("x-content-type-options").as_deref(), Some("nosniff"), "{path} {token}");
        assert_eq!(header("cache-control").as_deref(), Some("no-store"), "{path} {token}");
    }
}

#[tokio::test]
async fn credential_headers_reach_neither_storage_nor_templates_nor_the_console() {
    let mapping = r#"
[[rule]]
name = "headers"
emit = "alert"
dedup_key = "h-{{body.n}}"
summary = "{{json headers}}"
source = "tests"
"#;
    let verify = r#"{ scheme = "hmac", header = "X-Signature", prefix = "sha256=", secrets = ["env:AM_SECRET"] }"#;
    let app = spawn_app_in(|text, dir| {
        std::fs::write(dir.join("headers.toml"), mapping).unwrap();
        let source = generic_source("signed", verify, &dir.join("headers.toml"));
        format!("{text}{source}drop_headers = [\"X-Internal-Secret\"]\n")
    })
    .await;
    let body = br#"{"n":1}"#;
    let signature = crate::helpers::github_signature(AM_SECRET, body);
    let secrets = [
        ("x-signature", signature.as_str()),
        ("x-api-key", "hunter2-api-key"),
        ("x-auth-token", "hunter2-auth-token"),
        ("x-access-token", "hunter2-access-token"),
        ("cookie", "session=hunter2-cookie"),
        ("x-internal-secret", "hunter2-configured"),
    ];
    let mut headers = vec![("content-type", "application/json"), ("x-request-id", "keep-me")];
    headers.extend(secrets);
    let a = app.post_hook("signed", &headers, body.to_vec()).await;
    assert_eq!(a.status, 202, "{:?}", a.json);

    let sent = app.fake.wait_for(1, WAIT).await;
    let summary = sent[0].summary().unwrap().to_string();
    assert!(summary.contains("keep-me"), "{summary}");
    let stored = app.admin_call(Method::GET, "/admin/deliveries").await.json;
    let detail = app.admin_call(Method::GET, &format!("/admin/deliveries/{}", stored[0]["id"])).await.json;
    assert_eq!(detail["headers"]["x-request-id"], "keep-me", "{detail:#}");
    let lines: String = headers.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
    let render = json!({ "source": "signed", "payload": "{\"n\":1}", "headers": lines });
    let res = app.http.post(format!("{}/admin/render", app.admin)).bearer_auth("admin-token").json(&render);
    let rendered = res.send().await.unwrap().text().await.unwrap();
    assert!(rendered.contains("keep-me"), "{rendered}");
    for (name, value) in secrets {
        for (what, text) in [("template", &summary), ("storage", &detail.to_string()), ("render", &rendered)] {
            assert!(!text.contains(name) && !text.contains(value), "{name} reached the {what}: {text}");
        }
    }
}

#[tokio::test]
async fn a_source_may_route_only_to_the_keys_it_lists() {
    let mapping = r#"
[[rule]]
name = "team"
emit = "alert"
routing_key = "{{body.team}}"
dedup_key = "n-{{body.n}}"
summary = "event {{body.n}}"
source = "tests"
"#;
    let app = spawn_app_in(|text, dir| {
        std::fs::write(dir.join("team.toml"), mapping).unwrap();
        let keys = "\n[pagerduty.routing_keys]\nteam-a = \"env:TEAM_A_KEY\"\nteam-b = \"env:PD_KEY\"\n";
        let text = without_own_pages(text);
        format!("{text}{}routing_keys = [\"team-a\"]\n{keys}", bearer_source("load", &dir.join("team.toml")))
    })
    .await;
    let a = app.post_bearer("load", &json!({"n": 1, "team": "team-a"})).await;
    assert_eq!((a.status, a.json["status"].as_str()), (202, Some("accepted")), "{:?}", a.json);
    // Another team's key is configured, but this source did not list it.
    let b = app.post_bearer("load", &json!({"n": 2, "team": "team-b"})).await;
    assert_eq!((b.status, b.json["status"].as_str()), (202, Some("mapping_failed")), "{:?}", b.json);
    let dead = app.admin_call(Method::GET, "/admin/dead").await.json;
    assert!(dead[0]["reason"].as_str().unwrap().contains("routing_keys"), "{dead:#}");
    let sent = app.fake.wait_for(1, WAIT).await;
    assert_eq!(sent[0].body["routing_key"], crate::helpers::TEAM_A_KEY);
    app.assert_only_sentinel_events(1).await;
}

#[tokio::test]
async fn an_sns_source_may_refuse_signature_version_1() {
    let app = spawn_sns_app("signature_versions = [2]", Arc::new(FakeAws::default())).await;
    let sha1 = app.sns(&notification("v1", None, "{}", "1")).await;
    assert_eq!(sha1.status, 401, "{:?}", sha1.json);
    assert!(sha1.json["error"].as_str().unwrap().contains("signature_versions"), "{:?}", sha1.json);
    let sha256 = app.sns(&notification("v2", None, "{}", "2")).await;
    assert_eq!(sha256.status, 200, "{:?}", sha256.json);
}

#[tokio::test]
async fn a_github_delivery_sent_again_under_a_new_delivery_id_is_a_duplicate() {
    let app = spawn_app_in(|text, _| text).await;
    let success = crate::helpers::fixture("github/deployment_status_success.json");
    let failure = crate::helpers::fixture("github/deployment_status_failure.json");
    // A deployment succeeded (and someone captured the delivery); a later one fails.
    let resolved = app.github("deployment_status", "d-1", &success).await;
    assert_eq!(resolved.status, 202, "{:?}", resolved.json);
    let opened = app.github("deployment_status", "d-2", &failure).await;
    assert_eq!(opened.status, 202, "{:?}", opened.json);
    // The captured success, GitHub's signature and all, under a new X-GitHub-Delivery (which
    // is not signed), would resolve the live incident.
    let replay = app.github("deployment_status", "d-3-made-up", &success).await;
    assert_eq!((replay.status, replay.json["status"].as_str()), (200, Some("duplicate")), "{:?}", replay.json);
    assert_eq!(replay.json["id"], resolved.json["id"], "the first delivery of that body");
    let events = [&resolved, &opened].iter().map(|a| a.json["events"].as_u64().unwrap()).sum::<u64>();
    app.assert_only_sentinel_events(events as usize).await;
}

#[tokio::test]
async fn dead_letters_older_than_thirty_days_are_dropped_by_default_logged_and_counted() {
    let (fake, dir) = (crate::helpers::fake_pagerduty::FakePagerDuty::start().await, tempfile::tempdir().unwrap());
    let cfg = crate::helpers::config_from(&crate::helpers::base_config(dir.path(), &fake.url), dir.path());
    // Dead letters in the store before pagerhook starts: one past the default retention.
    let (day, now) = (86_400_000, pagerhook::queue::now_millis());
    let queue = pagerhook::app::open_queue(&cfg, pagerhook::queue::Role::Tool).await.unwrap();
    for at in [now - 31 * day, now - 29 * day] {
        let failed = InboundStatus::MappingFailed("summary: missing".into());
        queue.accept(NewInbound::new("github", at, bytes::Bytes::from_static(b"{}"), failed), vec![]).await.unwrap();
    }
    drop(queue);
    let app = crate::helpers::start(cfg, fake, dir).await;
    let left = crate::helpers::eventually("the old dead letter is dropped", || async {
        let dead = app.admin_call(Method::GET, "/admin/dead").await.json;
        (dead.as_array().map(Vec::len) == Some(1)).then_some(dead)
    })
    .await;
    assert_eq!(left[0]["at"], now - 29 * day, "{left:#}");
    let metrics = app.scrape().await;
    assert!(metrics.contains(r#"pagerhook_dead_letters_dropped_total{source="github",reason="age"} 1"#), "{metrics}");
}

#[tokio::test]
async fn dead_letters_over_a_source_s_cap_are_dropped_oldest_first() {
    let broken = NUMBERED.replace("event {{body.n}}", "event {{body.n}} on {{body.host}}");
    let app = spawn_app_in(|text, dir| {
        std::fs::write(dir.join("numbered.toml"), &broken).unwrap();
        let text = text.replace("[storage]\n", "[storage]\ndead_letter_max_bytes = 1000\n");
        format!("{text}{}", bearer_source("load", &dir.join("numbered.toml")))
    })
    .await;
    let pad = "x".repeat(580);
    let mut ids = Vec::new();
    for n in 0..3 {
        let a = app.post_bearer("load", &json!({"n": n, "action": "trigger", "pad": pad})).await;
        assert_eq!(a.json["status"], "mapping_failed", "{:?}", a.json);
        ids.push(a.json["id"].clone());
    }
    let dropped = app.app.as_ref().unwrap().prune_dead_letters().await.unwrap();
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    assert_eq!((dropped[0].source.as_str(), dropped[0].reason.as_str(), dropped[0].letters), ("load", "size", 2));
    let dead = app.admin_call(Method::GET, "/admin/dead").await.json;
    assert_eq!(dead.as_array().map(Vec::len), Some(1), "{dead:#}");
    assert_eq!(dead[0]["id"], ids[2], "the newest stays");
    let metrics = app.scrape().await;
    assert!(metrics.contains(r#"pagerhook_dead_letters_dropped_total{source="load",reason="size"} 2"#), "{metrics}");
}

#[tokio::test]
async fn the_events_of_one_request_are_capped_in_bytes_as_in_number() {
    let app = spawn_each("{{item.text}}", "max_event_bytes_per_request = 1500", |text| text).await;
    let alerts =
        |n: usize| json!({ "alerts": (0..n).map(|i| json!({"id": i, "text": "y".repeat(600)})).collect::<Vec<_>>() });
    let a = app.post_bearer("load", &alerts(3)).await;
    assert_eq!((a.status, a.json["status"].as_str()), (202, Some("too_many_events")), "{:?}", a.json);
    assert!(a.json["error"].as_str().unwrap().contains("max_event_bytes_per_request = 1500"), "{:?}", a.json);
    let dead = app.admin_call(Method::GET, "/admin/dead").await.json;
    assert_eq!(dead[0]["kind"], "too_many_events", "{dead:#}");
    let one = app.post_bearer("load", &alerts(1)).await;
    assert_eq!((one.status, one.json["status"].as_str()), (202, Some("accepted")), "{:?}", one.json);
    app.assert_only_sentinel_events(1).await;
}
