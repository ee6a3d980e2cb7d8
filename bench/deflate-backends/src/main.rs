//! Compresses event payloads of several sizes as Herald does (one message with no context:
//! reset, compress, sync flush) at several levels, and prints size and time per message.

use flate2::{Compress, Compression, FlushCompress};
use std::time::Instant;

/// The payload of an event of about `size` bytes, as the criterion bench makes it
/// (crates/herald-protocol/benches/protocol.rs).
fn payload(size: usize) -> Vec<u8> {
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
    format!(r#"{{"event":"update","channel":"orders","data":"[{data}]"}}"#).into_bytes()
}

fn main() {
    let backend = if cfg!(feature = "zlib-rs") { "zlib-rs" } else { "miniz_oxide" };
    for size in [256usize, 1024, 4096] {
        let input = payload(size);
        for level in [1u32, 2, 3, 6] {
            let mut compressor = Compress::new(Compression::new(level), false);
            let mut out = Vec::with_capacity(input.len() + 64);
            let runs = 20_000;
            let started = Instant::now();
            for _ in 0..runs {
                compressor.reset();
                out.clear();
                let _ = compressor.compress_vec(&input, &mut out, FlushCompress::Sync);
            }
            let micros = started.elapsed().as_secs_f64() * 1e6 / f64::from(runs);
            println!(
                "{backend:<11} {:>5} B  level {level}: {:>5} B  {micros:>6.2} us",
                input.len(),
                out.len() - 4
            );
        }
    }
}
