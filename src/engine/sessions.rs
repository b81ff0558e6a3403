//! Every session of a user: listing and revocation.

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use serde::{Serialize, Serializer};

use super::events::{ActivityEntry, EventKind, LoginMethod, RevokedBy, SecurityEvent};
use super::{SessionEngine, SessionKey, SessionRecord};
use crate::error::{Error, StoreError};
use crate::store::StoredSession;

/// How many list-and-delete rounds a revocation makes at most. The last round normally only
/// confirms that nothing is left; each extra one needs a concurrent rotation or login.
const REVOKE_ROUNDS: usize = 8;

/// The sessions of any user: list them, revoke one, or revoke them all.
///
/// Revocation is immediate on every app instance sharing the store: when a call returns, no
/// revoked token authenticates again, even one being rotated at that very moment (see
/// [`SessionStore`](crate::store::SessionStore) for how). A login that completes while a revocation
/// runs is a fresh authentication and is not revoked.
///
/// Take it as an extractor in a handler, or get one from [`LoginMiddleware::sessions`] to use
/// outside requests, for example when an account is disabled. The extractor itself asks for
/// no login: a handler that revokes a user id taken from the request must be guarded, for
/// example with [`Require::role`](crate::Require::role).
///
/// Revocation returns [`Error::Store`] if sessions keep reappearing through eight rounds of
/// listing and deleting (something is rotating or creating them as fast as they go).
///
/// [`LoginMiddleware::sessions`]: crate::LoginMiddleware::sessions
#[derive(Clone)]
pub struct Sessions {
    engine: SessionEngine,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

/// One session as shown to its owner. Holds nothing that could be used to take the session
/// over: `id` is a public handle, not the token or its hash.
///
/// Serialises as
/// `{"id","kind","name","remembered","created_at","last_seen","expires_at","ip","user_agent","current","impersonated_by","method"}`
/// with times in Unix seconds.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct SessionInfo {
    /// The public handle, for [`Sessions::revoke`].
    pub id: String,
    /// Whether a browser holds it in a cookie or a client presents it as a bearer token.
    pub kind: SessionKind,
    /// The name of a personal access token; `None` for other sessions.
    pub name: Option<String>,
    /// Whether the login asked to be remembered ("keep me signed in").
    pub remembered: bool,
    /// When the user logged in, or the token was created.
    #[serde(serialize_with = "unix_seconds")]
    pub created_at: SystemTime,
    /// When the session was last used, to within a tenth of the idle timeout. Personal access
    /// tokens have no idle timeout and are not tracked: for them it is the creation time.
    #[serde(serialize_with = "unix_seconds")]
    pub last_seen: SystemTime,
    /// When the session ends at the latest, however active it is.
    #[serde(serialize_with = "unix_seconds")]
    pub expires_at: SystemTime,
    /// The client's IP address at login: the TCP peer, or behind
    /// [trusted proxies](crate::LoginMiddlewareBuilder::trust_proxies) the address they report.
    pub ip: Option<String>,
    /// The client's `User-Agent` at login.
    pub user_agent: Option<String>,
    /// Whether this is the session of the request that asked.
    pub current: bool,
    /// The user id of the admin who acts as the user in this session, if it is an
    /// [impersonation](crate::Session::impersonate).
    pub impersonated_by: Option<String>,
    /// How the user signed in: `"password"`, `"passkey"`, `"link"` or `"external"`, as the
    /// login's [`Login::method`](crate::Login::method) said (a passkey sign-in sets it). A
    /// personal access token shows the method of the session that created it.
    pub method: LoginMethod,
}

/// How a client holds a session, as [`SessionInfo`] shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SessionKind {
    /// A browser, with the session cookie.
    Browser,
    /// A client sending `Authorization: Bearer`: a token from a login, or a personal access
    /// token.
    Token,
}

fn unix_seconds<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs())
}

impl Sessions {
    pub(crate) fn new(engine: SessionEngine) -> Self {
        Self { engine }
    }

    /// The live sessions of `user_id`, most recently used first.
    pub async fn list(&self, user_id: &str) -> Result<Vec<SessionInfo>, Error> {
        self.engine.list(user_id, None).await
    }

    /// Revokes the session of `user_id` whose public id is `session_id`. Returns whether there
    /// was one; a session of another user is never touched.
    pub async fn revoke(&self, user_id: &str, session_id: &str) -> Result<bool, Error> {
        self.engine
            .revoke(user_id, session_id, RevokedBy::App)
            .await
    }

    /// Revokes every session of `user_id`: "log out everywhere", or an account being disabled.
    /// Returns how many there were.
    pub async fn revoke_all(&self, user_id: &str) -> Result<usize, Error> {
        self.engine.revoke_all(user_id, RevokedBy::App).await
    }

    /// Up to `limit` (at most 100) entries of the activity log of `user_id`, newest first:
    /// logins (`new_device` for a browser the account had no device cookie in), failed
    /// logins, logouts, revocations, password changes, tokens, used one-time links. Without
    /// `before`, from the newest; with it, the page after the entry of that
    /// [`id`](ActivityEntry::id). The log keeps the last
    /// [`activity_log`](crate::LoginMiddlewareBuilder::activity_log) entries.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails, or keeps no activity log.
    pub async fn activity(
        &self,
        user_id: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ActivityEntry>, Error> {
        self.engine.activity(user_id, before, limit).await
    }

    /// Replaces the profile and roles of every live session of `user_id`: a demoted admin loses
    /// the role on their next request, on every app instance, with or without a
    /// [local cache](crate::RedisStoreBuilder::local_cache). Sessions that a login starts
    /// meanwhile carry what that login gave them; personal access tokens created meanwhile copy
    /// their owner's live profile, so the update settles while the user keeps creating them.
    /// Returns how many sessions it changed.
    ///
    /// # Errors
    /// [`Error::Profile`] if `user` cannot be serialised; [`Error::Store`] if the store fails
    /// (some sessions may then be updated and others not: call it again).
    pub async fn update_user<U: Serialize + ?Sized>(
        &self,
        user_id: &str,
        user: &U,
        roles: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<usize, Error> {
        let user = serde_json::value::to_raw_value(user).map_err(Error::Profile)?;
        let roles: Vec<String> = roles.into_iter().map(Into::into).collect();
        self.engine.update_user(user_id, &user, &roles).await
    }

    /// Records that `user_id`'s password changed to the credentials `version` (see
    /// [`Login::credentials_version`](crate::Login::credentials_version)) and revokes every
    /// session of the user, including any that a login which verified the old password
    /// completes later. Call it after storing the new password hash. Returns how many sessions
    /// were revoked.
    pub async fn credentials_changed(
        &self,
        user_id: &str,
        version: impl AsRef<[u8]>,
    ) -> Result<usize, Error> {
        let version = super::CredentialsVersion::of(version.as_ref());
        self.engine
            .credentials_changed(user_id, &version, None)
            .await
    }
}

impl SessionEngine {
    /// The live sessions of `user_id`, most recently used first; the one under `current` is
    /// marked.
    pub(crate) async fn list(
        &self,
        user_id: &str,
        current: Option<&SessionKey>,
    ) -> Result<Vec<SessionInfo>, Error> {
        let live = self.store.list(user_id).await?.live;
        let orphans = orphans(&live);
        let mut sessions: Vec<SessionInfo> = live
            .iter()
            .filter(|(key, _)| !orphans.contains(key.as_str()))
            .map(|(key, stored)| self.info(stored, current == Some(key)))
            .collect();
        sessions.sort_by_key(|s| std::cmp::Reverse(s.last_seen));
        Ok(sessions)
    }

    pub(crate) async fn revoke(
        &self,
        user_id: &str,
        session_id: &str,
        by: RevokedBy,
    ) -> Result<bool, Error> {
        let revoked = self
            .revoke_where(user_id, |_, record| record.id() == session_id)
            .await?;
        for record in &revoked {
            self.note(SecurityEvent::revoked(record, by)).await;
        }
        Ok(!revoked.is_empty())
    }

    pub(crate) async fn revoke_all(&self, user_id: &str, by: RevokedBy) -> Result<usize, Error> {
        let count = self.revoke_where(user_id, |_, _| true).await?.len();
        let event = EventKind::AllSessionsRevoked { count, by };
        self.note(SecurityEvent::new(Some(user_id), event)).await;
        Ok(count)
    }

    /// Revokes every session of `user_id` but the one whose public id is `kept`.
    pub(crate) async fn revoke_others(&self, user_id: &str, kept: &str) -> Result<usize, Error> {
        let count = self
            .revoke_where(user_id, |_, record| record.id() != kept)
            .await?
            .len();
        let event = EventKind::OtherSessionsRevoked { count };
        self.note(SecurityEvent::new(Some(user_id), event)).await;
        Ok(count)
    }

    fn info(&self, stored: &StoredSession, current: bool) -> SessionInfo {
        let record = &stored.record;
        // The store keeps the idle deadline, not the time of the last request; the deadline was
        // last moved to "then + idle timeout".
        let refreshed = self
            .rules
            .idle_timeout_of(record.lifetime())
            .and_then(|idle| stored.expires_at.checked_sub(idle))
            .unwrap_or(UNIX_EPOCH);
        SessionInfo {
            id: record.id().to_owned(),
            kind: if record.is_bearer() {
                SessionKind::Token
            } else {
                SessionKind::Browser
            },
            name: record.token_name().map(str::to_owned),
            remembered: record.is_remembered(),
            created_at: record.created_at(),
            last_seen: refreshed.max(record.created_at()),
            expires_at: record.expires_at(),
            ip: record.ip().map(str::to_owned),
            user_agent: record.user_agent().map(str::to_owned),
            current,
            impersonated_by: record.impersonated_by().map(str::to_owned),
            method: record.method(),
        }
    }

    /// Deletes every session of `user_id` that `doomed` picks, and lists again until a listing
    /// finds nothing to revoke and no entry that vanished. The repeat is what makes revocation
    /// hold against a concurrent rotation: the rotation indexes its new key before deleting the
    /// old one, so once a listing has seen the old key gone, or failed to delete it, the next
    /// listing sees the new one. Tokens whose parent login is gone (they can no longer
    /// authenticate) are deleted on the way, without being counted. Returns the records of the
    /// sessions it revoked.
    pub(crate) async fn revoke_where(
        &self,
        user_id: &str,
        doomed: impl Fn(&SessionKey, &SessionRecord) -> bool,
    ) -> Result<Vec<SessionRecord>, Error> {
        self.revoke_while(user_id, None, doomed).await
    }

    /// [`revoke_where`](Self::revoke_where), stopping at a listing without `listed`, if given:
    /// a login pushed out by a racing one must not push that one out in turn.
    async fn revoke_while(
        &self,
        user_id: &str,
        listed: Option<&SessionKey>,
        doomed: impl Fn(&SessionKey, &SessionRecord) -> bool,
    ) -> Result<Vec<SessionRecord>, Error> {
        let mut revoked = Vec::new();
        for _ in 0..REVOKE_ROUNDS {
            let listing = self.store.list(user_id).await?;
            if listed.is_some_and(|own| !listing.live.iter().any(|(key, _)| key == own)) {
                return Ok(revoked);
            }
            let orphans = orphans(&listing.live);
            let mut targets = Vec::new();
            let mut leftovers = Vec::new();
            for (key, stored) in &listing.live {
                if doomed(key, &stored.record) {
                    targets.push((key, &stored.record));
                } else if orphans.contains(key.as_str()) {
                    leftovers.push(key);
                }
            }
            if targets.is_empty() && leftovers.is_empty() && listing.dropped == 0 {
                return Ok(revoked);
            }
            // Concurrently: the Redis connection pipelines them into one round trip.
            let deletions = targets.iter().map(|(key, _)| self.store.delete(key));
            let cleanups = leftovers.iter().map(|key| self.store.delete(key));
            let (deleted, cleaned) =
                futures_util::future::join(join_all(deletions), join_all(cleanups)).await;
            for ((key, record), deleted) in targets.iter().zip(deleted) {
                if deleted? {
                    tracing::info!(session = key.short(), user_id, "session revoked");
                    revoked.push((*record).clone());
                }
            }
            for cleaned in cleaned {
                cleaned?;
            }
        }
        // Sessions kept appearing: something is rotating or creating them as fast as they go.
        Err(StoreError::unavailable("sessions kept reappearing during revocation").into())
    }

    /// Ends the oldest logins of `user_id` beyond the per-user cap, other than `own`, the one a
    /// login has just created, and prunes the index on the way; returns whether `own`
    /// survived. Personal access tokens are not counted: they have a limit of their own, and
    /// can never push a login out.
    ///
    /// A login never makes room by ending its own session, whatever its creation time says
    /// (app instances' clocks differ): it keeps itself and the newest `cap - 1` others.
    /// Called after the login has created its session, so that logins racing each other each
    /// see all the sessions written before they list. Racing logins past the cap may end one
    /// another: one that finds its own session gone stops ending others, and when this one had
    /// to end any, it checks at the end that its own session is still there; the caller
    /// answers an error rather than a dead cookie if not. (Two logins of one user at the cap
    /// within the same few milliseconds can still both lose; each then answers the error.)
    pub(crate) async fn trim_to_cap(&self, user_id: &str, own: &SessionKey) -> Result<bool, Error> {
        let listing = self.store.list(user_id).await?;
        let mut others: Vec<&(SessionKey, StoredSession)> = listing
            .live
            .iter()
            .filter(|(key, stored)| stored.record.is_login() && key != own)
            .collect();
        if !listing.live.iter().any(|(key, _)| key == own) {
            // Not listed: ended already, by a racing login or a revocation.
            return Ok(false);
        }
        let cap = self.rules.max_sessions_per_user();
        if others.len() < cap {
            return Ok(true);
        }
        // Newest first; ties by public id, so that racing logins agree.
        others.sort_by(|(_, a), (_, b)| cap_order(&b.record).cmp(&cap_order(&a.record)));
        let oldest: Vec<&str> = others
            .iter()
            .skip(cap - 1)
            .map(|(_, stored)| stored.record.id())
            .collect();
        let evicted = self
            .revoke_while(user_id, Some(own), |_, record| {
                oldest.contains(&record.id())
            })
            .await?;
        for record in &evicted {
            self.emit(SecurityEvent::revoked(record, RevokedBy::SessionCap));
        }
        let evicted = evicted.len();
        tracing::info!(user_id, evicted, "session cap reached; oldest logins ended");
        Ok(self.store.load(own).await?.is_some())
    }

    /// How many live personal access tokens `user_id` has.
    pub(crate) async fn count_tokens(&self, user_id: &str) -> Result<usize, Error> {
        let live = self.store.list(user_id).await?.live;
        let orphans = orphans(&live);
        Ok(live
            .iter()
            .filter(|(key, stored)| {
                stored.record.token_name().is_some() && !orphans.contains(key.as_str())
            })
            .count())
    }
}

/// The order in which the per-user cap keeps logins, oldest first: by creation time, ties by
/// public id, so racing logins agree.
fn cap_order(record: &SessionRecord) -> (std::time::SystemTime, &str) {
    (record.created_at(), record.id())
}

/// The keys of the tokens in `live` whose parent login is not in it: they can no longer
/// authenticate, and are neither listed nor counted.
fn orphans(live: &[(SessionKey, StoredSession)]) -> HashSet<&str> {
    let keys: HashSet<&str> = live.iter().map(|(key, _)| key.as_str()).collect();
    live.iter()
        .filter(|(_, stored)| {
            stored
                .record
                .parent()
                .is_some_and(|parent| parent.is_none_or(|parent| !keys.contains(parent.as_str())))
        })
        .map(|(key, _)| key.as_str())
        .collect()
}
