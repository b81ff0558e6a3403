//! The per-request session state: what the middleware found, what the engine said, and the
//! cookie change the response must carry.
//!
//! The middleware parses the cookie (no I/O), works out the client's address and where the
//! request comes from, and stores a [`RequestSession`] in the request's extensions. Everything
//! else in the web layer reaches it through [`RequestSession::of`]. The store is consulted only
//! when something asks for the user, and looked up at most once per request (after a look at
//! its memory, where a local cache keeps one).

use std::cell::{Cell, OnceCell, RefCell};
use std::net::IpAddr;
use std::rc::Rc;
use std::time::SystemTime;

use actix_web::dev::Extensions;
use futures_util::lock::Mutex;

use super::cookie::Presented;
use super::csrf::{self, Provenance};
use serde_json::value::RawValue;

use crate::engine::events::RevokedBy;
use crate::engine::{
    ActiveSession, CredentialsVersion, DataNeed, Grant, Issued, IssuedToken, PersonalToken, Reauth,
    SessionEngine, SessionInfo, SessionToken,
};
use crate::error::{Error, StoreError};
use crate::record::{DataChange, SessionData, SessionKey};

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

/// Where a request's session stands. One value rather than a flag per event, so that states no
/// request can be in cannot be written either: a session both ended and replaced, a new token
/// after the store failed, a cookie change that disagrees with the session the request holds.
///
/// A request starts [`Unresolved`](Self::Unresolved). Looking up the token it presented (once,
/// on first use) settles it as [`Resolved`](Self::Resolved), or as one of the two verdicts the
/// middleware answers for itself whatever the handler did, [`BearerRejected`](Self::BearerRejected)
/// and [`StoreFailed`](Self::StoreFailed), which nothing afterwards undoes. A login, rotation
/// or new anonymous session makes it [`Replaced`](Self::Replaced); a logout, or a revocation
/// that reaches its own session, [`Ended`](Self::Ended). The cookie change follows from the
/// state alone (see [`cookie_update`](Self::cookie_update)).
enum SessionState {
    /// Nothing has needed the session yet: the presented token has not been looked up.
    Unresolved,
    /// The presented token was looked up: the live session it belongs to, or none. The client
    /// keeps its token; a profile update in this request swaps in the updated record.
    Resolved(Option<Rc<ActiveSession>>),
    /// A login, rotation or new anonymous session in this request: the client is handed
    /// `token` for `session`, whatever it presented.
    Replaced {
        session: Rc<ActiveSession>,
        token: SessionToken,
        /// When a remembered session's cookie expires; `None` for a browser-session cookie.
        persist_until: Option<SystemTime>,
    },
    /// This request ended its session: from here on it has none, unless it starts another, and
    /// the client must drop its cookie.
    Ended,
    /// The presented bearer token is unknown, ended or a cookie's: the response is `401`.
    BearerRejected,
    /// The store failed while looking the presented token up: the response is `503`, and
    /// nothing may change (see [`RequestSession::unchanged_since_failure`]).
    StoreFailed,
}

impl SessionState {
    /// Whether the middleware answers the request itself, whatever the handler made of it. Such
    /// a state is final: a later logout or login cannot turn a `401` or `503` into a success.
    fn is_verdict(&self) -> bool {
        matches!(self, Self::BearerRejected | Self::StoreFailed)
    }

    /// The session the request holds, as far as it is known without asking the store.
    fn session(&self) -> Option<&Rc<ActiveSession>> {
        match self {
            Self::Resolved(session) => session.as_ref(),
            Self::Replaced { session, .. } => Some(session),
            Self::Unresolved | Self::Ended | Self::BearerRejected | Self::StoreFailed => None,
        }
    }

    /// Whether the response concerns a visitor's own session, one the request found, made or
    /// ended, and so must not be kept by a shared cache.
    fn concerns_a_session(&self) -> bool {
        matches!(
            self,
            Self::Resolved(Some(_)) | Self::Replaced { .. } | Self::Ended
        )
    }

    /// The token the client will hold once the response arrives, if any.
    fn client_token<'a>(&'a self, presented: &'a Presented) -> Option<&'a SessionToken> {
        match self {
            Self::Replaced { token, .. } => Some(token),
            Self::Ended => None,
            Self::Unresolved | Self::Resolved(_) | Self::BearerRejected | Self::StoreFailed => {
                match presented {
                    Presented::Token(token) | Presented::Bearer(token) => Some(token),
                    Presented::Absent | Presented::Malformed => None,
                }
            }
        }
    }

    /// The cookie change this state calls for. A remembered session whose idle deadline moved
    /// while it was looked up gets its cookie again, with the new expiry, so the browser does
    /// not drop it before the store does.
    fn cookie_update(&self, presented: &Presented) -> CookieUpdate {
        match (self, presented) {
            (
                Self::Replaced {
                    token,
                    persist_until,
                    ..
                },
                _,
            ) => CookieUpdate::Issue {
                token: token.clone(),
                persist_until: *persist_until,
            },
            (Self::Ended, _) => CookieUpdate::Remove,
            (Self::Resolved(Some(active)), Presented::Token(token))
                if active.refreshed && active.record.is_remembered() =>
            {
                CookieUpdate::Issue {
                    token: token.clone(),
                    persist_until: Some(active.expires_at),
                }
            }
            _ => CookieUpdate::Keep,
        }
    }
}

pub(crate) struct RequestSession {
    /// The worker's engine: shared without an atomic count, as everything of a request stays
    /// on its worker's thread.
    engine: Rc<SessionEngine>,
    presented: Presented,
    provenance: Provenance,
    client_ip: Option<IpAddr>,
    state: RefCell<SessionState>,
    /// Lets the presented token be looked up once per request. A handler's extractors run
    /// concurrently on the request's task: the first to need the session takes this lock and
    /// looks it up (from the store's memory without waiting, when it can: see
    /// `settle_without_io`), the others wait for the lock and then find `state` settled rather
    /// than ask the store again. It holds nothing itself: the lookup settles `state`. A lock,
    /// not a `OnceCell`: uncontended, as it nearly always is, it costs two atomic operations,
    /// where a `OnceCell` acquires a semaphore's permit and closes it under a mutex.
    lookup: Mutex<()>,
    /// The presented token's store key, once something needed it.
    presented_key_memo: OnceCell<SessionKey>,
    /// Whether the handler was handed a new bearer token for its response body. Kept beside
    /// `state`, not in it: the token belongs to a session the request does not hold (a bearer
    /// login leaves the client's own session alone), and the response must stay out of caches
    /// whatever its own session does.
    token_in_body: Cell<bool>,
    /// The session's data as this request knows it: loaded on the first read, kept up to date
    /// with this request's own writes. Kept beside `state`, not in it: it is a cache of the
    /// session `state` names, reset wherever that session changes, and no combination of the
    /// two is wrong, only stale.
    data: RefCell<Option<SessionData>>,
    /// Whether the lookup should bring the data along: set before it runs by whatever may read
    /// data later in the request (the [`Session`](crate::Session) extractor, a guard that runs
    /// before the handler's extractors), so that a handler reading data costs one store read.
    data_need: Cell<DataNeed>,
}

impl RequestSession {
    pub(crate) fn new(
        engine: Rc<SessionEngine>,
        presented: Presented,
        provenance: Provenance,
        client_ip: Option<IpAddr>,
    ) -> Self {
        Self {
            engine,
            presented,
            provenance,
            client_ip,
            state: RefCell::new(SessionState::Unresolved),
            lookup: Mutex::new(()),
            presented_key_memo: OnceCell::new(),
            token_in_body: Cell::new(false),
            data: RefCell::new(None),
            data_need: Cell::new(DataNeed::RecordOnly),
        }
    }

    /// Says that something in this request may read the session's data, so that the lookup,
    /// if it has not run yet, reads the data with the record.
    ///
    /// Actix builds every extractor of a handler before it awaits any, so a `Session` among
    /// the arguments marks the request before an `AuthUser` beside it looks the token up,
    /// whatever their order.
    pub(crate) fn expect_data_reads(&self) {
        self.data_need.set(DataNeed::WithRecord);
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

    /// The session the request holds, if it is live, whether a login or an anonymous one: the
    /// presented token's, looked up on first use only, or one this request started since.
    /// Once that lookup failed, an error at once: the store is not asked again.
    pub(crate) async fn resolve_any(&self) -> Result<Option<Rc<ActiveSession>>, Error> {
        if self.is_unresolved() && !self.settle_without_io() {
            self.look_up_in_turn().await;
        }
        if self.store_failed() {
            return Err(store_failed_earlier());
        }
        Ok(self.known_session())
    }

    /// The logged-in session of this request, if there is one: an anonymous session is none,
    /// and neither is one whose second factor is still due.
    pub(crate) async fn resolve(&self) -> Result<Option<Rc<ActiveSession>>, Error> {
        Ok(self
            .resolve_user()
            .await?
            .filter(|active| !active.record.is_second_factor_pending()))
    }

    /// [`resolve`](Self::resolve), but a session whose second factor is still due is
    /// [`Error::SecondFactorRequired`]: what a route that needs a login answers.
    pub(crate) async fn resolve_login(&self) -> Result<Option<Rc<ActiveSession>>, Error> {
        match self.resolve_user().await? {
            Some(active) if active.record.is_second_factor_pending() => {
                Err(Error::SecondFactorRequired)
            }
            found => Ok(found),
        }
    }

    /// The session of a user, a login or one whose second factor is due: not anonymous.
    async fn resolve_user(&self) -> Result<Option<Rc<ActiveSession>>, Error> {
        Ok(self
            .resolve_any()
            .await?
            .filter(|active| !active.record.is_anonymous()))
    }

    /// The logged-in session of this request, or [`Error::Unauthenticated`]
    /// ([`Error::SecondFactorRequired`] for one whose second factor is due).
    pub(crate) async fn require(&self) -> Result<Rc<ActiveSession>, Error> {
        self.resolve_login().await?.ok_or(Error::Unauthenticated)
    }

    /// The session of this request whose second factor is due, if it is one.
    pub(crate) async fn pending_second_factor(&self) -> Result<Option<Rc<ActiveSession>>, Error> {
        Ok(self
            .resolve_user()
            .await?
            .filter(|active| active.record.is_second_factor_pending()))
    }

    fn is_unresolved(&self) -> bool {
        matches!(*self.state.borrow(), SessionState::Unresolved)
    }

    /// Settles the state where no I/O is needed: without a usable token, or with the session
    /// from the store's memory when the store can vouch for its copy and the session needs no
    /// write (see `SessionEngine::resolve_cached`). No lock is awaited: if another extractor's
    /// lookup is under way (it may be moving the session's deadline, which decides the
    /// cookie), this one leaves the state to it. `false` leaves the state unresolved.
    fn settle_without_io(&self) -> bool {
        let Some(key) = self.presented_key() else {
            if matches!(self.presented, Presented::Malformed) {
                tracing::debug!("ignoring a malformed session cookie");
            }
            self.enter(SessionState::Resolved(None));
            return true;
        };
        let Some((active, data)) = self.engine.resolve_cached(key) else {
            return false;
        };
        if active.record.is_bearer() != self.is_bearer() {
            // Misused: the lookup with I/O refuses it, and says why.
            return false;
        }
        // Asked only once the memory has an answer: a store without one pays nothing for it.
        if self.lookup.try_lock().is_none() {
            return false;
        }
        // Counted here, once taken: one turned down is counted by the load that follows.
        crate::telemetry::cache(true);
        self.enter(SessionState::Resolved(Some(Rc::new(active))));
        if data.is_some() && self.data.borrow().is_none() {
            self.data.replace(data);
        }
        true
    }

    /// The store key of the token the request presented (as a cookie or a bearer token),
    /// worked out on first use: a request that never asks for its session does not pay for the
    /// hash, and one that asks more than once pays once.
    fn presented_key(&self) -> Option<&SessionKey> {
        match &self.presented {
            Presented::Token(token) | Presented::Bearer(token) => {
                Some(self.presented_key_memo.get_or_init(|| token.key()))
            }
            Presented::Absent | Presented::Malformed => None,
        }
    }

    /// Waits for the lookup's lock, then looks the token up unless the state was settled
    /// meanwhile (by the lookup this one waited for, or by the handler), or that lookup was
    /// dropped midway.
    async fn look_up_in_turn(&self) {
        let _turn = self.lookup.lock().await;
        if self.is_unresolved() {
            self.look_up().await;
        }
    }

    /// Looks the presented token up and settles the state with what it found. Found or not, a
    /// session counts only if the request has not replaced or ended its own meanwhile; a
    /// verdict counts whatever it did, as the middleware answers for it all the same.
    async fn look_up(&self) {
        // Without a token there is nothing to look up: `settle_without_io` settled it.
        let Some(key) = self.presented_key() else {
            return;
        };
        let (found, data) = self.load(key).await;
        if found.is_verdict() || self.is_unresolved() {
            self.enter(found);
            if data.is_some() && self.data.borrow().is_none() {
                self.data.replace(data);
            }
        }
    }

    /// What the presented token, whose key is `key`, stands for in the store, and the
    /// session's data if it came along.
    async fn load(&self, key: &SessionKey) -> (SessionState, Option<SessionData>) {
        let bearer = self.is_bearer();
        let found = match self
            .engine
            .resolve_with(key.clone(), self.data_need.get())
            .await
        {
            Ok(found) => found,
            Err(err) => {
                tracing::error!(error = %err, "session store failed; refusing the request");
                return (SessionState::StoreFailed, None);
            }
        };
        // A token works only the way it was handed out: a cookie's never as a bearer token
        // (which would skip the cross-site checks it was issued under), a bearer token's never
        // as a cookie.
        match found.filter(|(active, _)| active.record.is_bearer() == bearer) {
            Some((active, data)) => (SessionState::Resolved(Some(Rc::new(active))), data),
            None if bearer => {
                tracing::debug!("unknown, ended or misused bearer token");
                (SessionState::BearerRejected, None)
            }
            None => (SessionState::Resolved(None), None),
        }
    }

    /// Moves the request's session to `next`, unless a verdict already stands.
    fn enter(&self, next: SessionState) {
        let mut state = self.state.borrow_mut();
        if !state.is_verdict() {
            *state = next;
        }
    }

    /// Whether the request authenticates with `Authorization: Bearer` rather than a cookie. Its
    /// response never carries a cookie.
    pub(crate) fn is_bearer(&self) -> bool {
        matches!(self.presented, Presented::Bearer(_))
    }

    /// Whether the request's bearer token turned out unknown or ended: the response is then
    /// `401` with a `WWW-Authenticate` challenge, whatever the handler made of it.
    pub(crate) fn bearer_rejected(&self) -> bool {
        matches!(*self.state.borrow(), SessionState::BearerRejected)
    }

    /// Whether a store failure kept this request's session from resolving. The middleware then
    /// answers 503 whatever the handler made of it, so an `Option<AuthUser<_>>` cannot quietly
    /// turn an outage into an anonymous request.
    pub(crate) fn store_failed(&self) -> bool {
        matches!(*self.state.borrow(), SessionState::StoreFailed)
    }

    /// Whether this request was served from a session, a login or an anonymous one: its
    /// response is that visitor's own and must not be cached for anyone else.
    pub(crate) fn personal(&self) -> bool {
        self.state.borrow().concerns_a_session()
            || self.data.borrow().is_some()
            || self.token_in_body.get()
    }

    /// The cookie change the response must carry (see [`SessionState::cookie_update`]).
    ///
    /// A request judged cross-site never changes the cookie: a browser stores a cookie set in
    /// answer to another site's form (a top-level navigation) even when it kept its own cookie
    /// back, so a `Set-Cookie` here would let any page sign visitors out or plant a session.
    /// Logins and new anonymous sessions are refused before they are made; this is the last
    /// word for anything else.
    pub(crate) fn cookie_update(&self) -> CookieUpdate {
        let update = self.state.borrow().cookie_update(&self.presented);
        if self.provenance == Provenance::CrossSite {
            if !matches!(update, CookieUpdate::Keep) {
                tracing::warn!("cross-site request: the session cookie is left as it is");
            }
            return CookieUpdate::Keep;
        }
        update
    }

    /// Applies `f` to the token the client will hold once this response arrives, if any.
    fn with_current_token<T>(&self, f: impl FnOnce(&SessionToken) -> T) -> Option<T> {
        self.state.borrow().client_token(&self.presented).map(f)
    }

    /// The key of the session the client will hold once this response arrives (as
    /// [`SessionState::client_token`] names its token), without hashing a token twice.
    fn current_key(&self) -> Option<SessionKey> {
        match &*self.state.borrow() {
            SessionState::Replaced { session, .. } => Some(session.key.clone()),
            SessionState::Ended => None,
            SessionState::Unresolved
            | SessionState::Resolved(_)
            | SessionState::BearerRejected
            | SessionState::StoreFailed => self.presented_key().cloned(),
        }
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
        self.state.borrow().session().cloned()
    }

    /// Refuses to change anything once the store failed in this request. The middleware answers
    /// such a request `503` whatever the handler did, and that answer carries no cookie: a login
    /// or rotation that went through anyway would leave the user logged out (their old token
    /// ended, the new one never delivered) and an orphan session in the store.
    fn unchanged_since_failure(&self) -> Result<(), Error> {
        if self.store_failed() {
            return Err(store_failed_earlier());
        }
        Ok(())
    }

    /// Makes a session issued in this request the one the request holds, and its token the
    /// client's.
    fn adopt(&self, issued: Issued) {
        let session = issued.session;
        let persist_until = session.record.is_remembered().then_some(session.expires_at);
        self.enter(SessionState::Replaced {
            session: Rc::new(session),
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
            // Should the new session fail to start, the request is left with none.
            self.enter(SessionState::Ended);
        }
        // Whatever the new session holds is read afresh.
        self.data.replace(None);
        self.adopt(outcome.result?);
        Ok(())
    }

    /// Starts impersonating `grant`'s user from the logged-in (admin) session, which stays in
    /// the store for [`stop_impersonating`](Self::stop_impersonating) to resume.
    pub(crate) async fn impersonate(&self, grant: Grant) -> Result<(), Error> {
        self.cookie_request()?;
        self.unchanged_since_failure()?;
        let active = self.require().await?;
        let issued = self.engine.impersonate(&active, grant).await?;
        self.data.replace(None);
        self.adopt(issued);
        Ok(())
    }

    /// Ends the impersonation the request's session is; back in the admin's own session if it
    /// is still live (`true`), else with none.
    pub(crate) async fn stop_impersonating(&self) -> Result<bool, Error> {
        self.cookie_request()?;
        self.unchanged_since_failure()?;
        let active = self.require().await?;
        let resumed = self.engine.stop_impersonating(&active).await?;
        self.data.replace(None);
        Ok(match resumed {
            Some(issued) => {
                self.adopt(issued);
                true
            }
            None => {
                self.forget_session();
                false
            }
        })
    }

    /// Logs in with a bearer token instead of a cookie: the client's session, if any, is left
    /// alone, and the token goes to the caller for the response body.
    pub(crate) async fn login_bearer(&self, grant: Grant) -> Result<Issued, Error> {
        self.unchanged_since_failure()?;
        // The token goes out in the body: no cache may keep the response.
        self.token_in_body.set(true);
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
        not_impersonating(&active)?;
        self.token_in_body.set(true);
        let ip = self.client_ip.map(|ip| ip.to_string());
        self.engine
            .create_token(&active, spec, (ip, user_agent))
            .await
    }

    /// Applies `read` to the session's data, which is loaded once per request; empty without
    /// a session (and then no store command and no cookie).
    async fn with_data<T>(&self, read: impl FnOnce(&SessionData) -> T) -> Result<T, Error> {
        if self.data.borrow().is_none() {
            let session = self.resolve_any().await?;
            // The lookup may just have brought the data along.
            if self.data.borrow().is_none() {
                let loaded = match session {
                    Some(active) => self.engine.load_data(&active.key).await?,
                    None => SessionData::new(),
                };
                self.data.replace(Some(loaded));
            }
        }
        let data = self.data.borrow();
        Ok(match data.as_ref() {
            Some(data) => read(data),
            None => read(&SessionData::new()),
        })
    }

    /// `read` applied to the JSON text stored under `name` in the session's data, if there is
    /// any, without copying the text.
    pub(crate) async fn data_value<T>(
        &self,
        name: &str,
        read: impl FnOnce(&str) -> T,
    ) -> Result<Option<T>, Error> {
        self.with_data(|data| data.get(name).map(read)).await
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
                // Its cookie would not be kept from the browser (see `cookie_update`), nor
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
        self.swap_session(updated);
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

    /// Moves the current session to a new token, noting what `reauth` says the user just
    /// proved.
    pub(crate) async fn rotate(&self, reauth: Reauth) -> Result<(), Error> {
        self.cookie_request()?;
        self.unchanged_since_failure()?;
        let active = self.require().await?;
        let issued = self.engine.rotate(&active, reauth).await?;
        self.adopt(issued);
        Ok(())
    }

    /// The session's second factor was just verified: a login waiting for it becomes one on a
    /// new token; a login is reauthenticated with both factors, on a new token too.
    pub(crate) async fn complete_second_factor(&self) -> Result<(), Error> {
        // Logging in: the same refusal of another site's request as a password login.
        if self.provenance == Provenance::CrossSite {
            tracing::warn!("cross-site second factor refused");
            return Err(Error::CrossSiteRequest);
        }
        self.cookie_request()?;
        self.unchanged_since_failure()?;
        let active = match self.resolve_user().await? {
            Some(active) => active,
            None => return Err(Error::Unauthenticated),
        };
        let issued = self.engine.complete_second_factor(&active).await?;
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
        if active.record.id() != session_id {
            not_impersonating(&active)?;
        }
        let revoked = self
            .engine
            .revoke(active.record.user_id(), session_id, RevokedBy::User)
            .await?;
        if active.record.id() == session_id {
            // Its own session: from here on the request has none, as after a logout.
            self.forget_session();
        }
        Ok(revoked)
    }

    /// Drops the request's session after it ended: no user, no data, and the cookie cleared.
    fn forget_session(&self) {
        self.enter(SessionState::Ended);
        self.data.replace(Some(SessionData::new()));
    }

    /// Puts `updated`, a newer record of the session the request holds, in its place; the
    /// token, and so the cookie, stay as they are. A session ended meanwhile stays ended.
    fn swap_session(&self, updated: ActiveSession) {
        match &mut *self.state.borrow_mut() {
            SessionState::Resolved(Some(session)) | SessionState::Replaced { session, .. } => {
                *session = Rc::new(updated);
            }
            SessionState::Unresolved
            | SessionState::Resolved(None)
            | SessionState::Ended
            | SessionState::BearerRejected
            | SessionState::StoreFailed => {}
        }
    }

    pub(crate) async fn revoke_others(&self) -> Result<usize, Error> {
        self.unchanged_since_failure()?;
        let active = self.require().await?;
        not_impersonating(&active)?;
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
        not_impersonating(&active)?;
        let record = &active.record;
        self.engine
            .credentials_changed(record.user_id(), version, Some(record.id()))
            .await
    }

    pub(crate) async fn revoke_all(&self) -> Result<usize, Error> {
        self.unchanged_since_failure()?;
        let active = self.require().await?;
        not_impersonating(&active)?;
        let revoked = self
            .engine
            .revoke_all(active.record.user_id(), RevokedBy::User)
            .await?;
        self.forget_session();
        Ok(revoked)
    }
}

/// Refuses an account change from a session an admin impersonates the user through: `403
/// impersonating`, logged. The second factor's and the passkeys' entry points check it too.
pub(crate) fn not_impersonating(active: &ActiveSession) -> Result<(), Error> {
    match active.record.impersonated_by() {
        Some(by) => {
            tracing::warn!(
                user_id = active.record.user_id(),
                by,
                "account change refused while impersonating"
            );
            Err(Error::Impersonating)
        }
        None => Ok(()),
    }
}

/// The error for anything a request tries after the store failed to resolve its session: the
/// middleware answers `503` in any case, and one failed lookup is enough to know the outcome.
fn store_failed_earlier() -> Error {
    StoreError::unavailable("the session store failed earlier in this request").into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::SessionRules;
    use crate::store::memory::MemoryStore;

    fn run<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a test runtime")
            .block_on(future)
    }

    fn grant(user_id: &str, bearer: bool) -> Grant {
        Grant {
            user_id: user_id.to_owned(),
            user: RawValue::from_string(format!(r#"{{"name":"{user_id}"}}"#)).unwrap(),
            roles: Vec::new(),
            ip: None,
            user_agent: None,
            credentials: None,
            remember: false,
            bearer,
            method: crate::engine::events::LoginMethod::default(),
            new_device: false,
            factors: crate::record::Factors::Password,
        }
    }

    fn engine() -> SessionEngine {
        SessionEngine::new(MemoryStore::new(), SessionRules::default())
    }

    async fn cookie_request(engine: &SessionEngine, provenance: Provenance) -> RequestSession {
        let issued = engine.login(None, None, grant("7", false), false).await;
        let token = issued.result.unwrap().token;
        RequestSession::new(
            Rc::new(engine.clone()),
            Presented::Token(token),
            provenance,
            None,
        )
    }

    fn issued_token(update: CookieUpdate) -> Option<SessionToken> {
        match update {
            CookieUpdate::Issue { token, .. } => Some(token),
            CookieUpdate::Keep | CookieUpdate::Remove => None,
        }
    }

    #[test]
    fn a_rejected_bearer_token_stays_rejected_whatever_the_handler_does_next() {
        run(async {
            let unknown = SessionToken::generate().unwrap();
            let request = RequestSession::new(
                Rc::new(engine()),
                Presented::Bearer(unknown),
                Provenance::SameOrigin,
                None,
            );
            assert!(request.resolve_any().await.unwrap().is_none());
            assert!(request.bearer_rejected());
            // Logging out reaches the store and ends nothing; the answer must still be 401.
            request.logout().await.unwrap();
            assert!(request.bearer_rejected(), "a logout undid the 401");
            assert!(request.resolve_any().await.unwrap().is_none());
        });
    }

    #[test]
    fn the_cookie_follows_the_session_through_logout_and_a_new_login() {
        run(async {
            let engine = engine();
            let request = cookie_request(&engine, Provenance::SameOrigin).await;
            assert!(request.require().await.is_ok());
            assert!(matches!(request.cookie_update(), CookieUpdate::Keep));

            request.logout().await.unwrap();
            assert!(request.resolve_any().await.unwrap().is_none());
            assert!(request.csrf_token().is_none());
            assert!(matches!(request.cookie_update(), CookieUpdate::Remove));
            assert!(request.personal());

            request.login(grant("8", false), false).await.unwrap();
            let session = request.require().await.unwrap();
            assert_eq!(session.record.user_id(), "8");
            let token = issued_token(request.cookie_update()).expect("the new session's cookie");
            assert_eq!(token.key(), session.key);
            assert_eq!(request.csrf_token(), Some(csrf::synchronizer_token(&token)));
        });
    }

    #[test]
    fn a_cross_site_request_never_changes_the_cookie() {
        run(async {
            let engine = engine();
            let request = cookie_request(&engine, Provenance::CrossSite).await;
            request.logout().await.unwrap();
            assert!(request.resolve_any().await.unwrap().is_none());
            assert!(matches!(request.cookie_update(), CookieUpdate::Keep));
        });
    }
}
