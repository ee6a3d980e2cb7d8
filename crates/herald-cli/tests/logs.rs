//! What `herald serve` tells its operator (issue 30 item 3), through the real binary: logs
//! without colour codes off a terminal or under NO_COLOR, an info line per kind of refusal
//! at most once per app and limit per window, refusal messages that name a plan only when
//! the app has one, the console's address in the banner, and the admin root's list of
//! endpoints.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{now, signed_as, Server};

const REFUSED: &str = "Refused: over the app's limit";

fn app(extra: &str) -> String {
    format!("[[apps]]\nid = \"1\"\nkey = \"k1\"\nsecret = \"s1\"\n{extra}\n")
}

async fn trigger(server: &Server) -> (u16, Value) {
    let body = json!({"name": "ev", "channel": "news", "data": "x"}).to_string();
    signed_as(
        server,
        "POST",
        "/apps/1/events",
        &[],
        Some(&body),
        "k1",
        "s1",
        now(),
    )
    .await
}

/// The log's lines that report a refusal over `limit`.
fn refusals(server: &Server, limit: &str) -> Vec<String> {
    server
        .log()
        .lines()
        .filter(|l| l.contains(REFUSED) && l.contains(&format!("limit=\"{limit}\"")))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_client_over_a_rate_is_logged_once_per_window_and_told_of_no_plan() {
    let server = Server::start_logged(&app("publishes_per_second = 1"), &[]);
    let mut refused = 0;
    let mut message = Value::Null;
    for _ in 0..6 {
        let (status, body) = trigger(&server).await;
        if status == 429 {
            refused += 1;
            message = body;
        }
    }
    assert!(refused >= 4, "over 1 a second: {refused} refused");
    // The app has no plan: the message does not speak of one.
    let text = message.to_string();
    assert!(
        text.contains("Rate limit exceeded: this app allows 1 publishes per second"),
        "{text}"
    );
    assert!(!text.contains("plan"), "{text}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines = refusals(&server, "publish_rate");
    assert_eq!(lines.len(), 1, "one line for the burst: {lines:#?}");
    let line = &lines[0];
    assert!(
        line.contains(" INFO ")
            && line.contains("app_id=\"1\"")
            && line.contains("client=127.0.0.1")
            && line.contains("refused_since_last_log=0"),
        "{line}"
    );
    // The next window's first refusal is logged, with the count held back.
    tokio::time::sleep(Duration::from_millis(10_100)).await;
    assert_eq!(trigger(&server).await.0, 200);
    assert_eq!(trigger(&server).await.0, 429);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines = refusals(&server, "publish_rate");
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let held = format!("refused_since_last_log={}", refused - 1);
    assert!(lines[1].contains(&held), "{held}: {}", lines[1]);
}

#[tokio::test]
async fn a_plans_limit_names_the_plan_and_the_daily_quota_is_logged() {
    let config = format!(
        "[plans.pro]\nmessages_per_day = 1\n{}",
        app("plan = \"pro\"")
    );
    let server = Server::start_logged(&config, &[]);
    assert_eq!(trigger(&server).await.0, 200);
    let (status, body) = trigger(&server).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.to_string().contains(
            "Over the daily message quota: this app's plan 'pro' allows 1 messages per day"
        ),
        "{body}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines = refusals(&server, "daily_messages");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains("client=127.0.0.1"), "{}", lines[0]);
}

#[tokio::test]
async fn a_connection_over_the_apps_cap_is_logged_with_its_address() {
    let server = Server::start_logged(&app("max_connections = 1"), &[]);
    let _one = server.connect("k1").await;
    for _ in 0..3 {
        let (_, first) = server
            .connect_raw("/app/k1?protocol=7&client=js&version=8.6.0")
            .await;
        let first = first.expect("a pusher:error");
        assert_eq!(first["data"]["code"], 4004, "{first}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines = refusals(&server, "connections");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains("app_id=\"1\"") && lines[0].contains("client=127.0.0.1"),
        "{}",
        lines[0]
    );
}

/// Inside an open socket the connection's address is not kept (its state is kept small);
/// the refusal names the socket, which the app's auth endpoint saw with the address.
#[tokio::test]
async fn a_refusal_inside_a_socket_is_logged_with_its_socket_id() {
    let server = Server::start_logged(&app("max_subscriptions_per_connection = 1"), &[]);
    let mut ws = server.connect("k1").await;
    ws.subscribe("first").await;
    for channel in ["second", "third"] {
        let refused = ws.subscribe(channel).await;
        assert_eq!(refused["event"], "pusher:subscription_error", "{refused}");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let lines = refusals(&server, "subscriptions_per_connection");
        if !lines.is_empty() || Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains("app_id=\"1\"")
            && lines[0].contains(&format!("socket_id={}", ws.socket_id))
            && !lines[0].contains("client="),
        "{}",
        lines[0]
    );
}

/// Starts `herald serve` with stderr on a pipe and gives its first log lines (the two it
/// writes at start), stopping it.
fn first_log_lines(env: &[(&str, &str)]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--port", "0"])
        .env_remove("HERALD_CONFIG")
        .env_remove("NO_COLOR")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start herald");
    let stderr = child.stderr.take().expect("stderr");
    let lines: Vec<String> = BufReader::new(stderr)
        .lines()
        .take(2)
        .map_while(Result::ok)
        .collect();
    let _ = child.kill();
    let _ = child.wait();
    lines.join("\n")
}

#[test]
fn logs_to_a_pipe_have_no_colour_codes() {
    let logs = first_log_lines(&[]);
    assert!(logs.contains(" INFO "), "{logs}");
    assert!(!logs.contains('\u{1b}'), "no ESC byte: {logs:?}");
}

/// Starts `herald serve` on a terminal (`script` gives it one) and gives what it wrote
/// there up to the banner's last line, stopping it by the pid it wrote.
fn on_a_terminal(no_color: bool) -> String {
    let dir = std::env::temp_dir();
    let pid_file = dir.join(format!("herald-logs-{}-{no_color}.pid", std::process::id()));
    let serve = format!(
        "{} serve --port 0 --pid-file {}",
        env!("CARGO_BIN_EXE_herald"),
        pid_file.display()
    );
    let mut command = Command::new("script");
    command
        .args(["-qec", &serve, "/dev/null"])
        .env_remove("HERALD_CONFIG")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if no_color {
        command.env("NO_COLOR", "1");
    }
    let mut child = command.spawn().expect("start script");
    let stdout = child.stdout.take().expect("stdout");
    let mut seen = String::new();
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("admin listening on") {
            break;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(pid) = std::fs::read_to_string(&pid_file) {
            let _ = Command::new("kill").arg(pid.trim()).status();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.wait();
    seen
}

#[test]
fn a_terminal_gets_colour_unless_no_color_is_set() {
    let coloured = on_a_terminal(false);
    assert!(coloured.contains(" INFO"), "{coloured}");
    assert!(
        coloured.contains('\u{1b}'),
        "colour on a terminal: {coloured:?}"
    );
    let plain = on_a_terminal(true);
    assert!(plain.contains(" INFO "), "{plain}");
    assert!(!plain.contains('\u{1b}'), "NO_COLOR: {plain:?}");
}

#[tokio::test]
async fn the_banner_gives_the_console_and_the_admin_root_lists_its_endpoints() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--port", "0"])
        .env_remove("HERALD_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start herald");
    let stdout = child.stdout.take().expect("stdout");
    let mut banner = Vec::new();
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        let last = line.starts_with("admin listening on ");
        banner.push(line);
        if last {
            break;
        }
    }
    let admin = banner
        .last()
        .and_then(|l| l.strip_prefix("admin listening on "))
        .expect("the admin line")
        .to_owned();
    let console = format!("console: http://{admin}/console");
    assert!(banner.contains(&console), "{console} in {banner:#?}");

    let client = reqwest::Client::new();
    // Any Host, as the probes: it names paths only.
    let answer = client
        .get(format!("http://{admin}/"))
        .header("Host", "rebound.example")
        .send()
        .await
        .expect("GET /");
    assert_eq!(answer.status(), 200);
    let listed: Value = answer.json().await.expect("JSON");
    for path in ["/live", "/ready", "/metrics", "/console"] {
        assert!(listed["endpoints"][path].is_string(), "{path}: {listed}");
    }
    let console_page = client
        .get(format!("http://{admin}/console"))
        .send()
        .await
        .expect("GET /console");
    assert_eq!(console_page.status(), 200, "the printed address serves");
    let _ = child.kill();
    let _ = child.wait();
}
