//! What a hub answers about its channels without changing them: counts, members,
//! subscriptions and the outboxes of a user's connections. Each takes a shard's read lock
//! for the time of a copy.

use std::sync::Arc;

use super::{ChannelCounts, ConnId, Hub, HubTotals, LocalMember};
use crate::outbox::Outbox;

impl Hub {
    /// This node's connections subscribed to `channel` as `user_id`.
    pub fn member_connections(&self, channel: &str, user_id: &str) -> u32 {
        let shard = self.shard(channel).read();
        shard
            .get(channel)
            .and_then(|ch| ch.members.iter().find(|(id, _)| id.as_ref() == user_id))
            .map_or(0, |(_, m)| m.connections)
    }

    /// Whether `conn` is subscribed to `channel` on this node.
    pub fn is_subscribed(&self, channel: &str, conn: ConnId) -> bool {
        let shard = self.shard(channel).read();
        shard
            .get(channel)
            .is_some_and(|ch| ch.subscribers.contains_key(&conn))
    }

    /// The presence members of `channel` on this node.
    pub fn local_members(&self, channel: &str) -> Vec<LocalMember> {
        let shard = self.shard(channel).read();
        shard.get(channel).map_or_else(Vec::new, |ch| {
            ch.members
                .iter()
                .map(|(id, m)| LocalMember {
                    user_id: id.clone(),
                    user_info: m.user_info.clone(),
                    connections: m.connections,
                })
                .collect()
        })
    }

    /// Every channel with a subscriber on this node, server-to-user channels included.
    pub fn all_channels(&self) -> Vec<(String, ChannelCounts)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            for (name, ch) in shard.read().iter() {
                out.push((
                    name.to_string(),
                    ChannelCounts {
                        subscription_count: ch.subscribers.len(),
                        user_count: ch.members.len(),
                    },
                ));
            }
        }
        out
    }

    /// The outboxes of `channel`'s subscribers that joined as presence member `user_id`.
    pub fn member_outboxes(&self, channel: &str, user_id: &str) -> Vec<Arc<Outbox>> {
        let shard = self.shard(channel).read();
        shard.get(channel).map_or_else(Vec::new, |ch| {
            ch.subscribers
                .values()
                .filter(|s| s.user_id.as_deref() == Some(user_id))
                .map(|s| s.outbox.clone())
                .collect()
        })
    }

    /// Whether some subscriber of `channel` passes `test`.
    pub fn any_subscriber(&self, channel: &str, test: impl Fn(&Outbox) -> bool) -> bool {
        let shard = self.shard(channel).read();
        shard
            .get(channel)
            .is_some_and(|ch| ch.subscribers.values().any(|s| test(&s.outbox)))
    }

    /// Frames publishes have queued to subscribers since the hub was made.
    pub fn deliveries(&self) -> u64 {
        self.deliveries.get()
    }

    /// Channels, subscriptions and presence members on this node, read shard by shard
    /// (a scrape's view: each shard is exact, the sum is not one instant).
    pub fn totals(&self) -> HubTotals {
        let mut totals = HubTotals::default();
        for shard in self.shards.iter() {
            let shard = shard.read();
            totals.channels += shard.len();
            for ch in shard.values() {
                totals.subscriptions += ch.subscribers.len();
                totals.members += ch.members.len();
            }
        }
        totals
    }

    /// Whether `conn` is subscribed to `channel`, and as which presence user.
    pub fn subscription(&self, channel: &str, conn: ConnId) -> Option<Option<Arc<str>>> {
        let shard = self.shard(channel).read();
        shard
            .get(channel)?
            .subscribers
            .get(&conn)
            .map(|s| s.user_id.clone())
    }

    /// Subscription and user counts of one channel (zero when unoccupied).
    pub fn counts(&self, channel: &str) -> ChannelCounts {
        let shard = self.shard(channel).read();
        shard
            .get(channel)
            .map_or_else(ChannelCounts::default, |ch| ChannelCounts {
                subscription_count: ch.subscribers.len(),
                user_count: ch.members.len(),
            })
    }

    /// Distinct user ids on a presence channel, in join order.
    pub fn users(&self, channel: &str) -> Vec<String> {
        let shard = self.shard(channel).read();
        shard.get(channel).map_or_else(Vec::new, |ch| {
            ch.members.iter().map(|(id, _)| id.to_string()).collect()
        })
    }

    /// Every occupied channel whose name starts with `prefix`, with its counts, sorted by
    /// name so listings are stable.
    pub fn channels(&self, prefix: &str) -> Vec<(String, ChannelCounts)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.read();
            for (name, ch) in shard.iter() {
                if name.starts_with(prefix) && !name.starts_with('#') {
                    out.push((
                        name.to_string(),
                        ChannelCounts {
                            subscription_count: ch.subscribers.len(),
                            user_count: ch.members.len(),
                        },
                    ));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}
