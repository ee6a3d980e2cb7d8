//! The `herald` binary's start-up behaviour: configuration errors and the banner.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn herald() -> Command {
    Command::new(env!("CARGO_BIN_EXE_herald"))
}

fn config_file(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("herald-cli-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn bad_configuration_stops_start_up_naming_the_field() {
    for (name, text, field) in [
        ("unknown", "colour = \"blue\"\n", "colour"),
        ("type", "port = \"six\"\n", "port"),
        (
            "missing",
            "[[apps]]\nid = \"1\"\nkey = \"k\"\n",
            "apps[0].secret",
        ),
        (
            "zero",
            "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\nmax_channels_per_trigger = 0\n",
            "apps[0].max_channels_per_trigger",
        ),
    ] {
        let path = config_file(name, text);
        let output = herald()
            .args(["serve", "--port", "0", "--config"])
            .arg(&path)
            .output()
            .expect("run herald");
        assert_eq!(output.status.code(), Some(2), "{name}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(field), "{name}: {stderr}");
        // A parse error shows its line on the next lines (tests/config_errors.rs).
        assert!(
            stderr.starts_with("herald: invalid config"),
            "{name}: {stderr}"
        );
    }
    let output = herald()
        .args([
            "serve",
            "--port",
            "0",
            "--config",
            "/nonexistent/herald.toml",
        ])
        .output()
        .expect("run herald");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/herald.toml"));
}

#[test]
fn environment_variables_configure_the_default_app_and_its_secret_is_not_printed() {
    let mut child = herald()
        .args(["serve", "--port", "0"])
        .env("HERALD_APP_KEY", "env-key")
        .env("HERALD_APP_SECRET", "env-secret")
        .env_remove("HERALD_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start herald");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let lines: Vec<String> = stdout.by_ref().take(2).map(|l| l.expect("line")).collect();
    let _ = child.kill();
    let _ = child.wait();
    let rest: Vec<String> = stdout.map_while(Result::ok).collect();
    assert!(
        lines[0].starts_with("Herald ") && lines[0].contains("listening on 127.0.0.1:"),
        "{lines:?}"
    );
    assert_eq!(lines[1], "app 1: key env-key");
    assert!(
        !rest.iter().any(|l| l.contains("env-secret")),
        "a configured secret must not be printed: {rest:?}"
    );
}

#[test]
fn the_embedded_default_on_loopback_prints_a_ready_pusher_url() {
    let mut child = herald()
        .args(["serve", "--port", "0"])
        .env_remove("HERALD_CONFIG")
        .env("RUST_LOG", "warn")
        // A free admin port: the default one may be another test's, which is warned about.
        .env("HERALD_ADMIN_PORT", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start herald");
    let lines: Vec<String> = BufReader::new(child.stdout.take().expect("stdout"))
        .lines()
        .take(3)
        .map(|l| l.expect("line"))
        .collect();
    let _ = child.kill();
    let output = child.wait_with_output().expect("wait");
    let port = lines[0].rsplit(':').next().expect("port");
    assert_eq!(
        lines[2],
        format!("PUSHER_URL=http://app-key:app-secret@127.0.0.1:{port}/apps/1")
    );
    // On loopback the defaults are expected and nothing is said about them.
    assert!(String::from_utf8_lossy(&output.stderr).trim().is_empty());
}

#[test]
fn default_credentials_on_a_public_address_refuse_to_start() {
    let output = herald()
        .args(["serve", "--host", "0.0.0.0", "--port", "0"])
        .env_remove("HERALD_CONFIG")
        .output()
        .expect("run herald");
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty(), "nothing was served");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    for needle in [
        "default credentials",
        "[[apps]]",
        "HERALD_APP_SECRET",
        "--insecure-default-credentials",
    ] {
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }

    // The explicit flag serves them, with a warning, and never prints the secret URL.
    let mut child = herald()
        .args([
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--insecure-default-credentials",
        ])
        .env_remove("HERALD_CONFIG")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start herald");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = stdout.next().and_then(Result::ok).unwrap_or_default();
    assert!(first.contains("listening on 0.0.0.0:"), "{first}");
    let _ = child.kill();
    let output = child.wait_with_output().expect("wait");
    let rest: Vec<String> = stdout.map_while(Result::ok).collect();
    assert!(!rest.iter().any(|l| l.contains("PUSHER_URL")), "{rest:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--insecure-default-credentials"),
        "{stderr}"
    );
}
