//! How a session's User-Agent is stored: shorter, and exactly as it came.
//!
//! A browser's User-Agent is about 100 bytes, half of a session's record, and most of it is
//! made of the same few dozen tokens (`Mozilla/5.0 (`, `) AppleWebKit/537.36 (KHTML, like
//! Gecko) `, `Safari/537.36`...). Stored as it comes it needs two 64-byte chunks, and it alone
//! puts a session in a larger allocation. So each token of [`TOKENS`] is stored as one byte,
//! its code, taken from the control characters `0x01..=0x1F` but for tab (`0x09`): a header
//! value never holds one (tab aside), so a code cannot be mistaken for a character of the
//! User-Agent. A Chrome User-Agent shrinks from 101 bytes to 10, an iPhone Safari one from 135
//! to 24.
//!
//! A stored value is one of two forms, told apart by its first byte:
//!
//! - `0x00` then the User-Agent as it is: for one that holds a byte of `0x00..=0x1F` other
//!   than tab (a record made by the application may hold anything), so that nothing in it is
//!   read as a code;
//! - otherwise the compact form: every code stands for its token, every other byte for itself.
//!
//! A User-Agent stored as it came, by this branch before it compacted them, reads back
//! unchanged as a compact form with no code in it (it holds no control character but tab).
//!
//! The table is part of the stored format: a code once given keeps its token for good. The
//! codes without a token are reserved; one of them in a stored value makes it corrupt.

use crate::error::StoreError;

/// The first byte of a User-Agent stored as it is.
const RAW_MARKER: u8 = 0x00;
/// Tab: allowed in a header value, so never a code.
const TAB: u8 = 0x09;
/// The first code; [`TOKENS`]`[i]` has code `FIRST_CODE + i`, skipping [`TAB`].
const FIRST_CODE: u8 = 0x01;
/// The last byte that may be a code.
const LAST_CODE: u8 = 0x1F;

/// The tokens, in the order of their codes (`0x01`, `0x02`... skipping `0x09`). Append only:
/// changing or moving a token changes what stored sessions read as.
pub(super) const TOKENS: [&str; 26] = [
    "Mozilla/5.0 (",                               // 0x01
    "Windows NT 10.0; Win64; x64",                 // 0x02
    "Macintosh; Intel Mac OS X ",                  // 0x03
    "X11; Linux x86_64",                           // 0x04
    ") AppleWebKit/537.36 (KHTML, like Gecko) ",   // 0x05
    ") AppleWebKit/605.1.15 (KHTML, like Gecko) ", // 0x06
    "Chrome/",                                     // 0x07
    "Safari/537.36",                               // 0x08
    "Safari/605.1.15",                             // 0x0A
    "Firefox/",                                    // 0x0B
    "Gecko/20100101 ",                             // 0x0C
    "Mobile",                                      // 0x0D
    "iPhone; CPU iPhone OS ",                      // 0x0E
    " like Mac OS X",                              // 0x0F
    "Linux; Android ",                             // 0x10
    " Edg/",                                       // 0x11
    "Version/",                                    // 0x12
    ".0.0.0",                                      // 0x13
    "; rv:",                                       // 0x14
    "iPad; CPU OS ",                               // 0x15
    "Safari/604.1",                                // 0x16
    "curl/",                                       // 0x17
    "10_15_7",                                     // 0x18
    "Windows NT ",                                 // 0x19
    " OPR/",                                       // 0x1A
    "SamsungBrowser/",                             // 0x1B
];

/// The code of `TOKENS[index]`.
fn code_of(index: usize) -> u8 {
    // TOKENS has fewer entries than there are codes (a test checks it), so this cannot wrap.
    let code = FIRST_CODE + index as u8;
    if code >= TAB {
        code + 1
    } else {
        code
    }
}

/// The token of `code`, if it has one.
fn token_of(code: u8) -> Option<&'static str> {
    let index = match code {
        TAB => return None,
        c if c > TAB => c - FIRST_CODE - 1,
        c => c.checked_sub(FIRST_CODE)?,
    };
    TOKENS.get(usize::from(index)).copied()
}

/// Whether `byte` would be read as a code (or the raw marker) in the compact form.
fn is_reserved(byte: u8) -> bool {
    byte <= LAST_CODE && byte != TAB
}

/// `user_agent` as it is stored.
pub(super) fn encode(user_agent: &str) -> Vec<u8> {
    let bytes = user_agent.as_bytes();
    if bytes.iter().copied().any(is_reserved) {
        let mut raw = Vec::with_capacity(bytes.len() + 1);
        raw.push(RAW_MARKER);
        raw.extend_from_slice(bytes);
        return raw;
    }
    let mut compact = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some((&first, after)) = rest.split_first() {
        match longest_token_at(rest) {
            Some((index, len)) => {
                compact.push(code_of(index));
                rest = &rest[len..];
            }
            None => {
                compact.push(first);
                rest = after;
            }
        }
    }
    compact
}

/// The longest token `text` starts with: its index and length.
fn longest_token_at(text: &[u8]) -> Option<(usize, usize)> {
    TOKENS
        .iter()
        .enumerate()
        .filter(|(_, token)| text.starts_with(token.as_bytes()))
        .map(|(index, token)| (index, token.len()))
        .max_by_key(|&(_, len)| len)
}

/// The User-Agent a stored value holds; corrupt when it holds a code without a token or is not
/// UTF-8.
pub(super) fn decode(stored: &[u8]) -> Result<String, StoreError> {
    let bytes = match stored.split_first() {
        Some((&RAW_MARKER, raw)) => raw.to_vec(),
        _ => expand(stored)?,
    };
    String::from_utf8(bytes).map_err(StoreError::corrupt)
}

fn expand(compact: &[u8]) -> Result<Vec<u8>, StoreError> {
    let mut text = Vec::with_capacity(compact.len() * 3);
    for &byte in compact {
        if is_reserved(byte) {
            let token = token_of(byte)
                .ok_or_else(|| StoreError::corrupt("unknown code in a stored User-Agent"))?;
            text.extend_from_slice(token.as_bytes());
        } else {
            text.push(byte);
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const REAL: [&str; 12] = [
        // Chrome on Windows, macOS, Linux, Android
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
        // Firefox
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
        "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0",
        // Safari on macOS and iPhone
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
        // Edge
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
        // Tools
        "curl/8.5.0",
        "",
        "actix-login test",
    ];

    #[test]
    fn real_user_agents_round_trip_and_shrink() {
        for user_agent in REAL {
            let stored = encode(user_agent);
            assert_eq!(decode(&stored).unwrap(), user_agent);
            assert!(stored.len() <= user_agent.len(), "{user_agent}");
        }
        // Every browser's fits one 64-byte chunk, most far below.
        for user_agent in &REAL[..9] {
            let stored = encode(user_agent);
            assert!(stored.len() <= 40, "{user_agent}: {} bytes", stored.len());
        }
        let chrome = encode(REAL[2]);
        assert_eq!(chrome, b"\x01\x04\x05\x07131\x13 \x08");
    }

    #[test]
    fn every_token_has_its_own_code_and_reads_back() {
        assert!(TOKENS.len() < usize::from(LAST_CODE - FIRST_CODE));
        let mut codes: Vec<u8> = (0..TOKENS.len()).map(code_of).collect();
        for (index, &code) in codes.iter().enumerate() {
            assert!(is_reserved(code) && code != RAW_MARKER && code != TAB);
            assert_eq!(token_of(code), Some(TOKENS[index]));
            assert_eq!(encode(TOKENS[index]), vec![code]);
        }
        codes.dedup();
        assert_eq!(codes.len(), TOKENS.len());
        // The table is the stored format: these must never move.
        assert_eq!(code_of(0), 0x01);
        assert_eq!(code_of(8), 0x0A);
        assert_eq!(token_of(0x1B), Some("SamsungBrowser/"));
    }

    #[test]
    fn a_user_agent_with_code_bytes_is_stored_as_it_is() {
        for hostile in [
            "\u{1}",
            "a\u{0}b",
            "x\u{1f}",
            "\u{7}Chrome/",
            "\r\n",
            "Mozilla/5.0 (\u{5}",
        ] {
            let stored = encode(hostile);
            assert_eq!(stored[0], RAW_MARKER, "{hostile:?}");
            assert_eq!(decode(&stored).unwrap(), hostile);
        }
        // Tab and bytes past ASCII are characters of a header value, kept in the compact form.
        for legal in ["a\tb", "Firefox/1\té", "\u{7f}"] {
            let stored = encode(legal);
            assert_ne!(stored.first(), Some(&RAW_MARKER));
            assert_eq!(decode(&stored).unwrap(), legal);
        }
    }

    #[test]
    fn an_unknown_code_or_broken_utf8_is_corrupt_not_a_panic() {
        for stored in [
            &b"\x1c"[..],
            b"ab\x1f",
            b"\x1d\x01",
            b"\xff",
            b"\x00\xff",
            b"\x01\xc3",
        ] {
            assert!(
                matches!(decode(stored), Err(StoreError::Corrupt(_))),
                "{stored:?}"
            );
        }
        // A value stored as it came, before User-Agents were compacted, reads unchanged.
        assert_eq!(decode(REAL[0].as_bytes()).unwrap(), REAL[0]);
        assert_eq!(decode(b"").unwrap(), "");
        assert_eq!(decode(b"\x00").unwrap(), "");
    }

    proptest! {
        #[test]
        fn any_text_round_trips(user_agent in any::<String>()) {
            prop_assert_eq!(decode(&encode(&user_agent)).unwrap(), user_agent);
        }

        #[test]
        fn token_soup_round_trips(parts in proptest::collection::vec(
            prop_oneof![
                proptest::sample::select(TOKENS.to_vec()).prop_map(str::to_owned),
                "[ -~\t]{0,6}",
            ],
            0..20,
        )) {
            let user_agent = parts.concat();
            let stored = encode(&user_agent);
            prop_assert!(stored.len() <= user_agent.len());
            prop_assert_eq!(decode(&stored).unwrap(), user_agent);
        }

        #[test]
        fn any_bytes_decode_without_panicking(stored in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = decode(&stored);
        }
    }
}
