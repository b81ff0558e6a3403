//! The ordering rules revocation relies on: rotation, and deletes that win races.

use std::time::{Duration, SystemTime};

use futures_util::future::{join, join_all};

use super::*;
use crate::store::SessionStore;

pub(super) async fn check_rotation(store: &impl SessionStore) {
    let user = random_name("user");
    let old = random_key();
    let new = key_beside(&old);
    let rec = record(&user, LONG);
    rule!(
        ok(
            "create",
            store
                .create(&old, &rec, in_(LONG), &SessionData::new())
                .await
        ),
        "create stores a record under a free key",
        "create of a fresh key returned false"
    );

    // Rotation moves the record to the new key, keeps it listed, and kills the old key.
    let renewed = record(&user, LONG);
    let deadline = in_(Duration::from_secs(90));
    rule!(
        ok(
            "rotate",
            store
                .rotate(&old, &new, &renewed, deadline, Carry::DataAndUser)
                .await
        ),
        "rotate moves the session to the new key",
        "rotate of a live session returned false"
    );
    let listing = ok("list", store.list(&user).await);
    rule!(
        keys_of(&listing) == [&new],
        "rotate indexes the new key before it returns",
        "after a rotation the user lists {} session(s), new key listed: {}",
        listing.live.len(),
        lists(&listing, &new)
    );
    rule!(
        ok("load", store.load(&old).await).is_none(),
        "rotate moves the session to the new key",
        "the old key still loads after a rotation"
    );
    let moved = ok("load", store.load(&new).await);
    rule!(
        moved
            .as_ref()
            .is_some_and(|s| json(&s.record) == json(&renewed)
                && distance(s.expires_at, deadline) <= CLOCK_SLACK),
        "rotate moves the session to the new key",
        "the new key holds {:?}",
        moved.map(|s| json(&s.record))
    );
    rule!(
        !ok("extend", store.extend(&old, in_(LONG)).await),
        "extend never creates",
        "extend of a rotated-away key returned true"
    );

    // Rotating a session that is gone creates nothing.
    let ghost = key_beside(&old);
    rule!(
        !ok(
            "rotate",
            store
                .rotate(&old, &ghost, &renewed, in_(LONG), Carry::DataAndUser)
                .await
        ),
        "rotate of a session that is gone fails and leaves no new record",
        "rotate from a key that no longer exists returned true"
    );
    rule!(
        ok("load", store.load(&ghost).await).is_none(),
        "rotate of a session that is gone fails and leaves no new record",
        "the failed rotation left a record under its new key"
    );
    let listing = ok("list", store.list(&user).await);
    rule!(
        keys_of(&listing) == [&new],
        "rotate of a session that is gone fails and leaves no new record",
        "after a failed rotation the user lists {} session(s)",
        listing.live.len()
    );
}

pub(super) async fn check_index_outlives_records(store: &impl SessionStore) {
    let user = random_name("user");
    let (extended, short) = (random_key(), random_key());
    let start = SystemTime::now();

    // Created with a short deadline, then extended past it: the index must follow the record's
    // absolute lifetime, not its first deadline.
    let rec = record(&user, LONG);
    let first_deadline = start + Duration::from_millis(300);
    rule!(
        ok(
            "create",
            store
                .create(&extended, &rec, first_deadline, &SessionData::new())
                .await
        ),
        "create stores a record under a free key",
        "create of a fresh key returned false"
    );
    rule!(
        ok("extend", store.extend(&extended, in_(LONG)).await),
        "extend moves the deadline",
        "extend of a live record returned false"
    );
    // A shorter-lived record indexed later must not shorten the index either.
    let brief = record(&user, Duration::from_millis(300));
    rule!(
        ok(
            "create",
            store
                .create(&short, &brief, first_deadline, &SessionData::new())
                .await
        ),
        "create stores a record under a free key",
        "create of a fresh key returned false"
    );

    sleep_until(first_deadline + Duration::from_millis(300)).await;
    rule!(
        ok("load", store.load(&extended).await).is_some(),
        "extend moves the deadline",
        "a record extended by 10 minutes expired at its first deadline"
    );
    let listing = ok("list", store.list(&user).await);
    rule!(
        keys_of(&listing) == [&extended],
        "the index outlives its records",
        "a live record is missing from its user's listing once the first deadline and a \
         shorter-lived record's lifetime have passed (listed {} session(s))",
        listing.live.len()
    );
}

pub(super) async fn check_delete_wins_over_concurrent_extends(store: &impl SessionStore) {
    let user = random_name("user");
    for _ in 0..RACE_ROUNDS {
        let key = random_key();
        let rec = record(&user, LONG);
        rule!(
            ok(
                "create",
                store
                    .create(&key, &rec, in_(LONG), &SessionData::new())
                    .await
            ),
            "create stores a record under a free key",
            "create of a fresh key returned false"
        );
        let extends = (0..10).map(|_| store.extend(&key, in_(LONG)));
        let (results, deleted) = join(join_all(extends), store.delete(&key)).await;
        rule!(
            ok("delete", deleted),
            "delete returns whether there was a record",
            "delete of a live record being extended returned false"
        );
        for result in results {
            ok("extend", result);
        }
        rule!(
            ok("load", store.load(&key).await).is_none(),
            "delete wins over concurrent extends",
            "a record deleted while being extended came back"
        );
        rule!(
            !ok("extend", store.extend(&key, in_(LONG)).await),
            "delete wins over concurrent extends",
            "extend of a deleted record returned true"
        );
    }
}

/// A session rotated again and again (as a busy client renewing it would) while a revoker
/// lists the user's sessions and deletes each live one, until a listing finds nothing live and
/// nothing dropped. Whoever deletes the old key first wins; either way no session may be left.
pub(super) async fn check_revocation_wins_over_rotation(store: &impl SessionStore) {
    for round in 0..RACE_ROUNDS {
        let user = random_name("user");
        let first = random_key();
        let rec = record(&user, LONG);
        rule!(
            ok(
                "create",
                store
                    .create(&first, &rec, in_(LONG), &SessionData::new())
                    .await
            ),
            "create stores a record under a free key",
            "create of a fresh key returned false"
        );

        let rotator = async {
            let mut keys = vec![first.clone()];
            let mut current = first.clone();
            for _ in 0..4 {
                yield_now().await;
                let next = key_beside(&current);
                keys.push(next.clone());
                if !ok(
                    "rotate",
                    store
                        .rotate(&current, &next, &rec, in_(LONG), Carry::DataAndUser)
                        .await,
                ) {
                    break;
                }
                current = next;
            }
            keys
        };
        let revoker = async {
            // Start at a different point of the rotations each round.
            for _ in 0..round % 6 {
                yield_now().await;
            }
            for _ in 0..100 {
                let listing = ok("list", store.list(&user).await);
                for (key, _) in &listing.live {
                    ok("delete", store.delete(key).await);
                }
                if listing.live.is_empty() && listing.dropped == 0 {
                    return;
                }
            }
            broken(
                "dropped entries leave the index",
                format_args!("100 listings in a row found sessions or dropped entries"),
            )
        };
        let (keys, ()) = join(rotator, revoker).await;

        for (i, key) in keys.iter().enumerate() {
            rule!(
                ok("load", store.load(key).await).is_none(),
                "revocation wins over concurrent rotation",
                "a session survived its revocation (key {} of {} in the rotation chain)",
                i + 1,
                keys.len()
            );
        }
        let listing = ok("list", store.list(&user).await);
        rule!(
            listing.live.is_empty(),
            "revocation wins over concurrent rotation",
            "{} session(s) listed after the revocation finished",
            listing.live.len()
        );
    }
}
