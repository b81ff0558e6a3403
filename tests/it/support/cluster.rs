//! A Redis Cluster of real `redis-server` processes.

use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::process::free_port;
use super::process::{unique_dir, TempDir};
use super::redis_server::{connection, RedisServer};
use super::tls::TestCertificates;

/// A three-primary Redis Cluster on free ports, torn down with the test process.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    /// With TLS, the TLS port of each node.
    pub tls_ports: Vec<u16>,
    dir: TempDir,
}

impl RedisCluster {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// With `tls`, every node also serves TLS on `tls_ports[i]`, with a certificate from that
    /// CA, and the cluster bus and replication run over TLS; clients over TLS are told the TLS
    /// ports.
    pub fn start_with(tls: Option<&TestCertificates>) -> Self {
        let dir = unique_dir("cluster");
        let mut tls_ports = Vec::new();
        let nodes: Vec<RedisServer> = (0..3)
            .map(|i| {
                let tls_args = match tls {
                    Some(certificates) => {
                        // The bus listens 10000 above the TLS port.
                        let port = loop {
                            let port = free_port();
                            if port <= 55_000 {
                                break port;
                            }
                        };
                        tls_ports.push(port);
                        format!(
                            "--tls-port {port} --cluster-port {bus} --tls-cluster yes \
                             --tls-replication yes \
                             --tls-cert-file {} --tls-key-file {} --tls-ca-cert-file {} \
                             --tls-auth-clients no",
                            certificates.server_cert.display(),
                            certificates.server_key.display(),
                            certificates.ca_cert.display(),
                            bus = port + 10_000,
                        )
                    }
                    None => String::new(),
                };
                RedisServer::start_with(&format!(
                    "--cluster-enabled yes --cluster-config-file node-{i}.conf \
                     --cluster-node-timeout 2000 --dir {} {tls_args}",
                    dir.0.display()
                ))
            })
            .collect();
        let addresses: Vec<String> = match tls {
            Some(_) => tls_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
            None => nodes
                .iter()
                .map(|n| format!("127.0.0.1:{}", n.port))
                .collect(),
        };
        // Bounded: a cluster whose nodes cannot meet makes redis-cli wait forever.
        let mut create = Command::new("timeout");
        create.arg("30").arg("redis-cli");
        if let Some(certificates) = tls {
            create
                .arg("--tls")
                .arg("--cacert")
                .arg(&certificates.ca_cert);
        }
        let created = create
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
            tls_ports,
            dir,
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

    /// A store on this cluster with the store's default settings, its keys under `prefix`.
    pub async fn store(&self, prefix: &str) -> actix_login::RedisStore {
        actix_login::RedisStore::cluster_builder(self.urls())
            .key_prefix(prefix)
            .connect()
            .await
            .expect("connect to the cluster")
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

    /// The index of the node that serves `key`'s slot: the one that does not redirect it.
    pub fn node_serving(&self, key: &str) -> usize {
        (0..self.nodes.len())
            .find(|i| {
                let mut conn = connection(&self.nodes[*i].url()).expect("connect to node");
                redis::cmd("EXISTS")
                    .arg(key)
                    .query::<i64>(&mut conn)
                    .is_ok()
            })
            .expect("no node serves the key")
    }

    /// Moves `key`'s slot, with its keys, from the node that serves it to another primary, as
    /// a resharding does (`SETSLOT … IMPORTING`/`MIGRATING`, `MIGRATE`, `SETSLOT … NODE`), and
    /// waits until every node agrees. Returns the nodes it moved from and to.
    pub fn move_slot_of(&self, key: &str) -> (usize, usize) {
        let from = self.node_serving(key);
        let to = (0..3).find(|i| *i != from).unwrap_or(0);
        let conn = |i: usize| connection(&self.nodes[i].url()).expect("connect to node");
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut conn(from))
            .unwrap();
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        let setslot = |i: usize, how: &str, id: &str| {
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg(how)
                .arg(id)
                .exec(&mut conn(i))
                .expect("CLUSTER SETSLOT");
        };
        setslot(to, "IMPORTING", &from_id);
        setslot(from, "MIGRATING", &to_id);
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(100)
                .query(&mut conn(from))
                .unwrap();
            if keys.is_empty() {
                break;
            }
            redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(self.nodes[to].port)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys)
                .exec(&mut conn(from))
                .expect("MIGRATE");
        }
        for i in [to, from]
            .into_iter()
            .chain((0..self.nodes.len()).filter(|i| *i != to && *i != from))
        {
            setslot(i, "NODE", &to_id);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.node_serving(key) != to || !self.is_ok() {
            assert!(Instant::now() < deadline, "the slot did not move");
            sleep(Duration::from_millis(20));
        }
        (from, to)
    }

    /// Adds a replica of primary `of` and waits until it is in sync; returns its index.
    pub fn add_replica(&mut self, of: usize) -> usize {
        let index = self.nodes.len();
        let dir = &self.dir.0;
        let node = RedisServer::start_with(&format!(
            "--cluster-enabled yes --cluster-config-file node-{index}.conf \
             --cluster-node-timeout 2000 --dir {}",
            dir.display()
        ));
        let mut conn = connection(&node.url()).expect("connect to the new node");
        redis::cmd("CLUSTER")
            .arg("MEET")
            .arg("127.0.0.1")
            .arg(self.nodes[of].port)
            .exec(&mut conn)
            .expect("CLUSTER MEET");
        let primary = self.node_id(of);
        let deadline = Instant::now() + Duration::from_secs(20);
        while redis::cmd("CLUSTER")
            .arg("REPLICATE")
            .arg(&primary)
            .exec(&mut conn)
            .is_err()
        {
            // Until the new node has heard of the primary through the handshake.
            assert!(
                Instant::now() < deadline,
                "the replica never met its primary"
            );
            sleep(Duration::from_millis(50));
        }
        loop {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut conn)
                .unwrap();
            if info.contains("master_link_status:up") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the replica did not sync: {info}"
            );
            sleep(Duration::from_millis(50));
        }
        self.nodes.push(node);
        index
    }

    /// `CLUSTER FAILOVER` on replica `replica`, and waits until it is a primary that every
    /// node knows and the cluster is ok.
    pub fn failover_to(&self, replica: usize) {
        let mut conn = connection(&self.nodes[replica].url()).expect("connect to the replica");
        redis::cmd("CLUSTER")
            .arg("FAILOVER")
            .exec(&mut conn)
            .expect("CLUSTER FAILOVER");
        let id = self.node_id(replica);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let agreed = self.nodes.iter().all(|node| {
                connection(&node.url())
                    .and_then(|mut c| redis::cmd("CLUSTER").arg("NODES").query::<String>(&mut c))
                    .is_ok_and(|nodes| {
                        nodes
                            .lines()
                            .any(|line| line.starts_with(&id) && line.contains("master"))
                    })
            });
            if agreed && self.is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "the failover did not complete");
            sleep(Duration::from_millis(50));
        }
    }

    /// Has node `i` announce `ports[i]` to clients instead of its own port (a proxy in front
    /// of it), and waits until every node's slot map names only those ports, so that a
    /// client that reads the map reaches each node through its proxy alone.
    pub fn announce_ports(&self, ports: &[u16]) {
        for (node, port) in self.nodes.iter().zip(ports) {
            let mut conn = connection(&node.url()).expect("connect to node");
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("cluster-announce-port")
                .arg(port)
                .exec(&mut conn)
                .expect("CONFIG SET cluster-announce-port");
        }
        let announced_only = |node: &RedisServer| {
            let Ok(mut conn) = connection(&node.url()) else {
                return false;
            };
            let Ok(slots) = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query::<Vec<(u16, u16, Vec<redis::Value>)>>(&mut conn)
            else {
                return false;
            };
            !slots.is_empty()
                && slots.iter().all(|(_, _, primary)| {
                    matches!(primary.get(1), Some(redis::Value::Int(port))
                        if ports.iter().any(|p| i64::from(*p) == *port))
                })
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.nodes.iter().all(announced_only) {
            assert!(
                Instant::now() < deadline,
                "the nodes never announced the new ports"
            );
            sleep(Duration::from_millis(50));
        }
    }

    fn is_ok(&self) -> bool {
        self.nodes.iter().all(|node| {
            connection(&node.url())
                .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c))
                .is_ok_and(|info| info.contains("cluster_state:ok"))
        })
    }
}
