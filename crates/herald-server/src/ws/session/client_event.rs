//! Client events (`client-*`): the app's switch, the channel kinds that take them, the
//! sender's subscription, the size and the per-second rate; then one frame, rebuilt from
//! its parts, for the channel's other subscribers, and the `client_event` webhook.

use std::sync::atomic::Ordering;

use herald_protocol::channel::{validate_event_name, ChannelKind};
use herald_protocol::close::CloseReason;
use herald_protocol::frame;

use super::{RateWindow, Session};
use crate::metrics::Limit;
use crate::shared::Shared;
use crate::webhooks::{WebhookEvent, WebhookKind};
use crate::wire::text_frame;

impl Session {
    pub(super) fn client_event(&mut self, shared: &Shared, event: &str, channel: &str, data: &str) {
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
}
