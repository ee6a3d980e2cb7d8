//! The protocol rules over the single-node backend: each test drives sessions with the
//! client's JSON and reads what their outboxes got, as the connection task would.

use std::collections::VecDeque;

use herald_protocol::auth::{channel_auth, user_auth};
use serde_json::{json, Value};

use herald_protocol::close::CloseReason;

use super::*;
use crate::settings::Config;

const KEY: &str = "k";
const SECRET: &str = "s";

fn node(limits: &str) -> Arc<Shared> {
    let toml = format!("[[apps]]\nid = \"1\"\nkey = \"{KEY}\"\nsecret = \"{SECRET}\"\n{limits}");
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
    a.send(json!({"event": "pusher:subscribe", "data": {"channel": "private-x", "auth": "k:bad"}}));
    assert_eq!(error_of(&a.one()), ("AuthError", 401));
    assert_ne!(
        a.auth_deadline(),
        0,
        "a refused subscription proves nothing"
    );
    // Signed for another socket: refused too.
    let stolen = channel_auth(KEY, SECRET, "1.999", "private-x", None);
    a.send(json!({"event": "pusher:subscribe", "data": {"channel": "private-x", "auth": stolen}}));
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
    a.send(json!({"event": "pusher:subscribe", "data": {"channel": "presence-x", "auth": "k:x"}}));
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
    let event = |channel: &str| json!({"event": "client-typing", "channel": channel, "data": "{}"});
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
    let events: Value = serde_json::from_str(online["data"].as_str().expect("data")).expect("JSON");
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
    a.send(
        json!({"event": "pusher:signin", "data": {"auth": "k:bad", "user_data": "{\"id\":\"x\"}"}}),
    );
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
    assert_eq!(shared.connections.len(), 0);
    a.session.release(&shared);
    assert_eq!(app.connection_count(), 0);
}
