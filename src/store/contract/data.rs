//! The contract for a session's data, anonymous sessions and live updates of the user.

use std::time::Duration;

use futures_util::future::{join, join_all};

use super::*;
use crate::record::DataChange;
use crate::store::{DataWrite, SessionStore};

/// The data limit the checks write against.
const LIMIT: usize = 4096;

fn insert(name: &str, json: &str) -> DataChange {
    DataChange::Insert {
        name: name.to_owned(),
        json: json.to_owned(),
    }
}

fn remove(name: &str) -> DataChange {
    DataChange::Remove {
        name: name.to_owned(),
    }
}

async fn data_of(store: &impl SessionStore, key: &SessionKey) -> Option<SessionData> {
    ok("load_data", store.load_data(key).await)
}

pub(super) async fn check_data(store: &impl SessionStore) {
    let key = random_key();
    let user = random_name("user");
    let mut initial = SessionData::new();
    initial.insert("start", r#"{"at":1}"#);
    rule!(
        ok(
            "create",
            store
                .create(&key, &record(&user, LONG), in_(LONG), &initial)
                .await
        ),
        "create stores a record under a free key",
        "create of a fresh key returned false"
    );
    rule!(
        data_of(store, &key).await.as_ref() == Some(&initial),
        "create stores the data it is given",
        "created with {initial:?}, loaded {:?}",
        data_of(store, &key).await
    );

    let written = ok(
        "write_data",
        store
            .write_data(
                &key,
                &[
                    insert("cart", "[1]"),
                    insert("cart", "[1,2]"),
                    remove("start"),
                ],
                LIMIT,
            )
            .await,
    );
    rule!(
        written == DataWrite::Written(vec![None, Some("[1]".into()), Some(r#"{"at":1}"#.into())]),
        "a data write applies its changes in order and returns what each replaced",
        "got {written:?}"
    );
    let data = data_of(store, &key).await.unwrap_or_default();
    rule!(
        data.iter().collect::<Vec<_>>() == [("cart", "[1,2]")],
        "a data write applies its changes in order and returns what each replaced",
        "the data is {data:?}"
    );

    // Past the limit nothing is written, not even the changes that fit.
    let big = format!("\"{}\"", "x".repeat(LIMIT));
    let refused = ok(
        "write_data",
        store
            .write_data(&key, &[insert("small", "1"), insert("big", &big)], LIMIT)
            .await,
    );
    rule!(
        matches!(refused, DataWrite::TooLarge { size } if size > LIMIT),
        "a write past the limit is refused whole",
        "a write past the limit answered {refused:?}"
    );
    let data = data_of(store, &key).await.unwrap_or_default();
    rule!(
        data.get("small").is_none() && data.get("big").is_none(),
        "a write past the limit is refused whole",
        "part of a refused write was kept: {data:?}"
    );
    // A write that shrinks the data fits, whatever the limit.
    let shrunk = ok(
        "write_data",
        store.write_data(&key, &[remove("cart")], 0).await,
    );
    rule!(
        matches!(shrunk, DataWrite::Written(_)),
        "a write that does not grow the data always fits",
        "a removal under a zero limit answered {shrunk:?}"
    );

    // The deadline and the data change independently.
    ok(
        "write_data",
        store
            .write_data(&key, &[insert("kept", "true")], LIMIT)
            .await,
    );
    ok("extend", store.extend(&key, in_(LONG)).await);
    rule!(
        data_of(store, &key)
            .await
            .is_some_and(|d| d.get("kept") == Some("true")),
        "extend never reverts a data write",
        "a value written before an extend was gone after it"
    );

    ok(
        "write_data",
        store.write_data(&key, &[DataChange::Clear], LIMIT).await,
    );
    rule!(
        data_of(store, &key).await == Some(SessionData::new()),
        "clear removes every value and keeps the session",
        "after a clear the data is {:?}",
        data_of(store, &key).await
    );

    // Gone is gone: a write never brings a session back.
    ok("delete", store.delete(&key).await);
    let late = ok(
        "write_data",
        store.write_data(&key, &[insert("late", "1")], LIMIT).await,
    );
    rule!(
        late == DataWrite::Gone && ok("load", store.load(&key).await).is_none(),
        "a data write never brings a session back",
        "a write after delete answered {late:?}"
    );
    rule!(
        data_of(store, &key).await.is_none(),
        "a data write never brings a session back",
        "a deleted session still has data"
    );
}

/// Many requests writing different names of one session at once: every write survives.
pub(super) async fn check_concurrent_data_writes(store: &impl SessionStore) {
    for _ in 0..RACE_ROUNDS / 4 {
        let key = random_key();
        let rec = record(&random_name("user"), LONG);
        ok(
            "create",
            store
                .create(&key, &rec, in_(LONG), &SessionData::new())
                .await,
        );
        let writes = (0..16).map(|n| {
            let key = &key;
            async move {
                yield_now().await;
                let name = format!("n{n}");
                ok(
                    "write_data",
                    store.write_data(key, &[insert(&name, "1")], LIMIT).await,
                )
            }
        });
        let refreshes = (0..4).map(|_| async {
            yield_now().await;
            ok("extend", store.extend(&key, in_(LONG)).await)
        });
        join(join_all(writes), join_all(refreshes)).await;
        let data = data_of(store, &key).await.unwrap_or_default();
        rule!(
            data.len() == 16,
            "concurrent writes of different names all survive",
            "16 concurrent writes and 4 refreshes left {} values: {data:?}",
            data.len()
        );
    }
}

/// Rotation carries the data, and the profile as `carry` says; the old key takes no more
/// writes; a live update shows on load and survives a rotation.
pub(super) async fn check_data_moves_with_the_session(store: &impl SessionStore) {
    let user = random_name("user");
    let old = random_key();
    let rec = record(&user, LONG);
    let mut data = SessionData::new();
    data.insert("cart", "[7]");
    ok("create", store.create(&old, &rec, in_(LONG), &data).await);

    let admin = RawValue::from_string(r#"{"name":"promoted"}"#.to_owned()).expect("a JSON object");
    let roles = vec!["admin".to_owned()];
    rule!(
        ok("update_user", store.update_user(&old, &admin, &roles).await),
        "update_user replaces the profile and roles of a live session",
        "update_user of a live session returned false"
    );
    let updated = ok("load", store.load(&old).await);
    rule!(
        updated
            .as_ref()
            .is_some_and(|s| s.record.user().get() == admin.get()
                && s.record.roles() == roles
                && s.record.id() == rec.id()),
        "update_user replaces the profile and roles of a live session",
        "after an update the session loads as {:?}",
        updated.map(|s| json(&s.record))
    );

    let renewed = key_beside(&old);
    rule!(
        ok(
            "rotate",
            store
                .rotate(&old, &renewed, &rec, in_(LONG), Carry::DataAndUser)
                .await
        ),
        "rotate moves the session to the new key",
        "rotate of a live session returned false"
    );
    let moved = ok("load", store.load(&renewed).await);
    rule!(
        moved
            .as_ref()
            .is_some_and(|s| s.record.user().get() == admin.get() && s.record.roles() == roles),
        "a rotation that carries the user keeps a live update",
        "after the rotation the session loads as {:?}",
        moved.map(|s| json(&s.record))
    );
    rule!(
        data_of(store, &renewed).await.as_ref() == Some(&data),
        "rotate carries the data",
        "the new key holds {:?}",
        data_of(store, &renewed).await
    );
    let late = ok(
        "write_data",
        store.write_data(&old, &[insert("late", "1")], LIMIT).await,
    );
    rule!(
        late == DataWrite::Gone && data_of(store, &old).await.is_none(),
        "a data write never brings a session back",
        "a write to a rotated-away key answered {late:?}"
    );
    rule!(
        !ok("update_user", store.update_user(&old, &admin, &roles).await),
        "update_user never creates",
        "update_user of a rotated-away key returned true"
    );

    // A login that keeps the data brings its own profile.
    let login = key_beside(&renewed);
    let fresh = record(&user, LONG);
    ok(
        "rotate",
        store
            .rotate(&renewed, &login, &fresh, in_(LONG), Carry::Data)
            .await,
    );
    let logged_in = ok("load", store.load(&login).await);
    rule!(
        logged_in
            .as_ref()
            .is_some_and(|s| json(&s.record) == json(&fresh)),
        "a rotation that carries only the data stores the record it is given",
        "after the rotation the session loads as {:?}",
        logged_in.map(|s| json(&s.record))
    );
    rule!(
        data_of(store, &login).await.as_ref() == Some(&data),
        "rotate carries the data",
        "the new key holds {:?}",
        data_of(store, &login).await
    );
}

/// An anonymous session holds data, belongs to nobody's index, and can turn into a login.
pub(super) async fn check_anonymous_sessions(store: &impl SessionStore) {
    let key = random_key();
    let now = SystemTime::now();
    let visitor = SessionRecord::anonymous(random_name("id"), now, now + LONG);
    let mut data = SessionData::new();
    data.insert("cart", r#"["tea"]"#);
    ok(
        "create",
        store.create(&key, &visitor, in_(LONG), &data).await,
    );
    let loaded = ok("load", store.load(&key).await);
    rule!(
        loaded.as_ref().is_some_and(|s| s.record.is_anonymous()),
        "an anonymous session loads as anonymous",
        "loaded {:?}",
        loaded.map(|s| json(&s.record))
    );
    let listing = ok("list", store.list("").await);
    rule!(
        listing.live.is_empty(),
        "an anonymous session is in no index",
        "listing the empty user id found {} session(s)",
        listing.live.len()
    );

    let user = random_name("user");
    let login = key_beside(&key);
    ok(
        "rotate",
        store
            .rotate(&key, &login, &record(&user, LONG), in_(LONG), Carry::Data)
            .await,
    );
    let listing = ok("list", store.list(&user).await);
    rule!(
        keys_of(&listing) == [&login] && data_of(store, &login).await.as_ref() == Some(&data),
        "a login from an anonymous session keeps its data and is indexed",
        "the user lists {} session(s); the new key holds {:?}",
        listing.live.len(),
        data_of(store, &login).await
    );
    rule!(
        ok("load", store.load(&key).await).is_none(),
        "rotate moves the session to the new key",
        "the anonymous key still loads after the login"
    );
}

/// The bound on new anonymous sessions counts like a throttle.
pub(super) async fn check_anonymous_admission(store: &impl SessionStore) {
    let name = random_name("anon");
    let counter = Counter {
        name: &name,
        max: 2,
        window: Duration::from_secs(60),
    };
    for attempt in 0..2 {
        let admitted = ok("admit_anonymous", store.admit_anonymous(&[counter]).await);
        rule!(
            admitted == Admission::Admitted,
            "admit_anonymous admits up to max",
            "attempt {attempt} of 2 answered {admitted:?}"
        );
    }
    let third = ok("admit_anonymous", store.admit_anonymous(&[counter]).await);
    rule!(
        matches!(third, Admission::Refused { retry_after } if retry_after <= Duration::from_secs(60)),
        "admit_anonymous refuses past max",
        "the third of 2 answered {third:?}"
    );
}

/// `load_with_data` agrees with `load` and `load_data`: the same record and deadline, the data
/// as a write left it when it comes along, and nothing for a session that is gone.
pub(super) async fn check_load_with_data(store: &impl SessionStore) {
    let key = random_key();
    let user = random_name("user");
    let record = record(&user, LONG);
    let mut initial = SessionData::new();
    initial.insert("cart", "[1]");
    ok(
        "create",
        store.create(&key, &record, in_(LONG), &initial).await,
    );
    ok(
        "write_data",
        store
            .write_data(&key, &[insert("theme", r#""dark""#)], LIMIT)
            .await,
    );
    let loaded = ok("load_with_data", store.load_with_data(&key).await);
    let stored = ok("load", store.load(&key).await);
    match (&loaded, &stored) {
        (Some(loaded), Some(stored)) => {
            rule!(
                json(&loaded.stored.record) == json(&stored.record)
                    && loaded.stored.expires_at == stored.expires_at,
                "load_with_data reads the record load reads",
                "{:?} against {:?}",
                loaded.stored,
                stored
            );
            if let Some(data) = &loaded.data {
                rule!(
                    Some(data) == data_of(store, &key).await.as_ref(),
                    "data that comes with the record is the session's data",
                    "came {data:?}, load_data reads {:?}",
                    data_of(store, &key).await
                );
            }
        }
        _ => broken(
            "load_with_data finds a live session",
            format_args!("load_with_data {loaded:?}, load {stored:?}"),
        ),
    }
    ok("delete", store.delete(&key).await);
    let gone = ok("load_with_data", store.load_with_data(&key).await);
    rule!(
        gone.is_none(),
        "load_with_data finds nothing once the session is deleted",
        "found {gone:?}"
    );
}
