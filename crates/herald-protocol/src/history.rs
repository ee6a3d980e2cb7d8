//! The history API's answer (`GET /apps/{id}/channels/{channel}/events`): the events a
//! channel kept, each with its serial. The server writes it and the SDK reads it with
//! these same types, so the two cannot drift.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The most events one history request may ask for (`limit`).
pub const MAX_LIMIT: usize = 1000;

/// How many events a history request gets when it gives no `limit`.
pub const DEFAULT_LIMIT: usize = 100;

/// One page of a channel's history, oldest event first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistoryPage {
    /// The events, in the order they were published (increasing serials).
    pub events: Vec<HistoryEvent>,
    /// The serial of the oldest event the channel still keeps; 0 when it keeps none. An
    /// event with a serial below it was evicted (by count, bytes or age).
    pub oldest_serial: u64,
    /// The serial of the newest event the channel kept; 0 when it keeps none.
    pub newest_serial: u64,
}

/// An event as it was published on the channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEvent {
    /// Increases by one with every event published on the channel, so a gap is an event
    /// that was evicted. A channel that kept nothing for a while (its history expired)
    /// starts again above every serial its app gave, never back at a serial a reader holds.
    pub serial: u64,
    /// The event name.
    pub event: String,
    /// The event's `data` as subscribers received it (a string for events triggered
    /// through the HTTP API; the ciphertext envelope on an encrypted channel).
    pub data: Value,
    /// The sender of a client event on a presence channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// When the server published it, in milliseconds since the Unix epoch.
    pub published_at_ms: u64,
}
