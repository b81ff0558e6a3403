//! Property tests for every parser in the web layer that reads bytes a client chose.
//!
//! The example tests beside each parser pin the cases someone thought of; these generate the
//! ones nobody did (obs-text, odd spacing, near-miss tokens, IPv6 zones, smuggled slashes) and
//! check three things every time: nothing panics, an answer is made only of what the input
//! held, and the same bytes get the same verdict whichever path they arrive by.
//!
//! Each property runs a modest number of cases so the suite stays fast; `PROPTEST_CASES` sets
//! them all for a long run.

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, COOKIE};
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use super::bearer::{self, BearerHeader};
use super::cookie::{CookieConfig, Presented};
use crate::engine::token::{SessionToken, TOKEN_LEN};

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
