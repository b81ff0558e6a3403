//! Property tests for decoding what Redis hands back.
//!
//! Redis is trusted less than it seems: a shared instance, a restored dump, another version of
//! this crate or a hand edit can leave any bytes in a session's hash. Decoding must turn all of
//! them into a session, no session or `Corrupt` (a `401`), never a panic; and a session it
//! returns must hold only what the fields held. Encoding and decoding must agree on every
//! record the crate can write.
//!
//! Each property runs a modest number of cases so the suite stays fast; `PROPTEST_CASES` sets
//! them all for a long run.

use std::collections::BTreeMap;

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::codec::{
    decode, decode_data, decode_hash, decode_head, decode_named, decode_reply, encode_deadline,
    encode_record, encode_user, record_pieces, Head, Named, DEADLINE, RECORD_PIECES, SIZE, USER,
};
use crate::error::StoreError;
use crate::record::SessionRecord;
use crate::record::{from_unix_millis, unix_millis, BINARY_VERSION};
use crate::store::{LoadedSession, StoredSession};
use redis::Value;

/// `cases` for CI, unless `PROPTEST_CASES` asks for a longer run: `ProptestConfig::with_cases`
/// alone would override the variable.
fn config(cases: u32) -> ProptestConfig {
    let default = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_some() {
        default
    } else {
        ProptestConfig { cases, ..default }
    }
}

/// Everything a record tells its readers, comparable.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    id: String,
    user_id: String,
    user: String,
    created: u64,
    authenticated: u64,
    expires: u64,
    roles: Vec<String>,
    ip: Option<String>,
    user_agent: Option<String>,
    anonymous: bool,
    bearer: bool,
    remembered: bool,
    token_name: Option<String>,
    scopes: Option<Vec<String>>,
}

fn seen(record: &SessionRecord) -> Seen {
    Seen {
        id: record.id().to_owned(),
        user_id: record.user_id().to_owned(),
        user: record.user().get().to_owned(),
        created: unix_millis(record.created_at()),
        authenticated: unix_millis(record.authenticated_at()),
        expires: unix_millis(record.expires_at()),
        roles: record.roles().to_vec(),
        ip: record.ip().map(str::to_owned),
        user_agent: record.user_agent().map(str::to_owned),
        anonymous: record.is_anonymous(),
        bearer: record.is_bearer(),
        remembered: record.is_remembered(),
        token_name: record.token_name().map(str::to_owned),
        scopes: record.scopes().map(<[String]>::to_vec),
    }
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,12}",
        vec(any::<char>(), 0..12).prop_map(String::from_iter)
    ]
}

/// A profile as an app serialises one.
fn profile() -> impl Strategy<Value = Box<RawValue>> {
    prop_oneof![
        Just("null".to_owned()),
        Just("{}".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        text().prop_map(|s| serde_json::to_string(&s).unwrap()),
        (any::<u64>(), text(), vec(text(), 0..3)).prop_map(|(id, name, tags)| {
            serde_json::json!({ "id": id, "name": name, "tags": tags }).to_string()
        }),
    ]
    .prop_map(|json| RawValue::from_string(json).unwrap())
}

/// Any record the crate can write.
fn record() -> impl Strategy<Value = SessionRecord> {
    (
        (text(), text(), profile(), any::<u64>(), any::<u64>()),
        vec(text(), 0..3),
        (option::of(text()), option::of(text())),
        option::of(any::<u64>()),
        (0..4u8, any::<bool>(), text(), option::of(vec(text(), 0..3))),
    )
        .prop_map(
            |((id, user_id, user, created, expires), roles, (ip, ua), reauth, kind)| {
                let mut record = SessionRecord::new(
                    id,
                    user_id,
                    user,
                    from_unix_millis(created),
                    from_unix_millis(expires),
                )
                .with_roles(roles)
                .with_client(ip, ua);
                if let Some(at) = reauth {
                    record = record.reauthenticated(from_unix_millis(at));
                }
                match kind {
                    (0, ..) => record,
                    (1, ..) => record.remembered(),
                    (2, remembered, ..) => record.login_token(remembered),
                    (_, _, name, scopes) => record.personal_token(name, scopes, None),
                }
            },
        )
}

/// JSON objects shaped like a record, with fields missing, repeated, of the wrong type or out
/// of range.
fn record_like_json() -> impl Strategy<Value = Vec<u8>> {
    let key = select(vec![
        "i", "u", "p", "c", "a", "x", "r", "ip", "ua", "k", "zz", "I",
    ]);
    let value = select(vec![
        "\"s\"",
        "\"\"",
        "1",
        "-1",
        "1.5",
        "1e400",
        "18446744073709551615",
        "18446744073709551616",
        "null",
        "true",
        "[]",
        "[\"admin\"]",
        "[1]",
        "{}",
        "\"b\"",
        "\"r\"",
        "\"t\"",
        "{\"t\":{}}",
        "{\"t\":{\"m\":true}}",
        "{\"t\":{\"m\":1}}",
        "{\"p\":{\"n\":\"ci\"}}",
        "{\"p\":{\"n\":\"ci\",\"s\":[\"deploy\"]}}",
        "{\"p\":{\"n\":\"ci\",\"s\":null}}",
        "{\"p\":{}}",
        "{\"q\":{}}",
        "\"\\ud800\"",
        "\"\\u0000\"",
    ]);
    let complete = (
        vec(select(vec!["\"s\"", "\"\""]), 2),
        select(vec!["null", "{}", "[1]"]),
        vec(select(vec!["1", "0", "18446744073709551615"]), 2),
    )
        .prop_map(|(ids, p, times)| {
            format!(
                "\"i\":{},\"u\":{},\"p\":{p},\"c\":{},\"x\":{}",
                ids[0], ids[1], times[0], times[1]
            )
        });
    (complete, vec((key, value), 0..6), any::<bool>()).prop_map(|(base, extra, keep)| {
        let mut fields: Vec<String> = if keep { vec![base] } else { vec![] };
        fields.extend(extra.iter().map(|(k, v)| format!("\"{k}\":{v}")));
        format!("{{{}}}", fields.join(",")).into_bytes()
    })
}

/// `base` with a few bytes changed, inserted or cut off.
fn mutated(base: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (base, vec((any::<Index>(), any::<u8>(), 0..3u8), 1..4)).prop_map(|(mut bytes, edits)| {
        for (at, byte, op) in edits {
            match op {
                0 if !bytes.is_empty() => {
                    let i = at.index(bytes.len());
                    bytes[i] = byte;
                }
                1 => bytes.insert(at.index(bytes.len() + 1), byte),
                _ if !bytes.is_empty() => bytes.truncate(at.index(bytes.len())),
                _ => {}
            }
        }
        bytes
    })
}

fn encoded_record() -> impl Strategy<Value = Vec<u8>> {
    record().prop_map(|r| encode_record(&r).unwrap())
}

fn encoded_user() -> impl Strategy<Value = Vec<u8>> {
    (profile(), vec(text(), 0..3)).prop_map(|(p, r)| encode_user(&p, &r).unwrap())
}

fn record_field() -> impl Strategy<Value = Option<Vec<u8>>> {
    option::weighted(
        0.9,
        prop_oneof![
            vec(any::<u8>(), 0..64),
            encoded_record(),
            mutated(encoded_record()),
            record_like_json(),
        ],
    )
}

fn user_field() -> impl Strategy<Value = Option<Vec<u8>>> {
    option::of(prop_oneof![
        vec(any::<u8>(), 0..32),
        encoded_user(),
        mutated(encoded_user()),
        select(vec![
            "{}",
            "{\"p\":null}",
            "{\"r\":[]}",
            "{\"p\":1,\"r\":null}",
            "{\"p\":{},\"r\":[1]}",
            "{\"p\":[],\"p\":{}}",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
    ])
}

fn deadline_field() -> impl Strategy<Value = Option<Vec<u8>>> {
    option::weighted(
        0.9,
        prop_oneof![
            any::<u64>().prop_map(|n| n.to_string().into_bytes()),
            vec(any::<u8>(), 0..24),
            "[0-9]{0,25}".prop_map(String::into_bytes),
            select(vec![
                "",
                "+5",
                "-1",
                " 5",
                "5 ",
                "0x10",
                "1e3",
                "18446744073709551615",
                "18446744073709551616",
                "٣",
            ])
            .prop_map(|s| s.as_bytes().to_vec()),
        ],
    )
}

/// The fields a session's JSON is checked against, read on their own. Not `serde_json::Value`:
/// it refuses numbers past `f64` (`1e400`) in fields the record skips, where the record does not.
#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    i: String,
    #[serde(default)]
    u: String,
    #[serde(default)]
    c: u64,
    #[serde(default)]
    x: u64,
    #[serde(default)]
    r: Vec<String>,
}

/// The fields of a binary record, as its own decoder reads them without the store's user
/// agent form: what `decode` must agree with once the live update and deadline are applied.
fn probe_binary(record: &[u8]) -> Probe {
    let record = SessionRecord::decode_binary(record, |ua| std::borrow::Cow::Borrowed(ua)).unwrap();
    Probe {
        i: record.id().to_owned(),
        u: record.user_id().to_owned(),
        c: unix_millis(record.created_at()),
        x: unix_millis(record.expires_at()),
        r: record.roles().to_vec(),
    }
}

/// What a decoded session must be, given the fields it came from.
fn check_decoded(
    stored: &StoredSession,
    record: &[u8],
    user: Option<&[u8]>,
    deadline: Option<&[u8]>,
) -> Result<(), TestCaseError> {
    let deadline: u64 = std::str::from_utf8(deadline.unwrap())
        .unwrap()
        .parse()
        .unwrap();
    prop_assert_eq!(unix_millis(stored.expires_at), deadline);
    let fields: Probe = if record.first() == Some(&BINARY_VERSION) {
        probe_binary(record)
    } else {
        serde_json::from_slice(record).unwrap()
    };
    let got = &stored.record;
    prop_assert_eq!(fields.i.as_str(), got.id());
    prop_assert_eq!(fields.u.as_str(), got.user_id());
    prop_assert_eq!(fields.c, unix_millis(got.created_at()));
    prop_assert_eq!(fields.x, unix_millis(got.expires_at()));
    let (profile_from, roles) = match user {
        Some(user) => (user, serde_json::from_slice::<Probe>(user).unwrap().r),
        None => (record, fields.r),
    };
    // The profile is passed on as the very text that was stored.
    let profile = got.user().get().as_bytes();
    prop_assert!(profile_from.windows(profile.len()).any(|w| w == profile));
    prop_assert_eq!(got.roles(), roles.as_slice());
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn decode_reads_any_fields_into_a_session_nothing_or_corrupt(
        record in record_field(),
        user in user_field(),
        deadline in deadline_field(),
    ) {
        let decoded = decode(record.as_deref(), user.as_deref(), deadline.as_deref());
        match (&decoded, &record) {
            (Ok(None), None) => {}
            (Ok(None), Some(_)) => prop_assert!(false, "a record field decoded as no session"),
            (Ok(Some(_)) | Err(_), None) => {
                prop_assert!(false, "no record field, yet ok = {:?}", decoded.is_ok())
            }
            (Ok(Some(stored)), Some(bytes)) => {
                check_decoded(stored, bytes, user.as_deref(), deadline.as_deref())?;
                // Reading the record's times must not panic either, whatever they hold.
                let _ = seen(&stored.record);
            }
            (Err(err), Some(_)) => prop_assert!(matches!(err, StoreError::Corrupt(_)), "{}", err),
        }
    }

    #[test]
    fn every_record_reads_back_as_written(
        record in record(),
        deadline in any::<u64>(),
        update in option::of((profile(), vec(text(), 0..3))),
    ) {
        let encoded = encode_record(&record).unwrap();
        let deadline_text = encode_deadline(from_unix_millis(deadline));
        let user = update.as_ref().map(|(p, r)| encode_user(p, r).unwrap());
        let stored = decode(Some(&encoded), user.as_deref(), Some(deadline_text.as_bytes()))
            .unwrap()
            .unwrap();
        prop_assert_eq!(unix_millis(stored.expires_at), deadline);
        let expected = match update {
            Some((p, r)) => record.with_user(p, r),
            None => record,
        };
        prop_assert_eq!(seen(&stored.record), seen(&expected));
    }

    /// `HMGET` of the record's pieces, `u` and `e` answers ten fields, the record being its
    /// pieces put together; any other count is a protocol mix-up.
    #[test]
    fn decode_reply_wants_exactly_the_pieces_update_and_deadline(
        reply in vec(option::of(vec(any::<u8>(), 0..16)), 0..13),
        good in option::of((encoded_record(), any::<u64>())),
    ) {
        const FIELDS: usize = RECORD_PIECES.len() + 2;
        let mut reply = reply;
        if let (Some((record, deadline)), FIELDS) = (good, reply.len()) {
            for slot in &mut reply[..RECORD_PIECES.len()] {
                *slot = None;
            }
            for (i, (_, piece)) in record_pieces(&record).enumerate() {
                reply[i] = Some(piece.to_vec());
            }
            reply[FIELDS - 1] = Some(deadline.to_string().into_bytes());
        }
        let alone = (reply.len() == FIELDS).then(|| {
            let pieces = &reply[..RECORD_PIECES.len()];
            let record: Option<Vec<u8>> = pieces[0].as_ref().map(|first| {
                let mut record = first.clone();
                pieces[1..].iter().map_while(Option::as_ref).for_each(|p| record.extend(p));
                record
            });
            decode(record.as_deref(), reply[FIELDS - 2].as_deref(), reply[FIELDS - 1].as_deref())
                .map(|s| s.map(|s| (seen(&s.record), s.expires_at)))
                .map_err(|_| ())
        });
        let decoded = decode_reply(reply)
            .map(|s| s.map(|s| (seen(&s.record), s.expires_at)))
            .map_err(|_| ());
        match alone {
            Some(alone) => prop_assert_eq!(decoded, alone),
            None => prop_assert!(decoded.is_err()),
        }
    }

    /// A lookup's first `HMGET` (two pieces, `u`, `e`) decodes as the whole record would, or
    /// asks for the whole record when the second piece is full; a reply of another shape or
    /// with a value that is no bulk string is corrupt.
    #[test]
    fn decode_head_agrees_with_the_whole_record_or_asks_for_it(
        record in record_field(),
        user in user_field(),
        deadline in deadline_field(),
        not_bulk in option::of(0..4usize),
        cut in option::of(0..4usize),
    ) {
        let pieces: Vec<Option<Vec<u8>>> = match &record {
            Some(record) => record_pieces(record).map(|(_, piece)| Some(piece.to_vec())).collect(),
            None => vec![None],
        };
        let bulk = |field: &Option<Vec<u8>>| field.clone().map_or(Value::Nil, Value::BulkString);
        let mut head = vec![
            bulk(&pieces[0]),
            bulk(pieces.get(1).unwrap_or(&None)),
            bulk(&user),
            bulk(&deadline),
        ];
        if let Some(at) = not_bulk {
            head[at] = Value::Int(1);
        }
        if let Some(at) = cut {
            head.truncate(at);
        }
        let decoded = decode_head(&head);
        if not_bulk.is_some() || cut.is_some() {
            prop_assert!(matches!(decoded, Err(StoreError::Corrupt(_))));
        } else if pieces.len() > 2 || pieces.get(1).is_some_and(|p| p.as_ref().is_some_and(|p| p.len() == 64)) {
            prop_assert!(matches!(decoded, Ok(Head::Longer)), "{:?}", decoded);
        } else {
            let whole = decode(record.as_deref(), user.as_deref(), deadline.as_deref())
                .map(|s| s.map(|s| (seen(&s.record), s.expires_at)))
                .map_err(|_| ());
            let decoded = match decoded {
                Ok(Head::Read(s)) => Ok(s.map(|s| (seen(&s.record), s.expires_at))),
                Ok(Head::Longer) => return Err(TestCaseError::fail("asked for more")),
                Err(_) => Err(()),
            };
            prop_assert_eq!(decoded, whole);
        }
    }

    /// Any record, cut into pieces and read back by `HGETALL` in any order of fields, is the
    /// record again.
    #[test]
    fn a_record_in_pieces_reads_back_whole(
        (record, deadline) in (record(), any::<u32>()),
        padding in 0usize..600,
        reverse in any::<bool>(),
    ) {
        // Longer records too: every piece, and the last one taking the rest.
        let padded = format!(r#"{{"pad":"{}"}}"#, "é".repeat(padding));
        let record = record.with_user(RawValue::from_string(padded).unwrap(), Vec::new());
        let record = encode_record(&record).unwrap();
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = record_pieces(&record)
            .map(|(field, piece)| (field.as_bytes().to_vec(), piece.to_vec()))
            .collect();
        for (_, piece) in &fields[..fields.len() - 1] {
            prop_assert_eq!(piece.len(), 64);
        }
        prop_assert!(fields.len() <= RECORD_PIECES.len());
        fields.push((b"e".to_vec(), deadline.to_string().into_bytes()));
        if reverse {
            fields.reverse();
        }
        let (loaded, _) = decode_hash(fields, 4096).unwrap();
        let whole = decode(Some(&record), None, Some(deadline.to_string().as_bytes())).unwrap();
        prop_assert_eq!(
            loaded.map(|l| seen(&l.stored.record)),
            whole.map(|s| seen(&s.record))
        );
    }

    /// The data is the `d:` fields and nothing else, and only while the record is there.
    #[test]
    fn decode_data_reads_only_data_fields(
        fields in vec(
            (
                prop_oneof![
                    select(vec!["r", "e", "u", "z", "m", "d:", "d:cart", "R", "d", "r ", "d:\u{0}"])
                        .prop_map(|s| s.as_bytes().to_vec()),
                    vec(any::<u8>(), 0..8).prop_map(|name| [b"d:".as_slice(), &name].concat()),
                    vec(any::<u8>(), 0..8),
                ],
                prop_oneof![
                    vec(any::<u8>(), 0..24),
                    select(vec!["[1]", "{}", "\"x\"", "null"]).prop_map(|s| s.as_bytes().to_vec()),
                ],
            ),
            0..8,
        ),
    ) {
        let mut live = false;
        let mut unreadable = false;
        let mut expected = BTreeMap::new();
        for (field, value) in &fields {
            if field == b"r" {
                live = true;
            } else if let Some(name) = field.strip_prefix(b"d:") {
                match (std::str::from_utf8(name), std::str::from_utf8(value)) {
                    (Ok(name), Ok(value)) => {
                        expected.insert(name.to_owned(), value.to_owned());
                    }
                    _ => unreadable = true,
                }
            }
        }
        match decode_data(fields) {
            Err(err) => {
                prop_assert!(unreadable, "{}", err);
                prop_assert!(matches!(err, StoreError::Corrupt(_)));
            }
            Ok(None) => prop_assert!(!unreadable && !live),
            Ok(Some(data)) => {
                prop_assert!(!unreadable && live);
                let got: Vec<(&str, &str)> = data.iter().collect();
                let want: Vec<(&str, &str)> =
                    expected.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                prop_assert_eq!(got, want);
            }
        }
    }

    /// A lookup that asks for the data by name reads exactly what the whole hash holds, or says
    /// it must ask for all of the record's pieces (only when the last it asked for is full), or
    /// read the whole hash; the latter only when the hash holds a name not asked for or a size
    /// that disagrees with its data. Values may be any bytes (data that is no UTF-8 is left
    /// behind, never the session), and the size field right, wrong or missing.
    #[test]
    fn decode_named_agrees_with_the_whole_hash_or_asks_for_it(
        (record, deadline) in (encoded_record(), any::<u32>()),
        user in option::of(encoded_user()),
        present in vec(
            (
                select(vec!["cart", "flash", "_csrf", "", "é"]),
                prop_oneof![
                    3 => select(vec!["[1]", "\"x\"", "null", ""]).prop_map(|s| s.as_bytes().to_vec()),
                    1 => vec(any::<u8>(), 0..12),
                ],
            ),
            0..4,
        ),
        // All the names present, all but one, or any names.
        (ask, left_out, any_names) in (
            0..3u8,
            any::<Index>(),
            vec(select(vec!["cart", "flash", "_csrf", "", "é", "other"]), 0..6),
        ),
        size_error in prop_oneof![
            3 => Just(Some(0i64)),
            1 => Just(None),
            1 => (-80i64..80).prop_map(Some),
        ],
        max_data in select(vec![0usize, 70, 4096]),
        // The first read's two pieces, or the second read's four.
        pieces in select(vec![2usize, RECORD_PIECES.len()]),
    ) {
        let present: BTreeMap<&str, Vec<u8>> = present.into_iter().collect();
        let mut asked: Vec<&str> = match ask {
            0 => present.keys().copied().collect(),
            1 => {
                let mut names: Vec<&str> = present.keys().copied().collect();
                if !names.is_empty() {
                    names.remove(left_out.index(names.len()));
                }
                names
            }
            _ => any_names,
        };
        asked.sort_unstable();
        asked.dedup();
        let true_size: i64 = present
            .iter()
            .map(|(name, value)| (name.len() + value.len() + crate::record::ENTRY_OVERHEAD) as i64)
            .sum();
        let size = size_error.map(|error| (true_size + error).max(0));
        let mut hash: Vec<(Vec<u8>, Vec<u8>)> = record_pieces(&record)
            .map(|(field, piece)| (field.as_bytes().to_vec(), piece.to_vec()))
            .collect();
        hash.push((b"e".to_vec(), deadline.to_string().into_bytes()));
        if let Some(user) = &user {
            hash.push((b"u".to_vec(), user.clone()));
        }
        if let Some(size) = size {
            hash.push((b"z".to_vec(), size.to_string().into_bytes()));
        }
        for (name, value) in &present {
            hash.push((format!("d:{name}").into_bytes(), value.clone()));
        }
        let fields: Vec<String> = asked.iter().map(|name| format!("d:{name}")).collect();
        let reply: Vec<Value> = RECORD_PIECES[..pieces]
            .iter()
            .chain(&[USER, DEADLINE, SIZE])
            .map(|field| field.to_string())
            .chain(fields.iter().cloned())
            .map(|field| {
                hash.iter()
                    .find(|(f, _)| *f == field.as_bytes())
                    .map_or(Value::Nil, |(_, v)| Value::BulkString(v.clone()))
            })
            .collect();

        let named = decode_named(&reply, pieces, &fields, max_data);
        // The last piece asked for is full: the record may go on past it. The lookup asks for
        // more of it unless it must read the whole hash anyway.
        let written: Vec<&[u8]> = record_pieces(&record).map(|(_, piece)| piece).collect();
        let longer = pieces < RECORD_PIECES.len() && written.get(pieces - 1).is_some_and(|p| p.len() == 64);
        if longer {
            prop_assert!(matches!(named, Ok(Named::Longer | Named::Incomplete)), "{:?}", named);
        }
        let whole = decode_hash(hash.clone(), max_data);
        let shown = |loaded: Option<LoadedSession>| {
            loaded.map(|l| (seen(&l.stored.record), l.stored.expires_at, l.data))
        };
        let unasked = present.keys().any(|name| !asked.contains(name));
        let readable = present.values().all(|value| std::str::from_utf8(value).is_ok());
        if size == Some(true_size) && true_size <= max_data as i64 && readable {
            // The size as every write keeps it: the whole answer exactly when nothing was left
            // out.
            prop_assert_eq!(matches!(named, Ok(Named::Incomplete)), unasked, "{:?}", named);
        }
        if size.is_none() {
            // No writer leaves it out: nothing vouches for the data.
            prop_assert!(matches!(named, Ok(Named::Incomplete)), "{:?}", named);
        }
        match named {
            Ok(Named::Read(loaded, read_size)) => {
                let data = loaded.as_ref().and_then(|l| l.data.clone()).unwrap_or_default();
                // Whatever was read is only what the hash holds.
                for (name, value) in data.iter() {
                    prop_assert_eq!(present.get(name).map(Vec::as_slice), Some(value.as_bytes()));
                }
                // An asked-for value that is no UTF-8 leaves the data behind, not the session.
                let unreadable_asked = asked.iter().any(|name| present
                    .get(name)
                    .is_some_and(|value| std::str::from_utf8(value).is_err()));
                if unreadable_asked {
                    prop_assert!(loaded.as_ref().is_some_and(|l| l.data.is_none()));
                }
                match whole {
                    Ok((whole, whole_size)) => {
                        prop_assert_eq!(read_size, whole_size);
                        let complete =
                            whole_size > max_data || (!unasked && size == Some(true_size));
                        if complete {
                            prop_assert_eq!(shown(loaded), shown(whole));
                        }
                    }
                    Err(err) => prop_assert!(false, "the whole hash: {}", err),
                }
            }
            Ok(Named::Incomplete) => {
                prop_assert!(unasked || size != Some(true_size), "asked {:?} of {:?}", asked, present);
            }
            Ok(Named::Longer) => prop_assert!(longer, "asked for more of a record that fits"),
            // The record is sound: no data, readable or not, makes the session unreadable.
            Err(err) => prop_assert!(false, "{}", err),
        }
        if let Ok((Some(whole), _)) = decode_hash(hash, max_data) {
            if !readable {
                prop_assert!(whole.data.is_none(), "data that is no UTF-8 read whole");
            }
        }
    }

    /// A record field on its own, binary or JSON as earlier builds wrote it: any bytes decode
    /// or fail, and what decodes writes back, in binary, to the same record.
    #[test]
    fn a_record_decodes_or_fails_and_what_decodes_is_stable(
        bytes in prop_oneof![
            vec(any::<u8>(), 0..96),
            prop::collection::vec(any::<u8>(), 0..96).prop_map(|mut bytes| {
                bytes.insert(0, BINARY_VERSION);
                bytes
            }),
            encoded_record(),
            record_like_json(),
            mutated(encoded_record()),
            mutated(record_like_json()),
        ],
    ) {
        if let Ok(Some(stored)) = decode(Some(&bytes), None, Some(b"1")) {
            let again = encode_record(&stored.record).unwrap();
            let back = decode(Some(&again), None, Some(b"1")).unwrap().unwrap();
            prop_assert_eq!(seen(&back.record), seen(&stored.record));
            prop_assert_eq!(encode_record(&back.record).unwrap(), again);
        }
    }
}

/// An activity list element as a foreign writer might leave it: the crate's compact JSON
/// with any values (user agents with private-use chars included), JSON of another shape, or
/// any text.
fn activity_elements() -> impl Strategy<Value = String> {
    let json = (
        select(vec!["login", "new_device", "logout", "something_new", ""]),
        prop_oneof![
            any::<u64>().prop_map(serde_json::Value::from),
            Just(serde_json::json!(-1)),
            Just(serde_json::json!("x")),
        ],
        option::of(".{0,20}"),
        option::of("[\u{e000}-\u{e0ff}a-z]{0,8}"),
        option::of(".{0,20}"),
        select(vec!["i", "x"]),
    )
        .prop_map(|(kind, at, ip, ua, session, id_key)| {
            let mut element =
                serde_json::json!({"k": kind, "t": at, "a": ip, "u": ua, "s": session});
            element[id_key] = serde_json::json!("id");
            element.to_string()
        });
    prop_oneof![json, ".{0,40}"]
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn activity_entries_decode_or_are_skipped_never_panic(raw in activity_elements()) {
        if let Some(entry) = super::activity::decode_entry(&raw) {
            prop_assert_eq!(entry.id.as_str(), "id");
            prop_assert!(raw.contains(r#""k""#));
        }
    }
}
