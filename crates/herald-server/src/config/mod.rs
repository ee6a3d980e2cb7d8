//! The language of the configuration: how a setting is declared ([`declare`]), the kinds
//! of value it may hold ([`kinds`]), the error a bad one gives ([`ConfigError`]) and how
//! that error is told ([`told`]), and the reference written from the declarations
//! ([`reference`]).
//!
//! Each subsystem declares its own settings with it, beside its code, and the server's
//! settings module puts them together into the `Config` the server runs with. This module
//! names none of them, so none of them can lead back here in a circle.

pub mod declare;
pub(crate) mod error;
pub mod kinds;
pub mod reference;
pub(crate) mod told;

pub use crate::redact::redact_url;
pub use error::ConfigError;

/// Whether `host` (an address or `localhost`) only accepts connections from this machine.
pub fn is_loopback_host(host: &str) -> bool {
    host.parse::<std::net::IpAddr>()
        .map_or(host == "localhost", |ip| ip.is_loopback())
}
