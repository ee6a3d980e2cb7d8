//! Apps kept in PostgreSQL or MariaDB (`apps_url`) against the real binary: `herald apps`
//! creates and changes them, a running node serves every change within a second (closing
//! the sockets of a disabled or removed app with 4003), keeps serving through a database
//! restart, and two nodes in a Redis cluster share one database. Every test runs once on
//! each engine, in a database of its own.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::db::{
    add, apps_ok, channels_status, closes_sockets, credentials_in, eventually, herald_apps,
    insert_sql, logged, migrate, node_config, ready, receives, refusal, served, subscribed,
    trigger, Engine, OwnDb, TestDb, BACK, DOWN, PROPAGATION,
};
use support::{Redis, Server};

support::db::on_both_engines!(
    migrate_creates_the_tables_and_can_run_again,
    an_app_added_while_a_node_runs_is_served_within_a_second,
    changes_reach_connected_clients,
    a_database_restart_leaves_clients_and_known_apps_alone,
    a_node_started_while_its_database_is_down_becomes_ready_when_it_is_back,
    two_cluster_nodes_share_one_database,
    bad_input_exits_2_and_names_the_field,
);

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
    // A value of the wrong kind and a misspelt name say what the field takes, as the config
    // file's errors do (issue 30 item 1).
    for (args, said) in [
        (
            &["update", "1", "--set", "max_connections=-5"][..],
            "invalid app: `max_connections` must be a whole number ≥ 0, not -5",
        ),
        (
            &["update", "1", "--set", "client_events=maybe"][..],
            "invalid app: `client_events` must be true or false, not \"maybe\"",
        ),
        (
            &["update", "1", "--set", "publishes_per_secnd=2"][..],
            "did you mean `publishes_per_second`?",
        ),
    ] {
        let refused = run(args);
        assert_eq!(refused.code, 2, "{args:?}: {refused:?}");
        assert!(refused.stderr.contains(said), "{args:?}: {refused:?}");
    }
    // Nothing of that was written.
    assert_eq!(db.sql("SELECT id FROM herald_apps"), "1");
    let shown = run(&["--json", "show", "1"]);
    let shown: Value = serde_json::from_str(&shown.stdout).expect("show --json prints JSON");
    assert_eq!(shown["plan"], "small", "{shown}");
    let _ = std::fs::remove_file(&config);
}
