//! The settings of the server itself, which belong to no one subsystem: where it listens,
//! what a WebSocket connection may do, how it shuts down, and the process around it.

use std::time::Duration;

use crate::config::declare::settings;
use crate::config::kinds::{
    Choice, Choices, Count, FilePath, Flag, NodeNumber, Opt, Port, Secs, Text,
};

/// Upper bounds keep every deadline far from the overflow of tick counts and `Instant`
/// arithmetic, and catch a value given in the wrong unit.
const HOUR: Duration = Duration::from_secs(3600);

settings! {
    /// Where the server listens and what a WebSocket connection may do.
    pub struct ServerSettings(RawServerSettings) in "Server" {
        /// Address to bind.
        host: Text = "127.0.0.1".to_owned(), key "host" env "HERALD_HOST", Restart,
            check |v| !v.is_empty() => "must not be empty";
        /// Port to bind; `0` picks a free one.
        port: Port = 6001, key "port" env "HERALD_PORT", Restart;
        /// Seconds sent to clients in `connection_established`; also how long the server
        /// lets a socket stay silent before pinging it.
        activity_timeout: Secs = Duration::from_secs(120), key "activity_timeout" env "HERALD_ACTIVITY_TIMEOUT", Restart,
            check |v| !v.is_zero() => "must be at least 1 second (pusher-js rejects 0)",
            check |v| *v <= HOUR => "must be at most 3600 seconds";
        /// How long the server waits for any frame after its ping before closing with 4201.
        pong_timeout: Secs = Duration::from_secs(30), key "pong_timeout" env "HERALD_PONG_TIMEOUT", Restart,
            check |v| !v.is_zero() => "must be at least 1 second",
            check |v| *v <= HOUR => "must be at most 3600 seconds";
        /// How long a client may take to finish a frame or fragmented message once it has
        /// started one, before the server closes with 1008.
        partial_message_timeout: Secs = Duration::from_secs(30), key "partial_message_timeout", Restart,
            check |v| (1..=3600).contains(&v.as_secs()) => "must be from 1 to 3600 seconds";
        /// Largest inbound WebSocket message, in bytes.
        max_message_bytes: Count<usize> = 64 * 1024, key "max_message_bytes", Restart,
            check |v| *v >= 1024 => "must be at least 1024";
        /// Refuse WebSocket connections without a `protocol` query parameter (4008). Off by
        /// default: every current client sends it, and Pusher itself still infers one.
        require_protocol: Flag = false, key "require_protocol", Restart;
        /// Frames (data and control, of any kind) one WebSocket connection may have read and
        /// handled per second; past it the server stops reading that socket until its budget
        /// refills.
        client_frames_per_second: Count<u32> = 200, key "client_frames_per_second", Restart,
            check |v| (1..=10_000_000).contains(v) => "must be from 1 to 10000000";
        /// Bytes of messages one WebSocket connection may have read and handled per second,
        /// each compressed message counted at its inflated size; past it, as above.
        client_bytes_per_second: Count<u32> = 1024 * 1024, key "client_bytes_per_second", Restart,
            check |v| (1024..=1 << 30).contains(v) => "must be from 1024 to 1073741824 (1 GiB)";
        /// Bytes a connection may have queued for sending before it is closed with 4100; at
        /// least `max_message_bytes`.
        outbox_max_bytes: Count<usize> = 1024 * 1024, key "outbox_max_bytes", Restart,
            // A connection's task counts what it writes between two reports in 32 bits.
            check |v| *v <= 1 << 30 => "must be at most 1073741824 (1 GiB)";
        /// How long shutdown waits for sockets and requests to finish.
        shutdown_grace: Secs = Duration::from_secs(10), key "shutdown_grace", Restart,
            check |v| *v <= HOUR => "must be at most 3600 seconds";
        /// How long shutdown waits, once the connections are drained, for leaving the cluster
        /// and for the webhooks still to be delivered; what is left then is dropped and
        /// counted.
        webhook_flush_timeout: Secs = Duration::from_secs(5), key "webhook_flush_timeout", Restart,
            check |v| *v <= HOUR => "must be at most 3600 seconds",
            // Leaving the cluster shares this bound: zero would skip it.
            check |v| !v.is_zero() => "must be at least 1 second";
        /// Accept permessage-deflate offers (RFC 7692), each message compressed on its own.
        compression: Flag = true, key "compression" env "HERALD_COMPRESSION", Restart;
        /// Frames smaller than this go out uncompressed even on a compressed connection:
        /// below it, DEFLATE saves a few bytes for the cost of a compression run.
        compression_min_bytes: Count<usize> = 256, key "compression_min_bytes", Restart;
    }
}

/// Log output of the `herald` binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (tracing's JSON formatter).
    Json,
}

impl Choices for LogFormat {
    const NAMES: &'static [(&'static str, Self)] =
        &[("text", LogFormat::Text), ("json", LogFormat::Json)];
}

settings! {
    /// The process around the server: its logs, its pid file and its node id.
    pub struct ProcessSettings(RawProcessSettings) in "Process" {
        /// Where `herald serve` writes its process id (for `herald reload`), removed at a
        /// clean shutdown.
        pid_file: Opt<FilePath> = None, key "pid_file", Restart,
            check |v| v.as_ref().is_none_or(|p| !p.as_os_str().is_empty()) => "must not be empty";
        /// How the `herald` binary writes its logs: `text` or `json`.
        log_format: Choice<LogFormat> = LogFormat::Text, key "log_format" env "HERALD_LOG_FORMAT", Restart;
        /// The node's id in socket ids and in its cluster; unset, a random one is drawn at
        /// start. A cluster node refuses to start with an id another live node holds.
        node_id: Opt<NodeNumber> = None, key "node_id" env "HERALD_NODE_ID", Restart,
            check |v| *v != Some(0) => "must be at least 1";
    }
}
