//! What a tenant can reach and what the output shows of it, against the real binary (and a
//! real PostgreSQL for apps in a database): an app of the database has no webhook into the
//! node's network (refused when written, when loaded, and for a host name at delivery)
//! unless the operator allows the network, while the config file's apps reach any address;
//! a webhook URL's password never shows, in the node's debug log, `herald apps` or
//! `/metrics`. The per-address cap counts an IPv6 client by its /64.

mod support;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use support::db::{
    add, eventually, herald_apps, herald_reload, logged, migrate, node_config, subscribed, TestDb,
    PROPAGATION,
};
use support::{events_named, sink, status_of, until_closed, Server, KEY};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A webhook password, which must never be shown.
const PW: &str = "t3nant-h00k-pw";

/// What the node logs once for each distinct bad state of a row.
const INVALID: &str = "An app in the database is not valid";

/// What a node logs when it refuses a delivery for its address.
const REFUSED: &str = "Webhook not delivered";

/// A config file for `herald apps` and the node: `apps_url` and `extra` lines.
fn config_file(db: &TestDb, name: &str, extra: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(db.name());
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let path = dir.join(name);
    std::fs::write(&path, format!("{}{extra}", node_config(&db.url()))).expect("write config");
    path
}

/// One sample of `/metrics`, by its name and labels as written; 0 when absent.
async fn metric(server: &Server, key: &str) -> f64 {
    metrics(server)
        .await
        .lines()
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(name, _)| *name == key)
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0.0)
}

const REFUSED_METRIC: &str = r#"herald_webhook_requests_total{app="1",outcome="refused"}"#;

/// `/metrics` of the node's admin listener, as text.
async fn metrics(server: &Server) -> String {
    reqwest::get(format!("http://{}/metrics", server.admin))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}

#[tokio::test]
async fn a_tenants_webhook_password_never_shows() {
    let db = TestDb::postgres();
    let url = db.url();
    migrate(&url);
    // Refused before it is written: the message names the field, not the password.
    let refused = herald_apps(
        &url,
        None,
        &[
            "add",
            "--id",
            "1",
            "--key",
            "k1",
            "--webhook",
            &format!("ftp://hook:{PW}@h.example/x"),
        ],
    );
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(refused.stderr.contains("`webhooks[0].url`"), "{refused:?}");
    assert!(!format!("{refused:?}").contains(PW), "{refused:?}");

    // Written by hand: rows that are not valid apps, whose reason quotes a URL.
    for (id, settings) in [
        (
            "2",
            format!(r#"{{"webhooks":[{{"url":"ftp://hook:{PW}@h.example/x"}}]}}"#),
        ),
        (
            "3",
            format!(r#"{{"webhooks":"https://hook:{PW}@h.example/x"}}"#),
        ),
    ] {
        db.sql(&format!(
            "INSERT INTO herald_apps (id, key, secret, settings) \
             VALUES ('{id}', 'k{id}', 's{id}', '{settings}')"
        ));
    }
    let server = Server::start_logged(&node_config(&url), &[("RUST_LOG", "debug")]);
    eventually("both rows logged", Duration::from_secs(5), async || {
        logged(&server, INVALID) >= 2
    })
    .await;
    let list = herald_apps(&url, None, &["list"]);
    assert_eq!(list.code, 0, "{list:?}");
    assert_eq!(
        list.stdout.matches("invalid: `webhooks").count(),
        2,
        "{list:?}"
    );
    let shown = [server.log(), format!("{list:?}"), metrics(&server).await];
    for text in shown {
        assert!(!text.contains(PW), "the password shows:\n{text}");
    }
}

#[tokio::test]
async fn a_tenants_webhook_into_the_network_is_refused_when_written_and_loaded() {
    let db = TestDb::postgres();
    let url = db.url();
    migrate(&url);
    // The cloud metadata address, as the review's attacker wrote it.
    let metadata = [
        "add",
        "--id",
        "91",
        "--webhook",
        "http://169.254.169.254/latest",
    ];
    let refused = herald_apps(&url, None, &metadata);
    assert_eq!(refused.code, 2, "{refused:?}");
    assert_eq!(refused.stderr.lines().count(), 1, "one line: {refused:?}");
    for part in [
        "`webhooks[0].url`",
        "169.254.169.254",
        "link-local",
        "webhook_allowed_networks",
    ] {
        assert!(refused.stderr.contains(part), "{part}: {refused:?}");
    }
    for webhook in [
        "http://10.0.0.5:6379/",
        "http://[::1]:9601/metrics",
        "http://2852039166/latest",
        "http://[::ffff:127.0.0.1]/",
    ] {
        let run = herald_apps(&url, None, &["add", "--id", "92", "--webhook", webhook]);
        assert_eq!(run.code, 2, "{webhook}: {run:?}");
    }
    add(&url, "1", &[]);
    let update = herald_apps(
        &url,
        None,
        &["update", "1", "--webhook", "http://192.168.1.1/"],
    );
    assert_eq!(update.code, 2, "{update:?}");
    assert_eq!(
        db.sql("SELECT id FROM herald_apps"),
        "1",
        "nothing refused was written"
    );

    // The operator allows the network: accepted.
    let allowing = config_file(
        &db,
        "allowing.toml",
        "webhook_allowed_networks = [\"169.254.169.254/32\"]\n",
    );
    let run = herald_apps(&url, Some(&allowing), &metadata);
    assert_eq!(run.code, 0, "{run:?}");

    // A row written by hand is not a valid app: not served, reported with the reason.
    db.sql(
        "INSERT INTO herald_apps (id, key, secret, settings) VALUES \
         ('93', 'k93', 's93', '{\"webhooks\":[{\"url\":\"http://10.0.0.5:6379/\"}]}')",
    );
    let server = Server::start_logged(&node_config(&url), &[]);
    eventually("the rows logged", Duration::from_secs(5), async || {
        logged(&server, INVALID) >= 2
    })
    .await;
    let log = server.log();
    for reason in [
        "10.0.0.5, a private address",
        "169.254.169.254, a link-local address",
    ] {
        assert!(log.contains(reason), "{reason}: {log}");
    }
    assert_eq!(support::db::refusal(&server, "k93").await, Some(4001));
    let list = herald_apps(&url, None, &["list"]);
    assert!(
        list.stdout
            .contains("invalid: `webhooks[0].url` reaches 10.0.0.5, a private address"),
        "{list:?}"
    );
    // Under the config that allows it, the metadata row is valid.
    let list = herald_apps(&url, Some(&allowing), &["list"]);
    let row = list
        .stdout
        .lines()
        .find(|l| l.starts_with("91\t"))
        .expect("app 91");
    assert!(!row.contains("invalid"), "{list:?}");
    let _ = std::fs::remove_dir_all(std::env::temp_dir().join(db.name()));
}

#[tokio::test]
async fn a_tenants_host_name_is_checked_at_delivery_and_the_operator_can_allow_it() {
    let db = TestDb::postgres();
    let url = db.url();
    migrate(&url);
    let receiver = sink("200 OK", Duration::ZERO, String::new()).await;
    // A name, which only its delivery can check: it resolves to loopback.
    let by_name = receiver.url.replace("127.0.0.1", "localhost");
    add(&url, "1", &["--webhook", &by_name]);
    let dir = std::env::temp_dir().join(db.name());
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let pid_file = dir.join("herald.pid");
    let server = Server::start_logged_with_args(
        &node_config(&url),
        &["--pid-file", pid_file.to_str().expect("utf-8")],
    );
    let mut ws = server.connect("k1").await;
    // Three batches (one each), three refusals.
    for (n, channel) in ["a", "b", "c"].into_iter().enumerate() {
        subscribed(&mut ws, channel).await;
        eventually("the refusal counted", Duration::from_secs(5), async || {
            metric(&server, REFUSED_METRIC).await > n as f64
        })
        .await;
    }
    assert_eq!(
        receiver.requests.load(Ordering::SeqCst),
        0,
        "nothing reached it"
    );
    let log = server.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(REFUSED)).collect();
    assert_eq!(lines.len(), 1, "logged once for the three: {log}");
    for part in ["localhost", "127.0.0.1", "loopback", "app_id"] {
        assert!(lines[0].contains(part), "{part}: {}", lines[0]);
    }

    // The operator allows loopback and reloads: the same row's webhook is delivered.
    std::fs::write(
        &server.config,
        format!(
            "{}webhook_allowed_networks = [\"127.0.0.0/8\", \"::1/128\"]\n",
            node_config(&url)
        ),
    )
    .expect("rewrite config");
    herald_reload(&server, &pid_file).await;
    // The reload reaches the row within a second; each try occupies a new channel.
    let mut channel = 0;
    eventually("delivered once allowed", PROPAGATION * 3, async || {
        channel += 1;
        subscribed(&mut ws, &format!("after-{channel}")).await;
        events_named(&receiver.bodies, "channel_occupied") > 0
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_config_files_own_apps_reach_private_addresses() {
    let receiver = sink("200 OK", Duration::ZERO, String::new()).await;
    let server = Server::start(&format!(
        "[[apps]]\nid = \"1\"\nkey = \"k1\"\nsecret = \"s1\"\n\
         [[apps.webhooks]]\nurl = \"{}\"\n",
        receiver.url.replace("127.0.0.1", "localhost")
    ));
    let mut ws = server.connect("k1").await;
    subscribed(&mut ws, "news").await;
    eventually("delivered", Duration::from_secs(5), async || {
        events_named(&receiver.bodies, "channel_occupied") == 1
    })
    .await;
}

/// A WebSocket upgrade, with `X-Forwarded-For: forwarded` if given: the stream and the
/// status it was answered with (a refused one is read to its close).
async fn upgrade(addr: &str, forwarded: Option<&str>) -> (TcpStream, u16) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let forwarded = forwarded.map_or(String::new(), |f| format!("X-Forwarded-For: {f}\r\n"));
    let request = format!(
        "GET /app/{KEY}?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n{forwarded}\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).await.expect("read");
    let status = status_of(&buf[..n]);
    if status != 101 {
        until_closed(&mut stream, Duration::from_secs(2)).await;
    }
    (stream, status)
}

#[tokio::test]
async fn the_per_address_cap_counts_an_ipv6_client_by_its_64() {
    let config = "max_connections_per_ip = 1\ntrusted_proxies = [\"127.0.0.1\"]\n";
    let server = Server::start(config);
    let from = |client: &'static str| upgrade(&server.addr, Some(client));
    let (_first, status) = from("2001:db8:1:2::1").await;
    assert_eq!(status, 101);
    // Another address of the same /64: the same client.
    assert_eq!(from("2001:db8:1:2:ffff:ffff:ffff:fffe").await.1, 429);
    // The next /64: another client.
    let (_other, status) = from("2001:db8:1:3::1").await;
    assert_eq!(status, 101);
    // An IPv4-mapped address is its IPv4 address.
    let (_v4, status) = from("203.0.113.9").await;
    assert_eq!(status, 101);
    assert_eq!(from("::ffff:203.0.113.9").await.1, 429);

    // Counted by whole addresses when the operator says so.
    let whole = Server::start(&format!("{config}max_connections_per_ip_v6_prefix = 128\n"));
    let (_a, status) = upgrade(&whole.addr, Some("2001:db8:1:2::1")).await;
    assert_eq!(status, 101);
    let (_b, status) = upgrade(&whole.addr, Some("2001:db8:1:2::2")).await;
    assert_eq!(status, 101);
}

#[tokio::test]
async fn an_ipv6_peer_is_counted_on_an_ipv6_listener() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here: skipped");
        return;
    }
    let server = Server::start("host = \"::1\"\nmax_connections_per_ip = 1\n");
    assert!(server.addr.starts_with("[::1]:"), "{}", server.addr);
    let (_first, status) = upgrade(&server.addr, None).await;
    assert_eq!(status, 101);
    assert_eq!(upgrade(&server.addr, None).await.1, 429);
}
