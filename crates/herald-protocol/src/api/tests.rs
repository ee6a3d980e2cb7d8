use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

use super::*;
use crate::signing::body_md5_hex;

/// Serialising then parsing gives the value back.
fn round_trips<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: &T) {
    let text = serde_json::to_string(value).expect("serialises");
    let back: T = serde_json::from_str(&text).expect("parses");
    assert_eq!(&back, value, "{text}");
}

/// A body the Node library sends parses, and written again is the same bytes (so the same
/// signed `body_md5`).
fn rewrites_identically<'a, T: Serialize + serde::Deserialize<'a>>(body: &'a str) -> T {
    let parsed: T = serde_json::from_str(body).expect("parses");
    assert_eq!(serde_json::to_string(&parsed).expect("serialises"), body);
    parsed
}

#[test]
fn the_node_librarys_trigger_body() {
    let body = r#"{"name":"my_event","data":"{\"some\":\"data \"}","channels":["one"]}"#;
    assert_eq!(
        body_md5_hex(body.as_bytes()),
        "e95168baf497b2e54b2c6cadd41a6a3f"
    );
    let parsed: TriggerBody<'_> = rewrites_identically(body);
    assert_eq!(parsed.name.as_deref(), Some("my_event"));
    assert_eq!(
        parsed.data.map(|d| d.get()),
        Some(r#""{\"some\":\"data \"}""#)
    );
    assert_eq!(parsed.channels, Some(vec![Cow::Borrowed("one")]));
    assert_eq!(
        (parsed.channel, parsed.socket_id, parsed.info),
        (None, None, None)
    );

    let body = r#"{"name":"e","data":"x","channels":["a","presence-b"],"socket_id":"123.456","info":"user_count,subscription_count"}"#;
    let parsed: TriggerBody<'_> = rewrites_identically(body);
    assert_eq!(parsed.socket_id.as_deref(), Some("123.456"));
    assert_eq!(
        parsed.info.as_deref(),
        Some("user_count,subscription_count")
    );
}

#[test]
fn the_node_librarys_batch_body() {
    let body = r#"{"batch":[{"channel":"integration","name":"event","data":"test"},{"channel":"integration2","name":"event2","data":"test2"}]}"#;
    assert_eq!(
        body_md5_hex(body.as_bytes()),
        "fd5ab5fd40237f27555c4d2564470fdd"
    );
    let parsed: BatchBody<'_> = rewrites_identically(body);
    let items = parsed.batch.expect("batch");
    assert_eq!(items.len(), 2);
    assert_eq!(items[1].channel.as_deref(), Some("integration2"));
    assert_eq!(items[1].name.as_deref(), Some("event2"));
    assert_eq!(items[1].data.map(|d| d.get()), Some(r#""test2""#));
    assert_eq!(items[0].channels, None);
}

#[test]
fn requests_round_trip() {
    let raw = serde_json::value::to_raw_value("hi \"there\"").expect("raw");
    let mut trigger = TriggerBody {
        name: Some("e".into()),
        data: Some(RawJson(&raw)),
        channels: Some(vec!["a".into(), "b".into()]),
        ..TriggerBody::default()
    };
    let text = serde_json::to_string(&trigger).expect("serialises");
    assert_eq!(
        serde_json::from_str::<TriggerBody<'_>>(&text).expect("parses"),
        trigger
    );
    trigger.channels = None;
    trigger.channel = Some("c".into());
    trigger.socket_id = Some("1.2".into());
    trigger.info = Some("subscription_count".into());
    let text = serde_json::to_string(&trigger).expect("serialises");
    assert_eq!(
        serde_json::from_str::<TriggerBody<'_>>(&text).expect("parses"),
        trigger
    );

    let batch = BatchBody {
        batch: Some(vec![BatchItem {
            channel: Some("c".into()),
            name: Some("e".into()),
            data: Some(RawJson(&raw)),
            info: Some("user_count".into()),
            ..BatchItem::default()
        }]),
    };
    let text = serde_json::to_string(&batch).expect("serialises");
    assert_eq!(
        serde_json::from_str::<BatchBody<'_>>(&text).expect("parses"),
        batch
    );
}

#[test]
fn strings_borrow_from_the_body_unless_escaped() {
    let body = r#"{"name":"plain","channels":["a","b\u0041"],"socket_id":"1.2","data":{"x":1}}"#;
    let parsed: TriggerBody<'_> = serde_json::from_str(body).expect("parses");
    assert!(matches!(parsed.name, Some(Cow::Borrowed("plain"))));
    assert!(matches!(parsed.socket_id, Some(Cow::Borrowed(_))));
    let channels = parsed.channels.expect("channels");
    assert!(matches!(channels[0], Cow::Borrowed("a")));
    assert!(matches!(&channels[1], Cow::Owned(s) if s == "bA"));
    // Any JSON value is kept as its text.
    assert_eq!(parsed.data.map(|d| d.get()), Some(r#"{"x":1}"#));
}

#[test]
fn bad_shapes_and_long_arrays_are_refused() {
    for body in [
        r#"{"name":5}"#,
        r#"{"channels":"a"}"#,
        r#"{"channels":[1]}"#,
        r#"{"socket_id":[]}"#,
    ] {
        assert!(
            serde_json::from_str::<TriggerBody<'_>>(body).is_err(),
            "{body}"
        );
    }
    let null: TriggerBody<'_> =
        serde_json::from_str(r#"{"name":null,"data":null}"#).expect("parses");
    assert_eq!((null.name, null.data), (None, None));
    let many = format!(r#"{{"channels":[{}"a"]}}"#, r#""a","#.repeat(MAX_ITEMS));
    let error = serde_json::from_str::<TriggerBody<'_>>(&many).expect_err("too many");
    assert!(
        error.to_string().contains("more than 10000 items"),
        "{error}"
    );
    let many = format!(r#"{{"batch":[{}{{}}]}}"#, "{},".repeat(MAX_ITEMS));
    assert!(serde_json::from_str::<BatchBody<'_>>(&many).is_err());
    let enough = format!(r#"{{"batch":[{}{{}}]}}"#, "{},".repeat(MAX_ITEMS - 1));
    let parsed: BatchBody<'_> = serde_json::from_str(&enough).expect("at the cap");
    assert_eq!(parsed.batch.map(|b| b.len()), Some(MAX_ITEMS));
}

fn attrs(user_count: Option<u64>, subscription_count: Option<u64>) -> ChannelAttributes {
    ChannelAttributes {
        user_count,
        subscription_count,
    }
}

#[test]
fn answers_round_trip() {
    let mut channels = BTreeMap::new();
    channels.insert("presence-p".to_owned(), attrs(Some(1), Some(2)));
    channels.insert("other".to_owned(), attrs(None, Some(0)));
    channels.insert("bare".to_owned(), attrs(None, None));
    round_trips(&TriggerAnswer {
        channels: channels.clone(),
    });
    round_trips(&TriggerAnswer::default());
    round_trips(&ChannelsAnswer { channels });
    round_trips(&ChannelsAnswer::default());
    round_trips(&BatchAnswer {
        batch: vec![attrs(None, None), attrs(Some(1), None)],
    });
    round_trips(&BatchAnswer::default());
    for cache in [
        None,
        Some(serde_json::Value::Null),
        Some(json!({"data": "x", "ttl": 30})),
    ] {
        round_trips(&ChannelAnswer {
            occupied: true,
            user_count: Some(3),
            subscription_count: None,
            cache,
        });
    }
    round_trips(&UsersAnswer {
        users: vec![UserEntry::new("1"), UserEntry::new("two")],
    });
    let error = ErrorBody::new("Unknown app id '9'", 404);
    let text = serde_json::to_string(&error).expect("serialises");
    assert_eq!(text, r#"{"error":"Unknown app id '9'","code":404}"#);
    assert_eq!(
        serde_json::from_str::<ErrorBody<'_>>(&text).expect("parses"),
        error
    );
}

#[test]
fn answers_have_the_wire_forms() {
    assert_eq!(to(&TriggerAnswer::default()), json!({}));
    assert_eq!(to(&BatchAnswer::default()), json!({}));
    assert_eq!(to(&ChannelsAnswer::default()), json!({"channels": {}}));
    assert_eq!(to(&ChannelAnswer::default()), json!({"occupied": false}));
    assert_eq!(
        to(&ChannelAnswer {
            cache: Some(serde_json::Value::Null),
            ..ChannelAnswer::default()
        }),
        json!({"occupied": false, "cache": null})
    );
    // What the Pusher docs show, read back.
    let a: ChannelsAnswer = serde_json::from_str(
        r#"{"channels":{"presence-foobar":{"user_count":42},"presence-another":{"user_count":123}}}"#,
    )
    .expect("parses");
    assert_eq!(a.channels["presence-another"], attrs(Some(123), None));
    let c: ChannelAnswer =
        serde_json::from_str(r#"{"occupied":true,"user_count":42,"subscription_count":42}"#)
            .expect("parses");
    assert_eq!((c.occupied, c.user_count, c.cache), (true, Some(42), None));
}

/// An answer as a JSON value, to compare wire forms.
fn to<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).expect("serialises")
}
