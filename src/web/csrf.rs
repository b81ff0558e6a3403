//! Cross-site request forgery protection for cookie sessions.
//!
//! A browser attaches the session cookie to any request to the app, including one a hostile page
//! makes it send. Requests that could change state (`POST`, `PUT`, `PATCH`, `DELETE` and any
//! other unsafe method) are therefore let through only when the browser says they come from the
//! app itself:
//!
//! 1. `Sec-Fetch-Site: same-origin` (or `none`, a user's own navigation) passes; `same-site` and
//!    `cross-site` are refused.
//! 2. Without it, `Origin` must name this host (as given in `Host`) or a trusted origin;
//!    `Origin: null` is refused.
//! 3. Without either header (old browsers, scripts), a request carrying the session cookie passes
//!    if its `Content-Type` is one a page cannot send to another site without the site's CORS
//!    consent (`application/json`, for instance); otherwise it must present the session's
//!    synchronizer token, in an `X-CSRF-Token` header or a `csrf_token` form field. Requests
//!    without the cookie have no session to abuse and pass.
//!
//! Login is checked by steps 1 and 2 even without a cookie, so a hostile page cannot log a
//! victim into the attacker's account (login CSRF).

use std::borrow::Cow;

use actix_web::dev::ServiceRequest;
use actix_web::http::header::{HeaderMap, CONTENT_TYPE, HOST, ORIGIN};
use actix_web::http::Method;
use actix_web::HttpMessage as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use futures_util::StreamExt as _;
use sha2::{Digest, Sha256};

use super::origin::Origin;
use crate::engine::SessionToken;

/// The header that carries the synchronizer token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The form field that carries the synchronizer token.
pub const CSRF_FIELD: &str = "csrf_token";
/// The largest form body read to find [`CSRF_FIELD`].
const MAX_FORM_BYTES: usize = 64 * 1024;

/// CSRF settings.
#[derive(Clone, Debug, Default)]
pub(crate) struct CsrfConfig {
    pub(crate) disabled: bool,
    pub(crate) exempt_prefixes: Vec<String>,
    pub(crate) trusted_origins: Vec<Origin>,
}

/// What the request's own headers say about where it comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Provenance {
    /// Safe method, exempt path, or protection disabled: nothing to check.
    NotChecked,
    /// The browser vouches that the request comes from the app.
    SameOrigin,
    /// The browser says it comes from elsewhere.
    CrossSite,
    /// No `Sec-Fetch-Site` or `Origin`: only a token can tell.
    Unknown,
}

impl CsrfConfig {
    pub(crate) fn provenance(&self, req: &ServiceRequest) -> Provenance {
        if self.disabled || is_safe(req.method()) || self.is_exempt(req.path()) {
            return Provenance::NotChecked;
        }
        let authority = req
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()));
        // The scheme as the client saw it: `X-Forwarded-Proto` or `Forwarded` behind a proxy
        // that terminates TLS, else the connection's. A forged cross-site request cannot set
        // those headers without the CORS preflight that would expose it.
        let own = authority.and_then(|a| Origin::of_request(req.connection_info().scheme(), a));
        self.judge_headers(req.headers(), own.as_ref())
    }

    fn is_exempt(&self, path: &str) -> bool {
        self.exempt_prefixes.iter().any(|prefix| {
            path.strip_prefix(prefix.as_str()).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/')
            })
        })
    }

    fn judge_headers(&self, headers: &HeaderMap, own: Option<&Origin>) -> Provenance {
        let origin = headers
            .get(ORIGIN)
            .map(|o| o.to_str().ok().and_then(Origin::parse));
        // A trusted origin is another site by definition, so browsers call it `same-site` or
        // `cross-site`; the list is what vouches for it.
        if let Some(Some(origin)) = &origin {
            if self.trusted_origins.contains(origin) {
                return Provenance::SameOrigin;
            }
        }
        if let Some(site) = headers.get("sec-fetch-site") {
            return match site.as_bytes() {
                b"same-origin" | b"none" => Provenance::SameOrigin,
                _ => Provenance::CrossSite,
            };
        }
        let Some(origin) = origin else {
            return Provenance::Unknown;
        };
        // The browser writes both: where the request goes (scheme, and `Host` or `:authority`
        // over HTTP/2) and the page that sent it (`Origin`). Compare whole origins, so that
        // `app.example.evil.test` never passes for `app.example`, nor `http://` for `https://`;
        // an `Origin` that does not parse (`null` included) passes for nothing.
        match (origin, own) {
            (Some(from), Some(to)) if from == *to => Provenance::SameOrigin,
            _ => Provenance::CrossSite,
        }
    }
}

fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The synchronizer token of a session: derived from the session token, so it needs no storage,
/// changes whenever the session token does, and cannot be turned back into the session token.
pub(crate) fn synchronizer_token(session: &SessionToken) -> String {
    let digest = Sha256::new()
        .chain_update(b"actix-login csrf\0")
        .chain_update(session.as_str().as_bytes())
        .finalize();
    URL_SAFE_NO_PAD.encode(digest)
}

/// Whether `presented` equals `expected`, in time that does not depend on where they differ.
fn same_token(presented: &[u8], expected: &str) -> bool {
    let expected = expected.as_bytes();
    presented.len() == expected.len()
        && presented
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Whether a page on another site could have made a browser send a request with this body
/// without a CORS preflight: no `Content-Type`, or one of the three a plain HTML form or a
/// "simple" request may use.
pub(crate) fn forgeable_body(headers: &HeaderMap) -> bool {
    if !headers.contains_key(CONTENT_TYPE) {
        return true;
    }
    // A content type that is not text cannot be read, so it cannot be trusted to need a
    // preflight either.
    media_type(headers).is_none_or(|essence| {
        matches!(
            essence.as_str(),
            "application/x-www-form-urlencoded" | "multipart/form-data" | "text/plain"
        )
    })
}

/// The request's media type without parameters, lowercased; `None` without a readable
/// `Content-Type`.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let content_type = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    Some(essence.to_ascii_lowercase())
}

/// Looks for the synchronizer token in the header, or else in a form body, which is read and
/// put back for the handler.
pub(crate) async fn has_synchronizer_token(req: &mut ServiceRequest, expected: &str) -> bool {
    if let Some(header) = req.headers().get(CSRF_HEADER) {
        return same_token(header.as_bytes(), expected);
    }
    // Media types are case-insensitive (RFC 9110 8.3.1): whatever spelling the screen took for a
    // form, the token is looked for in it.
    let is_form = media_type(req.headers()).as_deref() == Some("application/x-www-form-urlencoded");
    if !is_form {
        return false;
    }
    let Some(body) = read_body(req).await else {
        return false;
    };
    let found = serde_urlencoded::from_bytes::<Vec<(Cow<'_, str>, Cow<'_, str>)>>(&body)
        .ok()
        .and_then(|fields| {
            fields
                .into_iter()
                .find(|(name, _)| name == CSRF_FIELD)
                .map(|(_, value)| same_token(value.as_bytes(), expected))
        })
        .unwrap_or(false);
    req.set_payload(actix_web::dev::Payload::from(body));
    found
}

/// The request body, up to [`MAX_FORM_BYTES`]; `None` if larger or unreadable.
async fn read_body(req: &mut ServiceRequest) -> Option<Vec<u8>> {
    let mut payload = req.take_payload();
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.ok()?;
        if body.len() + chunk.len() > MAX_FORM_BYTES {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    Some(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn provenance(config: &CsrfConfig, req: TestRequest) -> Provenance {
        config.provenance(&req.to_srv_request())
    }

    /// A request to an app served over HTTPS.
    fn post() -> TestRequest {
        TestRequest::post()
            .uri("https://app.example/account")
            .insert_header((HOST, "app.example"))
    }

    #[test]
    fn fetch_metadata_decides_when_present() {
        let config = CsrfConfig::default();
        let with = |v: &str| post().insert_header(("sec-fetch-site", v));
        assert_eq!(
            provenance(&config, with("same-origin")),
            Provenance::SameOrigin
        );
        assert_eq!(provenance(&config, with("none")), Provenance::SameOrigin);
        assert_eq!(
            provenance(&config, with("same-site")),
            Provenance::CrossSite
        );
        assert_eq!(
            provenance(&config, with("cross-site")),
            Provenance::CrossSite
        );
        // Fetch metadata wins over a matching Origin: the browser knows best.
        let both = with("cross-site").insert_header((ORIGIN, "https://app.example"));
        assert_eq!(provenance(&config, both), Provenance::CrossSite);
    }

    #[test]
    fn origin_must_match_the_host_exactly() {
        let config = CsrfConfig {
            trusted_origins: vec![Origin::parse("https://admin.example").unwrap()],
            ..CsrfConfig::default()
        };
        let from = |o: &str| post().insert_header((ORIGIN, o));
        assert_eq!(
            provenance(&config, from("https://app.example")),
            Provenance::SameOrigin
        );
        assert_eq!(
            provenance(&config, from("https://admin.example")),
            Provenance::SameOrigin
        );
        for hostile in [
            "https://evil.example",
            "https://app.example.evil.example",
            "https://evil.example/app.example",
            "null",
            "app.example",
            "https://app.example:8443",
        ] {
            assert_eq!(
                provenance(&config, from(hostile)),
                Provenance::CrossSite,
                "{hostile}"
            );
        }
        assert_eq!(provenance(&config, post()), Provenance::Unknown);
    }

    #[test]
    fn origin_must_match_the_scheme_and_port_too() {
        let config = CsrfConfig::default();
        // A plain-HTTP app on a port: the page that sent the request must be that very origin.
        let plain = |origin: &str| {
            TestRequest::post()
                .uri("/account")
                .insert_header((HOST, "app.example:8080"))
                .insert_header((ORIGIN, origin))
        };
        assert_eq!(
            provenance(&config, plain("http://app.example:8080")),
            Provenance::SameOrigin
        );
        for hostile in [
            "https://app.example:8080",
            "http://app.example:8080:443",
            "http://app.example",
            "http://app.example:08080x",
        ] {
            assert_eq!(
                provenance(&config, plain(hostile)),
                Provenance::CrossSite,
                "{hostile}"
            );
        }
        // Behind a proxy that terminates TLS, the scheme the client used is what counts.
        let proxied = TestRequest::post()
            .uri("/account")
            .insert_header((HOST, "app.example"))
            .insert_header(("x-forwarded-proto", "https"))
            .insert_header((ORIGIN, "https://app.example"));
        assert_eq!(provenance(&config, proxied), Provenance::SameOrigin);
    }

    #[test]
    fn without_a_host_header_the_request_authority_counts() {
        // HTTP/2 carries the host as `:authority`, which Actix puts in the URI.
        let config = CsrfConfig::default();
        let h2 = TestRequest::post()
            .uri("https://app.example/account")
            .insert_header((ORIGIN, "https://app.example"));
        assert_eq!(provenance(&config, h2), Provenance::SameOrigin);
        let h2_cross = TestRequest::post()
            .uri("https://app.example/account")
            .insert_header((ORIGIN, "https://evil.example"));
        assert_eq!(provenance(&config, h2_cross), Provenance::CrossSite);
    }

    #[test]
    fn safe_methods_and_exempt_paths_are_not_checked() {
        let config = CsrfConfig {
            exempt_prefixes: vec!["/hooks".into()],
            ..CsrfConfig::default()
        };
        let cross = |req: TestRequest| req.insert_header(("sec-fetch-site", "cross-site"));
        assert_eq!(
            provenance(&config, cross(TestRequest::get())),
            Provenance::NotChecked
        );
        let hook = cross(TestRequest::post().uri("/hooks/stripe"));
        assert_eq!(provenance(&config, hook), Provenance::NotChecked);
        let lookalike = cross(TestRequest::post().uri("/hooksmith"));
        assert_eq!(provenance(&config, lookalike), Provenance::CrossSite);
    }

    #[test]
    fn only_simple_request_bodies_are_forgeable() {
        let headers = |ct: Option<&str>| {
            let mut req = TestRequest::post();
            if let Some(ct) = ct {
                req = req.insert_header((CONTENT_TYPE, ct));
            }
            req.to_srv_request().headers().clone()
        };
        for forgeable in [
            None,
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("Text/Plain;charset=UTF-8"),
        ] {
            assert!(forgeable_body(&headers(forgeable)), "{forgeable:?}");
        }
        assert!(!forgeable_body(&headers(Some("application/json"))));
        assert!(!forgeable_body(&headers(Some(
            "application/json; charset=utf-8"
        ))));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token(b"abc", "abc"));
        assert!(!same_token(b"abd", "abc"));
        assert!(!same_token(b"ab", "abc"));
        assert!(!same_token(b"", "abc"));
    }
}
