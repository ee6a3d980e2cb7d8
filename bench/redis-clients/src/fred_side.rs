//! The same workloads through `fred` 10, as a port of the adapter would use it: one
//! `Client` for commands (cluster routing its own), one `SubscriberClient` that keeps its
//! subscriptions across reconnects.

use std::time::Duration;

use bytes::Bytes;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use tokio::sync::mpsc;

use crate::servers::Server;
use crate::{Figures, Message, Meter, Topology};

fn builder(topology: Topology, urls: &[String]) -> Builder {
    let hosts: Vec<(String, u16)> = urls
        .iter()
        .map(|u| {
            let port = u
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .expect("a port");
            ("127.0.0.1".to_owned(), port)
        })
        .collect();
    let server = match topology {
        Topology::Single => ServerConfig::new_centralized(hosts[0].0.clone(), hosts[0].1),
        Topology::Cluster => ServerConfig::new_clustered(hosts),
    };
    let mut builder = Builder::from_config(Config {
        server,
        ..Config::default()
    });
    builder
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(1);
            c.internal_command_timeout = Duration::from_secs(2);
        })
        .with_performance_config(|p| {
            p.default_command_timeout = Duration::from_secs(2);
            // Room for a burst: the default (32) makes a slow reader lose messages.
            p.broadcast_channel_capacity = crate::QUEUE;
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 1000, 2));
    builder
}

async fn publish_one(
    pipe: &fred::clients::Pipeline<Client>,
    topology: Topology,
    channel: String,
    payload: Bytes,
) -> Result<(), Error> {
    match topology {
        Topology::Single => pipe.publish::<(), _, _>(channel, payload).await,
        Topology::Cluster => pipe.spublish::<(), _, _>(channel, payload).await,
    }
}

async fn publish_batch(client: &Client, topology: Topology, batch: Vec<(String, Bytes)>) {
    if std::env::var_os("BENCH_FRED_NO_PIPELINE").is_some() {
        // Concurrent commands instead of a pipeline: fred writes them out together
        // (its automatic pipelining), and routes each to its shard.
        let sent = batch.into_iter().map(|(channel, payload)| async move {
            let _: i64 = match topology {
                Topology::Single => client.publish(channel, payload).await,
                Topology::Cluster => client.spublish(channel, payload).await,
            }
            .expect("PUBLISH");
        });
        futures_util::future::join_all(sent).await;
        return;
    }
    let sent = crate::groups(batch, topology).into_iter().map(|group| {
        let pipe = client.pipeline();
        async move {
            for (channel, payload) in group {
                publish_one(&pipe, topology, channel, payload)
                    .await
                    .expect("queued");
            }
            let _: Vec<Value> = pipe.all().await.expect("the pipeline");
        }
    });
    futures_util::future::join_all(sent).await;
}

pub async fn publish(topology: Topology, urls: &[String], servers: &[Server], n: usize) -> Figures {
    let client = builder(topology, urls).build().expect("a client");
    client.init().await.expect("connected");
    let sha: String = match topology {
        Topology::Single => client.script_load(crate::COUNT_MESSAGES).await,
        Topology::Cluster => client.script_load_cluster(crate::COUNT_MESSAGES).await,
    }
    .expect("SCRIPT LOAD");
    for i in 0..crate::CHANNELS {
        let keys = crate::script_keys(i);
        let _: i64 = client
            .hset(&keys[1], [("node-1", 3), ("node-2", 2)])
            .await
            .expect("HSET");
    }
    let meter = Meter::start(servers);
    let (tx, mut rx) = mpsc::channel::<(String, Bytes)>(100_000);
    let publisher = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut done = 0;
            let mut batch = Vec::with_capacity(crate::BATCH);
            while done < n {
                if rx.recv_many(&mut batch, crate::BATCH).await == 0 {
                    break;
                }
                done += batch.len();
                publish_batch(&client, topology, std::mem::take(&mut batch)).await;
            }
        })
    };
    let part = crate::Part::from_env();
    let handlers: Vec<_> = (0..crate::HANDLERS)
        .map(|h| {
            let client = client.clone();
            let sha = sha.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                for i in (h..n).step_by(crate::HANDLERS) {
                    if part.script {
                        let _: i64 = client
                            .evalsha(sha.as_str(), crate::script_keys(i), 86_401)
                            .await
                            .expect("EVALSHA");
                    }
                    if !part.bus {
                        continue;
                    }
                    tx.send((crate::bus_channel(i), crate::payload(i)))
                        .await
                        .expect("the publisher");
                }
            })
        })
        .collect();
    drop(tx);
    for h in handlers {
        h.await.expect("a handler");
    }
    publisher.await.expect("the publisher");
    let figures = meter.stop(servers, n, 0);
    let _ = client.quit().await;
    figures
}

/// A subscriber on every channel, resubscribing by itself, feeding Herald's queue.
async fn subscribe_all(
    topology: Topology,
    urls: &[String],
    queue: mpsc::Sender<Message>,
) -> SubscriberClient {
    let subscriber = builder(topology, urls)
        .build_subscriber_client()
        .expect("a subscriber");
    subscriber.init().await.expect("connected");
    // The task runs until the client quits; its handle is not needed.
    drop(subscriber.manage_subscriptions());
    let mut messages = subscriber.message_rx();
    tokio::spawn(async move {
        loop {
            match messages.recv().await {
                Ok(m) => {
                    let Some(payload) = m.value.into_bytes() else {
                        continue;
                    };
                    let _ = queue.try_send(Message {
                        channel: m.channel.to_string(),
                        payload,
                    });
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });
    let channels: Vec<String> = (0..crate::CHANNELS).map(crate::bus_channel).collect();
    match topology {
        Topology::Single => {
            for chunk in channels.chunks(100) {
                subscriber
                    .subscribe(chunk.to_vec())
                    .await
                    .expect("SUBSCRIBE");
            }
        }
        Topology::Cluster => {
            // One channel per call: a sharded subscription's channels must share a slot.
            let sent = channels.into_iter().map(|c| {
                let subscriber = subscriber.clone();
                async move { subscriber.ssubscribe(c).await.expect("SSUBSCRIBE") }
            });
            futures_util::future::join_all(sent).await;
        }
    }
    subscriber
}

pub async fn deliver(topology: Topology, urls: &[String], servers: &[Server], n: usize) -> Figures {
    let (queue, done) = crate::sink(n);
    let subscriber = subscribe_all(topology, urls, queue).await;
    let meter = Meter::start(servers);
    let mut load = crate::spawn_load(topology, &urls[0], n);
    let got = tokio::time::timeout(Duration::from_secs(60), done)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0);
    let figures = meter.stop(servers, n, n - got);
    let _ = load.wait();
    let _ = subscriber.quit().await;
    figures
}

/// For the resubscription test.
pub async fn subscriber(
    topology: Topology,
    urls: &[String],
    queue: mpsc::Sender<Message>,
) -> SubscriberClient {
    subscribe_all(topology, urls, queue).await
}

pub async fn quit(subscriber: SubscriberClient) {
    let _ = subscriber.quit().await;
}
