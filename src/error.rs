//! Errors, and the HTTP responses they become.
//!
//! Response bodies are fixed JSON documents such as `{"error":"unauthenticated"}`: the details
//! stay in the error value and in the server log, never in what the client sees.

use std::error::Error as StdError;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

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
/// It implements [`ResponseError`], so handlers can return it with `?`:
///
/// | variant | status | body |
/// |---|---|---|
/// | [`Unauthenticated`](Error::Unauthenticated) | 401 | `{"error":"unauthenticated"}` |
/// | [`Forbidden`](Error::Forbidden) | 403 | `{"error":"forbidden"}` |
/// | [`ReauthRequired`](Error::ReauthRequired) | 403 | `{"error":"reauth_required"}` |
/// | [`CrossSiteRequest`](Error::CrossSiteRequest) | 403 | `{"error":"csrf_rejected"}` |
/// | [`Throttled`](Error::Throttled) | 429, with `Retry-After` | `{"error":"too many attempts"}` |
/// | [`InvalidInput`](Error::InvalidInput) | 400 | `{"error":"invalid input"}` |
/// | [`Store`](Error::Store) | 503 | `{"error":"service unavailable"}` |
/// | [`Store`](Error::Store) with [`StoreError::Corrupt`] | 401 | `{"error":"unauthenticated"}` |
/// | any other | 500 | `{"error":"internal error"}` |
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

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        match self {
            Error::Unauthenticated => StatusCode::UNAUTHORIZED,
            Error::Forbidden | Error::ReauthRequired | Error::CrossSiteRequest => {
                StatusCode::FORBIDDEN
            }
            Error::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::InvalidInput => StatusCode::BAD_REQUEST,
            Error::Store(StoreError::Corrupt(_)) => StatusCode::UNAUTHORIZED,
            Error::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let code = match self {
            Error::Forbidden => "forbidden",
            Error::ReauthRequired => "reauth_required",
            Error::CrossSiteRequest => "csrf_rejected",
            Error::Throttled { .. } => "too many attempts",
            Error::InvalidInput => "invalid input",
            _ if status == StatusCode::UNAUTHORIZED => "unauthenticated",
            _ if status == StatusCode::SERVICE_UNAVAILABLE => "service unavailable",
            _ => "internal error",
        };
        let mut response = json_error(status, code);
        if let Error::Throttled { retry_after } = self {
            // Whole seconds, rounded up: a client that waits exactly this long gets through.
            let secs = retry_after.as_millis().div_ceil(1000);
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

/// A response with the body `{"error":"<code>"}`.
///
/// `code` must be plain text without quotes or backslashes; every caller passes a literal.
pub(crate) fn json_error(status: StatusCode, code: &'static str) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ))
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .body(format!(r#"{{"error":"{code}"}}"#))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::to_bytes;

    async fn body_of(err: Error) -> (StatusCode, String) {
        let res = err.error_response();
        let status = res.status();
        let bytes = to_bytes(res.into_body()).await.unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[test]
    fn throttled_responses_say_when_to_retry_rounding_up() {
        let err = Error::Throttled {
            retry_after: std::time::Duration::from_millis(1500),
        };
        let res = err.error_response();
        assert_eq!(res.headers().get(header::RETRY_AFTER).unwrap(), "2");
    }

    #[actix_web::test]
    async fn responses_are_fixed_json_without_internals() {
        let io = std::io::Error::other("redis at 10.0.0.5:6379 refused");
        let cases = [
            (
                Error::Unauthenticated,
                401,
                r#"{"error":"unauthenticated"}"#,
            ),
            (
                Error::Store(StoreError::unavailable(io)),
                503,
                r#"{"error":"service unavailable"}"#,
            ),
            (
                Error::Store(StoreError::Timeout),
                503,
                r#"{"error":"service unavailable"}"#,
            ),
            (
                Error::Store(StoreError::corrupt("bad json")),
                401,
                r#"{"error":"unauthenticated"}"#,
            ),
            (
                Error::MissingMiddleware,
                500,
                r#"{"error":"internal error"}"#,
            ),
        ];
        for (err, status, body) in cases {
            assert_eq!(
                body_of(err).await,
                (StatusCode::from_u16(status).unwrap(), body.into())
            );
        }
    }
}
