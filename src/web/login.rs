//! [`Login`]: what a login grants, for [`Session::login_with`](crate::Session::login_with).

use serde::Serialize;
use serde_json::value::RawValue;

use crate::engine::CredentialsVersion;
use crate::record::Factors;

/// Where an account's second factor stands in a login: give it to
/// [`Login::second_factor`]. See [`two_factor`](crate::two_factor) for the flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecondFactor {
    /// The account has no second factor: the password logs in (the default).
    #[default]
    None,
    /// The account has one, and it is due: the session the login starts is no login until
    /// [`Session::complete_second_factor`](crate::Session::complete_second_factor).
    /// [`AuthUser`](crate::AuthUser) and [`Require`](crate::Require) answer it with
    /// `401 {"error":"second_factor_required"}`, and it ends after the
    /// [second-factor timeout](crate::LoginMiddlewareBuilder::second_factor_timeout)
    /// (5 minutes by default).
    Due,
    /// The account has one, which this browser was trusted to skip
    /// ("don't ask again on this browser"): a login, but
    /// [`Require::fresh`](crate::Require::fresh) asks for the second factor before anything
    /// sensitive.
    Skipped,
}

/// A login to carry out: who, with which profile and roles, and which credentials were
/// verified. Give it to [`Session::login_with`](crate::Session::login_with).
///
/// ```
/// use actix_login::{Login, Session};
/// # #[derive(serde::Serialize)] struct Profile { id: u64 }
/// # struct User { id: u64, password_changed_at: i64 }
///
/// async fn log_in(session: Session, user: User) -> Result<(), actix_login::Error> {
///     // ... the password was verified against this user's stored hash ...
///     let login = Login::new(user.id.to_string(), &Profile { id: user.id })
///         .roles(["editor"])
///         .credentials_version(user.password_changed_at.to_string());
///     session.login_with(login).await
/// }
/// ```
#[derive(Debug)]
#[must_use]
pub struct Login {
    pub(crate) user_id: String,
    pub(crate) user: Result<Box<RawValue>, serde_json::Error>,
    pub(crate) roles: Vec<String>,
    pub(crate) credentials: Option<CredentialsVersion>,
    pub(crate) keep_data: bool,
    pub(crate) remember: bool,
    pub(crate) factors: Factors,
}

impl Login {
    /// A login of `user_id`, storing `user` as the profile that [`AuthUser`](crate::AuthUser)
    /// returns. Keep the profile small and free of secrets (never a password hash): it lives in
    /// the store for the whole session.
    pub fn new<U: Serialize + ?Sized>(user_id: impl Into<String>, user: &U) -> Self {
        Self {
            user_id: user_id.into(),
            user: serde_json::value::to_raw_value(user),
            roles: Vec::new(),
            credentials: None,
            keep_data: true,
            remember: false,
            factors: Factors::Password,
        }
    }

    /// Whether the session is remembered ("keep me signed in", default `false`): it follows
    /// the longer [remember timeouts](crate::LoginMiddlewareBuilder::remember_timeouts)
    /// (7 days idle, 30 days in all by default) instead of the normal ones, and its cookie
    /// persists across browser restarts (`Max-Age` up to the session's idle deadline, moved
    /// whenever the deadline moves, never past the absolute end). Without it the cookie lasts
    /// for the browser session.
    ///
    /// A remembered session is *fresh* only for the [fresh window](crate::LoginMiddlewareBuilder::fresh_window)
    /// after the password was entered, like any other: coming back days later,
    /// [`Require::fresh`](crate::Require::fresh) still asks for the password.
    pub fn remember(mut self, remember: bool) -> Self {
        self.remember = remember;
        self
    }

    /// Whether the new session keeps the [data](crate::Session::insert) of the session the
    /// client comes with (default `true`): a visitor's cart survives their login. Only the data
    /// of an anonymous session, or of a session of the same user, is kept; a login as another
    /// user always starts empty. With `false` the new session starts empty and the old one
    /// ends with its data.
    pub fn keep_data(mut self, keep: bool) -> Self {
        self.keep_data = keep;
        self
    }

    /// Where the account's second factor stands ([`SecondFactor::None`] by default): with
    /// [`SecondFactor::Due`] the password was right but the session is not a login until the
    /// second factor is verified. Everything else this login names (profile, roles,
    /// [remember](Self::remember), [credentials version](Self::credentials_version)) waits in
    /// that session and applies when it completes. A cookie login only: a
    /// [bearer login](crate::Session::login_bearer) with a due second factor is
    /// [`Error::InvalidInput`](crate::Error::InvalidInput).
    pub fn second_factor(mut self, step: SecondFactor) -> Self {
        self.factors = match step {
            SecondFactor::None => Factors::Password,
            SecondFactor::Due => Factors::Pending,
            SecondFactor::Skipped => Factors::PasswordOnly,
        };
        self
    }

    /// Grants `roles`, for [`Require::role`](crate::Require::role).
    pub fn roles(mut self, roles: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.roles = roles.into_iter().map(Into::into).collect();
        self
    }

    /// Names the version of the credentials this login verified: any value that changes when
    /// the user's password changes and at no other time, such as a counter or the time of the
    /// last password change from your user table. (Not the stored hash itself: an upgrade by
    /// [`needs_rehash`](crate::password::PasswordHasher::needs_rehash) changes it too.) Only a
    /// hash of it reaches the store.
    ///
    /// If a password change recorded with
    /// [`Session::credentials_changed`](crate::Session::credentials_changed) or
    /// [`Sessions::credentials_changed`](crate::Sessions::credentials_changed) names another
    /// version, this login fails with [`Error::Unauthenticated`](crate::Error::Unauthenticated)
    /// and leaves no session: it verified a password that was being replaced. That closes the
    /// race of a login that checks the old password just before a change and creates its
    /// session just after the change revoked the others. The store must keep credentials
    /// versions (both stores of this crate do).
    pub fn credentials_version(mut self, version: impl AsRef<[u8]>) -> Self {
        self.credentials = Some(CredentialsVersion::of(version.as_ref()));
        self
    }
}
