//! A complete login service: `cargo run --example quickstart`.
//!
//! Listens on `ADDR` (default `127.0.0.1:8080`). Sessions live in memory, or in Redis when
//! `REDIS_URL` is set. Two users exist: `alice` / `alice-password-123` (role `admin`) and
//! `bob` / `bob-password-456`.
//!
//! Session behaviour can be tried in seconds with `IDLE_TIMEOUT_SECS`, `ABSOLUTE_TIMEOUT_SECS`,
//! `FRESH_WINDOW_SECS` and `MAX_SESSIONS_PER_USER` (defaults: the library's).
//!
//! ```text
//! curl -i -c jar -H 'content-type: application/json' \
//!      -d '{"username":"alice","password":"alice-password-123"}' http://127.0.0.1:8080/login
//! curl -i -b jar http://127.0.0.1:8080/me
//! curl -i -b jar http://127.0.0.1:8080/sessions
//! curl -i -b jar -X POST -H 'Origin: http://127.0.0.1:8080' http://127.0.0.1:8080/logout
//! ```

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use actix_login::{
    password, AuthUser, LoginMiddleware, LoginMiddlewareBuilder, MemoryStore, RedisStore, Require,
    Session,
};
use actix_web::error::InternalError;
use actix_web::{web, App, HttpResponse, HttpServer};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// What a session remembers about its user: enough to serve `/me`, never the password hash.
#[derive(Clone, Serialize, Deserialize)]
struct Profile {
    id: u64,
    username: String,
}

struct User {
    profile: Profile,
    roles: Vec<&'static str>,
    password_hash: String,
}

/// Stands in for the app's user database.
struct Users(RwLock<HashMap<String, User>>);

impl Users {
    async fn seed() -> Result<Self, password::PasswordError> {
        let mut users = HashMap::new();
        for (id, username, pw, roles) in [
            (1, "alice", "alice-password-123", vec!["admin"]),
            (2, "bob", "bob-password-456", vec![]),
        ] {
            let user = User {
                profile: Profile {
                    id,
                    username: username.to_owned(),
                },
                roles,
                password_hash: password::hash(pw).await?,
            };
            users.insert(username.to_owned(), user);
        }
        Ok(Self(RwLock::new(users)))
    }

    /// The user's profile, roles and password hash, if there is such a user.
    fn find(&self, username: &str) -> Option<(Profile, Vec<&'static str>, String)> {
        let users = self.0.read().unwrap_or_else(PoisonError::into_inner);
        let user = users.get(username)?;
        Some((
            user.profile.clone(),
            user.roles.clone(),
            user.password_hash.clone(),
        ))
    }

    fn set_password_hash(&self, username: &str, hash: String) {
        let mut users = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(user) = users.get_mut(username) {
            user.password_hash = hash;
        }
    }

    /// Checks a password; unknown users cost the same argon2 work as a wrong password.
    async fn verify(&self, username: &str, pw: &str) -> Result<bool, password::PasswordError> {
        let stored = self.find(username).map(|(_, _, hash)| hash);
        password::verify(pw, stored.as_deref()).await
    }
}

fn invalid_credentials() -> HttpResponse {
    HttpResponse::Unauthorized().json(json!({ "error": "invalid credentials" }))
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

async fn login(
    users: web::Data<Users>,
    session: Session,
    creds: web::Json<Credentials>,
) -> actix_web::Result<HttpResponse> {
    if !users.verify(&creds.username, &creds.password).await? {
        return Ok(invalid_credentials());
    }
    let Some((profile, roles, _)) = users.find(&creds.username) else {
        return Ok(invalid_credentials());
    };
    session
        .login_with_roles(profile.id.to_string(), &profile, roles)
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

async fn list_sessions(
    _user: AuthUser<Profile>,
    session: Session,
) -> actix_web::Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(session.list_sessions().await?))
}

async fn revoke_session(
    _user: AuthUser<Profile>,
    session: Session,
    id: web::Path<String>,
) -> actix_web::Result<HttpResponse> {
    Ok(if session.revoke_session(&id).await? {
        HttpResponse::NoContent().finish()
    } else {
        HttpResponse::NotFound().json(json!({ "error": "no such session" }))
    })
}

async fn revoke_other_sessions(
    _user: AuthUser<Profile>,
    session: Session,
) -> actix_web::Result<HttpResponse> {
    session.revoke_other_sessions().await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
struct Reauth {
    password: String,
}

/// Confirms the password again: the session becomes fresh and gets a new token.
async fn reauth(
    users: web::Data<Users>,
    user: AuthUser<Profile>,
    session: Session,
    body: web::Json<Reauth>,
) -> actix_web::Result<HttpResponse> {
    if !users.verify(&user.username, &body.password).await? {
        return Ok(invalid_credentials());
    }
    session.reauthenticate().await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

/// Needs a fresh session (see the route). Every other session of the user ends; this one gets a
/// new token.
async fn change_password(
    users: web::Data<Users>,
    user: AuthUser<Profile>,
    session: Session,
    body: web::Json<PasswordChange>,
) -> actix_web::Result<HttpResponse> {
    if body.new_password.is_empty() {
        return Ok(HttpResponse::BadRequest().json(json!({ "error": "new password is empty" })));
    }
    if !users.verify(&user.username, &body.current_password).await? {
        return Ok(invalid_credentials());
    }
    let hash = password::hash(&body.new_password).await?;
    users.set_password_hash(&user.username, hash);
    session.revoke_other_sessions().await?;
    session.reauthenticate().await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn admin(user: AuthUser<Profile>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "admin": user.username }))
}

/// Small bodies only, and JSON errors for malformed ones.
fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(4096)
        .error_handler(|err, _req| {
            let response =
                HttpResponse::BadRequest().json(json!({ "error": "invalid request body" }));
            InternalError::from_response(err, response).into()
        })
}

/// Applies the optional environment knobs to the middleware settings.
fn configure(mut builder: LoginMiddlewareBuilder) -> std::io::Result<LoginMiddlewareBuilder> {
    if let Some(secs) = env_number("IDLE_TIMEOUT_SECS")? {
        builder = builder.idle_timeout(Duration::from_secs(secs));
    }
    if let Some(secs) = env_number("ABSOLUTE_TIMEOUT_SECS")? {
        builder = builder.absolute_timeout(Duration::from_secs(secs));
    }
    if let Some(secs) = env_number("FRESH_WINDOW_SECS")? {
        builder = builder.fresh_window(Duration::from_secs(secs));
    }
    if let Some(max) = env_number("MAX_SESSIONS_PER_USER")? {
        let max = usize::try_from(max).map_err(std::io::Error::other)?;
        builder = builder.max_sessions_per_user(max);
    }
    Ok(builder)
}

fn env_number(name: &str) -> std::io::Result<Option<u64>> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value.parse().map(Some).map_err(|_| {
            std::io::Error::other(format!("{name} must be a whole number, not {value:?}"))
        }),
        _ => Ok(None),
    }
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let builder = match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => {
            let store = RedisStore::connect(&url)
                .await
                .map_err(std::io::Error::other)?;
            println!("session store: Redis (from REDIS_URL)");
            LoginMiddleware::builder(store)
        }
        _ => {
            println!("session store: in memory (set REDIS_URL to use Redis)");
            LoginMiddleware::builder(MemoryStore::new())
        }
    };
    let login_middleware = configure(builder)?.build();
    let users = web::Data::new(Users::seed().await.map_err(std::io::Error::other)?);

    println!("listening on http://{addr}");
    HttpServer::new(move || {
        App::new()
            .app_data(users.clone())
            .app_data(json_config())
            .route("/login", web::post().to(login))
            .route("/me", web::get().to(me))
            .route("/logout", web::post().to(logout))
            .route("/sessions", web::get().to(list_sessions))
            .route(
                "/sessions/revoke-others",
                web::post().to(revoke_other_sessions),
            )
            .route("/sessions/{id}", web::delete().to(revoke_session))
            .route("/reauth", web::post().to(reauth))
            .service(
                web::resource("/password")
                    .wrap(Require::login().fresh())
                    .route(web::post().to(change_password)),
            )
            .service(
                web::resource("/admin")
                    .wrap(Require::role("admin"))
                    .route(web::get().to(admin)),
            )
            .wrap(login_middleware.clone())
    })
    .bind(addr)?
    .run()
    .await
}
