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
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let code = match self {
            PasswordError::TooLong => "password_too_long",
            _ => "internal_error",
        };
        json_error(self.status_code(), code)
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
