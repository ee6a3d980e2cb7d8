//! An app of Pusher's hosted service, from the `PUSHER_APP_*` variables Laravel's
//! `config/broadcasting.php` and most Pusher set-ups read (`PUSHER_APP_ID`, `_KEY`,
//! `_SECRET`, `_CLUSTER`). Pusher's own limits live in its dashboard, not in these.

use super::mapping::{credentials, Imported, Note};
use super::Env;

/// The variables that say where the service is, and what to do instead.
const WHERE: &[(&str, &str)] = &[
    ("PUSHER_APP_CLUSTER", "Herald has no clusters to pick: point the clients' host (pusher-js wsHost/wsPort, the server libraries' host/port) at Herald"),
    ("PUSHER_HOST", "point it at Herald's host"),
    ("PUSHER_PORT", "point it at Herald's port (6001 unless `port` says otherwise)"),
    ("PUSHER_SCHEME", "https with Herald's `tls_cert` and `tls_key`, or behind a TLS proxy; http otherwise"),
];

/// The app the variables describe.
pub(super) fn from_env(env: &Env) -> Result<(Vec<Imported>, Vec<Note>), String> {
    let fields = credentials(
        env,
        ["PUSHER_APP_ID", "PUSHER_APP_KEY", "PUSHER_APP_SECRET"],
    )?;
    let mut notes = Vec::new();
    for (name, why) in WHERE {
        if let Some(value) = env.get(name).filter(|v| !v.is_empty()) {
            notes.push(Note::new(format!("{name} = {value}"), *why));
        }
    }
    let mut other = Vec::new();
    for (name, _) in env.iter() {
        let known = ["PUSHER_APP_ID", "PUSHER_APP_KEY", "PUSHER_APP_SECRET"].contains(&name)
            || WHERE.iter().any(|(n, _)| *n == name);
        if name.starts_with("PUSHER_APP_") && !known {
            other.push(Note::new(name, "not an app setting Herald knows"));
        }
    }
    Ok((vec![Imported { fields, notes }], other))
}
