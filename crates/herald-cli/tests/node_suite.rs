//! Runs the official-client suite in `tests/js` (pusher-js, the `pusher` Node library and
//! Laravel Echo) against the `herald` binary built for this test run, one test per JS file:
//! once against a single node, once against three nodes sharing a real `redis-server` behind
//! a round-robin load balancer (`HERALD_CLUSTER=3`), and once each with the apps kept in
//! PostgreSQL and in MySQL/MariaDB (`HERALD_APPS_DB`, one node: a fresh database per server,
//! filled by `herald apps migrate` and `herald apps import`; see tests/js/harness.mjs).
//! The browser files (pusher-js's browser build, the admin listener's live console, and the
//! admin plane against a cross-origin and a rebinding page, in Debian's headless Chromium)
//! run once each, on one node with its apps in the config.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "support/topology_files.rs"]
mod topology_files;
use topology_files::TOPOLOGY_FILES;

/// Where a run's apps live, and on how many nodes it runs.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// `[[apps]]` in the config file, on this many nodes.
    File(u32),
    /// Three nodes sharing a Redis Cluster the test started (`HERALD_TEST_REDIS_URL`),
    /// every cluster the files start under a prefix of its own.
    RedisCluster,
    /// The same on a Sentinel set-up.
    Sentinel,
    /// One node with its apps in a fresh database of this kind (`HERALD_APPS_DB`).
    Db(&'static str),
}

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/js")
}

fn run_js(file: &str) {
    run_js_with(file, &[1, 3]);
}

/// Runs `file` with its apps in the config on each of `nodes`, and with them in each
/// database on one node, all at once: the runs share nothing (each server has its own
/// config or database) and mostly wait on timers. On CI's two cores this took the suite
/// from 199 s (one run after another) through 154 s (in pairs) down to the longest run per
/// file.
fn run_js_with(file: &str, nodes: &[u32]) {
    let modes: Vec<Mode> = nodes
        .iter()
        .map(|&n| Mode::File(n))
        .chain([Mode::Db("postgres"), Mode::Db("mysql")])
        .collect();
    let outputs = std::thread::scope(|scope| {
        let runs: Vec<_> = modes
            .iter()
            .map(|&mode| scope.spawn(move || run_js_on(file, mode)))
            .collect();
        runs.into_iter()
            .map(|run| run.join().expect("a node run panicked"))
            .collect::<Vec<_>>()
    });
    for (mode, output) in modes.into_iter().zip(outputs) {
        check(file, mode, output);
    }
}

/// Runs `file` once: one node, its apps in the config file.
fn run_js_once(file: &str) {
    check(file, Mode::File(1), run_js_on(file, Mode::File(1)));
}

fn run_js_on(file: &str, mode: Mode) -> Output {
    run_files(&[file], mode, None)
}

/// Runs `files` in one `node --test` (each file in a process of its own, two at a time:
/// they mostly wait on timers), with the Redis at `redis_url` under a shared-Redis mode.
fn run_files(files: &[&str], mode: Mode, redis_url: Option<&str>) -> Output {
    let dir = js_dir();
    assert!(
        ["pusher-js", "pusher", "laravel-echo"]
            .iter()
            .all(|package| dir.join("node_modules").join(package).is_dir()),
        "the official clients are not installed: run `npm ci --prefix tests/js` first"
    );
    let mut node = Command::new("node");
    // pusher-js keeps a 30 s timer alive after the server refuses a connection (4009);
    // without --test-force-exit a finished file would wait for it.
    node.args(["--test", "--test-force-exit", "--test-reporter=spec"])
        .args(if files.len() > 1 {
            &["--test-concurrency=2"][..]
        } else {
            &[]
        })
        .args(files)
        .current_dir(&dir)
        .env("HERALD_BIN", env!("CARGO_BIN_EXE_herald"))
        .env_remove("HERALD_APPS_URL")
        // The nodes take their Redis from their config, never from this process's own.
        .env_remove("HERALD_TEST_REDIS_URL")
        .env_remove("HERALD_REDIS_URL")
        .env_remove("HERALD_REDIS_PREFIX")
        .env_remove("HERALD_ADAPTER");
    match mode {
        Mode::File(nodes) => node
            .env("HERALD_CLUSTER", nodes.to_string())
            .env_remove("HERALD_APPS_DB"),
        Mode::Db(db) => node.env("HERALD_CLUSTER", "1").env("HERALD_APPS_DB", db),
        Mode::RedisCluster | Mode::Sentinel => node
            .env("HERALD_CLUSTER", "3")
            .env("HERALD_TEST_REDIS_URL", redis_url.unwrap_or_default())
            .env_remove("HERALD_APPS_DB"),
    };
    node.output()
        .unwrap_or_else(|e| panic!("cannot run node (Node.js 20.14+ is required): {e}"))
}

/// Prints a run's output and fails the test if the file failed.
fn check(file: &str, mode: Mode, output: Output) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{file} ({mode:?}):\n{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "{file} failed ({mode:?}):\n{stdout}\n{stderr}"
    );
}

#[test]
fn channels() {
    run_js("channels.test.mjs");
}

#[test]
fn client_events() {
    run_js("client_events.test.mjs");
}

#[test]
fn history() {
    // On one node and on three sharing a redis-server (the apps' store changes nothing
    // here); the Redis topologies run it too, with TOPOLOGY_FILES.
    for n in [1, 3] {
        let mode = Mode::File(n);
        check(
            "history.test.mjs",
            mode,
            run_js_on("history.test.mjs", mode),
        );
    }
}

#[test]
fn errors_and_close_codes() {
    run_js("errors.test.mjs");
}

#[test]
fn cache_and_subscription_counts() {
    run_js("cache.test.mjs");
}

#[test]
fn webhooks() {
    run_js("webhooks.test.mjs");
}

#[test]
fn plan_limits() {
    run_js("limits.test.mjs");
}

#[test]
fn users() {
    run_js("users.test.mjs");
}

#[test]
fn permessage_deflate_with_ws_and_pusher_js() {
    // Node's ws offering deflate, alone and under pusher-js; on one node and three (each
    // node compresses for its own subscribers).
    run_js("deflate.test.mjs");
}

#[test]
fn laravel_echo() {
    // Both broadcasters ('pusher' and 'reverb'); about 3 s a mode.
    run_js("echo.test.mjs");
}

#[test]
fn cluster_of_nodes_addressed_one_by_one() {
    // Starts its own Redis and nodes: killing a node and restarting Redis need them by name.
    run_js_with("cluster.test.mjs", &[1]);
}

/// Three nodes on a Redis Cluster (three masters, a replica each) and on a Sentinel set-up
/// (a master, a replica, three sentinels), each started once for the whole list: the two
/// topologies run side by side, as they share nothing.
#[test]
fn three_nodes_on_a_redis_cluster_and_on_sentinels() {
    let (cluster, sentinel) = std::thread::scope(|scope| {
        let cluster = scope.spawn(|| redis_fixture::RedisCluster::start_with_replicas(3, 1));
        let sentinel = scope.spawn(redis_fixture::Sentinel::start);
        (
            cluster.join().expect("the cluster started"),
            sentinel.join().expect("the sentinels started"),
        )
    });
    let runs = [
        (Mode::RedisCluster, cluster.url()),
        (Mode::Sentinel, sentinel.url()),
    ];
    let outputs = std::thread::scope(|scope| {
        let handles = runs
            .each_ref()
            .map(|(mode, url)| scope.spawn(move || run_files(TOPOLOGY_FILES, *mode, Some(url))));
        handles.map(|h| h.join().expect("a topology run panicked"))
    });
    for ((mode, _), output) in runs.into_iter().zip(outputs) {
        check(&TOPOLOGY_FILES.join(" "), mode, output);
    }
}

#[test]
fn recovery_after_a_silent_outage() {
    // Issue 27: one node, its apps in the config: pusher-js through a relay that
    // stops forwarding without a FIN, a 10 s outage; the failure events, an encrypted
    // channel and a Laravel Echo presence channel at once; pusher-js in Chromium through a
    // 5 s outage; a 4200 close under a publishing loop (about 26 s in all).
    run_in_chromium("recovery.test.mjs");
}

#[test]
fn recovery_across_a_cluster() {
    // Issue 27 in a cluster: the file starts its own three nodes and redis-server, and sends
    // the client's next connection to another node itself (a 10 s outage without a FIN, then
    // a node drained with SIGTERM under a publishing loop; about 25 s).
    run_js_once("recovery_cluster.test.mjs");
}

#[test]
fn pusher_js_in_a_browser() {
    // What it checks is the browser's side of the wire, which neither the number of nodes
    // nor where the apps live changes: one run (about 22 s, 15 of them pusher-js's own wait
    // after a graceful restart; see the file).
    run_in_chromium("browser.test.mjs");
}

#[test]
fn live_console_in_a_browser() {
    // The admin listener's /console page in headless Chromium: what it shows of a pusher-js
    // client, its publish form, its log controls, its rate charts under real traffic, an
    // app's limits and webhooks, and the admin token. Neither the number of nodes nor where
    // the apps live changes the page: one run (about 20 s). With HERALD_CONSOLE_SCREENSHOT=1
    // it rewrites docs/console.png, the screenshot the docs show.
    run_in_chromium("console.test.mjs");
}

#[test]
fn admin_plane_in_a_browser() {
    // Issue 26: a page of another origin, and one reached through a rebinding-style name,
    // can neither publish through the console nor read it; the console's own page still
    // publishes. One run (about 3 s).
    run_in_chromium("admin_security.test.mjs");
}

/// Runs a browser file once (one node, file apps), in Debian's Chromium.
fn run_in_chromium(file: &str) {
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "the browser tests need Chromium at /usr/bin/chromium (Debian: apt-get install chromium)"
    );
    run_js_once(file);
}
