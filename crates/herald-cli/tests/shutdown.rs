//! SIGTERM against the real binary: the process ends within `shutdown_grace` plus
//! `webhook_flush_timeout` whatever is connected (a console stream, kept-alive HTTP
//! connections, clients that stopped reading, a webhook receiver that never answers), and
//! the webhooks the drain itself produces reach a receiver that answers, in order.
mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use support::wait::eventually;
use support::{sink, sink_answering, RawWs, Server, Sink, KEY, SECRET};

/// The drain's bound in these tests (seconds): low, to keep them fast.
const GRACE: u64 = 2;
/// The webhook flush's bound (seconds).
const FLUSH: u64 = 2;

/// How long SIGTERM may take: the drain, the flush and a margin for a loaded machine.
fn bound() -> Duration {
    Duration::from_secs(GRACE + FLUSH) + Duration::from_millis(1500)
}

/// A config with app 1 and one webhook endpoint at `url` for `events`; `extra` goes first.
fn config(extra: &str, url: &str, events: &[&str]) -> String {
    format!(
        "shutdown_grace = {GRACE}\nwebhook_flush_timeout = {FLUSH}\n{extra}\n\
         [[apps]]\nid = \"1\"\nkey = \"{KEY}\"\nsecret = \"{SECRET}\"\n\
         [[apps.webhooks]]\nurl = \"{url}\"\nevent_types = {}\n",
        serde_json::to_string(events).expect("names")
    )
}

/// How long a test waits for what the node does before SIGTERM.
const SEEN: Duration = Duration::from_secs(5);

/// Every event the sink was sent, in the order the requests arrived (a retried batch
/// appears once per attempt).
fn events(hook: &Sink) -> Vec<Value> {
    hook.bodies
        .lock()
        .expect("lock")
        .iter()
        .flat_map(|b| b["events"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn position(events: &[Value], name: &str) -> Option<usize> {
    events.iter().position(|e| e["name"] == name)
}

/// SIGTERM, then the process must have exited 0 within [`bound`].
async fn terminate(server: &mut Server) -> Duration {
    let (status, took) = server.terminate(bound()).await;
    let status = status.unwrap_or_else(|| panic!("still running {took:?} after SIGTERM"));
    assert!(status.success(), "exit status {status}");
    took
}

/// Keeps reading a `/console/api/events` stream; yields whether the server ended it
/// (a complete chunked body) rather than cutting it.
fn console_stream(server: &Server) -> tokio::task::JoinHandle<bool> {
    let url = format!("http://{}/console/api/events", server.admin);
    tokio::spawn(async move {
        let mut response = reqwest::get(url).await.expect("console stream");
        assert_eq!(response.status(), 200);
        loop {
            match response.chunk().await {
                Ok(Some(_)) => continue,
                Ok(None) => return true,
                Err(_) => return false,
            }
        }
    })
}

#[tokio::test]
async fn sigterm_with_a_console_stream_open_exits_within_the_bounds() {
    let hook = sink("200 OK", Duration::ZERO, String::new()).await;
    let pid_file = std::env::temp_dir().join(format!("herald-shutdown-{}.pid", std::process::id()));
    let mut server = Server::start_logged_with_args(
        &config("", &hook.url, &["channel_occupied"]),
        &["--pid-file", pid_file.to_str().expect("utf-8 path")],
    );
    assert!(pid_file.exists(), "pid file written");
    let console = console_stream(&server);
    // Kept-alive connections on both listeners, idle between requests.
    let client = reqwest::Client::new();
    for url in [format!("http://{}/ready", server.admin), server.http("/up")] {
        let answer = client.get(url).send().await.expect("request");
        assert_eq!(answer.status(), 200);
    }
    let took = terminate(&mut server).await;
    assert!(
        console.await.expect("console reader"),
        "the console stream is ended by the server, not cut"
    );
    assert!(
        !pid_file.exists(),
        "the pid file is removed on a clean exit"
    );
    eprintln!("exited {took:?} after SIGTERM");
}

#[tokio::test]
async fn sigterm_sends_the_drains_channel_vacated_after_channel_occupied() {
    let hook = sink("200 OK", Duration::ZERO, String::new()).await;
    // A hold-back far beyond the bounds: shutdown must release it, not wait it out.
    let mut server = Server::start_logged(
        &config(
            "webhook_vacated_delay_ms = 60000",
            &hook.url,
            &["channel_occupied", "channel_vacated"],
        ),
        &[],
    );
    let mut ws = server.connect(KEY).await;
    ws.subscribe("news").await;
    eventually("channel_occupied reaches the sink", SEEN, async || {
        position(&events(&hook), "channel_occupied").is_some()
    })
    .await;
    let closed = tokio::spawn(async move { ws.expect_close().await });
    terminate(&mut server).await;
    assert_eq!(closed.await.expect("client"), 4200);
    let seen = events(&hook);
    let occupied = position(&seen, "channel_occupied").expect("occupied");
    let vacated = position(&seen, "channel_vacated")
        .unwrap_or_else(|| panic!("no channel_vacated before exit: {seen:?}"));
    assert!(occupied < vacated, "occupied before vacated: {seen:?}");
    assert_eq!(seen[vacated]["channel"], "news");
}

#[tokio::test]
async fn sigterm_sends_the_drains_member_removed() {
    let hook = sink("200 OK", Duration::ZERO, String::new()).await;
    let mut server = Server::start_logged(
        &config("", &hook.url, &["member_added", "member_removed"]),
        &[],
    );
    let mut ws = server.connect(KEY).await;
    let reply = ws
        .subscribe_private("presence-room", Some(r#"{"user_id":"7"}"#))
        .await;
    assert_eq!(
        reply["event"], "pusher_internal:subscription_succeeded",
        "{reply}"
    );
    eventually("member_added reaches the sink", SEEN, async || {
        position(&events(&hook), "member_added").is_some()
    })
    .await;
    let closed = tokio::spawn(async move { ws.expect_close().await });
    terminate(&mut server).await;
    assert_eq!(closed.await.expect("client"), 4200);
    let seen = events(&hook);
    let removed = position(&seen, "member_removed")
        .unwrap_or_else(|| panic!("no member_removed before exit: {seen:?}"));
    assert!(position(&seen, "member_added") < Some(removed), "{seen:?}");
    assert_eq!(
        (&seen[removed]["channel"], &seen[removed]["user_id"]),
        (&json!("presence-room"), &json!("7"))
    );
}

#[tokio::test]
async fn sigterm_under_load_with_a_console_tab_a_stalled_receiver_and_presence_members() {
    // Accepts every delivery and never answers.
    let stalled = sink("200 OK", Duration::from_secs(3600), String::new()).await;
    let mut server = Server::start_logged(&config("log_format = \"json\"", &stalled.url, &[]), &[]);
    let console = console_stream(&server);
    // Members read all along (their Close is answered).
    let mut members = Vec::new();
    for user in 0..5 {
        let mut ws = server.connect(KEY).await;
        let data = format!(r#"{{"user_id":"u{user}"}}"#);
        let reply = ws.subscribe_private("presence-load", Some(&data)).await;
        assert_eq!(reply["event"], "pusher_internal:subscription_succeeded");
        members.push(tokio::spawn(async move { ws.expect_close().await }));
    }
    // A client that subscribed and then stopped reading, with a small receive buffer: what
    // it is sent backs up in the server, so its Close cannot go out.
    let mut stuck = RawWs::open(&server, &format!("/app/{KEY}?protocol=7"), Some(4096)).await;
    stuck
        .send(&support::text(
            r#"{"event":"pusher:subscribe","data":{"channel":"load","auth":""}}"#,
        ))
        .await;
    // Publishing until the server is gone.
    let publishing = Arc::new(AtomicBool::new(true));
    let published = Arc::new(AtomicUsize::new(0));
    let publisher = {
        let (publishing, published) = (publishing.clone(), published.clone());
        let addr = server.addr.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let data = "x".repeat(8000);
            while publishing.load(Ordering::Relaxed) {
                let answered = published.load(Ordering::Relaxed);
                // The stuck client gets some 240 KB, far below its outbox's bound (it would
                // be closed with 4100 before the signal otherwise); the members get the rest.
                let channels = if answered < 30 {
                    json!(["load", "presence-load"])
                } else {
                    json!(["presence-load"])
                };
                let body = json!({"name":"tick","channels":channels,"data":data}).to_string();
                let path = "/apps/1/events";
                let query = herald_protocol::signing::signed_query_string(
                    "POST",
                    path,
                    KEY,
                    SECRET,
                    support::now(),
                    Some(body.as_bytes()),
                    &[],
                );
                let sent = client
                    .post(format!("http://{addr}{path}?{query}"))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 200 => {
                        published.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
    };
    eventually(
        "the stalled receiver holds a delivery, the stuck client its share",
        SEEN,
        async || {
            stalled.requests.load(Ordering::SeqCst) > 0 && published.load(Ordering::Relaxed) > 40
        },
    )
    .await;
    let took = terminate(&mut server).await;
    publishing.store(false, Ordering::Relaxed);
    publisher.await.expect("publisher");
    for member in members {
        assert_eq!(member.await.expect("member"), 4200);
    }
    assert!(console.await.expect("console"), "console stream ended");
    let log = server.log();
    // The stalled batches stay in the node's webhook queue for its next start.
    let counts: Vec<u64> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|line| line["batches_kept"].as_u64())
        .collect();
    let [kept] = counts[..] else {
        panic!("one line with the count of batches kept, not {counts:?}:\n{log}");
    };
    assert!(kept >= 1, "the stalled batches are counted: {kept}");
    drop(stuck);
    eprintln!("exited {took:?} after SIGTERM, {kept} batches kept in the queue");
}

#[tokio::test]
async fn sigterm_gives_a_batch_in_retry_its_attempt_within_the_flush_bound() {
    let hook = sink_answering(
        vec!["500 Internal Server Error", "200 OK"],
        Duration::ZERO,
        String::new(),
    )
    .await;
    let mut server = Server::start_logged(
        &config("", &hook.url, &["channel_occupied", "channel_vacated"]),
        &[],
    );
    let mut ws = server.connect(KEY).await;
    ws.subscribe("retried").await;
    // SIGTERM right after the first attempt failed: its retry would come 1 s later.
    eventually("the first attempt fails", SEEN, async || {
        hook.requests.load(Ordering::SeqCst) >= 1
    })
    .await;
    let closed = tokio::spawn(async move { ws.expect_close().await });
    terminate(&mut server).await;
    assert_eq!(closed.await.expect("client"), 4200);
    let seen = events(&hook);
    let occupied: Vec<usize> = (0..seen.len())
        .filter(|&i| seen[i]["name"] == "channel_occupied")
        .collect();
    assert_eq!(
        occupied.len(),
        2,
        "the failed batch is attempted again before exit: {seen:?}"
    );
    let vacated = position(&seen, "channel_vacated")
        .unwrap_or_else(|| panic!("no channel_vacated: {seen:?}"));
    assert!(
        occupied[1] < vacated,
        "vacated waits for the occupied in retry: {seen:?}"
    );
}
