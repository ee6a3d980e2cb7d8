//! Invariants of the repository checked as tests: documentation that must agree with code,
//! and the seams the code must keep.

use std::path::Path;

/// docs/config-reference.md is written from the settings' declarations, so it documents
/// every key and variable by construction; this keeps the file in step with them.
#[test]
fn config_reference_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/config-reference.md");
    let current = herald_server::settings::reference();
    if std::env::var_os("HERALD_BLESS").is_some() {
        std::fs::write(&path, &current)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        return;
    }
    let written = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        written == current,
        "docs/config-reference.md is not what the settings' declarations give; write it anew with\n  \
         HERALD_BLESS=1 cargo test -p herald-server --test tidy config_reference"
    );
}

/// Every `.rs` file under `src/`, as (path relative to the crate, text).
fn sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        let entries =
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = Vec::new();
    walk(&root.join("src"), &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let relative = path
                .strip_prefix(root)
                .expect("under the crate")
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {relative}: {e}"));
            (relative, text)
        })
        .collect()
}

/// Where a line outside `src/adapter/redis/` may name Redis, and what it may say there.
enum MayName {
    /// The whole file: where the node's backend is chosen.
    File(&'static str),
    /// Exactly this line of this file.
    Line(&'static str, &'static str),
}

const MAY_NAME_REDIS: &[MayName] = &[
    // The backend's settings and its start: the two places that choose it.
    MayName::File("src/adapter/config.rs"),
    MayName::File("src/adapter/start.rs"),
    // Declaring the module is naming it.
    MayName::Line("src/adapter/mod.rs", "mod redis;"),
];

/// A line that names Redis where it should not, if this one does.
fn names_redis_out_of_place(path: &str, line: &str) -> bool {
    let lower = line.to_lowercase();
    for rule in MAY_NAME_REDIS {
        match *rule {
            MayName::File(file) if file == path => return false,
            MayName::Line(file, allowed) if file == path && line.trim() == allowed => return false,
            _ => {}
        }
    }
    lower.contains("redis")
}

/// A line that names an app database (its engines or their driver) as code does: a URL
/// scheme (`postgres://`) is configuration data, as opaque to the server as any URL.
fn names_a_database(line: &str) -> bool {
    let lower = line.to_lowercase();
    ["postgres", "mysql", "mariadb", "sqlx"].iter().any(|name| {
        lower
            .match_indices(name)
            .any(|(at, _)| !lower[at + name.len()..].starts_with("://"))
    })
}

/// The app store is a seam too: PostgreSQL, MySQL/MariaDB and their driver are named only
/// under `src/store/`; the rest of the server sees an `AppStore` and a URL.
#[test]
fn the_app_databases_stay_behind_the_store_seam() {
    let sources = sources();
    assert!(
        sources.iter().any(|(p, _)| p == "src/store/postgres.rs"),
        "the PostgreSQL store moved: update this test"
    );
    assert!(names_a_database("use sqlx::PgPool;"));
    assert!(names_a_database("AppsDb::MySql => {}"));
    assert!(!names_a_database("apps_url = \"postgres://u@h/x\""));
    let found: Vec<String> = sources
        .iter()
        .filter(|(path, _)| !path.starts_with("src/store/"))
        .flat_map(|(path, text)| {
            text.lines()
                .enumerate()
                .filter(|(_, line)| names_a_database(line))
                .map(move |(n, line)| format!("{path}:{}: {}", n + 1, line.trim()))
        })
        .collect();
    assert!(
        found.is_empty(),
        "names an app database outside src/store/:\n{}",
        found.join("\n")
    );
}

/// The cluster is a seam, not a branch: Redis is named only in `src/adapter/redis/` (and
/// where the backend is chosen and configured), and no app carries a cluster handle for
/// the handlers to branch on.
#[test]
fn redis_stays_behind_the_adapter_seam() {
    let sources = sources();
    assert!(
        sources.iter().any(|(p, _)| p == "src/adapter/redis/mod.rs"),
        "the Redis adapter moved: update this test"
    );
    let mut found = Vec::new();
    for (path, text) in &sources {
        for (n, line) in text.lines().enumerate() {
            let place = format!("{path}:{}: {}", n + 1, line.trim());
            if !path.starts_with("src/adapter/redis/") && names_redis_out_of_place(path, line) {
                found.push(format!("names Redis: {place}"));
            }
            if line.contains(".cluster()") {
                found.push(format!("a cluster handle again: {place}"));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_seam_check_finds_what_it_forbids() {
    assert!(names_redis_out_of_place(
        "src/http/events.rs",
        "use redis::Client;"
    ));
    assert!(names_redis_out_of_place(
        "src/ws/mod.rs",
        "// ask Redis first"
    ));
    assert!(names_redis_out_of_place(
        "src/adapter/mod.rs",
        "pub mod redis;"
    ));
    assert!(!names_redis_out_of_place(
        "src/adapter/mod.rs",
        "mod redis;"
    ));
    assert!(!names_redis_out_of_place(
        "src/adapter/config.rs",
        "redis::join()"
    ));
    assert!(names_redis_out_of_place(
        "src/settings/mod.rs",
        "    redis_url: Option<String>,"
    ));
}
