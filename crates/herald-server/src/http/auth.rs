//! Authenticating an HTTP API request: find the app, then check the signature over the
//! method, path, decoded query and raw body with the protocol crate's verifier, the same
//! code the SDK signs with.
//!
//! Everything that does not need the body is checked before a byte of it is read: the
//! app, the key, the timestamp, the signature (which covers the `body_md5` value, not the
//! body) and the app's rate. An unauthenticated client therefore cannot make the server
//! hold a body; a signed one gets `max_request_body_bytes` and `http_body_timeout`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, Method, StatusCode, Uri};
use herald_protocol::signing::SignedQuery;

use super::conn::Peer;
use super::error::ApiError;
use crate::adapter::Rate;
use crate::apps::{App, AppRef};
use crate::metrics::Limit;
use crate::shared::Shared;

/// The window Pusher allows between the client's timestamp and the server's clock.
const MAX_SKEW_SECS: i64 = 600;

/// A request whose signature checked out: its app, decoded query parameters and raw body.
/// As an extractor it runs before every HTTP API handler, so none can forget it.
pub(crate) struct Authenticated {
    pub(crate) app: Arc<App>,
    /// The client's address (behind a trusted proxy, the one it names), for the log of a
    /// refusal.
    pub(crate) client: Option<IpAddr>,
    pub(crate) query: SignedQuery,
    pub(crate) body: Bytes,
}

impl FromRequest<Arc<Shared>> for Authenticated {
    type Rejection = ApiError;

    async fn from_request(req: Request, shared: &Arc<Shared>) -> Result<Self, ApiError> {
        let method = req.method().clone();
        let uri = req.uri().clone();
        let client = req
            .extensions()
            .get::<Peer>()
            .map(|Peer(peer)| shared.limiter.client_addr(peer.ip(), req.headers()));
        // Every API path is /apps/{app_id}/..., but one: the Python library's
        // terminate_connections, /users/{user_id}/..., where the signing key names the app.
        let key;
        let by = match uri.path().strip_prefix("/apps/") {
            Some(rest) => AppRef::Id(rest.split('/').next().unwrap_or("")),
            None => {
                key = SignedQuery::parse(uri.query().unwrap_or(""))
                    .map_err(|e| ApiError::unauthorized(e.to_string()))?
                    .auth_key;
                AppRef::Key(&key)
            }
        };
        let app = crate::apps::lookup(&*shared.apps, by).await;
        if app.is_none() {
            if let Some(reason) = shared.apps.unavailable() {
                return Err(ApiError::unavailable(format!("Not ready: {reason}")));
            }
        }
        let app_id = match (by, &app) {
            (AppRef::Id(id), _) => id.to_owned(),
            (AppRef::Key(_), Some(app)) => app.id().to_owned(),
            (AppRef::Key(key), None) => {
                return Err(ApiError::unauthorized(format!("Unknown auth_key '{key}'")))
            }
        };
        let (app, query) = authenticate(app, &app_id, &method, &uri)?;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let max = shared.config.net.max_body_bytes;
        if let Some(len) = declared {
            if len > max as u64 {
                return Err(too_large(max));
            }
            query
                .accepts_body_len(len)
                .map_err(|e| ApiError::unauthorized(e.to_string()))?;
        }
        check_rate(shared, &app, &method, client).await?;
        let timeout = shared.config.net.body_timeout;
        let body = match tokio::time::timeout(timeout, Bytes::from_request(req, shared)).await {
            Ok(Ok(body)) => body,
            Ok(Err(rejection)) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(too_large(max))
            }
            Ok(Err(rejection)) => {
                return Err(ApiError::bad_request(format!(
                    "Cannot read the request body: {rejection}"
                )))
            }
            Err(_) => {
                return Err(ApiError::timeout(format!(
                    "The request body did not arrive within {} seconds",
                    timeout.as_secs()
                )))
            }
        };
        query
            .verify_body(&body)
            .map_err(|e| ApiError::unauthorized(e.to_string()))?;
        Ok(Authenticated {
            app,
            client,
            query,
            body,
        })
    }
}

/// Counts the request against the app's per-second limits: POSTs are publishes, GETs reads.
/// In a cluster the budget is the cluster's (the node's own counter is the fallback while
/// the cluster's shared state is away).
async fn check_rate(
    shared: &Shared,
    app: &App,
    method: &Method,
    client: Option<IpAddr>,
) -> Result<(), ApiError> {
    let (rate, what, refused) = if method == Method::GET {
        (Rate::Reads, "read requests", Limit::ReadRate)
    } else {
        (Rate::Publishes, "publishes", Limit::PublishRate)
    };
    let limit = rate.limit(&app.config().limits);
    if limit == 0 || shared.adapter.limits.take(app, rate).await {
        return Ok(());
    }
    let config = app.config();
    app.metrics.refused(refused, &config.id, client);
    Err(ApiError::too_many(
        format!(
            "Rate limit exceeded: {} allows {limit} {what} per second",
            config.limits_holder()
        ),
        1,
    ))
}

fn too_large(max: usize) -> ApiError {
    ApiError::too_large(format!(
        "The request body is larger than the allowed {max} bytes"
    ))
}

/// Verifies the request for app `app_id`, all but its body. Unknown apps are 404 (before
/// any signature check, as soketi and reverb do); disabled apps 403 once the caller has
/// proven the secret.
fn authenticate(
    app: Option<Arc<App>>,
    app_id: &str,
    method: &Method,
    uri: &Uri,
) -> Result<(Arc<App>, SignedQuery), ApiError> {
    let app = app.ok_or_else(|| ApiError::not_found(format!("Unknown app id '{app_id}'")))?;
    let query = SignedQuery::parse(uri.query().unwrap_or(""))
        .map_err(|e| ApiError::unauthorized(e.to_string()))?;
    if query.auth_key != app.config().key {
        return Err(ApiError::unauthorized(format!(
            "Unknown auth_key '{}' for app {app_id}",
            query.auth_key
        )));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    query
        .verify_without_body(
            method.as_str(),
            uri.path(),
            &app.config().secret,
            now,
            MAX_SKEW_SECS,
        )
        .map_err(|e| ApiError::unauthorized(e.to_string()))?;
    if !app.config().enabled {
        return Err(ApiError::forbidden(format!("App {app_id} is disabled")));
    }
    Ok((app, query))
}
