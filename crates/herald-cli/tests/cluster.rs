//! Several `herald serve` processes sharing one real `redis-server`: events, presence,
//! channel queries, limits, user termination, cache channels, a killed node and a Redis
//! restart, all observed through the public protocol.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::nodes::{eventually, get, member, next_event, presence_ids, trigger};
use support::{signed, Redis, Server, KEY};

const NODE_TIMEOUT: u64 = 2;

fn node(redis: &Redis, app_extra: &str) -> Server {
    Server::start(&format!(
        r#"
adapter = "redis"
redis_url = "{url}"
node_timeout = {NODE_TIMEOUT}
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
client_events = true
{app_extra}
"#,
        url = redis.url()
    ))
}

#[tokio::test]
async fn events_cross_nodes_with_socket_exclusion_and_client_events() {
    let redis = Redis::start();
    let (a, b, c) = (node(&redis, ""), node(&redis, ""), node(&redis, ""));
    let mut on_b = b.connect(KEY).await;
    let mut on_c = c.connect(KEY).await;
    assert_eq!(
        on_b.subscribe("news").await["event"],
        "pusher_internal:subscription_succeeded"
    );
    on_c.subscribe("news").await;

    trigger(&a, "news", "hello", None).await;
    for ws in [&mut on_b, &mut on_c] {
        let ev = ws.expect("ev").await;
        assert_eq!(ev["data"], "hello");
        assert_eq!(ev["channel"], "news");
    }

    // The excluded socket lives on B; the trigger goes to A.
    let excluded = on_b.socket_id.clone();
    trigger(&a, "news", "not for b", Some(&excluded)).await;
    assert_eq!(on_c.expect("ev").await["data"], "not for b");
    on_b.expect_silence(300).await;

    // Client events: a private channel member on B talks to one on C.
    on_b.subscribe_private("private-chat", None).await;
    on_c.subscribe_private("private-chat", None).await;
    on_b.send(json!({"event":"client-typing","channel":"private-chat","data":{"who":"b"}}))
        .await;
    let got = on_c.expect("client-typing").await;
    assert_eq!(got["data"], json!({"who":"b"}));
    on_b.expect_silence(200).await;

    // Channel queries agree on every node.
    for server in [&a, &b, &c] {
        let body = get(
            server,
            "/apps/1/channels",
            &[("info", "subscription_count")],
        )
        .await;
        assert_eq!(body["channels"]["news"]["subscription_count"], 2, "{body}");
        let one = get(
            server,
            "/apps/1/channels/news",
            &[("info", "subscription_count")],
        )
        .await;
        assert_eq!(one, json!({"occupied": true, "subscription_count": 2}));
    }
}

#[tokio::test]
async fn presence_members_join_and_leave_across_nodes() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, ""), node(&redis, ""));
    let mut alice = a.connect(KEY).await;
    let ok = alice
        .subscribe_private("presence-room", Some(&member("alice")))
        .await;
    assert_eq!(presence_ids(&ok), ["alice"]);

    let mut bob = b.connect(KEY).await;
    let ok = bob
        .subscribe_private("presence-room", Some(&member("bob")))
        .await;
    assert_eq!(ok["event"], "pusher_internal:subscription_succeeded");
    assert_eq!(
        presence_ids(&ok),
        ["alice", "bob"],
        "B's answer lists A's member"
    );
    let added = alice.expect("pusher_internal:member_added").await;
    let data: Value = serde_json::from_str(added["data"].as_str().expect("data")).expect("json");
    assert_eq!(
        data,
        json!({"user_id": "bob", "user_info": {"name": "bob"}})
    );

    // Bob's second connection, on A, is not a new member.
    let mut bob2 = a.connect(KEY).await;
    bob2.subscribe_private("presence-room", Some(&member("bob")))
        .await;
    alice.expect_silence(300).await;

    for server in [&a, &b] {
        let users = get(server, "/apps/1/channels/presence-room/users", &[]).await;
        assert_eq!(users, json!({"users": [{"id": "alice"}, {"id": "bob"}]}));
        let info = get(
            server,
            "/apps/1/channels/presence-room",
            &[("info", "user_count,subscription_count")],
        )
        .await;
        assert_eq!(
            info,
            json!({"occupied": true, "user_count": 2, "subscription_count": 3})
        );
    }

    // Bob leaves on B: still connected on A, so no member_removed; then the last one goes.
    drop(bob);
    alice.expect_silence(400).await;
    drop(bob2);
    let removed = alice.expect("pusher_internal:member_removed").await;
    assert!(
        removed["data"].as_str().unwrap_or_default().contains("bob"),
        "{removed}"
    );
    eventually(&b, "/apps/1/channels/presence-room/users", &[], |v| {
        v == &json!({"users": [{"id": "alice"}]})
    })
    .await;
}

#[tokio::test]
async fn limits_hold_for_the_whole_cluster() {
    let redis = Redis::start();
    let extra = "max_presence_members = 2\nmax_connections = 3";
    let (a, b) = (node(&redis, extra), node(&redis, extra));
    let mut one = a.connect(KEY).await;
    let mut two = b.connect(KEY).await;
    one.subscribe_private("presence-small", Some(&member("u1")))
        .await;
    two.subscribe_private("presence-small", Some(&member("u2")))
        .await;
    let mut three = a.connect(KEY).await;
    let refused = three
        .subscribe_private("presence-small", Some(&member("u3")))
        .await;
    assert_eq!(refused["event"], "pusher:subscription_error", "{refused}");
    assert_eq!(refused["data"]["status"], 4100);

    // Three connections are open (two on A, one on B); the next one on B is over the limit
    // once B has heard A's count (heartbeats are at most a second apart). Until then B may
    // let one in: it is closed at once, and the next try made.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (mut ws, first) = loop {
        let (ws, first) = b.connect_raw("/app/app-key?protocol=7").await;
        let first = first.expect("a frame");
        if first["event"] != "pusher:connection_established" {
            break (ws, first);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "B never heard A's connections"
        );
        drop(ws);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(first["event"], "pusher:error", "{first}");
    assert_eq!(first["data"]["code"], 4004);
    support::expect_close(&mut ws).await;
}

/// The cluster's exact count decides after the upgrade: a connection that the node's own
/// (heartbeat-old) view lets through gets 4004 once the cluster has counted it, and the
/// refusal frees its place.
#[tokio::test]
async fn the_clusters_connection_limit_is_enforced_after_the_upgrade() {
    let redis = Redis::start();
    let extra = "max_connections = 2";
    let (a, b) = (node(&redis, extra), node(&redis, extra));
    let _one = a.connect(KEY).await;
    let _two = a.connect(KEY).await;
    // At once, before B's next heartbeat can have told it about A's two.
    let (mut ws, first) = b.connect_raw("/app/app-key?protocol=7").await;
    let first = first.expect("a frame");
    assert_eq!(first["event"], "pusher:error", "{first}");
    assert_eq!(first["data"]["code"], 4004);
    assert_eq!(support::expect_close(&mut ws).await, 4004);
    // The refused connection gave its place back: one closed on A makes room on B.
    drop(_two);
    let mut admitted = None;
    for _ in 0..50 {
        let (ws, first) = b.connect_raw("/app/app-key?protocol=7").await;
        let first = first.expect("a frame");
        if first["event"] == "pusher:connection_established" {
            admitted = Some(ws);
            break;
        }
        assert_eq!(first["data"]["code"], 4004, "{first}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(admitted.is_some(), "a place freed on A is B's");
}

/// A node whose Redis does not answer still answers the WebSocket upgrade at once; the
/// connection is served once the cluster's count has failed to come (the node's own count
/// decides then), so the upgrade never waits on Redis.
#[tokio::test]
async fn the_upgrade_never_waits_for_redis() {
    let redis = Redis::start();
    let a = node(&redis, "max_connections = 10");
    redis.pause();
    let url = format!("ws://{}/app/app-key?protocol=7", a.addr);
    let started = std::time::Instant::now();
    let upgraded = tokio::time::timeout(
        Duration::from_secs(1),
        tokio_tungstenite::connect_async(url),
    )
    .await;
    let upgrade_took = started.elapsed();
    redis.resume();
    let (mut ws, _) = upgraded
        .expect("the upgrade answered within a second with Redis frozen")
        .expect("upgrade");
    assert!(upgrade_took < Duration::from_secs(1), "{upgrade_took:?}");
    let first = support::next_json(&mut ws).await.expect("a frame");
    assert_eq!(first["event"], "pusher:connection_established", "{first}");
}

#[tokio::test]
async fn users_are_reached_and_terminated_on_every_node() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, ""), node(&redis, ""));
    let mut carol = b.connect(KEY).await;
    let user_data = json!({"id": "carol"}).to_string();
    let auth = herald_protocol::auth::user_auth(KEY, support::SECRET, &carol.socket_id, &user_data);
    carol
        .send(json!({"event":"pusher:signin","data":{"auth":auth,"user_data":user_data}}))
        .await;
    carol.expect("pusher:signin_success").await;
    carol.subscribe("#server-to-user-carol").await;

    let body =
        json!({"name":"note","channel":"#server-to-user-carol","data":"hi carol"}).to_string();
    let (status, _) = signed(&a, "POST", "/apps/1/events", &[], Some(&body)).await;
    assert_eq!(status, 200);
    assert_eq!(carol.expect("note").await["data"], "hi carol");

    let (status, _) = signed(
        &a,
        "POST",
        "/apps/1/users/carol/terminate_connections",
        &[],
        Some("{}"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(carol.expect_close().await, 4009);
}

#[tokio::test]
async fn cache_channels_answer_from_any_node() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, ""), node(&redis, ""));
    trigger(&a, "cache-prices", "42", None).await;
    // A writes the cache to Redis after it answers the trigger: wait until B reads it.
    eventually(
        &b,
        "/apps/1/channels/cache-prices",
        &[("info", "cache")],
        |v| v["cache"]["data"] == "42",
    )
    .await;
    let mut late = b.connect(KEY).await;
    late.subscribe("cache-prices").await;
    assert_eq!(late.expect("ev").await["data"], "42");

    // A node started after the event was published takes it from Redis (nothing else can
    // tell it: no event is published again).
    let c = node(&redis, "");
    eventually(
        &c,
        "/apps/1/channels/cache-prices",
        &[("info", "cache")],
        |v| v["cache"]["data"] == "42",
    )
    .await;
    let mut newest = c.connect(KEY).await;
    newest.subscribe("cache-prices").await;
    assert_eq!(newest.expect("ev").await["data"], "42");
}

#[tokio::test]
async fn a_killed_node_is_cleaned_up_by_the_survivors() {
    let redis = Redis::start();
    let a = node(&redis, "");
    let mut b = node(&redis, "");
    let mut alice = a.connect(KEY).await;
    alice
        .subscribe_private("presence-ops", Some(&member("alice")))
        .await;
    let mut doomed = b.connect(KEY).await;
    doomed
        .subscribe_private("presence-ops", Some(&member("dora")))
        .await;
    doomed.subscribe("only-on-b").await;
    alice.expect("pusher_internal:member_added").await;
    eventually(&a, "/apps/1/channels", &[], |v| {
        v["channels"].get("only-on-b").is_some()
    })
    .await;

    b.child.kill().expect("SIGKILL node B");
    let removed = tokio::time::timeout(
        Duration::from_secs(NODE_TIMEOUT + 5),
        next_event(&mut alice, "pusher_internal:member_removed"),
    )
    .await
    .expect("member_removed within the node timeout");
    assert!(removed["data"]
        .as_str()
        .unwrap_or_default()
        .contains("dora"));
    eventually(&a, "/apps/1/channels", &[], |v| {
        v["channels"].get("only-on-b").is_none()
    })
    .await;
    let users = get(&a, "/apps/1/channels/presence-ops/users", &[]).await;
    assert_eq!(users, json!({"users": [{"id": "alice"}]}));
}

#[tokio::test]
async fn nodes_keep_serving_without_redis_and_catch_up_when_it_returns() {
    let mut redis = Redis::start();
    let (a, b) = (node(&redis, ""), node(&redis, ""));
    let mut on_a = a.connect(KEY).await;
    let mut on_b = b.connect(KEY).await;
    on_a.subscribe("room").await;
    on_b.subscribe("room").await;
    on_b.subscribe_private("presence-lobby", Some(&member("bea")))
        .await;

    redis.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A still serves its own sockets.
    trigger(&a, "room", "during outage", None).await;
    assert_eq!(on_a.expect("ev").await["data"], "during outage");
    on_a.assert_alive().await;

    redis.restart();
    // A's held message reaches B once Redis is back, and the restated state answers queries.
    let late = tokio::time::timeout(Duration::from_secs(10), next_event(&mut on_b, "ev"))
        .await
        .expect("the held message after Redis returned");
    assert_eq!(late["data"], "during outage");
    eventually(
        &a,
        "/apps/1/channels/room",
        &[("info", "subscription_count")],
        |v| v["subscription_count"] == 2,
    )
    .await;
    eventually(&a, "/apps/1/channels/presence-lobby/users", &[], |v| {
        v == &json!({"users": [{"id": "bea"}]})
    })
    .await;
    trigger(&a, "room", "after", None).await;
    assert_eq!(on_b.expect("ev").await["data"], "after");
}

#[tokio::test]
async fn the_first_query_after_a_redis_restart_is_answered() {
    let mut redis = Redis::start();
    let a = node(&redis, "");
    let mut on_a = a.connect(KEY).await;
    on_a.subscribe("room").await;
    get(&a, "/apps/1/channels", &[]).await;
    for round in 0..3 {
        redis.kill();
        redis.restart();
        // The node's query connection still holds the old server's socket until a request
        // finds it broken; a read is sent again on the new one rather than answered 503.
        let (status, body) = signed(&a, "GET", "/apps/1/channels/room", &[], None).await;
        assert_eq!(status, 200, "round {round}: {body}");
    }
}

#[tokio::test]
async fn a_burst_of_subscriptions_is_counted_exactly() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, ""), node(&redis, ""));
    // Subscriptions queued together are counted in one pipelined batch.
    let mut clients = Vec::new();
    for _ in 0..60 {
        clients.push(a.connect(KEY).await);
    }
    let frame =
        json!({"event":"pusher:subscribe","data":{"channel":"burst","auth":""}}).to_string();
    for ws in &mut clients {
        ws.send_text(&frame).await;
    }
    for ws in &mut clients {
        ws.expect("pusher_internal:subscription_succeeded").await;
    }
    let info = get(
        &b,
        "/apps/1/channels/burst",
        &[("info", "subscription_count")],
    )
    .await;
    assert_eq!(info, json!({"occupied": true, "subscription_count": 60}));
    drop(clients);
    eventually(&b, "/apps/1/channels", &[], |v| {
        v["channels"].get("burst").is_none()
    })
    .await;
}
