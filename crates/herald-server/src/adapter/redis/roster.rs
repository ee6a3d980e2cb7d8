//! A node's view of a presence channel's members across the cluster, and the rules that
//! keep what its subscribers are told consistent: every `member_added` and
//! `member_removed` a subscriber gets changes the list it was given, in one order.
//!
//! Why a view: a membership change is decided by a script in Redis and announced on the bus
//! afterwards, by whichever node ran it. A subscriber's list is read from Redis. Without a
//! view, a list read between another node's change and its announcement already holds the
//! change, and the announcement then repeats it (`member_added` for a member already
//! listed); two nodes' announcements about one user can arrive in either order; and a node
//! cut off from the bus misses announcements for good.
//!
//! The rules: every change made in Redis carries the channel's version (a counter the
//! script increments on each change of membership), and every list read carries the version
//! it was read at. The view applies a list only if it is newer than the last one applied,
//! keeps the changes newer than that list, and drops any change it has already applied or
//! that a list it applied already held. What the view's members gain or lose is what the
//! node's subscribers are told. While Redis is away changes are applied without a version,
//! and the next list read settles what they got wrong.
//!
//! Pure rules, no I/O: the caller holds the view's lock while it applies a change and pushes
//! the frames the change calls for, so every subscriber sees one order.

use std::collections::{BTreeMap, HashMap};

/// What the node's subscribers must be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    Added { user: String, info: Option<String> },
    Removed { user: String },
}

/// One presence channel's members as this node tells its subscribers.
#[derive(Debug, Default)]
pub(crate) struct Roster {
    /// The version of the last list applied: every change up to it is in `members`.
    base: u64,
    /// The members with their `user_info`, by user id: a list always comes out in one
    /// order, whatever order the changes came in.
    members: BTreeMap<String, Option<String>>,
    /// Changes newer than `base`, by user: present or not, and at which version.
    newer: HashMap<String, (bool, u64)>,
}

impl Roster {
    /// The members, for a new subscriber's `subscription_succeeded`.
    pub(crate) fn members(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.members
            .iter()
            .map(|(user, info)| (user.as_str(), info.as_deref()))
    }

    pub(crate) fn contains(&self, user: &str) -> bool {
        self.members.contains_key(user)
    }

    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    /// The changes kept since the last list: one per user who changed since, departed
    /// users included, so a list read now and then keeps it bounded.
    pub(crate) fn kept(&self) -> usize {
        self.newer.len()
    }

    /// A change made in Redis at `version` (a user's first connection anywhere, or its last
    /// one gone). `None` if the subscribers knew already.
    pub(crate) fn change(
        &mut self,
        user: &str,
        present: bool,
        info: Option<&str>,
        version: u64,
    ) -> Option<Change> {
        if version <= self.base {
            return None;
        }
        match self.newer.get(user) {
            Some(&(_, seen)) if seen >= version => return None,
            _ => {}
        }
        self.newer.insert(user.to_owned(), (present, version));
        self.set(user, present, info)
    }

    /// A change made while Redis was away (no version): applied as it comes; the next list
    /// read corrects it if another node decided otherwise meanwhile.
    pub(crate) fn change_unversioned(
        &mut self,
        user: &str,
        present: bool,
        info: Option<&str>,
    ) -> Option<Change> {
        self.set(user, present, info)
    }

    fn set(&mut self, user: &str, present: bool, info: Option<&str>) -> Option<Change> {
        if present {
            if self.members.contains_key(user) {
                return None;
            }
            self.members
                .insert(user.to_owned(), info.map(str::to_owned));
            Some(Change::Added {
                user: user.to_owned(),
                info: info.map(str::to_owned),
            })
        } else {
            self.members.remove(user)?;
            Some(Change::Removed {
                user: user.to_owned(),
            })
        }
    }

    /// A member list read from Redis at `version`. Users this node holds connections of
    /// (`here`) stay members whatever the list says: the node knows they are connected, and
    /// the list may predate its own restatement. Returns what the subscribers must be told,
    /// or nothing if an equal or newer list was applied already.
    pub(crate) fn list(
        &mut self,
        list: impl IntoIterator<Item = (String, Option<String>)>,
        version: u64,
        here: impl Fn(&str) -> bool,
    ) -> Vec<Change> {
        if version <= self.base && self.base > 0 {
            return Vec::new();
        }
        let mut next: BTreeMap<String, Option<String>> = list.into_iter().collect();
        self.newer.retain(|_, &mut (_, seen)| seen > version);
        for (user, &(present, _)) in &self.newer {
            if present {
                if !next.contains_key(user) {
                    let info = self.members.get(user).cloned().flatten();
                    next.insert(user.clone(), info);
                }
            } else {
                next.remove(user);
            }
        }
        for (user, info) in &self.members {
            if !next.contains_key(user) && here(user) {
                next.insert(user.clone(), info.clone());
            }
        }
        self.base = version;
        let mut changes: Vec<Change> = self
            .members
            .keys()
            .filter(|user| !next.contains_key(*user))
            .map(|user| Change::Removed { user: user.clone() })
            .collect();
        changes.extend(
            next.iter()
                .filter(|(user, _)| !self.members.contains_key(*user))
                .map(|(user, info)| Change::Added {
                    user: user.clone(),
                    info: info.clone(),
                }),
        );
        self.members = next;
        changes
    }

    /// Forgets every version: Redis lost its data and counts from zero again. The members
    /// stay until a list read settles them.
    pub(crate) fn rebase(&mut self) {
        self.base = 0;
        self.newer.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn added(user: &str) -> Change {
        Change::Added {
            user: user.into(),
            info: None,
        }
    }

    fn removed(user: &str) -> Change {
        Change::Removed { user: user.into() }
    }

    fn list(users: &[&str]) -> Vec<(String, Option<String>)> {
        users.iter().map(|u| (u.to_string(), None)).collect()
    }

    fn nobody(_: &str) -> bool {
        false
    }

    fn sorted(mut changes: Vec<Change>) -> Vec<Change> {
        changes.sort_by_key(|c| format!("{c:?}"));
        changes
    }

    #[test]
    fn a_change_a_list_already_held_is_not_announced_again() {
        // Bob joined at 5 on another node; a list read at 5 holds him; the announcement of
        // his join arrives after it.
        let mut roster = Roster::default();
        assert_eq!(
            sorted(roster.list(list(&["ann", "bob"]), 5, nobody)),
            vec![added("ann"), added("bob")]
        );
        assert_eq!(roster.change("bob", true, None, 5), None);
        assert_eq!(roster.change("cat", true, None, 6), Some(added("cat")));
    }

    #[test]
    fn a_users_changes_apply_in_version_order_whatever_their_arrival() {
        // Ann left on one node (7) and came back on another (8): the join arrives first.
        let mut roster = Roster::default();
        roster.list(list(&["ann"]), 5, nobody);
        assert_eq!(
            roster.change("ann", true, None, 8),
            None,
            "already a member"
        );
        assert_eq!(
            roster.change("ann", false, None, 7),
            None,
            "older than the join"
        );
        assert!(roster.contains("ann"));
        // And the other way round: her leave (10) arrives before a late join (9).
        assert_eq!(roster.change("ann", false, None, 10), Some(removed("ann")));
        assert_eq!(roster.change("ann", true, None, 9), None);
        assert!(!roster.contains("ann"));
    }

    #[test]
    fn a_newer_list_corrects_what_was_missed_and_keeps_newer_changes() {
        let mut roster = Roster::default();
        roster.list(list(&["ann", "bob"]), 3, nobody);
        // Missed: bob left at 4, cat joined at 5. Dan joined at 9, heard.
        assert_eq!(roster.change("dan", true, None, 9), Some(added("dan")));
        // A list read at 6 lacks dan (newer) and bob, and holds cat.
        let changes = sorted(roster.list(list(&["ann", "cat"]), 6, nobody));
        assert_eq!(changes, vec![added("cat"), removed("bob")]);
        assert!(roster.contains("dan"), "a change newer than the list stays");
        // An older list changes nothing.
        assert!(roster.list(list(&["zed"]), 4, nobody).is_empty());
        assert_eq!(roster.len(), 3);
    }

    #[test]
    fn users_connected_here_stay_whatever_an_early_list_says() {
        // This node was declared dead and reaped; its restatement has not reached Redis
        // when its list is read: its own member must not be removed and added back.
        let mut roster = Roster::default();
        roster.list(list(&["ann", "bob"]), 3, nobody);
        let changes = roster.list(list(&["bob"]), 7, |user| user == "ann");
        assert!(changes.is_empty(), "{changes:?}");
        assert!(roster.contains("ann"));
    }

    #[test]
    fn changes_made_while_redis_was_away_are_settled_by_the_next_list() {
        let mut roster = Roster::default();
        roster.list(list(&["ann"]), 2, nobody);
        assert_eq!(
            roster.change_unversioned("bob", true, None),
            Some(added("bob"))
        );
        assert_eq!(roster.change_unversioned("bob", true, None), None);
        // Bob's join never reached Redis, and ann left meanwhile elsewhere.
        let changes = sorted(roster.list(list(&[]), 4, nobody));
        assert_eq!(changes, vec![removed("ann"), removed("bob")]);
    }

    #[test]
    fn after_redis_lost_its_data_versions_count_from_zero_again() {
        let mut roster = Roster::default();
        roster.list(list(&["ann"]), 40, nobody);
        roster.rebase();
        assert_eq!(roster.change("bob", true, None, 1), Some(added("bob")));
        let changes = roster.list(list(&["ann", "bob"]), 2, nobody);
        assert!(changes.is_empty(), "{changes:?}");
    }

    #[test]
    fn a_list_forgets_the_changes_it_holds() {
        let mut roster = Roster::default();
        roster.list(list(&[]), 1, nobody);
        for (i, version) in (2..2002).enumerate() {
            roster.change(&format!("u{i}"), i % 2 == 0, None, version);
        }
        assert_eq!(
            roster.kept(),
            2000,
            "one per user who changed, departed ones too"
        );
        roster.list(list(&[]), 2001, nobody);
        assert_eq!(roster.kept(), 0);
    }

    #[test]
    fn info_travels_with_a_join() {
        let mut roster = Roster::default();
        roster.list(vec![("ann".into(), Some("{\"n\":1}".into()))], 1, nobody);
        let infos: Vec<_> = roster.members().collect();
        assert_eq!(infos, vec![("ann", Some("{\"n\":1}"))]);
        assert_eq!(
            roster.change("bob", true, Some("{}"), 2),
            Some(Change::Added {
                user: "bob".into(),
                info: Some("{}".into())
            })
        );
    }
}
