//! Credential changes that no racing login outlives.
//!
//! A login verifies a password, then creates its session; a password change stores the new
//! hash, then revokes the user's sessions. A login that verified the old password just before
//! the change, and creates its session just after the revocation, would survive it. So a
//! change first records the new credentials version, then revokes; and a login that names the
//! version it verified creates its session, then reads the recorded version, and ends its own
//! session if they differ. Whichever order the two interleave in, either the revocation's
//! listing finds the new session, or the login reads the new version.

use super::events::{EventKind, SecurityEvent};
use super::{CredentialsVersion, SessionEngine, SessionKey};
use crate::error::Error;

impl SessionEngine {
    /// Records `version` as the current credentials of `user_id`, then revokes every session of
    /// the user except the one whose public id is `kept`. Returns how many were revoked.
    pub(crate) async fn credentials_changed(
        &self,
        user_id: &str,
        version: &CredentialsVersion,
        kept: Option<&str>,
    ) -> Result<usize, Error> {
        // Kept as long as a session can live: far longer than any login takes, and a version
        // that has expired can only be compared with logins that began after it was written.
        // And as long as a one-time link lives: a link bound to an older version must see
        // this one for as long as it could be used.
        let keep_for = self
            .rules
            .absolute_timeout()
            .max(self.rules.links().longest_lifetime());
        self.store
            .set_credentials_version(user_id, version.as_str(), keep_for)
            .await?;
        let revoked = self
            .revoke_where(user_id, |_, record| Some(record.id()) != kept)
            .await?
            .len();
        tracing::info!(user_id, revoked, "credentials changed; sessions revoked");
        let event = EventKind::CredentialsChanged {
            sessions_revoked: revoked,
        };
        self.note(SecurityEvent::new(Some(user_id), event)).await;
        Ok(revoked)
    }

    /// Ends the session just created under `key` if the credentials its login verified are no
    /// longer the user's. Called after the session is indexed, so a concurrent change that
    /// this check does not see has a revocation that will.
    pub(crate) async fn hold_credentials(
        &self,
        key: &SessionKey,
        user_id: &str,
        verified: &CredentialsVersion,
    ) -> Result<(), Error> {
        let checked = self.store.credentials_version(user_id).await;
        let stale = match checked {
            Ok(current) => current.is_some_and(|current| current != verified.as_str()),
            Err(err) => {
                // Unknown is not good enough: the session must not outlive the answer.
                let _ = self.store.delete(key).await;
                return Err(err.into());
            }
        };
        if stale {
            self.store.delete(key).await?;
            tracing::warn!(
                user_id,
                "login refused: the credentials it verified were changed meanwhile"
            );
            return Err(Error::Unauthenticated);
        }
        Ok(())
    }
}
