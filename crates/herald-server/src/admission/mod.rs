//! The caps on open connections: in total, and per client address.
//!
//! Every TCP connection, HTTP or WebSocket, holds a [`ConnPermit`] from accept until its
//! socket closes; the permit travels with the socket through the WebSocket upgrade. A
//! connection over a cap is refused at once with a canned HTTP answer written without
//! waiting, so a flood costs an accept and a write, never a task.
//!
//! The client address is the TCP peer, unless the peer is one of `trusted_proxies`: then
//! it is the right-most address of `X-Forwarded-For` that is not itself a trusted proxy,
//! known only once a request's headers have arrived. Such a connection is counted per
//! address at its WebSocket upgrade ([`ConnPermit::count_forwarded`]).
//!
//! An IPv4 address is counted whole; an IPv6 address by its network of
//! `max_connections_per_ip_v6_prefix` bits (a /64 by default: one subscriber line gets a
//! whole /64, so counting each of its 2^64 addresses alone would be no cap at all), and an
//! IPv4-mapped IPv6 address as the IPv4 address it carries.

pub mod settings;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use ipnet::IpNet;
use parking_lot::Mutex;

pub use self::settings::NetLimits;

const SHARDS: usize = 16;

/// Which cap a connection hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The server holds `max_open_connections` already.
    Total,
    /// The client's address holds `max_connections_per_ip` already.
    PerAddress,
}

impl Refusal {
    /// The `reason` label of `herald_connections_refused_total`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::Total => "max_open_connections",
            Refusal::PerAddress => "max_connections_per_ip",
        }
    }

    /// The complete HTTP response a refused connection gets: small enough for one
    /// non-blocking write into an empty socket buffer.
    pub(crate) fn response(self) -> &'static [u8] {
        match self {
            Refusal::Total => b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 86\r\nretry-after: 1\r\nconnection: close\r\n\r\n{\"error\":\"The server holds its maximum of open connections; retry shortly\",\"code\":503}",
            Refusal::PerAddress => b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\ncontent-length: 84\r\nretry-after: 1\r\nconnection: close\r\n\r\n{\"error\":\"Too many open connections from this address; close some first\",\"code\":429}",
        }
    }
}

/// The open-connection counts and their caps; shared by the accept loop and every permit.
pub(crate) struct ConnLimiter {
    max_total: usize,
    /// 0: addresses are not counted at all.
    max_per_ip: usize,
    /// The bits of an IPv6 address that name the client it is counted under.
    v6_prefix: u8,
    open: AtomicUsize,
    per_ip: Box<[Mutex<HashMap<IpAddr, u32>>]>,
    hasher: std::collections::hash_map::RandomState,
    trusted: Vec<IpNet>,
    refusals: RateLog,
}

impl ConnLimiter {
    /// The limiter for `net`, with `max_total` already resolved (never 0).
    pub(crate) fn new(net: &NetLimits, max_total: usize) -> Arc<Self> {
        Arc::new(ConnLimiter {
            max_total,
            max_per_ip: net.max_connections_per_ip,
            v6_prefix: net.per_ip_v6_prefix,
            open: AtomicUsize::new(0),
            per_ip: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            trusted: net.trusted_proxies.clone(),
            refusals: RateLog::new(Duration::from_secs(10)),
        })
    }

    /// Open connections now.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Counts a new TCP connection from `peer`, or says which cap it hit.
    pub(crate) fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<ConnPermit, Refusal> {
        let mut current = self.open.load(Ordering::Relaxed);
        loop {
            if current >= self.max_total {
                return Err(self.refused(Refusal::Total, peer));
            }
            match self.open.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => current = now,
            }
        }
        let mut permit = ConnPermit {
            limiter: self.clone(),
            counted: None,
            detached: false,
        };
        if self.max_per_ip > 0 && !self.is_trusted(peer) {
            let Some(counted) = self.count_ip(peer) else {
                // Dropping the permit gives the total slot back.
                return Err(self.refused(Refusal::PerAddress, peer));
            };
            permit.counted = Some(counted);
        }
        Ok(permit)
    }

    fn refused(&self, refusal: Refusal, peer: IpAddr) -> Refusal {
        if let Some(suppressed) = self.refusals.should_log() {
            tracing::warn!(
                %peer,
                ?refusal,
                open = self.open(),
                max_open_connections = self.max_total,
                max_connections_per_ip = self.max_per_ip,
                refused_since_last_log = suppressed,
                "Refusing connections over a cap"
            );
        }
        refusal
    }

    fn shard(&self, ip: &IpAddr) -> &Mutex<HashMap<IpAddr, u32>> {
        &self.per_ip[(self.hasher.hash_one(ip) as usize) & (SHARDS - 1)]
    }

    /// What `ip` is counted under: itself for IPv4 (an IPv4-mapped address as its IPv4
    /// one), its network of `v6_prefix` bits for IPv6.
    fn client_key(&self, ip: IpAddr) -> IpAddr {
        match canonical(ip) {
            IpAddr::V6(v6) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.v6_prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
            v4 => v4,
        }
    }

    /// Counts a connection from `ip` under its client's key, which it returns; `None` when
    /// that client holds the cap already.
    fn count_ip(&self, ip: IpAddr) -> Option<IpAddr> {
        let key = self.client_key(ip);
        let mut shard = self.shard(&key).lock();
        let n = shard.entry(key).or_insert(0);
        if (*n as usize) >= self.max_per_ip {
            return None;
        }
        *n += 1;
        Some(key)
    }

    /// Gives back a count taken under `ip`, a key [`ConnLimiter::count_ip`] returned.
    fn release_ip(&self, ip: IpAddr) {
        let mut shard = self.shard(&ip).lock();
        if let Some(n) = shard.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                shard.remove(&ip);
            }
        }
    }

    /// Whether `X-Forwarded-For` from `peer` is believed.
    pub(crate) fn is_trusted(&self, peer: IpAddr) -> bool {
        let peer = canonical(peer);
        self.trusted.iter().any(|net| net.contains(&peer))
    }

    /// The client's address: `peer`, or for a trusted proxy the right-most address of
    /// `X-Forwarded-For` that is not a trusted proxy itself (the left part is whatever the
    /// client wrote, so it cannot be believed).
    pub(crate) fn client_addr(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer;
        }
        let mut client = peer;
        for value in headers.get_all("x-forwarded-for").iter().rev() {
            let Ok(value) = value.to_str() else {
                return client;
            };
            for part in value.rsplit(',') {
                match part.trim().parse::<IpAddr>() {
                    Ok(ip) if self.is_trusted(ip) => client = ip,
                    Ok(ip) => return ip,
                    Err(_) => return client,
                }
            }
        }
        client
    }
}

/// IPv4 peers of a dual-stack socket arrive as `::ffff:a.b.c.d`; networks are written in
/// IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// One open connection's place under the caps; released when dropped.
pub(crate) struct ConnPermit {
    limiter: Arc<ConnLimiter>,
    /// The client key (an address, or an IPv6 network) this connection is counted under,
    /// if any.
    counted: Option<IpAddr>,
    /// Handed over by [`ConnPermit::detach`]: released by its new holder.
    detached: bool,
}

/// A permit without its limiter pointer, for the WebSocket task, which reaches the
/// limiter through the server state it holds anyway: an idle connection's task is sized
/// to the byte, and a boxed address costs nothing when addresses are not counted.
pub(crate) struct DetachedPermit(Option<Box<IpAddr>>);

impl ConnPermit {
    /// Hands the permit over; the caller must give it back, exactly once, with
    /// [`ConnLimiter::release`].
    pub(crate) fn detach(mut self) -> DetachedPermit {
        self.detached = true;
        DetachedPermit(self.counted.map(Box::new))
    }

    /// Takes over a client address counted at the request (behind a trusted proxy), so it
    /// is released with the connection.
    pub(crate) fn adopt(&mut self, mut count: ForwardedCount) {
        if self.counted.is_none() {
            self.counted = count.ip.take();
        }
    }
}

/// A client address counted from `X-Forwarded-For`, until a [`ConnPermit`] adopts it.
pub(crate) struct ForwardedCount {
    limiter: Arc<ConnLimiter>,
    ip: Option<IpAddr>,
}

impl Drop for ForwardedCount {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            self.limiter.release_ip(ip);
        }
    }
}

impl ConnLimiter {
    /// For a request from a trusted proxy: counts the client address it names, if
    /// addresses are counted. Other peers were counted at accept.
    pub(crate) fn count_forwarded(
        self: &Arc<Self>,
        peer: IpAddr,
        headers: &HeaderMap,
    ) -> Result<ForwardedCount, Refusal> {
        let mut count = ForwardedCount {
            limiter: self.clone(),
            ip: None,
        };
        if self.max_per_ip == 0 || !self.is_trusted(peer) {
            return Ok(count);
        }
        let client = self.client_addr(peer, headers);
        if self.is_trusted(client) {
            return Ok(count);
        }
        let Some(counted) = self.count_ip(client) else {
            return Err(self.refused(Refusal::PerAddress, client));
        };
        count.ip = Some(counted);
        Ok(count)
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        if !self.detached {
            self.limiter.release_counts(self.counted);
        }
    }
}

impl ConnLimiter {
    /// Gives back a detached permit's place.
    pub(crate) fn release(&self, permit: &mut DetachedPermit) {
        self.release_counts(permit.0.take().map(|ip| *ip));
    }

    fn release_counts(&self, counted: Option<IpAddr>) {
        if let Some(ip) = counted {
            self.release_ip(ip);
        }
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The cap on open connections when the configuration leaves it to the server: what the
/// open-file limit allows, less headroom for the listeners, the cluster's backend, webhook
/// deliveries and logs, so those never starve when clients take every connection.
pub(crate) fn default_max_open_connections() -> usize {
    let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((1024, 1024));
    let soft = usize::try_from(soft).unwrap_or(usize::MAX).min(1 << 24);
    let headroom = (soft / 10).clamp(64, 4096);
    soft.saturating_sub(headroom).max(16)
}

/// Lets a warning through at most once per period, counting what it held back: a flood
/// of refusals must not become a flood of log lines.
pub(crate) struct RateLog {
    start: Instant,
    period_ms: u64,
    /// Milliseconds since `start` of the last line logged, plus one (0: never).
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl RateLog {
    pub(crate) fn new(period: Duration) -> Self {
        RateLog {
            start: Instant::now(),
            period_ms: period.as_millis().try_into().unwrap_or(u64::MAX),
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when this occurrence should be logged, `n` being how many were held back
    /// since the last line.
    pub(crate) fn should_log(&self) -> Option<u64> {
        let now = u64::try_from(self.start.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < self.period_ms {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if self
            .last
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(total: usize, per_ip: usize, trusted: &[&str]) -> Arc<ConnLimiter> {
        limiter_v6(
            total,
            per_ip,
            trusted,
            NetLimits::default().per_ip_v6_prefix,
        )
    }

    fn limiter_v6(total: usize, per_ip: usize, trusted: &[&str], prefix: u8) -> Arc<ConnLimiter> {
        let net = NetLimits {
            max_connections_per_ip: per_ip,
            per_ip_v6_prefix: prefix,
            trusted_proxies: trusted.iter().map(|t| t.parse().expect("net")).collect(),
            ..NetLimits::default()
        };
        ConnLimiter::new(&net, total)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn caps_hold_and_permits_give_their_slots_back() {
        let l = limiter(3, 2, &[]);
        let a1 = l.admit(ip("1.1.1.1")).expect("a1");
        let _a2 = l.admit(ip("1.1.1.1")).expect("a2");
        assert_eq!(l.admit(ip("1.1.1.1")).err(), Some(Refusal::PerAddress));
        assert_eq!(l.open(), 2, "a refusal gives its slot back");
        let _b = l.admit(ip("2.2.2.2")).expect("b");
        assert_eq!(l.admit(ip("3.3.3.3")).err(), Some(Refusal::Total));
        drop(a1);
        assert!(l.admit(ip("1.1.1.1")).is_ok(), "a1's slots were given back");
    }

    #[test]
    fn ipv6_addresses_count_by_their_prefix_and_mapped_ones_as_ipv4() {
        let l = limiter(100, 2, &[]);
        assert_eq!(NetLimits::default().per_ip_v6_prefix, 64);
        // Two addresses of one /64: one client.
        let _a = l.admit(ip("2001:db8:1:2::1")).expect("a");
        let b = l.admit(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")).expect("b");
        assert_eq!(
            l.admit(ip("2001:db8:1:2:dead:beef::7")).err(),
            Some(Refusal::PerAddress),
            "a third address of the same /64"
        );
        // The next /64 is another client.
        let _c = l.admit(ip("2001:db8:1:3::1")).expect("another /64");
        drop(b);
        let _b = l
            .admit(ip("2001:db8:1:2::9"))
            .expect("b gave its count back");

        // An IPv4-mapped peer (a dual-stack socket) counts as its IPv4 address.
        let _v4 = l.admit(ip("198.51.100.7")).expect("v4");
        let _mapped = l.admit(ip("::ffff:198.51.100.7")).expect("mapped");
        assert_eq!(
            l.admit(ip("198.51.100.7")).err(),
            Some(Refusal::PerAddress),
            "mapped and plain IPv4 share one count"
        );
        // Another IPv4 address, even a neighbour, is another client: IPv4 stays /32.
        let _next = l.admit(ip("198.51.100.8")).expect("v4 is counted whole");

        // Configured /128: each IPv6 address alone; /48: a whole site.
        let whole = limiter_v6(100, 1, &[], 128);
        let _x = whole.admit(ip("2001:db8::1")).expect("x");
        let _y = whole.admit(ip("2001:db8::2")).expect("another address");
        let site = limiter_v6(100, 1, &[], 48);
        let _z = site.admit(ip("2001:db8:1:2::1")).expect("z");
        assert!(site.admit(ip("2001:db8:1:ff::1")).is_err(), "the same /48");
    }

    #[test]
    fn forwarded_ipv6_clients_count_by_their_prefix() {
        let l = limiter(100, 1, &["10.0.0.0/8"]);
        let proxy = ip("10.1.2.3");
        let forwarded = |client: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("x-forwarded-for", client.parse().expect("h"));
            headers
        };
        let first = l
            .count_forwarded(proxy, &forwarded("2001:db8:1:2::1"))
            .expect("first");
        assert_eq!(
            l.count_forwarded(proxy, &forwarded("2001:db8:1:2::2"))
                .err(),
            Some(Refusal::PerAddress),
            "the same /64 through the proxy"
        );
        let _other = l
            .count_forwarded(proxy, &forwarded("2001:db8:9::1"))
            .expect("another /64");
        drop(first);
        let again = l
            .count_forwarded(proxy, &forwarded("2001:db8:1:2::3"))
            .expect("given back");
        drop(again);
    }

    #[test]
    fn without_a_per_address_cap_nothing_is_counted_per_address() {
        let l = limiter(100, 0, &[]);
        let permits: Vec<_> = (0..50).map(|_| l.admit(ip("1.1.1.1"))).collect();
        assert!(permits.iter().all(Result::is_ok));
        assert!(l.per_ip.iter().all(|s| s.lock().is_empty()));
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let l = limiter(100, 1, &["10.0.0.0/8"]);
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "6.6.6.6, 5.5.5.5, 10.0.0.9".parse().expect("h"),
        );
        assert_eq!(l.client_addr(ip("10.1.2.3"), &headers), ip("5.5.5.5"));
        assert_eq!(
            l.client_addr(ip("::ffff:10.1.2.3"), &headers),
            ip("5.5.5.5"),
            "IPv4-mapped peers are matched as IPv4"
        );
        assert_eq!(l.client_addr(ip("7.7.7.7"), &headers), ip("7.7.7.7"));
        // The proxy itself is not counted per address; its clients are.
        let proxy = ip("10.1.2.3");
        let mut p1 = l.admit(proxy).expect("p1");
        let _p2 = l.admit(proxy).expect("p2");
        p1.adopt(l.count_forwarded(proxy, &headers).expect("first client"));
        assert_eq!(
            l.count_forwarded(proxy, &headers).err(),
            Some(Refusal::PerAddress),
            "the same client through the same proxy"
        );
        drop(p1);
        let again = l.count_forwarded(proxy, &headers).expect("p1 gave it back");
        drop(again);
        assert!(
            l.per_ip.iter().all(|s| s.lock().is_empty()),
            "nothing leaks"
        );
    }

    #[test]
    fn refusal_responses_declare_their_exact_length() {
        for r in [Refusal::Total, Refusal::PerAddress] {
            let text = std::str::from_utf8(r.response()).expect("ascii");
            let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
            let declared: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|n| n.parse().ok())
                .expect("content-length");
            assert_eq!(declared, body.len(), "{text}");
            serde_json::from_str::<serde_json::Value>(body).expect("JSON body");
        }
    }

    #[test]
    fn the_rate_log_lets_one_line_through_per_period() {
        let log = RateLog::new(Duration::from_secs(3600));
        assert_eq!(log.should_log(), Some(0));
        assert_eq!(log.should_log(), None);
        assert_eq!(log.should_log(), None);
        let log = RateLog::new(Duration::ZERO);
        assert_eq!(log.should_log(), Some(0));
        assert_eq!(log.should_log(), Some(0));
    }
}
