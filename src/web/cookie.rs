//! Reading the session cookie from a request and writing it to a response.

use std::time::SystemTime;

use actix_web::cookie::{time, Cookie, SameSite};
use actix_web::http::header::{HeaderMap, COOKIE};

use crate::engine::session_token::{SessionToken, TOKEN_LEN};

/// Attributes of the session cookie.
#[derive(Clone, Debug)]
pub(crate) struct CookieConfig {
    pub(crate) name: String,
    /// Whether the app chose the name, rather than taking the default.
    pub(crate) named: bool,
    pub(crate) secure: bool,
    pub(crate) same_site: SameSite,
    pub(crate) domain: Option<String>,
}

/// The cookie name without a `Domain`: the strictest prefix browsers know.
pub(crate) const DEFAULT_NAME: &str = "__Host-id";
/// The cookie name with a `Domain`, which `__Host-` forbids.
pub(crate) const DEFAULT_DOMAIN_NAME: &str = "__Secure-id";

impl Default for CookieConfig {
    fn default() -> Self {
        Self {
            // `__Host-` makes browsers refuse the cookie unless it is Secure, host-only and on
            // `/`, so a sibling subdomain or a plain-HTTP response cannot plant one.
            name: DEFAULT_NAME.to_owned(),
            named: false,
            secure: true,
            same_site: SameSite::Lax,
            domain: None,
        }
    }
}

/// The session token the client sent, and how.
pub(crate) enum Presented {
    Absent,
    /// A session cookie that is not something this crate issued: wrong length or alphabet,
    /// not UTF-8, or the cookie given twice. Never looked up.
    Malformed,
    /// A session cookie.
    Token(SessionToken),
    /// An `Authorization: Bearer` token. Any session cookie beside it is ignored.
    Bearer(SessionToken),
}

/// The `name=value` pairs of a `Cookie` header, as split at `;`: what `slice::split` gives, found
/// by `memchr`, which looks at many bytes at a time (with SIMD where the CPU has it) instead of
/// one.
fn pairs(header: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(header);
    std::iter::from_fn(move || {
        let text = rest?;
        match memchr::memchr(b';', text) {
            Some(end) => {
                rest = Some(&text[end + 1..]);
                Some(&text[..end])
            }
            None => rest.take(),
        }
    })
}

impl CookieConfig {
    /// Finds the session cookie in the raw `Cookie` headers.
    ///
    /// Parsed by hand rather than through `HttpRequest::cookies` so that a duplicate cookie is
    /// caught (which one would a proxy or the app see?), no value is percent-decoded into a valid
    /// token, and the common no-cookie case costs no allocation.
    pub(crate) fn read(&self, headers: &HeaderMap) -> Presented {
        let mut found: Option<&[u8]> = None;
        for header in headers.get_all(COOKIE) {
            for pair in pairs(header.as_bytes()) {
                let Some(eq) = memchr::memchr(b'=', pair) else {
                    continue;
                };
                if pair[..eq].trim_ascii() != self.name.as_bytes() {
                    continue;
                }
                if found.is_some() {
                    return Presented::Malformed;
                }
                found = Some(pair[eq + 1..].trim_ascii());
            }
        }
        match found {
            None => Presented::Absent,
            Some(value) if value.len() != TOKEN_LEN => Presented::Malformed,
            Some(value) => {
                SessionToken::parse(value).map_or(Presented::Malformed, Presented::Token)
            }
        }
    }

    /// The cookie that hands `token` to the client. Without `persist_until` it has no
    /// `Max-Age`: it lasts for the browser session, and the server decides when the session
    /// really ends. A remembered session's cookie lasts until `persist_until`, its idle
    /// deadline (never past its absolute end), so the browser forgets it when the server does.
    pub(crate) fn issue<'a>(
        &'a self,
        token: &'a SessionToken,
        persist_until: Option<SystemTime>,
    ) -> Cookie<'a> {
        let mut cookie = self.base(token.as_str());
        if let Some(until) = persist_until {
            let left = until
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .as_secs();
            cookie.set_max_age(time::Duration::seconds(
                i64::try_from(left).unwrap_or(i64::MAX),
            ));
        }
        cookie
    }

    /// Refuses settings browsers would reject or that defeat the cookie's prefix; with a
    /// domain and the default name, takes the `__Secure-` name.
    pub(crate) fn settle(&mut self) -> Result<(), String> {
        let Some(domain) = &self.domain else {
            return Ok(());
        };
        if domain.is_empty() || domain.bytes().any(|b| b.is_ascii_whitespace() || b == b';') {
            return Err(format!("cookie domain {domain:?} is not a domain name"));
        }
        if !self.named {
            DEFAULT_DOMAIN_NAME.clone_into(&mut self.name);
        } else if self.name.starts_with("__Host-") {
            return Err(format!(
                "cookie {:?} cannot have a Domain: browsers drop __Host- cookies that set one; \
                 use a __Secure- name, or leave the name unset to get {DEFAULT_DOMAIN_NAME:?}",
                self.name
            ));
        }
        Ok(())
    }

    /// A cookie that makes the browser forget the session cookie. It carries the same name,
    /// path and flags as the issued one, or the browser would keep the original.
    pub(crate) fn removal(&self) -> Cookie<'_> {
        let mut cookie = self.base("");
        cookie.make_removal();
        cookie
    }

    fn base<'a>(&'a self, value: &'a str) -> Cookie<'a> {
        let mut cookie = Cookie::build(self.name.as_str(), value)
            .path("/")
            .http_only(true)
            .secure(self.secure)
            .same_site(self.same_site)
            .finish();
        if let Some(domain) = &self.domain {
            cookie.set_domain(domain.as_str());
        }
        cookie
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(COOKIE, HeaderValue::from_bytes(v).unwrap());
        }
        map
    }

    fn read(values: &[&[u8]]) -> Presented {
        CookieConfig::default().read(&headers(values))
    }

    #[test]
    fn pairs_split_as_the_slice_split_does() {
        for header in [
            "",
            ";",
            ";;",
            "a=1",
            "a=1;",
            ";a=1",
            "a=1; b=2",
            "a=1;;b=2 ; c",
            " ; = ;x",
        ] {
            let ours: Vec<&[u8]> = pairs(header.as_bytes()).collect();
            let split: Vec<&[u8]> = header.as_bytes().split(|&b| b == b';').collect();
            assert_eq!(ours, split, "{header:?}");
        }
    }

    #[test]
    fn finds_the_token_among_other_cookies() {
        let token = SessionToken::generate().unwrap();
        let header = format!("theme=dark; __Host-id={}; lang=en", token.as_str());
        match read(&[header.as_bytes()]) {
            Presented::Token(t) => assert_eq!(t.as_str(), token.as_str()),
            _ => panic!("token not found"),
        }
    }

    #[test]
    fn absent_when_no_session_cookie() {
        assert!(matches!(read(&[]), Presented::Absent));
        assert!(matches!(read(&[b"id=abc; x=y"]), Presented::Absent));
        assert!(matches!(read(&[b"__Host-id"]), Presented::Absent));
    }

    #[test]
    fn malformed_values_are_flagged() {
        let token = SessionToken::generate().unwrap();
        let other = SessionToken::generate().unwrap();
        let twice = format!("__Host-id={}; __Host-id={}", token.as_str(), other.as_str());
        let split = [
            format!("__Host-id={}", token.as_str()),
            format!("__Host-id={}", other.as_str()),
        ];
        let quoted = format!("__Host-id=\"{}\"", token.as_str());
        let percent = format!("__Host-id={}%41", &token.as_str()[..40]);
        let cases: Vec<Vec<&[u8]>> = vec![
            vec![b"__Host-id="],
            vec![b"__Host-id=abc"],
            vec![twice.as_bytes()],
            vec![split[0].as_bytes(), split[1].as_bytes()],
            vec![quoted.as_bytes()],
            vec![percent.as_bytes()],
            vec![b"__Host-id=\xc3\xa9\xc3\xa9\xc3\xa9"],
        ];
        for case in cases {
            assert!(
                matches!(read(&case), Presented::Malformed),
                "not flagged: {case:?}"
            );
        }
    }

    #[test]
    fn issued_and_removal_cookies_share_attributes() {
        let config = CookieConfig::default();
        let token = SessionToken::generate().unwrap();
        let issued = config.issue(&token, None).to_string();
        let removal = config.removal().to_string();
        for attr in ["HttpOnly", "SameSite=Lax", "Secure", "Path=/"] {
            assert!(issued.contains(attr), "{issued}");
            assert!(removal.contains(attr), "{removal}");
        }
        assert!(!issued.contains("Domain") && !issued.contains("Max-Age"));
        assert!(removal.starts_with("__Host-id=;") && removal.contains("Max-Age=0"));
    }

    #[test]
    fn a_remembered_cookie_lasts_until_the_deadline_it_is_given() {
        let config = CookieConfig::default();
        let token = SessionToken::generate().unwrap();
        let until = SystemTime::now() + std::time::Duration::from_secs(3600);
        let issued = config.issue(&token, Some(until)).to_string();
        let max_age: i64 = issued
            .split("; ")
            .find_map(|attr| attr.strip_prefix("Max-Age="))
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert!((3590..=3600).contains(&max_age), "{issued}");
        // A deadline already past gives a cookie the browser drops at once.
        let past = config
            .issue(&token, Some(SystemTime::UNIX_EPOCH))
            .to_string();
        assert!(past.contains("Max-Age=0"), "{past}");
    }

    #[test]
    fn a_domain_takes_the_secure_prefix_and_refuses_the_host_prefix() {
        let mut config = CookieConfig {
            domain: Some("example.com".into()),
            ..CookieConfig::default()
        };
        config.settle().unwrap();
        let token = SessionToken::generate().unwrap();
        let issued = config.issue(&token, None).to_string();
        assert!(issued.starts_with("__Secure-id="), "{issued}");
        assert!(issued.contains("Domain=example.com"), "{issued}");
        assert!(config.removal().to_string().contains("Domain=example.com"));

        let mut host = CookieConfig {
            name: "__Host-sid".into(),
            named: true,
            domain: Some("example.com".into()),
            ..CookieConfig::default()
        };
        let refusal = host.settle().unwrap_err();
        assert!(refusal.contains("__Host-"), "{refusal}");
        let mut blank = CookieConfig {
            domain: Some(String::new()),
            ..CookieConfig::default()
        };
        assert!(blank.settle().is_err());
    }
}
