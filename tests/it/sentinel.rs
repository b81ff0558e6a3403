//! `RedisStore` on a Sentinel-managed primary: logins and sessions through a failover, and the
//! errors of a store that cannot find its primary. Every deployment is real `redis-server`
//! processes on free ports.

use std::time::{Duration, Instant};

use actix_login::{RedisStore, StoreError};
use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::test;

use crate::support;
use crate::support::http::minimal::app;
use crate::support::http::*;
use crate::support::process::{unique_dir, Guarded};
use crate::support::redis_server::{unique_prefix, RedisServer};
use crate::support::sentinel::{RedisSentinel, SERVICE};

async fn sentinel_store(deployment: &RedisSentinel, prefix: &str) -> RedisStore {
    RedisStore::sentinel_builder(deployment.sentinel_urls(), SERVICE)
        .key_prefix(prefix)
        .command_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(1000))
        .connect()
        .await
        .unwrap()
}

/// Logs in `count` users and waits until the replica has everything written so far, so the
/// sessions must survive a failover.
async fn replicated_sessions<S, B>(app: &S, deployment: &RedisSentinel, count: u64) -> Vec<String>
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let mut tokens = Vec::new();
    for id in 0..count {
        tokens.push(log_in(app, id).await);
    }
    let mut primary = deployment.server_connection(0).unwrap();
    let acknowledged: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(1000)
        .query(&mut primary)
        .unwrap();
    assert_eq!(
        acknowledged, 1,
        "the replica did not acknowledge the sessions"
    );
    tokens
}

/// Sends authenticated requests and logins in a loop until `done`, checking every answer: a
/// session created and replicated before the failover must never look logged out (401), only
/// unavailable (503) at worst.
async fn hammer<S, B>(
    app: &S,
    tokens: &[String],
    started: &std::sync::atomic::AtomicBool,
    done: &std::sync::atomic::AtomicBool,
) -> (usize, usize, usize)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let (mut ok, mut unavailable, mut refused_logins) = (0, 0, 0);
    let mut round = 0u64;
    while !done.load(std::sync::atomic::Ordering::SeqCst) {
        for (id, token) in tokens.iter().enumerate() {
            let (status, body) =
                status_and_body(test::call_service(app, get("/me", Some(token))).await).await;
            match status {
                200 => {
                    assert_eq!(body, id.to_string(), "a session answered as someone else");
                    ok += 1;
                }
                503 => unavailable += 1,
                other => panic!("existing session answered {other} during the failover: {body}"),
            }
        }
        // Writes too: a login is a MULTI/EXEC on the primary.
        let status = status(app, post(&format!("/login/{}", 1000 + round), None)).await;
        assert!(matches!(status, 200 | 503), "login answered {status}");
        refused_logins += usize::from(status == 503);
        started.store(true, std::sync::atomic::Ordering::SeqCst);
        round += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (ok, unavailable, refused_logins)
}

/// Everything that must hold once the new primary is in place.
async fn check_after_failover<S, B>(
    app: &S,
    deployment: &RedisSentinel,
    tokens: &[String],
    replica_left: bool,
) where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    // The failed command only starts the reconnect; allow it a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = status(app, get("/me", Some(&tokens[0]))).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "existing session answered {status}");
        assert!(Instant::now() < deadline, "the store did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (id, token) in tokens.iter().enumerate() {
        let (status, body) =
            status_and_body(test::call_service(app, get("/me", Some(token))).await).await;
        assert_eq!((status, body.as_str()), (200, id.to_string().as_str()));
    }

    // A demoted primary still answers reads, so the first write may be what finds out it
    // is no longer one (`READONLY`, a 503) and starts the reconnect: allow it a moment too.
    let deadline = Instant::now() + Duration::from_secs(10);
    let fresh = loop {
        let res = test::call_service(app, post("/login/4242", None)).await;
        if res.status() == 200 {
            break set_cookie(&res)
                .expect("a login sets the cookie")
                .value()
                .to_owned();
        }
        assert_eq!(res.status(), 503, "a login after the failover");
        assert!(Instant::now() < deadline, "logins did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status(app, get("/me", Some(&fresh))).await, 200);
    // The new session was written to the new primary, not to the old one.
    let mut new_primary = deployment.server_connection(1).unwrap();
    let found: Vec<String> = redis::cmd("KEYS")
        .arg(support::http::redis_session_key("*", &fresh))
        .query(&mut new_primary)
        .unwrap();
    assert_eq!(found.len(), 1, "new session missing on the new primary");

    if replica_left {
        // The demoted primary rejoins as a replica with a full resync, and acknowledges
        // nothing until it is done: wait until it streams, so that the logout's own wait
        // (500 ms) measures the store, not the resync on a loaded machine.
        let acknowledged: i64 = redis::cmd("WAIT")
            .arg(1)
            .arg(10_000)
            .query(&mut new_primary)
            .unwrap();
        assert_eq!(
            acknowledged, 1,
            "the old primary never rejoined as a replica"
        );
        assert_eq!(status(app, post("/logout", Some(&tokens[0]))).await, 204);
        assert_eq!(status(app, get("/me", Some(&tokens[0]))).await, 401);
    } else {
        // No replica could keep a logout from being undone by the next failover, so it does
        // not answer success; the primary did delete the session, it is just not safe yet.
        assert_eq!(status(app, post("/logout", Some(&tokens[0]))).await, 503);
        assert_eq!(status(app, get("/me", Some(&tokens[0]))).await, 401);
    }
    assert_eq!(status(app, get("/me", Some(&tokens[1]))).await, 200);
}

/// Runs requests while `trigger` makes the sentinels promote the replica and waits until the
/// deployment has settled, then checks the sessions and the store on the new primary.
async fn survive_failover(
    mut deployment: RedisSentinel,
    replica_left: bool,
    trigger: fn(&mut RedisSentinel),
) {
    let (logs, _guard) = support::logs::capture_logs();
    let store = sentinel_store(&deployment, &unique_prefix()).await;
    let app = app(store).await;
    let tokens = replicated_sessions(&app, &deployment, 20).await;

    let started = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failover = {
        let (started, done) = (started.clone(), done.clone());
        tokio::task::spawn_blocking(move || {
            // The failover starts once requests run (a round of them has been answered), so
            // that it lands among them however slowly the machine schedules the first one.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !started.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            let started = Instant::now();
            trigger(&mut deployment);
            let took = started.elapsed();
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            (deployment, took)
        })
    };
    let ((ok, unavailable, refused_logins), finished) =
        futures_util::future::join(hammer(&app, &tokens, &started, &done), failover).await;
    let (deployment, took) = finished.unwrap();
    eprintln!(
        "failover took {took:?}; meanwhile {ok} answers 200, {unavailable} 503, \
         {refused_logins} logins 503"
    );
    assert!(ok > 0, "no request ran during the failover");

    check_after_failover(&app, &deployment, &tokens, replica_left).await;

    // Thousands of failed requests, yet the primary was looked up a few times a second at
    // most, and replaced once.
    let logs = logs.text();
    let reconnects = logs.matches("reconnected to the Redis primary").count();
    let failed = logs.matches("through Sentinel").count();
    assert_eq!(reconnects, 1, "reconnects ({failed} failed lookups)");
    let bound = 5 + 2 * took.as_millis() / 100;
    assert!(
        (failed as u128) <= bound,
        "{failed} failed lookups in {took:?}"
    );
}

#[actix_web::test]
async fn sessions_survive_a_sentinel_failover() {
    survive_failover(RedisSentinel::start(), true, |deployment| {
        deployment.force_failover();
        deployment.wait_for_primary(1, Duration::from_secs(20));
        // The old primary keeps taking writes until it is demoted, which Sentinel does only
        // after 8 s or more: do it now, behind the store's back.
        deployment.demote(0);
        deployment.wait_for_replica(0, Duration::from_secs(20));
    })
    .await;
}

#[actix_web::test]
async fn sessions_survive_the_primary_dying() {
    survive_failover(RedisSentinel::start(), false, |deployment| {
        deployment.kill_server(0);
        deployment.wait_for_primary(1, Duration::from_secs(20));
    })
    .await;
}

/// A primary that goes silent (stopped, so its connections neither answer nor reset) is
/// replaced by Sentinel; the store finds the new one through its own command timeouts, as no
/// error ever comes from the old one, and sessions work again while it is still silent.
#[actix_web::test]
async fn sessions_survive_a_primary_gone_silent() {
    let deployment = RedisSentinel::start();
    let app = app(sentinel_store(&deployment, &unique_prefix()).await).await;
    let tokens = replicated_sessions(&app, &deployment, 1).await;

    let silent = deployment.freeze_server(0);
    deployment.wait_for_primary(1, Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = status(&app, get("/me", Some(&tokens[0]))).await;
        if answer == 200 {
            break;
        }
        assert_eq!(answer, 503, "a replicated session answered {answer}");
        assert!(
            Instant::now() < deadline,
            "still 503 10 s after the failover, with the old primary silent"
        );
    }
    silent.thaw();
}

#[actix_web::test]
async fn credentials_and_database_come_from_the_sentinel_urls() {
    // Password-protected data nodes behind open sentinels: a user name makes the sentinels
    // accept the password they do not need.
    let (logs, _guard) = support::logs::capture_logs();
    let deployment = RedisSentinel::start_with(Some("s3cret-data"), None);
    let urls: Vec<String> = deployment
        .sentinels
        .iter()
        .map(|s| format!("redis://default:s3cret-data@127.0.0.1:{}/3", s.port))
        .collect();
    let prefix = unique_prefix();
    let store = RedisStore::sentinel_builder(urls, SERVICE)
        .key_prefix(&prefix)
        .connect()
        .await
        .unwrap();
    let app = app(store).await;
    let token = log_in(&app, 7).await;
    assert_eq!(status(&app, get("/me", Some(&token))).await, 200);

    let mut primary = deployment.server_connection(0).unwrap();
    redis::cmd("SELECT").arg(3).exec(&mut primary).unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query(&mut primary)
        .unwrap();
    assert_eq!(
        keys.len(),
        3,
        "session, index and activity log in database 3: {keys:?}"
    );

    // Without the password the primary refuses the store.
    let result = RedisStore::sentinel_builder(deployment.sentinel_urls(), SERVICE)
        .connect_timeout(Duration::from_millis(1000))
        .connect()
        .await;
    let err = result.expect_err("connected without the password");
    assert!(!err.to_string().contains("s3cret"), "{err}");
    assert!(!logs.text().contains("s3cret"), "a password was logged");
}

#[actix_web::test]
async fn unreachable_sentinels_fail_within_the_connect_timeout() {
    // One port refuses connections, the other accepts them and never answers.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    for sentinels in [
        vec![format!("redis://127.0.0.1:{closed}")],
        vec![
            format!("redis://127.0.0.1:{silent_port}"),
            format!("redis://127.0.0.1:{closed}"),
        ],
    ] {
        let started = Instant::now();
        let result = RedisStore::sentinel_builder(sentinels.clone(), SERVICE)
            .connect_timeout(Duration::from_millis(300))
            .connect()
            .await;
        assert!(result.is_err(), "connected through {sentinels:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{sentinels:?}: {:?}",
            started.elapsed()
        );
    }
    drop(silent);
}

#[actix_web::test]
async fn an_unknown_service_name_is_a_clear_error() {
    let primary = RedisServer::start();
    let dir = unique_dir("lone-sentinel");
    let sentinel = Guarded::spawn_on_free_port(|port| {
        let conf = dir.0.join(format!("sentinel-{port}.conf"));
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\nsentinel monitor {SERVICE} 127.0.0.1 {} 1\n",
                primary.port
            ),
        )
        .unwrap();
        format!("redis-server {} --sentinel --logfile ''", conf.display())
    });
    let url = format!("redis://127.0.0.1:{}", sentinel.port);

    // The configured name works, so the failure below is the name's.
    let deadline = Instant::now() + Duration::from_secs(5);
    while RedisStore::connect_sentinel([url.as_str()], SERVICE)
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the sentinel never named the primary"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let err = RedisStore::connect_sentinel([url.as_str()], "no-such-service")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("no-such-service") && message.contains("not found"),
        "{message}"
    );
}

#[actix_web::test]
async fn sentinel_urls_must_agree() {
    let err = RedisStore::connect_sentinel(
        [
            "redis://app:one-password@127.0.0.1:1",
            "redis://app:other-password@127.0.0.1:2",
        ],
        SERVICE,
    )
    .await
    .unwrap_err();
    let message = format!("{err} {err:?}");
    assert!(message.contains("must agree"), "{message}");
    assert!(!message.contains("password@"), "{message}");
    assert!(!message.contains("one-password"), "{message}");
}

#[actix_web::test]
async fn sentinels_and_primary_over_tls_with_a_private_ca() {
    let deployment =
        RedisSentinel::start_with(None, Some(support::tls::TestCertificates::generate()));
    let ca = deployment.tls.as_ref().unwrap().ca_pem();
    let store = RedisStore::sentinel_builder(deployment.sentinel_urls(), SERVICE)
        .tls_root_certificate(ca)
        .key_prefix(unique_prefix())
        .connect()
        .await
        .unwrap();
    let app = app(store).await;
    let token = log_in(&app, 11).await;
    let (code, body) =
        status_and_body(test::call_service(&app, get("/me", Some(&token))).await).await;
    assert_eq!((code, body.as_str()), (200, "11"));
    assert_eq!(status(&app, post("/logout", Some(&token))).await, 204);
    assert_eq!(status(&app, get("/me", Some(&token))).await, 401);

    // Without the CA neither the sentinels nor the primary are trusted.
    let started = Instant::now();
    let result = RedisStore::sentinel_builder(deployment.sentinel_urls(), SERVICE)
        .connect_timeout(Duration::from_millis(1000))
        .connect()
        .await;
    assert!(result.is_err(), "connected without trusting the CA");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// Waits until `token`'s session answers something other than 503, as it does once the store
/// has found the new primary, and returns that status.
async fn status_once_recovered<S, B>(app: &S, token: &str) -> u16
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = status(app, get("/me", Some(token))).await;
        if status != 503 {
            return status;
        }
        assert!(Instant::now() < deadline, "the store did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A logout the primary acknowledged but no replica received is lost when the replica is
/// promoted. So a logout must not answer success before a replica has its `DEL`: with the only
/// replica cut off, it answers 503 within a bounded time, and whatever it answered, a logout
/// that succeeded is never undone by the failover.
#[actix_web::test]
async fn a_logout_is_never_undone_by_a_failover() {
    let mut deployment = RedisSentinel::start();
    let app = app(sentinel_store(&deployment, &unique_prefix()).await).await;
    let tokens = replicated_sessions(&app, &deployment, 2).await;

    // The replica stalls, and the primary drops its link: nothing written now reaches it.
    let frozen = deployment.freeze_server(1);
    deployment.cut_replication(0);
    let started = Instant::now();
    let logout = status(&app, post("/logout", Some(&tokens[0]))).await;
    let took = started.elapsed();

    // The primary dies before the replica could hear of the logout, and the replica takes over.
    deployment.kill_server(0);
    frozen.thaw();
    deployment.wait_for_primary(1, Duration::from_secs(30));
    let after = status_once_recovered(&app, &tokens[0]).await;
    assert!(
        logout != 204 || after == 401,
        "a logout that answered 204 was undone by the failover: the cookie answers {after}"
    );
    assert_eq!(
        logout, 503,
        "no replica had the logout, yet it answered {logout}"
    );
    assert!(took < Duration::from_secs(2), "the logout took {took:?}");
    assert_eq!(status(&app, get("/me", Some(&tokens[1]))).await, 200);
}

/// A store whose commands time out after `command_timeout` and whose session-ending deletes
/// wait up to 5 s for a replica: far longer than any stall here, so that a late thaw on a loaded
/// machine still comes in time (what is tested is that the logout waits, not the default).
async fn store_waiting_for_the_replica(
    deployment: &RedisSentinel,
    command_timeout: Duration,
) -> RedisStore {
    RedisStore::sentinel_builder(deployment.sentinel_urls(), SERVICE)
        .key_prefix(unique_prefix())
        .command_timeout(command_timeout)
        .connect_timeout(Duration::from_millis(1000))
        .wait_for_replicas(1, Duration::from_secs(5))
        .connect()
        .await
        .unwrap()
}

/// Logs `token` out while the replica is stopped, until `stall` past the moment the logout's
/// `WAIT` blocks on the primary: the logout's status, and how long it took.
async fn logout_while_the_replica_stalls<S, B>(
    app: &S,
    deployment: &RedisSentinel,
    token: &str,
    stall: Duration,
) -> (u16, Duration)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let frozen = deployment.freeze_server(1);
    let mut primary = deployment.server_connection(0).unwrap();
    let thaw = async {
        // The logout is blocked in its WAIT on the primary: the replica's stall is what holds
        // it. Then `stall` more before the replica comes back.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let info: String = redis::cmd("INFO")
                .arg("clients")
                .query(&mut primary)
                .unwrap();
            let blocked = info
                .lines()
                .find_map(|l| l.strip_prefix("blocked_clients:"))
                .and_then(|n| n.trim().parse::<u32>().ok())
                .unwrap_or(0);
            if blocked > 0 {
                break;
            }
            assert!(Instant::now() < deadline, "the logout never waited: {info}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(stall).await;
        frozen.thaw();
    };
    let logout = async {
        let started = Instant::now();
        let answer = status(app, post("/logout", Some(token))).await;
        (answer, started.elapsed())
    };
    let (logout, ()) = futures_util::future::join(logout, thaw).await;
    logout
}

/// A replica that is merely slow delays the logout, which then answers 204 and holds: the
/// primary dies right after, and the promoted replica has the logout.
#[actix_web::test]
async fn a_logout_waits_for_a_slow_replica_and_survives_a_failover() {
    let mut deployment = RedisSentinel::start();
    let app =
        app(store_waiting_for_the_replica(&deployment, Duration::from_millis(500)).await).await;
    let tokens = replicated_sessions(&app, &deployment, 2).await;
    let stall = Duration::from_millis(250);
    let (logout, took) =
        logout_while_the_replica_stalls(&app, &deployment, &tokens[0], stall).await;
    assert_eq!(
        logout, 204,
        "the logout failed though the replica came back in time"
    );
    assert!(
        took >= Duration::from_millis(200),
        "the logout answered after {took:?}, before the stalled replica could have it"
    );

    deployment.kill_server(0);
    deployment.wait_for_primary(1, Duration::from_secs(30));
    assert_eq!(status_once_recovered(&app, &tokens[0]).await, 401);
    assert_eq!(status(&app, get("/me", Some(&tokens[1]))).await, 200);
}

/// The replica wait comes on top of the command timeout: a logout whose replica needs longer
/// than a command may take, though not longer than the wait, still succeeds. (The connection
/// to the primary used to give up on a reply after the command timeout alone, which cut such
/// a logout short with 503.)
#[actix_web::test]
async fn a_replica_wait_longer_than_the_command_timeout_is_waited_out() {
    let deployment = RedisSentinel::start();
    let app =
        app(store_waiting_for_the_replica(&deployment, Duration::from_millis(500)).await).await;
    let tokens = replicated_sessions(&app, &deployment, 1).await;
    let stall = Duration::from_millis(1200);
    let (logout, took) =
        logout_while_the_replica_stalls(&app, &deployment, &tokens[0], stall).await;
    assert_eq!(
        logout, 204,
        "the logout gave up after {took:?}, though the replica came back within its wait"
    );
    assert!(took >= stall, "the logout answered after {took:?}");
}

/// A demotion that a failover could undo would hand the old roles back. So a live role update
/// waits for a replica as a logout does: with the only replica cut off, it fails (the caller
/// retries) instead of answering success that the promoted replica would not have.
#[actix_web::test]
async fn a_live_role_update_waits_for_a_replica_as_a_logout_does() {
    let deployment = RedisSentinel::start();
    let store = sentinel_store(&deployment, &unique_prefix()).await;
    let sessions = actix_login::LoginMiddleware::new(store.clone()).sessions();
    let app = app(store).await;
    replicated_sessions(&app, &deployment, 1).await;

    let updated = sessions.update_user("0", &0, ["admin"]).await;
    assert_eq!(
        updated.unwrap(),
        1,
        "the replica is up: the update goes through"
    );

    let frozen = deployment.freeze_server(1);
    deployment.cut_replication(0);
    let started = Instant::now();
    let demoted = sessions.update_user("0", &0, Vec::<String>::new()).await;
    let took = started.elapsed();
    frozen.thaw();
    assert!(
        matches!(demoted, Err(actix_login::Error::Store(_))),
        "no replica had the demotion, yet it answered {demoted:?}"
    );
    assert!(took < Duration::from_secs(3), "the update took {took:?}");
}
