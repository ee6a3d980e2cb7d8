//! The bus publisher: sends this node's messages for the other nodes through the Redis
//! link, pipelined, with one pipeline in flight per group ([`Commands::group_of`]: a Redis
//! Cluster's slot, or the whole server), so the slots of healthy shards keep flowing while
//! a failing shard's wait. The groups ready together are sent together: on a cluster, one
//! pipeline per master for all of their slots (each group's outcome still its own).
//!
//! A failed pipeline's messages, and only they, are sent again after [`RETRY`], ahead of
//! their group's later messages, until Redis takes them. A failed pipeline may have gone
//! out all the same, or may still (a server that stopped answering runs what it had read
//! once it answers again), so each message carries the sequence number it was given when
//! the publisher took it ([`bus::stamp`]), sent again unchanged, and a receiver drops what
//! it already had (`transport::Dedup`). Per sender and group the numbers only grow, so a
//! receiver never takes a message after a newer one of its group either: no duplicate and
//! no reordering per publisher and channel, whatever Redis or its client repeated.
//!
//! A message counts against `cluster_bus_max_bytes` from when it is queued until Redis has
//! confirmed it; what the publisher holds is bounded in messages too ([`MAX_HELD`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use redis::RedisResult;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use super::link::{Commands, PublishGroup};
pub(super) use super::outgoing::Outgoing;
use crate::adapter::bus;

/// Messages per group's pipeline at most.
pub(super) const BATCH: usize = 256;
/// Messages sent together at most (several groups, on a cluster as one pipeline per
/// master): the groups ready beyond it go in the next send, side by side.
const SEND_MAX: usize = 4 * BATCH;
/// How long a group whose pipeline failed waits before it is sent again.
const RETRY: Duration = Duration::from_millis(250);
/// Messages the publisher holds (taken from the queue, not yet confirmed) before it takes
/// no more: the queue then fills, and further messages are dropped and counted.
pub(super) const MAX_HELD: usize = 100_000;
/// Bytes taken by queued messages, given back once they are sent.
pub(super) struct ByteBudget {
    used: AtomicUsize,
    pub(super) max: usize,
}

impl ByteBudget {
    pub(super) fn new(max: usize) -> Self {
        ByteBudget {
            used: AtomicUsize::new(0),
            max,
        }
    }

    /// Takes `n` bytes if they fit. Concurrent takers may be refused while another's
    /// bytes are briefly counted, but what is taken never exceeds `max`.
    pub(super) fn take(&self, n: usize) -> bool {
        let before = self.used.fetch_add(n, Ordering::Relaxed);
        if before.saturating_add(n) <= self.max {
            return true;
        }
        self.used.fetch_sub(n, Ordering::Relaxed);
        false
    }

    pub(super) fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::Relaxed);
    }

    pub(super) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// What the publisher shares with the rest of the node.
pub(super) struct Outbound {
    /// Bytes of messages queued or held, given back as Redis confirms them.
    pub(super) budget: ByteBudget,
    /// Messages taken from the queue and not yet confirmed by Redis.
    pub(super) held: AtomicUsize,
    /// Messages sent again because their pipeline failed.
    pub(super) resent: AtomicU64,
    /// Told whenever the publisher holds nothing.
    idle: Notify,
}

impl Outbound {
    pub(super) fn new(max_bytes: usize) -> Self {
        Outbound {
            budget: ByteBudget::new(max_bytes),
            held: AtomicUsize::new(0),
            resent: AtomicU64::new(0),
            idle: Notify::new(),
        }
    }

    /// Waits until every message queued so far is published, for at most `within`;
    /// returns whether they were.
    pub(super) async fn flushed(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.budget.used() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.budget.used() == 0;
            }
        }
    }
}

/// One group's messages, in order.
#[derive(Default)]
struct Lane {
    waiting: VecDeque<Outgoing>,
    /// One of its pipelines is in flight (the messages are out of `waiting`).
    sending: bool,
    /// Its last pipeline failed: it is sent again at this time.
    retry_at: Option<Instant>,
}

struct Publisher {
    commands: Commands,
    out: Arc<Outbound>,
    lanes: HashMap<u16, Lane>,
    /// Groups with messages to send now, in turn.
    ready: VecDeque<u16>,
    /// Groups waiting to be sent again, by time (every wait is [`RETRY`], so in order).
    retries: VecDeque<(Instant, u16)>,
    /// Messages in the lanes, in flight included.
    held: usize,
    /// Lanes whose last pipeline failed.
    failing: usize,
    next_sequence: u64,
}

/// Publishes queued messages until the queue closes and everything taken is published.
pub(super) async fn run(
    commands: Commands,
    mut queue: mpsc::Receiver<Outgoing>,
    out: Arc<Outbound>,
) {
    let mut publisher = Publisher {
        commands,
        out,
        lanes: HashMap::new(),
        ready: VecDeque::new(),
        retries: VecDeque::new(),
        held: 0,
        failing: 0,
        next_sequence: first_sequence(),
    };
    let mut sending = FuturesUnordered::new();
    let mut intake = Vec::with_capacity(BATCH);
    let mut open = true;
    loop {
        publisher.due(Instant::now());
        // The ready groups' pipelines go out together: on a Redis Cluster, one pipeline
        // per master serving their slots rather than one per slot.
        loop {
            let mut batches = Vec::new();
            let mut messages = 0;
            while messages < SEND_MAX {
                let Some((group, batch)) = publisher.next_batch() else {
                    break;
                };
                messages += batch.len();
                batches.push((group, batch));
            }
            if batches.is_empty() {
                break;
            }
            sending.push(send(publisher.commands.clone(), batches));
        }
        if !open && publisher.held == 0 {
            return;
        }
        let retry = publisher.retries.front().map(|(at, _)| *at);
        tokio::select! {
            Some(sent) = sending.next(), if !sending.is_empty() => {
                for (group, batch, result) in sent {
                    publisher.finish(group, batch, result);
                }
            }
            n = queue.recv_many(&mut intake, BATCH), if open && publisher.held < MAX_HELD => {
                open = n > 0;
                for message in intake.drain(..) {
                    publisher.accept(message);
                }
            }
            () = tokio::time::sleep_until(retry.unwrap_or_else(Instant::now)), if retry.is_some() => {}
            else => return,
        }
    }
}

/// The first sequence number of this process: the time in microseconds, so a node
/// restarted under the same id numbers its messages above what it sent before.
fn first_sequence() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64)
}

/// Sends the groups' pipelines: those appending to a history one by one (side by side),
/// the others together ([`Commands::publish_groups`]). Each group's outcome is its own.
async fn send(
    commands: Commands,
    batches: Vec<(u16, Vec<Outgoing>)>,
) -> Vec<(u16, Vec<Outgoing>, RedisResult<()>)> {
    let (appending, plain): (Vec<_>, Vec<_>) = batches
        .into_iter()
        .partition(|(_, batch)| batch.iter().any(|m| m.append.is_some()));
    let histories =
        futures_util::future::join_all(appending.into_iter().map(|(group, mut batch)| {
            let mut commands = commands.clone();
            async move {
                let result = super::history::send(&mut commands, &mut batch).await;
                (group, batch, result)
            }
        }));
    let published = async {
        let mut commands = commands.clone();
        let groups: Vec<PublishGroup> = plain
            .iter()
            .map(|(group, batch)| {
                let messages = batch
                    .iter()
                    .map(|m| (m.channel.as_str(), m.payload.as_slice()))
                    .collect();
                (*group, messages)
            })
            .collect();
        commands.publish_groups(&groups).await
    };
    let (mut out, results) = tokio::join!(histories, published);
    for ((group, batch), result) in plain.into_iter().zip(results) {
        out.push((group, batch, result));
    }
    out
}

impl Publisher {
    /// Numbers a message and puts it in its group's lane.
    fn accept(&mut self, mut message: Outgoing) {
        bus::stamp(&mut message.payload, self.next_sequence);
        self.next_sequence += 1;
        let group = self.commands.group_of(&message.channel);
        let lane = self.lanes.entry(group).or_default();
        let idle = lane.waiting.is_empty() && !lane.sending && lane.retry_at.is_none();
        lane.waiting.push_back(message);
        self.held += 1;
        self.out.held.store(self.held, Ordering::Relaxed);
        if idle {
            self.ready.push_back(group);
        }
    }

    /// Groups whose wait after a failure is over become ready.
    fn due(&mut self, now: Instant) {
        while let Some(&(at, group)) = self.retries.front() {
            if at > now {
                return;
            }
            self.retries.pop_front();
            self.ready.push_back(group);
        }
    }

    /// The next ready group's next pipeline.
    fn next_batch(&mut self) -> Option<(u16, Vec<Outgoing>)> {
        while let Some(group) = self.ready.pop_front() {
            let Some(lane) = self.lanes.get_mut(&group) else {
                continue;
            };
            if lane.sending || lane.waiting.is_empty() {
                continue;
            }
            let n = lane.waiting.len().min(BATCH);
            lane.sending = true;
            return Some((group, lane.waiting.drain(..n).collect()));
        }
        None
    }

    /// A pipeline's outcome: its messages are done, or go back to the front of their lane
    /// to be sent again after [`RETRY`].
    fn finish(&mut self, group: u16, batch: Vec<Outgoing>, result: RedisResult<()>) {
        let Some(lane) = self.lanes.get_mut(&group) else {
            return;
        };
        lane.sending = false;
        match result {
            Ok(()) => {
                self.held -= batch.len();
                self.out.budget.give(batch.iter().map(Outgoing::cost).sum());
                for message in batch {
                    if let Some(confirmed) = message.confirmed {
                        let _ = confirmed.send(());
                    }
                }
                if lane.retry_at.take().is_some() {
                    self.failing -= 1;
                    if self.failing == 0 {
                        tracing::info!("Cluster bus: publishing to Redis again");
                    }
                }
                if lane.waiting.is_empty() {
                    self.lanes.remove(&group);
                } else {
                    self.ready.push_back(group);
                }
            }
            Err(error) => {
                self.out
                    .resent
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                for message in batch.into_iter().rev() {
                    lane.waiting.push_front(message);
                }
                let at = Instant::now() + RETRY;
                if lane.retry_at.replace(at).is_none() {
                    self.failing += 1;
                    if self.failing == 1 {
                        tracing::warn!(%error, held = self.held, "Cluster bus: cannot publish to Redis; holding the messages it did not take and sending them again until it does");
                    }
                }
                self.retries.push_back((at, group));
            }
        }
        self.out.held.store(self.held, Ordering::Relaxed);
        if self.held == 0 {
            self.out.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use redis_fixture::RedisCluster;

    use super::super::link::{slot, Deliveries, Delivery, Options, Subscriber, Target};
    use super::super::transport::Dedup;
    use super::*;

    /// What a receiving node made of the bus: each channel's messages as delivered, and
    /// the copies it dropped.
    #[derive(Default)]
    struct Received {
        delivered: BTreeMap<String, Vec<String>>,
        dropped: BTreeMap<String, usize>,
    }

    impl Received {
        /// Takes deliveries until `done` holds, for at most 10 s.
        async fn until(
            &mut self,
            deliveries: &mut Deliveries,
            dedup: &mut Dedup,
            done: impl Fn(&Received) -> bool,
        ) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !done(self) {
                let delivery = tokio::time::timeout_at(deadline, deliveries.recv()).await;
                let Ok(Some(Delivery::Message(m))) = delivery else {
                    panic!("no delivery in time: {delivery:?}");
                };
                let (origin, message) = bus::decode(&m.payload).expect("a bus message");
                let sequence = bus::sequence(&m.payload).expect("numbered");
                let bus::BusMessage::Event { frame, .. } = message else {
                    panic!("an event");
                };
                if dedup.fresh(origin, slot(m.channel.as_bytes()), sequence) {
                    let text = String::from_utf8_lossy(&frame).into_owned();
                    self.delivered.entry(m.channel).or_default().push(text);
                } else {
                    *self.dropped.entry(m.channel).or_default() += 1;
                }
            }
        }

        fn count(&self, channel: &str) -> usize {
            self.delivered.get(channel).map_or(0, Vec::len)
        }
    }

    /// Queues a numbered event on `channel` as the node does, within the byte budget.
    fn queue(tx: &mpsc::Sender<Outgoing>, out: &Outbound, channel: &str, text: &str) {
        let message = Outgoing {
            channel: channel.to_owned(),
            payload: bus::encode_event(7, "app", channel, None, text.as_bytes(), None, false).0,
            append: None,
            confirmed: None,
        };
        assert!(out.budget.take(message.cost()));
        assert!(tx.try_send(message).is_ok());
    }

    async fn eventually(what: &str, check: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !check() {
            assert!(Instant::now() < deadline, "{what}: not within 10 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// One batch spanning a healthy shard and a paused one: the healthy shard's messages are
    /// delivered at once, each once; the paused shard's are sent again (its first pipeline
    /// timed out, and ran when the shard answered again) and arrive once, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_paused_shard_holds_back_only_its_own_messages_and_none_arrives_twice() {
        // A node timeout of 10 s: the pause below never has the shard failed by the others,
        // however slow a loaded machine makes it.
        let cluster = tokio::task::block_in_place(|| RedisCluster::start_patient(3));
        let target = Target::parse(&cluster.url()).expect("the fixture's URL");
        // Pipelines time out within the pause, so the paused shard's are sent again; the
        // subscriber pings rarely, so it keeps its subscriptions through the pause.
        let quick = Options {
            response_timeout: Duration::from_millis(300),
            ..Options::default()
        };
        let patient = Options {
            keepalive: Duration::from_secs(60),
            ..Options::default()
        };
        let commands = Commands::connect(&target, &quick).await.expect("connect");
        let (subscriber, mut deliveries) = Subscriber::connect(&target, &patient)
            .await
            .expect("subscriber");
        let masters = tokio::task::block_in_place(|| cluster.masters());
        let master_of = |channel: &str| {
            let slot = slot(channel.as_bytes());
            masters
                .iter()
                .find(|m| m.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
                .map(|m| m.port)
                .expect("a master serves every slot")
        };
        let healthy = "herald:e:app:healthy".to_owned();
        let paused = (0..)
            .map(|i| format!("herald:e:app:paused-{i}"))
            .find(|c| master_of(c) != master_of(&healthy))
            .expect("a channel on another master");
        let paused_port = master_of(&paused);
        for channel in [&healthy, &paused] {
            subscriber.subscribe(channel).await.expect("subscribe");
        }
        let (tx, rx) = mpsc::channel(1000);
        let out = Arc::new(Outbound::new(1 << 20));
        tokio::spawn(run(commands, rx, out.clone()));
        let mut received = Received::default();
        let mut dedup = Dedup::default();

        tokio::task::block_in_place(|| cluster.pause_node(paused_port));
        let n = 20;
        for i in 0..n {
            queue(&tx, &out, &healthy, &i.to_string());
            queue(&tx, &out, &paused, &i.to_string());
        }
        received
            .until(&mut deliveries, &mut dedup, |r| r.count(&healthy) == n)
            .await;
        assert_eq!(
            received.count(&paused),
            0,
            "the paused shard answers nothing"
        );
        eventually("the paused shard's messages sent again", || {
            out.resent.load(Ordering::Relaxed) >= n as u64
        })
        .await;
        tokio::task::block_in_place(|| cluster.resume_node(paused_port));
        eventually("everything published", || {
            out.held.load(Ordering::Relaxed) == 0
        })
        .await;
        assert_eq!(out.budget.used(), 0, "every byte given back");
        // Whatever the shard ran before its last answer reaches the subscriber before this.
        queue(&tx, &out, &paused, "last");
        received
            .until(&mut deliveries, &mut dedup, |r| {
                r.delivered
                    .get(&paused)
                    .and_then(|d| d.last())
                    .map(String::as_str)
                    == Some("last")
            })
            .await;

        let expected: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        assert_eq!(
            received.delivered[&healthy], expected,
            "once each, in order"
        );
        let mut after = expected.clone();
        after.push("last".to_owned());
        assert_eq!(received.delivered[&paused], after, "once each, in order");
        assert_eq!(
            received.dropped.get(&healthy),
            None,
            "the healthy shard's were sent once"
        );
        eprintln!(
            "sent again: {}; copies dropped: {:?}",
            out.resent.load(Ordering::Relaxed),
            received.dropped
        );
        assert!(
            received.dropped.get(&paused).is_some_and(|d| *d >= n),
            "the timed-out pipeline ran too, and its copies were dropped: {:?}",
            received.dropped
        );
    }

    #[test]
    fn the_bus_budget_counts_bytes_until_they_are_sent() {
        let budget = ByteBudget::new(1000);
        assert!(budget.take(600));
        assert!(!budget.take(600), "over the budget");
        assert!(budget.take(400));
        assert!(!budget.take(1));
        budget.give(600);
        assert!(budget.take(500));
        assert_eq!(budget.used(), 900);
        assert!(!budget.take(usize::MAX), "no overflow");
        assert_eq!(budget.used(), 900);
    }
}
