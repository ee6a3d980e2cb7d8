//! What the harness's tests share: the `herald` binary, real server processes that die with
//! the test, and free ports.
#![allow(dead_code)] // Each test file uses a different part of this module.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The `herald` binary beside the harness's: `cargo test --workspace` builds both into one
/// target directory. Alone (`cargo test -p herald-bench`), cargo does not build it, so it is
/// built here.
pub fn herald_binary() -> PathBuf {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_herald-bench"));
    let herald = bench.with_file_name(format!("herald{}", std::env::consts::EXE_SUFFIX));
    if !herald.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "herald-cli", "--bin", "herald"]);
        if bench.parent().and_then(|d| d.file_name()) == Some("release".as_ref()) {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "cargo build -p herald-cli failed");
    }
    herald
}

/// A server process, killed when the test ends however it ends.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Server {
    pub fn pid(&self) -> String {
        self.0.id().to_string()
    }
}

/// A started `herald serve`: its process, its address and its admin listener's.
pub struct Herald {
    pub server: Server,
    pub addr: String,
    pub admin: String,
}

/// `herald serve --port 0 --config CONFIG`, once it prints its addresses (a cluster node
/// prints them once it has joined); its later output is drained so it never blocks.
pub fn start_herald(config: &Path) -> Herald {
    let mut child = Command::new(herald_binary())
        .args(["serve", "--port", "0", "--config"])
        .arg(config)
        // Its own webhook queue beside its config (in the test's temp dir), never the
        // default under the working directory, which is the source tree.
        .env("HERALD_DATA_DIR", config.with_extension("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start herald");
    let stdout = child.stdout.take().expect("stdout");
    let server = Server(child);
    let mut lines = BufReader::new(stdout).lines();
    let mut addr = None;
    let admin = loop {
        let line = lines
            .next()
            .expect("herald exited before listening")
            .expect("read stdout");
        if let Some(rest) = line.strip_prefix("admin listening on ") {
            break rest.trim().to_owned();
        }
        if let Some(rest) = line.split("listening on ").nth(1) {
            addr.get_or_insert_with(|| rest.trim().to_owned());
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Herald {
        server,
        addr: addr.expect("herald printed no address"),
        admin,
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
