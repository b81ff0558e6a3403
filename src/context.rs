//! The per-request session state that the middleware hands to the extractors.
//!
//! The middleware parses the cookie (no I/O) and stores a [`SessionContext`] in the request's
//! extensions. The store is consulted only when an extractor asks for the user, at most once per
//! request; login, logout and rotation record the cookie change here, and the middleware writes
//! it to the response.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::SystemTime;

use tokio::sync::OnceCell;

use crate::config::Config;
use crate::cookie::Presented;
use crate::csrf::{self, Provenance};
use crate::sessions::{SessionInfo, Sessions};
use crate::token::SessionToken;
use crate::{Error, SessionKey, SessionRecord, StoreError};

/// How many fresh tokens a login or rotation tries before giving up. A collision of 256-bit
/// random tokens does not happen; repeated refusals mean a broken store.
const CREATE_ATTEMPTS: usize = 3;

/// A session that resolved successfully in this request.
#[derive(Debug)]
pub(crate) struct ActiveSession {
    pub(crate) key: SessionKey,
    pub(crate) record: SessionRecord,
    pub(crate) expires_at: SystemTime,
}

/// The change to the session cookie that the response must carry.
pub(crate) enum CookieUpdate {
    Keep,
    Issue(SessionToken),
    Remove,
}

/// What a login stores besides the profile.
pub(crate) struct Grant {
    pub(crate) user_id: String,
    pub(crate) user: Box<serde_json::value::RawValue>,
    pub(crate) roles: Vec<String>,
    pub(crate) ip: Option<String>,
    pub(crate) user_agent: Option<String>,
}

pub(crate) struct SessionContext {
    sessions: Rc<Sessions>,
    presented: Presented,
    provenance: Provenance,
    resolved: OnceCell<Option<Rc<ActiveSession>>>,
    /// The session after a rotation in this request, which supersedes `resolved`.
    rotated: RefCell<Option<Rc<ActiveSession>>>,
    store_failed: Cell<bool>,
    update: RefCell<CookieUpdate>,
}

impl SessionContext {
    pub(crate) fn new(
        sessions: Rc<Sessions>,
        presented: Presented,
        provenance: Provenance,
    ) -> Self {
        Self {
            sessions,
            presented,
            provenance,
            resolved: OnceCell::new(),
            rotated: RefCell::new(None),
            store_failed: Cell::new(false),
            update: RefCell::new(CookieUpdate::Keep),
        }
    }

    /// Where the request says it comes from (see [`csrf`](crate::csrf)).
    pub(crate) fn provenance(&self) -> Provenance {
        self.provenance
    }

    pub(crate) fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    pub(crate) fn config(&self) -> &Config {
        &self.sessions.config
    }

    /// The session the request's cookie belongs to, if it is live. Loaded on first use only.
    pub(crate) async fn resolve(&self) -> Result<Option<Rc<ActiveSession>>, Error> {
        if let Some(rotated) = self.rotated.borrow().as_ref() {
            return Ok(Some(Rc::clone(rotated)));
        }
        self.resolved.get_or_try_init(|| self.load()).await.cloned()
    }

    /// Whether a store failure kept this request's session from resolving. The middleware then
    /// answers 503 whatever the handler made of it, so an `Option<AuthUser<_>>` cannot quietly
    /// turn an outage into an anonymous request.
    pub(crate) fn store_failed(&self) -> bool {
        self.store_failed.get()
    }

    /// Whether this request was served to a logged-in user.
    pub(crate) fn authenticated(&self) -> bool {
        self.resolved.get().is_some_and(Option::is_some)
    }

    pub(crate) fn take_cookie_update(&self) -> CookieUpdate {
        self.update.replace(CookieUpdate::Keep)
    }

    async fn load(&self) -> Result<Option<Rc<ActiveSession>>, Error> {
        let token = match &self.presented {
            Presented::Token(token) => token,
            Presented::Absent => return Ok(None),
            Presented::Malformed => {
                tracing::debug!("ignoring a malformed session cookie");
                return Ok(None);
            }
        };
        let key = token.key();
        let store = &*self.sessions.store;
        let Some(stored) = self.guard(store.load(&key).await)? else {
            tracing::debug!(session = key.short(), "unknown, expired or ended session");
            return Ok(None);
        };
        let now = SystemTime::now();
        let absolute_end = stored.record.expires_at();
        if stored.expires_at <= now || absolute_end <= now {
            tracing::debug!(session = key.short(), "session past its deadline");
            return Ok(None);
        }
        let config = self.config();
        let proposed = config.idle_deadline(now, absolute_end);
        let mut expires_at = stored.expires_at;
        if config.worth_refreshing(expires_at, proposed) {
            if !self.guard(store.extend(&key, &stored.record, proposed).await)? {
                // Logged out or revoked between the load and the refresh.
                return Ok(None);
            }
            expires_at = proposed;
        }
        Ok(Some(Rc::new(ActiveSession {
            key,
            record: stored.record,
            expires_at,
        })))
    }

    /// Fails closed on store errors while resolving; a corrupt record counts as no session.
    fn guard<T: Default>(&self, result: Result<T, StoreError>) -> Result<T, Error> {
        match result {
            Ok(value) => Ok(value),
            Err(StoreError::Corrupt(err)) => {
                tracing::error!(error = %err, "unreadable session record; treating it as absent");
                Ok(T::default())
            }
            Err(err) => {
                tracing::error!(error = %err, "session store failed; refusing the request");
                self.store_failed.set(true);
                Err(err.into())
            }
        }
    }

    /// Applies `f` to the token the client will hold once this response arrives, if any.
    fn with_current_token<T>(&self, f: impl FnOnce(&SessionToken) -> T) -> Option<T> {
        match &*self.update.borrow() {
            CookieUpdate::Issue(token) => Some(f(token)),
            CookieUpdate::Remove => None,
            CookieUpdate::Keep => match &self.presented {
                Presented::Token(token) => Some(f(token)),
                _ => None,
            },
        }
    }

    /// The key of the session the client will hold once this response arrives.
    fn current_key(&self) -> Option<SessionKey> {
        self.with_current_token(SessionToken::key)
    }

    /// The live session of this request, or `Unauthenticated`.
    async fn require(&self) -> Result<Rc<ActiveSession>, Error> {
        self.resolve().await?.ok_or(Error::Unauthenticated)
    }

    /// The synchronizer token for the session the client will hold after this response.
    pub(crate) fn csrf_token(&self) -> Option<String> {
        self.with_current_token(csrf::synchronizer_token)
    }

    pub(crate) async fn login(&self, grant: Grant) -> Result<(), Error> {
        // Login CSRF: a hostile page must not log the victim into the attacker's account.
        if self.provenance == Provenance::CrossSite {
            tracing::warn!("cross-site login refused");
            return Err(Error::CrossSiteRequest);
        }
        let store = &*self.sessions.store;
        // Whatever session the client came with ends here, valid or not: a token planted before
        // login (session fixation) must not become a logged-in one, and no record is orphaned.
        if let Some(previous) = self.current_key() {
            store.delete(&previous).await?;
            self.update.replace(CookieUpdate::Remove);
        }
        self.sessions.make_room(&grant.user_id).await?;
        let config = self.config();
        let now = SystemTime::now();
        let absolute_end = now + config.absolute_timeout;
        let record = SessionRecord::new(random_id()?, grant.user_id, grant.user, now, absolute_end)
            .with_roles(grant.roles)
            .with_client(grant.ip, grant.user_agent);
        let expires_at = config.idle_deadline(now, absolute_end);
        for _ in 0..CREATE_ATTEMPTS {
            let token = SessionToken::generate().map_err(Error::Random)?;
            let key = token.key();
            if store.create(&key, &record, expires_at).await? {
                tracing::info!(session = key.short(), user_id = record.user_id(), "login");
                self.update.replace(CookieUpdate::Issue(token));
                return Ok(());
            }
        }
        Err(StoreError::unavailable("store refused every fresh session key").into())
    }

    pub(crate) async fn logout(&self) -> Result<(), Error> {
        if let Some(key) = self.current_key() {
            // Note who the session belongs to before deleting it: if a concurrent request
            // rotates it away meanwhile, its public id is how the logout follows it. A plain
            // load, not `resolve`: refreshing a session about to end would be wasted work.
            let owner = match self.known_session() {
                Some(active) => Some(active.record.clone()),
                None => self.sessions.store.load(&key).await?.map(|s| s.record),
            };
            let deleted = self.sessions.store.delete(&key).await?;
            tracing::info!(session = key.short(), "logout");
            if let (false, Some(record)) = (deleted, owner) {
                self.sessions.revoke(record.user_id(), record.id()).await?;
            }
        }
        self.update.replace(CookieUpdate::Remove);
        Ok(())
    }

    /// The session this request already resolved or rotated to, without touching the store.
    fn known_session(&self) -> Option<Rc<ActiveSession>> {
        if let Some(rotated) = self.rotated.borrow().as_ref() {
            return Some(Rc::clone(rotated));
        }
        self.resolved.get().cloned().flatten()
    }

    /// Moves the current session to a new token; with `reauthenticated`, also notes that the
    /// password was just confirmed.
    pub(crate) async fn rotate(&self, reauthenticated: bool) -> Result<(), Error> {
        let active = self.require().await?;
        let now = SystemTime::now();
        let mut record = active.record.clone();
        if reauthenticated {
            record = record.reauthenticated(now);
        }
        let expires_at = self.config().idle_deadline(now, record.expires_at());
        for _ in 0..CREATE_ATTEMPTS {
            let token = SessionToken::generate().map_err(Error::Random)?;
            let key = token.key();
            let store = &*self.sessions.store;
            if store.rotate(&active.key, &key, &record, expires_at).await? {
                tracing::info!(
                    from = active.key.short(),
                    to = key.short(),
                    reauthenticated,
                    "session rotated"
                );
                self.rotated.replace(Some(Rc::new(ActiveSession {
                    key,
                    record,
                    expires_at,
                })));
                self.update.replace(CookieUpdate::Issue(token));
                return Ok(());
            }
            if store.load(&active.key).await?.is_none() {
                return Err(Error::Unauthenticated);
            }
        }
        Err(StoreError::unavailable("store refused every fresh session key").into())
    }

    pub(crate) async fn list(&self) -> Result<Vec<SessionInfo>, Error> {
        let active = self.require().await?;
        self.sessions
            .list_marking(active.record.user_id(), Some(&active.key))
            .await
    }

    pub(crate) async fn revoke_others(&self) -> Result<usize, Error> {
        let active = self.require().await?;
        let current = active.record.id();
        self.sessions
            .revoke_where(active.record.user_id(), |_, record| record.id() != current)
            .await
    }

    pub(crate) async fn revoke_all(&self) -> Result<usize, Error> {
        let active = self.require().await?;
        let revoked = self.sessions.revoke_all(active.record.user_id()).await?;
        self.update.replace(CookieUpdate::Remove);
        Ok(revoked)
    }
}

/// A public session id: 12 random bytes, base64url (16 characters).
fn random_id() -> Result<String, Error> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    // 96 bits: ample for a handle that is not a secret (only its owner can revoke through it),
    // and short, since every record carries it.
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).map_err(Error::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}
