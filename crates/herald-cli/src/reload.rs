//! Live reload: `herald reload` signals a running `herald serve` (SIGHUP), whose handler
//! rereads the configuration file and applies it; and the pid file that lets the command
//! find the server.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use herald_server::{Config, Reloader};
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// `herald reload`: which server to signal.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true)))]
pub struct ReloadArgs {
    /// The pid file the server wrote (`pid_file`, or `herald serve --pid-file`).
    #[arg(long, group = "target")]
    pid_file: Option<PathBuf>,
    /// The server's process id (systemd: `--pid $MAINPID`).
    #[arg(long, group = "target")]
    pid: Option<u32>,
}

/// Sends SIGHUP and prints one line: what was done, or why not (exit 2 for a pid file that
/// cannot be read or holds no process id, 1 for a process that cannot be signalled).
pub fn send(args: ReloadArgs) -> ExitCode {
    let (pid, source) = match (args.pid, args.pid_file) {
        (Some(pid), _) => (pid, String::new()),
        (None, Some(path)) => match read_pid_file(&path) {
            Ok(pid) => (pid, format!(" (from pid file {})", path.display())),
            Err(message) => {
                eprintln!("herald: {message}");
                return ExitCode::from(2);
            }
        },
        (None, None) => {
            eprintln!("herald: give --pid-file PATH or --pid PID");
            return ExitCode::from(2);
        }
    };
    // 0 and negative numbers would signal a whole process group, or every process.
    let Some(target) = i32::try_from(pid)
        .ok()
        .filter(|p| *p > 0)
        .map(Pid::from_raw)
    else {
        eprintln!("herald: {pid} is not a process id{source}");
        return ExitCode::from(2);
    };
    match kill(target, Signal::SIGHUP) {
        Ok(()) => {
            println!(
                "herald: sent SIGHUP to process {pid}{source}; it rereads its configuration and logs what changed"
            );
            ExitCode::SUCCESS
        }
        Err(Errno::ESRCH) => {
            eprintln!("herald: no process {pid} is running{source}");
            ExitCode::FAILURE
        }
        Err(Errno::EPERM) => {
            eprintln!(
                "herald: not permitted to signal process {pid}{source}: run as its user or root"
            );
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("herald: cannot signal process {pid}{source}: {error}");
            ExitCode::FAILURE
        }
    }
}

fn read_pid_file(path: &Path) -> Result<u32, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read pid file {}: {e}", path.display()))?;
    text.trim()
        .parse()
        .map_err(|_| format!("pid file {} does not hold a process id", path.display()))
}

/// The pid file of a running server: written at start, removed when dropped at a clean
/// shutdown, unless another process has written its own pid there since.
pub struct PidFile(PathBuf);

impl PidFile {
    pub fn write(path: &Path) -> std::io::Result<PidFile> {
        std::fs::write(path, format!("{}\n", std::process::id()))?;
        Ok(PidFile(path.to_owned()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if read_pid_file(&self.0).is_ok_and(|pid| pid == std::process::id()) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// How `herald serve` built its configuration, so a reload builds it the same way: the same
/// file and environment, then the same command-line overrides.
pub struct ConfigSource {
    pub path: Option<PathBuf>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub pid_file: Option<PathBuf>,
}

impl ConfigSource {
    pub fn load(&self) -> Result<Config, herald_server::ConfigError> {
        let mut config = Config::load(self.path.as_deref(), &|k| std::env::var(k).ok())?;
        if let Some(host) = &self.host {
            config.server.host = host.clone();
        }
        if let Some(port) = self.port {
            config.server.port = port;
        }
        if let Some(pid_file) = &self.pid_file {
            config.process.pid_file = Some(pid_file.clone());
        }
        Ok(config)
    }
}

/// Applies the configuration again at every SIGHUP. A file that does not load changes
/// nothing: the error, which names the file and the field, is logged on one line.
pub async fn on_hangup(
    mut hangups: tokio::signal::unix::Signal,
    source: std::sync::Arc<ConfigSource>,
    reloader: Reloader,
) {
    while hangups.recv().await.is_some() {
        let source = source.clone();
        let reloader = reloader.clone();
        // Reading the files (the config, the certificate) blocks; the runtime's workers
        // must not.
        let result = match tokio::task::spawn_blocking(move || {
            source
                .load()
                .map_err(herald_server::ReloadError::from)
                .and_then(|config| reloader.apply(config))
        })
        .await
        {
            Ok(result) => result,
            Err(error) => {
                tracing::error!(%error, "Reload failed; the running configuration is unchanged");
                continue;
            }
        };
        if let Err(error) = result {
            tracing::error!(%error, "Reload failed; the running configuration is unchanged");
        }
    }
}
