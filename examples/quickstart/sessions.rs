//! The sessions a user can see and end: listing, revoking one, revoking all the others.

use actix_login::{AuthUser, Session};
use actix_web::{web, HttpResponse};
use serde::Deserialize;
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

#[derive(Deserialize)]
pub(crate) struct ActivityPage {
    /// The `id` of the last entry of the previous page.
    before: Option<String>,
}

/// The user's own security history, newest first, 50 entries a page:
/// `[{"id","type","at","ip","user_agent","session_id"}, ...]`; `?before=<id>` for the next page.
pub(crate) async fn activity(
    _user: AuthUser<Profile>,
    session: Session,
    page: web::Query<ActivityPage>,
) -> actix_web::Result<HttpResponse> {
    let entries = session.activity(page.before.as_deref(), 50).await?;
    Ok(HttpResponse::Ok().json(entries))
}
