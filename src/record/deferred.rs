//! Text a record holds as a store decoded it, written out the first time it is read.

use std::borrow::Cow;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How a store expands its compact form of a text back into the text.
pub(super) type Expand = fn(&str) -> Cow<'_, str>;

/// A text field of a record that the requests checking a session never read: where the login
/// came from, which session lists and security events show. A store's lookup decodes it into
/// this, and printing the IP address or expanding the user agent waits until someone asks, so
/// that the lookup of every request does not pay for text that no one reads.
#[derive(Clone)]
pub(super) enum Deferred {
    /// Plain text: as a login or a store gave it, or as JSON or the binary form's text tag
    /// carried it.
    Text(String),
    /// An IP address as its bytes.
    Ip {
        octets: Octets,
        text: OnceLock<String>,
    },
    /// Text in a store's compact form, and how to expand it.
    Compact {
        compact: Box<str>,
        expand: Expand,
        text: OnceLock<String>,
    },
}

/// The bytes of an IPv4 or IPv6 address.
// Made only by `RedisStore`'s binary form so far.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Octets {
    V4([u8; 4]),
    V6([u8; 16]),
}

impl Deferred {
    /// An IP address as its bytes, printed when first read.
    // Only `RedisStore`'s binary form keeps addresses as bytes so far.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(super) fn ip(octets: Octets) -> Self {
        Deferred::Ip {
            octets,
            text: OnceLock::new(),
        }
    }

    /// Text in a store's compact form, expanded with `expand` when first read.
    // Only `RedisStore` keeps text in a compact form so far.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(super) fn compact(compact: &str, expand: Expand) -> Self {
        Deferred::Compact {
            compact: compact.into(),
            expand,
            text: OnceLock::new(),
        }
    }

    /// The text.
    pub(super) fn get(&self) -> &str {
        match self {
            Deferred::Text(text) => text,
            Deferred::Ip { octets, text } => text.get_or_init(|| octets.to_text()),
            Deferred::Compact {
                compact,
                expand,
                text,
            } => text.get_or_init(|| expand(compact).into_owned()),
        }
    }

    /// The address's bytes, when it was decoded from them.
    // Only `RedisStore`'s binary form writes them.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(super) fn octets(&self) -> Option<Octets> {
        match self {
            Deferred::Ip { octets, .. } => Some(*octets),
            Deferred::Text(_) | Deferred::Compact { .. } => None,
        }
    }
}

impl Octets {
    /// The address as its `Display` prints it.
    fn to_text(self) -> String {
        match self {
            Octets::V4(octets) => Ipv4Addr::from(octets).to_string(),
            Octets::V6(octets) => Ipv6Addr::from(octets).to_string(),
        }
    }
}

impl fmt::Debug for Deferred {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.get(), f)
    }
}

impl Serialize for Deferred {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.get())
    }
}

impl<'de> Deserialize<'de> for Deferred {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Deferred::Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_text_is_expanded_once_on_first_read() {
        fn shout(text: &str) -> Cow<'_, str> {
            Cow::Owned(text.to_uppercase())
        }
        let deferred = Deferred::compact("curl/8", shout);
        let first: *const str = deferred.get();
        assert_eq!(deferred.get(), "CURL/8");
        assert!(
            std::ptr::eq(first, deferred.get()),
            "kept, not expanded again"
        );
        assert_eq!(serde_json::to_string(&deferred).unwrap(), r#""CURL/8""#);
        let back: Deferred = serde_json::from_str(r#""CURL/8""#).unwrap();
        assert_eq!(back.get(), "CURL/8");
    }
}
