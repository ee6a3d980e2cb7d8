//! The bus over Redis pub/sub: one task publishes this node's messages, pipelined; one task
//! listens and delivers the other nodes' messages to local sockets.
//!
//! Both outlive Redis outages. The publisher keeps what it could not send and sends it, in
//! order, once Redis answers; a message counts against `cluster_bus_max_bytes` from when it
//! is queued until it is published, so what the publisher holds is bounded with the queue.
//! The listener reconnects and resubscribes. Messages other nodes published while this node was not listening are
//! not replayed: Redis pub/sub keeps nothing.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::{bus_cost, Cluster};
use crate::adapter::bus::{self, BusMessage};
use crate::ids::SocketId;

/// Messages per pipelined round trip.
const BATCH: usize = 256;
const RETRY: Duration = Duration::from_millis(250);

/// Publishes queued messages until the queue closes.
pub(super) async fn publisher(cluster: Arc<Cluster>, mut queue: mpsc::Receiver<Vec<u8>>) {
    let channel = cluster.keys.bus();
    let mut conn = cluster.redis();
    let mut batch: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
    let mut failing = false;
    loop {
        if batch.is_empty() && queue.recv_many(&mut batch, BATCH).await == 0 {
            return;
        }
        let mut pipe = redis::pipe();
        for message in &batch {
            pipe.publish(&channel, message.as_slice()).ignore();
        }
        match pipe.query_async::<()>(&mut conn).await {
            Ok(()) => {
                if failing {
                    tracing::info!("Cluster bus: publishing to Redis again");
                    failing = false;
                }
                cluster.published(batch.iter().map(|m| bus_cost(m)).sum());
                batch.clear();
                cluster.held.store(0, Ordering::Relaxed);
            }
            Err(error) => {
                cluster.held.store(batch.len(), Ordering::Relaxed);
                if !failing {
                    tracing::warn!(%error, pending = batch.len(), "Cluster bus: cannot publish to Redis; holding messages until it returns");
                    failing = true;
                }
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Listens to the bus, reconnecting as needed. The returned receiver fires once the first
/// subscription is active.
pub(super) fn spawn_subscriber(cluster: Arc<Cluster>) -> oneshot::Receiver<()> {
    let (ready, subscribed) = oneshot::channel();
    tokio::spawn(async move {
        let channel = cluster.keys.bus();
        let mut ready = Some(ready);
        let mut lost = false;
        loop {
            match cluster.client.get_async_pubsub().await {
                Ok(mut pubsub) => match pubsub.subscribe(&channel).await {
                    Ok(()) => {
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(());
                        }
                        if lost {
                            tracing::info!("Cluster bus: listening to Redis again");
                        }
                        let mut messages = pubsub.on_message();
                        while let Some(message) = messages.next().await {
                            cluster.receive(message.get_payload_bytes());
                        }
                        tracing::warn!("Cluster bus: lost the Redis subscription; reconnecting");
                        lost = true;
                        cluster.healthy.store(false, Ordering::Relaxed);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "Cluster bus: cannot subscribe");
                        lost = true;
                    }
                },
                Err(error) => {
                    if !lost {
                        tracing::warn!(%error, "Cluster bus: cannot connect to Redis");
                        lost = true;
                    }
                }
            }
            tokio::time::sleep(RETRY).await;
        }
    });
    subscribed
}

impl Cluster {
    /// Delivers one message from another node to this node's sockets.
    fn receive(&self, payload: &[u8]) {
        let Some((origin, message)) = bus::decode(payload) else {
            tracing::debug!(
                bytes = payload.len(),
                "Cluster bus: ignored a malformed message"
            );
            return;
        };
        if origin == self.node_id {
            return;
        }
        match message {
            BusMessage::Event {
                app,
                channel,
                except,
                frame,
                cache,
            } => {
                let Some(app) = self.app(&app) else { return };
                let except = except
                    .and_then(|s| SocketId::parse(&s))
                    .and_then(|s| s.on_node(self.node_id));
                app.hub.publish(&channel, &frame, except);
                if let Some((data, ttl_ms)) = cache {
                    app.cache
                        .store(&channel, frame, &data, Duration::from_millis(ttl_ms));
                }
            }
            BusMessage::Terminate { app, user, code } => {
                let Some(app) = self.app(&app) else { return };
                app.users.terminate(&user, code);
            }
            BusMessage::Watch { app, user, online } => {
                let Some(app) = self.app(&app) else { return };
                app.users.notify_watchers(&user, online);
            }
        }
    }
}
