//! A cluster's health through faults, against real `herald serve` processes and a real
//! `redis-server`: a drained node's last `member_removed` reaches the other nodes at once.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use support::nodes::{get, member, next_event, presence_ids};
use support::{Redis, Server, KEY};

fn config(redis: &Redis, extra: &str) -> String {
    format!(
        r#"
adapter = "redis"
redis_url = "{url}"
{extra}
[[apps]]
id = "1"
key = "{KEY}"
secret = "app-secret"
publishes_per_second = 1000000
messages_per_day = 1000000000
max_connections = 1000000
"#,
        url = redis.url()
    )
}

#[tokio::test]
async fn a_drained_nodes_last_member_removed_reaches_the_other_nodes() {
    let redis = Redis::start();
    // A long node timeout: only the drained node's own message can tell B in time.
    let config = config(&redis, "node_timeout = 60");
    let (a, b) = (Server::start(&config), Server::start(&config));
    let mut amy = a.connect(KEY).await;
    let joined = amy
        .subscribe_private("presence-room", Some(&member("amy")))
        .await;
    assert_eq!(joined["event"], "pusher_internal:subscription_succeeded");
    let mut bob = b.connect(KEY).await;
    let joined = bob
        .subscribe_private("presence-room", Some(&member("bob")))
        .await;
    assert_eq!(presence_ids(&joined), ["amy", "bob"]);

    let pid = a.pid().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(status.is_ok_and(|s| s.success()), "SIGTERM node A");
    let sent = Instant::now();
    let removed = tokio::time::timeout(
        Duration::from_secs(5),
        next_event(&mut bob, "pusher_internal:member_removed"),
    )
    .await
    .expect("member_removed within 5 s of SIGTERM");
    assert_eq!(removed["data"], json!({"user_id": "amy"}).to_string());
    eprintln!(
        "member_removed reached B {:?} after SIGTERM",
        sent.elapsed()
    );
    let users = get(&b, "/apps/1/channels/presence-room/users", &[]).await;
    assert_eq!(users, json!({"users": [{"id": "bob"}]}));
}
