//! TLS certificates read again on a reload (SIGHUP): the link's stores take the files'
//! new contents, and the command connections whose clients keep the certificates they were
//! built with are built again ([`link::Commands::renew`]). The subscriber's and the
//! sentinel master's connections take the stores' contents whenever they connect.

use super::config::RedisConfig;
use super::{link, Cluster};

/// Where the link connects and how, kept for renewing its connections.
pub(super) struct Link {
    target: link::Target,
    options: link::Options,
    /// The cluster runtime, where the connections' own tasks belong.
    runtime: tokio::runtime::Handle,
}

impl Link {
    /// Built on the cluster runtime.
    pub(super) fn new(target: link::Target, options: link::Options) -> Link {
        Link {
            target,
            options,
            runtime: tokio::runtime::Handle::current(),
        }
    }
}

/// Says loudly, at start, that a TLS side does not check the server's name.
pub(super) fn warn_if_unchecked(config: &RedisConfig) {
    if config.skips_name_checks() {
        tracing::warn!(
            "TLS to Redis: the server name check is OFF (redis_tls_insecure_skip_name_check or redis_sentinel_tls_insecure_skip_name_check): any server holding a certificate from the trusted CA can pose as Redis. Give the servers certificates that name them and remove the key"
        );
    }
}

impl Cluster {
    /// Reads the TLS files again; on success, renews the command connections in the
    /// background. A file that cannot be used leaves the old certificates in use (logged).
    pub(super) fn reload_tls(&self) {
        let Link {
            target,
            options,
            runtime,
        } = &self.link;
        let (data, sentinels) = target.tls_sides();
        if !data && !sentinels {
            return;
        }
        let mut renew = false;
        // The data nodes' clients hold their certificates (`held`); the sentinels are
        // connected to afresh at each discovery.
        for (side, store, used, held) in [
            ("data nodes", &options.tls, data, true),
            ("sentinels", &options.sentinel_tls, sentinels, false),
        ] {
            if !used {
                continue;
            }
            match store.reload() {
                Ok(changed) => renew |= changed && held,
                Err(error) => {
                    tracing::warn!(side, %error, "TLS to Redis: files not reloaded; the old certificates stay in use");
                    return;
                }
            }
        }
        if !renew || matches!(target, link::Target::Sentinel(_)) {
            tracing::info!("TLS to Redis: certificates reloaded; new connections use them");
            return;
        }
        let handles = [
            self.conn.clone(),
            self.beat_conn.clone(),
            self.bus.commands.clone(),
        ];
        let (target, options) = (target.clone(), options.clone());
        runtime.spawn(async move {
            for commands in handles {
                if let Err(error) = commands.renew(&target, &options).await {
                    tracing::warn!(%error, "TLS to Redis: cannot connect with the reloaded certificates; the old connection stays in use");
                    return;
                }
            }
            tracing::info!("TLS to Redis: certificates reloaded; new connections use them");
        });
    }
}
