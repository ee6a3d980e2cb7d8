//! A one-line progress bar on stderr for runs longer than a few seconds (`--progress`).
//! It redraws from its own task every 200 ms, so the measured loops pay nothing for it.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

/// A running bar; [`Progress::finish`] ends the line.
pub struct Progress(Option<JoinHandle<()>>);

impl Progress {
    /// A bar over `duration` of wall time.
    pub fn time(enabled: bool, label: &'static str, duration: Duration) -> Progress {
        let started = Instant::now();
        let total = duration.as_secs_f64().max(0.001);
        Self::spawn(enabled, label, move || {
            let done = started.elapsed().as_secs_f64().min(total);
            (done / total, format!("{done:.1}/{total:.0} s"))
        })
    }

    /// A bar over a count that `done` tracks.
    pub fn count(enabled: bool, label: &'static str, total: u64, done: Arc<AtomicU64>) -> Progress {
        let total = total.max(1);
        Self::spawn(enabled, label, move || {
            let n = done.load(Ordering::Relaxed).min(total);
            (n as f64 / total as f64, format!("{n}/{total}"))
        })
    }

    fn spawn(
        enabled: bool,
        label: &'static str,
        state: impl Fn() -> (f64, String) + Send + 'static,
    ) -> Progress {
        if !enabled {
            return Progress(None);
        }
        Progress(Some(tokio::spawn(async move {
            loop {
                let (fraction, detail) = state();
                draw(label, fraction, &detail);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })))
    }

    /// Stops redrawing and ends the line.
    pub fn finish(self) {
        if let Some(task) = self.0 {
            task.abort();
            eprintln!();
        }
    }
}

fn draw(label: &str, fraction: f64, detail: &str) {
    const WIDTH: usize = 30;
    let filled = ((fraction * WIDTH as f64) as usize).min(WIDTH);
    let mut err = std::io::stderr().lock();
    let _ = write!(
        err,
        "\r{label} [{}{}] {:3.0}% {detail}   ",
        "#".repeat(filled),
        " ".repeat(WIDTH - filled),
        fraction * 100.0
    );
    let _ = err.flush();
}
