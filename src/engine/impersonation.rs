//! Audited impersonation: an admin acts as another user through a session of that user's
//! that records who impersonates, and returns to their own session at the end.
//!
//! Starting leaves the admin's own session in the store, untouched; its key goes into the
//! impersonation's record. Ending deletes the impersonation's session and moves the admin's
//! own session to a new token (the browser's old one was replaced by the impersonation's
//! cookie), so the admin carries on where they left off. Both users' activity logs and the
//! subscribers hear of both steps.

use std::time::SystemTime;

use super::events::{EventKind, SecurityEvent};
use super::lifecycle::random_id;
use super::{ActiveSession, Grant, Issued, Reauth, SessionEngine, SessionRecord, SessionToken};
use crate::error::{Error, StoreError};
use crate::record::{Lifetime, SessionData};

/// How many fresh tokens a start tries before giving up, as a login does.
const CREATE_ATTEMPTS: usize = 3;

impl SessionEngine {
    /// Starts a session of `grant`'s user through which `admin` acts as them.
    ///
    /// # Errors
    /// [`Error::Impersonating`] from a session that impersonates already;
    /// [`Error::ReauthRequired`] (or [`Error::SecondFactorReauthRequired`]) unless `admin` is a
    /// login that proved every factor of its account within the fresh window; [`Error::InvalidInput`] for no user, or the admin themself.
    pub(crate) async fn impersonate(
        &self,
        admin: &ActiveSession,
        grant: Grant,
    ) -> Result<Issued, Error> {
        if admin.record.impersonated_by().is_some() {
            return Err(Error::Impersonating);
        }
        let now = SystemTime::now();
        if !admin.record.is_login() {
            return Err(Error::Unauthenticated);
        }
        // Every factor the admin's account has, proven lately.
        self.rules.check_fresh(&admin.record, now)?;
        if grant.user_id.is_empty() || grant.user_id == admin.record.user_id() {
            return Err(Error::InvalidInput);
        }
        // Never past the admin's own session.
        let end = self
            .rules
            .absolute_end_of(Lifetime::Standard, now)
            .min(admin.record.expires_at());
        let record = SessionRecord::new(random_id()?, grant.user_id, grant.user, now, end)
            .with_roles(grant.roles)
            .with_client(grant.ip, grant.user_agent)
            .impersonated(admin.record.user_id(), &admin.key);
        let expires_at = self
            .rules
            .idle_deadline_of(Lifetime::Standard, now, record.expires_at());
        for _ in 0..CREATE_ATTEMPTS {
            let token = SessionToken::generate().map_err(Error::Random)?;
            let key = token.key();
            if !self
                .store
                .create(&key, &record, expires_at, &SessionData::new())
                .await?
            {
                continue;
            }
            tracing::info!(
                session = key.short(),
                user_id = record.user_id(),
                by = admin.record.user_id(),
                "impersonation started"
            );
            self.note_impersonation(&record, true).await;
            let session = ActiveSession {
                key,
                record,
                expires_at,
                refreshed: false,
            };
            return Ok(Issued { token, session });
        }
        Err(StoreError::unavailable("store refused every fresh session key").into())
    }

    /// Ends the impersonation `active` is, and returns the admin's own session under a new
    /// token, or `None` if it ended meanwhile.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if nobody impersonates in `active`.
    pub(crate) async fn stop_impersonating(
        &self,
        active: &ActiveSession,
    ) -> Result<Option<Issued>, Error> {
        let Some(by) = active.record.impersonated_by() else {
            return Err(Error::InvalidInput);
        };
        self.store.delete(&active.key).await?;
        tracing::info!(
            session = active.key.short(),
            user_id = active.record.user_id(),
            by,
            "impersonation ended"
        );
        self.note_impersonation(&active.record, false).await;
        let Some(back) = active.record.impersonation_return() else {
            return Ok(None);
        };
        let Some(stored) = self.store.load(&back).await? else {
            return Ok(None);
        };
        let now = SystemTime::now();
        let live = stored.expires_at > now
            && stored.record.expires_at() > now
            && stored.record.user_id() == by;
        if !live {
            return Ok(None);
        }
        let admin = ActiveSession {
            key: back,
            record: stored.record,
            expires_at: stored.expires_at,
            refreshed: false,
        };
        match self.rotate(&admin, Reauth::None).await {
            Ok(issued) => Ok(Some(issued)),
            Err(Error::Unauthenticated) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Tells the subscribers, and writes both users' activity logs.
    async fn note_impersonation(&self, record: &SessionRecord, started: bool) {
        let session_id = record.id().to_owned();
        let by = record.impersonated_by().unwrap_or_default().to_owned();
        let kind = if started {
            EventKind::ImpersonationStarted { session_id, by }
        } else {
            EventKind::ImpersonationEnded { session_id, by }
        };
        let event = SecurityEvent::new(Some(record.user_id()), kind)
            .client(record.ip(), record.user_agent());
        let mut admins = event.clone();
        admins.user_id = record.impersonated_by().map(str::to_owned);
        let (_, ()) =
            futures_util::future::join(self.log_activity(&admins), self.log_activity(&event)).await;
        self.emit(event);
    }
}
