//! The middleware: reads the session cookie on the way in, writes cookie changes on the way out.

use std::future::{ready, Ready};
use std::rc::Rc;
use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{HeaderValue, CACHE_CONTROL};
use actix_web::http::StatusCode;
use actix_web::{HttpMessage as _, ResponseError as _};
use futures_util::future::LocalBoxFuture;

use super::bearer::{self, BearerHeader};
use super::builder::{LoginMiddlewareBuilder, WebConfig};
use super::client::client_address;
use super::cookie::Presented;
use super::csrf::{self, Provenance};
use super::request::{CookieUpdate, RequestSession};
use super::response::json_error;
use crate::engine::{OneTimeLinks, SessionEngine, Sessions};
use crate::error::Error;
use crate::store::SessionStore;

/// Resolves session cookies, and `Authorization: Bearer` tokens, to logged-in users. Wrap your
/// `App` (or a scope) with it.
///
/// The middleware itself does no store I/O: it checks the cookie's shape and leaves the store
/// lookup to the first extractor that needs it, so requests that never ask for the user cost
/// nothing.
///
/// # Cross-site requests
///
/// Unsafe requests (`POST`, `PUT`, `PATCH`, `DELETE`, anything but `GET`, `HEAD`, `OPTIONS`,
/// `TRACE`) that carry the session cookie are refused with `403 {"error":"csrf_rejected"}`
/// before any handler or store sees them, unless:
///
/// * `Sec-Fetch-Site` is `same-origin` or `none` (`same-site` is refused: a sibling subdomain is
///   another site; add it with [`csrf_trusted_origin`](crate::LoginMiddlewareBuilder::csrf_trusted_origin));
/// * without `Sec-Fetch-Site`, `Origin` names the request's own host (`Host`, or the HTTP/2
///   authority) or a trusted origin (`null` never passes);
/// * without either header, the body type needs a CORS preflight (`application/json`), or the
///   request carries the session's synchronizer token ([`Session::csrf_token`](crate::Session::csrf_token))
///   in an `X-CSRF-Token` header or, in a URL-encoded form body of up to 64 KiB (which the
///   middleware reads and hands on), a `csrf_token` field;
/// * or the path is [exempt](crate::LoginMiddlewareBuilder::csrf_exempt).
///
/// Requests without a session cookie are let through, except that a login is refused when the
/// browser says it comes from another site (login CSRF), and that a request the browser says
/// comes from another site never gets a `Set-Cookie` for the session cookie: no new cookie,
/// none replaced, none cleared (browsers store a cookie set in answer to another site's form,
/// even when they kept their own back), and a session-data write that would start an anonymous
/// session is refused with `403 {"error":"csrf_rejected"}`. So are requests with a bearer token
/// (which then count, and the cookie beside it is ignored): a browser never adds an
/// `Authorization` header on its own, so such a request carries no ambient authority.
///
/// # Bearer tokens
///
/// A request with `Authorization: Bearer <token>` (the scheme in any case) is served from the
/// token's session; its response never carries a cookie. A token this crate could not have
/// issued, or two bearer headers, get `401 {"error":"unauthenticated"}` with
/// `WWW-Authenticate: Bearer error="invalid_token"` before any handler or store command; a
/// well-formed token whose session is unknown or ended gets the same once something looks it up.
/// Other schemes are left to the app.
///
/// # Registration order
///
/// Register it with `.wrap()` on the `App`. Within one `App` or scope, Actix runs the
/// middleware registered *last* first, so anything that reads the session
/// ([`Require`](crate::Require), your own middleware) must be registered on an inner scope or
/// before it; otherwise it answers `500` and logs that `LoginMiddleware` is missing.
/// On the way out it adds the `Set-Cookie` for a login or logout (with
/// `Cache-Control: no-store`), and answers `503` for any request whose session could not be
/// resolved because the store failed.
///
/// Cheap to clone: every clone and every worker shares one store and one configuration.
///
/// ```
/// use actix_web::{App, HttpServer};
/// use actix_login::{LoginMiddleware, MemoryStore};
///
/// // Once, outside the factory closure: every worker must share the same store.
/// let sessions = LoginMiddleware::new(MemoryStore::new());
/// let server = HttpServer::new(move || App::new().wrap(sessions.clone()));
/// ```
#[derive(Clone)]
pub struct LoginMiddleware {
    pub(super) engine: SessionEngine,
    pub(super) config: Arc<WebConfig>,
}

impl std::fmt::Debug for LoginMiddleware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginMiddleware")
            .field("engine", &self.engine)
            .field("config", &self.config)
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

    /// How many [security events](crate::events) were dropped so far because the handlers'
    /// queue was full.
    pub fn events_dropped(&self) -> u64 {
        self.engine.events_dropped()
    }

    /// A handle on every user's sessions through this middleware's store, for use outside
    /// requests (an admin task, an account being disabled).
    pub fn sessions(&self) -> Sessions {
        Sessions::new(self.engine.clone())
    }

    /// A handle on [one-time links](crate::links) through this middleware's store and
    /// settings, for use outside requests (a sign-up done by an admin, a job that mails
    /// verification links). Links it issues are counted per account and mail address, not per
    /// client address.
    pub fn links(&self) -> OneTimeLinks {
        OneTimeLinks::new(self.engine.clone(), None)
    }

    pub(crate) fn from_parts(engine: SessionEngine, config: WebConfig) -> Self {
        Self {
            engine,
            config: Arc::new(config),
        }
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
            worker: Rc::new(Worker {
                engine: Rc::new(self.engine.clone()),
                config: Arc::clone(&self.config),
            }),
        }))
    }
}

/// The per-worker service built by [`LoginMiddleware`].
#[doc(hidden)]
pub struct LoginService<S> {
    service: Rc<S>,
    worker: Rc<Worker>,
}

/// What a worker's requests share: counted without atomics, as each request stays on its
/// worker's thread (the store and settings inside are shared with every worker).
struct Worker {
    engine: Rc<SessionEngine>,
    config: Arc<WebConfig>,
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

    fn call(&self, mut req: ServiceRequest) -> Self::Future {
        let service = Rc::clone(&self.service);
        let worker = Rc::clone(&self.worker);
        Box::pin(async move {
            let config = &worker.config;
            let presented = match bearer::read(req.headers()) {
                BearerHeader::Absent => config.cookie.read(req.headers()),
                BearerHeader::Token(token) => Presented::Bearer(token),
                BearerHeader::Malformed => {
                    tracing::debug!("refusing a malformed bearer token");
                    return Ok(req
                        .into_response(bearer::invalid_token())
                        .map_into_right_body());
                }
            };
            let provenance = config.csrf.provenance(&req);
            if !screen(&mut req, &presented, provenance).await {
                tracing::warn!(method = %req.method(), path = req.path(), "cross-site request refused");
                let refusal = Error::CrossSiteRequest.error_response();
                return Ok(req.into_response(refusal).map_into_right_body());
            }
            let client_ip = client_address(req.request(), &config.proxies);
            let state = Rc::new(RequestSession::new(
                Rc::clone(&worker.engine),
                presented,
                provenance,
                client_ip,
            ));
            req.extensions_mut().insert(Rc::clone(&state));
            Ok(finish(service.call(req).await?, &state, config))
        })
    }
}

/// Whether an unsafe request may use the session cookie it carries. Requests without a usable
/// session cookie carry no authority to abuse; login checks their provenance itself. Nor do
/// bearer requests: a browser never adds an `Authorization` header on its own.
async fn screen(req: &mut ServiceRequest, presented: &Presented, provenance: Provenance) -> bool {
    let Presented::Token(token) = presented else {
        return true;
    };
    match provenance {
        Provenance::NotChecked | Provenance::SameOrigin => true,
        Provenance::CrossSite => false,
        Provenance::Unknown => {
            !csrf::forgeable_body(req.headers())
                || csrf::has_synchronizer_token(req, &csrf::synchronizer_token(token)).await
        }
    }
}

fn finish<B>(
    res: ServiceResponse<B>,
    state: &RequestSession,
    config: &WebConfig,
) -> ServiceResponse<EitherBody<B>> {
    if state.store_failed() {
        let unavailable = json_error(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable");
        return res.into_response(unavailable).map_into_right_body();
    }
    if state.bearer_rejected() {
        return res
            .into_response(bearer::invalid_token())
            .map_into_right_body();
    }
    let mut res = res.map_into_left_body();
    let update = state.cookie_update();
    if state.is_bearer() {
        // A bearer client holds its token itself; a cookie would give it ambient authority.
        if res.status() == StatusCode::UNAUTHORIZED {
            bearer::challenge(res.headers_mut());
        }
        keep_private(&mut res, state);
        return res;
    }
    let cookie = match update {
        CookieUpdate::Keep => {
            keep_private(&mut res, state);
            return res;
        }
        CookieUpdate::Issue {
            token,
            persist_until,
        } => config.cookie.issue(&token, persist_until).to_string(),
        CookieUpdate::Remove => config.cookie.removal().to_string(),
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
            let failed = json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal_error");
            res.into_response(failed).map_into_right_body()
        }
    }
}

/// Marks a response served from a session as not for shared caches, unless the handler chose.
fn keep_private<B>(res: &mut ServiceResponse<B>, state: &RequestSession) {
    if state.personal() && !res.headers().contains_key(CACHE_CONTROL) {
        no_store(res);
    }
}

fn no_store<B>(res: &mut ServiceResponse<B>) {
    res.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
}
