//! One task runs the timeouts of every connection: pings after `activity_timeout`, 4201
//! after an unanswered ping, 4009 for a connection that did not authenticate in time, 1008
//! for a frame or fragmented message not finished within `partial_message_timeout`, and
//! the end of a closing connection's linger. It also sends the subscription counts held
//! back by [`crate::count_events`], and wakes the connections whose frame budget has
//! refilled.
//!
//! A timer parked in each connection task would cost its size (over 100 bytes) in every
//! idle connection; here a connection keeps five tick counts in its outbox, and one pass
//! over the connection registry per period reads them. Timeouts are seconds long, so a
//! period of a quarter of the shortest one (at most a second) is precise enough.

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use herald_protocol::close::CloseReason;
use herald_protocol::frame;

use crate::adapter::transitions;
use crate::clock::{now, ticks};
use crate::outbox::Outbox;
use crate::shared::Shared;
use crate::wire::text_frame;

/// The close code for a frame or message left unfinished too long: 1008, policy violation.
/// The client broke no rule of RFC 6455 (which sets no time limit), only the server's own,
/// so 1002 would misreport it; and pusher-js answers 1008 with a plain reconnect, which suits
/// a client that may just be on a bad network.
const PARTIAL_MESSAGE_CLOSE: u16 = 1008;

/// Sweeps until the server state is gone.
pub(crate) async fn run(shared: Weak<Shared>) {
    let period = match shared.upgrade() {
        Some(s) => (s
            .config
            .server
            .activity_timeout
            .min(s.config.server.pong_timeout)
            .min(s.config.server.partial_message_timeout)
            / 4)
        .clamp(Duration::from_millis(100), Duration::from_secs(1)),
        None => return,
    };
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        sweep(&shared, now());
    }
}

fn sweep(shared: &Shared, now: u32) {
    shared.refills.wake_due(now);
    let activity = ticks(shared.config.server.activity_timeout);
    let pong = ticks(shared.config.server.pong_timeout);
    let mut silent = 0;
    shared.connections.for_each(|outbox| {
        check(outbox, now, activity, pong);
        // A silent connection is nudged so that recovery looks at it: it leaves its
        // entry once it has been silent long enough (`ws/recovery.rs`).
        if crate::ws::silent(outbox, now) {
            silent += 1;
            outbox.nudge();
        }
    });
    shared.silent.store(silent, Ordering::Relaxed);
    let broker = shared.adapter.broker.as_ref();
    for app in shared.apps.all() {
        for (channel, count) in app.due_subscription_counts(now) {
            transitions::subscription_count(broker, &app, &channel, count);
        }
    }
}

/// Applies whichever of a connection's deadlines has passed.
fn check(outbox: &Outbox, now: u32, activity: u32, pong: u32) {
    let t = &outbox.timers;
    let passed = |deadline: u32| deadline != 0 && now >= deadline;
    let linger = t.linger_until.load(Ordering::Relaxed);
    if linger != 0 {
        if passed(linger) {
            outbox.abort();
        }
        return;
    }
    if passed(t.auth_deadline.load(Ordering::Relaxed)) {
        t.auth_deadline.store(0, Ordering::Relaxed);
        outbox.close(
            CloseReason::Unauthorized.code(),
            "Connection not authorized within timeout",
        );
        return;
    }
    if passed(t.partial_deadline.load(Ordering::Relaxed)) {
        t.partial_deadline.store(0, Ordering::Relaxed);
        outbox.close(PARTIAL_MESSAGE_CLOSE, "Message not completed in time");
        return;
    }
    let ping_sent = t.ping_sent.load(Ordering::Relaxed);
    if ping_sent != 0 {
        if now.wrapping_sub(ping_sent) >= pong {
            let r = CloseReason::PongNotReceived;
            outbox.close(r.code(), r.message());
        }
    } else if now.wrapping_sub(t.last_read.load(Ordering::Relaxed)) >= activity {
        t.ping_sent.store(now, Ordering::Relaxed);
        outbox.push(text_frame(frame::PING));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    #[test]
    fn an_unfinished_message_is_closed_with_1008_once_its_deadline_passes() {
        let outbox = Outbox::new(1 << 16);
        outbox.timers.touch(1);
        outbox.timers.partial_deadline.store(5, Ordering::Relaxed);
        check(&outbox, 4, 100, 100);
        assert_eq!(outbox.take(&mut VecDeque::new()), None);
        check(&outbox, 5, 100, 100);
        assert_eq!(
            outbox.take(&mut VecDeque::new()).map(|c| c.code),
            Some(PARTIAL_MESSAGE_CLOSE)
        );
        assert_eq!(outbox.timers.partial_deadline.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn pings_then_closes_an_unresponsive_connection() {
        let outbox = Outbox::new(1 << 16);
        outbox.timers.touch(10);
        let mut frames = VecDeque::new();
        check(&outbox, 15, 10, 5);
        assert_eq!(outbox.take(&mut frames), None);
        assert!(frames.is_empty(), "not idle long enough");
        check(&outbox, 20, 10, 5);
        assert_eq!(outbox.take(&mut frames), None);
        assert_eq!(frames.len(), 1, "pinged");
        outbox.timers.touch(22);
        check(&outbox, 26, 10, 5);
        assert_eq!(outbox.take(&mut frames), None, "answered: no close");
        check(&outbox, 32, 10, 5);
        check(&outbox, 37, 10, 5);
        assert_eq!(outbox.take(&mut frames).map(|c| c.code), Some(4201));
    }

    #[test]
    fn auth_deadline_and_linger() {
        let outbox = Outbox::new(1 << 16);
        outbox.timers.touch(1);
        outbox.timers.auth_deadline.store(5, Ordering::Relaxed);
        check(&outbox, 4, 100, 100);
        assert_eq!(outbox.take(&mut VecDeque::new()), None);
        check(&outbox, 5, 100, 100);
        assert_eq!(
            outbox.take(&mut VecDeque::new()).map(|c| c.code),
            Some(4009)
        );
        outbox.timers.partial_deadline.store(6, Ordering::Relaxed);
        check(&outbox, 6, 100, 100);
        assert_eq!(
            outbox.take(&mut VecDeque::new()).map(|c| c.code),
            Some(4009),
            "the first close stands"
        );
        outbox.timers.linger_until.store(8, Ordering::Relaxed);
        check(&outbox, 7, 100, 100);
        assert!(!outbox.is_aborted());
        check(&outbox, 8, 100, 100);
        assert!(outbox.is_aborted());
    }
}
