//! The WebSocket endpoint `/app/{key}`: the HTTP upgrade, then one task per connection.
//!
//! The handshake is answered here and the raw `TcpStream` (over TLS: the TCP socket and the
//! rustls session, as a [`socket::TlsSocket`]) is taken back from hyper, so the connection
//! task can frame the socket itself ([`codec`]) and hold no read or write buffer of its own
//! while the socket is idle. Connections that cannot be served (unknown key, disabled app,
//! over quota, bad path or protocol) still get the upgrade, then a `pusher:error` and a close
//! with the code that tells pusher-js whether to retry (spec §1.4). A request that is not a
//! valid opening handshake (not GET, no Host, a bad key or version) gets an HTTP error.
//!
//! The upgrade is answered without waiting on the backend: the app's connection limit is
//! checked against what the node knows, and the backend's exact count (a cluster's) is asked
//! once the socket is taken over, before the connection is served; a connection over the
//! limit then gets 4004 like any other refusal.

pub(crate) mod budget;
mod connection;
mod recovery;
pub(crate) use recovery::silent;
mod session;
mod socket;

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use herald_protocol::close::CloseReason;
use herald_protocol::websocket as codec;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::admission::{ForwardedCount, Refusal};
use crate::apps::ConnectionSlot;
use crate::http::conn::{Peer, Watched};
use crate::http::error::ApiError;
use crate::metrics::Limit;
use crate::shared::Shared;

/// What the connection task is told to do once the upgrade completes.
enum Admission {
    Serve(ConnectionSlot),
    Refuse(CloseReason),
}

/// `GET /app/{key}`: a Pusher client connecting.
pub(crate) async fn connect(
    State(shared): State<Arc<Shared>>,
    Path(key): Path<String>,
    req: Request,
) -> Response {
    let client = req
        .extensions()
        .get::<Peer>()
        .map(|Peer(peer)| shared.limiter.client_addr(peer.ip(), req.headers()));
    // Behind a trusted proxy the client's address is known only now, from its headers.
    let forwarded = match req.extensions().get::<Peer>() {
        Some(Peer(peer)) => match shared.limiter.count_forwarded(peer.ip(), req.headers()) {
            Ok(count) => Some(count),
            Err(refusal) => {
                shared.metrics.connection_refused(refusal.label());
                tracing::debug!(peer = %peer, reason = refusal.label(), "Connection refused");
                return refused(refusal);
            }
        },
        None => None,
    };
    let app = crate::apps::lookup(&*shared.apps, crate::apps::AppRef::Key(&key)).await;
    let admission = admit(&shared, app, req.uri().query().unwrap_or(""), client);
    if let Admission::Refuse(reason) = &admission {
        count_refusal(&shared, *reason, &key);
    }
    upgrade(shared, req, admission, forwarded, client)
}

/// Counts and logs a connection refused with a close code.
fn count_refusal(shared: &Shared, reason: CloseReason, key: &str) {
    let label = match reason {
        CloseReason::UnknownApp => "unknown_app",
        CloseReason::AppDisabled => "app_disabled",
        CloseReason::OverConnectionQuota => "over_connection_quota",
        CloseReason::PathNotFound => "path_not_found",
        CloseReason::InvalidVersion => "invalid_version",
        CloseReason::UnsupportedProtocol => "unsupported_protocol",
        CloseReason::NoProtocol => "no_protocol",
        CloseReason::NotReady => "not_ready",
        _ => "other",
    };
    shared.metrics.connection_refused(label);
    // The key is public (every client page carries it); a client-chosen one is cut short.
    let key: String = key.chars().take(64).collect();
    tracing::debug!(app_key = %key, code = reason.code(), reason = label, "Connection refused");
}

/// The answer to an upgrade over a cap; the connection is closed after it, as a refused
/// accept's is.
fn refused(refusal: Refusal) -> Response {
    let mut response = match refusal {
        Refusal::PerAddress => {
            ApiError::too_many("Too many open connections from this address", 1).into_response()
        }
        Refusal::Total => ApiError::unavailable("The server holds its maximum of open connections")
            .into_response(),
    };
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A WebSocket upgrade on any other path: accepted, then closed with 4005 so the client
/// learns why instead of seeing a bare HTTP error.
pub(crate) async fn wrong_path(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    if is_upgrade(req.headers()) {
        count_refusal(&shared, CloseReason::PathNotFound, "");
        upgrade(
            shared,
            req,
            Admission::Refuse(CloseReason::PathNotFound),
            None,
            None,
        )
    } else {
        ApiError::not_found("Unknown path").into_response()
    }
}

fn admit(
    shared: &Shared,
    app: Option<Arc<crate::apps::App>>,
    query: &str,
    client: Option<IpAddr>,
) -> Admission {
    let mut protocol = None;
    let mut version = None;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "protocol" => protocol = Some(v),
            "version" => version = Some(v),
            _ => {}
        }
    }
    // A missing `protocol` is treated as 7 unless configured otherwise (spec §1.1: every
    // current client sends it and Pusher still infers one).
    match protocol {
        Some("5" | "6" | "7") => {}
        Some(_) => return Admission::Refuse(CloseReason::UnsupportedProtocol),
        None if shared.config.server.require_protocol => {
            return Admission::Refuse(CloseReason::NoProtocol)
        }
        None => {}
    }
    if let Some(v) = version {
        let ok = !v.is_empty()
            && v.len() <= 64
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+' | b'_'));
        if !ok {
            return Admission::Refuse(CloseReason::InvalidVersion);
        }
    }
    let Some(app) = app else {
        // A node that has not loaded its apps yet cannot tell an unknown key from a known
        // one: 4001 would stop the client for good, 4100 has it come back.
        if shared.apps.unavailable().is_some() {
            return Admission::Refuse(CloseReason::NotReady);
        }
        return Admission::Refuse(CloseReason::UnknownApp);
    };
    if !app.config().enabled {
        return Admission::Refuse(CloseReason::AppDisabled);
    }
    match shared.adapter.limits.admit(&app) {
        Some(slot) => Admission::Serve(slot),
        None => {
            app.metrics
                .refused(Limit::Connections, &app.config().id, client);
            Admission::Refuse(CloseReason::OverConnectionQuota)
        }
    }
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|part| part.trim().eq_ignore_ascii_case(token))
            })
        })
    };
    has_token(header::CONNECTION, "upgrade") && has_token(header::UPGRADE, "websocket")
}

/// Answers the upgrade, or refuses a request that is not a valid opening handshake (RFC 6455
/// §4.2.1) with an HTTP error: those come from broken clients or probes, not from a Pusher
/// client that a close code could steer.
fn upgrade(
    shared: Arc<Shared>,
    mut req: Request,
    admission: Admission,
    forwarded: Option<ForwardedCount>,
    client: Option<IpAddr>,
) -> Response {
    if req.method() != Method::GET {
        let error = ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message: "A WebSocket upgrade must be a GET request".to_owned(),
            retry_after: None,
        };
        let mut response = error.into_response();
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return response;
    }
    if req.version() < Version::HTTP_11 {
        return ApiError::bad_request("A WebSocket upgrade needs HTTP/1.1").into_response();
    }
    let headers = req.headers();
    if !is_upgrade(headers) {
        return ApiError::bad_request("This endpoint expects a WebSocket upgrade").into_response();
    }
    if !headers.contains_key(header::HOST) {
        return ApiError::bad_request("Missing Host header").into_response();
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Response::builder()
            .status(StatusCode::UPGRADE_REQUIRED)
            .header(header::SEC_WEBSOCKET_VERSION, "13")
            .body(Body::from("Unsupported WebSocket version"))
            .unwrap_or_default();
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return ApiError::bad_request("Missing Sec-WebSocket-Key").into_response();
    };
    if !codec::is_valid_key(key.as_bytes()) {
        return ApiError::bad_request("Sec-WebSocket-Key must be base64 of 16 bytes")
            .into_response();
    }
    let accept = codec::accept_key(key.as_bytes());
    // Only a served connection negotiates: a refused one gets its two frames and goes.
    let deflate = match &admission {
        Admission::Serve(_) if shared.config.server.compression => {
            herald_protocol::deflate::negotiate(
                headers
                    .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
                    .iter()
                    .map(HeaderValue::as_bytes),
            )
        }
        _ => None,
    };
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return ApiError::bad_request("Connection cannot be upgraded").into_response();
    };
    let tracker = shared.tracker.clone();
    tracker.spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(error) => {
                tracing::debug!(%error, "WebSocket upgrade failed");
                return;
            }
        };
        let on = deflate.is_some();
        let upgraded = match upgraded.downcast::<TokioIo<Watched<TcpStream>>>() {
            Ok(parts) => return take_over(shared, admission, forwarded, client, parts, on).await,
            Err(upgraded) => upgraded,
        };
        match upgraded.downcast::<TokioIo<Watched<TlsStream<TcpStream>>>>() {
            Ok(parts) => take_over(shared, admission, forwarded, client, parts, on).await,
            Err(_) => tracing::error!("Upgraded connection is not a watched TCP or TLS stream"),
        }
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(agreed) = deflate {
        h.insert(
            header::SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_static(agreed),
        );
    }
    response
}

/// The backend's last word on an admitted connection (a cluster's exact count of the app's
/// connections on every node), asked after the upgrade so that answering it never waits.
async fn confirm(shared: &Shared, slot: ConnectionSlot, client: Option<IpAddr>) -> Admission {
    let Some(check) = shared.adapter.limits.confirm(&slot) else {
        return Admission::Serve(slot);
    };
    if check.await {
        return Admission::Serve(slot);
    }
    let reason = CloseReason::OverConnectionQuota;
    slot.metrics
        .refused(Limit::Connections, &slot.config().id, client);
    count_refusal(shared, reason, &slot.config().key);
    shared.adapter.limits.release(slot);
    Admission::Refuse(reason)
}

/// Starts the connection task on the socket hyper gave back, or refuses the connection.
async fn take_over<U: socket::Upgraded>(
    shared: Arc<Shared>,
    admission: Admission,
    forwarded: Option<ForwardedCount>,
    client: Option<IpAddr>,
    parts: hyper::upgrade::Parts<TokioIo<Watched<U>>>,
    deflate: bool,
) {
    let (stream, mut permit) = parts.io.into_inner().into_parts();
    let pre_read: Bytes = parts.read_buf;
    if let Some(count) = forwarded {
        permit.adopt(count);
    }
    let admission = match admission {
        Admission::Serve(slot) => confirm(&shared, slot, client).await,
        refused => refused,
    };
    match admission {
        // A task of its own, so the parked connection holds only its own state, not
        // this upgrade future's as well (tokio rounds each task up to 128 bytes).
        Admission::Serve(slot) => match stream.into_socket() {
            Ok(socket) => {
                let tracker = shared.tracker.clone();
                tracker.spawn(connection::run(
                    shared, slot, permit, socket, pre_read, deflate,
                ));
            }
            Err(error) => {
                tracing::debug!(%error, "Upgraded connection unusable");
                shared.adapter.limits.release(slot);
            }
        },
        Admission::Refuse(reason) => {
            connection::refuse(stream, reason).await;
            drop(permit);
        }
    }
}
