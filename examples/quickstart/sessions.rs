//! The sessions a user can see and end: listing, revoking one, revoking all the others.

use actix_login::{AuthUser, Session};
use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::users::Profile;

pub(crate) async fn list_sessions(
    _user: AuthUser<Profile>,
    session: Session,
) -> actix_web::Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(session.list_sessions().await?))
}

pub(crate) async fn revoke_session(
    _user: AuthUser<Profile>,
    session: Session,
    id: web::Path<String>,
) -> actix_web::Result<HttpResponse> {
    Ok(if session.revoke_session(&id).await? {
        HttpResponse::NoContent().finish()
    } else {
        HttpResponse::NotFound().json(json!({ "error": "no_such_session" }))
    })
}

pub(crate) async fn revoke_other_sessions(
    _user: AuthUser<Profile>,
    session: Session,
) -> actix_web::Result<HttpResponse> {
    session.revoke_other_sessions().await?;
    Ok(HttpResponse::NoContent().finish())
}
