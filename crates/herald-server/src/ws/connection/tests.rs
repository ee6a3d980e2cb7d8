use super::socket_io::{right_size, KEEP_READ_BUFFER, READ_BURST};
use bytes::Buf;

use super::*;
use crate::outbox::Outbox;

#[test]
fn a_partial_frame_left_by_a_big_burst_gets_a_buffer_of_its_own() {
    let burst = || {
        let mut buf = BytesMut::with_capacity(READ_BURST);
        buf.extend_from_slice(&vec![0u8; READ_BURST]);
        buf.advance(READ_BURST - 2);
        buf
    };
    // Left alone, the burst's allocation stays behind the two bytes left.
    assert!(burst().try_reclaim(READ_BURST / 2));
    let mut buf = burst();
    right_size(&mut buf, READ_BURST - 2);
    assert_eq!(&buf[..], [0, 0]);
    assert!(buf.capacity() < KEEP_READ_BUFFER);
    assert!(
        !buf.try_reclaim(KEEP_READ_BUFFER),
        "the big allocation is gone"
    );

    // A frame still growing keeps its buffer: copying it on every read would be quadratic.
    let mut growing = BytesMut::new();
    for _ in 0..64 {
        growing.extend_from_slice(&[1u8; 1000]);
        let at = growing.as_ptr();
        right_size(&mut growing, 0);
        assert_eq!(growing.as_ptr(), at);
    }
    let mut empty = BytesMut::with_capacity(100);
    right_size(&mut empty, 0);
    assert_eq!(empty.capacity(), 0, "an empty buffer is freed");
}

#[test]
fn closing_discards_until_the_clients_close() {
    let masked = |b0: u8, payload: &[u8]| {
        let mut f = vec![b0, 0x80 | payload.len() as u8, 0, 0, 0, 0];
        f.extend_from_slice(payload);
        f
    };
    let mut decoder = Decoder::new(1024);
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&masked(0x81, b"late data"));
    buf.extend_from_slice(&masked(0x89, b""));
    assert!(!discard_until_close(&mut decoder, &mut buf));
    assert!(buf.is_empty());
    buf.extend_from_slice(&masked(0x88, &[0x03, 0xe8]));
    assert!(discard_until_close(&mut decoder, &mut buf));
    // Garbage is dropped, not kept.
    let mut buf = BytesMut::from(&[0xff_u8; 100][..]);
    assert!(!discard_until_close(&mut decoder, &mut buf));
    assert!(buf.is_empty());
}

/// The largest connection future whose task stays in 384 bytes. tokio allocates a task as
/// one block aligned to 128 bytes on x86-64: a 32-byte header, the scheduler's handle and
/// the task id (16), the future, and a 48-byte trailer; the `TaskTracker` the task is
/// spawned through adds its 8-byte token to the future. 280 + 104 = 384: one byte more and
/// every idle connection's task takes 512 bytes. That happened once unnoticed (a 296-byte
/// future, 1,066 B per idle connection measured against 888 B; BENCHMARKS.md, "Memory per
/// idle connection").
const TASK_FUTURE_BUDGET: usize = 280;

/// Prints what an idle connection's future and the pieces it holds cost, for the memory
/// work (run with `--nocapture`); asserts that the future and the pieces it holds stay
/// within their budgets, so that a field added to any of them fails here, not in a
/// benchmark months later.
#[tokio::test]
async fn the_connection_future_stays_small() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (stream, _) = listener.accept().await.expect("accept");
    let shared = Shared::for_tests(crate::Config::default());
    let app = shared.apps.by_key("app-key").expect("default app");
    let slot = app.try_connect(0).expect("slot");
    let permit = shared
        .limiter
        .admit(std::net::Ipv4Addr::LOCALHOST.into())
        .unwrap_or_else(|_| panic!("a permit"));
    let future = run(shared, slot, permit, stream, Bytes::new(), true);
    let size = std::mem::size_of_val(&future);
    println!(
        "connection future {size} B; Session {} B; Io {} B; Sleep {} B; Decoder {} B",
        std::mem::size_of::<Session>(),
        std::mem::size_of::<Io<tokio::net::TcpStream>>(),
        std::mem::size_of::<tokio::time::Sleep>(),
        std::mem::size_of::<Decoder>(),
    );
    println!(
        "over TLS: Io {} B, and rustls's session (boxed) {} B",
        std::mem::size_of::<Io<super::super::socket::TlsSocket>>(),
        std::mem::size_of::<rustls::ServerConnection>(),
    );
    println!(
        "Outbox {} B; ConnPermit {} B; ConnectionSlot {} B",
        std::mem::size_of::<Outbox>(),
        std::mem::size_of::<ConnPermit>(),
        std::mem::size_of::<ConnectionSlot>()
    );
    println!(
        "a recovering connection's tracker {} B (boxed, with the signed-in user's box)",
        std::mem::size_of::<super::super::recovery::Tracker>(),
    );
    assert!(
        size <= TASK_FUTURE_BUDGET,
        "the connection future grew to {size} B: its task takes {} B instead of 384",
        (size + 104).div_ceil(128) * 128
    );
    assert!(
        std::mem::size_of::<Session>() <= 72,
        "Session grew: it is most of the parked future"
    );
    // 144 B in a release build; a debug build (the one the test suite runs) lays it out in
    // 152 B. The future's own bound above is what decides the task's size class.
    assert!(
        std::mem::size_of::<Io<tokio::net::TcpStream>>() <= 152,
        "Io grew: it is most of the parked future"
    );
}
