//! Channel queries: occupied channels, one channel's attributes, presence users.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::client::Client;
use crate::error::{invalid, Result};
use crate::events::{decode, encode_segment, ChannelAttributes};

/// One channel's state, from [`Client::channel`].
///
/// ```
/// let info: herald_sdk::ChannelInfo = serde_json::from_str(r#"{"occupied":true,"subscription_count":2}"#).unwrap();
/// assert!(info.occupied);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct ChannelInfo {
    /// Whether anyone is subscribed.
    #[serde(default)]
    pub occupied: bool,
    /// Distinct users (presence channels, when requested).
    pub user_count: Option<u64>,
    /// Connections subscribed (when requested).
    pub subscription_count: Option<u64>,
    /// The cached event of a cache channel (when requested): `{"data", "ttl"}` or null.
    pub cache: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
struct ChannelList {
    #[serde(default)]
    channels: BTreeMap<String, ChannelAttributes>,
}

#[derive(Deserialize, Default)]
struct UserList {
    users: Vec<UserId>,
}

#[derive(Deserialize)]
struct UserId {
    id: String,
}

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
        Ok(decode::<ChannelList>(value)?.channels)
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
        let list: UserList = decode(self.get(&path, &[]).await?)?;
        Ok(list.users.into_iter().map(|u| u.id).collect())
    }
}
