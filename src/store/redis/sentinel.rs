//! A connection to the primary that Redis Sentinel names, kept across failovers.
//!
//! redis-rs resolves a primary through Sentinel once, when asked; its `ConnectionManager`
//! reconnects only to the address it started with, which after a failover is a replica or
//! nothing at all. This connection asks the sentinels again whenever the primary it holds stops
//! being one.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, IntoConnectionInfo, Pipeline, RedisError,
    RedisFuture, ServerErrorKind, TlsMode, Value,
};

use crate::error::StoreError;

/// A failed re-resolution is not retried sooner than this, so a burst of failing requests
/// during a failover asks the sentinels a few times a second, not once per request.
const RETRY_AFTER_FAILED_RESOLUTION: Duration = Duration::from_millis(100);

/// How to reach the sentinels and the primary behind them.
pub(crate) struct SentinelOptions<'a> {
    pub sentinels: &'a [String],
    pub service_name: &'a str,
    pub connect_timeout: Duration,
    /// How long the primary may take to answer one command (see `ConnectOptions::reply_timeout`).
    pub reply_timeout: Duration,
    /// Roots that replace the system's, for the sentinels and the data nodes alike.
    #[cfg(feature = "tls")]
    pub tls_root_certificate: Option<redis::TlsCertificates>,
}

/// One multiplexed connection to the current primary, shared by every clone.
#[derive(Clone)]
pub(crate) struct SentinelConnection {
    shared: Arc<Shared>,
}

struct Shared {
    /// Read on every command and written only after a reconnect; the lock is never held across
    /// an `.await`, only long enough to clone a handle.
    current: RwLock<Current>,
    /// Held for the whole of a re-resolution, which is how concurrent failures share one.
    resolver: tokio::sync::Mutex<Resolver>,
    /// Asks the sentinels where the primary is, for the local cache's tracking connection; a
    /// client of its own, so that it never holds up a re-resolution.
    #[cfg(feature = "local-cache")]
    locator: tokio::sync::Mutex<SentinelClient>,
    config: AsyncConnectionConfig,
    connect_timeout: Duration,
    /// How long a command may wait for its reply on this connection: a connection younger
    /// than that cannot be the one a command that just timed out was sent on.
    reply_timeout: Duration,
    db: i64,
}

#[derive(Clone)]
struct Current {
    /// Counts replacements, so a failure on a connection that was already replaced does not
    /// replace its successor.
    generation: u64,
    connection: MultiplexedConnection,
    /// When this connection became the current one.
    since: Instant,
}

struct Resolver {
    client: SentinelClient,
    last_failure: Option<Instant>,
}

impl SentinelConnection {
    /// Resolves the primary and connects to it, or fails within the connect timeout.
    pub(crate) async fn connect(options: SentinelOptions<'_>) -> Result<Self, StoreError> {
        let (mut client, db) = sentinel_client(&options)?;
        #[cfg(feature = "local-cache")]
        let (locator, _) = sentinel_client(&options)?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.reply_timeout));
        let connection = tokio::time::timeout(
            options.connect_timeout,
            connect_to_primary(&mut client, &config),
        )
        .await
        .map_err(|_elapsed| StoreError::Timeout)?
        .map_err(|err| {
            StoreError::unavailable(format!(
                "no primary for Sentinel service {:?}: {err}",
                options.service_name
            ))
        })?;
        Ok(Self {
            shared: Arc::new(Shared {
                current: RwLock::new(Current {
                    generation: 0,
                    connection,
                    since: Instant::now(),
                }),
                resolver: tokio::sync::Mutex::new(Resolver {
                    client,
                    last_failure: None,
                }),
                #[cfg(feature = "local-cache")]
                locator: tokio::sync::Mutex::new(locator),
                config,
                connect_timeout: options.connect_timeout,
                reply_timeout: options.reply_timeout,
                db,
            }),
        })
    }

    /// The host and port of the primary the sentinels name now (which the store's connection
    /// reaches once it has noticed a failover): where the local cache's tracking connection
    /// goes.
    #[cfg(feature = "local-cache")]
    pub(crate) async fn locate_primary(&self) -> Result<(String, u16), StoreError> {
        let mut locator = self.shared.locator.lock().await;
        let client = tokio::time::timeout(self.shared.connect_timeout, locator.async_get_client())
            .await
            .map_err(|_elapsed| StoreError::Timeout)?
            .map_err(StoreError::unavailable)?;
        match client.get_connection_info().addr() {
            ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                Ok((host.clone(), *port))
            }
            _ => Err(StoreError::unavailable(
                "Sentinel named a primary that is not reached over TCP",
            )),
        }
    }

    fn current(&self) -> Current {
        // A poisoned lock still holds a whole `Current`: it is only ever replaced in one
        // assignment.
        self.shared
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Starts a re-resolution after a command on `failed` hit an error that means the primary
    /// is gone. The failed command does not wait for it: its caller answers at once, and the
    /// next command uses the new primary.
    fn replace(&self, failed: u64) {
        let this = self.clone();
        let reconnect = async move { this.reconnect(failed).await };
        // Spawned, so a request that gives up (its own timeout) does not abort the reconnect
        // halfway. Commands only run inside a Tokio runtime, so there always is one to spawn on.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(reconnect);
        }
    }

    /// Looks the primary up again after a command got no answer within the store's bound.
    ///
    /// A primary that went silent (its host died without a reset, or a partition) fails no
    /// command by itself: its replies just never come, and the store's timer, which comes
    /// first (the connection's own allows for replica waits on top), ends each command before
    /// any error could start a lookup. Once Sentinel has promoted a replica, this finds it; a
    /// primary that was only slow is found again, and commands move to a fresh connection to
    /// it.
    ///
    /// Not while the current connection is younger than a command's longest wait: the command
    /// that timed out went to its predecessor, and a connection made since is not to blame. So
    /// a primary that stays slow gets a new connection at most that often, not one per
    /// timeout.
    pub(crate) fn unanswered(&self) {
        let current = self.current();
        if current.since.elapsed() >= self.shared.reply_timeout {
            self.replace(current.generation);
        }
    }

    async fn reconnect(&self, failed: u64) {
        // Whoever holds the lock is already resolving; one resolution serves every failure.
        let Ok(mut resolver) = self.shared.resolver.try_lock() else {
            return;
        };
        if self.current().generation != failed {
            return;
        }
        if resolver
            .last_failure
            .is_some_and(|at| at.elapsed() < RETRY_AFTER_FAILED_RESOLUTION)
        {
            return;
        }
        let resolved = tokio::time::timeout(
            self.shared.connect_timeout,
            connect_to_primary(&mut resolver.client, &self.shared.config),
        )
        .await;
        match resolved {
            Ok(Ok(connection)) => {
                resolver.last_failure = None;
                let mut current = self
                    .shared
                    .current
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                *current = Current {
                    generation: failed.wrapping_add(1),
                    connection,
                    since: Instant::now(),
                };
                tracing::info!("reconnected to the Redis primary named by Sentinel");
            }
            Ok(Err(err)) => {
                resolver.last_failure = Some(Instant::now());
                tracing::warn!(error = %err, "could not reach the Redis primary through Sentinel");
            }
            Err(_elapsed) => {
                resolver.last_failure = Some(Instant::now());
                tracing::warn!("timed out resolving the Redis primary through Sentinel");
            }
        }
    }

    /// Starts looking for the new primary if `result` says this one is lost. A server's error
    /// reply comes back as a value (it fails the command only later, when the reply is
    /// decoded), so replies are looked into as well as errors.
    fn check<'v>(
        &self,
        generation: u64,
        result: Result<impl IntoIterator<Item = &'v Value>, &RedisError>,
    ) {
        let lost = match result {
            Err(err) => primary_lost(err),
            Ok(replies) => replies.into_iter().any(|reply| match reply {
                Value::ServerError(err) => primary_lost(&RedisError::from(err.clone())),
                _ => false,
            }),
        };
        if lost {
            self.replace(generation);
        }
    }
}

impl ConnectionLike for SentinelConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let Current {
                generation,
                mut connection,
                ..
            } = self.current();
            let result = connection.req_packed_command(cmd).await;
            self.check(generation, result.as_ref().map(std::slice::from_ref));
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let Current {
                generation,
                mut connection,
                ..
            } = self.current();
            let result = connection
                .req_packed_commands(pipeline, offset, count)
                .await;
            self.check(generation, result.as_ref());
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.shared.db
    }
}

/// Whether `err` means the connection no longer leads to a primary: it broke (the primary
/// died, or Sentinel killed its clients while demoting it), or the server became a replica
/// under it (`READONLY`, from a command, a script, or inside an aborted `MULTI`/`EXEC`).
fn primary_lost(err: &RedisError) -> bool {
    if err.is_io_error() || err.is_connection_dropped() || err.is_unrecoverable_error() {
        return true;
    }
    let read_only = |kind: Option<ServerErrorKind>| kind == Some(ServerErrorKind::ReadOnly);
    err.clone()
        .into_server_errors()
        .is_some_and(|errors| errors.iter().any(|(_, err)| read_only(err.kind())))
}

async fn connect_to_primary(
    client: &mut SentinelClient,
    config: &AsyncConnectionConfig,
) -> redis::RedisResult<MultiplexedConnection> {
    client.get_async_connection_with_config(config).await
}

/// A Sentinel client for the service's primary, and the database it selects there.
///
/// The user, password and database come from the sentinel URLs, which must agree on them: the
/// user and password log in to the sentinels and to the data nodes alike, the database is
/// selected on the data nodes only (sentinels have none). `rediss://` makes both connections
/// TLS.
fn sentinel_client(options: &SentinelOptions<'_>) -> Result<(SentinelClient, i64), StoreError> {
    let mut parsed = Vec::with_capacity(options.sentinels.len());
    for (i, url) in options.sentinels.iter().enumerate() {
        // The parser's message could quote the URL, password included.
        let info = url.as_str().into_connection_info().map_err(|_| {
            StoreError::unavailable(format!("sentinel URL #{} is not a valid Redis URL", i + 1))
        })?;
        parsed.push(info);
    }
    let Some(first) = parsed.first() else {
        return Err(StoreError::unavailable("no sentinel URL given"));
    };
    let settings = first.redis_settings().clone();
    let tls = tls_mode(first.addr());
    let agree = parsed.iter().all(|info| {
        let other = info.redis_settings();
        other.username() == settings.username()
            && other.password() == settings.password()
            && other.db() == settings.db()
            && tls_mode(info.addr()) == tls
    });
    if !agree {
        return Err(StoreError::unavailable(
            "sentinel URLs differ in user, password, database or scheme; they must agree",
        ));
    }
    let addresses = parsed.iter().map(|info| info.addr().clone());
    let mut builder =
        SentinelClientBuilder::new(addresses, options.service_name, SentinelServerType::Master)
            .map_err(StoreError::unavailable)?
            .set_client_to_redis_db(settings.db());
    if let Some(username) = settings.username() {
        builder = builder
            .set_client_to_sentinel_username(username)
            .set_client_to_redis_username(username);
    }
    if let Some(password) = settings.password() {
        builder = builder
            .set_client_to_sentinel_password(password)
            .set_client_to_redis_password(password);
    }
    if let Some(mode) = tls {
        // The sentinels' own mode is already in their addresses.
        builder = builder.set_client_to_redis_tls_mode(mode);
        #[cfg(feature = "tls")]
        if let Some(certificates) = options.tls_root_certificate.clone() {
            builder = builder
                .set_client_to_sentinel_certificates(certificates.clone())
                .set_client_to_redis_certificates(certificates);
        }
    }
    let client = builder.build().map_err(StoreError::unavailable)?;
    Ok((client, settings.db()))
}

fn tls_mode(addr: &ConnectionAddr) -> Option<TlsMode> {
    match addr {
        ConnectionAddr::TcpTls { insecure: true, .. } => Some(TlsMode::Insecure),
        ConnectionAddr::TcpTls { .. } => Some(TlsMode::Secure),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::primary_lost;

    fn server_error(reply: &[u8]) -> redis::RedisError {
        match redis::parse_redis_value(reply).unwrap() {
            redis::Value::ServerError(err) => err.into(),
            other => panic!("not an error reply: {other:?}"),
        }
    }

    #[test]
    fn a_demoted_primary_is_recognised() {
        assert!(primary_lost(&server_error(
            b"-READONLY You can't write against a read only replica.\r\n"
        )));
        assert!(!primary_lost(&server_error(
            b"-ERR wrong number of arguments\r\n"
        )));
        assert!(!primary_lost(&server_error(
            b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
        )));
    }
}
