//! `fanout` against two real `herald serve` nodes sharing a real `redis-server`, laid out as
//! bench/cluster_scale.sh's `spread` scenario: each node holds half the subscribers and is
//! published to only for them (`--subscribe-to`, `--publish-to`), and the report's `window`
//! gives each node's CPU and deliveries and Redis's CPU. The nodes' own counters
//! (/metrics) say where the events were published and delivered.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use support::{free_port, start_herald, Server};

fn start_redis() -> (Server, u16) {
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("start redis-server (Debian: redis-server)");
    let redis = Server(child);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pong = TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
            s.write_all(b"PING\r\n")?;
            let mut buf = [0u8; 7];
            s.read_exact(&mut buf)?;
            Ok(buf)
        });
        if matches!(pong, Ok(b) if &b == b"+PONG\r\n") {
            return (redis, port);
        }
        assert!(Instant::now() < deadline, "redis-server did not answer");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The sum of a counter's series in a node's /metrics.
fn counter(admin: &str, name: &str) -> u64 {
    let mut s = TcpStream::connect(admin).expect("connect to the admin listener");
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read /metrics");
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[test]
fn each_node_is_published_to_for_its_own_subscribers_and_measured_apart() {
    let (redis, port) = start_redis();
    let dir = std::env::temp_dir().join(format!("herald-cluster-fanout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("node.toml");
    std::fs::write(
        &config,
        format!(
            "adapter = \"redis\"\nredis_url = \"redis://127.0.0.1:{port}/0\"\nadmin_port = 0\n"
        ),
    )
    .expect("write config");
    let (a, b) = (start_herald(&config), start_herald(&config));
    let both = format!("{},{}", a.addr, b.addr);

    // 20 subscribers on 20 channels at 100 events/s: one second of warm-up, two measured.
    let out = Command::new(env!("CARGO_BIN_EXE_herald-bench"))
        .args([
            "--addr",
            &a.addr,
            "--pid",
            &format!("{},{}", a.server.pid(), b.server.pid()),
        ])
        .args([
            "fanout",
            "--subscribers",
            "20",
            "--channels",
            "20",
            "--rate",
            "100",
        ])
        .args(["--seconds", "2", "--warmup", "1", "--payload", "50"])
        .args(["--subscribe-to", &both, "--publish-to", &both])
        .args(["--redis-pid", &redis.pid()])
        .output()
        .expect("run herald-bench");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "herald-bench fanout failed: {stderr}");
    let r: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));

    assert_eq!(r["events_sent"], 300, "{r}");
    assert_eq!(r["deliveries"], 300, "{r}");
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["publish_to"].as_array().map(Vec::len), Some(2), "{r}");
    // Channel c is published to node c mod 2, where its one subscriber (number c) is.
    for node in [&a, &b] {
        assert_eq!(
            counter(&node.admin, "herald_events_published_total"),
            150,
            "{r}"
        );
        assert_eq!(counter(&node.admin, "herald_deliveries_total"), 150, "{r}");
    }
    let w = &r["window"];
    let by_node: Vec<u64> = w["deliveries_by_node"]
        .as_array()
        .expect("deliveries_by_node")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(by_node.len(), 2, "{w}");
    assert!(by_node.iter().all(|&d| d > 50), "{w}");
    assert_eq!(
        by_node.iter().sum::<u64>(),
        w["deliveries"].as_u64().unwrap_or(0),
        "{w}"
    );
    // The window is the two seconds after the warm-up, not the whole run.
    let events = w["events_sent"].as_u64().unwrap_or(0);
    assert!((150..=250).contains(&events), "{w}");
    let cpu = w["server_cpu_s_by_pid"].as_array().expect("cpu by pid");
    assert_eq!(cpu.len(), 2, "{w}");
    assert!(
        cpu.iter().all(|c| c.as_f64().is_some_and(|c| c > 0.0)),
        "{w}"
    );
    assert!(w["redis_cpu_s"].as_f64().is_some_and(|c| c >= 0.0), "{w}");
    assert!(w["redis_cpu_us_per_event"].as_f64().is_some(), "{w}");
}
