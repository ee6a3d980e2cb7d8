//! Secrets never reach the output: a configured app's secret, a Redis password and a
//! webhook URL's password stay out of stdout and of debug-level logs, through start-up,
//! traffic, refused signatures, webhooks and a cluster failing to start.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Redis, Server};

const SECRET: &str = "s3cr3t-app-secret";
const REDIS_PASSWORD: &str = "r3dis-pa55word";
const HOOK_PASSWORD: &str = "h00k-pa55word";

#[tokio::test]
async fn secrets_stay_out_of_the_output() {
    let redis = Redis::start_with_password(REDIS_PASSWORD);
    let config = format!(
        "adapter = \"redis\"\nredis_url = \"{}\"\n\
         [[apps]]\nid = \"1\"\nkey = \"the-key\"\nsecret = \"{SECRET}\"\n\
         [[apps.webhooks]]\nurl = \"http://hook:{HOOK_PASSWORD}@127.0.0.1:9/hook\"\n",
        redis.url()
    );
    let server = Server::start_logged(&config, &[("RUST_LOG", "debug")]);
    // Traffic that logs: connections, a refused private subscription, API calls with a
    // right and a wrong secret, and webhooks to an unreachable receiver.
    let mut ws = server.connect("the-key").await;
    ws.send(
        json!({"event":"pusher:subscribe","data":{"channel":"private-x","auth":"the-key:bad"}}),
    )
    .await;
    ws.expect("pusher:subscription_error").await;
    ws.subscribe("public").await;
    for secret in [SECRET, "wrong"] {
        let _ = support::signed_as(
            &server,
            "POST",
            "/apps/1/events",
            &[],
            Some(r#"{"name":"e","channel":"public","data":"{}"}"#),
            "the-key",
            secret,
            support::now(),
        )
        .await;
    }
    drop(ws);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    support::assert_pusher_js_served_as(&server, "1", "the-key", SECRET);
    let log = server.log();
    assert!(log.contains("Joined the cluster"), "{log}");
    assert!(
        log.contains("Webhook"),
        "the webhook failed and was logged: {log}"
    );
    for secret in [SECRET, REDIS_PASSWORD, HOOK_PASSWORD] {
        assert!(!log.contains(secret), "{secret} is in the log:\n{log}");
    }

    // A cluster that cannot start says so without the password.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--port", "0"])
        .env("HERALD_DATA_DIR", support::scratch_data_dir())
        .env("HERALD_ADAPTER", "redis")
        .env(
            "HERALD_REDIS_URL",
            format!("redis://:{REDIS_PASSWORD}@127.0.0.1:1/0"),
        )
        .env("HERALD_APP_KEY", "k")
        .env("HERALD_APP_SECRET", SECRET)
        .env("RUST_LOG", "debug")
        .env_remove("HERALD_CONFIG")
        .output()
        .expect("run herald");
    assert!(!output.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(all.contains("cannot reach Redis"), "{all}");
    for secret in [SECRET, REDIS_PASSWORD] {
        assert!(!all.contains(secret), "{secret} is in the output:\n{all}");
    }
}
