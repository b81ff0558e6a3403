//! The Redis store.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{SessionStore, StoredSession};
use crate::{SessionKey, SessionRecord, StoreError};

const DEFAULT_PREFIX: &str = "actix-login";
const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Keeps sessions in Redis.
///
/// One record is one Redis string, `{prefix}:session:{sha256-hex of the token}`, holding the
/// JSON-encoded [`SessionRecord`] with a millisecond TTL that is the session's idle deadline.
/// The raw token is never sent to Redis.
///
/// | operation | commands | round trips |
/// |---|---|---|
/// | [`load`](SessionStore::load) | `GET`, `PTTL` (pipelined) | 1 |
/// | [`create`](SessionStore::create) | `SET … NX PX` | 1 |
/// | [`extend`](SessionStore::extend) | `PEXPIRE` (a no-op on a missing key) | 1 |
/// | [`delete`](SessionStore::delete) | `DEL` | 1 |
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
    connection: ConnectionManager,
    prefix: Arc<str>,
    command_timeout: Duration,
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
    /// `rediss://` for TLS when the matching `redis` crate feature is enabled.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::builder(url).connect().await
    }

    /// Starts configuring a store for `url`.
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.into(),
            prefix: DEFAULT_PREFIX.to_owned(),
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// The Redis key for a session.
    pub fn session_key(&self, key: &SessionKey) -> String {
        format!("{}:session:{}", self.prefix, key.as_str())
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

/// Configures and connects a [`RedisStore`].
#[derive(Clone)]
#[must_use]
pub struct RedisStoreBuilder {
    url: String,
    prefix: String,
    command_timeout: Duration,
    connect_timeout: Duration,
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("prefix", &self.prefix)
            .field("command_timeout", &self.command_timeout)
            .field("connect_timeout", &self.connect_timeout)
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

    /// Connects, failing at once if Redis cannot be reached, so a misconfigured app does not
    /// start.
    pub async fn connect(self) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(self.url.as_str()).map_err(StoreError::unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.command_timeout));
        let connecting = ConnectionManager::new_with_config(client, config);
        let connection = tokio::time::timeout(self.connect_timeout * 2, connecting)
            .await
            .map_err(|_elapsed| StoreError::Timeout)?
            .map_err(StoreError::unavailable)?;
        Ok(RedisStore {
            connection,
            prefix: self.prefix.into(),
            command_timeout: self.command_timeout,
        })
    }
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
        let value = serde_json::to_vec(record).map_err(StoreError::corrupt)?;
        let mut conn = self.connection.clone();
        let reply: Option<String> = self
            .run(
                redis::cmd("SET")
                    .arg(self.session_key(key))
                    .arg(value)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_millis(expires_at))
                    .query_async(&mut conn),
            )
            .await?;
        // `NX` answers nil when the key exists.
        Ok(reply.is_some())
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<StoredSession>, StoreError> {
        let redis_key = self.session_key(key);
        let mut conn = self.connection.clone();
        let (value, pttl): (Option<Vec<u8>>, i64) = self
            .run(
                redis::pipe()
                    .cmd("GET")
                    .arg(&redis_key)
                    .cmd("PTTL")
                    .arg(&redis_key)
                    .query_async(&mut conn),
            )
            .await?;
        let Some(value) = value else {
            return Ok(None);
        };
        let remaining = match u64::try_from(pttl) {
            Ok(ms) => Duration::from_millis(ms),
            // -2: deleted between the two commands.
            Err(_) if pttl == -2 => return Ok(None),
            // -1: something removed the TTL. Accepting the record would let it live forever.
            Err(_) => return Err(StoreError::corrupt("session key has no TTL")),
        };
        let record = serde_json::from_slice(&value).map_err(StoreError::corrupt)?;
        Ok(Some(StoredSession {
            record,
            expires_at: SystemTime::now() + remaining,
        }))
    }

    async fn extend(&self, key: &SessionKey, expires_at: SystemTime) -> Result<bool, StoreError> {
        let mut conn = self.connection.clone();
        // PEXPIRE never creates a key, so this cannot resurrect a deleted session.
        let updated: i64 = self
            .run(
                redis::cmd("PEXPIRE")
                    .arg(self.session_key(key))
                    .arg(ttl_millis(expires_at))
                    .query_async(&mut conn),
            )
            .await?;
        Ok(updated == 1)
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
        Ok(removed > 0)
    }
}
