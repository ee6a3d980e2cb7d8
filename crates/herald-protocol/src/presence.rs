//! Presence member data: the `channel_data` a presence subscription carries.
//!
//! User ids are normalised to strings (the Pusher docs' own example sends a number) and
//! `user_info` is kept as the JSON text the client sent, so the server can echo it in member
//! lists without re-serialising it.

use serde::Deserialize;
use serde_json::value::RawValue;

/// One presence member, as parsed from `channel_data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The user id, as a string.
    pub user_id: String,
    /// The `user_info` JSON text, if any (never `null`).
    pub user_info: Option<String>,
}

/// Why `channel_data` is not a valid presence member.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemberError {
    /// Not JSON, or not an object.
    #[error("Invalid channel_data: {0}")]
    Malformed(String),
    /// `user_id` is absent, empty, or neither a string nor a number.
    #[error("channel_data must contain a non-empty string or number 'user_id'")]
    BadUserId,
    /// `user_info` is present but not an object.
    #[error("user_info supplied to presence subscription is invalid - if supplied it must be a type of hash")]
    BadUserInfo,
}

#[derive(Deserialize)]
struct RawMember<'a> {
    #[serde(default, borrow)]
    user_id: Option<&'a RawValue>,
    #[serde(default)]
    user_info: Option<Box<RawValue>>,
}

/// Parses presence `channel_data` (or the equivalent fields of signed-in `user_data`).
pub fn parse_member(channel_data: &str) -> Result<Member, MemberError> {
    let raw: RawMember<'_> =
        serde_json::from_str(channel_data).map_err(|e| MemberError::Malformed(e.to_string()))?;
    let id = raw.user_id.ok_or(MemberError::BadUserId)?.get();
    let user_id = if id.starts_with('"') {
        serde_json::from_str::<String>(id).map_err(|_| MemberError::BadUserId)?
    } else if id.bytes().all(|b| b.is_ascii_digit() || b == b'-') && !id.is_empty() {
        id.to_owned()
    } else {
        return Err(MemberError::BadUserId);
    };
    if user_id.is_empty() {
        return Err(MemberError::BadUserId);
    }
    let user_info = match raw.user_info {
        Some(info) if info.get() == "null" => None,
        Some(info) if info.get().starts_with('{') => Some(info.get().to_owned()),
        Some(_) => return Err(MemberError::BadUserInfo),
        None => None,
    };
    Ok(Member { user_id, user_info })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_and_string_ids_become_strings() {
        let m = parse_member(r#"{"user_id":10,"user_info":{"name":"Mr. Pusher"}}"#);
        let m = m.expect("valid member");
        assert_eq!(m.user_id, "10");
        assert_eq!(m.user_info.as_deref(), Some(r#"{"name":"Mr. Pusher"}"#));
        assert_eq!(
            parse_member(r#"{"user_id":"a b"}"#)
                .map(|m| m.user_id)
                .as_deref(),
            Ok("a b")
        );
    }

    #[test]
    fn rejects_bad_members() {
        assert_eq!(
            parse_member(r#"{"user_id":""}"#),
            Err(MemberError::BadUserId)
        );
        assert_eq!(
            parse_member(r#"{"user_id":1.5}"#),
            Err(MemberError::BadUserId)
        );
        assert_eq!(
            parse_member(r#"{"user_id":true}"#),
            Err(MemberError::BadUserId)
        );
        assert_eq!(parse_member(r#"{}"#), Err(MemberError::BadUserId));
        assert_eq!(
            parse_member(r#"{"user_id":"1","user_info":"x"}"#),
            Err(MemberError::BadUserInfo)
        );
        assert!(matches!(
            parse_member("nope"),
            Err(MemberError::Malformed(_))
        ));
        assert_eq!(
            parse_member(r#"{"user_id":"1","user_info":null}"#).map(|m| m.user_info),
            Ok(None)
        );
    }
}
