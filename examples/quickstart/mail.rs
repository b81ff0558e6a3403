//! Mail, through lettre: one file per message in `MAIL_DIR`, or SMTP to `SMTP_URL`
//! (`smtp://host:port`, or `smtps://user:password@host` through TLS), or none. The
//! `html_login` example uses this module too.
//!
//! Messages go out off the request's path (a spawned task), so that the answer to "mail me a
//! link" takes as long for an account that exists as for one that does not. Without a
//! transport, a message is dropped with a log line that names its subject and recipient, never
//! its link: a link is as good as a password until it is used.

use std::path::PathBuf;

use lettre::address::AddressError;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::{AsyncFileTransport, AsyncTransport, Message, Tokio1Executor};

#[derive(Clone)]
pub(crate) enum Mailer {
    Files(AsyncFileTransport<Tokio1Executor>),
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Off,
}

impl Mailer {
    /// The transport the environment names: `MAIL_DIR` first, then `SMTP_URL`.
    pub(crate) fn from_env() -> std::io::Result<Self> {
        let setting = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        if let Some(dir) = setting("MAIL_DIR") {
            let dir = PathBuf::from(dir);
            std::fs::create_dir_all(&dir)?;
            println!("mail: one file per message in {}", dir.display());
            return Ok(Self::Files(AsyncFileTransport::new(dir)));
        }
        if let Some(url) = setting("SMTP_URL") {
            let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&url)
                .map_err(|err| std::io::Error::other(format!("SMTP_URL: {err}")))?
                .build();
            // The URL may hold a password: name the transport only.
            println!("mail: through SMTP (from SMTP_URL)");
            return Ok(Self::Smtp(transport));
        }
        println!("mail: off (set MAIL_DIR or SMTP_URL to send links)");
        Ok(Self::Off)
    }

    /// Sends a plain-text message to `to` in the background: even building it happens off
    /// the request's path, so a request that mails costs what one that does not costs.
    pub(crate) fn send(&self, to: &str, subject: &str, body: String) {
        let (to, subject) = (to.to_owned(), subject.to_owned());
        let mailer = self.clone();
        actix_web::rt::spawn(async move {
            let transport = match &mailer {
                Mailer::Off => {
                    tracing::info!(to, subject, "mail is off: message dropped");
                    return;
                }
                transport => transport,
            };
            let from = std::env::var("MAIL_FROM")
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "actix-login example <no-reply@example.test>".to_owned());
            let message = match build(&from, &to, &subject, body) {
                Ok(message) => message,
                Err(err) => {
                    tracing::warn!(to, subject, error = %err, "mail not built");
                    return;
                }
            };
            let sent = match transport {
                Mailer::Files(files) => files
                    .send(message)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string()),
                Mailer::Smtp(smtp) => smtp
                    .send(message)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string()),
                Mailer::Off => return,
            };
            match sent {
                Ok(()) => tracing::info!(to, subject, "mail sent"),
                Err(err) => tracing::warn!(to, subject, error = %err, "mail not sent"),
            }
        });
    }
}

fn build(from: &str, to: &str, subject: &str, body: String) -> Result<Message, String> {
    let from: Mailbox = from.parse().map_err(|err: AddressError| err.to_string())?;
    let to: Mailbox = to.parse().map_err(|err: AddressError| err.to_string())?;
    // lettre picks the transfer encoding: quoted-printable for the lines longer than 76
    // characters that links make, which every mail client decodes back to the plain link.
    Message::builder()
        .from(from)
        .to(to)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .body(body)
        .map_err(|err| err.to_string())
}
