//! The one-time link part of the [`SessionStore`] contract: create, look, take once, expiry,
//! and racing takes.

use std::time::Duration;

use futures_util::future::join_all;

use super::*;
use crate::record::{LinkKey, LinkPurpose, LinkRecord};

/// A key no other check or test uses.
fn random_link_key() -> LinkKey {
    LinkKey::of_secret(LinkPurpose::PasswordReset, &random_name("link"))
}

fn link(user_id: &str, lifetime: Duration) -> LinkRecord {
    LinkRecord::new(
        LinkPurpose::PasswordReset,
        user_id,
        format!("{user_id}@example.test"),
        Some("version-1".to_owned()),
        in_(lifetime),
    )
}

/// Records compared by what a store must keep: everything, with the deadline to the
/// millisecond the record's encoding holds.
fn same(a: &LinkRecord, b: &LinkRecord) -> bool {
    a.purpose() == b.purpose()
        && a.user_id() == b.user_id()
        && a.address() == b.address()
        && a.credentials() == b.credentials()
        && a.session_id() == b.session_id()
        && distance(a.expires_at(), b.expires_at()) < Duration::from_millis(2)
}

pub(super) async fn check_links_are_kept_and_taken_once<S: SessionStore>(store: &S) {
    let key = random_link_key();
    let user = random_name("user");
    let issued = link(&user, LONG);
    rule!(
        ok("load_link", store.load_link(&key).await).is_none(),
        "an unknown link is not found",
        "load_link found a link never created"
    );
    rule!(
        ok("take_link", store.take_link(&key).await).is_none(),
        "an unknown link is not found",
        "take_link took a link never created"
    );
    rule!(
        ok("create_link", store.create_link(&key, &issued).await),
        "create_link stores a link under a free key",
        "create_link refused a free key"
    );
    for _ in 0..2 {
        let loaded = ok("load_link", store.load_link(&key).await);
        rule!(
            loaded.as_ref().is_some_and(|l| same(l, &issued)),
            "load_link returns the link as created and leaves it in place",
            "created {issued:?}, loaded {loaded:?}"
        );
    }
    let other = link(&random_name("user"), LONG);
    rule!(
        !ok("create_link", store.create_link(&key, &other).await),
        "a refused create_link leaves the link untouched",
        "create_link replaced a link under a taken key"
    );
    let taken = ok("take_link", store.take_link(&key).await);
    rule!(
        taken.as_ref().is_some_and(|l| same(l, &issued)),
        "a refused create_link leaves the link untouched",
        "created {issued:?}, took {taken:?}"
    );
    let again = ok("take_link", store.take_link(&key).await);
    rule!(
        again.is_none(),
        "a link is taken once",
        "a second take_link returned {again:?}"
    );
    let after = ok("load_link", store.load_link(&key).await);
    rule!(
        after.is_none(),
        "a link is taken once",
        "load_link found a taken link: {after:?}"
    );

    // A "this wasn't me" link names the session it ends; without it, it ends nothing.
    let key = LinkKey::of_secret(LinkPurpose::EndSession, &random_name("link"));
    let ending = LinkRecord::new(LinkPurpose::EndSession, &user, "", None, in_(LONG))
        .for_session(Some("the-session-public-id"));
    ok("create_link", store.create_link(&key, &ending).await);
    let taken = ok("take_link", store.take_link(&key).await);
    rule!(
        taken.as_ref().is_some_and(|l| same(l, &ending)),
        "a link comes back with the session it names",
        "created {ending:?}, took {taken:?}"
    );
}

pub(super) async fn check_links_expire<S: SessionStore>(store: &S) {
    let key = random_link_key();
    let short = link(&random_name("user"), Duration::from_millis(300));
    ok("create_link", store.create_link(&key, &short).await);
    sleep_until(short.expires_at() + EXPIRY_SLACK).await;
    let loaded = ok("load_link", store.load_link(&key).await);
    rule!(
        loaded.is_none(),
        "a link expires at its expires_at",
        "load_link found a link past its end: {loaded:?}"
    );
    let taken = ok("take_link", store.take_link(&key).await);
    rule!(
        taken.is_none(),
        "a link expires at its expires_at",
        "take_link took a link past its end: {taken:?}"
    );
    let fresh = link(&random_name("user"), LONG);
    rule!(
        ok("create_link", store.create_link(&key, &fresh).await),
        "an expired link's key is free again",
        "create_link refused the key of an expired link"
    );
    ok("take_link", store.take_link(&key).await);
}

pub(super) async fn check_racing_takes<S: SessionStore>(store: &S) {
    for _ in 0..RACE_ROUNDS {
        let key = random_link_key();
        ok(
            "create_link",
            store
                .create_link(&key, &link(&random_name("user"), LONG))
                .await,
        );
        let takes = (0..4).map(|_| async {
            yield_now().await;
            store.take_link(&key).await
        });
        let winners = join_all(takes)
            .await
            .into_iter()
            .map(|taken| ok("take_link", taken))
            .filter(Option::is_some)
            .count();
        rule!(
            winners == 1,
            "of racing takes exactly one gets the link",
            "{winners} of 4 racing take_link calls got the link"
        );
    }
}
