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
//! - Logged in, with the session cookie or `Authorization: Bearer <token>`: `GET /me`;
//!   `GET /sessions` (browser sessions and tokens, told apart by `"kind"`, `browser` or
//!   `token`, with a token's `"name"` and whether a login is `"remembered"`),
//!   `DELETE /sessions/{id}`, `POST /sessions/revoke-others`, which end tokens too;
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

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use actix_login::password::PasswordHasher;
use actix_login::policy::PasswordPolicy;
use actix_login::store::RedisStoreBuilder;
use actix_login::{
    password, AuthUser, Limit, Login, LoginMiddleware, LoginMiddlewareBuilder, LoginThrottle,
    MemoryStore, PersonalToken, RedisStore, Require, Session, Sessions,
};
use actix_web::cookie::Cookie;
use actix_web::error::InternalError;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
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
    /// Changed by `PUT /users/{username}/roles`; each is one of [`KNOWN_ROLES`].
    roles: Vec<String>,
    password_hash: String,
    /// Counts password changes (not hash upgrades): what logins name as the credentials they
    /// verified, so a login that checked a password being replaced leaves no session.
    password_version: u64,
}

/// How the quickstart hashes passwords. A real app would add a pepper from its secrets store:
/// `PasswordHasher::new().with_pepper(Pepper::new("2026", secret)?)`.
fn hasher() -> PasswordHasher {
    PasswordHasher::new()
}

/// Stands in for the app's user database.
struct Users(RwLock<HashMap<String, User>>);

impl Users {
    async fn seed() -> Result<Self, password::PasswordError> {
        let mut users = HashMap::new();
        for (id, username, pw, roles) in [
            (1, "alice", "alice-password-123", vec!["admin".to_owned()]),
            (2, "bob", "bob-password-456", vec![]),
        ] {
            let user = User {
                profile: Profile {
                    id,
                    username: username.to_owned(),
                },
                roles,
                password_hash: hasher().hash(pw).await?,
                password_version: 0,
            };
            users.insert(username.to_owned(), user);
        }
        Ok(Self(RwLock::new(users)))
    }

    /// The user's profile, roles and password hash, if there is such a user.
    fn find(&self, username: &str) -> Option<(Profile, Vec<String>, String)> {
        let users = self.0.read().unwrap_or_else(PoisonError::into_inner);
        let user = users.get(username)?;
        Some((
            user.profile.clone(),
            user.roles.clone(),
            user.password_hash.clone(),
        ))
    }

    fn ids(&self) -> Vec<u64> {
        let users = self.0.read().unwrap_or_else(PoisonError::into_inner);
        users.values().map(|user| user.profile.id).collect()
    }

    /// Adds a user; `None` if the name is taken.
    fn add(&self, username: &str, password_hash: String) -> Option<Profile> {
        let mut users = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if users.contains_key(username) {
            return None;
        }
        let id = users.values().map(|u| u.profile.id).max().unwrap_or(0) + 1;
        let profile = Profile {
            id,
            username: username.to_owned(),
        };
        let user = User {
            profile: profile.clone(),
            roles: Vec::new(),
            password_hash,
            password_version: 0,
        };
        users.insert(username.to_owned(), user);
        Some(profile)
    }

    /// Replaces the user's roles; `None` if there is no such user.
    fn set_roles(&self, username: &str, roles: Vec<String>) -> Option<Profile> {
        let mut users = self.0.write().unwrap_or_else(PoisonError::into_inner);
        let user = users.get_mut(username)?;
        user.roles = roles;
        Some(user.profile.clone())
    }

    /// Stores a new password; returns its version.
    fn change_password(&self, username: &str, hash: String) -> u64 {
        let mut users = self.0.write().unwrap_or_else(PoisonError::into_inner);
        let Some(user) = users.get_mut(username) else {
            return 0;
        };
        user.password_hash = hash;
        user.password_version += 1;
        user.password_version
    }

    /// The same password, hashed with the current parameters: not a change.
    fn upgrade_hash(&self, username: &str, hash: String) {
        let mut users = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(user) = users.get_mut(username) {
            user.password_hash = hash;
        }
    }

    /// The version of the user's password, read before it is checked: a change in between
    /// makes the login fail safe rather than outlive the change.
    fn password_version(&self, username: &str) -> u64 {
        let users = self.0.read().unwrap_or_else(PoisonError::into_inner);
        users.get(username).map_or(0, |user| user.password_version)
    }

    /// Checks a password; unknown users cost the same argon2 work as a wrong password. A hash
    /// made with outdated parameters is replaced after a successful check.
    ///
    /// `lane` is the hashing queue's: a browser that logged in before is not queued behind
    /// strangers, and a stranger past the queue's bound gets `503 login_busy` at once.
    async fn verify(
        &self,
        lane: password::Lane,
        username: &str,
        pw: &str,
    ) -> Result<bool, password::PasswordError> {
        let hasher = hasher();
        let stored = self.find(username).map(|(_, _, hash)| hash);
        let verified = hasher.verify_in(lane, pw, stored.as_deref()).await?;
        if let (true, Some(stored)) = (verified, stored) {
            if hasher.needs_rehash(&stored) {
                self.upgrade_hash(username, hasher.hash(pw).await?);
                tracing::info!(username, "password hash upgraded");
            }
        }
        Ok(verified)
    }
}

fn invalid_credentials() -> HttpResponse {
    HttpResponse::Unauthorized().json(json!({ "error": "invalid_credentials" }))
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
    /// "Keep me signed in": the longer remember timeouts, and a cookie that outlives the
    /// browser session.
    #[serde(default)]
    remember: bool,
}

/// Logs in; the new session keeps the data (cart, preferences) of the session the browser came
/// with, as `Login` does by default, if that one was anonymous or the same user's.
async fn login(
    req: HttpRequest,
    users: web::Data<Users>,
    throttle: web::Data<LoginThrottle>,
    session: Session,
    sessions: Sessions,
    creds: web::Json<LoginForm>,
) -> actix_web::Result<HttpResponse> {
    let username = canonical_username(&creds.username).unwrap_or_default();
    let version = users.password_version(&username);
    let Some(device) =
        password_matches(&req, &throttle, &users, &creds.username, &creds.password).await?
    else {
        return Ok(invalid_credentials());
    };
    let Some((profile, roles, _)) = users.find(&username) else {
        return Ok(invalid_credentials());
    };
    let login = Login::new(profile.id.to_string(), &profile)
        .roles(roles.clone())
        .credentials_version(version.to_string())
        .remember(creds.remember);
    session.login_with(login).await?;
    // A role change between reading the roles and creating the session found no session to
    // update: if the table moved on meanwhile, this login brings its session up to date.
    if users
        .find(&username)
        .is_some_and(|(_, now, _)| now != roles)
    {
        push_roles(&users, &sessions, &username).await?;
    }
    Ok(HttpResponse::Ok().cookie(device).json(profile))
}

/// Checks a password under the login throttle: the attempt is counted before the check (past
/// the limit even the right password gets 429, except from a browser that logged in before)
/// and forgiven if it succeeds. Unknown users cost the same as wrong passwords. On success,
/// the device cookie that lets this browser past the limits next time, for the response.
async fn password_matches(
    req: &HttpRequest,
    throttle: &LoginThrottle,
    users: &Users,
    username: &str,
    password: &str,
) -> actix_web::Result<Option<Cookie<'static>>> {
    let canonical = canonical_username(username).unwrap_or_default();
    // Device cookies are bound to the account's id, not to the name typed.
    let id = users
        .find(&canonical)
        .map(|(profile, _, _)| profile.id.to_string());
    let attempt = throttle.attempt(req, username, id.as_deref()).await?;
    let verified = match users.verify(attempt.lane(), &canonical, password).await {
        // Turned away by a full hashing queue (503 login_busy): no guess was made, so none is
        // counted against the user.
        Err(password::PasswordError::Busy) => {
            attempt.not_checked().await?;
            return Err(password::PasswordError::Busy.into());
        }
        verified => verified?,
    };
    if verified {
        Ok(Some(attempt.succeeded().await?))
    } else {
        attempt.failed().await?;
        Ok(None)
    }
}

/// The response refusing a new password the policy rejects, if it does.
fn policy_refusal(password: &str, username: &str) -> Option<HttpResponse> {
    let violation = PasswordPolicy::new()
        .check(password, &[username, "actix-login"])
        .err()?;
    Some(
        HttpResponse::BadRequest()
            .json(json!({ "error": "weak_password", "reason": violation.reason() })),
    )
}

/// Usernames are lowercase ASCII letters, digits, `.`, `_` and `-`: no look-alike letters from
/// other scripts, no two accounts that differ only in case.
fn canonical_username(raw: &str) -> Option<String> {
    let name = raw.trim().to_ascii_lowercase();
    let valid = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    valid.then_some(name)
}

/// Accounts get a password the policy accepts: long enough, not common, not the username.
///
/// Whether a name is taken is the one thing sign-up must tell, so it is told as late and as
/// dearly as possible: every attempt counts against the address's sign-up limit, a refused
/// password gets the same answer for taken and free names, and a taken name costs the same
/// argon2 work as a free one.
async fn register(
    req: HttpRequest,
    users: web::Data<Users>,
    throttle: web::Data<LoginThrottle>,
    sessions: Sessions,
    creds: web::Json<Credentials>,
) -> actix_web::Result<HttpResponse> {
    throttle.registration(&req).await?;
    let Some(username) = canonical_username(&creds.username) else {
        return Ok(HttpResponse::BadRequest().json(json!({ "error": "invalid_username" })));
    };
    if let Some(refusal) = policy_refusal(&creds.password, &username) {
        return Ok(refusal);
    }
    let hash = hasher().hash_registration(&creds.password).await?;
    let Some(profile) = users.add(&username, hash) else {
        return Ok(HttpResponse::Conflict().json(json!({ "error": "username_taken" })));
    };
    start_credentials(&sessions, profile.id).await?;
    Ok(HttpResponse::Created().json(profile))
}

/// Records a user's first password. The quickstart keeps users in memory and hands out ids
/// again after a restart, while Redis keeps sessions and credentials versions: this ends
/// whatever a previous user with this id left behind, so their recorded version and sessions
/// do not carry over. An app whose users live in a database never reuses ids and never needs it.
async fn start_credentials(sessions: &Sessions, id: u64) -> Result<(), actix_login::Error> {
    sessions.credentials_changed(&id.to_string(), "0").await?;
    Ok(())
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
        HttpResponse::NotFound().json(json!({ "error": "no_such_session" }))
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
struct NewToken {
    name: String,
    expires_in_secs: Option<u64>,
}

/// Creates a personal access token for scripts and other clients, which send it as
/// `Authorization: Bearer <token>`. The secret is in this response only: the store keeps a hash.
async fn create_token(
    session: Session,
    body: web::Json<NewToken>,
) -> actix_web::Result<HttpResponse> {
    let NewToken {
        name,
        expires_in_secs,
    } = body.into_inner();
    let mut token = PersonalToken::new(name);
    if let Some(secs) = expires_in_secs {
        token = token.expires_in(Duration::from_secs(secs));
    }
    // A blank or overlong name and a zero lifetime come back as `400 invalid_input`; a stale
    // session or a token as `403 reauth_required`; the limits as `409 too_many_tokens` and
    // `429 token_rate_limited`.
    let issued = session.create_token(token).await?;
    Ok(HttpResponse::Created().json(issued))
}

#[derive(Deserialize)]
struct Reauth {
    password: String,
}

/// Confirms the password again: the session becomes fresh and gets a new token.
async fn reauth(
    req: HttpRequest,
    users: web::Data<Users>,
    throttle: web::Data<LoginThrottle>,
    user: AuthUser<Profile>,
    session: Session,
    body: web::Json<Reauth>,
) -> actix_web::Result<HttpResponse> {
    // A stolen session must not become a free password oracle: same limits as login.
    let Some(device) =
        password_matches(&req, &throttle, &users, &user.username, &body.password).await?
    else {
        return Ok(invalid_credentials());
    };
    session.reauthenticate().await?;
    Ok(HttpResponse::NoContent().cookie(device).finish())
}

#[derive(Deserialize)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

/// Needs a fresh session (see the route). Every other session of the user ends; this one gets a
/// new token.
async fn change_password(
    req: HttpRequest,
    users: web::Data<Users>,
    throttle: web::Data<LoginThrottle>,
    user: AuthUser<Profile>,
    session: Session,
    body: web::Json<PasswordChange>,
) -> actix_web::Result<HttpResponse> {
    if let Some(refusal) = policy_refusal(&body.new_password, &user.username) {
        return Ok(refusal);
    }
    let current = &body.current_password;
    let Some(device) = password_matches(&req, &throttle, &users, &user.username, current).await?
    else {
        return Ok(invalid_credentials());
    };
    let hash = hasher().hash(&body.new_password).await?;
    let version = users.change_password(&user.username, hash);
    // Ends every other session, and any login that verified the old password and has yet to
    // finish; then this one moves to a new token.
    session.credentials_changed(version.to_string()).await?;
    session.reauthenticate().await?;
    Ok(HttpResponse::NoContent().cookie(device).finish())
}

async fn admin(user: AuthUser<Profile>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "admin": user.username }))
}

/// What the cart, preference, role and token routes answer to input they cannot take.
fn invalid_input() -> HttpResponse {
    HttpResponse::BadRequest().json(json!({ "error": "invalid_input" }))
}

/// The session-data name of the cart: a JSON array of strings.
const CART: &str = "cart";
/// The longest cart item, in characters.
const MAX_ITEM_CHARS: usize = 100;

#[derive(Deserialize)]
struct CartItem {
    item: String,
}

/// The cart, for anyone. Reading never starts a session: a visitor without one gets an empty
/// cart and no cookie.
async fn cart(session: Session) -> actix_web::Result<HttpResponse> {
    let items: Vec<String> = session.get(CART).await?.unwrap_or_default();
    Ok(HttpResponse::Ok().json(json!({ "items": items })))
}

/// Adds an item, for anyone: a visitor's first item starts an anonymous session (the response
/// sets its cookie), which a later login keeps. Read, append, write: of two additions racing
/// in one session, one may be lost, which a cart can afford (the store offers no
/// compare-and-set). The session's data limit bounds the cart (`413 session_data_too_large`).
async fn add_to_cart(
    session: Session,
    body: web::Json<CartItem>,
) -> actix_web::Result<HttpResponse> {
    let item = body.into_inner().item;
    if !(1..=MAX_ITEM_CHARS).contains(&item.chars().count()) {
        return Ok(invalid_input());
    }
    let mut items: Vec<String> = session.get(CART).await?.unwrap_or_default();
    items.push(item);
    session.insert(CART, &items).await?;
    Ok(HttpResponse::Ok().json(json!({ "items": items })))
}

/// Preferences live in the session's data, one value per name `pref.{key}`.
const PREF_PREFIX: &str = "pref.";
/// The longest preference value, in characters.
const MAX_PREF_CHARS: usize = 1000;

/// Preference keys are 1 to 32 of `a-z`, `0-9` and `_`.
fn valid_pref_key(key: &str) -> bool {
    (1..=32).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[derive(Deserialize)]
struct PrefValue {
    value: String,
}

/// Sets one preference, for anyone (a first write starts an anonymous session, as for the
/// cart). Only this key's value is written: requests setting other keys lose nothing.
async fn set_pref(
    session: Session,
    key: web::Path<String>,
    body: web::Json<PrefValue>,
) -> actix_web::Result<HttpResponse> {
    let value = body.into_inner().value;
    if !valid_pref_key(&key) || value.chars().count() > MAX_PREF_CHARS {
        return Ok(invalid_input());
    }
    session.insert(format!("{PREF_PREFIX}{key}"), value).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Every preference, as `{"key":"value",...}`: the `pref.` entries of the session's data.
async fn prefs(session: Session) -> actix_web::Result<HttpResponse> {
    let data = session.entries().await?;
    let prefs: serde_json::Map<String, serde_json::Value> = data
        .iter()
        .filter_map(|(name, json)| {
            let key = name.strip_prefix(PREF_PREFIX)?;
            // Only `set_pref` writes these names, always with a string.
            let value: String = serde_json::from_str(json).ok()?;
            Some((key.to_owned(), value.into()))
        })
        .collect();
    Ok(HttpResponse::Ok().json(prefs))
}

/// The roles `PUT /users/{username}/roles` may grant.
const KNOWN_ROLES: &[&str] = &["admin"];

#[derive(Deserialize)]
struct RolesChange {
    roles: Vec<String>,
}

/// Replaces a user's roles (admins only, see the route): future logins get them from the user
/// table, and every live session of the user has them on its next request, on every instance.
///
/// Each instance of the quickstart has its own user table, so logins on other instances still
/// grant the old roles until they restart; an app whose users live in a database has no such gap.
async fn set_roles(
    users: web::Data<Users>,
    sessions: Sessions,
    username: web::Path<String>,
    body: web::Json<RolesChange>,
) -> actix_web::Result<HttpResponse> {
    let mut roles = body.into_inner().roles;
    if roles
        .iter()
        .any(|role| !KNOWN_ROLES.contains(&role.as_str()))
    {
        return Ok(HttpResponse::BadRequest().json(json!({ "error": "unknown_role" })));
    }
    roles.sort();
    roles.dedup();
    let not_found = || HttpResponse::NotFound().json(json!({ "error": "not_found" }));
    let Some(username) = canonical_username(&username) else {
        return Ok(not_found());
    };
    if users.set_roles(&username, roles).is_none() {
        return Ok(not_found());
    }
    push_roles(&users, &sessions, &username).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Gives every live session of `username` the profile and roles the user table holds, and
/// repeats while the table changes under it: of two role changes racing, each push is followed
/// by a look at the table, so the last one pushes what the table ends with.
async fn push_roles(
    users: &Users,
    sessions: &Sessions,
    username: &str,
) -> Result<(), actix_login::Error> {
    let Some((mut profile, mut roles, _)) = users.find(username) else {
        return Ok(());
    };
    loop {
        let id = profile.id.to_string();
        sessions.update_user(&id, &profile, roles.clone()).await?;
        match users.find(username) {
            Some((now_profile, now_roles, _)) if now_roles != roles => {
                (profile, roles) = (now_profile, now_roles);
            }
            _ => return Ok(()),
        }
    }
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

/// Applies the optional environment knobs to the middleware settings.
fn configure(mut builder: LoginMiddlewareBuilder) -> std::io::Result<LoginMiddlewareBuilder> {
    if let Some(secs) = env_number("IDLE_TIMEOUT_SECS")? {
        builder = builder.idle_timeout(Duration::from_secs(secs));
    }
    if let Some(secs) = env_number("ABSOLUTE_TIMEOUT_SECS")? {
        builder = builder.absolute_timeout(Duration::from_secs(secs));
    }
    if let Some(secs) = env_number("REMEMBER_IDLE_TIMEOUT_SECS")? {
        builder = builder.remember_idle_timeout(Duration::from_secs(secs));
    }
    if let Some(secs) = env_number("REMEMBER_ABSOLUTE_TIMEOUT_SECS")? {
        builder = builder.remember_absolute_timeout(Duration::from_secs(secs));
    }
    if let Some(secs) = env_number("ANON_IDLE_TIMEOUT_SECS")? {
        builder = builder.anonymous_idle_timeout(Duration::from_secs(secs));
    }
    if let Some(secs) = env_number("FRESH_WINDOW_SECS")? {
        builder = builder.fresh_window(Duration::from_secs(secs));
    }
    if let Some(max) = env_number("MAX_SESSIONS_PER_USER")? {
        let max = usize::try_from(max).map_err(std::io::Error::other)?;
        builder = builder.max_sessions_per_user(max);
    }
    if let Some(max) = env_number("MAX_TOKENS_PER_USER")? {
        let max = usize::try_from(max).map_err(std::io::Error::other)?;
        builder = builder.max_tokens_per_user(max);
    }
    if let Some(max) = env_number("TOKENS_PER_HOUR")? {
        let max = u32::try_from(max).map_err(std::io::Error::other)?;
        builder = builder.token_creation_limit(max, Duration::from_secs(60 * 60));
    }
    if let Some(domain) = std::env::var("COOKIE_DOMAIN")
        .ok()
        .filter(|v| !v.is_empty())
    {
        builder = builder.cookie_domain(domain);
    }
    if let Some(proxies) = std::env::var("TRUST_PROXIES")
        .ok()
        .filter(|v| !v.is_empty())
    {
        let proxies = proxies
            .split(',')
            .map(|ip| {
                ip.trim().parse().map_err(|_| {
                    std::io::Error::other(format!("TRUST_PROXIES: {ip:?} is not an IP address"))
                })
            })
            .collect::<std::io::Result<Vec<std::net::IpAddr>>>()?;
        builder = builder.trust_proxies(proxies);
    }
    Ok(builder)
}

/// The login throttle, with `LOGIN_MAX_FAILURES` failures per account and address allowed per
/// `LOGIN_WINDOW_SECS`; the per-address and per-account ceilings scale with it, unless
/// `LOGIN_ACCOUNT_MAX_FAILURES` sets the account-wide one.
fn throttle(throttle: LoginThrottle) -> std::io::Result<LoginThrottle> {
    let max = env_number("LOGIN_MAX_FAILURES")?;
    let window = env_number("LOGIN_WINDOW_SECS")?;
    let account_max = env_number("LOGIN_ACCOUNT_MAX_FAILURES")?;
    let throttle = match env_number("REGISTRATION_MAX")? {
        Some(n) => {
            let n = u32::try_from(n).map_err(std::io::Error::other)?;
            throttle.registrations_per_client(Limit::new(n, Duration::from_secs(60 * 60)))
        }
        None => throttle,
    };
    if max.is_none() && window.is_none() && account_max.is_none() {
        return Ok(throttle);
    }
    let max = u32::try_from(max.unwrap_or(5)).map_err(std::io::Error::other)?;
    let window = Duration::from_secs(window.unwrap_or(15 * 60));
    let account_max = match account_max {
        Some(n) => u32::try_from(n).map_err(std::io::Error::other)?,
        None => max.saturating_mul(20).max(100),
    };
    Ok(throttle
        .per_account_and_client(Limit::new(max, window))
        .per_client(Limit::new(max.saturating_mul(4).max(20), window))
        .per_account(Limit::new(account_max, window)))
}

fn env_number(name: &str) -> std::io::Result<Option<u64>> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value.parse().map(Some).map_err(|_| {
            std::io::Error::other(format!("{name} must be a whole number, not {value:?}"))
        }),
        _ => Ok(None),
    }
}

/// Redis from `REDIS_SENTINELS` (comma-separated sentinel URLs, with
/// `REDIS_SENTINEL_SERVICE`), `REDIS_CLUSTER_NODES` (comma-separated `redis://host:port` seeds)
/// or `REDIS_URL`, if any is set.
async fn redis_store() -> std::io::Result<Option<RedisStore>> {
    let setting = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
    let store = if let Some(sentinels) = setting("REDIS_SENTINELS") {
        let service = setting("REDIS_SENTINEL_SERVICE").unwrap_or_else(|| "mymaster".to_owned());
        let store = sentinel_store(&sentinels, &service).await;
        println!("session store: Redis Sentinel service {service:?} (from REDIS_SENTINELS)");
        store
    } else if let Some(nodes) = setting("REDIS_CLUSTER_NODES") {
        let store = cluster_store(&nodes).await;
        println!("session store: Redis Cluster (from REDIS_CLUSTER_NODES)");
        store
    } else if let Some(url) = setting("REDIS_URL") {
        let mut builder = RedisStore::builder(url);
        if let Some(max_sessions) = env_number("SESSION_CACHE")? {
            let max_sessions = usize::try_from(max_sessions).map_err(std::io::Error::other)?;
            builder = with_cache(builder, max_sessions)?;
            println!("session cache: up to {max_sessions} sessions in process");
        }
        let store = builder.connect().await.map_err(std::io::Error::other);
        println!("session store: Redis (from REDIS_URL)");
        store
    } else {
        return Ok(None);
    };
    store.map(Some)
}

#[cfg(feature = "sentinel")]
async fn sentinel_store(sentinels: &str, service: &str) -> std::io::Result<RedisStore> {
    RedisStore::connect_sentinel(sentinels.split(',').map(str::trim), service)
        .await
        .map_err(std::io::Error::other)
}

#[cfg(not(feature = "sentinel"))]
async fn sentinel_store(_sentinels: &str, _service: &str) -> std::io::Result<RedisStore> {
    Err(needs_feature("REDIS_SENTINELS", "sentinel"))
}

#[cfg(feature = "cluster")]
async fn cluster_store(nodes: &str) -> std::io::Result<RedisStore> {
    RedisStore::connect_cluster(nodes.split(',').map(str::trim))
        .await
        .map_err(std::io::Error::other)
}

#[cfg(not(feature = "cluster"))]
async fn cluster_store(_nodes: &str) -> std::io::Result<RedisStore> {
    Err(needs_feature("REDIS_CLUSTER_NODES", "cluster"))
}

#[cfg(feature = "local-cache")]
fn with_cache(
    builder: RedisStoreBuilder,
    max_sessions: usize,
) -> std::io::Result<RedisStoreBuilder> {
    Ok(builder.local_cache(max_sessions))
}

#[cfg(not(feature = "local-cache"))]
fn with_cache(_builder: RedisStoreBuilder, _max: usize) -> std::io::Result<RedisStoreBuilder> {
    Err(needs_feature("SESSION_CACHE", "local-cache"))
}

/// Why a setting cannot be used: its code was left out of this build.
#[cfg(not(all(feature = "sentinel", feature = "cluster", feature = "local-cache")))]
fn needs_feature(setting: &str, feature: &str) -> std::io::Error {
    std::io::Error::other(format!(
        "{setting} needs the `{feature}` feature: cargo run --example quickstart --features {feature}"
    ))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let (builder, login_throttle) = if let Some(store) = redis_store().await? {
        (
            LoginMiddleware::builder(store.clone()),
            LoginThrottle::new(store),
        )
    } else {
        println!("session store: in memory (set REDIS_URL or REDIS_CLUSTER_NODES to use Redis)");
        let store = MemoryStore::new();
        (
            LoginMiddleware::builder(store.clone()),
            LoginThrottle::new(store),
        )
    };
    // `try_build`, not `build`: a bad COOKIE_DOMAIN is a message, not a panic.
    let login_middleware = configure(builder)?
        .try_build()
        .map_err(std::io::Error::other)?;
    let login_throttle = web::Data::new(throttle(login_throttle)?);
    let users = Users::seed().await.map_err(std::io::Error::other)?;
    for id in users.ids() {
        start_credentials(&login_middleware.sessions(), id)
            .await
            .map_err(std::io::Error::other)?;
    }
    let users = web::Data::new(users);

    println!("listening on http://{addr}");
    HttpServer::new(move || {
        App::new()
            .app_data(users.clone())
            .app_data(login_throttle.clone())
            .app_data(json_config())
            .route("/login", web::post().to(login))
            .route("/register", web::post().to(register))
            .route("/me", web::get().to(me))
            .route("/logout", web::post().to(logout))
            .route("/sessions", web::get().to(list_sessions))
            .route(
                "/sessions/revoke-others",
                web::post().to(revoke_other_sessions),
            )
            .route("/sessions/{id}", web::delete().to(revoke_session))
            .route("/reauth", web::post().to(reauth))
            // Login first, so that anonymous clients get 401 whatever their body. The crate
            // itself asks for a fresh session: a token is an account change.
            .service(
                web::resource("/tokens")
                    .app_data(input_json_config())
                    .wrap(Require::login())
                    .route(web::post().to(create_token)),
            )
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
            .service(
                web::resource("/users/{username}/roles")
                    .app_data(input_json_config())
                    .wrap(Require::role("admin"))
                    .route(web::put().to(set_roles)),
            )
            .service(
                web::resource("/cart")
                    .app_data(input_json_config())
                    .route(web::get().to(cart))
                    .route(web::post().to(add_to_cart)),
            )
            .route("/prefs", web::get().to(prefs))
            // Any last segment, the empty one too, so that every bad key gets the same 400.
            .service(
                web::resource("/prefs/{key:.*}")
                    .app_data(input_json_config())
                    .route(web::put().to(set_pref)),
            )
            .wrap(login_middleware.clone())
    })
    .bind(addr)?
    .run()
    .await
}
