//! Shared test support: start the real `herald` binary on a free port, talk WebSocket at
//! the frame level, and send signed HTTP API requests.
#![allow(dead_code)] // Each test file uses a different part of this module.
pub mod db;
pub mod history;
pub mod nodes;
pub mod pki;
pub mod receiver;
pub mod wait;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const KEY: &str = "app-key";
pub const SECRET: &str = "app-secret";

/// Config lines lifting the per-connection frame budget, for tests of the bounds behind it
/// (a flood the budget would otherwise spread over minutes).
pub const UNTHROTTLED: &str =
    "client_frames_per_second = 10000000\nclient_bytes_per_second = 1073741824\n";

/// A running `herald serve`; killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: String,
    /// The admin listener's address (`/metrics`, `/live`, `/ready`).
    pub admin: String,
    /// The config file it was started with (rewrite it and reload to change it).
    pub config: std::path::PathBuf,
    /// Where its stderr goes, for tests that read its logs.
    log: Option<std::path::PathBuf>,
    /// Its own data directory (the webhook queue), removed when dropped; a test that
    /// restarts a node on the same queue passes `HERALD_DATA_DIR` itself.
    data_dir: std::path::PathBuf,
}

impl Server {
    pub fn start(config: &str) -> Server {
        Server::launch(config, &[], &["--port", "0"], false)
    }

    /// Starts with extra environment variables, keeping the server's stderr (its logs)
    /// for [`Server::log`].
    pub fn start_logged(config: &str, env: &[(&str, &str)]) -> Server {
        Server::launch(config, env, &["--port", "0"], true)
    }

    /// [`Server::start_logged`] with extra `herald serve` arguments.
    pub fn start_logged_with_args(config: &str, args: &[&str]) -> Server {
        let args: Vec<&str> = ["--port", "0"].iter().chain(args).copied().collect();
        Server::launch(config, &[], &args, true)
    }

    /// [`Server::start_logged`] on the port the config file names (no `--port`).
    pub fn start_logged_on_its_port(config: &str) -> Server {
        Server::launch(config, &[], &[], true)
    }

    fn launch(config: &str, env: &[(&str, &str)], args: &[&str], keep_log: bool) -> Server {
        let stem = format!("herald-test-{}-{}", std::process::id(), rand_suffix());
        let path = std::env::temp_dir().join(format!("{stem}.toml"));
        std::fs::write(&path, config).expect("write config");
        let log = keep_log.then(|| std::env::temp_dir().join(format!("{stem}.log")));
        let data_dir = std::env::temp_dir().join(format!("{stem}.data"));
        let stderr = match &log {
            Some(log) => Stdio::from(std::fs::File::create(log).expect("create log")),
            // HERALD_TEST_LOG=1 (with RUST_LOG) shows the server's logs when debugging a test.
            None if std::env::var_os("HERALD_TEST_LOG").is_some() => Stdio::inherit(),
            None => Stdio::null(),
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["serve", "--config"])
            .arg(&path)
            .args(args)
            .env("HERALD_DATA_DIR", &data_dir)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start herald");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("herald exited before listening")
                .expect("read stdout");
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest.trim().to_owned();
            }
        };
        // The admin line ends the banner, which is printed at once.
        let admin = loop {
            let line = lines
                .next()
                .expect("herald exited before its admin line")
                .expect("read stdout");
            if let Some(rest) = line.strip_prefix("admin listening on ") {
                break rest.trim().to_owned();
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            addr,
            admin,
            config: path,
            log,
            data_dir,
        }
    }

    /// What the server has logged so far (only for [`Server::start_logged`]).
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .unwrap_or_default()
    }

    pub fn http(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    pub async fn connect(&self, key: &str) -> Ws {
        let (ws, established) = self
            .connect_raw(&format!("/app/{key}?protocol=7&client=js&version=8.6.0"))
            .await;
        Ws::established(ws, established)
    }

    /// Connects to any path; returns the stream and its first text frame, if any.
    pub async fn connect_raw(&self, path: &str) -> (WsStream, Option<Value>) {
        let url = format!("ws://{}{}", self.addr, path);
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("upgrade");
        let first = next_json(&mut ws).await;
        (ws, first)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM, as a service manager stops a node, and waits up to `deadline` for the
    /// process to exit: its exit status (`None` if it still runs at the deadline; drop then
    /// kills it) and the time from the signal. Polls, so the test's own tasks (a webhook
    /// sink) keep running meanwhile.
    pub async fn terminate(
        &mut self,
        deadline: Duration,
    ) -> (Option<std::process::ExitStatus>, Duration) {
        let started = std::time::Instant::now();
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        while started.elapsed() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait for herald") {
                return (Some(status), started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (None, started.elapsed())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

fn rand_suffix() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The next text frame as JSON, skipping pings and pongs; `None` after 5 s or at the end.
pub async fn next_json(ws: &mut WsStream) -> Option<Value> {
    next_json_within(ws, Duration::from_secs(5)).await
}

/// The next text frame as JSON, skipping pings and pongs; `None` after `within` or at the
/// end.
pub async fn next_json_within(ws: &mut WsStream, within: Duration) -> Option<Value> {
    loop {
        match tokio::time::timeout(within, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                return Some(serde_json::from_str(t.as_str()).expect("server frames are JSON"))
            }
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            _ => return None,
        }
    }
}

/// A connected client speaking raw protocol frames.
pub struct Ws {
    pub ws: WsStream,
    pub socket_id: String,
    pub activity_timeout: u64,
}

impl Ws {
    /// The client of a socket whose first frame was `established`, which must be
    /// `pusher:connection_established`.
    pub fn established(ws: WsStream, established: Option<Value>) -> Ws {
        let established = established.expect("a first frame");
        assert_eq!(
            established["event"], "pusher:connection_established",
            "{established}"
        );
        let data: Value = serde_json::from_str(established["data"].as_str().expect("string data"))
            .expect("data is JSON text");
        Ws {
            socket_id: data["socket_id"].as_str().expect("socket_id").to_owned(),
            activity_timeout: data["activity_timeout"].as_u64().expect("activity_timeout"),
            ws,
        }
    }

    pub async fn send(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    pub async fn send_message(&mut self, message: Message) {
        self.ws.send(message).await.expect("send");
    }

    /// The next text frame as JSON; fails the test after 5 s.
    pub async fn next(&mut self) -> Value {
        next_json(&mut self.ws).await.expect("a frame within 5 s")
    }

    /// The next text frame as JSON; fails the test after `within`.
    pub async fn next_within(&mut self, within: Duration) -> Value {
        next_json_within(&mut self.ws, within)
            .await
            .unwrap_or_else(|| panic!("no frame within {within:?}"))
    }

    /// The next frame, which must be the named event.
    pub async fn expect(&mut self, event: &str) -> Value {
        let frame = self.next().await;
        assert_eq!(frame["event"], event, "expected {event}, got {frame}");
        frame
    }

    /// Asserts no text frame arrives within `ms`.
    pub async fn expect_silence(&mut self, ms: u64) {
        if let Ok(Some(Ok(Message::Text(t)))) =
            tokio::time::timeout(Duration::from_millis(ms), self.ws.next()).await
        {
            panic!("expected silence, got {t}");
        }
    }

    /// Reads until the close frame; returns its code.
    pub async fn expect_close(&mut self) -> u16 {
        expect_close(&mut self.ws).await
    }

    pub async fn subscribe(&mut self, channel: &str) -> Value {
        self.send(
            serde_json::json!({"event":"pusher:subscribe","data":{"channel":channel,"auth":""}}),
        )
        .await;
        self.next().await
    }

    pub async fn subscribe_private(&mut self, channel: &str, channel_data: Option<&str>) -> Value {
        let auth = herald_protocol::auth::channel_auth(
            KEY,
            SECRET,
            &self.socket_id,
            channel,
            channel_data,
        );
        let mut data = serde_json::json!({"channel": channel, "auth": auth});
        if let Some(cd) = channel_data {
            data["channel_data"] = cd.into();
        }
        self.send(serde_json::json!({"event":"pusher:subscribe","data":data}))
            .await;
        self.next().await
    }

    /// Round-trips a ping to prove the socket still works.
    pub async fn assert_alive(&mut self) {
        self.send(serde_json::json!({"event":"pusher:ping","data":{}}))
            .await;
        self.expect("pusher:pong").await;
    }
}

pub async fn expect_close(ws: &mut WsStream) -> u16 {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => return u16::from(frame.code),
            Ok(Some(Ok(Message::Close(None)))) => return u16::from(CloseCode::Status),
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Signs and sends an HTTP API request for app 1; returns status and JSON body.
pub async fn signed(
    server: &Server,
    method: &str,
    path: &str,
    params: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, Value) {
    signed_as(server, method, path, params, body, KEY, SECRET, now()).await
}

#[allow(clippy::too_many_arguments)] // A test helper mirroring every input of a signature.
pub async fn signed_as(
    server: &Server,
    method: &str,
    path: &str,
    params: &[(&str, &str)],
    body: Option<&str>,
    key: &str,
    secret: &str,
    timestamp: i64,
) -> (u16, Value) {
    let query = herald_protocol::signing::signed_query_string(
        method,
        path,
        key,
        secret,
        timestamp,
        body.map(str::as_bytes),
        params,
    );
    send_raw(server, method, &format!("{path}?{query}"), body).await
}

pub async fn send_raw(
    server: &Server,
    method: &str,
    path_and_query: &str,
    body: Option<&str>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let url = server.http(path_and_query);
    let request = match method {
        "POST" => client
            .post(url)
            .header("content-type", "application/json")
            .body(body.unwrap_or("").to_owned()),
        _ => client.get(url),
    };
    let response = request.send().await.expect("HTTP request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("body is not JSON: {text:?}"));
    (status, json)
}

/// Reads until the server closes; returns what it sent and when it closed. Fails the test
/// if the socket is still open after `limit`.
pub async fn until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, Duration) {
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + limit).into(), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, started.elapsed()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "still open after {limit:?}; got {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
}

/// The status code of a raw HTTP response.
pub fn status_of(response: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(response);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"))
}

/// The head of a `POST` to `path` for app 1, signed with `secret` over `body`.
pub fn signed_post(path: &str, body: &[u8], secret: &str) -> String {
    let query = herald_protocol::signing::signed_query_string(
        "POST",
        path,
        KEY,
        secret,
        now(),
        Some(body),
        &[],
    );
    format!(
        "POST {path}?{query} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
}

/// A throwaway `redis-server` on a free loopback port (the workspace's fixture).
#[allow(unused_imports)] // As the rest of this module: not every test file starts a Redis.
pub use redis_fixture::RedisServer as Redis;

/// Asserts that a normal pusher-js client is served: it connects, subscribes and receives
/// an event the official Node library triggers (tests/js/probe.mjs), with app 1's default
/// credentials.
pub fn assert_pusher_js_served(server: &Server) {
    assert_pusher_js_served_as(server, "1", KEY, SECRET);
}

/// [`assert_pusher_js_served`] with another app's credentials.
pub fn assert_pusher_js_served_as(server: &Server, app_id: &str, key: &str, secret: &str) {
    assert_pusher_js_served_with(server, &[app_id, key, secret], &[]);
}

/// [`assert_pusher_js_served`] with the probe's arguments after the address (app id, key,
/// secret) and environment (`PROBE_TLS=1` with `NODE_EXTRA_CA_CERTS`: over TLS).
pub fn assert_pusher_js_served_with(server: &Server, args: &[&str], env: &[(&str, &str)]) {
    let output = node_script("probe.mjs", server, args, env);
    assert!(
        output.status.success(),
        "pusher-js was not served after the test: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The official Node library triggering an event of `mebibytes` MiB on app 1 (over
/// max_request_body_bytes), sent the way it always sends (tests/js/oversized_body.mjs):
/// what it reports, `{"status": …, "body": …, "error": …}`. Fails the test if the process
/// fails (an unhandled EPIPE ends it). `env` as for [`assert_pusher_js_served_with`].
pub fn oversized_body(server: &Server, mebibytes: u32, env: &[(&str, &str)]) -> Value {
    let output = node_script("oversized_body.mjs", server, &[&mebibytes.to_string()], env);
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{shown}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|_| panic!("{shown}"))
}

/// Runs `node SCRIPT ADDRESS ARGS…` in tests/js, where the official clients are installed.
fn node_script(
    script: &str,
    server: &Server,
    args: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/js");
    assert!(
        dir.join("node_modules/pusher-js").is_dir() && dir.join("node_modules/pusher").is_dir(),
        "the official clients are not installed: run `npm ci --prefix tests/js` first"
    );
    Command::new("node")
        .arg(script)
        .arg(&server.addr)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run node (Node.js 20.14+ is required): {e}"))
}

/// The mask every hand-built client frame uses; any mask will do, a fixed one keeps the
/// bytes readable in a failure.
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A client frame, masked as RFC 6455 requires, with any opcode and FIN bit.
pub fn masked(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    herald_protocol::websocket::encode_masked(fin, opcode, payload, MASK)
}

/// A masked text frame.
pub fn text(payload: &str) -> Vec<u8> {
    masked(true, 0x1, payload.as_bytes())
}

/// A masked close frame with `code` and `reason`.
pub fn close_frame(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    masked(true, 0x8, &payload)
}

/// A masked `pusher:ping`: a data frame the server answers with a `pusher:pong`.
pub fn pusher_ping() -> Vec<u8> {
    text(r#"{"event":"pusher:ping","data":{}}"#)
}

/// A frame from the server, as it came off the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    /// The first header byte: FIN, RSV and opcode.
    pub b0: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn opcode(&self) -> u8 {
        self.b0 & 0x0f
    }

    /// The close code, if this is a close frame that carries one.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode() == 0x8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    /// The payload of a text frame as JSON.
    pub fn json(&self) -> Value {
        assert_eq!(self.opcode(), 0x1, "not a text frame: {self:?}");
        serde_json::from_slice(&self.payload).expect("server text is JSON")
    }

    /// The frame's bytes as they were sent (server frames are never masked).
    pub fn wire(&self) -> Vec<u8> {
        let mut out = vec![self.b0];
        let len = self.payload.len();
        if len < 126 {
            out.push(len as u8);
        } else if len <= 65535 {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&self.payload);
        out
    }
}

/// Short, so that a failure shows a big event as its first bytes rather than all of them.
impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = &self.payload[..self.payload.len().min(48)];
        write!(
            f,
            "Frame({:#04x}, {} bytes: {:?}{})",
            self.b0,
            self.payload.len(),
            String::from_utf8_lossy(shown),
            if shown.len() < self.payload.len() {
                "…"
            } else {
                ""
            }
        )
    }
}

/// Takes one complete server frame off the front of `buf`, if it holds one.
pub fn parse_frame(buf: &mut Vec<u8>) -> Option<Frame> {
    if buf.len() < 2 {
        return None;
    }
    assert_eq!(buf[1] & 0x80, 0, "server frames must not be masked");
    let (len, start) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b) as usize, 10)
        }
        126 | 127 => return None,
        n => (usize::from(n), 2),
    };
    if buf.len() < start + len {
        return None;
    }
    let frame = Frame {
        b0: buf[0],
        payload: buf[start..start + len].to_vec(),
    };
    buf.drain(..start + len);
    Some(frame)
}

/// An HTTP response to a hand-written request: status, head, and whatever body came.
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// A header's value (the first one with that name, case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "body is not JSON: {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Sends `request` (a complete HTTP request head, CRLF line ends) on a new connection and
/// reads the response head plus the body bytes that arrive within a moment; returns the
/// socket too, positioned after them.
pub async fn raw_request(addr: &str, request: &str) -> (RawResponse, TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send request");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("a response within 5 s")
            .expect("read response");
        assert!(n > 0, "connection closed before a response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut body = buf[head_end..].to_vec();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let length = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    });
    if status != 101 {
        while body.len() < length.unwrap_or(0) {
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
                .await
                .expect("the body within 5 s")
                .expect("read body");
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    (RawResponse { status, head, body }, stream)
}

/// An opening handshake for `path` with a valid key, as a complete request head.
pub fn upgrade_request(addr: &str, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// A WebSocket client built from a raw TCP socket, sending hand-built frames and reading
/// the server's frames byte for byte.
pub struct RawWs {
    pub stream: TcpStream,
    /// Bytes read and not yet parsed into frames.
    pub buf: Vec<u8>,
}

impl RawWs {
    /// Upgrades `path` on a fresh socket; with `recv_buffer`, the socket's receive buffer is
    /// made that small first, so a client that stops reading backs the server up quickly.
    pub async fn open(server: &Server, path: &str, recv_buffer: Option<u32>) -> RawWs {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr: std::net::SocketAddr = server.addr.parse().expect("server address");
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
        }
        let mut stream = socket.connect(addr).await.expect("connect");
        // Frames go out as they are sent: Nagle would hold a small one back until the last is
        // acknowledged, which a server with a backed-up socket may delay by 40 ms.
        stream.set_nodelay(true).expect("TCP_NODELAY");
        stream
            .write_all(upgrade_request(&server.addr, path).as_bytes())
            .await
            .expect("send upgrade");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let n = stream.read(&mut chunk).await.expect("read upgrade");
            assert!(n > 0, "closed during the upgrade");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
        buf.drain(..head_end);
        RawWs { stream, buf }
    }

    /// Opens `/app/KEY` and reads `pusher:connection_established`.
    pub async fn connect(server: &Server) -> RawWs {
        let mut ws = RawWs::open(server, &format!("/app/{KEY}?protocol=7"), None).await;
        let first = ws.frame().await;
        assert_eq!(first.json()["event"], "pusher:connection_established");
        ws
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await.expect("send");
    }

    /// The next frame, `Ok(None)` at EOF; an error (a reset, or EOF inside a frame) is
    /// returned as is.
    pub async fn next_frame(&mut self) -> std::io::Result<Option<Frame>> {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 16384];
        loop {
            if let Some(frame) = parse_frame(&mut self.buf) {
                return Ok(Some(frame));
            }
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                if !self.buf.is_empty() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("EOF inside a frame, {} bytes into it", self.buf.len()),
                    ));
                }
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next frame; fails the test after 5 s, at EOF or on an error.
    pub async fn frame(&mut self) -> Frame {
        match tokio::time::timeout(Duration::from_secs(5), self.next_frame()).await {
            Ok(Ok(Some(frame))) => frame,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// Reads past other frames to the close frame and returns it.
    pub async fn expect_close(&mut self) -> Frame {
        loop {
            let frame = self.frame().await;
            if frame.opcode() == 0x8 {
                return frame;
            }
        }
    }

    /// Asserts the server ends the connection cleanly now: EOF, not a reset, and no frame.
    pub async fn expect_eof(&mut self) {
        match tokio::time::timeout(Duration::from_secs(5), self.next_frame()).await {
            Ok(Ok(None)) => {}
            other => panic!("expected EOF, got {other:?}"),
        }
    }
}

/// Keeps sending `filler` every few milliseconds from another task, as a client does that has
/// not seen the server's close yet; runs `before_reading` without reading, then reads every
/// frame up to EOF, and sends on for 100 ms more. Returns the frames, how reading ended
/// (`Ok` for EOF, the error for a reset) and how sending ended (the first send error).
pub async fn read_to_eof_while_sending(
    ws: RawWs,
    filler: Vec<u8>,
    before_reading: impl std::future::Future<Output = ()>,
) -> (Vec<Frame>, std::io::Result<()>, std::io::Result<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let RawWs { stream, mut buf } = ws;
    let (mut reader, mut writer) = stream.into_split();
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let sending = tokio::spawn(async move {
        loop {
            writer.write_all(&filler).await?;
            tokio::select! {
                _ = &mut stopped => break,
                () = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
        }
        // Our side ends only now, so the server saw data after its close until here.
        writer.shutdown().await
    });
    before_reading.await;
    let mut frames = Vec::new();
    let mut chunk = [0u8; 16384];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let ended = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server did not close within 10 s; frames so far: {}",
            frames.len()
        );
        while let Some(frame) = parse_frame(&mut buf) {
            frames.push(frame);
        }
        match tokio::time::timeout(Duration::from_secs(5), reader.read(&mut chunk)).await {
            Ok(Ok(0)) => break Ok(()),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => break Err(e),
            Err(_) => panic!("no EOF within 5 s; frames so far: {}", frames.len()),
        }
    };
    // Still sending a moment after the EOF: a server that dropped its socket instead of
    // reading on has answered with a reset by now, and these sends fail.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = stop.send(());
    let sent = sending.await.expect("sender");
    (frames, ended, sent)
}

/// A process's memory figure from /proc/PID/status in KiB: `VmRSS` (resident now) or
/// `VmHWM` (the peak).
pub fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// A webhook receiver on a free port: answers every POST with `status` after `delay`,
/// counts requests and the most in flight at once, and keeps the bodies.
pub struct Sink {
    pub url: String,
    pub requests: Arc<AtomicUsize>,
    pub peak: Arc<AtomicUsize>,
    pub bodies: Arc<Mutex<Vec<Value>>>,
}

pub async fn sink(status: &'static str, delay: Duration, extra_headers: String) -> Sink {
    sink_answering(vec![status], delay, extra_headers).await
}

/// [`sink`] answering its n-th request with `statuses[n]`, and the last status after them.
pub async fn sink_answering(
    statuses: Vec<&'static str>,
    delay: Duration,
    extra_headers: String,
) -> Sink {
    let statuses = Arc::new(statuses);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let requests = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let (r, p, b) = (requests.clone(), peak.clone(), bodies.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (r, p, b, f) = (r.clone(), p.clone(), b.clone(), in_flight.clone());
            let statuses = statuses.clone();
            let extra = extra_headers.clone();
            tokio::spawn(async move {
                let mut data = Vec::new();
                let mut buf = [0u8; 8192];
                loop {
                    let Ok(n) = stream.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    data.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&data).to_string();
                    let Some((head, body)) = text.split_once("\r\n\r\n") else {
                        continue;
                    };
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().to_owned())
                        })
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    if body.len() < len {
                        continue;
                    }
                    let nth = r.fetch_add(1, Ordering::SeqCst);
                    let status = statuses[nth.min(statuses.len() - 1)];
                    let now = f.fetch_add(1, Ordering::SeqCst) + 1;
                    p.fetch_max(now, Ordering::SeqCst);
                    if let Ok(v) = serde_json::from_str(&body[..len]) {
                        b.lock().expect("lock").push(v);
                    }
                    tokio::time::sleep(delay).await;
                    f.fetch_sub(1, Ordering::SeqCst);
                    let answer = format!(
                        "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n{extra}\r\n"
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                    return;
                }
            });
        }
    });
    Sink {
        url,
        requests,
        peak,
        bodies,
    }
}

pub fn events_named(bodies: &Mutex<Vec<Value>>, name: &str) -> usize {
    bodies
        .lock()
        .expect("lock")
        .iter()
        .flat_map(|b| b["events"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["name"] == name)
        .count()
}

/// A fresh directory for a node's webhook queue (`HERALD_DATA_DIR`): nodes started side by
/// side may not share one (a node locks its own), and a test's nodes must not write into
/// the source tree (the default `./herald-data`).
pub fn scratch_data_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "herald-test-{}-{}.data",
        std::process::id(),
        rand_suffix()
    ))
}
