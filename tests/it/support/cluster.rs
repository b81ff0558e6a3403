//! A Redis Cluster of real `redis-server` processes.

use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::process::{unique_dir, TempDir};
use super::redis_server::{connection, RedisServer};

/// A three-primary Redis Cluster on free ports, torn down with the test process.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    _dir: TempDir,
}

impl RedisCluster {
    pub fn start() -> Self {
        let dir = unique_dir("cluster");
        let nodes: Vec<RedisServer> = (0..3)
            .map(|i| {
                RedisServer::start_with(&format!(
                    "--cluster-enabled yes --cluster-config-file node-{i}.conf \
                     --cluster-node-timeout 2000 --dir {}",
                    dir.0.display()
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
        let cluster = Self { nodes, _dir: dir };
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
