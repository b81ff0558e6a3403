//! The activity log part of the [`SessionStore`] contract: order, paging, the cap, expiry.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::record::{ActivityEntry, ActivityKind, ActivityLimits};

const KINDS: [ActivityKind; 5] = [
    ActivityKind::LoginFailed,
    ActivityKind::NewDevice,
    ActivityKind::TokenCreated,
    ActivityKind::Logout,
    ActivityKind::Login,
];

fn roomy() -> ActivityLimits {
    ActivityLimits {
        max_entries: 100,
        keep_for: LONG,
    }
}

/// The `i`th entry a check writes: a kind, a time to the second, a client and a session.
fn entry(i: usize) -> ActivityEntry {
    let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000 + i as u64);
    ActivityEntry::new(KINDS[i % KINDS.len()], at)
        .with_client(Some(format!("192.0.2.{i}")), Some(format!("agent {i}")))
        .with_session(Some(format!("session-{i}")))
}

/// Entries compared by what a store must keep: all but the id it gives them.
fn same(a: &ActivityEntry, b: &ActivityEntry) -> bool {
    (a.kind, a.at, &a.ip, &a.user_agent, &a.session_id)
        == (b.kind, b.at, &b.ip, &b.user_agent, &b.session_id)
}

async fn append<S: SessionStore>(store: &S, user: &str, i: usize, limits: ActivityLimits) {
    ok(
        "append_activity",
        store.append_activity(user, &entry(i), limits).await,
    );
}

pub(super) async fn check_activity_order_and_paging<S: SessionStore>(store: &S) {
    let user = random_name("user");
    let other = random_name("user");
    let none = ok("activity", store.activity(&user, None, 10).await);
    rule!(
        none.is_empty(),
        "a user without entries has an empty log",
        "activity returned {none:?}"
    );
    for i in 0..5 {
        append(store, &user, i, roomy()).await;
    }
    append(store, &other, 9, roomy()).await;
    let log = ok("activity", store.activity(&user, None, 10).await);
    let newest_first = log.len() == 5
        && log
            .iter()
            .zip((0..5).rev())
            .all(|(got, i)| same(got, &entry(i)));
    rule!(
        newest_first,
        "activity returns a user's entries as written, newest first, and no one else's",
        "wrote entries 0 to 4, read {log:?}"
    );
    let ids: std::collections::HashSet<&str> = log.iter().map(|e| e.id.as_str()).collect();
    rule!(
        ids.len() == 5 && !ids.contains(""),
        "each entry gets an id of its own",
        "ids {ids:?}"
    );
    let page = ok("activity", store.activity(&user, Some(&log[1].id), 2).await);
    rule!(
        page.len() == 2 && same(&page[0], &log[2]) && same(&page[1], &log[3]),
        "activity after an entry's id starts with the next older entry",
        "after {:?}, read {page:?}",
        log[1].id
    );
    let last = ok(
        "activity",
        store.activity(&user, Some(&log[4].id), 10).await,
    );
    rule!(
        last.is_empty(),
        "nothing comes after the oldest entry",
        "read {last:?}"
    );
    let limited = ok("activity", store.activity(&user, None, 1).await);
    rule!(
        limited.len() == 1 && same(&limited[0], &log[0]),
        "activity returns at most `limit` entries",
        "read {limited:?}"
    );
}

/// Paging through a long log, a few entries at a time, gives every entry once, newest first:
/// a store that reads its log in chunks must carry a page across a chunk's end.
pub(super) async fn check_activity_paging_through_a_long_log<S: SessionStore>(store: &S) {
    const ENTRIES: usize = 250;
    let user = random_name("user");
    let roomy = ActivityLimits {
        max_entries: 1_000,
        keep_for: LONG,
    };
    for i in 0..ENTRIES {
        append(store, &user, i, roomy).await;
    }
    let mut read: Vec<ActivityEntry> = Vec::new();
    loop {
        let before = read.last().map(|entry| entry.id.clone());
        let page = ok(
            "activity",
            store.activity(&user, before.as_deref(), 7).await,
        );
        if page.is_empty() || read.len() > ENTRIES {
            break;
        }
        read.extend(page);
    }
    let in_order = read.len() == ENTRIES
        && read
            .iter()
            .zip((0..ENTRIES).rev())
            .all(|(got, i)| same(got, &entry(i)));
    rule!(
        in_order,
        "pages of a long log, each after the last entry of the one before, give every entry once, newest first",
        "wrote {ENTRIES}, paged through {} entries",
        read.len()
    );
}

pub(super) async fn check_activity_cap<S: SessionStore>(store: &S) {
    let user = random_name("user");
    let capped = ActivityLimits {
        max_entries: 3,
        keep_for: LONG,
    };
    for i in 0..10 {
        append(store, &user, i, capped).await;
    }
    let log = ok("activity", store.activity(&user, None, 100).await);
    let newest = log.len() == 3
        && log
            .iter()
            .zip([9, 8, 7])
            .all(|(got, i)| same(got, &entry(i)));
    rule!(
        newest,
        "the log keeps the newest max_entries entries",
        "wrote 10 with a cap of 3, read {log:?}"
    );
}

pub(super) async fn check_activity_expiry<S: SessionStore>(store: &S) {
    // A loaded machine can oversleep past the window being checked; such a round proves
    // nothing either way and is run again with a longer window, not counted as a failure.
    for keep_for in [400, 1_600, 6_400].map(Duration::from_millis) {
        if activity_expiry_round(store, keep_for).await {
            return;
        }
    }
    broken(
        "the activity log's expiry can be checked",
        format_args!("every round overslept its window, the longest 6.4 s"),
    );
}

/// One round of [`check_activity_expiry`] with logs kept for `keep_for`; `false` when a step
/// came too late to tell anything (the second entry after the first could expire, or the
/// "still kept" read after the log could).
async fn activity_expiry_round<S: SessionStore>(store: &S, keep_for: Duration) -> bool {
    let user = random_name("user");
    let brief = ActivityLimits {
        max_entries: 10,
        keep_for,
    };
    let first_sent = SystemTime::now();
    append(store, &user, 0, brief).await;
    // Each entry keeps the whole log for keep_for again.
    sleep_until(first_sent + keep_for / 2).await;
    // The log lives at least until `sent + keep_for` and at most until `written + keep_for`.
    let sent = SystemTime::now();
    append(store, &user, 1, brief).await;
    let written = SystemTime::now();
    if written >= first_sent + keep_for - EXPIRY_SLACK {
        // The first entry may have expired before the second kept the log.
        return false;
    }
    sleep_until(written + keep_for / 2).await;
    let kept = ok("activity", store.activity(&user, None, 10).await);
    if SystemTime::now() >= sent + keep_for - EXPIRY_SLACK {
        return false;
    }
    rule!(
        kept.len() == 2,
        "a new entry keeps the log for keep_for from then",
        "read {kept:?}"
    );
    sleep_until(written + keep_for + EXPIRY_SLACK).await;
    let gone = ok("activity", store.activity(&user, None, 10).await);
    rule!(
        gone.is_empty(),
        "the log is gone keep_for after its newest entry",
        "read {gone:?}"
    );
    append(store, &user, 2, brief).await;
    let fresh = ok("activity", store.activity(&user, None, 10).await);
    rule!(
        fresh.len() == 1 && same(&fresh[0], &entry(2)),
        "a log that expired starts anew",
        "read {fresh:?}"
    );
    true
}
