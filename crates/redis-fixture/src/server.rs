//! One plain `redis-server`.

use crate::process::{base_args, free_port, Host, Process, ScratchDir};
use crate::tls::TlsFiles;

/// A throwaway `redis-server` on a free port (loopback unless started on another
/// [`Host`]), keeping nothing on disk; killed when dropped.
pub struct RedisServer {
    process: Process,
    password: Option<String>,
    _dir: ScratchDir,
}

impl RedisServer {
    /// Starts a server without a password.
    pub fn start() -> RedisServer {
        RedisServer::start_inner(&Host::loopback(), None, None)
    }

    /// Starts a server without a password on `host`.
    pub fn start_on(host: &Host) -> RedisServer {
        RedisServer::start_inner(host, None, None)
    }

    /// Starts a server that requires `password` (`requirepass`).
    pub fn start_with_password(password: &str) -> RedisServer {
        RedisServer::start_inner(&Host::loopback(), Some(password.to_owned()), None)
    }

    /// Starts a server without a password that serves TLS only, with `tls`.
    pub fn start_tls(tls: &TlsFiles) -> RedisServer {
        RedisServer::start_inner(&Host::loopback(), None, Some(tls))
    }

    fn start_inner(host: &Host, password: Option<String>, tls: Option<&TlsFiles>) -> RedisServer {
        let dir = ScratchDir::new("server");
        let port = free_port();
        let mut args = base_args(host, port, dir.path());
        if let Some(password) = &password {
            args.extend(["--requirepass".to_owned(), password.clone()]);
        }
        RedisServer {
            process: Process::start_tls(host, port, args, tls),
            password,
            _dir: dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.process.port
    }

    /// The address clients reach it at.
    pub fn ip(&self) -> std::net::IpAddr {
        self.process.host.ip()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// `redis://[:password@]host:port/0` (`rediss://` over TLS).
    pub fn url(&self) -> String {
        let s = if self.process.tls.is_some() { "s" } else { "" };
        match &self.password {
            Some(password) => format!("redis{s}://:{password}@{}:{}/0", self.ip(), self.port()),
            None => format!("redis{s}://{}:{}/0", self.ip(), self.port()),
        }
    }

    /// `redis-cli` against this server (without its password).
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        self.process.cli(args)
    }

    /// Kills the server (its data is gone: it keeps nothing on disk).
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Freezes the server (SIGSTOP): connections stay open and nothing is answered, as
    /// with a Redis that is overloaded or partitioned away.
    pub fn pause(&self) {
        self.process.signal("-STOP");
    }

    /// Lets a paused server run again (SIGCONT), its data intact.
    pub fn resume(&self) {
        self.process.signal("-CONT");
    }

    /// Starts an empty server again on the same port.
    pub fn restart(&mut self) {
        self.process.restart();
    }
}
