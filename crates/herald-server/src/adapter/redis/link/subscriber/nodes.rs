//! Where each channel lives and the subscriber's connections there: the single server,
//! the sentinels' current master, or the cluster master serving the channel's slot.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, ConnectionInfo, ErrorKind, ProtocolVersion, RedisError};
use tokio::sync::watch;

use super::super::commands::cluster_connection;
use super::super::deliveries::{Event, Sink};
use super::super::sentinel::SentinelMaster;
use super::super::slots::slot;
use super::super::target::Seeds;
use super::super::topology::SlotMap;
use super::{State, Task, ONLY, SLOT_MAP};

/// Where the channels live.
pub(super) enum Source {
    Single(Box<ConnectionInfo>),
    Sentinel(SentinelMaster, watch::Receiver<u64>),
    Cluster {
        /// For CLUSTER SLOTS.
        topology: ClusterConnection,
        seeds: Seeds,
        /// `None` until fetched, and again once it may be stale.
        slots: Option<SlotMap>,
    },
}

pub(super) struct Conn {
    node: String,
    conn: MultiplexedConnection,
    /// Its [`Sink`]'s switch.
    open: Arc<AtomicBool>,
}

impl Task {
    /// The connection serving `channel`, connecting if needed; `None` if its node cannot be
    /// reached now (a retry is scheduled).
    pub(super) async fn conn_for(&mut self, channel: &str) -> Option<u64> {
        let (node, info) = match &self.source {
            Source::Cluster { .. } => {
                if self.unreachable.contains(SLOT_MAP) {
                    return None;
                }
                let master = match self.slot_map().await {
                    Ok(map) => map.master(slot(channel.as_bytes())).cloned(),
                    Err(error) => {
                        tracing::debug!(%error, "Redis subscriber: no slot map");
                        self.unreachable.insert(SLOT_MAP.to_owned());
                        return None;
                    }
                };
                let Some(master) = master else {
                    // A slot without a master: the map is mid-failover; the next pass
                    // fetches it again.
                    self.unreachable.insert(SLOT_MAP.to_owned());
                    return None;
                };
                let Source::Cluster { seeds, .. } = &self.source else {
                    return None;
                };
                let info = master.info(seeds.tls, &seeds.auth, 0, ProtocolVersion::RESP3);
                (format!("{}:{}", master.host, master.port), Some(info))
            }
            _ => (ONLY.to_owned(), None),
        };
        if let Some(&conn) = self.by_node.get(&node) {
            return Some(conn);
        }
        if self.unreachable.contains(&node) {
            return None;
        }
        match self.connect_node(node.clone(), info).await {
            Ok(conn) => Some(conn),
            Err(error) => {
                tracing::debug!(%error, "Redis subscriber: cannot connect");
                self.unreachable.insert(node);
                None
            }
        }
    }

    /// Connects to `node` (at `info`, or where the source says) with a push handler.
    pub(super) async fn connect_node(
        &mut self,
        node: String,
        info: Option<ConnectionInfo>,
    ) -> Result<u64, RedisError> {
        let info = match (info, &self.source) {
            (Some(info), _) => info,
            (None, Source::Single(info)) => (**info).clone(),
            (None, Source::Sentinel(master, _)) => master.discover(ProtocolVersion::RESP3).await?,
            (None, Source::Cluster { .. }) => {
                return Err(RedisError::from((
                    ErrorKind::ClientError,
                    "no node address",
                )))
            }
        };
        // The certificates read last: a rotation reaches every new connection.
        let info = self.options.tls.apply(info)?;
        let id = self.next_conn;
        self.next_conn += 1;
        let open = Arc::new(AtomicBool::new(true));
        let sink = Sink {
            conn: id,
            open: open.clone(),
            queue: self.queue.clone(),
            gaps: self.gaps.clone(),
            events: self.events_tx.clone(),
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(self.options.connect_timeout)
            .set_response_timeout(self.options.response_timeout)
            .set_push_sender(move |push| {
                sink.push(push);
                Ok::<(), std::convert::Infallible>(())
            });
        let conn = redis::Client::open(info)?
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        self.by_node.insert(node.clone(), id);
        self.conns.insert(id, Conn { node, conn, open });
        Ok(id)
    }

    /// The cluster's slot map, fetched if unknown. When the cluster does not answer, its
    /// connection is built again for the next try, with the certificates read last (the
    /// client reconnects with those it was built with).
    pub(super) async fn slot_map(&mut self) -> Result<&SlotMap, RedisError> {
        let Source::Cluster {
            topology,
            slots,
            seeds,
        } = &mut self.source
        else {
            return Err(RedisError::from((ErrorKind::ClientError, "not a cluster")));
        };
        if slots.is_none() {
            match SlotMap::fetch(topology).await {
                Ok(map) => *slots = Some(map),
                Err(error) => {
                    if seeds.tls {
                        if let Ok(fresh) =
                            cluster_connection(seeds, &self.options, ProtocolVersion::RESP2).await
                        {
                            *topology = fresh;
                        }
                    }
                    return Err(error);
                }
            }
        }
        slots
            .as_ref()
            .ok_or_else(|| RedisError::from((ErrorKind::ClientError, "no slot map")))
    }

    pub(super) fn forget_slots(&mut self) {
        if let Source::Cluster { slots, .. } = &mut self.source {
            *slots = None;
        }
    }

    /// Sends (S)SUBSCRIBE or (S)UNSUBSCRIBE for one channel; the push confirms it.
    pub(super) fn send(&self, conn: u64, channel: &str, subscribe: bool) {
        let Some(Conn { conn: handle, .. }) = self.conns.get(&conn) else {
            return;
        };
        let verb = match (self.sharded, subscribe) {
            (true, true) => "SSUBSCRIBE",
            (true, false) => "SUNSUBSCRIBE",
            (false, true) => "SUBSCRIBE",
            (false, false) => "UNSUBSCRIBE",
        };
        let mut handle = handle.clone();
        let events = self.events_tx.clone();
        let channel = channel.to_owned();
        tokio::spawn(async move {
            let mut cmd = redis::cmd(verb);
            cmd.arg(&channel);
            if let Err(error) = handle.req_packed_command(&cmd).await {
                let _ = events.send(Event::Failed {
                    conn,
                    channel,
                    error,
                });
            }
        });
    }

    /// Pings every connection; one that does not answer within the response timeout is
    /// treated as lost.
    pub(super) fn ping(&self) {
        for (&conn, Conn { conn: handle, .. }) in &self.conns {
            let mut handle = handle.clone();
            let events = self.events_tx.clone();
            tokio::spawn(async move {
                if handle
                    .req_packed_command(&redis::cmd("PING"))
                    .await
                    .is_err()
                {
                    let _ = events.send(Event::Lost { conn });
                }
            });
        }
    }

    /// Forgets connection `conn`: its channels become idle, and the active ones lost.
    pub(super) fn drop_conn(&mut self, conn: u64) {
        let Some(old) = self.conns.remove(&conn) else {
            return;
        };
        old.open.store(false, Ordering::Release);
        if self.by_node.get(&old.node) == Some(&conn) {
            self.by_node.remove(&old.node);
        }
        let mut lost = Vec::new();
        for (name, channel) in &mut self.channels {
            if channel.state.conn() == Some(conn) {
                if matches!(channel.state, State::Active(_)) {
                    lost.push(name.clone());
                }
                channel.state = State::Idle;
            }
        }
        for name in lost {
            self.mark_lost(&name);
        }
        self.forget_slots();
    }
}

/// Resolves when the sentinels switched the master; never for other sources.
pub(super) async fn switched(source: &mut Source) {
    match source {
        Source::Sentinel(_, switches) => {
            if switches.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        _ => std::future::pending().await,
    }
}
