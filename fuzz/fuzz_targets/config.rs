//! The server configuration: TOML text plus environment variables, validated.
//!
//! Input layout: NUL-separated fields, each (lossy) UTF-8: the TOML text, then the values of
//! the variables in `ENV` in order. A missing field is an unset variable; an empty one is set
//! to "". (TOML text cannot hold a raw NUL, so the separator takes nothing from the TOML.)
//!
//! Properties: no panic on any file or environment, and an accepted configuration keeps the
//! invariants the server relies on without re-checking them, with the environment winning.
#![no_main]

use std::collections::HashSet;

use herald_server::adapter::AdapterConfig;
use herald_server::Config;
use libfuzzer_sys::fuzz_target;

const ENV: [&str; 9] = [
    "HERALD_PORT",
    "HERALD_HOST",
    "HERALD_ADAPTER",
    "HERALD_REDIS_URL",
    "HERALD_APP_ID",
    "HERALD_APP_KEY",
    "HERALD_APP_SECRET",
    "HERALD_ACTIVITY_TIMEOUT",
    "HERALD_PONG_TIMEOUT",
];

fuzz_target!(|data: &[u8]| {
    let mut fields = data.split(|&b| b == 0);
    let toml = String::from_utf8_lossy(fields.next().unwrap_or_default()).into_owned();
    let values: Vec<Option<String>> = ENV
        .iter()
        .map(|_| fields.next().map(|f| String::from_utf8_lossy(f).into_owned()))
        .collect();
    let var = |name: &str| {
        let i = ENV.iter().position(|n| *n == name)?;
        values[i].clone()
    };
    let env = |name: &str| var(name);

    let Ok(config) = Config::from_toml(&toml, &env) else {
        return;
    };
    assert!(!config.server.host.is_empty());
    assert!(!config.server.activity_timeout.is_zero() && !config.server.pong_timeout.is_zero());
    assert!(config.server.max_message_bytes >= 1024);
    assert!(config.server.outbox_max_bytes >= config.server.max_message_bytes);
    assert!(!config.apps.is_empty());
    let mut ids = HashSet::new();
    let mut keys = HashSet::new();
    for app in &config.apps {
        assert!(!app.id.is_empty() && !app.key.is_empty() && !app.secret.is_empty());
        assert!(ids.insert(&app.id), "duplicate app id {:?}", app.id);
        assert!(keys.insert(&app.key), "duplicate app key {:?}", app.key);
        assert!((4000..=4999).contains(&app.terminate_close_code));
        assert!(!app.cache_ttl.is_zero());
        assert!(app.limits.max_channel_name_length >= 1);
    }
    if let AdapterConfig::Redis(cluster) = &config.adapter {
        assert!(!cluster.prefix.is_empty());
        assert!(cluster.node_timeout.as_secs() >= 1);
    }
    // The environment overrides the file.
    if let Some(host) = var("HERALD_HOST") {
        assert_eq!(config.server.host, host);
    }
    if let Some(port) = var("HERALD_PORT") {
        // Surrounding whitespace in a variable is forgiven, as a shell line often carries it.
        assert_eq!(Ok(config.server.port), port.trim().parse::<u16>());
    }
    if let Some(url) = var("HERALD_REDIS_URL") {
        if let AdapterConfig::Redis(cluster) = &config.adapter {
            assert_eq!(cluster.url, url);
        }
    }
    for (name, value) in [
        ("HERALD_APP_ID", config.apps[0].id.as_str()),
        ("HERALD_APP_KEY", config.apps[0].key.as_str()),
        ("HERALD_APP_SECRET", config.apps[0].secret.as_str()),
    ] {
        if let Some(v) = var(name) {
            assert_eq!(config.apps.len(), 1, "{name} set with several apps");
            assert_eq!(value, v);
        }
    }
});
