//! One connection type over the three deployments, so the store's commands need not care which
//! one they run on.

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::builder::{RedisStoreBuilder, Target};
use super::tls;
use crate::StoreError;

/// A standalone server, the primary that Redis Sentinel names, or a Redis Cluster.
#[derive(Clone)]
pub(super) enum Connection {
    Single(ConnectionManager),
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

    /// Connects to the builder's target.
    pub(super) async fn open(builder: &RedisStoreBuilder) -> Result<Self, StoreError> {
        tls::prepare(builder)?;
        match &builder.target {
            Target::Single(url) => open_single(url, builder).await,
            #[cfg(feature = "cluster")]
            Target::Cluster(nodes) => {
                #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
                let mut cluster = redis::cluster::ClusterClientBuilder::new(nodes.clone())
                    .connection_timeout(builder.connect_timeout)
                    .response_timeout(builder.command_timeout);
                #[cfg(feature = "tls")]
                if let Some(certificates) = tls::root_certificates(builder) {
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
                        connect_timeout: builder.connect_timeout,
                        command_timeout: builder.command_timeout,
                        #[cfg(feature = "tls")]
                        tls_root_certificate: tls::root_certificates(builder),
                    },
                )
                .await?;
                Ok(Connection::Sentinel(connection))
            }
        }
    }
}

async fn open_single(url: &str, builder: &RedisStoreBuilder) -> Result<Connection, StoreError> {
    #[cfg(feature = "tls")]
    let client = match tls::root_certificates(builder) {
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
        .set_connection_timeout(Some(builder.connect_timeout))
        .set_response_timeout(Some(builder.command_timeout));
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
        .set_connection_timeout(Some(builder.connect_timeout))
        .set_response_timeout(None);
    let manager = ConnectionManager::new_with_config(client, config)
        .await
        .map_err(StoreError::unavailable)?;
    Ok(Connection::Single(manager))
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(conn) => conn.req_packed_command(cmd),
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
            Connection::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "cluster")]
            Connection::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "sentinel")]
            Connection::Sentinel(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(conn) => conn.get_db(),
            #[cfg(feature = "cluster")]
            Connection::Cluster(conn) => conn.get_db(),
            #[cfg(feature = "sentinel")]
            Connection::Sentinel(conn) => conn.get_db(),
        }
    }
}
