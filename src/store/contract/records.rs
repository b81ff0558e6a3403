//! The contract for one record and for the user index: create, load, extend, delete, list.

use std::time::{Duration, SystemTime};

use super::*;
use crate::store::{SessionStore, StoredSession};

pub(super) async fn check_records(store: &impl SessionStore) {
    let key = random_key();
    let user = random_name("user");
    let rec = record(&user, LONG);
    let deadline = in_(Duration::from_secs(60));

    rule!(
        ok("load", store.load(&key).await).is_none(),
        "load of an unknown key gives None",
        "a key never created loaded a record"
    );
    rule!(
        !ok("extend", store.extend(&key, deadline).await),
        "extend never creates",
        "extend of a key never created returned true"
    );
    rule!(
        ok("load", store.load(&key).await).is_none(),
        "extend never creates",
        "extend of a key never created stored a record"
    );
    rule!(
        !ok("delete", store.delete(&key).await),
        "delete returns whether there was a record",
        "delete of a key never created returned true"
    );

    rule!(
        ok(
            "create",
            store
                .create(&key, &rec, deadline, &SessionData::new())
                .await
        ),
        "create stores a record under a free key",
        "create of a fresh key returned false"
    );
    let Some(StoredSession {
        record: loaded,
        expires_at,
    }) = ok("load", store.load(&key).await)
    else {
        broken(
            "load returns the record as created",
            format_args!("a record just created loaded as None"),
        )
    };
    rule!(
        json(&loaded) == json(&rec),
        "load returns the record as created",
        "stored {} but loaded {}",
        json(&rec),
        json(&loaded)
    );
    rule!(
        distance(expires_at, deadline) <= CLOCK_SLACK,
        "load reports the deadline it was given",
        "created with a deadline {:?} from now, loaded with one {:?} away from it",
        deadline
            .duration_since(SystemTime::now())
            .unwrap_or_default(),
        distance(expires_at, deadline)
    );

    // A second create under the same key is refused and changes nothing: not the record, not
    // its deadline, not the other user's sessions.
    let intruder = random_name("intruder");
    let other = record(&intruder, LONG);
    rule!(
        !ok(
            "create",
            store
                .create(&key, &other, in_(LONG), &SessionData::new())
                .await
        ),
        "create refuses a taken key",
        "a second create under the same key returned true"
    );
    let after = ok("load", store.load(&key).await);
    rule!(
        after
            .as_ref()
            .is_some_and(|s| json(&s.record) == json(&rec)),
        "a refused create leaves the record untouched",
        "the record under the key is now {:?}",
        after.as_ref().map(|s| json(&s.record))
    );
    rule!(
        after
            .as_ref()
            .is_some_and(|s| distance(s.expires_at, deadline) <= CLOCK_SLACK),
        "a refused create leaves the record untouched",
        "the refused create moved the deadline"
    );
    let listing = ok("list", store.list(&intruder).await);
    rule!(
        listing.live.is_empty(),
        "list returns only the user's live sessions",
        "the user of a refused create lists {} session(s)",
        listing.live.len()
    );

    // extend moves the deadline both ways.
    let sooner = in_(Duration::from_secs(5));
    rule!(
        ok("extend", store.extend(&key, sooner).await),
        "extend moves the deadline",
        "extend of a live record returned false"
    );
    let moved = ok("load", store.load(&key).await).map(|s| s.expires_at);
    rule!(
        moved.is_some_and(|at| distance(at, sooner) <= CLOCK_SLACK),
        "extend moves the deadline",
        "extended to 5 s from now, loaded {:?}",
        moved.map(|at| at.duration_since(SystemTime::now()).unwrap_or_default())
    );
    let later = in_(Duration::from_secs(120));
    rule!(
        ok("extend", store.extend(&key, later).await),
        "extend moves the deadline",
        "extend of a live record returned false"
    );
    let moved = ok("load", store.load(&key).await).map(|s| s.expires_at);
    rule!(
        moved.is_some_and(|at| distance(at, later) <= CLOCK_SLACK),
        "extend moves the deadline",
        "extended to 120 s from now, loaded {:?}",
        moved.map(|at| at.duration_since(SystemTime::now()).unwrap_or_default())
    );

    // delete reports whether there was a record, and a deleted record stays deleted.
    rule!(
        ok("delete", store.delete(&key).await),
        "delete returns whether there was a record",
        "delete of a live record returned false"
    );
    rule!(
        !ok("delete", store.delete(&key).await),
        "delete returns whether there was a record",
        "a second delete returned true"
    );
    rule!(
        ok("load", store.load(&key).await).is_none(),
        "load of a deleted record gives None",
        "a deleted record still loads"
    );
    rule!(
        !ok("extend", store.extend(&key, in_(LONG)).await),
        "extend never creates",
        "extend of a deleted record returned true"
    );
    rule!(
        ok("load", store.load(&key).await).is_none(),
        "extend never creates",
        "extend brought a deleted record back"
    );

    // Records vanish at their deadline, cannot be extended afterwards, and free their key.
    let short = random_key();
    let rec = record(&user, LONG);
    let deadline = in_(Duration::from_millis(300));
    rule!(
        ok(
            "create",
            store
                .create(&short, &rec, deadline, &SessionData::new())
                .await
        ),
        "create stores a record under a free key",
        "create of a fresh key returned false"
    );
    rule!(
        ok("load", store.load(&short).await).is_some(),
        "load returns the record as created",
        "a record with 300 ms to live loaded as None at once"
    );
    sleep_until(deadline + EXPIRY_SLACK).await;
    rule!(
        ok("load", store.load(&short).await).is_none(),
        "load of an expired record gives None",
        "a record still loads {EXPIRY_SLACK:?} after its deadline"
    );
    rule!(
        !ok("extend", store.extend(&short, in_(LONG)).await),
        "extend never creates",
        "extend of an expired record returned true"
    );
    rule!(
        ok("load", store.load(&short).await).is_none(),
        "extend never creates",
        "extend brought an expired record back"
    );
    rule!(
        ok(
            "create",
            store
                .create(&short, &rec, in_(LONG), &SessionData::new())
                .await
        ),
        "an expired key is free again",
        "create under the key of an expired record returned false"
    );
}

pub(super) async fn check_index(store: &impl SessionStore) {
    let user = random_name("user");
    let someone_else = random_name("user");
    let (a, b, c, other) = (random_key(), random_key(), random_key(), random_key());

    // Indexed as soon as create returns: listed right away.
    for key in [&a, &b] {
        rule!(
            ok(
                "create",
                store
                    .create(key, &record(&user, LONG), in_(LONG), &SessionData::new())
                    .await
            ),
            "create stores a record under a free key",
            "create of a fresh key returned false"
        );
        let listing = ok("list", store.list(&user).await);
        rule!(
            lists(&listing, key),
            "a record is indexed before create returns",
            "a session just created is missing from its user's listing"
        );
    }
    let expiring = in_(Duration::from_millis(300));
    rule!(
        ok(
            "create",
            store
                .create(&c, &record(&user, LONG), expiring, &SessionData::new())
                .await
        ),
        "create stores a record under a free key",
        "create of a fresh key returned false"
    );
    rule!(
        ok(
            "create",
            store
                .create(
                    &other,
                    &record(&someone_else, LONG),
                    in_(LONG),
                    &SessionData::new()
                )
                .await
        ),
        "create stores a record under a free key",
        "create of a fresh key returned false"
    );

    let listing = ok("list", store.list(&user).await);
    let mut listed: Vec<&str> = keys_of(&listing).iter().map(|k| k.as_str()).collect();
    listed.sort_unstable();
    let mut expected = vec![a.as_str(), b.as_str(), c.as_str()];
    expected.sort_unstable();
    rule!(
        listed == expected,
        "list returns only the user's live sessions",
        "created 3 sessions for the user (and 1 for another), listed {listed:?}"
    );
    rule!(
        listing.dropped == 0,
        "list drops and counts entries whose record is gone",
        "nothing was deleted, yet {} entries were dropped",
        listing.dropped
    );
    rule!(
        listing.live.iter().all(|(_, s)| s.record.user_id() == user),
        "list returns only the user's live sessions",
        "a listed record belongs to another user"
    );

    // A deleted or expired session is dropped from the listing, and counted at most once.
    rule!(
        ok("delete", store.delete(&b).await),
        "delete returns whether there was a record",
        "delete of a live record returned false"
    );
    sleep_until(expiring + EXPIRY_SLACK).await;
    let listing = ok("list", store.list(&user).await);
    rule!(
        keys_of(&listing) == [&a],
        "list drops and counts entries whose record is gone",
        "after one delete and one expiry, listed {} session(s) instead of 1",
        listing.live.len()
    );
    rule!(
        listing.dropped <= 2,
        "list drops and counts entries whose record is gone",
        "{} entries dropped, but only 2 sessions ended",
        listing.dropped
    );
    let listing = ok("list", store.list(&user).await);
    rule!(
        listing.dropped == 0 && keys_of(&listing) == [&a],
        "dropped entries leave the index",
        "a second listing dropped {} entries and listed {} session(s)",
        listing.dropped,
        listing.live.len()
    );

    // An entry whose key now holds another user's record: deleted, then the key created again
    // for someone else. The first user must not list it.
    rule!(
        ok("delete", store.delete(&a).await),
        "delete returns whether there was a record",
        "delete of a live record returned false"
    );
    rule!(
        ok(
            "create",
            store
                .create(
                    &a,
                    &record(&someone_else, LONG),
                    in_(LONG),
                    &SessionData::new()
                )
                .await
        ),
        "an expired key is free again",
        "create under the key of a deleted record returned false"
    );
    let listing = ok("list", store.list(&user).await);
    rule!(
        listing.live.is_empty(),
        "list drops entries whose record belongs to another user",
        "the user lists {} session(s) after their last was deleted and its key reused",
        listing.live.len()
    );
    rule!(
        listing.dropped <= 1,
        "list drops and counts entries whose record is gone",
        "{} entries dropped, but only 1 session ended",
        listing.dropped
    );
    let listing = ok("list", store.list(&user).await);
    rule!(
        listing.dropped == 0 && listing.live.is_empty(),
        "dropped entries leave the index",
        "a second listing dropped {} entries and listed {} session(s)",
        listing.dropped,
        listing.live.len()
    );
    let listing = ok("list", store.list(&someone_else).await);
    let mut listed: Vec<&str> = keys_of(&listing).iter().map(|k| k.as_str()).collect();
    listed.sort_unstable();
    let mut expected = vec![a.as_str(), other.as_str()];
    expected.sort_unstable();
    rule!(
        listed == expected,
        "a record is indexed before create returns",
        "the other user should list both their sessions, listed {listed:?}"
    );
}

pub(super) async fn check_credentials_versions(store: &impl SessionStore) {
    let user = random_name("user");
    let fresh = ok(
        "credentials_version",
        store.credentials_version(&user).await,
    );
    rule!(
        fresh.is_none(),
        "a user whose credentials never changed has no credentials version",
        "a fresh user already has one"
    );
    ok(
        "set_credentials_version",
        store.set_credentials_version(&user, "v1", LONG).await,
    );
    let first = ok(
        "credentials_version",
        store.credentials_version(&user).await,
    );
    rule!(
        first.as_deref() == Some("v1"),
        "a credentials version is readable once set_credentials_version returns",
        "read back {first:?}"
    );
    ok(
        "set_credentials_version",
        store.set_credentials_version(&user, "v2", LONG).await,
    );
    let second = ok(
        "credentials_version",
        store.credentials_version(&user).await,
    );
    rule!(
        second.as_deref() == Some("v2"),
        "a new credentials version replaces the old one",
        "read back {second:?}"
    );
    let brief = Duration::from_millis(300);
    let other = random_name("user");
    ok(
        "set_credentials_version",
        store.set_credentials_version(&other, "v1", brief).await,
    );
    sleep_until(in_(brief + EXPIRY_SLACK)).await;
    let expired = ok(
        "credentials_version",
        store.credentials_version(&other).await,
    );
    rule!(
        expired.is_none(),
        "a credentials version is forgotten after keep_for",
        "still read {expired:?} after it should have gone"
    );
}
