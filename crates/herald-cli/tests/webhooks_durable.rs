//! The durable webhook queue against the real binary and a real receiver (issue 25): a node
//! killed with SIGKILL during a receiver outage sends every batch once started again, with
//! the same id and body when one is repeated; a batch failing past `webhook_retry_period`
//! is a dead letter, still there after a restart and not sent again; the order per channel
//! holds across a retry.
mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::receiver::{
    assert_occupied_before_vacated, assert_signed_and_identified, first_names, Got, Receiver,
};
use support::wait::{eventually, metric};
use support::{Server, KEY, SECRET};

fn config(port: u16, events: &[&str], extra: &str) -> String {
    format!(
        "{extra}\n[[apps]]\nid = \"1\"\nkey = \"{KEY}\"\nsecret = \"{SECRET}\"\n\
         [[apps.webhooks]]\nurl = \"http://127.0.0.1:{port}/hook\"\nevent_types = {}\n",
        serde_json::to_string(events).expect("names")
    )
}

/// A fresh data directory, removed when dropped.
struct DataDir(std::path::PathBuf);

impl DataDir {
    fn new(what: &str) -> DataDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        DataDir(std::env::temp_dir().join(format!("herald-{what}-{}-{nanos}", std::process::id())))
    }

    fn env(&self) -> (&'static str, &str) {
        ("HERALD_DATA_DIR", self.0.to_str().expect("a UTF-8 path"))
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A gauge or counter of app 1 from `/metrics`.
async fn gauge(server: &Server, name: &str) -> f64 {
    let key = format!("{name}{{app=\"1\"}}");
    metric(server, &key)
        .await
        .unwrap_or_else(|| panic!("no {key} in /metrics"))
}

#[tokio::test]
async fn a_node_killed_during_a_receiver_outage_sends_every_batch_after_its_restart() {
    let port = support::db::free_port();
    let dir = DataDir::new("durable-kill");
    let config = config(
        port,
        &["channel_occupied", "channel_vacated"],
        "webhook_vacated_delay_ms = 0",
    );
    let mut server = Server::start_logged(&config, &[dir.env()]);
    let mut ws = server.connect(KEY).await;
    let channels: Vec<String> = (0..4).map(|i| format!("room-{i}")).collect();
    let channels = &channels;
    for channel in channels {
        ws.subscribe(channel).await;
        // Past the 250 ms batch window: a batch each.
        tokio::time::sleep(Duration::from_millis(300)).await;
        ws.send(json!({"event":"pusher:unsubscribe","data":{"channel":channel}}))
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eventually(
        "every batch is in the queue",
        Duration::from_secs(5),
        async || gauge(&server, "herald_webhook_queue_depth").await >= 2.0 * channels.len() as f64,
    )
    .await;
    server.child.kill().expect("SIGKILL");
    server.child.wait().expect("reap");
    drop(ws);

    let receiver = Receiver::up(port, vec!["200 OK"]).await;
    let server = Server::start_logged(&config, &[dir.env()]);
    eventually(
        "every channel reported",
        Duration::from_secs(20),
        async || {
            let events: Vec<Value> = receiver.got().iter().flat_map(Got::events).collect();
            channels.iter().all(|c| {
                events
                    .iter()
                    .any(|e| e["channel"] == c.as_str() && e["name"] == "channel_vacated")
            })
        },
    )
    .await;
    let got = receiver.got();
    assert_signed_and_identified(&got);
    // Per channel, the order holds across the restart: occupied, then vacated.
    assert_occupied_before_vacated(&got, channels);
    eventually("the queue is empty", Duration::from_secs(5), async || {
        gauge(&server, "herald_webhook_queue_depth").await == 0.0
    })
    .await;
    eprintln!(
        "{} batches, {} requests after the restart",
        2 * channels.len(),
        got.len()
    );
}

#[tokio::test]
async fn a_batch_failing_past_the_retry_period_is_a_dead_letter_kept_across_a_restart() {
    let port = support::db::free_port();
    let dir = DataDir::new("durable-dead");
    let config = config(port, &["channel_occupied"], "webhook_retry_period = 2");
    let mut server = Server::start_logged(&config, &[dir.env()]);
    let mut ws = server.connect(KEY).await;
    ws.subscribe("doomed").await;
    eventually("a dead letter", Duration::from_secs(10), async || {
        gauge(&server, "herald_webhook_dead_letters").await == 1.0
    })
    .await;
    assert_eq!(gauge(&server, "herald_webhook_queue_depth").await, 0.0);
    assert!(
        server.log().contains("dead letter after retrying"),
        "{}",
        server.log()
    );
    drop(ws);
    server.child.kill().expect("SIGKILL");
    server.child.wait().expect("reap");

    // Started again with the receiver up: the dead letter is still there, not sent.
    let receiver = Receiver::up(port, vec!["200 OK"]).await;
    let server = Server::start_logged(&config, &[dir.env()]);
    assert_eq!(gauge(&server, "herald_webhook_dead_letters").await, 1.0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(receiver.got().is_empty(), "{:?}", receiver.got());
    assert_eq!(gauge(&server, "herald_webhook_dead_letters").await, 1.0);
}

#[tokio::test]
async fn a_later_batch_on_a_channel_waits_for_the_earlier_ones_retry() {
    let port = support::db::free_port();
    let dir = DataDir::new("durable-order");
    let receiver = Receiver::up(port, vec!["500 Internal Server Error", "200 OK"]).await;
    let server = Server::start_logged(
        &config(
            port,
            &["channel_occupied", "channel_vacated"],
            "webhook_vacated_delay_ms = 0",
        ),
        &[dir.env()],
    );
    let mut ws = server.connect(KEY).await;
    ws.subscribe("ordered").await;
    eventually(
        "the first attempt failed",
        Duration::from_secs(5),
        async || !receiver.got().is_empty(),
    )
    .await;
    ws.send(json!({"event":"pusher:unsubscribe","data":{"channel":"ordered"}}))
        .await;
    eventually("both delivered", Duration::from_secs(10), async || {
        receiver.got().len() >= 3
    })
    .await;
    let got = receiver.got();
    assert_eq!(
        first_names(&got),
        [
            ("channel_occupied".to_owned(), "500 Internal Server Error"),
            ("channel_occupied".to_owned(), "200 OK"),
            ("channel_vacated".to_owned(), "200 OK"),
        ],
        "the vacated batch waited for the occupied one's retry"
    );
    assert_eq!(got[0].id, got[1].id, "a retry carries the same id");
    assert_ne!(got[1].id, got[2].id);
    assert_signed_and_identified(&got);
}

#[tokio::test]
async fn sigterm_during_a_receiver_outage_keeps_the_batches_for_the_next_start() {
    let port = support::db::free_port();
    let dir = DataDir::new("durable-term");
    let config = config(
        port,
        &["channel_occupied"],
        "shutdown_grace = 1\nwebhook_flush_timeout = 1",
    );
    let mut server = Server::start_logged(&config, &[dir.env()]);
    let mut ws = server.connect(KEY).await;
    ws.subscribe("kept").await;
    eventually(
        "the batch is in the queue",
        Duration::from_secs(5),
        async || gauge(&server, "herald_webhook_queue_depth").await == 1.0,
    )
    .await;
    let (status, _) = server.terminate(Duration::from_secs(10)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "a clean exit: {status:?}"
    );
    assert!(server.log().contains("batches_kept"), "{}", server.log());

    let receiver = Receiver::up(port, vec!["200 OK"]).await;
    let _server = Server::start_logged(&config, &[dir.env()]);
    eventually(
        "the kept batch delivered",
        Duration::from_secs(10),
        async || !receiver.got().is_empty(),
    )
    .await;
    let got = receiver.got();
    assert_eq!(got[0].events()[0]["channel"], "kept");
    assert_signed_and_identified(&got);
}

#[test]
fn a_data_dir_that_cannot_be_used_stops_the_start_naming_it() {
    let dir = DataDir::new("durable-locked");
    let config = config(support::db::free_port(), &["channel_occupied"], "");
    let _first = Server::start_logged(&config, &[dir.env()]);
    let path = std::env::temp_dir().join(format!("herald-locked-{}.toml", std::process::id()));
    std::fs::write(&path, &config).expect("write config");
    let second = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--port", "0", "--config"])
        .arg(&path)
        .env(dir.env().0, dir.env().1)
        .output()
        .expect("run herald serve");
    let _ = std::fs::remove_file(&path);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("data_dir") && stderr.contains("in use by another herald process"),
        "{stderr}"
    );
}
