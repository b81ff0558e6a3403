//! Access rules for routes and scopes: login, roles, token scopes, a fresh password.

use std::future::{ready, Ready};
use std::rc::Rc;
use std::sync::Arc;
use std::time::SystemTime;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{HeaderValue, CACHE_CONTROL, LOCATION, WWW_AUTHENTICATE};
use actix_web::{HttpMessage as _, HttpResponse, ResponseError as _};
use futures_util::future::LocalBoxFuture;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use super::request::RequestSession;
use crate::engine::{ActiveSession, SessionRules};
use crate::error::Error;

/// The longest `next` path accepted, in bytes.
const MAX_NEXT_LEN: usize = 2048;

/// Lets a request through to a route or scope only if its session meets the rule; otherwise
/// answers without calling the handler.
///
/// | request | response |
/// |---|---|
/// | anonymous | `401 {"error":"unauthenticated"}`, or a `303` to the login page with [`redirect_to`](Require::redirect_to) |
/// | logged in, lacking every required role | `403 {"error":"forbidden"}` (never a redirect to login) |
/// | a personal access token limited to other scopes than [`scope`](Require::scope) names | `403 {"error":"forbidden"}`, with `WWW-Authenticate: Bearer error="insufficient_scope", scope="…"` (RFC 6750 §3.1) |
/// | password verified, [second factor](crate::two_factor) still due | `401 {"error":"second_factor_required"}` (never a redirect to login) |
/// | logged in, password older than the [fresh window](crate::LoginMiddlewareBuilder::fresh_window) with [`fresh`](Require::fresh) | `403 {"error":"reauth_required"}` |
/// | logged in with a fresh password, on an account with a [second factor](crate::two_factor) that the session's latest proof left out (a trusted browser, a password-only reauthentication), with [`fresh`](Require::fresh) | `403 {"error":"second_factor_reauth_required"}` |
/// | session store unavailable | `503 {"error":"service_unavailable"}` |
///
/// It reads the session through [`LoginMiddleware`](crate::LoginMiddleware), which must run
/// first: register `LoginMiddleware` on the `App` (as its last `.wrap()`) and `Require` on the
/// resources and scopes inside it, as below. The `MemoryStore` here is inline for brevity; in a
/// server, build the middleware once outside the factory closure.
///
/// ```
/// use actix_web::{web, App, HttpResponse};
/// use actix_login::{LoginMiddleware, MemoryStore, Require};
///
/// let app = App::new()
///     .service(
///         web::scope("/admin")
///             .wrap(Require::role("admin"))
///             .route("", web::get().to(HttpResponse::Ok)),
///     )
///     .service(
///         web::resource("/password")
///             .wrap(Require::login().fresh())
///             .route(web::post().to(HttpResponse::NoContent)),
///     )
///     .service(
///         web::scope("/account")
///             .wrap(Require::login().redirect_to("/login"))
///             .route("", web::get().to(HttpResponse::Ok)),
///     )
///     .wrap(LoginMiddleware::new(MemoryStore::new()));
/// ```
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct Require {
    rule: Arc<Rule>,
}

#[derive(Clone, Debug, Default)]
struct Rule {
    /// `None`: any logged-in user. `Some`: one of these roles, so an empty list admits nobody.
    any_of_roles: Option<Vec<String>>,
    /// `Some`: personal access tokens limited to scopes must hold this one.
    scope: Option<String>,
    fresh: bool,
    login_page: Option<String>,
}

impl Require {
    /// Any logged-in user.
    pub fn login() -> Self {
        Self::default()
    }

    /// A logged-in user granted `role` at login.
    pub fn role(role: impl Into<String>) -> Self {
        Self::any_role([role])
    }

    /// A logged-in user granted at least one of `roles`. An empty list admits nobody.
    pub fn any_role(roles: impl IntoIterator<Item = impl Into<String>>) -> Self {
        let rule = Rule {
            any_of_roles: Some(roles.into_iter().map(Into::into).collect()),
            ..Rule::default()
        };
        Self {
            rule: Arc::new(rule),
        }
    }

    /// Any logged-in user, except personal access tokens limited to scopes other than
    /// `scope`. Browser sessions, login tokens and tokens without scopes pass: they act with
    /// everything their user may do. See [`PersonalToken::scopes`](crate::PersonalToken::scopes).
    pub fn scope(scope: impl Into<String>) -> Self {
        let scope = scope.into();
        Self::login().with(|rule| rule.scope = Some(scope))
    }

    /// Also requires that the password was entered within the fresh window ("sudo mode").
    /// Personal access tokens never pass: no password was entered in them. On an account with
    /// a [second factor](crate::two_factor), the second factor must have been proven with it
    /// ([`Session::complete_second_factor`](crate::Session::complete_second_factor)); a
    /// session that proved the password alone gets `403 second_factor_reauth_required`.
    pub fn fresh(self) -> Self {
        self.with(|rule| rule.fresh = true)
    }

    /// Sends anonymous visitors to `login_page` with `303 See Other`, adding `?next=` with the
    /// path they asked for, instead of answering `401`. For HTML pages; check `next` with
    /// [`safe_next`] before redirecting to it after login.
    pub fn redirect_to(self, login_page: impl Into<String>) -> Self {
        let login_page = login_page.into();
        self.with(|rule| rule.login_page = Some(login_page))
    }

    fn with(self, change: impl FnOnce(&mut Rule)) -> Self {
        let mut rule = Arc::unwrap_or_clone(self.rule);
        change(&mut rule);
        Self {
            rule: Arc::new(rule),
        }
    }
}

impl Rule {
    fn check(&self, session: Option<&ActiveSession>, rules: &SessionRules) -> Result<(), Error> {
        let session = session.ok_or(Error::Unauthenticated)?;
        let record = &session.record;
        if let Some(roles) = &self.any_of_roles {
            if !roles.iter().any(|r| record.has_role(r)) {
                return Err(Error::Forbidden);
            }
        }
        if let Some(scope) = &self.scope {
            if !record.allows_scope(scope) {
                return Err(Error::Forbidden);
            }
        }
        if self.fresh {
            rules.check_fresh(record, SystemTime::now())?;
        }
        Ok(())
    }

    /// The refusal of a token that lacks the route's scope: `403`, with the challenge of RFC
    /// 6750 section 3.1 naming the scope the route needs (left out if it cannot be sent as
    /// a quoted string).
    fn insufficient_scope(&self) -> HttpResponse {
        let mut response = Error::Forbidden.error_response();
        let scope = self
            .scope
            .as_deref()
            .filter(|scope| {
                // RFC 6750's scope-token characters: visible ASCII but `"` and `\`.
                scope
                    .bytes()
                    .all(|b| (b == b' ' || b.is_ascii_graphic()) && b != b'"' && b != b'\\')
            })
            .map_or(String::new(), |scope| format!(r#", scope="{scope}""#));
        let challenge = format!(r#"Bearer error="insufficient_scope"{scope}"#);
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response.headers_mut().insert(WWW_AUTHENTICATE, value);
        }
        response
    }

    /// Whether `session` is a token refused for this rule's scope alone.
    fn lacks_scope(&self, session: Option<&ActiveSession>) -> bool {
        match (&self.scope, session) {
            (Some(scope), Some(session)) => !session.record.allows_scope(scope),
            _ => false,
        }
    }

    /// `login_page?next=<path and query>`, for anonymous visitors of an HTML route.
    fn login_redirect(&self, req: &ServiceRequest) -> Option<HttpResponse> {
        let login_page = self.login_page.as_deref()?;
        let requested = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let separator = if login_page.contains('?') { '&' } else { '?' };
        let target = format!(
            "{login_page}{separator}next={}",
            utf8_percent_encode(requested, NON_ALPHANUMERIC)
        );
        let location = HeaderValue::from_str(&target).ok()?;
        Some(
            HttpResponse::SeeOther()
                .insert_header((LOCATION, location))
                .insert_header((CACHE_CONTROL, HeaderValue::from_static("no-store")))
                .finish(),
        )
    }
}

/// Returns `next` if it is safe to redirect to after login: a path on this site, and nothing
/// else. Anything that a browser could read as another origin is refused: absolute URLs
/// (`https://…`, `javascript:…`), scheme-relative ones (`//evil.example`, `/\\evil.example`),
/// backslashes, whitespace, control characters and anything outside visible ASCII (encode it
/// as `%XX`), and values over 2 KiB.
///
/// ```
/// use actix_login::safe_next;
///
/// assert_eq!(safe_next("/account?tab=keys"), Some("/account?tab=keys"));
/// assert_eq!(safe_next("//evil.example/"), None);
/// assert_eq!(safe_next("https://evil.example/"), None);
/// ```
pub fn safe_next(next: &str) -> Option<&str> {
    let bytes = next.as_bytes();
    let safe = next.len() <= MAX_NEXT_LEN
        && bytes.first() == Some(&b'/')
        && !matches!(bytes.get(1), Some(b'/' | b'\\'))
        // Browsers treat `\` like `/` and drop tabs and newlines from URLs, so `/\t/evil` would
        // become `//evil`.
        // Only visible ASCII: other characters must arrive percent-encoded, and could not go into
        // a `Location` header as they are.
        && next.bytes().all(|b| b.is_ascii_graphic() && b != b'\\');
    safe.then_some(next)
}

impl<S, B> Transform<S, ServiceRequest> for Require
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = RequireService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RequireService {
            service: Rc::new(service),
            rule: Arc::clone(&self.rule),
        }))
    }
}

/// The per-worker service built by [`Require`].
#[doc(hidden)]
pub struct RequireService<S> {
    service: Rc<S>,
    rule: Arc<Rule>,
}

impl<S, B> Service<ServiceRequest> for RequireService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let service = Rc::clone(&self.service);
        let rule = Arc::clone(&self.rule);
        Box::pin(async move {
            let state = RequestSession::of(&req.extensions(), req.path());
            let state = match state {
                Ok(state) => state,
                Err(err) => {
                    return Ok(req
                        .into_response(err.error_response())
                        .map_into_right_body())
                }
            };
            // Runs before the handler's extractors, which may read the session's data: read
            // it with the record, so such a handler costs one store read in all.
            state.expect_data_reads();
            let (verdict, lacks_scope) = match state.resolve_login().await {
                Ok(session) => (
                    rule.check(session.as_deref(), state.engine().rules()),
                    rule.lacks_scope(session.as_deref()),
                ),
                Err(err) => (Err(err), false),
            };
            match verdict {
                Ok(()) => Ok(service.call(req).await?.map_into_left_body()),
                Err(Error::Forbidden) if lacks_scope => {
                    let res = rule.insufficient_scope();
                    Ok(req.into_response(res).map_into_right_body())
                }
                Err(Error::Unauthenticated) => {
                    let res = rule
                        .login_redirect(&req)
                        .unwrap_or_else(|| Error::Unauthenticated.error_response());
                    Ok(req.into_response(res).map_into_right_body())
                }
                Err(err) => Ok(req
                    .into_response(err.error_response())
                    .map_into_right_body()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn safe_next_accepts_local_paths() {
        for ok in ["/", "/account", "/a/b?c=d&e=%2F%2Fx#frag", "/caf%C3%A9"] {
            assert_eq!(safe_next(ok), Some(ok), "{ok}");
        }
    }

    #[test]
    fn safe_next_refuses_everything_that_can_leave_the_site() {
        let long = format!("/{}", "a".repeat(2048));
        let hostile = [
            "",
            "account",
            "//evil.example",
            "///evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/ /evil.example",
            "https://evil.example",
            "http:evil.example",
            "javascript:alert(1)",
            "data:text/html,x",
            "/path\\..\\..",
            " /account",
            "/\u{0}x",
            "/café",
            "/\u{202e}evil",
            long.as_str(),
        ];
        for bad in hostile {
            assert_eq!(safe_next(bad), None, "{bad:?}");
        }
    }
}
