//! actix-session's own `SessionMiddleware` and `Session` on `ActixSessionStore`, against real
//! Redis: what reaches Redis, what the cookie holds, and what a client sees when Redis fails.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix_login::store::ActixSessionStore;
use actix_login::RedisStore;
use actix_session::config::{PersistentSession, SessionMiddlewareBuilder, TtlExtensionPolicy};
use actix_session::{Session, SessionMiddleware};
use actix_web::body::{to_bytes, MessageBody};
use actix_web::cookie::{time, Cookie, CookieJar, Key};
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header;
use actix_web::{test, web, App, HttpResponse};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::support::cluster::RedisCluster;
use crate::support::http::{redis_store_at, UNAVAILABLE};
use crate::support::redis_server::{
    connection, dump, shared_redis_url, unique_prefix, RedisServer,
};

/// actix-session's default cookie name.
const COOKIE: &str = "id";

/// How many times `GET /get` ran, per app.
struct Runs(AtomicUsize);

async fn set(session: Session, value: web::Path<String>) -> actix_web::Result<&'static str> {
    session.insert("value", value.into_inner())?;
    Ok("ok")
}

async fn get(session: Session, runs: web::Data<Runs>) -> actix_web::Result<String> {
    runs.0.fetch_add(1, Ordering::SeqCst);
    Ok(session
        .get::<String>("value")?
        .unwrap_or_else(|| "none".to_owned()))
}

async fn renew(session: Session) -> &'static str {
    session.renew();
    "ok"
}

async fn purge(session: Session) -> &'static str {
    session.purge();
    "ok"
}

/// Changes the session, then pauses every write on the Redis at `url` for longer than the
/// store's command timeout, so that the middleware's write after this handler hangs.
async fn set_while_writes_hang(
    session: Session,
    redis: web::Data<Redis>,
) -> actix_web::Result<&'static str> {
    session.insert("value", "written while Redis hung")?;
    let mut conn = connection(&redis.url).unwrap();
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1500)
        .arg("WRITE")
        .exec(&mut conn)
        .unwrap();
    Ok("ok")
}

/// Where the app's sessions are: the Redis URL and key prefix, for handlers that play a
/// concurrent request or an outage.
struct Redis {
    url: String,
    prefix: String,
}

/// Changes the session after another request purged it: deletes every session under the
/// prefix, as a logout in another tab would, between actix-session's load and its update.
async fn set_after_a_concurrent_purge(
    session: Session,
    redis: web::Data<Redis>,
) -> actix_web::Result<&'static str> {
    let mut conn = connection(&redis.url).unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:a:*", redis.prefix))
        .query(&mut conn)
        .unwrap();
    assert!(!keys.is_empty());
    redis::cmd("DEL").arg(&keys).exec(&mut conn).unwrap();
    session.insert("value", "after the purge")?;
    Ok("ok")
}

fn routes(app: &mut web::ServiceConfig) {
    app.app_data(web::Data::new(Runs(AtomicUsize::new(0))))
        .route("/set/{value}", web::post().to(set))
        .route("/get", web::get().to(get))
        .route("/renew", web::post().to(renew))
        .route("/purge", web::post().to(purge))
        .route(
            "/set-while-writes-hang",
            web::post().to(set_while_writes_hang),
        )
        .route(
            "/set-after-a-concurrent-purge",
            web::post().to(set_after_a_concurrent_purge),
        );
}

type Builder = SessionMiddlewareBuilder<ActixSessionStore>;

/// The app as the module docs tell users to build it: `SessionMiddleware` on the store, with
/// `fail_closed` outside it.
async fn app(
    store: RedisStore,
    key: &Key,
    url: &str,
    prefix: &str,
    configure: impl FnOnce(Builder) -> Builder,
) -> impl Service<
    actix_http::Request,
    Response = ServiceResponse<impl MessageBody>,
    Error = actix_web::Error,
> {
    let sessions = configure(SessionMiddleware::builder(
        ActixSessionStore::new(store),
        key.clone(),
    ))
    .build();
    test::init_service(
        App::new()
            .app_data(web::Data::new(Redis {
                url: url.to_owned(),
                prefix: prefix.to_owned(),
            }))
            .configure(routes)
            .wrap(sessions)
            .wrap(ActixSessionStore::fail_closed()),
    )
    .await
}

/// What a client gets back.
struct Answer {
    status: u16,
    body: String,
    /// The session cookie set or removed, if any.
    cookie: Option<Cookie<'static>>,
    cache_control: Option<String>,
}

/// Sends `req` and answers what the server would send: an error becomes its response, as Actix's
/// HTTP dispatcher makes it.
async fn send<S, B>(app: &S, req: actix_http::Request) -> Answer
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody + 'static,
{
    let response: HttpResponse = match app.call(req).await {
        Ok(res) => res.map_into_boxed_body().into_parts().1,
        Err(err) => err.error_response(),
    };
    let (response, body) = response.into_parts();
    let cookie = response
        .headers()
        .get_all(header::SET_COOKIE)
        .filter_map(|v| Cookie::parse_encoded(v.to_str().ok()?.to_owned()).ok())
        .find(|c| c.name() == COOKIE);
    let cache_control = response
        .headers()
        .get(header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = to_bytes(body).await.ok().unwrap_or_default();
    Answer {
        status: response.status().as_u16(),
        body: String::from_utf8_lossy(&body).into_owned(),
        cookie,
        cache_control,
    }
}

fn post(path: &str, cookie: Option<&Cookie<'static>>) -> actix_http::Request {
    with(test::TestRequest::post().uri(path), cookie)
}

fn get_(cookie: Option<&Cookie<'static>>) -> actix_http::Request {
    with(test::TestRequest::get().uri("/get"), cookie)
}

fn with(req: test::TestRequest, cookie: Option<&Cookie<'static>>) -> actix_http::Request {
    match cookie {
        Some(cookie) => req.cookie(cookie.clone()).to_request(),
        None => req.to_request(),
    }
}

/// The session key an (encrypted) actix-session cookie carries.
fn session_key(cookie: &Cookie<'static>, key: &Key) -> String {
    let mut jar = CookieJar::new();
    jar.add_original(cookie.clone());
    jar.private(key)
        .get(COOKIE)
        .expect("the cookie decrypts with the app's key")
        .value()
        .to_owned()
}

/// A cookie the app will decrypt to `session_key`: what a client that knew the app's key (or
/// a bug that let a client choose the value) would send.
fn forged(session_key: &str, key: &Key) -> Cookie<'static> {
    let mut jar = CookieJar::new();
    jar.private_mut(key)
        .add(Cookie::new(COOKIE, session_key.to_owned()));
    jar.get(COOKIE).unwrap().clone()
}

/// The Redis key a session key is kept under: its whole SHA-256, base64url.
fn redis_key(prefix: &str, session_key: &str) -> String {
    format!(
        "{prefix}:a:{}",
        URL_SAFE_NO_PAD.encode(Sha256::digest(session_key.as_bytes()))
    )
}

fn exists(url: &str, key: &str) -> bool {
    let mut conn = connection(url).unwrap();
    redis::cmd("EXISTS")
        .arg(key)
        .query::<i64>(&mut conn)
        .unwrap()
        == 1
}

async fn logged_in<S, B>(app: &S, value: &str) -> Cookie<'static>
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody + 'static,
{
    let answer = send(app, post(&format!("/set/{value}"), None)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.cookie.expect("a new session sets a cookie")
}

#[actix_web::test]
async fn state_survives_requests_under_a_hashed_key() {
    let url = shared_redis_url();
    let prefix = unique_prefix();
    let key = Key::generate();
    let app = app(
        redis_store_at(&url, &prefix).await,
        &key,
        &url,
        &prefix,
        |b| b,
    )
    .await;

    let cookie = logged_in(&app, "apples").await;
    let raw = session_key(&cookie, &key);
    assert_eq!(raw.len(), 43, "32 random bytes in base64url");
    assert_eq!(URL_SAFE_NO_PAD.decode(&raw).unwrap().len(), 32);

    let answer = send(&app, get_(Some(&cookie))).await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "apples"));
    assert!(
        answer.cookie.is_none(),
        "an unchanged session keeps its cookie"
    );

    // A change keeps the key and rewrites the value in place.
    let answer = send(&app, post("/set/pears", Some(&cookie))).await;
    assert_eq!(answer.status, 200);
    let rewritten = answer.cookie.expect("actix-session sends the cookie again");
    assert_eq!(session_key(&rewritten, &key), raw);
    assert_eq!(send(&app, get_(Some(&cookie))).await.body, "pears");

    // One key under the prefix, the hash, holding the state as JSON, with a TTL of
    // actix-session's default state TTL (one day).
    let keys = dump(&url, &prefix);
    assert_eq!(keys.len(), 1, "{keys:?}");
    let (name, value, ttl) = &keys[0];
    assert_eq!(name, &redis_key(&prefix, &raw));
    let state: std::collections::HashMap<String, String> =
        serde_json::from_slice(value.as_deref().unwrap()).unwrap();
    assert_eq!(state["value"], "\"pears\"");
    assert!((86_390_000..=86_400_000).contains(ttl), "{ttl}");

    // Neither the session key nor the cookie's value appears anywhere in Redis.
    let mut conn = connection(&url).unwrap();
    let every_key: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    for secret in [raw.as_str(), cookie.value()] {
        assert!(
            every_key.iter().all(|k| !k.contains(secret)),
            "a Redis key contains the cookie's secret"
        );
        let value = String::from_utf8_lossy(value.as_deref().unwrap());
        assert!(
            !value.contains(secret),
            "the state contains the cookie's secret"
        );
    }
}

#[actix_web::test]
async fn renew_moves_the_state_to_a_new_key_and_kills_the_old_one() {
    let url = shared_redis_url();
    let prefix = unique_prefix();
    let key = Key::generate();
    let app = app(
        redis_store_at(&url, &prefix).await,
        &key,
        &url,
        &prefix,
        |b| b,
    )
    .await;
    let old = logged_in(&app, "apples").await;
    let old_raw = session_key(&old, &key);

    let answer = send(&app, post("/renew", Some(&old))).await;
    assert_eq!(answer.status, 200);
    let new = answer.cookie.expect("renew sets a new cookie");
    let new_raw = session_key(&new, &key);
    assert_ne!(new_raw, old_raw);

    assert!(!exists(&url, &redis_key(&prefix, &old_raw)));
    assert!(exists(&url, &redis_key(&prefix, &new_raw)));
    assert_eq!(send(&app, get_(Some(&new))).await.body, "apples");
    assert_eq!(send(&app, get_(Some(&old))).await.body, "none");
    assert_eq!(dump(&url, &prefix).len(), 1);
}

#[actix_web::test]
async fn purge_deletes_the_state_in_redis_and_the_old_cookie_stays_dead() {
    let url = shared_redis_url();
    let prefix = unique_prefix();
    let key = Key::generate();
    let app = app(
        redis_store_at(&url, &prefix).await,
        &key,
        &url,
        &prefix,
        |b| b,
    )
    .await;
    let cookie = logged_in(&app, "apples").await;
    let raw = session_key(&cookie, &key);

    let answer = send(&app, post("/purge", Some(&cookie))).await;
    assert_eq!(answer.status, 200);
    let removal = answer.cookie.expect("purge removes the cookie");
    assert_eq!(removal.value(), "");
    assert!(dump(&url, &prefix).is_empty(), "purge left state in Redis");

    // The old cookie, replayed, is a fresh empty session; a change then gets a new key, and
    // the purged one is never written again.
    assert_eq!(send(&app, get_(Some(&cookie))).await.body, "none");
    let answer = send(&app, post("/set/plums", Some(&cookie))).await;
    assert_eq!(answer.status, 200);
    let replacement = session_key(&answer.cookie.expect("a new cookie"), &key);
    assert_ne!(replacement, raw);
    assert!(!exists(&url, &redis_key(&prefix, &raw)));
    assert_eq!(send(&app, get_(Some(&cookie))).await.body, "none");
}

#[actix_web::test]
async fn a_cookie_whose_state_is_gone_starts_afresh_under_a_new_key() {
    let url = shared_redis_url();
    let prefix = unique_prefix();
    let key = Key::generate();
    let app = app(
        redis_store_at(&url, &prefix).await,
        &key,
        &url,
        &prefix,
        |b| b,
    )
    .await;
    let cookie = logged_in(&app, "apples").await;
    let raw = session_key(&cookie, &key);

    // Expired, evicted, or deleted by an operator.
    let mut conn = connection(&url).unwrap();
    redis::cmd("DEL")
        .arg(redis_key(&prefix, &raw))
        .exec(&mut conn)
        .unwrap();

    let answer = send(&app, get_(Some(&cookie))).await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "none"));
    let answer = send(&app, post("/set/plums", Some(&cookie))).await;
    let fresh = session_key(&answer.cookie.expect("a new cookie"), &key);
    assert_ne!(fresh, raw, "the deleted key came back");
    assert!(!exists(&url, &redis_key(&prefix, &raw)));
    assert_eq!(dump(&url, &prefix).len(), 1);
}

/// actix-session's `update` of a key that vanished since `load` stores the state under a new
/// key; the vanished key is never written again.
#[actix_web::test]
async fn an_update_after_a_concurrent_purge_moves_to_a_new_key() {
    let url = shared_redis_url();
    let prefix = unique_prefix();
    let key = Key::generate();
    let app = app(
        redis_store_at(&url, &prefix).await,
        &key,
        &url,
        &prefix,
        |b| b,
    )
    .await;
    let cookie = logged_in(&app, "apples").await;
    let raw = session_key(&cookie, &key);

    let answer = send(&app, post("/set-after-a-concurrent-purge", Some(&cookie))).await;
    assert_eq!(answer.status, 200);
    let moved = answer.cookie.expect("the state moved to a new cookie");
    let moved_raw = session_key(&moved, &key);
    assert_ne!(moved_raw, raw);
    assert!(
        !exists(&url, &redis_key(&prefix, &raw)),
        "the purged key came back"
    );
    assert_eq!(send(&app, get_(Some(&cookie))).await.body, "none");
    assert_eq!(send(&app, get_(Some(&moved))).await.body, "after the purge");
}

#[actix_web::test]
async fn garbage_and_client_chosen_keys_never_become_sessions() {
    let url = shared_redis_url();
    let prefix = unique_prefix();
    let key = Key::generate();
    let app = app(
        redis_store_at(&url, &prefix).await,
        &key,
        &url,
        &prefix,
        |b| b,
    )
    .await;
    // One real session, so that a key that merely looks right has something to collide with.
    let real = logged_in(&app, "apples").await;

    let well_shaped = URL_SAFE_NO_PAD.encode([7u8; 32]);
    let cookies = [
        Cookie::new(COOKIE, "garbage"),
        Cookie::new(COOKIE, "a".repeat(5000)),
        forged("chosen-by-the-client", &key),
        forged(&well_shaped, &key),
        forged(&"x".repeat(4000), &key),
    ];
    for cookie in &cookies {
        let answer = send(&app, get_(Some(cookie))).await;
        assert_eq!((answer.status, answer.body.as_str()), (200, "none"));
        let answer = send(&app, post("/set/plums", Some(cookie))).await;
        assert_eq!(answer.status, 200);
        let issued = session_key(&answer.cookie.expect("a new cookie"), &key);
        assert_ne!(issued, well_shaped);
        assert_ne!(issued, "chosen-by-the-client");
    }
    for chosen in ["chosen-by-the-client", well_shaped.as_str()] {
        assert!(!exists(&url, &redis_key(&prefix, chosen)));
    }
    // The real session plus one new session per request that changed state.
    assert_eq!(dump(&url, &prefix).len(), 1 + cookies.len());
    assert_eq!(send(&app, get_(Some(&real))).await.body, "apples");
}

#[actix_web::test]
async fn the_state_ttl_is_set_and_extended_with_pexpire() {
    let server = RedisServer::start();
    let url = server.url();
    let prefix = unique_prefix();
    let key = Key::generate();
    let app = app(
        redis_store_at(&url, &prefix).await,
        &key,
        &url,
        &prefix,
        |b| {
            b.session_lifecycle(
                PersistentSession::default()
                    .session_ttl(time::Duration::seconds(60))
                    .session_ttl_extension_policy(TtlExtensionPolicy::OnEveryRequest),
            )
        },
    )
    .await;
    let cookie = logged_in(&app, "apples").await;
    let name = redis_key(&prefix, &session_key(&cookie, &key));
    let pttl = |conn: &mut redis::Connection| -> i64 {
        redis::cmd("PTTL").arg(&name).query(conn).unwrap()
    };
    let mut conn = connection(&url).unwrap();
    assert!((55_000..=60_000).contains(&pttl(&mut conn)));

    redis::cmd("PEXPIRE")
        .arg(&name)
        .arg(5_000)
        .exec(&mut conn)
        .unwrap();
    let before = server.command_counts();
    assert_eq!(send(&app, get_(Some(&cookie))).await.body, "apples");
    assert!((55_000..=60_000).contains(&pttl(&mut conn)));
    let during = crate::support::redis_server::commands_during_since(&server, &before);
    assert_eq!(during.get("get"), Some(&1), "{during:?}");
    // Taken after this test's own PEXPIRE: the one counted is the store's.
    assert_eq!(during.get("pexpire"), Some(&1), "{during:?}");
    assert_eq!(during.get("set"), None, "{during:?}");
}

#[actix_web::test]
async fn redis_down_is_a_503_never_a_fresh_session() {
    let server = RedisServer::start();
    let url = server.url();
    let key = Key::generate();
    let store = redis_store_at(&url, "interop-down").await;
    let app = app(store.clone(), &key, &url, "interop-down", |b| b).await;
    let cookie = logged_in(&app, "apples").await;
    server.stop();

    let answer = send(&app, get_(None)).await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (200, "none"),
        "a request without a cookie that changes nothing needs no Redis"
    );
    for req in [
        get_(Some(&cookie)),
        post("/set/plums", Some(&cookie)),
        post("/set/plums", None),
        post("/renew", Some(&cookie)),
        post("/purge", Some(&cookie)),
    ] {
        let started = Instant::now();
        let answer = send(&app, req).await;
        assert_eq!((answer.status, answer.body.as_str()), (503, UNAVAILABLE));
        assert_eq!(answer.cache_control.as_deref(), Some("no-store"));
        assert!(answer.cookie.is_none(), "the cookie was touched while down");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }

    // Without the wrapper, actix-session answers its own opaque 500, still never a session.
    let unwrapped = test::init_service(App::new().configure(routes).wrap(SessionMiddleware::new(
        ActixSessionStore::new(store),
        key.clone(),
    )))
    .await;
    let answer = send(&unwrapped, get_(Some(&cookie))).await;
    assert_eq!((answer.status, answer.body.as_str()), (500, ""));
    assert!(answer.cookie.is_none());

    // The store reconnects by itself once Redis is back (empty: no persistence in tests).
    let _server = server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    let recovered = loop {
        let answer = send(&app, post("/set/figs", None)).await;
        if answer.status != 503 || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(recovered.status, 200);
    let fresh = recovered.cookie.expect("a new session");
    assert_eq!(send(&app, get_(Some(&fresh))).await.body, "figs");
}

#[actix_web::test]
async fn a_handler_never_runs_on_a_session_that_could_not_be_loaded() {
    let server = RedisServer::start();
    let url = server.url();
    let key = Key::generate();
    let runs = web::Data::new(Runs(AtomicUsize::new(0)));
    let sessions = SessionMiddleware::new(
        ActixSessionStore::new(redis_store_at(&url, "interop-runs").await),
        key.clone(),
    );
    let app = test::init_service(
        App::new()
            .app_data(runs.clone())
            .route("/set/{value}", web::post().to(set))
            .route("/get", web::get().to(get))
            .wrap(sessions)
            .wrap(ActixSessionStore::fail_closed()),
    )
    .await;
    let cookie = logged_in(&app, "apples").await;
    assert_eq!(send(&app, get_(Some(&cookie))).await.body, "apples");
    assert_eq!(runs.0.load(Ordering::SeqCst), 1);
    server.stop();
    assert_eq!(send(&app, get_(Some(&cookie))).await.status, 503);
    assert_eq!(
        runs.0.load(Ordering::SeqCst),
        1,
        "the handler ran without its session"
    );
}

/// A write that hangs after the handler ran (here every write is paused) ends in a 503 once
/// the command timeout passes, and the client's cookie is left as it was.
#[actix_web::test]
async fn a_hung_write_after_the_handler_is_a_503() {
    let server = RedisServer::start();
    let url = server.url();
    let prefix = unique_prefix();
    let key = Key::generate();
    let app = app(
        redis_store_at(&url, &prefix).await,
        &key,
        &url,
        &prefix,
        |b| b,
    )
    .await;
    let cookie = logged_in(&app, "apples").await;

    for cookie in [Some(&cookie), None] {
        let started = Instant::now();
        let answer = send(&app, post("/set-while-writes-hang", cookie)).await;
        assert_eq!((answer.status, answer.body.as_str()), (503, UNAVAILABLE));
        assert!(answer.cookie.is_none());
        assert!(
            started.elapsed() < Duration::from_millis(1400),
            "{:?}",
            started.elapsed()
        );
        let mut conn = connection(&url).unwrap();
        redis::cmd("CLIENT").arg("UNPAUSE").exec(&mut conn).unwrap();
    }
    // A timed-out write was sent all the same and runs once Redis resumes: the session holds
    // either state, but it is still this client's session, never an empty one.
    let body = send(&app, get_(Some(&cookie))).await.body;
    assert!(
        ["apples", "written while Redis hung"].contains(&body.as_str()),
        "{body}"
    );
}

#[actix_web::test]
async fn sessions_work_on_a_redis_cluster() {
    let cluster = RedisCluster::start();
    let prefix = unique_prefix();
    let store = cluster.store(&prefix).await;
    let key = Key::generate();
    let app = app(store, &key, &cluster.urls()[0], &prefix, |b| b).await;
    let stored = || -> Vec<String> {
        cluster
            .urls()
            .iter()
            .flat_map(|url| dump(url, &prefix))
            .map(|(name, _, _)| name)
            .collect()
    };

    let mut cookies = Vec::new();
    for i in 0..6 {
        cookies.push(logged_in(&app, &format!("item{i}")).await);
    }
    let mut names = stored();
    names.sort();
    let mut expected: Vec<String> = cookies
        .iter()
        .map(|c| redis_key(&prefix, &session_key(c, &key)))
        .collect();
    expected.sort();
    assert_eq!(names, expected);
    for (i, cookie) in cookies.iter().enumerate() {
        assert_eq!(
            send(&app, get_(Some(cookie))).await.body,
            format!("item{i}")
        );
    }

    let answer = send(&app, post("/renew", Some(&cookies[0]))).await;
    let renewed = answer.cookie.expect("renew sets a cookie");
    assert_eq!(send(&app, get_(Some(&renewed))).await.body, "item0");
    assert_eq!(send(&app, get_(Some(&cookies[0]))).await.body, "none");
    for cookie in [&renewed, &cookies[1]] {
        assert_eq!(send(&app, post("/purge", Some(cookie))).await.status, 200);
        assert_eq!(send(&app, get_(Some(cookie))).await.body, "none");
    }
    assert_eq!(stored().len(), 4);
}
