//! App databases for tests: a throwaway database on the machine's shared PostgreSQL
//! (127.0.0.1:5432, user postgres) or MariaDB (127.0.0.1:3306, root), and private servers
//! of either that a test may stop and start (the shared ones are never restarted: other
//! tests use them). Statements go through the `psql` and `mariadb` command-line clients.
//! Below them, what the app-database tests ask of `herald apps` and of a node.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

pub use super::wait::eventually;
use super::{now, signed_as, Server, Ws};

/// Which database server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    MariaDb,
}

/// A server's address: enough to run statements and to build an `apps_url`.
#[derive(Clone, Copy, Debug)]
struct Endpoint {
    engine: Engine,
    port: u16,
    /// The server takes TLS connections only: the command-line client asks for TLS
    /// (without checking the certificate: what is tested is Herald's check).
    tls: bool,
}

impl Endpoint {
    fn url(&self, database: &str) -> String {
        match self.engine {
            Engine::Postgres => format!("postgres://postgres@127.0.0.1:{}/{database}", self.port),
            Engine::MariaDb => format!("mysql://root@127.0.0.1:{}/{database}", self.port),
        }
    }

    /// Runs `sql` in `database` (the server's own one when `None`); the rows it printed,
    /// one a line, columns separated by tabs, or what the client said on failure.
    fn run(&self, database: Option<&str>, sql: &str) -> Result<String, String> {
        let port = self.port.to_string();
        let mut command = match self.engine {
            Engine::Postgres => {
                let mut c = Command::new("psql");
                if self.tls {
                    c.env("PGSSLMODE", "require");
                }
                c.args(["-X", "-q", "-t", "-A", "-F", "\t", "-v", "ON_ERROR_STOP=1"])
                    .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres"])
                    .args(["-d", database.unwrap_or("postgres"), "-c", sql]);
                c
            }
            Engine::MariaDb => {
                let mut c = Command::new("mariadb");
                c.args([
                    "--no-defaults",
                    "-h",
                    "127.0.0.1",
                    "-P",
                    &port,
                    "-u",
                    "root",
                ])
                .args(["-N", "-B", "-e", sql]);
                if self.tls {
                    c.arg("--ssl");
                }
                if let Some(database) = database {
                    c.arg(database);
                }
                c
            }
        };
        let output = command
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run the {:?} client: {e}", self.engine));
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout)
                .trim_end()
                .to_owned())
        } else {
            Err(format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    /// Whether the server answers a query now.
    fn answers(&self) -> bool {
        self.run(None, "SELECT 1").is_ok()
    }

    /// Waits until the server answers; fails the test after `within`.
    fn wait_until_it_answers(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.answers() {
            assert!(
                Instant::now() < deadline,
                "the {:?} server on port {} does not answer after {within:?}",
                self.engine,
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A name no other test (in this process or another) uses.
fn unique_name() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "herald_test_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

/// A database of its own on one of the machine's shared servers; dropped with it.
pub struct TestDb {
    at: Endpoint,
    name: String,
}

impl TestDb {
    /// A new database on PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth).
    pub fn postgres() -> TestDb {
        TestDb::create(Endpoint {
            engine: Engine::Postgres,
            port: 5432,
            tls: false,
        })
    }

    /// A new database on MariaDB (or MySQL) at 127.0.0.1:3306 (root, no password).
    pub fn mysql() -> TestDb {
        TestDb::create(Endpoint {
            engine: Engine::MariaDb,
            port: 3306,
            tls: false,
        })
    }

    /// A new database on the shared server of `engine`.
    pub fn new(engine: Engine) -> TestDb {
        match engine {
            Engine::Postgres => TestDb::postgres(),
            Engine::MariaDb => TestDb::mysql(),
        }
    }

    fn create(at: Endpoint) -> TestDb {
        let name = unique_name();
        at.run(None, &format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| {
                panic!(
                    "cannot create a test database on the {:?} server at 127.0.0.1:{} \
                     (is it running? .ci/run starts it): {e}",
                    at.engine, at.port
                )
            });
        TestDb { at, name }
    }

    pub fn engine(&self) -> Engine {
        self.at.engine
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `apps_url` of this database.
    pub fn url(&self) -> String {
        self.at.url(&self.name)
    }

    /// Runs a statement (or several, `;`-separated) in this database; returns the rows it
    /// printed, one a line, columns separated by tabs. Fails the test if the client fails.
    pub fn sql(&self, sql: &str) -> String {
        self.try_sql(sql)
            .unwrap_or_else(|e| panic!("{:?}: {sql}: {e}", self.at.engine))
    }

    /// [`TestDb::sql`], returning the client's complaint instead of failing.
    pub fn try_sql(&self, sql: &str) -> Result<String, String> {
        self.at.run(Some(&self.name), sql)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let drop = match self.at.engine {
            Engine::Postgres => format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            Engine::MariaDb => format!("DROP DATABASE IF EXISTS {}", self.name),
        };
        let _ = self.at.run(None, &drop);
    }
}

/// A free loopback port (free a moment ago: the server binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A new empty directory under the system's temp dir, for one private server.
fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{what}-{}", unique_name()));
    std::fs::create_dir_all(&dir).expect("create a temp dir");
    dir
}

fn run(command: &mut Command, what: &str) {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The newest PostgreSQL server binaries Debian installed (`/usr/lib/postgresql/N/bin`).
fn postgres_bin() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server binaries in /usr/lib/postgresql (Debian: postgresql)")
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().expect("a PostgreSQL with pg_ctl").1
}

/// What a private server of either engine has: its directory and its address.
pub struct Own {
    dir: PathBuf,
    at: Endpoint,
}

impl Own {
    fn new(what: &str, engine: Engine) -> Own {
        Own {
            dir: temp_dir(what),
            at: Endpoint {
                engine,
                port: free_port(),
                tls: false,
            },
        }
    }

    /// The `apps_url` of its `herald` database.
    pub fn url(&self) -> String {
        self.at.url("herald")
    }

    /// Runs statements in the `herald` database (see [`TestDb::sql`]).
    pub fn sql(&self, sql: &str) -> String {
        self.at
            .run(Some("herald"), sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Whether the server answers now.
    pub fn answers(&self) -> bool {
        self.at.answers()
    }

    pub fn port(&self) -> u16 {
        self.at.port
    }

    /// Waits for the server to answer, then creates the `herald` database.
    fn first_start(&self) {
        self.at.wait_until_it_answers(Duration::from_secs(30));
        self.at
            .run(None, "CREATE DATABASE herald")
            .expect("create database herald");
    }
}

/// A PostgreSQL server of the test's own, in a temp dir, on a free port, trust auth, with
/// a database `herald`; stopped and removed when dropped. Dereferences to [`Own`] for
/// `url()` and `sql()`.
pub struct OwnPostgres {
    own: Own,
    bin: PathBuf,
    /// Run as the `postgres` OS user (PostgreSQL refuses to run as root).
    as_postgres: bool,
    /// Server options beyond the port, the socket and durability.
    options: String,
}

impl std::ops::Deref for OwnPostgres {
    type Target = Own;
    fn deref(&self) -> &Own {
        &self.own
    }
}

impl OwnPostgres {
    /// Creates a cluster (initdb, well under a second) and starts it.
    pub fn create() -> OwnPostgres {
        OwnPostgres::create_with(|_| (String::new(), false))
    }

    /// [`OwnPostgres::create`], with `setup` run on the new data directory before the
    /// first start: it may write files there (they are given to the `postgres` user) and
    /// returns extra server options, and whether the server takes TLS connections only.
    pub fn create_with(setup: impl FnOnce(&Path) -> (String, bool)) -> OwnPostgres {
        let mut pg = OwnPostgres {
            own: Own::new("herald-own-postgres", Engine::Postgres),
            bin: postgres_bin(),
            as_postgres: is_root(),
            options: String::new(),
        };
        if pg.as_postgres {
            run(
                Command::new("chown").arg("postgres:").arg(&pg.dir),
                "chown postgres",
            );
        }
        run(
            pg.command("initdb").arg("-D").arg(pg.data()).args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]),
            "initdb",
        );
        let (options, tls) = setup(&pg.data());
        (pg.options, pg.own.at.tls) = (options, tls);
        if pg.as_postgres {
            run(
                Command::new("chown")
                    .arg("-R")
                    .arg("postgres:")
                    .arg(pg.data()),
                "chown postgres",
            );
        }
        pg.start();
        pg.first_start();
        pg
    }

    /// A command of PostgreSQL's, run as the `postgres` user when the tests run as root.
    fn command(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Starts the stopped server: same port, same data. Returns once it answers.
    pub fn start(&self) {
        self.start_on(self.at.port);
    }

    /// Starts the stopped server on `port` instead of its own, same data: a path to the
    /// database that the nodes (which know the usual port) do not have. Returns once it
    /// answers there.
    pub fn start_on(&self, port: u16) {
        let options = format!(
            "-p {port} -h 127.0.0.1 -k {} -c fsync=off -c full_page_writes=off {}",
            self.dir.display(),
            self.options
        );
        run(
            self.command("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .arg("-l")
                .arg(self.dir.join("log"))
                .args(["-w", "-t", "30", "-o", &options, "start"]),
            "pg_ctl start",
        );
        let at = Endpoint { port, ..self.at };
        at.wait_until_it_answers(Duration::from_secs(10));
    }

    /// The `apps_url` of its `herald` database as served on `port` ([`OwnPostgres::start_on`]).
    pub fn url_on(&self, port: u16) -> String {
        Endpoint { port, ..self.at }.url("herald")
    }

    /// Stops the server (fast shutdown: clients are disconnected); its data stays.
    pub fn stop(&self) {
        self.pg_ctl_stop("fast");
        assert!(!self.answers(), "PostgreSQL still answers after stop");
    }

    /// Stops the server started with [`OwnPostgres::start_on`].
    pub fn stop_on(&self, port: u16) {
        self.pg_ctl_stop("fast");
        assert!(
            !Endpoint { port, ..self.at }.answers(),
            "PostgreSQL still answers on {port} after stop"
        );
    }

    fn pg_ctl_stop(&self, mode: &str) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-w", "-t", "30", "-m", mode, "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Stops and starts the server on the same port, its data kept.
    pub fn restart(&self) {
        self.stop();
        self.start();
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        self.pg_ctl_stop("immediate");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A MariaDB server of the test's own, in a temp dir, on a free port, root without a
/// password, with a database `herald`; killed and removed when dropped. Dereferences to
/// [`Own`] for `url()` and `sql()`.
pub struct OwnMariaDb {
    own: Own,
    child: Option<Child>,
    /// Server options beyond the files, the port and durability.
    args: Vec<String>,
}

impl std::ops::Deref for OwnMariaDb {
    type Target = Own;
    fn deref(&self) -> &Own {
        &self.own
    }
}

impl OwnMariaDb {
    /// Creates a data directory (mariadb-install-db, about a second) and starts the server.
    pub fn create() -> OwnMariaDb {
        OwnMariaDb::create_with(Vec::new(), false)
    }

    /// [`OwnMariaDb::create`] with extra server options, and whether they make it take
    /// TLS connections only.
    pub fn create_with(args: Vec<String>, tls: bool) -> OwnMariaDb {
        let mut db = OwnMariaDb {
            own: Own::new("herald-own-mariadb", Engine::MariaDb),
            child: None,
            args,
        };
        db.own.at.tls = tls;
        // Its own temporary directory: the bootstrap of two servers made at once in a shared
        // /tmp once failed removing its temporary table ("Unknown table
        // 'mysql.tmp_proxies_priv'").
        let tmp = db.dir.join("tmp");
        std::fs::create_dir_all(&tmp).expect("MariaDB's temporary directory");
        run(
            Command::new("mariadb-install-db")
                .arg("--no-defaults")
                .arg(format!("--datadir={}", db.dir.join("data").display()))
                .arg(format!("--tmpdir={}", tmp.display()))
                .args(["--user=root", "--auth-root-authentication-method=normal"])
                .args(["--skip-test-db", "--skip-name-resolve"]),
            "mariadb-install-db (Debian: mariadb-server)",
        );
        db.start();
        db.first_start();
        db
    }

    /// Starts the stopped server: same port, same data. Returns once it answers.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "MariaDB is running already");
        let dir = &self.own.dir;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("log"))
            .expect("MariaDB's log file");
        // Debian puts it in /usr/sbin, which a non-root PATH may not have.
        let program = ["/usr/sbin/mariadbd", "/usr/bin/mariadbd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("mariadbd");
        let child = Command::new(program)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--socket={}", dir.join("sock").display()))
            .arg(format!("--pid-file={}", dir.join("pid").display()))
            .arg(format!("--tmpdir={}", dir.join("tmp").display()))
            .arg(format!("--port={}", self.own.at.port))
            .args([
                "--bind-address=127.0.0.1",
                "--user=root",
                "--skip-name-resolve",
            ])
            .args([
                "--innodb-flush-log-at-trx-commit=0",
                "--innodb-buffer-pool-size=32M",
            ])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start mariadbd (Debian: mariadb-server)");
        self.child = Some(child);
        self.at.wait_until_it_answers(Duration::from_secs(30));
    }

    /// Stops the server (SIGTERM, as a service manager does) and waits for it to exit;
    /// its data stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = child.wait();
        }
        assert!(!self.answers(), "MariaDB still answers after stop");
    }

    /// Stops and starts the server on the same port, its data kept.
    pub fn restart(&mut self) {
        self.stop();
        self.start();
    }
}

impl Drop for OwnMariaDb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.own.dir);
    }
}

/// A private server of either engine, for tests written once for both. Dereferences to
/// [`Own`] for `url()` and `sql()`.
pub enum OwnDb {
    Postgres(OwnPostgres),
    MariaDb(OwnMariaDb),
}

impl std::ops::Deref for OwnDb {
    type Target = Own;
    fn deref(&self) -> &Own {
        match self {
            OwnDb::Postgres(db) => db,
            OwnDb::MariaDb(db) => db,
        }
    }
}

impl OwnDb {
    pub fn new(engine: Engine) -> OwnDb {
        match engine {
            Engine::Postgres => OwnDb::Postgres(OwnPostgres::create()),
            Engine::MariaDb => OwnDb::MariaDb(OwnMariaDb::create()),
        }
    }

    pub fn stop(&mut self) {
        match self {
            OwnDb::Postgres(db) => db.stop(),
            OwnDb::MariaDb(db) => db.stop(),
        }
    }

    pub fn start(&mut self) {
        match self {
            OwnDb::Postgres(db) => db.start(),
            OwnDb::MariaDb(db) => db.start(),
        }
    }

    pub fn restart(&mut self) {
        match self {
            OwnDb::Postgres(db) => db.restart(),
            OwnDb::MariaDb(db) => db.restart(),
        }
    }
}

// What the app-database tests (`app_db.rs`, `app_faults.rs`) ask of `herald apps` and of a
// node.

/// Generates `mod NAME { postgres, mariadb }`: the test `NAME(engine)` once on each (the
/// caller has `Engine` in scope).
#[allow(unused_macros)] // Only the app-database tests run on both engines.
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn postgres() {
                super::$name(super::Engine::Postgres).await;
            }

            #[tokio::test]
            async fn mariadb() {
                super::$name(super::Engine::MariaDb).await;
            }
        }
    )*};
}

#[allow(unused_imports)]
pub(crate) use on_both_engines;

/// How soon a change must reach a running node.
pub const PROPAGATION: Duration = Duration::from_secs(1);

/// What one `herald apps …` run gave.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// `herald apps --apps-url URL ARGS…`, with `--config FILE` first when given.
pub fn herald_apps(url: &str, config: Option<&Path>, args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command.arg("apps");
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    let output = command
        .args(["--apps-url", url])
        .args(args)
        .env_remove("HERALD_APPS_URL")
        .env_remove("HERALD_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run herald apps");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `herald apps ARGS…`, which must succeed; its stdout.
pub fn apps_ok(url: &str, args: &[&str]) -> String {
    let run = herald_apps(url, None, args);
    assert_eq!(run.code, 0, "herald apps {}: {run:?}", args.join(" "));
    run.stdout
}

pub fn migrate(url: &str) {
    apps_ok(url, &["migrate"]);
}

/// Adds app `id` with key `k{id}` and secret `s{id}` (and `extra` options).
pub fn add(url: &str, id: &str, extra: &[&str]) {
    let (key, secret) = (format!("k{id}"), format!("s{id}"));
    let mut args = vec!["add", "--id", id, "--key", &key, "--secret", &secret];
    args.extend_from_slice(extra);
    let out = apps_ok(url, &args);
    assert!(
        out.lines()
            .any(|l| l.starts_with("PUSHER_URL=http://") && l.ends_with(&format!("/apps/{id}"))),
        "add prints a PUSHER_URL line: {out}"
    );
}

/// The `KEY:SECRET` of the `PUSHER_URL=` line in `out`.
pub fn credentials_in(out: &str) -> (String, String) {
    let url = out
        .lines()
        .find_map(|l| l.strip_prefix("PUSHER_URL="))
        .unwrap_or_else(|| panic!("no PUSHER_URL line in {out}"));
    let (_, rest) = url.split_once("://").expect("a URL");
    let (userinfo, _) = rest.split_once('@').expect("credentials in the URL");
    let (key, secret) = userinfo.split_once(':').expect("KEY:SECRET");
    (key.to_owned(), secret.to_owned())
}

/// A node that keeps its apps in `url`.
pub fn node_config(url: &str) -> String {
    format!("apps_url = \"{url}\"\n")
}

/// An app row as a signup flow would write it, with plain SQL (MySQL's `settings` has no
/// default, so it is given there).
pub fn insert_sql(engine: Engine, id: &str) -> String {
    match engine {
        Engine::Postgres => {
            format!("INSERT INTO herald_apps (id, key, secret) VALUES ('{id}', 'k{id}', 's{id}')")
        }
        Engine::MariaDb => format!(
            "INSERT INTO herald_apps (id, `key`, secret, settings) \
             VALUES ('{id}', 'k{id}', 's{id}', '{{}}')"
        ),
    }
}

/// What a connection with `key` is refused with: the `pusher:error` code, or `None` if the
/// connection was established.
pub async fn refusal(server: &Server, key: &str) -> Option<u64> {
    let (_, first) = server
        .connect_raw(&format!("/app/{key}?protocol=7&client=js&version=8.6.0"))
        .await;
    let first = first.expect("a first frame");
    if first["event"] == "pusher:connection_established" {
        return None;
    }
    assert_eq!(first["event"], "pusher:error", "{first}");
    Some(first["data"]["code"].as_u64().expect("an error code"))
}

/// Connects with `key` until the node serves it; fails the test if that takes longer than
/// `within` from `since`. Returns the client and how long it took.
pub async fn served(
    server: &Server,
    key: &str,
    since: Instant,
    within: Duration,
) -> (Ws, Duration) {
    loop {
        let (ws, first) = server
            .connect_raw(&format!("/app/{key}?protocol=7&client=js&version=8.6.0"))
            .await;
        let elapsed = since.elapsed();
        if first
            .as_ref()
            .is_some_and(|f| f["event"] == "pusher:connection_established")
        {
            assert!(
                elapsed < within,
                "{key} was served after {elapsed:?}, not within {within:?}"
            );
            return (Ws::established(ws, first), elapsed);
        }
        assert!(
            elapsed < within,
            "{key} not served within {within:?}; last answer: {first:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `herald apps ARGS…`; then each of `sockets` must be closed with 4003 within
/// [`PROPAGATION`].
pub async fn closes_sockets(url: &str, args: &[&str], sockets: &mut [&mut Ws]) {
    apps_ok(url, args);
    let since = Instant::now();
    for ws in sockets {
        assert_eq!(ws.expect_close().await, 4003, "{args:?} closes the socket");
    }
    assert!(
        since.elapsed() < PROPAGATION,
        "{args:?}: sockets closed after {:?}",
        since.elapsed()
    );
}

/// `GET /apps/ID/channels` signed with `key` and `secret`: the status.
pub async fn channels_status(server: &Server, id: &str, key: &str, secret: &str) -> u16 {
    let path = format!("/apps/{id}/channels");
    signed_as(server, "GET", &path, &[], None, key, secret, now())
        .await
        .0
}

pub async fn trigger(server: &Server, id: &str, secret: &str, channel: &str, data: &str) -> u16 {
    let body = json!({"name": "ev", "channel": channel, "data": data}).to_string();
    let path = format!("/apps/{id}/events");
    let key = format!("k{id}");
    signed_as(server, "POST", &path, &[], Some(&body), &key, secret, now())
        .await
        .0
}

pub async fn subscribed(ws: &mut Ws, channel: &str) {
    let answer = ws.subscribe(channel).await;
    assert_eq!(
        answer["event"], "pusher_internal:subscription_succeeded",
        "{answer}"
    );
}

pub async fn receives(ws: &mut Ws, data: &str) {
    let ev = ws.expect("ev").await;
    assert_eq!(ev["data"], data, "{ev}");
}

/// The admin listener's `/ready` status.
pub async fn ready(server: &Server) -> u16 {
    reqwest::get(format!("http://{}/ready", server.admin))
        .await
        .expect("GET /ready")
        .status()
        .as_u16()
}

/// Runs `herald reload` for the node whose pid file is `pid_file`, then waits for the
/// node to log one more reload than before.
pub async fn herald_reload(server: &Server, pid_file: &std::path::Path) {
    let before = logged(server, "Configuration reloaded");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["reload", "--pid-file"])
        .arg(pid_file)
        .output()
        .expect("run herald reload");
    assert!(out.status.success(), "herald reload: {out:?}");
    eventually("the reload", Duration::from_secs(5), async || {
        logged(server, "Configuration reloaded") > before
    })
    .await;
}

/// How many lines of the node's log contain `text`.
pub fn logged(server: &Server, text: &str) -> usize {
    server.log().lines().filter(|l| l.contains(text)).count()
}

pub const DOWN: &str = "App database unavailable";
pub const BACK: &str = "App database available again";
