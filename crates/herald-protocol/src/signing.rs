//! The HTTP API request signature (spec §6.2): how clients sign and how the server
//! verifies, with the same canonical string on both sides.
//!
//! The server decodes the query before canonicalising because clients differ in escaping
//! (node sends `info=user_count,subscription_count` raw, PHP and Rust percent-encode it)
//! while all of them sign the unescaped value.

use md5::{Digest, Md5};

use crate::hmac_hex::{hmac_sha256_hex, verify_hmac_hex};

/// Lowercase hex MD5 of the raw body, the `body_md5` parameter.
pub fn body_md5_hex(body: &[u8]) -> String {
    hex::encode(Md5::digest(body))
}

/// `METHOD\npath\ncanonical_query`: parameters other than `auth_signature`, keys
/// lower-cased, sorted by key, joined `k=v` with `&`, values unescaped.
pub fn string_to_sign(method: &str, path: &str, params: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, &str)> = params
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
        .filter(|(k, _)| k != "auth_signature")
        .collect();
    pairs.sort();
    let mut out = String::with_capacity(64 + path.len() + pairs.len() * 24);
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

/// Hex HMAC-SHA256 of a string to sign.
pub fn sign(secret: &str, string_to_sign: &str) -> String {
    hmac_sha256_hex(secret.as_bytes(), string_to_sign.as_bytes())
}

/// Why a request's signature was refused. Messages follow Pusher's so users can search them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// A required authentication parameter is absent.
    #[error("Missing required authentication parameter: {0}")]
    Missing(&'static str),
    /// `auth_timestamp` is not an integer.
    #[error("Invalid auth_timestamp: '{0}' (expected seconds since the Unix epoch)")]
    BadTimestamp(String),
    /// `auth_timestamp` is too far from the server's clock.
    #[error("Timestamp expired: Given timestamp ({given}) not within {max_skew}s of server time ({now})")]
    TimestampExpired {
        /// The client's timestamp.
        given: i64,
        /// The server's time.
        now: i64,
        /// The allowed difference in seconds.
        max_skew: i64,
    },
    /// `body_md5` does not match the body received.
    #[error(
        "Invalid body_md5: the MD5 of the body received is {expected}, but body_md5 is '{given}'"
    )]
    BodyMd5Mismatch {
        /// MD5 of the bytes received.
        expected: String,
        /// What the client sent.
        given: String,
    },
    /// The signature does not match.
    #[error("Invalid signature: you should have sent HmacSHA256Hex({}, your_secret_key), but you sent \"{given}\"", escape_newlines(string_to_sign))]
    InvalidSignature {
        /// The canonical string the server signed.
        string_to_sign: String,
        /// The signature received.
        given: String,
    },
    /// `auth_version` is not `1.0`.
    #[error("Unsupported auth_version '{0}' (expected 1.0)")]
    UnsupportedVersion(String),
}

fn escape_newlines(s: &str) -> String {
    format!("\"{}\"", s.replace('\n', "\\n"))
}

/// The parameters of a signed request, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedQuery {
    /// The app key that signed.
    pub auth_key: String,
    /// Seconds since the Unix epoch when the client signed.
    pub auth_timestamp: i64,
    /// Always `1.0`.
    pub auth_version: String,
    /// MD5 of the body, when sent.
    pub body_md5: Option<String>,
    /// The signature to check.
    pub auth_signature: String,
    /// Every decoded parameter except `auth_signature`, keys lower-cased.
    pub params: Vec<(String, String)>,
}

impl SignedQuery {
    /// Decodes a raw query string (`+` is a space, `%XX` escapes are decoded).
    pub fn parse(raw_query: &str) -> Result<SignedQuery, SignatureError> {
        let mut params = Vec::new();
        let mut signature = None;
        for (k, v) in form_urlencoded::parse(raw_query.as_bytes()) {
            let k = k.to_ascii_lowercase();
            if k == "auth_signature" {
                signature = Some(v.into_owned());
            } else {
                params.push((k, v.into_owned()));
            }
        }
        let find = |key: &'static str| {
            params
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .ok_or(SignatureError::Missing(key))
        };
        let auth_key = find("auth_key")?;
        let timestamp = find("auth_timestamp")?;
        let auth_version = find("auth_version")?;
        let auth_signature = signature.ok_or(SignatureError::Missing("auth_signature"))?;
        let auth_timestamp = timestamp
            .trim()
            .parse::<i64>()
            .map_err(|_| SignatureError::BadTimestamp(timestamp.clone()))?;
        let body_md5 = find("body_md5").ok();
        Ok(SignedQuery {
            auth_key,
            auth_timestamp,
            auth_version,
            body_md5,
            auth_signature,
            params,
        })
    }

    /// The decoded value of an endpoint parameter such as `info` or `filter_by_prefix`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Checks, in order: version, timestamp window, `body_md5` against the raw body, and the
    /// signature in constant time.
    pub fn verify(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        secret: &str,
        now_unix: i64,
        max_skew_secs: i64,
    ) -> Result<(), SignatureError> {
        if self.auth_version != "1.0" {
            return Err(SignatureError::UnsupportedVersion(
                self.auth_version.clone(),
            ));
        }
        if (now_unix - self.auth_timestamp).abs() > max_skew_secs {
            return Err(SignatureError::TimestampExpired {
                given: self.auth_timestamp,
                now: now_unix,
                max_skew: max_skew_secs,
            });
        }
        match &self.body_md5 {
            Some(given) => {
                let expected = body_md5_hex(body);
                if !given.eq_ignore_ascii_case(&expected) {
                    return Err(SignatureError::BodyMd5Mismatch {
                        expected,
                        given: given.clone(),
                    });
                }
            }
            None if !body.is_empty() => return Err(SignatureError::Missing("body_md5")),
            None => {}
        }
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

/// Percent-encodes what would change a query's meaning; everything else stays raw, as the
/// Node library sends it. The server decodes before verifying, so both forms agree.
fn encode_value(out: &mut String, value: &str) {
    for b in value.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~' | b',' | b':' | b'@' | b'/')
        {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push_str(&format!("{b:02X}"));
        }
    }
}

/// The complete query string a client sends: `params` plus `auth_key`, `auth_timestamp`,
/// `auth_version=1.0` and (with a body) `body_md5`, sorted by key, then `auth_signature`.
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
        .collect();
    all.push(("auth_key".into(), key.into()));
    all.push(("auth_timestamp".into(), timestamp.to_string()));
    all.push(("auth_version".into(), "1.0".into()));
    if let Some(body) = body {
        all.push(("body_md5".into(), body_md5_hex(body)));
    }
    all.sort();
    let signature = sign(secret, &string_to_sign(method, path, &all));
    let mut out = String::new();
    for (k, v) in &all {
        out.push_str(k);
        out.push('=');
        encode_value(&mut out, v);
        out.push('&');
    }
    out.push_str("auth_signature=");
    out.push_str(&signature);
    out
}
