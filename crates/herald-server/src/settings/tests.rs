use std::time::Duration;

use super::*;
use crate::app_config::fields::app_from_fields;

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn a_node_id_is_set_in_the_file_or_the_environment_and_needs_a_restart() {
    let d = Config::default();
    assert_eq!(d.process.node_id, None, "random by default");
    let c = Config::from_toml("node_id = 7", &no_env).expect("valid");
    assert_eq!(c.process.node_id, Some(7));
    assert_eq!(d.restart_fields(&c), ["node_id"]);
    let env = |k: &str| (k == "HERALD_NODE_ID").then(|| "4294967295".to_owned());
    let c = Config::from_toml("node_id = 7", &env).expect("valid");
    assert_eq!(c.process.node_id, Some(u32::MAX), "the environment wins");
    let zero = Config::from_toml("node_id = 0", &no_env).expect_err("0 is no id");
    assert!(zero.to_string().contains("node_id"), "{zero}");
    let bad = |k: &str| (k == "HERALD_NODE_ID").then(|| "node-7".to_owned());
    let err = Config::from_toml("", &bad).expect_err("not a number");
    assert!(err.to_string().contains("HERALD_NODE_ID"), "{err}");
}

#[test]
fn compression_is_on_by_default_and_can_be_turned_off() {
    let d = Config::default();
    assert!(d.server.compression);
    assert_eq!(d.server.compression_min_bytes, 256);
    let c = Config::from_toml("compression = false\ncompression_min_bytes = 1024", &no_env)
        .expect("valid");
    assert!(!c.server.compression);
    assert_eq!(c.server.compression_min_bytes, 1024);
    assert_eq!(
        d.restart_fields(&c),
        ["compression", "compression_min_bytes"]
    );
    for (value, on) in [("false", false), ("0", false), ("TRUE", true), ("1", true)] {
        let env = |k: &str| (k == "HERALD_COMPRESSION").then(|| value.to_owned());
        let c = Config::from_toml("compression = true", &env).expect(value);
        assert_eq!(c.server.compression, on, "{value}");
    }
    let env = |k: &str| (k == "HERALD_COMPRESSION").then(|| "maybe".to_owned());
    let error = Config::from_toml("", &env).expect_err("not a boolean");
    assert!(error.to_string().contains("HERALD_COMPRESSION"), "{error}");
}

#[test]
fn partial_message_timeout_is_read_in_seconds() {
    assert_eq!(
        Config::default().server.partial_message_timeout,
        Duration::from_secs(30)
    );
    let c = Config::from_toml("partial_message_timeout = 1", &no_env).expect("valid");
    assert_eq!(c.server.partial_message_timeout, Duration::from_secs(1));
    let c = Config::from_toml("partial_message_timeout = 3600", &no_env).expect("valid");
    assert_eq!(c.server.partial_message_timeout, Duration::from_secs(3600));
}

#[test]
fn webhook_flush_timeout_is_read_in_seconds_and_needs_a_restart() {
    let d = Config::default();
    assert_eq!(d.server.webhook_flush_timeout, Duration::from_secs(5));
    let c = Config::from_toml("webhook_flush_timeout = 1", &no_env).expect("valid");
    assert_eq!(c.server.webhook_flush_timeout, Duration::from_secs(1));
    assert_eq!(d.restart_fields(&c), ["webhook_flush_timeout"]);
    for bad in ["webhook_flush_timeout = 0", "webhook_flush_timeout = 3601"] {
        let error = Config::from_toml(bad, &no_env).expect_err(bad).to_string();
        assert!(error.contains("webhook_flush_timeout"), "{error}");
    }
}

#[test]
fn empty_config_is_the_embedded_default() {
    let c = Config::from_toml("", &no_env).expect("valid");
    assert_eq!(c, Config::default());
    assert!(c.uses_default_credentials());
}

#[test]
fn file_apps_replace_the_default_and_keep_limit_defaults() {
    let c = Config::from_toml(
        "port = 7000\n[[apps]]\nid = \"9\"\nkey = \"k\"\nsecret = \"s\"\nclient_events = false\n",
        &no_env,
    )
    .expect("valid");
    assert_eq!(c.server.port, 7000);
    assert_eq!(c.apps.len(), 1);
    assert_eq!(c.apps[0].id, "9");
    assert!(!c.apps[0].limits.client_events);
    assert_eq!(c.apps[0].limits.max_channels_per_trigger, 100);
    assert!(!c.uses_default_credentials());
}

#[test]
fn errors_name_the_field() {
    let cases = [
        ("bogus = 1", "bogus"),
        ("port = \"x\"", "port"),
        ("[[apps]]\nid = \"1\"\nkey = \"k\"", "apps[0].secret"),
        (
            "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\nmax_events_per_batch = 0",
            "apps[0].max_events_per_batch",
        ),
        (
            "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\n[[apps]]\nid = \"1\"\nkey = \"k2\"\nsecret = \"s\"",
            "apps[1].id",
        ),
        ("activity_timeout = 0", "activity_timeout"),
        ("partial_message_timeout = 0", "partial_message_timeout"),
        ("partial_message_timeout = 3601", "partial_message_timeout"),
        ("client_frames_per_second = 0", "client_frames_per_second"),
        ("client_bytes_per_second = 1023", "client_bytes_per_second"),
        (
            "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\n[[apps.webhooks]]\nurl = \"ftp://x\"",
            "apps[0].webhooks[0].url",
        ),
        (
            "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\n[[apps.webhooks]]\nurl = \"http://x\"\nevent_types = [\"channel_occupid\"]",
            "apps[0].webhooks[0].event_types",
        ),
    ];
    for (text, field) in cases {
        let err = Config::from_toml(text, &no_env)
            .expect_err(text)
            .to_string();
        assert!(err.contains(field), "{text:?} gave {err:?}");
    }
}

#[test]
fn a_parse_error_shows_its_line_and_caret_and_the_key_meant() {
    let err = Config::from_toml("port = 6001\nactivty_timeout = 5\n", &no_env)
        .expect_err("misspelt")
        .to_string();
    assert_eq!(
        err,
        "invalid config file <inline>, line 2, column 1:\n \
         2 | activty_timeout = 5\n   | ^^^^^^^^^^^^^^^\n\
         `activty_timeout` is not a setting; did you mean `activity_timeout`?"
    );
    let err = Config::from_toml("[plans.pro]\nmessages_per_day = -5\n", &no_env)
        .expect_err("negative")
        .to_string();
    assert!(
        err.ends_with("`plans.pro.messages_per_day` must be a whole number ≥ 0, not -5"),
        "{err}"
    );
    // A URL's password in the line at fault stays hidden.
    let err = Config::from_toml("trusted_proxies = [\"postgres://u:hunter2@h\", 5]", &no_env)
        .expect_err("unknown key")
        .to_string();
    assert!(
        !err.contains("hunter2") && err.contains("`trusted_proxies[1]` must be a string"),
        "{err}"
    );
}

#[test]
fn an_apps_fields_name_the_field_in_the_files_words() {
    let fields = |value: serde_json::Value| match value {
        serde_json::Value::Object(map) => map,
        _ => unreachable!(),
    };
    let base = serde_json::json!({"id": "1", "key": "k", "secret": "s"});
    for (name, value, said) in [
        (
            "max_connections",
            serde_json::json!(-5),
            "`max_connections` must be a whole number ≥ 0, not -5",
        ),
        (
            "publishes_per_secnd",
            serde_json::json!(2),
            "`publishes_per_secnd` is not an app setting; did you mean `publishes_per_second`?",
        ),
        (
            "secret",
            serde_json::json!(12345),
            "`secret` must be a string in quotes",
        ),
    ] {
        let mut app = fields(base.clone());
        app.insert(name.to_owned(), value);
        let err = app_from_fields("", app, &Plans::default())
            .expect_err(name)
            .to_string();
        assert_eq!(err, format!("invalid config: {said}"));
    }
}

#[test]
fn apps_take_limits_from_their_plan_and_override_them() {
    let c = Config::from_toml(
        "[plans.free]\npublishes_per_second = 5\nmax_connections = 100\nmessages_per_day = 1000\n\
         [[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\nplan = \"free\"\nmax_connections = 7\n",
        &no_env,
    )
    .expect("valid");
    let l = &c.apps[0].limits;
    assert_eq!(l.publishes_per_second, 5, "from the plan");
    assert_eq!(l.messages_per_day, 1000, "from the plan");
    assert_eq!(l.max_connections, 7, "the app's own value wins");
    assert_eq!(l.reads_per_second, 0, "unset everywhere: unlimited");
    let err = Config::from_toml(
        "[plans.free]\n[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\nplan = \"gold\"\n",
        &no_env,
    )
    .expect_err("unknown plan")
    .to_string();
    assert!(
        err.contains("apps[0].plan") && err.contains("free"),
        "{err}"
    );
}

#[test]
fn debug_output_and_errors_hide_secrets() {
    let c = Config::from_toml(
        "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s3cr3t-value\"\n\
         [[apps.webhooks]]\nurl = \"https://hook:h00k-pw@h.example/x\"\n",
        &no_env,
    )
    .expect("valid");
    let shown = format!("{c:?}");
    assert!(shown.contains("\"k\""), "{shown}");
    assert!(
        shown.contains("https://hook:<redacted>@h.example/x"),
        "{shown}"
    );
    for secret in ["s3cr3t-value", "h00k-pw"] {
        assert!(!shown.contains(secret), "{shown}");
    }
    // A URL an error quotes: a webhook's that is refused, a line the parser shows.
    for text in [
        "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\n[[apps.webhooks]]\nurl = \"ftp://u:h00k-pw@h\"",
        "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\nwebhooks = \"https://u:h00k-pw@h\"",
        "apps_url = \"postgres://u:h00k-pw@h/x\"\nbogus = 1",
    ] {
        let error = Config::from_toml(text, &no_env).expect_err(text);
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains("h00k-pw"), "{shown}");
    }
}

#[test]
fn the_linger_of_an_early_answer_is_bounded_in_time_and_bytes() {
    let d = Config::default();
    assert_eq!(d.net.linger_timeout, Duration::from_secs(5));
    assert_eq!(d.net.linger_max_bytes, 64 * 1024 * 1024);
    let c = Config::from_toml(
        "http_linger_timeout = 0\nhttp_linger_max_bytes = 1024",
        &no_env,
    )
    .expect("valid");
    assert_eq!(c.net.linger_timeout, Duration::ZERO, "0: no drain");
    assert_eq!(c.net.linger_max_bytes, 1024);
    assert_eq!(
        d.restart_fields(&c),
        ["http_linger_timeout", "http_linger_max_bytes"]
    );
    let error = Config::from_toml("http_linger_timeout = 3601", &no_env)
        .expect_err("over an hour")
        .to_string();
    assert!(error.contains("http_linger_timeout"), "{error}");
}

#[test]
fn durations_have_a_sane_maximum() {
    for (toml, field) in [
        ("activity_timeout = 100000", "activity_timeout"),
        ("http_header_timeout = 0", "http_header_timeout"),
        ("http_idle_timeout = 99999999", "http_idle_timeout"),
        (
            "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\ncache_ttl = 9223372036854775807",
            "apps[0].cache_ttl",
        ),
        (
            "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\nuser_authentication_timeout = 9223372036854775807",
            "apps[0].user_authentication_timeout",
        ),
        ("trusted_proxies = [\"10.0.0.0/33\"]", "trusted_proxies[0]"),
    ] {
        let error = Config::from_toml(toml, &no_env)
            .expect_err(toml)
            .to_string();
        assert!(error.contains(field), "{toml}: {error}");
    }
    let c = Config::from_toml(
        "trusted_proxies = [\"10.0.0.0/8\", \"::1\"]\nmax_connections_per_ip = 50\n\
         max_connections_per_ip_v6_prefix = 56",
        &no_env,
    )
    .expect("valid");
    assert_eq!(c.net.trusted_proxies.len(), 2);
    assert_eq!(c.net.max_connections_per_ip, 50);
    assert_eq!(c.net.per_ip_v6_prefix, 56);
    assert_eq!(
        Config::default().restart_fields(&c),
        [
            "max_connections_per_ip",
            "max_connections_per_ip_v6_prefix",
            "trusted_proxies"
        ]
    );
    for bad in ["0", "129"] {
        let text = format!("max_connections_per_ip_v6_prefix = {bad}");
        let error = Config::from_toml(&text, &no_env)
            .expect_err(&text)
            .to_string();
        assert!(
            error.contains("max_connections_per_ip_v6_prefix"),
            "{error}"
        );
    }
}

#[test]
fn a_reload_names_each_server_setting_it_changes_and_never_the_apps() {
    let app = "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\n";
    let running = Config::from_toml(&format!("port = 7000\n{app}"), &no_env).expect("valid");
    let same = Config::from_toml(
        &format!(
            "port = 7000\n{}max_connections = 3\n",
            app.replace("\"s\"", "\"s2\"")
        ),
        &no_env,
    )
    .expect("valid");
    assert!(running.restart_fields(&same).is_empty(), "apps reload");
    let new = Config::from_toml(
        &format!("port = 7001\nhttp_idle_timeout = 5\npid_file = \"/run/herald.pid\"\n{app}"),
        &no_env,
    )
    .expect("valid");
    assert_eq!(
        running.restart_fields(&new),
        ["port", "http_idle_timeout", "pid_file"]
    );
    let error = Config::from_toml("pid_file = \"\"", &no_env)
        .expect_err("empty")
        .to_string();
    assert!(error.contains("pid_file"), "{error}");
}

#[test]
fn admin_tokens_hosts_and_tls_files_are_checked_and_the_tokens_reload() {
    for (toml, field) in [
        ("metrics_token = \"short\"\n", "metrics_token"),
        ("admin_token = \"has space 0123456789\"\n", "admin_token"),
        ("admin_token = \"semi;colon-0123456789\"\n", "admin_token"),
        (
            "admin_token = \"same-token-0123456789\"\nmetrics_token = \"same-token-0123456789\"\n",
            "metrics_token",
        ),
        (
            "admin_allowed_hosts = [\"https://x.example\"]\n",
            "admin_allowed_hosts",
        ),
        ("admin_allowed_hosts = [\"\"]\n", "admin_allowed_hosts"),
        ("admin_tls_cert = \"/x.pem\"\n", "admin_tls_key"),
        ("admin_tls_key = \"/x.pem\"\n", "admin_tls_cert"),
    ] {
        let error = Config::from_toml(toml, &no_env)
            .expect_err(toml)
            .to_string();
        assert!(error.contains(field), "{toml}: {error}");
    }
    let env = |k: &str| (k == "HERALD_METRICS_TOKEN").then(|| "env-metrics-0123456789".to_owned());
    let c = Config::from_toml("admin_token = \"admin-token-0123456789\"\n", &env).expect("valid");
    assert_eq!(
        c.admin.metrics_token.as_deref(),
        Some("env-metrics-0123456789")
    );
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("env-metrics") && !shown.contains("admin-token-0"),
        "{shown}"
    );
    // The tokens and hosts change with a reload; serving TLS or not needs a restart.
    let rotated = Config::from_toml(
        "admin_token = \"other-token-0123456789\"\nmetrics_token = \"other-metrics-0123456789\"\n\
         admin_allowed_hosts = [\"x.example\"]\n",
        &no_env,
    )
    .expect("valid");
    assert!(c.restart_fields(&rotated).is_empty());
}

#[test]
fn tls_takes_both_files_from_the_file_or_the_environment() {
    use crate::tls::tests::{issue, temp_dir, write};
    let dir = temp_dir("config");
    let (_, cert, key) = issue("config");
    let cert = write(&dir, "cert.pem", &cert);
    let key = write(&dir, "key.pem", &key);
    let lines = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let c = Config::from_toml(&lines, &no_env).expect("valid");
    assert_eq!(
        c.tls,
        Some(TlsConfig {
            cert: cert.clone(),
            key: key.clone()
        })
    );
    assert_eq!(Config::from_toml("", &no_env).expect("valid").tls, None);
    let env = |k: &str| match k {
        "HERALD_TLS_CERT" => Some(cert.display().to_string()),
        "HERALD_TLS_KEY" => Some(key.display().to_string()),
        _ => None,
    };
    let c = Config::from_toml("", &env).expect("valid");
    assert_eq!(c.tls.map(|t| t.key), Some(key.clone()));
    // The environment wins, and its file is checked too.
    let missing = dir.join("missing.pem");
    let env = |k: &str| (k == "HERALD_TLS_KEY").then(|| missing.display().to_string());
    let error = Config::from_toml(&lines, &env).expect_err("missing key");
    assert!(
        error.to_string().contains(&missing.display().to_string()),
        "{error}"
    );
    for (text, field) in [
        (format!("tls_cert = \"{}\"", cert.display()), "tls_key"),
        (format!("tls_key = \"{}\"", key.display()), "tls_cert"),
    ] {
        let error = Config::from_toml(&text, &no_env)
            .expect_err(field)
            .to_string();
        assert!(error.contains(field), "{text}: {error}");
    }
}

#[test]
fn environment_overrides_the_file() {
    let env = |k: &str| match k {
        "HERALD_PORT" => Some("7001".to_owned()),
        "HERALD_APP_KEY" => Some("k2".to_owned()),
        _ => None,
    };
    let c = Config::from_toml("port = 7000", &env).expect("valid");
    assert_eq!(c.server.port, 7001);
    assert_eq!(c.apps[0].key, "k2");
    let bad = |k: &str| (k == "HERALD_PORT").then(|| "port".to_owned());
    let err = Config::from_toml("", &bad)
        .expect_err("bad port")
        .to_string();
    assert!(err.contains("HERALD_PORT"), "{err}");
}

#[test]
fn apps_url_takes_the_apps_out_of_the_file() {
    let c = Config::from_toml(
        "apps_url = \"postgres://herald:pw@db:5432/herald\"\n[plans.pro]\nmax_connections = 9\n",
        &no_env,
    )
    .expect("valid");
    let url = c.apps_url.as_ref().expect("an apps_url");
    assert!(c.apps.is_empty(), "no embedded default app");
    assert!(!c.uses_default_credentials());
    assert_eq!(c.plans.names(), ["pro"]);
    assert!(
        !format!("{c:?}").contains("pw"),
        "the password stays out of Debug"
    );
    assert_eq!(
        url.redacted(),
        "postgres://herald:<redacted>@db:5432/herald"
    );

    let env = |k: &str| (k == "HERALD_APPS_URL").then(|| "mariadb://root@127.0.0.1/h".to_owned());
    let c = Config::from_toml("", &env).expect("valid");
    assert_eq!(
        c.apps_url.expect("from the environment").redacted(),
        "mariadb://root@127.0.0.1/h"
    );

    let err = Config::from_toml(
        "apps_url = \"mysql://root@127.0.0.1/h\"\n[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\n",
        &no_env,
    )
    .expect_err("both")
    .to_string();
    assert!(
        err.contains("apps_url") && err.contains("herald apps import"),
        "{err}"
    );
    let err = Config::from_toml("apps_url = \"sqlite://x\"\n", &no_env)
        .expect_err("no such store")
        .to_string();
    assert!(err.contains("`apps_url`"), "{err}");
    let running = Config::from_toml("apps_url = \"mysql://a@h/x\"\n", &no_env).expect("valid");
    let moved = Config::from_toml("apps_url = \"mysql://a@h/y\"\n", &no_env).expect("valid");
    assert_eq!(running.restart_fields(&moved), ["apps_url"]);
}

#[test]
fn the_config_files_own_apps_reach_any_address() {
    let no_env = |_: &str| None;
    let config = Config::from_toml(
        "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\n\
         [[apps.webhooks]]\nurl = \"http://169.254.169.254/latest\"\n",
        &no_env,
    )
    .expect("the operator's own webhook");
    assert_eq!(config.apps[0].webhooks[0].reach, WebhookReach::Anywhere);
    let error = Config::from_toml(
        "webhook_allowed_networks = [\"10.0.0.0/8\", \"10.0.0.0/33\"]",
        &no_env,
    )
    .expect_err("not a network")
    .to_string();
    assert!(error.contains("webhook_allowed_networks[1]"), "{error}");
}

proptest::proptest! {
    /// Whatever the file holds, its error is told without a panic.
    #[test]
    fn any_text_is_told_without_panicking(text in "[a-z_\\[\\]=\"' .\r\n\t0-9é-]{0,80}") {
        let no_env = |_: &str| None;
        let _ = Config::from_toml(&text, &no_env).map_err(|e| e.to_string());
    }
}
