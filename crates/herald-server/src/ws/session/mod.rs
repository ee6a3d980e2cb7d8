//! One connection's protocol state: its socket id, its subscriptions, the user it signed in
//! as, and the rules for each client message (subscribe, unsubscribe, signin, ping, client
//! events).
//!
//! The session never touches the socket. It answers by pushing frames to its own outbox and
//! reaches other connections only through the adapter's traits (`Presence` for
//! subscriptions and sign-ins, `Broker` for client events), so the same rules serve any
//! transport and any backend, and never know which backend it is.
//! Nothing here closes the connection for a client mistake: bad messages, failed
//! subscriptions and rejected client events get an error frame and the socket stays open.
//! The one exception is a refused sign-in, which closes with 4009 ("connection is
//! unauthorized"), as the user-authentication feature specifies.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use herald_protocol::auth::verify_channel_auth;
use herald_protocol::channel::{is_cache_channel, SERVER_TO_USER_PREFIX};
use herald_protocol::channel::{validate_channel_name, ChannelKind};
use herald_protocol::frame::{self, ClientMessage, Subscribe};
use herald_protocol::presence::{parse_member, Member};

use crate::adapter::Subscription;
use crate::apps::ConnectionSlot;
use crate::ids::SocketId;
use crate::metrics::Limit;
use crate::outbox::Outbox;
use crate::shared::Shared;
use crate::wire::text_frame;

use super::recovery::Tracker;
use crate::recovery::Recover;

mod client_event;
mod signin;

/// A fixed one-second window is enough to enforce "N per second"; in clock ticks it
/// costs eight bytes.
struct RateWindow {
    started: u32,
    used: u32,
}

/// The user a connection signed in as, and its recovery state. Boxed: most connections
/// never sign in and most apps do not recover, and an idle connection should pay one
/// pointer for both possibilities.
#[derive(Default)]
struct Person {
    user: Option<SignedIn>,
    /// Set when the app recovers (`recovery_window` and history).
    recovery: Option<Box<Tracker>>,
}

fn user_of(person: &Option<Box<Person>>) -> Option<&SignedIn> {
    person.as_deref().and_then(|p| p.user.as_ref())
}

fn tracker_of(person: &mut Option<Box<Person>>) -> Option<&mut Tracker> {
    person
        .as_deref_mut()
        .and_then(|p| p.recovery.as_deref_mut())
}

/// The user a connection signed in as.
struct SignedIn {
    id: Arc<str>,
    user_info: Option<Box<str>>,
    watchlist: Vec<Arc<str>>,
}

pub(super) struct Session {
    /// The app, through the connection's counted slot in it.
    app: ConnectionSlot,
    /// Formatted when needed rather than kept as text in every connection.
    id: SocketId,
    outbox: Arc<Outbox>,
    /// Channels this connection is subscribed to; few per connection, so a Vec beats a map.
    channels: Vec<Box<str>>,
    client_events: RateWindow,
    person: Option<Box<Person>>,
}

impl Session {
    /// `deflate`: the connection negotiated permessage-deflate.
    pub(super) fn new(shared: &Shared, app: ConnectionSlot, deflate: bool) -> Self {
        let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        let outbox = Arc::new(Outbox::for_app(
            shared.config.server.outbox_max_bytes,
            app.serial(),
            deflate.then_some(shared.config.server.compression_min_bytes),
        ));
        // The app may require a connection to sign in (or join a private channel) in time.
        let secs = app.config().user_authentication_timeout;
        if secs > 0 {
            let deadline =
                crate::clock::now() + crate::clock::ticks(std::time::Duration::from_secs(secs));
            outbox
                .timers
                .auth_deadline
                .store(deadline, Ordering::Relaxed);
        }
        shared.register_connection(conn, &outbox);
        app.metrics
            .connections_opened
            .fetch_add(1, Ordering::Relaxed);
        let id = SocketId {
            node: shared.node_id,
            conn,
        };
        app.metrics.console.emit("connection_opened", |row| {
            row.insert("socket_id".into(), id.to_string().into());
        });
        // A reload that removed or disabled the app after this connection was admitted, and
        // scanned the registry before it was in it, left the close to the connection.
        if let Some((code, message)) = app.closed() {
            outbox.close(code, message);
        }
        let recovery = app.config().recovers().then(Box::default);
        Session {
            app,
            id,
            outbox,
            channels: Vec::new(),
            client_events: RateWindow {
                started: crate::clock::now(),
                used: 0,
            },
            person: recovery.map(|tracker| {
                Box::new(Person {
                    user: None,
                    recovery: Some(tracker),
                })
            }),
        }
    }

    /// Records that the connection proved it belongs to an authenticated user: signed in,
    /// or subscribed to a private or presence channel.
    fn authorized(&self) {
        self.outbox.timers.auth_deadline.store(0, Ordering::Relaxed);
    }

    pub(super) fn socket_id(&self) -> SocketId {
        self.id
    }

    pub(super) fn app_id(&self) -> &str {
        self.app.id()
    }

    pub(super) fn metrics(&self) -> &crate::metrics::AppMetrics {
        &self.app.metrics
    }

    pub(super) fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    fn send(&self, json: &str) {
        self.outbox.push(text_frame(json));
    }

    pub(super) fn send_error(&self, code: Option<u16>, message: &str) {
        self.send(&frame::error(code, message));
    }

    pub(super) fn handle_text(&mut self, shared: &Shared, text: &str) {
        match frame::decode_client_message(text) {
            Ok(ClientMessage::Ping) => self.send(frame::PONG),
            Ok(ClientMessage::Pong) => {
                if let Some(tracker) = tracker_of(&mut self.person) {
                    tracker.pong(&self.app, &self.outbox);
                }
            }
            Ok(ClientMessage::Subscribe(sub)) => self.subscribe(shared, sub),
            Ok(ClientMessage::Unsubscribe { channel }) => self.unsubscribe(shared, &channel),
            Ok(ClientMessage::Signin(signin)) => self.signin(shared, signin),
            Ok(ClientMessage::ClientEvent {
                event,
                channel,
                data,
            }) => self.client_event(shared, &event, &channel, data),
            Ok(_) => self.send_error(None, "Unsupported message"),
            Err(error) => self.send_error(None, &error.to_string()),
        }
    }

    fn subscription_error(&self, channel: &str, kind: &str, error: &str, status: u16) {
        self.send(&frame::subscription_error(channel, kind, error, status));
    }

    fn subscribe(&mut self, shared: &Shared, sub: Subscribe) {
        let any_silent = shared.silent.load(Ordering::Relaxed) > 0;
        let recoveries = &shared.adapter.recoveries;
        if let Some(tracker) = tracker_of(&mut self.person) {
            // A presence subscription brings its identity with it.
            if !ChannelKind::of(&sub.channel).is_presence()
                && tracker.hold(
                    &self.app,
                    &self.outbox,
                    recoveries.as_ref(),
                    &sub,
                    any_silent,
                )
            {
                return;
            }
        }
        let limits = self.app.config().limits;
        let channel = sub.channel.as_str();
        let kind = match validate_channel_name(channel, limits.max_channel_name_length) {
            Ok(kind) => kind,
            Err(error) => {
                return self.subscription_error(channel, "InvalidChannel", &error.to_string(), 400)
            }
        };
        let already = self.channels.iter().any(|c| c.as_ref() == channel);
        let max = limits.max_subscriptions_per_connection;
        if !already && self.channels.len() >= max {
            // The connection does not keep its client's address.
            self.app
                .metrics
                .refused(Limit::Subscriptions, &self.app.config().id, None);
            return self.subscription_error(
                channel,
                "LimitReached",
                &format!(
                    "This connection is subscribed to the maximum of {max} channels; unsubscribe from one first"
                ),
                4301,
            );
        }
        if kind == ChannelKind::ServerToUser {
            let own = user_of(&self.person).is_some_and(|u| {
                channel.strip_prefix(SERVER_TO_USER_PREFIX) == Some(u.id.as_ref())
            });
            if !own {
                return self.subscription_error(
                    channel,
                    "AuthError",
                    "Only a connection signed in as this user may subscribe to its server-to-user channel",
                    403,
                );
            }
        }
        let auth = sub.auth.as_deref().unwrap_or("");
        // Presence identity: the signed channel_data, or else (pusher-js 8) the signed-in user.
        let channel_data = sub.channel_data.as_deref().filter(|_| kind.is_presence());
        if kind.is_presence() && channel_data.is_none() && user_of(&self.person).is_none() {
            return self.subscription_error(
                channel,
                "AuthError",
                "Presence channels require channel_data, or a connection signed in as a user",
                401,
            );
        }
        if kind.requires_auth() {
            let app = self.app.config();
            if let Err(error) = verify_channel_auth(
                &app.key,
                &app.secret,
                auth,
                &self.socket_id().to_string(),
                channel,
                channel_data,
            ) {
                tracing::debug!(channel, %error, "Subscription refused");
                return self.subscription_error(channel, "AuthError", &error.to_string(), 401);
            }
        }
        let member = match (kind.is_presence(), channel_data, user_of(&self.person)) {
            (false, _, _) => None,
            (true, Some(data), _) => match parse_member(data) {
                Ok(member) => Some(member),
                Err(error) => {
                    return self.subscription_error(channel, "AuthError", &error.to_string(), 400)
                }
            },
            (true, None, Some(user)) => Some(Member {
                user_id: user.id.to_string(),
                user_info: user.user_info.as_deref().map(str::to_owned),
            }),
            (true, None, None) => None,
        };
        if let Some(member) = &member {
            if !self.member_fits(channel, member) {
                return;
            }
        }
        // A repeated subscribe to a channel the connection holds, with none of its changes
        // waiting, is answered here as the backend would answer it: in a cluster it would
        // otherwise be a queued change that a client repeating it could flood the queue
        // with. (A presence channel's answer carries the cluster's member list, which only
        // the backend has.)
        if already
            && member.is_none()
            && self.outbox.ops_waiting() == 0
            && self.app.hub.is_subscribed(channel, self.id.conn)
        {
            self.send(&frame::subscription_succeeded(channel, "{}"));
            return;
        }
        // The cached event (or a miss, and its webhook) goes to new subscriptions only: a
        // repeated subscribe must not become a webhook per frame.
        let cache = is_cache_channel(channel) && !already;
        let recoveries = &shared.adapter.recoveries;
        let plan = match tracker_of(&mut self.person) {
            Some(tracker) if !already => {
                if let Some(member) = &member {
                    tracker.identify(
                        &self.app,
                        &self.outbox,
                        recoveries.as_ref(),
                        &member.user_id,
                        Some(channel),
                    );
                    if tracker.hold(
                        &self.app,
                        &self.outbox,
                        recoveries.as_ref(),
                        &sub,
                        any_silent,
                    ) {
                        return;
                    }
                }
                Some(tracker.plan(channel))
            }
            _ => None,
        };
        let recover = plan.map(Recover::new);
        let subscription = Subscription {
            channel,
            socket: self.id,
            outbox: &self.outbox,
            member,
            cache,
            recover: recover.as_ref(),
        };
        // The backend answers the client: now, or (in a cluster) once the change is counted,
        // so a client that got `subscription_succeeded` is in every node's counts and a
        // presence member gets the cluster's member list.
        if !shared.adapter.presence.subscribe(&self.app, subscription) {
            return;
        }
        if let (Some(tracker), Some(recover)) = (tracker_of(&mut self.person), &recover) {
            tracker.track(channel, recover);
        }
        if kind.requires_auth() {
            self.authorized();
        }
        if !already {
            self.subscribed(channel);
            self.channels.push(channel.into());
        }
    }

    /// Checks a presence member against the app's limits, answering the client if it fails.
    fn member_fits(&self, channel: &str, member: &Member) -> bool {
        let limits = self.app.config().limits;
        if member.user_id.chars().count() > limits.max_presence_user_id_length {
            self.subscription_error(
                channel,
                "LimitReached",
                &format!(
                    "The user_id is longer than the allowed {} characters",
                    limits.max_presence_user_id_length
                ),
                4301,
            );
            return false;
        }
        if member.user_info.as_ref().map_or(0, String::len) > limits.max_presence_user_info_bytes {
            self.subscription_error(
                channel,
                "LimitReached",
                &format!(
                    "The user_info is larger than the allowed {} bytes",
                    limits.max_presence_user_info_bytes
                ),
                4301,
            );
            return false;
        }
        true
    }

    /// Leaves one channel (unsubscribe or close); the backend reports what that changed.
    fn leave_channel(&self, shared: &Shared, channel: &str) {
        shared
            .adapter
            .presence
            .unsubscribe(&self.app, channel, self.id.conn, &self.outbox);
    }

    /// Shows a new subscription on the console.
    fn subscribed(&self, channel: &str) {
        self.app.metrics.console.emit("subscribed", |row| {
            row.insert("socket_id".into(), self.socket_id().to_string().into());
            row.insert("channel".into(), channel.into());
        });
    }

    fn unsubscribe(&mut self, shared: &Shared, channel: &str) {
        if let Some(tracker) = tracker_of(&mut self.person) {
            if tracker.unhold(channel) {
                return;
            }
            tracker.untrack(channel);
        }
        if let Some(pos) = self.channels.iter().position(|c| c.as_ref() == channel) {
            self.app.metrics.console.emit("unsubscribed", |row| {
                row.insert("socket_id".into(), self.socket_id().to_string().into());
                row.insert("channel".into(), channel.into());
            });
            self.channels.swap_remove(pos);
            self.leave_channel(shared, channel);
        }
    }

    /// Leaves every channel and signs out, as soon as the connection starts closing: it takes
    /// no more frames, so it must not count as a subscriber or a member while it lingers.
    /// Recovery remembers what the connection was on here, at once, for a new connection
    /// that takes over from this one: a closing connection may linger for seconds.
    pub(super) fn leave_all(&mut self, shared: &Shared) {
        let recoveries = &shared.adapter.recoveries;
        if let Some(tracker) = tracker_of(&mut self.person) {
            tracker.end(&self.app, recoveries.as_ref(), self.outbox.close_code());
        }
        for channel in std::mem::take(&mut self.channels) {
            self.leave_channel(shared, &channel);
        }
        self.sign_out(shared);
    }

    /// Answers the subscriptions recovery held, once their wait is over.
    fn release_held(&mut self, shared: &Shared) {
        let recoveries = &shared.adapter.recoveries;
        let Some(tracker) = tracker_of(&mut self.person) else {
            return;
        };
        for sub in tracker.release(&self.app, &self.outbox, recoveries.as_ref()) {
            self.subscribe(shared, sub);
        }
    }

    /// After the connection task took what the outbox held (or was nudged): held
    /// subscriptions whose wait is over, and a ping if events went out unconfirmed.
    pub(super) fn after_outbox(&mut self, shared: &Shared) {
        if tracker_of(&mut self.person).is_none() {
            return;
        }
        self.release_held(shared);
        let recoveries = &shared.adapter.recoveries;
        if let Some(tracker) = tracker_of(&mut self.person) {
            tracker.after_write(&self.app, &self.outbox);
            tracker.check_silent(&self.app, &self.outbox, recoveries.as_ref());
        }
    }

    /// Leaves every channel and the shutdown registry; called once when the connection ends.
    pub(super) fn close(&mut self, shared: &Shared) {
        self.leave_all(shared);
        shared.unregister_connection(self.id.conn, &self.outbox);
    }

    /// Gives the connection's slot back to the app's limits, last of all.
    pub(super) fn release(self, shared: &Shared) {
        shared.adapter.limits.release(self.app);
    }
}

#[cfg(test)]
mod tests;
