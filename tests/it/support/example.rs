//! The examples as the processes users run: built once per test process with the features
//! this test binary was built with, started on a free port, stopped when dropped.
//!
//! The first test that needs an example builds it, so `cargo test --all-features --test it
//! <module>` works on a clean target; after a full `cargo test`, which builds the examples
//! itself, that build has nothing to do.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A running example. Killed on drop.
pub struct Example {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    pub port: u16,
    /// What it printed up to its `listening on` line.
    pub banner: String,
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Example {
    /// Starts example `name` on a free port with `env` on top of a clean environment (no
    /// `REDIS_*`), and waits until it prints `listening on` and accepts connections.
    pub fn start(name: &str, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut command = Command::new(binary(name));
        command
            .env("ADDR", format!("127.0.0.1:{port}"))
            .env_remove("REDIS_URL")
            .env_remove("REDIS_CLUSTER_NODES")
            .env_remove("REDIS_SENTINELS")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|err| panic!("start example {name}: {err}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut banner = String::new();
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            banner.push_str(&line);
            banner.push('\n');
            if line.starts_with("listening on") {
                break;
            }
        }
        // Keep draining stdout so a chatty example never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "example {name} did not start: {banner}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Example {
            child,
            base: format!("http://127.0.0.1:{port}"),
            port,
            banner,
        }
    }

    /// The process id, for signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `limit` for the process to exit by itself, and returns how it exited.
    pub fn wait_for_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

/// The executable of example `name`, built once per test process.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(Mutex::default);
    // Held across the build: two tests asking for the same example build it once.
    let mut built = built
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    built
        .entry(name.to_owned())
        .or_insert_with(|| build(name))
        .clone()
}

/// Builds the example with the cargo that runs the tests, into the same target directory,
/// with the same profile and features, and returns the executable cargo reports.
fn build(name: &str) -> PathBuf {
    // Tests live in <target>/<profile dir>/deps; the profile dir is "debug" for the dev and
    // test profiles, and the profile's own name otherwise.
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .and_then(|dir| dir.to_str())
        .expect("the test binary lives in <target>/<profile>/deps");
    let profile = match profile_dir {
        "debug" => "dev",
        other => other,
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(["build", "--example", name, "--profile", profile])
        .args([
            "--message-format",
            "json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
    // The features this test binary was built with, so the crate is not built a second time
    // and the example has every store the tests start it on.
    let enabled = [
        ("redis", cfg!(feature = "redis")),
        ("cluster", cfg!(feature = "cluster")),
        ("sentinel", cfg!(feature = "sentinel")),
        ("tls", cfg!(feature = "tls")),
        ("local-cache", cfg!(feature = "local-cache")),
        ("password", cfg!(feature = "password")),
        ("policy", cfg!(feature = "policy")),
        ("throttle", cfg!(feature = "throttle")),
        ("two-factor", cfg!(feature = "two-factor")),
        ("test-util", cfg!(feature = "test-util")),
        ("actix-session", cfg!(feature = "actix-session")),
        ("metrics", cfg!(feature = "metrics")),
        ("passkeys", cfg!(feature = "passkeys")),
    ];
    let features: Vec<&str> = enabled
        .iter()
        .filter(|(_, on)| *on)
        .map(|(feature, _)| *feature)
        .collect();
    command
        .arg("--no-default-features")
        .args(["--features", &features.join(",")]);
    // What cargo tells this test about its package (CARGO_MANIFEST_DIR, CARGO_PKG_*, ...) is
    // not for the build: build scripts that track those variables (ring's does) would see a
    // changed environment and rebuild their crates and everything above them, here and again
    // in the next plain cargo command.
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_BIN_"]
            .iter()
            .any(|prefix| key.starts_with(prefix))
            || matches!(
                key,
                "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
            )
        {
            command.env_remove(key);
        }
    }
    let output = command
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|err| panic!("run cargo to build example {name}: {err}"));
    assert!(
        output.status.success(),
        "cargo build --example {name} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The artifact message for the example names its executable.
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|message| {
            message["reason"] == "compiler-artifact"
                && message["target"]["name"] == name
                && message["executable"].is_string()
        })
        .and_then(|message| message["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo reported no executable for example {name}"))
}
