//! The per-request session state: what the middleware found, what the engine said, and the
//! cookie change the response must carry.
//!
//! The middleware parses the cookie (no I/O), works out the client's address and where the
//! request comes from, and stores a [`RequestSession`] in the request's extensions. Everything
//! else in the web layer reaches it through [`RequestSession::of`]. The store is consulted only
//! when something asks for the user, at most once per request.

use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::rc::Rc;
use std::time::SystemTime;

use actix_web::dev::Extensions;
use tokio::sync::OnceCell;

use super::cookie::Presented;
use super::csrf::{self, Provenance};
use serde_json::value::RawValue;

use crate::engine::{
    ActiveSession, CredentialsVersion, Grant, Issued, IssuedToken, PersonalToken, SessionEngine,
    SessionInfo, SessionToken,
};
use crate::{DataChange, Error, SessionData, SessionKey, StoreError};

/// The change to the session cookie that the response must carry.
pub(crate) enum CookieUpdate {
    Keep,
    /// Hand out `token`; a remembered session's cookie persists until `persist_until`.
    Issue {
        token: SessionToken,
        persist_until: Option<SystemTime>,
    },
    Remove,
}

pub(crate) struct RequestSession {
    engine: SessionEngine,
    presented: Presented,
    provenance: Provenance,
    client_ip: Option<IpAddr>,
    resolved: OnceCell<Option<Rc<ActiveSession>>>,
    /// The session after a login or rotation in this request, which supersedes `resolved`.
    replaced: RefCell<Option<Rc<ActiveSession>>>,
    store_failed: Cell<bool>,
    /// Whether the request's bearer token was looked up and found no live bearer session.
    bearer_rejected: Cell<bool>,
    /// Whether the handler was handed a new bearer token for its response body.
    token_issued: Cell<bool>,
    /// Whether this request ended its session (logout, "log out everywhere"): from then on it
    /// has none, unless it starts another.
    ended: Cell<bool>,
    update: RefCell<CookieUpdate>,
    /// The session's data as this request knows it: loaded on the first read, kept up to date
    /// with this request's own writes.
    data: RefCell<Option<SessionData>>,
}

impl RequestSession {
    pub(crate) fn new(
        engine: SessionEngine,
        presented: Presented,
        provenance: Provenance,
        client_ip: Option<IpAddr>,
    ) -> Self {
        Self {
            engine,
            presented,
            provenance,
            client_ip,
            resolved: OnceCell::new(),
            replaced: RefCell::new(None),
            store_failed: Cell::new(false),
            bearer_rejected: Cell::new(false),
            token_issued: Cell::new(false),
            ended: Cell::new(false),
            update: RefCell::new(CookieUpdate::Keep),
            data: RefCell::new(None),
        }
    }

    /// The state the middleware left in a request's extensions: the one way into it, for
    /// extractors, [`Require`](crate::Require) and the throttle alike. Without the middleware
    /// the request cannot be served safely: [`Error::MissingMiddleware`], logged once here.
    pub(crate) fn of(extensions: &Extensions, path: &str) -> Result<Rc<Self>, Error> {
        extensions.get::<Rc<Self>>().cloned().ok_or_else(|| {
            tracing::error!(
                path,
                "actix-login used without LoginMiddleware: wrap the App or scope with LoginMiddleware"
            );
            Error::MissingMiddleware
        })
    }

    pub(crate) fn engine(&self) -> &SessionEngine {
        &self.engine
    }

    /// Where the request says it comes from (see [`csrf`](super::csrf)).
    #[cfg(feature = "throttle")]
    pub(crate) fn provenance(&self) -> Provenance {
        self.provenance
    }

    /// The client's address, through trusted proxies; `None` when unknown.
    pub(crate) fn client_ip(&self) -> Option<IpAddr> {
        self.client_ip
    }

    /// The session the request's cookie belongs to, if it is live, whether a login or an
    /// anonymous one. Loaded on first use only.
    pub(crate) async fn resolve_any(&self) -> Result<Option<Rc<ActiveSession>>, Error> {
        if let Some(replaced) = self.replaced.borrow().as_ref() {
            return Ok(Some(Rc::clone(replaced)));
        }
        if self.ended.get() {
            return Ok(None);
        }
        self.resolved.get_or_try_init(|| self.load()).await.cloned()
    }

    /// The logged-in session of this request, if there is one: an anonymous session is none.
    pub(crate) async fn resolve(&self) -> Result<Option<Rc<ActiveSession>>, Error> {
        Ok(self
            .resolve_any()
            .await?
            .filter(|active| !active.record.is_anonymous()))
    }

    /// The logged-in session of this request, or [`Error::Unauthenticated`].
    pub(crate) async fn require(&self) -> Result<Rc<ActiveSession>, Error> {
        self.resolve().await?.ok_or(Error::Unauthenticated)
    }

    async fn load(&self) -> Result<Option<Rc<ActiveSession>>, Error> {
        let (token, bearer) = match &self.presented {
            Presented::Token(token) => (token, false),
            Presented::Bearer(token) => (token, true),
            Presented::Absent => return Ok(None),
            Presented::Malformed => {
                tracing::debug!("ignoring a malformed session cookie");
                return Ok(None);
            }
        };
        let session = match self.engine.resolve(token).await {
            Ok(session) => session,
            Err(err) => {
                tracing::error!(error = %err, "session store failed; refusing the request");
                self.store_failed.set(true);
                return Err(err.into());
            }
        };
        // A token works only the way it was handed out: a cookie's never as a bearer token
        // (which would skip the cross-site checks it was issued under), a bearer token's never
        // as a cookie.
        let session = session.filter(|active| active.record.is_bearer() == bearer);
        if bearer && session.is_none() {
            tracing::debug!("unknown, ended or misused bearer token");
            self.bearer_rejected.set(true);
        }
        Ok(session.map(Rc::new))
    }

    /// Whether the request authenticates with `Authorization: Bearer` rather than a cookie. Its
    /// response never carries a cookie.
    pub(crate) fn is_bearer(&self) -> bool {
        matches!(self.presented, Presented::Bearer(_))
    }

    /// Whether the request's bearer token turned out unknown or ended: the response is then
    /// `401` with a `WWW-Authenticate` challenge, whatever the handler made of it.
    pub(crate) fn bearer_rejected(&self) -> bool {
        self.bearer_rejected.get()
    }

    /// Whether a store failure kept this request's session from resolving. The middleware then
    /// answers 503 whatever the handler made of it, so an `Option<AuthUser<_>>` cannot quietly
    /// turn an outage into an anonymous request.
    pub(crate) fn store_failed(&self) -> bool {
        self.store_failed.get()
    }

    /// Whether this request was served from a session, a login or an anonymous one: its
    /// response is that visitor's own and must not be cached for anyone else.
    pub(crate) fn personal(&self) -> bool {
        self.resolved.get().is_some_and(Option::is_some)
            || self.data.borrow().is_some()
            || self.token_issued.get()
    }

    /// The cookie change the response must carry. A remembered session whose deadline moved
    /// gets its cookie again, with the new expiry.
    ///
    /// A request judged cross-site never changes the cookie: a browser stores a cookie set in
    /// answer to another site's form (a top-level navigation) even when it kept its own cookie
    /// back, so a `Set-Cookie` here would let any page sign visitors out or plant a session.
    /// Logins and new anonymous sessions are refused before they are made; this is the last
    /// word for anything else.
    pub(crate) fn take_cookie_update(&self) -> CookieUpdate {
        let update = self.update.replace(CookieUpdate::Keep);
        if self.provenance == Provenance::CrossSite {
            if !matches!(update, CookieUpdate::Keep) {
                tracing::warn!("cross-site request: the session cookie is left as it is");
            }
            return CookieUpdate::Keep;
        }
        if !matches!(update, CookieUpdate::Keep) {
            return update;
        }
        let moved = self
            .resolved
            .get()
            .cloned()
            .flatten()
            .filter(|active| active.refreshed && active.record.is_remembered());
        match (moved, &self.presented) {
            (Some(active), Presented::Token(token)) => CookieUpdate::Issue {
                token: token.clone(),
                persist_until: Some(active.expires_at),
            },
            _ => CookieUpdate::Keep,
        }
    }

    /// Applies `f` to the token the client will hold once this response arrives, if any.
    fn with_current_token<T>(&self, f: impl FnOnce(&SessionToken) -> T) -> Option<T> {
        match &*self.update.borrow() {
            CookieUpdate::Issue { token, .. } => Some(f(token)),
            CookieUpdate::Remove => None,
            CookieUpdate::Keep => match &self.presented {
                Presented::Token(token) | Presented::Bearer(token) => Some(f(token)),
                _ => None,
            },
        }
    }

    /// The key of the session the client will hold once this response arrives.
    fn current_key(&self) -> Option<SessionKey> {
        self.with_current_token(SessionToken::key)
    }

    /// The synchronizer token for the session the client will hold after this response; none
    /// for a bearer request, which needs no cross-site proof.
    pub(crate) fn csrf_token(&self) -> Option<String> {
        if self.is_bearer() {
            return None;
        }
        self.with_current_token(csrf::synchronizer_token)
    }

    /// The session this request already resolved or replaced, without touching the store.
    fn known_session(&self) -> Option<Rc<ActiveSession>> {
        if let Some(replaced) = self.replaced.borrow().as_ref() {
            return Some(Rc::clone(replaced));
        }
        self.resolved.get().cloned().flatten()
    }

    /// Refuses to change anything once the store failed in this request. The middleware answers
    /// such a request `503` whatever the handler did, and that answer carries no cookie: a login
    /// or rotation that went through anyway would leave the user logged out (their old token
    /// ended, the new one never delivered) and an orphan session in the store.
    fn unchanged_since_failure(&self) -> Result<(), Error> {
        if self.store_failed() {
            return Err(StoreError::unavailable(
                "the session store failed earlier in this request; changing nothing",
            )
            .into());
        }
        Ok(())
    }

    fn adopt(&self, issued: Issued) {
        let session = issued.session;
        let persist_until = session.record.is_remembered().then_some(session.expires_at);
        self.replaced.replace(Some(Rc::new(session)));
        self.update.replace(CookieUpdate::Issue {
            token: issued.token,
            persist_until,
        });
    }

    /// Refuses a cookie change on a request that carries a bearer token: its response never
    /// carries a cookie, so the change would be lost and the session it made orphaned.
    fn cookie_request(&self) -> Result<(), Error> {
        if self.is_bearer() {
            tracing::warn!("refused a cookie login or renewal on a bearer request");
            return Err(Error::InvalidInput);
        }
        Ok(())
    }

    pub(crate) async fn login(&self, grant: Grant, keep_data: bool) -> Result<(), Error> {
        // Login CSRF: a hostile page must not log the victim into the attacker's account.
        if self.provenance == Provenance::CrossSite {
            tracing::warn!("cross-site login refused");
            return Err(Error::CrossSiteRequest);
        }
        self.cookie_request()?;
        self.unchanged_since_failure()?;
        let live = if keep_data {
            self.resolve_any().await?
        } else {
            None
        };
        let outcome = self
            .engine
            .login(
                self.current_key().as_ref(),
                live.as_deref(),
                grant,
                keep_data,
            )
            .await;
        if outcome.previous_ended {
            self.update.replace(CookieUpdate::Remove);
        }
        // Whatever the new session holds is read afresh.
        self.data.replace(None);
        self.adopt(outcome.result?);
        Ok(())
    }

    /// Logs in with a bearer token instead of a cookie: the client's session, if any, is left
    /// alone, and the token goes to the caller for the response body.
    pub(crate) async fn login_bearer(&self, grant: Grant) -> Result<Issued, Error> {
        self.unchanged_since_failure()?;
        // The token goes out in the body: no cache may keep the response.
        self.token_issued.set(true);
        self.engine.login(None, None, grant, false).await.result
    }

    /// Creates a personal access token for the logged-in user; `user_agent` is the creating
    /// client's, shown in listings.
    pub(crate) async fn create_token(
        &self,
        spec: PersonalToken,
        user_agent: Option<String>,
    ) -> Result<IssuedToken, Error> {
        self.unchanged_since_failure()?;
        let active = self.require().await?;
        self.token_issued.set(true);
        let ip = self.client_ip.map(|ip| ip.to_string());
        self.engine
            .create_token(&active, spec, (ip, user_agent))
            .await
    }

    /// Applies `read` to the session's data, which is loaded once per request; empty without
    /// a session (and then no store command and no cookie).
    async fn with_data<T>(&self, read: impl FnOnce(&SessionData) -> T) -> Result<T, Error> {
        if self.data.borrow().is_none() {
            let loaded = match self.resolve_any().await? {
                Some(active) => self.engine.load_data(&active.key).await?,
                None => SessionData::new(),
            };
            self.data.replace(Some(loaded));
        }
        let data = self.data.borrow();
        Ok(match data.as_ref() {
            Some(data) => read(data),
            None => read(&SessionData::new()),
        })
    }

    /// The JSON text stored under `name` in the session's data.
    pub(crate) async fn data_value(&self, name: &str) -> Result<Option<String>, Error> {
        self.with_data(|data| data.get(name).map(str::to_owned))
            .await
    }

    /// Every value of the session's data.
    pub(crate) async fn data_entries(&self) -> Result<SessionData, Error> {
        self.with_data(SessionData::clone).await
    }

    /// Applies `changes` to the session's data, returning the values they replaced. A visitor
    /// without a session gets an anonymous one, and its cookie, if `changes` store anything.
    pub(crate) async fn write_data(
        &self,
        changes: &[DataChange],
    ) -> Result<Vec<Option<String>>, Error> {
        self.unchanged_since_failure()?;
        let previous = match self.resolve_any().await? {
            Some(active) => self.engine.write_data(&active.key, changes).await?,
            None if !changes
                .iter()
                .any(|change| matches!(change, DataChange::Insert { .. })) =>
            {
                // Nothing to keep: no session for a removal.
                vec![None; changes.len()]
            }
            None if self.is_bearer() => {
                // A bearer client has a session or gets 401; it never starts one with a cookie.
                return Err(Error::Unauthenticated);
            }
            None if self.provenance == Provenance::CrossSite => {
                // Its cookie would not be kept from the browser (see `take_cookie_update`), nor
                // may another site choose the session a visitor holds.
                tracing::warn!("cross-site request: no anonymous session started");
                return Err(Error::CrossSiteRequest);
            }
            None => {
                let (issued, previous) =
                    self.engine.start_anonymous(self.client_ip, changes).await?;
                self.adopt(issued);
                previous
            }
        };
        if let Some(data) = self.data.borrow_mut().as_mut() {
            data.apply(changes);
        }
        Ok(previous)
    }

    /// Replaces the profile of this request's logged-in session, keeping its roles.
    pub(crate) async fn update_profile(&self, user: &RawValue) -> Result<(), Error> {
        self.unchanged_since_failure()?;
        let active = self.require().await?;
        let record = self.engine.update_own_profile(&active, user).await?;
        let updated = ActiveSession {
            key: active.key.clone(),
            record,
            expires_at: active.expires_at,
            refreshed: active.refreshed,
        };
        self.replaced.replace(Some(Rc::new(updated)));
        Ok(())
    }

    pub(crate) async fn logout(&self) -> Result<(), Error> {
        self.unchanged_since_failure()?;
        if let Some(key) = self.current_key() {
            let known = self.known_session();
            self.engine
                .logout(&key, known.as_ref().map(|active| &active.record))
                .await?;
        }
        self.forget_session();
        Ok(())
    }

    /// Moves the current session to a new token; with `reauthenticated`, also notes that the
    /// password was just confirmed.
    pub(crate) async fn rotate(&self, reauthenticated: bool) -> Result<(), Error> {
        self.cookie_request()?;
        self.unchanged_since_failure()?;
        let active = self.require().await?;
        let issued = self.engine.rotate(&active, reauthenticated).await?;
        self.adopt(issued);
        Ok(())
    }

    pub(crate) async fn list(&self) -> Result<Vec<SessionInfo>, Error> {
        let active = self.require().await?;
        self.engine
            .list(active.record.user_id(), Some(&active.key))
            .await
    }

    pub(crate) async fn revoke(&self, session_id: &str) -> Result<bool, Error> {
        self.unchanged_since_failure()?;
        let active = self.require().await?;
        let revoked = self
            .engine
            .revoke(active.record.user_id(), session_id)
            .await?;
        if active.record.id() == session_id {
            // Its own session: from here on the request has none, as after a logout.
            self.forget_session();
        }
        Ok(revoked)
    }

    /// Drops the request's session after it ended: no user, no data, and the cookie cleared.
    fn forget_session(&self) {
        self.replaced.replace(None);
        self.ended.set(true);
        self.data.replace(Some(SessionData::new()));
        self.update.replace(CookieUpdate::Remove);
    }

    pub(crate) async fn revoke_others(&self) -> Result<usize, Error> {
        self.unchanged_since_failure()?;
        let active = self.require().await?;
        self.engine
            .revoke_others(active.record.user_id(), active.record.id())
            .await
    }

    pub(crate) async fn credentials_changed(
        &self,
        version: &CredentialsVersion,
    ) -> Result<usize, Error> {
        self.unchanged_since_failure()?;
        let active = self.require().await?;
        let record = &active.record;
        self.engine
            .credentials_changed(record.user_id(), version, Some(record.id()))
            .await
    }

    pub(crate) async fn revoke_all(&self) -> Result<usize, Error> {
        self.unchanged_since_failure()?;
        let active = self.require().await?;
        let revoked = self.engine.revoke_all(active.record.user_id()).await?;
        self.forget_session();
        Ok(revoked)
    }
}
