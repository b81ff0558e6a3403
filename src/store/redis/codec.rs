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
//! | `d` | the session's data, every value in one field (see [below](#the-data-field)); none when there is none | create, data writes, rotate |
//! | `z` | the data's size in bytes, as [`SessionData::size`] counts it | data writes |
//! | `m` | the key the session is moving to, once a rotation on a cluster has copied it; the key is dead to reads and writes from then on | rotate |
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
//! Why the record is binary, and its user agent in a [compact form](super::user_agent) (a
//! Chrome one of 111 bytes in 9): so that a browser login with a profile of up to about 60
//! bytes fits two pieces. A lookup asks for `r`, `r1`, `u` and `e` only (and `d` when the
//! handler may read data; `m` on a cluster), and every value more
//! in a reply costs the client about 0.15 µs to parse; only when `r1` is a full piece, so that
//! the record may go on, does it read the whole record again with all four (a second round
//! trip: for a large profile or many roles, a long user id, a personal access token made from a
//! login token, an impersonation). Records written as JSON by earlier builds (they start with
//! `{`) still read; earlier builds cannot read these, and treat them as any unreadable record
//! (logged out, removed when listed), so do not run them beside this one.
//!
//! # The data field
//!
//! All of a session's data is one field, `d`: every name and its JSON text, each written as
//! its length in bytes (one to ten decimal digits), a colon, and the bytes themselves:
//! `4:cart9:["sku-1"]`. One field, and not one per name, because a request that reads data
//! reads it with the record in one `HMGET` of five fields (six on a cluster, with `m`), where
//! the whole hash (`HGETALL`) would be twice as many values for the client to parse, names
//! included: the read costs about what a lookup without data does. Writes stay independent all
//! the same: the data-write script decodes the field, applies the changes and writes it back
//! in one atomic step, so writes of different names that race each other all land. The form is
//! one a Lua script parses in a few lines; the script and this decoder accept the same
//! framing, and only the decoder looks inside the bytes (names and values must be UTF-8). Data
//! that cannot be read leaves the session logged in: the lookup goes without it, and whatever
//! reads the data meets the error.
//!
//! A session whose data field is longer than 64 bytes (names, values and length prefixes) is
//! kept by Redis as a hash table rather than a listpack (see above), which with the data's
//! bytes makes it about twice the memory: 608 bytes against 304 for a login with a cart and a
//! flash message in fields of their own.
//! Every write decodes and rewrites the whole field, and replicas and the AOF receive it whole:
//! cheap for the few hundred bytes sessions usually hold, and one more reason for the data
//! limit.

use std::borrow::Cow;
use std::time::SystemTime;

use redis::Value;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::user_agent;
use crate::error::StoreError;
use crate::record::{from_unix_millis, unix_millis, BINARY_VERSION};
use crate::record::{SessionData, SessionRecord};
use crate::store::StoredSession;

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
// A lookup reads the head, then all pieces when the head's last one is full.
const _: () = assert!(HEAD_PIECES < RECORD_PIECES.len());
/// The most bytes of the record in one piece but the last, which takes the rest.
const PIECE_LEN: usize = 64;
/// The idle-deadline field.
pub(super) const DEADLINE: &str = "e";
/// The field that marks a key as moving to another (a cluster's rotation).
pub(super) const MOVING: &str = "m";
/// The live-update field.
pub(super) const USER: &str = "u";
/// The data-size field.
pub(super) const SIZE: &str = "z";
/// The data field.
pub(super) const DATA: &str = "d";

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

/// Which of a record's pieces a read asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pieces {
    /// The first [`HEAD_PIECES`]: all there is of a typical record.
    Head,
    /// All of them.
    All,
}

impl Pieces {
    /// The fields of these pieces.
    pub(super) fn fields(self) -> &'static [&'static str] {
        match self {
            Pieces::Head => &RECORD_PIECES[..HEAD_PIECES],
            Pieces::All => &RECORD_PIECES,
        }
    }
}

/// The reply of an `HMGET` of the record's `pieces`, `u` and `e`, in that order, decoded
/// straight from the reply's values, without copying them.
pub(super) fn decode_head(reply: &[Value], pieces: Pieces) -> Result<Head, StoreError> {
    let fields = pieces.fields();
    let short = || StoreError::corrupt("short HMGET reply");
    let (deadline, rest) = reply.split_last().ok_or_else(short)?;
    let (user, read) = rest.split_last().ok_or_else(short)?;
    if read.len() != fields.len() {
        return Err(short());
    }
    let mut parts: [Option<&[u8]>; RECORD_PIECES.len()] = [None; RECORD_PIECES.len()];
    for (part, value) in parts.iter_mut().zip(read) {
        *part = bulk(value)?;
    }
    let (user, deadline) = (bulk(user)?, bulk(deadline)?);
    let last_read = parts[fields.len() - 1];
    if pieces == Pieces::Head && last_read.is_some_and(|piece| piece.len() >= PIECE_LEN) {
        return Ok(Head::Longer);
    }
    with_joined(&parts[..fields.len()], |record| {
        decode(record, user, deadline)
    })
    .map(Head::Read)
}

/// A bulk string or nil in a reply.
pub(super) fn bulk(value: &Value) -> Result<Option<&[u8]>, StoreError> {
    match value {
        Value::Nil => Ok(None),
        Value::BulkString(bytes) => Ok(Some(bytes)),
        other => Err(StoreError::corrupt(format!("unexpected reply {other:?}"))),
    }
}

/// The `z` field: the data's size in bytes; a session that never had data has none.
pub(super) fn data_size(field: Option<&[u8]>) -> Result<usize, StoreError> {
    field.map_or(Ok(0), |digits| {
        std::str::from_utf8(digits)
            .ok()
            .and_then(|digits| digits.parse().ok())
            .ok_or_else(|| StoreError::corrupt("session data size is not a number"))
    })
}

/// The [data field](self#the-data-field) holding `data`; `None` for no data, which has no
/// field.
pub(super) fn encode_data(data: &SessionData) -> Option<Vec<u8>> {
    if data.is_empty() {
        return None;
    }
    let mut field = Vec::with_capacity(data.iter().map(|(n, v)| n.len() + v.len() + 8).sum());
    for (name, json) in data.iter() {
        for part in [name, json] {
            field.extend_from_slice(part.len().to_string().as_bytes());
            field.push(b':');
            field.extend_from_slice(part.as_bytes());
        }
    }
    Some(field)
}

/// The data in a [data field](self#the-data-field); no field is no data.
pub(super) fn decode_data(field: Option<&[u8]>) -> Result<SessionData, StoreError> {
    let Some(mut rest) = field else {
        return Ok(SessionData::new());
    };
    let mut entries = Vec::new();
    while !rest.is_empty() {
        let name = take_part(&mut rest)?;
        let json = take_part(&mut rest)?;
        entries.push((text(name)?, text(json)?));
    }
    Ok(entries.into_iter().collect())
}

/// The next length-prefixed part of a data field, which `rest` then goes on after.
fn take_part<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], StoreError> {
    let corrupt = || StoreError::corrupt("unreadable session data");
    let colon = rest
        .iter()
        .take(MAX_LENGTH_DIGITS + 1)
        .position(|&byte| byte == b':')
        .ok_or_else(corrupt)?;
    let (digits, after) = rest.split_at(colon);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(corrupt());
    }
    let len: usize = std::str::from_utf8(digits)
        .ok()
        .and_then(|digits| digits.parse().ok())
        .ok_or_else(corrupt)?;
    let after = &after[1..];
    let part = after.get(..len).ok_or_else(corrupt)?;
    *rest = &after[len..];
    Ok(part)
}

/// The most digits a length in a data field has: data is limited far below 10¹⁰ bytes.
const MAX_LENGTH_DIGITS: usize = 10;

fn text(bytes: &[u8]) -> Result<String, StoreError> {
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(StoreError::corrupt)
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
    fn data_reads_back_from_its_field() {
        assert_eq!(encode_data(&SessionData::new()), None);
        assert_eq!(decode_data(None).unwrap(), SessionData::new());
        let data: SessionData = [
            ("cart", r#"["sku-1"]"#),
            ("", r#""""#),
            ("12:a", "0"),
            ("ünï", r#""x:y""#),
        ]
        .into_iter()
        .map(|(name, json)| (name.to_owned(), json.to_owned()))
        .collect();
        let field = encode_data(&data).unwrap();
        assert_eq!(decode_data(Some(&field)).unwrap(), data);
        let one: SessionData = [("cart".to_owned(), r#"["sku-1"]"#.to_owned())]
            .into_iter()
            .collect();
        assert_eq!(encode_data(&one).unwrap(), br#"4:cart9:["sku-1"]"#);
    }

    #[test]
    fn unreadable_data_is_corrupt_not_a_panic() {
        let cases: [&[u8]; 11] = [
            b"4:cart",
            b"4:cart9:[",
            b"4:car",
            b":cart1:1",
            b"x:cart1:1",
            b"-4:cart1:1",
            b"+4:cart1:1",
            b"4cart1:1",
            b"99999999999999999999:a",
            &[b'1', b':', 0xff, b'1', b':', b'1'],
            &[b'1', b':', b'a', b'1', b':', 0xff],
        ];
        for case in cases {
            assert!(
                matches!(decode_data(Some(case)), Err(StoreError::Corrupt(_))),
                "{:?}",
                case.escape_ascii().to_string()
            );
        }
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
