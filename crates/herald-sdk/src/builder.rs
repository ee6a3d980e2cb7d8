//! Building a [`Client`]: where the app lives, its credentials, and the HTTP client's
//! settings, from parts or from a `PUSHER_URL`.

use std::sync::Arc;
use std::time::Duration;

use herald_protocol::encryption::decode_master_key;

use crate::client::{Client, Inner, DEFAULT_MAX_BATCH, REDACTED};
use crate::error::{Error, Result};

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("app_id", &self.app_id)
            .field("key", &self.key)
            .field("secret", &REDACTED)
            .field("host", &self.host)
            .field("cluster", &self.cluster)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("timeout", &self.timeout)
            // A proxy URL may carry a password.
            .field("proxy", &self.proxy.as_ref().map(|_| REDACTED))
            .field(
                "master_key",
                &self.master_key_base64.as_ref().map(|_| REDACTED),
            )
            .field("max_batch", &self.max_batch)
            .field("root_certificates", &self.root_certificates.len())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Client`] from parts.
///
/// ```
/// # fn main() -> Result<(), herald_sdk::Error> {
/// use std::time::Duration;
/// let client = herald_sdk::Client::builder("1", "app-key", "app-secret")
///     .host("127.0.0.1")
///     .port(6001)
///     .tls(false)
///     .timeout(Duration::from_secs(5))
///     .build()?;
/// assert_eq!(client.base_url(), "http://127.0.0.1:6001");
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[must_use]
pub struct ClientBuilder {
    app_id: String,
    key: String,
    secret: String,
    host: Option<String>,
    cluster: Option<String>,
    port: Option<u16>,
    tls: bool,
    timeout: Option<Duration>,
    proxy: Option<String>,
    pool_idle_timeout: Option<Duration>,
    master_key_base64: Option<String>,
    http: Option<reqwest::Client>,
    max_batch: usize,
    /// PEM texts of CA certificates trusted besides the built-in roots.
    root_certificates: Vec<Vec<u8>>,
}

impl ClientBuilder {
    /// The API host, e.g. `127.0.0.1` or `api-eu.pusher.com`; overrides the cluster.
    ///
    /// ```
    /// let c = herald_sdk::Client::builder("1", "k", "s").host("127.0.0.1").tls(false).build().unwrap();
    /// assert_eq!(c.base_url(), "http://127.0.0.1");
    /// ```
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// A Pusher cluster name: the host becomes `api-{cluster}.pusher.com`.
    ///
    /// ```
    /// let c = herald_sdk::Client::builder("1", "k", "s").cluster("ap1").build().unwrap();
    /// assert_eq!(c.base_url(), "https://api-ap1.pusher.com");
    /// ```
    pub fn cluster(mut self, cluster: impl Into<String>) -> Self {
        self.cluster = Some(cluster.into());
        self
    }

    /// The port; by default the scheme's (443 or 80).
    ///
    /// ```
    /// let c = herald_sdk::Client::builder("1", "k", "s").host("h").port(6001).build().unwrap();
    /// assert_eq!(c.base_url(), "https://h:6001");
    /// ```
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// HTTPS (the default) or plain HTTP.
    ///
    /// ```
    /// let c = herald_sdk::Client::builder("1", "k", "s").host("h").tls(false).build().unwrap();
    /// assert!(c.base_url().starts_with("http://"));
    /// ```
    pub fn tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
    }

    /// Timeout of each request, connection included.
    ///
    /// ```
    /// let c = herald_sdk::Client::builder("1", "k", "s").timeout(std::time::Duration::from_secs(3)).build();
    /// assert!(c.is_ok());
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Send requests through this HTTP proxy (`http://host:port`).
    ///
    /// ```
    /// let c = herald_sdk::Client::builder("1", "k", "s").proxy("http://127.0.0.1:8080").build();
    /// assert!(c.is_ok());
    /// ```
    pub fn proxy(mut self, url: impl Into<String>) -> Self {
        self.proxy = Some(url.into());
        self
    }

    /// How long an idle keep-alive connection stays in the pool.
    ///
    /// ```
    /// let c = herald_sdk::Client::builder("1", "k", "s").pool_idle_timeout(std::time::Duration::from_secs(30)).build();
    /// assert!(c.is_ok());
    /// ```
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool_idle_timeout = Some(timeout);
        self
    }

    /// The encryption master key for `private-encrypted-` channels, base64 of 32 bytes.
    ///
    /// ```
    /// let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    /// assert!(herald_sdk::Client::builder("1", "k", "s").encryption_master_key_base64(key).build().is_ok());
    /// // A key of the wrong length is refused, and the error never shows the key.
    /// let err = herald_sdk::Client::builder("1", "k", "s").encryption_master_key_base64("AAAA").build().unwrap_err();
    /// assert!(!err.to_string().contains("AAAA"));
    /// ```
    pub fn encryption_master_key_base64(mut self, key: impl Into<String>) -> Self {
        self.master_key_base64 = Some(key.into());
        self
    }

    /// Trust the CA certificates in `pem` (one or more PEM `CERTIFICATE` blocks) for HTTPS,
    /// besides the built-in roots: for a server whose certificate a private CA signed.
    /// Needs the `rustls` feature (the default); may be called more than once.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let ca = std::fs::read("ca.pem")?;
    /// let client = herald_sdk::Client::builder_from_url("https://app-key:app-secret@127.0.0.1:6001/apps/1")?
    ///     .root_certificate_pem(ca)
    ///     .build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    ///
    /// A text without a certificate is refused when the client is built:
    ///
    /// ```
    /// let err = herald_sdk::Client::builder("1", "k", "s")
    ///     .root_certificate_pem("not a certificate")
    ///     .build()
    ///     .unwrap_err();
    /// assert!(err.to_string().contains("no certificate"), "{err}");
    /// ```
    pub fn root_certificate_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.root_certificates.push(pem.as_ref().to_vec());
        self
    }

    /// Use this `reqwest::Client` (timeouts, proxy, pool settings and root certificates
    /// above are then its own).
    ///
    /// ```
    /// let http = reqwest::Client::new();
    /// let c = herald_sdk::Client::builder("1", "k", "s").http_client(http).build();
    /// assert!(c.is_ok());
    /// ```
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// The most events [`Client::trigger_batch`] accepts (default 10; dedicated clusters
    /// allow more).
    ///
    /// ```
    /// let c = herald_sdk::Client::builder("1", "k", "s").max_batch_size(50).build();
    /// assert!(c.is_ok());
    /// ```
    pub fn max_batch_size(mut self, max: usize) -> Self {
        self.max_batch = max;
        self
    }

    /// Validates the settings and builds the client.
    ///
    /// ```
    /// assert!(herald_sdk::Client::builder("1", "", "s").build().is_err()); // empty key
    /// ```
    pub fn build(self) -> Result<Client> {
        if self.app_id.is_empty() || self.key.is_empty() || self.secret.is_empty() {
            return Err(Error::Config(
                "app id, key and secret must all be non-empty".into(),
            ));
        }
        let host = match (self.host, self.cluster) {
            (Some(host), _) => host,
            (None, Some(cluster)) => format!("api-{cluster}.pusher.com"),
            (None, None) => "api.pusherapp.com".to_owned(),
        };
        let scheme = if self.tls { "https" } else { "http" };
        let base = match self.port {
            Some(port) => format!("{scheme}://{host}:{port}"),
            None => format!("{scheme}://{host}"),
        };
        let master_key = self
            .master_key_base64
            .as_deref()
            .map(decode_master_key)
            .transpose()
            .map_err(|e| Error::Config(e.to_string()))?;
        let http = match self.http {
            Some(client) => client,
            None => {
                let mut builder = reqwest::Client::builder();
                if let Some(timeout) = self.timeout {
                    builder = builder.timeout(timeout);
                }
                if let Some(idle) = self.pool_idle_timeout {
                    builder = builder.pool_idle_timeout(idle);
                }
                if let Some(proxy) = self.proxy {
                    let proxy = reqwest::Proxy::all(&proxy)
                        .map_err(|e| Error::Config(format!("invalid proxy '{proxy}': {e}")))?;
                    builder = builder.proxy(proxy);
                }
                for pem in &self.root_certificates {
                    builder = add_roots(builder, pem)?;
                }
                builder
                    .build()
                    .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?
            }
        };
        Ok(Client {
            inner: Arc::new(Inner {
                app_id: self.app_id,
                key: self.key,
                secret: self.secret,
                base,
                http,
                master_key,
                max_batch: self.max_batch,
            }),
        })
    }
}

/// Adds the certificates of one PEM text as trusted roots.
#[cfg(feature = "rustls")]
fn add_roots(mut builder: reqwest::ClientBuilder, pem: &[u8]) -> Result<reqwest::ClientBuilder> {
    let certs = reqwest::Certificate::from_pem_bundle(pem)
        .map_err(|e| Error::Config(format!("invalid root certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Config(
            "root certificate PEM holds no certificate (a `BEGIN CERTIFICATE` block)".into(),
        ));
    }
    for cert in certs {
        builder = builder.add_root_certificate(cert);
    }
    Ok(builder)
}

/// Without TLS support there is nothing to trust a certificate for.
#[cfg(not(feature = "rustls"))]
fn add_roots(_: reqwest::ClientBuilder, _: &[u8]) -> Result<reqwest::ClientBuilder> {
    Err(Error::Config(
        "root certificates need the SDK's `rustls` feature (HTTPS)".into(),
    ))
}

impl Client {
    /// Starts building a client for app `app_id` with its key and secret.
    ///
    /// ```
    /// let builder = herald_sdk::Client::builder("1", "app-key", "app-secret").cluster("eu");
    /// # let _ = builder;
    /// ```
    pub fn builder(
        app_id: impl Into<String>,
        key: impl Into<String>,
        secret: impl Into<String>,
    ) -> ClientBuilder {
        ClientBuilder {
            app_id: app_id.into(),
            key: key.into(),
            secret: secret.into(),
            host: None,
            cluster: None,
            port: None,
            tls: true,
            timeout: None,
            proxy: None,
            pool_idle_timeout: None,
            master_key_base64: None,
            http: None,
            max_batch: DEFAULT_MAX_BATCH,
            root_certificates: Vec::new(),
        }
    }

    /// A client for a Pusher cluster (`api-{cluster}.pusher.com`, HTTPS).
    ///
    /// ```
    /// # fn main() -> Result<(), herald_sdk::Error> {
    /// let client = herald_sdk::Client::for_cluster("eu", "1", "key", "secret")?;
    /// assert_eq!(client.base_url(), "https://api-eu.pusher.com");
    /// # Ok(()) }
    /// ```
    pub fn for_cluster(
        cluster: &str,
        app_id: impl Into<String>,
        key: impl Into<String>,
        secret: impl Into<String>,
    ) -> Result<Client> {
        Self::builder(app_id, key, secret).cluster(cluster).build()
    }

    /// A client from a URL `http(s)://KEY:SECRET@HOST[:PORT]/apps/APP_ID`, the form of
    /// `PUSHER_URL`. Unlike the Node library it keeps the port and accepts non-numeric ids.
    ///
    /// ```
    /// # fn main() -> Result<(), herald_sdk::Error> {
    /// let client = herald_sdk::Client::from_url("https://k:s@api-eu.pusher.com/apps/my-app")?;
    /// assert_eq!(client.app_id(), "my-app");
    /// assert!(herald_sdk::Client::from_url("http://127.0.0.1/apps/1").is_err()); // no credentials
    /// # Ok(()) }
    /// ```
    pub fn from_url(url: &str) -> Result<Client> {
        Self::builder_from_url(url)?.build()
    }

    /// Like [`Client::from_url`], but returns the builder for further options.
    ///
    /// ```
    /// # fn main() -> Result<(), herald_sdk::Error> {
    /// let client = herald_sdk::Client::builder_from_url("http://k:s@localhost:6001/apps/1")?
    ///     .timeout(std::time::Duration::from_secs(2))
    ///     .build()?;
    /// assert_eq!(client.base_url(), "http://localhost:6001");
    /// # Ok(()) }
    /// ```
    pub fn builder_from_url(url: &str) -> Result<ClientBuilder> {
        let parsed = url::Url::parse(url)
            .map_err(|e| Error::Config(format!("invalid URL '{}': {e}", redact(url))))?;
        let tls = match parsed.scheme() {
            "https" => true,
            "http" => false,
            other => {
                return Err(Error::Config(format!(
                    "URL scheme must be http or https, not '{other}'"
                )))
            }
        };
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let key = decode(parsed.username());
        let secret = parsed.password().map(decode).unwrap_or_default();
        if key.is_empty() || secret.is_empty() {
            return Err(Error::Config(
                "URL must carry credentials: http(s)://KEY:SECRET@HOST/apps/APP_ID".into(),
            ));
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| Error::Config("URL has no host".into()))?
            .to_owned();
        let mut segments: Vec<&str> = parsed
            .path_segments()
            .map(|s| s.filter(|p| !p.is_empty()).collect())
            .unwrap_or_default();
        let app_id = match (segments.pop(), segments.pop()) {
            (Some(id), Some("apps")) => id.to_owned(),
            _ => return Err(Error::Config("URL path must end with /apps/APP_ID".into())),
        };
        let mut builder = Self::builder(app_id, key, secret).host(host).tls(tls);
        if let Some(port) = parsed.port() {
            builder = builder.port(port);
        }
        Ok(builder)
    }

    /// A client from the `PUSHER_URL` environment variable.
    ///
    /// ```no_run
    /// let client = herald_sdk::Client::from_env().expect("PUSHER_URL is set");
    /// # let _ = client;
    /// ```
    pub fn from_env() -> Result<Client> {
        let url = std::env::var("PUSHER_URL")
            .map_err(|_| Error::Config("PUSHER_URL is not set".into()))?;
        Self::from_url(&url)
    }
}

/// The URL without its credentials, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}
