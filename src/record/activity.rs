//! One entry of a user's activity log: what happened to the account, when, and from where.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::LoginMethod;

/// What an [`ActivityEntry`] records. Serialises in `snake_case` (`"login"`, `"new_device"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ActivityKind {
    /// A login from a browser or client the account had logged in from before, or that no
    /// [`LoginThrottle`](crate::throttle::LoginThrottle) checked.
    Login,
    /// A login from a browser with no device cookie for the account: a new device.
    NewDevice,
    /// A login attempt on the account with the wrong credentials.
    LoginFailed,
    /// The session was ended by its own client.
    Logout,
    /// One session was ended by its owner from another session, or by the app.
    SessionRevoked,
    /// Every session of the account but the one that asked was ended.
    OtherSessionsRevoked,
    /// Every session of the account was ended ("log out everywhere", a disabled account).
    AllSessionsRevoked,
    /// The password changed, which ended the account's other sessions.
    PasswordChanged,
    /// A personal access token was created.
    TokenCreated,
    /// A personal access token was revoked.
    TokenRevoked,
    /// A one-time link of the account was used (a sign-in link, a password reset, a mail
    /// verification).
    LinkUsed,
    /// An admin started acting as the user; in the admin's log, as the user.
    ImpersonationStarted,
    /// An admin stopped acting as the user.
    ImpersonationEnded,
    /// A wrong, malformed or used second-factor code was sent for the account.
    SecondFactorFailed,
    /// The account's second factor was set up.
    SecondFactorEnrolled,
    /// New recovery codes replaced the account's old ones.
    RecoveryCodesRegenerated,
    /// A browser was trusted to skip the second factor.
    BrowserTrusted,
    /// An entry written by a newer version of this crate, of a kind this one does not know.
    #[serde(other)]
    Unknown,
}

/// One entry of a user's activity log, newest first from
/// [`Sessions::activity`](crate::Sessions::activity).
///
/// Holds nothing secret: the session id is the public handle
/// [`SessionInfo`](crate::SessionInfo) shows, never the token. Serialises as
/// `{"id","type","at","ip","user_agent","session_id"}`, with `at` in Unix seconds, and a
/// `"method"` (`"password"`, `"passkey"`…) in the entry of a login.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ActivityEntry {
    /// The store's id of the entry, to ask for the page after it (`before`). Empty in an entry
    /// not yet written.
    #[serde(default)]
    pub id: String,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: ActivityKind,
    /// When, to the second.
    #[serde(
        serialize_with = "unix_seconds",
        deserialize_with = "from_unix_seconds"
    )]
    pub at: SystemTime,
    /// The client's address, as the session list shows it.
    pub ip: Option<String>,
    /// The client's `User-Agent`.
    pub user_agent: Option<String>,
    /// The public id of the session concerned, if one was.
    pub session_id: Option<String>,
    /// How the user signed in, in the entry of a login ([`Login`](ActivityKind::Login) or
    /// [`NewDevice`](ActivityKind::NewDevice)); `None` in others, and in an entry of a method
    /// a newer version of this crate wrote.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::lenient_method"
    )]
    pub method: Option<LoginMethod>,
}

impl ActivityEntry {
    /// An entry of `kind` at `at`, with no client and no session.
    pub fn new(kind: ActivityKind, at: SystemTime) -> Self {
        Self {
            id: String::new(),
            kind,
            at,
            ip: None,
            user_agent: None,
            session_id: None,
            method: None,
        }
    }

    /// With the client's address and `User-Agent`.
    #[must_use]
    pub fn with_client(mut self, ip: Option<String>, user_agent: Option<String>) -> Self {
        self.ip = ip;
        self.user_agent = user_agent;
        self
    }

    /// With the method of the login it records.
    #[must_use]
    pub fn with_method(mut self, method: Option<LoginMethod>) -> Self {
        self.method = method;
        self
    }

    /// With the public id of the session concerned.
    #[must_use]
    pub fn with_session(mut self, session_id: Option<String>) -> Self {
        self.session_id = session_id;
        self
    }
}

/// How long a user's activity log is and how long it is kept: see
/// [`LoginMiddlewareBuilder::activity_log`](crate::LoginMiddlewareBuilder::activity_log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActivityLimits {
    /// The most entries kept per user; older ones are dropped as new ones come.
    pub max_entries: usize,
    /// How long a user's log is kept after its last entry.
    pub keep_for: Duration,
}

fn unix_seconds<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs())
}

fn from_unix_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
    let secs = u64::deserialize(d)?;
    UNIX_EPOCH
        .checked_add(Duration::from_secs(secs))
        .ok_or_else(|| serde::de::Error::custom("time out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_of_kinds_a_newer_version_writes_read_as_unknown() {
        let json = r#"{"type":"passkey_added","at":1700000000,"ip":null,"user_agent":null,"session_id":null}"#;
        let entry: ActivityEntry = serde_json::from_str(json).unwrap();
        assert_eq!(entry.kind, ActivityKind::Unknown);
        assert_eq!(entry.id, "");
    }

    #[test]
    fn entries_serialise_as_the_apps_show_them() {
        let entry =
            ActivityEntry::new(ActivityKind::NewDevice, UNIX_EPOCH + Duration::from_secs(5))
                .with_client(Some("192.0.2.1".into()), None)
                .with_session(Some("abc".into()));
        assert_eq!(
            serde_json::to_string(&entry).unwrap(),
            r#"{"id":"","type":"new_device","at":5,"ip":"192.0.2.1","user_agent":null,"session_id":"abc"}"#
        );
    }

    #[test]
    fn a_time_out_of_range_is_an_error_not_a_panic() {
        let json = format!(
            r#"{{"type":"login","at":{},"ip":null,"user_agent":null,"session_id":null}}"#,
            u64::MAX
        );
        assert!(serde_json::from_str::<ActivityEntry>(&json).is_err());
    }
}
