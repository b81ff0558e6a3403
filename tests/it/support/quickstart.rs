//! The quickstart as a test fixture: [`Quickstart::spawn`] starts the example as a process, and
//! named requests (`log_in`, `me`, `create_token`, ...) keep each test to what it checks.
//!
//! Requests go by path; cookies and other headers are passed by hand, so every request shows
//! what it carries.

use std::ops::Deref;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use awc::http::header::HeaderMap;
use awc::http::StatusCode;

use crate::support::example::{self, Example};

pub const INVALID_INPUT: &str = r#"{"error":"invalid_input"}"#;
pub const UNAUTHENTICATED: &str = r#"{"error":"unauthenticated"}"#;

/// A running quickstart, stopped when dropped. Derefs to the [`Example`] it runs as, for its
/// `banner`, `base` and `url`.
pub struct Quickstart(Example);

impl Deref for Quickstart {
    type Target = Example;

    fn deref(&self) -> &Example {
        &self.0
    }
}

/// What [`Quickstart::send`] got back.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|err| panic!("{err}: {}", self.body))
    }

    pub fn set_cookies(&self) -> Vec<String> {
        set_cookies(&self.headers)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

impl Quickstart {
    /// On the memory store, with the default settings.
    pub fn spawn() -> Self {
        Self::spawn_on(None, &[])
    }

    /// On the memory store, with `env`.
    pub fn spawn_with(env: &[(&str, &str)]) -> Self {
        Self::spawn_on(None, env)
    }

    /// On the Redis at `url`, with `env`.
    pub fn spawn_on_redis(url: &str, env: &[(&str, &str)]) -> Self {
        Self::spawn_on(Some(("REDIS_URL", url)), env)
    }

    /// On the store that `store` names (`REDIS_URL`, `REDIS_CLUSTER_NODES`, `REDIS_SENTINELS`),
    /// or in memory, with `env`.
    pub fn spawn_on(store: Option<(&str, &str)>, env: &[(&str, &str)]) -> Self {
        let all: Vec<(&str, &str)> = store.into_iter().chain(env.iter().copied()).collect();
        Self(Example::start("quickstart", &all))
    }

    /// Runs the quickstart with `env` (and no Redis) and asserts that it refuses to start;
    /// returns what it printed to stderr.
    pub fn refuses_to_start(env: &[(&str, &str)]) -> String {
        let mut command = Command::new(example::binary("quickstart"));
        command
            .env("ADDR", "127.0.0.1:0")
            .env_remove("REDIS_URL")
            .env_remove("REDIS_CLUSTER_NODES")
            .env_remove("REDIS_SENTINELS")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let output = command.output().unwrap();
        assert!(!output.status.success(), "started with {env:?}");
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    /// One request as the app's own pages send it (an `Origin` of the app's on all but `GET`),
    /// with `cookie` and a JSON `body`: status, `Set-Cookie` headers, body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        cookie: Option<&str>,
    ) -> (StatusCode, Vec<String>, String) {
        let mut headers = Vec::new();
        if method != "GET" {
            headers.push(("origin", self.base.as_str()));
        }
        if let Some(cookie) = cookie {
            headers.push(("cookie", cookie));
        }
        let reply = self.send(method, path, &headers, body).await;
        (reply.status, reply.set_cookies(), reply.body)
    }

    /// One request with exactly `headers` (no `Origin` unless among them), as a script or
    /// another site sends it; a body is sent as JSON.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply {
        // awc's default 5 s is too short for an argon2 login on a loaded 2-core machine that
        // runs several quickstart processes at once.
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(30))
            .finish();
        let mut req = client.request(method.parse().unwrap(), self.url(path));
        for &(name, value) in headers {
            req = req.insert_header((name, value));
        }
        let mut res = match body {
            Some(json) => req
                .insert_header(("content-type", "application/json"))
                .send_body(json.to_owned())
                .await
                .unwrap(),
            None => req.send().await.unwrap(),
        };
        let body = String::from_utf8(res.body().await.unwrap().to_vec()).unwrap();
        Reply {
            status: res.status(),
            headers: res.headers().clone(),
            body,
        }
    }

    /// A JSON `POST` as a script sends it, without `Origin`: status, `Set-Cookie` headers, body.
    pub async fn post_json(
        &self,
        path: &str,
        body: &str,
        cookie: Option<&str>,
    ) -> (StatusCode, Vec<String>, String) {
        let headers: Vec<_> = cookie.map(|c| ("cookie", c)).into_iter().collect();
        let reply = self.send("POST", path, &headers, Some(body)).await;
        (reply.status, reply.set_cookies(), reply.body)
    }

    /// A `POST` the way a hostile page's form would send it: another site's `Origin`.
    pub async fn cross_site(
        &self,
        path: &str,
        body: Option<&str>,
        cookie: Option<&str>,
    ) -> (StatusCode, String) {
        let mut headers = vec![("origin", "https://evil.example")];
        headers.extend(cookie.map(|c| ("cookie", c)));
        let reply = self.send("POST", path, &headers, body).await;
        (reply.status, reply.body)
    }

    /// A JSON `POST` from the app's pages, as relayed by a proxy at 127.0.0.1 for `client`:
    /// status, `Retry-After`, `Set-Cookie` headers, body.
    pub async fn post_for(
        &self,
        client: &str,
        path: &str,
        body: &str,
        cookie: Option<&str>,
    ) -> (StatusCode, Option<String>, Vec<String>, String) {
        let mut headers = vec![("origin", self.base.as_str()), ("x-forwarded-for", client)];
        headers.extend(cookie.map(|c| ("cookie", c)));
        let reply = self.send("POST", path, &headers, Some(body)).await;
        let retry = reply.header("retry-after").map(str::to_owned);
        (reply.status, retry, reply.set_cookies(), reply.body)
    }

    /// `POST /register` for `username` with `password`: status, `Set-Cookie` headers, body.
    pub async fn register(
        &self,
        username: &str,
        password: &str,
    ) -> (StatusCode, Vec<String>, String) {
        let body = format!(r#"{{"username":"{username}","password":"{password}"}}"#);
        self.call("POST", "/register", Some(&body), None).await
    }

    /// Logs in (asserting `200`) and returns the session cookie, `name=value`.
    pub async fn log_in(&self, username: &str, password: &str) -> String {
        let body = format!(r#"{{"username":"{username}","password":"{password}"}}"#);
        let (status, cookies, _) = self.call("POST", "/login", Some(&body), None).await;
        assert_eq!(status, StatusCode::OK, "login as {username}");
        session_cookie(&cookies)
    }

    /// Logs in with `"remember"` set as given: the session cookie to send, and the
    /// `Set-Cookie` header that set it.
    pub async fn log_in_remembering(
        &self,
        username: &str,
        password: &str,
        remember: bool,
    ) -> (String, String) {
        let body =
            format!(r#"{{"username":"{username}","password":"{password}","remember":{remember}}}"#);
        let (status, cookies, answer) = self.call("POST", "/login", Some(&body), None).await;
        assert_eq!(status, StatusCode::OK, "login as {username}: {answer}");
        (
            session_cookie(&cookies),
            session_set_cookie(&cookies).to_owned(),
        )
    }

    /// `POST /logout` with the session cookie, asserting `204`: the `Set-Cookie` headers.
    pub async fn log_out(&self, cookie: &str) -> Vec<String> {
        let (status, cookies, body) = self.call("POST", "/logout", None, Some(cookie)).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "logout: {body}");
        cookies
    }

    /// `GET /me` with the session cookie: its status.
    pub async fn me(&self, cookie: &str) -> StatusCode {
        self.me_status(&[("cookie", cookie)]).await
    }

    /// `GET /me` on behalf of `auth` (its headers): its status.
    pub async fn me_status(&self, auth: &[(&str, &str)]) -> StatusCode {
        self.send("GET", "/me", auth, None).await.status
    }

    /// `GET /admin` with the session cookie: its status.
    pub async fn admin_status(&self, cookie: &str) -> StatusCode {
        self.call("GET", "/admin", None, Some(cookie)).await.0
    }

    /// `GET /sessions` on behalf of `auth`: the list, asserting `200`.
    pub async fn session_list(&self, auth: &[(&str, &str)]) -> Vec<serde_json::Value> {
        let reply = self.send("GET", "/sessions", auth, None).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        serde_json::from_str(&reply.body).unwrap()
    }

    /// `POST /tokens` on behalf of `auth` for a token named `name` that ends after
    /// `expires_in_secs`, if given; asserts `201` and that `expires_at` is that long after the
    /// request, and returns the issued token's JSON.
    pub async fn create_token(
        &self,
        auth: &[(&str, &str)],
        name: &str,
        expires_in_secs: Option<u64>,
    ) -> serde_json::Value {
        let body = match expires_in_secs {
            Some(secs) => serde_json::json!({ "name": name, "expires_in_secs": secs }),
            None => serde_json::json!({ "name": name }),
        };
        let before = unix_now();
        let reply = self
            .send("POST", "/tokens", auth, Some(&body.to_string()))
            .await;
        let after = unix_now();
        assert_eq!(reply.status, StatusCode::CREATED, "{name}: {}", reply.body);
        // The secret is in this response only: no cache may keep it, and no cookie comes with it.
        assert_eq!(reply.header("cache-control"), Some("no-store"), "{name}");
        assert!(reply.set_cookies().is_empty(), "{name}");
        let issued = reply.json();
        assert!(issued["id"].is_string(), "{issued}");
        assert_eq!(issued["token"].as_str().unwrap().len(), 47, "{issued}");
        match expires_in_secs {
            Some(secs) => {
                let expires_at = issued["expires_at"].as_u64().unwrap();
                assert!(
                    (before + secs..=after + secs + 1).contains(&expires_at),
                    "{name}: expires_at {expires_at}, asked at {before}..{after} for {secs} s"
                );
            }
            None => assert!(issued["expires_at"].is_null(), "{issued}"),
        }
        issued
    }

    /// `PUT /users/{username}/roles`: status and body.
    pub async fn put_roles(
        &self,
        username: &str,
        body: &str,
        cookie: Option<&str>,
    ) -> (StatusCode, String) {
        let path = format!("/users/{username}/roles");
        let (status, _, answer) = self.call("PUT", &path, Some(body), cookie).await;
        (status, answer)
    }

    /// `PUT /prefs/{key}`: status and body.
    pub async fn put_pref(&self, key: &str, body: &str, cookie: &str) -> (StatusCode, String) {
        let path = format!("/prefs/{key}");
        let (status, _, answer) = self.call("PUT", &path, Some(body), Some(cookie)).await;
        (status, answer)
    }

    /// `GET` of a data route (`/cart`, `/prefs`): asserts `200`, returns the body and whether
    /// the response set a session cookie.
    pub async fn read_data(&self, path: &str, cookie: Option<&str>) -> (String, bool) {
        let (status, cookies, body) = self.call("GET", path, None, cookie).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        let sets_session = cookies.iter().any(|c| is_session_cookie(c));
        (body, sets_session)
    }

    /// The cart, as `GET /cart` shows it.
    pub async fn cart(&self, cookie: Option<&str>) -> String {
        self.read_data("/cart", cookie).await.0
    }

    /// The preferences, as `GET /prefs` shows them.
    pub async fn prefs(&self, cookie: &str) -> serde_json::Value {
        let (body, _) = self.read_data("/prefs", Some(cookie)).await;
        serde_json::from_str(&body).unwrap_or_else(|err| panic!("GET /prefs: {err}: {body}"))
    }
}

fn set_cookies(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("set-cookie")
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// Whether a `Set-Cookie` header is the session cookie's: `__Host-id`, or `__Secure-id` when
/// the app runs with `COOKIE_DOMAIN`.
pub fn is_session_cookie(set_cookie: &str) -> bool {
    set_cookie.starts_with("__Host-id=") || set_cookie.starts_with("__Secure-id=")
}

/// The `Set-Cookie` header of the session cookie among a response's.
pub fn session_set_cookie(cookies: &[String]) -> &str {
    cookies
        .iter()
        .find(|c| is_session_cookie(c))
        .expect("no session cookie")
}

/// The `name=value` part of the session cookie a response set.
pub fn session_cookie(cookies: &[String]) -> String {
    let set = session_set_cookie(cookies);
    set.split(';').next().unwrap().to_owned()
}

/// The `name=value` part of the device cookie a response set, after checking its attributes.
pub fn device_cookie(cookies: &[String]) -> String {
    let set = cookies
        .iter()
        .find(|c| c.starts_with("__Host-device="))
        .expect("no device cookie");
    for attr in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=",
    ] {
        assert!(set.contains(attr), "{set}");
    }
    set.split(';').next().unwrap().to_owned()
}

/// The `Max-Age` of a `Set-Cookie` header, if it has one.
pub fn max_age(set_cookie: &str) -> Option<i64> {
    set_cookie
        .split(';')
        .find_map(|attr| attr.trim().strip_prefix("Max-Age="))
        .map(|age| age.parse().unwrap())
}

/// The `Authorization` header value for `token`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Asserts the answer to a bearer token that is malformed, unknown or ended: `401` with a
/// `WWW-Authenticate` challenge, and no cookie.
pub fn assert_token_refused(reply: &Reply, what: &str) {
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::UNAUTHORIZED, UNAUTHENTICATED),
        "{what}"
    );
    let challenge = reply.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Bearer"), "{what}: {challenge:?}");
    assert!(reply.set_cookies().is_empty(), "{what}");
}

/// Now, in Unix seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
