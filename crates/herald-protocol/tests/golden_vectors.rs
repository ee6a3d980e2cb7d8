//! The golden vectors of the protocol reference (§3.7) and the SDK reference (§2): every
//! signature Herald computes must match what Pusher and the official libraries produce.

use herald_protocol::auth::{channel_auth, user_auth, verify_channel_auth, verify_user_auth};
use herald_protocol::hmac_hex::hmac_sha256_hex;
use herald_protocol::signing::{
    body_md5_hex, sign, signed_query_string, string_to_sign, SignatureError, SignedQuery,
};

const KEY: &str = "278d425bdf160c739803";
const SECRET: &str = "7ad3773142a6692b25b8";

/// One raw HMAC vector: secret, string to sign, expected hex.
fn check(secret: &str, message: &str, expected: &str) {
    assert_eq!(
        hmac_sha256_hex(secret.as_bytes(), message.as_bytes()),
        expected,
        "HMAC of {message:?}"
    );
}

#[test]
fn protocol_reference_hmac_vectors() {
    let table = [
        ("1234.1234:private-foobar", "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"),
        (r#"1234.1234:presence-foobar:{"user_id":10,"user_info":{"name":"Mr. Pusher"}}"#, "afaed3695da2ffd16931f457e338e6c9f2921fa133ce7dac49f529792be6304c"),
        ("POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f", "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"),
        (r#"1234.1234:presence-foobar:{"user_id":"10","user_info":{"name":"Mr. Pusher"}}"#, "48dac51d2d7569e1e9c0f48c227d4b26f238fa68e5c0bb04222c966909c4f7c4"),
        ("1234.1234:private-encrypted-foobar", "e6a18892d037c5d5e76a2265df4f086ffc38631605530dfd214aa5bff495f533"),
        (r#"1234.1234::user::{"id":"12345","user_info":{"name":"Alice"},"watchlist":["2","3"]}"#, "c2358192149257363bfee6968dbf9387c1cbe1f7c0174e07bb75b3c3b3340315"),
        ("GET\n/apps/3/channels\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&filter_by_prefix=presence-&info=user_count", "16819168891cb5dfd72b5c7a5d3d602605b26c6ba1930033b5e2eeeb65010291"),
        ("GET\n/apps/3/channels/presence-foobar\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&info=user_count,subscription_count", "377ee9260ea002a70c0d40cd887d55cb36db9f7f821297f5efacbcce66be356d"),
        ("POST\n/apps/3/users/12345/terminate_connections\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=99914b932bd37a50b983c5e7c90ae93b", "01fa634edeb0cae84115307cad5c23f65a46cd286461b1c89637a3b5871a8f0e"),
        (r#"{"time_ms":1327078148132,"events":[{"name":"channel_occupied","channel":"test_channel"}]}"#, "709fdb84c03664445f7698120b0edf0acc1ab1c8c6e93a0368c61841d6b998aa"),
    ];
    for (message, expected) in table {
        check(SECRET, message, expected);
    }
}

#[test]
fn channel_and_user_auth_tokens() {
    assert_eq!(
        channel_auth(KEY, SECRET, "1234.1234", "private-foobar", None),
        format!("{KEY}:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4")
    );
    let data = r#"{"user_id":10,"user_info":{"name":"Mr. Pusher"}}"#;
    let token = channel_auth(KEY, SECRET, "1234.1234", "presence-foobar", Some(data));
    assert!(token.ends_with("afaed3695da2ffd16931f457e338e6c9f2921fa133ce7dac49f529792be6304c"));
    assert_eq!(
        verify_channel_auth(
            KEY,
            SECRET,
            &token,
            "1234.1234",
            "presence-foobar",
            Some(data)
        ),
        Ok(())
    );
    // Signed over the exact bytes: a re-serialisation with a space must fail.
    let respaced = r#"{"user_id": 10,"user_info":{"name":"Mr. Pusher"}}"#;
    assert!(verify_channel_auth(
        KEY,
        SECRET,
        &token,
        "1234.1234",
        "presence-foobar",
        Some(respaced)
    )
    .is_err());
    assert_eq!(
        user_auth(KEY, SECRET, "1234.1234", r#"{"id":"12345"}"#),
        format!("{KEY}:4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba")
    );
    // The node library's own test vectors (key aaaa, secret tofu).
    assert!(channel_auth("aaaa", "tofu", "123.456", "test", None)
        .ends_with("efa6cf7644a0b35cba36aa0f776f3cbf7bb60e95ea2696bde1dbe8403b61bd7c"));
    assert!(
        channel_auth("aaaa", "tofu", "123.456", "test", Some(r#"{"foo":"bar"}"#))
            .ends_with("f41faf9ead2ea76772cc6b1168363057459f02499ae4d92e88229dc7f4efa2d4")
    );
    let user = user_auth("aaaa", "tofu", "123.456", r#"{"id":"45678"}"#);
    assert!(user.ends_with("f4b1fdeea7c93e32648c7230e32b172057c5623cace6cfce791c6e7035e0babd"));
    assert_eq!(
        verify_user_auth("aaaa", "tofu", &user, "123.456", r#"{"id":"45678"}"#),
        Ok(())
    );
}

#[test]
fn auth_errors_carry_pushers_messages() {
    let err = |auth: &str| {
        verify_channel_auth(KEY, SECRET, auth, "1234.1234", "private-foobar", None)
            .expect_err(auth)
            .to_string()
    };
    assert_eq!(err(""), "Auth info required to subscribe to private-foobar");
    assert_eq!(
        err("nocolon"),
        "Invalid format: auth must have the format key:signature"
    );
    assert_eq!(
        err("other:abc"),
        "Invalid key in subscription auth data: 'other'"
    );
    assert!(err(&format!("{KEY}:00")).starts_with(
        "Invalid signature: Expected HMAC SHA256 hex digest of 1234.1234:private-foobar, but got 00"
    ));
}

#[test]
fn body_md5_vectors() {
    for (body, md5) in [
        (
            r#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#,
            "ec365a775a4cd0599faeb73354201b6f",
        ),
        ("{}", "99914b932bd37a50b983c5e7c90ae93b"),
        ("example body", "165d5e6d7ca8f73b3853ce45addf42fc"),
        (
            r#"{"name":"my_event","data":"{\"some\":\"data \"}","channels":["one"]}"#,
            "e95168baf497b2e54b2c6cadd41a6a3f",
        ),
        (
            r#"{"batch":[{"channel":"integration","name":"event","data":"test"},{"channel":"integration2","name":"event2","data":"test2"}]}"#,
            "fd5ab5fd40237f27555c4d2564470fdd",
        ),
        ("", "d41d8cd98f00b204e9800998ecf8427e"),
    ] {
        assert_eq!(body_md5_hex(body.as_bytes()), md5, "{body}");
    }
}

#[test]
fn docs_example_request_verifies() {
    let body = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
    let query = "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f&auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c";
    let q = SignedQuery::parse(query).expect("parses");
    assert_eq!(
        q.verify("POST", "/apps/3/events", body, SECRET, 1353088179, 600),
        Ok(())
    );
    // The same with the clock 601 s later is stale.
    assert!(matches!(
        q.verify(
            "POST",
            "/apps/3/events",
            body,
            SECRET,
            1353088179 + 601,
            600
        ),
        Err(SignatureError::TimestampExpired { .. })
    ));
    // Another body under the same query is a body_md5 mismatch.
    assert!(matches!(
        q.verify("POST", "/apps/3/events", b"{}", SECRET, 1353088179, 600),
        Err(SignatureError::BodyMd5Mismatch { .. })
    ));
    let wrong = q.verify(
        "POST",
        "/apps/3/events",
        body,
        "other-secret",
        1353088179,
        600,
    );
    let message = wrong.expect_err("wrong secret").to_string();
    assert!(
        message.contains(r"POST\n/apps/3/events\nauth_key=278d425bdf160c739803"),
        "{message}"
    );
}

#[test]
fn percent_encoded_query_verifies_like_the_raw_one() {
    let raw = "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&info=user_count,subscription_count&auth_signature=377ee9260ea002a70c0d40cd887d55cb36db9f7f821297f5efacbcce66be356d";
    let encoded = raw.replace(
        "user_count,subscription_count",
        "user_count%2Csubscription_count",
    );
    for query in [raw, encoded.as_str()] {
        let q = SignedQuery::parse(query).expect("parses");
        assert_eq!(q.get("info"), Some("user_count,subscription_count"));
        assert_eq!(
            q.verify(
                "GET",
                "/apps/3/channels/presence-foobar",
                b"",
                SECRET,
                1353088179,
                600
            ),
            Ok(()),
            "{query}"
        );
    }
    // `+` is a space in a query string.
    let q =
        SignedQuery::parse("auth_key=k&auth_timestamp=1&auth_version=1.0&auth_signature=x&a=b+c")
            .expect("parses");
    assert_eq!(q.get("a"), Some("b c"));
}

#[test]
fn missing_and_malformed_auth_parameters() {
    for (query, missing) in [
        (
            "auth_timestamp=1&auth_version=1.0&auth_signature=x",
            "auth_key",
        ),
        (
            "auth_key=k&auth_version=1.0&auth_signature=x",
            "auth_timestamp",
        ),
        (
            "auth_key=k&auth_timestamp=1&auth_signature=x",
            "auth_version",
        ),
        (
            "auth_key=k&auth_timestamp=1&auth_version=1.0",
            "auth_signature",
        ),
    ] {
        assert_eq!(
            SignedQuery::parse(query),
            Err(SignatureError::Missing(missing))
        );
    }
    assert!(matches!(
        SignedQuery::parse("auth_key=k&auth_timestamp=soon&auth_version=1.0&auth_signature=x"),
        Err(SignatureError::BadTimestamp(_))
    ));
    let q = SignedQuery::parse("auth_key=k&auth_timestamp=1&auth_version=2.0&auth_signature=x")
        .expect("parses");
    assert!(matches!(
        q.verify("GET", "/", b"", "s", 1, 600),
        Err(SignatureError::UnsupportedVersion(_))
    ));
}

#[test]
fn node_signed_query_vectors() {
    // The node library's createSignedQueryString vectors (key f00d, secret tofu).
    let q = signed_query_string(
        "GET",
        "/event",
        "f00d",
        "tofu",
        1234567890,
        Some(b"example body"),
        &[],
    );
    assert!(
        q.contains("body_md5=165d5e6d7ca8f73b3853ce45addf42fc"),
        "{q}"
    );
    assert!(
        q.ends_with(
            "auth_signature=a650196dc427ebe837226f8565ca9232198c6d1b9455eaa72374a9dc0b620e7b"
        ),
        "{q}"
    );
    let q = signed_query_string(
        "GET",
        "/event",
        "f00d",
        "tofu",
        1234567890,
        None,
        &[("foo", "bar"), ("baz", "123454321")],
    );
    assert!(
        q.ends_with(
            "auth_signature=d8bdbd31911fb7400a14fbd36fd7de053494725b64400ae5856deafe304b34a9"
        ),
        "{q}"
    );
    // And the docs example through the same function.
    let body = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
    let q = signed_query_string(
        "POST",
        "/apps/3/events",
        KEY,
        SECRET,
        1353088179,
        Some(body),
        &[],
    );
    assert!(
        q.ends_with("da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"),
        "{q}"
    );
}

#[test]
fn string_to_sign_lowercases_and_sorts() {
    let params = vec![
        ("B".to_owned(), "2".to_owned()),
        ("a".to_owned(), "1".to_owned()),
        ("auth_signature".to_owned(), "dropped".to_owned()),
    ];
    assert_eq!(string_to_sign("post", "/x", &params), "POST\n/x\na=1&b=2");
    assert_eq!(sign("s", "m").len(), 64);
}
