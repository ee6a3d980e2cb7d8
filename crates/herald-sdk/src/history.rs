//! A channel's history: the events it kept, each with its serial
//! (`GET /apps/{id}/channels/{channel}/events`).

pub use herald_protocol::history::{HistoryEvent, HistoryPage};

use crate::client::{decode, encode_segment, Client};
use crate::error::{invalid, Result};

/// Which part of a channel's history to read: by default the newest 100 events.
///
/// ```
/// let next = herald_sdk::HistoryQuery::new().limit(50).after(41);
/// # let _ = next;
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistoryQuery {
    /// At most this many events (1 to 1000; the server's default is 100).
    pub limit: Option<usize>,
    /// Only events with a serial below this one.
    pub before: Option<u64>,
    /// Only events with a serial above this one: the page then starts right after it.
    pub after: Option<u64>,
}

impl HistoryQuery {
    /// The newest events, as many as the server gives by default.
    pub fn new() -> Self {
        Self::default()
    }

    /// At most `limit` events.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Only events older than serial `serial` (to page backward).
    pub fn before(mut self, serial: u64) -> Self {
        self.before = Some(serial);
        self
    }

    /// Only events newer than serial `serial` (to page forward).
    pub fn after(mut self, serial: u64) -> Self {
        self.after = Some(serial);
        self
    }
}

impl Client {
    /// The events `channel` kept, oldest first, with their serials. The server keeps them
    /// only for an app with `history_max_events` set (otherwise it answers 404, an
    /// [`crate::Error`] with that status), and only on a single node for now (a cluster
    /// node answers 501).
    ///
    /// ```no_run
    /// # async fn demo(client: herald_sdk::Client) -> Result<(), herald_sdk::Error> {
    /// use herald_sdk::HistoryQuery;
    /// let page = client.history("my-channel", &HistoryQuery::new().limit(10)).await?;
    /// for event in &page.events {
    ///     println!("{} {} {}", event.serial, event.event, event.data);
    /// }
    /// // What was published since:
    /// let newer = client
    ///     .history("my-channel", &HistoryQuery::new().after(page.newest_serial))
    ///     .await?;
    /// # let _ = newer; Ok(()) }
    /// ```
    pub async fn history(&self, channel: &str, query: &HistoryQuery) -> Result<HistoryPage> {
        if channel.is_empty() {
            return Err(invalid("channel", "must not be empty"));
        }
        let (limit, before, after) = (
            query.limit.map(|n| n.to_string()),
            query.before.map(|n| n.to_string()),
            query.after.map(|n| n.to_string()),
        );
        let params: Vec<(&str, &str)> = [("limit", &limit), ("before", &before), ("after", &after)]
            .into_iter()
            .filter_map(|(name, value)| value.as_deref().map(|v| (name, v)))
            .collect();
        let path = format!("/channels/{}/events", encode_segment(channel));
        decode(self.get(&path, &params).await?)
    }
}
