//! Fail closed through the faults a network deals out, outside the chaos test: a link that is
//! reset, and a link that goes silent without closing. One Redis behind a proxy the test
//! controls, with and without the local cache. Every answer is checked as it comes:
//!
//! - while the store cannot answer: `503`, never a `200` for a session Redis no longer holds
//!   (past the cache's one-second lease), never a login (no cookie, no record);
//! - the first `503` comes within the command timeout plus a second of the fault;
//! - once the link is back (or, for a silent link, once the silent connection is replaced),
//!   everything answers again within two seconds, with no restart.

use std::time::{Duration, Instant};

use actix_login::RedisStore;
use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::test;

use crate::support::chaos_proxy::{ChaosProxy, Mode};
use crate::support::http::minimal::app;
use crate::support::http::*;
use crate::support::redis_server::{commands_during_since, connection, dump, RedisServer};

const PREFIX: &str = "faults";
const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);
/// How long the local cache vouches for its entries without a heartbeat reply.
const LEASE: Duration = Duration::from_secs(1);
/// The README's bounds, with the margin two shared cores need.
const FIRST_503_WITHIN: Duration = Duration::from_millis(1500);
const RECOVERY_WITHIN: Duration = Duration::from_secs(2);

async fn store(proxy: &ChaosProxy, cached: bool) -> RedisStore {
    let builder = RedisStore::builder(proxy.url())
        .key_prefix(PREFIX)
        .command_timeout(COMMAND_TIMEOUT)
        .connect_timeout(COMMAND_TIMEOUT);
    let builder = if cached {
        builder.local_cache(1000)
    } else {
        builder
    };
    builder.connect().await.unwrap()
}

/// Proves a cache hit as `cache::assert_served_from_cache` does: a `200` that sent Redis no
/// command but the heartbeat's `PING`, within `within`.
async fn assert_cached<S, B>(app: &S, server: &RedisServer, token: &str, within: Duration)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let deadline = Instant::now() + within;
    loop {
        assert_eq!(status(app, get("/me", Some(token))).await, 200);
        let before = server.command_counts();
        assert_eq!(status(app, get("/me", Some(token))).await, 200);
        let mut sent = commands_during_since(server, &before);
        sent.remove("ping");
        if sent.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not served from the cache: {sent:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sessions_in_redis(server: &RedisServer) -> usize {
    dump(&server.url(), &format!("{PREFIX}:s")).len()
}

/// A login while the store fails: `503`, no cookie.
async fn login_refused<S, B>(app: &S, id: u64)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let res = test::call_service(app, post(&format!("/login/{id}"), None)).await;
    assert!(set_cookie(&res).is_none(), "a login through a failed store");
    assert_eq!(status_and_body(res).await, (503, UNAVAILABLE.into()));
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// Every open connection is closed and new ones are closed on accept, until repaired.
    Reset,
    /// Every open connection goes silent for good, without closing; new ones pass.
    Silent,
}

/// The fault, then the repair; what each phase allows is checked on every answer.
async fn check(fault: Fault, cached: bool) {
    let what = format!("{fault:?}, cached: {cached}");
    let server = RedisServer::start();
    let proxy = ChaosProxy::start(server.port);
    let app = app(store(&proxy, cached).await).await;
    let token = log_in(&app, 1).await;
    // Ended behind the app's back while its link is down: never a 200 once the fault is seen.
    let ended = log_in(&app, 2).await;
    if cached {
        assert_cached(&app, &server, &token, Duration::from_secs(5)).await;
        assert_cached(&app, &server, &ended, Duration::from_secs(5)).await;
    }
    assert_eq!(sessions_in_redis(&server), 2);

    let faulted = Instant::now();
    match fault {
        Fault::Reset => proxy.set_mode(Mode::Drop),
        // As after a NAT or firewall on the path forgets the flows.
        Fault::Silent => proxy.sever(),
    }
    let mut raw = connection(&server.url()).unwrap();
    redis::cmd("DEL")
        .arg(redis_session_key(PREFIX, &ended))
        .exec(&mut raw)
        .unwrap();

    // The first request after the fault is a login, on the connection the fault hit: 503, no
    // cookie, and (checked at the end) no record.
    login_refused(&app, 3).await;
    let first_503 = faulted.elapsed();
    assert!(
        first_503 <= FIRST_503_WITHIN,
        "{what}: first 503 after {first_503:?}, more than {FIRST_503_WITHIN:?}"
    );
    eprintln!("{what}: first 503 {first_503:?} after the fault");

    let repaired = if fault == Fault::Reset {
        // Down for as long as the link is: every request that needs the store is refused.
        let res = test::call_service(&app, post("/logout", Some(&token))).await;
        assert!(
            set_cookie(&res).is_none(),
            "{what}: logout cleared the cookie"
        );
        assert_eq!(res.status(), 503, "{what}");
        assert_eq!(status(&app, get("/me", Some(&token))).await, 503, "{what}");
        assert_eq!(status(&app, get("/me", Some(&ended))).await, 503, "{what}");
        login_refused(&app, 5).await;
        proxy.set_mode(Mode::Pass);
        Instant::now()
    } else {
        // A silent link repairs itself: the connection that timed out is replaced.
        faulted + first_503
    };

    // Recovering: the ended session is 503 until the store answers, then 401; a 200 only while
    // the cache's lease could still vouch for it, as a silent link brings no invalidation.
    let mut within_lease = 0;
    loop {
        let started = Instant::now();
        let answer = status(&app, get("/me", Some(&ended))).await;
        match answer {
            401 => break,
            503 => {}
            200 => within_lease += 1,
            other => panic!("{what}: {other} for the ended session"),
        }
        if answer == 200 {
            assert!(
                cached && fault == Fault::Silent && started < faulted + LEASE,
                "{what}: a session Redis no longer holds answered 200, {:?} after the fault",
                started - faulted
            );
        }
        assert!(
            repaired.elapsed() <= RECOVERY_WITHIN,
            "{what}: no 401 yet, {:?} after the repair",
            repaired.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "{what}: recovered {:?} after the repair; {within_lease} answers from the lease",
        repaired.elapsed()
    );
    assert_eq!(status(&app, get("/me", Some(&token))).await, 200, "{what}");
    // No login slipped through while the store failed.
    assert_eq!(sessions_in_redis(&server), 1, "{what}");
    let fresh = log_in(&app, 4).await;
    assert_eq!(status(&app, get("/me", Some(&fresh))).await, 200, "{what}");
    if cached {
        // The cache comes back by itself, on a new tracking connection.
        assert_cached(&app, &server, &fresh, Duration::from_secs(5)).await;
    }
}

#[actix_web::test]
async fn a_reset_link_fails_closed_and_recovers() {
    check(Fault::Reset, false).await;
}

#[actix_web::test]
async fn a_reset_link_fails_closed_and_recovers_with_the_local_cache() {
    check(Fault::Reset, true).await;
}

#[actix_web::test]
async fn a_silent_link_fails_closed_and_recovers() {
    check(Fault::Silent, false).await;
}

#[actix_web::test]
async fn a_silent_link_fails_closed_and_recovers_with_the_local_cache() {
    check(Fault::Silent, true).await;
}
