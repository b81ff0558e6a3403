//! Session data and live user updates in the session hash.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use redis::Value;
use serde_json::value::RawValue;

use super::codec::{decode_data, encode_user, optional_text, Oddity, DATA_PREFIX};
use super::{scripts, RedisStore, DATA_READ_WITH_RECORD};
use crate::error::StoreError;
use crate::record::{DataChange, SessionData, SessionKey};
use crate::store::DataWrite;

/// How many rotations an update follows: each hop is a rotation that started while the update
/// ran, so more than a couple means something rotates the session in a loop.
const MAX_HOPS: usize = 8;

/// The sessions (by Redis key) that this process has seen holding more than
/// [`DATA_READ_WITH_RECORD`] bytes of data, so that their reads leave the data behind.
///
/// Only a hint: a session missing from it is read whole once and then remembered; one wrongly
/// in it costs its data read one more round trip. So it is bounded by simply starting over
/// when full, and a read that sees the data small again takes the session out.
#[derive(Debug, Default)]
pub(super) struct LargeData {
    sessions: Mutex<HashSet<String>>,
    /// Whether `sessions` has any: most apps never store that much, and their reads then
    /// take no lock.
    any: AtomicBool,
}

impl LargeData {
    /// At most this many sessions are remembered (about 300 KiB).
    const CAPACITY: usize = 4096;

    pub(super) fn contains(&self, redis_key: &str) -> bool {
        self.any.load(Ordering::Relaxed) && self.sessions().contains(redis_key)
    }

    /// Remembers what a read found: the session under `redis_key` holds `size` bytes of data.
    pub(super) fn note(&self, redis_key: &str, size: usize) {
        let large = size > DATA_READ_WITH_RECORD;
        if !large && !self.any.load(Ordering::Relaxed) {
            return;
        }
        let mut sessions = self.sessions();
        if !large {
            sessions.remove(redis_key);
        } else {
            if sessions.len() >= Self::CAPACITY {
                sessions.clear();
            }
            sessions.insert(redis_key.to_owned());
        }
        self.any.store(!sessions.is_empty(), Ordering::Relaxed);
    }

    fn sessions(&self) -> MutexGuard<'_, HashSet<String>> {
        // The set is never left half-changed, so a panic elsewhere does not spoil it.
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The data names this process has met, so that a lookup that may read data asks for their
/// fields by name (`HMGET`, the record and the data in one reply of values) rather than for the
/// whole hash (`HGETALL`, every field's name too).
///
/// Only a hint, like [`LargeData`]: the reply's values are checked against the data's size
/// (see [`decode_named`](super::codec::decode_named)), and a session holding a name not asked for
/// is read whole, its names learnt. Names are met in this process's writes and in those whole
/// reads; an app whose names have no bound (a name per form or per item) would make every
/// lookup ask for ever more fields, so past [`CAPACITY`](Self::CAPACITY) names, or one
/// longer than [`MAX_NAME`](Self::MAX_NAME) bytes, the process reads whole hashes for good,
/// as it did before it knew any names. Either way a lookup costs one round trip (two for a
/// record longer than two pieces), and one more when it meets a name: about once per name and
/// process (lookups racing to meet it, or a process restarting, pay again).
#[derive(Debug)]
pub(super) struct DataNames(RwLock<Met>);

/// What [`DataNames`] has met.
#[derive(Debug)]
enum Met {
    /// These names, as the fields that hold them (`d:{name}`).
    Fields(Arc<[String]>),
    /// More names than a lookup should ask for.
    TooMany,
}

impl Default for DataNames {
    fn default() -> Self {
        Self(RwLock::new(Met::Fields(Arc::from([]))))
    }
}

impl DataNames {
    fn holds(fields: &[String], name: &str) -> bool {
        fields
            .iter()
            .any(|field| field.strip_prefix(DATA_PREFIX) == Some(name))
    }

    /// At most this many names are asked for: each one a session does not hold still costs
    /// Redis a scan of the hash and the client a nil to parse.
    const CAPACITY: usize = 8;
    /// The longest name that is asked for, in bytes.
    const MAX_NAME: usize = 64;

    /// The fields a lookup asks for, or `None` when it reads the whole hash.
    pub(super) fn fields(&self) -> Option<Arc<[String]>> {
        // Read on every lookup that may read data: a read lock, which lookups share.
        let met = self.0.read().unwrap_or_else(PoisonError::into_inner);
        match &*met {
            Met::Fields(fields) => Some(Arc::clone(fields)),
            Met::TooMany => None,
        }
    }

    /// Notes that sessions hold data under `names`.
    pub(super) fn meet<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        // Called on every data write and whole read: the common case, nothing new, takes only
        // the read lock.
        let mut new: Vec<&str> = {
            let met = self.0.read().unwrap_or_else(PoisonError::into_inner);
            let Met::Fields(fields) = &*met else {
                return;
            };
            names
                .into_iter()
                .filter(|name| !Self::holds(fields, name))
                .collect()
        };
        if new.is_empty() {
            return;
        }
        // Every change replaces the whole value, so a panic elsewhere cannot leave it half-made.
        let mut met = self.0.write().unwrap_or_else(PoisonError::into_inner);
        let Met::Fields(fields) = &*met else {
            return;
        };
        // Another thread may have met some of them meanwhile.
        new.retain(|name| !Self::holds(fields, name));
        if new.is_empty() {
            return;
        }
        new.sort_unstable();
        new.dedup();
        let too_long = new.iter().any(|name| name.len() > Self::MAX_NAME);
        *met = if too_long || fields.len() + new.len() > Self::CAPACITY {
            Met::TooMany
        } else {
            let new = new.iter().map(|name| format!("{DATA_PREFIX}{name}"));
            Met::Fields(fields.iter().cloned().chain(new).collect())
        };
    }
}

pub(super) async fn load_data(
    store: &RedisStore,
    key: &SessionKey,
) -> Result<Option<SessionData>, StoreError> {
    let mut conn = store.connection.clone();
    let mut hgetall = redis::cmd("HGETALL");
    hgetall.arg(store.session_key(key));
    let fields: Vec<(Vec<u8>, Vec<u8>)> = store.run(hgetall.query_async(&mut conn)).await?;
    decode_data(fields)
}

pub(super) async fn write_data(
    store: &RedisStore,
    key: &SessionKey,
    changes: &[DataChange],
    max_size: usize,
) -> Result<DataWrite, StoreError> {
    let mut write = scripts::WRITE_DATA.prepare_invoke();
    let redis_key = store.session_key(key);
    write
        .key(&redis_key)
        .arg(max_size)
        .arg(crate::record::ENTRY_OVERHEAD);
    for change in changes {
        match change {
            DataChange::Insert { name, json } => write.arg("i").arg(name).arg(json),
            DataChange::Remove { name } => write.arg("r").arg(name),
            DataChange::Clear => write.arg("c"),
        };
    }
    let mut conn = store.connection.clone();
    let reply: Vec<Value> = store.run(write.invoke_async(&mut conn)).await?;
    let written = decode_write(reply, changes.len())?;
    if matches!(written, DataWrite::Written(_)) {
        store
            .data_names
            .meet(changes.iter().filter_map(|change| match change {
                DataChange::Insert { name, .. } => Some(name.as_str()),
                DataChange::Remove { .. } | DataChange::Clear => None,
            }));
    }
    if matches!(written, DataWrite::Written(_)) && store.settle_deletes {
        // Caches hold small data too: every caching instance, this one included, must have
        // dropped the old values before the writer's client can send its next request. As
        // after a delete, a cache of this process also learns which server the write went to.
        store.settle_delete(&mut conn, &redis_key).await?;
    }
    Ok(written)
}

/// The reply of [`WRITE_DATA`](scripts::WRITE_DATA) for `changes` changes.
fn decode_write(reply: Vec<Value>, changes: usize) -> Result<DataWrite, StoreError> {
    let mut reply = reply.into_iter();
    let status = reply.next().and_then(integer);
    let size = reply.next().and_then(integer);
    match (status, size) {
        (Some(-1), _) => Ok(DataWrite::Gone),
        (Some(-2), Some(size)) => Ok(DataWrite::TooLarge {
            size: usize::try_from(size).unwrap_or(usize::MAX),
        }),
        (Some(1), Some(_)) => {
            let previous = reply.map(previous_value).collect::<Result<Vec<_>, _>>()?;
            if previous.len() != changes {
                return Err(StoreError::corrupt("short data write reply"));
            }
            Ok(DataWrite::Written(previous))
        }
        _ => Err(StoreError::corrupt("unexpected data write reply")),
    }
}

/// A value a data write replaced, as the script returns it. One that is not UTF-8 (written by
/// hand or by another program) counts as none: the write that replaced it has landed, and
/// replacing it is how such a value is mended.
fn previous_value(value: Value) -> Result<Option<String>, StoreError> {
    match value {
        Value::BulkString(bytes) => Ok(String::from_utf8(bytes).ok().or_else(|| {
            Oddity::DataNotUtf8.warn_once();
            None
        })),
        other => optional_text(other),
    }
}

/// Writes the new profile and roles, then follows the session through any rotation that
/// copied it meanwhile: the rotation marks the old key with the new one in the same step as
/// the copy, so an update that reached the old key after the copy finds where it went.
pub(super) async fn update_user(
    store: &RedisStore,
    key: &SessionKey,
    user: &RawValue,
    roles: &[String],
) -> Result<bool, StoreError> {
    let update = encode_user(user, roles)?;
    let mut conn = store.connection.clone();
    let mut target = key.clone();
    let mut updated = None;
    for hop in 0..MAX_HOPS {
        let mut invocation = scripts::UPDATE_USER.prepare_invoke();
        invocation.key(store.session_key(&target)).arg(&update);
        // A demotion a failover could undo would hand the old roles back: it waits for
        // replicas where logouts do.
        let reply: Value = store.write_script(&mut conn, &invocation).await?;
        match reply {
            // The first key gone: no session. A later one gone: the rotation it was for
            // lost to a logout, and nothing is left to update.
            Value::Int(0) => updated = Some(hop > 0),
            Value::Int(_) => updated = Some(true),
            moved => {
                target = optional_text(moved)?
                    .and_then(|text| SessionKey::parse(&text))
                    .ok_or_else(|| StoreError::corrupt("unreadable rotation mark"))?;
                continue;
            }
        }
        break;
    }
    let updated = updated.ok_or_else(|| {
        StoreError::unavailable("the session kept moving to new tokens during an update")
    })?;
    if updated && store.settle_deletes {
        // Caches elsewhere must drop the old profile before the caller is told it is gone.
        store
            .settle_delete(&mut conn, &store.session_key(&target))
            .await?;
    }
    Ok(updated)
}

fn integer(value: Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(n),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::DataNames;

    fn asked(names: &DataNames) -> Option<Vec<String>> {
        names.fields().map(|fields| fields.to_vec())
    }

    #[test]
    fn names_are_asked_for_until_there_are_too_many() {
        let names = DataNames::default();
        assert_eq!(asked(&names), Some(vec![]));
        names.meet(["cart", "flash", "cart"]);
        names.meet(["flash"]);
        assert_eq!(asked(&names), Some(vec!["d:cart".into(), "d:flash".into()]));
        let more: Vec<String> = (2..DataNames::CAPACITY).map(|i| format!("n{i}")).collect();
        names.meet(more.iter().map(String::as_str));
        assert_eq!(
            asked(&names).map(|fields| fields.len()),
            Some(DataNames::CAPACITY)
        );
        names.meet(["one-too-many"]);
        assert_eq!(asked(&names), None);
        // For good: nothing brings the names back.
        names.meet(["cart"]);
        assert_eq!(asked(&names), None);
    }

    #[test]
    fn a_name_too_long_to_ask_for_reads_whole_hashes() {
        let names = DataNames::default();
        names.meet(["x".repeat(DataNames::MAX_NAME).as_str()]);
        assert_eq!(asked(&names).map(|fields| fields.len()), Some(1));
        names.meet(["y".repeat(DataNames::MAX_NAME + 1).as_str()]);
        assert_eq!(asked(&names), None);
    }
}
