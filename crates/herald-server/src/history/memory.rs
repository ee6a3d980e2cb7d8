//! A single node's history: each app keeps its channels' last events in its own
//! [`Rings`](super::rings::Rings).

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use herald_protocol::history::HistoryPage;
use tokio::time::Instant;

use super::query::Query;
use super::{History, HistoryError};
use crate::apps::App;

/// The history of a node that shares nothing: each app's rings.
pub(crate) struct Memory;

impl History for Memory {
    fn record(&self, app: &App, channel: &str, frame: &Bytes) {
        let limits = app.config().history;
        if limits.on() {
            app.history
                .record(channel, frame.clone(), &limits, Instant::now(), unix_ms());
        }
    }

    fn page<'a>(
        &'a self,
        app: &'a App,
        channel: &'a str,
        query: Query,
    ) -> BoxFuture<'a, Result<HistoryPage, HistoryError>> {
        let limits = app.config().history;
        let page = if limits.on() {
            Ok(app.history.page(channel, query, &limits, Instant::now()))
        } else {
            Err(HistoryError::Off)
        };
        Box::pin(std::future::ready(page))
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
