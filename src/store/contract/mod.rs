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
//! use actix_login::store::contract::{
//!     check_one_time_links, check_session_store, check_throttle_store,
//! };
//! use actix_login::MemoryStore;
//!
//! // In a test suite this is an async test: `#[actix_web::test]` or `#[tokio::test]`.
//! async fn memory_store_keeps_the_contract() {
//!     check_session_store(|| async { MemoryStore::new() }).await;
//!     check_one_time_links(|| async { MemoryStore::new() }).await;
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
use serde_json::value::RawValue;

use crate::error::StoreError;
use crate::record::{SessionData, SessionKey, SessionRecord};
use crate::store::Carry;
use crate::store::{Admission, Counter, SessionStore, ThrottleStore, UserSessions};

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
/// - **credentials versions**: none for a user whose credentials never changed; one set is
///   readable at once, a newer one replaces it, and it is forgotten after `keep_for`.
/// - **data**: `create` stores the data it is given; a write applies its changes in order,
///   returns what each replaced, and is refused whole past the limit (one that does not grow
///   the data always fits); `extend` never reverts a write; `clear` keeps the session; a write
///   to a deleted or rotated-away key answers `Gone` and brings nothing back; concurrent
///   writes of different names, racing refreshes, all survive. `load_with_data` reads what
///   `load` reads, with the session's data as it stands when it brings data along.
/// - **moves and updates**: `update_user` replaces the profile and roles and never creates;
///   `rotate` carries the data, the live-updated profile with `Carry::DataAndUser` and the
///   given one with `Carry::Data`.
/// - **anonymous sessions**: they load as anonymous, belong to no index, and a login rotated
///   from one keeps its data and is indexed; `admit_anonymous` counts like a throttle.
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
    check_credentials_versions(&new_store().await).await;
    check_data(&new_store().await).await;
    check_load_with_data(&new_store().await).await;
    check_concurrent_data_writes(&new_store().await).await;
    check_data_moves_with_the_session(&new_store().await).await;
    check_anonymous_sessions(&new_store().await).await;
    check_anonymous_admission(&new_store().await).await;
}

/// Runs every check of the [one-time link](crate::links) methods of [`SessionStore`]
/// (`create_link`, `load_link`, `take_link`), each group on a store from `new_store`.
///
/// Separate from [`check_session_store`], since the methods are optional: a store that leaves
/// them to their defaults keeps no links, and every link request fails with `503`. Checked:
/// an unknown link is not found; `create_link` stores a link under a free key and refuses a
/// taken one, leaving it untouched; `load_link` returns the link as created and leaves it in
/// place; `take_link` returns it once and never again, and `load_link` then finds nothing; a
/// link is gone at its `expires_at`, and its key is free again; of four racing `take_link`
/// calls for one link, exactly one gets it.
///
/// # Panics
///
/// At the first broken rule, with a message `store contract broken: <rule>: <what happened>`,
/// or when the store returns an error.
pub async fn check_one_time_links<S, F, Fut>(mut new_store: F)
where
    S: SessionStore,
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
{
    check_links_are_kept_and_taken_once(&new_store().await).await;
    check_links_expire(&new_store().await).await;
    check_racing_takes(&new_store().await).await;
}

/// Runs every check of [`SessionStore::claim_once`], the single-use claims that make
/// [second-factor](crate::two_factor) codes work once, each group on a store from `new_store`.
///
/// Separate from [`check_session_store`], since the method is optional: a store that leaves it
/// to its default keeps no claims, and every second-factor code fails with `503`. Checked: a
/// fresh name is granted, then refused while its claim stands, and other names are not; a
/// claim ends after its time and the name can be claimed again; of four racing claims of one
/// name, exactly one is granted.
///
/// # Panics
///
/// At the first broken rule, with a message `store contract broken: <rule>: <what happened>`,
/// or when the store returns an error.
pub async fn check_claims<S, F, Fut>(mut new_store: F)
where
    S: SessionStore,
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
{
    check_a_claim_is_granted_once(&new_store().await).await;
    check_claims_expire(&new_store().await).await;
    check_racing_claims(&new_store().await).await;
}

/// Runs every check of the activity log methods of [`SessionStore`] (`append_activity`,
/// `activity`), each group on a store from `new_store`.
///
/// Separate from [`check_session_store`], since the methods are optional: a store that leaves
/// them to their defaults keeps no log, and logins go on without one. Checked: a user without
/// entries has an empty log; entries come back as written (kind, time, address, user agent,
/// session id), newest first, each with an id of its own, and no other user's; reading after
/// an id starts at the next older entry, and at most `limit` come back; paging through a log
/// of 250 entries, 7 at a time, gives each once, newest first; the log keeps the
/// newest `max_entries`; it is gone `keep_for` after its newest entry (each entry keeps it
/// that long again), and starts anew after.
///
/// # Panics
///
/// At the first broken rule, with a message `store contract broken: <rule>: <what happened>`,
/// or when the store returns an error.
pub async fn check_activity_log<S, F, Fut>(mut new_store: F)
where
    S: SessionStore,
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
{
    check_activity_order_and_paging(&new_store().await).await;
    check_activity_paging_through_a_long_log(&new_store().await).await;
    check_activity_cap(&new_store().await).await;
    check_activity_expiry(&new_store().await).await;
}

/// Runs every [`ThrottleStore`] check, each group on a store from `new_store`.
///
/// Checked: a counter admits `max` attempts in its window, then refuses with the time left
/// (a counter with `max` 0 refuses even its first attempt);
/// a refusal counts nothing in any counter; the longest remaining window among the full
/// counters is reported; attempts never prolong a window, and a counter whose window ended
/// admits again; `release` takes one back, never below zero, never creates a counter, and
/// changes nothing after the window ended; `reset` removes a counter; concurrent attempts
/// never share room that only one of them has; `admit_existing` never creates a counter, counts
/// in an existing one like `admit`, and knows none that was reset or whose window ended.
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
    check_admit_existing(&new_store().await).await;
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
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    SessionKey::parse(&text).expect("24 random bytes in base64url are a session key")
}

/// A fresh key in the group of `key`, for a session under `key` to rotate to.
fn key_beside(key: &SessionKey) -> SessionKey {
    let fresh = random_key();
    SessionKey::parse(&format!("{}{}", key.group(), fresh.digest()))
        .expect("a group and a digest make a session key")
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

async fn sleep_until(at: SystemTime) {
    if let Ok(left) = at.duration_since(SystemTime::now()) {
        tokio::time::sleep(left).await;
    }
}

mod activity;
mod claims;
mod data;
mod links;
mod races;
mod records;
mod throttle;

use self::activity::*;
use self::claims::*;
use self::data::*;
use self::links::*;
use self::races::*;
use self::records::*;
use self::throttle::*;
