//! What a run of subscriptions sends to Redis: each script's source once, not once per
//! call (EVAL sent about 680 bytes of script with each of 256 counts).

use super::*;

/// Bytes Redis has read from its clients so far.
async fn read_by_redis(look: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(look)
        .await
        .expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("total_net_input_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("total_net_input_bytes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_subscriptions_sends_each_script_once() {
    let redis = redis().await;
    let mut look = look(&redis).await;
    let mut node = Node::start(&redis, 1, &["1"], 100).await;
    node.subscribe("1", "chan", 0).await;
    let app = node.app("1");
    for round in 1..=3 {
        let batch: Vec<Op> = (0..256)
            .map(|i| Op::Subscribe {
                app: app.clone(),
                channel: "chan".into(),
                conn: round * 1000 + i,
                outbox: outbox(),
                cache: false,
                recover: None,
            })
            .collect();
        let before = read_by_redis(&mut look).await;
        node.task.apply_batch(batch).await;
        let sent = read_by_redis(&mut look).await - before;
        // About 180 bytes a count, and the script once (EVAL sent 172,000).
        assert!(sent < 64_000, "round {round}: {sent} bytes for 256 counts");
        let counted = hash(&mut look, "{herald:1}:s:chan").await;
        let n = 1 + 256 * round as i64;
        assert_eq!(counted, HashMap::from([("1".to_owned(), n)]));
    }
}
