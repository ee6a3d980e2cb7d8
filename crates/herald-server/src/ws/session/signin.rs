//! Signing a connection in as a user (`pusher:signin`), and out again: one identity per
//! connection, its watchlist, and what recovery learns of it. A refused sign-in closes the
//! connection with 4009, the one client mistake that does.

use std::sync::Arc;

use herald_protocol::auth::verify_user_auth;
use herald_protocol::close::CloseReason;
use herald_protocol::frame::{self, Signin};
use herald_protocol::user::parse_user_data;

use super::{tracker_of, user_of, Session, SignedIn};
use crate::shared::Shared;

impl Session {
    pub(super) fn signin(&mut self, shared: &Shared, signin: Signin) {
        let app = self.app.config();
        if let Err(error) = verify_user_auth(
            &app.key,
            &app.secret,
            &signin.auth,
            &self.socket_id().to_string(),
            &signin.user_data,
        ) {
            tracing::debug!(%error, "Sign-in refused");
            return self.refuse_signin(error.to_string());
        }
        let user = match parse_user_data(&signin.user_data) {
            Ok(user) => user,
            Err(error) => return self.refuse_signin(error.to_string()),
        };
        // One identity per connection: the old user's server-to-user channel and presence
        // memberships must not follow the socket to someone else.
        if let Some(current) = user_of(&self.person) {
            if *current.id != *user.id {
                return self.refuse_signin(format!(
                    "This connection is signed in as another user; connect again to sign in as '{}'",
                    user.id
                ));
            }
        }
        // Signing in again as the same user refreshes its user_info and watchlist.
        self.sign_out(shared);
        let id: Arc<str> = Arc::from(user.id.as_str());
        let users = &self.app.users;
        let first_here = users.add(&id, self.id.conn, &self.outbox);
        self.send(&frame::signin_success(&signin.user_data));
        let watchlist: Vec<Arc<str>> = user
            .watchlist
            .iter()
            .map(|w| Arc::from(w.as_str()))
            .collect();
        if !watchlist.is_empty() {
            users.watch(self.id.conn, &self.outbox, &watchlist);
        }
        shared
            .adapter
            .presence
            .signed_in(&self.app, &id, first_here, &self.outbox, &watchlist);
        let recoveries = &shared.adapter.recoveries;
        if let Some(tracker) = tracker_of(&mut self.person) {
            tracker.identify(&self.app, &self.outbox, recoveries.as_ref(), &id, None);
        }
        self.person.get_or_insert_with(Box::default).user = Some(SignedIn {
            id,
            user_info: user.user_info.map(String::into_boxed_str),
            watchlist,
        });
        self.authorized();
        self.release_held(shared);
    }

    pub(super) fn refuse_signin(&self, message: String) {
        self.outbox.close(CloseReason::Unauthorized.code(), message);
    }

    pub(super) fn sign_out(&mut self, shared: &Shared) {
        if let Some(user) = self.person.as_deref_mut().and_then(|p| p.user.take()) {
            let users = &self.app.users;
            users.unwatch(self.id.conn, &user.watchlist);
            let last_here = users.remove(&user.id, self.id.conn);
            shared
                .adapter
                .presence
                .signed_out(&self.app, &user.id, last_here);
        }
    }
}
