//! The html_login example, held to what its users see: pages and redirects over HTTP on both
//! stores.

use std::time::Duration;

use actix_login::CSRF_FIELD;
use awc::http::StatusCode;

use crate::support::example::Example;
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
    let url = shared_redis_url();
    // Keys of its own: another test's alice must not show up in this one's session list.
    let prefix = unique_prefix();
    let app = Example::start(
        "html_login",
        &[("REDIS_URL", &url), ("REDIS_KEY_PREFIX", &prefix)],
    );
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
