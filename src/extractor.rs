//! The extractors handlers take: [`AuthUser`] for the logged-in user, [`Session`] to log in and
//! out.

use std::future::{ready, Ready};
use std::ops::Deref;
use std::rc::Rc;
use std::time::SystemTime;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage as _, HttpRequest};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::context::{ActiveSession, SessionContext};
use crate::Error;

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
/// For routes that also serve anonymous visitors, take `Option<AuthUser<U>>`: it is `None`
/// without a session. A store failure still ends in `503`, never in an anonymous response.
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
/// async fn home(user: Option<AuthUser<Profile>>) -> String {
///     match user {
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

impl<U: DeserializeOwned + 'static> FromRequest for AuthUser<U> {
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let context = context(req);
        Box::pin(async move {
            let session = context?.resolve().await?.ok_or(Error::Unauthenticated)?;
            match serde_json::from_str(session.record.user().get()) {
                Ok(user) => Ok(AuthUser { user, session }),
                Err(err) => {
                    // Usually a profile type that changed since the session was created; a new
                    // login stores the new shape.
                    tracing::warn!(
                        session = session.key.short(),
                        error = %err,
                        "stored profile does not match the requested type; treating as logged out"
                    );
                    Err(Error::Unauthenticated)
                }
            }
        })
    }
}

/// Logs the client in and out.
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
pub struct Session(Rc<SessionContext>);

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Session(..)")
    }
}

impl Session {
    /// Starts a session for `user_id`, storing `user` as the profile that [`AuthUser`] returns.
    ///
    /// Call it only after the credentials were verified. Keep the profile small and free of
    /// secrets (never a password hash): it lives in the store for the whole session. The response
    /// carries the new cookie.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails (the client then holds no session at all);
    /// [`Error::Profile`] if `user` cannot be serialised.
    pub async fn login<U: Serialize + ?Sized>(
        &self,
        user_id: impl Into<String>,
        user: &U,
    ) -> Result<(), Error> {
        let user = serde_json::value::to_raw_value(user).map_err(Error::Profile)?;
        self.0.login(user_id.into(), user).await
    }

    /// Ends the client's session: deletes it from the store and sends a cookie that clears it.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails; the session may then still be live.
    pub async fn logout(&self) -> Result<(), Error> {
        self.0.logout().await
    }
}

impl FromRequest for Session {
    type Error = Error;
    type Future = Ready<Result<Self, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(context(req).map(Session))
    }
}
