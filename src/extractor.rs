//! The extractors handlers take: [`AuthUser`] (or [`MaybeUser`]) for the logged-in user,
//! [`Session`] to log in, log out and manage the user's sessions, [`Sessions`] for any user's.

use std::future::{ready, Ready};
use std::ops::Deref;
use std::rc::Rc;
use std::time::SystemTime;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage as _, HttpRequest};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::client::client_address;
use crate::context::{ActiveSession, Grant, SessionContext};
use crate::sessions::{SessionInfo, Sessions};
use crate::Error;

/// The longest `User-Agent` kept in a session record; enough to tell browsers apart, short
/// enough that a hostile header cannot bloat the store.
const MAX_USER_AGENT: usize = 256;

fn context(req: &HttpRequest) -> Result<Rc<SessionContext>, Error> {
    req.extensions()
        .get::<Rc<SessionContext>>()
        .cloned()
        .ok_or_else(|| {
            tracing::error!(
                path = req.path(),
                "actix-login extractor used without LoginMiddleware: wrap the App or scope with LoginMiddleware"
            );
            Error::MissingMiddleware
        })
}

/// The logged-in user, as the profile `U` stored at [`Session::login`].
///
/// Taking `AuthUser<U>` as a handler argument makes the route require login: without a live
/// session the request is answered `401` with `{"error":"unauthenticated"}`, and if the session
/// store is unreachable, `503`. The profile comes from the session record, so no database call is
/// needed to know who is asking.
///
/// The profile is decoded from what was stored at login: if `U` changes shape, sessions from
/// before the change answer `401` (and [`MaybeUser`] is empty) until the user logs in again,
/// though they stay listed until they expire.
///
/// For routes that also serve anonymous visitors, take [`MaybeUser<U>`]: it is empty without a
/// session, and a store failure stops the request with `503` before the handler runs.
/// `Option<AuthUser<U>>` works too, but Actix runs the handler (as anonymous) before the
/// middleware turns the response into a `503`, so use it only in handlers without side effects.
///
/// ```
/// use actix_web::{web, Responder};
/// use actix_login::AuthUser;
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Profile { name: String }
///
/// async fn me(user: AuthUser<Profile>) -> impl Responder {
///     web::Json(user.into_inner())
/// }
///
/// async fn home(user: actix_login::MaybeUser<Profile>) -> String {
///     match user.into_option() {
///         Some(user) => format!("Hello, {}", user.name),
///         None => "Hello, stranger".to_owned(),
///     }
/// }
/// ```
#[derive(Debug)]
pub struct AuthUser<U> {
    user: U,
    session: Rc<ActiveSession>,
}

impl<U> AuthUser<U> {
    /// The profile, by value.
    pub fn into_inner(self) -> U {
        self.user
    }

    /// The user id given at login.
    pub fn user_id(&self) -> &str {
        self.session.record.user_id()
    }

    /// The public id of this session, as listed by [`Session::list_sessions`].
    pub fn session_id(&self) -> &str {
        self.session.record.id()
    }

    /// The roles granted at login.
    pub fn roles(&self) -> &[String] {
        self.session.record.roles()
    }

    /// Whether the session was granted `role` at login.
    pub fn has_role(&self, role: &str) -> bool {
        self.session.record.has_role(role)
    }

    /// When this session was created by a login.
    pub fn logged_in_at(&self) -> SystemTime {
        self.session.record.created_at()
    }

    /// When the user last entered their password in this session.
    pub fn authenticated_at(&self) -> SystemTime {
        self.session.record.authenticated_at()
    }

    /// When the session ends unless there is more activity before then.
    pub fn idle_expires_at(&self) -> SystemTime {
        self.session.expires_at
    }

    /// When the session ends at the latest, however active it is.
    pub fn expires_at(&self) -> SystemTime {
        self.session.record.expires_at()
    }
}

impl<U> Deref for AuthUser<U> {
    type Target = U;

    fn deref(&self) -> &U {
        &self.user
    }
}

impl<U: DeserializeOwned> AuthUser<U> {
    fn decode(session: Rc<ActiveSession>) -> Result<Self, Error> {
        match serde_json::from_str(session.record.user().get()) {
            Ok(user) => Ok(AuthUser { user, session }),
            Err(err) => {
                // Usually a profile type that changed since the session was created; a new login
                // stores the new shape.
                tracing::warn!(
                    session = session.key.short(),
                    error = %err,
                    "stored profile does not match the requested type; treating as logged out"
                );
                Err(Error::Unauthenticated)
            }
        }
    }
}

impl<U: DeserializeOwned + 'static> FromRequest for AuthUser<U> {
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let context = context(req);
        Box::pin(async move {
            let session = context?.resolve().await?.ok_or(Error::Unauthenticated)?;
            AuthUser::decode(session)
        })
    }
}

/// The logged-in user if there is one: for routes that serve anonymous visitors too.
///
/// Unlike `Option<AuthUser<U>>`, a store failure is an error (`503`) before the handler runs, so
/// an outage never turns into anonymous side effects.
#[derive(Debug)]
pub struct MaybeUser<U>(Option<AuthUser<U>>);

impl<U> MaybeUser<U> {
    /// The user, or `None` for an anonymous request.
    pub fn into_option(self) -> Option<AuthUser<U>> {
        self.0
    }
}

impl<U> Deref for MaybeUser<U> {
    type Target = Option<AuthUser<U>>;

    fn deref(&self) -> &Option<AuthUser<U>> {
        &self.0
    }
}

impl<U: DeserializeOwned + 'static> FromRequest for MaybeUser<U> {
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let context = context(req);
        Box::pin(async move {
            let user = match context?.resolve().await? {
                Some(session) => AuthUser::decode(session).ok(),
                None => None,
            };
            Ok(MaybeUser(user))
        })
    }
}

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
pub struct Session {
    context: Rc<SessionContext>,
    request: HttpRequest,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Session(..)")
    }
}

impl Session {
    /// Starts a session for `user_id`, storing `user` as the profile that [`AuthUser`] returns.
    ///
    /// Call it only after the credentials were verified. Keep the profile small and free of
    /// secrets (never a password hash): it lives in the store for the whole session. The record
    /// also notes the client's IP address and `User-Agent`, for [`list_sessions`](Self::list_sessions).
    /// The response carries the new cookie.
    ///
    /// # Errors
    /// [`Error::CrossSiteRequest`] (403) if the browser says the login comes from another site;
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
        let grant = Grant {
            user_id: user_id.into(),
            user: serde_json::value::to_raw_value(user).map_err(Error::Profile)?,
            roles: roles.into_iter().map(Into::into).collect(),
            ip: client_address(&self.request, &self.context.config().proxies)
                .map(|ip| ip.to_string()),
            user_agent: self.user_agent(),
        };
        self.context.login(grant).await
    }

    /// Ends the client's session: deletes it from the store and sends a cookie that clears it.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails; the session may then still be live.
    pub async fn logout(&self) -> Result<(), Error> {
        self.context.logout().await
    }

    /// Gives the current session a new token and kills the old one at once, keeping everything
    /// else. For privilege changes: the token a thief may have copied stops working.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] without a live session; [`Error::Store`] if the store fails.
    pub async fn renew(&self) -> Result<(), Error> {
        self.context.rotate(false).await
    }

    /// Notes that the user has just entered their password again, which makes the session
    /// fresh for [`Require::fresh`](crate::Require::fresh), and rotates its token.
    ///
    /// Call it only after verifying the password.
    ///
    /// # Errors
    /// As for [`renew`](Self::renew).
    pub async fn reauthenticate(&self) -> Result<(), Error> {
        self.context.rotate(true).await
    }

    /// The live sessions of the logged-in user, most recently used first, with this one marked
    /// `current`.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] without a live session; [`Error::Store`] if the store fails.
    pub async fn list_sessions(&self) -> Result<Vec<SessionInfo>, Error> {
        self.context.list().await
    }

    /// Ends the logged-in user's session with public id `session_id`. Returns `false` if the
    /// user has no such session; other users' sessions are out of reach.
    ///
    /// # Errors
    /// As for [`list_sessions`](Self::list_sessions).
    pub async fn revoke_session(&self, session_id: &str) -> Result<bool, Error> {
        let active = self
            .context
            .resolve()
            .await?
            .ok_or(Error::Unauthenticated)?;
        self.context
            .sessions()
            .revoke(active.record.user_id(), session_id)
            .await
    }

    /// Ends every session of the logged-in user except this one: after a password change, or
    /// when the user sees a session they do not recognise. Returns how many ended.
    ///
    /// # Errors
    /// As for [`list_sessions`](Self::list_sessions).
    pub async fn revoke_other_sessions(&self) -> Result<usize, Error> {
        self.context.revoke_others().await
    }

    /// Ends every session of the logged-in user, this one included ("log out everywhere"), and
    /// clears the cookie. Returns how many ended.
    ///
    /// # Errors
    /// As for [`list_sessions`](Self::list_sessions).
    pub async fn revoke_all_sessions(&self) -> Result<usize, Error> {
        self.context.revoke_all().await
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
        self.context.csrf_token()
    }

    fn user_agent(&self) -> Option<String> {
        let header = self
            .request
            .headers()
            .get(actix_web::http::header::USER_AGENT)?;
        let text = String::from_utf8_lossy(header.as_bytes());
        let mut end = text.len().min(MAX_USER_AGENT);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        Some(text[..end].to_owned())
    }
}

impl FromRequest for Session {
    type Error = Error;
    type Future = Ready<Result<Self, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(context(req).map(|context| Session {
            context,
            request: req.clone(),
        }))
    }
}

impl FromRequest for Sessions {
    type Error = Error;
    type Future = Ready<Result<Self, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(context(req).map(|context| context.sessions().clone()))
    }
}
