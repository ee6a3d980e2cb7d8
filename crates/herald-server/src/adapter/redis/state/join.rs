//! Presence joins: the member counted in Redis against the channel's limit, the cluster's
//! member list in `subscription_succeeded`, and `member_added` once for the cluster.

use super::counts::MemberSet;
use super::listening::subscribe_bus;
use super::{count, replay, StateTask};
use crate::adapter::redis::members::{pairs, Membership};
use crate::adapter::redis::ops::Join;
use crate::adapter::transitions::{self, edge, Refusal};
use crate::hub::Roster;

impl StateTask {
    pub(super) async fn join(&mut self, join: Join) {
        let Join {
            app,
            channel,
            conn,
            outbox,
            member,
            cache,
            recover,
        } = join;
        let already = app.hub.is_subscribed(&channel, conn);
        let local = app.hub.member_connections(&channel, &member.user_id) + u32::from(!already);
        let max = app.config().limits.max_presence_members;
        let info = member.user_info.as_deref().unwrap_or("");
        let node = self.cluster.node_id;
        let fresh = self.want_bus([(app.id().into(), channel.clone())]);
        let bus = subscribe_bus(
            self.subscriber.clone(),
            self.bus_names(&fresh),
            self.bus_wait(),
        );
        let answer = if self.healthy() {
            // The member count and the bus subscription in one round trip's time.
            let (set, ()) = tokio::join!(
                self.set_member(
                    node,
                    &app,
                    &channel,
                    &member.user_id,
                    local,
                    info,
                    max,
                    true,
                ),
                bus
            );
            match set {
                Ok(answer) => Some(answer),
                Err(e) => {
                    self.failed(&e);
                    None
                }
            }
        } else {
            bus.await;
            None
        };
        // A recovering member reads what it missed once the bus subscription is confirmed
        // (`replay.rs`).
        let mut prepared = match &recover {
            Some(recover) => Some(self.prepare(&app, &channel, recover).await),
            None => None,
        };
        let mut joining = |outbox: &crate::outbox::Outbox| match (&recover, &mut prepared) {
            (Some(recover), Some(prepared)) => {
                replay::join(&app, &channel, recover, prepared, outbox)
            }
            _ => 0,
        };
        // The hub's join with the member list `data` says, recovery's part under its lock.
        let mut join_with = |data: &str| {
            let roster = Roster::Cluster(data);
            let joining = Some(&mut joining as _);
            let _ =
                (app.hub).join_presence_joining(&channel, conn, &outbox, &member, roster, joining);
        };
        let cluster = self.cluster.clone();
        let rosters = &cluster.rosters;
        let refused = match answer {
            Some(MemberSet::Refused) => Some(max),
            Some(MemberSet::Set {
                before,
                after,
                version,
                list,
            }) => {
                // The list goes through the channel's roster: what it holds that this
                // node's subscribers were not told yet, they are told now, and the new
                // subscriber gets the roster's list.
                let data = rosters.join_list(&app, &channel, Some((pairs(&list), version)));
                join_with(&data);
                self.member_edge(
                    &app,
                    &channel,
                    (&member.user_id, member.user_info.as_deref()),
                    edge(count(before), count(after)),
                    Some(version),
                    Some(conn),
                    true,
                );
                let n = app.hub.counts(&channel).subscription_count;
                if let Err(e) = self.sync_channel(node, &app, &channel, n, true).await {
                    self.failed(&e);
                }
                None
            }
            None => {
                // Redis is away: the roster as this node last knew it is the best answer
                // there is (this node's own members if it had none), the limit is checked
                // against it, and the join goes through it unversioned (the resync and
                // the next member list read set it right).
                let data = rosters.join_list(&app, &channel, None);
                let listed = rosters.len(&app, &channel).unwrap_or(0);
                let new_user = app.hub.member_connections(&channel, &member.user_id) == 0
                    && !rosters.contains(&app, &channel, &member.user_id);
                if new_user && listed >= max {
                    Some(max)
                } else {
                    if new_user {
                        let change = Membership {
                            user: &member.user_id,
                            info: member.user_info.as_deref(),
                            present: true,
                            version: None,
                        };
                        self.cluster.member_changed(&app, &channel, change, None);
                    }
                    let data = if new_user {
                        rosters.join_list(&app, &channel, None)
                    } else {
                        data
                    };
                    join_with(&data);
                    self.needs_resync();
                    None
                }
            }
        };
        if let Some(max) = refused {
            transitions::refuse(&app, &outbox, &channel, Refusal::PresenceFull { max });
            if app.hub.counts(&channel).subscription_count == 0 {
                self.lose_interest(app.id(), &channel);
                rosters.forget(app.id(), &channel);
            }
            return;
        }
        if cache {
            if !fresh.is_empty() {
                // Not heard since its last subscriber here left: only Redis's will do.
                app.cache.forget(&channel);
            }
            if self.healthy() {
                if let Err(e) = self.cluster.refresh_cache(&app, &channel).await {
                    self.failed(&e);
                }
            }
            app.replay_cache(&channel, &outbox);
        }
    }
}
