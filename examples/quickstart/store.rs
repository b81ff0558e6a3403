//! The session store the environment names: Redis, Redis Cluster or Sentinel, cached or not.

use actix_login::RedisStore;
use actix_login::RedisStoreBuilder;

use crate::config::env_number;

/// Redis from `REDIS_SENTINELS` (comma-separated sentinel URLs, with
/// `REDIS_SENTINEL_SERVICE`), `REDIS_CLUSTER_NODES` (comma-separated `redis://host:port` seeds)
/// or `REDIS_URL`, if any is set.
pub(crate) async fn redis_store() -> std::io::Result<Option<RedisStore>> {
    let setting = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
    let store = if let Some(sentinels) = setting("REDIS_SENTINELS") {
        let service = setting("REDIS_SENTINEL_SERVICE").unwrap_or_else(|| "mymaster".to_owned());
        let store = sentinel_store(&sentinels, &service).await;
        println!("session store: Redis Sentinel service {service:?} (from REDIS_SENTINELS)");
        store
    } else if let Some(nodes) = setting("REDIS_CLUSTER_NODES") {
        let store = cluster_store(&nodes).await;
        println!("session store: Redis Cluster (from REDIS_CLUSTER_NODES)");
        store
    } else if let Some(url) = setting("REDIS_URL") {
        let mut builder = RedisStore::builder(url);
        if let Some(max_sessions) = env_number("SESSION_CACHE")? {
            let max_sessions = usize::try_from(max_sessions).map_err(std::io::Error::other)?;
            builder = with_cache(builder, max_sessions)?;
            println!("session cache: up to {max_sessions} sessions in process");
        }
        let store = builder.connect().await.map_err(std::io::Error::other);
        println!("session store: Redis (from REDIS_URL)");
        store
    } else {
        return Ok(None);
    };
    store.map(Some)
}

#[cfg(feature = "sentinel")]
async fn sentinel_store(sentinels: &str, service: &str) -> std::io::Result<RedisStore> {
    RedisStore::connect_sentinel(sentinels.split(',').map(str::trim), service)
        .await
        .map_err(std::io::Error::other)
}

#[cfg(not(feature = "sentinel"))]
async fn sentinel_store(_sentinels: &str, _service: &str) -> std::io::Result<RedisStore> {
    Err(needs_feature("REDIS_SENTINELS", "sentinel"))
}

#[cfg(feature = "cluster")]
async fn cluster_store(nodes: &str) -> std::io::Result<RedisStore> {
    RedisStore::connect_cluster(nodes.split(',').map(str::trim))
        .await
        .map_err(std::io::Error::other)
}

#[cfg(not(feature = "cluster"))]
async fn cluster_store(_nodes: &str) -> std::io::Result<RedisStore> {
    Err(needs_feature("REDIS_CLUSTER_NODES", "cluster"))
}

#[cfg(feature = "local-cache")]
fn with_cache(
    builder: RedisStoreBuilder,
    max_sessions: usize,
) -> std::io::Result<RedisStoreBuilder> {
    Ok(builder.local_cache(max_sessions))
}

#[cfg(not(feature = "local-cache"))]
fn with_cache(_builder: RedisStoreBuilder, _max: usize) -> std::io::Result<RedisStoreBuilder> {
    Err(needs_feature("SESSION_CACHE", "local-cache"))
}

/// Why a setting cannot be used: its code was left out of this build.
#[cfg(not(all(feature = "sentinel", feature = "cluster", feature = "local-cache")))]
fn needs_feature(setting: &str, feature: &str) -> std::io::Error {
    std::io::Error::other(format!(
        "{setting} needs the `{feature}` feature: cargo run --example quickstart --features {feature}"
    ))
}
