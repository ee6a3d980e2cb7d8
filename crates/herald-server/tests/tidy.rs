//! Invariants of the repository checked as tests: documentation that must agree with code,
//! and the seams the code must keep.

use std::path::Path;

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The field names of a `struct NAME { ... }` block in Rust source.
fn struct_fields(source: &str, name: &str) -> Vec<String> {
    let start = source
        .find(&format!("struct {name} {{"))
        .unwrap_or_else(|| panic!("struct {name} not found"));
    let body = &source[start..];
    let end = body.find("\n}").expect("struct end");
    body[..end]
        .lines()
        .skip(1)
        .filter_map(|line| {
            let line = line.trim();
            if line.starts_with('#') || line.starts_with("//") {
                return None;
            }
            line.split_once(':').map(|(field, _)| {
                let field = field.trim();
                field
                    .strip_prefix("pub(crate) ")
                    .unwrap_or(field)
                    .to_owned()
            })
        })
        .filter(|f| !f.is_empty())
        .collect()
}

#[test]
fn every_config_key_is_documented_in_the_readme() {
    let config = read("src/config.rs");
    let readme = read("../../README.md");
    let mut keys = struct_fields(&config, "RawConfig");
    keys.extend(struct_fields(&read("src/app_fields.rs"), "RawApp"));
    assert!(keys.len() > 10, "parsed too few keys: {keys:?}");
    let missing: Vec<_> = keys
        .iter()
        .filter(|k| *k != "apps" && !readme.contains(&format!("`{k}`")))
        .collect();
    assert!(missing.is_empty(), "README lacks config keys: {missing:?}");
}

#[test]
fn every_environment_variable_is_documented_in_the_readme() {
    let config = read("src/config.rs");
    let readme = read("../../README.md");
    let vars: Vec<&str> = config
        .split('"')
        .filter(|s| s.starts_with("HERALD_") && !s.contains(' '))
        .collect();
    assert!(vars.len() >= 5, "parsed too few variables: {vars:?}");
    for var in vars {
        assert!(readme.contains(var), "README lacks {var}");
    }
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
    /// These words in this file, and nothing else about Redis.
    Words(&'static str, &'static [&'static str]),
}

const MAY_NAME_REDIS: &[MayName] = &[
    // The backend's settings and its start: the two places that choose it.
    MayName::File("src/adapter/config.rs"),
    MayName::File("src/adapter/start.rs"),
    // Declaring the module is naming it.
    MayName::Line("src/adapter/mod.rs", "mod redis;"),
    // The configuration's keys keep their names (README, existing files and deployments).
    MayName::Words(
        "src/config.rs",
        &[
            "redis_url",
            "redis_prefix",
            "herald_redis_url",
            "redis_tls_",
            "redis_sentinel_tls_",
        ],
    ),
];

/// A line that names Redis where it should not, if this one does.
fn names_redis_out_of_place(path: &str, line: &str) -> bool {
    let mut lower = line.to_lowercase();
    for rule in MAY_NAME_REDIS {
        match *rule {
            MayName::File(file) if file == path => return false,
            MayName::Line(file, allowed) if file == path && line.trim() == allowed => return false,
            MayName::Words(file, words) if file == path => {
                for word in words {
                    lower = lower.replace(word, "");
                }
            }
            _ => {}
        }
    }
    lower.contains("redis")
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
    assert!(!names_redis_out_of_place(
        "src/config.rs",
        "    redis_url: Option<String>,"
    ));
    assert!(names_redis_out_of_place(
        "src/config.rs",
        "    let c = redis::Client::open(url);"
    ));
}
