//! The shortest complete login app: one user, `POST /login`, `GET /me` and `POST /logout`.
//!
//! `cargo run --example minimal`, then log in as `alice` / `correct horse battery staple`.
//! Sessions live in memory, or in Redis when `REDIS_URL` is set. It listens on `ADDR` (default
//! `127.0.0.1:8080`); errors are `{"error":"<code>"}`. A `POST` with the session cookie must
//! show it comes from the app itself, as browsers do with `Origin`:
//!
//! ```text
//! curl -i -c jar -H 'content-type: application/json' \
//!      -d '{"username":"alice","password":"correct horse battery staple"}' http://127.0.0.1:8080/login
//! curl -i -b jar http://127.0.0.1:8080/me
//! curl -i -b jar -X POST -H 'Origin: http://127.0.0.1:8080' http://127.0.0.1:8080/logout
//! ```

use actix_login::password::PasswordHasher;
use actix_login::{AuthUser, LoginMiddleware, MemoryStore, RedisStore, Session};
use actix_web::{error::InternalError, web, App, HttpResponse, HttpServer};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::io::Error;

/// What the session keeps about its user, and `/me` shows: never the password hash.
#[derive(Serialize, Deserialize)]
struct Profile {
    username: String,
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

/// `alice_hash` stands in for a lookup in the app's user table.
async fn login(
    session: Session,
    alice_hash: web::Data<String>,
    creds: web::Json<Credentials>,
) -> actix_web::Result<HttpResponse> {
    // Other names are checked against no hash: as slow as a wrong password, and as false.
    let hash = (creds.username == "alice").then_some(alice_hash.as_str());
    if !PasswordHasher::new().verify(&creds.password, hash).await? {
        return Ok(HttpResponse::Unauthorized().json(json!({ "error": "invalid_credentials" })));
    }
    let profile = Profile {
        username: creds.username.clone(),
    };
    session.login("1", &profile).await?;
    Ok(HttpResponse::Ok().json(profile))
}

async fn me(user: AuthUser<Profile>) -> web::Json<Profile> {
    web::Json(user.into_inner())
}

async fn logout(_user: AuthUser<Profile>, session: Session) -> actix_web::Result<HttpResponse> {
    session.logout().await?;
    Ok(HttpResponse::NoContent().finish())
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let sessions = match std::env::var("REDIS_URL") {
        Ok(url) => LoginMiddleware::new(RedisStore::connect(&url).await.map_err(Error::other)?),
        Err(_) => LoginMiddleware::new(MemoryStore::new()),
    };
    let hash = PasswordHasher::new()
        .hash("correct horse battery staple")
        .await;
    let alice_hash = web::Data::new(hash.map_err(Error::other)?);
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let server = HttpServer::new(move || {
        // Malformed bodies get a JSON error, like every other refusal.
        let json = web::JsonConfig::default().error_handler(|err, _| {
            let body = HttpResponse::BadRequest().json(json!({ "error": "invalid_request_body" }));
            InternalError::from_response(err, body).into()
        });
        App::new()
            .app_data(alice_hash.clone())
            .app_data(json)
            .route("/login", web::post().to(login))
            .route("/me", web::get().to(me))
            .route("/logout", web::post().to(logout))
            .wrap(sessions.clone())
    })
    .bind(&addr)?;
    println!("listening on http://{addr}");
    server.run().await
}
