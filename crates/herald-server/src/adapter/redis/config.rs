//! The Redis adapter's settings (`adapter = "redis"`): `redis_url` (or `HERALD_REDIS_URL`),
//! `redis_prefix`, `node_timeout`, `cluster_ops_per_app`, `cluster_bus_max_bytes` and the
//! TLS files (`redis_tls_*`, `redis_sentinel_tls_*`), declared with their defaults and
//! their checks.

use std::time::Duration;

use super::link::{Target, TlsError, TlsFiles};
use crate::config::declare::settings;
use crate::config::error::{invalid, ConfigError};
use crate::config::kinds::{Count, FilePath, Flag, Opt, Secs, Shows, Str, Text};
use crate::redact::redact_url;

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

/// `redis_url` as `Debug` and the reference show it: without its passwords.
pub struct RedisShown;

impl Shows for RedisShown {
    fn shown(value: &str) -> String {
        shown_url(value)
    }
}

/// `redis_url`: a string never shown with its passwords.
pub type RedisUrl = Str<RedisShown>;

settings! {
    /// How a node joins a cluster through Redis (`adapter = "redis"`). Its keys are
    /// checked only for that adapter: they mean nothing to a single node.
    pub struct RedisConfig(RawRedisConfig) in "Cluster (adapter = \"redis\")" {
        /// The Redis server every node of the cluster uses: `redis://`, `rediss://`,
        /// `redis+cluster://`, `redis+sentinel://` or `unix://`.
        url: RedisUrl = DEFAULT_URL.to_owned(), key "redis_url" env "HERALD_REDIS_URL", Restart;
        /// Prefix of every Redis key and channel, so several clusters can share one Redis.
        prefix: Text = DEFAULT_PREFIX.to_owned(), key "redis_prefix", Restart,
            check |v| !v.is_empty() => "must not be empty";
        /// How long a node may go without a heartbeat before the others remove its
        /// connections' channel and presence state.
        node_timeout: Secs = DEFAULT_NODE_TIMEOUT, key "node_timeout", Restart,
            check |v| *v >= Duration::from_secs(1) => "must be at least 1 second",
            check |v| *v <= Duration::from_secs(3600) => "must be at most 3600 seconds";
        /// State changes (subscriptions, presence joins, sign-ins) one app may have waiting
        /// for Redis on this node; more are refused (`ServerBusy`), so one app's flood
        /// cannot take the whole queue from the others.
        ops_per_app: Count<usize> = DEFAULT_OPS_PER_APP, key "cluster_ops_per_app", Restart,
            check |v| *v >= 1 => "must be at least 1";
        /// Bytes of messages for the other nodes this node holds while Redis is slow or
        /// away; more are dropped and counted.
        bus_max_bytes: Count<usize> = DEFAULT_BUS_MAX_BYTES, key "cluster_bus_max_bytes", Restart,
            // Smaller, and one large event could never be sent.
            check |v| *v >= 1024 * 1024 => "must be at least 1048576";
        /// CA file to check the data nodes' certificates with, when `redis_url` asks for TLS.
        tls_ca_file: Opt<FilePath> = None, key "redis_tls_ca_file", Restart;
        /// Client certificate for the data nodes (with `redis_tls_key_file`).
        tls_cert_file: Opt<FilePath> = None, key "redis_tls_cert_file", Restart;
        /// Client key for the data nodes (with `redis_tls_cert_file`).
        tls_key_file: Opt<FilePath> = None, key "redis_tls_key_file", Restart;
        /// Accept a data node's certificate for any name (a warning at start says so).
        tls_insecure_skip_name_check: Opt<Flag> = None, key "redis_tls_insecure_skip_name_check", Restart;
        /// CA file for the sentinels; unset, the data nodes'.
        sentinel_tls_ca_file: Opt<FilePath> = None, key "redis_sentinel_tls_ca_file", Restart;
        /// Client certificate for the sentinels; unset, the data nodes'.
        sentinel_tls_cert_file: Opt<FilePath> = None, key "redis_sentinel_tls_cert_file", Restart;
        /// Client key for the sentinels; unset, the data nodes'.
        sentinel_tls_key_file: Opt<FilePath> = None, key "redis_sentinel_tls_key_file", Restart;
        /// The sentinels' name check; unset, the data nodes'.
        sentinel_tls_insecure_skip_name_check: Opt<Flag> = None, key "redis_sentinel_tls_insecure_skip_name_check", Restart;
        [extra]
        /// TLS to the data nodes (`redis_tls_*`): used when `url` asks for TLS.
        pub(crate) tls: Box<TlsFiles>;
        [extra]
        /// TLS to the sentinels (`redis_sentinel_tls_*`, each unset key the data nodes').
        pub(crate) sentinel_tls: Box<TlsFiles>;
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
    /// The TLS files the keys name, the sentinels' taking the data nodes' where unset.
    pub(crate) fn resolve(&mut self) {
        *self.tls = TlsFiles {
            ca: self.tls_ca_file.clone(),
            cert: self.tls_cert_file.clone(),
            key: self.tls_key_file.clone(),
            skip_name_check: self.tls_insecure_skip_name_check.unwrap_or(false),
        };
        *self.sentinel_tls = TlsFiles {
            ca: self
                .sentinel_tls_ca_file
                .clone()
                .or(self.tls_ca_file.clone()),
            cert: self
                .sentinel_tls_cert_file
                .clone()
                .or(self.tls_cert_file.clone()),
            key: self
                .sentinel_tls_key_file
                .clone()
                .or(self.tls_key_file.clone()),
            skip_name_check: self
                .sentinel_tls_insecure_skip_name_check
                .or(self.tls_insecure_skip_name_check)
                .unwrap_or(false),
        };
    }

    /// Each key a reload cannot apply and whether `new` changes it, the TLS files by side
    /// (`redis_tls_*`, `redis_sentinel_tls_*`) and compared as resolved, the sentinels'
    /// taking the data nodes' where unset: their contents are read again on a reload;
    /// where they are is not.
    pub(crate) fn restart_changes(&self, new: &RedisConfig) -> Vec<(&'static str, bool)> {
        let mut changed: Vec<_> = self
            .changed(new)
            .into_iter()
            .filter(|(key, _)| {
                !key.starts_with("redis_tls_") && !key.starts_with("redis_sentinel_tls_")
            })
            .collect();
        changed.push(("redis_tls_*", self.tls != new.tls));
        changed.push((
            "redis_sentinel_tls_*",
            self.sentinel_tls != new.sentinel_tls,
        ));
        changed
    }

    /// Checks the settings, naming the offending key.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        // The parser's errors name the part that is wrong, never a password.
        let target = Target::parse(&self.url).map_err(|e| invalid("redis_url", e.to_string()))?;
        self.validate_tls(&target)?;
        self.check()
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
}

#[cfg(test)]
mod tests;
