//! The storm's publishers, its trigger (every user terminated at once), and what it reads
//! of the server's processes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::http::{data_token, trigger_body, App, Conn};
use crate::modes::{nanos_since, staggered_tick};

use super::{Names, Published, PUBLISHERS};

/// Publisher `k` of [`PUBLISHERS`]: events k, k + P, ... on channel n % C, until `stop`.
pub(super) async fn publisher(
    k: u64,
    app: App,
    names: Arc<Names>,
    rate: u64,
    base: Instant,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<Vec<Published>> {
    let mut conn = Conn::open(app.addr, &app.dialer).await?;
    let mut tick = staggered_tick(
        Instant::now(),
        Duration::from_nanos(1_000_000_000 * PUBLISHERS / rate.max(1)),
        k as usize,
        PUBLISHERS as usize,
    );
    let path = format!("/apps/{}/events", app.id);
    let mut sent = Vec::new();
    let mut n = k;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return Ok(sent),
        }
        let channel = (n % names.channels as u64) as usize;
        let at = nanos_since(base);
        let data = data_token(&format!(r#"{{"t":{at},"n":{n}}}"#));
        let body = trigger_body("storm", &names.channel(channel), &data);
        let ok = match conn.send(&app.signed_post_to(&path, &body)).await {
            Ok(status) => status == 200,
            Err(_) => {
                // A server busy with the storm may drop an API connection; the event
                // counts as not sent, and publishing goes on.
                if let Ok(fresh) = Conn::open(app.addr, &app.dialer).await {
                    conn = fresh;
                }
                false
            }
        };
        sent.push(Published { n, channel, at, ok });
        n += PUBLISHERS;
    }
}

/// Terminates every user at once, one connection each; returns the requests that failed
/// and the first failure. Not fewer connections taking turns: a server may answer only once
/// it has closed the user's sockets (sockudo does), and users waiting their turn would
/// spread the storm out.
pub(super) async fn terminate_all(app: &App, names: &Names) -> (u64, Option<String>) {
    let mut requests = tokio::task::JoinSet::new();
    for u in 0..names.users {
        let app = app.clone();
        let path = format!(
            "/apps/{}/users/{}/terminate_connections",
            app.id,
            names.user(u)
        );
        requests.spawn(async move {
            let mut conn = Conn::open(app.addr, &app.dialer).await?;
            conn.send(&app.signed_post_to(&path, "{}")).await
        });
    }
    let (mut errors, mut first) = (0, None);
    while let Some(done) = requests.join_next().await {
        let error = match done {
            Ok(Ok(200)) => continue,
            Ok(Ok(status)) => format!("HTTP {status}"),
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        errors += 1;
        first.get_or_insert(error);
    }
    (errors, first)
}

/// Open file descriptors of the processes in `pids` together (their sockets, mostly).
pub(super) fn fd_count(pids: &[u32]) -> Option<usize> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().try_fold(0, |sum, pid| {
        Some(sum + std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
    })
}

/// Milliseconds since the Unix epoch.
pub(super) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
