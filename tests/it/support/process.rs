//! Processes the tests start (redis-server, sentinels) under a guard that ends them with the
//! test process, free ports, and temporary directories.

use std::io::ErrorKind;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

pub const MISSING: &str = "redis-server not found: install it (apt-get install redis-server) or set REDIS_URL to a running Redis";

/// Runs the shell command line `command` in the background under a shell that kills it when
/// the returned child's stdin closes: when the test process ends, however it ends.
pub fn spawn_guarded(command: &str) -> Child {
    let script = format!("{command} & pid=$!; read _; kill $pid 2>/dev/null");
    match Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(err) if err.kind() == ErrorKind::NotFound => panic!("{MISSING}"),
        Err(err) => panic!("could not spawn sh: {err}"),
    }
}

/// A process started under the same kill guard as [`RedisServer`], for servers that
/// `RedisServer` cannot start: sentinels, and TLS-only servers.
pub struct Guarded {
    pub port: u16,
    guard: Child,
}

impl Guarded {
    /// Runs `command` (a shell command line) under the guard, and waits until `port` accepts
    /// TCP connections.
    pub fn spawn(port: u16, command: &str) -> Option<Self> {
        let guard = spawn_guarded(command);
        let process = Self { port, guard };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(process);
            }
            sleep(Duration::from_millis(20));
        }
        None
    }

    /// Retries [`spawn`](Self::spawn) on fresh free ports; `command` gets the port.
    pub fn spawn_on_free_port(command: impl Fn(u16) -> String) -> Self {
        for _ in 0..10 {
            let port = free_port();
            if let Some(process) = Self::spawn(port, &command(port)) {
                return process;
            }
        }
        assert!(which_redis_server(), "{MISSING}");
        panic!("could not start {:?} on a free port", command(0));
    }
}

impl Guarded {
    /// Stops the process and waits until its port is closed.
    pub fn kill(&mut self) {
        drop(self.guard.stdin.take());
        let _ = self.guard.wait();
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            && Instant::now() < deadline
        {
            sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn which_redis_server() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// A directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh directory under the system's temporary directory, removed on drop.
pub fn unique_dir(kind: &str) -> TempDir {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "actix-login-{kind}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    TempDir(dir)
}

/// A process stopped with `SIGSTOP`, continued when this is dropped: it holds its sockets but
/// reads and answers nothing, as a host stalled by the hypervisor or a long GC pause would.
pub struct Frozen {
    pid: u32,
}

impl Frozen {
    pub fn stop(pid: u32) -> Self {
        signal(pid, "STOP");
        Self { pid }
    }

    /// Continues the process now.
    pub fn thaw(self) {
        drop(self);
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // A stopped process ignores the guard's SIGTERM until continued: always continue it.
        signal(self.pid, "CONT");
    }
}

fn signal(pid: u32, name: &str) {
    let sent = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|status| status.success());
    assert!(sent, "kill -{name} {pid} failed");
}
