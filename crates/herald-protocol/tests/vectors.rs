//! Golden vectors and error paths for every signature Herald computes.
//!
//! The vectors come from the protocol reference (pusher-protocol.md §3.7, recomputed with
//! pusher-http-node 5.3.4) and from the official Node library's tests (sdk-reference.md §2).
//! If one of them fails, Herald no longer interoperates with unmodified Pusher clients.

use herald_protocol::auth::{
    channel_auth, channel_string_to_sign, user_auth, user_string_to_sign, verify_channel_auth,
    verify_user_auth, AuthError,
};
use herald_protocol::encryption::{
    decode_master_key, decrypt, encrypt, shared_secret, shared_secret_base64, EncryptedPayload,
    EncryptionError,
};
use herald_protocol::signing::{
    body_md5_hex, sign, signed_query_string, string_to_sign, SignatureError, SignedQuery,
};
use herald_protocol::webhook::{verify_webhook_signature, webhook_signature};

/// The app of Pusher's documentation examples.
const DOCS_KEY: &str = "278d425bdf160c739803";
const DOCS_SECRET: &str = "7ad3773142a6692b25b8";
const DOCS_TS: i64 = 1353088179;
/// Pusher's own window, used by the server.
const SKEW: i64 = 600;

/// One golden vector.
enum Vector {
    /// A channel `auth` token, checked both ways.
    Channel {
        key: &'static str,
        secret: &'static str,
        socket_id: &'static str,
        channel: &'static str,
        channel_data: Option<&'static str>,
        /// The string to sign, when the source states it.
        string_to_sign: Option<&'static str>,
        signature: &'static str,
    },
    /// A user sign-in `auth` token, checked both ways.
    User {
        key: &'static str,
        secret: &'static str,
        socket_id: &'static str,
        user_data: &'static str,
        signature: &'static str,
    },
    /// A signed HTTP API request, signed by the client functions and verified by the
    /// server functions.
    Rest {
        key: &'static str,
        secret: &'static str,
        timestamp: i64,
        method: &'static str,
        path: &'static str,
        body: Option<&'static str>,
        /// Endpoint parameters (not the `auth_*` ones).
        params: &'static [(&'static str, &'static str)],
        /// The string to sign, when the source states it.
        string_to_sign: Option<&'static str>,
        /// The query string pusher-http-node sends for this request.
        query: &'static str,
        signature: &'static str,
    },
    /// A webhook body's `X-Pusher-Signature`.
    Webhook {
        secret: &'static str,
        body: &'static str,
        signature: &'static str,
    },
    /// The `body_md5` of a request body.
    BodyMd5 {
        body: &'static str,
        md5: &'static str,
    },
    /// An encrypted channel's shared secret.
    SharedSecret {
        master_key: &'static str,
        channel: &'static str,
        shared_secret: &'static str,
    },
}

const VECTORS: &[(&str, Vector)] = &[
    // pusher-protocol.md §3.7.
    (
        "protocol: private",
        Vector::Channel {
            key: DOCS_KEY,
            secret: DOCS_SECRET,
            socket_id: "1234.1234",
            channel: "private-foobar",
            channel_data: None,
            string_to_sign: Some("1234.1234:private-foobar"),
            signature: "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4",
        },
    ),
    (
        "protocol: presence, numeric user id",
        Vector::Channel {
            key: DOCS_KEY,
            secret: DOCS_SECRET,
            socket_id: "1234.1234",
            channel: "presence-foobar",
            channel_data: Some(r#"{"user_id":10,"user_info":{"name":"Mr. Pusher"}}"#),
            string_to_sign: Some(
                r#"1234.1234:presence-foobar:{"user_id":10,"user_info":{"name":"Mr. Pusher"}}"#,
            ),
            signature: "afaed3695da2ffd16931f457e338e6c9f2921fa133ce7dac49f529792be6304c",
        },
    ),
    (
        "protocol: presence, string user id",
        Vector::Channel {
            key: DOCS_KEY,
            secret: DOCS_SECRET,
            socket_id: "1234.1234",
            channel: "presence-foobar",
            channel_data: Some(r#"{"user_id":"10","user_info":{"name":"Mr. Pusher"}}"#),
            string_to_sign: None,
            signature: "48dac51d2d7569e1e9c0f48c227d4b26f238fa68e5c0bb04222c966909c4f7c4",
        },
    ),
    (
        "protocol: encrypted subscription",
        Vector::Channel {
            key: DOCS_KEY,
            secret: DOCS_SECRET,
            socket_id: "1234.1234",
            channel: "private-encrypted-foobar",
            channel_data: None,
            string_to_sign: Some("1234.1234:private-encrypted-foobar"),
            signature: "e6a18892d037c5d5e76a2265df4f086ffc38631605530dfd214aa5bff495f533",
        },
    ),
    (
        "protocol: user sign-in",
        Vector::User {
            key: DOCS_KEY,
            secret: DOCS_SECRET,
            socket_id: "1234.1234",
            user_data: r#"{"id":"12345","user_info":{"name":"Alice"},"watchlist":["2","3"]}"#,
            signature: "c2358192149257363bfee6968dbf9387c1cbe1f7c0174e07bb75b3c3b3340315",
        },
    ),
    (
        "protocol: shared secret",
        Vector::SharedSecret {
            master_key: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            channel: "private-encrypted-foobar",
            shared_secret: "g3Au6SZ+UCU+IMfFsFva0rq+Gi4tzSHR6WCcWZbS9sY=",
        },
    ),
    (
        "protocol: REST POST (Pusher docs example)",
        Vector::Rest {
            key: DOCS_KEY,
            secret: DOCS_SECRET,
            timestamp: DOCS_TS,
            method: "POST",
            path: "/apps/3/events",
            body: Some(r#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#),
            params: &[],
            string_to_sign: Some("POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f"),
            query: "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f&auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c",
            signature: "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c",
        },
    ),
    (
        "protocol: REST GET channels",
        Vector::Rest {
            key: DOCS_KEY,
            secret: DOCS_SECRET,
            timestamp: DOCS_TS,
            method: "GET",
            path: "/apps/3/channels",
            body: None,
            params: &[("info", "user_count"), ("filter_by_prefix", "presence-")],
            string_to_sign: Some("GET\n/apps/3/channels\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&filter_by_prefix=presence-&info=user_count"),
            query: "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&filter_by_prefix=presence-&info=user_count&auth_signature=16819168891cb5dfd72b5c7a5d3d602605b26c6ba1930033b5e2eeeb65010291",
            signature: "16819168891cb5dfd72b5c7a5d3d602605b26c6ba1930033b5e2eeeb65010291",
        },
    ),
    (
        "protocol: REST GET with a comma list",
        Vector::Rest {
            key: DOCS_KEY,
            secret: DOCS_SECRET,
            timestamp: DOCS_TS,
            method: "GET",
            path: "/apps/3/channels/presence-foobar",
            body: None,
            params: &[("info", "user_count,subscription_count")],
            string_to_sign: Some("GET\n/apps/3/channels/presence-foobar\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&info=user_count,subscription_count"),
            query: "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&info=user_count,subscription_count&auth_signature=377ee9260ea002a70c0d40cd887d55cb36db9f7f821297f5efacbcce66be356d",
            signature: "377ee9260ea002a70c0d40cd887d55cb36db9f7f821297f5efacbcce66be356d",
        },
    ),
    (
        "protocol: REST terminate connections",
        Vector::Rest {
            key: DOCS_KEY,
            secret: DOCS_SECRET,
            timestamp: DOCS_TS,
            method: "POST",
            path: "/apps/3/users/12345/terminate_connections",
            body: Some("{}"),
            params: &[],
            string_to_sign: Some("POST\n/apps/3/users/12345/terminate_connections\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=99914b932bd37a50b983c5e7c90ae93b"),
            query: "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=99914b932bd37a50b983c5e7c90ae93b&auth_signature=01fa634edeb0cae84115307cad5c23f65a46cd286461b1c89637a3b5871a8f0e",
            signature: "01fa634edeb0cae84115307cad5c23f65a46cd286461b1c89637a3b5871a8f0e",
        },
    ),
    (
        "protocol: webhook",
        Vector::Webhook {
            secret: DOCS_SECRET,
            body: r#"{"time_ms":1327078148132,"events":[{"name":"channel_occupied","channel":"test_channel"}]}"#,
            signature: "709fdb84c03664445f7698120b0edf0acc1ab1c8c6e93a0368c61841d6b998aa",
        },
    ),
    (
        "protocol: body md5 of the docs example",
        Vector::BodyMd5 {
            body: r#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#,
            md5: "ec365a775a4cd0599faeb73354201b6f",
        },
    ),
    (
        "protocol: body md5 of {}",
        Vector::BodyMd5 {
            body: "{}",
            md5: "99914b932bd37a50b983c5e7c90ae93b",
        },
    ),
    // sdk-reference.md §2, from pusher-http-node's own tests.
    (
        "node: channel auth",
        Vector::Channel {
            key: "aaaa",
            secret: "tofu",
            socket_id: "123.456",
            channel: "test",
            channel_data: None,
            string_to_sign: None,
            signature: "efa6cf7644a0b35cba36aa0f776f3cbf7bb60e95ea2696bde1dbe8403b61bd7c",
        },
    ),
    (
        "node: presence-style auth",
        Vector::Channel {
            key: "aaaa",
            secret: "tofu",
            socket_id: "123.456",
            channel: "test",
            channel_data: Some(r#"{"foo":"bar"}"#),
            string_to_sign: None,
            signature: "f41faf9ead2ea76772cc6b1168363057459f02499ae4d92e88229dc7f4efa2d4",
        },
    ),
    (
        "node: user auth",
        Vector::User {
            key: "aaaa",
            secret: "tofu",
            socket_id: "123.456",
            user_data: r#"{"id":"45678"}"#,
            signature: "f4b1fdeea7c93e32648c7230e32b172057c5623cace6cfce791c6e7035e0babd",
        },
    ),
    (
        "node: shared secret",
        Vector::SharedSecret {
            master_key: "zyrm8pvV2C9fJcBfhyXzvxbJVN/H7QLmbe0xJi1GhPU=",
            channel: "private-encrypted-bla",
            shared_secret: "nlr49ISQHz91yS3cy/yWmW8wFMNeTnNL5tNHnbPJcLQ=",
        },
    ),
    (
        // Node passes the data "foo" through JSON.stringify, so channel_data is `"foo"`.
        "node: encrypted channel auth with data",
        Vector::Channel {
            key: "f00d",
            secret: "tofu",
            socket_id: "123.456",
            channel: "private-encrypted-bla",
            channel_data: Some(r#""foo""#),
            string_to_sign: Some(r#"123.456:private-encrypted-bla:"foo""#),
            signature: "962c48b78bf93d98ff4c92ee7dff04865821455b7b401e9d60a9e0a90af2c105",
        },
    ),
    (
        "node: signed query with a body",
        Vector::Rest {
            key: "f00d",
            secret: "tofu",
            timestamp: 1234567890,
            method: "GET",
            path: "/event",
            body: Some("example body"),
            params: &[],
            string_to_sign: None,
            query: "auth_key=f00d&auth_timestamp=1234567890&auth_version=1.0&body_md5=165d5e6d7ca8f73b3853ce45addf42fc&auth_signature=a650196dc427ebe837226f8565ca9232198c6d1b9455eaa72374a9dc0b620e7b",
            signature: "a650196dc427ebe837226f8565ca9232198c6d1b9455eaa72374a9dc0b620e7b",
        },
    ),
    (
        "node: signed query with params",
        Vector::Rest {
            key: "f00d",
            secret: "tofu",
            timestamp: 1234567890,
            method: "GET",
            path: "/event",
            body: None,
            params: &[("foo", "bar"), ("baz", "123454321")],
            string_to_sign: None,
            query: "auth_key=f00d&auth_timestamp=1234567890&auth_version=1.0&baz=123454321&foo=bar&auth_signature=d8bdbd31911fb7400a14fbd36fd7de053494725b64400ae5856deafe304b34a9",
            signature: "d8bdbd31911fb7400a14fbd36fd7de053494725b64400ae5856deafe304b34a9",
        },
    ),
    (
        "node: webhook",
        Vector::Webhook {
            secret: "tofu",
            body: r#"{"time_ms":1403175510755,"events":[{"channel":"test_channel","name":"channel_vacated"}]}"#,
            signature: "c17257e92037cd7de407ebc1ed174ceb7b2e518db127f44411b9ffc4f5b28cc5",
        },
    ),
    (
        "node: signed query body md5",
        Vector::BodyMd5 {
            body: "example body",
            md5: "165d5e6d7ca8f73b3853ce45addf42fc",
        },
    ),
    (
        "node: trigger body md5 (key order name, data, channels)",
        Vector::BodyMd5 {
            body: r#"{"name":"my_event","data":"{\"some\":\"data \"}","channels":["one"]}"#,
            md5: "e95168baf497b2e54b2c6cadd41a6a3f",
        },
    ),
    (
        "node: batch body md5",
        Vector::BodyMd5 {
            body: r#"{"batch":[{"channel":"integration","name":"event","data":"test"},{"channel":"integration2","name":"event2","data":"test2"}]}"#,
            md5: "fd5ab5fd40237f27555c4d2564470fdd",
        },
    ),
    (
        "docs: private auth",
        Vector::Channel {
            key: DOCS_KEY,
            secret: DOCS_SECRET,
            socket_id: "1234.1234",
            channel: "private-foobar",
            channel_data: None,
            string_to_sign: None,
            signature: "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4",
        },
    ),
    (
        "docs: user auth",
        Vector::User {
            key: DOCS_KEY,
            secret: DOCS_SECRET,
            socket_id: "1234.1234",
            user_data: r#"{"id":"12345"}"#,
            signature: "4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba",
        },
    ),
];

/// Percent-encodes every value the way PHP/Guzzle and the Rust crates do, to prove the
/// server decodes before verifying.
fn fully_encoded(query: &str) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        out.append_pair(&k, &v);
    }
    out.finish()
}

fn check(name: &str, vector: &Vector) {
    match *vector {
        Vector::Channel {
            key,
            secret,
            socket_id,
            channel,
            channel_data,
            string_to_sign,
            signature,
        } => {
            if let Some(expected) = string_to_sign {
                assert_eq!(
                    channel_string_to_sign(socket_id, channel, channel_data),
                    expected,
                    "{name}"
                );
            }
            let token = channel_auth(key, secret, socket_id, channel, channel_data);
            assert_eq!(token, format!("{key}:{signature}"), "{name}");
            assert_eq!(
                verify_channel_auth(key, secret, &token, socket_id, channel, channel_data),
                Ok(()),
                "{name}"
            );
        }
        Vector::User {
            key,
            secret,
            socket_id,
            user_data,
            signature,
        } => {
            let token = user_auth(key, secret, socket_id, user_data);
            assert_eq!(token, format!("{key}:{signature}"), "{name}");
            assert_eq!(
                verify_user_auth(key, secret, &token, socket_id, user_data),
                Ok(()),
                "{name}"
            );
        }
        Vector::Rest {
            key,
            secret,
            timestamp,
            method,
            path,
            body,
            params,
            string_to_sign: expected_string,
            query,
            signature,
        } => {
            let body_bytes = body.map(str::as_bytes);
            // Client side: the signed query is byte-for-byte what pusher-http-node sends.
            let signed =
                signed_query_string(method, path, key, secret, timestamp, body_bytes, params);
            assert_eq!(signed, query, "{name}");
            // The canonical string and the bare signing primitive.
            let parsed = SignedQuery::parse(query).unwrap_or_else(|e| panic!("{name}: {e}"));
            let canonical = string_to_sign(method, path, &parsed.params);
            if let Some(expected) = expected_string {
                assert_eq!(canonical, expected, "{name}");
            }
            assert_eq!(sign(secret, &canonical), signature, "{name}");
            assert_eq!(parsed.auth_signature, signature, "{name}");
            assert_eq!(parsed.auth_key, key, "{name}");
            assert_eq!(parsed.auth_timestamp, timestamp, "{name}");
            for (k, v) in params {
                assert_eq!(parsed.get(k), Some(*v), "{name}: param {k}");
            }
            // Server side: raw and fully percent-encoded forms both verify.
            let raw_body = body_bytes.unwrap_or_default();
            for form in [query.to_owned(), fully_encoded(query)] {
                let parsed = SignedQuery::parse(&form).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(
                    parsed.verify(method, path, raw_body, secret, timestamp, SKEW),
                    Ok(()),
                    "{name}: {form}"
                );
            }
        }
        Vector::Webhook {
            secret,
            body,
            signature,
        } => {
            assert_eq!(
                webhook_signature(secret, body.as_bytes()),
                signature,
                "{name}"
            );
            assert!(
                verify_webhook_signature(secret, body.as_bytes(), signature),
                "{name}"
            );
        }
        Vector::BodyMd5 { body, md5 } => {
            assert_eq!(body_md5_hex(body.as_bytes()), md5, "{name}");
        }
        Vector::SharedSecret {
            master_key,
            channel,
            shared_secret: expected,
        } => {
            let key = decode_master_key(master_key).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(shared_secret_base64(channel, &key), expected, "{name}");
        }
    }
}

#[test]
fn golden_vectors() {
    for (name, vector) in VECTORS {
        check(name, vector);
    }
}

fn seq<const N: usize>() -> [u8; N] {
    std::array::from_fn(|i| i as u8)
}

#[test]
fn secretbox_vector() {
    let master = decode_master_key("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=");
    assert_eq!(master, Ok(seq::<32>()));
    let secret = shared_secret("private-encrypted-foobar", &seq::<32>());
    let payload = encrypt(&secret, &seq::<24>(), br#"{"message":"hello"}"#);
    let json = r#"{"nonce":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYX","ciphertext":"cUvi6VQlRGyKCRRclUJdHUsGJzgoj596PYEg0Ekt7UbHsAQ="}"#;
    assert_eq!(payload.to_json(), json);
    assert_eq!(EncryptedPayload::from_json(json).as_ref(), Ok(&payload));
    assert_eq!(
        decrypt(&secret, &payload).as_deref(),
        Ok(&br#"{"message":"hello"}"#[..])
    );
}

// ---- HTTP API signature error paths ----

const BODY: &[u8] = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
const DOCS_QUERY: &str = "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f&auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c";

fn verify_docs(query: &str, body: &[u8], now: i64) -> Result<(), SignatureError> {
    SignedQuery::parse(query)?.verify("POST", "/apps/3/events", body, DOCS_SECRET, now, SKEW)
}

#[test]
fn timestamp_window_is_inclusive_and_symmetric() {
    assert_eq!(verify_docs(DOCS_QUERY, BODY, DOCS_TS + SKEW), Ok(()));
    assert_eq!(verify_docs(DOCS_QUERY, BODY, DOCS_TS - SKEW), Ok(()));
    for now in [DOCS_TS + SKEW + 1, DOCS_TS - SKEW - 1] {
        let err = verify_docs(DOCS_QUERY, BODY, now);
        assert_eq!(
            err,
            Err(SignatureError::TimestampExpired {
                given: DOCS_TS,
                now,
                max_skew: SKEW
            })
        );
    }
    let message = verify_docs(DOCS_QUERY, BODY, 1353088780).map_err(|e| e.to_string());
    assert_eq!(
        message,
        Err("Timestamp expired: Given timestamp (1353088179) not within 600s of server time (1353088780)".into())
    );
}

#[test]
fn stale_timestamp_is_reported_before_the_body_and_signature() {
    let err = verify_docs(DOCS_QUERY, b"tampered", DOCS_TS + 10_000);
    assert!(matches!(err, Err(SignatureError::TimestampExpired { .. })));
}

#[test]
fn extreme_timestamps_do_not_overflow() {
    let query = signed_query_string("GET", "/x", "k", "s", i64::MIN, None, &[]);
    let parsed = SignedQuery::parse(&query).expect("own query parses");
    assert!(matches!(
        parsed.verify("GET", "/x", b"", "s", i64::MAX, i64::MAX),
        Ok(()) | Err(SignatureError::TimestampExpired { .. })
    ));
    assert!(matches!(
        parsed.verify("GET", "/x", b"", "s", i64::MAX, -5),
        Err(SignatureError::TimestampExpired { .. })
    ));
    let query = signed_query_string("GET", "/x", "k", "s", 7, None, &[]);
    let parsed = SignedQuery::parse(&query).expect("own query parses");
    assert_eq!(parsed.verify("GET", "/x", b"", "s", 7, 0), Ok(()));
}

#[test]
fn body_md5_mismatch_names_both_values() {
    let err = verify_docs(DOCS_QUERY, b"{}", DOCS_TS);
    assert_eq!(
        err,
        Err(SignatureError::BodyMd5Mismatch {
            expected: "99914b932bd37a50b983c5e7c90ae93b".into(),
            given: "ec365a775a4cd0599faeb73354201b6f".into(),
        })
    );
    let message = err.map_err(|e| e.to_string()).unwrap_err();
    assert!(
        message.contains("99914b932bd37a50b983c5e7c90ae93b"),
        "{message}"
    );
    assert!(
        message.contains("ec365a775a4cd0599faeb73354201b6f"),
        "{message}"
    );
}

#[test]
fn a_body_needs_body_md5() {
    let query = signed_query_string(
        "POST",
        "/apps/3/events",
        DOCS_KEY,
        DOCS_SECRET,
        DOCS_TS,
        None,
        &[],
    );
    assert_eq!(
        verify_docs(&query, BODY, DOCS_TS),
        Err(SignatureError::Missing("body_md5"))
    );
    // Without a body, no body_md5 is fine.
    assert_eq!(verify_docs(&query, b"", DOCS_TS), Ok(()));
}

#[test]
fn body_md5_with_an_empty_body_must_be_the_md5_of_nothing() {
    let empty = signed_query_string(
        "POST",
        "/apps/3/events",
        DOCS_KEY,
        DOCS_SECRET,
        DOCS_TS,
        Some(b""),
        &[],
    );
    assert!(
        empty.contains("body_md5=d41d8cd98f00b204e9800998ecf8427e"),
        "{empty}"
    );
    assert_eq!(verify_docs(&empty, b"", DOCS_TS), Ok(()));
    assert!(matches!(
        verify_docs(DOCS_QUERY, b"", DOCS_TS),
        Err(SignatureError::BodyMd5Mismatch { .. })
    ));
}

#[test]
fn body_md5_hex_case_is_ignored_but_still_signed() {
    // An upper-case body_md5 matches the body, but the signature covered the lower-case one.
    let upper = DOCS_QUERY.replace(
        "ec365a775a4cd0599faeb73354201b6f",
        "EC365A775A4CD0599FAEB73354201B6F",
    );
    assert!(matches!(
        verify_docs(&upper, BODY, DOCS_TS),
        Err(SignatureError::InvalidSignature { .. })
    ));
}

#[test]
fn wrong_signature_shows_the_expected_string() {
    let query = DOCS_QUERY.replace("da454824", "00000000");
    let err = verify_docs(&query, BODY, DOCS_TS);
    let expected = "POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f";
    assert_eq!(
        err,
        Err(SignatureError::InvalidSignature {
            string_to_sign: expected.into(),
            given: "00000000c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c".into(),
        })
    );
    assert_eq!(
        err.map_err(|e| e.to_string()),
        Err(r#"Invalid signature: you should have sent HmacSHA256Hex("POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f", your_secret_key), but you sent "00000000c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c""#.into())
    );
}

#[test]
fn wrong_secret_method_path_or_param_fails() {
    let parsed = SignedQuery::parse(DOCS_QUERY).expect("docs query parses");
    let fails = |method, path, secret| {
        matches!(
            parsed.verify(method, path, BODY, secret, DOCS_TS, SKEW),
            Err(SignatureError::InvalidSignature { .. })
        )
    };
    assert!(fails("POST", "/apps/3/events", "other secret"));
    assert!(fails("PUT", "/apps/3/events", DOCS_SECRET));
    assert!(fails("POST", "/apps/4/events", DOCS_SECRET));
    // The method's case does not matter: it is upper-cased before signing.
    assert!(!fails("post", "/apps/3/events", DOCS_SECRET));
    let extra = format!("{DOCS_QUERY}&info=user_count");
    assert!(matches!(
        verify_docs(&extra, BODY, DOCS_TS),
        Err(SignatureError::InvalidSignature { .. })
    ));
    let short = DOCS_QUERY.replace("da454824", "");
    assert!(matches!(
        verify_docs(&short, BODY, DOCS_TS),
        Err(SignatureError::InvalidSignature { .. })
    ));
    let not_hex = DOCS_QUERY.replace("da454824", "zz454824");
    assert!(matches!(
        verify_docs(&not_hex, BODY, DOCS_TS),
        Err(SignatureError::InvalidSignature { .. })
    ));
}

#[test]
fn upper_case_hex_signature_verifies() {
    let upper = DOCS_QUERY.replace(
        "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c",
        "DA454824C97BA181A32CCC17A72625BA02771F50B50E1E7430E47A1F3F457E6C",
    );
    assert_eq!(verify_docs(&upper, BODY, DOCS_TS), Ok(()));
}

#[test]
fn missing_parameters_are_named() {
    for (param, message) in [
        (
            "auth_key",
            "Missing required authentication parameter: auth_key",
        ),
        (
            "auth_timestamp",
            "Missing required authentication parameter: auth_timestamp",
        ),
        (
            "auth_version",
            "Missing required authentication parameter: auth_version",
        ),
        (
            "auth_signature",
            "Missing required authentication parameter: auth_signature",
        ),
    ] {
        let query: Vec<&str> = DOCS_QUERY
            .split('&')
            .filter(|pair| !pair.starts_with(&format!("{param}=")))
            .collect();
        let err = SignedQuery::parse(&query.join("&"));
        assert!(
            matches!(err, Err(SignatureError::Missing(p)) if p == param),
            "{param}"
        );
        assert_eq!(err.map_err(|e| e.to_string()).unwrap_err(), message);
    }
    assert!(matches!(
        SignedQuery::parse(""),
        Err(SignatureError::Missing(_))
    ));
}

#[test]
fn bad_timestamp_and_version() {
    let query = DOCS_QUERY.replace("auth_timestamp=1353088179", "auth_timestamp=soon");
    let err = SignedQuery::parse(&query);
    assert_eq!(err, Err(SignatureError::BadTimestamp("soon".into())));
    assert!(err
        .map_err(|e| e.to_string())
        .unwrap_err()
        .contains("'soon'"));
    let huge = DOCS_QUERY.replace(
        "auth_timestamp=1353088179",
        "auth_timestamp=99999999999999999999",
    );
    assert!(matches!(
        SignedQuery::parse(&huge),
        Err(SignatureError::BadTimestamp(_))
    ));

    let query = DOCS_QUERY.replace("auth_version=1.0", "auth_version=2.0");
    let err = verify_docs(&query, BODY, DOCS_TS);
    assert_eq!(err, Err(SignatureError::UnsupportedVersion("2.0".into())));
    assert!(err.map_err(|e| e.to_string()).unwrap_err().contains("2.0"));
}

#[test]
fn percent_encoded_comma_list_verifies_like_the_raw_one() {
    let raw = "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&info=user_count,subscription_count&auth_signature=377ee9260ea002a70c0d40cd887d55cb36db9f7f821297f5efacbcce66be356d";
    let encoded = raw.replace(
        "user_count,subscription_count",
        "user_count%2Csubscription_count",
    );
    for query in [raw, encoded.as_str()] {
        let parsed = SignedQuery::parse(query).expect("parses");
        assert_eq!(parsed.get("info"), Some("user_count,subscription_count"));
        assert_eq!(
            parsed.verify(
                "GET",
                "/apps/3/channels/presence-foobar",
                b"",
                DOCS_SECRET,
                DOCS_TS,
                SKEW
            ),
            Ok(()),
            "{query}"
        );
    }
}

#[test]
fn plus_decodes_to_a_space() {
    let signed = signed_query_string(
        "GET",
        "/apps/3/channels",
        DOCS_KEY,
        DOCS_SECRET,
        DOCS_TS,
        None,
        &[("filter_by_prefix", "a b")],
    );
    // The client escapes the space; a form encoder would send `+` instead.
    assert!(signed.contains("filter_by_prefix=a%20b"), "{signed}");
    let plus = signed.replace("a%20b", "a+b");
    for query in [signed.as_str(), plus.as_str()] {
        let parsed = SignedQuery::parse(query).expect("parses");
        assert_eq!(parsed.get("filter_by_prefix"), Some("a b"));
        assert_eq!(
            parsed.verify("GET", "/apps/3/channels", b"", DOCS_SECRET, DOCS_TS, SKEW),
            Ok(())
        );
    }
    // A literal plus must be escaped, or it would arrive as a space.
    let literal = signed_query_string("GET", "/x", "k", "s", 1, None, &[("q", "a+b")]);
    assert!(literal.contains("q=a%2Bb"), "{literal}");
}

#[test]
fn upper_case_keys_are_lower_cased() {
    let query = DOCS_QUERY
        .replace("auth_key=", "AUTH_KEY=")
        .replace("auth_signature=", "Auth_Signature=");
    let parsed = SignedQuery::parse(&query).expect("parses");
    assert_eq!(parsed.auth_key, DOCS_KEY);
    assert_eq!(verify_docs(&query, BODY, DOCS_TS), Ok(()));
}

#[test]
fn repeated_array_params_are_kept_in_order() {
    let params = [("channels[]", "b"), ("channels[]", "a")];
    let signed = signed_query_string(
        "POST",
        "/apps/3/events",
        DOCS_KEY,
        DOCS_SECRET,
        DOCS_TS,
        None,
        &params,
    );
    assert!(
        signed.contains("channels%5B%5D=b&channels%5B%5D=a"),
        "{signed}"
    );
    let parsed = SignedQuery::parse(&signed).expect("parses");
    assert_eq!(
        parsed.verify("POST", "/apps/3/events", b"", DOCS_SECRET, DOCS_TS, SKEW),
        Ok(())
    );
    let channels: Vec<&str> = parsed
        .params
        .iter()
        .filter(|(k, _)| k == "channels[]")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(channels, ["b", "a"]);
}

#[test]
fn reserved_names_in_params_are_dropped() {
    let signed = signed_query_string(
        "GET",
        "/x",
        "k",
        "s",
        5,
        None,
        &[("auth_key", "evil"), ("AUTH_SIGNATURE", "x"), ("ok", "1")],
    );
    assert!(
        signed.starts_with("auth_key=k&auth_timestamp=5&auth_version=1.0&ok=1&auth_signature="),
        "{signed}"
    );
}

#[test]
fn string_to_sign_canonicalises() {
    let params = vec![
        ("b".to_owned(), "2".to_owned()),
        ("A".to_owned(), "1 & =".to_owned()),
        ("auth_signature".to_owned(), "ignored".to_owned()),
        ("_".to_owned(), "3".to_owned()),
    ];
    assert_eq!(
        string_to_sign("get", "/p", &params),
        "GET\n/p\n_=3&a=1 & =&b=2"
    );
    assert_eq!(string_to_sign("GET", "/p", &[]), "GET\n/p\n");
}

// ---- channel and user auth error paths ----

#[test]
fn auth_errors() {
    let verify = |auth: &str| {
        verify_channel_auth(
            DOCS_KEY,
            DOCS_SECRET,
            auth,
            "1234.1234",
            "private-foobar",
            None,
        )
    };
    let good = channel_auth(DOCS_KEY, DOCS_SECRET, "1234.1234", "private-foobar", None);
    assert_eq!(verify(&good), Ok(()));
    assert_eq!(
        verify(
            &good
                .to_uppercase()
                .replacen(&DOCS_KEY.to_uppercase(), DOCS_KEY, 1)
        ),
        Ok(())
    );

    let cases: [(&str, AuthError, &str); 5] = [
        (
            "",
            AuthError::Missing { channel: "private-foobar".into() },
            "Auth info required to subscribe to private-foobar",
        ),
        (
            "no-colon",
            AuthError::Format,
            "Invalid format: auth must have the format key:signature",
        ),
        (
            "otherkey:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4",
            AuthError::WrongKey { given: "otherkey".into() },
            "Invalid key in subscription auth data: 'otherkey'",
        ),
        (
            "278d425bdf160c739803:deadbeef",
            AuthError::InvalidSignature {
                string_to_sign: "1234.1234:private-foobar".into(),
                given: "deadbeef".into(),
            },
            "Invalid signature: Expected HMAC SHA256 hex digest of 1234.1234:private-foobar, but got deadbeef",
        ),
        (
            "278d425bdf160c739803:",
            AuthError::InvalidSignature {
                string_to_sign: "1234.1234:private-foobar".into(),
                given: String::new(),
            },
            "Invalid signature: Expected HMAC SHA256 hex digest of 1234.1234:private-foobar, but got ",
        ),
    ];
    for (auth, error, message) in cases {
        assert_eq!(verify(auth), Err(error.clone()), "{auth:?}");
        assert_eq!(error.to_string(), message);
    }

    // A signature for another socket, channel or channel_data does not carry over.
    assert!(verify_channel_auth(
        DOCS_KEY,
        DOCS_SECRET,
        &good,
        "1234.1235",
        "private-foobar",
        None
    )
    .is_err());
    assert!(verify_channel_auth(
        DOCS_KEY,
        DOCS_SECRET,
        &good,
        "1234.1234",
        "private-foobaz",
        None
    )
    .is_err());
    assert!(verify_channel_auth(
        DOCS_KEY,
        DOCS_SECRET,
        &good,
        "1234.1234",
        "private-foobar",
        Some("{}")
    )
    .is_err());
}

#[test]
fn user_auth_errors() {
    let data = r#"{"id":"12345"}"#;
    let verify =
        |auth: &str, data: &str| verify_user_auth(DOCS_KEY, DOCS_SECRET, auth, "1234.1234", data);
    let good = user_auth(DOCS_KEY, DOCS_SECRET, "1234.1234", data);
    assert_eq!(
        user_string_to_sign("1234.1234", data),
        r#"1234.1234::user::{"id":"12345"}"#
    );
    assert_eq!(verify(&good, data), Ok(()));
    assert_eq!(verify("", data), Err(AuthError::MissingUserAuth));
    assert_eq!(
        AuthError::MissingUserAuth.to_string(),
        "Auth info required to sign in"
    );
    assert_eq!(verify("nocolon", data), Err(AuthError::Format));
    assert!(matches!(
        verify("x:y", data),
        Err(AuthError::WrongKey { .. })
    ));
    // Re-serialised user data (whitespace added) no longer matches.
    assert_eq!(
        verify(&good, r#"{"id": "12345"}"#),
        Err(AuthError::InvalidSignature {
            string_to_sign: r#"1234.1234::user::{"id": "12345"}"#.into(),
            given: good
                .split_once(':')
                .map(|(_, s)| s.to_owned())
                .unwrap_or_default(),
        })
    );
}

// ---- webhook and encryption error paths ----

#[test]
fn webhook_rejects_other_bodies_and_signatures() {
    let body = br#"{"time_ms":1,"events":[]}"#;
    let signature = webhook_signature("tofu", body);
    assert!(verify_webhook_signature("tofu", body, &signature));
    assert!(verify_webhook_signature(
        "tofu",
        body,
        &signature.to_uppercase()
    ));
    assert!(!verify_webhook_signature("tofo", body, &signature));
    assert!(!verify_webhook_signature(
        "tofu",
        br#"{"time_ms":2,"events":[]}"#,
        &signature
    ));
    assert!(!verify_webhook_signature("tofu", body, ""));
    assert!(!verify_webhook_signature("tofu", body, &signature[..62]));
    assert!(!verify_webhook_signature("tofu", body, "not hex at all"));
}

#[test]
fn master_key_errors_never_show_the_key() {
    let secret_looking = "c2VjcmV0LWtleS1tYXRlcmlhbA"; // base64 of "secret-key-material"
    for (input, expected) in [
        ("not base64!", EncryptionError::KeyNotBase64),
        (secret_looking, EncryptionError::KeyLength(19)),
        ("AAAA", EncryptionError::KeyLength(3)),
        ("", EncryptionError::KeyLength(0)),
    ] {
        let err = decode_master_key(input);
        assert_eq!(err, Err(expected), "{input}");
        let message = err.map_err(|e| e.to_string()).unwrap_err();
        assert!(input.is_empty() || !message.contains(input), "{message}");
    }
    // Lenient like Node's Buffer.from(..., "base64"): no padding, URL-safe, whitespace.
    let key = seq::<32>();
    for input in [
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
        " AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
    ] {
        assert_eq!(decode_master_key(input), Ok(key), "{input:?}");
    }
    let url_safe = decode_master_key("zyrm8pvV2C9fJcBfhyXzvxbJVN_H7QLmbe0xJi1GhPU=");
    assert_eq!(
        url_safe,
        decode_master_key("zyrm8pvV2C9fJcBfhyXzvxbJVN/H7QLmbe0xJi1GhPU=")
    );
}

#[test]
fn decrypt_errors() {
    let secret = [7u8; 32];
    let payload = encrypt(&secret, &[1; 24], b"x");
    assert_eq!(decrypt(&secret, &payload).as_deref(), Ok(&b"x"[..]));
    assert_eq!(decrypt(&[8u8; 32], &payload), Err(EncryptionError::Decrypt));

    let mut tampered = payload.clone();
    tampered.ciphertext = encrypt(&secret, &[1; 24], b"y").ciphertext;
    tampered.nonce = encrypt(&secret, &[2; 24], b"x").nonce;
    assert_eq!(decrypt(&secret, &tampered), Err(EncryptionError::Decrypt));

    for (nonce, ciphertext) in [
        ("AAAA", payload.ciphertext.as_str()),
        ("%%%", payload.ciphertext.as_str()),
        (payload.nonce.as_str(), "%%%"),
    ] {
        let bad = EncryptedPayload {
            nonce: nonce.into(),
            ciphertext: ciphertext.into(),
        };
        assert!(
            matches!(decrypt(&secret, &bad), Err(EncryptionError::Malformed(_))),
            "{nonce} {ciphertext}"
        );
    }
    let short = EncryptedPayload {
        nonce: payload.nonce.clone(),
        ciphertext: "AAAA".into(),
    };
    assert_eq!(decrypt(&secret, &short), Err(EncryptionError::Decrypt));

    assert_eq!(
        EncryptedPayload::from_json("{}"),
        Err(EncryptionError::NotJson)
    );
    assert_eq!(
        EncryptedPayload::from_json("nope"),
        Err(EncryptionError::NotJson)
    );
    let odd = EncryptedPayload {
        nonce: "a\"b".into(),
        ciphertext: "c\\d".into(),
    };
    assert_eq!(odd.to_json(), r#"{"nonce":"a\"b","ciphertext":"c\\d"}"#);
    assert_eq!(EncryptedPayload::from_json(&odd.to_json()), Ok(odd));
}
