//! What users see when Redis runs out of memory: under `noeviction` every write is refused and
//! every read goes on; under the eviction policies sessions disappear one by one, and each
//! disappearance must look like a logout, never like an outage or another user's session.
//!
//! Each test starts its own `redis-server` with a small `maxmemory` and fills it with keys of
//! another app (the "filler"), as a shared Redis would be filled.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use actix_login::{AuthUser, Error, LoginMiddleware, Session, Sessions, Timeouts};
use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::{test, web, App, HttpResponse};
use serde_json::json;

use crate::support;
use crate::support::http::*;
use crate::support::redis_server::{connection, record_user_id, stored_record, RedisServer};

const PREFIX: &str = "mp";

/// Makes a session weigh about what a real profile does (name, e-mail, preferences), so that a
/// few megabytes hold dozens of sessions rather than thousands.
const PROFILE_PADDING: usize = 1500;

/// One filler value: big enough that a 4 MB server fills in a few hundred writes.
const FILLER_SIZE: usize = 16 * 1024;

async fn login(session: Session, id: web::Path<u64>) -> Result<HttpResponse, Error> {
    let profile = json!({ "id": *id, "pad": "p".repeat(PROFILE_PADDING) });
    session.login(id.to_string(), &profile).await?;
    Ok(HttpResponse::Ok().finish())
}

async fn me(user: AuthUser<serde_json::Value>) -> String {
    user["id"].to_string()
}

async fn put_value(
    session: Session,
    name: web::Path<String>,
    body: String,
) -> Result<HttpResponse, Error> {
    session.insert(name.into_inner(), body).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn get_value(session: Session, name: web::Path<String>) -> Result<HttpResponse, Error> {
    let value: Option<String> = session.get(name.as_str()).await?;
    Ok(HttpResponse::Ok().json(value))
}

async fn logout(
    _user: AuthUser<serde_json::Value>,
    session: Session,
) -> Result<HttpResponse, Error> {
    session.logout().await?;
    Ok(HttpResponse::NoContent().finish())
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
            .route("/me", web::get().to(me))
            .route("/data/{name}", web::put().to(put_value))
            .route("/data/{name}", web::get().to(get_value))
            .route("/logout", web::post().to(logout))
            .wrap(middleware),
    )
    .await
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

/// Status, body and whether the response touched the cookie.
async fn call<S, B>(app: &S, req: actix_http::Request) -> (u16, String, bool)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let res = test::call_service(app, req).await;
    let cookie = set_cookie(&res).is_some();
    let (status, body) = status_and_body(res).await;
    (status, body, cookie)
}

async fn log_in_as<S, B>(app: &S, id: u64) -> String
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let res = test::call_service(app, post(&format!("/login/{id}"), None)).await;
    assert_eq!(res.status().as_u16(), 200, "login of {id}");
    set_cookie(&res).expect("a cookie").value().to_owned()
}

/// Writes filler keys of another app until Redis refuses one, and returns their names.
fn fill_until_refused(conn: &mut redis::Connection) -> Vec<String> {
    let value = "f".repeat(FILLER_SIZE);
    let mut names = Vec::new();
    for n in 0.. {
        let name = format!("other-app:{n}");
        match redis::cmd("SET").arg(&name).arg(&value).exec(conn) {
            Ok(()) => names.push(name),
            Err(err) => {
                assert_eq!(err.code(), Some("OOM"), "{err}");
                return names;
            }
        }
        assert!(n < 10_000, "Redis never refused a write: is maxmemory set?");
    }
    unreachable!()
}

/// Fills Redis until it refuses writes, then holds it there: the margin a refused write leaves
/// (its own argument, client buffers that grow and shrink) would let a smaller write through
/// now and then, so the limit is lowered to just below what is in use. Returns the filler keys.
fn fill_and_hold_full(conn: &mut redis::Connection) -> Vec<String> {
    let filler = fill_until_refused(conn);
    let info: String = redis::cmd("INFO").arg("memory").query(conn).unwrap();
    let used: u64 = info
        .lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("used_memory in INFO");
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(used - 128 * 1024)
        .exec(conn)
        .unwrap();
    filler
}

/// The index member (and `stored_key`) of a session's Redis key.
fn member_of(redis_key: &str) -> String {
    let rest = redis_key
        .strip_prefix(&format!("{PREFIX}:s:{{"))
        .expect("a session key");
    rest.replacen('}', "", 1)
}

fn session_key_of(member: &str) -> String {
    format!("{PREFIX}:s:{{{}}}{}", &member[..4], &member[4..])
}

/// Every key of the store, by kind, as `SCAN` finds it.
#[derive(Debug, Default)]
struct Layout {
    /// Session key → the hash's fields.
    sessions: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// User id → index members.
    indexes: BTreeMap<String, BTreeSet<String>>,
}

fn layout(conn: &mut redis::Connection) -> Layout {
    let keys: Vec<String> = redis::cmd("SCAN")
        .cursor_arg(0)
        .arg("MATCH")
        .arg(format!("{PREFIX}:*"))
        .arg("COUNT")
        .arg(100)
        .clone()
        .iter(conn)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut layout = Layout::default();
    for key in keys {
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query(conn).unwrap();
        if ttl == -2 {
            continue; // expired or evicted since the scan
        }
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
        if key.starts_with(&format!("{PREFIX}:s:")) {
            let fields: BTreeMap<String, Vec<u8>> =
                redis::cmd("HGETALL").arg(&key).query(conn).unwrap();
            layout.sessions.insert(key, fields);
        } else if let Some(user) = key.strip_prefix(&format!("{PREFIX}:u:")) {
            let members: BTreeSet<String> = redis::cmd("HKEYS").arg(&key).query(conn).unwrap();
            layout.indexes.insert(user.to_owned(), members);
        }
    }
    layout
}

fn user_of(fields: &BTreeMap<String, Vec<u8>>) -> String {
    let record = stored_record(|field| fields.get(field).map(Vec::as_slice)).expect("a record");
    record_user_id(&record).expect("a user id")
}

/// No session without its record, deadline and index entry; no index entry without its
/// session; every key with a TTL (checked by [`layout`]).
fn assert_nothing_half_written(conn: &mut redis::Connection) -> Layout {
    let layout = layout(conn);
    for (key, fields) in &layout.sessions {
        assert!(
            fields.contains_key("r") && fields.contains_key("e") && fields.contains_key("z"),
            "half-written session {key}: {:?}",
            fields.keys().collect::<Vec<_>>()
        );
        let user = user_of(fields);
        if !user.is_empty() {
            assert!(
                layout
                    .indexes
                    .get(&user)
                    .is_some_and(|members| members.contains(&member_of(key))),
                "session {key} of user {user} is not in its index"
            );
        }
    }
    for (user, members) in &layout.indexes {
        for member in members {
            assert!(
                layout.sessions.contains_key(&session_key_of(member)),
                "index of {user} names a session that is not there"
            );
        }
    }
    layout
}

fn noeviction_server() -> RedisServer {
    RedisServer::start_with("--maxmemory 4mb --maxmemory-policy noeviction")
}

/// Under `noeviction` a full Redis refuses every write that could grow it: logins and data
/// writes are `503` and leave nothing behind, while the sessions that exist keep working, and
/// logouts and revocations (deletes, which Redis always allows) still end sessions. Freeing
/// memory brings logins back without restarting the app.
#[actix_web::test]
async fn noeviction_refuses_writes_with_503_and_keeps_existing_sessions() {
    let server = noeviction_server();
    let middleware = LoginMiddleware::builder(redis_store_at(&server.url(), PREFIX).await)
        .timeouts(Timeouts::BROWSER.with_idle(Duration::from_secs(3600)))
        .build();
    let sessions: Sessions = middleware.sessions();
    let app = app(middleware).await;
    let mut conn = connection(&server.url()).unwrap();

    let tokens: Vec<String> = {
        let mut tokens = Vec::new();
        for id in 1..=3 {
            tokens.push(log_in_as(&app, id).await);
        }
        tokens
    };
    let (status, _, _) = call(&app, put("/data/note", Some(&tokens[0]), "before")).await;
    assert_eq!(status, 204);

    let filler = fill_and_hold_full(&mut conn);
    let (logs, guard) = support::logs::capture_logs();

    // New logins, a login from an existing session, data writes by a user and by a visitor.
    for req in [
        post("/login/4", None),
        post("/login/1", Some(&tokens[0])),
        put("/data/note", Some(&tokens[0]), "after"),
        put("/data/other", Some(&tokens[1]), "x"),
        put("/data/cart", None, "tea"),
    ] {
        let path = req.path().to_owned();
        let (status, body, cookie) = call(&app, req).await;
        assert_eq!((status, body.as_str()), (503, UNAVAILABLE), "{path}");
        assert!(!cookie, "{path} touched the cookie");
    }

    // Reads of sessions that exist go on, data included.
    for (id, token) in (1..=3).zip(&tokens) {
        let (status, body, _) = call(&app, get("/me", Some(token))).await;
        assert_eq!((status, body), (200, id.to_string()));
    }
    let (status, body, _) = call(&app, get("/data/note", Some(&tokens[0]))).await;
    assert_eq!((status, body.as_str()), (200, r#""before""#));
    drop(guard);

    let logs = logs.text();
    assert!(
        logs.contains("session store failed") && logs.contains("OOM"),
        "no log line says why logins fail: {logs}"
    );
    for token in &tokens {
        assert!(!logs.contains(token.as_str()), "a token in the logs");
        assert!(
            !logs.contains(&stored_key(token)),
            "a full token hash in the logs"
        );
    }

    // Nothing half written: three sessions, each indexed, no fourth user, no refused value.
    let layout = assert_nothing_half_written(&mut conn);
    assert_eq!(layout.sessions.len(), 3, "{layout:#?}");
    assert_eq!(
        layout.indexes.keys().collect::<Vec<_>>(),
        ["1", "2", "3"],
        "an index without a session"
    );
    let note = &layout.sessions[&redis_session_key(PREFIX, &tokens[0])];
    assert_eq!(
        note.get("d:note").map(Vec::as_slice),
        Some(&br#""before""#[..])
    );
    assert!(
        layout
            .sessions
            .values()
            .all(|fields| !fields.contains_key("d:other")),
        "a refused data write landed"
    );

    // Ending sessions needs no memory: a full Redis must never keep a user logged in.
    let (status, _, _) = call(&app, post("/logout", Some(&tokens[2]))).await;
    assert_eq!(status, 204);
    assert_eq!(status_of(&app, &tokens[2]).await, 401);
    assert_eq!(sessions.list("2").await.unwrap().len(), 1);
    assert_eq!(sessions.revoke_all("2").await.unwrap(), 1);
    assert_eq!(status_of(&app, &tokens[1]).await, 401);

    // Freeing memory is enough: the same app logs users in again.
    redis::cmd("DEL").arg(&filler).exec(&mut conn).unwrap();
    let fresh = log_in_as(&app, 4).await;
    assert_eq!(status_of(&app, &fresh).await, 200);
    let (status, _, _) = call(&app, put("/data/note", Some(&tokens[0]), "after")).await;
    assert_eq!(status, 204);
    // A logout leaves its index entry for the next listing to drop.
    for user in ["1", "2", "3", "4"] {
        sessions.list(user).await.unwrap();
    }
    let layout = assert_nothing_half_written(&mut conn);
    assert_eq!(layout.sessions.len(), 2, "{layout:#?}");
}

async fn status_of<S, B>(app: &S, token: &str) -> u16
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    status(app, get("/me", Some(token))).await
}

/// A data write refused for want of memory is a `503` like a refused login, and whoever is
/// paged for it needs the same line saying that Redis is full.
#[actix_web::test]
async fn noeviction_a_refused_data_write_is_logged() {
    let server = noeviction_server();
    let app = app(LoginMiddleware::new(
        redis_store_at(&server.url(), PREFIX).await,
    ))
    .await;
    let token = log_in_as(&app, 1).await;
    let mut conn = connection(&server.url()).unwrap();
    fill_and_hold_full(&mut conn);

    for (cookie, path) in [(Some(token.as_str()), "/data/note"), (None, "/data/cart")] {
        let (logs, guard) = support::logs::capture_logs();
        let (status, _, _) = call(&app, put(path, cookie, "x")).await;
        drop(guard);
        assert_eq!(status, 503, "{path}");
        let logs = logs.text();
        assert!(logs.contains("OOM"), "{path} left no log line: {logs:?}");
    }
}

/// A read is a write when the idle deadline is due for a refresh. Under `noeviction` that
/// refresh is refused: the request is a `503` like any store failure (never a `401`, which
/// would log the user out, nor a `500`), the deadline stays where it was, and the session
/// answers again once memory is freed, if it is still within its old deadline.
#[actix_web::test]
async fn noeviction_a_read_due_for_a_refresh_is_503_and_changes_nothing() {
    let server = noeviction_server();
    // Refreshes are due a tenth of the idle window after the last one.
    let idle = Duration::from_secs(8);
    let middleware = LoginMiddleware::builder(redis_store_at(&server.url(), PREFIX).await)
        .timeouts(Timeouts::BROWSER.with_idle(idle))
        .build();
    let app = app(middleware).await;
    let token = log_in_as(&app, 1).await;
    let mut conn = connection(&server.url()).unwrap();
    let key = redis_session_key(PREFIX, &token);
    let deadline = |conn: &mut redis::Connection| -> String {
        redis::cmd("HGET").arg(&key).arg("e").query(conn).unwrap()
    };
    let before = deadline(&mut conn);
    let filler = fill_and_hold_full(&mut conn);
    tokio::time::sleep(idle / 10 + Duration::from_millis(200)).await;

    let (logs, guard) = support::logs::capture_logs();
    let (status, body, cookie) = call(&app, get("/me", Some(&token))).await;
    drop(guard);
    assert_eq!((status, body.as_str(), cookie), (503, UNAVAILABLE, false));
    let logs = logs.text();
    assert!(
        logs.contains("session store failed") && logs.contains("OOM"),
        "{logs}"
    );
    assert!(!logs.contains(&token), "a token in the logs");
    assert_eq!(
        deadline(&mut conn),
        before,
        "a refused refresh moved the deadline"
    );
    assert_nothing_half_written(&mut conn);

    redis::cmd("DEL").arg(&filler).exec(&mut conn).unwrap();
    let (status, body, _) = call(&app, get("/me", Some(&token))).await;
    assert_eq!((status, body.as_str()), (200, "1"));
    assert_ne!(
        deadline(&mut conn),
        before,
        "the refresh did not land after all"
    );
}

/// A TTL for the other app's keys: longer than a session's idle window, shorter than the
/// user index's (the absolute lifetime), as a cache's entries would be.
const FILLER_TTL_SECONDS: u64 = 2 * 3600;

const POLICIES: [&str; 7] = [
    "volatile-lru",
    "volatile-ttl",
    "volatile-random",
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lfu",
];

/// A filler value as `DUMP` serialises it, for `RESTORE` to write with a chosen age.
fn filler_payload(conn: &mut redis::Connection) -> Vec<u8> {
    redis::cmd("SET")
        .arg("template")
        .arg("f".repeat(FILLER_SIZE))
        .exec(conn)
        .unwrap();
    let payload = redis::cmd("DUMP").arg("template").query(conn).unwrap();
    redis::cmd("DEL").arg("template").exec(conn).unwrap();
    payload
}

fn session_count(conn: &mut redis::Connection) -> usize {
    layout(conn).sessions.len()
}

/// What users see once eviction has taken some sessions: each token is a `200` as its own user
/// or a `401`, never a `5xx`; listing and "log out everywhere" work and prune the index down
/// to the live sessions; a new login works while Redis is still evicting.
async fn check_eviction(policy: &str) {
    let server = RedisServer::start_with(&format!(
        "--maxmemory 4mb --maxmemory-policy {policy} --maxmemory-samples 5"
    ));
    let middleware = LoginMiddleware::builder(redis_store_at(&server.url(), PREFIX).await)
        .timeouts(Timeouts::BROWSER.with_idle(Duration::from_secs(3600)))
        .build();
    let sessions = middleware.sessions();
    let app = app(middleware).await;
    let mut conn = connection(&server.url()).unwrap();

    let mut tokens: Vec<(u64, String)> = Vec::new();
    for id in 1..=20 {
        for _ in 0..3 {
            tokens.push((id, log_in_as(&app, id).await));
        }
    }
    let created = session_count(&mut conn);
    assert_eq!(created, 60);

    let payload = filler_payload(&mut conn);
    for n in 0.. {
        let mut restore = redis::cmd("RESTORE");
        restore
            .arg(format!("other-app:{n}"))
            .arg(FILLER_TTL_SECONDS * 1000)
            .arg(&payload);
        if policy.ends_with("lfu") {
            // New keys start at a frequency sessions already passed at login: as written, LFU
            // would only ever evict the filler. Keys of a busy cache are used more often.
            restore.arg("FREQ").arg(50);
        }
        restore
            .exec(&mut conn)
            .unwrap_or_else(|err| panic!("{policy}: filler refused: {err}"));
        if n % 4 == 3 && session_count(&mut conn) <= created * 2 / 3 {
            break;
        }
        assert!(n < 5_000, "{policy}: no session was ever evicted");
    }

    // Under pressure still: a login goes through. Its own fresh session may be what the next
    // write evicts (under LFU a new key has the lowest count), and then the login says so
    // with a 409 rather than a dead cookie; never a 5xx, and another try gets in.
    let mut logged_in = false;
    for _ in 0..5 {
        let (status, body, cookie) = call(&app, post("/login/21", None)).await;
        match (status, body.as_str(), cookie) {
            (200, "", true) => {
                logged_in = true;
                break;
            }
            (409, r#"{"error":"login_superseded"}"#, false) => {}
            other => panic!("{policy}: a login under pressure answered {other:?}"),
        }
    }
    assert!(logged_in, "{policy}: no login got through in five tries");

    // From here on the state holds still, so each answer can be checked against Redis.
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(0)
        .exec(&mut conn)
        .unwrap();
    let before = layout(&mut conn);
    for fields in before.sessions.values() {
        assert!(fields.contains_key("r") && fields.contains_key("e"));
    }

    let mut live: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
    let mut escaped = Vec::new();
    for (id, token) in &tokens {
        let key = redis_session_key(PREFIX, token);
        let (status, body, _) = call(&app, get("/me", Some(token))).await;
        if before.sessions.contains_key(&key) {
            assert_eq!(
                (status, body),
                (200, id.to_string()),
                "{policy}: a live session"
            );
            live.entry(*id).or_default().push(token);
            let indexed = before
                .indexes
                .get(&id.to_string())
                .is_some_and(|members| members.contains(&stored_key(token)));
            if !indexed {
                escaped.push(token.as_str());
            }
        } else {
            assert_eq!(
                (status, body.as_str()),
                (401, UNAUTHENTICATED),
                "{policy}: an evicted session is a logout"
            );
        }
    }
    let evicted_indexes = (1..=20)
        .filter(|id| !before.indexes.contains_key(&id.to_string()))
        .count();

    for id in 1..=20u64 {
        let user = id.to_string();
        let mine = live.get(&id).map_or(&[][..], Vec::as_slice);
        let hidden = mine.iter().filter(|t| escaped.contains(t)).count();
        let listed = sessions.list(&user).await.unwrap_or_else(|err| {
            panic!("{policy}: listing user {user} failed: {err}");
        });
        assert_eq!(listed.len(), mine.len() - hidden, "{policy}: user {user}");
        let remaining: usize = redis::cmd("HLEN")
            .arg(format!("{PREFIX}:u:{user}"))
            .query(&mut conn)
            .unwrap();
        assert_eq!(
            remaining,
            listed.len(),
            "{policy}: index of {user} not pruned"
        );
        let revoked = sessions.revoke_all(&user).await.unwrap_or_else(|err| {
            panic!("{policy}: revoking user {user} failed: {err}");
        });
        assert_eq!(revoked, listed.len(), "{policy}: user {user}");
    }
    let mut still_in = 0;
    for (_, token) in &tokens {
        match status_of(&app, token).await {
            401 => {}
            200 => {
                assert!(escaped.contains(&token.as_str()), "{policy}: not revoked");
                still_in += 1;
            }
            other => panic!("{policy}: {other} after revoke_all"),
        }
    }
    eprintln!(
        "{policy}: {} of 60 sessions evicted, {evicted_indexes} of 20 indexes evicted, \
         {still_in} live sessions outside any index survived revoke_all",
        60 - before
            .sessions
            .keys()
            .filter(|key| tokens
                .iter()
                .any(|(_, t)| **key == redis_session_key(PREFIX, t)))
            .count(),
    );
    assert_eq!(still_in, escaped.len());
    if policy == "volatile-ttl" {
        // The index's TTL is its longest session's absolute end: it goes after its sessions.
        assert_eq!((evicted_indexes, still_in), (0, 0), "{policy}");
    }
}

#[actix_web::test]
async fn eviction_is_a_logout_under_volatile_lru() {
    check_eviction(POLICIES[0]).await;
}

#[actix_web::test]
async fn eviction_is_a_logout_under_volatile_ttl() {
    check_eviction(POLICIES[1]).await;
}

#[actix_web::test]
async fn eviction_is_a_logout_under_volatile_random() {
    check_eviction(POLICIES[2]).await;
}

#[actix_web::test]
async fn eviction_is_a_logout_under_allkeys_lru() {
    check_eviction(POLICIES[3]).await;
}

#[actix_web::test]
async fn eviction_is_a_logout_under_allkeys_lfu() {
    check_eviction(POLICIES[4]).await;
}

#[actix_web::test]
async fn eviction_is_a_logout_under_allkeys_random() {
    check_eviction(POLICIES[5]).await;
}

#[actix_web::test]
async fn eviction_is_a_logout_under_volatile_lfu() {
    check_eviction(POLICIES[6]).await;
}

/// Which of a user's two keys Redis evicts first when the user has been active all day on one
/// session: the session is touched by every request, the index only at login and listing, so
/// by LRU or LFU the index is the colder key. The test sets those ages with `RESTORE`
/// (`IDLETIME`/`FREQ`) instead of waiting for them. Fills until one of the two is gone and
/// returns whether the session is still live and what "log out everywhere" did to it.
async fn evict_the_colder_of_session_and_index(policy: &str) -> (bool, usize, u16) {
    let server = RedisServer::start_with(&format!("--maxmemory 4mb --maxmemory-policy {policy}"));
    let middleware = LoginMiddleware::builder(redis_store_at(&server.url(), PREFIX).await)
        .timeouts(Timeouts::BROWSER.with_idle(Duration::from_secs(3600)))
        .build();
    let sessions = middleware.sessions();
    let app = app(middleware).await;
    let mut conn = connection(&server.url()).unwrap();
    let token = log_in_as(&app, 1).await;
    for _ in 0..20 {
        assert_eq!(status(&app, get("/me", Some(&token))).await, 200);
    }
    let session = redis_session_key(PREFIX, &token);
    let index = format!("{PREFIX}:u:1");
    let lfu = policy.ends_with("lfu");
    // Ages: the index untouched since the morning's login, other keys a few minutes old, the
    // session just used.
    let aged = |conn: &mut redis::Connection, key: &str, payload: &[u8], ttl: i64, old: bool| {
        let mut restore = redis::cmd("RESTORE");
        restore.arg(key).arg(ttl).arg(payload).arg("REPLACE");
        match (lfu, old) {
            (true, true) => restore.arg("FREQ").arg(0),
            (true, false) => restore.arg("FREQ").arg(2),
            (false, true) => restore.arg("IDLETIME").arg(8 * 3600),
            (false, false) => restore.arg("IDLETIME").arg(600),
        };
        restore.exec(conn)
    };
    let dump: Vec<u8> = redis::cmd("DUMP").arg(&index).query(&mut conn).unwrap();
    let ttl: i64 = redis::cmd("PTTL").arg(&index).query(&mut conn).unwrap();
    aged(&mut conn, &index, &dump, ttl, true).unwrap();
    let filler = filler_payload(&mut conn);

    for n in 0.. {
        let ttl = i64::try_from(FILLER_TTL_SECONDS * 1000).unwrap();
        aged(&mut conn, &format!("other-app:{n}"), &filler, ttl, false)
            .unwrap_or_else(|err| panic!("{policy}: filler refused: {err}"));
        let (session_there, index_there): (bool, bool) = redis::pipe()
            .cmd("EXISTS")
            .arg(&session)
            .cmd("EXISTS")
            .arg(&index)
            .query(&mut conn)
            .unwrap();
        if !session_there || !index_there {
            break;
        }
        assert!(n < 5_000, "{policy}: neither key was ever evicted");
    }
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(0)
        .exec(&mut conn)
        .unwrap();
    let session_live = status(&app, get("/me", Some(&token))).await == 200;
    let revoked = sessions.revoke_all("1").await.unwrap();
    let after = status(&app, get("/me", Some(&token))).await;
    (session_live, revoked, after)
}

/// Under `volatile-ttl` the session goes first, whatever the ages: its TTL is its idle
/// deadline, the index's its absolute end. An evicted session is a logout, and nothing is
/// left that "log out everywhere" could miss.
#[actix_web::test]
async fn volatile_ttl_evicts_the_session_before_its_index() {
    let (session_live, revoked, after) =
        evict_the_colder_of_session_and_index("volatile-ttl").await;
    assert_eq!((session_live, revoked, after), (false, 0, 401));
}

/// Under LRU and LFU policies the index goes first and the session lives on outside it: "log
/// out everywhere" (and a password change's revocation, and the session cap) cannot find it,
/// and it keeps working until its own deadline. This is why the README asks for `noeviction`
/// (or `volatile-ttl`) on the Redis that holds sessions.
async fn check_escape(policy: &str) {
    let (session_live, revoked, after) = evict_the_colder_of_session_and_index(policy).await;
    assert_eq!(
        (session_live, revoked, after),
        (true, 0, 200),
        "{policy}: the session no longer escapes revocation; revisit the README's advice"
    );
}

#[actix_web::test]
async fn volatile_lru_can_evict_an_index_and_a_session_escapes_revoke_all() {
    check_escape("volatile-lru").await;
}

#[actix_web::test]
async fn allkeys_lru_can_evict_an_index_and_a_session_escapes_revoke_all() {
    check_escape("allkeys-lru").await;
}

#[actix_web::test]
async fn allkeys_lfu_can_evict_an_index_and_a_session_escapes_revoke_all() {
    check_escape("allkeys-lfu").await;
}

#[actix_web::test]
async fn volatile_lfu_can_evict_an_index_and_a_session_escapes_revoke_all() {
    check_escape("volatile-lfu").await;
}
