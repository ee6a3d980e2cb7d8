//! The messages nodes send each other over the cluster's bus (pub/sub channels: one per
//! app channel for its events, one for the rest), and their binary encoding.
//!
//! A message carries an already-encoded WebSocket frame, so a receiving node pushes the same
//! bytes to each of its subscribers without parsing or re-serializing the event. Fields are
//! length-prefixed; decoding checks every length, so a foreign or truncated message is
//! dropped rather than trusted.
//!
//! Each message carries its sender's sequence number, which the sender's publisher writes
//! in ([`stamp`]) as it takes the message: a number that only grows over the process's
//! life (it starts at the start time in microseconds, so a restarted node's numbers are
//! higher still). A message the publisher had to send again (its first try may or may not
//! have gone out) has the same number, so a receiver that keeps the highest number it saw
//! from each sender on each stream ([`sequence`]) drops the copy. Messages without one
//! (kinds 1 to 3, from earlier versions) are still understood, without that check.
//!
//! An event of an app that keeps history carries its channel serial too, at a fixed place
//! ([`SERIAL_AT`]) so that the backend can write it in as it gives it (without parsing the
//! message): every node delivers the event with the same serial. Earlier versions drop such a message as
//! malformed (its kind is new).

use bytes::Bytes;

/// What one node asks the others to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusMessage {
    /// Deliver `frame` to the local subscribers of `channel`, except the socket `except`.
    Event {
        /// The app.
        app: String,
        /// The channel.
        channel: String,
        /// A socket id the publisher excluded (it lives on whichever node its prefix names).
        except: Option<String>,
        /// The encoded WebSocket frame.
        frame: Bytes,
        /// For cache channels: the event's `data` token and its lifetime in milliseconds, so
        /// every node can replay it to new subscribers.
        cache: Option<(String, u64)>,
        /// The event's serial in its channel's history, when the app keeps history.
        serial: Option<u64>,
    },
    /// Close the local connections signed in as `user` with `code`.
    Terminate {
        /// The app.
        app: String,
        /// The user.
        user: String,
        /// The close code.
        code: u16,
    },
    /// A presence channel's membership changed in the cluster's shared state at `version`
    /// (the user's first connection in the cluster, or its last gone): each node applies it
    /// to its view of the channel and tells its subscribers if it changes their list.
    Member {
        /// The app.
        app: String,
        /// The presence channel.
        channel: String,
        /// The user.
        user: String,
        /// Its `user_info` JSON text, for a join.
        info: Option<String>,
        /// Joined (true) or gone.
        present: bool,
        /// The channel's membership version the change made.
        version: u64,
    },
    /// Tell local watchers of `user` that it came online or went offline.
    Watch {
        /// The app.
        app: String,
        /// The user.
        user: String,
        /// Online (true) or offline.
        online: bool,
    },
    /// About the recovery entry of `identity` (the cluster backend's recoveries).
    Recovery {
        /// The app.
        app: String,
        /// The user or presence member the entry is for.
        identity: String,
        /// What happened to it.
        notice: RecoveryNotice,
    },
}

/// What a [`BusMessage::Recovery`] tells the other nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryNotice {
    /// An entry naming `channels` is kept for `keep_ms`: they are awaited.
    Kept {
        /// The channels the entry names.
        channels: Vec<String>,
        /// How long it is kept, in milliseconds.
        keep_ms: u64,
    },
    /// The entry was taken: its channels are no longer awaited for it.
    Taken,
    /// The identity has a new connection: close its silent ones (with `presence`, its
    /// member connections on that channel too).
    TakeOver {
        /// The presence channel the new connection joins as the identity, if it is one.
        presence: Option<String>,
    },
}

const EVENT: u8 = 1;
const TERMINATE: u8 = 2;
const WATCH: u8 = 3;
/// Added to a kind when the message carries a sequence number (every message this version
/// sends).
const SEQUENCED: u8 = 3;
/// A kind earlier versions do not know (they drop it as malformed): sent only sequenced, as
/// `MEMBER + SEQUENCED`, which no earlier kind's sequenced form uses.
const MEMBER: u8 = 7;
/// An event with its channel serial ([`SERIAL_AT`]), sent only sequenced.
const SERIAL_EVENT: u8 = 8;
/// About a recovery entry, sent only sequenced.
const RECOVERY: u8 = 9;
/// Where the sequence number sits: after the kind and the origin.
const SEQUENCE_AT: usize = 5;
/// Where an event's serial sits: right after the sequence number, before any field of
/// variable length, so a script can write it in without parsing the message.
pub const SERIAL_AT: usize = SEQUENCE_AT + 8;

/// Encodes `message` as sent by node `origin`, with sequence number 0 until [`stamp`]ed.
pub fn encode(origin: u32, message: &BusMessage) -> Vec<u8> {
    match message {
        BusMessage::Event {
            app,
            channel,
            except,
            frame,
            cache,
            serial,
        } => {
            let mut out = encode_event(
                origin,
                app,
                channel,
                except.as_deref(),
                frame,
                cache
                    .as_ref()
                    .map(|(data, ttl_ms)| (data.as_str(), *ttl_ms)),
                serial.is_some(),
            )
            .0;
            if let Some(serial) = serial {
                out[SERIAL_AT..SERIAL_AT + 8].copy_from_slice(&serial.to_be_bytes());
            }
            out
        }
        BusMessage::Terminate { app, user, code } => {
            let mut out = Vec::with_capacity(64);
            header(&mut out, TERMINATE, origin, app, user);
            out.extend_from_slice(&code.to_be_bytes());
            out
        }
        BusMessage::Watch { app, user, online } => {
            let mut out = Vec::with_capacity(64);
            header(&mut out, WATCH, origin, app, user);
            out.push(u8::from(*online));
            out
        }
        BusMessage::Member {
            app,
            channel,
            user,
            info,
            present,
            version,
        } => {
            let info_len = info.as_ref().map_or(0, String::len);
            let mut out = Vec::with_capacity(64 + channel.len() + user.len() + info_len);
            header(&mut out, MEMBER, origin, app, channel);
            put(&mut out, user.as_bytes());
            out.push(u8::from(info.is_some()));
            put(&mut out, info.as_deref().unwrap_or("").as_bytes());
            out.push(u8::from(*present));
            out.extend_from_slice(&version.to_be_bytes());
            out
        }
        BusMessage::Recovery {
            app,
            identity,
            notice,
        } => {
            let mut out = Vec::with_capacity(64);
            header(&mut out, RECOVERY, origin, app, identity);
            match notice {
                RecoveryNotice::Kept { channels, keep_ms } => {
                    out.push(0);
                    out.extend_from_slice(&keep_ms.to_be_bytes());
                    // Channel names hold no newline.
                    put(&mut out, channels.join("\n").as_bytes());
                }
                RecoveryNotice::Taken => out.push(1),
                RecoveryNotice::TakeOver { presence } => {
                    out.push(2);
                    // A channel name is never empty, so empty says "no channel".
                    put(&mut out, presence.as_deref().unwrap_or("").as_bytes());
                }
            }
            out
        }
    }
}

/// Encodes an [`BusMessage::Event`] straight from borrowed parts: publishing an event
/// builds no owned message first. With `serial`, the message has a place for the event's
/// serial at [`SERIAL_AT`] (0 until written). Returns the message and where the frame
/// sits in it.
pub fn encode_event(
    origin: u32,
    app: &str,
    channel: &str,
    except: Option<&str>,
    frame: &[u8],
    cache: Option<(&str, u64)>,
    serial: bool,
) -> (Vec<u8>, std::ops::Range<usize>) {
    let cache_len = cache.map_or(0, |(data, _)| data.len() + 12);
    let mut out = Vec::with_capacity(41 + app.len() + channel.len() + 16 + frame.len() + cache_len);
    if serial {
        out.push(SERIAL_EVENT + SEQUENCED);
        out.extend_from_slice(&origin.to_be_bytes());
        out.extend_from_slice(&0u64.to_be_bytes());
        out.extend_from_slice(&0u64.to_be_bytes());
        put(&mut out, app.as_bytes());
        put(&mut out, channel.as_bytes());
    } else {
        header(&mut out, EVENT, origin, app, channel);
    }
    put(&mut out, except.unwrap_or("").as_bytes());
    put(&mut out, frame);
    let at = out.len() - frame.len()..out.len();
    if let Some((data, ttl_ms)) = cache {
        put(&mut out, data.as_bytes());
        out.extend_from_slice(&ttl_ms.to_be_bytes());
    }
    (out, at)
}

/// Whether a message is an event with a serial: the node that sent it delivers it to its
/// own subscribers from the bus too, in the order the serials were given.
pub fn carries_serial(bytes: &[u8]) -> bool {
    bytes.first() == Some(&(SERIAL_EVENT + SEQUENCED))
}

/// The node a message comes from, read without decoding the rest: a node skips its own
/// messages, which come back to it on every channel it listens to.
pub fn origin(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(1..5)?.try_into().ok()?))
}

/// Writes the sender's sequence number into an encoded message; `false` if it has no place
/// for one (not a message [`encode`] made).
pub fn stamp(message: &mut [u8], number: u64) -> bool {
    if sequence(message).is_none() {
        return false;
    }
    message[SEQUENCE_AT..SEQUENCE_AT + 8].copy_from_slice(&number.to_be_bytes());
    true
}

/// The sender's sequence number of a message, read without decoding the rest; `None` for
/// a message of an earlier version, which has none.
pub fn sequence(bytes: &[u8]) -> Option<u64> {
    let (_, sequenced) = message_kind(*bytes.first()?)?;
    if !sequenced {
        return None;
    }
    let place = bytes.get(SEQUENCE_AT..SEQUENCE_AT + 8)?;
    Some(u64::from_be_bytes(place.try_into().ok()?))
}

/// A message's kind and whether it carries a sequence number.
fn message_kind(byte: u8) -> Option<(u8, bool)> {
    match byte {
        EVENT..=WATCH => Some((byte, false)),
        b if (EVENT + SEQUENCED..=WATCH + SEQUENCED).contains(&b)
            || b == MEMBER + SEQUENCED
            || b == SERIAL_EVENT + SEQUENCED
            || b == RECOVERY + SEQUENCED =>
        {
            Some((b - SEQUENCED, true))
        }
        _ => None,
    }
}

/// Decodes a message into its origin node and content; `None` for anything malformed.
pub fn decode(bytes: &[u8]) -> Option<(u32, BusMessage)> {
    let mut r = Reader(bytes);
    let (kind, sequenced) = message_kind(r.u8()?)?;
    let origin = u32::from_be_bytes(r.array()?);
    if sequenced {
        r.array::<8>()?;
    }
    let serial = if kind == SERIAL_EVENT {
        Some(u64::from_be_bytes(r.array()?))
    } else {
        None
    };
    let message = match kind {
        EVENT | SERIAL_EVENT => {
            let app = r.string()?;
            let channel = r.string()?;
            let except = Some(r.string()?).filter(|s| !s.is_empty());
            let frame = Bytes::copy_from_slice(r.field()?);
            let cache = if r.0.is_empty() {
                None
            } else {
                let data = r.string()?;
                Some((data, u64::from_be_bytes(r.array()?)))
            };
            BusMessage::Event {
                app,
                channel,
                except,
                frame,
                cache,
                serial,
            }
        }
        TERMINATE => BusMessage::Terminate {
            app: r.string()?,
            user: r.string()?,
            code: u16::from_be_bytes(r.array()?),
        },
        WATCH => BusMessage::Watch {
            app: r.string()?,
            user: r.string()?,
            online: r.u8()? != 0,
        },
        MEMBER => {
            let app = r.string()?;
            let channel = r.string()?;
            let user = r.string()?;
            let has_info = r.u8()? != 0;
            let info = r.string()?;
            BusMessage::Member {
                app,
                channel,
                user,
                info: has_info.then_some(info),
                present: r.u8()? != 0,
                version: u64::from_be_bytes(r.array()?),
            }
        }
        RECOVERY => {
            let app = r.string()?;
            let identity = r.string()?;
            let notice = match r.u8()? {
                0 => {
                    let keep_ms = u64::from_be_bytes(r.array()?);
                    let channels = r.string()?;
                    RecoveryNotice::Kept {
                        channels: channels.split('\n').map(str::to_owned).collect(),
                        keep_ms,
                    }
                }
                1 => RecoveryNotice::Taken,
                2 => {
                    let presence = r.string()?;
                    RecoveryNotice::TakeOver {
                        presence: (!presence.is_empty()).then_some(presence),
                    }
                }
                _ => return None,
            };
            BusMessage::Recovery {
                app,
                identity,
                notice,
            }
        }
        _ => return None,
    };
    r.0.is_empty().then_some((origin, message))
}

/// Every message starts with its kind, its origin node, its sequence number (0 until
/// [`stamp`]ed), the app and one name.
fn header(out: &mut Vec<u8>, kind: u8, origin: u32, app: &str, name: &str) {
    out.push(kind + SEQUENCED);
    out.extend_from_slice(&origin.to_be_bytes());
    out.extend_from_slice(&0u64.to_be_bytes());
    put(out, app.as_bytes());
    put(out, name.as_bytes());
}

fn put(out: &mut Vec<u8>, field: &[u8]) {
    // Fields are bounded far below 4 GiB by the server's own message and event limits.
    out.extend_from_slice(&(field.len() as u32).to_be_bytes());
    out.extend_from_slice(field);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn field(&mut self) -> Option<&'a [u8]> {
        let len = u32::from_be_bytes(self.array()?) as usize;
        self.take(len)
    }

    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.field()?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_round_trips() {
        let messages = [
            BusMessage::Event {
                app: "app".into(),
                channel: "presence-room".into(),
                except: Some("12.34".into()),
                frame: Bytes::from_static(b"\x81\x02hi"),
                cache: None,
                serial: None,
            },
            BusMessage::Event {
                app: "app".into(),
                channel: "room".into(),
                except: None,
                frame: Bytes::from_static(b"\x81\x02hi"),
                cache: None,
                serial: Some(1 << 40 | 3),
            },
            BusMessage::Event {
                app: "app".into(),
                channel: "cache-x".into(),
                except: None,
                frame: Bytes::from_static(b"frame"),
                cache: Some(("\"d\"".into(), 60_000)),
                serial: None,
            },
            BusMessage::Recovery {
                app: "app".into(),
                identity: "ana".into(),
                notice: RecoveryNotice::Kept {
                    channels: vec!["feed".into(), "private-a".into()],
                    keep_ms: 120_000,
                },
            },
            BusMessage::Recovery {
                app: "app".into(),
                identity: "ana".into(),
                notice: RecoveryNotice::Taken,
            },
            BusMessage::Recovery {
                app: "app".into(),
                identity: "ana".into(),
                notice: RecoveryNotice::TakeOver { presence: None },
            },
            BusMessage::Recovery {
                app: "app".into(),
                identity: "ana".into(),
                notice: RecoveryNotice::TakeOver {
                    presence: Some("presence-room".into()),
                },
            },
            BusMessage::Terminate {
                app: "a".into(),
                user: "u\n1".into(),
                code: 4009,
            },
            BusMessage::Watch {
                app: "a".into(),
                user: "bob".into(),
                online: true,
            },
            BusMessage::Member {
                app: "a".into(),
                channel: "presence-room".into(),
                user: "ann\n2".into(),
                info: Some("{\"n\":1}".into()),
                present: true,
                version: 1 << 33,
            },
            BusMessage::Member {
                app: "a".into(),
                channel: "presence-room".into(),
                user: "bob".into(),
                info: None,
                present: false,
                version: 7,
            },
        ];
        for m in messages {
            let mut bytes = encode(7, &m);
            assert_eq!(origin(&bytes), Some(7));
            assert_eq!(sequence(&bytes), Some(0));
            assert!(stamp(&mut bytes, 1 << 40 | 5));
            assert_eq!(sequence(&bytes), Some(1 << 40 | 5));
            assert_eq!(decode(&bytes), Some((7, m)));
        }
        assert_eq!(origin(&[1, 0, 0]), None);
    }

    #[test]
    fn an_events_serial_sits_where_a_script_can_write_it() {
        let frame = b"\x81\x05hello";
        let (mut bytes, at) = encode_event(3, "app", "room", None, frame, None, true);
        assert!(carries_serial(&bytes));
        assert_eq!(&bytes[at], frame);
        bytes[SERIAL_AT..SERIAL_AT + 8].copy_from_slice(&42u64.to_be_bytes());
        let Some((3, BusMessage::Event { serial, .. })) = decode(&bytes) else {
            panic!("an event");
        };
        assert_eq!(serial, Some(42));
        let (plain, _) = encode_event(3, "app", "room", None, frame, None, false);
        assert!(!carries_serial(&plain));
    }

    #[test]
    fn an_earlier_versions_messages_are_understood_without_a_sequence() {
        // Kind 3 (watch), origin 9, app "a", user "b", online: as earlier versions sent it.
        let old = [3, 0, 0, 0, 9, 0, 0, 0, 1, b'a', 0, 0, 0, 1, b'b', 1];
        let watch = BusMessage::Watch {
            app: "a".into(),
            user: "b".into(),
            online: true,
        };
        assert_eq!(decode(&old), Some((9, watch)));
        assert_eq!(sequence(&old), None);
        assert!(!stamp(&mut old.clone(), 1), "no place for a number");
    }

    #[test]
    fn malformed_messages_are_refused() {
        let good = encode(
            1,
            &BusMessage::Watch {
                app: "a".into(),
                user: "b".into(),
                online: false,
            },
        );
        for cut in 0..good.len() {
            assert_eq!(decode(&good[..cut]), None, "prefix of {cut} bytes");
        }
        let mut extra = good.clone();
        extra.push(0);
        assert_eq!(decode(&extra), None);
        assert_eq!(decode(&[9, 0, 0, 0, 1]), None);
        assert_eq!(decode(&[1, 0, 0, 0, 1, 255, 255, 255, 255]), None);
        assert_eq!(sequence(&[4, 0, 0, 0, 1, 0, 0]), None, "cut short");
    }
}
