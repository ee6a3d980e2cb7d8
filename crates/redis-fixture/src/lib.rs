//! Real Redis processes for tests, started on free loopback ports in a scratch directory and
//! killed when dropped: one server ([`RedisServer`]), a Redis Cluster ([`RedisCluster`]) and a
//! Sentinel set-up ([`Sentinel`]), each also serving TLS only when started with
//! [`TlsFiles`] (a [`TestCa`] makes them with the `openssl` command).
//!
//! The fixture only drives the `redis-server` and `redis-cli` binaries on PATH (Redis 7 for
//! sharded pub/sub); it shares no code with the client it tests. Every wait is bounded and
//! panics with what it was waiting for, so a broken set-up fails the test instead of hanging
//! it. The calls block (processes and polling): from an async test, call the slow ones
//! (start, failovers) in `spawn_blocking` or on a multi-threaded runtime, so the client's
//! tasks keep running meanwhile.

mod cluster;
mod process;
mod scratch;
mod sentinel;
mod server;
mod tls;

pub use cluster::{ClusterNode, RedisCluster};
pub use process::{cli, cli_at, free_port, Host};
pub use sentinel::Sentinel;
pub use server::RedisServer;
pub use tls::{Issued, TestCa, TlsFiles};
