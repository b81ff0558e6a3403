//! The name a session is stored under.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// Bytes of the token's SHA-256 kept as its key: 168 bits leave finding a token for a key
/// (2^168 guesses) as hopeless as guessing the token, and at 28 base64url characters the key
/// and its index entry each fit a smaller Redis allocation than the whole digest would.
const DIGEST_BYTES: usize = 21;
/// Length of the digest's text form: 21 bytes in base64url, which needs no padding.
const DIGEST_LEN: usize = 28;
/// Length of a key's group: the first four characters of the token, three random bytes.
pub(crate) const GROUP_LEN: usize = 4;
const GROUP_BYTES: usize = 3;
/// Length of a key's text form.
const KEY_LEN: usize = GROUP_LEN + DIGEST_LEN;
// `encode_digest` writes whole groups of three bytes as four characters, and nothing else.
const _: () = assert!(DIGEST_BYTES.is_multiple_of(3) && DIGEST_BYTES / 3 * 4 == DIGEST_LEN);

/// The name a session record is stored under: the token's *group* (its first four characters)
/// followed by the SHA-256 of the whole token, truncated to 168 bits, in base64url (32
/// characters; every byte counts once per session in Redis).
///
/// The group is random when a session starts and kept when the session moves to a new token,
/// so a store can keep a session and the one it moves to side by side: a Redis store makes the
/// group its cluster hash tag, which lets one script move a session and its data atomically.
/// It says nothing about the rest of the token.
///
/// A key cannot be turned back into a token, so it is safe to keep in a store, but it still
/// identifies one live session; logs carry only [`SessionKey::short`].
///
/// Kept inline, as its 32 ASCII characters: every request with a session derives one, and a
/// heap copy would cost an allocation each time.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionKey([u8; KEY_LEN]);

impl SessionKey {
    /// The key of a session token: its group, then the first 168 bits of its SHA-256.
    ///
    /// `token` is one this crate issued or checked (47 base64url characters). Should anything
    /// else ever get here, its key still reads as text: a first four bytes that are not
    /// base64url give the group `AAAA`.
    pub(crate) fn of_token(token: &[u8]) -> Self {
        let mut text = [b'A'; KEY_LEN];
        if let Some(group) = token.get(..GROUP_LEN) {
            if group
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                text[..GROUP_LEN].copy_from_slice(group);
            }
        }
        let mut digest_text = [0u8; DIGEST_LEN];
        // Always there: SHA-256 has 32 bytes.
        if let Some(digest) = Sha256::digest(token).first_chunk::<DIGEST_BYTES>() {
            encode_digest(digest, &mut digest_text);
        }
        text[GROUP_LEN..].copy_from_slice(&digest_text);
        Self(text)
    }

    /// Reads a key back from its text form (four base64url characters of group, then 28
    /// encoding 21 bytes), as a store that lists its keys needs to. Returns `None` for anything
    /// else.
    pub fn parse(text: &str) -> Option<Self> {
        let mut group = [0u8; GROUP_BYTES];
        let mut digest = [0u8; DIGEST_BYTES];
        let valid = text.len() == KEY_LEN
            && text.is_char_boundary(GROUP_LEN)
            && matches!(
                URL_SAFE_NO_PAD.decode_slice(&text[..GROUP_LEN], &mut group),
                Ok(GROUP_BYTES)
            )
            && matches!(
                URL_SAFE_NO_PAD.decode_slice(&text[GROUP_LEN..], &mut digest),
                Ok(DIGEST_BYTES)
            );
        if !valid {
            return None;
        }
        text.as_bytes().try_into().ok().map(Self)
    }

    /// The text form, for building a store's own key.
    pub fn as_str(&self) -> &str {
        // Always ASCII: a checked group and the encoder's digest, or text `parse` checked.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The group and the digest, as [`group`](Self::group) and [`digest`](Self::digest) give
    /// them, for one check of the text instead of two.
    pub(crate) fn parts(&self) -> (&str, &str) {
        self.as_str()
            .split_at_checked(GROUP_LEN)
            .unwrap_or_default()
    }

    /// The group: shared by every key a session has had, and by no other session's keys
    /// except by chance (24 random bits). Stores may use it to keep those keys together.
    pub fn group(&self) -> &str {
        self.parts().0
    }

    /// The digest part, without the group.
    pub fn digest(&self) -> &str {
        self.parts().1
    }

    /// Eight characters of the digest: enough to correlate log lines, too little to look the
    /// session up.
    pub fn short(&self) -> &str {
        let digest = self.digest();
        digest.get(..8).unwrap_or(digest)
    }
}

/// The base64url alphabet: a sextet's character.
const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Writes `digest` into `text` in base64url, as the base64 crate would:
/// by hand, as every request with a session derives a key, and three whole bytes to four
/// characters need none of an engine's generality (no padding, no partial group).
fn encode_digest(digest: &[u8; DIGEST_BYTES], text: &mut [u8; DIGEST_LEN]) {
    for (bytes, chars) in digest.chunks_exact(3).zip(text.chunks_exact_mut(4)) {
        let group = u32::from(bytes[0]) << 16 | u32::from(bytes[1]) << 8 | u32::from(bytes[2]);
        for (shift, char) in [18, 12, 6, 0].into_iter().zip(chars) {
            *char = BASE64URL[(group >> shift) as usize & 63];
        }
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
    fn a_key_is_text_whatever_bytes_it_is_derived_from() {
        for token in [
            &b"\xff\xfe\xfd\xfc-rest-of-it"[..],
            b"ab",
            b"",
            "\u{e9}t\u{e9}-x".as_bytes(),
        ] {
            let key = SessionKey::of_token(token);
            assert_eq!(key.as_str().len(), KEY_LEN, "{token:?}");
            assert_eq!(key.group(), "AAAA", "{token:?}");
            assert_eq!(SessionKey::parse(key.as_str()), Some(key.clone()));
        }
    }

    #[test]
    fn the_digest_is_written_as_the_base64_crate_writes_it() {
        // Every byte value at every position, over a digest of SHA-256's own bytes.
        let base: [u8; DIGEST_BYTES] = Sha256::digest(b"base")[..DIGEST_BYTES].try_into().unwrap();
        for (position, value) in (0..DIGEST_BYTES).flat_map(|p| (0..=255u8).map(move |v| (p, v))) {
            let mut digest = base;
            digest[position] = value;
            let mut ours = [0u8; DIGEST_LEN];
            encode_digest(&digest, &mut ours);
            assert_eq!(
                std::str::from_utf8(&ours).unwrap(),
                URL_SAFE_NO_PAD.encode(digest),
                "{digest:?}"
            );
        }
    }

    #[test]
    fn key_parse_rejects_anything_else() {
        assert!(SessionKey::parse("").is_none());
        assert!(SessionKey::parse(&"a".repeat(27)).is_none());
        assert!(SessionKey::parse(&"a".repeat(43)).is_none());
        assert!(SessionKey::parse(&"a".repeat(64)).is_none());
        assert!(SessionKey::parse(&format!("{}*", "a".repeat(27))).is_none());
        assert!(SessionKey::parse(&format!("{}=", "A".repeat(27))).is_none());
        assert!(SessionKey::parse(&"a".repeat(28)).is_none());
        assert!(SessionKey::parse(&format!("{}é{}", "a".repeat(3), "a".repeat(27))).is_none());
        let key = SessionKey::parse(&"a".repeat(KEY_LEN)).unwrap();
        assert_eq!((key.group(), key.digest().len()), ("aaaa", 28));
    }
}
