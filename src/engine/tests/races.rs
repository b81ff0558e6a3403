//! Races forced into the interleaving that would break a rule: parallel logins against the
//! cap, and a password change between a login's write and its check.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{Barrier, Notify, Semaphore};

use super::*;
use crate::engine::events::RevokedBy;

/// A `MemoryStore` that can stop operations at chosen points, to force an interleaving:
/// the first `parties` listings each read, then wait for one another, so all answer with what
/// was there before any went on to write; and the first credentials-version read waits until the
/// test lets it go.
#[derive(Clone)]
struct Staged {
    inner: MemoryStore,
    listings: Arc<Barrier>,
    gated_listings: Arc<AtomicUsize>,
    check_arrived: Arc<Notify>,
    check_gate: Arc<Semaphore>,
    gated_checks: Arc<AtomicUsize>,
}

impl Staged {
    fn new(listings_that_meet: usize, checks_that_wait: usize) -> Self {
        Self {
            inner: MemoryStore::new(),
            listings: Arc::new(Barrier::new(listings_that_meet.max(1))),
            gated_listings: Arc::new(AtomicUsize::new(listings_that_meet)),
            check_arrived: Arc::new(Notify::new()),
            check_gate: Arc::new(Semaphore::new(0)),
            gated_checks: Arc::new(AtomicUsize::new(checks_that_wait)),
        }
    }
}

/// Takes one from `count` if it is above zero.
fn take_one(count: &AtomicUsize) -> bool {
    count
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl SessionStore for Staged {
    async fn create(
        &self,
        key: &SessionKey,
        record: &SessionRecord,
        expires_at: SystemTime,
        data: &SessionData,
    ) -> Result<bool, StoreError> {
        SessionStore::create(&self.inner, key, record, expires_at, data).await
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<StoredSession>, StoreError> {
        SessionStore::load(&self.inner, key).await
    }

    async fn extend(&self, key: &SessionKey, expires_at: SystemTime) -> Result<bool, StoreError> {
        SessionStore::extend(&self.inner, key, expires_at).await
    }

    async fn load_data(&self, key: &SessionKey) -> Result<Option<SessionData>, StoreError> {
        SessionStore::load_data(&self.inner, key).await
    }

    async fn write_data(
        &self,
        key: &SessionKey,
        changes: &[DataChange],
        max_size: usize,
    ) -> Result<DataWrite, StoreError> {
        SessionStore::write_data(&self.inner, key, changes, max_size).await
    }

    async fn update_user(
        &self,
        key: &SessionKey,
        user: &RawValue,
        roles: &[String],
    ) -> Result<bool, StoreError> {
        SessionStore::update_user(&self.inner, key, user, roles).await
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool, StoreError> {
        SessionStore::delete(&self.inner, key).await
    }

    async fn list(&self, user_id: &str) -> Result<UserSessions, StoreError> {
        let listing = SessionStore::list(&self.inner, user_id).await;
        if take_one(&self.gated_listings) {
            self.listings.wait().await;
        }
        listing
    }

    async fn rotate(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        record: &SessionRecord,
        expires_at: SystemTime,
        carry: Carry,
    ) -> Result<bool, StoreError> {
        SessionStore::rotate(&self.inner, old, new, record, expires_at, carry).await
    }

    async fn admit_anonymous(&self, counters: &[Counter<'_>]) -> Result<Admission, StoreError> {
        SessionStore::admit_anonymous(&self.inner, counters).await
    }

    async fn credentials_version(&self, user_id: &str) -> Result<Option<String>, StoreError> {
        if take_one(&self.gated_checks) {
            self.check_arrived.notify_one();
            if let Ok(permit) = self.check_gate.acquire().await {
                permit.forget();
            }
        }
        SessionStore::credentials_version(&self.inner, user_id).await
    }

    async fn set_credentials_version(
        &self,
        user_id: &str,
        version: &str,
        keep_for: Duration,
    ) -> Result<(), StoreError> {
        SessionStore::set_credentials_version(&self.inner, user_id, version, keep_for).await
    }
}

#[test]
fn parallel_logins_never_leave_more_sessions_than_the_cap() {
    for parallel in [2, 3] {
        run(async {
            let store = Staged::new(parallel, 0);
            let engine = SessionEngine::new(store.clone(), {
                let mut rules = SessionRules::default();
                rules.set_max_sessions_per_user(1);
                rules
            });
            let logins = (0..parallel).map(|_| engine.login(None, None, grant("7"), true));
            let outcomes = futures_util::future::join_all(logins).await;
            let mut issued = Vec::new();
            for outcome in outcomes {
                match outcome.result {
                    Ok(login) => issued.push(login),
                    // Pushed out by a racing login: an error, never a dead session.
                    Err(Error::LoginSuperseded) => {}
                    Err(err) => panic!("{err:?}"),
                }
            }
            // None made room by ending its own session, and the cap holds. (Here each lists
            // before the next one writes, so a later login may end a session that an earlier
            // one answered: that login came after it.)
            let mut live = 0;
            for login in &issued {
                live += usize::from(is_live(&engine, &login.token).await);
            }
            assert_eq!(
                live, 1,
                "{parallel} parallel logins left {live} live sessions"
            );
            assert_eq!(engine.list("7", None).await.unwrap().len(), 1);
            // The next login, alone, gets in.
            let next = engine
                .login(None, None, grant("7"), true)
                .await
                .result
                .unwrap();
            assert!(is_live(&engine, &next.token).await);
            assert_eq!(engine.list("7", None).await.unwrap().len(), 1);
        });
    }
}

fn grant_verified(user_id: &str, version: &str) -> Grant {
    Grant {
        credentials: Some(CredentialsVersion::of(version.as_bytes())),
        ..grant(user_id)
    }
}

#[test]
fn a_login_that_verified_replaced_credentials_leaves_no_session() {
    run(async {
        let store = MemoryStore::new();
        let engine = engine_with(store.clone(), |_| {});
        let other_device = login(&engine, "7").await;
        // The password changes from version 1 to 2 while a login that checked version 1 is
        // still on its way: it completes after the change revoked the user's sessions.
        let v2 = CredentialsVersion::of(b"2");
        assert_eq!(engine.credentials_changed("7", &v2, None).await.unwrap(), 1);
        assert!(!is_live(&engine, &other_device.token).await);

        // Without naming what it verified, such a login survives the change: the hole.
        let unchecked = login(&engine, "7").await;
        assert!(is_live(&engine, &unchecked.token).await);
        engine.revoke_all("7", RevokedBy::App).await.unwrap();

        // Naming it closes the hole: no session, nothing left in the store.
        let outcome = engine
            .login(None, None, grant_verified("7", "1"), true)
            .await;
        assert!(matches!(outcome.result, Err(Error::Unauthenticated)));
        assert!(engine.list("7", None).await.unwrap().is_empty());
        assert!(store.is_empty());
        // The new password's logins go on as usual.
        let fresh = engine
            .login(None, None, grant_verified("7", "2"), true)
            .await;
        assert!(is_live(&engine, &fresh.result.unwrap().token).await);
    });
}

#[test]
fn a_change_between_a_logins_write_and_its_check_still_wins() {
    run(async {
        let store = Staged::new(0, 1);
        let engine = SessionEngine::new(store.clone(), SessionRules::default());
        let racing_login = engine.login(None, None, grant_verified("7", "1"), true);
        let change = async {
            store.check_arrived.notified().await;
            let v2 = CredentialsVersion::of(b"2");
            engine.credentials_changed("7", &v2, None).await.unwrap();
            store.check_gate.add_permits(1);
        };
        let (outcome, ()) = futures_util::future::join(racing_login, change).await;
        assert!(matches!(outcome.result, Err(Error::Unauthenticated)));
        assert!(engine.list("7", None).await.unwrap().is_empty());
        assert!(store.inner.is_empty());
    });
}
