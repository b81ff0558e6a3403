//! Flash messages: set in one request, shown once on the next.

use serde::{Deserialize, Serialize};

use super::session::Session;
use crate::error::Error;
use crate::record::DataChange;

/// The session-data name flash messages wait under.
const FLASH_KEY: &str = "_flash";

/// How much a flash message matters, for styling it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FlashLevel {
    /// Something happened as asked ("Signed out").
    Info,
    /// Something went well ("Password changed").
    Success,
    /// Something needs attention.
    Warning,
    /// Something failed.
    Error,
}

/// A message for the next page the visitor sees.
///
/// Serialises as `{"level":"info","text":"Signed out"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlashMessage {
    /// How much it matters.
    pub level: FlashLevel,
    /// What to show.
    pub text: String,
}

impl Session {
    /// Queues `text` to be shown once, on the next page that [takes](Self::take_flashes) the
    /// messages: after a redirect, typically. Kept in the session's data, so a visitor
    /// without a session gets an anonymous one; set it after [`logout`](Self::logout) to greet
    /// the signed-out visitor on the login page.
    ///
    /// # Errors
    /// As for [`insert`](Self::insert).
    pub async fn flash(&self, level: FlashLevel, text: impl Into<String>) -> Result<(), Error> {
        let mut queued: Vec<FlashMessage> = self.get(FLASH_KEY).await?.unwrap_or_default();
        queued.push(FlashMessage {
            level,
            text: text.into(),
        });
        self.insert(FLASH_KEY, queued).await
    }

    /// The messages queued by earlier requests, oldest first, removed as they are read: each
    /// is shown once. One round trip when there is a session, none without.
    ///
    /// # Errors
    /// As for [`remove`](Self::remove).
    pub async fn take_flashes(&self) -> Result<Vec<FlashMessage>, Error> {
        let removed = self
            .apply(&[DataChange::Remove {
                name: FLASH_KEY.to_owned(),
            }])
            .await?;
        let Some(json) = removed.into_iter().next().flatten() else {
            return Ok(Vec::new());
        };
        // Messages this version cannot read (written by another) are dropped, not an error:
        // they were meant to be seen once, and a page must not fail over them.
        Ok(serde_json::from_str(&json).unwrap_or_else(|err| {
            tracing::warn!(error = %err, "dropping unreadable flash messages");
            Vec::new()
        }))
    }
}
