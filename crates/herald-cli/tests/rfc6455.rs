//! RFC 6455 conformance against the real binary, byte for byte, with hand-built masked
//! frames on raw sockets: close codes, the close handshake under backpressure and while the
//! client keeps sending, the opening handshake's checks, UTF-8 across fragments, and answers
//! that must survive a bad frame after them. Each test ends by checking that a normal client
//! is still served.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{
    close_frame, masked, pusher_ping, raw_request, read_to_eof_while_sending, signed, text,
    upgrade_request, Frame, RawWs, Server, KEY,
};

/// A server close frame with `code` and no reason, as the server sends it.
fn close_bytes(code: u16) -> Vec<u8> {
    let [hi, lo] = code.to_be_bytes();
    vec![0x88, 0x02, hi, lo]
}

async fn assert_served(server: &Server) {
    server.connect(KEY).await.assert_alive().await;
    support::assert_pusher_js_served(server);
}

#[tokio::test]
async fn a_close_with_an_invalid_code_fails_the_connection_with_1002() {
    let server = Server::start("");
    for code in [
        0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        let mut ws = RawWs::connect(&server).await;
        ws.send(&close_frame(code, b"")).await;
        assert_eq!(ws.frame().await.wire(), close_bytes(1002), "code {code}");
        ws.expect_eof().await;
    }
    assert_served(&server).await;
}

#[tokio::test]
async fn valid_close_codes_are_echoed_and_an_empty_close_gets_an_empty_close() {
    let server = Server::start("");
    for code in [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000,
        4999,
    ] {
        let mut ws = RawWs::connect(&server).await;
        ws.send(&close_frame(code, b"bye")).await;
        assert_eq!(ws.frame().await.wire(), close_bytes(code), "code {code}");
        ws.expect_eof().await;
    }
    let mut ws = RawWs::connect(&server).await;
    ws.send(&masked(true, 0x8, b"")).await;
    assert_eq!(ws.frame().await.wire(), [0x88, 0x00]);
    ws.expect_eof().await;
    assert_served(&server).await;
}

async fn publish(server: &Server, channel: &str, data: &str, times: usize) {
    let body = json!({"name":"e","channel":channel,"data":data}).to_string();
    for _ in 0..times {
        let (status, _) = signed(server, "POST", "/apps/1/events", &[], Some(&body)).await;
        assert_eq!(status, 200);
    }
}

async fn subscribe(ws: &mut RawWs, channel: &str) {
    ws.send(&text(
        &json!({"event":"pusher:subscribe","data":{"channel":channel}}).to_string(),
    ))
    .await;
    assert_eq!(
        ws.frame().await.json()["event"],
        "pusher_internal:subscription_succeeded"
    );
}

/// A receive buffer small enough that the kernel holds little for a client that stops
/// reading (the server's send buffer still grows to a few hundred KB), and big enough that
/// reading is fast once it starts.
const SMALL_RECEIVE_BUFFER: u32 = 16 * 1024;

const EVENT_BYTES: usize = 50_000;

/// How many events of [`EVENT_BYTES`] leave `queued` bytes in the server's own queue once the
/// kernel holds all it takes for a client that does not read: the server's send buffer grows
/// up to the `tcp_wmem` maximum (4 MB by default), and then 1 MB more.
fn events_past_the_kernel(queued: usize) -> usize {
    let wmem_max = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse::<usize>().ok())
        .unwrap_or(4 << 20);
    (wmem_max + queued + (1 << 20)) / EVENT_BYTES + 1
}

#[tokio::test]
async fn no_frame_follows_the_close_when_the_socket_is_backed_up() {
    // An outbox bound above the backlog: this is about ordering, not overflow.
    let server = Server::start(
        "outbox_max_bytes = 16777216
",
    );
    let mut ws = RawWs::open(
        &server,
        "/app/app-key?protocol=7",
        Some(SMALL_RECEIVE_BUFFER),
    )
    .await;
    assert_eq!(
        ws.frame().await.json()["event"],
        "pusher:connection_established"
    );
    subscribe(&mut ws, "backed-up").await;
    let data = "x".repeat(EVENT_BYTES);
    let backlog = events_past_the_kernel(0);
    publish(&server, "backed-up", &data, backlog).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A pusher:ping, whose answer goes out before the Close, then the client's Close, then
    // more events, which may not be written after the server's Close.
    ws.send(&pusher_ping()).await;
    ws.send(&close_frame(1000, b"")).await;
    // The server must have read the Close before these are published, or they are rightly
    // queued ahead of it; on a loaded machine that read can take a while.
    tokio::time::sleep(Duration::from_millis(300)).await;
    publish(&server, "backed-up", &data, 5).await;
    let mut frames = Vec::new();
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(5), ws.next_frame())
        .await
        .expect("frames within 5 s")
        .expect("no reset")
    {
        frames.push(frame);
    }
    let last = frames.last().expect("frames");
    assert_eq!(last.wire(), close_bytes(1000), "the Close comes last");
    let events = frames.iter().filter(|f| f.opcode() == 0x1).map(Frame::json);
    let names: Vec<_> = events.map(|e| e["event"].clone()).collect();
    assert_eq!(
        names.len(),
        backlog + 1,
        "every event queued before the Close, none after: {names:?}"
    );
    assert_eq!(
        names[backlog], "pusher:pong",
        "the answer to the ping, last before the Close"
    );
    assert_eq!(
        frames.iter().filter(|f| f.opcode() == 0x8).count(),
        1,
        "one Close"
    );
    assert_served(&server).await;
}

/// The server's close must arrive intact, followed by a clean EOF (no reset), while the
/// client is still sending: the server reads and drops what comes after its Close.
fn assert_clean_close(
    (frames, ended, sent): (Vec<Frame>, std::io::Result<()>, std::io::Result<()>),
    code: u16,
) {
    let last = frames.last().unwrap_or_else(|| panic!("no frames"));
    assert_eq!(last.close_code(), Some(code), "last frame {last:?}");
    let error = &frames[frames.len() - 2].json();
    assert_eq!(error["event"], "pusher:error", "{error}");
    assert_eq!(error["data"]["code"], code, "{error}");
    assert!(ended.is_ok(), "reading ended with {ended:?}, not EOF");
    assert!(sent.is_ok(), "sending after the close failed: {sent:?}");
}

#[tokio::test]
async fn a_refused_connection_gets_its_close_intact_while_the_client_keeps_sending() {
    let server = Server::start("");
    let ws = RawWs::open(&server, "/app/unknown-key?protocol=7", None).await;
    let outcome = read_to_eof_while_sending(ws, pusher_ping(), async {}).await;
    assert_eq!(outcome.0.len(), 2, "{:?}", outcome.0);
    assert_clean_close(outcome, 4001);
    assert_served(&server).await;
}

#[tokio::test]
async fn a_timed_out_connection_gets_its_close_intact_while_the_client_keeps_sending() {
    let server = Server::start(
        "[[apps]]\nid = \"1\"\nkey = \"app-key\"\nsecret = \"app-secret\"\nuser_authentication_timeout = 1\n",
    );
    let ws = RawWs::connect(&server).await;
    let outcome = read_to_eof_while_sending(ws, pusher_ping(), async {}).await;
    assert_clean_close(outcome, 4009);
    assert_served(&server).await;
}

#[tokio::test]
async fn a_slow_reader_gets_its_4100_close_intact_while_it_keeps_sending() {
    let server = Server::start("outbox_max_bytes = 262144\n");
    let mut ws = RawWs::open(
        &server,
        "/app/app-key?protocol=7",
        Some(SMALL_RECEIVE_BUFFER),
    )
    .await;
    ws.frame().await;
    subscribe(&mut ws, "firehose").await;
    // The client does not read while the events overflow its outbox; the server's Close is
    // then stuck behind kernel buffers it had filled, so a reset would destroy it.
    let data = "x".repeat(EVENT_BYTES);
    let outcome = read_to_eof_while_sending(ws, pusher_ping(), async {
        publish(&server, "firehose", &data, events_past_the_kernel(262_144)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    })
    .await;
    assert_clean_close(outcome, 4100);
    assert_served(&server).await;
}

#[tokio::test]
async fn shutdown_gets_its_4200_close_intact_while_the_client_keeps_sending() {
    let mut server = Server::start("");
    let ws = RawWs::connect(&server).await;
    let pid = server.pid().to_string();
    let outcome = read_to_eof_while_sending(ws, pusher_ping(), async {
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(killed.success());
    })
    .await;
    assert_clean_close(outcome, 4200);
    // The server is going away, so no client can be served: it must exit cleanly instead.
    let started = Instant::now();
    loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "still running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_opening_handshake_is_checked() {
    let server = Server::start("");
    let addr = server.addr.as_str();
    let good = upgrade_request(addr, "/app/app-key?protocol=7");

    for method in ["POST", "PUT", "DELETE"] {
        let (r, _) = raw_request(addr, &good.replacen("GET", method, 1)).await;
        assert_eq!(r.status, 405, "{method}: {}", r.head);
        assert_eq!(r.header("allow"), Some("GET"));
        assert_eq!(r.json()["code"], 405);
        assert!(r.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("GET")));
    }
    let (r, _) = raw_request(
        addr,
        &upgrade_request(addr, "/nowhere").replacen("GET", "POST", 1),
    )
    .await;
    assert_eq!(r.status, 405, "on any path");

    for key in [
        "abc",
        "MDEyMzQ1Njc4OWFiY2Rl",     // 15 bytes
        "MDEyMzQ1Njc4OWFiY2RlZmc=", // 17 bytes
        "MDEyMzQ1Njc4OWFiY2RlZg",   // 16 bytes, padding missing
        "!!!!!!!!!!!!!!!!!!!!!!==",
    ] {
        let request = good.replace("dGhlIHNhbXBsZSBub25jZQ==", key);
        let (r, _) = raw_request(addr, &request).await;
        assert_eq!(r.status, 400, "key {key}: {}", r.head);
        assert_eq!(r.json()["code"], 400);
    }
    let (r, _) = raw_request(
        addr,
        &good.replace("dGhlIHNhbXBsZSBub25jZQ==", "MDEyMzQ1Njc4OWFiY2RlZg=="),
    )
    .await;
    assert_eq!(r.status, 101, "any 16 bytes will do");

    let no_host = good.replace(&format!("Host: {addr}\r\n"), "");
    let (r, _) = raw_request(addr, &no_host).await;
    assert_eq!(r.status, 400, "{}", r.head);
    assert!(r.json()["error"]
        .as_str()
        .is_some_and(|e| e.contains("Host")));

    let (r, _) = raw_request(addr, &good.replace("Version: 13", "Version: 8")).await;
    assert_eq!(r.status, 426);
    assert_eq!(r.header("sec-websocket-version"), Some("13"));

    let (r, _) = raw_request(addr, &good).await;
    assert_eq!(r.status, 101);
    assert_eq!(
        r.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert_served(&server).await;
}

/// Reads one frame, which must come within 2 s: a server that waits for the rest of the
/// message before checking it would not answer at all.
async fn frame_soon(ws: &mut RawWs) -> Frame {
    match tokio::time::timeout(Duration::from_secs(2), ws.next_frame()).await {
        Ok(Ok(Some(frame))) => frame,
        other => panic!("expected a frame within 2 s, got {other:?}"),
    }
}

#[tokio::test]
async fn invalid_utf8_fails_with_1007_as_soon_as_its_bytes_arrive() {
    let server = Server::start("");
    // Invalid bytes in a first fragment; the message is never finished.
    let mut ws = RawWs::connect(&server).await;
    ws.send(&masked(false, 0x1, b"{\"event\":\"\xff")).await;
    assert_eq!(frame_soon(&mut ws).await.wire(), close_bytes(1007));
    ws.expect_eof().await;

    // Invalid bytes at the start of one big frame whose rest never comes: no need to wait
    // for the frame's end (§8.1).
    let mut ws = RawWs::connect(&server).await;
    let mut big = b"{\"event\":\"\xff".to_vec();
    big.resize(30_000, b'a');
    let frame = masked(true, 0x1, &big);
    ws.send(&frame[..100]).await;
    assert_eq!(frame_soon(&mut ws).await.wire(), close_bytes(1007));
    ws.expect_eof().await;

    // A code point cut by the fragment boundary, whose second half is not valid.
    let emoji = "😀".as_bytes();
    let mut ws = RawWs::connect(&server).await;
    let mut first = b"{\"event\":\"pusher:ping\",\"data\":{\"x\":\"".to_vec();
    first.extend_from_slice(&emoji[..2]);
    ws.send(&masked(false, 0x1, &first)).await;
    ws.send(&masked(false, 0x0, b"a")).await;
    assert_eq!(frame_soon(&mut ws).await.wire(), close_bytes(1007));
    ws.expect_eof().await;

    // The same cut with a valid second half is a valid message.
    let mut ws = RawWs::connect(&server).await;
    ws.send(&masked(false, 0x1, &first)).await;
    let mut rest = emoji[2..].to_vec();
    rest.extend_from_slice(b"\"}}");
    ws.send(&masked(true, 0x0, &rest)).await;
    assert_eq!(frame_soon(&mut ws).await.json()["event"], "pusher:pong");
    assert_served(&server).await;
}

#[tokio::test]
async fn answers_to_frames_before_a_bad_frame_are_written_before_the_close() {
    let server = Server::start("");
    let unmasked = vec![0x81, 0x01, b'x'];
    let mut reserved_bit = text("{}");
    reserved_bit[0] |= 0x40;

    // A ping and an unmasked frame in one write: the pong, then Close 1002.
    let mut ws = RawWs::connect(&server).await;
    let mut bytes = masked(true, 0x9, b"abc");
    bytes.extend_from_slice(&unmasked);
    ws.send(&bytes).await;
    assert_eq!(ws.frame().await.wire(), [0x8a, 0x03, b'a', b'b', b'c']);
    assert_eq!(ws.frame().await.wire(), close_bytes(1002));
    ws.expect_eof().await;

    // A pusher:ping and a frame with a reserved bit: the pusher:pong, then Close 1002.
    let mut ws = RawWs::connect(&server).await;
    let mut bytes = pusher_ping();
    bytes.extend_from_slice(&reserved_bit);
    ws.send(&bytes).await;
    assert_eq!(
        ws.frame().await.json(),
        json!({"event":"pusher:pong","data":{}})
    );
    assert_eq!(ws.frame().await.wire(), close_bytes(1002));
    ws.expect_eof().await;

    // A pusher:ping and the client's Close: the pusher:pong, then the echo.
    let mut ws = RawWs::connect(&server).await;
    let mut bytes = pusher_ping();
    bytes.extend_from_slice(&close_frame(1001, b""));
    ws.send(&bytes).await;
    assert_eq!(ws.frame().await.json()["event"], "pusher:pong");
    assert_eq!(ws.frame().await.wire(), close_bytes(1001));
    ws.expect_eof().await;
    assert_served(&server).await;
}
