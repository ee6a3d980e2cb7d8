//! How messages get from a subscriber's connections to the caller: one bounded queue, fed
//! straight from each connection's push handler (no task in between), and the gaps.
//!
//! Redis pub/sub keeps nothing for a subscriber that is not there, and the client hands
//! pushes over synchronously, so a full queue cannot make Redis wait: a message that does
//! not fit is dropped and a [`Gap::All`] reported instead. Every loss is reported: a
//! subscription lost with its connection (or moved away with its slot) gives a
//! [`Gap::Channels`] once it is active again, so state the caller reads back after the gap
//! misses nothing published after it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use redis::{PushInfo, PushKind, RedisError, Value};
use tokio::sync::{mpsc, Notify};

/// What a [`Deliveries`] queue yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Delivery {
    Message(Message),
    /// Messages may be missing here; the caller resyncs what it derives from them.
    Gap(Gap),
}

/// A message published on a subscribed channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub channel: String,
    pub payload: Bytes,
}

/// Which messages may have been lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Gap {
    /// Messages of these channels, published while their subscriptions were being restored
    /// (a reconnect, a failover, a slot moved). They are active again when this is
    /// delivered.
    Channels(Vec<String>),
    /// Any message: the queue was full and some were dropped.
    All,
}

impl Gap {
    fn merge(self, other: Gap) -> Gap {
        match (self, other) {
            (Gap::Channels(mut a), Gap::Channels(b)) => {
                for channel in b {
                    if !a.contains(&channel) {
                        a.push(channel);
                    }
                }
                Gap::Channels(a)
            }
            _ => Gap::All,
        }
    }
}

/// The receiving end of a subscriber's messages.
pub(crate) struct Deliveries {
    queue: mpsc::Receiver<Delivery>,
    gaps: Arc<Gaps>,
}

impl Deliveries {
    pub(super) fn new(capacity: usize) -> (Deliveries, mpsc::Sender<Delivery>, Arc<Gaps>) {
        let (tx, queue) = mpsc::channel(capacity.max(1));
        let gaps = Arc::new(Gaps::default());
        (
            Deliveries {
                queue,
                gaps: gaps.clone(),
            },
            tx,
            gaps,
        )
    }

    /// The next message or gap; `None` once the subscriber has stopped (every
    /// [`super::Subscriber`] handle dropped) and everything queued was taken. Cancel-safe.
    pub(crate) async fn recv(&mut self) -> Option<Delivery> {
        loop {
            // A gap waits behind the messages queued before it was noticed.
            match self.queue.try_recv() {
                Ok(delivery) => return Some(delivery),
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    return self.gaps.take().map(Delivery::Gap)
                }
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            if let Some(gap) = self.gaps.take() {
                return Some(Delivery::Gap(gap));
            }
            tokio::select! {
                delivery = self.queue.recv() => match delivery {
                    Some(delivery) => return Some(delivery),
                    None => return self.gaps.take().map(Delivery::Gap),
                },
                _ = self.gaps.posted.notified() => {}
            }
        }
    }
}

/// Gaps noticed but not yet in the queue, merged.
#[derive(Default)]
pub(super) struct Gaps {
    pending: parking_lot::Mutex<Option<Gap>>,
    /// Set with `pending`, so each message checks an atomic, not the lock.
    any: AtomicBool,
    posted: Notify,
}

impl Gaps {
    pub(super) fn add(&self, gap: Gap) {
        let mut pending = self.pending.lock();
        *pending = Some(match pending.take() {
            Some(old) => old.merge(gap),
            None => gap,
        });
        self.any.store(true, Ordering::Release);
        self.posted.notify_one();
    }

    fn take(&self) -> Option<Gap> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let mut pending = self.pending.lock();
        self.any.store(false, Ordering::Release);
        pending.take()
    }
}

/// What a connection's pushes tell the subscriber's task.
pub(super) enum Event {
    /// Redis confirmed a (sharded) subscription on connection `conn`.
    Subscribed { conn: u64, channel: String },
    /// Redis confirmed an unsubscription, or dropped the subscription itself (its slot
    /// moved to another shard).
    Unsubscribed { conn: u64, channel: String },
    /// The connection closed.
    Lost { conn: u64 },
    /// A subscribe or unsubscribe command failed.
    Failed {
        conn: u64,
        channel: String,
        error: RedisError,
    },
}

/// One connection's push handler.
pub(super) struct Sink {
    pub conn: u64,
    /// Cleared when the subscriber gives the connection up: a connection it dropped may
    /// live on a moment in a request in flight, and must not deliver what its replacement
    /// delivers too.
    pub open: Arc<AtomicBool>,
    pub queue: mpsc::Sender<Delivery>,
    pub gaps: Arc<Gaps>,
    pub events: mpsc::UnboundedSender<Event>,
}

impl Sink {
    pub(super) fn push(&self, push: PushInfo) {
        if !self.open.load(Ordering::Acquire) {
            return;
        }
        let conn = self.conn;
        match push.kind {
            PushKind::Message | PushKind::SMessage => self.message(push.data),
            PushKind::Subscribe | PushKind::SSubscribe => {
                if let Some(channel) = first_string(push.data) {
                    let _ = self.events.send(Event::Subscribed { conn, channel });
                }
            }
            PushKind::Unsubscribe | PushKind::SUnsubscribe => {
                if let Some(channel) = first_string(push.data) {
                    let _ = self.events.send(Event::Unsubscribed { conn, channel });
                }
            }
            PushKind::Disconnection => {
                let _ = self.events.send(Event::Lost { conn });
            }
            _ => {}
        }
    }

    fn message(&self, data: Vec<Value>) {
        let mut data = data.into_iter();
        let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
            (data.next(), data.next())
        else {
            return;
        };
        if let Some(gap) = self.gaps.take() {
            match self.queue.try_send(Delivery::Gap(gap)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.gaps.add(Gap::All);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
        let message = Message {
            channel: String::from_utf8_lossy(&channel).into_owned(),
            payload: Bytes::from(payload),
        };
        if let Err(mpsc::error::TrySendError::Full(_)) =
            self.queue.try_send(Delivery::Message(message))
        {
            self.gaps.add(Gap::All);
        }
    }
}

fn first_string(data: Vec<Value>) -> Option<String> {
    match data.into_iter().next()? {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_merge_and_all_absorbs() {
        let a = Gap::Channels(vec!["a".into(), "b".into()]);
        assert_eq!(
            a.clone().merge(Gap::Channels(vec!["b".into(), "c".into()])),
            Gap::Channels(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(a.merge(Gap::All), Gap::All);
    }

    #[tokio::test]
    async fn a_full_queue_drops_messages_and_reports_a_gap_after_what_it_kept() {
        let (mut deliveries, queue, gaps) = Deliveries::new(2);
        let (events, _events) = mpsc::unbounded_channel();
        let sink = Sink {
            conn: 0,
            open: Arc::new(AtomicBool::new(true)),
            queue,
            gaps,
            events,
        };
        let push = |n: u8| PushInfo {
            kind: PushKind::Message,
            data: vec![
                Value::BulkString(b"ch".to_vec()),
                Value::BulkString(vec![n]),
            ],
        };
        for n in 0..4 {
            sink.push(push(n));
        }
        let payload = |d: Option<Delivery>| match d {
            Some(Delivery::Message(m)) => m.payload,
            other => panic!("expected a message, got {other:?}"),
        };
        assert_eq!(payload(deliveries.recv().await), Bytes::from_static(&[0]));
        assert_eq!(payload(deliveries.recv().await), Bytes::from_static(&[1]));
        assert_eq!(deliveries.recv().await, Some(Delivery::Gap(Gap::All)));
        sink.push(push(9));
        assert_eq!(payload(deliveries.recv().await), Bytes::from_static(&[9]));
        drop(sink);
        assert_eq!(deliveries.recv().await, None);
    }
}
