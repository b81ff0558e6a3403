//! What a store keeps for one session: the record of who it belongs to, and the app's data.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

mod activity;
#[cfg(feature = "redis")]
mod binary;
mod data;
mod deferred;
mod key;
mod link;
mod method;

pub use self::activity::{ActivityEntry, ActivityKind, ActivityLimits};
#[cfg(feature = "redis")]
pub(crate) use self::binary::VERSION as BINARY_VERSION;
#[cfg(feature = "redis")]
pub(crate) use self::data::{entry_size, ENTRY_OVERHEAD};
pub use self::data::{DataChange, SessionData};
use self::deferred::Deferred;
pub use self::key::SessionKey;
pub use self::link::{LinkKey, LinkPurpose, LinkRecord};
pub(crate) use self::method::lenient as lenient_method;
pub use self::method::LoginMethod;

/// One session as the store keeps it: who is logged in, the app's profile of that user,
/// their roles, where the login came from, and the session's fixed timestamps.
///
/// A session without a login, started by a visitor's first write of
/// [session data](crate::Session::insert), is *anonymous*: its user id is empty, its profile is
/// `null`, it has no roles and belongs to no user's index.
///
/// The record never holds the session token or anything derived from it; the store finds it
/// under the token's [`SessionKey`]. Its `id` is a separate random public
/// handle that stays the same when the token is rotated, for listing and revoking sessions.
/// Times are kept as Unix milliseconds so the encoded record stays small. It serialises (with
/// serde) as compact JSON; `RedisStore` keeps it in a smaller binary form of its own.
///
/// Cloning is cheap (the fields are shared), so a cache can hand out copies freely.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionRecord(Arc<Fields>);

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Fields {
    // Short field names: the record is stored once per session, and Redis memory per session is
    // worth a little readability.
    #[serde(rename = "i")]
    id: String,
    #[serde(rename = "u")]
    user_id: String,
    /// Kept as raw JSON: the record is decoded without knowing the app's profile type, and the
    /// profile is decoded once, straight into that type, by the extractor.
    #[serde(rename = "p")]
    user: Box<RawValue>,
    #[serde(rename = "c")]
    created_at: u64,
    /// Absent until the user reauthenticates: until then it is `created_at`, and leaving it out
    /// keeps a typical record within one smaller Redis allocation.
    #[serde(rename = "a", default, skip_serializing_if = "Option::is_none")]
    authenticated_at: Option<u64>,
    #[serde(rename = "x")]
    expires_at: u64,
    #[serde(rename = "r", default, skip_serializing_if = "Vec::is_empty")]
    roles: Vec<String>,
    /// Where the login came from: read by session lists and events only, so kept as the store
    /// decoded it until then.
    #[serde(rename = "ip", default, skip_serializing_if = "Option::is_none")]
    ip: Option<Deferred>,
    #[serde(rename = "ua", default, skip_serializing_if = "Option::is_none")]
    user_agent: Option<Deferred>,
    /// Absent for the common case, a browser session that ends with the browser.
    #[serde(rename = "k", default, skip_serializing_if = "Kind::is_browser")]
    kind: Kind,
    /// Present in a session an admin impersonates the user through.
    #[serde(rename = "im", default, skip_serializing_if = "Option::is_none")]
    impersonation: Option<Impersonation>,
    /// Absent for the common case, a login by password on an account without a second factor.
    #[serde(rename = "f", default, skip_serializing_if = "Factors::is_password")]
    factors: Factors,
    /// How the user signed in, as one letter; absent for the common case, a password.
    #[serde(
        rename = "m",
        default,
        skip_serializing_if = "LoginMethod::is_password",
        with = "method::compact"
    )]
    method: LoginMethod,
    /// Present only in a login waiting for its second factor, from a browser that brought no
    /// device cookie for the account: the login's event, once the factor is proven, says so.
    #[serde(rename = "n", default, skip_serializing_if = "std::ops::Not::not")]
    new_device: bool,
}

impl Fields {
    /// A plain login's fields (or an anonymous session's): a browser session, by password,
    /// with nothing else noted.
    fn new(
        id: String,
        user_id: String,
        user: Box<RawValue>,
        created_at: u64,
        expires_at: u64,
    ) -> Self {
        Self {
            id,
            user_id,
            user,
            created_at,
            authenticated_at: None,
            expires_at,
            roles: Vec::new(),
            ip: None,
            user_agent: None,
            kind: Kind::Browser,
            impersonation: None,
            factors: Factors::Password,
            method: LoginMethod::Password,
            new_device: false,
        }
    }
}

/// Who impersonates the user in a session, and the session to return them to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Impersonation {
    /// The admin's user id.
    #[serde(rename = "by")]
    by: String,
    /// The [`SessionKey`] of the admin's own session, which ending the impersonation resumes.
    #[serde(rename = "back")]
    back: String,
}

/// How the session's user last proved who they are, and whether that is a login yet.
///
/// One enum rather than flags, so that "pending" and "verified with two factors" cannot both
/// be true of one record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Factors {
    /// The password, on an account without a second factor (as far as the login knew).
    #[default]
    #[serde(rename = "p")]
    Password,
    /// The password was right and the second factor is due: not a login. Lives only as long
    /// as the [second-factor timeout](crate::LoginMiddlewareBuilder::second_factor_timeout).
    #[serde(rename = "w")]
    Pending,
    /// The password alone, on an account that has a second factor: a browser the user trusted
    /// skipped it, or the password was confirmed again without it. A login, but not fresh
    /// enough for [`Require::fresh`](crate::Require::fresh).
    #[serde(rename = "1")]
    PasswordOnly,
    /// The password and the second factor.
    #[serde(rename = "2")]
    Both,
}

impl Factors {
    fn is_password(&self) -> bool {
        *self == Factors::Password
    }
}

/// How the client holds a session's token and what keeps the session alive. Kept apart from
/// the user fields so a live update of the user never changes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
enum Kind {
    /// A cookie that lasts for the browser session.
    #[default]
    #[serde(rename = "b")]
    Browser,
    /// A persistent cookie ("keep me signed in").
    #[serde(rename = "r")]
    Remembered,
    /// A bearer token handed out by a login instead of a cookie; `remembered` gives it the
    /// longer lifetime.
    #[serde(rename = "t")]
    LoginToken {
        #[serde(rename = "m", default, skip_serializing_if = "std::ops::Not::not")]
        remembered: bool,
    },
    /// A named personal access token a logged-in user created; it never idles out.
    #[serde(rename = "p")]
    Personal {
        #[serde(rename = "n")]
        name: String,
        /// `None`: everything the user may do. `Some`: only routes requiring one of these.
        #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
        scopes: Option<Vec<String>>,
        /// The [`SessionKey`] of the login token that created it, which it never outlives;
        /// `None` for a token created from a browser session.
        #[serde(rename = "pk", default, skip_serializing_if = "Option::is_none")]
        parent: Option<String>,
    },
}

impl Kind {
    fn is_browser(&self) -> bool {
        *self == Kind::Browser
    }
}

/// Which expiry rules a session follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lifetime {
    /// A visitor's session without a login.
    Anonymous,
    /// A login: the normal idle and absolute limits.
    Standard,
    /// A password verified, the second factor due: a short limit of its own.
    Pending,
    /// A login that asked to be remembered: the longer limits.
    Remembered,
    /// A personal access token: no idle limit, only its own end.
    Fixed,
}

impl SessionRecord {
    /// A record with public handle `id` for a login that happens at `now` and may last until
    /// `expires_at` at the latest.
    ///
    /// `user` is the profile serialised as JSON.
    pub fn new(
        id: impl Into<String>,
        user_id: impl Into<String>,
        user: Box<RawValue>,
        now: SystemTime,
        expires_at: SystemTime,
    ) -> Self {
        Self(Arc::new(Fields::new(
            id.into(),
            user_id.into(),
            user,
            unix_millis(now),
            unix_millis(expires_at),
        )))
    }

    /// A record for a visitor who has not logged in, with public handle `id`, starting at `now`
    /// and lasting until `expires_at` at the latest.
    pub fn anonymous(id: impl Into<String>, now: SystemTime, expires_at: SystemTime) -> Self {
        Self::new(
            id,
            String::new(),
            RawValue::NULL.to_owned(),
            now,
            expires_at,
        )
    }

    /// Whether this is a visitor's session rather than a login: no user, no profile, no roles.
    pub fn is_anonymous(&self) -> bool {
        self.0.user_id.is_empty()
    }

    /// The same record with another profile and roles: what a live update of the user replaces.
    pub fn with_user(mut self, user: Box<RawValue>, roles: Vec<String>) -> Self {
        let fields = Arc::make_mut(&mut self.0);
        fields.user = user;
        fields.roles = roles;
        self
    }

    /// The same record with these roles.
    pub fn with_roles(mut self, roles: Vec<String>) -> Self {
        Arc::make_mut(&mut self.0).roles = roles;
        self
    }

    /// The same record with its user agent rewritten by `rewrite`, which answers `None` to
    /// leave it as it is: for a store that keeps user agents in a form of its own.
    // Only `RedisStore` does so far.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn map_user_agent(mut self, rewrite: impl FnOnce(&str) -> Option<String>) -> Self {
        if let Some(rewritten) = self.user_agent().and_then(rewrite) {
            Arc::make_mut(&mut self.0).user_agent = Some(Deferred::Text(rewritten));
        }
        self
    }

    /// The same record noting where the login came from.
    pub fn with_client(mut self, ip: Option<String>, user_agent: Option<String>) -> Self {
        let fields = Arc::make_mut(&mut self.0);
        fields.ip = ip.map(Deferred::Text);
        fields.user_agent = user_agent.map(Deferred::Text);
        self
    }

    /// The same record for a session through which the admin with user id `by` impersonates
    /// the user; `back` is the admin's own session, which ending the impersonation resumes.
    pub(crate) fn impersonated(mut self, by: &str, back: &SessionKey) -> Self {
        Arc::make_mut(&mut self.0).impersonation = Some(Impersonation {
            by: by.to_owned(),
            back: back.as_str().to_owned(),
        });
        self
    }

    /// The user id of the admin who impersonates the user in this session, if one does.
    pub fn impersonated_by(&self) -> Option<&str> {
        self.0.impersonation.as_ref().map(|imp| imp.by.as_str())
    }

    /// The admin's own session, which ending the impersonation resumes; `None` when nobody
    /// impersonates, or the key is unreadable.
    pub(crate) fn impersonation_return(&self) -> Option<SessionKey> {
        let imp = self.0.impersonation.as_ref()?;
        SessionKey::parse(&imp.back)
    }

    /// The same record for a login that asked to be remembered: a persistent cookie and the
    /// longer lifetime.
    pub(crate) fn remembered(mut self) -> Self {
        Arc::make_mut(&mut self.0).kind = Kind::Remembered;
        self
    }

    /// The same record reached by a bearer token from a login rather than a cookie.
    pub(crate) fn login_token(mut self, remembered: bool) -> Self {
        Arc::make_mut(&mut self.0).kind = Kind::LoginToken { remembered };
        self
    }

    /// The same record as a personal access token named `name`, limited to `scopes` if given,
    /// and ending with the session under `parent` if given.
    pub(crate) fn personal_token(
        mut self,
        name: String,
        scopes: Option<Vec<String>>,
        parent: Option<&SessionKey>,
    ) -> Self {
        let parent = parent.map(|key| key.as_str().to_owned());
        Arc::make_mut(&mut self.0).kind = Kind::Personal {
            name,
            scopes,
            parent,
        };
        self
    }

    /// The key of the session a personal access token lives no longer than: the login token
    /// that created it. `None` for every other session, and for a token created from a browser
    /// session. `Some(None)` for a parent that cannot be read, which no session can have.
    pub(crate) fn parent(&self) -> Option<Option<SessionKey>> {
        match &self.0.kind {
            Kind::Personal {
                parent: Some(parent),
                ..
            } => Some(SessionKey::parse(parent)),
            _ => None,
        }
    }

    /// Whether this is a login: a browser session or a login token, not a personal access
    /// token, an anonymous session nor a login waiting for its second factor.
    pub(crate) fn is_login(&self) -> bool {
        !self.is_anonymous()
            && !matches!(self.0.kind, Kind::Personal { .. })
            && !self.is_second_factor_pending()
    }

    /// Whether the password was verified and the second factor is still due: such a session
    /// is no login ([`AuthUser`](crate::AuthUser) refuses it with `second_factor_required`).
    pub fn is_second_factor_pending(&self) -> bool {
        self.0.factors == Factors::Pending
    }

    /// Whether the user proved a second factor when they last authenticated in this session.
    pub fn has_second_factor(&self) -> bool {
        self.0.factors == Factors::Both
    }

    /// How the user last proved who they are.
    pub(crate) fn factors(&self) -> Factors {
        self.0.factors
    }

    /// The same record, with the user's proof described by `factors`.
    pub(crate) fn with_factors(mut self, factors: Factors) -> Self {
        Arc::make_mut(&mut self.0).factors = factors;
        self
    }

    /// How the user signed in to this session (for a personal access token: to the session
    /// that created it).
    pub fn method(&self) -> LoginMethod {
        self.0.method
    }

    /// The same record, signed in by `method`.
    pub(crate) fn with_method(mut self, method: LoginMethod) -> Self {
        Arc::make_mut(&mut self.0).method = method;
        self
    }

    /// Whether the login this half-login waits to become came from a browser new to the
    /// account.
    pub(crate) fn is_new_device(&self) -> bool {
        self.0.new_device
    }

    /// The same record, noting whether its login came from a new device (kept only while the
    /// second factor is due).
    pub(crate) fn with_new_device(mut self, new_device: bool) -> Self {
        Arc::make_mut(&mut self.0).new_device = new_device;
        self
    }

    /// Whether this is a login token from a bearer login.
    pub(crate) fn is_login_token(&self) -> bool {
        matches!(self.0.kind, Kind::LoginToken { .. })
    }

    /// The same record as a login that began at `now` and may last until `expires_at`: what a
    /// half-login becomes once its second factor is verified.
    pub(crate) fn logged_in_at(mut self, now: SystemTime, expires_at: SystemTime) -> Self {
        let fields = Arc::make_mut(&mut self.0);
        fields.created_at = unix_millis(now);
        fields.authenticated_at = None;
        fields.expires_at = unix_millis(expires_at);
        self
    }

    /// The same record, with the password confirmed again at `now`.
    pub(crate) fn reauthenticated(mut self, now: SystemTime) -> Self {
        Arc::make_mut(&mut self.0).authenticated_at = Some(unix_millis(now));
        self
    }

    /// Whether the client presents this session's token in an `Authorization: Bearer` header
    /// rather than a cookie.
    pub fn is_bearer(&self) -> bool {
        matches!(self.0.kind, Kind::LoginToken { .. } | Kind::Personal { .. })
    }

    /// Whether the login asked to be remembered ("keep me signed in"): the session has the
    /// longer lifetime, and in a browser a persistent cookie.
    pub fn is_remembered(&self) -> bool {
        matches!(
            self.0.kind,
            Kind::Remembered | Kind::LoginToken { remembered: true }
        )
    }

    /// The name of a personal access token; `None` for every other session.
    pub fn token_name(&self) -> Option<&str> {
        match &self.0.kind {
            Kind::Personal { name, .. } => Some(name),
            _ => None,
        }
    }

    /// The scopes a personal access token is limited to; `None` for a token without limits
    /// and for every other session.
    pub fn scopes(&self) -> Option<&[String]> {
        match &self.0.kind {
            Kind::Personal { scopes, .. } => scopes.as_deref(),
            _ => None,
        }
    }

    /// Whether this session may act within `scope`: every session may, except a personal
    /// access token limited to other scopes.
    pub fn allows_scope(&self, scope: &str) -> bool {
        self.scopes()
            .is_none_or(|scopes| scopes.iter().any(|s| s == scope))
    }

    /// Which expiry rules the session follows.
    pub(crate) fn lifetime(&self) -> Lifetime {
        if self.is_anonymous() {
            Lifetime::Anonymous
        } else if self.is_second_factor_pending() {
            Lifetime::Pending
        } else if matches!(self.0.kind, Kind::Personal { .. }) {
            Lifetime::Fixed
        } else if self.is_remembered() {
            Lifetime::Remembered
        } else {
            Lifetime::Standard
        }
    }

    /// The session's public handle: random, unrelated to the token, unchanged by rotation.
    pub fn id(&self) -> &str {
        &self.0.id
    }

    /// The roles granted at login, or by the latest live update.
    pub fn roles(&self) -> &[String] {
        &self.0.roles
    }

    /// Whether the session was granted `role` at login.
    pub fn has_role(&self, role: &str) -> bool {
        self.0.roles.iter().any(|r| r == role)
    }

    /// The client's IP address at login, if known.
    pub fn ip(&self) -> Option<&str> {
        self.0.ip.as_ref().map(Deferred::get)
    }

    /// The client's `User-Agent` at login, if it sent one.
    pub fn user_agent(&self) -> Option<&str> {
        self.0.user_agent.as_ref().map(Deferred::get)
    }

    /// The id the app gave at login; empty for an [anonymous](Self::is_anonymous) session.
    pub fn user_id(&self) -> &str {
        &self.0.user_id
    }

    /// The profile given at login, or by the latest live update, as JSON.
    pub fn user(&self) -> &RawValue {
        &self.0.user
    }

    /// When the session was created.
    pub fn created_at(&self) -> SystemTime {
        from_unix_millis(self.0.created_at)
    }

    /// When the user last proved who they are (entered their password).
    pub fn authenticated_at(&self) -> SystemTime {
        from_unix_millis(self.0.authenticated_at.unwrap_or(self.0.created_at))
    }

    /// The absolute end of the session: no activity extends it past this time.
    pub fn expires_at(&self) -> SystemTime {
        from_unix_millis(self.0.expires_at)
    }
}

/// Milliseconds since the Unix epoch; times before it (a badly set clock) count as the epoch.
pub(crate) fn unix_millis(t: SystemTime) -> u64 {
    let millis = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
    u64::try_from(millis).unwrap_or(u64::MAX)
}

pub(crate) fn from_unix_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json_without_losing_the_profile() {
        let now = SystemTime::now();
        let user = RawValue::from_string(r#"{"id":7,"name":"ann"}"#.into()).unwrap();
        let record = SessionRecord::new("s1", "7", user, now, now + Duration::from_secs(60))
            .with_roles(vec!["admin".into()])
            .with_client(Some("192.0.2.1".into()), Some("curl/8".into()));
        let json = serde_json::to_string(&record).unwrap();
        let back: SessionRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back.user_id(), "7");
        assert_eq!(back.id(), "s1");
        assert!(back.has_role("admin") && !back.has_role("root"));
        assert_eq!(
            (back.ip(), back.user_agent()),
            (Some("192.0.2.1"), Some("curl/8"))
        );
        assert_eq!(back.user().get(), r#"{"id":7,"name":"ann"}"#);
        assert_eq!(unix_millis(back.created_at()), unix_millis(now));
        assert_eq!(back.created_at(), back.authenticated_at());
        assert_eq!(
            back.expires_at().duration_since(back.created_at()).unwrap(),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn the_factors_cost_a_password_login_no_byte_and_round_trip() {
        let now = SystemTime::now();
        let user = RawValue::from_string("{}".into()).unwrap();
        let record = SessionRecord::new("s1", "7", user, now, now + Duration::from_secs(60));
        let plain = serde_json::to_string(&record).unwrap();
        assert!(!plain.contains(r#""f""#), "{plain}");
        for (factors, tag) in [
            (Factors::Pending, r#""f":"w""#),
            (Factors::PasswordOnly, r#""f":"1""#),
            (Factors::Both, r#""f":"2""#),
        ] {
            let json = serde_json::to_string(&record.clone().with_factors(factors)).unwrap();
            assert!(json.contains(tag), "{json}");
            assert_eq!(json.len(), plain.len() + tag.len() + 1);
            let back: SessionRecord = serde_json::from_str(&json).unwrap();
            assert_eq!(back.factors(), factors);
            assert_eq!(back.is_second_factor_pending(), factors == Factors::Pending);
            assert_eq!(back.is_login(), factors != Factors::Pending);
            assert_eq!(back.has_second_factor(), factors == Factors::Both);
        }
    }

    #[test]
    fn the_method_costs_a_password_login_no_byte_and_round_trips() {
        let now = SystemTime::now();
        let user = RawValue::from_string("{}".into()).unwrap();
        let record = SessionRecord::new("s1", "7", user, now, now + Duration::from_secs(60));
        let plain = serde_json::to_string(&record).unwrap();
        assert!(!plain.contains(r#""m""#), "{plain}");
        for (method, tag) in [
            (LoginMethod::Passkey, r#""m":"k""#),
            (LoginMethod::Link, r#""m":"l""#),
            (LoginMethod::External, r#""m":"e""#),
        ] {
            let json = serde_json::to_string(&record.clone().with_method(method)).unwrap();
            assert!(json.contains(tag), "{json}");
            assert_eq!(json.len(), plain.len() + tag.len() + 1);
            let back: SessionRecord = serde_json::from_str(&json).unwrap();
            assert_eq!(back.method(), method);
        }
        // A half-login from a new device says so; nothing else carries the flag.
        let pending = record.clone().with_new_device(true);
        let back: SessionRecord =
            serde_json::from_str(&serde_json::to_string(&pending).unwrap()).unwrap();
        assert!(back.is_new_device());
        let unknown = plain.replacen('{', r#"{"m":"?","#, 1);
        assert!(serde_json::from_str::<SessionRecord>(&unknown).is_err());
    }

    #[test]
    fn clock_before_epoch_does_not_panic() {
        assert_eq!(unix_millis(UNIX_EPOCH - Duration::from_secs(5)), 0);
    }
}
