//! The WebSocket protocol at the frame level against the real binary: exact frames, every
//! close code, bad input that must not take a socket down, and the slow-consumer bound.

mod support;

use serde_json::{json, Value};
use support::{signed, Server, KEY};
use tokio_tungstenite::tungstenite::Message;

fn data_json(frame: &Value) -> Value {
    serde_json::from_str(frame["data"].as_str().expect("data is a string")).expect("JSON text")
}

#[tokio::test]
async fn handshake_and_ping() {
    let server = Server::start("");
    let mut a = server.connect(KEY).await;
    let b = server.connect(KEY).await;
    assert_eq!(a.activity_timeout, 120);
    for id in [&a.socket_id, &b.socket_id] {
        let (x, y) = id.split_once('.').expect("digits.digits");
        assert!(
            !x.is_empty() && x.bytes().all(|c| c.is_ascii_digit()),
            "{id}"
        );
        assert!(
            !y.is_empty() && y.bytes().all(|c| c.is_ascii_digit()),
            "{id}"
        );
    }
    assert_ne!(a.socket_id, b.socket_id);
    a.send(json!({"event":"pusher:ping","data":{}})).await;
    assert_eq!(a.next().await, json!({"event":"pusher:pong","data":{}}));
}

#[tokio::test]
async fn refusals_send_an_error_then_the_matching_close_code() {
    let server = Server::start("[[apps]]\nid = \"1\"\nkey = \"app-key\"\nsecret = \"s\"\n[[apps]]\nid = \"2\"\nkey = \"off\"\nsecret = \"s\"\nenabled = false\n");
    for (path, code) in [
        ("/app/unknown?protocol=7", 4001),
        ("/app/off?protocol=7", 4003),
        ("/nowhere", 4005),
        ("/app/app-key?protocol=3", 4007),
        ("/app/app-key?protocol=abc", 4007),
        ("/app/app-key?protocol=7&version=%20bad", 4006),
    ] {
        let (mut ws, first) = server.connect_raw(path).await;
        let first = first.unwrap_or_else(|| panic!("{path}: no error frame"));
        assert_eq!(first["event"], "pusher:error", "{path}");
        assert_eq!(first["data"]["code"], code, "{path}: {first}");
        assert!(first["data"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        assert_eq!(support::expect_close(&mut ws).await, code, "{path}");
    }
    // No protocol parameter at all is accepted as protocol 7.
    let (_ws, first) = server.connect_raw("/app/app-key").await;
    assert_eq!(
        first.expect("frame")["event"],
        "pusher:connection_established"
    );
}

#[tokio::test]
async fn connection_quota_gives_4004() {
    let server = Server::start(
        "[[apps]]\nid = \"1\"\nkey = \"app-key\"\nsecret = \"app-secret\"\nmax_connections = 1\n",
    );
    let mut first = server.connect(KEY).await;
    let (mut ws, frame) = server.connect_raw("/app/app-key?protocol=7").await;
    assert_eq!(frame.expect("frame")["data"]["code"], 4004);
    assert_eq!(support::expect_close(&mut ws).await, 4004);
    first.assert_alive().await;
    drop(first);
    // The slot is given back when the server has seen the first socket go away.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_again, frame) = server.connect_raw("/app/app-key?protocol=7").await;
        let frame = frame.expect("frame");
        if frame["event"] == "pusher:connection_established" {
            break;
        }
        assert_eq!(frame["data"]["code"], 4004, "{frame}");
        assert!(
            std::time::Instant::now() < deadline,
            "the slot never came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn subscriptions_and_their_failures() {
    let server = Server::start("");
    let mut ws = server.connect(KEY).await;
    assert_eq!(
        ws.subscribe("public-one").await,
        json!({"event":"pusher_internal:subscription_succeeded","channel":"public-one","data":"{}"})
    );
    assert_eq!(
        ws.subscribe_private("private-one", None).await["event"],
        "pusher_internal:subscription_succeeded"
    );

    for (data, needle) in [
        (json!({"channel":"private-x"}), "Auth info required"),
        (
            json!({"channel":"private-x","auth":"app-key:00"}),
            "Invalid signature",
        ),
        (
            json!({"channel":"private-x","auth":"other-key:00"}),
            "Invalid key",
        ),
        (
            json!({"channel":"private-x","auth":"nocolon"}),
            "Invalid format",
        ),
        (
            json!({"channel":"presence-x","auth":"app-key:00"}),
            "channel_data",
        ),
    ] {
        ws.send(json!({"event":"pusher:subscribe","data":data}))
            .await;
        let frame = ws.expect("pusher:subscription_error").await;
        assert_eq!(frame["channel"], data["channel"]);
        assert_eq!(frame["data"]["type"], "AuthError", "{frame}");
        assert_eq!(frame["data"]["status"], 401, "{frame}");
        let error = frame["data"]["error"].as_str().expect("error text");
        assert!(error.contains(needle), "{error} should mention {needle}");
    }
    ws.send(json!({"event":"pusher:subscribe","data":{"channel":"bad name!"}}))
        .await;
    assert_eq!(
        ws.expect("pusher:subscription_error").await["data"]["status"],
        400
    );
    ws.send(json!({"event":"pusher:subscribe","data":{"channel":"#server-to-user-1"}}))
        .await;
    assert_eq!(
        ws.expect("pusher:subscription_error").await["data"]["status"],
        403
    );
    ws.assert_alive().await;
}

#[tokio::test]
async fn presence_frames_are_exact() {
    let server = Server::start("");
    let mut a = server.connect(KEY).await;
    let joined = a
        .subscribe_private(
            "presence-room",
            Some(r#"{"user_id":10,"user_info":{"name":"Mr. Pusher"}}"#),
        )
        .await;
    assert_eq!(joined["event"], "pusher_internal:subscription_succeeded");
    assert_eq!(
        data_json(&joined),
        json!({"presence":{"ids":["10"],"hash":{"10":{"name":"Mr. Pusher"}},"count":1}})
    );
    let mut b = server.connect(KEY).await;
    let joined = b
        .subscribe_private("presence-room", Some(r#"{"user_id":"865"}"#))
        .await;
    assert_eq!(
        data_json(&joined),
        json!({"presence":{"ids":["10","865"],"hash":{"10":{"name":"Mr. Pusher"},"865":null},"count":2}})
    );
    let added = a.expect("pusher_internal:member_added").await;
    assert_eq!(added["channel"], "presence-room");
    assert_eq!(data_json(&added), json!({"user_id":"865"}));
    b.send(json!({"event":"pusher:unsubscribe","data":{"channel":"presence-room"}}))
        .await;
    let removed = a.expect("pusher_internal:member_removed").await;
    assert_eq!(data_json(&removed), json!({"user_id":"865"}));
    // Unsubscribe gets no reply.
    b.expect_silence(200).await;
}

#[tokio::test]
async fn presence_limits_refuse_with_subscription_errors() {
    let server = Server::start(
        "[[apps]]\nid = \"1\"\nkey = \"app-key\"\nsecret = \"app-secret\"\nmax_presence_members = 1\nmax_presence_user_id_length = 4\nmax_presence_user_info_bytes = 20\n",
    );
    let mut a = server.connect(KEY).await;
    assert_eq!(
        a.subscribe_private("presence-p", Some(r#"{"user_id":"a"}"#))
            .await["event"],
        "pusher_internal:subscription_succeeded"
    );
    let mut b = server.connect(KEY).await;
    for (data, status) in [
        (r#"{"user_id":"b"}"#, 4100),
        (r#"{"user_id":"toolong"}"#, 4301),
        (
            r#"{"user_id":"a","user_info":{"bio":"much more than twenty bytes"}}"#,
            4301,
        ),
    ] {
        let frame = b.subscribe_private("presence-p", Some(data)).await;
        assert_eq!(frame["event"], "pusher:subscription_error", "{frame}");
        assert_eq!(frame["data"]["type"], "LimitReached");
        assert_eq!(frame["data"]["status"], status, "{data}");
    }
    // The same user on another connection does not count against the member limit.
    assert_eq!(
        b.subscribe_private("presence-p", Some(r#"{"user_id":"a"}"#))
            .await["event"],
        "pusher_internal:subscription_succeeded"
    );
}

#[tokio::test]
async fn client_event_rules() {
    let server = Server::start("");
    let mut a = server.connect(KEY).await;
    let mut b = server.connect(KEY).await;
    a.subscribe_private("presence-c", Some(r#"{"user_id":"ann"}"#))
        .await;
    b.subscribe_private("presence-c", Some(r#"{"user_id":"ben"}"#))
        .await;
    a.expect("pusher_internal:member_added").await;
    a.subscribe("public-c").await;
    a.subscribe_private("private-encrypted-c", None).await;

    // A forged user_id is replaced by the sender's own.
    a.send(json!({"event":"client-hi","channel":"presence-c","data":{"x":1},"user_id":"mallory"}))
        .await;
    assert_eq!(
        b.next().await,
        json!({"event":"client-hi","channel":"presence-c","data":{"x":1},"user_id":"ann"})
    );
    a.expect_silence(150).await;

    for (channel, needle) in [
        ("public-c", "private and presence"),
        ("private-encrypted-c", "encrypted"),
        ("private-not-joined", "subscribed"),
    ] {
        a.send(json!({"event":"client-hi","channel":channel,"data":{}}))
            .await;
        let err = a.expect("pusher:error").await;
        assert_eq!(err["data"]["code"], Value::Null, "{err}");
        assert!(
            err["data"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(needle)),
            "{err}"
        );
    }
    a.assert_alive().await;
}

#[tokio::test]
async fn bad_frames_get_errors_and_the_socket_keeps_working() {
    let server = Server::start("");
    let mut ws = server.connect(KEY).await;
    let deep = "[".repeat(10_000);
    for text in [
        "not json",
        "[1,2]",
        r#"{"event":5}"#,
        r#"{"event":"pusher:subscribe"}"#,
        r#"{"event":"pusher:subscribe","data":{"channel":5}}"#,
        r#"{"event":"pusher:foo"}"#,
        r#"{"event":"hello"}"#,
        deep.as_str(),
    ] {
        ws.send_text(text).await;
        let err = ws.expect("pusher:error").await;
        assert_eq!(err["data"]["code"], Value::Null, "{text:.40}: {err}");
    }
    ws.send_message(Message::binary(vec![1, 2, 3])).await;
    let err = ws.expect("pusher:error").await;
    assert!(err["data"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("Binary")));
    ws.assert_alive().await;
}

#[tokio::test]
async fn oversized_message_gets_an_error_then_close_1009() {
    let server = Server::start("max_message_bytes = 1024\n");
    let mut ws = server.connect(KEY).await;
    ws.send_text(&format!(
        r#"{{"event":"client-x","data":"{}"}}"#,
        "x".repeat(2000)
    ))
    .await;
    let err = ws.expect("pusher:error").await;
    assert!(
        err["data"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("1024")),
        "{err}"
    );
    assert_eq!(ws.expect_close().await, 1009);
}

#[tokio::test]
async fn silent_client_is_pinged_then_closed_with_4201() {
    let server = Server::start("activity_timeout = 1\npong_timeout = 1\n");
    let mut ws = server.connect(KEY).await;
    assert_eq!(ws.activity_timeout, 1);
    let started = std::time::Instant::now();
    assert_eq!(ws.next().await, json!({"event":"pusher:ping","data":{}}));
    let err = ws.expect("pusher:error").await;
    assert_eq!(err["data"]["code"], 4201);
    assert_eq!(ws.expect_close().await, 4201);
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
}

#[tokio::test]
async fn answering_the_ping_keeps_the_socket() {
    let server = Server::start("activity_timeout = 1\npong_timeout = 1\n");
    let mut ws = server.connect(KEY).await;
    for _ in 0..2 {
        ws.expect("pusher:ping").await;
        ws.send(json!({"event":"pusher:pong","data":{}})).await;
    }
    ws.assert_alive().await;
}

#[tokio::test]
async fn trigger_reaches_subscribers_with_data_untouched_and_exclusion() {
    let server = Server::start("");
    let mut a = server.connect(KEY).await;
    let mut b = server.connect(KEY).await;
    a.subscribe("feed").await;
    b.subscribe("feed").await;
    let body = json!({"name":"update","channels":["feed"],"data":"{\"v\": 1,  \"s\":\"é\"}","socket_id":a.socket_id}).to_string();
    let (status, reply) = signed(&server, "POST", "/apps/1/events", &[], Some(&body)).await;
    assert_eq!((status, reply), (200, json!({})));
    assert_eq!(
        b.next().await,
        json!({"event":"update","channel":"feed","data":"{\"v\": 1,  \"s\":\"é\"}"})
    );
    a.expect_silence(200).await;
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_is_cut_off_without_hurting_others() {
    let server = Server::start("outbox_max_bytes = 262144\n");
    let mut reader = server.connect(KEY).await;
    reader.subscribe("firehose").await;
    let mut stalled = server.connect(KEY).await;
    stalled.subscribe("firehose").await;
    // `stalled` never reads again: its outbox fills and the server closes it with 4100.
    let data = "x".repeat(50_000);
    let body = json!({"name":"big","channel":"firehose","data":data}).to_string();
    let total = 200;
    let reading = tokio::spawn(async move {
        let mut got = 0;
        while got < total {
            let frame = reader.next().await;
            assert_eq!(frame["event"], "big");
            got += 1;
        }
        // Handed back so the reading socket stays subscribed for the count below.
        (got, reader)
    });
    for _ in 0..total {
        let (status, _) = signed(&server, "POST", "/apps/1/events", &[], Some(&body)).await;
        assert_eq!(status, 200);
    }
    let (got, _reader) = reading.await.expect("reader");
    assert_eq!(got, total, "the reading subscriber got every event");
    // The stalled socket ends with 4100 once it drains what the kernel buffered.
    let mut code = None;
    while let Ok(Some(message)) = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        futures_util::StreamExt::next(&mut stalled.ws),
    )
    .await
    {
        match message {
            Ok(Message::Close(Some(frame))) => {
                code = Some(u16::from(frame.code));
                break;
            }
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    assert!(matches!(code, Some(4100) | None), "closed with {code:?}");
    let (status, info) = signed(
        &server,
        "GET",
        "/apps/1/channels/firehose",
        &[("info", "subscription_count")],
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        info["subscription_count"], 1,
        "the stalled socket was removed: {info}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_keeps_answering_while_thousands_of_sockets_are_busy() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let server = std::sync::Arc::new(Server::start(""));
    let sockets = 2000;
    let events = 30;
    let mut subscribed = Vec::new();
    for _ in 0..sockets {
        let mut ws = server.connect(KEY).await;
        ws.subscribe("busy").await;
        subscribed.push(ws);
    }
    // The readers start once every socket is in: each waits at most 5 s for a frame, and
    // connecting the rest took longer than that on a loaded machine.
    let mut readers = Vec::new();
    for mut ws in subscribed {
        readers.push(tokio::spawn(async move {
            let mut got = 0;
            while got < events {
                if ws.next().await["event"] == "tick" {
                    got += 1;
                }
            }
            // Handed back so the socket stays subscribed while the queries count it.
            (got, ws)
        }));
    }
    let publisher = {
        let server = server.clone();
        tokio::spawn(async move {
            for i in 0..events {
                let body = json!({"name":"tick","channel":"busy","data":i.to_string()}).to_string();
                let (status, _) = signed(&server, "POST", "/apps/1/events", &[], Some(&body)).await;
                assert_eq!(status, 200);
            }
        })
    };
    // Queries interleaved with the fan-out all answer, with the right count.
    for _ in 0..20 {
        let (status, info) = signed(
            &server,
            "GET",
            "/apps/1/channels/busy",
            &[("info", "subscription_count")],
            None,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(info["subscription_count"], sockets);
    }
    publisher.await.expect("publisher");
    for reader in readers {
        assert_eq!(reader.await.expect("reader").0, events);
    }
}
