//! The error every configuration problem becomes, naming the field at fault.

use std::time::Duration;

/// A configuration problem, naming the field at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file given with `--config`.
        path: String,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys or wrong types. Shown on several
    /// lines: where, the line itself with a caret under the fault, then what is wrong.
    #[error("invalid config file {path}{}", shown_parse(.location, .snippet, .message))]
    Parse {
        /// The file given with `--config`.
        path: String,
        /// `, line L, column C`, or empty when the parser gave no place.
        location: String,
        /// The line at fault and a caret under the fault, each line ending in `\n`.
        snippet: String,
        /// What is wrong, on one line: the key and what its value must be, or the nearest
        /// known key to a misspelt one.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid config: `{field}` {problem}")]
    Invalid {
        /// The offending field, e.g. `apps[0].key` or `HERALD_PORT`.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A TLS certificate or key file cannot be served.
    #[error("invalid config: `{field}` file {path}: {problem}")]
    Tls {
        /// `tls_cert` or `tls_key`.
        field: &'static str,
        /// The file at fault.
        path: String,
        /// What is wrong with it.
        problem: String,
    },
}

impl ConfigError {
    /// The error on one line, for a log: a parse error without the line it shows.
    pub fn one_line(&self) -> String {
        match self {
            ConfigError::Parse {
                path,
                location,
                message,
                ..
            } => format!("invalid config file {path}{location}: {message}"),
            other => other.to_string(),
        }
    }
}

/// The rest of a [`ConfigError::Parse`]: on one line when there is no place to show.
fn shown_parse(location: &str, snippet: &str, message: &str) -> String {
    if location.is_empty() {
        format!(": {message}")
    } else {
        format!("{location}:\n{snippet}{message}")
    }
}

/// A value of `field` that is out of range or inconsistent.
pub(crate) fn invalid(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Refuses a duration over `max`, naming the field and the limit.
pub(crate) fn check_max(field: &str, value: Duration, max: Duration) -> Result<(), ConfigError> {
    if value > max {
        return Err(invalid(
            field,
            format!("must be at most {} seconds", max.as_secs()),
        ));
    }
    Ok(())
}

/// Parses a list of addresses (`10.0.0.5`) or networks (`10.0.0.0/8`), the key `field`
/// (`trusted_proxies`, `webhook_allowed_networks`).
pub(crate) fn parse_networks(
    field: &str,
    raw: Vec<String>,
) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    raw.iter()
        .enumerate()
        .map(|(i, text)| {
            let text = text.trim();
            text.parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    invalid(
                        format!("{field}[{i}]"),
                        format!("is not an IP address or network (like 10.0.0.0/8): '{text}'"),
                    )
                })
        })
        .collect()
}
