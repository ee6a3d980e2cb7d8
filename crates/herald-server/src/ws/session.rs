//! One connection's protocol state: its socket id, its subscriptions, the user it signed in
//! as, and the rules for each client message (subscribe, unsubscribe, signin, ping, client
//! events).
//!
//! The session never touches the socket. It answers by pushing frames to its own outbox and
//! reaches other connections only through the hub, so the same logic serves any transport.
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

use crate::adapter::{Cluster, Join, Op};
use crate::apps::ConnectionSlot;
use crate::hub::{Left, PresenceRefused};
use crate::ids::SocketId;
use crate::metrics::Limit;
use crate::outbox::Outbox;
use crate::shared::Shared;
use crate::webhooks::WebhookEvent;
use crate::wire::text_frame;

/// A fixed one-second window is enough to enforce "N per second"; in clock ticks it
/// costs eight bytes.
struct RateWindow {
    started: u32,
    used: u32,
}

/// The user a connection signed in as. Boxed: most connections never sign in, and an
/// idle connection should pay one pointer for the possibility.
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
    user: Option<Box<SignedIn>>,
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
        Session {
            app,
            id,
            outbox,
            channels: Vec::new(),
            client_events: RateWindow {
                started: crate::clock::now(),
                used: 0,
            },
            user: None,
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

    pub(super) fn handle_text(&mut self, text: &str) {
        match frame::decode_client_message(text) {
            Ok(ClientMessage::Ping) => self.send(frame::PONG),
            Ok(ClientMessage::Pong) => {}
            Ok(ClientMessage::Subscribe(sub)) => self.subscribe(sub),
            Ok(ClientMessage::Unsubscribe { channel }) => self.unsubscribe(&channel),
            Ok(ClientMessage::Signin(signin)) => self.signin(signin),
            Ok(ClientMessage::ClientEvent {
                event,
                channel,
                data,
            }) => self.client_event(&event, &channel, data),
            Ok(_) => self.send_error(None, "Unsupported message"),
            Err(error) => self.send_error(None, &error.to_string()),
        }
    }

    fn subscription_error(&self, channel: &str, kind: &str, error: &str, status: u16) {
        self.send(&frame::subscription_error(channel, kind, error, status));
    }

    fn subscribe(&mut self, sub: Subscribe) {
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
            self.app.metrics.refused(Limit::Subscriptions);
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
            let own = self.user.as_ref().is_some_and(|u| {
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
        if kind.is_presence() && channel_data.is_none() && self.user.is_none() {
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
        let hub = &self.app.hub;
        let member = match (kind.is_presence(), channel_data, &self.user) {
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
        let member_id: Option<Box<str>> = member.as_ref().map(|m| m.user_id.as_str().into());
        if let Some(member) = &member {
            if !self.member_fits(channel, member) {
                return;
            }
        }
        // The cached event (or a miss, and its webhook) goes to new subscriptions only: a
        // repeated subscribe must not become a webhook per frame.
        let cache = is_cache_channel(channel) && !already;
        if let Some(cluster) = self.app.cluster().cloned() {
            return self.subscribe_in_cluster(&cluster, channel, kind, member, cache);
        }
        let joined = match member {
            Some(member) => match hub.subscribe_presence(
                channel,
                self.id.conn,
                &self.outbox,
                member,
                limits.max_presence_members,
            ) {
                Ok(joined) => joined,
                Err(PresenceRefused::Full { max }) => {
                    self.app.metrics.refused(Limit::PresenceMembers);
                    return self.subscription_error(
                        channel,
                        "LimitReached",
                        &format!("The presence channel already has the maximum of {max} members"),
                        4100,
                    );
                }
            },
            None => hub.subscribe(channel, self.id.conn, &self.outbox),
        };
        if kind.requires_auth() {
            self.authorized();
        }
        if joined.occupied && kind != ChannelKind::ServerToUser {
            self.app
                .webhook("channel_occupied", || WebhookEvent::ChannelOccupied {
                    channel: channel.into(),
                });
        }
        if let (true, Some(user_id)) = (joined.member_added, member_id) {
            self.app
                .webhook("member_added", || WebhookEvent::MemberAdded {
                    channel: channel.into(),
                    user_id,
                });
        }
        if cache {
            self.app.replay_cache(channel, &self.outbox);
        }
        if !joined.already {
            self.subscribed(channel);
            self.channels.push(channel.into());
            self.announce_subscription_count(channel, kind);
        }
    }

    /// A subscription in a cluster: the state task records it in Redis first, then
    /// confirms it, so a client that got `subscription_succeeded` is in every node's counts
    /// (and, on presence channels, gets the cluster's member list).
    fn subscribe_in_cluster(
        &mut self,
        cluster: &Cluster,
        channel: &str,
        kind: ChannelKind,
        member: Option<Member>,
        cache: bool,
    ) {
        if kind.requires_auth() {
            self.authorized();
        }
        let op = match member {
            Some(member) => Op::Join(Box::new(Join {
                app: self.app.clone(),
                channel: channel.into(),
                conn: self.id.conn,
                socket_id: self.socket_id().to_string().into(),
                outbox: self.outbox.clone(),
                member,
                cache,
            })),
            None => Op::Subscribe {
                app: self.app.clone(),
                channel: channel.into(),
                conn: self.id.conn,
                outbox: self.outbox.clone(),
                cache,
            },
        };
        if cluster.op(op).is_err() {
            self.app.metrics.refused(Limit::ClusterQueue);
            return self.subscription_error(
                channel,
                "ServerBusy",
                "The server is too busy to take subscriptions; retry shortly",
                503,
            );
        }
        if !self.channels.iter().any(|c| c.as_ref() == channel) {
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

    /// Queues a cluster state change. A refused one needs nothing from the session: the
    /// adapter answers or restates it, and logs refusals (rate-limited: a flood repeats them).
    fn cluster_op(&self, cluster: &Cluster, op: Op) {
        let _ = cluster.op(op);
    }

    /// Leaves one channel (unsubscribe or close) and reports what that changed.
    fn leave_channel(&self, channel: &str) {
        match self.app.cluster() {
            Some(cluster) => {
                let leave = Op::Leave {
                    app: self.app.clone(),
                    channel: channel.into(),
                    conn: self.id.conn,
                };
                // Never refused for a full queue; on a node that is leaving, the adapter
                // removes the connection from the hub itself.
                let _ = cluster.op(leave);
            }
            None => {
                let left = self.app.hub.unsubscribe(channel, self.id.conn);
                self.left(channel, left);
            }
        }
    }

    /// Tells a channel's subscribers (and webhooks) its new subscription count, if the app
    /// wants that. Presence channels have member events instead.
    fn announce_subscription_count(&self, channel: &str, kind: ChannelKind) {
        if kind.is_presence() || kind == ChannelKind::ServerToUser {
            return;
        }
        let count = self.app.hub.counts(channel).subscription_count;
        self.app.subscription_count_changed(channel, count);
    }

    /// Reports what leaving `channel` changed: vacated and member-removed webhooks, and the
    /// new subscription count.
    fn left(&self, channel: &str, left: Option<Left>) {
        let Some(left) = left else {
            return;
        };
        let kind = ChannelKind::of(channel);
        if let Some(user_id) = left.member_removed {
            self.app
                .webhook("member_removed", || WebhookEvent::MemberRemoved {
                    channel: channel.into(),
                    user_id: user_id.as_ref().into(),
                });
        }
        if left.vacated && kind != ChannelKind::ServerToUser {
            self.app
                .webhook("channel_vacated", || WebhookEvent::ChannelVacated {
                    channel: channel.into(),
                });
        }
        self.announce_subscription_count(channel, kind);
    }

    fn signin(&mut self, signin: Signin) {
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
        if let Some(current) = &self.user {
            if *current.id != *user.id {
                return self.refuse_signin(format!(
                    "This connection is signed in as another user; connect again to sign in as '{}'",
                    user.id
                ));
            }
        }
        // Signing in again as the same user refreshes its user_info and watchlist.
        self.sign_out();
        let id: Arc<str> = Arc::from(user.id.as_str());
        let users = &self.app.users;
        let came_online = users.add(&id, self.id.conn, &self.outbox);
        self.send(&frame::signin_success(&signin.user_data));
        let watchlist: Vec<Arc<str>> = user
            .watchlist
            .iter()
            .map(|w| Arc::from(w.as_str()))
            .collect();
        let cluster = self.app.cluster();
        if !watchlist.is_empty() {
            users.watch(self.id.conn, &self.outbox, &watchlist);
            match cluster {
                Some(cluster) => self.cluster_op(
                    cluster,
                    Op::Watchlist {
                        app: self.app.clone(),
                        outbox: self.outbox.clone(),
                        users: watchlist.clone(),
                    },
                ),
                None => {
                    let (online, offline): (Vec<&str>, Vec<&str>) = watchlist
                        .iter()
                        .map(AsRef::as_ref)
                        .partition(|w| users.is_online(w));
                    self.send(&frame::watchlist_events(online, offline));
                }
            }
        }
        match cluster {
            Some(cluster) => self.cluster_op(
                cluster,
                Op::User {
                    app: self.app.clone(),
                    user: id.clone(),
                },
            ),
            None if came_online => users.notify_watchers(&id, true),
            None => {}
        }
        self.user = Some(Box::new(SignedIn {
            id,
            user_info: user.user_info.map(String::into_boxed_str),
            watchlist,
        }));
        self.authorized();
    }

    fn refuse_signin(&self, message: String) {
        self.outbox.close(CloseReason::Unauthorized.code(), message);
    }

    fn sign_out(&mut self) {
        if let Some(user) = self.user.take() {
            let users = &self.app.users;
            users.unwatch(self.id.conn, &user.watchlist);
            let went_offline = users.remove(&user.id, self.id.conn);
            match self.app.cluster() {
                Some(cluster) => self.cluster_op(
                    cluster,
                    Op::User {
                        app: self.app.clone(),
                        user: user.id.clone(),
                    },
                ),
                None if went_offline => users.notify_watchers(&user.id, false),
                None => {}
            }
        }
    }

    /// Shows a new subscription on the console.
    fn subscribed(&self, channel: &str) {
        self.app.metrics.console.emit("subscribed", |row| {
            row.insert("socket_id".into(), self.socket_id().to_string().into());
            row.insert("channel".into(), channel.into());
        });
    }

    fn unsubscribe(&mut self, channel: &str) {
        if let Some(pos) = self.channels.iter().position(|c| c.as_ref() == channel) {
            self.app.metrics.console.emit("unsubscribed", |row| {
                row.insert("socket_id".into(), self.socket_id().to_string().into());
                row.insert("channel".into(), channel.into());
            });
            self.channels.swap_remove(pos);
            self.leave_channel(channel);
        }
    }

    fn client_event(&mut self, event: &str, channel: &str, data: &str) {
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
            self.app.metrics.refused(Limit::ClientEvents);
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
        self.app
            .publish(channel, &frame, Some(self.id.conn), Some(&socket_id));
        self.app
            .webhook("client_event", || WebhookEvent::ClientEvent {
                channel: channel.into(),
                event: event.into(),
                data: data.into(),
                socket_id: socket_id.as_str().into(),
                user_id: user_id.as_deref().map(Into::into),
            });
    }

    /// Leaves every channel and signs out, as soon as the connection starts closing: it takes
    /// no more frames, so it must not count as a subscriber or a member while it lingers.
    pub(super) fn leave_all(&mut self) {
        for channel in std::mem::take(&mut self.channels) {
            self.leave_channel(&channel);
        }
        self.sign_out();
    }

    /// Leaves every channel and the shutdown registry; called once when the connection ends.
    pub(super) fn close(&mut self, shared: &Shared) {
        self.leave_all();
        shared.unregister_connection(self.id.conn);
    }
}
