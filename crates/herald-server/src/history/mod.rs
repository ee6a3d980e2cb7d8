//! The history seam: each event published on a channel gets a serial, and the channel's
//! last events are kept, within the app's [`HistoryLimits`], for the history API
//! (`GET /apps/{id}/channels/{channel}/events`).
//!
//! HTTP triggers and batches and client events are all recorded: whatever a subscriber
//! receives as a channel event, a subscriber who was away would have missed. Cache
//! channels are recorded like any other and keep their own last-event replay.
//!
//! The backend's broker records (`adapter/local.rs`): the serial must be given where
//! the order of delivery is fixed, under the hub's channel lock ([`crate::hub::Hub::publish_in_order`]),
//! so that serial order is delivery order on every channel, which recovery counts on.
//!
//! A single node keeps history in memory ([`memory::Memory`], each app's rings in
//! [`crate::apps::App`]); the entry kept is the frame subscribers were sent, the same
//! shared bytes, so recording costs a reference count and no copy. A cluster keeps it in
//! its backend's shared state (the adapter's `history.rs`), where the serial is given as
//! the event is published, so every node reads the same history.

pub mod limits;
pub mod memory;
mod query;
pub mod rings;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use herald_protocol::history::HistoryPage;

#[cfg(doc)]
use self::limits::HistoryLimits;
pub(crate) use self::query::Query;
use crate::apps::App;

/// Why a history request has no page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HistoryError {
    /// The app keeps no history (`history_max_events` is 0).
    #[error("History is off for this app: set history_max_events to keep channel events")]
    Off,
    /// The cluster's shared state did not answer; the text says why.
    #[error("The cluster's history did not answer: {0}")]
    Unavailable(String),
}

/// Where a node keeps its channels' history.
pub(crate) trait History: Send + Sync {
    /// Gives an event published on `channel` its serial and keeps `frame` (the encoded
    /// WebSocket frame subscribers are sent) if the app keeps history. Costs one config
    /// load when it does not.
    fn record(&self, app: &App, channel: &str, frame: &Bytes);
    /// The part of `channel`'s history that `query` asks for.
    fn page<'a>(
        &'a self,
        app: &'a App,
        channel: &'a str,
        query: Query,
    ) -> BoxFuture<'a, Result<HistoryPage, HistoryError>>;
}
