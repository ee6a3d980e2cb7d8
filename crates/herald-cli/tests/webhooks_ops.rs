//! The webhook queue's operators' tools against the real binary and a real receiver
//! (issue 25): a batch failing past a shortened `webhook_retry_period` is listed as a dead
//! letter by `herald webhooks list`, shown with its body and error, delivered by `retry`
//! with the same `X-Herald-Webhook-Id`, and removed by `purge`; the attempts are counted by
//! status class; and under a storm of occupied/vacated webhooks with the receiver down the
//! queue stays within `webhook_max_stored_bytes`, the drops are counted and triggers are not
//! slowed.
mod support;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{Server, KEY, UNTHROTTLED};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const TOKEN: &str = "ops-test-admin-token-0123";

/// A receiver answering 200 to every request, keeping each one's `X-Herald-Webhook-Id`
/// and body; stopped when dropped.
struct Sink {
    got: Arc<Mutex<Vec<(String, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Sink {
    async fn up(port: u16) -> Sink {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        let got = Arc::new(Mutex::new(Vec::new()));
        let kept = got.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let kept = kept.clone();
                tokio::spawn(async move {
                    let mut stream = BufReader::new(stream);
                    let (mut id, mut len) = (String::new(), 0usize);
                    loop {
                        let mut line = String::new();
                        if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let line = line.trim_end();
                        if line.is_empty() {
                            break;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("x-herald-webhook-id:") {
                            id = v.trim().to_owned();
                        } else if let Some(v) = lower.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; len];
                    if stream.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    kept.lock()
                        .expect("lock")
                        .push((id, String::from_utf8_lossy(&body).into_owned()));
                    let _ = stream
                        .get_mut()
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                });
            }
        });
        Sink { got, task }
    }

    fn got(&self) -> Vec<(String, String)> {
        self.got.lock().expect("lock").clone()
    }
}

fn config(port: u16, extra: &str) -> String {
    format!(
        "admin_token = \"{TOKEN}\"\n{extra}\n[[apps]]\nid = \"1\"\nkey = \"{KEY}\"\nsecret = \"{}\"\n\
         [[apps.webhooks]]\nurl = \"http://127.0.0.1:{port}/hook\"\n\
         event_types = [\"channel_occupied\", \"channel_vacated\"]\n",
        support::SECRET
    )
}

/// `herald webhooks ARGS` against `server`'s admin listener: exit code, stdout, stderr.
fn herald(server: &Server, args: &[&str], token: Option<&str>) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command
        .arg("webhooks")
        .args(args)
        .env("HERALD_ADMIN_URL", format!("http://{}", server.admin))
        .env_remove("HERALD_ADMIN_TOKEN");
    if let Some(token) = token {
        command.env("HERALD_ADMIN_TOKEN", token);
    }
    let out = command.output().expect("run herald webhooks");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `herald webhooks ARGS --json`, which must succeed.
fn herald_json(server: &Server, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let (code, out, err) = herald(server, &args, Some(TOKEN));
    assert_eq!(code, 0, "herald webhooks {args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn ids(page: &Value) -> Vec<String> {
    page["batches"]
        .as_array()
        .expect("batches")
        .iter()
        .map(|b| b["id"].as_str().expect("an id").to_owned())
        .collect()
}

/// A series of app 1 from `/metrics` (`labels` inside the braces after `app="1"`).
async fn metric(server: &Server, name: &str, labels: &str) -> f64 {
    let text = reqwest::Client::new()
        .get(format!("http://{}/metrics", server.admin))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    let key = format!("{name}{{app=\"1\"{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in:\n{text}"))
}

/// Polls `check` every 50 ms until it holds, for up to `within`.
async fn until(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_listed_shown_retried_with_its_id_and_purged() {
    let started = Instant::now();
    let port = support::db::free_port();
    let server = Server::start_logged(&config(port, "webhook_retry_period = 1"), &[]);
    let mut ws = server.connect(KEY).await;
    ws.subscribe("doomed-a").await;
    // Past the 250 ms batch window: a batch of its own.
    tokio::time::sleep(Duration::from_millis(300)).await;
    ws.subscribe("doomed-b").await;
    let dead = ["list", "--app", "1", "--state", "dead"];
    until("two dead letters", Duration::from_secs(10), || {
        ids(&herald_json(&server, &dead)).len() == 2
    })
    .await;
    let page = herald_json(&server, &dead);
    let dead_ids = ids(&page);
    assert!(
        page["batches"][0]["last_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{page}"
    );
    assert!(
        herald_json(&server, &["list", "--app", "1", "--state", "pending"])["batches"]
            .as_array()
            .is_some_and(Vec::is_empty)
    );
    // A page at a time, with the cursor of the next.
    let first = herald_json(&server, &["list", "--app", "1", "--limit", "1"]);
    assert_eq!(ids(&first), dead_ids[..1]);
    let next = first["next"].as_str().expect("a cursor");
    let second = herald_json(&server, &["list", "--app", "1", "--after", next]);
    assert_eq!(ids(&second), dead_ids[1..]);

    let shown = herald_json(&server, &["show", "--app", "1", &dead_ids[0]]);
    assert_eq!(shown["state"], "dead");
    let body: Value = serde_json::from_str(shown["body"].as_str().expect("body")).expect("JSON");
    assert_eq!(body["events"][0]["name"], "channel_occupied");
    let (code, readable, _) = herald(&server, &["show", "--app", "1", &dead_ids[0]], Some(TOKEN));
    assert_eq!(code, 0);
    assert!(readable.contains("dead letter since"), "{readable}");

    // Every failure is one line, exit 1: no token, an unknown batch, a pending batch
    // retried, an unknown app, and a node that is not there.
    let (code, _, err) = herald(&server, &["list", "--app", "1"], None);
    assert_eq!((code, err.lines().count()), (1, 1), "{err}");
    assert!(err.contains("401"), "{err}");
    for args in [
        &["show", "--app", "1", "12345"][..],
        &["retry", "--app", "1", "12345"],
        &["list", "--app", "nope"],
    ] {
        let (code, _, err) = herald(&server, args, Some(TOKEN));
        assert_eq!((code, err.lines().count()), (1, 1), "{args:?}: {err}");
        assert!(err.contains("404"), "{args:?}: {err}");
    }
    let (code, _, err) = herald(
        &server,
        &["list", "--app", "1", "--admin", "http://127.0.0.1:1"],
        Some(TOKEN),
    );
    assert_eq!((code, err.lines().count()), (1, 1), "{err}");

    // The console's state shows the queue; its routes take a write only with its header.
    let admin = reqwest::Client::new();
    let state: Value = admin
        .get(format!("http://{}/console/api/state", server.admin))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("state")
        .json()
        .await
        .expect("JSON");
    let queue = &state["apps"][0]["webhook_queue"];
    assert_eq!(
        (queue["dead"].as_u64(), queue["pending"].as_u64()),
        (Some(2), Some(0))
    );
    assert_eq!(queue["dead_letters"][1]["id"], dead_ids[1].as_str());
    let refused = admin
        .post(format!(
            "http://{}/console/api/webhooks/1/retry",
            server.admin
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("retry");
    assert_eq!(
        refused.status(),
        403,
        "a write without the console's header"
    );

    // The receiver is back: the retried dead letter goes at once, with its id.
    let sink = Sink::up(port).await;
    let retried = herald_json(&server, &["retry", "--app", "1", &dead_ids[0]]);
    assert_eq!(retried["retried"], json!([dead_ids[0]]));
    until(
        "the retried batch delivered",
        Duration::from_secs(5),
        || !sink.got().is_empty(),
    )
    .await;
    let got = sink.got();
    assert_eq!(got[0].0, dead_ids[0], "the same X-Herald-Webhook-Id");
    assert_eq!(
        got[0].1,
        shown["body"].as_str().expect("body"),
        "the same body"
    );
    until(
        "the delivered batch left the queue",
        Duration::from_secs(5),
        || ids(&herald_json(&server, &["list", "--app", "1"])) == dead_ids[1..],
    )
    .await;
    assert!(
        metric(
            &server,
            "herald_webhook_attempts_total",
            ",status=\"error\""
        )
        .await
            >= 2.0
    );
    assert_eq!(
        metric(&server, "herald_webhook_attempts_total", ",status=\"2xx\"").await,
        1.0
    );

    let (code, out, err) = herald(&server, &["purge", "--app", "1"], Some(TOKEN));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "purged 1");
    assert!(ids(&herald_json(&server, &["list", "--app", "1"])).is_empty());
    assert_eq!(
        metric(&server, "herald_webhook_dead_letters", "").await,
        0.0
    );
    assert_eq!(sink.got().len(), 1, "a purged dead letter is not sent");
    eprintln!("took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_byte_bound_holds_under_a_webhook_storm() {
    const BOUND: f64 = 65_536.0;
    let started = Instant::now();
    // The receiver is down throughout: every batch stays in the queue.
    let port = support::db::free_port();
    let server = Server::start_logged(
        &config(
            port,
            &format!(
                "{UNTHROTTLED}webhook_max_stored_bytes = {BOUND}\nwebhook_vacated_delay_ms = 0"
            ),
        ),
        &[],
    );
    let server = Arc::new(server);
    // Triggers before the storm, for a baseline.
    let mut baseline = Vec::new();
    for _ in 0..20 {
        let at = Instant::now();
        support::nodes::trigger(&server, "probe", "{}", None).await;
        baseline.push(at.elapsed());
    }
    // Four sockets occupy and vacate 100 channels each, as fast as they are answered.
    let mut storm = Vec::new();
    for s in 0..4 {
        let server = server.clone();
        storm.push(tokio::spawn(async move {
            let mut ws = server.connect(KEY).await;
            for c in 0..100 {
                let channel = format!("storm-{s}-{c}");
                ws.subscribe(&channel).await;
                ws.send(json!({"event":"pusher:unsubscribe","data":{"channel":channel}}))
                    .await;
            }
        }));
    }
    let mut during = Vec::new();
    let mut held_max: f64 = 0.0;
    while storm.iter().any(|t| !t.is_finished()) {
        let at = Instant::now();
        support::nodes::trigger(&server, "probe", "{}", None).await;
        during.push(at.elapsed());
        held_max = held_max.max(metric(&server, "herald_webhook_queue_bytes", "").await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for task in storm {
        task.await.expect("a storm socket");
    }
    let storm_took = started.elapsed();
    let mut drops = 0.0;
    for _ in 0..100 {
        drops = metric(&server, "herald_webhook_drops_total", "").await;
        held_max = held_max.max(metric(&server, "herald_webhook_queue_bytes", "").await);
        if drops > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        drops > 0.0,
        "batches past the bound are dropped and counted"
    );
    assert!(held_max > 0.0 && held_max <= BOUND, "held {held_max} bytes");
    // The listing sees the same bound.
    let listed = herald_json(&server, &["list", "--app", "1"]);
    let bytes: u64 = listed["batches"]
        .as_array()
        .expect("batches")
        .iter()
        .map(|b| b["bytes"].as_u64().unwrap_or(0))
        .sum();
    assert!(
        bytes > 0 && (bytes as f64) < BOUND,
        "{bytes} bytes of bodies"
    );
    baseline.sort();
    during.sort();
    let median = |v: &[Duration]| v[v.len() / 2];
    eprintln!(
        "storm: {} triggers during it, median {:?} (before: {:?}), max {:?}; held at most {held_max} bytes; {drops} drops; storm {storm_took:?}, took {:?}",
        during.len(),
        median(&during),
        median(&baseline),
        during.last(),
        started.elapsed()
    );
    // Publishing never waits on the queue: a trigger during the storm is not held up by
    // it (the sockets' own work shares the two cores, hence the slack).
    assert!(
        median(&during) < median(&baseline) * 10 + Duration::from_millis(50),
        "triggers slowed by the storm: {:?} against {:?}",
        median(&during),
        median(&baseline)
    );
}
