//! Session lifecycle and account controls: listing, revocation across instances, the per-user
//! cap, rotation, sudo mode and access rules, against real Redis.

use std::time::Duration;

use actix_login::store::SessionStore;
use actix_login::{
    AuthUser, Error, LoginMiddleware, LoginMiddlewareBuilder, Require, Session, Sessions, Timeouts,
};
use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{test, web, App, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::support;
use crate::support::http::*;
use crate::support::redis_server::{connection, shared_redis_url, unique_prefix};

#[derive(Serialize, Deserialize)]
struct Profile {
    id: u64,
}

async fn login(session: Session, id: web::Path<u64>) -> Result<HttpResponse, Error> {
    let roles: &[&str] = if *id == 1 { &["admin"] } else { &[] };
    session
        .login_with_roles(id.to_string(), &Profile { id: *id }, roles.iter().copied())
        .await?;
    Ok(HttpResponse::Ok().finish())
}

async fn me(user: AuthUser<Profile>) -> String {
    format!("{} {}", user.id, user.session_id())
}

async fn list(session: Session) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(session.list_sessions().await?))
}

async fn revoke(session: Session, id: web::Path<String>) -> Result<HttpResponse, Error> {
    Ok(match session.revoke_session(&id).await? {
        true => HttpResponse::NoContent().finish(),
        false => HttpResponse::NotFound().finish(),
    })
}

async fn revoke_others(session: Session) -> Result<HttpResponse, Error> {
    session.revoke_other_sessions().await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn revoke_all(session: Session) -> Result<HttpResponse, Error> {
    session.revoke_all_sessions().await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn admin_revoke(sessions: Sessions, user_id: web::Path<String>) -> Result<String, Error> {
    Ok(sessions.revoke_all(&user_id).await?.to_string())
}

async fn renew(session: Session) -> Result<HttpResponse, Error> {
    session.renew().await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn reauth(session: Session) -> Result<HttpResponse, Error> {
    // A real app verifies the password first.
    session.reauthenticate().await?;
    Ok(HttpResponse::NoContent().finish())
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/login/{id}", web::post().to(login))
        .route("/me", web::get().to(me))
        .route("/sessions", web::get().to(list))
        .route("/sessions/revoke-others", web::post().to(revoke_others))
        .route("/sessions/revoke-all", web::post().to(revoke_all))
        .route("/sessions/{id}", web::delete().to(revoke))
        .route("/admin-revoke/{user}", web::post().to(admin_revoke))
        .route("/renew", web::post().to(renew))
        .route("/reauth", web::post().to(reauth))
        .service(
            web::resource("/sensitive")
                .wrap(Require::login().fresh())
                .route(web::post().to(HttpResponse::NoContent)),
        )
        .service(
            web::scope("/admin")
                .wrap(Require::role("admin"))
                .route("", web::get().to(HttpResponse::Ok)),
        )
        .service(
            web::resource("/admin-page")
                .wrap(Require::role("admin").redirect_to("/login-page"))
                .route(web::get().to(HttpResponse::Ok)),
        )
        .service(
            web::scope("/account")
                .wrap(Require::login().redirect_to("/login-page"))
                .route("/{tail:.*}", web::get().to(HttpResponse::Ok)),
        );
}

async fn app(
    middleware: LoginMiddleware,
) -> impl Service<
    actix_http::Request,
    Response = ServiceResponse<impl MessageBody>,
    Error = actix_web::Error,
> {
    test::init_service(App::new().configure(routes).wrap(middleware)).await
}

/// A middleware on a fresh key prefix of the shared Redis, and that prefix.
async fn redis_middleware(
    configure: impl FnOnce(LoginMiddlewareBuilder) -> LoginMiddlewareBuilder,
) -> (LoginMiddleware, String, String) {
    let url = shared_redis_url();
    let prefix = unique_prefix();
    let builder = LoginMiddleware::builder(redis_store_at(&url, &prefix).await);
    (configure(builder).build(), url, prefix)
}

fn delete(path: &str, cookie: &str) -> actix_http::Request {
    test::TestRequest::delete()
        .uri(path)
        .insert_header(("sec-fetch-site", "same-origin"))
        .insert_header((header::COOKIE, format!("__Host-id={cookie}")))
        .to_request()
}

/// The public id of the session behind `token`.
async fn session_id<S, B>(app: &S, token: &str) -> String
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let body = status_and_body(test::call_service(app, get("/me", Some(token))).await).await;
    assert_eq!(body.0, 200);
    body.1.split(' ').nth(1).unwrap().to_owned()
}

fn index_members(url: &str, prefix: &str, user: &str) -> Vec<String> {
    let mut conn = connection(url).unwrap();
    redis::cmd("HKEYS")
        .arg(format!("{prefix}:u:{user}"))
        .query(&mut conn)
        .unwrap()
}

#[actix_web::test]
async fn session_list_marks_the_current_one_and_reveals_no_secret() {
    let (middleware, _, _) = redis_middleware(|b| b).await;
    let app = app(middleware).await;
    let mut tokens = Vec::new();
    for agent in ["Firefox/140", "curl/8.5"] {
        let req = test::TestRequest::post()
            .uri("/login/7")
            .peer_addr("198.51.100.7:40000".parse().unwrap())
            .insert_header((header::USER_AGENT, agent))
            .to_request();
        let res = test::call_service(&app, req).await;
        tokens.push(set_cookie(&res).unwrap().value().to_owned());
    }
    let current_id = session_id(&app, &tokens[1]).await;

    let (status, body) =
        status_and_body(test::call_service(&app, get("/sessions", Some(&tokens[1]))).await).await;
    assert_eq!(status, 200);
    for token in &tokens {
        assert!(
            !body.contains(token.as_str()) && !body.contains(&stored_key(token)),
            "{body}"
        );
    }
    let list: Vec<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_str(&body).unwrap();
    assert_eq!(list.len(), 2, "{body}");
    for entry in &list {
        let mut keys: Vec<&str> = entry.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "created_at",
                "current",
                "expires_at",
                "id",
                "impersonated_by",
                "ip",
                "kind",
                "last_seen",
                "method",
                "name",
                "remembered",
                "user_agent"
            ]
        );
        assert!(entry["impersonated_by"].is_null());
        assert_eq!(entry["method"], "password");
        assert_eq!(entry["kind"], "browser");
        assert_eq!(entry["remembered"], false);
        assert!(entry["name"].is_null());
        assert_eq!(entry["ip"], "198.51.100.7");
        assert!(entry["created_at"].as_u64().unwrap() <= entry["last_seen"].as_u64().unwrap());
        assert_eq!(entry["current"], entry["id"] == current_id.as_str());
    }
    let agents: Vec<&str> = list
        .iter()
        .map(|e| e["user_agent"].as_str().unwrap())
        .collect();
    assert!(agents.contains(&"Firefox/140") && agents.contains(&"curl/8.5"));
    assert_eq!(list.iter().filter(|e| e["current"] == true).count(), 1);
}

#[actix_web::test]
async fn revoking_one_session_works_across_instances_and_only_for_its_owner() {
    let (a_mw, url, prefix) = redis_middleware(|b| b).await;
    let a = app(a_mw).await;
    let b = app(LoginMiddleware::new(redis_store_at(&url, &prefix).await)).await;
    let t1 = log_in(&a, 7).await;
    let t2 = log_in(&a, 7).await;
    let stranger = log_in(&a, 8).await;
    let id2 = session_id(&a, &t2).await;
    let stranger_id = session_id(&a, &stranger).await;

    assert_eq!(
        status(&b, delete(&format!("/sessions/{stranger_id}"), &t1)).await,
        404
    );
    assert_eq!(
        status(&b, delete("/sessions/no-such-session", &t1)).await,
        404
    );
    assert_eq!(status(&a, get("/me", Some(&stranger))).await, 200);

    assert_eq!(
        status(&b, delete(&format!("/sessions/{id2}"), &t1)).await,
        204
    );
    assert_eq!(status(&a, get("/me", Some(&t2))).await, 401);
    assert_eq!(status(&a, get("/me", Some(&t1))).await, 200);
    assert_eq!(
        status(&b, delete(&format!("/sessions/{id2}"), &t1)).await,
        404
    );
}

#[actix_web::test]
async fn revoke_others_and_revoke_all_hold_on_every_instance() {
    let (a_mw, url, prefix) = redis_middleware(|b| b).await;
    let a = app(a_mw).await;
    let b = app(LoginMiddleware::new(redis_store_at(&url, &prefix).await)).await;
    let keep = log_in(&a, 7).await;
    let others = [log_in(&a, 7).await, log_in(&b, 7).await];
    let bystander = log_in(&a, 8).await;

    assert_eq!(
        status(&b, post("/sessions/revoke-others", Some(&keep))).await,
        204
    );
    for token in &others {
        assert_eq!(status(&a, get("/me", Some(token))).await, 401);
        assert_eq!(status(&b, get("/me", Some(token))).await, 401);
    }
    assert_eq!(status(&a, get("/me", Some(&keep))).await, 200);

    let res = test::call_service(&b, post("/sessions/revoke-all", Some(&keep))).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        set_cookie(&res).unwrap().value(),
        "",
        "revoke-all clears the cookie"
    );
    assert_eq!(status(&a, get("/me", Some(&keep))).await, 401);
    assert_eq!(status(&a, get("/me", Some(&bystander))).await, 200);

    // Listing prunes what revocation left in the index.
    let fresh = log_in(&a, 7).await;
    assert_eq!(status(&a, get("/sessions", Some(&fresh))).await, 200);
    assert_eq!(index_members(&url, &prefix, "7").len(), 1);
}

#[actix_web::test]
async fn the_oldest_sessions_are_evicted_at_the_cap() {
    let (middleware, url, prefix) = redis_middleware(|b| b.max_sessions_per_user(2)).await;
    let app = app(middleware).await;
    let mut tokens = Vec::new();
    for _ in 0..3 {
        // Login times have millisecond resolution; keep the order unambiguous.
        tokio::time::sleep(Duration::from_millis(3)).await;
        tokens.push(log_in(&app, 7).await);
    }
    assert_eq!(
        status(&app, get("/me", Some(&tokens[0]))).await,
        401,
        "oldest survived"
    );
    assert_eq!(status(&app, get("/me", Some(&tokens[1]))).await, 200);
    assert_eq!(status(&app, get("/me", Some(&tokens[2]))).await, 200);
    tokio::time::sleep(Duration::from_millis(3)).await;
    let fourth = log_in(&app, 7).await;
    assert_eq!(status(&app, get("/me", Some(&tokens[1]))).await, 401);
    assert_eq!(status(&app, get("/me", Some(&fourth))).await, 200);
    let (_, body) =
        status_and_body(test::call_service(&app, get("/sessions", Some(&fourth))).await).await;
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Value>>(&body)
            .unwrap()
            .len(),
        2
    );
    assert_eq!(index_members(&url, &prefix, "7").len(), 2);
    // Other users are not affected by someone else's cap.
    let other = log_in(&app, 8).await;
    assert_eq!(status(&app, get("/me", Some(&other))).await, 200);
}

#[actix_web::test]
async fn expired_sessions_leave_the_index_and_every_key_has_a_ttl() {
    let (middleware, url, prefix) =
        redis_middleware(|b| b.timeouts(Timeouts::BROWSER.with_idle(Duration::from_millis(300))))
            .await;
    let app = app(middleware).await;
    for _ in 0..3 {
        log_in(&app, 7).await;
    }
    assert_eq!(index_members(&url, &prefix, "7").len(), 3);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let survivor = log_in(&app, 7).await;
    assert_eq!(
        index_members(&url, &prefix, "7").len(),
        1,
        "expired sessions piled up"
    );
    let (_, body) =
        status_and_body(test::call_service(&app, get("/sessions", Some(&survivor))).await).await;
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Value>>(&body)
            .unwrap()
            .len(),
        1
    );

    log_in(&app, 8).await;
    let renewed = log_in(&app, 9).await;
    assert_eq!(status(&app, post("/renew", Some(&renewed))).await, 204);
    let keys = support::redis_server::dump(&url, &prefix);
    assert!(keys.len() >= 6, "{keys:?}");
    for (key, _, ttl) in keys {
        assert!(ttl > 0, "{key} has no TTL");
    }
}

#[actix_web::test]
async fn renew_moves_the_session_to_a_new_token_at_once() {
    let (middleware, url, prefix) = redis_middleware(|b| b).await;
    let app = app(middleware).await;
    let old = log_in(&app, 7).await;
    let id = session_id(&app, &old).await;

    let res = test::call_service(&app, post("/renew", Some(&old))).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        res.headers().get(header::CACHE_CONTROL).unwrap(),
        "no-store"
    );
    let new = set_cookie(&res).unwrap().value().to_owned();
    assert_ne!(new, old);
    assert_eq!(status(&app, get("/me", Some(&old))).await, 401);
    assert_eq!(
        session_id(&app, &new).await,
        id,
        "public id changed on rotation"
    );
    assert_eq!(index_members(&url, &prefix, "7"), [stored_key(&new)]);
    assert_eq!(status(&app, post("/renew", Some(&old))).await, 401);
}

#[actix_web::test]
async fn sudo_mode_needs_a_recent_password_and_reauth_rotates() {
    let (middleware, _, _) = redis_middleware(|b| b.fresh_window(Duration::from_millis(400))).await;
    let app = app(middleware).await;
    assert_eq!(status(&app, post("/sensitive", None)).await, 401);
    let old = log_in(&app, 7).await;
    assert_eq!(status(&app, post("/sensitive", Some(&old))).await, 204);

    tokio::time::sleep(Duration::from_millis(500)).await;
    let res = test::call_service(&app, post("/sensitive", Some(&old))).await;
    assert_eq!(
        status_and_body(res).await,
        (403, r#"{"error":"reauth_required"}"#.into())
    );
    assert_eq!(
        status(&app, get("/me", Some(&old))).await,
        200,
        "still logged in"
    );

    let res = test::call_service(&app, post("/reauth", Some(&old))).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let new = set_cookie(&res).unwrap().value().to_owned();
    assert_eq!(status(&app, post("/sensitive", Some(&old))).await, 401);
    assert_eq!(status(&app, post("/sensitive", Some(&new))).await, 204);
}

#[actix_web::test]
async fn role_rules_answer_401_403_or_let_through() {
    let (middleware, _, _) = redis_middleware(|b| b).await;
    let app = app(middleware).await;
    let admin = log_in(&app, 1).await;
    let user = log_in(&app, 2).await;

    let res = test::call_service(&app, get("/admin", None)).await;
    assert_eq!(status_and_body(res).await, (401, UNAUTHENTICATED.into()));
    let res = test::call_service(&app, get("/admin", Some(&user))).await;
    assert_eq!(
        status_and_body(res).await,
        (403, r#"{"error":"forbidden"}"#.into())
    );
    assert_eq!(status(&app, get("/admin", Some(&admin))).await, 200);

    // HTML pages: anonymous visitors go to the login page, logged-in users without the role do
    // not (that would loop).
    let res = test::call_service(&app, get("/admin-page", None)).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        res.headers().get(header::LOCATION).unwrap(),
        "/login-page?next=%2Fadmin%2Dpage"
    );
    assert_eq!(status(&app, get("/admin-page", Some(&user))).await, 403);
    assert_eq!(status(&app, get("/admin-page", Some(&admin))).await, 200);

    let res = test::call_service(&app, get("/account/keys?tab=a%20b&x=//evil", None)).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let location = res
        .headers()
        .get(header::LOCATION)
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(
        location,
        "/login-page?next=%2Faccount%2Fkeys%3Ftab%3Da%2520b%26x%3D%2F%2Fevil"
    );
    assert_eq!(status(&app, get("/account/keys", Some(&user))).await, 200);
}

/// Sends `first`, holds it at its first `op` store call (see [`Gate`]), sends `second` and lets
/// `first` go on once `second` has answered; returns both responses. The race happens in that
/// order every time, or the test fails saying `first` never reached `op`.
///
/// [`Gate`]: support::wrapped_store::Gate
async fn overlapping<S, B>(
    app: &S,
    gate: &support::wrapped_store::Gate,
    op: &'static str,
    first: actix_http::Request,
    second: actix_http::Request,
) -> (ServiceResponse<B>, ServiceResponse<B>)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let held = gate.arm(op, 1);
    let later = async {
        held.arrived(1).await;
        let second = app.call(second).await;
        drop(held);
        second
    };
    let (first, second) = futures_util::future::join(app.call(first), later).await;
    (first.unwrap(), second.unwrap())
}

#[actix_web::test]
async fn revoke_all_catches_a_session_rotated_while_it_runs() {
    let url = shared_redis_url();
    let prefix = unique_prefix();
    for _ in 0..3 {
        // Revocation lists the session and is held before its delete; the rotation lands in
        // between, so the first delete finds nothing and revocation must look again.
        let store = support::wrapped_store::Wrapped::new(redis_store_at(&url, &prefix).await);
        let gate = store.gate.clone();
        let app = app(LoginMiddleware::new(store)).await;
        let old = log_in(&app, 7).await;
        let (revoked, rotated) = overlapping(
            &app,
            &gate,
            "delete",
            post("/admin-revoke/7", None),
            post("/renew", Some(&old)),
        )
        .await;
        let (status_code, body) = status_and_body(revoked).await;
        assert_eq!((status_code, body.as_str()), (200, "1"));
        assert_eq!(
            rotated.status(),
            StatusCode::NO_CONTENT,
            "rotation should have won the race"
        );
        let new = set_cookie(&rotated).unwrap().value().to_owned();
        assert_eq!(status(&app, get("/me", Some(&old))).await, 401);
        assert_eq!(
            status(&app, get("/me", Some(&new))).await,
            401,
            "rotated session survived"
        );
    }
}

#[actix_web::test]
async fn a_rotation_that_loses_to_a_revocation_leaves_nothing_behind() {
    let url = shared_redis_url();
    let prefix = unique_prefix();
    // The rotation has loaded the session and is held before it rotates; the revocation lands
    // in between.
    let store = support::wrapped_store::Wrapped::new(redis_store_at(&url, &prefix).await);
    let gate = store.gate.clone();
    let app = app(LoginMiddleware::new(store)).await;
    let old = log_in(&app, 7).await;
    let (rotated, revoked) = overlapping(
        &app,
        &gate,
        "rotate",
        post("/renew", Some(&old)),
        post("/admin-revoke/7", None),
    )
    .await;
    assert_eq!(status_and_body(revoked).await, (200, "1".into()));
    assert!(
        set_cookie(&rotated).is_none(),
        "a revoked session was rotated"
    );
    assert_eq!(
        status_and_body(rotated).await,
        (401, UNAUTHENTICATED.into())
    );
    assert!(support::redis_server::dump(&url, &format!("{prefix}:s")).is_empty());
}

#[actix_web::test]
async fn revoke_all_catches_a_session_rotated_inside_its_listing() {
    let url = shared_redis_url();
    let prefix = unique_prefix();
    // The listing reads the index and is held before it reads the records; the rotation lands
    // in between, so the listing sees the old record gone and the new one not at all.
    let store = support::wrapped_store::Wrapped::new(redis_store_at(&url, &prefix).await);
    let gate = store.gate.clone();
    let app = app(LoginMiddleware::new(store)).await;
    let old = log_in(&app, 7).await;
    let (revoked, rotated) = overlapping(
        &app,
        &gate,
        "list",
        post("/admin-revoke/7", None),
        post("/renew", Some(&old)),
    )
    .await;
    assert_eq!(status_and_body(revoked).await, (200, "1".into()));
    assert_eq!(rotated.status(), StatusCode::NO_CONTENT);
    let new = set_cookie(&rotated).unwrap().value().to_owned();
    assert_eq!(
        status(&app, get("/me", Some(&new))).await,
        401,
        "rotated session survived"
    );
}

#[actix_web::test]
async fn foreign_entries_in_the_index_do_not_shield_live_sessions() {
    let (middleware, url, prefix) = redis_middleware(|b| b).await;
    let app = app(middleware).await;
    let tokens = [
        log_in(&app, 7).await,
        log_in(&app, 7).await,
        log_in(&app, 7).await,
    ];
    let mut conn = connection(&url).unwrap();
    redis::cmd("HSET")
        .arg(format!("{prefix}:u:7"))
        .arg("legacy-entry")
        .arg("")
        .arg("0".repeat(64))
        .arg("")
        .exec(&mut conn)
        .unwrap();
    assert_eq!(status(&app, post("/admin-revoke/7", None)).await, 200);
    for token in &tokens {
        assert_eq!(status(&app, get("/me", Some(token))).await, 401);
    }
    assert!(index_members(&url, &prefix, "7").is_empty());
}

#[actix_web::test]
async fn access_rules_fail_closed_when_redis_is_down() {
    let server = support::redis_server::RedisServer::start();
    let app = app(LoginMiddleware::new(
        redis_store_at(&server.url(), "rules").await,
    ))
    .await;
    let admin = log_in(&app, 1).await;
    server.kill();
    for path in ["/admin", "/admin-page", "/account/x"] {
        let res = test::call_service(&app, get(path, Some(&admin))).await;
        assert!(
            res.headers().get(header::LOCATION).is_none(),
            "{path} redirected"
        );
        assert_eq!(
            status_and_body(res).await,
            (503, UNAVAILABLE.into()),
            "{path}"
        );
    }
}

async fn check_account_controls(store: impl SessionStore) {
    let middleware = LoginMiddleware::builder(store)
        .max_sessions_per_user(2)
        .build();
    let app = app(middleware).await;
    let first = log_in(&app, 7).await;
    tokio::time::sleep(Duration::from_millis(3)).await;
    let second = log_in(&app, 7).await;
    tokio::time::sleep(Duration::from_millis(3)).await;
    let third = log_in(&app, 7).await;
    assert_eq!(
        status(&app, get("/me", Some(&first))).await,
        401,
        "cap not applied"
    );

    let res = test::call_service(&app, post("/renew", Some(&second))).await;
    let renewed = set_cookie(&res).unwrap().value().to_owned();
    assert_eq!(status(&app, get("/me", Some(&second))).await, 401);
    let id = session_id(&app, &renewed).await;
    assert_eq!(
        status(&app, delete(&format!("/sessions/{id}"), &third)).await,
        204
    );
    assert_eq!(status(&app, get("/me", Some(&renewed))).await, 401);
    assert_eq!(
        status(&app, post("/sessions/revoke-all", Some(&third))).await,
        204
    );
    assert_eq!(status(&app, get("/me", Some(&third))).await, 401);
}

/// The account controls behave the same on the in-memory store.
#[actix_web::test]
async fn account_controls_on_the_memory_store() {
    check_account_controls(actix_login::MemoryStore::new()).await;
}

/// And on a Redis Cluster, where a session's record and its user's index sit in different
/// slots.
#[actix_web::test]
async fn account_controls_on_a_redis_cluster() {
    let cluster = support::cluster::RedisCluster::start();
    let store = cluster.store(&unique_prefix()).await;
    check_account_controls(store).await;
}

#[actix_web::test]
async fn the_middleware_hands_out_sessions_for_use_outside_requests() {
    let (middleware, _, _) = redis_middleware(|b| b).await;
    let sessions = middleware.sessions();
    let app = app(middleware).await;
    let tokens = [log_in(&app, 7).await, log_in(&app, 7).await];
    assert_eq!(sessions.list("7").await.unwrap().len(), 2);
    assert_eq!(sessions.revoke_all("7").await.unwrap(), 2);
    for token in &tokens {
        assert_eq!(status(&app, get("/me", Some(token))).await, 401);
    }
    assert!(sessions.list("7").await.unwrap().is_empty());
}

/// The store contract's rotation rules, directly.
#[actix_web::test]
async fn rotation_fails_cleanly_when_the_old_session_is_gone() {
    let url = shared_redis_url();
    let prefix = unique_prefix();
    let store = redis_store_at(&url, &prefix).await;
    let app = app(LoginMiddleware::new(store.clone())).await;
    let token = log_in(&app, 7).await;
    assert_eq!(
        status(&app, post("/sessions/revoke-all", Some(&token))).await,
        204
    );
    // The revoked session cannot be rotated into a live one.
    assert_eq!(status(&app, post("/renew", Some(&token))).await, 401);
    assert!(store.list("7").await.unwrap().live.is_empty());
}

#[actix_web::test]
async fn the_listed_ip_comes_from_trusted_proxies_only() {
    for (trusted, expected) in [(false, "10.0.0.2"), (true, "198.51.100.7")] {
        let mut builder = LoginMiddleware::builder(actix_login::MemoryStore::new());
        if trusted {
            builder = builder.trust_proxies(["10.0.0.2".parse().unwrap()]);
        }
        let app = app(builder.build()).await;
        let req = test::TestRequest::post()
            .uri("/login/7")
            .peer_addr("10.0.0.2:40000".parse().unwrap())
            .insert_header(("x-forwarded-for", "198.51.100.7"))
            .to_request();
        let token = set_cookie(&test::call_service(&app, req).await)
            .unwrap()
            .value()
            .to_owned();
        let (_, body) =
            status_and_body(test::call_service(&app, get("/sessions", Some(&token))).await).await;
        let list: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        assert_eq!(list[0]["ip"], expected, "trusted: {trusted}");
    }
}

/// Sessions keep working while a cluster moves their slots between nodes.
#[actix_web::test]
async fn sessions_survive_a_slot_migration() {
    let cluster = support::cluster::RedisCluster::start();
    let store = cluster.store(&unique_prefix()).await;
    let app = app(LoginMiddleware::new(store)).await;
    let mut tokens = Vec::new();
    for user in 0..12 {
        tokens.push(log_in(&app, user).await);
    }
    // Move every slot of the first node to the second, keys and all, while requests go on.
    let initial_slots = cluster.slots_of(0);
    let from = cluster.node_id(0);
    let to = cluster.node_id(1);
    let seed = format!("127.0.0.1:{}", cluster.nodes[0].port);
    let reshard = std::process::Command::new("redis-cli")
        .args([
            "--cluster",
            "reshard",
            &seed,
            "--cluster-from",
            &from,
            "--cluster-to",
            &to,
        ])
        .args(["--cluster-slots", "5461", "--cluster-yes"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut reshard = Some(reshard);
    let (mut rounds, mut half_moved) = (0, 0);
    while let Some(child) = reshard.as_mut() {
        for token in &tokens {
            assert_eq!(
                status(&app, get("/me", Some(token))).await,
                200,
                "lost during migration"
            );
        }
        rounds += 1;
        // Rounds that ran while the first node had given away some of its slots, not all.
        if (1..initial_slots).contains(&cluster.slots_of(0)) {
            half_moved += 1;
        }
        if child.try_wait().unwrap().is_some() {
            assert!(
                reshard.take().unwrap().wait().unwrap().success(),
                "reshard failed"
            );
        }
    }
    assert!(
        half_moved > 0,
        "no round of requests ran while the slots were half moved ({rounds} rounds)"
    );
    assert_eq!(cluster.slots_of(0), 0, "the first node still owns slots");
    for token in &tokens {
        assert_eq!(status(&app, get("/me", Some(token))).await, 200);
        assert_eq!(
            status(&app, post("/sessions/revoke-all", Some(token))).await,
            204
        );
        assert_eq!(status(&app, get("/me", Some(token))).await, 401);
    }
}

/// Handlers that carry on as anonymous when the session could not be resolved, which
/// `Option<AuthUser<_>>` allows: the middleware still answers 503.
async fn login_anyway(
    _user: Option<AuthUser<Profile>>,
    session: Session,
) -> Result<HttpResponse, Error> {
    session.login("7", &Profile { id: 7 }).await?;
    Ok(HttpResponse::Ok().finish())
}

async fn renew_anyway(
    _user: Option<AuthUser<Profile>>,
    session: Session,
) -> Result<HttpResponse, Error> {
    session.renew().await?;
    Ok(HttpResponse::Ok().finish())
}

#[actix_web::test]
async fn a_request_answered_503_changes_no_session() {
    let store = support::wrapped_store::Wrapped::new(actix_login::MemoryStore::new());
    let app = test::init_service(
        App::new()
            .configure(routes)
            .route("/login-anyway", web::post().to(login_anyway))
            .route("/renew-anyway", web::post().to(renew_anyway))
            .wrap(LoginMiddleware::new(store.clone())),
    )
    .await;
    let token = log_in(&app, 7).await;
    for path in ["/login-anyway", "/renew-anyway"] {
        store
            .failing_loads
            .store(1, std::sync::atomic::Ordering::SeqCst);
        let res = test::call_service(&app, post(path, Some(&token))).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert!(set_cookie(&res).is_none(), "{path}");
        // All or nothing: the cookie the client still holds is still the session, and the store
        // holds no session nobody has the token of.
        assert_eq!(status(&app, get("/me", Some(&token))).await, 200, "{path}");
        assert_eq!(store.inner.len(), 1, "{path}: an orphan session was left");
    }
}
