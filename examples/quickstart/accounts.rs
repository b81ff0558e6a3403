//! Accounts: sign-up, login and logout, `/me`, re-authentication and password changes.

use actix_login::links::OneTimeLinks;
use actix_login::policy::PasswordPolicy;
use actix_login::throttle::LoginThrottle;
use actix_login::{password, AuthUser, Login, Session, Sessions};
use actix_web::cookie::Cookie;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::admin::push_roles;
use crate::links::{mail_verification, LinkBase};
use crate::mail::Mailer;
use crate::users::{hasher, Profile, Users};

pub(crate) fn invalid_credentials() -> HttpResponse {
    HttpResponse::Unauthorized().json(json!({ "error": "invalid_credentials" }))
}

#[derive(Deserialize)]
pub(crate) struct Credentials {
    username: String,
    password: String,
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    pub(crate) username: String,
    pub(crate) password: String,
    /// "Keep me signed in": the longer remember timeouts, and a cookie that outlives the
    /// browser session.
    #[serde(default)]
    pub(crate) remember: bool,
}

/// Logs in; the new session keeps the data (cart, preferences) of the session the browser came
/// with, as `Login` does by default, if that one was anonymous or the same user's.
pub(crate) async fn login(
    req: HttpRequest,
    users: web::Data<Users>,
    throttle: web::Data<LoginThrottle>,
    session: Session,
    sessions: Sessions,
    creds: web::Json<LoginForm>,
) -> actix_web::Result<HttpResponse> {
    let username = canonical_username(&creds.username).unwrap_or_default();
    let version = users.password_version(&username);
    let Some(device) =
        password_matches(&req, &throttle, &users, &creds.username, &creds.password).await?
    else {
        return Ok(invalid_credentials());
    };
    let Some((profile, roles, _)) = users.find(&username) else {
        return Ok(invalid_credentials());
    };
    let login = Login::new(profile.id.to_string(), &profile)
        .roles(roles.clone())
        .credentials_version(version.to_string())
        .remember(creds.remember);
    session.login_with(login).await?;
    // A role change between reading the roles and creating the session found no session to
    // update: if the table moved on meanwhile, this login brings its session up to date.
    if users
        .find(&username)
        .is_some_and(|(_, now, _)| now != roles)
    {
        push_roles(&users, &sessions, &username).await?;
    }
    Ok(HttpResponse::Ok().cookie(device).json(profile))
}

/// Checks a password under the login throttle: the attempt is counted before the check (past
/// the limit even the right password gets 429, except from a browser that logged in before)
/// and forgiven if it succeeds. Unknown users cost the same as wrong passwords. On success,
/// the device cookie that lets this browser past the limits next time, for the response.
async fn password_matches(
    req: &HttpRequest,
    throttle: &LoginThrottle,
    users: &Users,
    username: &str,
    password: &str,
) -> actix_web::Result<Option<Cookie<'static>>> {
    let canonical = canonical_username(username).unwrap_or_default();
    // Device cookies are bound to the account's id, not to the name typed.
    let id = users
        .find(&canonical)
        .map(|(profile, _, _)| profile.id.to_string());
    let attempt = throttle.attempt(req, username, id.as_deref()).await?;
    let verified = match users.verify(attempt.lane(), &canonical, password).await {
        // Turned away by a full hashing queue (503 login_busy): no guess was made, so none is
        // counted against the user.
        Err(password::PasswordError::Busy) => {
            attempt.not_checked().await?;
            return Err(password::PasswordError::Busy.into());
        }
        verified => verified?,
    };
    if verified {
        Ok(Some(attempt.succeeded().await?))
    } else {
        attempt.failed().await?;
        Ok(None)
    }
}

/// The response refusing a new password the policy rejects, if it does.
pub(crate) fn policy_refusal(password: &str, username: &str) -> Option<HttpResponse> {
    let violation = PasswordPolicy::new()
        .check(password, &[username, "actix-login"])
        .err()?;
    Some(
        HttpResponse::BadRequest()
            .json(json!({ "error": "weak_password", "reason": violation.reason() })),
    )
}

/// Usernames are lowercase ASCII letters, digits, `.`, `_` and `-`: no look-alike letters from
/// other scripts, no two accounts that differ only in case.
pub(crate) fn canonical_username(raw: &str) -> Option<String> {
    let name = raw.trim().to_ascii_lowercase();
    let valid = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    valid.then_some(name)
}

/// Accounts get a password the policy accepts: long enough, not common, not the username.
///
/// Whether a name is taken is the one thing sign-up must tell, so it is told as late and as
/// dearly as possible: every attempt counts against the address's sign-up limit, a refused
/// password gets the same answer for taken and free names, and a taken name costs the same
/// argon2 work as a free one.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn register(
    req: HttpRequest,
    users: web::Data<Users>,
    throttle: web::Data<LoginThrottle>,
    sessions: Sessions,
    links: OneTimeLinks,
    mailer: web::Data<Mailer>,
    base: web::Data<LinkBase>,
    creds: web::Json<Credentials>,
) -> actix_web::Result<HttpResponse> {
    throttle.registration(&req).await?;
    let Some(username) = canonical_username(&creds.username) else {
        return Ok(HttpResponse::BadRequest().json(json!({ "error": "invalid_username" })));
    };
    if let Some(refusal) = policy_refusal(&creds.password, &username) {
        return Ok(refusal);
    }
    let hash = hasher().hash_registration(&creds.password).await?;
    let Some(profile) = users.add(&username, hash) else {
        return Ok(HttpResponse::Conflict().json(json!({ "error": "username_taken" })));
    };
    // The credentials first: the verification link is bound to them.
    start_credentials(&sessions, profile.id).await?;
    mail_verification(&links, &mailer, &base, profile.id, &username).await;
    Ok(HttpResponse::Created().json(profile))
}

/// Records a user's first password. The quickstart keeps users in memory and hands out ids
/// again after a restart, while Redis keeps sessions and credentials versions: this ends
/// whatever a previous user with this id left behind, so their recorded version and sessions
/// do not carry over. An app whose users live in a database never reuses ids and never needs it.
pub(crate) async fn start_credentials(
    sessions: &Sessions,
    id: u64,
) -> Result<(), actix_login::Error> {
    sessions.credentials_changed(&id.to_string(), "0").await?;
    Ok(())
}

/// The profile, the user's mail address and whether it is verified (from the user table:
/// they change while the session lives).
pub(crate) async fn me(user: AuthUser<Profile>, users: web::Data<Users>) -> web::Json<Me> {
    let email_verified = users.email_verified(&user.username);
    let email = users.email(&user.username).unwrap_or_default();
    let Profile { id, username } = user.into_inner();
    web::Json(Me {
        id,
        username,
        email,
        email_verified,
    })
}

/// What `GET /me` answers: the session's profile and the account's address status.
#[derive(Serialize)]
pub(crate) struct Me {
    id: u64,
    username: String,
    email: String,
    email_verified: bool,
}

pub(crate) async fn logout(
    _user: AuthUser<Profile>,
    session: Session,
) -> actix_web::Result<HttpResponse> {
    session.logout().await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
pub(crate) struct Reauth {
    password: String,
}

/// Confirms the password again: the session becomes fresh and gets a new token.
pub(crate) async fn reauth(
    req: HttpRequest,
    users: web::Data<Users>,
    throttle: web::Data<LoginThrottle>,
    user: AuthUser<Profile>,
    session: Session,
    body: web::Json<Reauth>,
) -> actix_web::Result<HttpResponse> {
    // A stolen session must not become a free password oracle: same limits as login.
    let Some(device) =
        password_matches(&req, &throttle, &users, &user.username, &body.password).await?
    else {
        return Ok(invalid_credentials());
    };
    session.reauthenticate().await?;
    Ok(HttpResponse::NoContent().cookie(device).finish())
}

#[derive(Deserialize)]
pub(crate) struct PasswordChange {
    current_password: String,
    new_password: String,
}

/// Needs a fresh session (see the route). Every other session of the user ends; this one gets a
/// new token.
pub(crate) async fn change_password(
    req: HttpRequest,
    users: web::Data<Users>,
    throttle: web::Data<LoginThrottle>,
    user: AuthUser<Profile>,
    session: Session,
    body: web::Json<PasswordChange>,
) -> actix_web::Result<HttpResponse> {
    if let Some(refusal) = policy_refusal(&body.new_password, &user.username) {
        return Ok(refusal);
    }
    let current = &body.current_password;
    let Some(device) = password_matches(&req, &throttle, &users, &user.username, current).await?
    else {
        return Ok(invalid_credentials());
    };
    let hash = hasher().hash(&body.new_password).await?;
    let version = users.change_password(&user.username, hash);
    // Ends every other session, and any login that verified the old password and has yet to
    // finish; then this one moves to a new token.
    session.credentials_changed(version.to_string()).await?;
    session.reauthenticate().await?;
    Ok(HttpResponse::NoContent().cookie(device).finish())
}
