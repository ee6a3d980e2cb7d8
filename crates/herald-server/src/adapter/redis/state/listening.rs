//! The node's bus subscriptions, by interest: a channel is subscribed on the bus before its
//! first subscriber here is answered, and released a while after its last one left.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::time::Instant;

use super::StateTask;
use crate::adapter::redis::interest::{self, Key};
use crate::adapter::redis::link::Subscriber;

impl StateTask {
    /// Marks the channels of `keys` wanted; returns those new to this node (it held no
    /// bus subscription of them).
    pub(super) fn want_bus(&mut self, keys: impl IntoIterator<Item = Key>) -> Vec<Key> {
        let fresh: Vec<Key> = keys.into_iter().filter(|k| self.interest.want(k)).collect();
        self.cluster
            .bus
            .channels
            .store(self.interest.len(), Ordering::Relaxed);
        fresh
    }

    pub(super) fn bus_names(&self, keys: &[Key]) -> Vec<String> {
        keys.iter()
            .map(|(app, channel)| self.cluster.bus.channel_of(app, channel))
            .collect()
    }

    /// How long to wait for Redis to confirm bus subscriptions: not at all while it is
    /// known not to answer (the link subscribes once it does).
    pub(super) fn bus_wait(&self) -> Duration {
        if self.healthy() {
            interest::SUBSCRIBE_WAIT
        } else {
            Duration::ZERO
        }
    }

    /// A channel's last local subscriber left: its bus subscription lingers.
    pub(super) fn lose_interest(&mut self, app: &str, channel: &str) {
        let over = self
            .interest
            .release(&(app.into(), channel.into()), Instant::now());
        self.releasing.extend(over);
    }

    /// Unsubscribes the bus channels whose linger ended, and those over the bound, at once
    /// (one round trip's wait for all), and forgets the cached events of those channels:
    /// this node hears their next events no more, so its copy would go stale.
    pub(super) async fn release_bus(&mut self) {
        let mut keys = std::mem::take(&mut self.releasing);
        keys.extend(self.interest.expired(Instant::now()));
        self.cluster
            .bus
            .channels
            .store(self.interest.len(), Ordering::Relaxed);
        if keys.is_empty() {
            return;
        }
        let names = self.bus_names(&keys);
        let subscriber = self.subscriber.clone();
        let all = futures_util::future::join_all(names.iter().map(|n| subscriber.unsubscribe(n)));
        let mut all = std::pin::pin!(all);
        if tokio::time::timeout(self.bus_wait(), all.as_mut())
            .await
            .is_err()
        {
            tracing::debug!(
                channels = names.len(),
                "Cluster bus: unsubscribes not confirmed yet"
            );
        }
        for (app, channel) in keys {
            if let Some(app) = self.cluster.app(&app) {
                app.cache.forget(&channel);
            }
        }
    }
}

/// Subscribes the bus channels `names` and waits up to `wait` for Redis to confirm them
/// all. Every request is sent before this first yields, so requests reach the link in the
/// state task's order even when it does not wait (`wait` zero: Redis is away) or times out;
/// the link keeps them wanted and subscribes once Redis answers.
pub(super) async fn subscribe_bus(subscriber: Subscriber, names: Vec<String>, wait: Duration) {
    if names.is_empty() {
        return;
    }
    let all = futures_util::future::join_all(names.iter().map(|n| subscriber.subscribe(n)));
    let mut all = std::pin::pin!(all);
    let results = if wait.is_zero() {
        all.as_mut().now_or_never()
    } else {
        tokio::time::timeout(wait, all.as_mut()).await.ok()
    };
    match results {
        Some(results) => {
            if let Some(error) = results.into_iter().find_map(Result::err) {
                tracing::warn!(%error, "Cluster bus: a channel's subscription failed; its events from other nodes are lost");
            }
        }
        None if wait.is_zero() => {}
        None => tracing::warn!(
            channels = names.len(),
            "Cluster bus: Redis did not confirm new subscriptions in time; answering the subscribers anyway"
        ),
    }
}
