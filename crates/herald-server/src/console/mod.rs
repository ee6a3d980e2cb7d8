//! The live console (`/console` on the admin listener): a page that shows the node's apps,
//! channels, members and users, and a live log of what happens on the node.
//!
//! The log is fed by a tap: each place that does something worth showing (a connection
//! opening or closing, a subscription, a publish, a client event, a webhook, a refusal)
//! calls [`AppConsole::emit`]. With no console open that is one atomic load; with one
//! open, the row is built and put on a bounded broadcast channel, which never waits: a tab
//! that falls behind loses the oldest rows and is told how many. At shutdown, once the
//! webhooks are flushed, [`Console::close`] ends every tab's stream, so an open tab never
//! holds the process.

mod app_view;
mod routes;
mod state;

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

pub(crate) use routes::router;

/// Rows a console tab may fall behind by before it loses the oldest.
const BACKLOG: usize = 1024;
/// Live-log streams open at once: each holds an admin connection busy for as long as it
/// is open, so they are capped below the admin listener's slots.
pub(crate) const MAX_STREAMS: usize = 8;
/// Longest data preview in a row, in bytes.
pub(crate) const PREVIEW_BYTES: usize = 1024;

/// One node's console feed.
#[derive(Debug, Default)]
pub(crate) struct Console {
    watchers: AtomicUsize,
    node_id: AtomicU32,
    /// Made by the first tab: its backlog is allocated up front, and most nodes (and every
    /// `AppMetrics::default()`) never have a tab.
    rows: OnceLock<broadcast::Sender<Arc<str>>>,
    /// Cancelled when the node stops: every tab's stream ends (a new one at once).
    closed: CancellationToken,
}

impl Console {
    pub(crate) fn set_node_id(&self, node_id: u32) {
        self.node_id.store(node_id, Ordering::Relaxed);
    }

    pub(crate) fn node_id(&self) -> u32 {
        self.node_id.load(Ordering::Relaxed)
    }

    /// Ends every tab's stream, and those opened later at once: the node is stopping.
    pub(crate) fn close(&self) {
        self.closed.cancel();
    }

    /// Whether a console is open: the one thing a tap costs while none is.
    #[inline]
    fn watched(&self) -> bool {
        self.watchers.load(Ordering::Relaxed) > 0
    }

    /// A console tab's feed; the tap stays on while it lives.
    #[cfg(test)]
    pub(crate) fn watch(self: &Arc<Self>) -> Watch {
        self.try_watch(usize::MAX).expect("no cap")
    }

    /// A console tab's feed, unless `max` are open already.
    pub(crate) fn try_watch(self: &Arc<Self>, max: usize) -> Option<Watch> {
        self.watchers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < max).then_some(open + 1)
            })
            .ok()?;
        let rows = self
            .rows
            .get_or_init(|| broadcast::Sender::new(BACKLOG))
            .subscribe();
        Some(Watch {
            rows,
            console: self.clone(),
        })
    }

    fn send(&self, app: &str, kind: &'static str, fields: impl FnOnce(&mut Map<String, Value>)) {
        if !self.watched() {
            return;
        }
        let Some(rows) = self.rows.get() else {
            return;
        };
        let mut row = Map::new();
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        row.insert("time_ms".into(), time_ms.into());
        row.insert("node_id".into(), self.node_id().into());
        row.insert("app".into(), app.into());
        row.insert("kind".into(), kind.into());
        fields(&mut row);
        // No receiver left (the last tab just closed) is not an error.
        let _ = rows.send(Value::Object(row).to_string().into());
    }
}

/// A console tab's feed of rows.
pub(crate) struct Watch {
    pub(crate) rows: broadcast::Receiver<Arc<str>>,
    console: Arc<Console>,
}

impl Watch {
    /// The next row, or why there is none; `None` once the console is closed.
    pub(crate) async fn next(&mut self) -> Option<Result<Arc<str>, broadcast::error::RecvError>> {
        tokio::select! {
            biased;
            () = self.console.closed.cancelled() => None,
            row = self.rows.recv() => Some(row),
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.console.watchers.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An app's end of its node's console: what the app's code paths emit rows through.
#[derive(Debug, Clone, Default)]
pub(crate) struct AppConsole {
    console: Arc<Console>,
    app: Arc<str>,
}

impl AppConsole {
    pub(crate) fn new(console: &Arc<Console>, app: &str) -> Self {
        AppConsole {
            console: console.clone(),
            app: app.into(),
        }
    }

    /// Emits a row of `kind` if a console is open; `fields` is only run then.
    #[inline]
    pub(crate) fn emit(&self, kind: &'static str, fields: impl FnOnce(&mut Map<String, Value>)) {
        self.console.send(&self.app, kind, fields);
    }
}

/// `data` cut to [`PREVIEW_BYTES`] at a character boundary, with `truncated` set when cut.
pub(crate) fn preview(row: &mut Map<String, Value>, data: &str) {
    if data.len() <= PREVIEW_BYTES {
        row.insert("data".into(), data.into());
        return;
    }
    let mut end = PREVIEW_BYTES;
    while !data.is_char_boundary(end) {
        end -= 1;
    }
    row.insert("data".into(), data[..end].into());
    row.insert("truncated".into(), true.into());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_flow_only_while_watched_and_a_slow_tab_loses_the_oldest() {
        let console = Arc::new(Console::default());
        let app = AppConsole::new(&console, "1");
        let built = std::cell::Cell::new(0);
        app.emit("subscribed", |_| built.set(built.get() + 1));
        assert_eq!(built.get(), 0, "nothing is built with no console open");
        let mut watch = console.watch();
        for i in 0..BACKLOG + 10 {
            app.emit("api_publish", |row| {
                row.insert("i".into(), i.into());
            });
        }
        match watch.rows.try_recv() {
            Err(broadcast::error::TryRecvError::Lagged(n)) => assert_eq!(n, 10),
            other => panic!("the oldest rows dropped: {other:?}"),
        }
        let row: Value =
            serde_json::from_str(&watch.rows.try_recv().expect("a row")).expect("json");
        assert_eq!(
            (row["app"].as_str(), row["kind"].as_str()),
            (Some("1"), Some("api_publish"))
        );
        drop(watch);
        app.emit("subscribed", |_| built.set(built.get() + 1));
        assert_eq!(built.get(), 0, "off again once the tab is gone");
    }

    #[tokio::test]
    async fn closing_the_console_ends_every_stream_open_or_opened_later() {
        let console = Arc::new(Console::default());
        let app = AppConsole::new(&console, "1");
        let mut open = console.watch();
        app.emit("api_publish", |_| {});
        assert!(matches!(open.next().await, Some(Ok(_))));
        console.close();
        assert!(open.next().await.is_none(), "an open stream ends");
        assert!(
            console.watch().next().await.is_none(),
            "a new one ends at once"
        );
    }

    #[test]
    fn previews_are_capped_at_a_character_boundary() {
        let mut row = Map::new();
        preview(&mut row, &"é".repeat(PREVIEW_BYTES));
        let data = row["data"].as_str().expect("text");
        assert!(data.len() <= PREVIEW_BYTES && data.chars().all(|c| c == 'é'));
        assert_eq!(row["truncated"], true);
    }
}
