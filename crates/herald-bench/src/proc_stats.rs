//! The measured server's CPU time and resident memory, read from /proc (Linux), so the
//! harness measures any server process the same way.

/// CPU seconds (user + system) and resident memory of a process at one instant.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// User plus system CPU time, in seconds.
    pub cpu_secs: f64,
    /// Resident set size, in bytes.
    pub rss_bytes: u64,
}

/// Reads a sample for `pid`; `None` if the process is gone or /proc is unavailable.
pub fn sample(pid: u32) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let ticks = clock_ticks();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())?;
    Some(Sample {
        cpu_secs: (utime + stime) / ticks,
        rss_bytes: rss_kib * 1024,
    })
}

/// The sum of the samples of every process in `pids` (the nodes of a cluster, say);
/// `None` if any is unreadable or none is given.
pub fn sample_all(pids: &[u32]) -> Option<Sample> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().try_fold(Sample::default(), |sum, pid| {
        let s = sample(*pid)?;
        Some(Sample {
            cpu_secs: sum.cpu_secs + s.cpu_secs,
            rss_bytes: sum.rss_bytes + s.rss_bytes,
        })
    })
}

/// The harness's own CPU seconds, to show it is not the bottleneck.
pub fn own_cpu_secs() -> f64 {
    sample(std::process::id()).map_or(0.0, |s| s.cpu_secs)
}

fn clock_ticks() -> f64 {
    // USER_HZ is 100 on every Linux architecture Herald runs on; reading it would need libc.
    100.0
}
