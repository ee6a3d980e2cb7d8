//! An app's auth endpoints for pusher-js, on axum: channel authorization (private,
//! presence, encrypted) at `/pusher/auth` and user sign-in at `/pusher/user-auth`.
//!
//! ```sh
//! PUSHER_URL=http://app-key:app-secret@127.0.0.1:6001/apps/1 cargo run -p herald-sdk --example axum_auth
//! ```
//!
//! A real app decides who may join what from its own session; here the user comes from an
//! `x-user-id` header so the example stays self-contained.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Form, Json, Router};
use herald_sdk::{ChannelAuth, Client, UserAuth};
use serde::Deserialize;
use serde_json::json;

/// What pusher-js posts to the channel authorization endpoint.
#[derive(Deserialize)]
struct ChannelRequest {
    socket_id: String,
    channel_name: String,
}

/// What pusher-js posts to the user authentication endpoint.
#[derive(Deserialize)]
struct UserRequest {
    socket_id: String,
}

fn current_user(headers: &HeaderMap) -> Option<String> {
    headers.get("x-user-id")?.to_str().ok().map(str::to_owned)
}

async fn authorize(
    State(pusher): State<Client>,
    headers: HeaderMap,
    Form(request): Form<ChannelRequest>,
) -> Result<Json<ChannelAuth>, (StatusCode, String)> {
    let user = current_user(&headers).ok_or((StatusCode::FORBIDDEN, "not logged in".into()))?;
    let member = request
        .channel_name
        .starts_with("presence-")
        .then(|| json!({"user_id": user, "user_info": {"name": format!("User {user}")}}));
    pusher
        .authorize_channel(&request.socket_id, &request.channel_name, member.as_ref())
        .map(Json)
        .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))
}

async fn authenticate(
    State(pusher): State<Client>,
    headers: HeaderMap,
    Form(request): Form<UserRequest>,
) -> Result<Json<UserAuth>, (StatusCode, String)> {
    let user = current_user(&headers).ok_or((StatusCode::FORBIDDEN, "not logged in".into()))?;
    pusher
        .authenticate_user(&request.socket_id, &json!({"id": user, "watchlist": []}))
        .map(Json)
        .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))
}

/// The app's routes; a function so tests can serve them on any listener.
fn app(pusher: Client) -> Router {
    Router::new()
        .route("/pusher/auth", post(authorize))
        .route("/pusher/user-auth", post(authenticate))
        .with_state(pusher)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pusher = Client::from_env()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!(
        "auth endpoints on http://{}/pusher/auth and /pusher/user-auth",
        listener.local_addr()?
    );
    axum::serve(listener, app(pusher)).await?;
    Ok(())
}
