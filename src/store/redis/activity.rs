//! Each user's activity log: one stream per user, `{prefix}:a:{user id}`, each entry one field
//! `e` holding the entry as JSON. A write is `XADD … MAXLEN N` and `PEXPIRE` in one pipeline,
//! one round trip, both on the one key, so it works alike on one server and on a Cluster.

use super::RedisStore;
use crate::error::StoreError;
use crate::record::{ActivityEntry, ActivityLimits};

/// The stream field that holds an entry.
const FIELD: &str = "e";

impl RedisStore {
    /// The Redis key of a user's activity log.
    pub fn activity_key(&self, user_id: &str) -> String {
        format!("{}:a:{user_id}", self.prefix)
    }
}

/// `XADD key MAXLEN N * e <json>` then `PEXPIRE key <keep_for>`, pipelined. The cap is exact,
/// not `~`: Redis trims approximately only by whole nodes of 100 entries, so a cap below that
/// would not hold at all; an exact trim of a stream this small costs next to nothing.
pub(super) async fn append_activity(
    store: &RedisStore,
    user_id: &str,
    entry: &ActivityEntry,
    limits: ActivityLimits,
) -> Result<(), StoreError> {
    let json = serde_json::to_string(entry).map_err(StoreError::corrupt)?;
    let key = store.activity_key(user_id);
    let keep_ms = u64::try_from(limits.keep_for.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    let mut write = redis::pipe();
    write
        .cmd("XADD")
        .arg(&key)
        .arg("MAXLEN")
        .arg(limits.max_entries.max(1))
        .arg("*")
        .arg(FIELD)
        .arg(json)
        .ignore()
        .cmd("PEXPIRE")
        .arg(&key)
        .arg(keep_ms)
        .ignore();
    let mut conn = store.connection.clone();
    store.run(write.query_async::<()>(&mut conn)).await
}

/// `XREVRANGE key + - COUNT n`, or from `(before` for the next page.
pub(super) async fn activity(
    store: &RedisStore,
    user_id: &str,
    before: Option<&str>,
    limit: usize,
) -> Result<Vec<ActivityEntry>, StoreError> {
    let start = match before {
        None => "+".to_owned(),
        // Anything but a stream id is no entry of this log: nothing comes after it.
        Some(id) if is_stream_id(id) => format!("({id}"),
        Some(_) => return Ok(Vec::new()),
    };
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut range = redis::cmd("XREVRANGE");
    range
        .arg(store.activity_key(user_id))
        .arg(start)
        .arg("-")
        .arg("COUNT")
        .arg(limit);
    let mut conn = store.connection.clone();
    let entries: Vec<(String, Vec<String>)> = store.run(range.query_async(&mut conn)).await?;
    Ok(entries
        .into_iter()
        .filter_map(|(id, fields)| decode_entry(id, &fields))
        .collect())
}

/// The entry in `fields`, with its stream id; `None`, with a warning, for one this crate did
/// not write (an unreadable entry hides nothing else of the log).
pub(super) fn decode_entry(id: String, fields: &[String]) -> Option<ActivityEntry> {
    let json = fields
        .chunks_exact(2)
        .find(|pair| pair[0] == FIELD)
        .map(|pair| &pair[1]);
    match json.map(|json| serde_json::from_str::<ActivityEntry>(json)) {
        Some(Ok(mut entry)) => {
            entry.id = id;
            Some(entry)
        }
        Some(Err(err)) => {
            tracing::warn!(entry = %id, error = %err, "unreadable activity log entry skipped");
            None
        }
        None => {
            tracing::warn!(entry = %id, "activity log entry without its field skipped");
            None
        }
    }
}

/// Whether `id` looks like a stream entry id, `<ms>-<seq>`.
fn is_stream_id(id: &str) -> bool {
    let Some((ms, seq)) = id.split_once('-') else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    digits(ms) && digits(seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_stream_ids_page() {
        assert!(is_stream_id("1700000000000-0"));
        assert!(!is_stream_id("+"));
        assert!(!is_stream_id("1-"));
        assert!(!is_stream_id("(1-0"));
        assert!(!is_stream_id("00000000000000000001"));
    }

    #[test]
    fn entries_of_others_are_skipped() {
        assert!(decode_entry("1-0".into(), &["x".into(), "y".into()]).is_none());
        assert!(decode_entry("1-0".into(), &["e".into(), "{".into()]).is_none());
        assert!(decode_entry("1-0".into(), &["e".into()]).is_none());
    }
}
