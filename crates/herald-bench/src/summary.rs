//! The readable summary printed on stderr beside each run's JSON line.

use serde_json::Value;

/// A few lines a person reads at a glance; the JSON line stays the complete record.
pub fn summary(r: &Value) -> String {
    let num = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let ms = |v: &Value| num(v) / 1000.0;
    let lat = &r["latency"];
    let latency = format!(
        "latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        ms(&lat["p50_us"]),
        ms(&lat["p90_us"]),
        ms(&lat["p99_us"]),
        ms(&lat["p999_us"]),
        ms(&lat["max_us"])
    );
    let server = |per: &str, key: &str| match r[key].as_f64() {
        Some(us) => format!("server CPU {us:.2} µs per {per}"),
        None => "server CPU not measured (no --pid)".to_owned(),
    };
    let harness = format!("harness CPU {:.2} s", num(&r["harness_cpu_s"]));
    match r["mode"].as_str() {
        Some(mode @ ("fanout" | "room")) => format!(
            "{mode}: {} subscribers over {} {} channels ({} stalled), {} events/s of {}\n  \
             {} of {} deliveries ({} lost), {:.0} deliveries/s\n  \
             {} wire bytes received, {:.1} per delivery\n  {latency}\n  {}; {harness}",
            r["subscribers"],
            r["channels"],
            r["channel_kind"].as_str().unwrap_or("public"),
            r["stalled_subscribers"],
            r["rate_events_per_s"],
            match r["payload_kind"].as_str() {
                Some("json") => format!("{} B of JSON", r["payload_bytes"]),
                _ => format!("{} B", r["payload_bytes"]),
            },
            r["deliveries"],
            r["deliveries_expected"],
            r["lost"],
            num(&r["deliveries_per_s"]),
            r["wire_bytes_received"],
            num(&r["wire_bytes_per_delivery"]),
            server("delivery", "server_cpu_us_per_delivery"),
        ),
        Some("presence-churn") => format!(
            "presence-churn: {} channels of {} members, {} joins+leaves/s\n  \
             {} joins, {} leaves ({} joins lost, {} leaves lost, {} errors); \
             {} member_added and {} member_removed deliveries\n  join to member_added: {latency}\n  {}, {}; {harness}",
            r["channels"],
            r["members"],
            r["churn_per_s"],
            r["joins"],
            r["leaves"],
            r["lost"],
            r["lost_removed"],
            r["errors"],
            r["member_added_deliveries"],
            r["member_removed_deliveries"],
            server("join or leave", "server_cpu_us_per_join_or_leave"),
            server("delivery", "server_cpu_us_per_delivery"),
        ),
        Some("trigger") => format!(
            "trigger: {} publishers\n  {} requests ({} errors), {:.0} requests/s\n  {latency}\n  {}; {harness}",
            r["concurrency"],
            r["requests"],
            r["errors"],
            num(&r["requests_per_s"]),
            server("request", "server_cpu_us_per_request"),
        ),
        Some("connections") => format!(
            "connections: {} held{}, {:.0} connects/s\n  server memory per connection: {}",
            r["connections"],
            if r["subscribed"].as_bool() == Some(true) {
                " (subscribed)"
            } else {
                ""
            },
            num(&r["connects_per_s"]),
            match r["server_bytes_per_connection"].as_f64() {
                Some(b) => format!("{b:.0} B over the server's baseline"),
                None => "not measured (no --pid)".to_owned(),
            },
        ),
        Some("soak") => format!(
            "soak: {} s, {} samples; {:.0} deliveries/s ({} lost, {} out of order), {} errors\n  \
             server RSS {} MB first, {} MB at minute 5, {} MB at the end; fds {} first, {} last\n  \
             {latency}; p99 per sample {}–{} ms\n  {}; {harness}",
            r["seconds"],
            r["samples"],
            num(&r["deliveries_per_s"]),
            r["lost"],
            r["out_of_order"],
            r["errors"],
            mb(&r["server_rss_first_bytes"]),
            mb(&r["server_rss_5min_bytes"]),
            mb(&r["server_rss_end_bytes"]),
            r["server_fds_first"],
            r["server_fds_last"],
            r["p99_ms_min"],
            r["p99_ms_max"],
            server("delivery", "server_cpu_us_per_delivery"),
        ),
        Some("storm") => storm(r),
        _ => r.to_string(),
    }
}

/// The readable lines for a storm run.
fn storm(r: &Value) -> String {
    let ms = |v: &Value| v.as_f64().map_or(f64::NAN, |us| us / 1000.0);
    let p = |v: &Value| {
        format!(
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            ms(&v["p50_us"]),
            ms(&v["p99_us"]),
            ms(&v["max_us"])
        )
    };
    format!(
        "storm ({}): {} clients over {} channels as {} users; close codes {}\n  \
         all closed in {} ms, all resubscribed in {} ms ({} not back), {} refused {}\n  \
         close to resubscribed: {}\n  first event after: {} (its latency {})\n  \
         {} lost of {} events due after resubscribing, {} duplicates; latency {}\n  \
         server CPU {:.2} s over the storm; harness CPU {:.2} s",
        r["via"].as_str().unwrap_or(""),
        r["storm_clients"],
        r["channels"],
        r["users"],
        r["close_codes"],
        r["all_closed_ms"],
        r["all_resubscribed_ms"],
        r["not_resubscribed"],
        r["refused"],
        r["refused_by"],
        p(&r["reconnect"]),
        p(&r["first_event_delay"]),
        p(&r["first_event_latency"]),
        r["lost_after_resubscribe"],
        r["expected_after_resubscribe"],
        r["duplicates"],
        p(&r["latency"]),
        r["server_cpu_s"].as_f64().unwrap_or(f64::NAN),
        r["harness_cpu_s"].as_f64().unwrap_or(f64::NAN),
    )
}

fn mb(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "-".to_owned(), |b| format!("{:.1}", b / 1e6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarises_the_wire_bytes_of_a_fanout_run() {
        let r = serde_json::json!({
            "mode": "fanout", "subscribers": 10, "channels": 1, "stalled_subscribers": 0,
            "rate_events_per_s": 500, "payload_bytes": 1000, "payload_kind": "json",
            "deliveries": 100, "deliveries_expected": 100, "lost": 0, "deliveries_per_s": 10.0,
            "wire_bytes_received": 41000, "wire_bytes_per_delivery": 410.0, "harness_cpu_s": 0.1,
            "latency": {"p50_us": 1000.0, "p90_us": 2000.0, "p99_us": 3000.0, "p999_us": 4000.0, "max_us": 5000.0}
        });
        let text = summary(&r);
        assert!(
            text.contains("41000 wire bytes received, 410.0 per delivery"),
            "{text}"
        );
        assert!(text.contains("500 events/s of 1000 B of JSON"), "{text}");
    }

    #[test]
    fn summarises_a_trigger_run() {
        let r = serde_json::json!({
            "mode": "trigger", "concurrency": 32, "requests": 100, "errors": 0,
            "requests_per_s": 50.0, "server_cpu_us_per_request": 12.5, "harness_cpu_s": 1.0,
            "latency": {"p50_us": 1000.0, "p90_us": 2000.0, "p99_us": 3000.0, "p999_us": 4000.0, "max_us": 5000.0}
        });
        let text = summary(&r);
        assert!(text.contains("50 requests/s"), "{text}");
        assert!(text.contains("p99 3.00 ms"), "{text}");
        assert!(text.contains("12.50 µs per request"), "{text}");
    }
    #[test]
    fn summarises_a_storm_run() {
        let r = serde_json::json!({
            "mode": "storm", "via": "drain", "storm_clients": 1000, "channels": 50,
            "resubscribed": 999, "all_resubscribed_ms": 1890, "refused": 1,
            "lost_after_resubscribe": 0, "server_cpu_us_per_reconnection": 80.5,
            "harness_cpu_s": 1.0,
            "reconnect": {"p50_us": 900000.0, "p99_us": 1800000.0},
            "first_event_latency": {"p99_us": 2500.0}
        });
        let text = summary(&r);
        assert!(text.starts_with("storm (drain): 1000 clients"), "{text}");
        assert!(text.contains("all resubscribed in 1890 ms"), "{text}");
        assert!(text.contains("p50 900.0 ms, p99 1800.0 ms"), "{text}");
        assert!(text.contains("0 lost of"), "{text}");
    }
}
