//! The `herald` binary: `herald serve` runs the server, `herald reload` makes it reread its
//! configuration; the other commands call the HTTP API through the SDK. Only glue lives
//! here: the server is `herald-server`, the API client `herald-sdk`.

mod apps;
mod commands;
mod import;
mod probe;
mod reload;
mod webhooks;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

/// jemalloc: every connection's task is a 128-byte-aligned allocation, which the system
/// allocator pads and jemalloc's size classes hold without waste; and jemalloc gives freed
/// pages back (its options are built in from `.cargo/config.toml`). Idle memory per
/// connection is measured in BENCHMARKS.md.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use herald_server::settings::LogFormat;
use herald_server::Config;
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    name = "herald",
    version,
    about = "A Pusher Channels compatible realtime server"
)]
struct Cli {
    #[command(flatten)]
    before: Before,
    #[command(subcommand)]
    command: Command,
}

/// Options given before the subcommand (`herald --url … trigger`, `herald --config F apps
/// list`). Each command also takes the ones it uses after its name, where its help lists
/// them; these are not global, so `herald serve --help` shows only what `serve` reads.
#[derive(clap::Args)]
struct Before {
    /// For `serve` and `apps`: the TOML configuration file (also after the subcommand).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// For `apps`: the app database (also after the subcommand).
    #[arg(long, value_name = "URL")]
    apps_url: Option<String>,
    /// For the API commands: `http(s)://KEY:SECRET@HOST[:PORT]/apps/APP_ID` (also after
    /// the subcommand).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// For the API commands: a CA certificate to trust for https:// (also after the
    /// subcommand).
    #[arg(long, value_name = "PEM")]
    ca_cert: Option<PathBuf>,
    /// For the API and `apps` commands: print JSON (also after the subcommand).
    #[arg(long)]
    json: bool,
}

impl Before {
    /// Refuses an option the command does not read, rather than ignoring it.
    fn only(&self, command: &str, takes: &[&str]) -> Result<(), ExitCode> {
        let given = [
            ("config", self.config.is_some()),
            ("apps-url", self.apps_url.is_some()),
            ("url", self.url.is_some()),
            ("ca-cert", self.ca_cert.is_some()),
            ("json", self.json),
        ];
        match given
            .iter()
            .find(|(name, given)| *given && !takes.contains(name))
        {
            Some((name, _)) => {
                eprintln!("herald: --{name} means nothing to {command}");
                Err(ExitCode::from(2))
            }
            None => Ok(()),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (HTTP API and WebSocket on one port).
    Serve(ServeArgs),
    /// Make a running server reread its configuration file (sends it SIGHUP).
    Reload(reload::ReloadArgs),
    /// Manage the apps of a database store (`apps_url`): migrate, add, list, show, update,
    /// remove, enable, disable, rotate-secret, import.
    Apps(apps::AppsArgs),
    /// Ask a URL (the admin listener's /ready by default) and exit 0 if it answers 2xx: a
    /// health check for images with no shell or curl.
    Probe(probe::ProbeArgs),
    /// A running node's webhook queue, through its admin listener: list, show, retry,
    /// purge.
    Webhooks(webhooks::WebhooksArgs),
    #[command(flatten)]
    Api(commands::ApiCommand),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to bind (default 127.0.0.1).
    #[arg(long)]
    host: Option<String>,
    /// Port to bind; 0 picks a free one (default 6001).
    #[arg(long)]
    port: Option<u16>,
    /// TOML configuration file.
    #[arg(
        long,
        env = "HERALD_CONFIG",
        hide_env_values = true,
        value_name = "FILE"
    )]
    config: Option<PathBuf>,
    /// Write the process id here (for `herald reload --pid-file`); removed at shutdown.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Serve a non-loopback address with the public default credentials (app-key /
    /// app-secret), which let anyone publish, read presence and forge channel auth.
    #[arg(long)]
    insecure_default_credentials: bool,
}

/// One option given before the subcommand (`before`) and read by it (`after`, which clap
/// fills from `variable` when the flag is absent): the flag after the subcommand wins, then
/// the one before it, then the variable. A value equal to the variable's counts as the
/// variable's, so a flag before the subcommand beats the environment.
fn merge<T: AsRef<std::ffi::OsStr>>(
    before: Option<T>,
    after: Option<T>,
    variable: &str,
) -> Option<T> {
    let from_env = std::env::var_os(variable);
    match after {
        Some(after) if from_env.as_deref() != Some(after.as_ref()) => Some(after),
        after => before.or(after),
    }
}

fn main() -> ExitCode {
    let Cli { before, command } = Cli::parse();
    let checked = match &command {
        Command::Serve(_) => before.only("`herald serve`", &["config"]),
        Command::Reload(_) => before.only("`herald reload`", &[]),
        Command::Apps(_) => before.only("`herald apps`", &["config", "apps-url", "json"]),
        Command::Probe(_) => before.only("`herald probe`", &[]),
        Command::Webhooks(_) => before.only("`herald webhooks`", &["ca-cert", "json"]),
        Command::Api(_) => before.only(
            "the API commands (trigger, channels, …)",
            &["url", "ca-cert", "json"],
        ),
    };
    if let Err(code) = checked {
        return code;
    }
    match command {
        Command::Serve(mut args) => {
            args.config = merge(before.config, args.config, "HERALD_CONFIG");
            serve(args)
        }
        Command::Reload(args) => reload::send(args),
        Command::Apps(mut args) => {
            args.also(before.config, before.apps_url, before.json);
            apps::run(args)
        }
        Command::Probe(args) => probe::run(args),
        Command::Webhooks(mut args) => {
            args.also(before.ca_cert, before.json);
            webhooks::run(args)
        }
        Command::Api(mut command) => {
            command
                .connection()
                .also(before.url, before.ca_cert, before.json);
            commands::run(command)
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    // Loaded before logging starts: the config says how to log.
    let source = reload::ConfigSource {
        path: args.config,
        host: args.host,
        port: args.port,
        pid_file: args.pid_file,
    };
    let config = match source.load() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("herald: {error}");
            return ExitCode::from(2);
        }
    };
    init_logs(config.process.log_format);
    // Each connection is a file descriptor; the default soft limit (often 1024) would cap
    // the server far below what it can hold.
    if let Err(error) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(%error, "Could not raise the open-file limit");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("herald: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let loopback = herald_server::config::is_loopback_host(&config.server.host);
    if !loopback && config.uses_default_credentials() {
        if !args.insecure_default_credentials {
            eprintln!(
                "herald: refusing to serve {} with the public default credentials (key app-key, secret app-secret), which let anyone publish and forge channel auth. Set your own app in a config file ([[apps]] with id, key and secret) or with HERALD_APP_ID, HERALD_APP_KEY and HERALD_APP_SECRET; --insecure-default-credentials serves them anyway.",
                config.server.host
            );
            return ExitCode::from(2);
        }
        tracing::warn!(
            host = %config.server.host,
            "Serving a non-loopback address with the public default credentials (--insecure-default-credentials): anyone who can reach this port can publish, read presence and forge channel auth"
        );
    }
    let code = runtime.block_on(run(config, loopback, source));
    // Tasks still running (a webhook delivery the flush gave up on) are dropped; a blocking
    // one (a DNS lookup) is not waited for past this.
    runtime.shutdown_timeout(RUNTIME_STOP);
    code
}

/// How long the runtime's blocking threads are waited for at exit.
const RUNTIME_STOP: std::time::Duration = std::time::Duration::from_millis(500);

/// What the server's own bounded shutdown may overrun by before the process gives up on
/// it: a backstop, never reached unless a bound in the server is broken.
const SHUTDOWN_SLACK: std::time::Duration = std::time::Duration::from_secs(5);

/// Connections that may wait to be accepted. tokio's default (128) overflows when every
/// client reconnects at once, as they all do after a 4200 restart: each overflow costs the
/// client a one-second SYN retransmit. The kernel caps it at net.core.somaxconn.
const LISTEN_BACKLOG: u32 = 4096;

async fn bind(address: &str) -> std::io::Result<TcpListener> {
    let addr = tokio::net::lookup_host(address)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::other("the host resolves to no address"))?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

async fn run(config: Config, loopback: bool, source: reload::ConfigSource) -> ExitCode {
    // Before the pid file exists: SIGHUP's default action ends the process.
    let hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hangups) => Some(hangups),
        Err(error) => {
            tracing::warn!(%error, "Cannot listen for SIGHUP; reloading is off");
            None
        }
    };
    let address = format!("{}:{}", config.server.host, config.server.port);
    let listener = match bind(&address).await {
        Ok(l) => l,
        Err(error) => {
            eprintln!("herald: cannot listen on {address}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(error) => {
            eprintln!("herald: cannot read the bound address: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut banner = format!(
        "Herald {} listening on {local}\n",
        env!("CARGO_PKG_VERSION")
    );
    for app in &config.apps {
        banner.push_str(&format!("app {}: key {}\n", app.id, app.key));
    }
    if let Some(url) = &config.apps_url {
        banner.push_str(&format!(
            "apps: from the database {} (`herald apps list`)\n",
            url.redacted()
        ));
    }
    // A ready URL carries the secret, so it is printed only when the secret is the public
    // embedded one and only this machine can connect: output often ends up in log stores.
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    if let Some(tls) = &config.tls {
        banner.push_str(&format!(
            "TLS: https:// and wss:// only, certificate {}\n",
            tls.cert.display()
        ));
    }
    if loopback && config.is_embedded_default() {
        if let Some(app) = config.apps.first() {
            banner.push_str(&format!(
                "PUSHER_URL={scheme}://{}:{}@{local}/apps/{}\n",
                app.key, app.secret, app.id
            ));
        }
    }
    let _pid_file = match &config.process.pid_file {
        Some(path) => match reload::PidFile::write(path) {
            Ok(written) => Some(written),
            Err(error) => {
                eprintln!("herald: cannot write pid file {}: {error}", path.display());
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    // The webhook queue is opened (and its directory locked) here, so a directory that
    // cannot be used stops the start naming it; a node with no webhooks to send and no app
    // database leaves it alone until a reload gives an app endpoints.
    let settings = herald_server::adapter::webhook_settings(&config);
    if config.apps.iter().any(|app| !app.webhooks.is_empty()) || config.apps_url.is_some() {
        if let Err(error) = herald_server::webhooks::open_queue(&settings) {
            eprintln!("herald: cannot open the webhook queue (data_dir, HERALD_DATA_DIR): {error}");
            return ExitCode::from(2);
        }
    }
    let apps = Arc::new(herald_server::MemoryApps::new(
        config.apps.clone(),
        &settings,
    ));
    let source = Arc::new(source);
    // Printed once the node is ready: in a cluster, after it joined (tests and scripts
    // wait for this line). Reloads start then too; a SIGHUP that came earlier waits.
    let ready = move |started: herald_server::Started| {
        println!(
            "{banner}console: {}\nadmin listening on {}",
            started.console, started.admin
        );
        let _ = std::io::Write::flush(&mut std::io::stdout());
        if let Some(hangups) = hangups {
            tokio::spawn(reload::on_hangup(hangups, source, started.reloader));
        }
    };
    // The server's shutdown ends within shutdown_grace + webhook_flush_timeout and a second;
    // past that plus SHUTDOWN_SLACK the process exits anyway (its pid file removed).
    let limit = config.server.shutdown_grace + config.server.webhook_flush_timeout + SHUTDOWN_SLACK;
    let (signalled, on_signal) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown_signal().await;
        let _ = signalled.send(());
    };
    let overdue = async move {
        if on_signal.await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(limit).await;
    };
    tokio::select! {
        served = herald_server::serve_with_store(listener, config, apps, shutdown, ready) => match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("herald: {error}");
                ExitCode::FAILURE
            }
        },
        () = overdue => {
            tracing::error!(
                limit_s = limit.as_secs(),
                "Shutdown overran shutdown_grace + webhook_flush_timeout: exiting now"
            );
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, as text or one JSON object per line; `RUST_LOG` filters (default `info`).
fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes are for a person at a terminal: a file, a pipe or a log collector gets
    // plain text, and NO_COLOR (no-color.org: set and not empty) turns them off anyway.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_env_filter(filter);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
