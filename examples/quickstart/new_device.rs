//! "New sign-in to your account": a mail for every login from a browser that had no device
//! cookie for the account, with a password reset link: resetting the password ends every
//! session of the account, the new one included, and keeps whoever knew the old one out
//! ("this wasn't me").
//!
//! The notice starts as a security event, on the crate's events thread; a task on the main
//! runtime takes it from there, issues the link and hands the mail to the mailer, so no login
//! waits for any of it.

use std::time::{SystemTime, UNIX_EPOCH};

use actix_login::events::{EventKind, SecurityEvent};
use actix_login::links::{LinkPurpose, OneTimeLinks, Recipient};
use actix_web::web;
use tokio::sync::mpsc;

use crate::links::LinkBase;
use crate::mail::Mailer;
use crate::users::{address, Users};

/// A login from a new browser, as the notice tells it.
pub(crate) struct NewSignIn {
    user_id: String,
    ip: Option<String>,
    user_agent: Option<String>,
    at: SystemTime,
}

/// With `NEW_DEVICE_MAIL=1`: the event handler that picks new-device logins out, and where it
/// puts them. Opt-in, since each notice issues a reset link, which counts toward the
/// account's link limits.
pub(crate) fn notices() -> (
    impl Fn(&SecurityEvent) + Send + 'static,
    mpsc::Receiver<NewSignIn>,
) {
    let on = std::env::var("NEW_DEVICE_MAIL").as_deref() == Ok("1");
    let (queue, notices) = mpsc::channel(256);
    let handler = move |event: &SecurityEvent| {
        if !on {
            return;
        }
        let (
            EventKind::LoginSucceeded {
                new_device: true, ..
            },
            Some(user_id),
        ) = (&event.kind, &event.user_id)
        else {
            return;
        };
        let notice = NewSignIn {
            user_id: user_id.clone(),
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
            let to = address(&username);
            let recipient = Recipient::new(&notice.user_id, &to);
            let way_out = match links
                .issue(LinkPurpose::PasswordReset, &username, Some(recipient))
                .await
            {
                Ok(Some(link)) => format!(
                    "If this wasn't you, choose a new password now: that ends every session \
                     of your account, this one included. Open\r\n\r\n{}/password-reset/{}\r\n",
                    base.0,
                    link.secret()
                ),
                // Past the link limits: the mail still goes, without its own link.
                _ => "If this wasn't you, ask for a password reset on the sign-in page: a new \
                      password ends every session of your account, this one included.\r\n"
                    .to_owned(),
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
