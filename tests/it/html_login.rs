//! The html_login example, held to what its users see: pages and redirects over HTTP on both
//! stores, then the same flows in headless Chromium, where the browser's own rules take part
//! (HttpOnly and `Secure` cookies, `Sec-Fetch-Site`, what a restart keeps).

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_login::CSRF_FIELD;
use awc::http::StatusCode;

use crate::support::browser::{Browser, Driver};
use crate::support::example::Example;
use crate::support::mailbox::Mailbox;
use crate::support::redis_server::{shared_redis_url, unique_prefix};

const ALICE: (&str, &str) = ("alice", "alice-password-123");
const BOB: (&str, &str) = ("bob", "bob-password-456");

fn start_in_memory() -> Example {
    let app = Example::start("html_login", &[]);
    assert!(
        app.banner.contains("session store: in memory"),
        "{}",
        app.banner
    );
    app
}

fn start_on_redis() -> Example {
    start_on_redis_with(&[])
}

fn start_on_redis_with(env: &[(&str, &str)]) -> Example {
    let url = shared_redis_url();
    // Keys of its own: another test's alice must not show up in this one's session list.
    let prefix = unique_prefix();
    let mut all = vec![("REDIS_URL", url.as_str()), ("REDIS_KEY_PREFIX", &prefix)];
    all.extend_from_slice(env);
    let app = Example::start("html_login", &all);
    assert!(
        app.banner.contains("session store: Redis"),
        "{}",
        app.banner
    );
    app
}

/// A response, read whole.
struct Reply {
    status: StatusCode,
    location: Option<String>,
    content_type: Option<String>,
    retry_after: Option<String>,
    referrer_policy: Option<String>,
    cache_control: Option<String>,
    set_cookies: Vec<String>,
    body: String,
}

impl Reply {
    /// The session cookie it sets, with its attributes.
    fn session_cookie(&self) -> Option<&str> {
        self.set_cookies
            .iter()
            .map(String::as_str)
            .find(|c| c.starts_with("__Host-id="))
    }

    /// Asserts a `303` to `location`.
    fn assert_see_other(&self, location: &str) {
        assert_eq!(
            (self.status, self.location.as_deref()),
            (StatusCode::SEE_OTHER, Some(location)),
            "{}",
            self.body
        );
    }
}

/// The `name=value` of a `Set-Cookie`, for a `Cookie` header.
fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap_or_default().to_owned()
}

/// A client that follows no redirects, sends neither `Origin` nor `Sec-Fetch-Site` (as old
/// browsers and scripts do), and names itself `agent` in `User-Agent`.
struct Http {
    client: awc::Client,
    base: String,
}

impl Http {
    fn new(app: &Example) -> Self {
        Self::with_agent(app, "html-login-test")
    }

    fn with_agent(app: &Example, agent: &str) -> Self {
        let client = awc::Client::builder()
            .disable_redirects()
            .timeout(Duration::from_secs(30))
            .add_default_header(("user-agent", agent))
            .finish();
        Self {
            client,
            base: app.base.clone(),
        }
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> Reply {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if let Some(cookie) = cookie {
            req = req.insert_header(("cookie", cookie));
        }
        read(
            req.send()
                .await
                .unwrap_or_else(|err| panic!("GET {path}: {err}")),
        )
        .await
    }

    async fn post(&self, path: &str, form: &[(&str, &str)], cookie: Option<&str>) -> Reply {
        let mut req = self.client.post(format!("{}{path}", self.base));
        if let Some(cookie) = cookie {
            req = req.insert_header(("cookie", cookie));
        }
        let res = req.send_form(&form).await;
        read(res.unwrap_or_else(|err| panic!("POST {path}: {err}"))).await
    }

    /// Posts `body` as JSON, as the pages' script does.
    async fn post_json(&self, path: &str, body: &str, cookie: Option<&str>) -> Reply {
        let mut req = self
            .client
            .post(format!("{}{path}", self.base))
            .insert_header(("content-type", "application/json"));
        if let Some(cookie) = cookie {
            req = req.insert_header(("cookie", cookie));
        }
        let res = req.send_body(body.to_owned()).await;
        read(res.unwrap_or_else(|err| panic!("POST {path}: {err}"))).await
    }

    /// Posts the sign-in form.
    async fn log_in(
        &self,
        (username, password): (&str, &str),
        remember: bool,
        next: &str,
    ) -> Reply {
        let mut form = vec![
            ("username", username),
            ("password", password),
            ("next", next),
        ];
        if remember {
            form.push(("remember", "on"));
        }
        self.post("/login", &form, None).await
    }

    /// Signs in and returns the session cookie, `name=value`.
    async fn session(&self, user: (&str, &str)) -> String {
        let reply = self.log_in(user, false, "/").await;
        reply.assert_see_other("/");
        pair(
            reply
                .session_cookie()
                .expect("a login sets the session cookie"),
        )
    }
}

async fn read<S>(mut res: awc::ClientResponse<S>) -> Reply
where
    S: futures_util::Stream<Item = Result<actix_web::web::Bytes, awc::error::PayloadError>> + Unpin,
{
    let header = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (location, content_type, retry_after) = (
        header("location"),
        header("content-type"),
        header("retry-after"),
    );
    let (referrer_policy, cache_control) = (header("referrer-policy"), header("cache-control"));
    let set_cookies = res
        .headers()
        .get_all("set-cookie")
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    let body = res.body().await.expect("the response body");
    Reply {
        status: res.status(),
        location,
        content_type,
        retry_after,
        referrer_policy,
        cache_control,
        set_cookies,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Undoes minijinja's HTML escaping.
fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#x2f;", "/")
        .replace("&amp;", "&")
}

/// The value of the first form field named `name` on the page.
fn field(html: &str, name: &str) -> Option<String> {
    let marker = format!(r#"name="{name}" value=""#);
    let start = html.find(&marker)? + marker.len();
    let len = html[start..].find('"')?;
    Some(unescape(&html[start..start + len]))
}

/// The sign-out form every signed-in page has; returns its CSRF token.
fn sign_out_token(html: &str) -> String {
    let start = html
        .find(r#"<form class="inline" method="post" action="/logout">"#)
        .unwrap_or_else(|| panic!("no sign-out form:\n{html}"));
    let form = &html[start..];
    let form = &form[..form.find("</form>").expect("the form ends")];
    assert!(form.contains("Sign out"), "{form}");
    let token = field(form, CSRF_FIELD).expect("the sign-out form carries the CSRF token");
    assert!(!token.is_empty(), "{form}");
    token
}

/// The entries of the sessions page.
fn session_rows(html: &str) -> Vec<&str> {
    html.split("<li>")
        .skip(1)
        .map(|row| &row[..row.find("</li>").unwrap_or(row.len())])
        .collect()
}

/// Every line of the contract a visitor meets before and at sign-in.
async fn check_sign_in(app: &Example) {
    let http = Http::new(app);
    let page = http.get("/login", None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.content_type
            .as_deref()
            .is_some_and(|ct| ct.starts_with("text/html")),
        "{:?}",
        page.content_type
    );
    let csrf_input = format!(r#"<input type="hidden" name="{CSRF_FIELD}""#);
    for input in [
        r#"<form method="post" action="/login">"#,
        r#"name="username""#,
        r#"<input type="password" name="password""#,
        r#"<input type="checkbox" name="remember">"#,
        &csrf_input,
        r#"<button type="submit">Sign in</button>"#,
    ] {
        assert!(page.body.contains(input), "no {input} in\n{}", page.body);
    }

    // Pages that need a login send visitors to it, and it keeps where they were going.
    http.get("/", None)
        .await
        .assert_see_other("/login?next=%2F");
    http.get("/sessions", None)
        .await
        .assert_see_other("/login?next=%2Fsessions");
    let page = http.get("/login?next=%2Fsessions", None).await;
    assert_eq!(field(&page.body, "next").as_deref(), Some("/sessions"));
    let page = http.get("/login?next=%2F%2Fevil.example", None).await;
    assert_eq!(field(&page.body, "next").as_deref(), Some(""));

    // Wrong password and unknown user get the same page back, with what was typed, escaped.
    for (username, password) in [
        ("alice", "bob-password-456"),
        ("mallory", "alice-password-123"),
        ("<b>alice</b>", "alice-password-123"),
    ] {
        let reply = http.log_in((username, password), false, "/").await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{username}");
        assert_eq!(reply.content_type, page.content_type);
        assert!(
            reply.body.contains("Invalid username or password"),
            "{}",
            reply.body
        );
        assert_eq!(reply.session_cookie(), None, "{username}");
        assert_eq!(field(&reply.body, "username").as_deref(), Some(username));
        assert!(!reply.body.contains("<b>"), "{}", reply.body);
    }

    // The right one: off to `next`, with a cookie that ends with the browser session.
    let reply = http.log_in(ALICE, false, "/sessions").await;
    reply.assert_see_other("/sessions");
    let cookie = reply.session_cookie().expect("the session cookie");
    for attribute in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(
        !cookie.contains("Max-Age") && !cookie.contains("Expires"),
        "{cookie}"
    );
    let alice = pair(cookie);

    // Anything that is not a path on this site ends at home.
    for next in [
        "",
        "//evil.example",
        "https://evil.example/",
        "/\\evil.example",
        "javascript:alert(1)",
    ] {
        let reply = http.log_in(ALICE, false, next).await;
        reply.assert_see_other("/");
    }

    // Keep me signed in: a cookie that outlives the browser session.
    let reply = http.log_in(BOB, true, "/").await;
    reply.assert_see_other("/");
    let cookie = reply.session_cookie().expect("the session cookie");
    assert!(cookie.contains("Max-Age="), "{cookie}");
    let bob = pair(cookie);

    for (cookie, name) in [(&alice, "alice"), (&bob, "bob")] {
        for path in ["/", "/sessions"] {
            let page = http.get(path, Some(cookie)).await;
            assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
            sign_out_token(&page.body);
            if path == "/" {
                let greeting = format!("Signed in as {name}");
                assert!(page.body.contains(&greeting), "{}", page.body);
            }
        }
    }
}

/// The sessions page: this browser marked, the others ended from here.
async fn check_sessions(app: &Example) {
    let a = Http::with_agent(app, "Browser A");
    let b = Http::with_agent(app, "Browser B");
    let alice_a = a.session(ALICE).await;
    let alice_b = b.session(ALICE).await;

    let page = a.get("/sessions", Some(&alice_a)).await;
    assert_eq!(page.status, StatusCode::OK);
    let rows = session_rows(&page.body);
    let row = |agent: &str| {
        rows.iter()
            .find(|row| row.contains(agent))
            .unwrap_or_else(|| panic!("no session of {agent}:\n{}", page.body))
    };
    let (row_a, row_b) = (row("Browser A"), row("Browser B"));
    assert!(row_a.contains("(this browser)"), "{row_a}");
    assert!(!row_a.contains("End"), "{row_a}");
    assert!(!row_b.contains("(this browser)"), "{row_b}");
    let start = row_b.find(r#"action=""#).expect("an End form") + r#"action=""#.len();
    let end = unescape(&row_b[start..start + row_b[start..].find('"').unwrap_or(0)]);
    assert!(
        end.starts_with("/sessions/") && end.ends_with("/end"),
        "{end}"
    );
    let token = field(row_b, CSRF_FIELD).expect("the End form's CSRF token");

    // Without the token, a client that sends no Origin is refused.
    let reply = a.post(&end, &[], Some(&alice_a)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    assert_eq!(b.get("/", Some(&alice_b)).await.status, StatusCode::OK);

    let reply = a.post(&end, &[(CSRF_FIELD, &token)], Some(&alice_a)).await;
    reply.assert_see_other("/sessions");
    let page = a.get("/sessions", Some(&alice_a)).await;
    assert!(page.body.contains("Session ended"), "{}", page.body);
    assert!(!page.body.contains("Browser B"), "{}", page.body);
    b.get("/", Some(&alice_b))
        .await
        .assert_see_other("/login?next=%2F");
    assert_eq!(a.get("/", Some(&alice_a)).await.status, StatusCode::OK);
}

/// Sign out: refused without the token, then signed out, greeted once on the login page.
async fn check_sign_out(app: &Example) {
    let http = Http::new(app);
    let alice = http.session(ALICE).await;
    let page = http.get("/", Some(&alice)).await;
    let token = sign_out_token(&page.body);

    let reply = http.post("/logout", &[], Some(&alice)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    assert_eq!(http.get("/", Some(&alice)).await.status, StatusCode::OK);

    let reply = http
        .post("/logout", &[(CSRF_FIELD, &token)], Some(&alice))
        .await;
    reply.assert_see_other("/login");
    // The flash message's own session, anonymous.
    let visitor = pair(
        reply
            .session_cookie()
            .expect("a cookie for the flash message"),
    );
    let page = http.get("/login", Some(&visitor)).await;
    assert!(page.body.contains("Signed out"), "{}", page.body);
    let page = http.get("/login", Some(&visitor)).await;
    assert!(
        !page.body.contains("Signed out"),
        "shown once:\n{}",
        page.body
    );
    http.get("/", Some(&alice))
        .await
        .assert_see_other("/login?next=%2F");
    http.get("/", Some(&visitor))
        .await
        .assert_see_other("/login?next=%2F");
}

#[actix_web::test]
async fn html_login_over_http_in_memory() {
    let app = start_in_memory();
    check_sign_in(&app).await;
    check_sessions(&app).await;
    check_sign_out(&app).await;
}

#[actix_web::test]
async fn html_login_over_http_on_redis() {
    let app = start_on_redis();
    check_sign_in(&app).await;
    check_sessions(&app).await;
    check_sign_out(&app).await;
}

const NEW_PASSWORD: &str = "a brand new passphrase";

/// Asserts the page for a link that no longer works.
fn assert_link_gone(reply: &Reply, what: &str) {
    assert_eq!(reply.status, StatusCode::GONE, "{what}: {}", reply.body);
    assert!(
        reply.body.contains("This link no longer works"),
        "{what}: {}",
        reply.body
    );
    assert_eq!(reply.session_cookie(), None, "{what}");
}

/// "Forgot your password?" over HTTP: one answer for known and unknown names, a link that a
/// look leaves working, the policy before the link is used, every session ended, a second
/// use refused with `410`.
async fn check_password_reset(app: &Example, mail: &Mailbox) {
    let http = Http::new(app);
    let login = http.get("/login", None).await;
    assert!(
        login
            .body
            .contains(r#"<a href="/password-reset">Forgot your password?</a>"#),
        "{}",
        login.body
    );
    let page = http.get("/password-reset", None).await;
    assert_eq!(page.status, StatusCode::OK);
    let csrf_input = format!(r#"<input type="hidden" name="{CSRF_FIELD}""#);
    for input in [
        r#"<form method="post" action="/password-reset">"#,
        r#"name="username""#,
        &csrf_input,
    ] {
        assert!(page.body.contains(input), "no {input} in\n{}", page.body);
    }

    // Bad links first: a page that says so, with 410, for a look and for a use.
    for secret in ["x", "..", &"A".repeat(43), &"A".repeat(2000)] {
        let path = format!("/password-reset/{secret}");
        assert_link_gone(&http.get(&path, None).await, &path);
        let form = [("password", NEW_PASSWORD)];
        assert_link_gone(&http.post(&path, &form, None).await, &path);
    }

    // Known and unknown names: the same page; only the known one gets mail.
    let known = http
        .post("/password-reset", &[("username", "alice")], None)
        .await;
    let unknown = http
        .post("/password-reset", &[("username", "mallory")], None)
        .await;
    assert_eq!(known.status, StatusCode::OK, "{}", known.body);
    assert_eq!(
        (unknown.status, &unknown.body, &unknown.set_cookies),
        (known.status, &known.body, &known.set_cookies)
    );
    assert!(known.body.contains("Check your mail"), "{}", known.body);
    let message = mail.next_to("alice@example.test").await;
    assert!(message.subject.contains("password"), "{}", message.subject);
    let (url, secret) = message.link(&app.base, "password-reset");
    assert_eq!(url, format!("{}/password-reset/{secret}", app.base));
    mail.assert_empty_for(Duration::from_millis(300)).await;

    let before = http.session(ALICE).await;
    let path = format!("/password-reset/{secret}");
    // Looking shows the form, however often, and keeps the secret out of caches and Referers.
    for _ in 0..2 {
        let page = http.get(&path, None).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let action = format!(r#"<form method="post" action="{path}">"#);
        for needle in [action.as_str(), &csrf_input, r#"name="password""#, "alice"] {
            assert!(page.body.contains(needle), "no {needle} in\n{}", page.body);
        }
        assert_eq!(page.referrer_policy.as_deref(), Some("no-referrer"));
        assert_eq!(page.cache_control.as_deref(), Some("no-store"));
    }
    // A password the policy refuses: the form again, and the link still works.
    let weak = http.post(&path, &[("password", "alice")], None).await;
    assert_eq!(weak.status, StatusCode::BAD_REQUEST, "{}", weak.body);
    assert!(
        weak.body.contains("Please choose another password"),
        "{}",
        weak.body
    );
    assert_eq!(http.get(&path, None).await.status, StatusCode::OK);

    // The new password, from a browser signed in to the account (which sends the form's CSRF
    // token, having no `Origin`): every session ends, this one's cookie is replaced, and the
    // browser goes to sign in, told why.
    let other = http.session(ALICE).await;
    let form = http.get(&path, Some(&before)).await;
    let token = field(&form.body, CSRF_FIELD).expect("the form carries the CSRF token");
    assert!(!token.is_empty(), "{}", form.body);
    let fields = [("password", NEW_PASSWORD), (CSRF_FIELD, token.as_str())];
    let done = http.post(&path, &fields, Some(&before)).await;
    done.assert_see_other("/login");
    let flash = pair(
        done.session_cookie()
            .expect("a session for the flash message"),
    );
    assert_ne!(flash, before);
    http.get("/", Some(&other))
        .await
        .assert_see_other("/login?next=%2F");
    let page = http.get("/login", Some(&flash)).await;
    assert!(
        page.body.contains("Your password was changed"),
        "{}",
        page.body
    );
    http.get("/", Some(&before))
        .await
        .assert_see_other("/login?next=%2F");

    // Used once: gone, for a look and for another use.
    assert_link_gone(&http.get(&path, None).await, "a look after the use");
    let again = http
        .post(&path, &[("password", "yet another passphrase")], None)
        .await;
    assert_link_gone(&again, "a second use");

    // The old password is refused, the new one works.
    let old = http.log_in(ALICE, false, "/").await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED, "{}", old.body);
    http.session(("alice", NEW_PASSWORD)).await;
}

#[actix_web::test]
async fn html_login_password_reset_in_memory() {
    let mail = Mailbox::new();
    let app = Example::start("html_login", &[mail.env()]);
    check_password_reset(&app, &mail).await;
}

#[actix_web::test]
async fn html_login_password_reset_on_redis() {
    let mail = Mailbox::new();
    let app = start_on_redis_with(&[mail.env()]);
    check_password_reset(&app, &mail).await;
}

/// Five reset links an hour per account by default; the sixth request gets the form back with
/// `429` and `Retry-After`, for a name no account has just the same.
#[actix_web::test]
async fn html_login_limits_reset_links_alike_for_unknown_names() {
    let mail = Mailbox::new();
    let app = Example::start("html_login", &[mail.env()]);
    let http = Http::new(&app);
    for name in ["bob", "nobody"] {
        for _ in 0..5 {
            let reply = http
                .post("/password-reset", &[("username", name)], None)
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{name}: {}", reply.body);
        }
        let reply = http
            .post("/password-reset", &[("username", name)], None)
            .await;
        assert_eq!(
            reply.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{name}: {}",
            reply.body
        );
        assert!(reply.body.contains("Try again in"), "{}", reply.body);
        let retry: u64 = reply.retry_after.as_deref().unwrap().parse().unwrap();
        assert!((1..=3600).contains(&retry), "{retry}");
    }
}

#[actix_web::test]
async fn html_login_throttles_password_guessing() {
    let app = start_in_memory();
    let http = Http::new(&app);
    // The crate's default: 5 failures per account and address.
    for _ in 0..5 {
        let reply = http.log_in(("alice", "guess"), false, "/").await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    for user in [("alice", "guess"), ALICE] {
        let reply = http.log_in(user, false, "/").await;
        assert_eq!(
            reply.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{}",
            reply.body
        );
        assert!(reply.body.contains("Too many attempts"), "{}", reply.body);
        assert!(reply.retry_after.is_some());
        assert_eq!(reply.session_cookie(), None);
    }
}

// The second factor: enrolment, the code page, recovery codes, trusted browsers, sudo mode.

/// An authenticator app: TOTP codes for a secret, each from a time step not used before (as a
/// person waits for the next code), and the last one, to try again.
struct Authenticator {
    secret: String,
    used: Vec<u64>,
    last: String,
}

impl Authenticator {
    fn new(secret: &str) -> Self {
        Self {
            secret: secret.to_owned(),
            used: Vec::new(),
            last: String::new(),
        }
    }

    /// A code the app has not accepted yet: the current step's, or the next one's (accepted
    /// for clocks a little ahead); past both, the next step's once it comes.
    async fn code(&mut self) -> String {
        loop {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let step = now / 30;
            if let Some(step) = [step, step + 1]
                .into_iter()
                .find(|s| !self.used.contains(s))
            {
                self.used.push(step);
                self.last = totp_rs::Builder::new()
                    .with_secret(totp_rs::Secret::try_from_base32(&self.secret).unwrap())
                    .build()
                    .unwrap()
                    .generate(step * 30)
                    .to_string();
                return self.last.clone();
            }
            actix_web::rt::time::sleep(Duration::from_secs(30 - now % 30)).await;
        }
    }
}

/// The text between `start` and the next `end` on the page, unescaped.
fn between(html: &str, start: &str, end: &str) -> String {
    let from = html
        .find(start)
        .unwrap_or_else(|| panic!("no {start} in\n{html}"))
        + start.len();
    let len = html[from..].find(end).expect("the end marker");
    unescape(&html[from..from + len])
}

/// The recovery codes a page lists.
fn recovery_codes(html: &str) -> Vec<String> {
    let list = between(html, r#"<ul id="recovery-codes">"#, "</ul>");
    list.split("<code>")
        .skip(1)
        .map(|item| item[..item.find("</code>").expect("the code ends")].to_owned())
        .collect()
}

/// The device cookie a response sets, `name=value`.
fn device_cookie(reply: &Reply) -> Option<String> {
    reply
        .set_cookies
        .iter()
        .find(|c| c.starts_with("__Host-device="))
        .map(|c| pair(c))
}

impl Http {
    /// Opens `page` with `cookie` and posts `form` to `action` with the page's CSRF token, as
    /// its form would.
    async fn submit(&self, page: &str, action: &str, form: &[(&str, &str)], cookie: &str) -> Reply {
        let shown = self.get(page, Some(cookie)).await;
        assert!(shown.status.is_success(), "{page}: {}", shown.body);
        let token = field(&shown.body, CSRF_FIELD)
            .unwrap_or_else(|| panic!("no CSRF field on {page}:\n{}", shown.body));
        let mut fields = form.to_vec();
        fields.push((CSRF_FIELD, &token));
        self.post(action, &fields, Some(cookie)).await
    }

    /// Enrols the signed-in `cookie`'s account from the two-factor page: its authenticator,
    /// its recovery codes, and the session cookie the confirmation replaced it with.
    async fn enrol(&self, cookie: &str) -> (Authenticator, Vec<String>, String) {
        let page = self.get("/2fa", Some(cookie)).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let secret = between(&page.body, r#"<code id="totp-secret">"#, "</code>");
        let mut app = Authenticator::new(&secret);
        let code = app.code().await;
        let reply = self
            .submit("/2fa", "/2fa/confirm", &[("code", &code)], cookie)
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert!(
            reply.body.contains("Save these recovery codes"),
            "{}",
            reply.body
        );
        let codes = recovery_codes(&reply.body);
        let cookie = pair(reply.session_cookie().expect("a new session cookie"));
        (app, codes, cookie)
    }

    /// Posts alice's password (with `cookie`, a device cookie, if any): the `303` and the
    /// session cookie it sets.
    async fn password(&self, next: &str, cookie: Option<&str>) -> (Reply, String) {
        let form = [("username", ALICE.0), ("password", ALICE.1), ("next", next)];
        let reply = self.post("/login", &form, cookie).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
        let session = pair(reply.session_cookie().expect("a session cookie"));
        (reply, session)
    }

    /// Posts `code` from the code page of the half login `half`.
    async fn code(&self, half: &str, code: &str, next: &str) -> Reply {
        let page = format!("/login/second-factor?next={}", next.replace('/', "%2F"));
        let form = [("code", code), ("next", next)];
        self.submit(&page, "/login/second-factor", &form, half)
            .await
    }
}

/// Enrolment from the page, then every way a code can go wrong at sign-in, and the ways it
/// goes right. Four wrong codes in all, one under the limit.
async fn check_second_factor(app: &Example) {
    let http = Http::new(app);
    let alice = http.session(ALICE).await;
    let page = http.get("/", Some(&alice)).await;
    assert!(
        page.body
            .contains(r#"<a href="/2fa">Two-factor authentication</a>"#),
        "{}",
        page.body
    );

    // The secret and its URL as text, the same on a second look, and the form for a code.
    let page = http.get("/2fa", Some(&alice)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let secret = between(&page.body, r#"<code id="totp-secret">"#, "</code>");
    assert_eq!(secret.len(), 32, "{secret}");
    let url = between(&page.body, r#"<code id="otpauth-url">"#, "</code>");
    assert!(url.starts_with("otpauth://totp/"), "{url}");
    assert!(url.contains("alice") && url.contains(&secret), "{url}");
    assert!(
        page.body
            .contains(r#"<form method="post" action="/2fa/confirm">"#),
        "{}",
        page.body
    );
    let again = http.get("/2fa", Some(&alice)).await;
    assert!(again.body.contains(&secret), "{}", again.body);

    // A wrong first code: the page again, saying so; the second factor stays off.
    let reply = http
        .submit("/2fa", "/2fa/confirm", &[("code", "000000")], &alice)
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
    assert!(
        reply.body.contains("That code did not work"),
        "{}",
        reply.body
    );
    assert!(reply.body.contains(&secret), "{}", reply.body);
    http.session(ALICE).await;

    let (mut phone, codes, alice) = http.enrol(&alice).await;
    assert_eq!(codes.len(), 10, "{codes:?}");
    assert!(codes.iter().all(|c| c.len() == 19), "{codes:?}");
    let page = http.get("/2fa", Some(&alice)).await;
    assert!(
        page.body.contains("Two-factor authentication is on"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("10 of your recovery codes"),
        "{}",
        page.body
    );
    assert!(!page.body.contains(&secret), "{}", page.body);

    // The password alone: the code page, with where the browser was going.
    let (reply, half) = http.password("/sessions", None).await;
    reply.assert_see_other("/login/second-factor?next=%2Fsessions");
    // A half login sees no page: each sends it to the code page, never to sign in.
    for (path, next) in [
        ("/", "%2F"),
        ("/sessions", "%2Fsessions"),
        ("/2fa", "%2F2fa"),
    ] {
        http.get(path, Some(&half))
            .await
            .assert_see_other(&format!("/login/second-factor?next={next}"));
    }
    let page = http
        .get("/login/second-factor?next=%2Fsessions", Some(&half))
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    for needle in [
        "Enter the code from your authenticator app",
        r#"<form method="post" action="/login/second-factor">"#,
        r#"<input type="checkbox" name="trust_browser">"#,
        "Trust this browser for 30 days",
        "recovery codes",
    ] {
        assert!(page.body.contains(needle), "no {needle} in\n{}", page.body);
    }
    assert_eq!(field(&page.body, "next").as_deref(), Some("/sessions"));
    // Without a half login, the code page sends the visitor to sign in.
    http.get("/login/second-factor?next=%2Fsessions", None)
        .await
        .assert_see_other("/login?next=%2Fsessions");

    // A wrong code: the form again, saying so, and still no login.
    let reply = http.code(&half, "123456", "/sessions").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
    assert!(
        reply.body.contains("That code did not work"),
        "{}",
        reply.body
    );
    assert!(reply.body.contains("Enter the code"), "{}", reply.body);
    assert_eq!(reply.session_cookie(), None);
    assert_eq!(field(&reply.body, "next").as_deref(), Some("/sessions"));

    // The right one: signed in on a new cookie, where the browser was going.
    let code = phone.code().await;
    let reply = http.code(&half, &code, "/sessions").await;
    reply.assert_see_other("/sessions");
    let full = pair(reply.session_cookie().expect("a new session cookie"));
    assert_ne!(full, half);
    let page = http.get("/", Some(&full)).await;
    assert!(page.body.contains("Signed in as alice"), "{}", page.body);
    // Signed in, the code page only sends the browser on.
    http.get("/login/second-factor?next=%2Fsessions", Some(&full))
        .await
        .assert_see_other("/sessions");
    http.get("/", Some(&half))
        .await
        .assert_see_other("/login?next=%2F");

    // The same code again, on a new half login: refused.
    let (_, half) = http.password("/", None).await;
    let reply = http.code(&half, &phone.last, "/").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);

    // A recovery code, typed as people do: works once.
    let typed = codes[0].to_uppercase().replace('-', " ");
    let reply = http.code(&half, &typed, "/").await;
    reply.assert_see_other("/");
    let full = pair(reply.session_cookie().expect("a new session cookie"));
    let page = http.get("/2fa", Some(&full)).await;
    assert!(
        page.body.contains("9 of your recovery codes"),
        "{}",
        page.body
    );
    let (_, half) = http.password("/", None).await;
    let reply = http.code(&half, &codes[0], "/").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
    let reply = http.code(&half, &codes[1], "/").await;
    reply.assert_see_other("/");
}

#[actix_web::test]
async fn html_login_second_factor_over_http_in_memory() {
    check_second_factor(&start_in_memory()).await;
}

#[actix_web::test]
async fn html_login_second_factor_over_http_on_redis() {
    check_second_factor(&start_on_redis()).await;
}

/// Five wrong codes for an account, then the code page with `429` and `Retry-After`, even for
/// the right code.
#[actix_web::test]
async fn html_login_throttles_second_factor_guessing() {
    let app = start_in_memory();
    let http = Http::new(&app);
    let alice = http.session(ALICE).await;
    let (mut phone, _, _) = http.enrol(&alice).await;
    let (_, half) = http.password("/", None).await;
    for guess in ["111111", "222222", "333333", "444444", "555555"] {
        let reply = http.code(&half, guess, "/").await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
    }
    let code = phone.code().await;
    let reply = http.code(&half, &code, "/").await;
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        reply.body
    );
    assert!(
        reply.body.contains("Too many wrong codes"),
        "{}",
        reply.body
    );
    assert!(reply.body.contains("Enter the code"), "{}", reply.body);
    let retry: u64 = reply.retry_after.as_deref().unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry), "{retry}");
    assert_eq!(reply.session_cookie(), None);
    http.get("/", Some(&half))
        .await
        .assert_see_other("/login/second-factor?next=%2F");
}

/// Sudo mode from the pages: enrolment after the fresh window asks for the password again;
/// a trusted browser skips the code at sign-in, but new recovery codes ask for the password
/// and a code, and then the old codes stop working.
#[actix_web::test]
async fn html_login_asks_again_before_two_factor_changes_and_trusts_browsers() {
    let app = Example::start("html_login", &[("FRESH_WINDOW_SECS", "2")]);
    let http = Http::new(&app);
    let alice = http.session(ALICE).await;
    actix_web::rt::time::sleep(Duration::from_millis(2500)).await;

    // Not fresh: the page asks for the password (alone: no second factor yet), not a code.
    let page = http.get("/2fa", Some(&alice)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("Confirm it's you"), "{}", page.body);
    assert!(!page.body.contains("totp-secret"), "{}", page.body);
    assert!(!page.body.contains(r#"name="code""#), "{}", page.body);
    assert_eq!(field(&page.body, "next").as_deref(), Some("/2fa"));
    let wrong = [("password", "guess"), ("next", "/2fa")];
    let reply = http.submit("/2fa", "/reauth", &wrong, &alice).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
    assert!(reply.body.contains("Wrong password"), "{}", reply.body);
    let right = [("password", ALICE.1), ("next", "/2fa")];
    let reply = http.submit("/2fa", "/reauth", &right, &alice).await;
    reply.assert_see_other("/2fa");
    let alice = pair(reply.session_cookie().expect("a new session cookie"));
    let (mut phone, codes, _) = http.enrol(&alice).await;

    // "Trust this browser": the next sign-in with its device cookie needs no code.
    let (reply, half) = http.password("/", None).await;
    let device = device_cookie(&reply).expect("a device cookie");
    let both = format!("{half}; {device}");
    let code = phone.code().await;
    let form = [
        ("code", code.as_str()),
        ("next", "/"),
        ("trust_browser", "on"),
    ];
    let reply = http
        .submit(
            "/login/second-factor?next=%2F",
            "/login/second-factor",
            &form,
            &both,
        )
        .await;
    reply.assert_see_other("/");
    let device = device_cookie(&reply).expect("the trusted device cookie");
    let (reply, trusted) = http.password("/sessions", Some(&device)).await;
    reply.assert_see_other("/sessions");
    let page = http.get("/", Some(&trusted)).await;
    assert!(page.body.contains("Signed in as alice"), "{}", page.body);
    // Without the cookie, the code again.
    let (reply, _) = http.password("/", None).await;
    reply.assert_see_other("/login/second-factor?next=%2F");

    // New recovery codes: the trusted login proved no code, so the page asks for both.
    let reply = http
        .submit("/2fa", "/2fa/recovery-codes", &[], &trusted)
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    assert!(reply.body.contains("Confirm it's you"), "{}", reply.body);
    assert!(reply.body.contains(r#"name="code""#), "{}", reply.body);
    let code = phone.code().await;
    let form = [
        ("password", ALICE.1),
        ("code", code.as_str()),
        ("next", "/2fa"),
    ];
    let reply = http.submit("/2fa", "/reauth", &form, &trusted).await;
    reply.assert_see_other("/2fa");
    let alice = pair(reply.session_cookie().expect("a new session cookie"));
    let reply = http
        .submit("/2fa", "/2fa/recovery-codes", &[], &alice)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(reply.body.contains("no longer work"), "{}", reply.body);
    let new_codes = recovery_codes(&reply.body);
    assert_eq!(new_codes.len(), 10);

    let (_, half) = http.password("/", None).await;
    let reply = http.code(&half, &codes[0], "/").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
    http.code(&half, &new_codes[0], "/")
        .await
        .assert_see_other("/");
}

/// The second factor as a person meets it: enrolment with the secret from the page, then
/// signing in with the password and a code, and with a recovery code.
#[actix_web::test]
async fn browser_enrols_a_second_factor_and_signs_in_with_codes() {
    let app = start_in_memory();
    let mut driver = Driver::start();
    let browser = driver.browser().await;
    sign_in_from_login_page(&browser, &app, false).await;
    browser.click("a[href='/2fa']").await;
    browser.wait_for_url(&app.url("/2fa")).await;
    let secret = browser
        .script("return document.getElementById('totp-secret').textContent")
        .await;
    let mut phone = Authenticator::new(secret.as_str().expect("the secret on the page"));
    browser.fill("input[name=code]", &phone.code().await).await;
    browser.click("form[action='/2fa/confirm'] button").await;
    browser.wait_for_text("Save these recovery codes").await;
    let codes = browser
        .script(
            "return Array.from(document.querySelectorAll('#recovery-codes code'))\
             .map(c => c.textContent)",
        )
        .await;
    let codes: Vec<String> = serde_json::from_value(codes).expect("the codes");
    assert_eq!(codes.len(), 10, "{codes:?}");

    for code in [phone.code().await, codes[3].clone()] {
        browser.click("nav form[action='/logout'] button").await;
        browser.wait_for_url(&app.url("/login")).await;
        sign_in(&browser, ALICE, false).await;
        let text = browser
            .wait_for_url(&app.url("/login/second-factor?next=%2F"))
            .await;
        assert!(
            text.contains("Enter the code from your authenticator app"),
            "{text}"
        );
        browser.fill("input[name=code]", &code).await;
        browser
            .click("form[action='/login/second-factor'] button")
            .await;
        let text = browser.wait_for_url(&app.url("/")).await;
        assert!(text.contains("Signed in as alice"), "{text}");
    }
    browser.quit().await;
}

/// Signs in through the form on the page shown now, as a person would.
async fn sign_in(browser: &Browser, (username, password): (&str, &str), remember: bool) {
    browser.fill("input[name=username]", username).await;
    browser.fill("input[name=password]", password).await;
    if remember {
        browser.click("input[name=remember]").await;
    }
    browser.click("form[action='/login'] button").await;
}

/// Opens the login page and signs in as alice, which ends on the home page.
async fn sign_in_from_login_page(browser: &Browser, app: &Example, remember: bool) {
    browser.goto(&app.url("/login")).await;
    sign_in(browser, ALICE, remember).await;
    let text = browser.wait_for_url(&app.url("/")).await;
    assert!(text.contains("Signed in as alice"), "{text}");
}

fn session_cookie<'a>(
    cookies: &'a [fantoccini::cookies::Cookie<'static>],
) -> Option<&'a fantoccini::cookies::Cookie<'static>> {
    cookies.iter().find(|c| c.name() == "__Host-id")
}

#[actix_web::test]
async fn browser_signs_in_and_hides_the_session_cookie_from_scripts() {
    let app = start_in_memory();
    let mut driver = Driver::start();
    let browser = driver.browser().await;
    sign_in_from_login_page(&browser, &app, false).await;

    let cookies = browser.cookies().await;
    let cookie = session_cookie(&cookies).expect("the browser keeps the session cookie");
    assert_eq!(cookie.http_only(), Some(true));
    let visible = browser.script("return document.cookie").await;
    let visible = visible.as_str().unwrap_or_default();
    assert!(!visible.contains("__Host-id"), "{visible}");
    browser.quit().await;
}

#[actix_web::test]
async fn browser_returns_to_the_page_it_asked_for_and_never_leaves_the_site() {
    let app = start_in_memory();
    let mut driver = Driver::start();
    let browser = driver.browser().await;
    browser.goto(&app.url("/sessions")).await;
    browser
        .wait_for_url(&app.url("/login?next=%2Fsessions"))
        .await;
    sign_in(&browser, ALICE, false).await;
    let text = browser.wait_for_url(&app.url("/sessions")).await;
    assert!(text.contains("(this browser)"), "{text}");

    for next in ["%2F%2Fevil.example", "https%3A%2F%2Fevil.example%2F"] {
        let login = app.url(&format!("/login?next={next}"));
        browser.goto(&login).await;
        sign_in(&browser, ALICE, false).await;
        // Wherever it goes, it goes there at once: no waiting for a host that does not exist.
        let landed = browser.wait_to_leave(&login).await;
        assert_eq!(landed, app.url("/"), "next={next}");
        let text = browser.text().await;
        assert!(text.contains("Signed in as alice"), "{text}");
    }
    browser.quit().await;
}

#[actix_web::test]
async fn browser_ends_another_browsers_session() {
    let app = start_on_redis();
    let mut driver = Driver::start();
    let a = driver.browser().await;
    let b = driver.browser().await;
    sign_in_from_login_page(&a, &app, false).await;
    sign_in_from_login_page(&b, &app, false).await;

    a.goto(&app.url("/sessions")).await;
    let text = a.text().await;
    assert!(text.contains("(this browser)"), "{text}");
    let end_buttons = "form[action$='/end'] button";
    assert_eq!(
        a.count(end_buttons).await,
        1,
        "only B's session has one: {text}"
    );
    a.click(end_buttons).await;
    a.wait_for_text("Session ended").await;
    assert_eq!(a.count(end_buttons).await, 0);

    // B's next click finds itself signed out.
    b.click("a[href='/sessions']").await;
    let text = b.wait_for_url(&app.url("/login?next=%2Fsessions")).await;
    assert!(text.contains("Sign in"), "{text}");

    a.goto(&app.url("/")).await;
    assert!(a.text().await.contains("Signed in as alice"));
    a.quit().await;
    b.quit().await;
}

/// Pages served from another port of the app's host: another origin, but the same site, so
/// the browser sends the app's `SameSite=Lax` cookie with the forms they submit. Stops
/// serving when dropped.
struct OtherOrigin {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl OtherOrigin {
    /// Serves `pages`, `(path, html)`; 404 for any other path.
    fn serve(pages: Vec<(&'static str, String)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port for the other origin");
        let port = listener.local_addr().expect("its address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let pages = Arc::new(pages);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let pages = Arc::clone(&pages);
                // A thread each: browsers open connections they may never send a request on.
                std::thread::spawn(move || answer(stream, &pages));
            }
        });
        Self { port, stop }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for OtherOrigin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn answer(mut stream: TcpStream, pages: &[(&'static str, String)]) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut head = Vec::new();
    let mut chunk = [0; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or_default();
    let (status, body) = match pages.iter().find(|(p, _)| *p == path) {
        Some((_, html)) => ("200 OK", html.as_str()),
        None => ("404 Not Found", ""),
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// A page that submits a form to `action` as soon as it loads.
fn auto_submit(action: &str, fields: &[(&str, &str)]) -> String {
    let inputs: String = fields
        .iter()
        .map(|(name, value)| format!(r#"<input type="hidden" name="{name}" value="{value}">"#))
        .collect();
    format!(
        r#"<!doctype html><form method="post" action="{action}">{inputs}</form>
<script>document.forms[0].submit()</script>"#
    )
}

#[actix_web::test]
async fn another_origin_of_the_same_host_can_neither_sign_out_nor_sign_in() {
    let app = start_in_memory();
    let other = OtherOrigin::serve(vec![
        (
            "/sign-out",
            auto_submit(&app.url("/logout"), &[(CSRF_FIELD, "")]),
        ),
        (
            "/sign-in",
            auto_submit(
                &app.url("/login"),
                &[("username", ALICE.0), ("password", ALICE.1)],
            ),
        ),
    ]);
    assert_ne!(other.port, app.port);
    let mut driver = Driver::start();

    let victim = driver.browser().await;
    sign_in_from_login_page(&victim, &app, false).await;
    victim.goto(&other.url("/sign-out")).await;
    // The forged form did reach the app, which refused it.
    let landed = victim.wait_to_leave(&other.url("/sign-out")).await;
    assert_eq!(landed, app.url("/logout"));
    let text = victim.text().await;
    assert!(text.contains("csrf_rejected"), "{text}");
    victim.goto(&app.url("/")).await;
    assert_eq!(victim.url().await, app.url("/"));
    assert!(victim.text().await.contains("Signed in as alice"));

    // Login CSRF: a browser without a session is not signed in to the account the page names.
    let fresh = driver.browser().await;
    fresh.goto(&other.url("/sign-in")).await;
    let landed = fresh.wait_to_leave(&other.url("/sign-in")).await;
    assert_eq!(landed, app.url("/login"));
    let text = fresh.text().await;
    assert!(text.contains("csrf_rejected"), "{text}");
    assert!(session_cookie(&fresh.cookies().await).is_none());
    fresh.goto(&app.url("/")).await;
    assert_eq!(fresh.url().await, app.url("/login?next=%2F"));

    victim.quit().await;
    fresh.quit().await;
}

#[actix_web::test]
async fn remember_me_survives_a_browser_restart_and_a_normal_login_does_not() {
    let app = start_in_memory();
    let mut driver = Driver::start();
    let remembered = driver.new_profile();
    let forgotten = driver.new_profile();
    for (profile, remember) in [(&remembered, true), (&forgotten, false)] {
        let browser = driver.browser_with_profile(profile).await;
        sign_in_from_login_page(&browser, &app, remember).await;
        // Both hold the session before the restart; only one cookie has an expiry.
        let cookies = browser.cookies().await;
        let cookie = session_cookie(&cookies).expect("the session cookie");
        assert_eq!(cookie.expires().is_some(), remember, "{cookie:?}");
        browser.quit().await;
    }

    let browser = driver.browser_with_profile(&remembered).await;
    browser.goto(&app.url("/")).await;
    assert_eq!(browser.url().await, app.url("/"));
    assert!(browser.text().await.contains("Signed in as alice"));
    browser.quit().await;

    let browser = driver.browser_with_profile(&forgotten).await;
    browser.goto(&app.url("/")).await;
    assert_eq!(browser.url().await, app.url("/login?next=%2F"));
    browser.quit().await;
}

#[actix_web::test]
async fn browser_signs_out_and_is_told_so() {
    let app = start_in_memory();
    let mut driver = Driver::start();
    let browser = driver.browser().await;
    sign_in_from_login_page(&browser, &app, false).await;
    browser.click("nav form[action='/logout'] button").await;
    let text = browser.wait_for_url(&app.url("/login")).await;
    assert!(text.contains("Signed out"), "{text}");

    browser.goto(&app.url("/")).await;
    let text = browser.wait_for_url(&app.url("/login?next=%2F")).await;
    assert!(!text.contains("Signed out"), "shown once: {text}");
    browser.quit().await;
}

/// "Forgot your password?" as a person does it: from the login page to the mail, the link,
/// the new password, and signing in with it while the old one is refused.
#[actix_web::test]
async fn browser_resets_a_forgotten_password() {
    let mail = Mailbox::new();
    let app = Example::start("html_login", &[mail.env()]);
    let mut driver = Driver::start();
    let browser = driver.browser().await;
    browser.goto(&app.url("/login")).await;
    browser.click("a[href='/password-reset']").await;
    browser.wait_for_url(&app.url("/password-reset")).await;
    browser.fill("input[name=username]", "alice").await;
    browser.click("form[action='/password-reset'] button").await;
    browser.wait_for_text("Check your mail").await;

    let (url, _) = mail
        .next_to("alice@example.test")
        .await
        .link(&app.base, "password-reset");
    browser.goto(&url).await;
    let text = browser.wait_for_text("Choose a new password").await;
    assert!(text.contains("alice"), "{text}");
    browser.fill("input[name=password]", NEW_PASSWORD).await;
    browser.click("form[method=post] button").await;
    let text = browser.wait_for_url(&app.url("/login")).await;
    assert!(text.contains("Your password was changed"), "{text}");

    sign_in(&browser, ALICE, false).await;
    browser.wait_for_text("Invalid username or password").await;
    browser.goto(&app.url("/login")).await;
    sign_in(&browser, ("alice", NEW_PASSWORD), false).await;
    let text = browser.wait_for_url(&app.url("/")).await;
    assert!(text.contains("Signed in as alice"), "{text}");

    // The link was used: opening it again says so.
    browser.goto(&url).await;
    browser.wait_for_text("This link no longer works").await;
    browser.quit().await;
}

/// The example's page `path` at `http://localhost:<port>`: WebAuthn takes no IP address as the
/// site's name, and the example's relying party is `localhost`.
fn at_localhost(app: &Example, path: &str) -> String {
    format!("http://localhost:{}{path}", app.port)
}

/// A browser with a virtual authenticator, signed in as alice with her password at
/// `localhost`. Returns the browser and the authenticator's id.
async fn alice_with_authenticator(driver: &mut Driver, app: &Example) -> (Browser, String) {
    let browser = driver.browser().await;
    let authenticator = browser.add_virtual_authenticator().await;
    browser.goto(&at_localhost(app, "/login")).await;
    sign_in(&browser, ALICE, false).await;
    let text = browser.wait_for_url(&at_localhost(app, "/")).await;
    assert!(text.contains("Signed in as alice"), "{text}");
    (browser, authenticator)
}

async fn add_passkey(browser: &Browser) {
    browser.click("#add-passkey").await;
    browser.wait_for_text("Passkey added").await;
}

/// Signs out; the login page loads. (With a passkey on the device, its autofill may sign in
/// again at once: the virtual authenticator approves every prompt.)
async fn sign_out_at_localhost(browser: &Browser) {
    browser.click("nav form[action='/logout'] button").await;
}

/// Register, sign out, sign in with the passkey (through the autofill, then the button); a
/// browser without it cannot; once removed from the account, the passkey signs in no more.
async fn check_passkey_flow(app: &Example) {
    let mut driver = Driver::start();
    let (browser, authenticator) = alice_with_authenticator(&mut driver, app).await;
    assert!(browser.text().await.contains("You have no passkeys yet."));
    add_passkey(&browser).await;
    let held = browser.virtual_credentials(&authenticator).await;
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0]["isResidentCredential"], serde_json::json!(true));
    browser.goto(&at_localhost(app, "/")).await;
    assert!(browser.text().await.contains("You have 1 passkey."));

    // The login page's autofill (conditional mediation) offers the passkey as it loads, and
    // the virtual authenticator takes it: signed in again, in a new session, without a click.
    let before = session_cookie(&browser.cookies().await).map(|c| c.value().to_owned());
    sign_out_at_localhost(&browser).await;
    browser
        .wait_until("signed in again by the autofill", async |browser| {
            let now = session_cookie(&browser.cookies().await).map(|c| c.value().to_owned());
            let home = browser.url().await == at_localhost(app, "/");
            (home
                && now.is_some()
                && now != before
                && browser.text().await.contains("Signed in as alice"))
            .then_some(())
        })
        .await;

    // The button. First a copy of the passkey with an old signature counter, which the
    // autofill offers as the page loads and the site refuses as a clone; the autofill is then
    // done, and the button has the page to itself.
    let passkey = browser.virtual_credentials(&authenticator).await.remove(0);
    let mut stale = passkey.clone();
    stale["signCount"] = serde_json::json!(0);
    browser.remove_virtual_credentials(&authenticator).await;
    browser.add_virtual_credential(&authenticator, stale).await;
    sign_out_at_localhost(&browser).await;
    browser
        .wait_for_text("That passkey looks copied; it was refused.")
        .await;
    assert!(browser.text().await.contains("Signed out"));
    let autocomplete = browser
        .script("return document.querySelector('input[name=username]').autocomplete")
        .await;
    assert_eq!(autocomplete, serde_json::json!("username webauthn"));
    // The passkey as it is now, with the counter the autofill's sign-in moved.
    browser.remove_virtual_credentials(&authenticator).await;
    browser
        .add_virtual_credential(&authenticator, passkey)
        .await;
    browser.click("#passkey-sign-in").await;
    let text = browser.wait_for_url(&at_localhost(app, "/")).await;
    assert!(text.contains("Signed in as alice"), "{text}");

    // Another browser, whose authenticator holds no passkey for the site, stays out.
    let other = driver.browser().await;
    other.add_virtual_authenticator().await;
    other.goto(&at_localhost(app, "/login")).await;
    other.click("#passkey-sign-in").await;
    let text = other.wait_for_text("No passkey was used.").await;
    assert!(!text.contains("Signed in"), "{text}");
    other.goto(&at_localhost(app, "/")).await;
    other
        .wait_for_url(&at_localhost(app, "/login?next=%2F"))
        .await;
    other.quit().await;

    // Removed from the account, the passkey the device still holds is refused: by the
    // autofill as the login page loads, and by the button. Removing it is a credentials
    // change: the account's other sessions end, this browser's goes on.
    let elsewhere = Http::new(app);
    let alice_elsewhere = elsewhere.session(ALICE).await;
    assert_eq!(
        elsewhere.get("/", Some(&alice_elsewhere)).await.status,
        StatusCode::OK
    );
    browser
        .click("form[action='/passkeys/remove'] button")
        .await;
    browser.wait_for_text("Your passkeys were removed").await;
    assert!(browser.text().await.contains("You have no passkeys yet."));
    elsewhere
        .get("/", Some(&alice_elsewhere))
        .await
        .assert_see_other("/login?next=%2F");
    assert_eq!(browser.virtual_credentials(&authenticator).await.len(), 1);
    sign_out_at_localhost(&browser).await;
    browser
        .wait_for_text("That passkey is not registered here.")
        .await;
    browser.goto(&at_localhost(app, "/login")).await;
    browser
        .wait_for_text("That passkey is not registered here.")
        .await;
    browser
        .script("document.getElementById('passkey-status').hidden = true")
        .await;
    browser.click("#passkey-sign-in").await;
    browser
        .wait_for_text("That passkey is not registered here.")
        .await;
    browser.goto(&at_localhost(app, "/")).await;
    browser
        .wait_for_url(&at_localhost(app, "/login?next=%2F"))
        .await;
    browser.quit().await;
}

#[actix_web::test]
async fn browser_registers_a_passkey_and_signs_in_with_it_in_memory() {
    check_passkey_flow(&start_in_memory()).await;
}

#[actix_web::test]
async fn browser_registers_a_passkey_and_signs_in_with_it_on_redis() {
    check_passkey_flow(&start_on_redis()).await;
}

/// The login page asks for the passkeys' autofill as it loads (conditional mediation), which
/// starts the visitor's session to hold its challenge; the password form still works beside it.
#[actix_web::test]
async fn browser_login_page_offers_passkeys_in_the_autofill() {
    let app = start_in_memory();
    let mut driver = Driver::start();
    let browser = driver.browser().await;
    browser.add_virtual_authenticator().await;
    browser.goto(&at_localhost(&app, "/login")).await;
    let available = browser
        .script("return PublicKeyCredential.isConditionalMediationAvailable()")
        .await;
    assert_eq!(available, serde_json::json!(true));
    browser
        .wait_until("the autofill's challenge", async |browser| {
            session_cookie(&browser.cookies().await).map(|_| ())
        })
        .await;
    sign_in(&browser, ALICE, false).await;
    let text = browser.wait_for_url(&at_localhost(&app, "/")).await;
    assert!(text.contains("Signed in as alice"), "{text}");
    browser.quit().await;
}

/// Sudo mode confirmed with a passkey: past the fresh window, adding a passkey asks to confirm
/// first, and a passkey confirms.
#[actix_web::test]
async fn browser_confirms_sudo_mode_with_a_passkey() {
    let app = Example::start("html_login", &[("FRESH_WINDOW_SECS", "6")]);
    let mut driver = Driver::start();
    let (browser, authenticator) = alice_with_authenticator(&mut driver, &app).await;
    add_passkey(&browser).await;
    // Past the fresh window.
    actix_web::rt::time::sleep(Duration::from_secs(7)).await;

    browser.click("#add-passkey").await;
    browser
        .wait_for_text("Confirm it's you with a passkey first.")
        .await;
    browser.click("#confirm-passkey").await;
    browser
        .wait_for_text("Confirmed: you can add a passkey now.")
        .await;
    // The device's passkey is excluded from a second registration: empty it, then add one.
    browser.remove_virtual_credentials(&authenticator).await;
    add_passkey(&browser).await;
    browser.goto(&at_localhost(&app, "/")).await;
    let text = browser.text().await;
    assert!(text.contains("Signed in as alice"), "{text}");
    assert!(text.contains("You have 2 passkeys."), "{text}");
    browser.quit().await;
}

/// The passkey routes over plain HTTP: the page's hooks, the script, and refusals as JSON codes
/// that leave no session behind.
#[actix_web::test]
async fn html_login_serves_passkeys_over_http() {
    let app = start_in_memory();
    let origin = at_localhost(&app, "");
    assert!(
        app.banner.contains(&format!(
            "passkeys: relying party localhost, pages at {origin}"
        )),
        "{}",
        app.banner
    );
    let http = Http::new(&app);
    let page = http.get("/login", None).await;
    assert!(page.body.contains(r#"autocomplete="username webauthn""#));
    assert!(page
        .body
        .contains(r#"<script src="/passkeys.js" defer></script>"#));
    let script = http.get("/passkeys.js", None).await;
    assert_eq!(script.status, StatusCode::OK);
    assert!(script
        .content_type
        .is_some_and(|t| t.starts_with("text/javascript")));
    assert!(script.body.contains("mediation"), "{}", script.body);

    let refused = http.post_json("/passkeys/register/start", "{}", None).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.body, r#"{"error":"unauthenticated"}"#);
    let refused = http.post_json("/passkeys/sign-in/finish", "{", None).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(refused.body, r#"{"error":"invalid_request_body"}"#);
    // A well-formed answer to no challenge at all.
    let answer = r#"{"id":"AAAA","rawId":"AAAA","type":"public-key","extensions":{},
        "response":{"authenticatorData":"AAAA","clientDataJSON":"AAAA","signature":"AAAA"}}"#;
    let refused = http
        .post_json("/passkeys/sign-in/finish", answer, None)
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(refused.body, r#"{"error":"passkey_no_challenge"}"#);
    assert_eq!(refused.session_cookie(), None);

    // A visitor's sign-in starts an anonymous session to hold the challenge.
    let start = http.post_json("/passkeys/sign-in/start", "{}", None).await;
    assert_eq!(start.status, StatusCode::OK, "{}", start.body);
    let options: serde_json::Value = serde_json::from_str(&start.body).unwrap();
    assert!(options["publicKey"]["challenge"].is_string(), "{options}");
    assert_eq!(options["publicKey"]["rpId"], serde_json::json!("localhost"));
    let visitor = pair(start.session_cookie().expect("an anonymous session"));
    // Its challenge is used by the first answer, even a wrong one (this one names no account).
    let refused = http
        .post_json("/passkeys/sign-in/finish", answer, Some(&visitor))
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
    assert_eq!(refused.body, r#"{"error":"passkey_unknown_credential"}"#);
    assert_eq!(refused.session_cookie(), None);
    let again = http
        .post_json("/passkeys/sign-in/finish", answer, Some(&visitor))
        .await;
    assert_eq!(again.body, r#"{"error":"passkey_no_challenge"}"#);
}
