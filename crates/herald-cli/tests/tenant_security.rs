//! What a tenant can reach and what the output shows of it, against the real binary (and a
//! real PostgreSQL for apps in a database): an app of the database has no webhook into the
//! node's network (refused when written, when loaded, and for a host name at delivery)
//! unless the operator allows the network, while the config file's apps reach any address;
//! a webhook URL's password never shows, in the node's debug log, `herald apps` or
//! `/metrics`. The per-address cap counts an IPv6 client by its /64. A client still
//! sending a body it was answered early for (413, 401) reads the answer: the server drains
//! the rest for a bounded time and size before it closes.

mod support;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use support::db::{
    add, eventually, herald_apps, herald_reload, logged, migrate, node_config, subscribed, TestDb,
    PROPAGATION,
};
use support::{events_named, signed_post, sink, status_of, until_closed, Server, KEY, SECRET};
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
    support::wait::metric(server, key).await.unwrap_or(0.0)
}

const REFUSED_METRIC: &str = r#"herald_webhook_requests_total{app="1",outcome="refused"}"#;

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
    let shown = [
        server.log(),
        format!("{list:?}"),
        support::wait::scrape(&server).await,
    ];
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

#[test]
fn the_official_node_library_reads_the_413_of_a_20_mb_body() {
    let server = Server::start("");
    // Twice: before the drain, it failed either way (EPIPE instead of the answer, or the
    // answer and then an unhandled EPIPE that ended the process).
    for _ in 0..2 {
        let line = support::oversized_body(&server, 20, &[]);
        assert_eq!(line["status"], 413, "{line}");
        assert_eq!(line["error"], serde_json::Value::Null, "{line}");
    }
}

/// What a raw client that sends `head` and then keeps sending body bytes (`chunk` bytes
/// at a time, every `pace`) saw: the answer's status and when it arrived, when its reads
/// ended (the server's FIN), when a write first failed (the server's close) and how many
/// body bytes it had written by then.
struct Sent {
    status: u16,
    answered: Instant,
    eof: Instant,
    cut: Instant,
    written: usize,
}

async fn send_until_cut(addr: &str, head: &str, chunk: usize, pace: Duration) -> Sent {
    let conn = TcpStream::connect(addr).await.expect("connect");
    let (mut reader, mut writer) = conn.into_split();
    writer.write_all(head.as_bytes()).await.expect("head");
    let reading = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let mut answered = None;
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    answered.get_or_insert_with(Instant::now);
                }
            }
        }
        (
            status_of(&got),
            answered.expect("an answer"),
            Instant::now(),
        )
    });
    let bytes = vec![b'x'; chunk];
    let mut written = 0;
    let guard = Instant::now() + Duration::from_secs(20);
    let cut = loop {
        assert!(Instant::now() < guard, "still sending after 20 s: not cut");
        match writer.write(&bytes).await {
            Ok(n) => written += n,
            Err(_) => break Instant::now(),
        }
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
    };
    let (status, answered, eof) = reading.await.expect("the reader");
    Sent {
        status,
        answered,
        eof,
        cut,
        written,
    }
}

#[tokio::test]
async fn a_client_sending_past_the_linger_time_is_cut_off_after_it() {
    let server = Server::start("http_linger_timeout = 1\n");
    // A bad signature over a declared 100 MB body: 401 before a byte of it is read. The
    // client goes on sending, 4 KiB every 20 ms.
    let head = signed_post("/apps/1/events", &[b'x'; 100], "wrong-secret")
        .replace("Content-Length: 100", "Content-Length: 100000000");
    let started = Instant::now();
    let sent = send_until_cut(&server.addr, &head, 4096, Duration::from_millis(20)).await;
    assert_eq!(sent.status, 401);
    assert!(
        sent.answered - started < Duration::from_secs(2),
        "answered while the body was still coming"
    );
    assert!(
        sent.eof <= sent.cut,
        "the answer ended (FIN) before the close"
    );
    let lingered = sent.cut - sent.answered;
    assert!(
        (Duration::from_millis(800)..Duration::from_secs(4)).contains(&lingered),
        "the drain lasted {lingered:?}, not the 1 s http_linger_timeout"
    );
    eprintln!(
        "cut {lingered:?} after the answer, {} bytes written",
        sent.written
    );
}

#[tokio::test]
async fn a_client_sending_past_the_linger_size_is_cut_off_after_it() {
    const BOUND: usize = 16 * 1024 * 1024;
    let server = Server::start(&format!(
        "http_linger_timeout = 60\nhttp_linger_max_bytes = {BOUND}\n"
    ));
    // A declared 1 GB body over max_request_body_bytes: 413 before it is read. The client
    // sends as fast as it can.
    let head = signed_post("/apps/1/events", &[b'x'; 100], SECRET)
        .replace("Content-Length: 100", "Content-Length: 1000000000");
    let sent = send_until_cut(&server.addr, &head, 64 * 1024, Duration::ZERO).await;
    assert_eq!(sent.status, 413);
    let lingered = sent.cut - sent.answered;
    assert!(
        lingered < Duration::from_secs(15),
        "cut by the byte bound, not the 60 s timeout: {lingered:?}"
    );
    // The server read the bound and no more; what it did not read fits in the sockets'
    // buffers.
    assert!(
        (BOUND..BOUND + 24 * 1024 * 1024).contains(&sent.written),
        "{} bytes written for a {BOUND}-byte drain",
        sent.written
    );
    eprintln!(
        "cut {lingered:?} after the answer, {} bytes written",
        sent.written
    );
}

#[tokio::test]
async fn a_request_whose_body_was_read_closes_at_once() {
    // The default drain is 5 s; a connection with nothing unread does not wait for it.
    let server = Server::start("");
    let body = br#"{"name":"e","channels":["c"],"data":"{}"}"#;
    let head = signed_post("/apps/1/events", body, SECRET)
        .replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n");
    let mut conn = TcpStream::connect(&server.addr).await.expect("connect");
    conn.write_all(head.as_bytes()).await.expect("head");
    conn.write_all(body).await.expect("body");
    let (response, took) = until_closed(&mut conn, Duration::from_secs(2)).await;
    assert_eq!(status_of(&response), 200);
    assert!(took < Duration::from_secs(1), "closed after {took:?}");
}
