//! The quickstart's one-time links, held to their contract: password reset, e-mail
//! verification, e-mail change and sign-in by e-mail link, with the mail read back from `MAIL_DIR`, on the
//! memory store and on a Redis of their own (the link counters are per account and per
//! client address, so quickstarts sharing a Redis would share them).

use std::time::Duration;

use awc::http::StatusCode;
use futures_util::future::join_all;

use crate::support::mailbox::Mailbox;
use crate::support::quickstart::{session_cookie, Quickstart};
use crate::support::redis_server::RedisServer;

const INVALID_LINK: &str = r#"{"error":"invalid_link"}"#;
const ALICE: &str = "alice@example.test";
const BOB: &str = "bob@example.test";

/// A quickstart with a mail folder, on memory or on a fresh Redis (kept alive alongside).
struct App {
    app: Quickstart,
    mail: Mailbox,
    _redis: Option<RedisServer>,
}

impl App {
    fn start(on_redis: bool, env: &[(&str, &str)]) -> Self {
        let mail = Mailbox::new();
        // Logins from new browsers would mail notices between the links these tests read.
        let mut all = vec![mail.env(), ("NEW_DEVICE_MAIL", "0")];
        all.extend_from_slice(env);
        let redis = on_redis.then(RedisServer::start);
        let app = match &redis {
            Some(server) => Quickstart::spawn_on_redis(&server.url(), &all),
            None => Quickstart::spawn_with(&all),
        };
        Self {
            app,
            mail,
            _redis: redis,
        }
    }

    /// `POST {path}` `{"username"}`, asserting `202`: the body.
    async fn ask(&self, path: &str, username: &str) -> String {
        let body = serde_json::json!({ "username": username }).to_string();
        let (status, _, answer) = self.app.call("POST", path, Some(&body), None).await;
        assert_eq!(
            status,
            StatusCode::ACCEPTED,
            "{path} for {username}: {answer}"
        );
        answer
    }

    /// Asks for a link at `/{path}` for `username` and returns its secret from the mail to `to`.
    async fn link(&self, path: &str, username: &str, to: &str) -> String {
        self.ask(&format!("/{path}"), username).await;
        let mail = self.mail.next_to(to).await;
        let (url, secret) = mail.link(&self.app.base, path);
        assert_eq!(url, format!("{}/{path}/{secret}", self.app.base));
        secret
    }

    async fn post(&self, path: &str, body: Option<&str>) -> (StatusCode, Vec<String>, String) {
        self.app.call("POST", path, body, None).await
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let (status, _, body) = self.app.call("GET", path, None, None).await;
        (status, body)
    }

    async fn assert_gone(&self, path: &str, body: Option<&str>) {
        let (status, _, answer) = self.post(path, body).await;
        assert_eq!(
            (status, answer.as_str()),
            (StatusCode::GONE, INVALID_LINK),
            "POST {path}"
        );
    }

    async fn me(&self, cookie: &str) -> (StatusCode, serde_json::Value) {
        let (status, _, body) = self.app.call("GET", "/me", None, Some(cookie)).await;
        let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
        (status, json)
    }
}

const NEW_PASSWORD: &str = r#"{"password":"a brand new passphrase"}"#;

async fn password_reset(app: &App) {
    let before = app.app.log_in("alice", "alice-password-123").await;
    // Known and unknown accounts get the same answer; only the known one gets mail.
    let known = app.ask("/password-reset", "alice").await;
    let secret = {
        let mail = app.mail.next_to(ALICE).await;
        assert!(mail.subject.contains("password"), "{}", mail.subject);
        mail.link(&app.app.base, "password-reset").1
    };
    let unknown = app.ask("/password-reset", "mallory").await;
    assert_eq!(known, unknown);
    app.mail.assert_empty_for(Duration::from_millis(300)).await;

    let path = format!("/password-reset/{secret}");
    // Opening the link shows it and leaves it working, however often.
    for _ in 0..2 {
        let (status, body) = app.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("password_reset"), "{body}");
    }
    // The page's URL holds the secret: not cached, not sent on as a Referer.
    let reply = app.app.send("GET", &path, &[], None).await;
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.header("referrer-policy"), Some("no-referrer"));
    // A weak password is refused before the link is used.
    let (status, _, body) = app.post(&path, Some(r#"{"password":"short"}"#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("weak_password"), "{body}");
    // Another purpose's route does not take it, nor use it up.
    app.assert_gone(&format!("/magic-link/{secret}"), None)
        .await;
    app.assert_gone(&format!("/verify-email/{secret}"), None)
        .await;

    let (status, _, body) = app.post(&path, Some(NEW_PASSWORD)).await;
    assert_eq!((status, body.as_str()), (StatusCode::NO_CONTENT, ""));
    // Every session of the account ended; the old password is refused, the new one works.
    assert_eq!(app.me(&before).await.0, StatusCode::UNAUTHORIZED);
    let old = r#"{"username":"alice","password":"alice-password-123"}"#;
    let (status, _, _) = app.post("/login", Some(old)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    app.app.log_in("alice", "a brand new passphrase").await;
    // Used once: gone, for a look and for another use.
    app.assert_gone(&path, Some(NEW_PASSWORD)).await;
    assert_eq!(
        app.get(&path).await,
        (StatusCode::GONE, INVALID_LINK.into())
    );
}

async fn email_verification(app: &App) {
    let (status, _, body) = app.app.register("dora", "oxbow glimmer rotund").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mail = app.mail.next_to("dora@example.test").await;
    let (_, secret) = mail.link(&app.app.base, "verify-email");
    let cookie = app.app.log_in("dora", "oxbow glimmer rotund").await;
    let (status, me) = app.me(&cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["email_verified"], false, "{me}");
    let path = format!("/verify-email/{secret}");
    assert_eq!(app.get(&path).await.0, StatusCode::OK);
    assert_eq!(app.me(&cookie).await.1["email_verified"], false);
    let (status, _, body) = app.post(&path, None).await;
    assert_eq!((status, body.as_str()), (StatusCode::NO_CONTENT, ""));
    assert_eq!(app.me(&cookie).await.1["email_verified"], true);
    app.assert_gone(&path, None).await;
}

async fn magic_link(app: &App) {
    let secret = app.link("magic-link", "bob", BOB).await;
    let path = format!("/magic-link/{secret}");
    assert_eq!(app.get(&path).await.0, StatusCode::OK);
    let (status, cookies, body) = app.post(&path, None).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"id":2,"username":"bob"}"#)
    );
    let cookie = session_cookie(&cookies);
    assert!(
        cookies.iter().any(|c| c.starts_with("__Host-device=")),
        "{cookies:?}"
    );
    let (status, me) = app.me(&cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["username"], "bob");
    // The session list says how it signed in.
    let (status, _, body) = app.app.call("GET", "/sessions", None, Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let sessions: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let current = sessions.iter().find(|s| s["current"] == true).unwrap();
    assert_eq!(current["method"], "link", "{body}");
    app.assert_gone(&path, None).await;
}

async fn garbage_links(app: &App) {
    let long = "A".repeat(5000);
    let zeros = "A".repeat(43);
    for secret in ["x", "%00", "..", &zeros, &long, "%F0%9F%94%91"] {
        for route in [
            "password-reset",
            "verify-email",
            "confirm-email",
            "magic-link",
        ] {
            let path = format!("/{route}/{secret}");
            let (status, body) = app.get(&path).await;
            assert_eq!(
                (status, body.as_str()),
                (StatusCode::GONE, INVALID_LINK),
                "GET {path}"
            );
            app.assert_gone(&path, Some(NEW_PASSWORD)).await;
        }
    }
}

async fn racing_uses(app: &App) {
    let secret = app.link("magic-link", "alice", ALICE).await;
    let path = format!("/magic-link/{secret}");
    let uses = (0..6).map(|_| app.post(&path, None));
    let statuses: Vec<StatusCode> = join_all(uses).await.into_iter().map(|r| r.0).collect();
    let won = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let gone = statuses.iter().filter(|s| **s == StatusCode::GONE).count();
    assert_eq!((won, gone), (1, 5), "{statuses:?}");
}

async fn password_change_ends_reset_links(app: &App) {
    let secret = app.link("password-reset", "bob", BOB).await;
    let cookie = app.app.log_in("bob", "bob-password-456").await;
    let change =
        r#"{"current_password":"bob-password-456","new_password":"another fine passphrase"}"#;
    let (status, _, body) = app
        .app
        .call("POST", "/password", Some(change), Some(&cookie))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let path = format!("/password-reset/{secret}");
    assert_eq!(app.get(&path).await.0, StatusCode::GONE);
    app.assert_gone(&path, Some(NEW_PASSWORD)).await;
}

/// `POST /email` `{"email"}` with `cookie`: status and body.
async fn change_email(app: &App, cookie: Option<&str>, email: &str) -> (StatusCode, String) {
    let body = serde_json::json!({ "email": email }).to_string();
    let (status, _, answer) = app.app.call("POST", "/email", Some(&body), cookie).await;
    (status, answer)
}

/// Registers `username`, throws its verification mail away, and logs in (a fresh session).
async fn new_account(app: &App, username: &str, password: &str) -> String {
    let (status, _, body) = app.app.register(username, password).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    app.mail.next_to(&format!("{username}@example.test")).await;
    app.app.log_in(username, password).await
}

async fn email_change(app: &App) {
    let erin = new_account(app, "erin", "quiet harbour lantern").await;
    let before = serde_json::json!({
        "id": 4, "username": "erin", "email": "erin@example.test", "email_verified": false,
    });
    assert_eq!(app.me(&erin).await, (StatusCode::OK, before.clone()));

    // Bad paths first: no login, not one address, not JSON. Nothing is mailed.
    let (status, body) = change_email(app, None, "erin@example.org").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::UNAUTHORIZED, r#"{"error":"unauthenticated"}"#)
    );
    let too_long = format!("{}@example.org", "e".repeat(250));
    for bad in [
        "",
        "erin",
        "erin@",
        "@example.org",
        "erin@localhost",
        "erin@[127.0.0.1]",
        "erin smith@example.org",
        "erin@example.org
Bcc: eve@example.org",
        "Erin <erin@example.org>",
        "erin@example.org, eve@example.org",
        &too_long,
    ] {
        let (status, body) = change_email(app, Some(&erin), bad).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::BAD_REQUEST, r#"{"error":"invalid_email"}"#),
            "{bad:?}"
        );
    }
    let (status, _, body) = app
        .app
        .call(
            "POST",
            "/email",
            Some(r#"{"mail":"x@example.org"}"#),
            Some(&erin),
        )
        .await;
    assert_eq!(
        (status, body.as_str()),
        (
            StatusCode::BAD_REQUEST,
            r#"{"error":"invalid_request_body"}"#
        )
    );
    app.mail.assert_empty_for(Duration::from_millis(300)).await;

    // Another account's address: the answer a free one gets. Its owner is told, with no link,
    // and nothing changes.
    let (status, taken) = change_email(app, Some(&erin), "BOB@example.test").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{taken}");
    let notice = app.mail.next_to(BOB).await;
    assert!(!notice.raw.contains("/confirm-email/"), "{}", notice.raw);
    assert!(notice.raw.contains("already belongs"), "{}", notice.raw);
    assert_eq!(app.me(&erin).await, (StatusCode::OK, before.clone()));

    // A free address (typed in any case): the same answer, and a link to that address.
    let (status, free) = change_email(app, Some(&erin), " Erin@Example.ORG ").await;
    assert_eq!(
        (status, free.as_str()),
        (StatusCode::ACCEPTED, taken.as_str())
    );
    let mail = app.mail.next_to("erin@example.org").await;
    assert!(mail.subject.contains("e-mail"), "{}", mail.subject);
    let (url, secret) = mail.link(&app.app.base, "confirm-email");
    assert_eq!(url, format!("{}/confirm-email/{secret}", app.app.base));
    let path = format!("/confirm-email/{secret}");
    // Looking leaves it unused and the account as it was; other routes neither take nor use it.
    for _ in 0..2 {
        let (status, body) = app.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("change_email"), "{body}");
    }
    for other in ["verify-email", "password-reset", "magic-link"] {
        app.assert_gone(&format!("/{other}/{secret}"), Some(NEW_PASSWORD))
            .await;
    }
    assert_eq!(app.me(&erin).await, (StatusCode::OK, before));

    // Confirmed, with no login needed: the new address, verified; the old one is told.
    let (status, _, body) = app.post(&path, None).await;
    assert_eq!((status, body.as_str()), (StatusCode::NO_CONTENT, ""));
    let after = serde_json::json!({
        "id": 4, "username": "erin", "email": "erin@example.org", "email_verified": true,
    });
    assert_eq!(app.me(&erin).await, (StatusCode::OK, after));
    let notice = app.mail.next_to("erin@example.test").await;
    assert!(notice.raw.contains("no longer"), "{}", notice.raw);
    assert!(!notice.raw.contains(&app.app.base), "{}", notice.raw);
    // Once only.
    app.assert_gone(&path, None).await;
    assert_eq!(
        app.get(&path).await,
        (StatusCode::GONE, INVALID_LINK.into())
    );
    // Links now go to the new address.
    app.ask("/password-reset", "erin").await;
    app.mail.next_to("erin@example.org").await;

    // The latest request wins: the first link dies when a second address is asked for.
    let dora = app.app.log_in("dora", "oxbow glimmer rotund").await;
    let mut secrets = Vec::new();
    for to in ["dora@example.net", "dora@example.org"] {
        assert_eq!(
            change_email(app, Some(&dora), to).await.0,
            StatusCode::ACCEPTED
        );
        let mail = app.mail.next_to(to).await;
        secrets.push(mail.link(&app.app.base, "confirm-email").1);
    }
    app.assert_gone(&format!("/confirm-email/{}", secrets[0]), None)
        .await;
    let (status, _, _) = app
        .post(&format!("/confirm-email/{}", secrets[1]), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    app.mail.next_to("dora@example.test").await;
    assert_eq!(app.me(&dora).await.1["email"], "dora@example.org");

    // Two accounts asking for one free address: the first to confirm gets it.
    let shared = "shared@example.com";
    let mut secrets = Vec::new();
    for cookie in [&erin, &dora] {
        assert_eq!(
            change_email(app, Some(cookie), shared).await.0,
            StatusCode::ACCEPTED
        );
        secrets.push(
            app.mail
                .next_to(shared)
                .await
                .link(&app.app.base, "confirm-email")
                .1,
        );
    }
    let (status, _, _) = app
        .post(&format!("/confirm-email/{}", secrets[0]), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    app.mail.next_to("erin@example.org").await;
    let (status, _, body) = app
        .post(&format!("/confirm-email/{}", secrets[1]), None)
        .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::CONFLICT, r#"{"error":"email_taken"}"#)
    );
    assert_eq!(app.me(&erin).await.1["email"], shared);
    assert_eq!(app.me(&dora).await.1["email"], "dora@example.org");
}

async fn every_flow(on_redis: bool) {
    let app = App::start(on_redis, &[]);
    password_reset(&app).await;
    email_verification(&app).await;
    email_change(&app).await;
    magic_link(&app).await;
    garbage_links(&app).await;
    racing_uses(&app).await;
    password_change_ends_reset_links(&app).await;
}

#[actix_web::test]
async fn links_on_memory() {
    every_flow(false).await;
}

#[actix_web::test]
async fn links_on_redis() {
    every_flow(true).await;
}

/// `MAGIC_LINK_TTL_SECS` sets how long a sign-in link works.
#[actix_web::test]
async fn expired_links_are_gone() {
    let app = App::start(false, &[("MAGIC_LINK_TTL_SECS", "1")]);
    let secret = app.link("magic-link", "alice", ALICE).await;
    actix_web::rt::time::sleep(Duration::from_millis(1300)).await;
    let path = format!("/magic-link/{secret}");
    assert_eq!(
        app.get(&path).await,
        (StatusCode::GONE, INVALID_LINK.into())
    );
    app.assert_gone(&path, None).await;
}

/// Five links an hour per account by default; the sixth is refused with `Retry-After`, for
/// unknown names just the same.
#[actix_web::test]
async fn issuing_is_throttled_alike_for_known_and_unknown_accounts() {
    let app = App::start(true, &[]);
    for name in ["bob", "nobody"] {
        for _ in 0..5 {
            app.ask("/password-reset", name).await;
        }
        let body = serde_json::json!({ "username": name }).to_string();
        let reply = app
            .app
            .send(
                "POST",
                "/password-reset",
                &[("origin", app.app.base.as_str())],
                Some(&body),
            )
            .await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (
                StatusCode::TOO_MANY_REQUESTS,
                r#"{"error":"too_many_links"}"#
            ),
            "{name}"
        );
        let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=3600).contains(&retry), "{retry}");
    }
    // Five mails to bob, none for the unknown name.
    let mut to_bob = 0;
    for _ in 0..50 {
        to_bob += app.mail.new_mail().iter().filter(|m| m.to == BOB).count();
        if to_bob == 5 {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(to_bob, 5);
}

/// Changing the address is an account change: it needs a login from the last few minutes
/// (`FRESH_WINDOW_SECS`), and a password change ends the links issued before it.
#[actix_web::test]
async fn email_change_needs_a_fresh_login_and_dies_with_the_password() {
    let app = App::start(false, &[("FRESH_WINDOW_SECS", "1")]);
    let cookie = app.app.log_in("bob", "bob-password-456").await;
    assert_eq!(
        change_email(&app, Some(&cookie), "bob@example.org").await.0,
        StatusCode::ACCEPTED
    );
    let secret = app
        .mail
        .next_to("bob@example.org")
        .await
        .link(&app.app.base, "confirm-email")
        .1;
    actix_web::rt::time::sleep(Duration::from_millis(1300)).await;
    let (status, body) = change_email(&app, Some(&cookie), "bob@example.net").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::FORBIDDEN, r#"{"error":"reauth_required"}"#)
    );
    let reauth = r#"{"password":"bob-password-456"}"#;
    let (status, cookies, _) = app
        .app
        .call("POST", "/reauth", Some(reauth), Some(&cookie))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let cookie = session_cookie(&cookies);
    let change =
        r#"{"current_password":"bob-password-456","new_password":"another fine passphrase"}"#;
    let (status, _, body) = app
        .app
        .call("POST", "/password", Some(change), Some(&cookie))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let path = format!("/confirm-email/{secret}");
    assert_eq!(app.get(&path).await.0, StatusCode::GONE);
    app.assert_gone(&path, None).await;
    app.mail.assert_empty_for(Duration::from_millis(300)).await;
}

/// `CHANGE_EMAIL_TTL_SECS` sets how long a change link works.
#[actix_web::test]
async fn expired_email_change_links_are_gone() {
    let app = App::start(false, &[("CHANGE_EMAIL_TTL_SECS", "1")]);
    let cookie = app.app.log_in("alice", "alice-password-123").await;
    assert_eq!(
        change_email(&app, Some(&cookie), "alice@example.org")
            .await
            .0,
        StatusCode::ACCEPTED
    );
    let mail = app.mail.next_to("alice@example.org").await;
    let (_, secret) = mail.link(&app.app.base, "confirm-email");
    actix_web::rt::time::sleep(Duration::from_millis(1300)).await;
    app.assert_gone(&format!("/confirm-email/{secret}"), None)
        .await;
    assert_eq!(app.me(&cookie).await.1["email"], ALICE);
}
