//! The files the public port serves TLS with (`tls_cert`, `tls_key`).

use std::path::PathBuf;

use crate::config::declare::settings;
use crate::config::error::{invalid, ConfigError};
use crate::config::kinds::{FilePath, Opt};

/// A listener's certificate and key files. Only the paths are kept here: the key itself is
/// loaded by the server, so no `Debug` of the configuration can show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM file of the certificate chain, the server's own certificate first.
    pub cert: PathBuf,
    /// PEM file of the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl TlsConfig {
    /// A listener's files from its two keys (`keys`), both or neither.
    pub(crate) fn pair(
        keys: (&'static str, &'static str),
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Result<Option<TlsConfig>, ConfigError> {
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(TlsConfig { cert, key })),
            (None, None) => Ok(None),
            (Some(_), None) => Err(invalid(keys.1, format!("is required with {}", keys.0))),
            (None, Some(_)) => Err(invalid(keys.0, format!("is required with {}", keys.1))),
        }
    }
}

settings! {
    /// The public port's TLS: `https://` and `wss://` only, with this certificate.
    pub struct TlsSettings(RawTlsSettings) in "TLS on the public port" {
        /// PEM file of the certificate chain, the server's own certificate first; with
        /// `tls_key`, the port serves only `https://` and `wss://`. A reload reads the
        /// files again; turning TLS on or off needs a restart.
        cert: Opt<FilePath> = None, key "tls_cert" env "HERALD_TLS_CERT", Reload;
        /// PEM file of the certificate's private key (PKCS#8, PKCS#1 or SEC1).
        key: Opt<FilePath> = None, key "tls_key" env "HERALD_TLS_KEY", Reload;
    }
}

impl TlsSettings {
    /// The files, both or neither.
    pub(crate) fn files(&self) -> Result<Option<TlsConfig>, ConfigError> {
        TlsConfig::pair(("tls_cert", "tls_key"), self.cert.clone(), self.key.clone())
    }
}
