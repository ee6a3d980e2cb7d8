//! `herald apps import --from soketi|sockudo|reverb|pusher` against the real binary: the
//! peers' config files, environment variables and app tables (made in the machine's
//! PostgreSQL and MariaDB as soketi and sockudo document them, in databases each test
//! creates and drops), imported into a Herald config file or app database; what does not
//! map is named per app; bad input is one line and exit 2. And the whole way: a soketi
//! table imported into the app database is served, and pusher-js connects with its key.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use support::db::{Engine, TestDb};
use support::Server;

support::db::on_both_engines!(
    a_soketi_table_imports_as_soketi_serves_it,
    a_sockudo_table_imports_its_policy_and_flat_rows,
    an_imported_soketi_table_is_served_to_pusher_js,
);

/// What one `herald apps import …` run gave.
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

/// `herald apps import ARGS…` with `env` set and no Herald variables of this process.
fn import(args: &[&str], env: &[(&str, &str)]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["apps", "import"])
        .args(args)
        .env_remove("HERALD_APPS_URL")
        .env_remove("HERALD_CONFIG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run herald apps import");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn import_ok(args: &[&str]) -> String {
    let run = import(args, &[]);
    assert_eq!(run.code, 0, "{args:?}: {run:?}");
    run.stdout
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/import")
        .join(name)
        .display()
        .to_string()
}

/// A path for a config file of this test alone (removed when dropped).
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str) -> TempFile {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        TempFile(std::env::temp_dir().join(format!(
            "herald-import-{}-{tag}-{n}.toml",
            std::process::id()
        )))
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temp path")
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.0).expect("the output file")
    }

    /// The file's `[[apps]]`, by id, as JSON.
    fn apps(&self) -> serde_json::Map<String, Value> {
        let table: toml::Table = toml::from_str(&self.text()).expect("the output is TOML");
        let apps = serde_json::to_value(
            table
                .get("apps")
                .cloned()
                .unwrap_or(toml::Value::Array(vec![])),
        )
        .expect("JSON");
        apps.as_array()
            .expect("a list of apps")
            .iter()
            .map(|a| (a["id"].as_str().expect("an id").to_owned(), a.clone()))
            .collect()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A new database holding `peer`'s app table, made by its fixture for `engine`
/// (`{peer}-postgres.sql`, `{peer}-mysql.sql`).
fn peer_table(engine: Engine, peer: &str) -> TestDb {
    let db = TestDb::new(engine);
    let file = match engine {
        Engine::Postgres => format!("{peer}-postgres.sql"),
        Engine::MariaDb => format!("{peer}-mysql.sql"),
    };
    db.sql(&std::fs::read_to_string(fixture(&file)).expect("fixture"));
    db
}

/// `peer`'s table imported into a new config file: the database, the file, the output.
fn table_to_file(engine: Engine, peer: &str) -> (TestDb, TempFile, String) {
    let db = peer_table(engine, peer);
    let out = TempFile::new(peer);
    let printed = import_ok(&["--from", peer, "--db", &db.url(), "--output", out.path()]);
    (db, out, printed)
}

/// `app`'s settings besides its credentials, as one JSON object.
fn settings(app: &Value) -> Value {
    let mut app = app.clone();
    if let Some(map) = app.as_object_mut() {
        for column in ["id", "key", "secret"] {
            map.remove(column);
        }
    }
    app
}

/// The "not mapped" lines printed for `id`.
fn not_mapped(out: &str, id: &str) -> Vec<String> {
    let prefix = format!("app '{id}': not mapped: ");
    out.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(str::to_owned)
        .collect()
}

fn has_line(lines: &[String], start: &str) -> bool {
    lines.iter().any(|l| l.starts_with(start))
}

#[test]
fn a_soketi_config_file_is_appended_to_a_herald_config_file() {
    let out = TempFile::new("soketi-json");
    std::fs::write(&out.0, "# my node\nport = 6001\n").expect("write");
    let printed = import_ok(&[
        "--from",
        "soketi",
        &fixture("soketi.json"),
        "--output",
        out.path(),
    ]);
    assert!(
        out.text().starts_with("# my node\nport = 6001\n"),
        "the file is kept: {}",
        out.text()
    );
    let apps = out.apps();
    assert_eq!(apps.keys().collect::<Vec<_>>(), ["chat", "feed"]);
    assert_eq!(apps["chat"]["secret"], "chat-secret-1");
    assert_eq!(
        settings(&apps["chat"]),
        serde_json::json!({"cache_ttl": 3600,
            "max_connections": 500, "publishes_per_second": 50, "client_events_per_second": 5,
            "max_presence_members": 30, "max_event_data_bytes": 65536,
            // The file's server-wide presence.maxMemberSizeInKb = 4.
            "max_presence_user_info_bytes": 4096,
            "webhooks": [
                {"url": "https://hooks.example.com/pusher", "event_types": ["channel_occupied", "channel_vacated"], "channel_prefix": "presence-"},
                {"url": "https://hooks.example.com/members", "event_types": ["member_added", "member_removed"]},
            ],
        })
    );
    // soketi's defaults where Herald's differ: client events off, sign-in within 30 s.
    assert_eq!(
        settings(&apps["feed"]),
        serde_json::json!({"cache_ttl": 3600, "client_events": false, "max_presence_user_info_bytes": 4096, "user_authentication_timeout": 30})
    );
    let chat = not_mapped(&printed, "chat");
    assert_eq!(chat.len(), 4, "{printed}");
    for start in [
        "maxEventNameLength = 100: ",
        "webhooks[0].filter.channel_name_ends_with: ",
        "webhooks[1].headers: ",
        "webhooks[2]: an AWS Lambda function",
    ] {
        assert!(has_line(&chat, start), "{start}: {printed}");
    }
    assert!(not_mapped(&printed, "feed").is_empty(), "{printed}");
    assert!(
        !printed.contains("chat-secret-1"),
        "no secret printed: {printed}"
    );

    // Herald serves the file as written.
    let server = Server::start(&out.text());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        server.connect("chat-key").await.assert_alive().await;
        server.connect("feed-key").await.assert_alive().await;
    });

    // Again: the ids are taken; the file is left as it was.
    let before = out.text();
    let again = import(
        &[
            "--from",
            "soketi",
            &fixture("soketi.json"),
            "--output",
            out.path(),
        ],
        &[],
    );
    assert_eq!(again.code, 2, "{again:?}");
    assert!(
        again.stderr.contains("duplicates apps[0].id 'chat'"),
        "{again:?}"
    );
    assert_eq!(again.stderr.lines().count(), 1, "{again:?}");
    assert_eq!(out.text(), before);
}

#[test]
fn soketi_environment_variables_import_from_a_file_and_the_process() {
    let out = TempFile::new("soketi-env");
    let printed = import_ok(&[
        "--from",
        "soketi",
        "--env-file",
        &fixture("soketi.env"),
        "--output",
        out.path(),
    ]);
    let apps = out.apps();
    assert_eq!(
        settings(&apps["env-app"]),
        serde_json::json!({"cache_ttl": 600,
            "max_connections": 1000, "client_events_per_second": 20, "max_presence_members": 50,
            "max_event_data_bytes": 204800, "max_presence_user_info_bytes": 2048,
            "user_authentication_timeout": 45,
            "webhooks": [{"url": "https://hooks.example.com/soketi", "event_types": ["channel_occupied"]}],
        })
    );
    let notes = not_mapped(&printed, "env-app");
    assert!(
        has_line(
            &notes,
            "maxReadRequestsPerSecond = 0: soketi refuses everything at 0"
        ),
        "{printed}"
    );
    for var in ["SOKETI_PORT", "SOKETI_DEBUG"] {
        assert!(
            printed.contains(&format!("not imported: {var}: a server setting")),
            "{printed}"
        );
    }

    let run = import(
        &[
            "--from",
            "soketi",
            "--env",
            "--output",
            out.path(),
            "--dry-run",
        ],
        &[
            ("SOKETI_DEFAULT_APP_ID", "proc"),
            ("SOKETI_DEFAULT_APP_KEY", "proc-key"),
            ("SOKETI_DEFAULT_APP_SECRET", "proc-secret"),
            ("SOKETI_DEFAULT_APP_ENABLED", "false"),
            (
                "SOKETI_DEFAULT_APP_WEBHOOKS",
                r#"[{"url":"https://hook:hooksecret@hooks.example.com/x","event_types":["member_added"]}]"#,
            ),
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains(
            "id = \"proc\"\nkey = \"proc-key\"\nsecret = \"<redacted>\"\nenabled = false\n"
        ),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("url = \"https://hook:<redacted>@hooks.example.com/x\""),
        "{run:?}"
    );
    assert!(!run.stdout.contains("hooksecret"), "{run:?}");
    assert_eq!(out.apps().len(), 1, "a dry run writes nothing");

    // soketi's built-in app has public credentials: refused.
    let run = import(
        &["--from", "soketi", "--env", "--output", out.path()],
        &[("SOKETI_DEFAULT_APP_KEY", "k")],
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("public default 'app-secret'"),
        "{run:?}"
    );
}

async fn a_soketi_table_imports_as_soketi_serves_it(engine: Engine) {
    let (db, out, printed) = table_to_file(engine, "soketi");
    let apps = out.apps();
    // A NULL limit is soketi's server-wide default: 2 KB of presence user info.
    assert_eq!(
        settings(&apps["app-1"]),
        serde_json::json!({"cache_ttl": 3600, "max_connections": 200, "max_presence_user_info_bytes": 2048})
    );
    assert_eq!(
        settings(&apps["app-2"]),
        serde_json::json!({"cache_ttl": 3600,
            "client_events": false, "publishes_per_second": 100,
            "reads_per_second": 50, "max_presence_members": 20, "max_channel_name_length": 100,
            "max_channels_per_trigger": 10, "max_event_data_bytes": 51200,
            "max_events_per_batch": 5, "user_authentication_timeout": 30,
            "webhooks": [{"url": "https://hooks.example.com/soketi", "event_types": ["member_added", "member_removed"], "channel_prefix": "presence-"}],
        })
    );
    let one = not_mapped(&printed, "app-1");
    assert_eq!(one.len(), 1, "{printed}");
    assert!(
        has_line(&one, "max_client_events_per_sec = -1: no limit in soketi"),
        "{printed}"
    );
    let two = not_mapped(&printed, "app-2");
    assert_eq!(two.len(), 1, "{printed}");
    assert!(has_line(&two, "max_event_name_length = 120: "), "{printed}");

    let missing = import(
        &[
            "--from",
            "soketi",
            "--db",
            &db.url(),
            "--table",
            "nope",
            "--output",
            out.path(),
        ],
        &[],
    );
    assert_eq!(missing.code, 2, "{missing:?}");
    assert!(
        missing.stderr.contains("has no table 'nope'"),
        "{missing:?}"
    );
}

async fn a_sockudo_table_imports_its_policy_and_flat_rows(engine: Engine) {
    let (_db, out, printed) = table_to_file(engine, "sockudo");
    let apps = out.apps();
    // The policy wins over the flat columns, as in sockudo.
    assert_eq!(
        settings(&apps["pol"]),
        serde_json::json!({"cache_ttl": 3600,
            "max_connections": 500, "client_events_per_second": 25,
            "max_presence_user_info_bytes": 4096,
            "webhooks": [{"url": "https://hooks.example.com/pol", "event_types": ["member_added"]}],
        })
    );
    assert_eq!(
        settings(&apps["flat"]),
        serde_json::json!({"cache_ttl": 3600,
            "client_events": false, "publishes_per_second": 100, "reads_per_second": 200,
            "max_presence_members": 30, "max_presence_user_info_bytes": 2048,
            "webhooks": [{"url": "https://hooks.example.com/flat", "event_types": ["client_event"]}],
        })
    );
    let pol = not_mapped(&printed, "pol");
    assert_eq!(pol.len(), 1, "{printed}");
    assert!(
        has_line(
            &pol,
            "policy.channels.allowed_origins: Herald does not check"
        ),
        "{printed}"
    );
    assert!(not_mapped(&printed, "flat").is_empty(), "{printed}");
}

#[test]
fn sockudo_config_files_import_in_json_and_toml() {
    let out = TempFile::new("sockudo-json");
    let printed = import_ok(&[
        "--from",
        "sockudo",
        &fixture("sockudo.json"),
        "--output",
        out.path(),
    ]);
    let apps = out.apps();
    assert_eq!(
        settings(&apps["trading"]),
        serde_json::json!({"cache_ttl": 3600,
            "max_connections": 100000, "client_events_per_second": 1000,
            "publishes_per_second": 200, "max_event_data_bytes": 32768,
            "max_presence_user_info_bytes": 2048, "user_authentication_timeout": 600,
            "webhooks": [{"url": "https://hooks.example.com/sockudo", "event_types": ["channel_occupied", "channel_vacated", "subscription_count"], "channel_prefix": "private-"}],
        })
    );
    // sockudo's 0 is "no limit": Herald's default.
    assert_eq!(
        settings(&apps["legacy"]),
        serde_json::json!({"cache_ttl": 3600, "client_events": false, "reads_per_second": 20, "max_presence_members": 50, "max_presence_user_info_bytes": 2048})
    );
    let trading = not_mapped(&printed, "trading");
    for start in [
        "policy.channels.channel_namespaces: ",
        "policy.idempotency: ",
        "policy.webhooks[0].filter.channel_suffix: ",
        "policy.webhooks[0].retry: ",
    ] {
        assert!(has_line(&trading, start), "{start}: {printed}");
    }
    assert_eq!(trading.len(), 4, "{printed}");

    // SOCKUDO_DEFAULT_APP_*: each limit left out is 100 in sockudo.
    let run = import(
        &[
            "--from",
            "sockudo",
            "--env",
            "--output",
            out.path(),
            "--dry-run",
            "--json",
        ],
        &[
            ("SOCKUDO_DEFAULT_APP_ID", "s1"),
            ("SOCKUDO_DEFAULT_APP_KEY", "sk1"),
            ("SOCKUDO_DEFAULT_APP_SECRET", "ss1"),
            ("SOCKUDO_DEFAULT_APP_MAX_EVENT_NAME_LENGTH", "200"),
            ("SOCKUDO_DEFAULT_APP_ALLOWED_ORIGINS", "https://a.example"),
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let report: Value = serde_json::from_str(&run.stdout).expect("--json prints one JSON report");
    assert_eq!(report["dry_run"], true, "{report}");
    let app = &report["apps"][0];
    assert_eq!(app["id"], "s1", "{report}");
    assert_eq!(
        app["settings"],
        serde_json::json!([
            "cache_ttl",
            "client_events",
            "client_events_per_second",
            "max_channel_name_length",
            "max_connections",
            "max_events_per_batch",
            "max_presence_user_info_bytes",
            "publishes_per_second",
            "reads_per_second",
        ]),
        "{report}"
    );
    assert_eq!(
        app["not_mapped"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    assert_eq!(
        app["not_mapped"][0]["setting"], "SOCKUDO_DEFAULT_APP_ALLOWED_ORIGINS",
        "{report}"
    );
    assert!(!run.stdout.contains("ss1"), "no secret: {run:?}");

    let toml_out = TempFile::new("sockudo-toml");
    import_ok(&[
        "--from",
        "sockudo",
        &fixture("sockudo.toml"),
        "--output",
        toml_out.path(),
    ]);
    assert_eq!(
        settings(&toml_out.apps()["toml-app"]),
        serde_json::json!({"cache_ttl": 3600, "max_connections": 300, "client_events_per_second": 50, "max_presence_user_info_bytes": 2048})
    );
}

#[test]
fn reverb_and_pusher_variables_import_from_their_env_files() {
    let out = TempFile::new("reverb");
    let printed = import_ok(&[
        "--from",
        "reverb",
        &fixture("reverb.env"),
        "--output",
        out.path(),
    ]);
    let app = &out.apps()["846201"];
    assert_eq!(
        (app["key"].as_str(), app["secret"].as_str()),
        (Some("reverbkey0123456789"), Some("reverbsecret0123456789"))
    );
    assert_eq!(settings(app), serde_json::json!({"max_connections": 250}));
    let notes = not_mapped(&printed, "846201");
    for start in [
        "REVERB_APP_ACCEPT_CLIENT_EVENTS_FROM = all: ",
        "REVERB_APP_MAX_MESSAGE_SIZE = 20000: server-wide in Herald",
        "REVERB_HOST = ws.example.com: ",
    ] {
        assert!(has_line(&notes, start), "{start}: {printed}");
    }
    assert!(
        printed.contains("not imported: REVERB_SERVER_PORT: "),
        "{printed}"
    );

    let run = import(
        &[
            "--from",
            "reverb",
            "--env",
            "--output",
            out.path(),
            "--dry-run",
        ],
        &[
            ("REVERB_APP_ID", "r2"),
            ("REVERB_APP_KEY", "rk2"),
            ("REVERB_APP_SECRET", "rs2"),
            ("REVERB_APP_ACCEPT_CLIENT_EVENTS_FROM", "none"),
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains(
            "id = \"r2\"\nkey = \"rk2\"\nsecret = \"<redacted>\"\nclient_events = false\n"
        ),
        "{run:?}"
    );

    let out = TempFile::new("pusher");
    let printed = import_ok(&[
        "--from",
        "pusher",
        &fixture("pusher.env"),
        "--output",
        out.path(),
    ]);
    let app = &out.apps()["1987654"];
    assert_eq!(settings(app), serde_json::json!({}));
    assert_eq!(app["key"], "abcdef0123456789abcd");
    let notes = not_mapped(&printed, "1987654");
    assert!(
        has_line(&notes, "PUSHER_APP_CLUSTER = eu: Herald has no clusters"),
        "{printed}"
    );
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let out = TempFile::new("bad");
    let bad_json = TempFile::new("bad-json");
    std::fs::write(&bad_json.0, "{ not json").expect("write");
    let no_key = TempFile::new("no-key");
    std::fs::write(
        &no_key.0,
        r#"{"appManager.array.apps": [{"id": "x", "secret": "s"}]}"#,
    )
    .expect("write");
    let bad_limit = TempFile::new("bad-limit");
    std::fs::write(&bad_limit.0, r#"{"appManager.array.apps": [{"id": "x", "key": "k", "secret": "s", "maxConnections": "lots"}]}"#).expect("write");
    let bad_id = TempFile::new("bad-id");
    std::fs::write(
        &bad_id.0,
        r#"{"appManager.array.apps": [{"id": "a b", "key": "k", "secret": "s"}]}"#,
    )
    .expect("write");
    let bad_env = TempFile::new("bad-env");
    std::fs::write(&bad_env.0, "REVERB_APP_ID=1\nnot a pair\n").expect("write");
    let (reverb_env, soketi_json) = (fixture("reverb.env"), fixture("soketi.json"));
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "--from",
                "soketi",
                "/nonexistent/soketi.json",
                "--output",
                out.path(),
            ],
            "cannot read /nonexistent/soketi.json",
        ),
        (
            vec!["--from", "soketi", bad_json.path(), "--output", out.path()],
            "is not JSON",
        ),
        (
            vec!["--from", "soketi", no_key.path(), "--output", out.path()],
            "app 'x': has no key",
        ),
        (
            vec!["--from", "soketi", bad_limit.path(), "--output", out.path()],
            "`maxConnections` is not a number",
        ),
        (
            vec!["--from", "soketi", bad_id.path(), "--output", out.path()],
            "may only contain letters",
        ),
        (
            vec!["--from", "reverb", bad_env.path(), "--output", out.path()],
            ":2: expected KEY=VALUE",
        ),
        (
            vec![
                "--from",
                "pusher",
                "--env-file",
                &reverb_env,
                "--output",
                out.path(),
            ],
            "PUSHER_APP_ID is not set",
        ),
        (
            vec!["--from", "soketi", &soketi_json],
            "where should the apps go?",
        ),
        (
            vec!["--from", "soketi", "--output", out.path()],
            "where are soketi's apps?",
        ),
        (
            vec![
                "--from",
                "sockudo",
                "--db",
                "postgres://postgres@127.0.0.1:5432/postgres",
                "--table",
                "a;b",
                "--output",
                out.path(),
            ],
            "--table 'a;b'",
        ),
        (
            vec![
                "--from",
                "soketi",
                "--db",
                "redis://x",
                "--output",
                out.path(),
            ],
            "--db must be a postgres://",
        ),
        (
            vec![
                "--from",
                "reverb",
                "--db",
                "postgres://x/y",
                "--output",
                out.path(),
            ],
            "keeps its app in environment variables",
        ),
    ];
    for (args, expected) in cases {
        let run = import(&args, &[]);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(run.stderr.contains(expected), "{args:?}: {run:?}");
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {run:?}");
        assert!(!run.stderr.contains("panicked"), "{run:?}");
    }
    assert!(!out.0.exists(), "nothing was written");

    // A database that does not answer: exit 1, one line, no password shown.
    let port = support::db::free_port();
    let url = format!("postgres://postgres:hunter2@127.0.0.1:{port}/x");
    let run = import(
        &["--from", "soketi", "--db", &url, "--output", out.path()],
        &[],
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    assert!(!run.stderr.contains("hunter2"), "{run:?}");
}

async fn an_imported_soketi_table_is_served_to_pusher_js(engine: Engine) {
    let db = peer_table(engine, "soketi");
    // soketi's table and Herald's live side by side in one database.
    let printed = import_ok(&["--from", "soketi", "--db", &db.url(), "--to-db", &db.url()]);
    assert!(
        printed.contains("Imported 2 app(s) from soketi's table apps into"),
        "{printed}"
    );
    let row = db.sql("SELECT settings FROM herald_apps WHERE id = 'app-2'");
    let row: Value = serde_json::from_str(&row).expect("settings JSON");
    assert_eq!(row["publishes_per_second"], 100, "{row}");
    assert_eq!(row["client_events"], false, "{row}");

    let server = Server::start(&support::db::node_config(&db.url()));
    support::assert_pusher_js_served_as(&server, "app-2", "key-2", "secret-2");
    support::assert_pusher_js_served_as(&server, "app-1", "key-1", "secret-1");

    // Again: every id is taken, and nothing is written twice.
    let again = import(
        &["--from", "soketi", "--db", &db.url(), "--to-db", &db.url()],
        &[],
    );
    assert_eq!(again.code, 2, "{again:?}");
    assert!(
        again
            .stderr
            .contains("app 'app-1': an app in the database already has this id"),
        "{again:?}"
    );
    assert_eq!(db.sql("SELECT count(*) FROM herald_apps"), "2");
}

#[test]
fn a_herald_config_files_apps_still_import_without_from() {
    let db = TestDb::postgres();
    let file = TempFile::new("herald-apps");
    std::fs::write(
        &file.0,
        "[[apps]]\nid = \"h1\"\nkey = \"hk1\"\nsecret = \"hs1\"\nmax_connections = 3\n",
    )
    .expect("write");
    let apps = |args: &[&str]| support::db::herald_apps(&db.url(), None, args);
    assert_eq!(apps(&["migrate"]).code, 0);
    let run = apps(&["import", file.path()]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("Imported 1 app(s): h1."), "{run:?}");
    assert_eq!(db.sql("SELECT key FROM herald_apps WHERE id = 'h1'"), "hk1");
    let run = apps(&["import"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("--from soketi|sockudo|reverb|pusher"),
        "{run:?}"
    );
}
