//! Security events and the activity log: every event type reaches a subscriber, carries no
//! secret, and a slow subscriber never slows a request; the activity log's cap and expiry on
//! memory, one Redis and a Cluster.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_login::events::{ActivityKind, EventKind, LoginMethod, RevokedBy, SecurityEvent};
use actix_login::links::{LinkPurpose, OneTimeLinks, Recipient};
use actix_login::throttle::{Limit, LoginThrottle};
use actix_login::{AuthUser, Error, Login, LoginMiddleware, MemoryStore, PersonalToken, Session};
use actix_web::body::MessageBody;
use actix_web::cookie::Cookie;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header;
use actix_web::{test, web, App, HttpRequest, HttpResponse};
use serde::Deserialize;

use crate::support::http::*;

const PASSWORD: &str = "alice-correct-horse-1";

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

#[derive(serde::Serialize, Deserialize)]
struct Profile {
    name: String,
}

async fn login(
    req: HttpRequest,
    throttle: web::Data<LoginThrottle>,
    session: Session,
    creds: web::Json<Credentials>,
) -> Result<HttpResponse, Error> {
    let id = (creds.username == "alice").then_some("1");
    let attempt = throttle.attempt(&req, &creds.username, id).await?;
    if id.is_none() || creds.password != PASSWORD {
        attempt.failed().await?;
        return Ok(HttpResponse::Unauthorized().finish());
    }
    let device = attempt.succeeded().await?;
    let profile = Profile {
        name: "alice".into(),
    };
    session.login_with(Login::new("1", &profile)).await?;
    Ok(HttpResponse::Ok().cookie(device).finish())
}

async fn logout(_user: AuthUser<Profile>, session: Session) -> Result<HttpResponse, Error> {
    session.logout().await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn revoke(
    _user: AuthUser<Profile>,
    session: Session,
    id: web::Path<String>,
) -> Result<HttpResponse, Error> {
    session.revoke_session(&id).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn revoke_others(_user: AuthUser<Profile>, session: Session) -> Result<HttpResponse, Error> {
    session.revoke_other_sessions().await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn password(_user: AuthUser<Profile>, session: Session) -> Result<HttpResponse, Error> {
    session.credentials_changed("v2").await?;
    session.reauthenticate().await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn token(_user: AuthUser<Profile>, session: Session) -> Result<HttpResponse, Error> {
    let issued = session.create_token(PersonalToken::new("ci")).await?;
    Ok(HttpResponse::Ok().json(issued))
}

async fn sessions(_user: AuthUser<Profile>, session: Session) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(session.list_sessions().await?))
}

async fn magic_link(links: OneTimeLinks) -> Result<HttpResponse, Error> {
    let issued = links
        .issue(
            LinkPurpose::SignIn,
            "alice",
            Some(Recipient::new("1", "alice@example.test")),
        )
        .await?;
    Ok(HttpResponse::Ok().body(issued.map(|l| l.secret().to_owned()).unwrap_or_default()))
}

async fn use_link(
    links: OneTimeLinks,
    session: Session,
    secret: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let link = links.consume(LinkPurpose::SignIn, &secret).await?;
    let profile = Profile {
        name: "alice".into(),
    };
    session
        .login_with(Login::new(link.user_id(), &profile).method(LoginMethod::Link))
        .await?;
    Ok(HttpResponse::Ok().finish())
}

/// Events as a subscriber saw them.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<SecurityEvent>>>);

impl Seen {
    fn all(&self) -> Vec<SecurityEvent> {
        self.0.lock().unwrap().clone()
    }

    /// Waits until an event `matches`, as the events thread delivers after the answer.
    async fn wait_for(&self, what: &str, matches: impl Fn(&EventKind) -> bool) -> SecurityEvent {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(event) = self.all().into_iter().find(|e| matches(&e.kind)) {
                return event;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} event: {:?}",
                self.all()
            );
            actix_web::rt::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn middleware(store: MemoryStore, seen: &Seen) -> LoginMiddleware {
    let seen = seen.clone();
    LoginMiddleware::builder(store)
        .max_sessions_per_user(3)
        .on_event(move |event: &SecurityEvent| seen.0.lock().unwrap().push(event.clone()))
        .build()
}

async fn app(
    middleware: LoginMiddleware,
    throttle: LoginThrottle,
) -> impl Service<
    actix_http::Request,
    Response = ServiceResponse<impl MessageBody>,
    Error = actix_web::Error,
> {
    test::init_service(
        App::new()
            .app_data(web::Data::new(throttle))
            .route("/login", web::post().to(login))
            .route("/logout", web::post().to(logout))
            .route("/revoke/{id}", web::post().to(revoke))
            .route("/revoke-others", web::post().to(revoke_others))
            .route("/password", web::post().to(password))
            .route("/token", web::post().to(token))
            .route("/sessions", web::get().to(sessions))
            .route("/magic", web::post().to(magic_link))
            .route("/magic/{secret}", web::post().to(use_link))
            .wrap(middleware),
    )
    .await
}

fn login_request(password: &str, device: Option<&str>) -> actix_http::Request {
    let mut req = test::TestRequest::post()
        .uri("/login")
        .peer_addr("192.0.2.9:4000".parse().unwrap())
        .insert_header(("sec-fetch-site", "same-origin"))
        .insert_header((header::USER_AGENT, "events-test/1.0"))
        .set_json(serde_json::json!({"username": "alice", "password": password}));
    if let Some(device) = device {
        req = req.insert_header((header::COOKIE, format!("__Host-device={device}")));
    }
    req.to_request()
}

fn device_cookie<B>(res: &ServiceResponse<B>) -> Option<Cookie<'static>> {
    res.headers()
        .get_all(header::SET_COOKIE)
        .filter_map(|v| Cookie::parse_encoded(v.to_str().ok()?.to_owned()).ok())
        .find(|c| c.name() == "__Host-device")
}

/// Every event type reaches the subscriber, with what it says; none holds a secret; and the
/// account's activity log shows what its owner should see, newest first.
#[actix_web::test]
async fn every_event_reaches_the_subscriber_and_none_holds_a_secret() {
    let store = MemoryStore::new();
    let seen = Seen::default();
    let middleware = middleware(store.clone(), &seen);
    let sessions = middleware.sessions();
    let throttle =
        LoginThrottle::new(store).per_account_and_client(Limit::new(3, Duration::from_secs(60)));
    let app = app(middleware, throttle).await;
    let mut secrets = vec![PASSWORD.to_owned(), "wrong-password".to_owned()];

    // A failed login, then a login from this new browser, then one from the known browser.
    assert_eq!(
        status(&app, login_request("wrong-password", None)).await,
        401
    );
    let failed = seen
        .wait_for("login_failed", |k| *k == EventKind::LoginFailed)
        .await;
    assert_eq!(failed.user_id.as_deref(), Some("1"));
    assert_eq!(failed.ip.as_deref(), Some("192.0.2.9"));
    assert_eq!(failed.user_agent.as_deref(), Some("events-test/1.0"));

    let res = test::call_service(&app, login_request(PASSWORD, None)).await;
    assert_eq!(res.status(), 200);
    let first = set_cookie(&res).unwrap().value().to_owned();
    let device = device_cookie(&res).unwrap().value().to_owned();
    secrets.extend([first.clone(), stored_key(&first), device.clone()]);
    let new_device = seen
        .wait_for("new-device login", |k| {
            matches!(
                k,
                EventKind::LoginSucceeded {
                    new_device: true,
                    ..
                }
            )
        })
        .await;
    let EventKind::LoginSucceeded { method, bearer, .. } = &new_device.kind else {
        unreachable!()
    };
    assert_eq!((*method, *bearer), (LoginMethod::Password, false));

    let res = test::call_service(&app, login_request(PASSWORD, Some(&device))).await;
    assert_eq!(res.status(), 200);
    let second = set_cookie(&res).unwrap().value().to_owned();
    secrets.extend([second.clone(), stored_key(&second)]);
    secrets.push(device_cookie(&res).unwrap().value().to_owned());
    seen.wait_for("known-device login", |k| {
        matches!(
            k,
            EventKind::LoginSucceeded {
                new_device: false,
                ..
            }
        )
    })
    .await;

    // A token, created and revoked by its owner.
    let res = test::call_service(&app, post("/token", Some(&second))).await;
    assert_eq!(res.status(), 200);
    let issued: serde_json::Value = test::read_body_json(res).await;
    let token_id = issued["id"].as_str().unwrap().to_owned();
    secrets.push(issued["token"].as_str().unwrap().to_owned());
    seen.wait_for(
        "token_created",
        |k| matches!(k, EventKind::TokenCreated { name, .. } if name == "ci"),
    )
    .await;
    assert_eq!(
        status(&app, post(&format!("/revoke/{token_id}"), Some(&second))).await,
        204
    );
    seen.wait_for("token_revoked", |k| {
        matches!(k, EventKind::TokenRevoked { session_id, by: RevokedBy::User } if *session_id == token_id)
    })
    .await;

    // The first session revoked from the second, by its user.
    let res = test::call_service(&app, get("/sessions", Some(&second))).await;
    let listed: Vec<serde_json::Value> = test::read_body_json(res).await;
    let first_id = listed.iter().find(|s| s["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        status(&app, post(&format!("/revoke/{first_id}"), Some(&second))).await,
        204
    );
    seen.wait_for("session_revoked", |k| {
        matches!(k, EventKind::SessionRevoked { session_id, by: RevokedBy::User } if *session_id == first_id)
    })
    .await;

    // Past the cap of three logins, the oldest is ended by the cap.
    let mut tokens = Vec::new();
    for _ in 0..3 {
        let res = test::call_service(&app, login_request(PASSWORD, None)).await;
        assert_eq!(res.status(), 200);
        let token = set_cookie(&res).unwrap().value().to_owned();
        secrets.extend([token.clone(), stored_key(&token)]);
        secrets.push(device_cookie(&res).unwrap().value().to_owned());
        tokens.push(token);
    }
    seen.wait_for("session cap", |k| {
        matches!(
            k,
            EventKind::SessionRevoked {
                by: RevokedBy::SessionCap,
                ..
            }
        )
    })
    .await;
    let current = tokens.pop().unwrap();
    assert_eq!(
        status(&app, post("/revoke-others", Some(&current))).await,
        204
    );
    seen.wait_for(
        "other_sessions_revoked",
        |k| matches!(k, EventKind::OtherSessionsRevoked { count } if *count >= 1),
    )
    .await;

    // A password change, then a logout.
    assert_eq!(status(&app, post("/password", Some(&current))).await, 204);
    seen.wait_for("credentials_changed", |k| {
        matches!(k, EventKind::CredentialsChanged { .. })
    })
    .await;

    // A sign-in link, issued and used.
    let res = test::call_service(&app, post("/magic", None)).await;
    let secret = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
    assert_eq!(secret.len(), 43);
    secrets.push(secret.clone());
    seen.wait_for("link_issued", |k| {
        matches!(
            k,
            EventKind::LinkIssued {
                purpose: LinkPurpose::SignIn
            }
        )
    })
    .await;
    let res = test::call_service(&app, post(&format!("/magic/{secret}"), None)).await;
    assert_eq!(res.status(), 200);
    let linked = set_cookie(&res).unwrap().value().to_owned();
    secrets.extend([linked.clone(), stored_key(&linked)]);
    seen.wait_for("link_used", |k| matches!(k, EventKind::LinkUsed { .. }))
        .await;
    seen.wait_for("link login", |k| {
        matches!(
            k,
            EventKind::LoginSucceeded {
                method: LoginMethod::Link,
                ..
            }
        )
    })
    .await;
    assert_eq!(status(&app, post("/logout", Some(&linked))).await, 204);
    seen.wait_for("logged_out", |k| matches!(k, EventKind::LoggedOut { .. }))
        .await;

    // Everything ended by the app.
    assert!(sessions.revoke_all("1").await.is_ok());
    seen.wait_for("all_sessions_revoked", |k| {
        matches!(
            k,
            EventKind::AllSessionsRevoked {
                by: RevokedBy::App,
                ..
            }
        )
    })
    .await;

    // Throttled: the limit of three failures from this address is reached.
    for _ in 0..3 {
        test::call_service(&app, login_request("wrong-password", None)).await;
    }
    assert_eq!(
        status(&app, login_request("wrong-password", None)).await,
        429
    );
    seen.wait_for("throttled", |k| matches!(k, EventKind::Throttled { .. }))
        .await;

    // No event, serialised, holds a token, a key, a device token, a link or a password.
    for event in seen.all() {
        let json = serde_json::to_string(&event).unwrap();
        let debug = format!("{event:?}");
        for secret in &secrets {
            assert!(!json.contains(secret.as_str()), "{json} holds a secret");
            assert!(!debug.contains(secret.as_str()), "{debug} holds a secret");
        }
    }

    // The activity log, newest first.
    let log = sessions.activity("1", None, 100).await.unwrap();
    let kinds: Vec<ActivityKind> = log.iter().map(|e| e.kind).collect();
    for kind in [
        ActivityKind::LoginFailed,
        ActivityKind::NewDevice,
        ActivityKind::Login,
        ActivityKind::TokenCreated,
        ActivityKind::TokenRevoked,
        ActivityKind::SessionRevoked,
        ActivityKind::OtherSessionsRevoked,
        ActivityKind::PasswordChanged,
        ActivityKind::LinkUsed,
        ActivityKind::Logout,
        ActivityKind::AllSessionsRevoked,
    ] {
        assert!(kinds.contains(&kind), "{kind:?} missing from {kinds:?}");
    }
    assert_eq!(
        kinds.last(),
        Some(&ActivityKind::LoginFailed),
        "oldest last"
    );
    assert!(log
        .windows(2)
        .all(|w| w[0].at >= w[1].at && w[0].id > w[1].id));
    let failed = log.last().unwrap();
    assert_eq!(failed.ip.as_deref(), Some("192.0.2.9"));
    assert_eq!(failed.user_agent.as_deref(), Some("events-test/1.0"));
    let json = serde_json::to_string(&log).unwrap();
    for secret in &secrets {
        assert!(
            !json.contains(secret.as_str()),
            "the activity log holds a secret"
        );
    }
    // Paged: the page after the third entry starts with the fourth.
    let page = sessions.activity("1", Some(&log[2].id), 2).await.unwrap();
    assert_eq!(page, log[3..5].to_vec());
}

/// A subscriber that takes a second per event, behind a queue of one: logins answer as fast as
/// without it, and the events it cannot keep up with are dropped and counted.
#[actix_web::test]
async fn a_slow_subscriber_never_delays_a_request() {
    let middleware = LoginMiddleware::builder(MemoryStore::new())
        .event_queue(1)
        .on_event(|_: &SecurityEvent| std::thread::sleep(Duration::from_secs(1)))
        .build();
    let app = crate::support::http::minimal::app_with(middleware.clone()).await;
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for id in 0..10 {
        let one = Instant::now();
        log_in(&app, id).await;
        slowest = slowest.max(one.elapsed());
    }
    let all = started.elapsed();
    // Waiting for the subscriber would take nine seconds at least; a shared two-core machine
    // answers ten logins in memory well within three, and any one within one.
    assert!(all < Duration::from_secs(3), "ten logins took {all:?}");
    assert!(slowest < Duration::from_secs(1), "a login took {slowest:?}");
    assert!(
        middleware.events_dropped() >= 5,
        "dropped {}",
        middleware.events_dropped()
    );
}

/// What the activity log costs a login on Redis: `LPUSH`, `LTRIM` and `PEXPIRE`, sent beside
/// the login's own commands; turned off, none.
#[actix_web::test]
async fn a_login_adds_lpush_ltrim_and_pexpire_on_redis() {
    use crate::support::redis_server::{commands_during_since, unique_prefix, RedisServer};
    let server = RedisServer::start();
    let mut counts = Vec::new();
    for keep in [true, false] {
        let store = redis_store_at(&server.url(), &unique_prefix()).await;
        let mut builder = LoginMiddleware::builder(store);
        if !keep {
            builder = builder.activity_log(0, Duration::from_secs(60));
        }
        let app = crate::support::http::minimal::app_with(builder.build()).await;
        log_in(&app, 1).await; // the first login loads the scripts
        let before = server.command_counts();
        log_in(&app, 1).await;
        counts.push(commands_during_since(&server, &before));
    }
    let (with_log, without) = (&counts[0], &counts[1]);
    let count =
        |c: &std::collections::HashMap<String, u64>, name: &str| c.get(name).copied().unwrap_or(0);
    for (name, added) in [("lpush", 1), ("ltrim", 1), ("pexpire", 1)] {
        assert_eq!(
            count(with_log, name),
            count(without, name) + added,
            "{name}: {with_log:?} vs {without:?}"
        );
    }
    let total = |c: &std::collections::HashMap<String, u64>| c.values().sum::<u64>();
    assert_eq!(
        total(with_log),
        total(without) + 3,
        "{with_log:?} vs {without:?}"
    );
}

/// What the activity log costs in Redis memory: about its entries' bytes. Ten logins of a
/// desktop browser take under 2 KB; the stream this log once was took 4.7 KB for two, since a
/// stream sets aside room for a hundred entries with its first.
#[actix_web::test]
async fn the_activity_log_costs_about_its_entries_bytes_in_redis() {
    use actix_login::events::ActivityEntry;
    use actix_login::store::SessionStore;

    use crate::support::redis_server::{connection, unique_prefix, RedisServer};

    let server = RedisServer::start();
    let store = redis_store_at(&server.url(), &unique_prefix()).await;
    let limits = actix_login::store::ActivityLimits {
        max_entries: 100,
        keep_for: Duration::from_secs(90 * 24 * 3600),
    };
    let desktop = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
                   (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    let usage = |entries: usize| -> u64 {
        let mut conn = connection(&server.url()).unwrap();
        let usage: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(store.activity_key(&format!("user-{entries}")))
            .arg("SAMPLES")
            .arg(0)
            .query(&mut conn)
            .unwrap();
        usage.unwrap()
    };
    for entries in [2, 10] {
        for i in 0..entries {
            let entry = ActivityEntry::new(ActivityKind::Login, std::time::SystemTime::now())
                .with_client(Some(format!("203.0.113.{i}")), Some(desktop.to_owned()))
                .with_session(Some("Yc2kq0bLzW7hF1xN3pRtVa".to_owned()))
                .with_method(Some(LoginMethod::Password));
            store
                .append_activity(&format!("user-{entries}"), &entry, limits)
                .await
                .unwrap();
        }
    }
    let (two, ten) = (usage(2), usage(10));
    assert!(two <= 512, "two entries take {two} B");
    assert!(ten <= 10 * 200, "ten entries take {ten} B");
}

/// Every metric the crate documents appears once what it counts happens: logins by result,
/// logouts, revocations, throttled attempts, store errors and latency, local cache hits and
/// misses, dropped events, one-time links issued and used (the second factor's steps:
/// `second_factor::second_factor_steps_are_events_and_in_the_activity_log`).
#[actix_web::test]
async fn the_metrics_count_what_happens() {
    use actix_login::RedisStore;
    use metrics_exporter_prometheus::PrometheusBuilder;

    use crate::support::redis_server::{unique_prefix, RedisServer};

    let recorder = PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    // This test's thread only: other tests running beside it count elsewhere.
    let _recording = ::metrics::set_default_local_recorder(&recorder);
    let server = RedisServer::start();
    let store = RedisStore::builder(server.url())
        .key_prefix(unique_prefix())
        .local_cache(100)
        .command_timeout(Duration::from_millis(500))
        .connect()
        .await
        .unwrap();
    let middleware = LoginMiddleware::builder(store.clone())
        .event_queue(1)
        .on_event(|_: &SecurityEvent| std::thread::sleep(Duration::from_millis(200)))
        .build();
    let sessions = middleware.sessions();
    let throttle =
        LoginThrottle::new(store).per_account_and_client(Limit::new(2, Duration::from_secs(60)));
    let app = app(middleware, throttle).await;

    assert_eq!(
        status(&app, login_request("wrong-password", None)).await,
        401
    );
    let res = test::call_service(&app, login_request(PASSWORD, None)).await;
    assert_eq!(res.status(), 200);
    let token = set_cookie(&res).unwrap().value().to_owned();
    // Requests until one is answered from the cache.
    for _ in 0..50 {
        assert_eq!(status(&app, get("/sessions", Some(&token))).await, 200);
        if metrics.render().contains("actix_login_cache_hits_total") {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status(&app, post("/logout", Some(&token))).await, 204);
    log_in_again(&app).await;
    sessions.revoke_all("1").await.unwrap();
    // A sign-in link, issued and used.
    let res = test::call_service(&app, post("/magic", None)).await;
    assert_eq!(res.status(), 200);
    let secret = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
    let used = post(&format!("/magic/{secret}"), None);
    assert_eq!(status(&app, used).await, 200);
    for _ in 0..2 {
        test::call_service(&app, login_request("wrong-password", None)).await;
    }
    assert_eq!(
        status(&app, login_request("wrong-password", None)).await,
        429
    );
    server.kill();
    assert_eq!(status(&app, login_request(PASSWORD, None)).await, 503);

    metrics.run_upkeep();
    let text = metrics.render();
    for expected in [
        r#"actix_login_logins_total{result="success"} 3"#,
        r#"actix_login_logins_total{result="failure"} 3"#,
        r#"actix_login_logins_total{result="throttled"} 1"#,
        "actix_login_throttled_total 1",
        "actix_login_logouts_total 1",
        r#"actix_login_revocations_total{by="app"} 1"#,
        "actix_login_store_errors_total",
        "actix_login_store_command_seconds",
        "actix_login_cache_hits_total",
        "actix_login_cache_misses_total",
        "actix_login_events_dropped_total",
        r#"actix_login_links_issued_total{purpose="sign_in"} 1"#,
        r#"actix_login_links_used_total{purpose="sign_in"} 1"#,
    ] {
        assert!(text.contains(expected), "{expected} missing from\n{text}");
    }
}

async fn log_in_again<S, B>(app: &S)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let res = test::call_service(app, login_request(PASSWORD, None)).await;
    assert_eq!(res.status(), 200);
}
