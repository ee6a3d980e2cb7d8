//! A measurement, not a check (BENCHMARKS.md, "Durable webhooks"): webhook batches per
//! second one app's dispatcher sustains to a receiver that answers at once, with the queue
//! on disk and in memory. Run it in release:
//!   cargo test -p herald-server --release --lib webhooks::measure -- --ignored --nocapture

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::reach::{WebhookConfig, WebhookReach};
use super::settings::{WebhookOptions, WebhookStoreKind};
use super::{WebhookEvent, WebhookSettings};
use crate::app_config::AppConfig;
use crate::apps::App;

/// A receiver answering 200 to every request on kept-alive connections; counts requests.
async fn receiver() -> (String, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let count = Arc::new(AtomicU64::new(0));
    let seen = count.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::Relaxed);
                ""
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, count)
}

/// A fresh data directory for a run: a new one each time, as the process keeps each
/// directory it opened open.
pub(crate) fn scratch_dir() -> std::path::PathBuf {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("herald-measure-{}-{run}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

async fn run(kind: WebhookStoreKind, batches: u64) -> f64 {
    let settings = WebhookSettings::new(WebhookOptions {
        store: kind,
        data_dir: scratch_dir(),
        ..WebhookOptions::default()
    });
    run_with(settings, batches).await
}

/// Batches per second through the queue `settings` name (its `data_dir` removed after).
pub(crate) async fn run_with(settings: WebhookSettings, batches: u64) -> f64 {
    let (url, delivered) = receiver().await;
    let dir = settings.data_dir.clone();
    let mut app = AppConfig::embedded_default();
    app.webhooks = vec![WebhookConfig {
        url,
        event_types: Vec::new(),
        channel_prefix: None,
        reach: WebhookReach::Anywhere,
    }];
    let app = App::new(app, &settings);
    let hooks = app.webhooks().expect("webhooks");
    let started = Instant::now();
    let mut emitted = 0u64;
    // 20 events a batch, each on its own channel (no batch waits for another's turn); kept
    // within the 10,000-event queue so none is dropped.
    while emitted < batches * 20 {
        let behind = emitted / 20 - delivered.load(Ordering::Relaxed).min(emitted / 20);
        if behind > 200 {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        for _ in 0..200 {
            hooks.emit(WebhookEvent::ChannelOccupied {
                channel: format!("c-{emitted}"),
            });
            emitted += 1;
        }
    }
    while delivered.load(Ordering::Relaxed) < batches {
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(started.elapsed() < Duration::from_secs(120), "stalled");
    }
    let rate = batches as f64 / started.elapsed().as_secs_f64();
    assert_eq!(hooks.dropped(), 0);
    drop(hooks);
    drop(app);
    let _ = std::fs::remove_dir_all(&dir);
    rate
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement for BENCHMARKS.md, not a check"]
async fn webhook_batches_per_second_durable_and_in_memory() {
    let batches = 10_000;
    // Three rounds, each kind in turn within a round, so the machine's load falls alike on
    // each; "disk, one write per batch" turns the group commit off, as before it.
    let kinds = [
        ("memory", WebhookStoreKind::Memory, false),
        ("disk", WebhookStoreKind::Disk, false),
        ("disk, one write per batch", WebhookStoreKind::Disk, true),
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
    for round in 1..=3 {
        for (i, (name, kind, ungrouped)) in kinds.iter().enumerate() {
            super::dispatch::UNGROUPED.store(*ungrouped, Ordering::Relaxed);
            let rate = run(*kind, batches).await;
            eprintln!("round {round}, {name}: {batches} batches of 20 events, {rate:.0} batches/s");
            rates[i].push(rate);
        }
    }
    super::dispatch::UNGROUPED.store(false, Ordering::Relaxed);
    for ((name, ..), mut rates) in kinds.iter().zip(rates) {
        rates.sort_by(f64::total_cmp);
        eprintln!("{name}: median {:.0} batches/s of {rates:.0?}", rates[1]);
    }
}
