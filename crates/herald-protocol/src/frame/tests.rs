use std::borrow::Cow;

use super::*;
use serde_json::{json, Value};

fn parse(s: &str) -> Value {
    serde_json::from_str(s).expect("encoder output is JSON")
}

#[test]
fn decodes_pusher_js_subscribe_forms() {
    let m = decode_client_message(
        r#"{"event":"pusher:subscribe","data":{"auth":"","channel":"my-channel"}}"#,
    );
    assert_eq!(
        m,
        Ok(ClientMessage::Subscribe(Subscribe {
            channel: "my-channel".into(),
            auth: Some(String::new()),
            channel_data: None
        }))
    );
    let m = decode_client_message(
        r#"{"event":"pusher:subscribe","data":{"auth":"k:s","channel_data":"{\"user_id\":\"10\"}","channel":"presence-x"}}"#,
    );
    let Ok(ClientMessage::Subscribe(s)) = m else {
        panic!("expected subscribe, got {m:?}")
    };
    assert_eq!(s.channel_data.as_deref(), Some(r#"{"user_id":"10"}"#));
}

#[test]
fn client_frames_round_trip() {
    let frames = [
        ClientMessage::Subscribe(Subscribe::new("public", None, None)),
        ClientMessage::Subscribe(Subscribe::new("private-a", Some("k:sig".into()), None)),
        ClientMessage::Subscribe(Subscribe::new(
            "presence-\"x\"",
            Some("k:sig".into()),
            Some(r#"{"user_id":"1","user_info":{"name":"A \"B\""}}"#.into()),
        )),
        ClientMessage::Signin(Signin::new("k:sig", r#"{"id":"1"}"#)),
        ClientMessage::Unsubscribe {
            channel: "a".into(),
        },
    ];
    for message in frames {
        let text = match &message {
            ClientMessage::Subscribe(s) => s.to_frame(),
            ClientMessage::Signin(s) => s.to_frame(),
            ClientMessage::Unsubscribe { channel } => Unsubscribe::new(channel.as_str()).to_frame(),
            other => panic!("no encoder for {other:?}"),
        };
        assert_eq!(decode_client_message(&text), Ok(message), "{text}");
    }
    // The object form pusher-js writes.
    assert_eq!(
        parse(&Subscribe::new("a", Some(String::new()), None).to_frame()),
        json!({"event":"pusher:subscribe","data":{"channel":"a","auth":""}})
    );
    assert_eq!(decode_client_message(PING), Ok(ClientMessage::Ping));
    assert_eq!(decode_client_message(PONG), Ok(ClientMessage::Pong));
}

#[test]
fn decodes_string_encoded_data() {
    let m = decode_client_message(r#"{"event":"pusher:subscribe","data":"{\"channel\":\"a\"}"}"#);
    assert!(matches!(m, Ok(ClientMessage::Subscribe(s)) if s.channel == "a"));
}

#[test]
fn client_event_keeps_raw_data() {
    let text = r#"{"event":"client-typing","channel":"private-c","data":{"typing": true}}"#;
    match decode_client_message(text) {
        Ok(ClientMessage::ClientEvent {
            event,
            channel,
            data,
        }) => {
            assert_eq!(event, "client-typing");
            assert_eq!(channel, "private-c");
            assert_eq!(data, r#"{"typing": true}"#);
            // Borrowed from the frame's text: relaying a client event copies neither name.
            assert!(matches!(event, Cow::Borrowed(_)), "{event:?}");
            assert!(matches!(channel, Cow::Borrowed(_)), "{channel:?}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn rejects_bad_frames_with_messages() {
    for (text, needle) in [
        ("not json", "Invalid message"),
        ("[1,2]", "Invalid message"),
        (r#"{"event":5}"#, "Invalid message"),
        (r#"{"event":"pusher:subscribe"}"#, "requires 'data'"),
        (
            r#"{"event":"pusher:subscribe","data":{"channel":5}}"#,
            "Invalid message",
        ),
        (r#"{"event":"pusher:foo"}"#, "Unknown event"),
        (r#"{"event":"hello","channel":"x"}"#, "client-"),
        (r#"{"event":"client-x"}"#, "requires 'channel'"),
    ] {
        let err = decode_client_message(text).expect_err(text);
        assert!(err.to_string().contains(needle), "{text}: {err}");
    }
    let deep = "[".repeat(10_000);
    assert!(decode_client_message(&deep).is_err());
}

#[test]
fn encoders_produce_the_wire_forms() {
    let v = parse(&connection_established("1.2", 120));
    assert_eq!(v["event"], "pusher:connection_established");
    assert_eq!(
        parse(v["data"].as_str().expect("string data")),
        json!({"socket_id":"1.2","activity_timeout":120})
    );
    assert_eq!(
        parse(&error(Some(4001), "nope")),
        json!({"event":"pusher:error","data":{"code":4001,"message":"nope"}})
    );
    assert_eq!(parse(&error(None, "x"))["data"]["code"], Value::Null);
    let p = presence_data([("10", Some(r#"{"name":"A"}"#)), ("11", None)]);
    assert_eq!(
        parse(&p),
        json!({"presence":{"ids":["10","11"],"hash":{"10":{"name":"A"},"11":null},"count":2}})
    );
    let e = parse(&event("ev", "ch\"", r#""{\"a\":1}""#, Some("u")));
    assert_eq!(
        e,
        json!({"event":"ev","channel":"ch\"","data":"{\"a\":1}","user_id":"u"})
    );
    let m = parse(&member_added("presence-a", "7", None));
    assert_eq!(
        parse(m["data"].as_str().expect("str")),
        json!({"user_id":"7"})
    );
    assert_eq!(
        parse(&subscription_error("c", "AuthError", "bad", 401))["data"]["status"],
        401
    );
}

#[test]
fn signin_and_watchlist_frames() {
    let v = parse(&signin_success(r#"{"id":"1"}"#));
    assert_eq!(
        v,
        json!({"event":"pusher:signin_success","data":{"user_data":"{\"id\":\"1\"}"}})
    );
    let w = parse(&watchlist_events(["2"], ["3", "4"]));
    assert_eq!(w["event"], "pusher_internal:watchlist_events");
    assert_eq!(
        parse(w["data"].as_str().expect("string data")),
        json!({"events":[{"name":"online","user_ids":["2"]},{"name":"offline","user_ids":["3","4"]}]})
    );
    let empty = parse(&watchlist_events([], ["9"]));
    assert_eq!(
        parse(empty["data"].as_str().expect("string data")),
        json!({"events":[{"name":"offline","user_ids":["9"]}]})
    );
}

#[test]
fn cache_and_count_frames() {
    assert_eq!(
        parse(&cache_miss("cache-x")),
        json!({"event":"pusher:cache_miss","channel":"cache-x"})
    );
    let v = parse(&subscription_count("c", 3));
    assert_eq!(v["event"], "pusher_internal:subscription_count");
    assert_eq!(
        parse(v["data"].as_str().expect("string")),
        json!({"subscription_count":3})
    );
}

#[test]
fn json_str_escapes_controls() {
    assert_eq!(json_str("a\u{1}\"\\\n"), r#""a\u0001\"\\\n""#);
    let s = "héllo \u{1f600}";
    assert_eq!(
        serde_json::from_str::<String>(&json_str(s)).ok().as_deref(),
        Some(s)
    );
}

mod prop {
    use super::super::*;
    use proptest::prelude::*;

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            ".{0,12}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("event".to_owned()),
                        Just("channel".to_owned()),
                        Just("data".to_owned()),
                        Just("auth".to_owned()),
                        Just("channel_data".to_owned()),
                        ".{0,6}"
                    ],
                    inner,
                    0..5
                )
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_text_never_panics(text in ".{0,200}") {
            let _ = decode_client_message(&text);
        }

        #[test]
        fn decoding_arbitrary_json_never_panics(value in json_value(), event in prop_oneof![
            Just("pusher:subscribe"), Just("pusher:unsubscribe"), Just("pusher:signin"),
            Just("pusher:ping"), Just("client-x"), Just("other")
        ]) {
            let mut envelope = serde_json::Map::new();
            envelope.insert("event".into(), event.into());
            envelope.insert("data".into(), value.clone());
            envelope.insert("channel".into(), value);
            let text = serde_json::Value::Object(envelope).to_string();
            let _ = decode_client_message(&text);
        }

        #[test]
        fn subscribe_round_trips(channel in "[A-Za-z0-9_=@,.;-]{1,50}", auth in ".{0,40}") {
            let text = serde_json::json!({
                "event": "pusher:subscribe",
                "data": {"channel": channel, "auth": auth}
            }).to_string();
            let decoded = decode_client_message(&text);
            prop_assert_eq!(decoded, Ok(ClientMessage::Subscribe(Subscribe {
                channel: channel.clone(), auth: Some(auth.clone()), channel_data: None
            })));
        }

        #[test]
        fn event_encoding_is_valid_json(name in ".{0,30}", channel in ".{0,30}", data in ".{0,60}") {
            let token = json_str(&data);
            let out = event(&name, &channel, &token, Some(&name));
            let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
            prop_assert_eq!(v["event"].as_str(), Some(name.as_str()));
            prop_assert_eq!(v["channel"].as_str(), Some(channel.as_str()));
            prop_assert_eq!(v["data"].as_str(), Some(data.as_str()));
        }
    }
}
