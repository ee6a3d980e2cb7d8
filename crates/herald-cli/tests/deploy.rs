//! The container image and the Kubernetes manifests (`deploy/`), tested as far as this
//! machine allows without a container runtime: the manifests are validated offline
//! against the Kubernetes API's schemas, they agree with the image and with the server's
//! drain, and the image's runtime contents (the binary and the libraries it links, as the
//! distroless base provides them) run as the image's non-root user under chroot, answer
//! the health check and drain on SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(root().join(relative))
        .unwrap_or_else(|e| panic!("read {relative}: {e}"))
}

fn manifests() -> Vec<PathBuf> {
    let dir = root().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Runs the offline validator (`tests/js/deploy/validate.mjs`) on `files`.
fn validate(files: &[PathBuf]) -> std::process::Output {
    let js = root().join("tests/js");
    assert!(
        js.join("node_modules/kubernetes-models").is_dir(),
        "the validator's packages are not installed: run `npm ci --prefix tests/js` first"
    );
    Command::new("node")
        .arg(js.join("deploy/validate.mjs"))
        .args(files)
        .output()
        .expect("run node")
}

#[test]
fn the_manifests_are_valid_kubernetes_objects() {
    let files = manifests();
    assert!(files.len() >= 4, "{files:?}");
    let output = validate(&files);
    let said = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{said}");
    for kind in ["Deployment", "Service", "PodDisruptionBudget", "Secret"] {
        assert!(said.contains(&format!("{kind} herald: valid")), "{said}");
    }
    // The validator can fail: a count that is not a number.
    let broken = std::env::temp_dir().join(format!("herald-deploy-{}.yaml", std::process::id()));
    let deployment =
        read("deploy/kubernetes/deployment.yaml").replace("replicas: 3", "replicas: three");
    std::fs::write(&broken, deployment).expect("write");
    let output = validate(std::slice::from_ref(&broken));
    let _ = std::fs::remove_file(&broken);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("replicas"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The first number after `key:` in `text`.
fn number_after(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(key)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `{key}` number"))
}

#[test]
fn the_manifests_agree_with_the_image_and_leave_the_drain_its_time() {
    let config = herald_server::Config::default();
    let deployment = read("deploy/kubernetes/deployment.yaml");
    let image = read("deploy/Containerfile");
    // SIGKILL must not come before the preStop delay and the whole drain.
    let grace = number_after(&deployment, "terminationGracePeriodSeconds:");
    let pre_stop = number_after(&deployment, "seconds:");
    let drain =
        config.server.shutdown_grace + config.server.webhook_flush_timeout + Duration::from_secs(1);
    assert!(
        Duration::from_secs(grace) > Duration::from_secs(pre_stop) + drain,
        "terminationGracePeriodSeconds {grace} s leaves no room for {pre_stop} s + {drain:?}"
    );
    // The ports the image exposes are the defaults, and the probes ask the admin port.
    let (port, admin) = (
        config.server.port,
        config
            .admin
            .port
            .unwrap_or(herald_server::DEFAULT_ADMIN_PORT),
    );
    assert!(image.contains(&format!("EXPOSE {port} {admin}")), "EXPOSE");
    assert!(image.contains(&format!("HERALD_PORT={port}")));
    assert!(image.contains(&format!("HERALD_ADMIN_PORT={admin}")));
    assert!(deployment.contains(&format!("containerPort: {port}")));
    assert!(deployment.contains(&format!("containerPort: {admin}")));
    assert!(deployment.contains("path: /ready") && deployment.contains("path: /live"));
    assert!(image.contains(&format!("http://127.0.0.1:{admin}/ready")));
    // The webhook queue's directory is a volume of the Deployment (its root file system is
    // read-only), where the image's HERALD_DATA_DIR points.
    let data_dir = image
        .lines()
        .find_map(|l| l.trim().strip_prefix("HERALD_DATA_DIR="))
        .expect("the image sets HERALD_DATA_DIR");
    assert!(deployment.contains("readOnlyRootFilesystem: true"));
    assert!(
        deployment.contains(&format!("mountPath: {data_dir}")),
        "a volume at {data_dir}"
    );
    assert!(
        deployment.contains(&format!("value: {data_dir}")),
        "HERALD_DATA_DIR"
    );
    assert!(deployment.contains("emptyDir:"));
    // One non-root user, in both.
    assert!(image.contains("USER 65532:65532"));
    assert!(deployment.contains("runAsUser: 65532") && deployment.contains("runAsNonRoot: true"));
}

/// A root file system with what the distroless base gives the binary (the libraries it
/// links, a passwd naming the non-root user) and the binary where the image puts it.
fn image_root() -> PathBuf {
    let root = std::env::temp_dir().join(format!("herald-image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let bin = root.join("usr/local/bin");
    std::fs::create_dir_all(&bin).expect("image root");
    std::fs::copy(env!("CARGO_BIN_EXE_herald"), bin.join("herald")).expect("copy herald");
    let ldd = Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_herald"))
        .output()
        .expect("run ldd");
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = line
            .split("=>")
            .last()
            .and_then(|s| s.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        if let Some(path) = path {
            let to = root.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(to.parent().expect("a directory")).expect("lib dir");
            std::fs::copy(path, &to).unwrap_or_else(|e| panic!("copy {path}: {e}"));
        }
    }
    let etc = root.join("etc");
    std::fs::create_dir_all(&etc).expect("etc");
    std::fs::write(etc.join("passwd"), "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n").expect("passwd");
    std::fs::write(etc.join("group"), "root:x:0:\nnonroot:x:65532:\n").expect("group");
    std::fs::create_dir_all(root.join("tmp")).expect("tmp");
    root
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// `herald ARGS` in the image root, as the image's user, with the image's environment.
fn in_image(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new("/usr/sbin/chroot");
    command
        .arg("--userspec=65532:65532")
        .arg(root)
        .arg("/usr/local/bin/herald")
        .args(args)
        .env_clear()
        .envs([
            ("HERALD_HOST", "0.0.0.0"),
            ("HERALD_ADMIN_HOST", "0.0.0.0"),
            ("HERALD_LOG_FORMAT", "json"),
        ])
        .envs(env.iter().copied());
    command
}

#[test]
fn the_image_contents_run_as_its_user_answer_the_health_check_and_drain() {
    assert!(
        is_root(),
        "this test needs root: it runs the image's contents under chroot as user 65532"
    );
    let root = image_root();
    // Without credentials of its own, the image refuses the public default ones.
    let refused = in_image(
        &root,
        &["serve"],
        &[
            ("HERALD_PORT", "0"),
            ("HERALD_ADMIN_PORT", "0"),
            ("HERALD_ADMIN_TOKEN", "image-admin-token-0123456789"),
        ],
    )
    .output()
    .expect("run herald in the image root");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("default credentials"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let env = [
        ("HERALD_PORT", "0"),
        ("HERALD_ADMIN_PORT", "0"),
        ("HERALD_APP_ID", "7"),
        ("HERALD_APP_KEY", "image-key"),
        ("HERALD_APP_SECRET", "image-secret-0123456789"),
        ("HERALD_ADMIN_TOKEN", "image-admin-token-0123456789"),
    ];
    let mut server = in_image(&root, &["serve"], &env)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start herald in the image root");
    let mut lines = BufReader::new(server.stdout.take().expect("stdout")).lines();
    let admin = loop {
        let line = lines
            .next()
            .expect("herald exited before listening")
            .expect("read stdout");
        if let Some(rest) = line.strip_prefix("admin listening on ") {
            let port = rest.trim().rsplit(':').next().expect("a port").to_owned();
            break format!("127.0.0.1:{port}");
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let url = format!("http://{admin}/ready");
    let probe = in_image(&root, &["probe", "--url", &url], &[])
        .output()
        .expect("run herald probe");
    assert!(
        probe.status.success(),
        "{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let start = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let config = herald_server::Config::default();
    let bound =
        config.server.shutdown_grace + config.server.webhook_flush_timeout + Duration::from_secs(2);
    let status = loop {
        if let Some(status) = server.try_wait().expect("wait") {
            break status;
        }
        assert!(
            start.elapsed() < bound,
            "still running {bound:?} after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    // Once it has gone, the health check says so.
    let probe = in_image(&root, &["probe", "--url", &url], &[])
        .output()
        .expect("run herald probe");
    assert!(!probe.status.success());
    assert!(String::from_utf8_lossy(&probe.stderr).starts_with("herald probe:"));
    let _ = std::fs::remove_dir_all(&root);
}
