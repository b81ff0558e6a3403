//! A JSON API for clients that send `Authorization: Bearer <token>` instead of cookies: mobile
//! apps, command-line tools, scripts. `cargo run --example api_tokens`.
//!
//! Users: `alice` / `alice-password-123` and `bob` / `bob-password-456`. Sessions live in
//! memory, or in Redis when `REDIS_URL` is set; it listens on `ADDR` (default `127.0.0.1:8080`).
//! Bodies are JSON and errors `{"error":"<code>"}`; a malformed, unknown or ended token is `401`
//! with `WWW-Authenticate: Bearer`.
//!
//! - `POST /token` `{"username","password","remember"?}`: `200 {"id","token","expires_at"}`,
//!   a login token, and no cookie. It follows the login timeouts (30 minutes idle, 12 hours in
//!   all), or with `"remember":true` the remembered ones (7 days idle, 30 days in all). Wrong
//!   passwords are throttled: after 5 for one account from one address (15 minutes), even the
//!   right one gets `429` with `Retry-After`.
//! - `GET /me`: the token's user, and the token's name if it is a personal access token.
//! - `POST /tokens` `{"name","expires_in_secs"?,"scopes"?}`: `201 {"id","token","expires_at"}`, a
//!   personal access token for scripts, with no idle timeout. Making one is an account change:
//!   only a login token within 10 minutes of its password may (`403 reauth_required`
//!   otherwise, and always for a personal access token). The new token ends when the login
//!   token that made it ends (logout, revocation, expiry), or earlier if asked. At most 20
//!   tokens per user (`409 too_many_tokens`), and 10 new ones an hour (`429
//!   token_rate_limited` with `Retry-After`).
//! - `GET /sessions`: the user's tokens, each with its `kind` and `name`, the `current` one
//!   marked; `DELETE /sessions/{id}`: `204`, or `404` for an id the user has no session with.
//! - `POST /logout`: `204`; ends the token it came with, and the tokens it made.
//! - `POST /deploy`: for tokens whose scopes include `deploy`, or that have no scopes; `403`
//!   with `WWW-Authenticate: Bearer error="insufficient_scope", scope="deploy"` for the others.
//!
//! Scopes limit only the routes that ask for one, so `/tokens` and `/sessions` ask for
//! `account`: a token made for deploying cannot list or end sessions.
//!
//! ```text
//! TOKEN=$(curl -s -H 'content-type: application/json' \
//!   -d '{"username":"alice","password":"alice-password-123"}' http://127.0.0.1:8080/token | jq -r .token)
//! curl -i -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8080/me
//! curl -i -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
//!   -d '{"name":"ci","expires_in_secs":3600,"scopes":["deploy"]}' http://127.0.0.1:8080/tokens
//! curl -i -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8080/sessions
//! curl -i -X POST -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8080/logout
//! ```

use std::collections::HashMap;
use std::io::Error;
use std::time::Duration;

use actix_login::password::{PasswordError, PasswordHasher};
use actix_login::throttle::LoginThrottle;
use actix_login::{
    AuthUser, Login, LoginMiddleware, MemoryStore, PersonalToken, RedisStore, Require, Session,
};
use actix_web::error::InternalError;
use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// What a token's session keeps about its user: never the password hash.
#[derive(Clone, Serialize, Deserialize)]
struct Profile {
    id: u64,
    username: String,
}

/// Stands in for the app's user table: each user's profile and password hash, by name.
struct Users(HashMap<String, (Profile, String)>);

impl Users {
    async fn seed() -> Result<Self, PasswordError> {
        let mut users = HashMap::new();
        for (id, username, password) in [
            (1, "alice", "alice-password-123"),
            (2, "bob", "bob-password-456"),
        ] {
            let profile = Profile {
                id,
                username: username.to_owned(),
            };
            let hash = PasswordHasher::new().hash(password).await?;
            users.insert(username.to_owned(), (profile, hash));
        }
        Ok(Self(users))
    }
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
    #[serde(default)]
    remember: bool,
}

async fn issue_token(
    req: HttpRequest,
    users: web::Data<Users>,
    throttle: web::Data<LoginThrottle>,
    session: Session,
    creds: web::Json<Credentials>,
) -> actix_web::Result<HttpResponse> {
    // Counted before the password is checked, so parallel guesses cannot slip past the limit.
    let user = users.0.get(&creds.username);
    let id = user.map(|(profile, _)| profile.id.to_string());
    let attempt = throttle
        .attempt(&req, &creds.username, id.as_deref())
        .await?;
    // Unknown users are checked against no hash: as slow as a wrong password, and as false.
    let hash = user.map(|(_, hash)| hash.as_str());
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
    let (Some((profile, _)), true) = (user, verified) else {
        attempt.failed().await?;
        return Ok(HttpResponse::Unauthorized().json(json!({ "error": "invalid_credentials" })));
    };
    // This returns the device cookie that lets a known browser past the limits; API clients
    // keep no cookies, so it is not sent.
    attempt.succeeded().await?;
    let login = Login::new(profile.id.to_string(), profile).remember(creds.remember);
    let issued = session.login_bearer(login).await?;
    // The body holds a secret: no cache may keep a copy (RFC 6749, 5.1). The crate marks the
    // responses that set a cookie or come from a session, and this one does neither.
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(issued))
}

async fn me(user: AuthUser<Profile>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "id": user.id,
        "username": user.username,
        "token_name": user.token_name(),
    }))
}

#[derive(Deserialize)]
struct NewToken {
    name: String,
    expires_in_secs: Option<u64>,
    scopes: Option<Vec<String>>,
}

/// A personal access token. The crate refuses a name, end or scope list out of bounds (`400
/// invalid_input`), a login older than the fresh window and every personal access token (`403
/// reauth_required`), and a user at the token limit or past the creation rate (`409
/// too_many_tokens`, `429 token_rate_limited`).
async fn create_token(
    session: Session,
    body: web::Json<NewToken>,
) -> actix_web::Result<HttpResponse> {
    let NewToken {
        name,
        expires_in_secs,
        scopes,
    } = body.into_inner();
    let mut token = PersonalToken::new(name);
    if let Some(secs) = expires_in_secs {
        token = token.expires_in(Duration::from_secs(secs));
    }
    if let Some(scopes) = scopes {
        token = token.scopes(scopes);
    }
    Ok(HttpResponse::Created().json(session.create_token(token).await?))
}

async fn list_sessions(session: Session) -> actix_web::Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(session.list_sessions().await?))
}

async fn revoke_session(
    session: Session,
    id: web::Path<String>,
) -> actix_web::Result<HttpResponse> {
    Ok(if session.revoke_session(&id).await? {
        HttpResponse::NoContent().finish()
    } else {
        HttpResponse::NotFound().json(json!({ "error": "no_such_session" }))
    })
}

async fn logout(_user: AuthUser<Profile>, session: Session) -> actix_web::Result<HttpResponse> {
    session.logout().await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn deploy(user: AuthUser<Profile>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "deployed_by": user.username }))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    // One store for the sessions and the throttle's counters.
    let (sessions, throttle) = match std::env::var("REDIS_URL") {
        Ok(url) => {
            let store = RedisStore::connect(&url).await.map_err(Error::other)?;
            (
                LoginMiddleware::new(store.clone()),
                LoginThrottle::new(store),
            )
        }
        Err(_) => {
            let store = MemoryStore::new();
            (
                LoginMiddleware::new(store.clone()),
                LoginThrottle::new(store),
            )
        }
    };
    let throttle = web::Data::new(throttle);
    let users = web::Data::new(Users::seed().await.map_err(Error::other)?);
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let server = HttpServer::new(move || {
        // Malformed bodies get a JSON error, like every other refusal.
        let json = web::JsonConfig::default().error_handler(|err, _| {
            let body = HttpResponse::BadRequest().json(json!({ "error": "invalid_request_body" }));
            InternalError::from_response(err, body).into()
        });
        App::new()
            .app_data(users.clone())
            .app_data(throttle.clone())
            .app_data(json)
            .route("/token", web::post().to(issue_token))
            .route("/me", web::get().to(me))
            .route("/logout", web::post().to(logout))
            .service(
                web::resource("/tokens")
                    .wrap(Require::scope("account"))
                    .route(web::post().to(create_token)),
            )
            .service(
                web::resource("/sessions")
                    .wrap(Require::scope("account"))
                    .route(web::get().to(list_sessions)),
            )
            .service(
                web::resource("/sessions/{id}")
                    .wrap(Require::scope("account"))
                    .route(web::delete().to(revoke_session)),
            )
            .service(
                web::resource("/deploy")
                    .wrap(Require::scope("deploy"))
                    .route(web::post().to(deploy)),
            )
            .wrap(sessions.clone())
    })
    .bind(&addr)?;
    println!("listening on http://{addr}");
    server.run().await
}
