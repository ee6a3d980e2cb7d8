//! The adapter's traits over the cluster: what each call of a handler becomes on a Redis
//! node. Frames go to the local hub at once and on the bus to the other nodes; state
//! changes become ops for the state task, which answers the connection once Redis has
//! counted them; the HTTP API's queries and the cluster-wide limits ask Redis, and fall back
//! to this node's own counts while it does not answer. While the node knows Redis is away
//! (its health is down) the limits do not ask it at all, so a request does not wait out
//! Redis's timeout; a request that finds Redis away is logged at most once per interval
//! (`Cluster::request_failed`), not once per request.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;

use super::ops::{Join, Op};
use super::{bus::BusMessage, Cluster};
use crate::adapter::transitions::{self, Refusal};
use crate::adapter::{
    AdapterError, Answer, Broker, Cached, Limits, Presence, Published, Rate, Subscription,
};
use crate::apps::{App, ConnectionSlot};
use crate::hub::ChannelCounts;
use crate::ids::{ConnId, SocketId};
use crate::outbox::Outbox;
use crate::ratelimit::now_windows;

impl Cluster {
    fn local_except(&self, except: Option<SocketId>) -> Option<ConnId> {
        except.and_then(|s| s.on_node(self.node_id))
    }

    /// An HTTP API query Redis did not answer.
    fn unavailable(&self, error: redis::RedisError) -> AdapterError {
        self.request_failed("a channel query; answered 503", &error);
        AdapterError::Unavailable(error.to_string())
    }

    /// Runs a read of the HTTP API, and runs it once more if the connection it went out on
    /// had dropped: after Redis restarts, the first request on the old socket fails
    /// ("broken pipe") while the client reconnects, and a read is safe to send again.
    async fn read<T, F, Fut>(&self, query: F) -> Result<T, AdapterError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match query().await {
            Err(e) if dropped(&e) => query().await,
            answer => answer,
        }
        .map_err(|e| self.unavailable(e))
    }
}

/// Whether a request failed because its connection was lost or refused, rather than by an
/// answer of Redis. Not a timeout: a Redis that does not answer would be waited for twice.
fn dropped(error: &redis::RedisError) -> bool {
    !error.is_timeout()
        && (error.is_connection_dropped() || error.is_io_error() || error.is_connection_refusal())
}

impl Broker for Cluster {
    fn publish(&self, app: &App, channel: &str, frame: &Bytes, except: Option<SocketId>) -> usize {
        let history = app.config().history;
        if history.on()
            && self
                .send_kept(app, channel, except, frame, None, history)
                .is_some()
        {
            // Delivered here too once Redis has given it its serial (`history.rs`): what
            // it will reach on this node is told now, for the message quota.
            return app.hub.counts(channel).subscription_count;
        }
        let delivered = app.hub.publish(channel, frame, self.local_except(except));
        self.send_event(app.id(), channel, except, frame, None);
        delivered
    }

    fn publish_ordered(
        &self,
        app: &Arc<App>,
        channel: &str,
        frame: &Bytes,
        except: Option<SocketId>,
    ) -> Published<'_> {
        let history = app.config().history;
        if history.on() {
            if let Some(kept) = self.send_kept(app, channel, except, frame, None, history) {
                let here = app.hub.counts(channel).subscription_count;
                return Published::Later(Box::pin(async move {
                    let _ = tokio::time::timeout(super::history::KEPT_WAIT, kept).await;
                    here
                }));
            }
        }
        Published::Now(self.publish(app, channel, frame, except))
    }

    fn publish_cached(
        &self,
        app: &Arc<App>,
        channel: &str,
        frame: &Bytes,
        data: &str,
        except: Option<SocketId>,
    ) -> Published<'_> {
        self.publish_stored(app, channel, frame, data, except)
    }

    fn terminate_user(&self, app: &App, user: &str, code: u16) -> usize {
        let here = app.users.terminate(user, code);
        self.send(&BusMessage::Terminate {
            app: app.id().to_owned(),
            user: user.to_owned(),
            code,
        });
        here
    }

    fn watchers(&self, app: &App, user: &str, online: bool) {
        app.users.notify_watchers(user, online);
        self.send(&BusMessage::Watch {
            app: app.id().to_owned(),
            user: user.to_owned(),
            online,
        });
    }
}

impl Presence for Cluster {
    fn subscribe(&self, app: &Arc<App>, sub: Subscription<'_>) -> bool {
        let Subscription {
            channel,
            socket,
            outbox,
            member,
            cache,
            recover,
        } = sub;
        let recover = recover.cloned();
        let op = match member {
            Some(member) => Op::Join(Box::new(Join {
                app: app.clone(),
                channel: channel.into(),
                conn: socket.conn,
                outbox: outbox.clone(),
                member,
                cache,
                recover,
            })),
            None => Op::Subscribe {
                app: app.clone(),
                channel: channel.into(),
                conn: socket.conn,
                outbox: outbox.clone(),
                cache,
                recover,
            },
        };
        if self.op_of(op, Some(outbox)).is_err() {
            transitions::refuse(app, outbox, channel, Refusal::Busy);
            return false;
        }
        true
    }

    fn unsubscribe(&self, app: &Arc<App>, channel: &str, conn: ConnId, outbox: &Arc<Outbox>) {
        // Never refused for a full queue; on a node that is leaving, `op` removes the
        // connection from the hub itself.
        let op = Op::Leave {
            app: app.clone(),
            channel: channel.into(),
            conn,
        };
        let _ = self.op_of(op, Some(outbox));
    }

    fn signed_in(
        &self,
        app: &Arc<App>,
        user: &Arc<str>,
        _first_here: bool,
        outbox: &Arc<Outbox>,
        watchlist: &[Arc<str>],
    ) {
        // A refused op needs nothing from the caller: `op` answers or restates it, and logs
        // refusals (rate-limited: a flood repeats them).
        if !watchlist.is_empty() {
            let op = Op::Watchlist {
                app: app.clone(),
                outbox: outbox.clone(),
                users: watchlist.to_vec(),
            };
            let _ = self.op_of(op, Some(outbox));
        }
        let op = Op::User {
            app: app.clone(),
            user: user.clone(),
        };
        let _ = self.op_of(op, Some(outbox));
    }

    fn signed_out(&self, app: &Arc<App>, user: &Arc<str>, _last_here: bool) {
        let _ = self.op(Op::User {
            app: app.clone(),
            user: user.clone(),
        });
    }

    fn channels<'a>(
        &'a self,
        app: &'a App,
        prefix: &'a str,
    ) -> Answer<'a, Vec<(String, ChannelCounts)>> {
        Box::pin(self.read(move || self.list_channels(app.id(), prefix)))
    }

    fn counts<'a>(&'a self, app: &'a App, channel: &'a str) -> Answer<'a, ChannelCounts> {
        Box::pin(self.read(move || self.channel_counts(app.id(), channel)))
    }

    fn users<'a>(&'a self, app: &'a App, channel: &'a str) -> Answer<'a, Vec<String>> {
        Box::pin(self.read(move || self.channel_users(app.id(), channel)))
    }

    fn cached<'a>(&'a self, app: &'a App, channel: &'a str) -> Answer<'a, Option<Cached>> {
        Box::pin(async move {
            // This node's copy is current while it hears the channel's events, which it
            // does while it has subscribers of it; otherwise Redis's, or this node's own
            // last publish while Redis has not stored it yet.
            let local = || {
                app.cache.get(channel).map(|c| Cached {
                    data: c.data,
                    ttl: c.ttl,
                })
            };
            if app.hub.counts(channel).subscription_count > 0 {
                if let Some(c) = local() {
                    return Ok(Some(c));
                }
            }
            let kept = self.read(|| self.cached_event(app.id(), channel)).await?;
            Ok(kept
                .map(|(_, data, ttl)| Cached {
                    data: data.into_boxed_str(),
                    ttl,
                })
                .or_else(local))
        })
    }
}

impl Limits for Cluster {
    fn admit(&self, app: &Arc<App>) -> Option<ConnectionSlot> {
        // The other nodes' counts as of their last heartbeats: a first check that needs no
        // Redis. The exact one is `confirm`'s; this one decides alone while Redis is away.
        app.try_connect(self.other_connections(app.id()))
    }

    fn confirm<'a>(&'a self, slot: &'a ConnectionSlot) -> Option<BoxFuture<'a, bool>> {
        let max = slot.config().limits.max_connections;
        if max == 0 {
            return None;
        }
        Some(Box::pin(async move {
            self.counts_connections_of(slot);
            // Without Redis the node's own count (and the others' last known) decide.
            if !self.redis_up() {
                return true;
            }
            match self
                .admit_connection(slot.id(), slot.connection_count(), max)
                .await
            {
                Ok(admitted) => admitted,
                Err(error) => {
                    self.request_failed("the connection count; admitted on this node's", &error);
                    true
                }
            }
        }))
    }

    fn release(&self, slot: ConnectionSlot) {
        let app = Arc::clone(&slot);
        drop(slot);
        // A limited app's cluster count must free the slot now, not at the next heartbeat.
        if app.config().limits.max_connections != 0 {
            let _ = self.op(Op::Connections { app });
        }
    }

    fn take<'a>(&'a self, app: &'a App, rate: Rate) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let (second, _) = now_windows();
            let limit = rate.limit(&app.config().limits);
            let local = || rate.window(&app.rates).try_take(limit, second, 1);
            if !self.redis_up() {
                return local();
            }
            match self
                .take_rate(app.id(), rate.name(), (second, 1), limit, 1)
                .await
            {
                Ok(allowed) => allowed,
                Err(error) => {
                    self.request_failed("a rate counter; counted on this node", &error);
                    local()
                }
            }
        })
    }

    fn quota_exhausted<'a>(&'a self, app: &'a App) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let limit = app.config().limits.messages_per_day;
            let (_, day) = now_windows();
            if !self.redis_up() {
                return app.rates.messages.exhausted(limit, day);
            }
            match self.used(app.id(), "messages", day).await {
                Ok(used) => used >= limit,
                Err(error) => {
                    self.request_failed("the message quota; read on this node", &error);
                    app.rates.messages.exhausted(limit, day)
                }
            }
        })
    }

    fn count_messages<'a>(
        &'a self,
        app: &'a App,
        delivered_here: u64,
        channels: &'a [&'a str],
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let (_, day) = now_windows();
            app.rates.messages.add(delivered_here, day);
            if !self.redis_up() {
                return;
            }
            if let Err(error) = self.count_published(app.id(), channels, day).await {
                self.request_failed("the message quota; counted on this node only", &error);
            }
        })
    }
}
