//! A minimal WebSocket client for load: connects, completes the handshake, subscribes, and
//! scans server frames without parsing their JSON, so the harness stays cheap per message.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

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
    pub stream: TcpStream,
    /// Bytes read but not yet consumed as frames.
    pub buf: Vec<u8>,
}

impl Client {
    /// Connects to `/app/{key}` and waits for `pusher:connection_established`.
    pub async fn connect(server: SocketAddr, key: &str, i: usize) -> std::io::Result<Client> {
        Self::connect_with(server, key, i, None).await
    }

    /// [`Client::connect`] with a fixed socket receive buffer.
    pub async fn connect_with(
        server: SocketAddr,
        key: &str,
        i: usize,
        recv_buffer: Option<u32>,
    ) -> std::io::Result<Client> {
        let mut stream = tcp(server, i, recv_buffer).await?;
        let request = format!(
            "GET /app/{key}?protocol=7&client=herald-bench&version=0.1 HTTP/1.1\r\nHost: {server}\r\n\
             Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut client = Client {
            stream,
            buf: Vec::with_capacity(4096),
        };
        // Skip the HTTP response head.
        loop {
            if let Some(end) = find(&client.buf, b"\r\n\r\n") {
                if !client.buf.starts_with(b"HTTP/1.1 101") {
                    return Err(std::io::Error::other("upgrade refused"));
                }
                client.buf.drain(..end + 4);
                break;
            }
            client.fill().await?;
        }
        let first = client.next_frame().await?;
        if find(&first, b"connection_established").is_none() {
            return Err(std::io::Error::other(
                String::from_utf8_lossy(&first).into_owned(),
            ));
        }
        Ok(client)
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 16384];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// The payload of the next server frame.
    pub async fn next_frame(&mut self) -> std::io::Result<Vec<u8>> {
        loop {
            if let Some((start, len)) = frame_bounds(&self.buf) {
                let payload = self.buf[start..start + len].to_vec();
                self.buf.drain(..start + len);
                return Ok(payload);
            }
            self.fill().await?;
        }
    }

    /// Sends a text frame (masked, as clients must).
    pub async fn send_text(&mut self, text: &str) -> std::io::Result<()> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let payload = text.as_bytes();
        let mut frame = vec![0x81];
        if payload.len() < 126 {
            frame.push(0x80 | payload.len() as u8);
        } else {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).await
    }

    /// Subscribes to a public channel and waits for the confirmation.
    pub async fn subscribe(&mut self, channel: &str) -> std::io::Result<()> {
        self.send_text(&format!(
            r#"{{"event":"pusher:subscribe","data":{{"auth":"","channel":"{channel}"}}}}"#
        ))
        .await?;
        loop {
            let frame = self.next_frame().await?;
            if find(&frame, b"subscription_succeeded").is_some() {
                return Ok(());
            }
        }
    }
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
