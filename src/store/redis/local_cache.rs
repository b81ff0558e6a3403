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
    /// A cache of `capacity` sessions beside a store that connects to `target`; none if
    /// `capacity` is `None`.
    pub(super) fn new(
        capacity: Option<usize>,
        target: &Target,
        connect_timeout: Duration,
        command_timeout: Duration,
    ) -> Result<Self, StoreError> {
        imp::plan(capacity, target, connect_timeout, command_timeout).map(Self)
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
    use std::time::Duration;

    use redis::aio::MultiplexedConnection;
    use redis::Value;

    use super::super::connection::{info_text, Connection, Target};
    use crate::error::StoreError;
    use crate::store::cache::{run_id, LocalCache, ServerProbe, TrackingTarget};
    use crate::store::LoadedSession;

    pub(super) type Inner = LocalCache;

    pub(super) type Plan = Option<(TrackingTarget, usize)>;

    pub(super) fn plan(
        capacity: Option<usize>,
        target: &Target,
        connect_timeout: Duration,
        command_timeout: Duration,
    ) -> Result<Plan, StoreError> {
        let Some(capacity) = capacity else {
            return Ok(None);
        };
        // Where the cache's tracking connection goes: the same server, user and database.
        // Without `cluster` and `sentinel`, every target is a standalone server.
        #[allow(irrefutable_let_patterns)]
        let Target::Single(url) = target
        else {
            return Err(StoreError::unavailable(
                "the local cache needs a standalone Redis (not a cluster or Sentinel)",
            ));
        };
        let tracking = TrackingTarget::for_url(url, connect_timeout, command_timeout)?;
        Ok(Some((tracking, capacity)))
    }

    pub(super) async fn open(
        plan: Plan,
        connection: &Connection,
        command_timeout: Duration,
    ) -> Result<Option<Inner>, StoreError> {
        match plan {
            Some((target, capacity)) => {
                let probe = server_probe(connection, command_timeout);
                LocalCache::connect(target, capacity, probe).await.map(Some)
            }
            None => Ok(None),
        }
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
        cache.load(key, fetch).await
    }

    pub(super) fn confirm_server(cache: &Inner, info: &str) {
        // Cannot tell where the store's connection goes: trust no copy.
        cache.confirm_server(run_id(info).unwrap_or(""));
    }

    /// How the local cache asks the store's own connection which server it reaches.
    fn server_probe(connection: &Connection, command_timeout: Duration) -> ServerProbe {
        let connection = connection.clone();
        std::sync::Arc::new(move || {
            let mut connection = connection.clone();
            Box::pin(async move {
                let info = tokio::time::timeout(
                    command_timeout,
                    redis::cmd("INFO")
                        .arg("server")
                        .query_async::<Value>(&mut connection),
                )
                .await
                .map_err(|_elapsed| StoreError::Timeout)?
                .map_err(StoreError::unavailable)?;
                run_id(&info_text(info))
                    .map(str::to_owned)
                    .ok_or_else(|| StoreError::unavailable("INFO server reported no run_id"))
            })
        })
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
