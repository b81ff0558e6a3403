//! The quickstart's `GET /activity` and `GET /metrics`, held to their contract, on memory and
//! on a Redis of its own.

use std::time::Duration;

use awc::http::StatusCode;

use crate::support::mailbox::Mailbox;
use crate::support::quickstart::{device_cookie, session_cookie, Quickstart};
use crate::support::redis_server::RedisServer;

const ALICE: &str = r#"{"username":"alice","password":"alice-password-123"}"#;

/// `GET /activity` with `cookie`: the entries, asserting `200`.
async fn activity(app: &Quickstart, cookie: &str) -> Vec<serde_json::Value> {
    let (status, _, body) = app.call("GET", "/activity", None, Some(cookie)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_str(&body).unwrap()
}

async fn the_activity_log_shows_what_happened_to_the_account(app: Quickstart) {
    // Anonymous: 401.
    let (status, _, _) = app.call("GET", "/activity", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // A failed login, then one from a new browser, then one from the same browser.
    let wrong = r#"{"username":"alice","password":"not-her-password"}"#;
    let (status, _, _) = app.call("POST", "/login", Some(wrong), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, cookies, _) = app.call("POST", "/login", Some(ALICE), None).await;
    assert_eq!(status, StatusCode::OK);
    let first = session_cookie(&cookies);
    let device = device_cookie(&cookies);
    let (status, cookies, _) = app.call("POST", "/login", Some(ALICE), Some(&device)).await;
    assert_eq!(status, StatusCode::OK);
    let second = session_cookie(&cookies);
    // Each login replaces the browser's device cookie.
    let device = device_cookie(&cookies);

    // A token, the first session revoked, a password change, a logout.
    app.create_token(&[("cookie", &second)], "backup", None)
        .await;
    let first_id = app
        .session_list(&[("cookie", &second)])
        .await
        .into_iter()
        .find(|s| s["current"] == false && s["kind"] == "browser")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _, _) = app
        .call(
            "DELETE",
            &format!("/sessions/{first_id}"),
            None,
            Some(&second),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(app.me(&first).await, StatusCode::UNAUTHORIZED);
    let change =
        r#"{"current_password":"alice-password-123","new_password":"alice-new-password-456"}"#;
    let (status, cookies, body) = app
        .call("POST", "/password", Some(change), Some(&second))
        .await;
    assert!(status.is_success(), "{status} {body}");
    let current = if cookies.iter().any(|c| c.starts_with("__Host-id=")) {
        session_cookie(&cookies)
    } else {
        second
    };
    let new_login = r#"{"username":"alice","password":"alice-new-password-456"}"#;
    let (status, cookies, _) = app
        .call("POST", "/login", Some(new_login), Some(&device))
        .await;
    assert_eq!(status, StatusCode::OK);
    app.log_out(&session_cookie(&cookies)).await;

    let log = activity(&app, &current).await;
    let types: Vec<&str> = log.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "logout",
            "login",
            "password_changed",
            "session_revoked",
            "token_created",
            "login",
            "new_device",
            "login_failed",
            // The quickstart records each seeded user's credentials version as it starts.
            "password_changed"
        ],
        "{log:?}"
    );
    for entry in &log {
        assert!(entry["at"].is_u64(), "{entry}");
        assert!(entry["id"].is_string(), "{entry}");
    }
    let failed = &log[7];
    assert_eq!(failed["ip"], "127.0.0.1", "{failed}");
    assert!(failed["session_id"].is_null(), "{failed}");
    assert_eq!(
        log[3]["session_id"].as_str(),
        Some(first_id.as_str()),
        "{log:?}"
    );
    assert!(log
        .windows(2)
        .all(|w| w[0]["at"].as_u64() >= w[1]["at"].as_u64()));
    // Paged on from an entry's id.
    let path = format!("/activity?before={}", log[5]["id"].as_str().unwrap());
    let (status, _, body) = app.call("GET", &path, None, Some(&current)).await;
    assert_eq!(status, StatusCode::OK);
    let page: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(page, log[6..].to_vec());

    // Bob sees none of it.
    let bob = app.log_in("bob", "bob-password-456").await;
    let bobs: Vec<String> = activity(&app, &bob)
        .await
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(bobs, ["new_device", "password_changed"]);

    // The metrics, with the logins counted by result.
    let (status, _, body) = app.call("GET", "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains(r#"actix_login_logins_total{result="success"}"#),
        "{body}"
    );
    assert!(
        body.contains(r#"actix_login_logins_total{result="failure"} 1"#),
        "{body}"
    );
    assert!(body.contains("actix_login_logouts_total 1"), "{body}");
}

#[actix_web::test]
async fn activity_and_metrics_on_memory() {
    let app = Quickstart::spawn_with(&[("METRICS", "1"), ("FRESH_WINDOW_SECS", "60")]);
    the_activity_log_shows_what_happened_to_the_account(app).await;
}

#[actix_web::test]
async fn activity_and_metrics_on_redis() {
    // A Redis of its own: other quickstarts log alice in too, and her log would show it.
    let server = RedisServer::start();
    let app = Quickstart::spawn_on_redis(
        &server.url(),
        &[("METRICS", "1"), ("FRESH_WINDOW_SECS", "60")],
    );
    the_activity_log_shows_what_happened_to_the_account(app).await;
    let (status, _, body) = Quickstart::spawn_with(&[])
        .call("GET", "/metrics", None, None)
        .await;
    assert_eq!(
        (status.as_u16(), body.as_str()),
        (404, r#"{"error":"not_found"}"#)
    );
}

/// With mail on (`MAIL_DIR`), a login from a browser without the account's device cookie
/// mails a notice by default, with a link that ends that session and nothing else; one from a
/// known browser mails nothing. The link spends none of the account's hourly link allowance,
/// `GET` leaves it working, `POST` ends the session (`204`), and it works once (`410`).
async fn a_login_from_a_new_browser_is_mailed_with_a_way_out(redis: Option<&RedisServer>) {
    let mail = Mailbox::new();
    // One link an hour: a notice that spent it would leave no room for the reset below.
    let env = [mail.env(), ("LINKS_PER_ACCOUNT", "1")];
    let app = match redis {
        Some(server) => Quickstart::spawn_on_redis(&server.url(), &env),
        None => Quickstart::spawn_with(&env),
    };
    let reply = app
        .send(
            "POST",
            "/login",
            &[
                ("origin", app.base.as_str()),
                ("user-agent", "Stranger/1.0"),
            ],
            Some(ALICE),
        )
        .await;
    let (status, cookies) = (reply.status, reply.set_cookies());
    assert_eq!(status, StatusCode::OK);
    let stranger = session_cookie(&cookies);
    let device = device_cookie(&cookies);
    let notice = mail.next_to("alice@example.test").await;
    assert_eq!(notice.subject, "New sign-in to your account");
    assert!(notice.raw.contains("Address: 127.0.0.1"), "{}", notice.raw);
    assert!(
        notice.raw.contains("Browser: Stranger/1.0"),
        "{}",
        notice.raw
    );
    let (_, secret) = notice.link(&app.base, "end-session");

    // The same browser again: no notice. This session must outlive the link's use.
    let (status, cookies, _) = app.call("POST", "/login", Some(ALICE), Some(&device)).await;
    assert_eq!(status, StatusCode::OK);
    let known = session_cookie(&cookies);
    mail.assert_empty_for(Duration::from_millis(500)).await;

    // The notice spent none of the account's link allowance.
    let ask = r#"{"username":"alice"}"#;
    let (status, _, body) = app.call("POST", "/password-reset", Some(ask), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let reset = mail.next_to("alice@example.test").await;
    reset.link(&app.base, "password-reset");

    // Opening the link shows what it does and leaves everything as it was.
    let path = format!("/end-session/{secret}");
    let (status, _, body) = app.call("GET", &path, None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let offer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(offer["purpose"], "end_session", "{body}");
    assert_eq!(app.me(&stranger).await, StatusCode::OK);

    // "This wasn't me": that session ends, the others stay.
    let (status, _, body) = app.call("POST", &path, None, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(app.me(&stranger).await, StatusCode::UNAUTHORIZED);
    assert_eq!(app.me(&known).await, StatusCode::OK);
    let (status, _, body) = app.call("POST", &path, None, None).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::GONE, r#"{"error":"invalid_link"}"#)
    );
    let types: Vec<String> = activity(&app, &known)
        .await
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(types.contains(&"session_revoked".to_owned()), "{types:?}");
}

#[actix_web::test]
async fn a_new_browser_is_mailed_with_a_way_out_on_memory() {
    a_login_from_a_new_browser_is_mailed_with_a_way_out(None).await;
}

#[actix_web::test]
async fn a_new_browser_is_mailed_with_a_way_out_on_redis() {
    // A Redis of its own: the link counters are per account.
    let server = RedisServer::start();
    a_login_from_a_new_browser_is_mailed_with_a_way_out(Some(&server)).await;
}

/// `NEW_DEVICE_MAIL=0` turns the notice off, mail on or not.
#[actix_web::test]
async fn new_device_mail_can_be_turned_off() {
    let mail = Mailbox::new();
    let app = Quickstart::spawn_with(&[mail.env(), ("NEW_DEVICE_MAIL", "0")]);
    let (status, _, _) = app.call("POST", "/login", Some(ALICE), None).await;
    assert_eq!(status, StatusCode::OK);
    mail.assert_empty_for(Duration::from_millis(500)).await;
}

async fn impersonation_is_audited_and_changes_nothing(app: Quickstart) {
    let alice = app.log_in("alice", "alice-password-123").await;
    let bob = app.log_in("bob", "bob-password-456").await;

    // Bob is no admin; nobody impersonates an unknown user.
    let (status, _, _) = app
        .call("POST", "/admin/impersonate/alice", None, Some(&bob))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, body) = app
        .call("POST", "/admin/impersonate/mallory", None, Some(&alice))
        .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#)
    );

    // Alice acts as bob.
    let (status, cookies, body) = app
        .call("POST", "/admin/impersonate/bob", None, Some(&alice))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let as_bob = session_cookie(&cookies);
    let (status, _, me) = app.call("GET", "/me", None, Some(&as_bob)).await;
    assert_eq!(status, StatusCode::OK);
    let me: serde_json::Value = serde_json::from_str(&me).unwrap();
    assert_eq!(
        (me["username"].as_str(), me["impersonated_by"].as_str()),
        (Some("bob"), Some("alice"))
    );
    let (_, _, bobs_me) = app.call("GET", "/me", None, Some(&bob)).await;
    assert!(!bobs_me.contains("impersonated_by"), "{bobs_me}");
    let listed = app.session_list(&[("cookie", &bob)]).await;
    assert!(
        listed.iter().any(|s| s["impersonated_by"] == "1"),
        "bob's list shows the impersonation: {listed:?}"
    );

    // No account change while impersonating.
    const IMPERSONATING: &str = r#"{"error":"impersonating"}"#;
    let change = r#"{"current_password":"bob-password-456","new_password":"bob-new-password-789"}"#;
    let (status, _, body) = app
        .call("POST", "/password", Some(change), Some(&as_bob))
        .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::FORBIDDEN, IMPERSONATING)
    );
    let (status, _, body) = app
        .call("POST", "/tokens", Some(r#"{"name":"x"}"#), Some(&as_bob))
        .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::FORBIDDEN, IMPERSONATING)
    );
    let (status, _, body) = app
        .call("POST", "/sessions/revoke-others", None, Some(&as_bob))
        .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::FORBIDDEN, IMPERSONATING)
    );
    assert_eq!(app.me(&bob).await, StatusCode::OK);
    // Nor a second impersonation from the first.
    let (status, _, _) = app
        .call("POST", "/admin/impersonate/alice", None, Some(&as_bob))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Stop: back to alice's own session, under a new cookie.
    let (status, cookies, body) = app
        .call("POST", "/admin/impersonate/stop", None, Some(&as_bob))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let back = session_cookie(&cookies);
    let (_, _, me) = app.call("GET", "/me", None, Some(&back)).await;
    let me: serde_json::Value = serde_json::from_str(&me).unwrap();
    assert_eq!(
        (me["username"].as_str(), me.get("impersonated_by")),
        (Some("alice"), None)
    );
    assert_eq!(app.me(&as_bob).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.me(&alice).await,
        StatusCode::UNAUTHORIZED,
        "the old cookie was replaced"
    );
    let (status, _, _) = app
        .call("POST", "/admin/impersonate/stop", None, Some(&back))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Both logs show it.
    for cookie in [&back, &bob] {
        let types: Vec<String> = activity(&app, cookie)
            .await
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            types[..2],
            ["impersonation_ended", "impersonation_started"],
            "{types:?}"
        );
    }
}

#[actix_web::test]
async fn impersonation_on_memory() {
    let app = Quickstart::spawn_with(&[("FRESH_WINDOW_SECS", "60")]);
    impersonation_is_audited_and_changes_nothing(app).await;
}

#[actix_web::test]
async fn impersonation_on_redis() {
    let server = RedisServer::start();
    let app = Quickstart::spawn_on_redis(&server.url(), &[("FRESH_WINDOW_SECS", "60")]);
    impersonation_is_audited_and_changes_nothing(app).await;
}
