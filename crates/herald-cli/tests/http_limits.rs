//! The HTTP side's bounds against the real binary: silent, slow and idle connections are
//! closed on time, bodies are refused before they are read, and the caps on open
//! connections hold in total, per address and behind a trusted proxy. Every test ends by
//! checking that pusher-js is still served.

mod support;

use std::time::{Duration, Instant};

use support::{assert_pusher_js_served, signed_post, status_of, until_closed, Server, KEY, SECRET};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const FAST: &str = "http_header_timeout = 1\nhttp_body_timeout = 1\nhttp_idle_timeout = 1\n";

async fn connect(server: &Server) -> TcpStream {
    TcpStream::connect(&server.addr).await.expect("connect")
}

async fn connect_from(server: &Server, source: [u8; 4]) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind((std::net::Ipv4Addr::from(source), 0).into())
        .expect("bind a loopback source address");
    let addr: std::net::SocketAddr = server.addr.parse().expect("addr");
    socket.connect(addr).await.expect("connect")
}

fn body_of(response: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(response);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|_| panic!("JSON body expected: {text:?}"))
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_header_timeout() {
    let server = Server::start(FAST);
    let mut silent = connect(&server).await;
    let (_, after) = until_closed(&mut silent, Duration::from_secs(4)).await;
    assert!(
        after >= Duration::from_millis(900),
        "closed too early: {after:?}"
    );
    assert_pusher_js_served(&server);
}

#[tokio::test]
async fn headers_that_never_end_are_cut_off() {
    let server = Server::start(FAST);
    let mut slow = connect(&server).await;
    slow.write_all(b"GET /app/app-key?protocol=7 HTTP/1.1\r\nHost: x\r\nX-a: ")
        .await
        .expect("write");
    // One byte every 200 ms: never idle, never finished.
    let trickle = async {
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if slow.write_all(b"a").await.is_err() {
                return;
            }
        }
    };
    let closed = tokio::time::timeout(Duration::from_secs(4), trickle).await;
    assert!(closed.is_ok(), "the trickle was never cut off");
    let (_, _) = until_closed(&mut slow, Duration::from_secs(2)).await;

    // The same on a kept-alive connection: the second request's headers trickle.
    let mut conn = connect(&server).await;
    conn.write_all(b"GET /up HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 512];
    let n = conn.read(&mut buf).await.expect("answer");
    assert_eq!(status_of(&buf[..n]), 200);
    conn.write_all(b"GET /up HTTP/1.1\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if conn.write_all(b"X-b: c\r\n").await.is_err() {
            break;
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "a trickled second request was never cut off"
    );
    assert_pusher_js_served(&server);
}

#[tokio::test]
async fn an_oversized_request_head_gets_431() {
    let server = Server::start("");
    let mut conn = connect(&server).await;
    let head = format!(
        "GET /app/app-key HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let _ = conn.write_all(head.as_bytes()).await;
    let (response, _) = until_closed(&mut conn, Duration::from_secs(3)).await;
    assert_eq!(status_of(&response), 431);
    assert_pusher_js_served(&server);
}

#[tokio::test]
async fn a_kept_alive_connection_is_closed_when_idle_and_served_while_busy() {
    let server = Server::start(FAST);
    let mut conn = connect(&server).await;
    // Requests closer together than the idle timeout keep the connection for longer than it.
    for _ in 0..4 {
        conn.write_all(b"GET /up HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 512];
        let n = conn.read(&mut buf).await.expect("answer");
        assert_eq!(status_of(&buf[..n]), 200);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (_, after) = until_closed(&mut conn, Duration::from_secs(3)).await;
    assert!(
        after >= Duration::from_millis(400),
        "closed too early: {after:?}"
    );
    assert_pusher_js_served(&server);
}

#[tokio::test]
async fn a_trickled_body_gets_408() {
    let server = Server::start(FAST);
    let body = br#"{"name":"e","channels":["c"],"data":"{}"}"#;
    let mut conn = connect(&server).await;
    conn.write_all(signed_post("/apps/1/events", body, SECRET).as_bytes())
        .await
        .expect("head");
    conn.write_all(&body[..5]).await.expect("part of the body");
    let (response, after) = until_closed(&mut conn, Duration::from_secs(4)).await;
    assert_eq!(
        status_of(&response),
        408,
        "{}",
        String::from_utf8_lossy(&response)
    );
    assert!(body_of(&response)["error"]
        .as_str()
        .is_some_and(|e| e.contains("body")));
    assert!(
        after >= Duration::from_millis(900),
        "answered too early: {after:?}"
    );
    assert_pusher_js_served(&server);
}

#[tokio::test]
async fn bodies_are_refused_before_they_are_read() {
    let server = Server::start("");
    let body = vec![b'x'; 100];
    // A bad signature over a 4 MB body is answered at once, with no byte of it sent.
    let head = signed_post("/apps/1/events", &body, "wrong-secret")
        .replace("Content-Length: 100", "Content-Length: 4000000");
    let mut conn = connect(&server).await;
    conn.write_all(head.as_bytes()).await.expect("head");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(2), conn.read(&mut buf))
        .await
        .expect("answered without the body")
        .expect("read");
    assert_eq!(
        status_of(&buf[..n]),
        401,
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );

    // An unknown app is 404, also without the body.
    let mut conn = connect(&server).await;
    conn.write_all(head.replace("/apps/1/", "/apps/9/").as_bytes())
        .await
        .expect("head");
    let n = tokio::time::timeout(Duration::from_secs(2), conn.read(&mut buf))
        .await
        .expect("answered without the body")
        .expect("read");
    assert_eq!(status_of(&buf[..n]), 404);

    // A signed request whose declared body is over the limit gets 413, not 400.
    let big = signed_post("/apps/1/events", &body, SECRET)
        .replace("Content-Length: 100", "Content-Length: 20000000");
    let mut conn = connect(&server).await;
    conn.write_all(big.as_bytes()).await.expect("head");
    let n = tokio::time::timeout(Duration::from_secs(2), conn.read(&mut buf))
        .await
        .expect("answered")
        .expect("read");
    assert_eq!(
        status_of(&buf[..n]),
        413,
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert!(body_of(&buf[..n])["error"]
        .as_str()
        .is_some_and(|e| e.contains("4194304")));

    // Sent in full, a 20 MB body through a real client is 413 as well.
    let huge = vec![b' '; 20 * 1024 * 1024];
    let query = herald_protocol::signing::signed_query_string(
        "POST",
        "/apps/1/events",
        KEY,
        SECRET,
        support::now(),
        Some(&huge),
        &[],
    );
    let response = reqwest::Client::new()
        .post(server.http(&format!("/apps/1/events?{query}")))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .expect("the answer, not a reset: the server drains the rest before it closes");
    assert_eq!(response.status().as_u16(), 413);
    assert_pusher_js_served(&server);
}

#[tokio::test]
async fn the_cap_on_open_connections_refuses_with_503_and_frees_on_close() {
    let server = Server::start("max_open_connections = 20\nhttp_header_timeout = 30\n");
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(connect(&server).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..50 {
        let mut refused = connect(&server).await;
        let (response, _) = until_closed(&mut refused, Duration::from_secs(2)).await;
        assert_eq!(status_of(&response), 503);
        assert_eq!(body_of(&response)["code"], 503);
    }
    held.truncate(10);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_pusher_js_served(&server);
}

#[tokio::test]
async fn the_per_address_cap_counts_each_address_and_logs_refusals_at_a_rate() {
    let server = Server::start_logged(
        "max_connections_per_ip = 5\nhttp_header_timeout = 30\n",
        &[("RUST_LOG", "warn")],
    );
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(connect_from(&server, [127, 0, 0, 9]).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..100 {
        let mut refused = connect_from(&server, [127, 0, 0, 9]).await;
        let (response, _) = until_closed(&mut refused, Duration::from_secs(2)).await;
        assert_eq!(status_of(&response), 429);
    }
    // Another address is not affected (pusher-js connects from 127.0.0.1).
    assert_pusher_js_served(&server);
    let lines = server
        .log()
        .lines()
        .filter(|l| l.contains("Refusing connections over a cap"))
        .count();
    assert!(
        (1..=2).contains(&lines),
        "{lines} log lines for 100 refusals"
    );
    drop(held);
}

#[tokio::test]
async fn behind_a_trusted_proxy_websockets_count_by_forwarded_address() {
    let server = Server::start("max_connections_per_ip = 1\ntrusted_proxies = [\"127.0.0.1\"]\n");
    let upgrade = |forwarded: &str| {
        format!(
            "GET /app/{KEY}?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             X-Forwarded-For: {forwarded}\r\n\r\n"
        )
    };
    let mut first = connect(&server).await;
    first
        .write_all(upgrade("9.9.9.9").as_bytes())
        .await
        .expect("write");
    let mut buf = [0u8; 1024];
    let n = first.read(&mut buf).await.expect("read");
    assert_eq!(status_of(&buf[..n]), 101);
    // The same client through the same proxy: refused; it spoofing a left-hand entry
    // changes nothing, since only the right-most untrusted address counts.
    let mut second = connect(&server).await;
    second
        .write_all(upgrade("1.2.3.4, 9.9.9.9").as_bytes())
        .await
        .expect("write");
    let (response, _) = until_closed(&mut second, Duration::from_secs(2)).await;
    assert_eq!(status_of(&response), 429);
    // Another client through the proxy is served.
    let mut third = connect(&server).await;
    third
        .write_all(upgrade("8.8.8.8").as_bytes())
        .await
        .expect("write");
    let n = third.read(&mut buf).await.expect("read");
    assert_eq!(status_of(&buf[..n]), 101);
    // The first client leaving frees its address.
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = connect(&server).await;
    again
        .write_all(upgrade("9.9.9.9").as_bytes())
        .await
        .expect("write");
    let n = again.read(&mut buf).await.expect("read");
    assert_eq!(status_of(&buf[..n]), 101);
    assert_pusher_js_served(&server);
}

#[tokio::test]
async fn huge_arrays_in_a_signed_body_stop_being_parsed_at_a_cap() {
    let server = Server::start("");
    // A batch of `n` copies of `item` must be refused with 400 and an error saying `what`.
    let refused = |n: usize, item: &'static str, what: &'static str| {
        let server = &server;
        async move {
            let items = vec![item; n].join(",");
            let body = format!("{{\"batch\":[{items}]}}");
            let (status, body) =
                support::signed(server, "POST", "/apps/1/batch_events", &[], Some(&body)).await;
            assert_eq!(status, 400);
            assert!(
                body["error"].as_str().is_some_and(|e| e.contains(what)),
                "{body}"
            );
        }
    };
    refused(20_000, "{}", "more than 10000 items").await;
    // Within the cap, the app's own limit answers with the exact count.
    refused(11, r#"{"name":"e","channel":"c","data":"1"}"#, "11 events").await;
    assert_pusher_js_served(&server);
}
