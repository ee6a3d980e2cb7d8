//! Channel queries: occupied channels, one channel's attributes, presence users.

use std::collections::BTreeMap;

use herald_protocol::api::{ChannelAttributes, ChannelsAnswer, UsersAnswer};

use crate::client::{decode, encode_segment, Client};
use crate::error::{invalid, Result};

/// One channel's state, from [`Client::channel`]. A cache channel's `cache`, when asked
/// for, is `Some(Value::Null)` when nothing is cached.
pub use herald_protocol::api::ChannelAnswer as ChannelInfo;

impl Client {
    /// Occupied channels, optionally filtered by name prefix, with the requested
    /// attributes (`user_count` needs the `presence-` prefix).
    ///
    /// ```no_run
    /// # async fn demo(client: herald_sdk::Client) -> Result<(), herald_sdk::Error> {
    /// let rooms = client.channels(Some("presence-"), &["user_count"]).await?;
    /// for (name, attrs) in &rooms {
    ///     println!("{name}: {:?} users", attrs.user_count);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn channels(
        &self,
        filter_by_prefix: Option<&str>,
        info: &[&str],
    ) -> Result<BTreeMap<String, ChannelAttributes>> {
        let joined = info.join(",");
        let mut params = Vec::new();
        if let Some(prefix) = filter_by_prefix {
            params.push(("filter_by_prefix", prefix));
        }
        if !info.is_empty() {
            params.push(("info", joined.as_str()));
        }
        let value = self.get("/channels", &params).await?;
        Ok(decode::<ChannelsAnswer>(value)?.channels)
    }

    /// One channel's state with the requested attributes (`user_count`,
    /// `subscription_count`, `cache`).
    ///
    /// ```no_run
    /// # async fn demo(client: herald_sdk::Client) -> Result<(), herald_sdk::Error> {
    /// let info = client.channel("presence-room", &["user_count"]).await?;
    /// println!("occupied: {}, users: {:?}", info.occupied, info.user_count);
    /// # Ok(()) }
    /// ```
    pub async fn channel(&self, name: &str, info: &[&str]) -> Result<ChannelInfo> {
        if name.is_empty() {
            return Err(invalid("channel", "must not be empty"));
        }
        let joined = info.join(",");
        let params: Vec<(&str, &str)> = if info.is_empty() {
            Vec::new()
        } else {
            vec![("info", joined.as_str())]
        };
        let path = format!("/channels/{}", encode_segment(name));
        decode(self.get(&path, &params).await?)
    }

    /// The ids of the users on a presence channel.
    ///
    /// ```no_run
    /// # async fn demo(client: herald_sdk::Client) -> Result<(), herald_sdk::Error> {
    /// let ids = client.users("presence-room").await?;
    /// # let _ = ids; Ok(()) }
    /// ```
    pub async fn users(&self, presence_channel: &str) -> Result<Vec<String>> {
        if !presence_channel.starts_with("presence-") {
            return Err(invalid(
                "channel",
                "users can only be listed for presence channels",
            ));
        }
        let path = format!("/channels/{}/users", encode_segment(presence_channel));
        let list: UsersAnswer = decode(self.get(&path, &[]).await?)?;
        Ok(list.users.into_iter().map(|u| u.id).collect())
    }
}
