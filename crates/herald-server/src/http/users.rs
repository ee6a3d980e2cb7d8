//! `POST /apps/{id}/users/{user_id}/terminate_connections`: close every connection signed
//! in as a user, with the app's configured close code.

use axum::extract::Path;
use axum::Json;
use serde_json::{Map, Value};

use super::auth::Authenticated;
use super::error::ApiError;

/// `POST /apps/{app_id}/users/{user_id}/terminate_connections`.
pub(crate) async fn terminate_connections(
    Path((_app_id, user_id)): Path<(String, String)>,
    auth: Authenticated,
) -> Result<Json<Value>, ApiError> {
    terminate(user_id, auth)
}

/// `POST /users/{user_id}/terminate_connections`: the path the official Python library
/// (3.x) posts to, without `/apps/{app_id}`; the signing key names the app.
pub(crate) async fn terminate_connections_by_key(
    Path(user_id): Path<String>,
    auth: Authenticated,
) -> Result<Json<Value>, ApiError> {
    terminate(user_id, auth)
}

fn terminate(user_id: String, auth: Authenticated) -> Result<Json<Value>, ApiError> {
    let code = auth.app.config().terminate_close_code;
    let connections = auth.app.users.terminate(&user_id, code);
    tracing::info!(app_id = %auth.app.id(), user_id, connections, "Terminating user connections");
    if let Some(cluster) = auth.app.cluster() {
        cluster.send(&crate::adapter::bus::BusMessage::Terminate {
            app: auth.app.id().to_owned(),
            user: user_id,
            code,
        });
    }
    Ok(Json(Value::Object(Map::new())))
}
