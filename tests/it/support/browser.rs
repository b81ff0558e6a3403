//! Headless Chromium driven through ChromeDriver (WebDriver), for what only a real browser
//! shows: which cookies it keeps and hides from scripts, the `Sec-Fetch-Site` it sends, how it
//! follows redirects and submits forms.
//!
//! Passkeys meet a virtual authenticator that the browser keeps in place of a real one,
//! added and emptied through the WebDriver extension commands of the WebAuthn spec
//! ([`Browser::add_virtual_authenticator`]).
//!
//! Needs Debian's `chromium` and `chromium-driver` (`apt-get install chromium chromium-driver`);
//! nothing is downloaded. Each [`Driver`] is one `chromedriver` process, in a process group of
//! its own with the browsers it starts, all killed when it is dropped, so a failing test leaves
//! no browser behind.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::{Capabilities, TimeoutConfiguration, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder, Locator};

use super::process::{free_port, unique_dir, TempDir};

/// How long a page, a script or a condition may take: long enough for a loaded 2-core machine
/// running other builds, and only ever reached when something is wrong.
pub const TIMEOUT: Duration = Duration::from_secs(60);

const MISSING: &str = "the browser tests need Debian's Chromium and its WebDriver: \
                       apt-get install chromium chromium-driver";

/// A running `chromedriver`, and the profile directories of the browsers it starts.
pub struct Driver {
    child: Child,
    url: String,
    chromium: PathBuf,
    /// Removed after the browsers using them are gone.
    profiles: Vec<TempDir>,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The group holds chromedriver and every browser it started, including those of a test
        // that failed before it could quit them.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

impl Driver {
    /// Starts `chromedriver` on a free port and waits until it answers.
    pub fn start() -> Self {
        let chromium = find_program("chromium").unwrap_or_else(|| panic!("{MISSING}"));
        let chromedriver = find_program("chromedriver").unwrap_or_else(|| panic!("{MISSING}"));
        let port = free_port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("start chromedriver: {err}"));
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            chromium,
            profiles: Vec::new(),
        };
        let deadline = Instant::now() + TIMEOUT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        driver
    }

    /// A new, empty browser profile directory, removed when the driver is dropped.
    pub fn new_profile(&mut self) -> PathBuf {
        let dir = unique_dir("chromium-profile");
        let path = dir.0.clone();
        self.profiles.push(dir);
        path
    }

    /// A browser with a profile of its own: no cookies, nothing shared with other browsers.
    pub async fn browser(&mut self) -> Browser {
        let profile = self.new_profile();
        self.browser_with_profile(&profile).await
    }

    /// A browser on `profile`, which keeps what an earlier browser on it saved: starting one
    /// on the profile of a browser that [quit](Browser::quit) is a browser restart.
    pub async fn browser_with_profile(&self, profile: &Path) -> Browser {
        let capabilities = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": self.chromium,
                "args": [
                    "--headless=new",
                    // Chromium's sandbox cannot run as root, which tests and CI do.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--password-store=basic",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object");
        };
        let client = connect(&self.url, capabilities).await;
        let timeouts = TimeoutConfiguration::new(Some(TIMEOUT), Some(TIMEOUT), None);
        client
            .update_timeouts(timeouts)
            .await
            .expect("set WebDriver timeouts");
        Browser { client }
    }
}

async fn connect(url: &str, capabilities: Capabilities) -> Client {
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    // A loaded machine can take a while to start a browser; one retry covers a start that
    // chromedriver gave up on.
    let mut last_error = None;
    for _ in 0..2 {
        match ClientBuilder::new(connector.clone())
            .capabilities(capabilities.clone())
            .connect(url)
            .await
        {
            Ok(client) => return client,
            Err(err) => last_error = Some(err),
        }
    }
    panic!("start Chromium through chromedriver: {last_error:?}");
}

/// `name` on the `PATH`, if it is there.
fn find_program(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// One browser window, with its own cookie jar.
pub struct Browser {
    pub client: Client,
}

impl Browser {
    /// Opens `url` and waits for the page (and any redirects) to load.
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|err| panic!("open {url}: {err}"));
    }

    /// The address of the page shown now.
    pub async fn url(&self) -> String {
        self.client
            .current_url()
            .await
            .expect("the current URL")
            .to_string()
    }

    /// The page's text as a user reads it.
    pub async fn text(&self) -> String {
        let text = self
            .script("return document.body ? document.body.innerText : ''")
            .await;
        text.as_str().unwrap_or_default().to_owned()
    }

    /// Runs `script` in the page and returns what it returns.
    pub async fn script(&self, script: &str) -> serde_json::Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|err| panic!("run {script:?}: {err}"))
    }

    /// Waits until the page's address is `url`, then returns its text.
    pub async fn wait_for_url(&self, url: &str) -> String {
        self.wait_until(&format!("address {url}"), async |browser| {
            (browser.url().await == url).then_some(())
        })
        .await;
        self.text().await
    }

    /// Waits until the browser shows another address than `url` (a redirect, a form that
    /// submitted itself), and returns the new one.
    pub async fn wait_to_leave(&self, url: &str) -> String {
        self.wait_until(&format!("leaving {url}"), async |browser| {
            let now = browser.url().await;
            (now != url).then_some(now)
        })
        .await
    }

    /// Waits until the page's text contains `needle`, and returns the text.
    pub async fn wait_for_text(&self, needle: &str) -> String {
        self.wait_until(&format!("text {needle:?}"), async |browser| {
            let text = browser.text().await;
            text.contains(needle).then_some(text)
        })
        .await
    }

    /// Polls `check` until it gives a value; panics with what the page shows after [`TIMEOUT`].
    pub async fn wait_until<T>(&self, what: &str, check: impl AsyncFn(&Self) -> Option<T>) -> T {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(value) = check(self).await {
                return value;
            }
            if Instant::now() > deadline {
                panic!(
                    "waited {TIMEOUT:?} for {what}; the browser shows {}:\n{}",
                    self.url().await,
                    self.text().await
                );
            }
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Types `text` into the element `css` finds.
    pub async fn fill(&self, css: &str, text: &str) {
        self.find(css)
            .await
            .send_keys(text)
            .await
            .unwrap_or_else(|err| panic!("type into {css}: {err}"));
    }

    /// Clicks the element `css` finds; a click that submits a form returns once the next page
    /// has loaded.
    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|err| panic!("click {css}: {err}"));
    }

    /// How many elements `css` finds on the page.
    pub async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_else(|err| panic!("find {css}: {err}"))
            .len()
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element,
            Err(err) => panic!(
                "find {css}: {err}; the browser shows {}:\n{}",
                self.url().await,
                self.text().await
            ),
        }
    }

    /// The cookies the browser holds for the page shown now, `HttpOnly` ones included.
    pub async fn cookies(&self) -> Vec<fantoccini::cookies::Cookie<'static>> {
        self.client
            .get_all_cookies()
            .await
            .expect("the browser's cookies")
    }

    /// Gives the browser a virtual authenticator, as WebAuthn's WebDriver extension defines it
    /// (`POST /session/{id}/webauthn/authenticator`): a built-in one (CTAP2, internal
    /// transport) that stores discoverable credentials, verifies its user and approves every
    /// prompt at once. Returns its id.
    pub async fn add_virtual_authenticator(&self) -> String {
        let options = serde_json::json!({
            "protocol": "ctap2",
            "transport": "internal",
            "hasResidentKey": true,
            "hasUserVerification": true,
            "isUserVerified": true,
            "isUserConsenting": true,
            "automaticPresenceSimulation": true,
        });
        let answer = self
            .client
            .issue_cmd(WebAuthnCommand::post("webauthn/authenticator", options))
            .await
            .unwrap_or_else(|err| panic!("add a virtual authenticator: {err}"));
        answer
            .as_str()
            .unwrap_or_else(|| panic!("an authenticator id, not {answer}"))
            .to_owned()
    }

    /// The credentials the virtual authenticator `id` holds
    /// (`GET …/webauthn/authenticator/{id}/credentials`).
    pub async fn virtual_credentials(&self, id: &str) -> Vec<serde_json::Value> {
        let path = format!("webauthn/authenticator/{id}/credentials");
        let answer = self
            .client
            .issue_cmd(WebAuthnCommand::get(path))
            .await
            .unwrap_or_else(|err| panic!("list virtual credentials: {err}"));
        answer.as_array().cloned().unwrap_or_default()
    }

    /// Stores `credential` (as [`virtual_credentials`](Self::virtual_credentials) lists it,
    /// private key included) in the virtual authenticator `id`
    /// (`POST …/webauthn/authenticator/{id}/credential`).
    pub async fn add_virtual_credential(&self, id: &str, credential: serde_json::Value) {
        let path = format!("webauthn/authenticator/{id}/credential");
        self.client
            .issue_cmd(WebAuthnCommand::post(&path, credential))
            .await
            .unwrap_or_else(|err| panic!("add a virtual credential: {err}"));
    }

    /// Empties the virtual authenticator `id`
    /// (`DELETE …/webauthn/authenticator/{id}/credentials`): its passkeys are gone from the
    /// device.
    pub async fn remove_virtual_credentials(&self, id: &str) {
        let path = format!("webauthn/authenticator/{id}/credentials");
        self.client
            .issue_cmd(WebAuthnCommand::delete(path))
            .await
            .unwrap_or_else(|err| panic!("remove virtual credentials: {err}"));
    }

    /// Closes the browser the way a user quits it, so that it saves its cookies to the profile.
    pub async fn quit(self) {
        self.client.close().await.expect("quit the browser");
    }
}

/// One of WebAuthn's WebDriver extension commands, under the session's URL.
#[derive(Debug)]
struct WebAuthnCommand {
    method: http::Method,
    path: String,
    body: Option<serde_json::Value>,
}

impl WebAuthnCommand {
    fn post(path: &str, body: serde_json::Value) -> Self {
        let path = path.to_owned();
        let (method, body) = (http::Method::POST, Some(body));
        Self { method, path, body }
    }

    fn get(path: String) -> Self {
        let (method, body) = (http::Method::GET, None);
        Self { method, path, body }
    }

    fn delete(path: String) -> Self {
        let (method, body) = (http::Method::DELETE, None);
        Self { method, path, body }
    }
}

impl WebDriverCompatibleCommand for WebAuthnCommand {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        let session = session.unwrap_or_default();
        base.join(&format!("session/{session}/{}", self.path))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        let body = self.body.as_ref().map(|body| body.to_string());
        (self.method.clone(), body)
    }
}
