//! Runs the official-client suite in `tests/js` (pusher-js and the `pusher` Node library)
//! against the `herald` binary built for this test run, one test per JS file: once against
//! a single node, and once against three nodes sharing a real `redis-server` behind a
//! round-robin load balancer (`HERALD_CLUSTER=3`, see tests/js/harness.mjs).

use std::path::{Path, PathBuf};
use std::process::Command;

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/js")
}

fn run_js(file: &str) {
    run_js_on(file, 1);
    run_js_on(file, 3);
}

fn run_js_on(file: &str, nodes: u32) {
    let dir = js_dir();
    assert!(
        dir.join("node_modules/pusher-js").is_dir() && dir.join("node_modules/pusher").is_dir(),
        "the official clients are not installed: run `npm ci --prefix tests/js` first"
    );
    let output = Command::new("node")
        // pusher-js keeps a 30 s timer alive after the server refuses a connection (4009);
        // without --test-force-exit a finished file would wait for it.
        .args(["--test", "--test-force-exit", "--test-reporter=spec", file])
        .current_dir(&dir)
        .env("HERALD_BIN", env!("CARGO_BIN_EXE_herald"))
        .env("HERALD_CLUSTER", nodes.to_string())
        .output()
        .unwrap_or_else(|e| panic!("cannot run node (Node.js 20.14+ is required): {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "{file} failed on {nodes} node(s):\n{stdout}\n{stderr}"
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
fn cluster_of_nodes_addressed_one_by_one() {
    // Starts its own Redis and nodes: killing a node and restarting Redis need them by name.
    run_js_on("cluster.test.mjs", 1);
}
