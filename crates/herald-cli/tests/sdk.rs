//! The Rust SDK against a real `herald serve`: every call, its typed answers and errors.

mod support;

use herald_sdk::{BatchEvent, Client, Error, EventData, TriggerParams};
use serde_json::json;
use support::{Server, KEY};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn client(server: &Server) -> Client {
    Client::from_url(&format!("http://app-key:app-secret@{}/apps/1", server.addr))
        .expect("valid URL")
}

#[tokio::test]
async fn trigger_reaches_subscribers_and_reports_info() {
    let server = Server::start("");
    let sdk = client(&server);
    let mut ws = server.connect(KEY).await;
    ws.subscribe("sdk-news").await;
    sdk.trigger(&["sdk-news"], "headline", "plain text")
        .await
        .expect("trigger");
    assert_eq!(
        ws.next().await,
        json!({"event":"headline","channel":"sdk-news","data":"plain text"})
    );
    let data = EventData::json(&json!({"n": 1})).expect("json");
    let reply = sdk
        .trigger_with(
            &["sdk-news"],
            "headline",
            data,
            TriggerParams::default().info(["subscription_count"]),
        )
        .await
        .expect("trigger with info");
    assert_eq!(reply.channels["sdk-news"].subscription_count, Some(1));
    assert_eq!(ws.next().await["data"], "{\"n\":1}");
    // Excluding the subscriber's own socket.
    sdk.trigger_with(
        &["sdk-news"],
        "headline",
        "x",
        TriggerParams::default().socket_id(ws.socket_id.clone()),
    )
    .await
    .expect("trigger");
    ws.expect_silence(200).await;
}

#[tokio::test]
async fn batch_and_channel_queries() {
    let server = Server::start("");
    let sdk = client(&server);
    let mut ws = server.connect(KEY).await;
    let member = json!({"user_id": "u1", "user_info": {"name": "U"}});
    let auth = sdk
        .authorize_channel(&ws.socket_id, "presence-sdk", Some(&member))
        .expect("auth");
    ws.send(json!({"event":"pusher:subscribe","data":{"channel":"presence-sdk","auth":auth.auth,"channel_data":auth.channel_data}}))
        .await;
    ws.expect("pusher_internal:subscription_succeeded").await;

    let mut event = BatchEvent::new("presence-sdk", "e", "1");
    event.info = Some("user_count".into());
    let reply = sdk
        .trigger_batch(&[BatchEvent::new("other", "e", "0"), event])
        .await
        .expect("batch");
    assert_eq!(reply.batch.len(), 2);
    assert_eq!(reply.batch[1].user_count, Some(1));
    assert_eq!(ws.next().await["data"], "1");

    let channels = sdk
        .channels(Some("presence-"), &["user_count"])
        .await
        .expect("channels");
    assert_eq!(channels["presence-sdk"].user_count, Some(1));
    let info = sdk
        .channel("presence-sdk", &["user_count", "subscription_count"])
        .await
        .expect("channel");
    assert!(info.occupied);
    assert_eq!(
        (info.user_count, info.subscription_count),
        (Some(1), Some(1))
    );
    assert!(!sdk.channel("empty", &[]).await.expect("channel").occupied);
    assert_eq!(sdk.users("presence-sdk").await.expect("users"), ["u1"]);
    let raw = sdk.get("/channels", &[]).await.expect("generic get");
    assert!(raw["channels"]["presence-sdk"].is_object());
}

#[tokio::test]
async fn send_to_user_and_terminate() {
    let server = Server::start("");
    let sdk = client(&server);
    let mut ws = server.connect(KEY).await;
    let user = sdk
        .authenticate_user(&ws.socket_id, &json!({"id": "rust-user"}))
        .expect("auth");
    ws.send(json!({"event":"pusher:signin","data":{"auth":user.auth,"user_data":user.user_data}}))
        .await;
    ws.expect("pusher:signin_success").await;
    ws.subscribe("#server-to-user-rust-user").await;
    sdk.send_to_user("rust-user", "hello", "hi")
        .await
        .expect("send_to_user");
    assert_eq!(ws.next().await["data"], "hi");
    sdk.terminate_user_connections("rust-user")
        .await
        .expect("terminate");
    assert_eq!(ws.expect("pusher:error").await["data"]["code"], 4009);
    assert_eq!(ws.expect_close().await, 4009);
}

#[tokio::test]
async fn errors_are_typed() {
    let server = Server::start("[[apps]]\nid = \"1\"\nkey = \"app-key\"\nsecret = \"app-secret\"\nmax_event_data_bytes = 10\n");
    let wrong =
        Client::from_url(&format!("http://app-key:wrong@{}/apps/1", server.addr)).expect("url");
    match wrong.trigger(&["c"], "e", "x").await {
        Err(Error::Http {
            status: 401, body, ..
        }) => assert!(body.contains("Invalid signature"), "{body}"),
        other => panic!("expected 401, got {other:?}"),
    }
    match client(&server).trigger(&["c"], "e", "x".repeat(11)).await {
        Err(Error::Http { status: 413, .. }) => {}
        other => panic!("expected 413, got {other:?}"),
    }
    let nowhere = Client::from_url("http://k:s@127.0.0.1:1/apps/1").expect("url");
    assert!(matches!(
        nowhere.trigger(&["c"], "e", "x").await,
        Err(Error::Network { .. })
    ));
    assert!(matches!(
        client(&server).trigger(&["bad channel"], "e", "x").await,
        Err(Error::Validation {
            field: "channels",
            ..
        })
    ));
}

/// Accepts one HTTP request and returns its headers and body.
async fn capture_one(listener: tokio::net::TcpListener) -> (Vec<(String, String)>, Vec<u8>) {
    let (mut stream, _) = listener.accept().await.expect("webhook connection");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.expect("read");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let headers: Vec<(String, String)> = head
                .lines()
                .skip(1)
                .filter_map(|l| {
                    l.split_once(':')
                        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                })
                .collect();
            let length: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                let n = stream.read(&mut chunk).await.expect("read");
                buf.extend_from_slice(&chunk[..n]);
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await;
            return (headers, buf[end + 4..end + 4 + length].to_vec());
        }
    }
}

#[tokio::test]
async fn webhooks_from_herald_validate_with_the_sdk() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let server = Server::start(&format!(
        "[[apps]]\nid = \"1\"\nkey = \"app-key\"\nsecret = \"app-secret\"\n[[apps.webhooks]]\nurl = \"{url}\"\nevent_types = [\"channel_occupied\"]\n"
    ));
    let captured = tokio::spawn(capture_one(listener));
    let mut ws = server.connect(KEY).await;
    ws.subscribe("hooked").await;
    let (headers, body) = captured.await.expect("captured");
    let hook = client(&server)
        .webhook(headers.iter().map(|(k, v)| (k, v)), &body)
        .expect("valid webhook");
    assert_eq!(
        hook.events,
        [herald_sdk::WebhookEvent::ChannelOccupied {
            channel: "hooked".into()
        }]
    );
    let other = Client::from_url("http://app-key:other@h/apps/1").expect("url");
    assert!(other
        .webhook(headers.iter().map(|(k, v)| (k, v)), &body)
        .is_err());
}

/// Serves one canned HTTP response to every connection (a malformed peer, not Herald).
async fn canned(response: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            let _ = stream.write_all(response.as_bytes()).await;
        }
    });
    format!("http://k:s@{addr}/apps/1")
}

#[tokio::test]
async fn malformed_responses_are_errors_not_panics() {
    for response in [
        "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
        "HTTP/1.1 200 OK\r\ncontent-length: 15\r\n\r\n{\"channels\": 5}",
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n[]",
        "garbage that is not HTTP\r\n\r\n",
    ] {
        let client = Client::from_url(&canned(response).await).expect("url");
        let trigger = client
            .trigger_with(
                &["c"],
                "e",
                "x",
                TriggerParams::default().info(["subscription_count"]),
            )
            .await;
        let channels = client.channels(None, &[]).await;
        let users = client.users("presence-x").await;
        for result in [trigger.map(drop), channels.map(drop), users.map(drop)] {
            assert!(
                matches!(result, Err(Error::Decode { .. } | Error::Network { .. })),
                "{response:?}: {result:?}"
            );
        }
    }
}

#[test]
fn webhooks_decrypt_encrypted_client_events() {
    let master = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let client = Client::builder("1", "app-key", "app-secret")
        .encryption_master_key_base64(master)
        .build()
        .expect("client");
    let key = herald_protocol::encryption::decode_master_key(master).expect("key");
    let secret = herald_protocol::encryption::shared_secret("private-encrypted-x", &key);
    let payload = herald_protocol::encryption::encrypt(&secret, &[7; 24], br#"{"hi":1}"#);
    let body =
        json!({"time_ms": 1, "events": [{"name": "client_event", "channel": "private-encrypted-x",
        "event": "client-e", "data": payload.to_json(), "socket_id": "1.1"}]})
        .to_string();
    let signature = herald_protocol::webhook::webhook_signature("app-secret", body.as_bytes());
    let headers = [
        ("X-Pusher-Key", "app-key"),
        ("X-Pusher-Signature", signature.as_str()),
        ("Content-Type", "application/json"),
    ];
    let hook = client.webhook(headers, body.as_bytes()).expect("valid");
    match &hook.events[0] {
        herald_sdk::WebhookEvent::ClientEvent { data, .. } => assert_eq!(data, r#"{"hi":1}"#),
        other => panic!("unexpected {other:?}"),
    }
    // Freshness: time_ms 1 is decades old.
    let opts = herald_sdk::WebhookOptions::default().max_age(std::time::Duration::from_secs(300));
    assert!(client
        .webhook_with(headers, body.as_bytes(), &opts)
        .is_err());
}
