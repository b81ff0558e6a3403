//! How a session is laid out in Redis, and the TTLs that go with it.
//!
//! A session is one hash. Each part that changes on its own has a field of its own, so that no
//! write rewrites another's part:
//!
//! | field | holds | written by |
//! |---|---|---|
//! | `r`, `r1`, `r2`, `r3` | the [`SessionRecord`] in binary form, as created, in pieces of 64 bytes (the last piece takes whatever is left) | create, rotate |
//! | `e` | the idle deadline, Unix milliseconds | create, rotate, extend |
//! | `u` | `{"p":profile,"r":roles}`, replacing the record's, once the user was updated live | update, rotate |
//! | `z` | the data's size in bytes, as [`SessionData::size`] counts it, in the same step as every change to the data | create, data writes, rotate |
//! | `m` | the key the session is moving to, once a rotation on a cluster has copied it; the record's pieces go in the same step, so the key is dead to lookups (which never ask for `m`) and writes from then on; a listing follows `m` to the copy | rotate |
//! | `d:{name}` | one data value, as JSON | data writes |
//!
//! The deadline travels in the hash, and not only as the key's TTL, so that one read tells a
//! request everything it needs, and a cached copy knows by itself when it has expired. The TTL
//! is set to the same moment; it frees the memory, the hash decides.
//!
//! Why the record is in pieces: Redis keeps a small hash as one compact array (a listpack)
//! only while every value is at most `hash-max-listpack-value` bytes, 64 by default; one longer
//! value turns it into a hash table, which costs about 130 bytes more per session. A record
//! is stored as up to four values of 64 bytes. A record longer than 256 bytes (a large
//! profile) still works: its last piece holds the rest, and the hash is a hash table.
//!
//! How a lookup that may read data finds all of it without asking for every field's name: it
//! asks for the record, `z` and the `d:{name}` fields of the names its process has met
//! ([`decode_named`]); the values it gets add up to `z` exactly when the session holds no other
//! name, since every entry counts more than nothing. When they do not, it reads the whole hash.
//!
//! Why the record is binary, and its user agent in a [compact form](super::user_agent) (a
//! Chrome one of 111 bytes in 9): so that a browser login with a profile of up to about 60
//! bytes fits two pieces. A lookup asks for `r`, `r1`, `u` and `e` of the record only, and
//! every value more in a reply costs the client about 0.15 µs to parse; only when `r1` is a full
//! piece, so that the record may go on, does it read the whole record again with all four (a
//! second round trip: for a large profile or many roles, a long user id, a personal access
//! token made from a login token, an impersonation). Records written as JSON by earlier builds
//! (they start with `{`) still read; earlier builds cannot read these, and treat them as any
//! unreadable record (logged out, removed when listed), so do not run them beside this one.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use redis::Value;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::user_agent;
use crate::error::StoreError;
use crate::record::{entry_size, from_unix_millis, unix_millis, BINARY_VERSION};
use crate::record::{SessionData, SessionRecord};
use crate::store::{LoadedSession, StoredSession};

/// The record field: the first piece of the record.
pub(super) const RECORD: &str = "r";
/// The pieces a lookup reads first: a typical record fits them.
pub(super) const HEAD_PIECES: usize = 2;
/// The fields of the record's pieces, in order.
///
/// Four: a browser login's record, binary and its User-Agent compacted, takes one or two, and every
/// field more costs each `HMGET` a scan of the hash (1.10 µs of Redis time for eight pieces,
/// 0.85 for four, 0.41 for the single field of a hash table, by `INFO commandstats`).
pub(super) const RECORD_PIECES: [&str; 4] = [RECORD, "r1", "r2", "r3"];
// `decode_hash` matches the pieces' field names `r1` to `r3` by their digit, and `decode_head`
// reads exactly two pieces.
const _: () = assert!(RECORD_PIECES.len() == 4 && HEAD_PIECES == 2);
/// The most bytes of the record in one piece but the last, which takes the rest.
const PIECE_LEN: usize = 64;
/// The idle-deadline field.
pub(super) const DEADLINE: &str = "e";
/// The field that marks a key as moving to another (a cluster's rotation): of the reads this
/// crate sends, only listings ask for it, as lookups find no record under a marked key.
pub(super) const MOVING: &str = "m";
/// The live-update field.
pub(super) const USER: &str = "u";
/// The data-size field.
pub(super) const SIZE: &str = "z";
/// The prefix of every data field.
pub(super) const DATA_PREFIX: &str = "d:";

/// A profile and roles given after login.
#[derive(Serialize)]
struct UserRef<'a> {
    p: &'a RawValue,
    r: &'a [String],
}

#[derive(Deserialize)]
struct UserOwned {
    p: Box<RawValue>,
    #[serde(default)]
    r: Vec<String>,
}

/// The record as stored: in binary form, with its user agent in
/// [compact form](user_agent::compact).
pub(super) fn encode_record(record: &SessionRecord) -> Result<Vec<u8>, StoreError> {
    record
        .encode_binary(user_agent::compact)
        .map_err(StoreError::corrupt)
}

/// A stored record: binary, or JSON as earlier builds wrote it.
fn decode_record(bytes: &[u8]) -> Result<SessionRecord, StoreError> {
    if bytes.first() == Some(&BINARY_VERSION) {
        return SessionRecord::decode_binary(bytes, user_agent::expand)
            .map_err(StoreError::corrupt);
    }
    let record: SessionRecord = serde_json::from_slice(bytes).map_err(StoreError::corrupt)?;
    Ok(record.map_user_agent(|ua| owned(user_agent::expand(ua))))
}

/// The record's pieces, as field names and values: at most [`PIECE_LEN`] bytes each, but the
/// last of [`RECORD_PIECES`], which takes the rest.
pub(super) fn record_pieces(record: &[u8]) -> impl Iterator<Item = (&'static str, &[u8])> {
    let last = RECORD_PIECES.len() - 1;
    RECORD_PIECES
        .iter()
        .enumerate()
        .map_while(move |(i, &field)| {
            let start = i * PIECE_LEN;
            let end = if i == last {
                record.len()
            } else {
                record.len().min(start + PIECE_LEN)
            };
            // The first piece is always written, so that `r` tells that a session exists.
            (start < end || i == 0).then(|| (field, record.get(start..end).unwrap_or_default()))
        })
}

/// What a rewrite of the user agent changed, if anything.
fn owned(rewritten: Cow<'_, str>) -> Option<String> {
    match rewritten {
        Cow::Owned(text) => Some(text),
        Cow::Borrowed(_) => None,
    }
}

/// `decode` applied to the record put back together from its pieces, as read in the order of
/// [`RECORD_PIECES`]; `None` when there is no first piece (no session).
///
/// A record of up to [`JOINED_ON_STACK`] bytes is put together on the stack: this runs on
/// every lookup, and an allocation would cost it more than the copy.
fn with_joined<R>(pieces: &[Option<&[u8]>], decode: impl FnOnce(Option<&[u8]>) -> R) -> R {
    let Some((Some(first), rest)) = pieces.split_first() else {
        return decode(None);
    };
    // A missing piece ends the record, and what follows it is not read: a record missing a piece
    // in the middle is cut short, which the binary form's end mark (and JSON's brace) refuses.
    let rest = || rest.iter().map_while(|piece| *piece);
    let len = first.len() + rest().map(<[u8]>::len).sum::<usize>();
    if len == first.len() {
        return decode(Some(first));
    }
    let mut on_stack = [0u8; JOINED_ON_STACK];
    let mut on_heap = Vec::new();
    let joined: &mut [u8] = match on_stack.get_mut(..len) {
        Some(joined) => joined,
        None => {
            on_heap.resize(len, 0);
            &mut on_heap
        }
    };
    let mut at = 0;
    for piece in std::iter::once(*first).chain(rest()) {
        joined[at..at + piece.len()].copy_from_slice(piece);
        at += piece.len();
    }
    decode(Some(joined))
}

/// The longest record [`with_joined`] puts together without allocating.
const JOINED_ON_STACK: usize = 256;

pub(super) fn encode_user(user: &RawValue, roles: &[String]) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(&UserRef { p: user, r: roles }).map_err(StoreError::corrupt)
}

pub(super) fn encode_deadline(expires_at: SystemTime) -> String {
    unix_millis(expires_at).to_string()
}

/// The session in the fields `r`, `u` and `e`, as `HMGET` returns them; `None` when there is no
/// record.
pub(super) fn decode(
    record: Option<&[u8]>,
    user: Option<&[u8]>,
    deadline: Option<&[u8]>,
) -> Result<Option<StoredSession>, StoreError> {
    let Some(record) = record else {
        return Ok(None);
    };
    let deadline: u64 = deadline
        .and_then(|bytes| std::str::from_utf8(bytes).ok())
        .and_then(|digits| digits.parse().ok())
        .ok_or_else(|| StoreError::corrupt("session has no deadline"))?;
    let mut record = decode_record(record)?;
    if let Some(user) = user {
        let update: UserOwned = serde_json::from_slice(user).map_err(StoreError::corrupt)?;
        record = record.with_user(update.p, update.r);
    }
    Ok(Some(StoredSession {
        record,
        expires_at: from_unix_millis(deadline),
    }))
}

/// The reply of [`read_record`](super::read_record)'s `HMGET` (the record's pieces, `u`, `e`),
/// decoded.
pub(super) fn decode_reply(
    reply: Vec<Option<Vec<u8>>>,
) -> Result<Option<StoredSession>, StoreError> {
    match reply.as_slice() {
        [pieces @ .., user, deadline] if pieces.len() == RECORD_PIECES.len() => {
            let pieces: [Option<&[u8]>; RECORD_PIECES.len()] =
                std::array::from_fn(|i| pieces[i].as_deref());
            with_joined(&pieces, |record| {
                decode(record, user.as_deref(), deadline.as_deref())
            })
        }
        _ => Err(StoreError::corrupt("short HMGET reply")),
    }
}

/// What a lookup's first read found.
#[derive(Debug)]
pub(super) enum Head {
    /// The whole answer: the session, or none.
    Read(Option<StoredSession>),
    /// The record fills the pieces read and may go on: read it whole.
    Longer,
}

/// The reply of a lookup's first `HMGET` (the first [`HEAD_PIECES`] pieces, `u`, `e`), decoded
/// straight from the reply's values, without copying them.
pub(super) fn decode_head(reply: &[Value]) -> Result<Head, StoreError> {
    let [first, second, user, deadline] = reply else {
        return Err(StoreError::corrupt("short HMGET reply"));
    };
    let pieces = [bulk(first)?, bulk(second)?];
    let (user, deadline) = (bulk(user)?, bulk(deadline)?);
    if goes_on(&pieces) {
        return Ok(Head::Longer);
    }
    with_joined(&pieces, |record| decode(record, user, deadline)).map(Head::Read)
}

/// Whether a record may go on past the pieces a read asked for (its first few): the last of
/// them is full, and there are more.
fn goes_on(asked: &[Option<&[u8]>]) -> bool {
    asked.len() < RECORD_PIECES.len()
        && asked
            .last()
            .is_some_and(|piece| piece.is_some_and(|piece| piece.len() >= PIECE_LEN))
}

/// A bulk string or nil in a reply.
pub(super) fn bulk(value: &Value) -> Result<Option<&[u8]>, StoreError> {
    match value {
        Value::Nil => Ok(None),
        Value::BulkString(bytes) => Ok(Some(bytes)),
        other => Err(StoreError::corrupt(format!("unexpected reply {other:?}"))),
    }
}

/// What a lookup that asked for the data by name found.
#[derive(Debug)]
pub(super) enum Named {
    /// The whole answer: the session, or none, with its data when it holds at most the bytes
    /// asked for; and that size, as the `z` field counts it.
    Read(Option<LoadedSession>, usize),
    /// The record fills the pieces asked for and may go on: ask again for all of them.
    Longer,
    /// The values under the names asked for come short of the data's size: it holds a name
    /// that was not asked for. Read the whole hash.
    Incomplete,
}

/// The reply of an `HMGET` of the record's first `pieces` pieces (of [`RECORD_PIECES`]), `u`,
/// `e`, `z` and the data `fields` (`d:{name}`), decoded in place.
///
/// Like [`decode_head`], a lookup asks first for the pieces a typical record fits in, and for
/// all of them only when the last one asked for is full and the data is complete (otherwise the
/// whole hash is read, record and all).
///
/// Whether the data is complete is told by its size: every write sets `z` to the sum of its
/// entries' sizes in the step that changes them, and every entry counts more than nothing, so
/// values under some of the names add up to `z` only when there is no other name. A live
/// session without `z` was not written by this build: it is read whole too. Data that [cannot
/// be read](unreadable_data) is left behind.
pub(super) fn decode_named(
    reply: &[Value],
    pieces: usize,
    fields: &[String],
    max_data: usize,
) -> Result<Named, StoreError> {
    let Some((asked, [user, deadline, size, values @ ..])) = reply.split_at_checked(pieces) else {
        return Err(StoreError::corrupt("short HMGET reply"));
    };
    if values.len() != fields.len() || asked.is_empty() || asked.len() > RECORD_PIECES.len() {
        return Err(StoreError::corrupt("HMGET reply of the wrong length"));
    }
    let mut record: [Option<&[u8]>; RECORD_PIECES.len()] = [None; RECORD_PIECES.len()];
    for (piece, value) in record.iter_mut().zip(asked) {
        *piece = bulk(value)?;
    }
    if record[0].is_none() {
        return Ok(Named::Read(None, 0));
    }
    // Before the record's length: a hash whose data was not all asked for is read whole, and
    // that read brings the whole record too.
    let Some((data, size)) = named_data(size, fields, values, max_data)? else {
        return Ok(Named::Incomplete);
    };
    if goes_on(&record[..asked.len()]) {
        return Ok(Named::Longer);
    }
    let (user, deadline) = (bulk(user)?, bulk(deadline)?);
    let Some(stored) = with_joined(&record, |record| decode(record, user, deadline))? else {
        return Ok(Named::Read(None, 0));
    };
    Ok(Named::Read(Some(LoadedSession { stored, data }), size))
}

/// The data of a [`decode_named`] reply, and its size: `None` when nothing vouches that the
/// `values` are all of it; no data when it holds more than `max_data` bytes or [cannot be
/// read](unreadable_data).
fn named_data(
    size: &Value,
    fields: &[String],
    values: &[Value],
    max_data: usize,
) -> Result<Option<(Option<SessionData>, usize)>, StoreError> {
    // Every write of this build sets `z`; without it, or with one that is not a number,
    // nothing vouches for the data read.
    let Some(size) = bulk(size)?.and_then(|size| data_size(Some(size))) else {
        return Ok(None);
    };
    if size > max_data {
        return Ok(Some((None, size)));
    }
    let mut data = SessionData::new();
    let mut counted = 0;
    for (field, value) in fields.iter().zip(values) {
        let Some(json) = bulk(value)? else { continue };
        let name = field.strip_prefix(DATA_PREFIX).unwrap_or(field);
        let Ok(json) = std::str::from_utf8(json) else {
            return Ok(Some((unreadable_data(), size)));
        };
        counted += entry_size(name, json);
        data.insert(name, json);
    }
    Ok((counted == size).then_some((Some(data), size)))
}

/// What a lookup brings of data it cannot read (a name or value that is not UTF-8, which only
/// a hand or another program writes): nothing. That is the data's fault, not the record's, so
/// the session stays logged in, on a caching instance as on a plain one; whatever reads the
/// data later reads it again and meets the error.
fn unreadable_data() -> Option<SessionData> {
    Oddity::DataNotUtf8.warn_once();
    None
}

/// What a session hash can hold that no writer of this build leaves there: a hand's or another
/// program's work. Each costs its sessions a whole read, or their data, until a write mends it.
#[derive(Clone, Copy)]
pub(super) enum Oddity {
    /// A data name or value that is not UTF-8: left unread.
    DataNotUtf8,
    /// A data size (`z`) that is not a number: the data is counted anew.
    SizeNotNumber,
    /// A data size that disagrees with the values: the session is read whole.
    SizeDisagrees { recorded: usize, counted: usize },
}

impl Oddity {
    /// Warns once per process and kind: such a hash stays as it is until a write mends it, and
    /// a warning on every lookup of it would bury everything else.
    pub(super) fn warn_once(self) {
        static WARNED: [AtomicBool; 3] = [const { AtomicBool::new(false) }; 3];
        let kind = match self {
            Oddity::DataNotUtf8 => 0,
            Oddity::SizeNotNumber => 1,
            Oddity::SizeDisagrees { .. } => 2,
        };
        if WARNED[kind].swap(true, Ordering::Relaxed) {
            return;
        }
        match self {
            Oddity::DataNotUtf8 => {
                tracing::warn!("session data that is not UTF-8 in Redis; such data is left unread");
            }
            Oddity::SizeNotNumber => {
                tracing::warn!("session data size that is not a number in Redis; counted anew");
            }
            Oddity::SizeDisagrees { recorded, counted } => tracing::warn!(
                recorded,
                counted,
                "session data size disagrees with its values; such sessions are read whole"
            ),
        }
    }
}

/// A whole session hash, as `HGETALL` returns it, decoded: `None` when there is no record or
/// the key is moving. The data comes along when it holds at most `max_data` bytes (as the `z`
/// field counts them) and [can be read](unreadable_data); the second value is that size, so
/// that the caller can tell a session whose data was left behind.
pub(super) fn decode_hash(
    fields: Vec<(Vec<u8>, Vec<u8>)>,
    max_data: usize,
) -> Result<(Option<LoadedSession>, usize), StoreError> {
    let (mut user, mut deadline, mut size) = (None, None, None);
    let mut pieces: [Option<Vec<u8>>; RECORD_PIECES.len()] = Default::default();
    let mut data = Some(SessionData::new());
    for (field, value) in fields {
        match field.as_slice() {
            b"r" => pieces[0] = Some(value),
            [b'r', digit @ b'1'..=b'3'] => pieces[usize::from(digit - b'0')] = Some(value),
            b"u" => user = Some(value),
            b"e" => deadline = Some(value),
            b"z" => size = Some(value),
            // A key marked as moving (a cluster's rotation under way, or cut off) is dead to
            // requests: the session lives on under the new key, or nowhere.
            b"m" => return Ok((None, 0)),
            _ => {
                if data
                    .as_mut()
                    .is_some_and(|data| read_data_field(&field, value, data).is_err())
                {
                    data = unreadable_data();
                }
            }
        }
    }
    let pieces: [Option<&[u8]>; RECORD_PIECES.len()] =
        std::array::from_fn(|i| pieces[i].as_deref());
    let stored = with_joined(&pieces, |record| {
        decode(record, user.as_deref(), deadline.as_deref())
    })?;
    let Some(stored) = stored else {
        return Ok((None, 0));
    };
    // A size that is not a number vouches for nothing: the data read whole is counted instead.
    let size = data_size(size.as_deref()).unwrap_or_else(|| {
        Oddity::SizeNotNumber.warn_once();
        data.as_ref().map_or(0, SessionData::size)
    });
    let data = data.filter(|_| size <= max_data);
    Ok((Some(LoadedSession { stored, data }), size))
}

/// The `z` field: the data's size in bytes, 0 for a session that never had data (it has no
/// `z`); `None` when it is not a number, which only a hand or another program writes (the next
/// data write counts the size anew).
pub(super) fn data_size(field: Option<&[u8]>) -> Option<usize> {
    field.map_or(Some(0), |digits| {
        std::str::from_utf8(digits).ok()?.parse().ok()
    })
}

/// Adds a `d:{name}` field of a session hash to `data`; any other field is not data.
fn read_data_field(field: &[u8], value: Vec<u8>, data: &mut SessionData) -> Result<(), StoreError> {
    if let Some(name) = field.strip_prefix(DATA_PREFIX.as_bytes()) {
        let name = String::from_utf8(name.to_vec()).map_err(StoreError::corrupt)?;
        let json = String::from_utf8(value).map_err(StoreError::corrupt)?;
        data.insert(name, json);
    }
    Ok(())
}

/// The data in an `HGETALL` reply; `None` when the hash holds no record.
pub(super) fn decode_data(
    fields: Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<Option<SessionData>, StoreError> {
    let mut live = false;
    let mut data = SessionData::new();
    for (field, value) in fields {
        if field == RECORD.as_bytes() {
            live = true;
        } else {
            read_data_field(&field, value, &mut data)?;
        }
    }
    Ok(live.then_some(data))
}

/// A bulk string or nil from a script's reply.
pub(super) fn optional_text(value: Value) -> Result<Option<String>, StoreError> {
    match value {
        Value::Nil => Ok(None),
        Value::BulkString(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(StoreError::corrupt),
        Value::SimpleString(text) => Ok(Some(text)),
        other => Err(StoreError::corrupt(format!(
            "unexpected script reply {other:?}"
        ))),
    }
}

/// Redis wants a positive whole number of milliseconds; a deadline already reached becomes 1 ms.
pub(super) fn ttl_millis(expires_at: SystemTime) -> u64 {
    let remaining = expires_at
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    u64::try_from(remaining.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn record() -> SessionRecord {
        let profile = RawValue::from_string(r#"{"name":"x"}"#.to_owned()).unwrap();
        let now = SystemTime::now();
        SessionRecord::new("pub", "7", profile, now, now + Duration::from_secs(3600))
    }

    #[test]
    fn a_session_reads_back_with_its_deadline_and_live_update() {
        let record = record();
        let deadline = from_unix_millis(1_700_000_000_123);
        let encoded = encode_record(&record).unwrap();
        let deadline_text = encode_deadline(deadline);
        assert_eq!(deadline_text, "1700000000123");
        let stored = decode(Some(&encoded), None, Some(deadline_text.as_bytes()))
            .unwrap()
            .unwrap();
        assert_eq!(stored.expires_at, deadline);
        assert_eq!(stored.record.user().get(), r#"{"name":"x"}"#);

        let admin = RawValue::from_string(r#"{"name":"y"}"#.to_owned()).unwrap();
        let update = encode_user(&admin, &["admin".to_owned()]).unwrap();
        let stored = decode(
            Some(&encoded),
            Some(&update),
            Some(deadline_text.as_bytes()),
        )
        .unwrap()
        .unwrap();
        assert_eq!(stored.record.user().get(), r#"{"name":"y"}"#);
        assert!(stored.record.has_role("admin"));
        assert_eq!(stored.record.id(), "pub");
    }

    #[test]
    fn missing_record_is_no_session_and_broken_fields_are_corrupt_not_a_panic() {
        assert!(decode(None, None, None).unwrap().is_none());
        let good = encode_record(&record()).unwrap();
        // The fields `r`, `u` and `e`.
        type Fields<'a> = (&'a [u8], Option<&'a [u8]>, Option<&'a [u8]>);
        let cases: [Fields<'_>; 6] = [
            (&good, None, None),
            (&good, None, Some(b"")),
            (&good, None, Some(b"12x")),
            (b"not json", None, Some(b"12")),
            (&good, Some(b"{}"), Some(b"12")),
            (&good, Some(b"\xff"), Some(b"12")),
        ];
        for (r, u, e) in cases {
            assert!(
                matches!(decode(Some(r), u, e), Err(StoreError::Corrupt(_))),
                "{r:?} {u:?} {e:?}"
            );
        }
    }

    #[test]
    fn data_is_read_from_its_fields_only() {
        let fields = vec![
            (b"r".to_vec(), b"{}".to_vec()),
            (b"e".to_vec(), b"1".to_vec()),
            (b"z".to_vec(), b"9".to_vec()),
            (b"d:cart".to_vec(), b"[1]".to_vec()),
        ];
        let data = decode_data(fields).unwrap().unwrap();
        assert_eq!(data.iter().collect::<Vec<_>>(), vec![("cart", "[1]")]);
        assert!(decode_data(vec![(b"d:x".to_vec(), b"1".to_vec())])
            .unwrap()
            .is_none());
        assert!(decode_data(vec![
            (b"r".to_vec(), b"{}".to_vec()),
            (b"d:x".to_vec(), b"\xff".to_vec())
        ])
        .is_err());
    }

    /// A record whose binary form is exactly `len` bytes: its profile is padded to fit.
    fn record_of_len(len: usize) -> Vec<u8> {
        let now = SystemTime::now();
        let with_name = |name: &str| {
            let profile = RawValue::from_string(format!(r#"{{"n":"{name}"}}"#)).unwrap();
            let record =
                SessionRecord::new("pub", "7", profile, now, now + Duration::from_secs(3600));
            encode_record(&record).unwrap()
        };
        let shortest = with_name("").len();
        let encoded = with_name(&"x".repeat(len - shortest));
        assert_eq!(encoded.len(), len);
        encoded
    }

    /// The `HMGET` reply to a read of the first `asked` pieces of `encoded`, then `u`, `e`, `z`
    /// (when `with_size`) and no data.
    fn reply(encoded: &[u8], asked: usize, with_size: bool) -> Vec<Value> {
        let stored: Vec<&[u8]> = record_pieces(encoded).map(|(_, piece)| piece).collect();
        let mut reply: Vec<Value> = (0..asked)
            .map(|i| {
                stored
                    .get(i)
                    .map_or(Value::Nil, |p| Value::BulkString(p.to_vec()))
            })
            .collect();
        reply.push(Value::Nil);
        reply.push(Value::BulkString(b"1700000000123".to_vec()));
        if with_size {
            reply.push(Value::BulkString(b"0".to_vec()));
        }
        reply
    }

    #[test]
    fn a_read_of_two_pieces_takes_127_bytes_as_whole_and_asks_again_from_128() {
        let whole = record_of_len(2 * PIECE_LEN - 1);
        let longer = record_of_len(2 * PIECE_LEN);
        assert!(matches!(
            decode_head(&reply(&whole, HEAD_PIECES, false)),
            Ok(Head::Read(Some(_)))
        ));
        assert!(matches!(
            decode_named(&reply(&whole, HEAD_PIECES, true), HEAD_PIECES, &[], 4096),
            Ok(Named::Read(Some(_), 0))
        ));
        assert!(matches!(
            decode_head(&reply(&longer, HEAD_PIECES, false)),
            Ok(Head::Longer)
        ));
        assert!(matches!(
            decode_named(&reply(&longer, HEAD_PIECES, true), HEAD_PIECES, &[], 4096),
            Ok(Named::Longer)
        ));
        // All four pieces asked for: the record is whole whatever its length.
        assert!(matches!(
            decode_named(
                &reply(&longer, RECORD_PIECES.len(), true),
                RECORD_PIECES.len(),
                &[],
                4096
            ),
            Ok(Named::Read(Some(_), 0))
        ));
    }

    #[test]
    fn ttls_are_whole_positive_milliseconds() {
        let past = SystemTime::now() - Duration::from_secs(5);
        assert_eq!(ttl_millis(past), 1);
        let soon = SystemTime::now() + Duration::from_secs(60);
        let ttl = ttl_millis(soon);
        assert!((59_000..=60_000).contains(&ttl), "{ttl}");
    }
}
