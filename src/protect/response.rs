//! How password errors become HTTP responses, kept out of `password.rs` so that hashing knows
//! nothing of HTTP.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use super::password::PasswordError;
use crate::web::json_error;

impl PasswordError {
    /// The status and the body's code this error answers with: the one place where either is
    /// declared, listed in the [table on `Error`](crate::Error#error-codes). No wildcard, so
    /// that a new variant must choose its own.
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            PasswordError::TooLong => (StatusCode::BAD_REQUEST, "password_too_long"),
            PasswordError::Busy => (StatusCode::SERVICE_UNAVAILABLE, "login_busy"),
            PasswordError::MalformedHash(_)
            | PasswordError::UnknownPepper
            | PasswordError::InvalidPepperId
            | PasswordError::WeakPepper
            | PasswordError::Hashing(_)
            | PasswordError::Random(_)
            | PasswordError::Interrupted(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
            }
        }
    }
}

impl ResponseError for PasswordError {
    fn status_code(&self) -> StatusCode {
        self.status_and_code().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, code) = self.status_and_code();
        let mut res = json_error(status, code);
        if let PasswordError::Busy = self {
            // A turn comes every few tens of milliseconds: a second is plenty.
            res.headers_mut().insert(
                actix_web::http::header::RETRY_AFTER,
                actix_web::http::header::HeaderValue::from_static("1"),
            );
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::to_bytes;

    #[actix_web::test]
    async fn a_too_long_password_is_the_clients_fault_and_nothing_else_is() {
        let res = PasswordError::TooLong.error_response();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        let body = to_bytes(res.into_body()).await.unwrap();
        assert_eq!(&body[..], br#"{"error":"password_too_long"}"#);
        let res = PasswordError::UnknownPepper.error_response();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = to_bytes(res.into_body()).await.unwrap();
        assert_eq!(&body[..], br#"{"error":"internal_error"}"#);
    }

    #[test]
    fn the_table_on_error_lists_every_password_code_with_its_status() {
        for err in [
            PasswordError::TooLong,
            PasswordError::Busy,
            PasswordError::UnknownPepper,
        ] {
            let (status, code) = err.status_and_code();
            assert!(
                crate::error::documented(status.as_u16(), code),
                "{err:?} answers {} {code:?}, which the table on Error does not list",
                status.as_u16()
            );
        }
    }
}
