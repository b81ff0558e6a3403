//! Login in two steps: the password, then a code from an authenticator app (TOTP, RFC 6238).
//! `cargo run --example two_factor`.
//!
//! Users: `alice` / `alice-password-123` and `bob` / `bob-password-456`, with the TOTP secrets
//! `JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP` and `GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ` (demo values: real
//! ones are random, one per user). At startup it prints an `otpauth://` URL for each, which an
//! authenticator app takes (as text, or as a QR code made with `qrencode -t ansiutf8 '<url>'`);
//! `oathtool --totp -b <secret>` prints the current code too. Sessions live in memory, or in
//! Redis when `REDIS_URL` is set; it listens on `ADDR` (default `127.0.0.1:8080`). Bodies are
//! JSON and errors `{"error":"<code>"}`.
//!
//! - `POST /login` `{"username","password"}`: the right password does not log in. It notes in
//!   the visitor's session (an anonymous one, which the response starts) who is half-way and
//!   since when, and answers `200 {"next":"totp"}`; `GET /me` is still `401`. A wrong password
//!   is `401 invalid_credentials`.
//! - `POST /login/totp` `{"code"}`: the user's current code logs in, on a new session cookie,
//!   and answers `200` with the profile. A wrong code, or one used before, is
//!   `401 invalid_code`; without a password first, `401 no_pending_login`; more than
//!   `TOTP_PENDING_SECS` (default 300) after it, `401 login_expired`.
//! - Wrong passwords and wrong codes are throttled, each on their own counters: after 5 for one
//!   account from one address (15 minutes), even the right one gets `429` with `Retry-After`.
//!   Codes also count per account across addresses, tighter than passwords since a six-digit
//!   code has only a million values: after 10 wrong codes in an hour, from anywhere, the
//!   account's codes are refused until the hour ends. Only someone who has the password can
//!   guess codes at all, so only they can use this up.
//! - `TRUST_PROXIES` (comma-separated addresses of reverse proxies whose `X-Forwarded-For` is
//!   believed) and `ANONYMOUS_SESSIONS_PER_MINUTE` (`per_address,shared`, default `20,1000`): the
//!   bounds on the anonymous sessions that password steps start, fair across networks.
//! - `GET /me`, `POST /logout`.
//!
//! ```text
//! curl -i -c jar -H 'content-type: application/json' \
//!      -d '{"username":"alice","password":"alice-password-123"}' http://127.0.0.1:8080/login
//! curl -i -b jar http://127.0.0.1:8080/me
//! curl -i -b jar -c jar -H 'content-type: application/json' \
//!      -d "{\"code\":\"$(oathtool --totp -b JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP)\"}" \
//!      http://127.0.0.1:8080/login/totp
//! curl -i -b jar http://127.0.0.1:8080/me
//! curl -i -b jar -X POST -H 'Origin: http://127.0.0.1:8080' http://127.0.0.1:8080/logout
//! ```

use std::collections::HashMap;
use std::io::Error;
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use actix_login::password::{PasswordError, PasswordHasher};
use actix_login::throttle::{Limit, LoginThrottle};
use actix_login::{AuthUser, Login, LoginMiddleware, MemoryStore, RedisStore, Session};
use actix_web::error::InternalError;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde::{Deserialize, Serialize};
use serde_json::json;
use totp_rs::{Builder, Secret, Totp};

/// Id, name, password and TOTP secret (base32) of the demo users. Real secrets are random,
/// made when a user turns the second factor on, and kept with the user.
const DEMO_USERS: [(u64, &str, &str, &str); 2] = [
    (
        1,
        "alice",
        "alice-password-123",
        "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
    ),
    (
        2,
        "bob",
        "bob-password-456",
        "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ",
    ),
];

/// The session-data name of a login half-way: the password was right, the code is due.
const PENDING: &str = "pending_login";

#[derive(Serialize, Deserialize)]
struct Pending {
    username: String,
    /// When the password was checked, in Unix seconds.
    since: u64,
}

/// What the session keeps about its user: never the password hash or the TOTP secret.
#[derive(Clone, Serialize, Deserialize)]
struct Profile {
    id: u64,
    username: String,
}

struct User {
    profile: Profile,
    password_hash: String,
    totp: Totp,
}

/// Stands in for the app's user table.
struct Users {
    by_name: HashMap<String, User>,
    /// Each user's last time step whose code was accepted: a code works once (RFC 6238, 5.2),
    /// or whoever looks over the user's shoulder could log in with it too. Several instances of
    /// an app must keep this with the user, in storage they share.
    used_steps: Mutex<HashMap<u64, u64>>,
    /// How long the code may come after the password, in seconds.
    pending_secs: u64,
}

impl Users {
    async fn seed(pending_secs: u64) -> std::io::Result<Self> {
        let mut by_name = HashMap::new();
        for (id, username, password, secret) in DEMO_USERS {
            let secret = Secret::try_from_base32(secret).map_err(Error::other)?;
            let totp = Builder::new()
                .with_secret(secret)
                .with_account_name(username)
                .with_issuer(Some("actix-login demo"))
                .build()
                .map_err(Error::other)?;
            println!("{username}: {}", totp.to_url().map_err(Error::other)?);
            let profile = Profile {
                id,
                username: username.to_owned(),
            };
            let password_hash = PasswordHasher::new().hash(password).await;
            let password_hash = password_hash.map_err(Error::other)?;
            let user = User {
                profile,
                password_hash,
                totp,
            };
            by_name.insert(username.to_owned(), user);
        }
        let used_steps = Mutex::default();
        Ok(Self {
            by_name,
            used_steps,
            pending_secs,
        })
    }

    /// The user, if `code` is their code now (or one step either side, for clocks that drift)
    /// and newer than the last one they logged in with.
    fn accept_code(&self, username: &str, code: &str) -> Option<&User> {
        let user = self.by_name.get(username)?;
        let step = user.totp.check_current(code)?;
        let mut used = self
            .used_steps
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let last = used.entry(user.profile.id).or_default();
        if step <= *last {
            return None;
        }
        *last = step;
        Some(user)
    }
}

fn refusal(status: StatusCode, code: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": code }))
}

fn unix_now() -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH);
    now.unwrap_or_default().as_secs()
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

async fn login(
    req: HttpRequest,
    users: web::Data<Users>,
    throttle: web::Data<LoginThrottle>,
    session: Session,
    creds: web::Json<Credentials>,
) -> actix_web::Result<HttpResponse> {
    let user = users.by_name.get(&creds.username);
    // The account's id binds device cookies to the account, whatever its name becomes.
    let id = user.map(|user| user.profile.id.to_string());
    let attempt = throttle
        .attempt(&req, &creds.username, id.as_deref())
        .await?;
    // Unknown users are checked against no hash: as slow as a wrong password, and as false.
    let hash = user.map(|user| user.password_hash.as_str());
    // A browser that logged in before is not queued behind strangers' guesses.
    let verified = match PasswordHasher::new()
        .verify_in(attempt.lane(), &creds.password, hash)
        .await
    {
        // Turned away by a full hashing queue (503 login_busy): no guess was made, so none is
        // counted.
        Err(PasswordError::Busy) => {
            attempt.not_checked().await?;
            return Err(PasswordError::Busy.into());
        }
        verified => verified?,
    };
    if !verified {
        attempt.failed().await?;
        return Ok(refusal(StatusCode::UNAUTHORIZED, "invalid_credentials"));
    }
    // The device cookie lets this browser past the password limits that strangers fill.
    let device = attempt.succeeded().await?;
    // Not a login yet: the note makes the visitor's session (anonymous, started by this write
    // if there was none) the one place where the code can finish it.
    let pending = Pending {
        username: creds.username.clone(),
        since: unix_now(),
    };
    session.insert(PENDING, pending).await?;
    Ok(HttpResponse::Ok()
        .cookie(device)
        .json(json!({ "next": "totp" })))
}

/// The throttle for codes: the password's limits, and per account across addresses 10 an hour,
/// which is what stops guessing from many addresses.
struct CodeThrottle(LoginThrottle);

impl CodeThrottle {
    fn new(store: impl actix_login::store::ThrottleStore) -> Self {
        let per_account = Limit::new(10, std::time::Duration::from_secs(60 * 60));
        Self(LoginThrottle::new(store).per_account(per_account))
    }
}

#[derive(Deserialize)]
struct Code {
    code: String,
}

async fn login_totp(
    req: HttpRequest,
    users: web::Data<Users>,
    codes: web::Data<CodeThrottle>,
    session: Session,
    body: web::Json<Code>,
) -> actix_web::Result<HttpResponse> {
    let Some(pending) = session.get::<Pending>(PENDING).await? else {
        return Ok(refusal(StatusCode::UNAUTHORIZED, "no_pending_login"));
    };
    if unix_now().saturating_sub(pending.since) > users.pending_secs {
        session.remove(PENDING).await?;
        return Ok(refusal(StatusCode::UNAUTHORIZED, "login_expired"));
    }
    // Codes count on counters of their own (a store of their own): a right password must not
    // reset them, a password guess for any name must not spend them, and no device cookie
    // lifts them (no account id: none counts).
    let attempt = codes.0.attempt(&req, &pending.username, None).await?;
    let Some(user) = users.accept_code(&pending.username, &body.code) else {
        attempt.failed().await?;
        return Ok(refusal(StatusCode::UNAUTHORIZED, "invalid_code"));
    };
    // Without an account id there is no device cookie to send: the browser keeps the
    // password's.
    attempt.succeeded().await?;
    session.remove(PENDING).await?;
    let profile = &user.profile;
    // A new token: the one that carried the half-way login ends here.
    session
        .login_with(Login::new(profile.id.to_string(), profile))
        .await?;
    Ok(HttpResponse::Ok().json(profile))
}

async fn me(user: AuthUser<Profile>) -> web::Json<Profile> {
    web::Json(user.into_inner())
}

async fn logout(_user: AuthUser<Profile>, session: Session) -> actix_web::Result<HttpResponse> {
    session.logout().await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The middleware on `store`, with the settings from the environment: `TRUST_PROXIES`
/// (comma-separated addresses of reverse proxies whose `X-Forwarded-For` is believed) and
/// `ANONYMOUS_SESSIONS_PER_MINUTE` (`per_address,shared`; the library's defaults are `20,1000`).
fn middleware(store: impl actix_login::store::SessionStore) -> std::io::Result<LoginMiddleware> {
    let invalid = |name: &str, value: &str| {
        std::io::Error::other(format!("{name}: {value:?} is not what it should be"))
    };
    let mut builder = LoginMiddleware::builder(store);
    if let Some(proxies) = std::env::var("TRUST_PROXIES")
        .ok()
        .filter(|v| !v.is_empty())
    {
        let proxies = proxies
            .split(',')
            .map(|ip| ip.trim().parse().map_err(|_| invalid("TRUST_PROXIES", ip)))
            .collect::<std::io::Result<Vec<std::net::IpAddr>>>()?;
        builder = builder.trust_proxies(proxies);
    }
    if let Some(limits) = std::env::var("ANONYMOUS_SESSIONS_PER_MINUTE")
        .ok()
        .filter(|v| !v.is_empty())
    {
        let parsed = limits
            .split_once(',')
            .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)));
        let (per_address, shared) =
            parsed.ok_or_else(|| invalid("ANONYMOUS_SESSIONS_PER_MINUTE", &limits))?;
        builder = builder.anonymous_sessions_per_minute(per_address, shared);
    }
    Ok(builder.build())
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    // One store for the sessions and the password throttle's counters; the codes' counters
    // live apart (their own key prefix, or their own memory store), so that no username typed
    // at the password step can name them.
    let (sessions, throttle, codes) = match std::env::var("REDIS_URL") {
        Ok(url) => {
            let store = RedisStore::connect(&url).await.map_err(Error::other)?;
            let code_store = RedisStore::builder(&url)
                .key_prefix("actix-login-totp")
                .connect()
                .await
                .map_err(Error::other)?;
            (
                middleware(store.clone())?,
                LoginThrottle::new(store),
                CodeThrottle::new(code_store),
            )
        }
        Err(_) => {
            let store = MemoryStore::new();
            (
                middleware(store.clone())?,
                LoginThrottle::new(store),
                CodeThrottle::new(MemoryStore::new()),
            )
        }
    };
    let pending_secs = match std::env::var("TOTP_PENDING_SECS") {
        Ok(secs) => secs
            .parse()
            .map_err(|_| Error::other(format!("TOTP_PENDING_SECS: {secs:?} is no number")))?,
        Err(_) => 5 * 60,
    };
    let users = web::Data::new(Users::seed(pending_secs).await?);
    let throttle = web::Data::new(throttle);
    let codes = web::Data::new(codes);
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let server = HttpServer::new(move || {
        // Malformed bodies get a JSON error, like every other refusal.
        let json = web::JsonConfig::default().error_handler(|err, _| {
            let body = refusal(StatusCode::BAD_REQUEST, "invalid_request_body");
            InternalError::from_response(err, body).into()
        });
        App::new()
            .app_data(users.clone())
            .app_data(throttle.clone())
            .app_data(codes.clone())
            .app_data(json)
            .route("/login", web::post().to(login))
            .route("/login/totp", web::post().to(login_totp))
            .route("/me", web::get().to(me))
            .route("/logout", web::post().to(logout))
            .wrap(sessions.clone())
    })
    .bind(&addr)?;
    println!("listening on http://{addr}");
    server.run().await
}
