//! Cross-site request forgery, attempted against logout, a state change and login.

use actix_login::{AuthUser, Error, LoginMiddleware, MemoryStore, Session};
use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header;
use actix_web::{test, web, App, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::support;
use crate::support::http::*;

#[derive(Serialize, Deserialize)]
struct Profile {
    id: u64,
}

#[derive(Deserialize)]
struct EmailForm {
    email: String,
}

async fn login(session: Session) -> Result<HttpResponse, Error> {
    session.login("7", &Profile { id: 7 }).await?;
    Ok(HttpResponse::Ok().finish())
}

async fn logout(_user: AuthUser<Profile>, session: Session) -> Result<HttpResponse, Error> {
    session.logout().await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A state change from an HTML form; the handler still receives the whole form.
async fn change_email(_user: AuthUser<Profile>, form: web::Form<EmailForm>) -> String {
    form.email.clone()
}

async fn form_token(session: Session) -> String {
    session.csrf_token().unwrap_or_default()
}

async fn app() -> impl Service<
    actix_http::Request,
    Response = ServiceResponse<impl MessageBody>,
    Error = actix_web::Error,
> {
    let middleware = LoginMiddleware::builder(MemoryStore::new())
        .csrf_exempt("/hooks")
        .csrf_trusted_origin("https://admin.example")
        .build();
    test::init_service(
        App::new()
            .route("/login", web::post().to(login))
            .route("/logout", web::post().to(logout))
            .route("/email", web::post().to(change_email))
            .route("/form-token", web::get().to(form_token))
            .route(
                "/me",
                web::get().to(|u: AuthUser<Profile>| async move { u.id.to_string() }),
            )
            .route(
                "/hooks/in",
                web::post().to(|u: AuthUser<Profile>| async move { u.id.to_string() }),
            )
            .wrap(middleware),
    )
    .await
}

/// A POST to `path` with the session cookie and the given extra headers, to
/// `https://app.example`.
fn forged(path: &str, token: &str, headers: &[(&str, &str)]) -> test::TestRequest {
    let mut req = test::TestRequest::post()
        .uri(&format!("https://app.example{path}"))
        .insert_header((header::HOST, "app.example"))
        .insert_header((header::COOKIE, format!("__Host-id={token}")));
    for (name, value) in headers {
        req = req.insert_header((*name, *value));
    }
    req
}

const REFUSED: &str = r#"{"error":"csrf_rejected"}"#;

#[actix_web::test]
async fn cross_site_posts_are_refused_and_leave_the_session_alone() {
    let app = app().await;
    let token = log_in_plain(&app).await;
    let hostile: [&[(&str, &str)]; 6] = [
        &[("sec-fetch-site", "cross-site")],
        &[("sec-fetch-site", "same-site")],
        &[("origin", "https://evil.example")],
        &[("origin", "https://app.example.evil.example")],
        &[("origin", "null")],
        &[],
    ];
    for headers in hostile {
        let res = test::call_service(&app, forged("/logout", &token, headers).to_request()).await;
        assert!(res.headers().get(header::SET_COOKIE).is_none());
        assert_eq!(
            status_and_body(res).await,
            (403, REFUSED.into()),
            "{headers:?}"
        );
    }
    assert_eq!(
        status(&app, get("/me", Some(&token))).await,
        200,
        "the session was touched"
    );

    // The same request from the app's own page goes through.
    for headers in [
        &[("sec-fetch-site", "same-origin")][..],
        &[("origin", "https://app.example")][..],
    ] {
        let token = log_in_plain(&app).await;
        let req = forged("/logout", &token, headers).to_request();
        assert_eq!(status(&app, req).await, 204, "{headers:?}");
    }
}

async fn log_in_plain<S, B>(app: &S) -> String
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let res = test::call_service(app, post("/login", None)).await;
    set_cookie(&res)
        .expect("login sets a cookie")
        .value()
        .to_owned()
}

#[actix_web::test]
async fn forms_without_origin_need_the_synchronizer_token() {
    let app = app().await;
    let token = log_in_plain(&app).await;
    let (_, csrf) =
        status_and_body(test::call_service(&app, get("/form-token", Some(&token))).await).await;
    assert_eq!(csrf.len(), 43);
    assert!(!csrf.contains(&token) && csrf != token);

    let form = |body: String| {
        forged(
            "/email",
            &token,
            &[("content-type", "application/x-www-form-urlencoded")],
        )
        .set_payload(body)
        .to_request()
    };
    let res = test::call_service(&app, form("email=a%40example.org".into())).await;
    assert_eq!(status_and_body(res).await, (403, REFUSED.into()));
    let res = test::call_service(
        &app,
        form(format!(
            "email=a%40example.org&csrf_token={}",
            "A".repeat(43)
        )),
    )
    .await;
    assert_eq!(status_and_body(res).await, (403, REFUSED.into()));
    let res = test::call_service(
        &app,
        form(format!("email=a%40example.org&csrf_token={csrf}")),
    )
    .await;
    assert_eq!(
        status_and_body(res).await,
        (200, "a@example.org".into()),
        "form lost on the way"
    );

    // The header works too, and a token from another session does not.
    let other = log_in_plain(&app).await;
    let (_, other_csrf) =
        status_and_body(test::call_service(&app, get("/form-token", Some(&other))).await).await;
    let with_header =
        |value: &str| forged("/logout", &token, &[("x-csrf-token", value)]).to_request();
    assert_eq!(status(&app, with_header(&other_csrf)).await, 403);
    assert_eq!(status(&app, with_header(&csrf)).await, 204);
}

#[actix_web::test]
async fn json_from_scripts_needs_no_token() {
    let app = app().await;
    let token = log_in_plain(&app).await;
    let req = forged("/logout", &token, &[("content-type", "application/json")])
        .set_payload("{}")
        .to_request();
    assert_eq!(status(&app, req).await, 204);
}

#[actix_web::test]
async fn login_csrf_is_refused_without_creating_a_session() {
    let store = MemoryStore::new();
    let app = test::init_service(
        App::new()
            .route("/login", web::post().to(login))
            .wrap(LoginMiddleware::new(store.clone())),
    )
    .await;
    for headers in [
        &[("sec-fetch-site", "cross-site")][..],
        &[("origin", "https://evil.example")][..],
        &[("origin", "null")][..],
    ] {
        let mut req = test::TestRequest::post()
            .uri("/login")
            .insert_header((header::HOST, "app.example"));
        for (name, value) in headers {
            req = req.insert_header((*name, *value));
        }
        let res = test::call_service(&app, req.to_request()).await;
        assert!(res.headers().get(header::SET_COOKIE).is_none());
        assert_eq!(
            status_and_body(res).await,
            (403, REFUSED.into()),
            "{headers:?}"
        );
    }
    assert!(store.is_empty(), "a session was created");
    // Tools without browser headers can still log in.
    let req = test::TestRequest::post().uri("/login").to_request();
    assert_eq!(status(&app, req).await, 200);
}

#[actix_web::test]
async fn safe_methods_exempt_paths_and_trusted_origins_pass() {
    let app = app().await;
    let token = log_in_plain(&app).await;
    let cross = test::TestRequest::get()
        .uri("/me")
        .insert_header(("sec-fetch-site", "cross-site"))
        .insert_header((header::COOKIE, format!("__Host-id={token}")));
    assert_eq!(status(&app, cross.to_request()).await, 200);
    let hook = forged("/hooks/in", &token, &[("sec-fetch-site", "cross-site")]).to_request();
    assert_eq!(status(&app, hook).await, 200);
    let trusted = forged("/logout", &token, &[("origin", "https://admin.example")]).to_request();
    assert_eq!(status(&app, trusted).await, 204);
}

#[actix_web::test]
async fn the_form_token_changes_with_the_session() {
    let app = app().await;
    let first = log_in_plain(&app).await;
    let (_, before) =
        status_and_body(test::call_service(&app, get("/form-token", Some(&first))).await).await;
    let res = test::call_service(&app, post("/login", Some(&first))).await;
    let second = set_cookie(&res).unwrap().value().to_owned();
    let (_, after) =
        status_and_body(test::call_service(&app, get("/form-token", Some(&second))).await).await;
    assert_ne!(before, after);
    let stale = forged("/logout", &second, &[("x-csrf-token", before.as_str())]).to_request();
    assert_eq!(status(&app, stale).await, 403);
}

#[actix_web::test]
async fn refusals_are_logged() {
    let (logs, _guard) = support::logs::capture_logs();
    let app = app().await;
    let token = log_in_plain(&app).await;
    let req = forged("/logout", &token, &[("sec-fetch-site", "cross-site")]).to_request();
    assert_eq!(status(&app, req).await, 403);
    let logs = logs.text();
    assert!(logs.contains("cross-site request refused"), "{logs}");
    assert!(!logs.contains(&token));
}

#[actix_web::test]
async fn a_plain_http_app_refuses_origins_of_another_scheme_or_port() {
    let app = app().await;
    let to_plain_app = |token: &str, origin: &str| {
        test::TestRequest::post()
            .uri("/logout")
            .insert_header((header::HOST, "app.example:8080"))
            .insert_header((header::COOKIE, format!("__Host-id={token}")))
            .insert_header(("origin", origin))
            .to_request()
    };
    let token = log_in_plain(&app).await;
    for hostile in [
        "https://app.example:8080",
        "http://app.example:8080:443",
        "http://app.example",
    ] {
        let res = test::call_service(&app, to_plain_app(&token, hostile)).await;
        assert_eq!(res.status(), 403, "{hostile}");
    }
    let res = test::call_service(&app, to_plain_app(&token, "http://app.example:8080")).await;
    assert_eq!(res.status(), 204);
}

/// A logout that needs no session, then a note kept in session data: what an HTML app's
/// "Sign out" does (the note starts an anonymous session for a visitor without one).
async fn sign_out_with_note(session: Session) -> Result<HttpResponse, Error> {
    session.logout().await?;
    session.insert("note", &"Signed out").await?;
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/login"))
        .finish())
}

/// A POST from another site without the session cookie (SameSite=Lax keeps it back on a
/// cross-site form), which the browser would still let set one.
fn cookieless(path: &str, headers: &[(&str, &str)]) -> actix_http::Request {
    let mut req = test::TestRequest::post()
        .uri(&format!("https://app.example{path}"))
        .insert_header((header::HOST, "app.example"));
    for (name, value) in headers {
        req = req.insert_header((*name, *value));
    }
    req.to_request()
}

#[actix_web::test]
async fn a_cross_site_request_never_changes_the_session_cookie() {
    let app = test::init_service(
        App::new()
            .route("/sign-out", web::post().to(sign_out_with_note))
            .wrap(LoginMiddleware::new(MemoryStore::new())),
    )
    .await;
    let cross_site: [&[(&str, &str)]; 3] = [
        &[("sec-fetch-site", "cross-site")],
        &[("sec-fetch-site", "same-site")],
        &[("origin", "https://evil.example")],
    ];
    for headers in cross_site {
        let res = test::call_service(&app, cookieless("/sign-out", headers)).await;
        assert_eq!(res.status(), 403, "{headers:?}");
        assert!(set_cookie(&res).is_none(), "{headers:?}: {res:?}");
        let body = test::read_body(res).await;
        assert_eq!(body, r#"{"error":"csrf_rejected"}"#);
    }
    // The same request from the app's own page clears the cookie and starts the visitor's
    // session: it is the provenance, not the route, that keeps the cookie as it is.
    let own = cookieless("/sign-out", &[("sec-fetch-site", "same-origin")]);
    let res = test::call_service(&app, own).await;
    assert_eq!(res.status(), 303);
    assert!(set_cookie(&res).is_some_and(|c| !c.value().is_empty()));
}

/// A handler that only clears the cookie (a logout without a session) and answers anyway gets
/// no `Set-Cookie` for a cross-site request either.
#[actix_web::test]
async fn a_cross_site_logout_without_a_session_clears_no_cookie() {
    async fn plain_logout(session: Session) -> Result<HttpResponse, Error> {
        session.logout().await?;
        Ok(HttpResponse::NoContent().finish())
    }
    let app = test::init_service(
        App::new()
            .route("/logout", web::post().to(plain_logout))
            .wrap(LoginMiddleware::new(MemoryStore::new())),
    )
    .await;
    let res = test::call_service(
        &app,
        cookieless("/logout", &[("sec-fetch-site", "cross-site")]),
    )
    .await;
    assert_eq!(res.status(), 204);
    assert!(set_cookie(&res).is_none(), "{res:?}");
    let res = test::call_service(
        &app,
        cookieless("/logout", &[("sec-fetch-site", "same-origin")]),
    )
    .await;
    assert!(
        set_cookie(&res).is_some(),
        "the removal is sent to the app's own pages"
    );
}
