//! Waiting for what a test checks: a condition polled until a deadline, and the node's own
//! counters read from `/metrics`. A test that sleeps for "the server has done X" fails on a
//! loaded machine, or passes without X having happened; these wait for X itself.

use std::time::{Duration, Instant};

use super::Server;

/// Waits until `check` holds, polling; fails the test with `what` after `within`.
pub async fn eventually(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The node's `/metrics` text.
pub async fn scrape(server: &Server) -> String {
    reqwest::get(format!("http://{}/metrics", server.admin))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}

/// One sample, by its name and labels as written (`name{label="v"}`), if it is there.
pub async fn metric(server: &Server, key: &str) -> Option<f64> {
    let text = scrape(server).await;
    text.lines()
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(name, _)| *name == key)
        .and_then(|(_, value)| value.parse().ok())
}

/// The sum of a metric over all its label sets (0 when it has none yet).
pub async fn metric_sum(server: &Server, name: &str) -> f64 {
    let text = scrape(server).await;
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
