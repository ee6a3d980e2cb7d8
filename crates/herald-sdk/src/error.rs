//! The SDK's one error type.

/// Everything that can go wrong in the SDK.
///
/// Validation errors are returned before any request is sent; HTTP errors carry the
/// status and the server's body (Pusher-compatible servers explain the problem there).
///
/// ```
/// # use herald_sdk::Error;
/// let e = Error::Validation { field: "channels", reason: "at most 100 channels".into() };
/// assert_eq!(e.to_string(), "invalid channels: at most 100 channels");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An argument broke a rule of the API; nothing was sent.
    #[error("invalid {field}: {reason}")]
    Validation {
        /// The argument at fault.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The client could not be configured (bad URL, missing variable, bad key, ...).
    #[error("configuration: {0}")]
    Config(String),
    /// The server answered with a non-success status.
    #[error("HTTP {status} from {url}: {body}")]
    Http {
        /// The HTTP status.
        status: u16,
        /// The response body, as text.
        body: String,
        /// The request URL without its signature.
        url: String,
    },
    /// The request timed out.
    #[error("request to {url} timed out")]
    Timeout {
        /// The request URL without its signature.
        url: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// The request failed before a response (connection refused, DNS, TLS, ...).
    #[error("request to {url} failed: {source}")]
    Network {
        /// The request URL without its signature.
        url: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// An `https://` URL reached a server that answered in plain HTTP: the port serves
    /// no TLS (use `http://`), or the URL names the wrong port.
    #[error("the server at {url} answered without TLS: use http://, or an https:// port that serves TLS")]
    NotTls {
        /// The URL's scheme, host and port.
        url: String,
    },
    /// A success response whose body is not what the API promises.
    #[error("unexpected response body from {url}: {reason}")]
    Decode {
        /// The request URL without its signature.
        url: String,
        /// Why it could not be read.
        reason: String,
    },
    /// A webhook failed validation.
    #[error("invalid webhook: {0}")]
    Webhook(String),
    /// Encrypting or decrypting an encrypted-channel payload failed.
    #[error("encryption: {0}")]
    Encryption(String),
}

impl Error {
    /// What the server said is wrong, from an HTTP error's body when it is the API's error
    /// body (`{"error": …, "code": …}`, Herald's and soketi's form); `None` otherwise.
    ///
    /// ```
    /// let e = herald_sdk::Error::Http {
    ///     status: 400,
    ///     body: r#"{"error":"Missing 'name': the event name is required","code":400}"#.into(),
    ///     url: "http://127.0.0.1:6001/apps/1/events".into(),
    /// };
    /// assert_eq!(e.server_message().as_deref(), Some("Missing 'name': the event name is required"));
    /// let plain = herald_sdk::Error::Http { status: 502, body: "Bad Gateway".into(), url: String::new() };
    /// assert_eq!(plain.server_message(), None);
    /// ```
    pub fn server_message(&self) -> Option<String> {
        let Error::Http { body, .. } = self else {
            return None;
        };
        let parsed: herald_protocol::api::ErrorBody<'_> = serde_json::from_str(body).ok()?;
        Some(parsed.error.into_owned())
    }
}

/// The SDK's result type.
///
/// ```
/// fn check() -> herald_sdk::Result<()> { Ok(()) }
/// assert!(check().is_ok());
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    Error::Validation {
        field,
        reason: reason.into(),
    }
}
