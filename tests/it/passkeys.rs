//! The passkey ceremonies (`actix_login::passkeys`) end to end through Actix's test service, on
//! memory and on Redis, with webauthn-rs's software authenticator making real attestations and
//! assertions: every refusal with its code and no session change. The browser side (a virtual
//! authenticator in Chromium) is in `html_login.rs`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_login::events::{ActivityKind, EventKind, LoginMethod, SecurityEvent};
use actix_login::passkeys::{Passkey, Passkeys, Uuid};
use actix_login::store::SessionStore;
use actix_login::two_factor::SecondFactor;
use actix_login::{AuthUser, Error, Login, LoginMiddleware, MemoryStore, Require, Session};
use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::{test, web, App, HttpResponse};
use serde_json::{json, Value};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::WebauthnAuthenticator;

use crate::support::cluster::RedisCluster;
use crate::support::http::*;
use crate::support::monitor::Monitor;
use crate::support::passkeys::{
    authenticator, passkeys, register_with, request, routes, sign_with, Answer, Users, ORIGIN,
};
use crate::support::redis_server::{shared_redis_url, unique_prefix, RedisServer};

async fn login(session: Session, id: web::Path<u64>) -> Result<HttpResponse, Error> {
    session.login(id.to_string(), &*id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A password login on a browser trusted to skip the second factor: a login, but not fresh
/// enough for sudo mode without the second factor.
async fn login_trusted(session: Session, id: web::Path<u64>) -> Result<HttpResponse, Error> {
    let login = Login::new(id.to_string(), &*id).second_factor(SecondFactor::Skipped);
    session.login_with(login).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The logged-in user (an admin, say) acts as the user `id`.
async fn impersonate(
    _admin: AuthUser<u64>,
    session: Session,
    id: web::Path<u64>,
) -> Result<HttpResponse, Error> {
    session
        .impersonate(Login::new(id.to_string(), &*id))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn me(user: AuthUser<u64>) -> String {
    user.to_string()
}

async fn logout(session: Session) -> Result<HttpResponse, Error> {
    session.logout().await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn sessions(_user: AuthUser<u64>, session: Session) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(session.list_sessions().await?))
}

async fn activity(_user: AuthUser<u64>, session: Session) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(session.activity(None, 50).await?))
}

struct Harness<S> {
    app: S,
    users: Arc<Users>,
    /// The security events the app delivered.
    events: Arc<Mutex<Vec<SecurityEvent>>>,
}

impl<S, B> Harness<S>
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    /// A POST of `path` with `cookie`'s session and a JSON `body`.
    async fn call(&self, path: &str, cookie: Option<&str>, body: Option<Value>) -> Answer {
        call(&self.app, path, cookie, body).await
    }

    /// Who `cookie` is logged in as (the `/me` body), or the status it got.
    async fn whoami(&self, cookie: &str) -> String {
        whoami(&self.app, cookie).await
    }

    async fn log_out(&self, cookie: &str) {
        assert_eq!(self.call("/logout", Some(cookie), None).await.status, 204);
    }
}

/// `answer` refuses with `status` and the JSON error `code`, and sets no cookie: no session
/// changed.
#[track_caller]
fn assert_refused(answer: &Answer, status: u16, code: &str) {
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (status, code),
        "{}",
        answer.body
    );
    assert_eq!(answer.cookie, None, "no session change");
}

impl<S> Harness<S> {
    /// Waits for an event that `matches`: the events thread delivers it after the answer.
    async fn wait_for(&self, matches: impl Fn(&EventKind) -> bool) -> SecurityEvent {
        for _ in 0..2000 {
            let found = self
                .events
                .lock()
                .unwrap()
                .iter()
                .find(|e| matches(&e.kind))
                .cloned();
            if let Some(event) = found {
                return event;
            }
            actix_web::rt::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("no such event: {:?}", self.events.lock().unwrap());
    }
}

async fn harness(
    store: impl SessionStore,
    fresh_window: Duration,
) -> Harness<
    impl Service<
        actix_http::Request,
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
    >,
> {
    harness_with(store, fresh_window, passkeys()).await
}

async fn harness_with(
    store: impl SessionStore,
    fresh_window: Duration,
    passkeys: Passkeys,
) -> Harness<
    impl Service<
        actix_http::Request,
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
    >,
> {
    let users = Arc::new(Users::default());
    let passkeys = web::Data::new(passkeys);
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let middleware = LoginMiddleware::builder(store)
        .fresh_window(fresh_window)
        .on_event(move |event: &SecurityEvent| seen.lock().unwrap().push(event.clone()))
        .build();
    let data = web::Data::from(users.clone());
    let app = test::init_service(
        App::new()
            .wrap(middleware)
            .app_data(passkeys)
            .app_data(data)
            .route("/login/{id}", web::post().to(login))
            .route("/login-trusted/{id}", web::post().to(login_trusted))
            .route("/impersonate/{id}", web::post().to(impersonate))
            .route("/logout", web::post().to(logout))
            .route("/me", web::get().to(me))
            .route("/sessions", web::get().to(sessions))
            .route("/activity", web::get().to(activity))
            .service(
                web::resource("/sudo")
                    .wrap(Require::login().fresh())
                    .route(web::get().to(HttpResponse::NoContent)),
            )
            .configure(routes),
    )
    .await;
    Harness { app, users, events }
}

async fn call<S, B>(app: &S, path: &str, cookie: Option<&str>, body: Option<Value>) -> Answer
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    Answer::of(test::call_service(app, request(path, cookie, body)).await).await
}

async fn whoami<S, B>(app: &S, cookie: &str) -> String
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let res = test::call_service(app, get("/me", Some(cookie))).await;
    let (status, body) = status_and_body(res).await;
    if status == 200 {
        body
    } else {
        format!("{status}")
    }
}

/// Logs user 1 in with a "password", registers one passkey, and returns the session cookie,
/// the authenticator and the passkey.
async fn registered<S, B>(h: &Harness<S>) -> (String, WebauthnAuthenticator<SoftPasskey>, Passkey)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let cookie = h.call("/login/1", None, None).await.cookie.unwrap();
    let start = h
        .call("/passkeys/register/start", Some(&cookie), None)
        .await;
    assert_eq!(start.status, 200, "{}", start.body);
    assert!(
        start.body.contains(r#""residentKey":"preferred""#),
        "a discoverable credential is asked for: {}",
        start.body
    );
    let mut auth = authenticator();
    let response = register_with(&mut auth, ORIGIN, &start.body);
    let finish = h
        .call("/passkeys/register/finish", Some(&cookie), Some(response))
        .await;
    assert_eq!(finish.status, 204, "{}", finish.body);
    let key = h.users.passkeys(1).pop().unwrap();
    (cookie, auth, key)
}

/// A visitor's username-less sign-in: start, sign, finish. Returns the finish's answer and the
/// visitor's cookie (the anonymous session's).
async fn discoverable_sign_in<S, B>(
    h: &Harness<S>,
    auth: &mut WebauthnAuthenticator<SoftPasskey>,
    key: &Passkey,
) -> (Answer, String)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let start = h.call("/passkeys/sign-in/start", None, None).await;
    assert_eq!(start.status, 200, "{}", start.body);
    let visitor = start
        .cookie
        .expect("an anonymous session holds the challenge");
    let response = sign_with(auth, ORIGIN, &start.body, Some((key, h.users.handle(1))));
    let finish = h
        .call("/passkeys/sign-in/finish", Some(&visitor), Some(response))
        .await;
    (finish, visitor)
}

async fn check_register_sign_out_sign_in(store: impl SessionStore) {
    let h = harness(store, Duration::from_secs(300)).await;
    let (cookie, mut auth, key) = registered(&h).await;
    h.log_out(&cookie).await;

    // Without a username.
    let (finish, visitor) = discoverable_sign_in(&h, &mut auth, &key).await;
    assert_eq!(finish.status, 200, "{}", finish.body);
    assert!(
        finish.body.contains(r#""confirmed":false"#),
        "{}",
        finish.body
    );
    let signed_in = finish.cookie.expect("a login rotates the session");
    assert_ne!(signed_in, visitor);
    assert_eq!(h.whoami(&signed_in).await, "1");
    assert_eq!(h.whoami(&visitor).await, "401", "the visitor's token died");
    // A passkey sign-in is fresh.
    assert_eq!(status(&h.app, get("/sudo", Some(&signed_in))).await, 204);
    // The counter went up, and the app was told to store it.
    let stored = serde_json::to_value(h.users.passkeys(1).pop().unwrap()).unwrap();
    assert_eq!(stored["cred"]["counter"], json!(1));

    // For a named user.
    h.log_out(&signed_in).await;
    let start = h.call("/passkeys/sign-in/start/1", None, None).await;
    assert_eq!(start.status, 200, "{}", start.body);
    let visitor = start.cookie.unwrap();
    let response = sign_with(&mut auth, ORIGIN, &start.body, None);
    let finish = h
        .call("/passkeys/sign-in/finish", Some(&visitor), Some(response))
        .await;
    assert_eq!(finish.status, 200, "{}", finish.body);
    assert_eq!(h.whoami(&finish.cookie.unwrap()).await, "1");
    let stored = serde_json::to_value(h.users.passkeys(1).pop().unwrap()).unwrap();
    assert_eq!(stored["cred"]["counter"], json!(2));
}

#[actix_web::test]
async fn register_sign_out_and_sign_in_on_memory() {
    check_register_sign_out_sign_in(MemoryStore::new()).await;
}

#[actix_web::test]
async fn register_sign_out_and_sign_in_on_redis() {
    let store = redis_store_at(&shared_redis_url(), &unique_prefix()).await;
    check_register_sign_out_sign_in(store).await;
}

#[actix_web::test]
async fn register_sign_out_and_sign_in_on_a_redis_cluster() {
    let cluster = RedisCluster::start();
    let store = cluster.store(&unique_prefix()).await;
    check_register_sign_out_sign_in(store).await;
}

/// A passkey sign-in says so: in the login's event, the activity log and the session list
/// (kept in the record, through the store, beside a password login's session that shows
/// `"password"`).
async fn check_a_passkey_sign_in_is_reported_and_listed(store: impl SessionStore) {
    let h = harness(store, Duration::from_secs(300)).await;
    let (password_session, mut auth, key) = registered(&h).await;
    let (finish, _) = discoverable_sign_in(&h, &mut auth, &key).await;
    assert_eq!(finish.status, 200, "{}", finish.body);
    let signed_in = finish.cookie.unwrap();

    let event = h
        .wait_for(|k| {
            matches!(
                k,
                EventKind::LoginSucceeded {
                    method: LoginMethod::Passkey,
                    ..
                }
            )
        })
        .await;
    assert_eq!(event.user_id.as_deref(), Some("1"));

    let res = test::call_service(&h.app, get("/sessions", Some(&signed_in))).await;
    let (status, body) = status_and_body(res).await;
    assert_eq!(status, 200, "{body}");
    let listed: Vec<Value> = serde_json::from_str(&body).unwrap();
    let method_of = |current: bool| {
        listed
            .iter()
            .find(|s| s["current"] == json!(current))
            .map(|s| s["method"].clone())
    };
    assert_eq!(method_of(true), Some(json!("passkey")), "{body}");
    assert_eq!(method_of(false), Some(json!("password")), "{body}");
    let res = test::call_service(&h.app, get("/sessions", Some(&password_session))).await;
    let (_, body) = status_and_body(res).await;
    assert!(body.contains(r#""method":"passkey""#), "{body}");

    let res = test::call_service(&h.app, get("/activity", Some(&signed_in))).await;
    let (status, body) = status_and_body(res).await;
    assert_eq!(status, 200, "{body}");
    let entries: Vec<Value> = serde_json::from_str(&body).unwrap();
    let newest: ActivityKind = serde_json::from_value(entries[0]["type"].clone()).unwrap();
    assert!(
        matches!(newest, ActivityKind::Login | ActivityKind::NewDevice),
        "{body}"
    );
    assert_eq!(entries[0]["method"], json!("passkey"), "{body}");
    assert_eq!(entries[1]["method"], json!("password"), "{body}");
}

#[actix_web::test]
async fn a_passkey_sign_in_is_reported_and_listed_on_memory() {
    check_a_passkey_sign_in_is_reported_and_listed(MemoryStore::new()).await;
}

#[actix_web::test]
async fn a_passkey_sign_in_is_reported_and_listed_on_redis() {
    let store = redis_store_at(&shared_redis_url(), &unique_prefix()).await;
    check_a_passkey_sign_in_is_reported_and_listed(store).await;
}

/// On an account with a second factor, a passkey is both factors: its sign-in is a login with
/// no code asked, and it confirms sudo mode where the password alone does not.
#[actix_web::test]
async fn a_passkey_counts_as_the_second_factor() {
    let h = harness(MemoryStore::new(), Duration::from_secs(300)).await;
    let (cookie, mut auth, key) = registered(&h).await;
    h.users.add_totp(1);
    h.log_out(&cookie).await;

    // Signing in: no code asked, and fresh.
    let (finish, _) = discoverable_sign_in(&h, &mut auth, &key).await;
    assert_eq!(finish.status, 200, "{}", finish.body);
    let signed_in = finish.cookie.unwrap();
    assert_eq!(h.whoami(&signed_in).await, "1");
    assert_eq!(status(&h.app, get("/sudo", Some(&signed_in))).await, 204);

    // A trusted browser's login skipped the code: sudo mode needs the second factor, which a
    // passkey gives.
    let trusted = h.call("/login-trusted/1", None, None).await.cookie.unwrap();
    let res = test::call_service(&h.app, get("/sudo", Some(&trusted))).await;
    let (refused, body) = status_and_body(res).await;
    assert_eq!(refused, 403, "{body}");
    assert!(body.contains("second_factor_reauth_required"), "{body}");
    let start = h
        .call("/passkeys/sign-in/start", Some(&trusted), None)
        .await;
    assert_eq!(start.status, 200, "{}", start.body);
    let response = sign_with(
        &mut auth,
        ORIGIN,
        &start.body,
        Some((&key, h.users.handle(1))),
    );
    let finish = h
        .call("/passkeys/sign-in/finish", Some(&trusted), Some(response))
        .await;
    assert_eq!(finish.status, 200, "{}", finish.body);
    assert!(
        finish.body.contains(r#""confirmed":true"#),
        "{}",
        finish.body
    );
    let confirmed = finish.cookie.expect("confirming rotates the token");
    assert_eq!(status(&h.app, get("/sudo", Some(&confirmed))).await, 204);
}

async fn check_replayed_challenge(store: impl SessionStore) {
    let h = harness(store, Duration::from_secs(300)).await;
    let (cookie, mut auth, key) = registered(&h).await;
    h.log_out(&cookie).await;

    let start = h.call("/passkeys/sign-in/start", None, None).await;
    let visitor = start.cookie.unwrap();
    let response = sign_with(
        &mut auth,
        ORIGIN,
        &start.body,
        Some((&key, h.users.handle(1))),
    );
    let first = h
        .call(
            "/passkeys/sign-in/finish",
            Some(&visitor),
            Some(response.clone()),
        )
        .await;
    assert_eq!(first.status, 200, "{}", first.body);
    let signed_in = first.cookie.unwrap();
    // The same response again: from the session that signed in, and from another visitor.
    for cookie in [Some(signed_in.as_str()), None] {
        let replay = h
            .call("/passkeys/sign-in/finish", cookie, Some(response.clone()))
            .await;
        assert_refused(&replay, 400, "passkey_no_challenge");
    }
    assert_eq!(h.whoami(&signed_in).await, "1");

    // A registration answer is used once too.
    let start = h
        .call("/passkeys/register/start", Some(&signed_in), None)
        .await;
    let mut other = authenticator();
    let response = register_with(&mut other, ORIGIN, &start.body);
    let path = "/passkeys/register/finish";
    let first = h.call(path, Some(&signed_in), Some(response.clone())).await;
    assert_eq!(first.status, 204, "{}", first.body);
    let replay = h.call(path, Some(&signed_in), Some(response)).await;
    assert_refused(&replay, 400, "passkey_no_challenge");
    assert_eq!(h.users.passkeys(1).len(), 2);
}

#[actix_web::test]
async fn a_replayed_challenge_is_refused_on_memory() {
    check_replayed_challenge(MemoryStore::new()).await;
}

#[actix_web::test]
async fn a_replayed_challenge_is_refused_on_redis() {
    let store = redis_store_at(&shared_redis_url(), &unique_prefix()).await;
    check_replayed_challenge(store).await;
}

#[actix_web::test]
async fn a_replayed_challenge_is_refused_on_a_redis_cluster() {
    let cluster = RedisCluster::start();
    let store = cluster.store(&unique_prefix()).await;
    check_replayed_challenge(store).await;
}

#[actix_web::test]
async fn a_challenge_from_another_session_is_refused() {
    let h = harness(MemoryStore::new(), Duration::from_secs(300)).await;
    let (cookie, mut auth, key) = registered(&h).await;
    h.log_out(&cookie).await;

    // Visitor A's challenge, signed, then sent with visitor B's cookie: B waits for its own.
    let a = h.call("/passkeys/sign-in/start", None, None).await;
    let b = h.call("/passkeys/sign-in/start", None, None).await;
    let (a_cookie, b_cookie) = (a.cookie.unwrap(), b.cookie.unwrap());
    let handle = h.users.handle(1);
    let response = sign_with(&mut auth, ORIGIN, &a.body, Some((&key, handle)));
    let path = "/passkeys/sign-in/finish";
    let refused = h.call(path, Some(&b_cookie), Some(response.clone())).await;
    assert_refused(&refused, 400, "passkey_challenge_mismatch");
    assert_eq!(h.whoami(&b_cookie).await, "401");
    // Without a session of its own, no challenge at all.
    let refused = h.call(path, None, Some(response.clone())).await;
    assert_refused(&refused, 400, "passkey_no_challenge");
    // The session that asked for it still can use it.
    let finish = h.call(path, Some(&a_cookie), Some(response)).await;
    assert_eq!(finish.status, 200, "{}", finish.body);

    // A registration started by one login cannot be finished by another of the same user.
    let first = h.call("/login/1", None, None).await.cookie.unwrap();
    let second = h.call("/login/1", None, None).await.cookie.unwrap();
    let start = h.call("/passkeys/register/start", Some(&first), None).await;
    let response = register_with(&mut authenticator(), ORIGIN, &start.body);
    let path = "/passkeys/register/finish";
    let refused = h.call(path, Some(&second), Some(response)).await;
    assert_refused(&refused, 400, "passkey_no_challenge");
    assert_eq!(h.users.passkeys(1).len(), 1);
}

#[actix_web::test]
async fn a_wrong_origin_is_refused() {
    let h = harness(MemoryStore::new(), Duration::from_secs(300)).await;
    let (cookie, mut auth, key) = registered(&h).await;
    // Another port of the same host is another origin.
    let elsewhere = "http://localhost:9999";

    let start = h
        .call("/passkeys/register/start", Some(&cookie), None)
        .await;
    let response = register_with(&mut authenticator(), elsewhere, &start.body);
    let refused = h
        .call("/passkeys/register/finish", Some(&cookie), Some(response))
        .await;
    assert_refused(&refused, 400, "passkey_wrong_origin");
    assert_eq!(h.users.passkeys(1).len(), 1);

    h.log_out(&cookie).await;
    let start = h.call("/passkeys/sign-in/start", None, None).await;
    let visitor = start.cookie.unwrap();
    let response = sign_with(
        &mut auth,
        elsewhere,
        &start.body,
        Some((&key, h.users.handle(1))),
    );
    let refused = h
        .call("/passkeys/sign-in/finish", Some(&visitor), Some(response))
        .await;
    assert_refused(&refused, 400, "passkey_wrong_origin");
    assert_eq!(h.whoami(&visitor).await, "401");
}

#[actix_web::test]
async fn an_unknown_or_removed_credential_is_refused() {
    let h = harness(MemoryStore::new(), Duration::from_secs(300)).await;
    let (cookie, mut auth, key) = registered(&h).await;
    h.log_out(&cookie).await;

    // A user handle no account has.
    let start = h.call("/passkeys/sign-in/start", None, None).await;
    let visitor = start.cookie.unwrap();
    let response = sign_with(&mut auth, ORIGIN, &start.body, Some((&key, Uuid::new_v4())));
    let refused = h
        .call("/passkeys/sign-in/finish", Some(&visitor), Some(response))
        .await;
    assert_refused(&refused, 401, "passkey_unknown_credential");

    // The passkey removed from the account between the start and the finish.
    let start = h.call("/passkeys/sign-in/start", None, None).await;
    let visitor = start.cookie.unwrap();
    let response = sign_with(
        &mut auth,
        ORIGIN,
        &start.body,
        Some((&key, h.users.handle(1))),
    );
    h.users.remove_all(1);
    let refused = h
        .call("/passkeys/sign-in/finish", Some(&visitor), Some(response))
        .await;
    assert_refused(&refused, 401, "passkey_unknown_credential");
    assert_eq!(h.whoami(&visitor).await, "401");
    // And a named sign-in of a user without passkeys has nothing to start.
    let refused = h.call("/passkeys/sign-in/start/1", None, None).await;
    assert_refused(&refused, 401, "passkey_unknown_credential");
}

#[actix_web::test]
async fn a_counter_that_went_backwards_is_refused() {
    let h = harness(MemoryStore::new(), Duration::from_secs(300)).await;
    let (cookie, mut auth, key) = registered(&h).await;
    h.log_out(&cookie).await;
    // A clone of the authenticator signed in ten times; this copy is at its first.
    h.users.raise_counters(1, 10);
    let (refused, visitor) = discoverable_sign_in(&h, &mut auth, &key).await;
    assert_refused(&refused, 401, "passkey_counter_regressed");
    assert_eq!(h.whoami(&visitor).await, "401");
}

#[actix_web::test]
async fn registration_needs_a_fresh_login_and_a_passkey_confirms_one() {
    let h = harness(MemoryStore::new(), Duration::from_secs(1)).await;
    let refused = h.call("/passkeys/register/start", None, None).await;
    assert_refused(&refused, 401, "unauthenticated");
    let (cookie, mut auth, key) = registered(&h).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let refused = h
        .call("/passkeys/register/start", Some(&cookie), None)
        .await;
    assert_refused(&refused, 403, "reauth_required");
    assert_eq!(status(&h.app, get("/sudo", Some(&cookie))).await, 403);

    // Sudo mode confirmed with the passkey, from the signed-in session: the same user, a new
    // token, fresh again.
    let start = h.call("/passkeys/sign-in/start", Some(&cookie), None).await;
    assert_eq!(start.cookie, None, "the login holds the challenge");
    let response = sign_with(
        &mut auth,
        ORIGIN,
        &start.body,
        Some((&key, h.users.handle(1))),
    );
    let finish = h
        .call("/passkeys/sign-in/finish", Some(&cookie), Some(response))
        .await;
    assert_eq!(finish.status, 200, "{}", finish.body);
    assert!(
        finish.body.contains(r#""confirmed":true"#),
        "{}",
        finish.body
    );
    let confirmed = finish.cookie.expect("confirming rotates the token");
    assert_eq!(h.whoami(&cookie).await, "401");
    assert_eq!(status(&h.app, get("/sudo", Some(&confirmed))).await, 204);
    let start = h
        .call("/passkeys/register/start", Some(&confirmed), None)
        .await;
    assert_eq!(start.status, 200, "{}", start.body);
}

#[actix_web::test]
async fn configuration_errors_say_what_is_wrong() {
    let cases = [
        ("localhost", "localhost:8080", "is not a URL"),
        ("127.0.0.1", "http://127.0.0.1:8080", "IP address"),
        ("example.com", "http://example.com", "must use https"),
        ("example.org", "https://example.com", "not the host of"),
        ("ample.com", "https://example.com", "not the host of"),
        ("example.com", "https://example.com/login", "without a path"),
    ];
    for (rp_id, origin, says) in cases {
        let err = Passkeys::new(rp_id, origin).unwrap_err().to_string();
        assert!(err.contains(says), "{rp_id} {origin}: {err}");
    }
    Passkeys::new("localhost", "http://localhost:8080").unwrap();
    Passkeys::new("example.com", "https://login.example.com").unwrap();
}

#[actix_web::test]
async fn a_challenge_answered_too_late_is_refused() {
    let passkeys = Passkeys::builder("localhost", ORIGIN)
        .challenge_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let h = harness_with(MemoryStore::new(), Duration::from_secs(300), passkeys).await;
    let (cookie, mut auth, key) = registered(&h).await;
    h.log_out(&cookie).await;
    let start = h.call("/passkeys/sign-in/start", None, None).await;
    let visitor = start.cookie.unwrap();
    let response = sign_with(
        &mut auth,
        ORIGIN,
        &start.body,
        Some((&key, h.users.handle(1))),
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let refused = h
        .call("/passkeys/sign-in/finish", Some(&visitor), Some(response))
        .await;
    assert_refused(&refused, 400, "passkey_no_challenge");
    assert_eq!(h.whoami(&visitor).await, "401");
}

/// The Redis commands of each step of a visitor's passkey sign-in, one per round trip
/// (`MONITOR`): the challenge costs a visitor's first data write, finishing takes it in one
/// round trip, and the login sends what a password login sends.
#[actix_web::test]
async fn redis_commands_of_a_passkey_sign_in() {
    let server = RedisServer::start();
    let store = redis_store_at(&server.url(), &unique_prefix()).await;
    let h = harness(store, Duration::from_secs(300)).await;
    let (cookie, mut auth, key) = registered(&h).await;
    h.log_out(&cookie).await;
    // Loads the scripts, which a long-running server has loaded long before.
    let (warm_up, _) = discoverable_sign_in(&h, &mut auth, &key).await;
    assert_eq!(warm_up.status, 200, "{}", warm_up.body);
    let warm_up = warm_up.cookie.unwrap();
    h.log_out(&warm_up).await;
    let monitor = Monitor::start(&server);

    let start = h.call("/passkeys/sign-in/start", None, None).await;
    let visitor = start.cookie.unwrap();
    // The visitor's session, started with its first data write: the bounds on new anonymous
    // sessions, then the session with the challenge in it.
    assert_eq!(monitor.take(), ["evalsha", "evalsha"], "start");
    let response = sign_with(
        &mut auth,
        ORIGIN,
        &start.body,
        Some((&key, h.users.handle(1))),
    );
    let path = "/passkeys/sign-in/finish";
    let finish = h.call(path, Some(&visitor), Some(response.clone())).await;
    assert_eq!(finish.status, 200, "{}", finish.body);
    let finishing = monitor.take();
    // The session with its data, the challenge taken (one script), then the login.
    assert_eq!(
        finishing[..2],
        ["hmget", "evalsha"],
        "finish: {finishing:?}"
    );
    let signed_in = finish.cookie.unwrap();
    // A replay from the visitor's token, which the login ended: the lookup finds no session.
    let replay = h.call(path, Some(&visitor), Some(response)).await;
    assert_eq!(replay.code(), "passkey_no_challenge");
    assert_eq!(monitor.take(), ["hmget"], "replay");
    h.log_out(&signed_in).await;

    // The same visitor's login with a password instead, from the same state: the same
    // commands as the passkey's login.
    let start = h.call("/passkeys/sign-in/start", None, None).await;
    let visitor = start.cookie.unwrap();
    monitor.take();
    assert_eq!(h.call("/login/1", Some(&visitor), None).await.status, 204);
    let password_login = monitor.take();
    assert_eq!(
        finishing[2..],
        password_login[1..],
        "finish: {finishing:?}, a password login: {password_login:?}"
    );
}

/// An admin acting as a user adds no passkey to the account: both steps of the registration
/// answer `403 impersonating`, from the crate itself (the routes have no `Require::fresh`).
#[actix_web::test]
async fn an_impersonator_registers_no_passkey() {
    let h = harness(MemoryStore::new(), Duration::from_secs(300)).await;
    // A registration answer of user 2's own, for the finish step.
    let own = h.call("/login/2", None, None).await.cookie.unwrap();
    let start = h.call("/passkeys/register/start", Some(&own), None).await;
    assert_eq!(start.status, 200, "{}", start.body);
    let response = register_with(&mut authenticator(), ORIGIN, &start.body);

    let admin = h.call("/login/1", None, None).await.cookie.unwrap();
    let as_two = h.call("/impersonate/2", Some(&admin), None).await;
    assert_eq!(as_two.status, 204, "{}", as_two.body);
    let as_two = as_two.cookie.unwrap();
    assert_eq!(h.whoami(&as_two).await, "2");

    let start = h
        .call("/passkeys/register/start", Some(&as_two), None)
        .await;
    assert_eq!((start.status, start.code()), (403, "impersonating".into()));
    let finish = h
        .call(
            "/passkeys/register/finish",
            Some(&as_two),
            Some(response.clone()),
        )
        .await;
    assert_eq!(
        (finish.status, finish.code()),
        (403, "impersonating".into())
    );
    assert!(h.users.passkeys(2).is_empty());
    // User 2's own registration still completes.
    let finish = h
        .call("/passkeys/register/finish", Some(&own), Some(response))
        .await;
    assert_eq!(finish.status, 204, "{}", finish.body);
}

/// Anything else webauthn-rs refuses, here an assertion whose signature was altered in
/// transit, is `400 passkey_rejected`, with no session change; the right assertion still works
/// after it, since a refusal leaves the challenge in place no more than a success does.
#[actix_web::test]
async fn a_forged_signature_is_rejected() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let h = harness(MemoryStore::new(), Duration::from_secs(300)).await;
    let (cookie, mut auth, key) = registered(&h).await;
    h.log_out(&cookie).await;
    let start = h.call("/passkeys/sign-in/start", None, None).await;
    let visitor = start.cookie.unwrap();
    let mut response = sign_with(
        &mut auth,
        ORIGIN,
        &start.body,
        Some((&key, h.users.handle(1))),
    );
    let signature = response["response"]["signature"].as_str().unwrap();
    let mut bytes = b64.decode(signature).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    response["response"]["signature"] = json!(b64.encode(bytes));
    let refused = h
        .call("/passkeys/sign-in/finish", Some(&visitor), Some(response))
        .await;
    assert_refused(&refused, 400, "passkey_rejected");
    assert_eq!(h.whoami(&visitor).await, "401");
}
