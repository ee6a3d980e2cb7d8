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
