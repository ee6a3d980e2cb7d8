//! The console's endpoints on the admin listener, against the real binary: the live log
//! shows what clients and the API do, the event creator publishes through the API's path,
//! the admin token guards it, a console that never reads cannot slow delivery, and a
//! channel's history reads as the history API gives it.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{signed, Server, KEY};

/// Reads SSE rows from a streaming response until `until` holds for one, or fails.
async fn row_where(
    response: &mut reqwest::Response,
    buffer: &mut String,
    until: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let message: String = buffer.drain(..end + 2).collect();
            for line in message.lines() {
                if let Some(data) = line.strip_prefix("data: ") {
                    let row: Value = serde_json::from_str(data).expect("a JSON row");
                    if until(&row) {
                        return row;
                    }
                }
            }
        }
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("the row within 5 s")
            .expect("the stream")
            .expect("more of the stream");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// What `/console/api/state` says now.
async fn state(server: &Server) -> Value {
    reqwest::get(format!("http://{}/console/api/state", server.admin))
        .await
        .expect("state")
        .json()
        .await
        .expect("json")
}

fn kind(row: &Value, kind: &str) -> bool {
    row["kind"] == kind
}

#[tokio::test]
async fn the_log_shows_connections_subscriptions_publishes_and_client_events() {
    let server = Server::start("");
    let mut log = reqwest::get(format!("http://{}/console/api/events", server.admin))
        .await
        .expect("the event stream");
    assert_eq!(log.status(), 200);
    assert!(log.headers()["content-type"]
        .to_str()
        .expect("text")
        .starts_with("text/event-stream"));
    let mut buffer = String::new();
    let mut ws = server.connect(KEY).await;
    let opened = row_where(&mut log, &mut buffer, |r| kind(r, "connection_opened")).await;
    assert_eq!(opened["socket_id"], ws.socket_id.as_str());
    assert_eq!(opened["app"], "1");
    ws.subscribe_private("private-room", None).await;
    let sub = row_where(&mut log, &mut buffer, |r| kind(r, "subscribed")).await;
    assert_eq!(sub["channel"], "private-room");

    let big = "x".repeat(5000);
    let body = json!({"name": "ev", "channel": "private-room", "data": big}).to_string();
    assert_eq!(
        signed(&server, "POST", "/apps/1/events", &[], Some(&body))
            .await
            .0,
        200
    );
    let published = row_where(&mut log, &mut buffer, |r| kind(r, "api_publish")).await;
    assert_eq!(published["channels"], json!(["private-room"]));
    assert_eq!(published["event"], "ev");
    assert_eq!(published["truncated"], true, "the preview is capped");
    assert!(published["data"].as_str().expect("text").len() <= 1024);
    ws.expect("ev").await;

    ws.send(json!({"event": "client-typing", "channel": "private-room", "data": {"on": true}}))
        .await;
    let client = row_where(&mut log, &mut buffer, |r| kind(r, "client_event")).await;
    assert_eq!(client["event"], "client-typing");

    // The event creator goes through the API's path: a bad channel is the API's 400.
    let http = reqwest::Client::new();
    let publish = |body: Value| {
        http.post(format!("http://{}/console/api/publish", server.admin))
            // The console's own header: a write without it is refused (admin_security.rs).
            .header("x-herald-console", "1")
            .json(&body)
            .send()
    };
    let ok = publish(
        json!({"app": "1", "channels": ["private-room"], "name": "made", "data": "{\"n\":1}"}),
    )
    .await
    .expect("publish");
    assert_eq!(ok.status(), 200);
    assert_eq!(ws.expect("made").await["data"], "{\"n\":1}");
    let bad =
        publish(json!({"app": "1", "channels": ["bad channel"], "name": "made", "data": "1"}))
            .await
            .expect("publish");
    assert_eq!(bad.status(), 400);
    let error: Value = bad.json().await.expect("json");
    assert!(
        error["error"]
            .as_str()
            .expect("text")
            .contains("bad channel"),
        "{error}"
    );
    let incomplete = publish(json!({"app": "1"})).await.expect("publish");
    assert_eq!(incomplete.status(), 400);
    let error: Value = incomplete.json().await.expect("a JSON error");
    assert!(
        error["error"].as_str().expect("text").contains("channels"),
        "{error}"
    );

    let state = state(&server).await;
    let app = &state["apps"][0];
    assert_eq!(app["connections"], 1);
    assert_eq!(app["channels"][0]["name"], "private-room");
    assert_eq!(app["channels"][0]["subscribers"], 1);

    // A cache channel holds its event with nobody subscribed, and the view shows it.
    let body =
        json!({"name": "price", "channel": "cache-prices", "data": "{\"eur\":1.08}"}).to_string();
    assert_eq!(
        signed(&server, "POST", "/apps/1/events", &[], Some(&body))
            .await
            .0,
        200
    );
    let state = self::state(&server).await;
    let cached = state["apps"][0]["channels"]
        .as_array()
        .expect("channels")
        .iter()
        .find(|c| c["name"] == "cache-prices")
        .cloned()
        .unwrap_or_else(|| panic!("the cache channel is listed: {state}"));
    assert_eq!(cached["subscribers"], 0);
    assert_eq!(
        cached["cache"], "\"{\\\"eur\\\":1.08}\"",
        "its data token: {cached}"
    );

    drop(ws);
    let closed = row_where(&mut log, &mut buffer, |r| kind(r, "connection_closed")).await;
    assert!(closed["code"].is_u64(), "{closed}");
}

#[tokio::test]
async fn the_admin_token_guards_the_console() {
    let token = "console-token-0123456789";
    let server = Server::start(&format!("admin_token = \"{token}\"\n"));
    let base = format!("http://{}", server.admin);
    let history = "/console/api/history?app=1&channel=feed";
    for path in [
        "/console",
        "/console/api/state",
        "/console/api/events",
        history,
    ] {
        let status = reqwest::get(format!("{base}{path}"))
            .await
            .expect("GET")
            .status();
        assert_eq!(status, 401, "{path} without the token");
    }
    let wrong = reqwest::get(format!("{base}/console?token=nope"))
        .await
        .expect("GET");
    assert_eq!(wrong.status(), 401);
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let visit = no_redirects
        .get(format!("{base}/console?token={token}"))
        .send()
        .await
        .expect("GET");
    assert_eq!(visit.status(), 303, "the token leaves the address bar");
    let cookie = visit.headers()["set-cookie"]
        .to_str()
        .expect("text")
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().expect("name=value");
    let state = no_redirects
        .get(format!("{base}/console/api/state"))
        .header("cookie", pair)
        .send()
        .await
        .expect("GET");
    assert_eq!(state.status(), 200, "the cookie opens the API");
    let bearer = no_redirects
        .get(format!("{base}/console/api/state"))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET");
    assert_eq!(bearer.status(), 200, "and so does the bearer header");
}

#[tokio::test]
async fn a_console_that_never_reads_does_not_slow_delivery() {
    let server = Server::start("");
    let mut ws = server.connect(KEY).await;
    ws.subscribe("news").await;
    let data = "y".repeat(900);
    let mut sent = 0;
    // Publishes `n` events, each read by the subscriber before the next; returns the time.
    let mut publish = async |n: usize| {
        let started = std::time::Instant::now();
        for _ in 0..n {
            let i = sent;
            sent += 1;
            let body =
                json!({"name": "ev", "channel": "news", "data": format!("{i}{data}")}).to_string();
            assert_eq!(
                signed(&server, "POST", "/apps/1/events", &[], Some(&body))
                    .await
                    .0,
                200
            );
            let got = ws.expect("ev").await;
            assert!(got["data"]
                .as_str()
                .expect("text")
                .starts_with(&i.to_string()));
        }
        started.elapsed()
    };
    let baseline = publish(1000).await;
    // Opened and never read: its rows pile up in the server's bounded backlog and the
    // socket's buffers, and then are dropped. 2,000 rows of 1 KB fill both; the last 1,000
    // publishes are timed against the baseline without a console.
    let _stalled = reqwest::get(format!("http://{}/console/api/events", server.admin))
        .await
        .expect("the event stream");
    publish(2000).await;
    let stalled = publish(1000).await;
    println!("1000 publishes: {baseline:?} without a console, {stalled:?} with a stalled one");
    // Four times the baseline leaves room for a loaded machine's noise; a console that held
    // delivery up (a blocking send, a lock held while writing) costs far more.
    assert!(
        stalled < baseline * 4,
        "a stalled console slowed delivery: {stalled:?} against {baseline:?}"
    );
    // A fresh tab still gets rows: the stalled one took nothing from it.
    let mut log = reqwest::get(format!("http://{}/console/api/events", server.admin))
        .await
        .expect("the event stream");
    let mut buffer = String::new();
    let body = json!({"name": "last", "channel": "news", "data": "z"}).to_string();
    assert_eq!(
        signed(&server, "POST", "/apps/1/events", &[], Some(&body))
            .await
            .0,
        200
    );
    let row = row_where(&mut log, &mut buffer, |r| r["event"] == "last").await;
    assert_eq!(row["kind"], "api_publish");
}

#[tokio::test]
async fn in_a_cluster_the_views_are_the_clusters_and_the_log_is_the_nodes() {
    let redis = support::Redis::start();
    let config = format!(
        "adapter = \"redis\"\nredis_url = \"{}\"\nnode_timeout = 2\n",
        redis.url()
    );
    let (a, b) = (Server::start(&config), Server::start(&config));
    let mut log_b = reqwest::get(format!("http://{}/console/api/events", b.admin))
        .await
        .expect("the event stream");
    let member = json!({"user_id": "alice", "user_info": {"name": "Alice"}}).to_string();
    let mut alice = a.connect(KEY).await;
    alice
        .subscribe_private("presence-room", Some(&member))
        .await;

    // Another node's subscription reaches the cluster's channel index a moment later.
    let mut state = state(&b).await;
    for _ in 0..100 {
        if state["apps"][0]["channels"][0]["members"][0]["user_id"] == "alice" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        state = self::state(&b).await;
    }
    let app = &state["apps"][0];
    assert_eq!(app["connections"], 0, "connections are this node's");
    let room = &app["channels"][0];
    assert_eq!(
        room["name"], "presence-room",
        "channels are the cluster's: {state}"
    );
    assert_eq!(room["subscribers"], 1);
    assert_eq!(
        room["members"][0]["user_id"], "alice",
        "members too: {state}"
    );

    // B's log shows B's own connection, not A's.
    let mut buffer = String::new();
    let on_b = b.connect(KEY).await;
    let opened = row_where(&mut log_b, &mut buffer, |r| kind(r, "connection_opened")).await;
    assert_eq!(opened["socket_id"], on_b.socket_id.as_str());
    assert_eq!(opened["node_id"], state["node_id"]);
}

#[tokio::test]
async fn the_state_gives_counters_limits_and_webhooks_within_its_bounds() {
    // 120 endpoints, each URL with a password: more than the answer lists (100).
    let mut config = format!(
        "[[apps]]\nid = \"1\"\nkey = \"{KEY}\"\nsecret = \"{}\"\nmax_connections = 7\n",
        support::SECRET
    );
    for i in 0..120 {
        config.push_str(&format!(
            "[[apps.webhooks]]\nurl = \"https://hooks:pw-{i:03}@example.invalid/h{i}\"\nchannel_prefix = \"room-\"\n"
        ));
    }
    let server = Server::start(&config);
    let before = state(&server).await;
    let _ws = server.connect(KEY).await;
    let body = json!({"name": "e", "channel": "news", "data": "1"}).to_string();
    let (status, answer) = signed(&server, "POST", "/apps/1/events", &[], Some(&body)).await;
    assert_eq!(status, 200, "{answer}");
    let after = state(&server).await;

    let (was, now) = (
        &before["apps"][0]["counters"],
        &after["apps"][0]["counters"],
    );
    assert_eq!(
        (was["connections"].clone(), now["connections"].clone()),
        (json!(0), json!(1))
    );
    assert_eq!(
        now["api_events_published"].as_u64(),
        was["api_events_published"].as_u64().map(|n| n + 1),
        "{now}"
    );
    assert!(
        now["ws_messages_sent"].as_u64() > was["ws_messages_sent"].as_u64(),
        "{now}"
    );
    assert!(after["counters_at_ms"].as_u64() > before["counters_at_ms"].as_u64());

    let settings = &after["apps"][0]["settings"];
    assert_eq!(settings["limits"]["max_connections"], 7);
    assert_eq!(settings["limits"]["max_subscriptions_per_connection"], 1000);
    assert_eq!(settings["webhook_count"], 120);
    let hooks = settings["webhooks"].as_array().expect("a list");
    assert_eq!(hooks.len(), 100);
    assert_eq!(
        hooks[0]["url"],
        "https://hooks:<redacted>@example.invalid/h0"
    );
    assert_eq!(hooks[0]["channel_prefix"], "room-");
    assert_eq!(after["truncated"], true);
    let why = after["truncated_by"].as_str().expect("text");
    assert!(why.contains("100 webhook endpoints"), "{why}");
    let text = after.to_string();
    assert!(
        !text.contains("pw-0") && !text.contains(support::SECRET),
        "no credentials"
    );
}

#[tokio::test]
async fn the_history_view_reads_a_channels_last_events_newest_page_first() {
    let server = Server::start(
        "[[apps]]\nid = \"1\"\nkey = \"app-key\"\nsecret = \"app-secret\"\nhistory_max_events = 100\n\n[[apps]]\nid = \"2\"\nkey = \"key-2\"\nsecret = \"secret-2\"\n",
    );
    for n in ["1", "2", "3"] {
        support::nodes::trigger(&server, "feed", n, None).await;
    }
    let get = |query: &str| {
        let url = format!("http://{}/console/api/history?{query}", server.admin);
        async move {
            let response = reqwest::get(url).await.expect("GET");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("json"))
        }
    };
    let data = |page: &Value| -> Vec<String> {
        let events = page["events"].as_array().expect("events");
        events
            .iter()
            .map(|e| e["data"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let (status, page) = get("app=1&channel=feed").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(data(&page), ["1", "2", "3"]);
    assert_eq!(page["events"][2]["serial"], page["newest_serial"]);
    let newest = page["newest_serial"].as_u64().expect("a serial");
    let (_, older) = get(&format!("app=1&channel=feed&before={newest}")).await;
    assert_eq!(data(&older), ["1", "2"]);
    let (status, off) = get("app=2&channel=feed").await;
    assert_eq!(status, 404, "an app that keeps no history: {off}");
    assert!(off["error"]
        .as_str()
        .is_some_and(|e| e.contains("history_max_events")));
    let (status, _) = get("app=9&channel=feed").await;
    assert_eq!(status, 404, "an unknown app");
    let (status, _) = get("app=1&channel=bad%20name").await;
    assert_eq!(status, 400, "a name that is no channel's");
}
