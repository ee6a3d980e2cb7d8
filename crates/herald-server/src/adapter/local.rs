//! A single node's backend: its hubs, registries and counters are the whole truth, so every
//! method is a direct call into them, in the caller's task, and every answer is ready at
//! once.

use std::future::ready;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;

use super::transitions::{self, Edge, Refusal};
use super::{Answer, Broker, Cached, Limits, Presence, Published, Rate, Subscription};
use crate::apps::{App, ConnectionSlot};
use crate::backend::Backend;
use crate::history::memory::Memory;
use crate::history::History;
use crate::hub::{ChannelCounts, PresenceRefused, Roster};
use crate::ids::{ConnId, SocketId};
use crate::outbox::Outbox;

/// The backend of a node that shares nothing.
pub(crate) struct Local {
    node_id: u32,
}

impl Local {
    pub(crate) fn new(node_id: u32) -> Self {
        Local { node_id }
    }

    fn except(&self, except: Option<SocketId>) -> Option<ConnId> {
        except.and_then(|s| s.on_node(self.node_id))
    }
}

/// Announces a channel's subscription count after a change. The count is the one the hub
/// holds now, not the one the change left: two subscribes racing past the hub's lock would
/// otherwise announce their counts in either order, and the last announced must be true.
fn announce_count(local: &Local, app: &App, channel: &str) {
    let now = app.hub.counts(channel).subscription_count;
    transitions::announce_count(local, app, channel, now);
}

impl Broker for Local {
    fn publish(&self, app: &App, channel: &str, frame: &Bytes, except: Option<SocketId>) -> usize {
        let except = self.except(except);
        if !app.config().history.on() {
            return app.hub.publish(channel, frame, except);
        }
        // The serial is given where the order of delivery is fixed.
        app.hub.publish_in_order(channel, frame, except, || {
            Memory.record(app, channel, frame);
        })
    }

    fn publish_cached(
        &self,
        app: &Arc<App>,
        channel: &str,
        frame: &Bytes,
        data: &str,
        except: Option<SocketId>,
    ) -> Published<'_> {
        let delivered = self.publish(app, channel, frame, except);
        app.cache
            .store(channel, frame.clone(), data, app.config().cache_ttl);
        Published::Now(delivered)
    }

    fn terminate_user(&self, app: &App, user: &str, code: u16) -> usize {
        app.users.terminate(user, code)
    }

    fn watchers(&self, app: &App, user: &str, online: bool) {
        app.users.notify_watchers(user, online);
    }
}

impl Presence for Local {
    fn subscribe(&self, app: &Arc<App>, sub: Subscription<'_>) -> bool {
        let Subscription {
            channel,
            socket,
            outbox,
            member,
            cache,
            recover,
        } = sub;
        let hub = &app.hub;
        let mut join = |outbox: &Outbox| -> u64 {
            if let Some(recover) = recover {
                crate::recovery::join(app, channel, recover, outbox);
            }
            // Serials are given under this lock: nothing replayed can come live.
            0
        };
        let joining = recover.is_some().then_some(&mut join as _);
        let (joined, user_id) = match member {
            Some(member) => {
                let roster = Roster::Here {
                    max_members: app.config().limits.max_presence_members,
                };
                match hub.join_presence_joining(
                    channel,
                    socket.conn,
                    outbox,
                    &member,
                    roster,
                    joining,
                ) {
                    Ok(joined) => (joined, Some(member.user_id)),
                    Err(PresenceRefused::Full { max }) => {
                        transitions::refuse(app, outbox, channel, Refusal::PresenceFull { max });
                        return false;
                    }
                }
            }
            None => (
                hub.subscribe_joining(channel, socket.conn, outbox, joining),
                None,
            ),
        };
        let (before, after) = joined.subscribers;
        let events = transitions::channel_events(channel, before, after);
        transitions::channel_webhooks(app, channel, events);
        if let (true, Some(user_id)) = (joined.member_added, &user_id) {
            // The hub told the other subscribers under its lock.
            transitions::member_webhook(app, channel, user_id, Edge::First);
        }
        // A new subscriber gets the channel's last event before the count that includes it.
        if cache {
            app.replay_cache(channel, outbox);
        }
        if events.count.is_some() {
            announce_count(self, app, channel);
        }
        true
    }

    fn unsubscribe(&self, app: &Arc<App>, channel: &str, conn: ConnId, _: &Arc<Outbox>) {
        let Some(left) = app.hub.unsubscribe(channel, conn) else {
            return;
        };
        if let Some(user_id) = &left.member_removed {
            // The hub told the other subscribers under its lock.
            transitions::member_webhook(app, channel, user_id, Edge::Last);
        }
        let events = transitions::channel_events(channel, left.remaining + 1, left.remaining);
        transitions::channel_webhooks(app, channel, events);
        if events.count.is_some() {
            announce_count(self, app, channel);
        }
    }

    fn signed_in(
        &self,
        app: &Arc<App>,
        user: &Arc<str>,
        first_here: bool,
        outbox: &Arc<Outbox>,
        watchlist: &[Arc<str>],
    ) {
        if !watchlist.is_empty() {
            transitions::answer_watchlist(outbox, watchlist, |u| app.users.is_online(u));
        }
        let edge = if first_here {
            Edge::First
        } else {
            Edge::Neither
        };
        transitions::user_changed(self, app, user, edge);
    }

    fn signed_out(&self, app: &Arc<App>, user: &Arc<str>, last_here: bool) {
        let edge = if last_here { Edge::Last } else { Edge::Neither };
        transitions::user_changed(self, app, user, edge);
    }

    fn channels<'a>(
        &'a self,
        app: &'a App,
        prefix: &'a str,
    ) -> Answer<'a, Vec<(String, ChannelCounts)>> {
        Box::pin(ready(Ok(app.hub.channels(prefix))))
    }

    fn counts<'a>(&'a self, app: &'a App, channel: &'a str) -> Answer<'a, ChannelCounts> {
        Box::pin(ready(Ok(app.hub.counts(channel))))
    }

    fn users<'a>(&'a self, app: &'a App, channel: &'a str) -> Answer<'a, Vec<String>> {
        Box::pin(ready(Ok(app.hub.users(channel))))
    }

    fn cached<'a>(&'a self, app: &'a App, channel: &'a str) -> Answer<'a, Option<Cached>> {
        let cached = app.cache.get(channel).map(|c| Cached {
            data: c.data,
            ttl: c.ttl,
        });
        Box::pin(ready(Ok(cached)))
    }
}

impl Limits for Local {
    fn admit(&self, app: &Arc<App>) -> Option<ConnectionSlot> {
        app.try_connect(0)
    }

    fn confirm<'a>(&'a self, _slot: &'a ConnectionSlot) -> Option<BoxFuture<'a, bool>> {
        None
    }

    fn release(&self, slot: ConnectionSlot) {
        drop(slot);
    }

    fn take<'a>(&'a self, app: &'a App, rate: Rate) -> BoxFuture<'a, bool> {
        let (second, _) = crate::ratelimit::now_windows();
        let limit = rate.limit(&app.config().limits);
        Box::pin(ready(rate.window(&app.rates).try_take(limit, second, 1)))
    }

    fn quota_exhausted<'a>(&'a self, app: &'a App) -> BoxFuture<'a, bool> {
        let (_, day) = crate::ratelimit::now_windows();
        let limit = app.config().limits.messages_per_day;
        Box::pin(ready(app.rates.messages.exhausted(limit, day)))
    }

    fn count_messages<'a>(
        &'a self,
        app: &'a App,
        delivered_here: u64,
        _channels: &'a [&'a str],
    ) -> BoxFuture<'a, ()> {
        let (_, day) = crate::ratelimit::now_windows();
        app.rates.messages.add(delivered_here, day);
        Box::pin(ready(()))
    }
}

impl Backend for Local {
    fn unavailable(&self) -> Option<&'static str> {
        None
    }

    fn metric_families(&self) -> Vec<prometheus::proto::MetricFamily> {
        Vec::new()
    }
}
