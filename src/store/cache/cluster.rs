//! The local cache on a Redis Cluster: one [`LocalCache`] per primary, each with its own
//! tracking connection, and a key sent to the one whose node serves its slot.
//!
//! Redis tracks keys per server, so a copy is only as good as the node it was read from: a
//! lookup goes to the cache of the node that owns the key's slot by the cluster's slot map
//! (`CLUSTER SLOTS`, read through the store's own connection), and its fetch is read there,
//! through that node's tracking connection. What keeps the copies honest, beyond the rules of
//! one server (see the [module](super)):
//!
//! * **A fetch the node does not answer with the record caches nothing.** A node that no
//!   longer owns the slot answers `MOVED` or `ASK`: an error, which drops that node's tracking
//!   connection and entries (as any failed fetch does), and the map is read again.
//! * **Keys that leave a node invalidate themselves.** A slot migration moves keys with
//!   `MIGRATE`, which deletes them on the source node, and the deletion reaches its tracking
//!   clients like any other.
//! * **A node that stops being a primary stops the cache.** The heartbeat of each node's
//!   tracking connection asks `ROLE`; a demoted primary (a failover, manual or not, which
//!   closes no connection) empties that node's cache at the next beat.
//! * **A changed slot map empties every node's cache.** The map is read once a second and
//!   after a fetch through a node failed; when it differs from the last one, every entry goes
//!   (simple, and safe: a copy is only ever dropped), caches are opened for new primaries and
//!   closed for nodes that are no longer primaries.
//!
//! The last two bound, by a heartbeat (250 ms) or a map read (1 s), how long after a failover
//! a copy read from the demoted primary can be served while the promoted replica already took a
//! logout from another instance: the same bound as for a standalone server whose address moved.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use redis::aio::MultiplexedConnection;
use redis::Value;

use super::{lock, LocalCache, ServerProbe, TrackingTarget};
use crate::error::StoreError;
use crate::store::LoadedSession;

/// Reads the cluster's slot map (`CLUSTER SLOTS`) through the store's connection.
pub(crate) type SlotSource =
    Arc<dyn Fn() -> BoxFuture<'static, Result<Value, StoreError>> + Send + Sync>;

/// Where the tracking connection of the node at a host and port goes, and how to ask the
/// store's connection which server that node is.
pub(crate) type NodeSetup = Arc<dyn Fn(&str, u16) -> (TrackingTarget, ServerProbe) + Send + Sync>;

/// How often the slot map is read again when nothing else asks for it.
const MAP_CHECK_EVERY: Duration = Duration::from_secs(1);

/// How long after a read of the slot map on demand another may start.
const DEMAND_PAUSE: Duration = Duration::from_millis(100);

/// The number of hash slots of a Redis Cluster.
const SLOTS: u16 = 16384;

/// A node by the host and port the cluster announces for it.
type Node = (String, u16);

/// The caches of a cluster's primaries, shared by all clones of a store.
#[derive(Clone)]
pub(crate) struct ClusterCache {
    shared: Arc<Shared>,
}

struct Shared {
    slots: SlotSource,
    setup: NodeSetup,
    /// Used when the cluster announces a node without a host: the host the store was given.
    seed_host: String,
    capacity_per_node: usize,
    runtime: tokio::runtime::Handle,
    routing: Mutex<Routing>,
    /// Set while a read of the slot map is under way, so that a burst of misses makes one.
    refreshing: AtomicBool,
    /// When the last read on demand started: misses while a node's tracking connection is
    /// down would otherwise read the map back to back.
    last_demand: Mutex<Option<Instant>>,
}

#[derive(Default)]
struct Routing {
    /// Slot ranges and the primary that serves each, sorted.
    map: Vec<(u16, u16, Node)>,
    caches: HashMap<Node, LocalCache>,
}

impl Routing {
    fn owner(&self, slot: u16) -> Option<&Node> {
        self.map
            .iter()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .map(|(_, _, node)| node)
    }
}

impl ClusterCache {
    /// Reads the slot map and opens a tracking connection to every primary in it; fails if
    /// either cannot be done now.
    pub(crate) async fn connect(
        slots: SlotSource,
        setup: NodeSetup,
        seed_host: String,
        capacity: usize,
    ) -> Result<Self, StoreError> {
        let map = read_map(&slots, &seed_host).await?;
        let primaries = primaries(&map);
        let shared = Arc::new(Shared {
            slots,
            setup,
            seed_host,
            capacity_per_node: capacity.div_ceil(primaries.len().max(1)).max(1),
            runtime: tokio::runtime::Handle::current(),
            routing: Mutex::new(Routing::default()),
            refreshing: AtomicBool::new(false),
            last_demand: Mutex::new(None),
        });
        let mut caches = HashMap::new();
        for node in primaries {
            let cache = shared.open_node(&node).await?;
            caches.insert(node, cache);
        }
        *lock(&shared.routing) = Routing { map, caches };
        shared
            .runtime
            .spawn(Shared::watch_map(Arc::downgrade(&shared)));
        Ok(Self { shared })
    }

    /// The cache of the primary that serves `key`'s slot, if the map names one. A clone, so
    /// that the routing lock is released before the node's cache takes its own locks.
    fn cache_for(&self, key: &str) -> Option<LocalCache> {
        let slot = slot_of(key.as_bytes());
        let routing = lock(&self.shared.routing);
        routing
            .owner(slot)
            .and_then(|node| routing.caches.get(node))
            .cloned()
    }

    /// As [`LocalCache::cached`], from the cache of the primary that serves `key`'s slot.
    pub(crate) fn cached(&self, key: &str) -> Option<LoadedSession> {
        self.cache_for(key)?.cached(key)
    }

    /// As [`LocalCache::load`], from the cache of the primary that serves `key`'s slot; `None`
    /// when there is none now (the store reads by itself).
    pub(crate) async fn load<F, Fut>(
        &self,
        key: &str,
        fetch: F,
    ) -> Option<Result<Option<LoadedSession>, StoreError>>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = Result<Option<LoadedSession>, StoreError>>,
    {
        let Some(cache) = self.cache_for(key) else {
            Shared::refresh_soon(&self.shared);
            return None;
        };
        let answer = cache.load(key, fetch).await;
        if answer.is_none() {
            // The node's tracking connection is down or its fetch failed (perhaps `MOVED`):
            // the map may be out of date.
            Shared::refresh_soon(&self.shared);
        }
        answer
    }
}

impl Shared {
    async fn read_map(&self) -> Result<Vec<(u16, u16, Node)>, StoreError> {
        read_map(&self.slots, &self.seed_host).await
    }

    async fn open_node(&self, node: &Node) -> Result<LocalCache, StoreError> {
        let (target, probe) = (self.setup)(&node.0, node.1);
        LocalCache::connect(target, self.capacity_per_node, probe).await
    }

    /// Reads the slot map every [`MAP_CHECK_EVERY`] while the store lives.
    async fn watch_map(cache: Weak<Self>) {
        loop {
            tokio::time::sleep(MAP_CHECK_EVERY).await;
            let Some(shared) = cache.upgrade() else {
                return;
            };
            shared.refresh().await;
        }
    }

    /// Starts a read of the slot map in the background, unless one is under way or started
    /// less than [`DEMAND_PAUSE`] ago.
    fn refresh_soon(shared: &Arc<Self>) {
        if shared.refreshing.load(Ordering::Acquire) {
            return;
        }
        {
            let mut last = lock(&shared.last_demand);
            if last.is_some_and(|at| at.elapsed() < DEMAND_PAUSE) {
                return;
            }
            *last = Some(Instant::now());
        }
        let shared = Arc::clone(shared);
        shared
            .runtime
            .clone()
            .spawn(async move { shared.refresh().await });
    }

    /// Reads the slot map; if it changed, empties every cache and follows the new primaries.
    async fn refresh(&self) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        match self.read_map().await {
            Ok(map) => self.follow(map).await,
            Err(err) => {
                // Nothing learned, nothing changed: the node caches keep their own checks.
                tracing::warn!(error = %err, "session cache: could not read the cluster's slot map");
            }
        }
        self.refreshing.store(false, Ordering::Release);
    }

    async fn follow(&self, map: Vec<(u16, u16, Node)>) {
        let missing = {
            let mut routing = lock(&self.routing);
            if routing.map == map {
                return;
            }
            tracing::warn!(
                "session cache: the cluster's slot map changed; emptied the cache of every node"
            );
            for cache in routing.caches.values() {
                cache.clear();
            }
            let primaries = primaries(&map);
            routing.caches.retain(|node, _| primaries.contains(node));
            routing.map = map;
            primaries
                .into_iter()
                .filter(|node| !routing.caches.contains_key(node))
                .collect::<Vec<_>>()
        };
        for node in missing {
            match self.open_node(&node).await {
                Ok(cache) => {
                    let mut routing = lock(&self.routing);
                    if routing.map.iter().any(|(_, _, owner)| *owner == node) {
                        routing.caches.entry(node).or_insert(cache);
                    }
                }
                Err(err) => {
                    // The next read of the map tries again.
                    tracing::warn!(error = %err, "session cache: no tracking connection to a new primary");
                    let mut routing = lock(&self.routing);
                    routing.map.clear();
                }
            }
        }
    }
}

async fn read_map(
    slots: &SlotSource,
    seed_host: &str,
) -> Result<Vec<(u16, u16, Node)>, StoreError> {
    let reply = slots().await?;
    parse_slots(&reply, seed_host)
        .ok_or_else(|| StoreError::unavailable("unreadable CLUSTER SLOTS reply"))
}

/// The distinct primaries of `map`.
fn primaries(map: &[(u16, u16, Node)]) -> Vec<Node> {
    let mut nodes: Vec<Node> = map.iter().map(|(_, _, node)| node.clone()).collect();
    nodes.sort();
    nodes.dedup();
    nodes
}

/// The slot ranges of a `CLUSTER SLOTS` reply and the primary of each, sorted; `None` if the
/// reply is not one. A primary announced without a host is on `seed_host`; one whose host is
/// unknown (`?`) serves nothing from the cache.
fn parse_slots(reply: &Value, seed_host: &str) -> Option<Vec<(u16, u16, Node)>> {
    let Value::Array(ranges) = reply else {
        return None;
    };
    let mut map = Vec::with_capacity(ranges.len());
    for range in ranges {
        let Value::Array(fields) = range else {
            return None;
        };
        let [start, end, primary, ..] = fields.as_slice() else {
            return None;
        };
        let (Value::Int(start), Value::Int(end), Value::Array(primary)) = (start, end, primary)
        else {
            return None;
        };
        let [host, port, ..] = primary.as_slice() else {
            return None;
        };
        let host = match host {
            Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok()?,
            Value::SimpleString(text) => text.clone(),
            _ => return None,
        };
        let Value::Int(port) = port else {
            return None;
        };
        if host == "?" {
            continue;
        }
        let host = if host.is_empty() {
            seed_host.to_owned()
        } else {
            host
        };
        map.push((
            u16::try_from(*start).ok()?,
            u16::try_from(*end).ok()?,
            (host, u16::try_from(*port).ok()?),
        ));
    }
    map.sort();
    Some(map)
}

/// The hash slot of `key`: CRC16 of its hash tag (the text inside the first `{…}`, if not
/// empty) or of the whole key, as Redis Cluster computes it.
fn slot_of(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|b| *b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|b| *b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16(tagged.unwrap_or(key)) % SLOTS
}

/// CRC-16/XMODEM, the checksum of Redis Cluster's key slots.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for byte in bytes {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis_cluster() {
        // Values from Redis's CLUSTER KEYSLOT.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"user1000"));
        assert_ne!(slot_of(b"foo{}{bar}"), slot_of(b"bar"));
        assert_eq!(slot_of(b"foo{{bar}}zap"), slot_of(b"{bar"));
        assert_eq!(slot_of(b"p:s:{ab}cd"), slot_of(b"ab"));
    }

    #[test]
    fn a_slot_map_is_read_with_its_primaries() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(16383),
                node("", 7001),
                node("10.0.0.9", 7004),
            ]),
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("10.0.0.1", 7000),
            ]),
        ]);
        let map = parse_slots(&reply, "seed").unwrap();
        assert_eq!(
            map,
            vec![
                (0, 5460, ("10.0.0.1".to_owned(), 7000)),
                (5461, 16383, ("seed".to_owned(), 7001)),
            ]
        );
        assert!(parse_slots(&Value::Int(1), "seed").is_none());
    }
}
