//! What the history tests ask of a node: app 1's signed history pages, and what a page
//! holds.

use serde_json::Value;

use super::{signed, Server};

/// `GET /apps/1/channels/{channel}/events` with `params`, signed: its status and body.
pub async fn history_page(server: &Server, channel: &str, params: &[(&str, &str)]) -> (u16, Value) {
    let path = format!("/apps/1/channels/{channel}/events");
    signed(server, "GET", &path, params, None).await
}

/// The serials of a page's events, in its order.
pub fn serials(page: &Value) -> Vec<u64> {
    events(page)
        .map(|e| e["serial"].as_u64().expect("serial"))
        .collect()
}

/// The `data` of a page's events, in its order.
pub fn datas(page: &Value) -> Vec<String> {
    events(page)
        .map(|e| e["data"].as_str().expect("data").to_owned())
        .collect()
}

fn events(page: &Value) -> impl Iterator<Item = &Value> {
    page["events"].as_array().expect("events").iter()
}
