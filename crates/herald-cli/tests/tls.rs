//! TLS on the public port, against the real binary: pusher-js and the Node library over
//! wss:// and https://, the SDK and the CLI trusting a private CA, the handshake under the
//! header deadline, plain HTTP sent to the TLS port, the connection caps, the certificate
//! reloaded on SIGHUP, bad files at start-up, and WebSocket close codes over TLS.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use support::pki::{Leaf, Pki};
use support::{Server, Ws, WsStream, KEY, SECRET};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

impl Pki {
    /// Writes `leaf` to cert.pem and key.pem; returns the config lines that serve them.
    fn serve(&self, leaf: &Leaf) -> String {
        let cert = self.write("cert.pem", &leaf.cert);
        let key = self.write("key.pem", &leaf.key);
        tls_lines(&cert, &key)
    }

    /// A rustls client that trusts this CA only.
    fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(cert.expect("CA PEM")).expect("CA");
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        Arc::new(config)
    }

    fn sdk(&self, server: &Server) -> herald_sdk::Client {
        herald_sdk::Client::builder_from_url(&https_url(server))
            .expect("URL")
            .root_certificate_pem(&self.ca_pem)
            .build()
            .expect("client")
    }
}

/// A server with `config` and a certificate named `name`.
fn start(pki: &Pki, config: &str, name: &str) -> Server {
    Server::start(&format!("{config}\n{}", pki.serve(&pki.leaf(name))))
}

fn tls_lines(cert: &Path, key: &Path) -> String {
    format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert.display(),
        key.display()
    )
}

fn https_url(server: &Server) -> String {
    format!("https://{KEY}:{SECRET}@{}/apps/1", server.addr)
}

async fn tls_connect(
    addr: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("127.0.0.1").expect("server name");
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// The certificate a new TLS connection is shown.
async fn served_certificate(server: &Server, pki: &Pki) -> Vec<u8> {
    let stream = tls_connect(&server.addr, pki.client_config())
        .await
        .expect("handshake");
    let certs = stream.get_ref().1.peer_certificates().expect("a chain");
    certs[0].to_vec()
}

/// A wss:// connection to `path`, and its first text frame.
async fn connect_wss(
    server: &Server,
    pki: &Pki,
    path: &str,
) -> (WsStream, Option<serde_json::Value>) {
    let url = format!("wss://{}{path}", server.addr);
    let connector = tokio_tungstenite::Connector::Rustls(pki.client_config());
    let (mut ws, _) =
        tokio_tungstenite::connect_async_tls_with_config(url, None, false, Some(connector))
            .await
            .expect("wss upgrade");
    let first = support::next_json(&mut ws).await;
    (ws, first)
}

async fn wss(server: &Server, pki: &Pki) -> Ws {
    let (ws, first) = connect_wss(
        server,
        pki,
        &format!("/app/{KEY}?protocol=7&client=js&version=8.6.0"),
    )
    .await;
    Ws::established(ws, first)
}

/// pusher-js over wss:// receives an event the Node library triggers over https://, both
/// trusting the CA through NODE_EXTRA_CA_CERTS.
fn assert_pusher_js_served_over_tls(server: &Server, pki: &Pki) {
    let ca = pki.ca_path();
    support::assert_pusher_js_served_with(
        server,
        &["1", KEY, SECRET],
        &[
            ("PROBE_TLS", "1"),
            ("NODE_EXTRA_CA_CERTS", ca.to_str().expect("UTF-8 path")),
        ],
    );
}

/// The official Node library, over https://, reads the 413 of a 20 MB body it sends in
/// full: the server drains the rest before it closes (over TLS too).
#[test]
fn the_node_library_reads_the_413_of_a_20_mb_body_over_tls() {
    let pki = Pki::new("oversized");
    let server = start(&pki, "", "oversized");
    let ca = pki.ca_path();
    let env = [
        ("PROBE_TLS", "1"),
        ("NODE_EXTRA_CA_CERTS", ca.to_str().expect("UTF-8 path")),
    ];
    let line = support::oversized_body(&server, 20, &env);
    assert_eq!(line["status"], 413, "{line}");
}

fn herald(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .env_remove("PUSHER_URL")
        .env_remove("HERALD_CA_CERT")
        .envs(env.iter().copied())
        .output()
        .expect("run herald")
}

#[test]
fn pusher_js_and_the_node_library_over_wss_and_https() {
    let pki = Pki::new("node");
    let server = start(&pki, "", "node");
    assert_pusher_js_served_over_tls(&server, &pki);
}

#[tokio::test]
async fn the_sdk_and_the_cli_trust_a_private_ca() {
    let pki = Pki::new("sdk");
    let server = start(&pki, "", "sdk");
    let mut ws = wss(&server, &pki).await;
    ws.subscribe("tls-sdk").await;

    // An event of 90 KB: several TLS records each way.
    let client = pki.sdk(&server);
    let big = "x".repeat(90_000);
    client
        .trigger(
            &["tls-sdk"],
            "big",
            herald_sdk::EventData::Text(big.clone()),
        )
        .await
        .expect("trigger over https");
    let event = ws.expect("big").await;
    assert_eq!(event["data"].as_str().map(str::len), Some(big.len()));
    let channels = client.channels(None, &[]).await.expect("channels");
    assert!(channels.contains_key("tls-sdk"), "{channels:?}");

    // Without the CA the server's certificate is refused.
    let untrusting = herald_sdk::Client::from_url(&https_url(&server)).expect("client");
    let refused = untrusting.trigger(&["tls-sdk"], "no", "x").await;
    assert!(
        matches!(refused, Err(herald_sdk::Error::Network { .. })),
        "{refused:?}"
    );

    let url = https_url(&server);
    let ca = pki.ca_path();
    let ca = ca.to_str().expect("UTF-8 path");
    let out = herald(
        &[
            "--url",
            &url,
            "--ca-cert",
            ca,
            "trigger",
            "-c",
            "tls-sdk",
            "-e",
            "cli",
            "-d",
            "hi",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ws.expect("cli").await["data"], "hi");
    let out = herald(
        &["channels", "--json"],
        &[("PUSHER_URL", &url), ("HERALD_CA_CERT", ca)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(listed["channels"].get("tls-sdk").is_some(), "{listed}");

    let out = herald(&["--url", &url, "channels"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("certificate") && stderr.lines().count() == 1,
        "{stderr}"
    );
    ws.assert_alive().await;
}

#[tokio::test]
async fn plain_http_to_the_tls_port_fails_and_the_server_keeps_serving() {
    let pki = Pki::new("plain");
    let server = start(&pki, "", "plain");
    let mut tcp = TcpStream::connect(&server.addr).await.expect("connect");
    tcp.write_all(b"GET /apps/1/channels HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("send");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer))
        .await
        .expect("the connection is closed");
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP was answered: {:?}",
        String::from_utf8_lossy(&answer)
    );
    let plain = reqwest::get(format!("http://{}/", server.addr)).await;
    assert!(plain.is_err(), "{plain:?}");

    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).expect("CA"))
        .build()
        .expect("client");
    let response = https
        .get(format!("https://{}/", server.addr))
        .send()
        .await
        .expect("https still served");
    assert_eq!(response.status(), 200);
    wss(&server, &pki).await.assert_alive().await;
}

/// The server closes `stream` (EOF or reset), a second or more after `started`.
async fn assert_closed_after_a_second<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    started: Instant,
) {
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("closed within 5 s");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}"
    );
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_or_request_is_closed_at_the_header_deadline() {
    let pki = Pki::new("deadline");
    let server = start(&pki, "http_header_timeout = 1", "deadline");
    // TCP only, no ClientHello.
    let started = Instant::now();
    let mut tcp = TcpStream::connect(&server.addr).await.expect("connect");
    assert_closed_after_a_second(&mut tcp, started).await;
    // A finished handshake and no request: the same deadline, from the connection's start.
    let started = Instant::now();
    let mut tls = tls_connect(&server.addr, pki.client_config())
        .await
        .expect("handshake");
    assert_closed_after_a_second(&mut tls, started).await;
    wss(&server, &pki).await.assert_alive().await;
}

#[tokio::test]
async fn over_the_connection_cap_a_tls_client_is_closed_and_served_again_below_it() {
    let pki = Pki::new("cap");
    let server = start(&pki, "max_connections_per_ip = 1", "cap");
    let mut held = wss(&server, &pki).await;
    let over = tls_connect(&server.addr, pki.client_config()).await;
    assert!(over.is_err(), "a second connection was served");
    held.assert_alive().await;
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    while tls_connect(&server.addr, pki.client_config())
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the cap was not released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn hang_up(server: &Server) {
    let status = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

#[tokio::test]
async fn sighup_serves_a_new_certificate_to_new_connections_only() {
    let pki = Pki::new("reload");
    let first = pki.leaf("first");
    let server = Server::start_logged(&pki.serve(&first), &[]);
    assert_eq!(served_certificate(&server, &pki).await, first.der);
    let mut before = wss(&server, &pki).await;
    before.subscribe("reload").await;

    let second = pki.leaf("second");
    pki.serve(&second);
    hang_up(&server);
    let deadline = Instant::now() + Duration::from_secs(5);
    while served_certificate(&server, &pki).await != second.der {
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The socket opened before the reload still gets events.
    let client = pki.sdk(&server);
    client
        .trigger(&["reload"], "after", "1")
        .await
        .expect("trigger");
    before.expect("after").await;

    // A key that is not the certificate's: the whole reload is refused (the files are
    // checked with the rest of the configuration), logged once naming the file, and the
    // second certificate stays.
    let key = pki.write("key.pem", &pki.leaf("third").key);
    hang_up(&server);
    let deadline = Instant::now() + Duration::from_secs(5);
    let line = loop {
        let log = server.log();
        if let Some(line) = log.lines().find(|l| l.contains("Reload failed")) {
            assert_eq!(log.matches("Reload failed").count(), 1, "{log}");
            break line.to_owned();
        }
        assert!(Instant::now() < deadline, "no log line: {log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(line.contains(&key.display().to_string()), "{line}");
    assert_eq!(served_certificate(&server, &pki).await, second.der);
    client
        .trigger(&["reload"], "still", "2")
        .await
        .expect("trigger");
    before.expect("still").await;
    assert_pusher_js_served_over_tls(&server, &pki);
}

#[test]
fn bad_tls_files_stop_start_up_naming_the_file() {
    let pki = Pki::new("startup");
    let good = pki.leaf("good");
    let cert = pki.write("cert.pem", &good.cert);
    let key = pki.write("key.pem", &good.key);
    let other_key = pki.write("other-key.pem", &pki.leaf("other").key);
    let garbage = pki.write(
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
    );
    let text = pki.write("text.pem", "just some text\n");
    let missing = pki.dir.join("missing.pem");
    let shown = |p: &Path| p.display().to_string();
    for (name, config, env, named) in [
        (
            "missing cert",
            tls_lines(&missing, &key),
            None,
            shown(&missing),
        ),
        (
            "garbage cert",
            tls_lines(&garbage, &key),
            None,
            shown(&garbage),
        ),
        ("text cert", tls_lines(&text, &key), None, shown(&text)),
        ("text key", tls_lines(&cert, &text), None, shown(&text)),
        (
            "mismatched key",
            tls_lines(&cert, &other_key),
            None,
            shown(&other_key),
        ),
        (
            "missing cert from the environment",
            tls_lines(&cert, &key),
            Some(("HERALD_TLS_CERT", shown(&missing))),
            shown(&missing),
        ),
        (
            "no key",
            format!("tls_cert = \"{}\"\n", cert.display()),
            None,
            "tls_key".to_owned(),
        ),
    ] {
        let path = pki.write("herald.toml", &config);
        let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
        command
            .args(["serve", "--port", "0", "--config"])
            .env("HERALD_DATA_DIR", support::scratch_data_dir())
            .arg(&path)
            .env_remove("HERALD_TLS_CERT")
            .env_remove("HERALD_TLS_KEY");
        if let Some((var, value)) = &env {
            command.env(var, value);
        }
        let output = command.output().expect("run herald");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains(&named), "{name}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{name}: one line: {stderr}");
    }
}

#[tokio::test]
async fn close_codes_and_the_lingering_close_work_over_tls() {
    let pki = Pki::new("close");
    let server = start(&pki, "", "close");

    // A refusal: pusher:error and the close frame, both with 4001.
    let (mut ws, first) = connect_wss(&server, &pki, "/app/no-such-key?protocol=7").await;
    let first = first.expect("a pusher:error");
    assert_eq!(first["event"], "pusher:error", "{first}");
    assert_eq!(first["data"]["code"], 4001, "{first}");
    assert_eq!(support::expect_close(&mut ws).await, 4001);

    // Frames of a burst in one write are all answered; the client's Close is echoed with
    // its code, and the stream then ends with a close_notify, not a bare EOF.
    let mut tls = tls_connect(&server.addr, pki.client_config())
        .await
        .expect("handshake");
    let request = format!(
        "GET /app/{KEY}?protocol=7 HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    let mut burst = request.into_bytes();
    for _ in 0..100 {
        burst.extend_from_slice(&support::pusher_ping());
    }
    burst.extend_from_slice(&support::close_frame(3000, b"bye"));
    tls.write_all(&burst).await.expect("send");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let (mut pongs, mut close, mut upgraded) = (0, None, false);
    let clean_end = loop {
        let read = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut chunk))
            .await
            .expect("the server answers and ends the stream within 5 s");
        match read {
            Ok(0) => break true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(error) => {
                assert!(close.is_some(), "failed before the close: {error}");
                break false;
            }
        }
        if !upgraded {
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            assert!(buf.starts_with(b"HTTP/1.1 101"), "{buf:?}");
            buf.drain(..end + 4);
            upgraded = true;
        }
        while let Some(frame) = support::parse_frame(&mut buf) {
            assert!(close.is_none(), "a frame after the Close: {frame:?}");
            match frame.opcode() {
                0x1 if frame.json()["event"] == "pusher:pong" => pongs += 1,
                0x8 => close = frame.close_code(),
                _ => {}
            }
        }
    };
    assert_eq!(pongs, 100);
    assert_eq!(close, Some(3000));
    assert!(clean_end, "the stream ended without a close_notify");
    assert_pusher_js_served_over_tls(&server, &pki);
}
