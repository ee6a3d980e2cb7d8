//! The HTTP side: the Pusher HTTP API under `/apps/{id}` and the WebSocket endpoint
//! `/app/{key}`, on one router.

pub(crate) mod auth;
pub(crate) mod channels;
pub(crate) mod conn;
pub mod error;
pub(crate) mod events;
pub(crate) mod users;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;

use crate::{ws, Shared};

/// The server's routes.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let max_body = shared.config.net.max_body_bytes;
    let api = Router::new()
        .route("/apps/{app_id}/events", post(events::trigger))
        .route("/apps/{app_id}/batch_events", post(events::batch))
        .route("/apps/{app_id}/channels", get(channels::list))
        .route("/apps/{app_id}/channels/{channel}", get(channels::show))
        .route(
            "/apps/{app_id}/channels/{channel}/users",
            get(channels::users),
        )
        .route(
            "/apps/{app_id}/users/{user_id}/terminate_connections",
            post(users::terminate_connections),
        )
        .route_layer(axum::middleware::from_fn_with_state(shared.clone(), count));
    Router::new()
        .route("/", get(up))
        .route("/up", get(up))
        .route("/app/{key}", any(ws::connect))
        .merge(api)
        .fallback(ws::wrong_path)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(shared)
}

/// `/` and `/up`, kept for load balancers configured for Pusher-compatible servers; they
/// follow the admin listener's `/ready`.
async fn up(State(shared): State<Arc<Shared>>) -> Response {
    match crate::admin::unready(&shared) {
        None => "OK".into_response(),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response(),
    }
}

/// Counts an HTTP API request by app, route and status once it is answered. The app label
/// is set only for an app the node serves, so made-up ids cannot add series.
async fn count(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("", |p| route_label(p.as_str()));
    let app = req
        .uri()
        .path()
        .strip_prefix("/apps/")
        .and_then(|rest| rest.split('/').next())
        .and_then(|id| shared.apps.by_id(id));
    let response = next.run(req).await;
    let app_id = app.as_ref().map_or("", |a| a.config.id.as_str());
    shared
        .metrics
        .http_requests
        .with_label_values(&[app_id, route, response.status().as_str()])
        .inc();
    response
}

/// The route's short name, as Pusher's API reference names the endpoints.
fn route_label(path: &str) -> &'static str {
    match path {
        "/apps/{app_id}/events" => "events",
        "/apps/{app_id}/batch_events" => "batch_events",
        "/apps/{app_id}/channels" => "channels",
        "/apps/{app_id}/channels/{channel}" => "channel",
        "/apps/{app_id}/channels/{channel}/users" => "channel_users",
        "/apps/{app_id}/users/{user_id}/terminate_connections" => "terminate_connections",
        _ => "other",
    }
}
