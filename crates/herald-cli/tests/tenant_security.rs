//! What a tenant can reach and what the output shows of it, against the real binary (and a
//! real PostgreSQL for apps in a database): a webhook URL's password never shows, in the
//! node's debug log, `herald apps` or `/metrics`.

mod support;

use std::time::Duration;

use support::db::{eventually, herald_apps, logged, migrate, node_config, TestDb};
use support::Server;

/// A webhook password, which must never be shown.
const PW: &str = "t3nant-h00k-pw";

/// What the node logs once for each distinct bad state of a row.
const INVALID: &str = "An app in the database is not valid";

/// `/metrics` of the node's admin listener, as text.
async fn metrics(server: &Server) -> String {
    reqwest::get(format!("http://{}/metrics", server.admin))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}

#[tokio::test]
async fn a_tenants_webhook_password_never_shows() {
    let db = TestDb::postgres();
    let url = db.url();
    migrate(&url);
    // Refused before it is written: the message names the field, not the password.
    let refused = herald_apps(
        &url,
        None,
        &[
            "add",
            "--id",
            "1",
            "--key",
            "k1",
            "--webhook",
            &format!("ftp://hook:{PW}@h.example/x"),
        ],
    );
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(refused.stderr.contains("`webhooks[0].url`"), "{refused:?}");
    assert!(!format!("{refused:?}").contains(PW), "{refused:?}");

    // Written by hand: rows that are not valid apps, whose reason quotes a URL.
    for (id, settings) in [
        (
            "2",
            format!(r#"{{"webhooks":[{{"url":"ftp://hook:{PW}@h.example/x"}}]}}"#),
        ),
        (
            "3",
            format!(r#"{{"webhooks":"https://hook:{PW}@h.example/x"}}"#),
        ),
    ] {
        db.sql(&format!(
            "INSERT INTO herald_apps (id, key, secret, settings) \
             VALUES ('{id}', 'k{id}', 's{id}', '{settings}')"
        ));
    }
    let server = Server::start_logged(&node_config(&url), &[("RUST_LOG", "debug")]);
    eventually("both rows logged", Duration::from_secs(5), async || {
        logged(&server, INVALID) >= 2
    })
    .await;
    let list = herald_apps(&url, None, &["list"]);
    assert_eq!(list.code, 0, "{list:?}");
    assert_eq!(
        list.stdout.matches("invalid: `webhooks").count(),
        2,
        "{list:?}"
    );
    let shown = [server.log(), format!("{list:?}"), metrics(&server).await];
    for text in shown {
        assert!(!text.contains(PW), "the password shows:\n{text}");
    }
}
