//! Credentials kept out of what Herald shows: URLs (the cluster's, the app database's, a
//! webhook's) with their passwords masked, and text or JSON that may hold such a URL (an
//! app row's settings, a parser's message that quotes a value).
//!
//! URLs are read by the `url` crate, the parser the webhook, database and cluster clients
//! connect with, so what is masked is what they would send as credentials. Text that does not parse
//! as a URL but could hold credentials (it has an `@`) is masked after its scheme.

use url::{Position, Url};

/// What `Debug` output, logs and messages show in place of a secret.
pub(crate) const REDACTED: &str = "<redacted>";

/// `url` with its credentials masked, for logs, `Debug` and error messages: a password
/// becomes `<redacted>` (the user name stays), and a user name with no password is masked
/// whole (a receiver's token is often given that way: `https://TOKEN@host/`). Text with no
/// `@` cannot hold credentials and comes back as it is. Any other `@` may end credentials
/// the parser read as something else (a password holding a `/`, `?` or `#`, or one that
/// starts with digits and reads as a port), so a URL that does not parse, whose `@` the
/// parser did not take as the end of its credentials, or that has a second `@`, is reduced
/// to its scheme (`https://<redacted>`), or masked whole.
pub fn redact_url(url: &str) -> String {
    if !url.contains('@') {
        return url.to_owned();
    }
    let Ok(parsed) = Url::parse(url.trim()) else {
        return scheme_only(url);
    };
    let (user, password) = (parsed.username(), parsed.password());
    let rest = &parsed[Position::BeforeHost..];
    if (user.is_empty() && password.is_none()) || rest.contains('@') {
        return scheme_only(url);
    }
    let userinfo = match password {
        Some(_) => format!("{user}:{REDACTED}"),
        None => REDACTED.to_owned(),
    };
    format!("{}://{userinfo}@{rest}", parsed.scheme())
}

/// `scheme://<redacted>` when `text` starts with a scheme, else `<redacted>`.
fn scheme_only(text: &str) -> String {
    let text = text.trim();
    match text.split_once("://") {
        Some((scheme, _))
            if scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
        {
            format!("{scheme}://{REDACTED}")
        }
        _ => REDACTED.to_owned(),
    }
}

/// `text` with every word that may hold credentials (it has an `@`) passed through
/// [`redact_url`]; words end at white space and quotes. For messages that quote a value
/// someone else wrote: a parser's "invalid type: string \"https://u:pw@h\"", a row's
/// setting named by its key.
pub(crate) fn redact_text(text: &str) -> String {
    if !text.contains('@') {
        return text.to_owned();
    }
    let separator = |c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(|c: char| !separator(c)) {
        out.push_str(&rest[..start]);
        let word = &rest[start..];
        let end = word.find(separator).unwrap_or(word.len());
        let (word, after) = word.split_at(end);
        if word.contains('@') {
            out.push_str(&redact_url(word));
        } else {
            out.push_str(word);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// `value` with every string that may hold credentials passed through [`redact_url`], at
/// any depth: for `Debug` of an app row's settings, whose webhook URLs (or a mistyped key's
/// value) may carry a password.
pub(crate) fn redact_json(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) if s.contains('@') => Value::String(redact_url(s)),
        Value::Array(items) => Value::Array(items.iter().map(redact_json).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (redact_text(k), redact_json(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_masked_whatever_it_holds() {
        for (url, shown) in [
            ("postgres://:pw@h:1/0", "postgres://:<redacted>@h:1/0"),
            ("mysql://u:pw@h", "mysql://u:<redacted>@h"),
            ("https://u:pw@h/x?q=1#f", "https://u:<redacted>@h/x?q=1#f"),
            // An `@` in a password: the last `@` of the authority ends the credentials.
            ("https://u:p@ss@h/x", "https://u:<redacted>@h/x"),
            ("amqp://u:p%40ss@h:5672/0", "amqp://u:<redacted>@h:5672/0"),
            // A `/`, `?` or `#` in a password ends the authority early: no parse ...
            ("postgres://u:pa/ss@db/x", "postgres://<redacted>"),
            ("postgres://u:pa?ss@db/x", "postgres://<redacted>"),
            ("postgres://u:pa#ss@db/x", "postgres://<redacted>"),
            // ... or a port and a path, query or fragment, or a host and a path.
            ("amqp://u:1234/ss@h/0", "amqp://<redacted>"),
            ("amqp://u:1234?ss@h", "amqp://<redacted>"),
            ("amqp://u:1234#ss@h", "amqp://<redacted>"),
            ("https://u:/pass@h/", "https://<redacted>"),
            ("https://tok/en@h/", "https://<redacted>"),
            ("https://u:p@h/x@y", "https://<redacted>"),
            // A user with no password may be a token.
            ("https://t0ken@h/hook", "https://<redacted>@h/hook"),
            ("https://u:@h/", "https://<redacted>@h/"),
            // An `@` that cannot be told from credentials: masked too.
            ("https://h/0?email=a@b", "https://<redacted>"),
            // No `@`: no credentials.
            ("https://h:1/0", "https://h:1/0"),
            ("unix:///tmp/r.sock", "unix:///tmp/r.sock"),
            ("not a url", "not a url"),
            // Credentials in what does not parse, or has no authority: masked.
            ("u:pw@h", "<redacted>"),
            ("http://u:pw@[::1", "http://<redacted>"),
            ("see http://u:pw@h", "<redacted>"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn text_and_json_are_masked_word_by_word() {
        assert_eq!(
            redact_text(r#"invalid type: string "ftp://u:pw@h/x", expected a sequence"#),
            r#"invalid type: string "ftp://u:<redacted>@h/x", expected a sequence"#
        );
        assert_eq!(
            redact_text("url = 'https://u:pw@h/x' and `k@v`"),
            "url = 'https://u:<redacted>@h/x' and `<redacted>`"
        );
        assert_eq!(redact_text("nothing here"), "nothing here");
        let settings = serde_json::json!({
            "webhooks": [{"url": "https://u:pw@h/x", "event_types": ["member_added"]}],
            "max_connections": 5,
            "webhook": "https://token@h/",
        });
        let shown = redact_json(&settings).to_string();
        assert!(!shown.contains("pw") && !shown.contains("token"), "{shown}");
        assert!(shown.contains("https://u:<redacted>@h/x"), "{shown}");
        assert!(shown.contains("\"max_connections\":5"), "{shown}");
    }

    /// Every type that holds a webhook URL, formatted with one that carries a password, and
    /// the messages that name a bad one: none shows the password.
    #[test]
    fn no_config_or_row_type_shows_a_webhook_password() {
        use crate::app_config::fields::Plans;
        use crate::settings::Config;
        use crate::store::settings::AppsUrl;
        use crate::store::StoredApp;
        const PW: &str = "h00k-pa55";
        let hook = format!("https://hook:{PW}@h.example/x");
        let no_env = |_: &str| None;
        let file = Config::from_toml(
            &format!(
                "admin_token = \"{PW}-{PW}-{PW}\"\n\
                 [[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"{PW}\"\n\
                 [[apps.webhooks]]\nurl = \"{hook}\"\n"
            ),
            &no_env,
        )
        .expect("valid");
        let database = Config::from_toml(
            &format!("apps_url = \"postgres://herald:{PW}@db/herald\"\n"),
            &no_env,
        )
        .expect("valid");
        let app = &file.apps[0];
        let fields = serde_json::json!({
            "id": "2", "key": "k2", "secret": PW, "webhooks": [{"url": hook}],
        });
        let serde_json::Value::Object(fields) = fields else {
            unreachable!()
        };
        let stored = StoredApp::from_fields("", fields, &Plans::default()).expect("valid");
        let mut shown = vec![
            format!("{file:?}"),
            format!("{database:?}"),
            format!("{app:?}"),
            format!("{:?}", app.webhooks),
            format!("{stored:?}"),
            format!(
                "{:?}",
                AppsUrl::parse(&format!("mysql://u:{PW}@h/x")).expect("url")
            ),
        ];
        // Rows that are not valid apps: the reason names the field, never the password.
        for settings in [
            format!(r#"{{"webhooks":[{{"url":"ftp://u:{PW}@h"}}]}}"#),
            format!(r#"{{"webhooks":"https://u:{PW}@h"}}"#),
            format!(r#"{{"webhooks":[{{"url":"https://u:{PW}@h","event_types":"x"}}]}}"#),
            format!(r#"{{"https://u:{PW}@h":1}}"#),
            format!(r#"{{"max_connections":"https://u:{PW}@h"}}"#),
        ] {
            let row = StoredApp::test_row("3", "k3", &settings);
            shown.push(format!("{row:?}"));
            let reason = row.check(&Plans::default()).expect_err(&settings);
            assert!(reason.starts_with('`'), "names the field: {reason}");
            shown.push(reason);
        }
        for text in shown {
            assert!(!text.contains(PW), "{text}");
        }
    }
}
