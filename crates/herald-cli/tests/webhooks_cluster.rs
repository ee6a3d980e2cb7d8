//! The cluster's webhook queue against real `herald serve` processes, a real
//! `redis-server` and a real receiver (issue 25): batches a node wrote to Redis while the
//! receiver was down are sent by another node once that node is killed (SIGKILL), within
//! the lease, with the ids they were written with, signed, and in order per channel; a
//! `channel_vacated` one node writes waits for the `channel_occupied` another node is
//! retrying.
mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::time::{Duration, Instant};

use serde_json::json;
use support::receiver::{
    assert_occupied_before_vacated, assert_signed_and_identified, first_names, Got, Receiver,
};
use support::wait::eventually;
use support::{Redis, Server, Ws, KEY, SECRET};

/// The lease the nodes run with (seconds).
const LEASE: u64 = 2;

/// The admin token the nodes run with, for `herald webhooks`.
const TOKEN: &str = "cluster-webhooks-admin-token-0123";

fn config(redis: &Redis, port: u16) -> String {
    format!(
        "admin_token = \"{TOKEN}\"\nadapter = \"redis\"\nredis_url = \"{}\"\nnode_timeout = 2\n\
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

/// `herald webhooks ARGS --json` against `server`'s admin listener, which must succeed.
fn herald_json(server: &Server, args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("webhooks")
        .args(args)
        .arg("--json")
        .env("HERALD_ADMIN_URL", format!("http://{}", server.admin))
        .env("HERALD_ADMIN_TOKEN", TOKEN)
        .output()
        .expect("run herald webhooks");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "herald webhooks {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
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

#[tokio::test]
async fn a_claimed_batch_resumes_its_backoff_where_the_dead_node_left_it() {
    let redis = Redis::start();
    let port = support::db::free_port();
    let config = config(&redis, port);
    // The receiver fails every attempt: the batch stays in retry, its backoff doubling.
    let receiver = Receiver::up(port, vec!["500 Internal Server Error"]).await;
    let mut a = Server::start_logged(&config, &[]);
    let b = Server::start_logged(&config, &[]);
    let mut ws = a.connect(KEY).await;
    ws.subscribe("room").await;
    eventually(
        "A's batch is in Redis",
        Duration::from_secs(5),
        async || stream_ids(&redis).len() == 1,
    )
    .await;
    let id = stream_ids(&redis).pop_first().expect("an id");
    // Three attempts by A (backoffs of up to 1 and 2 s between them); the next one is due
    // 2 to 4 s after the third, which the progress records.
    let attempts_of = |server: &Server| {
        let shown = herald_json(server, &["show", "--app", "1", &id]);
        (
            shown["attempts"].as_u64().expect("attempts"),
            shown["next_attempt_ms"].as_u64().expect("next_attempt_ms"),
        )
    };
    eventually(
        "A's third attempt recorded",
        Duration::from_secs(15),
        async || attempts_of(&b).0 >= 3,
    )
    .await;
    a.child.kill().expect("SIGKILL");
    a.child.wait().expect("reap");
    drop(ws);
    let (left, due_ms) = attempts_of(&b);
    let attempts_before = receiver.got().len();
    assert_eq!(
        attempts_before as u64, left,
        "one request per recorded attempt"
    );

    // B claims the batch after the lease: its first attempt is A's next one, counted on
    // from A's, so its backoff goes on doubling.
    eventually(
        "B attempts the batch",
        Duration::from_secs(LEASE + 15),
        async || receiver.got().len() > attempts_before,
    )
    .await;
    let seen_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    assert!(
        seen_ms >= due_ms,
        "B's attempt came before the recorded next attempt ({seen_ms} < {due_ms})"
    );
    eventually("B's attempt recorded", Duration::from_secs(5), async || {
        attempts_of(&b).0 > left
    })
    .await;
    let (now, next_ms) = attempts_of(&b);
    assert_eq!(now, left + 1, "B counts on from A's {left} attempts");
    // The backoff after attempt n is at least half of 2^(n-1) seconds (the jitter).
    let backoff_floor_ms = 500 * (1u64 << (now - 1));
    assert!(
        next_ms >= due_ms + backoff_floor_ms,
        "B's next attempt ({next_ms}) is a doubled backoff after A's schedule ({due_ms})"
    );
    let got = receiver.got();
    assert_signed_and_identified(&got);
    assert!(got.iter().all(|g| g.id == id), "one batch, one id: {got:?}");
    assert!(b.log().contains("claimed"), "B logs the claim: {}", b.log());
}

/// A node of app 1 whose endpoint takes client events (numbered by the tests).
fn client_event_config(redis: &Redis, port: u16) -> String {
    format!(
        "adapter = \"redis\"\nredis_url = \"{}\"\nnode_timeout = 2\n\
         webhook_lease = {LEASE}\n\
         [[apps]]\nid = \"1\"\nkey = \"{KEY}\"\nsecret = \"{SECRET}\"\n\
         client_events = true\nclient_events_per_second = 1000\n\
         [[apps.webhooks]]\nurl = \"http://127.0.0.1:{port}/hook\"\n\
         event_types = [\"client_event\"]\n",
        redis.url()
    )
}

const PRIVATE: [&str; 2] = ["private-0", "private-1"];

/// Sends the client events numbered `numbers` on each channel, `pause` apart.
async fn send_numbered(ws: &mut Ws, numbers: Range<u64>) {
    for n in numbers {
        for channel in PRIVATE {
            ws.send(json!({"event":"client-n","channel":channel,"data":n.to_string()}))
                .await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Per channel, the numbers of the client events received, in the order received; a
/// batch repeated under an id already received is counted once.
fn numbers(got: &[Got]) -> BTreeMap<String, Vec<u64>> {
    let mut seen = BTreeSet::new();
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for g in got.iter().filter(|g| seen.insert(g.id.clone())) {
        for event in g.events() {
            // The data as the client sent it: a JSON string of the number.
            let n = event["data"]
                .as_str()
                .and_then(|d| d.trim_matches('"').parse().ok());
            let channel = event["channel"].as_str().unwrap_or_default().to_owned();
            out.entry(channel)
                .or_default()
                .push(n.unwrap_or_else(|| panic!("a numbered client event: {event}")));
        }
    }
    out
}

/// Every number of `0..count` arrived once on each channel, in order, and each batch once.
fn assert_every_number_in_order_once(got: &[Got], count: u64) {
    assert_signed_and_identified(got);
    let mut requests: HashMap<&str, usize> = HashMap::new();
    for g in got {
        *requests.entry(g.id.as_str()).or_default() += 1;
    }
    assert!(
        requests.values().all(|&n| n == 1),
        "each batch once: {requests:?}"
    );
    let expected: Vec<u64> = (0..count).collect();
    for (channel, numbers) in numbers(got) {
        assert_eq!(numbers, expected, "{channel}: every event once, in order");
    }
}

fn all_arrived(receiver: &Receiver, count: u64) -> bool {
    let numbers = numbers(&receiver.got());
    PRIVATE
        .iter()
        .all(|c| numbers.get(*c).is_some_and(|n| n.len() as u64 >= count))
}

#[tokio::test]
async fn batches_written_while_redis_is_away_are_kept_and_sent_in_order_once_it_answers() {
    let redis = Redis::start();
    let port = support::db::free_port();
    let receiver = Receiver::up(port, vec!["200 OK"]).await;
    let a = Server::start_logged(&client_event_config(&redis, port), &[]);
    let mut ws = a.connect(KEY).await;
    for channel in PRIVATE {
        ws.subscribe_private(channel, None).await;
    }
    send_numbered(&mut ws, 0..10).await;
    // Frozen past the link's 2 s response timeout while events keep coming: a write that
    // timed out is applied when Redis runs again, and must not make a second copy.
    redis.pause();
    send_numbered(&mut ws, 10..40).await;
    eventually(
        "the node keeps batches aside",
        Duration::from_secs(10),
        async || a.log().contains("kept in the node's own queue"),
    )
    .await;
    redis.resume();
    send_numbered(&mut ws, 40..50).await;
    eventually("every event arrives", Duration::from_secs(30), async || {
        all_arrived(&receiver, 50)
    })
    .await;
    // Late copies would come after the rest: give them the time to.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_every_number_in_order_once(&receiver.got(), 50);
    assert!(
        a.log().contains("moved to the cluster's queue"),
        "{}",
        a.log()
    );
    eventually("the stream is empty", Duration::from_secs(10), async || {
        stream_ids(&redis).is_empty()
    })
    .await;
}

#[tokio::test]
async fn batches_kept_aside_on_disk_outlive_a_sigkill_of_the_node() {
    let redis = Redis::start();
    let port = support::db::free_port();
    let receiver = Receiver::up(port, vec!["200 OK"]).await;
    let config = client_event_config(&redis, port);
    let dir = support::scratch_data_dir();
    let env = ("HERALD_DATA_DIR", dir.to_str().expect("a UTF-8 path"));
    let mut a = Server::start_logged(&config, &[env]);
    let mut ws = a.connect(KEY).await;
    for channel in PRIVATE {
        ws.subscribe_private(channel, None).await;
    }
    // The subscriptions are the cluster's before Redis goes away.
    send_numbered(&mut ws, 0..5).await;
    eventually(
        "the first events arrive",
        Duration::from_secs(10),
        async || all_arrived(&receiver, 5),
    )
    .await;
    redis.pause();
    send_numbered(&mut ws, 5..25).await;
    eventually(
        "the node keeps batches aside",
        Duration::from_secs(10),
        async || a.log().contains("kept in the node's own queue"),
    )
    .await;
    // Events not yet in a batch are in memory only, as on one node: wait until the
    // dispatcher has written the last ones aside (its batch window, and the tries of
    // Redis that time out, 2 s each and spaced out), with slack for a loaded machine.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let before = receiver.got().len();
    a.child.kill().expect("SIGKILL");
    a.child.wait().expect("reap");
    drop(ws);

    redis.resume();
    let a = Server::start_logged(&config, &[env]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !all_arrived(&receiver, 25) {
        assert!(
            Instant::now() < deadline,
            "every event arrives after the restart: got {:?}\n{}",
            numbers(&receiver.got()),
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = receiver.got();
    assert_signed_and_identified(&got);
    // A crash may repeat a batch (at least once), under its id; never lose or reorder one.
    assert!(got.len() > before, "sent after the restart");
    let expected: Vec<u64> = (0..25).collect();
    for (channel, numbers) in numbers(&got) {
        assert_eq!(numbers, expected, "{channel}: every event, in order");
    }
    assert!(
        a.log().contains("moved to the cluster's queue"),
        "{}",
        a.log()
    );
    drop(a);
    let _ = std::fs::remove_dir_all(&dir);
}
