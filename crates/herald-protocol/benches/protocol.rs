//! Hot paths of the protocol crate: verifying an HTTP API signature, decoding a client
//! frame, and encoding an event frame.

use criterion::{criterion_group, criterion_main, Criterion};
use herald_protocol::frame::{decode_client_message, event};
use herald_protocol::signing::{signed_query_string, SignedQuery};
use std::hint::black_box;

fn signature(c: &mut Criterion) {
    let body = br#"{"name":"message","channel":"chat","data":"{\"text\":\"hello\"}"}"#;
    let query = signed_query_string(
        "POST",
        "/apps/1/events",
        "app-key",
        "app-secret",
        1_700_000_000,
        Some(body),
        &[],
    );
    c.bench_function("verify trigger signature", |b| {
        b.iter(|| {
            let q = SignedQuery::parse(black_box(&query)).ok();
            q.map(|q| {
                q.verify(
                    "POST",
                    "/apps/1/events",
                    black_box(body),
                    "app-secret",
                    1_700_000_000,
                    600,
                )
            })
        })
    });
}

fn frames(c: &mut Criterion) {
    let subscribe = r#"{"event":"pusher:subscribe","data":{"auth":"app-key:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4","channel":"private-foobar"}}"#;
    c.bench_function("decode pusher:subscribe", |b| {
        b.iter(|| decode_client_message(black_box(subscribe)).is_ok())
    });
    let data = format!("\"{}\"", "x".repeat(100));
    c.bench_function("encode 100-byte event frame", |b| {
        b.iter(|| {
            event(
                black_box("my-event"),
                black_box("my-channel"),
                black_box(&data),
                None,
            )
        })
    });
}

criterion_group!(benches, signature, frames);
criterion_main!(benches);
