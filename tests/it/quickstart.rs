//! The quickstart example is a contract: build it, run the binary and hold it to its routes.
//!
//! The binary is built and started, and requests are sent, by the
//! [`Quickstart`](crate::support::quickstart::Quickstart) fixture.

use std::time::{Duration, Instant};

use awc::http::StatusCode;

use crate::support;
use crate::support::quickstart::{
    assert_token_refused, bearer, device_cookie, max_age, session_cookie, session_set_cookie,
    unix_now, Quickstart, INVALID_INPUT,
};
use crate::support::redis_server::shared_redis_url;

async fn check_contract(app: &Quickstart) {
    let alice = r#"{"username":"alice","password":"alice-password-123"}"#;
    let (status, cookies, body) = app.post_json("/login", alice, None).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"id":1,"username":"alice"}"#)
    );
    // The session, and the device cookie that lets this browser past the login throttle.
    assert_eq!(cookies.len(), 2, "{cookies:?}");
    device_cookie(&cookies);
    let set_cookie = cookies
        .iter()
        .find(|c| c.starts_with("__Host-id="))
        .unwrap();
    for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
        assert!(set_cookie.contains(attr), "{set_cookie}");
    }
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    assert!(cookie.starts_with("__Host-id="));

    let (status, _, body) = app.call("GET", "/me", None, Some(&cookie)).await;
    assert_eq!(
        (status, body.as_str()),
        (
            StatusCode::OK,
            r#"{"id":1,"username":"alice","email":"alice@example.test","email_verified":true}"#
        )
    );

    // Wrong password and unknown user: the same answer.
    let invalid = (
        StatusCode::UNAUTHORIZED,
        vec![],
        r#"{"error":"invalid_credentials"}"#.to_owned(),
    );
    for creds in [
        r#"{"username":"alice","password":"bob-password-456"}"#,
        r#"{"username":"mallory","password":"alice-password-123"}"#,
    ] {
        assert_eq!(app.post_json("/login", creds, None).await, invalid);
    }
    let bad = app.post_json("/login", r#"{"username":"#, None).await;
    assert_eq!(bad.0, StatusCode::BAD_REQUEST);
    assert_eq!(bad.2, r#"{"error":"invalid_request_body"}"#);

    let bob = r#"{"username":"bob","password":"bob-password-456"}"#;
    let (status, _, body) = app.post_json("/login", bob, None).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"id":2,"username":"bob"}"#)
    );

    let (status, cookies, body) = app.post_json("/logout", "", Some(&cookie)).await;
    assert_eq!((status, body.as_str()), (StatusCode::NO_CONTENT, ""));
    assert!(cookies[0].starts_with("__Host-id=;") && cookies[0].contains("Max-Age=0"));

    let unauthenticated = r#"{"error":"unauthenticated"}"#;
    let (status, _, body) = app.call("GET", "/me", None, Some(&cookie)).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::UNAUTHORIZED, unauthenticated)
    );
    let (status, _, body) = app.call("GET", "/me", None, None).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::UNAUTHORIZED, unauthenticated)
    );
    let (status, _, body) = app.post_json("/logout", "", Some(&cookie)).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::UNAUTHORIZED, unauthenticated)
    );

    // The data and role checks work on a user of their own: quickstart processes sharing a Redis
    // share user ids, so a role change of alice or bob here, or a session of theirs kept long,
    // would reach the others' (in their session lists, their per-user caps).
    let (status, _, body) = app.call("POST", "/register", Some(CAROL), None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    check_session_data(app).await;
    check_role_changes(app).await;
}

/// A user that `check_contract` signs up.
const CAROL: &str = r#"{"username":"carol","password":"oxbow glimmer rotund"}"#;

/// The cart and preferences: anonymous sessions that only writes start, login keeping them,
/// logout ending them.
async fn check_session_data(app: &Quickstart) {
    let add = |item: &str| format!(r#"{{"item":{}}}"#, serde_json::Value::from(item));

    // Reading starts no session: an empty cart, empty preferences, no cookie.
    for (path, empty) in [("/cart", r#"{"items":[]}"#), ("/prefs", "{}")] {
        let (body, sets_session) = app.read_data(path, None).await;
        assert_eq!(body, empty, "GET {path}");
        assert!(!sets_session, "GET {path} without a session set a cookie");
    }

    // Bad items are refused, and start no session either.
    let too_long = add(&"x".repeat(101));
    for bad in [
        add("").as_str(),
        &too_long,
        r#"{"item":"#,
        "not json",
        "{}",
        r#"{"item":5}"#,
        r#"{"items":["tea"]}"#,
    ] {
        let (status, cookies, body) = app.call("POST", "/cart", Some(bad), None).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::BAD_REQUEST, INVALID_INPUT),
            "{bad}"
        );
        assert!(cookies.is_empty(), "{bad}: {cookies:?}");
    }

    // The first item starts an anonymous session; the limit counts characters, not bytes.
    let (status, cookies, body) = app.call("POST", "/cart", Some(&add("tea")), None).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"items":["tea"]}"#)
    );
    let visitor = session_cookie(&cookies);
    let longest = "é".repeat(100);
    let (status, cookies, body) = app
        .call("POST", "/cart", Some(&add(&longest)), Some(&visitor))
        .await;
    let two_items = format!(r#"{{"items":["tea","{longest}"]}}"#);
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, two_items.as_str())
    );
    assert!(cookies.is_empty(), "a second write re-issued: {cookies:?}");
    assert_eq!(app.cart(Some(&visitor)).await, two_items);
    // Not a login.
    for path in ["/me", "/admin"] {
        let (status, _, _) = app.call("GET", path, None, Some(&visitor)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }

    // Preferences: one value per key, replaced by a later write.
    let longest_value = "ü".repeat(1000);
    let key32 = "k".repeat(32);
    for (key, value) in [
        ("theme", "dark"),
        ("theme", "light"),
        ("lang_2", ""),
        ("sig", longest_value.as_str()),
        (key32.as_str(), "x"),
    ] {
        let body = format!(r#"{{"value":{}}}"#, serde_json::Value::from(value));
        assert_eq!(
            app.put_pref(key, &body, &visitor).await,
            (StatusCode::NO_CONTENT, String::new()),
            "{key}"
        );
    }
    let too_long_value = format!(r#"{{"value":"{}"}}"#, "ü".repeat(1001));
    let key33 = "k".repeat(33);
    for (key, body) in [
        ("Bad-Key", r#"{"value":"v"}"#),
        (key33.as_str(), r#"{"value":"v"}"#),
        ("", r#"{"value":"v"}"#),
        ("a.b", r#"{"value":"v"}"#),
        ("theme", &too_long_value),
        ("theme", r#"{"value":"#),
        ("theme", r#"{"value":5}"#),
        ("theme", "{}"),
    ] {
        assert_eq!(
            app.put_pref(key, body, &visitor).await,
            (StatusCode::BAD_REQUEST, INVALID_INPUT.to_owned()),
            "{key:?} {body}"
        );
    }
    let expected_prefs = serde_json::json!({
        "theme": "light",
        "lang_2": "",
        "sig": longest_value,
        key32.clone(): "x",
    });
    // Only the preferences: the cart is not one of them.
    assert_eq!(app.prefs(&visitor).await, expected_prefs);

    // A login keeps the data of the anonymous session it replaces, which ends.
    let (status, cookies, _) = app
        .call("POST", "/login", Some(CAROL), Some(&visitor))
        .await;
    assert_eq!(status, StatusCode::OK);
    let carol_session = session_cookie(&cookies);
    assert_ne!(carol_session, visitor);
    assert_eq!(app.cart(Some(&carol_session)).await, two_items);
    assert_eq!(app.prefs(&carol_session).await, expected_prefs);
    assert_eq!(app.cart(Some(&visitor)).await, r#"{"items":[]}"#);
    let (status, _, body) = app
        .call("POST", "/cart", Some(&add("jam")), Some(&carol_session))
        .await;
    let three_items = format!(r#"{{"items":["tea","{longest}","jam"]}}"#);
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, three_items.as_str())
    );

    // Logout ends the session and its data.
    app.log_out(&carol_session).await;
    let (body, sets_session) = app.read_data("/cart", None).await;
    assert_eq!(body, r#"{"items":[]}"#);
    assert!(!sets_session);
    assert_eq!(app.cart(Some(&carol_session)).await, r#"{"items":[]}"#);
    assert_eq!(app.prefs(&carol_session).await, serde_json::json!({}));

    // A write with the ended session's cookie starts a new, empty session: the old one, and
    // its cart, stay gone.
    let (status, cookies, body) = app
        .call("POST", "/cart", Some(&add("salt")), Some(&carol_session))
        .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"items":["salt"]}"#)
    );
    let restarted = session_cookie(&cookies);
    assert_ne!(restarted, carol_session);
    assert_eq!(app.cart(Some(&carol_session)).await, r#"{"items":[]}"#);
    assert_eq!(app.cart(Some(&restarted)).await, r#"{"items":["salt"]}"#);
    let (status, _, _) = app.call("GET", "/me", None, Some(&carol_session)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = app.call("GET", "/me", None, Some(&restarted)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // A login as another user than the session's starts empty.
    let carol_again = app.log_in("carol", "oxbow glimmer rotund").await;
    let (status, _, _) = app
        .call("POST", "/cart", Some(&add("oil")), Some(&carol_again))
        .await;
    assert_eq!(status, StatusCode::OK);
    let bob = r#"{"username":"bob","password":"bob-password-456"}"#;
    let (status, cookies, _) = app
        .call("POST", "/login", Some(bob), Some(&carol_again))
        .await;
    assert_eq!(status, StatusCode::OK);
    let bob_session = session_cookie(&cookies);
    assert_eq!(app.cart(Some(&bob_session)).await, r#"{"items":[]}"#);
    app.log_out(&bob_session).await;
}

/// Role changes: admins only, known roles only, and live sessions follow at once. Carol's
/// roles change; alice, the admin, logs out at the end.
async fn check_role_changes(app: &Quickstart) {
    let carol = app.log_in("carol", "oxbow glimmer rotund").await;
    let alice = app.log_in("alice", "alice-password-123").await;
    assert_eq!(app.admin_status(&carol).await, StatusCode::FORBIDDEN);
    let promote = r#"{"roles":["admin"]}"#;
    let demote = r#"{"roles":[]}"#;

    // Only admins.
    let unauthenticated = r#"{"error":"unauthenticated"}"#;
    assert_eq!(
        app.put_roles("carol", promote, None).await,
        (StatusCode::UNAUTHORIZED, unauthenticated.to_owned())
    );
    let forbidden = (StatusCode::FORBIDDEN, r#"{"error":"forbidden"}"#.to_owned());
    assert_eq!(
        app.put_roles("carol", promote, Some(&carol)).await,
        forbidden
    );
    assert_eq!(
        app.put_roles("alice", demote, Some(&carol)).await,
        forbidden
    );
    let not_found = (StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#.to_owned());
    assert_eq!(
        app.put_roles("nobody", promote, Some(&alice)).await,
        not_found
    );
    assert_eq!(
        app.put_roles("no%20body", promote, Some(&alice)).await,
        not_found
    );
    // Malformed bodies, and roles nobody may grant.
    for body in [
        r#"{"roles":"#,
        "{}",
        r#"{"roles":"admin"}"#,
        r#"{"roles":[1]}"#,
    ] {
        assert_eq!(
            app.put_roles("carol", body, Some(&alice)).await,
            (StatusCode::BAD_REQUEST, INVALID_INPUT.to_owned()),
            "{body}"
        );
    }
    for body in [r#"{"roles":["root"]}"#, r#"{"roles":["admin","ADMIN"]}"#] {
        assert_eq!(
            app.put_roles("carol", body, Some(&alice)).await,
            (
                StatusCode::BAD_REQUEST,
                r#"{"error":"unknown_role"}"#.to_owned()
            ),
            "{body}"
        );
    }
    assert_eq!(
        app.admin_status(&carol).await,
        StatusCode::FORBIDDEN,
        "a refused change granted the role"
    );

    // Promotion: the live session has the role on its next request, new logins get it.
    assert_eq!(
        app.put_roles("carol", promote, Some(&alice)).await,
        (StatusCode::NO_CONTENT, String::new())
    );
    let (status, _, body) = app.call("GET", "/admin", None, Some(&carol)).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"admin":"carol"}"#)
    );
    let (status, _, body) = app.call("GET", "/me", None, Some(&carol)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(r#""username":"carol""#), "{body}");
    let carol_later = app.log_in("carol", "oxbow glimmer rotund").await;
    assert_eq!(app.admin_status(&carol_later).await, StatusCode::OK);

    // Demotion, through the name in any case: every session loses the role.
    assert_eq!(
        app.put_roles("CAROL", demote, Some(&alice)).await,
        (StatusCode::NO_CONTENT, String::new())
    );
    for session in [&carol, &carol_later] {
        assert_eq!(app.admin_status(session).await, StatusCode::FORBIDDEN);
    }
    let carol_after = app.log_in("carol", "oxbow glimmer rotund").await;
    assert_eq!(app.admin_status(&carol_after).await, StatusCode::FORBIDDEN);
    assert_eq!(app.admin_status(&alice).await, StatusCode::OK);
    app.log_out(&alice).await;
}

/// A user of `check_tokens_and_remember`'s own: quickstart processes sharing a Redis share
/// user ids, and it ends all but one of its user's sessions.
const DAVE: &str = r#"{"username":"dave","password":"quince harbour dapple"}"#;

/// The remember idle timeout the per-store tests run the quickstart with, which bounds a
/// remembered cookie's `Max-Age`.
const REMEMBER_IDLE_SECS: i64 = 3600;
const REMEMBER_IDLE: (&str, &str) = ("REMEMBER_IDLE_TIMEOUT_SECS", "3600");

/// Remembered logins and personal access tokens, on a quickstart with the default timeouts
/// except `REMEMBER_IDLE`.
async fn check_tokens_and_remember(app: &Quickstart) {
    let (status, _, body) = app.call("POST", "/register", Some(DAVE), None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let password = "quince harbour dapple";

    // Remembered or not: only a remembered session's cookie outlives the browser session.
    let (browser, set_cookie) = app.log_in_remembering("dave", password, false).await;
    assert_eq!(max_age(&set_cookie), None, "{set_cookie}");
    let (kept, set_cookie) = app.log_in_remembering("dave", password, true).await;
    let age = max_age(&set_cookie).expect("a remembered login's cookie has a Max-Age");
    assert!(
        (1..=REMEMBER_IDLE_SECS).contains(&age),
        "Max-Age {age}, remember idle timeout {REMEMBER_IDLE_SECS}: {set_cookie}"
    );
    let origin = app.base.as_str();
    let as_browser = [("cookie", browser.as_str()), ("origin", origin)];
    let as_kept = [("cookie", kept.as_str()), ("origin", origin)];
    let list = app.session_list(&as_browser).await;
    assert_eq!(list.len(), 2, "{list:?}");
    let now = unix_now();
    for session in &list {
        assert_eq!(session["kind"], "browser", "{session}");
        assert!(session["name"].is_null(), "{session}");
        // The one asking is the plain login; the other, the remembered one, has the remember
        // limits: the default 30 days in all rather than 12 hours.
        let remembered = session["current"] == false;
        assert_eq!(session["remembered"], remembered, "{session}");
        let lasts = session["expires_at"].as_u64().unwrap().saturating_sub(now);
        if remembered {
            assert!(lasts > 24 * 60 * 60, "{session}");
        } else {
            assert!(lasts <= 12 * 60 * 60 + 60, "{session}");
        }
    }

    // A token that ends soon, watched at the end.
    let asked = Instant::now();
    let short = app.create_token(&as_browser, "short", Some(3)).await;
    let short_bearer = bearer(short["token"].as_str().unwrap());
    let as_short = [("authorization", short_bearer.as_str())];
    // Alive, unless this machine is so slow that its 3 seconds may have run out already.
    if asked.elapsed() < Duration::from_millis(1500) {
        assert_eq!(app.me_status(&as_short).await, StatusCode::OK);
    }

    // A token from the browser session works in place of the cookie, and never gets one.
    let ci = app.create_token(&as_browser, "ci", None).await;
    let ci_bearer = bearer(ci["token"].as_str().unwrap());
    let as_ci = [("authorization", ci_bearer.as_str())];
    let reply = app.send("GET", "/me", &as_ci, None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.json()["username"], "dave");
    assert!(reply.set_cookies().is_empty(), "{:?}", reply.set_cookies());
    let reply = app.send("GET", "/sessions", &as_ci, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.set_cookies().is_empty(), "{:?}", reply.set_cookies());
    let list: Vec<serde_json::Value> = serde_json::from_str(&reply.body).unwrap();
    // The short token may have ended already on a slow machine; it is checked later.
    let list: Vec<_> = list.into_iter().filter(|s| s["name"] != "short").collect();
    let kinds = |kind: &str| list.iter().filter(|s| s["kind"] == kind).count();
    assert_eq!((kinds("browser"), kinds("token")), (2, 1), "{list:?}");
    let current = list.iter().find(|s| s["current"] == true).unwrap();
    assert_eq!(
        (&current["id"], &current["kind"], &current["name"]),
        (&ci["id"], &"token".into(), &"ci".into()),
        "{list:?}"
    );
    assert_eq!(current["remembered"], false);

    // A token makes no tokens: no password was entered in it, so it is never fresh.
    let reply = app
        .send("POST", "/tokens", &as_ci, Some(r#"{"name":"more"}"#))
        .await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::FORBIDDEN, r#"{"error":"reauth_required"}"#)
    );
    let deploy = app.create_token(&as_browser, "deploy", Some(120)).await;
    let deploy_bearer = bearer(deploy["token"].as_str().unwrap());
    let as_deploy = [("authorization", deploy_bearer.as_str())];
    let listed = app.session_list(&as_deploy).await;
    let entry = listed.iter().find(|s| s["id"] == deploy["id"]).unwrap();
    assert_eq!(
        (&entry["name"], &entry["expires_at"], &entry["current"]),
        (&"deploy".into(), &deploy["expires_at"], &true.into())
    );
    // With the cookie, the cross-site checks apply.
    let evil = r#"{"name":"evil"}"#;
    let from_elsewhere = [
        ("cookie", browser.as_str()),
        ("sec-fetch-site", "cross-site"),
    ];
    let reply = app
        .send("POST", "/tokens", &from_elsewhere, Some(evil))
        .await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::FORBIDDEN, r#"{"error":"csrf_rejected"}"#)
    );
    let (status, body) = app.cross_site("/tokens", Some(evil), Some(&browser)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // Bad input, from the browser and from a token; anonymous callers learn nothing of it.
    let name65 = format!(r#"{{"name":"{}"}}"#, "n".repeat(65));
    let bad_bodies = [
        r#"{"name":""}"#,
        r#"{"name":"   "}"#,
        name65.as_str(),
        r#"{"name":"ci","expires_in_secs":0}"#,
        r#"{"name":"ci","expires_in_secs":"soon"}"#,
        r#"{"name":"ci","expires_in_secs":-1}"#,
        r#"{"name":"ci","expires_in_secs":1.5}"#,
        r#"{"name":5}"#,
        r#"{"name":"#,
        "{}",
        "not json",
    ];
    for auth in [&as_browser[..], &as_ci[..]] {
        for bad in bad_bodies {
            let reply = app.send("POST", "/tokens", auth, Some(bad)).await;
            assert_eq!(
                (reply.status, reply.body.as_str()),
                (StatusCode::BAD_REQUEST, INVALID_INPUT),
                "{bad}"
            );
        }
    }
    for body in [r#"{"name":"ci"}"#, r#"{"name":""}"#] {
        let reply = app
            .send("POST", "/tokens", &[("origin", origin)], Some(body))
            .await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::UNAUTHORIZED, r#"{"error":"unauthenticated"}"#),
            "{body}"
        );
    }
    let longest = app.create_token(&as_browser, &"n".repeat(64), None).await;
    let longest_bearer = bearer(longest["token"].as_str().unwrap());
    // Nothing refused left a token behind.
    let mut names: Vec<String> = app
        .session_list(&as_browser)
        .await
        .iter()
        .filter(|s| s["kind"] == "token" && s["name"] != "short")
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["ci", "deploy", &"n".repeat(64)]);

    // Tokens nobody issued, and tokens used the other way than they were handed out.
    let mut forged: Vec<char> = ci["token"].as_str().unwrap().chars().collect();
    forged[20] = if forged[20] == 'A' { 'B' } else { 'A' };
    let forged: String = forged.into_iter().collect();
    let cookie_value = browser.split_once('=').unwrap().1;
    let token_as_cookie = format!("__Host-id={}", ci["token"].as_str().unwrap());
    for (what, value) in [
        ("malformed", "Bearer abc".to_owned()),
        ("empty", "Bearer".to_owned()),
        ("unknown", bearer(&forged)),
        ("a cookie as a bearer token", bearer(cookie_value)),
    ] {
        let reply = app
            .send("GET", "/me", &[("authorization", value.as_str())], None)
            .await;
        assert_token_refused(&reply, what);
    }
    assert_eq!(
        app.me_status(&[("cookie", token_as_cookie.as_str())]).await,
        StatusCode::UNAUTHORIZED,
        "a bearer token as a cookie"
    );

    // Logout with a token ends that token only.
    let reply = app.send("POST", "/logout", &as_ci, None).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    assert!(reply.set_cookies().is_empty(), "{:?}", reply.set_cookies());
    let reply = app.send("GET", "/me", &as_ci, None).await;
    assert_token_refused(&reply, "a token after its logout");
    for auth in [&as_browser[..], &as_kept[..], &as_deploy[..]] {
        assert_eq!(app.me_status(auth).await, StatusCode::OK);
    }

    // The short token ends on time: not before its 3 seconds, and soon after.
    // Dead by 1.5 s past its end: the deadline check, a poll interval and a request's time.
    let deadline = asked + Duration::from_millis(4500);
    loop {
        let reply = app.send("GET", "/me", &as_short, None).await;
        if reply.status != StatusCode::OK {
            assert_token_refused(&reply, "an expired token");
            let lived = asked.elapsed();
            assert!(
                lived >= Duration::from_millis(2900),
                "a 3-second token ended after {lived:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a 3-second token still works 1.5 s after its end"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Revocation from the browser ends tokens: one by id, then every other session.
    let revoke = format!("/sessions/{}", deploy["id"].as_str().unwrap());
    let (status, _, _) = app.call("DELETE", &revoke, None, Some(&browser)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_token_refused(
        &app.send("GET", "/me", &as_deploy, None).await,
        "a revoked token",
    );
    let (status, _, _) = app
        .call("POST", "/sessions/revoke-others", None, Some(&browser))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let reply = app
        .send(
            "GET",
            "/me",
            &[("authorization", longest_bearer.as_str())],
            None,
        )
        .await;
    assert_token_refused(&reply, "longest");
    assert_eq!(app.me_status(&as_kept).await, StatusCode::UNAUTHORIZED);
    let list = app.session_list(&as_browser).await;
    assert_eq!(list.len(), 1, "{list:?}");
    app.log_out(&browser).await;
}

/// Timeouts short enough to watch, and a cookie domain: what `check_short_lifetimes` runs the
/// quickstart with.
const SHORT_LIFETIMES: [(&str, &str); 5] = [
    ("IDLE_TIMEOUT_SECS", "1"),
    ("ABSOLUTE_TIMEOUT_SECS", "2"),
    ("REMEMBER_IDLE_TIMEOUT_SECS", "5"),
    ("REMEMBER_ABSOLUTE_TIMEOUT_SECS", "9"),
    ("COOKIE_DOMAIN", "example.test"),
];
const SHORT_IDLE: Duration = Duration::from_secs(1);
const SHORT_ABSOLUTE: Duration = Duration::from_secs(2);
const REMEMBERED_IDLE: Duration = Duration::from_secs(5);
const REMEMBERED_ABSOLUTE: Duration = Duration::from_secs(9);
/// How much earlier than its deadline a session may be seen to end: none, but the store's
/// clock and this process's may be read a few milliseconds apart.
const CLOCK_SLACK: Duration = Duration::from_millis(100);

/// Starts the quickstart on `store` with `SHORT_LIFETIMES` (and `env`), and checks that
/// remembered sessions follow their own timeouts and that the cookie takes the domain. Start
/// it once the store's other users are done: a quickstart ends alice's and bob's sessions as
/// it starts.
async fn check_short_lifetimes(store: Option<(&str, &str)>, env: &[(&str, &str)]) {
    let env: Vec<(&str, &str)> = SHORT_LIFETIMES.iter().chain(env).copied().collect();
    let app = Quickstart::spawn_on(store, &env);
    tokio::join!(
        remembered_outlives_the_idle_timeout(&app),
        remembered_outlives_the_absolute_timeout(&app),
        cookie_domain_applies(&app),
    );
}

/// Asserts that `set_cookie` sets the session cookie for `COOKIE_DOMAIN`.
fn assert_domain_cookie(set_cookie: &str) {
    assert!(set_cookie.starts_with("__Secure-id="), "{set_cookie}");
    for attr in ["Domain=example.test", "Secure", "HttpOnly", "Path=/"] {
        assert!(set_cookie.contains(attr), "{attr}: {set_cookie}");
    }
}

/// Past the normal idle timeout a remembered session lives on, until its own ends it.
///
/// Watching a session would keep it alive, so each one is asked once a known time after its
/// last use. A remembered login slower than the margin leaves too little of its window to
/// tell, and the round starts again.
async fn remembered_outlives_the_idle_timeout(app: &Quickstart) {
    for _ in 0..5 {
        let (normal, set_cookie) = app
            .log_in_remembering("bob", "bob-password-456", false)
            .await;
        assert_domain_cookie(&set_cookie);
        assert_eq!(max_age(&set_cookie), None, "{set_cookie}");
        let asked = Instant::now();
        let (kept, set_cookie) = app
            .log_in_remembering("bob", "bob-password-456", true)
            .await;
        let logged_in = Instant::now();
        assert_domain_cookie(&set_cookie);
        let age = max_age(&set_cookie).expect("a remembered cookie has a Max-Age");
        let idle = i64::try_from(REMEMBERED_IDLE.as_secs()).unwrap();
        assert!((1..=idle).contains(&age), "Max-Age {age}: {set_cookie}");

        // Both sessions idle past the normal timeout.
        tokio::time::sleep_until((logged_in + SHORT_IDLE + Duration::from_millis(500)).into())
            .await;
        let unused_for = asked.elapsed();
        if unused_for + Duration::from_millis(1500) < REMEMBERED_IDLE {
            assert_eq!(
                app.me(&kept).await,
                StatusCode::OK,
                "a remembered session ended after {unused_for:?} unused"
            );
            let used = Instant::now();
            assert_eq!(
                app.me(&normal).await,
                StatusCode::UNAUTHORIZED,
                "a session outlived the idle timeout"
            );
            // Its own idle timeout ends it.
            tokio::time::sleep_until((used + REMEMBERED_IDLE + CLOCK_SLACK).into()).await;
            assert_eq!(
                app.me(&kept).await,
                StatusCode::UNAUTHORIZED,
                "a remembered session outlived its idle timeout"
            );
            return;
        }
        eprintln!("remembered login took too long to tell ({unused_for:?}); again");
    }
    panic!("no remembered login was quick enough to watch in five tries");
}

/// A remembered session in use outlives the normal absolute timeout, has its cookie re-sent
/// as its deadline moves (never past its end), and ends at its own absolute timeout.
async fn remembered_outlives_the_absolute_timeout(app: &Quickstart) {
    let asked = Instant::now();
    let (kept, _) = app
        .log_in_remembering("alice", "alice-password-123", true)
        .await;
    let logged_in = Instant::now();
    let headers = [("cookie", kept.as_str())];
    let mut lived_past_normal_end = false;
    let mut resent = 0;
    let deadline = logged_in + REMEMBERED_ABSOLUTE + Duration::from_millis(1500);
    loop {
        let sent = Instant::now();
        let reply = app.send("GET", "/me", &headers, None).await;
        if reply.status != StatusCode::OK {
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
            // The idle deadline moves in steps of a tenth of the idle timeout, and never past
            // the absolute end: the last step may fall short of that end by up to one step.
            let lived = asked.elapsed();
            assert!(
                lived + CLOCK_SLACK + REMEMBERED_IDLE / 10 >= REMEMBERED_ABSOLUTE,
                "a remembered session in use ended after {lived:?}"
            );
            break;
        }
        lived_past_normal_end |= sent > logged_in + SHORT_ABSOLUTE;
        for set_cookie in reply.set_cookies() {
            assert_domain_cookie(&set_cookie);
            let age = max_age(&set_cookie).expect("a re-sent remembered cookie has a Max-Age");
            let idle = i64::try_from(REMEMBERED_IDLE.as_secs()).unwrap();
            assert!((0..=idle).contains(&age), "Max-Age {age}: {set_cookie}");
            let left = (logged_in + REMEMBERED_ABSOLUTE).saturating_duration_since(sent);
            assert!(
                age as f64 <= left.as_secs_f64() + 0.01,
                "Max-Age {age} past the session's end, {left:?} away"
            );
            resent += 1;
        }
        assert!(
            Instant::now() < deadline,
            "a remembered session outlived its absolute timeout by 1.5 s"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        lived_past_normal_end,
        "ended with the normal absolute timeout"
    );
    assert!(
        resent > 0,
        "the cookie was never re-sent as the deadline moved"
    );
}

/// With `COOKIE_DOMAIN`, the cookie the login sets is the one later requests carry, and
/// logout removes it for the same domain.
async fn cookie_domain_applies(app: &Quickstart) {
    let (cookie, set_cookie) = app
        .log_in_remembering("alice", "alice-password-123", true)
        .await;
    assert_domain_cookie(&set_cookie);
    assert!(cookie.starts_with("__Secure-id="));
    let (status, _, body) = app.call("GET", "/me", None, Some(&cookie)).await;
    assert_eq!(
        (status, body.as_str()),
        (
            StatusCode::OK,
            r#"{"id":1,"username":"alice","email":"alice@example.test","email_verified":true}"#
        )
    );
    let cookies = app.log_out(&cookie).await;
    let removal = session_set_cookie(&cookies);
    assert!(removal.starts_with("__Secure-id=;"), "{removal}");
    assert!(removal.contains("Domain=example.test"), "{removal}");
    assert_eq!(max_age(removal), Some(0), "{removal}");
}

#[actix_web::test]
async fn quickstart_with_the_memory_store() {
    let app = Quickstart::spawn_with(&[REMEMBER_IDLE]);
    assert!(app.banner.contains("in memory"), "{}", app.banner);
    check_contract(&app).await;
    check_tokens_and_remember(&app).await;
    check_short_lifetimes(None, &[]).await;
}

#[actix_web::test]
async fn quickstart_with_redis() {
    let app = Quickstart::spawn_on_redis(&shared_redis_url(), &[REMEMBER_IDLE]);
    assert!(app.banner.contains("Redis"), "{}", app.banner);
    check_contract(&app).await;
    check_tokens_and_remember(&app).await;
    // Not on the shared Redis: starting ends alice's and bob's sessions there, which another
    // quickstart test may be using.
    let server = support::redis_server::RedisServer::start();
    check_short_lifetimes(Some(("REDIS_URL", &server.url())), &[]).await;
}

#[actix_web::test]
async fn quickstart_with_a_local_cache() {
    // A Redis of its own: the contract signs a user up, and user ids are per process.
    let server = support::redis_server::RedisServer::start();
    let cache = ("SESSION_CACHE", "1000");
    let app = Quickstart::spawn_on_redis(&server.url(), &[cache, REMEMBER_IDLE]);
    assert!(app.banner.contains("session cache"), "{}", app.banner);
    check_contract(&app).await;
    check_tokens_and_remember(&app).await;
    check_short_lifetimes(Some(("REDIS_URL", &server.url())), &[cache]).await;
}

async fn check_lifecycle(app: &Quickstart) {
    // Roles.
    let alice = app.log_in("alice", "alice-password-123").await;
    let bob = app.log_in("bob", "bob-password-456").await;
    assert_eq!(
        app.call("GET", "/admin", None, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, _, body) = app.call("GET", "/admin", None, Some(&bob)).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::FORBIDDEN, r#"{"error":"forbidden"}"#)
    );
    assert_eq!(
        app.call("GET", "/admin", None, Some(&alice)).await.0,
        StatusCode::OK
    );

    // Listing and revoking one session.
    let alice2 = app.log_in("alice", "alice-password-123").await;
    let (status, _, body) = app.call("GET", "/sessions", None, Some(&alice)).await;
    assert_eq!(status, StatusCode::OK);
    let list: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(list.len(), 2, "{body}");
    for field in [
        "id",
        "kind",
        "name",
        "remembered",
        "created_at",
        "last_seen",
        "expires_at",
        "ip",
        "user_agent",
        "current",
    ] {
        assert!(
            list.iter().all(|s| s.get(field).is_some()),
            "{field} missing: {body}"
        );
    }
    let other = list.iter().find(|s| s["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let delete_other = format!("/sessions/{other}");
    assert_eq!(
        app.call("DELETE", &delete_other, None, Some(&bob)).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.me(&alice2).await,
        StatusCode::OK,
        "bob revoked alice's session"
    );
    assert_eq!(
        app.call("DELETE", &delete_other, None, Some(&alice))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.me(&alice2).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.call("DELETE", &delete_other, None, Some(&alice))
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    // Revoke the others.
    let alice3 = app.log_in("alice", "alice-password-123").await;
    let (status, _, _) = app
        .call("POST", "/sessions/revoke-others", None, Some(&alice))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(app.me(&alice3).await, StatusCode::UNAUTHORIZED);
    assert_eq!(app.me(&alice).await, StatusCode::OK);

    // Password change needs a fresh session (FRESH_WINDOW_SECS=1).
    let bob_elsewhere = app.log_in("bob", "bob-password-456").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let change = r#"{"current_password":"bob-password-456","new_password":"bob-new-password-789"}"#;
    let (status, _, body) = app
        .call("POST", "/password", Some(change), Some(&bob))
        .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::FORBIDDEN, r#"{"error":"reauth_required"}"#)
    );
    let (status, cookies, _) = app
        .call(
            "POST",
            "/reauth",
            Some(r#"{"password":"wrong"}"#),
            Some(&bob),
        )
        .await;
    assert_eq!((status, cookies.len()), (StatusCode::UNAUTHORIZED, 0));
    let (status, cookies, _) = app
        .call(
            "POST",
            "/reauth",
            Some(r#"{"password":"bob-password-456"}"#),
            Some(&bob),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let bob_fresh = session_cookie(&cookies);
    assert_eq!(
        app.me(&bob).await,
        StatusCode::UNAUTHORIZED,
        "reauth must rotate the token"
    );
    let (status, cookies, _) = app
        .call("POST", "/password", Some(change), Some(&bob_fresh))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let bob_after = session_cookie(&cookies);
    assert_eq!(app.me(&bob_after).await, StatusCode::OK);
    assert_eq!(app.me(&bob_fresh).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.me(&bob_elsewhere).await,
        StatusCode::UNAUTHORIZED,
        "other session survived"
    );
    let old = r#"{"username":"bob","password":"bob-password-456"}"#;
    assert_eq!(
        app.call("POST", "/login", Some(old), None).await.0,
        StatusCode::UNAUTHORIZED
    );
    app.log_in("bob", "bob-new-password-789").await;

    // MAX_SESSIONS_PER_USER=3: alice has one session left; three more logins evict it.
    let first = app.log_in("alice", "alice-password-123").await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    app.log_in("alice", "alice-password-123").await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    app.log_in("alice", "alice-password-123").await;
    assert_eq!(
        app.me(&alice).await,
        StatusCode::UNAUTHORIZED,
        "oldest session not evicted"
    );
    assert_eq!(app.me(&first).await, StatusCode::OK);
}

#[actix_web::test]
async fn quickstart_lifecycle_routes() {
    let env = [("FRESH_WINDOW_SECS", "1"), ("MAX_SESSIONS_PER_USER", "3")];
    let app = Quickstart::spawn_on_redis(&shared_redis_url(), &env);
    check_lifecycle(&app).await;
}

/// Issue 19 through the quickstart: tokens have their own limits, need a fresh session, and
/// never lock their owner out of logging in, seeing them and ending them.
#[actix_web::test]
async fn quickstart_tokens_never_lock_the_owner_out() {
    let env = [
        ("MAX_SESSIONS_PER_USER", "3"),
        ("MAX_TOKENS_PER_USER", "3"),
        ("TOKENS_PER_HOUR", "4"),
        ("FRESH_WINDOW_SECS", "4"),
    ];
    let app = Quickstart::spawn_with(&env);
    let origin = app.base.as_str();
    let mint = |cookie: String, name: &'static str| {
        let app = &app;
        async move {
            let headers = [("cookie", cookie.as_str()), ("origin", origin)];
            let body = format!(r#"{{"name":"{name}"}}"#);
            app.send("POST", "/tokens", &headers, Some(&body)).await
        }
    };
    // A stolen session, fresh, mints as many tokens as it may.
    let stolen = app.log_in("alice", "alice-password-123").await;
    let mut tokens = Vec::new();
    for name in ["t1", "t2", "t3"] {
        let reply = mint(stolen.clone(), name).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        tokens.push(reply.json());
    }
    let reply = mint(stolen.clone(), "t4").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::CONFLICT, r#"{"error":"too_many_tokens"}"#)
    );
    // The owner logs in, again and again: every login works and sees the tokens.
    let mut owner = String::new();
    for round in 0..3 {
        owner = app.log_in("alice", "alice-password-123").await;
        assert_eq!(
            app.call("GET", "/me", None, Some(&owner)).await.0,
            StatusCode::OK,
            "login {round} answered with a dead cookie"
        );
        let list = app.session_list(&[("cookie", owner.as_str())]).await;
        let listed = list.iter().filter(|s| s["kind"] == "token").count();
        assert_eq!(listed, 3, "{list:?}");
    }
    // And ends them.
    for token in &tokens {
        let revoke = format!("/sessions/{}", token["id"].as_str().unwrap());
        assert_eq!(
            app.call("DELETE", &revoke, None, Some(&owner)).await.0,
            StatusCode::NO_CONTENT
        );
        let auth = bearer(token["token"].as_str().unwrap());
        assert_token_refused(
            &app.send("GET", "/me", &[("authorization", auth.as_str())], None)
                .await,
            "a revoked token",
        );
    }
    // Under the limit again, the owner, fresh from a login, mints one more; then the hourly
    // rate stops them.
    let owner = app.log_in("alice", "alice-password-123").await;
    assert_eq!(
        mint(owner.clone(), "mine").await.status,
        StatusCode::CREATED
    );
    let reply = mint(owner.clone(), "again").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (
            StatusCode::TOO_MANY_REQUESTS,
            r#"{"error":"token_rate_limited"}"#
        )
    );
    let retry_after: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry_after), "{retry_after}");
    // A session past its fresh window mints nothing.
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    let reply = mint(owner.clone(), "late").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::FORBIDDEN, r#"{"error":"reauth_required"}"#)
    );
}

#[actix_web::test]
async fn quickstart_timeouts_come_from_the_environment() {
    let env = [("IDLE_TIMEOUT_SECS", "1"), ("ABSOLUTE_TIMEOUT_SECS", "2")];
    let app = Quickstart::spawn_with(&env);
    let idle = app.log_in("bob", "bob-password-456").await;
    let active = app.log_in("alice", "alice-password-123").await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(app.me(&active).await, StatusCode::OK);
    }
    assert_eq!(app.me(&idle).await, StatusCode::UNAUTHORIZED);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(app.me(&active).await, StatusCode::UNAUTHORIZED);
}

#[test]
fn quickstart_refuses_a_malformed_knob() {
    let stderr = Quickstart::refuses_to_start(&[("IDLE_TIMEOUT_SECS", "soon")]);
    assert!(
        stderr.contains("IDLE_TIMEOUT_SECS must be a whole number"),
        "{stderr}"
    );
}

/// `ANON_IDLE_TIMEOUT_SECS` ends idle anonymous sessions, and only those; without it they last
/// the library's 15 minutes.
#[actix_web::test]
async fn quickstart_anonymous_idle_timeout_comes_from_the_environment() {
    let short = Quickstart::spawn_with(&[("ANON_IDLE_TIMEOUT_SECS", "1")]);
    let default = Quickstart::spawn();
    let tea = r#"{"item":"tea"}"#;
    let mut visitors = Vec::new();
    for app in [&short, &default] {
        let (status, cookies, _) = app.call("POST", "/cart", Some(tea), None).await;
        assert_eq!(status, StatusCode::OK);
        visitors.push(session_cookie(&cookies));
    }
    // A visitor who logs in: the session that keeps their cart is a login's, with a login's
    // idle timeout. The login must find the anonymous session alive, within a second of the
    // write; the argon2 check on a loaded machine may take longer, so it may take a few tries.
    let with_tea = r#"{"items":["tea"]}"#;
    let bob = r#"{"username":"bob","password":"bob-password-456"}"#;
    let mut member = None;
    for _ in 0..5 {
        let (status, cookies, _) = short.call("POST", "/cart", Some(tea), None).await;
        assert_eq!(status, StatusCode::OK);
        let anonymous = session_cookie(&cookies);
        let (status, cookies, _) = short
            .call("POST", "/login", Some(bob), Some(&anonymous))
            .await;
        assert_eq!(status, StatusCode::OK);
        let session = session_cookie(&cookies);
        if short.cart(Some(&session)).await == with_tea {
            member = Some(session);
            break;
        }
    }
    let member = member.expect("no login found its anonymous session alive in five tries");

    // Twice the timeout, and more: the session ends at most one timeout after its last use.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(short.cart(Some(&visitors[0])).await, r#"{"items":[]}"#);
    assert_eq!(default.cart(Some(&visitors[1])).await, with_tea);
    assert_eq!(
        short.cart(Some(&member)).await,
        with_tea,
        "a login's session ended"
    );
}

#[test]
fn quickstart_refuses_a_malformed_anonymous_idle_timeout() {
    for value in ["soon", "1.5", "-1"] {
        let stderr = Quickstart::refuses_to_start(&[("ANON_IDLE_TIMEOUT_SECS", value)]);
        assert!(
            stderr.contains("ANON_IDLE_TIMEOUT_SECS must be a whole number"),
            "{value:?}: {stderr}"
        );
    }
}

/// The new settings are refused as the old ones are: a typo stops the start, with a message
/// naming what is wrong, rather than falling back to a default.
#[test]
fn quickstart_refuses_malformed_remember_timeouts_and_cookie_domains() {
    for (name, value, message) in [
        (
            "REMEMBER_IDLE_TIMEOUT_SECS",
            "soon",
            "REMEMBER_IDLE_TIMEOUT_SECS must be a whole number",
        ),
        (
            "REMEMBER_ABSOLUTE_TIMEOUT_SECS",
            "-1",
            "REMEMBER_ABSOLUTE_TIMEOUT_SECS must be a whole number",
        ),
        (
            "COOKIE_DOMAIN",
            "example.test; Path=/x",
            "is not a domain name",
        ),
    ] {
        let stderr = Quickstart::refuses_to_start(&[(name, value)]);
        assert!(stderr.contains(message), "{name}={value:?}: {stderr}");
    }
}

#[actix_web::test]
async fn quickstart_login_protection() {
    // Long enough for three argon2 failures on a loaded machine to land in one window.
    let env = [("LOGIN_MAX_FAILURES", "3"), ("LOGIN_WINDOW_SECS", "6")];
    let app = Quickstart::spawn_with(&env);
    let invalid = r#"{"error":"invalid_credentials"}"#;

    // Guessing: three failures, then even the right password waits; unknown users alike.
    for user in ["bob", "mallory"] {
        for _ in 0..3 {
            let body = format!(r#"{{"username":"{user}","password":"guess-guess-guess"}}"#);
            let (status, _, answer) = app.call("POST", "/login", Some(&body), None).await;
            assert_eq!(
                (status, answer.as_str()),
                (StatusCode::UNAUTHORIZED, invalid),
                "{user}"
            );
        }
    }
    let right = r#"{"username":"bob","password":"bob-password-456"}"#;
    let reply = app.send("POST", "/login", &[], Some(right)).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=6).contains(&retry), "Retry-After {retry}");
    assert_eq!(reply.body, r#"{"error":"too_many_attempts"}"#);
    let unknown = r#"{"username":"mallory","password":"anything-at-all"}"#;
    assert_eq!(
        app.call("POST", "/login", Some(unknown), None).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Retry-After is rounded up to whole seconds: after it, the window has ended.
    tokio::time::sleep(Duration::from_secs(retry) + Duration::from_millis(100)).await;
    app.log_in("bob", "bob-password-456").await;

    // Oversized input is refused before any hashing.
    let long_password = format!(r#"{{"username":"bob","password":"{}"}}"#, "p".repeat(2000));
    let (status, _, body) = app.call("POST", "/login", Some(&long_password), None).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::BAD_REQUEST, r#"{"error":"password_too_long"}"#)
    );
    let long_name = format!(r#"{{"username":"{}","password":"x"}}"#, "u".repeat(2000));
    let (status, _, body) = app.call("POST", "/login", Some(&long_name), None).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::BAD_REQUEST, r#"{"error":"invalid_input"}"#)
    );
    let huge_body = format!(
        r#"{{"username":"bob","password":"{}"}}"#,
        "p".repeat(10_000)
    );
    assert_eq!(
        app.call("POST", "/login", Some(&huge_body), None).await.0,
        StatusCode::BAD_REQUEST
    );

    // Cross-site login and logout are refused; the session survives the attempt.
    let alice = r#"{"username":"alice","password":"alice-password-123"}"#;
    let (status, body) = app.cross_site("/login", Some(alice), None).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::FORBIDDEN, r#"{"error":"csrf_rejected"}"#)
    );
    let session = app.log_in("alice", "alice-password-123").await;
    let (status, _) = app.cross_site("/logout", None, Some(&session)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        app.call("GET", "/me", None, Some(&session)).await.0,
        StatusCode::OK
    );
}

#[actix_web::test]
async fn quickstart_registration_applies_the_password_policy() {
    let app = Quickstart::spawn();

    let (status, _, body) = app.register("carol", "short pw").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body.contains(r#""error":"weak_password""#) && body.contains("at least 15"),
        "{body}"
    );
    let (status, _, body) = app.register("carol", "passwordpassword").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _, body) = app.register("carol", "carolcarolcarol1").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _, _) = app.register("bad name!", "glimmer rotund oxbow").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Exactly the minimum, with spaces and an emoji, is fine; no composition rules.
    let passphrase = "oxbow glimmer 🔑";
    assert_eq!(passphrase.chars().count(), 15);
    let (status, _, body) = app.register("carol", passphrase).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body, r#"{"id":3,"username":"carol"}"#);
    let (status, _, _) = app.register("carol", "another fine passphrase").await;
    assert_eq!(status, StatusCode::CONFLICT);
    app.log_in("carol", passphrase).await;
}

/// Unknown users and wrong passwords cost the same: both run one argon2 verification. A
/// statistical check, not a benchmark: interleaved requests, medians within a factor of two.
/// What it catches is a path that skips the hash, which answers many times faster (a request
/// without argon2 work takes well under a millisecond here, one verification tens of them);
/// a tighter ratio would only measure the noise of two shared cores.
#[actix_web::test]
async fn unknown_users_take_as_long_as_wrong_passwords() {
    let app = Quickstart::spawn_with(&[("LOGIN_MAX_FAILURES", "100000")]);
    let url = "/login";
    let known = r#"{"username":"alice","password":"wrong-password-000"}"#;
    let unknown = r#"{"username":"zed","password":"wrong-password-000"}"#;
    let bodies = [known, unknown];
    let mut times = [Vec::new(), Vec::new()];
    for round in 0..45 {
        // Each goes first in every other round, so that neither always meets the load (other
        // tests, other processes) left over from the one before.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let body = bodies[i];
            let started = Instant::now();
            assert_eq!(
                app.call("POST", url, Some(body), None).await.0,
                StatusCode::UNAUTHORIZED
            );
            if round >= 5 {
                times[i].push(started.elapsed());
            }
        }
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (known, unknown) = (median(&mut times[0]), median(&mut times[1]));
    let ratio = unknown.as_secs_f64() / known.as_secs_f64();
    eprintln!("median wrong password {known:?}, unknown user {unknown:?}, ratio {ratio:.3}");
    assert!((0.5..2.0).contains(&ratio), "unknown/known = {ratio:.3}");
    // Both paths really hash: far slower than a request that does no argon2 work.
    assert!(known > Duration::from_millis(5), "{known:?}");
    assert!(unknown > Duration::from_millis(5), "{unknown:?}");
}

#[actix_web::test]
async fn quickstart_on_a_redis_cluster() {
    let cluster = support::cluster::RedisCluster::start();
    let nodes = cluster.urls().join(",");
    let store = ("REDIS_CLUSTER_NODES", nodes.as_str());
    let app = Quickstart::spawn_on(Some(store), &[REMEMBER_IDLE]);
    assert!(app.banner.contains("Redis Cluster"), "{}", app.banner);
    check_contract(&app).await;
    check_tokens_and_remember(&app).await;
    check_short_lifetimes(Some(store), &[]).await;
}

/// Keeps requesting `url` with `cookie` from its own thread until `stop` is set; returns how
/// many answered `200`, and every other answer or failed request. A short pause between
/// requests keeps the load steady without starving the other tests (and the logins they
/// time) of CPU.
fn load_thread(
    url: String,
    cookie: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(u64, Vec<String>)> {
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let client = awc::Client::default();
            let (mut answered, mut wrong) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let res = client
                    .get(&url)
                    .insert_header(("cookie", cookie.as_str()))
                    .send();
                match res.await {
                    Ok(mut res) if res.status() == StatusCode::OK => {
                        let _ = res.body().await;
                        answered += 1;
                    }
                    Ok(res) => wrong.push(format!("{}", res.status())),
                    Err(err) => wrong.push(format!("{err}")),
                }
                actix_web::rt::time::sleep(Duration::from_micros(500)).await;
            }
            (answered, wrong)
        })
    })
}

/// Two app processes with local caches on one Redis, under load: whatever ends a session on A,
/// the very next request with its cookie on B is refused. Not once is it accepted.
#[actix_web::test]
async fn two_caching_instances_never_accept_a_session_ended_on_the_other() {
    let server = support::redis_server::RedisServer::start();
    let url = server.url();
    let cached = [("SESSION_CACHE", "10000")];
    let a = Quickstart::spawn_on_redis(&url, &cached);
    let b = Quickstart::spawn_on_redis(&url, &cached);
    assert!(b.banner.contains("session cache"), "{}", b.banner);

    // Load on both instances, from other threads, with sessions that stay valid.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bob = a.log_in("bob", "bob-password-456").await;
    let load: Vec<_> = [&a, &b, &b]
        .iter()
        .map(|app| load_thread(app.url("/me"), bob.clone(), stop.clone()))
        .collect();

    let keeper = a.log_in("alice", "alice-password-123").await;
    let gets_before = server.command_counts().get("hmget").copied().unwrap_or(0);
    let mut stale = Vec::new();
    let rounds = 60;
    for round in 0..rounds {
        let victim = a.log_in("alice", "alice-password-123").await;
        for _ in 0..2 {
            let (status, _, _) = b.call("GET", "/me", None, Some(&victim)).await;
            assert_eq!(status, StatusCode::OK, "round {round}");
        }
        let how = match round % 4 {
            0 => {
                a.log_out(&victim).await;
                "logout"
            }
            1 => {
                let (_, _, body) = a.call("GET", "/sessions", None, Some(&victim)).await;
                let list: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
                let id = list.iter().find(|s| s["current"] == true).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                let revoke = format!("/sessions/{id}");
                let (status, _, _) = a.call("DELETE", &revoke, None, Some(&keeper)).await;
                assert_eq!(status, StatusCode::NO_CONTENT);
                "revocation"
            }
            2 => {
                let revoke = "/sessions/revoke-others";
                let (status, _, _) = a.call("POST", revoke, None, Some(&keeper)).await;
                assert_eq!(status, StatusCode::NO_CONTENT);
                "revoke-others"
            }
            _ => {
                let body = r#"{"password":"alice-password-123"}"#;
                let (status, _, _) = a.call("POST", "/reauth", Some(body), Some(&victim)).await;
                assert_eq!(status, StatusCode::NO_CONTENT);
                "rotation"
            }
        };
        let (status, _, _) = b.call("GET", "/me", None, Some(&victim)).await;
        if status != StatusCode::UNAUTHORIZED {
            stale.push(format!("round {round}, {how}: {status}"));
        }
    }
    let gets = server.command_counts().get("hmget").copied().unwrap_or(0) - gets_before;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut answered, mut wrong) = (0, Vec::new());
    for thread in load {
        let (ok, others) = thread.join().unwrap();
        answered += ok;
        wrong.extend(others);
    }
    assert!(stale.is_empty(), "stale successes: {stale:?}");
    // The load's own session stayed valid throughout: every one of its requests was a 200.
    assert!(
        wrong.is_empty(),
        "load requests that were not 200: {wrong:?}"
    );
    // The load itself came from memory: far fewer GETs reached Redis than requests were served.
    assert!(
        answered > 500,
        "too little load to mean anything: {answered}"
    );
    assert!(
        gets * 4 < answered,
        "{gets} GETs for {answered} requests under load: the cache was not used"
    );
}

/// Asserts that `GET /admin` on `app` answers every cookie in `sessions` with `expected`, and
/// that the answers came from `app`'s cache: most of them sent no `HMGET` to Redis. (Not all:
/// on a loaded machine a late heartbeat sends a lookup to Redis now and then.)
async fn admin_from_cache(
    server: &support::redis_server::RedisServer,
    app: &Quickstart,
    sessions: &[&str],
    expected: StatusCode,
) {
    let hmgets = || server.command_counts().get("hmget").copied().unwrap_or(0);
    // The first answers may load the records; the next ones need not.
    for session in sessions {
        assert_eq!(app.admin_status(session).await, expected);
    }
    let before = hmgets();
    let rounds = 5;
    for _ in 0..rounds {
        for session in sessions {
            assert_eq!(app.admin_status(session).await, expected);
        }
    }
    let fetched = hmgets() - before;
    let requests = u64::try_from(rounds * sessions.len()).unwrap();
    assert!(
        fetched * 2 <= requests,
        "{fetched} HMGETs for {requests} requests: the sessions were not served from the cache"
    );
}

/// A role change made through one caching instance reaches sessions that the other instance
/// holds in its cache on their very next request, both ways.
#[actix_web::test]
async fn a_role_change_reaches_sessions_cached_on_another_instance() {
    let server = support::redis_server::RedisServer::start();
    let url = server.url();
    let cached = [("SESSION_CACHE", "1000")];
    let a = Quickstart::spawn_on_redis(&url, &cached);
    let b = Quickstart::spawn_on_redis(&url, &cached);
    assert!(b.banner.contains("session cache"), "{}", b.banner);

    // One session of bob's from each instance, both in B's cache.
    let bob_from_a = a.log_in("bob", "bob-password-456").await;
    let bob_from_b = b.log_in("bob", "bob-password-456").await;
    let sessions = [bob_from_a.as_str(), bob_from_b.as_str()];
    let admin = a.log_in("alice", "alice-password-123").await;
    admin_from_cache(&server, &b, &sessions, StatusCode::FORBIDDEN).await;

    let promote = r#"{"roles":["admin"]}"#;
    assert_eq!(
        a.put_roles("bob", promote, Some(&admin)).await,
        (StatusCode::NO_CONTENT, String::new())
    );
    for session in sessions {
        let (status, _, body) = b.call("GET", "/admin", None, Some(session)).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, r#"{"admin":"bob"}"#),
            "promotion on A not seen on B"
        );
    }
    admin_from_cache(&server, &b, &sessions, StatusCode::OK).await;

    assert_eq!(
        a.put_roles("bob", r#"{"roles":[]}"#, Some(&admin)).await,
        (StatusCode::NO_CONTENT, String::new())
    );
    for session in sessions {
        assert_eq!(
            b.admin_status(session).await,
            StatusCode::FORBIDDEN,
            "demotion on A not seen on B"
        );
    }
}

#[actix_web::test]
async fn quickstart_on_redis_sentinel() {
    let deployment = support::sentinel::RedisSentinel::start();
    let sentinels = deployment.sentinel_urls().join(",");
    let app = Quickstart::spawn_on(Some(("REDIS_SENTINELS", &sentinels)), &[]);
    assert!(app.banner.contains("Redis Sentinel"), "{}", app.banner);
    check_contract(&app).await;
}

#[actix_web::test]
async fn quickstart_lets_a_known_browser_in_while_strangers_are_throttled() {
    let env = [
        ("TRUST_PROXIES", "127.0.0.1, ::1"),
        ("LOGIN_MAX_FAILURES", "2"),
        ("LOGIN_ACCOUNT_MAX_FAILURES", "6"),
        ("LOGIN_WINDOW_SECS", "600"),
    ];
    let app = Quickstart::spawn_with(&env);
    let login = "/login";
    let right = r#"{"username":"alice","password":"alice-password-123"}"#;
    let guess = r#"{"username":"alice","password":"guess-guess-guess"}"#;

    let (status, _, cookies, _) = app.post_for("198.51.100.7", login, right, None).await;
    assert_eq!(status, StatusCode::OK);
    let device = device_cookie(&cookies);

    // Two guesses from each /64 of one /59, until the account-wide ceiling is reached.
    let mut checked = 0;
    for net in 0x20..0x40 {
        for _ in 0..2 {
            let attacker = format!("2001:db8:0:{net:x}::1");
            match app.post_for(&attacker, login, guess, None).await.0 {
                StatusCode::UNAUTHORIZED => checked += 1,
                StatusCode::TOO_MANY_REQUESTS => {}
                other => panic!("guess from {attacker}: {other}"),
            }
        }
    }
    assert_eq!(checked, 6);

    let (status, retry, _, body) = app.post_for("198.51.100.8", login, right, None).await;
    assert_eq!(
        (status, body.as_str()),
        (
            StatusCode::TOO_MANY_REQUESTS,
            r#"{"error":"too_many_attempts"}"#
        )
    );
    assert!(retry.is_some(), "no Retry-After");
    let (status, _, cookies, body) = app
        .post_for("198.51.100.9", login, right, Some(&device))
        .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"id":1,"username":"alice"}"#)
    );
    session_cookie(&cookies);
    device_cookie(&cookies);
}

#[actix_web::test]
async fn quickstart_registration_does_not_tell_taken_names_by_a_weak_password() {
    let app = Quickstart::spawn();
    let taken = app.register("bob", "short pw").await;
    let free = app.register("zelda", "short pw").await;
    assert_eq!(taken, free);
    assert_eq!(taken.0, StatusCode::BAD_REQUEST, "{}", taken.2);
    assert!(
        taken.2.contains(r#""error":"weak_password""#),
        "{}",
        taken.2
    );
}

#[actix_web::test]
async fn quickstart_throttles_registrations_per_address() {
    let app = Quickstart::spawn_with(&[("REGISTRATION_MAX", "3")]);
    for n in 0..3 {
        let (status, _, _) = app.register(&format!("user{n}"), "short pw").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "registration {n}");
    }
    let body = r#"{"username":"user9","password":"a fine long passphrase"}"#;
    let reply = app.send("POST", "/register", &[], Some(body)).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = reply
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(retry >= 1, "Retry-After {retry}");
    assert_eq!(reply.body, r#"{"error":"too_many_attempts"}"#);
}
