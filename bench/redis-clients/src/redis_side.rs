//! The workloads through `redis` 0.32, the way Herald's `adapter/redis/link` uses it.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Cmd, Pipeline, PushInfo, PushKind, RedisFuture, Value};
use tokio::sync::mpsc;

use crate::servers::Server;
use crate::{Figures, Message, Meter, Topology};

/// Herald's `Commands`: one server or a cluster behind one handle.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }
    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }
    fn get_db(&self) -> i64 {
        0
    }
}

async fn connect(topology: Topology, urls: &[String]) -> Conn {
    match topology {
        Topology::Single => {
            let client = redis::Client::open(urls[0].as_str()).expect("a URL");
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Duration::from_secs(1))
                .set_response_timeout(Duration::from_secs(2))
                .set_number_of_retries(1)
                .set_max_delay(1000);
            Conn::Single(
                ConnectionManager::new_with_config(client, config)
                    .await
                    .expect("a connection"),
            )
        }
        Topology::Cluster => Conn::Cluster(
            ClusterClientBuilder::new(urls.to_vec())
                .connection_timeout(Duration::from_secs(1))
                .response_timeout(Duration::from_secs(2))
                .retries(8)
                .build()
                .expect("a cluster client")
                .get_async_connection()
                .await
                .expect("a cluster connection"),
        ),
    }
}

fn publish_cmd(topology: Topology, channel: &str, payload: &[u8]) -> Cmd {
    let mut cmd = redis::cmd(match topology {
        Topology::Single => "PUBLISH",
        Topology::Cluster => "SPUBLISH",
    });
    cmd.arg(channel).arg(payload);
    cmd
}

/// Sends the bus messages of one batch: one pipeline per slot group, side by side.
async fn publish_batch(conn: &Conn, topology: Topology, batch: Vec<(String, Bytes)>) {
    let sent = crate::groups(batch, topology).into_iter().map(|group| {
        let mut conn = conn.clone();
        async move {
            let mut pipe = redis::pipe();
            for (channel, payload) in &group {
                pipe.add_command(publish_cmd(topology, channel, payload))
                    .ignore();
            }
            let () = pipe.query_async(&mut conn).await.expect("the pipeline");
        }
    });
    futures_util::future::join_all(sent).await;
}

pub async fn publish(topology: Topology, urls: &[String], servers: &[Server], n: usize) -> Figures {
    let conn = connect(topology, urls).await;
    let script = redis::Script::new(crate::COUNT_MESSAGES);
    // Warm: the script loaded, the subscription hashes as a cluster of two nodes has them.
    {
        let mut c = conn.clone();
        for i in 0..crate::CHANNELS {
            let keys = crate::script_keys(i);
            let () = redis::cmd("HSET")
                .arg(&keys[1])
                .arg("node-1")
                .arg(3)
                .arg("node-2")
                .arg(2)
                .query_async(&mut c)
                .await
                .expect("HSET");
        }
        let _: i64 = script
            .key(&crate::script_keys(0)[0])
            .key(&crate::script_keys(0)[1])
            .arg(86_401)
            .invoke_async(&mut c)
            .await
            .expect("the script");
    }
    let meter = Meter::start(servers);
    let (tx, mut rx) = mpsc::channel::<(String, Bytes)>(100_000);
    let publisher = {
        let conn = conn.clone();
        tokio::spawn(async move {
            let mut done = 0;
            let mut batch = Vec::with_capacity(crate::BATCH);
            while done < n {
                if rx.recv_many(&mut batch, crate::BATCH).await == 0 {
                    break;
                }
                done += batch.len();
                publish_batch(&conn, topology, std::mem::take(&mut batch)).await;
            }
        })
    };
    let part = crate::Part::from_env();
    let handlers: Vec<_> = (0..crate::HANDLERS)
        .map(|h| {
            let mut conn = conn.clone();
            let script = script.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                for i in (h..n).step_by(crate::HANDLERS) {
                    if part.script {
                        let keys = crate::script_keys(i);
                        let mut invocation = script.prepare_invoke();
                        invocation.key(&keys[0]).key(&keys[1]).arg(86_401);
                        let _: i64 = invocation.invoke_async(&mut conn).await.expect("EVALSHA");
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
    meter.stop(servers, n, 0)
}

/// Herald's push handler (`link/deliveries.rs`): messages into the bounded queue, never
/// waiting.
fn push_handler(
    queue: mpsc::Sender<Message>,
) -> impl Fn(PushInfo) -> Result<(), std::convert::Infallible> + Send + Sync + 'static {
    move |push: PushInfo| {
        if let PushKind::Message | PushKind::SMessage = push.kind {
            let mut data = push.data.into_iter();
            if let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
                (data.next(), data.next())
            {
                let _ = queue.try_send(Message {
                    channel: String::from_utf8_lossy(&channel).into_owned(),
                    payload: Bytes::from(payload),
                });
            }
        }
        Ok(())
    }
}

async fn resp3_conn(url: &str, queue: mpsc::Sender<Message>) -> MultiplexedConnection {
    let mut info: redis::ConnectionInfo =
        redis::IntoConnectionInfo::into_connection_info(url).expect("a URL");
    info.redis.protocol = redis::ProtocolVersion::RESP3;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Duration::from_secs(1))
        .set_response_timeout(Duration::from_secs(2))
        .set_push_sender(push_handler(queue));
    redis::Client::open(info)
        .expect("a client")
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("a RESP3 connection")
}

/// The masters' ports by slot, from CLUSTER NODES.
pub fn slot_owners(servers: &[Server]) -> Vec<u16> {
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query(&mut servers[0].conn().expect("a connection"))
        .expect("CLUSTER NODES");
    let mut owners = vec![0u16; 16384];
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() < 9 || !fields[2].contains("master") {
            continue;
        }
        let port: u16 = fields[1]
            .split('@')
            .next()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .expect("a port");
        for range in &fields[8..] {
            let (a, b) = range.split_once('-').unwrap_or((range, range));
            let (a, b): (usize, usize) = (a.parse().expect("a slot"), b.parse().expect("a slot"));
            owners[a..=b].fill(port);
        }
    }
    owners
}

/// Subscribes to every channel, one command per channel as the link does, on the
/// channel's shard in a cluster.
async fn subscribe_all(
    topology: Topology,
    servers: &[Server],
    queue: mpsc::Sender<Message>,
) -> Vec<MultiplexedConnection> {
    let mut by_port: HashMap<u16, MultiplexedConnection> = HashMap::new();
    for s in servers {
        by_port.insert(s.port, resp3_conn(&s.url(), queue.clone()).await);
    }
    let owners = (topology == Topology::Cluster).then(|| slot_owners(servers));
    let verb = if topology == Topology::Cluster {
        "SSUBSCRIBE"
    } else {
        "SUBSCRIBE"
    };
    let sent = (0..crate::CHANNELS).map(|i| {
        let channel = crate::bus_channel(i);
        let port = owners
            .as_ref()
            .map_or(servers[0].port, |o| o[crate::slot(&channel) as usize]);
        let mut conn = by_port[&port].clone();
        async move {
            let mut cmd = redis::cmd(verb);
            cmd.arg(&channel);
            conn.req_packed_command(&cmd).await.expect("a subscription");
        }
    });
    futures_util::future::join_all(sent).await;
    by_port.into_values().collect()
}

pub async fn deliver(topology: Topology, urls: &[String], servers: &[Server], n: usize) -> Figures {
    let (queue, done) = crate::sink(n);
    let conns = subscribe_all(topology, servers, queue).await;
    let meter = Meter::start(servers);
    let mut load = crate::spawn_load(topology, &urls[0], n);
    let got = tokio::time::timeout(Duration::from_secs(60), done)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0);
    let figures = meter.stop(servers, n, n - got);
    let _ = load.wait();
    drop(conns);
    figures
}

/// The load process's publishing: pipelines of [`crate::BATCH`] round-robin over the
/// channels.
pub async fn load(topology: Topology, url: &str, n: usize) {
    let urls = vec![url.to_owned()];
    let conn = connect(topology, &urls).await;
    let mut i = 0;
    while i < n {
        let end = (i + crate::BATCH).min(n);
        let batch: Vec<(String, Bytes)> = (i..end)
            .map(|j| (crate::bus_channel(j), crate::payload(j)))
            .collect();
        publish_batch(&conn, topology, batch).await;
        i = end;
    }
}

/// For the resubscription test: the connection manager with its own resubscription.
pub async fn manager_subscriber(url: &str, queue: mpsc::Sender<Message>) -> ConnectionManager {
    let mut info: redis::ConnectionInfo =
        redis::IntoConnectionInfo::into_connection_info(url).expect("a URL");
    info.redis.protocol = redis::ProtocolVersion::RESP3;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_secs(1))
        .set_response_timeout(Duration::from_secs(2))
        .set_max_delay(1000)
        .set_push_sender(push_handler(queue))
        .set_automatic_resubscription();
    let mut manager =
        ConnectionManager::new_with_config(redis::Client::open(info).expect("a client"), config)
            .await
            .expect("a connection manager");
    for i in 0..crate::CHANNELS {
        manager
            .subscribe(crate::bus_channel(i))
            .await
            .expect("SUBSCRIBE");
    }
    manager
}

/// For the resubscription test: a plain RESP3 connection, what the link builds on.
pub async fn multiplexed_subscriber(
    url: &str,
    queue: mpsc::Sender<Message>,
) -> MultiplexedConnection {
    let mut conn = resp3_conn(url, queue).await;
    for i in 0..crate::CHANNELS {
        conn.subscribe(crate::bus_channel(i))
            .await
            .expect("SUBSCRIBE");
    }
    conn
}

/// For the resubscription test: the cluster connection's own pub/sub (RESP3, a push
/// sender), which tracks its subscriptions.
pub async fn cluster_subscriber(
    urls: &[String],
    queue: mpsc::Sender<Message>,
) -> ClusterConnection {
    let mut conn = ClusterClientBuilder::new(urls.to_vec())
        .connection_timeout(Duration::from_secs(1))
        .response_timeout(Duration::from_secs(2))
        .retries(8)
        .use_protocol(redis::ProtocolVersion::RESP3)
        .push_sender(push_handler(queue))
        .build()
        .expect("a cluster client")
        .get_async_connection()
        .await
        .expect("a cluster connection");
    for i in 0..crate::CHANNELS {
        conn.ssubscribe(crate::bus_channel(i))
            .await
            .expect("SSUBSCRIBE");
    }
    conn
}
