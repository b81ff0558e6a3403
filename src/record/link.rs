//! One-time links as stores see them: a key derived from the link's secret, and what the link
//! was issued for.

use std::fmt;
use std::time::SystemTime;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Bytes of the digest kept as a link's key: 192 bits, past any guessing, in 32 characters.
const DIGEST_BYTES: usize = 24;
/// Length of a link key's text form.
const KEY_LEN: usize = 32;

/// What a one-time link is for. A link works for its own purpose only: the purpose is part of
/// what its key is derived from, so a link presented for another purpose is not even found
/// (and is not used up by the attempt).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LinkPurpose {
    /// "Forgot your password?": whoever opens it may set a new password.
    PasswordReset,
    /// Proves that the account's owner reads mail at the address it was sent to.
    VerifyEmail,
    /// Confirms a new address for an account: sent to the new address, it proves the owner
    /// reads mail there before the account switches to it.
    ChangeEmail,
    /// Signs in without a password ("magic link").
    SignIn,
    /// "This wasn't me": ends one session of the account, the one it was issued for (a new
    /// sign-in the user is told about), and nothing else. Issued with
    /// [`OneTimeLinks::issue_end_session`](crate::links::OneTimeLinks::issue_end_session).
    EndSession,
}

impl LinkPurpose {
    /// Every purpose, for settings that apply to all.
    pub(crate) const ALL: [LinkPurpose; 5] = [
        LinkPurpose::PasswordReset,
        LinkPurpose::VerifyEmail,
        LinkPurpose::ChangeEmail,
        LinkPurpose::SignIn,
        LinkPurpose::EndSession,
    ];

    /// A short, stable name, for key derivation and logs.
    pub(crate) fn tag(self) -> &'static str {
        match self {
            LinkPurpose::PasswordReset => "password_reset",
            LinkPurpose::VerifyEmail => "verify_email",
            LinkPurpose::ChangeEmail => "change_email",
            LinkPurpose::SignIn => "sign_in",
            LinkPurpose::EndSession => "end_session",
        }
    }

    /// Whether a link of this purpose dies when the account's password changes. All but
    /// [`EndSession`](LinkPurpose::EndSession) do: whoever signed in may have changed the
    /// password from the very session that link ends, and ending a session only takes access
    /// away.
    pub(crate) fn bound_to_password(self) -> bool {
        self != LinkPurpose::EndSession
    }

    pub(crate) fn index(self) -> usize {
        match self {
            LinkPurpose::PasswordReset => 0,
            LinkPurpose::VerifyEmail => 1,
            LinkPurpose::ChangeEmail => 2,
            LinkPurpose::SignIn => 3,
            LinkPurpose::EndSession => 4,
        }
    }
}

impl fmt::Display for LinkPurpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tag())
    }
}

/// The name a one-time link is stored under: a SHA-256 of its purpose and its secret, truncated
/// to 192 bits, in base64url (32 characters). It cannot be turned back into the link.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct LinkKey(String);

impl LinkKey {
    /// The key of the link with `secret` for `purpose`.
    pub(crate) fn of_secret(purpose: LinkPurpose, secret: &str) -> Self {
        let digest = Sha256::new()
            .chain_update(b"actix-login link\0")
            .chain_update(purpose.tag().as_bytes())
            .chain_update(b"\0")
            .chain_update(secret.as_bytes())
            .finalize();
        let mut text = String::with_capacity(KEY_LEN);
        URL_SAFE_NO_PAD.encode_string(&digest[..DIGEST_BYTES], &mut text);
        Self(text)
    }

    /// Reads a key back from its text form (32 base64url characters encoding 24 bytes), as a
    /// store that lists its keys needs to; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let mut digest = [0u8; DIGEST_BYTES];
        let valid = text.len() == KEY_LEN
            && matches!(
                URL_SAFE_NO_PAD.decode_slice(text, &mut digest),
                Ok(DIGEST_BYTES)
            );
        valid.then(|| Self(text.to_owned()))
    }

    /// The text form, for building a store's own key.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Eight characters, for logs.
    pub fn short(&self) -> &str {
        self.0.get(..8).unwrap_or_default()
    }
}

impl fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LinkKey({}..)", self.short())
    }
}

/// What a one-time link was issued for, as a store keeps it: whose account, for which purpose,
/// to which mail address, bound to which credentials version, until when, and for an
/// [`EndSession`](LinkPurpose::EndSession) link which session (its public id).
///
/// Stores keep it as it is and give it back unchanged; it serialises to a small JSON object
/// for stores that keep text. The link's secret is not in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRecord {
    #[serde(rename = "p")]
    purpose: LinkPurpose,
    #[serde(rename = "u")]
    user_id: String,
    #[serde(rename = "a")]
    address: String,
    /// The hashed credentials version the account had when the link was issued.
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    credentials: Option<String>,
    #[serde(rename = "e", with = "unix_ms")]
    expires_at: SystemTime,
    /// The public id of the session an [`EndSession`](LinkPurpose::EndSession) link ends.
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    session_id: Option<String>,
}

impl LinkRecord {
    pub(crate) fn new(
        purpose: LinkPurpose,
        user_id: impl Into<String>,
        address: impl Into<String>,
        credentials: Option<String>,
        expires_at: SystemTime,
    ) -> Self {
        Self {
            purpose,
            user_id: user_id.into(),
            address: address.into(),
            credentials,
            expires_at,
            session_id: None,
        }
    }

    /// The record of a link that ends the session whose public id is `session_id`.
    pub(crate) fn for_session(mut self, session_id: Option<&str>) -> Self {
        self.session_id = session_id.map(str::to_owned);
        self
    }

    /// The public id of the session an [`EndSession`](LinkPurpose::EndSession) link ends;
    /// `None` for other links.
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// What the link is for.
    pub fn purpose(&self) -> LinkPurpose {
        self.purpose
    }

    /// The account the link acts on.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// The mail address the link was sent to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The credentials version (hashed) the account had when the link was issued, if the store
    /// had one.
    pub fn credentials(&self) -> Option<&str> {
        self.credentials.as_deref()
    }

    /// When the link stops working.
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }
}

mod unix_ms {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    use crate::record::{from_unix_millis, unix_millis};

    pub(super) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(unix_millis(*t))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        u64::deserialize(d).map(from_unix_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn keys_depend_on_purpose_and_secret_and_parse_back() {
        let a = LinkKey::of_secret(LinkPurpose::PasswordReset, "secret");
        let b = LinkKey::of_secret(LinkPurpose::SignIn, "secret");
        let c = LinkKey::of_secret(LinkPurpose::PasswordReset, "secres");
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.as_str().len(), KEY_LEN);
        assert_eq!(LinkKey::parse(a.as_str()), Some(a.clone()));
        assert!(!a.as_str().contains("secret"));
        for bad in [
            "",
            "short",
            &"A".repeat(33),
            &format!("{}*", &a.as_str()[..31]),
        ] {
            assert!(LinkKey::parse(bad).is_none(), "{bad}");
        }
        assert!(!format!("{a:?}").contains(&a.as_str()[8..]));
    }

    #[test]
    fn records_round_trip_through_json() {
        let at = from_unix(1_800_000_000_123);
        let record = LinkRecord::new(
            LinkPurpose::VerifyEmail,
            "7",
            "ann@example.test",
            Some("v1".into()),
            at,
        );
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(
            json,
            r#"{"p":"verify_email","u":"7","a":"ann@example.test","c":"v1","e":1800000000123}"#
        );
        assert_eq!(serde_json::from_str::<LinkRecord>(&json).unwrap(), record);
        let none = LinkRecord::new(LinkPurpose::SignIn, "7", "a@b", None, at);
        let json = serde_json::to_string(&none).unwrap();
        assert_eq!(serde_json::from_str::<LinkRecord>(&json).unwrap(), none);
        let end =
            LinkRecord::new(LinkPurpose::EndSession, "7", "a@b", None, at).for_session(Some("s1"));
        let json = serde_json::to_string(&end).unwrap();
        assert_eq!(
            json,
            r#"{"p":"end_session","u":"7","a":"a@b","e":1800000000123,"s":"s1"}"#
        );
        assert_eq!(serde_json::from_str::<LinkRecord>(&json).unwrap(), end);
    }

    fn from_unix(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }
}
