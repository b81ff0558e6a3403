use super::*;

const NO_CONTEXT: &[&str] = &[];

/// `len` characters of lowercase letters and spaces with no pattern zxcvbn would find, so
/// that only the length rules decide.
fn varied(len: usize) -> String {
    let mut state: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let letters = "abcdefghijklmnopqrstuvwxyz ";
            letters.chars().nth(state as usize % 27).unwrap_or('z')
        })
        .collect()
}

#[test]
fn fourteen_characters_are_too_short_and_fifteen_are_enough() {
    let policy = PasswordPolicy::new();
    assert_eq!(
        policy.check("xqzvbmwrtlpkhg", NO_CONTEXT),
        Err(PolicyViolation::TooShort { min: 15 })
    );
    assert_eq!(policy.check("xqzvbmwrtlpkhgd", NO_CONTEXT), Ok(()));
}

#[test]
fn a_password_of_exactly_the_minimum_is_accepted() {
    let policy = PasswordPolicy::new().min_length(20);
    let twenty = "tsu neb quix drovale";
    assert_eq!(twenty.chars().count(), 20);
    assert_eq!(policy.check(twenty, NO_CONTEXT), Ok(()));
    assert_eq!(
        policy.check("tsu neb quix droval", NO_CONTEXT),
        Err(PolicyViolation::TooShort { min: 20 })
    );
}

#[test]
fn a_second_factor_allows_eight_characters() {
    let eight = "jq8mx2vr";
    assert_eq!(
        PasswordPolicy::new().check(eight, NO_CONTEXT),
        Err(PolicyViolation::TooShort { min: 15 })
    );
    let policy = PasswordPolicy::new().with_second_factor();
    assert_eq!(policy.check(eight, NO_CONTEXT), Ok(()));
    assert_eq!(
        policy.check("jq8mx2v", NO_CONTEXT),
        Err(PolicyViolation::TooShort { min: 8 })
    );
    // The lower bar still keeps out what is on the lists.
    assert_eq!(
        policy.check("baseball", NO_CONTEXT),
        Err(PolicyViolation::TooCommon)
    );
}

#[test]
fn a_longer_minimum_after_the_second_factor_keeps_the_lower_bar() {
    // About 10^7 guesses: enough next to a second factor, not without one.
    let middling = "dragon1989x";
    let policy = PasswordPolicy::new().with_second_factor().min_length(9);
    assert_eq!(
        policy.check("jq8mx2vr", NO_CONTEXT),
        Err(PolicyViolation::TooShort { min: 9 })
    );
    assert_eq!(policy.check(middling, NO_CONTEXT), Ok(()));
    let refused = PasswordPolicy::new()
        .min_length(9)
        .check(middling, NO_CONTEXT);
    assert!(
        matches!(refused, Err(PolicyViolation::Predictable { .. })),
        "{refused:?}"
    );
}

#[test]
fn the_minimum_never_drops_below_eight() {
    let policy = PasswordPolicy::new().min_length(0);
    assert_eq!(
        policy.check("", NO_CONTEXT),
        Err(PolicyViolation::TooShort { min: 8 })
    );
}

#[test]
fn the_empty_password_is_too_short() {
    assert_eq!(
        PasswordPolicy::new().check("", NO_CONTEXT),
        Err(PolicyViolation::TooShort { min: 15 })
    );
}

#[test]
fn one_character_over_the_maximum_is_refused_not_truncated() {
    let policy = PasswordPolicy::new();
    let over = varied(129);
    let at_max: String = over.chars().take(128).collect();
    assert_eq!(policy.check(&at_max, NO_CONTEXT), Ok(()));
    // A policy that truncated would see `at_max` here and accept it.
    assert_eq!(
        policy.check(&over, NO_CONTEXT),
        Err(PolicyViolation::TooLong { max: 128 })
    );
}

#[test]
fn the_maximum_is_never_below_sixty_four() {
    let policy = PasswordPolicy::new().max_length(10);
    assert_eq!(policy.check(&varied(64), NO_CONTEXT), Ok(()));
    assert_eq!(
        policy.check(&varied(65), NO_CONTEXT),
        Err(PolicyViolation::TooLong { max: 64 })
    );
}

#[test]
fn a_minimum_above_the_maximum_raises_the_maximum() {
    let policy = PasswordPolicy::new().min_length(200).max_length(64);
    assert_eq!(policy.check(&varied(200), NO_CONTEXT), Ok(()));
    assert_eq!(
        policy.check(&varied(201), NO_CONTEXT),
        Err(PolicyViolation::TooLong { max: 200 })
    );
}

#[test]
fn emoji_count_as_one_character_each() {
    let fifteen = "😀😁😂🤣😃😄😅😆😉😊😋😎😍😘🥰";
    assert_eq!(fifteen.len(), 60, "four bytes each");
    let policy = PasswordPolicy::new();
    assert_eq!(policy.check(fifteen, NO_CONTEXT), Ok(()));
    let fourteen: String = fifteen.chars().skip(1).collect();
    assert_eq!(
        policy.check(&fourteen, NO_CONTEXT),
        Err(PolicyViolation::TooShort { min: 15 })
    );
}

#[test]
fn a_long_passphrase_with_spaces_accents_and_emoji_is_accepted() {
    let phrase = "Mon vélo bleu 🔑 dort sous le pont près du marché aux fleurs ! ok";
    assert_eq!(phrase.chars().count(), 64);
    assert_eq!(PasswordPolicy::new().check(phrase, NO_CONTEXT), Ok(()));
}

#[test]
fn lowercase_letters_alone_are_enough() {
    assert_eq!(
        PasswordPolicy::new().check("zqvnrmtkpwlhdxcbefsy", NO_CONTEXT),
        Ok(())
    );
}

#[test]
fn a_common_password_of_sixteen_characters_is_too_common() {
    let refused = PasswordPolicy::new().check("1qaz2wsx3edc4rfv", NO_CONTEXT);
    assert_eq!(refused, Err(PolicyViolation::TooCommon));
}

#[test]
fn a_top_ten_password_is_too_common_even_with_a_second_factor() {
    let policy = PasswordPolicy::new().with_second_factor();
    assert_eq!(
        policy.check("password", NO_CONTEXT),
        Err(PolicyViolation::TooCommon)
    );
}

#[test]
fn long_but_predictable_passwords_are_refused_with_a_reason() {
    let policy = PasswordPolicy::new();
    // zxcvbn may explain "123456789012345" either as a sequence or as a variant of a common
    // password, so only the presence of a reason is checked for it.
    for (password, hint) in [
        ("passwordpassword", "Repeats like"),
        ("123456789012345", ""),
        ("abcdefghijklmnop", "Sequences like abc"),
        ("aaaaaaaaaaaaaaa", "Repeats like \"aaa\""),
    ] {
        let Err(refused) = policy.check(password, NO_CONTEXT) else {
            panic!("{password:?} was accepted");
        };
        assert!(
            matches!(
                &refused,
                PolicyViolation::Predictable { hint: h } if h.contains(hint) && h.len() > 10
            ),
            "{password:?}: {refused:?}"
        );
        assert!(refused.reason().contains(hint), "{password:?}: {refused}");
    }
}

#[test]
fn a_password_built_from_the_account_is_refused() {
    let policy = PasswordPolicy::new();
    let context = ["kestrel.vandermolen@example.org"];
    // Strong to a stranger; not to someone who knows whose account it is.
    assert_eq!(policy.check("kestrelvandermolen", NO_CONTEXT), Ok(()));
    let refused = policy.check("kestrelvandermolen", &context);
    assert_eq!(refused, Err(PolicyViolation::ContextSpecific));
    assert_eq!(
        policy.check("kestrel.vandermolen@example.org", &context),
        Err(PolicyViolation::ContextSpecific)
    );
    assert_eq!(
        policy.check("KestrelKestrelKestrel", &["kestrel"]),
        Err(PolicyViolation::ContextSpecific)
    );
}

#[test]
fn context_entries_count_whole_and_in_parts_of_three_or_more() {
    let words = context_words(&["", "   ", "ox", " Kestrel.V@example.org ", "Ａｃｍｅ Mail"]);
    assert_eq!(
        words,
        [
            "Kestrel",
            "example",
            "org",
            "Kestrel.V@example.org",
            "Acme",
            "Mail",
            "Acme Mail"
        ]
    );
}

#[test]
fn composed_and_decomposed_accents_normalise_alike() {
    let composed = "caf\u{e9} au lait";
    let decomposed = "cafe\u{301} au lait";
    assert_ne!(composed, decomposed);
    assert_eq!(
        *normalized(composed).unwrap(),
        *normalized(decomposed).unwrap()
    );
    assert_eq!(*normalized(decomposed).unwrap(), composed);
    // Compatibility forms too: full-width letters become ordinary ones.
    assert_eq!(*normalized("ｐａｓｓ").unwrap(), "pass");
}

#[test]
fn length_is_counted_after_normalisation() {
    // Fifteen characters once composed, thirty as typed: counted as fifteen.
    let decomposed = "e\u{301}".repeat(15);
    assert_eq!(decomposed.chars().count(), 30);
    let policy = PasswordPolicy::new();
    let refused = policy.check(&decomposed, NO_CONTEXT);
    // Too easy to guess, but the length rules let it through.
    assert!(
        matches!(refused, Err(PolicyViolation::Predictable { .. })),
        "{refused:?}"
    );
    let fourteen = "e\u{301}".repeat(14);
    assert_eq!(
        policy.check(&fourteen, NO_CONTEXT),
        Err(PolicyViolation::TooShort { min: 15 })
    );
}

#[test]
fn input_over_the_byte_cap_is_too_long() {
    let policy = PasswordPolicy::new();
    assert_eq!(
        policy.check(&"x".repeat(MAX_PASSWORD_BYTES + 1), NO_CONTEXT),
        Err(PolicyViolation::TooLong { max: 128 })
    );
    assert_eq!(
        policy.check(&"🔑".repeat(1_000_000), NO_CONTEXT),
        Err(PolicyViolation::TooLong { max: 128 })
    );
    // With a large maximum, the reported limit is one that fits in any script.
    let roomy = PasswordPolicy::new().max_length(2000);
    assert_eq!(
        roomy.check(&"é".repeat(600), NO_CONTEXT),
        Err(PolicyViolation::TooLong { max: 256 })
    );
    // 256 four-byte characters fit: what refuses them is the repetition, not the length.
    let fits = roomy.check(&"🔑".repeat(256), NO_CONTEXT);
    assert!(
        matches!(fits, Err(PolicyViolation::Predictable { .. })),
        "{fits:?}"
    );
}

#[test]
fn odd_input_is_judged_not_panicked_on() {
    let policy = PasswordPolicy::new();
    for input in [
        "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
        "\u{301}\u{301}\u{301}\u{301}\u{301}\u{301}\u{301}\u{301}\u{301}\u{301}\u{301}\u{301}\u{301}\u{301}\u{301}",
        "\u{fdfa}\u{fdfa}\u{fdfa}\u{fdfa}\u{fdfa}\u{fdfa}\u{fdfa}\u{fdfa}",
        "\u{202e}\u{200b}\u{feff}\u{fffd}",
    ] {
        let _ = policy.check(input, &[input, "\u{301}"]);
    }
    // U+FDFA grows to 18 characters under NFKC: eight of them are 144, over the maximum.
    assert_eq!(
        policy.check(&"\u{fdfa}".repeat(8), NO_CONTEXT),
        Err(PolicyViolation::TooLong { max: 128 })
    );
}

#[test]
fn reasons_are_the_display_text() {
    assert_eq!(
        PolicyViolation::TooShort { min: 15 }.reason(),
        "Use at least 15 characters."
    );
    assert_eq!(
        PolicyViolation::TooLong { max: 128 }.reason(),
        "Use at most 128 characters."
    );
    for violation in [
        PolicyViolation::TooCommon,
        PolicyViolation::ContextSpecific,
        PolicyViolation::Predictable {
            hint: "Dates are often easy to guess.".to_owned(),
        },
    ] {
        assert_eq!(violation.reason(), violation.to_string());
        assert!(violation.reason().ends_with('.'));
    }
}
