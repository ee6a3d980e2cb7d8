//! Runs the Python official-client suite in `tests/python` (the official `pusher` server
//! library and pysher, from PyPI) against the `herald` binary built for this test run, one
//! test per Python file, each against its own server.
//!
//! The first run creates a virtual environment in the target directory
//! (`CARGO_TARGET_TMPDIR/python-venv`, with `python3 -m venv`) and installs
//! tests/python/requirements.txt into it; later runs reuse it while the requirements and
//! the interpreter are unchanged (a stamp file holds their hash). Delete the folder to start
//! afresh.

mod support;

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use support::Server;

/// The second app, whose only webhook goes to test_webhooks.py's receiver.
const HOOK_APP: [&str; 3] = ["2", "hook-key", "hook-secret"];

fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python")
}

/// The virtual environment's interpreter, the environment made or brought up to date first.
fn venv_python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let target = Path::new(env!("CARGO_TARGET_TMPDIR"));
        // Test processes run at once under nextest: one makes the environment, the others wait.
        let _lock = ProcessLock::acquire(&target.join("python-venv.lock"));
        ensure_venv(&target.join("python-venv"))
    })
}

fn ensure_venv(dir: &Path) -> PathBuf {
    let requirements = python_dir().join("requirements.txt");
    let mut inputs = fs::read(&requirements).expect("read tests/python/requirements.txt");
    let base = run(
        Command::new("python3").arg("--version"),
        "run python3 (CPython 3 is needed for the Python client tests)",
    );
    inputs.extend_from_slice(&base.stdout);
    let want = herald_protocol::signing::body_md5_hex(&inputs);
    let stamp = dir.join("herald-requirements.md5");
    let python = dir.join("bin/python");
    if python.exists() && fs::read_to_string(&stamp).is_ok_and(|s| s == want) {
        return python;
    }
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != ErrorKind::NotFound => panic!("remove {}: {e}", dir.display()),
        _ => {}
    }
    run(
        Command::new("python3").args(["-m", "venv"]).arg(dir),
        "create the virtual environment (python3 -m venv; Debian: python3-venv)",
    );
    run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
            ])
            .args(["--quiet", "-r"])
            .arg(&requirements),
        "install tests/python/requirements.txt from PyPI",
    );
    // Written last: an interrupted install is redone next time.
    fs::write(&stamp, want).expect("write the requirements stamp");
    python
}

fn run(command: &mut Command, what: &str) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot {what}: {e}"));
    assert!(
        output.status.success(),
        "cannot {what}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A lock file holding its owner's pid, taken over once that process is gone.
struct ProcessLock(PathBuf);

impl ProcessLock {
    fn acquire(path: &Path) -> ProcessLock {
        fs::create_dir_all(path.parent().expect("a parent")).expect("create the target dir");
        loop {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
            {
                Ok(mut file) => {
                    write!(file, "{}", std::process::id()).expect("write the lock");
                    return ProcessLock(path.to_owned());
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => panic!("create {}: {e}", path.display()),
            }
            // An empty file is one just created, whose pid is on its way.
            let owner = fs::read_to_string(path).unwrap_or_default();
            if !owner.is_empty() && !Path::new("/proc").join(owner.trim()).exists() {
                let _ = fs::remove_file(path);
                continue;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for ProcessLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Starts a server with `settings` (top-level config lines), app 1 (the defaults) and the
/// hook app, whose webhooks go to a port picked here; returns it with that port.
fn server(settings: &str) -> (Server, u16) {
    let webhook_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let [id, key, secret] = HOOK_APP;
    let server = Server::start(&format!(
        "{settings}\nwebhook_vacated_delay_ms = 100\n\
         [[apps]]\nid = \"1\"\nkey = \"{}\"\nsecret = \"{}\"\n\
         [[apps]]\nid = \"{id}\"\nkey = \"{key}\"\nsecret = \"{secret}\"\n\
         [[apps.webhooks]]\nurl = \"http://127.0.0.1:{webhook_port}/hook\"\n",
        support::KEY,
        support::SECRET,
    ));
    (server, webhook_port)
}

/// Runs one test module of tests/python against a fresh server with `settings`; prints its
/// output and fails if any of its tests failed.
fn run_python(module: &str, settings: &str) {
    let python = venv_python();
    let (server, webhook_port) = server(settings);
    let (host, port) = server.addr.rsplit_once(':').expect("host:port");
    let [hook_id, hook_key, hook_secret] = HOOK_APP;
    let output = Command::new(python)
        .args(["-m", "unittest", "-v", module])
        .current_dir(python_dir())
        .env("HERALD_HOST", host)
        .env("HERALD_PORT", port)
        .env("HERALD_APP_ID", "1")
        .env("HERALD_KEY", support::KEY)
        .env("HERALD_SECRET", support::SECRET)
        .env("HERALD_HOOK_APP_ID", hook_id)
        .env("HERALD_HOOK_KEY", hook_key)
        .env("HERALD_HOOK_SECRET", hook_secret)
        .env("HERALD_WEBHOOK_PORT", webhook_port.to_string())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        // Loopback only: requests and websocket-client would otherwise honour a proxy.
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .output()
        .expect("run the virtual environment's python");
    // unittest reports on stderr.
    println!(
        "{module}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{module} failed (output above)");
}

#[test]
fn server_library() {
    run_python("test_server_library", "");
}

#[test]
fn pysher() {
    run_python("test_pysher", "");
}

#[test]
fn webhooks() {
    run_python("test_webhooks", "");
}

#[test]
fn pysher_keepalive() {
    // Server pings after a second of silence; an unanswered one closes a second later.
    run_python("test_keepalive", "activity_timeout = 1\npong_timeout = 1");
}
