//! One connection's protocol state: its socket id, its subscriptions, and the rules for
//! each client message (subscribe, unsubscribe, ping, client events).
//!
//! The session never touches the socket. It answers by pushing frames to its own outbox and
//! reaches other connections only through the hub, so the same logic serves any transport.
//! Nothing here closes the connection for a client mistake: bad messages, failed
//! subscriptions and rejected client events get an error frame and the socket stays open.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use herald_protocol::auth::verify_channel_auth;
use herald_protocol::channel::{validate_channel_name, validate_event_name, ChannelKind};
use herald_protocol::close::CloseReason;
use herald_protocol::frame::{self, ClientMessage, Subscribe};
use herald_protocol::presence::parse_member;
use tokio::time::Instant;

use super::text_frame;
use crate::apps::App;
use crate::hub::{ConnId, PresenceRefused};
use crate::outbox::Outbox;
use crate::Shared;

/// A fixed one-second window is enough to enforce "N per second" and costs two words.
struct RateWindow {
    started: Instant,
    used: u32,
}

pub(super) struct Session {
    app: Arc<App>,
    conn: ConnId,
    socket_id: Box<str>,
    outbox: Arc<Outbox>,
    /// Channels this connection is subscribed to; few per connection, so a Vec beats a map.
    channels: Vec<Box<str>>,
    client_events: RateWindow,
}

impl Session {
    pub(super) fn new(shared: &Shared, app: Arc<App>) -> Self {
        let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        let outbox = Arc::new(Outbox::new(shared.config.outbox_max_bytes));
        shared.register_connection(conn, &outbox);
        Session {
            app,
            conn,
            socket_id: format!("{}.{}", shared.node_id, conn).into(),
            outbox,
            channels: Vec::new(),
            client_events: RateWindow {
                started: Instant::now(),
                used: 0,
            },
        }
    }

    pub(super) fn socket_id(&self) -> &str {
        &self.socket_id
    }

    pub(super) fn app_id(&self) -> &str {
        &self.app.config.id
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
            Ok(ClientMessage::Signin(_)) => {
                self.send_error(None, "User sign-in is not supported by this server yet")
            }
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
        let limits = &self.app.config.limits;
        let channel = sub.channel.as_str();
        let kind = match validate_channel_name(channel, limits.max_channel_name_length) {
            Ok(kind) => kind,
            Err(error) => {
                return self.subscription_error(channel, "InvalidChannel", &error.to_string(), 400)
            }
        };
        if kind == ChannelKind::ServerToUser {
            return self.subscription_error(
                channel,
                "AuthError",
                "Server-to-user channels require user sign-in, which this server does not support yet",
                403,
            );
        }
        let auth = sub.auth.as_deref().unwrap_or("");
        let channel_data = if kind.is_presence() {
            match sub.channel_data.as_deref() {
                Some(data) => Some(data),
                None => {
                    return self.subscription_error(
                        channel,
                        "AuthError",
                        "Presence channels require channel_data",
                        401,
                    )
                }
            }
        } else {
            None
        };
        if kind.requires_auth() {
            let app = &self.app.config;
            if let Err(error) = verify_channel_auth(
                &app.key,
                &app.secret,
                auth,
                &self.socket_id,
                channel,
                channel_data,
            ) {
                tracing::debug!(channel, %error, "Subscription refused");
                return self.subscription_error(channel, "AuthError", &error.to_string(), 401);
            }
        }
        let hub = &self.app.hub;
        let joined = match channel_data {
            Some(data) => {
                let member = match parse_member(data) {
                    Ok(member) => member,
                    Err(error) => {
                        return self.subscription_error(
                            channel,
                            "AuthError",
                            &error.to_string(),
                            400,
                        )
                    }
                };
                if member.user_id.chars().count() > limits.max_presence_user_id_length {
                    return self.subscription_error(
                        channel,
                        "LimitReached",
                        &format!(
                            "The user_id is longer than the allowed {} characters",
                            limits.max_presence_user_id_length
                        ),
                        4301,
                    );
                }
                if member.user_info.as_ref().map_or(0, String::len)
                    > limits.max_presence_user_info_bytes
                {
                    return self.subscription_error(
                        channel,
                        "LimitReached",
                        &format!(
                            "The user_info is larger than the allowed {} bytes",
                            limits.max_presence_user_info_bytes
                        ),
                        4301,
                    );
                }
                match hub.subscribe_presence(
                    channel,
                    self.conn,
                    &self.outbox,
                    member,
                    limits.max_presence_members,
                ) {
                    Ok(joined) => joined,
                    Err(PresenceRefused::Full { max }) => {
                        return self.subscription_error(
                            channel,
                            "LimitReached",
                            &format!(
                                "The presence channel already has the maximum of {max} members"
                            ),
                            4100,
                        )
                    }
                }
            }
            None => hub.subscribe(channel, self.conn, &self.outbox),
        };
        if !joined.already {
            self.channels.push(channel.into());
        }
    }

    fn unsubscribe(&mut self, channel: &str) {
        if let Some(pos) = self.channels.iter().position(|c| c.as_ref() == channel) {
            self.channels.swap_remove(pos);
            self.app.hub.unsubscribe(channel, self.conn);
        }
    }

    fn client_event(&mut self, event: &str, channel: &str, data: &str) {
        let limits = &self.app.config.limits;
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
        let Some(user_id) = self.app.hub.subscription(channel, self.conn) else {
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
        let now = Instant::now();
        if now.duration_since(self.client_events.started).as_secs() >= 1 {
            self.client_events = RateWindow {
                started: now,
                used: 0,
            };
        }
        if self.client_events.used >= limits.client_events_per_second {
            let r = CloseReason::ClientEventRejected;
            return self.send_error(Some(r.code()), r.message());
        }
        self.client_events.used += 1;
        // The frame is rebuilt from its parts so a client cannot inject fields like user_id.
        let frame = text_frame(&frame::event(event, channel, data, user_id.as_deref()));
        self.app.hub.publish(channel, &frame, Some(self.conn));
    }

    /// Leaves every channel and the shutdown registry; called once when the connection ends.
    pub(super) fn close(&mut self, shared: &Shared) {
        for channel in std::mem::take(&mut self.channels) {
            self.app.hub.unsubscribe(&channel, self.conn);
        }
        shared.unregister_connection(self.conn);
    }
}
