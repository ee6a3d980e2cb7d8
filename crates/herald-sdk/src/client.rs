//! The client: the app it speaks for, and signed requests to it.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use herald_protocol::encryption::MASTER_KEY_LEN;
use herald_protocol::signing::signed_query_string;
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// The largest batch sent by default, the limit of Pusher's multi-tenant clusters.
///
/// ```
/// assert_eq!(herald_sdk::DEFAULT_MAX_BATCH, 10);
/// ```
pub const DEFAULT_MAX_BATCH: usize = 10;

/// A client for one app on a Pusher-compatible service (Herald, Pusher, soketi, sockudo).
///
/// Cheap to clone: clones share the connection pool.
///
/// ```
/// # fn main() -> Result<(), herald_sdk::Error> {
/// let client = herald_sdk::Client::from_url("http://app-key:app-secret@127.0.0.1:6001/apps/1")?;
/// assert_eq!(client.app_id(), "1");
/// assert_eq!(client.key(), "app-key");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) app_id: String,
    pub(crate) key: String,
    pub(crate) secret: String,
    /// `scheme://host[:port]`, without a trailing slash.
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
    pub(crate) master_key: Option<[u8; MASTER_KEY_LEN]>,
    pub(crate) max_batch: usize,
}

/// Written by hand so the secret and the master key never reach a log: `{:?}` of a client
/// shows what identifies it, not what authenticates it.
impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("app_id", &self.app_id)
            .field("key", &self.key)
            .field("secret", &REDACTED)
            .field("base", &self.base)
            .field("master_key", &self.master_key.map(|_| REDACTED))
            .field("max_batch", &self.max_batch)
            .finish_non_exhaustive()
    }
}

/// What `Debug` shows instead of a secret.
pub(crate) const REDACTED: &str = "<redacted>";

impl Client {
    /// The app id.
    ///
    /// ```
    /// # let client = herald_sdk::Client::from_url("http://k:s@h/apps/7").unwrap();
    /// assert_eq!(client.app_id(), "7");
    /// ```
    pub fn app_id(&self) -> &str {
        &self.inner.app_id
    }

    /// The app key.
    ///
    /// ```
    /// # let client = herald_sdk::Client::from_url("http://k:s@h/apps/7").unwrap();
    /// assert_eq!(client.key(), "k");
    /// ```
    pub fn key(&self) -> &str {
        &self.inner.key
    }

    /// `scheme://host[:port]` requests go to.
    ///
    /// ```
    /// # let client = herald_sdk::Client::from_url("http://k:s@h:1/apps/7").unwrap();
    /// assert_eq!(client.base_url(), "http://h:1");
    /// ```
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    /// The signed query string for a request, as the Node library's
    /// `createSignedQueryString`: `path` is the full path (`/apps/1/events`).
    ///
    /// ```
    /// # let client = herald_sdk::Client::from_url("http://k:s@h/apps/1").unwrap();
    /// let qs = client.create_signed_query_string("GET", "/apps/1/channels", &[("info", "user_count")], None);
    /// assert!(qs.contains("auth_key=k") && qs.contains("auth_signature="));
    /// ```
    pub fn create_signed_query_string(
        &self,
        method: &str,
        path: &str,
        params: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> String {
        signed_query_string(
            method,
            path,
            &self.inner.key,
            &self.inner.secret,
            unix_now(),
            body,
            params,
        )
    }

    /// A signed GET of `path` under `/apps/{id}` (e.g. `/channels`), returning the JSON body.
    ///
    /// ```no_run
    /// # async fn demo(client: herald_sdk::Client) -> Result<(), herald_sdk::Error> {
    /// let channels = client.get("/channels", &[("filter_by_prefix", "presence-")]).await?;
    /// # let _ = channels; Ok(()) }
    /// ```
    pub async fn get(&self, path: &str, params: &[(&str, &str)]) -> Result<Value> {
        self.send(reqwest::Method::GET, path, params, None).await
    }

    /// A signed POST of `body` (JSON-encoded) to `path` under `/apps/{id}`.
    ///
    /// ```no_run
    /// # async fn demo(client: herald_sdk::Client) -> Result<(), herald_sdk::Error> {
    /// let reply = client.post("/events", &serde_json::json!({"name":"e","channel":"c","data":"{}"})).await?;
    /// # let _ = reply; Ok(()) }
    /// ```
    pub async fn post<B: Serialize + ?Sized>(&self, path: &str, body: &B) -> Result<Value> {
        let body = serde_json::to_string(body)
            .map_err(|e| crate::error::invalid("body", format!("cannot encode as JSON: {e}")))?;
        self.send(reqwest::Method::POST, path, &[], Some(body))
            .await
    }

    /// Sends a signed request with a body already encoded.
    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        params: &[(&str, &str)],
        body: Option<String>,
    ) -> Result<Value> {
        let full_path = format!("/apps/{}{}", self.inner.app_id, path);
        let query = self.create_signed_query_string(
            method.as_str(),
            &full_path,
            params,
            body.as_deref().map(str::as_bytes),
        );
        let url = format!("{}{}", self.inner.base, full_path);
        let mut request = self
            .inner
            .http
            .request(method, format!("{url}?{query}"))
            .header(
                "x-pusher-library",
                concat!("herald-sdk ", env!("CARGO_PKG_VERSION")),
            );
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let response = request.send().await.map_err(|source| {
            // The URL (with its signature) is already in `url`, without the query.
            let source = source.without_url();
            if source.is_timeout() {
                Error::Timeout {
                    url: url.clone(),
                    source,
                }
            } else if answered_without_tls(&source) {
                Error::NotTls {
                    url: self.inner.base.clone(),
                }
            } else {
                Error::Network {
                    url: url.clone(),
                    source,
                }
            }
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|source| Error::Network {
            url: url.clone(),
            source: source.without_url(),
        })?;
        if !status.is_success() {
            return Err(Error::Http {
                status: status.as_u16(),
                body: text,
                url,
            });
        }
        if text.trim().is_empty() {
            return Ok(Value::Object(serde_json::Map::new()));
        }
        serde_json::from_str(&text).map_err(|e| Error::Decode {
            url,
            reason: format!("not JSON ({e}): {}", truncate(&text)),
        })
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn truncate(text: &str) -> &str {
    let mut end = text.len().min(200);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Whether a request failed because the server spoke plain HTTP to a TLS handshake: rustls
/// then reads the server's first byte (`H` of `HTTP/1.1 400`) as a record type it does not
/// know. The rustls error sits inside `io::Error`s, whose `source` skips what they wrap.
fn answered_without_tls(error: &reqwest::Error) -> bool {
    #[cfg(feature = "rustls")]
    {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(inner) = cause {
            if let Some(rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)) =
                inner.downcast_ref::<rustls::Error>()
            {
                return true;
            }
            cause = match inner
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
            {
                Some(wrapped) => Some(wrapped),
                None => inner.source(),
            };
        }
        false
    }
    #[cfg(not(feature = "rustls"))]
    {
        let _ = error;
        false
    }
}

/// Percent-encodes a path segment (user ids may hold any character).
pub(crate) fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~' | b'=' | b'@' | b',' | b';')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) fn decode<T: serde::de::DeserializeOwned + Default>(value: Value) -> Result<T> {
    // Every answer of the API is an object; serde would otherwise accept a sequence for a
    // struct and hide a broken server behind defaults.
    match value.as_object() {
        Some(map) if map.is_empty() => return Ok(T::default()),
        Some(_) => {}
        None => {
            return Err(Error::Decode {
                url: String::new(),
                reason: format!("expected a JSON object, got {value}"),
            })
        }
    }
    serde_json::from_value(value).map_err(|e| Error::Decode {
        url: String::new(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn debug_output_never_shows_a_secret() {
        let builder = crate::Client::builder("1", "the-key", "s3cr3t-value")
            .host("h")
            .proxy("http://user:proxy-pass@proxy:3128")
            .encryption_master_key_base64("c2VjcmV0LW1hc3Rlci1rZXktMzItYnl0ZXMtbG9uZyE=");
        let shown = format!("{builder:?}");
        let client = builder.build().expect("valid");
        let shown = format!("{shown} {client:?}");
        assert!(shown.contains("the-key"), "{shown}");
        for secret in ["s3cr3t-value", "proxy-pass", "c2VjcmV0"] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
        let hooks = crate::WebhookOptions::default().extra_credentials("old-key", "old-s3cr3t");
        let shown = format!("{hooks:?}");
        assert!(
            shown.contains("old-key") && !shown.contains("old-s3cr3t"),
            "{shown}"
        );
    }
}
