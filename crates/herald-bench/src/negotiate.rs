//! permessage-deflate (RFC 7692) as the harness's clients negotiate it: what they offer,
//! what the server answered, and whether the connection can go on.

use std::sync::atomic::AtomicU64;

/// What the harness's clients do about permessage-deflate (`--deflate`, `--deflate-optional`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deflate {
    /// No offer: every frame comes uncompressed.
    Off,
    /// Offer it, and fail the connection if the server does not accept.
    Required,
    /// Offer it, and take either answer (the report says which).
    Optional,
}

/// Handshakes completed by the harness's clients, and how many of them negotiated
/// permessage-deflate: the report's `deflate`.
#[derive(Debug, Default)]
pub struct Tally {
    pub handshakes: AtomicU64,
    pub deflated: AtomicU64,
}

/// What every browser and Node's `ws` offer.
pub(crate) const OFFER: &str = "permessage-deflate; client_max_window_bits";

/// What a server answered to the offer, from its `Sec-WebSocket-Extensions` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// No permessage-deflate in the response.
    Declined,
    /// Accepted with `server_no_context_takeover`: each message inflates on its own.
    Independent,
    /// Accepted with the server keeping its compression context between messages.
    ContextTakeover,
}

/// The server's answer to the offer, from a 101 response head.
pub fn answer(head: &[u8]) -> Answer {
    let head = String::from_utf8_lossy(head);
    let mut answer = Answer::Declined;
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("sec-websocket-extensions") {
            continue;
        }
        for extension in value.split(',') {
            let mut params = extension.split(';').map(str::trim);
            if !params
                .next()
                .is_some_and(|n| n.eq_ignore_ascii_case("permessage-deflate"))
            {
                continue;
            }
            answer = if params.any(|p| p.eq_ignore_ascii_case("server_no_context_takeover")) {
                Answer::Independent
            } else {
                Answer::ContextTakeover
            };
        }
    }
    answer
}

/// Whether a connection made with `mode` that got `answer` compresses, or why it cannot go on.
pub fn accept(mode: Deflate, answer: Answer) -> std::io::Result<bool> {
    match answer {
        Answer::Declined if mode == Deflate::Required => Err(std::io::Error::other(
            "server did not negotiate permessage-deflate (--deflate-optional accepts that)",
        )),
        Answer::Declined => Ok(false),
        _ if mode == Deflate::Off => Err(std::io::Error::other(
            "server answered with permessage-deflate, which was not offered",
        )),
        // The harness inflates each message with a fresh inflater, as Herald compresses them
        // (one compressed frame shared by the subscribers); a server that keeps its context
        // would need an inflater per connection, kept for the connection's life.
        Answer::ContextTakeover => Err(std::io::Error::other(
            "server negotiated permessage-deflate with context takeover (no \
             server_no_context_takeover); the harness inflates each message on its own",
        )),
        Answer::Independent => Ok(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str =
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                        Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    fn head(extra: &str) -> Vec<u8> {
        format!("{HEAD}{extra}").into_bytes()
    }

    #[test]
    fn reads_the_servers_answer_to_the_offer() {
        assert_eq!(answer(&head("")), Answer::Declined);
        assert_eq!(
            answer(&head(
                "\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover"
            )),
            Answer::Independent
        );
        // Header names are case-insensitive, and so are the extension's tokens.
        assert_eq!(
            answer(&head(
                "\r\nsec-websocket-extensions:Permessage-Deflate;Server_No_Context_Takeover"
            )),
            Answer::Independent
        );
        // sockudo's dedicated mode: the server keeps its context.
        assert_eq!(
            answer(&head("\r\nSec-WebSocket-Extensions: permessage-deflate")),
            Answer::ContextTakeover
        );
        assert_eq!(
            answer(&head(
                "\r\nSec-WebSocket-Extensions: x-webkit-deflate-frame"
            )),
            Answer::Declined
        );
        // The status line is not a header, whatever it says.
        assert_eq!(
            answer(b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover"),
            Answer::Declined
        );
    }

    #[test]
    fn a_required_offer_that_is_declined_fails_the_connection() {
        let error = accept(Deflate::Required, Answer::Declined).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("server did not negotiate permessage-deflate"),
            "{error}"
        );
        assert!(!accept(Deflate::Optional, Answer::Declined).unwrap());
        assert!(!accept(Deflate::Off, Answer::Declined).unwrap());
        assert!(accept(Deflate::Required, Answer::Independent).unwrap());
        assert!(accept(Deflate::Optional, Answer::Independent).unwrap());
        assert!(accept(Deflate::Off, Answer::Independent).is_err());
        assert!(accept(Deflate::Optional, Answer::ContextTakeover).is_err());
        assert!(accept(Deflate::Required, Answer::ContextTakeover).is_err());
    }
}
