//! Which address a request comes from, behind reverse proxies or not.

use std::net::IpAddr;

use actix_web::http::header::{HeaderMap, HeaderValue, FORWARDED};
use actix_web::HttpRequest;

/// Which header a trusted proxy records the client's address in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientIpHeader {
    /// `X-Forwarded-For`, as nginx, HAProxy, most load balancers and CDNs write it.
    #[default]
    XForwardedFor,
    /// `Forwarded` (RFC 7239), `for=` parameters.
    Forwarded,
}

/// Where forwarding headers are believed.
#[derive(Clone, Debug, Default)]
pub(crate) struct Proxies {
    pub(crate) addresses: Vec<IpAddr>,
    pub(crate) header: ClientIpHeader,
    /// Trust connections without a peer address: a reverse proxy on a unix socket.
    pub(crate) unix_socket: bool,
}

/// The client's address: the TCP peer, or, when the peer is a trusted proxy, the nearest
/// address in the forwarding chain that is not one. `None` for an untrusted connection without
/// a peer address.
pub(crate) fn client_address(req: &HttpRequest, proxies: &Proxies) -> Option<IpAddr> {
    let trusted = &proxies.addresses;
    let peer = match req.peer_addr() {
        Some(addr) => addr.ip().to_canonical(),
        None if proxies.unix_socket => return walk_chain(req.headers(), proxies, None),
        None => return None,
    };
    if !trusted.contains(&peer) {
        return Some(peer);
    }
    walk_chain(req.headers(), proxies, Some(peer))
}

/// The nearest untrusted hop in the proxies' header, or `last_proxy` if there is none.
fn walk_chain(
    headers: &HeaderMap,
    proxies: &Proxies,
    last_proxy: Option<IpAddr>,
) -> Option<IpAddr> {
    let trusted = &proxies.addresses;
    let chain = forwarded_chain(headers, proxies.header);
    // Walk from the nearest hop outwards; everything before the first untrusted hop was written
    // by our own proxies, everything after it by whoever the client is.
    for hop in chain.iter().rev() {
        match hop.map(|ip| ip.to_canonical()) {
            Some(ip) if trusted.contains(&ip) => continue,
            Some(ip) => return Some(ip),
            // A hop we cannot read: stop at the last proxy we trust rather than guess.
            None => break,
        }
    }
    last_proxy
}

/// The addresses a request passed through, farthest first, from the header the proxies write.
/// `None` marks an entry that is not an IP address.
pub(super) fn forwarded_chain(headers: &HeaderMap, header: ClientIpHeader) -> Vec<Option<IpAddr>> {
    if header == ClientIpHeader::Forwarded {
        return hops(headers.get_all(FORWARDED), |element| {
            element
                .split(';')
                .find_map(|pair| {
                    let (name, value) = pair.trim().split_once('=')?;
                    name.eq_ignore_ascii_case("for").then_some(value)
                })
                .and_then(parse_node)
        });
    }
    hops(headers.get_all("x-forwarded-for"), parse_node)
}

/// Every comma-separated entry of every line, read with `read`. A line that is not text (it
/// holds obs-text bytes) counts as one unreadable hop rather than vanishing: dropping it would
/// let the entries a client wrote before it pass for our proxies' own.
fn hops<'a>(
    lines: impl Iterator<Item = &'a HeaderValue>,
    read: impl Fn(&str) -> Option<IpAddr>,
) -> Vec<Option<IpAddr>> {
    let mut chain = Vec::new();
    for line in lines {
        match line.to_str() {
            Ok(text) => chain.extend(text.split(',').map(&read)),
            Err(_) => chain.push(None),
        }
    }
    chain
}

/// An address from a `Forwarded` node or `X-Forwarded-For` entry: `192.0.2.1`,
/// `"192.0.2.1:8080"`, `"[2001:db8::1]:443"` or `2001:db8::1`.
pub(super) fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim().trim_matches('"');
    if let Ok(ip) = node.parse() {
        return Some(ip);
    }
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    // Only an IPv4 address takes an unbracketed port: in anything with more colons, the last
    // group is part of an IPv6 address (perhaps one with a zone), not a port.
    let (host, port) = node.rsplit_once(':')?;
    if host.contains(':') || port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn behind(addresses: &[&str], header: ClientIpHeader) -> Proxies {
        Proxies {
            addresses: addresses.iter().map(|a| ip(a)).collect(),
            header,
            unix_socket: false,
        }
    }

    fn request(peer: &str, headers: &[(&str, &str)]) -> HttpRequest {
        let mut req = TestRequest::default().peer_addr(peer.parse().unwrap());
        for (name, value) in headers {
            req = req.insert_header((*name, *value));
        }
        req.to_http_request()
    }

    #[test]
    fn the_peer_is_the_client_unless_it_is_a_trusted_proxy() {
        let req = request("203.0.113.9:5000", &[("x-forwarded-for", "1.2.3.4")]);
        let none = Proxies::default();
        assert_eq!(client_address(&req, &none), Some(ip("203.0.113.9")));
        let trusted = behind(&["203.0.113.9"], ClientIpHeader::XForwardedFor);
        assert_eq!(client_address(&req, &trusted), Some(ip("1.2.3.4")));
    }

    #[test]
    fn spoofed_entries_left_of_the_real_client_are_ignored() {
        // The client sent "X-Forwarded-For: 6.6.6.6"; our proxies appended the real address.
        let req = request(
            "10.0.0.2:5000",
            &[("x-forwarded-for", "6.6.6.6, 198.51.100.4, 10.0.0.3")],
        );
        let trusted = behind(&["10.0.0.2", "10.0.0.3"], ClientIpHeader::XForwardedFor);
        assert_eq!(client_address(&req, &trusted), Some(ip("198.51.100.4")));
    }

    #[test]
    fn only_the_configured_header_counts() {
        // Proxies append to X-Forwarded-For and pass a client's own Forwarded through.
        let req = request(
            "10.0.0.2:5000",
            &[
                ("forwarded", "for=6.6.6.6"),
                ("x-forwarded-for", "198.51.100.4"),
            ],
        );
        let xff = behind(&["10.0.0.2"], ClientIpHeader::XForwardedFor);
        assert_eq!(client_address(&req, &xff), Some(ip("198.51.100.4")));
        let forwarded = behind(&["10.0.0.2"], ClientIpHeader::Forwarded);
        assert_eq!(client_address(&req, &forwarded), Some(ip("6.6.6.6")));
    }

    #[test]
    fn forwarded_parses_ports_brackets_and_quotes() {
        let req = request(
            "10.0.0.2:5000",
            &[(
                "forwarded",
                r#"for=6.6.6.6, for="[2001:db8::7]:4711";proto=https"#,
            )],
        );
        let trusted = behind(&["10.0.0.2"], ClientIpHeader::Forwarded);
        assert_eq!(client_address(&req, &trusted), Some(ip("2001:db8::7")));
    }

    #[test]
    fn unreadable_hops_stop_the_walk_at_the_proxy() {
        let req = request("10.0.0.2:5000", &[("x-forwarded-for", "1.2.3.4, garbage")]);
        let trusted = behind(&["10.0.0.2"], ClientIpHeader::XForwardedFor);
        assert_eq!(client_address(&req, &trusted), Some(ip("10.0.0.2")));
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_proxies() {
        let req = request(
            "[::ffff:10.0.0.2]:5000",
            &[("x-forwarded-for", "198.51.100.9")],
        );
        let trusted = behind(&["10.0.0.2"], ClientIpHeader::XForwardedFor);
        assert_eq!(client_address(&req, &trusted), Some(ip("198.51.100.9")));
        let mapped_client = request("[::ffff:198.51.100.9]:5000", &[]);
        assert_eq!(
            client_address(&mapped_client, &Proxies::default()),
            Some(ip("198.51.100.9"))
        );
    }

    #[test]
    fn unix_socket_connections_use_the_header_only_when_trusted() {
        let req = TestRequest::default()
            .insert_header(("x-forwarded-for", "198.51.100.10"))
            .to_http_request();
        assert_eq!(client_address(&req, &Proxies::default()), None);
        let socket = Proxies {
            unix_socket: true,
            ..Proxies::default()
        };
        assert_eq!(client_address(&req, &socket), Some(ip("198.51.100.10")));
    }
}
