//! The admin listener's settings: where it listens, its tokens, the host names it answers
//! to and its TLS files.

use crate::config::declare::settings;
use crate::config::error::{invalid, ConfigError};
use crate::config::is_loopback_host;
use crate::config::kinds::{FilePath, Opt, Port, Secret, Strings, Text};
use crate::tls::settings::TlsConfig;

/// The admin port soketi and sockudo use for their metrics, so scrape configs carry over.
pub const DEFAULT_ADMIN_PORT: u16 = 9601;

/// A token travels in a header and in the console's cookie.
fn token_chars(token: &Option<String>) -> bool {
    token.as_ref().is_none_or(|t| {
        t.bytes()
            .all(|b| b.is_ascii_graphic() && !b";,\"\\".contains(&b))
    })
}

settings! {
    /// The admin listener (`/metrics`, `/live`, `/ready`, the console), on its own address so
    /// the public port never serves them. `Debug` hides the tokens.
    pub struct AdminConfig(RawAdminConfig) in "Admin listener" {
        /// Address the admin listener binds; loopback by default.
        host: Text = "127.0.0.1".to_owned(), key "admin_host" env "HERALD_ADMIN_HOST", Restart,
            check |v| !v.is_empty() => "must not be empty";
        /// Port to bind. Unset: 9601, or a free port (with a warning) when it is taken, so two
        /// nodes started on one machine without a config both run. `0` picks a free port;
        /// any other explicit port must be free or start-up stops.
        port: Opt<Port> = None, key "admin_port" env "HERALD_ADMIN_PORT", Restart;
        /// The admin token: opens the console, its writes and `/metrics`; required off
        /// loopback. A reload replaces it.
        token: Secret = None, key "admin_token" env "HERALD_ADMIN_TOKEN", Reload,
            check |v| v.as_ref().is_none_or(|t| t.len() >= 16) => "must be at least 16 characters",
            check token_chars => "must be printable ASCII without spaces, quotes, commas, semicolons or backslashes";
        /// The metrics token: opens `/metrics` only, so a scraper's secret cannot publish. A
        /// reload replaces it.
        metrics_token: Secret = None, key "metrics_token" env "HERALD_METRICS_TOKEN", Reload,
            check |v| v.as_ref().is_none_or(|t| t.len() >= 16) => "must be at least 16 characters",
            check token_chars => "must be printable ASCII without spaces, quotes, commas, semicolons or backslashes";
        /// Host names the listener answers to besides the loopback names and `admin_host`: a
        /// request naming any other `Host` is refused (DNS rebinding), unless it carries a
        /// token in its `Authorization` header.
        allowed_hosts: Strings = Vec::new(), key "admin_allowed_hosts", Reload;
        /// PEM certificate chain: with `admin_tls_key`, the listener serves HTTPS only. A
        /// reload reads the files again; turning TLS on or off needs a restart.
        tls_cert: Opt<FilePath> = None, key "admin_tls_cert" env "HERALD_ADMIN_TLS_CERT", Reload;
        /// PEM private key of `admin_tls_cert`.
        tls_key: Opt<FilePath> = None, key "admin_tls_key" env "HERALD_ADMIN_TLS_KEY", Reload;
        [extra]
        /// The TLS files, when both are given.
        pub tls: Option<TlsConfig>;
    }
}

impl AdminConfig {
    /// What the declarations cannot say alone: the TLS pair, the tokens against each other
    /// and against the address, and each allowed host.
    pub(crate) fn resolve(&mut self) -> Result<(), ConfigError> {
        self.tls = TlsConfig::pair(
            ("admin_tls_cert", "admin_tls_key"),
            self.tls_cert.clone(),
            self.tls_key.clone(),
        )?;
        Ok(())
    }

    /// Checks what no single declaration can, naming the key at fault.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        self.check()?;
        if self.token.is_some() && self.token == self.metrics_token {
            return Err(invalid(
                "metrics_token",
                "must differ from admin_token: it opens /metrics only",
            ));
        }
        if let Some(bad) = self
            .allowed_hosts
            .iter()
            .find(|h| h.is_empty() || h.contains(|c: char| c.is_whitespace() || c == '/'))
        {
            return Err(invalid(
                "admin_allowed_hosts",
                format!("holds '{bad}', which is not a host name (write `console.example.com`, no scheme or path)"),
            ));
        }
        if self.token.is_none() && !is_loopback_host(&self.host) {
            return Err(invalid(
                "admin_token",
                format!(
                    "is required when admin_host is not a loopback address ('{}'): /metrics would be open to anyone who can reach it",
                    self.host
                ),
            ));
        }
        if let Some(tls) = &self.tls {
            crate::tls::load(tls, crate::tls::ADMIN_KEYS)?;
        }
        Ok(())
    }
}
