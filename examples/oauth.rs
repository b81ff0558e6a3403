//! Log in with an OAuth 2 / OpenID Connect provider: `cargo run --example oauth`.
//!
//! The authorization code flow with PKCE (RFC 6749, RFC 7636), through the `oauth2` crate. What
//! it shows of actix-login: the `state` and the PKCE verifier live in the session's data, so a
//! visitor who is not logged in yet gets an anonymous session at `GET /login` (its first data
//! write sets the cookie); the callback takes them out of the data in the same atomic write
//! that reads them, so a callback works once; and the login moves the visitor to a new token,
//! ending the anonymous one.
//!
//! Routes; errors are JSON, `{"error":"<code>"}`:
//!
//! - `GET /`: a small page with a login link or, logged in, the user's name and a logout button.
//! - `GET /login`: `303` to the provider's authorization page, with a new `state` and an S256
//!   `code_challenge`. A second `/login` replaces the first one's pending login.
//! - `GET /callback?code&state`: the provider sends the browser back here. A `state` that is
//!   missing, wrong or already used is `400 invalid_state`; a refusal by the user
//!   (`?error=access_denied`) is `403 access_denied`; a code the token endpoint refuses (expired,
//!   used, or not issued for this PKCE verifier) is `400 invalid_grant`; a provider that cannot
//!   be reached is `502 provider_unavailable`, one that answers nonsense or another error
//!   `502 provider_error`. None of them logs anyone in. On success: the user info is fetched,
//!   the user logged in with its `sub` (or GitHub's `id`), and `303` to `/`.
//! - `GET /me`: the logged-in user's profile `{"sub","name","email"}`, or `401`.
//! - `POST /logout`: `303` to `/`; the session ends.
//!
//! Settings, from the environment:
//!
//! - `OAUTH_AUTH_URL`, `OAUTH_TOKEN_URL`, `OAUTH_USERINFO_URL`: the provider's endpoints.
//! - `OAUTH_CLIENT_ID`, and `OAUTH_CLIENT_SECRET` unless the client is public.
//! - `OAUTH_REDIRECT_URL` (default `http://<ADDR>/callback`): must be registered with the
//!   provider exactly as given here.
//! - `OAUTH_SCOPES` (space-separated, default `openid profile email`).
//! - `ADDR` (default `127.0.0.1:8080`); `REDIS_URL` to keep sessions in Redis rather than in
//!   memory, with `REDIS_KEY_PREFIX` when several apps share the database.
//! - `TRUST_PROXIES` (comma-separated addresses of reverse proxies whose `X-Forwarded-For` is
//!   believed) and `ANONYMOUS_SESSIONS_PER_MINUTE` (`per_address,shared`, default `20,1000`):
//!   the bounds on the anonymous sessions that `GET /login` starts, fair across networks.
//!
//! With Google (create a "Web application" OAuth client, redirect URI
//! `http://127.0.0.1:8080/callback`):
//!
//! ```text
//! OAUTH_AUTH_URL=https://accounts.google.com/o/oauth2/v2/auth \
//! OAUTH_TOKEN_URL=https://oauth2.googleapis.com/token \
//! OAUTH_USERINFO_URL=https://openidconnect.googleapis.com/v1/userinfo \
//! OAUTH_CLIENT_ID=... OAUTH_CLIENT_SECRET=... cargo run --example oauth
//! ```
//!
//! With GitHub (an OAuth app whose callback URL is `http://127.0.0.1:8080/callback`):
//!
//! ```text
//! OAUTH_AUTH_URL=https://github.com/login/oauth/authorize \
//! OAUTH_TOKEN_URL=https://github.com/login/oauth/access_token \
//! OAUTH_USERINFO_URL=https://api.github.com/user OAUTH_SCOPES=read:user \
//! OAUTH_CLIENT_ID=... OAUTH_CLIENT_SECRET=... cargo run --example oauth
//! ```
//!
//! Then open <http://127.0.0.1:8080/> in a browser. The session cookie is `Secure`, which
//! browsers accept from `http://127.0.0.1` and `http://localhost`; anywhere else, serve HTTPS.

use std::time::Duration;

use actix_login::{AuthUser, Login, LoginMiddleware, MaybeUser, MemoryStore, RedisStore, Session};
use actix_web::http::header::{self, ContentType};
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpResponse, HttpServer};
use oauth2::basic::{BasicClient, BasicErrorResponseType, BasicRequestTokenError};
use oauth2::{
    AccessToken, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, HttpClientError, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

/// What the session remembers about its user, from the provider's user info.
#[derive(Serialize, Deserialize)]
struct Profile {
    sub: String,
    name: Option<String>,
    email: Option<String>,
}

/// The session-data name of the login in progress.
const PENDING: &str = "oauth_pending";

/// What `/login` leaves for `/callback`: the `state` it sent the provider, and the PKCE verifier
/// whose challenge it sent. Both stay on the server; the browser holds only its session cookie.
#[derive(Serialize, Deserialize)]
struct PendingLogin {
    state: String,
    verifier: String,
}

type Client = BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// The provider, as `/login` and `/callback` need it.
struct Provider {
    client: Client,
    userinfo_url: String,
    scopes: Vec<Scope>,
    /// Shared by the token exchange and the user-info request: one connection pool.
    http: oauth2::reqwest::Client,
}

async fn home(user: MaybeUser<Profile>) -> HttpResponse {
    let body = match user.into_option() {
        Some(user) => format!(
            "<p>Signed in as {}.</p><form method=post action=/logout><button>Log out</button></form>",
            escape(user.name.as_deref().unwrap_or(&user.sub))
        ),
        None => "<p><a href=/login>Log in</a></p>".to_owned(),
    };
    HttpResponse::Ok()
        .content_type(ContentType::html())
        .body(format!("<!doctype html><title>OAuth example</title>{body}"))
}

/// What the provider said goes into HTML: escaped.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn login(session: Session, provider: web::Data<Provider>) -> actix_web::Result<HttpResponse> {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, state) = provider
        .client
        .authorize_url(CsrfToken::new_random)
        .add_scopes(provider.scopes.iter().cloned())
        .set_pkce_challenge(challenge)
        .url();
    let pending = PendingLogin {
        state: state.secret().clone(),
        verifier: verifier.secret().clone(),
    };
    // A visitor without a session gets an anonymous one here, and the response its cookie.
    session.insert(PENDING, &pending).await?;
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, url.as_str()))
        .insert_header(header::CacheControl(vec![header::CacheDirective::NoStore]))
        .finish())
}

/// What the provider appends to the redirect URL: `code` and `state`, or `error` and `state`.
#[derive(Deserialize)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// Errors look like the crate's own: a fixed code, never cached.
fn refusal(status: StatusCode, code: &str) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header(header::CacheControl(vec![header::CacheDirective::NoStore]))
        .json(json!({ "error": code }))
}

async fn callback(
    session: Session,
    provider: web::Data<Provider>,
    query: web::Query<Callback>,
) -> actix_web::Result<HttpResponse> {
    // Taken, not read: the removal returns what it removed in the same atomic write, so of two
    // requests carrying the same callback only one finds the pending login, and any callback,
    // successful or not, leaves nothing behind that a replay could use.
    let pending: Option<PendingLogin> = session.remove_as(PENDING).await?;
    let query = query.into_inner();
    let Some(pending) = pending.filter(|pending| {
        query
            .state
            .as_deref()
            .is_some_and(|state| same_secret(state, &pending.state))
    }) else {
        // Also a forged callback from another site trying to log the browser into the
        // attacker's account (login CSRF): it cannot know this session's state.
        return Ok(refusal(StatusCode::BAD_REQUEST, "invalid_state"));
    };
    if let Some(error) = query.error {
        tracing::warn!(?error, "the provider refused the authorization");
        return Ok(if error == "access_denied" {
            refusal(StatusCode::FORBIDDEN, "access_denied")
        } else {
            refusal(StatusCode::BAD_GATEWAY, "provider_error")
        });
    }
    let Some(code) = query.code else {
        return Ok(refusal(StatusCode::BAD_REQUEST, "invalid_request"));
    };
    let token = match provider
        .client
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier))
        .request_async(&provider.http)
        .await
    {
        Ok(token) => token,
        Err(err) => return Ok(token_refusal(&err)),
    };
    let profile = match user_info(&provider, token.access_token()).await {
        Ok(profile) => profile,
        Err(response) => return Ok(response),
    };
    // A real app would look the user up (or create them) by provider and `sub` here, and log
    // in its own user id; the example has no user table.
    session
        .login_with(Login::new(profile.sub.clone(), &profile))
        .await?;
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/"))
        .finish())
}

/// Compares two secrets in time that does not depend on where they differ: hashes first.
fn same_secret(a: &str, b: &str) -> bool {
    Sha256::digest(a.as_bytes()) == Sha256::digest(b.as_bytes())
}

/// The answer to a failed token exchange: the user's to retry if the code was refused, the
/// provider's fault otherwise.
fn token_refusal(
    err: &BasicRequestTokenError<HttpClientError<oauth2::reqwest::Error>>,
) -> HttpResponse {
    use oauth2::RequestTokenError;

    tracing::warn!(error = causes(err), "token exchange failed");
    match err {
        RequestTokenError::ServerResponse(response)
            if *response.error() == BasicErrorResponseType::InvalidGrant =>
        {
            refusal(StatusCode::BAD_REQUEST, "invalid_grant")
        }
        RequestTokenError::Request(_) => refusal(StatusCode::BAD_GATEWAY, "provider_unavailable"),
        _ => refusal(StatusCode::BAD_GATEWAY, "provider_error"),
    }
}

/// An error with its sources: the top one alone ("Request failed") does not say that the
/// provider refused the connection or timed out. The code and the client secret travel in
/// request bodies, which none of them shows.
fn causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The user-info answer, of an OpenID Connect provider (`sub`) or GitHub (`id`, `login`).
#[derive(Deserialize)]
struct UserInfo {
    sub: Option<String>,
    id: Option<serde_json::Value>,
    name: Option<String>,
    login: Option<String>,
    email: Option<String>,
}

async fn user_info(provider: &Provider, token: &AccessToken) -> Result<Profile, HttpResponse> {
    let unavailable = |err: oauth2::reqwest::Error| {
        tracing::warn!(error = causes(&err), "user info request failed");
        refusal(StatusCode::BAD_GATEWAY, "provider_unavailable")
    };
    let provider_error = |why: &str| {
        tracing::warn!(why, "unusable user info");
        refusal(StatusCode::BAD_GATEWAY, "provider_error")
    };
    let response = provider
        .http
        .get(&provider.userinfo_url)
        .bearer_auth(token.secret())
        .header(header::ACCEPT.as_str(), "application/json")
        .send()
        .await
        .map_err(unavailable)?;
    if !response.status().is_success() {
        return Err(provider_error(response.status().as_str()));
    }
    let body = response.bytes().await.map_err(unavailable)?;
    let info: UserInfo =
        serde_json::from_slice(&body).map_err(|_| provider_error("not a JSON object"))?;
    let sub = match (info.sub, info.id) {
        (Some(sub), _) => sub,
        (None, Some(serde_json::Value::Number(id))) => id.to_string(),
        (None, Some(serde_json::Value::String(id))) => id,
        _ => return Err(provider_error("no sub or id")),
    };
    if sub.is_empty() {
        return Err(provider_error("empty sub"));
    }
    Ok(Profile {
        sub,
        name: info.name.or(info.login),
        email: info.email,
    })
}

async fn me(user: AuthUser<Profile>) -> web::Json<Profile> {
    web::Json(user.into_inner())
}

async fn logout(session: Session) -> actix_web::Result<HttpResponse> {
    session.logout().await?;
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/"))
        .finish())
}

fn setting(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

fn required(name: &str) -> std::io::Result<String> {
    setting(name).ok_or_else(|| std::io::Error::other(format!("{name} must be set")))
}

fn provider(addr: &str) -> std::io::Result<Provider> {
    let url_error = |name: &'static str| {
        move |err| std::io::Error::other(format!("{name} is not a URL: {err}"))
    };
    let redirect =
        setting("OAUTH_REDIRECT_URL").unwrap_or_else(|| format!("http://{addr}/callback"));
    let mut client = BasicClient::new(ClientId::new(required("OAUTH_CLIENT_ID")?))
        .set_auth_uri(
            AuthUrl::new(required("OAUTH_AUTH_URL")?).map_err(url_error("OAUTH_AUTH_URL"))?,
        )
        .set_token_uri(
            TokenUrl::new(required("OAUTH_TOKEN_URL")?).map_err(url_error("OAUTH_TOKEN_URL"))?,
        )
        .set_redirect_uri(RedirectUrl::new(redirect).map_err(url_error("OAUTH_REDIRECT_URL"))?);
    if let Some(secret) = setting("OAUTH_CLIENT_SECRET") {
        client = client.set_client_secret(ClientSecret::new(secret));
    }
    let scopes = setting("OAUTH_SCOPES")
        .unwrap_or_else(|| "openid profile email".to_owned())
        .split_whitespace()
        .map(|scope| Scope::new(scope.to_owned()))
        .collect();
    let http = oauth2::reqwest::Client::builder()
        // A token endpoint that redirects could send the code and the client secret anywhere
        // (SSRF): the oauth2 crate asks clients not to follow redirects.
        .redirect(oauth2::reqwest::redirect::Policy::none())
        // A provider that hangs must not hold the browser's request forever.
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        // GitHub's API refuses requests without one.
        .user_agent("actix-login-oauth-example")
        .build()
        .map_err(std::io::Error::other)?;
    Ok(Provider {
        client,
        userinfo_url: required("OAUTH_USERINFO_URL")?,
        scopes,
        http,
    })
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let addr = setting("ADDR").unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let provider = web::Data::new(provider(&addr)?);
    let sessions = if let Some(url) = setting("REDIS_URL") {
        let mut builder = RedisStore::builder(url);
        if let Some(prefix) = setting("REDIS_KEY_PREFIX") {
            builder = builder.key_prefix(prefix);
        }
        let store = builder.connect().await.map_err(std::io::Error::other)?;
        println!("session store: Redis (from REDIS_URL)");
        middleware(store)?
    } else {
        println!("session store: in memory (set REDIS_URL to use Redis)");
        middleware(MemoryStore::new())?
    };

    println!("listening on http://{addr}");
    HttpServer::new(move || {
        App::new()
            .app_data(provider.clone())
            // A query string that does not parse (a repeated `state`, say) is a bad callback,
            // answered like the others.
            .app_data(web::QueryConfig::default().error_handler(|err, _| {
                let response = refusal(StatusCode::BAD_REQUEST, "invalid_request");
                actix_web::error::InternalError::from_response(err, response).into()
            }))
            .route("/", web::get().to(home))
            .route("/login", web::get().to(login))
            .route("/callback", web::get().to(callback))
            .route("/me", web::get().to(me))
            .route("/logout", web::post().to(logout))
            .wrap(sessions.clone())
    })
    .bind(addr)?
    .run()
    .await
}
