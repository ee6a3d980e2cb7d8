//! Measures the server memory an idle WebSocket connection costs.
//!
//! Starts `herald serve` (the release binary next to this example), opens connections in
//! steps, and reports the server's resident memory against its fresh baseline and the
//! marginal cost per connection between steps (which excludes one-off pools).
//!
//! ```sh
//! cargo build --release -p herald-cli --bin herald --example idle_memory
//! target/release/examples/idle_memory 5000 10000
//! ```
//!
//! Linux only (reads /proc). Client sockets use many 127.0.x.y source addresses so a run
//! is not limited by one address's ephemeral ports.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const REQUEST: &[u8] = b"GET /app/app-key?protocol=7 HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn open(port: u16, i: usize) -> std::io::Result<TcpStream> {
    let source = Ipv4Addr::new(127, 1 + (i % 200) as u8, (i / 200 % 250) as u8 + 1, 1);
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    let mut stream = socket
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await?;
    stream.write_all(REQUEST).await?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.windows(22).any(|w| w == b"connection_established") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        seen.extend_from_slice(&buf[..n]);
    }
    Ok(stream)
}

#[tokio::main]
async fn main() {
    let steps: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let steps = if steps.is_empty() {
        vec![5000, 10000]
    } else {
        steps
    };
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let exe = std::env::current_exe().expect("own path");
    let herald = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("herald"))
        .expect("release directory");
    let mut server = Server(
        Command::new(&herald)
            .args(["serve", "--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", herald.display())),
    );
    let pid = server.0.id();
    let mut lines = BufReader::new(server.0.stdout.take().expect("stdout")).lines();
    let port: u16 = loop {
        let line = lines.next().expect("server output").expect("line");
        if let Some(addr) = line.split("listening on ").nth(1) {
            break addr
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .expect("port");
        }
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let baseline = rss_kib(pid);
    println!("server pid {pid}, baseline {baseline} KiB");
    let mut held = Vec::new();
    let mut previous: Option<(usize, u64)> = None;
    'steps: for &target in &steps {
        while held.len() < target {
            let batch: Vec<_> = (held.len()..target.min(held.len() + 200))
                .map(|i| tokio::spawn(open(port, i)))
                .collect();
            for task in batch {
                match task.await.expect("task") {
                    Ok(conn) => held.push(conn),
                    // Past the server's connection bound (or the descriptor cap) the
                    // server refuses: report what was held rather than measure a step short.
                    Err(e) => {
                        println!("stopped at {} connections: {e}", held.len());
                        break 'steps;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = rss_kib(pid);
        let per = (rss - baseline) as f64 * 1024.0 / target as f64;
        let marginal = previous
            .map(|(n, r)| {
                format!(
                    ", marginal {:.0} B/connection",
                    (rss - r) as f64 * 1024.0 / (target - n) as f64
                )
            })
            .unwrap_or_default();
        println!(
            "{target} idle connections: {rss} KiB, {per:.0} B/connection over baseline{marginal}"
        );
        previous = Some((target, rss));
    }
}

/// The measured server, stopped however the measurement ends (a panic included).
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
