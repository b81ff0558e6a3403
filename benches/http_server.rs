//! The servers behind `benches/http.sh`: an authenticated route, `GET /me`, served by several
//! session stacks so that `wrk` can compare them side by side, and on three of them a second
//! one, `GET /cart`, that also reads one value of the session's data.
//!
//! This is not a self-timing benchmark. `benches/http.sh` builds it, starts one process per
//! variant and measures each from outside. To run one variant by hand:
//!
//! ```text
//! cargo bench -p actix-login-benches --no-run --bench http_server   # prints the executable's path
//! REDIS_URL=redis://127.0.0.1:6390 PORT=18081 target/release/deps/http_server-… actix-login
//! curl -si -X POST -H 'sec-fetch-site: same-origin' http://127.0.0.1:18081/login   # Set-Cookie
//! curl -s -H 'cookie: __Host-id=…' http://127.0.0.1:18081/me
//! ```
//!
//! Every variant serves `POST /login` (sets the cookie once, before measuring) and `GET /me`
//! (answers `{"id":1,"username":"alice"}`), with a single Actix worker:
//!
//! | variant | `GET /me` does |
//! |---|---|
//! | `bare` | nothing but serialise the profile: no middleware, no Redis (the ceiling) |
//! | `redis-get` | one `GET` of a fixed key through a `ConnectionManager` (the one-round-trip floor) |
//! | `redis-get-worker` | the same through a `ConnectionManager` per worker, opened on the worker's runtime (the stricter floor: no hop to another thread) |
//! | `redis-hmget-worker` | `redis-get-worker` with actix-login's reply: `HMGET` of four fields of a session-shaped hash (what three values more in a reply cost) |
//! | `identity` | actix-session `RedisSessionStore` + actix-identity, `Identity` extractor |
//! | `identity-visit` | the same with `visit_deadline` (sliding expiry, a session write per request) |
//! | `actix-login` | `LoginMiddleware` over `RedisStore`, `AuthUser<Profile>` extractor |
//! | `actix-login-cache` | the same with `RedisStoreBuilder::local_cache`: no Redis command once cached |
//! | `cache-floor` | what an exact in-process cache hit needs at the least, in the handler: find the cookie, SHA-256 it, check the lease and `peek` the tracking socket under the reader's lock (nothing waiting), look it up in a map under a lock, check its deadline, decode the profile (the cache's floor: no middleware, no Redis command) |
//!
//! With `REDIS_CLUSTER_URLS` (seed nodes, comma-separated) instead of `REDIS_URL`, `redis-get`
//! and the actix-login variants run on that Redis Cluster; the actix-session variants refuse
//! (its `RedisSessionStore` connects to one server only), as do the per-worker floors (written
//! for one server) and any variant whose store refuses the deployment: each prints a line
//! starting `variant refused:` and exits non-zero.
//!
//! `identity`, `actix-login`, `actix-login-cache` and `cache-floor` also serve a shopping cart
//! kept in the session's data: `POST /cart` (logged in) stores a list of three item ids under
//! `cart`, and `GET /cart` (logged in) reads it back and answers it as JSON (`404` if there is
//! none).
//! `http.sh` measures `GET /cart` as "an authenticated request that reads one data key": on
//! actix-login one `HMGET` of record and data (nothing once cached); on
//! actix-session the one `GET` of the session state it makes anyway, which holds the cart too;
//! on `cache-floor` the cart's JSON, kept beside the profile, decoded.
//!
//! ```text
//! curl -s -X POST -H 'sec-fetch-site: same-origin' -H 'cookie: __Host-id=…' http://127.0.0.1:18081/cart
//! curl -s -H 'cookie: __Host-id=…' http://127.0.0.1:18081/cart   # ["sku-1041","sku-2203","sku-3307"]
//! ```
//!
//! The `actix-login` variant also serves `POST /login-password`, a login as a real app does it:
//! a form with `username` and `password`, checked with argon2id against a hash made once at
//! startup (`PasswordHasher`, on its own low-priority threads), then `Session::login`. `http.sh`
//! hammers it to measure what a login storm does to `GET /me`:
//!
//! ```text
//! curl -si -H 'sec-fetch-site: same-origin' -d 'username=storm&password=correct horse battery staple' \
//!     http://127.0.0.1:18081/login-password
//! ```
//!
//! It logs in another user than `/login`, so that the storm's sessions never count against the
//! benchmark cookie's user (a login beyond `max_sessions_per_user` ends that user's oldest).

use std::collections::HashMap;
use std::io;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use actix_identity::{Identity, IdentityMiddleware};
use actix_login::password::PasswordHasher;
use actix_login::{AuthUser, LoginMiddleware, RedisStore, Session, Timeouts};
use actix_session::storage::RedisSessionStore;
use actix_session::SessionMiddleware;
use actix_web::cookie::Key;
use actix_web::http::header::ContentType;
use actix_web::{web, App, HttpMessage as _, HttpRequest, HttpResponse, HttpServer};
use redis::aio::{ConnectionLike, ConnectionManager};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

const VARIANTS: [&str; 9] = [
    "bare",
    "redis-get",
    "identity",
    "identity-visit",
    "actix-login",
    "actix-login-cache",
    "redis-get-worker",
    "redis-hmget-worker",
    "cache-floor",
];

/// What a variant that cannot run on the deployment prints before it exits; `http.sh` skips
/// that variant and shows the line.
const REFUSED_MARK: &str = "variant refused:";

/// Why the actix-session variants do not run on a cluster.
const NO_CLUSTER: &str =
    "variant refused: actix-session 0.11's RedisSessionStore connects to one Redis \
     server (a ConnectionManager or a deadpool-redis pool), not to a Redis Cluster";

/// The Redis key the `redis-get` variant reads on every request.
const FLOOR_KEY: &str = "bench:profile";

/// The hash the `redis-hmget-worker` variant reads on every request, named as long as an
/// actix-login session's key (`actix-login:s:{group}digest`) and shaped as one of this benchmark
/// (see [`run_redis_hmget_per_worker`]).
const FLOOR_HASH: &str = "bench-floor:s:{AAAA}AAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// Idle timeout for the sliding-expiry variant: actix-login's default, so both keep the same
/// promise about idle sessions.
const VISIT_DEADLINE: Duration = Duration::from_secs(30 * 60);

/// The `bare` and `redis-get` variants have no sessions. They still hand out a cookie of the same
/// shape as actix-login's (name and 47 base64url characters), so every variant's requests carry
/// a similar header.
const STAND_IN_COOKIE: &str =
    "__Host-id=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA; Path=/; Secure; HttpOnly; SameSite=Lax";

/// The session data key `POST /cart` writes and `GET /cart` reads.
const CART_KEY: &str = "cart";

/// The one account `POST /login-password` knows, and its password.
const STORM_USERNAME: &str = "storm";
const STORM_PASSWORD: &str = "correct horse battery staple";

#[derive(Clone, Serialize, Deserialize)]
struct Profile {
    id: u64,
    username: String,
}

fn alice() -> Profile {
    Profile {
        id: 1,
        username: "alice".to_owned(),
    }
}

fn alice_json() -> String {
    serde_json::to_string(&alice()).expect("a profile always serialises")
}

/// What `POST /cart` stores: a small cart of item ids, as a shop would keep in the session.
fn cart() -> Vec<String> {
    ["sku-1041", "sku-2203", "sku-3307"]
        .map(str::to_owned)
        .to_vec()
}

fn cart_response(cart: Option<Vec<String>>) -> HttpResponse {
    match cart {
        Some(cart) => HttpResponse::Ok().json(cart),
        // Not a case the benchmark expects: a non-2xx answer makes http.sh fail loudly.
        None => HttpResponse::NotFound().json(serde_json::json!({ "error": "no_cart" })),
    }
}

fn unavailable(err: impl std::fmt::Display) -> actix_web::Error {
    actix_web::error::ErrorServiceUnavailable(err.to_string())
}

// ---- bare -------------------------------------------------------------------------------------

async fn bare_login() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("set-cookie", STAND_IN_COOKIE))
        .json(alice())
}

async fn bare_me() -> web::Json<Profile> {
    web::Json(alice())
}

async fn run_bare(port: u16) -> io::Result<()> {
    HttpServer::new(|| {
        App::new()
            .route("/login", web::post().to(bare_login))
            .route("/me", web::get().to(bare_me))
    })
    .workers(workers())
    .bind(("127.0.0.1", port))?
    .run()
    .await
}

// ---- redis-get: one round trip, nothing else ---------------------------------------------------

async fn floor_me<C>(redis: web::Data<C>) -> actix_web::Result<web::Json<Profile>>
where
    C: ConnectionLike + Clone + 'static,
{
    let mut conn = redis.get_ref().clone();
    let raw: Option<Vec<u8>> = redis::cmd("GET")
        .arg(FLOOR_KEY)
        .query_async(&mut conn)
        .await
        .map_err(unavailable)?;
    let raw = raw.ok_or_else(|| unavailable("the profile key is missing"))?;
    let profile = serde_json::from_slice(&raw).map_err(unavailable)?;
    Ok(web::Json(profile))
}

async fn run_redis_get(port: u16, deployment: &Deployment) -> io::Result<()> {
    match deployment {
        Deployment::Single(url) => {
            let client = redis::Client::open(url.as_str()).map_err(io::Error::other)?;
            let conn = client
                .get_connection_manager()
                .await
                .map_err(io::Error::other)?;
            serve_floor(port, conn).await
        }
        Deployment::Cluster(nodes) => {
            let client =
                redis::cluster::ClusterClient::new(nodes.clone()).map_err(io::Error::other)?;
            let conn = client
                .get_async_connection()
                .await
                .map_err(io::Error::other)?;
            serve_floor(port, conn).await
        }
    }
}

/// The `redis-get` server over `conn`, a `ConnectionManager` or a cluster connection: both
/// multiplex every request over shared connections, as actix-login's store does.
async fn serve_floor<C>(port: u16, mut conn: C) -> io::Result<()>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    redis::cmd("SET")
        .arg(FLOOR_KEY)
        .arg(alice_json())
        .query_async::<()>(&mut conn)
        .await
        .map_err(io::Error::other)?;
    let conn = web::Data::new(conn);
    HttpServer::new(move || {
        App::new()
            .app_data(conn.clone())
            .route("/login", web::post().to(bare_login))
            .route("/me", web::get().to(floor_me::<C>))
    })
    .workers(workers())
    .bind(("127.0.0.1", port))?
    .run()
    .await
}

/// `redis-get` with a connection per worker, opened on the worker's own runtime: the stricter
/// floor, as a shared connection's commands hop to the thread that opened it and back.
async fn run_redis_get_per_worker(port: u16, deployment: &Deployment) -> io::Result<()> {
    let mut seed = redis::cmd("SET");
    seed.arg(FLOOR_KEY).arg(alice_json());
    serve_floor_per_worker(port, deployment, seed, floor_me::<ConnectionManager>).await
}

/// `redis-get-worker`'s handler with the reply actix-login's lookup gets: `HMGET` of the fields
/// it asks for (the record's first two pieces, the live update, the deadline: `r`, `r1`, `u`,
/// `e` in `src/store/redis/codec.rs`), four values where `GET` answers one. The profile is read
/// from the first field, JSON padded with spaces to a full piece.
async fn floor_hmget_me(
    redis: web::Data<ConnectionManager>,
) -> actix_web::Result<web::Json<Profile>> {
    let mut conn = redis.get_ref().clone();
    let reply: redis::Value = redis::cmd("HMGET")
        .arg(FLOOR_HASH)
        .arg(&["r", "r1", "u", "e"])
        .query_async(&mut conn)
        .await
        .map_err(unavailable)?;
    let redis::Value::Array(fields) = reply else {
        return Err(unavailable("HMGET answered no array"));
    };
    let Some(redis::Value::BulkString(raw)) = fields.first() else {
        return Err(unavailable("the session hash is missing"));
    };
    let profile = serde_json::from_slice(raw).map_err(unavailable)?;
    Ok(web::Json(profile))
}

/// The per-worker floor with actix-login's reply (see [`floor_hmget_me`]): what three values
/// more in a reply cost, apart from everything else actix-login does.
async fn run_redis_hmget_per_worker(port: u16, deployment: &Deployment) -> io::Result<()> {
    // The fields, their order and their lengths as a session of this benchmark has them (a
    // login by curl, `HSTRLEN` of each): Redis scans a small hash field by field.
    let mut seed = redis::cmd("HSET");
    seed.arg(FLOOR_HASH)
        .arg("r")
        .arg(format!("{:<64}", alice_json()))
        .arg("e")
        // Any 13-digit Unix time in milliseconds: the handler never reads it.
        .arg("1796646574313")
        .arg("z")
        .arg("0")
        .arg("r1")
        .arg("x".repeat(14));
    serve_floor_per_worker(port, deployment, seed, floor_hmget_me).await
}

/// A one-server floor whose `/me` is `handler`, with a `ConnectionManager` per worker; `seed`
/// writes what it reads, once, before the server starts.
async fn serve_floor_per_worker<F, Args>(
    port: u16,
    deployment: &Deployment,
    seed: redis::Cmd,
    handler: F,
) -> io::Result<()>
where
    F: actix_web::Handler<Args> + Send + Clone,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    let Deployment::Single(url) = deployment else {
        return Err(io::Error::other(format!(
            "{REFUSED_MARK} the per-worker floors are written for one server"
        )));
    };
    let client = redis::Client::open(url.as_str()).map_err(io::Error::other)?;
    let mut conn = client
        .get_connection_manager()
        .await
        .map_err(io::Error::other)?;
    seed.query_async::<()>(&mut conn)
        .await
        .map_err(io::Error::other)?;
    HttpServer::new(move || {
        let client = client.clone();
        App::new()
            .data_factory(move || {
                let client = client.clone();
                async move { client.get_connection_manager().await }
            })
            .route("/login", web::post().to(bare_login))
            .route("/me", web::get().to(handler.clone()))
    })
    .workers(workers())
    .bind(("127.0.0.1", port))?
    .run()
    .await
}

// ---- cache-floor: an exact local cache hit, and nothing else ----------------------------------

/// A session as `cache-floor` keeps it in memory: its deadline, its profile and its cart, as
/// JSON (as a store hands them over).
struct FloorEntry {
    expires_at: SystemTime,
    profile: String,
    cart: String,
}

/// What `cache-floor` shares between workers: its sessions by the SHA-256 of their token, and a
/// connection to Redis that stands for a cache's tracking connection, with the state a reader of
/// that connection keeps.
struct CacheFloor {
    sessions: Mutex<HashMap<[u8; 32], Arc<FloorEntry>>>,
    tracking: TcpStream,
    /// Taken while the socket is checked, as the reader takes it while it applies what it read.
    reader: Mutex<()>,
    /// Whether the reader holds no half-read reply (here it never does).
    at_rest: AtomicBool,
    /// When the connection last proved alive: a cache answers only within a lease of it. Nothing
    /// renews it here, so the lease is long.
    heard_at: Instant,
}

/// `cache-floor`'s stand-in for a cache's heartbeat lease: long enough never to run out.
const FLOOR_LEASE: Duration = Duration::from_secs(24 * 60 * 60);

impl CacheFloor {
    /// The request's session, as an exact cache answers it from memory: never by the token
    /// itself, only while its deadline is ahead and the connection's lease holds, and only when
    /// no invalidation is waiting in the tracking socket (a non-blocking `peek`; nothing ever
    /// arrives on this idle connection). It leaves out what only a cluster needs (the slot's
    /// node) and what tells one connection's entries from another's.
    fn hit(&self, req: &HttpRequest) -> actix_web::Result<Arc<FloorEntry>> {
        let token = cookie_value(req, "__Host-id")
            .ok_or_else(|| actix_web::error::ErrorUnauthorized("no session cookie"))?;
        let key: [u8; 32] = Sha256::digest(token).into();
        self.nothing_waiting()?;
        let entry = self
            .sessions
            .lock()
            .map_err(|_| unavailable("the session map is poisoned"))?
            .get(&key)
            .cloned()
            .ok_or_else(|| actix_web::error::ErrorUnauthorized("unknown session"))?;
        if entry.expires_at <= SystemTime::now() {
            return Err(actix_web::error::ErrorUnauthorized("expired session"));
        }
        Ok(entry)
    }

    /// Whether the cache may answer from memory now: the lease holds, and neither the reader nor
    /// the socket holds anything unread.
    fn nothing_waiting(&self) -> actix_web::Result<()> {
        let _reader = self
            .reader
            .lock()
            .map_err(|_| unavailable("the reader's lock is poisoned"))?;
        let idle = self.heard_at.elapsed() < FLOOR_LEASE
            && self.at_rest.load(Ordering::Acquire)
            && matches!(self.tracking.peek(&mut [0u8; 1]), Err(err) if err.kind() == io::ErrorKind::WouldBlock);
        if idle {
            Ok(())
        } else {
            Err(unavailable("the tracking socket is not idle"))
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` headers, if any.
fn cookie_value<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a [u8]> {
    req.headers()
        .get_all(actix_web::http::header::COOKIE)
        .flat_map(|header| header.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let eq = pair.iter().position(|&b| b == b'=')?;
            (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
        })
}

async fn floor_cache_me(
    floor: web::Data<CacheFloor>,
    req: HttpRequest,
) -> actix_web::Result<web::Json<Profile>> {
    let entry = floor.hit(&req)?;
    let profile = serde_json::from_str(&entry.profile).map_err(unavailable)?;
    Ok(web::Json(profile))
}

async fn floor_cache_cart(
    floor: web::Data<CacheFloor>,
    req: HttpRequest,
) -> actix_web::Result<HttpResponse> {
    let entry = floor.hit(&req)?;
    let cart = serde_json::from_str(&entry.cart).map_err(unavailable)?;
    Ok(cart_response(Some(cart)))
}

/// The floor of `actix-login-cache`: its `/me` and `/cart` as handlers that do only what an
/// exact cache hit cannot skip (see [`CacheFloor::hit`]). The one session is the stand-in
/// cookie's, there from the start; `POST /cart` only answers the cart it already holds. On a
/// cluster it peeks a socket to the first seed node: a floor of one node's cache.
async fn run_cache_floor(port: u16, deployment: &Deployment) -> io::Result<()> {
    let url = match deployment {
        Deployment::Single(url) => url,
        Deployment::Cluster(nodes) => nodes
            .first()
            .ok_or_else(|| io::Error::other("REDIS_CLUSTER_URLS names no node"))?,
    };
    let info =
        redis::IntoConnectionInfo::into_connection_info(url.as_str()).map_err(io::Error::other)?;
    let redis::ConnectionAddr::Tcp(host, redis_port) = info.addr() else {
        return Err(io::Error::other(format!(
            "{REFUSED_MARK} cache-floor peeks a plain TCP connection to Redis"
        )));
    };
    let tracking = TcpStream::connect((host.as_str(), *redis_port))?;
    tracking.set_nonblocking(true)?;
    let token = STAND_IN_COOKIE
        .split(';')
        .next()
        .and_then(|pair| pair.split_once('='))
        .map(|(_, token)| token)
        .ok_or_else(|| io::Error::other("the stand-in cookie has no value"))?;
    let entry = FloorEntry {
        // As far ahead as actix-login's default idle timeout.
        expires_at: SystemTime::now() + VISIT_DEADLINE,
        profile: alice_json(),
        cart: serde_json::to_string(&cart()).map_err(io::Error::other)?,
    };
    let sessions = HashMap::from([(Sha256::digest(token).into(), Arc::new(entry))]);
    let floor = web::Data::new(CacheFloor {
        sessions: Mutex::new(sessions),
        tracking,
        reader: Mutex::new(()),
        at_rest: AtomicBool::new(true),
        heard_at: Instant::now(),
    });
    HttpServer::new(move || {
        App::new()
            .app_data(floor.clone())
            .route("/login", web::post().to(bare_login))
            .route("/me", web::get().to(floor_cache_me))
            .route("/cart", web::post().to(floor_cache_cart))
            .route("/cart", web::get().to(floor_cache_cart))
    })
    .workers(workers())
    .bind(("127.0.0.1", port))?
    .run()
    .await
}

// ---- actix-session + actix-identity -----------------------------------------------------------

/// The identity is the serialised profile, so that `/me` can answer with the identity's id and
/// still send the same body as the other variants.
async fn identity_login(req: HttpRequest) -> actix_web::Result<HttpResponse> {
    Identity::login(&req.extensions(), alice_json())?;
    Ok(HttpResponse::Ok().json(alice()))
}

async fn identity_me(user: Identity) -> actix_web::Result<HttpResponse> {
    Ok(HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(user.id()?))
}

async fn identity_put_cart(
    _user: Identity,
    session: actix_session::Session,
) -> actix_web::Result<HttpResponse> {
    let cart = cart();
    session.insert(CART_KEY, &cart)?;
    Ok(HttpResponse::Ok().json(cart))
}

/// The login check is the `Identity` extractor, as in `identity_me`; the cart comes from the
/// session state that actix-session loaded for it, with no further Redis command.
async fn identity_cart(
    _user: Identity,
    session: actix_session::Session,
) -> actix_web::Result<HttpResponse> {
    Ok(cart_response(session.get::<Vec<String>>(CART_KEY)?))
}

async fn run_identity(
    port: u16,
    deployment: &Deployment,
    visit_deadline: Option<Duration>,
) -> io::Result<()> {
    let Deployment::Single(url) = deployment else {
        // Its `RedisSessionStore` holds a `ConnectionManager` or a deadpool-redis pool, both of
        // one server: a cluster answers its commands with MOVED.
        return Err(io::Error::other(NO_CLUSTER));
    };
    let store = RedisSessionStore::new(url.as_str())
        .await
        .map_err(io::Error::other)?;
    // As the crates' docs set them up: a key generated outside the factory, identity outside
    // sessions. Only the sliding variant deviates from `IdentityMiddleware::default()`.
    let key = Key::generate();
    HttpServer::new(move || {
        let identity = match visit_deadline {
            Some(deadline) => IdentityMiddleware::builder()
                .visit_deadline(Some(deadline))
                .build(),
            None => IdentityMiddleware::default(),
        };
        App::new()
            .wrap(identity)
            .wrap(SessionMiddleware::new(store.clone(), key.clone()))
            .route("/login", web::post().to(identity_login))
            .route("/me", web::get().to(identity_me))
            .route("/cart", web::post().to(identity_put_cart))
            .route("/cart", web::get().to(identity_cart))
    })
    .workers(workers())
    .bind(("127.0.0.1", port))?
    .run()
    .await
}

// ---- actix-login ------------------------------------------------------------------------------

async fn login_login(session: Session) -> actix_web::Result<HttpResponse> {
    let profile = alice();
    session.login(profile.id.to_string(), &profile).await?;
    Ok(HttpResponse::Ok().json(profile))
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

/// The account `POST /login-password` checks against: its profile and argon2id hash.
struct Account {
    profile: Profile,
    password_hash: String,
}

/// A password login: look the user up, check the password (unknown users cost the same argon2
/// work, as `PasswordHasher::verify` does with `None`), and only then log in.
async fn login_password(
    session: Session,
    hasher: web::Data<PasswordHasher>,
    account: web::Data<Account>,
    creds: web::Form<Credentials>,
) -> actix_web::Result<HttpResponse> {
    let known = creds.username == account.profile.username;
    let stored = known.then_some(account.password_hash.as_str());
    if !hasher.verify(&creds.password, stored).await? {
        return Ok(HttpResponse::Unauthorized().json(serde_json::json!({
            "error": "invalid_credentials"
        })));
    }
    let profile = &account.profile;
    session.login(profile.id.to_string(), profile).await?;
    Ok(HttpResponse::Ok().json(profile))
}

async fn login_me(user: AuthUser<Profile>) -> web::Json<Profile> {
    web::Json(user.into_inner())
}

async fn login_put_cart(
    _user: AuthUser<Profile>,
    session: Session,
) -> actix_web::Result<HttpResponse> {
    let cart = cart();
    session.insert(CART_KEY, &cart).await?;
    Ok(HttpResponse::Ok().json(cart))
}

async fn login_cart(_user: AuthUser<Profile>, session: Session) -> actix_web::Result<HttpResponse> {
    Ok(cart_response(session.get::<Vec<String>>(CART_KEY).await?))
}

async fn run_actix_login(port: u16, deployment: &Deployment, local_cache: bool) -> io::Result<()> {
    let mut store = match deployment {
        Deployment::Single(url) => RedisStore::builder(url.as_str()),
        Deployment::Cluster(nodes) => RedisStore::cluster_builder(nodes.iter().cloned()),
    };
    if local_cache {
        store = store.local_cache(10_000);
    }
    // http.sh gives this build a prefix of its own beside an older build on a cluster, which has
    // no second database to keep their layouts apart.
    if let Ok(prefix) = std::env::var("KEY_PREFIX") {
        store = store.key_prefix(prefix);
    }
    let store = store.connect().await.map_err(|err| {
        // http.sh skips a variant whose store refuses to connect, and prints this line.
        io::Error::other(format!(
            "{REFUSED_MARK} the store refused to connect: {err}"
        ))
    })?;
    let mut sessions = LoginMiddleware::builder(store);
    // benches/scale.sh loads its sessions with the same idle timeout, long enough that none
    // is due for an idle-deadline refresh while it measures: it compares steady-state lookups.
    if let Some(secs) = idle_timeout_secs()? {
        sessions = sessions.timeouts(Timeouts::BROWSER.with_idle(Duration::from_secs(secs)));
    }
    let sessions = sessions.build();
    let hasher = PasswordHasher::new();
    let account = web::Data::new(Account {
        profile: Profile {
            id: 2,
            username: STORM_USERNAME.to_owned(),
        },
        password_hash: hasher
            .hash(STORM_PASSWORD)
            .await
            .map_err(io::Error::other)?,
    });
    let hasher = web::Data::new(hasher);
    HttpServer::new(move || {
        App::new()
            .wrap(sessions.clone())
            .app_data(hasher.clone())
            .app_data(account.clone())
            .route("/login", web::post().to(login_login))
            .route("/login-password", web::post().to(login_password))
            .route("/me", web::get().to(login_me))
            .route("/cart", web::post().to(login_put_cart))
            .route("/cart", web::get().to(login_cart))
    })
    .workers(workers())
    .bind(("127.0.0.1", port))?
    .run()
    .await
}

/// Where the servers find Redis.
enum Deployment {
    /// One server: `REDIS_URL`.
    Single(String),
    /// A Redis Cluster: `REDIS_CLUSTER_URLS`, its seed nodes separated by commas.
    Cluster(Vec<String>),
}

impl Deployment {
    fn from_env() -> Self {
        match std::env::var("REDIS_CLUSTER_URLS") {
            Ok(urls) if !urls.trim().is_empty() => Self::Cluster(
                urls.split(',')
                    .map(str::trim)
                    .filter(|url| !url.is_empty())
                    .map(str::to_owned)
                    .collect(),
            ),
            _ => Self::Single(
                std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned()),
            ),
        }
    }
}

/// `IDLE_TIMEOUT_SECS`, if set: the actix-login variants' idle timeout instead of the default.
fn idle_timeout_secs() -> io::Result<Option<u64>> {
    match std::env::var("IDLE_TIMEOUT_SECS") {
        Ok(secs) => secs.parse().map(Some).map_err(|_| {
            io::Error::other(format!("IDLE_TIMEOUT_SECS must be a number, not {secs:?}"))
        }),
        Err(_) => Ok(None),
    }
}

// ---- entry point ------------------------------------------------------------------------------

/// Actix workers per server: `WORKERS`, 1 unless set (`http.sh` measures one worker per server
/// by default; `WORKERS=2` on two cores is Actix's own default, a worker per core).
fn workers() -> usize {
    std::env::var("WORKERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(1)
}

fn usage() -> String {
    format!(
        "usage: http_server <{}>  (env: PORT, default 8080; REDIS_URL, default redis://127.0.0.1:6379;\n\
         REDIS_CLUSTER_URLS, comma-separated seed nodes, for a Redis Cluster instead;\n\
         IDLE_TIMEOUT_SECS for the actix-login variants, default 1800; KEY_PREFIX for their\n\
         keys, default the store's; WORKERS, default 1)\n\
         driven by benches/http.sh",
        VARIANTS.join("|")
    )
}

fn main() -> io::Result<()> {
    // `cargo bench` runs harness-less targets with `--bench`; `cargo test --benches` with
    // nothing. Neither names a variant, and neither should start a server.
    let Some(variant) = std::env::args().skip(1).find(|arg| !arg.starts_with('-')) else {
        eprintln!("{}", usage());
        return Ok(());
    };
    if !VARIANTS.contains(&variant.as_str()) {
        eprintln!("unknown variant {variant:?}\n{}", usage());
        std::process::exit(2);
    }
    let port = match std::env::var("PORT") {
        Ok(port) => port
            .parse::<u16>()
            .map_err(|_| io::Error::other(format!("PORT must be a port number, not {port:?}")))?,
        Err(_) => 8080,
    };
    let deployment = Deployment::from_env();

    let served = actix_web::rt::System::new().block_on(async {
        match variant.as_str() {
            "bare" => run_bare(port).await,
            "redis-get" => run_redis_get(port, &deployment).await,
            "identity" => run_identity(port, &deployment, None).await,
            "identity-visit" => run_identity(port, &deployment, Some(VISIT_DEADLINE)).await,
            "actix-login" => run_actix_login(port, &deployment, false).await,
            "actix-login-cache" => run_actix_login(port, &deployment, true).await,
            "redis-get-worker" => run_redis_get_per_worker(port, &deployment).await,
            "redis-hmget-worker" => run_redis_hmget_per_worker(port, &deployment).await,
            "cache-floor" => run_cache_floor(port, &deployment).await,
            _ => unreachable!("checked against VARIANTS"),
        }
    });
    if let Err(err) = served {
        // Displayed, not debug-printed, so that http.sh can quote a refusal as it is.
        eprintln!("{variant}: {err}");
        std::process::exit(1);
    }
    Ok(())
}
