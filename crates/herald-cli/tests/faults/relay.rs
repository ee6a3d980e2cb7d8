//! A TCP relay that delays every byte by a set time in each direction, keeping their order:
//! this kernel has no `netem` qdisc, so latency between a node and Redis is added here. The
//! delay can change while connections are open; a chunk keeps the delay it was read with.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A relay listening on `addr()` and forwarding to its target; stops when dropped.
pub struct Relay {
    addr: SocketAddr,
    delay_ms: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Listens on `listen` (port 0: a free one) and forwards each connection to `target`.
    pub async fn start(listen: SocketAddr, target: SocketAddr) -> Relay {
        let listener = TcpListener::bind(listen).await.expect("bind the relay");
        let addr = listener.local_addr().expect("relay address");
        let delay_ms = Arc::new(AtomicU64::new(0));
        let delay = delay_ms.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let delay = delay.clone();
                tokio::spawn(async move {
                    if let Ok(upstream) = TcpStream::connect(target).await {
                        let _ = client.set_nodelay(true);
                        let _ = upstream.set_nodelay(true);
                        pipe(client, upstream, delay).await;
                    }
                });
            }
        });
        Relay {
            addr,
            delay_ms,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every chunk read from now on is held this long before it is written on.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(a: TcpStream, b: TcpStream, delay: Arc<AtomicU64>) {
    let (ar, aw) = a.into_split();
    let (br, bw) = b.into_split();
    let there = tokio::spawn(one_way(ar, bw, delay.clone()));
    let back = tokio::spawn(one_way(br, aw, delay));
    let _ = tokio::join!(there, back);
}

/// Copies `from` to `to`, each chunk written `delay` after it was read, in order.
async fn one_way(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Arc<AtomicU64>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let due = Instant::now() + Duration::from_millis(delay.load(Ordering::Relaxed));
                if tx.send((due, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}
