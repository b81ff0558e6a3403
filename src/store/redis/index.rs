//! The per-user index of sessions, and the writes and reads that span it and the records.

use std::time::SystemTime;

use futures_util::future::join_all;

use super::codec::{encode, ttl_millis};
use super::RedisStore;
use crate::{SessionKey, SessionRecord, StoreError};

impl RedisStore {
    /// Indexes `key` under its user and stores the record. The index TTL only ever grows, to the
    /// record's absolute end at least.
    ///
    /// On one server both happen in one MULTI/EXEC, so a listing elsewhere never sees one
    /// without the other. On a cluster they live in different slots: the record is written
    /// first, then indexed. A listing in between finds no entry to prune, and the record is
    /// unreachable until this call returns and the client receives its token.
    pub(super) async fn index_and_create(
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
    pub(super) async fn lookup_all(
        &self,
        keys: &[&SessionKey],
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
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

    /// Each key's remaining TTL in milliseconds as Redis reports it: -1 for a key without one,
    /// -2 for a key that is gone. One pipeline on a server, a `PTTL` per key on a cluster.
    pub(super) async fn remaining_ttls(
        &self,
        keys: &[&SessionKey],
    ) -> Result<Vec<i64>, StoreError> {
        let mut conn = self.connection.clone();
        if conn.is_single_node() {
            let mut ttls = redis::pipe();
            for key in keys {
                ttls.cmd("PTTL").arg(self.session_key(key));
            }
            return self.run(ttls.query_async(&mut conn)).await;
        }
        let lookups = keys.iter().map(|key| {
            let mut conn = self.connection.clone();
            let pttl = redis::cmd("PTTL").arg(self.session_key(key)).to_owned();
            async move { self.run(pttl.query_async(&mut conn)).await }
        });
        join_all(lookups).await.into_iter().collect()
    }

    pub(super) async fn unindex(&self, user_id: &str, keys: &[&str]) -> Result<(), StoreError> {
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
}
