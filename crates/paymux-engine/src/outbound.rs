//! Where merchant webhooks may go: only to globally routable addresses, checked where the
//! connection is made.
//!
//! A merchant chooses its endpoint's URL, so without a check the gateway would POST wherever a
//! merchant points it: its own loopback, the cloud metadata service, the operator's private
//! network. Checking a name and then letting the HTTP client resolve it again leaves a window in
//! which the name can be re-pointed inward (DNS rebinding). So the webhook client is given
//! [`GlobalOnlyResolver`]: the one lookup whose addresses the client connects to is the one that
//! is filtered, and a URL whose host is an address literal (which no resolver sees) is checked
//! with [`is_global`] before the request is made. The sandbox, whose merchant endpoints live on
//! the same machine, turns the filter off explicitly.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why a webhook URL is not sent to.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("the URL has no host")]
    NoHost,
    #[error("{host} is not a globally routable address")]
    NotGlobal { host: String },
    #[error("{host} resolves only to addresses that are not globally routable")]
    ResolvesInward { host: String },
    #[error("{host} does not resolve: {reason}")]
    LookupFailed { host: String, reason: String },
    #[error("the webhook HTTP client cannot be built: {0}")]
    Client(#[source] reqwest::Error),
}

/// Whether `ip` is a globally routable unicast address: the only kind a webhook may reach.
///
/// IPv4: everything but the special-purpose blocks (this network, private, carrier-grade NAT,
/// loopback, link-local, IETF protocol assignments, documentation, 6to4 relay, benchmarking,
/// multicast, reserved and broadcast). IPv6: global unicast (`2000::/3`) only, less the blocks
/// inside it that are not global or that tunnel to an IPv4 address the check cannot see
/// (IETF protocol assignments with Teredo, documentation, 6to4); NAT64 (`64:ff9b::/96`,
/// `64:ff9b:1::/48`), IPv4-mapped and IPv4-compatible forms, unique-local, link-local,
/// multicast, loopback and unspecified all lie outside `2000::/3`.
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_global_v4(v4),
        IpAddr::V6(v6) => is_global_v6(v6),
    }
}

fn is_global_v4(ip: Ipv4Addr) -> bool {
    const NOT_GLOBAL: [([u8; 4], u32); 15] = [
        ([0, 0, 0, 0], 8),       // "this network"
        ([10, 0, 0, 0], 8),      // private
        ([100, 64, 0, 0], 10),   // carrier-grade NAT
        ([127, 0, 0, 0], 8),     // loopback
        ([169, 254, 0, 0], 16),  // link-local (cloud metadata services live here)
        ([172, 16, 0, 0], 12),   // private
        ([192, 0, 0, 0], 24),    // IETF protocol assignments
        ([192, 0, 2, 0], 24),    // documentation (TEST-NET-1)
        ([192, 31, 196, 0], 24), // AS112
        ([192, 88, 99, 0], 24),  // 6to4 relay anycast
        ([192, 168, 0, 0], 16),  // private
        ([198, 18, 0, 0], 15),   // benchmarking
        ([198, 51, 100, 0], 24), // documentation (TEST-NET-2)
        ([203, 0, 113, 0], 24),  // documentation (TEST-NET-3)
        ([224, 0, 0, 0], 3),     // multicast, reserved and broadcast: 224/4 and 240/4
    ];
    let bits = u32::from(ip);
    !NOT_GLOBAL.iter().any(|&(net, len)| {
        let mask = u32::MAX << (32 - len);
        bits & mask == u32::from(Ipv4Addr::from(net)) & mask
    })
}

fn is_global_v6(ip: Ipv6Addr) -> bool {
    const NOT_GLOBAL: [(u128, u32); 4] = [
        (0x2001_0000 << 96, 23), // IETF protocol assignments, Teredo 2001::/32 among them
        (0x2001_0db8 << 96, 32), // documentation
        (0x2002 << 112, 16),     // 6to4: tunnels to an IPv4 address
        (0x3fff << 112, 20),     // documentation
    ];
    let bits = u128::from(ip);
    let in_net = |net: u128, len: u32| {
        let mask = u128::MAX << (128 - len);
        bits & mask == net & mask
    };
    in_net(0x2000 << 112, 3) && !NOT_GLOBAL.iter().any(|&(net, len)| in_net(net, len))
}

/// Checks a URL's host when it is an address literal (names are checked by the resolver, at
/// connection time). Returns the error to record when the URL must not be sent to.
pub fn check_literal_host(url: &reqwest::Url) -> Result<(), OutboundError> {
    match literal_host(url)? {
        Some(ip) if !is_global(ip) => Err(OutboundError::NotGlobal { host: ip.to_string() }),
        _ => Ok(()),
    }
}

/// The URL's host as an address when it is one (the URL parser has already turned spellings
/// such as `2130706433` or `0x7f.1` into the address they stand for), `None` for a name.
fn literal_host(url: &reqwest::Url) -> Result<Option<IpAddr>, OutboundError> {
    let host = url.host_str().ok_or(OutboundError::NoHost)?;
    Ok(host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok())
}

/// Resolves a name once and keeps only its globally routable addresses; a name with none left,
/// or one that does not resolve, is an error, so the client never connects anywhere unchecked.
#[derive(Debug, Default, Clone, Copy)]
pub struct GlobalOnlyResolver;

impl GlobalOnlyResolver {
    /// The addresses `host` may be reached at.
    pub async fn lookup(host: &str) -> Result<Vec<SocketAddr>, OutboundError> {
        let found = tokio::net::lookup_host((host, 0)).await.map_err(|e| {
            OutboundError::LookupFailed { host: host.to_owned(), reason: e.to_string() }
        })?;
        let global: Vec<SocketAddr> = found.filter(|a| is_global(a.ip())).collect();
        if global.is_empty() {
            return Err(OutboundError::ResolvesInward { host: host.to_owned() });
        }
        Ok(global)
    }
}

impl Resolve for GlobalOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = Self::lookup(&host).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Checks a URL the way sending to it will: an address literal must be global, and a name must
/// resolve to at least one global address.
pub async fn check_url(url: &reqwest::Url) -> Result<(), OutboundError> {
    if literal_host(url)?.is_some() {
        return check_literal_host(url);
    }
    let name = url.host_str().ok_or(OutboundError::NoHost)?;
    GlobalOnlyResolver::lookup(name).await.map(|_| ())
}

/// The client webhooks are sent with: a timeout on every request, no redirects (a redirect
/// could lead anywhere), no proxy (a proxy resolves names itself, out of the filter's reach),
/// and, unless `allow_private` (the sandbox), the [`GlobalOnlyResolver`].
pub fn webhook_client(
    timeout: Duration,
    allow_private: bool,
) -> Result<reqwest::Client, OutboundError> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent("paymux-webhooks/1");
    if !allow_private {
        builder = builder.dns_resolver(Arc::new(GlobalOnlyResolver));
    }
    builder.build().map_err(OutboundError::Client)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global(ip: &str) -> bool {
        is_global(ip.parse().unwrap_or_else(|e| panic!("{ip}: {e}")))
    }

    #[test]
    fn every_non_global_ipv4_block_is_refused_at_its_edges() {
        for ip in [
            "0.0.0.0",
            "0.255.255.255",
            "10.0.0.0",
            "10.255.255.255",
            "100.64.0.0",
            "100.127.255.255",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.0.1",
            "169.254.169.254",
            "172.16.0.0",
            "172.31.255.255",
            "192.0.0.0",
            "192.0.0.255",
            "192.0.2.1",
            "192.31.196.1",
            "192.88.99.1",
            "192.168.0.1",
            "192.168.255.255",
            "198.18.0.0",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.7",
            "224.0.0.1",
            "239.255.255.255",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(!global(ip), "{ip} must be refused");
        }
    }

    #[test]
    fn public_ipv4_addresses_next_to_the_blocks_are_allowed() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.0",
            "192.0.3.0",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "203.0.112.255",
            "223.255.255.255",
        ] {
            assert!(global(ip), "{ip} must be allowed");
        }
    }

    #[test]
    fn every_non_global_ipv6_form_is_refused() {
        for ip in [
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:8.8.8.8",
            "::127.0.0.1",
            "::8.8.8.8",
            "64:ff9b::7f00:1",
            "64:ff9b::808:808",
            "64:ff9b:1::a00:1",
            "100::1",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:2::1",
            "2001:10::1",
            "2001:1ff:ffff::1",
            "2001:db8::1",
            "2002:7f00:1::1",
            "2002:808:808::1",
            "3fff::1",
            "3fff:fff:ffff::1",
            "5f00::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "ff0e::1",
        ] {
            assert!(!global(ip), "{ip} must be refused");
        }
    }

    #[test]
    fn global_unicast_ipv6_addresses_are_allowed() {
        for ip in [
            "2001:200::1",
            "2001:4860:4860::8888",
            "2001:db7:ffff::1",
            "2001:db9::1",
            "2003::1",
            "2400:cb00::1",
            "2606:4700:4700::1111",
            "3fff:1000::1",
        ] {
            assert!(global(ip), "{ip} must be allowed");
        }
    }

    #[test]
    fn address_literals_in_urls_are_checked_and_names_left_to_the_resolver() {
        let check = |u: &str| check_literal_host(&reqwest::Url::parse(u).unwrap());
        assert!(matches!(check("http://127.0.0.1:9/hook"), Err(OutboundError::NotGlobal { .. })));
        assert!(matches!(check("http://[::1]/hook"), Err(OutboundError::NotGlobal { .. })));
        assert!(matches!(
            check("http://[::ffff:169.254.169.254]/"),
            Err(OutboundError::NotGlobal { .. })
        ));
        // The URL parser reads these spellings of 127.0.0.1 as the address they are.
        assert!(matches!(check("http://2130706433/"), Err(OutboundError::NotGlobal { .. })));
        assert!(matches!(check("http://0x7f.1/"), Err(OutboundError::NotGlobal { .. })));
        assert!(check("https://8.8.8.8/hook").is_ok());
        assert!(check("https://merchant.example/hook").is_ok());
    }

    /// A receiver on loopback that counts the requests it gets.
    async fn receiver() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        let app = axum::Router::new().fallback(move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                "ok"
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (port, hits)
    }

    #[tokio::test]
    async fn webhook_to_a_name_resolving_to_loopback_is_refused_outside_the_sandbox() {
        let (port, hits) = receiver().await;
        let url = format!("http://localhost:{port}/hook");
        let client = webhook_client(Duration::from_secs(10), false).unwrap();
        let err = client.post(&url).send().await.unwrap_err();
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&err);
        let mut refused = false;
        while let Some(e) = cause {
            refused |= matches!(e.downcast_ref(), Some(OutboundError::ResolvesInward { .. }));
            cause = e.source();
        }
        assert!(refused, "the resolver refused it: {err:?}");
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0, "nothing reached it");
        let url = reqwest::Url::parse(&url).unwrap();
        assert!(matches!(check_url(&url).await, Err(OutboundError::ResolvesInward { .. })));
    }

    #[tokio::test]
    async fn webhook_to_a_name_resolving_to_loopback_is_sent_in_the_sandbox() {
        let (port, hits) = receiver().await;
        let client = webhook_client(Duration::from_secs(10), true).unwrap();
        let res = client.post(format!("http://localhost:{port}/hook")).send().await.unwrap();
        assert!(res.status().is_success());
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_is_refused() {
        let url = reqwest::Url::parse("http://no-such-host.invalid/hook").unwrap();
        assert!(matches!(check_url(&url).await, Err(OutboundError::LookupFailed { .. })));
    }
}
