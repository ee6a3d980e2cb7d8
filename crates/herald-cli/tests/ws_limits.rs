//! What one WebSocket client can make the server hold or send, against the real binary:
//! the subscription cap, one identity per connection, cache-miss and subscription-count
//! amplification, and the bounds on webhook deliveries. Each test ends by checking that
//! pusher-js is still served.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{json, Value};
use support::wait::{eventually, metric};
use support::{
    assert_pusher_js_served, events_named, signed, sink, Server, Ws, KEY, SECRET, UNTHROTTLED,
};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn subscribe_quietly(ws: &mut Ws, channel: &str) {
    ws.send(json!({"event":"pusher:subscribe","data":{"channel":channel,"auth":""}}))
        .await;
}

#[tokio::test]
async fn a_subscription_flood_stops_at_the_cap_and_the_socket_stays_open() {
    // The frame budget (ws_fairness.rs) would spread this flood over minutes.
    let server = Server::start(UNTHROTTLED);
    let mut ws = server.connect(KEY).await;
    // Warm the allocator with a first round, then measure a flood many times the cap.
    for i in 0..1200 {
        subscribe_quietly(&mut ws, &format!("flood-{i}")).await;
    }
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..1200 {
        let frame = ws.next().await;
        match frame["event"].as_str() {
            Some("pusher_internal:subscription_succeeded") => ok += 1,
            Some("pusher:subscription_error") => {
                assert_eq!(frame["data"]["type"], "LimitReached", "{frame}");
                assert!(
                    frame["data"]["error"]
                        .as_str()
                        .is_some_and(|e| e.contains("maximum of 1000 channels")),
                    "the error names the limit: {frame}"
                );
                refused += 1;
            }
            _ => panic!("unexpected {frame}"),
        }
    }
    assert_eq!((ok, refused), (1000, 200));
    let before = rss_kib(server.pid());
    for i in 0..20_000 {
        subscribe_quietly(&mut ws, &format!("more-{i}-{}", "x".repeat(150))).await;
        if i % 500 == 499 {
            // Read the refusals so the socket's outbox never overflows.
            for _ in 0..500 {
                ws.next().await;
            }
        }
    }
    ws.assert_alive().await;
    let grown = rss_kib(server.pid()).saturating_sub(before);
    assert!(
        grown < 4096,
        "20,000 refused subscriptions grew the server by {grown} KiB"
    );
    // Leaving one channel makes room for another.
    ws.send(json!({"event":"pusher:unsubscribe","data":{"channel":"flood-3"}}))
        .await;
    assert_eq!(
        ws.subscribe("one-more").await["event"],
        "pusher_internal:subscription_succeeded"
    );
    assert_pusher_js_served(&server);
}

#[tokio::test]
async fn the_cap_is_per_app_and_repeated_subscribes_do_not_count() {
    let server = Server::start(
        "[[apps]]\nid = \"1\"\nkey = \"app-key\"\nsecret = \"app-secret\"\nmax_subscriptions_per_connection = 3\n",
    );
    let mut ws = server.connect(KEY).await;
    for channel in ["a", "b", "c", "a", "b"] {
        assert_eq!(
            ws.subscribe(channel).await["event"],
            "pusher_internal:subscription_succeeded",
            "{channel}"
        );
    }
    let refused = ws.subscribe("d").await;
    assert_eq!(refused["event"], "pusher:subscription_error");
    assert_eq!(refused["channel"], "d");
    assert_eq!(refused["data"]["status"], 4301);
    assert_pusher_js_served(&server);
}

fn user_data(id: &str) -> String {
    json!({"id": id, "user_info": {"name": id}}).to_string()
}

async fn signin(ws: &mut Ws, id: &str) {
    let data = user_data(id);
    let auth = herald_protocol::auth::user_auth(KEY, SECRET, &ws.socket_id, &data);
    ws.send(json!({"event":"pusher:signin","data":{"auth":auth,"user_data":data}}))
        .await;
}

#[tokio::test]
async fn a_connection_keeps_one_identity() {
    let server = Server::start("");
    let mut ws = server.connect(KEY).await;
    signin(&mut ws, "alice").await;
    ws.expect("pusher:signin_success").await;
    assert_eq!(
        ws.subscribe("#server-to-user-alice").await["event"],
        "pusher_internal:subscription_succeeded"
    );
    // Signing in again as the same user is fine (pusher-js may).
    signin(&mut ws, "alice").await;
    ws.expect("pusher:signin_success").await;
    // Signing in as someone else closes the socket: nothing of alice's reaches bob.
    signin(&mut ws, "bob").await;
    let error = ws.expect("pusher:error").await;
    assert_eq!(error["data"]["code"], 4009, "{error}");
    assert_eq!(ws.expect_close().await, 4009);
    let (status, _) = signed(
        &server,
        "POST",
        "/apps/1/events",
        &[],
        Some(r##"{"name":"secret","channel":"#server-to-user-alice","data":"{}"}"##),
    )
    .await;
    assert_eq!(status, 200);
    assert_pusher_js_served(&server);
}

#[tokio::test]
async fn repeated_cache_subscribes_send_one_cache_miss() {
    let hook = sink("200 OK", Duration::ZERO, String::new()).await;
    let server = Server::start(&format!(
        "{UNTHROTTLED}[[apps]]\nid = \"1\"\nkey = \"app-key\"\nsecret = \"app-secret\"\n\
         [[apps.webhooks]]\nurl = \"{}\"\nevent_types = [\"cache_miss\"]\n",
        hook.url
    ));
    let mut ws = server.connect(KEY).await;
    for _ in 0..2000 {
        subscribe_quietly(&mut ws, "cache-x").await;
    }
    let mut misses = 0;
    // Every subscribe is confirmed; only the first is a new subscription.
    for _ in 0..2001 {
        let frame = ws.next().await;
        if frame["event"] == "pusher:cache_miss" {
            misses += 1;
        }
    }
    ws.assert_alive().await;
    assert_eq!(misses, 1, "one cache_miss frame for one subscription");
    // A miss on another channel, after them: batches go out in order, so once its webhook
    // is in, any second miss for cache-x would be too.
    ws.subscribe("cache-marker").await;
    let missed = |channel: &str| {
        hook.bodies
            .lock()
            .expect("lock")
            .iter()
            .flat_map(|b| b["events"].as_array().cloned().unwrap_or_default())
            .filter(|e| e["name"] == "cache_miss" && e["channel"] == channel)
            .count()
    };
    eventually(
        "the marker's cache_miss webhook",
        Duration::from_secs(10),
        async || missed("cache-marker") == 1,
    )
    .await;
    assert_eq!(missed("cache-x"), 1, "one cache_miss webhook for cache-x");
    assert_eq!(events_named(&hook.bodies, "cache_miss"), 2);
    assert_pusher_js_served(&server);
}

#[tokio::test]
async fn webhook_deliveries_in_retry_are_bounded_and_redirects_are_not_followed() {
    // A receiver that holds each request for two seconds, then fails.
    let failing = sink(
        "500 Internal Server Error",
        Duration::from_secs(2),
        String::new(),
    )
    .await;
    let server = Server::start_logged(
        &format!(
            "webhook_max_in_flight = 3\n\
             [[apps]]\nid = \"1\"\nkey = \"app-key\"\nsecret = \"app-secret\"\n\
             [[apps.webhooks]]\nurl = \"{}\"\nevent_types = [\"cache_miss\"]\n",
            failing.url
        ),
        &[("RUST_LOG", "warn")],
    );
    let mut ws = server.connect(KEY).await;
    // Each new cache channel is a miss; batches of up to 20 go out every 250 ms.
    for i in 0..400 {
        subscribe_quietly(&mut ws, &format!("cache-{i}")).await;
        if i % 40 == 39 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    // Until the bound has been reached and the wait for it logged.
    eventually(
        "3 deliveries in flight and the wait logged",
        Duration::from_secs(15),
        async || {
            failing.peak.load(Ordering::SeqCst) >= 3
                && server.log().contains("Webhook batches wait in the queue")
        },
    )
    .await;
    let peak = failing.peak.load(Ordering::SeqCst);
    assert!(
        (1..=3).contains(&peak),
        "{peak} deliveries in flight at once, the bound is 3"
    );
    // Past the bound batches wait in the queue, not in memory, and that is logged.
    assert!(
        server.log().contains("Webhook batches wait in the queue"),
        "the wait is logged: {}",
        server.log()
    );
    drop(ws);

    // A receiver that redirects: the signed body never reaches the other host, and the
    // redirect is not retried.
    let elsewhere = sink("200 OK", Duration::ZERO, String::new()).await;
    let redirecting = sink(
        "307 Temporary Redirect",
        Duration::ZERO,
        format!("location: {}\r\n", elsewhere.url),
    )
    .await;
    let server = Server::start(&format!(
        "[[apps]]\nid = \"1\"\nkey = \"app-key\"\nsecret = \"app-secret\"\n\
         [[apps.webhooks]]\nurl = \"{}\"\nevent_types = [\"cache_miss\"]\n",
        redirecting.url
    ));
    let mut ws = server.connect(KEY).await;
    ws.subscribe("cache-r").await;
    // A redirect makes the batch a dead letter at once (never retried): wait for that.
    eventually(
        "the redirected batch a dead letter",
        Duration::from_secs(10),
        async || metric(&server, "herald_webhook_dead_letters{app=\"1\"}").await == Some(1.0),
    )
    .await;
    assert_eq!(redirecting.requests.load(Ordering::SeqCst), 1);
    assert_eq!(elsewhere.requests.load(Ordering::SeqCst), 0);
    assert_pusher_js_served(&server);
}

#[tokio::test]
async fn subscription_count_events_are_coalesced_and_end_with_the_true_count() {
    let server = Server::start(
        "[[apps]]\nid = \"1\"\nkey = \"app-key\"\nsecret = \"app-secret\"\nsubscription_count = true\n",
    );
    let mut listeners = Vec::new();
    for _ in 0..10 {
        let mut ws = server.connect(KEY).await;
        ws.subscribe("room").await;
        listeners.push(ws);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut toggler = server.connect(KEY).await;
    let started = std::time::Instant::now();
    for _ in 0..300 {
        subscribe_quietly(&mut toggler, "room").await;
        toggler
            .send(json!({"event":"pusher:unsubscribe","data":{"channel":"room"}}))
            .await;
    }
    toggler.send(json!({"event":"pusher:ping","data":{}})).await;
    while toggler.next().await["event"] != "pusher:pong" {}
    let toggled_for = started.elapsed();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for ws in &mut listeners {
        let mut counts = Vec::new();
        while let Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))) =
            tokio::time::timeout(
                Duration::from_millis(200),
                futures_util::StreamExt::next(&mut ws.ws),
            )
            .await
        {
            let frame: Value = serde_json::from_str(t.as_str()).expect("JSON");
            if frame["event"] == "pusher_internal:subscription_count" {
                let data: Value =
                    serde_json::from_str(frame["data"].as_str().expect("string")).expect("JSON");
                counts.push(data["subscription_count"].as_u64().expect("count"));
            }
        }
        // 600 changes, at most one event per second (plus the first and the last).
        let allowed = toggled_for.as_secs() as usize + 4;
        assert!(
            !counts.is_empty() && counts.len() <= allowed,
            "{} count events for 600 changes: {counts:?}",
            counts.len()
        );
        assert_eq!(
            counts.last(),
            Some(&10),
            "ends with the true count: {counts:?}"
        );
    }
    assert_pusher_js_served(&server);
}
