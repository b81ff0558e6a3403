//! Configuring and connecting a [`RedisStore`]: where it connects, with which options, and the
//! checks made once at startup.

use std::fmt;
use std::time::Duration;

use redis::Value;

use super::connection::{info_text, ConnectOptions, Connection, Target};
use super::local_cache::PlannedCache;
use super::RedisStore;
use crate::error::StoreError;

const DEFAULT_PREFIX: &str = "actix-login";
const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a session-ending delete waits for a replica on a Sentinel deployment by default:
/// long enough for a replica on the same network under load, short enough for a request.
#[cfg(feature = "sentinel")]
const DEFAULT_REPLICA_TIMEOUT: Duration = Duration::from_millis(500);

impl RedisStore {
    /// Connects with the default settings. See [`RedisStore::builder`] for the options.
    ///
    /// `url` is a redis-rs connection URL: `redis://[user:password@]host[:port][/db]`, or
    /// `rediss://` for TLS (with the `tls` feature; see `RedisStoreBuilder::tls_root_certificate`
    /// for servers whose certificates come from a private CA).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::builder(url).connect().await
    }

    /// Starts configuring a store for `url`.
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder::new(Target::Single(url.into()))
    }

    /// Connects to a Redis Cluster through any of `nodes` (seed URLs such as
    /// `redis://10.0.0.1:7000`) with the default settings.
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    pub async fn connect_cluster(
        nodes: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<Self, StoreError> {
        Self::cluster_builder(nodes).connect().await
    }

    /// Starts configuring a store on a Redis Cluster reached through any of `nodes`.
    ///
    /// Every operation on one session touches one key; the user index and the throttle counters
    /// live in other slots, and the store never needs a transaction across them (see
    /// [`SessionStore`](crate::store::SessionStore)): on a cluster a session's record is written before
    /// its index entry, which a listing can never prune, and the record is unreachable until the
    /// login that wrote it answers.
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    pub fn cluster_builder(
        nodes: impl IntoIterator<Item = impl Into<String>>,
    ) -> RedisStoreBuilder {
        RedisStoreBuilder::new(Target::Cluster(nodes.into_iter().map(Into::into).collect()))
    }

    /// Connects through Redis Sentinel to the primary of `service_name`, with the default
    /// settings. See [`RedisStore::sentinel_builder`].
    #[cfg(feature = "sentinel")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sentinel")))]
    pub async fn connect_sentinel(
        sentinels: impl IntoIterator<Item = impl Into<String>>,
        service_name: impl Into<String>,
    ) -> Result<Self, StoreError> {
        Self::sentinel_builder(sentinels, service_name)
            .connect()
            .await
    }

    /// Starts configuring a store on the primary that Redis Sentinel names for `service_name`,
    /// asking any of `sentinels` (URLs such as `redis://10.0.0.1:26379`).
    ///
    /// The sentinel URLs carry everything else, and must agree on it:
    /// `redis://[user:password@]host:port[/db]`. The user and password log in to the sentinels
    /// and to the data nodes alike (sentinels without a password accept any password given
    /// with a user name, so `redis://default:secret@…` reaches password-protected data nodes
    /// behind open sentinels); the database is selected on the data nodes. `rediss://` makes
    /// both connections TLS (with the `tls` feature), verified against
    /// `RedisStoreBuilder::tls_root_certificate` or the system's roots.
    ///
    /// The store holds one multiplexed connection to the primary, as on a standalone server,
    /// and so runs its scripts the same way. When a command finds the primary gone (the
    /// connection breaks, as when Sentinel demotes a primary and disconnects its clients) or
    /// demoted (`READONLY`), that command fails, so its request gets `503`, and the store asks
    /// the sentinels for the primary again and reconnects in the background. Concurrent
    /// failures share that one re-resolution; the next command goes to the new primary.
    /// Sessions written shortly before a failover may be lost with the old primary, since
    /// Redis replicates asynchronously.
    ///
    /// Before using a primary, the store checks with `ROLE` (falling back to `INFO`, which the
    /// store needs anyway) that it still is one, so an ACL user on the data nodes needs one of
    /// them.
    #[cfg(feature = "sentinel")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sentinel")))]
    pub fn sentinel_builder(
        sentinels: impl IntoIterator<Item = impl Into<String>>,
        service_name: impl Into<String>,
    ) -> RedisStoreBuilder {
        RedisStoreBuilder::new(Target::Sentinel {
            sentinels: sentinels.into_iter().map(Into::into).collect(),
            service_name: service_name.into(),
        })
    }
}

/// How many replicas must have a session-ending delete, and how long it may wait for them.
#[derive(Clone, Copy, Debug)]
pub(super) struct ReplicaWait {
    pub(super) replicas: u32,
    pub(super) timeout: Duration,
}

impl ReplicaWait {
    fn timeout_ms(self) -> u64 {
        u64::try_from(self.timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// `WAIT replicas timeout`.
    pub(super) fn command(self) -> redis::Cmd {
        let mut wait = redis::cmd("WAIT");
        wait.arg(self.replicas).arg(self.timeout_ms());
        wait
    }

    /// Whether `acknowledged` replicas are enough; a store error if not.
    pub(super) fn check(self, acknowledged: i64) -> Result<(), StoreError> {
        if acknowledged < i64::from(self.replicas) {
            return Err(StoreError::unavailable(format!(
                "a write that must survive a failover reached {acknowledged} of {} replicas within {} ms",
                self.replicas,
                self.timeout_ms()
            )));
        }
        Ok(())
    }
}

/// Whether session-ending deletes wait for replicas, as the app set it with
/// [`wait_for_replicas`](RedisStoreBuilder::wait_for_replicas).
#[derive(Clone, Copy, Debug)]
pub(super) enum ReplicaWaitSetting {
    /// Not set: the deployment's default applies (see `wait_for_replicas`).
    Default,
    /// Turned off (`replicas = 0`).
    Off,
    /// Wait as given.
    On(ReplicaWait),
}

impl ReplicaWaitSetting {
    /// The wait a store on `target` uses.
    fn resolve(self, target: &Target) -> Option<ReplicaWait> {
        match self {
            ReplicaWaitSetting::Default => match target {
                #[cfg(feature = "sentinel")]
                Target::Sentinel { .. } => Some(ReplicaWait {
                    replicas: 1,
                    timeout: DEFAULT_REPLICA_TIMEOUT,
                }),
                _ => None,
            },
            ReplicaWaitSetting::Off => None,
            ReplicaWaitSetting::On(wait) => Some(wait),
        }
    }
}

/// Configures and connects a [`RedisStore`].
#[derive(Clone)]
#[must_use]
pub struct RedisStoreBuilder {
    pub(super) target: Target,
    /// Set only by `local_cache`, so always `None` without the `local-cache` feature.
    pub(super) cache_capacity: Option<usize>,
    pub(super) peer_caches: bool,
    pub(super) replica_wait: ReplicaWaitSetting,
    pub(super) prefix: String,
    pub(super) command_timeout: Duration,
    pub(super) connect_timeout: Duration,
    #[cfg(feature = "tls")]
    pub(super) tls: super::tls::TlsOptions,
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("RedisStoreBuilder");
        out.field("prefix", &self.prefix)
            .field("command_timeout", &self.command_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("peer_caches", &self.peer_caches)
            .field("replica_wait", &self.replica_wait);
        #[cfg(feature = "local-cache")]
        out.field("cache_capacity", &self.cache_capacity);
        out.finish_non_exhaustive()
    }
}

impl RedisStoreBuilder {
    fn new(target: Target) -> Self {
        Self {
            target,
            cache_capacity: None,
            peer_caches: true,
            replica_wait: ReplicaWaitSetting::Default,
            prefix: DEFAULT_PREFIX.to_owned(),
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            #[cfg(feature = "tls")]
            tls: super::tls::TlsOptions::default(),
        }
    }

    /// The prefix of every key the store writes (default `actix-login`). Give each app its own
    /// when several share a Redis database.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long one store operation may take before the request fails with 503 (default 1 s).
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// How long one attempt to (re)connect may take (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Whether other app instances on the same Redis may keep a local cache (`local_cache`, with
    /// the `local-cache` feature), so that this store's session-ending deletes must reach them
    /// before they answer. Default `true`: safe in every deployment, including the usual way a
    /// cache is rolled out, one instance at a time beside plain ones.
    ///
    /// A cache learns of a logout from an invalidation that Redis writes in the event-loop pass
    /// that answers the `DEL`; it is surely in the caching process's socket, where its next
    /// lookup looks, only once a later command of the writer has been answered by the same
    /// server. So each `DEL` that ends a session (logout, revocation, rotation, a record pruned
    /// by a listing) is followed by a `PING` (on a cluster, an `EXISTS` of the same key, which
    /// goes to the node the `DEL` went to), and the operation returns only after its reply. A
    /// cache holds a session's data too (when small), so a data write is followed by the same
    /// round trip as well: the writer's next request, on any instance, sees the write.
    ///
    /// `peer_caches(false)` is a promise that **no** instance on this Redis caches: a logout
    /// then costs one round trip instead of two. Break the promise and a caching instance may
    /// accept a session for the short moment after its logout answered on this instance, while
    /// the invalidation is on its way (seen in a few rounds per thousand on one machine), or
    /// show data as it was before a write made on this instance. A store with a local cache of
    /// its own always waits (its own cache needs it too). Reads, logins and refreshes are
    /// unchanged either way.
    pub fn peer_caches(mut self, peers_cache: bool) -> Self {
        self.peer_caches = peers_cache;
        self
    }

    /// Makes every delete that ends a session (logout, revocation, the old token of a
    /// rotation, a record pruned by a listing) wait until `replicas` replicas have it, for at
    /// most `timeout`; if fewer acknowledge it in time, the operation fails with a
    /// [`StoreError`] and the request answers 503. `replicas = 0` turns the wait off.
    ///
    /// Redis replicates asynchronously: a `DEL` is acknowledged by the primary before any
    /// replica has it. Should the primary die then, the replica promoted in its place still
    /// holds the session, and a cookie that was logged out works again. With the wait, a
    /// session-ending delete that answered success is on a replica, so a failover cannot undo
    /// it. (A logout that answered 503 may or may not have taken: the client should retry.)
    ///
    /// Default: one replica within 500 ms on a Sentinel deployment, which has replicas by
    /// definition; off on a standalone server and on a cluster. On a cluster, Redis's `WAIT`
    /// counts the replicas of each primary separately and the store asks every primary, so
    /// turn it on only when every primary has replicas.
    ///
    /// The cost: the `WAIT` travels in the same round trip as the `DEL`, so a session-ending
    /// write takes longer by the time a replica needs to receive the `DEL` and acknowledge it
    /// (a fraction of a millisecond on a local network; on a cluster, one more round trip).
    /// Reads, logins and refreshes are unchanged. While no replica is reachable, logouts and
    /// revocations fail with 503 rather than succeed unprotected; sessions still work.
    ///
    /// The ACL user of the store needs `WAIT` when this is on.
    pub fn wait_for_replicas(mut self, replicas: u32, timeout: Duration) -> Self {
        self.replica_wait = if replicas > 0 {
            ReplicaWaitSetting::On(ReplicaWait { replicas, timeout })
        } else {
            ReplicaWaitSetting::Off
        };
        self
    }

    /// Keeps up to `max_sessions` session records in this process, so that most authenticated
    /// requests need no Redis round trip at all.
    ///
    /// The copies are kept honest by Redis itself: they are read through a connection with
    /// `CLIENT TRACKING ON`, and Redis tells this process the moment any client changes,
    /// deletes or expires one of them. A logout or revocation on any instance is therefore
    /// seen by the next request on every other: Redis writes the invalidation before it answers
    /// the command after the `DEL`, which the store waits for, and a lookup answers from memory
    /// only when every byte Redis has sent on the tracking connection has been read. If the
    /// tracking connection is lost, the cache empties and lookups read from Redis until it is
    /// back. Instances on the same Redis that do not cache wait for their deletes to reach the
    /// caches by default (see [`peer_caches`](RedisStoreBuilder::peer_caches)); do not turn that
    /// off on any instance while one caches.
    ///
    /// The tracking connection is pinged four times a second, and entries are served only while
    /// a reply came back within the last second: a Redis that vanishes without closing the
    /// connection (a crashed host, a silent partition) stops the cache within a second, and
    /// requests then fail closed or read from Redis.
    ///
    /// The cache's tracking connection and the store's connection dial the same address
    /// separately, and the store's reconnects by itself; after a virtual IP, DNS name or
    /// service address moves, they could reach different servers, and the cache would never
    /// hear of the other server's writes. So the cache compares the servers' `run_id`
    /// (`INFO server`): when its tracking connection is set up, once a second on the
    /// heartbeat, and after each of this store's session-ending deletes (which settle with
    /// `INFO server` instead of `PING`, on one server). On a mismatch it empties, logs a warning and reads
    /// from Redis until a new tracking connection reaches the store's server. A logout through
    /// this store is therefore never served from a stale cache; one through another instance
    /// may be, for at most about a second after the store's connection moved.
    ///
    /// It runs on every deployment the store does, over TCP or TLS:
    ///
    /// * **one server**, `redis://` or `rediss://` (TLS through rustls, trusting
    ///   [`tls_root_certificate`](RedisStoreBuilder::tls_root_certificate) or the system's
    ///   roots; the decrypted bytes are scanned as plain ones are, and a lookup answers from
    ///   memory only when neither the socket nor the TLS layer holds anything unread);
    /// * **Sentinel**: the tracking connection goes to the primary the sentinels name, checked
    ///   against the store's by `run_id` as above; its heartbeat asks `ROLE`, so a demoted
    ///   primary stops the cache within a heartbeat (a failover empties the cache, and it serves
    ///   again once the store and the cache reach the new primary);
    /// * **a cluster**: one tracking connection per primary, each key read through and cached
    ///   for the node that serves its slot (by `CLUSTER SLOTS`, read once a second and after a
    ///   failed read), with the same `ROLE` heartbeat per node; a changed slot map empties the
    ///   whole cache, and a slot that moves takes its keys' entries with it (`MIGRATE` deletes
    ///   them on the old node, which invalidates them). `max_sessions` is shared among the
    ///   primaries.
    ///
    /// An ACL user needs `CLIENT TRACKING`, `HELLO` and `INFO` for the cache, and on a cluster or
    /// Sentinel also `ROLE` (and `CLUSTER SLOTS` on a cluster).
    ///
    /// After a failover that leaves the old server running (a cluster's `CLUSTER FAILOVER`, a
    /// primary demoted without closing its clients), a logout through another instance on the
    /// new primary may be served from memory until the next heartbeat (250 ms).
    ///
    /// `connect` fails for a Unix socket and for `rediss://…#insecure` (a cache must know which
    /// server it trusts). The guarantee rests on Redis writing an invalidation to every
    /// tracking client in the pass that answers the write, and on the network delivering it no
    /// later than the logout's response reaches the next instance. So:
    ///
    /// * connect the store and the cache to the same Redis process directly, not through a TCP
    ///   proxy (which may hold pushes back) or a name that resolves to several servers;
    /// * keep Redis's I/O threads off (`io-threads 1`, the default), and tracking clients'
    ///   output small (it is: only this store's own reads);
    /// * keep clocks in sync: an entry expires at the deadline in the record, by this host's
    ///   clock, while Redis expires the key by its own.
    #[cfg(feature = "local-cache")]
    #[cfg_attr(docsrs, doc(cfg(feature = "local-cache")))]
    pub fn local_cache(mut self, max_sessions: usize) -> Self {
        self.cache_capacity = Some(max_sessions);
        self
    }

    /// Connects, failing at once if Redis cannot be reached, so a misconfigured app does not
    /// start.
    ///
    /// On one server and on a cluster, the runtime this runs on drives the connection every
    /// thread shares (each Actix worker has one of its own besides) and dials its replacement
    /// when it goes silent: keep it running, and driven, while the store is in use, as an Actix
    /// app's `main` does. Should it end, one server's connection reconnects and is replaced on
    /// the runtime of the command that needs it, but a cluster's shared connection ends with
    /// it.
    pub async fn connect(self) -> Result<RedisStore, StoreError> {
        #[cfg(feature = "tls")]
        let tls_root = self.tls.root_certificate.clone();
        #[cfg(not(feature = "tls"))]
        let tls_root = None;
        let cache = PlannedCache::new(
            self.cache_capacity,
            &self.target,
            tls_root,
            self.connect_timeout,
            self.command_timeout,
        )?;
        let replica_wait = self.replica_wait.resolve(&self.target);
        let connecting = Connection::open(ConnectOptions {
            target: &self.target,
            connect_timeout: self.connect_timeout,
            reply_timeout: self.command_timeout
                + replica_wait.map_or(Duration::ZERO, |w| w.timeout),
            #[cfg(feature = "tls")]
            tls: &self.tls,
        });
        let mut connection = tokio::time::timeout(self.connect_timeout * 2, connecting)
            .await
            .map_err(|_elapsed| StoreError::Timeout)??;
        let info: Value = tokio::time::timeout(
            self.command_timeout,
            redis::cmd("INFO")
                .arg("server")
                .query_async(&mut connection),
        )
        .await
        .map_err(|_elapsed| StoreError::Timeout)?
        .map_err(StoreError::unavailable)?;
        check_server_version(&info_text(info))?;
        let cache = cache.open(&connection, self.command_timeout).await?;
        let settle_deletes = cache.is_on() || self.peer_caches;
        Ok(RedisStore {
            connection,
            cache,
            settle_deletes,
            replica_wait,
            large_data: Default::default(),
            data_names: Default::default(),
            prefix: self.prefix.into(),
            command_timeout: self.command_timeout,
        })
    }
}

#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
impl RedisStoreBuilder {
    /// Trusts the certificate authority in `pem` (one or more PEM certificates) for `rediss://`
    /// connections, instead of the system's roots: for servers whose certificates come from a
    /// private CA. The server's host name is still verified, so there is no need for
    /// `#insecure`.
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls.root_certificate = Some(pem.into());
        self
    }

    /// Whether [`connect`](RedisStoreBuilder::connect) may install ring as rustls's
    /// **process-wide** default crypto provider (default `true`).
    ///
    /// redis-rs sets up `rediss://` connections with whatever provider rustls has installed for
    /// the whole process, and offers no way to pass one for a single client. So when the URLs
    /// are `rediss://` and the app has installed no provider, `connect` installs ring (with an
    /// `info` log line), and every later rustls user in the process that relies on the default
    /// gets ring too. It never replaces a provider the app installed, and does nothing for
    /// plain `redis://` URLs.
    ///
    /// To keep that choice in the app's hands, install a provider before connecting
    /// (`rustls::crypto::CryptoProvider::install_default`), or pass `false` here: `connect` then
    /// fails with [`StoreError::Unavailable`] if no provider is installed, rather than let
    /// rustls pick one from its compiled-in features (or panic, when both ring and aws-lc-rs
    /// are compiled in).
    pub fn install_ring_provider(mut self, install: bool) -> Self {
        self.tls.install_ring_provider = install;
        self
    }
}

/// Refuses servers older than Redis 7.0, whose `PEXPIRE` lacks the `NX`/`GT` options that keep
/// the user index from outliving its TTL; better a clear error at startup than immortal keys.
fn check_server_version(info: &str) -> Result<(), StoreError> {
    let major = |version: &str| -> u32 {
        version
            .split('.')
            .next()
            .and_then(|m| m.trim().parse().ok())
            .unwrap_or(0)
    };
    // A cluster answers once per node; every node must do.
    let oldest = info
        .lines()
        .filter_map(|line| line.strip_prefix("redis_version:"))
        .min_by_key(|version| major(version));
    match oldest {
        Some(version) if major(version) >= 7 => Ok(()),
        _ => Err(StoreError::unavailable(format!(
            "Redis 7.0 or newer is required, the server reports {:?}",
            oldest.unwrap_or("no version")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::check_server_version;

    #[test]
    fn servers_before_redis_7_are_refused() {
        assert!(check_server_version("# Server\r\nredis_version:7.0.15\r\n").is_ok());
        assert!(check_server_version("redis_version:7.2.4\r\n").is_ok());
        assert!(check_server_version("redis_version:6.2.14\r\n").is_err());
        assert!(check_server_version("nothing useful").is_err());
    }
}
