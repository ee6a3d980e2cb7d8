//! The Rust SDK and the official Node library sign the same inputs: the outputs must be
//! identical strings.

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
