//! Logged-in requests in an app's own tests, without a login route or a password.

use actix_web::cookie::Cookie;
use actix_web::http::header::{HeaderName, HeaderValue, AUTHORIZATION};

use super::{Login, LoginMiddleware};
use crate::engine::{Grant, Issued};
use crate::error::Error;

#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
impl LoginMiddleware {
    /// Logs `login` in on this middleware's store and returns the session cookie a browser
    /// would then send: a logged-in request in one line, for `actix_web::test`. The session is
    /// real (listed, revocable, with the login's profile, roles and
    /// [remember](Login::remember) setting), so the app sees exactly what a login gives it.
    ///
    /// ```
    /// use actix_web::{test, web, App, HttpResponse};
    /// use actix_login::{AuthUser, Login, LoginMiddleware, MemoryStore};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Profile { name: String }
    ///
    /// async fn me(user: AuthUser<Profile>) -> HttpResponse {
    ///     HttpResponse::Ok().body(format!("hello {}", user.name))
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// // In a `#[actix_web::test] async fn`:
    /// let login = LoginMiddleware::new(MemoryStore::new());
    /// let app = test::init_service(
    ///     App::new().route("/me", web::get().to(me)).wrap(login.clone()),
    /// )
    /// .await;
    ///
    /// let cookie = login.test_cookie(Login::new("1", &Profile { name: "ann".into() })).await?;
    /// let req = test::TestRequest::get().uri("/me").cookie(cookie).to_request();
    /// let body = test::call_and_read_body(&app, req).await;
    /// assert_eq!(body, "hello ann");
    ///
    /// // Without it, the route answers 401.
    /// let res = test::call_service(&app, test::TestRequest::get().uri("/me").to_request()).await;
    /// assert_eq!(res.status(), 401);
    /// # Ok::<(), actix_login::Error>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    /// [`Error::Profile`] if the profile cannot be serialised; [`Error::Store`] if the store
    /// fails.
    pub async fn test_cookie(&self, login: Login) -> Result<Cookie<'static>, Error> {
        let issued = self.test_login(login, false).await?;
        let persist_until = issued
            .session
            .record
            .is_remembered()
            .then_some(issued.session.expires_at);
        Ok(self
            .config
            .cookie
            .issue(&issued.token, persist_until)
            .into_owned())
    }

    /// Logs `login` in as a bearer client and returns the `Authorization: Bearer` header it
    /// would then send, for `TestRequest::insert_header`.
    ///
    /// ```
    /// # use actix_web::test;
    /// # use actix_login::{Login, LoginMiddleware, MemoryStore};
    /// # actix_web::rt::System::new().block_on(async {
    /// let login = LoginMiddleware::new(MemoryStore::new());
    /// let header = login.test_bearer(Login::new("1", &serde_json::json!({"name": "ann"}))).await?;
    /// let req = test::TestRequest::get().uri("/me").insert_header(header);
    /// # Ok::<(), actix_login::Error>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    /// As for [`test_cookie`](Self::test_cookie).
    pub async fn test_bearer(&self, login: Login) -> Result<(HeaderName, HeaderValue), Error> {
        let issued = self.test_login(login, true).await?;
        let value = HeaderValue::from_str(&format!("Bearer {}", issued.token.as_str()))
            .map_err(|_| Error::InvalidInput)?;
        Ok((AUTHORIZATION, value))
    }

    async fn test_login(&self, login: Login, bearer: bool) -> Result<Issued, Error> {
        let grant = Grant {
            user_id: login.user_id,
            user: login.user.map_err(Error::Profile)?,
            roles: login.roles,
            ip: None,
            user_agent: Some("actix-login test".to_owned()),
            credentials: login.credentials,
            remember: login.remember,
            bearer,
            factors: login.factors,
        };
        self.engine.login(None, None, grant, false).await.result
    }
}
