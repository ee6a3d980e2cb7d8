//! Laravel Reverb's app, from the `REVERB_*` variables its `config/reverb.php` reads
//! (`REVERB_APP_ID`, `_KEY`, `_SECRET` and the app's options). Reverb's config provider
//! builds one app from them; more apps live in PHP, which this does not read.

use serde_json::json;

use super::mapping::{credentials, Imported, Note};
use super::Env;

/// The variables `reverb.php` reads that Herald has no per-app setting for, and why.
const UNMAPPED: &[(&str, &str)] = &[
    ("REVERB_APP_PING_INTERVAL", "server-wide in Herald: `activity_timeout` (120 s) is the silence after which it pings"),
    ("REVERB_APP_ACTIVITY_TIMEOUT", "server-wide in Herald: `activity_timeout`, sent to clients, and `pong_timeout`"),
    ("REVERB_APP_MAX_MESSAGE_SIZE", "server-wide in Herald: `max_message_bytes` (65536)"),
    ("REVERB_APP_RATE_LIMITING_ENABLED", "Herald limits client events per connection (`client_events_per_second`), not every message"),
    ("REVERB_APP_RATE_LIMIT_MAX_ATTEMPTS", "Herald limits client events per connection (`client_events_per_second`), not every message"),
    ("REVERB_APP_RATE_LIMIT_DECAY_SECONDS", "Herald limits client events per connection (`client_events_per_second`), not every message"),
    ("REVERB_APP_RATE_LIMIT_TERMINATE", "Herald keeps a socket open over the client event limit (pusher:error 4301)"),
    ("REVERB_HOST", "where your Laravel app and Echo reach Reverb: point them at Herald's host and port"),
    ("REVERB_PORT", "where your Laravel app and Echo reach Reverb: point them at Herald's host and port"),
    ("REVERB_SCHEME", "where your Laravel app and Echo reach Reverb: point them at Herald's host and port"),
];

/// The variables that become the app's settings.
const MAPPED: [&str; 5] = [
    "REVERB_APP_ID",
    "REVERB_APP_KEY",
    "REVERB_APP_SECRET",
    "REVERB_APP_MAX_CONNECTIONS",
    "REVERB_APP_ACCEPT_CLIENT_EVENTS_FROM",
];

/// The app the variables describe.
pub(super) fn from_env(env: &Env) -> Result<(Vec<Imported>, Vec<Note>), String> {
    let mut fields = credentials(
        env,
        ["REVERB_APP_ID", "REVERB_APP_KEY", "REVERB_APP_SECRET"],
    )?;
    let mut notes = Vec::new();
    if let Some(max) = env
        .get("REVERB_APP_MAX_CONNECTIONS")
        .filter(|v| !v.is_empty())
    {
        let n: u64 = max
            .trim()
            .parse()
            .map_err(|_| format!("REVERB_APP_MAX_CONNECTIONS is not a number: '{max}'"))?;
        if n == 0 {
            notes.push(Note::new(
                "REVERB_APP_MAX_CONNECTIONS = 0",
                "Reverb refuses every connection at 0, Herald's 0 is no limit: disable the app or set `max_connections`",
            ));
        } else {
            fields.insert("max_connections".into(), json!(n));
        }
    }
    // Reverb's default is `members`, which is what Herald does (Pusher's rule).
    match env.get("REVERB_APP_ACCEPT_CLIENT_EVENTS_FROM").map(str::trim) {
        None | Some("" | "members") => {}
        Some("all") => notes.push(Note::new(
            "REVERB_APP_ACCEPT_CLIENT_EVENTS_FROM = all",
            "Herald takes client events only from members of the private or presence channel (Reverb's `members`)",
        )),
        Some("none") => {
            fields.insert("client_events".into(), false.into());
        }
        Some(other) => {
            return Err(format!(
                "REVERB_APP_ACCEPT_CLIENT_EVENTS_FROM is '{other}', not all, members or none"
            ))
        }
    }
    for (name, why) in UNMAPPED {
        if let Some(value) = env.get(name).filter(|v| !v.is_empty()) {
            notes.push(Note::new(format!("{name} = {value}"), *why));
        }
    }
    let mut server = Vec::new();
    for (name, _) in env.iter() {
        let known = UNMAPPED.iter().any(|(n, _)| *n == name) || MAPPED.contains(&name);
        if name.starts_with("REVERB_") && !known {
            server.push(Note::new(
                name,
                "a Reverb server setting, not an app's (docs/migrating.md, \"Coming from Reverb\", names Herald's)",
            ));
        }
    }
    Ok((vec![Imported { fields, notes }], server))
}
