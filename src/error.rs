//! The crate's errors. How they become HTTP responses is the web layer's business
//! (`web/response.rs`): fixed JSON documents such as `{"error":"unauthenticated"}`, with the
//! details kept in the error value and the server log, never in what the client sees.

use std::error::Error as StdError;

/// The error type for a failed session store operation.
///
/// Store implementations return these; the middleware turns them into `503 Service Unavailable`
/// (or `401` for [`StoreError::Corrupt`]), never into a logged-in request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store could not be reached or refused the operation.
    #[error("session store unavailable: {0}")]
    Unavailable(#[source] Box<dyn StdError + Send + Sync>),
    /// The store did not answer within the configured time.
    #[error("session store did not answer in time")]
    Timeout,
    /// A stored record could not be decoded. The session it belongs to is treated as absent.
    #[error("stored session record is corrupt: {0}")]
    Corrupt(#[source] Box<dyn StdError + Send + Sync>),
}

impl StoreError {
    /// Wraps a backend error as [`StoreError::Unavailable`].
    pub fn unavailable(err: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self::Unavailable(err.into())
    }

    /// Wraps a decoding error as [`StoreError::Corrupt`].
    pub fn corrupt(err: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self::Corrupt(err.into())
    }
}

/// The error type of the extractors and of [`Session`](crate::Session)'s methods.
///
/// It implements [`ResponseError`](actix_web::ResponseError), so handlers can return it with
/// `?`: the response is a status and a fixed JSON body `{"error":"<code>"}` with
/// `Cache-Control: no-store`, never the error's details, which stay in the server log.
///
/// # Error codes
///
/// Every code the crate answers with, from an `Error` or elsewhere (the password hasher's
/// [`PasswordError`](crate::password::PasswordError), the middleware itself). This table is the
/// only list; the crate docs and the README link here.
///
/// | code | status | from | when |
/// |---|---|---|---|
/// | `unauthenticated` | 401 | [`Unauthenticated`](Error::Unauthenticated), [`Store`](Error::Store) with [`StoreError::Corrupt`] | no cookie, a malformed one (no store command is sent), an expired, logged-out, revoked or unknown session, an unreadable record, or session data a handler reads that is not UTF-8 (only a hand or another program writes such data; the session stays logged in, and writes land); for a bearer token, the same with `WWW-Authenticate: Bearer` (`Bearer error="invalid_token"` for a token that is malformed, unknown or ended) |
/// | `second_factor_required` | 401 | [`SecondFactorRequired`](Error::SecondFactorRequired) | a session whose password was verified and whose [second factor](crate::two_factor) is still due: [`AuthUser`](crate::AuthUser), [`Require`](crate::Require) and every [`Session`](crate::Session) method that needs a login refuse it; the client sends the code |
/// | `invalid_code` | 401 | [`InvalidCode`](Error::InvalidCode) | a [second-factor](crate::two_factor) code (TOTP or recovery code) that is wrong, malformed, or used before |
/// | `forbidden` | 403 | [`Forbidden`](Error::Forbidden) | [`Require::role`](crate::Require::role) or [`Require::scope`](crate::Require::scope) not met (a missing scope adds `WWW-Authenticate: Bearer error="insufficient_scope", scope="…"`) |
/// | `reauth_required` | 403 | [`ReauthRequired`](Error::ReauthRequired) | [`Require::fresh`](crate::Require::fresh) not met, or [`Session::create_token`](crate::Session::create_token) from a session outside the fresh window or from a personal access token: ask for the password, not a new login |
/// | `impersonating` | 403 | [`Impersonating`](Error::Impersonating) | an account change ([`credentials_changed`](crate::Session::credentials_changed), [`create_token`](crate::Session::create_token), revoking other sessions) from a session an admin [impersonates](crate::Session::impersonate) through, or an impersonation started from one |
/// | `second_factor_reauth_required` | 403 | [`SecondFactorReauthRequired`](Error::SecondFactorReauthRequired) | [`Require::fresh`](crate::Require::fresh) (or [`Session::create_token`](crate::Session::create_token)) on an account with a second factor, from a session whose password is fresh but whose last proof left the second factor out (a trusted browser, a password-only reauthentication): ask for the password and a code |
/// | `csrf_rejected` | 403 | [`CrossSiteRequest`](Error::CrossSiteRequest) | an unsafe request with the session cookie from another site, or a cross-site login |
/// | `session_changed` | 409 | [`SessionChanged`](Error::SessionChanged) | a [data write](crate::Session::insert) whose session a concurrent request ended or moved to a new token; nothing was written |
/// | `login_superseded` | 409 | [`LoginSuperseded`](Error::LoginSuperseded) | a login whose new session racing logins of the same user ended, past [`max_sessions_per_user`](crate::LoginMiddlewareBuilder::max_sessions_per_user), before it could answer; no cookie or token is issued |
/// | `too_many_tokens` | 409 | [`TooManyTokens`](Error::TooManyTokens) | [`Session::create_token`](crate::Session::create_token) for a user at [`max_tokens_per_user`](crate::LoginMiddlewareBuilder::max_tokens_per_user): revoke one first |
/// | `session_data_too_large` | 413 | [`SessionDataTooLarge`](Error::SessionDataTooLarge) | a data write past [`max_data_size`](crate::LoginMiddlewareBuilder::max_data_size); nothing was written |
/// | `too_many_attempts` | 429, with `Retry-After` | [`Throttled`](Error::Throttled) | past a [`LoginThrottle`](crate::throttle::LoginThrottle) limit |
/// | `too_many_sessions` | 429, with `Retry-After` | [`TooManySessions`](Error::TooManySessions) | a visitor's first data write past the [bounds on new anonymous sessions](crate::LoginMiddlewareBuilder::anonymous_sessions_per_minute) |
/// | `token_rate_limited` | 429, with `Retry-After` | [`TokenRateLimited`](Error::TokenRateLimited) | [`Session::create_token`](crate::Session::create_token) past the user's [creation limit](crate::LoginMiddlewareBuilder::token_creation_limit) |
/// | `too_many_links` | 429, with `Retry-After` | [`TooManyLinks`](Error::TooManyLinks) | [`OneTimeLinks::issue`](crate::links::OneTimeLinks::issue) past a [limit](crate::links::LinkSettings) per account, mail address or client address |
/// | `too_many_codes` | 429, with `Retry-After` | [`TooManyCodes`](Error::TooManyCodes) | past the [second-factor](crate::two_factor) limit of wrong codes per account, from any address (5 per 15 minutes by default); even a right code waits |
/// | `invalid_link` | 410 | [`InvalidLink`](Error::InvalidLink) | a [one-time link](crate::links) that is malformed, unknown, already used, expired, for another purpose, or issued before the account's password changed: all look alike |
/// | `passkey_no_challenge` | 400 | [`Passkey`](Error::Passkey)`(`[`NoChallenge`](PasskeyRejection::NoChallenge)`)` | finishing a [passkey ceremony](crate::passkeys) that this session has not started, or has finished already (a replay), or started too long ago |
/// | `passkey_challenge_mismatch` | 400 | [`Passkey`](Error::Passkey)`(`[`ChallengeMismatch`](PasskeyRejection::ChallengeMismatch)`)` | a passkey response signed over another challenge than this session's: another session's, or an older one |
/// | `passkey_wrong_origin` | 400 | [`Passkey`](Error::Passkey)`(`[`WrongOrigin`](PasskeyRejection::WrongOrigin)`)` | a passkey response from a page of another origin than the [configured one](crate::passkeys::Passkeys::new) |
/// | `passkey_rejected` | 400 | [`Passkey`](Error::Passkey)`(`[`Rejected`](PasskeyRejection::Rejected)`)` | any other passkey response that webauthn-rs refuses: malformed, a bad signature, no user verification |
/// | `passkey_unknown_credential` | 401 | [`Passkey`](Error::Passkey)`(`[`UnknownCredential`](PasskeyRejection::UnknownCredential)`)` | a passkey sign-in with a credential the app does not know for the account (never registered, or removed) |
/// | `passkey_counter_regressed` | 401 | [`Passkey`](Error::Passkey)`(`[`CounterRegressed`](PasskeyRejection::CounterRegressed)`)` | a passkey whose signature counter did not go up past the stored one: a sign of a cloned authenticator |
/// | `invalid_input` | 400 | [`InvalidInput`](Error::InvalidInput) | a username over [`MAX_USERNAME_BYTES`](crate::throttle::MAX_USERNAME_BYTES); a [`PersonalToken`](crate::PersonalToken) name, end or scope out of bounds; a cookie login or renewal on a bearer request |
/// | `password_too_long` | 400 | [`PasswordError::TooLong`](crate::password::PasswordError::TooLong) | a password over [`MAX_PASSWORD_BYTES`](crate::password::MAX_PASSWORD_BYTES) |
/// | `login_busy` | 503, with `Retry-After` | [`PasswordError::Busy`](crate::password::PasswordError::Busy) | a stranger's password check while [`max_waiting`](crate::password::PasswordHasher::max_waiting) others wait for a hashing thread ([the hashing queue](crate::password#the-hashing-queue)) |
/// | `service_unavailable` | 503 | [`Store`](Error::Store), but for [`StoreError::Corrupt`] | the store is unreachable or too slow, also for [`MaybeUser`](crate::MaybeUser) and `Option<AuthUser<_>>`: never a login, never an anonymous answer |
/// | `internal_error` | 500 | [`MissingMiddleware`](Error::MissingMiddleware), [`SessionData`](Error::SessionData), [`Profile`](Error::Profile), [`Random`](Error::Random); every other [`PasswordError`](crate::password::PasswordError) | an extractor, [`Require`](crate::Require) or the throttle used without [`LoginMiddleware`](crate::LoginMiddleware) (with a log line naming it), a session data value or profile that could not be converted, or the OS random generator failing |
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No session cookie, a malformed one, or one whose session is expired, logged out or
    /// revoked.
    #[error("not logged in")]
    Unauthenticated,
    /// Logged in, but without a role the route requires.
    #[error("missing a required role")]
    Forbidden,
    /// Logged in, but the password was entered too long ago for this route; the client should
    /// ask for it again rather than log in again.
    #[error("password must be confirmed again")]
    ReauthRequired,
    /// An account change from a session an admin [impersonates](crate::Session::impersonate)
    /// another user through: an impersonator acts as the user, but never changes the account.
    #[error("refused while impersonating")]
    Impersonating,
    /// The password was verified, but the account's second factor is still due: the session is
    /// not a login yet.
    #[error("the second factor is still due")]
    SecondFactorRequired,
    /// The password is fresh, but the account has a second factor that the session's latest
    /// proof left out; ask for the password and a code.
    #[error("the second factor must be confirmed again")]
    SecondFactorReauthRequired,
    /// A second-factor code that is wrong, malformed or used before.
    #[error("invalid second-factor code")]
    InvalidCode,
    /// Too many wrong second-factor codes for the account lately, from any address; try again
    /// after `retry_after`.
    #[error("too many wrong second-factor codes")]
    TooManyCodes {
        /// How long until the next code is looked at.
        retry_after: std::time::Duration,
    },
    /// An unsafe request that a browser sent on behalf of another site.
    #[error("cross-site request refused")]
    CrossSiteRequest,
    /// Too many failed logins; try again after `retry_after`.
    #[error("too many failed login attempts")]
    Throttled {
        /// How long until the next attempt is allowed.
        retry_after: std::time::Duration,
    },
    /// Input refused before any work, such as an oversized username.
    #[error("invalid input")]
    InvalidInput,
    /// A write of session data would have grown the session's data past its limit; nothing
    /// was written.
    #[error("session data would grow to {size} bytes, over the limit of {limit}")]
    SessionDataTooLarge {
        /// The size the data would have had, in bytes.
        size: usize,
        /// The limit, in bytes.
        limit: usize,
    },
    /// A write of session data found its session ended or moved to a new token by a concurrent
    /// request (a logout, a revocation, a login or a renewal); nothing was written. The client
    /// may retry with the cookie it holds now.
    #[error("the session ended or changed while the request ran")]
    SessionChanged,
    /// Too many sessions without a login started lately, from the client's address or in
    /// all; try again after `retry_after`.
    #[error("too many new sessions without a login")]
    TooManySessions {
        /// How long until a new one is allowed.
        retry_after: std::time::Duration,
    },
    /// The session a login had just created was ended before the login could answer: newer
    /// logins of the same user pushed it past the
    /// [per-user cap](crate::LoginMiddlewareBuilder::max_sessions_per_user), or the user's
    /// sessions were revoked meanwhile. No cookie or token is issued; the client may log in
    /// again.
    #[error("the new session ended before the login finished")]
    LoginSuperseded,
    /// The user already has as many personal access tokens as
    /// [allowed](crate::LoginMiddlewareBuilder::max_tokens_per_user); revoke one first.
    #[error("the user has as many personal access tokens as allowed")]
    TooManyTokens,
    /// The user created as many personal access tokens lately as
    /// [allowed](crate::LoginMiddlewareBuilder::token_creation_limit); try again after
    /// `retry_after`.
    #[error("too many personal access tokens created lately")]
    TokenRateLimited {
        /// How long until the next creation is allowed.
        retry_after: std::time::Duration,
    },
    /// A [one-time link](crate::links) that cannot be used: malformed, unknown, already used,
    /// expired, for another purpose, or issued before the account's password changed. The
    /// client is not told which.
    #[error("the one-time link is not valid")]
    InvalidLink,
    /// Too many [one-time links](crate::links) were issued lately for the account, the mail
    /// address or the client address; try again after `retry_after`.
    #[error("too many one-time links issued lately")]
    TooManyLinks {
        /// How long until the next link may be issued.
        retry_after: std::time::Duration,
    },
    /// A session data value could not be serialised, or the stored one could not be read as
    /// the type asked for.
    #[error("session data value {name:?} could not be converted: {source}")]
    SessionData {
        /// The value's name.
        name: String,
        /// What went wrong.
        #[source]
        source: serde_json::Error,
    },
    /// A [passkey ceremony](crate::passkeys) refused: the session is left as it was, but for
    /// the ceremony's challenge, which is used up.
    #[cfg(feature = "passkeys")]
    #[cfg_attr(docsrs, doc(cfg(feature = "passkeys")))]
    #[error("passkey refused: {0}")]
    Passkey(PasskeyRejection),
    /// The session store failed; the request is refused rather than treated as anonymous.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An extractor ran on an app that is not wrapped in
    /// [`LoginMiddleware`](crate::LoginMiddleware).
    #[error("LoginMiddleware is not registered: wrap the App (or scope) with LoginMiddleware")]
    MissingMiddleware,
    /// The user profile given to [`Session::login`](crate::Session::login) could not be
    /// serialised.
    #[error("user profile could not be serialised: {0}")]
    Profile(#[source] serde_json::Error),
    /// The operating system's random number generator failed.
    #[error("the OS random number generator failed: {0}")]
    Random(#[source] getrandom::Error),
}

/// Why a [passkey ceremony](crate::passkeys) was refused: each has its own code in the
/// [table on `Error`](Error#error-codes).
#[cfg(feature = "passkeys")]
#[cfg_attr(docsrs, doc(cfg(feature = "passkeys")))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PasskeyRejection {
    /// This session has no ceremony of that kind waiting: never started here, finished
    /// already (each challenge is used once), or started longer ago than the challenge lasts.
    #[error("no passkey challenge waiting in this session")]
    NoChallenge,
    /// The response was signed over another challenge than the one this session waits for.
    #[error("the passkey response answers another challenge")]
    ChallengeMismatch,
    /// The response comes from a page of another origin than the configured one.
    #[error("the passkey response comes from another origin")]
    WrongOrigin,
    /// The credential is not one the app knows for the account.
    #[error("unknown passkey")]
    UnknownCredential,
    /// The authenticator's signature counter did not go past the stored one.
    #[error("the passkey's signature counter went backwards")]
    CounterRegressed,
    /// Any other refusal by webauthn-rs (logged with its reason).
    #[error("passkey response refused")]
    Rejected,
}

/// Whether the [table on `Error`](Error#error-codes) has a row for `code` with `status`: the
/// tests of each `status_and_code` check their answers against it, so the table cannot drift.
#[cfg(test)]
pub(crate) fn documented(status: u16, code: &str) -> bool {
    let row = format!("/// | `{code}` | {status}");
    include_str!("error.rs").lines().any(|line| {
        line.trim_start()
            .strip_prefix(&row)
            .is_some_and(|rest| rest.starts_with([' ', ',']))
    })
}
