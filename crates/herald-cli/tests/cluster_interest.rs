//! Interest routing, against real `herald serve` processes and a real `redis-server`: a node
//! listens on the bus only to the channels it has subscribers of (seen in Redis's
//! `PUBSUB NUMSUB` and in the node's `herald_cluster_bus_received_total`), its first
//! subscriber of a channel misses no event published after its `subscription_succeeded`
//! (even when its subscriptions reach Redis late), and its last subscriber leaving releases
//! the bus channel.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use support::{signed, Redis, Server, KEY};

fn node(redis: &Redis) -> Server {
    node_on(&redis.url())
}

fn node_on(url: &str) -> Server {
    Server::start(&format!(
        r#"
adapter = "redis"
redis_url = "{url}"
node_timeout = 2
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
"#,
    ))
}

/// A TCP relay to Redis that holds back, by `delay`, everything a connection sends from
/// the moment it sends a `SUBSCRIBE`: a node's bus subscriptions then reach Redis late
/// while its commands (counts, publishes) do not. Real Redis behind a slow link, on
/// threads of its own, since a node starts (and talks to Redis) while the test blocks.
struct SlowSubscribes {
    port: u16,
}

impl SlowSubscribes {
    fn start(redis_port: u16, delay: Duration) -> SlowSubscribes {
        use std::io::{Read, Write};
        use std::net::{TcpListener, TcpStream};
        use std::time::Instant;

        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let port = listener.local_addr().expect("relay address").port();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { return };
                let Ok(mut redis) = TcpStream::connect(("127.0.0.1", redis_port)) else {
                    return;
                };
                let (Ok(mut client_out), Ok(mut redis_in)) =
                    (client.try_clone(), redis.try_clone())
                else {
                    return;
                };
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut redis_in, &mut client_out);
                });
                let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
                std::thread::spawn(move || {
                    for (at, bytes) in rx {
                        std::thread::sleep(at.saturating_duration_since(Instant::now()));
                        if redis.write_all(&bytes).is_err() {
                            return;
                        }
                    }
                });
                std::thread::spawn(move || {
                    let mut slow = false;
                    let mut buf = vec![0u8; 65536];
                    loop {
                        let n = match client.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let chunk = buf[..n].to_vec();
                        slow = slow || chunk.windows(11).any(|w| w == b"\r\nSUBSCRIBE");
                        let at = Instant::now() + if slow { delay } else { Duration::ZERO };
                        if tx.send((at, chunk)).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        SlowSubscribes { port }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

/// `redis-cli` against the test's Redis; its output, trimmed.
fn redis_cli(redis: &Redis, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port().to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    assert!(out.status.success(), "redis-cli {args:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// How many connections listen to the bus channel of app 1's `channel`.
fn listeners(redis: &Redis, channel: &str) -> u64 {
    let bus = format!("herald:e:1:{channel}");
    let out = redis_cli(redis, &["PUBSUB", "NUMSUB", &bus]);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some(bus.as_str()), "{out}");
    lines.next().and_then(|n| n.parse().ok()).expect("a count")
}

/// A counter or gauge of the node's `/metrics`, 0 when absent.
async fn metric(server: &Server, name: &str) -> u64 {
    let body = reqwest::get(format!("http://{}/metrics", server.admin))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

async fn trigger(server: &Server, channel: &str, data: &str) {
    let body = json!({"name": "ev", "channel": channel, "data": data}).to_string();
    let (status, reply) = signed(server, "POST", "/apps/1/events", &[], Some(&body)).await;
    assert_eq!(status, 200, "{reply}");
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..100 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never: {what}");
}

#[tokio::test]
async fn a_node_hears_only_the_channels_it_has_subscribers_of_and_releases_them() {
    let redis = Redis::start();
    let (a, b, c) = (node(&redis), node(&redis), node(&redis));
    let mut on_b = b.connect(KEY).await;
    on_b.subscribe("news").await;
    // Confirmed by Redis before the subscription was: no waiting here.
    assert_eq!(listeners(&redis, "news"), 1, "only B listens");
    assert_eq!(listeners(&redis, "quiet"), 0);
    let all = redis_cli(&redis, &["PUBSUB", "CHANNELS", "herald:e:*"]);
    assert_eq!(all, "herald:e:1:news", "no node listens to anything else");

    let before: Vec<u64> = futures_util::future::join_all(
        [&a, &b, &c].map(|s| metric(s, "herald_cluster_bus_received_total")),
    )
    .await;
    for i in 0..20 {
        trigger(&a, "news", &format!("n{i}")).await;
        trigger(&a, "quiet", &format!("q{i}")).await;
    }
    for i in 0..20 {
        assert_eq!(on_b.expect("ev").await["data"], format!("n{i}"));
    }
    let after: Vec<u64> = futures_util::future::join_all(
        [&a, &b, &c].map(|s| metric(s, "herald_cluster_bus_received_total")),
    )
    .await;
    let got: Vec<u64> = after.iter().zip(&before).map(|(x, y)| x - y).collect();
    assert_eq!(got, [0, 20, 0], "A, B, C: B hears news and nothing else");
    assert_eq!(metric(&b, "herald_cluster_bus_channels").await, 1);
    assert_eq!(metric(&c, "herald_cluster_bus_channels").await, 0);

    // The last subscriber leaves: the channel lingers a moment, then is released.
    on_b.send(json!({"event": "pusher:unsubscribe", "data": {"channel": "news"}}))
        .await;
    until("B releases news", || listeners(&redis, "news") == 0).await;
    assert_eq!(metric(&b, "herald_cluster_bus_channels").await, 0);

    // A second subscriber on another node, and one that comes back: each node listens
    // once, however many subscribers it has.
    let mut on_c1 = c.connect(KEY).await;
    let mut on_c2 = c.connect(KEY).await;
    on_c1.subscribe("news").await;
    on_c2.subscribe("news").await;
    on_b.subscribe("news").await;
    assert_eq!(listeners(&redis, "news"), 2, "B and C, once each");
    trigger(&a, "news", "again").await;
    for ws in [&mut on_b, &mut on_c1, &mut on_c2] {
        assert_eq!(ws.expect("ev").await["data"], "again");
    }
}

#[tokio::test]
async fn a_channel_that_empties_and_fills_again_keeps_hearing_its_events() {
    let redis = Redis::start();
    let (a, b) = (node(&redis), node(&redis));
    let mut on_b = b.connect(KEY).await;
    for round in 0..5 {
        on_b.subscribe("flap").await;
        trigger(&a, "flap", &format!("r{round}")).await;
        assert_eq!(on_b.expect("ev").await["data"], format!("r{round}"));
        on_b.send(json!({"event": "pusher:unsubscribe", "data": {"channel": "flap"}}))
            .await;
    }
    until("B releases flap", || listeners(&redis, "flap") == 0).await;
}

/// One round: a publisher on A triggers numbered events on `channel` in a tight loop while
/// a first subscriber on B subscribes. Every event whose trigger started after B's
/// `subscription_succeeded` arrived must reach B, in order.
async fn first_subscriber_round(a: &Arc<Server>, b: &Server, channel: &str) {
    let started = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let (a, started, stop) = (a.clone(), started.clone(), stop.clone());
        let channel = channel.to_owned();
        tokio::spawn(async move {
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                started.store(seq, Ordering::SeqCst);
                trigger(&a, &channel, &seq.to_string()).await;
            }
            seq
        })
    };
    // Let the publisher run before the subscription.
    while started.load(Ordering::SeqCst) < 5 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut ws = b.connect(KEY).await;
    ws.send(json!({"event": "pusher:subscribe", "data": {"channel": channel}}))
        .await;
    let mut received: Vec<u64> = Vec::new();
    let in_flight = loop {
        let frame: Value = ws.next().await;
        match frame["event"].as_str() {
            Some("pusher_internal:subscription_succeeded") => {
                break started.load(Ordering::SeqCst);
            }
            Some("ev") => panic!("an event before subscription_succeeded: {frame}"),
            _ => {}
        }
    };
    // Twenty more events after the answer, however slow the machine.
    while started.load(Ordering::SeqCst) < in_flight + 20 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let last = publisher.await.expect("publisher");
    while received.last().is_none_or(|&n| n < last) {
        let frame = support::next_json(&mut ws.ws).await.unwrap_or_else(|| {
            panic!("{channel}: got {received:?} after {in_flight}, published up to {last}")
        });
        if frame["event"] == "ev" {
            received.push(
                frame["data"]
                    .as_str()
                    .and_then(|d| d.parse().ok())
                    .expect("n"),
            );
        }
    }
    let required: Vec<u64> = (in_flight + 1..=last).collect();
    let tail: Vec<u64> = received
        .iter()
        .copied()
        .filter(|&n| n > in_flight)
        .collect();
    assert_eq!(
        tail, required,
        "{channel}: every event after the answer, in order"
    );
    assert!(
        received.windows(2).all(|w| w[1] == w[0] + 1),
        "{channel}: no gap, no reordering: {received:?}"
    );
}

#[tokio::test]
async fn the_first_subscriber_on_a_node_gets_every_event_after_its_answer() {
    let redis = Redis::start();
    let (a, b, _c) = (Arc::new(node(&redis)), node(&redis), node(&redis));
    for round in 0..8 {
        first_subscriber_round(&a, &b, &format!("seq-{round}")).await;
    }
}

/// The same with B's bus subscriptions reaching Redis 300 ms late: an answer sent before
/// Redis confirmed the subscription would miss the events of those 300 ms.
#[tokio::test]
async fn the_first_subscriber_gets_every_event_when_its_subscription_reaches_redis_late() {
    let redis = Redis::start();
    let relay = SlowSubscribes::start(redis.port(), Duration::from_millis(300));
    let a = Arc::new(node(&redis));
    let b = node_on(&relay.url());
    for round in 0..3 {
        first_subscriber_round(&a, &b, &format!("late-{round}")).await;
    }
}
