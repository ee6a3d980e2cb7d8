//! The console's routes on the admin listener: the page and its assets (embedded in the
//! binary), the state the page polls, the live log (Server-Sent Events) and the event
//! creator, which publishes through the HTTP API's own path.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::Stream;
use herald_protocol::channel::{is_cache_channel, ChannelKind};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use crate::shared::Shared;

const PAGE: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");

/// The cookie a `/console?token=…` visit sets, so the page's requests carry the token.
const COOKIE: &str = "herald_console";

/// The console's routes.
pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/console", get(page))
        // The page's links are relative to /console.
        .route(
            "/console/",
            get(|| async { Redirect::permanent("/console") }),
        )
        .route(
            "/console/console.js",
            get(|| asset(SCRIPT, "text/javascript")),
        )
        .route("/console/console.css", get(|| asset(STYLE, "text/css")))
        .route("/console/api/state", get(state))
        .route("/console/api/events", get(events))
        .route("/console/api/publish", post(publish))
}

async fn asset(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// Whether the request carries the admin token (as a bearer header or the console's
/// cookie), or none is needed.
fn allowed(shared: &Shared, headers: &HeaderMap) -> bool {
    let Some(token) = &shared.config.admin.token else {
        return true;
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='));
    [bearer, cookie]
        .into_iter()
        .flatten()
        .any(|given| same(given, token))
}

fn same(given: &str, token: &str) -> bool {
    subtle::ConstantTimeEq::ct_eq(given.as_bytes(), token.as_bytes()).into()
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({ "error": "The console needs the admin token: open /console?token=<admin_token>" })),
    )
        .into_response()
}

#[derive(Deserialize)]
struct PageQuery {
    token: Option<String>,
}

async fn page(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    if let (Some(given), Some(token)) = (&query.token, &shared.config.admin.token) {
        if !same(given, token) {
            return unauthorized();
        }
        // The token leaves the address bar (and the history) at once.
        let cookie = format!("{COOKIE}={given}; HttpOnly; SameSite=Strict; Path=/console");
        let mut response = Redirect::to("/console").into_response();
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
        return response;
    }
    if !allowed(&shared, &headers) {
        return unauthorized();
    }
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}

/// The apps and their channels, members, cache contents and users, as the page shows them.
async fn state(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !allowed(&shared, &headers) {
        return unauthorized();
    }
    let mut apps = shared.apps.all();
    apps.sort_by(|a, b| a.id().cmp(b.id()));
    let mut shown = Vec::with_capacity(apps.len());
    for app in apps {
        // In a cluster, the channels and members are the cluster's, as the HTTP API's.
        let presence = &shared.adapter.presence;
        let mut channels = presence.channels(&app, "").await.unwrap_or_default();
        // A cache channel nobody is subscribed to still holds its event.
        for cached in app.cache.channels() {
            if !channels.iter().any(|(name, _)| *name == cached) {
                channels.push((cached, Default::default()));
            }
        }
        channels.sort_by(|a, b| a.0.cmp(&b.0));
        let mut rows = Vec::with_capacity(channels.len());
        for (name, counts) in channels {
            let members = if ChannelKind::of(&name).is_presence() {
                members(&shared, &app, &name).await
            } else {
                Vec::new()
            };
            let cache = is_cache_channel(&name)
                .then(|| app.cache.get(&name))
                .flatten()
                .map(|c| c.data.to_string());
            rows.push(json!({
                "name": name,
                "subscribers": counts.subscription_count,
                "members": members,
                "cache": cache,
            }));
        }
        let config = app.config();
        shown.push(json!({
            "id": app.id(),
            "key": config.key,
            "enabled": config.enabled,
            "connections": app.connection_count(),
            "channels": rows,
            "users": app.users.user_ids(),
        }));
    }
    Json(json!({ "node_id": shared.node_id, "apps": shown })).into_response()
}

/// A presence channel's members: the cluster's ids in a cluster (as the HTTP API's users
/// query), with the user info this node knows of them.
async fn members(shared: &Shared, app: &crate::App, channel: &str) -> Vec<Value> {
    let local = app.hub.local_members(channel);
    let info = |id: &str| {
        local
            .iter()
            .find(|m| &*m.user_id == id)
            .and_then(|m| m.user_info.as_deref())
            .and_then(|i| serde_json::from_str::<Value>(i).ok())
    };
    let ids = shared
        .adapter
        .presence
        .users(app, channel)
        .await
        .unwrap_or_default();
    ids.iter()
        .map(|id| json!({ "user_id": id, "user_info": info(id) }))
        .collect()
}

/// The live log: one SSE message per row; a tab that fell behind gets a `dropped` row.
/// The stream ends when the node closes its console (at shutdown).
async fn events(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !allowed(&shared, &headers) {
        return unauthorized();
    }
    let watch = shared.console.watch();
    let node_id = shared.node_id;
    Sse::new(rows(watch, node_id))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

fn rows(
    watch: super::Watch,
    node_id: u32,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    futures_util::stream::unfold(watch, move |mut watch| async move {
        let data = match watch.next().await? {
            Ok(row) => row.to_string(),
            Err(RecvError::Lagged(count)) => json!({
                "kind": "dropped",
                "count": count,
                "node_id": node_id,
                "app": "",
                "time_ms": SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
            })
            .to_string(),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(Event::default().data(data)), watch))
    })
}

#[derive(Deserialize)]
struct Publish {
    app: String,
    channels: Vec<String>,
    name: String,
    data: String,
    socket_id: Option<String>,
}

/// The event creator: the HTTP API's trigger, for an app picked on the page.
async fn publish(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !allowed(&shared, &headers) {
        return unauthorized();
    }
    // Parsed here, not by the Json extractor, so a bad body gets a JSON error the page shows.
    let event: Publish = match serde_json::from_slice(&body) {
        Ok(event) => event,
        Err(error) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": format!("Not a publish request: {error}") })),
            )
                .into_response()
        }
    };
    let Some(app) = shared.apps.by_id(&event.app) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("Unknown app id '{}'", event.app) })),
        )
            .into_response();
    };
    let body = json!({
        "name": event.name,
        "channels": event.channels,
        "data": event.data,
        "socket_id": event.socket_id,
    })
    .to_string();
    match crate::http::events::trigger_body(&shared, &app, body.as_bytes()).await {
        Ok(_) => Json(json!({ "ok": true })).into_response(),
        Err(error) => (error.status, Json(json!({ "error": error.message }))).into_response(),
    }
}
