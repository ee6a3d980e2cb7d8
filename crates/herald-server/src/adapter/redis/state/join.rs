//! Presence joins: the member counted in Redis against the channel's limit, the cluster's
//! member list in `subscription_succeeded`, and `member_added` once for the cluster.

use herald_protocol::frame;

use super::counts::MemberSet;
use super::listening::subscribe_bus;
use super::{count, StateTask};
use crate::adapter::redis::ops::Join;
use crate::adapter::transitions::{self, edge, Refusal};
use crate::hub::{PresenceRefused, Roster};

impl StateTask {
    pub(super) async fn join(&mut self, join: Join) {
        let Join {
            app,
            channel,
            conn,
            socket,
            outbox,
            member,
            cache,
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
        let refused = match answer {
            Some(MemberSet::Refused) => Some(max),
            Some(MemberSet::Set {
                before,
                after,
                list,
            }) => {
                let data = frame::presence_data(list.chunks(2).filter_map(|p| match p {
                    [id, info] => {
                        Some((id.as_str(), Some(info.as_str()).filter(|i| !i.is_empty())))
                    }
                    _ => None,
                }));
                // The cluster counted the member against the limit: a cluster roster is
                // never refused, and its member events are sent for the cluster here.
                let roster = Roster::Cluster(&data);
                let _ = app
                    .hub
                    .join_presence(&channel, conn, &outbox, &member, roster);
                transitions::member_changed(
                    &*self.cluster,
                    &app,
                    &channel,
                    (&member.user_id, member.user_info.as_deref()),
                    edge(count(before), count(after)),
                    Some(socket),
                );
                let n = app.hub.counts(&channel).subscription_count;
                if let Err(e) = self.sync_channel(node, &app, &channel, n, true).await {
                    self.failed(&e);
                }
                None
            }
            None => {
                // Redis is away: this node's members are the best answer there is, and
                // the join goes as on a single node (the resync tells the cluster later).
                let roster = Roster::Here { max_members: max };
                match app
                    .hub
                    .join_presence(&channel, conn, &outbox, &member, roster)
                {
                    Ok(_) => {
                        self.needs_resync();
                        None
                    }
                    Err(PresenceRefused::Full { max }) => Some(max),
                }
            }
        };
        if let Some(max) = refused {
            transitions::refuse(&app, &outbox, &channel, Refusal::PresenceFull { max });
            if app.hub.counts(&channel).subscription_count == 0 {
                self.lose_interest(app.id(), &channel);
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
