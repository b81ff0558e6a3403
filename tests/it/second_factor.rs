//! The second factor in the crate (`actix_login::two_factor`), through two app instances on
//! one store: memory, one Redis (plain, and with both instances caching) and a Redis Cluster
//! (`second_factor::<test>::<backend>`).
//! Bad paths first: a half-login is no login and ends soon; a code works once, on every
//! instance, also when two race; wrong codes are throttled per account from any address; a
//! recovery code works once; a trusted browser's trust ends with the password; sudo mode asks
//! for the second factor. Then the Redis commands each step costs (`MONITOR`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_login::events::{ActivityKind, EventKind, LoginMethod, SecurityEvent};
use actix_login::store::{SessionStore, ThrottleStore};
use actix_login::throttle::LoginThrottle;
use actix_login::two_factor::{CodeUsed, Enrolled, SecondFactor, TwoFactor};
use actix_login::{
    AuthUser, Error, Login, LoginMiddleware, MemoryStore, RedisStore, Require, Session,
};
use actix_web::http::header;
use actix_web::{test, web, App, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use totp_rs::{Builder, Secret};

use crate::support::deployment::{erase, shared_cluster, Call};
use crate::support::http::redis_session_key;
use crate::support::monitor::Monitor;
use crate::support::redis_server::{connection, shared_redis_url, unique_prefix, RedisServer};

/// The session-data name of a secret waiting for its first code.
const ENROLLING: &str = "totp_enrolling";

#[derive(Default)]
struct Account {
    secret: Option<String>,
    recovery: Vec<String>,
    version: u64,
}

/// The user table both instances share, as they would share a database.
#[derive(Clone, Default)]
struct Db {
    accounts: Arc<Mutex<HashMap<String, Account>>>,
    /// Leave used recovery codes' hashes in place, so that only the store can refuse a reuse.
    keep_used_recovery_codes: bool,
    /// The security events both instances delivered.
    events: Arc<Mutex<Vec<SecurityEvent>>>,
}

impl Db {
    fn events(&self) -> Vec<SecurityEvent> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits for an event of `user_id` that `matches`: the events thread delivers it after
    /// the answer.
    async fn wait_for(&self, user_id: &str, matches: impl Fn(&EventKind) -> bool) -> SecurityEvent {
        for _ in 0..2000 {
            let found = self
                .events()
                .into_iter()
                .find(|e| e.user_id.as_deref() == Some(user_id) && matches(&e.kind));
            if let Some(event) = found {
                return event;
            }
            actix_web::rt::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("no such event of {user_id}: {:?}", self.events());
    }

    fn with<T>(&self, id: &str, f: impl FnOnce(&mut Account) -> T) -> T {
        let mut accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
        f(accounts.entry(id.to_owned()).or_default())
    }
}

#[derive(Clone, Copy)]
struct Settings {
    second_factor_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            second_factor_timeout: Duration::from_secs(300),
        }
    }
}

/// The password was right (the test skips it): log in, with the second factor due for an
/// account that has one, unless the browser is trusted.
async fn login(
    req: HttpRequest,
    id: web::Path<String>,
    throttle: web::Data<LoginThrottle>,
    two_factor: web::Data<TwoFactor>,
    db: web::Data<Db>,
    session: Session,
) -> actix_web::Result<HttpResponse> {
    let (enrolled, version) = db.with(&id, |a| (a.secret.is_some(), a.version.to_string()));
    let attempt = throttle.attempt(&req, &id, Some(&id)).await?;
    let login = Login::new(id.as_str(), &*id).credentials_version(&version);
    if !enrolled {
        let device = attempt.succeeded().await?;
        session.login_with(login).await?;
        return Ok(HttpResponse::Ok()
            .cookie(device)
            .json(json!({ "second_factor_required": false })));
    }
    let verified = two_factor
        .password_verified(&req, attempt, &id, &version)
        .await?;
    let step = verified.second_factor();
    session.login_with(login.second_factor(step)).await?;
    Ok(HttpResponse::Ok()
        .cookie(verified.device_cookie())
        .json(json!({ "second_factor_required": step == SecondFactor::Due })))
}

#[derive(Deserialize)]
struct CodeForm {
    code: String,
    #[serde(default)]
    trust: bool,
    /// A secret to confirm when the session holds none (a session that never enrolled).
    #[serde(default)]
    secret: Option<String>,
}

async fn verify(
    req: &HttpRequest,
    two_factor: &TwoFactor,
    db: &Db,
    id: &str,
    code: &str,
) -> Result<CodeUsed, Error> {
    let (secret, hashes) = db.with(id, |a| (a.secret.clone(), a.recovery.clone()));
    let used = two_factor
        .verify(req, &Enrolled::new(id, secret.as_deref(), &hashes), code)
        .await?;
    if let CodeUsed::RecoveryCode { index } = used {
        if !db.keep_used_recovery_codes {
            db.with(id, |a| a.recovery.remove(index));
        }
    }
    Ok(used)
}

async fn second_factor(
    req: HttpRequest,
    two_factor: web::Data<TwoFactor>,
    db: web::Data<Db>,
    session: Session,
    form: web::Json<CodeForm>,
) -> actix_web::Result<HttpResponse> {
    let Some(id) = session.pending_second_factor().await? else {
        return Err(Error::Unauthenticated.into());
    };
    let used = verify(&req, &two_factor, &db, &id, &form.code).await?;
    session.complete_second_factor().await?;
    let mut res = HttpResponse::Ok();
    if form.trust {
        let version = db.with(&id, |a| a.version.to_string());
        res.cookie(two_factor.trust_browser(&req, &id, version).await?);
    }
    Ok(res.json(json!({ "recovery_code": matches!(used, CodeUsed::RecoveryCode { .. }) })))
}

async fn enroll(
    req: HttpRequest,
    user: AuthUser<String>,
    two_factor: web::Data<TwoFactor>,
    session: Session,
) -> actix_web::Result<HttpResponse> {
    let enrolment = two_factor.enrol(&req, &user).await?;
    session.insert(ENROLLING, enrolment.secret()).await?;
    Ok(HttpResponse::Ok()
        .json(json!({ "secret": enrolment.secret(), "otpauth_url": enrolment.otpauth_url() })))
}

async fn confirm(
    req: HttpRequest,
    user: AuthUser<String>,
    two_factor: web::Data<TwoFactor>,
    db: web::Data<Db>,
    session: Session,
    form: web::Json<CodeForm>,
) -> actix_web::Result<HttpResponse> {
    let Some(secret) = session
        .get::<String>(ENROLLING)
        .await?
        .or(form.secret.clone())
    else {
        return Err(Error::InvalidInput.into());
    };
    let codes = two_factor.confirm(&req, &secret, &form.code).await?;
    db.with(&user, |a| {
        a.secret = Some(secret);
        a.recovery = codes.hashes().to_vec();
    });
    session.remove(ENROLLING).await?;
    session.complete_second_factor().await?;
    Ok(HttpResponse::Ok().json(json!({ "recovery_codes": codes.codes() })))
}

async fn new_recovery_codes(
    req: HttpRequest,
    user: AuthUser<String>,
    two_factor: web::Data<TwoFactor>,
    db: web::Data<Db>,
) -> actix_web::Result<HttpResponse> {
    let codes = two_factor.regenerate_recovery_codes(&req).await?;
    db.with(&user, |a| a.recovery = codes.hashes().to_vec());
    Ok(HttpResponse::Ok().json(json!({ "recovery_codes": codes.codes() })))
}

/// "Don't ask again on this browser" on its own, outside a login.
async fn trust(
    req: HttpRequest,
    user: AuthUser<String>,
    two_factor: web::Data<TwoFactor>,
    db: web::Data<Db>,
) -> actix_web::Result<HttpResponse> {
    let version = db.with(&user, |a| a.version.to_string());
    let cookie = two_factor.trust_browser(&req, &user, version).await?;
    Ok(HttpResponse::NoContent().cookie(cookie).finish())
}

/// The logged-in user (an admin, say) acts as the user `id`.
async fn impersonate(
    _admin: AuthUser<String>,
    session: Session,
    id: web::Path<String>,
) -> actix_web::Result<HttpResponse> {
    session.impersonate(Login::new(id.as_str(), &*id)).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn reauth(_user: AuthUser<String>, session: Session) -> actix_web::Result<HttpResponse> {
    session.reauthenticate().await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn reauth_second_factor(
    req: HttpRequest,
    user: AuthUser<String>,
    two_factor: web::Data<TwoFactor>,
    db: web::Data<Db>,
    session: Session,
    form: web::Json<CodeForm>,
) -> actix_web::Result<HttpResponse> {
    verify(&req, &two_factor, &db, &user, &form.code).await?;
    session.complete_second_factor().await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn change_password(
    user: AuthUser<String>,
    db: web::Data<Db>,
    session: Session,
) -> actix_web::Result<HttpResponse> {
    let version = db.with(&user, |a| {
        a.version += 1;
        a.version
    });
    session.credentials_changed(version.to_string()).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn me(user: AuthUser<String>) -> String {
    user.into_inner()
}

async fn activity(_user: AuthUser<String>, session: Session) -> actix_web::Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(session.activity(None, 50).await?))
}

async fn instance<S>(store: S, db: &Db, settings: Settings) -> Call
where
    S: SessionStore + ThrottleStore + Clone,
{
    let events = db.events.clone();
    let middleware = LoginMiddleware::builder(store.clone())
        .second_factor_timeout(settings.second_factor_timeout)
        .on_event(move |event: &SecurityEvent| {
            events
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(event.clone());
        })
        .build();
    let throttle = web::Data::new(LoginThrottle::new(store.clone()));
    let two_factor = web::Data::new(TwoFactor::new(store).issuer("actix-login tests"));
    erase(
        test::init_service(
            App::new()
                .app_data(throttle)
                .app_data(two_factor)
                .app_data(web::Data::new(db.clone()))
                .route("/login/second-factor", web::post().to(second_factor))
                .route("/login/{id}", web::post().to(login))
                .route("/2fa/enroll", web::post().to(enroll))
                .route("/2fa/confirm", web::post().to(confirm))
                .route("/2fa/recovery-codes", web::post().to(new_recovery_codes))
                .route("/2fa/trust", web::post().to(trust))
                .route("/impersonate/{id}", web::post().to(impersonate))
                .route("/reauth", web::post().to(reauth))
                .route(
                    "/reauth/second-factor",
                    web::post().to(reauth_second_factor),
                )
                .route("/password", web::post().to(change_password))
                .route("/me", web::get().to(me))
                .route("/activity", web::get().to(activity))
                .service(
                    web::resource("/guarded")
                        .wrap(Require::login())
                        .to(HttpResponse::Ok),
                )
                .service(
                    web::resource("/sudo")
                        .wrap(Require::login().fresh())
                        .to(HttpResponse::Ok),
                )
                .wrap(middleware),
        )
        .await,
    )
}

#[derive(Clone, Copy, Debug)]
enum Backend {
    Memory,
    Redis,
    /// Both instances with `local_cache`, on one Redis.
    RedisCaching,
    Cluster,
}

/// Two app instances on one store (each has the user table they share).
struct Twin {
    instances: [Call; 2],
}

impl Twin {
    async fn start(backend: Backend, db: Db, settings: Settings) -> Self {
        let prefix = unique_prefix();
        let instances = match backend {
            Backend::Memory => {
                let store = MemoryStore::new();
                [
                    instance(store.clone(), &db, settings).await,
                    instance(store, &db, settings).await,
                ]
            }
            Backend::Redis => {
                let url = shared_redis_url();
                let connect = || RedisStore::builder(&url).key_prefix(&prefix).connect();
                [
                    instance(connect().await.unwrap(), &db, settings).await,
                    instance(connect().await.unwrap(), &db, settings).await,
                ]
            }
            Backend::RedisCaching => {
                let url = shared_redis_url();
                let connect = || {
                    RedisStore::builder(&url)
                        .key_prefix(&prefix)
                        .local_cache(1000)
                        .connect()
                };
                [
                    instance(connect().await.unwrap(), &db, settings).await,
                    instance(connect().await.unwrap(), &db, settings).await,
                ]
            }
            Backend::Cluster => {
                let urls = shared_cluster().urls();
                let connect = || {
                    RedisStore::cluster_builder(urls.clone())
                        .key_prefix(&prefix)
                        .connect()
                };
                [
                    instance(connect().await.unwrap(), &db, settings).await,
                    instance(connect().await.unwrap(), &db, settings).await,
                ]
            }
        };
        Self { instances }
    }

    async fn new(backend: Backend) -> Self {
        Self::start(backend, Db::default(), Settings::default()).await
    }
}

/// A browser: its cookies and its address.
#[derive(Clone)]
struct Browser {
    cookies: HashMap<String, String>,
    addr: SocketAddr,
}

struct Answer {
    status: u16,
    body: Value,
    retry_after: Option<String>,
}

impl Browser {
    fn at(addr: &str) -> Self {
        Self {
            cookies: HashMap::new(),
            addr: addr.parse().unwrap(),
        }
    }

    fn session(&self) -> Option<String> {
        self.cookies.get("__Host-id").cloned()
    }

    async fn send(
        &mut self,
        app: &Twin,
        i: usize,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        let mut req = match method {
            "GET" => test::TestRequest::get(),
            _ => test::TestRequest::post().insert_header(("sec-fetch-site", "same-origin")),
        }
        .uri(path)
        .peer_addr(self.addr);
        for (name, value) in &self.cookies {
            req = req.cookie(actix_web::cookie::Cookie::new(name.clone(), value.clone()));
        }
        if let Some(body) = body {
            req = req.set_json(body);
        }
        let res = (app.instances[i])(req.to_request()).await;
        for cookie in res.response().cookies() {
            if cookie.value().is_empty() {
                self.cookies.remove(cookie.name());
            } else {
                self.cookies
                    .insert(cookie.name().to_owned(), cookie.value().to_owned());
            }
        }
        let status = res.status().as_u16();
        let retry_after = res
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = test::read_body(res).await;
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Answer {
            status,
            body,
            retry_after,
        }
    }

    async fn post(&mut self, app: &Twin, i: usize, path: &str, body: Value) -> Answer {
        self.send(app, i, "POST", path, Some(body)).await
    }

    async fn get(&mut self, app: &Twin, i: usize, path: &str) -> Answer {
        self.send(app, i, "GET", path, None).await
    }
}

fn error(code: &str) -> Value {
    json!({ "error": code })
}

/// The TOTP code of `secret` for time step `step`.
fn code_at(secret: &str, step: u64) -> String {
    Builder::new()
        .with_secret(Secret::try_from_base32(secret).unwrap())
        .build()
        .unwrap()
        .generate(step * 30)
        .to_string()
}

fn current_step() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 30
}

/// A six-digit code that is none of `secret`'s around now.
fn wrong_code(secret: &str) -> String {
    let step = current_step();
    let valid: Vec<String> = (step - 2..=step + 2).map(|s| code_at(secret, s)).collect();
    (0..)
        .map(|n: u32| format!("{:06}", (n * 7919) % 1_000_000))
        .find(|c| !valid.contains(c))
        .unwrap()
}

/// An enrolled account `id`: logged in on `browser`, through enrolment. Returns the secret, the
/// recovery codes and the step whose code confirmed it (used up); the next step's code is
/// free for the test, and both stay valid for at least 30 seconds.
async fn enrolled(app: &Twin, browser: &mut Browser, id: &str) -> (String, Vec<String>, u64) {
    let res = browser
        .post(app, 0, &format!("/login/{id}"), json!({}))
        .await;
    assert_eq!(
        (res.status, &res.body),
        (200, &json!({ "second_factor_required": false }))
    );
    let res = browser.post(app, 0, "/2fa/enroll", json!({})).await;
    assert_eq!(res.status, 200, "{}", res.body);
    let secret = res.body["secret"].as_str().unwrap().to_owned();
    let url = res.body["otpauth_url"].as_str().unwrap();
    assert!(url.starts_with("otpauth://totp/"), "{url}");
    assert!(url.contains(&format!("secret={secret}")), "{url}");
    let step = current_step();
    let res = browser
        .post(
            app,
            1,
            "/2fa/confirm",
            json!({ "code": code_at(&secret, step) }),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let codes: Vec<String> = serde_json::from_value(res.body["recovery_codes"].clone()).unwrap();
    assert_eq!(codes.len(), 10);
    (secret, codes, step)
}

/// Logs `id` in with the password on a new browser: the second factor is due.
async fn half_login(app: &Twin, id: &str, addr: &str) -> Browser {
    let mut browser = Browser::at(addr);
    let res = browser
        .post(app, 0, &format!("/login/{id}"), json!({}))
        .await;
    assert_eq!(
        (res.status, &res.body),
        (200, &json!({ "second_factor_required": true }))
    );
    browser
}

macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;

            #[actix_web::test]
            async fn memory() {
                super::$name(Backend::Memory).await;
            }

            #[actix_web::test]
            async fn redis() {
                super::$name(Backend::Redis).await;
            }

            #[actix_web::test]
            async fn redis_caching() {
                super::$name(Backend::RedisCaching).await;
            }

            #[actix_web::test]
            async fn cluster() {
                super::$name(Backend::Cluster).await;
            }
        }
    )*};
}

on_every_backend!(
    a_half_login_is_refused_by_auth_user_and_require,
    a_half_login_ends_after_its_timeout,
    a_code_works_once_across_instances,
    of_racing_uses_of_one_code_one_wins,
    wrong_codes_are_throttled_per_account_from_any_address,
    a_recovery_code_works_once,
    a_trusted_browser_skips_the_code_until_the_password_changes,
    sudo_mode_asks_for_the_second_factor,
    new_recovery_codes_need_both_factors_and_replace_the_old_ones,
    second_factor_steps_are_events_and_in_the_activity_log,
    an_impersonator_changes_no_second_factor,
);

/// An admin acting as a user sets up no second factor for them, confirms none, gets no new
/// recovery codes and trusts no browser: `403 impersonating` from the crate itself, whatever
/// guards the route (these routes have no `Require::fresh`).
async fn an_impersonator_changes_no_second_factor(backend: Backend) {
    let app = Twin::new(backend).await;
    let (secret, _, step) = enrolled(&app, &mut Browser::at("192.0.2.1:1"), "ann").await;
    let mut admin = Browser::at("192.0.2.2:1");
    let res = admin.post(&app, 0, "/login/root", json!({})).await;
    assert_eq!(res.status, 200, "{}", res.body);
    let res = admin.post(&app, 1, "/impersonate/ann", json!({})).await;
    assert_eq!(res.status, 204, "{}", res.body);
    assert_eq!(admin.get(&app, 0, "/me").await.body, json!("ann"));

    let code = code_at(&secret, step + 1);
    for (path, body) in [
        ("/2fa/enroll", json!({})),
        ("/2fa/confirm", json!({ "code": code, "secret": secret })),
        ("/2fa/recovery-codes", json!({})),
        ("/2fa/trust", json!({})),
    ] {
        let res = admin.post(&app, 0, path, body).await;
        assert_eq!(
            (res.status, &res.body),
            (403, &error("impersonating")),
            "{path}"
        );
    }
    // The code the confirmation carried was not spent: ann can still use it.
    let mut ann = half_login(&app, "ann", "192.0.2.3:1").await;
    let res = ann
        .post(&app, 1, "/login/second-factor", json!({ "code": code }))
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
}

async fn a_half_login_is_refused_by_auth_user_and_require(backend: Backend) {
    let app = Twin::new(backend).await;
    let (secret, _, step) = enrolled(&app, &mut Browser::at("192.0.2.1:1"), "ann").await;
    let mut browser = half_login(&app, "ann", "192.0.2.2:1").await;
    let half = browser.session().unwrap();
    for i in 0..2 {
        for path in ["/me", "/guarded", "/sudo"] {
            let res = browser.get(&app, i, path).await;
            assert_eq!(
                (res.status, &res.body),
                (401, &error("second_factor_required")),
                "{path} on instance {i}"
            );
        }
        // Nor does it do what a login may.
        let res = browser.post(&app, i, "/reauth", json!({})).await;
        assert_eq!(res.status, 401, "reauth on instance {i}");
        let res = browser.post(&app, i, "/2fa/enroll", json!({})).await;
        assert_eq!(
            (res.status, &res.body),
            (401, &error("second_factor_required"))
        );
    }
    // A wrong code leaves it half.
    let wrong = wrong_code(&secret);
    let res = browser
        .post(&app, 1, "/login/second-factor", json!({ "code": wrong }))
        .await;
    assert_eq!((res.status, &res.body), (401, &error("invalid_code")));
    assert_eq!(browser.get(&app, 0, "/me").await.status, 401);
    // The right one makes it a login, on a new token; the half one is dead.
    let code = code_at(&secret, step + 1);
    let res = browser
        .post(&app, 1, "/login/second-factor", json!({ "code": code }))
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let full = browser.session().unwrap();
    assert_ne!(full, half);
    for i in 0..2 {
        assert_eq!(browser.get(&app, i, "/me").await.body, json!("ann"));
        assert_eq!(browser.get(&app, i, "/guarded").await.status, 200);
    }
    let mut stale = browser.clone();
    stale.cookies.insert("__Host-id".into(), half);
    let res = stale.get(&app, 0, "/me").await;
    assert_eq!((res.status, &res.body), (401, &error("unauthenticated")));
    // Without a half-login there is nothing to complete.
    let mut stranger = Browser::at("192.0.2.3:1");
    let res = stranger
        .post(&app, 0, "/login/second-factor", json!({ "code": code }))
        .await;
    assert_eq!((res.status, &res.body), (401, &error("unauthenticated")));
}

async fn a_half_login_ends_after_its_timeout(backend: Backend) {
    let settings = Settings {
        second_factor_timeout: Duration::from_secs(1),
    };
    let app = Twin::start(backend, Db::default(), settings).await;
    let (secret, _, step) = enrolled(&app, &mut Browser::at("192.0.2.1:1"), "ann").await;
    let mut browser = half_login(&app, "ann", "192.0.2.2:1").await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let code = code_at(&secret, step + 1);
    let res = browser
        .post(&app, 1, "/login/second-factor", json!({ "code": code }))
        .await;
    assert_eq!((res.status, &res.body), (401, &error("unauthenticated")));
    assert_eq!(browser.get(&app, 0, "/me").await.status, 401);
    // The code was not looked at: a new half-login can use it.
    let mut again = half_login(&app, "ann", "192.0.2.2:1").await;
    let res = again
        .post(&app, 0, "/login/second-factor", json!({ "code": code }))
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    // The full login lives by the normal timeouts, not the half-login's second.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(again.get(&app, 1, "/me").await.status, 200);
}

async fn a_code_works_once_across_instances(backend: Backend) {
    let app = Twin::new(backend).await;
    let (secret, _, step) = enrolled(&app, &mut Browser::at("192.0.2.1:1"), "ann").await;
    // The code that confirmed the enrolment is used up too.
    let mut browser = half_login(&app, "ann", "192.0.2.2:1").await;
    let used = code_at(&secret, step);
    let res = browser
        .post(&app, 1, "/login/second-factor", json!({ "code": used }))
        .await;
    assert_eq!((res.status, &res.body), (401, &error("invalid_code")));
    let code = code_at(&secret, step + 1);
    let res = browser
        .post(&app, 0, "/login/second-factor", json!({ "code": code }))
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    // Someone who saw it over the user's shoulder, on the other instance.
    let mut thief = half_login(&app, "ann", "198.51.100.9:1").await;
    let res = thief
        .post(&app, 1, "/login/second-factor", json!({ "code": code }))
        .await;
    assert_eq!((res.status, &res.body), (401, &error("invalid_code")));
    assert_eq!(thief.get(&app, 1, "/me").await.status, 401);
}

async fn of_racing_uses_of_one_code_one_wins(backend: Backend) {
    let app = Twin::new(backend).await;
    let (secret, _, step) = enrolled(&app, &mut Browser::at("192.0.2.1:1"), "ann").await;
    let code = code_at(&secret, step + 1);
    let mut a = half_login(&app, "ann", "192.0.2.2:1").await;
    let mut b = half_login(&app, "ann", "192.0.2.3:1").await;
    let body = json!({ "code": code });
    let (ra, rb) = futures_util::future::join(
        a.post(&app, 0, "/login/second-factor", body.clone()),
        b.post(&app, 1, "/login/second-factor", body.clone()),
    )
    .await;
    let mut statuses = [ra.status, rb.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 401], "{} {}", ra.body, rb.body);
    let logged_in = [
        a.get(&app, 0, "/me").await.status,
        b.get(&app, 1, "/me").await.status,
    ];
    assert_eq!(logged_in.iter().filter(|s| **s == 200).count(), 1);
}

async fn wrong_codes_are_throttled_per_account_from_any_address(backend: Backend) {
    let app = Twin::new(backend).await;
    let (secret, _, step) = enrolled(&app, &mut Browser::at("192.0.2.1:1"), "ann").await;
    let (_, _, _) = enrolled(&app, &mut Browser::at("192.0.2.1:1"), "bob").await;
    let wrong = wrong_code(&secret);
    for n in 0..5 {
        let addr = format!("203.0.113.{}:1", n + 1);
        let mut browser = half_login(&app, "ann", &addr).await;
        let res = browser
            .post(
                &app,
                n % 2,
                "/login/second-factor",
                json!({ "code": wrong }),
            )
            .await;
        assert_eq!(
            (res.status, &res.body),
            (401, &error("invalid_code")),
            "guess {n}"
        );
    }
    // From a sixth address, with the right code: refused before it is looked at.
    let mut owner = half_login(&app, "ann", "192.0.2.200:1").await;
    let code = code_at(&secret, step + 1);
    let res = owner
        .post(&app, 1, "/login/second-factor", json!({ "code": code }))
        .await;
    assert_eq!((res.status, &res.body), (429, &error("too_many_codes")));
    let retry: u64 = res.retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=15 * 60).contains(&retry), "{retry}");
    // Another account is not held up.
    let mut bob = half_login(&app, "bob", "203.0.113.1:1").await;
    let bob_wrong = "abcd-efgh-ijkl-mnop";
    let res = bob
        .post(
            &app,
            0,
            "/login/second-factor",
            json!({ "code": bob_wrong }),
        )
        .await;
    assert_eq!((res.status, &res.body), (401, &error("invalid_code")));
}

async fn a_recovery_code_works_once(backend: Backend) {
    // The table keeps used hashes: the store alone must refuse the second use.
    let db = Db {
        keep_used_recovery_codes: true,
        ..Db::default()
    };
    let app = Twin::start(backend, db, Settings::default()).await;
    let (_, codes, _) = enrolled(&app, &mut Browser::at("192.0.2.1:1"), "ann").await;
    let mut browser = half_login(&app, "ann", "192.0.2.2:1").await;
    // As the user may type it: capitals, spaces for dashes.
    let typed = codes[0].replace('-', " ").to_uppercase();
    let res = browser
        .post(&app, 0, "/login/second-factor", json!({ "code": typed }))
        .await;
    assert_eq!(
        (res.status, &res.body),
        (200, &json!({ "recovery_code": true }))
    );
    assert_eq!(browser.get(&app, 1, "/me").await.status, 200);
    let mut again = half_login(&app, "ann", "192.0.2.3:1").await;
    let res = again
        .post(&app, 1, "/login/second-factor", json!({ "code": codes[0] }))
        .await;
    assert_eq!((res.status, &res.body), (401, &error("invalid_code")));
    // Two racing uses of another: one wins.
    let mut a = half_login(&app, "ann", "192.0.2.4:1").await;
    let mut b = half_login(&app, "ann", "192.0.2.5:1").await;
    let body = json!({ "code": codes[1] });
    let (ra, rb) = futures_util::future::join(
        a.post(&app, 0, "/login/second-factor", body.clone()),
        b.post(&app, 1, "/login/second-factor", body.clone()),
    )
    .await;
    let mut statuses = [ra.status, rb.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 401]);
    // Another account's code is no code for this one.
    let (_, bobs, _) = enrolled(&app, &mut Browser::at("192.0.2.1:1"), "bob").await;
    let mut c = half_login(&app, "ann", "192.0.2.6:1").await;
    let res = c
        .post(&app, 0, "/login/second-factor", json!({ "code": bobs[0] }))
        .await;
    assert_eq!((res.status, &res.body), (401, &error("invalid_code")));
}

async fn a_trusted_browser_skips_the_code_until_the_password_changes(backend: Backend) {
    let app = Twin::new(backend).await;
    let (secret, codes, step) = enrolled(&app, &mut Browser::at("192.0.2.1:1"), "ann").await;
    let mut browser = half_login(&app, "ann", "192.0.2.2:1").await;
    // Completing without asking to be trusted trusts nothing.
    let res = browser
        .post(&app, 0, "/login/second-factor", json!({ "code": codes[2] }))
        .await;
    assert_eq!(res.status, 200);
    let res = browser.post(&app, 1, "/login/ann", json!({})).await;
    assert_eq!(res.body, json!({ "second_factor_required": true }));
    let code = code_at(&secret, step + 1);
    let res = browser
        .post(
            &app,
            1,
            "/login/second-factor",
            json!({ "code": code, "trust": true }),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    // The next logins on this browser skip the code, on either instance, and the device
    // cookie each login renews keeps the trust.
    for i in [0, 1, 0] {
        let res = browser.post(&app, i, "/login/ann", json!({})).await;
        assert_eq!(
            res.body,
            json!({ "second_factor_required": false }),
            "login on {i}"
        );
        assert_eq!(browser.get(&app, i, "/me").await.status, 200);
        // A login that skipped the second factor is not enough for sudo mode.
        let res = browser.get(&app, i, "/sudo").await;
        assert_eq!(
            (res.status, &res.body),
            (403, &error("second_factor_reauth_required"))
        );
    }
    // The trust is the device cookie's: another browser, or this one without it, is asked.
    half_login(&app, "ann", "192.0.2.2:1").await;
    let mut copied = Browser::at("192.0.2.9:1");
    copied
        .cookies
        .insert("__Host-device".into(), "A".repeat(43));
    let res = copied.post(&app, 0, "/login/ann", json!({})).await;
    assert_eq!(res.body, json!({ "second_factor_required": true }));
    // A password change ends it.
    let res = browser.post(&app, 0, "/password", json!({})).await;
    assert_eq!(res.status, 204);
    let res = browser.post(&app, 1, "/login/ann", json!({})).await;
    assert_eq!(res.body, json!({ "second_factor_required": true }));
}

async fn sudo_mode_asks_for_the_second_factor(backend: Backend) {
    let app = Twin::new(backend).await;
    let mut browser = Browser::at("192.0.2.1:1");
    let (secret, _, step) = enrolled(&app, &mut browser, "ann").await;
    // Enrolment proved both factors just now.
    assert_eq!(browser.get(&app, 0, "/sudo").await.status, 200);
    // The password alone, again: fresh, but not enough on an account with a second factor.
    assert_eq!(
        browser.post(&app, 1, "/reauth", json!({})).await.status,
        204
    );
    let res = browser.get(&app, 0, "/sudo").await;
    assert_eq!(
        (res.status, &res.body),
        (403, &error("second_factor_reauth_required"))
    );
    assert_eq!(browser.get(&app, 0, "/me").await.status, 200);
    let wrong = wrong_code(&secret);
    let res = browser
        .post(&app, 0, "/reauth/second-factor", json!({ "code": wrong }))
        .await;
    assert_eq!((res.status, &res.body), (401, &error("invalid_code")));
    let before = browser.session();
    let code = code_at(&secret, step + 1);
    let res = browser
        .post(&app, 0, "/reauth/second-factor", json!({ "code": code }))
        .await;
    assert_eq!(res.status, 204, "{}", res.body);
    assert_ne!(browser.session(), before, "a new token");
    assert_eq!(browser.get(&app, 1, "/sudo").await.status, 200);
    // An account without a second factor: the password is enough, as before.
    let mut bob = Browser::at("192.0.2.5:1");
    bob.post(&app, 0, "/login/bob", json!({})).await;
    assert_eq!(bob.get(&app, 1, "/sudo").await.status, 200);
    assert_eq!(bob.post(&app, 1, "/reauth", json!({})).await.status, 204);
    assert_eq!(bob.get(&app, 0, "/sudo").await.status, 200);
}

async fn new_recovery_codes_need_both_factors_and_replace_the_old_ones(backend: Backend) {
    let app = Twin::new(backend).await;
    let mut browser = Browser::at("192.0.2.1:1");
    let (_, old, _) = enrolled(&app, &mut browser, "ann").await;
    // The password alone, again: not enough for new codes.
    browser.post(&app, 1, "/reauth", json!({})).await;
    let res = browser
        .post(&app, 0, "/2fa/recovery-codes", json!({}))
        .await;
    assert_eq!(
        (res.status, &res.body),
        (403, &error("second_factor_reauth_required"))
    );
    let res = browser
        .post(&app, 0, "/reauth/second-factor", json!({ "code": old[0] }))
        .await;
    assert_eq!(res.status, 204, "{}", res.body);
    let res = browser
        .post(&app, 1, "/2fa/recovery-codes", json!({}))
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let new: Vec<String> = serde_json::from_value(res.body["recovery_codes"].clone()).unwrap();
    assert_eq!(new.len(), 10);
    assert!(new.iter().all(|code| !old.contains(code)));
    // The old set is gone, the new one works.
    let mut half = half_login(&app, "ann", "192.0.2.2:1").await;
    let res = half
        .post(&app, 0, "/login/second-factor", json!({ "code": old[1] }))
        .await;
    assert_eq!((res.status, &res.body), (401, &error("invalid_code")));
    let res = half
        .post(&app, 1, "/login/second-factor", json!({ "code": new[0] }))
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    // A half-login cannot ask for codes.
    let mut other = half_login(&app, "ann", "192.0.2.3:1").await;
    let res = other.post(&app, 0, "/2fa/recovery-codes", json!({})).await;
    assert_eq!(
        (res.status, &res.body),
        (401, &error("second_factor_required"))
    );
}

/// Each second-factor step is a security event, and the account's activity log shows what
/// its owner should see (a wrong code, as a wrong password); a login completed through the
/// second factor says whether its browser was new, as a password login does.
async fn second_factor_steps_are_events_and_in_the_activity_log(backend: Backend) {
    use metrics_exporter_prometheus::PrometheusBuilder;
    // The metrics of this test's thread only: other tests count elsewhere.
    let recorder = PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    let _recording = ::metrics::set_default_local_recorder(&recorder);
    let db = Db::default();
    let app = Twin::start(backend, db.clone(), Settings::default()).await;
    let (secret, _, step) = enrolled(&app, &mut Browser::at("192.0.2.1:1"), "ann").await;
    db.wait_for("ann", |k| matches!(k, EventKind::SecondFactorEnrolled))
        .await;

    // A browser new to the account: a wrong code, then the right one, trusting the browser.
    let mut browser = half_login(&app, "ann", "203.0.113.7:1").await;
    let wrong = wrong_code(&secret);
    let res = browser
        .post(&app, 0, "/login/second-factor", json!({ "code": wrong }))
        .await;
    assert_eq!((res.status, &res.body), (401, &error("invalid_code")));
    let failed = db
        .wait_for("ann", |k| matches!(k, EventKind::SecondFactorFailed))
        .await;
    assert_eq!(failed.ip.as_deref(), Some("203.0.113.7"));
    let code = code_at(&secret, step + 1);
    let res = browser
        .post(
            &app,
            1,
            "/login/second-factor",
            json!({ "code": code, "trust": true }),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    db.wait_for("ann", |k| {
        matches!(
            k,
            EventKind::SecondFactorSucceeded {
                recovery_code: false
            }
        )
    })
    .await;
    let login = db
        .wait_for("ann", |k| {
            matches!(
                k,
                EventKind::LoginSucceeded {
                    new_device: true,
                    ..
                }
            )
        })
        .await;
    let EventKind::LoginSucceeded { method, .. } = login.kind else {
        unreachable!()
    };
    assert_eq!(method, LoginMethod::Password);
    db.wait_for("ann", |k| matches!(k, EventKind::BrowserTrusted))
        .await;
    let res = browser
        .post(&app, 0, "/2fa/recovery-codes", json!({}))
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    db.wait_for("ann", |k| matches!(k, EventKind::RecoveryCodesRegenerated))
        .await;

    // The log, newest first.
    let res = browser.get(&app, 1, "/activity").await;
    assert_eq!(res.status, 200, "{}", res.body);
    let kinds: Vec<ActivityKind> = res.body.as_array().unwrap()[..5]
        .iter()
        .map(|entry| serde_json::from_value(entry["type"].clone()).unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            ActivityKind::RecoveryCodesRegenerated,
            ActivityKind::BrowserTrusted,
            ActivityKind::NewDevice,
            ActivityKind::SecondFactorFailed,
            ActivityKind::SecondFactorEnrolled,
        ],
        "{}",
        res.body
    );
    assert_eq!(res.body[2]["method"], json!("password"), "{}", res.body);

    // Guessing on: refused by the limit before the code is looked at, an event too.
    let mut guesser = half_login(&app, "ann", "203.0.113.8:1").await;
    let mut throttled = false;
    for _ in 0..6 {
        let res = guesser
            .post(&app, 0, "/login/second-factor", json!({ "code": wrong }))
            .await;
        if res.status == 429 {
            throttled = true;
            break;
        }
    }
    assert!(throttled, "five wrong codes are the limit");
    let event = db
        .wait_for("ann", |k| {
            matches!(k, EventKind::SecondFactorThrottled { retry_after_secs } if *retry_after_secs >= 1)
        })
        .await;
    assert_eq!(event.ip.as_deref(), Some("203.0.113.8"));

    // Each step is counted, as the `events` module's table names it.
    let text = metrics.render();
    for expected in [
        r#"actix_login_second_factor_codes_total{result="success"} 1"#,
        r#"actix_login_second_factor_codes_total{result="failure"} "#,
        r#"actix_login_second_factor_codes_total{result="throttled"} 1"#,
        r#"actix_login_second_factor_changes_total{change="enrolled"} 1"#,
        r#"actix_login_second_factor_changes_total{change="recovery_codes_regenerated"} 1"#,
        r#"actix_login_second_factor_changes_total{change="browser_trusted"} 1"#,
    ] {
        assert!(text.contains(expected), "{expected} missing from\n{text}");
    }
}

/// The commands each step sends one Redis, for the README and the report.
#[actix_web::test]
async fn each_step_costs_these_redis_commands() {
    let server = RedisServer::start();
    let store = RedisStore::builder(server.url()).connect().await.unwrap();
    let db = Db::default();
    let app = Twin {
        instances: [
            instance(store.clone(), &db, Settings::default()).await,
            instance(store, &db, Settings::default()).await,
        ],
    };
    let mut browser = Browser::at("192.0.2.1:1");
    let (secret, codes, step) = enrolled(&app, &mut browser, "ann").await;
    // Loads every script once, as a long-running server has long before.
    let res = browser.post(&app, 0, "/login/ann", json!({})).await;
    assert_eq!(res.status, 200);
    let res = browser
        .post(
            &app,
            0,
            "/login/second-factor",
            json!({ "code": codes[0], "trust": true }),
        )
        .await;
    assert_eq!(res.status, 200);
    let monitor = Monitor::start(&server);

    // Trusted: the login reads the trust, renews the device cookie and moves the trust.
    browser.post(&app, 0, "/login/ann", json!({})).await;
    let trusted_login = monitor.take();

    let mut other = Browser::at("192.0.2.2:1");
    other.post(&app, 0, "/login/ann", json!({})).await;
    let pending_login = monitor.take();

    let wrong = wrong_code(&secret);
    other
        .post(&app, 0, "/login/second-factor", json!({ "code": wrong }))
        .await;
    let wrong_code_step = monitor.take();

    let code = code_at(&secret, step + 1);
    let res = other
        .post(&app, 0, "/login/second-factor", json!({ "code": code }))
        .await;
    assert_eq!(res.status, 200);
    let completion = monitor.take();
    // The record's note of both factors keeps the session a compact hash.
    let key = redis_session_key("actix-login", &other.session().unwrap());
    let encoding: String = redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg(&key)
        .query(&mut connection(&server.url()).unwrap())
        .unwrap();
    assert_eq!(encoding, "listpack");
    monitor.take();

    let mut third = Browser::at("192.0.2.3:1");
    third.post(&app, 0, "/login/ann", json!({})).await;
    monitor.take();
    let res = third
        .post(&app, 0, "/login/second-factor", json!({ "code": codes[1] }))
        .await;
    assert_eq!(res.status, 200);
    let recovery = monitor.take();

    println!("trusted login: {trusted_login:?}");
    println!("login, second factor due: {pending_login:?}");
    println!("wrong code: {wrong_code_step:?}");
    println!("right TOTP code and completion: {completion:?}");
    println!("recovery code and completion: {recovery:?}");
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // The throttle's password attempt and device cookie (script, DEL, script, script), the
    // trust read, the old device token's and trust's DELs, the new trust (script); then the
    // login as ever (the old session read with its data, the rotation script, the credentials
    // version, the cap's listing with the activity log's entry beside it).
    assert_eq!(
        trusted_login,
        strings(&[
            "evalsha", "evalsha", "del", "evalsha", "del", "evalsha", "hmget", "evalsha", "get",
            "hkeys", "lpush", "ltrim", "pexpire", "hmget"
        ]),
        "a trusted browser's login"
    );
    // The throttle as for any password login, then the half-login's record and the
    // credentials version; no cap to apply to a half-login. (With a device cookie that
    // carries no trust, one more script reads that.)
    assert_eq!(
        pending_login,
        strings(&["evalsha", "del", "evalsha", "evalsha", "evalsha", "get"]),
        "a login with the second factor due"
    );
    // The session, with its data; the wrong-code counter. No claim for a wrong code. The
    // activity log's `second_factor_failed` entry.
    assert_eq!(
        wrong_code_step,
        strings(&["hmget", "evalsha", "lpush", "ltrim", "pexpire"]),
        "a wrong code"
    );
    // The session, the counter, the claim, the counter's release; then the rotation to the
    // new token and the cap's listing (an index read and one HMGET per session), with the
    // activity log's entry for the login beside it.
    let code_and_rotation = strings(&[
        "hmget", "evalsha", "set", "evalsha", "evalsha", "hkeys", "lpush", "ltrim", "pexpire",
    ]);
    assert_eq!(completion[..9], code_and_rotation[..], "{completion:?}");
    assert!(
        completion[9..].iter().all(|c| c == "hmget"),
        "{completion:?}"
    );
    assert_eq!(recovery[..9], code_and_rotation[..], "{recovery:?}");
    assert!(recovery[9..].iter().all(|c| c == "hmget"), "{recovery:?}");
}
