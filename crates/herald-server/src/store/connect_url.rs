//! The app database's URL beyond its address: the TLS parameters of its query, named as
//! libpq names them for PostgreSQL (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`) and as
//! the MySQL clients do for MySQL and MariaDB (`ssl-mode`, `ssl-ca`, `ssl-cert`, `ssl-key`).
//!
//! They are checked when the configuration loads ([`check`]): the driver ignores a
//! parameter it does not know, so a misspelt `sslmode` would connect without the
//! verification asked for, and a missing CA file would only show as a failed connection.
//! What the driver is given ([`driver_url`]) keeps libpq's rule that naming a CA means the
//! server's certificate is verified against it, which the driver would otherwise skip
//! under `require` (or no mode). Nothing here reads a file's content: the driver reads
//! the files at a pool's first TLS connection and keeps what it built.

use url::Url;

use crate::redact::REDACTED;

/// The kind of database an [`AppsUrl`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppsDb {
    /// `postgres://` or `postgresql://`.
    Postgres,
    /// `mysql://` or `mariadb://`.
    MySql,
}

/// How much TLS a connection insists on, from none to a certificate checked for the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Disable,
    /// PostgreSQL's `allow`: plain, TLS only if the server insists (the driver connects
    /// plain).
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl Mode {
    fn parse(db: AppsDb, value: &str) -> Option<Mode> {
        let value = value.to_ascii_lowercase();
        Some(match (db, value.as_str()) {
            (AppsDb::Postgres, "disable") | (AppsDb::MySql, "disabled") => Mode::Disable,
            (AppsDb::Postgres, "allow") => Mode::Allow,
            (AppsDb::Postgres, "prefer") | (AppsDb::MySql, "preferred") => Mode::Prefer,
            (AppsDb::Postgres, "require") | (AppsDb::MySql, "required") => Mode::Require,
            (AppsDb::Postgres, "verify-ca") | (AppsDb::MySql, "verify_ca") => Mode::VerifyCa,
            (AppsDb::Postgres, "verify-full") | (AppsDb::MySql, "verify_identity") => {
                Mode::VerifyFull
            }
            _ => return None,
        })
    }

    /// The value the driver reads for this mode.
    fn value(self, db: AppsDb) -> &'static str {
        match (db, self) {
            (AppsDb::Postgres, Mode::Disable) => "disable",
            (AppsDb::Postgres, Mode::Allow) => "allow",
            (AppsDb::Postgres, Mode::Prefer) => "prefer",
            (AppsDb::Postgres, Mode::Require) => "require",
            (AppsDb::Postgres, Mode::VerifyCa) => "verify-ca",
            (AppsDb::Postgres, Mode::VerifyFull) => "verify-full",
            (AppsDb::MySql, Mode::Disable | Mode::Allow) => "DISABLED",
            (AppsDb::MySql, Mode::Prefer) => "PREFERRED",
            (AppsDb::MySql, Mode::Require) => "REQUIRED",
            (AppsDb::MySql, Mode::VerifyCa) => "VERIFY_CA",
            (AppsDb::MySql, Mode::VerifyFull) => "VERIFY_IDENTITY",
        }
    }
}

/// What a TLS parameter sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Param {
    Mode,
    Ca,
    Cert,
    Key,
}

/// The TLS parameter `name` is, under the names (and the driver's aliases) of `db`.
fn param(db: AppsDb, name: &str) -> Option<Param> {
    Some(match (db, name) {
        (_, "sslmode" | "ssl-mode") => Param::Mode,
        (AppsDb::Postgres, "sslrootcert" | "ssl-root-cert" | "ssl-ca") => Param::Ca,
        (AppsDb::MySql, "ssl-ca" | "sslca") => Param::Ca,
        (_, "sslcert" | "ssl-cert") => Param::Cert,
        (_, "sslkey" | "ssl-key") => Param::Key,
        _ => return None,
    })
}

/// Parameters of libpq and the MySQL clients that bear on the connection's security and
/// that the driver would ignore: refused, rather than connecting without them.
fn unsupported(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.starts_with("ssl")
        || name.starts_with("tls")
        || matches!(
            name.as_str(),
            "requiressl" | "gssencmode" | "channel_binding" | "require_auth"
        )
}

/// The TLS settings a URL's query gives.
#[derive(Debug, Default)]
struct Tls {
    mode: Option<Mode>,
    /// The CA file, or `system` (PostgreSQL): the driver's built-in public roots.
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

/// `sslrootcert=system`: libpq's name for the public roots; here the Mozilla set the
/// driver is built with.
const SYSTEM: &str = "system";

impl Tls {
    fn read(db: AppsDb, url: &Url) -> Result<Tls, String> {
        let mut tls = Tls::default();
        for (name, value) in url.query_pairs() {
            let Some(which) = param(db, &name) else {
                if unsupported(&name) {
                    return Err(format!(
                        "the parameter `{name}` is not supported ({})",
                        supported(db)
                    ));
                }
                continue;
            };
            let slot = match which {
                Param::Mode => {
                    let mode = Mode::parse(db, &value).ok_or_else(|| {
                        format!("`{name}` must be one of {}, not '{value}'", modes(db))
                    })?;
                    if tls.mode.replace(mode).is_some() {
                        return Err(format!("`{name}` is given twice"));
                    }
                    continue;
                }
                Param::Ca => &mut tls.ca,
                Param::Cert => &mut tls.cert,
                Param::Key => &mut tls.key,
            };
            if value.trim_start().starts_with("-----BEGIN") {
                // Inline PEM would put a key in the URL, shown wherever the URL is.
                return Err(format!("`{name}` must name a file, not hold its content"));
            }
            if slot.replace(value.into_owned()).is_some() {
                return Err(format!("`{name}` is given twice"));
            }
        }
        Ok(tls)
    }

    /// The mode the driver is given: a CA named means the certificate is verified
    /// against it (libpq's rule), and `system` means verify-full.
    fn effective_mode(&self, db: AppsDb) -> Option<Mode> {
        match (&self.ca, self.mode) {
            (Some(ca), _) if db == AppsDb::Postgres && ca == SYSTEM => Some(Mode::VerifyFull),
            (Some(_), None | Some(Mode::Prefer | Mode::Require)) => Some(Mode::VerifyCa),
            (_, mode) => mode,
        }
    }
}

fn modes(db: AppsDb) -> &'static str {
    match db {
        AppsDb::Postgres => "disable, allow, prefer, require, verify-ca, verify-full",
        AppsDb::MySql => "DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY",
    }
}

fn supported(db: AppsDb) -> &'static str {
    match db {
        AppsDb::Postgres => "TLS is set with sslmode, sslrootcert, sslcert and sslkey",
        AppsDb::MySql => "TLS is set with ssl-mode, ssl-ca, ssl-cert and ssl-key",
    }
}

/// Checks the TLS parameters of `url` (of database `db`): known names, known modes, a
/// client certificate and key given together, and files that can be read. The message
/// names the parameter (and a file's path, which the URL shows anyway), never a value
/// that could be a secret.
pub(crate) fn check(url: &str, db: AppsDb) -> Result<(), String> {
    let Ok(parsed) = Url::parse(url) else {
        // The driver says what is wrong with the URL itself, when it connects.
        return Ok(());
    };
    let tls = Tls::read(db, &parsed)?;
    if tls.cert.is_some() != tls.key.is_some() {
        return Err("a client certificate (`sslcert`) needs its key (`sslkey`), and the key its certificate".to_owned());
    }
    let system = db == AppsDb::Postgres && tls.ca.as_deref() == Some(SYSTEM);
    if system && tls.mode.is_some_and(|m| m != Mode::VerifyFull) {
        return Err("`sslrootcert=system` needs `sslmode=verify-full` (or no sslmode)".to_owned());
    }
    if tls.mode == Some(Mode::Disable) && (tls.ca.is_some() || tls.cert.is_some()) {
        return Err("certificates are given but TLS is disabled".to_owned());
    }
    let files = [
        ("CA", &tls.ca),
        ("client certificate", &tls.cert),
        ("client key", &tls.key),
    ];
    for (what, path) in files {
        let Some(path) = path.as_deref() else {
            continue;
        };
        if system && what == "CA" {
            continue;
        }
        if let Err(e) = std::fs::File::open(path) {
            return Err(format!("cannot read the {what} file {path}: {e}"));
        }
    }
    Ok(())
}

/// The URL the driver connects with: `mariadb://` as `mysql://` (the driver knows the one
/// scheme), and the mode libpq's rules give when a CA is named ([`Tls::effective_mode`]).
/// Anything else is passed as it was written.
#[cfg_attr(not(feature = "databases"), allow(dead_code))] // Only the stores connect.
pub(crate) fn driver_url(url: &str, db: AppsDb) -> String {
    let url = match url.strip_prefix("mariadb://") {
        Some(rest) => format!("mysql://{rest}"),
        None => url.to_owned(),
    };
    let Ok(mut parsed) = Url::parse(&url) else {
        return url;
    };
    let Ok(tls) = Tls::read(db, &parsed) else {
        return url;
    };
    let mode = tls.effective_mode(db);
    let system = db == AppsDb::Postgres && tls.ca.as_deref() == Some(SYSTEM);
    if mode == tls.mode && !system {
        return url;
    }
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(name, value)| match param(db, name) {
            Some(Param::Mode) => false,
            Some(Param::Ca) => !(system && value == SYSTEM),
            _ => true,
        })
        .map(|(n, v)| (n.into_owned(), v.into_owned()))
        .collect();
    let mut query = parsed.query_pairs_mut();
    query.clear().extend_pairs(kept);
    if let Some(mode) = mode {
        query.append_pair("sslmode", mode.value(db));
    }
    drop(query);
    parsed.into()
}

/// Whether `url` turns TLS off (`sslmode=disable`, `ssl-mode=DISABLED`), for a message
/// that says what a refused login may be about.
#[cfg_attr(not(feature = "databases"), allow(dead_code))] // Only the stores connect.
pub(crate) fn disables_tls(url: &str, db: AppsDb) -> bool {
    Url::parse(url)
        .ok()
        .and_then(|parsed| Tls::read(db, &parsed).ok())
        .is_some_and(|tls| matches!(tls.mode, Some(Mode::Disable | Mode::Allow)))
}

/// `url` with the value of a `password` parameter hidden (libpq takes one in the query
/// too); the rest as it was.
pub(crate) fn hide_query_password(url: String) -> String {
    let Some((head, query)) = url.split_once('?') else {
        return url;
    };
    if !query
        .split('&')
        .any(|pair| pair.split('=').next() == Some("password"))
    {
        return url;
    }
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some(("password", _)) => format!("password={REDACTED}"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{head}?{}", query.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PG: AppsDb = AppsDb::Postgres;
    const MY: AppsDb = AppsDb::MySql;

    fn a_file() -> String {
        let path = std::env::temp_dir().join(format!("herald-connect-url-{}", std::process::id()));
        std::fs::write(&path, "pem").expect("write");
        path.display().to_string()
    }

    #[test]
    fn known_parameters_and_readable_files_pass() {
        let f = a_file();
        for (url, db) in [
            ("postgres://u@h/d".to_owned(), PG),
            (
                "postgres://u@h/d?sslmode=verify-full&application_name=x".to_owned(),
                PG,
            ),
            (
                format!(
                    "postgres://u@h/d?sslmode=verify-ca&sslrootcert={f}&sslcert={f}&sslkey={f}"
                ),
                PG,
            ),
            ("postgres://u@h/d?sslrootcert=system".to_owned(), PG),
            (
                format!("mysql://u@h/d?ssl-mode=VERIFY_IDENTITY&ssl-ca={f}"),
                MY,
            ),
            (
                format!("mariadb://u@h/d?ssl-mode=verify_ca&ssl-ca={f}&ssl-cert={f}&ssl-key={f}"),
                MY,
            ),
        ] {
            assert_eq!(check(&url, db), Ok(()), "{url}");
        }
    }

    #[test]
    fn mistakes_are_named_without_values() {
        let f = a_file();
        for (url, db, says) in [
            (
                "postgres://u@h/d?sslmod=verify-full",
                PG,
                "`sslmod` is not supported",
            ),
            (
                "postgres://u@h/d?sslpassword=hunter2",
                PG,
                "`sslpassword` is not supported",
            ),
            (
                "postgres://u@h/d?sslmode=VERIFY_IDENTITY",
                PG,
                "`sslmode` must be one of disable",
            ),
            (
                "mysql://u@h/d?ssl-mode=verify-full",
                MY,
                "`ssl-mode` must be one of DISABLED",
            ),
            (
                "mysql://u@h/d?ssl-verify-server-cert=true",
                MY,
                "not supported",
            ),
            (
                "mysql://u@h/d?sslrootcert=/x",
                MY,
                "`sslrootcert` is not supported",
            ),
            (
                "postgres://u@h/d?sslrootcert=/no/such/ca.pem",
                PG,
                "cannot read the CA file /no/such/ca.pem",
            ),
            (
                "postgres://u@h/d?sslrootcert=system&sslmode=require",
                PG,
                "needs `sslmode=verify-full`",
            ),
            (
                "postgres://u@h/d?sslmode=require&sslmode=disable",
                PG,
                "given twice",
            ),
            (
                "postgres://u@h/d?sslkey=-----BEGIN%20PRIVATE%20KEY-----hunter2",
                PG,
                "must name a file",
            ),
        ] {
            let err = check(url, db).expect_err(url);
            assert!(err.contains(says), "{url}: {err}");
            assert!(!err.contains("hunter2"), "{url}: {err}");
        }
        let err = check(&format!("postgres://u@h/d?sslcert={f}"), PG).expect_err("cert alone");
        assert!(err.contains("needs its key"), "{err}");
        let err = check(
            &format!("postgres://u@h/d?sslmode=disable&sslrootcert={f}"),
            PG,
        )
        .expect_err("disabled with a CA");
        assert!(err.contains("TLS is disabled"), "{err}");
    }

    #[test]
    fn a_named_ca_is_verified_as_libpq_does() {
        for (url, db, gives) in [
            (
                "postgres://u@h/d?sslrootcert=/ca.pem",
                PG,
                "postgres://u@h/d?sslrootcert=%2Fca.pem&sslmode=verify-ca",
            ),
            (
                "postgres://u@h/d?sslmode=require&sslrootcert=/ca.pem",
                PG,
                "postgres://u@h/d?sslrootcert=%2Fca.pem&sslmode=verify-ca",
            ),
            (
                "postgres://u@h/d?sslmode=verify-full&sslrootcert=/ca.pem",
                PG,
                "postgres://u@h/d?sslmode=verify-full&sslrootcert=/ca.pem",
            ),
            (
                "postgres://u@h/d?sslrootcert=system",
                PG,
                "postgres://u@h/d?sslmode=verify-full",
            ),
            (
                "postgres://u:p@h/d?sslmode=require",
                PG,
                "postgres://u:p@h/d?sslmode=require",
            ),
            (
                "mariadb://u@h/d?ssl-ca=/ca.pem&ssl-mode=REQUIRED",
                MY,
                "mysql://u@h/d?ssl-ca=%2Fca.pem&sslmode=VERIFY_CA",
            ),
            ("mariadb://u@h/d", MY, "mysql://u@h/d"),
            (
                "mysql://u@h/d?ssl-mode=VERIFY_IDENTITY&ssl-ca=/ca.pem",
                MY,
                "mysql://u@h/d?ssl-mode=VERIFY_IDENTITY&ssl-ca=/ca.pem",
            ),
        ] {
            assert_eq!(driver_url(url, db), gives, "{url}");
        }
    }

    #[test]
    fn a_password_in_the_query_is_hidden() {
        assert_eq!(
            hide_query_password("postgres://u@h/d?sslmode=require&password=hunter2".to_owned()),
            "postgres://u@h/d?sslmode=require&password=<redacted>"
        );
        let plain = "postgres://u@h/d?passwordless=1".to_owned();
        assert_eq!(hide_query_password(plain.clone()), plain);
    }
}
