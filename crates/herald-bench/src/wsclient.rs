//! A minimal WebSocket client for load: connects, completes the handshake, subscribes, and
//! scans server frames without parsing their JSON, so the harness stays cheap per message.
//!
//! With `--deflate` the client offers permessage-deflate (RFC 7692) as browsers do and
//! inflates the compressed frames it gets before they are scanned. It still sends its own
//! frames uncompressed, which the extension allows.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;

use herald_protocol::frame::{Subscribe, Unsubscribe};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::http::App;
use crate::negotiate::{accept, answer, Deflate, OFFER};
use crate::scan::{find, take_frame};
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
            .and_then(|at| crate::scan::leading_number(&first[at + marker.len()..]));
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
        Subscribe::new(channel, Some(auth), channel_data).to_frame()
    }
}

/// The `pusher:unsubscribe` message for `channel`.
pub fn unsubscribe_message(channel: &str) -> String {
    Unsubscribe::new(channel).to_frame()
}
