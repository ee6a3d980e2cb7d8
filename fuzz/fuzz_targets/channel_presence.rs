//! What a `pusher:subscribe` / `pusher:signin` carries besides the envelope: the channel
//! name, presence `channel_data`, sign-in `user_data`, and their `auth` signatures.
//!
//! Input layout: bytes 0-1 = the channel name length limit (LE), bytes 2-3 = which signature
//! byte to change and how; then NUL-separated fields, each (lossy) UTF-8: `channel \0
//! channel_data \0 user_data \0 key \0 secret \0 socket_id \0 auth`. Missing fields are
//! empty; an empty `channel_data` means none.
#![no_main]

use herald_protocol::auth::{channel_auth, user_auth, verify_channel_auth, verify_user_auth};
use herald_protocol::channel::{is_cache_channel, validate_channel_name, ChannelKind, NameError};
use herald_protocol::presence::parse_member;
use herald_protocol::user::parse_user_data;
use libfuzzer_sys::fuzz_target;

/// One JSON object, by the grammar only: `serde_json::Value` would refuse numbers such as
/// `1e999` that JSON allows (and JSON.parse reads as Infinity), and the server never
/// parses `user_info` into values: it echoes the text.
fn is_json_object(text: &str) -> bool {
    text.starts_with('{') && serde_json::from_str::<&serde_json::value::RawValue>(text).is_ok()
}

/// `auth` with one byte of its signature changed to another hex-distinct ASCII byte, or
/// `None` when the chosen change would only alter a hex digit's case (which still verifies).
fn tampered(auth: &str, flip: &[u8]) -> Option<String> {
    let sig_start = auth.rfind(':')? + 1;
    let sig_len = auth.len() - sig_start;
    if sig_len == 0 {
        return None;
    }
    let at = sig_start + usize::from(flip.first().copied().unwrap_or(0)) % sig_len;
    let old = auth.as_bytes()[at];
    let new = old ^ (1 + flip.get(1).copied().unwrap_or(0) % 127);
    if !old.is_ascii() || new.eq_ignore_ascii_case(&old) {
        return None;
    }
    let mut bytes = auth.as_bytes().to_vec();
    bytes[at] = new;
    String::from_utf8(bytes).ok()
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let max_len = usize::from(u16::from_le_bytes([data[0], data[1]]));
    let flip = &data[2..4];
    let mut fields = data[4..].split(|&b| b == 0);
    let mut next = || String::from_utf8_lossy(fields.next().unwrap_or_default()).into_owned();
    let channel = next();
    let channel_data = next();
    let user_data = next();
    let key = next();
    let secret = next();
    let socket_id = next();
    let auth = next();

    // Channel names: the kind returned must be the prefix rule's, and every accepted name
    // must satisfy the documented rules.
    let kind = ChannelKind::of(&channel);
    match validate_channel_name(&channel, max_len) {
        Ok(k) => {
            assert_eq!(k, kind);
            assert!(!channel.is_empty() && channel.chars().count() <= max_len);
            if kind != ChannelKind::ServerToUser {
                assert!(channel
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-=@,.;".contains(c)));
            }
        }
        Err(NameError::Empty { .. }) => assert!(channel.is_empty()),
        Err(NameError::TooLong { .. }) => assert!(channel.chars().count() > max_len),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    if is_cache_channel(&channel) {
        assert_ne!(kind, ChannelKind::ServerToUser);
    }
    if kind.is_presence() || kind.allows_client_events() {
        assert!(kind.requires_auth());
    }

    // Presence member: an accepted member has a non-empty id and user_info, when present, is
    // a JSON object (it is echoed verbatim inside member lists).
    if let Ok(m) = parse_member(&channel_data) {
        assert!(!m.user_id.is_empty());
        if let Some(info) = &m.user_info {
            assert!(is_json_object(info), "user_info {info:?}");
        }
    }
    if let Ok(u) = parse_user_data(&user_data) {
        assert!(!u.id.is_empty());
        if let Some(info) = &u.user_info {
            assert!(is_json_object(info), "user_info {info:?}");
        }
    }

    // Hostile auth values.
    let cd = (!channel_data.is_empty()).then_some(channel_data.as_str());
    let _ = verify_channel_auth(&key, &secret, &auth, &socket_id, &channel, cd);
    let _ = verify_user_auth(&key, &secret, &auth, &socket_id, &user_data);

    // Round trip: what the signer produces verifies, unless the key itself holds the `:`
    // that separates key from signature (no real key does; the config refuses none, though).
    let good = channel_auth(&key, &secret, &socket_id, &channel, cd);
    let good_user = user_auth(&key, &secret, &socket_id, &user_data);
    if !key.contains(':') {
        assert_eq!(
            verify_channel_auth(&key, &secret, &good, &socket_id, &channel, cd),
            Ok(())
        );
        assert_eq!(
            verify_user_auth(&key, &secret, &good_user, &socket_id, &user_data),
            Ok(())
        );
    }
    if let Some(bad) = tampered(&good, flip) {
        assert!(verify_channel_auth(&key, &secret, &bad, &socket_id, &channel, cd).is_err());
    }
    if let Some(bad) = tampered(&good_user, flip) {
        assert!(verify_user_auth(&key, &secret, &bad, &socket_id, &user_data).is_err());
    }
});
