//! A dead node's reap, in every app it wrote to and through a Redis pause, and the
//! resync after an outage.

use std::collections::HashMap;

use redis::AsyncCommands;

use super::*;

/// Marks `node` as having last beaten long ago, as the heartbeat script would find it.
async fn stale(conn: &mut redis::aio::MultiplexedConnection, node: u32) {
    let () = conn.zadd("{herald}:nodes", node, 0).await.expect("ZADD");
}

/// Everything node `node` holds of `app` in Redis, by key; empty once it is reaped.
async fn share(conn: &mut redis::aio::MultiplexedConnection, app: &str, node: u32) -> Vec<String> {
    let mut held = Vec::new();
    let field = node.to_string();
    for key in [
        format!("{{herald:{app}}}:s:chan"),
        format!("{{herald:{app}}}:conns"),
    ] {
        if hash(conn, &key).await.contains_key(&field) {
            held.push(key);
        }
    }
    for suffix in ["s", "m", "u"] {
        let key = format!("{{herald:{app}}}:n:{node}:{suffix}");
        let exists: bool = conn.exists(&key).await.expect("EXISTS");
        if exists {
            held.push(key);
        }
    }
    held
}

/// Asserts that node 2 is reaped: nothing of its share left in apps 1 and 2 (members
/// included), its index and its claim gone.
async fn assert_reaped(look: &mut redis::aio::MultiplexedConnection) {
    for app in ["1", "2"] {
        assert_eq!(share(look, app, 2).await, Vec::<String>::new(), "app {app}");
        let members = hash(look, &format!("{{herald:{app}}}:m:presence-room")).await;
        assert!(members.is_empty(), "app {app}: {members:?}");
    }
    let index: bool = look.exists("{herald}:n:2:apps").await.expect("EXISTS");
    let claims: Vec<u32> = look
        .zrange("{herald}:reaping", 0, -1)
        .await
        .expect("ZRANGE");
    assert!(!index && claims.is_empty(), "the reap is done: {claims:?}");
}

/// Node 2 (serving apps 1 and 2) has a subscriber of `chan`, a presence member and a
/// connection in each; node 1 serves app 1 only and has a subscriber of its `chan`.
async fn two_nodes(redis: &RedisServer) -> (Node, Node) {
    let mut survivor = Node::start(redis, 1, &["1"], 100).await;
    let mut dead = Node::start(redis, 2, &["1", "2"], 100).await;
    for (app, user) in [("1", "ann"), ("2", "bob")] {
        dead.subscribe(app, "chan", 1).await;
        dead.join(app, "presence-room", (2, &outbox()), user).await;
        dead.connect(app).await;
    }
    survivor.subscribe("1", "chan", 1).await;
    (survivor, dead)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reap_removes_the_dead_nodes_share_in_every_app_it_wrote_to() {
    let redis = redis().await;
    let mut look = look(&redis).await;
    let (mut survivor, dead) = two_nodes(&redis).await;
    for app in ["1", "2"] {
        assert_eq!(share(&mut look, app, 2).await.len(), 4, "app {app} before");
    }
    stale(&mut look, 2).await;
    // The survivor does not serve app 2 (a rolling change of the apps, say).
    survivor.told_dead(2).await;
    assert_reaped(&mut look).await;
    assert_eq!(
        hash(&mut look, "{herald:1}:s:chan").await,
        HashMap::from([("1".to_owned(), 1)]),
        "the survivor's own subscriber stays"
    );
    // The nodes that serve app 2 hear its member leave, on the bus.
    let events = survivor.bus_events();
    let removed = |app: &str, user: &str| {
        events.iter().any(|(a, channel, frame)| {
            a == app
                && channel == "presence-room"
                && frame.contains("member_removed")
                && frame.contains(user)
        })
    };
    assert!(removed("1", "ann") && removed("2", "bob"), "{events:?}");
    drop(dead);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reap_that_fails_after_its_claim_is_retried_until_done() {
    let redis = redis().await;
    let mut look = look(&redis).await;
    let (mut survivor, _dead) = two_nodes(&redis).await;
    // A housekeeping with nothing dead: the survivor's apps are indexed, and the next look
    // for claims whose claimer died is a timeout away.
    survivor.task.housekeeping().await;
    stale(&mut look, 2).await;
    assert!(survivor.task.claim(2, false).await.expect("claim"));
    let listed: Option<f64> = look.zscore("{herald}:nodes", 2).await.expect("ZSCORE");
    assert_eq!(
        listed, None,
        "the claim took the dead node out of the nodes"
    );
    // Redis stops answering during the reap, which fails; the housekeeping that ran it
    // marks Redis away.
    tokio::task::block_in_place(|| redis.pause());
    let error = survivor.task.reap(2).await.expect_err("Redis is paused");
    survivor.task.failed(&error);
    // Nothing is tried while Redis is known to be away, and the claim is kept.
    survivor.task.housekeeping().await;
    assert!(survivor.task.reaping.contains(&2));
    tokio::task::block_in_place(|| redis.resume());
    for app in ["1", "2"] {
        assert_eq!(
            share(&mut look, app, 2).await.len(),
            4,
            "app {app}: not reaped yet"
        );
    }
    // Redis answers again: the reap is retried and done.
    survivor.told_recovered().await;
    assert!(survivor.task.healthy());
    assert_reaped(&mut look).await;
    assert!(survivor.task.reaping.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reap_claimed_by_a_node_that_died_too_is_taken_over() {
    let redis = redis().await;
    let mut look = look(&redis).await;
    let (mut survivor, _dead) = two_nodes(&redis).await;
    // Node 3 claimed node 2's reap long ago (which took node 2 off the node list, where
    // its id's claim at start had put it) and died before it was done.
    let () = look.zrem("{herald}:nodes", 2).await.expect("ZREM");
    let () = look.zadd("{herald}:reaping", 2, 0).await.expect("ZADD");
    survivor.task.claims_due = Instant::now();
    survivor.task.housekeeping().await;
    assert_reaped(&mut look).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_beating_again_is_not_reaped() {
    let redis = redis().await;
    let mut look = look(&redis).await;
    let (mut survivor, _dead) = two_nodes(&redis).await;
    stale(&mut look, 2).await;
    assert!(survivor.task.claim(2, false).await.expect("claim"));
    // Node 2 was only paused: its next heartbeat lists it again, before the reap ran.
    let now: (u64, u64) = redis::cmd("TIME")
        .query_async(&mut look)
        .await
        .expect("TIME");
    let ms = now.0 * 1000 + now.1 / 1000;
    let () = look.zadd("{herald}:nodes", 2, ms).await.expect("ZADD");
    survivor.task.housekeeping().await;
    for app in ["1", "2"] {
        assert_eq!(share(&mut look, app, 2).await.len(), 4, "app {app}: kept");
    }
    assert!(survivor.task.reaping.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_restates_what_changed_while_redis_was_away() {
    let redis = redis().await;
    let mut look = look(&redis).await;
    let mut node = Node::start(&redis, 1, &["1"], 100).await;
    node.subscribe("1", "chan", 1).await;
    node.join("1", "presence-room", (2, &outbox()), "ann").await;
    // A subscription Redis lists for the node and the hub does not hold (its leave was
    // lost with a failover, say).
    let () = redis::pipe()
        .hset("{herald:1}:s:ghost", 1, 3)
        .sadd("{herald:1}:chans", "ghost")
        .sadd("{herald:1}:n:1:s", "1\nghost")
        .query_async(&mut look)
        .await
        .expect("a lost leave");
    tokio::task::block_in_place(|| redis.pause());
    // The first change finds Redis away (its write, sent before the answer timed out, is
    // applied once Redis runs again); the others are applied to the hub alone.
    node.subscribe("1", "other", 3).await;
    assert!(!node.task.healthy());
    node.leave("1", "presence-room", 2).await;
    node.join("1", "presence-room", (4, &outbox()), "bob").await;
    tokio::task::block_in_place(|| redis.resume());
    assert_eq!(
        hash(&mut look, "{herald:1}:m:presence-room").await,
        HashMap::from([("ann".to_owned(), 1)]),
        "Redis holds the members before the outage"
    );
    node.bus_events();
    node.told_recovered().await;
    assert!(node.task.healthy());
    let one = |n| HashMap::from([("1".to_owned(), n)]);
    assert_eq!(hash(&mut look, "{herald:1}:s:chan").await, one(1));
    assert_eq!(hash(&mut look, "{herald:1}:s:other").await, one(1));
    assert_eq!(hash(&mut look, "{herald:1}:s:ghost").await, HashMap::new());
    assert_eq!(
        hash(&mut look, "{herald:1}:m:presence-room").await,
        HashMap::from([("bob".to_owned(), 1)])
    );
    let mut chans: Vec<String> = look.smembers("{herald:1}:chans").await.expect("SMEMBERS");
    chans.sort();
    assert_eq!(chans, ["chan", "other", "presence-room"]);
    let apps: Vec<String> = look.smembers("{herald}:n:1:apps").await.expect("SMEMBERS");
    assert_eq!(apps, ["1"], "the node's index");
    // The cluster hears the changes as clean joins and leaves would have told it.
    let events = node.bus_events();
    let said = |what: &str, user: &str| {
        events
            .iter()
            .any(|(_, _, frame)| frame.contains(what) && frame.contains(user))
    };
    assert!(
        said("member_removed", "ann") && said("member_added", "bob"),
        "{events:?}"
    );
}
