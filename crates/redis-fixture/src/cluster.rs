//! A Redis Cluster: `redis-server --cluster-enabled yes` nodes joined by
//! `redis-cli --cluster create`.

use std::time::{Duration, Instant};

use crate::process::{
    base_args, free_port, info_field, wait_or_explain, wait_until, Host, Process, ScratchDir,
};
use crate::tls::TlsFiles;

/// How long a node may be unreachable before the cluster fails it over; small so a failover
/// test takes a few seconds (Redis's default is 15 s).
const NODE_TIMEOUT_MS: u64 = 1000;
/// [`RedisCluster::start_patient`]'s: past any stall a loaded machine gives a node, so a
/// test that freezes a shard briefly never has it failed by the others.
const PATIENT_NODE_TIMEOUT_MS: u64 = 10_000;
/// Bounds on the waits: forming the cluster, and a failover.
const FORM_LIMIT: Duration = Duration::from_secs(30);
const FAILOVER_LIMIT: Duration = Duration::from_secs(30);
/// How long [`RedisCluster::wait_for_failover`] leaves the election to Redis: about five
/// times what it takes on this machine's CI under load (2.7-2.9 s with a 1 s node timeout).
const ELECTION_PATIENCE: Duration = Duration::from_secs(15);
/// How much of each node's log a failed wait shows.
const LOG_LINES: usize = 25;

/// A Redis Cluster (on loopback unless started on other [`Host`]s), every node killed when
/// dropped. Its nodes are told apart by port, which is unique across the cluster.
pub struct RedisCluster {
    nodes: Vec<Process>,
    dir: ScratchDir,
}

/// One node as `CLUSTER NODES` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    pub id: String,
    pub port: u16,
    pub master: bool,
    /// Flagged `fail` (or `fail?`) by the node that was asked.
    pub failing: bool,
    /// Slot ranges it serves, inclusive.
    pub slots: Vec<(u16, u16)>,
    /// The id of the master it replicates (a replica's), `None` for a master.
    pub replica_of: Option<String>,
}

impl RedisCluster {
    /// A cluster of `masters` masters without replicas (no failover possible).
    pub fn start(masters: usize) -> RedisCluster {
        RedisCluster::start_with_replicas(masters, 0)
    }

    /// [`RedisCluster::start`] with a node timeout of 10 s instead of 1 s: for a test that
    /// freezes a shard ([`RedisCluster::pause_node`]) and needs the others not to mark it
    /// failing however long the machine takes meanwhile.
    pub fn start_patient(masters: usize) -> RedisCluster {
        RedisCluster::start_inner(
            &vec![Host::loopback(); masters],
            masters,
            0,
            None,
            PATIENT_NODE_TIMEOUT_MS,
        )
    }

    /// A cluster of `masters` masters with `replicas_per_master` replicas each, returned once
    /// every node says `cluster_state:ok` and every replica is in sync with its master.
    pub fn start_with_replicas(masters: usize, replicas_per_master: usize) -> RedisCluster {
        let count = masters * (1 + replicas_per_master);
        RedisCluster::start_on(&vec![Host::loopback(); count], masters, replicas_per_master)
    }

    /// [`RedisCluster::start_with_replicas`] with node `i` on `hosts[i]` (one host per
    /// node: `masters * (1 + replicas_per_master)` of them).
    pub fn start_on(hosts: &[Host], masters: usize, replicas_per_master: usize) -> RedisCluster {
        RedisCluster::start_inner(hosts, masters, replicas_per_master, None, NODE_TIMEOUT_MS)
    }

    /// [`RedisCluster::start_with_replicas`] serving TLS only, with `tls`, the cluster bus
    /// and replication over TLS too.
    pub fn start_tls(masters: usize, replicas_per_master: usize, tls: &TlsFiles) -> RedisCluster {
        let count = masters * (1 + replicas_per_master);
        RedisCluster::start_inner(
            &vec![Host::loopback(); count],
            masters,
            replicas_per_master,
            Some(tls),
            NODE_TIMEOUT_MS,
        )
    }

    fn start_inner(
        hosts: &[Host],
        masters: usize,
        replicas_per_master: usize,
        tls: Option<&TlsFiles>,
        node_timeout_ms: u64,
    ) -> RedisCluster {
        assert!(masters >= 3, "Redis Cluster needs at least three masters");
        let dir = ScratchDir::new("cluster");
        let count = masters * (1 + replicas_per_master);
        assert_eq!(hosts.len(), count, "one host per cluster node");
        let nodes: Vec<Process> = hosts
            .iter()
            .map(|host| {
                let port = free_port();
                let mut args = base_args(host, port, dir.path());
                // The bus port is set, not left at port + 10000, which may be past 65535.
                args.extend(
                    [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        &format!("nodes-{port}.conf"),
                        "--cluster-node-timeout",
                        &node_timeout_ms.to_string(),
                        "--cluster-port",
                        &free_port().to_string(),
                    ]
                    .map(str::to_owned),
                );
                if tls.is_some() {
                    args.extend(["--tls-cluster".to_owned(), "yes".to_owned()]);
                }
                Process::start_tls(host, port, args, tls)
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("{}:{}", n.host.ip(), n.port))
            .collect();
        let output = std::process::Command::new("redis-cli")
            .args(tls.map(TlsFiles::cli_args).unwrap_or_default())
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", &replicas_per_master.to_string()])
            .arg("--cluster-yes")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = RedisCluster { nodes, dir };
        wait_until(FORM_LIMIT, "the cluster to form", || {
            cluster.every_node_agrees(count) && cluster.replicas_in_sync()
        });
        cluster
    }

    /// `redis+cluster://host1:p1,host2:p2,...`: every node started, as seeds
    /// (`rediss+cluster://` over TLS).
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("{}:{}", n.host.ip(), n.port))
            .collect();
        let s = if self.nodes.iter().any(|n| n.tls.is_some()) {
            "s"
        } else {
            ""
        };
        format!("redis{s}+cluster://{}", seeds.join(","))
    }

    /// The ports of the nodes still running.
    pub fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.port)
            .collect()
    }

    /// `redis-cli` against the node on `port`.
    pub fn cli(&self, port: u16, args: &[&str]) -> Option<String> {
        self.node(port).cli(args)
    }

    /// The address of the node on `port`.
    pub fn ip_of(&self, port: u16) -> std::net::IpAddr {
        self.node(port).host.ip()
    }

    /// The process id of the node on `port`, while it runs.
    pub fn pid_of(&self, port: u16) -> Option<u32> {
        self.node(port).pid()
    }

    fn node(&self, port: u16) -> &Process {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("redis-fixture: no node on port {port}"))
    }

    /// The cluster as a live node sees it.
    pub fn nodes(&self) -> Vec<ClusterNode> {
        for port in self.live_ports() {
            if let Some(text) = self.cli(port, &["cluster", "nodes"]) {
                return parse_nodes(&text);
            }
        }
        panic!("redis-fixture: no cluster node answers CLUSTER NODES");
    }

    /// The masters serving slots and not failing, ordered by their first slot.
    pub fn masters(&self) -> Vec<ClusterNode> {
        let mut masters: Vec<ClusterNode> = self
            .nodes()
            .into_iter()
            .filter(|n| n.master && !n.failing && !n.slots.is_empty())
            .collect();
        masters.sort_by_key(|n| n.slots[0].0);
        masters
    }

    /// The port of the master serving `slot`.
    pub fn master_for_slot(&self, slot: u16) -> u16 {
        self.masters()
            .into_iter()
            .find(|n| n.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
            .map(|n| n.port)
            .unwrap_or_else(|| panic!("redis-fixture: no master serves slot {slot}"))
    }

    /// The slot Redis computes for `key` (`CLUSTER KEYSLOT`).
    pub fn keyslot(&self, key: &str) -> u16 {
        let port = self.live_ports()[0];
        self.cli(port, &["cluster", "keyslot", key])
            .and_then(|s| s.trim().parse().ok())
            .expect("CLUSTER KEYSLOT answers a number")
    }

    /// Kills (SIGKILL) the node on `port`. A master's replica takes over its slots after the
    /// node timeout; see [`RedisCluster::wait_for_failover`].
    pub fn kill_node(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("redis-fixture: no node on port {port}"));
        node.kill();
    }

    /// Freezes the node on `port` (SIGSTOP): its connections stay open and it answers
    /// nothing, as a shard that is overloaded or partitioned away. Past the cluster's node
    /// timeout (1 s; 10 s for [`RedisCluster::start_patient`]) the other nodes mark it failing.
    pub fn pause_node(&self, port: u16) {
        self.node(port).signal("-STOP");
    }

    /// Lets a paused node run again (SIGCONT).
    pub fn resume_node(&self, port: u16) {
        self.node(port).signal("-CONT");
    }

    /// Kills the `i`-th master of [`RedisCluster::masters`] and returns its port.
    pub fn kill_master(&mut self, i: usize) -> u16 {
        let port = self.masters()[i].port;
        self.kill_node(port);
        port
    }

    /// Waits until every slot the node on `dead_port` served (killed, or demoted by a
    /// `CLUSTER FAILOVER` of its replica) is served by another master, in the view of every
    /// live node, and every live node says `cluster_state:ok`.
    ///
    /// Redis elects the replica on its own within about three node timeouts. If it has not
    /// after [`ELECTION_PATIENCE`], the replica is told to take over (`CLUSTER FAILOVER
    /// TAKEOVER`, which needs no votes), saying so on stderr with the nodes' views: what
    /// the callers test is what happens once the slots move, not Redis's election on a
    /// loaded machine.
    pub fn wait_for_failover(&self, dead_port: u16) {
        let dead_id = self
            .nodes()
            .into_iter()
            .find(|n| n.port == dead_port)
            .map(|n| n.id);
        let start = Instant::now();
        let mut told = false;
        wait_or_explain(
            FAILOVER_LIMIT,
            "a replica to take the dead master's slots",
            || {
                if !told && start.elapsed() >= ELECTION_PATIENCE {
                    told = true;
                    self.take_over(dead_id.as_deref());
                }
                self.live_ports().into_iter().all(|port| {
                    let Some(text) = self.cli(port, &["cluster", "nodes"]) else {
                        return false;
                    };
                    let nodes = parse_nodes(&text);
                    let covered = nodes
                        .iter()
                        .filter(|n| n.master && !n.failing && n.port != dead_port)
                        .map(|n| {
                            n.slots
                                .iter()
                                .map(|(a, b)| usize::from(b - a) + 1)
                                .sum::<usize>()
                        })
                        .sum::<usize>();
                    covered == 16384 && self.cluster_ok(port)
                })
            },
            || self.explain(),
        );
    }

    /// Tells the replicas of the node `dead_id` (as a live node sees them) to take over its
    /// slots, after printing why to stderr.
    fn take_over(&self, dead_id: Option<&str>) {
        eprintln!(
            "redis-fixture: no replica elected after {ELECTION_PATIENCE:?}; forcing a takeover{}",
            self.explain()
        );
        let replicas: Vec<u16> = self
            .nodes()
            .into_iter()
            .filter(|n| dead_id.is_some() && n.replica_of.as_deref() == dead_id)
            .map(|n| n.port)
            .collect();
        for port in replicas {
            let _ = self.cli(port, &["cluster", "failover", "takeover"]);
        }
    }

    /// Every live node's `CLUSTER NODES` and the end of its log: what a failed wait shows.
    fn explain(&self) -> String {
        let mut text = String::new();
        for port in self.live_ports() {
            let view = self
                .cli(port, &["cluster", "nodes"])
                .unwrap_or_else(|| "(no answer)".to_owned());
            let log = std::fs::read_to_string(self.dir.path().join(format!("{port}.log")))
                .unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(LOG_LINES)..].join("\n");
            text.push_str(&format!(
                "\n--- node {port}: CLUSTER NODES\n{view}--- its log's last lines\n{tail}\n"
            ));
        }
        text
    }

    fn every_node_agrees(&self, count: usize) -> bool {
        self.live_ports().into_iter().all(|port| {
            self.cli(port, &["cluster", "info"]).is_some_and(|info| {
                info_field(&info, "cluster_state").as_deref() == Some("ok")
                    && info_field(&info, "cluster_known_nodes") == Some(count.to_string())
                    && info_field(&info, "cluster_slots_ok").as_deref() == Some("16384")
            })
        })
    }

    fn cluster_ok(&self, port: u16) -> bool {
        self.cli(port, &["cluster", "info"])
            .is_some_and(|i| info_field(&i, "cluster_state").as_deref() == Some("ok"))
    }

    fn replicas_in_sync(&self) -> bool {
        self.nodes().iter().filter(|n| !n.master).all(|n| {
            self.cli(n.port, &["info", "replication"])
                .is_some_and(|i| info_field(&i, "master_link_status").as_deref() == Some("up"))
        })
    }
}

/// Parses `CLUSTER NODES`: `id ip:port@cport[,host] flags master ping pong epoch link slots...`.
fn parse_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            let address = fields[1].split(['@', ',']).next()?;
            let port = address.rsplit_once(':')?.1.parse().ok()?;
            let flags: Vec<&str> = fields[2].split(',').collect();
            let slots = fields[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|n| (n, n)),
                })
                .collect();
            Some(ClusterNode {
                id: fields[0].to_owned(),
                port,
                master: flags.contains(&"master"),
                failing: flags.iter().any(|f| f.starts_with("fail")),
                slots,
                replica_of: (fields[3] != "-").then(|| fields[3].to_owned()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::parse_nodes;

    #[test]
    fn cluster_nodes_lines_are_parsed() {
        let text = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460\n\
b2 127.0.0.1:7001@17001,host master,fail - 0 0 2 connected 5461-10922 [5461->-c3]\n\
c3 127.0.0.1:7002@17002 slave a1 0 0 1 connected\n";
        let nodes = parse_nodes(text);
        assert_eq!(nodes.len(), 3);
        assert_eq!((nodes[0].port, nodes[0].master), (7000, true));
        assert_eq!(nodes[0].slots, vec![(0, 5460)]);
        assert!(nodes[1].failing);
        assert_eq!(nodes[1].slots, vec![(5461, 10922)]);
        assert!(!nodes[2].master && nodes[2].slots.is_empty());
    }
}
