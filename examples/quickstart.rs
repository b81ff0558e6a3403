//! A complete login service: `cargo run --example quickstart`.
//!
//! Listens on `ADDR` (default `127.0.0.1:8080`). Sessions live in memory, or in Redis when
//! `REDIS_URL` is set. Two users exist: `alice` / `alice-password-123` and
//! `bob` / `bob-password-456`.
//!
//! ```text
//! curl -i -c jar -H 'content-type: application/json' \
//!      -d '{"username":"alice","password":"alice-password-123"}' http://127.0.0.1:8080/login
//! curl -i -b jar http://127.0.0.1:8080/me
//! curl -i -b jar -X POST http://127.0.0.1:8080/logout
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use actix_login::{password, AuthUser, LoginMiddleware, MemoryStore, RedisStore, Session};
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
    password_hash: String,
}

/// Stands in for the app's user database.
struct Users(HashMap<String, User>);

impl Users {
    async fn seed() -> Result<Self, password::PasswordError> {
        let mut users = HashMap::new();
        for (id, username, pw) in [
            (1, "alice", "alice-password-123"),
            (2, "bob", "bob-password-456"),
        ] {
            let user = User {
                profile: Profile {
                    id,
                    username: username.to_owned(),
                },
                password_hash: password::hash(pw).await?,
            };
            users.insert(username.to_owned(), user);
        }
        Ok(Self(users))
    }
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

fn invalid_credentials() -> HttpResponse {
    HttpResponse::Unauthorized().json(json!({ "error": "invalid credentials" }))
}

async fn login(
    users: web::Data<Users>,
    session: Session,
    creds: web::Json<Credentials>,
) -> actix_web::Result<HttpResponse> {
    let user = users.0.get(&creds.username);
    // An unknown user costs the same argon2 work as a wrong password and gets the same answer.
    let stored_hash = user.map(|u| u.password_hash.as_str());
    let verified = password::verify(&creds.password, stored_hash).await?;
    match user {
        Some(user) if verified => {
            session
                .login(user.profile.id.to_string(), &user.profile)
                .await?;
            Ok(HttpResponse::Ok().json(&user.profile))
        }
        _ => Ok(invalid_credentials()),
    }
}

async fn me(user: AuthUser<Profile>) -> web::Json<Profile> {
    web::Json(user.into_inner())
}

async fn logout(_user: AuthUser<Profile>, session: Session) -> actix_web::Result<HttpResponse> {
    session.logout().await?;
    Ok(HttpResponse::NoContent().finish())
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

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let sessions = match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => {
            let store = RedisStore::connect(&url)
                .await
                .map_err(std::io::Error::other)?;
            println!("session store: Redis (from REDIS_URL)");
            LoginMiddleware::new(store)
        }
        _ => {
            println!("session store: in memory (set REDIS_URL to use Redis)");
            LoginMiddleware::new(MemoryStore::new())
        }
    };
    let users = web::Data::from(Arc::new(
        Users::seed().await.map_err(std::io::Error::other)?,
    ));

    println!("listening on http://{addr}");
    HttpServer::new(move || {
        App::new()
            .wrap(sessions.clone())
            .app_data(users.clone())
            .app_data(json_config())
            .route("/login", web::post().to(login))
            .route("/me", web::get().to(me))
            .route("/logout", web::post().to(logout))
    })
    .bind(addr)?
    .run()
    .await
}
