//! A private deployment of each kind the local cache runs on (one Redis, a cluster, Sentinel,
//! TLS), with what the cache's tests do to it from outside: count the commands its data nodes
//! were sent, run a command on the node that holds a key, find and kill the tracking
//! connections, pause every node.

use std::any::Any;
use std::collections::HashMap;
use std::time::Duration;

use actix_login::{RedisStore, RedisStoreBuilder};

use super::cluster::RedisCluster;
use super::redis_server::RedisServer;
use super::sentinel::{RedisSentinel, SERVICE};
use super::tls::{start_tls_server, TestCertificates};

/// The deployments the local cache runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    OneRedis,
    Cluster,
    Sentinel,
    Tls,
    /// Sentinel with every process, sentinels included, speaking TLS only.
    SentinelTls,
    /// A cluster whose clients (and bus) speak TLS.
    ClusterTls,
}

/// A private deployment of one [`Kind`], torn down when dropped.
pub struct Backend {
    pub kind: Kind,
    /// What the store is given: one URL, the cluster's seeds, or the sentinels.
    urls: Vec<String>,
    /// The data nodes, logged in (over TLS where the deployment is).
    nodes: Vec<redis::Client>,
    tls_root: Option<Vec<u8>>,
    /// Connections to the data nodes for [`Backend::command_counts`].
    counting: std::sync::Mutex<Vec<redis::Connection>>,
    /// The processes; a cluster's and Sentinel's are reachable through [`Backend::cluster`] and
    /// [`Backend::sentinel`].
    owned: Box<dyn Any>,
}

fn client(url: &str, root: Option<&[u8]>) -> redis::Client {
    match root {
        Some(root) => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root.to_vec()),
            },
        )
        .unwrap(),
        None => redis::Client::open(url).unwrap(),
    }
}

impl Backend {
    pub fn start(kind: Kind) -> Self {
        match kind {
            Kind::OneRedis => {
                let server = RedisServer::start();
                Self {
                    kind,
                    urls: vec![server.url()],
                    nodes: vec![client(&server.url(), None)],
                    tls_root: None,
                    counting: Default::default(),
                    owned: Box::new(server),
                }
            }
            Kind::Cluster => {
                let cluster = RedisCluster::start();
                Self {
                    kind,
                    urls: cluster.urls(),
                    nodes: cluster.urls().iter().map(|url| client(url, None)).collect(),
                    tls_root: None,
                    counting: Default::default(),
                    owned: Box::new(cluster),
                }
            }
            Kind::Sentinel => {
                let sentinel = RedisSentinel::start();
                Self {
                    kind,
                    urls: sentinel.sentinel_urls(),
                    nodes: (0..2)
                        .map(|i| client(&sentinel.server_url(i), None))
                        .collect(),
                    tls_root: None,
                    counting: Default::default(),
                    owned: Box::new(sentinel),
                }
            }
            Kind::ClusterTls => {
                let certificates = TestCertificates::generate();
                let cluster = RedisCluster::start_with(Some(&certificates));
                let root = certificates.ca_pem();
                let urls: Vec<String> = cluster
                    .tls_ports
                    .iter()
                    .map(|port| format!("rediss://127.0.0.1:{port}"))
                    .collect();
                Self {
                    kind,
                    nodes: urls.iter().map(|url| client(url, Some(&root))).collect(),
                    urls,
                    tls_root: Some(root),
                    counting: Default::default(),
                    owned: Box::new((cluster, certificates)),
                }
            }
            Kind::SentinelTls => {
                let sentinel = RedisSentinel::start_with(None, Some(TestCertificates::generate()));
                let root = sentinel.tls.as_ref().map(TestCertificates::ca_pem);
                Self {
                    kind,
                    urls: sentinel.sentinel_urls(),
                    nodes: (0..2)
                        .map(|i| client(&sentinel.server_url(i), root.as_deref()))
                        .collect(),
                    tls_root: root,
                    counting: Default::default(),
                    owned: Box::new(sentinel),
                }
            }
            Kind::Tls => {
                let certificates = TestCertificates::generate();
                let server = start_tls_server(&certificates);
                let url = format!("rediss://localhost:{}", server.port);
                let root = certificates.ca_pem();
                Self {
                    kind,
                    nodes: vec![client(&url, Some(&root))],
                    urls: vec![url],
                    tls_root: Some(root),
                    counting: Default::default(),
                    owned: Box::new((certificates, server)),
                }
            }
        }
    }

    /// A builder for a store on this deployment, without a cache.
    pub fn builder(&self) -> RedisStoreBuilder {
        match self.kind {
            Kind::OneRedis => RedisStore::builder(&self.urls[0]),
            Kind::Cluster => RedisStore::cluster_builder(self.urls.clone()),
            Kind::ClusterTls => RedisStore::cluster_builder(self.urls.clone())
                .tls_root_certificate(self.tls_root.clone().unwrap_or_default()),
            Kind::Sentinel => RedisStore::sentinel_builder(self.urls.clone(), SERVICE),
            Kind::SentinelTls => RedisStore::sentinel_builder(self.urls.clone(), SERVICE)
                .tls_root_certificate(self.tls_root.clone().unwrap_or_default()),
            Kind::Tls => RedisStore::builder(&self.urls[0])
                .tls_root_certificate(self.tls_root.clone().unwrap_or_default()),
        }
    }

    pub fn cluster(&self) -> &RedisCluster {
        self.owned
            .downcast_ref::<RedisCluster>()
            .expect("not a cluster")
    }

    pub fn sentinel(&self) -> &RedisSentinel {
        self.owned
            .downcast_ref::<RedisSentinel>()
            .expect("not a Sentinel deployment")
    }

    /// Adds a replica of cluster node `of`, counted with the data nodes; returns its index.
    pub fn add_cluster_replica(&mut self, of: usize) -> usize {
        let cluster = self
            .owned
            .downcast_mut::<RedisCluster>()
            .expect("not a cluster");
        let replica = cluster.add_replica(of);
        let url = cluster.nodes[replica].url();
        self.nodes.push(client(&url, None));
        replica
    }

    /// Clients of the data nodes.
    pub fn clients(&self) -> Vec<redis::Client> {
        self.nodes.clone()
    }

    pub fn node_connections(&self) -> Vec<redis::Connection> {
        self.nodes
            .iter()
            .map(|node| {
                node.get_connection_with_timeout(Duration::from_secs(2))
                    .unwrap()
            })
            .collect()
    }

    /// Calls per command since each data node started, summed over the nodes.
    pub fn command_counts(&self) -> HashMap<String, u64> {
        let mut total = HashMap::new();
        let mut counting = self.counting.lock().unwrap_or_else(|e| e.into_inner());
        if counting.len() != self.nodes.len() {
            // Opened once: a count is taken twice per proof of a cache hit.
            *counting = self.node_connections();
        }
        for (i, conn) in counting.iter_mut().enumerate() {
            let mut stats = redis::cmd("INFO");
            stats.arg("commandstats");
            let info: String = match stats.query(conn) {
                Ok(info) => info,
                // Closed by the server (Sentinel kills clients of the nodes it reconfigures).
                Err(_) => {
                    *conn = self.nodes[i]
                        .get_connection_with_timeout(Duration::from_secs(2))
                        .unwrap();
                    stats.query(conn).unwrap()
                }
            };
            for line in info.lines() {
                let Some((name, stats)) = line
                    .strip_prefix("cmdstat_")
                    .and_then(|rest| rest.split_once(':'))
                else {
                    continue;
                };
                let calls: u64 = stats
                    .strip_prefix("calls=")
                    .and_then(|s| s.split(',').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                *total.entry(name.to_owned()).or_insert(0) += calls;
            }
        }
        total
    }

    /// The commands that requests sent since `before`, leaving out what runs whatever requests
    /// do: the measurement's own `INFO`, the cache's heartbeats (`PING`, `ROLE`) and checks
    /// (`INFO`, `CLUSTER SLOTS`), and the replication and Sentinel traffic.
    pub fn commands_since(&self, before: &HashMap<String, u64>) -> HashMap<String, u64> {
        self.command_counts()
            .into_iter()
            .filter(|(name, _)| {
                !(matches!(
                    name.as_str(),
                    "info" | "hello" | "ping" | "role" | "replconf" | "publish" | "subscribe"
                ) || name.starts_with("client|")
                    || name.starts_with("cluster|"))
            })
            .filter_map(|(name, calls)| {
                let delta = calls - before.get(&name).copied().unwrap_or(0);
                (delta > 0).then_some((name, delta))
            })
            .collect()
    }

    /// Runs `command` on every data node that has `key` (on a cluster, the node that serves
    /// its slot; elsewhere, the primary), then one more round trip there, so that the
    /// invalidations it caused are out.
    pub fn run_settled(&self, key: &str, command: &redis::Cmd) {
        for mut conn in self.node_connections() {
            let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut conn).unwrap();
            let primary =
                matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master");
            if !primary {
                continue;
            }
            if matches!(self.kind, Kind::Cluster | Kind::ClusterTls) {
                let exists: redis::RedisResult<i64> =
                    redis::cmd("EXISTS").arg(key).query(&mut conn);
                if exists.is_err() {
                    // MOVED: another node serves the key.
                    continue;
                }
            }
            command.exec(&mut conn).unwrap();
            redis::cmd("PING").exec(&mut conn).unwrap();
        }
    }

    /// `FLUSHALL` on every primary, settled.
    pub fn flush_all(&self) {
        for mut conn in self.node_connections() {
            let _ = redis::cmd("FLUSHALL").exec(&mut conn);
            redis::cmd("PING").exec(&mut conn).unwrap();
        }
    }

    /// Each data node's tracking clients: (node, client id).
    pub fn tracking_clients(&self) -> Vec<(usize, String)> {
        let mut found = Vec::new();
        for (i, mut conn) in self.node_connections().into_iter().enumerate() {
            let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut conn).unwrap();
            for line in list.lines() {
                let field = |name: &str| line.split(' ').find_map(|f| f.strip_prefix(name));
                if field("flags=").is_some_and(|flags| flags.contains('t')) {
                    if let Some(id) = field("id=") {
                        found.push((i, id.to_owned()));
                    }
                }
            }
        }
        found
    }

    /// Closes every tracking connection from the servers' side.
    pub fn kill_tracking_clients(&self) {
        let mut conns = self.node_connections();
        for (i, id) in self.tracking_clients() {
            redis::cmd("CLIENT")
                .arg("KILL")
                .arg("ID")
                .arg(id)
                .exec(&mut conns[i])
                .unwrap();
        }
    }

    /// `CLIENT PAUSE ms ALL` on every data node.
    pub fn pause(&self, ms: u64) {
        for mut conn in self.node_connections() {
            redis::cmd("CLIENT")
                .arg("PAUSE")
                .arg(ms)
                .arg("ALL")
                .exec(&mut conn)
                .unwrap();
        }
    }
}
