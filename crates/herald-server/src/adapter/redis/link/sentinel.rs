//! A master found through its sentinels and followed across failovers.
//!
//! Discovery asks the sentinels in turn (SENTINEL GET-MASTER-ADDR-BY-NAME) and checks with
//! ROLE that the server named is a master. It is done here rather than by the `redis`
//! crate's `Sentinel` because that one checks the master with certificates of its own,
//! not the configured CA, client certificate and name check, and keeps its sentinel
//! connections on the certificates they were opened with; here every discovery connects
//! afresh with the certificates read last. [`SentinelMaster`] keeps one multiplexed
//! connection to the master and forgets it, so the next request asks the sentinels again,
//! when:
//! - a request fails on the connection (I/O error, timeout, closed), as when the master dies;
//! - the server answers READONLY or MASTERDOWN: it is no longer the master;
//! - a sentinel announces `+switch-master` for this master (a task listens), which also
//!   covers a demoted master that is still reachable and would serve stale reads.
//!
//! A request that got READONLY did not run, so it is sent once more to the new master;
//! any other failed request returns its error (it may have run).
//!
//! Every step of a discovery is bounded by the link's timeouts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionInfo, ErrorKind, Pipeline, ProtocolVersion, RedisError,
    RedisFuture, RedisResult, Value,
};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::target::{Node, SentinelSeeds};
use super::Options;

/// Pause between rounds over the sentinels when none gives a `+switch-master` feed.
const WATCH_RETRY: Duration = Duration::from_secs(1);
/// After a failed discovery, requests fail at once for this long instead of each asking
/// the sentinels again, so a failover's burst of requests does not queue up discoveries.
const DISCOVERY_BACKOFF: Duration = Duration::from_millis(100);

/// A sentinel-monitored master. Clones share the connection.
#[derive(Clone)]
pub(crate) struct SentinelMaster {
    shared: Arc<Shared>,
}

struct Shared {
    seeds: SentinelSeeds,
    options: Options,
    current: parking_lot::Mutex<Option<Current>>,
    /// Held while connecting, so concurrent requests wait for one discovery; holds when
    /// the last one failed.
    connecting: tokio::sync::Mutex<Option<tokio::time::Instant>>,
    next_id: AtomicU64,
    /// Counts the `+switch-master` announcements seen, for subscribers that must move
    /// with the master.
    switches: watch::Sender<u64>,
    _watcher: DropGuard,
}

#[derive(Clone)]
pub(super) struct Current {
    id: u64,
    conn: MultiplexedConnection,
}

impl SentinelMaster {
    /// Builds the handle and starts listening for `+switch-master`; connects on first use.
    pub(crate) fn new(seeds: &SentinelSeeds, options: &Options) -> RedisResult<SentinelMaster> {
        if seeds.sentinels.is_empty() {
            return Err(RedisError::from((
                ErrorKind::EmptySentinelList,
                "at least one sentinel is needed",
            )));
        }
        let token = CancellationToken::new();
        let shared = Arc::new(Shared {
            seeds: seeds.clone(),
            options: options.clone(),
            current: parking_lot::Mutex::new(None),
            connecting: tokio::sync::Mutex::new(None),
            next_id: AtomicU64::new(0),
            switches: watch::Sender::new(0),
            _watcher: token.clone().drop_guard(),
        });
        tokio::spawn(watch_switches(Arc::downgrade(&shared), token));
        Ok(SentinelMaster { shared })
    }

    /// Asks the sentinels where the master is; the connection details speak `protocol`.
    pub(crate) async fn discover(&self, protocol: ProtocolVersion) -> RedisResult<ConnectionInfo> {
        let options = &self.shared.options;
        // A sentinel, then the master it named: two connections and a command on each.
        let limit = (options.connect_timeout + options.response_timeout) * 2;
        let mut last = None;
        for sentinel in &self.shared.seeds.sentinels {
            match tokio::time::timeout(limit, self.ask(sentinel, protocol)).await {
                Ok(Ok(master)) => return Ok(master),
                Ok(Err(error)) => last = Some(error),
                Err(_) => {
                    last = Some(timed_out(
                        "a sentinel, or the master it named, did not answer in time",
                    ))
                }
            }
        }
        Err(last.unwrap_or_else(|| timed_out("no sentinel to ask")))
    }

    /// Asks `sentinel` for the master, and the master whether it is one.
    async fn ask(&self, sentinel: &Node, protocol: ProtocolVersion) -> RedisResult<ConnectionInfo> {
        let seeds = &self.shared.seeds;
        let options = &self.shared.options;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(options.connect_timeout)
            .set_response_timeout(options.response_timeout);
        let info = options.sentinel_tls.apply(sentinel.info(
            seeds.sentinel_tls,
            &seeds.sentinel_auth,
            0,
            ProtocolVersion::RESP2,
        ))?;
        let mut conn = redis::Client::open(info)?
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let named: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(&seeds.master)
            .query_async(&mut conn)
            .await?;
        let Some((host, port)) = named else {
            return Err(RedisError::from((
                ErrorKind::MasterNameNotFoundBySentinel,
                "the sentinel monitors no master by that name",
            )));
        };
        let master = Node { host, port }.info(seeds.tls, &seeds.auth, seeds.db, protocol);
        let master = options.tls.apply(master)?;
        let mut conn = redis::Client::open(master.clone())?
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let role: Vec<Value> = redis::cmd("ROLE").query_async(&mut conn).await?;
        match role.first().map(redis::from_redis_value::<String>) {
            Some(Ok(role)) if role == "master" => Ok(master),
            _ => Err(RedisError::from((
                ErrorKind::MasterNameNotFoundBySentinel,
                "the server the sentinel named is not a master (a failover is under way)",
            ))),
        }
    }

    /// The master's connection, discovering the master first if there is none.
    pub(super) async fn connection(&self) -> RedisResult<Current> {
        let shared = &self.shared;
        if let Some(current) = shared.current.lock().clone() {
            return Ok(current);
        }
        let mut failed = shared.connecting.lock().await;
        if let Some(current) = shared.current.lock().clone() {
            return Ok(current);
        }
        if failed.is_some_and(|at| at.elapsed() < DISCOVERY_BACKOFF) {
            return Err(RedisError::from((
                ErrorKind::MasterNameNotFoundBySentinel,
                "no master reachable (just asked the sentinels)",
            )));
        }
        let conn = match self.connect_master().await {
            Ok(conn) => conn,
            Err(error) => {
                *failed = Some(tokio::time::Instant::now());
                return Err(error);
            }
        };
        *failed = None;
        let current = Current {
            id: shared.next_id.fetch_add(1, Ordering::Relaxed),
            conn,
        };
        *shared.current.lock() = Some(current.clone());
        Ok(current)
    }

    async fn connect_master(&self) -> RedisResult<MultiplexedConnection> {
        let options = &self.shared.options;
        let info = self.discover(ProtocolVersion::RESP2).await?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(options.connect_timeout)
            .set_response_timeout(options.response_timeout);
        redis::Client::open(info)?
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// Master changes seen so far; the receiver wakes on each.
    pub(crate) fn switches(&self) -> watch::Receiver<u64> {
        self.shared.switches.subscribe()
    }

    /// Drops the connection `id` (if still the current one), so the next request asks the
    /// sentinels again.
    fn forget(&self, id: u64) {
        let mut current = self.shared.current.lock();
        if current.as_ref().is_some_and(|c| c.id == id) {
            *current = None;
        }
    }

    /// Runs `request` on the master, rediscovering it as the module comment says.
    async fn run<'f, T, F>(&self, request: F) -> RedisResult<T>
    where
        F: Fn(MultiplexedConnection) -> RedisFuture<'f, T>,
    {
        let mut retried = false;
        loop {
            let current = self.connection().await?;
            match request(current.conn.clone()).await {
                Err(error) if master_lost(&error) => {
                    self.forget(current.id);
                    if error.kind() == ErrorKind::ReadOnly && !retried {
                        retried = true;
                        continue;
                    }
                    return Err(error);
                }
                result => return result,
            }
        }
    }
}

/// Whether `error` means the connection is no longer to a working master.
fn master_lost(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_unrecoverable_error()
        || error.is_timeout()
        || matches!(error.kind(), ErrorKind::ReadOnly | ErrorKind::MasterDown)
}

fn timed_out(what: &'static str) -> RedisError {
    RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, what))
}

impl ConnectionLike for SentinelMaster {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let this = self.clone();
        Box::pin(async move {
            this.run(|mut conn| Box::pin(async move { conn.req_packed_command(cmd).await }))
                .await
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let this = self.clone();
        Box::pin(async move {
            this.run(|mut conn| {
                Box::pin(async move { conn.req_packed_commands(cmd, offset, count).await })
            })
            .await
        })
    }

    fn get_db(&self) -> i64 {
        self.shared.seeds.db
    }
}

/// Listens for `+switch-master` on one sentinel at a time, moving to the next when it goes
/// away, until the handle is dropped.
async fn watch_switches(shared: Weak<Shared>, stop: CancellationToken) {
    let Some((seeds, options)) = shared
        .upgrade()
        .map(|s| (s.seeds.clone(), s.options.clone()))
    else {
        return;
    };
    loop {
        for node in &seeds.sentinels {
            let info = node.info(
                seeds.sentinel_tls,
                &seeds.sentinel_auth,
                0,
                ProtocolVersion::RESP2,
            );
            let feed = async {
                let info = options.sentinel_tls.apply(info)?;
                let mut pubsub = redis::Client::open(info)?.get_async_pubsub().await?;
                pubsub.subscribe("+switch-master").await?;
                RedisResult::Ok(pubsub)
            };
            let pubsub = tokio::select! {
                _ = stop.cancelled() => return,
                pubsub = tokio::time::timeout(options.connect_timeout + options.response_timeout, feed) => pubsub,
            };
            let Ok(Ok(mut pubsub)) = pubsub else { continue };
            let mut messages = pubsub.on_message();
            loop {
                let message = tokio::select! {
                    _ = stop.cancelled() => return,
                    message = messages.next() => message,
                };
                let Some(message) = message else { break };
                // "<master name> <old ip> <old port> <new ip> <new port>"
                let payload: String = message.get_payload().unwrap_or_default();
                if payload.split(' ').next() != Some(seeds.master.as_str()) {
                    continue;
                }
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                tracing::info!(master = %seeds.master, "Redis: the sentinels switched the master");
                *shared.current.lock() = None;
                shared.switches.send_modify(|n| *n += 1);
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(WATCH_RETRY) => {}
        }
    }
}
