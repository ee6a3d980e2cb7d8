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

use herald_protocol::auth::{verify_channel_auth, verify_user_auth};
use herald_protocol::channel::{is_cache_channel, SERVER_TO_USER_PREFIX};
use herald_protocol::channel::{validate_channel_name, validate_event_name, ChannelKind};
use herald_protocol::close::CloseReason;
use herald_protocol::frame::{self, ClientMessage, Signin, Subscribe};
use herald_protocol::presence::{parse_member, Member};
use herald_protocol::user::parse_user_data;

use crate::adapter::Subscription;
use crate::apps::ConnectionSlot;
use crate::ids::SocketId;
use crate::metrics::Limit;
use crate::outbox::Outbox;
use crate::shared::Shared;
use crate::webhooks::{WebhookEvent, WebhookKind};
use crate::wire::text_frame;

use super::recovery::{self, Tracker};

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
            shared.config.outbox_max_bytes,
            app.serial(),
            deflate.then_some(shared.config.compression_min_bytes),
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
        let recovery =
            (shared.adapter.recoveries.is_some() && app.config().recovers()).then(Box::default);
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
        if let (Some(tracker), Some(recoveries)) =
            (tracker_of(&mut self.person), &shared.adapter.recoveries)
        {
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
        let user_id = user_of(&self.person).map(|u| u.id.clone());
        let plan = match (tracker_of(&mut self.person), &shared.adapter.recoveries) {
            (Some(tracker), Some(recoveries)) if !already => {
                if let Some(member) = &member {
                    let signed_in = user_id.is_some_and(|id| *id == *member.user_id);
                    tracker.identify(
                        &self.app,
                        &self.outbox,
                        recoveries.as_ref(),
                        &member.user_id,
                        signed_in,
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
        let app = &self.app;
        let mut confirmed = 0;
        let mut join = |outbox: &Outbox| {
            if let Some(plan) = plan {
                confirmed = recovery::join(app, channel, plan, outbox);
            }
        };
        let subscription = Subscription {
            channel,
            socket: self.id,
            outbox: &self.outbox,
            member,
            cache,
            joining: plan.is_some().then_some(&mut join),
        };
        // The backend answers the client: now, or (in a cluster) once the change is counted,
        // so a client that got `subscription_succeeded` is in every node's counts and a
        // presence member gets the cluster's member list.
        if !shared.adapter.presence.subscribe(&self.app, subscription) {
            return;
        }
        if let (Some(tracker), Some(_)) = (tracker_of(&mut self.person), plan) {
            tracker.track(channel, confirmed);
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

    fn signin(&mut self, shared: &Shared, signin: Signin) {
        let app = self.app.config();
        if let Err(error) = verify_user_auth(
            &app.key,
            &app.secret,
            &signin.auth,
            &self.socket_id().to_string(),
            &signin.user_data,
        ) {
            tracing::debug!(%error, "Sign-in refused");
            return self.refuse_signin(error.to_string());
        }
        let user = match parse_user_data(&signin.user_data) {
            Ok(user) => user,
            Err(error) => return self.refuse_signin(error.to_string()),
        };
        // One identity per connection: the old user's server-to-user channel and presence
        // memberships must not follow the socket to someone else.
        if let Some(current) = user_of(&self.person) {
            if *current.id != *user.id {
                return self.refuse_signin(format!(
                    "This connection is signed in as another user; connect again to sign in as '{}'",
                    user.id
                ));
            }
        }
        // Signing in again as the same user refreshes its user_info and watchlist.
        self.sign_out(shared);
        let id: Arc<str> = Arc::from(user.id.as_str());
        let users = &self.app.users;
        let first_here = users.add(&id, self.id.conn, &self.outbox);
        self.send(&frame::signin_success(&signin.user_data));
        let watchlist: Vec<Arc<str>> = user
            .watchlist
            .iter()
            .map(|w| Arc::from(w.as_str()))
            .collect();
        if !watchlist.is_empty() {
            users.watch(self.id.conn, &self.outbox, &watchlist);
        }
        shared
            .adapter
            .presence
            .signed_in(&self.app, &id, first_here, &self.outbox, &watchlist);
        if let (Some(tracker), Some(recoveries)) =
            (tracker_of(&mut self.person), &shared.adapter.recoveries)
        {
            tracker.identify(&self.app, &self.outbox, recoveries.as_ref(), &id, true);
        }
        self.person.get_or_insert_with(Box::default).user = Some(SignedIn {
            id,
            user_info: user.user_info.map(String::into_boxed_str),
            watchlist,
        });
        self.authorized();
        self.release_held(shared);
    }

    fn refuse_signin(&self, message: String) {
        self.outbox.close(CloseReason::Unauthorized.code(), message);
    }

    fn sign_out(&mut self, shared: &Shared) {
        if let Some(user) = self.person.as_deref_mut().and_then(|p| p.user.take()) {
            let users = &self.app.users;
            users.unwatch(self.id.conn, &user.watchlist);
            let last_here = users.remove(&user.id, self.id.conn);
            shared
                .adapter
                .presence
                .signed_out(&self.app, &user.id, last_here);
        }
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

    fn client_event(&mut self, shared: &Shared, event: &str, channel: &str, data: &str) {
        let limits = self.app.config().limits;
        if !limits.client_events {
            return self.send_error(
                Some(CloseReason::ClientEventRejected.code()),
                "The app does not have client messaging enabled.",
            );
        }
        if let Err(error) = validate_event_name(event) {
            return self.send_error(None, &error.to_string());
        }
        match ChannelKind::of(channel) {
            ChannelKind::PrivateEncrypted => {
                return self.send_error(
                    None,
                    "Client events are not supported on encrypted channels",
                )
            }
            kind if !kind.allows_client_events() => {
                return self.send_error(
                    None,
                    "Client events are only supported on private and presence channels",
                )
            }
            _ => {}
        }
        let Some(user_id) = self.app.hub.subscription(channel, self.id.conn) else {
            return self.send_error(
                None,
                &format!("You must be subscribed to {channel} to send client events on it"),
            );
        };
        if data.len() > limits.max_event_data_bytes {
            return self.send_error(
                None,
                &format!(
                    "Client event data is larger than the allowed {} bytes",
                    limits.max_event_data_bytes
                ),
            );
        }
        let now = crate::clock::now();
        if now.wrapping_sub(self.client_events.started)
            >= crate::clock::ticks(std::time::Duration::from_secs(1))
        {
            self.client_events = RateWindow {
                started: now,
                used: 0,
            };
        }
        if self.client_events.used >= limits.client_events_per_second {
            self.app
                .metrics
                .refused(Limit::ClientEvents, &self.app.config().id, None);
            let r = CloseReason::ClientEventRejected;
            return self.send_error(Some(r.code()), r.message());
        }
        self.client_events.used += 1;
        self.app
            .metrics
            .client_events
            .fetch_add(1, Ordering::Relaxed);
        // The frame is rebuilt from its parts so a client cannot inject fields like user_id.
        let frame = text_frame(&frame::event(event, channel, data, user_id.as_deref()));
        let socket_id = self.socket_id().to_string();
        self.app.metrics.console.emit("client_event", |row| {
            row.insert("socket_id".into(), socket_id.as_str().into());
            row.insert("channel".into(), channel.into());
            row.insert("event".into(), event.into());
            crate::console::preview(row, data);
        });
        shared
            .adapter
            .broker
            .publish(&self.app, channel, &frame, Some(self.id));
        self.app
            .webhook(WebhookKind::ClientEvent, || WebhookEvent::ClientEvent {
                channel: channel.into(),
                event: event.into(),
                data: data.into(),
                socket_id: Some(socket_id.as_str().into()),
                user_id: user_id.as_deref().map(Into::into),
            });
    }

    /// Leaves every channel and signs out, as soon as the connection starts closing: it takes
    /// no more frames, so it must not count as a subscriber or a member while it lingers.
    /// Recovery remembers what the connection was on here, at once, for a new connection
    /// that takes over from this one: a closing connection may linger for seconds.
    pub(super) fn leave_all(&mut self, shared: &Shared) {
        if let (Some(tracker), Some(recoveries)) =
            (tracker_of(&mut self.person), &shared.adapter.recoveries)
        {
            tracker.end(&self.app, recoveries.as_ref(), self.outbox.close_code());
        }
        for channel in std::mem::take(&mut self.channels) {
            self.leave_channel(shared, &channel);
        }
        self.sign_out(shared);
    }

    /// Answers the subscriptions recovery held, once their wait is over.
    fn release_held(&mut self, shared: &Shared) {
        let (Some(tracker), Some(recoveries)) =
            (tracker_of(&mut self.person), &shared.adapter.recoveries)
        else {
            return;
        };
        for sub in tracker.release(&self.app, recoveries.as_ref()) {
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
        if let Some(tracker) = tracker_of(&mut self.person) {
            tracker.after_write(&self.app, &self.outbox);
        }
    }

    /// Leaves every channel and the shutdown registry; called once when the connection ends.
    pub(super) fn close(&mut self, shared: &Shared) {
        self.leave_all(shared);
        shared.unregister_connection(self.id.conn);
    }

    /// Gives the connection's slot back to the app's limits, last of all.
    pub(super) fn release(self, shared: &Shared) {
        shared.adapter.limits.release(self.app);
    }
}

#[cfg(test)]
mod tests {
    //! The protocol rules over the single-node backend: each test drives sessions with the
    //! client's JSON and reads what their outboxes got, as the connection task would.

    use std::collections::VecDeque;

    use herald_protocol::auth::{channel_auth, user_auth};
    use serde_json::{json, Value};

    use super::*;
    use crate::config::Config;

    const KEY: &str = "k";
    const SECRET: &str = "s";

    fn node(limits: &str) -> Arc<Shared> {
        let toml =
            format!("[[apps]]\nid = \"1\"\nkey = \"{KEY}\"\nsecret = \"{SECRET}\"\n{limits}");
        Shared::for_tests(Config::from_toml(&toml, &|_| None).expect("valid config"))
    }

    /// A connection's session and what it has been sent.
    struct Client {
        session: Session,
        shared: Arc<Shared>,
    }

    impl Client {
        fn connect(shared: &Arc<Shared>) -> Client {
            let slot = shared
                .apps
                .by_key(KEY)
                .expect("the app")
                .try_connect(0)
                .expect("a slot");
            Client {
                session: Session::new(shared, slot, false),
                shared: shared.clone(),
            }
        }

        fn id(&self) -> String {
            self.session.socket_id().to_string()
        }

        fn send(&mut self, message: Value) {
            self.session.handle_text(&self.shared, &message.to_string());
        }

        /// The frames queued since the last call, as JSON.
        fn frames(&self) -> Vec<Value> {
            self.session.outbox().sent()
        }

        fn events(&self) -> Vec<String> {
            self.frames()
                .iter()
                .map(|f| f["event"].as_str().unwrap_or("").to_owned())
                .collect()
        }

        /// The one frame queued since the last call.
        fn one(&self) -> Value {
            let mut frames = self.frames();
            assert_eq!(frames.len(), 1, "{frames:?}");
            frames.remove(0)
        }

        fn closed(&self) -> Option<u16> {
            let mut frames = VecDeque::new();
            self.session.outbox().take(&mut frames).map(|c| c.code)
        }

        fn subscribe(&mut self, channel: &str) -> Value {
            self.send(json!({"event": "pusher:subscribe", "data": {"channel": channel}}));
            self.one()
        }

        fn subscribe_signed(&mut self, channel: &str, channel_data: Option<&str>) -> Value {
            let auth = channel_auth(KEY, SECRET, &self.id(), channel, channel_data);
            let mut data = json!({"channel": channel, "auth": auth});
            if let Some(channel_data) = channel_data {
                data["channel_data"] = channel_data.into();
            }
            self.send(json!({"event": "pusher:subscribe", "data": data}));
            self.frames().pop().expect("an answer")
        }

        fn join(&mut self, channel: &str, user: &str) -> Value {
            let member = json!({"user_id": user, "user_info": {"name": user}}).to_string();
            self.subscribe_signed(channel, Some(&member))
        }

        fn signin(&mut self, user_data: &Value) {
            let user_data = user_data.to_string();
            let auth = user_auth(KEY, SECRET, &self.id(), &user_data);
            self.send(
                json!({"event": "pusher:signin", "data": {"auth": auth, "user_data": user_data}}),
            );
        }

        fn app(&self) -> &crate::App {
            &self.session.app
        }

        fn auth_deadline(&self) -> u32 {
            self.session
                .outbox
                .timers
                .auth_deadline
                .load(Ordering::Relaxed)
        }
    }

    fn error_of(frame: &Value) -> (&str, u64) {
        assert_eq!(frame["event"], "pusher:subscription_error", "{frame}");
        (
            frame["data"]["type"].as_str().unwrap_or(""),
            frame["data"]["status"].as_u64().unwrap_or(0),
        )
    }

    #[test]
    fn a_public_subscription_is_confirmed_once_counted_and_left() {
        let shared = node("");
        let mut a = Client::connect(&shared);
        a.frames();
        let ok = a.subscribe("news");
        assert_eq!(ok["event"], "pusher_internal:subscription_succeeded");
        assert_eq!(ok["channel"], "news");
        // A repeated subscribe is confirmed again and still counts once.
        a.subscribe("news");
        assert_eq!(a.app().hub.counts("news").subscription_count, 1);
        assert_eq!(a.session.channels.len(), 1);
        a.send(json!({"event": "pusher:unsubscribe", "data": {"channel": "news"}}));
        assert_eq!(a.app().hub.counts("news").subscription_count, 0);
        assert!(a.frames().is_empty(), "an unsubscribe has no answer");
        // Unsubscribing again, or from a channel never joined, changes nothing.
        a.send(json!({"event": "pusher:unsubscribe", "data": {"channel": "news"}}));
        a.send(json!({"event": "pusher:unsubscribe", "data": {"channel": "other"}}));
        assert!(a.frames().is_empty());
    }

    #[test]
    fn a_private_subscription_needs_the_channels_signature_and_authorizes_the_connection() {
        let shared = node("user_authentication_timeout = 30");
        let mut a = Client::connect(&shared);
        a.frames();
        assert_ne!(a.auth_deadline(), 0, "the app wants a sign-in in time");
        a.send(
            json!({"event": "pusher:subscribe", "data": {"channel": "private-x", "auth": "k:bad"}}),
        );
        assert_eq!(error_of(&a.one()), ("AuthError", 401));
        assert_ne!(
            a.auth_deadline(),
            0,
            "a refused subscription proves nothing"
        );
        // Signed for another socket: refused too.
        let stolen = channel_auth(KEY, SECRET, "1.999", "private-x", None);
        a.send(
            json!({"event": "pusher:subscribe", "data": {"channel": "private-x", "auth": stolen}}),
        );
        assert_eq!(error_of(&a.one()), ("AuthError", 401));
        let ok = a.subscribe_signed("private-x", None);
        assert_eq!(ok["event"], "pusher_internal:subscription_succeeded");
        assert_eq!(
            a.auth_deadline(),
            0,
            "a signed subscription authorizes the connection"
        );
        assert_eq!(a.closed(), None);
    }

    #[test]
    fn presence_members_are_listed_announced_limited_and_removed() {
        let shared = node("max_presence_members = 2");
        let (mut a, mut b, mut c) = (
            Client::connect(&shared),
            Client::connect(&shared),
            Client::connect(&shared),
        );
        for client in [&a, &b, &c] {
            client.frames();
        }
        let ok = a.join("presence-room", "alice");
        assert_eq!(ok["event"], "pusher_internal:subscription_succeeded");
        let data: Value = serde_json::from_str(ok["data"].as_str().expect("data")).expect("JSON");
        assert_eq!(data["presence"]["count"], 1);
        assert_eq!(data["presence"]["hash"]["alice"], json!({"name": "alice"}));

        let ok = b.join("presence-room", "bob");
        let data: Value = serde_json::from_str(ok["data"].as_str().expect("data")).expect("JSON");
        assert_eq!(data["presence"]["ids"], json!(["alice", "bob"]));
        let added = a.one();
        assert_eq!(added["event"], "pusher_internal:member_added");
        assert_eq!(
            added["data"],
            r#"{"user_id":"bob","user_info":{"name":"bob"}}"#
        );

        // A third user is over the limit: refused, not recorded, nobody told.
        let refused = c.join("presence-room", "carol");
        assert_eq!(error_of(&refused), ("LimitReached", 4100));
        assert_eq!(
            refused["data"]["error"],
            "The presence channel already has the maximum of 2 members"
        );
        assert!(c.session.channels.is_empty());
        assert!(a.frames().is_empty() && b.frames().is_empty());
        // The same user on another connection is no new member: admitted, nobody told.
        assert_eq!(
            c.join("presence-room", "bob")["event"],
            "pusher_internal:subscription_succeeded"
        );
        assert!(a.frames().is_empty());
        assert_eq!(a.app().hub.counts("presence-room").user_count, 2);

        // Bob leaves with his last connection only.
        b.send(json!({"event": "pusher:unsubscribe", "data": {"channel": "presence-room"}}));
        assert!(a.frames().is_empty(), "bob is still there on c");
        c.session.close(&shared);
        let removed = a.one();
        assert_eq!(removed["event"], "pusher_internal:member_removed");
        assert_eq!(removed["data"], r#"{"user_id":"bob"}"#);
    }

    #[test]
    fn a_presence_member_can_be_the_signed_in_user() {
        let shared = node("");
        let mut a = Client::connect(&shared);
        a.send(
            json!({"event": "pusher:subscribe", "data": {"channel": "presence-x", "auth": "k:x"}}),
        );
        a.frames();
        a.send(json!({"event": "pusher:subscribe", "data": {"channel": "presence-y"}}));
        assert_eq!(
            error_of(&a.one()),
            ("AuthError", 401),
            "no channel_data, no user"
        );
        a.signin(&json!({"id": "ann", "user_info": {"team": 1}}));
        assert_eq!(a.one()["event"], "pusher:signin_success");
        let ok = a.subscribe_signed("presence-y", None);
        assert_eq!(ok["event"], "pusher_internal:subscription_succeeded");
        let data: Value = serde_json::from_str(ok["data"].as_str().expect("data")).expect("JSON");
        assert_eq!(data["presence"]["hash"]["ann"], json!({"team": 1}));
    }

    #[test]
    fn bad_subscriptions_get_errors_and_the_connection_stays() {
        let shared = node("max_subscriptions_per_connection = 1");
        let mut a = Client::connect(&shared);
        a.frames();
        let bad = a.subscribe("bad name!");
        assert_eq!(error_of(&bad), ("InvalidChannel", 400));
        let mine = a.subscribe("#server-to-user-ann");
        assert_eq!(error_of(&mine), ("AuthError", 403));
        a.subscribe("one");
        let over = a.subscribe("two");
        assert_eq!(error_of(&over), ("LimitReached", 4301));
        assert_eq!(a.app().hub.counts("two").subscription_count, 0);
        assert_eq!(
            a.subscribe("one")["event"],
            "pusher_internal:subscription_succeeded"
        );
        a.send(json!({"event": "pusher:ping", "data": {}}));
        assert_eq!(a.one()["event"], "pusher:pong");
        a.send(json!({"event": "no-such-thing"}));
        assert_eq!(a.one()["event"], "pusher:error");
        assert_eq!(a.closed(), None, "no mistake closes the socket");
    }

    #[test]
    fn client_events_reach_the_other_members_with_their_user_id() {
        let shared = node("client_events_per_second = 2");
        let (mut a, mut b) = (Client::connect(&shared), Client::connect(&shared));
        a.frames();
        b.frames();
        let event =
            |channel: &str| json!({"event": "client-typing", "channel": channel, "data": "{}"});
        a.send(event("presence-room"));
        assert!(a.one()["data"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("subscribed"));
        a.send(event("public"));
        assert_eq!(a.one()["event"], "pusher:error");
        a.join("presence-room", "alice");
        b.join("presence-room", "bob");
        a.frames();
        a.send(event("presence-room"));
        let got = b.one();
        assert_eq!(got["event"], "client-typing");
        assert_eq!(got["user_id"], "alice", "rebuilt with the sender's user id");
        assert!(
            a.frames().is_empty(),
            "the sender does not get its own event"
        );
        a.send(event("presence-room"));
        a.send(event("presence-room"));
        let rejected = a.one();
        assert_eq!(rejected["event"], "pusher:error", "over 2 per second");
        assert_eq!(
            rejected["data"]["code"],
            CloseReason::ClientEventRejected.code()
        );
        assert_eq!(b.events(), ["client-typing"]);
    }

    #[test]
    fn client_events_need_the_app_to_allow_them() {
        let toml = format!(
            "[[apps]]\nid = \"1\"\nkey = \"{KEY}\"\nsecret = \"{SECRET}\"\nclient_events = false\n"
        );
        let shared = Shared::for_tests(Config::from_toml(&toml, &|_| None).expect("valid"));
        let mut a = Client::connect(&shared);
        a.frames();
        let ok = a.subscribe_signed("private-x", None);
        assert_eq!(
            ok["event"], "pusher_internal:subscription_succeeded",
            "{ok}"
        );
        a.send(json!({"event": "client-x", "channel": "private-x", "data": "{}"}));
        let error = a.one();
        assert_eq!(error["event"], "pusher:error");
        assert_eq!(
            error["data"]["code"],
            CloseReason::ClientEventRejected.code()
        );
    }

    #[test]
    fn signin_answers_the_watchlist_and_tells_watchers() {
        let shared = node("user_authentication_timeout = 30");
        let (mut watcher, mut bob) = (Client::connect(&shared), Client::connect(&shared));
        watcher.frames();
        bob.frames();
        watcher.signin(&json!({"id": "wanda", "watchlist": ["bob", "carl"]}));
        let frames = watcher.frames();
        assert_eq!(frames[0]["event"], "pusher:signin_success");
        assert_eq!(frames[1]["event"], "pusher_internal:watchlist_events");
        let events: Value =
            serde_json::from_str(frames[1]["data"].as_str().expect("data")).expect("JSON");
        assert_eq!(
            events["events"],
            json!([{"name": "offline", "user_ids": ["bob", "carl"]}])
        );
        assert_eq!(watcher.auth_deadline(), 0, "signed in: authorized");

        bob.signin(&json!({"id": "bob"}));
        bob.frames();
        let online = watcher.one();
        let events: Value =
            serde_json::from_str(online["data"].as_str().expect("data")).expect("JSON");
        assert_eq!(
            events["events"],
            json!([{"name": "online", "user_ids": ["bob"]}])
        );
        assert!(bob.app().users.is_online("bob"));
        // Bob's own server-to-user channel is his now.
        assert_eq!(
            bob.subscribe("#server-to-user-bob")["event"],
            "pusher_internal:subscription_succeeded"
        );
        bob.session.close(&shared);
        assert!(!watcher.app().users.is_online("bob"));
        let offline = watcher.one();
        assert!(
            offline["data"].as_str().unwrap_or("").contains("offline"),
            "{offline}"
        );
    }

    #[test]
    fn a_refused_signin_closes_with_4009() {
        let shared = node("");
        let mut a = Client::connect(&shared);
        a.frames();
        a.send(json!({"event": "pusher:signin", "data": {"auth": "k:bad", "user_data": "{\"id\":\"x\"}"}}));
        assert_eq!(a.closed(), Some(CloseReason::Unauthorized.code()));

        let mut b = Client::connect(&shared);
        b.signin(&json!({"id": "bea"}));
        b.frames();
        b.signin(&json!({"id": "someone-else"}));
        assert_eq!(b.closed(), Some(4009), "one identity per connection");
        assert!(b.app().users.is_online("bea"));
    }

    #[test]
    fn closing_leaves_every_channel_and_gives_the_slot_back() {
        let shared = node("");
        let mut a = Client::connect(&shared);
        a.subscribe("one");
        a.join("presence-two", "ann");
        let app = shared.apps.by_key(KEY).expect("app");
        assert_eq!(app.connection_count(), 1);
        a.session.close(&shared);
        assert_eq!(app.hub.totals(), Default::default());
        assert!(shared.connections.lock().is_empty());
        a.session.release(&shared);
        assert_eq!(app.connection_count(), 0);
    }
}
