//! Each user's credentials version: one string key per user, `{prefix}:c:{user id}`.

use std::time::Duration;

use super::RedisStore;
use crate::error::StoreError;

impl RedisStore {
    /// The Redis key of a user's credentials version.
    pub fn credentials_key(&self, user_id: &str) -> String {
        format!("{}:c:{user_id}", self.prefix)
    }
}

pub(super) async fn credentials_version(
    store: &RedisStore,
    user_id: &str,
) -> Result<Option<String>, StoreError> {
    let mut conn = store.connection.clone();
    let mut get = redis::cmd("GET");
    get.arg(store.credentials_key(user_id));
    store.run(get.query_async(&mut conn)).await
}

/// Writes the version, and where the store waits for replicas on session-ending deletes,
/// waits for them here too: a failover that lost the version would let a login that
/// verified the old password through.
pub(super) async fn set_credentials_version(
    store: &RedisStore,
    user_id: &str,
    version: &str,
    keep_for: Duration,
) -> Result<(), StoreError> {
    let keep_ms = u64::try_from(keep_for.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    let mut set = redis::cmd("SET");
    set.arg(store.credentials_key(user_id))
        .arg(version)
        .arg("PX")
        .arg(keep_ms);
    let mut conn = store.connection.clone();
    match store.replica_wait {
        Some(wait) => store.write_on_replicas::<()>(&mut conn, set, wait).await,
        None => store.run(set.query_async::<()>(&mut conn)).await,
    }
}
