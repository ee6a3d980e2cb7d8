//! Order per endpoint and channel: a batch to an endpoint starts its first attempt only
//! once every earlier batch to that endpoint with an event on one of its channels has
//! finished (delivered or given up), so `channel_occupied` reaches a receiver before its
//! `channel_vacated` and `member_added` before its `member_removed`, even when the first
//! is in retry. Batches on other channels do not wait: one failing channel holds back
//! only itself.

use std::collections::HashMap;

use tokio_util::sync::{CancellationToken, DropGuard};

/// A dispatcher's record of the last delivery per endpoint and channel.
#[derive(Default)]
pub(super) struct Order {
    /// Per endpoint (by its place in the app's list): channel → the last delivery's number
    /// and end.
    last: Vec<HashMap<Box<str>, (u64, CancellationToken)>>,
    /// The number of the next delivery.
    next: u64,
    /// Entries after the last sweep of finished deliveries.
    swept_at: usize,
}

/// A delivery's place in the order: the deliveries it must wait for, and its own end,
/// signalled when this is dropped (however the delivery ends).
pub(super) struct Turn {
    after: Vec<(u64, CancellationToken)>,
    _done: DropGuard,
}

impl Turn {
    /// Waits until every delivery before this one on its channels has finished.
    pub(super) async fn wait(&mut self) {
        for (_, before) in &self.after {
            before.cancelled().await;
        }
        self.after.clear();
    }
}

impl Order {
    /// The turn of a new delivery to `endpoint` carrying events on `channels` (a channel
    /// may repeat).
    pub(super) fn next<'a>(
        &mut self,
        endpoint: usize,
        channels: impl IntoIterator<Item = &'a str>,
    ) -> Turn {
        if self.last.len() <= endpoint {
            self.last.resize_with(endpoint + 1, HashMap::new);
        }
        self.sweep();
        let id = self.next;
        self.next += 1;
        let done = CancellationToken::new();
        let last = &mut self.last[endpoint];
        let mut after: Vec<(u64, CancellationToken)> = Vec::new();
        for channel in channels {
            let previous = match last.get_mut(channel) {
                Some(previous) => std::mem::replace(previous, (id, done.clone())),
                None => {
                    last.insert(channel.into(), (id, done.clone()));
                    continue;
                }
            };
            // Itself (a repeated channel), one already waited for, or one finished: skip.
            if previous.0 != id
                && !previous.1.is_cancelled()
                && !after.iter().any(|(a, _)| *a == previous.0)
            {
                after.push(previous);
            }
        }
        Turn {
            after,
            _done: done.drop_guard(),
        }
    }

    /// The turn of a batch claimed from another node of a cluster: it is older than every
    /// batch this node holds on its channels, so it waits for none of them (the queue
    /// orders it after the earlier ones another node wrote), and later ones wait for it.
    pub(super) fn claimed<'a>(
        &mut self,
        endpoint: usize,
        channels: impl IntoIterator<Item = &'a str>,
    ) -> Turn {
        let mut turn = self.next(endpoint, channels);
        turn.after.clear();
        turn
    }

    /// Forgets finished deliveries once the entries have doubled since the last sweep, so
    /// the record stays proportional to the deliveries in flight at O(1) amortised cost.
    fn sweep(&mut self) {
        let entries: usize = self.last.iter().map(HashMap::len).sum();
        if entries < 2 * self.swept_at.max(64) {
            return;
        }
        for last in &mut self.last {
            last.retain(|_, (_, done)| !done.is_cancelled());
        }
        self.swept_at = self.last.iter().map(HashMap::len).sum();
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;

    /// Whether the turn still waits (one poll).
    fn waits(turn: &mut Turn) -> bool {
        let wait = turn.wait();
        futures_util::pin_mut!(wait);
        let waker = futures_util::task::noop_waker();
        wait.as_mut()
            .poll(&mut std::task::Context::from_waker(&waker))
            .is_pending()
    }

    #[test]
    fn a_batch_waits_only_for_earlier_batches_on_its_channels_to_its_endpoint() {
        let mut order = Order::default();
        let first = order.next(0, ["a", "a", "b"]);
        let mut same_channel = order.next(0, ["b", "c"]);
        let mut other_channel = order.next(0, ["d"]);
        let mut other_endpoint = order.next(1, ["a"]);
        assert!(waits(&mut same_channel), "b follows the first batch");
        assert!(!waits(&mut other_channel));
        assert!(!waits(&mut other_endpoint));
        drop(first);
        assert!(!waits(&mut same_channel), "free once the first has ended");
        // A repeated channel never makes a batch wait for itself.
        let mut repeated = order.next(2, ["x", "x", "x"]);
        assert!(!waits(&mut repeated));
    }

    #[test]
    fn finished_deliveries_are_forgotten() {
        let mut order = Order::default();
        for i in 0..10_000 {
            drop(order.next(0, [format!("c{i}").as_str()]));
        }
        assert!(order.last[0].len() <= 256, "{}", order.last[0].len());
    }
}
