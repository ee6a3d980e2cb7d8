//! What the cluster tests ask of their nodes: triggers, signed queries polled until they
//! hold, presence members and frames.

use std::time::Duration;

use serde_json::{json, Value};

use super::{signed, Server, Ws};

pub fn member(id: &str) -> String {
    json!({"user_id": id, "user_info": {"name": id}}).to_string()
}

pub async fn trigger(server: &Server, channel: &str, data: &str, socket_id: Option<&str>) {
    let mut body = json!({"name": "ev", "channel": channel, "data": data});
    if let Some(s) = socket_id {
        body["socket_id"] = s.into();
    }
    let (status, reply) = signed(
        server,
        "POST",
        "/apps/1/events",
        &[],
        Some(&body.to_string()),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
}

pub async fn get(server: &Server, path: &str, params: &[(&str, &str)]) -> Value {
    let (status, body) = signed(server, "GET", path, params, None).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// Polls until `check` holds for the JSON at `path` on `server`.
pub async fn eventually(
    server: &Server,
    path: &str,
    params: &[(&str, &str)],
    check: impl Fn(&Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        last = get(server, path, params).await;
        if check(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} never reached the expected state; last: {last}");
}

pub async fn next_event(ws: &mut Ws, event: &str) -> Value {
    loop {
        let frame = ws.next().await;
        if frame["event"] == event {
            return frame;
        }
    }
}

pub fn presence_ids(succeeded: &Value) -> Vec<String> {
    let data: Value =
        serde_json::from_str(succeeded["data"].as_str().expect("data")).expect("json");
    let mut ids: Vec<String> = data["presence"]["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_owned())
        .collect();
    ids.sort();
    ids
}
