//! The HTTP API request signature (spec §6.2): how a client signs a request and how the
//! server verifies it, both through the one canonical string built by [`string_to_sign`].
//!
//! The canonical string holds the *decoded* parameter values. Clients differ in how they
//! escape the query (pusher-http-node sends `info=user_count,subscription_count` raw, PHP
//! and the Rust crates send `info=user_count%2Csubscription_count`) but all of them sign
//! the unescaped value, so the server percent-decodes before canonicalising.

use md5::{Digest, Md5};

use crate::hmac_hex::{hmac_sha256_hex, verify_hmac_hex};

/// The only `auth_version` Pusher has ever defined.
const AUTH_VERSION: &str = "1.0";

/// Parameter names the signing scheme owns; a caller's params may not set them.
const RESERVED_PARAMS: [&str; 5] = [
    "auth_key",
    "auth_timestamp",
    "auth_version",
    "body_md5",
    "auth_signature",
];

/// Lowercase hex MD5 of the raw body bytes: the `body_md5` parameter.
pub fn body_md5_hex(body: &[u8]) -> String {
    hex::encode(Md5::digest(body))
}

/// Sorts by key only, and stably, so that repeated keys (`channels[]=a&channels[]=b`) keep
/// the order the client sent them in: that is the order it signed them in.
fn sort_by_key<V>(pairs: &mut [(String, V)]) {
    pairs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
}

/// The string an HTTP API request signs:
/// `UPPER(method) + "\n" + path + "\n" + canonical_query`.
///
/// The canonical query holds every parameter except `auth_signature`, keys lower-cased,
/// sorted by key (byte order), joined as `key=value` with `&`, with the values *not*
/// escaped. `params` must therefore hold decoded values.
pub fn string_to_sign(method: &str, path: &str, params: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, &str)> = params
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
        .filter(|(k, _)| k != "auth_signature")
        .collect();
    sort_by_key(&mut pairs);
    let mut out = String::with_capacity(
        method.len()
            + path.len()
            + 2
            + pairs
                .iter()
                .map(|(k, v)| k.len() + v.len() + 2)
                .sum::<usize>(),
    );
    out.push_str(&method.to_ascii_uppercase());
    out.push('\n');
    out.push_str(path);
    out.push('\n');
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// The `auth_signature` for a string to sign: lowercase hex HMAC-SHA256 keyed with the
/// app secret.
pub fn sign(secret: &str, string_to_sign: &str) -> String {
    hmac_sha256_hex(secret.as_bytes(), string_to_sign.as_bytes())
}

/// Why a request's signature was refused. The messages follow Pusher's own wording, so
/// that users searching for them find the existing answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// A required authentication parameter is absent (`auth_key`, `auth_timestamp`,
    /// `auth_version`, `auth_signature`, or `body_md5` when there is a body).
    #[error("Missing required authentication parameter: {0}")]
    Missing(&'static str),
    /// `auth_timestamp` is not an integer.
    #[error("Invalid auth_timestamp: '{0}' (expected an integer number of seconds since the Unix epoch)")]
    BadTimestamp(String),
    /// `auth_timestamp` is further from the server's clock than allowed.
    #[error("Timestamp expired: Given timestamp ({given}) not within {max_skew}s of server time ({now})")]
    TimestampExpired {
        /// The client's timestamp, in Unix seconds.
        given: i64,
        /// The server's time, in Unix seconds.
        now: i64,
        /// The allowed difference, in seconds.
        max_skew: i64,
    },
    /// `body_md5` is not the MD5 of the body the server received.
    #[error("Invalid body_md5: expected {expected} (the MD5 of the body received), but body_md5 is {given:?}")]
    BodyMd5Mismatch {
        /// The MD5 of the bytes received.
        expected: String,
        /// The `body_md5` the client sent.
        given: String,
    },
    /// The signature does not match. The message shows the string the server signed, as
    /// Pusher's does, because a differing string is the usual cause and it holds no secret.
    #[error("Invalid signature: you should have sent HmacSHA256Hex({string_to_sign:?}, your_secret_key), but you sent {given:?}")]
    InvalidSignature {
        /// The canonical string the server signed.
        string_to_sign: String,
        /// The signature the client sent.
        given: String,
    },
    /// `auth_version` is not `1.0`.
    #[error("Unsupported auth_version: {0:?} (expected \"1.0\")")]
    UnsupportedVersion(String),
}

/// The decoded query of a signed HTTP API request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedQuery {
    /// The app key that signed the request.
    pub auth_key: String,
    /// When the client signed, in Unix seconds.
    pub auth_timestamp: i64,
    /// The signing scheme's version; only `1.0` verifies.
    pub auth_version: String,
    /// The MD5 the client computed over the body, when it sent one.
    pub body_md5: Option<String>,
    /// The signature to check (hex HMAC-SHA256 of the string to sign).
    pub auth_signature: String,
    /// Every decoded parameter in the order received, keys lower-cased, including the
    /// `auth_*` ones except `auth_signature`: exactly what the signature covers.
    pub params: Vec<(String, String)>,
}

impl SignedQuery {
    /// Decodes a raw query string (the part after `?`): `%XX` escapes are decoded and `+`
    /// is a space, as every HTML-form encoder means it. Pairs are kept as given, repeated
    /// keys included; where an `auth_*` parameter is repeated the first one counts.
    pub fn parse(raw_query: &str) -> Result<SignedQuery, SignatureError> {
        let mut params: Vec<(String, String)> = Vec::new();
        let mut auth_signature = None;
        for (k, v) in form_urlencoded::parse(raw_query.as_bytes()) {
            let k = k.to_ascii_lowercase();
            if k == "auth_signature" {
                auth_signature.get_or_insert_with(|| v.into_owned());
            } else {
                params.push((k, v.into_owned()));
            }
        }
        let find = |key: &'static str| {
            params
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        let auth_key = find("auth_key").ok_or(SignatureError::Missing("auth_key"))?;
        let timestamp = find("auth_timestamp").ok_or(SignatureError::Missing("auth_timestamp"))?;
        let auth_version = find("auth_version").ok_or(SignatureError::Missing("auth_version"))?;
        let auth_signature = auth_signature.ok_or(SignatureError::Missing("auth_signature"))?;
        let auth_timestamp = timestamp
            .parse::<i64>()
            .map_err(|_| SignatureError::BadTimestamp(timestamp))?;
        let body_md5 = find("body_md5");
        Ok(SignedQuery {
            auth_key,
            auth_timestamp,
            auth_version,
            body_md5,
            auth_signature,
            params,
        })
    }

    /// The decoded value of a parameter such as `info` or `filter_by_prefix` (key matched
    /// without regard to ASCII case; the first one if repeated).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// Verifies the request's signature against its method, path (starting at
    /// `/apps/{app_id}`, any mount prefix stripped) and raw body.
    ///
    /// Checks, in this order: `auth_version` is `1.0`; `auth_timestamp` is within
    /// `max_skew_secs` of `now_unix`; `body_md5` is present when the body is not empty and
    /// always matches the MD5 of the body; the signature matches, compared in constant
    /// time. Checking the body before the signature tells a client whose body was altered
    /// in transit that the body, not its secret, is wrong.
    pub fn verify(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        secret: &str,
        now_unix: i64,
        max_skew_secs: i64,
    ) -> Result<(), SignatureError> {
        self.verify_version_and_time(now_unix, max_skew_secs)?;
        self.verify_body(body)?;
        self.verify_signature_only(method, path, secret)
    }

    /// Everything [`SignedQuery::verify`] checks that does not need the body: version,
    /// timestamp and signature. The signature covers the `body_md5` *value*, so a server
    /// can refuse a forged or stale request before reading a byte of its body, then check
    /// the body with [`SignedQuery::verify_body`].
    pub fn verify_without_body(
        &self,
        method: &str,
        path: &str,
        secret: &str,
        now_unix: i64,
        max_skew_secs: i64,
    ) -> Result<(), SignatureError> {
        self.verify_version_and_time(now_unix, max_skew_secs)?;
        self.verify_signature_only(method, path, secret)
    }

    /// Whether a body of `len` bytes could verify: a non-empty body needs `body_md5`.
    /// Lets a server refuse before reading the body.
    pub fn accepts_body_len(&self, len: u64) -> Result<(), SignatureError> {
        if len > 0 && self.body_md5.is_none() {
            return Err(SignatureError::Missing("body_md5"));
        }
        Ok(())
    }

    /// `body_md5` is present when the body is not empty, and matches the body.
    pub fn verify_body(&self, body: &[u8]) -> Result<(), SignatureError> {
        match &self.body_md5 {
            Some(given) => {
                let expected = body_md5_hex(body);
                // Hex case carries no meaning; the signature still covers the text as sent.
                if !given.eq_ignore_ascii_case(&expected) {
                    return Err(SignatureError::BodyMd5Mismatch {
                        expected,
                        given: given.clone(),
                    });
                }
                Ok(())
            }
            None => self.accepts_body_len(body.len() as u64),
        }
    }

    fn verify_version_and_time(
        &self,
        now_unix: i64,
        max_skew_secs: i64,
    ) -> Result<(), SignatureError> {
        if self.auth_version != AUTH_VERSION {
            return Err(SignatureError::UnsupportedVersion(
                self.auth_version.clone(),
            ));
        }
        // abs_diff cannot overflow, unlike subtracting two arbitrary client-chosen i64s.
        let skew = now_unix.abs_diff(self.auth_timestamp);
        if skew > max_skew_secs.max(0).unsigned_abs() {
            return Err(SignatureError::TimestampExpired {
                given: self.auth_timestamp,
                now: now_unix,
                max_skew: max_skew_secs,
            });
        }
        Ok(())
    }

    fn verify_signature_only(
        &self,
        method: &str,
        path: &str,
        secret: &str,
    ) -> Result<(), SignatureError> {
        let string = string_to_sign(method, path, &self.params);
        if verify_hmac_hex(secret.as_bytes(), string.as_bytes(), &self.auth_signature) {
            Ok(())
        } else {
            Err(SignatureError::InvalidSignature {
                string_to_sign: string,
                given: self.auth_signature.clone(),
            })
        }
    }
}

/// Whether a byte may stay raw in a query key or value. This is RFC 3986's query set
/// without `&`, `=`, `+` and `;` (separators, or a space, to some parsers) and `'` (which
/// URL parsers escape in http(s) queries, so escaping it ourselves keeps the URL stable).
fn is_query_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'('
                | b')'
                | b'*'
                | b','
                | b':'
                | b'@'
                | b'/'
                | b'?'
        )
}

/// Writes `text` with only the bytes that would break or change a query percent-encoded
/// (space, `&`, `#`, `+`, `%`, `=`, `;`, quotes, controls, non-ASCII, ...).
fn push_query_escaped(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in text.bytes() {
        if is_query_safe(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

/// The complete signed query string a client sends (without the leading `?`).
///
/// It holds `params` plus `auth_key`, `auth_timestamp`, `auth_version=1.0` and, when `body`
/// is `Some`, `body_md5`, sorted by key as in the canonical string, followed by
/// `auth_signature` last. Keys are lower-cased. A caller's param named like one of the
/// `auth_*` parameters or `body_md5` is dropped: the scheme owns those names (the Node
/// library throws instead).
///
/// Values are written raw, as pusher-http-node writes them (`info=a,b`), except for the
/// bytes that would break the query (space, `&`, `#`, `+`, `%`, `=`, `;`, quotes, controls,
/// non-ASCII), which are percent-encoded. The signature is over the unescaped values and
/// [`SignedQuery::parse`] decodes before verifying, so both forms verify the same.
pub fn signed_query_string(
    method: &str,
    path: &str,
    key: &str,
    secret: &str,
    timestamp: i64,
    body: Option<&[u8]>,
    params: &[(&str, &str)],
) -> String {
    let mut all: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), (*v).to_owned()))
        .filter(|(k, _)| !RESERVED_PARAMS.contains(&k.as_str()))
        .collect();
    all.push(("auth_key".to_owned(), key.to_owned()));
    all.push(("auth_timestamp".to_owned(), timestamp.to_string()));
    all.push(("auth_version".to_owned(), AUTH_VERSION.to_owned()));
    if let Some(body) = body {
        all.push(("body_md5".to_owned(), body_md5_hex(body)));
    }
    sort_by_key(&mut all);
    let signature = sign(secret, &string_to_sign(method, path, &all));
    let mut out = String::new();
    for (k, v) in &all {
        push_query_escaped(&mut out, k);
        out.push('=');
        push_query_escaped(&mut out, v);
        out.push('&');
    }
    out.push_str("auth_signature=");
    out.push_str(&signature);
    out
}
