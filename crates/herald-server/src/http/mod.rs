//! The HTTP side: the Pusher HTTP API under `/apps/{id}` and the WebSocket endpoint
//! `/app/{key}`, on one router.

pub(crate) mod auth;
pub(crate) mod channels;
pub(crate) mod conn;
pub mod error;
pub(crate) mod events;
pub(crate) mod history;
pub(crate) mod users;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::response::Response;
use axum::routing::{any, get, post};
use axum::Router;

use crate::shared::Shared;
use crate::ws;

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
            "/apps/{app_id}/channels/{channel}/events",
            get(history::events),
        )
        .route(
            "/apps/{app_id}/users/{user_id}/terminate_connections",
            post(users::terminate_connections),
        )
        .route(
            "/users/{user_id}/terminate_connections",
            post(users::terminate_connections_by_key),
        );
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
/// answer as the admin listener's `/ready`.
async fn up(State(shared): State<Arc<Shared>>) -> Response {
    crate::admin::readiness(&shared)
}
