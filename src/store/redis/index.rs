//! The per-user index of sessions, and the writes and reads that span it and the records.

use std::time::SystemTime;

use futures_util::future::join_all;

use super::codec::{
    encode_deadline, encode_record, record_pieces, ttl_millis, DATA_PREFIX, MOVING,
};
use super::{scripts, RedisStore};
use crate::error::StoreError;
use crate::record::{SessionData, SessionKey, SessionRecord};
use crate::store::Carry;

/// How long an old key marked as moving lives at most, should the rest of its rotation never
/// come (a cluster only; it is dead to lookups and writes from the moment it is marked, and
/// listings follow the mark).
const MARKED_GRACE_MS: u64 = 60_000;

/// What [`RedisStore::copy_to`] did.
pub(super) enum Moved {
    /// The old session was gone or already moving: nothing was written.
    NotThere,
    /// The new session exists and is indexed, and the old one is gone (one server).
    Complete,
    /// The new session exists and is indexed; the old one is marked and must still be deleted
    /// and unindexed (a cluster).
    Marked,
}

/// Stores the session, with `data`, and indexes it under its user (an anonymous one under
/// none). The index TTL only ever grows, to the record's absolute end at least.
///
/// On one server both happen in one script, so a listing elsewhere never sees one without
/// the other. On a cluster they live in different slots: the record is written first, then
/// indexed. A listing in between finds no entry to prune, and the record is unreachable
/// until this call returns and the client receives its token.
pub(super) async fn create(
    store: &RedisStore,
    key: &SessionKey,
    record: &SessionRecord,
    expires_at: SystemTime,
    data: &SessionData,
) -> Result<bool, StoreError> {
    let index = (!record.is_anonymous()).then(|| store.user_index_key(record.user_id()));
    let index_ttl = ttl_millis(record.expires_at());
    let mut conn = store.connection.clone();
    let single_node = conn.is_single_node();
    let mut create = scripts::CREATE.prepare_invoke();
    create.key(store.session_key(key));
    if let (true, Some(index)) = (single_node, &index) {
        create.key(index);
    }
    let record = encode_record(record)?;
    let mut pieces = record_pieces(&record);
    let (_, first) = pieces.next().unwrap_or_default();
    create
        .arg(first)
        .arg(encode_deadline(expires_at))
        .arg(ttl_millis(expires_at))
        .arg(key.as_str())
        .arg(index_ttl)
        .arg(data.size());
    for (field, piece) in pieces {
        create.arg(field).arg(piece);
    }
    for (name, json) in data.iter() {
        create.arg(format!("{DATA_PREFIX}{name}")).arg(json);
    }
    let created: i64 = store.run(create.invoke_async(&mut conn)).await?;
    if created != 1 {
        return Ok(false);
    }
    store.data_names.meet(data.iter().map(|(name, _)| name));
    if let (false, Some(index)) = (single_node, &index) {
        store
            .run(index_add(index, key, index_ttl).query_async::<()>(&mut conn))
            .await?;
    }
    Ok(true)
}

impl RedisStore {
    /// Moves the session under `old` to `new` (see [`scripts::MOVE`]). On one server the move
    /// is one script: `new` is created and indexed, `old` deleted and unindexed, all at once. On
    /// a cluster the script copies and marks `old` as moving (dead to lookups and writes from
    /// then on, listings following the mark), then `new` is indexed; the caller deletes and
    /// unindexes `old`. Returns whether `old` was there to move, and on one server, whether the
    /// move is complete.
    pub(super) async fn copy_to(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        record: &SessionRecord,
        expires_at: SystemTime,
        carry: Carry,
    ) -> Result<Moved, StoreError> {
        let index = self.user_index_key(record.user_id());
        let index_ttl = ttl_millis(record.expires_at());
        let mut conn = self.connection.clone();
        let single_node = conn.is_single_node();
        let mut copy = scripts::MOVE.prepare_invoke();
        copy.key(self.session_key(old)).key(self.session_key(new));
        if single_node {
            copy.key(&index);
        }
        let record = encode_record(record)?;
        let mut pieces = record_pieces(&record);
        let (_, first) = pieces.next().unwrap_or_default();
        copy.arg(first)
            .arg(encode_deadline(expires_at))
            .arg(ttl_millis(expires_at))
            .arg(u8::from(carry == Carry::DataAndUser))
            .arg(new.as_str())
            .arg(index_ttl)
            .arg(old.as_str())
            .arg(MARKED_GRACE_MS);
        for (field, piece) in pieces {
            copy.arg(field).arg(piece);
        }
        // On one server the script ends the old session: where deletes wait for replicas, so
        // does this one, in the same round trip. (On a cluster the delete that follows waits.)
        let copied: i64 = if single_node {
            self.write_script(&mut conn, &copy).await?
        } else {
            self.run(copy.invoke_async(&mut conn)).await?
        };
        match copied {
            1 => {}
            -1 => return Err(StoreError::unavailable("a fresh session key was taken")),
            _ => return Ok(Moved::NotThere),
        }
        if single_node {
            return Ok(Moved::Complete);
        }
        self.run(index_add(&index, new, index_ttl).query_async::<()>(&mut conn))
            .await?;
        Ok(Moved::Marked)
    }

    /// The record, live update and deadline under each key, as `HMGET` returns them: one
    /// pipeline on a server, a command per key (each in its own slot) on a cluster, where a key
    /// marked as moving reads as the session it moves to, [`Listed::moving_to`] naming that
    /// key (see [`listed_on_cluster`]).
    ///
    /// [`listed_on_cluster`]: Self::listed_on_cluster
    pub(super) async fn lookup_all(&self, keys: &[&SessionKey]) -> Result<Vec<Listed>, StoreError> {
        let mut conn = self.connection.clone();
        if conn.is_single_node() {
            let mut lookups = redis::pipe();
            for key in keys {
                lookups.add_command(self.record_fields(key));
            }
            let replies: Vec<Vec<Option<Vec<u8>>>> =
                self.run(lookups.query_async(&mut conn)).await?;
            return Ok(replies.into_iter().map(Listed::under_its_key).collect());
        }
        join_all(keys.iter().map(|key| self.listed_on_cluster(key)))
            .await
            .into_iter()
            .collect()
    }

    /// The record fields of a listed session on a cluster, as [`lookup_all`](Self::lookup_all)
    /// gives them.
    ///
    /// A rotation there marks the old key as moving and takes its record away before it
    /// indexes the new key, so that lookups find no session under the old key without asking
    /// for the mark. A listing must still find the session in between: a revocation that
    /// deletes the old key makes the rotation give up and delete the new one (see
    /// `SessionStore::rotate`), and a live update that reaches the old key follows the mark.
    /// So a marked key without a record reads here as the copy under the key it names (which
    /// [`Listed::moving_to`] gives); if that is gone too, or the mark cannot be read, as no
    /// session.
    async fn listed_on_cluster(&self, key: &SessionKey) -> Result<Listed, StoreError> {
        let mut conn = self.connection.clone();
        let mut hmget = self.record_fields(key);
        hmget.arg(MOVING);
        let mut reply: Vec<Option<Vec<u8>>> = self.run(hmget.query_async(&mut conn)).await?;
        let moving_to = reply.pop().flatten();
        let has_record = reply.first().is_some_and(Option::is_some);
        let copy = moving_to
            .filter(|_| !has_record)
            .and_then(|text| SessionKey::parse(std::str::from_utf8(&text).ok()?));
        match copy {
            Some(copy) => {
                let reply = self
                    .run(self.record_fields(&copy).query_async(&mut conn))
                    .await?;
                Ok(Listed {
                    reply,
                    moving_to: Some(copy),
                })
            }
            None => Ok(Listed::under_its_key(reply)),
        }
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
            redis::cmd("HDEL")
                .arg(self.user_index_key(user_id))
                .arg(keys)
                .query_async::<()>(&mut conn),
        )
        .await
    }
}

/// What a listing read for one index entry.
pub(super) struct Listed {
    /// The record, live update and deadline, as `HMGET` returns them.
    pub(super) reply: Vec<Option<Vec<u8>>>,
    /// The key they were read under when the entry's own key is marked as moving to it (on a
    /// cluster, half-way through a rotation); `None` when they are the entry's own.
    pub(super) moving_to: Option<SessionKey>,
}

impl Listed {
    fn under_its_key(reply: Vec<Option<Vec<u8>>>) -> Self {
        Self {
            reply,
            moving_to: None,
        }
    }
}

/// Adds `key` to a user's index, whose TTL only ever grows.
fn index_add(index: &str, key: &SessionKey, ttl_ms: u64) -> redis::Pipeline {
    let mut add = redis::pipe();
    add.cmd("HSET")
        .arg(index)
        .arg(key.as_str())
        .arg("")
        .ignore()
        .cmd("PEXPIRE")
        .arg(index)
        .arg(ttl_ms)
        .arg("NX")
        .ignore()
        .cmd("PEXPIRE")
        .arg(index)
        .arg(ttl_ms)
        .arg("GT")
        .ignore();
    add
}
