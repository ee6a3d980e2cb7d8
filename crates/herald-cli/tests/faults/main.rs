//! The fault suite: herald nodes and Redis in network namespaces of their own, the official
//! clients' workload running through every fault, and the invariants of docs/design/faults.md
//! checked once the fault heals. See `run.rs` for the world a scenario runs in and `check.rs`
//! for the rules.
//!
//! It needs root (namespaces, veth pairs, nftables): without it every scenario fails with a
//! message saying so. By default the scenarios take CI's share (faults of 2 and 7 s either
//! side of a `node_timeout` of 4 s); `HERALD_LONG_FAULTS=1` runs the long variants (the
//! default `node_timeout` of 30 s, faults of 5 and 40 s, a minute of latency and loss),
//! whose figures are in BENCHMARKS.md.

mod check;
mod net;
mod node;
mod relay;
mod run;
mod workload;

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};
use net::Way;
use run::{hold, Run, Spec, Topology};

/// How many scenarios run at once unless `--test-threads` or `RUST_TEST_THREADS` says.
/// A scenario spends nearly all its time waiting (holds, the node timeout, convergence):
/// at libtest's default of one per core, CI's two cores ran the suite in 124-145 s for a
/// few seconds of CPU per scenario.
const SCENARIOS_AT_ONCE: usize = 4;

/// The scenarios, longest first so that the last ones to start are short.
fn main() -> ExitCode {
    let mut args = Arguments::from_args();
    if args.test_threads.is_none() && std::env::var_os("RUST_TEST_THREADS").is_none() {
        args.test_threads = Some(SCENARIOS_AT_ONCE);
    }
    let trials = vec![
        scenario(
            "redis_paused_past_the_node_timeout",
            redis_paused_past_the_node_timeout,
        ),
        scenario(
            "a_node_cut_off_from_redis_past_the_node_timeout",
            a_node_cut_off_from_redis_past_the_node_timeout,
        ),
        scenario(
            "a_node_cut_off_from_redis_one_way_past_the_node_timeout",
            a_node_cut_off_from_redis_one_way_past_the_node_timeout,
        ),
        scenario("one_node_of_three_killed", one_node_of_three_killed),
        scenario("sigterm_under_load", sigterm_under_load),
        scenario(
            "latency_and_loss_between_a_node_and_redis",
            latency_and_loss_between_a_node_and_redis,
        ),
        scenario(
            "a_node_cut_off_from_redis_one_way",
            a_node_cut_off_from_redis_one_way,
        ),
        scenario(
            "a_redis_cluster_shard_fails_over",
            a_redis_cluster_shard_fails_over,
        ),
        scenario("a_sentinel_failover", a_sentinel_failover),
        scenario(
            "a_node_cut_off_from_redis_both_ways",
            a_node_cut_off_from_redis_both_ways,
        ),
        scenario("redis_paused", redis_paused),
        scenario("redis_restarted", redis_restarted),
        scenario("nothing_breaks", nothing_breaks),
    ];
    libtest_mimic::run(&args, trials).exit_code()
}

/// A scenario as a test of its own, on a runtime of its own (as `#[tokio::test]` gives).
fn scenario<F: Future<Output = ()> + 'static>(name: &'static str, run: fn() -> F) -> Trial {
    Trial::test(name, move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Failed::from(format!("cannot start a runtime: {e}")))?
            .block_on(run());
        Ok(())
    })
}

/// Traffic before a fault.
const STEADY: Duration = Duration::from_secs(2);

fn long() -> bool {
    std::env::var_os("HERALD_LONG_FAULTS").is_some()
}

/// The nodes' `node_timeout`: the default (30 s) in the long run, 4 s in CI's.
fn node_timeout() -> u64 {
    if long() {
        30
    } else {
        4
    }
}

/// A fault shorter than `node_timeout`: 5 s in the long run, 2 s in CI's.
fn short() -> Duration {
    Duration::from_secs(if long() { 5 } else { 2 })
}

/// A fault past `node_timeout`: 40 s in the long run, 7 s in CI's.
fn past_timeout() -> Duration {
    Duration::from_secs(if long() { 40 } else { 7 })
}

async fn nothing_breaks() {
    let mut run = Run::start(Spec::new("baseline", Topology::Single, node_timeout())).await;
    hold(STEADY * 2).await;
    run.mark_healed();
    run.finish().await;
}

async fn a_node_cut_off_from_redis_both_ways() {
    let mut run = Run::start(Spec::new("cut both ways", Topology::Single, node_timeout())).await;
    hold(STEADY).await;
    run.cut_from_redis(1, Way::Both);
    hold(short()).await;
    run.heal_network();
    run.finish().await;
}

async fn a_node_cut_off_from_redis_past_the_node_timeout() {
    let mut run = Run::start(Spec::new(
        "cut past timeout",
        Topology::Single,
        node_timeout(),
    ))
    .await;
    hold(STEADY).await;
    run.cut_from_redis(1, Way::Both);
    hold(past_timeout()).await;
    run.heal_network();
    run.finish().await;
}

async fn a_node_cut_off_from_redis_one_way() {
    let mut run = Run::start(Spec::new("cut one way", Topology::Single, node_timeout())).await;
    hold(STEADY).await;
    // What the node sends is lost; what Redis sends still arrives.
    run.cut_from_redis(1, Way::Out);
    hold(short()).await;
    run.heal_network();
    hold(STEADY).await;
    // And the other way: the node's writes arrive, Redis's answers do not.
    run.cut_from_redis(2, Way::In);
    hold(short()).await;
    run.heal_network();
    run.finish().await;
}

async fn a_node_cut_off_from_redis_one_way_past_the_node_timeout() {
    let mut run = Run::start(Spec::new(
        "cut one way past timeout",
        Topology::Single,
        node_timeout(),
    ))
    .await;
    hold(STEADY).await;
    // Redis hears nothing from the node (no heartbeat: the others reap it), while what
    // Redis sends the node still arrives.
    run.cut_from_redis(1, Way::Out);
    hold(past_timeout()).await;
    run.heal_network();
    run.finish().await;
}

async fn redis_paused() {
    let mut run = Run::start(Spec::new("redis paused", Topology::Single, node_timeout())).await;
    hold(STEADY).await;
    run.pause_redis();
    hold(short()).await;
    run.resume_redis();
    run.finish().await;
}

async fn redis_paused_past_the_node_timeout() {
    let mut run = Run::start(Spec::new(
        "redis paused long",
        Topology::Single,
        node_timeout(),
    ))
    .await;
    hold(STEADY).await;
    run.pause_redis();
    hold(past_timeout()).await;
    run.resume_redis();
    run.finish().await;
}

async fn redis_restarted() {
    let mut run = Run::start(Spec::new(
        "redis restarted",
        Topology::Single,
        node_timeout(),
    ))
    .await;
    hold(STEADY).await;
    run.restart_redis();
    run.finish().await;
}

async fn one_node_of_three_killed() {
    let mut run = Run::start(Spec::new("node killed", Topology::Single, node_timeout())).await;
    hold(STEADY).await;
    run.kill_node(2);
    hold(Duration::from_secs(node_timeout()) + short()).await;
    run.restart_node(2);
    run.finish().await;
}

async fn latency_and_loss_between_a_node_and_redis() {
    let mut spec = Spec::new("latency and loss", Topology::Single, node_timeout());
    spec.relay = true;
    let mut run = Run::start(spec).await;
    hold(STEADY).await;
    run.degrade_link(Duration::from_millis(200), 5);
    hold(if long() {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(6)
    })
    .await;
    run.restore_link();
    run.finish().await;
}

async fn a_redis_cluster_shard_fails_over() {
    let mut run = Run::start(Spec::new(
        "cluster failover",
        Topology::Cluster,
        node_timeout(),
    ))
    .await;
    hold(STEADY).await;
    run.fail_over();
    run.finish().await;
}

async fn a_sentinel_failover() {
    let mut run = Run::start(Spec::new(
        "sentinel failover",
        Topology::Sentinel,
        node_timeout(),
    ))
    .await;
    hold(STEADY).await;
    run.fail_over();
    run.finish().await;
}

/// SIGTERM on a node with a console tab open, a webhook receiver that hangs, presence
/// members, and a client that stopped reading: it exits within its drain
/// (`shutdown_grace`, 3 s here) and a bounded webhook flush.
async fn sigterm_under_load() {
    let mut run = Run::start(Spec::new(
        "sigterm under load",
        Topology::Single,
        node_timeout(),
    ))
    .await;
    hold(STEADY).await;
    let node = &run.nodes[1];
    let console = reqwest::Client::new()
        .get(format!(
            "http://{}:{}/console/api/events",
            node.host.ip,
            node::ADMIN_PORT
        ))
        .bearer_auth(node::ADMIN_TOKEN)
        .send()
        .await
        .expect("open the console's live log");
    assert_eq!(console.status(), 200);
    let silent = silent_client(&node.ws_addr()).await;
    run.workload.sink("hang").await;
    run.excuses.webhooks_lost = true;
    let took = run.terminate_node(1, Duration::from_secs(20));
    drop((console, silent));
    let took = took.expect("the node still ran 20 s after SIGTERM");
    // shutdown_grace (3 s) + the webhook flush bound (5 s by default) + a margin.
    assert!(took < Duration::from_secs(10), "SIGTERM took {took:?}");
    eprintln!(
        "[sigterm under load] exited {:.1} s after SIGTERM",
        took.as_secs_f64()
    );
    run.workload.sink("ok").await;
    run.restart_node(1);
    run.finish().await;
}

/// A WebSocket client that subscribes and then never reads again.
async fn silent_client(addr: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "GET /app/{}?protocol=7 HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n",
        node::KEY
    );
    stream.write_all(request.as_bytes()).await.expect("upgrade");
    let subscribe = br#"{"event":"pusher:subscribe","data":{"channel":"faults-0"}}"#;
    // One masked text frame (the mask is zero: XOR leaves the payload as it is).
    let mut frame = vec![0x81, 0x80 | subscribe.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(subscribe);
    stream.write_all(&frame).await.expect("subscribe");
    stream
}
