//! How errors become HTTP responses: a status and a fixed JSON body `{"error":"<code>"}` with a
//! `snake_case` code, never the error's details, which stay in the server log.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

#[cfg(feature = "passkeys")]
use crate::error::PasskeyRejection;
use crate::error::{Error, StoreError};

impl Error {
    /// The status and the body's code this error answers with: the one place where either is
    /// declared, listed in the [table on `Error`](Error#error-codes). No wildcard, so that a
    /// new variant must choose its own.
    pub(crate) fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Error::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            Error::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            Error::ReauthRequired => (StatusCode::FORBIDDEN, "reauth_required"),
            Error::Impersonating => (StatusCode::FORBIDDEN, "impersonating"),
            Error::CrossSiteRequest => (StatusCode::FORBIDDEN, "csrf_rejected"),
            Error::SecondFactorRequired => (StatusCode::UNAUTHORIZED, "second_factor_required"),
            Error::SecondFactorReauthRequired => {
                (StatusCode::FORBIDDEN, "second_factor_reauth_required")
            }
            Error::InvalidCode => (StatusCode::UNAUTHORIZED, "invalid_code"),
            Error::TooManyCodes { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_codes"),
            Error::Throttled { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts"),
            Error::InvalidInput => (StatusCode::BAD_REQUEST, "invalid_input"),
            Error::SessionDataTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "session_data_too_large")
            }
            Error::SessionChanged => (StatusCode::CONFLICT, "session_changed"),
            Error::TooManySessions { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_sessions"),
            Error::LoginSuperseded => (StatusCode::CONFLICT, "login_superseded"),
            Error::TooManyTokens => (StatusCode::CONFLICT, "too_many_tokens"),
            Error::TokenRateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "token_rate_limited"),
            Error::InvalidLink => (StatusCode::GONE, "invalid_link"),
            Error::TooManyLinks { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_links"),
            #[cfg(feature = "passkeys")]
            Error::Passkey(rejection) => match rejection {
                PasskeyRejection::NoChallenge => (StatusCode::BAD_REQUEST, "passkey_no_challenge"),
                PasskeyRejection::ChallengeMismatch => {
                    (StatusCode::BAD_REQUEST, "passkey_challenge_mismatch")
                }
                PasskeyRejection::WrongOrigin => (StatusCode::BAD_REQUEST, "passkey_wrong_origin"),
                PasskeyRejection::Rejected => (StatusCode::BAD_REQUEST, "passkey_rejected"),
                PasskeyRejection::UnknownCredential => {
                    (StatusCode::UNAUTHORIZED, "passkey_unknown_credential")
                }
                PasskeyRejection::CounterRegressed => {
                    (StatusCode::UNAUTHORIZED, "passkey_counter_regressed")
                }
            },
            // An unreadable record authenticates no one: the session is absent.
            Error::Store(StoreError::Corrupt(_)) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            Error::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable"),
            Error::SessionData { .. }
            | Error::MissingMiddleware
            | Error::Profile(_)
            | Error::Random(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        self.status_and_code().0
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            // Whatever the handler was doing (a login, a data write, a revocation), the operator
            // must learn why the client got a 503, or a 401 for what the store holds. Tokens
            // never reach store errors.
            Error::Store(err @ StoreError::Corrupt(_)) => {
                tracing::error!(error = %err, "unreadable session in the store; answering 401");
            }
            Error::Store(err) => {
                tracing::error!(error = %err, "session store failed; answering 503");
            }
            _ => {}
        }
        let (status, code) = self.status_and_code();
        let mut response = json_error(status, code);
        if let Error::Throttled { retry_after }
        | Error::TooManySessions { retry_after }
        | Error::TokenRateLimited { retry_after }
        | Error::TooManyLinks { retry_after }
        | Error::TooManyCodes { retry_after } = self
        {
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

    /// One value of every variant, and of both kinds of store error.
    fn every_error() -> Vec<Error> {
        vec![
            Error::Unauthenticated,
            Error::Forbidden,
            Error::ReauthRequired,
            Error::Impersonating,
            Error::CrossSiteRequest,
            Error::SecondFactorRequired,
            Error::SecondFactorReauthRequired,
            Error::InvalidCode,
            Error::TooManyCodes {
                retry_after: std::time::Duration::from_secs(1),
            },
            Error::Throttled {
                retry_after: std::time::Duration::from_secs(1),
            },
            Error::InvalidInput,
            Error::SessionDataTooLarge { size: 2, limit: 1 },
            Error::SessionChanged,
            Error::TooManySessions {
                retry_after: std::time::Duration::from_secs(1),
            },
            Error::LoginSuperseded,
            Error::TooManyTokens,
            Error::TokenRateLimited {
                retry_after: std::time::Duration::from_secs(1),
            },
            Error::InvalidLink,
            Error::TooManyLinks {
                retry_after: std::time::Duration::from_secs(1),
            },
            #[cfg(feature = "passkeys")]
            Error::Passkey(crate::error::PasskeyRejection::NoChallenge),
            #[cfg(feature = "passkeys")]
            Error::Passkey(crate::error::PasskeyRejection::ChallengeMismatch),
            #[cfg(feature = "passkeys")]
            Error::Passkey(crate::error::PasskeyRejection::WrongOrigin),
            #[cfg(feature = "passkeys")]
            Error::Passkey(crate::error::PasskeyRejection::UnknownCredential),
            #[cfg(feature = "passkeys")]
            Error::Passkey(crate::error::PasskeyRejection::CounterRegressed),
            #[cfg(feature = "passkeys")]
            Error::Passkey(crate::error::PasskeyRejection::Rejected),
            Error::Store(StoreError::Timeout),
            Error::Store(StoreError::corrupt("bad json")),
            Error::MissingMiddleware,
            Error::SessionData {
                name: "cart".into(),
                source: serde_json::from_str::<u8>("x").unwrap_err(),
            },
            Error::Profile(serde_json::from_str::<u8>("x").unwrap_err()),
            Error::Random(getrandom::Error::UNSUPPORTED),
        ]
    }

    #[test]
    fn the_table_on_error_lists_every_code_with_its_status() {
        for err in every_error() {
            let (status, code) = err.status_and_code();
            assert!(
                crate::error::documented(status.as_u16(), code),
                "{err:?} answers {} {code:?}, which the table on Error does not list",
                status.as_u16()
            );
        }
    }

    #[test]
    fn codes_are_snake_case() {
        for err in every_error() {
            let res = err.error_response();
            let body = actix_web::rt::System::new()
                .block_on(to_bytes(res.into_body()))
                .unwrap();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let code = body["error"].as_str().unwrap().to_owned();
            assert!(
                code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{err:?} answers {code:?}"
            );
        }
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
                r#"{"error":"service_unavailable"}"#,
            ),
            (
                Error::Store(StoreError::Timeout),
                503,
                r#"{"error":"service_unavailable"}"#,
            ),
            (
                Error::Store(StoreError::corrupt("bad json")),
                401,
                r#"{"error":"unauthenticated"}"#,
            ),
            (
                Error::MissingMiddleware,
                500,
                r#"{"error":"internal_error"}"#,
            ),
            (
                Error::SessionDataTooLarge {
                    size: 70_000,
                    limit: 65_536,
                },
                413,
                r#"{"error":"session_data_too_large"}"#,
            ),
            (Error::SessionChanged, 409, r#"{"error":"session_changed"}"#),
            (
                Error::LoginSuperseded,
                409,
                r#"{"error":"login_superseded"}"#,
            ),
            (Error::TooManyTokens, 409, r#"{"error":"too_many_tokens"}"#),
            (
                Error::TokenRateLimited {
                    retry_after: std::time::Duration::from_millis(1),
                },
                429,
                r#"{"error":"token_rate_limited"}"#,
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
