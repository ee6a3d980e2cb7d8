//! One scenario's world: a lab with a Redis (one server, a Redis Cluster or a Sentinel
//! set-up, each process in a host of its own), three herald nodes in hosts of their own, the
//! official clients' workload with its webhook sink, and what a fault needs (a relay between
//! the first node and Redis). A scenario starts it, breaks something, heals it, and calls
//! [`Run::finish`], which waits for the cluster to converge and checks every invariant.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use redis_fixture::{RedisCluster, RedisServer, Sentinel};

use super::check::{self, Excuses, Findings, Report};
use super::net::{Host, Lab, Way};
use super::node::{Node, APP_ID, KEY, SECRET};
use super::relay::Relay;
use super::workload::{Load, Workload};

/// The Redis the nodes share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    Single,
    Cluster,
    Sentinel,
}

pub enum Redis {
    Single(RedisServer),
    Cluster(RedisCluster),
    Sentinel(Sentinel),
}

/// How a scenario's world is built.
#[derive(Clone, Debug)]
pub struct Spec {
    pub name: &'static str,
    pub topology: Topology,
    pub nodes: usize,
    /// `node_timeout` of every node, seconds.
    pub node_timeout: u64,
    /// The first node reaches Redis through a relay that can add latency (single Redis).
    pub relay: bool,
    pub load: Load,
}

impl Spec {
    pub fn new(name: &'static str, topology: Topology, node_timeout: u64) -> Spec {
        Spec {
            name,
            topology,
            nodes: 3,
            node_timeout,
            relay: false,
            load: Load::default(),
        }
    }
}

/// What a scenario measured, for the table of docs/faults.md.
#[derive(Debug)]
pub struct Outcome {
    pub findings: Findings,
    /// From the heal until every node listed the connected presence members.
    pub converged_after: Duration,
}

// Fields drop in order: the workload and nodes before Redis, the lab (namespaces) last.
pub struct Run {
    pub spec: Spec,
    pub workload: Workload,
    pub nodes: Vec<Node>,
    pub relay: Option<Relay>,
    pub redis: Redis,
    pub redis_hosts: Vec<Host>,
    pub excuses: Excuses,
    pub lab: Lab,
    healed: Option<Instant>,
}

impl Run {
    pub async fn start(spec: Spec) -> Run {
        let mut lab = Lab::new();
        let redis_hosts: Vec<Host> = match spec.topology {
            Topology::Single => vec![lab.host("redis")],
            Topology::Cluster => (0..6).map(|i| lab.host(&format!("shard{i}"))).collect(),
            Topology::Sentinel => (0..5).map(|i| lab.host(&format!("sent{i}"))).collect(),
        };
        let fixtures: Vec<redis_fixture::Host> = redis_hosts.iter().map(Host::fixture).collect();
        let redis = tokio::task::block_in_place(|| match spec.topology {
            Topology::Single => Redis::Single(RedisServer::start_on(&fixtures[0])),
            Topology::Cluster => Redis::Cluster(RedisCluster::start_on(&fixtures, 3, 1)),
            Topology::Sentinel => Redis::Sentinel(Sentinel::start_on(&fixtures)),
        });
        let workload = Workload::spawn(lab.gateway(), &spec.load).await;
        let relay = match (&redis, spec.relay) {
            (Redis::Single(server), true) => {
                let target = SocketAddr::new(server.ip(), server.port());
                Some(Relay::start(SocketAddr::new(lab.services().into(), 0), target).await)
            }
            _ => None,
        };
        let url = match &redis {
            Redis::Single(server) => server.url(),
            Redis::Cluster(cluster) => cluster.url(),
            Redis::Sentinel(sentinel) => sentinel.url(),
        };
        let hosts: Vec<Host> = (0..spec.nodes)
            .map(|i| lab.host(&format!("n{}", i + 1)))
            .collect();
        let sink = workload.sink_url(lab.gateway());
        let nodes = tokio::task::block_in_place(|| {
            hosts
                .iter()
                .enumerate()
                .map(|(i, host)| {
                    let url = match &relay {
                        Some(relay) if i == 0 => format!("redis://{}/0", relay.addr()),
                        _ => url.clone(),
                    };
                    Node::start(
                        &format!("n{}", i + 1),
                        host,
                        &node_config(&url, &spec, &sink),
                    )
                })
                .collect()
        });
        let mut run = Run {
            spec,
            workload,
            nodes,
            relay,
            redis,
            redis_hosts,
            excuses: Excuses::default(),
            lab,
            healed: None,
        };
        let nodes: Vec<&Node> = run.nodes.iter().collect();
        run.workload.start(&nodes).await;
        run
    }

    /// The addresses of every Redis process (servers and sentinels).
    pub fn redis_ips(&self) -> Vec<Ipv4Addr> {
        self.redis_hosts.iter().map(|h| h.ip).collect()
    }

    /// Cuts node `i` off from every Redis process, in the ways given.
    pub fn cut_from_redis(&mut self, i: usize, way: Way) {
        for ip in self.redis_ips() {
            self.lab.cut(&self.nodes[i].host, ip, way);
        }
        self.excuses.impaired.insert(self.nodes[i].name.clone());
    }

    /// Marks every node impaired: a fault of Redis itself reaches them all.
    fn all_impaired(&mut self) {
        for node in &self.nodes {
            self.excuses.impaired.insert(node.name.clone());
        }
    }

    fn single(&mut self) -> &mut RedisServer {
        match &mut self.redis {
            Redis::Single(server) => server,
            _ => panic!("this fault needs the single-server topology"),
        }
    }

    /// Freezes Redis (SIGSTOP): connections stay open, nothing is answered.
    pub fn pause_redis(&mut self) {
        self.all_impaired();
        self.single().pause();
    }

    pub fn resume_redis(&mut self) {
        self.single().resume();
        self.mark_healed();
    }

    /// Restarts Redis empty (SIGKILL, then a new process on the same address).
    pub fn restart_redis(&mut self) {
        self.all_impaired();
        // The membership changes made while Redis was away are restated quietly into the
        // empty Redis: their webhooks may be missing (docs/faults.md).
        self.excuses.webhooks_lost = true;
        let server = self.single();
        tokio::task::block_in_place(|| server.restart());
        self.mark_healed();
    }

    /// Kills a master of the Redis Cluster, or the Sentinel set-up's master, and waits
    /// until a replica has taken over.
    pub fn fail_over(&mut self) {
        self.all_impaired();
        tokio::task::block_in_place(|| match &mut self.redis {
            Redis::Cluster(cluster) => {
                let port = cluster.kill_master(0);
                cluster.wait_for_failover(port);
            }
            Redis::Sentinel(sentinel) => {
                let port = sentinel.kill_master();
                sentinel.wait_for_failover(port);
            }
            Redis::Single(_) => panic!("a failover needs a Redis Cluster or Sentinel"),
        });
        self.mark_healed();
    }

    /// SIGTERM to node `i`; returns how long it took to exit (`None`: still running after
    /// `limit`, then killed).
    pub fn terminate_node(&mut self, i: usize, limit: Duration) -> Option<Duration> {
        tokio::task::block_in_place(|| self.nodes[i].terminate(limit))
    }

    /// Crashes node `i` (SIGKILL).
    pub fn kill_node(&mut self, i: usize) {
        self.excuses.crashed.insert(self.nodes[i].name.clone());
        self.nodes[i].kill();
    }

    /// Starts node `i` again on its address; its clients reconnect on their own.
    pub fn restart_node(&mut self, i: usize) {
        tokio::task::block_in_place(|| self.nodes[i].restart());
        self.mark_healed();
    }

    /// Adds `delay` each way between the first node and Redis (through the relay) and drops
    /// `percent` % of the packets between them, at random, both ways.
    pub fn degrade_link(&mut self, delay: Duration, percent: u8) {
        let relay = self.relay.as_ref().expect("a scenario with a relay");
        relay.set_delay(delay);
        let gateway = self.lab.gateway();
        self.lab
            .lose(&self.nodes[0].host, gateway, Way::Both, percent);
        self.excuses.impaired.insert(self.nodes[0].name.clone());
    }

    pub fn restore_link(&mut self) {
        if let Some(relay) = &self.relay {
            relay.set_delay(Duration::ZERO);
        }
        self.heal_network();
    }

    /// Heals every fault of the network and notes when.
    pub fn heal_network(&mut self) {
        for node in &self.nodes {
            self.lab.heal(&node.host);
        }
        self.mark_healed();
    }

    /// Notes that the fault is over (convergence is timed from here).
    pub fn mark_healed(&mut self) {
        self.healed = Some(Instant::now());
    }

    /// Every node's bus reports a loss it could not avoid (a gap or a dropped message)?
    async fn detections(&self) -> BTreeSet<String> {
        let mut detected = BTreeSet::new();
        for node in &self.nodes {
            let gaps = node.metric("herald_cluster_bus_gaps_total").await;
            let dropped = node.metric("herald_cluster_bus_dropped_total").await;
            if gaps.unwrap_or(0.0) + dropped.unwrap_or(0.0) > 0.0 {
                detected.insert(node.name.clone());
            }
        }
        detected
    }

    /// Polls every running node until it lists exactly the connected presence members, and
    /// every connected observer's pusher-js holds the same list; returns the nodes' lists
    /// (the last ones seen if `limit` passes first).
    async fn converge(&mut self, limit: Duration) -> BTreeMap<String, Vec<String>> {
        let start = Instant::now();
        loop {
            let (truth, views) = self.workload.members().await;
            let mut lists = BTreeMap::new();
            for node in self.nodes.iter().filter(|n| n.running()) {
                let mut ids = node
                    .api()
                    .users("presence-faults")
                    .await
                    .unwrap_or_default();
                ids.sort();
                lists.insert(node.name.clone(), ids);
            }
            let agreed = lists.values().chain(&views).all(|ids| *ids == truth);
            if agreed || start.elapsed() > limit {
                return lists;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits for convergence, stops the workload, checks every invariant and returns what
    /// was measured; panics with every violation found.
    pub async fn finish(mut self) -> Outcome {
        let healed = self.healed.unwrap_or_else(Instant::now);
        // A dead node's members go after `node_timeout`, plus a heartbeat's turn and a reap.
        let limit = Duration::from_secs(self.spec.node_timeout * 2 + 15);
        self.converge(limit).await;
        let converged_after = healed.elapsed();
        self.workload.quiesce().await;
        let users = self.converge(limit).await;
        self.excuses.detected = self.detections().await;
        let report: serde_json::Value = self.workload.report().await;
        self.workload.close().await;
        // Every client is gone: wait for the vacated webhooks (held back 200 ms, batched).
        let hooks = self.settled_hooks().await;
        let mut report: Report = serde_json::from_value(report).expect("a readable report");
        report.hooks = hooks;
        let findings = check::check(&report, &self.excuses, &users);
        let outcome = Outcome {
            findings,
            converged_after,
        };
        eprintln!(
            "[{}] converged {:.1} s after the heal; {} events answered ({} triggers failed), \
             {} deliveries; longest client outage {} ms; lost: {} while disconnected, {} \
             across counted bus gaps, {} in a crash; {} client events lost; {} webhooks ({} \
             unpaired)",
            self.spec.name,
            outcome.converged_after.as_secs_f64(),
            outcome.findings.events_answered,
            outcome.findings.publish_failures,
            outcome.findings.deliveries,
            outcome.findings.longest_outage_ms,
            outcome.findings.lost_while_disconnected,
            outcome.findings.lost_detected,
            outcome.findings.lost_in_crash,
            outcome.findings.client_events_lost,
            outcome.findings.webhooks,
            outcome.findings.webhooks_unpaired,
        );
        if !outcome.findings.violations.is_empty() {
            for node in &self.nodes {
                let log = node.log_text();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                eprintln!("--- {} log (last 30 lines, newest first)", node.name);
                for line in tail {
                    eprintln!("{line}");
                }
            }
            panic!(
                "[{}] {} invariant violations:\n{}",
                self.spec.name,
                outcome.findings.violations.len(),
                outcome.findings.violations.join("\n")
            );
        }
        outcome
    }

    /// The webhooks once every channel's last one is `channel_vacated` and every member's
    /// `member_removed` (every client is gone) and nothing new came for a second, or after
    /// 30 s (a violation then names what is missing).
    async fn settled_hooks(&mut self) -> Vec<check::Hook> {
        let start = Instant::now();
        let mut last = usize::MAX;
        let mut stable_since = Instant::now();
        loop {
            let report = self.workload.report().await;
            let hooks: Vec<check::Hook> =
                serde_json::from_value(report["hooks"].clone()).expect("hooks");
            if hooks.len() != last {
                last = hooks.len();
                stable_since = Instant::now();
            }
            let done = check::all_closed(&hooks) && stable_since.elapsed() > Duration::from_secs(1);
            if done || start.elapsed() > Duration::from_secs(30) {
                return hooks;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn node_config(redis_url: &str, spec: &Spec, sink: &str) -> String {
    format!(
        "adapter = \"redis\"\nredis_url = \"{redis_url}\"\nnode_timeout = {timeout}\n\
         shutdown_grace = 3\nwebhook_vacated_delay_ms = 200\n\
         [[apps]]\nid = \"{APP_ID}\"\nkey = \"{KEY}\"\nsecret = \"{SECRET}\"\n\
         [[apps.webhooks]]\nurl = \"{sink}\"\nevent_types = [\"channel_occupied\", \
         \"channel_vacated\", \"member_added\", \"member_removed\"]\n",
        timeout = spec.node_timeout
    )
}

/// Sleeps through a phase of the workload: what the clients do meanwhile is the test, so
/// this is a duration, not a wait for a condition.
pub async fn hold(duration: Duration) {
    tokio::time::sleep(duration).await;
}
