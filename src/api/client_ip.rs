//! The shopper's IP address as pisgate tells it to the bank (`PSU-IP-Address`).
//!
//! `X-Forwarded-For` is only believed from a peer in `server.trusted_proxies` (empty by
//! default). Then the header is read from the right, skipping trusted hops, and the first
//! address that is not a trusted proxy is the client: the addresses left of it were written
//! by the client itself and prove nothing. From any other peer, or with no header, the
//! peer's own address is the answer. It never fails a request: an address it cannot read is
//! simply not sent.

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

/// The TCP peer of this request, when the server was started with connection info.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| canonical(addr.ip())),
        ))
    }
}

/// An IPv4 address mapped into IPv6 (`::ffff:10.0.0.1`, as a dual-stack listener reports
/// IPv4 peers) is the IPv4 address, so that IPv4 CIDRs match it.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
    proxies.iter().any(|net| net.contains(&ip))
}

/// The client's address: see the module docs.
pub fn client_ip(peer: Peer, headers: &HeaderMap, proxies: &[IpNet]) -> Option<IpAddr> {
    let peer = peer.0?;
    if !trusted(peer, proxies) {
        return Some(peer);
    }
    let mut hops: Vec<IpAddr> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(text) = value.to_str() else {
            return Some(peer);
        };
        for item in text.split(',') {
            match item.trim().parse::<IpAddr>() {
                Ok(ip) => hops.push(canonical(ip)),
                // A hop we cannot read: nothing left of it can be placed.
                Err(_) => hops.clear(),
            }
        }
    }
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        client = hop;
        if !trusted(hop, proxies) {
            break;
        }
    }
    Some(client)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn the_header_is_ignored_from_an_untrusted_peer_and_by_default() {
        let h = headers(&["203.0.113.9"]);
        let peer = Peer(Some(ip("198.51.100.4")));
        assert_eq!(client_ip(peer, &h, &[]), Some(ip("198.51.100.4")));
        assert_eq!(
            client_ip(peer, &h, &nets(&["10.0.0.0/8"])),
            Some(ip("198.51.100.4"))
        );
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client() {
        let proxies = nets(&["10.0.0.0/8"]);
        let peer = Peer(Some(ip("10.0.0.2")));
        // The shopper forged the first entry; the ingress appended the real one.
        let h = headers(&["1.2.3.4, 203.0.113.9, 10.0.0.7"]);
        assert_eq!(client_ip(peer, &h, &proxies), Some(ip("203.0.113.9")));
        // Several headers read as one list, in order.
        let h = headers(&["1.2.3.4", "203.0.113.9"]);
        assert_eq!(client_ip(peer, &h, &proxies), Some(ip("203.0.113.9")));
        // No header: the proxy itself is all we know.
        assert_eq!(
            client_ip(peer, &headers(&[]), &proxies),
            Some(ip("10.0.0.2"))
        );
        // Only proxies: the leftmost one.
        let h = headers(&["10.9.9.9, 10.0.0.7"]);
        assert_eq!(client_ip(peer, &h, &proxies), Some(ip("10.9.9.9")));
    }

    #[test]
    fn garbage_in_the_header_never_becomes_the_client() {
        let proxies = nets(&["10.0.0.0/8"]);
        let peer = Peer(Some(ip("10.0.0.2")));
        let h = headers(&["203.0.113.9, not-an-ip"]);
        assert_eq!(client_ip(peer, &h, &proxies), Some(ip("10.0.0.2")));
        let h = headers(&["junk, 203.0.113.9"]);
        assert_eq!(client_ip(peer, &h, &proxies), Some(ip("203.0.113.9")));
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_networks() {
        let proxies = nets(&["10.0.0.0/8"]);
        let peer = Peer(Some(canonical(ip("::ffff:10.0.0.2"))));
        let h = headers(&["203.0.113.9"]);
        assert_eq!(client_ip(peer, &h, &proxies), Some(ip("203.0.113.9")));
    }

    #[test]
    fn without_connection_info_nothing_is_sent() {
        assert_eq!(client_ip(Peer(None), &headers(&["203.0.113.9"]), &[]), None);
    }
}
