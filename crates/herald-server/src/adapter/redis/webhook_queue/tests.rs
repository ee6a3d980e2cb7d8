//! The shared queue against a real `redis-server`: two `StreamQueue`s are two nodes.

use std::sync::Arc;
use std::time::Duration;

use redis_fixture::RedisServer;

use super::*;
use crate::adapter::config::AdapterConfig;
use crate::webhooks::State;
use crate::Config;

/// A node's end of the queue on `server`, with this lease and byte bound.
fn node(server: &RedisServer, lease: Duration, max_bytes: usize) -> Arc<StreamQueue> {
    let config = Config::from_toml(
        &format!("adapter = \"redis\"\nredis_url = \"{}\"\n", server.url()),
        &|_| None,
    )
    .expect("a valid config");
    let AdapterConfig::Redis(redis) = &config.adapter else {
        panic!("a cluster's config");
    };
    let mut settings = crate::adapter::webhook_settings(&config);
    settings.options.lease = lease;
    settings.options.max_stored_bytes = max_bytes;
    Arc::new(StreamQueue::new(redis, &settings).expect("the queue"))
}

fn record(channel: &str) -> Record {
    Record {
        id: 0,
        app_id: "1".into(),
        url: "http://receiver/hook".into(),
        key: "key".into(),
        signature: "signature".into(),
        body: format!(r#"{{"time_ms":1,"events":[{{"channel":"{channel}"}}]}}"#),
        channels: vec![channel.into()],
        created_ms: now_ms(),
        attempts: 0,
        next_attempt_ms: 0,
        dead_ms: None,
        last_status: None,
        last_error: None,
        sent_as: None,
        token: None,
    }
}

/// Runs `work` on `queue` off the runtime's threads, as the dispatcher does.
async fn on<T: Send + 'static>(
    queue: &Arc<StreamQueue>,
    work: impl FnOnce(&StreamQueue) -> T + Send + 'static,
) -> T {
    let queue = queue.clone();
    tokio::task::spawn_blocking(move || work(&queue))
        .await
        .expect("the work ran")
}

/// Appends `record` on `queue`; its id.
async fn append(queue: &Arc<StreamQueue>, mut record: Record) -> Record {
    let (outcome, record) = on(queue, move |q| {
        (q.append(std::slice::from_mut(&mut record)), record)
    })
    .await;
    assert!(
        matches!(outcome.expect("written").as_slice(), [Appended::Stored(_)]),
        "stored"
    );
    record
}

fn len(server: &RedisServer, key: &str) -> String {
    server
        .cli(&["XLEN", key])
        .expect("redis-cli")
        .trim()
        .to_owned()
}

#[test]
fn batch_ids_are_stream_ids() {
    let id = batch_id("1796646768558-3").expect("an id");
    assert_eq!(stream_id(id), "1796646768558-3");
    assert!(batch_id("1-1048576").is_none(), "a sequence past 20 bits");
    assert!(batch_id("x").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_written_again_with_its_token_is_the_same_entry_until_it_finishes() {
    let server = RedisServer::start();
    let queue = node(&server, Duration::from_secs(30), 1 << 20);
    // As a write that timed out, was applied late, and is made again from the copy kept.
    let first = append(&queue, record("room")).await;
    let token = first.token.expect("a token set on the first try");
    let mut again = record("room");
    again.token = Some(token);
    let again = append(&queue, again).await;
    assert_eq!(again.id, first.id, "the entry already there");
    assert_eq!(len(&server, "{herald:1}:wh"), "1");
    on(&queue, move |q| q.ack(&again)).await.expect("ack");
    assert_eq!(len(&server, "{herald:1}:wh"), "0");
    let tokens = server.cli(&["HLEN", "{herald:1}:wh:t"]).expect("redis-cli");
    assert_eq!(tokens.trim(), "0", "finished, its token is forgotten");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_claimed_by_another_node_only_once_its_holder_is_idle_past_the_lease() {
    let server = RedisServer::start();
    let lease = Duration::from_millis(300);
    let (a, b) = (node(&server, lease, 1 << 20), node(&server, lease, 1 << 20));
    let written = append(&a, record("room")).await;
    // A renews its lease on each tick; B finds nothing to claim while it does.
    for _ in 0..4 {
        assert!(on(&a, |q| q.claim("1", 10))
            .await
            .expect("a tick")
            .is_empty());
        assert!(on(&b, |q| q.claim("1", 10))
            .await
            .expect("a tick")
            .is_empty());
        tokio::time::sleep(lease / 3).await;
    }
    // A stops (dies): past the lease, B holds the batch, with its id and body.
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    let claimed = on(&b, |q| q.claim("1", 10)).await.expect("a tick");
    assert_eq!(claimed, vec![written.clone()]);
    let depth = b.depth("1");
    assert_eq!((depth.pending, depth.dead), (1, 0), "{depth:?}");
    on(&b, move |q| q.ack(&claimed[0])).await.expect("acked");
    assert_eq!(len(&server, "{herald:1}:wh"), "0");
    // A late acknowledgement by the first holder changes nothing.
    on(&a, move |q| q.ack(&written)).await.expect("acked");
    let bytes = server.cli(&["GET", "{herald:1}:wh:b"]).expect("redis-cli");
    assert_eq!(bytes.trim(), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_waits_for_an_earlier_one_on_its_channel_that_another_node_holds() {
    let server = RedisServer::start();
    let lease = Duration::from_secs(30);
    let (a, b) = (node(&server, lease, 1 << 20), node(&server, lease, 1 << 20));
    let first = append(&a, record("room")).await;
    let later = append(&b, record("room")).await;
    let other = append(&b, record("elsewhere")).await;
    tokio::time::timeout(Duration::from_millis(100), b.after_earlier(&other))
        .await
        .expect("another channel does not wait");
    assert!(
        tokio::time::timeout(Duration::from_millis(600), b.after_earlier(&later))
            .await
            .is_err(),
        "the later batch waits while A holds the first"
    );
    on(&a, move |q| q.ack(&first)).await.expect("acked");
    tokio::time::timeout(Duration::from_secs(2), b.after_earlier(&later))
        .await
        .expect("free once the first is delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_byte_bound_removes_the_oldest_dead_letters_first_then_refuses() {
    let server = RedisServer::start();
    let one = record("room").encode().len();
    // Two pending batches fit, or one pending and one dead letter (a little longer).
    let queue = node(&server, Duration::from_secs(30), 2 * one + 100);
    for channel in ["dead-1", "dead-2"] {
        let mut dead = append(&queue, record(channel)).await;
        on(&queue, move |q| q.dead_letter(&mut dead, now_ms()))
            .await
            .expect("a dead letter");
    }
    let evicted = |server: &RedisServer| {
        server
            .cli(&["GET", "{herald:1}:wh:ev"])
            .expect("redis-cli")
            .trim()
            .to_owned()
    };
    append(&queue, record("a")).await;
    assert_eq!(evicted(&server), "1", "the oldest dead letter went");
    append(&queue, record("b")).await;
    assert_eq!(evicted(&server), "2", "then the other");
    let mut refused = record("c");
    let outcome = on(&queue, move |q| {
        q.append(std::slice::from_mut(&mut refused))
    })
    .await
    .expect("written");
    assert_eq!(outcome, vec![Appended::Refused], "no dead letter is left");
    assert_eq!(evicted(&server), "3", "the refusal is counted");
    on(&queue, |q| q.claim("1", 10)).await.expect("a tick");
    let depth = queue.depth("1");
    assert_eq!((depth.pending, depth.dead), (2, 0), "{depth:?}");
    assert!(depth.bytes <= (2 * one + 100) as u64, "{depth:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_calls_list_show_retry_and_purge() {
    let server = RedisServer::start();
    let queue = node(&server, Duration::from_secs(30), 1 << 20);
    let pending = append(&queue, record("a")).await;
    let mut dead = append(&queue, record("b")).await;
    on(&queue, move |q| q.dead_letter(&mut dead, now_ms()))
        .await
        .expect("a dead letter");
    on(&queue, |q| q.claim("1", 10)).await.expect("a tick");
    let filter = |state: Option<State>| Filter {
        app_id: "1".into(),
        endpoint: None,
        state,
    };
    let all = on(&queue, move |q| q.list(&filter(None), None, 10))
        .await
        .expect("a list");
    assert_eq!(all.len(), 2);
    assert_eq!(all[0], pending);
    let dead = on(&queue, move |q| {
        q.list(&filter(Some(State::Dead)), None, 10)
    })
    .await
    .expect("a list");
    assert_eq!(dead.len(), 1);
    let retried = on(&queue, move |q| q.retry(&filter(None), None, now_ms()))
        .await
        .expect("retried");
    assert_eq!(retried.len(), 1, "a new batch");
    let id = retried[0];
    let shown = on(&queue, move |q| q.show(id))
        .await
        .expect("shown")
        .expect("there");
    assert_eq!(shown.state(), State::Pending);
    assert_eq!(shown.body, dead[0].body, "the same body");
    assert_ne!(id, dead[0].id, "a new place in the stream");
    assert_eq!(shown.header_id(), dead[0].id, "receivers get its first id");
    let purged = on(&queue, move |q| q.purge(&filter(None)))
        .await
        .expect("purged");
    assert_eq!(purged, 2);
    assert_eq!(len(&server, "{herald:1}:wh"), "0");
    let bytes = server.cli(&["GET", "{herald:1}:wh:b"]).expect("redis-cli");
    assert_eq!(bytes.trim(), "0", "every byte accounted for");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_attempts_progress_is_listed_on_any_node_and_goes_with_the_batch() {
    let server = RedisServer::start();
    let (a, b) = (
        node(&server, Duration::from_secs(30), 1 << 20),
        node(&server, Duration::from_secs(30), 1 << 20),
    );
    let mut record = append(&a, record("p")).await;
    record.attempts = 3;
    record.next_attempt_ms = 1_234;
    record.last_status = Some(503);
    record.last_error = Some("é".repeat(150));
    let failed = record.clone();
    on(&a, move |q| q.reschedule(&failed))
        .await
        .expect("progress written");
    let filter = Filter {
        app_id: "1".into(),
        endpoint: None,
        state: None,
    };
    let listed = on(&b, move |q| q.list(&filter, None, 10))
        .await
        .expect("a list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].attempts, 3, "another node sees the attempts");
    assert_eq!(listed[0].next_attempt_ms, 1_234);
    assert_eq!(listed[0].last_status, Some(503));
    let error = listed[0].last_error.clone().expect("the last error");
    assert!(
        error.len() <= 200 && error.starts_with('é'),
        "cut on a char: {error}"
    );
    on(&a, move |q| q.ack(&record)).await.expect("delivered");
    let left = server.cli(&["HLEN", "{herald:1}:wh:p"]).expect("redis-cli");
    assert_eq!(left.trim(), "0", "the progress goes with the batch");
}

/// A measurement, not a check (BENCHMARKS.md, "Durable webhooks"): batches per second one
/// app's dispatcher sustains through the cluster's queue (a fresh local `redis-server` per
/// round) to a receiver that answers at once. Run it in release:
///   cargo test -p herald-server --release --lib webhook_queue::tests::measure -- --ignored --nocapture
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement for BENCHMARKS.md, not a check"]
async fn measure_batches_per_second_through_the_stream() {
    let batches = 10_000;
    let mut rates = Vec::new();
    for round in 1..=3 {
        let server = RedisServer::start();
        let config = Config::from_toml(
            &format!("adapter = \"redis\"\nredis_url = \"{}\"\n", server.url()),
            &|_| None,
        )
        .expect("a valid config");
        let mut settings = crate::adapter::webhook_settings(&config);
        settings.options.data_dir = crate::webhooks::measure::scratch_dir();
        let rate = crate::webhooks::measure::run_with(settings, batches).await;
        eprintln!(
            "round {round}, Redis stream: {batches} batches of 20 events, {rate:.0} batches/s"
        );
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    eprintln!(
        "Redis stream: median {:.0} batches/s of {rates:.0?}",
        rates[1]
    );
}
