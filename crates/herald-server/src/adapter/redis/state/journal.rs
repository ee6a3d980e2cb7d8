//! The changes of counting calls whose answer was lost.
//!
//! A call that times out (Redis paused, a partition) may still run when Redis comes back:
//! its answer, with the transition it made (a channel occupied or vacated, a member's first
//! connection or last), never reaches the node, so nobody would announce it, and the
//! resync's opposite change would then be announced alone (`member_added` twice in a row
//! to the webhooks). So the scripts journal every transition under the calling node, with
//! the call's number; the node knows which calls it never heard back from (numbered after
//! the last answered one), and announces their journaled transitions before it restates its
//! share. A journal is emptied once every call it holds was answered.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use redis::{Cmd, RedisResult};
use serde::Deserialize;
use tokio::time::Instant;

use super::StateTask;
use crate::adapter::redis::scripts::Stamp;
use crate::adapter::transitions::{self, ChannelEvents, Edge};
use crate::apps::App;

/// How often journals of answered calls are emptied.
const EMPTY_EVERY: Duration = Duration::from_secs(10);

/// One journaled transition, as the scripts write it.
#[derive(Debug, Deserialize)]
struct Entry {
    /// The call's number.
    s: String,
    /// `c`: a channel's occupation; `m`: a presence member.
    k: String,
    /// Occupied, or the member present, after the call.
    p: bool,
    c: String,
    /// The membership version (members only).
    #[serde(default)]
    v: u64,
    #[serde(default)]
    u: String,
    #[serde(default)]
    i: String,
}

impl StateTask {
    /// The stamp of a new counting call of `app`.
    pub(super) fn stamp(&self, app: &str) -> Stamp {
        self.journaled.lock().insert(app.into());
        Stamp {
            by: self.cluster.node_id,
            seq: self.calls.fetch_add(1, Ordering::Relaxed) + 1,
        }
    }

    /// Every counting call made so far was answered.
    pub(super) fn confirm(&mut self) {
        self.confirmed = self.calls.load(Ordering::Relaxed);
    }

    /// Announces the journaled transitions of the calls never answered, in `apps`, as
    /// their answers would have (frames, bus, webhooks), then empties the journals.
    pub(super) async fn replay_journals(&mut self, apps: &[Arc<App>]) -> RedisResult<()> {
        let unanswered = self.calls.load(Ordering::Relaxed) > self.confirmed;
        if unanswered {
            let keys = &self.cluster.keys;
            let node = self.cluster.node_id;
            let cmds = apps
                .iter()
                .map(|app| {
                    let key = keys.journal(app.id(), node);
                    (key.clone(), Cmd::lrange(key, 0, -1))
                })
                .collect();
            let lists: Vec<redis::Value> = self.conn.query_each(cmds).await?;
            let mut replayed = 0usize;
            for (app, entries) in apps.iter().zip(lists) {
                let entries: Vec<String> = redis::from_redis_value(&entries)?;
                for entry in entries {
                    let Ok(entry) = serde_json::from_str::<Entry>(&entry) else {
                        continue;
                    };
                    if entry.s.parse::<u64>().unwrap_or(0) <= self.confirmed {
                        continue;
                    }
                    replayed += 1;
                    self.announce(app, &entry);
                }
            }
            if replayed > 0 {
                tracing::info!(
                    changes = replayed,
                    "Cluster: changes made by calls whose answer was lost, announced now"
                );
            }
        }
        self.confirm();
        self.journal_due = Instant::now();
        self.empty_journals().await
    }

    fn announce(&self, app: &App, entry: &Entry) {
        match entry.k.as_str() {
            "c" => {
                let events = ChannelEvents {
                    occupied: entry.p,
                    vacated: !entry.p,
                    count: None,
                };
                transitions::channel_changed(&*self.cluster, app, &entry.c, events);
            }
            "m" => {
                let edge = if entry.p { Edge::First } else { Edge::Last };
                let info = Some(entry.i.as_str()).filter(|i| !i.is_empty());
                self.member_edge(
                    app,
                    &entry.c,
                    (&entry.u, info),
                    edge,
                    Some(entry.v),
                    None,
                    true,
                );
            }
            _ => {}
        }
    }

    /// Empties the journals of the apps with calls since the last time, once every call
    /// was answered and [`EMPTY_EVERY`] has passed.
    pub(super) async fn empty_journals(&mut self) -> RedisResult<()> {
        if self.calls.load(Ordering::Relaxed) > self.confirmed || Instant::now() < self.journal_due
        {
            return Ok(());
        }
        let apps: Vec<Box<str>> = self.journaled.lock().drain().collect();
        self.journal_due = Instant::now() + EMPTY_EVERY;
        if apps.is_empty() {
            return Ok(());
        }
        let keys = &self.cluster.keys;
        let node = self.cluster.node_id;
        let cmds = apps
            .iter()
            .map(|app| {
                let key = keys.journal(app, node);
                (key.clone(), Cmd::del(key))
            })
            .collect();
        let _: Vec<redis::Value> = self.conn.query_each(cmds).await?;
        Ok(())
    }
}
