//! Which addresses a webhook may be delivered to.
//!
//! The config file's webhooks are the operator's and reach any address, as they always
//! did. An app kept in a database (or written by `herald apps`) is a tenant's: its webhooks
//! reach public addresses only, and the networks the operator lists in
//! `webhook_allowed_networks`. Everything else (loopback, link-local, private, unique-local,
//! shared/CGNAT, unspecified, multicast, documentation and reserved ranges, and IPv6 forms
//! that embed such an IPv4 address) is refused, so that a tenant cannot make the node post
//! inside its network (a cloud metadata service, a database, an admin port).
//!
//! A URL whose host is an address is checked when the app is loaded or written
//! ([`WebhookReach::check_url`]). A host name is checked at each delivery: the tenant's
//! client resolves it with [`CheckedResolver`], which refuses the name if any of its
//! addresses is refused and hands the connector only the addresses it checked, so a name
//! that changes its answer between a check and the connection (DNS rebinding) gains
//! nothing. That client never goes through an HTTP proxy, which would resolve the name
//! itself.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

use crate::metrics::WebhookOutcome;
use crate::redact::redact_url;

/// One webhook endpoint of an app. `Debug` shows the URL without its credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Where events are POSTed (http or https).
    pub url: String,
    /// Event names this endpoint receives; empty means all.
    pub event_types: Vec<String>,
    /// Only events on channels starting with this prefix.
    pub channel_prefix: Option<String>,
    /// Which addresses it may be delivered to: any for the config file's apps, public ones
    /// (and `webhook_allowed_networks`) for an app from the database.
    pub reach: WebhookReach,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &redact_url(&self.url))
            .field("event_types", &self.event_types)
            .field("channel_prefix", &self.channel_prefix)
            .field("reach", &self.reach)
            .finish()
    }
}

/// The networks a tenant's webhook may reach besides public addresses
/// (`webhook_allowed_networks`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedNetworks(Arc<[IpNet]>);

impl AllowedNetworks {
    /// The operator's list.
    pub fn new(networks: Vec<IpNet>) -> Self {
        AllowedNetworks(networks.into())
    }

    fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// Where an endpoint's URL came from, and so which addresses it may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum WebhookReach {
    /// Any address: the operator's own config file wrote it.
    #[default]
    Anywhere,
    /// Public addresses and these networks: an app from the database, a tenant's.
    Public(AllowedNetworks),
}

/// A webhook address a tenant's endpoint may not reach.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{address}, a {kind} address")]
pub struct Refused {
    /// The address.
    pub address: IpAddr,
    /// What kind of address it is: `loopback`, `link-local`, `private`, …
    pub kind: &'static str,
}

impl WebhookReach {
    /// Whether an endpoint may be delivered to at `ip`.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refused> {
        let WebhookReach::Public(allowed) = self else {
            return Ok(());
        };
        let ip = canonical(ip);
        if allowed.contains(ip) {
            return Ok(());
        }
        match kind_of(ip) {
            Some(kind) => Err(Refused { address: ip, kind }),
            None => Ok(()),
        }
    }

    /// Whether `url`'s host, if it is an address (not a name), may be reached: what can be
    /// checked before any delivery.
    pub fn check_url(&self, url: &url::Url) -> Result<(), Refused> {
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.check(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check(IpAddr::V6(ip)),
            _ => Ok(()),
        }
    }

    /// The HTTP client deliveries to such an endpoint go through: for a tenant's, one that
    /// resolves names with [`CheckedResolver`] and never through a proxy.
    pub(crate) fn client(&self, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        match self {
            WebhookReach::Anywhere => builder,
            WebhookReach::Public(allowed) => builder
                .no_proxy()
                .dns_resolver(Arc::new(CheckedResolver(allowed.clone()))),
        }
    }
}

/// IPv4 peers and addresses may come as `::ffff:a.b.c.d`; the checks and networks are
/// IPv4 then.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// What kind of non-public address `ip` is, or `None` for a public one.
fn kind_of(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => kind_of_v4(v4),
        IpAddr::V6(v6) => kind_of_v6(v6),
    }
}

fn kind_of_v4(ip: Ipv4Addr) -> Option<&'static str> {
    const RANGES: &[([u8; 4], u8, &str)] = &[
        ([0, 0, 0, 0], 8, "unspecified"),
        ([10, 0, 0, 0], 8, "private"),
        ([100, 64, 0, 0], 10, "shared (CGNAT)"),
        ([127, 0, 0, 0], 8, "loopback"),
        ([169, 254, 0, 0], 16, "link-local"),
        ([172, 16, 0, 0], 12, "private"),
        ([192, 0, 0, 0], 24, "reserved"),
        ([192, 0, 2, 0], 24, "documentation"),
        ([192, 88, 99, 0], 24, "reserved"),
        ([192, 168, 0, 0], 16, "private"),
        ([198, 18, 0, 0], 15, "benchmarking"),
        ([198, 51, 100, 0], 24, "documentation"),
        ([203, 0, 113, 0], 24, "documentation"),
        ([224, 0, 0, 0], 4, "multicast"),
        ([240, 0, 0, 0], 4, "reserved"),
    ];
    let bits = u32::from(ip);
    RANGES.iter().find_map(|&(net, len, kind)| {
        let mask = u32::MAX << (32 - len);
        (bits & mask == u32::from(Ipv4Addr::from(net))).then_some(kind)
    })
}

fn kind_of_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let bits = u128::from(ip);
    let within = |net: u128, len: u32| bits >> (128 - len) == net >> (128 - len);
    // Forms that carry an IPv4 address the packets end up at: NAT64 and 6to4.
    let embedded = if within(0x0064_ff9b << 96, 96) {
        Some(Ipv4Addr::from(bits as u32))
    } else if within(0x2002 << 112, 16) {
        Some(Ipv4Addr::from((bits >> 80) as u32))
    } else {
        None
    };
    if let Some(v4) = embedded {
        return kind_of_v4(v4);
    }
    match () {
        () if ip.is_unspecified() => Some("unspecified"),
        () if ip.is_loopback() => Some("loopback"),
        // IPv4-compatible (deprecated), and what else lies below 2000::/3's neighbours.
        () if within(0, 96) => Some("reserved"),
        () if within(0x0064_ff9b_0001 << 80, 48) => Some("private"),
        () if within(0x0100 << 112, 64) => Some("reserved"),
        () if within(0x2001_0db8 << 96, 32) => Some("documentation"),
        () if within(0xfc << 120, 7) => Some("unique-local"),
        () if within(0xfe80 << 112, 10) => Some("link-local"),
        () if within(0xfec0 << 112, 10) => Some("site-local"),
        () if within(0xff << 120, 8) => Some("multicast"),
        () => None,
    }
}

/// Resolves a tenant's webhook host: every address of the answer is checked, a name with
/// one refused address is refused whole ([`Refused`], found again by [`refusal`]), and the
/// connection goes only to the addresses checked here.
struct CheckedResolver(AllowedNetworks);

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let reach = WebhookReach::Public(self.0.clone());
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            for addr in &addrs {
                reach.check(addr.ip())?;
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// An app's endpoint, with the client its deliveries go through.
pub(super) struct Endpoint {
    pub(super) config: WebhookConfig,
    pub(super) client: reqwest::Client,
    /// Its URL's host as logs name it (never its credentials).
    pub(super) host: String,
    /// Its URL's address, when that is one the endpoint may not reach (an app kept at its
    /// last valid version after the operator narrowed `webhook_allowed_networks`).
    pub(super) refused: Option<Refused>,
}

/// `hooks` with their clients: one per kind of reach, each from `builder`.
pub(super) fn endpoints(
    hooks: &[WebhookConfig],
    builder: impl Fn() -> reqwest::ClientBuilder,
) -> Result<Vec<Endpoint>, reqwest::Error> {
    let mut clients: Vec<(&WebhookReach, reqwest::Client)> = Vec::new();
    let mut endpoints = Vec::with_capacity(hooks.len());
    for hook in hooks {
        let client = match clients.iter().find(|(reach, _)| **reach == hook.reach) {
            Some((_, client)) => client.clone(),
            None => {
                let client = hook.reach.client(builder()).build()?;
                clients.push((&hook.reach, client.clone()));
                client
            }
        };
        let url = url::Url::parse(&hook.url).ok();
        endpoints.push(Endpoint {
            config: hook.clone(),
            client,
            host: url
                .as_ref()
                .and_then(|u| u.host_str())
                .unwrap_or_default()
                .to_owned(),
            refused: url.and_then(|u| hook.reach.check_url(&u).err()),
        });
    }
    Ok(endpoints)
}

impl super::Bounds {
    /// Counts and logs (at most once per 10 s) a delivery refused for its address.
    pub(super) fn refused(&self, app_id: &str, host: &str, refused: &Refused) {
        self.metrics.webhook(WebhookOutcome::Refused, 1);
        if let Some(suppressed) = self.refused_log.should_log() {
            tracing::warn!(
                app_id,
                host,
                address = %refused.address,
                kind = refused.kind,
                suppressed,
                "Webhook not delivered: its address is one an app's webhook from the database may not reach (the operator allows a network with webhook_allowed_networks)"
            );
        }
    }
}

/// The refusal behind a failed request, if its address was refused.
pub(crate) fn refusal(error: &reqwest::Error) -> Option<&Refused> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = source {
        if let Some(refused) = error.downcast_ref::<Refused>() {
            return Some(refused);
        }
        source = error.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(allowed: &[&str]) -> WebhookReach {
        WebhookReach::Public(AllowedNetworks::new(
            allowed.iter().map(|n| n.parse().expect("net")).collect(),
        ))
    }

    fn kind(reach: &WebhookReach, ip: &str) -> Option<&'static str> {
        reach
            .check(ip.parse().expect("ip"))
            .err()
            .map(|refused| refused.kind)
    }

    #[test]
    fn a_tenant_reaches_public_addresses_only() {
        let reach = tenant(&[]);
        for (ip, expected) in [
            ("169.254.169.254", Some("link-local")),
            ("127.0.0.1", Some("loopback")),
            ("127.1.2.3", Some("loopback")),
            ("10.0.0.5", Some("private")),
            ("172.31.255.255", Some("private")),
            ("192.168.1.1", Some("private")),
            ("100.64.0.1", Some("shared (CGNAT)")),
            ("0.0.0.0", Some("unspecified")),
            ("255.255.255.255", Some("reserved")),
            ("224.0.0.251", Some("multicast")),
            ("192.0.2.7", Some("documentation")),
            ("::1", Some("loopback")),
            ("::", Some("unspecified")),
            ("fe80::1", Some("link-local")),
            ("fd00::5", Some("unique-local")),
            ("fc00::5", Some("unique-local")),
            ("ff02::1", Some("multicast")),
            ("::ffff:169.254.169.254", Some("link-local")),
            ("::ffff:10.1.2.3", Some("private")),
            ("64:ff9b::a9fe:a9fe", Some("link-local")),
            ("2002:7f00:1::", Some("loopback")),
            ("::127.0.0.1", Some("reserved")),
            ("2001:db8::1", Some("documentation")),
            // Public.
            ("93.184.216.34", None),
            ("172.32.0.1", None),
            ("100.128.0.1", None),
            ("2606:4700::1111", None),
            ("64:ff9b::5db8:d822", None),
            ("::ffff:93.184.216.34", None),
        ] {
            assert_eq!(kind(&reach, ip), expected, "{ip}");
        }
        // The operator's own webhooks reach anything.
        assert_eq!(kind(&WebhookReach::Anywhere, "169.254.169.254"), None);
    }

    #[test]
    fn the_operator_allows_networks_ipv4_mapped_included() {
        let reach = tenant(&["10.0.0.0/8", "fd00::/8", "127.0.0.1/32"]);
        for ip in ["10.9.9.9", "::ffff:10.9.9.9", "fd00::5", "127.0.0.1"] {
            assert_eq!(kind(&reach, ip), None, "{ip}");
        }
        for ip in ["127.0.0.2", "192.168.0.1", "fc00::1", "169.254.169.254"] {
            assert!(kind(&reach, ip).is_some(), "{ip}");
        }
    }

    #[test]
    fn an_address_in_a_url_is_checked_in_any_spelling() {
        let reach = tenant(&[]);
        for url in [
            "http://169.254.169.254/latest",
            "http://2852039166/",
            "http://0xa9.0xfe.0xa9.0xfe/",
            "http://0251.0376.0251.0376/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://[fe80::1]:8080/",
            "http://127.1/",
        ] {
            let parsed = url::Url::parse(url).expect(url);
            assert!(reach.check_url(&parsed).is_err(), "{url}");
        }
        for url in [
            "https://example.com/hook",
            "http://localhost/",
            "http://93.184.216.34/",
        ] {
            let parsed = url::Url::parse(url).expect(url);
            assert!(
                reach.check_url(&parsed).is_ok(),
                "{url}: a name waits for delivery"
            );
        }
    }

    #[tokio::test]
    async fn a_name_resolving_to_a_refused_address_is_refused_before_connecting() {
        // A listener that would take the request: the refusal must come before it.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let url = format!("http://localhost:{port}/hook");
        let client = tenant(&[])
            .client(reqwest::Client::builder())
            .build()
            .expect("client");
        let error = client.post(&url).send().await.expect_err("refused");
        let refused = refusal(&error).expect("the refusal is found in the error");
        assert_eq!(refused.kind, "loopback", "{refused}");
        // A connection made would be in the accept queue by now: one poll finds it.
        let accepted = tokio::time::timeout(std::time::Duration::ZERO, listener.accept()).await;
        assert!(accepted.is_err(), "no connection was made");

        // Allowed, the same name is delivered to.
        let allowed = tenant(&["127.0.0.0/8", "::1/128"])
            .client(reqwest::Client::builder())
            .build()
            .expect("client");
        let sent = tokio::spawn(async move { allowed.post(&url).send().await });
        let (mut socket, _) = listener.accept().await.expect("a connection");
        drop(sent);
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut socket).await;
    }
}
