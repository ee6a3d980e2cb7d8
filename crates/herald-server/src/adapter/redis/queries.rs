//! The request side's questions to Redis: the HTTP API's channel, member and cache queries,
//! the limits counted for the whole cluster (rates, the daily quota, connections), and the
//! events of cache channels, stored before they are delivered. Each is one round trip; none
//! touches the state task's queue.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::AsyncCommands;

use super::Cluster;
use crate::adapter::Published;
use crate::apps::App;
use crate::hub::ChannelCounts;
use crate::ids::SocketId;

impl Cluster {
    /// Every occupied channel of `app` whose name starts with `prefix`, with cluster counts.
    pub(super) async fn list_channels(
        &self,
        app: &str,
        prefix: &str,
    ) -> redis::RedisResult<Vec<(String, ChannelCounts)>> {
        let mut conn = self.redis();
        let mut names: Vec<String> = conn.smembers(self.keys.chans(app)).await?;
        names.retain(|n| n.starts_with(prefix) && !n.starts_with('#'));
        names.sort();
        let mut pipe = redis::pipe();
        for name in &names {
            pipe.hvals(self.keys.subs(app, name));
            pipe.hlen(self.keys.members(app, name));
        }
        let replies: Vec<redis::Value> = if names.is_empty() {
            Vec::new()
        } else {
            pipe.query_async(&mut conn).await?
        };
        let mut out = Vec::with_capacity(names.len());
        for (name, pair) in names.into_iter().zip(replies.chunks(2)) {
            let counts = counts_from(pair)?;
            if counts.subscription_count > 0 {
                out.push((name, counts));
            }
        }
        Ok(out)
    }

    /// Cluster counts of one channel.
    pub(super) async fn channel_counts(
        &self,
        app: &str,
        channel: &str,
    ) -> redis::RedisResult<ChannelCounts> {
        let mut conn = self.redis();
        let replies: Vec<redis::Value> = redis::pipe()
            .hvals(self.keys.subs(app, channel))
            .hlen(self.keys.members(app, channel))
            .query_async(&mut conn)
            .await?;
        counts_from(&replies)
    }

    /// Takes `n` from the cluster's budget of `limit` (0: only count) for `kind` in the
    /// window starting at `window` and lasting `secs`.
    pub(super) async fn take_rate(
        &self,
        app: &str,
        kind: &str,
        (window, secs): (u64, u64),
        limit: u64,
        n: u64,
    ) -> redis::RedisResult<bool> {
        let mut conn = self.redis();
        self.scripts
            .rate_take
            .key(self.keys.rate(app, kind, window))
            .arg(limit)
            .arg(n)
            .arg(secs + 1)
            .invoke_async(&mut conn)
            .await
    }

    /// Counts the messages of events published to `channels` against the daily quota: one
    /// per channel plus one per subscriber in the cluster.
    pub(super) async fn count_published(
        &self,
        app: &str,
        channels: &[&str],
        day: u64,
    ) -> redis::RedisResult<()> {
        let mut conn = self.redis();
        let mut invocation = self
            .scripts
            .count_messages
            .key(self.keys.rate(app, "messages", day));
        for channel in channels {
            invocation.key(self.keys.subs(app, channel));
        }
        invocation
            .arg(86_401)
            .invoke_async::<i64>(&mut conn)
            .await
            .map(|_| ())
    }

    /// How much of `kind` the cluster used in the window starting at `window`.
    pub(super) async fn used(&self, app: &str, kind: &str, window: u64) -> redis::RedisResult<u64> {
        let mut conn = self.redis();
        let used: Option<u64> = conn.get(self.keys.rate(app, kind, window)).await?;
        Ok(used.unwrap_or(0))
    }

    /// Whether the app's connections across the cluster, with this node's `mine` (the new
    /// one included), stay within `max`.
    pub(super) async fn admit_connection(
        &self,
        app: &str,
        mine: usize,
        max: usize,
    ) -> redis::RedisResult<bool> {
        let mut conn = self.redis();
        self.scripts
            .admit
            .key(self.keys.conns(app))
            .arg(self.node_id)
            .arg(mine)
            .arg(max)
            .invoke_async(&mut conn)
            .await
    }

    /// A cache channel's last event as Redis holds it: frame, `data` token, time left.
    pub(super) async fn cached_event(
        &self,
        app: &str,
        channel: &str,
    ) -> redis::RedisResult<Option<(Bytes, String, Duration)>> {
        let mut conn = self.redis();
        let key = self.keys.cache(app, channel);
        let (frame, data, ttl): (Option<Vec<u8>>, Option<String>, i64) = redis::pipe()
            .hget(&key, "frame")
            .hget(&key, "data")
            .pttl(&key)
            .query_async(&mut conn)
            .await?;
        Ok(cache_entry(frame, data, ttl))
    }

    /// Publishes an event on a cache channel, Redis first: stored there (for at most
    /// [`CACHE_WRITE_WAIT`]), then delivered here, kept here and sent to the other nodes, so
    /// whoever gets it, or subscribes once it is answered, finds it in Redis, or a newer
    /// one. While Redis is known to be away it goes out at once.
    pub(super) fn publish_stored<'a>(
        &'a self,
        app: &Arc<App>,
        channel: &str,
        frame: &Bytes,
        data: &str,
        except: Option<SocketId>,
    ) -> Published<'a> {
        let mut event = StoredEvent {
            cluster: self,
            app: app.clone(),
            channel: channel.into(),
            frame: frame.clone(),
            data: data.into(),
            except,
            delivered: None,
            kept: None,
        };
        Published::Later(Box::pin(async move {
            if self.healthy.load(Ordering::Relaxed) {
                let ttl = event.app.config().cache_ttl;
                let (app, channel) = (&event.app, &event.channel);
                let stored = self.keep_cached(app, channel, &event.frame, &event.data, ttl);
                match tokio::time::timeout(CACHE_WRITE_WAIT, stored).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        tracing::debug!(%error, "Cluster: a cache channel's event was not stored")
                    }
                    Err(_) => tracing::debug!(
                        "Cluster: Redis did not store a cache channel's event in time; delivering it anyway"
                    ),
                }
            }
            let delivered = event.deliver();
            if let Some(kept) = event.kept.take() {
                let _ = tokio::time::timeout(super::history::KEPT_WAIT, kept).await;
            }
            delivered
        }))
    }

    /// Stores a cache channel's event in Redis for `ttl`, for the subscribers that come
    /// after it, on any node.
    async fn keep_cached(
        &self,
        app: &App,
        channel: &str,
        frame: &[u8],
        data: &str,
        ttl: Duration,
    ) -> redis::RedisResult<()> {
        let mut conn = self.redis();
        let key = self.keys.cache(app.id(), channel);
        // One HSET for both fields: two nodes storing at once leave one event whole.
        redis::pipe()
            .hset_multiple(&key, &[("frame", frame), ("data", data.as_bytes())])
            .ignore()
            .pexpire(&key, ttl.as_millis().max(1) as i64)
            .ignore()
            .query_async(&mut conn)
            .await
    }

    /// Takes Redis's copy of a cache channel's event, if it has one, into this node's
    /// cache: Redis has every event answered so far, while this node's copy may still wait
    /// for the bus.
    pub(super) async fn refresh_cache(&self, app: &App, channel: &str) -> redis::RedisResult<()> {
        let kept = self.cached_event(app.id(), channel).await?;
        take_cached(app, channel, kept);
        Ok(())
    }

    /// Presence users of a channel across the cluster, sorted.
    pub(super) async fn channel_users(
        &self,
        app: &str,
        channel: &str,
    ) -> redis::RedisResult<Vec<String>> {
        let mut conn = self.redis();
        let mut users: Vec<String> = conn.hkeys(self.keys.members(app, channel)).await?;
        users.sort();
        Ok(users)
    }
}

/// How long a publish on a cache channel waits for Redis to store the event before it is
/// delivered (and the HTTP API answers) anyway.
const CACHE_WRITE_WAIT: Duration = Duration::from_secs(2);

/// An event on a cache channel on its way (see [`Cluster::publish_stored`]). Dropped on
/// the way (the HTTP client went away), it is delivered at once.
struct StoredEvent<'a> {
    cluster: &'a Cluster,
    app: Arc<App>,
    channel: Box<str>,
    frame: Bytes,
    data: Box<str>,
    except: Option<SocketId>,
    /// Set once delivered.
    delivered: Option<usize>,
    /// On an app that keeps history, told once Redis has given the event its serial.
    kept: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl StoredEvent<'_> {
    /// Delivers the event here, keeps it here and sends it to the other nodes, once.
    fn deliver(&mut self) -> usize {
        if let Some(delivered) = self.delivered {
            return delivered;
        }
        let cluster = self.cluster;
        let (app, channel, frame) = (&self.app, &*self.channel, &self.frame);
        let here = self.except.and_then(|s| s.on_node(cluster.node_id));
        let config = app.config();
        let ttl = config.cache_ttl;
        let cache = Some((&*self.data, ttl));
        app.cache.store(channel, frame.clone(), &self.data, ttl);
        if config.history.on() {
            self.kept = cluster.send_kept(app, channel, self.except, frame, cache, config.history);
        }
        // With history, every node delivers it from the bus, this one too (`history.rs`).
        let delivered = if self.kept.is_some() {
            app.hub.counts(channel).subscription_count
        } else {
            cluster.send_event(app.id(), channel, self.except, frame, cache);
            app.hub.publish(channel, frame, here)
        };
        self.delivered = Some(delivered);
        delivered
    }
}

impl Drop for StoredEvent<'_> {
    fn drop(&mut self) {
        self.deliver();
    }
}

/// A cache channel's event from the fields Redis returned for it, if it is still alive.
pub(super) fn cache_entry(
    frame: Option<Vec<u8>>,
    data: Option<String>,
    ttl_ms: i64,
) -> Option<(Bytes, String, Duration)> {
    match (frame, data) {
        (Some(frame), Some(data)) if ttl_ms > 0 => Some((
            Bytes::from(frame),
            data,
            Duration::from_millis(ttl_ms.unsigned_abs()),
        )),
        _ => None,
    }
}

/// Takes what Redis holds of a cache channel's event (`kept`) into this node's cache.
pub(super) fn take_cached(app: &App, channel: &str, kept: Option<(Bytes, String, Duration)>) {
    if let Some((frame, data, ttl)) = kept {
        app.cache.store(channel, frame, &data, ttl);
    }
}

fn counts_from(pair: &[redis::Value]) -> redis::RedisResult<ChannelCounts> {
    let [subs, members] = pair else {
        return Err(redis::RedisError::from((
            redis::ErrorKind::TypeError,
            "unexpected pipeline reply",
        )));
    };
    let subs: Vec<i64> = redis::from_redis_value(subs)?;
    let members: i64 = redis::from_redis_value(members)?;
    Ok(ChannelCounts {
        subscription_count: subs.iter().sum::<i64>().max(0) as usize,
        user_count: members.max(0) as usize,
    })
}
