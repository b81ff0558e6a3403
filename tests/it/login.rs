//! The middleware and extractors end to end, through Actix's test service, on real stores.

use std::time::{Duration, Instant};

use actix_login::store::SessionStore;
use actix_login::{AuthUser, Error, LoginMiddleware, MaybeUser, MemoryStore, Session, Timeouts};
use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{test, web, App, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::support;
use crate::support::http::*;
use crate::support::redis_server::{connection, shared_redis_url, unique_prefix, RedisServer};

#[derive(Serialize, Deserialize)]
struct Profile {
    id: u64,
    name: String,
}

#[derive(Deserialize)]
struct OtherShape {
    #[allow(dead_code)]
    email: String,
}

async fn login(session: Session, id: web::Path<u64>) -> Result<HttpResponse, Error> {
    let profile = Profile {
        id: *id,
        name: format!("user{id}"),
    };
    session.login(id.to_string(), &profile).await?;
    Ok(HttpResponse::Ok().json(profile))
}

async fn me(user: AuthUser<Profile>) -> web::Json<Profile> {
    web::Json(user.into_inner())
}

async fn maybe(user: Option<AuthUser<Profile>>) -> String {
    user.map_or_else(|| "anonymous".to_owned(), |u| u.name.clone())
}

/// Counts handler runs, to show which extractor lets a handler run during an outage.
static MAYBE_USER_RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

async fn maybe_user(user: MaybeUser<Profile>) -> String {
    MAYBE_USER_RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    user.as_ref()
        .map_or_else(|| "anonymous".to_owned(), |u| u.name.clone())
}

async fn twice(first: AuthUser<Profile>, second: AuthUser<Profile>) -> String {
    format!("{} {}", first.name, second.name)
}

async fn slow_me(user: AuthUser<Profile>) -> String {
    tokio::time::sleep(Duration::from_millis(200)).await;
    user.name.clone()
}

async fn logout(_user: AuthUser<Profile>, session: Session) -> Result<HttpResponse, Error> {
    session.logout().await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Logout without loading the session first: the delete goes out at once.
async fn end_session(session: Session) -> Result<HttpResponse, Error> {
    session.logout().await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn wrong_shape(_user: AuthUser<OtherShape>) -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/login/{id}", web::post().to(login))
        .route("/me", web::get().to(me))
        .route("/maybe", web::get().to(maybe))
        .route("/slow-me", web::get().to(slow_me))
        .route("/twice", web::get().to(twice))
        .route("/maybe-user", web::get().to(maybe_user))
        .route("/logout", web::post().to(logout))
        .route("/end-session", web::post().to(end_session))
        .route("/wrong-shape", web::get().to(wrong_shape))
        .route("/public", web::get().to(|| async { "public" }));
}

/// An app on `middleware`, ready to call.
async fn app(
    middleware: LoginMiddleware,
) -> impl Service<
    actix_http::Request,
    Response = ServiceResponse<impl MessageBody>,
    Error = actix_web::Error,
> {
    test::init_service(App::new().wrap(middleware).configure(routes)).await
}

async fn check_login_me_logout(store: impl SessionStore) {
    let app = app(LoginMiddleware::new(store)).await;

    let res = test::call_service(&app, post("/login/7", None)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers().get(header::CACHE_CONTROL).unwrap(),
        "no-store"
    );
    let cookie = set_cookie(&res).unwrap();
    let token = cookie.value().to_owned();
    let raw = res
        .headers()
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
        assert!(raw.contains(attr), "{raw}");
    }
    assert!(!raw.contains("Domain") && !raw.contains("Max-Age") && !raw.contains("Expires"));
    assert_eq!(token.len(), 47);
    let body = status_and_body(res).await.1;
    assert!(!body.contains(&token), "token leaked into the body");

    let res = test::call_service(&app, get("/me", Some(&token))).await;
    assert_eq!(
        res.headers().get(header::CACHE_CONTROL).unwrap(),
        "no-store"
    );
    assert_eq!(
        status_and_body(res).await,
        (200, r#"{"id":7,"name":"user7"}"#.into())
    );
    let res = test::call_service(&app, get("/maybe", Some(&token))).await;
    assert_eq!(status_and_body(res).await, (200, "user7".into()));
    let res = test::call_service(&app, get("/maybe-user", Some(&token))).await;
    assert_eq!(status_and_body(res).await, (200, "user7".into()));
    let res = test::call_service(&app, get("/maybe-user", None)).await;
    assert_eq!(status_and_body(res).await, (200, "anonymous".into()));

    let res = test::call_service(&app, post("/logout", Some(&token))).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        res.headers().get(header::CACHE_CONTROL).unwrap(),
        "no-store"
    );
    let removal = res
        .headers()
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(removal.starts_with("__Host-id=;"), "{removal}");
    for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/", "Max-Age=0"] {
        assert!(removal.contains(attr), "{removal}");
    }

    // Replaying the logged-out cookie gets nothing.
    let res = test::call_service(&app, get("/me", Some(&token))).await;
    assert_eq!(status_and_body(res).await, (401, UNAUTHENTICATED.into()));
    let res = test::call_service(&app, post("/logout", Some(&token))).await;
    assert_eq!(status_and_body(res).await, (401, UNAUTHENTICATED.into()));
    let res = test::call_service(&app, get("/maybe", Some(&token))).await;
    assert_eq!(status_and_body(res).await, (200, "anonymous".into()));
}

#[actix_web::test]
async fn login_me_logout_with_memory_store() {
    check_login_me_logout(MemoryStore::new()).await;
}

#[actix_web::test]
async fn login_me_logout_with_redis_store() {
    let url = shared_redis_url();
    check_login_me_logout(redis_store_at(&url, &unique_prefix()).await).await;
}

#[actix_web::test]
async fn anonymous_requests_are_401_json_or_none() {
    let app = app(LoginMiddleware::new(MemoryStore::new())).await;
    let res = test::call_service(&app, get("/me", None)).await;
    assert_eq!(
        res.headers().get(header::CONTENT_TYPE).unwrap(),
        "application/json"
    );
    assert_eq!(status_and_body(res).await, (401, UNAUTHENTICATED.into()));
    let res = test::call_service(&app, get("/maybe", None)).await;
    assert!(res.headers().get(header::SET_COOKIE).is_none());
    assert_eq!(status_and_body(res).await, (200, "anonymous".into()));
}

/// Cookie values that must be turned away before any store command.
fn garbage_cookie_headers(valid: &str) -> Vec<Vec<u8>> {
    let other = "A".repeat(46) + "E";
    vec![
        b"__Host-id=".to_vec(),
        b"__Host-id=a".to_vec(),
        format!("__Host-id={}", &valid[..46]).into_bytes(),
        format!("__Host-id={valid}A").into_bytes(),
        format!("__Host-id={}*", &valid[..46]).into_bytes(),
        format!("__Host-id={}:", &valid[..46]).into_bytes(),
        format!("__Host-id={}%2e", &valid[..44]).into_bytes(),
        [
            b"__Host-id=".as_slice(),
            &valid.as_bytes()[..45],
            "é".as_bytes(),
        ]
        .concat(),
        [b"__Host-id=".as_slice(), &valid.as_bytes()[..46], &[0xff]].concat(),
        format!("__Host-id={}", "A".repeat(4096)).into_bytes(),
        format!("__Host-id={}", "A".repeat(16 * 1024)).into_bytes(),
        format!("__Host-id={valid}; __Host-id={other}").into_bytes(),
        format!("__Host-id={valid}; __Host-id={valid}").into_bytes(),
        format!("__Host-id=\"{valid}\"").into_bytes(),
    ]
}

#[actix_web::test]
async fn no_cookie_garbage_cookies_and_unused_sessions_cost_zero_redis_commands() {
    let server = RedisServer::start();
    let store = redis_store_at(&server.url(), "cmds").await;
    let app = app(LoginMiddleware::new(store)).await;
    let token = log_in(&app, 1).await;

    let before = server.command_counts();
    let res = test::call_service(&app, get("/me", None)).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    for header_value in garbage_cookie_headers(&token) {
        let req = test::TestRequest::get()
            .uri("/me")
            .insert_header((
                header::COOKIE,
                HeaderValue::from_bytes(&header_value).unwrap(),
            ))
            .to_request();
        let (status, body) = status_and_body(test::call_service(&app, req).await).await;
        assert_eq!(
            (status, body.as_str()),
            (401, UNAUTHENTICATED),
            "{header_value:?}"
        );
    }
    // The same cookie split across two Cookie headers is a duplicate too.
    let req = test::TestRequest::get()
        .uri("/me")
        .append_header((header::COOKIE, format!("__Host-id={token}")))
        .append_header((header::COOKIE, format!("__Host-id={token}")))
        .to_request();
    assert_eq!(
        test::call_service(&app, req).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // A valid session on a route that never asks for the user.
    let res = test::call_service(&app, get("/public", Some(&token))).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get(header::SET_COOKIE).is_none());
    let sent = support::redis_server::commands_during_since(&server, &before);
    assert!(sent.is_empty(), "commands sent: {sent:?}");

    // Steady state: one command.
    let before = server.command_counts();
    let res = test::call_service(&app, get("/me", Some(&token))).await;
    assert_eq!(res.status(), StatusCode::OK);
    let sent = support::redis_server::commands_during_since(&server, &before);
    assert_eq!(sent, [("hmget".into(), 1)].into());

    // Several extractors in one handler share one lookup.
    let before = server.command_counts();
    let res = test::call_service(&app, get("/twice", Some(&token))).await;
    assert_eq!(status_and_body(res).await, (200, "user1 user1".into()));
    let sent = support::redis_server::commands_during_since(&server, &before);
    assert_eq!(sent, [("hmget".into(), 1)].into());

    // A well-formed token nobody issued: one lookup, nothing created.
    let forged = "B".repeat(46) + "A";
    let before = server.command_counts();
    let res = test::call_service(&app, get("/me", Some(&forged))).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let sent = support::redis_server::commands_during_since(&server, &before);
    assert_eq!(sent, [("hmget".into(), 1)].into());
    assert_eq!(
        support::redis_server::dump(&server.url(), "cmds:s").len(),
        1
    );
}

#[actix_web::test]
async fn redis_holds_only_the_token_hash() {
    let url = shared_redis_url();
    let prefix = unique_prefix();
    let app = app(LoginMiddleware::new(redis_store_at(&url, &prefix).await)).await;
    let token = log_in(&app, 42).await;
    let res = test::call_service(&app, get("/me", Some(&token))).await;
    assert_eq!(res.status(), StatusCode::OK);

    let dump = support::redis_server::dump(&url, &format!("{prefix}:s"));
    assert_eq!(dump.len(), 1);
    let (key, value, ttl) = &dump[0];
    assert_eq!(key, &support::http::redis_session_key(&prefix, &token));
    assert!(*ttl > 0 && *ttl <= 30 * 60 * 1000, "ttl {ttl}");
    // The record is binary; its text parts (ids, the profile) read as they are.
    let value = String::from_utf8_lossy(value.as_deref().unwrap()).into_owned();
    // The group (the first four characters) names the key's hash tag; nothing after it may
    // appear.
    for needle in [&token[..], &token[4..16], &token[31..]] {
        assert!(
            !key.contains(needle) && !value.contains(needle),
            "token found in Redis"
        );
    }
    assert!(value.contains(r#"{"id":42,"name":"user42"}"#), "{value}");
}

#[actix_web::test]
async fn login_ends_the_session_the_client_came_with() {
    let store = MemoryStore::new();
    let app = app(LoginMiddleware::new(store.clone())).await;

    // A planted, never-issued token is not adopted.
    let planted = "C".repeat(46) + "A";
    let res = test::call_service(&app, post("/login/1", Some(&planted))).await;
    let issued = set_cookie(&res).unwrap().value().to_owned();
    assert_ne!(issued, planted);
    assert_eq!(status(&app, get("/me", Some(&planted))).await, 401);
    assert_eq!(status(&app, get("/me", Some(&issued))).await, 200);

    // Logging in again while logged in replaces the session; the old token dies.
    let res = test::call_service(&app, post("/login/2", Some(&issued))).await;
    let second = set_cookie(&res).unwrap().value().to_owned();
    assert_ne!(second, issued);
    assert_eq!(status(&app, get("/me", Some(&issued))).await, 401);
    let (status, body) =
        status_and_body(test::call_service(&app, get("/me", Some(&second))).await).await;
    assert_eq!((status, body.as_str()), (200, r#"{"id":2,"name":"user2"}"#));
    assert_eq!(store.len(), 1, "the replaced session was left behind");
}

#[actix_web::test]
async fn idle_sessions_expire_and_active_ones_stay() {
    let url = shared_redis_url();
    let prefix = unique_prefix();
    // Requests 250 ms apart against a 1.5 s idle window: a stalled test thread would need to
    // lose more than a second between two of them to end the active session early.
    let idle_timeout = Duration::from_millis(1500);
    let middleware = LoginMiddleware::builder(redis_store_at(&url, &prefix).await)
        .timeouts(Timeouts::BROWSER.with_idle(idle_timeout))
        .build();
    let app = app(middleware).await;

    let idle = log_in(&app, 1).await;
    let active = log_in(&app, 2).await;
    let mut last_answered = Instant::now();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let res = test::call_service(&app, get("/me", Some(&active))).await;
        assert_eq!(
            res.status(),
            StatusCode::OK,
            "active session ended, {:?} after the one before",
            last_answered.elapsed()
        );
        last_answered = Instant::now();
        for (_, _, ttl) in support::redis_server::dump(&url, &format!("{prefix}:s")) {
            assert!(ttl > 0 && ttl <= 1500, "ttl {ttl}");
        }
    }
    // At least 2 s of silence for one, 2 s of activity for the other.
    assert_eq!(status(&app, get("/me", Some(&idle))).await, 401);
    assert_eq!(
        support::redis_server::dump(&url, &format!("{prefix}:s")).len(),
        1,
        "expired session still in Redis"
    );
    tokio::time::sleep(idle_timeout + Duration::from_millis(200)).await;
    assert_eq!(status(&app, get("/me", Some(&active))).await, 401);
}

#[actix_web::test]
async fn activity_never_extends_a_session_past_its_absolute_lifetime() {
    let url = shared_redis_url();
    let prefix = unique_prefix();
    let middleware = LoginMiddleware::builder(redis_store_at(&url, &prefix).await)
        .timeouts(Timeouts::new(
            Duration::from_millis(800),
            Duration::from_millis(1500),
        ))
        .build();
    let app = app(middleware).await;
    // The session's end lies between these two instants plus 1.5 s. Each answer is judged by
    // when its request started and ended, so a slow request or a stalled test thread never
    // turns a right answer into a failure; 20 ms covers the deadlines' millisecond rounding.
    // A session in use may end up to a tenth of its idle window (80 ms) before its absolute end:
    // the last move of its deadline is skipped when it would be shorter than that step.
    let absolute = Duration::from_millis(1500);
    let rounding = Duration::from_millis(20);
    let last_step = Duration::from_millis(80);
    let before_login = Instant::now();
    let token = log_in(&app, 1).await;
    let after_login = Instant::now();
    let (mut alive, mut dead) = (0, 0);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        let status = test::call_service(&app, get("/me", Some(&token)))
            .await
            .status();
        let ended = Instant::now();
        if ended + rounding + last_step < before_login + absolute {
            // Certainly before the end: alive, and Redis keeps it no longer than the end.
            assert_eq!(
                status,
                StatusCode::OK,
                "ended early, {:?} in",
                ended - before_login
            );
            alive += 1;
            let measured = Instant::now();
            let remaining = (after_login + absolute).saturating_duration_since(measured);
            for (_, _, ttl) in support::redis_server::dump(&url, &format!("{prefix}:s")) {
                let ttl = Duration::from_millis(u64::try_from(ttl).unwrap());
                assert!(ttl <= remaining + rounding, "ttl {ttl:?} > {remaining:?}");
            }
        } else if started > after_login + absolute + rounding {
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "still alive {:?} in",
                started - after_login
            );
            dead += 1;
            break;
        }
    }
    // Activity all along: the requests kept the 800 ms idle window moving past 1.5 s.
    assert!(alive >= 5 && dead == 1, "{alive} answers before the end");
}

#[actix_web::test]
async fn logout_racing_in_flight_refreshes_is_final() {
    let url = shared_redis_url();
    let prefix = unique_prefix();
    // A 1-second idle window and 150 ms between login and use make every request refresh.
    // Every refresh is held until the logout has answered.
    let store = support::wrapped_store::Wrapped::new(redis_store_at(&url, &prefix).await);
    let gate = store.gate.clone();
    let middleware = LoginMiddleware::builder(store)
        .timeouts(Timeouts::BROWSER.with_idle(Duration::from_secs(1)))
        .build();
    let app = app(middleware).await;
    for round in 0..3 {
        let token = log_in(&app, round).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        let refreshing = gate.arm("extend", 20);
        let in_flight = (0..20).map(|_| app.call(get("/slow-me", Some(&token))));
        let logout = async {
            // All twenty in-flight requests have loaded the session and are refreshing it.
            refreshing.arrived(20).await;
            let res = app.call(post("/end-session", Some(&token))).await;
            assert!(
                support::redis_server::dump(&url, &format!("{prefix}:s")).is_empty(),
                "logout left the record"
            );
            drop(refreshing);
            res
        };
        let (results, logout) =
            futures_util::future::join(futures_util::future::join_all(in_flight), logout).await;
        assert_eq!(logout.unwrap().status(), StatusCode::NO_CONTENT);
        for res in results {
            let res = res.unwrap();
            assert!(
                set_cookie(&res).is_none(),
                "an in-flight request issued a cookie"
            );
            assert_eq!(
                res.status(),
                StatusCode::UNAUTHORIZED,
                "refresh after logout succeeded"
            );
        }
        assert!(
            support::redis_server::dump(&url, &format!("{prefix}:s")).is_empty(),
            "logged-out session is back in Redis"
        );
        assert_eq!(status(&app, get("/me", Some(&token))).await, 401);
    }
}

/// A store that keeps records past their deadlines leaves the middleware's own checks as the
/// only thing between an expired session and a logged-in request.
#[actix_web::test]
async fn deadlines_hold_even_when_the_store_returns_expired_records() {
    // Idle deadline passed, record still returned.
    let mut store = support::wrapped_store::Wrapped::new(MemoryStore::new());
    store.keep_expired = true;
    store.report_idle_deadline = true;
    let extends = std::sync::Arc::clone(&store.extend_calls);
    let middleware = LoginMiddleware::builder(store)
        .timeouts(Timeouts::BROWSER.with_idle(Duration::from_millis(300)))
        .build();
    let idle_app = app(middleware).await;
    let token = log_in(&idle_app, 1).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(status(&idle_app, get("/me", Some(&token))).await, 401);
    assert_eq!(
        extends.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "expired session refreshed"
    );

    // Absolute end passed, idle deadline reported far away.
    let mut store = support::wrapped_store::Wrapped::new(MemoryStore::new());
    store.keep_expired = true;
    let middleware = LoginMiddleware::builder(store)
        .timeouts(Timeouts::BROWSER.with_absolute(Duration::from_millis(300)))
        .build();
    let absolute_app = app(middleware).await;
    let token = log_in(&absolute_app, 1).await;
    assert_eq!(status(&absolute_app, get("/me", Some(&token))).await, 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(status(&absolute_app, get("/me", Some(&token))).await, 401);
}

#[actix_web::test]
async fn two_app_instances_share_logins_and_logouts() {
    let url = shared_redis_url();
    let prefix = unique_prefix();
    let a = app(LoginMiddleware::new(redis_store_at(&url, &prefix).await)).await;
    let b = app(LoginMiddleware::new(redis_store_at(&url, &prefix).await)).await;
    let token = log_in(&a, 5).await;
    assert_eq!(status(&b, get("/me", Some(&token))).await, 200);
    assert_eq!(status(&b, post("/logout", Some(&token))).await, 204);
    assert_eq!(status(&a, get("/me", Some(&token))).await, 401);
}

#[actix_web::test]
async fn redis_down_fails_closed_and_recovers_without_a_restart() {
    let server = RedisServer::start();
    let app = app(LoginMiddleware::new(
        redis_store_at(&server.url(), "down").await,
    ))
    .await;
    let token = log_in(&app, 3).await;
    server.kill();

    // MaybeUser refuses before the handler runs; Option<AuthUser> only after it ran.
    let runs = MAYBE_USER_RUNS.load(std::sync::atomic::Ordering::SeqCst);
    for path in ["/me", "/maybe", "/maybe-user"] {
        let started = Instant::now();
        let res = test::call_service(&app, get(path, Some(&token))).await;
        assert!(
            res.headers().get(header::SET_COOKIE).is_none(),
            "cookie touched while down"
        );
        assert_eq!(
            status_and_body(res).await,
            (503, UNAVAILABLE.into()),
            "{path}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{path} took {:?}",
            started.elapsed()
        );
    }
    assert_eq!(
        MAYBE_USER_RUNS.load(std::sync::atomic::Ordering::SeqCst),
        runs
    );

    // Logins, with or without a previous session, and logouts fail without touching the cookie.
    for req in [
        post("/login/3", None),
        post("/login/3", Some(&token)),
        post("/logout", Some(&token)),
        post("/end-session", Some(&token)),
    ] {
        let res = test::call_service(&app, req).await;
        assert!(set_cookie(&res).is_none(), "cookie touched while down");
        assert_eq!(status_and_body(res).await, (503, UNAVAILABLE.into()));
    }
    // Routes that do not need the session keep working.
    assert_eq!(status(&app, get("/public", Some(&token))).await, 200);
    assert_eq!(status(&app, get("/maybe", None)).await, 200);

    // The new server is empty (no persistence): the old session is gone, logins work again.
    let _server = server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    let recovered = loop {
        let answer = status(&app, get("/me", Some(&token))).await;
        if answer != 503 || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(recovered, 401);
    let fresh = log_in(&app, 3).await;
    assert_eq!(status(&app, get("/me", Some(&fresh))).await, 200);
}

#[actix_web::test]
async fn corrupt_or_mismatched_records_are_401_not_500() {
    let url = shared_redis_url();
    let prefix = unique_prefix();
    let app = app(LoginMiddleware::new(redis_store_at(&url, &prefix).await)).await;

    let token = log_in(&app, 9).await;
    assert_eq!(status(&app, get("/wrong-shape", Some(&token))).await, 401);

    // A record that is not JSON, then a key of another type (a string from an older layout or
    // another app): no session, not an outage.
    let key = support::http::redis_session_key(&prefix, &token);
    let mut conn = connection(&url).unwrap();
    redis::cmd("HSET")
        .arg(&key)
        .arg("r")
        .arg("{garbage")
        .exec(&mut conn)
        .unwrap();
    let res = test::call_service(&app, get("/me", Some(&token))).await;
    assert_eq!(status_and_body(res).await, (401, UNAUTHENTICATED.into()));

    let token = log_in(&app, 9).await;
    let key = support::http::redis_session_key(&prefix, &token);
    redis::cmd("DEL").arg(&key).exec(&mut conn).unwrap();
    redis::cmd("SET")
        .arg(&key)
        .arg("{garbage")
        .arg("PX")
        .arg(60_000)
        .exec(&mut conn)
        .unwrap();
    let res = test::call_service(&app, get("/me", Some(&token))).await;
    assert_eq!(status_and_body(res).await, (401, UNAUTHENTICATED.into()));
}

#[actix_web::test]
async fn extractors_without_the_middleware_are_a_500_not_a_panic() {
    let app = test::init_service(App::new().configure(routes)).await;
    for req in [get("/me", None), post("/login/1", None)] {
        let res = test::call_service(&app, req).await;
        assert_eq!(
            status_and_body(res).await,
            (500, r#"{"error":"internal_error"}"#.into())
        );
    }
}

#[actix_web::test]
async fn logs_never_contain_the_token() {
    let (logs, _guard) = support::logs::capture_logs();
    let app = app(LoginMiddleware::new(MemoryStore::new())).await;
    let token = log_in(&app, 11).await;
    test::call_service(&app, get("/me", Some(&token))).await;
    test::call_service(&app, post("/logout", Some(&token))).await;
    test::call_service(&app, get("/me", Some(&token))).await;

    let logs = logs.text();
    assert!(logs.contains("login") && logs.contains("logout"), "{logs}");
    assert!(
        !logs.contains(&token) && !logs.contains(&token[..12]),
        "token in logs"
    );
    assert!(
        !logs.contains(&stored_key(&token)),
        "full token hash in logs"
    );
}

#[actix_web::test]
async fn unlimited_timeouts_do_not_overflow() {
    let url = shared_redis_url();
    for store_is_redis in [false, true] {
        let builder = if store_is_redis {
            LoginMiddleware::builder(redis_store_at(&url, &unique_prefix()).await)
        } else {
            LoginMiddleware::builder(MemoryStore::new())
        };
        let middleware = builder
            .timeouts(Timeouts::new(Duration::MAX, Duration::MAX))
            .fresh_window(Duration::MAX)
            .build();
        let app = app(middleware).await;
        let token = log_in(&app, 1).await;
        assert_eq!(status(&app, get("/me", Some(&token))).await, 200);
    }
}

/// What each operation sends to Redis, counted by the server itself.
#[actix_web::test]
async fn redis_commands_per_operation() {
    let server = RedisServer::start();
    let middleware = LoginMiddleware::builder(redis_store_at(&server.url(), "cost").await)
        .timeouts(Timeouts::BROWSER.with_idle(Duration::from_secs(1)))
        .build();
    let app = app(middleware).await;
    let counts = |pairs: &[(&str, u64)]| -> std::collections::HashMap<String, u64> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    };

    // Every script is loaded into Redis on its first use (`SCRIPT LOAD` after a `NOSCRIPT`):
    // a first round of every operation, by another user, leaves only the steady state to count.
    let warm = log_in(&app, 2).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(status(&app, get("/me", Some(&warm))).await, 200);
    assert_eq!(status(&app, post("/logout", Some(&warm))).await, 204);

    // Login with no session yet: one script creates and indexes the session, then the user's
    // sessions are listed (the index, and the records it names in one pipeline) to hold the
    // per-user cap, while the activity log's entry (LPUSH, LTRIM, PEXPIRE) goes out beside the first
    // of those. Three round trips; Redis counts the commands the script runs too.
    let before = server.command_counts();
    let token = log_in(&app, 1).await;
    let sent = support::redis_server::commands_during_since(&server, &before);
    assert_eq!(
        sent,
        counts(&[
            ("evalsha", 1),
            ("exists", 1),
            ("hset", 2),
            ("pexpire", 4),
            ("hkeys", 1),
            ("hmget", 1),
            ("lpush", 1),
            ("ltrim", 1),
        ])
    );

    // Right after login the deadline is fresh: a lookup and nothing else.
    let before = server.command_counts();
    assert_eq!(status(&app, get("/me", Some(&token))).await, 200);
    let sent = support::redis_server::commands_during_since(&server, &before);
    assert_eq!(sent, counts(&[("hmget", 1)]));

    // A tenth of the idle window later, one request moves the deadline (a script that writes
    // the deadline field and the TTL, nothing else); the next does not.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let before = server.command_counts();
    assert_eq!(status(&app, get("/me", Some(&token))).await, 200);
    let sent = support::redis_server::commands_during_since(&server, &before);
    assert_eq!(
        sent,
        counts(&[
            ("hmget", 1),
            ("evalsha", 1),
            ("hexists", 1),
            ("hset", 1),
            ("pexpire", 1)
        ])
    );
    let before = server.command_counts();
    assert_eq!(status(&app, get("/me", Some(&token))).await, 200);
    let sent = support::redis_server::commands_during_since(&server, &before);
    assert_eq!(sent, counts(&[("hmget", 1)]));

    // Logout through a handler that also takes AuthUser: the lookup (a handler that takes the
    // session may read its data, so it reads the data too: here none), the
    // DEL, and a PING so that any caching instance on this Redis has heard of it before the
    // client does; then the activity log's entry.
    let before = server.command_counts();
    assert_eq!(status(&app, post("/logout", Some(&token))).await, 204);
    let sent = support::redis_server::commands_during_since(&server, &before);
    assert_eq!(
        sent,
        counts(&[
            ("hmget", 1),
            ("del", 1),
            ("ping", 1),
            ("lpush", 1),
            ("ltrim", 1),
            ("pexpire", 1)
        ])
    );

    // Promised that no instance caches, the store leaves the PING out.
    let promised = LoginMiddleware::new(
        actix_login::RedisStore::builder(server.url())
            .key_prefix("cost")
            .peer_caches(false)
            .connect()
            .await
            .unwrap(),
    );
    let promised = crate::login::app(promised).await;
    let token = log_in(&promised, 3).await;
    let before = server.command_counts();
    assert_eq!(status(&promised, post("/logout", Some(&token))).await, 204);
    let sent = support::redis_server::commands_during_since(&server, &before);
    assert_eq!(
        sent,
        counts(&[
            ("hmget", 1),
            ("del", 1),
            ("lpush", 1),
            ("ltrim", 1),
            ("pexpire", 1)
        ])
    );
}
