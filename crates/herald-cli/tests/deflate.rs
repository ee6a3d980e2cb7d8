//! permessage-deflate (RFC 7692) against the real binary on raw sockets: the negotiated
//! response header, a compressed event frame bit by bit (inflated here by flate2 directly,
//! not by the server's code), frames under the threshold left plain, one compressed frame
//! shared by subscribers, offers declined, `compression = false`, and the client's own
//! compressed messages: accepted, a bomb (1009), a corrupt stream (1007), RSV1 without the
//! extension (1002).

mod support;

use flate2::{Decompress, FlushDecompress};
use serde_json::{json, Value};
use support::{masked, raw_request, signed, Frame, RawWs, Server, KEY};

const OFFER: &str = "permessage-deflate; client_max_window_bits";
const AGREED: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// Upgrades `/app/KEY` offering `offer` (no header when `None`); returns the response's
/// `Sec-WebSocket-Extensions` and the socket after `connection_established`.
async fn open(server: &Server, offer: Option<&str>) -> (Option<String>, RawWs) {
    let (agreed, ws, _) = open_first(server, offer).await;
    (agreed, ws)
}

/// [`open`], and the first header byte of `connection_established`.
async fn open_first(server: &Server, offer: Option<&str>) -> (Option<String>, RawWs, u8) {
    let extensions = offer.map_or(String::new(), |o| {
        format!("Sec-WebSocket-Extensions: {o}\r\n")
    });
    let request = format!(
        "GET /app/{KEY}?protocol=7 HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n{extensions}\r\n",
        server.addr
    );
    let (response, stream) = raw_request(&server.addr, &request).await;
    assert_eq!(response.status, 101, "{}", response.head);
    let agreed = response
        .header("sec-websocket-extensions")
        .map(str::to_owned);
    let mut ws = RawWs {
        stream,
        buf: response.body,
    };
    let first = ws.frame().await;
    assert_eq!(json_of(&first)["event"], "pusher:connection_established");
    (agreed, ws, first.b0)
}

/// Inflates a message as RFC 7692 §7.2.2 says, with a fresh inflater: the tail put back.
fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut input = payload.to_vec();
    input.extend_from_slice(&[0x00, 0x00, 0xff, 0xff]);
    let mut inflater = Decompress::new(false);
    let mut out = Vec::with_capacity(64 * 1024);
    inflater
        .decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .expect("a valid DEFLATE stream");
    assert_eq!(inflater.total_in() as usize, input.len(), "all input read");
    out
}

/// The JSON a text frame carries, inflating it if RSV1 is set.
fn json_of(frame: &Frame) -> Value {
    assert_eq!(frame.opcode(), 0x1, "{frame:?}");
    let bytes = if frame.b0 & 0x40 != 0 {
        inflate(&frame.payload)
    } else {
        frame.payload.clone()
    };
    serde_json::from_slice(&bytes).expect("JSON")
}

async fn subscribe(ws: &mut RawWs, channel: &str) {
    ws.send(&support::text(
        &json!({"event": "pusher:subscribe", "data": {"channel": channel}}).to_string(),
    ))
    .await;
    let frame = ws.frame().await;
    assert_eq!(
        json_of(&frame)["event"],
        "pusher_internal:subscription_succeeded"
    );
}

/// A JSON event body of about `size` bytes of data, as an app would publish it.
fn event_data(size: usize) -> String {
    let mut items = Vec::new();
    let mut i = 0;
    while items.iter().map(|s: &String| s.len() + 1).sum::<usize>() < size {
        items.push(format!(
            r#"{{"id":{i},"sku":"SKU-{}","qty":{},"status":"shipped"}}"#,
            i * 7919 % 10007,
            i % 5 + 1
        ));
        i += 1;
    }
    format!("[{}]", items.join(","))
}

async fn trigger(server: &Server, channel: &str, data: &str) {
    let body = json!({"name": "update", "channel": channel, "data": data}).to_string();
    let (status, reply) = signed(server, "POST", "/apps/1/events", &[], Some(&body)).await;
    assert_eq!(status, 200, "{reply}");
}

#[tokio::test]
async fn an_event_arrives_compressed_once_for_every_compressed_subscriber() {
    let server = Server::start("");
    let (agreed, mut a, established) = open_first(&server, Some(OFFER)).await;
    assert_eq!(agreed.as_deref(), Some(AGREED));
    assert_eq!(established, 0x81, "connection_established is small: plain");
    let (_, mut b) = open(&server, Some(OFFER)).await;
    let (none, mut plain) = open(&server, None).await;
    assert_eq!(none, None, "no offer, no extension");
    for ws in [&mut a, &mut b, &mut plain] {
        subscribe(ws, "prices").await;
    }
    let data = event_data(1000);
    trigger(&server, "prices", &data).await;

    let frame = a.frame().await;
    // FIN, RSV1 (compressed), no RSV2/RSV3, opcode 1 (text); unmasked; a 16-bit length
    // only if the compressed payload needs one.
    assert_eq!(frame.b0, 0b1100_0001, "{frame:?}");
    let wire = frame.wire();
    assert_eq!(wire[1] & 0x80, 0, "server frames are not masked");
    assert!(
        frame.payload.len() < data.len() / 2,
        "{} compressed bytes for {} of data",
        frame.payload.len(),
        data.len()
    );
    assert_ne!(
        frame.payload[frame.payload.len() - 4..],
        [0x00, 0x00, 0xff, 0xff],
        "the flush's tail is removed"
    );
    let event = json_of(&frame);
    assert_eq!(event["event"], "update");
    assert_eq!(event["channel"], "prices");
    assert_eq!(event["data"], data.as_str());
    // The second compressed subscriber gets the very same bytes; the plain one the plain
    // frame of the same event.
    assert_eq!(b.frame().await.wire(), wire);
    let plain_frame = plain.frame().await;
    assert_eq!(plain_frame.b0, 0x81);
    assert_eq!(json_of(&plain_frame), event);

    // Under the threshold (256 bytes by default), frames go out plain.
    trigger(&server, "prices", "small").await;
    let small = a.frame().await;
    assert_eq!(small.b0, 0x81, "{small:?}");
    assert_eq!(json_of(&small)["data"], "small");
}

#[tokio::test]
async fn a_clients_compressed_messages_are_read() {
    let server = Server::start("");
    let (_, mut ws) = open(&server, Some(OFFER)).await;
    let subscribe = json!({"event": "pusher:subscribe", "data": {"channel": "news"}});
    ws.send(&herald_protocol::websocket::encode_masked_compressed(
        subscribe.to_string().as_bytes(),
        [1, 2, 3, 4],
    ))
    .await;
    assert_eq!(
        json_of(&ws.frame().await)["event"],
        "pusher_internal:subscription_succeeded"
    );
    // Fragmented: RSV1 on the first frame only.
    let ping = json!({"event": "pusher:ping", "data": {}}).to_string();
    let mut compressed = Vec::new();
    herald_protocol::deflate::compress_into(ping.as_bytes(), &mut compressed);
    let (head, tail) = compressed.split_at(compressed.len() / 2);
    let mut first = masked(false, 0x1, head);
    first[0] |= 0x40;
    ws.send(&first).await;
    ws.send(&masked(true, 0x0, tail)).await;
    assert_eq!(json_of(&ws.frame().await)["event"], "pusher:pong");
}

#[tokio::test]
async fn a_decompression_bomb_closes_with_1009() {
    let server = Server::start("");
    let (_, mut ws) = open(&server, Some(OFFER)).await;
    // 4 MiB of JSON-ish spaces: a few KiB on the wire, 64 times the message limit inflated.
    let bomb = vec![b' '; 4 << 20];
    let frame = herald_protocol::websocket::encode_masked_compressed(&bomb, [9, 8, 7, 6]);
    assert!(frame.len() < 64 * 1024, "{} bytes on the wire", frame.len());
    ws.send(&frame).await;
    let error = ws.frame().await;
    assert_eq!(json_of(&error)["event"], "pusher:error");
    let close = ws.expect_close().await;
    assert_eq!(close.close_code(), Some(1009));
    ws.expect_eof().await;
    server.connect(KEY).await.assert_alive().await;
}

#[tokio::test]
async fn a_corrupt_stream_closes_with_1007_and_rsv1_without_the_extension_with_1002() {
    let server = Server::start("");
    let (_, mut ws) = open(&server, Some(OFFER)).await;
    let mut corrupt = masked(true, 0x1, &[0xff; 32]);
    corrupt[0] |= 0x40;
    ws.send(&corrupt).await;
    assert_eq!(ws.expect_close().await.close_code(), Some(1007));
    ws.expect_eof().await;

    let (agreed, mut ws) = open(&server, None).await;
    assert_eq!(agreed, None);
    ws.send(&herald_protocol::websocket::encode_masked_compressed(
        b"{\"event\":\"pusher:ping\",\"data\":{}}",
        [1, 1, 1, 1],
    ))
    .await;
    assert_eq!(ws.expect_close().await.close_code(), Some(1002));
    ws.expect_eof().await;
    server.connect(KEY).await.assert_alive().await;
}

#[tokio::test]
async fn offers_that_cannot_be_honoured_and_compression_off_leave_the_extension_out() {
    let server = Server::start("");
    for declined in [
        "permessage-deflate; server_max_window_bits=10",
        "permessage-deflate; unknown_parameter",
        "x-webkit-deflate-frame",
    ] {
        let (agreed, _ws) = open(&server, Some(declined)).await;
        assert_eq!(agreed, None, "{declined}");
    }
    let (agreed, _ws) = open(
        &server,
        Some("permessage-deflate; server_max_window_bits=10, permessage-deflate; server_max_window_bits=15"),
    )
    .await;
    assert_eq!(
        agreed.as_deref(),
        Some(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=15"
        )
    );

    let off = Server::start("compression = false");
    let (agreed, mut ws) = open(&off, Some(OFFER)).await;
    assert_eq!(agreed, None);
    subscribe(&mut ws, "prices").await;
    trigger(&off, "prices", &event_data(2000)).await;
    assert_eq!(ws.frame().await.b0, 0x81, "plain, as negotiated");
}

#[tokio::test]
async fn the_threshold_is_configurable() {
    let server = Server::start("compression_min_bytes = 0");
    let (_, mut ws, established) = open_first(&server, Some(OFFER)).await;
    assert_eq!(
        established, 0xC1,
        "connection_established shrinks: compressed"
    );
    subscribe(&mut ws, "prices").await;
    // About 150 bytes of frame: compressed once the threshold is 0, since it shrinks.
    trigger(&server, "prices", &"abc".repeat(30)).await;
    let frame = ws.frame().await;
    assert_eq!(frame.b0, 0xC1, "{frame:?}");
    assert_eq!(json_of(&frame)["data"], "abc".repeat(30));
}
