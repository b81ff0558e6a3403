//! A server-rendered login app: HTML forms, and passkeys through one small plain script.
//! `cargo run --example html_login --features passkeys`, then open <http://localhost:8080/>.
//!
//! What it shows, page by page:
//!
//! - `GET /login`: a sign-in form with a "Keep me signed in" box (`Login::remember`, a cookie
//!   that survives a browser restart) and the session's CSRF token in a hidden field. Wrong
//!   passwords and unknown users get the same answer; attempts go through `LoginThrottle`.
//! - `GET /` and `GET /sessions` need a login: anonymous visitors are sent to
//!   `/login?next=…` (`Require::login().redirect_to`), and after signing in they come back to
//!   that page, if `safe_next` says it is one of this site's.
//! - `GET /sessions` lists the user's sessions; "End" signs another browser out on its next
//!   page load.
//! - "Sign out" (on every signed-in page) ends the session and greets the visitor on the login
//!   page with a flash message.
//! - "Forgot your password?" on the login page: `GET /password-reset` asks for a username,
//!   and `POST /password-reset` shows the same "check your mail" page whether or not the
//!   account exists (the crate does the same store work for unknown names; the mail is sent in
//!   the background). The mail, to `<username>@example.test`, carries
//!   `http://<ADDR>/password-reset/<secret>`. Opening it (`GET`) shows a form and leaves the
//!   link unused, since mail scanners open links; posting the form checks the new password
//!   against the password policy (a refusal keeps the link working), sets it, ends every
//!   session of the account and every other link it has, and lands on the login page with a
//!   flash message: the browser is not signed in by the link, so that signing in stays the one
//!   way in. A used, expired or malformed link shows a page saying so, with status `410`. Five
//!   links an hour per account (and per address) at most; past that the form says when to try
//!   again (`429`).
//!
//! - Passkeys (`actix_login::passkeys`, through `/passkeys.js`, plain JavaScript): on `/`,
//!   "Add a passkey" registers one for the signed-in user, if the login is fresh (a password
//!   or passkey within the fresh window, `FRESH_WINDOW_SECS`, default 10 minutes); an older
//!   login is asked to "Confirm with a passkey" first. On `/login`, "Sign in with a passkey"
//!   signs in without a username, and the username field offers the passkeys in its autofill
//!   (`autocomplete="username webauthn"`, conditional mediation). "Remove your passkeys"
//!   forgets them. WebAuthn takes no IP address as the site's name: open the app at
//!   `PUBLIC_URL` (default `http://localhost:<port of ADDR>`), whose host is the relying party.
//!
//! Users: `alice` / `alice-password-123` and `bob` / `bob-password-456`. Sessions live in
//! memory, or in Redis when `REDIS_URL` is set (under `REDIS_KEY_PREFIX`, default the crate's).
//! The user table lives in memory, so a restart forgets new passwords; it also records the
//! demo users' first passwords again in the store, which ends their sessions from before.
//! Mail goes to one file per message in `MAIL_DIR`, through SMTP to `SMTP_URL`, or nowhere
//! (logged without the link), as in the quickstart, whose `mail` module this example shares.
//! `ADDR` changes the address (default `127.0.0.1:8080`). Browsers take the `Secure` session
//! cookie over plain HTTP from `localhost` and `127.0.0.1` only: elsewhere, serve it over HTTPS.

#[path = "quickstart/mail.rs"]
mod mail;

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};
use std::time::SystemTime;

use actix_login::links::{LinkPurpose, OneTimeLinks, Recipient};
use actix_login::passkeys::{
    Passkey, PasskeyAccount, PasskeyUser, Passkeys, PublicKeyCredential,
    RegisterPublicKeyCredential, Url, Uuid,
};
use actix_login::password::{Lane, PasswordError, PasswordHasher};
use actix_login::policy::PasswordPolicy;
use actix_login::throttle::LoginThrottle;
use actix_login::{
    safe_next, AuthUser, Error, FlashLevel, Login, LoginMiddleware, LoginMiddlewareBuilder,
    MaybeUser, MemoryStore, RedisStore, Require, Session, Sessions, CSRF_FIELD,
};
use actix_web::http::{header, StatusCode};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use minijinja::value::{Serde, Value};
use minijinja::{context, Environment};
use serde::{Deserialize, Serialize};

const LAYOUT: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{% block title %}{% endblock %} · actix-login</title>
<style>
body { font: 16px/1.5 system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem; }
label { display: block; margin: .5rem 0; }
.note { padding: .5rem 1rem; background: #e8f0fe; }
.error { padding: .5rem 1rem; background: #fde8e8; }
form.inline { display: inline; }
</style>
</head>
<body>
{% if user %}
<nav>
<a href="/">Home</a> · <a href="/sessions">Sessions</a> ·
<form class="inline" method="post" action="/logout">
<input type="hidden" name="{{ csrf_field }}" value="{{ csrf }}">
<button type="submit">Sign out</button>
</form>
</nav>
{% endif %}
{% for flash in flashes %}<p class="note" role="status">{{ flash.text }}</p>{% endfor %}
<main>{% block content %}{% endblock %}</main>
</body>
</html>
"#;

const LOGIN: &str = r#"{% extends "layout.html" %}
{% block title %}Sign in{% endblock %}
{% block content %}
<h1>Sign in</h1>
{% if error %}<p class="error" role="alert">{{ error }}</p>{% endif %}
<form method="post" action="/login">
<input type="hidden" name="{{ csrf_field }}" value="{{ csrf }}">
<input type="hidden" name="next" value="{{ next }}">
<label>Username <input name="username" value="{{ username }}" autocomplete="username webauthn" required autofocus></label>
<label>Password <input type="password" name="password" autocomplete="current-password" required></label>
<label><input type="checkbox" name="remember"> Keep me signed in</label>
<button type="submit">Sign in</button>
</form>
<p><button type="button" id="passkey-sign-in">Sign in with a passkey</button></p>
<p id="passkey-status" role="status" hidden></p>
<p><a href="/password-reset">Forgot your password?</a></p>
<p>Try <code>alice</code> / <code>alice-password-123</code>.</p>
<script src="/passkeys.js" defer></script>
{% endblock %}
"#;

const FORGOT: &str = r#"{% extends "layout.html" %}
{% block title %}Forgot your password?{% endblock %}
{% block content %}
<h1>Forgot your password?</h1>
{% if error %}<p class="error" role="alert">{{ error }}</p>{% endif %}
<p>Give your username and we will mail you a link to choose a new password.</p>
<form method="post" action="/password-reset">
<input type="hidden" name="{{ csrf_field }}" value="{{ csrf }}">
<label>Username <input name="username" autocomplete="username" required autofocus></label>
<button type="submit">Mail me a link</button>
</form>
<p><a href="/login">Back to sign in</a></p>
{% endblock %}
"#;

const FORGOT_SENT: &str = r#"{% extends "layout.html" %}
{% block title %}Check your mail{% endblock %}
{% block content %}
<h1>Check your mail</h1>
<p>If an account has that username, a link to choose a new password is on its way to its
address. The link works once, within an hour.</p>
<p><a href="/login">Back to sign in</a></p>
{% endblock %}
"#;

const RESET: &str = r#"{% extends "layout.html" %}
{% block title %}Choose a new password{% endblock %}
{% block content %}
<h1>Choose a new password</h1>
{% if error %}<p class="error" role="alert">{{ error }}</p>{% endif %}
<p>For the account {{ username }}. Every browser signed in to it will be signed out.</p>
<form method="post" action="/password-reset/{{ secret }}">
<input type="hidden" name="{{ csrf_field }}" value="{{ csrf }}">
<input type="hidden" name="username" value="{{ username }}" autocomplete="username">
<label>New password <input type="password" name="password" autocomplete="new-password" minlength="8" required autofocus></label>
<button type="submit">Set the new password</button>
</form>
{% endblock %}
"#;

const LINK_GONE: &str = r#"{% extends "layout.html" %}
{% block title %}Link no longer works{% endblock %}
{% block content %}
<h1>This link no longer works</h1>
<p>It was used already, it expired, or it is not a link we sent. Links work once, within an
hour, and a password change ends them all.</p>
<p><a href="/password-reset">Ask for a new link</a> · <a href="/login">Sign in</a></p>
{% endblock %}
"#;

const HOME: &str = r#"{% extends "layout.html" %}
{% block title %}Home{% endblock %}
{% block content %}
<h1>Signed in as {{ user.username }}</h1>
<p>{% if remembered %}This browser stays signed in after a restart.{% else %}Closing the browser signs you out.{% endif %}</p>
<h2>Passkeys</h2>
<p>{% if passkeys == 0 %}You have no passkeys yet.{% elif passkeys == 1 %}You have 1 passkey.{% else %}You have {{ passkeys }} passkeys.{% endif %}</p>
<p><button type="button" id="add-passkey">Add a passkey</button>
<button type="button" id="confirm-passkey" hidden>Confirm with a passkey</button></p>
<p id="passkey-status" role="status" hidden></p>
{% if passkeys > 0 %}<form method="post" action="/passkeys/remove">
<input type="hidden" name="{{ csrf_field }}" value="{{ csrf }}">
<button type="submit">Remove your passkeys</button>
</form>{% endif %}
<script src="/passkeys.js" defer></script>
{% endblock %}
"#;

const SESSIONS: &str = r#"{% extends "layout.html" %}
{% block title %}Sessions{% endblock %}
{% block content %}
<h1>Where you are signed in</h1>
<ul>
{% for s in sessions %}
<li>{{ s.device }} from {{ s.ip }}, signed in {{ s.signed_in }}, last seen {{ s.last_seen }}{% if s.remembered %}, remembered{% endif %}
{% if s.current %}<strong>(this browser)</strong>{% else %}
<form class="inline" method="post" action="/sessions/{{ s.id }}/end">
<input type="hidden" name="{{ csrf_field }}" value="{{ csrf }}">
<button type="submit">End</button>
</form>{% endif %}
</li>
{% endfor %}
</ul>
{% endblock %}
"#;

/// The templates, with HTML auto-escaping (minijinja turns it on for names ending `.html`).
fn templates() -> Result<Environment<'static>, minijinja::Error> {
    let mut env = Environment::new();
    env.add_template("layout.html", LAYOUT)?;
    env.add_template("login.html", LOGIN)?;
    env.add_template("home.html", HOME)?;
    env.add_template("sessions.html", SESSIONS)?;
    env.add_template("forgot.html", FORGOT)?;
    env.add_template("forgot_sent.html", FORGOT_SENT)?;
    env.add_template("reset.html", RESET)?;
    env.add_template("link_gone.html", LINK_GONE)?;
    env.add_global("csrf_field", CSRF_FIELD);
    Ok(env)
}

/// A page. Never cached: after "Sign out", Back must not show the signed-in page again.
fn render(pages: &Environment<'_>, status: StatusCode, name: &str, ctx: Value) -> HttpResponse {
    match pages.get_template(name).and_then(|page| page.render(ctx)) {
        Ok(html) => HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .insert_header((header::CACHE_CONTROL, "no-store"))
            // No script but this site's own file, which talks to this site only; forms post
            // only here, and no other site may frame the buttons.
            .insert_header((
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'self'; connect-src 'self'; \
                 style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; \
                 base-uri 'none'",
            ))
            .body(html),
        Err(err) => {
            tracing::error!(error = %err, page = name, "template failed");
            HttpResponse::InternalServerError().finish()
        }
    }
}

/// What every page shows: who is signed in, the CSRF token its forms carry, and the flash
/// messages waiting for it.
async fn common(session: &Session, user: Option<&Profile>) -> Result<Value, Error> {
    Ok(context! {
        user => user.map(Serde),
        csrf => session.csrf_token().unwrap_or_default(),
        flashes => Serde(session.take_flashes().await?),
    })
}

fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}

/// What a session remembers about its user; never the password hash.
#[derive(Clone, Serialize, Deserialize)]
struct Profile {
    id: u64,
    username: String,
}

/// One row of the user table.
struct User {
    profile: Profile,
    /// The account's passkey user handle: random, made once, never personal data.
    handle: Uuid,
    /// The passkeys registered to the account, as webauthn-rs made them (an app stores them as
    /// JSON).
    passkeys: Vec<Passkey>,
    password_hash: String,
    /// Counts password changes: what logins name as the credentials they verified, so that a
    /// login that checked a password being replaced leaves no session.
    password_version: u64,
}

/// A user's mail address: each user reads mail at `<username>@example.test`.
fn address(username: &str) -> String {
    format!("{username}@example.test")
}

/// Stands in for the app's user table, by username.
struct Users(RwLock<HashMap<String, User>>);

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
            let password_hash = PasswordHasher::new().hash(password).await?;
            let user = User {
                profile,
                handle: Uuid::new_v4(),
                passkeys: Vec::new(),
                password_hash,
                password_version: 0,
            };
            users.insert(username.to_owned(), user);
        }
        Ok(Self(RwLock::new(users)))
    }

    /// The account `username` names (in any case, with spaces around), if there is one: its
    /// profile and the version of its password.
    fn find(&self, username: &str) -> Option<(Profile, u64)> {
        let users = self.0.read().unwrap_or_else(PoisonError::into_inner);
        let user = users.get(&username.trim().to_ascii_lowercase())?;
        Some((user.profile.clone(), user.password_version))
    }

    /// The id of the account `username` names, if there is one.
    fn id_of(&self, username: &str) -> Option<String> {
        self.find(username)
            .map(|(profile, _)| profile.id.to_string())
    }

    /// The profile of the user with `id`, if there is one.
    fn find_by_id(&self, id: &str) -> Option<Profile> {
        let users = self.0.read().unwrap_or_else(PoisonError::into_inner);
        users
            .values()
            .find(|user| user.profile.id.to_string() == id)
            .map(|user| user.profile.clone())
    }

    /// The account with `id`: its profile, passkey handle and passkeys.
    fn passkey_owner(&self, id: &str) -> Option<(Profile, Uuid, Vec<Passkey>)> {
        let users = self.0.read().unwrap_or_else(PoisonError::into_inner);
        let user = users
            .values()
            .find(|user| user.profile.id.to_string() == id)?;
        Some((user.profile.clone(), user.handle, user.passkeys.clone()))
    }

    /// The account whose passkey handle is `handle`, with the version of its password.
    fn by_handle(&self, handle: Uuid) -> Option<(Profile, u64, Vec<Passkey>)> {
        let users = self.0.read().unwrap_or_else(PoisonError::into_inner);
        let user = users.values().find(|user| user.handle == handle)?;
        Some((
            user.profile.clone(),
            user.password_version,
            user.passkeys.clone(),
        ))
    }

    /// Adds `key` to the account with `id`, or stores it in place of the one with its id;
    /// `false` if another account holds that credential.
    fn save_passkey(&self, id: u64, key: Passkey) -> bool {
        let mut users = self.0.write().unwrap_or_else(PoisonError::into_inner);
        let elsewhere = users.values().any(|user| {
            user.profile.id != id && user.passkeys.iter().any(|k| k.cred_id() == key.cred_id())
        });
        let Some(user) = users.values_mut().find(|user| user.profile.id == id) else {
            return false;
        };
        if elsewhere {
            return false;
        }
        user.passkeys.retain(|k| k.cred_id() != key.cred_id());
        user.passkeys.push(key);
        true
    }

    /// Forgets every passkey of the account with `id`.
    fn remove_passkeys(&self, id: u64) {
        let mut users = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(user) = users.values_mut().find(|user| user.profile.id == id) {
            user.passkeys.clear();
        }
    }

    /// Stores a new password hash for `username`; returns the password's new version.
    fn set_password(&self, username: &str, password_hash: String) -> Option<u64> {
        let mut users = self.0.write().unwrap_or_else(PoisonError::into_inner);
        let user = users.get_mut(username)?;
        user.password_hash = password_hash;
        user.password_version += 1;
        Some(user.password_version)
    }

    /// The user, if the password is theirs, checked in the hashing queue's `lane`. Unknown users
    /// cost the same argon2 work as a wrong password, and an oversized password is just a wrong
    /// one.
    async fn check(
        &self,
        lane: Lane,
        username: &str,
        password: &str,
    ) -> Result<Option<Profile>, PasswordError> {
        let (profile, stored) = {
            let users = self.0.read().unwrap_or_else(PoisonError::into_inner);
            let user = users.get(&username.trim().to_ascii_lowercase());
            let profile = user.map(|user| user.profile.clone());
            (profile, user.map(|user| user.password_hash.clone()))
        };
        match PasswordHasher::new()
            .verify_in(lane, password, stored.as_deref())
            .await
        {
            Ok(true) => Ok(profile),
            Ok(false) | Err(PasswordError::TooLong) => Ok(None),
            Err(err) => Err(err),
        }
    }
}

#[derive(Deserialize)]
struct NextParam {
    next: Option<String>,
}

async fn login_page(
    pages: web::Data<Environment<'static>>,
    session: Session,
    query: web::Query<NextParam>,
) -> actix_web::Result<HttpResponse> {
    let next = query
        .next
        .as_deref()
        .and_then(safe_next)
        .unwrap_or_default();
    let ctx = context! { next, ..common(&session, None).await? };
    Ok(render(&pages, StatusCode::OK, "login.html", ctx))
}

/// The sign-in form's fields; missing ones are empty (and so a failed login).
#[derive(Deserialize, Default)]
#[serde(default)]
struct LoginForm {
    username: String,
    password: String,
    remember: Option<String>,
    next: String,
}

/// The sign-in form again, saying why.
async fn login_refused(
    pages: &Environment<'_>,
    session: &Session,
    form: &LoginForm,
    status: StatusCode,
    error: String,
) -> actix_web::Result<HttpResponse> {
    let next = safe_next(&form.next).unwrap_or_default();
    let ctx = context! { error, next, username => form.username.as_str(), ..common(session, None).await? };
    Ok(render(pages, status, "login.html", ctx))
}

async fn login(
    req: HttpRequest,
    pages: web::Data<Environment<'static>>,
    users: web::Data<Users>,
    throttle: web::Data<LoginThrottle>,
    session: Session,
    form: web::Form<LoginForm>,
) -> actix_web::Result<HttpResponse> {
    // Counted before the password is checked, so parallel guesses cannot slip past the limit.
    // The account's id binds device cookies to the account, whatever its name becomes.
    let id = users.id_of(&form.username);
    // Read before the password is checked: a reset in between makes this login fail safe
    // rather than outlive it.
    let version = users.find(&form.username).map_or(0, |(_, version)| version);
    let attempt = match throttle.attempt(&req, &form.username, id.as_deref()).await {
        Ok(attempt) => attempt,
        Err(Error::Throttled { retry_after }) => {
            // Whole seconds, rounded up: waiting exactly this long is enough.
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            let error = format!("Too many attempts. Try again in {secs} seconds.");
            let status = StatusCode::TOO_MANY_REQUESTS;
            let mut page = login_refused(&pages, &session, &form, status, error).await?;
            page.headers_mut().insert(header::RETRY_AFTER, secs.into());
            return Ok(page);
        }
        Err(err) => return Err(err.into()),
    };
    // A browser that logged in before is not queued behind strangers' guesses.
    let checked = match users
        .check(attempt.lane(), &form.username, &form.password)
        .await
    {
        // Turned away by a full hashing queue (503 login_busy): no guess was made, so none is
        // counted.
        Err(PasswordError::Busy) => {
            attempt.not_checked().await?;
            return Err(PasswordError::Busy.into());
        }
        checked => checked?,
    };
    let Some(profile) = checked else {
        attempt.failed().await?;
        let error = "Invalid username or password".to_owned();
        return login_refused(&pages, &session, &form, StatusCode::UNAUTHORIZED, error).await;
    };
    // Lets this browser in even while strangers have the account throttled.
    let device = attempt.succeeded().await?;
    let login = Login::new(profile.id.to_string(), &profile)
        .credentials_version(version.to_string())
        .remember(form.remember.is_some());
    session.login_with(login).await?;
    let mut response = see_other(safe_next(&form.next).unwrap_or("/"));
    response.add_cookie(&device)?;
    Ok(response)
}

async fn home(
    pages: web::Data<Environment<'static>>,
    users: web::Data<Users>,
    user: AuthUser<Profile>,
    session: Session,
) -> actix_web::Result<HttpResponse> {
    let remembered = user.is_remembered();
    let passkeys = users
        .passkey_owner(&user.id.to_string())
        .map_or(0, |(_, _, keys)| keys.len());
    let ctx = context! { remembered, passkeys, ..common(&session, Some(&user)).await? };
    Ok(render(&pages, StatusCode::OK, "home.html", ctx))
}

/// One line of the sessions page.
#[derive(Serialize)]
struct SessionRow {
    id: String,
    current: bool,
    remembered: bool,
    device: String,
    ip: String,
    signed_in: String,
    last_seen: String,
}

fn ago(then: SystemTime) -> String {
    let secs = SystemTime::now()
        .duration_since(then)
        .unwrap_or_default()
        .as_secs();
    match secs {
        0..60 => "just now".to_owned(),
        60..3600 => format!("{} min ago", secs / 60),
        3600..86400 => format!("{} h ago", secs / 3600),
        _ => format!("{} days ago", secs / 86400),
    }
}

async fn sessions_page(
    pages: web::Data<Environment<'static>>,
    user: AuthUser<Profile>,
    session: Session,
) -> actix_web::Result<HttpResponse> {
    let rows: Vec<SessionRow> = session
        .list_sessions()
        .await?
        .into_iter()
        .map(|s| SessionRow {
            device: s.user_agent.unwrap_or_else(|| "Unknown browser".to_owned()),
            ip: s.ip.unwrap_or_else(|| "an unknown address".to_owned()),
            signed_in: ago(s.created_at),
            last_seen: ago(s.last_seen),
            id: s.id,
            current: s.current,
            remembered: s.remembered,
        })
        .collect();
    let ctx = context! { sessions => Serde(rows), ..common(&session, Some(&user)).await? };
    Ok(render(&pages, StatusCode::OK, "sessions.html", ctx))
}

async fn end_session(
    user: MaybeUser<Profile>,
    session: Session,
    id: web::Path<String>,
) -> actix_web::Result<HttpResponse> {
    let Some(user) = user.into_option() else {
        return Ok(see_other("/login?next=%2Fsessions"));
    };
    // This browser's own session ends with "Sign out", which also clears its cookie.
    if id.as_str() == user.session_id() {
        return Ok(see_other("/sessions"));
    }
    let text = if session.revoke_session(&id).await? {
        "Session ended"
    } else {
        "That session had already ended"
    };
    session.flash(FlashLevel::Info, text).await?;
    Ok(see_other("/sessions"))
}

async fn logout(session: Session) -> actix_web::Result<HttpResponse> {
    session.logout().await?;
    // The message starts an anonymous session; if the app may not start one now, the visitor
    // is signed out all the same.
    if let Err(err) = session.flash(FlashLevel::Info, "Signed out").await {
        tracing::warn!(error = %err, "no flash message after logout");
    }
    Ok(see_other("/login"))
}

/// Where links point: `http://<ADDR>`.
struct LinkBase(String);

/// Whole seconds, rounded up: waiting exactly this long is enough.
fn whole_secs(wait: std::time::Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// A page whose URL holds a link's secret: no `Referer` carries it to another site.
fn secret_page(mut page: HttpResponse) -> HttpResponse {
    page.headers_mut().insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    page
}

/// `GET /password-reset`: the "Forgot your password?" form.
async fn forgot_page(
    pages: web::Data<Environment<'static>>,
    session: Session,
) -> actix_web::Result<HttpResponse> {
    let ctx = common(&session, None).await?;
    Ok(render(&pages, StatusCode::OK, "forgot.html", ctx))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ForgotForm {
    username: String,
}

/// `POST /password-reset`: the same page, after the same store work, whether or not the account
/// exists; the mail goes out in the background.
async fn forgot(
    pages: web::Data<Environment<'static>>,
    users: web::Data<Users>,
    links: OneTimeLinks,
    mailer: web::Data<mail::Mailer>,
    base: web::Data<LinkBase>,
    session: Session,
    form: web::Form<ForgotForm>,
) -> actix_web::Result<HttpResponse> {
    let account = users
        .find(&form.username)
        .map(|(profile, _)| (profile.id.to_string(), address(&profile.username)));
    let to = account
        .as_ref()
        .map(|(id, address)| Recipient::new(id, address));
    match links
        .issue(LinkPurpose::PasswordReset, &form.username, to)
        .await
    {
        Ok(issued) => {
            if let (Some(issued), Some((_, to))) = (issued, &account) {
                let body = format!(
                    "Someone (we hope you) asked to reset the password of your account. To \
                     choose a new one, open\r\n\r\n{}/password-reset/{}\r\n\r\nThe link \
                     works once, within an hour. If you did not ask for it, ignore this \
                     message.\r\n",
                    base.0,
                    issued.secret()
                );
                mailer.send(to, "Reset your password", body);
            }
            let ctx = common(&session, None).await?;
            Ok(render(&pages, StatusCode::OK, "forgot_sent.html", ctx))
        }
        // Counted alike for unknown names, so this says nothing about the account either.
        Err(Error::TooManyLinks { retry_after }) => {
            let secs = whole_secs(retry_after);
            let error = format!("Too many links asked for. Try again in {secs} seconds.");
            let ctx = context! { error, ..common(&session, None).await? };
            let mut page = render(&pages, StatusCode::TOO_MANY_REQUESTS, "forgot.html", ctx);
            page.headers_mut().insert(header::RETRY_AFTER, secs.into());
            Ok(page)
        }
        Err(err) => Err(err.into()),
    }
}

/// The page for a link that is used, expired, malformed or not ours: `410`.
async fn link_gone(pages: &Environment<'_>, session: &Session) -> actix_web::Result<HttpResponse> {
    let ctx = common(session, None).await?;
    Ok(secret_page(render(
        pages,
        StatusCode::GONE,
        "link_gone.html",
        ctx,
    )))
}

/// `GET /password-reset/{secret}`: the new-password form. Looking leaves the link unused.
async fn reset_page(
    pages: web::Data<Environment<'static>>,
    users: web::Data<Users>,
    links: OneTimeLinks,
    session: Session,
    secret: web::Path<String>,
) -> actix_web::Result<HttpResponse> {
    let owner = match links.peek(LinkPurpose::PasswordReset, &secret).await {
        Ok(info) => users.find_by_id(info.user_id()),
        Err(Error::InvalidLink) => None,
        Err(err) => return Err(err.into()),
    };
    let Some(owner) = owner else {
        return link_gone(&pages, &session).await;
    };
    let ctx = context! {
        secret => secret.as_str(),
        username => owner.username,
        ..common(&session, None).await?
    };
    Ok(secret_page(render(
        &pages,
        StatusCode::OK,
        "reset.html",
        ctx,
    )))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ResetForm {
    password: String,
}

/// `POST /password-reset/{secret}`: sets the new password. The link is looked at first and
/// used only once the password passed the policy and is hashed, so a refused password costs
/// no new mail. Every session of the account ends (this browser's too, if it was signed in
/// to it), and the browser lands on the login page with a flash message.
#[allow(clippy::too_many_arguments)]
async fn reset(
    pages: web::Data<Environment<'static>>,
    users: web::Data<Users>,
    links: OneTimeLinks,
    sessions: Sessions,
    session: Session,
    user: MaybeUser<Profile>,
    secret: web::Path<String>,
    form: web::Form<ResetForm>,
) -> actix_web::Result<HttpResponse> {
    let purpose = LinkPurpose::PasswordReset;
    let owner = match links.peek(purpose, &secret).await {
        Ok(info) => users.find_by_id(info.user_id()).map(|owner| (info, owner)),
        Err(Error::InvalidLink) => None,
        Err(err) => return Err(err.into()),
    };
    let Some((info, owner)) = owner else {
        return link_gone(&pages, &session).await;
    };
    let policy = PasswordPolicy::new().check(&form.password, &[&owner.username, "actix-login"]);
    if let Err(violation) = policy {
        let ctx = context! {
            secret => secret.as_str(),
            username => owner.username,
            error => format!("Please choose another password: {}.", violation.reason()),
            ..common(&session, None).await?
        };
        return Ok(secret_page(render(
            &pages,
            StatusCode::BAD_REQUEST,
            "reset.html",
            ctx,
        )));
    }
    let hash = PasswordHasher::new().hash(&form.password).await?;
    let used = match links.consume(purpose, &secret).await {
        Ok(used) => used,
        // Used by another request since the look above.
        Err(Error::InvalidLink) => return link_gone(&pages, &session).await,
        Err(err) => return Err(err.into()),
    };
    if used.user_id() != info.user_id() || used.address() != address(&owner.username) {
        return link_gone(&pages, &session).await;
    }
    let Some(version) = users.set_password(&owner.username, hash) else {
        return link_gone(&pages, &session).await;
    };
    // This browser, if signed in to the account, is signed out with its cookie cleared; then
    // every other session of the account ends, and every link issued before.
    if user
        .into_option()
        .is_some_and(|user| user.id.to_string() == used.user_id())
    {
        session.logout().await?;
    }
    sessions
        .credentials_changed(used.user_id(), version.to_string())
        .await?;
    let text = "Your password was changed. Sign in with the new one.";
    if let Err(err) = session.flash(FlashLevel::Info, text).await {
        tracing::warn!(error = %err, "no flash message after a password reset");
    }
    Ok(see_other("/login"))
}

/// `GET /passkeys.js`: the pages' one script.
async fn passkeys_script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(include_str!("html_login_assets/passkeys.js"))
}

/// `POST /passkeys/register/start`: the options for `navigator.credentials.create`, for a
/// fresh login (else `403 {"error":"reauth_required"}`, and the page offers to confirm).
async fn passkey_register_start(
    passkeys: web::Data<Passkeys>,
    users: web::Data<Users>,
    user: AuthUser<Profile>,
    session: Session,
) -> actix_web::Result<HttpResponse> {
    let Some((profile, handle, existing)) = users.passkey_owner(&user.id.to_string()) else {
        return Err(Error::Unauthenticated.into());
    };
    let who = PasskeyUser::new(handle, &profile.username, &profile.username);
    let options = passkeys
        .start_registration(&session, &who, &existing)
        .await?;
    Ok(HttpResponse::Ok().json(options))
}

/// `POST /passkeys/register/finish`: the browser's new credential, kept with the account.
async fn passkey_register_finish(
    passkeys: web::Data<Passkeys>,
    users: web::Data<Users>,
    user: AuthUser<Profile>,
    session: Session,
    response: web::Json<RegisterPublicKeyCredential>,
) -> actix_web::Result<HttpResponse> {
    let key = passkeys.finish_registration(&session, &response).await?;
    if !users.save_passkey(user.id, key) {
        return Ok(HttpResponse::Conflict().json(serde_json::json!({"error": "passkey_taken"})));
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({})))
}

/// `POST /passkeys/sign-in/start`: a username-less sign-in, for the button and the autofill.
async fn passkey_sign_in_start(
    passkeys: web::Data<Passkeys>,
    session: Session,
) -> actix_web::Result<HttpResponse> {
    let options = passkeys.start_discoverable_authentication(&session).await?;
    Ok(HttpResponse::Ok().json(options))
}

/// `POST /passkeys/confirm/start`: the signed-in user confirms it is them ("sudo mode") with
/// one of their passkeys; finished by `/passkeys/sign-in/finish` like a sign-in.
async fn passkey_confirm_start(
    passkeys: web::Data<Passkeys>,
    users: web::Data<Users>,
    user: AuthUser<Profile>,
    session: Session,
) -> actix_web::Result<HttpResponse> {
    let id = user.id.to_string();
    let keys = users.passkey_owner(&id).map(|(_, _, keys)| keys);
    let options = passkeys
        .start_authentication(&session, &id, &keys.unwrap_or_default())
        .await?;
    Ok(HttpResponse::Ok().json(options))
}

/// `POST /passkeys/sign-in/finish`: checks the passkey, then signs in (or confirms the
/// signed-in user), with the counter the authenticator reported stored for next time.
async fn passkey_sign_in_finish(
    passkeys: web::Data<Passkeys>,
    users: web::Data<Users>,
    throttle: web::Data<LoginThrottle>,
    session: Session,
    response: web::Json<PublicKeyCredential>,
) -> actix_web::Result<HttpResponse> {
    let pending = passkeys.identify(&session, response.into_inner()).await?;
    let found = match pending.named_user() {
        Some(id) => users
            .find_by_id(id)
            .and_then(|profile| users.find(&profile.username)),
        None => pending
            .user_handle()
            .and_then(|handle| users.by_handle(handle))
            .map(|(profile, version, _)| (profile, version)),
    };
    let account = found.and_then(|(profile, version)| {
        let (_, _, keys) = users.passkey_owner(&profile.id.to_string())?;
        let login =
            Login::new(profile.id.to_string(), &profile).credentials_version(version.to_string());
        Some((profile, PasskeyAccount::new(login, keys)))
    });
    let (profile, account) = account.unzip();
    let signed_in = passkeys
        .finish_authentication(&session, pending, account)
        .await?;
    let Some(profile) = profile else {
        return Err(Error::Unauthenticated.into());
    };
    if let Some(updated) = signed_in.updated {
        users.save_passkey(profile.id, updated);
    }
    // As after a password: this browser is let in even while strangers have the account
    // throttled.
    let device = throttle.trust_device(&signed_in.user_id).await?;
    let mut response = HttpResponse::Ok().json(serde_json::json!({"user": profile.username}));
    response.add_cookie(&device)?;
    Ok(response)
}

/// `POST /passkeys/remove`: forgets the signed-in user's passkeys; a sign-in with one of them
/// is refused from then on.
async fn passkeys_remove(
    users: web::Data<Users>,
    user: AuthUser<Profile>,
    session: Session,
) -> actix_web::Result<HttpResponse> {
    users.remove_passkeys(user.id);
    session
        .flash(FlashLevel::Info, "Your passkeys were removed")
        .await?;
    Ok(see_other("/"))
}

/// The passkey settings: the relying party is `PUBLIC_URL`'s host, and its origin the pages'
/// address (default `http://localhost:<port of ADDR>`).
fn passkeys_from_env(addr: &str) -> std::io::Result<Passkeys> {
    let port = addr.rsplit(':').next().unwrap_or("8080");
    let public_url = std::env::var("PUBLIC_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| format!("http://localhost:{port}"));
    let origin = public_url.trim_end_matches('/');
    let url = Url::parse(origin).map_err(|err| {
        std::io::Error::other(format!("PUBLIC_URL {public_url:?} is not a URL: {err}"))
    })?;
    let rp_id = url.host_str().unwrap_or_default();
    let passkeys = Passkeys::builder(rp_id, origin)
        .rp_name("actix-login html_login")
        .build()
        .map_err(std::io::Error::other)?;
    println!("passkeys: relying party {rp_id}, pages at {origin}");
    Ok(passkeys)
}

/// The middleware, with `FRESH_WINDOW_SECS` when it is set.
fn middleware(
    builder: LoginMiddlewareBuilder,
    fresh_window: Option<std::time::Duration>,
) -> LoginMiddleware {
    match fresh_window {
        Some(window) => builder.fresh_window(window).build(),
        None => builder.build(),
    }
}

/// Anonymous visitors go to the login page, which brings them back here afterwards.
fn signed_in() -> Require {
    Require::login().redirect_to("/login")
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    // How long a password or passkey counts as just entered, for adding a passkey.
    let fresh_window = std::env::var("FRESH_WINDOW_SECS")
        .ok()
        .and_then(|secs| secs.parse().ok())
        .map(std::time::Duration::from_secs);
    let passkeys = web::Data::new(passkeys_from_env(&addr)?);
    let (sessions, throttle) = match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => {
            let mut builder = RedisStore::builder(url);
            if let Ok(prefix) = std::env::var("REDIS_KEY_PREFIX") {
                builder = builder.key_prefix(prefix);
            }
            let store = builder.connect().await.map_err(std::io::Error::other)?;
            println!("session store: Redis (from REDIS_URL)");
            (
                middleware(LoginMiddleware::builder(store.clone()), fresh_window),
                LoginThrottle::new(store),
            )
        }
        _ => {
            println!("session store: in memory (set REDIS_URL to use Redis)");
            let store = MemoryStore::new();
            (
                middleware(LoginMiddleware::builder(store.clone()), fresh_window),
                LoginThrottle::new(store),
            )
        }
    };
    let throttle = web::Data::new(throttle);
    let users = Users::seed().await.map_err(std::io::Error::other)?;
    // The table starts from the first passwords at every start: record them as the current
    // credentials, or a version left in Redis by a reset before a restart would refuse every
    // login. An app whose users live in a database needs no such step.
    for id in [1, 2] {
        sessions
            .sessions()
            .credentials_changed(&id.to_string(), "0")
            .await
            .map_err(std::io::Error::other)?;
    }
    let users = web::Data::new(users);
    let mailer = web::Data::new(mail::Mailer::from_env()?);
    let base = web::Data::new(LinkBase(format!("http://{addr}")));
    let pages = web::Data::new(templates().map_err(std::io::Error::other)?);

    let server = HttpServer::new(move || {
        App::new()
            .app_data(users.clone())
            .app_data(throttle.clone())
            .app_data(pages.clone())
            .app_data(mailer.clone())
            .app_data(base.clone())
            .app_data(passkeys.clone())
            .app_data(web::FormConfig::default().limit(4096))
            // The passkey answers: small, and a malformed one gets a JSON code like every
            // other refusal of the passkey routes.
            .app_data(
                web::JsonConfig::default()
                    .limit(16 * 1024)
                    .error_handler(|err, _| {
                        let body = HttpResponse::BadRequest()
                            .json(serde_json::json!({"error": "invalid_request_body"}));
                        actix_web::error::InternalError::from_response(err, body).into()
                    }),
            )
            .service(
                web::resource("/")
                    .wrap(signed_in())
                    .route(web::get().to(home)),
            )
            .service(
                web::resource("/sessions")
                    .wrap(signed_in())
                    .route(web::get().to(sessions_page)),
            )
            .route("/sessions/{id}/end", web::post().to(end_session))
            .route("/login", web::get().to(login_page))
            .route("/login", web::post().to(login))
            .route("/logout", web::post().to(logout))
            .route("/passkeys.js", web::get().to(passkeys_script))
            .route(
                "/passkeys/register/start",
                web::post().to(passkey_register_start),
            )
            .route(
                "/passkeys/register/finish",
                web::post().to(passkey_register_finish),
            )
            .route(
                "/passkeys/sign-in/start",
                web::post().to(passkey_sign_in_start),
            )
            .route(
                "/passkeys/confirm/start",
                web::post().to(passkey_confirm_start),
            )
            .route(
                "/passkeys/sign-in/finish",
                web::post().to(passkey_sign_in_finish),
            )
            .route("/passkeys/remove", web::post().to(passkeys_remove))
            .service(
                web::resource("/password-reset")
                    .route(web::get().to(forgot_page))
                    .route(web::post().to(forgot)),
            )
            .service(
                web::resource("/password-reset/{secret}")
                    .route(web::get().to(reset_page))
                    .route(web::post().to(reset)),
            )
            .wrap(sessions.clone())
    })
    .bind(&addr)?;
    println!("listening on http://{addr}");
    server.run().await
}
