//! Channel history in a cluster (issue 27 item 1), against two real `herald serve`
//! processes on one real `redis-server`: serials increase per channel across the nodes,
//! every node pages the same history, within the app's bounds, and every subscriber gets
//! the events with no gap, in serial order, whichever node they were published through.
//! (The official Node library reads it in tests/js/history.test.mjs.)

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::history::{datas, history_page, serials};
use support::{signed, Redis, Server, KEY};

fn node(redis: &Redis, history: &str) -> Server {
    Server::start(&format!(
        "adapter = \"redis\"\nredis_url = \"{}\"\n[[apps]]\nid = \"1\"\nkey = \"app-key\"\nsecret = \"app-secret\"\n{history}\n",
        redis.url()
    ))
}

async fn trigger(server: &Server, channel: &str, data: &str) {
    let body = json!({"name": "e", "channel": channel, "data": data}).to_string();
    let (status, reply) = signed(server, "POST", "/apps/1/events", &[], Some(&body)).await;
    assert_eq!(status, 200, "{reply}");
}

async fn history(server: &Server, channel: &str, params: &[(&str, &str)]) -> Value {
    let (status, page) = history_page(server, channel, params).await;
    assert_eq!(status, 200, "{page}");
    page
}

/// Polls `page` until `done` holds, for at most 10 s.
async fn until(what: &str, mut page: impl AsyncFnMut() -> Value, done: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = page().await;
        if done(&got) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {got}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn serials_increase_across_nodes_and_every_node_pages_the_same_history() {
    let redis = Redis::start();
    let (a, b) = (
        node(&redis, "history_max_events = 10"),
        node(&redis, "history_max_events = 10"),
    );
    let mut on_a = a.connect(KEY).await;
    let mut on_b = b.connect(KEY).await;
    on_a.subscribe("room").await;
    on_b.subscribe("room").await;
    // Through both nodes in turn, each answered before the next: the serials follow the
    // order of the answers.
    for n in 0..16 {
        let via = if n % 2 == 0 { &a } else { &b };
        trigger(via, "room", &format!("r{n}")).await;
    }
    trigger(&b, "other", "o0").await;

    let from_b = history(&b, "room", &[]).await;
    let from_a = history(&a, "room", &[]).await;
    assert_eq!(serials(&from_b), (7..=16).collect::<Vec<_>>(), "{from_b}");
    assert_eq!(from_a, from_b, "both nodes read the cluster's history");
    assert_eq!(datas(&from_b)[0], "r6");
    assert_eq!(
        (
            from_b["oldest_serial"].as_u64(),
            from_b["newest_serial"].as_u64()
        ),
        (Some(7), Some(16))
    );
    // A page after a serial, and before one.
    assert_eq!(
        serials(&history(&a, "room", &[("after", "8"), ("limit", "3")]).await),
        [9, 10, 11]
    );
    assert_eq!(
        serials(&history(&b, "room", &[("before", "9"), ("limit", "5")]).await),
        [7, 8]
    );
    // Another channel's serials start above every serial the app gave.
    assert_eq!(serials(&history(&a, "other", &[]).await), [17]);

    // Every subscriber, on either node, got all sixteen, in the serials' order.
    for ws in [&mut on_a, &mut on_b] {
        let mut got = Vec::new();
        for _ in 0..16 {
            got.push(ws.expect("e").await["data"].clone());
        }
        let sent: Vec<Value> = (0..16).map(|n| format!("r{n}").into()).collect();
        assert_eq!(got, sent);
    }
}

#[tokio::test]
async fn bytes_and_age_bound_the_cluster_history() {
    let redis = Redis::start();
    // Each frame of these events is 46 bytes: 200 keep four.
    let bounds = "history_max_events = 100\nhistory_max_bytes = 200\nhistory_max_age = 1";
    let (a, b) = (node(&redis, bounds), node(&redis, bounds));
    for n in 0..6 {
        trigger(
            if n % 2 == 0 { &a } else { &b },
            "bounded",
            &format!("b{n}"),
        )
        .await;
    }
    let page = history(&b, "bounded", &[]).await;
    assert_eq!(serials(&page), [3, 4, 5, 6], "{page}");
    // A second later every event is past its age, on either node.
    until(
        "the age bound",
        || history(&a, "bounded", &[]),
        |p| serials(p).is_empty(),
    )
    .await;
    // The serials go on from where they were.
    trigger(&a, "bounded", "later").await;
    assert_eq!(serials(&history(&b, "bounded", &[]).await), [7]);
    // A server that lost its scripts (restarted, or a promoted replica) is given the
    // append script again: the event is kept all the same.
    redis.cli(&["SCRIPT", "FLUSH"]).expect("SCRIPT FLUSH");
    trigger(&a, "bounded", "after a flush").await;
    until(
        "the event after the flush",
        || history(&b, "bounded", &[]),
        |p| serials(p) == [7, 8],
    )
    .await;
}

#[tokio::test]
async fn an_app_with_history_off_keeps_nothing_in_redis() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, ""), node(&redis, ""));
    let mut on_b = b.connect(KEY).await;
    on_b.subscribe("quiet").await;
    trigger(&a, "quiet", "q").await;
    assert_eq!(on_b.expect("e").await["data"], "q");
    let path = "/apps/1/channels/quiet/events";
    let (status, reply) = signed(&b, "GET", path, &[], None).await;
    assert_eq!(status, 404, "{reply}");
    let keys = redis
        .cli(&["--scan", "--pattern", "*}:h*"])
        .unwrap_or_default();
    assert!(keys.trim().is_empty(), "history keys: {keys}");
}

#[tokio::test]
async fn a_client_event_is_kept_once_and_its_sender_is_left_out_on_its_own_node() {
    let redis = Redis::start();
    // Without recovery, whose confirming pings would break the silence looked for below.
    let config = "history_max_events = 10\nrecovery_window = 0";
    let (a, b) = (node(&redis, config), node(&redis, config));
    let mut bob = b.connect(KEY).await;
    bob.subscribe_private(
        "presence-room",
        Some(&json!({"user_id": "bob"}).to_string()),
    )
    .await;
    let mut ann = a.connect(KEY).await;
    ann.subscribe_private(
        "presence-room",
        Some(&json!({"user_id": "ann"}).to_string()),
    )
    .await;
    bob.expect("pusher_internal:member_added").await;
    ann.send(json!({"event": "client-typing", "channel": "presence-room", "data": {"on": true}}))
        .await;
    assert_eq!(
        bob.expect("client-typing").await["data"],
        json!({"on": true})
    );
    let page = history(&a, "presence-room", &[]).await;
    assert_eq!(serials(&page), [1], "{page}");
    assert_eq!(page["events"][0]["user_id"], "ann");
    // The sender's own node delivers the event from the bus too, without her.
    ann.expect_silence(300).await;
}
