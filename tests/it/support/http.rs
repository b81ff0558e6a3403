//! Requests and responses against an app under test.

use std::time::Duration;

use actix_login::RedisStore;
use actix_web::body::MessageBody;
use actix_web::cookie::Cookie;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::test;
use sha2::{Digest, Sha256};

pub async fn redis_store_at(url: &str, prefix: &str) -> RedisStore {
    RedisStore::builder(url)
        .key_prefix(prefix)
        .command_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(500))
        .connect()
        .await
        .unwrap()
}

pub fn get(path: &str, cookie: Option<&str>) -> actix_http::Request {
    with_cookie(test::TestRequest::get().uri(path), cookie)
}

/// A POST as a current browser sends it from the app's own pages.
pub fn post(path: &str, cookie: Option<&str>) -> actix_http::Request {
    with_cookie(
        test::TestRequest::post()
            .uri(path)
            .insert_header(("sec-fetch-site", "same-origin")),
        cookie,
    )
}

pub fn with_cookie(req: test::TestRequest, cookie: Option<&str>) -> actix_http::Request {
    match cookie {
        Some(token) => req
            .insert_header((header::COOKIE, format!("__Host-id={token}")))
            .to_request(),
        None => req.to_request(),
    }
}

/// The session cookie a response sets, if any.
pub fn set_cookie<B>(res: &ServiceResponse<B>) -> Option<Cookie<'static>> {
    res.headers()
        .get_all(header::SET_COOKIE)
        .filter_map(|v| Cookie::parse_encoded(v.to_str().ok()?.to_owned()).ok())
        .find(|c| c.name() == "__Host-id")
}

pub async fn status_and_body<B: MessageBody>(res: ServiceResponse<B>) -> (u16, String) {
    let status = res.status().as_u16();
    let body = test::read_body(res).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Logs in as `id` and returns the token.
pub async fn log_in<S, B>(app: &S, id: u64) -> String
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let res = test::call_service(app, post(&format!("/login/{id}"), None)).await;
    assert_eq!(res.status(), StatusCode::OK);
    set_cookie(&res)
        .expect("login sets a cookie")
        .value()
        .to_owned()
}

/// The name a token's session is stored under: its SHA-256 in unpadded base64url.
pub fn stored_key(token: &str) -> String {
    use base64::Engine as _;
    let digest = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(&Sha256::digest(token.as_bytes())[..21]);
    format!("{}{digest}", &token[..4])
}

/// The Redis key the session of `token` lives under: its group (the token's first four
/// characters) as the hash tag, then the truncated SHA-256 of the token.
pub fn redis_session_key(prefix: &str, token: &str) -> String {
    let key = stored_key(token);
    format!("{prefix}:s:{{{}}}{}", &key[..4], &key[4..])
}

pub const UNAUTHENTICATED: &str = r#"{"error":"unauthenticated"}"#;
pub const UNAVAILABLE: &str = r#"{"error":"service_unavailable"}"#;

/// The status code `app` answers `req` with.
pub async fn status<S, B>(app: &S, req: actix_http::Request) -> u16
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    test::call_service(app, req).await.status().as_u16()
}

/// The smallest app around a store: `POST /login/{id}`, `GET /me` (answers the user id) and
/// `POST /logout`.
pub mod minimal {
    use actix_login::store::SessionStore;
    use actix_login::{AuthUser, Error, LoginMiddleware, Session};
    use actix_web::body::MessageBody;
    use actix_web::dev::{Service, ServiceResponse};
    use actix_web::{test, web, App, HttpResponse};
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    struct Profile {
        id: u64,
    }

    async fn login(session: Session, id: web::Path<u64>) -> Result<HttpResponse, Error> {
        session.login(id.to_string(), &Profile { id: *id }).await?;
        Ok(HttpResponse::Ok().finish())
    }

    async fn me(user: AuthUser<Profile>) -> String {
        user.id.to_string()
    }

    async fn logout(_user: AuthUser<Profile>, session: Session) -> Result<HttpResponse, Error> {
        session.logout().await?;
        Ok(HttpResponse::NoContent().finish())
    }

    pub async fn app(
        store: impl SessionStore,
    ) -> impl Service<
        actix_http::Request,
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
    > {
        app_with(LoginMiddleware::new(store)).await
    }

    /// [`app`] around a middleware built by the test.
    pub async fn app_with(
        middleware: LoginMiddleware,
    ) -> impl Service<
        actix_http::Request,
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
    > {
        test::init_service(App::new().configure(routes).wrap(middleware)).await
    }

    /// The minimal app's routes, for a test that adds its own beside them.
    pub fn routes(cfg: &mut web::ServiceConfig) {
        cfg.route("/login/{id}", web::post().to(login))
            .route("/me", web::get().to(me))
            .route("/logout", web::post().to(logout));
    }
}
