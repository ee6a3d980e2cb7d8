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
