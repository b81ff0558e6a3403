//! Session data through HTTP: anonymous sessions, login keeping the cart, logout ending it,
//! concurrent writes, limits, bounds, live updates of the user, flash messages, and what each
//! request costs in Redis commands.

use std::time::Duration;

use actix_login::store::SessionStore;
use actix_login::{
    AuthUser, Error, FlashLevel, FlashMessage, Login, LoginMiddleware, MemoryStore, RedisStore,
    Session, Sessions, Timeouts,
};
use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header;
use actix_web::{test, web, App, HttpResponse};
use futures_util::future::join_all;
use serde_json::json;

use crate::support;
use crate::support::cluster::RedisCluster;
use crate::support::http::*;
use crate::support::redis_server::{
    connection, mark_as_moving, shared_redis_url, unique_prefix, RedisServer,
};

async fn login(session: Session, id: web::Path<u64>) -> Result<HttpResponse, Error> {
    session.login(id.to_string(), &json!({ "id": *id })).await?;
    Ok(HttpResponse::Ok().finish())
}

async fn login_afresh(session: Session, id: web::Path<u64>) -> Result<HttpResponse, Error> {
    let login = Login::new(id.to_string(), &json!({ "id": *id })).keep_data(false);
    session.login_with(login).await?;
    Ok(HttpResponse::Ok().finish())
}

async fn me(user: AuthUser<serde_json::Value>) -> HttpResponse {
    HttpResponse::Ok().json(user.into_inner())
}

async fn admin(user: AuthUser<serde_json::Value>) -> HttpResponse {
    if user.has_role("admin") {
        HttpResponse::Ok().finish()
    } else {
        HttpResponse::Forbidden().finish()
    }
}

async fn cart(session: Session) -> Result<HttpResponse, Error> {
    let items: Vec<String> = session.get("cart").await?.unwrap_or_default();
    Ok(HttpResponse::Ok().json(items))
}

async fn add_to_cart(session: Session, item: web::Path<String>) -> Result<HttpResponse, Error> {
    let mut items: Vec<String> = session.get("cart").await?.unwrap_or_default();
    items.push(item.into_inner());
    session.insert("cart", &items).await?;
    Ok(HttpResponse::Ok().json(items))
}

async fn put_value(
    session: Session,
    name: web::Path<String>,
    body: String,
) -> Result<HttpResponse, Error> {
    session.insert(name.into_inner(), body).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn entries(session: Session) -> Result<HttpResponse, Error> {
    let data = session.entries().await?;
    let names: Vec<&str> = data.iter().map(|(name, _)| name).collect();
    Ok(HttpResponse::Ok().json(names))
}

async fn logout(session: Session) -> Result<HttpResponse, Error> {
    session.logout().await?;
    session.flash(FlashLevel::Info, "Signed out").await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn renew(session: Session) -> Result<HttpResponse, Error> {
    session.renew().await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn flashes(session: Session) -> Result<HttpResponse, Error> {
    let messages: Vec<FlashMessage> = session.take_flashes().await?;
    Ok(HttpResponse::Ok().json(messages))
}

async fn rename(session: Session, name: web::Path<String>) -> Result<HttpResponse, Error> {
    session.update_profile(&json!({ "name": *name })).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn set_roles(
    sessions: Sessions,
    path: web::Path<(u64, String)>,
) -> Result<HttpResponse, Error> {
    let (id, role) = path.into_inner();
    let roles: Vec<String> = (role != "none").then_some(role).into_iter().collect();
    let updated = sessions
        .update_user(&id.to_string(), &json!({ "id": id }), roles)
        .await?;
    Ok(HttpResponse::Ok().json(updated))
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/login/{id}", web::post().to(login))
        .route("/login-afresh/{id}", web::post().to(login_afresh))
        .route("/me", web::get().to(me))
        .route("/admin", web::get().to(admin))
        .route("/cart", web::get().to(cart))
        .route("/cart/{item}", web::post().to(add_to_cart))
        .route("/data", web::get().to(entries))
        .route("/data/{name}", web::put().to(put_value))
        .route("/logout", web::post().to(logout))
        .route("/renew", web::post().to(renew))
        .route("/flash", web::get().to(flashes))
        .route("/rename/{name}", web::post().to(rename))
        .route("/roles/{id}/{role}", web::post().to(set_roles));
}

async fn app(
    middleware: LoginMiddleware,
) -> impl Service<
    actix_http::Request,
    Response = ServiceResponse<impl MessageBody>,
    Error = actix_web::Error,
> {
    test::init_service(App::new().wrap(middleware).configure(routes)).await
}

fn put(path: &str, cookie: Option<&str>, body: &str) -> actix_http::Request {
    with_cookie(
        test::TestRequest::put()
            .uri(path)
            .insert_header(("sec-fetch-site", "same-origin"))
            .set_payload(body.to_owned()),
        cookie,
    )
}

fn from_address(req: test::TestRequest, ip: &str) -> actix_http::Request {
    req.peer_addr(std::net::SocketAddr::new(ip.parse().unwrap(), 40000))
        .insert_header(("sec-fetch-site", "same-origin"))
        .to_request()
}

/// Calls `req` and returns status, body and the session cookie it sets, if any.
async fn call<S, B>(app: &S, req: actix_http::Request) -> (u16, String, Option<String>)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let res = test::call_service(app, req).await;
    let cookie = set_cookie(&res).map(|c| c.value().to_owned());
    let (status, body) = status_and_body(res).await;
    (status, body, cookie)
}

/// The session cookie a response sets, which must be a fresh token.
fn issued(cookie: Option<String>) -> String {
    let token = cookie.expect("a Set-Cookie");
    assert!(!token.is_empty(), "the cookie was cleared, not issued");
    token
}

/// The contract every store keeps, through HTTP.
async fn check_data_contract<S: SessionStore + Clone>(store: S) {
    let app = app(LoginMiddleware::builder(store).build()).await;

    // A read creates nothing; the first write creates an anonymous session and its cookie.
    let (status, body, cookie) = call(&app, get("/cart", None)).await;
    assert_eq!((status, body.as_str(), cookie), (200, "[]", None));
    let (status, body, cookie) = call(&app, post("/cart/tea", None)).await;
    assert_eq!((status, body.as_str()), (200, r#"["tea"]"#));
    let visitor = issued(cookie);
    let (status, body, _) = call(&app, get("/me", Some(&visitor))).await;
    assert_eq!(
        (status, body.as_str()),
        (401, UNAUTHENTICATED),
        "anonymous is no login"
    );
    // A visitor's data is theirs alone: never stored by a shared cache.
    let res = test::call_service(&app, get("/cart", Some(&visitor))).await;
    assert_eq!(
        res.headers().get(header::CACHE_CONTROL).unwrap(),
        "no-store"
    );
    let (_, body, cookie) = call(&app, post("/cart/milk", Some(&visitor))).await;
    assert_eq!((body.as_str(), cookie), (r#"["tea","milk"]"#, None));

    // Login keeps the cart, on a new token; the old one is dead.
    let (status, _, cookie) = call(&app, post("/login/1", Some(&visitor))).await;
    assert_eq!(status, 200);
    let user = issued(cookie);
    assert_ne!(user, visitor);
    assert_eq!(
        call(&app, get("/cart", Some(&user))).await.1,
        r#"["tea","milk"]"#
    );
    assert_eq!(call(&app, get("/me", Some(&user))).await.0, 200);
    let (_, body, cookie) = call(&app, get("/cart", Some(&visitor))).await;
    assert_eq!(
        (body.as_str(), cookie),
        ("[]", None),
        "the old token still reads the cart"
    );

    // Renewal keeps the data too.
    let (_, _, cookie) = call(&app, post("/renew", Some(&user))).await;
    let renewed = issued(cookie);
    assert_eq!(
        call(&app, get("/cart", Some(&renewed))).await.1,
        r#"["tea","milk"]"#
    );
    assert_eq!(call(&app, get("/cart", Some(&user))).await.1, "[]");

    // Logging in as someone else never hands over the data; nor does a login told to start
    // afresh.
    let (_, _, cookie) = call(&app, post("/login/2", Some(&renewed))).await;
    let other = issued(cookie);
    assert_eq!(call(&app, get("/cart", Some(&other))).await.1, "[]");
    let (_, _, cookie) = call(&app, post("/cart/jam", None)).await;
    let visitor = issued(cookie);
    let (_, _, cookie) = call(&app, post("/login-afresh/3", Some(&visitor))).await;
    let afresh = issued(cookie);
    assert_eq!(call(&app, get("/cart", Some(&afresh))).await.1, "[]");
    assert_eq!(call(&app, get("/cart", Some(&visitor))).await.1, "[]");

    // Logout ends the data; a write with the old cookie starts a new, empty session rather
    // than bringing the old one back. The flash set after logout greets the next page once.
    let (_, _, cookie) = call(&app, post("/cart/bread", Some(&other))).await;
    assert_eq!(cookie, None);
    let (status, _, cookie) = call(&app, post("/logout", Some(&other))).await;
    assert_eq!(status, 204);
    let signed_out = issued(cookie);
    let (_, body, _) = call(&app, get("/flash", Some(&signed_out))).await;
    assert_eq!(body, r#"[{"level":"info","text":"Signed out"}]"#);
    assert_eq!(call(&app, get("/flash", Some(&signed_out))).await.1, "[]");
    assert_eq!(call(&app, get("/cart", Some(&other))).await.1, "[]");
    let (_, body, cookie) = call(&app, post("/cart/eggs", Some(&other))).await;
    assert_eq!(body, r#"["eggs"]"#);
    assert_ne!(issued(cookie), other);
}

#[actix_web::test]
async fn data_on_the_memory_store() {
    check_data_contract(MemoryStore::new()).await;
}

#[actix_web::test]
async fn data_on_redis() {
    check_data_contract(redis_store_at(&shared_redis_url(), &unique_prefix()).await).await;
}

#[actix_web::test]
async fn data_on_redis_with_a_local_cache() {
    let server = RedisServer::start();
    let store = RedisStore::builder(server.url())
        .key_prefix("cached-data")
        .local_cache(1000)
        .connect()
        .await
        .unwrap();
    check_data_contract(store).await;
}

#[actix_web::test]
async fn data_on_a_redis_cluster() {
    let cluster = RedisCluster::start();
    let store = cluster.store(&unique_prefix()).await;
    check_data_contract(store).await;
}

/// Many requests writing different names of one session at once lose nothing, even with
/// idle refreshes racing them; a write racing a logout never brings the session back.
#[actix_web::test]
async fn concurrent_writes_lose_nothing_and_resurrect_nothing() {
    let url = shared_redis_url();
    let prefix = unique_prefix();
    let store = redis_store_at(&url, &prefix).await;
    let app = app(LoginMiddleware::builder(store)
        .timeouts(Timeouts::BROWSER.with_idle(Duration::from_millis(2000)))
        .build())
    .await;
    let token = log_in(&app, 1).await;
    // A tenth of the idle window on, every request also refreshes the deadline.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let writes = (0..24).map(|n| call(&app, put(&format!("/data/n{n}"), Some(&token), "1")));
    for (status, body, _) in join_all(writes).await {
        assert_eq!(status, 204, "{body}");
    }
    let (_, body, _) = call(&app, get("/data", Some(&token))).await;
    let names: Vec<String> = serde_json::from_str(&body).unwrap();
    assert_eq!(names.len(), 24, "{names:?}");

    let key = support::http::redis_session_key(&prefix, &token);
    let writes = (0..12).map(|n| call(&app, put(&format!("/data/late{n}"), Some(&token), "1")));
    let (_, results) =
        futures_util::future::join(call(&app, post("/logout", Some(&token))), join_all(writes))
            .await;
    for (status, body, cookie) in results {
        // Before the logout: written. Resolved before it, written after: refused. Resolved
        // after it: a new anonymous session of its own.
        match status {
            204 => {}
            409 => assert_eq!(body, r#"{"error":"session_changed"}"#),
            other => panic!("a write racing a logout answered {other}: {body} {cookie:?}"),
        }
    }
    let mut conn = connection(&url).unwrap();
    let exists: bool = redis::cmd("EXISTS").arg(&key).query(&mut conn).unwrap();
    assert!(!exists, "a write brought a logged-out session back");
}

#[actix_web::test]
async fn data_past_the_limit_is_413_and_nothing_is_written() {
    for store_is_redis in [false, true] {
        let builder = if store_is_redis {
            LoginMiddleware::builder(redis_store_at(&shared_redis_url(), &unique_prefix()).await)
        } else {
            LoginMiddleware::builder(MemoryStore::new())
        };
        let app = app(builder.max_data_size(1000).build()).await;
        let big = format!("\"{}\"", "x".repeat(1200));

        // A visitor's first write that is too large starts no session.
        let (status, body, cookie) = call(&app, put("/data/big", None, &big)).await;
        assert_eq!(
            (status, body.as_str(), cookie),
            (413, r#"{"error":"session_data_too_large"}"#, None)
        );

        let token = log_in(&app, 1).await;
        let (status, _, _) = call(&app, put("/data/small", Some(&token), "\"ok\"")).await;
        assert_eq!(status, 204);
        let (status, body, _) = call(&app, put("/data/big", Some(&token), &big)).await;
        assert_eq!(
            (status, body.as_str()),
            (413, r#"{"error":"session_data_too_large"}"#)
        );
        let (_, body, _) = call(&app, get("/data", Some(&token))).await;
        assert_eq!(body, r#"["small"]"#, "redis: {store_is_redis}");
        // Replacing a value by a smaller one always fits.
        let (status, _, _) = call(&app, put("/data/small", Some(&token), "1")).await;
        assert_eq!(status, 204);
    }
}

#[actix_web::test]
async fn new_anonymous_sessions_are_bounded_per_address_and_fairly_in_all() {
    let store = redis_store_at(&shared_redis_url(), &unique_prefix()).await;
    let app = app(LoginMiddleware::builder(store)
        .anonymous_sessions_per_minute(3, 5)
        .build())
    .await;
    let visit = |ip: &str| from_address(test::TestRequest::post().uri("/cart/x"), ip);
    for _ in 0..3 {
        let (status, _, cookie) = call(&app, visit("192.0.2.1")).await;
        assert_eq!(status, 200);
        issued(cookie);
    }
    let res = test::call_service(&app, visit("192.0.2.1")).await;
    assert_eq!(res.status(), 429);
    let retry: u64 = res
        .headers()
        .get(header::RETRY_AFTER)
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert!(set_cookie(&res).is_none());
    assert_eq!(
        status_and_body(res).await.1,
        r#"{"error":"too_many_sessions"}"#
    );

    // The /24 has used its fair share (one address's worth): its other addresses draw on the
    // shared allowance of 5, and are refused once it is spent.
    for n in 2..7 {
        assert_eq!(call(&app, visit(&format!("192.0.2.{n}"))).await.0, 200);
    }
    assert_eq!(call(&app, visit("192.0.2.7")).await.0, 429);
    // Other networks still have their own fair share. IPv6 counts per /64 and /48.
    assert_eq!(call(&app, visit("2001:db8::1")).await.0, 200);
    assert_eq!(call(&app, visit("2001:db8::2")).await.0, 200);
    assert_eq!(call(&app, visit("198.51.100.7")).await.0, 200);
    // Logins are never counted.
    assert_eq!(status(&app, post("/login/9", None)).await, 200);
}

/// One visit that writes session data from `ip`: status, and `Retry-After` if any.
async fn first_write<S, B>(app: &S, ip: &str) -> (u16, Option<u64>)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let res = test::call_service(
        app,
        from_address(test::TestRequest::post().uri("/cart/x"), ip),
    )
    .await;
    let retry = res
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let (status, body) = status_and_body(res).await;
    if status == 429 {
        assert_eq!(body, r#"{"error":"too_many_sessions"}"#);
    }
    (status, retry)
}

/// Floods the default bounds from `networks` (one address per /64, 40 first writes each), then
/// checks that the flood was refused with `Retry-After` and that visitors from unrelated
/// addresses still get sessions.
async fn flood_then_visit(networks: &[String]) {
    let store = redis_store_at(&shared_redis_url(), &unique_prefix()).await;
    let app = app(LoginMiddleware::builder(store).build()).await;
    let (mut admitted, mut refused) = (0, 0);
    for _ in 0..40 {
        for ip in networks {
            match first_write(&app, ip).await {
                (200, _) => admitted += 1,
                (429, Some(retry)) => {
                    assert!((1..=60).contains(&retry), "Retry-After {retry}");
                    refused += 1;
                }
                other => panic!("flood answered {other:?}"),
            }
        }
    }
    assert!(
        refused > 0,
        "the flood was never refused ({admitted} admitted)"
    );
    for ip in [
        "198.51.100.7",
        "203.0.113.9",
        "2001:db8:ffff:1::1",
        "2a00:1450::1",
    ] {
        assert_eq!(
            first_write(&app, ip).await,
            (200, None),
            "a visitor from {ip} was refused after a flood of {admitted} sessions"
        );
    }
}

#[actix_web::test]
async fn a_flood_from_fifty_networks_in_one_48_leaves_room_for_everyone_else() {
    let networks: Vec<String> = (0..50).map(|n| format!("2001:db8:77:{n:x}::1")).collect();
    flood_then_visit(&networks).await;
}

#[actix_web::test]
async fn a_flood_from_fifty_networks_in_fifty_48s_leaves_room_for_everyone_else() {
    let networks: Vec<String> = (0..50).map(|n| format!("2001:db8:{n:x}:1::1")).collect();
    flood_then_visit(&networks).await;
}

/// Whoever holds a provider's whole /32 holds 65,536 /48s: a flood from 200 of them is bounded
/// as one region (its fair share, then the shared allowance), and a visitor from another
/// region still gets a session.
#[actix_web::test]
async fn a_flood_from_many_48s_of_one_32_is_bounded_as_one_region() {
    let store = redis_store_at(&shared_redis_url(), &unique_prefix()).await;
    let app = app(LoginMiddleware::builder(store)
        .anonymous_sessions_per_minute(20, 100)
        .anonymous_sessions_per_network(50)
        .build())
    .await;
    let mut admitted = 0;
    for round in 0..5 {
        for net in 0..200 {
            let ip = format!("2001:db8:{net:x}:{round:x}::1");
            if first_write(&app, &ip).await.0 == 200 {
                admitted += 1;
            }
        }
    }
    // The region's fair share (one network's worth, 50) and the shared allowance (100).
    assert!(
        admitted <= 150,
        "one /32 started {admitted} sessions in a minute"
    );
    assert_eq!(first_write(&app, "2001:db9:1:1::1").await, (200, None));
    assert_eq!(first_write(&app, "198.51.100.8").await, (200, None));
}

/// Visitors whose address the app cannot tell (no trusted proxy names it) are not one address
/// that any one of them can spend for all: they draw on the shared allowance only.
#[actix_web::test]
async fn visitors_without_a_known_address_share_the_allowance_not_one_address() {
    let store = redis_store_at(&shared_redis_url(), &unique_prefix()).await;
    let app = app(LoginMiddleware::builder(store)
        .anonymous_sessions_per_minute(2, 30)
        .build())
    .await;
    let unknown = || {
        test::TestRequest::post()
            .uri("/cart/x")
            .insert_header(("sec-fetch-site", "same-origin"))
            .to_request()
    };
    for n in 0..30 {
        assert_eq!(call(&app, unknown()).await.0, 200, "visitor {n}");
    }
    assert_eq!(
        call(&app, unknown()).await.0,
        429,
        "past the shared allowance"
    );
}

#[actix_web::test]
async fn a_flood_from_one_ipv4_24_is_bounded_as_one_network() {
    let store = redis_store_at(&shared_redis_url(), &unique_prefix()).await;
    let app = app(LoginMiddleware::builder(store)
        .anonymous_sessions_per_minute(3, 5)
        .anonymous_sessions_per_network(4)
        .build())
    .await;
    // Three from one address, one more from its /24: the network's bound is reached.
    for ip in ["192.0.2.1", "192.0.2.1", "192.0.2.1", "192.0.2.2"] {
        assert_eq!(first_write(&app, ip).await.0, 200);
    }
    assert_eq!(first_write(&app, "192.0.2.1").await.0, 429, "per address");
    assert_eq!(first_write(&app, "192.0.2.3").await.0, 429, "per /24");
    assert_eq!(first_write(&app, "192.0.3.1").await.0, 200, "another /24");
}

#[actix_web::test]
async fn anonymous_sessions_keep_their_own_shorter_timeouts() {
    let store = redis_store_at(&shared_redis_url(), &unique_prefix()).await;
    let app = app(LoginMiddleware::builder(store)
        .anonymous_timeouts(Timeouts::ANONYMOUS.with_idle(Duration::from_millis(600)))
        .build())
    .await;
    let (_, _, cookie) = call(&app, post("/cart/tea", None)).await;
    let visitor = issued(cookie);
    let user = log_in(&app, 1).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(call(&app, get("/cart", Some(&visitor))).await.1, "[]");
    assert_eq!(status(&app, get("/me", Some(&user))).await, 200);
}

/// Live role changes reach every session of the user on the next request: on another
/// instance whose cache holds the session, and on the memory store and a cluster.
#[actix_web::test]
async fn role_updates_reach_every_session_at_once_cached_or_not() {
    let server = RedisServer::start();
    let cached = || async {
        RedisStore::builder(server.url())
            .key_prefix("roles")
            .local_cache(1000)
            .connect()
            .await
            .unwrap()
    };
    let a = app(LoginMiddleware::new(cached().await)).await;
    let b = app(LoginMiddleware::new(cached().await)).await;
    let phone = log_in(&a, 5).await;
    let laptop = log_in(&b, 5).await;
    let bystander = log_in(&b, 6).await;
    for token in [&phone, &laptop] {
        // Twice, so that b serves the second from its cache.
        assert_eq!(status(&b, get("/admin", Some(token))).await, 403);
        assert_eq!(status(&b, get("/admin", Some(token))).await, 403);
    }
    for (role, expected) in [("admin", 200), ("none", 403), ("admin", 200)] {
        let (_, body, _) = call(&a, post(&format!("/roles/5/{role}"), None)).await;
        assert_eq!(body, "2");
        for token in [&phone, &laptop] {
            assert_eq!(
                status(&b, get("/admin", Some(token))).await,
                expected,
                "{role}"
            );
            assert_eq!(
                status(&a, get("/admin", Some(token))).await,
                expected,
                "{role}"
            );
        }
        assert_eq!(status(&b, get("/admin", Some(&bystander))).await, 403);
    }

    let cluster = RedisCluster::start();
    let on_cluster = cluster.store(&unique_prefix()).await;
    for middleware in [
        LoginMiddleware::new(MemoryStore::new()),
        LoginMiddleware::new(on_cluster),
    ] {
        let app = app(middleware).await;
        let token = log_in(&app, 5).await;
        assert_eq!(status(&app, get("/admin", Some(&token))).await, 403);
        assert_eq!(call(&app, post("/roles/5/admin", None)).await.1, "1");
        assert_eq!(status(&app, get("/admin", Some(&token))).await, 200);
        // A renewal carries the new roles along.
        let (_, _, cookie) = call(&app, post("/renew", Some(&token))).await;
        assert_eq!(
            status(&app, get("/admin", Some(&issued(cookie)))).await,
            200
        );
    }
}

#[actix_web::test]
async fn a_handler_replaces_its_own_profile() {
    let app = app(LoginMiddleware::new(MemoryStore::new())).await;
    let token = log_in(&app, 1).await;
    let other = log_in(&app, 1).await;
    assert_eq!(status(&app, post("/rename/ann", Some(&token))).await, 204);
    assert_eq!(
        call(&app, get("/me", Some(&token))).await.1,
        r#"{"name":"ann"}"#
    );
    assert_eq!(call(&app, get("/me", Some(&other))).await.1, r#"{"id":1}"#);
    let (status, body, _) = call(&app, post("/rename/ann", None)).await;
    assert_eq!((status, body.as_str()), (401, UNAUTHENTICATED));
}

#[actix_web::test]
async fn data_fails_closed_when_redis_is_down() {
    let server = RedisServer::start();
    let app = app(LoginMiddleware::new(
        redis_store_at(&server.url(), "down").await,
    ))
    .await;
    let token = log_in(&app, 1).await;
    assert_eq!(status(&app, put("/data/a", Some(&token), "1")).await, 204);
    server.stop();
    for req in [
        get("/cart", Some(&token)),
        put("/data/b", Some(&token), "1"),
        post("/cart/tea", None),
    ] {
        let (status, body, cookie) = call(&app, req).await;
        assert_eq!((status, body.as_str(), cookie), (503, UNAVAILABLE, None));
    }
}

/// What each kind of request costs, counted by Redis itself.
#[actix_web::test]
async fn redis_commands_per_data_request() {
    let server = RedisServer::start();
    let app = app(LoginMiddleware::new(
        redis_store_at(&server.url(), "cost").await,
    ))
    .await;
    let counts = |pairs: &[(&str, u64)]| -> std::collections::HashMap<String, u64> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    };
    let token = log_in(&app, 1).await;
    // Every script is loaded on its first use; write once first to count the steady state.
    assert_eq!(
        status(&app, put("/data/warm", Some(&token), "1")).await,
        204
    );

    // A visitor without a session reading data: nothing.
    let before = server.command_counts();
    assert_eq!(call(&app, get("/cart", None)).await.1, "[]");
    assert!(support::redis_server::commands_during_since(&server, &before).is_empty());

    // Logged in, no data touched: the record lookup.
    let before = server.command_counts();
    assert_eq!(status(&app, get("/me", Some(&token))).await, 200);
    let sent = support::redis_server::commands_during_since(&server, &before);
    assert_eq!(sent, counts(&[("hmget", 1)]));

    // Reading data: one round trip in all, an HMGET of the record and the data (by the names
    // this instance has met), however many values the handler reads.
    let before = server.command_counts();
    assert_eq!(call(&app, get("/cart", Some(&token))).await.1, "[]");
    let sent = support::redis_server::commands_during_since(&server, &before);
    assert_eq!(sent, counts(&[("hmget", 1)]));

    // A write: the lookup (a handler that takes the session may read its data, so the data
    // comes along), one script that checks the session, sizes the change and writes it, and
    // a PING that waits until caching instances have heard of the write (`peer_caches`).
    let before = server.command_counts();
    assert_eq!(
        status(&app, put("/data/pref", Some(&token), "\"dark\"")).await,
        204
    );
    let sent = support::redis_server::commands_during_since(&server, &before);
    assert_eq!(
        sent,
        counts(&[
            ("hmget", 1),
            ("evalsha", 1),
            ("hexists", 2),
            ("hget", 2),
            ("hset", 2),
            ("ping", 1)
        ])
    );
}

/// A session that a rotation has copied but not yet deleted takes no more data writes (they
/// would be lost with it), while a live update reaches the copy through the mark the rotation
/// leaves.
#[actix_web::test]
async fn a_session_caught_mid_rotation_refuses_writes_and_forwards_updates() {
    use actix_login::store::{DataChange, DataWrite, SessionKey, SessionRecord};
    use actix_login::SessionData;
    let url = shared_redis_url();
    let store = redis_store_at(&url, &unique_prefix()).await;
    let key = |text: &str| SessionKey::parse(text).unwrap();
    // Two keys of one group, as a rotation makes.
    let old = key(&format!("abcd{}", "A".repeat(28)));
    let new = key(&format!("abcd{}", "B".repeat(28)));
    let now = std::time::SystemTime::now();
    let hour = now + Duration::from_secs(3600);
    let profile = serde_json::value::RawValue::from_string(r#"{"id":1}"#.into()).unwrap();
    let record = SessionRecord::new("pub", "1", profile, now, hour);
    for k in [&old, &new] {
        assert!(store
            .create(k, &record, hour, &SessionData::new())
            .await
            .unwrap());
    }
    // The mark a rotation leaves on the old key, in the same step as its copy, which takes the
    // old key's record away: the update must follow the mark all the same.
    let mut conn = connection(&url).unwrap();
    mark_as_moving(&mut conn, &store.session_key(&old), new.as_str());

    let write = [DataChange::Insert {
        name: "cart".into(),
        json: "[1]".into(),
    }];
    assert_eq!(
        store.write_data(&old, &write, 1000).await.unwrap(),
        DataWrite::Gone
    );
    let admin =
        serde_json::value::RawValue::from_string(r#"{"id":1,"admin":true}"#.into()).unwrap();
    assert!(store
        .update_user(&old, &admin, &["admin".into()])
        .await
        .unwrap());
    let moved = store.load(&new).await.unwrap().unwrap();
    assert!(moved.record.has_role("admin"));
    assert_eq!(moved.record.user().get(), admin.get());
}

/// Two instances with their own local caches: a write through one is read by the very next
/// request through the other, and the cached record does not hide it.
#[actix_web::test]
async fn a_write_on_one_caching_instance_is_read_on_the_other_at_once() {
    let server = RedisServer::start();
    let cached = || async {
        RedisStore::builder(server.url())
            .key_prefix("two")
            .local_cache(1000)
            .connect()
            .await
            .unwrap()
    };
    let a = app(LoginMiddleware::new(cached().await)).await;
    let b = app(LoginMiddleware::new(cached().await)).await;
    let token = log_in(&a, 1).await;
    let mut expected = Vec::new();
    for round in 0..50 {
        // b has the record cached from the previous round's read.
        let item = format!("i{round}");
        let (status, _, _) = call(&a, post(&format!("/cart/{item}"), Some(&token))).await;
        assert_eq!(status, 200);
        expected.push(item);
        let (status, body, _) = call(&b, get("/cart", Some(&token))).await;
        assert_eq!(status, 200);
        assert_eq!(
            body,
            serde_json::to_string(&expected).unwrap(),
            "round {round}"
        );
    }
}

/// The data limit bounds what Redis really keeps: many tiny values, each a hash field with its
/// own bookkeeping, cannot take several times the limit in memory.
#[actix_web::test]
async fn the_data_limit_bounds_the_memory_redis_spends() {
    use actix_login::store::{DataChange, DataWrite, SessionKey, SessionRecord};
    use actix_login::SessionData;

    const LIMIT: usize = 64 * 1024;
    let server = RedisServer::start();
    let prefix = unique_prefix();
    let store = redis_store_at(&server.url(), &prefix).await;
    let key = SessionKey::parse("abcd0000000000000000000000000001").unwrap();
    let now = std::time::SystemTime::now();
    let hour = now + Duration::from_secs(3600);
    let record = SessionRecord::anonymous("public-id", now, hour);
    assert!(store
        .create(&key, &record, hour, &SessionData::new())
        .await
        .unwrap());
    let mut written = 0;
    loop {
        let change = DataChange::Insert {
            name: format!("k{written}"),
            json: "1".to_owned(),
        };
        match store.write_data(&key, &[change], LIMIT).await.unwrap() {
            DataWrite::Written(_) => written += 1,
            DataWrite::TooLarge { .. } => break,
            DataWrite::Gone => panic!("the session vanished"),
        }
        assert!(written < 100_000, "no limit was reached");
    }
    let mut raw = connection(&server.url()).unwrap();
    let used: usize = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(format!("{prefix}:s:{{abcd}}0000000000000000000000000001"))
        .arg("SAMPLES")
        .arg(0)
        .query(&mut raw)
        .unwrap();
    assert!(
        written > 500,
        "only {written} tiny values fit in {LIMIT} bytes"
    );
    assert!(
        used <= 2 * LIMIT,
        "{written} tiny values took {used} bytes in Redis, past twice the {LIMIT}-byte limit"
    );
}
