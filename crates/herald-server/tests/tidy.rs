//! Invariants of the repository checked as tests: documentation that must agree with code.

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
