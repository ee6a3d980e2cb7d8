//! The Rust SDK and the official Node library sign the same inputs: the outputs must be
//! identical strings. And pusher-js decrypts what the SDK encrypts.

mod support;

use std::path::Path;
use std::process::Command;

use herald_sdk::Client;
use serde_json::{json, Value};

const MASTER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// Runs `script` with the official `pusher` library (as `pusher`) and returns its JSON output.
fn node(script: &str) -> Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/js");
    assert!(
        dir.join("node_modules/pusher").is_dir(),
        "the official clients are not installed: run `npm ci --prefix tests/js` first"
    );
    let program = format!(
        "const Pusher = require('pusher');\
         const pusher = new Pusher({{appId: '1', key: 'key-a', secret: 'secret-b', encryptionMasterKeyBase64: '{MASTER_KEY}'}});\
         {script}"
    );
    let output = Command::new("node")
        .args(["-e", &program])
        .current_dir(&dir)
        .output()
        .expect("run node");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("node printed JSON")
}

fn sdk() -> Client {
    Client::builder("1", "key-a", "secret-b")
        .encryption_master_key_base64(MASTER_KEY)
        .build()
        .expect("valid")
}

#[test]
fn channel_and_user_auth_match_the_node_library() {
    let member = json!({"user_id": "10", "user_info": {"name": "Mr. Pusher", "emoji": "é"}});
    let user = json!({"id": "12345", "user_info": {"name": "Alice"}, "watchlist": ["2", "3"]});
    let from_node = node(&format!(
        "console.log(JSON.stringify([\
            pusher.authorizeChannel('1234.1234', 'private-foobar'),\
            pusher.authorizeChannel('1234.1234', 'presence-foobar', {member}),\
            pusher.authorizeChannel('1234.1234', 'private-encrypted-foobar'),\
            pusher.authenticateUser('1234.1234', {user}),\
        ]))"
    ));
    let c = sdk();
    let ours = json!([
        c.authorize_channel("1234.1234", "private-foobar", None)
            .expect("private"),
        c.authorize_channel("1234.1234", "presence-foobar", Some(&member))
            .expect("presence"),
        c.authorize_channel("1234.1234", "private-encrypted-foobar", None)
            .expect("encrypted"),
        c.authenticate_user("1234.1234", &user).expect("user"),
    ]);
    assert_eq!(ours, from_node);
}

#[test]
fn shared_secret_matches_the_node_library() {
    let from_node = node(
        "console.log(JSON.stringify(pusher.channelSharedSecret('private-encrypted-x').toString('base64')))",
    );
    let ours = sdk()
        .authorize_channel("1.1", "private-encrypted-x", None)
        .expect("auth")
        .shared_secret;
    assert_eq!(
        Some(from_node.as_str().unwrap_or_default().to_owned()),
        ours
    );
}

/// pusher-js, subscribed to an encrypted channel through a real server, decrypts an event
/// the Rust SDK encrypted.
#[tokio::test]
async fn pusher_js_decrypts_what_the_sdk_encrypted() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let server = support::Server::start("");
    let port = server.addr.rsplit(':').next().expect("port").to_owned();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/js");
    // The subscriber signs its channel auth (and gets the shared secret) from the official
    // Node library holding the same master key; it prints READY, then the decrypted data.
    let script = format!(
        "const Pusher = require('pusher-js'); const Server = require('pusher');\
         const auth = new Server({{appId: '1', key: 'app-key', secret: 'app-secret', encryptionMasterKeyBase64: '{MASTER_KEY}'}});\
         const p = new Pusher('app-key', {{cluster: 'mt1', wsHost: '127.0.0.1', wsPort: {port}, forceTLS: false,\
           enabledTransports: ['ws'], disableStats: true,\
           channelAuthorization: {{customHandler: (x, cb) => cb(null, auth.authorizeChannel(x.socketId, x.channelName))}}}});\
         const ch = p.subscribe('private-encrypted-vault');\
         ch.bind('pusher:subscription_succeeded', () => console.log('READY'));\
         ch.bind('secret', (d) => {{ console.log(JSON.stringify(d)); p.disconnect(); process.exit(0); }});\
         setTimeout(() => process.exit(3), 8000);"
    );
    let mut child = Command::new("node")
        .args(["-e", &script])
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .spawn()
        .expect("run node");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let ready = tokio::task::spawn_blocking(move || {
        let first = lines.next();
        (first, lines)
    })
    .await
    .expect("join");
    assert_eq!(ready.0.and_then(Result::ok).as_deref(), Some("READY"));
    let client = Client::builder("1", "app-key", "app-secret")
        .host("127.0.0.1")
        .port(port.parse().expect("port"))
        .tls(false)
        .encryption_master_key_base64(MASTER_KEY)
        .build()
        .expect("client");
    let data = herald_sdk::EventData::json(&json!({"gold": 42, "note": "é"})).expect("json");
    client
        .trigger(&["private-encrypted-vault"], "secret", data)
        .await
        .expect("trigger");
    let mut lines = ready.1;
    let received = tokio::task::spawn_blocking(move || lines.next())
        .await
        .expect("join")
        .and_then(Result::ok);
    assert_eq!(received.as_deref(), Some(r#"{"gold":42,"note":"é"}"#));
    assert!(child.wait().expect("node exits").success());
}
