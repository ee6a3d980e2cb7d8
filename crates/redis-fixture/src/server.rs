//! One plain `redis-server`.

use crate::process::{base_args, free_port, Process, ScratchDir};

/// A throwaway `redis-server` on a free loopback port, keeping nothing on disk; killed when
/// dropped.
pub struct RedisServer {
    process: Process,
    password: Option<String>,
    _dir: ScratchDir,
}

impl RedisServer {
    /// Starts a server without a password.
    pub fn start() -> RedisServer {
        RedisServer::start_inner(None)
    }

    /// Starts a server that requires `password` (`requirepass`).
    pub fn start_with_password(password: &str) -> RedisServer {
        RedisServer::start_inner(Some(password.to_owned()))
    }

    fn start_inner(password: Option<String>) -> RedisServer {
        let dir = ScratchDir::new("server");
        let port = free_port();
        let mut args = base_args(port, dir.path());
        if let Some(password) = &password {
            args.extend(["--requirepass".to_owned(), password.clone()]);
        }
        RedisServer {
            process: Process::start(port, args),
            password,
            _dir: dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.process.port
    }

    /// `redis://[:password@]127.0.0.1:port/0`.
    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}/0", self.port()),
            None => format!("redis://127.0.0.1:{}/0", self.port()),
        }
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
