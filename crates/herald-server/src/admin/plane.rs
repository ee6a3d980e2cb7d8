//! The admin listener's own state, which the node's shared state holds: who may use the
//! listener, and its TLS. Nothing here knows the node's state; the listener's routes do.

use super::settings::AdminConfig;
use crate::config::ConfigError;

use super::guard;

/// The admin listener's own state: who may use it, and its TLS if it serves any.
pub(crate) struct Plane {
    pub(crate) guard: guard::Guard,
    /// `admin_tls_cert` and `admin_tls_key`; `None` serves plain HTTP.
    pub(super) tls: Option<crate::tls::Tls>,
}

impl Plane {
    /// Loads the admin TLS files, if any (they were checked with the configuration).
    pub(crate) fn new(config: &AdminConfig) -> Result<Plane, ConfigError> {
        let tls = match &config.tls {
            Some(files) => Some(crate::tls::Tls::with_keys(files, crate::tls::ADMIN_KEYS)?),
            None => None,
        };
        Ok(Plane {
            guard: guard::Guard::new(config),
            tls,
        })
    }

    /// A reload: the tokens and hosts from the next request on, and the certificate from
    /// the next handshake (a certificate that fails keeps the old one serving). Reads files:
    /// call it off the async runtime's threads.
    pub(crate) fn reload(&self, config: &AdminConfig) {
        self.guard.reload(config);
        if let (Some(tls), Some(files)) = (&self.tls, &config.tls) {
            let _ = tls.reload(files);
        }
    }
}
