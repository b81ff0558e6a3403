//! `RedisStore` over TLS with a private CA, and as a least-privilege ACL user, against real
//! `redis-server` processes. The store contract itself runs on both in the `store` module.

use std::time::{Duration, Instant};

use actix_login::store::{Admission, Counter, ThrottleStore};
use actix_login::{RedisStore, StoreError};

use crate::support;
use crate::support::acl::acl_user;
use crate::support::http::minimal::app;
use crate::support::http::*;
use crate::support::redis_server::{unique_prefix, RedisServer};
use crate::support::tls::{start_tls_server, TestCertificates};

#[actix_web::test]
async fn logins_work_over_tls_with_a_private_ca() {
    let certificates = TestCertificates::generate();
    let server = start_tls_server(&certificates);
    let store = RedisStore::builder(format!("rediss://localhost:{}", server.port))
        .tls_root_certificate(certificates.ca_pem())
        .key_prefix(unique_prefix())
        .connect()
        .await
        .unwrap();
    let app = app(store).await;
    let token = log_in(&app, 5).await;
    let (code, body) =
        status_and_body(actix_web::test::call_service(&app, get("/me", Some(&token))).await).await;
    assert_eq!((code, body.as_str()), (200, "5"));
    assert_eq!(status(&app, post("/logout", Some(&token))).await, 204);
    assert_eq!(status(&app, get("/me", Some(&token))).await, 401);
}

#[actix_web::test]
async fn tls_without_the_ca_fails_at_connect() {
    let certificates = TestCertificates::generate();
    let server = start_tls_server(&certificates);
    let url = format!("rediss://127.0.0.1:{}", server.port);

    // The system's roots do not include the test CA.
    let started = Instant::now();
    let result = RedisStore::builder(&url)
        .connect_timeout(Duration::from_millis(1000))
        .connect()
        .await;
    let err = result.expect_err("connected to a server whose CA is not trusted");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // Nor does another CA.
    let other = TestCertificates::generate();
    let result = RedisStore::builder(&url)
        .tls_root_certificate(other.ca_pem())
        .connect_timeout(Duration::from_millis(1000))
        .connect()
        .await;
    assert!(result.is_err(), "connected with the wrong CA");

    // Plain text to a TLS port fails too, within the timeout.
    let started = Instant::now();
    let result = RedisStore::builder(format!("redis://127.0.0.1:{}", server.port))
        .connect_timeout(Duration::from_millis(500))
        .command_timeout(Duration::from_millis(500))
        .connect()
        .await;
    assert!(result.is_err(), "plain text reached a TLS-only server");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[actix_web::test]
async fn a_tls_root_certificate_needs_a_rediss_url() {
    let certificates = TestCertificates::generate();
    let server = RedisServer::start();
    let err = RedisStore::builder(server.url())
        .tls_root_certificate(certificates.ca_pem())
        .connect()
        .await
        .expect_err("a CA for a plain-text URL is a configuration mistake");
    assert!(err.to_string().contains("rediss://"), "{err}");
    for builder in [
        RedisStore::cluster_builder([server.url()]),
        RedisStore::sentinel_builder([server.url()], "mymaster"),
    ] {
        let err = builder
            .tls_root_certificate(certificates.ca_pem())
            .connect()
            .await
            .expect_err("a CA for plain-text URLs is a configuration mistake");
        assert!(err.to_string().contains("rediss://"), "{err}");
    }
}

#[actix_web::test]
async fn an_acl_user_with_only_the_store_commands_logs_in_and_is_throttled() {
    let server = RedisServer::start();
    let prefix = unique_prefix();
    acl_user(&server, "app", "secret", &prefix);
    let store = RedisStore::builder(format!("redis://app:secret@127.0.0.1:{}", server.port))
        .key_prefix(&prefix)
        .connect()
        .await
        .unwrap();

    let counter = Counter {
        name: "ip:198.51.100.1",
        max: 2,
        window: Duration::from_secs(60),
    };
    assert_eq!(store.admit(&[counter]).await.unwrap(), Admission::Admitted);
    // Again after the server forgets its scripts: EVALSHA fails, SCRIPT LOAD runs.
    let mut admin = support::redis_server::connection(&server.url()).unwrap();
    redis::cmd("SCRIPT").arg("FLUSH").exec(&mut admin).unwrap();
    assert_eq!(store.admit(&[counter]).await.unwrap(), Admission::Admitted);
    assert!(matches!(
        store.admit(&[counter]).await.unwrap(),
        Admission::Refused { .. }
    ));
    store.release(&[counter.name]).await.unwrap();
    store.reset(counter.name).await.unwrap();

    let app = app(store).await;
    let token = log_in(&app, 9).await;
    assert_eq!(status(&app, get("/me", Some(&token))).await, 200);
    assert_eq!(status(&app, post("/logout", Some(&token))).await, 204);
    assert_eq!(status(&app, get("/me", Some(&token))).await, 401);

    // The rules are tight enough to matter: outside its prefix the user may do nothing.
    let mut as_app =
        support::redis_server::connection(&format!("redis://app:secret@127.0.0.1:{}", server.port))
            .unwrap();
    let denied = redis::cmd("GET")
        .arg("elsewhere")
        .query::<Option<String>>(&mut as_app);
    assert!(denied.is_err(), "{denied:?}");
    let denied = redis::cmd("FLUSHALL").query::<()>(&mut as_app);
    assert!(denied.is_err(), "{denied:?}");
}

#[actix_web::test]
async fn a_wrong_password_fails_at_connect_without_revealing_it() {
    let server = RedisServer::start();
    let prefix = unique_prefix();
    acl_user(&server, "app", "secret", &prefix);
    let wrong = "not-the-Secret-4711";
    for url in [
        format!("redis://app:{wrong}@127.0.0.1:{}", server.port),
        format!("redis://nobody:{wrong}@127.0.0.1:{}", server.port),
    ] {
        let started = Instant::now();
        let err = RedisStore::builder(&url)
            .key_prefix(&prefix)
            .connect()
            .await
            .expect_err("connected with a wrong password");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        let shown = format!("{err} / {err:?}");
        assert!(!shown.contains(wrong), "the password leaked: {shown}");
        assert!(
            shown.to_lowercase().contains("auth") || shown.contains("WRONGPASS"),
            "not clearly an authentication failure: {shown}"
        );
    }
}
