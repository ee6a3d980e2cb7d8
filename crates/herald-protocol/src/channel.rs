//! Channel kinds and the name rules for channels, events and socket ids (spec §2.1, §2.2).
//!
//! The kind of a channel is decided by its prefix alone, tested in the order pusher-js uses
//! (`private-encrypted-` before `private-`), so the server and every client agree on it.
//! Cache channels are not a kind of their own: they behave as their base kind and are told
//! apart by [`is_cache_channel`].

/// Longest channel name accepted by default: the limit of the official server libraries
/// (Pusher's hosted service says 164; a stricter server passes that as `max_len`).
pub const MAX_CHANNEL_NAME_LEN: usize = 200;

/// Longest event name, as pusher-http-node enforces it.
pub const MAX_EVENT_NAME_LEN: usize = 200;

/// The prefix of the channel on which a signed-in user receives server-to-user events; the
/// rest of the name is the user id.
pub const SERVER_TO_USER_PREFIX: &str = "#server-to-user-";

/// What a channel's prefix makes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    /// No prefix (or `cache-`): anyone may subscribe.
    Public,
    /// `private-` (or `private-cache-`): subscribing needs a signature.
    Private,
    /// `private-encrypted-` (or `private-encrypted-cache-`): private, and payloads are
    /// end-to-end encrypted so the server only ever sees ciphertext.
    PrivateEncrypted,
    /// `presence-` (or `presence-cache-`): private, with a member list.
    Presence,
    /// `#server-to-user-{user_id}`: only for a socket signed in as `{user_id}`.
    ServerToUser,
}

impl ChannelKind {
    /// The kind of the channel called `name`, by prefix only (the name is not validated).
    pub fn of(name: &str) -> ChannelKind {
        if name.starts_with(SERVER_TO_USER_PREFIX) {
            ChannelKind::ServerToUser
        } else if name.starts_with("private-encrypted-") {
            ChannelKind::PrivateEncrypted
        } else if name.starts_with("private-") {
            ChannelKind::Private
        } else if name.starts_with("presence-") {
            ChannelKind::Presence
        } else {
            ChannelKind::Public
        }
    }

    /// Whether subscribing needs an `auth` signature. Server-to-user channels do not: they
    /// are guarded by the socket's sign-in instead.
    pub fn requires_auth(self) -> bool {
        matches!(
            self,
            ChannelKind::Private | ChannelKind::PrivateEncrypted | ChannelKind::Presence
        )
    }

    /// Whether the channel keeps a member list.
    pub fn is_presence(self) -> bool {
        self == ChannelKind::Presence
    }

    /// Whether clients may send `client-` events on it. Encrypted channels are excluded
    /// because pusher-js refuses to send them (the server could not keep such payloads
    /// opaque), and public channels because nobody proved who is sending.
    pub fn allows_client_events(self) -> bool {
        matches!(self, ChannelKind::Private | ChannelKind::Presence)
    }
}

/// The prefixes Pusher's "Cache channels" page lists; nothing else is a cache channel.
const CACHE_PREFIXES: [&str; 4] = [
    "cache-",
    "private-cache-",
    "private-encrypted-cache-",
    "presence-cache-",
];

/// Whether `name` is a cache channel (its last event is kept for new subscribers).
pub fn is_cache_channel(name: &str) -> bool {
    CACHE_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// A channel or event name that breaks the rules. `what` is `"channel"` or `"event"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is empty.
    #[error("Invalid {what} name: '' (must not be empty)")]
    Empty {
        /// What was being named: `"channel"` or `"event"`.
        what: &'static str,
    },
    /// The name is longer than the limit (counted in characters).
    #[error("{} name too long: '{name}' (max {max})", capitalized(what))]
    TooLong {
        /// What was being named: `"channel"` or `"event"`.
        what: &'static str,
        /// The name given.
        name: String,
        /// The limit that applied.
        max: usize,
    },
    /// The name has a character outside `A-Z a-z 0-9 _ - = @ , . ;`, or starts with `#`
    /// without being a server-to-user channel.
    #[error("Invalid {what} name: '{name}'")]
    InvalidChars {
        /// What was being named: `"channel"` or `"event"`.
        what: &'static str,
        /// The name given.
        name: String,
    },
}

fn capitalized(what: &str) -> String {
    let mut chars = what.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn is_channel_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '=' | '@' | ',' | '.' | ';')
}

/// Checks a channel name and returns its kind.
///
/// The name must be non-empty, at most `max_len` characters, and use only
/// `A-Z a-z 0-9 _ - = @ , . ;`. The one exception is `#server-to-user-{user_id}`, whose
/// user id may be any non-empty text, because the official libraries let any user id
/// through there; every other `#` name is reserved and refused.
pub fn validate_channel_name(name: &str, max_len: usize) -> Result<ChannelKind, NameError> {
    const WHAT: &str = "channel";
    if name.is_empty() {
        return Err(NameError::Empty { what: WHAT });
    }
    if name.chars().count() > max_len {
        return Err(NameError::TooLong {
            what: WHAT,
            name: name.to_owned(),
            max: max_len,
        });
    }
    let valid = match name.strip_prefix(SERVER_TO_USER_PREFIX) {
        Some(user_id) => !user_id.is_empty(),
        None => name.chars().all(is_channel_char),
    };
    if valid {
        Ok(ChannelKind::of(name))
    } else {
        Err(NameError::InvalidChars {
            what: WHAT,
            name: name.to_owned(),
        })
    }
}

/// Checks an event name: non-empty and at most [`MAX_EVENT_NAME_LEN`] characters. There is
/// no character rule: Pusher has none for event names.
pub fn validate_event_name(name: &str) -> Result<(), NameError> {
    const WHAT: &str = "event";
    if name.is_empty() {
        return Err(NameError::Empty { what: WHAT });
    }
    if name.chars().count() > MAX_EVENT_NAME_LEN {
        return Err(NameError::TooLong {
            what: WHAT,
            name: name.to_owned(),
            max: MAX_EVENT_NAME_LEN,
        });
    }
    Ok(())
}

/// Whether `s` is a socket id: ASCII digits, one `.`, ASCII digits (`^\d+\.\d+$`).
pub fn is_valid_socket_id(s: &str) -> bool {
    let Some((left, right)) = s.split_once('.') else {
        return false;
    };
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    digits(left) && digits(right)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_prefix() {
        for (name, kind, cache) in [
            ("x", ChannelKind::Public, false),
            ("cache-x", ChannelKind::Public, true),
            ("private-x", ChannelKind::Private, false),
            ("private-cache-x", ChannelKind::Private, true),
            ("private-encrypted-x", ChannelKind::PrivateEncrypted, false),
            (
                "private-encrypted-cache-x",
                ChannelKind::PrivateEncrypted,
                true,
            ),
            ("presence-x", ChannelKind::Presence, false),
            ("presence-cache-x", ChannelKind::Presence, true),
            ("#server-to-user-1", ChannelKind::ServerToUser, false),
            ("privatex", ChannelKind::Public, false),
        ] {
            assert_eq!(ChannelKind::of(name), kind, "{name}");
            assert_eq!(is_cache_channel(name), cache, "{name}");
        }
    }

    #[test]
    fn kind_properties() {
        use ChannelKind::*;
        for (kind, auth, presence, client_events) in [
            (Public, false, false, false),
            (Private, true, false, true),
            (PrivateEncrypted, true, false, false),
            (Presence, true, true, true),
            (ServerToUser, false, false, false),
        ] {
            assert_eq!(kind.requires_auth(), auth, "{kind:?}");
            assert_eq!(kind.is_presence(), presence, "{kind:?}");
            assert_eq!(kind.allows_client_events(), client_events, "{kind:?}");
        }
    }

    #[test]
    fn channel_name_rules() {
        assert_eq!(
            validate_channel_name("a-Z_0=@,.;", 200),
            Ok(ChannelKind::Public)
        );
        assert!(validate_channel_name(&"a".repeat(200), 200).is_ok());
        assert!(validate_channel_name(&"a".repeat(165), 164).is_err());
        for bad in ["a b", "a/b", "é", "#x", "#server-to-user-", "a*", "a:b"] {
            assert!(
                matches!(
                    validate_channel_name(bad, 200),
                    Err(NameError::InvalidChars { .. })
                ),
                "{bad}"
            );
        }
        assert_eq!(
            validate_channel_name("#server-to-user-a b:é", 200),
            Ok(ChannelKind::ServerToUser)
        );
    }

    #[test]
    fn error_messages_name_the_input() {
        fn message<T>(r: Result<T, NameError>) -> Option<String> {
            r.err().map(|e| e.to_string())
        }
        assert_eq!(
            message(validate_channel_name("a b", 200)).as_deref(),
            Some("Invalid channel name: 'a b'")
        );
        assert_eq!(
            message(validate_channel_name(&"a".repeat(201), 200)),
            Some(format!(
                "Channel name too long: '{}' (max 200)",
                "a".repeat(201)
            ))
        );
        assert_eq!(
            message(validate_channel_name("", 200)).as_deref(),
            Some("Invalid channel name: '' (must not be empty)")
        );
        assert_eq!(
            message(validate_event_name(&"e".repeat(201))),
            Some(format!(
                "Event name too long: '{}' (max 200)",
                "e".repeat(201)
            ))
        );
        assert_eq!(
            message(validate_event_name("")).as_deref(),
            Some("Invalid event name: '' (must not be empty)")
        );
    }

    #[test]
    fn event_names_and_socket_ids() {
        assert!(validate_event_name(&"é".repeat(200)).is_ok());
        assert!(validate_event_name("client-anything goes: #/?").is_ok());
        assert!(is_valid_socket_id("1234.5678"));
        for bad in [
            "", ".", "1.", ".1", "1.2.3", "a.1", "1,2", "12", " 1.2", "١.٢",
        ] {
            assert!(!is_valid_socket_id(bad), "{bad}");
        }
    }
}
