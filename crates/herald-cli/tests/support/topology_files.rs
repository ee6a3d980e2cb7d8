//! The official-client suite's files that `node_suite.rs` runs on the Redis topologies and
//! `redis_tls.rs` runs on them over TLS.

/// The files whose behaviour depends on the cluster's Redis: channels and their queries,
/// client events across nodes, presence and users, webhooks fired once per cluster, cache
/// channels and subscription counts, errors (refusals counted in Redis), history (kept in
/// Redis; on a Redis Cluster appended apart from the bus's publish). Left out: plan
/// limits (the same scripts on the same app tag as the channel counts), deflate (each node
/// compresses for itself), Laravel Echo (pusher-js underneath, already covered),
/// cluster.test.mjs (it kills its own redis-server by name).
pub const TOPOLOGY_FILES: &[&str] = &[
    "channels.test.mjs",
    "client_events.test.mjs",
    "users.test.mjs",
    "webhooks.test.mjs",
    "cache.test.mjs",
    "errors.test.mjs",
    "history.test.mjs",
];
