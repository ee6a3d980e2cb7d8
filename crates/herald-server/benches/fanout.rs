//! Fan-out of one encoded event to many subscribers' outboxes: the per-delivery cost the
//! hub adds on top of the socket write.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use herald_protocol::presence::Member;
use herald_server::hub::{Hub, Roster};
use herald_server::outbox::Outbox;

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("hub publish");
    for subscribers in [1usize, 100, 1000] {
        let hub = Hub::new();
        let outboxes: Vec<Arc<Outbox>> = (0..subscribers)
            .map(|i| {
                let o = Arc::new(Outbox::new(usize::MAX));
                hub.subscribe("bench", i as u64, &o);
                o
            })
            .collect();
        let frame = Bytes::from(vec![b'x'; 150]);
        group.throughput(Throughput::Elements(subscribers as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(subscribers),
            &subscribers,
            |b, _| {
                b.iter(|| {
                    hub.publish("bench", &frame, None);
                    // Drain as a connection task would, so queues do not grow across iterations.
                    let mut sink = VecDeque::new();
                    for o in &outboxes {
                        o.take(&mut sink);
                        o.written(sink.iter().map(Bytes::len).sum());
                        sink.clear();
                    }
                })
            },
        );
    }
    group.finish();
}

/// A 1 KB JSON event to 100 subscribers that all negotiated compression, against the same
/// event to 100 plain ones: the difference is one compression per publish, shared.
fn compressed_fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("hub publish 1 KB JSON to 100");
    let mut data = String::from("[");
    for i in 0.. {
        if data.len() > 1000 {
            break;
        }
        data.push_str(&format!(
            r#"{{\"id\":{i},\"sku\":\"SKU-{}\",\"qty\":{},\"status\":\"shipped\"}},"#,
            i * 7919 % 10007,
            i % 5 + 1
        ));
    }
    data.push(']');
    let frame = herald_protocol::websocket::encode_text(
        format!(r#"{{"event":"update","channel":"bench","data":"{data}"}}"#).as_bytes(),
    );
    for compressed in [false, true] {
        let hub = Hub::new();
        let outboxes: Vec<Arc<Outbox>> = (0..100u64)
            .map(|i| {
                let o = Arc::new(match compressed {
                    true => Outbox::new_compressed(usize::MAX, 256),
                    false => Outbox::new(usize::MAX),
                });
                hub.subscribe("bench", i, &o);
                o
            })
            .collect();
        let mut sink = VecDeque::new();
        for o in &outboxes {
            o.take(&mut sink);
        }
        sink.clear();
        group.throughput(Throughput::Elements(100));
        let name = if compressed { "compressed" } else { "plain" };
        group.bench_function(name, |b| {
            b.iter(|| {
                hub.publish("bench", &frame, None);
                for o in &outboxes {
                    o.take(&mut sink);
                    o.written(sink.iter().map(Bytes::len).sum());
                    sink.clear();
                }
            })
        });
    }
    group.finish();
}

/// A repeated presence subscribe on a channel of 100 members with 1 KB of `user_info`
/// each, answered to a compressed connection (issue 26, R8): what one repeat costs under
/// the shard's lock.
fn repeated_presence_subscribe(c: &mut Criterion) {
    let hub = Hub::new();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut noise = || {
        (0..1000)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                char::from(b"0123456789abcdef"[(seed & 15) as usize])
            })
            .collect::<String>()
    };
    let roster = Roster::Here { max_members: 100 };
    let outbox = Arc::new(Outbox::new_compressed(usize::MAX, 256));
    for i in 0..100u64 {
        let member = Member {
            user_id: format!("u{i}"),
            user_info: Some(format!(r#"{{"bio":"{}"}}"#, noise())),
        };
        hub.join_presence("presence-room", i, &outbox, &member, roster)
            .expect("room for 100");
    }
    let mut sink = VecDeque::new();
    outbox.take(&mut sink);
    sink.clear();
    let member = Member {
        user_id: "u99".into(),
        user_info: None,
    };
    c.bench_function("repeated presence subscribe, 100 members of 1 KB", |b| {
        b.iter(|| {
            hub.join_presence("presence-room", 99, &outbox, &member, roster)
                .expect("re-confirmed");
            outbox.take(&mut sink);
            outbox.written(sink.iter().map(Bytes::len).sum());
            sink.clear();
        })
    });
}

criterion_group!(
    benches,
    fanout,
    compressed_fanout,
    repeated_presence_subscribe
);
criterion_main!(benches);
