//! Shared test support: start the real `herald` binary on a free port, talk WebSocket at
//! the frame level, and send signed HTTP API requests.
#![allow(dead_code)] // Each test file uses a different part of this module.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const KEY: &str = "app-key";
pub const SECRET: &str = "app-secret";

/// A running `herald serve`; killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: String,
    /// Where its stderr goes, for tests that read its logs.
    log: Option<std::path::PathBuf>,
}

impl Server {
    pub fn start(config: &str) -> Server {
        Server::launch(config, &[], false)
    }

    /// Starts with extra environment variables, keeping the server's stderr (its logs)
    /// for [`Server::log`].
    pub fn start_logged(config: &str, env: &[(&str, &str)]) -> Server {
        Server::launch(config, env, true)
    }

    fn launch(config: &str, env: &[(&str, &str)], keep_log: bool) -> Server {
        let stem = format!("herald-test-{}-{}", std::process::id(), rand_suffix());
        let path = std::env::temp_dir().join(format!("{stem}.toml"));
        std::fs::write(&path, config).expect("write config");
        let log = keep_log.then(|| std::env::temp_dir().join(format!("{stem}.log")));
        let stderr = match &log {
            Some(log) => Stdio::from(std::fs::File::create(log).expect("create log")),
            // HERALD_TEST_LOG=1 (with RUST_LOG) shows the server's logs when debugging a test.
            None if std::env::var_os("HERALD_TEST_LOG").is_some() => Stdio::inherit(),
            None => Stdio::null(),
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["serve", "--port", "0", "--config"])
            .arg(&path)
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
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child, addr, log }
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
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rand_suffix() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn next_json(ws: &mut WsStream) -> Option<Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
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

/// A throwaway `redis-server` on a free loopback port, keeping nothing on disk; killed
/// when dropped.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    password: Option<String>,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_inner(None)
    }

    /// A server that requires `password` (`requirepass`).
    pub fn start_with_password(password: &str) -> Redis {
        Redis::start_inner(Some(password.to_owned()))
    }

    fn start_inner(password: Option<String>) -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut redis = Redis {
            child: None,
            port,
            password,
        };
        redis.launch();
        redis
    }

    fn launch(&mut self) {
        let mut command = Command::new("redis-server");
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        let child = command
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (is it installed? see the README)");
        self.child = Some(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    /// Kills the server (its data is gone: it keeps nothing on disk).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open and nothing is answered, as
    /// with a Redis that is overloaded or partitioned away.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server run again (SIGCONT), its data intact.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status()
                .expect("run kill");
            assert!(status.success(), "kill {signal} redis-server");
        }
    }

    /// Starts an empty server again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Asserts that a normal pusher-js client is served: it connects, subscribes and receives
/// an event the official Node library triggers (tests/js/probe.mjs), with app 1's default
/// credentials.
pub fn assert_pusher_js_served(server: &Server) {
    assert_pusher_js_served_as(server, "1", KEY, SECRET);
}

/// [`assert_pusher_js_served`] with another app's credentials.
pub fn assert_pusher_js_served_as(server: &Server, app_id: &str, key: &str, secret: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/js");
    assert!(
        dir.join("node_modules/pusher-js").is_dir(),
        "the official clients are not installed: run `npm ci --prefix tests/js` first"
    );
    let output = Command::new("node")
        .arg("probe.mjs")
        .args([server.addr.as_str(), app_id, key, secret])
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run node (Node.js 20.14+ is required): {e}"));
    assert!(
        output.status.success(),
        "pusher-js was not served after the test: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
