//! How a session is laid out in Redis, and the TTLs that go with it.
//!
//! A session is one hash. Each part that changes on its own has a field of its own, so that no
//! write rewrites another's part:
//!
//! | field | holds | written by |
//! |---|---|---|
//! | `i` | the record's public id | create, rotate |
//! | `o` | the user id (the owner; empty for an anonymous session) | create, rotate |
//! | `p` `p1` `p2` `p3` | the profile given at login, as JSON (chunked, see below) | create, rotate |
//! | `g` | the roles granted at login, a JSON array; absent for none | create, rotate |
//! | `c`, `a`, `x` | created, reauthenticated (absent until then), absolute end; Unix milliseconds | create, rotate |
//! | `k` | how the client holds the token, as JSON; absent for a browser session | create, rotate |
//! | `ip`, `ua` `ua1` | the client's address and User-Agent at login (the User-Agent compacted by [`user_agent`], then in up to two chunks); absent if unknown | create, rotate |
//! | `e` | the idle deadline, Unix milliseconds | create, rotate, extend |
//! | `u` `u1` `u2` `u3` | `{"p":profile,"r":roles}` (chunked), replacing the record's, once the user was updated live | update, rotate |
//! | `z` | the data's size in bytes, as [`SessionData::size`] counts it; absent while there is none | data writes |
//! | `m` | the key the session is moving to, once a rotation on a cluster has copied it; the key is dead to reads and writes from then on | rotate |
//! | `d:{name}` | one data value, as JSON | data writes |
//! | `r` | the whole [`SessionRecord`] as JSON, in a session written by an earlier version: read (with `u` and `e`), never written | — |
//!
//! The deadline travels in the hash, and not only as the key's TTL, so that one read tells a
//! request everything it needs, and a cached copy knows by itself when it has expired. The TTL
//! is set to the same moment; it frees the memory, the hash decides.
//!
//! The record is split into fields, and not kept as one JSON value, for memory: Redis keeps a
//! hash whose values are all at most `hash-max-listpack-value` (64 bytes by default) as one
//! compact listpack, and any other as a hashtable, about half as much again per session (a
//! User-Agent alone is often 100 bytes and more, so it is stored compacted). So every value a
//! login writes stays within 64 bytes where it can: a profile, User-Agent or live update that
//! is longer is cut into 64-byte chunks under the field's name and then the name with `1`, `2`,
//! `3` appended (the User-Agent has two chunks, the others four); a read asks for all of them
//! in the same `HMGET` and joins those present. A value longer than its chunks, and any other
//! long value (many roles, a personal token's scopes), is kept whole in its first field: the
//! session then costs what every session cost before.
//!
//! A session written by an earlier version keeps its `r` field until it ends: reads decode it,
//! and every write works on it as on a new one (a rotation writes the new key in this layout).

use std::time::SystemTime;

use redis::Value;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::StoreError;
use crate::record::{from_unix_millis, unix_millis};
use crate::record::{RecordParts, SessionData, SessionRecord};
use crate::store::{LoadedSession, StoredSession};

use super::user_agent;

/// The record field of a session written by an earlier version.
pub(super) const LEGACY_RECORD: &str = "r";
/// The public id, present in every session written in this layout.
pub(super) const ID: &str = "i";
/// The idle-deadline field.
pub(super) const DEADLINE: &str = "e";
/// The field that marks a key as moving to another (a cluster's rotation).
pub(super) const MOVING: &str = "m";
/// The data-size field.
pub(super) const SIZE: &str = "z";
/// The prefix of every data field.
pub(super) const DATA_PREFIX: &str = "d:";

/// The longest value Redis keeps in a listpack by default (`hash-max-listpack-value`).
const CHUNK_BYTES: usize = 64;
/// The fields a chunked value may use, in order: its name, then the name with 1, 2, 3.
type Chunks = [&'static str];
/// The live update.
pub(super) const USER: &Chunks = &["u", "u1", "u2", "u3"];
const PROFILE: &Chunks = &["p", "p1", "p2", "p3"];
/// Two chunks only, to keep the lookup's `HMGET` shorter: a browser's User-Agent, compacted by
/// [`user_agent`], takes 10 to 25 bytes, and one longer than 128 costs memory only.
const USER_AGENT: &Chunks = &["ua", "ua1"];
const OWNER: &str = "o";
const ROLES: &str = "g";
const CREATED: &str = "c";
const AUTHENTICATED: &str = "a";
const ENDS: &str = "x";
const KIND: &str = "k";
const IP: &str = "ip";

/// What a read of a session asks for (`HMGET`), in this order; [`decode_reply`] reads the reply.
pub(super) const READ: [&str; 21] = [
    MOVING,
    LEGACY_RECORD,
    DEADLINE,
    USER[0],
    USER[1],
    USER[2],
    USER[3],
    ID,
    OWNER,
    PROFILE[0],
    PROFILE[1],
    PROFILE[2],
    PROFILE[3],
    ROLES,
    CREATED,
    AUTHENTICATED,
    ENDS,
    KIND,
    IP,
    USER_AGENT[0],
    USER_AGENT[1],
];

/// A field's name and value, as a script writes it with `HSET`.
pub(super) type Field = (&'static str, Vec<u8>);

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

/// The fields that hold `record`, and the idle deadline, and the data size unless it is 0.
pub(super) fn encode_session(
    record: &SessionRecord,
    expires_at: SystemTime,
    data_size: usize,
) -> Result<Vec<Field>, StoreError> {
    let parts = record.to_parts().map_err(StoreError::corrupt)?;
    let mut fields = vec![
        (ID, parts.id.into_bytes()),
        (OWNER, parts.user_id.into_bytes()),
    ];
    push_chunked(&mut fields, PROFILE, parts.user.get().as_bytes());
    if !parts.roles.is_empty() {
        let roles = serde_json::to_vec(&parts.roles).map_err(StoreError::corrupt)?;
        fields.push((ROLES, roles));
    }
    fields.push((CREATED, parts.created_at.to_string().into_bytes()));
    if let Some(at) = parts.authenticated_at {
        fields.push((AUTHENTICATED, at.to_string().into_bytes()));
    }
    fields.push((ENDS, parts.expires_at.to_string().into_bytes()));
    if let Some(kind) = parts.kind {
        fields.push((KIND, kind.get().as_bytes().to_vec()));
    }
    if let Some(ip) = parts.ip {
        fields.push((IP, ip.into_bytes()));
    }
    if let Some(user_agent) = parts.user_agent {
        push_chunked(&mut fields, USER_AGENT, &user_agent::encode(&user_agent));
    }
    fields.push((DEADLINE, encode_deadline(expires_at).into_bytes()));
    if data_size > 0 {
        fields.push((SIZE, data_size.to_string().into_bytes()));
    }
    Ok(fields)
}

/// The fields of a live update (see [`USER`]): a script clears all four, then writes these.
pub(super) fn encode_user(user: &RawValue, roles: &[String]) -> Result<Vec<Field>, StoreError> {
    let json = serde_json::to_vec(&UserRef { p: user, r: roles }).map_err(StoreError::corrupt)?;
    let mut fields = Vec::with_capacity(USER.len());
    push_chunked(&mut fields, USER, &json);
    Ok(fields)
}

/// `value` in 64-byte chunks under `names`, or whole under the first name if it needs more
/// chunks than there are names. Chunks may split a UTF-8 character: they are joined as bytes.
fn push_chunked(fields: &mut Vec<Field>, names: &Chunks, value: &[u8]) {
    if value.len() > CHUNK_BYTES * names.len() {
        fields.push((names[0], value.to_vec()));
        return;
    }
    fields.push((names[0], value.get(..CHUNK_BYTES).unwrap_or(value).to_vec()));
    for (name, chunk) in names[1..].iter().zip(value.chunks(CHUNK_BYTES).skip(1)) {
        fields.push((name, chunk.to_vec()));
    }
}

pub(super) fn encode_deadline(expires_at: SystemTime) -> String {
    unix_millis(expires_at).to_string()
}

/// The reply to `HMGET` of [`READ`], by field name.
struct Reply(Vec<(&'static str, Option<Vec<u8>>)>);

impl Reply {
    fn take(&mut self, name: &str) -> Option<Vec<u8>> {
        self.0
            .iter_mut()
            .find(|(field, _)| *field == name)
            .and_then(|(_, value)| value.take())
    }

    /// A chunked value: its chunks joined, or `None` when its first field is absent (a chunk
    /// without one is ignored: no writer leaves one).
    fn joined(&mut self, names: &Chunks) -> Option<Vec<u8>> {
        let mut value = self.take(names[0])?;
        for name in &names[1..] {
            if let Some(chunk) = self.take(name) {
                value.extend_from_slice(&chunk);
            }
        }
        Some(value)
    }

    /// A text field, which must be UTF-8.
    fn text(&mut self, name: &str) -> Result<Option<String>, StoreError> {
        self.take(name)
            .map(|bytes| String::from_utf8(bytes).map_err(StoreError::corrupt))
            .transpose()
    }

    /// A time field, Unix milliseconds.
    fn millis(&mut self, name: &str) -> Result<Option<u64>, StoreError> {
        self.take(name).as_deref().map(millis).transpose()
    }
}

fn millis(bytes: &[u8]) -> Result<u64, StoreError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|digits| digits.parse().ok())
        .ok_or_else(|| StoreError::corrupt("unreadable time in a session"))
}

/// Whether the reply to `HMGET` of [`READ`] is of a key marked as moving (dead to requests).
pub(super) fn is_moving(reply: &[Option<Vec<u8>>]) -> bool {
    reply.first().is_some_and(Option::is_some)
}

/// The reply to `HMGET` of [`READ`], decoded (whether the key is moving aside: see
/// [`is_moving`]); `None` when there is no record, in either layout.
pub(super) fn decode_reply(
    reply: Vec<Option<Vec<u8>>>,
) -> Result<Option<StoredSession>, StoreError> {
    if reply.len() != READ.len() {
        return Err(StoreError::corrupt("short HMGET reply"));
    }
    let mut reply = Reply(READ.into_iter().zip(reply).collect());
    let user = reply.joined(USER);
    let deadline = reply.take(DEADLINE);
    if let Some(record) = reply.take(LEGACY_RECORD) {
        return decode_legacy(Some(&record), user.as_deref(), deadline.as_deref());
    }
    let Some(id) = reply.text(ID)? else {
        return Ok(None);
    };
    let deadline = read_deadline(deadline.as_deref())?;
    let mut record = decode_parts(id, &mut reply)?;
    if let Some(user) = user {
        record = with_update(record, &user)?;
    }
    Ok(Some(StoredSession {
        record,
        expires_at: deadline,
    }))
}

/// The record in the fields of this layout, but for its id, which the caller took.
fn decode_parts(id: String, reply: &mut Reply) -> Result<SessionRecord, StoreError> {
    let missing = |what: &str| StoreError::corrupt(format!("session has no {what}"));
    let user_id = reply.text(OWNER)?.ok_or_else(|| missing("user id"))?;
    let profile = reply.joined(PROFILE).ok_or_else(|| missing("profile"))?;
    let user = String::from_utf8(profile)
        .map_err(StoreError::corrupt)
        .and_then(|json| RawValue::from_string(json).map_err(StoreError::corrupt))?;
    let roles = match reply.take(ROLES) {
        Some(json) => serde_json::from_slice(&json).map_err(StoreError::corrupt)?,
        None => Vec::new(),
    };
    let kind = match reply.text(KIND)? {
        Some(json) => Some(RawValue::from_string(json).map_err(StoreError::corrupt)?),
        None => None,
    };
    let user_agent = reply
        .joined(USER_AGENT)
        .map(|stored| user_agent::decode(&stored))
        .transpose()?;
    let parts = RecordParts {
        id,
        user_id,
        user,
        created_at: reply
            .millis(CREATED)?
            .ok_or_else(|| missing("creation time"))?,
        authenticated_at: reply.millis(AUTHENTICATED)?,
        expires_at: reply.millis(ENDS)?.ok_or_else(|| missing("absolute end"))?,
        roles,
        ip: reply.text(IP)?,
        user_agent,
        kind,
    };
    SessionRecord::from_parts(parts).map_err(StoreError::corrupt)
}

fn read_deadline(deadline: Option<&[u8]>) -> Result<SystemTime, StoreError> {
    let deadline = deadline.ok_or_else(|| StoreError::corrupt("session has no deadline"))?;
    let deadline = millis(deadline).map_err(|_| StoreError::corrupt("unreadable deadline"))?;
    Ok(from_unix_millis(deadline))
}

fn with_update(record: SessionRecord, user: &[u8]) -> Result<SessionRecord, StoreError> {
    let update: UserOwned = serde_json::from_slice(user).map_err(StoreError::corrupt)?;
    Ok(record.with_user(update.p, update.r))
}

/// A session written by an earlier version, from its fields `r`, `u` and `e`; `None` when there
/// is no record.
pub(super) fn decode_legacy(
    record: Option<&[u8]>,
    user: Option<&[u8]>,
    deadline: Option<&[u8]>,
) -> Result<Option<StoredSession>, StoreError> {
    let Some(record) = record else {
        return Ok(None);
    };
    let deadline = read_deadline(deadline)?;
    let mut record: SessionRecord = serde_json::from_slice(record).map_err(StoreError::corrupt)?;
    if let Some(user) = user {
        record = with_update(record, user)?;
    }
    Ok(Some(StoredSession {
        record,
        expires_at: deadline,
    }))
}

/// The reply of [`READ_WITH_DATA`](super::scripts::READ_WITH_DATA), decoded: `None` when there
/// is no record or the key is moving; the data when it came along.
pub(super) fn decode_with_data(reply: Vec<Value>) -> Result<Option<LoadedSession>, StoreError> {
    if reply.len() <= READ.len() {
        return Err(StoreError::corrupt("short session read reply"));
    }
    let mut reply = reply.into_iter();
    let fields = reply
        .by_ref()
        .take(READ.len())
        .map(optional_bytes)
        .collect::<Result<Vec<_>, _>>()?;
    if is_moving(&fields) {
        // A key marked as moving (a cluster's rotation under way, or cut off) is dead to
        // requests: the session lives on under the new key, or nowhere.
        return Ok(None);
    }
    let Some(stored) = decode_reply(fields)? else {
        return Ok(None);
    };
    let data = match reply.next() {
        Some(Value::Int(0)) => None,
        Some(Value::Int(1)) => Some(decode_data_pairs(reply)?),
        _ => return Err(StoreError::corrupt("unexpected session read reply")),
    };
    Ok(Some(LoadedSession { stored, data }))
}

/// Names and values, alternating, as [`decode_with_data`] receives them.
fn decode_data_pairs(mut pairs: impl Iterator<Item = Value>) -> Result<SessionData, StoreError> {
    let mut data = SessionData::new();
    while let Some(name) = pairs.next() {
        let name = optional_text(name)?;
        let json = pairs.next().map(optional_text).transpose()?.flatten();
        match (name, json) {
            (Some(name), Some(json)) => data.insert(name, json),
            _ => return Err(StoreError::corrupt("unpaired session data in a read reply")),
        };
    }
    Ok(data)
}

/// One field of a reply: its bytes, or `None` for nil.
fn optional_bytes(value: Value) -> Result<Option<Vec<u8>>, StoreError> {
    match value {
        Value::Nil => Ok(None),
        Value::BulkString(bytes) => Ok(Some(bytes)),
        _ => Err(StoreError::corrupt("unexpected session read reply")),
    }
}

/// The data in an `HGETALL` reply; `None` when the hash holds no record (in either layout).
pub(super) fn decode_data(
    fields: Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<Option<SessionData>, StoreError> {
    let mut live = false;
    let mut data = SessionData::new();
    for (field, value) in fields {
        if field == ID.as_bytes() || field == LEGACY_RECORD.as_bytes() {
            live = true;
        } else if let Some(name) = field.strip_prefix(DATA_PREFIX.as_bytes()) {
            let name = String::from_utf8(name.to_vec()).map_err(StoreError::corrupt)?;
            let json = String::from_utf8(value).map_err(StoreError::corrupt)?;
            data.insert(name, json);
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

/// What `HMGET` of [`READ`] answers for a hash holding `fields`, as a test builds it.
#[cfg(test)]
pub(super) fn reply_for(fields: &[(&str, &[u8])]) -> Vec<Option<Vec<u8>>> {
    READ.iter()
        .map(|name| {
            fields
                .iter()
                .rev()
                .find(|(field, _)| field == name)
                .map(|(_, value)| value.to_vec())
        })
        .collect()
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

    fn as_reply(fields: &[Field]) -> Vec<Option<Vec<u8>>> {
        let borrowed: Vec<(&str, &[u8])> = fields
            .iter()
            .map(|(name, value)| (*name, value.as_slice()))
            .collect();
        reply_for(&borrowed)
    }

    #[test]
    fn a_session_reads_back_with_its_deadline_and_live_update() {
        let record = record();
        let deadline = from_unix_millis(1_700_000_000_123);
        let mut fields = encode_session(&record, deadline, 0).unwrap();
        assert!(fields
            .iter()
            .any(|f| *f == (DEADLINE, b"1700000000123".to_vec())));
        let stored = decode_reply(as_reply(&fields)).unwrap().unwrap();
        assert_eq!(stored.expires_at, deadline);
        assert_eq!(stored.record.user().get(), r#"{"name":"x"}"#);

        let admin = RawValue::from_string(r#"{"name":"y"}"#.to_owned()).unwrap();
        fields.extend(encode_user(&admin, &["admin".to_owned()]).unwrap());
        let stored = decode_reply(as_reply(&fields)).unwrap().unwrap();
        assert_eq!(stored.record.user().get(), r#"{"name":"y"}"#);
        assert!(stored.record.has_role("admin"));
        assert_eq!(stored.record.id(), "pub");
    }

    #[test]
    fn every_value_of_a_browser_login_fits_a_listpack() {
        let user_agent = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                          Chrome/131.0.0.0 Safari/537.36";
        let profile = RawValue::from_string(format!(r#"{{"bio":"{}"}}"#, "é".repeat(80))).unwrap();
        let record = record()
            .with_user(profile, vec!["admin".to_owned()])
            .with_client(Some("2001:db8::1".to_owned()), Some(user_agent.to_owned()));
        let fields = encode_session(&record, SystemTime::now(), 12).unwrap();
        for (name, value) in &fields {
            assert!(value.len() <= CHUNK_BYTES, "{name}: {} bytes", value.len());
        }
        // The profile's two-byte characters were cut in the middle, and join back whole.
        let stored = decode_reply(as_reply(&fields)).unwrap().unwrap();
        assert!(stored.record.user().get().contains(&"é".repeat(80)));
        assert_eq!(stored.record.user_agent(), Some(user_agent));
        // The User-Agent is stored compact (see user_agent.rs): one short field.
        let agent: Vec<&Field> = fields.iter().filter(|(n, _)| n.starts_with("ua")).collect();
        assert_eq!(agent, vec![&("ua", user_agent::encode(user_agent))]);
        assert!(agent[0].1.len() < 32);
        assert_eq!(stored.record.ip(), Some("2001:db8::1"));
        assert!(stored.record.has_role("admin"));
    }

    #[test]
    fn a_value_too_long_for_its_chunks_is_kept_whole() {
        let long = "x".repeat(CHUNK_BYTES * 2 + 1);
        let record = record().with_client(None, Some(long.clone()));
        let fields = encode_session(&record, SystemTime::now(), 0).unwrap();
        let agent: Vec<&Field> = fields.iter().filter(|(n, _)| n.starts_with("ua")).collect();
        assert_eq!(agent, vec![&("ua", long.clone().into_bytes())]);
        let stored = decode_reply(as_reply(&fields)).unwrap().unwrap();
        assert_eq!(stored.record.user_agent(), Some(long.as_str()));
        // Two chunks exactly still fit, and read back whole.
        let two = "y".repeat(CHUNK_BYTES * 2);
        let record = record.with_client(None, Some(two.clone()));
        let fields = encode_session(&record, SystemTime::now(), 0).unwrap();
        assert!(fields.iter().any(|(name, _)| *name == "ua1"));
        let stored = decode_reply(as_reply(&fields)).unwrap().unwrap();
        assert_eq!(stored.record.user_agent(), Some(two.as_str()));
        // A profile has four.
        let profile = format!(r#""{}""#, "z".repeat(CHUNK_BYTES * 4 - 2));
        let record = record.with_user(RawValue::from_string(profile.clone()).unwrap(), vec![]);
        let fields = encode_session(&record, SystemTime::now(), 0).unwrap();
        assert!(fields.iter().any(|(name, _)| *name == "p3"));
        let stored = decode_reply(as_reply(&fields)).unwrap().unwrap();
        assert_eq!(stored.record.user().get(), profile);
    }

    #[test]
    fn a_session_of_the_earlier_layout_still_reads() {
        let legacy = br#"{"i":"old","u":"7","p":{"name":"x"},"c":1,"x":2,"ip":"192.0.2.1"}"#;
        let stored = decode_reply(reply_for(&[("r", legacy), ("e", b"5"), ("z", b"0")]))
            .unwrap()
            .unwrap();
        assert_eq!(stored.record.id(), "old");
        assert_eq!(stored.record.ip(), Some("192.0.2.1"));
        assert_eq!(stored.expires_at, from_unix_millis(5));
        // A live update written by this version applies to it too.
        let admin = RawValue::from_string(r#"{"name":"y"}"#.to_owned()).unwrap();
        let update = encode_user(&admin, &["admin".to_owned()]).unwrap();
        let mut fields: Vec<(&str, &[u8])> = vec![("r", legacy), ("e", b"5")];
        fields.extend(update.iter().map(|(n, v)| (*n, v.as_slice())));
        let stored = decode_reply(reply_for(&fields)).unwrap().unwrap();
        assert!(stored.record.has_role("admin"));
    }

    #[test]
    fn missing_record_is_no_session_and_broken_fields_are_corrupt_not_a_panic() {
        assert!(decode_reply(reply_for(&[])).unwrap().is_none());
        assert!(decode_reply(reply_for(&[("e", b"1"), ("p", b"{}")]))
            .unwrap()
            .is_none());
        assert!(decode_reply(vec![None; 3]).is_err());
        let good = encode_session(&record(), SystemTime::now(), 0).unwrap();
        let broken: [(&str, &[u8]); 11] = [
            ("e", b""),
            ("e", b"12x"),
            ("c", b"-1"),
            ("p", b"not json"),
            ("p", b"\xff"),
            ("g", b"{}"),
            ("k", b"\"nonsense\""),
            ("u", b"{}"),
            ("o", b"\xff"),
            ("ua", b"\x1f"),
            ("ua", b"\x00\xff"),
        ];
        for (name, value) in broken {
            let mut fields: Vec<(&str, &[u8])> =
                good.iter().map(|(n, v)| (*n, v.as_slice())).collect();
            fields.push((name, value));
            assert!(
                matches!(
                    decode_reply(reply_for(&fields)),
                    Err(StoreError::Corrupt(_))
                ),
                "{name} = {value:?}"
            );
        }
        for required in ["o", "p", "c", "x", "e"] {
            let fields: Vec<(&str, &[u8])> = good
                .iter()
                .filter(|(n, _)| *n != required)
                .map(|(n, v)| (*n, v.as_slice()))
                .collect();
            assert!(
                matches!(
                    decode_reply(reply_for(&fields)),
                    Err(StoreError::Corrupt(_))
                ),
                "without {required}"
            );
        }
    }

    #[test]
    fn a_read_with_data_takes_the_layout_then_the_data() {
        let fields = encode_session(&record(), SystemTime::now(), 9).unwrap();
        let as_values = |reply: Vec<Option<Vec<u8>>>| -> Vec<Value> {
            reply
                .into_iter()
                .map(|field| field.map_or(Value::Nil, Value::BulkString))
                .collect()
        };
        let mut reply = as_values(as_reply(&fields));
        reply.push(Value::Int(1));
        reply.push(Value::BulkString(b"cart".to_vec()));
        reply.push(Value::BulkString(b"[1]".to_vec()));
        let loaded = decode_with_data(reply.clone()).unwrap().unwrap();
        assert_eq!(loaded.stored.record.id(), "pub");
        let data = loaded.data.unwrap();
        assert_eq!(data.iter().collect::<Vec<_>>(), vec![("cart", "[1]")]);
        // Too much data to bring: the record alone.
        let mut alone = as_values(as_reply(&fields));
        alone.push(Value::Int(0));
        assert!(decode_with_data(alone).unwrap().unwrap().data.is_none());
        // A moving key, or no record: no session, whatever came along.
        let mut moving = reply.clone();
        moving[0] = Value::BulkString(b"elsewhere".to_vec());
        assert!(decode_with_data(moving).unwrap().is_none());
        let mut empty = as_values(reply_for(&[]));
        empty.push(Value::Int(1));
        assert!(decode_with_data(empty).unwrap().is_none());
        // A reply cut short, or unpaired data, is corrupt.
        assert!(decode_with_data(reply[..READ.len()].to_vec()).is_err());
        assert!(decode_with_data(reply[..reply.len() - 1].to_vec()).is_err());
    }

    #[test]
    fn data_is_read_from_its_fields_only() {
        let fields = vec![
            (b"i".to_vec(), b"x".to_vec()),
            (b"e".to_vec(), b"1".to_vec()),
            (b"z".to_vec(), b"9".to_vec()),
            (b"d:cart".to_vec(), b"[1]".to_vec()),
        ];
        let data = decode_data(fields).unwrap().unwrap();
        assert_eq!(data.iter().collect::<Vec<_>>(), vec![("cart", "[1]")]);
        assert!(decode_data(vec![(b"d:x".to_vec(), b"1".to_vec())])
            .unwrap()
            .is_none());
        // A session of the earlier layout has data too.
        assert!(decode_data(vec![(b"r".to_vec(), b"{}".to_vec())])
            .unwrap()
            .is_some());
        assert!(decode_data(vec![
            (b"r".to_vec(), b"{}".to_vec()),
            (b"d:x".to_vec(), b"\xff".to_vec())
        ])
        .is_err());
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
