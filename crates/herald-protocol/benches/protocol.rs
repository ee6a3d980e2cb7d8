//! Hot paths of the protocol crate: verifying an HTTP API signature, decoding a client
//! frame, encoding an event frame, and compressing one (permessage-deflate) by size.

use criterion::{criterion_group, criterion_main, Criterion};
use herald_protocol::deflate::{compress_into, inflate};
use herald_protocol::frame::{decode_client_message, event};
use herald_protocol::signing::{signed_query_string, SignedQuery};
use herald_protocol::websocket::{compress_text_frame, encode_text};
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

/// An event frame whose JSON payload is about `size` bytes, varied as real events are
/// (ids, numbers, repeated keys), escaped inside `data` as the HTTP API sends it.
fn event_frame(size: usize) -> Vec<u8> {
    let mut data = String::new();
    let mut i = 0;
    while data.len() + 40 < size {
        data.push_str(&format!(
            r#"{{\"id\":{i},\"sku\":\"SKU-{}\",\"qty\":{}}},"#,
            i * 7919 % 10007,
            i % 5 + 1
        ));
        i += 1;
    }
    let json = format!(r#"{{"event":"update","channel":"orders","data":"[{data}]"}}"#);
    encode_text(json.as_bytes()).to_vec()
}

fn compression(c: &mut Criterion) {
    let mut group = c.benchmark_group("compress event frame");
    for size in [64usize, 128, 256, 512, 1024, 4096] {
        let frame = event_frame(size);
        // The sizes go to stderr beside the times: the threshold is a trade of both.
        let packed = compress_text_frame(&frame).map_or(frame.len(), |f| f.len());
        eprintln!(
            "{size:>5}-byte payload: frame {} -> {packed} bytes",
            frame.len()
        );
        group.bench_function(size.to_string(), |b| {
            b.iter(|| compress_text_frame(black_box(&frame)))
        });
    }
    group.finish();
    let frame = event_frame(1024);
    let mut packed = Vec::new();
    compress_into(&frame[4..], &mut packed);
    c.bench_function("inflate a 1 KB client message", |b| {
        b.iter(|| inflate(black_box(&packed), 65536).is_ok())
    });
}

criterion_group!(benches, signature, frames, compression);
criterion_main!(benches);
