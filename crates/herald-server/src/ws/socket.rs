//! The socket under a WebSocket connection's task: plain TCP, or TLS over TCP.
//!
//! The task waits for readiness and then moves bytes with calls that never block, so a
//! parked connection holds no buffer of its own; [`Socket`] is exactly those calls. For
//! TCP they are the socket's own. Over TLS, [`TlsSocket`] drives rustls over the TCP
//! socket's readiness: rustls holds the records and plaintext in flight, within
//! [`crate::tls::BUFFER_LIMIT`] for what it sends.

use std::io::{self, IoSlice, Read, Write};
use std::task::{Context, Poll};

use rustls::ServerConnection;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// What the connection task does with its socket, none of it blocking.
pub(crate) trait Socket: Send + Sync + 'static {
    /// Ready once a read may make progress (it may still find nothing: `WouldBlock`).
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Reads what has arrived; `Ok(0)` ends the client's stream.
    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Ready once a write may make progress.
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Takes bytes from `bufs` in order; returns how many.
    fn try_write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Whether bytes a write took are still waiting for the kernel (TLS records), so the
    /// task must wait for writability and [`Socket::try_flush`] even with nothing queued.
    fn has_unsent(&self) -> bool;
    /// Sends what [`Socket::has_unsent`] reports; `WouldBlock` while some remains.
    fn try_flush(&mut self) -> io::Result<()>;
    /// Ends the server's sending side (over TLS with a `close_notify` first); `WouldBlock`
    /// until everything before it has gone, when it is called again.
    fn try_shutdown(&mut self) -> io::Result<()>;
}

/// A stream hyper gives back after the upgrade: refusals are written to it as it is, and a
/// served connection's task takes it over as a [`Socket`].
pub(crate) trait Upgraded: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    type Socket: Socket;

    fn into_socket(self) -> io::Result<Self::Socket>;
}

impl Upgraded for TcpStream {
    type Socket = TcpStream;

    fn into_socket(self) -> io::Result<TcpStream> {
        Ok(self)
    }
}

impl Upgraded for TlsStream<TcpStream> {
    type Socket = TlsSocket;

    fn into_socket(self) -> io::Result<TlsSocket> {
        let (tcp, tls) = self.into_inner();
        TlsSocket::new(tcp, tls)
    }
}

/// The TCP write half's FIN, without waiting for anything.
fn shutdown_write(tcp: &TcpStream) -> io::Result<()> {
    socket2::SockRef::from(tcp).shutdown(std::net::Shutdown::Write)
}

impl Socket for TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }

    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        TcpStream::try_read(self, buf)
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_write_ready(self, cx)
    }

    fn try_write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // One frame (a fan-out's usual write) goes by send(2): writev(2) first passes
        // through the file layer (`fdget_pos`, `vfs_writev`), which was 6 % of the server's
        // CPU in the big room's profile (BENCHMARKS.md, 2026-12-08).
        match bufs {
            [one] => TcpStream::try_write(self, one),
            _ => TcpStream::try_write_vectored(self, bufs),
        }
    }

    fn has_unsent(&self) -> bool {
        false
    }

    fn try_flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn try_shutdown(&mut self) -> io::Result<()> {
        shutdown_write(self)
    }
}

/// rustls's view of the TCP socket: reads and writes that return `WouldBlock` instead of
/// waiting, which also clears tokio's readiness so the task parks until the next event.
struct Tcp<'a>(&'a TcpStream);

impl Read for Tcp<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for Tcp<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A TLS session taken over from the HTTP connection after the upgrade: the TCP socket and
/// rustls's state, driven by hand.
pub(crate) struct TlsSocket {
    tcp: TcpStream,
    /// Boxed: the session is large, and the task's future keeps only a pointer to it.
    tls: Box<ServerConnection>,
    /// A read can progress without the TCP socket: rustls holds plaintext, or the client's
    /// `close_notify` came. Set conservatively: a read may still find nothing.
    readable: bool,
    close_sent: bool,
}

impl TlsSocket {
    /// Takes over `tls` as the HTTP connection left it: what it already decrypted and
    /// holds is read before anything new from the socket.
    pub(crate) fn new(tcp: TcpStream, mut tls: ServerConnection) -> io::Result<TlsSocket> {
        tls.set_buffer_limit(Some(crate::tls::BUFFER_LIMIT));
        let state = tls.process_new_packets().map_err(io::Error::other)?;
        Ok(TlsSocket {
            tcp,
            readable: state.plaintext_bytes_to_read() > 0 || state.peer_has_closed(),
            tls: Box::new(tls),
            close_sent: false,
        })
    }
}

impl Socket for TlsSocket {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.readable {
            return Poll::Ready(Ok(()));
        }
        self.tcp.poll_read_ready(cx)
    }

    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.tls.reader().read(buf) {
                // A short read emptied rustls's plaintext; `Ok(0)`: the client's close_notify.
                Ok(n) => {
                    self.readable = n > 0 && n == buf.len();
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable = false,
                Err(e) => return Err(e),
            }
            // rustls holds no plaintext, so its inbound buffer has room for more records.
            if self.tls.read_tls(&mut Tcp(&self.tcp))? == 0 {
                // The TCP stream ended without a close_notify: an end all the same (browsers
                // often skip it).
                return Ok(0);
            }
            if let Err(error) = self.tls.process_new_packets() {
                // rustls has queued an alert saying why; it goes out if the socket takes it.
                let _ = self.tls.write_tls(&mut Tcp(&self.tcp));
                return Err(io::Error::new(io::ErrorKind::InvalidData, error));
            }
        }
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tcp.poll_write_ready(cx)
    }

    fn try_write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // Records already made go first, and until they have gone no plaintext is taken:
        // rustls then holds at most one write's records, within its buffer limit.
        self.try_flush()?;
        let taken = self.tls.writer().write_vectored(bufs)?;
        match self.try_flush() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(taken),
        }
    }

    fn has_unsent(&self) -> bool {
        self.tls.wants_write()
    }

    fn try_flush(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            if self.tls.write_tls(&mut Tcp(&self.tcp))? == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    }

    fn try_shutdown(&mut self) -> io::Result<()> {
        if !self.close_sent {
            self.tls.send_close_notify();
            self.close_sent = true;
        }
        self.try_flush()?;
        shutdown_write(&self.tcp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::settings::TlsConfig;
    use crate::tls::tests::{issue, temp_dir, write};
    use rustls::pki_types::pem::PemObject;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::client::TlsStream as ClientStream;

    /// A TLS session over loopback, taken apart on the server side as the upgrade does
    /// (after `server_reads` bytes were read through tokio-rustls, as hyper would), and
    /// the client's end of it.
    async fn pair(
        name: &str,
        first: &[u8],
        server_reads: usize,
    ) -> (TlsSocket, ClientStream<TcpStream>) {
        let dir = temp_dir(name);
        let (ca, cert, key) = issue("socket");
        let files = TlsConfig {
            cert: write(&dir, "cert.pem", &cert),
            key: write(&dir, "key.pem", &key),
        };
        let tls = crate::tls::Tls::new(&files).expect("TLS");
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
            roots.add(cert.expect("CA PEM")).expect("CA");
        }
        let client_config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
        let sent = first.to_vec();
        let client = tokio::spawn(async move {
            // Small buffers on both sides, so that a test can fill them.
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket.set_recv_buffer_size(4096).expect("buffer size");
            let tcp = socket.connect(addr).await.expect("connect");
            let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
            let mut stream = connector
                .connect(name, tcp)
                .await
                .expect("client handshake");
            stream.write_all(&sent).await.expect("first write");
            stream.flush().await.expect("flush");
            stream
        });
        let (tcp, _) = listener.accept().await.expect("accept");
        socket2::SockRef::from(&tcp)
            .set_send_buffer_size(4096)
            .expect("buffer size");
        let mut server = tls.acceptor().accept(tcp).await.expect("server handshake");
        let client = client.await.expect("client task");
        let mut read = vec![0u8; server_reads];
        server.read_exact(&mut read).await.expect("server read");
        assert_eq!(read, first[..server_reads]);
        (server.into_socket().expect("socket"), client)
    }

    async fn read_ready(socket: &TlsSocket) {
        std::future::poll_fn(|cx| socket.poll_read_ready(cx))
            .await
            .expect("readiness");
    }

    /// Reads until `want` bytes came or the stream ended.
    async fn read_some(socket: &mut TlsSocket, want: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut chunk = [0u8; 8192];
        while got.len() < want {
            read_ready(socket).await;
            match socket.try_read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("read failed: {e}"),
            }
        }
        got
    }

    #[tokio::test]
    async fn plaintext_rustls_already_holds_is_readable_at_once() {
        let (mut socket, _client) = pair("buffered", b"hello world", 1).await;
        // Nothing more comes from the socket: the rest is inside rustls, and must be
        // reported readable without waiting for TCP.
        tokio::time::timeout(std::time::Duration::from_secs(1), read_ready(&socket))
            .await
            .expect("readable without new TCP bytes");
        let mut buf = [0u8; 64];
        assert_eq!(socket.try_read(&mut buf).expect("read"), 10);
        assert_eq!(&buf[..10], b"ello world");
        let again = socket.try_read(&mut buf).expect_err("nothing left");
        assert_eq!(again.kind(), io::ErrorKind::WouldBlock);
    }

    #[tokio::test]
    async fn writes_stay_within_the_buffer_limit_and_arrive_whole() {
        let (mut socket, mut client) = pair("writes", b"x", 1).await;
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        // The client reads nothing at first: the socket fills, and rustls holds no more
        // than its limit (plaintext is refused until the records made are sent).
        let mut sent = 0;
        let mut refused = false;
        while sent < data.len() {
            match socket.try_write_vectored(&[IoSlice::new(&data[sent..])]) {
                Ok(n) => {
                    assert!(n > 0 && n <= crate::tls::BUFFER_LIMIT, "took {n}");
                    sent += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    refused = true;
                    break;
                }
                Err(e) => panic!("write failed: {e}"),
            }
        }
        assert!(refused, "a megabyte fit into loopback buffers");
        assert!(socket.has_unsent() || sent < data.len());
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; expected.len()];
            client.read_exact(&mut got).await.expect("client read");
            assert!(got == expected, "the bytes arrived changed or out of order");
            // Then the close_notify, not a bare TCP EOF (which rustls reports as an error).
            let mut rest = [0u8; 16];
            assert_eq!(client.read(&mut rest).await.expect("clean end"), 0);
        });
        while sent < data.len() || socket.has_unsent() {
            std::future::poll_fn(|cx| socket.poll_write_ready(cx))
                .await
                .expect("writable");
            if sent < data.len() {
                match socket.try_write_vectored(&[IoSlice::new(&data[sent..])]) {
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("write failed: {e}"),
                }
            } else {
                match socket.try_flush() {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("flush failed: {e}"),
                }
            }
        }
        loop {
            match socket.try_shutdown() {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::future::poll_fn(|cx| socket.poll_write_ready(cx))
                        .await
                        .expect("writable");
                }
                Err(e) => panic!("shutdown failed: {e}"),
            }
        }
        reader.await.expect("reader");
    }

    #[tokio::test]
    async fn the_clients_close_notify_and_a_bare_eof_both_end_the_stream() {
        let (mut socket, mut client) = pair("eof", b"ab", 1).await;
        client.write_all(b"cd").await.expect("write");
        client.shutdown().await.expect("close_notify");
        assert_eq!(read_some(&mut socket, 10).await, b"bcd");

        let (mut socket, client) = pair("bare-eof", b"ab", 1).await;
        let (mut tcp, _) = client.into_inner();
        tcp.shutdown().await.expect("FIN");
        assert_eq!(read_some(&mut socket, 10).await, b"b");
    }

    #[tokio::test]
    async fn bytes_that_are_not_tls_are_an_error_not_data() {
        let (mut socket, client) = pair("garbage", b"ab", 2).await;
        let (mut tcp, _) = client.into_inner();
        tcp.write_all(b"GET / HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        read_ready(&socket).await;
        let mut buf = [0u8; 64];
        let error = loop {
            match socket.try_read(&mut buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => read_ready(&socket).await,
                other => break other.expect_err("not TLS"),
            }
        };
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }
}
