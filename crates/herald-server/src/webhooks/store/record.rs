//! One stored batch: the exact signed body and where it goes, and its attempts so far.

use serde::{Deserialize, Serialize};

use super::{BatchId, Meta, StoreError};

/// A batch as the queue keeps it. The body is the bytes signed and sent, never rebuilt, so
/// a retry after a restart carries the same body and signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    /// Set by [`super::Queue::append`].
    #[serde(default)]
    pub(crate) id: BatchId,
    pub(crate) app_id: String,
    pub(crate) url: String,
    pub(crate) key: String,
    pub(crate) signature: String,
    pub(crate) body: String,
    /// The channels the body's events are on, for the order per channel after a restart.
    pub(crate) channels: Vec<String>,
    pub(crate) created_ms: u64,
    pub(crate) attempts: u32,
    /// When the next attempt is due (0: at once).
    pub(crate) next_attempt_ms: u64,
    #[serde(default)]
    pub(crate) dead_ms: Option<u64>,
    /// The HTTP status of the last attempt, when it got an answer.
    #[serde(default)]
    pub(crate) last_status: Option<u16>,
    /// Why the last attempt failed, for `herald webhooks show`.
    #[serde(default)]
    pub(crate) last_error: Option<String>,
    /// The id receivers know the batch by, when its place in the queue changed: a dead
    /// letter retried on a cluster's stream takes a new entry, and keeps its first id in
    /// `X-Herald-Webhook-Id` so a receiver that did process it can still drop it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sent_as: Option<BatchId>,
    /// Names the batch's write to a cluster's queue, the same on every try: a write that
    /// timed out may still have been applied, and the batch kept aside meanwhile must
    /// then not be added a second time when it moves there (`fallback.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) token: Option<u64>,
}

impl Record {
    /// The `X-Herald-Webhook-Id` of every attempt.
    pub(crate) fn header_id(&self) -> BatchId {
        self.sent_as.unwrap_or(self.id)
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        // Plain data of strings and integers: serialising it cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Record, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    pub(super) fn meta(&self, len: usize) -> Meta {
        Meta {
            app_id: self.app_id.as_str().into(),
            url: self.url.as_str().into(),
            len,
            created_ms: self.created_ms,
            dead_ms: self.dead_ms,
        }
    }
}
