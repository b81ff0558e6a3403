//! Property tests for every parser in the web layer that reads bytes a client chose.
//!
//! The example tests beside each parser pin the cases someone thought of; these generate the
//! ones nobody did (obs-text, odd spacing, near-miss tokens, IPv6 zones, smuggled slashes) and
//! check three things every time: nothing panics, an answer is made only of what the input
//! held, and the same bytes get the same verdict whichever path they arrive by.
//!
//! Each property runs a modest number of cases so the suite stays fast; `PROPTEST_CASES` sets
//! them all for a long run.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use actix_web::dev::ServiceRequest;
use actix_web::http::header::{
    HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, COOKIE, FORWARDED, HOST,
    ORIGIN,
};
use actix_web::test::TestRequest;
use actix_web::HttpMessage as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use futures_util::StreamExt as _;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use super::bearer::{self, BearerHeader};
use super::client::{client_address, forwarded_chain, parse_node, ClientIpHeader, Proxies};
use super::cookie::{CookieConfig, Presented};
use super::csrf::{
    forgeable_body, has_synchronizer_token, synchronizer_token, CsrfConfig, Provenance, CSRF_HEADER,
};
use super::origin::Origin;
use super::require::safe_next;
use crate::engine::session_token::{SessionToken, TOKEN_LEN};

/// `cases` for CI, unless `PROPTEST_CASES` asks for a longer run: `ProptestConfig::with_cases`
/// alone would override the variable.
fn config(cases: u32) -> ProptestConfig {
    let default = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_some() {
        default
    } else {
        ProptestConfig { cases, ..default }
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies shared by the headers.

/// A byte a `HeaderValue` can hold: tab, visible ASCII and space, and obs-text.
fn header_byte() -> impl Strategy<Value = u8> {
    prop_oneof![Just(b'\t'), 0x20u8..=0x7e, 0x80u8..=0xff]
}

fn header_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(header_byte(), 0..=max)
}

fn header_value(bytes: &[u8]) -> HeaderValue {
    HeaderValue::from_bytes(bytes).expect("the strategies make only header bytes")
}

fn headers(name: &HeaderName, values: &[Vec<u8>]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for value in values {
        map.append(name.clone(), header_value(value));
    }
    map
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn in_alphabet(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// A token as the crate issues them: 35 random bytes in base64url.
fn token() -> impl Strategy<Value = String> {
    vec(any::<u8>(), 35).prop_map(|bytes| URL_SAFE_NO_PAD.encode(bytes))
}

/// Values one step away from a token, which a lenient reader could let through.
fn near_miss() -> BoxedStrategy<Vec<u8>> {
    let outside = header_byte().prop_filter("a byte base64url lacks", |b| !in_alphabet(*b));
    prop_oneof![
        (token(), 0..TOKEN_LEN, outside).prop_map(|(t, at, b)| {
            let mut v = t.into_bytes();
            v[at] = b;
            v
        }),
        token().prop_map(|t| t.as_bytes()[..TOKEN_LEN - 1].to_vec()),
        (token(), select(ALPHABET.to_vec())).prop_map(|(t, b)| [t.as_bytes(), &[b]].concat()),
        (token(), select(ALPHABET.to_vec())).prop_map(|(t, b)| [&[b], t.as_bytes()].concat()),
        // 47 characters carry 282 bits for 280: an encoder leaves the last two at zero.
        (
            token(),
            (0..64usize).prop_filter("unused bits set", |i| i % 4 != 0)
        )
            .prop_map(|(t, i)| {
                let mut v = t.into_bytes();
                v[TOKEN_LEN - 1] = ALPHABET[i];
                v
            }),
        token().prop_map(|t| format!("{t}=").into_bytes()),
        token().prop_map(|t| format!("\"{t}\"").into_bytes()),
        // The same bytes in the other base64 alphabet.
        vec(any::<u8>(), 35).prop_filter_map("uses + or /", |b| {
            let s = STANDARD_NO_PAD.encode(b);
            s.contains(['+', '/']).then(|| s.into_bytes())
        }),
        // One character percent-encoded, which a URL-decoding reader would turn back.
        (token(), 0..TOKEN_LEN).prop_map(|(t, at)| {
            let b = t.as_bytes();
            [&b[..at], format!("%{:02X}", b[at]).as_bytes(), &b[at + 1..]].concat()
        }),
    ]
    .boxed()
}

fn spacing() -> impl Strategy<Value = &'static str> {
    select(vec!["", " ", "  ", "\t", " \t "])
}

/// What a reader made of the header, comparable across readers.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Absent,
    Malformed,
    Token(String),
}

fn direct(value: &[u8]) -> Seen {
    SessionToken::parse(value).map_or(Seen::Malformed, |t| Seen::Token(t.as_str().to_owned()))
}

fn by_cookie(values: &[Vec<u8>]) -> Seen {
    match CookieConfig::default().read(&headers(&COOKIE, values)) {
        Presented::Absent => Seen::Absent,
        Presented::Malformed => Seen::Malformed,
        Presented::Token(t) => Seen::Token(t.as_str().to_owned()),
        Presented::Bearer(_) => panic!("the cookie reader named a bearer token"),
    }
}

fn by_bearer(values: &[Vec<u8>]) -> Seen {
    match bearer::read(&headers(&AUTHORIZATION, values)) {
        BearerHeader::Absent => Seen::Absent,
        BearerHeader::Malformed => Seen::Malformed,
        BearerHeader::Token(t) => Seen::Token(t.as_str().to_owned()),
    }
}

/// A token found must be one the client sent, byte for byte, and exactly a token long.
fn found_in(seen: &Seen, values: &[Vec<u8>]) -> Result<(), TestCaseError> {
    if let Seen::Token(t) = seen {
        prop_assert_eq!(t.len(), TOKEN_LEN);
        prop_assert!(values.iter().any(|v| contains(v, t.as_bytes())));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Cookie and bearer token.

fn cookie_piece() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        select(vec![
            "__Host-id",
            "=",
            ";",
            " ",
            "\t",
            "__host-id",
            "; __Host-id="
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        token().prop_map(String::into_bytes),
        near_miss(),
        header_bytes(12),
    ]
    .boxed()
}

fn cookie_header() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        header_bytes(160),
        vec(cookie_piece(), 0..8).prop_map(|pieces| pieces.concat()),
    ]
}

/// A cookie that is not the session cookie, though its name may come close.
fn other_cookie() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    let name = prop_oneof![
        header_bytes(16),
        // Cookie names are case-sensitive: these are other cookies.
        vec(any::<bool>(), 9).prop_map(|upper| {
            b"__Host-id"
                .iter()
                .zip(upper)
                .map(|(&c, up)| {
                    if up {
                        c.to_ascii_uppercase()
                    } else {
                        c.to_ascii_lowercase()
                    }
                })
                .collect()
        }),
        select(vec![
            "__Host-id2",
            "__Host-i",
            "_Host-id",
            "__Secure-id",
            "id",
            "__Host-id%20"
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
    ]
    .prop_filter("not the session cookie's name", |n| {
        !n.contains(&b';') && !n.contains(&b'=') && n.trim_ascii() != b"__Host-id"
    });
    let value = prop_oneof![
        header_bytes(24),
        token().prop_map(String::into_bytes),
        near_miss(),
    ]
    .prop_filter("a ';' ends the value", |v| !v.contains(&b';'));
    (name, value)
}

fn pair(name: &[u8], value: &[u8], spaces: [&str; 4]) -> Vec<u8> {
    [
        spaces[0].as_bytes(),
        name,
        spaces[1].as_bytes(),
        b"=",
        spaces[2].as_bytes(),
        value,
        spaces[3].as_bytes(),
    ]
    .concat()
}

/// Joins cookie pairs with odd separators, starting a new `Cookie` header where `breaks` says.
fn cookie_headers(pairs: &[Vec<u8>], separators: &[&str], breaks: &[bool]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = vec![Vec::new()];
    for (i, p) in pairs.iter().enumerate() {
        if i > 0 {
            if breaks.get(i).copied().unwrap_or(false) {
                out.push(Vec::new());
            } else {
                let sep = separators.get(i).copied().unwrap_or(";");
                out.last_mut().unwrap().extend_from_slice(sep.as_bytes());
            }
        }
        out.last_mut().unwrap().extend_from_slice(p);
    }
    out
}

fn separators() -> impl Strategy<Value = Vec<&'static str>> {
    vec(
        select(vec![";", "; ", ";;", " ; ", ";\t", "; stray;", ";=;"]),
        0..10,
    )
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn cookie_reader_survives_any_cookie_header(values in vec(cookie_header(), 0..4)) {
        let seen = by_cookie(&values);
        found_in(&seen, &values)?;
        prop_assert_eq!(seen, by_cookie(&values));
    }

    #[test]
    fn bearer_reader_survives_any_authorization_header(
        values in vec(
            prop_oneof![
                header_bytes(80),
                (spacing(), select(vec!["Bearer", "bearer", "BEARER", "Bearer:", "Bearerx"]),
                 spacing(), prop_oneof![token().prop_map(String::into_bytes), near_miss()])
                    .prop_map(|(a, s, b, v)| {
                        [a.as_bytes(), s.as_bytes(), b.as_bytes(), &v].concat()
                    }),
            ],
            0..3,
        )
    ) {
        let seen = by_bearer(&values);
        found_in(&seen, &values)?;
        prop_assert_eq!(seen, by_bearer(&values));
    }

    /// The same value is a token as a cookie exactly when it is one as a bearer token, and then
    /// it is the same token: neither path is a softer way in.
    #[test]
    fn cookie_and_bearer_judge_a_value_alike(
        value in prop_oneof![
            token().prop_map(String::into_bytes),
            (spacing(), token(), spacing())
                .prop_map(|(a, t, b)| format!("{a}{t}{b}").into_bytes()),
            near_miss(),
            header_bytes(60),
        ]
        .prop_filter("a ';' ends a cookie value", |v| !v.contains(&b';'))
    ) {
        let cookie = by_cookie(&[[b"__Host-id=".as_slice(), &value].concat()]);
        let bearer = by_bearer(&[[b"Bearer ".as_slice(), &value].concat()]);
        prop_assert_eq!(&cookie, &bearer);
        prop_assert_eq!(&cookie, &direct(value.trim_ascii()));
    }

    #[test]
    fn near_miss_tokens_are_malformed_on_both_paths(value in near_miss()) {
        let cookie = by_cookie(&[[b"__Host-id=".as_slice(), &value].concat()]);
        let bearer = by_bearer(&[[b"Bearer ".as_slice(), &value].concat()]);
        prop_assert_eq!(cookie, Seen::Malformed);
        prop_assert_eq!(bearer, Seen::Malformed);
    }

    #[test]
    fn a_session_cookie_is_found_among_any_others(
        t in token(),
        others in vec(other_cookie(), 0..8),
        at in any::<prop::sample::Index>(),
        spaces in [spacing(), spacing(), spacing(), spacing()],
        other_spaces in [spacing(), spacing(), spacing(), spacing()],
        seps in separators(),
        breaks in vec(any::<bool>(), 0..10),
    ) {
        let mut pairs: Vec<Vec<u8>> =
            others.iter().map(|(n, v)| pair(n, v, other_spaces)).collect();
        pairs.insert(at.index(pairs.len() + 1), pair(b"__Host-id", t.as_bytes(), spaces));
        let values = cookie_headers(&pairs, &seps, &breaks);
        prop_assert_eq!(by_cookie(&values), Seen::Token(t));
    }

    /// Two session cookies are one too many, whatever they hold and wherever they sit: a proxy
    /// or the app might read the other one.
    #[test]
    fn a_repeated_session_cookie_is_malformed(
        t in token(),
        second in prop_oneof![
            Just(None),
            token().prop_map(|t| Some(t.into_bytes())),
            header_bytes(50)
                .prop_filter("a ';' ends the value", |v| !v.contains(&b';'))
                .prop_map(Some),
        ],
        others in vec(other_cookie(), 0..6),
        at in [any::<prop::sample::Index>(), any::<prop::sample::Index>()],
        spaces in [spacing(), spacing(), spacing(), spacing()],
        second_spaces in [spacing(), spacing(), spacing(), spacing()],
        seps in separators(),
        breaks in vec(any::<bool>(), 0..10),
    ) {
        let mut pairs: Vec<Vec<u8>> =
            others.iter().map(|(n, v)| pair(n, v, spaces)).collect();
        pairs.insert(at[0].index(pairs.len() + 1), pair(b"__Host-id", t.as_bytes(), spaces));
        let second = second.unwrap_or_else(|| t.clone().into_bytes());
        pairs.insert(at[1].index(pairs.len() + 1), pair(b"__Host-id", &second, second_spaces));
        let values = cookie_headers(&pairs, &seps, &breaks);
        prop_assert_eq!(by_cookie(&values), Seen::Malformed);
    }

    #[test]
    fn a_bearer_token_is_found_whatever_the_scheme_case_and_spacing(
        t in token(),
        upper in vec(any::<bool>(), 6),
        lead in spacing(),
        gap in select(vec![" ", "  ", " \t", "   "]),
        trail in spacing(),
        others in vec(
            select(vec!["Basic YWxpY2U6c2VjcmV0", "Bearerish abc", "Digest x=1", ""]),
            0..2,
        ),
    ) {
        let scheme: String = "bearer"
            .chars()
            .zip(upper)
            .map(|(c, up)| if up { c.to_ascii_uppercase() } else { c })
            .collect();
        let mut values: Vec<Vec<u8>> = others.iter().map(|o| o.as_bytes().to_vec()).collect();
        values.push(format!("{lead}{scheme}{gap}{t}{trail}").into_bytes());
        prop_assert_eq!(by_bearer(&values), Seen::Token(t));
    }

    #[test]
    fn two_bearer_tokens_are_malformed(
        a in token(),
        b in prop_oneof![token(), Just(String::new())],
    ) {
        let b = if b.is_empty() { a.clone() } else { b };
        let values = vec![format!("Bearer {a}").into_bytes(), format!("bearer {b}").into_bytes()];
        prop_assert_eq!(by_bearer(&values), Seen::Malformed);
    }
}

// ---------------------------------------------------------------------------------------------
// X-Forwarded-For and Forwarded.

/// Addresses the headers and the trusted list draw from, so that they meet often.
const POOL: [&str; 6] = [
    "10.0.0.1",
    "10.0.0.2",
    "198.51.100.7",
    "2001:db8::1",
    "fe80::1",
    "::ffff:10.0.0.3",
];

fn pool_ip() -> impl Strategy<Value = IpAddr> {
    select(POOL.to_vec()).prop_map(|s| s.parse().unwrap())
}

fn some_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![pool_ip(), any::<IpAddr>()]
}

/// How a hop can be written: bare, with a port, bracketed, quoted, with a zone, or not at all.
fn node_text() -> BoxedStrategy<String> {
    let zone = "[a-z0-9]{1,6}";
    prop_oneof![
        some_ip().prop_map(|ip| ip.to_string()),
        (any::<Ipv4Addr>(), any::<u16>()).prop_map(|(ip, p)| format!("{ip}:{p}")),
        (any::<Ipv6Addr>(), any::<u16>()).prop_map(|(ip, p)| format!("\"[{ip}]:{p}\"")),
        any::<Ipv6Addr>().prop_map(|ip| format!("[{ip}]")),
        (any::<Ipv6Addr>(), zone).prop_map(|(ip, z)| format!("{ip}%{z}")),
        (any::<Ipv6Addr>(), zone, any::<u16>()).prop_map(|(ip, z, p)| format!("[{ip}%25{z}]:{p}")),
        select(vec![
            "unknown", "_hidden", "", "[", "]:80", "\"\"", "1.2.3", "::ffff"
        ])
        .prop_map(str::to_owned),
        "[ -~]{0,12}",
    ]
    .boxed()
}

fn spaced_node() -> impl Strategy<Value = String> {
    (spacing(), node_text(), spacing()).prop_map(|(a, n, b)| format!("{a}{n}{b}"))
}

fn xff_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => vec(spaced_node(), 1..5).prop_map(|nodes| nodes.join(",").into_bytes()),
        1 => header_bytes(60),
    ]
}

fn forwarded_line() -> impl Strategy<Value = Vec<u8>> {
    let param = prop_oneof![
        (select(vec!["for", "For", "FOR", " for"]), node_text())
            .prop_map(|(k, v)| format!("{k}={v}")),
        select(vec![
            "proto=https",
            "by=10.0.0.9",
            "host=app.example",
            "for"
        ])
        .prop_map(str::to_owned),
    ];
    let element = vec(param, 1..4).prop_map(|params| params.join(";"));
    prop_oneof![
        3 => vec(element, 1..4).prop_map(|elements| elements.join(", ").into_bytes()),
        1 => header_bytes(60),
    ]
}

fn which_header() -> impl Strategy<Value = ClientIpHeader> {
    prop_oneof![
        Just(ClientIpHeader::XForwardedFor),
        Just(ClientIpHeader::Forwarded)
    ]
}

fn forwarding(
    xff: &[Vec<u8>],
    forwarded: &[Vec<u8>],
    peer: Option<SocketAddr>,
) -> actix_web::HttpRequest {
    let mut req = TestRequest::default();
    if let Some(peer) = peer {
        req = req.peer_addr(peer);
    }
    for line in xff {
        req = req.append_header(("x-forwarded-for", header_value(line)));
    }
    for line in forwarded {
        req = req.append_header((FORWARDED, header_value(line)));
    }
    req.to_http_request()
}

fn proxies(trusted: &[IpAddr], header: ClientIpHeader, unix_socket: bool) -> Proxies {
    Proxies {
        // As `trust_proxies` stores them.
        addresses: trusted.iter().map(|ip| ip.to_canonical()).collect(),
        header,
        unix_socket,
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// Without a trusted proxy in front, no header a client writes moves its address.
    #[test]
    fn without_trusted_proxies_the_peer_is_the_client(
        peer in some_ip(),
        port in any::<u16>(),
        trusted in vec(some_ip(), 0..3),
        header in which_header(),
        xff in vec(xff_line(), 0..3),
        forwarded in vec(forwarded_line(), 0..3),
    ) {
        let canonical = peer.to_canonical();
        let mut trusted = trusted;
        trusted.retain(|t| t.to_canonical() != canonical);
        let req = forwarding(&xff, &forwarded, Some(SocketAddr::new(peer, port)));
        let proxies = proxies(&trusted, header, false);
        prop_assert_eq!(client_address(&req, &proxies), Some(canonical));
    }

    /// Behind trusted proxies the answer is the peer itself or an untrusted hop the configured
    /// header names; never an address out of nowhere, nor another trusted proxy.
    #[test]
    fn behind_trusted_proxies_the_client_is_the_peer_or_a_hop_in_the_header(
        peer in prop::option::weighted(0.9, pool_ip()),
        port in any::<u16>(),
        trusted in vec(pool_ip(), 0..4),
        unix_socket in any::<bool>(),
        header in which_header(),
        xff in vec(xff_line(), 0..3),
        forwarded in vec(forwarded_line(), 0..3),
    ) {
        let mut trusted = trusted;
        trusted.extend(peer);
        let req = forwarding(&xff, &forwarded, peer.map(|ip| SocketAddr::new(ip, port)));
        let proxies = proxies(&trusted, header, unix_socket);
        let found = client_address(&req, &proxies);
        prop_assert_eq!(found, client_address(&req, &proxies));
        let peer = peer.map(|ip| ip.to_canonical());
        let Some(found) = found else {
            // Only a unix socket without a readable hop has no address.
            prop_assert!(peer.is_none());
            return Ok(());
        };
        if Some(found) != peer {
            let hops = forwarded_chain(req.headers(), header);
            prop_assert!(hops.iter().flatten().any(|hop| hop.to_canonical() == found));
            prop_assert!(!proxies.addresses.contains(&found));
        }
    }

    /// Entries a client wrote left of its real address never count, however the trusted
    /// proxies add theirs: as a line of its own (HAProxy), or joined into one line (nginx,
    /// Envoy, Go), which turns an unreadable client line into an unreadable chain and so the
    /// peer.
    #[test]
    fn spoofed_hops_left_of_the_client_never_count(
        client_lines in vec(xff_line(), 0..3),
        real in any::<Ipv4Addr>().prop_filter("not a proxy", |ip| !ip.is_private()),
        inner in vec(select(vec!["10.0.0.1", "10.0.0.2"]), 0..3),
        joined in any::<bool>(),
    ) {
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let trusted: Vec<IpAddr> = vec!["10.0.0.1".parse().unwrap(), peer];
        let mut written: Vec<String> = vec![real.to_string()];
        written.extend(inner.iter().map(|s| (*s).to_owned()));
        let lines = if joined {
            let mut line = client_lines.join(b", ".as_slice());
            if !line.is_empty() {
                line.extend_from_slice(b", ");
            }
            line.extend_from_slice(written.join(", ").as_bytes());
            vec![line]
        } else {
            let mut lines = client_lines;
            lines.extend(written.iter().map(|w| w.as_bytes().to_vec()));
            lines
        };
        let req = forwarding(&lines, &[], Some(SocketAddr::new(peer, 443)));
        let found = client_address(&req, &proxies(&trusted, ClientIpHeader::XForwardedFor, false));
        prop_assert!(found == Some(IpAddr::V4(real)) || found == Some(peer), "{:?}", found);
    }

    #[test]
    fn parse_node_reads_every_spelling_of_an_address(
        ip in any::<IpAddr>(),
        port in any::<u16>(),
        form in 0..4usize,
        quoted in any::<bool>(),
        upper in any::<bool>(),
        spaces in [spacing(), spacing()],
    ) {
        let text = match (ip, form) {
            (IpAddr::V4(_), 0 | 2) | (IpAddr::V6(_), 0) => ip.to_string(),
            (IpAddr::V4(_), _) => format!("{ip}:{port}"),
            (IpAddr::V6(_), 1) => format!("[{ip}]"),
            (IpAddr::V6(_), _) => format!("[{ip}]:{port}"),
        };
        let text = if upper { text.to_ascii_uppercase() } else { text };
        let text = if quoted { format!("\"{text}\"") } else { text };
        let node = format!("{}{text}{}", spaces[0], spaces[1]);
        prop_assert_eq!(parse_node(&node), Some(ip));
    }

    /// Whatever the node, an address read from it is one written in it.
    #[test]
    fn parse_node_answers_only_with_an_address_written_in_the_node(
        node in prop_oneof![
            node_text(),
            vec(any::<char>(), 0..40).prop_map(String::from_iter),
            vec(select(vec!["[", "]", ":", "::", "%", "\"", "1", "ff", ".", "1.2.3.4", " "]), 0..10)
                .prop_map(|p| p.concat()),
        ]
    ) {
        if let Some(ip) = parse_node(&node) {
            let written = (0..=node.len())
                .filter(|&i| node.is_char_boundary(i))
                .any(|i| {
                    (i..=node.len())
                        .filter(|&j| node.is_char_boundary(j))
                        .any(|j| node[i..j].parse::<IpAddr>() == Ok(ip))
                });
            prop_assert!(written, "{:?} read from {:?}", ip, node);
        }
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// An unreadable hop stops the walk at the last trusted proxy, as the walk promises, however
    /// the hop is unreadable: ASCII garbage does, but a line holding obs-text is dropped before
    /// the walk and the hops left of it, which the client wrote, are believed.
    #[test]
    fn an_unreadable_hop_stops_the_walk_whatever_makes_it_unreadable(
        header in which_header(),
        left in vec(some_ip(), 1..3),
        garbage in prop_oneof![
            Just(b"garbage".to_vec()),
            vec(0x80u8..=0xff, 1..4),
            (any::<Ipv4Addr>(), vec(0x80u8..=0xff, 1..3))
                .prop_map(|(ip, junk)| [ip.to_string().as_bytes(), b", ", &junk].concat()),
        ],
        right in vec(select(vec!["10.0.0.1", "10.0.0.2"]), 0..2),
    ) {
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let trusted: Vec<IpAddr> = vec!["10.0.0.1".parse().unwrap(), peer];
        let write = |hop: &[u8]| match header {
            ClientIpHeader::Forwarded => [b"for=".as_slice(), hop].concat(),
            _ => hop.to_vec(),
        };
        let mut lines: Vec<Vec<u8>> =
            left.iter().map(|ip| write(ip.to_string().as_bytes())).collect();
        lines.push(write(&garbage));
        lines.extend(right.iter().map(|ip| write(ip.as_bytes())));
        let (xff, forwarded) = match header {
            ClientIpHeader::Forwarded => (vec![], lines),
            _ => (lines, vec![]),
        };
        let req = forwarding(&xff, &forwarded, Some(SocketAddr::new(peer, 443)));
        let found = client_address(&req, &proxies(&trusted, header, false));
        prop_assert_eq!(found, Some(peer));
    }

    /// A zone names a link-local interface; the address before it is the one the node names.
    #[test]
    fn a_zoned_address_is_read_as_itself_or_not_at_all(
        ip in any::<Ipv6Addr>(),
        zone in "[a-z0-9]{1,8}",
        port in any::<u16>(),
        form in 0..4usize,
    ) {
        let node = match form {
            0 => format!("{ip}%{zone}"),
            1 => format!("[{ip}%{zone}]"),
            2 => format!("[{ip}%{zone}]:{port}"),
            _ => format!("\"[{ip}%25{zone}]:{port}\""),
        };
        let read = parse_node(&node);
        prop_assert!(
            read.is_none() || read == Some(IpAddr::V6(ip)),
            "{:?} read from {:?}", read, node
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Origin, Host and the CSRF provenance.

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9-]{1,10}(\\.[a-zA-Z0-9-]{1,10}){0,3}",
        any::<Ipv4Addr>().prop_map(|ip| ip.to_string()),
        any::<Ipv6Addr>().prop_map(|ip| format!("[{ip}]")),
    ]
}

fn scheme_case() -> impl Strategy<Value = String> {
    (select(vec!["http", "https"]), vec(any::<bool>(), 5)).prop_map(|(s, upper)| {
        s.chars()
            .zip(upper.into_iter().chain(std::iter::repeat(false)))
            .map(|(c, up)| if up { c.to_ascii_uppercase() } else { c })
            .collect()
    })
}

fn origin_text() -> BoxedStrategy<String> {
    let piece = select(vec![
        "http",
        "https",
        "HTTPS",
        "ftp",
        "://",
        ":",
        "//",
        "/",
        "?",
        "#",
        "@",
        "\\",
        " ",
        "[",
        "]",
        "::1",
        "app.example",
        "APP.example",
        "80",
        "443",
        "0",
        "65535",
        "65536",
        "+443",
        "08080",
        "null",
        "é",
        "%2F",
    ]);
    prop_oneof![
        vec(any::<char>(), 0..40).prop_map(String::from_iter),
        vec(piece, 0..8).prop_map(|p| p.concat()),
        (
            scheme_case(),
            host(),
            prop::option::of(any::<u16>()),
            select(vec!["", "/", " "])
        )
            .prop_map(|(s, h, p, tail)| match p {
                Some(p) => format!("{s}://{h}:{p}{tail}"),
                None => format!("{s}://{h}{tail}"),
            }),
    ]
    .boxed()
}

proptest! {
    #![proptest_config(config(1000))]

    /// `Debug` writes an origin back as `Scheme://host:port`, the form `parse` reads: what
    /// parsing kept is all there is to the origin, and its host is the input's.
    #[test]
    fn a_parsed_origin_round_trips_through_its_own_serialisation(text in origin_text()) {
        let Some(origin) = Origin::parse(&text) else { return Ok(()) };
        prop_assert_eq!(Origin::parse(&text), Some(origin.clone()));
        let written = format!("{origin:?}");
        prop_assert_eq!(Origin::parse(&written), Some(origin.clone()));
        let host = written.split_once("://").unwrap().1.rsplit_once(':').unwrap().0;
        prop_assert!(text.to_ascii_lowercase().contains(host), "{} from {:?}", host, text);
    }

    /// The page's origin and the request's own are read alike, so a same-origin request
    /// always compares equal, and anything one step away never does.
    #[test]
    fn an_origin_and_the_request_it_names_agree(
        scheme in scheme_case(),
        host in host(),
        port in prop::option::of(1u16..),
        upper in any::<bool>(),
        slash in any::<bool>(),
    ) {
        let authority = match port {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let own = Origin::of_request(&scheme, &authority);
        prop_assert!(own.is_some());
        let spelled = format!("{scheme}://{authority}{}", if slash { "/" } else { "" });
        let spelled = if upper { spelled.to_ascii_uppercase() } else { spelled };
        prop_assert_eq!(Origin::parse(&spelled), own.clone());
        let https = scheme.eq_ignore_ascii_case("https");
        let default = if https { 443 } else { 80 };
        let explicit = format!("{scheme}://{host}:{}", port.unwrap_or(default));
        prop_assert_eq!(Origin::parse(&explicit), own.clone());

        let other_scheme = if https { "http" } else { "https" };
        let near = [
            format!("{other_scheme}://{authority}"),
            format!("{scheme}://{host}:{}", port.unwrap_or(default).wrapping_add(1).max(1)),
            format!("{scheme}://{host}.evil.example"),
            format!("{scheme}://evil.example/{authority}"),
            format!("{scheme}://user@{authority}"),
            format!("{scheme}://{authority}x"),
        ];
        for text in near {
            prop_assert_ne!(Origin::parse(&text), own.clone(), "{}", text);
        }
    }
}

fn fetch_site() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop::option::of(prop_oneof![
        select(vec![
            "same-origin",
            "none",
            "same-site",
            "cross-site",
            "Same-Origin",
            ""
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        header_bytes(16),
    ])
}

fn judge(
    host: Option<&[u8]>,
    origin: Option<&[u8]>,
    site: Option<&[u8]>,
    trusted: &[Origin],
) -> Provenance {
    let mut req = TestRequest::post().uri("/account");
    if let Some(host) = host {
        req = req.insert_header((HOST, header_value(host)));
    }
    if let Some(origin) = origin {
        req = req.insert_header((ORIGIN, header_value(origin)));
    }
    if let Some(site) = site {
        req = req.insert_header(("sec-fetch-site", header_value(site)));
    }
    let config = CsrfConfig {
        trusted_origins: trusted.to_vec(),
        ..CsrfConfig::default()
    };
    config.provenance(&req.to_srv_request())
}

proptest! {
    #![proptest_config(config(512))]

    /// Whatever the headers, a request passes for same-origin only when the browser says so,
    /// or its `Origin` is trusted, or (without fetch metadata) it names the `Host` exactly.
    #[test]
    fn provenance_vouches_only_for_the_host_or_a_trusted_origin(
        host in prop::option::of(prop_oneof![
            host().prop_map(String::into_bytes),
            (host(), any::<u16>()).prop_map(|(h, p)| format!("{h}:{p}").into_bytes()),
            header_bytes(30),
        ]),
        origin in prop::option::of(prop_oneof![
            // Control characters cannot be in a header at all.
            origin_text().prop_map(|o| {
                o.chars().filter(|c| *c == '\t' || !c.is_control()).collect::<String>().into_bytes()
            }),
            header_bytes(40),
        ]),
        site in fetch_site(),
        trusted in vec(origin_text(), 0..2),
    ) {
        let trusted: Vec<Origin> = trusted.iter().filter_map(|t| Origin::parse(t)).collect();
        let got = judge(host.as_deref(), origin.as_deref(), site.as_deref(), &trusted);
        prop_assert_eq!(got, judge(host.as_deref(), origin.as_deref(), site.as_deref(), &trusted));
        let readable = |v: &[u8]| header_value(v).to_str().map(str::to_owned).ok();
        let parsed = origin.as_deref().map(|o| readable(o).and_then(|o| Origin::parse(&o)));
        let own = host
            .as_deref()
            .and_then(readable)
            .and_then(|h| Origin::of_request("http", &h));
        let expected = match (&parsed, &site) {
            (Some(Some(o)), _) if trusted.contains(o) => Provenance::SameOrigin,
            (_, Some(s)) if s == b"same-origin" || s == b"none" => Provenance::SameOrigin,
            (_, Some(_)) => Provenance::CrossSite,
            (None, None) => Provenance::Unknown,
            (Some(Some(o)), None) if own.as_ref() == Some(o) => Provenance::SameOrigin,
            (Some(_), None) => Provenance::CrossSite,
        };
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn an_origin_one_step_from_the_host_is_cross_site(
        host in host(),
        port in prop::option::of(1u16..),
        step in 0..7usize,
    ) {
        let authority = match port {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let same = format!("http://{authority}");
        prop_assert_eq!(
            judge(Some(authority.as_bytes()), Some(same.as_bytes()), None, &[]),
            Provenance::SameOrigin
        );
        let other_port = port.unwrap_or(80).wrapping_add(1).max(1);
        let near = match step {
            0 => format!("https://{authority}"),
            1 => format!("http://{host}:{other_port}"),
            2 => format!("http://{host}.evil.example"),
            3 => format!("http://evil.example/{authority}"),
            4 => format!("http://user@{authority}"),
            5 => "null".to_owned(),
            _ => format!("http://{authority}:{other_port}"),
        };
        prop_assert_eq!(
            judge(Some(authority.as_bytes()), Some(near.as_bytes()), None, &[]),
            Provenance::CrossSite,
            "{}", near
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The synchronizer token in a header or a form body.

/// Runs the search on a fresh request and returns its verdict and the body the handler would
/// read afterwards.
fn search(
    content_type: Option<&str>,
    header: Option<&[u8]>,
    body: &[u8],
    expected: &str,
) -> (bool, Vec<u8>) {
    let mut req = TestRequest::post().set_payload(body.to_vec());
    if let Some(ct) = content_type {
        req = req.insert_header((CONTENT_TYPE, ct));
    }
    if let Some(h) = header {
        req = req.insert_header((CSRF_HEADER, header_value(h)));
    }
    let mut req: ServiceRequest = req.to_srv_request();
    actix_web::rt::System::new().block_on(async {
        let found = has_synchronizer_token(&mut req, expected).await;
        let mut rest = Vec::new();
        let mut payload = req.take_payload();
        while let Some(chunk) = payload.next().await {
            rest.extend_from_slice(&chunk.expect("an in-memory body"));
        }
        (found, rest)
    })
}

fn expected_token() -> impl Strategy<Value = String> {
    token().prop_map(|t| synchronizer_token(&SessionToken::parse(t.as_bytes()).unwrap()))
}

/// Form fields other than the token's, written as a browser or a hand-made client might.
fn form_fields() -> impl Strategy<Value = Vec<String>> {
    let field = prop_oneof![
        (".{0,12}", ".{0,16}").prop_map(|(k, v)| serde_urlencoded::to_string([(k, v)]).unwrap()),
        "[ -~]{0,20}".prop_map(|s| s.replace('&', "")),
        select(vec![
            "",
            "=",
            "csrf_tokens=x",
            "xcsrf_token=y",
            "%ZZ=1",
            "a=%",
            "+=+"
        ])
        .prop_map(str::to_owned),
    ];
    vec(field, 0..6).prop_filter("no other field named csrf_token", |fields| {
        fields.iter().all(|f| {
            serde_urlencoded::from_str::<Vec<(String, String)>>(f)
                .map_or(true, |pairs| pairs.iter().all(|(k, _)| k != "csrf_token"))
        })
    })
}

/// Ways to write the field's name that decode to it.
fn token_field_name() -> impl Strategy<Value = &'static str> {
    select(vec![
        "csrf_token",
        "csrf%5Ftoken",
        "csrf%5ftoken",
        "%63srf_token",
        "csrf_tok%65n",
    ])
}

fn form_body(fields: &[String], token_field: &str, at: prop::sample::Index) -> String {
    let mut fields = fields.to_vec();
    fields.insert(at.index(fields.len() + 1), token_field.to_owned());
    fields.join("&")
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn the_form_token_is_found_wherever_it_sits_and_the_body_is_given_back(
        expected in expected_token(),
        fields in form_fields(),
        name in token_field_name(),
        at in any::<prop::sample::Index>(),
        params in select(vec!["", "; charset=UTF-8", ";charset=utf-8"]),
    ) {
        let body = form_body(&fields, &format!("{name}={expected}"), at);
        let content_type = format!("application/x-www-form-urlencoded{params}");
        let (found, rest) = search(Some(&content_type), None, body.as_bytes(), &expected);
        prop_assert!(found, "{}", body);
        prop_assert_eq!(rest, body.into_bytes());
    }

    /// Only the first `csrf_token` field counts, and it must be the token exactly.
    #[test]
    fn a_wrong_first_form_token_is_refused(
        expected in expected_token(),
        wrong in prop_oneof![
            near_miss().prop_map(|v| String::from_utf8_lossy(&v).into_owned()),
            ".{0,50}",
            Just(String::new()),
        ],
        later_right in any::<bool>(),
        fields in form_fields(),
        at in any::<prop::sample::Index>(),
    ) {
        prop_assume!(wrong != expected);
        let wrong_field = serde_urlencoded::to_string([("csrf_token", &wrong)]).unwrap();
        let mut body = form_body(&fields, &wrong_field, at);
        if later_right {
            body.push_str(&format!("&csrf_token={expected}"));
        }
        let (found, rest) = search(
            Some("application/x-www-form-urlencoded"),
            None,
            body.as_bytes(),
            &expected,
        );
        prop_assert!(!found, "{}", body);
        prop_assert_eq!(rest, body.into_bytes());
    }

    /// Any body, under any content type, is read without a panic and handed on unchanged.
    #[test]
    fn any_body_is_searched_without_panic_and_given_back(
        expected in expected_token(),
        body in prop_oneof![
            vec(any::<u8>(), 0..2048),
            vec(select(vec!["csrf_token", "=", "&", "%", "%5F", "+", ";", "\u{0}", "é"]), 0..20)
                .prop_map(|p| p.concat().into_bytes()),
        ],
        content_type in prop::option::of(select(vec![
            "application/x-www-form-urlencoded",
            "Application/X-WWW-Form-Urlencoded",
            "multipart/form-data; boundary=x",
            "text/plain",
            "application/json",
        ])),
    ) {
        let (found, rest) = search(content_type, None, &body, &expected);
        prop_assert!(!found);
        prop_assert_eq!(rest, body);
    }

    /// The read stops at 64 KiB: a body one byte over is refused even with the token first.
    #[test]
    fn forms_over_the_limit_are_refused(
        expected in expected_token(),
        len in (64 * 1024 - 8)..(64 * 1024 + 8usize),
    ) {
        let mut body = format!("csrf_token={expected}&pad=").into_bytes();
        body.resize(len, b'a');
        let (found, _) = search(Some("application/x-www-form-urlencoded"), None, &body, &expected);
        prop_assert_eq!(found, len <= 64 * 1024);
    }

    #[test]
    fn the_header_token_is_compared_whole(
        expected in expected_token(),
        header in prop::option::of(header_bytes(50)),
        cut in 0..44usize,
        flip in prop::option::of((0..43usize, header_byte())),
    ) {
        let mut candidates: Vec<Vec<u8>> = vec![expected.as_bytes().to_vec()];
        candidates.push(expected.as_bytes()[..cut.min(expected.len())].to_vec());
        if let Some((at, b)) = flip {
            let mut v = expected.as_bytes().to_vec();
            v[at] = b;
            candidates.push(v);
        }
        candidates.push(format!("{expected} ").into_bytes());
        candidates.extend(header);
        for value in candidates {
            let (found, _) = search(None, Some(&value), b"", &expected);
            prop_assert_eq!(found, value == expected.as_bytes(), "{:?}", value);
        }
    }

    /// The screen treats any spelling of the form content type as a form a page could forge
    /// and then asks for the token; the search must look for it under that same spelling, or
    /// a form that carries the token is refused.
    #[test]
    fn every_form_the_screen_asks_a_token_of_is_searched_for_it(
        expected in expected_token(),
        upper in vec(any::<bool>(), 33),
    ) {
        let content_type: String = "application/x-www-form-urlencoded"
            .chars()
            .zip(upper)
            .map(|(c, up)| if up { c.to_ascii_uppercase() } else { c })
            .collect();
        let req = TestRequest::post().insert_header((CONTENT_TYPE, content_type.as_str()));
        prop_assert!(forgeable_body(req.to_srv_request().headers()));
        let body = format!("csrf_token={expected}");
        let (found, _) = search(Some(&content_type), None, body.as_bytes(), &expected);
        prop_assert!(found, "{}", content_type);
    }
}

// ---------------------------------------------------------------------------------------------
// `next` after login.

fn next_text() -> BoxedStrategy<String> {
    let piece = select(vec![
        "/",
        "//",
        "\\",
        "/\\",
        "\\/",
        "\t",
        "\n",
        "\r",
        " ",
        "%2F",
        "%2f",
        "%5C",
        "%09",
        "%0A",
        "http:",
        "https://",
        "javascript:",
        "data:",
        "//evil.example",
        "evil.example",
        "é",
        "\u{202e}",
        "\u{0}",
        "\u{7f}",
        "\u{a0}",
        "\u{3000}",
        "?",
        "#",
        "@",
        ":",
        ".",
        "..",
        "a",
        "～",
        "／",
        "＼",
    ]);
    prop_oneof![
        vec(piece, 0..10).prop_map(|p| p.concat()),
        vec(any::<char>(), 0..40).prop_map(String::from_iter),
        "/[ -~]{0,60}",
        // Around the length cap.
        (2040..2060usize).prop_map(|n| format!("/{}", "a".repeat(n - 1))),
    ]
    .boxed()
}

/// What a browser does to a URL before resolving it: drops tabs and newlines anywhere, and
/// reads `\` as `/` in http(s) URLs.
fn as_a_browser_reads(next: &str) -> String {
    next.chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .map(|c| if c == '\\' { '/' } else { c })
        .collect()
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn safe_next_answers_with_a_local_path_or_nothing(next in next_text()) {
        let Some(safe) = safe_next(&next) else { return Ok(()) };
        // The very input, not a rewrite of it.
        prop_assert_eq!(safe.as_ptr(), next.as_ptr());
        prop_assert_eq!(safe.len(), next.len());
        prop_assert!(safe.len() <= 2048);
        prop_assert!(safe.bytes().all(|b| b.is_ascii_graphic()), "{:?}", safe);
        let read = as_a_browser_reads(safe);
        prop_assert!(read.starts_with('/') && !read.starts_with("//"), "{:?}", safe);
    }

    /// Not stricter than it says: every path of visible ASCII that starts with one `/` and
    /// has no `\` passes.
    #[test]
    fn safe_next_keeps_every_plain_local_path(
        rest in "[!-\\[\\]-~]{0,100}".prop_filter("one leading slash", |r| !r.starts_with('/')),
    ) {
        let next = format!("/{rest}");
        prop_assert_eq!(safe_next(&next), Some(next.as_str()));
    }
}

// ---------------------------------------------------------------------------------------------
// What the long property runs found, kept as the exact inputs they shrank to, so that the
// findings stay fixed whatever cases a later run happens to draw.

/// `X-Forwarded-For` lines `["198.51.100.7", "\x80"]` from a trusted peer gave 198.51.100.7,
/// where `["198.51.100.7", "garbage"]` gave the peer: a line holding obs-text was skipped
/// instead of stopping the walk.
#[test]
fn finding_a_forwarding_line_of_obs_text_stops_the_walk() {
    let peer: IpAddr = "10.0.0.2".parse().unwrap();
    let trusted = ["10.0.0.1".parse().unwrap(), peer];
    let cases: [(ClientIpHeader, &[u8], &[u8]); 4] = [
        (ClientIpHeader::XForwardedFor, b"198.51.100.7", b"\x80"),
        (ClientIpHeader::XForwardedFor, b"198.51.100.7", b"garbage"),
        (ClientIpHeader::Forwarded, b"for=198.51.100.7", b"for=\x80"),
        (
            ClientIpHeader::Forwarded,
            b"for=198.51.100.7",
            b"for=garbage",
        ),
    ];
    for (header, client_wrote, unreadable) in cases {
        let lines = vec![client_wrote.to_vec(), unreadable.to_vec()];
        let (xff, forwarded) = match header {
            ClientIpHeader::Forwarded => (vec![], lines),
            _ => (lines, vec![]),
        };
        let req = forwarding(&xff, &forwarded, Some(SocketAddr::new(peer, 443)));
        let client: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(
            forwarded_chain(req.headers(), header),
            [Some(client), None],
            "{header:?} {unreadable:?}"
        );
        assert_eq!(
            client_address(&req, &proxies(&trusted, header, false)),
            Some(peer),
            "{header:?} {unreadable:?}"
        );
    }
}

/// `parse_node("::ffff:0.0.0.0%0")` was `::ffff`: an unbracketed IPv6 address with a zone lost
/// its last group to a port.
#[test]
fn finding_a_zoned_ipv6_address_is_not_an_address_and_a_port() {
    for node in ["::ffff:0.0.0.0%0", "fe80::1%eth0", "2001:db8::7%1"] {
        let read = parse_node(node);
        let whole: Ipv6Addr = node.split_once('%').unwrap().0.parse().unwrap();
        assert!(
            read.is_none() || read == Some(IpAddr::V6(whole)),
            "{read:?} read from {node:?}"
        );
    }
    // An IPv4 address still takes an unbracketed port.
    assert_eq!(parse_node("192.0.2.1:8080"), "192.0.2.1".parse().ok());
}

/// A form sent as `application/x-www-form-urlencodeD` with the right `csrf_token` was refused:
/// the screen took the content type in any case, the search only in lower case.
#[test]
fn finding_a_form_content_type_in_any_case_is_searched_for_the_token() {
    let token = SessionToken::generate().unwrap();
    let expected = synchronizer_token(&token);
    for content_type in [
        "application/x-www-form-urlencodeD",
        "Application/X-WWW-Form-Urlencoded",
        "APPLICATION/X-WWW-FORM-URLENCODED; charset=utf-8",
    ] {
        let req = TestRequest::post().insert_header((CONTENT_TYPE, content_type));
        assert!(
            forgeable_body(req.to_srv_request().headers()),
            "{content_type}"
        );
        let body = format!("csrf_token={expected}");
        let (found, rest) = search(Some(content_type), None, body.as_bytes(), &expected);
        assert!(found, "{content_type}");
        assert_eq!(rest, body.as_bytes());
    }
}
