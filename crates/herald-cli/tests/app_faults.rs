//! Faults of the app database against the real binary and a real database: a bad row, a
//! plan renamed on SIGHUP and the database stopped for a while never take an app offline.
//! The node keeps serving an app's last valid version (its sockets open, new ones
//! accepted), logs a bad row once, counts it in `/metrics`, and `herald apps` shows the row
//! invalid; a database that comes back has every change made meanwhile applied.
//!
//! The outage lasts a few seconds here; `HERALD_LONG_FAULTS=1` makes it the 60 s of the
//! long run.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::db::{
    add, apps_ok, channels_status, eventually, free_port, herald_apps, herald_reload, logged,
    migrate, node_config, ready, receives, refusal, subscribed, trigger, Engine, OwnPostgres,
    TestDb, BACK, DOWN, PROPAGATION,
};
use support::wait::metric;
use support::{Server, Ws};

/// What the node logs once for each distinct bad state of a row.
const INVALID: &str = "An app in the database is not valid";
/// What the node logs when a reload of the table changed an app.
const CHANGED: &str = "Apps changed in the database";

const KEPT: &str = "herald_apps_invalid{state=\"last_good\"}";
const NOT_SERVED: &str = "herald_apps_invalid{state=\"not_served\"}";
const INVALID_TOTAL: &str = "herald_apps_invalid_states_total";

/// `herald apps --json list`, by id.
fn listed(url: &str, config: Option<&std::path::Path>) -> Vec<Value> {
    let run = herald_apps(url, config, &["--json", "list"]);
    assert_eq!(run.code, 0, "{run:?}");
    serde_json::from_str::<Value>(&run.stdout)
        .expect("list --json prints JSON")
        .as_array()
        .expect("a list")
        .clone()
}

/// Why `herald apps` calls app `id` invalid (its `invalid` field), if it does.
fn invalid_in(list: &[Value], id: &str) -> Option<String> {
    let app = list
        .iter()
        .find(|a| a["id"] == id)
        .unwrap_or_else(|| panic!("app {id} listed: {list:?}"));
    app["invalid"].as_str().map(str::to_owned)
}

/// A connection with `key`, which must be accepted.
async fn accepted(server: &Server, key: &str) -> Ws {
    assert_eq!(refusal(server, key).await, None, "{key} is served");
    server.connect(key).await
}

support::db::on_both_engines!(a_bad_row_keeps_its_app_served_with_its_last_valid_version);

async fn a_bad_row_keeps_its_app_served_with_its_last_valid_version(engine: Engine) {
    let db = TestDb::new(engine);
    let url = db.url();
    migrate(&url);
    add(&url, "1", &["--set", "max_connections=5"]);
    add(&url, "2", &[]);
    let server = Server::start_logged(&node_config(&url), &[]);
    let mut one = server.connect("k1").await;
    subscribed(&mut one, "news").await;

    // The typo of the issue, by hand in SQL, as `herald apps` would refuse it.
    db.sql(r#"UPDATE herald_apps SET settings = '{"max_conections":5}' WHERE id = '1'"#);
    eventually("the bad row logged", PROPAGATION, async || {
        logged(&server, INVALID) > 0
    })
    .await;
    one.assert_alive().await;
    assert_eq!(trigger(&server, "1", "s1", "news", "still").await, 200);
    receives(&mut one, "still").await;
    let mut again = accepted(&server, "k1").await;
    again.assert_alive().await;

    // A row that was never valid (a setting of the wrong type) is not served.
    let key = match engine {
        Engine::Postgres => "key",
        Engine::MariaDb => "`key`",
    };
    db.sql(&format!(
        r#"INSERT INTO herald_apps (id, {key}, secret, settings)
           VALUES ('3', 'k3', 's3', '{{"max_connections":"five"}}')"#
    ));
    eventually("the second bad row counted", PROPAGATION, async || {
        metric(&server, NOT_SERVED).await == Some(1.0)
    })
    .await;
    assert_eq!(refusal(&server, "k3").await, Some(4001));
    assert_eq!(metric(&server, KEPT).await, Some(1.0));
    assert_eq!(metric(&server, INVALID_TOTAL).await, Some(2.0));

    // `herald apps` shows both, with the reason.
    let list = listed(&url, None);
    let reason = invalid_in(&list, "1").expect("app 1 invalid");
    assert!(reason.contains("`max_conections`"), "{reason}");
    let reason = invalid_in(&list, "3").expect("app 3 invalid");
    assert!(reason.contains("`max_connections`"), "{reason}");
    assert_eq!(invalid_in(&list, "2"), None);
    let text = apps_ok(&url, &["list"]);
    let line = text.lines().find(|l| l.starts_with("1\t")).expect("app 1");
    assert!(
        line.contains("invalid") && line.contains("max_conections"),
        "{text}"
    );
    let shown = apps_ok(&url, &["show", "1"]);
    assert!(shown.contains("invalid: `max_conections`"), "{shown}");

    // Other changes reload the table: the bad rows are not logged again.
    for max in ["3", "4"] {
        let before = logged(&server, CHANGED);
        apps_ok(
            &url,
            &["update", "2", "--set", &format!("max_connections={max}")],
        );
        eventually("app 2's change", PROPAGATION, async || {
            logged(&server, CHANGED) > before
        })
        .await;
    }
    assert_eq!(logged(&server, INVALID), 2, "once per bad row");
    assert_eq!(metric(&server, INVALID_TOTAL).await, Some(2.0));

    // Fixed with `herald apps update`: applied as any change (one connection left).
    drop(again);
    apps_ok(
        &url,
        &[
            "update",
            "1",
            "--unset",
            "max_conections",
            "--set",
            "max_connections=1",
        ],
    );
    eventually("the fixed row applied", PROPAGATION, async || {
        refusal(&server, "k1").await == Some(4004)
    })
    .await;
    one.assert_alive().await;
    assert_eq!(metric(&server, KEPT).await, Some(0.0));
    assert_eq!(invalid_in(&listed(&url, None), "1"), None);
}

/// A config file with `[plans.NAME]` and `max_connections` for the plan.
fn with_plan(url: &str, name: &str, max_connections: u32) -> String {
    format!(
        "{}[plans.{name}]\nmax_connections = {max_connections}\n",
        node_config(url)
    )
}

#[tokio::test]
async fn a_plan_renamed_on_sighup_closes_nothing() {
    let db = TestDb::postgres();
    let url = db.url();
    migrate(&url);
    let dir = std::env::temp_dir().join(db.name());
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let pid_file: PathBuf = dir.join("herald.pid");
    let config = dir.join("cli.toml");
    std::fs::write(&config, with_plan(&url, "pro", 5)).expect("write config");
    let run = herald_apps(
        &url,
        Some(&config),
        &[
            "add", "--id", "1", "--key", "k1", "--secret", "s1", "--plan", "pro",
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let server = Server::start_logged_with_args(
        &with_plan(&url, "pro", 5),
        &["--pid-file", pid_file.to_str().expect("utf-8")],
    );
    let mut one = server.connect("k1").await;
    subscribed(&mut one, "news").await;

    // `pro` renamed in the file every node reads.
    let renamed = with_plan(&url, "professional", 5);
    std::fs::write(&server.config, &renamed).expect("rewrite config");
    std::fs::write(&config, &renamed).expect("rewrite config");
    herald_reload(&server, &pid_file).await;
    eventually("the row named invalid", PROPAGATION, async || {
        logged(&server, INVALID) > 0
    })
    .await;
    one.assert_alive().await;
    assert_eq!(trigger(&server, "1", "s1", "news", "kept").await, 200);
    receives(&mut one, "kept").await;
    let _second = accepted(&server, "k1").await;
    assert_eq!(metric(&server, KEPT).await, Some(1.0));
    let reason = invalid_in(&listed(&url, Some(&config)), "1").expect("app 1 invalid");
    assert!(reason.contains("unknown plan 'pro'"), "{reason}");
    let unchecked = invalid_in(&listed(&url, None), "1");
    assert_eq!(
        unchecked, None,
        "without a config file a plan is not checked"
    );

    // The plan back with a new limit: applied (two connections open, one allowed).
    std::fs::write(&server.config, with_plan(&url, "pro", 1)).expect("rewrite config");
    herald_reload(&server, &pid_file).await;
    eventually("the plan's new limit", PROPAGATION, async || {
        refusal(&server, "k1").await == Some(4004)
    })
    .await;
    one.assert_alive().await;
    assert_eq!(metric(&server, KEPT).await, Some(0.0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// How long the database stays away: the long run's 60 s with `HERALD_LONG_FAULTS=1`.
fn outage() -> Duration {
    if std::env::var_os("HERALD_LONG_FAULTS").is_some_and(|v| v == "1") {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(3)
    }
}

/// How soon after the database is back every change made meanwhile must be applied: the
/// node tries a refused connection again at most 0.6 s later, then reads the table at once
/// (measured: about 0.1 s).
const CATCH_UP: Duration = Duration::from_secs(3);

#[tokio::test]
async fn the_app_database_down_for_a_while_then_back() {
    let db = OwnPostgres::create();
    let url = db.url();
    migrate(&url);
    add(&url, "1", &[]);
    add(&url, "2", &[]);
    let server = Server::start_logged(&node_config(&url), &[]);
    let mut one = server.connect("k1").await;
    subscribed(&mut one, "news").await;
    let mut two = server.connect("k2").await;
    assert_eq!(metric(&server, "herald_apps_db_up").await, Some(1.0));

    db.stop();
    let stopped = Instant::now();
    eventually("the outage logged", Duration::from_secs(5), async || {
        logged(&server, DOWN) > 0
    })
    .await;
    // Through the outage: the open socket, new sockets, the HTTP API, `/ready`.
    let mut round = 0;
    while stopped.elapsed() < outage() {
        round += 1;
        one.assert_alive().await;
        let data = format!("during {round}");
        assert_eq!(trigger(&server, "1", "s1", "news", &data).await, 200);
        receives(&mut one, &data).await;
        accepted(&server, "k1").await.assert_alive().await;
        assert_eq!(ready(&server).await, 200, "ready: it serves its apps");
        assert_eq!(metric(&server, "herald_apps_db_up").await, Some(0.0));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let away = metric(&server, "herald_apps_stale_seconds")
        .await
        .expect("how stale the apps may be");
    assert!(
        away + 1.0 >= stopped.elapsed().as_secs_f64(),
        "{away} s stale after {:?}",
        stopped.elapsed()
    );

    // Changes made meanwhile, through a path the node does not know (the same data
    // served on another port): a secret rotated after a leak, app 2 disabled.
    let side = free_port();
    db.start_on(side);
    let rotated = apps_ok(&db.url_on(side), &["rotate-secret", "1"]);
    let (_, secret) = support::db::credentials_in(&rotated);
    apps_ok(&db.url_on(side), &["disable", "2"]);
    db.stop_on(side);
    assert_eq!(
        channels_status(&server, "1", "k1", "s1").await,
        200,
        "not seen yet"
    );

    db.start();
    let back = Instant::now();
    eventually("the old secret refused", CATCH_UP, async || {
        channels_status(&server, "1", "k1", "s1").await == 401
    })
    .await;
    let refused_after = back.elapsed();
    assert_eq!(two.expect_close().await, 4003, "disabled meanwhile");
    let closed_after = back.elapsed();
    assert_eq!(channels_status(&server, "1", "k1", &secret).await, 200);
    one.assert_alive().await;
    eprintln!(
        "database away {:?}: the old secret refused {refused_after:?} and app 2 closed {closed_after:?} after it was back",
        back.duration_since(stopped)
    );
    assert_eq!(logged(&server, DOWN), 1, "the outage logged once");
    assert_eq!(logged(&server, BACK), 1, "the recovery logged once");
    assert_eq!(metric(&server, "herald_apps_db_up").await, Some(1.0));
    assert_eq!(
        metric(&server, "herald_apps_stale_seconds").await,
        Some(0.0)
    );
}
