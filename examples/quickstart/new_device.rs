//! "New sign-in to your account": a mail for every login from a browser that had no device
//! cookie for the account, with a link that ends that session and no other ("this wasn't
//! me"): `GET /end-session/<secret>` says what it does, `POST` ends the session (`204`), once.
//!
//! On whenever mail is (`MAIL_DIR` or `SMTP_URL`); `NEW_DEVICE_MAIL=0` turns it off. The link
//! is the crate's `EndSession` kind, which the app sends of its own accord: it counts toward
//! none of the link limits, so a notice never takes the place of a password reset.
//!
//! The notice starts as a security event, on the crate's events thread; a task on the main
//! runtime takes it from there, issues the link and hands the mail to the mailer, so no login
//! waits for any of it.

use std::time::{SystemTime, UNIX_EPOCH};

use actix_login::events::{EventKind, SecurityEvent};
use actix_login::links::{LinkPurpose, OneTimeLinks, Recipient};
use actix_web::{web, HttpResponse};
use tokio::sync::mpsc;

use crate::links::{email_of, offer, LinkBase};
use crate::mail::Mailer;
use crate::users::Users;

/// A login from a new browser, as the notice tells it.
pub(crate) struct NewSignIn {
    user_id: String,
    session_id: String,
    ip: Option<String>,
    user_agent: Option<String>,
    at: SystemTime,
}

/// Whether notices go out: `NEW_DEVICE_MAIL=0` never, `1` always (logged only, without
/// mail), otherwise whenever `mail_on`.
pub(crate) fn wanted(mail_on: bool) -> bool {
    match std::env::var("NEW_DEVICE_MAIL").as_deref() {
        Ok("0") => false,
        Ok("1") => true,
        _ => mail_on,
    }
}

/// The event handler that picks new-device logins out, if `on`, and where it puts them.
pub(crate) fn notices(
    on: bool,
) -> (
    impl Fn(&SecurityEvent) + Send + 'static,
    mpsc::Receiver<NewSignIn>,
) {
    let (queue, notices) = mpsc::channel(256);
    let handler = move |event: &SecurityEvent| {
        if !on {
            return;
        }
        let (
            EventKind::LoginSucceeded {
                new_device: true,
                session_id,
                ..
            },
            Some(user_id),
        ) = (&event.kind, &event.user_id)
        else {
            return;
        };
        let notice = NewSignIn {
            user_id: user_id.clone(),
            session_id: session_id.clone(),
            ip: event.ip.clone(),
            user_agent: event.user_agent.clone(),
            at: event.at,
        };
        if queue.try_send(notice).is_err() {
            tracing::warn!(user_id, "new sign-in notice dropped: too many waiting");
        }
    };
    (handler, notices)
}

/// Mails each notice, on a task of the current (main) runtime.
pub(crate) fn mail_notices(
    mut notices: mpsc::Receiver<NewSignIn>,
    links: OneTimeLinks,
    users: web::Data<Users>,
    mailer: web::Data<Mailer>,
    base: web::Data<LinkBase>,
) {
    actix_web::rt::spawn(async move {
        while let Some(notice) = notices.recv().await {
            let Some((username, _, _)) = users.find_by_id(&notice.user_id) else {
                continue;
            };
            let to = email_of(&users, &username);
            let recipient = Recipient::new(&notice.user_id, &to);
            let way_out = match links.issue_end_session(recipient, &notice.session_id).await {
                Ok(link) => format!(
                    "If this wasn't you, end that session now by opening\r\n\r\n\
                     {}/end-session/{}\r\n\r\nand then choose a new password: whoever signed \
                     in knows the one you have.\r\n",
                    base.0,
                    link.secret()
                ),
                // The store failed: the mail still goes, without its own link.
                Err(err) => {
                    tracing::warn!(user_id = notice.user_id, error = %err, "no end-session link");
                    "If this wasn't you, ask for a password reset on the sign-in page: a new \
                     password ends every session of your account, this one included.\r\n"
                        .to_owned()
                }
            };
            let at = notice
                .at
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            let body = format!(
                "Your account was signed in to from a browser it had not been used in before.\r\n\
                 \r\nAddress: {}\r\nBrowser: {}\r\nTime: {at} (Unix time)\r\n\r\n{way_out}",
                notice.ip.as_deref().unwrap_or("unknown"),
                notice.user_agent.as_deref().unwrap_or("unknown"),
            );
            mailer.send(&to, "New sign-in to your account", body);
        }
    });
}

/// `GET /end-session/{secret}`: what the link does; it stays unused (mail scanners open links).
pub(crate) async fn show_end_session(
    links: OneTimeLinks,
    secret: web::Path<String>,
) -> actix_web::Result<HttpResponse> {
    let info = links.peek(LinkPurpose::EndSession, &secret).await?;
    Ok(offer(&info, "POST this URL to end the session it names"))
}

/// `POST /end-session/{secret}`: `204`, and that session has ended (if it had not already);
/// the account's other sessions stay. No login needed: the link is the proof. Once only.
pub(crate) async fn end_session(
    links: OneTimeLinks,
    secret: web::Path<String>,
) -> actix_web::Result<HttpResponse> {
    links.end_session(&secret).await?;
    Ok(HttpResponse::NoContent().finish())
}
