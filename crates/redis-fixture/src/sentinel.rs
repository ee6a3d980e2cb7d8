//! A Sentinel set-up: one master, one replica, three sentinels watching them.

use std::time::Duration;

use crate::process::{base_args, free_port, info_field, wait_until, Host, Process, ScratchDir};
use crate::tls::TlsFiles;

/// The name the sentinels monitor the master under.
const MASTER_NAME: &str = "herald-master";
/// Small enough that a failover takes a few seconds (Redis's defaults: 30 s and 3 min).
const DOWN_AFTER_MS: u64 = 1000;
const FAILOVER_TIMEOUT_MS: u64 = 3000;
const FORM_LIMIT: Duration = Duration::from_secs(30);
const FAILOVER_LIMIT: Duration = Duration::from_secs(30);

/// One master, one replica and three sentinels (quorum two), on loopback unless started on
/// other [`Host`]s, every process killed when dropped. Processes are told apart by port,
/// which is unique across the set-up.
pub struct Sentinel {
    servers: Vec<Process>,
    sentinels: Vec<Process>,
    dir: ScratchDir,
    /// The servers' TLS, and whether the sentinels serve TLS too.
    tls: Option<(TlsFiles, bool)>,
}

impl Sentinel {
    /// Starts the set-up and returns once the replica is in sync and every sentinel knows
    /// the replica and the two other sentinels (a failover needs their votes).
    pub fn start() -> Sentinel {
        Sentinel::start_on(&vec![Host::loopback(); 5])
    }

    /// [`Sentinel::start`] with the master on `hosts[0]`, the replica on `hosts[1]` and the
    /// sentinels on `hosts[2..5]`.
    pub fn start_on(hosts: &[Host]) -> Sentinel {
        Sentinel::start_inner(hosts, None)
    }

    /// [`Sentinel::start`] with the master and the replica serving TLS only, with `tls`
    /// (replication over TLS too), and the sentinels serving TLS only as well when
    /// `sentinels_tls`, plain otherwise (they reach the servers over TLS either way).
    pub fn start_tls(tls: &TlsFiles, sentinels_tls: bool) -> Sentinel {
        Sentinel::start_inner(
            &vec![Host::loopback(); 5],
            Some((tls.clone(), sentinels_tls)),
        )
    }

    fn start_inner(hosts: &[Host], tls: Option<(TlsFiles, bool)>) -> Sentinel {
        assert_eq!(hosts.len(), 5, "a master, a replica and three sentinels");
        let dir = ScratchDir::new("sentinel");
        let server_tls = tls.as_ref().map(|(files, _)| files);
        let master_port = free_port();
        let master = Process::start_tls(
            &hosts[0],
            master_port,
            base_args(&hosts[0], master_port, dir.path()),
            server_tls,
        );
        let replica_port = free_port();
        let mut replica_args = base_args(&hosts[1], replica_port, dir.path());
        replica_args.extend(
            [
                "--replicaof",
                &hosts[0].ip().to_string(),
                &master_port.to_string(),
            ]
            .map(str::to_owned),
        );
        let replica = Process::start_tls(&hosts[1], replica_port, replica_args, server_tls);
        let mut setup = Sentinel {
            servers: vec![master, replica],
            sentinels: Vec::new(),
            dir,
            tls,
        };
        for host in &hosts[2..] {
            let port = free_port();
            let sentinel = setup.start_sentinel(host, port, &hosts[0], master_port);
            setup.sentinels.push(sentinel);
        }
        wait_until(FORM_LIMIT, "the sentinels to see each other", || {
            setup.sentinel_ports().into_iter().all(|port| {
                setup
                    .cli(port, &["sentinel", "master", MASTER_NAME])
                    .is_some_and(|text| {
                        pair(&text, "num-other-sentinels").as_deref() == Some("2")
                            && pair(&text, "num-slaves").as_deref() == Some("1")
                    })
            }) && setup
                .cli(replica_port, &["info", "replication"])
                .is_some_and(|i| info_field(&i, "master_link_status").as_deref() == Some("up"))
        });
        setup
    }

    fn start_sentinel(&self, host: &Host, port: u16, master: &Host, master_port: u16) -> Process {
        // A sentinel rewrites its configuration file, so each has its own.
        let config = self.dir.path().join(format!("sentinel-{port}.conf"));
        let protected = if host.ip().is_loopback() {
            ""
        } else {
            "protected-mode no\n"
        };
        let (listen, sentinel_tls) = match &self.tls {
            None => (format!("port {port}\n"), None),
            Some((files, serve_tls)) => {
                let tls_port = serve_tls.then_some(port);
                let mut text = if *serve_tls {
                    "port 0\n".to_owned()
                } else {
                    format!("port {port}\n")
                };
                for (key, value) in files.directives(tls_port) {
                    text.push_str(&format!("{key} {value}\n"));
                }
                (text, serve_tls.then(|| files.clone()))
            }
        };
        let text = format!(
            "{listen}bind {ip}\n{protected}dir {dir}\nlogfile {dir}/sentinel-{port}.log\n\
             sentinel monitor {MASTER_NAME} {master_ip} {master_port} 2\n\
             sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n\
             sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n\
             sentinel parallel-syncs {MASTER_NAME} 1\n",
            dir = self.dir.path().display(),
            ip = host.ip(),
            master_ip = master.ip(),
        );
        std::fs::write(&config, text).expect("write a sentinel's configuration");
        let mut sentinel = Process::start(
            host,
            port,
            vec![config.display().to_string(), "--sentinel".to_owned()],
        );
        // Its configuration file has the TLS directives already; `redis-cli` needs to know.
        sentinel.tls = sentinel_tls;
        sentinel
    }

    /// The name the sentinels know the master by.
    pub fn master_name(&self) -> &str {
        MASTER_NAME
    }

    /// `redis+sentinel://host1:s1,host2:s2,host3:s3/<master name>`; over TLS
    /// `rediss+sentinel://…`, with `?sentinel_tls=false` when the sentinels are plain.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("{}:{}", s.host.ip(), s.port))
            .collect();
        let (s, query) = match &self.tls {
            None => ("", ""),
            Some((_, true)) => ("s", ""),
            Some((_, false)) => ("s", "?sentinel_tls=false"),
        };
        format!(
            "redis{s}+sentinel://{}/{MASTER_NAME}{query}",
            seeds.join(",")
        )
    }

    /// `redis-cli` against the server or sentinel on `port`.
    pub fn cli(&self, port: u16, args: &[&str]) -> Option<String> {
        let process = self
            .servers
            .iter()
            .chain(&self.sentinels)
            .find(|p| p.port == port)
            .unwrap_or_else(|| panic!("redis-fixture: no process on port {port}"));
        process.cli(args)
    }

    /// The ports of the two Redis servers (the master and the replica, in either role).
    pub fn server_ports(&self) -> Vec<u16> {
        self.servers.iter().map(|s| s.port).collect()
    }

    /// The process id of the server or sentinel on `port`, while it runs.
    pub fn pid_of(&self, port: u16) -> Option<u32> {
        self.servers
            .iter()
            .chain(&self.sentinels)
            .find(|p| p.port == port)
            .and_then(Process::pid)
    }

    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|s| s.port).collect()
    }

    /// The master's port as the first answering sentinel reports it.
    pub fn master_port(&self) -> u16 {
        for port in self.sentinel_ports() {
            if let Some(port) = self.master_of(port) {
                return port;
            }
        }
        panic!("redis-fixture: no sentinel names the master");
    }

    /// Kills (SIGKILL) the current master and returns its port; the sentinels promote the
    /// replica after `down-after-milliseconds`; see [`Sentinel::wait_for_failover`].
    pub fn kill_master(&mut self) -> u16 {
        let port = self.master_port();
        let server = self
            .servers
            .iter_mut()
            .find(|s| s.port == port)
            .expect("the master is one of the fixture's servers");
        server.kill();
        port
    }

    /// Asks a sentinel for a failover with the master still up (SENTINEL FAILOVER): the
    /// replica is promoted and the old master becomes its replica. Returns the old master's
    /// port; see [`Sentinel::wait_for_failover`].
    pub fn failover(&self) -> u16 {
        let port = self.master_port();
        let answer = self.cli(
            self.sentinel_ports()[0],
            &["sentinel", "failover", MASTER_NAME],
        );
        assert!(
            answer.is_some_and(|a| a.trim() == "OK"),
            "SENTINEL FAILOVER refused"
        );
        port
    }

    /// Waits until every sentinel names a master other than `old_port` and that server
    /// says it is a master; if the old master still runs, also until it is the new
    /// master's replica in sync, so another failover can promote it.
    pub fn wait_for_failover(&self, old_port: u16) {
        let old_alive = self
            .servers
            .iter()
            .any(|s| s.port == old_port && s.is_running());
        wait_until(
            FAILOVER_LIMIT,
            "the sentinels to promote the replica",
            || {
                let promoted = self.sentinel_ports().into_iter().all(|port| {
                    self.master_of(port).is_some_and(|master| {
                        master != old_port && self.role(master).as_deref() == Some("master")
                    })
                });
                promoted
                    && (!old_alive
                        || (self.role(old_port).as_deref() == Some("slave")
                            && self
                                .cli(old_port, &["info", "replication"])
                                .is_some_and(|i| {
                                    info_field(&i, "master_link_status").as_deref() == Some("up")
                                })))
            },
        );
    }
}

impl Sentinel {
    /// The master's port from `SENTINEL GET-MASTER-ADDR-BY-NAME` on the sentinel at `port`.
    fn master_of(&self, port: u16) -> Option<u16> {
        let text = self.cli(port, &["sentinel", "get-master-addr-by-name", MASTER_NAME])?;
        text.lines().nth(1)?.trim().parse().ok()
    }

    /// The replication role of the server on `port` (`master`, `slave`).
    fn role(&self, port: u16) -> Option<String> {
        self.cli(port, &["info", "replication"])
            .and_then(|i| info_field(&i, "role"))
    }
}

/// The value after `key` in redis-cli's one-item-per-line rendering of a flat map.
fn pair(text: &str, key: &str) -> Option<String> {
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if line == key {
            return lines.next().map(str::to_owned);
        }
    }
    None
}
