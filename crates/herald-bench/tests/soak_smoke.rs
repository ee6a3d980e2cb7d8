//! The soak's smoke test: 25 seconds of `herald-bench soak` against a real `herald serve`
//! whose webhooks go to the harness's sink, at a rate a debug build on two cores keeps up
//! with. A benchmark run, not a timing threshold: it checks only what a broken server or
//! harness would get wrong (loss, errors, descriptors that are not given back, samples that
//! stop, webhooks that never come).

mod support;

use serde_json::Value;

use support::{free_port, start_herald};

// 25 s, sampled every 5 s: every workload (churn included) comes round several times, and
// the suite's 2-core budget keeps the long soaks in BENCHMARKS.md (a 2-minute smoke took 8 %
// of the CI run and checked nothing the short one does not).
const SECONDS: u64 = 25;
const SAMPLE: u64 = 5;

#[test]
fn soak_against_herald() {
    let hook_port = free_port();
    let dir = std::env::temp_dir().join(format!("herald-soak-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("herald.toml");
    std::fs::write(
        &config,
        format!(
            "admin_port = 0\n\
             [[apps]]\nid = \"1\"\nkey = \"app-key\"\nsecret = \"app-secret\"\n\
             [[apps.webhooks]]\nurl = \"http://127.0.0.1:{hook_port}/hook\"\n\
             event_types = [\"channel_occupied\", \"channel_vacated\", \"member_added\", \
             \"member_removed\", \"client_event\"]\n"
        ),
    )
    .expect("write config");
    let herald = start_herald(&config);

    let samples = dir.join("samples.jsonl");
    // 500 subscribers over 10 channels at 100 events/s: 5,000 deliveries/s, with the other
    // workloads at their defaults but for fewer connections churned.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald-bench"))
        .args([
            "--addr",
            &herald.addr,
            "--pid",
            &herald.server.pid(),
            "soak",
        ])
        .args([
            "--seconds",
            &SECONDS.to_string(),
            "--sample",
            &SAMPLE.to_string(),
        ])
        .args(["--subscribers", "500", "--channels", "10", "--rate", "100"])
        .args(["--connection-churn", "5", "--connection-hold", "10"])
        .args(["--webhook-port", &hook_port.to_string()])
        .arg("--samples")
        .arg(&samples)
        .output()
        .expect("run herald-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "herald-bench soak failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("summary line: {e}: {stdout}"));
    let samples: Vec<Value> = std::fs::read_to_string(&samples)
        .expect("samples file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("sample line"))
        .collect();
    let _ = std::fs::remove_dir_all(&dir);

    assert_eq!(samples.len() as u64, SECONDS / SAMPLE, "{summary}");
    let elapsed: Vec<f64> = samples
        .iter()
        .map(|s| s["elapsed_s"].as_f64().expect("elapsed_s"))
        .collect();
    assert!(elapsed.windows(2).all(|w| w[1] > w[0]), "{elapsed:?}");
    assert!(samples.iter().all(|s| s["rss_bytes"].as_u64().is_some()
        && s["fds"].as_u64().is_some()
        && s["deliveries"].as_u64() > Some(0)));
    assert!(summary["deliveries"].as_u64() > Some(0), "{summary}");
    assert_eq!(summary["lost"], 0, "{summary}");
    assert_eq!(summary["out_of_order"], 0, "{summary}");
    assert_eq!(summary["errors"], 0, "{summary}");
    assert_eq!(summary["client_events_lost"], 0, "{summary}");
    assert_eq!(summary["presence_joins_lost"], 0, "{summary}");
    assert!(
        summary["client_events_received"].as_u64() > Some(0),
        "{summary}"
    );
    assert!(summary["presence_joins"].as_u64() > Some(0), "{summary}");
    assert!(
        summary["connections_churned"].as_u64() > Some(0),
        "{summary}"
    );
    // Churned connections come and go; the server must give their descriptors back.
    let (first, last) = (
        summary["server_fds_first"].as_u64().expect("fds first"),
        summary["server_fds_last"].as_u64().expect("fds last"),
    );
    assert!(last <= first + 20, "fds grew from {first} to {last}");
    let hooks = &summary["webhook_events"];
    for name in [
        "channel_occupied",
        "channel_vacated",
        "member_added",
        "client_event",
    ] {
        assert!(
            hooks[name].as_u64() > Some(0),
            "no {name} webhook: {summary}"
        );
    }
}
