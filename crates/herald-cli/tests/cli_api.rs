//! The `herald` API commands against a real server: output, stdin input, exit codes.

mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};
use support::{Server, KEY};

fn herald(server: Option<&Server>, args: &[&str], stdin: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match server {
        Some(s) => command.env(
            "PUSHER_URL",
            format!("http://app-key:app-secret@{}/apps/1", s.addr),
        ),
        None => command.env_remove("PUSHER_URL"),
    };
    let mut child = command.spawn().expect("run herald");
    if let Some(mut pipe) = child.stdin.take() {
        if let Some(input) = stdin {
            pipe.write_all(input.as_bytes()).expect("write stdin");
        }
    }
    child.wait_with_output().expect("wait")
}

fn stdout_json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON output")
}

#[tokio::test]
async fn trigger_and_batch_reach_subscribers() {
    let server = Server::start("");
    let mut ws = server.connect(KEY).await;
    ws.subscribe("cli").await;
    let out = herald(
        Some(&server),
        &[
            "trigger",
            "--json",
            "-c",
            "cli",
            "-e",
            "hello",
            "-d",
            "{\"x\":1}",
        ],
        None,
    );
    assert_eq!(stdout_json(&out)["ok"], true);
    assert_eq!(
        ws.next().await,
        json!({"event":"hello","channel":"cli","data":"{\"x\":1}"})
    );
    let lines = "{\"channel\":\"cli\",\"name\":\"a\",\"data\":\"1\"}\n{\"channel\":\"cli\",\"name\":\"b\",\"data\":{\"k\":2}}\n";
    let out = herald(Some(&server), &["batch", "--json"], Some(lines));
    assert_eq!(stdout_json(&out)["events"], 2);
    assert_eq!(ws.next().await["event"], "a");
    assert_eq!(ws.next().await["data"], "{\"k\":2}");
    let out = herald(Some(&server), &["channels", "--json"], None);
    assert!(stdout_json(&out)["channels"]["cli"].is_object());
    let out = herald(
        Some(&server),
        &["channel", "cli", "--info", "subscription_count", "--json"],
        None,
    );
    assert_eq!(stdout_json(&out)["subscription_count"], 1);
}

#[test]
fn auth_prints_the_response_an_auth_endpoint_returns() {
    let url = "http://278d425bdf160c739803:7ad3773142a6692b25b8@127.0.0.1:1/apps/1";
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "--url",
            url,
            "auth",
            "--json",
            "--socket-id",
            "1234.1234",
            "--channel",
            "private-foobar",
        ])
        .output()
        .expect("run");
    assert_eq!(
        stdout_json(&out),
        json!({"auth":"278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"})
    );
}

#[test]
fn webhook_verify_reads_stdin() {
    let body = r#"{"time_ms":1403175510755,"events":[{"channel":"test_channel","name":"channel_vacated"}]}"#;
    let run = |signature: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args([
                "--url",
                "http://k:tofu@h/apps/1",
                "webhook",
                "verify",
                "--key",
                "k",
                "--signature",
                signature,
                // The fixture is from 2014: past the default --max-age.
                "--max-age",
                "0",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(body.as_bytes())
            .expect("write");
        child.wait_with_output().expect("wait")
    };
    let ok = run("c17257e92037cd7de407ebc1ed174ceb7b2e518db127f44411b9ffc4f5b28cc5");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("valid: true"));
    let bad = run("00");
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("does not match"));
}

#[test]
fn failures_are_one_line_with_an_exit_code() {
    let server = Server::start("");
    let invalid = herald(
        Some(&server),
        &["trigger", "-c", "bad name", "-e", "e", "-d", "x"],
        None,
    );
    assert_eq!(invalid.status.code(), Some(2));
    let unreachable = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["--url", "http://k:s@127.0.0.1:1/apps/1", "channels"])
        .output()
        .expect("run");
    assert_eq!(unreachable.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert!(
        !stderr.contains("auth_signature"),
        "no signature in errors: {stderr}"
    );
    let missing = herald(None, &["channels"], None);
    assert_eq!(missing.status.code(), Some(2));
    for output in [&invalid, &unreachable, &missing] {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("herald: "), "{stderr}");
    }
}
