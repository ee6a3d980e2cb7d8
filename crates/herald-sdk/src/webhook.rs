//! Validating and reading webhooks (the POSTs a Pusher-compatible server sends the app).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald_protocol::encryption::{decrypt, shared_secret, EncryptedPayload};
use herald_protocol::webhook::{verify_webhook_signature, WEBHOOK_CONTENT_TYPE};
use serde::Deserialize;

use crate::client::Client;
use crate::error::{Error, Result};

/// One event in a webhook: the server's own type, shared through `herald-protocol`.
///
/// ```
/// let e: herald_sdk::WebhookEvent = serde_json::from_str(r#"{"name":"channel_occupied","channel":"c"}"#).unwrap();
/// assert_eq!(e, herald_sdk::WebhookEvent::ChannelOccupied { channel: "c".into() });
/// ```
pub use herald_protocol::webhook::WebhookEvent;

/// A validated webhook.
///
/// ```
/// # let client = herald_sdk::Client::from_url("http://k:tofu@h/apps/1").unwrap();
/// let body = br#"{"time_ms":1403175510755,"events":[{"channel":"test_channel","name":"channel_vacated"}]}"#;
/// let headers = [
///     ("x-pusher-key", "k"),
///     ("x-pusher-signature", "c17257e92037cd7de407ebc1ed174ceb7b2e518db127f44411b9ffc4f5b28cc5"),
///     ("content-type", "application/json"),
/// ];
/// let hook = client.webhook(headers, body).unwrap();
/// assert_eq!(hook.time_ms, 1403175510755);
/// assert_eq!(hook.events.len(), 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Webhook {
    /// When the server created the webhook, in Unix milliseconds.
    pub time_ms: u64,
    /// The events.
    pub events: Vec<WebhookEvent>,
}

/// Options for [`Client::webhook_with`].
///
/// ```
/// let opts = herald_sdk::WebhookOptions::default()
///     .extra_credentials("old-key", "old-secret")
///     .max_age(std::time::Duration::from_secs(300));
/// # let _ = opts;
/// ```
#[derive(Clone, Default)]
#[must_use]
pub struct WebhookOptions {
    extra: Vec<(String, String)>,
    max_age: Option<Duration>,
}

/// Shows the extra keys but never their secrets.
impl std::fmt::Debug for WebhookOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&str> = self.extra.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("WebhookOptions")
            .field("extra_keys", &keys)
            .field("max_age", &self.max_age)
            .finish()
    }
}

impl WebhookOptions {
    /// Also accept webhooks signed with this key and secret (key rotation).
    ///
    /// ```
    /// let opts = herald_sdk::WebhookOptions::default().extra_credentials("old-key", "old-secret");
    /// # let _ = opts;
    /// ```
    pub fn extra_credentials(mut self, key: impl Into<String>, secret: impl Into<String>) -> Self {
        self.extra.push((key.into(), secret.into()));
        self
    }

    /// Reject webhooks whose `time_ms` is further than this from now.
    ///
    /// ```
    /// let opts = herald_sdk::WebhookOptions::default().max_age(std::time::Duration::from_secs(300));
    /// # let _ = opts;
    /// ```
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }
}

impl Client {
    /// Validates a webhook from its headers (names in any case) and raw body: exact
    /// `application/json` content type, known key, signature over the raw bytes.
    ///
    /// ```
    /// # let client = herald_sdk::Client::from_url("http://k:s@h/apps/1").unwrap();
    /// let headers = [("content-type", "application/json; charset=utf-8")];
    /// assert!(client.webhook(headers, b"{}").is_err());
    /// ```
    pub fn webhook<I, K, V>(&self, headers: I, body: &[u8]) -> Result<Webhook>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        self.webhook_with(headers, body, &WebhookOptions::default())
    }

    /// [`Client::webhook`] with extra credentials and a freshness window.
    ///
    /// ```
    /// # let client = herald_sdk::Client::from_url("http://k:s@h/apps/1").unwrap();
    /// let opts = herald_sdk::WebhookOptions::default().extra_credentials("k2", "s2");
    /// assert!(client.webhook_with([("content-type", "application/json")], b"{}", &opts).is_err());
    /// ```
    pub fn webhook_with<I, K, V>(
        &self,
        headers: I,
        body: &[u8],
        options: &WebhookOptions,
    ) -> Result<Webhook>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let (mut content_type, mut key, mut signature) = (None, None, None);
        for (name, value) in headers {
            let value = value.as_ref().to_owned();
            match name.as_ref().to_ascii_lowercase().as_str() {
                "content-type" => content_type = Some(value),
                "x-pusher-key" => key = Some(value),
                "x-pusher-signature" => signature = Some(value),
                _ => {}
            }
        }
        if content_type.as_deref() != Some(WEBHOOK_CONTENT_TYPE) {
            return Err(Error::Webhook(format!(
                "content type must be exactly {WEBHOOK_CONTENT_TYPE}, got {content_type:?}"
            )));
        }
        let key = key.ok_or_else(|| Error::Webhook("missing X-Pusher-Key".into()))?;
        let signature =
            signature.ok_or_else(|| Error::Webhook("missing X-Pusher-Signature".into()))?;
        let own = (self.inner.key.as_str(), self.inner.secret.as_str());
        let secret = std::iter::once(own)
            .chain(options.extra.iter().map(|(k, s)| (k.as_str(), s.as_str())))
            .find(|(k, _)| *k == key)
            .map(|(_, s)| s)
            .ok_or_else(|| Error::Webhook(format!("unknown X-Pusher-Key '{key}'")))?;
        if !verify_webhook_signature(secret, body, &signature) {
            return Err(Error::Webhook(
                "X-Pusher-Signature does not match the body".into(),
            ));
        }
        let mut hook: Webhook = serde_json::from_slice(body)
            .map_err(|e| Error::Webhook(format!("body is not a webhook: {e}")))?;
        if let Some(max_age) = options.max_age {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            if now.abs_diff(hook.time_ms) > max_age.as_millis() as u64 {
                return Err(Error::Webhook(format!(
                    "webhook time_ms {} is outside the allowed window",
                    hook.time_ms
                )));
            }
        }
        if let Some(master) = self.inner.master_key.as_ref() {
            for event in &mut hook.events {
                if let WebhookEvent::ClientEvent { channel, data, .. } = event {
                    if channel.starts_with("private-encrypted-") {
                        let payload: EncryptedPayload =
                            serde_json::from_str(data).map_err(|e| {
                                Error::Encryption(format!(
                                    "client event data is not an encrypted payload: {e}"
                                ))
                            })?;
                        let plain = decrypt(&shared_secret(channel, master), &payload)
                            .map_err(|e| Error::Encryption(e.to_string()))?;
                        *data = String::from_utf8(plain)
                            .map_err(|_| Error::Encryption("decrypted data is not UTF-8".into()))?;
                    }
                }
            }
        }
        Ok(hook)
    }
}
