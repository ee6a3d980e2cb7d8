//! The app database over TLS, against the real binary and private PostgreSQL and MariaDB
//! servers that take TLS connections only, with a certificate (for `localhost`, not for
//! 127.0.0.1) from a CA made for the test: `herald apps` and `herald serve` work over
//! verify-full / VERIFY_IDENTITY with that CA, and over verify-ca with a client
//! certificate; a wrong CA, a name the certificate does not hold, and a plain connection
//! are refused with the reason, no panic and no password. Every test runs once on each
//! engine.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::db::{
    add, apps_ok, eventually, herald_apps, logged, migrate, node_config, ready, served, Engine,
    OwnDb, OwnMariaDb, OwnPostgres, DOWN, PROPAGATION,
};
use support::pki::Pki;
use support::Server;

/// The password of the user Herald connects as (PostgreSQL's trust authentication takes
/// it without asking): it must appear in no message.
const PASSWORD: &str = "Db-Pw-4u2Hide";

support::db::on_both_engines!(
    serves_its_apps_over_verified_tls,
    refuses_what_it_cannot_verify,
);

/// A private server of `engine` that takes TLS only, its CA, and a client certificate for
/// the user `mtls`, who must present one.
struct TlsDb {
    engine: Engine,
    db: OwnDb,
    pki: Pki,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl TlsDb {
    fn start(engine: Engine, test: &str) -> TlsDb {
        let pki = Pki::new(&format!("db-{engine:?}-{test}"));
        // For `localhost` only: verify-full to 127.0.0.1 must fail on the name.
        let server = pki.leaf_for("localhost", false);
        let cert = pki.write("server.crt", &server.cert);
        let key = pki.write("server.key", &server.key);
        let client = pki.leaf("mtls");
        let client_cert = pki.write("client.crt", &client.cert);
        let client_key = pki.write("client.key", &client.key);
        let db = match engine {
            Engine::Postgres => OwnDb::Postgres(OwnPostgres::create_with(|data| {
                for (name, from) in [("server.crt", &cert), ("server.key", &key)] {
                    std::fs::copy(from, data.join(name)).expect("copy into the data directory");
                }
                std::fs::write(data.join("ca.crt"), &pki.ca_pem).expect("write the CA");
                owner_only(&data.join("server.key"));
                // TLS only over TCP (the socket, which the test never uses, stays
                // plain), and `mtls` with a certificate only.
                std::fs::write(
                    data.join("pg_hba.conf"),
                    "local all all trust\n\
                     hostssl all mtls 127.0.0.1/32 cert\n\
                     hostssl all mtls ::1/128 cert\n\
                     hostssl all all 127.0.0.1/32 trust\n\
                     hostssl all all ::1/128 trust\n",
                )
                .expect("write pg_hba.conf");
                let options = "-c ssl=on -c ssl_cert_file=server.crt \
                               -c ssl_key_file=server.key -c ssl_ca_file=ca.crt";
                (options.to_owned(), true)
            })),
            Engine::MariaDb => {
                let path = |p: &Path| p.display().to_string();
                OwnDb::MariaDb(OwnMariaDb::create_with(
                    vec![
                        format!("--ssl-cert={}", path(&cert)),
                        format!("--ssl-key={}", path(&key)),
                        format!("--ssl-ca={}", path(&pki.ca_path())),
                        "--require-secure-transport=ON".to_owned(),
                    ],
                    true,
                ))
            }
        };
        let users = match engine {
            Engine::Postgres => "CREATE ROLE mtls LOGIN SUPERUSER".to_owned(),
            Engine::MariaDb => format!(
                "CREATE USER herald@'%' IDENTIFIED BY '{PASSWORD}'; \
                 GRANT ALL ON herald.* TO herald@'%'; \
                 CREATE USER mtls@'%' REQUIRE X509; GRANT ALL ON herald.* TO mtls@'%'"
            ),
        };
        db.sql(&users);
        TlsDb {
            engine,
            db,
            pki,
            client_cert,
            client_key,
        }
    }

    /// The `apps_url` of its `herald` database, as the password user at `host`, with
    /// `query`.
    fn url(&self, host: &str, query: &str) -> String {
        let user = match self.engine {
            Engine::Postgres => "postgres",
            Engine::MariaDb => "herald",
        };
        self.url_as(&format!("{user}:{PASSWORD}"), host, query)
    }

    fn url_as(&self, user: &str, host: &str, query: &str) -> String {
        let scheme = match self.engine {
            Engine::Postgres => "postgres",
            Engine::MariaDb => "mariadb",
        };
        format!("{scheme}://{user}@{host}:{}/herald?{query}", self.db.port())
    }

    /// The query of `mode` (PostgreSQL's name) with `ca`, in the engine's own words.
    fn tls(&self, mode: &str, ca: &Path) -> String {
        let ca = ca.display();
        match self.engine {
            Engine::Postgres => format!("sslmode={mode}&sslrootcert={ca}"),
            Engine::MariaDb => {
                let mode = match mode {
                    "require" => "REQUIRED",
                    "verify-ca" => "VERIFY_CA",
                    "verify-full" => "VERIFY_IDENTITY",
                    other => panic!("no MySQL mode for {other}"),
                };
                format!("ssl-mode={mode}&ssl-ca={ca}")
            }
        }
    }

    fn plain(&self) -> &'static str {
        match self.engine {
            Engine::Postgres => "sslmode=disable",
            Engine::MariaDb => "ssl-mode=DISABLED",
        }
    }

    /// The query parameters of the client certificate and its key.
    fn client_cert(&self) -> String {
        let (cert, key) = (self.client_cert.display(), self.client_key.display());
        match self.engine {
            Engine::Postgres => format!("&sslcert={cert}&sslkey={key}"),
            Engine::MariaDb => format!("&ssl-cert={cert}&ssl-key={key}"),
        }
    }
}

fn owner_only(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
}

/// `herald apps list` over `url` fails, saying `reason` (compared in lower case), with no
/// panic and no password.
fn refused(url: &str, reason: &str) {
    let run = herald_apps(url, None, &["list"]);
    assert_eq!(run.code, 1, "{url}: {run:?}");
    let said = run.stderr.to_lowercase();
    assert!(
        said.contains(&reason.to_lowercase()),
        "{url}: says {reason}: {run:?}"
    );
    assert!(!said.contains("panicked"), "{url}: {run:?}");
    assert!(
        !run.stderr.contains(PASSWORD),
        "{url}: password shown: {run:?}"
    );
}

async fn serves_its_apps_over_verified_tls(engine: Engine) {
    let db = TlsDb::start(engine, "serves");
    let ca = db.pki.ca_path();
    let url = db.url("localhost", &db.tls("verify-full", &ca));
    // The CLI over TLS.
    migrate(&url);
    add(&url, "1", &[]);

    let server = Server::start_logged(&node_config(&url), &[]);
    let mut one = server.connect("k1").await;
    one.assert_alive().await;
    assert_eq!(ready(&server).await, 200);
    // A change made over TLS reaches the node over TLS (PostgreSQL's watch has a
    // connection of its own).
    add(&url, "2", &[]);
    let (mut two, took) = served(&server, "k2", Instant::now(), PROPAGATION).await;
    eprintln!("{engine:?}: an app added over TLS served after {took:?}");
    two.assert_alive().await;
    assert!(!server.log().contains(PASSWORD), "{}", server.log());

    // verify-ca checks the chain and not the name: 127.0.0.1 is served too.
    let by_address = db.url("127.0.0.1", &db.tls("verify-ca", &ca));
    let listed = apps_ok(&by_address, &["list"]);
    assert!(listed.contains("k2"), "{listed}");

    // A user who must present a client certificate: served with it, refused without.
    let query = db.tls("verify-full", &ca);
    let with_cert = db.url_as("mtls", "localhost", &format!("{query}{}", db.client_cert()));
    let listed = apps_ok(&with_cert, &["list"]);
    assert!(listed.contains("k1"), "{listed}");
    let reason = match engine {
        Engine::Postgres => "certificate",
        Engine::MariaDb => "access denied",
    };
    refused(&db.url_as("mtls", "localhost", &query), reason);
}

async fn refuses_what_it_cannot_verify(engine: Engine) {
    let db = TlsDb::start(engine, "refuses");
    let wrong = Pki::new(&format!("db-{engine:?}-wrong-ca"));
    let ca = db.pki.ca_path();
    migrate(&db.url("localhost", &db.tls("verify-full", &ca)));

    let wrong_ca = db.url("localhost", &db.tls("verify-full", &wrong.ca_path()));
    refused(&wrong_ca, "invalid peer certificate: UnknownIssuer");
    // `require` with a CA verifies against it, as libpq does (the driver alone would not).
    let require = db.url("localhost", &db.tls("require", &wrong.ca_path()));
    refused(&require, "invalid peer certificate: UnknownIssuer");
    // The certificate names localhost, not 127.0.0.1.
    let by_address = db.url("127.0.0.1", &db.tls("verify-full", &ca));
    refused(&by_address, "certificate not valid for name \"127.0.0.1\"");
    let plain_says = match engine {
        Engine::Postgres => "no encryption",
        // MariaDB refuses it as a bad login; Herald adds that TLS was off.
        Engine::MariaDb => "the URL turns TLS off",
    };
    refused(&db.url("localhost", db.plain()), plain_says);

    // A misspelt mode would connect unverified: refused before connecting, by its name.
    let misspelt = db.url("localhost", &format!("sslmod=verify-full&{}", db.plain()));
    let run = herald_apps(&misspelt, None, &["list"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("`sslmod` is not supported"), "{run:?}");
    assert!(!run.stderr.contains("verify-full'"), "no value: {run:?}");
    assert!(!run.stderr.contains(PASSWORD), "{run:?}");
    // `herald serve` stops at start-up the same way.
    let config = std::env::temp_dir().join(format!(
        "herald-db-tls-{engine:?}-{}.toml",
        std::process::id()
    ));
    std::fs::write(&config, node_config(&misspelt)).expect("write config");
    let serve = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--port", "0", "--config"])
        .env("HERALD_DATA_DIR", support::scratch_data_dir())
        .arg(&config)
        .env_remove("HERALD_APPS_URL")
        .output()
        .expect("run herald serve");
    let _ = std::fs::remove_file(&config);
    let stderr = String::from_utf8_lossy(&serve.stderr);
    assert_eq!(serve.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("`sslmod` is not supported"), "{stderr}");
    assert!(!stderr.contains(PASSWORD), "{stderr}");

    // A node given the wrong CA stays up, not ready, and says why.
    let server = Server::start_logged(&node_config(&wrong_ca), &[]);
    eventually("the refusal logged", Duration::from_secs(5), async || {
        logged(&server, DOWN) > 0
    })
    .await;
    assert_eq!(ready(&server).await, 503, "not ready: it has no apps");
    let log = server.log();
    assert!(log.contains("UnknownIssuer"), "{log}");
    assert!(!log.contains(PASSWORD), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}
