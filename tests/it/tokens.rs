//! Bearer tokens, personal access tokens and remembered logins through HTTP, on every store:
//! what a token reaches and what it never gets (a cookie, a CSRF check, a fresh session), how
//! tokens end with the user's other sessions, what a remembered cookie looks like, the cookie
//! domain, and the test login helper app authors use.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_login::store::SessionStore;
use actix_login::{
    AuthUser, Error, Login, LoginMiddleware, MemoryStore, PersonalToken, RedisStore, Require,
    Session, Sessions, Timeouts,
};
use actix_web::body::MessageBody;
use actix_web::cookie::Cookie;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::{test, web, App, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use crate::support;
use crate::support::cluster::RedisCluster;
use crate::support::http::*;
use crate::support::redis_server::{connection, shared_redis_url, unique_prefix, RedisServer};

async fn login(session: Session, id: web::Path<u64>) -> Result<HttpResponse, Error> {
    session.login(id.to_string(), &json!({ "id": *id })).await?;
    Ok(HttpResponse::Ok().finish())
}

async fn remembered_login(session: Session, id: web::Path<u64>) -> Result<HttpResponse, Error> {
    let login = Login::new(id.to_string(), &json!({ "id": *id })).remember(true);
    session.login_with(login).await?;
    Ok(HttpResponse::Ok().finish())
}

async fn token_login(session: Session, id: web::Path<u64>) -> Result<HttpResponse, Error> {
    let issued = session
        .login_bearer(Login::new(id.to_string(), &json!({ "id": *id })))
        .await?;
    Ok(HttpResponse::Ok().json(issued))
}

#[derive(Deserialize)]
struct NewToken {
    name: String,
    expires_in_secs: Option<u64>,
    scopes: Option<Vec<String>>,
}

async fn create_token(session: Session, body: web::Json<NewToken>) -> Result<HttpResponse, Error> {
    let body = body.into_inner();
    let mut token = PersonalToken::new(body.name);
    if let Some(secs) = body.expires_in_secs {
        token = token.expires_in(Duration::from_secs(secs));
    }
    if let Some(scopes) = body.scopes {
        token = token.scopes(scopes);
    }
    Ok(HttpResponse::Created().json(session.create_token(token).await?))
}

async fn me(user: AuthUser<serde_json::Value>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "user": user.user_id(),
        "bearer": user.is_bearer(),
        "remembered": user.is_remembered(),
        "token": user.token_name(),
    }))
}

async fn profile(user: AuthUser<serde_json::Value>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "roles": user.roles(), "profile": user.into_inner() }))
}

async fn logout(session: Session) -> Result<HttpResponse, Error> {
    session.logout().await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn list(session: Session) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(session.list_sessions().await?))
}

async fn revoke(session: Session, id: web::Path<String>) -> Result<HttpResponse, Error> {
    Ok(if session.revoke_session(&id).await? {
        HttpResponse::NoContent().finish()
    } else {
        HttpResponse::NotFound().finish()
    })
}

async fn revoke_others(session: Session) -> Result<HttpResponse, Error> {
    session.revoke_other_sessions().await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn password_changed(session: Session) -> Result<HttpResponse, Error> {
    session.credentials_changed("2").await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn renew(session: Session) -> Result<HttpResponse, Error> {
    session.renew().await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn reauth(session: Session) -> Result<HttpResponse, Error> {
    session.reauthenticate().await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn put_note(session: Session, body: String) -> Result<HttpResponse, Error> {
    session.insert("note", body).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn note(session: Session) -> Result<HttpResponse, Error> {
    let note: Option<String> = session.get("note").await?;
    Ok(HttpResponse::Ok().json(note))
}

async fn app(
    middleware: LoginMiddleware,
) -> impl Service<
    actix_http::Request,
    Response = ServiceResponse<impl MessageBody>,
    Error = actix_web::Error,
> {
    test::init_service(
        App::new()
            .route("/login/{id}", web::post().to(login))
            .route("/remembered-login/{id}", web::post().to(remembered_login))
            .route("/token-login/{id}", web::post().to(token_login))
            .route("/tokens", web::post().to(create_token))
            .route("/me", web::get().to(me))
            .route("/profile", web::get().to(profile))
            .route("/logout", web::post().to(logout))
            .route("/sessions", web::get().to(list))
            .route("/sessions/revoke-others", web::post().to(revoke_others))
            .route("/sessions/{id}", web::delete().to(revoke))
            .route("/password-changed", web::post().to(password_changed))
            .route("/renew", web::post().to(renew))
            .route("/reauth", web::post().to(reauth))
            .route("/note", web::put().to(put_note))
            .route("/note", web::get().to(note))
            .service(
                web::resource("/deploy")
                    .wrap(Require::scope("deploy"))
                    .route(web::post().to(HttpResponse::NoContent)),
            )
            .service(
                web::resource("/sudo")
                    .wrap(Require::login().fresh())
                    .route(web::post().to(HttpResponse::NoContent)),
            )
            .wrap(middleware),
    )
    .await
}

fn bearer(token: &str) -> (HeaderName, HeaderValue) {
    (
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    )
}

/// A request with a bearer token and no browser headers at all: what a script sends.
fn with_bearer(req: test::TestRequest, token: &str) -> actix_http::Request {
    req.insert_header(bearer(token)).to_request()
}

fn json_post(path: &str, body: serde_json::Value) -> test::TestRequest {
    test::TestRequest::post()
        .uri(path)
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .set_payload(body.to_string())
}

async fn answer<S, B>(app: &S, req: actix_http::Request) -> (u16, Vec<String>, String)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let res = test::call_service(app, req).await;
    let cookies = res
        .headers()
        .get_all(header::SET_COOKIE)
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let challenge = res
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned());
    let (status, body) = status_and_body(res).await;
    let body = match challenge {
        Some(challenge) => format!("{body} [{challenge}]"),
        None => body,
    };
    (status, cookies, body)
}

/// Creates a personal access token with the browser session `cookie`.
async fn new_token<S, B>(app: &S, cookie: &str, body: serde_json::Value) -> serde_json::Value
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let req = json_post("/tokens", body)
        .insert_header((header::COOKIE, format!("__Host-id={cookie}")))
        .insert_header(("sec-fetch-site", "same-origin"))
        .insert_header((header::USER_AGENT, "token-maker/1"))
        .to_request();
    let (status, cookies, body) = answer(app, req).await;
    assert_eq!(status, 201, "{body}");
    assert!(cookies.is_empty(), "{cookies:?}");
    serde_json::from_str(&body).unwrap()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Everything a token does, and does not, on `store`.
async fn check_tokens(store: impl SessionStore) {
    let app = app(LoginMiddleware::new(store)).await;
    let browser = log_in(&app, 1).await;

    // A personal access token: its secret once, and a public id.
    let created = new_token(&app, &browser, json!({ "name": "deploy script" })).await;
    let token = created["token"].as_str().unwrap().to_owned();
    let token_id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 47);
    assert!(created["expires_at"].is_null());

    // It reaches the user, and its answers never carry a cookie.
    let (status, cookies, body) = answer(
        &app,
        with_bearer(test::TestRequest::get().uri("/me"), &token),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(cookies.is_empty(), "{cookies:?}");
    let me: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        me,
        json!({"user": "1", "bearer": true, "remembered": false, "token": "deploy script"})
    );

    // Listed beside the browser session, seen from either.
    for (req, current) in [
        (
            with_bearer(test::TestRequest::get().uri("/sessions"), &token),
            "token",
        ),
        (get("/sessions", Some(&browser)), "browser"),
    ] {
        let (status, _, body) = answer(&app, req).await;
        assert_eq!(status, 200, "{body}");
        let list: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        assert_eq!(list.len(), 2, "{body}");
        let token_entry = list.iter().find(|s| s["id"] == token_id.as_str()).unwrap();
        assert_eq!(token_entry["kind"], "token");
        assert_eq!(token_entry["name"], "deploy script");
        assert_eq!(token_entry["current"], current == "token");
        let browser_entry = list.iter().find(|s| s["id"] != token_id.as_str()).unwrap();
        assert_eq!(browser_entry["kind"], "browser");
        assert!(browser_entry["name"].is_null());
        assert!(!body.contains(&token) && !body.contains(&browser));
    }

    // A script needs no cross-site proof: no Origin, no Sec-Fetch-Site, a form body.
    let req = test::TestRequest::put()
        .uri("/note")
        .insert_header((header::CONTENT_TYPE, "application/x-www-form-urlencoded"))
        .set_payload("from the script");
    let (status, cookies, body) = answer(&app, with_bearer(req, &token)).await;
    assert_eq!(status, 204, "{body}");
    assert!(cookies.is_empty());
    let (_, _, body) = answer(
        &app,
        with_bearer(test::TestRequest::get().uri("/note"), &token),
    )
    .await;
    assert_eq!(body, "\"from the script\"");
    // The token's data is its own, not the browser session's.
    assert_eq!(call(&app, get("/note", Some(&browser))).await.1, "null");

    // A token cannot be used as a cookie, nor a cookie as a token.
    assert_eq!(call(&app, get("/me", Some(&token))).await.0, 401);
    let (status, _, body) = answer(
        &app,
        with_bearer(test::TestRequest::get().uri("/me"), &browser),
    )
    .await;
    assert_eq!(status, 401);
    assert!(body.contains(r#"Bearer error="invalid_token""#), "{body}");

    // What a browser session does that a bearer request must not: a cookie login or a renewal.
    let (status, cookies, _) = answer(
        &app,
        with_bearer(test::TestRequest::post().uri("/login/1"), &token),
    )
    .await;
    assert_eq!((status, cookies.len()), (400, 0));
    let (status, cookies, _) = answer(
        &app,
        with_bearer(test::TestRequest::post().uri("/renew"), &token),
    )
    .await;
    assert_eq!((status, cookies.len()), (400, 0));

    // Logout with the token ends the token alone.
    let (status, cookies, _) = answer(
        &app,
        with_bearer(test::TestRequest::post().uri("/logout"), &token),
    )
    .await;
    assert_eq!((status, cookies.len()), (204, 0));
    let (status, cookies, body) = answer(
        &app,
        with_bearer(test::TestRequest::get().uri("/me"), &token),
    )
    .await;
    assert_eq!((status, cookies.len()), (401, 0));
    assert!(
        body.contains(r#"{"error":"unauthenticated"} [Bearer error="invalid_token"]"#),
        "{body}"
    );
    assert_eq!(call(&app, get("/me", Some(&browser))).await.0, 200);

    // Revoking one by id from the browser, and "log out other sessions", end tokens too.
    let revoked = new_token(&app, &browser, json!({ "name": "one" })).await;
    let others = new_token(&app, &browser, json!({ "name": "two" })).await;
    let path = format!("/sessions/{}", revoked["id"].as_str().unwrap());
    let req = with_cookie(
        test::TestRequest::delete()
            .uri(&path)
            .insert_header(("sec-fetch-site", "same-origin")),
        Some(&browser),
    );
    assert_eq!(call(&app, req).await.0, 204);
    let gone = revoked["token"].as_str().unwrap();
    assert_eq!(
        answer(&app, with_bearer(test::TestRequest::get().uri("/me"), gone))
            .await
            .0,
        401
    );
    let kept = others["token"].as_str().unwrap();
    assert_eq!(
        answer(&app, with_bearer(test::TestRequest::get().uri("/me"), kept))
            .await
            .0,
        200
    );
    assert_eq!(
        call(&app, post("/sessions/revoke-others", Some(&browser)))
            .await
            .0,
        204
    );
    assert_eq!(
        answer(&app, with_bearer(test::TestRequest::get().uri("/me"), kept))
            .await
            .0,
        401
    );

    // A password change ends every token.
    let doomed = new_token(&app, &browser, json!({ "name": "three" })).await;
    let doomed = doomed["token"].as_str().unwrap();
    assert_eq!(
        call(&app, post("/password-changed", Some(&browser)))
            .await
            .0,
        204
    );
    assert_eq!(
        answer(
            &app,
            with_bearer(test::TestRequest::get().uri("/me"), doomed)
        )
        .await
        .0,
        401
    );

    // A token from a login: same rules, no cookie, and it may log itself out. The secret is in
    // the body, which no cache may keep, though the request came with no session.
    let res = test::call_service(&app, post("/token-login/2", None)).await;
    assert_eq!(
        res.headers()
            .get(header::CACHE_CONTROL)
            .map(|v| v.to_str().unwrap()),
        Some("no-store")
    );
    let (status, cookies, body) = answer(&app, post("/token-login/2", None)).await;
    assert_eq!((status, cookies.len()), (200, 0), "{body}");
    let issued: serde_json::Value = serde_json::from_str(&body).unwrap();
    let login_token = issued["token"].as_str().unwrap();
    let expires_at = issued["expires_at"].as_u64().unwrap();
    let twelve_hours = 12 * 60 * 60;
    assert!(
        expires_at.abs_diff(now_secs() + twelve_hours) <= 5,
        "{body}"
    );
    let (_, _, body) = answer(
        &app,
        with_bearer(test::TestRequest::get().uri("/me"), login_token),
    )
    .await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        json!({"user": "2", "bearer": true, "remembered": false, "token": null})
    );

    check_parent_link(&app).await;
}

#[actix_web::test]
async fn tokens_on_the_memory_store() {
    check_tokens(MemoryStore::new()).await;
}

#[actix_web::test]
async fn tokens_on_redis() {
    check_tokens(redis_store_at(&shared_redis_url(), &unique_prefix()).await).await;
}

#[actix_web::test]
async fn tokens_on_redis_with_a_local_cache() {
    let server = RedisServer::start();
    let store = RedisStore::builder(server.url())
        .key_prefix("cached-tokens")
        .local_cache(1000)
        .connect()
        .await
        .unwrap();
    check_tokens(store).await;
}

#[actix_web::test]
async fn tokens_on_a_redis_cluster() {
    let cluster = RedisCluster::start();
    let store = cluster.store("tokens").await;
    check_tokens(store).await;
}

/// A revocation on one caching instance ends a token on another at its next request.
#[actix_web::test]
async fn a_token_revoked_on_one_caching_instance_dies_on_the_other() {
    let server = RedisServer::start();
    let cached = || async {
        RedisStore::builder(server.url())
            .key_prefix("cached")
            .local_cache(1000)
            .connect()
            .await
            .unwrap()
    };
    let a = app(LoginMiddleware::new(cached().await)).await;
    let b = app(LoginMiddleware::new(cached().await)).await;
    let browser = log_in(&a, 5).await;
    let created = new_token(&a, &browser, json!({ "name": "ci" })).await;
    let token = created["token"].as_str().unwrap();
    // B caches the token's session.
    for _ in 0..2 {
        assert_eq!(
            answer(&b, with_bearer(test::TestRequest::get().uri("/me"), token))
                .await
                .0,
            200
        );
    }
    assert_eq!(
        call(&a, post("/sessions/revoke-others", Some(&browser)))
            .await
            .0,
        204
    );
    assert_eq!(
        answer(&b, with_bearer(test::TestRequest::get().uri("/me"), token))
            .await
            .0,
        401
    );
}

#[actix_web::test]
async fn malformed_bearer_tokens_are_refused_without_a_store_command() {
    let server = RedisServer::start();
    let app = app(LoginMiddleware::new(
        redis_store_at(&server.url(), "malformed").await,
    ))
    .await;
    let browser = log_in(&app, 1).await;
    let real = new_token(&app, &browser, json!({ "name": "x" })).await;
    let real = real["token"].as_str().unwrap().to_owned();
    let mut altered = real.clone().into_bytes();
    altered[10] = if altered[10] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();

    let malformed = [
        "Bearer".to_owned(),
        "Bearer abc".to_owned(),
        format!("Bearer {}", &real[1..]),
        format!("Bearer {real}x"),
        // Right length, a character outside base64url.
        format!("Bearer +{}", &real[1..]),
    ];
    for value in &malformed {
        let before = server.command_counts();
        let req = test::TestRequest::get()
            .uri("/me")
            .insert_header((header::AUTHORIZATION, value.as_str()))
            // A session cookie beside a malformed token does not rescue it.
            .insert_header((header::COOKIE, format!("__Host-id={browser}")))
            .to_request();
        let (status, cookies, body) = answer(&app, req).await;
        assert_eq!((status, cookies.len()), (401, 0), "{value}: {body}");
        assert!(
            body.contains(r#"[Bearer error="invalid_token"]"#),
            "{value}: {body}"
        );
        assert!(
            support::redis_server::commands_during_since(&server, &before).is_empty(),
            "{value} reached Redis"
        );
    }
    // Two bearer headers: which one would a proxy have checked?
    let req = test::TestRequest::get()
        .uri("/me")
        .insert_header(bearer(&real))
        .append_header(bearer(&real))
        .to_request();
    assert_eq!(answer(&app, req).await.0, 401);

    // Well formed but never issued: one lookup, then 401, on any route that looks.
    let before = server.command_counts();
    let (status, _, body) = answer(
        &app,
        with_bearer(test::TestRequest::get().uri("/me"), &altered),
    )
    .await;
    assert_eq!(status, 401);
    assert!(body.contains("invalid_token"), "{body}");
    let sent = support::redis_server::commands_during_since(&server, &before);
    assert_eq!(sent.get("hmget"), Some(&1), "{sent:?}");
    // Even where an anonymous visitor would be served: an unknown token is never anonymous.
    let (status, cookies, _) = answer(
        &app,
        with_bearer(test::TestRequest::get().uri("/note"), &altered),
    )
    .await;
    assert_eq!((status, cookies.len()), (401, 0));
    let req = test::TestRequest::put().uri("/note").set_payload("x");
    let (status, cookies, _) = answer(&app, with_bearer(req, &altered)).await;
    assert_eq!((status, cookies.len()), (401, 0));

    // Other schemes are the app's business, and the cookie still counts beside them.
    let req = test::TestRequest::get()
        .uri("/me")
        .insert_header((header::AUTHORIZATION, "Basic YWxpY2U6c2VjcmV0"))
        .insert_header((header::COOKIE, format!("__Host-id={browser}")))
        .to_request();
    assert_eq!(answer(&app, req).await.0, 200);

    // A valid bearer request costs what a cookie request does: one HMGET.
    let before = server.command_counts();
    assert_eq!(
        answer(
            &app,
            with_bearer(test::TestRequest::get().uri("/me"), &real)
        )
        .await
        .0,
        200
    );
    let sent = support::redis_server::commands_during_since(&server, &before);
    assert_eq!(
        sent,
        [("hmget".to_owned(), 1)].into_iter().collect(),
        "{sent:?}"
    );
}

#[actix_web::test]
async fn a_bearer_request_on_a_cached_instance_costs_no_command() {
    let server = RedisServer::start();
    let store = RedisStore::builder(server.url())
        .key_prefix("cost")
        .local_cache(1000)
        .connect()
        .await
        .unwrap();
    let app = app(LoginMiddleware::new(store)).await;
    let browser = log_in(&app, 1).await;
    let created = new_token(&app, &browser, json!({ "name": "x" })).await;
    let token = created["token"].as_str().unwrap();
    assert_eq!(
        answer(
            &app,
            with_bearer(test::TestRequest::get().uri("/me"), token)
        )
        .await
        .0,
        200
    );
    let before = server.command_counts();
    assert_eq!(
        answer(
            &app,
            with_bearer(test::TestRequest::get().uri("/me"), token)
        )
        .await
        .0,
        200
    );
    let sent = support::redis_server::commands_during_since(&server, &before);
    assert!(sent.is_empty(), "{sent:?}");
}

#[actix_web::test]
async fn scopes_and_freshness_limit_personal_tokens() {
    let app = app(LoginMiddleware::new(MemoryStore::new())).await;
    let browser = log_in(&app, 1).await;
    let narrow = new_token(&app, &browser, json!({ "name": "n", "scopes": ["read"] })).await;
    let narrow = narrow["token"].as_str().unwrap();
    let deployer = new_token(&app, &browser, json!({ "name": "d", "scopes": ["deploy"] })).await;
    let deployer = deployer["token"].as_str().unwrap();
    let unscoped = new_token(&app, &browser, json!({ "name": "u" })).await;
    let unscoped = unscoped["token"].as_str().unwrap();

    let deploy = |token: &str| with_bearer(test::TestRequest::post().uri("/deploy"), token);
    assert_eq!(answer(&app, deploy(narrow)).await.0, 403);
    assert_eq!(answer(&app, deploy(deployer)).await.0, 204);
    assert_eq!(answer(&app, deploy(unscoped)).await.0, 204);
    assert_eq!(call(&app, post("/deploy", Some(&browser))).await.0, 204);

    // A token was never given a password: sudo mode refuses it, however new.
    let (status, _, body) = answer(
        &app,
        with_bearer(test::TestRequest::post().uri("/sudo"), unscoped),
    )
    .await;
    assert_eq!(status, 403);
    assert!(body.contains("reauth_required"), "{body}");
    assert_eq!(call(&app, post("/sudo", Some(&browser))).await.0, 204);

    // A token is never fresh, so it mints nothing, however narrow or wide.
    for (token, body) in [
        (narrow, json!({ "name": "w", "scopes": ["deploy"] })),
        (narrow, json!({ "name": "w" })),
        (unscoped, json!({ "name": "w" })),
    ] {
        assert_eq!(
            mint_with_bearer(&app, token, body).await,
            (403, json!({ "error": "reauth_required" }))
        );
    }

    // A login token, fresh from its password, mints tokens that end with it at the latest.
    let (_, _, body) = answer(&app, post("/token-login/1", None)).await;
    let parent: serde_json::Value = serde_json::from_str(&body).unwrap();
    let parent_end = parent["expires_at"].as_u64().unwrap();
    let parent = parent["token"].as_str().unwrap();
    for child in [
        json!({ "name": "c" }),
        json!({ "name": "c", "expires_in_secs": 13 * 60 * 60 }),
    ] {
        let (status, issued) = mint_with_bearer(&app, parent, child).await;
        assert_eq!(status, 201, "{issued}");
        assert_eq!(issued["expires_at"].as_u64(), Some(parent_end), "{issued}");
    }
    let (_, issued) =
        mint_with_bearer(&app, parent, json!({ "name": "s", "expires_in_secs": 60 })).await;
    assert!(
        issued["expires_at"].as_u64().unwrap() < parent_end,
        "{issued}"
    );
    new_token(&app, &browser, json!({ "name": "p" })).await;

    // Listed with the client that created it.
    let (_, _, body) = answer(&app, get("/sessions", Some(&browser))).await;
    let list: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let made_by_browser = list.iter().find(|s| s["name"] == "p").unwrap();
    assert_eq!(made_by_browser["user_agent"], "token-maker/1", "{body}");

    // Names, ends and scopes out of bounds.
    for bad in [
        json!({ "name": "" }),
        json!({ "name": " " }),
        json!({ "name": "x".repeat(65) }),
        json!({ "name": "x", "expires_in_secs": 0 }),
        json!({ "name": "x", "scopes": [""] }),
    ] {
        let req = json_post("/tokens", bad.clone());
        let (status, _, body) = answer(&app, with_bearer(req, unscoped)).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body, r#"{"error":"invalid_input"}"#);
    }
    // Without a login there is no one to create a token for.
    let req = json_post("/tokens", json!({ "name": "x" }))
        .insert_header(("sec-fetch-site", "same-origin"))
        .to_request();
    assert_eq!(answer(&app, req).await.0, 401);
}

#[actix_web::test]
async fn a_token_ends_at_its_expiry() {
    let app = app(LoginMiddleware::new(MemoryStore::new())).await;
    let browser = log_in(&app, 1).await;
    let created = new_token(
        &app,
        &browser,
        json!({ "name": "short", "expires_in_secs": 2 }),
    )
    .await;
    let expected = now_secs() + 2;
    assert!(
        created["expires_at"].as_u64().unwrap().abs_diff(expected) <= 1,
        "{created}"
    );
    let token = created["token"].as_str().unwrap();
    assert_eq!(
        answer(
            &app,
            with_bearer(test::TestRequest::get().uri("/me"), token)
        )
        .await
        .0,
        200
    );
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    assert_eq!(
        answer(
            &app,
            with_bearer(test::TestRequest::get().uri("/me"), token)
        )
        .await
        .0,
        401
    );
}

/// The per-user cap counts logins only: a script's token does not die because its owner
/// logged in many times, and the oldest login goes.
#[actix_web::test]
async fn the_session_cap_spares_tokens() {
    let app = app(LoginMiddleware::builder(MemoryStore::new())
        .max_sessions_per_user(3)
        .build())
    .await;
    let browser = log_in(&app, 1).await;
    let created = new_token(&app, &browser, json!({ "name": "ci" })).await;
    let token = created["token"].as_str().unwrap();
    for _ in 0..4 {
        // Creation times are kept to the millisecond; sessions of the same millisecond are
        // ordered by their random ids, so "oldest" needs a clock tick between logins.
        tokio::time::sleep(Duration::from_millis(3)).await;
        log_in(&app, 1).await;
    }
    assert_eq!(
        answer(
            &app,
            with_bearer(test::TestRequest::get().uri("/me"), token)
        )
        .await
        .0,
        200
    );
    assert_eq!(call(&app, get("/me", Some(&browser))).await.0, 401);
}

/// The test helper's sessions are real ones: listed, with their profile and roles.
#[cfg(feature = "test-util")]
#[actix_web::test]
async fn the_test_helper_logs_in_with_a_cookie_or_a_bearer_header() {
    let middleware = LoginMiddleware::new(MemoryStore::new());
    let app = app(middleware.clone()).await;
    let login = || Login::new("7", &json!({ "name": "ann" })).roles(["admin"]);

    let cookie = middleware.test_cookie(login()).await.unwrap();
    assert_eq!(cookie.name(), "__Host-id");
    assert!(cookie.max_age().is_none());
    let req = test::TestRequest::get()
        .uri("/me")
        .cookie(cookie)
        .to_request();
    let (status, _, body) = answer(&app, req).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(r#""user":"7""#) && body.contains(r#""bearer":false"#),
        "{body}"
    );

    let remembered = middleware
        .test_cookie(login().remember(true))
        .await
        .unwrap();
    let week = 7 * 24 * 60 * 60;
    let age = remembered.max_age().unwrap().whole_seconds();
    assert!((week - 60..=week).contains(&age), "{remembered}");

    let header = middleware.test_bearer(login()).await.unwrap();
    let req = test::TestRequest::get()
        .uri("/me")
        .insert_header(header)
        .to_request();
    let (status, cookies, body) = answer(&app, req).await;
    assert_eq!((status, cookies.len()), (200, 0), "{body}");
    assert!(body.contains(r#""bearer":true"#), "{body}");

    let listed = middleware.sessions().list("7").await.unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed.iter().filter(|s| s.remembered).count(), 1);
}

fn max_age(set_cookie: &str) -> Option<i64> {
    Cookie::parse(set_cookie.to_owned())
        .ok()?
        .max_age()
        .map(|age| age.whole_seconds())
}

#[actix_web::test]
async fn a_remembered_login_persists_its_cookie_and_follows_its_own_timeouts() {
    let app = app(LoginMiddleware::builder(MemoryStore::new())
        .timeouts(Timeouts::BROWSER.with_idle(Duration::from_secs(1)))
        .remember_timeouts(Timeouts::new(
            Duration::from_secs(40),
            Duration::from_secs(60),
        ))
        .build())
    .await;
    let (status, cookies, _) = answer(&app, post("/login/1", None)).await;
    assert_eq!(status, 200);
    assert_eq!(max_age(&cookies[0]), None, "{cookies:?}");
    // Shown with --nocapture: what a browser receives for each kind of login.
    eprintln!("normal login: Set-Cookie: {}", cookies[0]);
    let normal = Cookie::parse(cookies[0].clone())
        .unwrap()
        .value()
        .to_owned();

    let (status, cookies, _) = answer(&app, post("/remembered-login/1", None)).await;
    assert_eq!(status, 200);
    eprintln!("remembered login: Set-Cookie: {}", cookies[0]);
    let age = max_age(&cookies[0]).expect("a remembered cookie has a Max-Age");
    assert!((38..=40).contains(&age), "{cookies:?}");
    let remembered = Cookie::parse(cookies[0].clone())
        .unwrap()
        .value()
        .to_owned();

    // Past the normal idle timeout, only the remembered session is alive.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(call(&app, get("/me", Some(&normal))).await.0, 401);
    let (status, _, body) = answer(&app, get("/me", Some(&remembered))).await;
    assert_eq!(status, 200);
    assert!(body.contains(r#""remembered":true"#), "{body}");
    let (_, _, body) = answer(&app, get("/sessions", Some(&remembered))).await;
    let list: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(list.len(), 1, "{body}");
    assert_eq!(list[0]["remembered"], true);
    assert_eq!(list[0]["kind"], "browser");

    // Not fresh once the fresh window is over, however recently it was used.
    let stale = app_with_fresh_window(Duration::from_millis(500)).await;
    let (_, cookies, _) = answer(&stale, post("/remembered-login/1", None)).await;
    let token = Cookie::parse(cookies[0].clone())
        .unwrap()
        .value()
        .to_owned();
    assert_eq!(call(&stale, post("/sudo", Some(&token))).await.0, 204);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(call(&stale, post("/sudo", Some(&token))).await.0, 403);
}

async fn app_with_fresh_window(
    window: Duration,
) -> impl Service<
    actix_http::Request,
    Response = ServiceResponse<impl MessageBody>,
    Error = actix_web::Error,
> {
    app(LoginMiddleware::builder(MemoryStore::new())
        .fresh_window(window)
        .build())
    .await
}

/// When a remembered session's deadline moves, its cookie's expiry moves with it; a request
/// that does not move it sends no cookie.
#[actix_web::test]
async fn a_remembered_cookie_moves_with_its_deadline() {
    let plain = app(LoginMiddleware::builder(MemoryStore::new())
        .timeouts(Timeouts::BROWSER.with_idle(Duration::from_secs(20)))
        .build())
    .await;
    let app = app(LoginMiddleware::builder(
        redis_store_at(&shared_redis_url(), &unique_prefix()).await,
    )
    .remember_timeouts(Timeouts::REMEMBERED.with_idle(Duration::from_secs(20)))
    .build())
    .await;
    let (_, cookies, _) = answer(&app, post("/remembered-login/1", None)).await;
    let token = Cookie::parse(cookies[0].clone())
        .unwrap()
        .value()
        .to_owned();

    // Right after login the deadline is not worth moving.
    let (status, cookies, _) = answer(&app, get("/me", Some(&token))).await;
    assert_eq!((status, cookies.len()), (200, 0), "{cookies:?}");

    // Past a tenth of the idle timeout it moves, and the cookie is sent again with the new
    // expiry, the same token, and the usual attributes.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let res = test::call_service(&app, get("/me", Some(&token))).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers().get(header::CACHE_CONTROL).unwrap(),
        "no-store"
    );
    let cookie = set_cookie(&res).expect("the moved deadline goes out as a cookie");
    assert_eq!(cookie.value(), token);
    assert!(cookie.http_only().unwrap() && cookie.secure().unwrap());
    let age = cookie.max_age().unwrap().whole_seconds();
    assert!((18..=20).contains(&age), "{cookie}");

    // A normal session's refresh never sends a cookie.
    let normal = log_in(&plain, 1).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let (status, cookies, _) = answer(&plain, get("/me", Some(&normal))).await;
    assert_eq!((status, cookies.len()), (200, 0), "{cookies:?}");
}

#[actix_web::test]
async fn a_cookie_domain_takes_the_secure_prefix() {
    let middleware = LoginMiddleware::builder(MemoryStore::new())
        .cookie_domain("example.test")
        .try_build()
        .unwrap();
    let app = app(middleware).await;
    let (status, cookies, _) = answer(&app, post("/login/1", None)).await;
    assert_eq!(status, 200);
    let cookie = Cookie::parse(cookies[0].clone()).unwrap();
    assert_eq!(cookie.name(), "__Secure-id");
    assert_eq!(cookie.domain(), Some("example.test"));
    assert!(cookie.secure().unwrap() && cookie.http_only().unwrap());
    let req = test::TestRequest::get()
        .uri("/me")
        .insert_header((header::COOKIE, format!("__Secure-id={}", cookie.value())))
        .to_request();
    assert_eq!(answer(&app, req).await.0, 200);
    // The default name is no longer read.
    assert_eq!(call(&app, get("/me", Some(cookie.value()))).await.0, 401);

    // A sibling subdomain is same-site but not the app's origin: still refused.
    let req = test::TestRequest::post()
        .uri("/logout")
        .insert_header((header::COOKIE, format!("__Secure-id={}", cookie.value())))
        .insert_header(("sec-fetch-site", "same-site"))
        .to_request();
    assert_eq!(answer(&app, req).await.0, 403);

    let refused = LoginMiddleware::builder(MemoryStore::new())
        .cookie_name("__Host-sid")
        .cookie_domain("example.test")
        .try_build()
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("__Host-") && refused.contains("Domain"),
        "{refused}"
    );
    let panicked = std::panic::catch_unwind(|| {
        LoginMiddleware::builder(MemoryStore::new())
            .cookie_name("__Host-sid")
            .cookie_domain("example.test")
            .build()
    });
    assert!(panicked.is_err());
}

/// Redis: a personal token is a session like the others, with a TTL and an index entry.
#[actix_web::test]
async fn a_token_in_redis_has_a_ttl_and_sits_in_its_users_index() {
    let prefix = unique_prefix();
    let url = shared_redis_url();
    let middleware = LoginMiddleware::new(redis_store_at(&url, &prefix).await);
    let app = app(middleware.clone()).await;
    let browser = log_in(&app, 9).await;
    let created = new_token(
        &app,
        &browser,
        json!({ "name": "ci", "expires_in_secs": 3600 }),
    )
    .await;
    let token = created["token"].as_str().unwrap();
    let mut conn = connection(&url).unwrap();
    let stored = stored_key(token);
    let key = format!("{prefix}:s:{{{}}}{}", &stored[..4], &stored[4..]);
    let ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut conn).unwrap();
    assert!((3_590_000..=3_600_000).contains(&ttl), "{ttl}");
    let sessions: Sessions = middleware.sessions();
    assert_eq!(sessions.list("9").await.unwrap().len(), 2);
    assert_eq!(sessions.revoke_all("9").await.unwrap(), 2);
    let exists: bool = redis::cmd("EXISTS").arg(&key).query(&mut conn).unwrap();
    assert!(!exists);
}

/// A login token is rejected on the store outage like any session: 503, never anonymous.
#[cfg(feature = "test-util")]
#[actix_web::test]
async fn a_bearer_request_fails_closed_when_redis_is_down() {
    let server = RedisServer::start();
    let middleware = LoginMiddleware::new(redis_store_at(&server.url(), "down").await);
    let app = app(middleware.clone()).await;
    let header = middleware
        .test_bearer(Login::new("1", &json!({ "id": 1 })))
        .await
        .unwrap();
    server.stop();
    let req = test::TestRequest::get()
        .uri("/me")
        .insert_header(header)
        .to_request();
    let (status, cookies, body) = answer(&app, req).await;
    assert_eq!((status, cookies.len()), (503, 0), "{body}");
}

/// Logging in a script with the same id as a browser creates a separate session that a
/// logout of either leaves alone.
#[actix_web::test]
async fn token_and_browser_logins_of_one_user_are_independent() {
    let app = app(LoginMiddleware::new(MemoryStore::new())).await;
    let browser = log_in(&app, 3).await;
    let (_, _, body) = answer(&app, post("/token-login/3", None)).await;
    let issued: serde_json::Value = serde_json::from_str(&body).unwrap();
    let token = issued["token"].as_str().unwrap();
    assert_eq!(call(&app, post("/logout", Some(&browser))).await.0, 204);
    assert_eq!(
        answer(
            &app,
            with_bearer(test::TestRequest::get().uri("/me"), token)
        )
        .await
        .0,
        200
    );
}

async fn call<S, B>(app: &S, req: actix_http::Request) -> (u16, String)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    status_and_body(test::call_service(app, req).await).await
}

/// Tokens are never logged, whichever way they travel and however they fail.
#[actix_web::test]
async fn logs_never_contain_a_bearer_token() {
    let (logs, _guard) = support::logs::capture_logs();
    let app = app(LoginMiddleware::new(MemoryStore::new())).await;
    let browser = log_in(&app, 12).await;
    let created = new_token(&app, &browser, json!({ "name": "logged?" })).await;
    let token = created["token"].as_str().unwrap();
    let (_, _, body) = answer(&app, post("/token-login/12", None)).await;
    let issued: serde_json::Value = serde_json::from_str(&body).unwrap();
    let login_token = issued["token"].as_str().unwrap();
    for secret in [token, login_token] {
        answer(
            &app,
            with_bearer(test::TestRequest::get().uri("/me"), secret),
        )
        .await;
        answer(
            &app,
            with_bearer(test::TestRequest::post().uri("/login/12"), secret),
        )
        .await;
        answer(
            &app,
            with_bearer(test::TestRequest::post().uri("/logout"), secret),
        )
        .await;
        answer(
            &app,
            with_bearer(test::TestRequest::get().uri("/me"), secret),
        )
        .await;
    }
    let malformed = format!("{token}x");
    answer(
        &app,
        with_bearer(test::TestRequest::get().uri("/me"), &malformed),
    )
    .await;

    let logs = logs.text();
    assert!(logs.contains("personal access token created"), "{logs}");
    for secret in [token, login_token] {
        assert!(
            !logs.contains(secret) && !logs.contains(&secret[..12]),
            "token in logs"
        );
        assert!(!logs.contains(&stored_key(secret)), "token hash in logs");
    }
}

/// Revoking its own session by id ends it for the rest of the request too, as a logout does:
/// the cookie is cleared, and a bearer request's token dies without a cookie.
#[actix_web::test]
async fn revoking_the_current_session_by_id_clears_its_cookie() {
    let app = app(LoginMiddleware::new(MemoryStore::new())).await;
    let browser = log_in(&app, 4).await;
    let (_, _, body) = answer(&app, get("/sessions", Some(&browser))).await;
    let list: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let own = list[0]["id"].as_str().unwrap().to_owned();
    let req = with_cookie(
        test::TestRequest::delete()
            .uri(&format!("/sessions/{own}"))
            .insert_header(("sec-fetch-site", "same-origin")),
        Some(&browser),
    );
    let (status, cookies, _) = answer(&app, req).await;
    assert_eq!(status, 204);
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    assert!(
        cookies[0].starts_with("__Host-id=;") && cookies[0].contains("Max-Age=0"),
        "{cookies:?}"
    );
    assert_eq!(call(&app, get("/me", Some(&browser))).await.0, 401);

    let created = new_token(&app, &log_in(&app, 4).await, json!({ "name": "self" })).await;
    let token = created["token"].as_str().unwrap();
    let own = created["id"].as_str().unwrap();
    let req = test::TestRequest::delete().uri(&format!("/sessions/{own}"));
    let (status, cookies, _) = answer(&app, with_bearer(req, token)).await;
    assert_eq!((status, cookies.len()), (204, 0));
    assert_eq!(
        answer(
            &app,
            with_bearer(test::TestRequest::get().uri("/me"), token)
        )
        .await
        .0,
        401
    );
}

/// `POST /tokens` with a bearer token, answering the status and the JSON body.
async fn mint_with_bearer<S, B>(
    app: &S,
    token: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let (status, _, body) = answer(app, with_bearer(json_post("/tokens", body), token)).await;
    let json = serde_json::from_str(&body).unwrap_or_else(|_| json!({ "raw": body }));
    (status, json)
}

/// `POST /tokens` with the browser session `cookie`, answering the status, the body and the
/// `Retry-After` header.
async fn mint_with_cookie<S, B>(app: &S, cookie: &str, name: &str) -> (u16, String, Option<String>)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let req = json_post("/tokens", json!({ "name": name }))
        .insert_header((header::COOKIE, format!("__Host-id={cookie}")))
        .insert_header(("sec-fetch-site", "same-origin"))
        .to_request();
    let res = test::call_service(app, req).await;
    let retry_after = res
        .headers()
        .get(header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_owned());
    let (status, body) = status_and_body(res).await;
    (status, body, retry_after)
}

async fn me_with_bearer<S, B>(app: &S, token: &str) -> u16
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    answer(app, with_bearer(test::TestRequest::get().uri("/me"), token))
        .await
        .0
}

/// Issue 19: a stolen session minted as many tokens as the session cap allows, after which
/// every login of the owner answered 200 with a cookie that was already dead. Tokens have a
/// limit of their own now and never push a login out; a login never ends itself.
#[actix_web::test]
async fn tokens_never_lock_the_owner_out() {
    let app = app(LoginMiddleware::builder(MemoryStore::new())
        .max_sessions_per_user(3)
        .build())
    .await;
    let stolen = log_in(&app, 1).await;
    let mut tokens = Vec::new();
    for i in 0..3 {
        let created = new_token(&app, &stolen, json!({ "name": format!("t{i}") })).await;
        tokens.push(created);
    }
    for round in 0..4 {
        // Creation times are kept to the millisecond; "oldest" needs a clock tick between logins.
        tokio::time::sleep(Duration::from_millis(3)).await;
        let owner = log_in(&app, 1).await;
        assert_eq!(
            call(&app, get("/me", Some(&owner))).await.0,
            200,
            "login {round} answered 200 with a dead cookie"
        );
        let (status, body) = call(&app, get("/sessions", Some(&owner))).await;
        assert_eq!(status, 200, "{body}");
        let list: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        let listed_tokens = list.iter().filter(|s| s["kind"] == "token").count();
        assert_eq!(listed_tokens, 3 - round.min(3), "{body}");
        // The owner sees the tokens and ends one per round.
        if let Some(doomed) = tokens.pop() {
            let path = format!("/sessions/{}", doomed["id"].as_str().unwrap());
            let req = with_cookie(
                test::TestRequest::delete()
                    .uri(&path)
                    .insert_header(("sec-fetch-site", "same-origin")),
                Some(&owner),
            );
            assert_eq!(call(&app, req).await.0, 204);
            assert_eq!(
                me_with_bearer(&app, doomed["token"].as_str().unwrap()).await,
                401
            );
        }
    }
}

/// Issue 19: creating a token is an account change. A session outside its fresh window gets
/// `403 reauth_required`, as a password change does, until the password is entered again.
#[actix_web::test]
async fn creating_a_token_needs_a_fresh_login() {
    let app = app_with_fresh_window(Duration::from_secs(1)).await;
    let browser = log_in(&app, 1).await;
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let (status, body, _) = mint_with_cookie(&app, &browser, "late").await;
    assert_eq!(
        (status, body.as_str()),
        (403, r#"{"error":"reauth_required"}"#)
    );
    // Nothing was created.
    let (_, list) = call(&app, get("/sessions", Some(&browser))).await;
    assert!(!list.contains("late"), "{list}");
    // After the password is entered again, the renewed session may.
    let res = test::call_service(&app, post("/reauth", Some(&browser))).await;
    assert_eq!(res.status(), 204);
    let fresh = set_cookie(&res).unwrap().value().to_owned();
    let (status, body, _) = mint_with_cookie(&app, &fresh, "now").await;
    assert_eq!(status, 201, "{body}");
}

/// Issue 19: a token is never fresh, so it cannot mint tokens; a bearer login, fresh from its
/// password, can, and what it mints ends when it ends, however that happens.
#[actix_web::test]
async fn a_token_minted_by_a_login_token_ends_with_it() {
    let app = app(LoginMiddleware::new(MemoryStore::new())).await;
    check_parent_link(&app).await;
}

/// What `a_token_minted_by_a_login_token_ends_with_it` checks, on any store (user 5).
async fn check_parent_link<S, B>(app: &S)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let login = |app| async move {
        let (_, _, body) = answer(app, post("/token-login/5", None)).await;
        let issued: serde_json::Value = serde_json::from_str(&body).unwrap();
        issued["token"].as_str().unwrap().to_owned()
    };
    // Logout of the parent.
    let parent = login(app).await;
    let (status, child) = mint_with_bearer(app, &parent, json!({ "name": "child" })).await;
    assert_eq!(status, 201, "{child}");
    let child = child["token"].as_str().unwrap().to_owned();
    let (status, grandchild) = mint_with_bearer(app, &child, json!({ "name": "gc" })).await;
    assert_eq!(
        (status, grandchild),
        (403, json!({ "error": "reauth_required" }))
    );
    assert_eq!(me_with_bearer(app, &child).await, 200);
    let (status, _, _) = answer(
        &app,
        with_bearer(test::TestRequest::post().uri("/logout"), &parent),
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(me_with_bearer(app, &child).await, 401, "outlived a logout");

    // Revocation of the parent by another session of the user.
    let parent = login(app).await;
    let (_, child) = mint_with_bearer(app, &parent, json!({ "name": "child2" })).await;
    let child = child["token"].as_str().unwrap().to_owned();
    let browser = log_in(app, 5).await;
    let (_, body) = call(app, get("/sessions", Some(&browser))).await;
    let list: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert!(list.iter().any(|s| s["name"] == "child2"), "{body}");
    let parent_id = list
        .iter()
        .find(|s| s["kind"] == "token" && s["name"].is_null())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let req = with_cookie(
        test::TestRequest::delete()
            .uri(&format!("/sessions/{parent_id}"))
            .insert_header(("sec-fetch-site", "same-origin")),
        Some(&browser),
    );
    assert_eq!(call(app, req).await.0, 204);
    assert_eq!(
        me_with_bearer(app, &child).await,
        401,
        "outlived a revocation"
    );
    // A dead child is not listed as a live session.
    let (_, body) = call(app, get("/sessions", Some(&browser))).await;
    assert!(!body.contains("child"), "{body}");
}

/// A token whose parent login idles out ends with it, though the token itself is in use.
#[actix_web::test]
async fn a_token_minted_by_a_login_token_ends_when_it_idles_out() {
    let app = app(LoginMiddleware::builder(MemoryStore::new())
        .timeouts(Timeouts::BROWSER.with_idle(Duration::from_secs(1)))
        .build())
    .await;
    let (_, _, body) = answer(&app, post("/token-login/6", None)).await;
    let issued: serde_json::Value = serde_json::from_str(&body).unwrap();
    let parent = issued["token"].as_str().unwrap().to_owned();
    let (status, child) = mint_with_bearer(&app, &parent, json!({ "name": "c" })).await;
    assert_eq!(status, 201, "{child}");
    let child = child["token"].as_str().unwrap().to_owned();
    // The child is used; the parent is not, and idles out.
    for _ in 0..7 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        me_with_bearer(&app, &child).await;
    }
    assert_eq!(me_with_bearer(&app, &parent).await, 401);
    assert_eq!(
        me_with_bearer(&app, &child).await,
        401,
        "outlived its idle parent"
    );
}

/// RFC 6750 section 3.1: a token refused for its scope learns which scope the route needs.
#[actix_web::test]
async fn a_missing_scope_is_named_in_the_challenge() {
    let app = app(LoginMiddleware::new(MemoryStore::new())).await;
    let browser = log_in(&app, 1).await;
    let narrow = new_token(&app, &browser, json!({ "name": "n", "scopes": ["read"] })).await;
    let req = with_bearer(
        test::TestRequest::post().uri("/deploy"),
        narrow["token"].as_str().unwrap(),
    );
    let res = test::call_service(&app, req).await;
    assert_eq!(res.status(), 403);
    assert_eq!(
        res.headers()
            .get(header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap()),
        Some(r#"Bearer error="insufficient_scope", scope="deploy""#)
    );
    assert_eq!(status_and_body(res).await.1, r#"{"error":"forbidden"}"#);
}

/// Issue 19: token creation is rate-limited per user, with `Retry-After`.
#[actix_web::test]
async fn token_creation_is_rate_limited_per_user() {
    let app = app(LoginMiddleware::new(MemoryStore::new())).await;
    let browser = log_in(&app, 1).await;
    for i in 0..10 {
        let (status, body, _) = mint_with_cookie(&app, &browser, &format!("t{i}")).await;
        assert_eq!(status, 201, "{i}: {body}");
    }
    let (status, body, retry_after) = mint_with_cookie(&app, &browser, "one too many").await;
    assert_eq!(
        (status, body.as_str()),
        (429, r#"{"error":"token_rate_limited"}"#)
    );
    let retry_after: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=3600).contains(&retry_after), "{retry_after}");
    // Another user is not affected.
    let other = log_in(&app, 2).await;
    assert_eq!(mint_with_cookie(&app, &other, "mine").await.0, 201);
}

/// Issue 19: a demotion while the user keeps minting tokens used to answer 503: every listing
/// found new tokens carrying the old profile. Now tokens copy the owner's live profile, and
/// the update settles; every session ends with the new roles.
#[actix_web::test]
async fn a_live_update_converges_while_tokens_are_minted() {
    let store = redis_store_at(&shared_redis_url(), &unique_prefix()).await;
    // Limits out of the way: the user mints as fast as the store lets them.
    let middleware = LoginMiddleware::builder(store)
        .max_tokens_per_user(10_000)
        .token_creation_limit(10_000, Duration::from_secs(3600))
        .build();
    let sessions = middleware.sessions();
    let app = app(middleware).await;
    let browser = log_in(&app, 9).await;
    let minting = std::cell::Cell::new(true);
    let minted = std::cell::RefCell::new(Vec::<String>::new());
    let minter = |n: u32| {
        let (app, browser, minting, minted) = (&app, &browser, &minting, &minted);
        async move {
            let mut i = 0;
            while minting.get() && i < 100 {
                let req = json_post("/tokens", json!({ "name": format!("m{n}-{i}") }))
                    .insert_header((header::COOKIE, format!("__Host-id={browser}")))
                    .insert_header(("sec-fetch-site", "same-origin"))
                    .to_request();
                let (status, body) = call(app, req).await;
                assert_eq!(status, 201, "{body}");
                if status == 201 {
                    let issued: serde_json::Value = serde_json::from_str(&body).unwrap();
                    minted
                        .borrow_mut()
                        .push(issued["token"].as_str().unwrap().to_owned());
                }
                i += 1;
            }
        }
    };
    let update = async {
        // Let the minters get going first.
        while minted.borrow().len() < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let started = minted.borrow().len();
        let result = sessions
            .update_user("9", &json!({ "id": 9, "demoted": true }), ["reader"])
            .await;
        minting.set(false);
        (result, minted.borrow().len() - started)
    };
    let minters = futures_util::future::join_all((0..8).map(minter));
    let ((result, during), _) = futures_util::future::join(update, minters).await;
    assert!(result.is_ok(), "{result:?}");
    // The update really raced the minting.
    assert!(during > 0, "no token was minted while the update ran");
    // Every session of the user, the tokens minted meanwhile included, has the new profile.
    let expected = json!({ "roles": ["reader"], "profile": { "id": 9, "demoted": true } });
    let (_, body) = call(&app, get("/profile", Some(&browser))).await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        expected
    );
    let minted = minted.into_inner();
    assert!(minted.len() >= 2, "{minted:?}");
    for token in &minted {
        let req = with_bearer(test::TestRequest::get().uri("/profile"), token);
        let (status, _, body) = answer(&app, req).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).unwrap(),
            expected
        );
    }
}

/// What a bearer request costs in Redis: one `HMGET` for a token, and one more for a token a
/// login token made, which reads its parent too; nothing for either on a cached instance.
#[actix_web::test]
async fn a_token_made_by_a_login_token_costs_one_more_read() {
    let server = RedisServer::start();
    for cached in [false, true] {
        let mut builder = RedisStore::builder(server.url()).key_prefix(if cached {
            "cost-cached"
        } else {
            "cost"
        });
        if cached {
            builder = builder.local_cache(1000);
        }
        let app = app(LoginMiddleware::new(builder.connect().await.unwrap())).await;
        let browser = log_in(&app, 1).await;
        let plain = new_token(&app, &browser, json!({ "name": "plain" })).await;
        let (_, _, body) = answer(&app, post("/token-login/1", None)).await;
        let login: serde_json::Value = serde_json::from_str(&body).unwrap();
        let (status, child) = mint_with_bearer(
            &app,
            login["token"].as_str().unwrap(),
            json!({ "name": "child" }),
        )
        .await;
        assert_eq!(status, 201, "{child}");
        for (token, hmgets) in [(&plain, 1), (&child, 2)] {
            let token = token["token"].as_str().unwrap();
            // Warm the cache, if any.
            assert_eq!(me_with_bearer(&app, token).await, 200);
            let before = server.command_counts();
            assert_eq!(me_with_bearer(&app, token).await, 200);
            let sent = support::redis_server::commands_during_since(&server, &before);
            let expected = if cached {
                std::collections::HashMap::new()
            } else {
                std::collections::HashMap::from([("hmget".to_owned(), hmgets)])
            };
            assert_eq!(sent, expected, "cached: {cached}");
        }
    }
}

/// The creation limit is counted in Redis, so two app instances share it.
#[actix_web::test]
async fn the_token_creation_limit_holds_across_instances() {
    let prefix = unique_prefix();
    let instance = || async {
        let store = redis_store_at(&shared_redis_url(), &prefix).await;
        app(LoginMiddleware::builder(store)
            .token_creation_limit(3, Duration::from_secs(3600))
            .build())
        .await
    };
    let (one, two) = (instance().await, instance().await);
    let browser = log_in(&one, 1).await;
    assert_eq!(mint_with_cookie(&one, &browser, "a").await.0, 201);
    assert_eq!(mint_with_cookie(&two, &browser, "b").await.0, 201);
    assert_eq!(mint_with_cookie(&one, &browser, "c").await.0, 201);
    for app in [&one, &two] {
        let (status, body, retry_after) = mint_with_cookie(app, &browser, "d").await;
        assert_eq!(
            (status, body.as_str()),
            (429, r#"{"error":"token_rate_limited"}"#)
        );
        assert!(retry_after.is_some());
    }
}
