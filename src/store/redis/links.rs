//! One-time links: one string key per link, `{prefix}:l:{link key}`, holding the link's record
//! as JSON and expiring with it. Each operation is one single-key command, so it is atomic on
//! one server and on a Cluster alike: `SET … NX PX` to issue, `GET` to look, `GETDEL` to use.

use std::time::SystemTime;

use super::RedisStore;
use crate::error::StoreError;
use crate::record::{LinkKey, LinkRecord};

impl RedisStore {
    /// The Redis key of a one-time link.
    fn link_key(&self, key: &LinkKey) -> String {
        format!("{}:l:{}", self.prefix, key.as_str())
    }
}

pub(super) async fn create_link(
    store: &RedisStore,
    key: &LinkKey,
    record: &LinkRecord,
) -> Result<bool, StoreError> {
    let json = serde_json::to_string(record).map_err(StoreError::corrupt)?;
    let left = record
        .expires_at()
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    let left_ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX).max(1);
    let mut set = redis::cmd("SET");
    set.arg(store.link_key(key))
        .arg(json)
        .arg("NX")
        .arg("PX")
        .arg(left_ms);
    let mut conn = store.connection.clone();
    let written: Option<String> = store.run(set.query_async(&mut conn)).await?;
    Ok(written.is_some())
}

pub(super) async fn load_link(
    store: &RedisStore,
    key: &LinkKey,
) -> Result<Option<LinkRecord>, StoreError> {
    let mut get = redis::cmd("GET");
    get.arg(store.link_key(key));
    let mut conn = store.connection.clone();
    let json: Option<String> = store.run(get.query_async(&mut conn)).await?;
    json.as_deref().map(decode).transpose()
}

/// `GETDEL`: one command, so of two racing uses exactly one gets the link. Where the store
/// waits for replicas on session-ending deletes it waits here too, so that a failover cannot
/// bring a used link back.
pub(super) async fn take_link(
    store: &RedisStore,
    key: &LinkKey,
) -> Result<Option<LinkRecord>, StoreError> {
    let mut take = redis::cmd("GETDEL");
    take.arg(store.link_key(key));
    let mut conn = store.connection.clone();
    let json: Option<String> = match store.replica_wait {
        Some(wait) => store.write_on_replicas(&mut conn, take, wait).await?,
        None => store.run(take.query_async(&mut conn)).await?,
    };
    json.as_deref().map(decode).transpose()
}

fn decode(json: &str) -> Result<LinkRecord, StoreError> {
    serde_json::from_str(json).map_err(StoreError::corrupt)
}
