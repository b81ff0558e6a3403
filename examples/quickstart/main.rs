//! A complete login service: `cargo run --example quickstart`.
//!
//! Listens on `ADDR` (default `127.0.0.1:8080`). Sessions live in memory, in Redis when
//! `REDIS_URL` is set, in a Redis Cluster when `REDIS_CLUSTER_NODES` lists its seed nodes, or on
//! the primary that Redis Sentinel names when `REDIS_SENTINELS` lists the sentinels
//! (comma-separated `redis://host:port` URLs; the service is `REDIS_SENTINEL_SERVICE`, default
//! `mymaster`).
//! With `REDIS_URL`, `SESSION_CACHE=<max sessions>` keeps records in process as well, kept
//! honest by Redis (see `RedisStoreBuilder::local_cache`). Cluster, Sentinel and the cache need
//! the crate features of the same names (`--features cluster,sentinel,local-cache`, or
//! `--all-features`); `rediss://` URLs need `tls`.
//! Two users exist: `alice` / `alice-password-123` (role `admin`) and
//! `bob` / `bob-password-456`.
//!
//! Routes; bodies are JSON, errors `{"error":"<code>"}`:
//!
//! - `POST /register` `{"username","password"}`: `201` profile.
//! - `POST /login` `{"username","password","remember"}`: `200` profile, with the session and
//!   device cookies. The new session keeps the cart and preferences of the one the browser came
//!   with. Without `"remember":true` the session cookie lasts for the browser session; with it
//!   the session follows the remember timeouts and its cookie has a `Max-Age`.
//! - `POST /logout`: `204`; the session ends, its data with it. With a bearer token, only that
//!   token ends.
//! - Logged in, with the session cookie or `Authorization: Bearer <token>`: `GET /me`
//!   (`{"id","username","email","email_verified"}`);
//!   `GET /sessions` (browser sessions and tokens, told apart by `"kind"`, `browser` or
//!   `token`, with a token's `"name"` and whether a login is `"remembered"`),
//!   `DELETE /sessions/{id}`, `POST /sessions/revoke-others`, which end tokens too;
//!   `GET /activity`, the account's security history, newest first:
//!   `[{"id","type","at","ip","user_agent","session_id"}...]` with types such as `login`,
//!   `new_device` (a login from a browser without the account's device cookie),
//!   `login_failed`, `logout`, `session_revoked`, `password_changed`, `token_created`
//!   (`?before=<id>` pages on);
//!   `POST /tokens` `{"name","expires_in_secs"}` (a name of 1 to 64 bytes, not blank; an
//!   optional lifetime): `201 {"id","token","expires_at"}`, a personal access token whose
//!   secret is shown only there (`400 invalid_input` for bad input). Making a token is an
//!   account change: it needs a fresh session, as `POST /password` does (`403
//!   reauth_required` otherwise, and always from a token); at most 20 tokens per user (`409
//!   too_many_tokens`) and 10 new ones an hour (`429 token_rate_limited`, with `Retry-After`).
//!   Tokens do not count toward the session cap, so they never push their owner's logins out.
//!   Bearer requests skip the cross-site checks and never get a cookie; an unknown or
//!   malformed token is `401` with `WWW-Authenticate`.
//! - Logged in with the cookie: `POST /reauth` `{"password"}`; with a fresh session,
//!   `POST /password` `{"current_password","new_password"}`.
//! - A second factor (TOTP, RFC 6238), with a fresh session: `POST /2fa/enroll` answers
//!   `200 {"secret","otpauth_url"}` for an authenticator app; `POST /2fa/confirm` `{"code"}`
//!   with its first code turns it on and answers `200 {"recovery_codes":[10 codes]}`, shown
//!   once (the account's other sessions end). From then on `POST /login` with the right
//!   password answers `200 {"second_factor_required": true}` with a cookie that is no login
//!   yet (`GET /me` is `401 second_factor_required`, for 5 minutes), and
//!   `POST /login/second-factor` `{"code","trust_browser"}` with a code from the app or a
//!   recovery code logs in (`200` profile, a new cookie); `"trust_browser": true` skips the
//!   code on this browser for 30 days, until the password changes. A code works once (`401
//!   invalid_code` the second time); 5 wrong codes for an account within 15 minutes, from
//!   any address, are `429 too_many_codes` with `Retry-After`. Fresh routes (`/password`,
//!   `/tokens`, `/2fa/…`) then want the code too: `POST /reauth`, then
//!   `POST /reauth/second-factor` `{"code"}` (`403 second_factor_reauth_required` until
//!   then). `POST /2fa/recovery-codes` (fresh) answers ten new recovery codes.
//! - One-time links, mailed to `<username>@example.test` as `http://<ADDR><path>` on a line of
//!   their own: `POST /password-reset` `{"username"}` and `POST /magic-link` `{"username"}`
//!   answer `202` with one body whether or not the account exists, and mail
//!   `/password-reset/<secret>` or `/magic-link/<secret>`; `POST /register` mails
//!   `/verify-email/<secret>`. `GET` of a link is `200` and leaves it working (mail scanners
//!   open links); `POST /password-reset/<secret>` `{"password"}` sets a new password (`204`;
//!   `400 weak_password` leaves the link working) and ends every session and link of the
//!   account; `POST /verify-email/<secret>` is `204`, after which `GET /me` shows
//!   `"email_verified": true`; `POST /magic-link/<secret>` logs in (`200` with the session and
//!   device cookies). A link works once: used, expired, of another route, or older than the
//!   password, it is `410 invalid_link`. More than 5 links an hour for an account or an
//!   address, or 30 for a client, is `429 too_many_links` with `Retry-After`.
//!   With mail on, a login from a browser without the account's device cookie mails "New
//!   sign-in to your account" with where from and a `/end-session/<secret>` link ("this
//!   wasn't me"): `GET` is `200` and leaves it working, `POST` is `204` and ends that session
//!   (the account's others stay), once (`410 invalid_link` after). It counts toward none of
//!   the link limits. `NEW_DEVICE_MAIL=0` turns the notice off; `NEW_DEVICE_MAIL=1` sends it
//!   even with mail off (then it is only logged, without its link).
//!   Mail goes to one file per message in `MAIL_DIR`, or through SMTP to `SMTP_URL`, or
//!   nowhere (logged without the link); `MAGIC_LINK_TTL_SECS` (default 900),
//!   `PASSWORD_RESET_TTL_SECS` (3600), `VERIFY_EMAIL_TTL_SECS` (86400) and
//!   `CHANGE_EMAIL_TTL_SECS` (86400) and `LINKS_PER_ACCOUNT` (5 an hour) change the defaults.
//! - E-mail change, with a fresh session: `POST /email` `{"email"}` answers `202` and mails
//!   `/confirm-email/<secret>` to the new address (`400 invalid_email` for something that is
//!   not one address); the account keeps its address until `POST /confirm-email/<secret>`
//!   (`204`, no login needed: the link is the proof), after which `GET /me` shows the new
//!   `"email"` with `"email_verified": true` and the old address gets a notice without a link.
//!   An address another account has gets the same `202` and the same work, and its mailbox a
//!   notice instead of a link, so the answer tells nothing about other accounts. Only the
//!   latest request's address can be confirmed: an earlier link is `410 invalid_link`. Two
//!   accounts confirming one address: the second gets `409 email_taken`.
//! - Impersonation: `POST /admin/impersonate/{username}` (role `admin`, fresh password) `200`
//!   with the user's profile and a session cookie: the browser acts as the user, `GET /me`
//!   shows `"impersonated_by": "<admin>"`, and account changes (`POST /password`,
//!   `POST /tokens`, revoking other sessions) are `403 impersonating`;
//!   `POST /admin/impersonate/stop` `200` returns to the admin's own session. `404 not_found`
//!   for an unknown user. Both users' `GET /activity` show `impersonation_started` and
//!   `impersonation_ended`.
//! - Role `admin` (`401` without a login, `403` without the role): `GET /admin`, and
//!   `PUT /users/{username}/roles` `{"roles":["admin"]}`, `204`, which every live session of the
//!   user sees on its next request (`400 invalid_input` or `unknown_role`, `404 not_found`).
//! - Anyone: `GET /cart`, `200 {"items":[...]}`, which never starts a session;
//!   `POST /cart` `{"item"}` (1 to 100 characters), `200 {"items":[...]}`;
//!   `PUT /prefs/{key}` `{"value"}` (key `[a-z0-9_]{1,32}`, value up to 1000 characters), `204`;
//!   `GET /prefs`, `200 {"<key>":"<value>",...}`. A visitor's first cart or preference write
//!   starts an anonymous session and sets its cookie; bad input is `400 invalid_input`.
//!
//! Session behaviour can be tried in seconds with `IDLE_TIMEOUT_SECS`, `ABSOLUTE_TIMEOUT_SECS`,
//! `REMEMBER_IDLE_TIMEOUT_SECS` and `REMEMBER_ABSOLUTE_TIMEOUT_SECS` (for remembered logins),
//! `FRESH_WINDOW_SECS`, `MAX_SESSIONS_PER_USER` (logins, of which the oldest end first),
//! `MAX_TOKENS_PER_USER` and `TOKENS_PER_HOUR` (personal access tokens held at once and created
//! per hour) and `ANON_IDLE_TIMEOUT_SECS` (for anonymous sessions), login throttling with `LOGIN_MAX_FAILURES` and `LOGIN_WINDOW_SECS` (defaults: the
//! library's), with `LOGIN_ACCOUNT_MAX_FAILURES` for the account-wide ceiling, and sign-ups per
//! address and hour with `REGISTRATION_MAX`.
//! `TRUST_PROXIES` (comma-separated addresses) names reverse proxies whose `X-Forwarded-For` is
//! believed; from one machine, `TRUST_PROXIES=127.0.0.1` lets curl play clients anywhere:
//! `curl -H 'X-Forwarded-For: 2001:db8::1' ...`.
//! `METRICS=1` serves `GET /metrics`, the crate's counters (`actix_login_logins_total`...)
//! and store latency in Prometheus text format (with the crate's `metrics` feature).
//! `COOKIE_DOMAIN=example.com` sends the session cookie to every host under `example.com`: it
//! gets a `Domain` and is named `__Secure-id`, since browsers refuse a `__Host-` cookie with one.
//!
//! ```text
//! curl -i -c jar -H 'content-type: application/json' \
//!      -d '{"username":"alice","password":"alice-password-123"}' http://127.0.0.1:8080/login
//! curl -i -b jar http://127.0.0.1:8080/me
//! curl -i -b jar http://127.0.0.1:8080/sessions
//! curl -i -b jar -c jar -H 'content-type: application/json' -d '{"item":"tea"}' \
//!      http://127.0.0.1:8080/cart
//! curl -i -b jar -X POST -H 'Origin: http://127.0.0.1:8080' http://127.0.0.1:8080/logout
//! ```
//!
//! A token for a script, from a browser session that logged in (or `POST /reauth`) within the
//! fresh window, used instead of the cookie:
//!
//! ```text
//! curl -i -b jar -H 'Origin: http://127.0.0.1:8080' -H 'content-type: application/json' \
//!      -d '{"name":"backup script","expires_in_secs":86400}' http://127.0.0.1:8080/tokens
//! curl -i -H 'Authorization: Bearer <token>' http://127.0.0.1:8080/me
//! curl -i -X POST -H 'Authorization: Bearer <token>' http://127.0.0.1:8080/logout
//! ```
//!
//! A second factor for alice, from a session that logged in within the fresh window, with
//! `oathtool` standing in for the authenticator app (`<secret>` is what enrolment answers):
//!
//! ```text
//! curl -i -b jar -c jar -X POST -H 'Origin: http://127.0.0.1:8080' \
//!      http://127.0.0.1:8080/2fa/enroll
//! curl -i -b jar -c jar -H 'Origin: http://127.0.0.1:8080' -H 'content-type: application/json' \
//!      -d "{\"code\":\"$(oathtool --totp -b <secret>)\"}" http://127.0.0.1:8080/2fa/confirm
//! curl -i -c jar -H 'content-type: application/json' \
//!      -d '{"username":"alice","password":"alice-password-123"}' http://127.0.0.1:8080/login
//! sleep 30  # a code works once: wait for the next one
//! curl -i -b jar -c jar -H 'Origin: http://127.0.0.1:8080' -H 'content-type: application/json' \
//!      -d "{\"code\":\"$(oathtool --totp -b <secret>)\"}" \
//!      http://127.0.0.1:8080/login/second-factor
//! ```
//!
//! The handlers live in modules by concern: `accounts` (sign-up, login, logout, `/me`,
//! re-authentication, password changes), `second_factor` (TOTP, recovery codes, trusted
//! browsers), `links` (password reset, verification and sign-in links), `new_device` (the new
//! sign-in notice and its "this wasn't me" link), `email` (e-mail change), `mail`, `sessions`,
//! `tokens`, `data` (cart and preferences), `admin` (roles), `users` (the user table); `config`
//! and `store` read the environment. `main` below wires the routes.

mod accounts;
mod admin;
mod config;
mod data;
mod email;
mod links;
mod mail;
mod new_device;
mod second_factor;
mod sessions;
mod store;
mod telemetry;
mod tokens;
mod users;

use actix_login::throttle::LoginThrottle;
use actix_login::two_factor::TwoFactor;
use actix_login::{LoginMiddleware, MemoryStore, Require};
use actix_web::error::InternalError;
use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::json;

use crate::users::Users;

/// What the cart, preference, role and token routes answer to input they cannot take.
pub(crate) fn invalid_input() -> HttpResponse {
    HttpResponse::BadRequest().json(json!({ "error": "invalid_input" }))
}

/// The JSON settings of the cart, preference, role and token routes: malformed, missing or mistyped
/// fields, a wrong content type and oversized bodies are all `400 {"error":"invalid_input"}`.
/// Roomier than the rest, so that a 1000-character preference fits even with every character
/// escaped.
fn input_json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(16 * 1024)
        .error_handler(|err, _req| InternalError::from_response(err, invalid_input()).into())
}

/// Small bodies only, and JSON errors for malformed ones.
fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(4096)
        .error_handler(|err, _req| {
            let response =
                HttpResponse::BadRequest().json(json!({ "error": "invalid_request_body" }));
            InternalError::from_response(err, response).into()
        })
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let (builder, login_throttle, two_factor) = if let Some(store) = store::redis_store().await? {
        (
            LoginMiddleware::builder(store.clone()),
            LoginThrottle::new(store.clone()),
            TwoFactor::new(store),
        )
    } else {
        println!("session store: in memory (set REDIS_URL or REDIS_CLUSTER_NODES to use Redis)");
        let store = MemoryStore::new();
        (
            LoginMiddleware::builder(store.clone()),
            LoginThrottle::new(store.clone()),
            TwoFactor::new(store),
        )
    };
    let two_factor = web::Data::new(two_factor.issuer("actix-login quickstart"));
    let second_factors = web::Data::new(second_factor::SecondFactors::default());
    let mailer = web::Data::new(mail::Mailer::from_env()?);
    let mail_on = !matches!(**mailer, mail::Mailer::Off);
    let (new_sign_ins, notices) = new_device::notices(new_device::wanted(mail_on));
    // `try_build`, not `build`: a bad COOKIE_DOMAIN is a message, not a panic.
    let login_middleware = config::configure(builder)?
        .on_event(new_sign_ins)
        .try_build()
        .map_err(std::io::Error::other)?;
    let login_throttle = web::Data::new(config::throttle(login_throttle)?);
    let users = Users::seed().await.map_err(std::io::Error::other)?;
    for id in users.ids() {
        accounts::start_credentials(&login_middleware.sessions(), id)
            .await
            .map_err(std::io::Error::other)?;
    }
    let users = web::Data::new(users);
    let link_base = web::Data::new(links::LinkBase(format!("http://{addr}")));
    let metrics = web::Data::new(telemetry::from_env()?);
    new_device::mail_notices(
        notices,
        login_middleware.links(),
        users.clone(),
        mailer.clone(),
        link_base.clone(),
    );

    println!("listening on http://{addr}");
    HttpServer::new(move || {
        App::new()
            .app_data(users.clone())
            .app_data(login_throttle.clone())
            .app_data(mailer.clone())
            .app_data(link_base.clone())
            .app_data(metrics.clone())
            .route("/metrics", web::get().to(telemetry::metrics))
            .route("/activity", web::get().to(sessions::activity))
            .app_data(two_factor.clone())
            .app_data(second_factors.clone())
            .app_data(json_config())
            // Accounts without a second factor log in as `accounts::login` does.
            .route("/login", web::post().to(second_factor::login))
            .route(
                "/login/second-factor",
                web::post().to(second_factor::complete_login),
            )
            .service(
                web::scope("/2fa")
                    .wrap(Require::login().fresh())
                    .route("/enroll", web::post().to(second_factor::enroll))
                    .route("/confirm", web::post().to(second_factor::confirm))
                    .route(
                        "/recovery-codes",
                        web::post().to(second_factor::new_recovery_codes),
                    ),
            )
            .route(
                "/reauth/second-factor",
                web::post().to(second_factor::reauth),
            )
            .route("/register", web::post().to(accounts::register))
            .route("/me", web::get().to(accounts::me))
            .route("/logout", web::post().to(accounts::logout))
            .route("/sessions", web::get().to(sessions::list_sessions))
            .route(
                "/sessions/revoke-others",
                web::post().to(sessions::revoke_other_sessions),
            )
            .route("/sessions/{id}", web::delete().to(sessions::revoke_session))
            .route("/reauth", web::post().to(accounts::reauth))
            .route(
                "/password-reset",
                web::post().to(links::request_password_reset),
            )
            .service(
                web::resource("/password-reset/{secret}")
                    .route(web::get().to(links::show_password_reset))
                    .route(web::post().to(links::reset_password)),
            )
            .service(
                web::resource("/verify-email/{secret}")
                    .route(web::get().to(links::show_verify_email))
                    .route(web::post().to(links::verify_email)),
            )
            .service(
                web::resource("/email")
                    .wrap(Require::login().fresh())
                    .route(web::post().to(email::request_email_change)),
            )
            .service(
                web::resource("/confirm-email/{secret}")
                    .route(web::get().to(email::show_email_change))
                    .route(web::post().to(email::confirm_email_change)),
            )
            .service(
                web::resource("/end-session/{secret}")
                    .route(web::get().to(new_device::show_end_session))
                    .route(web::post().to(new_device::end_session)),
            )
            .route("/magic-link", web::post().to(links::request_magic_link))
            .service(
                web::resource("/magic-link/{secret}")
                    .route(web::get().to(links::show_magic_link))
                    .route(web::post().to(links::sign_in_with_link)),
            )
            // Login first, so that anonymous clients get 401 whatever their body. The crate
            // itself asks for a fresh session: a token is an account change.
            .service(
                web::resource("/tokens")
                    .app_data(input_json_config())
                    .wrap(Require::login())
                    .route(web::post().to(tokens::create_token)),
            )
            .service(
                web::resource("/password")
                    .wrap(Require::login().fresh())
                    .route(web::post().to(accounts::change_password)),
            )
            .service(
                web::resource("/admin")
                    .wrap(Require::role("admin"))
                    .route(web::get().to(admin::admin)),
            )
            // `stop` first: from the impersonation, which is no admin's session.
            .service(
                web::resource("/admin/impersonate/stop")
                    .wrap(Require::login())
                    .route(web::post().to(admin::stop_impersonating)),
            )
            .service(
                web::resource("/admin/impersonate/{username}")
                    .wrap(Require::role("admin").fresh())
                    .route(web::post().to(admin::impersonate)),
            )
            .service(
                web::resource("/users/{username}/roles")
                    .app_data(input_json_config())
                    .wrap(Require::role("admin"))
                    .route(web::put().to(admin::set_roles)),
            )
            .service(
                web::resource("/cart")
                    .app_data(input_json_config())
                    .route(web::get().to(data::cart))
                    .route(web::post().to(data::add_to_cart)),
            )
            .route("/prefs", web::get().to(data::prefs))
            // Any last segment, the empty one too, so that every bad key gets the same 400.
            .service(
                web::resource("/prefs/{key:.*}")
                    .app_data(input_json_config())
                    .route(web::put().to(data::set_pref)),
            )
            .wrap(login_middleware.clone())
    })
    .bind(addr)?
    .run()
    .await
}
