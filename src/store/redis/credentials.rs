//! Each user's credentials version: one string key per user, `{prefix}:c:{user id}`.

use std::time::Duration;

use super::RedisStore;
use crate::StoreError;

impl RedisStore {
    /// The Redis key of a user's credentials version.
    pub fn credentials_key(&self, user_id: &str) -> String {
        format!("{}:c:{user_id}", self.prefix)
    }

    pub(super) async fn read_credentials_version(
        &self,
        user_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let mut conn = self.connection.clone();
        let mut get = redis::cmd("GET");
        get.arg(self.credentials_key(user_id));
        self.run(get.query_async(&mut conn)).await
    }

    /// Writes the version, and where the store waits for replicas on session-ending deletes,
    /// waits for them here too: a failover that lost the version would let a login that
    /// verified the old password through.
    pub(super) async fn write_credentials_version(
        &self,
        user_id: &str,
        version: &str,
        keep_for: Duration,
    ) -> Result<(), StoreError> {
        let keep_ms = u64::try_from(keep_for.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut set = redis::cmd("SET");
        set.arg(self.credentials_key(user_id))
            .arg(version)
            .arg("PX")
            .arg(keep_ms);
        let mut conn = self.connection.clone();
        match self.replica_wait {
            Some(wait) => self.write_on_replicas::<()>(&mut conn, set, wait).await,
            None => self.run(set.query_async::<()>(&mut conn)).await,
        }
    }
}
