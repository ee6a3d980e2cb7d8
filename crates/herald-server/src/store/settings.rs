//! Where the apps live when not in the config file (`apps_url`).

use super::connect_url::AppsDb;
use crate::config::declare::settings;
use crate::config::error::{invalid, ConfigError};
use crate::config::kinds::{Kind, Opt};
use crate::redact::redact_url;

/// Where the apps live when not in the file: a PostgreSQL or MySQL/MariaDB URL. `Debug`
/// hides its password.
#[derive(Clone, PartialEq, Eq)]
pub struct AppsUrl(String);

impl AppsUrl {
    /// Checks the scheme (`postgres://`, `postgresql://`, `mysql://` or `mariadb://`) and the
    /// TLS parameters of the query (`sslmode`, `sslrootcert`, …; `ssl-mode`, `ssl-ca`, …).
    pub fn parse(url: &str) -> Result<AppsUrl, ConfigError> {
        let url = url.trim();
        let scheme = url.split_once("://").map(|(s, _)| s);
        match scheme {
            Some("postgres" | "postgresql" | "mysql" | "mariadb") => {
                let parsed = AppsUrl(url.to_owned());
                // TLS to the database: its query's parameters (store/connect_url.rs).
                super::connect_url::check(url, parsed.db())
                    .map_err(|problem| invalid("apps_url", problem))?;
                Ok(parsed)
            }
            _ => Err(invalid(
                "apps_url",
                format!(
                    "must be a postgres:// or mysql:// URL, not '{}'",
                    redact_url(url)
                ),
            )),
        }
    }

    /// Which database it names.
    pub fn db(&self) -> AppsDb {
        if self.0.starts_with("postgres") {
            AppsDb::Postgres
        } else {
            AppsDb::MySql
        }
    }

    /// The URL itself, password and all: only for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with its password hidden, for logs and messages. Unlike the cluster's URL
    /// ([`redact_url`]), a database URL's `user@` is only a user name, shown as it is.
    pub fn redacted(&self) -> String {
        let authority = self.0.split_once("://").map_or("", |(_, rest)| {
            rest.split(['/', '?', '#']).next().unwrap_or("")
        });
        let shown = match authority.rsplit_once('@') {
            Some((userinfo, _)) if !userinfo.contains(':') => self.0.clone(),
            _ => redact_url(&self.0),
        };
        super::connect_url::hide_query_password(shown)
    }
}

impl std::fmt::Debug for AppsUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// `apps_url`: checked as it is read, and never shown with its password.
pub struct AppsUrlKind;

impl Kind for AppsUrlKind {
    type Raw = String;
    type Value = AppsUrl;
    fn value(_: &str, raw: String) -> Result<AppsUrl, ConfigError> {
        AppsUrl::parse(&raw)
    }
    fn from_env(_: &str, text: &str) -> Result<String, ConfigError> {
        Ok(text.to_owned())
    }
    fn show(value: &AppsUrl) -> String {
        value.redacted()
    }
}

settings! {
    /// Where the apps live.
    pub struct StoreSettings(RawStoreSettings) in "App store" {
        /// The database the apps live in (`postgres://…`, `mysql://…`), instead of the
        /// file's `[[apps]]`; unset, the file's apps are served. TLS to it is set in its
        /// query (`sslmode`, `sslrootcert`, …; `ssl-mode`, `ssl-ca`, …).
        apps_url: Opt<AppsUrlKind> = None, key "apps_url" env "HERALD_APPS_URL", Restart;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_names_the_database() {
        let url = AppsUrl::parse("postgres://herald:pw@db:5432/herald").expect("valid");
        assert_eq!(url.db(), AppsDb::Postgres);
        let no_password = AppsUrl::parse("mysql://root@127.0.0.1/h").expect("valid");
        assert_eq!(no_password.db(), AppsDb::MySql);
        assert_eq!(no_password.redacted(), "mysql://root@127.0.0.1/h");
        let mariadb = AppsUrl::parse("mariadb://root@127.0.0.1/h").expect("valid");
        assert_eq!(mariadb.db(), AppsDb::MySql);
    }

    #[test]
    fn a_password_in_the_query_stays_hidden() {
        let url =
            AppsUrl::parse("postgres://u@h/d?password=hunter2&sslmode=require").expect("valid");
        for shown in [url.redacted(), format!("{url:?}")] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("sslmode=require"), "{shown}");
        }
    }
}
