//! Configuration mistakes as `herald serve` tells them (issue 30 item 1): where (file,
//! line, column, the line with a caret under the fault), which key, what its value must
//! be, and the nearest known key to a misspelt one. One test per kind of mistake, each
//! through the real binary: exit code 2 and the exact words on stderr.

use std::process::Command;

/// Runs `herald serve --config` on `text` with `env` set, and gives its exit code, stderr,
/// and the file's path as the error shows it.
fn serve(name: &str, text: &str, env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let path = std::env::temp_dir().join(format!(
        "herald-config-errors-{}-{name}.toml",
        std::process::id()
    ));
    std::fs::write(&path, text).expect("write config");
    let output = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--port", "0", "--config"])
        .arg(&path)
        .env_remove("HERALD_CONFIG")
        .envs(env.iter().copied())
        .output()
        .expect("run herald");
    let _ = std::fs::remove_file(&path);
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        path.display().to_string(),
    )
}

const APP: &str = "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\n";

#[test]
fn a_misspelt_key_is_shown_in_its_line_with_the_key_meant() {
    let (code, stderr, path) = serve("misspelt", &format!("{APP}publishes_per_secnd = 2\n"), &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "herald: invalid config file {path}, line 5, column 1:\n \
             5 | publishes_per_secnd = 2\n   \
             | ^^^^^^^^^^^^^^^^^^^\n\
             `apps[0].publishes_per_secnd` is not a setting of `[[apps]]`; did you mean `publishes_per_second`?\n"
        )
    );
    let (code, stderr, _) = serve("misspelt-top", "port = 6001\nprot = 6002\n", &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.ends_with("`prot` is not a setting; did you mean `port`?\n"),
        "{stderr}"
    );
    // Nothing near: no guess, and not the 50 names serde would list.
    let (_, stderr, _) = serve("unknown", "colour = \"blue\"\n", &[]);
    assert!(
        stderr.ends_with("`colour` is not a setting (docs/configuration.md lists them all)\n"),
        "{stderr}"
    );
    assert!(!stderr.contains("expected one of"), "{stderr}");
}

#[test]
fn a_count_of_the_wrong_kind_names_its_field_and_what_it_must_be() {
    for (value, shown) in [("-1", "-1"), ("\"one\"", "\"one\""), ("3.5", "3.5")] {
        let text = format!("{APP}max_connections = {value}\n");
        let (code, stderr, path) = serve("count", &text, &[]);
        assert_eq!(code, Some(2), "{stderr}");
        let caret = "^".repeat(value.len());
        assert_eq!(
            stderr,
            format!(
                "herald: invalid config file {path}, line 5, column 19:\n \
                 5 | max_connections = {value}\n   \
                 |                   {caret}\n\
                 `apps[0].max_connections` must be a whole number ≥ 0, not {shown}\n"
            )
        );
    }
    let (code, stderr, _) = serve("port", "port = 70000\n", &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.ends_with("`port` must be a whole number from 0 to 65535, not 70000\n"),
        "{stderr}"
    );
    let (_, stderr, _) = serve("flag", "compression = \"yes\"\n", &[]);
    assert!(
        stderr.ends_with("`compression` must be true or false, not \"yes\"\n"),
        "{stderr}"
    );
}

#[test]
fn a_secret_of_the_wrong_kind_is_named_but_never_shown() {
    let (code, stderr, path) = serve("secret", "admin_token = 123456789\n", &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "herald: invalid config file {path}, line 1, column 15:\n \
             1 | admin_token = <redacted>\n\
             `admin_token` must be a string in quotes\n"
        )
    );
}

#[test]
fn a_syntax_error_points_at_its_place() {
    let (code, stderr, path) = serve("syntax", "port = 6001\nhost = \n", &[]);
    assert_eq!(code, Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines[..3],
        [
            format!("herald: invalid config file {path}, line 2, column 8:").as_str(),
            " 2 | host = ",
            "   |        ^",
        ],
        "{stderr}"
    );
    assert!(lines[3].starts_with("invalid string"), "{stderr}");
}

#[test]
fn an_environment_variable_of_the_wrong_kind_says_what_it_must_be() {
    for (name, value, said) in [
        (
            "HERALD_PORT",
            "-5",
            "`HERALD_PORT` must be a whole number from 0 to 65535, not '-5'",
        ),
        (
            "HERALD_ADMIN_PORT",
            "99999",
            "`HERALD_ADMIN_PORT` must be a whole number from 0 to 65535, not '99999'",
        ),
        (
            "HERALD_ACTIVITY_TIMEOUT",
            "soon",
            "`HERALD_ACTIVITY_TIMEOUT` must be a whole number ≥ 0 (seconds), not 'soon'",
        ),
        (
            "HERALD_NODE_ID",
            "-1",
            "`HERALD_NODE_ID` must be a whole number from 1 to 4294967295, not '-1'",
        ),
        (
            "HERALD_COMPRESSION",
            "maybe",
            "`HERALD_COMPRESSION` must be true or false, not 'maybe'",
        ),
    ] {
        let (code, stderr, _) = serve("env", "", &[(name, value)]);
        assert_eq!(code, Some(2), "{name}: {stderr}");
        assert_eq!(
            stderr,
            format!("herald: invalid config: {said}\n"),
            "{name}"
        );
    }
}
