//! A session's life: resolving a token, login, logout and rotation.

use std::time::SystemTime;

use super::events::SecurityEvent;
use super::{
    ActiveSession, DataNeed, Grant, Issued, Reauth, SessionEngine, SessionKey, SessionRecord,
    SessionToken,
};
use crate::error::{Error, StoreError};
use crate::record::SessionData;
use crate::record::{Factors, Lifetime};
use crate::store::{Carry, LoadedSession, StoredSession};

/// How many fresh tokens a login or rotation tries before giving up. A collision of 256-bit
/// random tokens does not happen; repeated refusals mean a broken store.
const CREATE_ATTEMPTS: usize = 3;

/// How a login went. The session the client came with may have ended even when the login
/// failed afterwards, and the client must then be told to drop its cookie.
#[derive(Debug)]
pub(crate) struct LoginOutcome {
    pub(crate) previous_ended: bool,
    pub(crate) result: Result<Issued, Error>,
}

impl SessionEngine {
    /// [`resolve_with`](Self::resolve_with) for the record alone.
    #[cfg(test)]
    pub(crate) async fn resolve(
        &self,
        token: &SessionToken,
    ) -> Result<Option<ActiveSession>, StoreError> {
        let found = self.resolve_with(token.key(), DataNeed::RecordOnly).await?;
        Ok(found.map(|(session, _)| session))
    }

    /// The live session under `key` as the store holds it in memory, with its data when
    /// small, when that settles it without I/O: the store can vouch for its copy (see
    /// `DynStore::cached`), and the session is live, no token's child and not due for a refresh
    /// of its idle deadline. `None` says nothing about the session: [`resolve_with`](Self::resolve_with)
    /// decides then, the same way.
    pub(crate) fn resolve_cached(
        &self,
        key: &SessionKey,
    ) -> Option<(ActiveSession, Option<SessionData>)> {
        let LoadedSession { stored, data } = self.store.cached(key)?;
        let now = SystemTime::now();
        if !stored.is_live(now) || stored.record.parent().is_some() {
            return None;
        }
        if self.refresh_due(&stored, now).is_some() {
            return None;
        }
        let session = ActiveSession {
            key: key.clone(),
            record: stored.record,
            expires_at: stored.expires_at,
            refreshed: false,
        };
        Some((session, data))
    }

    /// The live session under `key`, refreshing its idle deadline when that is worth a write.
    ///
    /// `Ok(None)` for an unknown, ended, expired or unreadable session; `Err` only when the store
    /// failed, which must never be taken for "not logged in".
    ///
    /// With [`DataNeed::WithRecord`], the session's data comes along when the store read it in
    /// the same step (see [`SessionStore::load_with_data`]); `None` means it was not read.
    pub(crate) async fn resolve_with(
        &self,
        key: SessionKey,
        need: DataNeed,
    ) -> Result<Option<(ActiveSession, Option<SessionData>)>, StoreError> {
        let loaded = match need {
            DataNeed::RecordOnly => self
                .store
                .load(&key)
                .await
                .map(|stored| stored.map(|stored| LoadedSession { stored, data: None })),
            DataNeed::WithRecord => self.store.load_with_data(&key).await,
        };
        let Some(LoadedSession { stored, data }) = absent_if_corrupt(loaded)? else {
            tracing::debug!(session = key.short(), "unknown, expired or ended session");
            return Ok(None);
        };
        let now = SystemTime::now();
        if !stored.is_live(now) {
            tracing::debug!(session = key.short(), "session past its deadline");
            return Ok(None);
        }
        if let Some(parent) = stored.record.parent() {
            // A token a login token created ends with it, however that ended (logout,
            // revocation, idle or absolute expiry, a password change): one more load, for
            // such tokens only.
            if !self
                .parent_alive(parent.as_ref(), &stored.record, now)
                .await?
            {
                tracing::debug!(
                    session = key.short(),
                    "the login that made this token ended"
                );
                return Ok(None);
            }
        }
        let mut expires_at = stored.expires_at;
        let refresh = self.refresh_due(&stored, now);
        if let Some(proposed) = refresh {
            let extended = self.store.extend(&key, proposed).await;
            if !absent_if_corrupt(extended)? {
                // Logged out or revoked between the load and the refresh.
                return Ok(None);
            }
            expires_at = proposed;
        }
        let session = ActiveSession {
            key,
            record: stored.record,
            expires_at,
            refreshed: refresh.is_some(),
        };
        Ok(Some((session, data)))
    }

    /// The idle deadline to move `stored` to, when moving it now is worth a write.
    fn refresh_due(&self, stored: &StoredSession, now: SystemTime) -> Option<SystemTime> {
        let lifetime = stored.record.lifetime();
        let proposed = self
            .rules
            .idle_deadline_of(lifetime, now, stored.record.expires_at());
        self.rules
            .worth_refreshing_of(lifetime, stored.expires_at, proposed)
            .then_some(proposed)
    }

    /// Whether the login token under `parent` is live and belongs to the user of `child`.
    /// Only read: using a child does not keep its parent from idling out.
    pub(crate) async fn parent_alive(
        &self,
        parent: Option<&SessionKey>,
        child: &SessionRecord,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        let Some(parent) = parent else {
            return Ok(false);
        };
        let Some(stored) = absent_if_corrupt(self.store.load(parent).await)? else {
            return Ok(false);
        };
        Ok(stored.is_live(now) && stored.record.user_id() == child.user_id())
    }

    /// Starts a new session for `grant`, ending `previous`, the session the client came with,
    /// valid or not: a token planted before login (session fixation) must never become a
    /// logged-in one, and no record is orphaned. Then ends the user's oldest sessions beyond the
    /// per-user cap.
    ///
    /// With `keep_data`, when `live` is that previous session and it is anonymous or the same
    /// user's, the new session takes its data (a visitor's cart survives the login): the old
    /// session moves to a new token rather than ending, atomically with its data. Otherwise the
    /// new session starts empty.
    pub(crate) async fn login(
        &self,
        previous: Option<&SessionKey>,
        live: Option<&ActiveSession>,
        grant: Grant,
        keep_data: bool,
    ) -> LoginOutcome {
        let carried = live.filter(|active| {
            keep_data
                && previous == Some(&active.key)
                && (active.record.is_anonymous() || active.record.user_id() == grant.user_id)
        });
        if let Some(active) = carried {
            match self.start(grant, Some(active)).await {
                Ok(Started::Done(issued)) => {
                    return LoginOutcome {
                        previous_ended: true,
                        result: Ok(issued),
                    }
                }
                Ok(Started::PreviousGone(grant)) => {
                    // Ended meanwhile (a logout elsewhere), its data with it, or left marked by
                    // a rotation cut off half-way: either way it must not outlive this login.
                    if let Err(err) = self.store.delete(&active.key).await {
                        return LoginOutcome {
                            previous_ended: false,
                            result: Err(err.into()),
                        };
                    }
                    return LoginOutcome {
                        previous_ended: true,
                        result: self.start_fresh(grant).await,
                    };
                }
                Err(err) => {
                    return LoginOutcome {
                        // Superseded after the move: the previous token is gone all the same.
                        previous_ended: matches!(err, Error::LoginSuperseded),
                        result: Err(err),
                    };
                }
            }
        }
        if let Some(previous) = previous {
            if let Err(err) = self.store.delete(previous).await {
                return LoginOutcome {
                    previous_ended: false,
                    result: Err(err.into()),
                };
            }
        }
        LoginOutcome {
            previous_ended: previous.is_some(),
            result: self.start_fresh(grant).await,
        }
    }

    async fn start_fresh(&self, grant: Grant) -> Result<Issued, Error> {
        match self.start(grant, None).await? {
            Started::Done(issued) => Ok(issued),
            Started::PreviousGone(_) => Err(StoreError::unavailable("nothing to move").into()),
        }
    }

    /// Creates the session for `grant`, or moves `from` to it with its data.
    async fn start(&self, grant: Grant, from: Option<&ActiveSession>) -> Result<Started, Error> {
        if grant.user_id.is_empty() {
            // An empty id is how a record says it has no user.
            return Err(Error::InvalidInput);
        }
        if grant.bearer && grant.factors == Factors::Pending {
            // A second factor is completed with a cookie; a token client gets no half-login.
            return Err(Error::InvalidInput);
        }
        let now = SystemTime::now();
        let lifetime = if grant.factors == Factors::Pending {
            Lifetime::Pending
        } else if grant.remember {
            Lifetime::Remembered
        } else {
            Lifetime::Standard
        };
        let absolute_end = self.rules.absolute_end_of(lifetime, now);
        let mut record = SessionRecord::new(
            random_id()?,
            grant.user_id.clone(),
            grant.user.clone(),
            now,
            absolute_end,
        )
        .with_roles(grant.roles.clone())
        .with_client(grant.ip.clone(), grant.user_agent.clone())
        .with_factors(grant.factors)
        .with_method(grant.method)
        .with_new_device(grant.new_device && grant.factors == Factors::Pending);
        if grant.bearer {
            record = record.login_token(grant.remember);
        } else if grant.remember {
            record = record.remembered();
        }
        // From the record's end, which is kept to the millisecond, so the idle deadline never
        // passes it by a fraction.
        let expires_at = self
            .rules
            .idle_deadline_of(lifetime, now, record.expires_at());
        for _ in 0..CREATE_ATTEMPTS {
            let (token, created) = match from {
                Some(from) => {
                    let token = SessionToken::generate_beside(&from.key).map_err(Error::Random)?;
                    let moved = self
                        .store
                        .rotate(&from.key, &token.key(), &record, expires_at, Carry::Data)
                        .await?;
                    if !moved {
                        return Ok(Started::PreviousGone(grant));
                    }
                    (token, true)
                }
                None => {
                    let token = SessionToken::generate().map_err(Error::Random)?;
                    let created = self
                        .store
                        .create(&token.key(), &record, expires_at, &SessionData::new())
                        .await?;
                    (token, created)
                }
            };
            if !created {
                continue;
            }
            let key = token.key();
            if let Some(verified) = &grant.credentials {
                self.hold_credentials(&key, record.user_id(), verified)
                    .await?;
            }
            let pending = record.is_second_factor_pending();
            tracing::info!(
                session = key.short(),
                user_id = record.user_id(),
                kept_data = from.is_some(),
                remembered = record.is_remembered(),
                bearer = record.is_bearer(),
                second_factor_due = pending,
                "login"
            );
            // A login waiting for its second factor is none yet: it ends no other session, and
            // is no login event (completing the second factor is). The activity log's write goes
            // out beside the cap's listing: no round trip of its own.
            let event = SecurityEvent::login(&grant, &record);
            let kept = if pending {
                true
            } else {
                let trim = self.trim_to_cap(record.user_id(), &key);
                let (kept, ()) = futures_util::future::join(trim, self.log_activity(&event)).await;
                kept?
            };
            if !kept {
                tracing::warn!(
                    session = key.short(),
                    user_id = record.user_id(),
                    "login refused: its session ended before the login finished"
                );
                return Err(Error::LoginSuperseded);
            }
            if !pending {
                self.emit(event);
            }
            let session = ActiveSession {
                key,
                record,
                expires_at,
                refreshed: false,
            };
            return Ok(Started::Done(Issued { token, session }));
        }
        Err(StoreError::unavailable("store refused every fresh session key").into())
    }

    /// Ends the session under `key`. `known` is its record if the caller has it; otherwise it is
    /// looked up first. If a concurrent request rotated the session away meanwhile, the record's
    /// public id is how the logout follows it to its new key.
    pub(crate) async fn logout(
        &self,
        key: &SessionKey,
        known: Option<&SessionRecord>,
    ) -> Result<(), Error> {
        // A plain load, not `resolve`: refreshing a session about to end would be wasted work.
        let owner = match known {
            Some(record) => Some(record.clone()),
            None => self.store.load(key).await?.map(|stored| stored.record),
        };
        let deleted = self.store.delete(key).await?;
        tracing::info!(session = key.short(), "logout");
        if let Some(record) = owner.as_ref().filter(|record| !record.is_anonymous()) {
            self.note(SecurityEvent::logout(record)).await;
        }
        if let (false, Some(record)) = (deleted, owner) {
            // Its logout is noted above; this only follows it to the new key.
            self.revoke_where(record.user_id(), |_, moved| moved.id() == record.id())
                .await?;
        }
        Ok(())
    }

    /// Moves `active`, with its data, to a new token and kills the old one, noting what
    /// `reauth` says the user just proved.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] if the session ended meanwhile (logged out, revoked, expired)
    /// or a concurrent request moved it first.
    pub(crate) async fn rotate(
        &self,
        active: &ActiveSession,
        reauth: Reauth,
    ) -> Result<Issued, Error> {
        let now = SystemTime::now();
        let mut record = active.record.clone();
        match reauth {
            Reauth::None => {}
            Reauth::Password => {
                // The password alone: on an account with a second factor, not enough for a
                // fresh check that wants both.
                let factors = match record.factors() {
                    Factors::Both | Factors::PasswordOnly => Factors::PasswordOnly,
                    other => other,
                };
                record = record.reauthenticated(now).with_factors(factors);
            }
            Reauth::SecondFactor => {
                record = record.with_factors(Factors::Both);
            }
            Reauth::Passkey => {
                // Both factors on an account that has a second factor; nothing to add on one
                // without.
                let factors = match record.factors() {
                    Factors::Both | Factors::PasswordOnly => Factors::Both,
                    other => other,
                };
                record = record.reauthenticated(now).with_factors(factors);
            }
        }
        let issued = self.move_to_new_token(active, record, now).await?;
        tracing::info!(
            from = active.key.short(),
            to = issued.session.key.short(),
            reauthenticated = reauth != Reauth::None,
            "session rotated"
        );
        Ok(issued)
    }

    /// Moves `active` to a new token with `record` in place of its own, its data and any live
    /// update of the user carried along atomically: the old token is dead once this returns.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] if the session ended meanwhile or a concurrent request moved
    /// it first.
    async fn move_to_new_token(
        &self,
        active: &ActiveSession,
        record: SessionRecord,
        now: SystemTime,
    ) -> Result<Issued, Error> {
        let expires_at = self
            .rules
            .idle_deadline_of(record.lifetime(), now, record.expires_at());
        let token = SessionToken::generate_beside(&active.key).map_err(Error::Random)?;
        let key = token.key();
        let moved = self
            .store
            .rotate(&active.key, &key, &record, expires_at, Carry::DataAndUser)
            .await?;
        if !moved {
            return Err(Error::Unauthenticated);
        }
        let session = ActiveSession {
            key,
            record,
            expires_at,
            refreshed: false,
        };
        Ok(Issued { token, session })
    }
}

impl SessionEngine {
    /// The second factor of `active` was just verified. A login waiting for it becomes a
    /// login, on a new token, as a password login would: the normal (or remembered) lifetime
    /// from now, the per-user cap. A login that already was one is reauthenticated with both
    /// factors, also on a new token.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] if the session ended meanwhile (expired, logged out, revoked
    /// by a password change) or a concurrent request completed it first;
    /// [`Error::LoginSuperseded`] if racing logins pushed the new session past the cap.
    pub(crate) async fn complete_second_factor(
        &self,
        active: &ActiveSession,
    ) -> Result<Issued, Error> {
        if !active.record.is_second_factor_pending() {
            return self.rotate(active, Reauth::SecondFactor).await;
        }
        let now = SystemTime::now();
        let lifetime = if active.record.is_remembered() {
            Lifetime::Remembered
        } else {
            Lifetime::Standard
        };
        let record = active
            .record
            .clone()
            .logged_in_at(now, self.rules.absolute_end_of(lifetime, now))
            .with_factors(Factors::Both)
            .with_new_device(false);
        // The half-login's data comes along; its token is dead once this returns.
        let issued = self.move_to_new_token(active, record, now).await?;
        let (key, record) = (&issued.session.key, &issued.session.record);
        tracing::info!(
            from = active.key.short(),
            session = key.short(),
            user_id = record.user_id(),
            "login: second factor verified"
        );
        // Now it is a login: its event and activity entry, the entry beside the cap's listing,
        // with the method and the new-device flag the half-login kept.
        let event = SecurityEvent::second_factor_login(record, active.record.is_new_device());
        let trim = self.trim_to_cap(record.user_id(), key);
        let (kept, ()) = futures_util::future::join(trim, self.log_activity(&event)).await;
        if !kept? {
            tracing::warn!(
                session = key.short(),
                user_id = record.user_id(),
                "login refused: its session ended before the login finished"
            );
            return Err(Error::LoginSuperseded);
        }
        self.emit(event);
        Ok(issued)
    }
}

/// What [`SessionEngine::start`] did.
enum Started {
    /// The session exists under the new token.
    Done(Issued),
    /// The session to move from was gone; the grant is handed back for a fresh start.
    PreviousGone(Grant),
}

/// An unreadable record can never authenticate anyone: it counts as no session. Every other
/// store error stands.
fn absent_if_corrupt<T: Default>(result: Result<T, StoreError>) -> Result<T, StoreError> {
    match result {
        Err(StoreError::Corrupt(err)) => {
            tracing::error!(error = %err, "unreadable session record; treating it as absent");
            Ok(T::default())
        }
        other => other,
    }
}

/// A public session id: 12 random bytes, base64url (16 characters).
pub(super) fn random_id() -> Result<String, Error> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    // 96 bits: ample for a handle that is not a secret (only its owner can revoke through it),
    // and short, since every record carries it.
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).map_err(Error::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}
