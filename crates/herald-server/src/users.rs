//! Signed-in users of one app on this node: which connections are signed in as whom, so
//! the HTTP API can terminate a user's connections and watchlists can tell who is online.
//!
//! Only `pusher:signin` puts a connection here; presence membership alone does not make a
//! user "signed in" (Pusher's terminate_connections affects signed-in connections only).
//! Watchlists are kept the other way round (watched user → watching connections) so a user
//! coming online or going offline reaches its watchers with one lookup.

use std::collections::HashMap;
use std::sync::Arc;

use herald_protocol::frame;
use parking_lot::Mutex;

use crate::ids::ConnId;
use crate::outbox::Outbox;
use crate::wire::text_frame;

/// The message sent with the close of a terminated connection, so the user's client can
/// tell why it was disconnected.
pub(crate) const TERMINATED: &str = "You got disconnected by the app.";

type Connections = HashMap<Arc<str>, Vec<(ConnId, Arc<Outbox>)>>;

/// An app's signed-in connections by user id, and watchlists by watched user.
#[derive(Debug, Default)]
pub struct UserRegistry {
    users: Mutex<Connections>,
    watchers: Mutex<Connections>,
}

impl UserRegistry {
    /// Records `conn` as signed in as `user`. Returns `true` when this is the user's first
    /// connection (the user just came online).
    pub fn add(&self, user: &Arc<str>, conn: ConnId, outbox: &Arc<Outbox>) -> bool {
        let mut users = self.users.lock();
        let conns = users.entry(user.clone()).or_default();
        let first = conns.is_empty();
        if !conns.iter().any(|(c, _)| *c == conn) {
            conns.push((conn, outbox.clone()));
        }
        first
    }

    /// Forgets `conn`. Returns `true` when it was the user's last connection (the user
    /// just went offline).
    pub fn remove(&self, user: &str, conn: ConnId) -> bool {
        let mut users = self.users.lock();
        let Some(conns) = users.get_mut(user) else {
            return false;
        };
        conns.retain(|(c, _)| *c != conn);
        if conns.is_empty() {
            users.remove(user);
            true
        } else {
            false
        }
    }

    /// Whether at least one connection is signed in as `user`.
    pub fn is_online(&self, user: &str) -> bool {
        self.users.lock().contains_key(user)
    }

    /// Registers `conn` as watching each of `users`.
    pub fn watch(&self, conn: ConnId, outbox: &Arc<Outbox>, users: &[Arc<str>]) {
        let mut watchers = self.watchers.lock();
        for user in users {
            let list = watchers.entry(user.clone()).or_default();
            if !list.iter().any(|(c, _)| *c == conn) {
                list.push((conn, outbox.clone()));
            }
        }
    }

    /// Removes `conn` from the watchers of each of `users`.
    pub fn unwatch(&self, conn: ConnId, users: &[Arc<str>]) {
        let mut watchers = self.watchers.lock();
        for user in users {
            if let Some(list) = watchers.get_mut(user) {
                list.retain(|(c, _)| *c != conn);
                if list.is_empty() {
                    watchers.remove(user);
                }
            }
        }
    }

    /// Tells everyone watching `user` that it came online (or went offline).
    pub fn notify_watchers(&self, user: &str, online: bool) {
        let watchers: Vec<Arc<Outbox>> = self
            .watchers
            .lock()
            .get(user)
            .map(|list| list.iter().map(|(_, o)| o.clone()).collect())
            .unwrap_or_default();
        if watchers.is_empty() {
            return;
        }
        let (on, off): (&[&str], &[&str]) = if online {
            (&[user], &[])
        } else {
            (&[], &[user])
        };
        let frame = crate::outbox::Fanout::new(text_frame(&frame::watchlist_events(
            on.iter().copied(),
            off.iter().copied(),
        )));
        for outbox in watchers {
            outbox.push_shared(&frame);
        }
    }

    /// Closes every connection signed in as `user` with `code` (the HTTP API's
    /// terminate_connections); returns how many there were.
    pub fn terminate(&self, user: &str, code: u16) -> usize {
        let connections = self.connections(user);
        for outbox in &connections {
            outbox.close(code, TERMINATED);
        }
        connections.len()
    }

    /// Every signed-in user on this node.
    pub fn user_ids(&self) -> Vec<String> {
        self.users.lock().keys().map(|u| u.to_string()).collect()
    }

    /// The outboxes of every connection signed in as `user`.
    pub fn connections(&self, user: &str) -> Vec<Arc<Outbox>> {
        self.users
            .lock()
            .get(user)
            .map(|conns| conns.iter().map(|(_, o)| o.clone()).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_and_last_connection_are_reported() {
        let users = UserRegistry::default();
        let alice: Arc<str> = Arc::from("alice");
        let o = Arc::new(Outbox::new(1024));
        assert!(users.add(&alice, 1, &o));
        assert!(!users.add(&alice, 2, &o));
        assert!(users.is_online("alice"));
        assert_eq!(users.connections("alice").len(), 2);
        assert!(!users.remove("alice", 1));
        assert!(users.remove("alice", 2));
        assert!(!users.is_online("alice"));
        assert!(!users.remove("bob", 3));
    }

    #[test]
    fn terminate_closes_only_the_users_connections() {
        let users = UserRegistry::default();
        let (a1, a2, b) = (
            Arc::new(Outbox::new(1024)),
            Arc::new(Outbox::new(1024)),
            Arc::new(Outbox::new(1024)),
        );
        users.add(&Arc::from("alice"), 1, &a1);
        users.add(&Arc::from("alice"), 2, &a2);
        users.add(&Arc::from("bob"), 3, &b);
        assert_eq!(users.terminate("alice", 4009), 2);
        let mut frames = std::collections::VecDeque::new();
        for outbox in [&a1, &a2] {
            let close = outbox.take(&mut frames).expect("closed");
            assert_eq!((close.code, close.message.as_ref()), (4009, TERMINATED));
        }
        assert_eq!(b.take(&mut frames), None, "bob stays");
        assert_eq!(users.terminate("nobody", 4009), 0);
    }
}
