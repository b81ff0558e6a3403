//! `examples/minimal.rs` run as a process and held to its header: the login cycle of one user,
//! its refusals, and the curl session it documents, on the memory store and on Redis.
//!
//! Also home to what the tests of the other small examples (`api_tokens`) share:
//! an HTTP client that carries cookies by hand, and a Redis database of their own.

use std::time::Duration;

use awc::http::header::HeaderMap;
use awc::http::Method;

use crate::support::example::Example;
use crate::support::redis_server::{connection, shared_redis_url};

pub(crate) const UNAUTHENTICATED: &str = r#"{"error":"unauthenticated"}"#;
pub(crate) const INVALID_CREDENTIALS: &str = r#"{"error":"invalid_credentials"}"#;
pub(crate) const INVALID_BODY: &str = r#"{"error":"invalid_request_body"}"#;

/// What one request got back.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

impl Answer {
    /// Status and body, for one comparison that shows both when it fails.
    pub(crate) fn said(&self) -> (u16, &str) {
        (self.status, self.body.as_str())
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|err| panic!("not JSON ({err}): {:?}", self.body))
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub(crate) fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .get_all("set-cookie")
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// The whole `Set-Cookie` line for cookie `name`, if this answer sets it.
    pub(crate) fn set_cookie(&self, name: &str) -> Option<&str> {
        let prefix = format!("{name}=");
        self.set_cookies()
            .into_iter()
            .find(|line| line.starts_with(&prefix))
    }

    /// `name=value` of cookie `name` as set here, ready for a `Cookie` header.
    pub(crate) fn cookie(&self, name: &str) -> Option<String> {
        let line = self.set_cookie(name)?;
        Some(line.split(';').next().unwrap_or(line).to_owned())
    }
}

/// An HTTP client for one running example. It keeps no cookies: tests pass them by hand, as
/// each request's own `Cookie` header, so every request shows what it carries.
pub(crate) struct Http<'a> {
    client: awc::Client,
    example: &'a Example,
}

impl<'a> Http<'a> {
    pub(crate) fn new(example: &'a Example) -> Self {
        // Generous: argon2 on two cores that builds share can make one answer slow.
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(60))
            .finish();
        Self { client, example }
    }

    /// Sends a request; a body goes as JSON unless `headers` name another content type.
    pub(crate) async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Answer {
        let verb = Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        let mut req = self.client.request(verb, self.example.url(path));
        for (name, value) in headers {
            req = req.append_header((*name, *value));
        }
        let sent = match body {
            Some(body) => {
                if !headers
                    .iter()
                    .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
                {
                    req = req.insert_header(("content-type", "application/json"));
                }
                req.send_body(body.to_owned()).await
            }
            None => req.send().await,
        };
        let mut res = sent.unwrap_or_else(|err| panic!("{method} {path}: {err}"));
        let bytes = res
            .body()
            .limit(1 << 20)
            .await
            .unwrap_or_else(|err| panic!("{method} {path}: reading the body: {err}"));
        Answer {
            status: res.status().as_u16(),
            headers: res.headers().clone(),
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    pub(crate) async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.send("GET", path, headers, None).await
    }

    pub(crate) async fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        self.send("POST", path, headers, Some(body)).await
    }
}

/// Database `db` of the shared Redis, emptied, as a URL for an example's `REDIS_URL`. The
/// examples take no key prefix, so each test that runs one on Redis gets a database of its own:
/// sessions, users' indexes and login counters (which count per client address, and every
/// test's client is 127.0.0.1) never meet another test's, nor an earlier run's.
pub(crate) fn redis_db(db: u8) -> String {
    let shared = shared_redis_url();
    let server = match shared.rsplit_once('/') {
        Some((server, path))
            if server.contains("://")
                && !server.ends_with('/')
                && path.bytes().all(|b| b.is_ascii_digit()) =>
        {
            server
        }
        _ => shared.as_str(),
    };
    let url = format!("{server}/{db}");
    let mut conn = connection(&url).expect("connect to the shared Redis");
    redis::cmd("FLUSHDB").exec(&mut conn).expect("FLUSHDB");
    url
}

/// The keys of the database at `url`: proof that an example keeps its state there.
pub(crate) fn redis_keys(url: &str) -> Vec<String> {
    let mut conn = connection(url).expect("connect to the shared Redis");
    redis::cmd("KEYS").arg("*").query(&mut conn).expect("KEYS")
}

const ALICE: &str = r#"{"username":"alice","password":"correct horse battery staple"}"#;

async fn log_in(http: &Http<'_>) -> String {
    let answer = http.post("/login", &[], ALICE).await;
    assert_eq!(answer.said(), (200, r#"{"username":"alice"}"#));
    answer.cookie("__Host-id").expect("login sets the cookie")
}

async fn check(example: &Example) {
    let http = Http::new(example);
    let listening = format!("listening on http://127.0.0.1:{}\n", example.port);
    assert_eq!(example.banner, listening);

    assert_eq!(http.get("/me", &[]).await.said(), (401, UNAUTHENTICATED));

    // Refused logins: the same answer for a wrong password and an unknown user, and no cookie.
    for creds in [
        r#"{"username":"alice","password":"Correct horse battery staple"}"#,
        r#"{"username":"alice","password":""}"#,
        r#"{"username":"bob","password":"correct horse battery staple"}"#,
        r#"{"username":"Alice","password":"correct horse battery staple"}"#,
    ] {
        let answer = http.post("/login", &[], creds).await;
        assert_eq!(answer.said(), (401, INVALID_CREDENTIALS), "{creds}");
        assert!(answer.set_cookies().is_empty(), "{creds}");
    }
    for bad in [
        r#"{"username":"alice","password":"#,
        "",
        r#"{"username":"alice"}"#,
        r#"{"username":"alice","password":5}"#,
        "[]",
    ] {
        let answer = http.post("/login", &[], bad).await;
        assert_eq!(answer.said(), (400, INVALID_BODY), "{bad:?}");
        assert!(answer.set_cookies().is_empty(), "{bad:?}");
    }
    let as_text = http
        .post("/login", &[("content-type", "text/plain")], ALICE)
        .await;
    assert_eq!(as_text.said(), (400, INVALID_BODY));
    // Refused before any hashing, with the crate's own code.
    let huge = format!(
        r#"{{"username":"alice","password":"{}"}}"#,
        "x".repeat(2000)
    );
    assert_eq!(
        http.post("/login", &[], &huge).await.said(),
        (400, r#"{"error":"password_too_long"}"#)
    );

    // The header's session: log in, /me, log out.
    let answer = http.post("/login", &[], ALICE).await;
    assert_eq!(answer.said(), (200, r#"{"username":"alice"}"#));
    let line = answer
        .set_cookie("__Host-id")
        .expect("login sets the cookie");
    for attribute in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
        assert!(line.contains(attribute), "{line}");
    }
    // No cache may hand the new token to the next user.
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    let cookie = answer.cookie("__Host-id").unwrap();
    let with_cookie = [("cookie", cookie.as_str())];
    assert_eq!(
        http.get("/me", &with_cookie).await.said(),
        (200, r#"{"username":"alice"}"#)
    );
    // Each login is a session of its own, on a token of its own.
    let other = log_in(&http).await;
    assert_ne!(other, cookie);

    // A logout from another site does nothing; one from the app ends the session.
    let cross_site = [
        ("cookie", cookie.as_str()),
        ("origin", "https://evil.example"),
    ];
    assert_eq!(
        http.send("POST", "/logout", &cross_site, None).await.said(),
        (403, r#"{"error":"csrf_rejected"}"#)
    );
    assert_eq!(http.get("/me", &with_cookie).await.status, 200);
    // As in the header's curl session: `Origin` shows the `POST` comes from the app.
    let logout = [
        ("cookie", cookie.as_str()),
        ("origin", example.base.as_str()),
    ];
    let answer = http.send("POST", "/logout", &logout, None).await;
    assert_eq!(answer.said(), (204, ""));
    let cleared = answer
        .set_cookie("__Host-id")
        .expect("logout clears the cookie");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");

    // The token is dead, even for someone who kept a copy; the other session lives on.
    assert_eq!(
        http.get("/me", &with_cookie).await.said(),
        (401, UNAUTHENTICATED)
    );
    assert_eq!(
        http.send("POST", "/logout", &logout, None).await.said(),
        (401, UNAUTHENTICATED)
    );
    let other_cookie = [("cookie", other.as_str())];
    assert_eq!(http.get("/me", &other_cookie).await.status, 200);
    // A cookie's token is no bearer token.
    let token = other.trim_start_matches("__Host-id=");
    let bearer = format!("Bearer {token}");
    let answer = http.get("/me", &[("authorization", bearer.as_str())]).await;
    assert_eq!(answer.said(), (401, UNAUTHENTICATED));
}

#[actix_web::test]
async fn minimal_with_the_memory_store() {
    let example = Example::start("minimal", &[]);
    check(&example).await;
}

#[actix_web::test]
async fn minimal_with_redis() {
    let url = redis_db(10);
    let example = Example::start("minimal", &[("REDIS_URL", &url)]);
    check(&example).await;
    assert!(
        redis_keys(&url)
            .iter()
            .any(|key| key.starts_with("actix-login:s:")),
        "no session in Redis: {:?}",
        redis_keys(&url)
    );

    // Sessions are in Redis, not in the process: they outlive a restart.
    let cookie = log_in(&Http::new(&example)).await;
    drop(example);
    let restarted = Example::start("minimal", &[("REDIS_URL", &url)]);
    let http = Http::new(&restarted);
    assert_eq!(
        http.get("/me", &[("cookie", cookie.as_str())]).await.said(),
        (200, r#"{"username":"alice"}"#)
    );
}
