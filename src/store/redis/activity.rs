//! Each user's activity log: one list per user, `{prefix}:a:{user id}`, newest first, each
//! element one entry in a compact JSON form (one-letter keys, the user agent compacted as
//! session records keep it). A write is `LPUSH`, `LTRIM` and `PEXPIRE` in one pipeline, one
//! round trip, all on the one key, so it works alike on one server and on a Cluster.
//!
//! A list, not a stream: a stream preallocates its first node (about 4 KB), which made a log
//! of two logins cost ten times the user's sessions; a short list is a single listpack that
//! costs its entries' bytes and little more.

use std::borrow::Cow;
use std::collections::HashSet;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::{user_agent, RedisStore};
use crate::error::StoreError;
use crate::record::{ActivityEntry, ActivityKind, ActivityLimits, LoginMethod};

/// How many entries a search for a page's starting point reads per round trip.
const SEARCH_CHUNK: usize = 100;

impl RedisStore {
    /// The Redis key of a user's activity log.
    pub fn activity_key(&self, user_id: &str) -> String {
        format!("{}:a:{user_id}", self.prefix)
    }
}

/// An entry as the list keeps it. Unknown keys are ignored, so a newer version may add some.
#[derive(Serialize, Deserialize)]
struct Stored<'a> {
    #[serde(rename = "i", borrow)]
    id: Cow<'a, str>,
    #[serde(rename = "k")]
    kind: ActivityKind,
    /// Unix seconds.
    #[serde(rename = "t")]
    at: u64,
    #[serde(rename = "a", default, borrow, skip_serializing_if = "Option::is_none")]
    ip: Option<Cow<'a, str>>,
    /// Compacted with [`user_agent::compact`].
    #[serde(rename = "u", default, borrow, skip_serializing_if = "Option::is_none")]
    user_agent: Option<Cow<'a, str>>,
    #[serde(rename = "s", default, borrow, skip_serializing_if = "Option::is_none")]
    session_id: Option<Cow<'a, str>>,
    #[serde(
        rename = "m",
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::record::lenient_method"
    )]
    method: Option<LoginMethod>,
}

impl<'a> Stored<'a> {
    fn of(entry: &'a ActivityEntry, id: &'a str) -> Self {
        Stored {
            id: Cow::Borrowed(id),
            kind: entry.kind,
            at: entry
                .at
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
            ip: entry.ip.as_deref().map(Cow::Borrowed),
            user_agent: entry.user_agent.as_deref().map(user_agent::compact),
            session_id: entry.session_id.as_deref().map(Cow::Borrowed),
            method: entry.method,
        }
    }

    fn into_entry(self) -> ActivityEntry {
        let at = UNIX_EPOCH
            .checked_add(Duration::from_secs(self.at))
            .unwrap_or(UNIX_EPOCH);
        let mut entry = ActivityEntry::new(self.kind, at)
            .with_client(
                self.ip.map(Cow::into_owned),
                self.user_agent
                    .map(|ua| user_agent::expand(&ua).into_owned()),
            )
            .with_session(self.session_id.map(Cow::into_owned))
            .with_method(self.method);
        entry.id = self.id.into_owned();
        entry
    }
}

/// A new entry id: 64 random bits, URL-safe. Ids only need to tell a user's entries apart
/// (pages start after one), and random ones need no counter on the server.
fn new_entry_id() -> Result<String, StoreError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|err| StoreError::unavailable(err.to_string()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// `LPUSH key <entry>`, `LTRIM key 0 N-1`, `PEXPIRE key <keep_for>`, pipelined.
pub(super) async fn append_activity(
    store: &RedisStore,
    user_id: &str,
    entry: &ActivityEntry,
    limits: ActivityLimits,
) -> Result<(), StoreError> {
    let id = new_entry_id()?;
    let json = serde_json::to_string(&Stored::of(entry, &id)).map_err(StoreError::corrupt)?;
    let key = store.activity_key(user_id);
    let keep_ms = u64::try_from(limits.keep_for.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    let last = isize::try_from(limits.max_entries.max(1) - 1).unwrap_or(isize::MAX);
    let mut write = redis::pipe();
    write
        .cmd("LPUSH")
        .arg(&key)
        .arg(json)
        .ignore()
        .cmd("LTRIM")
        .arg(&key)
        .arg(0)
        .arg(last)
        .ignore()
        .cmd("PEXPIRE")
        .arg(&key)
        .arg(keep_ms)
        .ignore();
    let mut conn = store.connection.clone();
    store.run(write.query_async::<()>(&mut conn)).await
}

/// The newest `limit` entries (`LRANGE key 0 limit-1`), or the `limit` after the entry
/// `before`: found by reading the list in chunks from the newest end, since a list has no
/// index by id. The log is capped, so the search is bounded; entries written meanwhile push
/// the others towards the end, so a chunk may repeat an entry already read, never skip one.
pub(super) async fn activity(
    store: &RedisStore,
    user_id: &str,
    before: Option<&str>,
    limit: usize,
) -> Result<Vec<ActivityEntry>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let key = store.activity_key(user_id);
    let Some(before) = before else {
        let raw = range(store, &key, 0, limit).await?;
        return Ok(raw.iter().filter_map(|raw| decode_entry(raw)).collect());
    };
    let mut page = Vec::new();
    let mut seen = HashSet::new();
    let mut found = false;
    let mut start = 0;
    loop {
        let chunk = range(store, &key, start, SEARCH_CHUNK).await?;
        for entry in chunk.iter().filter_map(|raw| decode_entry(raw)) {
            if !seen.insert(entry.id.clone()) {
                continue;
            }
            if found {
                page.push(entry);
                if page.len() == limit {
                    return Ok(page);
                }
            } else if entry.id == before {
                found = true;
            }
        }
        if chunk.len() < SEARCH_CHUNK {
            // The end of the log: a `before` not in it was trimmed away (older than all that
            // is kept) or never was, and nothing is older than it either way.
            return Ok(page);
        }
        start += SEARCH_CHUNK;
    }
}

/// `LRANGE key start start+count-1`.
async fn range(
    store: &RedisStore,
    key: &str,
    start: usize,
    count: usize,
) -> Result<Vec<String>, StoreError> {
    let mut cmd = redis::cmd("LRANGE");
    cmd.arg(key).arg(start).arg(start + count - 1);
    let mut conn = store.connection.clone();
    store.run(cmd.query_async(&mut conn)).await
}

/// The entry `raw` holds; `None`, with a warning, for one this crate did not write (an
/// unreadable entry hides nothing else of the log).
pub(super) fn decode_entry(raw: &str) -> Option<ActivityEntry> {
    match serde_json::from_str::<Stored<'_>>(raw) {
        Ok(stored) => Some(stored.into_entry()),
        Err(err) => {
            tracing::warn!(error = %err, "unreadable activity log entry skipped");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_reads_back_as_written() {
        let entry =
            ActivityEntry::new(ActivityKind::NewDevice, UNIX_EPOCH + Duration::from_secs(9))
                .with_client(
                    Some("203.0.113.7".into()),
                    Some("Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0 Safari/537.36".into()),
                )
                .with_session(Some("s1".into()))
                .with_method(Some(LoginMethod::Passkey));
        let raw = serde_json::to_string(&Stored::of(&entry, "abc")).unwrap();
        let mut back = decode_entry(&raw).unwrap();
        assert_eq!(back.id, "abc");
        back.id = String::new();
        assert_eq!(back, entry);
    }

    #[test]
    fn entries_of_others_are_skipped() {
        assert!(decode_entry("{}").is_none());
        assert!(decode_entry("{").is_none());
        assert!(decode_entry("1700000000000-0").is_none());
        assert!(decode_entry(r#"{"i":"x","k":"login","t":-1}"#).is_none());
    }

    #[test]
    fn a_kind_or_method_of_a_newer_version_still_reads() {
        let entry = decode_entry(r#"{"i":"x","k":"future","t":1,"m":"future","z":1}"#).unwrap();
        assert_eq!(entry.kind, ActivityKind::Unknown);
        assert_eq!(entry.method, None);
    }

    #[test]
    fn ids_differ() {
        let ids: HashSet<String> = (0..1000).map(|_| new_entry_id().unwrap()).collect();
        assert_eq!(ids.len(), 1000);
    }
}
