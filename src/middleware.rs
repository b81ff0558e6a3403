//! The middleware: reads the session cookie on the way in, writes cookie changes on the way out.

use std::future::{ready, Ready};
use std::rc::Rc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{HeaderValue, CACHE_CONTROL};
use actix_web::http::StatusCode;
use actix_web::HttpMessage as _;
use futures_util::future::LocalBoxFuture;

use crate::config::LoginMiddlewareBuilder;
use crate::context::{CookieUpdate, SessionContext};
use crate::error::json_error;
use crate::sessions::Sessions;
use crate::store::SessionStore;

/// Resolves session cookies to logged-in users. Wrap your `App` (or a scope) with it.
///
/// The middleware itself does no I/O: it checks the cookie's shape and leaves the store lookup
/// to the first extractor that needs it, so requests that never ask for the user cost nothing.
/// On the way out it adds the `Set-Cookie` for a login or logout (with
/// `Cache-Control: no-store`), and answers `503` for any request whose session could not be
/// resolved because the store failed.
///
/// Cheap to clone: every clone and every worker shares one store and one configuration.
///
/// ```
/// use actix_web::App;
/// use actix_login::{LoginMiddleware, MemoryStore};
///
/// let store = MemoryStore::new();
/// let app = App::new().wrap(LoginMiddleware::new(store));
/// ```
#[derive(Clone)]
pub struct LoginMiddleware {
    sessions: Sessions,
}

impl std::fmt::Debug for LoginMiddleware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginMiddleware")
            .field("config", &self.sessions.config)
            .finish_non_exhaustive()
    }
}

impl LoginMiddleware {
    /// A middleware with the default settings: 30-minute idle timeout, 12-hour absolute
    /// lifetime, cookie `__Host-id` with `Secure; HttpOnly; SameSite=Lax; Path=/`.
    pub fn new(store: impl SessionStore) -> Self {
        Self::builder(store).build()
    }

    /// Starts configuring a middleware that keeps sessions in `store`.
    pub fn builder(store: impl SessionStore) -> LoginMiddlewareBuilder {
        LoginMiddlewareBuilder::new(store)
    }

    /// A handle on every user's sessions through this middleware's store, for use outside
    /// requests (an admin task, an account being disabled).
    pub fn sessions(&self) -> Sessions {
        self.sessions.clone()
    }

    pub(crate) fn from_parts(sessions: Sessions) -> Self {
        Self { sessions }
    }
}

impl<S, B> Transform<S, ServiceRequest> for LoginMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = LoginService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(LoginService {
            service: Rc::new(service),
            sessions: Rc::new(self.sessions.clone()),
        }))
    }
}

/// The per-worker service built by [`LoginMiddleware`].
#[doc(hidden)]
pub struct LoginService<S> {
    service: Rc<S>,
    sessions: Rc<Sessions>,
}

impl<S, B> Service<ServiceRequest> for LoginService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let presented = self.sessions.config.cookie.read(req.headers());
        let context = Rc::new(SessionContext::new(Rc::clone(&self.sessions), presented));
        req.extensions_mut().insert(Rc::clone(&context));
        let response = self.service.call(req);
        Box::pin(async move { Ok(finish(response.await?, &context)) })
    }
}

fn finish<B>(res: ServiceResponse<B>, context: &SessionContext) -> ServiceResponse<EitherBody<B>> {
    if context.store_failed() {
        let unavailable = json_error(StatusCode::SERVICE_UNAVAILABLE, "service unavailable");
        return res.into_response(unavailable).map_into_right_body();
    }
    let mut res = res.map_into_left_body();
    let cookie = match context.take_cookie_update() {
        CookieUpdate::Keep => {
            if context.authenticated() && !res.headers().contains_key(CACHE_CONTROL) {
                no_store(&mut res);
            }
            return res;
        }
        CookieUpdate::Issue(token) => context.config().cookie.issue(&token).to_string(),
        CookieUpdate::Remove => context.config().cookie.removal().to_string(),
    };
    match HeaderValue::from_str(&cookie) {
        Ok(value) => {
            res.headers_mut()
                .append(actix_web::http::header::SET_COOKIE, value);
            // A cached copy of this response would hand the token to the next user of the cache.
            no_store(&mut res);
            res
        }
        Err(_) => {
            // Unreachable with tokens and names this crate accepts; never send a half response.
            tracing::error!("session cookie is not a valid header value; check the cookie name");
            let failed = json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
            res.into_response(failed).map_into_right_body()
        }
    }
}

fn no_store<B>(res: &mut ServiceResponse<B>) {
    res.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
}
