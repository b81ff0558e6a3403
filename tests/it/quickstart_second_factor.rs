//! The quickstart's second factor, held to the contract of issue 22: enrolment behind a fresh
//! login, a password login that is no login until a code, codes that work once, and wrong
//! codes throttled per account from any address; on the memory store and on a Redis of its
//! own (the code counters are per account, so quickstarts sharing a Redis would share them).

use std::time::{SystemTime, UNIX_EPOCH};

use awc::http::StatusCode;
use serde_json::{json, Value};
use totp_rs::{Builder, Secret};

use crate::support::quickstart::{session_cookie, Quickstart};
use crate::support::redis_server::RedisServer;

const ALICE: (&str, &str) = ("alice", "alice-password-123");

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

fn body(code: &str) -> String {
    json!({ "code": code }).to_string()
}

fn login_body((username, password): (&str, &str)) -> String {
    json!({ "username": username, "password": password }).to_string()
}

/// Turns alice's second factor on through the routes: her secret, her recovery codes, and the
/// step whose code confirmed it (used up; the next one is free for at least 30 seconds).
async fn enrol_alice(app: &Quickstart) -> (String, Vec<String>, u64) {
    let cookie = app.log_in(ALICE.0, ALICE.1).await;
    let (status, _, answer) = app.call("POST", "/2fa/enroll", None, Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    let secret = answer["secret"].as_str().unwrap().to_owned();
    let url = answer["otpauth_url"].as_str().unwrap();
    assert!(url.starts_with("otpauth://totp/"), "{url}");
    assert!(url.contains("alice") && url.contains(&secret), "{url}");
    let step = current_step();
    let code = code_at(&secret, step);
    let (status, _, answer) = app
        .call("POST", "/2fa/confirm", Some(&body(&code)), Some(&cookie))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    let codes: Vec<String> = serde_json::from_value(answer["recovery_codes"].clone()).unwrap();
    assert_eq!(codes.len(), 10);
    assert!(codes.iter().all(|c| c.len() >= 16), "{codes:?}");
    (secret, codes, step)
}

/// `POST /login` with alice's password: `200 {"second_factor_required": true}`; the cookie.
async fn half_login(app: &Quickstart) -> String {
    let (status, cookies, answer) = app
        .call("POST", "/login", Some(&login_body(ALICE)), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        serde_json::from_str::<Value>(&answer).unwrap(),
        json!({ "second_factor_required": true })
    );
    session_cookie(&cookies)
}

async fn second_factor(
    app: &Quickstart,
    cookie: &str,
    code: &str,
) -> (StatusCode, Vec<String>, String) {
    app.call(
        "POST",
        "/login/second-factor",
        Some(&body(code)),
        Some(cookie),
    )
    .await
}

async fn the_contract_holds(app: &Quickstart) {
    // Enrolment needs a login.
    let (status, _, _) = app.call("POST", "/2fa/enroll", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (secret, recovery, step) = enrol_alice(app).await;

    let half = half_login(app).await;
    let (status, _, answer) = app.call("GET", "/me", None, Some(&half)).await;
    assert_eq!(
        (status, answer.as_str()),
        (
            StatusCode::UNAUTHORIZED,
            r#"{"error":"second_factor_required"}"#
        )
    );
    let code = code_at(&secret, step + 1);
    let (status, cookies, answer) = second_factor(app, &half, &code).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let full = session_cookie(&cookies);
    assert_ne!(full, half);
    assert_eq!(app.me(&full).await, StatusCode::OK);
    assert_eq!(app.me(&half).await, StatusCode::UNAUTHORIZED);

    // A code used once is refused the second time; so is the one that confirmed enrolment.
    for used in [code_at(&secret, step), code] {
        let again = half_login(app).await;
        let (status, _, answer) = second_factor(app, &again, &used).await;
        assert_eq!(
            (status, answer.as_str()),
            (StatusCode::UNAUTHORIZED, r#"{"error":"invalid_code"}"#)
        );
        assert_eq!(app.me(&again).await, StatusCode::UNAUTHORIZED);
    }

    // A recovery code logs in once.
    let half = half_login(app).await;
    let (status, cookies, answer) = second_factor(app, &half, &recovery[0]).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(app.me(&session_cookie(&cookies)).await, StatusCode::OK);
    let half = half_login(app).await;
    let (status, _, _) = second_factor(app, &half, &recovery[0]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // bob has no second factor: his password logs him in, as before.
    let (status, cookies, answer) = app
        .call(
            "POST",
            "/login",
            Some(&login_body(("bob", "bob-password-456"))),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(answer.contains(r#""username":"bob""#), "{answer}");
    assert_eq!(app.me(&session_cookie(&cookies)).await, StatusCode::OK);
}

async fn wrong_codes_are_throttled(app: &Quickstart) {
    let (_, recovery, _) = enrol_alice(app).await;
    // 5 wrong codes within 15 minutes, each from another address: then even a right code,
    // from yet another, is 429.
    let half = half_login(app).await;
    let wrong = "abcd-efgh-ijkl-mnop";
    for n in 1..=5 {
        let client = format!("203.0.113.{n}");
        let (status, retry, _, answer) = app
            .post_for(&client, "/login/second-factor", &body(wrong), Some(&half))
            .await;
        assert_eq!(
            (status, retry, answer.as_str()),
            (
                StatusCode::UNAUTHORIZED,
                None,
                r#"{"error":"invalid_code"}"#
            ),
            "wrong code {n}"
        );
    }
    let (status, retry, _, answer) = app
        .post_for(
            "198.51.100.7",
            "/login/second-factor",
            &body(&recovery[1]),
            Some(&half),
        )
        .await;
    assert_eq!(
        (status, answer.as_str()),
        (
            StatusCode::TOO_MANY_REQUESTS,
            r#"{"error":"too_many_codes"}"#
        )
    );
    let retry: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=15 * 60).contains(&retry), "{retry}");
}

#[actix_web::test]
async fn the_second_factor_keeps_its_contract_in_memory() {
    the_contract_holds(&Quickstart::spawn()).await;
}

#[actix_web::test]
async fn the_second_factor_keeps_its_contract_on_redis() {
    let server = RedisServer::start();
    the_contract_holds(&Quickstart::spawn_on_redis(&server.url(), &[])).await;
}

#[actix_web::test]
async fn wrong_codes_are_throttled_from_any_address_in_memory() {
    let app = Quickstart::spawn_with(&[("TRUST_PROXIES", "127.0.0.1")]);
    wrong_codes_are_throttled(&app).await;
}

#[actix_web::test]
async fn wrong_codes_are_throttled_from_any_address_on_redis() {
    let server = RedisServer::start();
    let app = Quickstart::spawn_on_redis(&server.url(), &[("TRUST_PROXIES", "127.0.0.1")]);
    wrong_codes_are_throttled(&app).await;
}
