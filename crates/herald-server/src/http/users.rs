//! `POST /apps/{id}/users/{user_id}/terminate_connections`: close every connection signed
//! in as a user, with the app's configured close code.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{Map, Value};

use super::auth::Authenticated;
use super::error::ApiError;
use crate::shared::Shared;

/// `POST /apps/{app_id}/users/{user_id}/terminate_connections`.
pub(crate) async fn terminate_connections(
    State(shared): State<Arc<Shared>>,
    Path((_app_id, user_id)): Path<(String, String)>,
    auth: Authenticated,
) -> Result<Json<Value>, ApiError> {
    terminate(&shared, &user_id, &auth)
}

/// `POST /users/{user_id}/terminate_connections`: the path the official Python library
/// (3.x) posts to, without `/apps/{app_id}`; the signing key names the app.
pub(crate) async fn terminate_connections_by_key(
    State(shared): State<Arc<Shared>>,
    Path(user_id): Path<String>,
    auth: Authenticated,
) -> Result<Json<Value>, ApiError> {
    terminate(&shared, &user_id, &auth)
}

fn terminate(
    shared: &Shared,
    user_id: &str,
    auth: &Authenticated,
) -> Result<Json<Value>, ApiError> {
    let code = auth.app.config().terminate_close_code;
    let connections = shared
        .adapter
        .broker
        .terminate_user(&auth.app, user_id, code);
    tracing::info!(app_id = %auth.app.id(), user_id, connections, "Terminating user connections");
    Ok(Json(Value::Object(Map::new())))
}
