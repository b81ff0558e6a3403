//! Changing the account's e-mail address, confirmed by a link to the new one.
//!
//! `POST /email` `{"email"}` (a fresh login, as for a password change) answers `202` and mails
//! a `/confirm-email/<secret>` link to the *new* address; the account keeps its address until
//! `POST /confirm-email/<secret>` (`204`), after which it has the new one, verified, and the old
//! address gets a notice (no link) that it is no longer the account's.
//!
//! - **No oracle for other accounts' addresses.** An address that another account has gets
//!   the same `202`, after the same store work (a link is issued and its secret dropped), the
//!   same counters and the same pending-change bookkeeping; the mail to that address says that
//!   someone tried to move an account there and carries no link. Only whoever reads that
//!   mailbox learns that the address is taken, and they could have signed in with it anyway.
//! - **The latest request wins.** Each request replaces the account's pending address, and a
//!   link changes the account only to the address the latest request named, so an earlier
//!   link stops working (`410 invalid_link`) once another address is asked for.
//! - **Bound to the password.** A password change ends every change link issued before it.
//! - **First confirmed, first served.** Two accounts may both ask for a free address; the
//!   first to confirm gets it, and the other's confirmation is `409 email_taken` (told only to
//!   someone who reads that mailbox).

use actix_login::links::{LinkPurpose, OneTimeLinks, Recipient};
use actix_login::{AuthUser, Error};
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use crate::links::{offer, owner, send_link, LinkBase};
use crate::mail::Mailer;
use crate::users::{EmailRefused, Profile, Users};

/// The longest address accepted: what fits an SMTP path (RFC 5321).
const MAX_EMAIL_BYTES: usize = 254;

#[derive(Deserialize)]
pub(crate) struct NewEmail {
    email: String,
}

/// The address as the user table keeps it (trimmed, lowercased), if it is one: a local part
/// and a domain as lettre parses them, within 254 bytes. No display names, no comments.
fn canonical_email(raw: &str) -> Option<String> {
    let email = raw.trim().to_lowercase();
    if email.is_empty() || email.len() > MAX_EMAIL_BYTES {
        return None;
    }
    let parsed: lettre::Address = email.parse().ok()?;
    // lettre accepts an IP literal domain; the quickstart wants a host name with a dot.
    (parsed.domain().contains('.') && !parsed.domain().starts_with('[')).then_some(email)
}

fn invalid_email() -> HttpResponse {
    HttpResponse::BadRequest().json(json!({ "error": "invalid_email" }))
}

/// `POST /email` `{"email"}`, behind a fresh login: `202`, the same body whether or not the
/// address is free.
pub(crate) async fn request_email_change(
    user: AuthUser<Profile>,
    links: OneTimeLinks,
    users: web::Data<Users>,
    mailer: web::Data<Mailer>,
    base: web::Data<LinkBase>,
    body: web::Json<NewEmail>,
) -> actix_web::Result<HttpResponse> {
    let Some(email) = canonical_email(&body.email) else {
        return Ok(invalid_email());
    };
    let id = user.id.to_string();
    // The same work either way: a link is issued to the account for this address (counted per
    // account and per address), and the request becomes the pending one.
    let issued = links
        .issue(
            LinkPurpose::ChangeEmail,
            &email,
            Some(Recipient::new(&id, &email)),
        )
        .await?;
    users.set_pending_email(&user.username, &email);
    if let Some(issued) = issued {
        if users.email_taken(&email, &user.username) {
            // The secret is dropped here: nobody can use this link.
            mailer.send(
                &email,
                "Someone tried to use your e-mail address",
                "Someone asked to move an account to this address, but it already belongs to \
                 an account. Nothing was changed.\r\n\r\nIf that was you, sign in with the \
                 account that has this address, or reset its password.\r\n"
                    .to_owned(),
            );
        } else {
            send_link(
                &mailer,
                &base,
                &email,
                LinkPurpose::ChangeEmail,
                issued.secret(),
            );
        }
    }
    Ok(HttpResponse::Accepted().json(json!({
        "status": "accepted",
        "message": "a confirmation link is on its way to the new address",
    })))
}

/// `GET /confirm-email/{secret}`: `200`, the link stays unused.
pub(crate) async fn show_email_change(
    links: OneTimeLinks,
    secret: web::Path<String>,
) -> actix_web::Result<HttpResponse> {
    let info = links.peek(LinkPurpose::ChangeEmail, &secret).await?;
    Ok(offer(&info, "POST this URL to confirm the new address"))
}

/// `POST /confirm-email/{secret}`: `204`; `GET /me` shows the new address, verified. Needs no
/// login: the link is the proof, and may be opened on another device.
pub(crate) async fn confirm_email_change(
    links: OneTimeLinks,
    users: web::Data<Users>,
    mailer: web::Data<Mailer>,
    secret: web::Path<String>,
) -> actix_web::Result<HttpResponse> {
    let used = links.consume(LinkPurpose::ChangeEmail, &secret).await?;
    let (username, _, _) = owner(&users, &used)?;
    match users.confirm_email(&username, used.address()) {
        Ok(old) => {
            mailer.send(
                &old,
                "Your e-mail address was changed",
                format!(
                    "The account {username} now receives its mail at another address, and no \
                     longer at this one.\r\n\r\nIf you did not ask for this, reset your \
                     password and contact us.\r\n"
                ),
            );
            Ok(HttpResponse::NoContent().finish())
        }
        Err(EmailRefused::NotPending) => Err(Error::InvalidLink.into()),
        Err(EmailRefused::Taken) => {
            Ok(HttpResponse::Conflict().json(json!({ "error": "email_taken" })))
        }
    }
}
