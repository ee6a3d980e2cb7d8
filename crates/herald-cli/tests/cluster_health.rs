//! A cluster's health through Redis faults, against real `herald serve` processes and a real
//! `redis-server`: a drained node's last `member_removed` reaches the other nodes at once;
//! Redis frozen leaves every node ready (the gauge says Redis is away); requests while
//! Redis is away log a few lines, not one each; and a node id another live node holds stops
//! a node's start, leaving the holder's state intact.

mod support;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::nodes::{get, member, next_event, presence_ids};
use support::{signed, Redis, Server, KEY};

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

/// The admin listener's answer to `path`.
async fn admin(server: &Server, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{}{path}", server.admin))
        .await
        .expect("admin request");
    let status = response.status().as_u16();
    (status, response.text().await.expect("admin body"))
}

/// One sample of the node's metrics.
async fn gauge(server: &Server, name: &str) -> f64 {
    let (_, body) = admin(server, "/metrics").await;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name}"))
}

async fn up(server: &Server) -> u16 {
    reqwest::get(server.http("/up"))
        .await
        .expect("GET /up")
        .status()
        .as_u16()
}

/// Polls until `done` holds, for at most `limit`.
async fn until<F: std::future::Future<Output = bool>>(
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> F,
) {
    let deadline = Instant::now() + limit;
    while !done().await {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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

#[tokio::test]
async fn every_node_stays_ready_while_redis_is_frozen_and_the_gauge_says_so() {
    let redis = Redis::start();
    let config = config(&redis, "node_timeout = 60");
    let nodes = [Server::start(&config), Server::start(&config)];
    for node in &nodes {
        assert_eq!(admin(node, "/ready").await, (200, "OK".to_owned()));
        assert_eq!(gauge(node, "herald_cluster_redis_up").await, 1.0);
    }
    redis.pause();
    let paused = Instant::now();
    let mut seen_away = [false, false];
    while seen_away != [true, true] {
        assert!(
            paused.elapsed() < Duration::from_secs(15),
            "the gauge never said Redis was away: {seen_away:?}"
        );
        for (i, node) in nodes.iter().enumerate() {
            // The gauge first: once 0 it stays 0 until Redis answers again.
            let away = gauge(node, "herald_cluster_redis_up").await == 0.0;
            let (status, body) = admin(node, "/ready").await;
            assert_eq!(status, 200, "node {i} left the load balancer: {body}");
            assert_eq!(up(node).await, 200, "node {i}'s /up");
            if away {
                assert!(body.contains("degraded"), "{body}");
                seen_away[i] = true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "both nodes saw Redis away {:?} into the pause",
        paused.elapsed()
    );
    redis.resume();
    for node in &nodes {
        until(
            "the gauge back to 1",
            Duration::from_secs(15),
            move || async move {
                assert_eq!(admin(node, "/ready").await.0, 200);
                gauge(node, "herald_cluster_redis_up").await == 1.0
            },
        )
        .await;
        assert_eq!(admin(node, "/ready").await, (200, "OK".to_owned()));
    }
}

/// Lines of the log that report a request Redis did not answer (this version's line, and
/// the ones earlier versions wrote per request).
fn request_warnings(log: &str) -> usize {
    log.lines()
        .filter(|l| {
            l.contains("Redis did not answer a request")
                || l.contains("Cluster rate counter unavailable")
                || l.contains("Cluster message quota counter unavailable")
                || l.contains("Cluster connection count unavailable")
                || l.contains("Cluster query failed")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_while_redis_is_away_log_a_few_lines_not_one_each() {
    let redis = Redis::start();
    let node = Server::start_logged(&config(&redis, "node_timeout = 60"), &[]);
    let body = json!({"name": "ev", "channel": "news", "data": "x"}).to_string();
    let (status, reply) = signed(&node, "POST", "/apps/1/events", &[], Some(&body)).await;
    assert_eq!(status, 200, "{reply}");
    redis.pause();
    let started = Instant::now();
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    for _ in 0..10 {
        let triggers = (0..100).map(|_| signed(&node, "POST", "/apps/1/events", &[], Some(&body)));
        for (status, _) in futures_util::future::join_all(triggers).await {
            *statuses.entry(status).or_default() += 1;
        }
    }
    // Channel queries need Redis: they fail, and are logged the same way.
    let queries = (0..20).map(|_| signed(&node, "GET", "/apps/1/channels", &[], None));
    for (status, _) in futures_util::future::join_all(queries).await {
        *statuses.entry(status).or_default() += 1;
    }
    let took = started.elapsed();
    redis.resume();
    let log = node.log();
    let lines = request_warnings(&log);
    eprintln!(
        "1,020 requests in {took:?} while Redis was frozen: {statuses:?}; {lines} warning lines"
    );
    assert_eq!(
        statuses.get(&200),
        Some(&1000),
        "triggers served: {statuses:?}"
    );
    assert!(lines <= 3, "{lines} warning lines for 1,020 requests");
}

#[tokio::test]
async fn a_node_id_another_live_node_holds_stops_the_start_and_leaves_its_state() {
    let redis = Redis::start();
    let config = config(&redis, "node_timeout = 2\nnode_id = 77");
    let a = Server::start(&config);
    let mut amy = a.connect(KEY).await;
    let joined = amy
        .subscribe_private("presence-room", Some(&member("amy")))
        .await;
    assert_eq!(joined["event"], "pusher_internal:subscription_succeeded");
    assert!(amy.socket_id.starts_with("77."), "{}", amy.socket_id);

    // A second node with the same id: it watches the id's heartbeat move, and stops.
    let path =
        std::env::temp_dir().join(format!("herald-test-{}-same-id.toml", std::process::id()));
    std::fs::write(&path, &config).expect("write config");
    let started = Instant::now();
    let second = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["serve", "--port", "0", "--config"])
            .env("HERALD_DATA_DIR", support::scratch_data_dir())
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("run herald")
    });
    let output = tokio::time::timeout(Duration::from_secs(20), second)
        .await
        .expect("the second node stops within 20 s")
        .expect("join");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "the second node started: {stderr}"
    );
    assert!(stderr.contains("node_id 77"), "{stderr}");
    eprintln!("the second node stopped after {:?}", started.elapsed());

    // The first node's state is intact: its member is listed, and its heartbeat goes on
    // (a node started now sees the member through Redis, past the node timeout).
    let c = Server::start(&config.replace("node_id = 77", ""));
    // Past the node timeout, so a node that stopped heartbeating would have been reaped.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for node in [&a, &c] {
        let users = get(node, "/apps/1/channels/presence-room/users", &[]).await;
        assert_eq!(users, json!({"users": [{"id": "amy"}]}));
    }
    amy.assert_alive().await;
}
