//! The Redis adapter's settings (`adapter = "redis"`): `redis_url` (or `HERALD_REDIS_URL`),
//! `redis_prefix`, `node_timeout`, `cluster_ops_per_app`, `cluster_bus_max_bytes` and the
//! TLS files (`redis_tls_*`, `redis_sentinel_tls_*`), with their defaults and their checks. The keys themselves are read with the rest of the file
//! (`config.rs`) and handed here as [`AdapterKeys`].

use std::time::Duration;

use super::link::{Target, TlsError, TlsFiles};
use crate::adapter::config::{AdapterKeys, TlsKeys};
use crate::config::{check_max, invalid, redact_url, ConfigError};

/// Where every node of a cluster meets when the file names no Redis.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379/0";
/// The prefix of every key and channel when the file names none.
pub const DEFAULT_PREFIX: &str = "herald";
/// The default for [`RedisConfig::node_timeout`].
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_secs(30);
/// The default for [`RedisConfig::ops_per_app`]: a quarter of the node's state queue.
pub const DEFAULT_OPS_PER_APP: usize = 25_000;
/// The default for [`RedisConfig::bus_max_bytes`]: 64 MiB.
pub const DEFAULT_BUS_MAX_BYTES: usize = 64 * 1024 * 1024;

/// How a node joins a cluster through Redis. `Debug` hides the URL's password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// The Redis server every node of the cluster uses, e.g. `redis://127.0.0.1:6379/0`.
    pub url: String,
    /// Prefix of every Redis key and channel, so several clusters can share one Redis.
    pub prefix: String,
    /// How long a node may go without a heartbeat before the others remove its
    /// connections' channel and presence state.
    pub node_timeout: Duration,
    /// State changes (subscriptions, presence joins, sign-ins) one app may have waiting for
    /// Redis on this node; more are refused (`ServerBusy`), so one app's flood cannot take
    /// the whole queue from the others.
    pub ops_per_app: usize,
    /// Bytes of messages for the other nodes this node holds while Redis is slow or away;
    /// more are dropped and counted.
    pub bus_max_bytes: usize,
    /// TLS to the data nodes (`redis_tls_*`): used when `url` asks for TLS.
    pub(crate) tls: Box<TlsFiles>,
    /// TLS to the sentinels (`redis_sentinel_tls_*`, each unset key the data nodes').
    pub(crate) sentinel_tls: Box<TlsFiles>,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &shown_url(&self.url))
            .field("prefix", &self.prefix)
            .field("node_timeout", &self.node_timeout)
            .field("ops_per_app", &self.ops_per_app)
            .field("bus_max_bytes", &self.bus_max_bytes)
            .field("tls", &self.tls)
            .field("sentinel_tls", &self.sentinel_tls)
            .finish()
    }
}

/// `redis_url` as logs and `Debug` show it: without its passwords.
pub(crate) fn shown_url(url: &str) -> String {
    match super::link::Target::parse(url) {
        Ok(target) => target.to_string(),
        Err(_) => redact_url(url),
    }
}

impl RedisConfig {
    /// The settings the keys give, defaults for the rest; [`RedisConfig::validate`] checks
    /// them.
    pub(crate) fn from_keys(keys: AdapterKeys) -> Self {
        RedisConfig {
            url: keys.url.unwrap_or_else(|| DEFAULT_URL.to_owned()),
            prefix: keys.prefix.unwrap_or_else(|| DEFAULT_PREFIX.to_owned()),
            node_timeout: keys
                .node_timeout
                .map_or(DEFAULT_NODE_TIMEOUT, Duration::from_secs),
            ops_per_app: keys.ops_per_app.unwrap_or(DEFAULT_OPS_PER_APP),
            bus_max_bytes: keys.bus_max_bytes.unwrap_or(DEFAULT_BUS_MAX_BYTES),
            tls: Box::new(tls_files(&keys.tls)),
            sentinel_tls: Box::new(tls_files(&TlsKeys {
                ca_file: keys.sentinel_tls.ca_file.or(keys.tls.ca_file.clone()),
                cert_file: keys.sentinel_tls.cert_file.or(keys.tls.cert_file.clone()),
                key_file: keys.sentinel_tls.key_file.or(keys.tls.key_file.clone()),
                skip_name_check: keys
                    .sentinel_tls
                    .skip_name_check
                    .or(keys.tls.skip_name_check),
            })),
        }
    }

    /// Checks the settings, naming the offending key.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        // The parser's errors name the part that is wrong, never a password.
        let target = Target::parse(&self.url).map_err(|e| invalid("redis_url", e.to_string()))?;
        self.validate_tls(&target)?;
        if self.node_timeout < Duration::from_secs(1) {
            return Err(invalid("node_timeout", "must be at least 1 second"));
        }
        check_max("node_timeout", self.node_timeout, Duration::from_secs(3600))?;
        if self.prefix.is_empty() {
            return Err(invalid("redis_prefix", "must not be empty"));
        }
        if self.ops_per_app == 0 {
            return Err(invalid("cluster_ops_per_app", "must be at least 1"));
        }
        // Smaller, and one large event could never be sent.
        if self.bus_max_bytes < 1024 * 1024 {
            return Err(invalid("cluster_bus_max_bytes", "must be at least 1048576"));
        }
        Ok(())
    }

    /// The TLS files can be read and hold what they should, and are only given where the
    /// URL asks for TLS (a CA for a plain connection is a mistake, not a choice).
    fn validate_tls(&self, target: &Target) -> Result<(), ConfigError> {
        let (data, sentinels) = target.tls_sides();
        for (prefix, files, used) in [
            ("redis_tls_", &*self.tls, data),
            ("redis_sentinel_tls_", &*self.sentinel_tls, sentinels),
        ] {
            let given = files != &TlsFiles::default();
            if !used {
                // The sentinels' keys inherit the data nodes': only their own count.
                if given && (prefix == "redis_tls_" || files != &*self.tls) {
                    return Err(invalid(
                        format!("{prefix}*"),
                        "is set, but redis_url asks for no TLS there (rediss://, rediss+cluster://, rediss+sentinel:// or sentinel_tls=true)",
                    ));
                }
                continue;
            }
            if let Err(error) = files.load() {
                let key = match &error {
                    TlsError::Unpaired => "cert_file",
                    TlsError::Read { path, .. } | TlsError::NoPem { path, .. } => {
                        if files.ca.as_ref() == Some(path) {
                            "ca_file"
                        } else if files.cert.as_ref() == Some(path) {
                            "cert_file"
                        } else {
                            "key_file"
                        }
                    }
                };
                return Err(invalid(format!("{prefix}{key}"), error.to_string()));
            }
        }
        Ok(())
    }

    /// Whether a TLS side turns the server name check off, for the warning at start.
    pub(crate) fn skips_name_checks(&self) -> bool {
        let (data, sentinels) = Target::parse(&self.url).map_or((false, false), |t| t.tls_sides());
        (data && self.tls.skip_name_check) || (sentinels && self.sentinel_tls.skip_name_check)
    }

    /// The keys whose values differ between `self` (running) and `new`.
    pub(crate) fn restart_fields(&self, new: &RedisConfig) -> Vec<&'static str> {
        [
            ("redis_url", self.url != new.url),
            ("redis_prefix", self.prefix != new.prefix),
            ("node_timeout", self.node_timeout != new.node_timeout),
            ("cluster_ops_per_app", self.ops_per_app != new.ops_per_app),
            (
                "cluster_bus_max_bytes",
                self.bus_max_bytes != new.bus_max_bytes,
            ),
            // The files' contents are read again on a reload; where they are is not.
            ("redis_tls_*", self.tls != new.tls),
            (
                "redis_sentinel_tls_*",
                self.sentinel_tls != new.sentinel_tls,
            ),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
    }
}

fn tls_files(keys: &TlsKeys) -> TlsFiles {
    TlsFiles {
        ca: keys.ca_file.clone(),
        cert: keys.cert_file.clone(),
        key: keys.key_file.clone(),
        skip_name_check: keys.skip_name_check.unwrap_or(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::AdapterConfig;
    use crate::config::Config;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn redis(config: Config) -> RedisConfig {
        match config.adapter {
            AdapterConfig::Redis(redis) => redis,
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
        let dir =
            std::env::temp_dir().join(format!("herald-redis-tls-keys-{}", std::process::id()));
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
}
