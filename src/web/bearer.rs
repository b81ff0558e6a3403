//! Reading `Authorization: Bearer <token>` and answering a bad one (RFC 6750).

use actix_web::http::header::{HeaderMap, HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use actix_web::HttpResponse;

use super::response::json_error;
use crate::engine::session_token::{SessionToken, TOKEN_LEN};

/// What the `Authorization` header says about a bearer token.
pub(crate) enum BearerHeader {
    /// No `Authorization` header with the `Bearer` scheme; another scheme is the app's business.
    Absent,
    /// The `Bearer` scheme with something this crate never issued, or given twice. Never looked
    /// up.
    Malformed,
    Token(SessionToken),
}

/// Finds a bearer token in the raw `Authorization` headers, without allocating.
pub(crate) fn read(headers: &HeaderMap) -> BearerHeader {
    let mut found: Option<&[u8]> = None;
    for header in headers.get_all(AUTHORIZATION) {
        let Some(credentials) = bearer_credentials(header.as_bytes()) else {
            continue;
        };
        if found.is_some() {
            // Which one would a proxy or the app have used?
            return BearerHeader::Malformed;
        }
        found = Some(credentials);
    }
    match found {
        None => BearerHeader::Absent,
        Some(value) if value.len() != TOKEN_LEN => BearerHeader::Malformed,
        Some(value) => {
            SessionToken::parse(value).map_or(BearerHeader::Malformed, BearerHeader::Token)
        }
    }
}

/// The credentials after a `Bearer` scheme (matched without regard to case, RFC 9110 11.1),
/// or `None` for another scheme.
fn bearer_credentials(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer";
    let value = value.trim_ascii_start();
    let rest = value.get(SCHEME.len()..)?;
    if !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    match rest.first() {
        // "Bearer" alone, or followed by spaces only: a bearer header without a token.
        None => Some(rest),
        Some(b' ') => Some(rest.trim_ascii()),
        // "Bearerish ...": another scheme.
        Some(_) => None,
    }
}

/// `401 {"error":"unauthenticated"}` for a bearer token that is malformed, unknown or ended.
pub(crate) fn invalid_token() -> HttpResponse {
    let (status, code) = crate::Error::Unauthenticated.status_and_code();
    let mut response = json_error(status, code);
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static(r#"Bearer error="invalid_token""#),
    );
    response
}

/// Adds the challenge a `401` must carry (RFC 9110 15.5.2) to an answer to a bearer request.
pub(crate) fn challenge(headers: &mut HeaderMap) {
    if !headers.contains_key(WWW_AUTHENTICATE) {
        headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_values(values: &[&[u8]]) -> BearerHeader {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(AUTHORIZATION, HeaderValue::from_bytes(v).unwrap());
        }
        read(&map)
    }

    #[test]
    fn finds_a_token_whatever_the_scheme_case() {
        let token = SessionToken::generate().unwrap();
        for scheme in ["Bearer", "bearer", "BEARER", "  Bearer"] {
            let header = format!("{scheme} {}", token.as_str());
            match read_values(&[header.as_bytes()]) {
                BearerHeader::Token(t) => assert_eq!(t.as_str(), token.as_str()),
                _ => panic!("not found with {scheme:?}"),
            }
        }
    }

    #[test]
    fn other_schemes_are_not_ours() {
        assert!(matches!(read_values(&[]), BearerHeader::Absent));
        assert!(matches!(
            read_values(&[b"Basic YWxpY2U6c2VjcmV0"]),
            BearerHeader::Absent
        ));
        assert!(matches!(
            read_values(&[b"Bearerish abc"]),
            BearerHeader::Absent
        ));
        assert!(matches!(read_values(&[b"Bea"]), BearerHeader::Absent));
    }

    #[test]
    fn bad_bearer_values_are_flagged() {
        let token = SessionToken::generate().unwrap();
        let other = SessionToken::generate().unwrap();
        let good = format!("Bearer {}", token.as_str());
        let second = format!("Bearer {}", other.as_str());
        let short = format!("Bearer {}", &token.as_str()[1..]);
        let padded = format!("Bearer {}=", token.as_str());
        let cases: Vec<Vec<&[u8]>> = vec![
            vec![b"Bearer"],
            vec![b"Bearer   "],
            vec![b"Bearer abc"],
            vec![short.as_bytes()],
            vec![padded.as_bytes()],
            vec![good.as_bytes(), second.as_bytes()],
            vec![b"Bearer \xc3\xa9"],
        ];
        for case in cases {
            assert!(
                matches!(read_values(&case), BearerHeader::Malformed),
                "not flagged: {case:?}"
            );
        }
    }
}
