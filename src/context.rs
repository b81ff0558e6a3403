//! The per-request session state that the middleware hands to the extractors.
//!
//! The middleware parses the cookie (no I/O) and stores a [`SessionContext`] in the request's
//! extensions. The store is consulted only when an extractor asks for the user, at most once per
//! request; login and logout record the cookie change here, and the middleware writes it to the
//! response.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::value::RawValue;
use tokio::sync::OnceCell;

use crate::config::Config;
use crate::cookie::Presented;
use crate::store::DynStore;
use crate::token::SessionToken;
use crate::{Error, SessionKey, SessionRecord, StoreError};

/// How many fresh tokens login tries before giving up. A collision of 256-bit random tokens does
/// not happen; repeated refusals mean a broken store.
const CREATE_ATTEMPTS: usize = 3;

/// The store and settings one middleware instance serves with.
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn DynStore>,
    pub(crate) config: Arc<Config>,
}

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

pub(crate) struct SessionContext {
    shared: Rc<Shared>,
    presented: Presented,
    resolved: OnceCell<Option<Rc<ActiveSession>>>,
    store_failed: Cell<bool>,
    update: RefCell<CookieUpdate>,
}

impl SessionContext {
    pub(crate) fn new(shared: Rc<Shared>, presented: Presented) -> Self {
        Self {
            shared,
            presented,
            resolved: OnceCell::new(),
            store_failed: Cell::new(false),
            update: RefCell::new(CookieUpdate::Keep),
        }
    }

    /// The session the request's cookie belongs to, if it is live. Loaded on first use only.
    pub(crate) async fn resolve(&self) -> Result<Option<Rc<ActiveSession>>, Error> {
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

    pub(crate) fn config(&self) -> &Config {
        &self.shared.config
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
        let store = &*self.shared.store;
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
            if !self.guard(store.extend(&key, proposed).await)? {
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

    /// The key of the session the client will hold once this response arrives.
    fn current_key(&self) -> Option<SessionKey> {
        match &*self.update.borrow() {
            CookieUpdate::Issue(token) => Some(token.key()),
            CookieUpdate::Remove => None,
            CookieUpdate::Keep => match &self.presented {
                Presented::Token(token) => Some(token.key()),
                _ => None,
            },
        }
    }

    pub(crate) async fn login(&self, user_id: String, user: Box<RawValue>) -> Result<(), Error> {
        let store = &*self.shared.store;
        // Whatever session the client came with ends here, valid or not: a token planted before
        // login (session fixation) must not become a logged-in one, and no record is orphaned.
        if let Some(previous) = self.current_key() {
            store.delete(&previous).await?;
            self.update.replace(CookieUpdate::Remove);
        }
        let config = self.config();
        let now = SystemTime::now();
        let absolute_end = now + config.absolute_timeout;
        let record = SessionRecord::new(user_id, user, now, absolute_end);
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
            let existed = self.shared.store.delete(&key).await?;
            tracing::info!(session = key.short(), existed, "logout");
        }
        self.update.replace(CookieUpdate::Remove);
        Ok(())
    }
}
