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
//! - "Two-factor authentication" (`GET /2fa`, linked from every signed-in page): within the
//!   fresh window after the password (`FRESH_WINDOW_SECS`, default 10 minutes) the page shows a
//!   new TOTP secret and its `otpauth://` URL as text (kept in the session until confirmed, so
//!   a reload shows the same one) and a form for the first code; the code turns the second
//!   factor on, ends the account's other sessions, and shows the 10 recovery codes this once
//!   ("Save these recovery codes"). Outside the window the page is a "Confirm it's you" form
//!   (`POST /reauth`: the password, under the login throttle, and on an account with a second
//!   factor a code too) that comes back to it. Once on, the page offers "Generate new recovery
//!   codes", which the crate allows only on a login whose password and code are both fresh;
//!   otherwise it answers the same confirmation form (`403`).
//! - Signing in with a second factor: the right password sends the browser to `GET
//!   /login/second-factor` ("Enter the code from your authenticator app", or a recovery code,
//!   with a "Trust this browser for 30 days" box) and leaves a session that is no login for 5
//!   minutes. Any page that needs a login sends such a visitor back to the code page (a
//!   `from_fn` middleware turns the crate's `401 second_factor_required` into a `303`). A wrong
//!   or used code shows the form again (`401`); after 5 wrong codes for the account in 15
//!   minutes, from any address, the form answers `429` with `Retry-After`, even for a right
//!   code. The right code signs in on a new session cookie and goes on to the page asked for
//!   (`next`, through `safe_next`). A trusted browser skips the code at its next sign-ins, until
//!   the password changes; such a login proved no code, so new recovery codes ask for one.
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
//! The user table, and who has a second factor (the secret and the recovery codes' hashes),
//! live in memory, so a restart forgets new passwords and second factors; it also records the
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
use actix_login::two_factor::{CodeUsed, Enrolled, SecondFactor, TwoFactor};
use actix_login::{
    safe_next, AuthUser, Error, FlashLevel, Login, LoginMiddleware, LoginMiddlewareBuilder,
    MaybeUser, MemoryStore, RedisStore, Require, Session, Sessions, CSRF_FIELD,
};
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, FromRequest as _, HttpRequest, HttpResponse, HttpServer};
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
<a href="/2fa">Two-factor authentication</a> ·
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
    add_two_factor_templates(&mut env)?;
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
    /// Counts credential changes (a new password, passkeys removed): what logins name as the
    /// credentials they verified, so that a login that checked a password being replaced
    /// leaves no session.
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
    /// Removes every passkey of account `id`; if it had any, its credentials changed: returns
    /// their new version.
    fn remove_passkeys(&self, id: u64) -> Option<u64> {
        let mut users = self.0.write().unwrap_or_else(PoisonError::into_inner);
        let user = users.values_mut().find(|user| user.profile.id == id)?;
        if user.passkeys.is_empty() {
            return None;
        }
        user.passkeys.clear();
        user.password_version += 1;
        Some(user.password_version)
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
    factors: web::Data<SecondFactors>,
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
    // An account with a second factor goes on to the code page, unless the browser is trusted.
    if factors.enrolled(profile.id) {
        let remember = form.remember.is_some();
        let next = safe_next(&form.next).unwrap_or("/");
        let login = (&profile, version, remember, next);
        return password_verified(&req, &factors, attempt, &session, login).await;
    }
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
    // A removed passkey is a credential gone, like a replaced password: every other session
    // of the account ends (one signed in with a lost or stolen device among them); this one
    // goes on, on a new token.
    if let Some(version) = users.remove_passkeys(user.id) {
        session.credentials_changed(version.to_string()).await?;
        session.renew().await?;
    }
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
    // How long a password or passkey counts as just entered, for turning on a second factor
    // or adding a passkey.
    let fresh_window = std::env::var("FRESH_WINDOW_SECS")
        .ok()
        .and_then(|secs| secs.parse().ok())
        .map(std::time::Duration::from_secs);
    let passkeys = web::Data::new(passkeys_from_env(&addr)?);
    let (sessions, throttle, two_factor) = match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => {
            let mut builder = RedisStore::builder(url);
            if let Ok(prefix) = std::env::var("REDIS_KEY_PREFIX") {
                builder = builder.key_prefix(prefix);
            }
            let store = builder.connect().await.map_err(std::io::Error::other)?;
            println!("session store: Redis (from REDIS_URL)");
            (
                middleware(LoginMiddleware::builder(store.clone()), fresh_window),
                LoginThrottle::new(store.clone()),
                TwoFactor::new(store).issuer(ISSUER),
            )
        }
        _ => {
            println!("session store: in memory (set REDIS_URL to use Redis)");
            let store = MemoryStore::new();
            (
                middleware(LoginMiddleware::builder(store.clone()), fresh_window),
                LoginThrottle::new(store.clone()),
                TwoFactor::new(store).issuer(ISSUER),
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
    let factors = web::Data::new(SecondFactors::new(two_factor));
    let mailer = web::Data::new(mail::Mailer::from_env()?);
    let base = web::Data::new(LinkBase(format!("http://{addr}")));
    let pages = web::Data::new(templates().map_err(std::io::Error::other)?);

    let server = HttpServer::new(move || {
        App::new()
            .app_data(users.clone())
            .app_data(factors.clone())
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
            .configure(two_factor_routes)
            // Inside the session middleware, which it reads.
            .wrap(from_fn(code_page_first))
            .wrap(sessions.clone())
    })
    .bind(&addr)?;
    println!("listening on http://{addr}");
    server.run().await
}

// ---------------------------------------------------------------------------------------------
// The second factor: TOTP codes from an authenticator app, recovery codes, trusted browsers.
// ---------------------------------------------------------------------------------------------

/// The name authenticator apps show beside the account.
const ISSUER: &str = "actix-login html_login";

/// The session-data name of a TOTP secret waiting for its first code.
const ENROLLING: &str = "totp_enrolling";

const TWO_FACTOR: &str = r#"{% extends "layout.html" %}
{% block title %}Two-factor authentication{% endblock %}
{% block content %}
<h1>Two-factor authentication</h1>
{% if error %}<p class="error" role="alert">{{ error }}</p>{% endif %}
{% if enabled %}
<p>Two-factor authentication is on: after your password, signing in asks for a code from your
authenticator app, or one of your recovery codes. {{ left }} of your recovery codes are unused.</p>
<p>New recovery codes replace all the ones you have.</p>
<form method="post" action="/2fa/recovery-codes">
<input type="hidden" name="{{ csrf_field }}" value="{{ csrf }}">
<button type="submit">Generate new recovery codes</button>
</form>
{% else %}
<p>Add this account to your authenticator app: type in the secret, or open the URL with the
app. Then enter the 6-digit code it shows.</p>
<p>Secret: <code id="totp-secret">{{ secret }}</code></p>
<p>URL: <code id="otpauth-url">{{ otpauth_url }}</code></p>
<form method="post" action="/2fa/confirm">
<input type="hidden" name="{{ csrf_field }}" value="{{ csrf }}">
<label>Code <input name="code" autocomplete="one-time-code" inputmode="numeric" required autofocus></label>
<button type="submit">Turn on two-factor authentication</button>
</form>
{% endif %}
{% endblock %}
"#;

const RECOVERY_CODES: &str = r#"{% extends "layout.html" %}
{% block title %}Save these recovery codes{% endblock %}
{% block content %}
<h1>Save these recovery codes</h1>
<p>Each one signs you in once in place of a code from your authenticator app, if you lose it.
Keep them somewhere safe: they are shown only now{% if replaced %}, and the codes you had
before no longer work{% endif %}.</p>
<ul id="recovery-codes">
{% for code in codes %}<li><code>{{ code }}</code></li>
{% endfor %}</ul>
<p><a href="/2fa">I have saved them</a></p>
{% endblock %}
"#;

const SECOND_FACTOR: &str = r#"{% extends "layout.html" %}
{% block title %}Enter your code{% endblock %}
{% block content %}
<h1>Enter the code from your authenticator app</h1>
{% if error %}<p class="error" role="alert">{{ error }}</p>{% endif %}
<form method="post" action="/login/second-factor">
<input type="hidden" name="{{ csrf_field }}" value="{{ csrf }}">
<input type="hidden" name="next" value="{{ next }}">
<label>Code <input name="code" autocomplete="one-time-code" required autofocus></label>
<label><input type="checkbox" name="trust_browser"> Trust this browser for 30 days</label>
<button type="submit">Continue</button>
</form>
<p>No access to your app? Enter one of your recovery codes instead; each works once.</p>
<p><a href="/login">Sign in as someone else</a></p>
{% endblock %}
"#;

const CONFIRM_IDENTITY: &str = r#"{% extends "layout.html" %}
{% block title %}Confirm it's you{% endblock %}
{% block content %}
<h1>Confirm it's you</h1>
{% if error %}<p class="error" role="alert">{{ error }}</p>{% endif %}
<p>{% if two_factor %}Enter your password and a code from your authenticator app (or a recovery
code) to go on.{% else %}Enter your password again to go on.{% endif %}</p>
<form method="post" action="/reauth">
<input type="hidden" name="{{ csrf_field }}" value="{{ csrf }}">
<input type="hidden" name="next" value="{{ next }}">
<input type="hidden" name="username" value="{{ user.username }}" autocomplete="username">
<label>Password <input type="password" name="password" autocomplete="current-password" required autofocus></label>
{% if two_factor %}<label>Code <input name="code" autocomplete="one-time-code" required></label>{% endif %}
<button type="submit">Confirm</button>
</form>
{% endblock %}
"#;

fn add_two_factor_templates(env: &mut Environment<'static>) -> Result<(), minijinja::Error> {
    env.add_template("two_factor.html", TWO_FACTOR)?;
    env.add_template("recovery_codes.html", RECOVERY_CODES)?;
    env.add_template("second_factor.html", SECOND_FACTOR)?;
    env.add_template("confirm_identity.html", CONFIRM_IDENTITY)
}

fn two_factor_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/2fa")
            .wrap(signed_in())
            .route(web::get().to(two_factor_page)),
    )
    .route("/2fa/confirm", web::post().to(confirm_two_factor))
    .route("/2fa/recovery-codes", web::post().to(new_recovery_codes))
    .route("/reauth", web::post().to(reauth))
    .service(
        web::resource("/login/second-factor")
            .route(web::get().to(second_factor_page))
            .route(web::post().to(second_factor)),
    );
}

/// An account's second factor: its TOTP secret and its unused recovery codes' hashes.
struct Factor {
    secret: String,
    recovery: Vec<String>,
}

/// Who has a second factor, by user id, as an app keeps it with its users; and the crate's
/// [`TwoFactor`], which keeps what every instance must agree on (used codes, wrong codes,
/// trusted browsers) in the session store.
struct SecondFactors {
    two_factor: TwoFactor,
    table: RwLock<HashMap<u64, Factor>>,
}

impl SecondFactors {
    fn new(two_factor: TwoFactor) -> Self {
        Self {
            two_factor,
            table: RwLock::default(),
        }
    }

    fn enrolled(&self, id: u64) -> bool {
        self.recovery_codes_left(id).is_some()
    }

    /// How many unused recovery codes the account has, if it has a second factor.
    fn recovery_codes_left(&self, id: u64) -> Option<usize> {
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        table.get(&id).map(|factor| factor.recovery.len())
    }

    fn enable(&self, id: u64, secret: String, recovery: Vec<String>) {
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        table.insert(id, Factor { secret, recovery });
    }

    fn replace_recovery_codes(&self, id: u64, recovery: Vec<String>) {
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(factor) = table.get_mut(&id) {
            factor.recovery = recovery;
        }
    }

    /// Checks a code for the account `id`, the request session's: one from the authenticator
    /// app, or a recovery code, whose hash is deleted once used.
    async fn verify(&self, req: &HttpRequest, id: u64, code: &str) -> Result<(), Error> {
        let (secret, recovery) = {
            let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
            let factor = table.get(&id);
            let secret = factor.map(|factor| factor.secret.clone());
            (secret, factor.map(|factor| factor.recovery.clone()))
        };
        let recovery = recovery.unwrap_or_default();
        let user_id = id.to_string();
        let enrolled = Enrolled::new(&user_id, secret.as_deref(), &recovery);
        let used = self.two_factor.verify(req, &enrolled, code).await?;
        if let CodeUsed::RecoveryCode { index } = used {
            if let Some(hash) = recovery.get(index) {
                let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
                if let Some(factor) = table.get_mut(&id) {
                    factor.recovery.retain(|h| h != hash);
                }
            }
        }
        Ok(())
    }
}

/// `next`, percent-encoded for a query string.
fn encoded(next: &str) -> String {
    percent_encoding::utf8_percent_encode(next, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The code page, which goes on to `next` afterwards.
fn code_page(next: &str) -> String {
    format!("/login/second-factor?next={}", encoded(next))
}

/// The right password on an account with a second factor (`login` is the profile, its
/// password version, "keep me signed in" and where to go): the session waits for a code, and
/// the browser goes to the code page, unless it is one the user trusted, which goes on to
/// `next` signed in.
async fn password_verified(
    req: &HttpRequest,
    factors: &SecondFactors,
    attempt: actix_login::throttle::LoginAttempt,
    session: &Session,
    (profile, version, remember, next): (&Profile, u64, bool, &str),
) -> actix_web::Result<HttpResponse> {
    let id = profile.id.to_string();
    let version = version.to_string();
    // Forgives the attempt and renews the device cookie, moving a trust along with it.
    let verified = factors
        .two_factor
        .password_verified(req, attempt, &id, &version)
        .await?;
    let step = verified.second_factor();
    let login = Login::new(id, profile)
        .credentials_version(version)
        .remember(remember)
        .second_factor(step);
    session.login_with(login).await?;
    let mut response = if step == SecondFactor::Due {
        see_other(&code_page(next))
    } else {
        see_other(next)
    };
    response.add_cookie(&verified.device_cookie())?;
    Ok(response)
}

/// Sends a visitor whose code is still due from a page that needs a login (which answers
/// `401 second_factor_required`) to the code page, rather than to the login page or a `401`.
async fn code_page_first(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let page = req.method() == actix_web::http::Method::GET;
    let wanted = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let wanted = safe_next(wanted).unwrap_or("/").to_owned();
    let response = next.call(req).await?;
    if !page || response.status() != StatusCode::UNAUTHORIZED {
        return Ok(response.map_into_left_body());
    }
    // Read once the handler is done with the request.
    let session = Session::extract(response.request()).await?;
    if session.pending_second_factor().await?.is_none() {
        return Ok(response.map_into_left_body());
    }
    let redirect = see_other(&code_page(&wanted));
    Ok(response.into_response(redirect).map_into_right_body())
}

/// `GET /login/second-factor`: the code form, for a session whose password was right. A
/// signed-in visitor goes on to `next`, anyone else to the login page.
async fn second_factor_page(
    pages: web::Data<Environment<'static>>,
    user: MaybeUser<Profile>,
    session: Session,
    query: web::Query<NextParam>,
) -> actix_web::Result<HttpResponse> {
    let next = query.next.as_deref().and_then(safe_next).unwrap_or("/");
    if user.into_option().is_some() {
        return Ok(see_other(next));
    }
    if session.pending_second_factor().await?.is_none() {
        return Ok(see_other(&format!("/login?next={}", encoded(next))));
    }
    let ctx = context! { next, ..common(&session, None).await? };
    Ok(render(&pages, StatusCode::OK, "second_factor.html", ctx))
}

/// A form with a code; missing fields are empty.
#[derive(Deserialize, Default)]
#[serde(default)]
struct CodeForm {
    code: String,
    trust_browser: Option<String>,
    next: String,
}

/// The code form again, saying why: `401` for a wrong or used code, `429` with `Retry-After`
/// once the account had too many.
async fn code_refused(
    pages: &Environment<'_>,
    session: &Session,
    next: &str,
    err: Error,
) -> actix_web::Result<HttpResponse> {
    let (status, error, retry) = match err {
        Error::InvalidCode => (
            StatusCode::UNAUTHORIZED,
            "That code did not work. Codes work once; try the next one your app shows.".to_owned(),
            None,
        ),
        Error::TooManyCodes { retry_after } => {
            let secs = whole_secs(retry_after);
            let error = format!("Too many wrong codes. Try again in {secs} seconds.");
            (StatusCode::TOO_MANY_REQUESTS, error, Some(secs))
        }
        err => return Err(err.into()),
    };
    let ctx = context! { next, error, ..common(session, None).await? };
    let mut page = render(pages, status, "second_factor.html", ctx);
    if let Some(secs) = retry {
        page.headers_mut().insert(header::RETRY_AFTER, secs.into());
    }
    Ok(page)
}

/// `POST /login/second-factor`: a right code (or recovery code) completes the login on a new
/// session cookie, trusts the browser if asked, and goes on to `next`.
async fn second_factor(
    req: HttpRequest,
    pages: web::Data<Environment<'static>>,
    users: web::Data<Users>,
    factors: web::Data<SecondFactors>,
    session: Session,
    form: web::Form<CodeForm>,
) -> actix_web::Result<HttpResponse> {
    let next = safe_next(&form.next).unwrap_or("/");
    let pending = session.pending_second_factor().await?;
    let Some(id) = pending.as_deref().and_then(|id| id.parse::<u64>().ok()) else {
        // Five minutes passed since the password, or it changed meanwhile: start again.
        session
            .flash(FlashLevel::Info, "Please sign in again.")
            .await?;
        return Ok(see_other(&format!("/login?next={}", encoded(next))));
    };
    match factors.verify(&req, id, &form.code).await {
        Ok(()) => {}
        Err(err @ (Error::InvalidCode | Error::TooManyCodes { .. })) => {
            return code_refused(&pages, &session, next, err).await;
        }
        Err(err) => return Err(err.into()),
    }
    session.complete_second_factor().await?;
    let mut response = see_other(next);
    if form.trust_browser.is_some() {
        let version = users
            .find_by_id(&id.to_string())
            .and_then(|profile| users.find(&profile.username))
            .map_or(0, |(_, version)| version);
        let device = factors
            .two_factor
            .trust_browser(&req, &id.to_string(), version.to_string())
            .await?;
        response.add_cookie(&device)?;
    }
    Ok(response)
}

/// The "Confirm it's you" form, in place of a page that needs a fresh login: the password, and
/// a code too on an account with a second factor. `next` is where it goes afterwards.
async fn confirm_identity(
    pages: &Environment<'_>,
    session: &Session,
    user: &Profile,
    two_factor: bool,
    next: &str,
    status: StatusCode,
    error: Option<String>,
) -> actix_web::Result<HttpResponse> {
    let ctx = context! { two_factor, next, error, ..common(session, Some(user)).await? };
    Ok(render(pages, status, "confirm_identity.html", ctx))
}

/// Whether `err` says the login is not fresh enough.
fn needs_reauth(err: &Error) -> bool {
    matches!(
        err,
        Error::ReauthRequired | Error::SecondFactorReauthRequired
    )
}

/// The session-data form of a secret waiting for its first code.
#[derive(Serialize, Deserialize)]
struct Enrolling {
    secret: String,
    otpauth_url: String,
}

/// `GET /2fa`: with a second factor, the number of unused recovery codes and a button for new
/// ones; without one, a new secret (kept in the session until a first code confirms it) and
/// the form for that code, once the password was entered within the fresh window.
async fn two_factor_page(
    req: HttpRequest,
    pages: web::Data<Environment<'static>>,
    factors: web::Data<SecondFactors>,
    user: AuthUser<Profile>,
    session: Session,
) -> actix_web::Result<HttpResponse> {
    if let Some(left) = factors.recovery_codes_left(user.id) {
        let ctx = context! { enabled => true, left, ..common(&session, Some(&user)).await? };
        return Ok(render(&pages, StatusCode::OK, "two_factor.html", ctx));
    }
    let enrolling = match session.get::<Enrolling>(ENROLLING).await? {
        Some(enrolling) => enrolling,
        None => match factors.two_factor.enrol(&req, &user.username).await {
            Ok(enrolment) => {
                let enrolling = Enrolling {
                    secret: enrolment.secret().to_owned(),
                    otpauth_url: enrolment.otpauth_url().to_owned(),
                };
                session.insert(ENROLLING, &enrolling).await?;
                enrolling
            }
            Err(err) if needs_reauth(&err) => {
                let status = StatusCode::OK;
                return confirm_identity(&pages, &session, &user, false, "/2fa", status, None)
                    .await;
            }
            Err(err) => return Err(err.into()),
        },
    };
    enrolment_page(&pages, &session, &user, &enrolling, StatusCode::OK, None).await
}

/// The secret, its URL and the form for a first code.
async fn enrolment_page(
    pages: &Environment<'_>,
    session: &Session,
    user: &Profile,
    enrolling: &Enrolling,
    status: StatusCode,
    error: Option<String>,
) -> actix_web::Result<HttpResponse> {
    let ctx = context! {
        secret => enrolling.secret.as_str(),
        otpauth_url => enrolling.otpauth_url.as_str(),
        error,
        ..common(session, Some(user)).await?
    };
    Ok(render(pages, status, "two_factor.html", ctx))
}

/// The recovery codes, shown this once.
async fn recovery_codes_page(
    pages: &Environment<'_>,
    session: &Session,
    user: &Profile,
    codes: &[String],
    replaced: bool,
) -> actix_web::Result<HttpResponse> {
    let ctx = context! { codes => Serde(codes), replaced, ..common(session, Some(user)).await? };
    Ok(render(pages, StatusCode::OK, "recovery_codes.html", ctx))
}

/// `POST /2fa/confirm`: a first code from the new secret turns the second factor on (on a
/// fresh login) and shows ten recovery codes. The account's other sessions end: they never
/// proved the new factor.
async fn confirm_two_factor(
    req: HttpRequest,
    pages: web::Data<Environment<'static>>,
    factors: web::Data<SecondFactors>,
    user: AuthUser<Profile>,
    session: Session,
    form: web::Form<CodeForm>,
) -> actix_web::Result<HttpResponse> {
    let Some(enrolling) = session.get::<Enrolling>(ENROLLING).await? else {
        return Ok(see_other("/2fa"));
    };
    let codes = match factors
        .two_factor
        .confirm(&req, &enrolling.secret, &form.code)
        .await
    {
        Ok(codes) => codes,
        Err(Error::InvalidCode) => {
            let error = "That code did not work. Check the secret and try the next code.";
            let status = StatusCode::UNAUTHORIZED;
            let error = Some(error.to_owned());
            return enrolment_page(&pages, &session, &user, &enrolling, status, error).await;
        }
        Err(Error::TooManyCodes { retry_after }) => {
            let secs = whole_secs(retry_after);
            let error = Some(format!(
                "Too many wrong codes. Try again in {secs} seconds."
            ));
            let status = StatusCode::TOO_MANY_REQUESTS;
            let mut page =
                enrolment_page(&pages, &session, &user, &enrolling, status, error).await?;
            page.headers_mut().insert(header::RETRY_AFTER, secs.into());
            return Ok(page);
        }
        Err(err) if needs_reauth(&err) => {
            let status = StatusCode::FORBIDDEN;
            return confirm_identity(&pages, &session, &user, false, "/2fa", status, None).await;
        }
        Err(err) => return Err(err.into()),
    };
    factors.enable(user.id, enrolling.secret, codes.hashes().to_vec());
    session.remove(ENROLLING).await?;
    session.complete_second_factor().await?;
    session.revoke_other_sessions().await?;
    recovery_codes_page(&pages, &session, &user, codes.codes(), false).await
}

/// `POST /2fa/recovery-codes`: ten new recovery codes in place of the old ones, behind a login
/// that proved the password and a code within the fresh window.
async fn new_recovery_codes(
    req: HttpRequest,
    pages: web::Data<Environment<'static>>,
    factors: web::Data<SecondFactors>,
    user: AuthUser<Profile>,
    session: Session,
) -> actix_web::Result<HttpResponse> {
    if !factors.enrolled(user.id) {
        return Ok(see_other("/2fa"));
    }
    match factors.two_factor.regenerate_recovery_codes(&req).await {
        Ok(codes) => {
            factors.replace_recovery_codes(user.id, codes.hashes().to_vec());
            recovery_codes_page(&pages, &session, &user, codes.codes(), true).await
        }
        Err(err) if needs_reauth(&err) => {
            let status = StatusCode::FORBIDDEN;
            confirm_identity(&pages, &session, &user, true, "/2fa", status, None).await
        }
        Err(err) => Err(err.into()),
    }
}

/// The "Confirm it's you" form's fields; missing ones are empty.
#[derive(Deserialize, Default)]
#[serde(default)]
struct ReauthForm {
    password: String,
    code: String,
    next: String,
}

/// `POST /reauth`: the password again (under the login throttle), and a code on an account
/// with a second factor, make the login fresh; then on to `next`.
#[allow(clippy::too_many_arguments)]
async fn reauth(
    req: HttpRequest,
    pages: web::Data<Environment<'static>>,
    users: web::Data<Users>,
    throttle: web::Data<LoginThrottle>,
    factors: web::Data<SecondFactors>,
    user: AuthUser<Profile>,
    session: Session,
    form: web::Form<ReauthForm>,
) -> actix_web::Result<HttpResponse> {
    let next = safe_next(&form.next).unwrap_or("/");
    let two_factor = factors.enrolled(user.id);
    let refused = |status, error: String| {
        confirm_identity(
            &pages,
            &session,
            &user,
            two_factor,
            next,
            status,
            Some(error),
        )
    };
    let id = user.id.to_string();
    let version = users.find(&user.username).map_or(0, |(_, version)| version);
    let attempt = match throttle.attempt(&req, &user.username, Some(&id)).await {
        Ok(attempt) => attempt,
        Err(Error::Throttled { retry_after }) => {
            let secs = whole_secs(retry_after);
            let error = format!("Too many attempts. Try again in {secs} seconds.");
            let mut page = refused(StatusCode::TOO_MANY_REQUESTS, error).await?;
            page.headers_mut().insert(header::RETRY_AFTER, secs.into());
            return Ok(page);
        }
        Err(err) => return Err(err.into()),
    };
    let checked = match users
        .check(attempt.lane(), &user.username, &form.password)
        .await
    {
        Err(PasswordError::Busy) => {
            attempt.not_checked().await?;
            return Err(PasswordError::Busy.into());
        }
        checked => checked?,
    };
    if checked.is_none_or(|profile| profile.id != user.id) {
        attempt.failed().await?;
        return refused(StatusCode::UNAUTHORIZED, "Wrong password".to_owned()).await;
    }
    let device = if two_factor {
        factors
            .two_factor
            .password_verified(&req, attempt, &id, version.to_string())
            .await?
            .device_cookie()
    } else {
        attempt.succeeded().await?
    };
    session.reauthenticate().await?;
    if two_factor {
        match factors.verify(&req, user.id, &form.code).await {
            Ok(()) => session.complete_second_factor().await?,
            Err(Error::InvalidCode) => {
                let error = "That code did not work. Try the next one your app shows.";
                let mut page = refused(StatusCode::UNAUTHORIZED, error.to_owned()).await?;
                page.add_cookie(&device)?;
                return Ok(page);
            }
            Err(Error::TooManyCodes { retry_after }) => {
                let secs = whole_secs(retry_after);
                let error = format!("Too many wrong codes. Try again in {secs} seconds.");
                let mut page = refused(StatusCode::TOO_MANY_REQUESTS, error).await?;
                page.headers_mut().insert(header::RETRY_AFTER, secs.into());
                page.add_cookie(&device)?;
                return Ok(page);
            }
            Err(err) => return Err(err.into()),
        }
    }
    session
        .flash(
            FlashLevel::Info,
            "Thanks: you can go on for the next few minutes.",
        )
        .await?;
    let mut response = see_other(next);
    response.add_cookie(&device)?;
    Ok(response)
}
