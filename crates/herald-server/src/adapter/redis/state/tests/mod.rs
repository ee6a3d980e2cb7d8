//! The state task against a real `redis-server` (`redis-fixture`): a dead node's reap, in
//! every app it had entries of and through a Redis pause, and the resync after an outage
//! (`recovery.rs`); presence joins while Redis is away, frame for frame as a single node's
//! (`presence.rs`); what a run of subscriptions sends (`pipelines.rs`). Each node here is a [`Cluster`] and its [`StateTask`], driven by hand: no heartbeat,
//! bus publisher or listener runs, so what the task sends to the other nodes stays in the
//! bus queue, where the tests read it.

use std::collections::HashMap;
use std::time::Duration;

use redis::AsyncCommands;
use redis_fixture::RedisServer;

use super::*;
use crate::adapter::bus::{self, BusMessage};
use crate::adapter::redis::ops::Join;
use crate::adapter::redis::RedisConfig;
use crate::apps::{App, AppStore, ConnectionSlot, MemoryApps};
use crate::ids::{ConnId, SocketId};
use crate::outbox::Outbox;
use crate::settings::Config;

const NODE_TIMEOUT: Duration = Duration::from_secs(2);

/// One node of a cluster on the test's Redis, serving `apps` (ids; key `key-<id>`), each
/// with `max_members` presence members per channel.
struct Node {
    cluster: Arc<Cluster>,
    apps: Arc<MemoryApps>,
    task: StateTask,
    /// Connection slots held, so the node's connection counts are not zero.
    slots: Vec<ConnectionSlot>,
}

impl Node {
    async fn start(redis: &RedisServer, id: u32, apps: &[&str], max_members: usize) -> Node {
        let config = RedisConfig {
            url: redis.url(),
            prefix: "herald".into(),
            node_timeout: NODE_TIMEOUT,
            ops_per_app: 1000,
            bus_max_bytes: 1 << 20,
            ..RedisConfig::default()
        };
        let cluster = Cluster::connect(&config, Some(id)).await.expect("connect");
        let configs = apps.iter().map(|app| {
            let mut config = Config::default().apps.remove(0);
            config.id = (*app).to_owned();
            config.key = format!("key-{app}");
            config.limits.max_presence_members = max_members;
            config
        });
        let store = Arc::new(MemoryApps::new(
            configs,
            &crate::webhooks::WebhookSettings::default(),
        ));
        assert!(cluster.apps.set(store.clone()).is_ok());
        Node {
            task: StateTask::new(cluster.clone()),
            cluster,
            apps: store,
            slots: Vec::new(),
        }
    }

    fn app(&self, id: &str) -> Arc<App> {
        self.apps.by_id(id).expect("a served app")
    }

    async fn subscribe(&mut self, app: &str, channel: &str, conn: ConnId) {
        let op = Op::Subscribe {
            app: self.app(app),
            channel: channel.into(),
            conn,
            outbox: outbox(),
            cache: false,
            recover: None,
        };
        self.task.apply_batch(vec![op]).await;
    }

    async fn join(
        &mut self,
        app: &str,
        channel: &str,
        (conn, outbox): (ConnId, &Arc<Outbox>),
        user: &str,
    ) {
        let member = herald_protocol::presence::parse_member(&format!(r#"{{"user_id":"{user}"}}"#))
            .expect("a member");
        let join = Join {
            app: self.app(app),
            channel: channel.into(),
            conn,
            outbox: outbox.clone(),
            member,
            cache: false,
            recover: None,
        };
        self.task.apply_batch(vec![Op::Join(Box::new(join))]).await;
    }

    async fn leave(&mut self, app: &str, channel: &str, conn: ConnId) {
        let op = Op::Leave {
            app: self.app(app),
            channel: channel.into(),
            conn,
        };
        self.task.apply_batch(vec![op]).await;
    }

    /// Opens a connection of `app` and writes the node's connection count of it.
    async fn connect(&mut self, app: &str) {
        let app = self.app(app);
        self.slots.push(app.try_connect(0).expect("a slot"));
        self.task.apply_batch(vec![Op::Connections { app }]).await;
    }

    /// The heartbeat's report of `dead`, and the housekeeping it wakes.
    async fn told_dead(&mut self, dead: u32) {
        self.cluster.signals.lock().dead.insert(dead);
        self.task.housekeeping().await;
    }

    /// The heartbeat's report that Redis answers again, and the housekeeping it wakes.
    async fn told_recovered(&mut self) {
        self.cluster.signals.lock().recovered = true;
        self.task.housekeeping().await;
    }

    /// The `(app, channel, frame)` of every event the node sent to the other nodes so far.
    fn bus_events(&self) -> Vec<(String, String, String)> {
        let mut receivers = self.cluster.receivers.lock();
        let (_, outgoing) = receivers.as_mut().expect("the bus queue");
        let mut events = Vec::new();
        while let Ok(message) = outgoing.try_recv() {
            match bus::decode(&message.payload) {
                Some((
                    _,
                    BusMessage::Event {
                        app,
                        channel,
                        frame,
                        ..
                    },
                )) => {
                    let frame = String::from_utf8_lossy(&frame).into_owned();
                    events.push((app, channel, frame));
                }
                // A membership change, as the frame the other nodes make of it.
                Some((
                    _,
                    BusMessage::Member {
                        app,
                        channel,
                        user,
                        info,
                        present,
                        ..
                    },
                )) => {
                    let frame = if present {
                        crate::wire::member_added(&channel, &user, info.as_deref())
                    } else {
                        crate::wire::member_removed(&channel, &user)
                    };
                    let frame = String::from_utf8_lossy(&frame).into_owned();
                    events.push((app, channel, frame));
                }
                _ => {}
            }
        }
        events
    }
}

/// A connection's outbox, roomy enough for every test here.
fn outbox() -> Arc<Outbox> {
    Arc::new(Outbox::new(64 << 20))
}

/// A plain connection to the test's Redis, to look at what the nodes left there.
async fn look(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .expect("a client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

async fn hash(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> HashMap<String, i64> {
    conn.hgetall(key).await.expect("HGETALL")
}

/// A fresh `redis-server`, started off the runtime's threads.
async fn redis() -> RedisServer {
    tokio::task::spawn_blocking(RedisServer::start)
        .await
        .expect("redis")
}

mod pipelines;
mod presence;
mod recovery;
