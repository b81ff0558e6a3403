//! How a login proved who the user is: in its event, its activity entry and its session.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How a login proved who the user is; set with [`Login::method`](crate::Login::method).
/// Serialises in `snake_case` (`"password"`, `"passkey"`, `"link"`, `"external"`), as the
/// [security events](crate::events), the activity log and [`SessionInfo`](crate::SessionInfo)
/// show it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LoginMethod {
    /// A password (the default).
    #[default]
    Password,
    /// A passkey (WebAuthn): the `passkeys` module's sign-in sets it.
    Passkey,
    /// A one-time link sent by mail ([`LinkPurpose::SignIn`](crate::links::LinkPurpose::SignIn),
    /// or a password reset that logs in).
    Link,
    /// Another provider vouched for the user (OAuth 2, OpenID Connect).
    External,
}

impl LoginMethod {
    /// Whether this is the default, which a record leaves out.
    pub(crate) fn is_password(&self) -> bool {
        *self == LoginMethod::Password
    }

    /// The one-letter code a session record keeps.
    pub(super) fn code(self) -> &'static str {
        match self {
            LoginMethod::Password => "p",
            LoginMethod::Passkey => "k",
            LoginMethod::Link => "l",
            LoginMethod::External => "e",
        }
    }

    pub(super) fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "p" => LoginMethod::Password,
            "k" => LoginMethod::Passkey,
            "l" => LoginMethod::Link,
            "e" => LoginMethod::External,
            _ => return None,
        })
    }
}

/// The compact form of a [`LoginMethod`] in a session record: one letter.
pub(crate) mod compact {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(method: &LoginMethod, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(method.code())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<LoginMethod, D::Error> {
        let code = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        LoginMethod::from_code(&code)
            .ok_or_else(|| serde::de::Error::custom("unknown login method"))
    }
}

/// An activity entry's method, read leniently: one a newer version wrote, and this one does
/// not know, reads as none rather than making the entry unreadable.
pub(crate) fn lenient<'de, D: Deserializer<'de>>(d: D) -> Result<Option<LoginMethod>, D::Error> {
    let name = Option::<std::borrow::Cow<'de, str>>::deserialize(d)?;
    Ok(name
        .and_then(|name| serde_json::from_value(serde_json::Value::String(name.into_owned())).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_has_a_code_that_reads_back() {
        for method in [
            LoginMethod::Password,
            LoginMethod::Passkey,
            LoginMethod::Link,
            LoginMethod::External,
        ] {
            assert_eq!(LoginMethod::from_code(method.code()), Some(method));
        }
        assert_eq!(LoginMethod::from_code("z"), None);
    }

    #[test]
    fn methods_serialise_in_snake_case() {
        assert_eq!(
            serde_json::to_string(&LoginMethod::Passkey).unwrap(),
            r#""passkey""#
        );
    }
}
