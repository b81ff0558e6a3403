//! Single-use claims (second-factor codes): one string key per claim, `{prefix}:o:{name}`,
//! written with `SET … NX PX`. One single-key command, so of racing claims exactly one writes
//! the key, on one server and on a Cluster alike.

use std::time::Duration;

use super::RedisStore;
use crate::error::StoreError;

impl RedisStore {
    /// The Redis key of a single-use claim.
    fn claim_key(&self, name: &str) -> String {
        format!("{}:o:{name}", self.prefix)
    }
}

/// `SET {key} 1 NX PX {ttl}`. Where the store waits for replicas on session-ending deletes it
/// waits here too, so that a failover cannot forget a used code.
pub(super) async fn claim_once(
    store: &RedisStore,
    name: &str,
    ttl: Duration,
) -> Result<bool, StoreError> {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
    let mut set = redis::cmd("SET");
    set.arg(store.claim_key(name))
        .arg("1")
        .arg("NX")
        .arg("PX")
        .arg(ttl_ms);
    let mut conn = store.connection.clone();
    let written: Option<String> = match store.replica_wait {
        Some(wait) => store.write_on_replicas(&mut conn, set, wait).await?,
        None => store.run(set.query_async(&mut conn)).await?,
    };
    Ok(written.is_some())
}
