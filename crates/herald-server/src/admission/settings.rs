//! The bounds on the connections clients hold and on how long a request may take. Every
//! bound is listed, with its default and what a client gets, in docs/limits.md.

use std::time::Duration;

use crate::config::declare::settings;
use crate::config::kinds::{Count, Networks, Secs};

/// Upper bounds keep every deadline far from the overflow of tick counts and `Instant`
/// arithmetic, and catch a value given in the wrong unit.
const HOUR: Duration = Duration::from_secs(3600);

settings! {
    /// Bounds on the connections clients hold and how long a request may take.
    pub struct NetLimits(RawNetLimits) in "HTTP connections" {
        /// How long a client may take to send a request's headers: from the connection's
        /// start for the first request, from the first byte for the next ones.
        header_timeout: Secs = Duration::from_secs(10), key "http_header_timeout", Restart,
            check |v| *v <= HOUR => "must be at most 3600 seconds",
            check |v| !v.is_zero() => "must be at least 1 second";
        /// How long reading a request's body may take.
        body_timeout: Secs = Duration::from_secs(30), key "http_body_timeout", Restart,
            check |v| *v <= HOUR => "must be at most 3600 seconds",
            check |v| !v.is_zero() => "must be at least 1 second";
        /// How long a kept-alive HTTP connection may wait for its next request.
        idle_timeout: Secs = Duration::from_secs(30), key "http_idle_timeout", Restart,
            check |v| *v <= HOUR => "must be at most 3600 seconds",
            check |v| !v.is_zero() => "must be at least 1 second";
        /// Largest HTTP request body (413 above it).
        max_body_bytes: Count<usize> = 4 * 1024 * 1024, key "max_request_body_bytes", Restart,
            check |v| *v >= 1024 => "must be at least 1024";
        /// How long a connection closed while its client still sends a body it was answered
        /// without (413, 401, 404) keeps reading and dropping that body, so the client reads
        /// the answer instead of a reset; zero closes at once.
        linger_timeout: Secs = Duration::from_secs(5), key "http_linger_timeout", Restart,
            check |v| *v <= HOUR => "must be at most 3600 seconds";
        /// Bytes such a connection reads and drops at most.
        linger_max_bytes: Count<usize> = 64 * 1024 * 1024, key "http_linger_max_bytes", Restart;
        /// Open connections (HTTP and WebSocket together); `0` derives it from the open-file
        /// limit at start-up, leaving headroom for the cluster's backend, webhooks and the logs.
        max_open_connections: Count<usize> = 0, key "max_open_connections", Restart;
        /// Open connections from one client address; `0` means no limit. Off by default:
        /// behind a load balancer or a carrier NAT every client shares one address.
        max_connections_per_ip: Count<usize> = 0, key "max_connections_per_ip", Restart;
        /// The bits of an IPv6 address that name one client under `max_connections_per_ip`:
        /// a client usually holds a whole /64. IPv4 addresses (IPv4-mapped ones included)
        /// are counted whole.
        per_ip_v6_prefix: Count<u8> = 64, key "max_connections_per_ip_v6_prefix", Restart,
            check |v| (1..=128).contains(v) => "must be from 1 to 128 (bits of an IPv6 address)";
        /// Peers whose `X-Forwarded-For` header names the client address (the address the
        /// per-address cap counts); empty: the TCP peer is always the client.
        trusted_proxies: Networks = Vec::new(), key "trusted_proxies", Restart;
    }
}
