//! An in-process copy of session records, and their data when it is small, that Redis keeps honest: the layer behind
//! [`RedisStoreBuilder::local_cache`](super::RedisStoreBuilder::local_cache).
//!
//! Records are fetched through one dedicated connection with `CLIENT TRACKING ON` (RESP3), so
//! Redis remembers which keys this process holds and pushes an `invalidate` message on that
//! connection the moment any client changes or deletes one of them, or it expires.
//!
//! Three rules keep the copy from ever outliving the record:
//!
//! 1. **Every byte is read through the scanner** ([`resp3`]), wired into the tracking
//!    connection's socket ([`tracking`]). Invalidations are applied while the bytes are read off
//!    the socket, under the same lock a lookup takes, before the connection's parser sees them.
//!    A lookup answers from memory only when nothing is waiting in the socket (a non-blocking
//!    `peek`) and no half-read frame is buffered; otherwise it fetches. Over TLS (`rediss://`)
//!    the scanner reads the decrypted bytes, and an empty socket is not enough: rustls may hold
//!    plaintext it has decrypted but not handed on, or part of a record it cannot decrypt yet.
//!    So the reader drains rustls through the scanner until it reports `Pending`, and follows
//!    the raw bytes' record boundaries; a lookup answers from memory only when the socket is
//!    empty, the last drain ended in `Pending` and the raw stream is between records (see
//!    [`transport`]).
//! 2. **A fetch registers itself before it is sent.** Its slot holds a fresh fill id; an
//!    invalidation that lands before the reply is stored removes the slot, and the fill then
//!    stores nothing. So a value read before a change can never be stored after it.
//! 3. **A lost connection empties the cache.** Redis forgets the tracking of a closed
//!    connection, so every entry it vouched for is dropped, and lookups go to Redis until a new
//!    tracking connection is up.
//!
//! A session-ending write anywhere must also wait for one more round trip after its `DEL`,
//! because Redis writes invalidations in the event-loop pass that answers the `DEL`: once a
//! later command is answered, the invalidation is in every tracking process's socket, where
//! rule 1 finds it. That wait is the writer's job, so it is the store's, not this module's:
//! see `RedisStoreBuilder::peer_caches`.
//!
//! 4. **The tracking connection must reach the store's server.** Both dial the same address,
//!    but separately, and the store's connection reconnects by itself: after a virtual IP,
//!    DNS name or service address moves, the two can reach different servers, and the cache
//!    would never hear of writes on the store's. Each tracking connection records the server's
//!    `run_id` (`INFO server`), and it must match the one the store's connection reports: when
//!    the tracking connection is set up, every [`CHECK_SERVER_EVERY`](tracking) heartbeats,
//!    and after each session-ending delete of this process on one server (whose settling round
//!    trip is that `INFO`). On a mismatch the cache empties, warns, and lookups read from Redis
//!    until a new tracking connection agrees with the store's.
//!
//! # Deployments
//!
//! * **One server**, over TCP or TLS: one tracking connection to the store's address.
//! * **Sentinel**: the tracking connection goes to the primary the sentinels name when it
//!   (re)connects, and rule 4 holds it to the one the store's connection reaches. Its heartbeat
//!   is `ROLE`, which must answer `master`: a primary demoted without closing its connections
//!   empties the cache at the next beat. Sentinel itself closes the clients of a server it
//!   demotes, which empties it by rule 3.
//! * **Cluster** ([`cluster`]): one cache and tracking connection per primary, a key sent to
//!   the one that serves its slot; the same `ROLE` heartbeat per node; the slot map read once a
//!   second, a change emptying every node's cache.
//!
//! A failover the old server survives (a cluster's `CLUSTER FAILOVER`, a primary demoted behind
//! Sentinel's back) is noticed at the next heartbeat: a logout through another instance on the
//! promoted server may be served from memory for that long (250 ms), as after an address moved
//! (rule 4). While Sentinel has promoted a replica but not yet demoted the old primary, the
//! store's own connection still reads and writes the old one, and the cache follows it.
//!
//! # The interface to the store
//!
//! The store sees three things: [`LocalCache::connect`] with a [`TrackingTarget`] (or, on a
//! cluster, `ClusterCache::connect` with the means to read the slot map and to reach each
//! node); [`LocalCache::load`], which answers a read from memory, or fetches it through the
//! tracking connection with a closure the store supplies, or tells the store to read by itself;
//! and [`LocalCache::cached`], the same answer from memory without the fetch, under the same
//! rules, so that a request can be served without a future (through the store's `cached`,
//! which a request asks before it loads).
//!
//! It is not a `SessionStore` wrapping `RedisStore`: the copy is only as good as the reads
//! that filled it, and those must use the store's key names, stored format and command timeout
//! on a connection that the cache owns; and the store's writes must know whether a cache
//! exists to decide whether to wait after a `DEL`. A wrapper would need to reach into the
//! store for all of that, and would make a cached store a different public type from a plain
//! one. A closure in, an answer out, keeps each side's knowledge of the other to that.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use redis::aio::MultiplexedConnection;
use redis::RedisConnectionInfo;

#[cfg(feature = "cluster")]
pub(crate) use self::cluster::{ClusterCache, NodeSetup, SlotSource};
pub(crate) use self::tracking::Heartbeat;
use self::tracking::{Link, Wire};
pub(crate) use self::transport::TlsClient;
use super::LoadedSession;
use crate::error::StoreError;

#[cfg(feature = "cluster")]
mod cluster;
mod resp3;
mod tracking;
mod transport;

/// Asks the store's own connection which server it reaches: that server's `run_id`.
pub(crate) type ServerProbe =
    Arc<dyn Fn() -> BoxFuture<'static, Result<String, StoreError>> + Send + Sync>;

pub(crate) use super::server_info::run_id;

/// The cache, shared by all clones of a store.
#[derive(Clone)]
pub(crate) struct LocalCache {
    shared: Arc<Shared>,
}

/// Asks where the tracking connection should go now: the primary Sentinel names.
pub(crate) type Locator =
    Arc<dyn Fn() -> BoxFuture<'static, Result<(String, u16), StoreError>> + Send + Sync>;

/// Where the tracking connection dials.
pub(crate) enum Address {
    /// Always the same host and port: a standalone server, or one node of a cluster.
    Fixed(String, u16),
    /// Asked anew on every (re)connect.
    #[cfg_attr(not(feature = "sentinel"), allow(dead_code))]
    Located(Locator),
}

impl Address {
    async fn resolve(&self) -> Result<(String, u16), StoreError> {
        match self {
            Address::Fixed(host, port) => Ok((host.clone(), *port)),
            Address::Located(locate) => locate().await,
        }
    }
}

/// Where and how to open the tracking connection.
pub(crate) struct TrackingTarget {
    pub(crate) address: Address,
    /// The user, password and database, as the store's connection has them.
    pub(crate) redis: RedisConnectionInfo,
    /// TLS to the server (`rediss://`), or plain TCP.
    pub(crate) tls: Option<TlsClient>,
    /// What the server must keep being while the cache trusts it.
    pub(crate) heartbeat: Heartbeat,
    pub(crate) connect_timeout: Duration,
    pub(crate) command_timeout: Duration,
}

struct Shared {
    capacity: usize,
    target: TrackingTarget,
    /// The server the store's connection reaches, which the tracking connection must match.
    main_server: ServerProbe,
    /// The runtime the store was connected on: connection drivers and reconnects run there, not
    /// on whichever request noticed a loss.
    runtime: tokio::runtime::Handle,
    next_fill: AtomicU64,
    // Lock order: a wire's scanner, then `link`, then `entries`.
    link: Mutex<Link>,
    entries: Mutex<HashMap<String, Slot>>,
}

enum Slot {
    /// A fetch with this id is on its way; an invalidation removes the slot.
    Filling(u64),
    /// A record with its data (when small), and the generation of the tracking connection that
    /// vouches for them. Both live in one Redis key, so one invalidation covers both.
    Ready(LoadedSession, u64),
}

/// What [`LocalCache::lookup`] found.
enum Lookup {
    /// A record that no invalidation has touched.
    Hit(LoadedSession),
    /// Fetch through [`Fill::connection`], then [`LocalCache::complete`].
    Fill(Fill),
    /// No tracking connection: read from Redis without caching.
    Bypass,
}

/// A fetch that may store its result.
struct Fill {
    key: String,
    id: u64,
    generation: u64,
    connection: MultiplexedConnection,
}

impl LocalCache {
    /// Opens the tracking connection; fails if it cannot be set up now.
    pub(crate) async fn connect(
        target: TrackingTarget,
        capacity: usize,
        main_server: ServerProbe,
    ) -> Result<Self, StoreError> {
        let shared = Arc::new(Shared {
            capacity: capacity.max(1),
            target,
            main_server,
            runtime: tokio::runtime::Handle::current(),
            next_fill: AtomicU64::new(0),
            link: Mutex::new(Link::default()),
            entries: Mutex::new(HashMap::new()),
        });
        // Disagreeing servers are not fatal: the cache stays out of the way until they agree.
        Shared::track(&shared).await?;
        Ok(Self { shared })
    }

    /// Checks that the tracking connection reaches `main_server` (a `run_id`), which the store's
    /// connection just reported; if not, empties the cache and drops the tracking connection.
    pub(crate) fn confirm_server(&self, main_server: &str) {
        self.shared.confirm_server(main_server, None);
    }

    /// Forgets every entry, and every fetch under way stores nothing: for a change the
    /// tracking connection cannot report (a cluster's slots moved).
    #[cfg(feature = "cluster")]
    pub(crate) fn clear(&self) {
        lock(&self.shared.entries).clear();
    }

    /// The session under `key`: from memory if no invalidation can have touched it, else
    /// fetched by `fetch` through the tracking connection it is given (only reads made there are
    /// tracked) and remembered.
    ///
    /// `None` means the cache cannot vouch for anything now (no tracking connection, or the
    /// fetch through it failed and it was dropped): the caller reads from Redis itself, and
    /// nothing is cached. A [`StoreError::Corrupt`] from `fetch` is the record's fault, not the
    /// connection's: it is returned, and nothing is cached.
    pub(crate) async fn load<F, Fut>(
        &self,
        key: &str,
        fetch: F,
    ) -> Option<Result<Option<LoadedSession>, StoreError>>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = Result<Option<LoadedSession>, StoreError>>,
    {
        let lookup = self.lookup(key);
        crate::telemetry::cache(matches!(lookup, Lookup::Hit(_)));
        match lookup {
            Lookup::Hit(stored) => Some(Ok(Some(stored))),
            Lookup::Fill(fill) => match fetch(fill.connection.clone()).await {
                Ok(stored) => {
                    self.complete(fill, stored.as_ref());
                    Some(Ok(stored))
                }
                Err(err @ StoreError::Corrupt(_)) => {
                    self.complete(fill, None);
                    Some(Err(err))
                }
                Err(_) => {
                    self.abandon(fill);
                    None
                }
            },
            Lookup::Bypass => None,
        }
    }

    /// The session under `key` from memory, without I/O, when the cache can vouch for it now:
    /// `None` when it cannot (the caller then takes [`load`](Self::load), which fetches).
    ///
    /// Not counted as a lookup: the request counts the answers it takes (one it turns down is
    /// counted by the [`load`](Self::load) that follows).
    pub(crate) fn cached(&self, key: &str) -> Option<LoadedSession> {
        let (generation, wire) = self.shared.wire()?;
        self.hit(key, generation, &wire)
    }

    /// The entry under `key`, if nothing can have changed it since the tracking connection of
    /// `generation`, whose `wire` this is, vouched for it.
    fn hit(&self, key: &str, generation: u64, wire: &Wire) -> Option<LoadedSession> {
        let scanner = lock(&wire.scanner);
        if !(scanner.is_idle() && wire.heard_lately() && wire.nothing_waiting()) {
            return None;
        }
        match lock(&self.shared.entries).get(key) {
            // Only the connection this lookup just checked may vouch for the entry.
            Some(Slot::Ready(stored, vouched_by))
                if *vouched_by == generation && stored.stored.expires_at > SystemTime::now() =>
            {
                Some(stored.clone())
            }
            _ => None,
        }
    }

    /// Answers from memory if that is safe; otherwise says how to fetch.
    fn lookup(&self, key: &str) -> Lookup {
        // Only the wire on the hot path: cloning the whole connection costs more than a hit.
        let Some((generation, wire)) = self.shared.wire() else {
            Shared::reconnect_soon(&self.shared);
            return Lookup::Bypass;
        };
        if let Some(stored) = self.hit(key, generation, &wire) {
            return Lookup::Hit(stored);
        }
        let Some(connection) = self.shared.connection(generation) else {
            return Lookup::Bypass;
        };
        let id = self.shared.next_fill.fetch_add(1, Ordering::Relaxed);
        let mut entries = lock(&self.shared.entries);
        if entries.len() >= self.shared.capacity && !entries.contains_key(key) {
            // Any entry will do: dropping one is always safe, and a hash map's first key is as
            // good as a random one.
            if let Some(victim) = entries.keys().next().cloned() {
                entries.remove(&victim);
            }
        }
        // Registered before the fetch is sent, so an invalidation that overtakes it finds it.
        entries.insert(key.to_owned(), Slot::Filling(id));
        Lookup::Fill(Fill {
            key: key.to_owned(),
            id,
            generation,
            connection,
        })
    }

    /// Stores what `fill` fetched, unless an invalidation or a lost connection came first.
    fn complete(&self, fill: Fill, fetched: Option<&LoadedSession>) {
        let link = lock(&self.shared.link);
        let mut entries = lock(&self.shared.entries);
        let ours = matches!(entries.get(&fill.key), Some(Slot::Filling(id)) if *id == fill.id);
        if !ours {
            return;
        }
        let tracked = link
            .live
            .as_ref()
            .is_some_and(|live| live.generation == fill.generation);
        match fetched {
            Some(stored) if tracked => {
                entries.insert(fill.key, Slot::Ready(stored.clone(), fill.generation));
            }
            _ => {
                entries.remove(&fill.key);
            }
        }
    }

    /// Gives up on `fill` after its fetch failed: the tracking connection is suspect, so it is
    /// dropped with everything it vouched for.
    fn abandon(&self, fill: Fill) {
        self.shared.lose(fill.generation);
    }
}

impl Shared {
    fn wire(&self) -> Option<(u64, Arc<Wire>)> {
        let link = lock(&self.link);
        let live = link.live.as_ref()?;
        Some((live.generation, Arc::clone(&live.wire)))
    }

    /// The tracking connection of `generation`, if it is still the live one.
    fn connection(&self, generation: u64) -> Option<MultiplexedConnection> {
        let link = lock(&self.link);
        let live = link
            .live
            .as_ref()
            .filter(|live| live.generation == generation)?;
        Some(live.connection.clone())
    }

    /// Drops the live tracking connection (only if of `generation`, when given) and everything
    /// it vouched for unless it reaches `main_server`.
    fn confirm_server(&self, main_server: &str, generation: Option<u64>) {
        let mismatch = {
            let link = lock(&self.link);
            link.live.as_ref().and_then(|live| {
                let ours = generation.is_none_or(|g| g == live.generation);
                (ours && *live.server != *main_server).then_some(live.generation)
            })
        };
        if let Some(generation) = mismatch {
            tracing::warn!(
                "session cache: the tracking connection and the store reach different Redis \
                 servers; emptied the cache, reading from Redis until they agree"
            );
            self.lose(generation);
        }
    }

    /// Forgets the tracking connection of `generation` and everything it vouched for.
    fn lose(&self, generation: u64) {
        let mut link = lock(&self.link);
        if link
            .live
            .as_ref()
            .is_some_and(|live| live.generation == generation)
        {
            link.live = None;
            tracing::warn!("session cache: tracking connection lost; emptied the cache");
        }
        lock(&self.entries).clear();
    }

    fn invalidate(&self, keys: Option<Vec<&[u8]>>) {
        let mut entries = lock(&self.entries);
        match keys {
            Some(keys) => {
                for key in keys {
                    if let Ok(key) = std::str::from_utf8(key) {
                        entries.remove(key);
                    }
                }
            }
            // A flush of the whole database.
            None => entries.clear(),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its data consistent, so a panic elsewhere cannot corrupt it.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
