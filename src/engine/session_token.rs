//! The session token a client holds.
//!
//! The browser holds a [`SessionToken`]; stores only ever see its [`SessionKey`], derived from
//! the token's SHA-256. Someone who can read the store (a Redis dump, `MONITOR`, a replica) therefore learns
//! nothing they could put in a cookie.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::record::SessionKey;

/// Random bytes per token after its group: 256 bits, twice the 128-bit floor of OWASP ASVS 5
/// (7.2.3). The group's three bytes come on top; they are random too, but a rotated token
/// keeps them, so they are not counted.
const SECRET_BYTES: usize = 32;
const GROUP_BYTES: usize = 3;
const TOKEN_BYTES: usize = GROUP_BYTES + SECRET_BYTES;
/// Length of the cookie value: 35 bytes in unpadded base64url.
pub(crate) const TOKEN_LEN: usize = 47;
/// The low bits of the last character that encode nothing (47 × 6 = 282 bits for 280): clear
/// in a canonical encoding.
const SPARE_BITS: u8 = (1 << (TOKEN_LEN * 6 - TOKEN_BYTES * 8)) - 1;
/// [`SEXTET`]'s mark for a byte outside the alphabet: its top bit is never set in a sextet.
const NOT_BASE64URL: u8 = 0x80;
/// Each byte's six-bit value in the base64url alphabet, or [`NOT_BASE64URL`].
const SEXTET: [u8; 256] = {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut table = [NOT_BASE64URL; 256];
    let mut value = 0;
    while value < ALPHABET.len() {
        table[ALPHABET[value] as usize] = value as u8;
        value += 1;
    }
    table
};

/// The secret a client presents in its cookie or `Authorization: Bearer` header.
///
/// Never logged: `Debug` prints a placeholder. Kept inline, as its 47 base64url characters:
/// every request with a cookie parses one, and a heap copy would cost an allocation each time.
#[derive(Clone)]
pub(crate) struct SessionToken([u8; TOKEN_LEN]);

impl SessionToken {
    /// Draws a fresh token, in a fresh group, from the operating system's CSPRNG.
    pub(crate) fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes)?;
        Ok(Self::encode(&bytes))
    }

    /// The token whose bytes are `bytes`.
    fn encode(bytes: &[u8; TOKEN_BYTES]) -> Self {
        let mut text = [0u8; TOKEN_LEN];
        // 35 bytes always take exactly 47 base64url characters, so this cannot fall short.
        let written = URL_SAFE_NO_PAD.encode_slice(bytes, &mut text);
        debug_assert_eq!(written.ok(), Some(TOKEN_LEN));
        Self(text)
    }

    /// Draws a fresh token in the group of `key`, for the session under `key` to move to: the
    /// secret part is new, only the [group](SessionKey::group) is kept.
    pub(crate) fn generate_beside(key: &SessionKey) -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes)?;
        let mut group = [0u8; GROUP_BYTES];
        if let Ok(GROUP_BYTES) = URL_SAFE_NO_PAD.decode_slice(key.group(), &mut group) {
            bytes[..GROUP_BYTES].copy_from_slice(&group);
        }
        Ok(Self::encode(&bytes))
    }

    /// Accepts exactly what [`SessionToken::generate`] can produce and nothing else, so that
    /// garbage never reaches the store.
    pub(crate) fn parse(raw: &[u8]) -> Option<Self> {
        let text = <[u8; TOKEN_LEN]>::try_from(raw).ok()?;
        // Checked, not decoded: every request with a cookie gets here, and the decoded bytes
        // would be thrown away. What passes is exactly the canonical encoding of 35 bytes (the
        // decoder's own rule), and ASCII: every character in the alphabet, and the last one's
        // bits beyond the 280 encoded clear.
        let mut seen = 0u8;
        for &byte in &text {
            seen |= SEXTET[usize::from(byte)];
        }
        let last = SEXTET[usize::from(text[TOKEN_LEN - 1])];
        (seen & NOT_BASE64URL == 0 && last & SPARE_BITS == 0).then_some(Self(text))
    }

    /// The cookie value.
    pub(crate) fn as_str(&self) -> &str {
        // Always ASCII: made by the encoder, or checked by `parse`.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The store key for this token.
    pub(crate) fn key(&self) -> SessionKey {
        SessionKey::of_token(&self.0)
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn generated_tokens_are_47_base64url_chars_of_35_random_bytes() {
        let mut seen = HashSet::new();
        for _ in 0..1000 {
            let token = SessionToken::generate().unwrap();
            let s = token.as_str();
            assert_eq!(s.len(), TOKEN_LEN);
            assert!(s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            assert_eq!(URL_SAFE_NO_PAD.decode(s).unwrap().len(), TOKEN_BYTES);
            assert!(seen.insert(s.to_owned()), "duplicate token");
        }
    }

    #[test]
    fn bits_are_balanced_across_many_tokens() {
        // A constant, a counter or a time-seeded generator would skew some bit positions.
        let mut ones = [0u32; TOKEN_BYTES * 8];
        let n = 2000;
        for _ in 0..n {
            let token = SessionToken::generate().unwrap();
            let bytes = URL_SAFE_NO_PAD.decode(token.as_str()).unwrap();
            for (i, count) in ones.iter_mut().enumerate() {
                *count += u32::from(bytes[i / 8] >> (i % 8) & 1);
            }
        }
        for count in ones {
            let share = f64::from(count) / f64::from(n);
            assert!((0.4..0.6).contains(&share), "bit share {share}");
        }
    }

    #[test]
    fn parse_accepts_generated_tokens() {
        let token = SessionToken::generate().unwrap();
        let parsed = SessionToken::parse(token.as_str().as_bytes()).unwrap();
        assert_eq!(parsed.as_str(), token.as_str());
        assert_eq!(parsed.key(), token.key());
    }

    #[test]
    fn parse_accepts_what_the_decoder_accepts_and_nothing_else() {
        // Every byte value at every position of a good token: the hand-written check must
        // agree with base64's strict decoder, which decides what a canonical encoding is.
        let good = *SessionToken::generate()
            .unwrap()
            .as_str()
            .as_bytes()
            .first_chunk::<TOKEN_LEN>()
            .unwrap();
        for position in 0..TOKEN_LEN {
            for byte in 0..=u8::MAX {
                let mut raw = good;
                raw[position] = byte;
                let decodes = matches!(
                    URL_SAFE_NO_PAD.decode_slice(raw, &mut [0u8; TOKEN_BYTES]),
                    Ok(TOKEN_BYTES)
                );
                assert_eq!(
                    SessionToken::parse(&raw).is_some(),
                    decodes,
                    "byte {byte:#04x} at {position}"
                );
            }
        }
    }

    #[test]
    fn parse_rejects_everything_else() {
        let good = SessionToken::generate().unwrap().as_str().to_owned();
        let mut last_char_with_trailing_bits = good.clone();
        last_char_with_trailing_bits.pop();
        last_char_with_trailing_bits.push('B'); // low bits set: not a canonical encoding
        let rejected: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"a".to_vec(),
            good.as_bytes()[..46].to_vec(),
            format!("{good}A").into_bytes(),
            format!("{}*", &good[..46]).into_bytes(),
            format!("{}=", &good[..46]).into_bytes(),
            format!("{}+", &good[..46]).into_bytes(),
            format!("{}/", &good[..46]).into_bytes(),
            format!("{}%", &good[..46]).into_bytes(),
            [&good.as_bytes()[..45], "é".as_bytes()].concat(),
            [&good.as_bytes()[..46], &[0xff]].concat(),
            vec![b'A'; 4096],
            last_char_with_trailing_bits.into_bytes(),
        ];
        for raw in rejected {
            assert!(SessionToken::parse(&raw).is_none(), "accepted {raw:?}");
        }
    }

    #[test]
    fn key_is_the_group_and_truncated_sha256_and_never_contains_the_token() {
        let token = SessionToken::generate().unwrap();
        let key = token.key();
        assert_eq!(key.as_str().len(), 32);
        assert_eq!(key.group(), &token.as_str()[..4]);
        assert_eq!(SessionKey::parse(key.as_str()), Some(key.clone()));
        assert!(!key.as_str().contains(&token.as_str()[4..]));
        // SHA-256("abcdefg") = 7d1a5412 7b222502 f5b79b5f b0803061 152a44f9 2b ..., first 21
        // bytes, after the group "abcd".
        assert_eq!(
            SessionKey::of_token(b"abcdefg").as_str(),
            "abcdfRpUEnsiJQL1t5tfsIAwYRUqRPkr"
        );
    }

    #[test]
    fn a_token_drawn_beside_a_key_shares_its_group_and_nothing_else() {
        let first = SessionToken::generate().unwrap();
        let next = SessionToken::generate_beside(&first.key()).unwrap();
        assert_eq!(next.key().group(), first.key().group());
        assert_ne!(next.as_str()[4..], first.as_str()[4..]);
        assert_ne!(next.key().digest(), first.key().digest());
        assert!(SessionToken::parse(next.as_str().as_bytes()).is_some());
    }

    #[test]
    fn debug_output_hides_secrets() {
        let token = SessionToken::generate().unwrap();
        assert_eq!(format!("{token:?}"), "SessionToken(..)");
        let key = token.key();
        assert!(!format!("{key:?}").contains(&key.as_str()[8..]));
    }
}
