//! The link against real servers started by `redis-fixture`: one server, a three-master
//! cluster with a replica per master, and a master with a replica under three sentinels.
//! Each test kills a master (or restarts the server) and checks that commands and
//! subscriptions come back by themselves, within a bound, with nothing written lost.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use redis::{AsyncCommands, RedisResult};
use redis_fixture::{RedisCluster, RedisServer, Sentinel};

use super::*;

/// How long a failover may take to reach the link: the fixtures' sentinels and cluster
/// nodes give up on a master after 1 s, and promote its replica a few seconds later.
const RECOVERY: Duration = Duration::from_secs(30);
const MESSAGE_WAIT: Duration = Duration::from_secs(5);

/// A script touching two keys, as Herald's scripts do: it runs on a cluster only if both
/// share a slot.
const TWO_KEYS: &str = r"
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('SADD', KEYS[2], ARGV[1])
return {tonumber(redis.call('HGET', KEYS[1], ARGV[1])), redis.call('SCARD', KEYS[2])}
";

/// Runs a fixture call (processes, polling) off the runtime's task queue, so the link's
/// tasks keep running meanwhile.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn options() -> Options {
    Options::default()
}

/// A command connection and a subscriber on `target`, and whether it is a cluster.
async fn connect(target: &Target, cluster: bool) -> (Commands, Subscriber, Inbox) {
    let commands = Commands::connect(target, &options())
        .await
        .expect("connect");
    let (subscriber, deliveries) = Subscriber::connect(target, &options())
        .await
        .expect("start a subscriber");
    assert_eq!(commands.is_cluster(), cluster);
    assert_eq!(subscriber.is_sharded(), cluster);
    (commands, subscriber, Inbox::new(deliveries))
}

/// Runs [`TWO_KEYS`] on `tag`'s keys and checks its answer.
async fn run_script(commands: &mut Commands, tag: &HashTag, member: &str, expected: [i64; 2]) {
    let answer: Vec<i64> = redis::Script::new(TWO_KEYS)
        .key(tag.key(&["m", "presence-room"]))
        .key(tag.key(&["chans"]))
        .arg(member)
        .invoke_async(commands)
        .await
        .expect("the script runs");
    assert_eq!(answer, expected.to_vec(), "script on {tag:?}");
}

/// Plain commands and a pipeline on `tag`'s keys.
async fn run_commands(commands: &mut Commands, tag: &HashTag) {
    let key = tag.key(&["plain"]);
    let () = commands.set(&key, "v1").await.expect("SET");
    let value: String = commands.get(&key).await.expect("GET");
    assert_eq!(value, "v1");
    let (a, b): (i64, i64) = redis::pipe()
        .incr(tag.key(&["n"]), 1)
        .incr(tag.key(&["n"]), 2)
        .query_async(commands)
        .await
        .expect("a pipeline");
    assert_eq!((a, b), (1, 3));
}

/// A subscriber's deliveries, with the gaps seen on the way and the messages not asked
/// for yet (shards deliver in their own order).
struct Inbox {
    deliveries: Deliveries,
    gaps: Vec<Gap>,
    unread: Vec<Message>,
}

impl Inbox {
    fn new(deliveries: Deliveries) -> Inbox {
        Inbox {
            deliveries,
            gaps: Vec::new(),
            unread: Vec::new(),
        }
    }

    /// Waits up to `limit` for `payload` on `channel`.
    async fn received(&mut self, channel: &str, payload: &[u8], limit: Duration) -> bool {
        let wanted = |m: &Message| m.channel == channel && m.payload.as_ref() == payload;
        if let Some(i) = self.unread.iter().position(wanted) {
            self.unread.remove(i);
            return true;
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.deliveries.recv()).await {
                Err(_) => return false,
                Ok(None) => panic!("the subscriber stopped"),
                Ok(Some(Delivery::Gap(gap))) => self.gaps.push(gap),
                Ok(Some(Delivery::Message(m))) if wanted(&m) => return true,
                Ok(Some(Delivery::Message(m))) => self.unread.push(m),
            }
        }
    }

    async fn expect(&mut self, channel: &str, payload: &[u8]) {
        assert!(
            self.received(channel, payload, MESSAGE_WAIT).await,
            "no {payload:?} on {channel}"
        );
    }

    /// Asserts that no message is unread or arrives for `wait`.
    async fn expect_silence(&mut self, wait: Duration) {
        assert!(self.unread.is_empty(), "unexpected: {:?}", self.unread);
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(delivery) = tokio::time::timeout_at(deadline, self.deliveries.recv()).await {
            match delivery {
                Some(Delivery::Gap(gap)) => self.gaps.push(gap),
                other => panic!("expected silence, got {other:?}"),
            }
        }
    }

    fn saw_gap_for(&self, channel: &str) -> bool {
        self.gaps.iter().any(|gap| match gap {
            Gap::All => true,
            Gap::Channels(channels) => channels.iter().any(|c| c == channel),
        })
    }
}

/// Publishes fresh messages on `channel` until one arrives; returns how long it took.
async fn publish_until_received(
    commands: &mut Commands,
    inbox: &mut Inbox,
    channel: &str,
) -> Duration {
    let start = Instant::now();
    for n in 0u32.. {
        assert!(
            start.elapsed() < RECOVERY,
            "{channel} delivered nothing for {RECOVERY:?}"
        );
        let payload = format!("probe-{n}");
        // Publishing fails while the channel's master is away; the probe is sent again.
        let _ = commands.publish(channel, payload.as_bytes()).await;
        if inbox
            .received(channel, payload.as_bytes(), Duration::from_millis(200))
            .await
        {
            break;
        }
    }
    start.elapsed()
}

/// Retries `EXISTS key` until it answers; returns how long it took.
async fn until_answered(commands: &mut Commands, key: &str) -> Duration {
    let start = Instant::now();
    loop {
        match commands.exists::<_, bool>(key).await {
            Ok(_) => return start.elapsed(),
            Err(error) => {
                assert!(
                    start.elapsed() < RECOVERY,
                    "commands still fail after {RECOVERY:?}: {error}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Presence-like state: `users` written as counts into `tag`'s member hash, and waited on
/// until a replica has it (replication is asynchronous: an unreplicated write may die with
/// its master).
async fn write_members(commands: &mut Commands, tag: &HashTag, users: &[(&str, i64)]) {
    let members = tag.key(&["m", "presence-room"]);
    for (user, n) in users {
        let () = commands.hset(&members, *user, *n).await.expect("HSET");
    }
    // On a cluster WAIT goes to every master; the one that has the write answers last.
    // Below the response timeout, and retried, so a slow replica on a loaded machine does
    // not fail the test for the client's deadline.
    for _ in 0..5 {
        let replicas: RedisResult<i64> = redis::cmd("WAIT")
            .arg(1)
            .arg(1000)
            .query_async(commands)
            .await;
        if replicas.is_ok_and(|n| n >= 1) {
            return;
        }
    }
    panic!("no replica acknowledged the state");
}

/// After a master was killed: commands answer again, the state written before is all there
/// and nothing else, writes work, and `channel`'s subscription is back with a gap reported.
/// Returns how long commands and messages took to come back.
async fn check_recovered(
    commands: &mut Commands,
    inbox: &mut Inbox,
    tag: &HashTag,
    users: &[(&str, i64)],
    channel: &str,
) -> (Duration, Duration) {
    let members = tag.key(&["m", "presence-room"]);
    let took = until_answered(commands, &members).await;
    let state: HashMap<String, i64> = commands.hgetall(&members).await.expect("HGETALL");
    let written: HashMap<String, i64> = users.iter().map(|(u, n)| (u.to_string(), *n)).collect();
    assert_eq!(state, written, "no member lost, none added");
    // A write succeeds: the link is on the new master, not on a replica.
    run_script(commands, tag, "carol", [1, 2]).await;
    let delivered = publish_until_received(commands, inbox, channel).await;
    assert!(
        inbox.saw_gap_for(channel),
        "the failover was reported: {:?}",
        inbox.gaps
    );
    (took, delivered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_runs_commands_scripts_and_pubsub_and_recovers_from_a_restart() {
    let mut server = blocking(RedisServer::start);
    let target = Target::parse(&server.url()).expect("the fixture's URL");
    let (mut commands, subscriber, mut inbox) = connect(&target, false).await;
    let tag = HashTag::app("herald", "app-1");
    run_commands(&mut commands, &tag).await;
    run_script(&mut commands, &tag, "alice", [1, 1]).await;
    run_script(&mut commands, &tag, "bob", [1, 2]).await;

    subscriber.subscribe("a").await.expect("subscribe a");
    subscriber.subscribe("b").await.expect("subscribe b");
    // Acknowledged means registered: a publish right after it is received.
    assert_eq!(commands.publish("a", b"first").await.expect("publish"), 1);
    inbox.expect("a", b"first").await;
    assert_eq!(commands.group_of("a"), commands.group_of("b"));
    commands
        .publish_group(&[("a", b"x"), ("b", b"y")])
        .await
        .expect("publish_group");
    inbox.expect("a", b"x").await;
    inbox.expect("b", b"y").await;

    subscriber.unsubscribe("a").await.expect("unsubscribe");
    assert_eq!(commands.publish("a", b"after").await.expect("publish"), 0);
    inbox.expect_silence(Duration::from_millis(300)).await;
    assert!(inbox.gaps.is_empty(), "no gap yet: {:?}", inbox.gaps);

    // The server dies: the subscriber notices; a subscribe made meanwhile waits for it.
    blocking(|| server.kill());
    let down = Instant::now();
    while !subscriber.is_degraded() {
        assert!(down.elapsed() < MESSAGE_WAIT, "the loss went unnoticed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let waiting = tokio::spawn({
        let subscriber = subscriber.clone();
        async move { subscriber.subscribe("c").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "no confirmation without Redis");

    // It comes back (empty): both sides reconnect without the caller's help.
    let restarted = Instant::now();
    blocking(|| server.restart());
    let took = until_answered(&mut commands, "anything").await;
    tokio::time::timeout(RECOVERY, waiting)
        .await
        .expect("the waiting subscribe completes")
        .expect("its task")
        .expect("subscribed to c");
    assert_eq!(commands.publish("c", b"late").await.expect("publish"), 1);
    inbox.expect("c", b"late").await;
    let delivered = publish_until_received(&mut commands, &mut inbox, "b").await;
    assert!(
        inbox.saw_gap_for("b"),
        "the lost subscription was reported: {:?}",
        inbox.gaps
    );
    assert!(!subscriber.is_degraded());
    eprintln!(
        "restart: commands after {took:?}, messages after {delivered:?} (total {:?})",
        restarted.elapsed()
    );
    // "a" stayed unsubscribed across the reconnect.
    assert_eq!(
        commands.publish("a", b"still-off").await.expect("publish"),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_protected_server_is_reached_by_both_sides() {
    let server = blocking(|| RedisServer::start_with_password("s3cret pw"));
    let url = server.url().replace("s3cret pw", "s3cret%20pw");
    let target = Target::parse(&url).expect("the fixture's URL");
    assert!(!format!("{target} {target:?}").contains("s3cret"));
    // The subscriber speaks RESP3, whose handshake (HELLO 3 AUTH) carries the password.
    let (mut commands, subscriber, mut inbox) = connect(&target, false).await;
    subscriber.subscribe("a").await.expect("subscribe");
    assert_eq!(commands.publish("a", b"hi").await.expect("publish"), 1);
    inbox.expect("a", b"hi").await;
    let wrong = Target::parse(&url.replace("s3cret%20pw", "n0t-th1s")).expect("a URL");
    let error = Subscriber::connect(&wrong, &options())
        .await
        .err()
        .expect("a wrong password is refused");
    assert!(
        !format!("{error} {error:?}").contains("n0t-th1s"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_spreads_sharded_pubsub_and_survives_a_master_failover() {
    let mut cluster = blocking(|| RedisCluster::start_with_replicas(3, 1));
    let target = Target::parse(&cluster.url()).expect("the fixture's URL");
    let (mut commands, subscriber, mut inbox) = connect(&target, true).await;

    // Slots as Redis computes them.
    let keys = [
        "foo",
        "herald:1:s:presence-a",
        "{herald:1}:m:x",
        "private-chat",
        "é",
    ];
    let redis_slots: Vec<u16> = blocking(|| keys.iter().map(|k| cluster.keyslot(k)).collect());
    let ours: Vec<u16> = keys.iter().map(|k| slot(k.as_bytes())).collect();
    assert_eq!(ours, redis_slots);

    // One app per master: each app's keys share a slot, so its scripts run.
    let masters = blocking(|| cluster.masters());
    assert_eq!(masters.len(), 3);
    let mut tags: HashMap<u16, HashTag> = HashMap::new();
    for i in 0.. {
        let tag = HashTag::app("herald", &format!("app-{i}"));
        let port = master_for(&masters, tag.slot());
        tags.entry(port).or_insert(tag);
        if tags.len() == 3 {
            break;
        }
    }
    for tag in tags.values() {
        run_commands(&mut commands, tag).await;
        run_script(&mut commands, tag, "alice", [1, 1]).await;
    }
    // Today's key layout (no tag) fails there: the reason for the tags.
    assert_ne!(slot(b"herald:app-1:m:presence-room"), slot(b"herald:n:7:m"));
    let untagged = redis::Script::new(TWO_KEYS)
        .key("herald:app-1:m:presence-room")
        .key("herald:n:7:m")
        .arg("alice")
        .invoke_async::<Vec<i64>>(&mut commands)
        .await;
    assert!(untagged.is_err(), "keys in two slots: {untagged:?}");

    // Channels on every master, all delivered through one subscriber.
    let mut channels: HashMap<u16, String> = HashMap::new();
    for i in 0.. {
        let channel = format!("presence-room-{i}");
        channels
            .entry(master_for(&masters, slot(channel.as_bytes())))
            .or_insert(channel);
        if channels.len() == 3 {
            break;
        }
    }
    for channel in channels.values() {
        subscriber.subscribe(channel).await.expect("ssubscribe");
    }
    for channel in channels.values() {
        assert_eq!(
            commands.publish(channel, b"hello").await.expect("spublish"),
            1,
            "{channel}'s shard has its subscriber"
        );
        inbox.expect(channel, b"hello").await;
    }
    let spread: HashSet<u16> = channels.keys().copied().collect();
    assert!(spread.len() >= 2, "channels on several masters: {spread:?}");
    for channel in channels.values() {
        assert_eq!(commands.group_of(channel), slot(channel.as_bytes()));
        commands
            .publish_group(&[(channel.as_str(), b"batch".as_slice())])
            .await
            .expect("publish_group");
    }
    for channel in channels.values() {
        inbox.expect(channel, b"batch").await;
    }

    // Unsubscribing stops delivery.
    let mut ports: Vec<u16> = channels.keys().copied().collect();
    ports.sort_unstable();
    let (quiet_port, doomed_port) = (ports[0], ports[1]);
    let quiet = channels[&quiet_port].clone();
    subscriber.unsubscribe(&quiet).await.expect("sunsubscribe");
    assert_eq!(
        commands.publish(&quiet, b"gone").await.expect("spublish"),
        0
    );
    inbox.expect_silence(Duration::from_millis(300)).await;

    // Presence-like state on the master about to die, replicated before it dies.
    let tag = tags[&doomed_port].clone();
    let users = [("alice", 2), ("bob", 1)];
    write_members(&mut commands, &tag, &users).await;

    let doomed = channels[&doomed_port].clone();
    let killed = Instant::now();
    blocking(|| cluster.kill_node(doomed_port));
    let (took, delivered) = check_recovered(&mut commands, &mut inbox, &tag, &users, &doomed).await;
    eprintln!(
        "cluster failover: commands after {took:?}, messages after {delivered:?} (total {:?})",
        killed.elapsed()
    );
    // The other shards kept their subscriptions, and the unsubscribed channel stays quiet.
    let survivor = channels
        .iter()
        .find(|(port, _)| **port != quiet_port && **port != doomed_port)
        .map(|(_, c)| c.clone())
        .expect("a third channel");
    publish_until_received(&mut commands, &mut inbox, &survivor).await;
    assert_eq!(
        commands.publish(&quiet, b"gone").await.expect("spublish"),
        0
    );
    let new_master = blocking(|| {
        cluster.wait_for_failover(doomed_port);
        master_for(&cluster.masters(), slot(doomed.as_bytes()))
    });
    assert_ne!(new_master, doomed_port, "a replica took over");
}

/// A sentinel set-up with the link on it (database 3), checked as on one server, with
/// presence-like state written and replicated, and "events" subscribed.
struct SentinelLink {
    sentinel: Sentinel,
    commands: Commands,
    subscriber: Subscriber,
    inbox: Inbox,
    tag: HashTag,
    users: [(&'static str, i64); 2],
}

async fn sentinel_link() -> SentinelLink {
    let started = Instant::now();
    let sentinel = blocking(Sentinel::start);
    eprintln!("sentinel set-up started in {:?}", started.elapsed());
    let target = Target::parse(&format!("{}/3", sentinel.url())).expect("the fixture's URL");
    assert_eq!(target.db(), 3);
    let (mut commands, subscriber, mut inbox) = connect(&target, false).await;
    let tag = HashTag::app("herald", "app-1");
    run_commands(&mut commands, &tag).await;
    run_script(&mut commands, &tag, "alice", [1, 1]).await;

    subscriber.subscribe("events").await.expect("subscribe");
    subscriber.subscribe("quiet").await.expect("subscribe");
    assert_eq!(
        commands.publish("events", b"hello").await.expect("publish"),
        1
    );
    inbox.expect("events", b"hello").await;
    subscriber.unsubscribe("quiet").await.expect("unsubscribe");
    assert_eq!(commands.publish("quiet", b"x").await.expect("publish"), 0);
    inbox.expect_silence(Duration::from_millis(300)).await;

    let users = [("alice", 1), ("bob", 3)];
    write_members(&mut commands, &tag, &users).await;
    SentinelLink {
        sentinel,
        commands,
        subscriber,
        inbox,
        tag,
        users,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_master_is_found_and_followed_when_it_dies() {
    let SentinelLink {
        mut sentinel,
        mut commands,
        subscriber,
        mut inbox,
        tag,
        users,
    } = sentinel_link().await;
    let old_master = sentinel.master_port();
    let killed = Instant::now();
    let dead = blocking(|| sentinel.kill_master());
    assert_eq!(dead, old_master);
    let (took, delivered) =
        check_recovered(&mut commands, &mut inbox, &tag, &users, "events").await;
    assert_eq!(commands.publish("quiet", b"x").await.expect("publish"), 0);
    assert!(!subscriber.is_degraded());
    eprintln!(
        "sentinel failover: commands after {took:?}, messages after {delivered:?} (total {:?})",
        killed.elapsed()
    );
    let new_master = blocking(|| {
        sentinel.wait_for_failover(dead);
        sentinel.master_port()
    });
    assert_ne!(new_master, dead);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demoted_sentinel_master_is_left_for_the_promoted_one() {
    let SentinelLink {
        sentinel,
        mut commands,
        subscriber: _subscriber,
        mut inbox,
        tag,
        users,
    } = sentinel_link().await;
    // A failover with the old master alive: it becomes a replica and still answers reads
    // and keeps its connections, so only READONLY and the sentinels' +switch-master tell.
    let switched = Instant::now();
    let demoted = blocking(|| sentinel.failover());
    let promoted = blocking(|| {
        while sentinel.master_port() == demoted {
            assert!(switched.elapsed() < RECOVERY, "no promotion");
            std::thread::sleep(Duration::from_millis(20));
        }
        sentinel.master_port()
    });
    // Writes land on the new master: what the link writes is read back there.
    let probe = tag.key(&["probe"]);
    for n in 0u32.. {
        assert!(
            switched.elapsed() < RECOVERY,
            "writes never reached the new master"
        );
        let _ = commands.set::<_, _, ()>(&probe, n).await;
        let there = blocking(|| redis_fixture::cli(promoted, &["-n", "3", "get", &probe]));
        if there.is_some_and(|v| v.trim() == n.to_string()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wrote = switched.elapsed();
    // The subscriber moves by itself, reporting the gap.
    while !inbox.saw_gap_for("events") {
        assert!(
            switched.elapsed() < RECOVERY,
            "the subscriber stayed on the old master"
        );
        inbox.received("", b"", Duration::from_millis(100)).await;
    }
    publish_until_received(&mut commands, &mut inbox, "events").await;
    let state: HashMap<String, i64> = commands
        .hgetall(tag.key(&["m", "presence-room"]))
        .await
        .expect("HGETALL");
    let written: HashMap<String, i64> = users.iter().map(|(u, n)| (u.to_string(), *n)).collect();
    assert_eq!(state, written, "no member lost, none added");
    eprintln!(
        "sentinel switch: writes on the new master after {wrote:?}, subscriber moved after {:?}",
        switched.elapsed()
    );
}

fn master_for(masters: &[redis_fixture::ClusterNode], slot: u16) -> u16 {
    masters
        .iter()
        .find(|n| n.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
        .map(|n| n.port)
        .expect("a master serves every slot")
}

/// The node id and port of each replica of the master on `port`, from `CLUSTER NODES`.
fn replica_of(cluster: &RedisCluster, port: u16) -> u16 {
    let text = cluster
        .cli(port, &["cluster", "nodes"])
        .expect("CLUSTER NODES");
    let id_of = |line: &str| line.split(' ').next().unwrap_or("").to_owned();
    let master = text
        .lines()
        .find(|l| l.contains("myself"))
        .map(id_of)
        .expect("the node itself");
    text.lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            (fields.len() > 3 && fields[2].contains("slave") && fields[3] == master)
                .then(|| fields[1].split(['@', ':']).nth(1)?.parse().ok())
                .flatten()
        })
        .expect("the master has a replica")
}

/// One round: for each tag, a counter incremented and [`TWO_KEYS`] run (its load first),
/// all through `query_each`; every reply checked against the round's number.
async fn count_round(commands: &mut Commands, tags: &[HashTag], round: i64) {
    let script = redis::Script::new(TWO_KEYS);
    let mut cmds = Vec::new();
    for tag in tags {
        let key = tag.key(&["n"]);
        let mut load = redis::cmd("SCRIPT");
        load.arg("LOAD").arg(TWO_KEYS);
        cmds.push((key.clone(), load));
        let mut incr = redis::cmd("INCR");
        incr.arg(&key);
        cmds.push((key.clone(), incr));
        let mut call = redis::cmd("EVALSHA");
        call.arg(script.get_hash())
            .arg(2)
            .arg(tag.key(&["m", "presence-room"]))
            .arg(tag.key(&["chans"]))
            .arg("alice");
        cmds.push((key, call));
    }
    let replies = commands.query_each(cmds).await.expect("the round runs");
    for (tag, replies) in tags.iter().zip(replies.chunks(3)) {
        let n: i64 = redis::from_redis_value(&replies[1]).expect("INCR's reply");
        let run: Vec<i64> = redis::from_redis_value(&replies[2]).expect("the script's reply");
        assert_eq!(
            (n, run),
            (round, vec![round, 1]),
            "{tag:?}: each ran exactly once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_gets_one_pipeline_per_master_and_nothing_runs_twice_across_a_failover() {
    let cluster = blocking(|| RedisCluster::start_with_replicas(3, 1));
    let target = Target::parse(&cluster.url()).expect("the fixture's URL");
    let (mut commands, subscriber, mut inbox) = connect(&target, true).await;
    let masters = blocking(|| cluster.masters());
    // Apps on 24 slots of the first master, and a few on the others.
    let first = masters[0].port;
    let (mut near, mut far) = (Vec::new(), Vec::new());
    for i in 0.. {
        let tag = HashTag::app("herald", &format!("app-{i}"));
        if master_for(&masters, tag.slot()) == first {
            if near.len() < 24 {
                near.push(tag);
            }
        } else if far.len() < 8 {
            far.push(tag);
        }
        if near.len() == 24 && far.len() == 8 {
            break;
        }
    }
    let slots: HashSet<u16> = near.iter().map(HashTag::slot).collect();
    assert!(
        slots.len() > 20,
        "many slots of one master: {}",
        slots.len()
    );
    let tags: Vec<HashTag> = near.iter().chain(&far).cloned().collect();
    let shards: HashSet<u16> = tags
        .iter()
        .map(|t| master_for(&masters, t.slot()))
        .collect();

    // The first round fetches the slot map; each later one is a pipeline per master.
    count_round(&mut commands, &tags, 1).await;
    let before = commands.cluster_pipelines();
    count_round(&mut commands, &tags, 2).await;
    assert_eq!(
        commands.cluster_pipelines() - before,
        shards.len() as u64,
        "one pipeline per master, not per slot ({} slots)",
        tags.len()
    );

    // Messages on many slots of one master, and on the others: one pipeline each.
    let channels: Vec<String> = tags.iter().map(|t| t.key(&["bus"])).collect();
    for channel in &channels {
        subscriber.subscribe(channel).await.expect("ssubscribe");
    }
    let groups: Vec<PublishGroup> = channels
        .iter()
        .map(|c| (commands.group_of(c), vec![(c.as_str(), b"one".as_slice())]))
        .collect();
    let before = commands.cluster_pipelines();
    for result in commands.publish_groups(&groups).await {
        result.expect("published");
    }
    assert_eq!(commands.cluster_pipelines() - before, shards.len() as u64);
    for channel in &channels {
        inbox.expect(channel, b"one").await;
    }

    // The first master hands its slots to its replica and stays up as a replica: this
    // node's map is stale, so the next round's pipeline there is answered MOVED for every
    // command, and those alone go again, once, to the node the MOVED names: one pipeline.
    let replica = blocking(|| replica_of(&cluster, first));
    blocking(|| {
        cluster
            .cli(replica, &["cluster", "failover"])
            .expect("CLUSTER FAILOVER")
    });
    // Until every node's map has the replica as the master (a node's own view lags the
    // gossip, and a client that asks a stale node is sent back to the old master until
    // its response timeout: seen on a loaded machine), and the old master knows it too: a
    // master handing over pauses its clients' writes until then.
    blocking(|| cluster.wait_for_failover(first));
    let deadline = Instant::now() + RECOVERY;
    let demoted = || {
        cluster
            .cli(first, &["role"])
            .is_some_and(|r| r.starts_with("slave"))
    };
    while !blocking(demoted) {
        assert!(Instant::now() < deadline, "the old master became a replica");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = commands.cluster_pipelines();
    count_round(&mut commands, &tags, 3).await;
    let sent = commands.cluster_pipelines() - before;
    assert_eq!(
        sent,
        shards.len() as u64 + 1,
        "the redirected commands went again together to the new master"
    );
    // The map is fetched again: back to one pipeline per master.
    let before = commands.cluster_pipelines();
    count_round(&mut commands, &tags, 4).await;
    assert_eq!(commands.cluster_pipelines() - before, shards.len() as u64);
    let before = commands.cluster_pipelines();
    for result in commands.publish_groups(&groups).await {
        result.expect("published after the failover");
    }
    assert_eq!(commands.cluster_pipelines() - before, shards.len() as u64);
}
