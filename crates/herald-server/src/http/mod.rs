//! The HTTP side: the Pusher HTTP API under `/apps/{id}` and the WebSocket endpoint
//! `/app/{key}`, on one router.

pub(crate) mod auth;
pub(crate) mod channels;
pub(crate) mod conn;
pub mod error;
pub(crate) mod events;
pub(crate) mod users;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get, post};
use axum::Router;

use crate::{ws, Shared};

/// The server's routes.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let max_body = shared.config.net.max_body_bytes;
    Router::new()
        .route("/", get(|| async { "OK" }))
        .route("/up", get(|| async { "OK" }))
        .route("/app/{key}", any(ws::connect))
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
        .fallback(ws::wrong_path)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(shared)
}
