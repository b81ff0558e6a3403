//! One connection type over the three deployments, so the store's commands need not care which
//! one they run on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::tls;
use crate::error::StoreError;

/// Where the store connects.
#[derive(Clone)]
pub(super) enum Target {
    Single(String),
    #[cfg(feature = "cluster")]
    Cluster(Vec<String>),
    #[cfg(feature = "sentinel")]
    Sentinel {
        sentinels: Vec<String>,
        service_name: String,
    },
}

impl Target {
    /// Every URL the store will dial first.
    pub(super) fn urls(&self) -> &[String] {
        match self {
            Target::Single(url) => std::slice::from_ref(url),
            #[cfg(feature = "cluster")]
            Target::Cluster(urls) => urls,
            #[cfg(feature = "sentinel")]
            Target::Sentinel { sentinels, .. } => sentinels,
        }
    }
}

/// What [`Connection::open`] needs to know: a plain value the builder hands over, so that the
/// connection knows nothing of the builder.
pub(super) struct ConnectOptions<'a> {
    pub(super) target: &'a Target,
    pub(super) connect_timeout: Duration,
    pub(super) command_timeout: Duration,
    #[cfg(feature = "tls")]
    pub(super) tls: &'a tls::TlsOptions,
}

/// A standalone server, the primary that Redis Sentinel names, or a Redis Cluster.
#[derive(Clone)]
pub(super) enum Connection {
    Single(SingleConnection),
    #[cfg(feature = "cluster")]
    Cluster(redis::cluster_async::ClusterConnection),
    #[cfg(feature = "sentinel")]
    Sentinel(super::sentinel::SentinelConnection),
}

impl Connection {
    /// Whether every key lives on one server, so one `MULTI`/`EXEC` or pipeline can span them.
    /// A Sentinel deployment is one primary, exactly like a standalone server.
    pub(super) fn is_single_node(&self) -> bool {
        match self {
            Connection::Single(_) => true,
            #[cfg(feature = "cluster")]
            Connection::Cluster(_) => false,
            #[cfg(feature = "sentinel")]
            Connection::Sentinel(_) => true,
        }
    }

    /// Connects to `options.target`.
    pub(super) async fn open(options: ConnectOptions<'_>) -> Result<Self, StoreError> {
        tls::prepare(
            options.target.urls(),
            #[cfg(feature = "tls")]
            options.tls,
        )?;
        match options.target {
            Target::Single(url) => open_single(url, &options).await,
            #[cfg(feature = "cluster")]
            Target::Cluster(nodes) => {
                #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
                let mut cluster = redis::cluster::ClusterClientBuilder::new(nodes.clone())
                    .connection_timeout(options.connect_timeout)
                    .response_timeout(options.command_timeout);
                #[cfg(feature = "tls")]
                if let Some(certificates) = tls::root_certificates(options.tls) {
                    cluster = cluster.certs(certificates);
                }
                let client = cluster.build().map_err(StoreError::unavailable)?;
                let connection = client
                    .get_async_connection()
                    .await
                    .map_err(StoreError::unavailable)?;
                Ok(Connection::Cluster(connection))
            }
            #[cfg(feature = "sentinel")]
            Target::Sentinel {
                sentinels,
                service_name,
            } => {
                let connection = super::sentinel::SentinelConnection::connect(
                    super::sentinel::SentinelOptions {
                        sentinels,
                        service_name,
                        connect_timeout: options.connect_timeout,
                        command_timeout: options.command_timeout,
                        #[cfg(feature = "tls")]
                        tls_root_certificate: tls::root_certificates(options.tls),
                    },
                )
                .await?;
                Ok(Connection::Sentinel(connection))
            }
        }
    }
}

async fn open_single(url: &str, options: &ConnectOptions<'_>) -> Result<Connection, StoreError> {
    #[cfg(feature = "tls")]
    let client = match tls::root_certificates(options.tls) {
        Some(certificates) => redis::Client::build_with_tls(url, certificates),
        None => redis::Client::open(url),
    };
    #[cfg(not(feature = "tls"))]
    let client = redis::Client::open(url);
    let client = client.map_err(StoreError::unavailable)?;
    // The manager retries every failed connect until it gives up, so an untrusted certificate
    // or a wrong password would surface only as a timeout. One plain attempt first reports
    // them as they are; a refused or slow connection is left to the manager's retries, for a
    // Redis that is still starting.
    let probe_config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(options.connect_timeout))
        .set_response_timeout(Some(options.command_timeout));
    if let Err(err) = client
        .get_multiplexed_async_connection_with_config(&probe_config)
        .await
    {
        if !(err.is_connection_refusal() || err.is_timeout()) {
            return Err(StoreError::unavailable(err));
        }
    }
    // No response timeout of the manager's own: `RedisStore::run` bounds every command
    // already, and a second timer per command is measurable.
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(options.connect_timeout))
        .set_response_timeout(None);
    let manager = ConnectionManager::new_with_config(client.clone(), config.clone())
        .await
        .map_err(StoreError::unavailable)?;
    Ok(Connection::Single(SingleConnection {
        current: Arc::new(RwLock::new(manager)),
        dial: Arc::new(Dial {
            client,
            config,
            replacing: AtomicBool::new(false),
        }),
    }))
}

/// A standalone server's connection, which is replaced when a command gets no answer.
///
/// The connection manager reconnects when the socket reports an error, but a link that goes
/// silent without closing (a peer or middlebox that vanished, a partition that drops packets)
/// reports nothing until the kernel stops retransmitting, some fifteen minutes later. Until
/// then every command would time out. So a command timeout here opens a fresh connection in
/// the background, and commands move to it once it answers the handshake; commands already
/// sent on the old one finish or time out there.
#[derive(Clone)]
pub(super) struct SingleConnection {
    current: Arc<RwLock<ConnectionManager>>,
    dial: Arc<Dial>,
}

/// How to open a replacement.
struct Dial {
    client: redis::Client,
    config: ConnectionManagerConfig,
    /// Set while a replacement is being connected, so a burst of timeouts opens one.
    replacing: AtomicBool,
}

impl SingleConnection {
    fn manager(&self) -> ConnectionManager {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Starts replacing the connection after a command went unanswered, unless a replacement
    /// is already under way.
    fn replace(&self) {
        if self.dial.replacing.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let dial = &this.dial;
            match ConnectionManager::new_with_config(dial.client.clone(), dial.config.clone()).await
            {
                Ok(fresh) => {
                    *this.current.write().unwrap_or_else(PoisonError::into_inner) = fresh;
                    tracing::warn!("a Redis command went unanswered; moved to a new connection");
                }
                // Redis is unreachable for new connections too: the next timeout tries again.
                Err(err) => tracing::warn!(error = %err, "replacing the Redis connection failed"),
            }
            dial.replacing.store(false, Ordering::Release);
        });
    }
}

impl Connection {
    /// Called when a command got no answer within its time limit: a standalone connection is
    /// replaced (see [`SingleConnection`]). Sentinel and Cluster connections find their servers
    /// anew by themselves.
    pub(super) fn unanswered(&self) {
        match self {
            Connection::Single(single) => single.replace(),
            #[cfg(any(feature = "cluster", feature = "sentinel"))]
            _ => {}
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(single) => {
                let mut manager = single.manager();
                Box::pin(async move { manager.req_packed_command(cmd).await })
            }
            #[cfg(feature = "cluster")]
            Connection::Cluster(conn) => conn.req_packed_command(cmd),
            #[cfg(feature = "sentinel")]
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
            Connection::Single(single) => {
                let mut manager = single.manager();
                Box::pin(async move { manager.req_packed_commands(pipeline, offset, count).await })
            }
            #[cfg(feature = "cluster")]
            Connection::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "sentinel")]
            Connection::Sentinel(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(single) => single.manager().get_db(),
            #[cfg(feature = "cluster")]
            Connection::Cluster(conn) => conn.get_db(),
            #[cfg(feature = "sentinel")]
            Connection::Sentinel(conn) => conn.get_db(),
        }
    }
}

/// The text of an `INFO` reply: one string from a server, or one per node from a cluster.
pub(super) fn info_text(reply: Value) -> String {
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
