//! The server's frames as they go on the wire: JSON text from `herald_protocol::frame`
//! wrapped once into a complete WebSocket frame, shared as [`Bytes`] by every outbox it is
//! pushed to.
//!
//! A leaf: the hub, the user registry, the apps, the adapter and the connection task all
//! build frames here, so none of them depends on another to do it.

use bytes::Bytes;
use herald_protocol::websocket;

/// A complete WebSocket text frame holding `json`, ready to share among subscribers.
pub(crate) fn text_frame(json: &str) -> Bytes {
    websocket::encode_text(json.as_bytes())
}

/// `pusher_internal:member_added` for a presence channel's new user.
pub(crate) fn member_added(channel: &str, user_id: &str, user_info: Option<&str>) -> Bytes {
    text_frame(&herald_protocol::frame::member_added(
        channel, user_id, user_info,
    ))
}

/// `pusher_internal:member_removed` for a presence channel's user whose last connection left.
pub(crate) fn member_removed(channel: &str, user_id: &str) -> Bytes {
    text_frame(&herald_protocol::frame::member_removed(channel, user_id))
}

/// What a test's connection was sent: the frames queued in `outbox` since it was last read,
/// as JSON (server frames are unmasked text frames, with a 2-byte header, or 4 past 125
/// bytes).
#[cfg(test)]
pub(crate) fn sent(outbox: &crate::outbox::Outbox) -> Vec<serde_json::Value> {
    let mut frames = std::collections::VecDeque::new();
    outbox.take(&mut frames);
    frames
        .iter()
        .map(|f| {
            let skip = if f[1] & 0x7f == 126 { 4 } else { 2 };
            serde_json::from_slice(&f[skip..]).expect("a JSON text frame")
        })
        .collect()
}
