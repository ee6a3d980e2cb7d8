//! What the node sends the other nodes: control messages and event frames, queued for the
//! publisher within its byte budget.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;

use super::publisher;
use super::Cluster;
use crate::adapter::bus::{self, BusMessage};
use crate::ids::SocketId;

impl Cluster {
    /// Sends a control message (one that names no channel) to every other node.
    pub(super) fn send(&self, message: &BusMessage) {
        self.enqueue(publisher::Outgoing {
            channel: self.bus.control().to_owned(),
            payload: bus::encode(self.node_id, message),
            append: None,
            confirmed: None,
        });
    }

    /// Sends an event frame to the other nodes' subscribers of `channel`.
    pub(super) fn send_event(
        &self,
        app: &str,
        channel: &str,
        except: Option<SocketId>,
        frame: &Bytes,
        cache: Option<(&str, Duration)>,
    ) {
        self.enqueue(publisher::Outgoing {
            channel: self.bus.channel_of(app, channel),
            payload: bus::encode_event(
                self.node_id,
                app,
                channel,
                except.map(|s| s.to_string()).as_deref(),
                frame,
                cache.map(|(data, ttl)| (data, ttl.as_millis() as u64)),
                false,
            )
            .0,
            append: None,
            confirmed: None,
        });
    }

    /// Queues an encoded message for the publisher, within the byte budget; counts and logs
    /// what a full queue drops.
    pub(super) fn enqueue(&self, message: publisher::Outgoing) {
        let cost = message.cost();
        if self.out.budget.take(cost) {
            if self.outgoing.try_send(message).is_ok() {
                return;
            }
            self.out.budget.give(cost);
        }
        let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if self.dropped_log.ready(self.started) {
            tracing::warn!(
                dropped = n,
                queued_bytes = self.out.budget.used(),
                max_bytes = self.out.budget.max,
                "Cluster bus queue full: messages to other nodes dropped"
            );
        }
    }
}
