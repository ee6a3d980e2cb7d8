//! Every reason Herald closes a WebSocket or reports an error, with its Pusher code.
//!
//! Codes drive what pusher-js does next (spec §1.4): 4000–4099 stop reconnecting,
//! 4100–4199 reconnect after a back-off, 4200–4299 reconnect at once, and 4300+ in a
//! `pusher:error` without a close is only a report. Keeping them in one table keeps the
//! server from inventing codes that make clients loop or give up by accident.

/// A Pusher error or close code with the message Herald sends with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// 4001: no app has the key in the URL.
    UnknownApp,
    /// 4003: the app exists but is disabled.
    AppDisabled,
    /// 4004: the app is at its connection limit.
    OverConnectionQuota,
    /// 4005: the WebSocket path is not `/app/{key}`.
    PathNotFound,
    /// 4006: the `version` query parameter is malformed.
    InvalidVersion,
    /// 4007: the `protocol` query parameter names a version Herald does not speak.
    UnsupportedProtocol,
    /// 4008: no `protocol` query parameter (only when the server requires one).
    NoProtocol,
    /// 4009: the connection is not authorized.
    Unauthorized,
    /// 4100: the client cannot keep up (its outbound queue overflowed) or the server is full.
    OverCapacity,
    /// 4100: the server has not loaded its apps yet (its app database has not answered
    /// since it started); reconnect after a back-off.
    NotReady,
    /// 4200: the server is going away; reconnect elsewhere at once.
    Reconnect,
    /// 4201: the client did not answer the server's ping.
    PongNotReceived,
    /// 4301: a client event was rejected (rate limit or disabled); never a close.
    ClientEventRejected,
}

impl CloseReason {
    /// The numeric code for `pusher:error` and the WebSocket close frame.
    pub fn code(self) -> u16 {
        match self {
            CloseReason::UnknownApp => 4001,
            CloseReason::AppDisabled => 4003,
            CloseReason::OverConnectionQuota => 4004,
            CloseReason::PathNotFound => 4005,
            CloseReason::InvalidVersion => 4006,
            CloseReason::UnsupportedProtocol => 4007,
            CloseReason::NoProtocol => 4008,
            CloseReason::Unauthorized => 4009,
            CloseReason::OverCapacity | CloseReason::NotReady => 4100,
            CloseReason::Reconnect => 4200,
            CloseReason::PongNotReceived => 4201,
            CloseReason::ClientEventRejected => 4301,
        }
    }

    /// The default human-readable message.
    pub fn message(self) -> &'static str {
        match self {
            CloseReason::UnknownApp => "App key does not exist",
            CloseReason::AppDisabled => "Application disabled",
            CloseReason::OverConnectionQuota => "Application is over connection quota",
            CloseReason::PathNotFound => "Path not found",
            CloseReason::InvalidVersion => "Invalid version string format",
            CloseReason::UnsupportedProtocol => "Unsupported protocol version",
            CloseReason::NoProtocol => "No protocol version supplied",
            CloseReason::Unauthorized => "Connection is unauthorized",
            CloseReason::OverCapacity => "Over capacity: the client is not reading fast enough",
            CloseReason::NotReady => {
                "Server not ready: its apps are not loaded yet, reconnect later"
            }
            CloseReason::Reconnect => "Server is shutting down, reconnect",
            CloseReason::PongNotReceived => "Pong reply not received in time",
            CloseReason::ClientEventRejected => "Client event rejected due to rate limit",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CloseReason::*;

    #[test]
    fn codes_fall_in_the_ranges_that_give_the_intended_client_action() {
        for r in [
            UnknownApp,
            AppDisabled,
            OverConnectionQuota,
            PathNotFound,
            InvalidVersion,
        ] {
            assert!(
                (4000..4100).contains(&r.code()),
                "{r:?} must stop reconnects"
            );
        }
        for r in [OverCapacity, NotReady] {
            assert!(
                (4100..4200).contains(&r.code()),
                "{r:?} must reconnect after a back-off"
            );
        }
        for r in [Reconnect, PongNotReceived] {
            assert!(
                (4200..4300).contains(&r.code()),
                "{r:?} must reconnect at once"
            );
        }
        assert_eq!(ClientEventRejected.code(), 4301);
    }
}
