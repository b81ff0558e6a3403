//! The mail an example sends with `MAIL_DIR`: one file per message, read back here.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A fresh mail folder, removed when dropped; hand [`Mailbox::env`] to the example.
pub struct Mailbox {
    pub dir: PathBuf,
    dir_text: String,
    /// Files already read.
    seen: std::sync::Mutex<HashSet<PathBuf>>,
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One message as the file transport wrote it.
pub struct Mail {
    pub to: String,
    pub subject: String,
    /// The whole message, headers and body, with a quoted-printable body decoded.
    pub raw: String,
}

/// Undoes quoted-printable: soft line breaks (`=` at a line's end) and `=XX` escapes.
fn decode_quoted_printable(text: &str) -> String {
    let joined = text.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'=')
            .then(|| joined.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

impl Mail {
    /// The one link in the body whose path starts with `/{path}/`, as `(url, secret)`.
    pub fn link(&self, base: &str, path: &str) -> (String, String) {
        let prefix = format!("{base}/{path}/");
        let line = self
            .raw
            .lines()
            .map(str::trim)
            .find(|line| line.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no {prefix} link in:\n{}", self.raw));
        let secret = line[prefix.len()..].to_owned();
        assert_eq!(secret.len(), 43, "{line}");
        (line.to_owned(), secret)
    }
}

impl Mailbox {
    pub fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "actix-login-mail-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let dir_text = dir.to_str().unwrap().to_owned();
        Self {
            dir,
            dir_text,
            seen: Default::default(),
        }
    }

    /// `("MAIL_DIR", <dir>)`.
    pub fn env(&self) -> (&str, &str) {
        ("MAIL_DIR", &self.dir_text)
    }

    /// Messages not read before, in no particular order.
    pub fn new_mail(&self) -> Vec<Mail> {
        let mut seen = self.seen.lock().unwrap();
        let mut mail = Vec::new();
        for entry in std::fs::read_dir(&self.dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("eml") || seen.contains(&path) {
                continue;
            }
            let Ok(raw) = std::fs::read_to_string(&path) else {
                continue;
            };
            // The transport may still be writing it.
            if !raw.contains("\r\n\r\n") || !raw.ends_with('\n') {
                continue;
            }
            seen.insert(path);
            let header = |name: &str| {
                raw.lines()
                    .take_while(|line| !line.is_empty())
                    .find_map(|line| line.strip_prefix(name))
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            };
            let quoted = header("Content-Transfer-Encoding:") == "quoted-printable";
            mail.push(Mail {
                to: header("To:"),
                subject: header("Subject:"),
                raw: if quoted {
                    decode_quoted_printable(&raw)
                } else {
                    raw.clone()
                },
            });
        }
        mail
    }

    /// Waits (up to 10 s) for the next message to `to`, failing the test on mail to anyone
    /// else.
    pub async fn next_to(&self, to: &str) -> Mail {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut mail = self.new_mail();
            if let Some(other) = mail.iter().find(|m| m.to != to) {
                panic!("mail to {} while waiting for {to}", other.to);
            }
            if let Some(found) = mail.pop() {
                assert!(mail.is_empty(), "more than one message to {to}");
                return found;
            }
            assert!(Instant::now() < deadline, "no mail to {to}");
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Asserts that no new message arrives within `wait`.
    pub async fn assert_empty_for(&self, wait: Duration) {
        actix_web::rt::time::sleep(wait).await;
        let mail = self.new_mail();
        assert!(
            mail.is_empty(),
            "unexpected mail to {:?}",
            mail.iter().map(|m| &m.to).collect::<Vec<_>>()
        );
    }
}
