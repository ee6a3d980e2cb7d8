//! One HTTP connection: hyper serves it, and this task enforces how long it may take.
//!
//! hyper's own header timeout runs from when it starts waiting for a request head, so on a
//! kept-alive connection it would also be the idle timeout, and it has no body timeout at
//! all. Instead the socket is wrapped in [`Watched`], which records when bytes move, and
//! the service records when requests start and end; from those this task derives one
//! deadline at a time:
//! - the first request's headers must arrive within `http_header_timeout` of the
//!   connection's start (a socket that sends nothing is closed then);
//! - a later request's headers, within `http_header_timeout` of their first byte;
//! - between requests, a connection may stay silent for `http_idle_timeout`.
//!
//! A request being handled has no deadline here: its body read is bounded by
//! `http_body_timeout` in the [`super::auth::Authenticated`] extractor, and nothing else a
//! handler awaits is unbounded. An upgraded WebSocket leaves this task with its socket,
//! its permit and the deadlines of its own (`crate::sweeper`).
//!
//! Over TLS ([`serve_tls`]) the handshake runs here first, within the first request's
//! header deadline, and hyper is then served the same way over the TLS stream. At
//! shutdown a connection finishes the request it is serving, within `Setup::drain`.
//!
//! A connection closed while its client is still sending a body it was answered without
//! (413, 401, 404) lingers first, so the client reads the answer ([`linger`]).

mod linger;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::response::Response;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::admission::settings::NetLimits;
use crate::admission::ConnPermit;
use crate::metrics::HttpCounts;
use crate::{App, AppStore};

/// Largest request head (request line and headers): far above what any Pusher client
/// sends, cookies included. Over it hyper answers 431 and closes.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The client's TCP address, for handlers that need it (as a request extension).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) SocketAddr);

/// When bytes last moved and where the connection is between requests. Times are
/// milliseconds since the connection started, plus one so that 0 means "never".
struct Activity {
    start: Instant,
    last_io: AtomicU64,
    /// The first byte of a request head that has not completed yet.
    head_started: AtomicU64,
    in_flight: AtomicU32,
    requests: AtomicU64,
    /// The last request's body has not been read to its end.
    unread: linger::Unread,
}

impl Activity {
    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    fn moved(&self, read: bool) {
        let now = self.now();
        self.last_io.store(now, Ordering::Relaxed);
        if read
            && self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) == 0
        {
            self.head_started.store(now, Ordering::Relaxed);
        }
    }

    /// When the connection must be closed unless something happens first; `None` while a
    /// request is being handled.
    fn deadline(&self, limits: &NetLimits) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let at = |ms: u64, after: Duration| {
            self.start + Duration::from_millis(ms.saturating_sub(1)) + after
        };
        if self.requests.load(Ordering::Acquire) == 0 {
            return Some(self.start + limits.header_timeout);
        }
        let head = self.head_started.load(Ordering::Relaxed);
        if head != 0 {
            return Some(at(head, limits.header_timeout));
        }
        Some(at(
            self.last_io.load(Ordering::Relaxed),
            limits.idle_timeout,
        ))
    }
}

/// Marks a request in flight for as long as it lives, however its future ends.
pub(crate) struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.head_started.store(0, Ordering::Relaxed);
        activity.requests.fetch_add(1, Ordering::AcqRel);
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.moved(false);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The socket as hyper sees it (TCP, or TLS over TCP): reads and writes pass through and
/// are timed. After a WebSocket upgrade the connection task takes the stream and the
/// permit back out.
pub(crate) struct Watched<S> {
    stream: S,
    activity: Arc<Activity>,
    permit: ConnPermit,
    /// How a close with a body still coming drains, and the drain once begun.
    linger: linger::Bounds,
    lingering: Option<Box<linger::Lingering>>,
}

impl<S> Watched<S> {
    /// The socket and its place under the connection caps.
    pub(crate) fn into_parts(self) -> (S, ConnPermit) {
        (self.stream, self.permit)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.moved(true);
        }
        polled
    }
}

// Reading too: a close may drain what the client still sends (`linger`).
impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.moved(false);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.moved(false);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        linger::poll_shutdown(
            &mut this.stream,
            &this.activity.unread,
            this.linger,
            &mut this.lingering,
            cx,
        )
    }
}

/// The router, with each request marked in flight and told its peer.
#[derive(Clone)]
struct Service {
    router: Router,
    activity: Arc<Activity>,
    peer: SocketAddr,
    counts: ApiCounts,
}

/// Where a connection's HTTP API requests are counted: under the app they name, or the
/// node's count for ids it does not serve.
#[derive(Clone)]
pub(crate) struct ApiCounts {
    pub(crate) apps: Arc<dyn AppStore>,
    pub(crate) unknown_app: Arc<HttpCounts>,
}

/// The counter a request goes to, and its route.
enum CountIn {
    App(Arc<App>, usize),
    Unknown(Arc<HttpCounts>, usize),
}

impl ApiCounts {
    /// Where a request for `path` is counted; `None` for paths outside the API.
    fn target(&self, path: &str) -> Option<CountIn> {
        let rest = path.strip_prefix("/apps/")?;
        let (id, rest) = rest.split_once('/')?;
        let route = route_index(rest);
        Some(match self.apps.by_id(id) {
            Some(app) => CountIn::App(app, route),
            None => CountIn::Unknown(self.unknown_app.clone(), route),
        })
    }
}

/// The place in [`crate::metrics::ROUTES`] of an API path's part after `/apps/{id}/`.
fn route_index(rest: &str) -> usize {
    let mut parts = rest.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("events"), None, ..) => 0,
        (Some("batch_events"), None, ..) => 1,
        (Some("channels"), None, ..) => 2,
        (Some("channels"), Some(_), None, _) => 3,
        (Some("channels"), Some(_), Some("users"), None) => 4,
        (Some("users"), Some(_), Some("terminate_connections"), None) => 5,
        _ => usize::MAX,
    }
}

impl hyper::service::Service<hyper::Request<Incoming>> for Service {
    type Response = Response;
    type Error = Infallible;
    type Future = Tracked<axum::routing::future::RouteFuture<Infallible>>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        let guard = InFlight::start(&self.activity);
        let mut req: Request =
            req.map(|body| axum::body::Body::new(linger::BodyRead::new(body, &self.activity)));
        // The WebSocket endpoint and the API (a refusal over a limit logs the client's
        // address) ask for the peer; the probes and the admin pages skip the insert.
        let path = req.uri().path();
        if path.starts_with("/app/") || path.starts_with("/apps/") || path.starts_with("/users/") {
            req.extensions_mut().insert(Peer(self.peer));
        }
        let count = self.counts.target(req.uri().path());
        let mut router = self.router.clone();
        Tracked {
            inner: tower_service::Service::call(&mut router, req),
            _guard: guard,
            count,
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's response future, holding its in-flight mark until it is dropped (a
    /// named future rather than a boxed one: no allocation per request).
    pub(crate) struct Tracked<F> {
        #[pin]
        inner: F,
        _guard: InFlight,
        count: Option<CountIn>,
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let polled = this.inner.poll(cx);
        if let Poll::Ready(Ok(response)) = &polled {
            let status = response.status().as_u16();
            match this.count.take() {
                Some(CountIn::App(app, route)) => app.metrics.http.count(route, status),
                Some(CountIn::Unknown(counts, route)) => counts.count(route, status),
                None => {}
            }
        }
        polled
    }
}

/// What every connection is served with, cloned for each one.
#[derive(Clone)]
pub(crate) struct Setup {
    pub(crate) router: Router,
    pub(crate) counts: ApiCounts,
    pub(crate) limits: NetLimits,
    pub(crate) shutdown: CancellationToken,
    /// How long a connection may take to finish its request once `shutdown` is cancelled;
    /// then it is cut.
    pub(crate) drain: Duration,
}

/// Serves one accepted connection until it closes, times out, or the server shuts down.
/// (A plain function: an async one would hold a second copy of its arguments.)
pub(crate) fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    permit: ConnPermit,
    setup: Setup,
) -> impl Future<Output = ()> + Send {
    serve_stream(stream, peer, permit, setup, Instant::now())
}

/// [`serve`] over TLS. The handshake counts against the first request's header deadline,
/// so a client that connects and never finishes it is closed like a silent one.
pub(crate) async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    permit: ConnPermit,
    setup: Setup,
    acceptor: TlsAcceptor,
) {
    let start = Instant::now();
    let deadline = start + setup.limits.header_timeout;
    let handshake = tokio::select! {
        done = tokio::time::timeout_at(deadline, acceptor.accept(stream)) => done,
        () = setup.shutdown.cancelled() => return,
    };
    let mut stream = match handshake {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    stream
        .get_mut()
        .1
        .set_buffer_limit(Some(crate::tls::BUFFER_LIMIT));
    serve_stream(stream, peer, permit, setup, start).await;
}

async fn serve_stream<S>(
    stream: S,
    peer: SocketAddr,
    permit: ConnPermit,
    setup: Setup,
    start: Instant,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Setup {
        router,
        counts,
        limits,
        shutdown,
        drain,
    } = setup;
    let activity = Arc::new(Activity {
        start,
        last_io: AtomicU64::new(1),
        head_started: AtomicU64::new(0),
        in_flight: AtomicU32::new(0),
        requests: AtomicU64::new(0),
        unread: linger::Unread::default(),
    });
    let io = TokioIo::new(Watched {
        stream,
        activity: activity.clone(),
        permit,
        linger: linger::Bounds {
            timeout: limits.linger_timeout,
            max_bytes: limits.linger_max_bytes,
        },
        lingering: None,
    });
    let service = Service {
        router,
        activity: activity.clone(),
        peer,
        counts,
    };
    let conn = http1::Builder::new()
        // Deadlines are this task's (see the module doc); hyper's would also cut idle time.
        .header_read_timeout(None)
        .max_header_size(MAX_HEAD_BYTES)
        // The read buffer also carries body chunks and pipelined requests; twice the head
        // bound keeps a slow client from making hyper hold its default 400 KB.
        .max_buf_size(2 * MAX_HEAD_BYTES)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(conn);
    loop {
        let deadline = activity
            .deadline(&limits)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "HTTP connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep_until(deadline) => {
                if activity.deadline(&limits).is_some_and(|d| d <= Instant::now()) {
                    tracing::debug!(%peer, "HTTP connection timed out");
                    return;
                }
            }
            () = shutdown.cancelled() => {
                // An idle connection closes at once, a busy one after its response; one
                // that never finishes (a stalled client, an endless stream) is cut.
                conn.as_mut().graceful_shutdown();
                if tokio::time::timeout(drain, conn).await.is_err() {
                    tracing::debug!(%peer, "HTTP connection cut: still busy when the drain ended");
                }
                return;
            }
        }
    }
}
