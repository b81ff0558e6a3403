//! Deciding whether a new password is acceptable, following NIST SP 800-63B (revision 4).
//!
//! The rules are few on purpose. Length is what makes a password hard to guess, so the policy
//! asks for enough of it (15 characters, or 8 when the account also has a second factor) and
//! allows plenty (128 characters by default). Beyond length, it turns away only what an attacker
//! would try early: passwords from breach lists, keyboard walks, repeats, sequences, dates and
//! words taken from the account itself. There are no rules about upper case, digits or symbols:
//! they push people towards `Password1!` and add nothing an attacker's word list lacks.
//!
//! Check a password when it is chosen or changed, never at login: a policy that tightens later
//! must not lock out people whose passwords it once accepted.
//!
//! ```
//! use actix_login::policy::{PasswordPolicy, PolicyViolation};
//!
//! let policy = PasswordPolicy::new();
//! let context = ["kestrel", "kestrel@example.org", "Acme Mail"];
//!
//! assert!(policy.check("glimmer rotund oxbow", &context).is_ok());
//! assert_eq!(
//!     policy.check("too short", &context),
//!     Err(PolicyViolation::TooShort { min: 15 }),
//! );
//! // Show the reason to the user as it is.
//! let refused = policy.check("1qaz2wsx3edc4rfv", &context).unwrap_err();
//! assert!(!refused.reason().is_empty());
//! ```
//!
//! Lengths are judged on the NFKC form of the password, the same form
//! [`password`](crate::password) hashes, so what the policy counts is what gets stored.

use unicode_normalization::UnicodeNormalization as _;

use crate::password::{normalized, MAX_PASSWORD_BYTES};
use zxcvbn::feedback::Warning;
use zxcvbn::matching::patterns::MatchPattern;
use zxcvbn::matching::Match;
use zxcvbn::Score;

/// NIST's minimum for a password that is the account's only factor.
const DEFAULT_MIN_LENGTH: usize = 15;

/// NIST's minimum when a second factor also guards the account, and the floor of any minimum.
const SECOND_FACTOR_MIN_LENGTH: usize = 8;

/// Room for passphrases and password managers without inviting megabyte passwords.
const DEFAULT_MAX_LENGTH: usize = 128;

/// NIST asks verifiers to allow at least this many characters.
const MAX_LENGTH_FLOOR: usize = 64;

/// The largest number of characters that always fits in [`MAX_PASSWORD_BYTES`], whatever the
/// script: UTF-8 spends at most four bytes on a code point.
const CHARS_WITHIN_BYTE_CAP: usize = MAX_PASSWORD_BYTES / 4;

/// Context words shorter than this are left out: a two-letter username or fragment of an email
/// address would mark ordinary words as personal without making any password safer.
const MIN_CONTEXT_PART: usize = 3;

/// What a new password must satisfy.
///
/// Lengths are counted in Unicode code points after NFKC normalisation, so fifteen emoji are fifteen
/// characters, and `é` counts once however it was typed.
#[derive(Clone, Debug)]
pub struct PasswordPolicy {
    min: usize,
    max: usize,
    second_factor: bool,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl PasswordPolicy {
    /// The policy for an account whose password is its only factor: at least 15 characters, at
    /// most 128.
    #[must_use]
    pub fn new() -> Self {
        Self {
            min: DEFAULT_MIN_LENGTH,
            max: DEFAULT_MAX_LENGTH,
            second_factor: false,
        }
    }

    /// Sets the minimum length in characters.
    ///
    /// A value below 8 is raised to 8, which NIST sets as the floor for any password. A minimum
    /// above the current maximum raises the maximum with it, so that some password always fits.
    #[must_use]
    pub fn min_length(mut self, min: usize) -> Self {
        self.min = min.max(SECOND_FACTOR_MIN_LENGTH);
        self.max = self.max.max(self.min);
        self
    }

    /// Sets the maximum length in characters.
    ///
    /// A value below 64 is raised to 64: long passphrases and generated passwords are the ones
    /// worth having, and NIST asks that they fit. It is never set below the minimum either.
    /// Whatever the maximum, input over [`MAX_PASSWORD_BYTES`] is refused.
    #[must_use]
    pub fn max_length(mut self, max: usize) -> Self {
        self.max = max.max(MAX_LENGTH_FLOOR).max(self.min);
        self
    }

    /// Lowers the minimum to 8 characters, for accounts that also require a second factor: a
    /// guessed password alone no longer opens them, so it may be shorter. The bar for
    /// guessability is lowered to match (see [`check`](Self::check)); without that, no password
    /// of 8 characters could pass.
    ///
    /// It replaces any minimum set before it, and [`min_length`](Self::min_length) called after
    /// it replaces the 8 but keeps the lower bar.
    #[must_use]
    pub fn with_second_factor(mut self) -> Self {
        self.min = SECOND_FACTOR_MIN_LENGTH;
        self.second_factor = true;
        self
    }

    /// Checks a newly chosen password.
    ///
    /// `context` holds words the password must not be built on because an attacker targeting
    /// this account knows them: the username, the email address, the name of the service. Each
    /// entry counts whole and also split at punctuation and spaces, so `kestrel.v@example.org`
    /// also rules out passwords made of `kestrel` and `example`. A password that merely contains
    /// such a word and has enough else to it is accepted, since the rest is what must be guessed.
    ///
    /// The password is never truncated: one over the maximum is refused, so that what the user
    /// typed is exactly what is stored.
    ///
    /// # Guessability
    ///
    /// The password is refused when zxcvbn's score is below 3, that is, when an attacker who
    /// knows `context` is estimated to need fewer than 10^8 guesses. That region is where the
    /// breach lists, keyboard patterns, repeats, dates and personal words live, and NIST asks
    /// verifiers to refuse exactly those. Asking for score 4 (10^10 guesses) instead would also
    /// refuse ordinary passphrases of two or three common words at 15 characters, which would be a
    /// composition rule in all but name.
    ///
    /// After [`with_second_factor`](Self::with_second_factor) the bar is score 2, 10^6 guesses.
    /// zxcvbn prices any 8 characters it finds no pattern in at exactly 10^8 guesses, just under
    /// score 3, so the higher bar would quietly turn NIST's minimum of 8 into 9. The lower one
    /// still refuses the common passwords themselves and the obvious patterns; a million guesses
    /// is far beyond the 100 consecutive failures NIST lets an online attacker make, and a
    /// guessed password alone does not open the account.
    ///
    /// zxcvbn examines only the first 100 characters, which bounds its running time; length alone
    /// carries passwords longer than that.
    ///
    /// # Errors
    /// The first rule the password breaks, in this order: too many bytes
    /// ([`TooLong`](PolicyViolation::TooLong)), too few or too many characters, then too easy to
    /// guess ([`ContextSpecific`](PolicyViolation::ContextSpecific),
    /// [`TooCommon`](PolicyViolation::TooCommon) or [`Predictable`](PolicyViolation::Predictable)).
    pub fn check(&self, password: &str, context: &[&str]) -> Result<(), PolicyViolation> {
        if password.len() > MAX_PASSWORD_BYTES {
            // Name a count of characters the user can actually reach: with a maximum above what
            // the byte cap allows for four-byte characters, quote what always fits.
            return Err(PolicyViolation::TooLong {
                max: self.max.min(CHARS_WITHIN_BYTE_CAP),
            });
        }

        let password = normalized(password).map_err(|_| PolicyViolation::TooLong {
            max: self.max.min(CHARS_WITHIN_BYTE_CAP),
        })?;
        let length = password.chars().count();
        if length < self.min {
            return Err(PolicyViolation::TooShort { min: self.min });
        }
        if length > self.max {
            return Err(PolicyViolation::TooLong { max: self.max });
        }

        let words = context_words(context);
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let estimate = zxcvbn::zxcvbn(&password, &words);
        let enough = if self.second_factor {
            Score::Two
        } else {
            Score::Three
        };
        if estimate.score() >= enough {
            return Ok(());
        }

        let context_lower: Vec<String> = words.iter().map(|word| word.to_lowercase()).collect();
        if estimate
            .sequence()
            .iter()
            .any(|piece| uses_context(piece, &context_lower))
        {
            return Err(PolicyViolation::ContextSpecific);
        }
        let warning = estimate.feedback().and_then(|feedback| feedback.warning());
        match warning {
            Some(
                Warning::ThisIsATop10Password
                | Warning::ThisIsATop100Password
                | Warning::ThisIsACommonPassword,
            ) => Err(PolicyViolation::TooCommon),
            Some(warning) => Err(PolicyViolation::Predictable {
                hint: warning.to_string(),
            }),
            None => Err(PolicyViolation::Predictable {
                hint: "This password is made of parts that are easy to guess.".to_owned(),
            }),
        }
    }
}

/// Why [`PasswordPolicy::check`] refused a password. The `Display` text (also from
/// [`reason`](Self::reason)) is written for the person choosing the password and safe to show
/// them as it is: it never repeats the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyViolation {
    /// Fewer characters than the policy's minimum.
    #[error("Use at least {min} characters.")]
    TooShort {
        /// The minimum, in characters.
        min: usize,
    },
    /// More characters than the policy's maximum, or more than [`MAX_PASSWORD_BYTES`] bytes.
    #[error("Use at most {max} characters.")]
    TooLong {
        /// The maximum, in characters.
        max: usize,
    },
    /// The password as a whole is on a list of common or breached passwords.
    #[error("This password is on lists of common passwords that attackers try first. Choose a different one.")]
    TooCommon,
    /// The password is built mostly from the username, email address or other words passed as
    /// context.
    #[error(
        "Don't build your password from your username, email address or the name of this site."
    )]
    ContextSpecific,
    /// The password follows a pattern that attackers try early.
    #[error("{hint} A few unrelated words make a stronger password.")]
    Predictable {
        /// What makes it easy to guess, as one sentence.
        hint: String,
    },
}

impl PolicyViolation {
    /// The sentence to show the user, the same as the `Display` text.
    #[must_use]
    pub fn reason(&self) -> String {
        self.to_string()
    }
}

/// The context entries as zxcvbn should see them: normalised like the password, whole, and split
/// into their parts, since people build passwords from the pieces of an email address as often
/// as from the whole.
fn context_words(context: &[&str]) -> Vec<String> {
    let mut words = Vec::new();
    for entry in context {
        let entry: String = entry.trim().nfkc().collect();
        words.extend(
            entry
                .split(|c: char| !c.is_alphanumeric())
                .filter(|part| *part != entry)
                .map(str::to_owned),
        );
        words.push(entry);
    }
    words.retain(|word| word.chars().count() >= MIN_CONTEXT_PART);
    words
}

/// Whether a piece of zxcvbn's cheapest explanation of the password is one of the context words
/// (lowercase, as zxcvbn compares them), looking inside repeats so that `kestrelkestrel` counts
/// too. zxcvbn keeps the name of the list a word came from private, so the word itself decides.
fn uses_context(piece: &Match, context: &[String]) -> bool {
    match &piece.pattern {
        MatchPattern::Dictionary(word) => context.contains(&word.matched_word),
        MatchPattern::Repeat(repeat) => repeat
            .base_matches
            .iter()
            .any(|base| uses_context(base, context)),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
