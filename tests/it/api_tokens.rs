//! `examples/api_tokens.rs` run as a process and held to its header: bearer tokens from a
//! password, personal access tokens with ends and scopes, listing, revocation, logout of one
//! token, throttled logins, and every way a token can be refused, on the memory store and on
//! Redis.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::minimal::{redis_db, redis_keys, Answer, Http, INVALID_BODY, INVALID_CREDENTIALS};
use crate::support::example::Example;

const ALICE: &str = r#"{"username":"alice","password":"alice-password-123"}"#;
const BOB: &str = r#"{"username":"bob","password":"bob-password-456"}"#;
const UNAUTHENTICATED: &str = r#"{"error":"unauthenticated"}"#;
const FORBIDDEN: &str = r#"{"error":"forbidden"}"#;
const INVALID_INPUT: &str = r#"{"error":"invalid_input"}"#;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Sends with `token` as a bearer token.
async fn with_token(
    http: &Http<'_>,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&str>,
) -> Answer {
    let authorization = format!("Bearer {token}");
    let headers = [("authorization", authorization.as_str())];
    http.send(method, path, &headers, body).await
}

/// A refusal of a bearer token: `401`, the fixed body, the challenge RFC 6750 asks for, and no
/// cookie.
fn assert_refused_token(answer: &Answer, what: &str) {
    assert_eq!(answer.said(), (401, UNAUTHENTICATED), "{what}");
    assert_eq!(
        answer.header("www-authenticate"),
        Some(r#"Bearer error="invalid_token""#),
        "{what}"
    );
    assert!(answer.set_cookies().is_empty(), "{what}");
}

/// `POST /token`: the issued token's JSON, checked for its shape, with no cookie and no cache.
async fn token_for(http: &Http<'_>, creds: &str) -> Value {
    let answer = http.post("/token", &[], creds).await;
    assert_eq!(answer.status, 200, "{creds}: {}", answer.body);
    assert!(
        answer.set_cookies().is_empty(),
        "{:?}",
        answer.set_cookies()
    );
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    let issued = answer.json();
    let token = issued["token"].as_str().expect("a token");
    assert_eq!(token.len(), 47, "{token}");
    assert!(issued["id"].as_str().is_some_and(|id| !id.is_empty()));
    // A login token follows the default 12-hour absolute lifetime; a remembered one 30 days.
    let expires_at = issued["expires_at"].as_u64().expect("an end");
    let lifetime = if creds.contains(r#""remember":true"#) {
        30 * 24 * 60 * 60
    } else {
        12 * 60 * 60
    };
    assert!(expires_at.abs_diff(unix_now() + lifetime) < 120, "{issued}");
    issued
}

fn token(issued: &Value) -> &str {
    issued["token"].as_str().unwrap()
}

/// `POST /tokens` with `body`, sent with `token`: status and JSON.
async fn create(http: &Http<'_>, token: &str, body: &str) -> (u16, Value) {
    let answer = with_token(http, "POST", "/tokens", token, Some(body)).await;
    let json = if answer.body.is_empty() {
        Value::Null
    } else {
        answer.json()
    };
    (answer.status, json)
}

async fn me(http: &Http<'_>, token: &str) -> Answer {
    with_token(http, "GET", "/me", token, None).await
}

async fn deploy_with(http: &Http<'_>, token: &str) -> Answer {
    with_token(http, "POST", "/deploy", token, None).await
}

async fn check(example: &Example) {
    let http = Http::new(example);

    // Refused logins: one answer for a wrong password and an unknown user, no token, no cookie.
    for creds in [
        r#"{"username":"alice","password":"bob-password-456"}"#,
        r#"{"username":"mallory","password":"alice-password-123"}"#,
    ] {
        let answer = http.post("/token", &[], creds).await;
        assert_eq!(answer.said(), (401, INVALID_CREDENTIALS), "{creds}");
        assert!(answer.set_cookies().is_empty());
    }
    for bad in [r#"{"username":"alice""#, "{}", r#"{"username":1}"#, ""] {
        let answer = http.post("/token", &[], bad).await;
        assert_eq!(answer.said(), (400, INVALID_BODY), "{bad:?}");
    }

    let login = token_for(&http, ALICE).await;
    let alice = token(&login);
    let answer = me(&http, alice).await;
    assert_eq!(
        answer.json(),
        serde_json::json!({"id": 1, "username": "alice", "token_name": null})
    );
    assert!(answer.set_cookies().is_empty());

    // Nothing, a malformed token, an unknown one, two of them, the token as a cookie.
    assert_eq!(http.get("/me", &[]).await.said(), (401, UNAUTHENTICATED));
    let mut unknown = alice.to_owned().into_bytes();
    unknown[20] = if unknown[20] == b'A' { b'B' } else { b'A' };
    let unknown = String::from_utf8(unknown).unwrap();
    let too_long = format!("{alice}A");
    for (what, header) in [
        ("no token", "Bearer".to_owned()),
        ("short", "Bearer abc".to_owned()),
        ("too long", format!("Bearer {too_long}")),
        (
            "not base64url",
            format!("Bearer {}", alice.replace(|_: char| true, "*")),
        ),
        ("unknown", format!("Bearer {unknown}")),
        ("lower-case scheme, unknown", format!("bearer {unknown}")),
    ] {
        let answer = http.get("/me", &[("authorization", header.as_str())]).await;
        assert_refused_token(&answer, what);
    }
    let twice = [
        ("authorization", format!("Bearer {alice}")),
        ("authorization", format!("Bearer {alice}")),
    ];
    let twice: Vec<(&str, &str)> = twice.iter().map(|(n, v)| (*n, v.as_str())).collect();
    assert_refused_token(&http.get("/me", &twice).await, "two tokens");
    let as_cookie = format!("__Host-id={alice}");
    assert_eq!(
        http.get("/me", &[("cookie", as_cookie.as_str())])
            .await
            .said(),
        (401, UNAUTHENTICATED)
    );

    // Personal access tokens: the ends and scopes asked for.
    let (status, deploy) = create(
        &http,
        alice,
        r#"{"name":"ci deploy","expires_in_secs":3600,"scopes":["deploy"]}"#,
    )
    .await;
    assert_eq!(status, 201, "{deploy}");
    let deploy_end = deploy["expires_at"].as_u64().expect("an end");
    assert!(deploy_end.abs_diff(unix_now() + 3600) < 120, "{deploy}");
    // Asked without an end, but made with a login token: it ends when that token does, so a
    // leaked login token cannot mint a permanent one.
    let (status, forever) = create(&http, alice, r#"{"name":"laptop"}"#).await;
    assert_eq!(status, 201, "{forever}");
    assert_eq!(forever["expires_at"], login["expires_at"], "{forever}");
    let (status, account) =
        create(&http, alice, r#"{"name":"dashboard","scopes":["account"]}"#).await;
    assert_eq!(status, 201, "{account}");
    for bad in [
        r#"{"name":""}"#.to_owned(),
        r#"{"name":"   "}"#.to_owned(),
        format!(r#"{{"name":"{}"}}"#, "x".repeat(65)),
        r#"{"name":"ci","expires_in_secs":0}"#.to_owned(),
        r#"{"name":"ci","scopes":[""]}"#.to_owned(),
    ] {
        assert_eq!(
            with_token(&http, "POST", "/tokens", alice, Some(&bad))
                .await
                .said(),
            (400, INVALID_INPUT),
            "{bad}"
        );
    }
    for bad in [
        r#"{"name":"ci","#,
        r#"{"name":"ci","expires_in_secs":-1}"#,
        "{}",
    ] {
        assert_eq!(
            with_token(&http, "POST", "/tokens", alice, Some(bad))
                .await
                .said(),
            (400, INVALID_BODY),
            "{bad}"
        );
    }
    let anonymous = http.post("/tokens", &[], r#"{"name":"ci"}"#).await;
    assert_eq!(anonymous.said(), (401, UNAUTHENTICATED));

    let answer = me(&http, token(&deploy)).await;
    assert_eq!(answer.json()["token_name"], "ci deploy");

    // Scopes: `deploy` passes tokens that have it or have none; `account` guards the account.
    for (what, issued) in [
        ("login", &login),
        ("unscoped", &forever),
        ("deploy", &deploy),
    ] {
        assert_eq!(
            deploy_with(&http, token(issued)).await.said(),
            (200, r#"{"deployed_by":"alice"}"#),
            "{what}"
        );
    }
    assert_eq!(
        deploy_with(&http, token(&account)).await.said(),
        (403, FORBIDDEN)
    );
    assert_eq!(
        http.send("POST", "/deploy", &[], None).await.said(),
        (401, UNAUTHENTICATED)
    );
    let deploy_token = token(&deploy);
    let lacks_account = with_token(&http, "GET", "/sessions", deploy_token, None).await;
    assert_eq!(lacks_account.said(), (403, FORBIDDEN));
    assert_eq!(
        lacks_account.header("www-authenticate"),
        Some(r#"Bearer error="insufficient_scope", scope="account""#)
    );
    assert_eq!(
        create(&http, deploy_token, r#"{"name":"more"}"#).await.0,
        403,
        "a deploy token made a token"
    );
    // Tokens make no tokens, even with the scope that lets them reach the route: no password
    // was entered in them.
    let account_token = token(&account);
    for body in [r#"{"name":"w","scopes":["deploy"]}"#, r#"{"name":"n"}"#] {
        assert_eq!(
            create(&http, account_token, body).await,
            (403, serde_json::json!({"error": "reauth_required"})),
            "{body}"
        );
    }

    // The list: every token of alice's, by kind and name, this one marked; none of bob's.
    let bob_login = token_for(&http, BOB).await;
    let answer = with_token(&http, "GET", "/sessions", alice, None).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let listed = answer.json();
    let listed = listed.as_array().expect("a list");
    assert_eq!(listed.len(), 4, "{listed:?}");
    let entry = |id: &Value| {
        listed
            .iter()
            .find(|entry| entry["id"] == *id)
            .unwrap_or_else(|| panic!("{id} not listed: {listed:?}"))
            .clone()
    };
    let this = entry(&login["id"]);
    assert_eq!(
        (&this["kind"], &this["name"], &this["current"]),
        (&Value::from("token"), &Value::Null, &Value::from(true))
    );
    for (issued, name) in [
        (&deploy, "ci deploy"),
        (&forever, "laptop"),
        (&account, "dashboard"),
    ] {
        let listed = entry(&issued["id"]);
        assert_eq!(
            (&listed["kind"], &listed["name"], &listed["current"]),
            (
                &Value::from("token"),
                &Value::from(name),
                &Value::from(false)
            )
        );
    }
    assert!(listed.iter().all(|entry| entry["id"] != bob_login["id"]));

    // Revocation: alice's own token ends; bob's is out of her reach.
    let bob_path = format!("/sessions/{}", bob_login["id"].as_str().unwrap());
    assert_eq!(
        with_token(&http, "DELETE", &bob_path, alice, None)
            .await
            .said(),
        (404, r#"{"error":"no_such_session"}"#)
    );
    assert_eq!(me(&http, token(&bob_login)).await.status, 200);
    let forever_path = format!("/sessions/{}", forever["id"].as_str().unwrap());
    assert_eq!(
        with_token(&http, "DELETE", &forever_path, alice, None)
            .await
            .said(),
        (204, "")
    );
    assert_refused_token(&me(&http, token(&forever)).await, "revoked");
    assert_eq!(
        with_token(&http, "DELETE", &forever_path, alice, None)
            .await
            .status,
        404
    );

    // Logout ends the token it came with, no cookie involved, and the tokens it made.
    let answer = with_token(&http, "POST", "/logout", alice, None).await;
    assert_eq!(answer.said(), (204, ""));
    assert!(answer.set_cookies().is_empty());
    assert_refused_token(&me(&http, alice).await, "logged out");
    assert_refused_token(
        &with_token(&http, "POST", "/logout", alice, None).await,
        "logged out twice",
    );
    assert_refused_token(
        &with_token(&http, "POST", "/tokens", alice, Some(r#"{"name":"x"}"#)).await,
        "minting after logout",
    );
    assert_refused_token(&me(&http, deploy_token).await, "made by a logged-out token");
    assert_refused_token(
        &me(&http, account_token).await,
        "made by a logged-out token",
    );
    // Another login, another token, is not touched.
    assert_eq!(me(&http, token(&bob_login)).await.status, 200);

    // A remembered login lasts 30 days, and so may what it makes.
    let remembered = token_for(
        &http,
        r#"{"username":"alice","password":"alice-password-123","remember":true}"#,
    )
    .await;
    let (status, laptop) = create(&http, token(&remembered), r#"{"name":"laptop"}"#).await;
    assert_eq!(status, 201, "{laptop}");
    assert_eq!(laptop["expires_at"], remembered["expires_at"], "{laptop}");

    // A token with an end stops working at it.
    let asked = Instant::now();
    let (status, brief) = create(
        &http,
        token(&remembered),
        r#"{"name":"brief","expires_in_secs":2}"#,
    )
    .await;
    assert_eq!(status, 201, "{brief}");
    let first = me(&http, token(&brief)).await;
    if asked.elapsed() < Duration::from_millis(1500) {
        assert_eq!(first.status, 200, "{}", first.body);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = me(&http, token(&brief)).await;
        if answer.status == 401 {
            assert_refused_token(&answer, "expired");
            break;
        }
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert!(Instant::now() < deadline, "the token outlived its end");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(asked.elapsed() >= Duration::from_secs(1), "ended early");
    assert_eq!(me(&http, token(&laptop)).await.status, 200);

    check_throttle(&http).await;
}

/// Five wrong passwords for bob from this address, then even his right one is `429`; alice,
/// another account, still gets in.
async fn check_throttle(http: &Http<'_>) {
    let wrong = r#"{"username":"bob","password":"bob-password-457"}"#;
    for attempt in 1..=5 {
        let answer = http.post("/token", &[], wrong).await;
        assert_eq!(
            answer.said(),
            (401, INVALID_CREDENTIALS),
            "attempt {attempt}"
        );
    }
    for creds in [wrong, BOB] {
        let answer = http.post("/token", &[], creds).await;
        assert_eq!(answer.said(), (429, r#"{"error":"too_many_attempts"}"#));
        let retry_after: u64 = answer
            .header("retry-after")
            .and_then(|secs| secs.parse().ok())
            .expect("Retry-After in seconds");
        assert!((1..=15 * 60).contains(&retry_after), "{retry_after}");
        assert!(answer.set_cookies().is_empty());
    }
    token_for(http, ALICE).await;
}

#[actix_web::test]
async fn api_tokens_with_the_memory_store() {
    let example = Example::start("api_tokens", &[]);
    check(&example).await;
}

#[actix_web::test]
async fn api_tokens_with_redis() {
    let url = redis_db(11);
    let example = Example::start("api_tokens", &[("REDIS_URL", &url)]);
    check(&example).await;
    let keys = redis_keys(&url);
    assert!(
        keys.iter().any(|key| key.starts_with("actix-login:s:")),
        "{keys:?}"
    );
}
