//! The OAuth example as a process, logging in through a fake provider that each test starts in
//! its own process: an authorization endpoint that hands out codes bound to the PKCE challenge
//! it was shown, a token endpoint that checks the client, the code and the verifier, and a
//! user-info endpoint. Every scenario runs on the in-memory store and on Redis.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use awc::http::StatusCode;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use oauth2::url::Url;
use sha2::{Digest, Sha256};

use crate::support::example::{free_port, Example};
use crate::support::redis_server::{dump, shared_redis_url, unique_prefix};

const CLIENT_ID: &str = "example-client";
const CLIENT_SECRET: &str = "example-secret";
const SUB: &str = "user-8f14e45f";
const NAME: &str = "Ada Lovelace";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// Authorizes, and issues tokens for valid requests.
    Grant,
    /// The user refuses: the authorization endpoint redirects with `error=access_denied`.
    Deny,
    /// The token endpoint answers 500 with a body that is no OAuth error.
    TokenFails,
}

/// A code the authorization endpoint issued and the token endpoint has not yet seen.
struct Grant {
    challenge: String,
    redirect_uri: String,
}

struct ProviderState {
    mode: Mode,
    next: u64,
    codes: HashMap<String, Grant>,
    tokens: HashMap<String, String>,
    /// Requests that reached the token endpoint.
    token_calls: u32,
    /// Why the token endpoint refused, one entry per refusal.
    rejections: Vec<&'static str>,
    /// The `code_verifier` of every token request.
    verifiers: Vec<String>,
}

type Shared = Arc<Mutex<ProviderState>>;

fn lock(state: &Mutex<ProviderState>) -> std::sync::MutexGuard<'_, ProviderState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

struct FakeProvider {
    base: String,
    state: Shared,
    handle: ServerHandle,
}

impl FakeProvider {
    async fn start(mode: Mode) -> Self {
        let state = Arc::new(Mutex::new(ProviderState {
            mode,
            next: 0,
            codes: HashMap::new(),
            tokens: HashMap::new(),
            token_calls: 0,
            rejections: Vec::new(),
            verifiers: Vec::new(),
        }));
        let data = web::Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/authorize", web::get().to(authorize))
                .route("/token", web::post().to(token))
                .route("/userinfo", web::get().to(userinfo))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(0)
        .bind(("127.0.0.1", 0))
        .expect("bind the fake provider");
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        FakeProvider {
            base: format!("http://127.0.0.1:{port}"),
            state,
            handle,
        }
    }

    /// The example's settings for this provider.
    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("OAUTH_AUTH_URL".into(), format!("{}/authorize", self.base)),
            ("OAUTH_TOKEN_URL".into(), format!("{}/token", self.base)),
            (
                "OAUTH_USERINFO_URL".into(),
                format!("{}/userinfo", self.base),
            ),
            ("OAUTH_CLIENT_ID".into(), CLIENT_ID.into()),
            ("OAUTH_CLIENT_SECRET".into(), CLIENT_SECRET.into()),
        ]
    }

    fn token_calls(&self) -> u32 {
        lock(&self.state).token_calls
    }

    fn rejections(&self) -> Vec<&'static str> {
        lock(&self.state).rejections.clone()
    }

    fn verifiers(&self) -> Vec<String> {
        lock(&self.state).verifiers.clone()
    }

    /// Stops answering: its port refuses connections from now on.
    async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        // The stop command is sent at once; nothing needs to wait for it.
        drop(self.handle.stop(false));
    }
}

fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

async fn authorize(
    state: web::Data<Mutex<ProviderState>>,
    query: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let param = |name: &str| query.get(name).cloned().unwrap_or_default();
    let (Some(redirect), Some(client_state)) = (query.get("redirect_uri"), query.get("state"))
    else {
        return HttpResponse::BadRequest().body("redirect_uri and state are required");
    };
    if param("response_type") != "code"
        || param("client_id") != CLIENT_ID
        || param("code_challenge_method") != "S256"
        || param("code_challenge").len() != 43
    {
        return HttpResponse::BadRequest().body(format!("bad authorization request: {query:?}"));
    }
    let Ok(mut location) = Url::parse(redirect) else {
        return HttpResponse::BadRequest().body("redirect_uri is no URL");
    };
    let mut provider = lock(&state);
    if provider.mode == Mode::Deny {
        location
            .query_pairs_mut()
            .append_pair("error", "access_denied")
            .append_pair("state", client_state);
    } else {
        provider.next += 1;
        let code = format!("code-{}", provider.next);
        provider.codes.insert(
            code.clone(),
            Grant {
                challenge: param("code_challenge"),
                redirect_uri: redirect.clone(),
            },
        );
        location
            .query_pairs_mut()
            .append_pair("code", &code)
            .append_pair("state", client_state);
    }
    HttpResponse::SeeOther()
        .insert_header(("location", location.as_str()))
        .finish()
}

fn oauth_error(status: StatusCode, code: &str) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({ "error": code }))
}

async fn token(
    req: HttpRequest,
    state: web::Data<Mutex<ProviderState>>,
    form: web::Form<HashMap<String, String>>,
) -> HttpResponse {
    let mut provider = lock(&state);
    provider.token_calls += 1;
    if provider.mode == Mode::TokenFails {
        return HttpResponse::InternalServerError().body("the token service is having a bad day");
    }
    let expected = format!(
        "Basic {}",
        STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    let authorized = req
        .headers()
        .get("authorization")
        .is_some_and(|value| value.as_bytes() == expected.as_bytes());
    if !authorized {
        provider.rejections.push("client");
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    let param = |name: &str| form.get(name).cloned().unwrap_or_default();
    if param("grant_type") != "authorization_code" {
        provider.rejections.push("grant_type");
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    }
    let verifier = param("code_verifier");
    provider.verifiers.push(verifier.clone());
    // A code is good for one request, whatever its outcome (RFC 6749, 4.1.2).
    let Some(grant) = provider.codes.remove(&param("code")) else {
        provider.rejections.push("code");
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
    };
    if grant.redirect_uri != param("redirect_uri") {
        provider.rejections.push("redirect_uri");
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
    }
    if s256(&verifier) != grant.challenge {
        provider.rejections.push("pkce");
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
    }
    provider.next += 1;
    let access_token = format!("at-{}", provider.next);
    provider.tokens.insert(access_token.clone(), SUB.to_owned());
    HttpResponse::Ok().json(serde_json::json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": 3600,
    }))
}

async fn userinfo(req: HttpRequest, state: web::Data<Mutex<ProviderState>>) -> HttpResponse {
    let provider = lock(&state);
    let sub = req
        .headers()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .and_then(|token| provider.tokens.get(token));
    match sub {
        Some(sub) => HttpResponse::Ok().json(serde_json::json!({ "sub": sub, "name": NAME })),
        None => HttpResponse::Unauthorized().finish(),
    }
}

#[derive(Clone, Copy, Debug)]
enum Store {
    Memory,
    Redis,
}

/// The example on `store`, talking to `provider`, with `extra` settings on top.
struct Setup {
    app: Example,
    /// The Redis URL and key prefix, on Redis.
    redis: Option<(String, String)>,
}

fn start(store: Store, provider: &FakeProvider, extra: &[(&str, String)]) -> Setup {
    let mut env = provider.env();
    let redis = match store {
        Store::Memory => None,
        Store::Redis => {
            let (url, prefix) = (shared_redis_url(), unique_prefix());
            env.push(("REDIS_URL".into(), url.clone()));
            env.push(("REDIS_KEY_PREFIX".into(), prefix.clone()));
            Some((url, prefix))
        }
    };
    for (name, value) in extra {
        env.retain(|(key, _)| key != name);
        env.push(((*name).to_owned(), value.clone()));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let app = Example::start("oauth", &env);
    // The Redis runs would prove nothing if the example quietly kept sessions in memory.
    let expected = match store {
        Store::Memory => "session store: in memory",
        Store::Redis => "session store: Redis",
    };
    assert!(app.banner.contains(expected), "{}", app.banner);
    Setup { app, redis }
}

/// What the tests look at in a response.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    location: Option<String>,
    /// The value of the `__Host-id` cookie it sets; empty when it clears it.
    cookie: Option<String>,
    body: String,
}

fn client() -> awc::Client {
    // Redirects are the subject of these tests: each one is looked at, and followed by hand.
    awc::Client::builder()
        .disable_redirects()
        .timeout(Duration::from_secs(60))
        .finish()
}

async fn send(req: awc::ClientRequest, cookie: Option<&str>) -> Reply {
    let req = match cookie {
        Some(token) => req.insert_header(("cookie", format!("__Host-id={token}"))),
        None => req,
    };
    let mut res = req.send().await.expect("request");
    let header = |name: &str| {
        res.headers()
            .get(name)
            .map(|value| value.to_str().expect("ASCII header").to_owned())
    };
    let location = header("location");
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .filter_map(|value| value.to_str().ok())
        .find_map(|value| value.strip_prefix("__Host-id="))
        .map(|rest| rest.split(';').next().unwrap_or_default().to_owned());
    let body = res.body().await.expect("body");
    Reply {
        status: res.status(),
        location,
        cookie,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

async fn get(url: &str, cookie: Option<&str>) -> Reply {
    send(client().get(url), cookie).await
}

/// `GET /login` as a visitor without a session: the anonymous session's cookie, and the
/// provider's authorization URL.
async fn begin(app: &Example, provider: &FakeProvider) -> (String, Url) {
    let reply = get(&app.url("/login"), None).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{reply:?}");
    let cookie = reply.cookie.clone().expect("/login starts a session");
    assert!(!cookie.is_empty(), "{reply:?}");
    let location = reply.location.expect("/login redirects");
    let url = Url::parse(&location).expect("an absolute URL");
    assert!(
        location.starts_with(&format!("{}/authorize?", provider.base)),
        "{location}"
    );
    (cookie, url)
}

/// The browser at the provider: where the provider sends it back.
async fn consent(authorize_url: &Url) -> Url {
    let reply = get(authorize_url.as_str(), None).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{reply:?}");
    Url::parse(&reply.location.expect("the provider redirects")).expect("an absolute URL")
}

fn param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// `url` with its query replaced by `pairs`.
fn with_query(url: &Url, pairs: &[(&str, &str)]) -> String {
    let mut url = url.clone();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    url.into()
}

async fn me(app: &Example, cookie: &str) -> Reply {
    get(&app.url("/me"), Some(cookie)).await
}

fn assert_refused(reply: &Reply, status: StatusCode, code: &str) {
    assert_eq!(reply.status, status, "{reply:?}");
    let body: serde_json::Value = serde_json::from_str(&reply.body).expect("a JSON error");
    assert_eq!(body, serde_json::json!({ "error": code }), "{reply:?}");
    // Nobody was logged in: no new session token went out.
    assert!(
        reply.cookie.as_deref().is_none_or(str::is_empty),
        "{reply:?}"
    );
}

async fn happy_path(store: Store) {
    let provider = FakeProvider::start(Mode::Grant).await;
    let Setup { app, .. } = start(store, &provider, &[]);
    let (anonymous, authorize_url) = begin(&app, &provider).await;
    assert_eq!(
        param(&authorize_url, "code_challenge_method").as_deref(),
        Some("S256")
    );
    let state = param(&authorize_url, "state").expect("a state");
    assert!(state.len() >= 22, "{state}");
    // Holding data is no login.
    assert_eq!(me(&app, &anonymous).await.status, StatusCode::UNAUTHORIZED);

    let callback = consent(&authorize_url).await;
    assert_eq!(
        callback.as_str().split('?').next(),
        Some(format!("http://127.0.0.1:{}/callback", app.port).as_str()),
        "the default redirect URL is the example's own /callback"
    );
    let reply = get(callback.as_str(), Some(&anonymous)).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{reply:?}");
    assert_eq!(reply.location.as_deref(), Some("/"));
    let session = reply.cookie.expect("the login sets a cookie");
    assert!(!session.is_empty() && session != anonymous, "{session}");
    // The provider saw the verifier of the challenge /login sent.
    let challenge = param(&authorize_url, "code_challenge").expect("a challenge");
    assert_eq!(
        provider
            .verifiers()
            .iter()
            .map(|v| s256(v))
            .collect::<Vec<_>>(),
        [challenge]
    );

    let reply = me(&app, &session).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let profile: serde_json::Value = serde_json::from_str(&reply.body).expect("JSON");
    assert_eq!(profile["sub"], SUB);
    assert_eq!(profile["name"], NAME);
    // The anonymous session ended with the login: its token is worth nothing now.
    assert_eq!(me(&app, &anonymous).await.status, StatusCode::UNAUTHORIZED);
    let home = get(&app.url("/"), Some(&session)).await;
    assert!(home.body.contains(NAME), "{home:?}");

    let reply = send(
        client()
            .post(app.url("/logout"))
            .insert_header(("origin", app.base.as_str())),
        Some(&session),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{reply:?}");
    assert_eq!(
        reply.cookie.as_deref(),
        Some(""),
        "logout clears the cookie"
    );
    assert_eq!(me(&app, &session).await.status, StatusCode::UNAUTHORIZED);
}

#[actix_web::test]
async fn happy_path_on_memory() {
    happy_path(Store::Memory).await;
}

#[actix_web::test]
async fn happy_path_on_redis() {
    happy_path(Store::Redis).await;
}

async fn state_must_match(store: Store) {
    let provider = FakeProvider::start(Mode::Grant).await;
    let Setup { app, .. } = start(store, &provider, &[]);

    // A forged state; then the genuine callback, which finds its pending login used up: a
    // callback, good or bad, is the only one for its /login.
    let (cookie, authorize_url) = begin(&app, &provider).await;
    let callback = consent(&authorize_url).await;
    let code = param(&callback, "code").expect("a code");
    let forged = with_query(&callback, &[("code", &code), ("state", "forged")]);
    assert_refused(
        &get(&forged, Some(&cookie)).await,
        StatusCode::BAD_REQUEST,
        "invalid_state",
    );
    assert_refused(
        &get(callback.as_str(), Some(&cookie)).await,
        StatusCode::BAD_REQUEST,
        "invalid_state",
    );
    assert_eq!(me(&app, &cookie).await.status, StatusCode::UNAUTHORIZED);

    // No state at all.
    let (cookie, authorize_url) = begin(&app, &provider).await;
    let callback = consent(&authorize_url).await;
    let code = param(&callback, "code").expect("a code");
    let stateless = with_query(&callback, &[("code", &code)]);
    assert_refused(
        &get(&stateless, Some(&cookie)).await,
        StatusCode::BAD_REQUEST,
        "invalid_state",
    );
    assert_eq!(me(&app, &cookie).await.status, StatusCode::UNAUTHORIZED);

    // The right state and code in a browser that did not start the login (login CSRF: an
    // attacker's own callback sent to a victim), with or without a session of its own.
    let (_, authorize_url) = begin(&app, &provider).await;
    let callback = consent(&authorize_url).await;
    assert_refused(
        &get(callback.as_str(), None).await,
        StatusCode::BAD_REQUEST,
        "invalid_state",
    );
    let (other, _) = begin(&app, &provider).await;
    assert_refused(
        &get(callback.as_str(), Some(&other)).await,
        StatusCode::BAD_REQUEST,
        "invalid_state",
    );
    assert_eq!(me(&app, &other).await.status, StatusCode::UNAUTHORIZED);

    // None of it reached the token endpoint.
    assert_eq!(provider.token_calls(), 0);
}

#[actix_web::test]
async fn state_must_match_on_memory() {
    state_must_match(Store::Memory).await;
}

#[actix_web::test]
async fn state_must_match_on_redis() {
    state_must_match(Store::Redis).await;
}

async fn callback_works_once(store: Store) {
    let provider = FakeProvider::start(Mode::Grant).await;
    let Setup { app, .. } = start(store, &provider, &[]);
    let (anonymous, authorize_url) = begin(&app, &provider).await;
    let callback = consent(&authorize_url).await;

    // The same callback four times at once, as a double click or an attacker racing the user.
    let replies =
        futures_util::future::join_all((0..4).map(|_| get(callback.as_str(), Some(&anonymous))))
            .await;
    let (logged_in, refused): (Vec<_>, Vec<_>) = replies
        .into_iter()
        .partition(|reply| reply.status == StatusCode::SEE_OTHER);
    assert_eq!(logged_in.len(), 1, "{logged_in:?} {refused:?}");
    for reply in &refused {
        // The pending login was gone (400), or the session moved to the login's new token
        // while the request ran (409): either way nothing happened.
        assert!(matches!(reply.status.as_u16(), 400 | 409), "{reply:?}");
        assert!(
            reply.cookie.as_deref().is_none_or(str::is_empty),
            "{reply:?}"
        );
    }
    assert_eq!(provider.token_calls(), 1, "only one exchanged the code");
    let session = logged_in[0].cookie.clone().expect("the login's cookie");

    // Later replays, with the dead anonymous token or with the new session, which kept the
    // session's data but not the pending login.
    for cookie in [&anonymous, &session] {
        assert_refused(
            &get(callback.as_str(), Some(cookie)).await,
            StatusCode::BAD_REQUEST,
            "invalid_state",
        );
    }
    assert_eq!(provider.token_calls(), 1);
    // A refused replay does not touch the login it replays.
    assert_eq!(me(&app, &session).await.status, StatusCode::OK);
}

#[actix_web::test]
async fn callback_works_once_on_memory() {
    callback_works_once(Store::Memory).await;
}

#[actix_web::test]
async fn callback_works_once_on_redis() {
    callback_works_once(Store::Redis).await;
}

/// The pending login is in the session's data until the callback, and nowhere after it.
#[actix_web::test]
async fn pending_login_leaves_no_trace_in_redis() {
    let provider = FakeProvider::start(Mode::Grant).await;
    let Setup { app, redis } = start(Store::Redis, &provider, &[]);
    let (url, prefix) = redis.expect("on Redis");
    let stored = || {
        dump(&url, &prefix)
            .into_iter()
            .filter_map(|(_, value, _)| value)
            .map(|value| String::from_utf8_lossy(&value).into_owned())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let (anonymous, authorize_url) = begin(&app, &provider).await;
    let state = param(&authorize_url, "state").expect("a state");
    assert!(
        stored().contains(&state),
        "the state is stored: {}",
        stored()
    );

    let callback = consent(&authorize_url).await;
    let reply = get(callback.as_str(), Some(&anonymous)).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{reply:?}");
    let verifiers = provider.verifiers();
    assert_eq!(verifiers.len(), 1);
    let now = stored();
    assert!(now.contains(SUB), "the login is stored: {now}");
    assert!(!now.contains(&state), "the state outlived the login: {now}");
    assert!(
        !now.contains(&verifiers[0]),
        "the verifier outlived the login: {now}"
    );
    assert!(!now.contains("oauth_pending"), "{now}");
}

async fn pkce_binds_the_code_to_its_login(store: Store) {
    let provider = FakeProvider::start(Mode::Grant).await;
    let Setup { app, .. } = start(store, &provider, &[]);
    // An attacker's code (from a login they started) injected into the victim's callback,
    // with the victim's own state: only PKCE tells them apart.
    let (_, attacker_url) = begin(&app, &provider).await;
    let attacker_code = param(&consent(&attacker_url).await, "code").expect("a code");
    let (victim, victim_url) = begin(&app, &provider).await;
    let victim_callback = consent(&victim_url).await;
    let victim_state = param(&victim_callback, "state").expect("a state");
    let injected = with_query(
        &victim_callback,
        &[("code", &attacker_code), ("state", &victim_state)],
    );
    assert_refused(
        &get(&injected, Some(&victim)).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    );
    assert_eq!(provider.rejections(), ["pkce"]);
    assert_eq!(me(&app, &victim).await.status, StatusCode::UNAUTHORIZED);
}

#[actix_web::test]
async fn pkce_binds_the_code_to_its_login_on_memory() {
    pkce_binds_the_code_to_its_login(Store::Memory).await;
}

#[actix_web::test]
async fn pkce_binds_the_code_to_its_login_on_redis() {
    pkce_binds_the_code_to_its_login(Store::Redis).await;
}

async fn provider_errors(store: Store) {
    // The user says no at the provider.
    let provider = FakeProvider::start(Mode::Deny).await;
    let Setup { app, .. } = start(store, &provider, &[]);
    let (cookie, authorize_url) = begin(&app, &provider).await;
    let callback = consent(&authorize_url).await;
    assert_eq!(param(&callback, "error").as_deref(), Some("access_denied"));
    assert_refused(
        &get(callback.as_str(), Some(&cookie)).await,
        StatusCode::FORBIDDEN,
        "access_denied",
    );
    assert_eq!(me(&app, &cookie).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(provider.token_calls(), 0);
    drop(app);

    // The token endpoint fails without an OAuth error.
    let provider = FakeProvider::start(Mode::TokenFails).await;
    let Setup { app, .. } = start(store, &provider, &[]);
    let (cookie, authorize_url) = begin(&app, &provider).await;
    let callback = consent(&authorize_url).await;
    assert_refused(
        &get(callback.as_str(), Some(&cookie)).await,
        StatusCode::BAD_GATEWAY,
        "provider_error",
    );
    assert_eq!(me(&app, &cookie).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(provider.token_calls(), 1);
}

#[actix_web::test]
async fn provider_errors_on_memory() {
    provider_errors(Store::Memory).await;
}

#[actix_web::test]
async fn provider_errors_on_redis() {
    provider_errors(Store::Redis).await;
}

async fn provider_down(store: Store) {
    // Down between the authorization and the token exchange.
    let provider = FakeProvider::start(Mode::Grant).await;
    let Setup { app, .. } = start(store, &provider, &[]);
    let (cookie, authorize_url) = begin(&app, &provider).await;
    let callback = consent(&authorize_url).await;
    provider.stop().await;
    assert_refused(
        &get(callback.as_str(), Some(&cookie)).await,
        StatusCode::BAD_GATEWAY,
        "provider_unavailable",
    );
    assert_eq!(me(&app, &cookie).await.status, StatusCode::UNAUTHORIZED);
    // Still serving.
    assert_eq!(get(&app.url("/"), None).await.status, StatusCode::OK);
    drop(app);

    // A user-info endpoint nobody answers at, after a good token exchange.
    let provider = FakeProvider::start(Mode::Grant).await;
    let dead = format!("http://127.0.0.1:{}/userinfo", free_port());
    let Setup { app, .. } = start(store, &provider, &[("OAUTH_USERINFO_URL", dead)]);
    let (cookie, authorize_url) = begin(&app, &provider).await;
    let callback = consent(&authorize_url).await;
    assert_refused(
        &get(callback.as_str(), Some(&cookie)).await,
        StatusCode::BAD_GATEWAY,
        "provider_unavailable",
    );
    assert_eq!(provider.token_calls(), 1);
    assert_eq!(me(&app, &cookie).await.status, StatusCode::UNAUTHORIZED);
}

#[actix_web::test]
async fn provider_down_on_memory() {
    provider_down(Store::Memory).await;
}

#[actix_web::test]
async fn provider_down_on_redis() {
    provider_down(Store::Redis).await;
}

/// Bots start a login (`GET /login`, an anonymous session each) from fifty /64s of one /48 as
/// fast as they are let, with the default bounds, through a proxy the example trusts; a visitor
/// from anywhere else still starts and finishes a login.
#[actix_web::test]
async fn a_flood_of_login_starts_leaves_logins_to_everyone_else() {
    let provider = FakeProvider::start(Mode::Grant).await;
    let Setup { app, .. } = start(
        Store::Memory,
        &provider,
        &[("TRUST_PROXIES", "127.0.0.1".to_owned())],
    );
    let (mut started, mut refused) = (0, 0);
    for round in 0..25 {
        let starts = (0..50).map(|net| {
            let ip = format!("2001:db8:77:{net:x}::{round}");
            send(
                client()
                    .get(app.url("/login"))
                    .insert_header(("x-forwarded-for", ip)),
                None,
            )
        });
        for reply in futures_util::future::join_all(starts).await {
            match reply.status {
                StatusCode::SEE_OTHER => started += 1,
                StatusCode::TOO_MANY_REQUESTS => {
                    assert_refused(&reply, StatusCode::TOO_MANY_REQUESTS, "too_many_sessions");
                    refused += 1;
                }
                _ => panic!("flood: {reply:?}"),
            }
        }
    }
    assert!(
        refused > 0,
        "the flood was never refused ({started} started)"
    );

    // The visitor comes straight from 127.0.0.1, which is no flooder's network.
    let (anonymous, authorize_url) = begin(&app, &provider).await;
    let callback = consent(&authorize_url).await;
    let reply = get(callback.as_str(), Some(&anonymous)).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{reply:?}");
    let session = reply.cookie.expect("the login sets a cookie");
    assert_eq!(me(&app, &session).await.status, StatusCode::OK);
}
