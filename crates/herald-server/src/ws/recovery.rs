//! One connection's part in recovery: its identity, what its client confirmed on each
//! channel, the subscriptions held while it waits for an identity, and what it leaves
//! behind when it ends uncleanly ([`crate::recovery`]).
//!
//! Confirmation. Serial order is delivery order on each channel (the hub gives the serial
//! under the lock it fans out under), so "the client processed serial S" says everything
//! below S too. Frames leave the outbox in order, so a `pusher:ping` queued after a write
//! is answered (pusher-js answers from JavaScript, once it has handled what came before)
//! only after every earlier frame was processed: the serials the channels had reached when
//! the ping was queued are confirmed by its pong. One ping is outstanding at most; it is
//! sent after the first write that leaves something unconfirmed, and again on its pong if
//! more was written meanwhile, so a busy channel costs a ping per round trip.
//!
//! A connection whose ping has gone unanswered for [`SILENT_AFTER`] can confirm nothing
//! more, so what it would leave is already known: it leaves it then, without closing, so
//! that its client coming back on any node of a cluster finds it at once (a cluster's new
//! connection also asks the other nodes to close their silent connections of its
//! identity: [`Recoveries::take_over`]). A connection that answers again later leaves its
//! entry anew when it ends.
//!
//! A connection of an app that does not recover keeps none of this: the session holds one
//! empty pointer for it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::FutureExt;
use herald_protocol::close::CloseReason;
use herald_protocol::frame::{self, Subscribe};
use tokio::sync::oneshot;

use crate::apps::App;
use crate::clock;
use crate::outbox::Outbox;
use crate::recovery::{Plan, Recover, Recoveries, Remembered, NOT_JOINED};
use crate::wire::text_frame;

/// How long a subscription waits for the connection's identity (pusher-js subscribes
/// before its sign-in's HTTP round trip ends), for the identity's entry to be taken (a
/// cluster asks its shared store), or for a silent connection it takes over to leave its entry,
/// before it goes on without recovery.
pub(super) const HOLD: Duration = Duration::from_millis(1500);

/// A connection of the same identity with a ping unanswered this long is silent: a new
/// connection takes over from it. A healthy tab answers within a round trip.
const SILENT_AFTER: Duration = Duration::from_secs(2);

/// How long an entry is kept past its window, so that a client that comes back late is
/// told so (`herald:recovery_failed`) rather than nothing.
const TOLD_LATE: Duration = Duration::from_secs(600);

/// A connection's recovery state.
#[derive(Default)]
pub(super) struct Tracker {
    identity: Option<Box<str>>,
    channels: Vec<Tracked>,
    /// The pongs still due before the outstanding ping's serials are confirmed (two when
    /// the sweeper's own ping was already out); 0: no ping out.
    pongs_due: u8,
    /// What the previous connection of this identity left, as taken; its channels go as
    /// they are subscribed to.
    recover: Option<Remembered>,
    /// A take under way (a cluster asks its backend); subscriptions wait for it.
    taking: Option<oneshot::Receiver<Option<Remembered>>>,
    /// Subscriptions waiting for the identity, for the take, or for the entry of a
    /// connection taken over.
    held: Vec<Subscribe>,
    hold: Hold,
    /// The connection went silent and left its entry already; nothing was confirmed since.
    left: bool,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// Nothing held yet.
    #[default]
    Idle,
    /// Holding until this tick.
    Until(u32),
    /// Taken over a silent connection: waiting for its entry until this tick.
    Awaiting(u32),
    /// The wait ended: nothing is held any more.
    Over,
}

struct Tracked {
    channel: Box<str>,
    /// The last serial the client confirmed; `None` until the backend joined a fresh
    /// subscription (a cluster joins after a round trip) and said at which serial.
    confirmed: Option<u64>,
    /// The channel's serial when the outstanding ping was queued.
    pending: u64,
    /// Where the backend writes the serial the subscription joined through, until read.
    joined: Option<Arc<std::sync::atomic::AtomicU64>>,
}

impl Tracked {
    /// Reads the serial the subscription joined through once the backend wrote it;
    /// whether it has.
    fn resolve(&mut self) -> bool {
        let Some(cell) = &self.joined else {
            return true;
        };
        let through = cell.load(Ordering::Acquire);
        if through == NOT_JOINED {
            return false;
        }
        self.confirmed.get_or_insert(through);
        self.pending = self.pending.max(through);
        self.joined = None;
        true
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Nudges `outbox` every 100 ms until `until`, so a connection whose subscriptions are
/// held looks again even if nothing else wakes it.
fn wake_until(outbox: &Arc<Outbox>, until: u32) {
    let weak: Weak<Outbox> = Arc::downgrade(outbox);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            let Some(outbox) = weak.upgrade() else {
                return;
            };
            outbox.nudge();
            if clock::now() >= until {
                return;
            }
        }
    });
}

impl Tracker {
    /// The connection now has an identity (its first: a sign-in, or a presence member):
    /// it takes over from silent connections of the same identity (the user's signed-in
    /// connections, or the member's connections on `presence`, the channel it joins, and
    /// in a cluster those of other nodes), and takes what the identity's last connection
    /// left.
    pub(super) fn identify(
        &mut self,
        app: &App,
        outbox: &Arc<Outbox>,
        recoveries: &dyn Recoveries,
        identity: &str,
        presence: Option<&str>,
    ) {
        if self.identity.is_some() {
            return;
        }
        self.identity = Some(identity.into());
        let now = clock::now();
        let mut others = app.users.connections(identity);
        if let Some(channel) = presence {
            others.extend(app.hub.member_outboxes(channel, identity));
        }
        let mut took_over = false;
        for other in others {
            if !Arc::ptr_eq(&other, outbox) && silent(&other, now) {
                let r = CloseReason::PongNotReceived;
                other.close(r.code(), r.message());
                took_over = true;
            }
        }
        recoveries.take_over(&app.config().id, identity, presence);
        self.start_take(app, outbox, recoveries);
        if self.taking.is_some() && matches!(self.hold, Hold::Idle | Hold::Over) {
            let until = now + clock::ticks(HOLD);
            self.hold = Hold::Until(until);
            wake_until(outbox, until);
        }
        if took_over && self.recover.is_none() {
            let until = now + clock::ticks(HOLD);
            self.hold = Hold::Awaiting(until);
            wake_until(outbox, until);
        }
    }

    /// Takes the identity's entry: at once when the backend answers at once, or else
    /// through a task that nudges the connection when the answer comes.
    fn start_take(&mut self, app: &App, outbox: &Arc<Outbox>, recoveries: &dyn Recoveries) {
        let Some(identity) = &self.identity else {
            return;
        };
        if self.taking.is_some() {
            return;
        }
        let mut take = recoveries.take(&app.config().id, identity);
        if let Some(taken) = (&mut take).now_or_never() {
            self.recover = self.recover.take().or(taken);
            return;
        }
        let (tell, told) = oneshot::channel();
        let weak = Arc::downgrade(outbox);
        tokio::spawn(async move {
            let _ = tell.send(take.await);
            if let Some(outbox) = weak.upgrade() {
                outbox.nudge();
            }
        });
        self.taking = Some(told);
    }

    /// Whether a take under way has answered (or was given up).
    fn poll_take(&mut self) -> bool {
        let Some(taking) = &mut self.taking else {
            return true;
        };
        match taking.try_recv() {
            Ok(taken) => {
                self.recover = self.recover.take().or(taken);
                self.taking = None;
                true
            }
            Err(oneshot::error::TryRecvError::Empty) => false,
            Err(oneshot::error::TryRecvError::Closed) => {
                self.taking = None;
                true
            }
        }
    }

    /// Whether `sub` must wait: the connection has no identity yet and some remembered
    /// entry names the channel, its entry is being taken, or it waits for a taken-over
    /// connection's entry. `any_silent`: some connection of the node is silent
    /// ([`silent`]).
    pub(super) fn hold(
        &mut self,
        app: &App,
        outbox: &Arc<Outbox>,
        recoveries: &dyn Recoveries,
        sub: &Subscribe,
        any_silent: bool,
    ) -> bool {
        let taking = !self.poll_take();
        let wait = match self.hold {
            Hold::Over => false,
            Hold::Awaiting(_) => true,
            Hold::Until(_) => self.identity.is_none() || taking,
            Hold::Idle => {
                // A silent subscriber may be this client's old connection, which has not
                // ended yet: its identity's new connection takes over once it has one.
                let now = clock::now();
                let wait = taking
                    || self.identity.is_none()
                        && (recoveries.awaited(&app.config().id, &sub.channel)
                            || (any_silent
                                && app.hub.any_subscriber(&sub.channel, |o| silent(o, now))));
                if wait {
                    let until = clock::now() + clock::ticks(HOLD);
                    self.hold = Hold::Until(until);
                    wake_until(outbox, until);
                }
                wait
            }
        };
        if wait {
            self.held.push(sub.clone());
        }
        wait
    }

    /// Drops a held subscription the client unsubscribed from; returns whether it was held.
    pub(super) fn unhold(&mut self, channel: &str) -> bool {
        let before = self.held.len();
        self.held.retain(|s| s.channel != channel);
        before != self.held.len()
    }

    /// The held subscriptions, once their wait is over (the identity came and its entry
    /// was taken, the entry came, or the bound passed); they are then answered in the
    /// order they came.
    pub(super) fn release(
        &mut self,
        app: &App,
        outbox: &Arc<Outbox>,
        recoveries: &dyn Recoveries,
    ) -> Vec<Subscribe> {
        let now = clock::now();
        let taken = self.poll_take();
        let over = match self.hold {
            Hold::Idle | Hold::Over => return Vec::new(),
            Hold::Until(until) => (self.identity.is_some() && taken) || now >= until,
            Hold::Awaiting(until) => {
                if taken && self.recover.is_none() {
                    self.start_take(app, outbox, recoveries);
                }
                self.recover.is_some() || now >= until
            }
        };
        if !over {
            return Vec::new();
        }
        self.hold = Hold::Over;
        std::mem::take(&mut self.held)
    }

    /// What a new subscription to `channel` recovers.
    pub(super) fn plan(&mut self, channel: &str) -> Plan {
        let Some(recover) = &mut self.recover else {
            return Plan::Fresh;
        };
        let Some(i) = recover.channels.iter().position(|(c, _)| c == channel) else {
            return Plan::Fresh;
        };
        let (_, serial) = recover.channels.swap_remove(i);
        if unix_ms() > recover.until_ms {
            Plan::Failed("window_expired")
        } else {
            Plan::Replay(serial)
        }
    }

    /// The connection is subscribing to `channel` as `recover` says; its client is known
    /// to hold what it replays from, and what it joins through once the backend says.
    pub(super) fn track(&mut self, channel: &str, recover: &Recover) {
        if self.channels.iter().any(|t| *t.channel == *channel) {
            return;
        }
        let confirmed = match recover.plan {
            Plan::Replay(after) => Some(after),
            Plan::Fresh | Plan::Failed(_) => None,
        };
        let mut tracked = Tracked {
            channel: channel.into(),
            confirmed,
            pending: confirmed.unwrap_or(0),
            joined: Some(recover.joined.clone()),
        };
        tracked.resolve();
        self.channels.push(tracked);
    }

    pub(super) fn untrack(&mut self, channel: &str) {
        self.channels.retain(|t| *t.channel != *channel);
    }

    /// After frames left the outbox: a ping if the client holds unconfirmed events and no
    /// ping is out.
    pub(super) fn after_write(&mut self, app: &App, outbox: &Outbox) {
        if self.pongs_due > 0 || self.identity.is_none() {
            return;
        }
        let mut unconfirmed = false;
        for t in &mut self.channels {
            if !t.resolve() {
                continue;
            }
            let Some(confirmed) = t.confirmed else {
                continue;
            };
            let serial = app
                .hub
                .quiet(&t.channel, || app.history.last_serial(&t.channel));
            // A ring swept away reads 0: what was confirmed stands.
            t.pending = serial.max(t.pending).max(confirmed);
            unconfirmed |= t.pending > confirmed;
        }
        if !unconfirmed {
            return;
        }
        let timers = &outbox.timers;
        // The sweeper's ping, if out, is answered first.
        self.pongs_due = if timers.ping_sent.load(Ordering::Relaxed) != 0 {
            2
        } else {
            timers
                .ping_sent
                .store(clock::now().max(1), Ordering::Relaxed);
            1
        };
        outbox.push(text_frame(frame::PING));
    }

    /// The client's `pusher:pong`.
    pub(super) fn pong(&mut self, app: &App, outbox: &Outbox) {
        if self.pongs_due == 0 {
            return;
        }
        self.left = false;
        self.pongs_due -= 1;
        if self.pongs_due == 0 {
            for t in &mut self.channels {
                if t.confirmed.is_some() {
                    t.confirmed = Some(t.pending);
                }
            }
            self.after_write(app, outbox);
        }
    }

    /// A connection silent for [`SILENT_AFTER`] leaves its entry now (see the module's
    /// text); called when the connection is nudged (the sweeper nudges silent ones).
    pub(super) fn check_silent(&mut self, app: &App, outbox: &Outbox, recoveries: &dyn Recoveries) {
        if self.left || self.pongs_due == 0 || !silent(outbox, clock::now()) {
            return;
        }
        let Some(identity) = &self.identity else {
            return;
        };
        self.left = true;
        if let Some((entry, keep)) = self.entry(app) {
            recoveries.remember(&app.config().id, identity, entry, keep);
        }
    }

    /// What the connection leaves, and for how long it is kept: every channel it was on
    /// with what its client confirmed, and those it had not subscribed to again yet.
    fn entry(&self, app: &App) -> Option<(Remembered, Duration)> {
        let window = app.config().recovery_window;
        let mut channels: Vec<(String, u64)> = self
            .channels
            .iter()
            .filter_map(|t| Some((t.channel.to_string(), t.confirmed?)))
            .collect();
        if let Some(left) = &self.recover {
            for (channel, serial) in &left.channels {
                if !channels.iter().any(|(c, _)| c == channel) {
                    channels.push((channel.clone(), *serial));
                }
            }
        }
        if channels.is_empty() || window.is_zero() {
            return None;
        }
        let until_ms = unix_ms() + u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        Some((Remembered { until_ms, channels }, window + TOLD_LATE))
    }

    /// What the connection leaves when it ends: remembered for its identity unless its
    /// client closed it (a Close frame: pusher-js's `disconnect()`, a closed tab), the
    /// server told the client not to come back (4000–4099), or it left its entry already
    /// when it went silent.
    pub(super) fn end(&mut self, app: &App, recoveries: &dyn Recoveries, close: Option<u16>) {
        let unclean = match close {
            None => true,
            Some(code) => (4100..=4299).contains(&code),
        };
        let Some(identity) = self.identity.take().filter(|_| unclean && !self.left) else {
            return;
        };
        for t in &mut self.channels {
            t.resolve();
        }
        if let Some((entry, keep)) = self.entry(app) {
            recoveries.remember(&app.config().id, &identity, entry, keep);
        }
        self.channels.clear();
        self.recover = None;
    }
}

/// Whether a connection has a ping unanswered for [`SILENT_AFTER`] or longer.
pub(crate) fn silent(outbox: &Outbox, now: u32) -> bool {
    let sent = outbox.timers.ping_sent.load(Ordering::Relaxed);
    sent != 0 && now.wrapping_sub(sent) >= clock::ticks(SILENT_AFTER)
}

#[cfg(test)]
mod tests {
    //! The confirmation rules over the single-node backend: a session driven with the
    //! client's JSON, as in `session.rs`'s tests.

    use std::sync::Arc;

    use herald_protocol::auth::user_auth;
    use herald_protocol::frame;
    use serde_json::{json, Value};

    use super::super::session::Session;
    use crate::settings::Config;
    use crate::shared::Shared;
    use crate::wire::text_frame;

    const KEY: &str = "k";
    const SECRET: &str = "s";

    fn node() -> Arc<Shared> {
        let toml = format!(
            "[[apps]]\nid = \"1\"\nkey = \"{KEY}\"\nsecret = \"{SECRET}\"\nhistory_max_events = 10\n"
        );
        Shared::for_tests(Config::from_toml(&toml, &|_| None).expect("valid config"))
    }

    fn connect(shared: &Arc<Shared>, user: &str) -> Session {
        let slot = shared
            .apps
            .by_key(KEY)
            .expect("the app")
            .try_connect(0)
            .expect("a slot");
        let mut session = Session::new(shared, slot, false);
        let user_data = json!({ "id": user }).to_string();
        let auth = user_auth(KEY, SECRET, &session.socket_id().to_string(), &user_data);
        let signin =
            json!({"event": "pusher:signin", "data": {"auth": auth, "user_data": user_data}});
        session.handle_text(shared, &signin.to_string());
        let subscribe = json!({"event": "pusher:subscribe", "data": {"channel": "feed"}});
        session.handle_text(shared, &subscribe.to_string());
        session.outbox().sent();
        session
    }

    fn publish(shared: &Shared, n: u32) {
        let app = shared.apps.by_key(KEY).expect("the app");
        let frame = text_frame(&frame::event("e", "feed", &format!("\"{n}\""), None));
        shared.adapter.broker.publish(&app, "feed", &frame, None);
    }

    fn events(session: &Session) -> Vec<String> {
        let sent: Vec<Value> = session.outbox().sent();
        sent.iter()
            .map(|f| f["event"].as_str().unwrap_or("").to_owned())
            .collect()
    }

    fn pong(shared: &Shared, session: &mut Session) {
        session.handle_text(shared, r#"{"event":"pusher:pong","data":{}}"#);
    }

    fn remembered(shared: &Shared, user: &str) -> Option<Vec<(String, u64)>> {
        let recoveries = shared.adapter.recoveries.as_ref();
        use futures_util::FutureExt;
        let taken = recoveries.take("1", user).now_or_never().flatten();
        taken.map(|r| r.channels)
    }

    #[tokio::test]
    async fn one_ping_is_out_at_a_time_and_its_pong_confirms_what_came_before_it() {
        let shared = node();
        let mut s = connect(&shared, "u");
        publish(&shared, 1);
        publish(&shared, 2);
        s.after_outbox(&shared);
        assert_eq!(events(&s), ["e", "e", "pusher:ping"]);
        publish(&shared, 3);
        s.after_outbox(&shared);
        assert_eq!(events(&s), ["e"], "no second ping while one is out");
        // The pong confirms serials 1 and 2; 3 went out since, so the next ping follows.
        pong(&shared, &mut s);
        assert_eq!(events(&s), ["pusher:ping"]);
        // No Close from the client: what it confirmed is remembered for its user.
        s.leave_all(&shared);
        assert_eq!(remembered(&shared, "u"), Some(vec![("feed".into(), 2)]));
    }

    #[tokio::test]
    async fn a_clean_close_leaves_nothing_and_nothing_is_pinged_without_an_identity() {
        let shared = node();
        let mut s = connect(&shared, "v");
        publish(&shared, 1);
        s.after_outbox(&shared);
        assert_eq!(events(&s), ["e", "pusher:ping"]);
        s.outbox().close(1000, "bye");
        s.leave_all(&shared);
        assert_eq!(remembered(&shared, "v"), None);

        let slot = shared
            .apps
            .by_key(KEY)
            .expect("app")
            .try_connect(0)
            .expect("slot");
        let mut anonymous = Session::new(&shared, slot, false);
        let subscribe = json!({"event": "pusher:subscribe", "data": {"channel": "feed"}});
        anonymous.handle_text(&shared, &subscribe.to_string());
        anonymous.outbox().sent();
        publish(&shared, 2);
        anonymous.after_outbox(&shared);
        assert_eq!(events(&anonymous), ["e"]);
    }
}
