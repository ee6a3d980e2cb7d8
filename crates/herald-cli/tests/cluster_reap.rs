//! A dead node's reap against real `herald serve` processes and a real `redis-server`: the
//! survivor removes the dead node's share of every app the dead node wrote to, those the
//! survivor does not serve included (a rolling change of the apps), so no ghost member,
//! subscription or connection count stays in Redis for good.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::wait::eventually;
use support::{now, signed_as, Redis, Server, Ws};

fn config(redis: &Redis, apps: &[&str]) -> String {
    let mut config = format!(
        "adapter = \"redis\"\nredis_url = \"{}\"\nnode_timeout = 2\n",
        redis.url()
    );
    for id in apps {
        config.push_str(&format!(
            "[[apps]]\nid = \"{id}\"\nkey = \"key-{id}\"\nsecret = \"secret-{id}\"\n"
        ));
    }
    config
}

/// `redis-cli` against the test's Redis, its output's lines (none for an empty answer).
fn redis_cli(redis: &Redis, args: &[&str]) -> Vec<String> {
    let out = redis_fixture::cli(redis.port(), args).expect("redis-cli");
    out.lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect()
}

/// What `node` holds of `app` in Redis: the keys its subscription, member or connection
/// counts and its indexes are in.
fn share(redis: &Redis, app: &str, node: &str) -> Vec<String> {
    let mut held = Vec::new();
    for key in [
        format!("{{herald:{app}}}:s:news"),
        format!("{{herald:{app}}}:conns"),
    ] {
        if redis_cli(redis, &["HEXISTS", &key, node]) == ["1"] {
            held.push(key);
        }
    }
    for suffix in ["s", "m"] {
        let key = format!("{{herald:{app}}}:n:{node}:{suffix}");
        if redis_cli(redis, &["EXISTS", &key]) == ["1"] {
            held.push(key);
        }
    }
    held
}

fn members(redis: &Redis, app: &str) -> Vec<String> {
    redis_cli(
        redis,
        &["HKEYS", &format!("{{herald:{app}}}:m:presence-room")],
    )
}

/// Joins `presence-room` of app `app` as `user`.
async fn join(ws: &mut Ws, app: &str, user: &str) {
    let data = json!({"user_id": user}).to_string();
    let auth = herald_protocol::auth::channel_auth(
        &format!("key-{app}"),
        &format!("secret-{app}"),
        &ws.socket_id,
        "presence-room",
        Some(&data),
    );
    ws.send(json!({"event": "pusher:subscribe", "data": {
        "channel": "presence-room", "auth": auth, "channel_data": data}}))
        .await;
    ws.expect("pusher_internal:subscription_succeeded").await;
}

async fn get(server: &Server, app: &str, path: &str) -> (u16, Value) {
    let path = format!("/apps/{app}{path}");
    let (key, secret) = (format!("key-{app}"), format!("secret-{app}"));
    signed_as(server, "GET", &path, &[], None, &key, &secret, now()).await
}

#[tokio::test]
async fn a_dead_nodes_share_of_an_app_the_survivor_does_not_serve_is_removed() {
    let redis = Redis::start();
    let dying = Server::start(&config(&redis, &["1", "2"]));
    let survivor = Server::start(&config(&redis, &["1"]));
    let mut sockets = Vec::new();
    for app in ["1", "2"] {
        let mut ws = dying.connect(&format!("key-{app}")).await;
        ws.subscribe("news").await;
        join(&mut ws, app, "ann").await;
        sockets.push(ws);
    }
    let mut staying = survivor.connect("key-1").await;
    staying.subscribe("news").await;
    let node = sockets[0]
        .socket_id
        .split('.')
        .next()
        .expect("a node id")
        .to_owned();
    // Subscriptions are counted before they are answered; connection counts go with the
    // next heartbeat.
    eventually(
        "the dying node's share is in Redis",
        Duration::from_secs(5),
        async || {
            ["1", "2"]
                .iter()
                .all(|app| share(&redis, app, &node).len() == 4)
        },
    )
    .await;

    let mut dying = dying;
    dying.child.kill().expect("SIGKILL");
    dying.child.wait().expect("exited");
    // node_timeout (2 s), then the survivor's next heartbeat finds it.
    eventually(
        "the dead node's share is removed",
        Duration::from_secs(10),
        async || {
            ["1", "2"]
                .iter()
                .all(|app| share(&redis, app, &node).is_empty() && members(&redis, app).is_empty())
        },
    )
    .await;
    assert!(redis_cli(&redis, &["EXISTS", &format!("{{herald}}:n:{node}:apps")]) == ["0"]);
    assert!(redis_cli(&redis, &["ZCARD", "{herald}:reaping"]) == ["0"]);
    let survivor_node = staying.socket_id.split('.').next().expect("a node id");
    assert_eq!(
        redis_cli(&redis, &["HGET", "{herald:1}:s:news", survivor_node]),
        ["1"],
        "the survivor's own subscriber stays"
    );

    // The survivor serves app 2 from now on: its HTTP API shows nobody there.
    std::fs::write(&survivor.config, config(&redis, &["1", "2"])).expect("rewrite config");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(survivor.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    let users = loop {
        let (status, body) = get(&survivor, "2", "/channels/presence-room/users").await;
        if status == 200 {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "app 2 never served: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(users, json!({"users": []}));
    let (_, channels) = get(&survivor, "2", "/channels").await;
    assert_eq!(channels, json!({"channels": {}}));
}
