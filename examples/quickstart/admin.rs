//! The admin-only routes: `GET /admin`, role changes that reach live sessions, and
//! impersonation.

use actix_login::{AuthUser, Login, Session, Sessions};
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use crate::accounts::canonical_username;
use crate::users::{Profile, Users};

pub(crate) async fn admin(user: AuthUser<Profile>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "admin": user.username }))
}

/// The roles `PUT /users/{username}/roles` may grant.
const KNOWN_ROLES: &[&str] = &["admin"];

#[derive(Deserialize)]
pub(crate) struct RolesChange {
    roles: Vec<String>,
}

/// Replaces a user's roles (admins only, see the route): future logins get them from the user
/// table, and every live session of the user has them on its next request, on every instance.
///
/// Each instance of the quickstart has its own user table, so logins on other instances still
/// grant the old roles until they restart; an app whose users live in a database has no such gap.
pub(crate) async fn set_roles(
    users: web::Data<Users>,
    sessions: Sessions,
    username: web::Path<String>,
    body: web::Json<RolesChange>,
) -> actix_web::Result<HttpResponse> {
    let mut roles = body.into_inner().roles;
    if roles
        .iter()
        .any(|role| !KNOWN_ROLES.contains(&role.as_str()))
    {
        return Ok(HttpResponse::BadRequest().json(json!({ "error": "unknown_role" })));
    }
    roles.sort();
    roles.dedup();
    let not_found = || HttpResponse::NotFound().json(json!({ "error": "not_found" }));
    let Some(username) = canonical_username(&username) else {
        return Ok(not_found());
    };
    if users.set_roles(&username, roles).is_none() {
        return Ok(not_found());
    }
    push_roles(&users, &sessions, &username).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Gives every live session of `username` the profile and roles the user table holds, and
/// repeats while the table changes under it: of two role changes racing, each push is followed
/// by a look at the table, so the last one pushes what the table ends with.
pub(crate) async fn push_roles(
    users: &Users,
    sessions: &Sessions,
    username: &str,
) -> Result<(), actix_login::Error> {
    let Some((mut profile, mut roles, _)) = users.find(username) else {
        return Ok(());
    };
    loop {
        let id = profile.id.to_string();
        sessions.update_user(&id, &profile, roles.clone()).await?;
        match users.find(username) {
            Some((now_profile, now_roles, _)) if now_roles != roles => {
                (profile, roles) = (now_profile, now_roles);
            }
            _ => return Ok(()),
        }
    }
}

/// `POST /admin/impersonate/{username}` (admins, with a fresh password; see the route): this
/// browser acts as the user until `POST /admin/impersonate/stop`. `200` with the user's
/// profile and their session's cookie; `404 not_found` for no such user, `400 invalid_input`
/// for oneself.
pub(crate) async fn impersonate(
    session: Session,
    users: web::Data<Users>,
    username: web::Path<String>,
) -> actix_web::Result<HttpResponse> {
    let not_found = || HttpResponse::NotFound().json(json!({ "error": "not_found" }));
    let Some((profile, roles, _)) =
        canonical_username(&username).and_then(|name| users.find(&name))
    else {
        return Ok(not_found());
    };
    session
        .impersonate(Login::new(profile.id.to_string(), &profile).roles(roles))
        .await?;
    Ok(HttpResponse::Ok().json(profile))
}

/// `POST /admin/impersonate/stop`, from the impersonation: back to the admin's own session,
/// `200` with the admin's profile and a new cookie for it (`401` if it ended meanwhile);
/// `400 not_impersonating` from any other session.
pub(crate) async fn stop_impersonating(
    user: AuthUser<Profile>,
    session: Session,
    users: web::Data<Users>,
) -> actix_web::Result<HttpResponse> {
    let Some(admin) = user.impersonated_by().map(str::to_owned) else {
        return Ok(HttpResponse::BadRequest().json(json!({ "error": "not_impersonating" })));
    };
    if !session.stop_impersonating().await? {
        return Ok(HttpResponse::Unauthorized().json(json!({ "error": "unauthenticated" })));
    }
    Ok(match users.find_by_id(&admin) {
        Some((_, profile, _)) => HttpResponse::Ok().json(profile),
        None => HttpResponse::Ok().json(json!({ "id": admin })),
    })
}
