//! The local cache of `RedisStore`: requests served from memory, and never a session that ended.
//!
//! Every test runs on a private deployment, so command counts and killed connections are the
//! test's own. The tests of what keeps the cache exact run on every deployment the cache runs
//! on (`<test>::one_redis`, `::cluster`, `::sentinel`, `::tls`); the cluster's own hazards
//! (a slot that moves, a failover) have tests of their own.

use std::time::{Duration, Instant};

use actix_login::{AuthUser, Error, LoginMiddleware, RedisStore, Session, Timeouts};
use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::{test, web, App, HttpResponse};

use crate::support;
use crate::support::cached::{Backend, Kind};
use crate::support::http::*;
use crate::support::redis_server::{connection, RedisServer};

const PREFIX: &str = "cached";

async fn login(session: Session, id: web::Path<u64>) -> Result<HttpResponse, Error> {
    session.login(id.to_string(), &*id).await?;
    Ok(HttpResponse::Ok().finish())
}

async fn me(user: AuthUser<u64>) -> String {
    user.into_inner().to_string()
}

async fn logout(session: Session) -> Result<HttpResponse, Error> {
    session.logout().await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn reauth(_user: AuthUser<u64>, session: Session) -> Result<HttpResponse, Error> {
    session.reauthenticate().await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn cached_store(server: &RedisServer) -> RedisStore {
    RedisStore::builder(server.url())
        .key_prefix(PREFIX)
        .command_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(500))
        .local_cache(1000)
        .connect()
        .await
        .unwrap()
}

/// A store with a local cache on `backend`.
async fn cached_on(backend: &Backend) -> RedisStore {
    // Three TLS handshakes for the cluster's connection, three for the cache's, on two shared
    // cores.
    let connect_timeout = if backend.kind == Kind::ClusterTls {
        Duration::from_secs(3)
    } else {
        Duration::from_millis(500)
    };
    backend
        .builder()
        .key_prefix(PREFIX)
        .command_timeout(Duration::from_millis(500))
        .connect_timeout(connect_timeout)
        .local_cache(1000)
        .connect()
        .await
        .unwrap()
}

/// One test per deployment: `<test>::one_redis`, `::cluster`, `::sentinel`, `::tls` (and
/// `::sentinel_tls`, `::cluster_tls` where listed), each calling `<test>(Kind::…)`.
macro_rules! on_deployments {
    ($test:ident: $($name:ident => $kind:ident),* $(,)?) => {
        mod $test {
            use crate::support::cached::Kind;
            $(
                #[actix_web::test]
                async fn $name() {
                    super::$test(Kind::$kind).await;
                }
            )*
        }
    };
}

/// Proves a cache hit on any deployment, as [`assert_served_from_cache`] does on one server:
/// summed over the data nodes, and leaving out what heartbeats and checks send.
async fn assert_cached_on<S, B>(app: &S, backend: &Backend, token: &str)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert_eq!(status(app, get("/me", Some(token))).await, 200);
        let before = backend.command_counts();
        assert_eq!(status(app, get("/me", Some(token))).await, 200);
        let sent = backend.commands_since(&before);
        if sent.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not served from the cache on {:?}: {sent:?}",
            backend.kind
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
            .route("/me", web::get().to(me))
            .route("/logout", web::post().to(logout))
            .route("/reauth", web::post().to(reauth)),
    )
    .await
}

fn counts(pairs: &[(&str, u64)]) -> std::collections::HashMap<String, u64> {
    pairs.iter().map(|(c, n)| ((*c).to_owned(), *n)).collect()
}

/// The commands requests sent since `before`, leaving out PING: the cache's heartbeat pings its
/// tracking connection a few times a second whatever the requests do.
fn commands_during_since(
    server: &RedisServer,
    before: &std::collections::HashMap<String, u64>,
) -> std::collections::HashMap<String, u64> {
    let mut sent = support::redis_server::commands_during_since(server, before);
    sent.remove("ping");
    sent
}

/// Proves a cache hit: within 5 s, a `GET /me` with `token` is answered `200` without sending
/// Redis a single command (a read from Redis costs one `HMGET`). Every test below proves this
/// before it proves that the cache is never stale, so none of them passes with the cache off.
///
/// It retries because a heartbeat reply that arrives while the (blocking) command count holds
/// this thread is rightly unread by the next lookup, which then fetches; and because the cache
/// comes back by itself, a little after a new tracking connection is up.
async fn assert_served_from_cache<S, B>(app: &S, server: &RedisServer, token: &str)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert_eq!(status(app, get("/me", Some(token))).await, 200);
        let before = server.command_counts();
        assert_eq!(status(app, get("/me", Some(token))).await, 200);
        let sent = commands_during_since(server, &before);
        if sent.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not served from the cache: {sent:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn redis_key(token: &str) -> String {
    support::http::redis_session_key(PREFIX, token)
}

#[actix_web::test]
async fn repeated_requests_are_served_from_memory() {
    let server = RedisServer::start();
    let app = app(cached_store(&server).await).await;
    let token = log_in(&app, 1).await;
    let before = server.command_counts();
    assert_eq!(status(&app, get("/me", Some(&token))).await, 200);
    // A fill reads the record and its data (none here) in one command.
    assert_eq!(
        commands_during_since(&server, &before),
        counts(&[("hmget", 1)])
    );

    let before = server.command_counts();
    for _ in 0..20 {
        let res = test::call_service(&app, get("/me", Some(&token))).await;
        assert_eq!(status_and_body(res).await, (200, "1".into()));
    }
    assert!(commands_during_since(&server, &before).is_empty());

    // Logging out ends the session everywhere before the response: the DEL, then the
    // `INFO server` that waits for its invalidations to be sent and checks that the cache
    // tracks the server the DEL went to; then the activity log's entry.
    let before = server.command_counts();
    assert_eq!(status(&app, post("/logout", Some(&token))).await, 204);
    let sent = commands_during_since(&server, &before);
    assert_eq!(
        sent,
        counts(&[("del", 1), ("lpush", 1), ("ltrim", 1), ("pexpire", 1)]),
        "{sent:?}"
    );
    let infos = server.command_counts().get("info").copied().unwrap_or(0)
        - before.get("info").copied().unwrap_or(0);
    // One for the settling, one for the measurement; the heartbeat's own check may add one, and
    // the once-a-second check of the test runtime's lookup connection one more.
    assert!((2..=5).contains(&infos), "{infos} INFO");
    assert_eq!(status(&app, get("/me", Some(&token))).await, 401);
}

/// Two app instances, each with its own cache, on one deployment: whatever ends a session on one
/// is seen by the very next request on the other.
async fn a_session_ended_on_one_instance_is_dead_on_the_other_at_once(kind: Kind) {
    let backend = Backend::start(kind);
    let a = app(cached_on(&backend).await).await;
    let b = app(cached_on(&backend).await).await;
    let rounds = if kind == Kind::OneRedis { 100 } else { 30 };
    for round in 0..rounds {
        let token = log_in(&a, round).await;
        // Fill b's cache, and check it answers from it.
        assert_cached_on(&b, &backend, &token).await;

        let ended_by = match round % 2 {
            0 => {
                assert_eq!(status(&a, post("/logout", Some(&token))).await, 204);
                "logout"
            }
            _ => {
                // Reauthentication rotates the token: the old one must stop working.
                assert_eq!(status(&a, post("/reauth", Some(&token))).await, 204);
                "rotation"
            }
        };
        assert_eq!(
            status(&b, get("/me", Some(&token))).await,
            401,
            "{kind:?}, round {round}: b still accepted a session ended by {ended_by} on a"
        );
    }
}

on_deployments! { a_session_ended_on_one_instance_is_dead_on_the_other_at_once:
    one_redis => OneRedis, cluster => Cluster, sentinel => Sentinel, tls => Tls,
    sentinel_tls => SentinelTls, cluster_tls => ClusterTls,
}

/// A session deleted by another client (an admin tool, a revocation elsewhere), and a flush.
async fn changes_made_outside_the_app_reach_the_cache(kind: Kind) {
    let backend = Backend::start(kind);
    let app = app(cached_on(&backend).await).await;

    let token = log_in(&app, 1).await;
    assert_cached_on(&app, &backend, &token).await;
    let key = redis_key(&token);
    backend.run_settled(&key, redis::cmd("DEL").arg(&key));
    assert_eq!(status(&app, get("/me", Some(&token))).await, 401);

    // A flush of the database empties the cache too.
    let token = log_in(&app, 2).await;
    assert_cached_on(&app, &backend, &token).await;
    backend.flush_all();
    assert_eq!(status(&app, get("/me", Some(&token))).await, 401);
}

on_deployments! { changes_made_outside_the_app_reach_the_cache:
    one_redis => OneRedis, cluster => Cluster, sentinel => Sentinel, tls => Tls,
}

#[actix_web::test]
async fn an_idle_session_expires_in_the_cache_too() {
    let server = RedisServer::start();
    let store = cached_store(&server).await;
    let app = test::init_service(
        App::new()
            .wrap(
                LoginMiddleware::builder(store)
                    .timeouts(Timeouts::BROWSER.with_idle(Duration::from_millis(400)))
                    .build(),
            )
            .route("/login/{id}", web::post().to(login))
            .route("/me", web::get().to(me)),
    )
    .await;
    let token = log_in(&app, 1).await;
    assert_served_from_cache(&app, &server, &token).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status(&app, get("/me", Some(&token))).await, 401);
}

/// A session served from memory still has its idle deadline moved when the move is due, so an
/// active session outlives its idle window on a caching instance, and an idle one does not.
#[actix_web::test]
async fn activity_keeps_a_cached_session_alive() {
    let server = RedisServer::start();
    let store = cached_store(&server).await;
    let idle_timeout = Duration::from_millis(1500);
    let app = test::init_service(
        App::new()
            .wrap(
                LoginMiddleware::builder(store)
                    .timeouts(Timeouts::BROWSER.with_idle(idle_timeout))
                    .build(),
            )
            .route("/login/{id}", web::post().to(login))
            .route("/me", web::get().to(me)),
    )
    .await;
    let idle = log_in(&app, 1).await;
    let active = log_in(&app, 2).await;
    assert_served_from_cache(&app, &server, &active).await;
    // A request every 250 ms for 2.5 s: each moves the deadline, as a tenth of the idle window
    // (150 ms) has gone by; a stalled test thread would have to lose over a second between two.
    let mut last_answered = Instant::now();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(
            status(&app, get("/me", Some(&active))).await,
            200,
            "active session ended, {:?} after the one before",
            last_answered.elapsed()
        );
        last_answered = Instant::now();
    }
    assert_eq!(status(&app, get("/me", Some(&idle))).await, 401);
}

/// Redis forgets what a closed connection tracked, so the cache must forget it too: a session
/// deleted while no invalidation could arrive is never served from memory.
async fn losing_the_tracking_connection_empties_the_cache(kind: Kind) {
    let backend = Backend::start(kind);
    let app = app(cached_on(&backend).await).await;
    let token = log_in(&app, 1).await;
    assert_cached_on(&app, &backend, &token).await;

    let tracking = backend.tracking_clients().len();
    let expected = if kind == Kind::Cluster { 3 } else { 1 };
    assert_eq!(tracking, expected, "one tracking connection per primary");
    backend.kill_tracking_clients();
    // Deleted with no tracking connection left to hear of it.
    let key = redis_key(&token);
    backend.run_settled(&key, redis::cmd("DEL").arg(&key));
    assert_eq!(status(&app, get("/me", Some(&token))).await, 401);

    // The cache comes back by itself, on a new tracking connection.
    let token = log_in(&app, 2).await;
    assert_cached_on(&app, &backend, &token).await;
    assert!((1..=expected).contains(&backend.tracking_clients().len()));
    // And it is honest again.
    let key = redis_key(&token);
    backend.run_settled(&key, redis::cmd("DEL").arg(&key));
    assert_eq!(status(&app, get("/me", Some(&token))).await, 401);
}

on_deployments! { losing_the_tracking_connection_empties_the_cache:
    one_redis => OneRedis, cluster => Cluster, sentinel => Sentinel, tls => Tls,
}

/// A Redis that stops answering without closing the connection (a crashed host, a silent
/// partition) sends no EOF; the cache stops vouching for its entries once heartbeats go
/// unanswered for the lease (1 s), and requests fail closed instead.
///
/// Not on Sentinel: a primary silent for longer than the lease is one Sentinel fails over (its
/// `down-after-milliseconds` is 1 s in the harness); `sentinel.rs` tests failovers.
async fn a_silent_redis_ends_the_lease(kind: Kind) {
    let backend = Backend::start(kind);
    let app = app(cached_on(&backend).await).await;
    let token = log_in(&app, 1).await;
    assert_cached_on(&app, &backend, &token).await;

    backend.pause(2500);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    // Nothing proves the copy is still true, and Redis does not answer: 503, not 200.
    assert_eq!(status(&app, get("/me", Some(&token))).await, 503);

    // Redis answers again: the session is there, and the cache comes back.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_cached_on(&app, &backend, &token).await;
}

on_deployments! { a_silent_redis_ends_the_lease:
    one_redis => OneRedis, cluster => Cluster, tls => Tls,
}

/// Fail closed: with Redis gone, a cached session is not an excuse to answer 200.
#[actix_web::test]
async fn redis_down_is_503_even_for_cached_sessions() {
    let server = RedisServer::start();
    let app = app(cached_store(&server).await).await;
    let token = log_in(&app, 1).await;
    assert_served_from_cache(&app, &server, &token).await;
    // A crash: the kernel closes every connection of the killed process at once, and the
    // lookup finds the tracking connection's end in its socket.
    server.kill();
    let started = Instant::now();
    assert_eq!(status(&app, get("/me", Some(&token))).await, 503);
    assert!(started.elapsed() < Duration::from_secs(2));

    // Back up: sessions survive only if Redis kept them; this one did not.
    let server = server.restart();
    let deadline = Instant::now() + Duration::from_secs(5);
    let fresh = loop {
        let res = test::call_service(&app, post("/login/2", None)).await;
        if res.status() == 200 {
            break set_cookie(&res).unwrap().value().to_owned();
        }
        assert!(Instant::now() < deadline, "no recovery");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_served_from_cache(&app, &server, &fresh).await;
    assert_eq!(status(&app, get("/me", Some(&token))).await, 401);
}

/// Requests racing a logout on another instance, each placed against it: one that ended before
/// the logout started is `200` (from the cache), one that started after the logout answered is
/// `401`, and one in between is either, never anything else. The logout waits for a first
/// batch to be answered, and the requests go on until eight have started after it answered,
/// so both sides of the race are always there to check.
#[actix_web::test]
async fn concurrent_requests_never_outlive_a_logout() {
    use std::cell::Cell;

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Phase {
        Before,
        During,
        After,
    }
    let server = RedisServer::start();
    let a = app(cached_store(&server).await).await;
    let b = app(cached_store(&server).await).await;
    for round in 0..30 {
        let token = log_in(&a, round).await;
        assert_served_from_cache(&b, &server, &token).await;
        let logout_started = Cell::new(false);
        let logout_answered = Cell::new(false);
        let first_batch_answered = Cell::new(false);
        let one = || async {
            let started_after = logout_answered.get();
            let answer = status(&b, get("/me", Some(&token))).await;
            let phase = if started_after {
                Phase::After
            } else if !logout_started.get() {
                Phase::Before
            } else {
                Phase::During
            };
            (phase, answer)
        };
        let hammer = async {
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut seen = Vec::new();
            while seen.iter().filter(|(p, _)| *p == Phase::After).count() < 8 {
                assert!(Instant::now() < deadline, "round {round}: {seen:?}");
                seen.extend(futures_util::future::join_all((0..4).map(|_| one())).await);
                first_batch_answered.set(true);
                tokio::task::yield_now().await;
            }
            seen
        };
        let logout = async {
            while !first_batch_answered.get() {
                tokio::task::yield_now().await;
            }
            logout_started.set(true);
            assert_eq!(status(&a, post("/logout", Some(&token))).await, 204);
            logout_answered.set(true);
        };
        let (seen, ()) = futures_util::future::join(hammer, logout).await;
        assert!(seen.iter().any(|(p, _)| *p == Phase::Before), "{seen:?}");
        for (phase, answer) in &seen {
            let allowed: &[u16] = match phase {
                Phase::Before => &[200],
                Phase::During => &[200, 401],
                Phase::After => &[401],
            };
            assert!(
                allowed.contains(answer),
                "round {round}: {answer} {phase:?} the logout: {seen:?}"
            );
        }
    }
}

#[actix_web::test]
async fn the_cache_refuses_what_it_cannot_track() {
    let err = RedisStore::builder("redis+unix:///tmp/no-such.sock")
        .local_cache(10)
        .connect()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("TCP or TLS"), "{err}");

    // Unverified TLS could be anyone's server.
    let err = RedisStore::builder("rediss://127.0.0.1:1/#insecure")
        .local_cache(10)
        .connect()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("verified TLS"), "{err}");
}

/// A thread of its own for a store's connections, which the test can freeze.
struct FrozenRuntime {
    jobs: tokio::sync::mpsc::UnboundedSender<Freeze>,
}

/// A freeze: the runtime says it is blocked on `ack`, then stays blocked until `thaw` is
/// dropped.
struct Freeze {
    ack: std::sync::mpsc::Sender<()>,
    thaw: std::sync::mpsc::Receiver<()>,
}

impl FrozenRuntime {
    /// Connects a cached store from `builder` on a new thread; its tracking connection is read
    /// there.
    fn start(builder: actix_login::RedisStoreBuilder) -> (Self, RedisStore) {
        let (jobs, mut freezes) = tokio::sync::mpsc::unbounded_channel::<Freeze>();
        let (ready, store) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let store = builder
                    .key_prefix(PREFIX)
                    .command_timeout(Duration::from_secs(2))
                    .local_cache(100)
                    .connect()
                    .await
                    .unwrap();
                ready.send(store).unwrap();
                while let Some(freeze) = freezes.recv().await {
                    // Blocks the thread: nothing on this runtime reads its sockets meanwhile.
                    let _ = freeze.ack.send(());
                    let _ = freeze.thaw.recv();
                }
            });
        });
        (Self { jobs }, store.recv().unwrap())
    }

    /// Blocks the runtime's thread, and returns once it is blocked; dropping the returned
    /// sender thaws it.
    fn freeze(&self) -> std::sync::mpsc::Sender<()> {
        let (ack, acked) = std::sync::mpsc::channel();
        let (thaw, thawed) = std::sync::mpsc::channel();
        self.jobs.send(Freeze { ack, thaw: thawed }).unwrap();
        acked.recv().unwrap();
        thaw
    }
}

/// The invalidation has reached this process's socket, but nothing has read it yet (the thread
/// that reads it is stuck): the cache must not answer from memory. On TLS the bytes wait
/// encrypted, in the socket or part-read by rustls.
async fn an_unread_invalidation_is_honoured(kind: Kind) {
    let backend = Backend::start(kind);
    let a = app(cached_on(&backend).await).await;
    let (runtime, store) = FrozenRuntime::start(backend.builder());
    let b = app(store).await;
    for round in 0..5 {
        let token = log_in(&a, round).await;
        assert_cached_on(&b, &backend, &token).await;

        // Returns once b's runtime is blocked: nothing reads its sockets until thawed.
        let frozen = runtime.freeze();
        assert_eq!(status(&a, post("/logout", Some(&token))).await, 204);
        // b's reader is frozen, so the invalidation waits in its socket. A lookup that answered
        // from memory would not wait for the thaw; one that sees the unread bytes fetches, and
        // its reply is read once the runtime thaws.
        let thaw = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(frozen);
        };
        let (answer, ()) =
            futures_util::future::join(status(&b, get("/me", Some(&token))), thaw).await;
        assert_eq!(answer, 401, "{kind:?}, round {round}");
    }
}

on_deployments! { an_unread_invalidation_is_honoured:
    one_redis => OneRedis, cluster => Cluster, sentinel => Sentinel, tls => Tls,
    sentinel_tls => SentinelTls, cluster_tls => ClusterTls,
}

/// A store with no cache, whose peers declare none, ends a session with one `DEL` and no
/// `PING`: the round trip that lets caches hear of a logout is paid only where a cache is.
/// By default a store without a cache of its own still settles its deletes (a `PING` after the
/// `DEL`), because a caching instance may share the Redis; `peer_caches(false)`, the promise
/// that none does, drops the `PING`.
#[actix_web::test]
async fn a_plain_store_settles_deletes_unless_promised_no_caches() {
    use actix_login::store::SessionStore;

    // No caching store on this server: every PING counted would be the delete's.
    let server = RedisServer::start();
    let store = RedisStore::builder(server.url())
        .key_prefix(PREFIX)
        .connect()
        .await
        .unwrap();
    let plain = app(store.clone()).await;

    let token = log_in(&plain, 1).await;
    let before = server.command_counts();
    assert_eq!(status(&plain, post("/logout", Some(&token))).await, 204);
    let sent = support::redis_server::commands_during_since(&server, &before);
    assert_eq!(sent.get("del"), Some(&1), "{sent:?}");
    assert_eq!(sent.get("ping"), Some(&1), "{sent:?}");

    let token = log_in(&plain, 2).await;
    let key = actix_login::store::SessionKey::parse(&stored_key(&token)).unwrap();
    let before = server.command_counts();
    assert!(store.delete(&key).await.unwrap());
    assert_eq!(
        support::redis_server::commands_during_since(&server, &before),
        counts(&[("del", 1), ("ping", 1)])
    );
    assert_eq!(status(&plain, get("/me", Some(&token))).await, 401);

    // The promise that no instance caches takes the PING away.
    let promised = RedisStore::builder(server.url())
        .key_prefix(PREFIX)
        .peer_caches(false)
        .connect()
        .await
        .unwrap();
    let token = log_in(&plain, 3).await;
    let key = actix_login::store::SessionKey::parse(&stored_key(&token)).unwrap();
    let before = server.command_counts();
    assert!(promised.delete(&key).await.unwrap());
    assert_eq!(
        support::redis_server::commands_during_since(&server, &before),
        counts(&[("del", 1)])
    );
}

/// An instance without a cache of its own, with default settings, ends sessions in a way the
/// caching peer sees at once.
async fn a_non_caching_instance_ends_sessions_everywhere_by_default(kind: Kind) {
    let backend = Backend::start(kind);
    let plain = backend
        .builder()
        .key_prefix(PREFIX)
        .connect()
        .await
        .unwrap();
    let a = app(plain).await;
    let b = app(cached_on(&backend).await).await;
    for round in 0..20 {
        let token = log_in(&a, round).await;
        assert_cached_on(&b, &backend, &token).await;
        assert_eq!(status(&a, post("/logout", Some(&token))).await, 204);
        assert_eq!(
            status(&b, get("/me", Some(&token))).await,
            401,
            "{kind:?}, round {round}"
        );
    }
}

on_deployments! { a_non_caching_instance_ends_sessions_everywhere_by_default:
    one_redis => OneRedis, cluster => Cluster, sentinel => Sentinel, tls => Tls,
}

/// Every client of `server` except the cache's tracking connections, closed from the server's
/// side.
fn kill_untracked_clients(server: &RedisServer) {
    let mut conn = connection(&server.url()).unwrap();
    let me: i64 = redis::cmd("CLIENT").arg("ID").query(&mut conn).unwrap();
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut conn).unwrap();
    for line in list.lines() {
        let field = |name: &str| line.split(' ').find_map(|f| f.strip_prefix(name));
        let tracking = field("flags=").is_some_and(|flags| flags.contains('t'));
        let Some(id) = field("id=") else { continue };
        if tracking || id == me.to_string() {
            continue;
        }
        let _ = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .exec(&mut conn);
    }
}

/// The store's address moves to another server (a virtual IP or DNS name flipped after a
/// failover): the main connection reconnects there by itself, while the tracking connection
/// still reaches the old one, which never hears of a logout on the new one. The cache must
/// notice the two disagree and stop answering from memory.
#[actix_web::test]
async fn the_cache_never_vouches_for_a_server_the_store_has_left() {
    let (logs, _guard) = support::logs::capture_logs();
    let old = RedisServer::start();
    let new = RedisServer::start();
    let mut new_conn = connection(&new.url()).unwrap();
    // Loaded straight into memory, not through a dump file in the working directory.
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("repl-diskless-load")
        .arg("on-empty-db")
        .exec(&mut new_conn)
        .unwrap();
    redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(old.port)
        .exec(&mut new_conn)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut new_conn)
            .unwrap();
        if info.contains("master_link_status:up") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new server did not sync: {info}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let forwarder = support::forwarder::Forwarder::start(old.port);
    let store = RedisStore::builder(forwarder.url())
        .key_prefix(PREFIX)
        .command_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(500))
        .local_cache(1000)
        .connect()
        .await
        .unwrap();
    let app = app(store).await;

    let token = log_in(&app, 1).await;
    let mut old_conn = connection(&old.url()).unwrap();
    let replicated: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(2000)
        .query(&mut old_conn)
        .unwrap();
    assert_eq!(replicated, 1, "the new server did not get the session");
    assert_served_from_cache(&app, &old, &token).await;

    // The address now leads to the new server, promoted; the old one keeps running.
    forwarder.switch_to(new.port);
    redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .exec(&mut new_conn)
        .unwrap();
    kill_untracked_clients(&old);
    let deadline = Instant::now() + Duration::from_secs(5);
    while status(&app, post("/login/2", None)).await != 200 {
        assert!(Instant::now() < deadline, "the store did not reconnect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    assert_eq!(status(&app, post("/logout", Some(&token))).await, 204);
    let exists: bool = redis::cmd("EXISTS")
        .arg(redis_key(&token))
        .query(&mut new_conn)
        .unwrap();
    assert!(
        !exists,
        "the logout did not reach the server the store talks to"
    );
    assert_eq!(
        status(&app, get("/me", Some(&token))).await,
        401,
        "the cache served a session logged out on the server the store talks to"
    );
    assert!(
        logs.text().contains("different Redis servers"),
        "no warning: {}",
        logs.text()
    );
}

/// A plain store on `backend`, with the builder's defaults.
/// A login through `app` (users 2, 3, …) whose session lands on cluster node `node`.
async fn log_in_on_node<S, B>(app: &S, backend: &Backend, node: usize) -> String
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    for user in 2..200 {
        let token = log_in(app, user).await;
        if backend.cluster().node_serving(&redis_key(&token)) == node {
            return token;
        }
    }
    panic!("no session landed on node {node}");
}

async fn plain_on(backend: &Backend) -> RedisStore {
    backend
        .builder()
        .key_prefix(PREFIX)
        .command_timeout(Duration::from_millis(500))
        .connect()
        .await
        .unwrap()
}

/// A session's slot moves to another node while a caching instance holds it (a resharding:
/// `SETSLOT … MIGRATING`/`IMPORTING`, `MIGRATE`, `SETSLOT … NODE`), then a plain instance ends
/// it: the caching instance never accepts it after that, whether it had read the session from
/// the new node since the move or not; and it serves from memory again on the new node.
#[actix_web::test]
async fn a_session_whose_slot_moved_is_never_served_after_its_logout() {
    let backend = Backend::start(Kind::Cluster);
    let plain = app(plain_on(&backend).await).await;
    let cached = app(cached_on(&backend).await).await;
    for round in 0..4 {
        let token = log_in(&plain, round).await;
        assert_cached_on(&cached, &backend, &token).await;
        let key = redis_key(&token);
        let (from, to) = backend.cluster().move_slot_of(&key);
        assert_ne!(from, to);
        if round % 2 == 1 {
            // Served from memory again, now read from the node that took the slot.
            assert_cached_on(&cached, &backend, &token).await;
        }
        assert_eq!(status(&plain, post("/logout", Some(&token))).await, 204);
        assert_eq!(
            status(&cached, get("/me", Some(&token))).await,
            401,
            "round {round}: a session logged out after its slot moved from node {from} to {to}"
        );
    }
}

/// A replica takes over a primary (`CLUSTER FAILOVER`): the old primary keeps running and keeps
/// the cache's tracking connection open, as a replica. The cache must stop vouching for what
/// it read there (the next request reads from Redis), see a logout made on the new primary at
/// once, and serve from memory again from the new primary.
#[actix_web::test]
async fn a_cluster_failover_empties_the_cache_until_it_tracks_the_new_primary() {
    let (logs, _guard) = support::logs::capture_logs();
    let mut backend = Backend::start(Kind::Cluster);
    let plain = app(plain_on(&backend).await).await;
    let cached = app(cached_on(&backend).await).await;
    let token = log_in(&plain, 1).await;
    let key = redis_key(&token);
    let primary = backend.cluster().node_serving(&key);
    let replica = backend.add_cluster_replica(primary);
    assert_cached_on(&cached, &backend, &token).await;

    backend.cluster().failover_to(replica);
    // Two heartbeats: time for the cache to hear that its server is no longer a primary.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let before = backend.command_counts();
    assert_eq!(status(&cached, get("/me", Some(&token))).await, 200);
    assert!(
        !backend.commands_since(&before).is_empty(),
        "served from a copy read from the demoted primary"
    );
    assert!(
        logs.text().contains("no longer a primary") || logs.text().contains("slot map changed"),
        "no warning: {}",
        logs.text()
    );
    assert_eq!(status(&plain, post("/logout", Some(&token))).await, 204);
    assert_eq!(status(&cached, get("/me", Some(&token))).await, 401);

    // A session on the promoted node is served from memory again.
    let token = log_in_on_node(&plain, &backend, replica).await;
    assert_cached_on(&cached, &backend, &token).await;
    assert_eq!(status(&plain, post("/logout", Some(&token))).await, 204);
    assert_eq!(status(&cached, get("/me", Some(&token))).await, 401);
}

/// A primary stops answering without closing anything (`SIGSTOP`: a hung or vanished host), and
/// the cluster promotes its replica by election. A plain instance and a caching one answer the
/// session again without a restart (their connections to the stopped node are replaced after
/// a command timeout, and the cache follows the new slot map), and a logout on the new primary
/// is seen by the cache at once and stays so after the old primary, which held the session,
/// wakes up and learns that it was demoted.
#[actix_web::test]
async fn a_cluster_primary_that_hangs_is_failed_over_and_the_cache_follows() {
    let mut backend = Backend::start(Kind::Cluster);
    let plain = app(plain_on(&backend).await).await;
    let cached = app(cached_on(&backend).await).await;
    let token = log_in(&plain, 1).await;
    let primary = backend.cluster().node_serving(&redis_key(&token));
    // Added after the login, so its first sync carries the session.
    let replica = backend.add_cluster_replica(primary);
    assert_cached_on(&cached, &backend, &token).await;

    let frozen = backend.cluster().nodes[primary].freeze();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut failed_closed = false;
    loop {
        let (from_plain, from_cache) = (
            status(&plain, get("/me", Some(&token))).await,
            status(&cached, get("/me", Some(&token))).await,
        );
        // 200 from the cache only while its lease lasts; nothing but 200 or 503 ever.
        assert!(matches!(from_plain, 200 | 503) && matches!(from_cache, 200 | 503));
        failed_closed |= from_plain == 503;
        if failed_closed && from_plain == 200 && from_cache == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the session never came back after its primary hung: {from_plain} {from_cache}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Asked of the promoted node only: the stopped one would never answer.
    let mut promoted = connection(&backend.cluster().nodes[replica].url()).unwrap();
    let served: redis::RedisResult<i64> = redis::cmd("EXISTS")
        .arg(redis_key(&token))
        .query(&mut promoted);
    assert_eq!(
        served.ok(),
        Some(1),
        "the replica does not serve the session"
    );
    assert_eq!(status(&plain, post("/logout", Some(&token))).await, 204);
    assert_eq!(status(&cached, get("/me", Some(&token))).await, 401);

    // The old primary wakes up holding the session, and a moment later learns it is a replica.
    frozen.thaw();
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert_eq!(status(&plain, get("/me", Some(&token))).await, 401);
        assert_eq!(status(&cached, get("/me", Some(&token))).await, 401);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The cache serves from the promoted node, and hears of its logouts.
    let token = log_in_on_node(&plain, &backend, replica).await;
    assert_cached_on(&cached, &backend, &token).await;
    assert_eq!(status(&plain, post("/logout", Some(&token))).await, 204);
    assert_eq!(status(&cached, get("/me", Some(&token))).await, 401);
}

/// Sentinel fails over to the replica, and the old primary is made a replica of the new one
/// (as Sentinel does once it sees it again; here at once, and without closing its
/// connections). The cache must stop vouching for what it read on the old primary, see a
/// logout made on the new one, and serve from memory again once its tracking connection and
/// the store's both reach the new primary.
#[actix_web::test]
async fn a_sentinel_failover_empties_the_cache_until_it_tracks_the_new_primary() {
    let backend = Backend::start(Kind::Sentinel);
    let plain = app(plain_on(&backend).await).await;
    let cached = app(cached_on(&backend).await).await;
    let token = log_in(&plain, 1).await;
    let sentinel = backend.sentinel();
    let replicated: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(2000)
        .query(&mut sentinel.server_connection(0).unwrap())
        .unwrap();
    assert_eq!(replicated, 1, "the replica did not get the session");
    assert_cached_on(&cached, &backend, &token).await;

    sentinel.force_failover();
    sentinel.wait_for_primary(1, Duration::from_secs(20));
    sentinel.demote(0);
    sentinel.wait_for_replica(0, Duration::from_secs(20));
    // Two heartbeats: time for the cache to hear that its server is no longer a primary.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let before = backend.command_counts();
    assert_eq!(status(&cached, get("/me", Some(&token))).await, 200);
    assert!(
        !backend.commands_since(&before).is_empty(),
        "served from a copy read on the demoted primary"
    );

    // Each store finds the new primary at its first write there (`READONLY` on the old one).
    let deadline = Instant::now() + Duration::from_secs(10);
    let fresh = loop {
        let res = test::call_service(&cached, post("/login/2", None)).await;
        if res.status() == 200 {
            break set_cookie(&res).unwrap().value().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the caching store found no primary"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(&plain, post("/logout", Some(&token))).await != 204 {
        assert!(
            Instant::now() < deadline,
            "the plain store found no primary"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status(&cached, get("/me", Some(&token))).await, 401);

    // Both reach the new primary now: the cache serves again, and stays honest.
    assert_cached_on(&cached, &backend, &fresh).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(&plain, post("/logout", Some(&fresh))).await != 204 {
        assert!(
            Instant::now() < deadline,
            "the plain store found no primary"
        );
    }
    assert_eq!(status(&cached, get("/me", Some(&fresh))).await, 401);
}
