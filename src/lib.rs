//! Server-side login sessions for [Actix Web](https://actix.rs): the browser holds an opaque
//! random token, the session lives in Redis, and handlers receive the logged-in user as an
//! argument.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use actix_login::{password, AuthUser, LoginMiddleware, RedisStore, Session, Timeouts};
//! use actix_web::{web, App, HttpResponse, HttpServer};
//! use serde::{Deserialize, Serialize};
//!
//! /// What handlers get back from the session: small, and never a password hash.
//! #[derive(Serialize, Deserialize)]
//! struct Profile {
//!     id: u64,
//!     username: String,
//! }
//!
//! #[derive(Deserialize)]
//! struct Credentials {
//!     username: String,
//!     password: String,
//! }
//!
//! async fn login(
//!     session: Session,
//!     creds: web::Json<Credentials>,
//! ) -> actix_web::Result<HttpResponse> {
//!     // Look the user up in your database; `None` if there is no such user.
//!     let stored_hash: Option<String> = None;
//!     // Unknown users cost the same argon2 work as a wrong password.
//!     if !password::verify(&creds.password, stored_hash.as_deref()).await? {
//!         return Ok(HttpResponse::Unauthorized().json(serde_json::json!({"error": "invalid_credentials"})));
//!     }
//!     let profile = Profile { id: 1, username: creds.username.clone() };
//!     session.login(profile.id.to_string(), &profile).await?;
//!     Ok(HttpResponse::Ok().json(profile))
//! }
//!
//! async fn me(user: AuthUser<Profile>) -> web::Json<Profile> {
//!     web::Json(user.into_inner())
//! }
//!
//! async fn logout(_user: AuthUser<Profile>, session: Session) -> actix_web::Result<HttpResponse> {
//!     session.logout().await?;
//!     Ok(HttpResponse::NoContent().finish())
//! }
//!
//! #[actix_web::main]
//! async fn main() -> std::io::Result<()> {
//!     let store = RedisStore::connect("redis://127.0.0.1:6379")
//!         .await
//!         .map_err(std::io::Error::other)?;
//!     // Build the middleware once, outside the factory closure, so every worker shares it.
//!     let sessions = LoginMiddleware::builder(store)
//!         .timeouts(Timeouts::BROWSER.with_idle(Duration::from_secs(15 * 60)))
//!         .build();
//!     HttpServer::new(move || {
//!         App::new()
//!             .wrap(sessions.clone())
//!             .route("/login", web::post().to(login))
//!             .route("/me", web::get().to(me))
//!             .route("/logout", web::post().to(logout))
//!     })
//!     .bind("127.0.0.1:8080")?
//!     .run()
//!     .await
//! }
//! ```
//!
//! # How it works
//!
//! 1. [`Session::login`] draws a token from the operating system's CSPRNG (32 secret bytes after
//!    a 3-byte group) and sends it to the browser, base64url-encoded, in a cookie (`__Host-id`,
//!    `Secure; HttpOnly; SameSite=Lax; Path=/`). The store keeps a [`SessionRecord`](store::SessionRecord) under the
//!    token's SHA-256, never the token.
//! 2. On each request [`LoginMiddleware`] checks the cookie's shape without any I/O. The first
//!    [`AuthUser`] extractor looks the session up: one Redis `HMGET` (two for a record too long
//!    for the first read), plus one script that moves the deadline when it has moved by a tenth
//!    of the idle timeout.
//! 3. [`Session::logout`] deletes the record before the response leaves, so the cookie is dead on
//!    every app instance at once, even if someone kept a copy.
//!
//! # Error responses
//!
//! Every refusal is a fixed JSON body `{"error":"<code>"}` with a `snake_case` code and
//! `Cache-Control: no-store`; the details go to the server log, never to the client. The
//! [table on `Error`](Error#error-codes) lists every code, its status and when it is sent.
//!
//! # Expiry
//!
//! A session ends at the first of two deadlines, both kept by the store:
//!
//! * **idle** ([`timeouts`](LoginMiddlewareBuilder::timeouts), default 30 minutes): the
//!   store is written only when a request would move the deadline by at least a tenth of the
//!   window, so an active session costs at most one write per 3 minutes, and an idle one ends
//!   between 27 and 30 minutes after its last request;
//! * **absolute** ([`timeouts`](LoginMiddlewareBuilder::timeouts), default 12
//!   hours after login), which no activity extends.
//!
//! # Session data
//!
//! The session also holds the app's own data (a cart, [flash messages](Session::flash), OAuth
//! `state` and PKCE verifiers, a half-finished multi-step form), read and written through
//! [`Session`] with the names actix-session uses:
//!
//! ```
//! use actix_login::{Session, LoginMiddleware, MemoryStore};
//! use actix_web::{test, web, App, HttpResponse};
//!
//! async fn add(session: Session, item: web::Path<String>) -> actix_web::Result<HttpResponse> {
//!     let mut cart: Vec<String> = session.get("cart").await?.unwrap_or_default();
//!     cart.push(item.into_inner());
//!     // A visitor without a session gets an anonymous one here, and its cookie.
//!     session.insert("cart", &cart).await?;
//!     Ok(HttpResponse::Ok().json(cart))
//! }
//!
//! # actix_web::rt::System::new().block_on(async {
//! let app = test::init_service(
//!     App::new()
//!         .wrap(LoginMiddleware::new(MemoryStore::new()))
//!         .route("/cart/{item}", web::post().to(add)),
//! )
//! .await;
//! let req = test::TestRequest::post().uri("/cart/tea").to_request();
//! let res = test::call_service(&app, req).await;
//! assert!(res.headers().contains_key("set-cookie"));
//! assert_eq!(test::read_body(res).await, r#"["tea"]"#);
//! # });
//! ```
//!
//! * **Anonymous sessions** start with a visitor's first write (a read never starts one). They
//!   are no login ([`AuthUser`] answers `401`), belong to no user's list, have their own, shorter
//!   [idle](LoginMiddlewareBuilder::anonymous_timeouts) and
//!   [absolute](LoginMiddlewareBuilder::anonymous_timeouts) limits, and are
//!   [bounded](LoginMiddlewareBuilder::anonymous_sessions_per_minute) per address and per
//!   network, fairly: a flood from some networks never stops visitors from others.
//! * **Login keeps the data** of the visitor's session, on a new token; [`Login::keep_data`]
//!   turns that off. Logout and revocation end the data with the session.
//! * **Writes are atomic and exact**: each goes to the store at once and changes only the names
//!   it names, so concurrent requests lose nothing; a write never brings back a session that
//!   ended meanwhile ([`Error::SessionChanged`]); the data is
//!   [limited](LoginMiddlewareBuilder::max_data_size) to 64 KiB by default.
//! * **Reads come with the login check**: a handler that takes [`Session`] has its session
//!   looked up together with its data (up to 4 KiB on Redis; more is read when first asked
//!   for), so reading data costs no round trip of its own, and none at all from the
//!   [local cache](RedisStoreBuilder::local_cache). A handler that takes only [`AuthUser`]
//!   never fetches data.
//! * [`Sessions::update_user`] replaces the profile and roles of every live session of a user
//!   at once, on every instance; [`Session::update_profile`] changes the current one's profile.
//!
//! # Remember me and bearer tokens
//!
//! [`Login::remember`] makes a login long-lived ("keep me signed in"): the
//! [remember timeouts](LoginMiddlewareBuilder::remember_timeouts) (7 days idle, 30 days in
//! all by default) and a persistent cookie whose `Max-Age` follows the idle deadline. Clients
//! that are not browsers send `Authorization: Bearer <token>` instead of a cookie: a token from
//! [`Session::login_bearer`], or a named [`PersonalToken`] a logged-in user creates with
//! [`Session::create_token`]. Handlers take the same [`AuthUser`]:
//!
//! ```
//! use actix_login::{AuthUser, LoginMiddleware, MemoryStore, PersonalToken, Session};
//! use actix_web::{test, web, App, HttpResponse};
//! # #[derive(serde::Serialize, serde::Deserialize)] struct Profile { name: String }
//!
//! async fn new_token(session: Session) -> actix_web::Result<HttpResponse> {
//!     let issued = session.create_token(PersonalToken::new("laptop script")).await?;
//!     Ok(HttpResponse::Created().json(issued)) // {"id":"…","token":"…","expires_at":null}
//! }
//!
//! async fn me(user: AuthUser<Profile>) -> String {
//!     format!("{} via {}", user.name, if user.is_bearer() { "token" } else { "cookie" })
//! }
//!
//! # async fn login(session: Session) -> actix_web::Result<HttpResponse> {
//! #     session.login("1", &Profile { name: "ann".into() }).await?;
//! #     Ok(HttpResponse::Ok().finish())
//! # }
//! # actix_web::rt::System::new().block_on(async {
//! let app = test::init_service(
//!     App::new()
//!         .route("/tokens", web::post().to(new_token))
//!         .route("/me", web::get().to(me))
//! #       .route("/login", web::post().to(login))
//!         .wrap(LoginMiddleware::new(MemoryStore::new())),
//! )
//! .await;
//! // A logged-in browser creates a token ...
//! # let res = test::call_service(&app, test::TestRequest::post().uri("/login").to_request()).await;
//! # let cookie = res.response().cookies().next().unwrap().into_owned();
//! let req = test::TestRequest::post().uri("/tokens").cookie(cookie)
//!     .insert_header(("sec-fetch-site", "same-origin")).to_request();
//! let issued: serde_json::Value = test::call_and_read_body_json(&app, req).await;
//! // ... which a script then sends: no cookie, no CSRF proof needed, and none set.
//! let bearer = format!("Bearer {}", issued["token"].as_str().unwrap());
//! let req = test::TestRequest::get().uri("/me").insert_header(("authorization", bearer)).to_request();
//! let res = test::call_service(&app, req).await;
//! assert!(!res.headers().contains_key("set-cookie"));
//! assert_eq!(test::read_body(res).await, "ann via token");
//! # });
//! ```
//!
//! * A bearer request never gets a cookie and needs no CSRF proof: browsers never add the
//!   header by themselves. A malformed token is `401` with `WWW-Authenticate: Bearer` before any
//!   store command; an unknown or ended one is `401` once something looks it up, never an
//!   anonymous request. A cookie's token does not work as a bearer token, nor the reverse.
//! * Tokens are listed with the user's sessions ([`SessionInfo::kind`]) and end with them:
//!   [`Session::revoke_session`], [`Session::revoke_other_sessions`], a password change, "log
//!   out everywhere". Personal access tokens have no idle timeout, an optional end, optional
//!   scopes checked by [`Require::scope`], and are never *fresh* for [`Require::fresh`].
//! * [`cookie_domain`](LoginMiddlewareBuilder::cookie_domain) shares the cookie with
//!   subdomains under the `__Secure-id` name, and says what that exposes.
//!
//! # Account controls
//!
//! ```
//! use actix_login::{AuthUser, LoginMiddleware, MemoryStore, Require, Session};
//! use actix_web::{test, web, App, HttpResponse};
//! # #[derive(serde::Serialize, serde::Deserialize)] struct Profile { id: u64 }
//!
//! async fn login(session: Session) -> actix_web::Result<HttpResponse> {
//!     session.login_with_roles("1", &Profile { id: 1 }, ["admin"]).await?;
//!     Ok(HttpResponse::NoContent().finish())
//! }
//!
//! // "Log out my other devices": every other session ends at once, on every instance.
//! async fn log_out_others(_user: AuthUser<Profile>, session: Session) -> actix_web::Result<HttpResponse> {
//!     let ended = session.revoke_other_sessions().await?;
//!     Ok(HttpResponse::Ok().json(ended))
//! }
//!
//! # actix_web::rt::System::new().block_on(async {
//! let app = test::init_service(
//!     App::new()
//!         .route("/login", web::post().to(login))
//!         .route("/sessions/revoke-others", web::post().to(log_out_others))
//!         // 401 without a login, 403 without the role.
//!         .service(web::resource("/admin").wrap(Require::role("admin")).to(HttpResponse::Ok))
//!         .wrap(LoginMiddleware::new(MemoryStore::new())),
//! )
//! .await;
//! let log_in = || test::TestRequest::post().uri("/login").to_request();
//! let phone = test::call_service(&app, log_in()).await.response().cookies().next().unwrap().into_owned();
//! let laptop = test::call_service(&app, log_in()).await.response().cookies().next().unwrap().into_owned();
//!
//! let admin = |cookie| test::TestRequest::get().uri("/admin").cookie(cookie).to_request();
//! assert_eq!(test::call_service(&app, admin(phone.clone())).await.status(), 200);
//!
//! // The laptop logs the phone out: the phone's next request is anonymous.
//! let req = test::TestRequest::post().uri("/sessions/revoke-others").cookie(laptop)
//!     .insert_header(("sec-fetch-site", "same-origin")).to_request();
//! assert_eq!(test::call_and_read_body(&app, req).await, "1");
//! assert_eq!(test::call_service(&app, admin(phone)).await.status(), 401);
//! # });
//! ```
//!
//! * [`Session::list_sessions`] shows the user's live sessions (public id, login time, last use,
//!   IP, user agent, which one is current); [`Session::revoke_session`],
//!   [`Session::revoke_other_sessions`] and [`Session::revoke_all_sessions`] end them, and
//!   [`Sessions`] does the same for any user (an account being disabled). Revocation is immediate
//!   on every instance.
//! * [`Session::renew`] moves the session to a new token and kills the old one, for privilege
//!   changes; [`Session::reauthenticate`] does the same after the user entered their password
//!   again, which satisfies [`Require::fresh`] for the
//!   [fresh window](LoginMiddlewareBuilder::fresh_window) ("sudo mode").
//! * A [second factor](two_factor) (TOTP codes, recovery codes, trusted browsers): a login
//!   whose code is due is no login (`401 second_factor_required`) until
//!   [`Session::complete_second_factor`], codes work once on every instance, and
//!   [`Require::fresh`] asks for the code again on accounts that have one.
//! * [`Session::credentials_changed`] ends the user's other sessions after a password change,
//!   including one that a login which verified the old password completes afterwards, when
//!   logins name what they verified with [`Login::credentials_version`].
//! * [`Require`] guards routes and scopes: login, roles granted with
//!   [`Session::login_with_roles`], a fresh password, and for HTML pages a redirect to the login
//!   page whose `next` parameter [`safe_next`] validates.
//! * [`max_sessions_per_user`](LoginMiddlewareBuilder::max_sessions_per_user) caps concurrent
//!   logins (default 100); a login beyond the cap ends the oldest others, never its own.
//!   Personal access tokens have a limit of their own
//!   ([`max_tokens_per_user`](LoginMiddlewareBuilder::max_tokens_per_user), default 20) and a
//!   creation rate ([`token_creation_limit`](LoginMiddlewareBuilder::token_creation_limit),
//!   default 10 an hour), and creating one needs a fresh login.
//!
//! # Login protection
//!
//! A login handler checks the password under the throttle: the attempt is counted before the
//! check and forgiven when it succeeds; past a limit even the right password waits. A browser
//! that logged in to the account before (its device cookie, bound to the account's id) gets
//! past the limits strangers fill, and ahead of them in the hashing queue, so no stranger can
//! lock its owner out or make them wait.
//!
//! ```
//! use actix_login::password::PasswordHasher;
//! use actix_login::{Login, Session};
//! use actix_login::throttle::LoginThrottle;
//! use actix_web::{web, HttpRequest, HttpResponse};
//! # #[derive(serde::Serialize)] struct Profile { id: u64 }
//! # struct Users;
//! # impl Users { fn stored_hash(&self, _name: &str) -> Option<(u64, String)> { None } }
//!
//! #[derive(serde::Deserialize)]
//! struct Credentials { username: String, password: String }
//!
//! async fn login(
//!     req: HttpRequest,
//!     throttle: web::Data<LoginThrottle>,
//!     users: web::Data<Users>,
//!     session: Session,
//!     creds: web::Json<Credentials>,
//! ) -> actix_web::Result<HttpResponse> {
//!     // 429 with Retry-After past a limit, before any hashing.
//!     let found = users.stored_hash(&creds.username);
//!     // Device cookies are bound to the account's id, which the lookup gives.
//!     let id = found.as_ref().map(|(id, _)| id.to_string());
//!     let attempt = throttle.attempt(&req, &creds.username, id.as_deref()).await?;
//!     // Unknown users cost the same argon2id work as wrong passwords.
//!     let stored = found.as_ref().map(|(_, hash)| hash.as_str());
//!     // A browser that logged in before goes first in the hashing queue; strangers wait in a
//!     // bounded line, and past it get 503 login_busy at once.
//!     let verified = PasswordHasher::new()
//!         .verify_in(attempt.lane(), &creds.password, stored)
//!         .await?;
//!     let (Some((id, _)), true) = (found, verified) else {
//!         attempt.failed().await?;
//!         return Ok(HttpResponse::Unauthorized().json(serde_json::json!({"error": "invalid_credentials"})));
//!     };
//!     // The device cookie lets this browser past the per-account limit next time.
//!     let device = attempt.succeeded().await?;
//!     session.login_with(Login::new(id.to_string(), &Profile { id })).await?;
//!     Ok(HttpResponse::NoContent().cookie(device).finish())
//! }
//! ```
//!
//! * [`LoginThrottle`](throttle::LoginThrottle) counts failed logins per account and address, per address and per
//!   account in the store, and answers `429` with `Retry-After` past a limit.
//! * [`password`] hashes with argon2id, does the same work for unknown users, refuses oversized
//!   input before hashing, supports a rotating [`Pepper`](password::Pepper) and flags outdated
//!   hashes with [`needs_rehash`](password::PasswordHasher::needs_rehash).
//! * [`policy::PasswordPolicy`] checks new passwords the NIST SP 800-63B way.
//! * [`LoginMiddleware`] refuses cross-site requests that would use the session cookie, and
//!   cross-site logins (`403 {"error":"csrf_rejected"}`); [`Session::csrf_token`] serves old
//!   browsers and forms.
//!
//! # Security model
//!
//! * **Nothing in the cookie but a random token.** No user id, no signature to forge, nothing to
//!   decode. A cookie the crate did not issue is never adopted (no session fixation): login
//!   always issues a new token and deletes the session the client came with.
//! * **Nothing in the store that can be replayed.** Keys are `prefix:s:{<group>}<SHA-256 of the
//!   token, first 168 bits, base64url>`, and records hold a public session id, the user id, the app's profile, roles,
//!   the login IP and user agent, and timestamps, besides the app's session data.
//! * **The server decides when a session ends.** Idle timeout (default 30 min) and absolute
//!   lifetime (default 12 h) are enforced through the store's expiry and the record's deadline;
//!   the cookie has no `Max-Age`. No write can bring back a session that was logged out: the
//!   idle refresh and every data write check that the session exists in the same atomic step
//!   (one Lua script in Redis).
//! * **Fail closed.** A store error is never a login and never an anonymous request: it is a 503
//!   (an unreadable record counts as no session: 401).
//!   Redis commands have a timeout, so an unreachable Redis answers quickly instead of hanging.
//!   Take [`MaybeUser`] rather than `Option<AuthUser<_>>` in handlers with side effects: Actix
//!   runs an `Option` handler as anonymous before the middleware can replace its response.
//! * **Revocation cannot be outrun.** Rotation indexes the new token before deleting the old
//!   one, and revocation looks again when it finds a session moved under it, so a token being
//!   rotated while its sessions are revoked does not survive.
//! * **Passwords** are hashed with argon2id (19 MiB, 2 passes, 1 lane, 16-byte salt) on threads
//!   of their own at a lower CPU priority; see [`password`].
//! * **Tokens and passwords are never logged.** Log lines name sessions by the first eight
//!   characters of the token's hash; login, logout and revocation lines carry the user id.
//!
//! # Stores
//!
//! [`RedisStore`] (Redis 7.0 or newer: standalone, [Cluster](RedisStore::connect_cluster) or
//! [Sentinel](RedisStore::connect_sentinel), over TLS too) for production, [`MemoryStore`] for
//! development and tests, or your own backend through the [`SessionStore`](store::SessionStore) trait. With
//! [`local_cache`](crate::RedisStoreBuilder::local_cache), Redis (standalone, Cluster or Sentinel,
//! over TLS too) keeps an in-process copy of each record honest through client tracking, so most requests need no Redis command and a
//! logout on any instance still ends the session everywhere before its response.
//!
//! A backend of your own can prove it keeps the rules revocation relies on by running
//! [`store::contract`] (feature `test-util`) in its tests.
//!
//! # Cargo features
//!
//! | feature | default | what it brings |
//! |---|---|---|
//! | `redis` | yes | [`RedisStore`] on a standalone Redis |
//! | `cluster` | | [`RedisStore::connect_cluster`] |
//! | `sentinel` | | [`RedisStore::connect_sentinel`] |
//! | `tls` | | `rediss://` URLs, through rustls with ring |
//! | `local-cache` | | [`local_cache`](crate::RedisStoreBuilder::local_cache) |
//! | `password` | yes | [`password`]: argon2id hashing |
//! | `policy` | yes | [`policy`]: checks for new passwords (implies `password`) |
//! | `throttle` | yes | [`LoginThrottle`](throttle::LoginThrottle) |
//! | `two-factor` | yes | [`TwoFactor`](two_factor::TwoFactor): TOTP (RFC 6238, through totp-rs), recovery codes, trusted browsers (implies `throttle`); without it [`two_factor`] still has the [login state](two_factor::SecondFactor) for a second factor of your own |
//! | `test-util` | | [`LoginMiddleware::test_cookie`] and [`test_bearer`](LoginMiddleware::test_bearer), a logged-in request in one line in your tests; [`store::contract`], the store contract for your own backend's tests |
//! | `actix-session` | | `ActixSessionStore`: actix-session's `SessionStore` on [`RedisStore`], for apps that keep actix-session's middleware |
//! | `metrics` | | counters and store latency through the [`metrics`](https://docs.rs/metrics) facade, named `actix_login_*` (see [`events`](crate::events#metrics)) |
//! | `passkeys` | | [`passkeys`]: WebAuthn registration and sign-in on webauthn-rs, the challenges in the session; needs OpenSSL's headers |
//!
//! `default-features = false` leaves the core: the engine, the middleware and extractors, and
//! [`MemoryStore`]. The source layout, and which layer may use which, is described in
//! `ARCHITECTURE.md` in the repository.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(rust_2018_idioms)]
#![cfg_attr(docsrs, feature(doc_cfg))]
// The docs link to items of every feature. Built with all of them (as docs.rs and CI build
// them) every link is checked; with fewer, links to the missing ones are let through.
#![cfg_attr(
    not(all(
        feature = "redis",
        feature = "cluster",
        feature = "sentinel",
        feature = "tls",
        feature = "local-cache",
        feature = "password",
        feature = "policy",
        feature = "throttle",
        feature = "two-factor",
        feature = "test-util"
    )),
    allow(rustdoc::broken_intra_doc_links)
)]

mod engine;
mod error;
mod protect;
mod record;
pub mod store;
mod telemetry;
mod web;

// The app's API: what a handler, a `main` and a test of an app name. A store's own interface
// (the traits, the record and key types) is under `store`, and each type has one path.
pub use actix_web::cookie::SameSite;

pub use crate::engine::{events, links};
pub use crate::engine::{IssuedToken, PersonalToken, SessionInfo, SessionKind, Sessions, Timeouts};
pub use crate::error::{Error, StoreError};
#[cfg(feature = "passkeys")]
#[cfg_attr(docsrs, doc(cfg(feature = "passkeys")))]
pub use crate::protect::passkeys;
#[cfg(feature = "password")]
#[cfg_attr(docsrs, doc(cfg(feature = "password")))]
pub use crate::protect::password;
#[cfg(feature = "policy")]
#[cfg_attr(docsrs, doc(cfg(feature = "policy")))]
pub use crate::protect::policy;
#[cfg(feature = "throttle")]
#[cfg_attr(docsrs, doc(cfg(feature = "throttle")))]
pub use crate::protect::throttle;
pub use crate::protect::two_factor;
pub use crate::record::SessionData;
pub use crate::store::memory::MemoryStore;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use crate::store::redis::{RedisStore, RedisStoreBuilder};
pub use crate::web::{
    safe_next, AuthUser, ClientIpHeader, ConfigError, FlashLevel, FlashMessage, Login,
    LoginMiddleware, LoginMiddlewareBuilder, MaybeUser, Require, Session, CSRF_FIELD, CSRF_HEADER,
};

/// Compiles the README's examples as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
