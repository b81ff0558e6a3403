//! Graceful shutdown: `SIGTERM` lets the requests in flight finish, then the process exits on
//! its own, and the store holds nothing half written.
//!
//! The quickstart runs as a process with Redis and the local cache, so its cache's tracking
//! task and its password-hashing threads are running when the signal arrives. Eight logins
//! queue behind the one hashing thread; the signal goes out as soon as the first is answered,
//! while the other seven are still waiting to be hashed.

use std::process::Command;
use std::time::Duration;

use futures_util::future::join_all;
use futures_util::StreamExt as _;

use crate::support::example::Example;
use crate::support::redis_server::{connection, RedisServer};

const LOGINS: usize = 8;

#[actix_web::test]
async fn sigterm_finishes_requests_in_flight_and_leaves_nothing_half_written() {
    let redis = RedisServer::start();
    let url = redis.url();
    let mut app = Example::start(
        "quickstart",
        &[
            ("REDIS_URL", url.as_str()),
            ("SESSION_CACHE", "1000"),
            ("LOGIN_MAX_FAILURES", "1000"),
        ],
    );
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(60))
        .finish();
    let login = || {
        client
            .post(app.url("/login"))
            .insert_header(("content-type", "application/json"))
            .send_body(r#"{"username":"alice","password":"alice-password-123"}"#)
    };
    let mut logins: futures_util::stream::FuturesUnordered<_> =
        (0..LOGINS).map(|_| login()).collect();

    let first = logins.next().await.expect("a first answer");
    let first = first.expect("the first login answered");
    assert_eq!(first.status(), 200);
    let sent = Command::new("kill")
        .args(["-TERM", &app.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success());

    // Every login already received is answered in full, session cookie and all.
    let rest = join_all(
        logins
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .map(|res| async {
                match res {
                    Ok(res) => (
                        res.status().as_u16(),
                        res.headers()
                            .get_all("set-cookie")
                            .any(|c| c.to_str().is_ok_and(|c| c.starts_with("__Host-id="))),
                    ),
                    Err(err) => panic!("a login in flight was dropped: {err}"),
                }
            }),
    )
    .await;
    assert_eq!(rest.len(), LOGINS - 1);
    for (status, cookie) in &rest {
        assert_eq!((*status, *cookie), (200, true), "{rest:?}");
    }

    // Then the process exits by itself, and cleanly: no background task or hashing thread
    // keeps it alive.
    let status = app
        .wait_for_exit(Duration::from_secs(40))
        .expect("the quickstart exits after SIGTERM");
    assert!(status.success(), "{status:?}");

    // Nothing half written: every key has a TTL, every index entry names a live session,
    // and each login left exactly one session.
    let mut conn = connection(&url).unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    let sessions: Vec<&String> = keys.iter().filter(|k| k.contains(":s:")).collect();
    assert_eq!(sessions.len(), LOGINS, "{keys:?}");
    for key in &keys {
        let ttl: i64 = redis::cmd("PTTL").arg(key).query(&mut conn).unwrap();
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
    }
    for index in keys.iter().filter(|k| k.contains(":u:")) {
        let members: Vec<String> = redis::cmd("HKEYS").arg(index).query(&mut conn).unwrap();
        for member in members {
            let prefix = index.split(":u:").next().unwrap();
            let session = format!("{prefix}:s:{{{}}}{}", &member[..4], &member[4..]);
            assert!(
                keys.contains(&session),
                "{index} names {member}, which is gone"
            );
        }
    }
}
