//! Properties of the name rules and the HTTP API signature over arbitrary input: nothing
//! panics on what a client can send, every valid name is accepted, and whatever the client
//! side signs, the server side verifies.

use herald_protocol::channel::{
    is_valid_socket_id, validate_channel_name, validate_event_name, ChannelKind, NameError,
    MAX_CHANNEL_NAME_LEN,
};
use herald_protocol::signing::{signed_query_string, SignatureError, SignedQuery};
use proptest::prelude::*;

/// Parameter names the signing scheme owns; [`signed_query_string`] drops them from params.
const RESERVED: [&str; 5] = [
    "auth_key",
    "auth_timestamp",
    "auth_version",
    "body_md5",
    "auth_signature",
];

/// Text that leans on the characters that matter to a query string, plus anything at all.
fn tricky_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ &=+%#;?/,.a-zA-Z0-9\\[\\]]{0,20}",
        "[ &=+%é日本🎉\\x00\\n\"'<>]{0,12}",
        any::<String>(),
    ]
}

proptest! {
    #[test]
    fn channel_names_never_panic(name in any::<String>(), max_len in any::<usize>()) {
        let _ = validate_channel_name(&name, max_len);
        let _ = validate_channel_name(&name, MAX_CHANNEL_NAME_LEN);
        let _ = validate_event_name(&name);
        let _ = is_valid_socket_id(&name);
        let _ = ChannelKind::of(&name);
    }

    #[test]
    fn valid_charset_names_are_accepted(name in "[A-Za-z0-9_\\-=@,.;]{1,200}") {
        prop_assert_eq!(
            validate_channel_name(&name, MAX_CHANNEL_NAME_LEN),
            Ok(ChannelKind::of(&name))
        );
    }

    #[test]
    fn over_long_names_are_refused(name in "[A-Za-z0-9_\\-=@,.;]{201,300}") {
        let too_long = matches!(
            validate_channel_name(&name, MAX_CHANNEL_NAME_LEN),
            Err(NameError::TooLong { .. })
        );
        prop_assert!(too_long);
    }

    #[test]
    fn server_to_user_accepts_any_user_id(user_id in "\\PC{1,100}") {
        let name = format!("#server-to-user-{user_id}");
        prop_assert_eq!(
            validate_channel_name(&name, MAX_CHANNEL_NAME_LEN),
            Ok(ChannelKind::ServerToUser)
        );
    }

    #[test]
    fn socket_ids_of_digits_are_valid(a in 0u64.., b in 0u64..) {
        let id = format!("{a}.{b}");
        prop_assert!(is_valid_socket_id(&id));
    }

    #[test]
    fn parse_and_verify_never_panic(
        query in prop_oneof![
            any::<String>(),
            "(auth_[a-z]{3,9}=[0-9a-f%+.-]{0,12}&){0,6}[a-z_]{0,12}=?[ -~]{0,12}",
        ],
        method in any::<String>(),
        path in any::<String>(),
        body in proptest::collection::vec(any::<u8>(), 0..64),
        secret in any::<String>(),
        now in any::<i64>(),
        skew in any::<i64>(),
    ) {
        if let Ok(parsed) = SignedQuery::parse(&query) {
            let _ = parsed.get("info");
            let _ = parsed.verify(&method, &path, &body, &secret, now, skew);
        }
    }

    #[test]
    fn verify_never_panics_on_arbitrary_fields(
        auth_timestamp in any::<i64>(),
        auth_version in tricky_text(),
        body_md5 in proptest::option::of(tricky_text()),
        auth_signature in tricky_text(),
        now in any::<i64>(),
        skew in any::<i64>(),
    ) {
        let query = SignedQuery {
            auth_key: "k".into(),
            auth_timestamp,
            auth_version,
            body_md5,
            auth_signature,
            params: vec![],
        };
        let _ = query.verify("POST", "/apps/1/events", b"{}", "s", now, skew);
    }

    #[test]
    fn signed_queries_round_trip(
        method in "[A-Za-z]{1,7}",
        path in "/apps/[0-9]{1,4}(/[!-~&&[^?#]]{1,12}){0,3}",
        key in tricky_text(),
        secret in any::<String>(),
        timestamp in any::<i64>(),
        body in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
        params in proptest::collection::vec(("[a-z_\\[\\]]{1,10}", tricky_text()), 0..6),
    ) {
        let params: Vec<(String, String)> = params
            .into_iter()
            .filter(|(k, _)| !RESERVED.contains(&k.as_str()))
            .collect();
        let borrowed: Vec<(&str, &str)> =
            params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let query = signed_query_string(
            &method, &path, &key, &secret, timestamp, body.as_deref(), &borrowed,
        );
        let parsed = SignedQuery::parse(&query);
        prop_assert!(parsed.is_ok(), "{query}: {parsed:?}");
        let Ok(parsed) = parsed else { return Ok(()) };
        prop_assert_eq!(&parsed.auth_key, &key);
        prop_assert_eq!(parsed.auth_timestamp, timestamp);
        for (k, v) in &params {
            // The first value given for a key is the one `get` returns.
            let first = params.iter().find(|(k2, _)| k2 == k).map(|(_, v2)| v2.as_str());
            prop_assert_eq!(parsed.get(k), first, "param {} = {:?}", k, v);
        }
        let body = body.unwrap_or_default();
        prop_assert_eq!(
            parsed.verify(&method, &path, &body, &secret, timestamp, 600),
            Ok(())
        );
        // A different secret never verifies.
        let wrong = format!("{secret}x");
        let refused = matches!(
            parsed.verify(&method, &path, &body, &wrong, timestamp, 600),
            Err(SignatureError::InvalidSignature { .. })
        );
        prop_assert!(refused);
    }
}
