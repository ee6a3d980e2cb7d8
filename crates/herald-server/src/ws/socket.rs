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
        TcpStream::try_write_vectored(self, bufs)
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
