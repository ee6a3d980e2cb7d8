//! Runs of subscriptions to non-presence channels: counted in Redis in one pipeline, with
//! the bus subscriptions of channels new to the node and the cache channels' events, then
//! confirmed in order.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::listening::subscribe_bus;
use super::{replay, StateTask};
use crate::adapter::redis::interest::Key;
use crate::adapter::redis::ops::Op;
use crate::adapter::redis::queries::{cache_entry, take_cached};
use crate::adapter::redis::scripts::Counter;
use crate::apps::App;
use crate::ids::ConnId;
use crate::outbox::Outbox;
use crate::recovery::Recover;

impl StateTask {
    /// Subscribes a run of connections to non-presence channels: counts them in Redis with
    /// one pipeline (the scripts run one after another, so each sees the one before), then
    /// confirms each in order with the events its count change calls for.
    pub(super) async fn subscribe_batch(&mut self, batch: Vec<Op>) {
        struct Item {
            app: Arc<App>,
            channel: Box<str>,
            conn: ConnId,
            outbox: Arc<Outbox>,
            cache: bool,
            /// This node's count with the subscription, if it is a new one.
            count: Option<usize>,
            change: Option<(i64, i64)>,
            recover: Option<Recover>,
        }
        let mut added: HashMap<(String, Box<str>), usize> = HashMap::new();
        let mut seen: HashSet<(ConnId, String, Box<str>)> = HashSet::new();
        let mut items = Vec::with_capacity(batch.len());
        for op in batch {
            let Op::Subscribe {
                app,
                channel,
                conn,
                outbox,
                cache,
                recover,
            } = op
            else {
                continue;
            };
            let key = (app.id().to_owned(), channel.clone());
            let repeated = !seen.insert((conn, key.0.clone(), key.1.clone()));
            let count = if repeated || app.hub.is_subscribed(&channel, conn) {
                None
            } else {
                let extra = added.entry(key).or_insert(0);
                *extra += 1;
                Some(app.hub.counts(&channel).subscription_count + *extra)
            };
            items.push(Item {
                app,
                channel,
                conn,
                outbox,
                cache,
                count,
                change: None,
                recover,
            });
        }
        let counted = items.iter().any(|i| i.count.is_some());
        // Channels new to this node need their bus subscription confirmed before their
        // first subscriber is: asked for together, during the counts' round trip.
        let fresh = self.want_bus(
            items
                .iter()
                .filter(|i| i.count.is_some())
                .map(|i| (i.app.id().into(), i.channel.clone())),
        );
        let bus = subscribe_bus(
            self.subscriber.clone(),
            self.bus_names(&fresh),
            self.bus_wait(),
        );
        let fresh: HashSet<Key> = fresh.into_iter().collect();
        if !self.healthy() {
            if counted {
                self.needs_resync();
            }
            bus.await;
        } else {
            let node = self.cluster.node_id;
            let keys = &self.cluster.keys;
            // The script once, then each count by the script's hash: a run is one app's.
            let mut pipe = redis::pipe();
            pipe.add_command(Counter::Channel.load()).ignore();
            for item in &items {
                let Some(n) = item.count else { continue };
                let stamp = self.stamp(item.app.id());
                let call = keys.channel_set(item.app.id(), &item.channel, node, n, stamp);
                pipe.add_command(call.evalsha());
            }
            let conn = &mut self.conn;
            let counts = async {
                if counted {
                    Some(pipe.query_async::<Vec<redis::Value>>(conn).await)
                } else {
                    None
                }
            };
            let (counts, ()) = tokio::join!(counts, bus);
            match counts {
                Some(Ok(replies)) => {
                    self.confirm();
                    let mut replies = replies.into_iter();
                    for item in items.iter_mut().filter(|i| i.count.is_some()) {
                        item.change = replies
                            .next()
                            .and_then(|v| redis::from_redis_value::<(i64, i64)>(&v).ok());
                    }
                }
                Some(Err(e)) => self.failed(&e),
                None => {}
            }
        }
        // The cache channels' events, asked for in one round trip (a flood of `cache-`
        // subscriptions must not cost one each), after the bus subscriptions are
        // confirmed: a later event reaches this node on the bus. Redis's copy wins over
        // this node's: Redis has every event answered so far, while the bus may still be
        // bringing the latest here. A channel new to this node did not hear the events
        // since its last subscriber left: its own copy goes.
        let mut refresh: Vec<(Arc<App>, Box<str>)> = Vec::new();
        let mut wanted = HashSet::new();
        for item in items.iter().filter(|i| i.cache) {
            let key: Key = (item.app.id().into(), item.channel.clone());
            if fresh.contains(&key) {
                item.app.cache.forget(&item.channel);
            }
            if wanted.insert(key) {
                refresh.push((item.app.clone(), item.channel.clone()));
            }
        }
        if self.healthy() && !refresh.is_empty() {
            let keys = &self.cluster.keys;
            let mut pipe = redis::pipe();
            for (app, channel) in &refresh {
                let key = keys.cache(app.id(), channel);
                pipe.hget(&key, "frame").hget(&key, "data").pttl(&key);
            }
            match pipe.query_async::<Vec<redis::Value>>(&mut self.conn).await {
                Ok(replies) => {
                    for ((app, channel), reply) in refresh.iter().zip(replies.chunks(3)) {
                        let [frame, data, ttl] = reply else { break };
                        let parsed = (
                            redis::from_redis_value::<Option<Vec<u8>>>(frame),
                            redis::from_redis_value::<Option<String>>(data),
                            redis::from_redis_value::<i64>(ttl),
                        );
                        if let (Ok(frame), Ok(data), Ok(ttl)) = parsed {
                            take_cached(app, channel, cache_entry(frame, data, ttl));
                        }
                    }
                }
                Err(e) => self.failed(&e),
            }
        }
        // Recovering subscriptions read what they missed, after the bus subscriptions
        // are confirmed (`replay.rs`).
        let mut prepared = Vec::new();
        for item in &items {
            if let Some(recover) = &item.recover {
                prepared.push(Some(self.prepare(&item.app, &item.channel, recover).await));
            } else {
                prepared.push(None);
            }
        }
        for (item, prepared) in items.into_iter().zip(prepared) {
            match (&item.recover, prepared) {
                (Some(recover), Some(mut prepared)) => {
                    let (app, channel) = (&item.app, &*item.channel);
                    let mut joining = |outbox: &Outbox| {
                        replay::join(app, channel, recover, &mut prepared, outbox)
                    };
                    app.hub
                        .subscribe_joining(channel, item.conn, &item.outbox, Some(&mut joining));
                }
                _ => {
                    item.app
                        .hub
                        .subscribe(&item.channel, item.conn, &item.outbox);
                }
            }
            if item.cache {
                item.app.replay_cache(&item.channel, &item.outbox);
            }
            if let Some((before, after)) = item.change {
                self.channel_events(&item.app, &item.channel, before, after);
            }
        }
    }
}
