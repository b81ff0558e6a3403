//! The single-use claim part of the [`SessionStore`] contract: a claim is granted once while
//! it stands, racing claims let exactly one through, and a claim ends with its time.

use std::time::Duration;

use futures_util::future::join_all;

use super::*;

pub(super) async fn check_a_claim_is_granted_once<S: SessionStore>(store: &S) {
    let name = random_name("claim");
    rule!(
        ok("claim_once", store.claim_once(&name, LONG).await),
        "claim_once grants a name never claimed",
        "claim_once refused a fresh name"
    );
    for _ in 0..2 {
        rule!(
            !ok("claim_once", store.claim_once(&name, LONG).await),
            "claim_once refuses a name while its claim stands",
            "claim_once granted a name twice"
        );
    }
    let other = random_name("claim");
    rule!(
        ok("claim_once", store.claim_once(&other, LONG).await),
        "claims of different names are independent",
        "claim_once refused a fresh name after claiming another"
    );
}

pub(super) async fn check_claims_expire<S: SessionStore>(store: &S) {
    let name = random_name("claim");
    let ttl = Duration::from_millis(300);
    let claimed_at = SystemTime::now();
    ok("claim_once", store.claim_once(&name, ttl).await);
    // Still standing a little before its end.
    rule!(
        !ok("claim_once", store.claim_once(&name, ttl).await),
        "claim_once refuses a name while its claim stands",
        "a claim ended before its time"
    );
    sleep_until(claimed_at + ttl + EXPIRY_SLACK).await;
    rule!(
        ok("claim_once", store.claim_once(&name, LONG).await),
        "a claim ends after its time, and the name can be claimed again",
        "claim_once refused a name whose claim had ended"
    );
    rule!(
        !ok("claim_once", store.claim_once(&name, LONG).await),
        "claim_once refuses a name while its claim stands",
        "a name claimed again after expiry was granted twice"
    );
}

pub(super) async fn check_racing_claims<S: SessionStore>(store: &S) {
    for _ in 0..RACE_ROUNDS {
        let name = random_name("claim");
        let claims = (0..4).map(|_| async {
            yield_now().await;
            store.claim_once(&name, LONG).await
        });
        let winners = join_all(claims)
            .await
            .into_iter()
            .map(|claimed| ok("claim_once", claimed))
            .filter(|granted| *granted)
            .count();
        rule!(
            winners == 1,
            "of racing claims of one name exactly one is granted",
            "{winners} of 4 racing claim_once calls were granted"
        );
    }
}
