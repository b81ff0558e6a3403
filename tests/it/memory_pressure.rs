//! What users see when Redis runs out of memory: under `noeviction` every write is refused and
//! every read goes on; under the eviction policies sessions disappear one by one, and each
//! disappearance must look like a logout, never like an outage or another user's session.
//!
//! Each test starts its own `redis-server` with a small `maxmemory` and fills it with keys of
//! another app (the "filler"), as a shared Redis would be filled.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use actix_login::{AuthUser, Error, LoginMiddleware, Session, Sessions};
use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::{test, web, App, HttpResponse};
use serde_json::json;

use crate::support;
use crate::support::http::*;
use crate::support::redis_server::{connection, RedisServer};

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
    sessions: BTreeMap<String, BTreeMap<String, String>>,
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
            let fields: BTreeMap<String, String> =
                redis::cmd("HGETALL").arg(&key).query(conn).unwrap();
            layout.sessions.insert(key, fields);
        } else if let Some(user) = key.strip_prefix(&format!("{PREFIX}:u:")) {
            let members: BTreeSet<String> = redis::cmd("SMEMBERS").arg(&key).query(conn).unwrap();
            layout.indexes.insert(user.to_owned(), members);
        }
    }
    layout
}

fn user_of(fields: &BTreeMap<String, String>) -> String {
    let record: serde_json::Value = serde_json::from_str(&fields["r"]).expect("a JSON record");
    record["u"].as_str().expect("a user id").to_owned()
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
        .idle_timeout(Duration::from_secs(3600))
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
        logs.contains("session store failed during login") && logs.contains("OOM"),
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
    assert_eq!(note.get("d:note").map(String::as_str), Some(r#""before""#));
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
#[ignore = "finding: a data write that the store refuses (OOM) answers 503 but logs nothing"]
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
        .idle_timeout(idle)
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
