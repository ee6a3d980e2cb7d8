//! A failover under two `herald serve` nodes: events cross the nodes, presence is listed
//! from either, and after the master holding the app's keys is killed and its replica
//! promoted, no member is lost, none is left behind, and events still flow. Run on the
//! plain topologies by `cluster_topologies.rs` and over TLS by `redis_tls.rs`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::nodes::{eventually, member, next_event, trigger};
use crate::support::{Server, Ws, KEY};

/// Every key of app 1 carries this hash tag (`{<redis_prefix>:<app id>}`).
pub const PREFIX: &str = "topo";
pub const APP_TAG: &str = "{topo:1}";

/// A node over `url`, with `extra` top-level keys (TLS files).
fn node(url: &str, extra: &str) -> Server {
    Server::start_logged(
        &format!(
            r#"
adapter = "redis"
redis_url = "{url}"
redis_prefix = "{PREFIX}"
node_timeout = 2
{extra}
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

/// Waits (bounded) until an event triggered on `from` reaches `to`'s subscriber on
/// `channel` (the bus may still be finding the new master); whether one did.
pub async fn events_flow(from: &Server, to: &mut Ws, channel: &str) -> bool {
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
            return true;
        }
    }
    false
}

/// The scenario on any topology, its nodes given `extra` keys; `fail_over` kills the master
/// serving the app's keys and returns once a replica serves them.
pub async fn survives_a_failover(url: &str, extra: &str, fail_over: impl FnOnce()) {
    let (a, b) = (node(url, extra), node(url, extra));
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
    assert!(
        events_flow(&a, &mut on_b, "news").await,
        "no event crossed the nodes after the failover"
    );

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
