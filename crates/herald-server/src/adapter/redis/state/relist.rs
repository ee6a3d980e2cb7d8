//! The presence channels' member lists read again, for the rosters of the channels with
//! subscribers here: after the bus lost messages (a gap), after a resync (what this node
//! missed while Redis was away), and after Redis lost or rewound its data. What a list
//! changes in a roster is what the subscribers here are told (`members.rs`).

use redis::RedisResult;

use super::{StateTask, RESTATE_BATCH};
use crate::adapter::redis::members::pairs;
use crate::adapter::redis::scripts::MEMBER_LIST;

impl StateTask {
    /// Reads every roster's channel's member list and version, [`RESTATE_BATCH`] channels
    /// per pipelined round trip, and applies each to its roster.
    pub(super) async fn relist(&mut self) -> RedisResult<()> {
        let channels = self.cluster.rosters.channels();
        for batch in channels.chunks(RESTATE_BATCH) {
            let keys = &self.cluster.keys;
            let cmds = batch
                .iter()
                .map(|(app, channel)| {
                    let mut eval = redis::cmd("EVAL");
                    eval.arg(MEMBER_LIST)
                        .arg(2)
                        .arg(keys.infos(app, channel))
                        .arg(keys.member_version(app, channel));
                    (keys.users(app), eval)
                })
                .collect();
            let replies: Vec<redis::Value> = self.conn.query_each(cmds).await?;
            for ((app, channel), reply) in batch.iter().zip(replies) {
                let flat: Vec<String> = redis::from_redis_value(&reply)?;
                let Some((version, list)) = flat.split_first() else {
                    continue;
                };
                let Some(app) = self.cluster.app(app) else {
                    continue;
                };
                let version = version.parse().unwrap_or(0);
                self.cluster
                    .rosters
                    .relist(&app, channel, pairs(list), version);
            }
            tokio::task::yield_now().await;
        }
        Ok(())
    }
}
