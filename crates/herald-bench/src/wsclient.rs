//! A minimal WebSocket client for load: connects, completes the handshake, subscribes, and
//! scans server frames without parsing their JSON, so the harness stays cheap per message.
//!
//! With `--deflate` the client offers permessage-deflate (RFC 7692) as browsers do and
//! inflates the compressed frames it gets before they are scanned. It still sends its own
//! frames uncompressed, which the extension allows.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::http::App;
use crate::stream::Stream;

/// Opens a TCP connection from the `i`-th loopback source address, so one machine can
/// exceed the ~28,000 ephemeral ports of a single source address.
/// A `recv_buffer` (bytes) keeps the kernel from absorbing what a stalled reader does not
/// read, so the backlog builds up in the server instead.
pub async fn tcp(
    server: SocketAddr,
    i: usize,
    recv_buffer: Option<u32>,
) -> std::io::Result<TcpStream> {
    let source = Ipv4Addr::new(127, 1 + (i % 200) as u8, ((i / 200) % 250) as u8 + 1, 1);
    let socket = TcpSocket::new_v4()?;
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// What the harness's clients do about permessage-deflate (`--deflate`, `--deflate-optional`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deflate {
    /// No offer: every frame comes uncompressed.
    Off,
    /// Offer it, and fail the connection if the server does not accept.
    Required,
    /// Offer it, and take either answer (the report says which).
    Optional,
}

/// Handshakes completed by the harness's clients, and how many of them negotiated
/// permessage-deflate: the report's `deflate`.
#[derive(Debug, Default)]
pub struct Tally {
    pub handshakes: AtomicU64,
    pub deflated: AtomicU64,
}

/// What every browser and Node's `ws` offer.
const OFFER: &str = "permessage-deflate; client_max_window_bits";

/// The most a compressed frame may inflate to; far above any benchmark event.
const MAX_INFLATED: usize = 16 * 1024 * 1024;

/// What a server answered to the offer, from its `Sec-WebSocket-Extensions` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// No permessage-deflate in the response.
    Declined,
    /// Accepted with `server_no_context_takeover`: each message inflates on its own.
    Independent,
    /// Accepted with the server keeping its compression context between messages.
    ContextTakeover,
}

/// The server's answer to the offer, from a 101 response head.
pub fn answer(head: &[u8]) -> Answer {
    let head = String::from_utf8_lossy(head);
    let mut answer = Answer::Declined;
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("sec-websocket-extensions") {
            continue;
        }
        for extension in value.split(',') {
            let mut params = extension.split(';').map(str::trim);
            if !params
                .next()
                .is_some_and(|n| n.eq_ignore_ascii_case("permessage-deflate"))
            {
                continue;
            }
            answer = if params.any(|p| p.eq_ignore_ascii_case("server_no_context_takeover")) {
                Answer::Independent
            } else {
                Answer::ContextTakeover
            };
        }
    }
    answer
}

/// Whether a connection made with `mode` that got `answer` compresses, or why it cannot go on.
pub fn accept(mode: Deflate, answer: Answer) -> std::io::Result<bool> {
    match answer {
        Answer::Declined if mode == Deflate::Required => Err(std::io::Error::other(
            "server did not negotiate permessage-deflate (--deflate-optional accepts that)",
        )),
        Answer::Declined => Ok(false),
        _ if mode == Deflate::Off => Err(std::io::Error::other(
            "server answered with permessage-deflate, which was not offered",
        )),
        // The harness inflates each message with a fresh inflater, as Herald compresses them
        // (one compressed frame shared by the subscribers); a server that keeps its context
        // would need an inflater per connection, kept for the connection's life.
        Answer::ContextTakeover => Err(std::io::Error::other(
            "server negotiated permessage-deflate with context takeover (no \
             server_no_context_takeover); the harness inflates each message on its own",
        )),
        Answer::Independent => Ok(true),
    }
}

/// A connected, established Pusher WebSocket.
pub struct Client {
    pub stream: Stream,
    /// Bytes read but not yet consumed as frames.
    pub buf: Vec<u8>,
    /// The socket id the server assigned (for private and presence signatures).
    pub socket_id: String,
    /// permessage-deflate was negotiated: frames with RSV1 are inflated.
    pub deflate: bool,
    /// The `activity_timeout` the server announced (seconds), if it did: a client that
    /// sends nothing for longer may be closed (soketi announces 30, Herald 120).
    pub activity_timeout: Option<u64>,
    /// Bytes read from the socket so far (compressed frames as they came, before inflating;
    /// with `--tls`, the plaintext, without the TLS records' own overhead).
    pub wire_bytes: u64,
}

/// Which kind of channel a subscriber joins; private and presence subscriptions are signed
/// by the harness with the app secret, as an app's auth endpoint would.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Public,
    Private,
    Presence,
}

impl Kind {
    /// The name of the `n`-th benchmark channel of this kind.
    pub fn channel(self, n: usize) -> String {
        match self {
            Kind::Public => format!("bench-{n}"),
            Kind::Private => format!("private-bench-{n}"),
            Kind::Presence => format!("presence-bench-{n}"),
        }
    }
}

impl Client {
    /// Connects to `/app/{key}` at `server` and waits for `pusher:connection_established`.
    pub async fn connect(app: &App, server: SocketAddr, i: usize) -> std::io::Result<Client> {
        Self::connect_with(app, server, i, None).await
    }

    /// [`Client::connect`] with a fixed socket receive buffer.
    pub async fn connect_with(
        app: &App,
        server: SocketAddr,
        i: usize,
        recv_buffer: Option<u32>,
    ) -> std::io::Result<Client> {
        let key = &app.key;
        let mut stream = app.dialer.wrap(tcp(server, i, recv_buffer).await?).await?;
        let offer = match app.deflate {
            Deflate::Off => String::new(),
            Deflate::Required | Deflate::Optional => {
                format!("Sec-WebSocket-Extensions: {OFFER}\r\n")
            }
        };
        let request = format!(
            "GET /app/{key}?protocol=7&client=herald-bench&version=0.1 HTTP/1.1\r\nHost: {server}\r\n\
             Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n{offer}\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        stream.flush().await?;
        let mut client = Client {
            stream,
            buf: Vec::with_capacity(4096),
            socket_id: String::new(),
            activity_timeout: None,
            deflate: false,
            wire_bytes: 0,
        };
        // Read the HTTP response head and the server's answer to the offer.
        loop {
            if let Some(end) = find(&client.buf, b"\r\n\r\n") {
                if !client.buf.starts_with(b"HTTP/1.1 101") {
                    return Err(std::io::Error::other("upgrade refused"));
                }
                client.deflate = accept(app.deflate, answer(&client.buf[..end]))?;
                client.buf.drain(..end + 4);
                break;
            }
            client.fill().await?;
        }
        app.tally.handshakes.fetch_add(1, Ordering::Relaxed);
        if client.deflate {
            app.tally.deflated.fetch_add(1, Ordering::Relaxed);
        }
        let first = client.next_frame().await?;
        if find(&first, b"connection_established").is_none() {
            return Err(std::io::Error::other(
                String::from_utf8_lossy(&first).into_owned(),
            ));
        }
        let marker = br#"socket_id\":\""#;
        if let Some(at) = find(&first, marker).map(|at| at + marker.len()) {
            let len = first[at..]
                .iter()
                .take_while(|b| b.is_ascii_digit() || **b == b'.')
                .count();
            client.socket_id = String::from_utf8_lossy(&first[at..at + len]).into_owned();
        }
        let marker = br#"activity_timeout\":"#;
        client.activity_timeout = find(&first, marker)
            .and_then(|at| crate::modes::leading_number(&first[at + marker.len()..]));
        Ok(client)
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        // Straight into the buffer's spare room: a zeroed stack chunk per read was 12 % of
        // the harness's CPU in a room run (memset), and its copy another 4 %.
        self.buf.reserve(16384);
        let n = self.stream.read_buf(&mut self.buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.wire_bytes += n as u64;
        Ok(())
    }

    /// The payload of the next server frame, inflated if it came compressed.
    pub async fn next_frame(&mut self) -> std::io::Result<Vec<u8>> {
        loop {
            if let Some(payload) = take_frame(&mut self.buf, self.deflate)? {
                // Thousands of idle clients must not each keep a read's worth of room.
                if self.buf.is_empty() && self.buf.capacity() > 16384 {
                    self.buf = Vec::new();
                }
                return Ok(payload);
            }
            self.fill().await?;
        }
    }

    /// Sends a text frame (masked, as clients must).
    pub async fn send_text(&mut self, text: &str) -> std::io::Result<()> {
        let frame = herald_protocol::websocket::encode_masked(
            true,
            0x1,
            text.as_bytes(),
            [0x12, 0x34, 0x56, 0x78],
        );
        self.stream.write_all(&frame).await?;
        self.stream.flush().await
    }

    /// Subscribes to a public channel and waits for the confirmation.
    pub async fn subscribe(&mut self, channel: &str) -> std::io::Result<()> {
        self.subscribe_signed(channel, None, None).await
    }

    /// Subscribes to `channel`; private and presence channels are signed with `secret`
    /// (`(key, secret)`), presence ones as user `user`.
    pub async fn subscribe_signed(
        &mut self,
        channel: &str,
        credentials: Option<(&str, &str)>,
        user: Option<&str>,
    ) -> std::io::Result<()> {
        let message = self.subscribe_message(channel, credentials, user);
        self.send_text(&message).await?;
        loop {
            let frame = self.next_frame().await?;
            if find(&frame, b"subscription_succeeded").is_some() {
                return Ok(());
            }
        }
    }

    /// The `pusher:subscribe` message for `channel`, signed for this connection's socket id
    /// as [`Client::subscribe_signed`] describes; sending it does not wait for an answer.
    pub fn subscribe_message(
        &self,
        channel: &str,
        credentials: Option<(&str, &str)>,
        user: Option<&str>,
    ) -> String {
        let channel_data = user.map(|u| format!(r#"{{"user_id":"{u}"}}"#));
        let auth = credentials.map_or_else(String::new, |(key, secret)| {
            herald_protocol::auth::channel_auth(
                key,
                secret,
                &self.socket_id,
                channel,
                channel_data.as_deref(),
            )
        });
        let extra = channel_data.map_or_else(String::new, |d| {
            format!(r#","channel_data":"{}""#, d.replace('"', "\\\""))
        });
        format!(
            r#"{{"event":"pusher:subscribe","data":{{"auth":"{auth}","channel":"{channel}"{extra}}}}}"#
        )
    }
}

/// The `pusher:unsubscribe` message for `channel`.
pub fn unsubscribe_message(channel: &str) -> String {
    format!(r#"{{"event":"pusher:unsubscribe","data":{{"channel":"{channel}"}}}}"#)
}

/// Takes the first complete server frame off `buf` and returns its payload; one with RSV1 (a
/// compressed message, on a connection that negotiated permessage-deflate) is inflated.
pub fn take_frame(buf: &mut Vec<u8>, deflate: bool) -> std::io::Result<Option<Vec<u8>>> {
    let Some((start, len)) = frame_bounds(buf) else {
        return Ok(None);
    };
    let payload = &buf[start..start + len];
    let payload = match buf[0] & 0x40 {
        0 => payload.to_vec(),
        _ if deflate => herald_protocol::deflate::inflate(payload, MAX_INFLATED)
            .map_err(|e| std::io::Error::other(format!("compressed frame: {e}")))?,
        _ => {
            return Err(std::io::Error::other(
                "RSV1 set on a connection without permessage-deflate",
            ))
        }
    };
    buf.drain(..start + len);
    Ok(Some(payload))
}

/// Where a complete server frame's payload starts and how long it is, if `buf` holds one.
pub fn frame_bounds(buf: &[u8]) -> Option<(usize, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let (start, len) = match buf[1] & 0x7f {
        126 => (4, u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize),
        127 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(buf.get(2..10)?);
            (10, u64::from_be_bytes(b) as usize)
        }
        n => (2, n as usize),
    };
    (buf.len() >= start + len).then_some((start, len))
}

/// The first position of `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str =
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                        Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    fn head(extra: &str) -> Vec<u8> {
        format!("{HEAD}{extra}").into_bytes()
    }

    #[test]
    fn reads_the_servers_answer_to_the_offer() {
        assert_eq!(answer(&head("")), Answer::Declined);
        assert_eq!(
            answer(&head(
                "\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover"
            )),
            Answer::Independent
        );
        // Header names are case-insensitive, and so are the extension's tokens.
        assert_eq!(
            answer(&head(
                "\r\nsec-websocket-extensions:Permessage-Deflate;Server_No_Context_Takeover"
            )),
            Answer::Independent
        );
        // sockudo's dedicated mode: the server keeps its context.
        assert_eq!(
            answer(&head("\r\nSec-WebSocket-Extensions: permessage-deflate")),
            Answer::ContextTakeover
        );
        assert_eq!(
            answer(&head(
                "\r\nSec-WebSocket-Extensions: x-webkit-deflate-frame"
            )),
            Answer::Declined
        );
        // The status line is not a header, whatever it says.
        assert_eq!(
            answer(b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover"),
            Answer::Declined
        );
    }

    #[test]
    fn a_required_offer_that_is_declined_fails_the_connection() {
        let error = accept(Deflate::Required, Answer::Declined).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("server did not negotiate permessage-deflate"),
            "{error}"
        );
        assert!(!accept(Deflate::Optional, Answer::Declined).unwrap());
        assert!(!accept(Deflate::Off, Answer::Declined).unwrap());
        assert!(accept(Deflate::Required, Answer::Independent).unwrap());
        assert!(accept(Deflate::Optional, Answer::Independent).unwrap());
        assert!(accept(Deflate::Off, Answer::Independent).is_err());
        assert!(accept(Deflate::Optional, Answer::ContextTakeover).is_err());
        assert!(accept(Deflate::Required, Answer::ContextTakeover).is_err());
    }

    /// A server frame as Herald sends it, compressed or not.
    fn server_frame(text: &str, compressed: bool) -> Vec<u8> {
        let plain = herald_protocol::websocket::encode_text(text.as_bytes());
        if compressed {
            herald_protocol::websocket::compress_text_frame(&plain)
                .map(|f| f.to_vec())
                .unwrap_or_else(|| panic!("{text} does not compress"))
        } else {
            plain.to_vec()
        }
    }

    #[test]
    fn compressed_frames_are_inflated_before_they_are_scanned() {
        let event = format!(
            r#"{{"event":"bench","channel":"bench-0","data":"{{\"t\":42,\"p\":\"{}\"}}"}}"#,
            "x".repeat(600)
        );
        let mut buf = server_frame(&event, true);
        assert_eq!(buf[0], 0xC1, "FIN, RSV1, text");
        assert!(buf.len() < event.len() / 4);
        // Then a small frame that stays uncompressed, and half of the next compressed one.
        buf.extend(server_frame(
            r#"{"event":"pusher:pong","data":"{}"}"#,
            false,
        ));
        let next = server_frame(&event, true);
        buf.extend(&next[..next.len() / 2]);

        assert_eq!(
            take_frame(&mut buf, true).unwrap().unwrap(),
            event.as_bytes()
        );
        assert_eq!(
            take_frame(&mut buf, true).unwrap().unwrap(),
            br#"{"event":"pusher:pong","data":"{}"}"#
        );
        assert_eq!(take_frame(&mut buf, true).unwrap(), None);
        buf.extend(&next[next.len() / 2..]);
        assert_eq!(
            take_frame(&mut buf, true).unwrap().unwrap(),
            event.as_bytes()
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn rsv1_without_the_extension_or_corrupt_data_is_an_error() {
        let event = format!(r#"{{"data":"{}"}}"#, "y".repeat(400));
        let mut buf = server_frame(&event, true);
        assert!(take_frame(&mut buf.clone(), false).is_err());
        let last = buf.len() - 1;
        buf[2..last].fill(0xff);
        assert!(take_frame(&mut buf, true).is_err());
    }
}
