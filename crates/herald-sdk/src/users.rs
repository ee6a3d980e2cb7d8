//! Users: sending to every connection of a signed-in user, and closing them.

use herald_protocol::channel::SERVER_TO_USER_PREFIX;

use crate::client::{encode_segment, Client};
use crate::data::EventData;
use crate::error::{invalid, Result};

impl Client {
    /// Sends `event` to every connection signed in as `user_id`.
    ///
    /// ```no_run
    /// # async fn demo(client: herald_sdk::Client) -> Result<(), herald_sdk::Error> {
    /// client.send_to_user("user-42", "notification", "You have mail").await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_to_user(
        &self,
        user_id: &str,
        event: &str,
        data: impl Into<EventData>,
    ) -> Result<()> {
        check_user_id(user_id)?;
        let channel = [format!("{SERVER_TO_USER_PREFIX}{user_id}")];
        self.trigger(&channel, event, data).await
    }

    /// Closes every connection signed in as `user_id`.
    ///
    /// ```no_run
    /// # async fn demo(client: herald_sdk::Client) -> Result<(), herald_sdk::Error> {
    /// client.terminate_user_connections("user-42").await?;
    /// # Ok(()) }
    /// ```
    pub async fn terminate_user_connections(&self, user_id: &str) -> Result<()> {
        check_user_id(user_id)?;
        let path = format!("/users/{}/terminate_connections", encode_segment(user_id));
        self.send(reqwest::Method::POST, &path, &[], Some("{}".to_owned()))
            .await
            .map(drop)
    }
}

fn check_user_id(user_id: &str) -> Result<()> {
    if user_id.is_empty() {
        return Err(invalid("user_id", "must not be empty"));
    }
    Ok(())
}
