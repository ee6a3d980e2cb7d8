//! A `herald serve` process in a host of the lab: its public port and admin listener on the
//! host's address, its logs kept in a file, and the signals a fault sends it.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use herald_sdk::Client;

use super::net::Host;

pub const APP_ID: &str = "1";
pub const KEY: &str = "faults-key";
pub const SECRET: &str = "faults-secret-0123456789";
pub const ADMIN_TOKEN: &str = "fault-suite-admin-token";
pub const PORT: u16 = 6001;
pub const ADMIN_PORT: u16 = 9601;

/// A node: started by [`Node::start`], killed (SIGKILL) when dropped.
pub struct Node {
    pub name: String,
    pub host: Host,
    child: Option<Child>,
    config: PathBuf,
    log: PathBuf,
    /// How many times it was started (the log file is appended to).
    starts: u32,
}

impl Node {
    /// Writes `config` (the lab adds the listeners' addresses) and starts the node; returns
    /// once it is listening.
    pub fn start(name: &str, host: &Host, config: &str) -> Node {
        let dir = std::env::temp_dir().join(format!(
            "herald-faults-{}-{}-{name}",
            std::process::id(),
            host.netns
        ));
        std::fs::create_dir_all(&dir).expect("node directory");
        let config_path = dir.join("herald.toml");
        let full = format!(
            "host = \"{ip}\"\nport = {PORT}\nadmin_host = \"{ip}\"\nadmin_port = {ADMIN_PORT}\n\
             admin_token = \"{ADMIN_TOKEN}\"\n{config}",
            ip = host.ip
        );
        std::fs::write(&config_path, full).expect("write the node's config");
        let mut node = Node {
            name: name.to_owned(),
            host: host.clone(),
            child: None,
            config: config_path,
            log: dir.join("herald.log"),
            starts: 0,
        };
        node.launch();
        node
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the node's log");
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.host.netns,
                env!("CARGO_BIN_EXE_herald"),
            ])
            .args(["serve", "--config"])
            .arg(&self.config)
            // Its own webhook queue, kept across its restarts like a real node's.
            .env("HERALD_DATA_DIR", self.config.with_extension("data"))
            // HERALD_FAULTS_LOG sets the nodes' RUST_LOG (default info) to look into a run.
            .env(
                "RUST_LOG",
                std::env::var("HERALD_FAULTS_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start herald in its namespace");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.starts_with("admin listening on ") => break,
                Some(Ok(_)) => continue,
                _ => panic!(
                    "node {} exited before listening: {}",
                    self.name,
                    self.log_text()
                ),
            }
        }
        std::thread::spawn(move || for _ in lines {});
        self.child = Some(child);
        self.starts += 1;
    }

    /// The node's log so far, every start included.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn ws_addr(&self) -> String {
        format!("{}:{PORT}", self.host.ip)
    }

    fn admin_url(&self, path: &str) -> String {
        format!("http://{}:{ADMIN_PORT}{path}", self.host.ip)
    }

    /// An SDK client of the app, through this node's HTTP API.
    pub fn api(&self) -> Client {
        Client::builder(APP_ID, KEY, SECRET)
            .host(self.host.ip.to_string())
            .port(PORT)
            .tls(false)
            .timeout(Duration::from_secs(5))
            .build()
            .expect("an SDK client")
    }

    /// The sum of every series of the metric `name` on `/metrics`, or `None` if the node
    /// does not answer.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = reqwest::Client::new()
            .get(self.admin_url("/metrics"))
            .bearer_auth(ADMIN_TOKEN)
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        Some(
            text.lines()
                .filter(|l| {
                    l.strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with([' ', '{']))
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum(),
        )
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit; returns how long it took, or `None` if the node
    /// was still running after `limit` (it is then killed).
    pub fn terminate(&mut self, limit: Duration) -> Option<Duration> {
        let mut child = self.child.take()?;
        let start = Instant::now();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        while start.elapsed() < limit {
            if let Ok(Some(_)) = child.try_wait() {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Starts the node again with the same config, on the same address.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(self.config.parent().expect("node dir"));
        }
    }
}
