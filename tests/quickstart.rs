//! The quickstart example is a contract: run the built binary and hold it to its routes.

mod support;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use awc::http::StatusCode;
use support::shared_redis_url;

struct Quickstart {
    child: Child,
    base: String,
    banner: String,
}

impl Drop for Quickstart {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn example_binary() -> PathBuf {
    // Tests live in target/<profile>/deps; cargo builds examples into target/<profile>/examples.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    profile_dir.join("examples").join("quickstart")
}

fn start(redis_url: Option<&str>) -> Quickstart {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut command = Command::new(example_binary());
    command
        .env("ADDR", format!("127.0.0.1:{port}"))
        .env_remove("REDIS_URL")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(url) = redis_url {
        command.env("REDIS_URL", url);
    }
    let mut child = command.spawn().expect("run `cargo build --examples` first");
    let stdout = child.stdout.take().unwrap();
    let mut banner = String::new();
    let mut lines = BufReader::new(stdout).lines();
    // The example prints the store it uses, then the address once users are seeded.
    for line in lines.by_ref() {
        let line = line.unwrap();
        banner.push_str(&line);
        banner.push('\n');
        if line.starts_with("listening on") {
            break;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "quickstart did not start: {banner}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Quickstart {
        child,
        base: format!("http://127.0.0.1:{port}"),
        banner,
    }
}

async fn post_json(
    client: &awc::Client,
    url: &str,
    body: &str,
    cookie: Option<&str>,
) -> (StatusCode, Vec<String>, String) {
    let mut req = client
        .post(url)
        .insert_header(("content-type", "application/json"));
    if let Some(c) = cookie {
        req = req.insert_header(("cookie", c));
    }
    let mut res = req.send_body(body.to_owned()).await.unwrap();
    let cookies = set_cookies(&res);
    let body = String::from_utf8(res.body().await.unwrap().to_vec()).unwrap();
    (res.status(), cookies, body)
}

async fn get(client: &awc::Client, url: &str, cookie: Option<&str>) -> (StatusCode, String) {
    let mut req = client.get(url);
    if let Some(c) = cookie {
        req = req.insert_header(("cookie", c));
    }
    let mut res = req.send().await.unwrap();
    let body = String::from_utf8(res.body().await.unwrap().to_vec()).unwrap();
    (res.status(), body)
}

fn set_cookies<S>(res: &awc::ClientResponse<S>) -> Vec<String> {
    res.headers()
        .get_all("set-cookie")
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

async fn check_contract(app: &Quickstart) {
    let client = awc::Client::default();
    let url = |path: &str| format!("{}{path}", app.base);

    let alice = r#"{"username":"alice","password":"alice-password-123"}"#;
    let (status, cookies, body) = post_json(&client, &url("/login"), alice, None).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"id":1,"username":"alice"}"#)
    );
    assert_eq!(cookies.len(), 1);
    let set_cookie = &cookies[0];
    for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
        assert!(set_cookie.contains(attr), "{set_cookie}");
    }
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    assert!(cookie.starts_with("__Host-id="));

    let (status, body) = get(&client, &url("/me"), Some(&cookie)).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"id":1,"username":"alice"}"#)
    );

    // Wrong password and unknown user: the same answer.
    let invalid = (
        StatusCode::UNAUTHORIZED,
        vec![],
        r#"{"error":"invalid credentials"}"#.to_owned(),
    );
    for creds in [
        r#"{"username":"alice","password":"bob-password-456"}"#,
        r#"{"username":"mallory","password":"alice-password-123"}"#,
    ] {
        assert_eq!(
            post_json(&client, &url("/login"), creds, None).await,
            invalid
        );
    }
    let bad = post_json(&client, &url("/login"), r#"{"username":"#, None).await;
    assert_eq!(bad.0, StatusCode::BAD_REQUEST);
    assert_eq!(bad.2, r#"{"error":"invalid request body"}"#);

    let bob = r#"{"username":"bob","password":"bob-password-456"}"#;
    let (status, _, body) = post_json(&client, &url("/login"), bob, None).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"id":2,"username":"bob"}"#)
    );

    let (status, cookies, body) = post_json(&client, &url("/logout"), "", Some(&cookie)).await;
    assert_eq!((status, body.as_str()), (StatusCode::NO_CONTENT, ""));
    assert!(cookies[0].starts_with("__Host-id=;") && cookies[0].contains("Max-Age=0"));

    let unauthenticated = r#"{"error":"unauthenticated"}"#;
    let (status, body) = get(&client, &url("/me"), Some(&cookie)).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::UNAUTHORIZED, unauthenticated)
    );
    let (status, body) = get(&client, &url("/me"), None).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::UNAUTHORIZED, unauthenticated)
    );
    let (status, _, body) = post_json(&client, &url("/logout"), "", Some(&cookie)).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::UNAUTHORIZED, unauthenticated)
    );
}

#[actix_web::test]
async fn quickstart_with_the_memory_store() {
    let app = start(None);
    assert!(app.banner.contains("in memory"), "{}", app.banner);
    check_contract(&app).await;
}

#[actix_web::test]
async fn quickstart_with_redis() {
    let app = start(Some(&shared_redis_url()));
    assert!(app.banner.contains("Redis"), "{}", app.banner);
    check_contract(&app).await;
}
