//! Recovery (issue 27 item 2) against a real `herald serve`, on the wire: the order every
//! subscriber gets a channel's events in is the order of their serials, even under
//! concurrent publishes (what confirming a serial relies on), and which ends of a
//! connection leave something to recover. pusher-js, Laravel Echo and Chromium through a
//! link cut without a FIN are in tests/js/recovery.test.mjs (run by node_suite.rs).

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{signed, Server, Ws, KEY, SECRET};

fn recovering() -> Server {
    Server::start(
        "[[apps]]\nid = \"1\"\nkey = \"app-key\"\nsecret = \"app-secret\"\nhistory_max_events = 1000\n",
    )
}

async fn trigger(server: &Server, channel: &str, data: &str) {
    let body = json!({"name": "e", "channel": channel, "data": data}).to_string();
    let (status, reply) = signed(server, "POST", "/apps/1/events", &[], Some(&body)).await;
    assert_eq!(status, 200, "{reply}");
}

/// The data of the next `n` events on the socket, answering the server's pings.
async fn events(ws: &mut Ws, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < n {
        let frame = ws.next().await;
        match frame["event"].as_str() {
            Some("pusher:ping") => {
                ws.send(json!({"event": "pusher:pong", "data": {}})).await;
            }
            Some("e") => got.push(frame["data"].as_str().expect("data").to_owned()),
            _ => panic!("unexpected {frame}"),
        }
    }
    got
}

#[tokio::test]
async fn concurrent_publishes_reach_every_subscriber_in_the_order_of_their_serials() {
    let server = recovering();
    let mut a = server.connect(KEY).await;
    let mut b = server.connect(KEY).await;
    for ws in [&mut a, &mut b] {
        assert_eq!(
            ws.subscribe("race").await["event"],
            "pusher_internal:subscription_succeeded"
        );
    }
    let server = &server;
    let publishers = (0..8).map(|p| async move {
        for i in 0..25 {
            trigger(server, "race", &format!("{p}-{i}")).await;
        }
    });
    futures_util::future::join_all(publishers).await;
    let (a, b) = (events(&mut a, 200).await, events(&mut b, 200).await);
    assert_eq!(a, b, "both subscribers got one order");
    let path = "/apps/1/channels/race/events";
    let (status, page) = signed(server, "GET", path, &[("limit", "1000")], None).await;
    assert_eq!(status, 200, "{page}");
    let by_serial: Vec<String> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["data"].as_str().expect("data").to_owned())
        .collect();
    assert_eq!(a, by_serial, "delivery order is serial order");
}

async fn sign_in(ws: &mut Ws, user: &str) {
    let user_data = json!({"id": user}).to_string();
    let auth = herald_protocol::auth::user_auth(KEY, SECRET, &ws.socket_id, &user_data);
    ws.send(json!({"event": "pusher:signin", "data": {"auth": auth, "user_data": user_data}}))
        .await;
    ws.expect("pusher:signin_success").await;
}

/// Waits until `channel` has no subscriber: the server has handled the end of the
/// connection that was on it (and remembered it, if it does).
async fn vacated(server: &Server, channel: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let path = format!("/apps/1/channels/{channel}");
    loop {
        let (_, info) = signed(server, "GET", &path, &[], None).await;
        if info["occupied"] == Value::Bool(false) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{channel} still occupied: {info}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_unclean_end_is_recovered_and_a_close_frame_is_not() {
    let server = recovering();
    for (user, channel, clean) in [("ann", "feed-a", true), ("bob", "feed-b", false)] {
        let mut old = server.connect(KEY).await;
        sign_in(&mut old, user).await;
        old.subscribe(channel).await;
        trigger(&server, channel, "1").await;
        // The event, then the ping that confirms it, answered.
        assert_eq!(events(&mut old, 1).await, ["1"]);
        old.expect("pusher:ping").await;
        old.send(json!({"event": "pusher:pong", "data": {}})).await;
        old.assert_alive().await;
        if clean {
            old.send_message(tokio_tungstenite::tungstenite::Message::Close(None))
                .await;
            old.expect_close().await;
        }
        // Otherwise the TCP connection ends with no Close frame, as a killed process's.
        drop(old);
        vacated(&server, channel).await;
        trigger(&server, channel, "2").await;
        trigger(&server, channel, "3").await;
        let mut new = server.connect(KEY).await;
        sign_in(&mut new, user).await;
        new.subscribe(channel).await;
        if clean {
            new.expect_silence(300).await;
        } else {
            assert_eq!(events(&mut new, 2).await, ["2", "3"], "{user}");
        }
    }
}
