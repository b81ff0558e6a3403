//! The [`SessionStore`] and [`ThrottleStore`] contracts as checks that a backend runs from its
//! own tests.
//!
//! The traits' documentation states what a backend must do; these functions drive a store
//! through it and panic, naming the rule that was broken, at the first thing it gets wrong.
//! They check the ordering that revocation relies on by racing the operations against each
//! other, not only by calling them one after another, so run them against the real backend
//! (a real server, not a mock of one).
//!
//! Each function takes `new_store`, called once per group of checks. A fresh, empty store is
//! simplest; a store shared with other tests also works, since every check makes up its own
//! random keys, users and counter names.
//!
//! The checks wait on [`tokio::time::sleep`] (records must expire, windows must end), so they
//! need a Tokio runtime with its timer, as `#[actix_web::test]` and `#[tokio::test]` provide.
//! Together they take a few seconds.
//!
//! # Example
//!
//! The module exists with the `test-util` feature, which a backend turns on for its tests only:
//!
//! ```toml
//! [dev-dependencies]
//! actix-login = { version = "0.1", features = ["test-util"] }
//! ```
//!
//! A backend's test module, here with the crate's own [`MemoryStore`] standing in for the
//! backend:
//!
//! ```
//! use actix_login::store::contract::{check_session_store, check_throttle_store};
//! use actix_login::MemoryStore;
//!
//! // In a test suite this is an async test: `#[actix_web::test]` or `#[tokio::test]`.
//! async fn memory_store_keeps_the_contract() {
//!     check_session_store(|| async { MemoryStore::new() }).await;
//!     check_throttle_store(|| async { MemoryStore::new() }).await;
//! }
//! # actix_web::rt::System::new().block_on(memory_store_keeps_the_contract());
//! ```
//!
//! [`MemoryStore`]: crate::MemoryStore

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use futures_util::future::{join, join_all};
use serde_json::value::RawValue;

use crate::store::{Admission, Counter, SessionStore, StoredSession, ThrottleStore, UserSessions};
use crate::{SessionKey, SessionRecord, StoreError};

/// Longer than any check runs: the absolute lifetime of the records the checks create, and the
/// deadline of those that should not expire during a check.
const LONG: Duration = Duration::from_secs(600);

/// How far a reported deadline may stray from the one the store was given: stores that keep
/// relative TTLs convert with their own clock.
const CLOCK_SLACK: Duration = Duration::from_secs(2);

/// How long after its deadline an expired record may still be seen.
const EXPIRY_SLACK: Duration = Duration::from_millis(150);

/// Rounds of each race; every round is a fresh session.
const RACE_ROUNDS: usize = 20;

/// Runs every [`SessionStore`] check, each group on a store from `new_store`.
///
/// Checked, in this order:
///
/// - **records**: `create` stores a record under a free key and refuses a taken one, leaving
///   it untouched; `load` returns the record as created with the deadline it was given, and
///   `None` for a key never created, deleted or expired; `extend` moves the deadline both ways
///   and never creates a record; `delete` returns whether there was one; a deadline is
///   honoured, and an expired key is free again.
/// - **index**: a record is listed as soon as `create` returns; `list` returns the user's live
///   sessions only, drops entries whose record is gone, expired or someone else's, counts them
///   in `dropped`, and does not count them again.
/// - **rotation**: `rotate` moves the session to a listed new key and removes the old one;
///   rotating a session that is gone fails and leaves no record under the new key.
/// - **the index outlives its records**: a record extended past its first deadline, or
///   indexed before a shorter-lived one, is still listed.
/// - **delete wins over concurrent extends**: once `delete` has returned, no `extend` that ran
///   alongside it brings the record back.
/// - **revocation wins over concurrent rotation**: a revoker that lists and deletes until a
///   listing finds nothing live and nothing dropped leaves no session behind, however it
///   interleaves with a session being rotated again and again. This is what `rotate`'s order
///   (create and index the new key, then delete the old one) is for.
///
/// # Panics
///
/// At the first broken rule, with a message `store contract broken: <rule>: <what happened>`,
/// or when the store returns an error.
pub async fn check_session_store<S, F, Fut>(mut new_store: F)
where
    S: SessionStore,
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
{
    check_records(&new_store().await).await;
    check_index(&new_store().await).await;
    check_rotation(&new_store().await).await;
    check_index_outlives_records(&new_store().await).await;
    check_delete_wins_over_concurrent_extends(&new_store().await).await;
    check_revocation_wins_over_rotation(&new_store().await).await;
}

/// Runs every [`ThrottleStore`] check, each group on a store from `new_store`.
///
/// Checked: a counter admits `max` attempts in its window, then refuses with the time left;
/// a refusal counts nothing in any counter; the longest remaining window among the full
/// counters is reported; attempts never prolong a window, and a counter whose window ended
/// admits again; `release` takes one back, never below zero, never creates a counter, and
/// changes nothing after the window ended; `reset` removes a counter; concurrent attempts
/// never share room that only one of them has.
///
/// # Panics
///
/// At the first broken rule, with a message `store contract broken: <rule>: <what happened>`,
/// or when the store returns an error.
pub async fn check_throttle_store<S, F, Fut>(mut new_store: F)
where
    S: ThrottleStore,
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
{
    check_counting(&new_store().await).await;
    check_windows(&new_store().await).await;
    check_release_and_reset(&new_store().await).await;
    check_concurrent_admissions(&new_store().await).await;
}

// ---- helpers ------------------------------------------------------------------------------------

fn broken(rule: &str, detail: fmt::Arguments<'_>) -> ! {
    panic!("store contract broken: {rule}: {detail}")
}

/// Fails the check with `rule` unless `holds`.
macro_rules! rule {
    ($holds:expr, $rule:expr, $($detail:tt)+) => {
        if !$holds {
            broken($rule, format_args!($($detail)+))
        }
    };
}

/// The value of a store call; any error fails the check, since nothing here should fail.
fn ok<T>(operation: &str, result: Result<T, StoreError>) -> T {
    result.unwrap_or_else(|err| panic!("store contract: {operation} returned an error: {err}"))
}

/// A key no other check or test uses.
fn random_key() -> SessionKey {
    let mut bytes = [0u8; 21];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    SessionKey::parse(&text).expect("21 random bytes in base64url are a session key")
}

/// A name no other check or test uses, for users and counters.
fn random_name(what: &str) -> String {
    format!("contract-{what}-{}", random_key().short())
}

/// A record of `user_id` that lives `lifetime` from now at the most.
fn record(user_id: &str, lifetime: Duration) -> SessionRecord {
    let now = SystemTime::now();
    let user = RawValue::from_string(format!(r#"{{"name":"{user_id}","n":[1,2]}}"#))
        .expect("a JSON object");
    SessionRecord::new(random_name("id"), user_id, user, now, now + lifetime)
        .with_roles(vec!["reader".to_owned()])
        .with_client(Some("192.0.2.1".to_owned()), Some("contract".to_owned()))
}

fn in_(d: Duration) -> SystemTime {
    SystemTime::now() + d
}

fn json(record: &SessionRecord) -> String {
    serde_json::to_string(record).expect("a record always serialises")
}

fn keys_of(listing: &UserSessions) -> Vec<&SessionKey> {
    listing.live.iter().map(|(key, _)| key).collect()
}

fn lists(listing: &UserSessions, key: &SessionKey) -> bool {
    listing.live.iter().any(|(k, _)| k == key)
}

/// How far apart two instants are, whichever comes first.
fn distance(a: SystemTime, b: SystemTime) -> Duration {
    a.duration_since(b)
        .or_else(|_| b.duration_since(a))
        .unwrap_or_default()
}

/// Gives the other futures of a `join` a turn, so that races interleave at every await.
fn yield_now() -> impl Future<Output = ()> {
    struct YieldNow(bool);
    impl Future for YieldNow {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.0 {
                return Poll::Ready(());
            }
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
    YieldNow(false)
}

// ---- sessions -----------------------------------------------------------------------------------

async fn check_records(store: &impl SessionStore) {
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
        !ok("extend", store.extend(&key, &rec, deadline).await),
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
        ok("create", store.create(&key, &rec, deadline).await),
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
        !ok("create", store.create(&key, &other, in_(LONG)).await),
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
        ok("extend", store.extend(&key, &rec, sooner).await),
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
        ok("extend", store.extend(&key, &rec, later).await),
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
        !ok("extend", store.extend(&key, &rec, in_(LONG)).await),
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
        ok("create", store.create(&short, &rec, deadline).await),
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
        !ok("extend", store.extend(&short, &rec, in_(LONG)).await),
        "extend never creates",
        "extend of an expired record returned true"
    );
    rule!(
        ok("load", store.load(&short).await).is_none(),
        "extend never creates",
        "extend brought an expired record back"
    );
    rule!(
        ok("create", store.create(&short, &rec, in_(LONG)).await),
        "an expired key is free again",
        "create under the key of an expired record returned false"
    );
}

async fn check_index(store: &impl SessionStore) {
    let user = random_name("user");
    let someone_else = random_name("user");
    let (a, b, c, other) = (random_key(), random_key(), random_key(), random_key());

    // Indexed as soon as create returns: listed right away.
    for key in [&a, &b] {
        rule!(
            ok(
                "create",
                store.create(key, &record(&user, LONG), in_(LONG)).await
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
            store.create(&c, &record(&user, LONG), expiring).await
        ),
        "create stores a record under a free key",
        "create of a fresh key returned false"
    );
    rule!(
        ok(
            "create",
            store
                .create(&other, &record(&someone_else, LONG), in_(LONG))
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
                .create(&a, &record(&someone_else, LONG), in_(LONG))
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

async fn check_rotation(store: &impl SessionStore) {
    let user = random_name("user");
    let (old, new) = (random_key(), random_key());
    let rec = record(&user, LONG);
    rule!(
        ok("create", store.create(&old, &rec, in_(LONG)).await),
        "create stores a record under a free key",
        "create of a fresh key returned false"
    );

    // Rotation moves the record to the new key, keeps it listed, and kills the old key.
    let renewed = record(&user, LONG);
    let deadline = in_(Duration::from_secs(90));
    rule!(
        ok("rotate", store.rotate(&old, &new, &renewed, deadline).await),
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
        !ok("extend", store.extend(&old, &rec, in_(LONG)).await),
        "extend never creates",
        "extend of a rotated-away key returned true"
    );

    // Rotating a session that is gone creates nothing.
    let ghost = random_key();
    rule!(
        !ok(
            "rotate",
            store.rotate(&old, &ghost, &renewed, in_(LONG)).await
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

async fn check_index_outlives_records(store: &impl SessionStore) {
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
            store.create(&extended, &rec, first_deadline).await
        ),
        "create stores a record under a free key",
        "create of a fresh key returned false"
    );
    rule!(
        ok("extend", store.extend(&extended, &rec, in_(LONG)).await),
        "extend moves the deadline",
        "extend of a live record returned false"
    );
    // A shorter-lived record indexed later must not shorten the index either.
    let brief = record(&user, Duration::from_millis(300));
    rule!(
        ok("create", store.create(&short, &brief, first_deadline).await),
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

async fn check_delete_wins_over_concurrent_extends(store: &impl SessionStore) {
    let user = random_name("user");
    for _ in 0..RACE_ROUNDS {
        let key = random_key();
        let rec = record(&user, LONG);
        rule!(
            ok("create", store.create(&key, &rec, in_(LONG)).await),
            "create stores a record under a free key",
            "create of a fresh key returned false"
        );
        let extends = (0..10).map(|_| store.extend(&key, &rec, in_(LONG)));
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
            !ok("extend", store.extend(&key, &rec, in_(LONG)).await),
            "delete wins over concurrent extends",
            "extend of a deleted record returned true"
        );
    }
}

/// A session rotated again and again (as a busy client renewing it would) while a revoker
/// lists the user's sessions and deletes each live one, until a listing finds nothing live and
/// nothing dropped. Whoever deletes the old key first wins; either way no session may be left.
async fn check_revocation_wins_over_rotation(store: &impl SessionStore) {
    for round in 0..RACE_ROUNDS {
        let user = random_name("user");
        let first = random_key();
        let rec = record(&user, LONG);
        rule!(
            ok("create", store.create(&first, &rec, in_(LONG)).await),
            "create stores a record under a free key",
            "create of a fresh key returned false"
        );

        let rotator = async {
            let mut keys = vec![first.clone()];
            let mut current = first.clone();
            for _ in 0..4 {
                yield_now().await;
                let next = random_key();
                keys.push(next.clone());
                if !ok(
                    "rotate",
                    store.rotate(&current, &next, &rec, in_(LONG)).await,
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

// ---- throttling ---------------------------------------------------------------------------------

fn counter(name: &str, max: u32, window: Duration) -> Counter<'_> {
    Counter { name, max, window }
}

async fn admitted(store: &impl ThrottleStore, counters: &[Counter<'_>]) -> bool {
    ok("admit", store.admit(counters).await) == Admission::Admitted
}

/// Admits until the first refusal; the number admitted, at most `limit`.
async fn admissions(store: &impl ThrottleStore, counters: &[Counter<'_>], limit: u32) -> u32 {
    let mut count = 0;
    while count < limit && admitted(store, counters).await {
        count += 1;
    }
    count
}

async fn check_counting(store: &impl ThrottleStore) {
    let (a, b) = (random_name("counter"), random_name("counter"));
    let window = Duration::from_secs(60);
    let both = [counter(&a, 2, window), counter(&b, 5, window)];

    let count = admissions(store, &both, 10).await;
    rule!(
        count == 2,
        "a counter admits max attempts in its window",
        "a counter with max 2 admitted {count} attempts"
    );
    match ok("admit", store.admit(&both).await) {
        Admission::Refused { retry_after } => rule!(
            !retry_after.is_zero() && retry_after <= window,
            "a refusal reports the time left in the window",
            "refused with retry_after {retry_after:?} in a window of {window:?}"
        ),
        Admission::Admitted => broken(
            "a counter admits max attempts in its window",
            format_args!("a full counter admitted another attempt"),
        ),
    }
    // b counted the two admitted attempts, and none of the refused ones.
    let count = admissions(store, &both[1..], 10).await;
    rule!(
        count == 3,
        "a refusal counts nothing in any counter",
        "a counter with max 5 that admitted 2 attempts alongside a full counter then admitted \
         {count} alone instead of 3"
    );
}

async fn check_windows(store: &impl ThrottleStore) {
    let (short, long, fixed) = (
        random_name("counter"),
        random_name("counter"),
        random_name("counter"),
    );
    let (short_window, long_window) = (Duration::from_millis(500), Duration::from_secs(30));

    // The longest remaining window among the full counters is the one reported.
    let both = [
        counter(&short, 1, short_window),
        counter(&long, 1, long_window),
    ];
    rule!(
        admitted(store, &both).await,
        "a counter admits max attempts in its window",
        "a fresh counter refused an attempt"
    );
    match ok("admit", store.admit(&both).await) {
        Admission::Refused { retry_after } => rule!(
            retry_after > short_window && retry_after <= long_window,
            "a refusal reports the longest window left among the full counters",
            "refused with retry_after {retry_after:?}; the full counters' windows are \
             {short_window:?} and {long_window:?}"
        ),
        Admission::Admitted => broken(
            "a counter admits max attempts in its window",
            format_args!("a full counter admitted another attempt"),
        ),
    }

    // Attempts never prolong a window: one refused halfway through still ends with the window.
    let window = Duration::from_millis(600);
    let started = SystemTime::now();
    let once = [counter(&fixed, 1, window)];
    rule!(
        admitted(store, &once).await,
        "a counter admits max attempts in its window",
        "a fresh counter refused an attempt"
    );
    sleep_until(started + window / 2).await;
    match ok("admit", store.admit(&once).await) {
        Admission::Refused { retry_after } => rule!(
            retry_after <= window / 2 + CLOCK_SLACK / 10,
            "attempts never prolong a window",
            "halfway through a {window:?} window, retry_after is {retry_after:?}"
        ),
        Admission::Admitted => broken(
            "a counter admits max attempts in its window",
            format_args!("a full counter admitted another attempt"),
        ),
    }
    sleep_until(started + window + EXPIRY_SLACK).await;
    rule!(
        admitted(store, &once).await,
        "a counter whose window ended admits again",
        "a counter still refused {EXPIRY_SLACK:?} after its window ended"
    );
}

async fn check_release_and_reset(store: &impl ThrottleStore) {
    let window = Duration::from_secs(60);

    // release takes one back.
    let full = random_name("counter");
    let two = [counter(&full, 2, window)];
    let count = admissions(store, &two, 10).await;
    rule!(
        count == 2,
        "a counter admits max attempts in its window",
        "a counter with max 2 admitted {count} attempts"
    );
    ok("release", store.release(&[&full]).await);
    let count = admissions(store, &two, 10).await;
    rule!(
        count == 1,
        "release takes one back",
        "a full counter with max 2 admitted {count} attempts after one release instead of 1"
    );

    // ... never below zero ...
    let once = random_name("counter");
    let one = [counter(&once, 1, window)];
    rule!(
        admitted(store, &one).await,
        "a counter admits max attempts in its window",
        "a fresh counter refused an attempt"
    );
    ok("release", store.release(&[&once]).await);
    ok("release", store.release(&[&once]).await);
    let count = admissions(store, &one, 10).await;
    rule!(
        count == 1,
        "release never goes below zero",
        "a counter with max 1, admitted once and released twice, then admitted {count} attempts"
    );

    // ... never creates a counter ...
    let unknown = random_name("counter");
    ok("release", store.release(&[&unknown]).await);
    let count = admissions(store, &[counter(&unknown, 1, window)], 10).await;
    rule!(
        count == 1,
        "release never creates a counter",
        "a counter with max 1, released before its first attempt, admitted {count} attempts"
    );

    // ... and changes nothing once the window has ended.
    let ended = random_name("counter");
    let brief = Duration::from_millis(200);
    let started = SystemTime::now();
    let one = [counter(&ended, 1, brief)];
    rule!(
        admitted(store, &one).await,
        "a counter admits max attempts in its window",
        "a fresh counter refused an attempt"
    );
    sleep_until(started + brief + EXPIRY_SLACK).await;
    ok("release", store.release(&[&ended]).await);
    let count = admissions(store, &[counter(&ended, 1, window)], 10).await;
    rule!(
        count == 1,
        "a release after the window ended changes nothing",
        "a counter with max 1, released after its window ended, admitted {count} attempts"
    );

    // reset removes a counter.
    let reset = random_name("counter");
    let one = [counter(&reset, 1, window)];
    rule!(
        admitted(store, &one).await,
        "a counter admits max attempts in its window",
        "a fresh counter refused an attempt"
    );
    ok("reset", store.reset(&reset).await);
    let count = admissions(store, &one, 10).await;
    rule!(
        count == 1,
        "reset removes a counter",
        "a full counter with max 1 admitted {count} attempts after a reset"
    );
}

async fn check_concurrent_admissions(store: &impl ThrottleStore) {
    for _ in 0..5 {
        let (a, b) = (random_name("counter"), random_name("counter"));
        let window = Duration::from_secs(60);
        let both = [counter(&a, 5, window), counter(&b, 50, window)];
        let verdicts = join_all((0..20).map(|_| store.admit(&both))).await;
        let mut count = 0;
        for verdict in verdicts {
            if ok("admit", verdict) == Admission::Admitted {
                count += 1;
            }
        }
        rule!(
            count == 5,
            "concurrent attempts never share room that only one of them has",
            "20 concurrent attempts at a counter with max 5: {count} admitted"
        );
        // b counted exactly the admitted attempts: 45 more fit.
        let count = admissions(store, &both[1..], 100).await;
        rule!(
            count == 45,
            "a refusal counts nothing in any counter",
            "after 5 of 20 concurrent attempts were admitted, a counter with max 50 admitted \
             {count} more instead of 45"
        );
    }
}

async fn sleep_until(at: SystemTime) {
    if let Ok(left) = at.duration_since(SystemTime::now()) {
        tokio::time::sleep(left).await;
    }
}
