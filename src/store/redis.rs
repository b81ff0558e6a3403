//! The Redis store.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::future::join_all;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, TlsCertificates, Value};

use super::cache::{LocalCache, Lookup, TrackingTarget};
use super::sentinel::{SentinelConnection, SentinelOptions};
use super::{Admission, Counter, SessionStore, StoredSession, ThrottleStore, UserSessions};
use crate::record::{from_unix_millis, unix_millis};
use crate::{SessionKey, SessionRecord, StoreError};

const DEFAULT_PREFIX: &str = "actix-login";
const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Keeps sessions in Redis.
///
/// One record is one Redis string, `{prefix}:s:{SHA-256 of the token, base64url}`, holding the
/// session's idle deadline (Unix milliseconds), a space and the JSON-encoded [`SessionRecord`],
/// with a TTL that ends at the same deadline.
/// Each user's sessions are indexed in a set, `{prefix}:u:{user id}`, of those hashes,
/// whose TTL is kept at or past the absolute end of its longest-lived session. The raw token is
/// never sent to Redis. Needs Redis 7.0 or newer (`PEXPIRE … NX`/`GT`).
///
/// | operation | commands | round trips |
/// |---|---|---|
/// | [`load`](SessionStore::load) | `GET`; nothing on a [local cache](RedisStoreBuilder::local_cache) hit | 0–1 |
/// | [`extend`](SessionStore::extend) | `SET … XX PX` (a no-op on a missing key); then `PING` with a local cache | 1–2 |
/// | [`create`](SessionStore::create) | `SADD`, `PEXPIRE … NX`, `PEXPIRE … GT`, `SET … NX PX` (one `MULTI`/`EXEC`) | 1 |
/// | [`delete`](SessionStore::delete) | `DEL`, then `PING` | 2 |
/// | [`list`](SessionStore::list) | `SMEMBERS`; `MGET` of the members; `SREM` of dead members | 2–3 |
/// | [`rotate`](SessionStore::rotate) | as `create`; as `delete` for the old key; `SREM` old | 4 |
///
/// All clones share one multiplexed connection that reconnects by itself after Redis restarts.
/// Every command is bounded by a timeout (1 s unless set with
/// [`RedisStoreBuilder::command_timeout`]), so a hung or unreachable Redis makes requests fail
/// with `503 Service Unavailable` instead of hanging.
///
/// ```no_run
/// # async fn run() -> Result<(), actix_login::StoreError> {
/// use std::time::Duration;
/// use actix_login::RedisStore;
///
/// let store = RedisStore::builder("redis://127.0.0.1:6379")
///     .key_prefix("myapp")
///     .command_timeout(Duration::from_millis(500))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    connection: Connection,
    cache: Option<LocalCache>,
    prefix: Arc<str>,
    command_timeout: Duration,
}

/// A standalone server, the primary that Redis Sentinel names, or a Redis Cluster.
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(SentinelConnection),
}

impl Connection {
    /// Whether every key lives on one server, so one `MULTI`/`EXEC` or pipeline can span them.
    /// A Sentinel deployment is one primary, exactly like a standalone server.
    fn is_single_node(&self) -> bool {
        matches!(self, Connection::Single(_) | Connection::Sentinel(_))
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(conn) => conn.req_packed_command(cmd),
            Connection::Cluster(conn) => conn.req_packed_command(cmd),
            Connection::Sentinel(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
            Connection::Sentinel(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(conn) => conn.get_db(),
            Connection::Cluster(conn) => conn.get_db(),
            Connection::Sentinel(conn) => conn.get_db(),
        }
    }
}

impl fmt::Debug for RedisStore {
    // The connection's debug output would include the server address and credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("command_timeout", &self.command_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects with the default settings. See [`RedisStore::builder`] for the options.
    ///
    /// `url` is a redis-rs connection URL: `redis://[user:password@]host[:port][/db]`, or
    /// `rediss://` for TLS (see [`RedisStoreBuilder::tls_root_certificate`] for servers whose
    /// certificates come from a private CA).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::builder(url).connect().await
    }

    /// Starts configuring a store for `url`.
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        Self::builder_for(Target::Single(url.into()))
    }

    /// Connects to a Redis Cluster through any of `nodes` (seed URLs such as
    /// `redis://10.0.0.1:7000`) with the default settings.
    pub async fn connect_cluster(
        nodes: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<Self, StoreError> {
        Self::cluster_builder(nodes).connect().await
    }

    /// Starts configuring a store on a Redis Cluster reached through any of `nodes`.
    ///
    /// Every operation on one session touches one key; the user index and the throttle counters
    /// live in other slots, and the store never needs a transaction across them (see
    /// [`SessionStore`]): on a cluster a session's record is written before its index entry,
    /// which a listing can never prune, and the record is unreachable until the login that
    /// wrote it answers.
    pub fn cluster_builder(
        nodes: impl IntoIterator<Item = impl Into<String>>,
    ) -> RedisStoreBuilder {
        Self::builder_for(Target::Cluster(nodes.into_iter().map(Into::into).collect()))
    }

    /// Connects through Redis Sentinel to the primary of `service_name`, with the default
    /// settings. See [`RedisStore::sentinel_builder`].
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
    /// both connections TLS, verified against [`RedisStoreBuilder::tls_root_certificate`] or
    /// the system's roots.
    ///
    /// The store holds one multiplexed connection to the primary, as on a standalone server,
    /// and so uses `MULTI`/`EXEC` the same way. When a command finds the primary gone (the
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
    pub fn sentinel_builder(
        sentinels: impl IntoIterator<Item = impl Into<String>>,
        service_name: impl Into<String>,
    ) -> RedisStoreBuilder {
        Self::builder_for(Target::Sentinel {
            sentinels: sentinels.into_iter().map(Into::into).collect(),
            service_name: service_name.into(),
        })
    }

    fn builder_for(target: Target) -> RedisStoreBuilder {
        RedisStoreBuilder {
            target,
            cache_capacity: None,
            prefix: DEFAULT_PREFIX.to_owned(),
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            tls_root_certificate: None,
        }
    }

    /// The Redis key for a session.
    pub fn session_key(&self, key: &SessionKey) -> String {
        // Built by hand: it runs on every authenticated request, and `format!` costs more.
        let mut name = String::with_capacity(self.prefix.len() + 3 + key.as_str().len());
        name.push_str(&self.prefix);
        name.push_str(":s:");
        name.push_str(key.as_str());
        name
    }

    /// The Redis key of a throttling counter. All counters share the hash tag `{throttle}`, so
    /// one script can check and count them together, on one node even in a cluster.
    pub fn counter_key(&self, counter: &str) -> String {
        format!("{}:{{throttle}}:{counter}", self.prefix)
    }

    /// The Redis key of a user's session index.
    pub fn user_index_key(&self, user_id: &str) -> String {
        format!("{}:u:{user_id}", self.prefix)
    }

    /// Indexes `key` under its user and stores the record. The index TTL only ever grows, to the
    /// record's absolute end at least.
    ///
    /// On one server both happen in one MULTI/EXEC, so a listing elsewhere never sees one
    /// without the other. On a cluster they live in different slots: the record is written
    /// first, then indexed. A listing in between finds no entry to prune, and the record is
    /// unreachable until this call returns and the client receives its token.
    async fn index_and_create(
        &self,
        key: &SessionKey,
        record: &SessionRecord,
        expires_at: SystemTime,
    ) -> Result<bool, StoreError> {
        let value = encode(record, expires_at)?;
        let index = self.user_index_key(record.user_id());
        let index_ttl = ttl_millis(record.expires_at());
        let mut set = redis::cmd("SET");
        set.arg(self.session_key(key))
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(ttl_millis(expires_at));
        let mut add = redis::pipe();
        add.cmd("SADD")
            .arg(&index)
            .arg(key.as_str())
            .ignore()
            .cmd("PEXPIRE")
            .arg(&index)
            .arg(index_ttl)
            .arg("NX")
            .ignore()
            .cmd("PEXPIRE")
            .arg(&index)
            .arg(index_ttl)
            .arg("GT")
            .ignore();
        let mut conn = self.connection.clone();
        // `NX` answers nil when the key exists.
        let created: Option<String> = if conn.is_single_node() {
            let (created,): (Option<String>,) = self
                .run(add.atomic().add_command(set).query_async(&mut conn))
                .await?;
            created
        } else {
            let created: Option<String> = self.run(set.query_async(&mut conn)).await?;
            if created.is_some() {
                self.run(add.query_async::<()>(&mut conn)).await?;
            }
            created
        };
        Ok(created.is_some())
    }

    /// The stored value under each key: one `MGET` on a server, a `GET` per key (each in its own
    /// slot) on a cluster.
    async fn lookup_all(&self, keys: &[&SessionKey]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let mut conn = self.connection.clone();
        if conn.is_single_node() {
            let redis_keys: Vec<String> = keys.iter().map(|key| self.session_key(key)).collect();
            return self
                .run(redis::cmd("MGET").arg(redis_keys).query_async(&mut conn))
                .await;
        }
        let lookups = keys.iter().map(|key| {
            let mut conn = self.connection.clone();
            let get = redis::cmd("GET").arg(self.session_key(key)).to_owned();
            async move { self.run(get.query_async(&mut conn)).await }
        });
        join_all(lookups).await.into_iter().collect()
    }

    async fn unindex(&self, user_id: &str, keys: &[&str]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut conn = self.connection.clone();
        self.run(
            redis::cmd("SREM")
                .arg(self.user_index_key(user_id))
                .arg(keys)
                .query_async::<()>(&mut conn),
        )
        .await
    }

    /// The session stored under `redis_key`, read through `conn`.
    async fn fetch(
        &self,
        conn: &mut impl ConnectionLike,
        redis_key: &str,
    ) -> Result<Option<StoredSession>, StoreError> {
        let mut get = redis::cmd("GET");
        get.arg(redis_key);
        let value: Option<Vec<u8>> = self.run(get.query_async(conn)).await?;
        value.as_deref().map(decode).transpose()
    }

    /// Returns once Redis has written the tracking invalidations for the writes this
    /// connection has seen answered.
    ///
    /// Redis writes invalidations in the event-loop pass that answers the write; a command sent
    /// after that answer is read in a later pass, so its reply means they are in every tracking
    /// process's socket, where a cached lookup looks first (see
    /// [`RedisStoreBuilder::local_cache`]). A cluster has no tracking caches to settle.
    async fn settle(&self, conn: &mut Connection) -> Result<(), StoreError> {
        if matches!(conn, Connection::Cluster(_)) {
            return Ok(());
        }
        self.run(redis::cmd("PING").query_async::<()>(conn)).await
    }

    async fn run<T>(
        &self,
        operation: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.command_timeout, operation).await {
            Ok(Err(err)) if err.is_timeout() => Err(StoreError::Timeout),
            Ok(result) => result.map_err(StoreError::unavailable),
            Err(_elapsed) => Err(StoreError::Timeout),
        }
    }
}

/// Where the store connects.
#[derive(Clone)]
enum Target {
    Single(String),
    Cluster(Vec<String>),
    Sentinel {
        sentinels: Vec<String>,
        service_name: String,
    },
}

impl Target {
    fn uses_tls(&self) -> bool {
        let tls = |url: &String| {
            url.get(..9)
                .is_some_and(|scheme| scheme.eq_ignore_ascii_case("rediss://"))
        };
        match self {
            Target::Single(url) => tls(url),
            Target::Cluster(urls)
            | Target::Sentinel {
                sentinels: urls, ..
            } => urls.iter().any(tls),
        }
    }
}

/// Configures and connects a [`RedisStore`].
#[derive(Clone)]
#[must_use]
pub struct RedisStoreBuilder {
    target: Target,
    cache_capacity: Option<usize>,
    prefix: String,
    command_timeout: Duration,
    connect_timeout: Duration,
    tls_root_certificate: Option<Vec<u8>>,
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("prefix", &self.prefix)
            .field("command_timeout", &self.command_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("cache_capacity", &self.cache_capacity)
            .finish_non_exhaustive()
    }
}

impl RedisStoreBuilder {
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
    /// back.
    ///
    /// The tracking connection is pinged four times a second, and entries are served only while
    /// a reply came back within the last second: a Redis that vanishes without closing the
    /// connection (a crashed host, a silent partition) stops the cache within a second, and
    /// requests then fail closed or read from Redis.
    ///
    /// Needs a standalone Redis reached over plain TCP: `connect` fails for a cluster, Sentinel,
    /// a Unix socket or `rediss://`. The guarantee rests on Redis writing an invalidation to
    /// every tracking client in the pass that answers the write, and on the network delivering
    /// it no later than the logout's response reaches the next instance. So:
    ///
    /// * connect the store and the cache to the same Redis process directly, not through a TCP
    ///   proxy (which may hold pushes back) or a name that resolves to several servers;
    /// * keep Redis's I/O threads off (`io-threads 1`, the default), and tracking clients'
    ///   output small (it is: only this store's own reads);
    /// * keep clocks in sync: an entry expires at the deadline in the record, by this host's
    ///   clock, while Redis expires the key by its own.
    pub fn local_cache(mut self, max_sessions: usize) -> Self {
        self.cache_capacity = Some(max_sessions);
        self
    }

    /// Trusts the certificate authority in `pem` (one or more PEM certificates) for `rediss://`
    /// connections, instead of the system's roots: for servers whose certificates come from a
    /// private CA. The server's host name is still verified, so there is no need for
    /// `#insecure`.
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root_certificate = Some(pem.into());
        self
    }

    fn tls_certificates(&self) -> Option<TlsCertificates> {
        self.tls_root_certificate
            .as_ref()
            .map(|pem| TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            })
    }

    /// Connects, failing at once if Redis cannot be reached, so a misconfigured app does not
    /// start.
    pub async fn connect(self) -> Result<RedisStore, StoreError> {
        let tracking = match self.cache_capacity {
            Some(capacity) => Some((self.tracking_target()?, capacity)),
            None => None,
        };
        let connecting = self.open();
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
        let cache = match tracking {
            Some((target, capacity)) => Some(LocalCache::connect(target, capacity).await?),
            None => None,
        };
        Ok(RedisStore {
            connection,
            cache,
            prefix: self.prefix.into(),
            command_timeout: self.command_timeout,
        })
    }

    /// Where the cache's tracking connection goes: the same server, user and database.
    fn tracking_target(&self) -> Result<TrackingTarget, StoreError> {
        let Target::Single(url) = &self.target else {
            return Err(StoreError::unavailable(
                "the local cache needs a standalone Redis (not a cluster or Sentinel)",
            ));
        };
        let client = redis::Client::open(url.as_str()).map_err(StoreError::unavailable)?;
        let info = client.get_connection_info();
        let redis::ConnectionAddr::Tcp(host, port) = info.addr() else {
            return Err(StoreError::unavailable(
                "the local cache needs Redis over plain TCP (not TLS or a Unix socket)",
            ));
        };
        Ok(TrackingTarget {
            host: host.clone(),
            port: *port,
            redis: info.redis_settings().clone(),
            connect_timeout: self.connect_timeout,
            command_timeout: self.command_timeout,
        })
    }

    async fn open(&self) -> Result<Connection, StoreError> {
        if self.target.uses_tls() {
            install_crypto_provider();
        } else if self.tls_root_certificate.is_some() {
            // redis-rs would ignore it, or switch a cluster to TLS behind the URLs' back.
            return Err(StoreError::unavailable(
                "a TLS root certificate was given for plain-text URLs: use rediss://",
            ));
        }
        match &self.target {
            Target::Single(url) => {
                let client = match self.tls_certificates() {
                    Some(certificates) => redis::Client::build_with_tls(url.as_str(), certificates),
                    None => redis::Client::open(url.as_str()),
                }
                .map_err(StoreError::unavailable)?;
                // The manager retries every failed connect until it gives up, so an untrusted
                // certificate or a wrong password would surface only as a timeout. One plain
                // attempt first reports them as they are; a refused or slow connection is left
                // to the manager's retries, for a Redis that is still starting.
                let probe_config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.connect_timeout))
                    .set_response_timeout(Some(self.command_timeout));
                if let Err(err) = client
                    .get_multiplexed_async_connection_with_config(&probe_config)
                    .await
                {
                    if !(err.is_connection_refusal() || err.is_timeout()) {
                        return Err(StoreError::unavailable(err));
                    }
                }
                // No response timeout of the manager's own: `RedisStore::run` bounds every
                // command already, and a second timer per command is measurable.
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.connect_timeout))
                    .set_response_timeout(None);
                let manager = ConnectionManager::new_with_config(client, config)
                    .await
                    .map_err(StoreError::unavailable)?;
                Ok(Connection::Single(manager))
            }
            Target::Cluster(nodes) => {
                let mut builder = redis::cluster::ClusterClientBuilder::new(nodes.clone())
                    .connection_timeout(self.connect_timeout)
                    .response_timeout(self.command_timeout);
                if let Some(certificates) = self.tls_certificates() {
                    builder = builder.certs(certificates);
                }
                let client = builder.build().map_err(StoreError::unavailable)?;
                let connection = client
                    .get_async_connection()
                    .await
                    .map_err(StoreError::unavailable)?;
                Ok(Connection::Cluster(connection))
            }
            Target::Sentinel {
                sentinels,
                service_name,
            } => {
                let connection = SentinelConnection::connect(SentinelOptions {
                    sentinels,
                    service_name,
                    connect_timeout: self.connect_timeout,
                    command_timeout: self.command_timeout,
                    tls_root_certificate: self.tls_root_certificate.as_deref(),
                })
                .await?;
                Ok(Connection::Sentinel(connection))
            }
        }
    }
}

/// Makes ring rustls's process-wide crypto provider unless the app chose one. rustls picks a
/// provider by itself only when exactly one of its backends is compiled in; with both (another
/// dependency may enable aws-lc-rs) it would panic at the first TLS connection instead.
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another installer is fine: either provider will do.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The text of an `INFO` reply: one string from a server, or one per node from a cluster.
fn info_text(reply: Value) -> String {
    match reply {
        Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Value::VerbatimString { text, .. } | Value::SimpleString(text) => text,
        Value::Map(pairs) => pairs
            .into_iter()
            .map(|(_, v)| info_text(v))
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Array(items) => items
            .into_iter()
            .map(info_text)
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
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

/// The stored value of a session: its idle deadline in Unix milliseconds, a space, and the
/// record as JSON.
///
/// The deadline travels in the value, and not only as the key's TTL, so that one `GET` tells a
/// request everything it needs, and a cached copy knows by itself when it has expired. The TTL
/// is set to the same moment; it frees the memory, the value decides.
fn encode(record: &SessionRecord, expires_at: SystemTime) -> Result<Vec<u8>, StoreError> {
    let mut value = unix_millis(expires_at).to_string().into_bytes();
    value.push(b' ');
    serde_json::to_writer(&mut value, record).map_err(StoreError::corrupt)?;
    Ok(value)
}

/// The session in a value written by [`encode`].
fn decode(value: &[u8]) -> Result<StoredSession, StoreError> {
    let corrupt = || StoreError::corrupt("session value has no deadline");
    let space = value.iter().position(|&b| b == b' ').ok_or_else(corrupt)?;
    let (deadline, json) = value.split_at(space);
    let deadline: u64 = std::str::from_utf8(deadline)
        .ok()
        .and_then(|digits| digits.parse().ok())
        .ok_or_else(corrupt)?;
    let record = serde_json::from_slice(&json[1..]).map_err(StoreError::corrupt)?;
    Ok(StoredSession {
        record,
        expires_at: from_unix_millis(deadline),
    })
}

/// Redis wants a positive whole number of milliseconds; a deadline already reached becomes 1 ms.
fn ttl_millis(expires_at: SystemTime) -> u64 {
    let remaining = expires_at
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    u64::try_from(remaining.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl SessionStore for RedisStore {
    async fn create(
        &self,
        key: &SessionKey,
        record: &SessionRecord,
        expires_at: SystemTime,
    ) -> Result<bool, StoreError> {
        self.index_and_create(key, record, expires_at).await
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<StoredSession>, StoreError> {
        let redis_key = self.session_key(key);
        if let Some(cache) = &self.cache {
            match cache.lookup(&redis_key) {
                Lookup::Hit(stored) => return Ok(Some(stored)),
                Lookup::Fill(fill) => match self.fetch(&mut fill.connection(), &redis_key).await {
                    // An unreadable record is no cache failure: report it, store nothing.
                    Ok(stored) => {
                        cache.complete(fill, stored.as_ref());
                        return Ok(stored);
                    }
                    Err(err @ StoreError::Corrupt(_)) => {
                        cache.complete(fill, None);
                        return Err(err);
                    }
                    // The tracking connection failed; the main one may still work.
                    Err(_) => cache.abandon(fill),
                },
                Lookup::Bypass => {}
            }
        }
        self.fetch(&mut self.connection.clone(), &redis_key).await
    }

    async fn extend(
        &self,
        key: &SessionKey,
        record: &SessionRecord,
        expires_at: SystemTime,
    ) -> Result<bool, StoreError> {
        let mut conn = self.connection.clone();
        // `XX` never creates a key, so this cannot resurrect a deleted session. The record under
        // a key never changes, so writing it again loses nothing.
        let updated: Option<String> = self
            .run(
                redis::cmd("SET")
                    .arg(self.session_key(key))
                    .arg(encode(record, expires_at)?)
                    .arg("XX")
                    .arg("PX")
                    .arg(ttl_millis(expires_at))
                    .query_async(&mut conn),
            )
            .await?;
        if updated.is_some() && self.cache.is_some() {
            // So that this process's own cache shows the new deadline from now on.
            self.settle(&mut conn).await?;
        }
        Ok(updated.is_some())
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool, StoreError> {
        let mut conn = self.connection.clone();
        let removed: i64 = self
            .run(
                redis::cmd("DEL")
                    .arg(self.session_key(key))
                    .query_async(&mut conn),
            )
            .await?;
        // A logout is final on every instance before the client hears of it; also when another
        // instance's DEL won the race, since its invalidations went out in the same pass.
        self.settle(&mut conn).await?;
        Ok(removed > 0)
    }

    async fn list(&self, user_id: &str) -> Result<UserSessions, StoreError> {
        let mut conn = self.connection.clone();
        let members: Vec<String> = self
            .run(
                redis::cmd("SMEMBERS")
                    .arg(self.user_index_key(user_id))
                    .query_async(&mut conn),
            )
            .await?;
        let mut indexed: Vec<(&str, SessionKey)> = Vec::with_capacity(members.len());
        let mut dead: Vec<&str> = Vec::new();
        for member in &members {
            match SessionKey::parse(member) {
                Some(key) => indexed.push((member, key)),
                None => dead.push(member),
            }
        }
        let keys: Vec<&SessionKey> = indexed.iter().map(|(_, key)| key).collect();
        let replies = if keys.is_empty() {
            Vec::new()
        } else {
            self.lookup_all(&keys).await?
        };
        let mut live = Vec::with_capacity(indexed.len());
        let mut doomed = Vec::new();
        if replies.len() != indexed.len() {
            return Err(StoreError::corrupt("short pipeline reply"));
        }
        let now = SystemTime::now();
        for ((member, key), value) in indexed.into_iter().zip(replies) {
            match value.as_deref().map(decode).transpose() {
                Ok(Some(stored)) if stored.expires_at <= now => {
                    // Past its deadline but still there (its TTL was removed, or clocks
                    // disagree): delete it before dropping its entry, so that no record is ever
                    // left unindexed for a revocation to miss.
                    doomed.push(key);
                    dead.push(member);
                }
                Ok(Some(stored)) if stored.record.user_id() == user_id => live.push((key, stored)),
                // Gone, or (after a key collision) someone else's: not this user's.
                Ok(_) => dead.push(member),
                Err(err) => {
                    // It can never authenticate anyone; remove it rather than skip it forever.
                    tracing::warn!(session = key.short(), error = %err, "removing unreadable session");
                    doomed.push(key);
                    dead.push(member);
                }
            }
        }
        for key in &doomed {
            self.delete(key).await?;
        }
        // Dropping dead entries one exact member at a time never touches an entry that a
        // concurrent rotation has just added.
        self.unindex(user_id, &dead).await?;
        Ok(UserSessions {
            live,
            dropped: dead.len(),
        })
    }

    async fn rotate(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        record: &SessionRecord,
        expires_at: SystemTime,
    ) -> Result<bool, StoreError> {
        if !self.index_and_create(new, record, expires_at).await? {
            return Ok(false);
        }
        if !self.delete(old).await? {
            // Revoked, logged out or expired meanwhile: the new session must not outlive it.
            self.delete(new).await?;
            self.unindex(record.user_id(), &[new.as_str()]).await?;
            return Ok(false);
        }
        self.unindex(record.user_id(), &[old.as_str()]).await?;
        Ok(true)
    }
}

/// Checks every counter, then counts the attempt in all of them or in none. `KEYS` are the
/// counters; `ARGV` holds `max, window_ms` per counter. Returns -1 when admitted, else the
/// milliseconds until the fullest window ends.
const ADMIT_SCRIPT: &str = r"
local retry = -1
for i, key in ipairs(KEYS) do
  local max = tonumber(ARGV[2 * i - 1])
  local count = tonumber(redis.call('GET', key) or '0')
  if count >= max then
    local ttl = redis.call('PTTL', key)
    if ttl < 0 then
      redis.call('PEXPIRE', key, ARGV[2 * i])
      ttl = tonumber(ARGV[2 * i])
    end
    if ttl > retry then retry = ttl end
  end
end
if retry >= 0 then return retry end
for i, key in ipairs(KEYS) do
  redis.call('INCR', key)
  redis.call('PEXPIRE', key, ARGV[2 * i], 'NX')
end
return -1
";

/// Takes one back from each existing counter above zero.
const RELEASE_SCRIPT: &str = r"
for _, key in ipairs(KEYS) do
  local count = tonumber(redis.call('GET', key) or '0')
  if count > 0 then redis.call('DECR', key) end
end
return 0
";

impl ThrottleStore for RedisStore {
    async fn admit(&self, counters: &[Counter<'_>]) -> Result<Admission, StoreError> {
        // One script over all counters: the check and the count are one atomic step, so
        // concurrent attempts cannot share room that only one of them has. The counters share
        // a hash tag, so the script stays on one node of a cluster.
        let script = redis::Script::new(ADMIT_SCRIPT);
        let mut invocation = script.prepare_invoke();
        for counter in counters {
            let window = u64::try_from(counter.window.as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            invocation
                .key(self.counter_key(counter.name))
                .arg(counter.max)
                .arg(window);
        }
        let mut conn = self.connection.clone();
        let verdict: i64 = self.run(invocation.invoke_async(&mut conn)).await?;
        Ok(match u64::try_from(verdict) {
            Ok(ms) => Admission::Refused {
                retry_after: Duration::from_millis(ms),
            },
            Err(_) => Admission::Admitted,
        })
    }

    async fn release(&self, counters: &[&str]) -> Result<(), StoreError> {
        let script = redis::Script::new(RELEASE_SCRIPT);
        let mut invocation = script.prepare_invoke();
        for name in counters {
            invocation.key(self.counter_key(name));
        }
        let mut conn = self.connection.clone();
        self.run(invocation.invoke_async::<()>(&mut conn)).await
    }

    async fn reset(&self, counter: &str) -> Result<(), StoreError> {
        let mut conn = self.connection.clone();
        self.run(
            redis::cmd("DEL")
                .arg(self.counter_key(counter))
                .query_async::<()>(&mut conn),
        )
        .await
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
