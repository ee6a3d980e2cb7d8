//! Auth endpoint helpers: the JSON an app's `/pusher/auth` and `/pusher/user-auth`
//! endpoints return to pusher-js.

use herald_protocol::auth::{channel_auth, user_auth};
use herald_protocol::channel::{
    is_valid_socket_id, validate_channel_name, ChannelKind, MAX_CHANNEL_NAME_LEN,
};
use herald_protocol::encryption::shared_secret_base64;
use serde::Serialize;
use serde_json::Value;

use crate::client::Client;
use crate::error::{invalid, Error, Result};

/// The response to a channel authorization request. Serialize it as the endpoint's JSON.
///
/// ```
/// # let client = herald_sdk::Client::from_url("http://k:s@h/apps/1").unwrap();
/// let auth = client.authorize_channel("1234.1234", "private-room", None).unwrap();
/// let json = serde_json::to_string(&auth).unwrap();
/// assert!(json.starts_with(r#"{"auth":"k:"#));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ChannelAuth {
    /// `key:signature`.
    pub auth: String,
    /// The presence member data that was signed (presence channels).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel_data: Option<String>,
    /// The channel's decryption key (encrypted channels).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_secret: Option<String>,
}

/// The response to a user authentication request.
///
/// ```
/// # let client = herald_sdk::Client::from_url("http://k:s@h/apps/1").unwrap();
/// let auth = client.authenticate_user("1234.1234", &serde_json::json!({"id": "42"})).unwrap();
/// assert_eq!(auth.user_data, r#"{"id":"42"}"#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct UserAuth {
    /// `key:signature`.
    pub auth: String,
    /// The user object that was signed, as JSON text.
    pub user_data: String,
}

impl Client {
    /// Signs a subscription to `channel` for `socket_id`. On presence channels pass the
    /// member (`{"user_id": ..., "user_info": {...}}`); on `private-encrypted-` channels the
    /// response carries the channel's `shared_secret` (the master key must be set).
    ///
    /// ```
    /// # let client = herald_sdk::Client::from_url("http://278d425bdf160c739803:7ad3773142a6692b25b8@h/apps/1").unwrap();
    /// let auth = client.authorize_channel("1234.1234", "private-foobar", None).unwrap();
    /// assert_eq!(auth.auth, "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4");
    /// ```
    pub fn authorize_channel(
        &self,
        socket_id: &str,
        channel: &str,
        presence_member: Option<&Value>,
    ) -> Result<ChannelAuth> {
        if !is_valid_socket_id(socket_id) {
            return Err(invalid(
                "socket_id",
                format!("'{socket_id}' is not of the form digits.digits"),
            ));
        }
        let kind = validate_channel_name(channel, MAX_CHANNEL_NAME_LEN)
            .map_err(|e| invalid("channel", e.to_string()))?;
        let channel_data = presence_member.map(Value::to_string);
        if kind == ChannelKind::Presence && channel_data.is_none() {
            // Allowed: pusher-js 8 uses the signed-in user's data instead.
        }
        let shared_secret = if kind == ChannelKind::PrivateEncrypted {
            let master = self.inner.master_key.as_ref().ok_or_else(|| {
                Error::Encryption(
                    "cannot generate shared_secret: no encryption master key is set".into(),
                )
            })?;
            Some(shared_secret_base64(channel, master))
        } else {
            None
        };
        Ok(ChannelAuth {
            auth: channel_auth(
                &self.inner.key,
                &self.inner.secret,
                socket_id,
                channel,
                channel_data.as_deref(),
            ),
            channel_data,
            shared_secret,
        })
    }

    /// Signs a user sign-in for `socket_id`. `user` must be an object with a non-empty
    /// string `id`; it may carry `user_info` and `watchlist`.
    ///
    /// ```
    /// # let client = herald_sdk::Client::from_url("http://k:s@h/apps/1").unwrap();
    /// assert!(client.authenticate_user("1.1", &serde_json::json!({"id": ""})).is_err());
    /// ```
    pub fn authenticate_user(&self, socket_id: &str, user: &Value) -> Result<UserAuth> {
        if !is_valid_socket_id(socket_id) {
            return Err(invalid(
                "socket_id",
                format!("'{socket_id}' is not of the form digits.digits"),
            ));
        }
        let valid_id = user
            .get("id")
            .and_then(Value::as_str)
            .is_some_and(|id| !id.is_empty());
        if !user.is_object() || !valid_id {
            return Err(invalid(
                "user",
                "must be an object with a non-empty string 'id'",
            ));
        }
        let user_data = user.to_string();
        Ok(UserAuth {
            auth: user_auth(&self.inner.key, &self.inner.secret, socket_id, &user_data),
            user_data,
        })
    }
}
