//! The keys of an app (`[[apps]]`), a plan (`[plans.NAME]`) and a webhook
//! (`[[apps.webhooks]]`) as the reference lists them. An app's keys are read by serde
//! (`fields.rs`), so this list is held against what serde knows in a test rather than
//! generated.

use crate::config::declare::{Applies, Section, Setting};

/// One documented key: its name, default and doc.
type Key = (&'static str, &'static str, &'static str);

const APP: &[Key] = &[
    ("id", "required", "The id in HTTP API paths: letters, digits, `-` and `_`."),
    ("key", "required", "The public key clients connect with."),
    ("secret", "required", "The secret every signature is keyed with; never shown."),
    ("enabled", "true", "A disabled app refuses connections (4003) and API calls (403)."),
    ("plan", "none", "The `[plans.NAME]` its limits start from; its own keys win over the plan's."),
    ("max_connections", "0", "Simultaneous connections; `0` means unlimited."),
    ("max_subscriptions_per_connection", "1000", "Channels one connection may be subscribed to at once."),
    ("max_event_data_bytes", "102400", "Largest `data` of an HTTP-triggered event, in bytes (413 above it)."),
    ("max_channels_per_trigger", "100", "Channels one trigger may name."),
    ("max_events_per_batch", "10", "Events one batch may hold."),
    ("max_channel_name_length", "200", "Longest channel name accepted on subscribe and trigger."),
    ("client_events", "true", "Whether clients may send `client-` events."),
    ("client_events_per_second", "10", "Client events each connection may send per second."),
    ("max_presence_members", "100", "Distinct users per presence channel."),
    ("max_presence_user_id_length", "128", "Longest presence `user_id`, in characters."),
    ("max_presence_user_info_bytes", "1024", "Largest presence `user_info`, in bytes of JSON."),
    ("publishes_per_second", "0", "HTTP API publishes (events, batches, terminations) per second; 0 is unlimited."),
    ("reads_per_second", "0", "HTTP API reads (channel queries) per second; 0 is unlimited."),
    ("messages_per_day", "0", "Messages per UTC day (one per event per channel plus one per delivery); 0 is unlimited. Over it, publishes answer 403."),
    ("terminate_close_code", "4009", "Close code for sockets closed by `terminate_connections`: 4009 tells pusher-js not to reconnect; a 42xx code lets it reconnect and sign in again."),
    ("user_authentication_timeout", "0", "Seconds a connection may stay without signing in (or subscribing to a private or presence channel) before it is closed with 4009; 0 disables the rule."),
    ("cache_ttl", "1800", "Seconds a cache channel keeps its last event."),
    ("subscription_count", "false", "Send `pusher_internal:subscription_count` to subscribers of non-presence channels when their count changes."),
    ("history_max_events", "0", "Events each channel keeps for the history API; 0 keeps no history."),
    ("history_max_age", "600", "Seconds a kept event is kept."),
    ("history_max_bytes", "65536", "Bytes of frames each channel keeps."),
    ("recovery_window", "120", "Seconds what an uncleanly ended connection was subscribed to is remembered for its identity's next connection; 0 turns recovery off. Recovery also needs history."),
    ("webhooks", "none", "The app's webhook endpoints (`[[apps.webhooks]]`)."),
];

const PLAN: &[Key] = &[
    (
        "publishes_per_second",
        "0",
        "As the app key: the plan's apps' default.",
    ),
    (
        "reads_per_second",
        "0",
        "As the app key: the plan's apps' default.",
    ),
    (
        "messages_per_day",
        "0",
        "As the app key: the plan's apps' default.",
    ),
    (
        "max_connections",
        "0",
        "As the app key: the plan's apps' default.",
    ),
    (
        "client_events_per_second",
        "10",
        "As the app key: the plan's apps' default.",
    ),
];

const WEBHOOK: &[Key] = &[
    (
        "url",
        "required",
        "Where events are POSTed (http or https).",
    ),
    (
        "event_types",
        "all",
        "Event names this endpoint receives; empty means all.",
    ),
    (
        "channel_prefix",
        "none",
        "Only events on channels starting with this prefix.",
    ),
];

fn section(title: &'static str, keys: &[Key]) -> Section {
    Section {
        title,
        settings: keys
            .iter()
            .map(|&(key, default, doc)| Setting {
                key,
                env: None,
                default: default.to_owned(),
                bounds: &[],
                applies: Applies::Reload,
                doc,
            })
            .collect(),
    }
}

/// The keys of an app, a plan and a webhook, for the reference.
pub fn sections() -> Vec<Section> {
    vec![
        section("An app (`[[apps]]`, or a row of the app store)", APP),
        section("A plan (`[plans.NAME]`)", PLAN),
        section("A webhook (`[[apps.webhooks]]`)", WEBHOOK),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app_config::fields::{RawApp, RawPlan, RawWebhook};

    /// The keys serde knows for `T`: what it lists when refusing an unknown one.
    fn known<T: serde::de::DeserializeOwned>() -> Vec<String> {
        let error = match serde_json::from_str::<T>(r#"{"no such key": 1}"#) {
            Ok(_) => panic!("an unknown key was accepted"),
            Err(error) => error.to_string(),
        };
        let listed = error.split("expected one of ").nth(1).expect("a list");
        let mut keys: Vec<String> = listed
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        keys.sort();
        keys
    }

    fn documented(keys: &[Key]) -> Vec<String> {
        let mut keys: Vec<String> = keys.iter().map(|(k, _, _)| (*k).to_owned()).collect();
        keys.sort();
        keys
    }

    #[test]
    fn the_documented_defaults_are_an_apps_defaults() {
        let app = crate::app_config::AppConfig::embedded_default();
        let l = app.limits;
        let actual = [
            ("enabled", app.enabled.to_string()),
            ("max_connections", l.max_connections.to_string()),
            (
                "max_subscriptions_per_connection",
                l.max_subscriptions_per_connection.to_string(),
            ),
            ("max_event_data_bytes", l.max_event_data_bytes.to_string()),
            (
                "max_channels_per_trigger",
                l.max_channels_per_trigger.to_string(),
            ),
            ("max_events_per_batch", l.max_events_per_batch.to_string()),
            (
                "max_channel_name_length",
                l.max_channel_name_length.to_string(),
            ),
            ("client_events", l.client_events.to_string()),
            (
                "client_events_per_second",
                l.client_events_per_second.to_string(),
            ),
            ("max_presence_members", l.max_presence_members.to_string()),
            (
                "max_presence_user_id_length",
                l.max_presence_user_id_length.to_string(),
            ),
            (
                "max_presence_user_info_bytes",
                l.max_presence_user_info_bytes.to_string(),
            ),
            ("publishes_per_second", l.publishes_per_second.to_string()),
            ("reads_per_second", l.reads_per_second.to_string()),
            ("messages_per_day", l.messages_per_day.to_string()),
            ("terminate_close_code", app.terminate_close_code.to_string()),
            (
                "user_authentication_timeout",
                app.user_authentication_timeout.to_string(),
            ),
            ("cache_ttl", app.cache_ttl.as_secs().to_string()),
            ("subscription_count", app.subscription_count.to_string()),
            ("history_max_events", app.history.max_events.to_string()),
            ("history_max_age", app.history.max_age.as_secs().to_string()),
            ("history_max_bytes", app.history.max_bytes.to_string()),
            ("recovery_window", app.recovery_window.as_secs().to_string()),
        ];
        for (key, value) in actual {
            let (_, shown, _) = APP.iter().find(|(k, _, _)| *k == key).expect(key);
            assert_eq!(*shown, value, "{key}");
        }
    }

    #[test]
    fn every_key_an_app_a_plan_or_a_webhook_takes_is_documented() {
        assert_eq!(known::<RawApp>(), documented(APP));
        assert_eq!(known::<RawPlan>(), documented(PLAN));
        assert_eq!(known::<RawWebhook>(), documented(WEBHOOK));
    }
}
