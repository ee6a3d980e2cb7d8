//! One app's channels on this node: who is subscribed to what, presence members, and the
//! fan-out of an encoded frame to every subscriber's outbox.
//!
//! Channels live in shards (by a hash of the name) behind read/write locks, so publishes to
//! different channels do not contend and a publish only takes a read lock. Nothing awaits
//! while a shard lock is held: pushing to an outbox is a short mutex-protected append.
//! Frames that must reach a subscriber before any channel event (its
//! `subscription_succeeded`) or that describe membership changes are pushed while the shard
//! lock is held, so every subscriber sees them in a consistent order. A presence channel's
//! `subscription_succeeded`, with a member list of up to ~100 KiB, is made (and compressed)
//! once per version of the list and kept: a repeated subscribe re-sends it for the cost of
//! queuing it, not of rebuilding it under the lock.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use bytes::Bytes;
use herald_protocol::frame;
use herald_protocol::presence::Member;
use parking_lot::RwLock;

use crate::metrics::clock_us;
use crate::metrics::sharded::ShardedCounter;
use crate::outbox::{Fanout, Outbox};
use crate::wire::{self, text_frame};

mod queries;

pub use crate::ids::ConnId;

const SHARDS: usize = 16;

type Shard = RwLock<HashMap<Box<str>, Channel>>;

#[derive(Debug)]
struct Subscriber {
    outbox: Arc<Outbox>,
    /// The presence member this connection joined as.
    user_id: Option<Arc<str>>,
}

#[derive(Debug)]
struct MemberEntry {
    user_info: Option<Box<str>>,
    /// Connections subscribed as this user: member events fire on the first and the last.
    connections: u32,
}

#[derive(Debug, Default)]
struct Channel {
    subscribers: HashMap<ConnId, Subscriber>,
    /// Distinct presence users, in join order so member lists are stable.
    members: Vec<(Arc<str>, MemberEntry)>,
    /// The `subscription_succeeded` with this node's member list, made when first asked
    /// for and dropped when the list changes. Boxed: most channels are not presence ones.
    roster: Option<Box<Fanout>>,
    /// Recovering subscribers that were replayed the channel's events through a serial
    /// the bus has not brought here yet: live events up to it are not sent to them again
    /// (a cluster's replay from its shared history). Empty but for a moment
    /// after such a join. Boxed: every channel pays one pointer for it.
    skips: Option<Box<[(ConnId, u64)]>>,
}

impl Channel {
    /// The `subscription_succeeded` listing this node's members, made if the list changed
    /// since it was last asked for.
    fn roster(&mut self, channel: &str) -> &Fanout {
        let roster = match self.roster.take() {
            Some(roster) => roster,
            None => Box::new(Fanout::new(text_frame(&frame::subscription_succeeded(
                channel,
                &presence_json(self),
            )))),
        };
        self.roster.insert(roster)
    }

    /// Runs a new subscriber's `joining` and keeps the serial it says to skip through.
    fn joined(&mut self, conn: ConnId, outbox: &Outbox, joining: Option<Joining<'_>>) {
        keep_skips(&mut self.skips, |(c, _)| *c != conn);
        if let Some(joining) = joining {
            let skip = joining(outbox);
            if skip > 0 {
                let mut skips = self.skips.take().map(Vec::from).unwrap_or_default();
                skips.push((conn, skip));
                self.skips = Some(skips.into());
            }
        }
    }

    /// Counts one more connection of `member`, adding it if it is new; returns its shared
    /// user id for the subscriber entry.
    fn add_member(&mut self, member: &Member) -> Arc<str> {
        match self
            .members
            .iter_mut()
            .find(|(id, _)| **id == *member.user_id)
        {
            Some((id, entry)) => {
                entry.connections += 1;
                id.clone()
            }
            None => {
                self.roster = None;
                let id: Arc<str> = Arc::from(member.user_id.as_str());
                self.members.push((
                    id.clone(),
                    MemberEntry {
                        user_info: member.user_info.as_deref().map(Box::from),
                        connections: 1,
                    },
                ));
                id
            }
        }
    }
}

/// What a new subscription runs under the channel's lock, once its
/// `subscription_succeeded` is queued and before any event published after the join can
/// be: recovery queues the events the connection's identity missed there. It returns the
/// serial through which it queued events that may still come live ([`Hub::publish_serial`]
/// then skips them for this connection), or 0.
pub type Joining<'a> = &'a mut (dyn FnMut(&Outbox) -> u64 + Send);

/// What a subscription did to the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Joined {
    /// The channel's subscribers on this node before and after, counted under its lock;
    /// the same when the connection was already subscribed (it got
    /// `subscription_succeeded` again).
    pub subscribers: (usize, usize),
    /// A presence user joined with its first connection, and the hub told the channel's
    /// other subscribers ([`Roster::Here`] only).
    pub member_added: bool,
}

impl Joined {
    /// The channel went from no subscribers to one.
    pub fn occupied(&self) -> bool {
        self.subscribers.0 == 0 && self.subscribers.1 > 0
    }

    /// The connection was already subscribed.
    pub fn already(&self) -> bool {
        self.subscribers.0 == self.subscribers.1
    }
}

/// The member list a presence join answers with, and who tells the channel's other
/// subscribers about the new member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roster<'a> {
    /// This node's members: the hub checks the limit and sends `member_added` (a single
    /// node, or a cluster node while the cluster's state is away).
    Here {
        /// The app's `max_presence_members`.
        max_members: usize,
    },
    /// The cluster's members, as `presence_data` JSON, after the cluster counted the new
    /// one against the limit; the cluster sends the member events.
    Cluster(&'a str),
}

/// Why a presence subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceRefused {
    /// The channel already has the maximum number of distinct users.
    Full {
        /// The limit.
        max: usize,
    },
}

/// What an unsubscription did to the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Left {
    /// The channel's subscribers on this node after it (one fewer than before).
    pub remaining: usize,
    /// The presence user whose last connection left.
    pub member_removed: Option<Arc<str>>,
    /// The presence user the connection was subscribed as, and how many of its
    /// connections remain on the channel.
    pub member: Option<(Arc<str>, u32)>,
}

/// One presence member on this node, for re-announcing local state to a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMember {
    /// The user.
    pub user_id: Arc<str>,
    /// The user's `user_info` JSON text.
    pub user_info: Option<Box<str>>,
    /// This node's connections subscribed as the user.
    pub connections: u32,
}

/// Counts for one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChannelCounts {
    /// Connections subscribed.
    pub subscription_count: usize,
    /// Distinct presence users.
    pub user_count: usize,
}

/// An app's channels on this node.
#[derive(Debug)]
pub struct Hub {
    shards: Box<[Shard]>,
    hasher: std::collections::hash_map::RandomState,
    /// Frames publishes queued to subscribers, for the metrics.
    deliveries: ShardedCounter,
}

/// What a node holds of an app, summed over its channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HubTotals {
    /// Channels with at least one subscriber.
    pub channels: usize,
    /// Subscriptions over all channels.
    pub subscriptions: usize,
    /// Distinct presence users per channel, summed.
    pub members: usize,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Self {
        Hub {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            deliveries: ShardedCounter::default(),
        }
    }

    fn shard(&self, channel: &str) -> &Shard {
        // SHARDS is a power of two; the low bits of SipHash are well mixed.
        &self.shards[(self.hasher.hash_one(channel) as usize) & (SHARDS - 1)]
    }

    /// Subscribes a connection to a non-presence channel and queues its
    /// `subscription_succeeded`.
    pub fn subscribe(&self, channel: &str, conn: ConnId, outbox: &Arc<Outbox>) -> Joined {
        self.subscribe_joining(channel, conn, outbox, None)
    }

    /// [`Hub::subscribe`], running `joining` under the channel's lock after the
    /// `subscription_succeeded`.
    pub fn subscribe_joining(
        &self,
        channel: &str,
        conn: ConnId,
        outbox: &Arc<Outbox>,
        joining: Option<Joining<'_>>,
    ) -> Joined {
        let mut shard = self.shard(channel).write();
        let ch = shard.entry(channel.into()).or_default();
        let before = ch.subscribers.len();
        if let Entry::Vacant(v) = ch.subscribers.entry(conn) {
            v.insert(Subscriber {
                outbox: outbox.clone(),
                user_id: None,
            });
        }
        let after = ch.subscribers.len();
        outbox.push(text_frame(&frame::subscription_succeeded(channel, "{}")));
        ch.joined(conn, outbox, joining);
        Joined {
            subscribers: (before, after),
            member_added: false,
        }
    }

    /// Subscribes a connection to a presence channel as `member` and queues its
    /// `subscription_succeeded` with the member list `roster` names. With
    /// [`Roster::Here`] the join is refused when the channel is full, and a user's first
    /// connection is announced (`member_added`) to the other subscribers under the
    /// channel's lock, before any event published after the join can reach them: the one
    /// place a node enforces `max_presence_members` and orders `member_added`, for a single
    /// node and for a cluster node while the cluster's state is away alike.
    pub fn join_presence(
        &self,
        channel: &str,
        conn: ConnId,
        outbox: &Arc<Outbox>,
        member: &Member,
        roster: Roster<'_>,
    ) -> Result<Joined, PresenceRefused> {
        self.join_presence_joining(channel, conn, outbox, member, roster, None)
    }

    /// [`Hub::join_presence`], running `joining` under the channel's lock after the
    /// `subscription_succeeded` of a new member.
    pub fn join_presence_joining(
        &self,
        channel: &str,
        conn: ConnId,
        outbox: &Arc<Outbox>,
        member: &Member,
        roster: Roster<'_>,
        joining: Option<Joining<'_>>,
    ) -> Result<Joined, PresenceRefused> {
        // The cluster's list comes made: it is framed before the lock is taken.
        let cluster = match roster {
            Roster::Cluster(data) => Some(Fanout::new(text_frame(&frame::subscription_succeeded(
                channel, data,
            )))),
            Roster::Here { .. } => None,
        };
        let mut shard = self.shard(channel).write();
        let ch = shard.entry(channel.into()).or_default();
        let before = ch.subscribers.len();
        let succeeded = |ch: &mut Channel| match &cluster {
            Some(frame) => outbox.push_shared(frame),
            None => outbox.push_shared(ch.roster(channel)),
        };
        if ch.subscribers.contains_key(&conn) {
            // A repeated subscribe only re-confirms; switching identity needs an unsubscribe.
            succeeded(ch);
            return Ok(Joined {
                subscribers: (before, before),
                member_added: false,
            });
        }
        let new_user = !ch.members.iter().any(|(id, _)| **id == *member.user_id);
        let here = match roster {
            Roster::Here { max_members } => {
                if new_user && ch.members.len() >= max_members {
                    if ch.subscribers.is_empty() {
                        shard.remove(channel);
                    }
                    return Err(PresenceRefused::Full { max: max_members });
                }
                true
            }
            Roster::Cluster(_) => false,
        };
        let user_id = ch.add_member(member);
        if new_user && here {
            let added = Fanout::new(wire::member_added(
                channel,
                &member.user_id,
                member.user_info.as_deref(),
            ));
            for sub in ch.subscribers.values() {
                sub.outbox.push_shared(&added);
            }
        }
        ch.subscribers.insert(
            conn,
            Subscriber {
                outbox: outbox.clone(),
                user_id: Some(user_id),
            },
        );
        succeeded(ch);
        ch.joined(conn, outbox, joining);
        Ok(Joined {
            subscribers: (before, before + 1),
            member_added: new_user && here,
        })
    }

    /// Removes a connection from a channel. On a presence channel, the user's last
    /// connection leaving sends `member_removed` to the remaining subscribers.
    pub fn unsubscribe(&self, channel: &str, conn: ConnId) -> Option<Left> {
        self.remove(channel, conn, true)
    }

    /// [`Hub::unsubscribe`] without `member_removed`: in a cluster the user may still be
    /// connected elsewhere, so the adapter decides and sends it.
    pub fn leave(&self, channel: &str, conn: ConnId) -> Option<Left> {
        self.remove(channel, conn, false)
    }

    fn remove(&self, channel: &str, conn: ConnId, member_events: bool) -> Option<Left> {
        let mut shard = self.shard(channel).write();
        let ch = shard.get_mut(channel)?;
        let sub = ch.subscribers.remove(&conn)?;
        let mut member_removed = None;
        let mut member = None;
        if let Some(user_id) = sub.user_id {
            if let Some(pos) = ch.members.iter().position(|(id, _)| *id == user_id) {
                let entry = &mut ch.members[pos].1;
                entry.connections = entry.connections.saturating_sub(1);
                member = Some((user_id.clone(), entry.connections));
                if entry.connections == 0 {
                    ch.members.remove(pos);
                    ch.roster = None;
                    if member_events {
                        let removed = Fanout::new(wire::member_removed(channel, &user_id));
                        for other in ch.subscribers.values() {
                            other.outbox.push_shared(&removed);
                        }
                    }
                    member_removed = Some(user_id);
                }
            }
        }
        let remaining = ch.subscribers.len();
        if remaining == 0 {
            shard.remove(channel);
        }
        Some(Left {
            remaining,
            member_removed,
            member,
        })
    }

    /// Queues `frame` for every subscriber of `channel` except `except`; returns how many
    /// got it. Subscribers that negotiated compression share one compressed copy, made here
    /// (under the shard's read lock, which only subscribes and unsubscribes wait for) when
    /// the first of them comes up: this node's copy, whatever other nodes do.
    pub fn publish(&self, channel: &str, frame: &Bytes, except: Option<ConnId>) -> usize {
        let shard = self.shard(channel).read();
        self.fan_out(shard.get(channel), frame, except)
    }

    fn fan_out(&self, ch: Option<&Channel>, frame: &Bytes, except: Option<ConnId>) -> usize {
        let Some(ch) = ch else {
            return 0;
        };
        let frame = Fanout::new(frame.clone());
        // One clock read per publish, not per subscriber: each outbox keeps the stamp of
        // its oldest unwritten event for the publish-to-write histogram.
        let at = clock_us();
        let mut delivered = 0;
        for (conn, sub) in &ch.subscribers {
            if Some(*conn) != except && sub.outbox.push_event(&frame, at) {
                delivered += 1;
            }
        }
        self.deliveries.add(delivered as u64);
        delivered
    }

    /// [`Hub::publish`] for an app that keeps history: `record` gives the event its serial
    /// under the channel's shard lock, taken exclusively, so that two publishes on one
    /// channel reach every subscriber in the order of their serials (recovery counts on
    /// it: what a client confirmed is a serial, and everything below it was delivered).
    pub fn publish_in_order(
        &self,
        channel: &str,
        frame: &Bytes,
        except: Option<ConnId>,
        record: impl FnOnce(),
    ) -> usize {
        let shard = self.shard(channel).write();
        record();
        self.fan_out(shard.get(channel), frame, except)
    }

    /// [`Hub::publish_in_order`] of an event whose serial was given elsewhere (the
    /// cluster's shared history): recovering subscribers replayed through it already are skipped.
    pub fn publish_serial(
        &self,
        channel: &str,
        frame: &Bytes,
        except: Option<ConnId>,
        serial: u64,
        record: impl FnOnce(),
    ) -> usize {
        let mut shard = self.shard(channel).write();
        record();
        let Some(ch) = shard.get_mut(channel) else {
            return 0;
        };
        let Some(skips) = &ch.skips else {
            return self.fan_out(Some(ch), frame, except);
        };
        let frame = Fanout::new(frame.clone());
        let at = clock_us();
        let mut delivered = 0;
        for (conn, sub) in &ch.subscribers {
            let skipped = skips.iter().any(|(c, s)| c == conn && serial <= *s);
            if !skipped && Some(*conn) != except && sub.outbox.push_event(&frame, at) {
                delivered += 1;
            }
        }
        keep_skips(&mut ch.skips, |(_, s)| *s > serial);
        self.deliveries.add(delivered as u64);
        delivered
    }

    /// Runs `f` while no publish on `channel` is between its serial and its fan-out
    /// ([`Hub::publish_in_order`]): a serial `f` reads has reached every subscriber's outbox.
    pub fn quiet<R>(&self, channel: &str, f: impl FnOnce() -> R) -> R {
        let _shard = self.shard(channel).read();
        f()
    }
}

/// Keeps the skips that pass `keep`; none at all once none is left.
fn keep_skips(skips: &mut Option<Box<[(ConnId, u64)]>>, keep: impl Fn(&(ConnId, u64)) -> bool) {
    if let Some(all) = skips.take() {
        let kept: Vec<_> = all.iter().copied().filter(|s| keep(s)).collect();
        *skips = (!kept.is_empty()).then(|| kept.into());
    }
}

fn presence_json(ch: &Channel) -> String {
    frame::presence_data(
        ch.members
            .iter()
            .map(|(id, m)| (id.as_ref(), m.user_info.as_deref())),
    )
}

#[cfg(test)]
mod tests;
