//! Live reload against the real binary: the config file is rewritten and the server is sent
//! SIGHUP (or `herald reload`); apps come and go, secrets, limits and webhooks change, and
//! every socket whose app stays keeps working. A file that does not load changes nothing.

mod support;

use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use support::{assert_pusher_js_served_as, events_named, now, signed_as, sink, Redis, Server, Ws};

fn app(id: &str, extra: &str) -> String {
    format!("[[apps]]\nid = \"{id}\"\nkey = \"k{id}\"\nsecret = \"s{id}\"\n{extra}\n")
}

/// The log without the terminal colours tracing writes into it.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            out.push(c);
        }
    }
    out
}

fn results(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("Configuration reloaded") || l.contains("Reload failed"))
        .count()
}

/// Waits for the server to log the result of one more reload than `seen`; returns the
/// lines logged since `before` lines.
async fn reload_result(server: &Server, before: usize, seen: usize) -> Vec<String> {
    for _ in 0..250 {
        let log = plain(&server.log());
        if results(&log) > seen {
            return log.lines().skip(before).map(str::to_owned).collect();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no reload result logged:\n{}", plain(&server.log()));
}

/// Writes `config` to the server's file, sends SIGHUP and returns what the reload logged.
async fn reload(server: &Server, config: &str) -> Vec<String> {
    std::fs::write(&server.config, config).expect("rewrite config");
    let log = plain(&server.log());
    kill(Pid::from_raw(server.pid() as i32), Signal::SIGHUP).expect("SIGHUP");
    reload_result(server, log.lines().count(), results(&log)).await
}

fn the_line<'a>(lines: &'a [String], what: &str) -> &'a str {
    let found: Vec<&String> = lines.iter().filter(|l| l.contains(what)).collect();
    assert_eq!(found.len(), 1, "one line with {what:?} in {lines:#?}");
    found[0]
}

async fn trigger(server: &Server, id: &str, secret: &str, channel: &str, data: &str) -> u16 {
    let body = json!({"name": "ev", "channel": channel, "data": data}).to_string();
    let path = format!("/apps/{id}/events");
    let key = format!("k{id}");
    let (status, _) = signed_as(server, "POST", &path, &[], Some(&body), &key, secret, now()).await;
    status
}

/// The close code a connection with `key` is refused with.
async fn refusal(server: &Server, key: &str) -> Value {
    let (_, first) = server.connect_raw(&format!("/app/{key}?protocol=7")).await;
    first.expect("a pusher:error")["data"]["code"].clone()
}

/// `GET /apps/ID/channels` signed with app ID's key and `secret`: status and body.
async fn channels(server: &Server, id: &str, secret: &str) -> (u16, Value) {
    let path = format!("/apps/{id}/channels");
    let key = format!("k{id}");
    signed_as(server, "GET", &path, &[], None, &key, secret, now()).await
}

async fn subscribed(ws: &mut Ws, channel: &str) {
    assert_eq!(
        ws.subscribe(channel).await["event"],
        "pusher_internal:subscription_succeeded"
    );
}

async fn receives(ws: &mut Ws, data: &str) {
    let ev = ws.expect("ev").await;
    assert_eq!(ev["data"], data, "{ev}");
}

/// Subscribes to a private channel signed with `secret`; returns the answer's event name.
async fn subscribe_private(ws: &mut Ws, key: &str, secret: &str, channel: &str) -> Value {
    let auth = herald_protocol::auth::channel_auth(key, secret, &ws.socket_id, channel, None);
    ws.send(json!({"event":"pusher:subscribe","data":{"channel":channel,"auth":auth}}))
        .await;
    ws.next().await["event"].clone()
}

async fn signin(ws: &mut Ws, key: &str, secret: &str) {
    let data = json!({"id": "alice"}).to_string();
    let auth = herald_protocol::auth::user_auth(key, secret, &ws.socket_id, &data);
    ws.send(json!({"event":"pusher:signin","data":{"auth":auth,"user_data":data}}))
        .await;
}

#[tokio::test]
async fn an_added_app_is_served_and_a_removed_one_is_closed_while_the_others_stay() {
    let server = Server::start_logged(&(app("1", "") + &app("2", "")), &[]);
    let mut one = server.connect("k1").await;
    subscribed(&mut one, "news").await;
    let mut two = server.connect("k2").await;
    subscribed(&mut two, "news").await;
    assert_eq!(refusal(&server, "k3").await, 4001);

    let lines = reload(&server, &(app("1", "") + &app("3", ""))).await;
    let summary = the_line(&lines, "Configuration reloaded");
    assert!(
        summary.contains("added=3") && summary.contains("removed=2"),
        "{summary}"
    );
    assert_eq!(two.expect_close().await, 4003, "the removed app's socket");
    let (status, _) = channels(&server, "2", "s2").await;
    assert_eq!(status, 404, "the removed app's API");

    // App 1's socket, open since before the reload, still gets its events.
    assert_eq!(trigger(&server, "1", "s1", "news", "after").await, 200);
    receives(&mut one, "after").await;
    one.assert_alive().await;

    let mut three = server.connect("k3").await;
    subscribed(&mut three, "news").await;
    assert_eq!(trigger(&server, "3", "s3", "news", "new app").await, 200);
    receives(&mut three, "new app").await;
    assert_pusher_js_served_as(&server, "3", "k3", "s3");
}

#[tokio::test]
async fn a_rotated_secret_refuses_old_signatures_and_keeps_open_sockets() {
    let server = Server::start_logged(&app("1", ""), &[]);
    let mut before = server.connect("k1").await;
    subscribed(&mut before, "news").await;
    let mut signed_in_before = server.connect("k1").await;
    signin(&mut signed_in_before, "k1", "s1").await;
    signed_in_before.expect("pusher:signin_success").await;

    let rotated = "[[apps]]\nid = \"1\"\nkey = \"k1\"\nsecret = \"rotated-secret\"\n";
    let lines = reload(&server, rotated).await;
    assert!(
        the_line(&lines, "Configuration reloaded").contains("updated=1 (secret)"),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("rotated-secret")),
        "the secret is never logged: {lines:?}"
    );

    assert_eq!(trigger(&server, "1", "s1", "news", "old").await, 401);
    assert_eq!(
        trigger(&server, "1", "rotated-secret", "news", "new").await,
        200
    );
    receives(&mut before, "new").await;

    let mut ws = server.connect("k1").await;
    assert_eq!(
        subscribe_private(&mut ws, "k1", "s1", "private-a").await,
        "pusher:subscription_error"
    );
    assert_eq!(
        subscribe_private(&mut ws, "k1", "rotated-secret", "private-a").await,
        "pusher_internal:subscription_succeeded"
    );
    signin(&mut ws, "k1", "s1").await;
    assert_eq!(
        ws.expect_close().await,
        4009,
        "a sign-in with the old secret"
    );
    let mut fresh = server.connect("k1").await;
    signin(&mut fresh, "k1", "rotated-secret").await;
    fresh.expect("pusher:signin_success").await;
    signed_in_before.assert_alive().await;
    assert_pusher_js_served_as(&server, "1", "k1", "rotated-secret");
}

#[tokio::test]
async fn new_limits_apply_to_the_next_connection_and_the_next_request() {
    let server = Server::start_logged(&app("1", ""), &[]);
    let mut first = server.connect("k1").await;
    let mut second = server.connect("k1").await;
    subscribed(&mut first, "news").await;
    for _ in 0..5 {
        assert_eq!(trigger(&server, "1", "s1", "news", "free").await, 200);
        receives(&mut first, "free").await;
    }

    reload(
        &server,
        &app("1", "max_connections = 2\npublishes_per_second = 1"),
    )
    .await;
    // Read at connect: the two open sockets stay, a third is over the new quota.
    assert_eq!(refusal(&server, "k1").await, 4004);
    first.assert_alive().await;
    second.assert_alive().await;
    // Read per request: a second publish within the same second is refused.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(trigger(&server, "1", "s1", "news", "limited").await);
    }
    assert!(statuses.contains(&429), "{statuses:?}");

    reload(&server, &app("1", "")).await;
    drop(second);
    let mut third = server.connect("k1").await;
    let mut fourth = server.connect("k1").await;
    third.assert_alive().await;
    fourth.assert_alive().await;
}

#[tokio::test]
async fn a_changed_webhook_endpoint_gets_the_next_event() {
    let old = sink("200 OK", Duration::ZERO, String::new()).await;
    let new = sink("200 OK", Duration::ZERO, String::new()).await;
    let hooks = |url: &str| {
        app(
            "1",
            &format!("[[apps.webhooks]]\nurl = \"{url}\"\nevent_types = [\"channel_occupied\"]"),
        )
    };
    let server = Server::start_logged(&hooks(&old.url), &[]);
    let mut ws = server.connect("k1").await;
    subscribed(&mut ws, "before").await;
    for _ in 0..100 {
        if events_named(&old.bodies, "channel_occupied") == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(events_named(&old.bodies, "channel_occupied"), 1);

    let lines = reload(&server, &hooks(&new.url)).await;
    assert!(
        the_line(&lines, "Configuration reloaded").contains("updated=1 (webhooks)"),
        "{lines:?}"
    );
    subscribed(&mut ws, "after").await;
    for _ in 0..100 {
        if events_named(&new.bodies, "channel_occupied") == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bodies = new.bodies.lock().expect("lock").clone();
    assert_eq!(
        events_named(&new.bodies, "channel_occupied"),
        1,
        "{bodies:?}"
    );
    assert_eq!(bodies[0]["events"][0]["channel"], "after");
    assert_eq!(
        events_named(&old.bodies, "channel_occupied"),
        1,
        "nothing more to the old one"
    );
}

#[tokio::test]
async fn a_file_that_does_not_load_changes_nothing_and_the_log_names_why() {
    let server = Server::start_logged(&app("1", ""), &[]);
    let mut ws = server.connect("k1").await;
    subscribed(&mut ws, "news").await;

    let lines = reload(&server, &(app("1", "") + "[[apps]\nid = \"2\"")).await;
    let failed = the_line(&lines, "Reload failed");
    assert!(
        failed.contains(", line 6, column 7: invalid table header"),
        "{failed}"
    );

    let invalid = app("1", "") + &app("2", "max_events_per_batch = 0");
    let lines = reload(&server, &invalid.replace("\"s1\"", "\"changed\"")).await;
    let failed = the_line(&lines, "Reload failed");
    assert!(failed.contains("apps[1].max_events_per_batch"), "{failed}");
    assert!(!lines.iter().any(|l| l.contains("Configuration reloaded")));

    // Nothing changed: app 1's secret is the old one, app 2 does not exist, the socket lives.
    assert_eq!(trigger(&server, "1", "s1", "news", "still").await, 200);
    receives(&mut ws, "still").await;
    assert_eq!(trigger(&server, "1", "changed", "news", "no").await, 401);
    assert_eq!(refusal(&server, "k2").await, 4001);
    assert_pusher_js_served_as(&server, "1", "k1", "s1");
}

#[tokio::test]
async fn a_changed_port_in_the_file_is_kept_until_restart() {
    // Started on the file's port (no --port), so a new port in the file is a real change.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let config = |port: u16, apps: &str| format!("port = {port}\n{apps}");
    let server = Server::start_logged_on_its_port(&config(port, &app("1", "")));
    let mut ws = server.connect("k1").await;
    let lines = reload(&server, &config(port + 1, &(app("1", "") + &app("2", "")))).await;
    assert!(the_line(&lines, "changes only on restart").contains("`port`"));
    assert!(the_line(&lines, "Configuration reloaded").contains("added=2"));
    assert_eq!(
        server.addr,
        format!("127.0.0.1:{port}"),
        "still on the old port"
    );
    server.connect("k2").await.assert_alive().await;
    ws.assert_alive().await;
}

#[tokio::test]
async fn a_disabled_app_closes_its_sockets_with_4003_and_answers_403() {
    let server = Server::start_logged(&(app("1", "") + &app("2", "")), &[]);
    let mut one = server.connect("k1").await;
    let mut two = server.connect("k2").await;
    reload(&server, &(app("1", "enabled = false") + &app("2", ""))).await;
    assert_eq!(one.expect_close().await, 4003);
    let (status, _) = channels(&server, "1", "s1").await;
    assert_eq!(status, 403);
    two.assert_alive().await;
}

#[tokio::test]
async fn herald_reload_signals_the_server_named_by_its_pid_file() {
    let dir = std::env::temp_dir().join(format!("herald-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let pid_file = dir.join("herald.pid");
    let server = Server::start_logged_with_args(
        &app("1", ""),
        &["--pid-file", pid_file.to_str().expect("utf-8")],
    );
    let written = std::fs::read_to_string(&pid_file).expect("the pid file");
    assert_eq!(written.trim(), server.pid().to_string());

    std::fs::write(&server.config, app("1", "") + &app("2", "")).expect("rewrite");
    let log = plain(&server.log());
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["reload", "--pid-file"])
        .arg(&pid_file)
        .output()
        .expect("run herald reload");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains(&server.pid().to_string()), "{stdout}");
    let lines = reload_result(&server, log.lines().count(), results(&log)).await;
    assert!(the_line(&lines, "Configuration reloaded").contains("added=2"));
    server.connect("k2").await.assert_alive().await;

    // A clean shutdown removes the pid file.
    let mut server = server;
    kill(Pid::from_raw(server.pid() as i32), Signal::SIGTERM).expect("SIGTERM");
    let status = server.child.wait().expect("exit");
    assert!(status.success());
    assert!(!pid_file.exists(), "the pid file is removed at shutdown");
}

#[test]
fn herald_reload_without_a_server_says_why_in_one_line() {
    let missing = std::env::temp_dir().join("herald-no-such-dir/herald.pid");
    let stale = std::env::temp_dir().join(format!("herald-stale-{}.pid", std::process::id()));
    // A pid far above any pid_max: no such process.
    std::fs::write(&stale, "2147483000\n").expect("write");
    let garbage = std::env::temp_dir().join(format!("herald-garbage-{}.pid", std::process::id()));
    std::fs::write(&garbage, "not a pid\n").expect("write");
    for (args, expected) in [
        (
            vec!["--pid-file", missing.to_str().expect("utf-8")],
            "cannot read pid file",
        ),
        (
            vec!["--pid-file", stale.to_str().expect("utf-8")],
            "no process 2147483000",
        ),
        (
            vec!["--pid-file", garbage.to_str().expect("utf-8")],
            "does not hold a process id",
        ),
        (vec!["--pid", "0"], "0 is not a process id"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_herald"))
            .arg("reload")
            .args(&args)
            .output()
            .expect("run herald reload");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty());
    }
}

fn redis_cli(redis: &Redis, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &redis.port().to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn in_a_cluster_an_added_app_joins_on_every_node_and_a_removed_one_leaves_cleanly() {
    let redis = Redis::start();
    let file = |apps: &str| {
        format!(
            "adapter = \"redis\"\nredis_url = \"{}\"\nnode_timeout = 2\n{apps}",
            redis.url()
        )
    };
    let (a, b) = (
        Server::start_logged(&file(&app("1", "")), &[]),
        Server::start_logged(&file(&app("1", "")), &[]),
    );
    let both = file(&(app("1", "") + &app("2", "")));
    reload(&a, &both).await;
    reload(&b, &both).await;

    let mut on_b = b.connect("k2").await;
    subscribed(&mut on_b, "news").await;
    assert_eq!(trigger(&a, "2", "s2", "news", "across").await, 200);
    receives(&mut on_b, "across").await;

    // Node A sees B's subscriber of app 2 in Redis.
    let (status, listed) = channels(&a, "2", "s2").await;
    assert_eq!(status, 200);
    assert!(listed["channels"].get("news").is_some(), "{listed}");

    // Both nodes count their connections of app 2 in Redis, at their next heartbeats.
    let counted = |n: usize| {
        let redis = &redis;
        async move {
            for _ in 0..100 {
                if redis_cli(redis, &["HKEYS", "{herald:2}:conns"])
                    .lines()
                    .count()
                    == n
                {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        }
    };
    assert!(counted(2).await, "both nodes count app 2");

    // B stops serving app 2: its socket closes, and its Redis state goes as on a close.
    reload(&b, &file(&app("1", ""))).await;
    assert_eq!(on_b.expect_close().await, 4003);
    let mut last = Value::Null;
    for _ in 0..100 {
        last = channels(&a, "2", "s2").await.1;
        if last["channels"].get("news").is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(last["channels"].get("news").is_none(), "{last}");
    assert!(
        counted(1).await,
        "only node A still counts connections of app 2"
    );
    // App 1 still crosses the nodes.
    let mut one_on_b = b.connect("k1").await;
    subscribed(&mut one_on_b, "news").await;
    assert_eq!(trigger(&a, "1", "s1", "news", "app 1").await, 200);
    receives(&mut one_on_b, "app 1").await;
}
