//! Serials and channel history (issue 27 items 1 and 3) against a real `herald serve`: the
//! HTTP API, signed, with its bounds; the Rust SDK, the CLI and the official Node library.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use herald_sdk::{Client, EventData, HistoryQuery};
use serde_json::{json, Value};
use support::history::{history_page, serials};
use support::{send_raw, signed, Server, KEY};

const MASTER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn with_history(extra: &str) -> Server {
    Server::start(&format!(
        "[[apps]]\nid = \"1\"\nkey = \"app-key\"\nsecret = \"app-secret\"\n{extra}\n"
    ))
}

async fn trigger(server: &Server, channel: &str, data: &str) {
    let body = json!({"name": "e", "channel": channel, "data": data}).to_string();
    let (status, reply) = signed(server, "POST", "/apps/1/events", &[], Some(&body)).await;
    assert_eq!(status, 200, "{reply}");
}

#[tokio::test]
async fn serials_increase_per_channel_and_pages_follow_limit_before_after() {
    let server = with_history("history_max_events = 5");
    for n in 0..8 {
        trigger(&server, "a", &format!("a{n}")).await;
    }
    let batch = json!({"batch": [
        {"name": "e", "channel": "b", "data": "b0"},
        {"name": "e", "channel": "b", "data": "b1"},
    ]})
    .to_string();
    let (status, _) = signed(&server, "POST", "/apps/1/batch_events", &[], Some(&batch)).await;
    assert_eq!(status, 200);

    let (status, a) = history_page(&server, "a", &[]).await;
    assert_eq!(status, 200, "{a}");
    // The count bound kept the last 5 of 8, oldest first, serials one apart.
    assert_eq!(serials(&a), [4, 5, 6, 7, 8]);
    assert_eq!(a["events"][0]["data"], "a3");
    assert_eq!(a["events"][0]["event"], "e");
    assert_eq!(
        (a["oldest_serial"].as_u64(), a["newest_serial"].as_u64()),
        (Some(4), Some(8))
    );
    let now_ms = support::now() as u64 * 1000;
    let at = a["events"][4]["published_at_ms"]
        .as_u64()
        .expect("published_at_ms");
    assert!(
        at <= now_ms + 1000 && at + 60_000 > now_ms,
        "{at} vs {now_ms}"
    );
    let (_, b) = history_page(&server, "b", &[]).await;
    let b = serials(&b);
    assert_eq!(b.len(), 2);
    assert_eq!(b[1], b[0] + 1);

    let (_, page) = history_page(&server, "a", &[("limit", "2")]).await;
    assert_eq!(serials(&page), [7, 8]);
    let (_, page) = history_page(&server, "a", &[("limit", "2"), ("before", "7")]).await;
    assert_eq!(serials(&page), [5, 6]);
    let (_, page) = history_page(&server, "a", &[("limit", "2"), ("after", "4")]).await;
    assert_eq!(serials(&page), [5, 6]);
    let (_, page) = history_page(&server, "a", &[("after", "8")]).await;
    assert_eq!(serials(&page), Vec::<u64>::new());
    let (_, none) = history_page(&server, "never", &[]).await;
    assert_eq!(
        none,
        json!({"events": [], "oldest_serial": 0, "newest_serial": 0})
    );

    for bad in [
        ("limit", "0"),
        ("limit", "1001"),
        ("before", "x"),
        ("after", "-1"),
    ] {
        let (status, reply) = history_page(&server, "a", &[bad]).await;
        assert_eq!(status, 400, "{bad:?}: {reply}");
    }
}

#[tokio::test]
async fn only_signed_requests_are_answered() {
    let server = with_history("history_max_events = 5");
    trigger(&server, "a", "secret stuff").await;
    let (status, reply) = send_raw(&server, "GET", "/apps/1/channels/a/events", None).await;
    assert_eq!(status, 401, "{reply}");
    let query = herald_protocol::signing::signed_query_string(
        "GET",
        "/apps/1/channels/a/events",
        KEY,
        "wrong-secret",
        support::now(),
        None,
        &[],
    );
    let path = format!("/apps/1/channels/a/events?{query}");
    let (status, reply) = send_raw(&server, "GET", &path, None).await;
    assert_eq!(status, 401, "{reply}");
    assert!(!reply.to_string().contains("secret stuff"));
}

#[tokio::test]
async fn an_app_with_history_off_gets_404() {
    let server = Server::start("");
    trigger(&server, "a", "x").await;
    let (status, reply) = history_page(&server, "a", &[]).await;
    assert_eq!(status, 404, "{reply}");
    assert!(
        reply["error"]
            .as_str()
            .unwrap_or("")
            .contains("history_max_events"),
        "{reply}"
    );
}

#[tokio::test]
async fn bytes_and_age_evict_the_oldest() {
    // Each frame of these events is about 45 bytes: 100 bytes hold two.
    let server =
        with_history("history_max_events = 100\nhistory_max_bytes = 100\nhistory_max_age = 1");
    for n in 0..4 {
        trigger(&server, "a", &format!("x{n}")).await;
    }
    let (_, page) = history_page(&server, "a", &[]).await;
    assert_eq!(serials(&page), [3, 4]);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (_, page) = history_page(&server, "a", &[]).await;
    assert_eq!(serials(&page), Vec::<u64>::new());
    // The serials go on from where they were.
    trigger(&server, "a", "later").await;
    let (_, page) = history_page(&server, "a", &[]).await;
    assert_eq!(serials(&page), [5]);
}

#[tokio::test]
async fn client_events_are_kept_with_their_sender() {
    let server = with_history("history_max_events = 10");
    let mut ann = server.connect(KEY).await;
    let member = json!({"user_id": "ann"}).to_string();
    ann.subscribe_private("presence-room", Some(&member)).await;
    ann.send(json!({"event": "client-typing", "channel": "presence-room", "data": {"on": true}}))
        .await;
    let mut page = Value::Null;
    for _ in 0..50 {
        page = history_page(&server, "presence-room", &[]).await.1;
        if !serials(&page).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let event = &page["events"][0];
    assert_eq!(event["event"], "client-typing");
    assert_eq!(event["data"], json!({"on": true}));
    assert_eq!(event["user_id"], "ann");
}

#[tokio::test]
async fn an_encrypted_channel_keeps_the_ciphertext() {
    let server = with_history("history_max_events = 10");
    let client = Client::builder("1", "app-key", "app-secret")
        .host("127.0.0.1")
        .port(
            server
                .addr
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .expect("port"),
        )
        .tls(false)
        .encryption_master_key_base64(MASTER_KEY)
        .build()
        .expect("client");
    let data = EventData::json(&json!({"gold": 42})).expect("json");
    client
        .trigger(&["private-encrypted-vault"], "secret", data)
        .await
        .expect("trigger");
    let page = client
        .history("private-encrypted-vault", &HistoryQuery::new())
        .await
        .expect("history");
    let sent = page.events[0]
        .data
        .as_str()
        .expect("the envelope is a string");
    let envelope: Value = serde_json::from_str(sent).expect("envelope JSON");
    assert!(
        envelope["nonce"].is_string() && envelope["ciphertext"].is_string(),
        "{envelope}"
    );
    assert!(!sent.contains("gold"), "{sent}");
}

fn sdk(server: &Server) -> Client {
    Client::from_url(&format!("http://app-key:app-secret@{}/apps/1", server.addr)).expect("client")
}

#[tokio::test]
async fn the_sdk_reads_and_pages_history() {
    let server = with_history("history_max_events = 10");
    let client = sdk(&server);
    for n in 0..3 {
        client
            .trigger(&["sdk"], "e", EventData::Text(format!("s{n}")))
            .await
            .expect("trigger");
    }
    let page = client
        .history("sdk", &HistoryQuery::new().limit(2))
        .await
        .expect("history");
    let got: Vec<(u64, Value)> = page
        .events
        .iter()
        .map(|e| (e.serial, e.data.clone()))
        .collect();
    assert_eq!(got, [(2, json!("s1")), (3, json!("s2"))]);
    let first = client
        .history("sdk", &HistoryQuery::new().before(2))
        .await
        .expect("history");
    assert_eq!(first.events.len(), 1);
    assert_eq!(first.events[0].data, json!("s0"));
    let off = with_history("");
    let error = sdk(&off)
        .history("sdk", &HistoryQuery::new())
        .await
        .expect_err("history off");
    assert!(error.to_string().contains("404"), "{error}");
}

fn herald(server: &Server, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .env(
            "PUSHER_URL",
            format!("http://app-key:app-secret@{}/apps/1", server.addr),
        )
        .output()
        .expect("run herald")
}

#[tokio::test]
async fn the_cli_shows_history() {
    let server = with_history("history_max_events = 10");
    for n in 0..3 {
        trigger(&server, "cli", &format!("c{n}")).await;
    }
    let out = herald(&server, &["history", "cli", "--limit", "2", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(serials(&page), [2, 3]);
    let out = herald(
        &server,
        &["history", "cli", "--after", "1", "--before", "3"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("serial=2") && text.contains("data=c1"),
        "{text}"
    );
    assert!(
        !text.contains("data=c0") && !text.contains("data=c2"),
        "{text}"
    );
    let off = with_history("");
    let out = herald(&off, &["history", "cli"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("history_max_events"));
}

#[tokio::test]
async fn the_official_node_library_gets_history() {
    let server = with_history("history_max_events = 10");
    for n in 0..3 {
        trigger(&server, "from-node", &format!("n{n}")).await;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/js");
    let port = server.addr.rsplit(':').next().expect("port");
    let script = format!(
        "const Pusher = require('pusher');\
         const pusher = new Pusher({{appId: '1', key: 'app-key', secret: 'app-secret', host: '127.0.0.1', port: '{port}', useTLS: false}});\
         pusher.get({{path: '/channels/from-node/events', params: {{limit: 2}}}})\
           .then(r => r.json()).then(b => console.log(JSON.stringify(b)))\
           .catch(e => {{ console.error(e); process.exit(1); }});"
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .args(["-e", &script])
            .current_dir(&dir)
            .output()
            .expect("run node")
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page: Value = serde_json::from_slice(&out.stdout).expect("node printed JSON");
    assert_eq!(serials(&page), [2, 3]);
    assert_eq!(page["events"][1]["data"], "n2");
}

/// Rewrites the server's config, sends SIGHUP and waits until the history API answers
/// `status` for `channel`.
async fn reload_until(server: &Server, config: &str, channel: &str, status: u16) -> Value {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    std::fs::write(&server.config, config).expect("rewrite config");
    kill(Pid::from_raw(server.pid() as i32), Signal::SIGHUP).expect("SIGHUP");
    for _ in 0..250 {
        let (got, reply) = history_page(server, channel, &[]).await;
        if got == status {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the reload never gave {status}");
}

#[tokio::test]
async fn a_reload_that_turns_history_off_drops_it_and_serials_go_on_after() {
    let app = "[[apps]]\nid = \"1\"\nkey = \"app-key\"\nsecret = \"app-secret\"\n";
    let server = with_history("history_max_events = 10");
    for n in 0..3 {
        trigger(&server, "a", &format!("r{n}")).await;
    }
    reload_until(&server, app, "a", 404).await;
    let on = format!("{app}history_max_events = 10\n");
    let page = reload_until(&server, &on, "a", 200).await;
    assert_eq!(serials(&page), Vec::<u64>::new());
    trigger(&server, "a", "again").await;
    let (_, page) = history_page(&server, "a", &[]).await;
    assert_eq!(serials(&page), [4]);
}
