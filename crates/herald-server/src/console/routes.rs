//! The console's routes on the admin listener: the page and its assets (embedded in the
//! binary), the state the page polls, the live log (Server-Sent Events) and the event
//! creator, which publishes through the HTTP API's own path, and a channel's history as
//! the history API gives it. Every route but the static
//! assets asks `admin::Guard` first (the creator as a write, before its body is read).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures_util::stream::Stream;
use herald_protocol::api::{RawJson, TriggerBody};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use crate::admin::{Busy, BusyGuard, Need};
use crate::shared::Shared;

const PAGE: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/console.js");
const CHARTS: &str = include_str!("assets/charts.js");
const STYLE: &str = include_str!("assets/console.css");

/// Largest publish request body: the HTTP API's own bound applies again inside.
const MAX_PUBLISH_BYTES: usize = 1024 * 1024;

/// The console's routes.
pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/console", get(page))
        // The page's links are relative to /console.
        .route("/console/", get(to_page))
        .route(
            "/console/console.js",
            get(|| asset(SCRIPT, "text/javascript")),
        )
        .route(
            "/console/charts.js",
            get(|| asset(CHARTS, "text/javascript")),
        )
        .route("/console/console.css", get(|| asset(STYLE, "text/css")))
        .route("/console/api/state", get(state))
        .route("/console/api/events", get(events))
        .route("/console/api/publish", post(publish))
        .route("/console/api/history", get(history))
}

/// `/console/` to `/console`, keeping the query (a `?token=` visit).
async fn to_page(uri: axum::http::Uri) -> Response {
    match uri.query() {
        Some(query) => Redirect::permanent(&format!("/console?{query}")).into_response(),
        None => Redirect::permanent("/console").into_response(),
    }
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

#[derive(Deserialize)]
struct PageQuery {
    token: Option<String>,
}

async fn page(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    let guard = &shared.admin.guard;
    let signed_in = match &query.token {
        Some(given) => guard.sign_in(&headers, given),
        None => guard.authorize(&headers, Need::Read).map(|()| None),
    };
    match signed_in {
        Err(denied) => return denied.into_response(),
        Ok(Some(cookie)) => {
            // The token leaves the address bar (and the history) at once.
            let mut response = Redirect::to("/console").into_response();
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            return response;
        }
        Ok(None) => {}
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

/// The apps and their channels, members, cache contents and users, as the page shows them,
/// within the bounds of [`super::state`].
async fn state(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(denied) = shared.admin.guard.authorize(&headers, Need::Read) {
        return denied.into_response();
    }
    Json(super::state::collect(&shared).await).into_response()
}

/// The live log: one SSE message per row; a tab that fell behind gets a `dropped` row.
/// The stream ends when the node closes its console (at shutdown).
/// Each stream holds its admin connection busy (`busy`), so it keeps its slot; there are at
/// most [`super::MAX_STREAMS`], and one more is refused with 503.
async fn events(
    State(shared): State<Arc<Shared>>,
    busy: Option<Extension<Busy>>,
    headers: HeaderMap,
) -> Response {
    if let Err(denied) = shared.admin.guard.authorize(&headers, Need::Read) {
        return denied.into_response();
    }
    let Some(watch) = shared.console.try_watch(super::MAX_STREAMS) else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            Json(json!({ "error": format!(
                "The live log has its maximum of {} streams open: close a console tab",
                super::MAX_STREAMS
            ) })),
        )
            .into_response();
    };
    let held = busy.map(|Extension(busy)| busy.hold());
    let node_id = shared.node_id;
    Sse::new(rows(watch, held, node_id))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

fn rows(
    watch: super::Watch,
    held: Option<BusyGuard>,
    node_id: u32,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    futures_util::stream::unfold((watch, held), move |(mut watch, held)| async move {
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
        Some((Ok(Event::default().data(data)), (watch, held)))
    })
}

/// How many events the console shows of a channel's history at a time.
const HISTORY_PAGE: usize = 50;

#[derive(Deserialize)]
struct HistoryAsked {
    app: String,
    channel: String,
    /// Older than this serial (the page's "older" link); the newest without it.
    before: Option<u64>,
}

/// A channel's last events (at most [`HISTORY_PAGE`], before `before`), from the node's
/// history: what `GET /apps/{id}/channels/{channel}/events` answers.
async fn history(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(asked): Query<HistoryAsked>,
) -> Response {
    if let Err(denied) = shared.admin.guard.authorize(&headers, Need::Read) {
        return denied.into_response();
    }
    let Some(app) = shared.apps.by_id(&asked.app) else {
        let error = format!("Unknown app id '{}'", asked.app);
        return (StatusCode::NOT_FOUND, Json(json!({ "error": error }))).into_response();
    };
    let max = app.config().limits.max_channel_name_length;
    if let Err(error) = herald_protocol::channel::validate_channel_name(&asked.channel, max) {
        let error = error.to_string();
        return (StatusCode::BAD_REQUEST, Json(json!({ "error": error }))).into_response();
    }
    let query = crate::history::Query {
        limit: HISTORY_PAGE,
        before: asked.before,
        after: None,
    };
    match shared
        .adapter
        .history
        .page(&app, &asked.channel, query)
        .await
    {
        Ok(page) => Json(page).into_response(),
        Err(error) => {
            let status = match error {
                crate::history::HistoryError::Off => StatusCode::NOT_FOUND,
                crate::history::HistoryError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            (status, Json(json!({ "error": error.to_string() }))).into_response()
        }
    }
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
/// Guarded before a byte of the body is read; the body is bounded in size and time.
async fn publish(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    if let Err(denied) = shared.admin.guard.authorize(request.headers(), Need::Write) {
        return denied.into_response();
    }
    let read = axum::body::to_bytes(request.into_body(), MAX_PUBLISH_BYTES);
    let body = match tokio::time::timeout(shared.config.net.body_timeout, read).await {
        Ok(Ok(body)) => body,
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": format!("The body did not arrive whole (at most {MAX_PUBLISH_BYTES} bytes, in time)") })),
            )
                .into_response()
        }
    };
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
    let data = match serde_json::value::to_raw_value(&event.data) {
        Ok(data) => data,
        Err(error) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": error.to_string() })),
            )
                .into_response()
        }
    };
    let mut trigger = TriggerBody::default();
    trigger.name = Some(event.name.as_str().into());
    trigger.data = Some(RawJson(&data));
    trigger.channels = Some(event.channels.iter().map(|c| c.as_str().into()).collect());
    trigger.socket_id = event.socket_id.as_deref().map(Into::into);
    let body = serde_json::to_string(&trigger).unwrap_or_default();
    match crate::http::events::trigger_body(&shared, &app, body.as_bytes(), None).await {
        Ok(_) => Json(json!({ "ok": true })).into_response(),
        Err(error) => (error.status, Json(json!({ "error": error.message }))).into_response(),
    }
}
