//! The store's handle on its [local cache](super::RedisStoreBuilder::local_cache), in both
//! configurations.
//!
//! With the `local-cache` feature, [`Cache`] holds the cache of `store/cache/`, if the app asked
//! for one; without it, [`Cache`] is a cache that is never there (its inner type has no
//! values). The store and the builder use it the same way either way, so the feature's `cfg`
//! pairs live in this file and nowhere else in the store.

use std::future::Future;
use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::connection::{Connection, Target};
use crate::error::StoreError;
use crate::store::LoadedSession;

/// The store's local cache, if it keeps one.
#[derive(Clone, Default)]
pub(super) struct Cache(Option<imp::Inner>);

/// A cache checked against the builder's settings before the store dials, so that one that
/// cannot work fails `connect` before any connection is made; opened once the store's
/// connection is up.
pub(super) struct PlannedCache(imp::Plan);

impl PlannedCache {
    /// A cache of `capacity` sessions beside a store that connects to `target` (over TLS
    /// trusting `tls_root`, if given, for `rediss://`); none if `capacity` is `None`.
    pub(super) fn new(
        capacity: Option<usize>,
        target: &Target,
        tls_root: Option<Vec<u8>>,
        connect_timeout: Duration,
        command_timeout: Duration,
    ) -> Result<Self, StoreError> {
        imp::plan(capacity, target, tls_root, connect_timeout, command_timeout).map(Self)
    }

    /// Opens the cache's tracking connection, which checks its server against the one
    /// `connection` reaches.
    pub(super) async fn open(
        self,
        connection: &Connection,
        command_timeout: Duration,
    ) -> Result<Cache, StoreError> {
        imp::open(self.0, connection, command_timeout)
            .await
            .map(Cache)
    }
}

impl Cache {
    /// Whether this process keeps a local cache.
    pub(super) fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// The session under `key` from the cache (see `LocalCache::load`), or `None` when the
    /// store must read it itself: no cache, or one that cannot vouch for anything now.
    pub(super) async fn load<F, Fut>(
        &self,
        key: &str,
        fetch: F,
    ) -> Option<Result<Option<LoadedSession>, StoreError>>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = Result<Option<LoadedSession>, StoreError>>,
    {
        imp::load(self.0.as_ref()?, key, fetch).await
    }

    /// The session under `key` from memory, without I/O, when the cache can vouch for it now
    /// (see `LocalCache::cached`); `None` sends the caller to [`load`](Self::load).
    #[cfg(feature = "local-cache")]
    pub(super) fn cached(&self, key: &str) -> Option<LoadedSession> {
        imp::cached(self.0.as_ref()?, key)
    }

    /// Tells the cache which server the store's connection reaches, from the text of an
    /// `INFO server` reply on it; a cache tracking another server empties.
    pub(super) fn confirm_server(&self, info: &str) {
        if let Some(cache) = &self.0 {
            imp::confirm_server(cache, info);
        }
    }
}

#[cfg(feature = "local-cache")]
mod imp {
    use std::future::Future;
    use std::sync::Arc;
    use std::time::Duration;

    use redis::aio::MultiplexedConnection;
    use redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, Value};

    #[cfg(feature = "cluster")]
    use super::super::connection::PerWorker;
    use super::super::connection::{info_text, Connection, Target};
    use crate::error::StoreError;
    #[cfg(feature = "cluster")]
    use crate::store::cache::ClusterCache;
    use crate::store::cache::{
        run_id, Address, Heartbeat, LocalCache, ServerProbe, TlsClient, TrackingTarget,
    };
    use crate::store::LoadedSession;

    /// The cache of one server (standalone or named by Sentinel), or of a cluster's primaries.
    #[derive(Clone)]
    pub(super) enum Inner {
        One(LocalCache),
        #[cfg(feature = "cluster")]
        Cluster(ClusterCache),
    }

    pub(super) type Plan = Option<Planned>;

    /// What the builder's settings say about the cache, checked before the store dials.
    pub(super) struct Planned {
        capacity: usize,
        deployment: Deployment,
        /// The user, password and database of the data nodes.
        redis: RedisConnectionInfo,
        /// `rediss://`: the app's roots for it, if any (else the system's).
        tls: Option<Option<Vec<u8>>>,
        connect_timeout: Duration,
        command_timeout: Duration,
    }

    enum Deployment {
        Single {
            host: String,
            port: u16,
        },
        /// The host of the first seed, for nodes the cluster announces without one.
        #[cfg(feature = "cluster")]
        Cluster {
            seed_host: String,
        },
        #[cfg(feature = "sentinel")]
        Sentinel,
    }

    pub(super) fn plan(
        capacity: Option<usize>,
        target: &Target,
        tls_root: Option<Vec<u8>>,
        connect_timeout: Duration,
        command_timeout: Duration,
    ) -> Result<Plan, StoreError> {
        let Some(capacity) = capacity else {
            return Ok(None);
        };
        let Some(url) = target.urls().first() else {
            return Err(StoreError::unavailable("no Redis URL given"));
        };
        // The parser's message could quote the URL, password included.
        let info = url
            .as_str()
            .into_connection_info()
            .map_err(|_| StoreError::unavailable("the Redis URL is not valid"))?;
        let (host, port, tls) = match info.addr() {
            ConnectionAddr::Tcp(host, port) => (host.clone(), *port, None),
            ConnectionAddr::TcpTls { insecure: true, .. } => {
                return Err(StoreError::unavailable(
                    "the local cache needs verified TLS: drop #insecure and trust the server's \
                     CA with tls_root_certificate",
                ))
            }
            ConnectionAddr::TcpTls { host, port, .. } => (host.clone(), *port, Some(tls_root)),
            _ => {
                return Err(StoreError::unavailable(
                    "the local cache needs Redis over TCP or TLS (not a Unix socket)",
                ))
            }
        };
        let deployment = match target {
            Target::Single(_) => Deployment::Single { host, port },
            #[cfg(feature = "cluster")]
            Target::Cluster(_) => Deployment::Cluster { seed_host: host },
            #[cfg(feature = "sentinel")]
            Target::Sentinel { .. } => Deployment::Sentinel,
        };
        Ok(Some(Planned {
            capacity,
            deployment,
            redis: info.redis_settings().clone(),
            tls,
            connect_timeout,
            command_timeout,
        }))
    }

    pub(super) async fn open(
        plan: Plan,
        connection: &Connection,
        command_timeout: Duration,
    ) -> Result<Option<Inner>, StoreError> {
        let Some(plan) = plan else {
            return Ok(None);
        };
        // Built only now: rustls needs the crypto provider the store's connect installed.
        let tls = match &plan.tls {
            None => None,
            Some(root) => Some(tls_client(root.as_deref())?),
        };
        let target = |address: Address, heartbeat: Heartbeat| TrackingTarget {
            address,
            redis: plan.redis.clone(),
            tls: tls.clone(),
            heartbeat,
            connect_timeout: plan.connect_timeout,
            command_timeout: plan.command_timeout,
        };
        match (&plan.deployment, connection) {
            (Deployment::Single { host, port }, _) => {
                let target = target(Address::Fixed(host.clone(), *port), Heartbeat::Ping);
                let probe = server_probe(connection, command_timeout);
                LocalCache::connect(target, plan.capacity, probe)
                    .await
                    .map(|cache| Some(Inner::One(cache)))
            }
            #[cfg(feature = "sentinel")]
            (Deployment::Sentinel, Connection::Sentinel(sentinel)) => {
                let sentinel = sentinel.clone();
                let locate: crate::store::cache::Locator = Arc::new(move || {
                    let sentinel = sentinel.clone();
                    Box::pin(async move { sentinel.locate_primary().await })
                });
                let target = target(Address::Located(locate), Heartbeat::Primary);
                let probe = server_probe(connection, command_timeout);
                LocalCache::connect(target, plan.capacity, probe)
                    .await
                    .map(|cache| Some(Inner::One(cache)))
            }
            #[cfg(feature = "cluster")]
            (Deployment::Cluster { seed_host }, Connection::Cluster(cluster)) => {
                let slots = slot_source(cluster, command_timeout);
                let redis = plan.redis.clone();
                let (connect_timeout, tracking_timeout) =
                    (plan.connect_timeout, plan.command_timeout);
                let cluster = cluster.clone();
                let setup: crate::store::cache::NodeSetup = Arc::new(move |host, port| {
                    let target = TrackingTarget {
                        address: Address::Fixed(host.to_owned(), port),
                        redis: redis.clone(),
                        tls: tls.clone(),
                        heartbeat: Heartbeat::Primary,
                        connect_timeout,
                        command_timeout: tracking_timeout,
                    };
                    let probe = node_probe(&cluster, host, port, command_timeout);
                    (target, probe)
                });
                ClusterCache::connect(slots, setup, seed_host.clone(), plan.capacity)
                    .await
                    .map(|cache| Some(Inner::Cluster(cache)))
            }
            #[allow(unreachable_patterns)]
            _ => Err(StoreError::unavailable(
                "the local cache's plan does not match the store's connection",
            )),
        }
    }

    #[cfg(feature = "tls")]
    fn tls_client(root: Option<&[u8]>) -> Result<TlsClient, StoreError> {
        TlsClient::new(root)
    }

    #[cfg(not(feature = "tls"))]
    fn tls_client(_root: Option<&[u8]>) -> Result<TlsClient, StoreError> {
        Err(StoreError::unavailable(
            "rediss:// URLs need the `tls` feature of actix-login",
        ))
    }

    pub(super) async fn load<F, Fut>(
        cache: &Inner,
        key: &str,
        fetch: F,
    ) -> Option<Result<Option<LoadedSession>, StoreError>>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = Result<Option<LoadedSession>, StoreError>>,
    {
        match cache {
            Inner::One(cache) => cache.load(key, fetch).await,
            #[cfg(feature = "cluster")]
            Inner::Cluster(cache) => cache.load(key, fetch).await,
        }
    }

    pub(super) fn cached(cache: &Inner, key: &str) -> Option<LoadedSession> {
        match cache {
            Inner::One(cache) => cache.cached(key),
            #[cfg(feature = "cluster")]
            Inner::Cluster(cache) => cache.cached(key),
        }
    }

    pub(super) fn confirm_server(cache: &Inner, info: &str) {
        #[allow(irrefutable_let_patterns)]
        if let Inner::One(cache) = cache {
            // Cannot tell where the store's connection goes: trust no copy.
            cache.confirm_server(run_id(info).unwrap_or(""));
        }
    }

    /// `read`'s reply, or a timeout after `limit`: the cache's own reads through the store's
    /// connection, which the store's command timeout does not cover. A timeout is reported to
    /// the connection with `unanswered`, as the store's own commands report theirs: these reads
    /// may be the only ones on a link that went silent.
    async fn within(
        limit: Duration,
        read: impl Future<Output = redis::RedisResult<Value>>,
        unanswered: impl FnOnce(),
    ) -> Result<Value, StoreError> {
        match tokio::time::timeout(limit, read).await {
            Ok(Err(err)) if err.is_timeout() => {
                unanswered();
                Err(StoreError::Timeout)
            }
            Ok(reply) => reply.map_err(StoreError::unavailable),
            Err(_elapsed) => {
                unanswered();
                Err(StoreError::Timeout)
            }
        }
    }

    /// The `run_id` in an `INFO server` reply.
    fn server_run_id(info: Value) -> Result<String, StoreError> {
        run_id(&info_text(info))
            .map(str::to_owned)
            .ok_or_else(|| StoreError::unavailable("INFO server reported no run_id"))
    }

    /// How the local cache asks the store's own connection which server it reaches.
    fn server_probe(connection: &Connection, command_timeout: Duration) -> ServerProbe {
        let connection = connection.clone();
        Arc::new(move || {
            let mut connection = connection.clone();
            Box::pin(async move {
                let mut info = redis::cmd("INFO");
                info.arg("server");
                let reporter = connection.clone();
                let read = info.query_async(&mut connection);
                let info = within(command_timeout, read, || reporter.unanswered()).await?;
                server_run_id(info)
            })
        })
    }

    /// How a cluster cache reads the slot map through the store's connection.
    #[cfg(feature = "cluster")]
    fn slot_source(
        connection: &PerWorker,
        command_timeout: Duration,
    ) -> crate::store::cache::SlotSource {
        let connection = connection.clone();
        Arc::new(move || {
            let cluster = connection.shared_cluster();
            let connection = connection.clone();
            Box::pin(async move {
                let mut cluster = cluster.ok_or_else(not_a_cluster)?;
                let mut slots = redis::cmd("CLUSTER");
                slots.arg("SLOTS");
                let read = slots.query_async(&mut cluster);
                within(command_timeout, read, || connection.unanswered()).await
            })
        })
    }

    /// How the cache of one cluster node asks the store's connection which server is at that
    /// node's address.
    #[cfg(feature = "cluster")]
    fn node_probe(
        connection: &PerWorker,
        host: &str,
        port: u16,
        command_timeout: Duration,
    ) -> ServerProbe {
        use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};

        let connection = connection.clone();
        let host = host.to_owned();
        Arc::new(move || {
            let cluster = connection.shared_cluster();
            let connection = connection.clone();
            let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                host: host.clone(),
                port,
            });
            Box::pin(async move {
                let mut cluster = cluster.ok_or_else(not_a_cluster)?;
                let mut info = redis::cmd("INFO");
                info.arg("server");
                let read = cluster.route_command(info, routing);
                let info = within(command_timeout, read, || connection.unanswered()).await?;
                server_run_id(info)
            })
        })
    }

    /// The error of a cluster read on a store that is not on a cluster, which the builder
    /// never lets happen.
    #[cfg(feature = "cluster")]
    fn not_a_cluster() -> StoreError {
        StoreError::unavailable("the store's connection is not a cluster connection")
    }
}

#[cfg(not(feature = "local-cache"))]
mod imp {
    use std::future::Future;
    use std::time::Duration;

    use redis::aio::MultiplexedConnection;

    use super::super::connection::{Connection, Target};
    use crate::error::StoreError;
    use crate::store::LoadedSession;

    /// A cache that cannot exist: without the feature, `Cache` always holds `None`.
    #[derive(Clone)]
    pub(super) enum Inner {}

    /// Nothing to open.
    pub(super) struct Plan;

    pub(super) fn plan(
        capacity: Option<usize>,
        _target: &Target,
        _tls_root: Option<Vec<u8>>,
        _connect_timeout: Duration,
        _command_timeout: Duration,
    ) -> Result<Plan, StoreError> {
        match capacity {
            None => Ok(Plan),
            // Unreachable: only `local_cache`, which needs the feature, sets a capacity.
            Some(_) => Err(StoreError::unavailable(
                "the local cache needs the `local-cache` feature of actix-login",
            )),
        }
    }

    pub(super) async fn open(
        _plan: Plan,
        _connection: &Connection,
        _command_timeout: Duration,
    ) -> Result<Option<Inner>, StoreError> {
        Ok(None)
    }

    pub(super) async fn load<F, Fut>(
        cache: &Inner,
        _key: &str,
        _fetch: F,
    ) -> Option<Result<Option<LoadedSession>, StoreError>>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = Result<Option<LoadedSession>, StoreError>>,
    {
        match *cache {}
    }

    pub(super) fn confirm_server(cache: &Inner, _info: &str) {
        match *cache {}
    }
}
