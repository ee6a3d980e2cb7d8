//! The `herald` CLI as a newcomer types it (issue 30 item 2), through the real binary: each
//! test asserts the exact output and exit code. Options before or after the subcommand,
//! `serve --help` with only its own options, `trigger -c a,b`, presence auth without
//! member data, an https:// URL to the plain port, the age of a webhook, and `apps
//! import FILE` with FILE's plans.

mod support;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use support::db::{Engine, TestDb};
use support::{Server, KEY};

/// What a run of `herald` printed and how it exited.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `herald ARGS…` with `stdin`, in an environment without the variables the CLI reads.
fn herald(args: &[&str], stdin: &str) -> Run {
    herald_with(args, stdin, &[])
}

/// [`herald`] with these variables set.
fn herald_with(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .env_remove("PUSHER_URL")
        .env_remove("HERALD_CA_CERT")
        .env_remove("HERALD_CONFIG")
        .env_remove("HERALD_APPS_URL")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run herald");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let output = child.wait_with_output().expect("wait");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn file(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("herald-usage-{}-{name}", std::process::id()));
    std::fs::write(&path, text).expect("write file");
    path
}

fn url(server: &Server) -> String {
    format!("http://app-key:app-secret@{}/apps/1", server.addr)
}

#[test]
fn serve_help_shows_only_what_serve_reads() {
    let output = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--help"])
        .env_remove("HERALD_CA_CERT")
        .env_remove("PUSHER_URL")
        .env("HERALD_CONFIG", "/etc/private/herald.toml")
        .output()
        .expect("run");
    let help = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0));
    let options: Vec<&str> = help
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .filter_map(|l| l.split([' ', '<']).next())
        .collect();
    assert_eq!(
        options,
        [
            "host",
            "port",
            "config",
            "pid-file",
            "insecure-default-credentials",
        ],
        "{help}"
    );
    assert!(help.contains("[env: HERALD_CONFIG]"), "{help}");
    assert!(!help.contains("/etc/private"), "no env value shown: {help}");
    assert!(!help.contains("HERALD_CA_CERT"), "{help}");

    // An option serve does not read is refused, before or after the subcommand.
    let before = herald(&["--url", "http://k:s@127.0.0.1:1/apps/1", "serve"], "");
    assert_eq!(before.code, 2, "{before:?}");
    assert_eq!(
        before.stderr,
        "herald: --url means nothing to `herald serve`\n"
    );
    // --config before serve is serve's --config.
    let config = herald(
        &[
            "--config",
            "/nonexistent/herald.toml",
            "serve",
            "--port",
            "0",
        ],
        "",
    );
    assert_eq!(config.code, 2, "{config:?}");
    assert!(
        config.stderr.contains("/nonexistent/herald.toml"),
        "{config:?}"
    );
    let after = herald(&["serve", "--json"], "");
    assert_eq!(after.code, 2, "{after:?}");
    assert!(
        after
            .stderr
            .starts_with("error: unexpected argument '--json'"),
        "{after:?}"
    );
}

#[tokio::test]
async fn trigger_takes_comma_separated_channels_and_options_on_either_side() {
    let server = Server::start("");
    let url = url(&server);
    let mut ws = server.connect(KEY).await;
    ws.subscribe("a").await;
    ws.subscribe("b").await;

    // Options after the subcommand; -c a,b is two channels; no empty line.
    let run = herald(
        &["trigger", "-c", "a,b", "-e", "e1", "-d", "x", "--url", &url],
        "",
    );
    assert_eq!(
        (run.code, run.stdout.as_str(), run.stderr.as_str()),
        (0, "ok: true\n", "")
    );
    let mut got = [ws.next().await, ws.next().await];
    got.sort_by_key(|f| f["channel"].as_str().map(str::to_owned));
    assert_eq!(
        got,
        [
            json!({"event":"e1","channel":"a","data":"x"}),
            json!({"event":"e1","channel":"b","data":"x"})
        ]
    );

    // The same options before it, -c repeated and mixed with a list.
    let run = herald(
        &[
            "--url",
            &url,
            "--json",
            "trigger",
            "-c",
            "a",
            "-c",
            "b,c",
            "-e",
            "e2",
            "-d",
            "y",
            "--info",
            "subscription_count",
        ],
        "",
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&run.stdout).expect("JSON"),
        json!({"ok": true, "channels": {
            "a": {"subscription_count": 1, "user_count": null},
            "b": {"subscription_count": 1, "user_count": null},
            "c": {"subscription_count": 0, "user_count": null},
        }})
    );
    assert_eq!(ws.next().await["event"], "e2");
    assert_eq!(ws.next().await["event"], "e2");

    // Readable, with the attributes asked for.
    let run = herald(
        &[
            "trigger",
            "-c",
            "a",
            "-e",
            "e3",
            "-d",
            "z",
            "--info",
            "subscription_count",
            "--url",
            &url,
        ],
        "",
    );
    assert_eq!(
        run.stdout, "channels:\n  a  subscription_count=1\nok: true\n",
        "{run:?}"
    );

    // An empty list says so.
    drop(ws);
    let empty = Server::start("");
    let run = herald(&["channels", "--url", &self::url(&empty)], "");
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "channels: none\n"),
        "{run:?}"
    );
}

#[test]
fn a_flag_after_the_command_wins_then_one_before_it_then_the_variable() {
    let server = Server::start("");
    let good = url(&server);
    let dead = "http://app-key:app-secret@127.0.0.1:1/apps/1";
    let ok = "channels: none\n";
    let run = herald_with(&["--url", &good, "channels"], "", &[("PUSHER_URL", dead)]);
    assert_eq!((run.code, run.stdout.as_str()), (0, ok), "{run:?}");
    let run = herald(&["--url", dead, "channels", "--url", &good], "");
    assert_eq!((run.code, run.stdout.as_str()), (0, ok), "{run:?}");
    let run = herald(&["--url", &good, "channels", "--url", dead], "");
    assert_eq!(run.code, 1, "{run:?}");
    let run = herald_with(&["channels"], "", &[("PUSHER_URL", &good)]);
    assert_eq!((run.code, run.stdout.as_str()), (0, ok), "{run:?}");
}

#[test]
fn auth_refuses_a_presence_channel_without_member_data() {
    let url = "http://278d425bdf160c739803:7ad3773142a6692b25b8@127.0.0.1:1/apps/1";
    let refused = herald(
        &[
            "auth",
            "--url",
            url,
            "--socket-id",
            "1234.1234",
            "--channel",
            "presence-room",
        ],
        "",
    );
    assert_eq!(refused.code, 2, "{refused:?}");
    assert_eq!(refused.stdout, "");
    assert_eq!(
        refused.stderr,
        "herald: --channel presence-room needs --channel-data '{\"user_id\":\"…\",\"user_info\":{…}}': a presence subscription signs its member\n"
    );
    let signed = herald(
        &[
            "auth",
            "--url",
            url,
            "--json",
            "--socket-id",
            "1234.1234",
            "--channel",
            "presence-room",
            "--channel-data",
            "{\"user_id\":\"1\"}",
        ],
        "",
    );
    assert_eq!(signed.code, 0, "{signed:?}");
    let signed: Value = serde_json::from_str(&signed.stdout).expect("JSON");
    assert_eq!(signed["channel_data"], "{\"user_id\":\"1\"}");
}

#[tokio::test]
async fn https_to_the_plain_port_says_so() {
    let server = Server::start("");
    let https = format!("https://app-key:app-secret@{}/apps/1", server.addr);
    let run = herald(
        &["trigger", "-c", "a", "-e", "e", "-d", "x", "--url", &https],
        "",
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(
        run.stderr,
        format!(
            "herald: the server at https://{} answered without TLS: use http://, or an https:// port that serves TLS\n",
            server.addr
        )
    );
    // SDK users get the same, as its own variant.
    let sdk = herald_sdk::Client::from_url(&https).expect("URL");
    match sdk.trigger(&["a"], "e", "x").await {
        Err(herald_sdk::Error::NotTls { url }) => {
            assert_eq!(url, format!("https://{}", server.addr));
        }
        other => panic!("expected NotTls, got {other:?}"),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

/// `herald webhook verify` of `body`, signed with the app's secret.
fn verify(body: &str, extra: &[&str]) -> Run {
    let signature = herald_protocol::webhook::webhook_signature("app-secret", body.as_bytes());
    let mut args = vec![
        "webhook",
        "verify",
        "--url",
        "http://app-key:app-secret@127.0.0.1:1/apps/1",
        "--key",
        "app-key",
        "--signature",
        &signature,
    ];
    args.extend_from_slice(extra);
    herald(&args, body)
}

#[test]
fn webhook_verify_reports_the_age_and_refuses_an_old_one() {
    let years = now_ms() / 1000 / 31_557_600;
    let ancient = r#"{"time_ms":1,"events":[]}"#;
    let refused = verify(ancient, &[]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert_eq!(refused.stdout, "");
    assert_eq!(
        refused.stderr,
        format!("herald: the signature is valid, but the webhook was sent {years} years ago (time_ms 1), over --max-age 300: a stale or replayed body (--max-age 0 accepts any age)\n")
    );
    let any_age = verify(ancient, &["--max-age", "0"]);
    assert_eq!(any_age.code, 0, "{any_age:?}");
    assert!(
        any_age
            .stdout
            .lines()
            .any(|l| l == format!("sent: {years} years ago")),
        "{any_age:?}"
    );

    let future = format!(r#"{{"time_ms":{},"events":[]}}"#, now_ms() + 7_230_000);
    let refused = verify(&future, &[]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("was sent 2 hours from now"),
        "{refused:?}"
    );

    let fresh = format!(
        r#"{{"time_ms":{},"events":[{{"name":"channel_occupied","channel":"a"}}]}}"#,
        now_ms() - 90_000
    );
    let run = verify(&fresh, &["--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let out: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(out["valid"], true);
    assert_eq!(out["sent"], "1 minute ago");
    assert!(
        (90..=95).contains(&out["age_s"].as_i64().expect("age_s")),
        "{out}"
    );
}

#[test]
fn apps_take_config_after_the_subcommand_and_import_takes_the_files_plans() {
    let db = TestDb::new(Engine::Postgres);
    let config = file(
        "nodes.toml",
        &format!(
            "apps_url = \"{}\"\n\n[plans.pro]\nmax_connections = 1000\n",
            db.url()
        ),
    );
    let config = config.to_str().expect("UTF-8 path");
    let run = herald(&["apps", "migrate", "--config", config], "");
    assert_eq!(run.code, 0, "{run:?}");

    // The example of docs/apps-database.md, with --config after the subcommand.
    let run = herald(
        &[
            "apps",
            "add",
            "--id",
            "42",
            "--plan",
            "pro",
            "--set",
            "max_connections=500",
            "--webhook",
            "https://example.com/hook",
            "--config",
            config,
        ],
        "",
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("Added app 42\n"), "{run:?}");
    assert!(run.stdout.contains("\nplan: pro\n"), "{run:?}");
    assert!(run.stdout.contains("\nmax_connections: 500\n"), "{run:?}");
    assert!(
        run.stdout
            .contains("\nwebhooks: [{\"url\":\"https://example.com/hook\"}]\n"),
        "{run:?}"
    );

    // Without a config file no plan is known: it says where plans come from.
    let run = herald(
        &[
            "apps",
            "add",
            "--id",
            "43",
            "--plan",
            "pro",
            "--apps-url",
            &db.url(),
        ],
        "",
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(
        run.stderr,
        "herald: plan 'pro': plans are the [plans.NAME] tables of the config file the nodes run with; give it with --config FILE or HERALD_CONFIG\n"
    );

    let two = file(
        "two.toml",
        "[plans.free]\nmax_connections = 10\n\n[[apps]]\nid = \"7\"\nkey = \"k7\"\nsecret = \"s7\"\nplan = \"free\"\n",
    );
    let two = two.to_str().expect("UTF-8 path");
    // The nodes' config file lacks FILE's plan: refused, nothing written.
    let run = herald(&["apps", "import", "--config", config, two], "");
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(
        run.stderr,
        format!("herald: `apps[0].plan`: 'free' is a plan of {two} but not of the config file the nodes run with (--config): add [plans.free] to it first (nothing was imported)\n")
    );
    // With only the database, FILE's own plans check its apps.
    let run = herald(&["apps", "import", two, "--apps-url", &db.url()], "");
    assert_eq!(
        (run.code, run.stdout.as_str(), run.stderr.as_str()),
        (0, "Imported 1 app(s): 7.\n", "")
    );
    // Options before the subcommand too.
    let run = herald(&["--config", config, "--json", "apps", "list"], "");
    assert_eq!(run.code, 0, "{run:?}");
    let list: Value = serde_json::from_str(&run.stdout).expect("JSON");
    let seven = list
        .as_array()
        .and_then(|apps| apps.iter().find(|a| a["id"] == "7"))
        .unwrap_or_else(|| panic!("app 7 listed: {list}"));
    assert_eq!(seven["plan"], "free", "{list}");
    // Listed with the nodes' config, which lacks 'free': flagged, as a node would see it.
    assert!(
        seven["invalid"]
            .as_str()
            .is_some_and(|why| why.contains("unknown plan 'free'")),
        "{list}"
    );
}
