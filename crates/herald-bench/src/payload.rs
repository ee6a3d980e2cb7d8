//! The `data` of the events the fan-out modes publish: a timestamp first (which the
//! subscribers read back for latency), then `--payload` bytes of filler of one of two kinds.
//!
//! `padding` (the default, and all the harness had before) repeats one letter: DEFLATE
//! shrinks it to almost nothing, so it says nothing about compression. `json` is made to
//! compress as real events do. Chat messages and dashboard updates are small objects with
//! the same keys over and over (which DEFLATE takes almost for free), mixed with values that
//! barely compress: random ids, counters, prices, timestamps, a line of text. Each message
//! compressed on its own (permessage-deflate with no context takeover, the frame as a
//! subscriber gets it) shrinks about 1.6x at 300 B, 2.6x at 1 KB, 3.4x at 2 KB and 4x at
//! 4 KB: small messages pay the DEFLATE block header and their one-off values, big ones are
//! mostly repeated keys (the tests hold these ratios). Every event differs, drawn from a
//! generator seeded by the event's number, so a server that kept its compression context
//! between messages would not gain from repeats a real stream lacks.

/// What fills an event's data after the timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PayloadKind {
    /// One letter repeated: compresses to nearly nothing.
    Padding,
    /// Varied JSON objects (ids, numbers, words) that compress as real events do (2.6x at
    /// 1 KB, more for bigger events).
    Json,
}

impl PayloadKind {
    pub fn name(self) -> &'static str {
        match self {
            PayloadKind::Padding => "padding",
            PayloadKind::Json => "json",
        }
    }
}

/// The `data` string of event `n` (JSON text escaped to sit inside a JSON string, as Pusher
/// events carry it), about `size` bytes, starting with `{\"t\":t,`.
pub fn data(kind: PayloadKind, size: usize, t: u64, n: u64) -> String {
    match kind {
        PayloadKind::Padding => {
            format!(
                r#"{{\"t\":{t},\"p\":\"{}\"}}"#,
                "x".repeat(size.saturating_sub(24))
            )
        }
        PayloadKind::Json => json(size, t, n),
    }
}

const WORDS: &[&str] = &[
    "the", "a", "to", "and", "of", "in", "is", "it", "you", "that", "for", "on", "with", "this",
    "we", "be", "are", "have", "not", "just", "can", "will", "now", "see", "new", "update",
    "deploy", "build", "merge", "review", "please", "thanks", "done", "later", "today", "meeting",
    "coffee", "ticket", "server", "client", "latency", "graph", "looks", "good", "broken", "fixed",
    "again", "after", "before", "lunch", "release", "tomorrow", "morning", "sure", "maybe", "why",
    "how", "what", "order", "shipped", "paid", "pending", "cart", "price", "stock", "alert", "cpu",
    "memory", "disk", "queue", "error", "warning", "ok", "green", "red", "blue", "team",
];
const NAMES: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter", "yusuf",
];
const TYPES: &[&str] = &[
    "message.created",
    "message.updated",
    "order.paid",
    "order.shipped",
    "metric.sample",
    "presence.typing",
    "ticket.assigned",
    "price.tick",
];

/// SplitMix64: cheap, and good enough to vary the fields.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }

    /// `min` to `min + spread - 1` words.
    fn words(&mut self, min: usize, spread: usize) -> String {
        let count = min + self.below(spread);
        let mut text = String::new();
        for i in 0..count {
            if i > 0 {
                text.push(' ');
            }
            text.push_str(self.pick(WORDS));
        }
        text
    }
}

fn json(size: usize, t: u64, n: u64) -> String {
    use std::fmt::Write as _;
    let mut rng = Rng(n.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x5EED);
    let ts = 1_760_000_000_000 + n * 37;
    let mut s = String::with_capacity(size + 256);
    // Writing to a String cannot fail.
    let _ = write!(
        s,
        r#"{{\"t\":{t},\"type\":\"{}\",\"id\":\"evt_{:012x}\",\"room\":\"room-{}\",\"user\":{{\"id\":\"u_{}\",\"name\":\"{}\",\"online\":{}}},\"text\":\"{}\",\"ts\":{ts},\"items\":["#,
        rng.pick(TYPES),
        rng.next() >> 16,
        rng.below(500),
        rng.below(100_000),
        rng.pick(NAMES),
        rng.below(2) == 0,
        rng.words(4, 10),
    );
    // Items of one event are rows of a list (an order's lines, a dashboard's series): their
    // ids run on from a random start and their times sit close together, as in real data.
    let first_item = rng.below(1_000_000);
    let mut i = 0;
    while s.len() + 2 < size {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(
            s,
            r#"{{\"id\":\"item_{}\",\"label\":\"{}\",\"value\":{}.{:02},\"count\":{},\"ok\":{},\"at\":{}}}"#,
            first_item + i,
            rng.words(1, 3),
            rng.below(100),
            rng.below(100),
            rng.below(20),
            rng.below(5) != 0,
            // Whole seconds, as most producers stamp rows.
            ts / 1000 * 1000 - 1000 * rng.below(60) as u64,
        );
        i += 1;
    }
    s.push_str("]}");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ratio(data: &str) -> f64 {
        let body = format!(r#"{{"event":"bench","channel":"bench-0","data":"{data}"}}"#);
        let mut out = Vec::new();
        herald_protocol::deflate::compress_into(body.as_bytes(), &mut out);
        body.len() as f64 / out.len() as f64
    }

    #[test]
    fn json_compresses_like_real_events() {
        // Small messages compress less: the block header and the one-off values weigh more.
        for (size, low, high) in [(300, 1.4, 2.0), (1000, 2.4, 3.0), (4000, 3.5, 4.5)] {
            let data = data(PayloadKind::Json, size, 123_456_789, 7);
            let r = ratio(&data);
            assert!((low..=high).contains(&r), "{size} B: ratio {r:.2}: {data}");
            assert!(
                data.len() >= size && data.len() < size + 200,
                "{}",
                data.len()
            );
            assert!(data.starts_with(r#"{\"t\":123456789,"#));
            // The unescaped text is JSON.
            let json: serde_json::Value = serde_json::from_str(&data.replace("\\\"", "\""))
                .unwrap_or_else(|e| panic!("{e}: {data}"));
            assert_eq!(json["t"], 123_456_789);
        }
    }

    #[test]
    fn every_event_differs() {
        let a = data(PayloadKind::Json, 1000, 1, 1);
        let b = data(PayloadKind::Json, 1000, 1, 2);
        assert_ne!(a[20..], b[20..]);
    }

    #[test]
    fn padding_is_as_before_and_compresses_to_nothing() {
        let data = data(PayloadKind::Padding, 1000, 5, 0);
        assert!(data.starts_with(r#"{\"t\":5,\"p\":\"xxx"#));
        let r = ratio(&data);
        assert!(r > 10.0, "{r}");
    }
}
