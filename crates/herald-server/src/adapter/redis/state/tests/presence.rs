//! Presence joins while Redis is away go through the hub as a single node's do
//! ([`crate::hub::Roster::Here`]): the same frames in the same order on every connection,
//! the same limit, and `member_added` queued to the others before any event the new member
//! gets.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde_json::Value;

use super::*;
use crate::adapter::local::Local;
use crate::adapter::{Presence, Subscription};
use crate::outbox::FRAME_OVERHEAD;
use crate::wire::text_frame;

const CHANNEL: &str = "presence-room";

/// The frames queued on `outbox` so far, as their JSON text, taken as a connection's task
/// takes and writes them.
fn texts(outbox: &Outbox) -> Vec<String> {
    let mut frames = VecDeque::new();
    outbox.take(&mut frames);
    outbox.written(frames.iter().map(|f| f.len() + FRAME_OVERHEAD).sum());
    frames
        .iter()
        .map(|f| {
            let json = f.iter().position(|b| *b == b'{').unwrap_or(0);
            String::from_utf8_lossy(&f[json..]).into_owned()
        })
        .collect()
}

fn parse(frame: &str) -> Value {
    serde_json::from_str(frame).expect("a JSON frame")
}

/// The number an `ev` event carries.
fn event_number(frame: &str) -> Option<u64> {
    let frame = parse(frame);
    (frame["event"] == "ev").then(|| frame["data"].as_str()?.parse().ok())?
}

fn event(n: u64) -> bytes::Bytes {
    text_frame(&format!(
        r#"{{"event":"ev","channel":"{CHANNEL}","data":"{n}"}}"#
    ))
}

/// Where the joins go: a single node's adapter, or a cluster node's state task while its
/// Redis is away.
enum Mode {
    Single(Local, Arc<App>),
    Away(Box<Node>),
}

impl Mode {
    fn single(max_members: usize) -> Mode {
        let mut config = Config::default().apps.remove(0);
        config.limits.max_presence_members = max_members;
        let app = App::new(config, &crate::webhooks::WebhookSettings::default());
        Mode::Single(Local::new(1), Arc::new(app))
    }

    async fn away(redis: &RedisServer, max_members: usize) -> Mode {
        let mut node = Node::start(redis, 1, &["1"], max_members).await;
        let error = redis::RedisError::from((redis::ErrorKind::IoError, "Redis is away"));
        node.task.failed(&error);
        assert!(!node.task.healthy());
        Mode::Away(Box::new(node))
    }

    fn app(&self) -> Arc<App> {
        match self {
            Mode::Single(_, app) => app.clone(),
            Mode::Away(node) => node.app("1"),
        }
    }

    async fn join(&mut self, conn: ConnId, outbox: &Arc<Outbox>, user: &str) {
        match self {
            Mode::Single(local, app) => {
                let member =
                    herald_protocol::presence::parse_member(&format!(r#"{{"user_id":"{user}"}}"#))
                        .expect("a member");
                let sub = Subscription {
                    channel: CHANNEL,
                    socket: SocketId { node: 1, conn },
                    outbox,
                    member: Some(member),
                    cache: false,
                    recover: None,
                };
                local.subscribe(app, sub);
            }
            Mode::Away(node) => node.join("1", CHANNEL, (conn, outbox), user).await,
        }
    }

    async fn leave(&mut self, conn: ConnId, outbox: &Arc<Outbox>) {
        match self {
            Mode::Single(local, app) => local.unsubscribe(app, CHANNEL, conn, outbox),
            Mode::Away(node) => node.leave("1", CHANNEL, conn).await,
        }
    }
}

/// Joins, an event, a second connection of a member, a refusal (two members at most), a
/// repeated subscribe and a leave; the frames each of the four connections got.
async fn story(mode: &mut Mode) -> Vec<Vec<String>> {
    let outboxes: Vec<Arc<Outbox>> = (0..4).map(|_| outbox()).collect();
    mode.join(1, &outboxes[0], "ann").await;
    mode.join(2, &outboxes[1], "bob").await;
    mode.app().hub.publish(CHANNEL, &event(1), None);
    mode.join(3, &outboxes[2], "ann").await;
    mode.join(4, &outboxes[3], "cat").await;
    mode.join(1, &outboxes[0], "ann").await;
    mode.leave(2, &outboxes[1]).await;
    outboxes.iter().map(|o| texts(o)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_while_redis_is_away_gives_every_connection_a_single_nodes_frames() {
    let redis = redis().await;
    let single = story(&mut Mode::single(2)).await;
    let away = story(&mut Mode::away(&redis, 2).await).await;
    assert_eq!(away, single);
    let events = |frames: &[String]| -> Vec<String> {
        frames
            .iter()
            .map(|f| {
                let f = parse(f);
                let data: Value = serde_json::from_str(f["data"].as_str().unwrap_or("null"))
                    .unwrap_or(Value::Null);
                let who = data["user_id"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| data["presence"]["ids"].to_string());
                format!("{} {who}", f["event"].as_str().unwrap_or(""))
            })
            .collect()
    };
    assert_eq!(
        events(&single[0]),
        [
            r#"pusher_internal:subscription_succeeded ["ann"]"#,
            "pusher_internal:member_added bob",
            "ev null",
            r#"pusher_internal:subscription_succeeded ["ann","bob"]"#,
            "pusher_internal:member_removed bob",
        ]
    );
    assert_eq!(
        events(&single[3]),
        ["pusher:subscription_error null"],
        "the third user is over the limit"
    );
}

/// Joins many users, one after another, while a thread publishes numbered events to the
/// channel: the watcher, there from the start, must get each user's `member_added` before
/// the first event that user got (the member list changes at one point for everyone).
async fn member_added_comes_first(mode: &mut Mode) {
    const JOINS: u64 = 200;
    /// Events published and not read yet by the watcher, at most: its outbox stays far
    /// from its bound however slow the joins are.
    const AHEAD: u64 = 100_000;
    let watcher = outbox();
    mode.join(0, &watcher, "watcher").await;
    let app = mode.app();
    let stop = Arc::new(AtomicBool::new(false));
    let read = Arc::new(AtomicU64::new(0));
    let publisher = {
        let (app, stop, read) = (app.clone(), stop.clone(), read.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                if n < read.load(Ordering::Relaxed) + AHEAD {
                    n += 1;
                    app.hub.publish(CHANNEL, &event(n), None);
                } else {
                    std::thread::yield_now();
                }
            }
        })
    };
    let mut seen = Vec::new();
    let read_watcher = |seen: &mut Vec<String>| {
        let frames = texts(&watcher);
        if let Some(n) = frames.iter().rev().find_map(|f| event_number(f)) {
            read.store(n, Ordering::Relaxed);
        }
        seen.extend(frames);
    };
    let mut firsts = Vec::new();
    for i in 1..=JOINS {
        let joiner = outbox();
        mode.join(i, &joiner, &format!("u{i}")).await;
        // Stay until an event came, so every join is checked.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let first = loop {
            read_watcher(&mut seen);
            if let Some(n) = texts(&joiner).iter().find_map(|f| event_number(f)) {
                break n;
            }
            assert!(std::time::Instant::now() < deadline, "u{i} got no event");
            tokio::task::yield_now().await;
        };
        mode.leave(i, &joiner).await;
        firsts.push((i, first));
    }
    stop.store(true, Ordering::Relaxed);
    publisher.join().expect("the publisher");
    read_watcher(&mut seen);
    let mut events = HashMap::new();
    let mut added = HashMap::new();
    for (at, frame) in seen.iter().enumerate() {
        if let Some(n) = event_number(frame) {
            events.insert(n, at);
        } else if frame.contains("member_added") {
            let data: Value =
                serde_json::from_str(parse(frame)["data"].as_str().expect("data")).expect("json");
            added.insert(data["user_id"].as_str().expect("a user").to_owned(), at);
        }
    }
    for (i, first) in firsts {
        let (Some(&added), Some(&event)) = (added.get(&format!("u{i}")), events.get(&first)) else {
            panic!("the watcher missed member_added u{i} or event {first}");
        };
        assert!(
            added < event,
            "the watcher got event {first} (u{i}'s first) at {event}, member_added u{i} at {added}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_added_reaches_the_others_before_the_new_members_first_event() {
    let redis = redis().await;
    member_added_comes_first(&mut Mode::single(1000)).await;
    member_added_comes_first(&mut Mode::away(&redis, 1000).await).await;
}
