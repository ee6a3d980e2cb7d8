//! What the state view adds for each app beside its channels: its counters, which the page
//! samples at each poll to draw its rates, its settings (limits and webhook endpoints) and
//! its webhook queue (the page's retry buttons call the admin API's queue routes).
//!
//! The rates' history is the page's, not the node's: the node keeps no samples, so an app
//! costs nothing more with the console closed, and a node with thousands of apps keeps no
//! ring per app that nobody reads. The price is that a tab's charts start when it opens.

use std::sync::atomic::Ordering;

use serde_json::{json, Map, Value};

use crate::app_config::AppConfig;
use crate::metrics::{AppMetrics, WebhookOutcome};
use crate::redact::redact_url;
use crate::webhooks::reach::WebhookConfig;

/// Webhook endpoints listed in one answer, across every app (an app may name any number).
pub(crate) const MAX_WEBHOOKS: usize = 100;
/// Longest webhook URL or channel prefix shown, in bytes; longer ones are cut and marked.
pub(crate) const MAX_TEXT_BYTES: usize = 512;
/// Dead letters listed per app (the oldest; `herald webhooks list` pages through all).
pub(crate) const MAX_DEAD_LETTERS: usize = 20;

/// The app's webhook queue: its gauges and its oldest dead letters (no bodies), or `None`
/// when it has no webhooks. The oldest batch's time, not its age, so a quiet queue keeps
/// the view unchanged between polls.
pub(crate) async fn queue(webhooks: Option<&crate::webhooks::Webhooks>) -> Option<Value> {
    let webhooks = webhooks?;
    let depth = webhooks.depth();
    let which = crate::webhooks::Which {
        endpoint: None,
        state: Some(crate::webhooks::State::Dead),
    };
    let dead_letters = match webhooks.list(which, None, MAX_DEAD_LETTERS).await {
        Ok(page) => serde_json::to_value(page.batches).unwrap_or_default(),
        Err(_) => Value::Null,
    };
    Some(json!({
        "pending": depth.pending,
        "oldest_pending_ms": depth.oldest_pending_ms,
        "dead": depth.dead,
        "bytes": depth.bytes,
        "dead_letters": dead_letters,
    }))
}

/// The app's counters on this node, read at one instant, as running totals: the page
/// turns two polls' totals into a rate. Connections are a gauge, read from the hub.
pub(crate) fn counters(metrics: &AppMetrics, connections: usize) -> Value {
    let load = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed);
    let mut by_limit = Map::new();
    let mut refusals = 0;
    for (limit, n) in metrics.refusals() {
        refusals += n;
        if n > 0 {
            by_limit.insert(limit.into(), n.into());
        }
    }
    json!({
        "connections": connections,
        "connections_opened": load(&metrics.connections_opened),
        "ws_messages_received": metrics.messages_received.get(),
        "ws_messages_sent": metrics.messages_sent.get(),
        "api_events_published": load(&metrics.events_published),
        "client_events": load(&metrics.client_events),
        "webhook_attempts": metrics.webhook_count(WebhookOutcome::Attempt),
        "webhook_failures": metrics.webhook_count(WebhookOutcome::Failure),
        "webhook_refused": metrics.webhook_count(WebhookOutcome::Refused),
        "webhook_dropped": metrics.webhook_count(WebhookOutcome::Drop),
        "refusals": refusals,
        "refusals_by_limit": by_limit,
    })
}

/// The app's limits and at most `room` of its webhook endpoints (URLs without their
/// credentials, never the secret); the flag is false when endpoints or text were cut.
pub(crate) fn settings(config: &AppConfig, room: &mut usize) -> (Value, bool) {
    let l = &config.limits;
    let limits = json!({
        "max_connections": l.max_connections,
        "max_subscriptions_per_connection": l.max_subscriptions_per_connection,
        "max_event_data_bytes": l.max_event_data_bytes,
        "max_channels_per_trigger": l.max_channels_per_trigger,
        "max_events_per_batch": l.max_events_per_batch,
        "max_channel_name_length": l.max_channel_name_length,
        "client_events": l.client_events,
        "client_events_per_second": l.client_events_per_second,
        "max_presence_members": l.max_presence_members,
        "max_presence_user_id_length": l.max_presence_user_id_length,
        "max_presence_user_info_bytes": l.max_presence_user_info_bytes,
        "publishes_per_second": l.publishes_per_second,
        "reads_per_second": l.reads_per_second,
        "messages_per_day": l.messages_per_day,
        "cache_ttl": config.cache_ttl.as_secs(),
        "user_authentication_timeout": config.user_authentication_timeout,
        "terminate_close_code": config.terminate_close_code,
        "subscription_count": config.subscription_count,
    });
    let mut whole = config.webhooks.len() <= *room;
    let shown: Vec<Value> = config
        .webhooks
        .iter()
        .take(*room)
        .map(|hook| {
            let (shown, all) = webhook(hook);
            whole &= all;
            shown
        })
        .collect();
    *room -= shown.len();
    let view = json!({
        "limits": limits,
        "webhook_count": config.webhooks.len(),
        "webhooks": shown,
    });
    (view, whole)
}

fn webhook(hook: &WebhookConfig) -> (Value, bool) {
    let (url, url_whole) = capped(redact_url(&hook.url));
    let (prefix, prefix_whole) = match &hook.channel_prefix {
        Some(prefix) => {
            let (prefix, whole) = capped(prefix.clone());
            (Some(prefix), whole)
        }
        None => (None, true),
    };
    // Validated names, but a list may repeat one: shown once each.
    let mut events = hook.event_types.clone();
    events.sort();
    events.dedup();
    let shown = json!({
        "url": url,
        "event_types": events,
        "channel_prefix": prefix,
    });
    (shown, url_whole && prefix_whole)
}

/// `text` cut to [`MAX_TEXT_BYTES`] at a character boundary, with `…` when cut.
fn capped(mut text: String) -> (String, bool) {
    if text.len() <= MAX_TEXT_BYTES {
        return (text, true);
    }
    let mut end = MAX_TEXT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    (text, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhooks::WebhookReach;

    fn app_with(hooks: usize, url: &str) -> AppConfig {
        let mut app = crate::settings::Config::default().apps.remove(0);
        app.limits.max_connections = 50;
        app.webhooks = (0..hooks)
            .map(|_| WebhookConfig {
                url: url.to_owned(),
                event_types: vec!["channel_vacated".into(), "channel_vacated".into()],
                channel_prefix: Some("é".repeat(MAX_TEXT_BYTES)),
                reach: WebhookReach::Anywhere,
            })
            .collect();
        app
    }

    #[test]
    fn settings_show_limits_and_endpoints_without_credentials_within_the_room() {
        let app = app_with(3, "https://hook-user:hunter2@example.com/hook");
        let mut room = 2;
        let (view, whole) = settings(&app, &mut room);
        assert!(!whole, "one endpoint and the long prefixes were left out");
        assert_eq!(room, 0);
        assert_eq!(view["limits"]["max_connections"], 50);
        assert_eq!(view["webhook_count"], 3);
        let hooks = view["webhooks"].as_array().expect("a list");
        assert_eq!(hooks.len(), 2);
        assert_eq!(
            hooks[0]["url"],
            "https://hook-user:<redacted>@example.com/hook"
        );
        assert_eq!(hooks[0]["event_types"], json!(["channel_vacated"]));
        let prefix = hooks[0]["channel_prefix"].as_str().expect("text");
        assert!(prefix.len() <= MAX_TEXT_BYTES + '…'.len_utf8() && prefix.ends_with('…'));
        assert!(!view.to_string().contains("hunter2"));
        assert!(!view.to_string().contains(&app.secret));
    }

    #[test]
    fn counters_are_running_totals_with_refusals_summed() {
        let metrics = AppMetrics::default();
        metrics.refused(crate::metrics::Limit::PublishRate, "1", None);
        metrics.refused(crate::metrics::Limit::PublishRate, "1", None);
        metrics.refused(crate::metrics::Limit::Connections, "1", None);
        metrics.webhook(WebhookOutcome::Attempt, 4);
        metrics.messages_sent.add(7);
        let c = counters(&metrics, 2);
        assert_eq!(c["connections"], 2);
        assert_eq!(c["refusals"], 3);
        assert_eq!(
            c["refusals_by_limit"],
            json!({"publish_rate": 2, "connections": 1})
        );
        assert_eq!(c["webhook_attempts"], 4);
        assert_eq!(c["ws_messages_sent"], 7);
    }
}
