//! Two `herald serve` nodes on a real Redis Cluster (three masters, a replica each) and on a
//! real Sentinel set-up (a master, a replica, three sentinels): events cross the nodes,
//! presence is listed from either, and after the master holding the app's keys is killed
//! and its replica promoted, no member is lost, none is left behind, and events still flow.

mod support;

use std::time::Duration;

use redis_fixture::{RedisCluster, Sentinel};
use serde_json::{json, Value};
use support::nodes::{eventually, member, next_event, trigger};
use support::{Server, Ws, KEY};

/// Every key of app 1 carries this hash tag (`{<redis_prefix>:<app id>}`).
const PREFIX: &str = "topo";
const APP_TAG: &str = "{topo:1}";

fn node(url: &str) -> Server {
    Server::start_logged(
        &format!(
            r#"
adapter = "redis"
redis_url = "{url}"
redis_prefix = "{PREFIX}"
node_timeout = 2
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
client_events = true
"#
        ),
        &[],
    )
}

fn users(list: &[&str]) -> Value {
    let users: Vec<Value> = list.iter().map(|id| json!({ "id": id })).collect();
    json!({ "users": users })
}

/// Waits (bounded) until an event triggered on `from` reaches `to`'s subscriber: the bus may
/// still be finding the new master.
async fn events_flow(from: &Server, to: &mut Ws, channel: &str) {
    for attempt in 0..40 {
        let data = format!("after-{attempt}");
        trigger(from, channel, &data, None).await;
        let got = tokio::time::timeout(Duration::from_millis(500), async {
            loop {
                let ev = next_event(to, "ev").await;
                if ev["data"] == data.as_str() {
                    return;
                }
            }
        })
        .await;
        if got.is_ok() {
            return;
        }
    }
    panic!("no event crossed the nodes after the failover");
}

/// The scenario on any topology; `fail_over` kills the master serving the app's keys and
/// returns once a replica serves them.
async fn survives_a_failover(url: &str, fail_over: impl FnOnce()) {
    let (a, b) = (node(url), node(url));
    let mut on_b = b.connect(KEY).await;
    on_b.subscribe("news").await;
    trigger(&a, "news", "hello", None).await;
    assert_eq!(on_b.expect("ev").await["data"], "hello");

    let mut alice = a.connect(KEY).await;
    alice
        .subscribe_private("presence-room", Some(&member("alice")))
        .await;
    let mut bob = b.connect(KEY).await;
    bob.subscribe_private("presence-room", Some(&member("bob")))
        .await;
    alice.expect("pusher_internal:member_added").await;
    // Carol comes and goes just before the failover: her leave must not come back as a
    // ghost, whatever the promoted replica had received.
    let mut carol = b.connect(KEY).await;
    carol
        .subscribe_private("presence-room", Some(&member("carol")))
        .await;
    drop(carol);
    for server in [&a, &b] {
        eventually(server, "/apps/1/channels/presence-room/users", &[], |v| {
            *v == users(&["alice", "bob"])
        })
        .await;
    }

    fail_over();

    // Each node saw the masters change and restated its share on the new one.
    for server in [&a, &b] {
        let mut restated = false;
        for _ in 0..100 {
            restated = server.log().contains("took over from its master");
            if restated {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            restated,
            "no restatement after the failover:\n{}",
            server.log()
        );
    }
    for server in [&a, &b] {
        eventually(server, "/apps/1/channels/presence-room/users", &[], |v| {
            *v == users(&["alice", "bob"])
        })
        .await;
    }
    events_flow(&a, &mut on_b, "news").await;

    drop(alice);
    // Carol's removal came before; Alice's must follow, on the other node.
    let alice_removed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let removed = next_event(&mut bob, "pusher_internal:member_removed").await;
            if removed["data"]
                .as_str()
                .unwrap_or_default()
                .contains("alice")
            {
                return;
            }
        }
    })
    .await;
    assert!(
        alice_removed.is_ok(),
        "no member_removed for alice on the other node"
    );
    drop(bob);
    for server in [&a, &b] {
        eventually(server, "/apps/1/channels/presence-room/users", &[], |v| {
            *v == users(&[])
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_failover_loses_no_presence_and_leaves_no_ghosts() {
    let mut cluster = RedisCluster::start_with_replicas(3, 1);
    let url = cluster.url();
    survives_a_failover(&url, || {
        let port = cluster.master_for_slot(cluster.keyslot(APP_TAG));
        cluster.kill_node(port);
        cluster.wait_for_failover(port);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_loses_no_presence_and_leaves_no_ghosts() {
    let mut sentinel = Sentinel::start();
    let url = sentinel.url();
    survives_a_failover(&url, || {
        let port = sentinel.kill_master();
        sentinel.wait_for_failover(port);
    })
    .await;
}
