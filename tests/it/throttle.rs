//! The login throttle, played from the attacker's side against real Redis.

use std::time::{Duration, Instant};

use actix_login::throttle::{Limit, LoginThrottle};
use actix_login::{Error, LoginMiddleware, MemoryStore, RedisStore};
use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header;
use actix_web::{test, web, App, HttpRequest, HttpResponse};
use serde::Deserialize;

use crate::support;
use crate::support::http::*;
use crate::support::redis_server::{shared_redis_url, unique_prefix, RedisServer};

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

/// A login handler shaped like a real one; the password check is a plain comparison because
/// the throttle is what is under test, not argon2.
async fn login(
    req: HttpRequest,
    throttle: web::Data<LoginThrottle>,
    creds: web::Json<Credentials>,
) -> Result<HttpResponse, Error> {
    // The accounts' ids, as the app's user table would give them.
    let id = match creds.username.as_str() {
        "alice" => Some("1"),
        "bob" => Some("2"),
        _ => None,
    };
    let attempt = throttle.attempt(&req, &creds.username, id).await?;
    // Stands for a password check the hashing queue turned away.
    if creds.password == "busy" {
        attempt.not_checked().await?;
        return Ok(HttpResponse::ServiceUnavailable().finish());
    }
    if id.is_some() && creds.password == "right" {
        let device = attempt.succeeded().await?;
        Ok(HttpResponse::Ok().cookie(device).body("welcome"))
    } else {
        attempt.failed().await?;
        Ok(HttpResponse::Unauthorized().json(serde_json::json!({"error": "invalid_credentials"})))
    }
}

async fn app(
    throttle: LoginThrottle,
) -> impl Service<
    actix_http::Request,
    Response = ServiceResponse<impl MessageBody>,
    Error = actix_web::Error,
> {
    app_behind(throttle, LoginMiddleware::new(MemoryStore::new())).await
}

/// The throttle takes the client's address from the middleware, with its proxy settings.
async fn app_behind(
    throttle: LoginThrottle,
    middleware: LoginMiddleware,
) -> impl Service<
    actix_http::Request,
    Response = ServiceResponse<impl MessageBody>,
    Error = actix_web::Error,
> {
    test::init_service(
        App::new()
            .app_data(web::Data::new(throttle))
            .route("/login", web::post().to(login))
            .wrap(middleware),
    )
    .await
}

fn attempt(username: &str, password: &str, peer: &str) -> actix_http::Request {
    test::TestRequest::post()
        .uri("/login")
        .peer_addr(format!("{peer}:40000").parse().unwrap())
        .set_json(serde_json::json!({"username": username, "password": password}))
        .to_request()
}

fn with_header(req: test::TestRequest, name: &str, value: &str) -> test::TestRequest {
    req.insert_header((name, value))
}

async fn throttle_on(url: &str, prefix: &str) -> LoginThrottle {
    LoginThrottle::new(redis_store_at(url, prefix).await)
}

fn short(max_failures: u32) -> Limit {
    Limit::new(max_failures, Duration::from_secs(1))
}

/// Status, headers that matter, and body.
async fn answer<B: MessageBody>(res: ServiceResponse<B>) -> (u16, Option<String>, String) {
    let retry = res
        .headers()
        .get(header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_owned());
    let (status, body) = status_and_body(res).await;
    (status, retry, body)
}

const THROTTLED: &str = r#"{"error":"too_many_attempts"}"#;

#[actix_web::test]
async fn guessing_past_the_limit_is_refused_even_with_the_right_password() {
    let url = shared_redis_url();
    let throttle = throttle_on(&url, &unique_prefix())
        .await
        .per_account_and_client(short(5));
    let app = app(throttle).await;
    for _ in 0..5 {
        let (status, retry, _) =
            answer(test::call_service(&app, attempt("alice", "guess", "192.0.2.1")).await).await;
        assert_eq!((status, retry), (401, None));
    }
    let (status, retry, body) =
        answer(test::call_service(&app, attempt("alice", "right", "192.0.2.1")).await).await;
    assert_eq!((status, body.as_str()), (429, THROTTLED));
    let retry: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=1).contains(&retry), "Retry-After {retry}");

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _, _) =
        answer(test::call_service(&app, attempt("alice", "right", "192.0.2.1")).await).await;
    assert_eq!(status, 200, "still blocked after the window");
    // The success wiped the slate: five more failures are allowed again.
    for _ in 0..5 {
        assert_eq!(
            status_of(&app, attempt("alice", "guess", "192.0.2.1")).await,
            401
        );
    }
}

async fn status_of<S, B>(app: &S, req: actix_http::Request) -> u16
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    status(app, req).await
}

#[actix_web::test]
async fn unknown_usernames_are_throttled_exactly_like_real_ones() {
    let url = shared_redis_url();
    let throttle = throttle_on(&url, &unique_prefix())
        .await
        .per_account_and_client(short(3));
    let app = app(throttle).await;
    let mut answers = Vec::new();
    for user in ["alice", "nobody"] {
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.push(
                answer(test::call_service(&app, attempt(user, "guess", "192.0.2.2")).await).await,
            );
        }
        answers.push(seen);
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0][3].0, 429);
}

#[actix_web::test]
async fn forwarding_headers_from_untrusted_peers_change_nothing() {
    let url = shared_redis_url();
    let throttle = throttle_on(&url, &unique_prefix())
        .await
        .per_account_and_client(short(3));
    let app = app(throttle).await;
    for i in 0..3 {
        let req = with_header(
            with_header(
                test::TestRequest::post()
                    .uri("/login")
                    .peer_addr("192.0.2.3:40000".parse().unwrap())
                    .set_json(serde_json::json!({"username": "alice", "password": "guess"})),
                "x-forwarded-for",
                &format!("10.9.9.{i}"),
            ),
            "forwarded",
            &format!("for=10.8.8.{i}"),
        )
        .to_request();
        assert_eq!(status_of(&app, req).await, 401);
    }
    let req = with_header(
        test::TestRequest::post()
            .uri("/login")
            .peer_addr("192.0.2.3:40000".parse().unwrap())
            .set_json(serde_json::json!({"username": "alice", "password": "right"})),
        "x-forwarded-for",
        "10.7.7.7",
    )
    .to_request();
    assert_eq!(
        status_of(&app, req).await,
        429,
        "a spoofed header dodged the limit"
    );
}

#[actix_web::test]
async fn behind_a_trusted_proxy_each_client_has_its_own_count() {
    let url = shared_redis_url();
    let proxy = "10.0.0.2";
    let throttle = throttle_on(&url, &unique_prefix())
        .await
        .per_account_and_client(short(2));
    let middleware = LoginMiddleware::builder(MemoryStore::new())
        .trust_proxies([proxy.parse().unwrap()])
        .build();
    let app = app_behind(throttle, middleware).await;
    let via_proxy = |client: &str, password: &str| {
        with_header(
            test::TestRequest::post()
                .uri("/login")
                .peer_addr(format!("{proxy}:40000").parse().unwrap())
                .set_json(serde_json::json!({"username": "alice", "password": password})),
            "x-forwarded-for",
            &format!("6.6.6.6, {client}"),
        )
        .to_request()
    };
    assert_eq!(
        status_of(&app, via_proxy("198.51.100.1", "guess")).await,
        401
    );
    assert_eq!(
        status_of(&app, via_proxy("198.51.100.1", "guess")).await,
        401
    );
    assert_eq!(
        status_of(&app, via_proxy("198.51.100.1", "right")).await,
        429
    );
    // The real user at another address is not locked out by the attacker.
    assert_eq!(
        status_of(&app, via_proxy("198.51.100.2", "right")).await,
        200
    );
}

#[actix_web::test]
async fn one_client_trying_many_accounts_is_stopped_without_locking_the_accounts() {
    let url = shared_redis_url();
    let throttle = throttle_on(&url, &unique_prefix())
        .await
        .per_client(short(4));
    let app = app(throttle).await;
    for user in ["u1", "u2", "u3", "u4"] {
        assert_eq!(
            status_of(&app, attempt(user, "guess", "192.0.2.4")).await,
            401
        );
    }
    assert_eq!(
        status_of(&app, attempt("alice", "right", "192.0.2.4")).await,
        429
    );
    assert_eq!(
        status_of(&app, attempt("alice", "right", "192.0.2.5")).await,
        200
    );
}

#[actix_web::test]
async fn the_account_wide_ceiling_holds_across_addresses_and_ignores_blocked_hammering() {
    let url = shared_redis_url();
    let prefix = unique_prefix();
    let throttle = throttle_on(&url, &prefix)
        .await
        .per_account_and_client(Limit::new(2, Duration::from_secs(60)))
        .per_account(Limit::new(6, Duration::from_secs(60)));
    let app = app(throttle).await;
    // One address hammers: only 2 guesses count; the rest are refused and not counted.
    for _ in 0..2 {
        assert_eq!(
            status_of(&app, attempt("alice", "guess", "192.0.2.6")).await,
            401
        );
    }
    for _ in 0..20 {
        assert_eq!(
            status_of(&app, attempt("alice", "guess", "192.0.2.6")).await,
            429
        );
    }
    // Others can still reach the account: the 20 refused attempts did not count.
    for peer in ["192.0.2.7", "192.0.2.7", "192.0.2.8", "192.0.2.8"] {
        assert_eq!(status_of(&app, attempt("alice", "guess", peer)).await, 401);
    }
    // Six real guesses from three addresses reach the account-wide ceiling.
    assert_eq!(
        status_of(&app, attempt("alice", "right", "192.0.2.9")).await,
        429
    );

    // Every counter expires by itself, after its own window.
    let keys = support::redis_server::dump(&url, &format!("{prefix}:{{throttle}}"));
    assert_eq!(keys.len(), 1 + 3 + 3, "{keys:?}"); // one account, three addresses, three pairs
    for (key, _, ttl) in keys {
        let window = if key.contains(":c:") {
            15 * 60_000
        } else {
            60_000
        };
        assert!(
            ttl > 0 && ttl <= window && ttl > window - 10_000,
            "{key} ttl {ttl}"
        );
    }
}

#[actix_web::test]
async fn concurrent_guesses_cannot_slip_past_the_limit() {
    let url = shared_redis_url();
    let throttle = throttle_on(&url, &unique_prefix())
        .await
        .per_account_and_client(Limit::new(5, Duration::from_secs(60)));
    let app = app(throttle).await;
    let guesses = (0..30).map(|_| app.call(attempt("alice", "guess", "192.0.2.10")));
    let results = futures_util::future::join_all(guesses).await;
    let allowed = results
        .into_iter()
        .filter(|r| r.as_ref().unwrap().status().as_u16() == 401)
        .count();
    assert_eq!(allowed, 5);
}

#[actix_web::test]
async fn two_app_instances_share_the_counts() {
    let url = shared_redis_url();
    let prefix = unique_prefix();
    let a = app(throttle_on(&url, &prefix)
        .await
        .per_account_and_client(short(4)))
    .await;
    let b = app(throttle_on(&url, &prefix)
        .await
        .per_account_and_client(short(4)))
    .await;
    for app in [&a, &b] {
        assert_eq!(
            status_of(app, attempt("alice", "guess", "192.0.2.11")).await,
            401
        );
        assert_eq!(
            status_of(app, attempt("alice", "guess", "192.0.2.11")).await,
            401
        );
    }
    assert_eq!(
        status_of(&a, attempt("alice", "right", "192.0.2.11")).await,
        429
    );
    assert_eq!(
        status_of(&b, attempt("alice", "right", "192.0.2.11")).await,
        429
    );
}

#[actix_web::test]
async fn oversized_usernames_are_refused_before_any_store_work() {
    let server = RedisServer::start();
    let app = app(LoginThrottle::new(
        redis_store_at(&server.url(), "big").await,
    ))
    .await;
    let before = server.command_counts();
    let huge = "a".repeat(2000);
    let res = test::call_service(&app, attempt(&huge, "x", "192.0.2.12")).await;
    assert_eq!(
        status_and_body(res).await,
        (400, r#"{"error":"invalid_input"}"#.into())
    );
    assert!(support::redis_server::commands_during_since(&server, &before).is_empty());
}

#[actix_web::test]
async fn redis_down_is_503_not_a_free_pass() {
    let server = RedisServer::start();
    let store = RedisStore::builder(server.url())
        .command_timeout(Duration::from_millis(300))
        .connect()
        .await
        .unwrap();
    let app = app(LoginThrottle::new(store)).await;
    assert_eq!(
        status_of(&app, attempt("alice", "right", "192.0.2.13")).await,
        200
    );
    server.stop();
    let started = Instant::now();
    let res = test::call_service(&app, attempt("alice", "right", "192.0.2.13")).await;
    assert_eq!(status_and_body(res).await, (503, UNAVAILABLE.into()));
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[actix_web::test]
async fn the_memory_store_throttles_the_same_way() {
    let throttle =
        LoginThrottle::new(actix_login::MemoryStore::new()).per_account_and_client(short(2));
    let app = app(throttle).await;
    assert_eq!(
        status_of(&app, attempt("alice", "guess", "192.0.2.14")).await,
        401
    );
    assert_eq!(
        status_of(&app, attempt("alice", "guess", "192.0.2.14")).await,
        401
    );
    assert_eq!(
        status_of(&app, attempt("alice", "right", "192.0.2.14")).await,
        429
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        status_of(&app, attempt("alice", "right", "192.0.2.14")).await,
        200
    );
}

#[actix_web::test]
async fn attempts_are_logged_without_usernames_or_passwords() {
    let (logs, _guard) = support::logs::capture_logs();
    let throttle =
        LoginThrottle::new(actix_login::MemoryStore::new()).per_account_and_client(short(1));
    let app = app(throttle).await;
    assert_eq!(
        status_of(&app, attempt("alice", "hunter2-secret", "192.0.2.15")).await,
        401
    );
    assert_eq!(
        status_of(&app, attempt("alice", "right", "192.0.2.15")).await,
        429
    );
    let logs = logs.text();
    assert!(
        logs.contains("login failed") && logs.contains("login throttled"),
        "{logs}"
    );
    assert!(
        !logs.contains("hunter2-secret") && !logs.contains("alice"),
        "{logs}"
    );
}

/// The counter store's own rules, on both stores.
async fn check_counter_rules(store: impl actix_login::store::ThrottleStore) {
    use actix_login::store::{Admission, Counter};
    let window = Duration::from_millis(300);
    let tight = Counter {
        name: "tight",
        max: 1,
        window,
    };
    let loose = Counter {
        name: "loose",
        max: 10,
        window,
    };

    assert_eq!(
        store.admit(&[tight, loose]).await.unwrap(),
        Admission::Admitted
    );
    // Refused by one counter: the other does not count the attempt either.
    for _ in 0..3 {
        assert!(matches!(
            store.admit(&[tight, loose]).await.unwrap(),
            Admission::Refused { .. }
        ));
    }
    let only_loose = Counter { max: 2, ..loose };
    assert_eq!(
        store.admit(&[only_loose]).await.unwrap(),
        Admission::Admitted
    );
    assert!(matches!(
        store.admit(&[only_loose]).await.unwrap(),
        Admission::Refused { .. }
    ));

    // A release after the window ended neither creates a counter nor goes negative.
    tokio::time::sleep(Duration::from_millis(350)).await;
    store
        .release(&["tight", "loose", "never-seen"])
        .await
        .unwrap();
    store.release(&["tight"]).await.unwrap();
    assert_eq!(store.admit(&[tight]).await.unwrap(), Admission::Admitted);
    assert!(
        matches!(
            store.admit(&[tight]).await.unwrap(),
            Admission::Refused { .. }
        ),
        "a release gave a fresh window extra room"
    );
}

#[actix_web::test]
async fn counter_rules_hold_on_both_stores() {
    check_counter_rules(actix_login::MemoryStore::new()).await;
    let url = shared_redis_url();
    check_counter_rules(redis_store_at(&url, &unique_prefix()).await).await;
}

#[actix_web::test]
async fn cross_site_logins_are_refused_before_they_count() {
    let url = shared_redis_url();
    let throttle = throttle_on(&url, &unique_prefix())
        .await
        .per_account_and_client(short(2));
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(throttle))
            .route("/login", web::post().to(login))
            .wrap(actix_login::LoginMiddleware::new(
                actix_login::MemoryStore::new(),
            )),
    )
    .await;
    for _ in 0..10 {
        let req = test::TestRequest::post()
            .uri("/login")
            .peer_addr("192.0.2.16:40000".parse().unwrap())
            .insert_header(("sec-fetch-site", "cross-site"))
            .set_json(serde_json::json!({"username": "alice", "password": "guess"}))
            .to_request();
        let res = test::call_service(&app, req).await;
        assert_eq!(
            status_and_body(res).await,
            (403, r#"{"error":"csrf_rejected"}"#.into())
        );
    }
    assert_eq!(
        status_of(&app, attempt("alice", "right", "192.0.2.16")).await,
        200
    );
}

#[actix_web::test]
async fn without_the_middleware_the_throttle_refuses_rather_than_guess_the_client() {
    let url = shared_redis_url();
    let throttle = throttle_on(&url, &unique_prefix()).await;
    let (logs, _guard) = support::logs::capture_logs();
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(throttle))
            .route("/login", web::post().to(login)),
    )
    .await;
    let res = test::call_service(&app, attempt("alice", "right", "192.0.2.20")).await;
    assert_eq!(res.status(), 500);
    let body = test::read_body(res).await;
    assert_eq!(&body[..], br#"{"error":"internal_error"}"#);
    assert!(
        logs.text().contains("without LoginMiddleware"),
        "{}",
        logs.text()
    );
}

/// `attempt`, from a browser that sends back `cookies` (`name=value` pairs).
fn attempt_from(
    username: &str,
    password: &str,
    peer: &str,
    cookies: &[String],
) -> actix_http::Request {
    let mut req = test::TestRequest::post()
        .uri("/login")
        .peer_addr(peer.parse().unwrap())
        .set_json(serde_json::json!({"username": username, "password": password}));
    if !cookies.is_empty() {
        req = req.insert_header(("cookie", cookies.join("; ")));
    }
    req.to_request()
}

/// Logs in with the right password and returns the cookies the browser was given.
async fn browser_after_login<S, B>(app: &S, username: &str, peer: &str) -> Vec<String>
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let res = test::call_service(app, attempt_from(username, "right", peer, &[])).await;
    assert_eq!(res.status(), 200, "{username} could not log in");
    cookies_of(&res)
}

/// Guesses at `username` from each peer until every guess is refused; returns how many were
/// let through to the password check.
async fn guess_from_everywhere<S, B>(app: &S, username: &str, peers: &[String]) -> usize
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let mut checked = 0;
    for peer in peers {
        for _ in 0..2 {
            match status_of(app, attempt_from(username, "guess", peer, &[])).await {
                401 => checked += 1,
                429 => {}
                other => panic!("guess from {peer}: {other}"),
            }
        }
    }
    checked
}

/// Every /64 of one /59 (32 networks), and a few IPv4 addresses: as many addresses as an
/// attacker with one ordinary IPv6 allocation has.
fn attacker_peers() -> Vec<String> {
    let mut peers: Vec<String> = (0x20..0x40)
        .map(|net| format!("[2001:db8:0:{net:x}::{net:x}]:40000"))
        .collect();
    peers.extend((1..=4).map(|n| format!("203.0.113.{n}:40000")));
    peers
}

#[actix_web::test]
async fn past_the_account_wide_ceiling_a_known_browser_gets_in_and_strangers_do_not() {
    let url = shared_redis_url();
    let throttle = throttle_on(&url, &unique_prefix())
        .await
        .per_account_and_client(Limit::new(2, Duration::from_secs(60)))
        .per_account(Limit::new(40, Duration::from_secs(60)));
    let app = app(throttle).await;
    let alice_browser = browser_after_login(&app, "alice", "192.0.2.40:40000").await;
    let bob_browser = browser_after_login(&app, "bob", "192.0.2.41:40000").await;

    let checked = guess_from_everywhere(&app, "alice", &attacker_peers()).await;
    assert_eq!(
        checked, 40,
        "the account-wide ceiling let {checked} guesses through"
    );

    // The account is locked for anyone the throttle does not know ...
    let stranger = attempt_from("alice", "right", "192.0.2.50:40000", &[]);
    assert_eq!(status_of(&app, stranger).await, 429);
    // ... and a made-up device token, or another account's, changes nothing ...
    let forged = vec![format!("__Host-device={}", "A".repeat(43))];
    let forged = attempt_from("alice", "right", "192.0.2.50:40000", &forged);
    assert_eq!(status_of(&app, forged).await, 429);
    let borrowed = attempt_from("alice", "right", "192.0.2.50:40000", &bob_browser);
    assert_eq!(status_of(&app, borrowed).await, 429);
    // ... but alice's own browser gets in, from a new address or from one of the attacker's,
    // keeping the fresh token each login hands out, as a browser does.
    let mut browser = alice_browser.clone();
    for peer in ["192.0.2.52:40000", "[2001:db8:0:20::1]:40000"] {
        let known = attempt_from("alice", "right", peer, &browser);
        let res = test::call_service(&app, known).await;
        assert_eq!(res.status(), 200, "alice's browser from {peer}");
        browser = cookies_of(&res);
    }
    // The token a success replaced is spent.
    let stale = attempt_from("alice", "right", "192.0.2.53:40000", &alice_browser);
    assert_eq!(status_of(&app, stale).await, 429);
}

fn cookies_of<B>(res: &ServiceResponse<B>) -> Vec<String> {
    res.response()
        .cookies()
        .map(|c| format!("{}={}", c.name(), c.value()))
        .collect()
}

#[actix_web::test]
async fn a_device_token_that_keeps_failing_is_revoked() {
    let url = shared_redis_url();
    let throttle = throttle_on(&url, &unique_prefix())
        .await
        .per_account_and_client(Limit::new(2, Duration::from_secs(60)))
        .per_account(Limit::new(4, Duration::from_secs(60)))
        .per_device(Limit::new(3, Duration::from_secs(60)));
    let app = app(throttle).await;
    let res = test::call_service(
        &app,
        attempt_from("alice", "right", "192.0.2.60:40000", &[]),
    )
    .await;
    assert_eq!(res.status(), 200);
    let set = res.response().cookies().next().expect("a device cookie");
    assert_eq!(
        (set.name(), set.http_only(), set.secure(), set.path()),
        ("__Host-device", Some(true), Some(true), Some("/")),
        "{set}"
    );
    assert_eq!(set.same_site(), Some(actix_web::cookie::SameSite::Strict));
    assert_eq!(
        set.max_age(),
        Some(actix_web::cookie::time::Duration::seconds(60))
    );
    let device = vec![format!("{}={}", set.name(), set.value())];

    // Strangers fill the account-wide ceiling; a device's guesses count against the device
    // alone: three of them ...
    let peers: Vec<String> = (1..=2).map(|n| format!("203.0.113.{n}:40000")).collect();
    assert_eq!(guess_from_everywhere(&app, "alice", &peers).await, 4);
    for _ in 0..3 {
        let guess = attempt_from("alice", "guess", "192.0.2.61:40000", &device);
        assert_eq!(status_of(&app, guess).await, 401);
    }
    // ... and then it is a stranger's browser again.
    let spent = attempt_from("alice", "right", "192.0.2.61:40000", &device);
    assert_eq!(status_of(&app, spent).await, 429);
}

/// Accounts by username, with their ids, which the test changes as an app renames accounts.
#[derive(Default)]
struct Accounts(std::sync::Mutex<std::collections::HashMap<String, String>>);

impl Accounts {
    fn set(&self, username: &str, id: Option<&str>) {
        let mut accounts = self.0.lock().unwrap();
        match id {
            Some(id) => accounts.insert(username.to_owned(), id.to_owned()),
            None => accounts.remove(username),
        };
    }

    fn id_of(&self, username: &str) -> Option<String> {
        self.0.lock().unwrap().get(username).cloned()
    }
}

/// The login handler with accounts looked up in `Accounts`; every account's password is
/// `right`.
async fn login_by_id(
    req: HttpRequest,
    throttle: web::Data<LoginThrottle>,
    accounts: web::Data<Accounts>,
    creds: web::Json<Credentials>,
) -> Result<HttpResponse, Error> {
    let id = accounts.id_of(&creds.username);
    let attempt = throttle
        .attempt(&req, &creds.username, id.as_deref())
        .await?;
    if id.is_some() && creds.password == "right" {
        let device = attempt.succeeded().await?;
        Ok(HttpResponse::Ok().cookie(device).body("welcome"))
    } else {
        attempt.failed().await?;
        Ok(HttpResponse::Unauthorized().json(serde_json::json!({"error": "invalid_credentials"})))
    }
}

/// A device cookie belongs to the account, not to the name typed: after a rename it still lets
/// its browser past a locked account under the new name, and a new account that takes the old
/// name does not inherit it.
#[actix_web::test]
async fn device_cookies_follow_the_account_id_not_the_name() {
    let url = shared_redis_url();
    let throttle = throttle_on(&url, &unique_prefix())
        .await
        .per_account_and_client(Limit::new(2, Duration::from_secs(60)))
        .per_account(Limit::new(4, Duration::from_secs(60)));
    let accounts = web::Data::new(Accounts::default());
    accounts.set("alice", Some("1"));
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(throttle))
            .app_data(accounts.clone())
            .route("/login", web::post().to(login_by_id))
            .wrap(LoginMiddleware::new(MemoryStore::new())),
    )
    .await;
    let res = test::call_service(
        &app,
        attempt_from("alice", "right", "192.0.2.70:40000", &[]),
    )
    .await;
    assert_eq!(res.status(), 200);
    let device = cookies_of(&res);

    // Account 1 is renamed to "alicia"; a new account, 2, takes the name "alice".
    accounts.set("alicia", Some("1"));
    accounts.set("alice", Some("2"));
    // Strangers lock both names.
    let peers: Vec<String> = (1..=2).map(|n| format!("203.0.113.{n}:40000")).collect();
    assert_eq!(guess_from_everywhere(&app, "alice", &peers).await, 4);
    assert_eq!(guess_from_everywhere(&app, "alicia", &peers).await, 4);

    // The browser of account 1 gets into account 1, under its new name ...
    let renamed = attempt_from("alicia", "right", "192.0.2.71:40000", &device);
    assert_eq!(
        status_of(&app, renamed).await,
        200,
        "the renamed account's browser"
    );
    // ... and not into account 2, which took its old name.
    let device_of_another = attempt_from("alice", "right", "192.0.2.71:40000", &device);
    assert_eq!(
        status_of(&app, device_of_another).await,
        429,
        "a new account inherited a device cookie through its name"
    );
}

/// A login the hashing queue turned away was never checked: retrying during a flood does not
/// use up the user's attempts, on any counter, for strangers or a known browser.
#[actix_web::test]
async fn a_login_turned_away_unchecked_counts_nowhere() {
    let url = shared_redis_url();
    let throttle = throttle_on(&url, &unique_prefix())
        .await
        .per_account_and_client(Limit::new(2, Duration::from_secs(60)))
        .per_client(Limit::new(3, Duration::from_secs(60)))
        .per_account(Limit::new(4, Duration::from_secs(60)))
        .per_device(Limit::new(2, Duration::from_secs(60)));
    let app = app(throttle).await;
    for _ in 0..10 {
        let busy = attempt_from("alice", "busy", "192.0.2.80:40000", &[]);
        assert_eq!(status_of(&app, busy).await, 503);
    }
    let res = test::call_service(
        &app,
        attempt_from("alice", "right", "192.0.2.80:40000", &[]),
    )
    .await;
    assert_eq!(res.status(), 200, "the unchecked attempts were counted");
    let device = cookies_of(&res);
    for _ in 0..10 {
        let busy = attempt_from("alice", "busy", "192.0.2.81:40000", &device);
        assert_eq!(status_of(&app, busy).await, 503);
    }
    let known = attempt_from("alice", "right", "192.0.2.81:40000", &device);
    assert_eq!(status_of(&app, known).await, 200, "the device was revoked");
}
