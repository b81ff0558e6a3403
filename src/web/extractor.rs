//! The extractors that read the user: [`AuthUser`] (or [`MaybeUser`]) for the logged-in user,
//! and [`Sessions`] for any user's sessions. [`Session`](crate::Session), which changes them,
//! lives in `session.rs`.

use std::future::{ready, Ready};
use std::ops::Deref;
use std::rc::Rc;
use std::time::SystemTime;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage as _, HttpRequest};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;

use super::request::RequestSession;
use crate::engine::{ActiveSession, OneTimeLinks, Sessions};
use crate::error::Error;

/// The request's session state, as the middleware left it.
pub(crate) fn request_session(req: &HttpRequest) -> Result<Rc<RequestSession>, Error> {
    RequestSession::of(&req.extensions(), req.path())
}

/// The logged-in user, as the profile `U` stored at [`Session::login`](crate::Session::login).
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

    /// The public id of this session, as listed by [`Session::list_sessions`](crate::Session::list_sessions).
    pub fn session_id(&self) -> &str {
        self.session.record.id()
    }

    /// The user id of the admin who acts as this user, if this session is an
    /// [impersonation](crate::Session::impersonate).
    pub fn impersonated_by(&self) -> Option<&str> {
        self.session.record.impersonated_by()
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

    /// Whether the request came with `Authorization: Bearer` (a login token or a personal
    /// access token) rather than the session cookie.
    pub fn is_bearer(&self) -> bool {
        self.session.record.is_bearer()
    }

    /// Whether the login asked to be remembered ("keep me signed in").
    pub fn is_remembered(&self) -> bool {
        self.session.record.is_remembered()
    }

    /// The name of the personal access token the request came with, if it did.
    pub fn token_name(&self) -> Option<&str> {
        self.session.record.token_name()
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
        let state = request_session(req);
        Box::pin(async move { AuthUser::decode(state?.require().await?) })
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
        let state = request_session(req);
        Box::pin(async move {
            let user = match state?.resolve().await? {
                Some(session) => AuthUser::decode(session).ok(),
                None => None,
            };
            Ok(MaybeUser(user))
        })
    }
}

impl FromRequest for Sessions {
    type Error = Error;
    type Future = Ready<Result<Self, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(request_session(req).map(|state| Sessions::new(state.engine().clone())))
    }
}

/// The request's client address (as [`trust_proxies`](crate::LoginMiddlewareBuilder::trust_proxies)
/// resolves it) goes with the handle, so that issued links are counted per client address too.
impl FromRequest for OneTimeLinks {
    type Error = Error;
    type Future = Ready<Result<Self, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            request_session(req)
                .map(|state| OneTimeLinks::new(state.engine().clone(), state.client_ip())),
        )
    }
}
