//! Cache channels across nodes, against three real `herald serve` processes on one real
//! `redis-server`: once a trigger on a cache channel is answered, every later subscriber,
//! through any node, is replayed that event or a newer one.

mod support;

use serde_json::{json, Value};
use support::nodes::trigger;
use support::{signed, Redis, Server, Ws, KEY};

const ROUNDS: usize = 40;

fn node(redis: &Redis) -> Server {
    Server::start(&format!(
        "adapter = \"redis\"\nredis_url = \"{}\"\n[[apps]]\nid = \"1\"\nkey = \"app-key\"\nsecret = \"app-secret\"\n",
        redis.url()
    ))
}

/// Subscribes `ws` to `channel`; the data of the event it is replayed (a cache miss fails).
async fn replayed(ws: &mut Ws, channel: &str) -> Value {
    assert_eq!(
        ws.subscribe(channel).await["event"],
        "pusher_internal:subscription_succeeded"
    );
    let frame = ws.next().await;
    assert_eq!(frame["event"], "ev", "{channel}: {frame}");
    frame["data"].clone()
}

/// Publishes `data` on each of `channels` through `server`'s batch endpoint.
async fn batch(server: &Server, channels: &[String], data: &str) {
    let batch: Vec<Value> = channels
        .iter()
        .map(|channel| json!({"name": "ev", "channel": channel, "data": data}))
        .collect();
    let body = json!({"batch": batch}).to_string();
    let (status, reply) = signed(server, "POST", "/apps/1/batch_events", &[], Some(&body)).await;
    assert_eq!(status, 200, "{reply}");
}

/// Rounds of two triggers, through A then B, on a channel no node has a subscriber of, then
/// a new subscriber through C, whose node takes Redis's copy. With `busy`, B has just
/// answered a batch of ten other cache events before the second trigger: on a node that
/// queued its stores behind its other work, the second one was still waiting.
async fn fresh_subscribers(busy: bool) {
    let redis = Redis::start();
    let (a, b, c) = (node(&redis), node(&redis), node(&redis));
    for round in 0..ROUNDS {
        let channel = format!("cache-fresh-{round}");
        trigger(&a, &channel, "first", None).await;
        if busy {
            let others: Vec<String> = (0..10)
                .map(|i| format!("cache-other-{round}-{i}"))
                .collect();
            batch(&b, &others, "other").await;
        }
        trigger(&b, &channel, "second", None).await;
        let mut late = c.connect(KEY).await;
        let got = replayed(&mut late, &channel).await;
        assert_eq!(got, "second", "round {round}");
    }
}

#[tokio::test]
async fn a_fresh_subscriber_on_another_node_is_replayed_the_last_answered_event() {
    fresh_subscribers(false).await;
}

#[tokio::test]
async fn a_fresh_subscriber_is_replayed_the_last_answered_event_behind_a_batch() {
    fresh_subscribers(true).await;
}

#[tokio::test]
async fn a_subscriber_on_a_node_already_listening_is_replayed_the_last_answered_event() {
    let redis = Redis::start();
    let (a, b, c) = (node(&redis), node(&redis), node(&redis));
    // C listens to the channel all along, and keeps its own copy of the last event.
    let mut standing = c.connect(KEY).await;
    standing
        .send(json!({"event": "pusher:subscribe", "data": {"channel": "cache-scores"}}))
        .await;
    standing
        .expect("pusher_internal:subscription_succeeded")
        .await;
    standing.expect("pusher:cache_miss").await;
    for round in 0..ROUNDS {
        let (first, second) = (format!("{round}-first"), format!("{round}-second"));
        trigger(&a, "cache-scores", &first, None).await;
        trigger(&b, "cache-scores", &second, None).await;
        let mut late = c.connect(KEY).await;
        assert_eq!(
            replayed(&mut late, "cache-scores").await,
            second,
            "round {round}"
        );
        // Both reach the standing subscriber. Their order is not promised: each node keeps
        // its own publishing order, but A's event goes on the bus after A answered, so B's,
        // sent after that answer, may reach C first (seen under load in CI).
        let mut got = Vec::new();
        for _ in 0..2 {
            got.push(standing.expect("ev").await["data"].clone());
        }
        got.sort_by_key(|d| d.as_str().map(str::to_owned));
        assert_eq!(got, [json!(first), json!(second)], "round {round}");
    }
}

/// A batch answers once Redis holds each of its cache channels' events too.
#[tokio::test]
async fn a_batch_on_cache_channels_is_answered_once_redis_has_the_events() {
    let redis = Redis::start();
    let (a, b) = (node(&redis), node(&redis));
    for round in 0..ROUNDS / 4 {
        let channels: Vec<String> = (0..3).map(|i| format!("cache-batch-{round}-{i}")).collect();
        batch(&a, &channels, "batched").await;
        for channel in &channels {
            let mut late = b.connect(KEY).await;
            assert_eq!(replayed(&mut late, channel).await, "batched", "{channel}");
        }
    }
}
