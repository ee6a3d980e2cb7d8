//! The connection registry at a node's scale and at a million entries, without sockets
//! (issue 31): how long the sweeper's pass over it takes, which bounds how long a connect
//! can wait for a shard, and what registering and forgetting a connection costs at that
//! size. The pass here visits each connection (its shard locked, its outbox upgraded); the
//! sweeper's checks add a few atomic loads each.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use herald_server::outbox::Outbox;
use herald_server::registry::Registry;

fn registry(c: &mut Criterion) {
    let mut group = c.benchmark_group("registry");
    group.sample_size(10);
    for n in [20_000u64, 1_000_000] {
        let registry = Registry::default();
        let outboxes: Vec<Arc<Outbox>> = (0..n)
            .map(|conn| {
                let outbox = Arc::new(Outbox::new(1 << 16));
                registry.insert(conn, &outbox);
                outbox
            })
            .collect();
        group.throughput(Throughput::Elements(n));
        group.bench_with_input(BenchmarkId::new("pass", n), &n, |b, _| {
            b.iter(|| {
                registry.for_each(|outbox| {
                    black_box(outbox);
                })
            })
        });
        group.throughput(Throughput::Elements(1));
        let spare = Arc::new(Outbox::new(1 << 16));
        group.bench_with_input(BenchmarkId::new("connect and close", n), &n, |b, _| {
            b.iter(|| {
                registry.insert(n, &spare);
                registry.remove(n, &spare);
            })
        });
        drop(outboxes);
    }
    group.finish();
}

criterion_group!(benches, registry);
criterion_main!(benches);
