use super::*;
use crate::adapter::AdapterConfig;
use crate::settings::Config;

fn no_env(_: &str) -> Option<String> {
    None
}

fn redis(config: Config) -> RedisConfig {
    match config.adapter {
        AdapterConfig::Redis(redis) => *redis,
        AdapterConfig::Local => panic!("the local adapter, not Redis"),
    }
}

#[test]
fn the_redis_adapter_is_chosen_in_the_file_or_the_environment() {
    let c = Config::from_toml(
        "adapter = \"redis\"\nredis_url = \"redis://10.0.0.5:6380/2\"\nnode_timeout = 5\n",
        &no_env,
    )
    .expect("valid");
    let cluster = redis(c);
    assert_eq!(cluster.url, "redis://10.0.0.5:6380/2");
    assert_eq!(cluster.prefix, "herald");
    assert_eq!(cluster.node_timeout, Duration::from_secs(5));
    assert_eq!(cluster.ops_per_app, DEFAULT_OPS_PER_APP);
    assert_eq!(cluster.bus_max_bytes, DEFAULT_BUS_MAX_BYTES);
    let c = Config::from_toml(
        "adapter = \"redis\"\ncluster_ops_per_app = 500\ncluster_bus_max_bytes = 2097152\n",
        &no_env,
    )
    .expect("valid");
    let cluster = redis(c);
    assert_eq!(
        (cluster.ops_per_app, cluster.bus_max_bytes),
        (500, 2 * 1024 * 1024)
    );

    let env = |k: &str| match k {
        "HERALD_ADAPTER" => Some("redis".to_owned()),
        "HERALD_REDIS_URL" => Some("redis://10.0.0.9:6379/1".to_owned()),
        _ => None,
    };
    let c = Config::from_toml("redis_url = \"redis://file:1/0\"", &env).expect("valid");
    let cluster = redis(c);
    assert_eq!(
        (cluster.url.as_str(), cluster.node_timeout),
        ("redis://10.0.0.9:6379/1", DEFAULT_NODE_TIMEOUT),
        "the environment wins over the file"
    );
    let env = |k: &str| (k == "HERALD_ADAPTER").then(|| "redis".to_owned());
    let c = Config::from_toml("", &env).expect("valid");
    assert_eq!(redis(c).url, DEFAULT_URL);

    for (toml, field) in [
        ("adapter = \"nats\"", "adapter"),
        ("adapter = \"redis\"\nredis_url = \"http://x\"", "redis_url"),
        ("adapter = \"redis\"\nnode_timeout = 0", "node_timeout"),
        ("adapter = \"redis\"\nnode_timeout = 3601", "node_timeout"),
        ("adapter = \"redis\"\nredis_prefix = \"\"", "redis_prefix"),
        (
            "adapter = \"redis\"\ncluster_ops_per_app = 0",
            "cluster_ops_per_app",
        ),
        (
            "adapter = \"redis\"\ncluster_bus_max_bytes = 1000",
            "cluster_bus_max_bytes",
        ),
    ] {
        let error = Config::from_toml(toml, &no_env)
            .expect_err(toml)
            .to_string();
        assert!(error.contains(field), "{toml}: {error}");
    }
    assert_eq!(
        Config::from_toml("", &no_env).expect("valid").adapter,
        AdapterConfig::Local
    );
    // The cluster's keys mean nothing to a single node, and are not checked for it.
    let c = Config::from_toml("redis_url = \"http://x\"", &no_env).expect("valid");
    assert_eq!(c.adapter, AdapterConfig::Local);
}

#[test]
fn a_cluster_or_sentinel_url_is_accepted_and_a_bad_one_named_without_its_password() {
    for url in [
        "redis+cluster://10.0.0.1:7000,10.0.0.2:7000",
        "redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2/mymaster/2",
        "unix:///run/redis.sock",
    ] {
        let toml = format!("adapter = \"redis\"\nredis_url = \"{url}\"\n");
        let c = Config::from_toml(&toml, &no_env).expect(url);
        assert_eq!(redis(c).url, url);
    }
    for (url, problem) in [
        ("redis+cluster://:s3cret@10.0.0.1:7000/3", "database 0"),
        ("redis+sentinel://:s3cret@10.0.0.1:26379", "master"),
        ("redis+cluster://:s3cret@10.0.0.1:x", "host:port"),
        ("redis+mesh://:s3cret@10.0.0.1", "unknown scheme"),
    ] {
        let toml = format!("adapter = \"redis\"\nredis_url = \"{url}\"\n");
        let error = Config::from_toml(&toml, &no_env)
            .expect_err(url)
            .to_string();
        assert!(error.contains("redis_url"), "{url}: {error}");
        assert!(error.contains(problem), "{url}: {error}");
        assert!(!error.contains("s3cret"), "{url}: {error}");
    }
    let shown = shown_url("redis+sentinel://:s3cret@10.0.0.1:26379/mymaster");
    assert!(
        !shown.contains("s3cret") && shown.contains("mymaster"),
        "{shown}"
    );
}

#[test]
fn tls_keys_are_read_checked_and_inherited_by_the_sentinels() {
    let dir = std::env::temp_dir().join(format!("herald-redis-tls-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca = dir.join("ca.pem");
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let ca_key = format!("redis_tls_ca_file = \"{}\"\n", ca.display());
    let c = Config::from_toml(
        &format!("adapter = \"redis\"\nredis_url = \"rediss+sentinel://s1/m\"\n{ca_key}redis_tls_insecure_skip_name_check = true\n"),
        &no_env,
    )
    .expect("valid");
    let cluster = redis(c);
    assert_eq!(cluster.tls.ca.as_deref(), Some(ca.as_path()));
    assert_eq!(
        cluster.sentinel_tls, cluster.tls,
        "the sentinels take the data nodes' keys"
    );
    assert!(cluster.skips_name_checks());
    for (toml, field) in [
        (
            format!("redis_url = \"redis://h/0\"\n{ca_key}"),
            "redis_tls_*",
        ),
        (
            "redis_url = \"rediss://h/0\"\nredis_tls_ca_file = \"/nonexistent/ca.pem\"\n".to_owned(),
            "redis_tls_ca_file",
        ),
        (
            format!("redis_url = \"rediss://h/0\"\nredis_tls_cert_file = \"{}\"\n", ca.display()),
            "redis_tls_cert_file",
        ),
        (
            format!("redis_url = \"rediss://h/0\"\nredis_tls_key_file = \"{}\"\n", ca.display()),
            "redis_tls_cert_file",
        ),
        (
            format!("redis_url = \"rediss+sentinel://s1/m?sentinel_tls=false\"\nredis_sentinel_tls_ca_file = \"{}\"\n", ca.display()),
            "redis_sentinel_tls_*",
        ),
    ] {
        let toml = format!("adapter = \"redis\"\n{toml}");
        let error = Config::from_toml(&toml, &no_env).expect_err(&toml).to_string();
        assert!(error.contains(field), "{toml}: {error}");
    }
    let plain = redis(Config::from_toml("adapter = \"redis\"", &no_env).expect("valid"));
    assert!(!plain.skips_name_checks());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_url_password_stays_out_of_debug_output() {
    let c = Config::from_toml(
        "adapter = \"redis\"\nredis_url = \"redis://user:pa55word@10.0.0.5:6379/0\"\n",
        &no_env,
    )
    .expect("valid");
    let shown = format!("{c:?}");
    assert!(shown.contains("10.0.0.5"), "{shown}");
    assert!(!shown.contains("pa55word"), "{shown}");
}

#[test]
fn changing_the_adapter_or_its_keys_needs_a_restart() {
    let local = Config::from_toml("", &no_env).expect("valid");
    let cluster = Config::from_toml("adapter = \"redis\"", &no_env).expect("valid");
    let moved = Config::from_toml(
        "adapter = \"redis\"\nredis_prefix = \"other\"\nnode_timeout = 9\n",
        &no_env,
    )
    .expect("valid");
    assert_eq!(local.restart_fields(&cluster), ["adapter"]);
    assert_eq!(cluster.restart_fields(&local), ["adapter"]);
    assert_eq!(
        cluster.restart_fields(&moved),
        ["redis_prefix", "node_timeout"]
    );
    assert!(moved.restart_fields(&moved.clone()).is_empty());
}
