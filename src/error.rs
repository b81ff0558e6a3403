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
/// `?`:
///
/// | variant | status | body |
/// |---|---|---|
/// | [`Unauthenticated`](Error::Unauthenticated) | 401 | `{"error":"unauthenticated"}` |
/// | [`Forbidden`](Error::Forbidden) | 403 | `{"error":"forbidden"}` |
/// | [`ReauthRequired`](Error::ReauthRequired) | 403 | `{"error":"reauth_required"}` |
/// | [`CrossSiteRequest`](Error::CrossSiteRequest) | 403 | `{"error":"csrf_rejected"}` |
/// | [`Throttled`](Error::Throttled) | 429, with `Retry-After` | `{"error":"too_many_attempts"}` |
/// | [`InvalidInput`](Error::InvalidInput) | 400 | `{"error":"invalid_input"}` |
/// | [`SessionDataTooLarge`](Error::SessionDataTooLarge) | 413 | `{"error":"session_data_too_large"}` |
/// | [`SessionChanged`](Error::SessionChanged) | 409 | `{"error":"session_changed"}` |
/// | [`TooManySessions`](Error::TooManySessions) | 429, with `Retry-After` | `{"error":"too_many_sessions"}` |
/// | [`LoginSuperseded`](Error::LoginSuperseded) | 409 | `{"error":"login_superseded"}` |
/// | [`TooManyTokens`](Error::TooManyTokens) | 409 | `{"error":"too_many_tokens"}` |
/// | [`TokenRateLimited`](Error::TokenRateLimited) | 429, with `Retry-After` | `{"error":"token_rate_limited"}` |
/// | [`Store`](Error::Store) | 503 | `{"error":"service_unavailable"}` |
/// | [`Store`](Error::Store) with [`StoreError::Corrupt`] | 401 | `{"error":"unauthenticated"}` |
/// | any other | 500 | `{"error":"internal_error"}` |
///
/// The [crate docs](crate#error-responses) list every code the crate answers with.
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
