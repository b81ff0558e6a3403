//! How password errors become HTTP responses, kept out of `password.rs` so that hashing knows
//! nothing of HTTP.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use super::password::PasswordError;
use crate::web::json_error;

impl ResponseError for PasswordError {
    fn status_code(&self) -> StatusCode {
        match self {
            PasswordError::TooLong => StatusCode::BAD_REQUEST,
            PasswordError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let code = match self {
            PasswordError::TooLong => "password_too_long",
            PasswordError::Busy => "login_busy",
            _ => "internal_error",
        };
        let mut res = json_error(self.status_code(), code);
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
}
