//! What a change of a count means, written once for every backend: a channel's subscribers,
//! a presence member's connections and a user's signed-in connections, each going from
//! `before` to `after` (this node's counts on a single node, the cluster's in a cluster).
//!
//! The rules are pure functions over the two counts ([`edge`], [`channel_events`]); the
//! functions that apply them send the frames through a [`Broker`] and queue the webhooks.
//! The answers a subscription can get from the backend rather than the session (a full
//! presence channel, a busy cluster, a watchlist) are built here too, so each is written once.
//!
//! One difference stays with the backend: a single node's hub pushes `member_added` and
//! `member_removed` to the channel's other subscribers while it holds the channel's lock, so
//! each of them sees the member list change in one order; it then only needs
//! [`member_webhook`]. A cluster node learns of the change from the cluster's count after
//! the lock is gone and sends the frame with [`member_changed`]; while the cluster's state
//! is away it joins members as a single node does, through the same hub call
//! ([`crate::hub::Hub::join_presence`] with [`crate::hub::Roster::Here`]).

use std::sync::Arc;

use herald_protocol::channel::ChannelKind;
use herald_protocol::frame;

use super::Broker;
use crate::apps::App;
use crate::metrics::Limit;
use crate::outbox::Outbox;
use crate::webhooks::{WebhookEvent, WebhookKind};
use crate::wire::text_frame;

/// Where a count went: from zero to some, from some to zero, or neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Edge {
    /// The first one came (a channel occupied, a member or user arrived).
    First,
    /// The last one left.
    Last,
    /// The count changed (or not) without crossing zero.
    Neither,
}

/// The edge a change from `before` to `after` crosses.
pub(crate) fn edge(before: usize, after: usize) -> Edge {
    match (before, after) {
        (0, 1..) => Edge::First,
        (1.., 0) => Edge::Last,
        _ => Edge::Neither,
    }
}

/// What a change of a channel's subscription count calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct ChannelEvents {
    /// The `channel_occupied` webhook.
    pub(crate) occupied: bool,
    /// The `channel_vacated` webhook.
    pub(crate) vacated: bool,
    /// The subscription count to announce (frame and webhook, as the app wants them).
    pub(crate) count: Option<usize>,
}

/// The rules for a channel whose subscribers went from `before` to `after`: occupied and
/// vacated on the edges, and the new count on every change, except that a presence channel
/// announces members instead of counts and a server-to-user channel announces nothing.
pub(crate) fn channel_events(channel: &str, before: usize, after: usize) -> ChannelEvents {
    let kind = ChannelKind::of(channel);
    if before == after || kind == ChannelKind::ServerToUser {
        return ChannelEvents::default();
    }
    let edge = edge(before, after);
    ChannelEvents {
        occupied: edge == Edge::First,
        vacated: edge == Edge::Last,
        count: (!kind.is_presence()).then_some(after),
    }
}

/// Applies [`channel_events`]: the webhooks, then the count.
pub(crate) fn channel_changed(
    broker: &dyn Broker,
    app: &App,
    channel: &str,
    events: ChannelEvents,
) {
    channel_webhooks(app, channel, events);
    if let Some(count) = events.count {
        announce_count(broker, app, channel, count);
    }
}

/// The `channel_occupied` and `channel_vacated` webhooks of [`channel_events`].
pub(crate) fn channel_webhooks(app: &App, channel: &str, events: ChannelEvents) {
    if events.occupied {
        app.webhook(WebhookKind::ChannelOccupied, || {
            WebhookEvent::ChannelOccupied {
                channel: channel.into(),
            }
        });
    }
    if events.vacated {
        app.webhook(WebhookKind::ChannelVacated, || {
            WebhookEvent::ChannelVacated {
                channel: channel.into(),
            }
        });
    }
}

/// A channel's new subscription count, coalesced (at most one event per channel per
/// second, the last one always the true count) and sent if its turn has come.
pub(crate) fn announce_count(broker: &dyn Broker, app: &App, channel: &str, count: usize) {
    if let Some(count) = app.subscription_count_changed(channel, count) {
        subscription_count(broker, app, channel, count);
    }
}

/// Sends a channel's subscription count, now (coalescing already let it through): the
/// `pusher_internal:subscription_count` frame if the app sends them and anyone is there to
/// get it, and the webhook if an endpoint wants it.
pub(crate) fn subscription_count(broker: &dyn Broker, app: &App, channel: &str, count: usize) {
    if app.config().subscription_count && count > 0 {
        let frame = text_frame(&frame::subscription_count(channel, count));
        broker.publish(app, channel, &frame, None);
    }
    app.webhook(WebhookKind::SubscriptionCount, || {
        WebhookEvent::SubscriptionCount {
            channel: channel.into(),
            subscription_count: count as u64,
        }
    });
}

/// The `member_added` or `member_removed` webhook for a member crossing `edge`.
pub(crate) fn member_webhook(app: &App, channel: &str, user_id: &str, edge: Edge) {
    match edge {
        Edge::First => app.webhook(WebhookKind::MemberAdded, || WebhookEvent::MemberAdded {
            channel: channel.into(),
            user_id: user_id.into(),
        }),
        Edge::Last => app.webhook(WebhookKind::MemberRemoved, || WebhookEvent::MemberRemoved {
            channel: channel.into(),
            user_id: user_id.into(),
        }),
        Edge::Neither => {}
    }
}

/// A user crossing `edge` (its first signed-in connection, or its last): its watchers on
/// every node learn it is online or offline.
pub(crate) fn user_changed(broker: &dyn Broker, app: &App, user: &str, edge: Edge) {
    match edge {
        Edge::First => broker.watchers(app, user, true),
        Edge::Last => broker.watchers(app, user, false),
        Edge::Neither => {}
    }
}

/// Why the backend refused a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The presence channel has `max` distinct users and this one is not among them.
    PresenceFull {
        /// The app's `max_presence_members`.
        max: usize,
    },
    /// The node's queue of cluster changes has no room for the app's.
    Busy,
}

/// Answers a refused subscription with its `pusher:subscription_error`, and counts it.
pub(crate) fn refuse(app: &App, outbox: &Outbox, channel: &str, refusal: Refusal) {
    let (limit, json) = match refusal {
        Refusal::PresenceFull { max } => (
            Limit::PresenceMembers,
            frame::subscription_error(
                channel,
                "LimitReached",
                &format!("The presence channel already has the maximum of {max} members"),
                4100,
            ),
        ),
        Refusal::Busy => (
            Limit::ClusterQueue,
            frame::subscription_error(
                channel,
                "ServerBusy",
                "The server is too busy to take subscriptions; retry shortly",
                503,
            ),
        ),
    };
    app.metrics.refused(limit, &app.config().id, None);
    outbox.push(text_frame(&json));
}

/// Answers a new watchlist with `watchlist_events`: which of `users` are online.
pub(crate) fn answer_watchlist(
    outbox: &Outbox,
    users: &[Arc<str>],
    mut online: impl FnMut(&str) -> bool,
) {
    let (on, off): (Vec<&str>, Vec<&str>) =
        users.iter().map(AsRef::as_ref).partition(|u| online(u));
    outbox.push(text_frame(&frame::watchlist_events(on, off)));
}

#[cfg(test)]
mod tests {
    //! The rules as tables, and what applying them sends, over the single-node broker
    //! (a cluster node applies the same functions to the cluster's counts).

    use serde_json::Value;

    use super::*;
    use crate::adapter::local::Local;
    use crate::ids::ConnId;
    use crate::settings::Config;

    fn app(extra: &str) -> Arc<App> {
        let toml = format!("[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\n{extra}");
        let config = Config::from_toml(&toml, &|_| None).expect("valid");
        Arc::new(App::new(
            config.apps[0].clone(),
            &crate::adapter::webhook_settings(&config),
        ))
    }

    fn subscriber(app: &App, channel: &str, conn: ConnId) -> Arc<Outbox> {
        let outbox = Arc::new(Outbox::new(1 << 20));
        app.hub.subscribe(channel, conn, &outbox);
        frames(&outbox);
        outbox
    }

    fn frames(outbox: &Outbox) -> Vec<Value> {
        outbox.sent()
    }

    #[test]
    fn an_edge_is_crossing_zero_and_nothing_else() {
        for (before, after, want) in [
            (0, 1, Edge::First),
            (0, 5, Edge::First),
            (1, 0, Edge::Last),
            (7, 0, Edge::Last),
            (0, 0, Edge::Neither),
            (1, 2, Edge::Neither),
            (2, 1, Edge::Neither),
            (3, 3, Edge::Neither),
        ] {
            assert_eq!(edge(before, after), want, "{before} -> {after}");
        }
    }

    #[test]
    fn channel_rules_by_kind_and_change() {
        let events = |occupied, vacated, count| ChannelEvents {
            occupied,
            vacated,
            count,
        };
        for (channel, before, after, want) in [
            ("news", 0, 1, events(true, false, Some(1))),
            ("news", 1, 2, events(false, false, Some(2))),
            ("news", 2, 1, events(false, false, Some(1))),
            ("news", 1, 0, events(false, true, Some(0))),
            ("news", 4, 4, ChannelEvents::default()),
            ("private-x", 0, 1, events(true, false, Some(1))),
            // Presence channels announce members, not counts.
            ("presence-x", 0, 1, events(true, false, None)),
            ("presence-x", 1, 2, ChannelEvents::default()),
            ("presence-x", 1, 0, events(false, true, None)),
            // A user's own channel is nobody else's business.
            ("#server-to-user-ann", 0, 1, ChannelEvents::default()),
            ("#server-to-user-ann", 1, 0, ChannelEvents::default()),
        ] {
            assert_eq!(
                channel_events(channel, before, after),
                want,
                "{channel}: {before} -> {after}"
            );
        }
    }

    #[test]
    fn counts_are_announced_to_subscribers_when_the_app_wants_them_and_coalesced() {
        let local = Local::new(1);
        let quiet = app("");
        let a = subscriber(&quiet, "news", 1);
        channel_changed(&local, &quiet, "news", channel_events("news", 0, 1));
        assert!(frames(&a).is_empty(), "the app does not send counts");

        let counted = app("subscription_count = true");
        let a = subscriber(&counted, "news", 1);
        channel_changed(&local, &counted, "news", channel_events("news", 0, 1));
        let got = frames(&a);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0]["event"], "pusher_internal:subscription_count");
        assert_eq!(got[0]["data"], r#"{"subscription_count":1}"#);
        // A second change within the interval waits for the sweeper.
        channel_changed(&local, &counted, "news", channel_events("news", 1, 2));
        assert!(frames(&a).is_empty());
        // Nobody is told of an empty channel.
        subscription_count(&local, &counted, "empty", 0);
    }

    #[test]
    fn watchers_hear_of_a_user_on_its_edges_only() {
        let local = Local::new(1);
        let app = app("");
        let watcher = Arc::new(Outbox::new(1 << 20));
        app.users.watch(9, &watcher, &[Arc::from("bob")]);
        user_changed(&local, &app, "bob", Edge::Neither);
        assert!(frames(&watcher).is_empty());
        user_changed(&local, &app, "bob", Edge::First);
        user_changed(&local, &app, "bob", Edge::Last);
        let got: Vec<String> = frames(&watcher)
            .iter()
            .map(|f| f["data"].as_str().unwrap_or("").to_owned())
            .collect();
        assert!(
            got[0].contains("online") && got[1].contains("offline"),
            "{got:?}"
        );
    }

    #[test]
    fn refusals_are_answered_once_each_and_counted() {
        let app = app("");
        let outbox = Outbox::new(1 << 20);
        refuse(
            &app,
            &outbox,
            "presence-r",
            Refusal::PresenceFull { max: 3 },
        );
        refuse(&app, &outbox, "news", Refusal::Busy);
        let got = frames(&outbox);
        assert_eq!(got[0]["event"], "pusher:subscription_error");
        assert_eq!(got[0]["channel"], "presence-r");
        assert_eq!(got[0]["data"]["type"], "LimitReached");
        assert_eq!(got[0]["data"]["status"], 4100);
        assert!(got[0]["data"]["error"]
            .as_str()
            .unwrap_or("")
            .contains("maximum of 3 members"));
        assert_eq!(got[1]["data"]["type"], "ServerBusy");
        assert_eq!(got[1]["data"]["status"], 503);
        let refused: Vec<(&str, u64)> = app.metrics.refusals().filter(|(_, n)| *n > 0).collect();
        assert_eq!(refused, [("presence_members", 1), ("cluster_queue", 1)]);
    }

    #[test]
    fn a_watchlist_is_answered_with_who_is_online() {
        let outbox = Outbox::new(1 << 20);
        let users: Vec<Arc<str>> = ["ann", "bob", "cid"].into_iter().map(Arc::from).collect();
        answer_watchlist(&outbox, &users, |u| u == "bob");
        let got = frames(&outbox);
        let events: Value =
            serde_json::from_str(got[0]["data"].as_str().expect("data")).expect("JSON");
        assert_eq!(
            events["events"],
            serde_json::json!([
                {"name": "online", "user_ids": ["bob"]},
                {"name": "offline", "user_ids": ["ann", "cid"]}
            ])
        );
    }
}
