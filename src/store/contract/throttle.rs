//! The [`ThrottleStore`] contract: counting, windows, release, reset, concurrency.

use std::time::{Duration, SystemTime};

use futures_util::future::join_all;

use super::*;
use crate::store::{Admission, Counter, ThrottleStore};

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

pub(super) async fn check_counting(store: &impl ThrottleStore) {
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

    // A limit of zero is a closed door from the very first attempt, and refusing there counts
    // nothing elsewhere.
    let (closed, open) = (random_name("counter"), random_name("counter"));
    let shut = [counter(&closed, 0, window), counter(&open, 1, window)];
    match ok("admit", store.admit(&shut).await) {
        Admission::Refused { retry_after } => rule!(
            !retry_after.is_zero() && retry_after <= window,
            "a counter with max 0 refuses every attempt",
            "refused a first attempt at max 0 with retry_after {retry_after:?}"
        ),
        Admission::Admitted => broken(
            "a counter with max 0 refuses every attempt",
            format_args!("a fresh counter with max 0 admitted its first attempt"),
        ),
    }
    let count = admissions(store, &shut[1..], 10).await;
    rule!(
        count == 1,
        "a refusal counts nothing in any counter",
        "a counter with max 1, refused alongside a counter with max 0, then admitted {count}"
    );
}

pub(super) async fn check_windows(store: &impl ThrottleStore) {
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

pub(super) async fn check_release_and_reset(store: &impl ThrottleStore) {
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

pub(super) async fn check_concurrent_admissions(store: &impl ThrottleStore) {
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

pub(super) async fn check_admit_existing(store: &impl ThrottleStore) {
    let window = Duration::from_secs(60);

    // A name never admitted is unknown, and trying it does not bring it into being.
    let unknown = random_name("counter");
    for _ in 0..2 {
        let verdict = ok(
            "admit_existing",
            store.admit_existing(counter(&unknown, 5, window)).await,
        );
        rule!(
            verdict.is_none(),
            "admit_existing never creates a counter",
            "a counter never admitted answered {verdict:?}"
        );
    }
    let count = admissions(store, &[counter(&unknown, 1, window)], 10).await;
    rule!(
        count == 1,
        "admit_existing never creates a counter",
        "a counter with max 1, tried with admit_existing first, then admitted {count} attempts"
    );

    // An existing one counts as admit does, up to its max, and then refuses.
    let known = random_name("counter");
    rule!(
        admitted(store, &[counter(&known, 100, window)]).await,
        "a counter admits max attempts in its window",
        "a fresh counter refused an attempt"
    );
    for n in 2..=3 {
        let verdict = ok(
            "admit_existing",
            store.admit_existing(counter(&known, 3, window)).await,
        );
        rule!(
            verdict == Some(Admission::Admitted),
            "admit_existing counts in an existing counter up to its max",
            "attempt {n} at a counter with max 3 answered {verdict:?}"
        );
    }
    match ok(
        "admit_existing",
        store.admit_existing(counter(&known, 3, window)).await,
    ) {
        Some(Admission::Refused { retry_after }) => rule!(
            !retry_after.is_zero() && retry_after <= window,
            "a refusal reports the time left in the window",
            "refused with retry_after {retry_after:?} in a window of {window:?}"
        ),
        verdict => broken(
            "admit_existing counts in an existing counter up to its max",
            format_args!("a full counter answered {verdict:?}"),
        ),
    }

    // Once removed, or once its window ends, the counter is unknown again.
    ok("reset", store.reset(&known).await);
    let verdict = ok(
        "admit_existing",
        store.admit_existing(counter(&known, 3, window)).await,
    );
    rule!(
        verdict.is_none(),
        "a reset counter is unknown to admit_existing",
        "answered {verdict:?}"
    );
    let brief = random_name("counter");
    let started = SystemTime::now();
    let short = Duration::from_millis(200);
    rule!(
        admitted(store, &[counter(&brief, 5, short)]).await,
        "a counter admits max attempts in its window",
        "a fresh counter refused an attempt"
    );
    sleep_until(started + short + EXPIRY_SLACK).await;
    let verdict = ok(
        "admit_existing",
        store.admit_existing(counter(&brief, 5, short)).await,
    );
    rule!(
        verdict.is_none(),
        "a counter whose window ended is unknown to admit_existing",
        "answered {verdict:?}"
    );
}
