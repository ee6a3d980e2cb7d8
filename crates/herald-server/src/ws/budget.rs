//! What one connection may make the server read and handle per second: a token bucket of
//! bytes holding one second's worth when full, from which every frame the client sends
//! takes its bytes plus a fixed share for the frame itself (`client_bytes_per_second /
//! client_frames_per_second`). A flood of small frames is held to the frame rate, one of
//! big messages to the byte rate, and a mix of the two to their sum.
//!
//! Every data and control frame is charged, whatever it asks for (a ping, a repeated
//! subscribe, a client event), so no kind of frame is a free way to spend the server's
//! CPU. A message is charged its size once inflated when that is more than its size on the
//! wire: a 70-byte permessage-deflate frame that inflates to 64 KiB costs the server a
//! 64 KiB inflate and parse, and is charged 64 KiB.
//!
//! A message's size is known only once it is decoded, so the bytes bucket may go into debt
//! by one message (at most `max_message_bytes`). While either bucket is empty the
//! connection stops reading: the client's frames wait in its TCP window, and nothing it
//! sent is dropped or refused. A throttled connection keeps no timer: it puts its outbox on
//! the node's [`Refills`] list, and the sweeper wakes it once its wait is over (within a
//! sweep period, at most a second: the bucket holds a second's worth, so the rate holds).

use std::sync::Weak;

use crate::outbox::Outbox;

/// The throttled connections, each with the tick its budget allows it again: one entry per
/// waiting connection, none for the others.
#[derive(Debug, Default)]
pub(crate) struct Refills(parking_lot::Mutex<Vec<(u32, Weak<Outbox>)>>);

impl Refills {
    /// Wakes the connection of `outbox` at tick `due` (or the first sweep after it).
    pub(super) fn wait(&self, due: u32, outbox: Weak<Outbox>) {
        self.0.lock().push((due, outbox));
    }

    /// Wakes the connections whose wait is over at tick `now`, and forgets closed ones.
    pub(crate) fn wake_due(&self, now: u32) {
        let mut due = Vec::new();
        self.0.lock().retain(|(at, outbox)| {
            let keep = now < *at && outbox.strong_count() > 0;
            if !keep {
                due.push(outbox.clone());
            }
            keep
        });
        // Woken outside the list's lock: a woken task may throttle itself again at once.
        for outbox in due.iter().filter_map(Weak::upgrade) {
            outbox.nudge();
        }
    }
}

/// Clock ticks in a second: a tick earns a tenth of a second's bytes.
const TICKS_PER_SECOND: u32 = crate::clock::TICKS_PER_SECOND;

/// The configured rates: frames and bytes per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Rates {
    pub(super) frames: u32,
    /// At least 1024 and at most 1 GiB (the configuration's bounds), so a bucket fits an
    /// `i32` and a tick earns at least a hundred bytes.
    pub(super) bytes: u32,
}

impl Rates {
    /// What a frame costs on top of its bytes.
    fn per_frame(self) -> i64 {
        i64::from((self.bytes / self.frames.max(1)).max(1))
    }

    fn per_tick(self) -> i64 {
        i64::from((self.bytes / TICKS_PER_SECOND).max(1))
    }
}

/// One connection's bucket, in eight bytes: the connection's future holds it.
#[derive(Debug)]
pub(super) struct Budget {
    /// The tick the bucket was last filled at.
    at: u32,
    /// Bytes left; negative: the last message cost more than was left.
    credit: i32,
}

impl Budget {
    /// A full bucket at tick `now`.
    pub(super) fn new(now: u32, rates: Rates) -> Self {
        Budget {
            at: now,
            credit: capacity(rates),
        }
    }

    /// Charges one frame (a whole message) of `bytes`.
    pub(super) fn spend(&mut self, bytes: usize, rates: Rates) {
        let cost = i64::try_from(bytes).unwrap_or(i64::MAX / 2) + rates.per_frame();
        let credit = i64::from(self.credit).saturating_sub(cost);
        self.credit = i32::try_from(credit.max(i64::from(i32::MIN))).unwrap_or(i32::MIN);
    }

    /// Whether the connection may decode another message now, refilling first.
    pub(super) fn allows(&mut self, now: u32, rates: Rates) -> bool {
        self.refill(now, rates);
        self.credit >= 0
    }

    /// Ticks until the bucket allows another message (0: it does now).
    pub(super) fn wait(&mut self, now: u32, rates: Rates) -> u32 {
        if self.allows(now, rates) {
            return 0;
        }
        let debt = -i64::from(self.credit);
        let ticks = (debt + rates.per_tick() - 1) / rates.per_tick();
        ticks.clamp(1, i64::from(u32::MAX / 2)) as u32
    }

    /// Adds what the ticks since the last fill earned, up to one second's worth.
    fn refill(&mut self, now: u32, rates: Rates) {
        let elapsed = now.wrapping_sub(self.at);
        if elapsed == 0 {
            return;
        }
        let earned = rates.per_tick().saturating_mul(i64::from(elapsed));
        let credit = (i64::from(self.credit) + earned).min(i64::from(capacity(rates)));
        self.credit = i32::try_from(credit).unwrap_or(i32::MAX);
        self.at = now;
    }
}

fn capacity(rates: Rates) -> i32 {
    i32::try_from(rates.bytes).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 20 small frames or 10,000 bytes a second: a frame costs 500 bytes besides its own.
    const RATES: Rates = Rates {
        frames: 20,
        bytes: 10_000,
    };

    #[test]
    fn a_full_bucket_holds_one_seconds_frames_then_refills_a_tenth_per_tick() {
        let mut b = Budget::new(100, RATES);
        let mut taken = 0;
        while b.allows(100, RATES) {
            b.spend(2, RATES);
            taken += 1;
        }
        // 10,000 / 502 is 19.9: the twentieth frame goes into debt, and is let through.
        assert_eq!(taken, 20, "20 small frames a second");
        assert_eq!(
            b.wait(100, RATES),
            1,
            "a tick earns 1,000 bytes: two frames"
        );
        assert!(b.allows(101, RATES));
        b.spend(2, RATES);
        b.spend(2, RATES);
        assert!(!b.allows(101, RATES));
        // A long pause refills a second's worth, no more.
        assert!(b.allows(100_000, RATES));
        let mut taken = 0;
        while b.allows(100_000, RATES) {
            b.spend(2, RATES);
            taken += 1;
        }
        assert_eq!(taken, 20);
    }

    #[test]
    fn bytes_go_into_debt_by_one_message_and_the_wait_covers_it() {
        let mut b = Budget::new(1, RATES);
        b.spend(3_500, RATES);
        assert!(b.allows(1, RATES), "6,000 left");
        // An inflated 64 KiB message on a 10,000 B/s budget: 58,500 B of debt.
        b.spend(64_000, RATES);
        assert!(!b.allows(1, RATES));
        assert_eq!(b.wait(1, RATES), 59, "5.9 s to earn the debt back");
        assert!(!b.allows(59, RATES));
        assert!(b.allows(60, RATES));
        // Paid back, not beyond: 500 left, and a 1-byte frame costs 501.
        b.spend(1, RATES);
        assert!(!b.allows(60, RATES));
    }

    #[test]
    fn the_frame_share_is_at_least_a_byte() {
        let rates = Rates {
            frames: 10_000_000,
            bytes: 1024,
        };
        let mut b = Budget::new(1, rates);
        for _ in 0..1025 {
            assert!(b.allows(1, rates));
            b.spend(0, rates);
        }
        assert!(!b.allows(1, rates));
    }

    #[test]
    fn refills_wake_the_due_connections_and_forget_closed_ones() {
        use std::sync::Arc;
        use std::task::{Context, Poll, Waker};
        let refills = Refills::default();
        let (early, late) = (Arc::new(Outbox::new(1024)), Arc::new(Outbox::new(1024)));
        let gone = Arc::new(Outbox::new(1024));
        let mut cx = Context::from_waker(Waker::noop());
        for o in [&early, &late] {
            assert_eq!(o.poll_ready(&mut cx), Poll::Pending);
        }
        refills.wait(5, Arc::downgrade(&early));
        refills.wait(9, Arc::downgrade(&late));
        refills.wait(9, Arc::downgrade(&gone));
        drop(gone);
        refills.wake_due(4);
        assert_eq!(early.poll_ready(&mut cx), Poll::Pending, "not due yet");
        refills.wake_due(5);
        assert_eq!(early.poll_ready(&mut cx), Poll::Ready(()));
        assert_eq!(late.poll_ready(&mut cx), Poll::Pending);
        assert_eq!(refills.0.lock().len(), 1, "the closed one is forgotten");
        refills.wake_due(9);
        assert_eq!(late.poll_ready(&mut cx), Poll::Ready(()));
        assert!(refills.0.lock().is_empty());
    }
}
