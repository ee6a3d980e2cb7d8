//! Two `herald serve` nodes on a real Redis Cluster (three masters, a replica each) and on a
//! real Sentinel set-up (a master, a replica, three sentinels): events cross the nodes,
//! presence is listed from either, and after the master holding the app's keys is killed
//! and its replica promoted, no member is lost, none is left behind, and events still flow.

#[path = "support/failover.rs"]
mod failover;
mod support;

use failover::{survives_a_failover, APP_TAG};
use redis_fixture::{RedisCluster, Sentinel};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_failover_loses_no_presence_and_leaves_no_ghosts() {
    let mut cluster = RedisCluster::start_with_replicas(3, 1);
    let url = cluster.url();
    survives_a_failover(&url, "", || {
        let port = cluster.master_for_slot(cluster.keyslot(APP_TAG));
        cluster.kill_node(port);
        cluster.wait_for_failover(port);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_loses_no_presence_and_leaves_no_ghosts() {
    let mut sentinel = Sentinel::start();
    let url = sentinel.url();
    survives_a_failover(&url, "", || {
        let port = sentinel.kill_master();
        sentinel.wait_for_failover(port);
    })
    .await;
}
