//! A webhook receiver on axum: validates each POST with the SDK and logs its events.
//!
//! ```sh
//! PUSHER_URL=http://app-key:app-secret@127.0.0.1:6001/apps/1 cargo run -p herald-sdk --example webhook_receiver
//! ```
//!
//! Point an app's `[[apps.webhooks]]` `url` at `http://127.0.0.1:3001/pusher/webhook`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use herald_sdk::{Client, WebhookEvent};

async fn receive(State(pusher): State<Client>, headers: HeaderMap, body: Bytes) -> StatusCode {
    // Validate the raw bytes: re-serialising the JSON first would break the signature.
    let headers = headers
        .iter()
        .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)));
    match pusher.webhook(headers, &body) {
        Ok(hook) => {
            for event in hook.events {
                match event {
                    WebhookEvent::ChannelOccupied { channel } => println!("occupied: {channel}"),
                    WebhookEvent::ChannelVacated { channel } => println!("vacated: {channel}"),
                    WebhookEvent::MemberAdded { channel, user_id } => {
                        println!("{user_id} joined {channel}")
                    }
                    WebhookEvent::MemberRemoved { channel, user_id } => {
                        println!("{user_id} left {channel}")
                    }
                    other => println!("{other:?}"),
                }
            }
            StatusCode::OK
        }
        Err(error) => {
            eprintln!("rejected webhook: {error}");
            StatusCode::UNAUTHORIZED
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pusher = Client::from_env()?;
    let app = Router::new()
        .route("/pusher/webhook", post(receive))
        .with_state(pusher);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3001").await?;
    println!(
        "webhooks on http://{}/pusher/webhook",
        listener.local_addr()?
    );
    axum::serve(listener, app).await?;
    Ok(())
}
