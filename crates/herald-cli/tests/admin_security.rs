//! The admin plane against the real binary, as an attacker tries it (issue 26, items 1-3
//! and the console state's bound): a cross-origin "simple" publish and a rebound `Host`
//! are refused with or without a token, while the console's own requests work; every
//! answer carries the hardening headers; the metrics token reads `/metrics` and nothing
//! else; SIGHUP rotates both tokens without a restart; the admin listener serves TLS; idle
//! sockets cannot keep a probe or a scrape out; the live log's streams are capped; the
//! state answer is bounded and says so.

mod support;

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use support::{raw_request, signed, RawResponse, Server, KEY};
use tokio::net::TcpStream;

const ADMIN: &str = "admin-token-0123456789abcdef";
const METRICS: &str = "metrics-token-0123456789abcdef";

/// A publish of event `name` to `news`, as the console's page sends it.
fn publish_body(name: &str) -> String {
    json!({"app": "1", "channels": ["news"], "name": name, "data": "{}"}).to_string()
}

/// A hand-written request to the admin listener: `head_lines` go after the request line
/// (each ending in CRLF), then the body.
async fn admin_raw(
    server: &Server,
    request_line: &str,
    head_lines: &str,
    body: &str,
) -> RawResponse {
    let request = format!(
        "{request_line} HTTP/1.1\r\n{head_lines}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    raw_request(&server.admin, &request).await.0
}

/// The cross-site attack of issue 26: a "simple" POST (text/plain, no preflight) from a
/// page of another origin, with `host` as the Host and `extra` headers.
async fn cross_site_publish(server: &Server, host: &str, extra: &str) -> RawResponse {
    admin_raw(
        server,
        "POST /console/api/publish",
        &format!(
            "Host: {host}\r\nOrigin: http://evil.example\r\nContent-Type: text/plain\r\n{extra}"
        ),
        &publish_body("forged"),
    )
    .await
}

/// A subscriber to `news`.
async fn subscriber(server: &Server) -> support::Ws {
    let mut ws = server.connect(KEY).await;
    ws.subscribe("news").await;
    ws
}

fn assert_refused_as_json(response: &RawResponse, status: u16) {
    assert_eq!(response.status, status, "{}", response.head);
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{}",
        response.head
    );
    assert!(response.json()["error"].is_string());
}

#[tokio::test]
async fn a_cross_origin_text_plain_publish_is_refused_without_a_token() {
    let server = Server::start("");
    let mut ws = subscriber(&server).await;
    let local = server.admin.clone();
    for host in [local.as_str(), "evil.example:9601"] {
        let refused = cross_site_publish(&server, host, "").await;
        assert_refused_as_json(&refused, 403);
    }
    // The console's own header with a foreign Origin: still refused.
    let refused = cross_site_publish(&server, &local, "X-Herald-Console: 1\r\n").await;
    assert_refused_as_json(&refused, 403);
    ws.expect_silence(300).await;
}

#[tokio::test]
async fn a_cross_origin_publish_is_refused_with_a_token_even_with_the_cookie() {
    let server = Server::start(&format!("admin_token = \"{ADMIN}\"\n"));
    let mut ws = subscriber(&server).await;
    let refused = cross_site_publish(&server, &server.admin, "").await;
    assert_refused_as_json(&refused, 401);
    // A page on another port of the same host is same-site: the SameSite cookie goes along.
    let visit = admin_raw(
        &server,
        &format!("GET /console?token={ADMIN}"),
        &format!("Host: {}\r\n", server.admin),
        "",
    )
    .await;
    assert_eq!(visit.status, 303);
    let set = visit.header("set-cookie").expect("a cookie");
    assert!(
        !set.contains(ADMIN),
        "the cookie does not hold the token: {set}"
    );
    let cookie = format!("Cookie: {}\r\n", set.split(';').next().expect("name=value"));
    let refused = cross_site_publish(&server, &server.admin, &cookie).await;
    assert_refused_as_json(&refused, 403);
    ws.expect_silence(300).await;
}

#[tokio::test]
async fn a_foreign_host_reads_nothing() {
    let server = Server::start("");
    for path in [
        "/console/api/state",
        "/console/api/events",
        "/console",
        "/metrics",
    ] {
        let refused = admin_raw(
            &server,
            &format!("GET {path}"),
            "Host: evil.example:9601\r\n",
            "",
        )
        .await;
        assert_refused_as_json(&refused, 403);
        assert!(
            !String::from_utf8_lossy(&refused.body).contains("app-key"),
            "{path} leaks nothing"
        );
    }
    for host in [server.admin.clone(), format!("localhost:{}", port(&server))] {
        let state = admin_raw(
            &server,
            "GET /console/api/state",
            &format!("Host: {host}\r\n"),
            "",
        )
        .await;
        assert_eq!(state.status, 200, "{host}");
        assert_eq!(state.json()["apps"][0]["key"], KEY);
    }
    // The probes answer any Host: a load balancer names the node by its address.
    let ready = admin_raw(&server, "GET /ready", "Host: 10.1.2.3:9601\r\n", "").await;
    assert_eq!(ready.status, 200);
}

#[tokio::test]
async fn a_name_in_admin_allowed_hosts_is_answered() {
    let server = Server::start("admin_allowed_hosts = [\"console.example.com\"]\n");
    let state = admin_raw(
        &server,
        "GET /console/api/state",
        "Host: console.example.com\r\n",
        "",
    )
    .await;
    assert_eq!(state.status, 200);
}

fn port(server: &Server) -> &str {
    server.admin.rsplit(':').next().expect("a port")
}

#[tokio::test]
async fn the_consoles_own_requests_still_work() {
    let server = Server::start("");
    let mut ws = subscriber(&server).await;
    let page = reqwest::get(format!("http://{}/console", server.admin))
        .await
        .expect("page");
    assert_eq!(page.status(), 200);
    let origin = format!("http://{}", server.admin);
    let http = reqwest::Client::new();
    let published = http
        .post(format!("{origin}/console/api/publish"))
        .header("content-type", "application/json")
        .header("origin", &origin)
        .header("sec-fetch-site", "same-origin")
        .header("x-herald-console", "1")
        .body(publish_body("made"))
        .send()
        .await
        .expect("publish");
    assert_eq!(published.status(), 200);
    ws.expect("made").await;
    // A tool that sends no Origin (curl) needs the header only.
    let published = http
        .post(format!("{origin}/console/api/publish"))
        .header("x-herald-console", "1")
        .body(publish_body("curl"))
        .send()
        .await
        .expect("publish");
    assert_eq!(published.status(), 200);
    ws.expect("curl").await;
}

#[tokio::test]
async fn every_admin_answer_is_hardened() {
    let server = Server::start("");
    for path in [
        "/console",
        "/console/console.js",
        "/console/charts.js",
        "/console/api/state",
        "/metrics",
    ] {
        let response = reqwest::get(format!("http://{}{path}", server.admin))
            .await
            .expect("GET");
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers();
        let csp = headers["content-security-policy"].to_str().expect("text");
        for part in [
            "default-src 'none'",
            "script-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(part), "{path}: {csp}");
        }
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
    }
    // The page itself holds no inline script the policy would block.
    let page = reqwest::get(format!("http://{}/console", server.admin))
        .await
        .expect("page")
        .text()
        .await
        .expect("text");
    assert!(!page.contains("<script>"), "no inline script");
}

async fn bearer_get(server: &Server, path: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("http://{}{path}", server.admin))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET")
        .status()
        .as_u16()
}

async fn bearer_publish(server: &Server, token: &str, name: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("http://{}/console/api/publish", server.admin))
        .bearer_auth(token)
        .header("x-herald-console", "1")
        .body(publish_body(name))
        .send()
        .await
        .expect("POST");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

#[tokio::test]
async fn the_metrics_token_reads_metrics_and_cannot_publish() {
    let server = Server::start(&format!(
        "admin_token = \"{ADMIN}\"\nmetrics_token = \"{METRICS}\"\n"
    ));
    let mut ws = subscriber(&server).await;
    assert_eq!(bearer_get(&server, "/metrics", METRICS).await, 200);
    assert_eq!(bearer_get(&server, "/metrics", ADMIN).await, 200);
    assert_eq!(
        bearer_get(&server, "/metrics", "wrong-token-0123456789").await,
        401
    );
    assert_eq!(
        bearer_get(&server, "/console/api/state", METRICS).await,
        403
    );
    let (status, body) = bearer_publish(&server, METRICS, "scraper").await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"]
        .as_str()
        .expect("text")
        .contains("metrics token"));
    ws.expect_silence(300).await;
    let (status, _) = bearer_publish(&server, ADMIN, "admin").await;
    assert_eq!(status, 200);
    ws.expect("admin").await;
}

#[tokio::test]
async fn sighup_rotates_both_tokens_without_a_restart() {
    let old_admin = "old-admin-token-0123456789";
    let old_metrics = "old-metrics-token-0123456789";
    let server = Server::start_logged(
        &format!("admin_token = \"{old_admin}\"\nmetrics_token = \"{old_metrics}\"\n"),
        &[],
    );
    let pid = server.pid();
    assert_eq!(bearer_get(&server, "/metrics", old_metrics).await, 200);
    assert_eq!(
        bearer_get(&server, "/console/api/state", old_admin).await,
        200
    );
    std::fs::write(
        &server.config,
        format!("admin_token = \"{ADMIN}\"\nmetrics_token = \"{METRICS}\"\n"),
    )
    .expect("rewrite config");
    let reloads = server.log().matches("Configuration reloaded").count();
    kill(Pid::from_raw(pid as i32), Signal::SIGHUP).expect("SIGHUP");
    for _ in 0..250 {
        if server.log().matches("Configuration reloaded").count() > reloads {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = server.log();
    assert!(
        !log.contains("admin_token` changes only on restart"),
        "{log}"
    );
    assert!(
        !log.contains(ADMIN) && !log.contains(old_admin),
        "no token in the log"
    );
    // At once: the old tokens are refused, the new ones open what they opened.
    assert_eq!(bearer_get(&server, "/metrics", old_metrics).await, 401);
    assert_eq!(bearer_get(&server, "/metrics", old_admin).await, 401);
    assert_eq!(
        bearer_get(&server, "/console/api/state", old_admin).await,
        401
    );
    assert_eq!(bearer_get(&server, "/metrics", METRICS).await, 200);
    assert_eq!(bearer_get(&server, "/console/api/state", ADMIN).await, 200);
    assert_eq!(server.pid(), pid, "the same process");
}

#[tokio::test]
async fn idle_sockets_cannot_keep_probes_or_scrapes_out() {
    let server = Server::start(&format!("metrics_token = \"{METRICS}\"\n"));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let mut idle = Vec::new();
    for round in 0..3 {
        // 100 sockets that send nothing, on top of those still held from before.
        for _ in 0..100 {
            idle.push(TcpStream::connect(&server.admin).await.expect("connect"));
        }
        let ready = http
            .get(format!("http://{}/ready", server.admin))
            .send()
            .await
            .unwrap_or_else(|e| panic!("round {round}: /ready answered: {e}"));
        assert_eq!(ready.status(), 200, "round {round}");
        let metrics = http
            .get(format!("http://{}/metrics", server.admin))
            .bearer_auth(METRICS)
            .send()
            .await
            .unwrap_or_else(|e| panic!("round {round}: /metrics answered: {e}"));
        assert_eq!(metrics.status(), 200, "round {round}");
    }
    // Console streams hold their connections busy: with the most allowed open, a probe
    // still gets a slot.
    let mut streams = Vec::new();
    for _ in 0..8 {
        let stream = http
            .get(format!("http://{}/console/api/events", server.admin))
            .send()
            .await
            .expect("a stream");
        assert_eq!(stream.status(), 200);
        streams.push(stream);
    }
    for _ in 0..100 {
        idle.push(TcpStream::connect(&server.admin).await.expect("connect"));
    }
    let live = http
        .get(format!("http://{}/live", server.admin))
        .send()
        .await
        .expect("/live answered");
    assert_eq!(live.status(), 200);
    // The flood took no stream's slot: each still gets the log's next row.
    let body = json!({"name": "after-flood", "channel": "news", "data": "1"}).to_string();
    assert_eq!(
        signed(&server, "POST", "/apps/1/events", &[], Some(&body))
            .await
            .0,
        200
    );
    for (i, stream) in streams.iter_mut().enumerate() {
        let mut seen = String::new();
        while !seen.contains("after-flood") {
            let chunk = tokio::time::timeout(Duration::from_secs(5), stream.chunk())
                .await
                .unwrap_or_else(|_| panic!("stream {i}: the row within 5 s"))
                .expect("the stream")
                .unwrap_or_else(|| panic!("stream {i} was closed"));
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[tokio::test]
async fn console_streams_are_capped_with_a_clear_error() {
    let server = Server::start("");
    let url = format!("http://{}/console/api/events", server.admin);
    let mut streams = Vec::new();
    for _ in 0..8 {
        let stream = reqwest::get(&url).await.expect("a stream");
        assert_eq!(stream.status(), 200);
        streams.push(stream);
    }
    let refused = reqwest::get(&url).await.expect("an answer");
    assert_eq!(refused.status(), 503);
    let body: Value = refused.json().await.expect("JSON");
    assert!(
        body["error"]
            .as_str()
            .expect("text")
            .contains("maximum of 8"),
        "{body}"
    );
    drop(streams.pop());
    let mut again = None;
    for _ in 0..100 {
        let stream = reqwest::get(&url).await.expect("an answer");
        if stream.status() == 200 {
            again = Some(stream);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "a closed tab frees its stream");
}

#[tokio::test]
async fn the_state_answer_is_bounded_and_says_so() {
    let server = Server::start("");
    // 600 cache channels: each holds its event with nobody subscribed.
    for batch in 0..60 {
        let events: Vec<Value> = (0..10)
            .map(|i| json!({"name": "e", "channel": format!("cache-{:03}", batch * 10 + i), "data": "1"}))
            .collect();
        let body = json!({ "batch": events }).to_string();
        let (status, answer) =
            signed(&server, "POST", "/apps/1/batch_events", &[], Some(&body)).await;
        assert_eq!(status, 200, "{answer}");
    }
    let started = std::time::Instant::now();
    let state: Value = reqwest::get(format!("http://{}/console/api/state", server.admin))
        .await
        .expect("state")
        .json()
        .await
        .expect("JSON");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(state["truncated"], true, "{}", state["truncated_by"]);
    assert!(state["truncated_by"]
        .as_str()
        .expect("text")
        .starts_with("size"));
    let app = &state["apps"][0];
    assert_eq!(app["channel_count"], 600);
    let channels = app["channels"].as_array().expect("channels");
    assert_eq!(channels.len(), 500);
    assert_eq!(channels[0]["name"], "cache-000", "the first by name");
    assert_eq!(channels[499]["name"], "cache-499");
}

/// A private CA's certificate for `localhost`, its key, and the CA's PEM.
fn certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).expect("CA");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("leaf");
    let cert = leaf.signed_by(&key, &issuer).expect("certificate");
    let cert_path = dir.join("admin-cert.pem");
    let key_path = dir.join("admin-key.pem");
    std::fs::write(&cert_path, cert.pem()).expect("write");
    std::fs::write(&key_path, key.serialize_pem()).expect("write");
    (cert_path, key_path, ca_cert.pem())
}

#[tokio::test]
async fn the_admin_listener_serves_tls() {
    let dir = std::env::temp_dir().join(format!("herald-admin-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (cert, key, ca) = certificate(&dir);
    let config = format!(
        "admin_token = \"{ADMIN}\"\nadmin_tls_cert = \"{}\"\nadmin_tls_key = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let server = Server::start_logged(&config, &[]);
    let port = port(&server);
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).expect("CA"))
        .build()
        .expect("client");
    let ready = https
        .get(format!("https://localhost:{port}/ready"))
        .send()
        .await
        .expect("/ready over TLS");
    assert_eq!(ready.status(), 200);
    let metrics = https
        .get(format!("https://localhost:{port}/metrics"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("/metrics over TLS");
    assert_eq!(metrics.status(), 200);
    // The sign-in cookie is marked Secure over TLS.
    let visit = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).expect("CA"))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(format!("https://localhost:{port}/console?token={ADMIN}"))
        .send()
        .await
        .expect("sign in");
    assert!(visit.headers()["set-cookie"]
        .to_str()
        .expect("text")
        .contains("Secure"));
    // Plain HTTP to the TLS listener gets no answer from the admin endpoints.
    let plain = reqwest::get(format!("http://localhost:{port}/ready")).await;
    assert!(!plain.is_ok_and(|r| r.status() == 200));

    // A new certificate from another CA, written over the files: SIGHUP serves it to new
    // connections, without a restart.
    let (_, _, new_ca) = certificate(&dir);
    std::fs::write(&server.config, &config).expect("rewrite config");
    kill(Pid::from_raw(server.pid() as i32), Signal::SIGHUP).expect("SIGHUP");
    let trusting_new = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(new_ca.as_bytes()).expect("CA"))
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let mut served = false;
    for _ in 0..250 {
        if trusting_new
            .get(format!("https://localhost:{port}/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "the new certificate is served: {}", server.log());
    assert!(
        server.log().contains("admin_tls_cert"),
        "the reload names the listener's key"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_admin_certificate_stops_start_up_naming_its_key() {
    let dir = std::env::temp_dir().join(format!("herald-admin-badtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (_, key, _) = certificate(&dir);
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let config = dir.join("herald.toml");
    std::fs::write(
        &config,
        format!(
            "admin_tls_cert = \"{}\"\nadmin_tls_key = \"{}\"\n",
            garbage.display(),
            key.display()
        ),
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--port", "0", "--config"])
        .env("HERALD_DATA_DIR", support::scratch_data_dir())
        .arg(&config)
        .output()
        .expect("run herald");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("admin_tls_cert") && stderr.contains("garbage.pem"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_admin_listener_off_loopback_without_tls_is_warned_about() {
    let server = Server::start_logged(
        &format!("admin_host = \"0.0.0.0\"\nadmin_port = 0\nadmin_token = \"{ADMIN}\"\n"),
        &[],
    );
    let mut log = server.log();
    for _ in 0..100 {
        if log.contains("cleartext") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        log = server.log();
    }
    assert!(
        log.contains("cleartext") && log.contains("admin_tls_cert"),
        "{log}"
    );
    assert!(!log.contains(ADMIN), "no token in the log");
}

#[tokio::test]
async fn the_state_answer_is_bounded_in_time_when_the_cluster_does_not_answer() {
    let redis = support::Redis::start();
    let server = Server::start(&format!(
        "adapter = \"redis\"\nredis_url = \"{}\"\n",
        redis.url()
    ));
    let mut ws = server.connect(KEY).await;
    ws.subscribe("news").await;
    let pid = Pid::from_raw(redis.pid().expect("a redis-server") as i32);
    kill(pid, Signal::SIGSTOP).expect("SIGSTOP");
    let started = std::time::Instant::now();
    let answer = reqwest::Client::new()
        .get(format!("http://{}/console/api/state", server.admin))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    let elapsed = started.elapsed();
    kill(pid, Signal::SIGCONT).expect("SIGCONT");
    let state: Value = answer.expect("an answer").json().await.expect("JSON");
    assert!(elapsed < Duration::from_millis(2500), "{elapsed:?}");
    assert_eq!(state["truncated"], true, "{state}");
    let why = state["truncated_by"].as_str().expect("text");
    assert!(
        why.starts_with("time") || why.starts_with("backend"),
        "{why}"
    );
}
