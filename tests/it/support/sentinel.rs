//! A Sentinel-managed primary and replica, with three sentinels, as real processes.

use std::collections::HashMap;
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::process::{unique_dir, Frozen, Guarded, TempDir};
use super::tls::TestCertificates;

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

    /// Stops data node `i` with `SIGSTOP` until the guard is dropped: its sockets stay open,
    /// and whatever is sent to it waits in its kernel buffers, unread.
    pub fn freeze_server(&self, i: usize) -> Frozen {
        let mut conn = self.server_connection(i).expect("connect to the data node");
        let info: String = redis::cmd("INFO").arg("server").query(&mut conn).unwrap();
        let pid = info
            .lines()
            .find_map(|line| line.strip_prefix("process_id:"))
            .and_then(|pid| pid.trim().parse().ok())
            .expect("process_id in INFO server");
        Frozen::stop(pid)
    }

    /// Makes primary `i` close its links to its replicas, and waits until it has none. A frozen
    /// replica cannot reconnect, so nothing written from now on reaches it, not even into its
    /// socket.
    pub fn cut_replication(&self, i: usize) {
        let mut conn = self.server_connection(i).expect("connect to the primary");
        redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("replica")
            .exec(&mut conn)
            .expect("CLIENT KILL TYPE replica");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut conn)
                .unwrap();
            if info.contains("connected_slaves:0") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the replica stayed connected: {info}"
            );
            sleep(Duration::from_millis(20));
        }
    }
}
