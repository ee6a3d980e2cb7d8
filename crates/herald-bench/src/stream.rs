//! The harness's connections: plain TCP, or TLS over it (`--tls`, trusting the `--ca`
//! certificate), so the same runs measure `ws://`/`http://` and `wss://`/`https://`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// How connections are opened on top of TCP.
#[derive(Clone)]
pub enum Dialer {
    Plain,
    Tls {
        connector: TlsConnector,
        /// The name the server's certificate must carry (its address: the test
        /// certificates name 127.0.0.1).
        name: ServerName<'static>,
    },
}

impl Dialer {
    /// A TLS dialer trusting the certificates in the PEM file `ca`, for `server`.
    pub fn tls(ca: &std::path::Path, server: std::net::IpAddr) -> io::Result<Dialer> {
        let pem = std::fs::read(ca)
            .map_err(|e| io::Error::other(format!("cannot read {}: {e}", ca.display())))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| io::Error::other(format!("{}: {e}", ca.display())))?;
            roots.add(cert).map_err(io::Error::other)?;
        }
        if roots.is_empty() {
            return Err(io::Error::other(format!(
                "{} holds no certificate",
                ca.display()
            )));
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Dialer::Tls {
            connector: TlsConnector::from(Arc::new(config)),
            name: ServerName::IpAddress(server.into()),
        })
    }

    /// Completes the connection on `tcp` (the TLS handshake, if any).
    pub async fn wrap(&self, tcp: TcpStream) -> io::Result<Stream> {
        match self {
            Dialer::Plain => Ok(Stream::Plain(tcp)),
            Dialer::Tls { connector, name } => Ok(Stream::Tls(Box::new(
                connector.connect(name.clone(), tcp).await?,
            ))),
        }
    }
}

/// One connection of the harness.
pub enum Stream {
    Plain(TcpStream),
    /// Boxed: the client session is large, and the harness holds thousands.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
