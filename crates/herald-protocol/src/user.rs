//! Signed-in user data: the `user_data` a `pusher:signin` carries (spec §3.5).
//!
//! The JSON text is kept as sent (it is what was signed and what `signin_success` echoes);
//! this module only extracts what the server acts on: the id, the `user_info` shared with
//! presence channels, and the watchlist.

use serde::Deserialize;
use serde_json::value::RawValue;

/// What the server needs from `user_data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserData {
    /// The user's id; never empty.
    pub id: String,
    /// The `user_info` JSON text, if any (an object; never `null`).
    pub user_info: Option<String>,
    /// User ids whose online status this user wants to follow.
    pub watchlist: Vec<String>,
}

/// Why `user_data` is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UserDataError {
    /// Not JSON, or not an object.
    #[error("Invalid user_data: {0}")]
    Malformed(String),
    /// `id` is absent, not a string, or empty.
    #[error("Invalid user_data: it must contain a non-empty string 'id'")]
    BadId,
    /// `user_info` is present but not an object.
    #[error("Invalid user_data: 'user_info' must be an object")]
    BadUserInfo,
    /// `watchlist` is present but not an array of strings.
    #[error("Invalid user_data: 'watchlist' must be an array of user id strings")]
    BadWatchlist,
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    user_info: Option<&'a RawValue>,
    #[serde(default, borrow)]
    watchlist: Option<&'a RawValue>,
}

/// Parses `user_data`.
pub fn parse_user_data(user_data: &str) -> Result<UserData, UserDataError> {
    let raw: Raw<'_> =
        serde_json::from_str(user_data).map_err(|e| UserDataError::Malformed(e.to_string()))?;
    let id: String = raw
        .id
        .and_then(|id| serde_json::from_str(id.get()).ok())
        .filter(|id: &String| !id.is_empty())
        .ok_or(UserDataError::BadId)?;
    let user_info = match raw.user_info.map(RawValue::get) {
        None | Some("null") => None,
        Some(info) if info.starts_with('{') => Some(info.to_owned()),
        Some(_) => return Err(UserDataError::BadUserInfo),
    };
    let watchlist = match raw.watchlist.map(RawValue::get) {
        None | Some("null") => Vec::new(),
        Some(list) => serde_json::from_str(list).map_err(|_| UserDataError::BadWatchlist)?,
    };
    Ok(UserData {
        id,
        user_info,
        watchlist,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spec_example() {
        let u =
            parse_user_data(r#"{"id":"12345","user_info":{"name":"Alice"},"watchlist":["2","3"]}"#);
        assert_eq!(
            u,
            Ok(UserData {
                id: "12345".into(),
                user_info: Some(r#"{"name":"Alice"}"#.into()),
                watchlist: vec!["2".into(), "3".into()],
            })
        );
        assert_eq!(
            parse_user_data(r#"{"id":"1"}"#).map(|u| u.watchlist.len()),
            Ok(0)
        );
    }

    #[test]
    fn refuses_bad_user_data() {
        for (text, err) in [
            (r#"{"id":""}"#, UserDataError::BadId),
            (r#"{"id":5}"#, UserDataError::BadId),
            (r#"{}"#, UserDataError::BadId),
            (r#"{"id":"1","user_info":[1]}"#, UserDataError::BadUserInfo),
            (r#"{"id":"1","watchlist":"2"}"#, UserDataError::BadWatchlist),
            (r#"{"id":"1","watchlist":[2]}"#, UserDataError::BadWatchlist),
        ] {
            assert_eq!(parse_user_data(text), Err(err), "{text}");
        }
        assert!(matches!(
            parse_user_data("nope"),
            Err(UserDataError::Malformed(_))
        ));
    }
}
