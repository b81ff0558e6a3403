//! The deployments the guarantee matrix (`matrix.rs`) runs on, and [`TestApp`]: one to two
//! in-process instances of one small app, each with its own store, on one deployment, sharing
//! one user table (the accounts' passkeys).
//!
//! Cluster, Sentinel and TLS deployments are started once per test binary and shared (each
//! app gets a key prefix of its own); deployments with a local cache get a private
//! `redis-server`, so that command counts prove what the cache served; and
//! [`TestApp::spawn_private`] gives a test that stops the store a deployment of its own.

use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix_login::links::{LinkPurpose, OneTimeLinks, Recipient};
use actix_login::store::{SessionStore, ThrottleStore};
use actix_login::two_factor::{Enrolled, SecondFactor, TwoFactor};
use actix_login::{
    AuthUser, Error, Login, LoginMiddleware, MemoryStore, RedisStore, Require, Session, Sessions,
};
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Service, ServiceResponse};
use actix_web::{test, web, App, HttpRequest, HttpResponse};
use futures_util::future::LocalBoxFuture;
use serde::Deserialize;

use super::cached::{Backend, Kind};
use super::cluster::RedisCluster;
use super::http::{get, post, set_cookie};
use super::passkeys::{Answer, Users};
use super::process::Guarded;
use super::redis_server::{commands_during_since, shared_redis_url, unique_prefix, RedisServer};
use super::sentinel::{RedisSentinel, SERVICE};
use super::tls::{start_tls_server, TestCertificates};
use std::collections::HashMap;

/// Where the app instances keep their sessions, and how many instances there are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deployment {
    /// One instance on a `MemoryStore`.
    Memory,
    /// One instance on one Redis.
    OneRedis,
    /// Two instances on one Redis, neither caching.
    TwoPlain,
    /// Two instances on one Redis, both with `local_cache`.
    TwoCaching,
    /// Two instances on one Redis: instance 0 without a cache (builder defaults), instance 1
    /// with `local_cache`. Sessions end on 0 and are checked on 1.
    PlainToCaching,
    /// The same pair the other way round: instance 0 caches, instance 1 does not.
    CachingToPlain,
    /// [`PlainToCaching`](Self::PlainToCaching), with the plain instance built with
    /// `peer_caches(false)`: "no instance caches", said of a deployment where one does.
    PlainOptedOutToCaching,
    /// Two instances on a three-primary Redis Cluster.
    Cluster,
    /// Two instances on a Sentinel-managed primary with a replica.
    Sentinel,
    /// Two instances on one Redis that speaks TLS only, with a private CA.
    Tls,
    /// Two instances on a private three-primary Redis Cluster, both with `local_cache`.
    ClusterCaching,
    /// Instance 0 without a cache (builder defaults), instance 1 with one, on a private
    /// cluster. Sessions end on 0 and are checked on 1.
    ClusterPlainToCaching,
    /// Two instances on a private Sentinel deployment, both with `local_cache`.
    SentinelCaching,
    /// Two instances on a private TLS-only Redis, both with `local_cache`.
    TlsCaching,
}

impl Deployment {
    /// Whether instance `i` keeps a local cache.
    fn caches(self, i: usize) -> bool {
        match self {
            Self::TwoCaching | Self::ClusterCaching | Self::SentinelCaching | Self::TlsCaching => {
                true
            }
            Self::PlainToCaching | Self::PlainOptedOutToCaching | Self::ClusterPlainToCaching => {
                i == 1
            }
            Self::CachingToPlain => i == 0,
            _ => false,
        }
    }

    fn instances(self) -> usize {
        match self {
            Self::Memory | Self::OneRedis => 1,
            _ => 2,
        }
    }
}

/// How many rounds a cell of the matrix runs on `deployment`: `MATRIX_ROUNDS`, or a short
/// default for CI: 200 where an instance caches (the likeliest place for a race, and rounds
/// there are cheap), 40 elsewhere. 1,200 rounds see a race that hits 0.25 % of rounds with 95 %
/// confidence (0.9975¹²⁰⁰ ≈ 0.05).
pub fn rounds(deployment: Deployment) -> usize {
    std::env::var("MATRIX_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(if (0..2).any(|i| deployment.caches(i)) {
            200
        } else {
            40
        })
}

/// A request to one instance, answered with a boxed body so that instances of different
/// store types look alike.
pub type Call =
    Rc<dyn Fn(actix_http::Request) -> LocalBoxFuture<'static, ServiceResponse<BoxBody>>>;

pub fn erase<S, B>(service: S) -> Call
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>
        + 'static,
    B: MessageBody + 'static,
{
    let service = Rc::new(service);
    Rc::new(move |req| {
        let service = Rc::clone(&service);
        Box::pin(async move {
            test::call_service(&*service, req)
                .await
                .map_into_boxed_body()
        })
    })
}

// The app: a user's profile is their id; `/me` answers `"{id} {roles}"`.

#[derive(Deserialize)]
struct Version {
    v: Option<String>,
    /// `1`: the account has a second factor, which is due.
    due: Option<u8>,
}

async fn login(
    session: Session,
    id: web::Path<u64>,
    version: web::Query<Version>,
) -> Result<HttpResponse, Error> {
    let mut login = Login::new(id.to_string(), &*id).roles(["user"]);
    if let Some(v) = &version.v {
        login = login.credentials_version(v);
    }
    if version.due == Some(1) {
        login = login.second_factor(SecondFactor::Due);
    }
    session.login_with(login).await?;
    Ok(HttpResponse::Ok().finish())
}

async fn me(user: AuthUser<u64>) -> String {
    format!("{} {}", user.user_id(), user.roles().join(","))
}

async fn admin(_user: AuthUser<u64>) -> &'static str {
    "admin"
}

async fn logout(_user: AuthUser<u64>, session: Session) -> Result<HttpResponse, Error> {
    session.logout().await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn revoke_all(_user: AuthUser<u64>, session: Session) -> Result<HttpResponse, Error> {
    session.revoke_all_sessions().await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn revoke_others(_user: AuthUser<u64>, session: Session) -> Result<HttpResponse, Error> {
    session.revoke_other_sessions().await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The user's password changed to `version`: every other session of theirs ends.
async fn password(
    _user: AuthUser<u64>,
    session: Session,
    version: web::Path<String>,
) -> Result<HttpResponse, Error> {
    session.credentials_changed(version.as_str()).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// An admin's tool, unauthenticated here: user `id` now has only `role`.
async fn set_role(sessions: Sessions, path: web::Path<(u64, String)>) -> Result<String, Error> {
    let (id, role) = path.into_inner();
    let updated = sessions.update_user(&id.to_string(), &id, [role]).await?;
    Ok(updated.to_string())
}

async fn write_note(
    _user: AuthUser<u64>,
    session: Session,
    note: web::Path<u64>,
) -> Result<HttpResponse, Error> {
    session.insert("note", &*note).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn read_note(_user: AuthUser<u64>, session: Session) -> Result<String, Error> {
    Ok(session
        .get::<u64>("note")
        .await?
        .map_or_else(String::new, |n| n.to_string()))
}

/// A sign-in link for user `id`, mailed (in a real app) to `<id>@example.test`: the secret.
async fn issue_link(links: OneTimeLinks, id: web::Path<u64>) -> Result<String, Error> {
    let id = id.to_string();
    let address = format!("{id}@example.test");
    let issued = links
        .issue(
            LinkPurpose::SignIn,
            &id,
            Some(Recipient::new(&id, &address)),
        )
        .await?
        .expect("a known account gets a link");
    Ok(issued.secret().to_owned())
}

/// Uses the sign-in link `secret`: `200` with the user's id, or `410 invalid_link`.
async fn use_link(links: OneTimeLinks, secret: web::Path<String>) -> Result<String, Error> {
    let used = links.consume(LinkPurpose::SignIn, &secret).await?;
    Ok(used.user_id().to_owned())
}

/// The TOTP secret of every account of the app.
pub const TOTP_SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

/// Completes a login whose second factor is due with `code`, a TOTP code of [`TOTP_SECRET`]:
/// `200` with the user's id, `401 invalid_code` for a used one.
async fn second_factor(
    req: HttpRequest,
    two_factor: web::Data<TwoFactor>,
    session: Session,
    code: web::Path<String>,
) -> Result<String, Error> {
    let Some(id) = session.pending_second_factor().await? else {
        return Err(Error::Unauthenticated);
    };
    let enrolled = Enrolled::new(&id, Some(TOTP_SECRET), &[]);
    two_factor.verify(&req, &enrolled, &code).await?;
    session.complete_second_factor().await?;
    Ok(id)
}

async fn instance(
    store: impl SessionStore,
    counters: impl ThrottleStore,
    users: &web::Data<Users>,
) -> Call {
    erase(
        test::init_service(
            App::new()
                .app_data(web::Data::new(TwoFactor::new(counters)))
                .app_data(web::Data::new(super::passkeys::passkeys()))
                .app_data(users.clone())
                .configure(super::passkeys::routes)
                .route("/second-factor/{code}", web::post().to(second_factor))
                .wrap(LoginMiddleware::new(store))
                .route("/login/{id}", web::post().to(login))
                .route("/me", web::get().to(me))
                .service(
                    web::resource("/admin")
                        .wrap(Require::role("admin"))
                        .route(web::get().to(admin)),
                )
                .route("/logout", web::post().to(logout))
                .route("/revoke-all", web::post().to(revoke_all))
                .route("/revoke-others", web::post().to(revoke_others))
                .route("/password/{version}", web::post().to(password))
                .route("/roles/{id}/{role}", web::post().to(set_role))
                .route("/note/{n}", web::post().to(write_note))
                .route("/note", web::get().to(read_note))
                .route("/link/{id}", web::post().to(issue_link))
                .route("/link/use/{secret}", web::post().to(use_link)),
        )
        .await,
    )
}

// The deployments started once per test binary.

pub fn shared_cluster() -> &'static RedisCluster {
    static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
    CLUSTER.get_or_init(RedisCluster::start)
}

fn shared_sentinel() -> &'static RedisSentinel {
    static SENTINEL: OnceLock<RedisSentinel> = OnceLock::new();
    SENTINEL.get_or_init(RedisSentinel::start)
}

struct TlsRedis {
    certificates: TestCertificates,
    server: Guarded,
}

fn shared_tls() -> &'static TlsRedis {
    static TLS: OnceLock<TlsRedis> = OnceLock::new();
    TLS.get_or_init(|| {
        let certificates = TestCertificates::generate();
        let server = start_tls_server(&certificates);
        TlsRedis {
            certificates,
            server,
        }
    })
}

/// What a test can do to the deployment under the app, and the processes it owns.
enum Backing {
    /// The memory store's fault switch: how many of the next loads fail.
    Memory(Arc<AtomicU32>),
    Redis {
        /// Connections to the data nodes an outage pauses.
        nodes: Vec<redis::Client>,
        /// The private deployment of an app with a cache, whose commands the test counts.
        counted: Option<Counted>,
        /// Processes this app owns, stopped when it is dropped.
        _owned: Vec<Box<dyn std::any::Any>>,
    },
}

/// A private deployment whose data nodes' commands a test counts.
enum Counted {
    Server(RedisServer),
    Deployment(Backend),
}

impl Counted {
    fn counts(&self) -> HashMap<String, u64> {
        match self {
            Counted::Server(server) => server.command_counts(),
            Counted::Deployment(backend) => backend.command_counts(),
        }
    }

    /// What requests sent since `before`, leaving out what a cache's heartbeat and checks send
    /// whatever requests do.
    fn sent_since(&self, before: &HashMap<String, u64>) -> HashMap<String, u64> {
        match self {
            Counted::Server(server) => {
                let mut sent = commands_during_since(server, before);
                sent.remove("ping");
                sent
            }
            Counted::Deployment(backend) => backend.commands_since(before),
        }
    }
}

/// One to two instances of the app on one [`Deployment`].
pub struct TestApp {
    pub deployment: Deployment,
    instances: Vec<Call>,
    backing: Backing,
    /// The user table the instances share: users' passkeys.
    pub users: web::Data<Users>,
}

fn client(url: &str) -> redis::Client {
    redis::Client::open(url).unwrap()
}

fn tls_client(url: &str, certificates: &TestCertificates) -> redis::Client {
    redis::Client::build_with_tls(
        url,
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(certificates.ca_pem()),
        },
    )
    .unwrap()
}

impl TestApp {
    /// The app on `deployment`, sharing the binary's Cluster, Sentinel and TLS servers. The
    /// command timeout is generous: on a shared two-core machine running the whole suite a
    /// command can wait half a second for a core, and these cells test answers, not outages
    /// (a 503 here fails the cell; `spawn_private` is for outages).
    pub async fn spawn(deployment: Deployment) -> Self {
        Self::start(deployment, false, Duration::from_secs(2)).await
    }

    /// The app on a deployment of its own, whose store the test may stop, and with a short
    /// command timeout so that an outage shows quickly.
    pub async fn spawn_private(deployment: Deployment) -> Self {
        Self::start(deployment, true, Duration::from_millis(250)).await
    }

    async fn start(deployment: Deployment, private: bool, timeout: Duration) -> Self {
        let prefix = unique_prefix();
        let configure = |builder: actix_login::RedisStoreBuilder, i: usize| {
            let mut builder = builder
                .key_prefix(&prefix)
                .command_timeout(timeout)
                .connect_timeout(timeout.max(Duration::from_millis(500)));
            if deployment.caches(i) {
                builder = builder.local_cache(1000);
            }
            if deployment == Deployment::PlainOptedOutToCaching && i == 0 {
                builder = builder.peer_caches(false);
            }
            builder
        };
        let mut instances = Vec::new();
        let users = web::Data::new(Users::default());
        let backing = match deployment {
            Deployment::Memory => {
                let store = super::wrapped_store::Wrapped::new(MemoryStore::new());
                let failing = Arc::clone(&store.failing_loads);
                // The second factor's counters beside the wrapped store, in the same memory.
                let counters = store.inner.clone();
                instances.push(instance(store, counters, &users).await);
                Backing::Memory(failing)
            }
            Deployment::OneRedis | Deployment::TwoPlain if !private => {
                let url = shared_redis_url();
                for i in 0..deployment.instances() {
                    let store = configure(RedisStore::builder(&url), i);
                    let store = store.connect().await.unwrap();
                    instances.push(instance(store.clone(), store, &users).await);
                }
                Backing::Redis {
                    nodes: vec![client(&url)],
                    counted: None,
                    _owned: Vec::new(),
                }
            }
            Deployment::OneRedis
            | Deployment::TwoPlain
            | Deployment::TwoCaching
            | Deployment::PlainToCaching
            | Deployment::CachingToPlain
            | Deployment::PlainOptedOutToCaching => {
                let server = RedisServer::start();
                for i in 0..deployment.instances() {
                    let store = configure(RedisStore::builder(server.url()), i);
                    let store = store.connect().await.unwrap();
                    instances.push(instance(store.clone(), store, &users).await);
                }
                Backing::Redis {
                    nodes: vec![client(&server.url())],
                    counted: Some(Counted::Server(server)),
                    _owned: Vec::new(),
                }
            }
            Deployment::Cluster => {
                let mut owned: Vec<Box<dyn std::any::Any>> = Vec::new();
                let urls = if private {
                    let cluster = RedisCluster::start();
                    let urls = cluster.urls();
                    owned.push(Box::new(cluster));
                    urls
                } else {
                    shared_cluster().urls()
                };
                for i in 0..2 {
                    let store = configure(RedisStore::cluster_builder(urls.clone()), i);
                    let store = store.connect().await.unwrap();
                    instances.push(instance(store.clone(), store, &users).await);
                }
                Backing::Redis {
                    nodes: urls.iter().map(|url| client(url)).collect(),
                    counted: None,
                    _owned: owned,
                }
            }
            Deployment::Sentinel => {
                let mut owned: Vec<Box<dyn std::any::Any>> = Vec::new();
                let (sentinels, primary) = if private {
                    let deployment = RedisSentinel::start();
                    let urls = (deployment.sentinel_urls(), deployment.server_url(0));
                    owned.push(Box::new(deployment));
                    urls
                } else {
                    let shared = shared_sentinel();
                    (shared.sentinel_urls(), shared.server_url(0))
                };
                for i in 0..2 {
                    let store =
                        configure(RedisStore::sentinel_builder(sentinels.clone(), SERVICE), i);
                    let store = store.connect().await.unwrap();
                    instances.push(instance(store.clone(), store, &users).await);
                }
                Backing::Redis {
                    nodes: vec![client(&primary)],
                    counted: None,
                    _owned: owned,
                }
            }
            Deployment::ClusterCaching
            | Deployment::ClusterPlainToCaching
            | Deployment::SentinelCaching
            | Deployment::TlsCaching => {
                let kind = match deployment {
                    Deployment::SentinelCaching => Kind::Sentinel,
                    Deployment::TlsCaching => Kind::Tls,
                    _ => Kind::Cluster,
                };
                let backend = Backend::start(kind);
                for i in 0..2 {
                    let store = configure(backend.builder(), i);
                    let store = store.connect().await.unwrap();
                    instances.push(instance(store.clone(), store, &users).await);
                }
                Backing::Redis {
                    nodes: backend.clients(),
                    counted: Some(Counted::Deployment(backend)),
                    _owned: Vec::new(),
                }
            }
            Deployment::Tls => {
                let private_tls = private.then(|| {
                    let certificates = TestCertificates::generate();
                    let server = start_tls_server(&certificates);
                    TlsRedis {
                        certificates,
                        server,
                    }
                });
                let tls = private_tls.as_ref().unwrap_or_else(|| shared_tls());
                let url = format!("rediss://localhost:{}", tls.server.port);
                for i in 0..2 {
                    let store = configure(RedisStore::builder(&url), i)
                        .tls_root_certificate(tls.certificates.ca_pem());
                    let store = store.connect().await.unwrap();
                    instances.push(instance(store.clone(), store, &users).await);
                }
                let nodes = vec![tls_client(&url, &tls.certificates)];
                let owned: Vec<Box<dyn std::any::Any>> = private_tls
                    .into_iter()
                    .map(|tls| Box::new(tls) as Box<dyn std::any::Any>)
                    .collect();
                Backing::Redis {
                    nodes,
                    counted: None,
                    _owned: owned,
                }
            }
        };
        Self {
            deployment,
            instances,
            backing,
            users,
        }
    }

    /// The instance where sessions end (0) and the one that must see it next (the last).
    pub fn pair(&self) -> (usize, usize) {
        (0, self.instances.len() - 1)
    }

    pub fn instances(&self) -> usize {
        self.instances.len()
    }

    pub async fn call(&self, i: usize, req: actix_http::Request) -> ServiceResponse<BoxBody> {
        (self.instances[i])(req).await
    }

    pub async fn get(&self, i: usize, path: &str, token: &str) -> u16 {
        self.call(i, get(path, Some(token))).await.status().as_u16()
    }

    pub async fn post(&self, i: usize, path: &str, token: &str) -> u16 {
        self.call(i, post(path, Some(token)))
            .await
            .status()
            .as_u16()
    }

    /// Status and body of a GET.
    pub async fn read(&self, i: usize, path: &str, token: &str) -> (u16, String) {
        let res = self.call(i, get(path, Some(token))).await;
        let status = res.status().as_u16();
        let body = test::read_body(res).await;
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// The body of a POST that must answer 200.
    pub async fn read_post(&self, i: usize, path: &str, token: &str) -> String {
        let res = self.call(i, post(path, Some(token))).await;
        assert_eq!(res.status(), 200, "POST {path} on instance {i}");
        let body = test::read_body(res).await;
        String::from_utf8_lossy(&body).into_owned()
    }

    /// Logs `user` in on instance `i` (with credentials version `version`, if any) and returns
    /// the token; `None` if the login was refused.
    pub async fn try_log_in(&self, i: usize, user: u64, version: Option<&str>) -> Option<String> {
        let path = match version {
            Some(v) => format!("/login/{user}?v={v}"),
            None => format!("/login/{user}"),
        };
        let res = self.call(i, post(&path, None)).await;
        (res.status() == 200).then(|| {
            set_cookie(&res)
                .expect("a login sets a cookie")
                .value()
                .to_owned()
        })
    }

    /// A login of `user` on instance `i` whose second factor is due: its token.
    pub async fn half_log_in(&self, i: usize, user: u64) -> String {
        let res = self
            .call(i, post(&format!("/login/{user}?due=1"), None))
            .await;
        assert_eq!(res.status(), 200, "a login with the second factor due");
        set_cookie(&res)
            .expect("a login sets a cookie")
            .value()
            .to_owned()
    }

    pub async fn log_in(&self, i: usize, user: u64) -> String {
        self.try_log_in(i, user, None)
            .await
            .expect("the login answered 200")
    }

    /// A passkey ceremony's step on instance `i`: a POST of `path` (see
    /// [`routes`](super::passkeys::routes)) with `cookie`'s session and a JSON `body`.
    pub async fn passkey(
        &self,
        i: usize,
        path: &str,
        cookie: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> Answer {
        Answer::of(
            self.call(i, super::passkeys::request(path, cookie, body))
                .await,
        )
        .await
    }

    /// An admin on instance `i` gives `user` only `role`, on every session of theirs.
    pub async fn set_roles(&self, i: usize, user: u64, role: &str) {
        let res = self
            .call(i, post(&format!("/roles/{user}/{role}"), None))
            .await;
        assert_eq!(res.status(), 200, "update_user failed");
    }

    pub fn caches(&self, i: usize) -> bool {
        self.deployment.caches(i)
    }

    /// Makes instance `i` hold `token`'s session, and, if it caches, proves that its next
    /// request is answered from memory: a request that sends Redis no command at all. A test
    /// of freshness on a caching instance is worthless if the cache was not serving.
    pub async fn warm(&self, i: usize, token: &str) {
        assert_eq!(self.get(i, "/me", token).await, 200, "warming instance {i}");
        if !self.caches(i) {
            return;
        }
        let Backing::Redis {
            counted: Some(server),
            ..
        } = &self.backing
        else {
            unreachable!("a caching deployment is private");
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let before = server.counts();
            assert_eq!(self.get(i, "/me", token).await, 200);
            // Leaving out the cache's heartbeats, which run whatever requests do.
            let sent = server.sent_since(&before);
            if sent.is_empty() {
                return;
            }
            // A heartbeat reply that lands while the count blocks this thread is rightly
            // unread by the next lookup, which then fetches: try again.
            assert!(
                Instant::now() < deadline,
                "instance {i} never answered from its cache: {sent:?}"
            );
            assert_eq!(self.get(i, "/me", token).await, 200);
        }
    }

    /// Makes every store command fail (Redis paused with `CLIENT PAUSE ALL`, or the memory
    /// store's loads failing) until [`end_outage`](Self::end_outage). Returns once even a cache
    /// can no longer vouch for what it holds (its lease is 1 s).
    pub async fn start_outage(&self) {
        match &self.backing {
            Backing::Memory(failing) => failing.store(u32::MAX, Ordering::SeqCst),
            Backing::Redis { nodes, .. } => {
                let caching = (0..self.instances()).any(|i| self.caches(i));
                // Sentinel fails over a primary silent for 1 s; stay below that. A cache needs
                // more than its lease.
                let pause = if caching { 3000 } else { 800 };
                for node in nodes {
                    let mut conn = node
                        .get_connection_with_timeout(Duration::from_secs(2))
                        .unwrap();
                    redis::cmd("CLIENT")
                        .arg("PAUSE")
                        .arg(pause)
                        .arg("ALL")
                        .exec(&mut conn)
                        .unwrap();
                }
                if caching {
                    tokio::time::sleep(Duration::from_millis(1300)).await;
                }
            }
        }
    }

    /// Whether an outage also makes logins fail (the memory store's fault is in loads only).
    pub fn outage_fails_logins(&self) -> bool {
        matches!(self.backing, Backing::Redis { .. })
    }

    pub fn end_outage(&self) {
        match &self.backing {
            Backing::Memory(failing) => failing.store(0, Ordering::SeqCst),
            Backing::Redis { nodes, .. } => {
                for node in nodes {
                    let mut conn = node
                        .get_connection_with_timeout(Duration::from_secs(2))
                        .unwrap();
                    redis::cmd("CLIENT").arg("UNPAUSE").exec(&mut conn).unwrap();
                }
            }
        }
    }
}
