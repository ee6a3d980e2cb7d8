//! Channel kinds and the name rules for channels, events and socket ids.
//!
//! The kind of a channel is decided by its prefix alone, in the order pusher-js uses
//! (`private-encrypted-` before `private-`), so server and clients always agree.

/// Longest channel name accepted by default (the server libraries' limit).
pub const MAX_CHANNEL_NAME_LEN: usize = 200;
/// Longest event name.
pub const MAX_EVENT_NAME_LEN: usize = 200;
/// The prefix of the channel a signed-in user receives server-to-user events on.
pub const SERVER_TO_USER_PREFIX: &str = "#server-to-user-";

/// What a channel's prefix makes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    /// No prefix (or `cache-`): anyone may subscribe.
    Public,
    /// `private-` (or `private-cache-`): subscription needs a signature.
    Private,
    /// `private-encrypted-` (or `private-encrypted-cache-`): private, payloads end-to-end encrypted.
    PrivateEncrypted,
    /// `presence-` (or `presence-cache-`): private, with a member list.
    Presence,
    /// `#server-to-user-{id}`: only for a socket signed in as `{id}`.
    ServerToUser,
}

impl ChannelKind {
    /// The kind of the channel called `name`.
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

    /// Whether subscribing needs an `auth` signature.
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

    /// Whether clients may send `client-` events on it (encrypted channels excluded: the
    /// server could not keep their payloads opaque to it and pusher-js refuses them).
    pub fn allows_client_events(self) -> bool {
        matches!(self, ChannelKind::Private | ChannelKind::Presence)
    }
}

/// Whether `name` is a cache channel (the last event is kept for new subscribers).
pub fn is_cache_channel(name: &str) -> bool {
    [
        "cache-",
        "private-cache-",
        "private-encrypted-cache-",
        "presence-cache-",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

/// A name that breaks the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is empty.
    #[error("{what} must not be empty")]
    Empty {
        /// What kind of name ("Channel name", "Event name").
        what: &'static str,
    },
    /// The name is over the length limit.
    #[error("{what} too long: '{name}' (max {max})")]
    TooLong {
        /// What kind of name.
        what: &'static str,
        /// The name given.
        name: String,
        /// The limit.
        max: usize,
    },
    /// The name has characters outside `A-Z a-z 0-9 _ - = @ , . ;`.
    #[error("Invalid {what}: '{name}' (allowed: A-Z a-z 0-9 _ - = @ , . ;)")]
    InvalidChars {
        /// What kind of name.
        what: &'static str,
        /// The name given.
        name: String,
    },
}

fn is_channel_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '=' | '@' | ',' | '.' | ';')
}

/// Checks a channel name and returns its kind. `#server-to-user-{id}` accepts any
/// non-empty id, as the official libraries do; other `#` names are reserved.
pub fn validate_channel_name(name: &str, max_len: usize) -> Result<ChannelKind, NameError> {
    if name.is_empty() {
        return Err(NameError::Empty {
            what: "Channel name",
        });
    }
    if name.chars().count() > max_len {
        return Err(NameError::TooLong {
            what: "Channel name",
            name: name.to_owned(),
            max: max_len,
        });
    }
    if let Some(user) = name.strip_prefix(SERVER_TO_USER_PREFIX) {
        if !user.is_empty() {
            return Ok(ChannelKind::ServerToUser);
        }
    } else if name.chars().all(is_channel_char) {
        return Ok(ChannelKind::of(name));
    }
    Err(NameError::InvalidChars {
        what: "channel name",
        name: name.to_owned(),
    })
}

/// Checks an event name: non-empty and at most [`MAX_EVENT_NAME_LEN`] characters.
pub fn validate_event_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { what: "Event name" });
    }
    if name.chars().count() > MAX_EVENT_NAME_LEN {
        return Err(NameError::TooLong {
            what: "Event name",
            name: name.to_owned(),
            max: MAX_EVENT_NAME_LEN,
        });
    }
    Ok(())
}

/// Whether `s` is a socket id: `digits.digits`.
pub fn is_valid_socket_id(s: &str) -> bool {
    let Some((a, b)) = s.split_once('.') else {
        return false;
    };
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit());
    digits(a) && digits(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_prefix() {
        for (name, kind) in [
            ("x", ChannelKind::Public),
            ("cache-x", ChannelKind::Public),
            ("private-x", ChannelKind::Private),
            ("private-cache-x", ChannelKind::Private),
            ("private-encrypted-x", ChannelKind::PrivateEncrypted),
            ("private-encrypted-cache-x", ChannelKind::PrivateEncrypted),
            ("presence-x", ChannelKind::Presence),
            ("presence-cache-x", ChannelKind::Presence),
            ("#server-to-user-1", ChannelKind::ServerToUser),
        ] {
            assert_eq!(ChannelKind::of(name), kind, "{name}");
        }
        assert!(is_cache_channel("private-encrypted-cache-x"));
        assert!(!is_cache_channel("private-x"));
    }

    #[test]
    fn channel_name_rules() {
        assert!(validate_channel_name("a-Z_0=@,.;", 200).is_ok());
        assert!(validate_channel_name(&"a".repeat(200), 200).is_ok());
        assert!(matches!(
            validate_channel_name(&"a".repeat(201), 200),
            Err(NameError::TooLong { .. })
        ));
        assert!(matches!(
            validate_channel_name("", 200),
            Err(NameError::Empty { .. })
        ));
        for bad in ["a b", "a/b", "é", "#x", "#server-to-user-", "a*"] {
            assert!(
                matches!(
                    validate_channel_name(bad, 200),
                    Err(NameError::InvalidChars { .. })
                ),
                "{bad}"
            );
        }
        assert_eq!(
            validate_channel_name("#server-to-user-a b", 200),
            Ok(ChannelKind::ServerToUser)
        );
    }

    #[test]
    fn event_names_and_socket_ids() {
        assert!(validate_event_name(&"e".repeat(200)).is_ok());
        assert!(validate_event_name(&"e".repeat(201)).is_err());
        assert!(validate_event_name("").is_err());
        assert!(is_valid_socket_id("1234.5678"));
        for bad in ["", "1.", ".1", "1.2.3", "a.1", "1,2", "12"] {
            assert!(!is_valid_socket_id(bad), "{bad}");
        }
    }
}
