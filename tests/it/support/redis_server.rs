//! A `redis-server` per test or one shared by the whole binary, and helpers to inspect one.
//!
//! Store tests run against `REDIS_URL` when it is set; otherwise the test binary starts one
//! `redis-server` for all of them. Tests that stop or count commands on a server always start
//! a private one.

use std::collections::HashMap;
use std::process::Child;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::process::{free_port, spawn_guarded, which_redis_server, Frozen, MISSING};

/// A `redis-server` owned by the test process.
///
/// It runs under a shell that kills it when the test process's end of the shell's stdin closes,
/// so servers never outlive a test run, even one that panics or is killed.
pub struct RedisServer {
    pub port: u16,
    /// The `redis-server` process itself (the guard is the shell around it).
    pid: u32,
    guard: Child,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// Starts a server with extra `redis-server` arguments on a free port.
    pub fn start_with(extra_args: &str) -> Self {
        for _ in 0..10 {
            let port = free_port();
            // Cluster nodes also listen on port + 10000.
            if port > 55_000 {
                continue;
            }
            if let Some(server) = Self::start_on_with(port, extra_args) {
                return server;
            }
        }
        panic!("could not start redis-server on a free port");
    }

    /// Starts a server on `port`, or `None` if it did not come up (port taken meanwhile).
    pub fn start_on(port: u16) -> Option<Self> {
        Self::start_on_with(port, "")
    }

    fn start_on_with(port: u16, extra_args: &str) -> Option<Self> {
        let guard = spawn_guarded(&format!(
            "redis-server --port {port} --bind 127.0.0.1 --save '' --appendonly no \
             --loglevel warning --logfile '' {extra_args}"
        ));
        let mut server = Self {
            port,
            pid: 0,
            guard,
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(pid) = server.process_id() {
                server.pid = pid;
                return Some(server);
            }
            sleep(Duration::from_millis(20));
        }
        assert!(which_redis_server(), "{MISSING}");
        None
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn ping(&self) -> bool {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    }

    /// The server's process id, from `INFO server`; `None` while it does not answer.
    fn process_id(&self) -> Option<u32> {
        let mut conn = redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .ok()?;
        let info: String = redis::cmd("INFO").arg("server").query(&mut conn).ok()?;
        info.lines()
            .find_map(|line| line.strip_prefix("process_id:"))
            .and_then(|pid| pid.trim().parse().ok())
    }

    /// Crashes the server: `SIGKILL`, so it closes nothing in order, answers nothing more and
    /// sends no reply to a command in flight; the kernel resets or closes its connections.
    /// Returns once it no longer answers.
    pub fn kill(&self) {
        let killed = std::process::Command::new("kill")
            .arg("-KILL")
            .arg(self.pid.to_string())
            .status()
            .is_ok_and(|status| status.success());
        assert!(killed, "kill -KILL {} failed", self.pid);
        self.wait_until_down();
    }

    /// Stops the server with `SIGSTOP` until the guard is dropped: its connections stay open
    /// and go silent, as when its host hangs or vanishes without a reset.
    pub fn freeze(&self) -> Frozen {
        Frozen::stop(self.pid)
    }

    /// The tests written before [`kill`](Self::kill) existed call it `stop`: a crash too.
    pub fn stop(&self) {
        self.kill();
    }

    /// Shuts the server down the polite way (`SHUTDOWN NOSAVE`): it stops listening, then
    /// closes each connection. Not a crash: for a test about a planned restart.
    #[allow(dead_code)]
    pub fn shutdown_cleanly(&self) {
        if let Ok(mut conn) = connection(&self.url()) {
            let _ = redis::cmd("SHUTDOWN").arg("NOSAVE").query::<()>(&mut conn);
        }
        self.wait_until_down();
    }

    fn wait_until_down(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.ping() {
            assert!(Instant::now() < deadline, "redis-server did not stop");
            sleep(Duration::from_millis(20));
        }
    }

    /// Starts a fresh server on the same port after [`kill`](Self::kill).
    pub fn restart(self) -> Self {
        let port = self.port;
        drop(self);
        Self::start_on(port).expect("redis-server did not restart on its port")
    }

    /// Calls per command since the server started, from `INFO commandstats`.
    pub fn command_counts(&self) -> HashMap<String, u64> {
        let mut conn = connection(&self.url()).expect("connect for INFO");
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut conn)
            .unwrap();
        info.lines()
            .filter_map(|line| {
                let rest = line.strip_prefix("cmdstat_")?;
                let (name, stats) = rest.split_once(':')?;
                let calls = stats
                    .strip_prefix("calls=")?
                    .split(',')
                    .next()?
                    .parse()
                    .ok()?;
                Some((name.to_owned(), calls))
            })
            .collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Closing the shell's stdin makes it kill the server.
        drop(self.guard.stdin.take());
        let _ = self.guard.wait();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.ping() && Instant::now() < deadline {
            sleep(Duration::from_millis(20));
        }
    }
}

/// The Redis every shared-server test uses: `REDIS_URL`, or a server started once per binary.
pub fn shared_redis_url() -> String {
    static SERVER: OnceLock<(String, Option<RedisServer>)> = OnceLock::new();
    SERVER
        .get_or_init(|| match std::env::var("REDIS_URL") {
            Ok(url) if !url.is_empty() => (url, None),
            _ => {
                let server = RedisServer::start();
                (server.url(), Some(server))
            }
        })
        .0
        .clone()
}

/// A key prefix no other test uses, so tests sharing a Redis never see each other's keys.
pub fn unique_prefix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn connection(url: &str) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(2))
}

/// Leaves `redis_key` as a cluster's rotation cut off after its first step leaves the old key:
/// marked as moving to `to` (a key's text), its record gone (`MOVE` in the store's scripts).
pub fn mark_as_moving(conn: &mut redis::Connection, redis_key: &str, to: &str) {
    redis::pipe()
        .atomic()
        .cmd("HDEL")
        .arg(redis_key)
        .arg(&["r", "r1", "r2", "r3"])
        .cmd("HSET")
        .arg(redis_key)
        .arg("m")
        .arg(to)
        .exec(conn)
        .expect("mark the key as moving");
}

/// Every key under `prefix` with its value (strings only) and TTL in milliseconds.
pub fn dump(url: &str, prefix: &str) -> Vec<(String, Option<Vec<u8>>, i64)> {
    let mut conn = connection(url).expect("connect for dump");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query(&mut conn)
        .unwrap();
    keys.into_iter()
        .map(|key| {
            // Sessions are hashes: their fields, joined as `field=value` lines.
            let value: Option<Vec<u8>> = match redis::cmd("GET").arg(&key).query(&mut conn) {
                Ok(value) => value,
                Err(_) => redis::cmd("HGETALL")
                    .arg(&key)
                    .query::<Vec<(Vec<u8>, Vec<u8>)>>(&mut conn)
                    .ok()
                    .map(|fields| {
                        fields
                            .into_iter()
                            .flat_map(|(f, v)| [f, b"=".to_vec(), v, b"\n".to_vec()].concat())
                            .collect()
                    }),
            };
            let ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut conn).unwrap();
            (key, value, ttl)
        })
        .collect()
}

/// Commands sent to `server` since `before` was taken with
/// [`RedisServer::command_counts`], leaving out the measurement's own `INFO` and connection setup.
pub fn commands_during_since(
    server: &RedisServer,
    before: &HashMap<String, u64>,
) -> HashMap<String, u64> {
    server
        .command_counts()
        .into_iter()
        // A connection's handshake, and the check that a lookup connection reaches the
        // server its worker's other connection does.
        .filter(|(name, _)| {
            !matches!(
                name.as_str(),
                "info" | "client|setinfo" | "client|setname" | "hello"
            )
        })
        .filter_map(|(name, calls)| {
            let delta = calls - before.get(&name).copied().unwrap_or(0);
            (delta > 0).then_some((name, delta))
        })
        .collect()
}

/// A session's record as `RedisStore` keeps it in the hash `fields`: the pieces `r`, then
/// `r1` … `r3` as long as there are more, put together; `None` without `r`.
pub fn stored_record<'a>(field: impl Fn(&str) -> Option<&'a [u8]>) -> Option<Vec<u8>> {
    let first = field("r")?;
    let rest = ["r1", "r2", "r3"].into_iter().map_while(&field);
    Some(
        std::iter::once(first)
            .chain(rest)
            .flatten()
            .copied()
            .collect(),
    )
}

/// The user id in a stored record, read as the binary form `RedisStore`'s codec documents it:
/// a version byte (1), then the public id and the user id, each after its length (LEB128).
/// `None` for anything else.
pub fn record_user_id(record: &[u8]) -> Option<String> {
    let (&1, mut rest) = record.split_first()? else {
        return None;
    };
    let mut text = || {
        let mut len = 0usize;
        for shift in (0..).step_by(7).take(4) {
            let (&byte, after) = rest.split_first()?;
            rest = after;
            len |= usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                let (text, after) = rest.split_at_checked(len)?;
                rest = after;
                return String::from_utf8(text.to_vec()).ok();
            }
        }
        None
    };
    let _public_id = text()?;
    text()
}
