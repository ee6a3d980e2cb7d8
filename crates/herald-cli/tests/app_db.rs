//! Apps kept in PostgreSQL or MariaDB (`apps_url`) against the real binary: `herald apps`
//! creates and changes them, a running node serves every change within a second (closing
//! the sockets of a disabled or removed app with 4003), keeps serving through a database
//! restart, and two nodes in a Redis cluster share one database. Every test runs once on
//! each engine, in a database of its own.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::db::{Engine, OwnDb, TestDb};
use support::{now, signed_as, Redis, Server, Ws};

/// Generates `mod NAME { postgres, mariadb }`: the test `NAME(engine)` once on each.
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn postgres() {
                super::$name(super::Engine::Postgres).await;
            }

            #[tokio::test]
            async fn mariadb() {
                super::$name(super::Engine::MariaDb).await;
            }
        }
    )*};
}

on_both_engines!(
    migrate_creates_the_tables_and_can_run_again,
    an_app_added_while_a_node_runs_is_served_within_a_second,
    changes_reach_connected_clients,
    a_database_restart_leaves_clients_and_known_apps_alone,
    a_node_started_while_its_database_is_down_becomes_ready_when_it_is_back,
    two_cluster_nodes_share_one_database,
    bad_input_exits_2_and_names_the_field,
);

/// How soon a change must reach a running node.
const PROPAGATION: Duration = Duration::from_secs(1);

/// What one `herald apps …` run gave.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// `herald apps --apps-url URL ARGS…`, with `--config FILE` first when given.
fn herald_apps(url: &str, config: Option<&Path>, args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command.arg("apps");
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    let output = command
        .args(["--apps-url", url])
        .args(args)
        .env_remove("HERALD_APPS_URL")
        .env_remove("HERALD_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run herald apps");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `herald apps ARGS…`, which must succeed; its stdout.
fn apps_ok(url: &str, args: &[&str]) -> String {
    let run = herald_apps(url, None, args);
    assert_eq!(run.code, 0, "herald apps {}: {run:?}", args.join(" "));
    run.stdout
}

fn migrate(url: &str) {
    apps_ok(url, &["migrate"]);
}

/// Adds app `id` with key `k{id}` and secret `s{id}` (and `extra` options).
fn add(url: &str, id: &str, extra: &[&str]) {
    let (key, secret) = (format!("k{id}"), format!("s{id}"));
    let mut args = vec!["add", "--id", id, "--key", &key, "--secret", &secret];
    args.extend_from_slice(extra);
    let out = apps_ok(url, &args);
    assert!(
        out.lines()
            .any(|l| l.starts_with("PUSHER_URL=http://") && l.ends_with(&format!("/apps/{id}"))),
        "add prints a PUSHER_URL line: {out}"
    );
}

/// The `KEY:SECRET` of the `PUSHER_URL=` line in `out`.
fn credentials_in(out: &str) -> (String, String) {
    let url = out
        .lines()
        .find_map(|l| l.strip_prefix("PUSHER_URL="))
        .unwrap_or_else(|| panic!("no PUSHER_URL line in {out}"));
    let (_, rest) = url.split_once("://").expect("a URL");
    let (userinfo, _) = rest.split_once('@').expect("credentials in the URL");
    let (key, secret) = userinfo.split_once(':').expect("KEY:SECRET");
    (key.to_owned(), secret.to_owned())
}

/// A node that keeps its apps in `url`.
fn node_config(url: &str) -> String {
    format!("apps_url = \"{url}\"\n")
}

/// An app row as a signup flow would write it, with plain SQL (MySQL's `settings` has no
/// default, so it is given there).
fn insert_sql(engine: Engine, id: &str) -> String {
    match engine {
        Engine::Postgres => {
            format!("INSERT INTO herald_apps (id, key, secret) VALUES ('{id}', 'k{id}', 's{id}')")
        }
        Engine::MariaDb => format!(
            "INSERT INTO herald_apps (id, `key`, secret, settings) \
             VALUES ('{id}', 'k{id}', 's{id}', '{{}}')"
        ),
    }
}

/// What a connection with `key` is refused with: the `pusher:error` code, or `None` if the
/// connection was established.
async fn refusal(server: &Server, key: &str) -> Option<u64> {
    let (_, first) = server
        .connect_raw(&format!("/app/{key}?protocol=7&client=js&version=8.6.0"))
        .await;
    let first = first.expect("a first frame");
    if first["event"] == "pusher:connection_established" {
        return None;
    }
    assert_eq!(first["event"], "pusher:error", "{first}");
    Some(first["data"]["code"].as_u64().expect("an error code"))
}

/// Connects with `key` until the node serves it; fails the test if that takes longer than
/// `within` from `since`. Returns the client and how long it took.
async fn served(server: &Server, key: &str, since: Instant, within: Duration) -> (Ws, Duration) {
    loop {
        let (ws, first) = server
            .connect_raw(&format!("/app/{key}?protocol=7&client=js&version=8.6.0"))
            .await;
        let elapsed = since.elapsed();
        if first
            .as_ref()
            .is_some_and(|f| f["event"] == "pusher:connection_established")
        {
            assert!(
                elapsed < within,
                "{key} was served after {elapsed:?}, not within {within:?}"
            );
            return (Ws::established(ws, first), elapsed);
        }
        assert!(
            elapsed < within,
            "{key} not served within {within:?}; last answer: {first:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `herald apps ARGS…`; then each of `sockets` must be closed with 4003 within
/// [`PROPAGATION`].
async fn closes_sockets(url: &str, args: &[&str], sockets: &mut [&mut Ws]) {
    apps_ok(url, args);
    let since = Instant::now();
    for ws in sockets {
        assert_eq!(ws.expect_close().await, 4003, "{args:?} closes the socket");
    }
    assert!(
        since.elapsed() < PROPAGATION,
        "{args:?}: sockets closed after {:?}",
        since.elapsed()
    );
}

/// `GET /apps/ID/channels` signed with `key` and `secret`: the status.
async fn channels_status(server: &Server, id: &str, key: &str, secret: &str) -> u16 {
    let path = format!("/apps/{id}/channels");
    signed_as(server, "GET", &path, &[], None, key, secret, now())
        .await
        .0
}

async fn trigger(server: &Server, id: &str, secret: &str, channel: &str, data: &str) -> u16 {
    let body = json!({"name": "ev", "channel": channel, "data": data}).to_string();
    let path = format!("/apps/{id}/events");
    let key = format!("k{id}");
    signed_as(server, "POST", &path, &[], Some(&body), &key, secret, now())
        .await
        .0
}

async fn subscribed(ws: &mut Ws, channel: &str) {
    let answer = ws.subscribe(channel).await;
    assert_eq!(
        answer["event"], "pusher_internal:subscription_succeeded",
        "{answer}"
    );
}

async fn receives(ws: &mut Ws, data: &str) {
    let ev = ws.expect("ev").await;
    assert_eq!(ev["data"], data, "{ev}");
}

/// The admin listener's `/ready` status.
async fn ready(server: &Server) -> u16 {
    reqwest::get(format!("http://{}/ready", server.admin))
        .await
        .expect("GET /ready")
        .status()
        .as_u16()
}

/// Waits until `check` holds, polling; fails the test with `what` after `within`.
async fn eventually(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many lines of the node's log contain `text`.
fn logged(server: &Server, text: &str) -> usize {
    server.log().lines().filter(|l| l.contains(text)).count()
}

const DOWN: &str = "App database unavailable";
const BACK: &str = "App database available again";

async fn migrate_creates_the_tables_and_can_run_again(engine: Engine) {
    let db = TestDb::new(engine);
    let tables = match engine {
        Engine::Postgres => {
            "SELECT string_agg(table_name, ',' ORDER BY table_name) FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_name LIKE 'herald%'"
        }
        Engine::MariaDb => {
            "SELECT COALESCE(GROUP_CONCAT(table_name ORDER BY table_name), '') FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_name LIKE 'herald%'"
        }
    };
    let triggers = match engine {
        Engine::Postgres => {
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'herald_apps'::regclass AND NOT tgisinternal"
        }
        Engine::MariaDb => {
            "SELECT count(*) FROM information_schema.triggers WHERE trigger_schema = DATABASE() \
             AND event_object_table = 'herald_apps'"
        }
    };
    let (expected_tables, expected_triggers) = match engine {
        Engine::Postgres => ("herald_apps,herald_apps_schema", "1"),
        Engine::MariaDb => ("herald_apps,herald_apps_revision,herald_apps_schema", "3"),
    };
    assert_eq!(db.sql(tables), "", "a new database has no Herald tables");
    let before = herald_apps(&db.url(), None, &["list"]);
    assert_eq!(before.code, 1, "list before migrate: {before:?}");
    assert!(
        before.stderr.contains("herald apps migrate"),
        "says what to run: {before:?}"
    );

    migrate(&db.url());
    assert_eq!(db.sql(tables), expected_tables);
    assert_eq!(db.sql(triggers), expected_triggers);
    assert_eq!(db.sql("SELECT version FROM herald_apps_schema"), "1");
    add(&db.url(), "1", &["--set", "max_connections=7"]);

    // Again: nothing is lost or doubled.
    migrate(&db.url());
    assert_eq!(db.sql(tables), expected_tables);
    assert_eq!(db.sql(triggers), expected_triggers);
    assert_eq!(db.sql("SELECT version FROM herald_apps_schema"), "1");
    assert_eq!(db.sql("SELECT id FROM herald_apps"), "1");
    let shown = apps_ok(&db.url(), &["--json", "show", "1"]);
    let shown: Value = serde_json::from_str(&shown).expect("show --json prints JSON");
    assert_eq!(shown["key"], "k1", "{shown}");
    assert_eq!(shown["settings"]["max_connections"], 7, "{shown}");
}

async fn an_app_added_while_a_node_runs_is_served_within_a_second(engine: Engine) {
    let db = TestDb::new(engine);
    migrate(&db.url());
    let server = Server::start(&node_config(&db.url()));
    // Looked up (and missed) first: the node remembers the miss, so what serves the app
    // later is the change reaching the node, not a lookup.
    assert_eq!(refusal(&server, "k1").await, Some(4001));
    assert_eq!(refusal(&server, "k2").await, Some(4001));

    add(&db.url(), "1", &[]);
    let (mut one, took) = served(&server, "k1", Instant::now(), PROPAGATION).await;
    eprintln!("{engine:?}: added with the CLI, served after {took:?}");
    one.assert_alive().await;

    db.sql(&insert_sql(engine, "2"));
    let (mut two, took) = served(&server, "k2", Instant::now(), PROPAGATION).await;
    eprintln!("{engine:?}: inserted with SQL, served after {took:?}");
    subscribed(&mut two, "news").await;
    assert_eq!(trigger(&server, "2", "s2", "news", "hello").await, 200);
    receives(&mut two, "hello").await;
}

async fn changes_reach_connected_clients(engine: Engine) {
    let db = TestDb::new(engine);
    let url = db.url();
    migrate(&url);
    add(&url, "1", &[]);
    add(&url, "2", &[]);
    let server = Server::start(&node_config(&url));
    let mut one = server.connect("k1").await;
    let mut two = server.connect("k2").await;

    // disable: app 1's socket is closed, app 2's stays.
    closes_sockets(&url, &["disable", "1"], &mut [&mut one]).await;
    two.assert_alive().await;
    assert_eq!(refusal(&server, "k1").await, Some(4003), "disabled");
    assert_eq!(channels_status(&server, "1", "k1", "s1").await, 403);

    // enable: served again.
    apps_ok(&url, &["enable", "1"]);
    let (mut one, _) = served(&server, "k1", Instant::now(), PROPAGATION).await;

    // rotate-secret: the old secret's signatures are refused, the new one's accepted.
    assert_eq!(channels_status(&server, "1", "k1", "s1").await, 200);
    let out = apps_ok(&url, &["rotate-secret", "1"]);
    let rotated = Instant::now();
    let (key, secret) = credentials_in(&out);
    assert_eq!(key, "k1");
    assert_ne!(secret, "s1", "a new secret");
    assert!(out.contains(&secret), "the new secret is printed: {out}");
    eventually("the old secret refused", PROPAGATION, async || {
        channels_status(&server, "1", "k1", "s1").await == 401
    })
    .await;
    assert!(rotated.elapsed() < PROPAGATION);
    assert_eq!(channels_status(&server, "1", "k1", &secret).await, 200);
    one.assert_alive().await;

    // update --set max_connections=1: with `one` open, another connection is refused.
    apps_ok(&url, &["update", "1", "--set", "max_connections=1"]);
    let updated = Instant::now();
    loop {
        let (mut extra, first) = server
            .connect_raw("/app/k1?protocol=7&client=js&version=8.6.0")
            .await;
        let first = first.expect("a first frame");
        if first["event"] == "pusher:error" {
            assert_eq!(first["data"]["code"], 4004, "{first}");
            assert_eq!(support::expect_close(&mut extra).await, 4004);
            break;
        }
        assert!(
            updated.elapsed() < PROPAGATION,
            "max_connections=1 not enforced within {PROPAGATION:?}"
        );
        let _ = extra.close(None).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    one.assert_alive().await;
    two.assert_alive().await;

    // remove: closed like a disabled app, then unknown.
    closes_sockets(&url, &["remove", "1"], &mut [&mut one]).await;
    two.assert_alive().await;
    assert_eq!(refusal(&server, "k1").await, Some(4001), "removed");
    assert_eq!(db.sql("SELECT id FROM herald_apps"), "2");
}

async fn a_database_restart_leaves_clients_and_known_apps_alone(engine: Engine) {
    let mut db = OwnDb::new(engine);
    let url = db.url();
    migrate(&url);
    add(&url, "1", &[]);
    let server = Server::start_logged(&node_config(&url), &[]);
    let mut one = server.connect("k1").await;
    subscribed(&mut one, "news").await;
    assert_eq!(ready(&server).await, 200);

    db.stop();
    eventually("the outage logged", Duration::from_secs(5), async || {
        logged(&server, DOWN) > 0
    })
    .await;
    // While it is down: the open socket, new sockets and the HTTP API of the known app.
    one.assert_alive().await;
    assert_eq!(trigger(&server, "1", "s1", "news", "during").await, 200);
    receives(&mut one, "during").await;
    let mut another = server.connect("k1").await;
    another.assert_alive().await;
    assert_eq!(ready(&server).await, 200, "ready: it has loaded its apps");
    let asked = Instant::now();
    assert_eq!(refusal(&server, "k-unknown").await, Some(4001));
    assert!(
        asked.elapsed() < Duration::from_millis(500),
        "an unknown key is refused without waiting for the database: {:?}",
        asked.elapsed()
    );

    db.start();
    let back = Instant::now();
    add(&url, "3", &[]);
    let (mut three, took) = served(&server, "k3", back, Duration::from_secs(3)).await;
    eprintln!("{engine:?}: an app added after the restart was served {took:?} after it");
    three.assert_alive().await;
    assert!(logged(&server, BACK) > 0, "the recovery is logged");
    assert_eq!(logged(&server, DOWN), 1, "the outage is logged once");
    one.assert_alive().await;
    assert_eq!(trigger(&server, "1", "s1", "news", "after").await, 200);
    receives(&mut one, "after").await;

    // A quick restart: changes after it are served too.
    db.restart();
    apps_ok(&url, &["disable", "3"]);
    assert_eq!(three.expect_close().await, 4003, "a change after a restart");
    one.assert_alive().await;
}

async fn a_node_started_while_its_database_is_down_becomes_ready_when_it_is_back(engine: Engine) {
    let mut db = OwnDb::new(engine);
    let url = db.url();
    migrate(&url);
    add(&url, "1", &[]);
    db.stop();

    let server = Server::start_logged(&node_config(&url), &[]);
    assert_eq!(ready(&server).await, 503, "not ready before it loaded");
    assert_eq!(
        refusal(&server, "k1").await,
        Some(4100),
        "not loaded yet: come back later (4001 would stop pusher-js for good)"
    );
    assert_eq!(
        trigger(&server, "1", "s1", "news", "early").await,
        503,
        "the API answers not ready"
    );
    assert!(logged(&server, DOWN) > 0, "the outage is logged");

    db.start();
    let back = Instant::now();
    eventually(
        "ready once the database is back",
        Duration::from_secs(6),
        async || ready(&server).await == 200,
    )
    .await;
    eprintln!("{engine:?}: ready {:?} after the database", back.elapsed());
    let mut one = server.connect("k1").await;
    one.assert_alive().await;
    assert!(logged(&server, BACK) > 0, "the recovery is logged");
}

async fn two_cluster_nodes_share_one_database(engine: Engine) {
    let redis = Redis::start();
    let db = TestDb::new(engine);
    let url = db.url();
    migrate(&url);
    let config = format!(
        "{}adapter = \"redis\"\nredis_url = \"{}\"\nnode_timeout = 2\n",
        node_config(&url),
        redis.url()
    );
    let a = Server::start(&config);
    let b = Server::start(&config);
    assert_eq!(refusal(&a, "k1").await, Some(4001));
    assert_eq!(refusal(&b, "k1").await, Some(4001));

    add(&url, "1", &[]);
    let added = Instant::now();
    let (mut on_a, _) = served(&a, "k1", added, PROPAGATION).await;
    let (mut on_b, _) = served(&b, "k1", added, PROPAGATION).await;

    subscribed(&mut on_b, "news").await;
    subscribed(&mut on_a, "news").await;
    assert_eq!(trigger(&a, "1", "s1", "news", "from a").await, 200);
    receives(&mut on_b, "from a").await;
    receives(&mut on_a, "from a").await;

    closes_sockets(&url, &["disable", "1"], &mut [&mut on_a, &mut on_b]).await;
}

/// A config file naming a plan, for the CLI's `--plan`.
fn config_with_plan(dir_name: &str, url: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("{dir_name}.toml"));
    std::fs::write(
        &path,
        format!("{}[plans.small]\nmax_connections = 10\n", node_config(url)),
    )
    .expect("write config");
    path
}

async fn bad_input_exits_2_and_names_the_field(engine: Engine) {
    let db = TestDb::new(engine);
    let url = db.url();
    migrate(&url);
    let config = config_with_plan(db.name(), &url);
    let run = |args: &[&str]| herald_apps(&url, Some(&config), args);
    let ok = run(&["add", "--id", "1", "--key", "k1", "--plan", "small"]);
    assert_eq!(ok.code, 0, "{ok:?}");

    // The field is named as the config file names it, in backquotes.
    for (args, field) in [
        (&["add", "--id", "1", "--key", "k-other"][..], "`id`"),
        (&["add", "--id", "2", "--key", "k1"][..], "`key`"),
        (
            &["add", "--id", "3", "--set", "max_events_per_batch=0"][..],
            "`max_events_per_batch`",
        ),
        (
            &["add", "--id", "4", "--webhook", "not-a-url"][..],
            "`webhooks[0].url`",
        ),
        (&["add", "--id", "5", "--plan", "gold"][..], "`plan`"),
        (&["update", "1", "--plan", "gold"][..], "`plan`"),
        (
            &["update", "1", "--set", "max_events_per_batch=0"][..],
            "`max_events_per_batch`",
        ),
    ] {
        let refused = run(args);
        assert_eq!(refused.code, 2, "{args:?}: {refused:?}");
        assert!(
            refused.stderr.contains(field),
            "{args:?}: stderr names {field}: {refused:?}"
        );
    }
    // Nothing of that was written.
    assert_eq!(db.sql("SELECT id FROM herald_apps"), "1");
    let shown = run(&["--json", "show", "1"]);
    let shown: Value = serde_json::from_str(&shown.stdout).expect("show --json prints JSON");
    assert_eq!(shown["plan"], "small", "{shown}");
    let _ = std::fs::remove_file(&config);
}
