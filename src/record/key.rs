//! The name a session is stored under.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// Bytes of the token's SHA-256 kept as its key: 168 bits leave finding a token for a key
/// (2^168 guesses) as hopeless as guessing the token, and at 28 base64url characters the key
/// and its index entry each fit a smaller Redis allocation than the whole digest would.
const KEY_BYTES: usize = 21;
/// Length of a key's text form: 21 bytes in base64url, which needs no padding.
const KEY_LEN: usize = 28;

/// The name a session record is stored under: the SHA-256 of the client's token, truncated to
/// 168 bits, in base64url (28 characters; every byte counts once per session in Redis).
///
/// A key cannot be turned back into a token, so it is safe to keep in a store, but it still
/// identifies one live session; logs carry only [`SessionKey::short`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionKey(String);

impl SessionKey {
    /// The key of a session token: the first 168 bits of its SHA-256.
    pub(crate) fn of_token(token: &[u8]) -> Self {
        Self(URL_SAFE_NO_PAD.encode(&Sha256::digest(token)[..KEY_BYTES]))
    }

    /// Reads a key back from its text form (28 base64url characters encoding 21 bytes), as a
    /// store that lists its keys needs to. Returns `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let mut digest = [0u8; KEY_BYTES];
        let valid = text.len() == KEY_LEN
            && matches!(
                URL_SAFE_NO_PAD.decode_slice(text, &mut digest),
                Ok(KEY_BYTES)
            );
        valid.then(|| Self(text.to_owned()))
    }

    /// The text form, for building a store's own key.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first eight characters: enough to correlate log lines, too little to look the
    /// session up.
    pub fn short(&self) -> &str {
        self.0.get(..8).unwrap_or(&self.0)
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionKey({}..)", self.short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_parse_rejects_anything_else() {
        assert!(SessionKey::parse("").is_none());
        assert!(SessionKey::parse(&"a".repeat(27)).is_none());
        assert!(SessionKey::parse(&"a".repeat(43)).is_none());
        assert!(SessionKey::parse(&"a".repeat(64)).is_none());
        assert!(SessionKey::parse(&format!("{}*", "a".repeat(27))).is_none());
        assert!(SessionKey::parse(&format!("{}=", "A".repeat(27))).is_none());
        assert!(SessionKey::parse(&"a".repeat(KEY_LEN)).is_some());
    }
}
