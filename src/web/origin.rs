//! Web origins, parsed exactly: scheme, host and port.
//!
//! An `Origin` header is compared with the request's own origin (or a trusted one) as a whole:
//! `http://app.example` is not `https://app.example`, `:8443` is not the default port, and
//! anything that does not parse as `scheme://host[:port]` matches nothing.

use std::fmt;

/// A scheme, a lowercase host and a port, the port filled in from the scheme when absent.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    scheme: Scheme,
    host: String,
    port: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn parse(text: &str) -> Option<Self> {
        if text.eq_ignore_ascii_case("http") {
            Some(Scheme::Http)
        } else if text.eq_ignore_ascii_case("https") {
            Some(Scheme::Https)
        } else {
            None
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

impl Origin {
    /// An origin as a browser serialises it (`https://app.example:8443`), or as an app writes a
    /// trusted one (a trailing `/` is tolerated). `None` for `null`, other schemes, paths,
    /// credentials, and ports that are not a number from 1 to 65535.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let text = text.strip_suffix('/').unwrap_or(text);
        let (scheme, authority) = text.split_once("://")?;
        Self::from_parts(Scheme::parse(scheme)?, authority)
    }

    /// The origin a request was sent to: its scheme, and its `Host` (or HTTP/2 authority).
    pub(crate) fn of_request(scheme: &str, authority: &str) -> Option<Self> {
        Self::from_parts(Scheme::parse(scheme)?, authority)
    }

    fn from_parts(scheme: Scheme, authority: &str) -> Option<Self> {
        let (host, port) = split_host_port(authority)?;
        let port = match port {
            None => scheme.default_port(),
            Some(digits) => parse_port(digits)?,
        };
        Some(Self {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// `host` and the port's digits, if any. A bracketed IPv6 literal keeps its colons; any other
/// colon must introduce the one port.
fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    let forbidden = |c: char| matches!(c, '/' | '?' | '#' | '@' | '\\') || c.is_whitespace();
    if authority.is_empty() || authority.contains(forbidden) {
        return None;
    }
    let (host, rest) = if authority.starts_with('[') {
        let end = authority.find(']')? + 1;
        authority.split_at(end)
    } else {
        match authority.find(':') {
            Some(colon) => authority.split_at(colon),
            None => (authority, ""),
        }
    };
    if host.is_empty() || host == "[]" {
        return None;
    }
    match rest {
        "" => Some((host, None)),
        _ => Some((host, Some(rest.strip_prefix(':')?))),
    }
}

fn parse_port(digits: &str) -> Option<u16> {
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&port| port != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same(a: &str, b: &str) -> bool {
        Origin::parse(a).is_some() && Origin::parse(a) == Origin::parse(b)
    }

    #[test]
    fn default_ports_follow_the_scheme() {
        assert!(same("https://app.example", "https://app.example:443"));
        assert!(same("http://app.example", "http://app.example:80"));
        assert!(same("HTTPS://App.Example/", "https://app.example"));
        assert!(!same("http://app.example", "https://app.example"));
        assert!(!same("http://app.example:443", "https://app.example"));
        assert!(!same("https://app.example:80", "http://app.example"));
        assert!(!same("https://app.example:8443", "https://app.example"));
        assert!(same("https://[::1]:8443", "https://[::1]:8443"));
        assert!(!same("https://[::1]", "https://[::2]"));
    }

    #[test]
    fn anything_else_is_no_origin() {
        for bad in [
            "null",
            "",
            "app.example",
            "ftp://app.example",
            "https://",
            "https://:443",
            "https://app.example:",
            "https://app.example:443:443",
            "http://app.example:8080:443",
            "https://app.example:0",
            "https://app.example:65536",
            "https://app.example:99999999999",
            "https://app.example:+443",
            "https://app.example/path",
            "https://user@app.example",
            "https://app.example?x",
            "https://app.example#x",
            "https://app .example",
            "https://[::1",
            "https://[]",
            "https://[::1]x",
        ] {
            assert_eq!(Origin::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_request_origin_comes_from_its_scheme_and_host() {
        assert_eq!(
            Origin::of_request("http", "127.0.0.1:8080"),
            Origin::parse("http://127.0.0.1:8080")
        );
        assert_eq!(
            Origin::of_request("https", "app.example"),
            Origin::parse("https://app.example:443")
        );
        assert_eq!(Origin::of_request("gopher", "app.example"), None);
        assert_eq!(Origin::of_request("http", "app.example:8080:443"), None);
    }
}
