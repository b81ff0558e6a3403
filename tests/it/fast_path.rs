//! The fast path: what an authenticated request costs Redis, and a cached session's data never
//! stale.
//!
//! Round trips are counted with `MONITOR` (see `support::monitor`), on a private
//! `redis-server` per test.

use std::time::{Duration, Instant};

use actix_login::{AuthUser, Error, LoginMiddleware, MaybeUser, RedisStore, Require, Session};
use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::{test, web, App, HttpResponse};

use crate::support::cluster::RedisCluster;
use crate::support::http::*;
use crate::support::monitor::Monitor;
use crate::support::redis_server::{connection, RedisServer};

const PREFIX: &str = "fast";
/// More data than a read brings along unasked (`DATA_READ_WITH_RECORD`, 4096 bytes).
const LARGE: usize = 5000;

async fn login(session: Session, id: web::Path<u64>) -> Result<HttpResponse, Error> {
    session.login(id.to_string(), &*id).await?;
    Ok(HttpResponse::Ok().finish())
}

/// Stores a cart of `len` bytes of JSON text.
async fn put_cart(session: Session, len: web::Path<usize>) -> Result<HttpResponse, Error> {
    session.insert("cart", "x".repeat(*len)).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Stores `value` (a JSON string) under `name`, or removes `name` when `value` is `-`.
async fn put_named(
    session: Session,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Error> {
    let (name, value) = path.into_inner();
    if value == "-" {
        session.remove(&name).await?;
    } else {
        session.insert(&name, value).await?;
    }
    Ok(HttpResponse::NoContent().finish())
}

/// The values under the comma-separated `names`, as `name=value` lines in that order.
async fn all_data(session: Session, names: web::Path<String>) -> Result<String, Error> {
    let mut lines = Vec::new();
    for name in names.split(',') {
        if let Some(value) = session.get::<String>(name).await? {
            lines.push(format!("{name}={value}"));
        }
    }
    Ok(lines.join("\n"))
}

/// The cart's length, for anyone with a session: one data read, no login check.
async fn visitor_cart(session: Session) -> Result<String, Error> {
    let cart: Option<String> = session.get("cart").await?;
    Ok(cart.map_or(0, |cart| cart.len()).to_string())
}

/// The cart's length, as the login check plus one data read.
async fn cart(_user: AuthUser<u64>, session: Session) -> Result<String, Error> {
    let cart: Option<String> = session.get("cart").await?;
    Ok(cart.map_or(0, |cart| cart.len()).to_string())
}

/// A login as user 42 with a profile `{"id":42,"name":…}` from a desktop Chrome.
async fn login_named(session: Session, name: web::Path<String>) -> Result<HttpResponse, Error> {
    let profile = serde_json::json!({ "id": 42, "name": name.into_inner() });
    session.login("42", &profile).await?;
    Ok(HttpResponse::Ok().finish())
}

async fn profile(user: AuthUser<serde_json::Value>) -> String {
    user.into_inner().to_string()
}

async fn me(user: AuthUser<u64>) -> String {
    user.into_inner().to_string()
}

/// Two extractors that both look the session up, polled together: the second waits for the
/// first's lookup instead of sending its own.
async fn twice(user: AuthUser<u64>, again: MaybeUser<u64>) -> String {
    let again = again.into_option().map(AuthUser::into_inner);
    format!("{} {again:?}", user.into_inner())
}

/// Takes the session but reads none of its data.
async fn peek(user: AuthUser<u64>, _session: Session) -> String {
    user.into_inner().to_string()
}

async fn store(server: &RedisServer, local_cache: bool) -> RedisStore {
    let builder = RedisStore::builder(server.url()).key_prefix(PREFIX);
    let builder = if local_cache {
        builder.local_cache(1000)
    } else {
        builder
    };
    builder.connect().await.expect("connect")
}

async fn app(
    store: RedisStore,
) -> impl Service<
    actix_http::Request,
    Response = ServiceResponse<impl MessageBody>,
    Error = actix_web::Error,
> {
    test::init_service(
        App::new()
            .wrap(LoginMiddleware::new(store))
            .route("/login/{id}", web::post().to(login))
            .route("/cart/{len}", web::post().to(put_cart))
            .route("/data/{name}/{value}", web::post().to(put_named))
            .route("/data/{names}", web::get().to(all_data))
            .route("/cart", web::get().to(cart))
            .route("/visitor-cart", web::get().to(visitor_cart))
            .route("/login-named/{name}", web::post().to(login_named))
            .route("/profile", web::get().to(profile))
            .route("/me", web::get().to(me))
            .route("/peek", web::get().to(peek))
            .route("/twice", web::get().to(twice))
            .service(
                web::scope("/guarded")
                    .wrap(Require::login())
                    .route("/cart", web::get().to(cart)),
            ),
    )
    .await
}

async fn read<S, B>(app: &S, path: &str, token: &str) -> String
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let (status, body) =
        status_and_body(test::call_service(app, get(path, Some(token))).await).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// `POST path` with `token`, which must answer `204`.
async fn post_no_content<S, B>(app: &S, path: &str, token: &str)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let status = status(app, post(path, Some(token))).await;
    assert_eq!(status, 204, "POST {path}");
}

/// Stores a cart of `len` bytes in `token`'s session.
async fn put<S, B>(app: &S, len: usize, token: &str)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    post_no_content(app, &format!("/cart/{len}"), token).await;
}

/// Logs in as [`login_named`] does, from a desktop Chrome at a documentation address; the
/// session token.
async fn log_in_as<S, B>(app: &S, name: &str) -> String
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let req = test::TestRequest::post()
        .uri(&format!("/login-named/{name}"))
        .insert_header(("sec-fetch-site", "same-origin"))
        .insert_header(("user-agent", CHROME))
        .peer_addr("203.0.113.77:50000".parse().expect("an address"))
        .to_request();
    let res = test::call_service(app, req).await;
    assert_eq!(res.status(), 200, "POST /login-named/{name}");
    let cookie = set_cookie(&res).expect("a session cookie");
    cookie.value().to_owned()
}

const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
                      (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

#[actix_web::test]
async fn a_handler_that_reads_data_costs_one_round_trip() {
    let server = RedisServer::start();
    let app = app(store(&server, false).await).await;
    let token = log_in(&app, 1).await;
    put(&app, 100, &token).await;
    let monitor = Monitor::start(&server);

    // One plain command: a script would cost Redis several times what the read does. It asks
    // for the record (the two pieces a browser login fits, as `GET /me` does), the data's size
    // and the one data name this instance has written.
    let with_data = ["r", "r1", "u", "e", "z", "d:cart"].map(String::from);
    assert_eq!(read(&app, "/cart", &token).await, "100");
    assert_eq!(hmget_fields(&monitor), with_data, "GET /cart");
    // With no login check first: the data read looks the session up.
    assert_eq!(read(&app, "/visitor-cart", &token).await, "100");
    assert_eq!(hmget_fields(&monitor), with_data, "GET /visitor-cart");
    // Behind a guard, which looks the session up before the handler's extractors run.
    assert_eq!(read(&app, "/guarded/cart", &token).await, "100");
    assert_eq!(hmget_fields(&monitor), with_data, "GET /guarded/cart");
    // A handler that cannot read data costs what it did: one HMGET.
    assert_eq!(read(&app, "/me", &token).await, "1");
    assert_eq!(monitor.take(), ["hmget"], "GET /me");
}

#[actix_web::test]
async fn two_extractors_of_one_request_share_one_lookup() {
    let server = RedisServer::start();
    let app = app(store(&server, false).await).await;
    let token = log_in(&app, 7).await;
    let monitor = Monitor::start(&server);
    assert_eq!(read(&app, "/twice", &token).await, "7 Some(7)");
    assert_eq!(monitor.take(), ["hmget"], "GET /twice");
}

/// The fields of the one `HMGET` `monitor` saw since it was last asked; fails on anything else.
fn hmget_fields(monitor: &Monitor) -> Vec<String> {
    let sent = monitor.take_with_arguments();
    match sent.as_slice() {
        [hmget] if hmget[0] == "hmget" => hmget[2..].to_vec(),
        _ => panic!("expected one HMGET, Redis saw {sent:?}"),
    }
}

/// Writes `value` under `name` (or removes it, for `-`) in `token`'s session.
async fn put_value<S, B>(app: &S, name: &str, value: &str, token: &str)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    post_no_content(app, &format!("/data/{name}/{value}"), token).await;
}

/// An instance reads data by the names it knows and checks what it got against the data's
/// size, which every write keeps in the same step: data under a name it has not met yet (another
/// instance wrote it) is read whole once, then by name. Removals, by any instance, need no
/// learning.
#[actix_web::test]
async fn data_under_a_name_this_instance_has_not_met_is_read_whole_once() {
    let server = RedisServer::start();
    let writer = app(store(&server, false).await).await;
    let reader = app(store(&server, false).await).await;
    let token = log_in(&writer, 1).await;
    put_value(&writer, "cart", "c1", &token).await;
    put_value(&writer, "flash", "hello", &token).await;
    let monitor = Monitor::start(&server);
    let all = "/data/cart,flash,note";

    assert_eq!(read(&reader, all, &token).await, "cart=c1\nflash=hello");
    assert_eq!(monitor.take(), ["hmget", "hgetall"], "first read");
    let known = ["r", "r1", "u", "e", "z", "d:cart", "d:flash"].map(String::from);
    for _ in 0..2 {
        assert_eq!(read(&reader, all, &token).await, "cart=c1\nflash=hello");
        let mut fields = hmget_fields(&monitor);
        fields[5..].sort();
        assert_eq!(fields, known, "once the names are known");
    }

    // A name the reader has not met: its read comes up short of the size, so it reads whole.
    put_value(&writer, "note", "n", &token).await;
    monitor.take();
    assert_eq!(
        read(&reader, all, &token).await,
        "cart=c1\nflash=hello\nnote=n"
    );
    assert_eq!(monitor.take(), ["hmget", "hgetall"], "a new name");
    assert_eq!(
        read(&reader, all, &token).await,
        "cart=c1\nflash=hello\nnote=n"
    );
    assert_eq!(monitor.take(), ["hmget"], "the new name known");

    // Changed and removed values are seen on the next read, by name.
    put_value(&writer, "cart", "c22", &token).await;
    put_value(&writer, "flash", "-", &token).await;
    monitor.take();
    assert_eq!(read(&reader, all, &token).await, "cart=c22\nnote=n");
    assert_eq!(monitor.take(), ["hmget"], "after a change and a removal");

    // A session of another user, with the same names, reads by name at once.
    let other = log_in(&writer, 2).await;
    put_value(&writer, "note", "o", &other).await;
    monitor.take();
    assert_eq!(read(&reader, all, &other).await, "note=o");
    assert_eq!(monitor.take(), ["hmget"], "another session");
}

/// An app that names its data without bound (a name per form, per item) would make every
/// lookup ask for ever more fields: past eight names an instance reads data with
/// `HGETALL`, as it did before it knew any, and never twice per request.
#[actix_web::test]
async fn an_app_with_too_many_data_names_reads_the_whole_hash() {
    let server = RedisServer::start();
    let writer = app(store(&server, false).await).await;
    let reader = app(store(&server, false).await).await;
    let token = log_in(&writer, 1).await;
    let names: Vec<String> = (0..20).map(|i| format!("form-{i}")).collect();
    for name in &names {
        put_value(&writer, name, "v", &token).await;
    }
    let monitor = Monitor::start(&server);
    let path = format!("/data/{}", names.join(","));
    let expected: Vec<String> = names.iter().map(|name| format!("{name}=v")).collect();
    let expected = expected.join("\n");
    assert_eq!(read(&reader, &path, &token).await, expected);
    assert_eq!(monitor.take(), ["hmget", "hgetall"], "first read");
    for _ in 0..2 {
        assert_eq!(read(&reader, &path, &token).await, expected);
        assert_eq!(monitor.take(), ["hgetall"], "too many names to ask for");
    }
    // The writer, which met them all as it wrote them, gave up asking by name too.
    read(&writer, &path, &token).await;
    assert_eq!(monitor.take(), ["hgetall"], "the writer");
}

/// On one server (and on Sentinel's primary) a rotation moves a session in one script, so no
/// key is ever marked as moving there: the record's read asks for its pieces, the live update
/// and the deadline, and nothing else.
#[actix_web::test]
async fn a_record_read_on_one_server_asks_for_no_moving_mark() {
    let server = RedisServer::start();
    let app = app(store(&server, false).await).await;
    let token = log_in(&app, 1).await;
    let monitor = Monitor::start(&server);

    assert_eq!(read(&app, "/me", &token).await, "1");
    assert_reads_record_only(&monitor.take_with_arguments());
}

/// A cluster's rotation marks the old key as moving, but takes its record away in the same
/// step, so a marked key reads as no session and the lookup needs no mark either: the same four
/// fields as on one server (one value fewer for redis-rs to parse on every request).
#[actix_web::test]
async fn a_record_read_on_a_cluster_asks_for_no_moving_mark() {
    let cluster = RedisCluster::start();
    let store = cluster.store(PREFIX).await;
    let app = app(store).await;
    let token = log_in(&app, 1).await;
    let node = cluster.node_serving(&redis_session_key(PREFIX, &token));
    let monitor = Monitor::start(&cluster.nodes[node]);

    assert_eq!(read(&app, "/me", &token).await, "1");
    assert_reads_record_only(&monitor.take_with_arguments());
}

/// `sent` is one `HMGET` of the record's first two pieces, the live update and the deadline.
fn assert_reads_record_only(sent: &[Vec<String>]) {
    let [hmget] = sent else {
        panic!("GET /me sent {sent:?}");
    };
    assert_eq!(hmget[0], "hmget");
    assert_eq!(hmget[2..], ["r", "r1", "u", "e"], "GET /me read {hmget:?}");
}

/// A browser's login, with a profile of 60 bytes, an IP address and a desktop Chrome's
/// `User-Agent`, fits the two pieces a lookup reads first: one `HMGET` of four fields, and of
/// the data's size and names besides when the handler reads data. A profile too long for them
/// costs one more read of the whole record, and reads right, with its data or without; an
/// instance that must read the whole hash anyway (it has not met a data name) reads it at once.
#[actix_web::test]
async fn a_browser_login_is_read_with_two_pieces_and_a_long_one_whole() {
    let server = RedisServer::start();
    let app = app(store(&server, false).await).await;
    let monitor = Monitor::start(&server);
    let head = ["r", "r1", "u", "e"].map(String::from);
    let whole = ["r", "r1", "r2", "r3", "u", "e"].map(String::from);
    let data = ["z", "d:cart"].map(String::from);
    let with_data = |record: &[String]| [record, &data[..]].concat();
    for (name, long) in [("a".repeat(41), false), ("b".repeat(240), true)] {
        let token = log_in_as(&app, &name).await;
        put_value(&app, "cart", &name, &token).await;
        monitor.take();
        let profile = format!(r#"{{"id":42,"name":"{name}"}}"#);
        assert_eq!(read(&app, "/profile", &token).await, profile);
        let sent = monitor.take_with_arguments();
        let fields: Vec<Vec<String>> = sent.iter().map(|command| command[2..].to_vec()).collect();
        if long {
            assert_eq!(fields, [head.to_vec(), whole.to_vec()], "{name}: {sent:?}");
        } else {
            assert_eq!(fields, [head.to_vec()], "{name}: {sent:?}");
        }
        assert!(sent.iter().all(|command| command[0] == "hmget"), "{sent:?}");

        assert_eq!(
            read(&app, "/data/cart", &token).await,
            format!("cart={name}")
        );
        let sent = monitor.take_with_arguments();
        let fields: Vec<Vec<String>> = sent.iter().map(|command| command[2..].to_vec()).collect();
        if long {
            let expected = [with_data(&head), with_data(&whole)];
            assert_eq!(fields, expected, "{name}, with data: {sent:?}");
        } else {
            assert_eq!(fields, [with_data(&head)], "{name}, with data: {sent:?}");
        }
        assert!(sent.iter().all(|command| command[0] == "hmget"), "{sent:?}");

        // An instance that has not met the name reads the whole hash at once, record and all,
        // without first asking for the rest of a long record.
        let reader = self::app(store(&server, false).await).await;
        monitor.take();
        let read_there = read(&reader, "/data/cart", &token).await;
        assert_eq!(read_there, format!("cart={name}"));
        assert_eq!(
            monitor.take(),
            ["hmget", "hgetall"],
            "{name}, another instance"
        );
    }
}

/// Large data travels once to an instance that has not seen the session, which learns its
/// size; from then on only to handlers that read it.
#[actix_web::test]
async fn large_data_is_read_only_by_handlers_that_read_it() {
    let server = RedisServer::start();
    let app = app(store(&server, false).await).await;
    let token = log_in(&app, 1).await;
    put(&app, LARGE, &token).await;
    let monitor = Monitor::start(&server);

    assert_eq!(read(&app, "/peek", &token).await, "1");
    assert_eq!(monitor.take(), ["hmget"], "GET /peek, first");
    for _ in 0..3 {
        assert_eq!(read(&app, "/peek", &token).await, "1");
        assert_eq!(monitor.take(), ["hmget"], "GET /peek, once known large");
    }
    assert_eq!(read(&app, "/cart", &token).await, LARGE.to_string());
    assert_eq!(monitor.take(), ["hmget", "hgetall"], "GET /cart");

    // Once the data is small again, it comes with the record again.
    put(&app, 100, &token).await;
    monitor.take();
    assert_eq!(read(&app, "/cart", &token).await, "100");
    assert_eq!(monitor.take(), ["hmget", "hgetall"], "GET /cart, shrunk");
    assert_eq!(read(&app, "/cart", &token).await, "100");
    assert_eq!(monitor.take(), ["hmget"], "GET /cart, known small");
}

/// Waits until a `GET /cart` with `token` sends Redis nothing: served from the local cache,
/// record and data. Retries because the cache fills a little after a change.
async fn assert_cart_from_cache<S, B>(app: &S, monitor: &Monitor, token: &str)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        read(app, "/cart", token).await;
        monitor.take();
        read(app, "/cart", token).await;
        let sent = monitor.take();
        if sent.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "cart not served from the cache: {sent:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Three instances on `server`: a plain one to write with, which meets the names it writes
/// and then reads them by name; a plain one that has met none, which reads the hash whole;
/// and a caching one, which fills its cache with record and data.
async fn writer_fresh_caching(
    server: &RedisServer,
) -> [impl Service<
    actix_http::Request,
    Response = ServiceResponse<impl MessageBody>,
    Error = actix_web::Error,
>; 3] {
    [
        app(store(server, false).await).await,
        app(store(server, false).await).await,
        app(store(server, true).await).await,
    ]
}

/// The Redis keys of the sessions `redis` holds, in order.
fn session_keys(redis: &mut redis::Connection) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{PREFIX}:s:*"))
        .query(redis)
        .expect("KEYS");
    keys.sort();
    keys
}

/// Data Redis holds that is not UTF-8 (written by hand, or by another program) cannot be read,
/// but that is the data's fault, not the record's: the session stays logged in on every
/// instance, plain or caching, whether it reads the data by name or whole, and only reading
/// the data is refused. Writes land, and writing the unreadable value anew mends it.
#[actix_web::test]
async fn unreadable_data_leaves_its_session_logged_in() {
    let server = RedisServer::start();
    let [writer, fresh, caching] = writer_fresh_caching(&server).await;
    let tokens = [log_in(&writer, 1).await, log_in(&writer, 1).await];
    for token in &tokens {
        put(&writer, 10, token).await;
    }
    let mut redis = connection(&server.url()).expect("connect");
    let keys = session_keys(&mut redis);
    assert_eq!(keys.len(), 2, "two sessions: {keys:?}");
    for key in &keys {
        let fields: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("HGETALL")
            .arg(key)
            .query(&mut redis)
            .expect("HGETALL");
        let cart = fields.iter().find(|(field, _)| field == b"d:cart");
        // The JSON string of ten `x`, twelve bytes: replaced by as many that are not UTF-8, so
        // that the data's size still adds up.
        assert_eq!(cart.map(|(_, value)| value.len()), Some(12), "{key}");
    }
    let not_utf8: &[u8] = b"\"\xff\xfexxxxxxxx\"";
    // One session gets a value that is not UTF-8, the other a name that is not (which is which
    // does not matter: both are checked alike).
    for key in &keys {
        let _: () = redis::cmd("HSET")
            .arg(key)
            .arg("d:cart")
            .arg(not_utf8)
            .query(&mut redis)
            .expect("HSET");
    }
    let _: () = redis::cmd("HDEL")
        .arg(&keys[1])
        .arg("d:cart")
        .query(&mut redis)
        .expect("HDEL");
    let _: () = redis::cmd("HSET")
        .arg(&keys[1])
        .arg(b"d:\xffcart".as_slice())
        .arg("\"xxxxxxxxxx\"")
        .query(&mut redis)
        .expect("HSET");

    for token in &tokens {
        for (which, app) in [
            ("writer", &writer),
            ("fresh", &fresh),
            ("caching", &caching),
        ] {
            // Twice: the caching instance answers the second from memory.
            for _ in 0..2 {
                assert_eq!(read(app, "/me", token).await, "1", "{which}: GET /me");
                assert_eq!(read(app, "/peek", token).await, "1", "{which}: GET /peek");
            }
            let res = test::call_service(app, get("/cart", Some(token))).await;
            assert!(set_cookie(&res).is_none(), "{which}: the cookie stays");
            let (code, body) = status_and_body(res).await;
            assert_eq!(
                (code, body.as_str()),
                (401, UNAUTHENTICATED),
                "{which}: GET /cart"
            );
            assert_eq!(
                read(app, "/me", token).await,
                "1",
                "{which}: after the refused read"
            );
        }
        // A write of another name lands in the session itself (no new session, no cookie).
        let res = test::call_service(&writer, post("/data/note/n", Some(token))).await;
        assert_eq!(res.status(), 204, "POST /data/note/n");
        assert!(set_cookie(&res).is_none(), "no new session");
        assert_eq!(read(&caching, "/me", token).await, "1", "after a write");
    }
    for key in &keys {
        let note: Option<String> = redis::cmd("HGET")
            .arg(key)
            .arg("d:note")
            .query(&mut redis)
            .expect("HGET");
        assert_eq!(note.as_deref(), Some("\"n\""), "{key}");
    }
    // Writing the unreadable name mends it: the session whose value was unreadable reads its
    // cart again; the one whose name is unreadable still holds that name.
    let mut after = Vec::new();
    for token in &tokens {
        put(&writer, 10, token).await;
        let res = test::call_service(&caching, get("/cart", Some(token))).await;
        after.push(status_and_body(res).await);
    }
    after.sort();
    assert_eq!(
        after,
        [(200, "10".to_owned()), (401, UNAUTHENTICATED.to_owned())],
        "GET /cart once the cart is written again"
    );
}

/// The data's size (`z`) that is not a number (written by hand, or by another program) vouches
/// for nothing, but the data is still there: every instance reads it whole and serves it, and
/// the next data write counts the size anew.
#[actix_web::test]
async fn a_data_size_that_is_not_a_number_is_counted_anew() {
    let server = RedisServer::start();
    let [writer, fresh, caching] = writer_fresh_caching(&server).await;
    let token = log_in(&writer, 1).await;
    put(&writer, 10, &token).await;
    let mut redis = connection(&server.url()).expect("connect");
    let keys = session_keys(&mut redis);
    let [key] = keys.as_slice() else {
        panic!("one session: {keys:?}")
    };
    let size = |redis: &mut redis::Connection| -> String {
        redis::cmd("HGET")
            .arg(key)
            .arg("z")
            .query(redis)
            .expect("HGET z")
    };
    let mut counted = size(&mut redis);
    // Not a number at all, and numbers Lua would read but that are no plain count.
    for (round, bad) in ["garbage", "1e3", "-5"].into_iter().enumerate() {
        let _: () = redis::cmd("HSET")
            .arg(key)
            .arg("z")
            .arg(bad)
            .query(&mut redis)
            .expect("HSET");
        let cart = (10 + round).to_string();
        for (which, app) in [
            ("writer", &writer),
            ("fresh", &fresh),
            ("caching", &caching),
        ] {
            for _ in 0..2 {
                assert_eq!(
                    read(app, "/me", &token).await,
                    "1",
                    "{which}, z={bad}: GET /me"
                );
                assert_eq!(
                    read(app, "/cart", &token).await,
                    cart,
                    "{which}, z={bad}: /cart"
                );
            }
        }
        // A write and its undoing leave the size as the data counts it.
        put_value(&writer, "note", "n", &token).await;
        put_value(&writer, "note", "-", &token).await;
        assert_eq!(size(&mut redis), counted, "z={bad}: the size after a write");
        // And a change reaches the caching instance, whose entry the writes dropped.
        put(&writer, 11 + round, &token).await;
        let next = (11 + round).to_string();
        assert_eq!(
            read(&caching, "/cart", &token).await,
            next,
            "z={bad}: after a change"
        );
        let counted_now = size(&mut redis);
        // One byte more in the cart, one more in the size.
        assert_eq!(
            counted_now.parse::<usize>().ok(),
            counted.parse::<usize>().ok().map(|c| c + 1),
            "z={bad}: the size after a change"
        );
        counted = counted_now;
    }
}

#[actix_web::test]
async fn a_cached_session_serves_its_data_without_redis() {
    let server = RedisServer::start();
    let app = app(store(&server, true).await).await;
    let token = log_in(&app, 1).await;
    put(&app, 100, &token).await;
    let monitor = Monitor::start(&server);
    assert_cart_from_cache(&app, &monitor, &token).await;
    assert_eq!(read(&app, "/cart", &token).await, "100");
}

/// A caching instance and a plain one with the builder's defaults, on one Redis: whichever
/// writes the data, the caching one's very next request sees the write.
#[actix_web::test]
async fn every_data_write_is_seen_at_once_by_a_caching_instance() {
    let server = RedisServer::start();
    let caching = app(store(&server, true).await).await;
    let plain = app(store(&server, false).await).await;
    let token = log_in(&caching, 1).await;
    put(&caching, 1, &token).await;
    let monitor = Monitor::start(&server);
    assert_cart_from_cache(&caching, &monitor, &token).await;

    let rounds = 300;
    let mut stale = Vec::new();
    for round in 0..rounds {
        let len = 2 + round;
        if round % 2 == 0 {
            put(&plain, len, &token).await;
        } else {
            put(&caching, len, &token).await;
        }
        let seen = read(&caching, "/cart", &token).await;
        if seen != len.to_string() {
            stale.push((round, seen));
        }
        // Let the cache fill again, so that the next write has an entry to make stale.
        read(&caching, "/cart", &token).await;
    }
    assert!(
        stale.is_empty(),
        "{} of {rounds} reads after a write were stale: {stale:?}",
        stale.len()
    );
    monitor.take();
    assert_cart_from_cache(&caching, &monitor, &token).await;
}
