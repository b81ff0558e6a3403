//! One-time links: password reset, e-mail verification and sign-in by e-mail link.
//!
//! Asking for a link answers `202` with the same body whether or not the account exists, and
//! does the same work either way (the crate counts and writes a link for unknown names too;
//! the mail goes out in the background). Opening a link (`GET`) only shows what it is for:
//! mail scanners follow links, so only a `POST` uses one up.

use std::time::UNIX_EPOCH;

use actix_login::events::LoginMethod;
use actix_login::links::{LinkInfo, LinkPurpose, OneTimeLinks, Recipient};
use actix_login::throttle::LoginThrottle;
use actix_login::{Error, Login, Session, Sessions};
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use crate::accounts::{canonical_username, policy_refusal};
use crate::mail::Mailer;
use crate::users::{address, hasher, Users};

/// Where the mail for a link to `username` goes: the address the account has now.
pub(crate) fn email_of(users: &Users, username: &str) -> String {
    users.email(username).unwrap_or_else(|| address(username))
}

/// Where links point: `http://<ADDR>`.
pub(crate) struct LinkBase(pub(crate) String);

#[derive(Deserialize)]
pub(crate) struct LinkRequest {
    username: String,
}

/// The one answer to every request for a link.
fn accepted() -> HttpResponse {
    HttpResponse::Accepted().json(
        json!({ "status": "accepted", "message": "if the account exists, a link is on its way" }),
    )
}

/// Issues a link for `purpose` to the account `typed` names, if any, and mails it.
async fn mail_link(
    links: &OneTimeLinks,
    users: &Users,
    mailer: &Mailer,
    base: &LinkBase,
    purpose: LinkPurpose,
    typed: &str,
) -> actix_web::Result<HttpResponse> {
    let account = canonical_username(typed)
        .and_then(|name| users.find(&name).map(|(profile, _, _)| (name, profile)))
        .map(|(name, profile)| (profile.id.to_string(), email_of(users, &name)));
    let to = account
        .as_ref()
        .map(|(id, address)| Recipient::new(id, address));
    if let (Some(issued), Some((_, to))) = (links.issue(purpose, typed, to).await?, &account) {
        send_link(mailer, base, to, purpose, issued.secret());
    }
    Ok(accepted())
}

/// The mail for a link: the link alone on its line, as plain text.
pub(crate) fn send_link(
    mailer: &Mailer,
    base: &LinkBase,
    to: &str,
    purpose: LinkPurpose,
    secret: &str,
) {
    let (path, subject, what) = match purpose {
        LinkPurpose::PasswordReset => (
            "password-reset",
            "Reset your password",
            "Someone (we hope you) asked to reset the password of your account. To choose a new \
             one, open",
        ),
        LinkPurpose::VerifyEmail => (
            "verify-email",
            "Confirm your e-mail address",
            "To confirm that this is your address, open",
        ),
        LinkPurpose::ChangeEmail => (
            "confirm-email",
            "Confirm your new e-mail address",
            "Someone (we hope you) asked to move an account to this address. To confirm it, \
             open",
        ),
        _ => (
            "magic-link",
            "Your sign-in link",
            "To sign in without your password, open",
        ),
    };
    let body = format!(
        "{what}\r\n\r\n{}/{path}/{secret}\r\n\r\nThe link works once. If you did not ask for \
         it, ignore this message.\r\n",
        base.0
    );
    mailer.send(to, subject, body);
}

/// What `GET` of a valid link answers: what it is for and how to use it; it stays unused.
pub(crate) fn offer(info: &LinkInfo, action: &str) -> HttpResponse {
    let expires_at = info
        .expires_at()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    // The secret is in this page's URL: no cache keeps it, no Referer carries it away.
    HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .insert_header(("referrer-policy", "no-referrer"))
        .json(json!({ "purpose": info.purpose(), "action": action, "expires_at": expires_at }))
}

/// The user a link acts on, by username, with profile and roles.
pub(crate) fn owner(
    users: &Users,
    info: &LinkInfo,
) -> Result<(String, crate::users::Profile, Vec<String>), Error> {
    users.find_by_id(info.user_id()).ok_or(Error::InvalidLink)
}

/// `POST /password-reset` `{"username"}`: `202`, and a reset link by mail if the account exists.
pub(crate) async fn request_password_reset(
    links: OneTimeLinks,
    users: web::Data<Users>,
    mailer: web::Data<Mailer>,
    base: web::Data<LinkBase>,
    body: web::Json<LinkRequest>,
) -> actix_web::Result<HttpResponse> {
    let purpose = LinkPurpose::PasswordReset;
    mail_link(&links, &users, &mailer, &base, purpose, &body.username).await
}

pub(crate) async fn show_password_reset(
    links: OneTimeLinks,
    secret: web::Path<String>,
) -> actix_web::Result<HttpResponse> {
    let info = links.peek(LinkPurpose::PasswordReset, &secret).await?;
    Ok(offer(
        &info,
        r#"POST this URL with {"password"} to set a new password"#,
    ))
}

#[derive(Deserialize)]
pub(crate) struct NewPassword {
    password: String,
}

/// `POST /password-reset/{secret}` `{"password"}`: `204`. The link is checked first and used
/// only once the new password passed the policy and is hashed, so a weak password costs the
/// user no new mail. Every session of the account ends, and every other link it has.
pub(crate) async fn reset_password(
    links: OneTimeLinks,
    users: web::Data<Users>,
    sessions: Sessions,
    secret: web::Path<String>,
    body: web::Json<NewPassword>,
) -> actix_web::Result<HttpResponse> {
    let purpose = LinkPurpose::PasswordReset;
    let info = links.peek(purpose, &secret).await?;
    let (username, profile, _) = owner(&users, &info)?;
    if let Some(refusal) = policy_refusal(&body.password, &username) {
        return Ok(refusal);
    }
    let hash = hasher().hash(&body.password).await?;
    let used = links.consume(purpose, &secret).await?;
    if used.user_id() != info.user_id() || used.address() != email_of(&users, &username) {
        return Err(Error::InvalidLink.into());
    }
    let version = users.change_password(&username, hash);
    sessions
        .credentials_changed(&profile.id.to_string(), version.to_string())
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// After sign-up: a verification link to the new account's address. A refusal (too many links
/// lately) does not undo the sign-up; the log says why no mail came.
pub(crate) async fn mail_verification(
    links: &OneTimeLinks,
    mailer: &Mailer,
    base: &LinkBase,
    id: u64,
    username: &str,
) {
    let (id, to) = (id.to_string(), address(username));
    let purpose = LinkPurpose::VerifyEmail;
    match links
        .issue(purpose, username, Some(Recipient::new(&id, &to)))
        .await
    {
        Ok(Some(issued)) => send_link(mailer, base, &to, purpose, issued.secret()),
        Ok(None) => {}
        Err(err) => tracing::warn!(user_id = id, error = %err, "no verification link sent"),
    }
}

pub(crate) async fn show_verify_email(
    links: OneTimeLinks,
    secret: web::Path<String>,
) -> actix_web::Result<HttpResponse> {
    let info = links.peek(LinkPurpose::VerifyEmail, &secret).await?;
    Ok(offer(&info, "POST this URL to confirm the address"))
}

/// `POST /verify-email/{secret}`: `204`; `/me` shows `"email_verified": true` from then on. A
/// link for an address the account no longer has verifies nothing.
pub(crate) async fn verify_email(
    links: OneTimeLinks,
    users: web::Data<Users>,
    secret: web::Path<String>,
) -> actix_web::Result<HttpResponse> {
    let used = links.consume(LinkPurpose::VerifyEmail, &secret).await?;
    let (username, _, _) = owner(&users, &used)?;
    if !users.verify_email(&username, used.address()) {
        return Err(Error::InvalidLink.into());
    }
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /magic-link` `{"username"}`: `202`, and a sign-in link by mail if the account exists.
pub(crate) async fn request_magic_link(
    links: OneTimeLinks,
    users: web::Data<Users>,
    mailer: web::Data<Mailer>,
    base: web::Data<LinkBase>,
    body: web::Json<LinkRequest>,
) -> actix_web::Result<HttpResponse> {
    let purpose = LinkPurpose::SignIn;
    mail_link(&links, &users, &mailer, &base, purpose, &body.username).await
}

pub(crate) async fn show_magic_link(
    links: OneTimeLinks,
    secret: web::Path<String>,
) -> actix_web::Result<HttpResponse> {
    let info = links.peek(LinkPurpose::SignIn, &secret).await?;
    Ok(offer(&info, "POST this URL to sign in"))
}

/// `POST /magic-link/{secret}`: `200` with the profile and the session cookie, in the browser
/// that posts it, through the same login as a password (a new token, the session cap, the
/// credentials version read before the link is used, a device cookie).
pub(crate) async fn sign_in_with_link(
    links: OneTimeLinks,
    users: web::Data<Users>,
    throttle: web::Data<LoginThrottle>,
    session: Session,
    secret: web::Path<String>,
) -> actix_web::Result<HttpResponse> {
    let purpose = LinkPurpose::SignIn;
    let info = links.peek(purpose, &secret).await?;
    let (username, profile, roles) = owner(&users, &info)?;
    // Read before the link is used: a password change from here on ends this login.
    let version = users.password_version(&username);
    let used = links.consume(purpose, &secret).await?;
    if used.user_id() != info.user_id() || used.address() != email_of(&users, &username) {
        return Err(Error::InvalidLink.into());
    }
    let id = profile.id.to_string();
    let login = Login::new(id.clone(), &profile)
        .roles(roles)
        .credentials_version(version.to_string())
        .method(LoginMethod::Link);
    session.login_with(login).await?;
    let device = throttle.trust_device(&id).await?;
    Ok(HttpResponse::Ok().cookie(device).json(profile))
}
