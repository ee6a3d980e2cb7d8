//! Presence membership as this node tells its subscribers: a [`Roster`] for each presence
//! channel with subscribers here, the frames its changes call for, and the bus messages
//! that carry a change this node made in Redis to the other nodes.
//!
//! Every `member_added` and `member_removed` a subscriber gets on a cluster node comes out of
//! the channel's roster, under its lock: a change this node made (a join, a leave, a reap,
//! a restatement), one another node made and sent on the bus, a member list read from
//! Redis (a new subscriber's, or a recount after a gap), or one made while Redis was away.
//! So a subscriber's list only ever changes by the frames it gets, in one order, whatever
//! order the changes come in (see `roster.rs` for the rules).
//!
//! Lock order: the rosters' lock, then a hub shard (the frames are pushed while it is held).

use std::collections::HashMap;
use std::sync::Arc;

use herald_protocol::frame;
use parking_lot::Mutex;

use super::bus::BusMessage;
use super::interest::Key;
use super::roster::{Change, Roster};
use super::{bus, publisher, Cluster};
use crate::apps::App;
use crate::ids::ConnId;
use crate::wire;

/// Changes a roster keeps since its last list before the node reads the lists again (they
/// are kept per user, departed users included: a busy lobby's would grow all day).
const KEPT_BEFORE_RELIST: usize = 1024;

/// A member list as Redis holds it: users and their `user_info`.
pub(super) type MemberList = Vec<(String, Option<String>)>;

/// The rosters of the presence channels this node has subscribers of, by app and channel.
#[derive(Default)]
pub(super) struct Rosters {
    map: Mutex<HashMap<Key, Roster>>,
}

/// A membership change as Redis decided it.
pub(super) struct Membership<'a> {
    pub user: &'a str,
    pub info: Option<&'a str>,
    pub present: bool,
    /// The channel's membership version after the change; `None` while Redis is away.
    pub version: Option<u64>,
}

/// Pushes the frames `changes` call for to the channel's subscribers on this node but
/// `except`.
fn tell(app: &App, channel: &str, changes: &[Change], except: Option<ConnId>) {
    for change in changes {
        let frame = match change {
            Change::Added { user, info } => wire::member_added(channel, user, info.as_deref()),
            Change::Removed { user } => wire::member_removed(channel, user),
        };
        app.hub.publish(channel, &frame, except);
    }
}

/// `user, info, user, info, ...` as the member scripts return them, `""` for no info.
pub(super) fn pairs(flat: &[String]) -> MemberList {
    flat.chunks(2)
        .filter_map(|pair| match pair {
            [user, info] => Some((user.clone(), Some(info.clone()).filter(|i| !i.is_empty()))),
            _ => None,
        })
        .collect()
}

impl Rosters {
    /// A new subscriber's member list: `list`, read from Redis at `version` (`None` while
    /// Redis is away: the roster as it stands, or this node's own members if it has none),
    /// applied to the channel's roster first; what that changes is told to the subscribers
    /// already here. Returns the `presence` data for its `subscription_succeeded`.
    pub(super) fn join_list(
        &self,
        app: &App,
        channel: &str,
        listed: Option<(MemberList, u64)>,
    ) -> String {
        let mut map = self.map.lock();
        let key = (Box::<str>::from(app.id()), Box::<str>::from(channel));
        let fresh = !map.contains_key(&key);
        let roster = map.entry(key).or_default();
        let changes = match listed {
            Some((list, version)) => roster.list(list, version, |user| {
                app.hub.member_connections(channel, user) > 0
            }),
            None if fresh => {
                let mut changes = Vec::new();
                for member in app.hub.local_members(channel) {
                    changes.extend(roster.change_unversioned(
                        &member.user_id,
                        true,
                        member.user_info.as_deref(),
                    ));
                }
                changes
            }
            None => Vec::new(),
        };
        tell(app, channel, &changes, None);
        frame::presence_data(roster.members())
    }

    /// How many members the channel's roster lists, if this node has one.
    pub(super) fn len(&self, app: &App, channel: &str) -> Option<usize> {
        let map = self.map.lock();
        map.get(&(Box::<str>::from(app.id()), Box::<str>::from(channel)))
            .map(Roster::len)
    }

    /// Whether the channel's roster lists `user`.
    pub(super) fn contains(&self, app: &App, channel: &str, user: &str) -> bool {
        let map = self.map.lock();
        map.get(&(Box::<str>::from(app.id()), Box::<str>::from(channel)))
            .is_some_and(|roster| roster.contains(user))
    }

    /// Applies a membership change to the channel's roster, if this node has one, and tells
    /// the subscribers here but `except` what it changes. Returns whether the roster keeps
    /// so many changes that the lists should be read again.
    pub(super) fn change(
        &self,
        app: &App,
        channel: &str,
        change: &Membership<'_>,
        except: Option<ConnId>,
    ) -> bool {
        let mut map = self.map.lock();
        let Some(roster) = map.get_mut(&(Box::<str>::from(app.id()), Box::<str>::from(channel)))
        else {
            return false;
        };
        let told = match change.version {
            Some(version) => roster.change(change.user, change.present, change.info, version),
            None => roster.change_unversioned(change.user, change.present, change.info),
        };
        tracing::debug!(
            channel,
            user = change.user,
            present = change.present,
            version = ?change.version,
            told = told.is_some(),
            "Presence: a membership change"
        );
        if let Some(told) = told {
            tell(app, channel, &[told], except);
        }
        roster.kept() > KEPT_BEFORE_RELIST
    }

    /// A member list read from Redis at `version` for a channel that has a roster here (a
    /// recount after a gap or an outage): the subscribers here are told what it changes.
    pub(super) fn relist(&self, app: &App, channel: &str, list: MemberList, version: u64) {
        let mut map = self.map.lock();
        let Some(roster) = map.get_mut(&(Box::<str>::from(app.id()), Box::<str>::from(channel)))
        else {
            return;
        };
        let changes = roster.list(list, version, |user| {
            app.hub.member_connections(channel, user) > 0
        });
        tracing::debug!(channel, version, changes = ?changes, "Presence: a member list read again");
        tell(app, channel, &changes, None);
    }

    /// Drops the roster of a channel that has no subscribers here any more.
    pub(super) fn forget(&self, app: &str, channel: &str) {
        self.map
            .lock()
            .remove(&(Box::<str>::from(app), Box::<str>::from(channel)));
    }

    /// The channels with a roster, by app.
    pub(super) fn channels(&self) -> Vec<Key> {
        self.map.lock().keys().cloned().collect()
    }

    /// Redis lost its data, or a replica took over: versions count from another point now.
    pub(super) fn rebase(&self) {
        for roster in self.map.lock().values_mut() {
            roster.rebase();
        }
    }
}

impl Cluster {
    /// A change of membership this node made in Redis (or, with no version, on its own
    /// while Redis is away): told to its own subscribers but `except` (the joining
    /// connection, whose list holds it) and, with a version, sent to the other nodes.
    pub(super) fn member_changed(
        &self,
        app: &App,
        channel: &str,
        change: Membership<'_>,
        except: Option<ConnId>,
    ) {
        self.roster_change(app, channel, &change, except);
        let Some(version) = change.version else {
            return;
        };
        let message = BusMessage::Member {
            app: app.id().to_owned(),
            channel: channel.to_owned(),
            user: change.user.to_owned(),
            info: change.info.map(str::to_owned),
            present: change.present,
            version,
        };
        self.enqueue(publisher::Outgoing {
            channel: self.bus.channel_of(app.id(), channel),
            payload: bus::encode(self.node_id, &message),
            append: None,
            confirmed: None,
        });
    }

    /// A change another node made, heard on the bus.
    pub(super) fn member_heard(&self, app: &Arc<App>, channel: &str, change: Membership<'_>) {
        self.roster_change(app, channel, &change, None);
    }

    fn roster_change(
        &self,
        app: &App,
        channel: &str,
        change: &Membership<'_>,
        except: Option<ConnId>,
    ) {
        if self.rosters.change(app, channel, change, except) {
            self.signals.lock().relist = true;
            self.wake.notify_one();
        }
    }
}
