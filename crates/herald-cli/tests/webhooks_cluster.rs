//! The cluster's webhook queue against real `herald serve` processes, a real
//! `redis-server` and a real receiver (issue 25): batches a node wrote to Redis while the
//! receiver was down are sent by another node once that node is killed (SIGKILL), within
//! the lease, with the ids they were written with, signed, and in order per channel; a
//! `channel_vacated` one node writes waits for the `channel_occupied` another node is
//! retrying.
mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::json;
use support::receiver::{
    assert_occupied_before_vacated, assert_signed_and_identified, first_names, Receiver,
};
use support::wait::eventually;
use support::{Redis, Server, KEY, SECRET};

/// The lease the nodes run with (seconds).
const LEASE: u64 = 2;

fn config(redis: &Redis, port: u16) -> String {
    format!(
        "adapter = \"redis\"\nredis_url = \"{}\"\nnode_timeout = 2\n\
         webhook_lease = {LEASE}\nwebhook_vacated_delay_ms = 0\n\
         [[apps]]\nid = \"1\"\nkey = \"{KEY}\"\nsecret = \"{SECRET}\"\n\
         [[apps.webhooks]]\nurl = \"http://127.0.0.1:{port}/hook\"\n\
         event_types = [\"channel_occupied\", \"channel_vacated\"]\n",
        redis.url()
    )
}

/// The ids of the batches in app 1's stream, as `X-Herald-Webhook-Id` carries them.
fn stream_ids(redis: &Redis) -> BTreeSet<String> {
    let out = redis
        .cli(&["XRANGE", "{herald:1}:wh", "-", "+"])
        .expect("redis-cli");
    out.lines()
        .filter_map(|line| {
            let (ms, seq) = line.trim().split_once('-')?;
            let (ms, seq): (u64, u64) = (ms.parse().ok()?, seq.parse().ok()?);
            Some((ms << 20 | seq).to_string())
        })
        .collect()
}

/// The cluster's count of `channel`'s subscribers in Redis (every node's share).
fn subscribers(redis: &Redis, channel: &str) -> u64 {
    let out = redis
        .cli(&["HVALS", &format!("{{herald:1}}:s:{channel}")])
        .expect("redis-cli");
    out.lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn a_dead_nodes_batches_are_sent_by_another_node_within_the_lease() {
    let redis = Redis::start();
    let port = support::db::free_port();
    let config = config(&redis, port);
    let mut a = Server::start_logged(&config, &[]);
    let b = Server::start_logged(&config, &[]);

    // Receiver down: every batch A writes stays in Redis, in A's hands.
    let mut ws = a.connect(KEY).await;
    let channels: Vec<String> = (0..3).map(|i| format!("room-{i}")).collect();
    for channel in &channels {
        ws.subscribe(channel).await;
        // Past the 250 ms batch window: a batch each.
        tokio::time::sleep(Duration::from_millis(300)).await;
        ws.send(json!({"event":"pusher:unsubscribe","data":{"channel":channel}}))
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let batches = 2 * channels.len();
    eventually(
        "every batch is in Redis",
        Duration::from_secs(5),
        async || stream_ids(&redis).len() == batches,
    )
    .await;
    let written = stream_ids(&redis);

    a.child.kill().expect("SIGKILL");
    a.child.wait().expect("reap");
    let killed = Instant::now();
    drop(ws);
    let receiver = Receiver::up(port, vec!["200 OK"]).await;
    // The lease, a tick of B's dispatcher, and slack for a loaded machine.
    eventually(
        "B sends every batch",
        Duration::from_secs(LEASE + 6),
        async || {
            let got: BTreeSet<String> = receiver.got().into_iter().map(|g| g.id).collect();
            written.is_subset(&got)
        },
    )
    .await;
    let took = killed.elapsed();
    let got = receiver.got();
    assert_signed_and_identified(&got);
    let ids: BTreeSet<String> = got.iter().map(|g| g.id.clone()).collect();
    assert_eq!(ids, written, "the ids A wrote them with, and no other");
    // Per channel, occupied before vacated, across the nodes.
    assert_occupied_before_vacated(&got, &channels);
    eventually("the stream is empty", Duration::from_secs(5), async || {
        stream_ids(&redis).is_empty()
    })
    .await;
    assert!(b.log().contains("claimed"), "B logs the claim: {}", b.log());
    eprintln!(
        "{batches} batches sent by B {:.1} s after A's SIGKILL (lease {LEASE} s), {} requests",
        took.as_secs_f64(),
        got.len()
    );
}

#[tokio::test]
async fn a_vacated_from_one_node_waits_for_the_occupied_another_node_retries() {
    let redis = Redis::start();
    let port = support::db::free_port();
    let config = config(&redis, port);
    // The occupied batch fails twice (two backoffs, about 1.5 to 3 s) before it is taken.
    let receiver = Receiver::up(
        port,
        vec![
            "500 Internal Server Error",
            "500 Internal Server Error",
            "200 OK",
        ],
    )
    .await;
    let a = Server::start_logged(&config, &[]);
    let b = Server::start_logged(&config, &[]);
    let (mut on_a, mut on_b) = (a.connect(KEY).await, b.connect(KEY).await);
    // A sees the first subscriber (occupied, from A); B the last one gone (vacated, from B).
    on_a.subscribe("room").await;
    eventually("A's first attempt", Duration::from_secs(5), async || {
        !receiver.got().is_empty()
    })
    .await;
    on_b.subscribe("room").await;
    // A's unsubscribe counted in Redis first, so the last one gone is B's.
    on_a.send(json!({"event":"pusher:unsubscribe","data":{"channel":"room"}}))
        .await;
    eventually("one subscriber left", Duration::from_secs(5), async || {
        subscribers(&redis, "room") == 1
    })
    .await;
    on_b.send(json!({"event":"pusher:unsubscribe","data":{"channel":"room"}}))
        .await;
    eventually("the vacated arrives", Duration::from_secs(10), async || {
        receiver
            .got()
            .iter()
            .any(|g| g.events().iter().any(|e| e["name"] == "channel_vacated"))
    })
    .await;
    let got = receiver.got();
    assert_signed_and_identified(&got);
    assert_eq!(
        first_names(&got),
        [
            ("channel_occupied".to_owned(), "500 Internal Server Error"),
            ("channel_occupied".to_owned(), "500 Internal Server Error"),
            ("channel_occupied".to_owned(), "200 OK"),
            ("channel_vacated".to_owned(), "200 OK"),
        ],
        "B's vacated waits for A's occupied through its retries"
    );
}
