//! One-time links through the crate's handle, on a Redis of their own: the commands each step
//! sends (`MONITOR`), and that an unknown account costs exactly what a known one does; an
//! end-session link ending its session alone, outside the limits.

use std::time::Duration;

use actix_login::links::{LinkLimit, LinkPurpose, LinkSettings, Recipient};
use actix_login::{Error, LoginMiddleware, MemoryStore, RedisStore};

use crate::support::monitor::Monitor;
use crate::support::redis_server::RedisServer;

#[actix_web::test]
async fn each_step_costs_these_redis_commands() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let middleware = LoginMiddleware::builder(store)
        .one_time_links(LinkSettings::new())
        .build();
    let sessions = middleware.sessions();
    sessions.credentials_changed("7", "v0").await.unwrap();
    let links = middleware.links();
    // Loads the counting script, which a long-running server has loaded long before.
    links
        .issue(LinkPurpose::SignIn, "warm-up", None)
        .await
        .unwrap();
    let monitor = Monitor::start(&server);

    let to = Recipient::new("7", "ann@example.test");
    let issued = links
        .issue(LinkPurpose::PasswordReset, "ann", Some(to))
        .await
        .unwrap()
        .unwrap();
    // The limits (one script for every counter), the credentials version, the link.
    let issuing = monitor.take();
    assert_eq!(issuing, ["evalsha", "get", "set"], "issue");
    // An unknown account: the same commands, and no link to mail.
    let none = links
        .issue(LinkPurpose::PasswordReset, "nobody", None)
        .await
        .unwrap();
    assert!(none.is_none());
    assert_eq!(monitor.take(), issuing, "issue for an unknown account");

    let secret = issued.secret();
    let info = links
        .peek(LinkPurpose::PasswordReset, secret)
        .await
        .unwrap();
    assert_eq!((info.user_id(), info.address()), ("7", "ann@example.test"));
    assert_eq!(monitor.take(), ["get", "get"], "peek");
    // Another purpose derives another key: found nowhere, and not used up.
    assert!(matches!(
        links.consume(LinkPurpose::SignIn, secret).await,
        Err(Error::InvalidLink)
    ));
    assert_eq!(monitor.take(), ["getdel"], "consume for another purpose");
    links
        .consume(LinkPurpose::PasswordReset, secret)
        .await
        .unwrap();
    // The link, the credentials version, the account's activity log.
    assert_eq!(
        monitor.take(),
        ["getdel", "get", "lpush", "ltrim", "pexpire"],
        "consume"
    );
    assert!(matches!(
        links.consume(LinkPurpose::PasswordReset, secret).await,
        Err(Error::InvalidLink)
    ));
    assert_eq!(monitor.take(), ["getdel"], "second consume");
    // Garbage never reaches the store.
    for garbage in ["", "x", "../../etc/passwd", &"A".repeat(44)] {
        assert!(matches!(
            links.peek(LinkPurpose::PasswordReset, garbage).await,
            Err(Error::InvalidLink)
        ));
    }
    assert!(monitor.take().is_empty(), "garbage");
}

/// A password change ends the links issued before it, on every purpose.
#[actix_web::test]
async fn a_password_change_ends_earlier_links() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let middleware = LoginMiddleware::new(store);
    let (sessions, links) = (middleware.sessions(), middleware.links());
    sessions.credentials_changed("8", "v0").await.unwrap();
    let to = Recipient::new("8", "bo@example.test");
    let mut issued = Vec::new();
    for purpose in [LinkPurpose::PasswordReset, LinkPurpose::SignIn] {
        let link = links.issue(purpose, "bo", Some(to)).await.unwrap().unwrap();
        issued.push((purpose, link));
    }
    sessions.credentials_changed("8", "v1").await.unwrap();
    for (purpose, link) in &issued {
        assert!(matches!(
            links.peek(*purpose, link.secret()).await,
            Err(Error::InvalidLink)
        ));
    }
    // One issued after the change works.
    let link = links
        .issue(LinkPurpose::PasswordReset, "bo", Some(to))
        .await
        .unwrap()
        .unwrap();
    links
        .consume(LinkPurpose::PasswordReset, link.secret())
        .await
        .unwrap();
}

/// "This wasn't me": an end-session link ends the session it names and no other, once; it
/// counts toward no limit; `issue` refuses the purpose, which needs a session.
#[actix_web::test]
async fn an_end_session_link_ends_its_session_alone_outside_the_limits() {
    let hour = Duration::from_secs(3600);
    let middleware = LoginMiddleware::builder(MemoryStore::new())
        .one_time_links(LinkSettings::new().per_account(LinkLimit::new(1, hour)))
        .build();
    let (sessions, links) = (middleware.sessions(), middleware.links());
    let app = crate::support::http::minimal::app_with(middleware).await;
    crate::support::http::log_in(&app, 7).await;
    crate::support::http::log_in(&app, 7).await;
    let ids: Vec<String> = sessions
        .list("7")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(ids.len(), 2);

    let to = Recipient::new("7", "ann@example.test");
    let mut issued = Vec::new();
    for _ in 0..3 {
        issued.push(links.issue_end_session(to, &ids[0]).await.unwrap());
    }
    // Three notices, and the account's one link an hour is still there for a reset.
    links
        .issue(LinkPurpose::PasswordReset, "ann", Some(to))
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        links.issue(LinkPurpose::EndSession, "ann", Some(to)).await,
        Err(Error::InvalidInput)
    ));
    assert!(matches!(
        links.issue_end_session(to, "").await,
        Err(Error::InvalidInput)
    ));

    let secret = issued[0].secret();
    let info = links.peek(LinkPurpose::EndSession, secret).await.unwrap();
    assert_eq!(info.session_id(), Some(ids[0].as_str()));
    // Of another purpose, it is found nowhere.
    assert!(matches!(
        links.consume(LinkPurpose::SignIn, secret).await,
        Err(Error::InvalidLink)
    ));
    assert!(links.end_session(secret).await.unwrap());
    let left: Vec<String> = sessions
        .list("7")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(left, [ids[1].clone()]);
    assert!(matches!(
        links.end_session(secret).await,
        Err(Error::InvalidLink)
    ));
    // Another link for the same session: used up, with nothing left to end.
    assert!(!links.end_session(issued[1].secret()).await.unwrap());
}

/// Whoever signed in can change the password from their own session, which ends the account's
/// other sessions and keeps theirs (on a new token, under the same public id). The owner's
/// "this wasn't me" link for that session must still end it: ending a session only takes
/// access away, so it is not bound to the password as other links are.
#[actix_web::test]
async fn an_end_session_link_outlives_a_password_change_made_from_that_session() {
    use actix_login::Session;
    use actix_web::{web, App, HttpResponse};

    async fn change_password(session: Session) -> actix_web::Result<HttpResponse> {
        session.credentials_changed("v2").await?;
        session.reauthenticate().await?;
        Ok(HttpResponse::NoContent().finish())
    }

    let middleware = LoginMiddleware::new(MemoryStore::new());
    let (sessions, links) = (middleware.sessions(), middleware.links());
    let app = actix_web::test::init_service(
        App::new()
            .wrap(middleware)
            .configure(crate::support::http::minimal::routes)
            .route("/password", web::post().to(change_password)),
    )
    .await;
    let intruder = crate::support::http::log_in(&app, 7).await;
    let id = sessions.list("7").await.unwrap()[0].id.clone();
    let to = Recipient::new("7", "ann@example.test");
    let way_out = links.issue_end_session(to, &id).await.unwrap();

    let changed = actix_web::test::call_service(
        &app,
        crate::support::http::post("/password", Some(&intruder)),
    )
    .await;
    assert_eq!(changed.status(), 204);
    let renewed = crate::support::http::set_cookie(&changed)
        .expect("a new token")
        .value()
        .to_owned();
    assert_eq!(
        crate::support::http::status(&app, crate::support::http::get("/me", Some(&renewed))).await,
        200
    );

    assert!(links.end_session(way_out.secret()).await.unwrap());
    assert_eq!(
        crate::support::http::status(&app, crate::support::http::get("/me", Some(&renewed))).await,
        401,
        "the intruder's session ended"
    );
}
