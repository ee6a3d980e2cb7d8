//! A raw keep-alive HTTP/1.1 client for the signed API: the cheapest way to publish at
//! high rates without the harness becoming the bottleneck.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use herald_protocol::api::{BatchBody, BatchItem, RawJson, TriggerBody};
use serde_json::value::RawValue;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::negotiate::{Deflate, Tally};
use crate::scan::find;
use crate::stream::{Dialer, Stream};

/// The credentials and address of the app under test, and how to connect to it.
#[derive(Clone)]
pub struct App {
    pub addr: SocketAddr,
    pub id: String,
    pub key: String,
    pub secret: String,
    pub dialer: Dialer,
    /// Whether WebSocket clients offer permessage-deflate.
    pub deflate: Deflate,
    /// What the clients' handshakes negotiated, over the whole run.
    pub tally: Arc<Tally>,
}

impl App {
    /// A complete signed `POST /apps/{id}/events` request for `body`.
    pub fn signed_post(&self, body: &str) -> Vec<u8> {
        self.signed_post_to(&format!("/apps/{}/events", self.id), body)
    }

    /// A complete signed `POST` of `body` to `path`, as a Pusher server library sends it.
    pub fn signed_post_to(&self, path: &str, body: &str) -> Vec<u8> {
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let query = herald_protocol::signing::signed_query_string(
            "POST",
            path,
            &self.key,
            &self.secret,
            ts,
            Some(body.as_bytes()),
            &[],
        );
        format!(
            "POST {path}?{query} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .into_bytes()
    }
}

/// The `data` token of an event whose subscribers receive `text`.
pub fn data_token(text: &str) -> Box<RawValue> {
    // A string always serialises; the fallback is never taken.
    serde_json::value::to_raw_value(text).unwrap_or_else(|_| empty_token())
}

/// The `data` token of an event whose text is `escaped`, already escaped for a JSON string
/// (the payload generator's form, made to be written into bodies as they are).
pub fn escaped_token(escaped: &str) -> Box<RawValue> {
    RawValue::from_string(format!("\"{escaped}\"")).unwrap_or_else(|_| empty_token())
}

fn empty_token() -> Box<RawValue> {
    RawValue::from_string("\"\"".to_owned()).unwrap_or_default()
}

/// The body of a trigger of event `name` on `channel`.
pub fn trigger_body(name: &str, channel: &str, data: &RawValue) -> String {
    let mut body = TriggerBody::default();
    body.name = Some(Cow::Borrowed(name));
    body.channel = Some(Cow::Borrowed(channel));
    body.data = Some(RawJson(data));
    serde_json::to_string(&body).unwrap_or_default()
}

/// The body of a batch trigger of event `name`, one item per `(channel, data)`.
pub fn batch_body<'a>(
    name: &str,
    events: impl IntoIterator<Item = (&'a str, &'a RawValue)>,
) -> String {
    let items = events
        .into_iter()
        .map(|(channel, data)| {
            let mut item = BatchItem::default();
            item.channel = Some(Cow::Borrowed(channel));
            item.name = Some(Cow::Borrowed(name));
            item.data = Some(RawJson(data));
            item
        })
        .collect();
    let mut body = BatchBody::default();
    body.batch = Some(items);
    serde_json::to_string(&body).unwrap_or_default()
}

/// One keep-alive connection.
pub struct Conn {
    addr: SocketAddr,
    dialer: Dialer,
    stream: Stream,
    buf: Vec<u8>,
}

impl Conn {
    pub async fn open(addr: SocketAddr, dialer: &Dialer) -> std::io::Result<Conn> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        Ok(Conn {
            addr,
            dialer: dialer.clone(),
            stream: dialer.wrap(tcp).await?,
            buf: Vec::with_capacity(1024),
        })
    }

    /// Sends a prepared request and returns the response status.
    pub async fn send(&mut self, request: &[u8]) -> std::io::Result<u16> {
        self.stream.write_all(request).await?;
        // TLS: the last records may still be in the session, not the socket.
        self.stream.flush().await?;
        loop {
            if let Some(head_end) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..head_end]).to_ascii_lowercase();
                let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                let close = head.lines().any(|l| l.trim() == "connection: close");
                let total = head_end + 4 + length;
                while self.buf.len() < total {
                    self.fill().await?;
                }
                self.buf.drain(..total);
                if close {
                    // Servers that do not keep API connections alive (sockudo, for one)
                    // cost a new connection per request, as they would for any client.
                    *self = Conn::open(self.addr, &self.dialer).await?;
                }
                return Ok(status);
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}
