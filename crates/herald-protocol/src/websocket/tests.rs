use bytes::BytesMut;

use super::*;
use proptest::prelude::*;

use super::encode_masked as client_frame;

#[test]
fn invalid_utf8_fails_before_its_frame_is_complete() {
    // 0xff can never appear in UTF-8: fail with the first bytes, not the last.
    let mut payload = b"ok".to_vec();
    payload.push(0xff);
    payload.extend(vec![b'a'; 1000]);
    let frame = client_frame(true, OP_TEXT, &payload, MASK);
    let mut d = Decoder::new(4096);
    let mut buf = BytesMut::from(&frame[..20]);
    assert_eq!(d.decode(&mut buf), Err(CodecError::InvalidUtf8));

    // A valid code point split across reads, and across fragments, is fine.
    let text = "é€😀".repeat(50);
    let frame = client_frame(true, OP_TEXT, text.as_bytes(), MASK);
    let mut d = Decoder::new(4096);
    let mut buf = BytesMut::new();
    let mut got = None;
    for byte in &frame {
        buf.extend_from_slice(&[*byte]);
        if let Some(m) = d.decode(&mut buf).expect("valid") {
            got = Some(m);
        }
    }
    assert_eq!(got, Some(Message::Text(text)));
    let euro = "€".as_bytes();
    let mut bytes = client_frame(false, OP_TEXT, &euro[..1], MASK);
    let second = client_frame(true, OP_CONTINUATION, &euro[1..], MASK);
    bytes.extend_from_slice(&second[..second.len() - 1]);
    let mut d = Decoder::new(4096);
    let mut buf = BytesMut::from(&bytes[..]);
    assert_eq!(
        d.decode(&mut buf),
        Ok(None),
        "a split code point is not an error"
    );
    buf.extend_from_slice(&second[second.len() - 1..]);
    assert_eq!(d.decode(&mut buf), Ok(Some(Message::Text("€".into()))));

    // The carried half of a code point followed by an invalid byte fails at once.
    let mut bytes = client_frame(false, OP_TEXT, &euro[..1], MASK);
    let bad = client_frame(true, OP_CONTINUATION, &[b'x'; 200], MASK);
    bytes.extend_from_slice(&bad[..10]);
    let mut d = Decoder::new(4096);
    let mut buf = BytesMut::from(&bytes[..]);
    assert_eq!(d.decode(&mut buf), Err(CodecError::InvalidUtf8));
}

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn decode_all(bytes: &[u8], max: usize) -> Vec<Result<Message, CodecError>> {
    decode_all_with(bytes, max, false)
}

fn decode_all_with(bytes: &[u8], max: usize, deflate: bool) -> Vec<Result<Message, CodecError>> {
    let mut d = Decoder::new(max);
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    loop {
        match d.decode_with(&mut buf, deflate) {
            Ok(Some(m)) => out.push(Ok(m)),
            Ok(None) => return out,
            Err(e) => {
                out.push(Err(e));
                return out;
            }
        }
    }
}

#[test]
fn accept_key_matches_rfc_6455() {
    assert_eq!(
        accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[test]
fn decodes_text_fed_byte_by_byte() {
    let frame = client_frame(true, OP_TEXT, b"Hello", MASK);
    let mut d = Decoder::new(1024);
    let mut buf = BytesMut::new();
    for (i, b) in frame.iter().enumerate() {
        buf.extend_from_slice(&[*b]);
        let got = d.decode(&mut buf).expect("valid");
        if i + 1 < frame.len() {
            assert_eq!(got, None);
        } else {
            assert_eq!(got, Some(Message::Text("Hello".into())));
        }
    }
    assert!(buf.is_empty());
}

#[test]
fn decodes_fragments_with_an_interleaved_ping() {
    let mut bytes = client_frame(false, OP_TEXT, b"Hel", MASK);
    bytes.extend(client_frame(true, OP_PING, b"p", MASK));
    bytes.extend(client_frame(true, OP_CONTINUATION, b"lo", MASK));
    assert_eq!(
        decode_all(&bytes, 1024),
        [
            Ok(Message::Ping(b"p".to_vec())),
            Ok(Message::Text("Hello".into()))
        ]
    );
}

#[test]
fn decodes_16_and_64_bit_lengths_and_several_frames_per_buffer() {
    let a = "a".repeat(300);
    let b = "b".repeat(70_000);
    let mut bytes = client_frame(true, OP_TEXT, a.as_bytes(), MASK);
    bytes.extend(client_frame(true, OP_TEXT, b.as_bytes(), MASK));
    assert_eq!(
        decode_all(&bytes, 100_000),
        [Ok(Message::Text(a)), Ok(Message::Text(b))]
    );
}

#[test]
fn rejects_bad_frames() {
    let mut unmasked = client_frame(true, OP_TEXT, b"x", MASK);
    unmasked[1] &= 0x7F;
    let mut rsv = client_frame(true, OP_TEXT, b"x", MASK);
    rsv[0] |= 0x40;
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (unmasked, 1002),
        (rsv, 1002),
        (client_frame(true, 0x3, b"x", MASK), 1002),
        (client_frame(true, OP_PING, &[0; 126], MASK), 1002),
        (client_frame(false, OP_PING, b"", MASK), 1002),
        (client_frame(true, OP_CONTINUATION, b"x", MASK), 1002),
        (client_frame(true, OP_TEXT, &[0xff, 0xfe], MASK), 1007),
        (client_frame(true, OP_CLOSE, &[3], MASK), 1002),
    ];
    for (bytes, code) in cases {
        let out = decode_all(&bytes, 1024);
        match out.last() {
            Some(Err(e)) => assert_eq!(e.close_code(), code, "{bytes:?}"),
            other => panic!("expected an error for {bytes:?}, got {other:?}"),
        }
    }
    let mut two_starts = client_frame(false, OP_TEXT, b"a", MASK);
    two_starts.extend(client_frame(true, OP_TEXT, b"b", MASK));
    assert!(matches!(
        decode_all(&two_starts, 1024).last(),
        Some(Err(CodecError::Protocol(_)))
    ));
}

#[test]
fn oversized_length_fails_from_the_header_alone() {
    // A header claiming 2^40 bytes and no payload at all: no allocation, immediate error.
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 40).to_be_bytes());
    header.extend_from_slice(&MASK);
    assert_eq!(
        decode_all(&header, 1024),
        [Err(CodecError::TooBig { limit: 1024 })]
    );
    let mut fragmented = client_frame(false, OP_TEXT, &[b'a'; 600], MASK);
    fragmented.extend(client_frame(true, OP_CONTINUATION, &[b'a'; 600], MASK));
    assert_eq!(
        decode_all(&fragmented, 1024).last(),
        Some(&Err(CodecError::TooBig { limit: 1024 }))
    );
}

#[test]
fn close_frames() {
    assert_eq!(
        decode_all(&client_frame(true, OP_CLOSE, b"", MASK), 1024),
        [Ok(Message::Close(None))]
    );
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye");
    assert_eq!(
        decode_all(&client_frame(true, OP_CLOSE, &payload, MASK), 1024),
        [Ok(Message::Close(Some((1000, "bye".into()))))]
    );
    let close = encode_close(4200, &"é".repeat(100));
    assert!(close.len() <= 127);
    assert_eq!(close[0], 0x88);
}

fn close_with(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    client_frame(true, OP_CLOSE, &payload, MASK)
}

#[test]
fn close_codes_outside_the_sendable_ranges_are_protocol_errors() {
    let invalid = [
        0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ];
    let valid = [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000,
        4999,
    ];
    for code in invalid {
        assert_eq!(
            decode_all(&close_with(code, b""), 1024),
            [Err(CodecError::Protocol("invalid close code"))],
            "{code}"
        );
    }
    assert_eq!(
        CodecError::Protocol("invalid close code").close_code(),
        1002
    );
    for code in valid {
        assert_eq!(
            decode_all(&close_with(code, b"why"), 1024),
            [Ok(Message::Close(Some((code, "why".into()))))],
            "{code}"
        );
    }
    // Every code, not just the listed ones: the ranges are exact.
    for code in 0..=u16::MAX {
        let ok = decode_all(&close_with(code, b""), 1024)
            .first()
            .is_some_and(Result::is_ok);
        let expected = (1000..=1003).contains(&code)
            || (1007..=1014).contains(&code)
            || (3000..=4999).contains(&code);
        assert_eq!(ok, expected, "{code}");
    }
    // A valid code with a reason that is not UTF-8 is 1007.
    assert_eq!(
        decode_all(&close_with(1000, &[0xce, 0xba, 0xff]), 1024),
        [Err(CodecError::InvalidUtf8)]
    );
}

/// Decodes `frames` one at a time, as if each arrived in its own read, and returns what
/// the decoder said after each.
fn decode_each(frames: &[Vec<u8>]) -> Vec<Result<Option<Message>, CodecError>> {
    let mut d = Decoder::new(1024);
    let mut buf = BytesMut::new();
    frames
        .iter()
        .map(|frame| {
            buf.extend_from_slice(frame);
            d.decode(&mut buf)
        })
        .collect()
}

#[test]
fn invalid_utf8_fails_at_the_fragment_that_carries_it() {
    // "κόσμε" then an invalid byte, in a first fragment whose message never ends.
    let text = "κόσμε".as_bytes();
    let mut bad = text.to_vec();
    bad.push(0xff);
    assert_eq!(
        decode_each(&[client_frame(false, OP_TEXT, &bad, MASK)]),
        [Err(CodecError::InvalidUtf8)]
    );
    // Valid first fragment; the second one is bad; the third never comes.
    assert_eq!(
        decode_each(&[
            client_frame(false, OP_TEXT, text, MASK),
            client_frame(false, OP_CONTINUATION, &[0xed, 0xa0, 0x80], MASK),
        ]),
        [Ok(None), Err(CodecError::InvalidUtf8)]
    );
    // A code point cut across three fragments is valid.
    let emoji = "😀".as_bytes();
    assert_eq!(
        decode_each(&[
            client_frame(false, OP_TEXT, &emoji[..1], MASK),
            client_frame(false, OP_CONTINUATION, &emoji[1..3], MASK),
            client_frame(true, OP_CONTINUATION, &emoji[3..], MASK),
        ]),
        [Ok(None), Ok(None), Ok(Some(Message::Text("😀".into())))]
    );
    // A cut code point whose continuation turns out invalid fails when it arrives.
    assert_eq!(
        decode_each(&[
            client_frame(false, OP_TEXT, &emoji[..2], MASK),
            client_frame(false, OP_CONTINUATION, b"a", MASK),
        ]),
        [Ok(None), Err(CodecError::InvalidUtf8)]
    );
    // A message that ends inside a code point is invalid.
    assert_eq!(
        decode_each(&[
            client_frame(false, OP_TEXT, b"ok", MASK),
            client_frame(true, OP_CONTINUATION, &emoji[..3], MASK),
        ]),
        [Ok(None), Err(CodecError::InvalidUtf8)]
    );
    // Binary messages are not text: any bytes go.
    assert_eq!(
        decode_each(&[
            client_frame(false, OP_BINARY, &[0xff], MASK),
            client_frame(true, OP_CONTINUATION, &[0xfe], MASK),
        ]),
        [Ok(None), Ok(Some(Message::Binary(vec![0xff, 0xfe])))]
    );
}

#[test]
fn fragmentation_rules() {
    let cont = |fin, p: &[u8]| client_frame(fin, OP_CONTINUATION, p, MASK);
    // Empty fragments are fine, and so are control frames between fragments.
    assert_eq!(
        decode_each(&[
            client_frame(false, OP_TEXT, b"", MASK),
            client_frame(true, OP_PONG, b"", MASK),
            cont(false, b""),
            cont(true, b"x"),
        ]),
        [
            Ok(None),
            Ok(Some(Message::Pong(vec![]))),
            Ok(None),
            Ok(Some(Message::Text("x".into())))
        ]
    );
    let mut d = Decoder::new(1024);
    let mut buf = BytesMut::from(&client_frame(false, OP_TEXT, b"a", MASK)[..]);
    assert_eq!(d.decode(&mut buf), Ok(None));
    assert!(d.fragments_in_progress());
    buf.extend_from_slice(&cont(true, b"b"));
    assert_eq!(d.decode(&mut buf), Ok(Some(Message::Text("ab".into()))));
    assert!(!d.fragments_in_progress());
    // A new binary start inside a text message, and a continuation after the end.
    for frames in [
        vec![
            client_frame(false, OP_TEXT, b"a", MASK),
            client_frame(false, OP_BINARY, b"b", MASK),
        ],
        vec![client_frame(true, OP_TEXT, b"a", MASK), cont(true, b"b")],
    ] {
        let out = decode_each(&frames);
        assert!(
            matches!(out.last(), Some(Err(CodecError::Protocol(_)))),
            "{out:?}"
        );
    }
}

fn decode_deflate(bytes: &[u8], max: usize) -> Vec<Result<Message, CodecError>> {
    decode_all_with(bytes, max, true)
}

#[test]
fn compressed_messages_inflate_on_a_deflate_connection_only() {
    let text = r#"{"event":"pusher:subscribe","data":{"channel":"prices"}}"#.repeat(4);
    let frame = encode_masked_compressed(text.as_bytes(), MASK);
    assert_eq!(frame[0], 0xC1, "FIN, RSV1, text");
    assert!(frame.len() < text.len());
    assert_eq!(
        decode_deflate(&frame, 4096),
        [Ok(Message::Text(text.clone()))]
    );
    // Without the extension, RSV1 is a protocol error (1002).
    assert_eq!(
        decode_all(&frame, 4096),
        [Err(CodecError::Protocol(
            "reserved bits set without an extension"
        ))]
    );
    // Plain frames still work on a deflate connection, and RSV2/RSV3 never do.
    let plain = client_frame(true, OP_TEXT, b"plain", MASK);
    assert_eq!(
        decode_deflate(&plain, 4096),
        [Ok(Message::Text("plain".into()))]
    );
    let mut rsv2 = plain.clone();
    rsv2[0] |= 0x20;
    assert_eq!(
        decode_deflate(&rsv2, 4096)[0]
            .as_ref()
            .map_err(CodecError::close_code),
        Err(1002)
    );
}

#[test]
fn rsv1_only_on_the_first_frame_of_a_data_message() {
    let mut ping = client_frame(true, OP_PING, b"p", MASK);
    ping[0] |= RSV1;
    let mut bytes = client_frame(false, OP_TEXT, b"a", MASK);
    let mut cont = client_frame(true, OP_CONTINUATION, b"b", MASK);
    cont[0] |= RSV1;
    bytes.extend(cont);
    for bad in [ping, bytes] {
        let out = decode_deflate(&bad, 1024);
        assert!(
            matches!(out.last(), Some(Err(CodecError::Protocol(_)))),
            "{out:?}"
        );
    }
}

#[test]
fn a_fragmented_compressed_message_inflates_at_its_end() {
    let text = "κόσμε, ".repeat(100);
    let mut compressed = Vec::new();
    crate::deflate::compress_into(text.as_bytes(), &mut compressed);
    let (a, b) = compressed.split_at(compressed.len() / 2);
    let mut bytes = client_frame(false, OP_TEXT, a, MASK);
    bytes[0] |= RSV1;
    bytes.extend(client_frame(true, OP_PING, b"", MASK));
    bytes.extend(client_frame(true, OP_CONTINUATION, b, MASK));
    assert_eq!(
        decode_deflate(&bytes, 4096),
        [Ok(Message::Ping(vec![])), Ok(Message::Text(text))]
    );
}

#[test]
fn bombs_are_too_big_corrupt_data_is_1007() {
    // 1 MiB of spaces compresses to about a kilobyte: under the wire limit, far over
    // the message limit once inflated.
    let bomb = encode_masked_compressed(&vec![b' '; 1 << 20], MASK);
    assert!(bomb.len() < 4096, "{}", bomb.len());
    let out = decode_deflate(&bomb, 65536);
    assert_eq!(out, [Err(CodecError::TooBig { limit: 65536 })]);
    assert_eq!(CodecError::TooBig { limit: 1 }.close_code(), 1009);

    let mut corrupt = client_frame(true, OP_TEXT, &[0xff; 16], MASK);
    corrupt[0] |= RSV1;
    let out = decode_deflate(&corrupt, 4096);
    assert_eq!(out, [Err(CodecError::BadCompression)]);
    assert_eq!(CodecError::BadCompression.close_code(), 1007);

    // Text that inflates to bytes that are not UTF-8 is 1007 as well.
    let not_text = encode_masked_compressed(&[0xff, 0xfe, 0xfd], MASK);
    assert_eq!(
        decode_deflate(&not_text, 4096),
        [Err(CodecError::InvalidUtf8)]
    );
}

#[test]
fn server_frames_compress_to_rsv1_frames_that_inflate_back() {
    let json =
        r#"{"event":"tick","channel":"prices","data":"{\"bid\":1.25,\"ask\":1.5}"}"#.repeat(10);
    let plain = encode_text(json.as_bytes());
    assert_eq!(text_payload(&plain), Some(json.as_bytes()));
    let packed = compress_text_frame(&plain).expect("smaller");
    assert_eq!(packed[0], 0xC1);
    assert!(packed.len() < plain.len() / 2);
    let body = text_payload(&{
        let mut unset = packed.to_vec();
        unset[0] &= !RSV1;
        unset
    })
    .map(<[u8]>::to_vec)
    .expect("a text frame once RSV1 is cleared");
    let inflated = crate::deflate::inflate(&body, json.len()).expect("inflates");
    assert_eq!(inflated, json.as_bytes());
    // Too small to gain anything, and frames that are not text, stay as they are.
    assert_eq!(compress_text_frame(&encode_text(b"{}")), None);
    assert_eq!(compress_text_frame(&encode_pong(b"p")), None);
    assert_eq!(compress_text_frame(&packed), None);
    for len in [125, 126, 70_000] {
        let big = encode_text(&vec![b'a'; len]);
        assert_eq!(text_payload(&big).map(<[u8]>::len), Some(len));
    }
}

#[test]
fn handshake_keys_must_be_16_bytes_of_base64() {
    assert!(is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
    for bad in [
        &b""[..],
        b"x",
        b"dGhlIHNhbXBsZSBub25jZQ",
        b"dGhlIHNhbXBsZSBub25jZQ==AAAA",
        b"dGhlIHNhbXBsZSBub25j",
        b"dGhlIHNhbXBsZSBub25jZSE=",
        b"!!!!!!!!!!!!!!!!!!!!!!==",
    ] {
        assert!(!is_valid_key(bad), "{bad:?}");
    }
}

#[test]
fn encoded_sizes_at_length_boundaries() {
    for (len, header) in [(125, 2), (126, 4), (65535, 4), (65536, 10)] {
        let frame = encode_text(&vec![b'x'; len]);
        assert_eq!(frame.len(), len + header, "len {len}");
        let mut h = [0u8; 10];
        assert_eq!(text_header(len, &mut h), header);
        assert_eq!(&frame[..header], &h[..header]);
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_in_any_chunking_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        chunk in 1usize..40,
    ) {
        let mut d = Decoder::new(256);
        let mut buf = BytesMut::new();
        for piece in bytes.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Ok(Some(_)) = d.decode(&mut buf) {}
        }
    }

    #[test]
    fn masked_text_round_trips(text in ".{0,400}", mask in any::<[u8; 4]>(), chunk in 1usize..64) {
        let frame = client_frame(true, OP_TEXT, text.as_bytes(), mask);
        let mut d = Decoder::new(4096);
        let mut buf = BytesMut::new();
        let mut got = None;
        for piece in frame.chunks(chunk) {
            buf.extend_from_slice(piece);
            if let Some(m) = d.decode(&mut buf).expect("valid frame") {
                got = Some(m);
            }
        }
        prop_assert_eq!(got, Some(Message::Text(text)));
    }
}
