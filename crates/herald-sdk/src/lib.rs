//! Server-side SDK for the Pusher Channels HTTP API, for Herald and any compatible service
//! (Pusher, soketi, sockudo): trigger events, query channels, sign channel and user auth
//! for pusher-js, validate webhooks, and encrypt payloads for `private-encrypted-` channels.
//!
//! It does what the official Node library does, async on tokio, with its sharp edges
//! fixed: URLs keep their port and non-numeric app ids, batches are validated and never
//! mutated, POSTs are never retried behind your back, and every failure is one typed
//! [`Error`] that carries the server's explanation.
//!
//! # Quick start
//!
//! ```no_run
//! # async fn demo() -> Result<(), herald_sdk::Error> {
//! use herald_sdk::{Client, EventData};
//!
//! // `herald serve` prints this URL at start-up.
//! let client = Client::from_url("http://app-key:app-secret@127.0.0.1:6001/apps/1")?;
//! client.trigger(&["my-channel"], "my-event", EventData::json(&serde_json::json!({"hello": "world"}))?).await?;
//!
//! // In your auth endpoint (pusher-js posts socket_id and channel_name):
//! let auth = client.authorize_channel("1234.5678", "private-my-channel", None)?;
//! let body = serde_json::to_string(&auth).expect("serializable");
//! # let _ = body; Ok(()) }
//! ```
#![deny(missing_docs)]

mod auth;
mod builder;
mod channels;
mod client;
mod data;
mod error;
mod events;
mod history;
mod users;
mod webhook;

pub use auth::{ChannelAuth, UserAuth};
pub use builder::ClientBuilder;
pub use channels::ChannelInfo;
pub use client::{Client, DEFAULT_MAX_BATCH};
pub use data::EventData;
pub use error::{Error, Result};
pub use events::{
    BatchEvent, BatchResponse, ChannelAttributes, TriggerParams, TriggerResponse, MAX_CHANNELS,
};
pub use history::{HistoryEvent, HistoryPage, HistoryQuery};
pub use webhook::{Webhook, WebhookEvent, WebhookOptions};
