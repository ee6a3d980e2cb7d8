//! The test network: one Linux bridge in this namespace and a network namespace per host
//! (a herald node, a redis-server), each joined to the bridge by a veth pair, and the faults
//! between them as nftables rules in the hosts' own namespaces, so the machine's own rules
//! and traffic are never touched.
//!
//! The test process stays in its own namespace and reaches every host through the bridge,
//! whose address is the lab's gateway: the webhook sink and the delaying relay listen there.
//! A dropped packet is dropped silently: a cut link sends no FIN and no RST, as a partition.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Why the suite cannot run here, if it cannot: it needs root (network namespaces, veth
/// pairs, nftables) and the `ip` and `nft` programs (Debian: iproute2, nftables).
pub fn unavailable() -> Option<String> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .unwrap_or_default();
    if uid != "0" {
        return Some(format!(
            "the fault suite needs root (network namespaces, veth pairs and nftables); \
             this process runs as uid {uid}"
        ));
    }
    for (tool, package) in [("ip", "iproute2"), ("nft", "nftables")] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Some(format!(
                "the fault suite needs `{tool}` (Debian package {package})"
            ));
        }
    }
    None
}

/// Runs a command that must succeed; panics with its output otherwise.
pub fn run(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs a command whose failure does not matter (clean-up of what may be gone already).
fn try_run(program: &str, args: &[&str]) {
    let _ = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// One host of the lab: a network namespace with one interface on the bridge.
#[derive(Clone, Debug)]
pub struct Host {
    pub netns: String,
    pub ip: Ipv4Addr,
}

impl Host {
    /// Runs `nft` in this host's namespace.
    fn nft(&self, rule: &str) {
        run("ip", &["netns", "exec", &self.netns, "nft", rule]);
    }

    /// The same host as redis-fixture names it.
    pub fn fixture(&self) -> redis_fixture::Host {
        redis_fixture::Host::in_netns(&self.netns, self.ip.into())
    }
}

/// Which way a cut or a loss applies, seen from the host whose rules carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Way {
    /// Both directions.
    Both,
    /// Only what the host sends to the peer (the peer's packets still arrive).
    Out,
    /// Only what the peer sends to the host.
    In,
}

/// A bridge and its hosts; every namespace, veth and the bridge are removed when dropped
/// (after killing whatever still runs in the namespaces).
pub struct Lab {
    tag: String,
    bridge: String,
    net: [u8; 2],
    hosts: Vec<Host>,
}

impl Lab {
    /// A new lab on a /24 of its own. Panics if the suite cannot run (see [`unavailable`]).
    pub fn new() -> Lab {
        if let Some(why) = unavailable() {
            panic!("{why}");
        }
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        sweep_stale();
        // Interface names are at most 15 bytes: "hf", the pid (7 digits at most), "-", the
        // lab's number (2 digits at most), then "b" for the bridge or two digits for a veth.
        let tag = format!("hf{pid}-{}", n % 100);
        let net = [100 + (n % 150) as u8, (pid % 256) as u8];
        let lab = Lab {
            bridge: format!("{tag}b"),
            tag,
            net,
            hosts: Vec::new(),
        };
        run("ip", &["link", "add", &lab.bridge, "type", "bridge"]);
        let gateway = format!("{}/24", lab.gateway());
        run("ip", &["addr", "add", &gateway, "dev", &lab.bridge]);
        let services = format!("{}/24", lab.services());
        run("ip", &["addr", "add", &services, "dev", &lab.bridge]);
        run("ip", &["link", "set", &lab.bridge, "up"]);
        lab
    }

    /// The bridge's address, in this process's namespace: every host reaches it.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net[0], self.net[1], 1)
    }

    /// A second address of this namespace on the bridge, for what stands between hosts
    /// (the delaying relay): a fault on it leaves the clients' traffic, which comes from
    /// the gateway address, alone.
    pub fn services(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net[0], self.net[1], 254)
    }

    /// Adds a host (a namespace on the bridge) with an empty fault table.
    pub fn host(&mut self, name: &str) -> Host {
        let index = self.hosts.len() + 2;
        assert!(
            index < 250,
            "too many hosts in one lab (.254 is the services' address)"
        );
        let host = Host {
            netns: format!("{}-{name}", self.tag),
            ip: Ipv4Addr::new(10, self.net[0], self.net[1], index as u8),
        };
        let veth = format!("{}{index:02}", self.tag);
        run("ip", &["netns", "add", &host.netns]);
        run(
            "ip",
            &[
                "link",
                "add",
                &veth,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &host.netns,
            ],
        );
        run("ip", &["link", "set", &veth, "master", &self.bridge, "up"]);
        let exec = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &host.netns];
            all.extend_from_slice(args);
            run("ip", &all);
        };
        let address = format!("{}/24", host.ip);
        exec(&["ip", "addr", "add", &address, "dev", "eth0"]);
        exec(&["ip", "link", "set", "eth0", "up"]);
        exec(&["ip", "link", "set", "lo", "up"]);
        host.nft("add table inet fault");
        for (chain, hook) in [("in", "input"), ("out", "output")] {
            host.nft(&format!(
                "add chain inet fault {chain} {{ type filter hook {hook} priority 0; policy accept; }}"
            ));
        }
        self.hosts.push(host.clone());
        host
    }

    /// Drops every packet between `host` and `peer` (an address: another host or the
    /// gateway) in the ways given, silently, until [`Lab::heal`].
    pub fn cut(&self, host: &Host, peer: Ipv4Addr, way: Way) {
        self.drop_rule(host, peer, way, "");
    }

    /// Drops `percent` % of the packets between `host` and `peer`, at random, in the ways
    /// given, until [`Lab::heal`].
    pub fn lose(&self, host: &Host, peer: Ipv4Addr, way: Way, percent: u8) {
        self.drop_rule(
            host,
            peer,
            way,
            &format!("numgen random mod 100 < {percent} "),
        );
    }

    fn drop_rule(&self, host: &Host, peer: Ipv4Addr, way: Way, condition: &str) {
        if way != Way::In {
            host.nft(&format!(
                "add rule inet fault out ip daddr {peer} {condition}drop"
            ));
        }
        if way != Way::Out {
            host.nft(&format!(
                "add rule inet fault in ip saddr {peer} {condition}drop"
            ));
        }
    }

    /// Removes every fault of `host`.
    pub fn heal(&self, host: &Host) {
        host.nft("flush chain inet fault in");
        host.nft("flush chain inet fault out");
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for host in &self.hosts {
            kill_namespace(&host.netns);
        }
        try_run("ip", &["link", "del", &self.bridge]);
    }
}

/// Kills what runs in `netns` and removes it (its veth goes with it).
fn kill_namespace(netns: &str) {
    if let Ok(output) = Command::new("ip").args(["netns", "pids", netns]).output() {
        for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
            try_run("kill", &["-KILL", pid]);
        }
    }
    try_run("ip", &["netns", "del", netns]);
}

/// Removes the namespaces and bridges of labs whose test process is gone (a run that was
/// killed leaves them behind; their addresses would clash with a new lab's).
fn sweep_stale() {
    let alive = |pid: &str| std::path::Path::new(&format!("/proc/{pid}")).exists();
    let owner = |name: &str| -> Option<String> {
        let rest = name.strip_prefix("hf")?;
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        (!pid.is_empty()).then_some(pid)
    };
    if let Ok(output) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if owner(name).is_some_and(|pid| !alive(&pid)) {
                kill_namespace(name);
            }
        }
    }
    if let Ok(output) = Command::new("ip")
        .args(["-o", "link", "show", "type", "bridge"])
        .output()
    {
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let name = line.split(':').nth(1).unwrap_or_default().trim();
            if owner(name).is_some_and(|pid| !alive(&pid)) {
                try_run("ip", &["link", "del", name]);
            }
        }
    }
}
