//! Shared test support: real `redis-server` processes on free ports, and helpers to inspect them.
//!
//! Store tests run against `REDIS_URL` when it is set; otherwise each test binary starts its own
//! `redis-server`. Tests that stop or count commands on a server always start a private one.
#![allow(dead_code)]

pub mod http;

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

const MISSING: &str = "redis-server not found: install it (apt-get install redis-server) or set REDIS_URL to a running Redis";

/// Runs the shell command line `command` in the background under a shell that kills it when
/// the returned child's stdin closes: when the test process ends, however it ends.
fn spawn_guarded(command: &str) -> Child {
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

/// A `redis-server` owned by the test process.
///
/// It runs under a shell that kills it when the test process's end of the shell's stdin closes,
/// so servers never outlive a test run, even one that panics or is killed.
pub struct RedisServer {
    pub port: u16,
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
        let server = Self { port, guard };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if server.ping() {
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

    /// Stops the server abruptly, as a crash or network loss would look to clients.
    pub fn stop(&self) {
        if let Ok(mut conn) = connection(&self.url()) {
            let _ = redis::cmd("SHUTDOWN").arg("NOSAVE").query::<()>(&mut conn);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.ping() {
            assert!(Instant::now() < deadline, "redis-server did not stop");
            sleep(Duration::from_millis(20));
        }
    }

    /// Starts a fresh server on the same port after [`stop`](Self::stop).
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

fn which_redis_server() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
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

/// Every key under `prefix` with its value (strings only) and TTL in milliseconds.
pub fn dump(url: &str, prefix: &str) -> Vec<(String, Option<Vec<u8>>, i64)> {
    let mut conn = connection(url).expect("connect for dump");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query(&mut conn)
        .unwrap();
    keys.into_iter()
        .map(|key| {
            let value: Option<Vec<u8>> =
                redis::cmd("GET").arg(&key).query(&mut conn).ok().flatten();
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
        .filter(|(name, _)| !matches!(name.as_str(), "info" | "client|setinfo" | "hello"))
        .filter_map(|(name, calls)| {
            let delta = calls - before.get(&name).copied().unwrap_or(0);
            (delta > 0).then_some((name, delta))
        })
        .collect()
}

/// Log output captured from `tracing` on this thread.
#[derive(Clone, Default)]
pub struct CapturedLogs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl CapturedLogs {
    pub fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

thread_local! {
    static CAPTURE: std::cell::RefCell<Option<CapturedLogs>> = const { std::cell::RefCell::new(None) };
}

/// Ends a capture started by [`capture_logs`] when dropped.
pub struct CaptureGuard(());

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        CAPTURE.with(|capture| capture.borrow_mut().take());
    }
}

/// Where the one global subscriber writes: the capture of the thread that logs, if any.
struct ThreadCapture;

impl std::io::Write for ThreadCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURE.with(|capture| {
            if let Some(logs) = capture.borrow().as_ref() {
                logs.0
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures everything logged on this thread (where an Actix test runs its app) until the guard
/// is dropped.
///
/// One global subscriber, installed once, serves every test: thread-scoped subscribers that come
/// and go while other tests log race with tracing's per-callsite interest cache, and a capture
/// then misses lines now and then.
pub fn capture_logs() -> (CapturedLogs, CaptureGuard) {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(|| ThreadCapture)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber");
    });
    let logs = CapturedLogs::default();
    CAPTURE.with(|capture| *capture.borrow_mut() = Some(logs.clone()));
    (logs, CaptureGuard(()))
}

/// A real store with the faults a test needs injected around it.
#[derive(Clone, Default)]
pub struct Wrapped<S> {
    pub inner: S,
    /// Held before every `extend`, to widen the window between a load and its refresh.
    pub extend_delay: Duration,
    /// Held before every `delete`, to let a rotation slip between a revocation's list and delete.
    pub delete_delay: Duration,
    /// Held before every `rotate`, to let a revocation slip between a load and its rotation.
    pub rotate_delay: Duration,
    /// Time between reading the index and reading the records in `list`.
    pub list_gap: Duration,
    /// Keep records an hour whatever their deadline, as a careless custom store might, and
    /// report their deadlines as follows.
    pub keep_expired: bool,
    /// With `keep_expired`: report the real idle deadline (`true`) or one an hour away.
    pub report_idle_deadline: bool,
    pub extend_calls: std::sync::Arc<AtomicU32>,
    deadlines: std::sync::Arc<std::sync::Mutex<HashMap<String, std::time::SystemTime>>>,
}

impl<S> Wrapped<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            extend_delay: Duration::ZERO,
            delete_delay: Duration::ZERO,
            rotate_delay: Duration::ZERO,
            list_gap: Duration::ZERO,
            keep_expired: false,
            report_idle_deadline: false,
            extend_calls: Default::default(),
            deadlines: Default::default(),
        }
    }

    fn stored_deadline(
        &self,
        key: &actix_login::SessionKey,
        real: std::time::SystemTime,
    ) -> std::time::SystemTime {
        if !self.keep_expired {
            return real;
        }
        self.deadlines
            .lock()
            .unwrap()
            .insert(key.as_str().to_owned(), real);
        std::time::SystemTime::now() + Duration::from_secs(3600)
    }
}

impl<S: actix_login::SessionStore> actix_login::SessionStore for Wrapped<S> {
    async fn create(
        &self,
        key: &actix_login::SessionKey,
        record: &actix_login::SessionRecord,
        expires_at: std::time::SystemTime,
    ) -> Result<bool, actix_login::StoreError> {
        let deadline = self.stored_deadline(key, expires_at);
        self.inner.create(key, record, deadline).await
    }

    async fn load(
        &self,
        key: &actix_login::SessionKey,
    ) -> Result<Option<actix_login::store::StoredSession>, actix_login::StoreError> {
        let mut loaded = self.inner.load(key).await?;
        if let (Some(stored), true) = (loaded.as_mut(), self.report_idle_deadline) {
            if let Some(real) = self.deadlines.lock().unwrap().get(key.as_str()) {
                stored.expires_at = *real;
            }
        }
        Ok(loaded)
    }

    async fn extend(
        &self,
        key: &actix_login::SessionKey,
        record: &actix_login::SessionRecord,
        expires_at: std::time::SystemTime,
    ) -> Result<bool, actix_login::StoreError> {
        self.extend_calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.extend_delay).await;
        let deadline = self.stored_deadline(key, expires_at);
        self.inner.extend(key, record, deadline).await
    }

    async fn delete(&self, key: &actix_login::SessionKey) -> Result<bool, actix_login::StoreError> {
        tokio::time::sleep(self.delete_delay).await;
        self.inner.delete(key).await
    }

    async fn list(
        &self,
        user_id: &str,
    ) -> Result<actix_login::store::UserSessions, actix_login::StoreError> {
        let mut listing = self.inner.list(user_id).await?;
        if self.list_gap.is_zero() {
            return Ok(listing);
        }
        // Emulate a listing whose index read and record reads are far apart: records that
        // vanish meanwhile count as dropped, entries added meanwhile are not seen.
        tokio::time::sleep(self.list_gap).await;
        let mut live = Vec::new();
        for (key, stored) in listing.live {
            match self.inner.load(&key).await? {
                Some(_) => live.push((key, stored)),
                None => listing.dropped += 1,
            }
        }
        listing.live = live;
        Ok(listing)
    }

    async fn rotate(
        &self,
        old: &actix_login::SessionKey,
        new: &actix_login::SessionKey,
        record: &actix_login::SessionRecord,
        expires_at: std::time::SystemTime,
    ) -> Result<bool, actix_login::StoreError> {
        tokio::time::sleep(self.rotate_delay).await;
        let deadline = self.stored_deadline(new, expires_at);
        self.inner.rotate(old, new, record, deadline).await
    }
}

/// A three-primary Redis Cluster on free ports, torn down with the test process.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    _dir: TempDir,
}

/// A directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl RedisCluster {
    pub fn start() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "actix-login-cluster-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("cluster directory");
        let nodes: Vec<RedisServer> = (0..3)
            .map(|i| {
                RedisServer::start_with(&format!(
                    "--cluster-enabled yes --cluster-config-file node-{i}.conf \
                     --cluster-node-timeout 2000 --dir {}",
                    dir.display()
                ))
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli not found: install redis-tools");
        assert!(created.success(), "redis-cli --cluster create failed");
        let cluster = Self {
            nodes,
            _dir: TempDir(dir),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cluster.is_ok() {
            assert!(Instant::now() < deadline, "cluster did not become ok");
            sleep(Duration::from_millis(100));
        }
        cluster
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The cluster id of node `i`.
    pub fn node_id(&self, i: usize) -> String {
        let mut conn = connection(&self.nodes[i].url()).expect("connect to node");
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut conn)
            .expect("CLUSTER MYID")
    }

    /// How many slots node `i` serves, by its own account.
    pub fn slots_of(&self, i: usize) -> usize {
        let mut conn = connection(&self.nodes[i].url()).expect("connect to node");
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query(&mut conn)
            .expect("CLUSTER NODES");
        let me = nodes
            .lines()
            .find(|l| l.contains("myself"))
            .unwrap_or_default();
        me.split_whitespace()
            .skip(8)
            .map(|range| match range.split_once('-') {
                Some((a, b)) => {
                    b.parse::<usize>().unwrap_or(0) + 1 - a.parse::<usize>().unwrap_or(0)
                }
                None => usize::from(range.parse::<usize>().is_ok()),
            })
            .sum()
    }

    fn is_ok(&self) -> bool {
        self.nodes.iter().all(|node| {
            connection(&node.url())
                .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c))
                .is_ok_and(|info| info.contains("cluster_state:ok"))
        })
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

fn unique_dir(kind: &str) -> TempDir {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "actix-login-{kind}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    TempDir(dir)
}

/// The name the sentinels of [`RedisSentinel`] monitor.
pub const SERVICE: &str = "mymaster";

/// One primary, one replica and three sentinels (quorum 2) on free ports, torn down with the
/// test process. A failover takes a few seconds.
pub struct RedisSentinel {
    /// The data nodes in the order they started: at first `servers[0]` is the primary.
    pub servers: Vec<Guarded>,
    pub sentinels: Vec<Guarded>,
    /// The data nodes' `requirepass`, if any; the sentinels have none.
    pub password: Option<String>,
    /// With TLS, every process serves it only, with a certificate from this CA.
    pub tls: Option<TestCertificates>,
    _dir: TempDir,
}

impl RedisSentinel {
    pub fn start() -> Self {
        Self::start_with(None, None)
    }

    /// With `password`, the data nodes require it (of the `default` user) and the sentinels
    /// know it; the sentinels themselves stay open. With `tls`, every process, sentinels
    /// included, speaks TLS only, and so does replication.
    pub fn start_with(password: Option<&str>, tls: Option<TestCertificates>) -> Self {
        let dir = unique_dir("sentinel");
        let tls_files = |port: u16| match &tls {
            Some(certificates) => format!(
                "tls-port {port}\nport 0\ntls-replication yes\ntls-auth-clients no\n\
                 tls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n",
                certificates.server_cert.display(),
                certificates.server_key.display(),
                certificates.ca_cert.display()
            ),
            None => format!("port {port}\n"),
        };
        let tls_args = |port: u16| match &tls {
            Some(certificates) => {
                format!("{} --tls-replication yes", certificates.server_args(port))
            }
            None => format!("--port {port}"),
        };
        let (auth_args, auth_config) = match password {
            Some(p) => (
                format!("--requirepass {p} --masterauth {p}"),
                format!("sentinel auth-pass {SERVICE} {p}"),
            ),
            None => (String::new(), String::new()),
        };
        let data_node = |extra: String| {
            Guarded::spawn_on_free_port(|port| {
                format!(
                    "redis-server --bind 127.0.0.1 --save '' --appendonly no \
                     --repl-diskless-sync-delay 0 --loglevel warning --logfile '' \
                     --dir {dir} --dbfilename data-{port}.rdb {auth_args} {extra} {listen}",
                    dir = dir.0.display(),
                    listen = tls_args(port),
                )
            })
        };
        let primary = data_node(String::new());
        let replica = data_node(format!("--replicaof 127.0.0.1 {}", primary.port));
        let sentinels = (0..3)
            .map(|i| {
                Guarded::spawn_on_free_port(|port| {
                    let conf = dir.0.join(format!("sentinel-{i}-{port}.conf"));
                    let text = format!(
                        "{listen}bind 127.0.0.1\ndir {dir}\n\
                         sentinel monitor {SERVICE} 127.0.0.1 {primary} 2\n\
                         sentinel down-after-milliseconds {SERVICE} 1000\n\
                         sentinel failover-timeout {SERVICE} 4000\n\
                         sentinel parallel-syncs {SERVICE} 1\n{auth_config}\n",
                        dir = dir.0.display(),
                        primary = primary.port,
                        listen = tls_files(port),
                    );
                    std::fs::write(&conf, text).expect("sentinel configuration");
                    format!(
                        "redis-server {} --sentinel --loglevel warning --logfile ''",
                        conf.display()
                    )
                })
            })
            .collect();
        let deployment = Self {
            servers: vec![primary, replica],
            sentinels,
            password: password.map(str::to_owned),
            tls,
            _dir: dir,
        };
        deployment.wait_until_ready(0);
        deployment
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        }
    }

    /// Sentinel URLs, as the store takes them.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| format!("{}://127.0.0.1:{}", self.scheme(), s.port))
            .collect()
    }

    /// A URL that logs in to data node `i` directly.
    pub fn server_url(&self, i: usize) -> String {
        let port = self.servers[i].port;
        match &self.password {
            Some(p) => format!("{}://:{p}@127.0.0.1:{port}", self.scheme()),
            None => format!("{}://127.0.0.1:{port}", self.scheme()),
        }
    }

    fn open(&self, url: &str) -> redis::RedisResult<redis::Connection> {
        let client = match &self.tls {
            Some(certificates) => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(certificates.ca_pem()),
                },
            )?,
            None => redis::Client::open(url)?,
        };
        client.get_connection_with_timeout(Duration::from_secs(2))
    }

    /// A connection to data node `i`, logged in.
    pub fn server_connection(&self, i: usize) -> redis::RedisResult<redis::Connection> {
        self.open(&self.server_url(i))
    }

    fn sentinel_connection(&self, i: usize) -> redis::RedisResult<redis::Connection> {
        self.open(&self.sentinel_urls()[i])
    }

    /// The primary's port as each sentinel reports it.
    pub fn reported_primaries(&self) -> Vec<Option<u16>> {
        (0..self.sentinels.len())
            .map(|i| {
                let mut conn = self.sentinel_connection(i).ok()?;
                let addr: Option<(String, String)> = redis::cmd("SENTINEL")
                    .arg("GET-MASTER-ADDR-BY-NAME")
                    .arg(SERVICE)
                    .query(&mut conn)
                    .ok()?;
                addr?.1.parse().ok()
            })
            .collect()
    }

    /// Index into `servers` of the primary that every sentinel names.
    pub fn primary(&self) -> Option<usize> {
        let reported = self.reported_primaries();
        let first = (*reported.first()?)?;
        if reported.iter().any(|p| *p != Some(first)) {
            return None;
        }
        self.servers.iter().position(|s| s.port == first)
    }

    /// Waits until every sentinel names `servers[primary]`, knows the other sentinels and a
    /// healthy replica, and a quorum is reachable: ready to fail over.
    pub fn wait_until_ready(&self, primary: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.is_ready(primary) {
            assert!(
                Instant::now() < deadline,
                "sentinels did not agree on primary {primary}: {:?}",
                self.reported_primaries()
            );
            sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every sentinel names `servers[primary]`.
    pub fn wait_for_primary(&self, primary: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.primary() != Some(primary) {
            assert!(
                Instant::now() < deadline,
                "no failover to {primary} within {within:?}: {:?}",
                self.reported_primaries()
            );
            sleep(Duration::from_millis(50));
        }
    }

    fn is_ready(&self, primary: usize) -> bool {
        if self.primary() != Some(primary) {
            return false;
        }
        let replica = 1 - primary;
        let replicating = self
            .server_connection(replica)
            .and_then(|mut c| {
                redis::cmd("INFO")
                    .arg("replication")
                    .query::<String>(&mut c)
            })
            .is_ok_and(|info| info.contains("master_link_status:up"));
        let replica_port = self.servers[replica].port.to_string();
        replicating
            && (0..self.sentinels.len()).all(|i| {
                let Ok(mut conn) = self.sentinel_connection(i) else {
                    return false;
                };
                let quorum = redis::cmd("SENTINEL")
                    .arg("CKQUORUM")
                    .arg(SERVICE)
                    .query::<String>(&mut conn)
                    .is_ok_and(|answer| answer.contains("3 usable"));
                let replicas: Vec<HashMap<String, String>> = redis::cmd("SENTINEL")
                    .arg("REPLICAS")
                    .arg(SERVICE)
                    .query(&mut conn)
                    .unwrap_or_default();
                let replica_known = replicas.iter().any(|r| {
                    r.get("port") == Some(&replica_port)
                        && r.get("flags").is_some_and(|f| !f.contains("down"))
                        && r.get("master-link-status").map(String::as_str) == Some("ok")
                });
                quorum && replica_known
            })
    }

    /// Waits until data node `i` replicates from the other one, as Sentinel makes a demoted
    /// primary do once it notices it. Until then a demoted primary that is still running still
    /// accepts writes, which its demotion discards.
    pub fn wait_for_replica(&self, i: usize, within: Duration) {
        let expected = format!("master_port:{}", self.servers[1 - i].port);
        let deadline = Instant::now() + within;
        loop {
            let info = self
                .server_connection(i)
                .and_then(|mut c| {
                    redis::cmd("INFO")
                        .arg("replication")
                        .query::<String>(&mut c)
                })
                .unwrap_or_default();
            if info.contains("role:slave")
                && info.contains(&expected)
                && info.contains("master_link_status:up")
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} did not become a replica within {within:?}: {info}"
            );
            sleep(Duration::from_millis(50));
        }
    }

    /// Makes data node `i` a replica of the other one, as Sentinel eventually does with a
    /// demoted primary that is still running (only after it has reported the wrong role for
    /// several seconds). Unlike Sentinel, this leaves its clients connected, so they meet
    /// `READONLY` on their next write.
    pub fn demote(&self, i: usize) {
        let mut conn = self
            .server_connection(i)
            .expect("connect to the old primary");
        redis::cmd("REPLICAOF")
            .arg("127.0.0.1")
            .arg(self.servers[1 - i].port)
            .exec(&mut conn)
            .expect("REPLICAOF");
    }

    /// Asks a sentinel to fail over now, without waiting for the primary to look down.
    pub fn force_failover(&self) {
        let mut conn = self.sentinel_connection(0).expect("connect to a sentinel");
        redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(SERVICE)
            .exec(&mut conn)
            .expect("SENTINEL FAILOVER");
    }

    /// Stops data node `i` at once, as a crash would.
    pub fn kill_server(&mut self, i: usize) {
        if let Ok(mut conn) = self.server_connection(i) {
            let _ = redis::cmd("SHUTDOWN")
                .arg("NOSAVE")
                .arg("NOW")
                .arg("FORCE")
                .exec(&mut conn);
        }
        self.servers[i].kill();
    }
}

/// A private CA and a certificate for `localhost` and 127.0.0.1 that it signed, made with
/// `openssl`.
pub struct TestCertificates {
    pub ca_cert: std::path::PathBuf,
    pub server_cert: std::path::PathBuf,
    pub server_key: std::path::PathBuf,
    _dir: TempDir,
}

impl TestCertificates {
    pub fn generate() -> Self {
        let dir = unique_dir("tls");
        let path = |name: &str| dir.0.join(name);
        let run = |args: &[&str]| {
            let status = Command::new("openssl")
                .args(args)
                .current_dir(&dir.0)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("openssl not found: install it (apt-get install openssl)");
            assert!(status.success(), "openssl {args:?} failed");
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        run(&[
            &["req", "-x509", "-new", "-nodes"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=actix-login test CA",
            ],
        ]
        .concat());
        run(&[
            &["req", "-new", "-nodes"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat());
        std::fs::write(
            path("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n\
             basicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\n",
        )
        .expect("certificate extensions");
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        Self {
            ca_cert: path("ca.crt"),
            server_cert: path("server.crt"),
            server_key: path("server.key"),
            _dir: dir,
        }
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(&self.ca_cert).expect("CA certificate")
    }

    /// `redis-server` arguments that serve TLS only, on `port`, with this certificate.
    pub fn server_args(&self, port: u16) -> String {
        format!(
            "--port 0 --tls-port {port} --tls-cert-file {} --tls-key-file {} \
             --tls-ca-cert-file {} --tls-auth-clients no",
            self.server_cert.display(),
            self.server_key.display(),
            self.ca_cert.display()
        )
    }
}

/// A `redis-server` that speaks TLS only, with a certificate from `certificates`' CA.
pub fn start_tls_server(certificates: &TestCertificates) -> Guarded {
    Guarded::spawn_on_free_port(|port| {
        format!(
            "redis-server --bind 127.0.0.1 --save '' --appendonly no --loglevel warning \
             --logfile '' {}",
            certificates.server_args(port)
        )
    })
}

/// The commands `RedisStore` runs, as an ACL rule: its reads and writes, `MULTI`/`EXEC`, the
/// throttling scripts (`EVALSHA`, `SCRIPT LOAD` when the server lacks one, and the `INCR`/`DECR`
/// they call), and `INFO` for the version check at connect.
pub const STORE_COMMANDS: &str =
    "-@all +get +mget +set +del +ping +pttl +pexpire +sadd +srem +smembers \
    +incr +decr +multi +exec +evalsha +script|load +info";

/// Adds an ACL user `name` with `password` that may run only the store's commands, on keys
/// under `prefix` only.
pub fn acl_user(server: &RedisServer, name: &str, password: &str, prefix: &str) {
    let mut conn = connection(&server.url()).expect("connect as admin");
    let mut setuser = redis::cmd("ACL");
    setuser
        .arg("SETUSER")
        .arg(name)
        .arg("reset")
        .arg("on")
        .arg(format!(">{password}"))
        .arg(format!("~{prefix}:*"));
    for rule in STORE_COMMANDS.split_whitespace() {
        setuser.arg(rule);
    }
    setuser.exec(&mut conn).expect("ACL SETUSER");
}
