//! Personal access tokens for scripts, sent as `Authorization: Bearer <token>`.

use std::time::Duration;

use actix_login::{PersonalToken, Session};
use actix_web::{web, HttpResponse};
use serde::Deserialize;

#[derive(Deserialize)]
pub(crate) struct NewToken {
    name: String,
    expires_in_secs: Option<u64>,
}

/// Creates a personal access token for scripts and other clients, which send it as
/// `Authorization: Bearer <token>`. The secret is in this response only: the store keeps a hash.
pub(crate) async fn create_token(
    session: Session,
    body: web::Json<NewToken>,
) -> actix_web::Result<HttpResponse> {
    let NewToken {
        name,
        expires_in_secs,
    } = body.into_inner();
    let mut token = PersonalToken::new(name);
    if let Some(secs) = expires_in_secs {
        token = token.expires_in(Duration::from_secs(secs));
    }
    // A blank or overlong name and a zero lifetime come back as `400 invalid_input`; a stale
    // session or a token as `403 reauth_required`; the limits as `409 too_many_tokens` and
    // `429 token_rate_limited`.
    let issued = session.create_token(token).await?;
    Ok(HttpResponse::Created().json(issued))
}
