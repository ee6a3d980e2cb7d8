//! The console's state view (`/console/api/state`), bounded in size and in time: a node
//! with a million channels, or a cluster backend that answers slowly, costs one bounded
//! answer per poll, not a reply of tens of megabytes or a handler that never returns.
//!
//! At most [`MAX_CHANNELS`] channels are listed (across apps, by app id and then name),
//! [`MAX_MEMBERS`] members per presence channel and [`MAX_USERS`] signed-in users per app,
//! and the whole answer is collected within [`TIME_BOUND`] (under the cluster backend's own
//! 2 s query timeout, so a backend that stops answering costs the bound, not more). An
//! answer cut by a bound, or missing what the cluster's backend did not answer, says so:
//! `truncated` is true, `truncated_by` says why, and each app gives its full
//! `channel_count` and `user_count`.
//!
//! Each app also gives its counters (read for every app at one instant, `counters_at_ms`,
//! before anything is awaited, so the page's rates compare like with like) and its limits
//! and webhook endpoints, at most [`MAX_WEBHOOKS`](super::app_view::MAX_WEBHOOKS) of them
//! across apps ([`super::app_view`]).

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald_protocol::channel::{is_cache_channel, ChannelKind};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::app_view::{self, MAX_WEBHOOKS};
use crate::shared::Shared;

/// Channels listed in one answer, across every app.
pub(crate) const MAX_CHANNELS: usize = 500;
/// Members listed per presence channel.
pub(crate) const MAX_MEMBERS: usize = 100;
/// Signed-in users listed per app.
pub(crate) const MAX_USERS: usize = 500;
/// How long one answer may take to collect; what is not collected by then is left out.
pub(crate) const TIME_BOUND: Duration = Duration::from_millis(1500);

/// Why the answer is not whole (the first reason met).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cut {
    Size,
    Time,
    /// The cluster's backend answered a query with an error.
    Backend,
}

/// The state as the page shows it.
pub(crate) async fn collect(shared: &Shared) -> Value {
    let deadline = Instant::now() + TIME_BOUND;
    let mut cut = None;
    let mut room = MAX_CHANNELS;
    let mut apps = shared.apps.all();
    apps.sort_by(|a, b| a.id().cmp(b.id()));
    let counters_at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let counters: Vec<Value> = apps
        .iter()
        .map(|app| app_view::counters(&app.metrics, app.connection_count()))
        .collect();
    let mut hooks_room = MAX_WEBHOOKS;
    let mut shown = Vec::with_capacity(apps.len());
    for (app, counters) in apps.into_iter().zip(counters) {
        // In a cluster, the channels and members are the cluster's, as the HTTP API's.
        let listed = tokio::time::timeout_at(deadline, shared.adapter.presence.channels(&app, ""));
        let mut channels = match listed.await {
            Ok(Ok(channels)) => channels,
            Ok(Err(_)) => {
                cut.get_or_insert(Cut::Backend);
                Vec::new()
            }
            Err(_) => {
                cut.get_or_insert(Cut::Time);
                Vec::new()
            }
        };
        // A cache channel nobody is subscribed to still holds its event.
        let occupied: HashSet<String> = channels.iter().map(|(name, _)| name.clone()).collect();
        for cached in app.cache.channels() {
            if !occupied.contains(&cached) {
                channels.push((cached, Default::default()));
            }
        }
        let channel_count = channels.len();
        if channel_count > room {
            cut.get_or_insert(Cut::Size);
            // The first `room` by name, without sorting them all.
            if room > 0 {
                channels.select_nth_unstable_by(room - 1, |a, b| a.0.cmp(&b.0));
            }
            channels.truncate(room);
        }
        room -= channels.len();
        channels.sort_by(|a, b| a.0.cmp(&b.0));
        let mut rows = Vec::with_capacity(channels.len());
        for (name, counts) in channels {
            let members = if ChannelKind::of(&name).is_presence() && cut != Some(Cut::Time) {
                match tokio::time::timeout_at(deadline, members(shared, &app, &name)).await {
                    Ok(Some((members, all))) => {
                        if !all {
                            cut.get_or_insert(Cut::Size);
                        }
                        members
                    }
                    Ok(None) => {
                        cut.get_or_insert(Cut::Backend);
                        Vec::new()
                    }
                    Err(_) => {
                        cut.get_or_insert(Cut::Time);
                        Vec::new()
                    }
                }
            } else {
                Vec::new()
            };
            let cache = is_cache_channel(&name)
                .then(|| app.cache.get(&name))
                .flatten()
                .map(|c| c.data.to_string());
            rows.push(json!({
                "name": name,
                "subscribers": counts.subscription_count,
                "members": members,
                "cache": cache,
            }));
        }
        let mut users = app.users.user_ids();
        let user_count = users.len();
        if user_count > MAX_USERS {
            cut.get_or_insert(Cut::Size);
            users.select_nth_unstable(MAX_USERS - 1);
            users.truncate(MAX_USERS);
        }
        users.sort();
        let config = app.config();
        let (settings, whole) = app_view::settings(&config, &mut hooks_room);
        let webhooks = app.webhooks();
        let queue = tokio::time::timeout_at(deadline, app_view::queue(webhooks.as_deref()));
        let queue = queue.await.unwrap_or_else(|_| {
            cut.get_or_insert(Cut::Time);
            None
        });
        if !whole {
            cut.get_or_insert(Cut::Size);
        }
        shown.push(json!({
            "id": app.id(),
            "key": config.key,
            "enabled": config.enabled,
            "connections": app.connection_count(),
            "channel_count": channel_count,
            "channels": rows,
            "user_count": user_count,
            "users": users,
            "counters": counters,
            "settings": settings,
            "webhook_queue": queue,
        }));
    }
    json!({
        "node_id": shared.node_id,
        "counters_at_ms": counters_at_ms,
        "apps": shown,
        "truncated": cut.is_some(),
        "truncated_by": cut.map(|c| match c {
            Cut::Size => format!(
                "size: at most {MAX_CHANNELS} channels, {MAX_MEMBERS} members a channel, {MAX_USERS} users an app and {MAX_WEBHOOKS} webhook endpoints are listed"
            ),
            Cut::Time => format!(
                "time: what was not collected within {} ms is left out",
                TIME_BOUND.as_millis()
            ),
            Cut::Backend => "backend: the cluster's state did not answer; channels and members are missing".to_owned(),
        }),
    })
}

/// A presence channel's members (at most [`MAX_MEMBERS`]; the flag says whether all are
/// there): the cluster's ids in a cluster (as the HTTP API's users query), with the user
/// info this node knows of them. `None` when the backend answered with an error.
async fn members(shared: &Shared, app: &crate::App, channel: &str) -> Option<(Vec<Value>, bool)> {
    let local = app.hub.local_members(channel);
    let info = |id: &str| {
        local
            .iter()
            .find(|m| &*m.user_id == id)
            .and_then(|m| m.user_info.as_deref())
            .and_then(|i| serde_json::from_str::<Value>(i).ok())
    };
    let ids = shared.adapter.presence.users(app, channel).await.ok()?;
    let all = ids.len() <= MAX_MEMBERS;
    let shown = ids
        .iter()
        .take(MAX_MEMBERS)
        .map(|id| json!({ "user_id": id, "user_info": info(id) }))
        .collect();
    Some((shown, all))
}
