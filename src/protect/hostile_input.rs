//! Property tests for the usernames and passwords a login form hands over.
//!
//! Both are folded before use (NFKC; usernames also trimmed and lowercased) and both have a
//! byte cap checked before any work. The properties check that the caps hold in bytes whatever
//! the script, that folding cannot blow an input up without bound, and that every spelling of
//! the same name or password lands on the same counter or hash input.
//!
//! Each property runs a modest number of cases so the suite stays fast; `PROPTEST_CASES` sets
//! them all for a long run.

#![cfg(any(feature = "throttle", feature = "password"))]

use proptest::prelude::*;
use proptest::sample::select;

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

/// Characters of every UTF-8 width, and the ones NFKC grows the most: U+FDFA becomes 18
/// characters, U+3300 four.
const WIDE: [char; 8] = ['a', 'é', '€', '𝒜', '\u{fdfa}', '\u{3300}', 'ﬃ', '\u{a8}'];

/// Any text, and text of one repeated character whose length in bytes lands near `cap`, where
/// an off-by-one or a count of characters instead of bytes would show.
fn near_the_cap(cap: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::collection::vec(any::<char>(), 0..200).prop_map(String::from_iter),
        (select(WIDE.to_vec()), -6isize..6).prop_map(move |(c, off)| {
            c.to_string()
                .repeat((cap / c.len_utf8()).saturating_add_signed(off))
        }),
        (select(WIDE.to_vec()), 0..cap).prop_map(|(c, n)| c.to_string().repeat(n / c.len_utf8())),
    ]
}

/// `name` in fullwidth forms, which NFKC folds back to ASCII.
fn fullwidth(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '!'..='~' => char::from_u32(c as u32 - 0x21 + 0xff01).unwrap(),
            _ => c,
        })
        .collect()
}

#[cfg(feature = "throttle")]
mod username {
    use actix_web::test::TestRequest;
    use proptest::prelude::*;
    use proptest::sample::select;

    use super::super::throttle::{account_hash, fold_username, LoginThrottle, MAX_USERNAME_BYTES};
    use super::{config, fullwidth, near_the_cap};
    use crate::error::Error;
    use crate::store::memory::MemoryStore;

    fn padding() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            select(vec![" ", "\t", "\n", "\u{a0}", "\u{3000}", "\u{2003}"]),
            0..3,
        )
        .prop_map(|p| p.concat())
    }

    proptest! {
        #![proptest_config(config(512))]

        /// Whatever the name, its counter is named by 32 hex digits: no name sets the size of
        /// a key in the store.
        #[test]
        fn any_name_is_counted_under_32_hex_digits(name in near_the_cap(MAX_USERNAME_BYTES)) {
            let hash = account_hash(&name);
            prop_assert_eq!(hash.len(), 32);
            prop_assert!(hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
            prop_assert_eq!(hash, account_hash(&name));
        }

        #[test]
        fn a_name_shares_its_counter_across_case_padding_and_width(
            name in "[!-~]{1,24}",
            upper in proptest::collection::vec(any::<bool>(), 24),
            wide in any::<bool>(),
            before in padding(),
            after in padding(),
        ) {
            let cased: String = name
                .chars()
                .zip(upper)
                .map(|(c, up)| if up { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() })
                .collect();
            let cased = if wide { fullwidth(&cased) } else { cased };
            prop_assert_eq!(account_hash(&format!("{before}{cased}{after}")), account_hash(&name));
        }

        /// A name typed the way the throttle folds it is the same name: an app that stores
        /// names folded cannot hand an attacker a second counter for one account.
        #[test]
        fn a_folded_name_keeps_its_counter(name in near_the_cap(64)) {
            let folded = fold_username(&name);
            prop_assert_eq!(account_hash(&folded), account_hash(&name), "{:?}", folded);
        }

        /// The cap counts bytes, so a name of four-byte characters is capped as soon as one of
        /// ASCII, and it is checked before anything else.
        #[test]
        fn names_over_the_cap_are_refused_before_any_work(
            name in near_the_cap(MAX_USERNAME_BYTES),
        ) {
            let throttle = LoginThrottle::new(MemoryStore::new());
            let req = TestRequest::default().to_http_request();
            let result = actix_web::rt::System::new().block_on(throttle.attempt(&req, &name, None));
            match result {
                Err(Error::InvalidInput) => prop_assert!(name.len() > MAX_USERNAME_BYTES),
                // Without the middleware, the next check refuses it.
                Err(Error::MissingMiddleware) => prop_assert!(name.len() <= MAX_USERNAME_BYTES),
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }
}

#[cfg(feature = "password")]
mod password {
    use proptest::prelude::*;
    use unicode_normalization::UnicodeNormalization as _;

    use super::super::password::{normalized, PasswordError, MAX_PASSWORD_BYTES};
    use super::{config, fullwidth, near_the_cap};

    /// NFKC grows UTF-8 text at most elevenfold (UAX #15, "Stream-Safe Text Format"): U+FDFA,
    /// three bytes, becomes 33.
    const NFKC_GROWTH: usize = 11;

    proptest! {
        #![proptest_config(config(512))]

        #[test]
        fn normalized_refuses_only_over_the_cap_and_stays_bounded(
            password in near_the_cap(MAX_PASSWORD_BYTES),
        ) {
            match normalized(&password) {
                Err(PasswordError::TooLong) => prop_assert!(password.len() > MAX_PASSWORD_BYTES),
                Err(other) => prop_assert!(false, "{}", other),
                Ok(folded) => {
                    prop_assert!(password.len() <= MAX_PASSWORD_BYTES);
                    prop_assert!(folded.len() <= NFKC_GROWTH * password.len());
                    prop_assert!(unicode_normalization::is_nfkc(&folded));
                    if folded.len() <= MAX_PASSWORD_BYTES {
                        prop_assert_eq!(&*normalized(&folded).unwrap(), &*folded);
                    }
                }
            }
        }

        /// A password typed on another keyboard or pasted from another app arrives composed,
        /// decomposed or in fullwidth forms; each must hash like the original.
        #[test]
        fn every_spelling_of_a_password_normalises_alike(
            password in proptest::collection::vec(any::<char>(), 0..64).prop_map(String::from_iter),
            ascii in "[!-~]{0,32}",
        ) {
            let reference = normalized(&password).unwrap();
            for spelling in [
                password.nfc().collect::<String>(),
                password.nfd().collect(),
                password.nfkd().collect(),
            ] {
                if let Ok(folded) = normalized(&spelling) {
                    prop_assert_eq!(&*folded, &*reference);
                }
            }
            prop_assert_eq!(
                &*normalized(&fullwidth(&ascii)).unwrap(),
                &*normalized(&ascii).unwrap()
            );
        }
    }
}

/// What the long property runs found, kept as the exact inputs they shrank to.
#[cfg(feature = "throttle")]
mod findings {
    use super::super::throttle::{account_hash, fold_username};

    /// `"\u{a8}"` (diaeresis) was trimmed before NFKC turned it into a leading space:
    /// it folded to `" \u{308}"`, whose own fold is `"\u{308}"`, so one account had two
    /// counters.
    #[test]
    fn finding_a_folded_name_keeps_its_counter() {
        for name in ["\u{a8}", "\u{a8}alice", "alice\u{a8}", "\u{2003}\u{a8}"] {
            let folded = fold_username(name);
            assert_eq!(fold_username(&folded), folded, "{name:?}");
            assert_eq!(account_hash(&folded), account_hash(name), "{name:?}");
        }
        assert_eq!(fold_username("\u{a8}"), "\u{308}");
    }
}
