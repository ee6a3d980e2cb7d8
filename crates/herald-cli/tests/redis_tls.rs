//! TLS to Redis, against real `redis-server` processes serving TLS only (a test CA made
//! with `openssl` at test time): the official-client suite on three nodes over a Redis
//! Cluster (three masters, a replica each, the bus and replication over TLS); failovers of
//! a cluster and of a Sentinel set-up (sentinels over TLS too); a client certificate required by
//! the server and given by the node (mTLS); a wrong CA and a certificate for another name
//! refused at start with a clear error (the name check turned off only by its key); plain
//! sentinels before a TLS master (`sentinel_tls=false`); and rotated certificate files read
//! again on SIGHUP, on each topology.

#[path = "support/failover.rs"]
mod failover;
mod support;
#[path = "support/topology_files.rs"]
mod topology_files;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use failover::{events_flow, survives_a_failover, APP_TAG};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use redis_fixture::{RedisCluster, RedisServer, Sentinel, TestCa, TlsFiles};
use support::nodes::{next_event, trigger};
use support::{Server, KEY};

/// Runs the suite's files whose behaviour goes through Redis on three nodes sharing the Redis at `url`, their TLS keys `keys`.
fn run_suite(url: &str, keys: &str) -> Output {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/js");
    assert!(
        dir.join("node_modules/pusher-js").is_dir(),
        "the official clients are not installed: run `npm ci --prefix tests/js` first"
    );
    Command::new("node")
        .args([
            "--test",
            "--test-force-exit",
            "--test-reporter=spec",
            "--test-concurrency=2",
        ])
        .args(topology_files::TOPOLOGY_FILES)
        .current_dir(&dir)
        .env("HERALD_BIN", env!("CARGO_BIN_EXE_herald"))
        .env("HERALD_CLUSTER", "3")
        .env("HERALD_TEST_REDIS_URL", url)
        .env("HERALD_TEST_REDIS_CONFIG", keys)
        .env_remove("HERALD_APPS_URL")
        .env_remove("HERALD_APPS_DB")
        .env_remove("HERALD_REDIS_URL")
        .env_remove("HERALD_ADAPTER")
        .output()
        .unwrap_or_else(|e| panic!("cannot run node (Node.js 20.14+ is required): {e}"))
}

/// `key = "path"` lines.
fn keys(pairs: &[(&str, &Path)]) -> String {
    pairs
        .iter()
        .map(|(key, path)| format!("{key} = \"{}\"\n", path.display()))
        .collect()
}

/// The suite over TLS on a Redis Cluster only: its behaviour is the transport's business
/// nowhere above the link, which the cluster exercises most (a connection per shard, the
/// addresses it discovers, the bus and replication over TLS). The node's TLS to one
/// server and to sentinels is pinned by the rotation, failover and refusal tests below,
/// and the files themselves run on every plain topology in `node_suite.rs`. Running them
/// over all three TLS topologies at once took 76 s of CI's time for no other path.
#[test]
fn the_official_clients_pass_over_tls_on_a_redis_cluster() {
    let ca = TestCa::new("herald suite CA");
    let files = ca.server_files(false);
    let cluster = RedisCluster::start_tls(3, 1, &files);
    let url = cluster.url();
    assert!(url.starts_with("rediss"), "{url}");
    let output = run_suite(&url, &keys(&[("redis_tls_ca_file", ca.cert())]));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the suite failed over TLS on a Redis Cluster:\n{stdout}\n{stderr}"
    );
}

/// A node's config over the Redis at `url`, with `extra` keys.
fn config(url: &str, extra: &str) -> String {
    format!(
        "adapter = \"redis\"\nredis_url = \"{url}\"\nredis_prefix = \"tls\"\nnode_timeout = 5\n{extra}\n\
         [[apps]]\nid = \"1\"\nkey = \"app-key\"\nsecret = \"app-secret\"\n"
    )
}

/// Runs `herald serve` with `config`, expecting it to stop at start; returns its stderr.
fn refused(config: &str) -> String {
    let path = std::env::temp_dir().join(format!(
        "herald-test-{}-tls-{}.toml",
        std::process::id(),
        config.len()
    ));
    std::fs::write(&path, config).expect("write config");
    let output = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--port", "0", "--config"])
        .env("HERALD_DATA_DIR", support::scratch_data_dir())
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run herald");
    let _ = std::fs::remove_file(&path);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "the node started: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// Two nodes over `url` with `extra`, and an event crossing them.
async fn two_nodes_talk(url: &str, extra: &str) -> (Server, Server) {
    let (a, b) = (
        Server::start_logged(&config(url, extra), &[]),
        Server::start_logged(&config(url, extra), &[]),
    );
    let mut on_b = b.connect(KEY).await;
    on_b.subscribe("news").await;
    assert!(
        events_flow(&a, &mut on_b, "news").await,
        "no event crossed the nodes:\n{}",
        a.log()
    );
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_the_server_requires_is_given() {
    let ca = TestCa::new("herald mTLS CA");
    let redis = tokio::task::block_in_place(|| RedisServer::start_tls(&ca.server_files(true)));
    let url = redis.url();
    let node = ca.issue("herald-node", &["herald-node"]);

    // Without a certificate the server closes the handshake: the node does not start.
    let stderr = refused(&config(&url, &keys(&[("redis_tls_ca_file", ca.cert())])));
    assert!(
        stderr.contains("cannot reach Redis at rediss://"),
        "{stderr}"
    );

    let extra = keys(&[
        ("redis_tls_ca_file", ca.cert()),
        ("redis_tls_cert_file", &node.cert),
        ("redis_tls_key_file", &node.key),
    ]);
    let _nodes = two_nodes_talk(&url, &extra).await;
    // The server saw the node's certificate: its clients are over TLS (port 0: no other way
    // in), and they are ours.
    let clients = redis.cli(&["client", "list"]).expect("CLIENT LIST");
    assert!(clients.lines().count() >= 4, "{clients}");

    // A key without its certificate is named at load.
    let stderr = refused(&config(&url, &keys(&[("redis_tls_key_file", &node.key)])));
    assert!(stderr.contains("redis_tls_cert_file"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_is_refused_at_start_with_a_clear_error() {
    let ca = TestCa::new("herald right CA");
    let other = TestCa::new("herald wrong CA");
    let redis = tokio::task::block_in_place(|| RedisServer::start_tls(&ca.server_files(false)));
    for extra in [
        keys(&[("redis_tls_ca_file", other.cert())]),
        // No CA: the web roots, which never signed a test certificate.
        String::new(),
    ] {
        let stderr = refused(&config(&redis.url(), &extra));
        assert!(
            stderr.contains("cannot reach Redis at rediss://127.0.0.1")
                && stderr.to_lowercase().contains("certificate"),
            "{stderr}"
        );
    }
    // A file that is no certificate is named at load, before any connection.
    let stderr = refused(&config(
        &redis.url(),
        &keys(&[("redis_tls_ca_file", Path::new("/etc/hostname"))]),
    ));
    assert!(stderr.contains("redis_tls_ca_file"), "{stderr}");
    // TLS files for a plain URL are a mistake, named.
    let stderr = refused(&config(
        &redis.url().replace("rediss://", "redis://"),
        &keys(&[("redis_tls_ca_file", ca.cert())]),
    ));
    assert!(stderr.contains("redis_tls_"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_name_is_refused_unless_the_check_is_turned_off() {
    let ca = TestCa::new("herald names CA");
    let elsewhere = ca.issue("elsewhere", &["redis.elsewhere.test"]);
    let files = TlsFiles {
        ca: ca.cert().to_owned(),
        cert: elsewhere.cert,
        key: elsewhere.key,
        require_client_cert: false,
    };
    let redis = tokio::task::block_in_place(|| RedisServer::start_tls(&files));
    let trusted = keys(&[("redis_tls_ca_file", ca.cert())]);
    let stderr = refused(&config(&redis.url(), &trusted));
    assert!(
        stderr.contains("cannot reach Redis") && stderr.to_lowercase().contains("name"),
        "{stderr}"
    );

    let skip = format!("{trusted}redis_tls_insecure_skip_name_check = true\n");
    let (a, _b) = two_nodes_talk(&redis.url(), &skip).await;
    assert!(
        a.log().contains("server name check is OFF"),
        "no warning:\n{}",
        a.log()
    );
    // The chain is still checked: another CA is refused with the name check off.
    let other = TestCa::new("herald names other CA");
    let stderr = refused(&config(
        &redis.url(),
        &format!(
            "{}redis_tls_insecure_skip_name_check = true\n",
            keys(&[("redis_tls_ca_file", other.cert())])
        ),
    ));
    assert!(stderr.contains("cannot reach Redis"), "{stderr}");
}

/// Copies `from` over `to`.
fn put(from: &Path, to: &Path) {
    std::fs::copy(from, to).expect("copy a certificate file");
}

/// A TLS set-up whose data nodes a test reconfigures.
enum Topology {
    One(RedisServer),
    Cluster(RedisCluster),
    Sentinels(Sentinel),
}

impl Topology {
    fn start(kind: &str, files: &TlsFiles) -> Topology {
        tokio::task::block_in_place(|| match kind {
            "one" => Topology::One(RedisServer::start_tls(files)),
            "cluster" => Topology::Cluster(RedisCluster::start_tls(3, 1, files)),
            _ => Topology::Sentinels(Sentinel::start_tls(files, true)),
        })
    }

    fn url(&self) -> String {
        match self {
            Topology::One(redis) => redis.url(),
            Topology::Cluster(cluster) => cluster.url(),
            Topology::Sentinels(sentinel) => sentinel.url(),
        }
    }

    /// `redis-cli args` on every data node (not the sentinels); whether each succeeded.
    fn on_data_nodes(&self, args: &[&str]) -> Vec<bool> {
        match self {
            Topology::One(redis) => vec![redis.cli(args).is_some()],
            Topology::Cluster(cluster) => cluster
                .live_ports()
                .into_iter()
                .map(|port| cluster.cli(port, args).is_some())
                .collect(),
            Topology::Sentinels(sentinel) => sentinel
                .server_ports()
                .into_iter()
                .map(|port| sentinel.cli(port, args).is_some())
                .collect(),
        }
    }
}

/// The data nodes move to a new CA's certificate and drop their clients: the nodes, which
/// trust the old CA only, cannot reconnect until their files rotate (the new CA added, a
/// client certificate from it) and SIGHUP makes them read the files again.
async fn rotation(kind: &str) {
    let (old, new) = (TestCa::new("herald old CA"), TestCa::new("herald new CA"));
    let dir =
        std::env::temp_dir().join(format!("herald-test-{}-rotate-{kind}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    // The servers trust certificates of both CAs (clients', and each other's for
    // replication and the cluster bus); they present the old CA's first.
    let trust = dir.join("trust.pem");
    let both = [old.cert(), new.cert()].map(|p| std::fs::read_to_string(p).expect("a CA"));
    std::fs::write(&trust, both.concat()).expect("write the bundle");
    let served_old = old.issue("served-old", &["127.0.0.1"]);
    let served_new = new.issue("served-new", &["127.0.0.1"]);
    let files = TlsFiles {
        ca: trust.clone(),
        cert: served_old.cert.clone(),
        key: served_old.key.clone(),
        require_client_cert: true,
    };
    let redis = Topology::start(kind, &files);

    // The node's files: the old CA, and a client certificate it issued.
    let (ca, cert, key) = (
        dir.join("ca.pem"),
        dir.join("node.crt"),
        dir.join("node.key"),
    );
    let node_old = old.issue("node-old", &["herald-node"]);
    let node_new = new.issue("node-new", &["herald-node"]);
    put(old.cert(), &ca);
    put(&node_old.cert, &cert);
    put(&node_old.key, &key);
    let extra = keys(&[
        ("redis_tls_ca_file", &ca),
        ("redis_tls_cert_file", &cert),
        ("redis_tls_key_file", &key),
    ]);
    let (a, b) = two_nodes_talk(&redis.url(), &extra).await;
    let mut on_b = b.connect(KEY).await;
    on_b.subscribe("rotated").await;

    let (cert_path, key_path) = (
        served_new.cert.display().to_string(),
        served_new.key.display().to_string(),
    );
    // Both at once: the server checks that the key matches the certificate.
    let set = [
        "config",
        "set",
        "tls-cert-file",
        &cert_path,
        "tls-key-file",
        &key_path,
    ];
    assert!(
        redis.on_data_nodes(&set).into_iter().all(|ok| ok),
        "CONFIG SET the new certificate"
    );
    for kind in ["normal", "pubsub"] {
        redis.on_data_nodes(&["client", "kill", "type", kind]);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    trigger(&a, "rotated", "lost", None).await;
    let lost = tokio::time::timeout(Duration::from_secs(2), next_event(&mut on_b, "ev")).await;
    assert!(lost.is_err(), "an event crossed with the old CA: {lost:?}");

    // The files rotate (the sentinels, if any, keep the old CA's certificate); SIGHUP.
    put(&trust, &ca);
    put(&node_new.cert, &cert);
    put(&node_new.key, &key);
    for node in [&a, &b] {
        kill(Pid::from_raw(node.pid() as i32), Signal::SIGHUP).expect("SIGHUP");
    }
    assert!(
        events_flow(&a, &mut on_b, "rotated").await,
        "no event crossed after the reload:\n{}\n{}",
        a.log(),
        b.log()
    );
    assert!(a.log().contains("certificates reloaded"), "{}", a.log());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reads_rotated_certificate_files_again() {
    rotation("one").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reads_rotated_certificate_files_again_on_a_cluster() {
    rotation("cluster").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reads_rotated_certificate_files_again_on_sentinels() {
    rotation("sentinels").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_sentinels_and_a_tls_master_are_set_apart() {
    let ca = TestCa::new("herald split CA");
    let sentinel =
        tokio::task::block_in_place(|| Sentinel::start_tls(&ca.server_files(false), false));
    let url = sentinel.url();
    assert!(url.ends_with("?sentinel_tls=false"), "{url}");
    let _nodes = two_nodes_talk(&url, &keys(&[("redis_tls_ca_file", ca.cert())])).await;
    // Over TLS to the plain sentinels, the nodes would not start.
    let stderr = refused(&config(
        &url.replace("sentinel_tls=false", "sentinel_tls=true"),
        &keys(&[("redis_tls_ca_file", ca.cert())]),
    ));
    assert!(stderr.contains("cannot reach Redis"), "{stderr}");
}

/// Server files requiring a client certificate from `ca`, and a node's keys giving one.
fn mtls(ca: &TestCa) -> (TlsFiles, String) {
    let node = ca.issue("herald-node", &["herald-node"]);
    let extra = keys(&[
        ("redis_tls_ca_file", ca.cert()),
        ("redis_tls_cert_file", &node.cert),
        ("redis_tls_key_file", &node.key),
    ]);
    (ca.server_files(true), extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_failover_over_tls_loses_no_presence() {
    // Kept to the end: its directory holds the files.
    let ca = TestCa::new("herald failover CA");
    let (files, extra) = mtls(&ca);
    let mut cluster = tokio::task::block_in_place(|| RedisCluster::start_tls(3, 1, &files));
    survives_a_failover(&cluster.url(), &extra, || {
        let port = cluster.master_for_slot(cluster.keyslot(APP_TAG));
        cluster.kill_node(port);
        cluster.wait_for_failover(port);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_over_tls_loses_no_presence() {
    // Kept to the end: its directory holds the files.
    let ca = TestCa::new("herald sentinel failover CA");
    let (files, mut extra) = mtls(&ca);
    // The sentinels' own CA key, as a set-up whose sentinels have another CA would give it.
    extra.push_str(&keys(&[("redis_sentinel_tls_ca_file", ca.cert())]));
    let mut sentinel = tokio::task::block_in_place(|| Sentinel::start_tls(&files, true));
    survives_a_failover(&sentinel.url(), &extra, || {
        let port = sentinel.kill_master();
        sentinel.wait_for_failover(port);
    })
    .await;
}
