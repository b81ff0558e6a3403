//! [`Session`]: the extractor that changes the client's session.

use std::future::{ready, Ready};
use std::rc::Rc;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage as _, HttpRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::extractor::request_session;
use super::login::Login;
use super::request::RequestSession;
use crate::engine::events::{ActivityEntry, DeviceCheck};
use crate::engine::{CredentialsVersion, Grant, IssuedToken, PersonalToken, Reauth, SessionInfo};
use crate::error::Error;
use crate::record::{DataChange, SessionData};

/// The longest `User-Agent` kept in a session record; enough to tell browsers apart, short
/// enough that a hostile header cannot bloat the store.
const MAX_USER_AGENT: usize = 256;

/// Logs the client in and out, rotates its token, and manages its user's sessions.
///
/// Login always starts a brand-new session with a new token and ends the session the client came
/// with, if any. Logout deletes the session from the store before the response is sent and tells
/// the browser to drop the cookie. Both take effect at once, on every app instance that shares
/// the store.
///
/// ```
/// use actix_web::{web, HttpResponse};
/// use actix_login::{AuthUser, Session};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Profile { id: u64, name: String }
///
/// async fn login(session: Session) -> Result<HttpResponse, actix_login::Error> {
///     // ... check the credentials first ...
///     let profile = Profile { id: 1, name: "alice".into() };
///     session.login(profile.id.to_string(), &profile).await?;
///     Ok(HttpResponse::Ok().json(profile))
/// }
///
/// async fn logout(_user: AuthUser<Profile>, session: Session) -> Result<HttpResponse, actix_login::Error> {
///     session.logout().await?;
///     Ok(HttpResponse::NoContent().finish())
/// }
/// ```
///
/// # In your own middleware
///
/// A `Session` keeps a handle on the request, and Actix Web panics when a request's routing
/// finds another handle alive. In a `from_fn` middleware, do not hold a `Session` across
/// `next.call(req)`: extract it afterwards from the response's request
/// (`Session::extract(res.request())`), or drop it before calling on.
pub struct Session {
    state: Rc<RequestSession>,
    request: HttpRequest,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Session(..)")
    }
}

impl Session {
    /// Starts a session for `user_id`, storing `user` as the profile that [`AuthUser`](crate::AuthUser) returns.
    ///
    /// Call it only after the credentials were verified. Keep the profile small and free of
    /// secrets (never a password hash): it lives in the store for the whole session. The record
    /// also notes the client's IP address and `User-Agent`, for [`list_sessions`](Self::list_sessions).
    /// The response carries the new cookie.
    ///
    /// # Errors
    /// [`Error::CrossSiteRequest`] (403) if the browser says the login comes from another site;
    /// [`Error::LoginSuperseded`] (409) if racing logins of the same user past the
    /// [session cap](crate::LoginMiddlewareBuilder::max_sessions_per_user) ended the new
    /// session before the login finished (no cookie is set);
    /// [`Error::Store`] if the store fails (the session the client came with may then survive,
    /// but no new one exists); [`Error::Profile`] if `user` cannot be serialised.
    pub async fn login<U: Serialize + ?Sized>(
        &self,
        user_id: impl Into<String>,
        user: &U,
    ) -> Result<(), Error> {
        self.login_with_roles(user_id, user, Vec::<String>::new())
            .await
    }

    /// [`login`](Self::login), granting `roles` for [`Require::role`](crate::Require::role).
    ///
    /// # Errors
    /// As for [`login`](Self::login).
    pub async fn login_with_roles<U: Serialize + ?Sized>(
        &self,
        user_id: impl Into<String>,
        user: &U,
        roles: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<(), Error> {
        self.login_with(Login::new(user_id, user).roles(roles))
            .await
    }

    /// Carries out `login`: [`login`](Self::login) with roles and the version of the
    /// credentials that were verified (see [`Login`]).
    ///
    /// # Errors
    /// As for [`login`](Self::login); also [`Error::Unauthenticated`] if the credentials the
    /// login names were replaced while it ran.
    ///
    /// A request that carries a bearer token gets [`Error::InvalidInput`]: its response never
    /// carries a cookie. Use [`login_bearer`](Self::login_bearer) for such clients.
    pub async fn login_with(&self, login: Login) -> Result<(), Error> {
        let keep_data = login.keep_data;
        let grant = self.grant(login, false)?;
        self.state.login(grant, keep_data).await
    }

    /// Carries out `login` for a client that sends `Authorization: Bearer` instead of cookies,
    /// such as a mobile or command-line app: the token comes back for the response body, and
    /// no cookie is set. The session follows the same rules as a cookie login (timeouts,
    /// [remember](Login::remember), listing, revocation); the session the client came with, if
    /// any, is left alone, and no data is carried over.
    ///
    /// ```
    /// use actix_web::HttpResponse;
    /// use actix_login::{Login, Session};
    /// # #[derive(serde::Serialize)] struct Profile { id: u64 }
    ///
    /// async fn token_login(session: Session) -> Result<HttpResponse, actix_login::Error> {
    ///     // ... check the credentials first ...
    ///     let issued = session.login_bearer(Login::new("1", &Profile { id: 1 })).await?;
    ///     Ok(HttpResponse::Ok().json(issued)) // {"id":"…","token":"…","expires_at":…}
    /// }
    /// ```
    ///
    /// # Errors
    /// As for [`login_with`](Self::login_with), except that a bearer request may log in.
    pub async fn login_bearer(&self, login: Login) -> Result<IssuedToken, Error> {
        let grant = self.grant(login, true)?;
        let issued = self.state.login_bearer(grant).await?;
        Ok(IssuedToken::new(&issued, true))
    }

    /// Creates a personal access token for the logged-in user: a bearer session with the
    /// user's profile and roles, listed among their sessions under its name, ended like them
    /// (by [`revoke_session`](Self::revoke_session), [`revoke_other_sessions`](Self::revoke_other_sessions),
    /// a [password change](Self::credentials_changed) or "log out everywhere"), and otherwise
    /// lasting until its [end](PersonalToken::expires_in), if it has one. It has no idle
    /// timeout, and is never *fresh* for [`Require::fresh`](crate::Require::fresh): no password
    /// was entered in it. Return [`IssuedToken::token`] to the user once; only a hash is kept.
    ///
    /// Creating a token is an account change, checked here whatever guards the route: the
    /// session must be a login whose password was entered within the
    /// [fresh window](crate::LoginMiddlewareBuilder::fresh_window), so a personal access token
    /// never creates tokens. A login token (from [`login_bearer`](Self::login_bearer)) may, and
    /// what it creates ends when it ends (logout, revocation, expiry, a password change) and
    /// never after it; a browser session's tokens outlive it. Each user may hold
    /// [`max_tokens_per_user`](crate::LoginMiddlewareBuilder::max_tokens_per_user) tokens and
    /// create [a limited number](crate::LoginMiddlewareBuilder::token_creation_limit) per
    /// hour; tokens do not count toward the session cap. The token is listed with the address
    /// and `User-Agent` of the client that created it.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] without a live login, or if it ended meanwhile;
    /// [`Error::InvalidInput`] for a name, end or scope list out of bounds;
    /// [`Error::ReauthRequired`] (403) from a session outside the fresh window or a personal
    /// access token; [`Error::TooManyTokens`] (409) at the per-user limit;
    /// [`Error::TokenRateLimited`] (429) past the creation rate; [`Error::Store`] if the store
    /// fails, or keeps no counters.
    pub async fn create_token(&self, token: PersonalToken) -> Result<IssuedToken, Error> {
        self.state.create_token(token, self.user_agent()).await
    }

    fn grant(&self, login: Login, bearer: bool) -> Result<Grant, Error> {
        let user_id = login.user_id;
        Ok(Grant {
            user_id: user_id.clone(),
            user: login.user.map_err(Error::Profile)?,
            roles: login.roles,
            ip: self.state.client_ip().map(|ip| ip.to_string()),
            user_agent: self.user_agent(),
            credentials: login.credentials,
            remember: login.remember,
            bearer,
            method: login.method,
            new_device: self
                .request
                .extensions()
                .get::<DeviceCheck>()
                .is_some_and(|check| !check.known && check.account == user_id),
            factors: login.factors,
        })
    }

    /// Records that the logged-in user's password just changed to the credentials `version`
    /// (see [`Login::credentials_version`]) and ends every other session of the user, including
    /// any that a login which verified the old password completes later. Call it after storing
    /// the new password hash; then [`reauthenticate`](Self::reauthenticate) to give this
    /// session a new token too. Returns how many sessions ended.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] without a live session; [`Error::Store`] if the store fails,
    /// or keeps no credentials versions.
    pub async fn credentials_changed(&self, version: impl AsRef<[u8]>) -> Result<usize, Error> {
        self.state
            .credentials_changed(&CredentialsVersion::of(version.as_ref()))
            .await
    }

    /// Lets the logged-in admin act as the user `login` names: a new session of that user
    /// replaces the admin's in this browser, and records who impersonates
    /// ([`AuthUser::impersonated_by`](crate::AuthUser::impersonated_by), and the session
    /// list's `impersonated_by`). Through it, account changes are refused with
    /// `403 {"error":"impersonating"}`: [`credentials_changed`](Self::credentials_changed),
    /// [`create_token`](Self::create_token), revoking any session but its own, every
    /// [`Require::fresh`](crate::Require::fresh) route, and, whatever guards their routes,
    /// the second factor's set-up ([`TwoFactor`](crate::two_factor)'s `enrol`, `confirm`,
    /// `regenerate_recovery_codes` and `trust_browser`) and passkey registration. The
    /// admin's own session stays live; [`stop_impersonating`](Self::stop_impersonating)
    /// returns to it. Both users' [activity logs](crate::Sessions::activity) show the start
    /// and the end, and subscribers get
    /// [`ImpersonationStarted`](crate::events::EventKind::ImpersonationStarted) and
    /// [`ImpersonationEnded`](crate::events::EventKind::ImpersonationEnded).
    ///
    /// Guard the route: who may impersonate is the app's rule (a role, say, with
    /// [`Require::role`](crate::Require::role)); this checks only that the admin's password was
    /// entered within the [fresh window](crate::LoginMiddlewareBuilder::fresh_window). The
    /// impersonation lasts the normal [timeouts](crate::LoginMiddlewareBuilder::timeouts), and
    /// never past the admin's own session.
    ///
    /// ```
    /// use actix_login::{AuthUser, Login, Session};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Profile { id: u64 }
    ///
    /// async fn impersonate(admin: AuthUser<Profile>, session: Session) -> Result<(), actix_login::Error> {
    ///     // ... the route requires the admin role; look the target user up ...
    ///     session.impersonate(Login::new("42", &Profile { id: 42 })).await
    /// }
    /// ```
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] without a live login; [`Error::ReauthRequired`] outside the
    /// fresh window; [`Error::Impersonating`] from a session that impersonates already;
    /// [`Error::InvalidInput`] for the admin themself, or on a bearer request; [`Error::Store`]
    /// if the store fails.
    pub async fn impersonate(&self, login: Login) -> Result<(), Error> {
        let grant = self.grant(login, false)?;
        self.state.impersonate(grant).await
    }

    /// Ends the impersonation this session is, and resumes the admin's own session under a new
    /// token. Returns `false` if the admin's session ended meanwhile: the browser then has no
    /// session.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] without a live session; [`Error::InvalidInput`] if nobody
    /// impersonates in it, or on a bearer request; [`Error::Store`] if the store fails.
    pub async fn stop_impersonating(&self) -> Result<bool, Error> {
        self.state.stop_impersonating().await
    }

    /// Ends the client's session: deletes it from the store and sends a cookie that clears it.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails; the session may then still be live.
    pub async fn logout(&self) -> Result<(), Error> {
        self.state.logout().await
    }

    /// Gives the current session a new token and kills the old one at once, keeping everything
    /// else. For privilege changes: the token a thief may have copied stops working.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] without a live session; [`Error::InvalidInput`] on a bearer
    /// request (its client could not learn the new token); [`Error::Store`] if the store fails.
    pub async fn renew(&self) -> Result<(), Error> {
        self.state.rotate(Reauth::None).await
    }

    /// Notes that the user has just entered their password again, which makes the session
    /// fresh for [`Require::fresh`](crate::Require::fresh), and rotates its token.
    ///
    /// Call it only after verifying the password. On an account with a
    /// [second factor](crate::two_factor) (a login that went through one, or skipped it on a
    /// trusted browser), the password alone no longer satisfies `Require::fresh`: verify a code
    /// too and call [`complete_second_factor`](Self::complete_second_factor).
    ///
    /// # Errors
    /// As for [`renew`](Self::renew).
    pub async fn reauthenticate(&self) -> Result<(), Error> {
        self.state.rotate(Reauth::Password).await
    }

    /// As [`reauthenticate`](Self::reauthenticate), for a passkey just verified: a passkey
    /// (with user verification) proves both factors, so on an account with a second factor
    /// the session is fresh for [`Require::fresh`](crate::Require::fresh) without a code.
    #[cfg(feature = "passkeys")]
    pub(crate) async fn reauthenticate_with_passkey(&self) -> Result<(), Error> {
        self.state.rotate(Reauth::Passkey).await
    }

    /// The user id of the client's session if its password was verified and its
    /// [second factor](crate::two_factor) is still due
    /// ([`SecondFactor::Due`](crate::two_factor::SecondFactor::Due)); `None` for any other
    /// session, or none. The second-factor step of a login looks the account up by it.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub async fn pending_second_factor(&self) -> Result<Option<String>, Error> {
        Ok(self
            .state
            .pending_second_factor()
            .await?
            .map(|active| active.record.user_id().to_owned()))
    }

    /// Notes that the client's second factor was just verified (call it only then). A session
    /// whose second factor was [due](crate::two_factor::SecondFactor::Due) becomes a login, as
    /// a password login would make it: a new token and cookie, the normal or
    /// [remembered](Login::remember) lifetime from now, the
    /// [per-user cap](crate::LoginMiddlewareBuilder::max_sessions_per_user), its data kept. A
    /// session that was a login already gets a new token and counts as proven by both
    /// factors, which [`Require::fresh`](crate::Require::fresh) asks of an account with a
    /// second factor, together with a password entered within the fresh window.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] without a session of a user, or if it ended meanwhile (its
    /// [second-factor timeout](crate::LoginMiddlewareBuilder::second_factor_timeout) passed, a
    /// password change revoked it, a racing request completed it first);
    /// [`Error::CrossSiteRequest`] for a request from another site; [`Error::InvalidInput`] on
    /// a bearer request; [`Error::LoginSuperseded`] if racing logins pushed the new session
    /// past the cap; [`Error::Store`] if the store fails.
    ///
    /// For sudo mode on an account with a second factor, ask for the password first
    /// ([`reauthenticate`](Self::reauthenticate), which drops an earlier second factor), then
    /// a code (this), within the fresh window: a code proves the second factor, never the
    /// password.
    pub async fn complete_second_factor(&self) -> Result<(), Error> {
        self.state.complete_second_factor().await
    }

    /// The live sessions of the logged-in user, most recently used first, with this one marked
    /// `current`.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] without a live session; [`Error::Store`] if the store fails.
    pub async fn list_sessions(&self) -> Result<Vec<SessionInfo>, Error> {
        self.state.list().await
    }

    /// Ends the logged-in user's session with public id `session_id`. Returns `false` if the
    /// user has no such session; other users' sessions are out of reach.
    ///
    /// # Errors
    /// As for [`list_sessions`](Self::list_sessions).
    pub async fn revoke_session(&self, session_id: &str) -> Result<bool, Error> {
        self.state.revoke(session_id).await
    }

    /// The logged-in user's activity log, newest first: see
    /// [`Sessions::activity`](crate::Sessions::activity).
    ///
    /// # Errors
    /// As for [`list_sessions`](Self::list_sessions).
    pub async fn activity(
        &self,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ActivityEntry>, Error> {
        let active = self.state.require().await?;
        self.state
            .engine()
            .activity(active.record.user_id(), before, limit)
            .await
    }

    /// Ends every session of the logged-in user except this one: after a password change, or
    /// when the user sees a session they do not recognise. Returns how many ended.
    ///
    /// # Errors
    /// As for [`list_sessions`](Self::list_sessions).
    pub async fn revoke_other_sessions(&self) -> Result<usize, Error> {
        self.state.revoke_others().await
    }

    /// Ends every session of the logged-in user, this one included ("log out everywhere"), and
    /// clears the cookie. Returns how many ended.
    ///
    /// # Errors
    /// As for [`list_sessions`](Self::list_sessions).
    pub async fn revoke_all_sessions(&self) -> Result<usize, Error> {
        self.state.revoke_all().await
    }

    /// The value stored under `name` in the session's data, decoded as `T`; `None` if there is
    /// none, or no session.
    ///
    /// Taking `Session` as a handler argument asks for the data to come with the session's
    /// lookup (the one store round trip that finds the session; on Redis, data up to 4 KiB),
    /// so reads usually cost nothing of their own; larger data is loaded on the first read,
    /// with one round trip. Later reads in the same request cost nothing. A visitor without a
    /// session costs no store command and gets no cookie.
    ///
    /// # Errors
    /// [`Error::SessionData`] if the stored value is not a `T`; [`Error::Store`] if the store
    /// fails.
    pub async fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, Error> {
        self.state
            .data_value(name, |json| serde_json::from_str::<T>(json))
            .await?
            .transpose()
            .map_err(|source| data_error(name, source))
    }

    /// Whether the session's data has a value under `name`.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub async fn contains_key(&self, name: &str) -> Result<bool, Error> {
        Ok(self.state.data_value(name, |_| ()).await?.is_some())
    }

    /// Every value of the session's data, as JSON text by name.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails.
    pub async fn entries(&self) -> Result<SessionData, Error> {
        self.state.data_entries().await
    }

    /// Stores `value`, as JSON, under `name` in the session's data, replacing what was there.
    ///
    /// The write goes to the store at once, in one round trip, and changes only `name`:
    /// concurrent requests writing other names lose nothing. A visitor without a session gets an
    /// anonymous one, and the response sets its cookie; it is not a login ([`AuthUser`] still
    /// answers `401`), has its own, shorter [timeouts](crate::LoginMiddlewareBuilder::anonymous_timeouts),
    /// and counts against the [bounds on new anonymous sessions](crate::LoginMiddlewareBuilder::anonymous_sessions_per_minute).
    /// A later [`login`](Self::login) keeps the data, unless told otherwise with
    /// [`Login::keep_data`].
    ///
    /// # Errors
    /// - [`Error::SessionDataTooLarge`] (413) if the data would grow past the
    ///   [limit](crate::LoginMiddlewareBuilder::max_data_size); nothing is written.
    /// - [`Error::SessionChanged`] (409) if a concurrent request ended the session or moved it
    ///   to a new token; nothing is written, and the session is not brought back.
    /// - [`Error::TooManySessions`] (429) if a new anonymous session would pass its bounds.
    /// - [`Error::SessionData`] if `value` cannot be serialised; [`Error::Store`] if the store
    ///   fails.
    ///
    /// [`AuthUser`]: crate::AuthUser
    pub async fn insert<T: Serialize>(
        &self,
        name: impl Into<String>,
        value: T,
    ) -> Result<(), Error> {
        let name = name.into();
        let json = serde_json::to_string(&value).map_err(|source| data_error(&name, source))?;
        self.state
            .write_data(&[DataChange::Insert { name, json }])
            .await?;
        Ok(())
    }

    /// Removes `name` from the session's data, returning the JSON text it held.
    ///
    /// # Errors
    /// As for [`insert`](Self::insert), except that a removal never starts a session.
    pub async fn remove(&self, name: &str) -> Result<Option<String>, Error> {
        let previous = self
            .state
            .write_data(&[DataChange::Remove {
                name: name.to_owned(),
            }])
            .await?;
        Ok(previous.into_iter().next().flatten())
    }

    /// Removes `name` from the session's data, returning the value it held decoded as `T`.
    ///
    /// # Errors
    /// As for [`remove`](Self::remove); [`Error::SessionData`] if the value was not a `T` (it
    /// is removed all the same).
    pub async fn remove_as<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, Error> {
        match self.remove(name).await? {
            Some(json) => serde_json::from_str(&json)
                .map(Some)
                .map_err(|source| data_error(name, source)),
            None => Ok(None),
        }
    }

    /// Removes every value of the session's data. The session itself, and a login, stay.
    ///
    /// # Errors
    /// As for [`remove`](Self::remove).
    pub async fn clear(&self) -> Result<(), Error> {
        self.state.write_data(&[DataChange::Clear]).await?;
        Ok(())
    }

    /// Applies several changes to the session's data in one atomic write (one round trip),
    /// returning the JSON text each change replaced or removed.
    ///
    /// # Errors
    /// As for [`insert`](Self::insert).
    pub async fn apply(&self, changes: &[DataChange]) -> Result<Vec<Option<String>>, Error> {
        self.state.write_data(changes).await
    }

    /// Replaces the profile of the logged-in session, keeping its roles: what [`AuthUser`]
    /// returns from now on, in this request and the next ones. Other sessions of the user keep
    /// theirs; [`Sessions::update_user`](crate::Sessions::update_user) changes them all.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] without a logged-in session; [`Error::SessionChanged`] if it
    /// ended meanwhile; [`Error::Profile`] if `user` cannot be serialised; [`Error::Store`] if
    /// the store fails.
    ///
    /// [`AuthUser`]: crate::AuthUser
    pub async fn update_profile<U: Serialize + ?Sized>(&self, user: &U) -> Result<(), Error> {
        let user = serde_json::value::to_raw_value(user).map_err(Error::Profile)?;
        self.state.update_profile(&user).await
    }

    /// The session's synchronizer token, for a hidden `csrf_token` field in HTML forms (or an
    /// `X-CSRF-Token` header), or `None` without a session cookie.
    ///
    /// Browsers that send `Sec-Fetch-Site` or `Origin` (all current ones) are checked through
    /// those headers and need no token. A request with the session cookie and neither header,
    /// from an old browser or a script, must carry this token unless its body type needs a CORS
    /// preflight (`application/json`), or it is refused with `403 {"error":"csrf_rejected"}`. The form field is looked for in
    /// `application/x-www-form-urlencoded` bodies up to 64 KiB; multipart forms and larger
    /// bodies must send the header. The token is derived from the session token, so it changes
    /// at login and rotation and needs no storage.
    pub fn csrf_token(&self) -> Option<String> {
        self.state.csrf_token()
    }

    /// Refuses an account change from a session an admin
    /// [impersonates](Self::impersonate) the user through (`403 impersonating`); anything
    /// else, a visitor too, passes here. For the passkey ceremonies, outside a `Require` guard.
    #[cfg(feature = "passkeys")]
    pub(crate) async fn not_impersonating(&self) -> Result<(), Error> {
        match self.state.resolve().await? {
            Some(active) => super::request::not_impersonating(&active),
            None => Ok(()),
        }
    }

    /// The logged-in user's id, and whether the session is fresh as
    /// [`Require::fresh`](crate::Require::fresh) asks (`Err` with its refusal if not); `None`
    /// without a login. For the passkey ceremonies, which need both outside a `Require` guard.
    #[cfg(feature = "passkeys")]
    pub(crate) async fn user_and_freshness(
        &self,
    ) -> Result<Option<(String, Result<(), Error>)>, Error> {
        let Some(active) = self.state.resolve().await? else {
            return Ok(None);
        };
        let fresh = self
            .state
            .engine()
            .rules()
            .check_fresh(&active.record, std::time::SystemTime::now());
        Ok(Some((active.record.user_id().to_owned(), fresh)))
    }

    fn user_agent(&self) -> Option<String> {
        user_agent_of(&self.request)
    }
}

/// The request's `User-Agent`, cut to [`MAX_USER_AGENT`] bytes, as records and events keep it.
pub(crate) fn user_agent_of(request: &HttpRequest) -> Option<String> {
    let header = request.headers().get(actix_web::http::header::USER_AGENT)?;
    let text = String::from_utf8_lossy(header.as_bytes());
    let mut end = text.len().min(MAX_USER_AGENT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Some(text[..end].to_owned())
}

fn data_error(name: &str, source: serde_json::Error) -> Error {
    Error::SessionData {
        name: name.to_owned(),
        source,
    }
}

impl FromRequest for Session {
    type Error = Error;
    type Future = Ready<Result<Self, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(request_session(req).map(|state| {
            // A handler that takes the session may read its data: read it with the record.
            state.expect_data_reads();
            Session {
                state,
                request: req.clone(),
            }
        }))
    }
}
