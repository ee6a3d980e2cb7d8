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
        .map_or(usize::MAX, |p| route_index(p.as_str()));
    let app = req
        .uri()
        .path()
        .strip_prefix("/apps/")
        .and_then(|rest| rest.split('/').next())
        .and_then(|id| shared.apps.by_id(id));
    let response = next.run(req).await;
    let status = response.status().as_u16();
    match app {
        Some(app) => app.metrics.http.count(route, status),
        None => shared.metrics.http_unknown_app.count(route, status),
    }
    response
}

/// The route's place in [`crate::metrics::ROUTES`].
fn route_index(path: &str) -> usize {
    match path {
        "/apps/{app_id}/events" => 0,
        "/apps/{app_id}/batch_events" => 1,
        "/apps/{app_id}/channels" => 2,
        "/apps/{app_id}/channels/{channel}" => 3,
        "/apps/{app_id}/channels/{channel}/users" => 4,
        "/apps/{app_id}/users/{user_id}/terminate_connections" => 5,
        _ => usize::MAX,
    }
}
