//! One `redis-server` process, the scratch directory the fixtures keep their files in, and
//! `redis-cli` calls.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) use crate::scratch::ScratchDir;
use crate::tls::TlsFiles;

/// A free loopback port (the kernel's choice, released again for the server to bind).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Where a process runs: the address it binds and is reached at, and the network namespace
/// it runs in (none: the caller's own). A fault-injection test puts each server in a
/// namespace of its own, joined to the others by veth pairs, so a partition can cut one
/// server off; the fixture's own checks reach it from the caller's namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    ip: IpAddr,
    netns: Option<String>,
}

impl Host {
    /// 127.0.0.1 in the caller's namespace: what every fixture uses unless told otherwise.
    pub fn loopback() -> Host {
        Host {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            netns: None,
        }
    }

    /// `ip` in the network namespace `netns` (`ip netns exec`, which needs root), which the
    /// caller must be able to reach.
    pub fn in_netns(netns: &str, ip: IpAddr) -> Host {
        Host {
            ip,
            netns: Some(netns.to_owned()),
        }
    }

    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// `program` to run on this host.
    fn command(&self, program: &str) -> Command {
        match &self.netns {
            None => Command::new(program),
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns, program]);
                command
            }
        }
    }
}

/// A `redis-server` (or sentinel) process listening on `port`, killed when dropped.
pub(crate) struct Process {
    child: Option<Child>,
    pub(crate) host: Host,
    pub(crate) port: u16,
    args: Vec<String>,
    /// Set when it serves TLS only (on `port`); the fixture's `redis-cli` calls use it.
    pub(crate) tls: Option<TlsFiles>,
}

impl Process {
    /// Starts `redis-server` on `host` with `args` (which must make it listen on `port`)
    /// and waits until it accepts connections.
    pub(crate) fn start(host: &Host, port: u16, args: Vec<String>) -> Process {
        Process::start_tls(host, port, args, None)
    }

    /// [`Process::start`] for a process that serves TLS only on `port` when `tls` is given
    /// (`args` are then those of a plain one: [`with_tls`] turns them).
    pub(crate) fn start_tls(
        host: &Host,
        port: u16,
        args: Vec<String>,
        tls: Option<&TlsFiles>,
    ) -> Process {
        let args = match tls {
            Some(tls) => with_tls(args, port, tls),
            None => args,
        };
        let mut process = Process {
            child: None,
            host: host.clone(),
            port,
            args,
            tls: tls.cloned(),
        };
        process.launch();
        process
    }

    /// `redis-cli` against this process (see [`cli_at`]).
    pub(crate) fn cli(&self, args: &[&str]) -> Option<String> {
        cli_with(self.host.ip, self.port, self.tls.as_ref(), args)
    }

    /// The process id, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn launch(&mut self) {
        // `ip netns exec` execs the program, so the child is redis-server itself and
        // signals reach it.
        let child = self
            .host
            .command("redis-server")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (is it installed? see docs/testing.md)");
        self.child = Some(child);
        wait_until(Duration::from_secs(5), "redis-server to listen", || {
            std::net::TcpStream::connect((self.host.ip, self.port)).is_ok()
        });
    }

    pub(crate) fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the process (SIGKILL: no shutdown, as a crash).
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (`-STOP`, `-CONT`, ...) to the process, if it runs.
    pub(crate) fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status()
                .expect("run kill");
            assert!(status.success(), "kill {signal} redis-server");
        }
    }

    /// Starts the process again with the same arguments.
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The common arguments of every server: its host's address only, nothing kept on disk but
/// what the mode needs, files in `dir`.
pub(crate) fn base_args(host: &Host, port: u16, dir: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--bind",
        &host.ip.to_string(),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(dir.display().to_string());
    args.push("--logfile".to_owned());
    args.push(dir.join(format!("{port}.log")).display().to_string());
    if !host.ip.is_loopback() {
        // A test network's address: protected mode would refuse every client but loopback.
        args.extend(["--protected-mode".to_owned(), "no".to_owned()]);
    }
    args
}

/// `args` of a plain server on `port` ([`base_args`] and more) turned into those of one
/// serving TLS only on `port`.
pub(crate) fn with_tls(mut args: Vec<String>, port: u16, tls: &TlsFiles) -> Vec<String> {
    let plain = args
        .iter()
        .position(|a| a == "--port")
        .expect("a server's arguments name its port");
    args.drain(plain..plain + 2);
    args.extend(tls.server_args(port));
    args
}

/// Runs `redis-cli -h 127.0.0.1 -p port args...` and returns its output, or `None` if it
/// failed (the server is down, or answered an error).
pub fn cli(port: u16, args: &[&str]) -> Option<String> {
    cli_at(IpAddr::V4(Ipv4Addr::LOCALHOST), port, args)
}

/// [`cli`] against the server at `ip:port`.
pub fn cli_at(ip: IpAddr, port: u16, args: &[&str]) -> Option<String> {
    cli_with(ip, port, None, args)
}

/// [`cli_at`] over TLS when `tls` is given.
pub(crate) fn cli_with(
    ip: IpAddr,
    port: u16,
    tls: Option<&TlsFiles>,
    args: &[&str],
) -> Option<String> {
    let output = Command::new("redis-cli")
        .args(["-h", &ip.to_string(), "-p", &port.to_string()])
        .args(tls.map(TlsFiles::cli_args).unwrap_or_default())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli (is it installed?)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() || text.starts_with("ERR") || text.starts_with("Could not") {
        return None;
    }
    Some(text)
}

/// The value of `field` in an INFO-style answer (`field:value` lines).
pub(crate) fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines()
        .find_map(|line| line.trim().strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}

/// Polls `done` every 50 ms until it holds; panics naming `what` after `limit`.
pub(crate) fn wait_until(limit: Duration, what: &str, done: impl FnMut() -> bool) {
    wait_or_explain(limit, what, done, String::new);
}

/// [`wait_until`] whose panic message ends with `explain()`: what the servers said, so
/// that a wait that failed once in CI says why.
pub(crate) fn wait_or_explain(
    limit: Duration,
    what: &str,
    mut done: impl FnMut() -> bool,
    explain: impl FnOnce() -> String,
) {
    let start = Instant::now();
    while !done() {
        if start.elapsed() >= limit {
            panic!(
                "redis-fixture: gave up after {limit:?} waiting for {what}{}",
                explain()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
