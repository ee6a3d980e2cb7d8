//! The admin listener against the real binary: `/metrics` checked by `promtool`, counters
//! that match what the test sent and received byte for byte, gauges that return to zero,
//! `/live` and `/ready` (draining; Redis lost: degraded, still ready), the admin token, the
//! admin port rules, and JSON logs.

mod support;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use support::{RawWs, Redis, Server};

const APP: &str = r#"
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
"#;

/// Fetches an admin path: status and body.
async fn admin(server: &Server, path: &str, token: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new().get(format!("http://{}{path}", server.admin));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("admin request");
    let status = response.status().as_u16();
    (status, response.text().await.expect("admin body"))
}

/// Every sample of the exposition, by its name and labels as written.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').expect("a sample line");
            (key.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

async fn scrape(server: &Server) -> HashMap<String, f64> {
    let (status, body) = admin(server, "/metrics", None).await;
    assert_eq!(status, 200, "{body}");
    samples(&body)
}

fn value(samples: &HashMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key} in {:?}", sorted_keys(samples)))
}

fn sorted_keys(samples: &HashMap<String, f64>) -> Vec<&String> {
    let mut keys: Vec<_> = samples.keys().collect();
    keys.sort();
    keys
}

/// Polls the metrics until `key` has `want`, for at most 5 s.
async fn wait_for(server: &Server, key: &str, want: f64) -> HashMap<String, f64> {
    for _ in 0..100 {
        let s = scrape(server).await;
        if s.get(key) == Some(&want) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = scrape(server).await;
    panic!("{key} never became {want}: {:?}", s.get(key));
}

/// `promtool check metrics` (Debian package `prometheus`) accepts the exposition.
fn promtool_accepts(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is required (Debian: apt-get install prometheus)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The test's side of a connection: every byte it sent and received.
struct Counted {
    ws: RawWs,
    sent: usize,
    received: usize,
    frames_in: usize,
}

impl Counted {
    async fn open(server: &Server) -> Counted {
        let mut ws = RawWs::open(server, "/app/app-key?protocol=7", None).await;
        let first = ws.frame().await;
        assert_eq!(first.json()["event"], "pusher:connection_established");
        Counted {
            received: first.wire().len(),
            ws,
            sent: 0,
            frames_in: 1,
        }
    }

    async fn send_json(&mut self, value: Value) {
        let frame = support::text(&value.to_string());
        self.sent += frame.len();
        self.ws.send(&frame).await;
    }

    async fn frame(&mut self) -> support::Frame {
        let frame = self.ws.frame().await;
        self.received += frame.wire().len();
        self.frames_in += 1;
        frame
    }

    async fn expect(&mut self, event: &str) -> Value {
        let frame = self.frame().await.json();
        assert_eq!(frame["event"], event, "{frame}");
        frame
    }
}

#[tokio::test]
async fn counters_are_exact_and_gauges_return_to_zero() {
    let server = Server::start(APP);
    let (status, body) = admin(&server, "/live", None).await;
    assert_eq!((status, body.as_str()), (200, "OK"));
    let (status, _) = admin(&server, "/ready", None).await;
    assert_eq!(status, 200);

    let mut clients = Vec::new();
    for _ in 0..5 {
        let mut c = Counted::open(&server).await;
        c.send_json(json!({"event":"pusher:subscribe","data":{"channel":"room"}}))
            .await;
        c.expect("pusher_internal:subscription_succeeded").await;
        clients.push(c);
    }
    let s = scrape(&server).await;
    assert_eq!(value(&s, r#"herald_connections{app="1"}"#), 5.0);
    assert_eq!(value(&s, r#"herald_subscriptions{app="1"}"#), 5.0);
    assert_eq!(value(&s, r#"herald_channels{app="1"}"#), 1.0);

    for i in 0..3 {
        let body = json!({"name":"tick","channels":["room","empty"],"data":format!("{i}")});
        let (status, _) = support::signed(
            &server,
            "POST",
            "/apps/1/events",
            &[],
            Some(&body.to_string()),
        )
        .await;
        assert_eq!(status, 200);
        for c in &mut clients {
            c.expect("tick").await;
        }
    }
    let (status, _) = support::signed_as(
        &server,
        "POST",
        "/apps/1/events",
        &[],
        Some(r#"{"name":"x","channel":"room","data":"1"}"#),
        "app-key",
        "wrong-secret",
        support::now(),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = support::signed(&server, "GET", "/apps/999/channels", &[], None).await;
    assert_eq!(status, 404);

    let sent: usize = clients.iter().map(|c| c.sent).sum();
    let received: usize = clients.iter().map(|c| c.received).sum();
    let frames_in: usize = clients.iter().map(|c| c.frames_in).sum();
    let wanted = [
        (r#"herald_connections_opened_total{app="1"}"#, 5.0),
        (r#"herald_events_published_total{app="1"}"#, 6.0),
        (r#"herald_deliveries_total{app="1"}"#, 15.0),
        (r#"herald_ws_messages_received_total{app="1"}"#, 5.0),
        (r#"herald_ws_bytes_received_total{app="1"}"#, sent as f64),
        (
            r#"herald_ws_messages_sent_total{app="1"}"#,
            frames_in as f64,
        ),
        (r#"herald_ws_bytes_sent_total{app="1"}"#, received as f64),
        (
            r#"herald_http_requests_total{app="1",route="events",status="200"}"#,
            3.0,
        ),
        (
            r#"herald_http_requests_total{app="1",route="events",status="401"}"#,
            1.0,
        ),
        (
            r#"herald_http_requests_total{app="",route="channels",status="404"}"#,
            1.0,
        ),
    ];
    // A write is counted once it returns, and a request once its answer is sent: the
    // client can read either first. Scraped until every count is in, within a deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let s = loop {
        let s = scrape(&server).await;
        if wanted.iter().all(|&(key, want)| value(&s, key) == want)
            || std::time::Instant::now() > deadline
        {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for (key, want) in wanted {
        assert_eq!(value(&s, key), want, "{key}");
    }
    // Each write that sent an event was timed: at least one per connection, at most one
    // per delivery.
    let timed = value(&s, r#"herald_publish_to_write_seconds_count{app="1"}"#);
    assert!((5.0..=15.0).contains(&timed), "{timed}");
    assert!(value(&s, r#"herald_publish_to_write_seconds_sum{app="1"}"#) > 0.0);

    // Two leave with a close handshake, three vanish.
    let mut clients = clients.into_iter();
    for mut c in clients.by_ref().take(2) {
        c.ws.send(&support::close_frame(1000, b"")).await;
        assert_eq!(c.ws.expect_close().await.close_code(), Some(1000));
    }
    drop(clients);
    let s = wait_for(&server, r#"herald_connections{app="1"}"#, 0.0).await;
    for (key, want) in [
        (r#"herald_subscriptions{app="1"}"#, 0.0),
        (r#"herald_channels{app="1"}"#, 0.0),
        (r#"herald_presence_members{app="1"}"#, 0.0),
        (
            r#"herald_connections_closed_total{app="1",code="1000"}"#,
            2.0,
        ),
        (
            r#"herald_connections_closed_total{app="1",code="1006"}"#,
            3.0,
        ),
    ] {
        assert_eq!(value(&s, key), want, "{key}");
    }
    let (_, text) = admin(&server, "/metrics", None).await;
    promtool_accepts(&text);
    assert!(text.contains("herald_process_open_fds"), "process metrics");
    assert!(text.contains("herald_process_resident_memory_bytes"));
    assert!(text.contains("herald_process_cpu_seconds_total"));
    support::assert_pusher_js_served(&server);
}

#[tokio::test]
async fn refusals_presence_and_client_events_are_counted() {
    let server = Server::start(
        r#"
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
max_connections = 2
client_events = true
client_events_per_second = 1
"#,
    );
    let mut a = server.connect("app-key").await;
    let mut b = server.connect("app-key").await;
    // The third is over the app's quota.
    let (mut ws, first) = server
        .connect_raw("/app/app-key?protocol=7&client=js&version=8.6.0")
        .await;
    assert_eq!(first.expect("error frame")["data"]["code"], 4004);
    assert_eq!(support::expect_close(&mut ws).await, 4004);
    // An unknown key is refused before any app.
    let (mut ws, _) = server.connect_raw("/app/nobody?protocol=7").await;
    assert_eq!(support::expect_close(&mut ws).await, 4001);

    let data_a = r#"{"user_id":"ann"}"#;
    let data_b = r#"{"user_id":"bob"}"#;
    a.subscribe_private("presence-room", Some(data_a)).await;
    b.subscribe_private("presence-room", Some(data_b)).await;
    a.expect("pusher_internal:member_added").await;
    let s = scrape(&server).await;
    assert_eq!(value(&s, r#"herald_presence_members{app="1"}"#), 2.0);

    // One client event a second: the first is relayed, the second refused with 4301.
    for _ in 0..2 {
        a.send(json!({"event":"client-hi","channel":"presence-room","data":{}}))
            .await;
    }
    b.expect("client-hi").await;
    let refused = a.next().await;
    assert_eq!(refused["data"]["code"], 4301, "{refused}");

    let s = scrape(&server).await;
    for (key, want) in [
        (r#"herald_client_events_total{app="1"}"#, 1.0),
        (
            r#"herald_limit_refusals_total{app="1",limit="connections"}"#,
            1.0,
        ),
        (
            r#"herald_limit_refusals_total{app="1",limit="client_event_rate"}"#,
            1.0,
        ),
        (
            r#"herald_connections_refused_total{reason="over_connection_quota"}"#,
            1.0,
        ),
        (
            r#"herald_connections_refused_total{reason="unknown_app"}"#,
            1.0,
        ),
    ] {
        assert_eq!(value(&s, key), want, "{key}");
    }
    drop(b);
    let s = wait_for(&server, r#"herald_presence_members{app="1"}"#, 1.0).await;
    assert_eq!(value(&s, r#"herald_connections{app="1"}"#), 1.0);
    drop(a);
    wait_for(&server, r#"herald_connections{app="1"}"#, 0.0).await;
}

#[tokio::test]
async fn webhook_outcomes_are_counted() {
    // A receiver that answers 500 to the first request and 200 after.
    let hook = support::sink_answering(
        vec!["500 Internal Server Error", "200 OK"],
        Duration::ZERO,
        String::new(),
    )
    .await;
    let url = hook.url.clone();
    let server = Server::start(&format!(
        r#"
webhook_vacated_delay_ms = 0
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
[[apps.webhooks]]
url = "{url}"
event_types = ["channel_occupied"]
"#
    ));
    let mut ws = server.connect("app-key").await;
    ws.subscribe("room").await;
    // The 500 is retried after a second, then succeeds.
    let s = wait_for(
        &server,
        r#"herald_webhook_requests_total{app="1",outcome="success"}"#,
        1.0,
    )
    .await;
    for (key, want) in [
        (
            r#"herald_webhook_requests_total{app="1",outcome="attempt"}"#,
            2.0,
        ),
        (
            r#"herald_webhook_requests_total{app="1",outcome="retry"}"#,
            1.0,
        ),
        (
            r#"herald_webhook_requests_total{app="1",outcome="failure"}"#,
            0.0,
        ),
        (r#"herald_webhook_drops_total{app="1"}"#, 0.0),
        (
            r#"herald_webhook_attempts_total{app="1",status="5xx"}"#,
            1.0,
        ),
        (
            r#"herald_webhook_attempts_total{app="1",status="2xx"}"#,
            1.0,
        ),
        (
            r#"herald_webhook_attempts_total{app="1",status="error"}"#,
            0.0,
        ),
    ] {
        assert_eq!(value(&s, key), want, "{key}");
    }
    assert_eq!(hook.requests.load(std::sync::atomic::Ordering::SeqCst), 2);
    promtool_accepts(&admin(&server, "/metrics", None).await.1);
}

#[tokio::test]
async fn ready_turns_503_while_draining() {
    let server = Server::start(&format!("shutdown_grace = 5\n{APP}"));
    // A client that never answers the server's Close keeps the node draining for the
    // close linger (2 s).
    let mut ws = RawWs::connect(&server).await;
    assert_eq!(
        reqwest::get(server.http("/up")).await.unwrap().status(),
        200
    );
    let pid = server.pid().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let close = ws.expect_close().await;
    assert_eq!(close.close_code(), Some(4200));
    let (status, body) = admin(&server, "/ready", None).await;
    assert_eq!(status, 503);
    assert!(body.contains("draining"), "{body}");
    let (status, _) = admin(&server, "/live", None).await;
    assert_eq!(status, 200, "the process is still up while it drains");
}

#[tokio::test]
async fn ready_stays_200_while_redis_is_away_saying_it_is_degraded() {
    let mut redis = Redis::start();
    let server = Server::start(&format!(
        "adapter = \"redis\"\nredis_url = \"{}\"\nnode_timeout = 2\n{APP}",
        redis.url()
    ));
    let s = scrape(&server).await;
    assert_eq!(value(&s, "herald_cluster_redis_up"), 1.0);
    assert_eq!(value(&s, "herald_cluster_bus_queue_bytes"), 0.0);
    assert_eq!(value(&s, "herald_cluster_bus_held_messages"), 0.0);
    assert_eq!(admin(&server, "/ready", None).await, (200, "OK".to_owned()));
    redis.kill();
    // The node serves new connections on its own: it stays in the load balancer, and says
    // what it serves without.
    wait_for(&server, "herald_cluster_redis_up", 0.0).await;
    let (status, body) = admin(&server, "/ready", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("degraded") && body.contains("Redis"),
        "{body}"
    );
    let up = reqwest::get(server.http("/up")).await.unwrap();
    assert_eq!(up.status(), 200, "/up follows /ready");
    // An event published while Redis is away is held for the other nodes.
    let (status, _) = support::signed(
        &server,
        "POST",
        "/apps/1/events",
        &[],
        Some(r#"{"name":"e","channel":"c","data":"1"}"#),
    )
    .await;
    assert_eq!(status, 200);
    let s = scrape(&server).await;
    assert!(value(&s, "herald_cluster_bus_queue_bytes") > 0.0);
    redis.restart();
    for _ in 0..100 {
        if admin(&server, "/ready", None).await == (200, "OK".to_owned()) {
            let s = wait_for(&server, "herald_cluster_bus_held_messages", 0.0).await;
            assert_eq!(value(&s, "herald_cluster_redis_up"), 1.0);
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("still degraded after Redis returned");
}

#[tokio::test]
async fn the_admin_token_guards_metrics() {
    let token = "an-admin-token-of-some-length";
    let server = Server::start(&format!("admin_token = \"{token}\"\n{APP}"));
    let (status, body) = admin(&server, "/metrics", None).await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = admin(&server, "/metrics", Some("an-admin-token-of-wrong-length")).await;
    assert_eq!(status, 401);
    let (status, body) = admin(&server, "/metrics", Some(token)).await;
    assert_eq!(status, 200);
    assert!(body.contains("herald_connections{app=\"1\"} 0"), "{body}");
    // The probes say no more than the public /up, so a load balancer needs no token.
    assert_eq!(admin(&server, "/ready", None).await.0, 200);
    assert_eq!(admin(&server, "/live", None).await.0, 200);
}

fn herald() -> Command {
    Command::new(env!("CARGO_BIN_EXE_herald"))
}

fn write_config(text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "herald-metrics-{}-{}.toml",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn a_public_admin_address_needs_a_token() {
    let path = write_config(&format!("admin_host = \"0.0.0.0\"\n{APP}"));
    let out = herald()
        .args(["serve", "--port", "0", "--config"])
        .env("HERALD_DATA_DIR", support::scratch_data_dir())
        .arg(&path)
        .output()
        .expect("run herald");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("admin_token"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
}

#[test]
fn a_taken_admin_port_stops_start_up_unless_it_is_the_default() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let path = write_config(&format!("admin_port = {port}\n{APP}"));
    let out = herald()
        .args(["serve", "--port", "0", "--config"])
        .env("HERALD_DATA_DIR", support::scratch_data_dir())
        .arg(&path)
        .output()
        .expect("run herald");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("admin") && stderr.contains(&port.to_string()),
        "{stderr}"
    );

    // Hold the default port (or find it held by another test's server): a node without
    // an admin_port still starts, on a free port, and says so.
    let _default = std::net::TcpListener::bind("127.0.0.1:9601");
    let server = Server::start_logged(APP, &[]);
    assert!(!server.admin.ends_with(":9601"), "{}", server.admin);
    let log = server.log();
    assert!(log.contains("default admin port is taken"), "{log}");
}

#[tokio::test]
async fn admin_port_zero_picks_a_free_port() {
    let server = Server::start(&format!("admin_port = 0\n{APP}"));
    assert!(!server.admin.ends_with(":0"));
    assert_eq!(admin(&server, "/live", None).await.0, 200);
}

#[tokio::test]
async fn json_logs_name_every_close_and_refusal() {
    let server = Server::start_logged(
        &format!("log_format = \"json\"\n{APP}"),
        &[("RUST_LOG", "herald_server=debug")],
    );
    let mut ws = RawWs::connect(&server).await;
    ws.send(&support::close_frame(1000, b"")).await;
    ws.expect_close().await;
    let (mut refused, _) = server.connect_raw("/app/nobody?protocol=7").await;
    assert_eq!(support::expect_close(&mut refused).await, 4001);
    let mut lines = Vec::new();
    for _ in 0..50 {
        lines = server
            .log()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
            .collect();
        let closed = lines.iter().any(|l| l["message"] == "Connection closed");
        let refused = lines.iter().any(|l| l["message"] == "Connection refused");
        if closed && refused {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let closed = lines
        .iter()
        .find(|l| l["message"] == "Connection closed")
        .expect("a close line");
    assert_eq!(closed["code"], 1000, "{closed}");
    assert_eq!(closed["app_id"], "1", "{closed}");
    assert!(closed["socket_id"]
        .as_str()
        .is_some_and(|s| s.contains('.')));
    assert_eq!(closed["level"], "DEBUG");
    let refused = lines
        .iter()
        .find(|l| l["message"] == "Connection refused")
        .expect("a refusal line");
    assert_eq!(refused["code"], 4001, "{refused}");
    assert_eq!(refused["app_key"], "nobody", "{refused}");
}
