//! The HTTP API's answers for every status path, against the real binary, and the seed
//! document's curl recipe run byte for byte.

mod support;

use serde_json::json;
use support::{send_raw, signed, signed_as, Server, KEY, SECRET};

#[tokio::test]
async fn trigger_and_batch_success_bodies() {
    let server = Server::start("");
    let mut ws = server.connect(KEY).await;
    ws.subscribe_private("presence-p", Some(r#"{"user_id":"u"}"#))
        .await;
    let body = r#"{"name":"e","channel":"lonely","data":"x"}"#;
    assert_eq!(
        signed(&server, "POST", "/apps/1/events", &[], Some(body)).await,
        (200, json!({}))
    );
    let body = r#"{"name":"e","channels":["presence-p","other"],"data":"x","info":"user_count,subscription_count"}"#;
    assert_eq!(
        signed(&server, "POST", "/apps/1/events", &[], Some(body)).await,
        (
            200,
            json!({"channels":{"presence-p":{"user_count":1,"subscription_count":1},"other":{"subscription_count":0}}})
        )
    );
    let body = r#"{"batch":[{"channel":"a","name":"e","data":"1"},{"channel":"b","name":"e","data":"2"}]}"#;
    assert_eq!(
        signed(&server, "POST", "/apps/1/batch_events", &[], Some(body)).await,
        (200, json!({}))
    );
    let body = r#"{"batch":[{"channel":"a","name":"e","data":"1"},{"channel":"presence-p","name":"e","data":"2","info":"user_count"}]}"#;
    assert_eq!(
        signed(&server, "POST", "/apps/1/batch_events", &[], Some(body)).await,
        (200, json!({"batch":[{},{"user_count":1}]}))
    );
}

#[tokio::test]
async fn bad_requests_are_400_with_a_reason() {
    let server = Server::start("");
    let channels: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
    let batch: Vec<_> = (0..11)
        .map(|_| json!({"channel":"c","name":"e","data":"d"}))
        .collect();
    let cases = [
        ("{not json".to_owned(), "not valid JSON"),
        (r#"{"channel":"c","data":"d"}"#.to_owned(), "name"),
        (r#"{"name":"e","channel":"c"}"#.to_owned(), "data"),
        (r#"{"name":"e","data":"d"}"#.to_owned(), "channel"),
        (
            r#"{"name":"e","data":"d","channel":"bad channel"}"#.to_owned(),
            "Invalid channel name",
        ),
        (
            json!({"name":"e".repeat(201),"data":"d","channel":"c"}).to_string(),
            "too long",
        ),
        (
            json!({"name":"e","data":"d","channels":channels}).to_string(),
            "Too many channels",
        ),
        (
            r#"{"name":"e","data":"d","channel":"c","socket_id":"abc"}"#.to_owned(),
            "socket_id",
        ),
        (
            r#"{"name":"e","data":"d","channel":"c","info":"bogus"}"#.to_owned(),
            "info attribute",
        ),
        (
            r#"{"name":5,"data":"d","channel":"c"}"#.to_owned(),
            "not valid JSON",
        ),
    ];
    for (body, needle) in cases {
        let (status, reply) = signed(&server, "POST", "/apps/1/events", &[], Some(&body)).await;
        assert_eq!(status, 400, "{body:.60}: {reply}");
        let error = reply["error"].as_str().expect("error text");
        assert!(error.contains(needle), "{body:.60}: {error}");
    }
    let body = json!({"batch":batch}).to_string();
    let (status, reply) = signed(&server, "POST", "/apps/1/batch_events", &[], Some(&body)).await;
    assert_eq!(status, 400);
    assert!(
        reply["error"]
            .as_str()
            .is_some_and(|e| e.contains("at most 10")),
        "{reply}"
    );
    let (status, _) = signed(&server, "GET", "/apps/1/channels/public/users", &[], None).await;
    assert_eq!(status, 400);
    let (status, _) = signed(
        &server,
        "GET",
        "/apps/1/channels/public",
        &[("info", "user_count")],
        None,
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = signed(
        &server,
        "GET",
        "/apps/1/channels",
        &[("info", "user_count")],
        None,
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn authentication_failures_are_401() {
    let server = Server::start("");
    let body = r#"{"name":"e","channel":"c","data":"d"}"#;
    let path = "/apps/1/events";
    let now = support::now();
    for (key, secret, ts, needle) in [
        (KEY, "wrong", now, "Invalid signature"),
        (KEY, SECRET, now - 601, "Timestamp expired"),
        ("other-key", SECRET, now, "auth_key"),
    ] {
        let (status, reply) =
            signed_as(&server, "POST", path, &[], Some(body), key, secret, ts).await;
        assert_eq!(status, 401, "{needle}");
        assert!(
            reply["error"].as_str().is_some_and(|e| e.contains(needle)),
            "{reply}"
        );
    }
    // Signed for one body, sent with another.
    let query = herald_protocol::signing::signed_query_string(
        "POST",
        path,
        KEY,
        SECRET,
        now,
        Some(b"{}"),
        &[],
    );
    let (status, reply) = send_raw(&server, "POST", &format!("{path}?{query}"), Some(body)).await;
    assert_eq!(status, 401);
    assert!(
        reply["error"]
            .as_str()
            .is_some_and(|e| e.contains("body_md5")),
        "{reply}"
    );
    let (status, reply) = send_raw(&server, "POST", path, Some(body)).await;
    assert_eq!(status, 401);
    assert!(
        reply["error"]
            .as_str()
            .is_some_and(|e| e.contains("Missing")),
        "{reply}"
    );
    // A timestamp 599 s old is still inside the window.
    let (status, _) = signed_as(
        &server,
        "POST",
        path,
        &[],
        Some(body),
        KEY,
        SECRET,
        now - 599,
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn disabled_unknown_and_oversized() {
    let server = Server::start(
        "[[apps]]\nid = \"1\"\nkey = \"app-key\"\nsecret = \"app-secret\"\n[[apps]]\nid = \"2\"\nkey = \"k2\"\nsecret = \"s2\"\nenabled = false\n",
    );
    let body = r#"{"name":"e","channel":"c","data":"d"}"#;
    let (status, reply) = signed_as(
        &server,
        "POST",
        "/apps/2/events",
        &[],
        Some(body),
        "k2",
        "s2",
        support::now(),
    )
    .await;
    assert_eq!(status, 403, "{reply}");
    let (status, _) = signed(&server, "POST", "/apps/77/events", &[], Some(body)).await;
    assert_eq!(status, 404);
    let (status, reply) = send_raw(&server, "GET", "/no/such/path", None).await;
    assert_eq!(status, 404);
    assert!(reply["error"].is_string());
    let big = json!({"name":"e","channel":"c","data":"x".repeat(102_401)}).to_string();
    let (status, reply) = signed(&server, "POST", "/apps/1/events", &[], Some(&big)).await;
    assert_eq!(status, 413, "{reply}");
    let fits = json!({"name":"e","channel":"c","data":"x".repeat(102_400)}).to_string();
    assert_eq!(
        signed(&server, "POST", "/apps/1/events", &[], Some(&fits))
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn channel_queries() {
    let server = Server::start("");
    let mut ws = server.connect(KEY).await;
    ws.subscribe("news").await;
    ws.subscribe_private("presence-a", Some(r#"{"user_id":"1"}"#))
        .await;
    assert_eq!(
        signed(&server, "GET", "/apps/1/channels", &[], None).await,
        (200, json!({"channels":{"news":{},"presence-a":{}}}))
    );
    assert_eq!(
        signed(
            &server,
            "GET",
            "/apps/1/channels",
            &[("filter_by_prefix", "presence-"), ("info", "user_count")],
            None
        )
        .await,
        (200, json!({"channels":{"presence-a":{"user_count":1}}}))
    );
    assert_eq!(
        signed(
            &server,
            "GET",
            "/apps/1/channels/presence-a",
            &[("info", "user_count,subscription_count")],
            None
        )
        .await,
        (
            200,
            json!({"occupied":true,"user_count":1,"subscription_count":1})
        )
    );
    assert_eq!(
        signed(&server, "GET", "/apps/1/channels/empty", &[], None).await,
        (200, json!({"occupied":false}))
    );
    assert_eq!(
        signed(
            &server,
            "GET",
            "/apps/1/channels/presence-a/users",
            &[],
            None
        )
        .await,
        (200, json!({"users":[{"id":"1"}]}))
    );
    // PHP and Rust clients percent-encode the comma; the signature is over the decoded value.
    let path = "/apps/1/channels/presence-a";
    let now = support::now();
    let query = herald_protocol::signing::signed_query_string(
        "GET",
        path,
        KEY,
        SECRET,
        now,
        None,
        &[("info", "user_count,subscription_count")],
    );
    let encoded = query.replace(
        "user_count,subscription_count",
        "user_count%2Csubscription_count",
    );
    assert_ne!(query, encoded);
    assert_eq!(
        send_raw(&server, "GET", &format!("{path}?{encoded}"), None)
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn seed_curl_recipe_works_byte_for_byte() {
    for tool in ["curl", "md5sum", "openssl"] {
        if std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            eprintln!("skipping: {tool} is not installed");
            return;
        }
    }
    let server = Server::start("");
    let mut ws = server.connect(KEY).await;
    ws.subscribe("chat").await;
    // The recipe from the HTTP API reference, unchanged but for the app credentials and the
    // host it posts to.
    let recipe = r#"
APP_ID=1
KEY=app-key
SECRET=app-secret
BODY='{"name":"message","channel":"chat","data":"{\"text\":\"hello\"}"}'
BODY_MD5=$(printf '%s' "$BODY" | md5sum | awk '{print $1}')
TS=$(date +%s)
QS="auth_key=$KEY&auth_timestamp=$TS&auth_version=1.0&body_md5=$BODY_MD5"
SIG=$(printf 'POST\n/apps/%s/events\n%s' "$APP_ID" "$QS" \
      | openssl dgst -sha256 -hmac "$SECRET" -hex \
      | awk '{print $NF}')
 
curl -X POST 'https://ws-sa.mawjly.com/apps/'$APP_ID'/events?'$QS'&auth_signature='$SIG \
     -H 'Content-Type: application/json' \
     -d "$BODY"
"#
    .replace(
        "https://ws-sa.mawjly.com",
        &format!("http://{}", server.addr),
    );
    let output = tokio::process::Command::new("bash")
        .args(["-c", &recipe])
        .output()
        .await
        .expect("run bash");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "{}",
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        ws.next().await,
        json!({"event":"message","channel":"chat","data":"{\"text\":\"hello\"}"})
    );
}

/// The official Python library (3.x) posts `terminate_user_connections` to
/// `/users/{id}/terminate_connections`, without `/apps/{id}`, signed over that path: the
/// signing key names the app.
#[tokio::test]
async fn terminate_connections_without_the_apps_prefix_finds_the_app_by_its_key() {
    let server = Server::start(
        "[[apps]]\nid = \"1\"\nkey = \"k1\"\nsecret = \"s1\"\n\
         [[apps]]\nid = \"2\"\nkey = \"k2\"\nsecret = \"s2\"\n",
    );
    let mut ann = server.connect("k2").await;
    let data = json!({"id": "ann"}).to_string();
    let auth = herald_protocol::auth::user_auth("k2", "s2", &ann.socket_id, &data);
    ann.send(json!({"event": "pusher:signin", "data": {"auth": auth, "user_data": data}}))
        .await;
    ann.expect("pusher:signin_success").await;
    let path = "/users/ann/terminate_connections";
    let now = support::now();
    // Another app's key and secret reach only that app's users.
    assert_eq!(
        signed_as(&server, "POST", path, &[], Some("{}"), "k1", "s1", now).await,
        (200, json!({}))
    );
    ann.assert_alive().await;
    let (status, body) = signed_as(&server, "POST", path, &[], Some("{}"), "k2", "s1", now).await;
    assert_eq!(status, 401, "signed with the wrong app's secret: {body}");
    let (status, body) =
        signed_as(&server, "POST", path, &[], Some("{}"), "nobody", "s2", now).await;
    assert_eq!(status, 401, "an unknown key: {body}");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("nobody")),
        "{body}"
    );
    assert_eq!(
        signed_as(&server, "POST", path, &[], Some("{}"), "k2", "s2", now).await,
        (200, json!({}))
    );
    assert_eq!(ann.expect_close().await, 4009, "terminated");
}
